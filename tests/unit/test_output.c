#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(commit_appears_whole),
	    cmocka_unit_test(abort_leaves_nothing),
	    cmocka_unit_test(device_is_written_not_replaced),
	    cmocka_unit_test(unwritable_dir_is_an_io_error),
	    cmocka_unit_test(directory_is_not_an_input),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
