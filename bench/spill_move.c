/*
 * How standard output's spill is best moved to standard output (issue 11):
 * writes SIZE MiB in 256 KiB blocks to an unnamed spill file (in DIR, or
 * a memfd), as the output core does, then moves it to fd 1 with METHOD,
 * and prints the CPU time (user + system) of each step on stderr.
 *
 *   cc -O2 -o spill_move bench/spill_move.c
 *   ./spill_move DIR|memfd METHOD MIB > TARGET     (or | cat >/dev/null)
 *
 * METHOD: cfr (copy_file_range), sendfile, splice[PIPESIZE] (through a
 * pipe of ours, default 64 KiB), mmapN (mmap of the spill, write() of N
 * MiB at a time), rwK (pread/write of K KiB), punchN (copy_file_range of N
 * MiB, then a hole punched behind it), none.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double cpu(void)
{
	struct rusage r;

	getrusage(RUSAGE_SELF, &r);
	return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec +
	       r.ru_stime.tv_usec / 1e6;
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	const size_t block = 256 * 1024;
	const char *dir, *m;
	size_t size, mib;
	off_t off = 0;
	ssize_t n;
	char *buf;
	int fd;
	double c0, c1, c2, t0, t1, t2;

	if (argc != 4) {
		fprintf(stderr, "usage: %s DIR|memfd METHOD MIB > TARGET\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	m = argv[2];
	mib = strtoul(argv[3], NULL, 10);
	size = mib << 20;
	fd = strcmp(dir, "memfd") == 0 ? memfd_create("spill", MFD_CLOEXEC)
	                               : open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		die("spill");
	buf = malloc(block);
	if (buf == NULL)
		die("malloc");
	for (size_t i = 0; i < block; i++)
		buf[i] =
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz+/\n"[i % 65];
	c0 = cpu();
	t0 = now();
	for (size_t o = 0; o < size; o += block)
		if (write(fd, buf, block) != (ssize_t)block)
			die("write spill");
	c1 = cpu();
	t1 = now();
	if (strcmp(m, "cfr") == 0) {
		while (off < (off_t)size)
			if (copy_file_range(fd, &off, 1, NULL, size - off, 0) <= 0)
				die("copy_file_range");
	} else if (strcmp(m, "sendfile") == 0) {
		while (off < (off_t)size)
			if (sendfile(1, fd, &off, size - off) <= 0)
				die("sendfile");
	} else if (strncmp(m, "splice", 6) == 0) {
		int p[2], ps = atoi(m + 6);

		if (pipe2(p, O_CLOEXEC) != 0)
			die("pipe");
		if (ps > 0)
			fcntl(p[1], F_SETPIPE_SZ, ps);
		while (off < (off_t)size) {
			n = splice(fd, &off, p[1], NULL, size - off, 0);
			if (n <= 0)
				die("splice in");
			while (n > 0) {
				ssize_t k = splice(p[0], NULL, 1, NULL, n, 0);

				if (k <= 0)
					die("splice out");
				n -= k;
			}
		}
	} else if (strncmp(m, "mmap", 4) == 0) {
		size_t ch = (size_t)atoi(m + 4) << 20;
		char *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);

		if (p == MAP_FAILED)
			die("mmap");
		madvise(p, size, MADV_SEQUENTIAL);
		while (off < (off_t)size) {
			n = write(1, p + off, size - off < ch ? size - off : ch);
			if (n <= 0)
				die("write");
			off += n;
		}
		munmap(p, size);
	} else if (strncmp(m, "rw", 2) == 0) {
		size_t ch = (size_t)atoi(m + 2) << 10;
		char *b = malloc(ch);

		while (off < (off_t)size) {
			n = pread(fd, b, ch, off);
			if (n <= 0 || write(1, b, n) != n)
				die("read/write");
			off += n;
		}
		free(b);
	} else if (strncmp(m, "punch", 5) == 0) {
		size_t ch = (size_t)atoi(m + 5) << 20;

		while (off < (off_t)size) {
			off_t st = off;
			size_t k = size - off < ch ? size - off : ch;

			while (off < st + (off_t)k)
				if (copy_file_range(fd, &off, 1, NULL, st + k - off, 0) <= 0 &&
				    sendfile(1, fd, &off, st + k - off) <= 0)
					die("copy");
			if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st, k) != 0)
				die("punch");
		}
	} else if (strcmp(m, "none") != 0) {
		fprintf(stderr, "unknown method %s\n", m);
		return 2;
	}
	c2 = cpu();
	t2 = now();
	close(fd);
	fprintf(stderr, "%-8s %-14s spill: cpu %.2f wall %.2f | move: cpu %.2f wall %.2f\n", dir, m,
	        c1 - c0, t1 - t0, c2 - c1, t2 - t1);
	return 0;
}
