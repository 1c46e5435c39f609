#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common.h"
#include "p11smime/io.h"

static char dir[] = "/tmp/p11s-output-XXXXXX";

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static size_t count_entries(void)
{
	char cmd[128];
	FILE *p;
	size_t n = 0;
	char line[256];

	snprintf(cmd, sizeof(cmd), "ls -A '%s'", dir);
	p = popen(cmd, "r");
	while (p && fgets(line, sizeof(line), p))
		n++;
	if (p)
		pclose(p);
	return n;
}

static void commit_appears_whole(void **state)
{
	char path[256], buf[64] = {0};
	p11s_output *o = NULL;
	FILE *fp;

	(void)state;
	snprintf(path, sizeof(path), "%s/out.eml", dir);
	assert_int_equal(p11s_output_open(path, &o, NULL), P11S_OK);
	assert_int_equal(BIO_puts(p11s_output_bio(o), "hello\n"), 6);
	/* Nothing at the target before the commit. */
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(p11s_output_commit(o, NULL), P11S_OK);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	assert_int_equal(fread(buf, 1, sizeof(buf) - 1, fp), 6);
	fclose(fp);
	assert_string_equal(buf, "hello\n");
	/* No temporary file left beside it. */
	assert_int_equal(count_entries(), 1);
	unlink(path);
}

static void abort_leaves_nothing(void **state)
{
	char path[256];
	p11s_output *o = NULL;

	(void)state;
	snprintf(path, sizeof(path), "%s/never.eml", dir);
	assert_int_equal(p11s_output_open(path, &o, NULL), P11S_OK);
	BIO_puts(p11s_output_bio(o), "half a message");
	p11s_output_abort(o);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(count_entries(), 0);
	p11s_output_abort(NULL);
}

static void device_is_written_not_replaced(void **state)
{
	p11s_output *o = NULL;
	struct stat st;

	(void)state;
	assert_int_equal(p11s_output_open("/dev/null", &o, NULL), P11S_OK);
	BIO_puts(p11s_output_bio(o), "discarded");
	assert_int_equal(p11s_output_commit(o, NULL), P11S_OK);
	assert_int_equal(stat("/dev/null", &st), 0);
	assert_true(S_ISCHR(st.st_mode));
}

static void unwritable_dir_is_an_io_error(void **state)
{
	p11s_output *o = NULL;
	p11s_error *err = p11s_error_new();

	(void)state;
	assert_int_equal(p11s_output_open("/nonexistent-dir/out.eml", &o, err), P11S_E_IO);
	assert_non_null(strstr(p11s_error_message(err), "/nonexistent-dir/out.eml"));
	assert_int_equal(p11s_input_open("/nonexistent-dir/in.eml", &(BIO *){NULL}, err),
	                 P11S_E_IO);
	assert_non_null(strstr(p11s_error_message(err), "in.eml"));
	p11s_error_free(err);
}

/* fopen() opens a directory; its reads fail, which readers took for an empty input. */
/*
 * Standard output past the 1 MiB kept in memory: spilled to an unnamed file
 * in $TMPDIR (nothing named there), nothing on standard output before the
 * commit, then all of it.
 */
static void stdout_spills_unnamed_and_appears_whole(void **state)
{
	char path[256], spool[256];
	const size_t total = 3u * 1024 * 1024 + 7;
	unsigned char *block = malloc(65536);
	p11s_output *o = NULL;
	struct stat st;
	int saved, fd;

	(void)state;
	assert_non_null(block);
	memset(block, 'x', 65536);
	snprintf(path, sizeof(path), "%s/stdout.txt", dir);
	snprintf(spool, sizeof(spool), "%s/spool", dir);
	assert_int_equal(mkdir(spool, 0700), 0);
	setenv("TMPDIR", spool, 1);
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	dup2(fd, STDOUT_FILENO);
	close(fd);

	assert_int_equal(p11s_output_open(NULL, &o, NULL), P11S_OK);
	for (size_t done = 0; done < total;) {
		size_t n = total - done < 65536 ? total - done : 65536;

		assert_int_equal(BIO_write(p11s_output_bio(o), block, (int)n), (int)n);
		done += n;
	}
	assert_int_equal(BIO_flush(p11s_output_bio(o)), 1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);
	/* The spill has no name. */
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", spool);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(p11s_output_commit(o, NULL), P11S_OK);

	dup2(saved, STDOUT_FILENO);
	close(saved);
	unsetenv("TMPDIR");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((size_t)st.st_size, total);
	rmdir(spool);
	unlink(path);
	free(block);
}

