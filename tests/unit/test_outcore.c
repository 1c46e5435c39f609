/*
 * Standard output's ranges of an input file (src/outcore.c,
 * p11i_out_write_ref()): put together in order at the commit, merged,
 * taken back by a rewind, and never copied from an input that changed.
 * Standard output is a temporary file here (dup2).  And files in a
 * directory opened once (p11i_out_open_in()), and the group sync.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "outcore.h"

/* The file systems syncfs() was asked for, in order (this definition stands in for libc's). */
static dev_t synced[8];
static int nsynced;

int syncfs(int fd)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return -1;
	if (nsynced < 8)
		synced[nsynced] = st.st_dev;
	nsynced++;
	return 0;
}

#define MIB (1024 * 1024)

static char dir[] = "/tmp/p11s-outcore-XXXXXX";
static char in_path[300], out_path[300];
static unsigned char *in_data;
static const size_t in_size = 4u * MIB + 123;
static int saved_stdout = -1;

/* The input: 4 MiB of bytes that differ at every offset mod 251. */
static int setup(void **state)
{
	char spool[300];

	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(spool, sizeof(spool), "%s/spool", dir);
	if (mkdir(spool, 0700) != 0)
		return -1;
	setenv("TMPDIR", spool, 1);
	snprintf(in_path, sizeof(in_path), "%s/in", dir);
	snprintf(out_path, sizeof(out_path), "%s/stdout", dir);
	in_data = malloc(in_size);
	if (in_data == NULL)
		return -1;
	for (size_t i = 0; i < in_size; i++)
		in_data[i] = (unsigned char)('!' + i % 251 % 90);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	free(in_data);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A fresh input and its identity, taken a clock tick after it was written. */
static int open_input(struct stat *st)
{
	int fd = open(in_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	struct timespec pause = {0, 30 * 1000 * 1000};

	assert_true(fd >= 0);
	assert_int_equal(write(fd, in_data, in_size), (ssize_t)in_size);
	nanosleep(&pause, NULL);
	assert_int_equal(p11i_out_identity(fd, st), 0);
	return fd;
}

/* Standard output onto an empty temporary file. */
static void stdout_to_file(void)
{
	int fd;

	fflush(stdout);
	saved_stdout = dup(STDOUT_FILENO);
	fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved_stdout >= 0 && fd >= 0);
	assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
	close(fd);
}

/* Standard output back; what the file got, malloc'd, its size in *n. */
static unsigned char *stdout_back(size_t *n)
{
	unsigned char *buf;
	struct stat st;
	FILE *fp;

	dup2(saved_stdout, STDOUT_FILENO);
	close(saved_stdout);
	assert_int_equal(stat(out_path, &st), 0);
	*n = (size_t)st.st_size;
	buf = malloc(*n + 1);
	assert_non_null(buf);
	fp = fopen(out_path, "rb");
	assert_non_null(fp);
	assert_int_equal(fread(buf, 1, *n, fp), *n);
	fclose(fp);
	return buf;
}

static struct p11i_out *open_stdout(void)
{
	struct p11i_out *o = NULL;
	char *why = NULL;

	assert_int_equal(p11i_out_open(NULL, 0, sizeof(*o), &o, &why), P11S_OK);
	assert_int_equal(o->kind, P11I_OUT_STDOUT);
	return o;
}

/* Appends @p n bytes at @p off of the input to @p want (at *wn) and to @p o by reference. */
static void ref(struct p11i_out *o, int fd, const struct stat *st, size_t off, size_t n,
                unsigned char *want, size_t *wn)
{
	assert_int_equal(p11i_out_write_ref(o, fd, st, (off_t)off, in_data + off, n), 0);
	memcpy(want + *wn, in_data + off, n);
	*wn += n;
}

static void bytes(struct p11i_out *o, const char *s, unsigned char *want, size_t *wn)
{
	assert_int_equal(p11i_out_write(o, s, strlen(s)), 0);
	memcpy(want + *wn, s, strlen(s));
	*wn += strlen(s);
}

static void commit_ok(struct p11i_out *o)
{
	char *why = NULL;
	p11s_rc rc = p11i_out_commit(o, &why);

	if (rc != P11S_OK)
		fail_msg("commit: %s", why ? why : "?");
}

/* Commit @p o, standard output back: it holds @p want's @p wn bytes, exactly. */
static void commit_gives(struct p11i_out *o, const unsigned char *want, size_t wn)
{
	unsigned char *got;
	size_t gn;

	commit_ok(o);
	got = stdout_back(&gn);
	assert_int_equal(gn, wn);
	assert_memory_equal(got, want, wn);
	free(got);
}

/* Header bytes, ranges, bytes between and after: all in order, the ranges not spooled. */
static void ranges_in_order(void **state)
{
	unsigned char *want = malloc(in_size * 2);
	size_t wn = 0;
	struct stat st;
	int fd = open_input(&st);
	struct p11i_out *o;

	(void)state;
	stdout_to_file();
	o = open_stdout();
	bytes(o, "Header: one\r\n\r\n", want, &wn);
	/* Small: still in memory, taken as bytes. */
	ref(o, fd, &st, 10, 100000, want, &wn);
	assert_int_equal(o->next, 0);
	/* Past the memory: a range; the bytes before it went to the spill file. */
	ref(o, fd, &st, 100000, 2 * MIB, want, &wn);
	assert_int_equal(o->next, 1);
	assert_true(o->fd >= 0);
	bytes(o, "\r\n--between--\r\n", want, &wn);
	ref(o, fd, &st, 3 * MIB, 500000, want, &wn);
	assert_int_equal(o->next, 2);
	/* A small range is written, not kept. */
	ref(o, fd, &st, 7, 100, want, &wn);
	assert_int_equal(o->next, 2);
	bytes(o, "\r\n--end--\r\n", want, &wn);
	assert_int_equal(p11i_out_tell(o), (long long)wn);
	/* The spill file holds the bytes only, not the ranges. */
	assert_true(lseek(o->fd, 0, SEEK_END) < (off_t)(MIB + 200000));
	commit_gives(o, want, wn);
	close(fd);
	free(want);
}

/*
 * A spill file of several copy steps (8 MiB), cut by a range at no step's
 * edge: every byte in order, and the spill file's blocks given back as it
 * was copied (the old commit kept them all until the file was closed).
 */
static void long_spill_in_steps(void **state)
{
	const size_t total = 21u * MIB + 4321;
	unsigned char *want = malloc(total + in_size), *pat = malloc(total);
	size_t wn = 0, k;
	struct stat st, sp;
	int fd = open_input(&st), spill;
	struct p11i_out *o;

	(void)state;
	assert_non_null(want);
	assert_non_null(pat);
	for (k = 0; k < total; k++)
		pat[k] = (unsigned char)(k * 7 + k / 4099);
	stdout_to_file();
	o = open_stdout();
	/* Odd-sized writes, so that no part ends on a step. */
	for (k = 0; k < 13u * MIB + 777;) {
		size_t n = 65537 < 13u * MIB + 777 - k ? 65537 : 13u * MIB + 777 - k;

		assert_int_equal(p11i_out_write(o, pat + k, n), 0);
		k += n;
	}
	memcpy(want, pat, k);
	wn = k;
	ref(o, fd, &st, 1000, 2 * MIB, want, &wn);
	assert_int_equal(o->next, 1);
	assert_int_equal(p11i_out_write(o, pat + k, total - k), 0);
	memcpy(want + wn, pat + k, total - k);
	wn += total - k;
	assert_int_equal(p11i_out_flush(o), 0);
	spill = dup(o->fd);
	assert_true(spill >= 0);
	commit_gives(o, want, wn);
	/*
	 * Its size stays, its pages went (a few blocks may stay on file
	 * systems that round), where $TMPDIR's file system punches holes.
	 */
	assert_int_equal(fstat(spill, &sp), 0);
	assert_true(sp.st_size >= (off_t)(total - 4u * MIB));
	if (fallocate(spill, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0)
		assert_true(sp.st_blocks * 512 < (blkcnt_t)MIB);
	else
		print_message("no holes in $TMPDIR's file system: the blocks are not checked\n");
	close(spill);
	close(fd);
	free(want);
	free(pat);
}

/* A range right after the last one, with nothing written between: the same range. */
static void contiguous_ranges_merge(void **state)
{
	unsigned char *want = malloc(in_size * 2);
	size_t wn = 0;
	struct stat st;
	int fd = open_input(&st);
	struct p11i_out *o;

	(void)state;
	stdout_to_file();
	o = open_stdout();
	bytes(o, "H\r\n\r\n", want, &wn);
	for (size_t off = 0; off + 65536 <= in_size; off += 65536) {
		ref(o, fd, &st, off, 65535, want, &wn);
		/* A block's held-back line end: one byte, where it was. */
		ref(o, fd, &st, off + 65535, 1, want, &wn);
	}
	/* The first MiB in memory, the rest one range to the last block's end. */
	assert_int_equal(o->next, 1);
	assert_true(o->ext[0].off > 0 && o->ext[0].off <= MIB);
	assert_int_equal(o->ext[0].off + o->ext[0].len, (off_t)(in_size / 65536 * 65536));
	bytes(o, "tail", want, &wn);
	/* After other bytes, a new range. */
	ref(o, fd, &st, 0, 65536, want, &wn);
	assert_int_equal(o->next, 2);
	commit_gives(o, want, wn);
	close(fd);
	free(want);
}

/* A rewind drops the ranges past the mark, cuts the one it falls in. */
static void rewind_over_ranges(void **state)
{
	unsigned char *want = malloc(in_size * 3);
	size_t wn = 0, keep;
	long long mark, mark2;
	struct stat st;
	int fd = open_input(&st);
	struct p11i_out *o;

	(void)state;
	stdout_to_file();
	o = open_stdout();
	bytes(o, "Header\r\n\r\n", want, &wn);
	ref(o, fd, &st, 0, 2 * MIB, want, &wn);
	bytes(o, "--b1--", want, &wn);
	mark = p11i_out_tell(o);
	assert_int_equal(mark, (long long)wn);
	keep = wn;
	/* Speculation: a range, bytes, a range, then taken back. */
	ref(o, fd, &st, 2 * MIB, MIB, want, &wn);
	bytes(o, "not clean", want, &wn);
	ref(o, fd, &st, 100, MIB, want, &wn);
	assert_int_equal(o->next, 3);
	assert_int_equal(p11i_out_rewind(o, mark), 0);
	assert_int_equal(o->next, 1);
	assert_int_equal(p11i_out_tell(o), mark);
	wn = keep;
	/* Into the middle of a range: it is cut there. */
	ref(o, fd, &st, 3 * MIB, MIB, want, &wn);
	mark2 = p11i_out_tell(o) - 300000;
	assert_int_equal(p11i_out_rewind(o, mark2), 0);
	assert_int_equal(o->next, 2);
	assert_int_equal(o->ext[1].len, (off_t)(MIB - 300000));
	wn -= 300000;
	bytes(o, "encoded instead", want, &wn);
	/* Into the bytes between two ranges (the spill file is cut). */
	ref(o, fd, &st, 0, 65536, want, &wn);
	bytes(o, "0123456789", want, &wn);
	assert_int_equal(p11i_out_rewind(o, p11i_out_tell(o) - 4), 0);
	wn -= 4;
	bytes(o, "end", want, &wn);
	assert_int_equal(p11i_out_tell(o), (long long)wn);
	commit_gives(o, want, wn);
	close(fd);
	free(want);
}

/* Changed between the reading and the commit: an error, and nothing on standard output. */
static void changed_input_writes_nothing(void **state)
{
	static const struct {
		const char *how;
		off_t at;
	} changes[] = {{"same size", 1000}, {"longer", -1}, {"shorter", -2}};
	struct timespec pause = {0, 30 * 1000 * 1000};

	(void)state;
	for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
		size_t gn;
		struct stat st;
		int fd = open_input(&st);
		struct p11i_out *o;
		unsigned char *got;
		char *why = NULL;
		p11s_rc rc;

		stdout_to_file();
		o = open_stdout();
		assert_int_equal(p11i_out_write(o, "H\r\n\r\n", 5), 0);
		assert_int_equal(p11i_out_write_ref(o, fd, &st, 0, in_data, 3 * MIB), 0);
		assert_int_equal(o->next, 1);
		assert_int_equal(p11i_out_write(o, "sig", 3), 0);
		nanosleep(&pause, NULL);
		if (changes[i].at >= 0)
			assert_int_equal(pwrite(fd, "X", 1, changes[i].at), 1);
		else if (changes[i].at == -1)
			assert_int_equal(pwrite(fd, "X", 1, (off_t)in_size), 1);
		else
			assert_int_equal(ftruncate(fd, MIB), 0);
		rc = p11i_out_commit(o, &why);
		got = stdout_back(&gn);
		assert_int_equal(rc, P11S_E_INPUT);
		assert_non_null(why);
		if (strstr(why, "the input changed while it was signed") == NULL)
			fail_msg("%s: %s", changes[i].how, why);
		assert_int_equal(gn, 0);
		free(why);
		free(got);
		close(fd);
	}
}

/* A file cut short while it is copied: the copy comes back short, an error. */
static void short_copy_is_an_error(void **state)
{
	size_t gn;
	struct stat st;
	int fd = open_input(&st);
	struct p11i_out *o;
	unsigned char *got;
	char *why = NULL;
	p11s_rc rc;

	(void)state;
	stdout_to_file();
	o = open_stdout();
	assert_int_equal(p11i_out_write(o, "H\r\n\r\n", 5), 0);
	assert_int_equal(p11i_out_write_ref(o, fd, &st, 0, in_data, 3 * MIB), 0);
	/* A range past the end (as a truncation between the checks would leave it). */
	o->ext[0].off = (off_t)in_size - MIB;
	rc = p11i_out_commit(o, &why);
	got = stdout_back(&gn);
	assert_int_equal(rc, P11S_E_INPUT);
	assert_non_null(why);
	assert_non_null(strstr(why, "shorter"));
	/* Standard output is a file: what was written is taken back. */
	assert_int_equal(gn, 0);
	free(why);
	free(got);
	close(fd);
}

/* Not standard output, or an input that just changed: the bytes, as before. */
static void others_take_the_bytes(void **state)
{
	char path[300], *why = NULL;
	struct p11i_out *o = NULL;
	struct stat st;
	int fd = open_input(&st);

	(void)state;
	snprintf(path, sizeof(path), "%s/file.out", dir);
	assert_int_equal(p11i_out_open(path, 0, sizeof(*o), &o, &why), P11S_OK);
	assert_int_equal(p11i_out_write_ref(o, fd, &st, 0, in_data, 2 * MIB), 0);
	assert_int_equal(o->next, 0);
	assert_int_equal(p11i_out_commit(o, &why), P11S_OK);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 2 * MIB);
	/*
	 * Written a moment ago: its times could hide another change in the
	 * same tick, so it is refused.  Judged only where the coarse clock did
	 * not move between the write and the question (a preempted test can
	 * see the next tick, and then the file is rightly taken).
	 */
	int refused = 0, same_tick = 0;

	for (int i = 0; i < 200 && !refused; i++) {
		struct timespec a, b;

		clock_gettime(CLOCK_REALTIME_COARSE, &a);
		assert_int_equal(pwrite(fd, "Y", 1, 0), 1);
		int r = p11i_out_identity(fd, &st);

		clock_gettime(CLOCK_REALTIME_COARSE, &b);
		if (a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec) {
			same_tick = 1;
			assert_int_equal(r, -1);
			refused = 1;
		}
	}
	assert_true(same_tick);
	close(fd);
	/* A pipe is no input to refer to. */
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(p11i_out_identity(p[0], &st), -1);
	close(p[0]);
	close(p[1]);
}

