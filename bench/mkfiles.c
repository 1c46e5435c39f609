/*
 * What the output directory's file system gives a batch without any
 * signing: new files made durable the way `sign --out-dir` makes them.
 * For bench/agent.sh.
 *
 *   mkfiles DIR COUNT SIZE
 *
 * Creates DIR (which must not exist), then COUNT files of SIZE bytes in it,
 * each as a batch output is: an unnamed file (O_TMPFILE) in DIR, written,
 * one syncfs() for each group of 32, then linked in under its name and
 * closed (where there is no O_TMPFILE, a named file, renamed in).  Prints
 * "FILES_PER_SECOND CPU_MICROSECONDS_PER_FILE".  A batch
 * cannot place its outputs faster than this on the same file system; on
 * ext4 without a journal it also shows what recently deleted inodes cost
 * each new file (the allocator reads past them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GROUP 32

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

int main(int argc, char **argv)
{
	int fds[GROUP], n = 0, dfd, count, named = 0, probe;
	long size;
	char *data, name[32];
	double t0, c0, t1, c1;

	if (argc != 4) {
		fprintf(stderr, "usage: mkfiles DIR COUNT SIZE\n");
		return 2;
	}
	count = atoi(argv[2]);
	size = atol(argv[3]);
	if (count < 1 || size < 1 || size > (1L << 24))
		return 2;
	data = malloc((size_t)size);
	if (data == NULL)
		die("malloc");
	memset(data, 'x', (size_t)size);
	if (mkdir(argv[1], 0700) != 0)
		die(argv[1]);
	dfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		die(argv[1]);
	/* No O_TMPFILE here (overlayfs before Linux 6.6, NFS): named files renamed in, as p11smime
	 * falls back to. */
	probe = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
	if (probe >= 0)
		close(probe);
	else if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)
		named = 1;
	else
		die("open O_TMPFILE");
	t0 = now();
	c0 = cpu();
	for (int i = 0; i < count; i++) {
		int fd;

		if (named) {
			snprintf(name, sizeof(name), ".t%d", i);
			fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		} else {
			fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
		}
		if (fd < 0)
			die("open");
		if (write(fd, data, (size_t)size) != (ssize_t)size)
			die("write");
		fds[n++] = fd;
		if (n < GROUP && i < count - 1)
			continue;
		if (syncfs(fds[0]) != 0)
			die("syncfs");
		for (int j = 0; j < n; j++) {
			snprintf(name, sizeof(name), "f%d", i - n + 1 + j);
			if (named) {
				char tmp[32];

				snprintf(tmp, sizeof(tmp), ".t%d", i - n + 1 + j);
				if (renameat(dfd, tmp, dfd, name) != 0)
					die("rename");
			} else if (linkat(fds[j], "", dfd, name, AT_EMPTY_PATH) != 0) {
				/* Without CAP_DAC_READ_SEARCH, as p11smime does. */
				char proc[64];

				snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fds[j]);
				if (linkat(AT_FDCWD, proc, dfd, name, AT_SYMLINK_FOLLOW) != 0)
					die("linkat");
			}
			close(fds[j]);
		}
		n = 0;
	}
	t1 = now();
	c1 = cpu();
	printf("%.1f %.1f\n", count / (t1 - t0), 1e6 * (c1 - c0) / count);
	free(data);
	return 0;
}