/* A failed write names the file and the system's reason. */
static void write_error_is_explained(void **state)
{
	p11s_output *o = NULL;
	p11s_error *err = p11s_error_new();
	char big[300000];
	p11s_rc rc;

	(void)state;
	memset(big, 'y', sizeof(big));
	assert_int_equal(p11s_output_open("/dev/full", &o, err), P11S_OK);
	/* More than one block: the write fails now, not at commit. */
	assert_true(BIO_write(p11s_output_bio(o), big, (int)sizeof(big)) <= 0);
	rc = p11s_output_explain(o, P11S_E_INPUT, err);
	assert_int_equal(rc, P11S_E_IO);
	assert_string_equal(p11s_error_message(err),
	                    "cannot write '/dev/full': No space left on device");
	/* Nothing failed: the caller's error stands. */
	p11s_output_abort(o);
	assert_int_equal(p11s_output_explain(NULL, P11S_E_INPUT, err), P11S_E_INPUT);
	p11s_error_free(err);
}

static void directory_is_not_an_input(void **state)
{
	p11s_error *err = p11s_error_new();
	BIO *in = NULL;

	(void)state;
	assert_int_equal(p11s_input_open(dir, &in, err), P11S_E_IO);
	assert_null(in);
	assert_non_null(strstr(p11s_error_message(err), "is a directory"));
	p11s_error_free(err);
}

/* What the input's own count says against what stdio says (BIO_tell(): an lseek). */
static void pos_is_tell(BIO *in)
{
	long pos = -1;

	assert_int_equal(p11i_input_pos(in, &pos), 1);
	assert_int_equal(pos, BIO_tell(in));
}

/*
 * An input file counts its position through reads, line reads and seeks,
 * and gives up (the readers then ask the kernel) where it cannot follow: a
 * line with a NUL byte, its FILE handed out.  Standard input and a FIFO
 * are not counted as regular files.
 */
static void input_counts_its_position(void **state)
{
	static const char text[] = "From: a@example.org\nSubject: s\n\nbody line\nmore of it\n"
	                           "nul \0 inside\nlast\n";
	char path[300], line[64], buf[16];
	BIO *in = NULL;
	FILE *fp;
	long pos;
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "%s/pos.eml", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(fd);

	assert_int_equal(p11s_input_open(path, &in, NULL), P11S_OK);
	pos_is_tell(in);
	assert_int_equal(BIO_gets(in, line, sizeof(line)), 20);
	pos_is_tell(in);
	assert_int_equal(BIO_gets(in, line, 5), 4); /* a line cut by the buffer */
	pos_is_tell(in);
	assert_int_equal(BIO_read(in, buf, 7), 7);
	pos_is_tell(in);
	assert_int_equal(BIO_seek(in, 3), 0);
	pos_is_tell(in);
	assert_int_equal(BIO_reset(in), 0);
	pos_is_tell(in);
	assert_int_equal(BIO_seek(in, 53), 0);
	pos_is_tell(in);
	assert_true(BIO_eof(in) == 0);
	pos_is_tell(in);
	/* "nul \0 inside\n": fgets() reads the line, strlen() counts 4. */
	assert_int_equal(BIO_gets(in, line, sizeof(line)), 4);
	assert_int_equal(p11i_input_pos(in, &pos), -1);
	BIO_free_all(in);

	/* Reads to the end, then the FILE handed out. */
	assert_int_equal(p11s_input_open(path, &in, NULL), P11S_OK);
	while (BIO_read(in, buf, sizeof(buf)) > 0)
		pos_is_tell(in);
	pos_is_tell(in);
	assert_int_equal(p11i_input_pos(in, &pos), 1);
	assert_int_equal(pos, (long)sizeof(text) - 1);
	assert_true(BIO_get_fp(in, &fp) > 0);
	assert_int_equal(p11i_input_pos(in, &pos), -1);
	assert_true(p11i_input_fd(in) >= 0);
	BIO_free_all(in);

	/* A FIFO: no position to keep. */
	snprintf(path, sizeof(path), "%s/fifo", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	fd = open(path, O_RDWR); /* so that opening it to read does not wait */
	assert_true(fd >= 0);
	assert_int_equal(p11s_input_open(path, &in, NULL), P11S_OK);
	assert_int_equal(p11i_input_pos(in, &pos), 0);
	BIO_free_all(in);
	close(fd);
	unlink(path);

	/* Standard input: it may not start at 0, and is not counted. */
	assert_int_equal(p11s_input_open("-", &in, NULL), P11S_OK);
	assert_int_equal(p11i_input_pos(in, &pos), -1);
	assert_int_equal(p11i_input_fd(in), -1);
	BIO_free_all(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(commit_appears_whole),
	    cmocka_unit_test(abort_leaves_nothing),
	    cmocka_unit_test(device_is_written_not_replaced),
	    cmocka_unit_test(unwritable_dir_is_an_io_error),
	    cmocka_unit_test(directory_is_not_an_input),
	    cmocka_unit_test(input_counts_its_position),
	    cmocka_unit_test(stdout_spills_unnamed_and_appears_whole),
	    cmocka_unit_test(write_error_is_explained),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