/* A prepared file output at @p path holding @p text; through @p d when given. */
static struct p11i_out *prepared(const struct p11i_out_dir *d, const char *path, const char *text)
{
	struct p11i_out *o = NULL;
	char *why = NULL;

	if (p11i_out_open_in(d, path, 0, sizeof(*o), &o, &why) != P11S_OK)
		fail_msg("open '%s': %s", path, why ? why : "?");
	assert_int_equal(p11i_out_write(o, text, strlen(text)), 0);
	assert_int_equal(p11i_out_prepare(o, &why), P11S_OK);
	return o;
}

static void file_is(const char *path, const char *text)
{
	char buf[256];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	assert_int_equal(n, (ssize_t)strlen(text));
	assert_memory_equal(buf, text, strlen(text));
}

/*
 * A batch's directory opened once: its files' file system is known without
 * asking, and a group on two file systems is synced on both, once each,
 * through the file opened first on each.
 */
static void group_sync_covers_two_file_systems(void **state)
{
	char shm[] = "/dev/shm/p11s-outcore-XXXXXX", a[400], b[400], c[400], *why = NULL;
	struct p11i_out_dir *d = NULL;
	struct p11i_out *outs[3];
	struct stat st_tmp, st_shm;

	(void)state;
	if (mkdtemp(shm) == NULL || stat(dir, &st_tmp) != 0 || stat(shm, &st_shm) != 0 ||
	    st_tmp.st_dev == st_shm.st_dev) {
		rmdir(shm);
		skip();
	}
	snprintf(a, sizeof(a), "%s/a.eml", dir);
	snprintf(b, sizeof(b), "%s/b.eml", shm);
	snprintf(c, sizeof(c), "%s/c.eml", dir);
	assert_int_equal(p11i_out_dir_open(dir, &d, &why), P11S_OK);
	outs[0] = prepared(d, a, "first\n");
	outs[1] = prepared(d, b, "second\n"); /* not in d: looked up by its path */
	outs[2] = prepared(d, c, "third\n");
	p11i_out_dir_free(d); /* the outputs do not need it any more */
	assert_true(outs[0]->dev_known);
	assert_int_equal(outs[0]->dev, st_tmp.st_dev);
	assert_false(outs[1]->dev_known);
	nsynced = 0;
	assert_int_equal(p11i_out_sync_group(outs, 3, &why), P11S_OK);
	assert_int_equal(nsynced, 2);
	assert_true(synced[0] == st_tmp.st_dev || synced[1] == st_tmp.st_dev);
	assert_true(synced[0] == st_shm.st_dev || synced[1] == st_shm.st_dev);
	for (int i = 0; i < 3; i++) {
		assert_true(outs[i]->synced);
		commit_ok(outs[i]);
	}
	file_is(a, "first\n");
	file_is(b, "second\n");
	file_is(c, "third\n");
	unlink(a);
	unlink(b);
	unlink(c);
	rmdir(shm);
}

/*
 * Through a directory opened once, an output keeps its promises: an
 * existing file is replaced whole and keeps its mode, a directory in the
 * way is refused, and when the directory's path has come to name another
 * file system (moved, a link put in its place) the commit fails and
 * nothing appears anywhere.
 */
static void dir_opened_once_keeps_the_promises(void **state)
{
	char shm[] = "/dev/shm/p11s-outcore-XXXXXX", sub[300], moved[300], p[400], q[400];
	char *why = NULL;
	struct p11i_out_dir *d = NULL;
	struct p11i_out *o = NULL;
	struct stat st;
	int fd;

	(void)state;
	snprintf(sub, sizeof(sub), "%s/outdir", dir);
	snprintf(moved, sizeof(moved), "%s/outdir.old", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(p11i_out_dir_open(sub, &d, &why), P11S_OK);

	/* An existing file: replaced whole, its mode kept. */
	snprintf(p, sizeof(p), "%s/exists.eml", sub);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0640);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "old\n", 4), 4);
	close(fd);
	assert_int_equal(chmod(p, 0640), 0);
	o = prepared(d, p, "new\n");
	file_is(p, "old\n");
	commit_ok(o);
	file_is(p, "new\n");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);

	/* A directory in the way. */
	snprintf(q, sizeof(q), "%s/adir.eml", sub);
	assert_int_equal(mkdir(q, 0700), 0);
	o = NULL;
	assert_int_equal(p11i_out_open_in(d, q, 0, sizeof(*o), &o, &why), P11S_E_IO);
	assert_non_null(strstr(why, "is a directory"));
	free(why);
	why = NULL;

	/* The directory moved, its name now another file system's: nothing placed. */
	snprintf(q, sizeof(q), "%s/late.eml", sub);
	o = prepared(d, q, "late\n");
	if (mkdtemp(shm) != NULL && stat(shm, &st) == 0 && st.st_dev != o->dev) {
		char there[400];

		assert_int_equal(rename(sub, moved), 0);
		assert_int_equal(symlink(shm, sub), 0);
		assert_int_not_equal(p11i_out_commit(o, &why), P11S_OK);
		free(why);
		snprintf(there, sizeof(there), "%s/late.eml", shm);
		assert_int_equal(access(there, F_OK), -1);
		snprintf(there, sizeof(there), "%s/late.eml", moved);
		assert_int_equal(access(there, F_OK), -1);
		unlink(sub);
		rename(moved, sub);
	} else {
		p11i_out_abort(o);
	}
	rmdir(shm);
	p11i_out_dir_free(d);
}

/* How many bytes of @p fd's first @p size are in the page cache. */
static size_t resident(int fd, size_t size)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t pages = (size + (size_t)pg - 1) / (size_t)pg, n = 0;
	unsigned char *vec = malloc(pages);
	void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);

	assert_non_null(vec);
	assert_true(map != MAP_FAILED);
	assert_int_equal(mincore(map, size, vec), 0);
	for (size_t i = 0; i < pages; i++)
		n += vec[i] & 1;
	munmap(map, size);
	free(vec);
	return n * (size_t)pg;
}

/* @p path holds @p want's @p n bytes, exactly. */
static void file_holds(const char *path, const unsigned char *want, size_t n)
{
	unsigned char *got = malloc(n + 1);
	int fd = open(path, O_RDONLY);

	assert_non_null(got);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, got, n + 1), (ssize_t)n);
	assert_memory_equal(got, want, n);
	close(fd);
	free(got);
}

/*
 * A large output streams through the page cache: a 48 MiB file output
 * keeps at most its last steps there once committed (the writes took the
 * pages the disk had finished with), every byte in place.  Standard output
 * does the same without waiting for the disk, so what stays there is not
 * asserted, only that a 40 MiB range of an input comes out whole through
 * it, copied a step at a time.  On tmpfs pages are the file: nothing to
 * check there.
 */
static void large_outputs_leave_the_cache(void **state)
{
	const size_t total = 48u * MIB + 4321, big = 40u * MIB + 99;
	unsigned char *pat = malloc(total), *want = malloc(big + 64);
	char path[400], big_path[400], *why = NULL;
	struct p11i_out *o = NULL;
	struct statfs sf;
	struct stat st;
	size_t k, wn = 0;
	int fd;

	(void)state;
	assert_non_null(pat);
	assert_non_null(want);
	assert_int_equal(statfs(dir, &sf), 0);
	if (sf.f_type == TMPFS_MAGIC) {
		print_message("%s is on tmpfs: its pages cannot leave the cache, skipped\n", dir);
		free(pat);
		free(want);
		skip();
	}
	for (k = 0; k < total; k++)
		pat[k] = (unsigned char)(k * 13 + k / 8191);
	snprintf(path, sizeof(path), "%s/large", dir);
	assert_int_equal(p11i_out_open(path, 0, sizeof(*o), &o, &why), P11S_OK);
	for (k = 0; k < total;) {
		size_t n = 100003 < total - k ? 100003 : total - k;

		assert_int_equal(p11i_out_write(o, pat + k, n), 0);
		k += n;
	}
	commit_ok(o);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	k = resident(fd, total);
	print_message("48 MiB written: %zu KiB of it in the page cache\n", k / 1024);
	/* Without the drop the whole file is there: the last three steps at most now. */
	assert_true(k <= 24u * MIB + 8192);
	close(fd);
	file_holds(path, pat, total);

	/* Standard output: a header, 40 MiB of an input file by reference, a trailer. */
	snprintf(big_path, sizeof(big_path), "%s/big-in", dir);
	fd = open(big_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, pat, big), (ssize_t)big);
	{
		struct timespec pause = {0, 30 * 1000 * 1000};

		nanosleep(&pause, NULL);
	}
	assert_int_equal(p11i_out_identity(fd, &st), 0);
	stdout_to_file();
	o = open_stdout();
	bytes(o, "Header: yes\n\n", want, &wn);
	/* Past standard output's memory first, so that the range is kept as a range. */
	assert_int_equal(p11i_out_write_ref(o, fd, &st, 0, pat, 2u * MIB), 0);
	assert_int_equal(p11i_out_write_ref(o, fd, &st, 2u * MIB, pat + 2u * MIB, big - 2u * MIB),
	                 0);
	memcpy(want + wn, pat, big);
	wn += big;
	bytes(o, "trailer\n", want, &wn);
	assert_true(o->next >= 1);
	commit_gives(o, want, wn);
	close(fd);

	/*
	 * Standard output's own bytes past its memory (decrypt's plaintext):
	 * the spill streams through the cache as a file does.  Without it the
	 * whole spill stays: 49,160 KiB.
	 */
	stdout_to_file();
	o = open_stdout();
	for (k = 0; k < total;) {
		size_t n = 100003 < total - k ? 100003 : total - k;

		assert_int_equal(p11i_out_write(o, pat + k, n), 0);
		k += n;
	}
	assert_int_equal(p11i_out_flush(o), 0);
	/* Measured before the commit, which gives the spill's pages back as it copies. */
	k = resident(o->fd, total);
	commit_gives(o, pat, total);
	/* Only now: standard output is the file under test until the commit. */
	print_message("48 MiB to standard output: %zu KiB of its spill in the page cache\n",
	              k / 1024);
	assert_true(k <= 24u * MIB + 8192);
	free(pat);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(ranges_in_order),
	    cmocka_unit_test(long_spill_in_steps),
	    cmocka_unit_test(contiguous_ranges_merge),
	    cmocka_unit_test(rewind_over_ranges),
	    cmocka_unit_test(changed_input_writes_nothing),
	    cmocka_unit_test(short_copy_is_an_error),
	    cmocka_unit_test(others_take_the_bytes),
	    cmocka_unit_test(group_sync_covers_two_file_systems),
	    cmocka_unit_test(dir_opened_once_keeps_the_promises),
	    cmocka_unit_test(large_outputs_leave_the_cache),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
