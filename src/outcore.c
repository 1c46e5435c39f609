/*
 * The all-or-nothing output's file logic, on libc alone (src/outcore.h).
 *
 * Output is kept in large blocks (stdio's 4 KiB buffer cost a system call
 * per 2-4 KiB).  Temporary files are created without a name (O_TMPFILE)
 * and linked in only at commit, so that a process killed at any point
 * leaves nothing behind; where the file system cannot, a named temporary
 * file is the fallback.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "outcore.h"

/*
 * The order in which output files were opened (p11i_out_sync_group()):
 * taken with the open, under one lock, so that it is the order in which
 * the kernel sampled their file system's error state.
 */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long open_seq;

/* Output block size. */
#define OUT_BUF (256 * 1024)
/* Standard output is kept in memory up to this, then spilled to a file. */
#define MEM_MAX (1024 * 1024)
/* Standard output's spill file is copied and freed this much at a time (copy_spill()). */
#define SPILL_STEP (8 * 1024 * 1024)
/* A file's writeback is started every this many bytes (see out_wrote()). */
#define WRITEBACK_STEP (8 * 1024 * 1024)
/* Standard output's spill is written behind from this size on (see out_wrote()). */
#define SPILL_BEHIND (3 * WRITEBACK_STEP)
/*
 * Ranges of the input (p11i_out_write_ref()): a new one from this size on
 * (a smaller one is cheaper written), and at most this many (32 bytes
 * each); past that the bytes are written.
 */
#define REF_MIN (16 * 1024)
#define EXT_MAX (64 * 1024)

#define OUT_FILE   P11I_OUT_FILE
#define OUT_STDOUT P11I_OUT_STDOUT
#define OUT_DIRECT P11I_OUT_DIRECT

static p11s_rc fail(char **why, p11s_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static p11s_rc fail(char **why, p11s_rc rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(why, fmt, ap) < 0)
		*why = NULL;
	va_end(ap);
	return rc;
}

static p11s_rc nomem(char **why)
{
	*why = NULL;
	return P11S_E_NOMEM;
}

static char *out_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *out_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

int p11i_tmpfile(const char **dirp)
{
	const char *dir = getenv("TMPDIR");
	char *path;
	int fd;

	dir = dir && *dir ? dir : "/tmp";
	if (dirp != NULL)
		*dirp = dir;
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd;
	path = out_asprintf("%s/.p11smime-XXXXXX", dir);
	if (path == NULL) {
		errno = ENOMEM;
		return -1;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	free(path);
	return fd;
}

int p11i_write_full(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n > SSIZE_MAX ? SSIZE_MAX : n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ------------------------------------------------------------ writing */

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/*
 * A file in @p dir with no name: nothing is left if we die.  -1 with errno
 * EOPNOTSUPP (and friends) when the file system cannot.
 */
static int open_unnamed(int at, const char *dir, mode_t mode)
{
	int fd = openat(at, dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);

	if (fd < 0 && (errno == EISDIR || errno == EINVAL || errno == EOPNOTSUPP))
		errno = EOPNOTSUPP;
	return fd;
}

/*
 * /proc/self/fd is there to be used (see unnamed_linkable()); asked once a
 * process, not once a file: a batch paid a system call a file (two where
 * not root) for an answer that does not change while it runs.
 */
static pthread_once_t proc_once = PTHREAD_ONCE_INIT;
static int proc_fd_ok;

static void proc_fd_check(void)
{
	proc_fd_ok = access("/proc/self/fd", X_OK) == 0;
}

/*
 * Linking an unnamed file in later needs CAP_DAC_READ_SEARCH (root's
 * AT_EMPTY_PATH) or /proc/self/fd: without either (a bare container), a
 * named one is used.  With /proc, the effective user does not matter, and
 * is not asked.  Should /proc go away after the question, the link fails
 * at the commit and nothing reaches the path: no output is ever half there.
 */
static int unnamed_linkable(void)
{
	pthread_once(&proc_once, proc_fd_check);
	return proc_fd_ok || geteuid() == 0;
}

/*
 * A large output streams through the page cache rather than filling it:
 * the disk is started on each step as it comes (on a disk slower than the
 * work, the commit's fsync then waits for the last step only), and what
 * the disk has had for a whole step already is dropped from the cache, so
 * that the next step's writes take the pages just freed.  Taking fresh
 * pages instead costs whatever the system makes a new page cost: on the
 * development VM, whose hypervisor takes back memory the guest leaves
 * free, a 1 GiB `sign -o FILE` took 1.12-2.19 s of CPU time (median 1.95
 * s, eight runs) that way and 1.15-1.20 s with the pages reused.  And a
 * 1 GiB output no longer pushes 1 GiB of other files' pages out of the
 * cache.
 *
 * @p wait: a file the commit makes durable waits for the step two behind
 * (rarely at all: the disk was given it a step ago), since its fsync would
 * wait for it anyway.  Standard output is not made durable, so it does
 * not wait for the disk: only the pages already written are dropped, the
 * others stay.  Outputs under three steps never drop anything.  tmpfs
 * ignores both calls.
 *
 * -1 (errno) when the disk failed a step waited for.  That error must be
 * the output's: the wait consumes it (the file's writeback error cursor
 * moves on), so the commit's fsync would return 0 and link a file whose
 * dropped pages never reached the disk, or copy back a spill that is not
 * what was written.  Where the call is not supported, nothing is dropped.
 */
static int behind(int fd, off_t base, off_t *started, off_t *dropped, off_t pos, int wait)
{
	off_t upto = *started - WRITEBACK_STEP;

	if (pos - *started < WRITEBACK_STEP)
		return 0;
	sync_file_range(fd, base + *started, pos - *started, SYNC_FILE_RANGE_WRITE);
	*started = pos;
	if (upto - *dropped < WRITEBACK_STEP)
		return 0;
	if (wait && sync_file_range(fd, base + *dropped, upto - *dropped,
	                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
	                                SYNC_FILE_RANGE_WAIT_AFTER) != 0)
		return errno == EINVAL || errno == ENOSYS || errno == ESPIPE || errno == EOPNOTSUPP
		           ? 0
		           : -1;
	(void)posix_fadvise(fd, base + *dropped, upto - *dropped, POSIX_FADV_DONTNEED);
	*dropped = upto;
	return 0;
}

/*
 * behind() for a temporary file that is only read back (standard output's
 * spill, verify's spools through p11i_stream_wrote()), once it is past
 * three steps.  Standard output's spill is the one output that must be
 * held whole (decrypt's plaintext, until the tag is checked), and holding
 * 1 GiB of it as fresh pages took 1.7 s of system time on the development
 * VM, against 0.8 s written behind to the disk, dropped, and read back at
 * the commit (docs/performance.md, seventh round).  Its writeback waits as
 * -o FILE's does, so that the cache it holds stays bounded even where the
 * disk is slower than the work; a smaller spill, the usual mail, never
 * touches the disk.
 */
static int spill_behind(int fd, off_t *started, off_t *dropped, off_t pos)
{
	return pos < SPILL_BEHIND ? 0 : behind(fd, 0, started, dropped, pos, 1);
}

/* @p n more bytes are in the file. */
static int out_wrote(struct p11i_out *o, size_t n)
{
	int r = 0;

	o->written += (off_t)n;
	if (o->kind == OUT_FILE)
		r = behind(o->fd, 0, &o->started, &o->dropped, o->written, 1);
	else if (o->kind == OUT_STDOUT)
		r = spill_behind(o->fd, &o->started, &o->dropped, o->written);
	if (r != 0)
		o->werr = errno;
	return r;
}

int p11i_stream_wrote(int fd, struct p11i_stream *s, off_t pos)
{
	return spill_behind(fd, &s->started, &s->dropped, pos);
}

void p11i_stream_read(int fd, struct p11i_stream *s, off_t pos)
{
	/* A step behind what was read: dropping a page still to be read would only cost a read. */
	off_t upto = pos - WRITEBACK_STEP;

	if (pos < SPILL_BEHIND || upto - s->gone < WRITEBACK_STEP)
		return;
	(void)posix_fadvise(fd, s->gone, upto - s->gone, POSIX_FADV_DONTNEED);
	s->gone = upto;
}

/* Write out the buffer (spilling standard output to a file first if needed). */
static int out_drain(struct p11i_out *o)
{
	size_t n;

	if (o->werr)
		return -1;
	if (o->len == 0)
		return 0;
	if (o->fd < 0) {
		o->fd = p11i_tmpfile(NULL);
		if (o->fd < 0) {
			o->werr = errno;
			return -1;
		}
	}
	if (p11i_write_full(o->fd, o->buf, o->len) != 0) {
		o->werr = errno;
		return -1;
	}
	n = o->len;
	o->len = 0;
	return out_wrote(o, n);
}

int p11i_out_write(struct p11i_out *o, const void *in, size_t len)
{
	size_t n = len, room, k;
	const unsigned char *p = in;
	unsigned char *nb;

	if (o == NULL || o->werr)
		return -1;
	while (n > 0) {
		/*
		 * The block grows as output comes: up to MEM_MAX for standard
		 * output (small outputs never touch the disk), up to OUT_BUF for
		 * a file (a small mail does not take a 256 KiB block, which
		 * malloc maps and unmaps each time, per file of a batch).
		 */
		size_t limit = o->kind == OUT_STDOUT && o->fd < 0 ? MEM_MAX : OUT_BUF;

		if (o->len + n > o->cap && o->cap < limit) {
			size_t cap = o->cap * 2;

			while (cap < o->len + n && cap < limit)
				cap *= 2;
			if (cap > limit)
				cap = limit;
			nb = malloc(cap);
			if (nb == NULL) {
				o->werr = ENOMEM;
				return -1;
			}
			memcpy(nb, o->buf, o->len);
			explicit_bzero(o->buf, o->touched);
			free(o->buf);
			o->buf = nb;
			o->cap = cap;
			continue;
		}
		if (o->len == 0 && n >= o->cap && o->fd >= 0) {
			/* A large write goes straight through. */
			if (p11i_write_full(o->fd, p, n) != 0) {
				o->werr = errno;
				return -1;
			}
			if (out_wrote(o, n) != 0)
				return -1;
			break;
		}
		room = o->cap - o->len;
		k = n < room ? n : room;
		memcpy(o->buf + o->len, p, k);
		o->len += k;
		if (o->len > o->touched)
			o->touched = o->len;
		p += k;
		n -= k;
		if (o->len == o->cap && out_drain(o) != 0)
			return -1;
	}
	return 0;
}

long long p11i_out_tell(const struct p11i_out *o)
{
	if (o == NULL || o->kind == OUT_DIRECT || o->werr)
		return -1;
	return (long long)o->written + (long long)o->len + (long long)o->ext_bytes;
}

int p11i_out_rewind(struct p11i_out *o, long long off)
{
	off_t to = (off_t)off;

	if (o == NULL || o->kind == OUT_DIRECT || o->werr || off < 0 ||
	    to > o->written + (off_t)o->len + o->ext_bytes)
		return -1;
	/* Ranges of the input at or past the mark go; one the mark cuts is shortened. */
	while (o->next > 0) {
		struct p11i_out_ext *e = &o->ext[o->next - 1];

		if (to >= e->at + e->len)
			break;
		if (to > e->at) {
			o->ext_bytes -= e->at + e->len - to;
			e->len = to - e->at;
			break;
		}
		o->ext_bytes -= e->len;
		o->next--;
	}
	/* What is left of the mark, in the spill file's bytes. */
	to -= o->ext_bytes;
	if (to >= o->written) {
		o->len = (size_t)(to - o->written);
		return 0;
	}
	if (o->fd < 0 || ftruncate(o->fd, to) != 0 || lseek(o->fd, to, SEEK_SET) != to) {
		o->werr = errno ? errno : EIO;
		return -1;
	}
	o->written = to;
	o->len = 0;
	if (o->started > to)
		o->started = to;
	if (o->dropped > to)
		o->dropped = to;
	return 0;
}

static int same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static int same_time(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static int same_input(const struct stat *a, const struct stat *b)
{
	return same_file(a, b) && a->st_size == b->st_size && same_time(&a->st_mtim, &b->st_mtim) &&
	       same_time(&a->st_ctim, &b->st_ctim);
}

/*
 * The identity of the input when its reading started against what it is
 * now: NULL, or how it changed.  Size and times move with any write the
 * file system records (a writer within one tick of its clock after the
 * reading started can go unseen where its timestamps are that coarse).
 */
static const char *ref_changed(const struct p11i_out *o)
{
	struct stat st;
	const struct stat *a = &o->ref_st;

	if (fstat(o->ref_fd, &st) != 0)
		return "it cannot be looked at any more";
	if (!same_file(a, &st))
		return "it is another file";
	if (a->st_size != st.st_size)
		return "its size changed";
	if (!same_time(&a->st_mtim, &st.st_mtim) || !same_time(&a->st_ctim, &st.st_ctim))
		return "it was written to";
	return NULL;
}

int p11i_out_identity(int fd, struct stat *st)
{
	struct timespec now;

	/* The clock first: a change after it is in this tick or a later one. */
	if (clock_gettime(CLOCK_REALTIME_COARSE, &now) != 0 || fstat(fd, st) != 0 ||
	    !S_ISREG(st->st_mode))
		return -1;
	if (st->st_ctim.tv_sec > now.tv_sec ||
	    (st->st_ctim.tv_sec == now.tv_sec && st->st_ctim.tv_nsec >= now.tv_nsec))
		return -1;
	return 0;
}

/* Taking ranges of the input @p fd: 0, or -1 when its bytes are to be written instead. */
static int ref_start(struct p11i_out *o, int fd, const struct stat *st)
{
	struct stat out;

	/* One input per output: its identity is checked at the commit. */
	if (o->ref_fd >= 0)
		return same_input(&o->ref_st, st) ? 0 : -1;
	/* Standard output onto the input itself (>> the same file): it grows as we copy. */
	if (fstat(STDOUT_FILENO, &out) == 0 && same_file(&out, st))
		return -1;
	o->ref_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (o->ref_fd < 0)
		return -1;
	o->ref_st = *st;
	return 0;
}

int p11i_out_write_ref(struct p11i_out *o, int fd, const struct stat *st, off_t off, const void *p,
                       size_t n)
{
	struct p11i_out_ext *e;

	if (o == NULL || o->werr)
		return -1;
	if (n == 0)
		return 0;
	if (o->kind != OUT_STDOUT || fd < 0 || st == NULL || !S_ISREG(st->st_mode) || off < 0 ||
	    off > st->st_size || (off_t)n > st->st_size - off)
		return p11i_out_write(o, p, n);
	e = o->next > 0 ? &o->ext[o->next - 1] : NULL;
	/* Right after the last range, in the input and in the output: the same range. */
	if (e != NULL && o->len == 0 && o->written == e->spool && e->off + e->len == off &&
	    same_input(&o->ref_st, st)) {
		e->len += (off_t)n;
		o->ext_bytes += (off_t)n;
		return 0;
	}
	/* Small outputs stay in memory (no file at all); small ranges are written. */
	if ((o->fd < 0 && o->next == 0 && o->len + n <= MEM_MAX) || n < REF_MIN ||
	    o->next == EXT_MAX || ref_start(o, fd, st) != 0)
		return p11i_out_write(o, p, n);
	if (o->next == o->ext_cap) {
		size_t cap = o->ext_cap ? o->ext_cap * 2 : 16;

		e = realloc(o->ext, cap * sizeof(*e));
		if (e == NULL)
			return p11i_out_write(o, p, n);
		o->ext = e;
		o->ext_cap = cap;
	}
	/* What is buffered comes before the range: into the spill file. */
	if (out_drain(o) != 0)
		return -1;
	e = &o->ext[o->next++];
	e->at = o->written + o->ext_bytes;
	e->spool = o->written;
	e->off = off;
	e->len = (off_t)n;
	o->ext_bytes += (off_t)n;
	return 0;
}

int p11i_out_flush(struct p11i_out *o)
{
	/*
	 * Only a device or FIFO is written now (someone may be reading it).
	 * A file or standard output is written when its block is full or at
	 * the commit: nobody sees it before, and a signer's flushes (after the
	 * signature's base64) cost a system call per mail of a batch.
	 */
	if (o->kind != OUT_DIRECT)
		return o->werr ? -1 : 0;
	return out_drain(o);
}

/* ------------------------------------------------------------ opening */

static p11s_rc open_fail(struct p11i_out *o, p11s_rc rc)
{
	p11i_out_abort(o);
	return rc;
}

/*
 * A symbolic link at @p path: the file it points to is replaced, the link
 * stays.  The link is followed by open(), so the kernel's protection of
 * links in sticky directories (fs.protected_symlinks) applies.
 */
static p11s_rc resolve_link(struct p11i_out *o, char **why)
{
	struct stat st;
	char *real;
	int fd = open(o->shown, O_PATH | O_CLOEXEC);

	if (fd < 0) {
		if (errno == ENOENT)
			return fail(why, P11S_E_IO,
			            "cannot write '%s': it is a symbolic link to a file that does "
			            "not exist (give the file's own name)",
			            o->shown);
		return fail(why, P11S_E_IO, "cannot write '%s': %s", o->shown, strerror(errno));
	}
	if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* /dev/stdout and the like: written directly through the link. */
		close(fd);
		o->st = st;
		return P11S_OK;
	}
	if (fstat(fd, &st) != 0 || (real = realpath(o->shown, NULL)) == NULL) {
		p11s_rc rc =
		    fail(why, P11S_E_IO, "cannot write '%s': %s", o->shown, strerror(errno));
		close(fd);
		return rc;
	}
	close(fd);
	free(o->path);
	o->path = real;
	/* The link moved while we looked: refuse rather than guess. */
	if (lstat(real, &o->st) != 0 || o->st.st_dev != st.st_dev || o->st.st_ino != st.st_ino)
		return fail(why, P11S_E_IO, "cannot write '%s': it changed while being opened",
		            o->shown);
	o->exists = 1;
	return P11S_OK;
}

static p11s_rc open_file(struct p11i_out *o, const struct p11i_out_dir *d, char **why)
{
	char *dir;
	mode_t mode;
	int e;

	o->path = strdup(o->shown);
	if (o->path == NULL)
		return nomem(why);
	if (lstat(o->path, &o->st) == 0) {
		o->exists = 1;
		if (S_ISLNK(o->st.st_mode)) {
			p11s_rc rc = resolve_link(o, why);

			if (rc != P11S_OK)
				return rc;
		}
		if (S_ISDIR(o->st.st_mode))
			return fail(why, P11S_E_IO, "cannot write '%s': it is a directory",
			            o->shown);
		if (!S_ISREG(o->st.st_mode)) {
			/*
			 * /dev/null, a FIFO, a terminal: there is nothing to rename
			 * over, and renaming over a device would replace it with a file.
			 */
			o->kind = OUT_DIRECT;
			o->fd = open(o->path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
			if (o->fd < 0)
				return fail(why, P11S_E_IO, "cannot open '%s': %s", o->shown,
				            strerror(errno));
			return P11S_OK;
		}
	} else if (errno != ENOENT) {
		return fail(why, P11S_E_IO, "cannot write '%s': %s", o->shown, strerror(errno));
	}
	dir = dir_of(o->path);
	if (dir == NULL)
		return nomem(why);
	/*
	 * A new file is created with its final mode, the umask applied by the
	 * kernel as for any new file: no fchmod at commit, and no umask(2)
	 * dance, which is not safe while other threads create files.  Nobody
	 * else can open it before it has its name and its whole content.
	 */
	mode = o->exists ? 0600 : (o->flags & P11I_OUT_PRIVATE) ? 0600 : 0666;
	/* The batch's directory, held open: no lookup, and its file system known. */
	if (d != NULL && strcmp(dir, d->path) != 0)
		d = NULL;
	pthread_mutex_lock(&open_lock);
	if (!unnamed_linkable()) {
		o->fd = -1;
		errno = EOPNOTSUPP;
	} else {
		o->fd = open_unnamed(d != NULL ? d->fd : AT_FDCWD, d != NULL ? "." : dir, mode);
		/*
		 * An unnamed file is on its directory's file system: the group
		 * sync need not ask (an fstat a file of a batch).  It is linked
		 * in by its path: should that name another file system by then
		 * (the directory moved), the link fails and nothing is placed.
		 */
		if (o->fd >= 0 && d != NULL) {
			o->dev_known = 1;
			o->dev = d->dev;
		}
	}
	if (o->fd < 0 && errno == EOPNOTSUPP) {
		/* No O_TMPFILE here (NFS, old kernels): a named file, renamed at commit. */
		for (int tries = 0; tries < 100; tries++) {
			unsigned char rnd[6];

			free(o->tmp_path);
			o->tmp_path = NULL;
			if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
				errno = EIO;
				break;
			}
			o->tmp_path = out_asprintf("%s/.p11smime-%02x%02x%02x%02x%02x%02x", dir,
			                           rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
			if (o->tmp_path == NULL) {
				pthread_mutex_unlock(&open_lock);
				free(dir);
				return nomem(why);
			}
			o->fd = open(o->tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
			if (o->fd >= 0 || errno != EEXIST)
				break;
		}
		if (o->fd < 0) {
			free(o->tmp_path);
			o->tmp_path = NULL;
		}
	}
	e = errno;
	o->seq = ++open_seq;
	pthread_mutex_unlock(&open_lock);
	free(dir);
	if (o->fd < 0)
		return fail(why, P11S_E_IO, "cannot create '%s': %s", o->shown, strerror(e));
	return P11S_OK;
}

p11s_rc p11i_out_dir_open(const char *path, struct p11i_out_dir **out, char **why)
{
	struct p11i_out_dir *d = calloc(1, sizeof(*d));
	struct stat st;

	if (d == NULL || (d->path = strdup(path)) == NULL) {
		free(d);
		return nomem(why);
	}
	d->fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (d->fd < 0 || fstat(d->fd, &st) != 0) {
		p11s_rc rc = fail(why, P11S_E_IO, "cannot open the directory '%s': %s", path,
		                  strerror(errno));

		p11i_out_dir_free(d);
		return rc;
	}
	d->dev = st.st_dev;
	*out = d;
	return P11S_OK;
}

void p11i_out_dir_free(struct p11i_out_dir *d)
{
	if (d == NULL)
		return;
	if (d->fd >= 0)
		close(d->fd);
	free(d->path);
	free(d);
}

p11s_rc p11i_out_open(const char *path, unsigned flags, size_t size, struct p11i_out **out,
                      char **why)
{
	return p11i_out_open_in(NULL, path, flags, size, out, why);
}

p11s_rc p11i_out_open_in(const struct p11i_out_dir *d, const char *path, unsigned flags,
                         size_t size, struct p11i_out **out, char **why)
{
	struct p11i_out *o;
	struct stat st, null_st;
	p11s_rc rc;

	o = calloc(1, size);
	if (o == NULL)
		return nomem(why);
	o->fd = -1;
	o->ref_fd = -1;
	o->flags = flags;
	if (path != NULL && strcmp(path, "-") != 0) {
		o->kind = OUT_FILE;
		o->shown = strdup(path);
		if (o->shown == NULL)
			return open_fail(o, nomem(why));
		rc = open_file(o, d, why);
		if (rc != P11S_OK)
			return open_fail(o, rc);
	} else {
		o->kind = OUT_STDOUT;
		o->shown = strdup("standard output");
		if (o->shown == NULL)
			return open_fail(o, nomem(why));
		/* Nothing to keep whole on /dev/null. */
		if (fstat(STDOUT_FILENO, &st) == 0 && S_ISCHR(st.st_mode) &&
		    stat("/dev/null", &null_st) == 0 && st.st_rdev == null_st.st_rdev) {
			o->kind = OUT_DIRECT;
			o->fd = dup(STDOUT_FILENO);
			if (o->fd < 0)
				return open_fail(o, fail(why, P11S_E_IO,
				                         "cannot write to standard output: %s",
				                         strerror(errno)));
		}
	}
	o->cap = o->kind == OUT_DIRECT ? OUT_BUF : 16 * 1024;
	o->buf = malloc(o->cap);
	if (o->buf == NULL)
		return open_fail(o, nomem(why));
	*out = o;
	return P11S_OK;
}

static void output_free(struct p11i_out *o)
{
	if (o->fd >= 0)
		close(o->fd);
	if (o->ref_fd >= 0)
		close(o->ref_fd);
	free(o->ext);
	if (o->buf != NULL) {
		/*
		 * It may be plaintext.  Only what was written: wiping the whole
		 * 256 KiB block touched every page of it, for each output of a
		 * batch (a quarter of the time of a batch of small mails).
		 */
		explicit_bzero(o->buf, o->touched);
		free(o->buf);
	}
	free(o->shown);
	free(o->path);
	free(o->tmp_path);
	free(o);
}

void p11i_out_abort(struct p11i_out *o)
{
	if (o == NULL)
		return;
	if (o->tmp_path != NULL)
		unlink(o->tmp_path);
	output_free(o);
}

p11s_rc p11i_out_explain(const struct p11i_out *o, p11s_rc rc, char **why)
{
	if (o == NULL || !o->werr)
		return rc;
	return fail(why, P11S_E_IO,
	            o->kind == OUT_STDOUT ? "cannot write to %s: %s" : "cannot write '%s': %s",
	            o->shown, strerror(o->werr));
}

/* ------------------------------------------------------------ commit */

/*
 * Where a commit copies to: standard output, and when that is a regular
 * file, its writeback started and its pages dropped behind the copy
 * (behind(), without waiting for the disk).
 */
struct sink {
	int fd;
	int regular;
	off_t base; /* where the copy started in the file */
	off_t pos, started, dropped;
	unsigned char *buf; /* OUT_BUF bytes for a copy through memory, once needed */
};

static void sink_copied(struct sink *k, off_t n)
{
	k->pos += n;
	if (k->regular)
		(void)behind(k->fd, k->base, &k->started, &k->dropped, k->pos, 0);
}

/*
 * Copy @p size bytes at @p off of @p from to @p k (at its position): 0;
 * -1 (errno); -2 when @p from ended before (a file cut short: not an error
 * to paper over).
 *
 * Through a 256 KiB buffer, into anything.  Not by sendfile() or splice()
 * into a pipe or a socket: those hand over references to the page cache's
 * pages, which the reader takes later, while copy_spill() punches each
 * step out of the spill as soon as it is handed over, and a punch zeroes
 * in place a page it covers in part (a `decrypt | ...` whose reader was
 * still asleep got zeros for the last page of the spill, a `sign | ...`
 * for the end of each part); and a page of the input, referenced instead
 * of copied, would change under the reader with a later write to the input.
 * Into a regular file a copy in the kernel would copy as well, and the
 * buffer did as well or better: `sign > FILE` of 1 GiB, eight runs of
 * each in turn on the development VM, took a median 1.27 s of CPU time
 * onto ext4 against 1.36 s with copy_file_range()/sendfile(), the same
 * onto tmpfs (1.23 / 1.26 s).  A file system that could share the blocks
 * instead (a reflink) cannot for these ranges: they are not block-aligned.
 */
static int copy_range(int from, off_t off, off_t size, struct sink *k)
{
	off_t end = off + size;
	ssize_t n;

	if (k->buf == NULL && (k->buf = malloc(OUT_BUF)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	while (off < end) {
		n = pread(from, k->buf, end - off < OUT_BUF ? (size_t)(end - off) : OUT_BUF, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || p11i_write_full(k->fd, k->buf, (size_t)n) != 0)
			return n == 0 ? -2 : -1;
		off += n;
	}
	return 0;
}

/*
 * Part of the spill file to @p k, a step at a time, each step's pages
 * given back (a hole punched) once they are copied: the copy's new pages
 * are then the ones just freed.  A 1 GiB decrypt to standard output on
 * tmpfs spent more on the page allocator than on the copy (0.5 to 1.5 s
 * of CPU; 0.3 s with the holes), and the spill and the output no longer
 * take twice the message's memory at once.  Nothing reads the spill again:
 * a commit that fails is not retried.  0 or -1 (errno).
 */
static int copy_spill(int from, off_t off, off_t size, struct sink *k)
{
	off_t end = off + size, step;

	for (; off < end; off += step) {
		step = end - off < SPILL_STEP ? end - off : SPILL_STEP;
		int r = copy_range(from, off, step, k);

		if (r != 0) {
			if (r == -2) /* our own file, shorter than written */
				errno = EIO;
			return -1;
		}
		/* Where holes cannot be punched the pages go at close, as before. */
		(void)fallocate(from, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, step);
		sink_copied(k, step);
	}
	return 0;
}

/* A range of the input to @p k, a step at a time (see sink_copied()): 0, -1 or -2 (copy_range()).
 */
static int copy_input(int from, off_t off, off_t size, struct sink *k)
{
	off_t end = off + size, step;
	int r = 0;

	for (; off < end && r == 0; off += step) {
		step = end - off < SPILL_STEP ? end - off : SPILL_STEP;
		if ((r = copy_range(from, off, step, k)) == 0)
			sink_copied(k, step);
	}
	return r;
}

/*
 * The spill file, the ranges of the input between its parts, in order.
 * 0, -1 (errno), or -2: the input changed (*what says how).
 */
static int copy_parts(struct p11i_out *o, struct sink *k, const char **what)
{
	off_t spooled = 0, size = o->fd >= 0 ? lseek(o->fd, 0, SEEK_END) : 0;
	int r = 0;

	if (size < 0)
		return -1;
	for (size_t i = 0; i <= o->next && r == 0; i++) {
		off_t upto = i < o->next ? o->ext[i].spool : size;

		if (upto > spooled)
			r = copy_spill(o->fd, spooled, upto - spooled, k);
		spooled = upto;
		if (r == 0 && i < o->next &&
		    (r = copy_input(o->ref_fd, o->ext[i].off, o->ext[i].len, k)) == -2)
			*what = "it is shorter than it was";
	}
	/* Copied from a file still the same at the end: the bytes were the ones signed. */
	if (r == 0 && o->next > 0 && (*what = ref_changed(o)) != NULL)
		r = -2;
	return r;
}

static p11s_rc commit_stdout(struct p11i_out *o, char **why)
{
	struct stat st;
	off_t start = -1;
	const char *what = NULL;
	int regular, undo = 0, r;

	/* Nothing reaches standard output when the ranges would not be what was signed. */
	if (o->next > 0 && (what = ref_changed(o)) != NULL)
		return fail(why, P11S_E_INPUT,
		            "the input changed while it was signed: %s (nothing was written)",
		            what);
	/* Whatever stdio holds goes first (nothing should, but keep the order). */
	fflush(stdout);
	regular = fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode);
	if (regular) {
		int fl = fcntl(STDOUT_FILENO, F_GETFL);

		/*
		 * Where the bytes go: the end of a file opened for appending
		 * (>>), whose offset says nothing before the first write (it
		 * was taken for the start: a failed commit emptied the
		 * mailbox it appended to); else the offset.
		 */
		start = fl >= 0 && (fl & O_APPEND) ? st.st_size : lseek(STDOUT_FILENO, 0, SEEK_CUR);
		/* Only an end can be taken back: what was written over a file's middle cannot. */
		undo = start >= 0 && start == st.st_size;
	}
	if (o->fd < 0 && o->next == 0) {
		r = p11i_write_full(STDOUT_FILENO, o->buf, o->len);
	} else {
		struct sink k = {STDOUT_FILENO, start >= 0, start, 0, 0, 0, NULL};

		r = copy_parts(o, &k, &what);
		/* The input's bytes passed through it (decrypted content too): wiped. */
		if (k.buf != NULL) {
			explicit_bzero(k.buf, OUT_BUF);
			free(k.buf);
		}
	}
	if (r == 0)
		return P11S_OK;
	o->werr = r == -2 ? 0 : errno;
	/* A file on standard output (disk full): take back the part written. */
	if (undo && ftruncate(STDOUT_FILENO, start) == 0)
		lseek(STDOUT_FILENO, start, SEEK_SET);
	else
		undo = 0;
	if (r == -2)
		return fail(why, P11S_E_INPUT, "the input changed while it was signed: %s%s", what,
		            undo ? " (what was written is taken back)"
		                 : " (standard output has part of the message)");
	return p11i_out_explain(o, P11S_E_IO, why);
}

/* Link the unnamed file @p fd in as @p name (which must not exist). */
static int link_unnamed(int fd, const char *name)
{
	char proc[64];

	if (linkat(fd, "", AT_FDCWD, name, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != ENOENT && errno != EPERM && errno != EINVAL)
		return -1;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, proc, AT_FDCWD, name, AT_SYMLINK_FOLLOW);
}

/* The unnamed file becomes o->path: linked directly, or under a temporary name and renamed. */
static int place_unnamed(struct p11i_out *o)
{
	unsigned char rnd[6];
	char *dir, *tmp = NULL;
	int r = -1;

	if (!o->exists) {
		if (link_unnamed(o->fd, o->path) == 0)
			return 0;
		if (errno != EEXIST)
			return -1;
	}
	dir = dir_of(o->path);
	if (dir == NULL) {
		errno = ENOMEM;
		return -1;
	}
	for (int tries = 0; tries < 100; tries++) {
		free(tmp);
		tmp = NULL;
		/*
		 * The kernel's generator, not OpenSSL's: a name needs no DRBG,
		 * and the agent's clients would pay for setting one up.
		 */
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
			errno = EIO;
			break;
		}
		tmp = out_asprintf("%s/.p11smime-%02x%02x%02x%02x%02x%02x", dir, rnd[0], rnd[1],
		                   rnd[2], rnd[3], rnd[4], rnd[5]);
		if (tmp == NULL) {
			errno = ENOMEM;
			break;
		}
		/* The content is complete now: a name for an instant is harmless. */
		if (link_unnamed(o->fd, tmp) == 0) {
			r = rename(tmp, o->path);
			if (r != 0) {
				int e = errno;

				unlink(tmp);
				errno = e;
			}
			break;
		}
		if (errno != EEXIST)
			break;
	}
	free(tmp);
	free(dir);
	return r;
}

/* The owner and mode the file will have in place (see p11i_out_open()). */
static int set_mode(struct p11i_out *o)
{
	mode_t mode;

	if (o->exists) {
		/* Replacing a file: it keeps its owner (root can give it) and its mode. */
		if (geteuid() == 0) {
			if (fchown(o->fd, o->st.st_uid, o->st.st_gid) != 0)
				return -1;
		} else if (o->st.st_gid != getegid() &&
		           fchown(o->fd, (uid_t)-1, o->st.st_gid) != 0) {
			/* Not a member of that group: the file takes ours, as any new file would.
			 */
			errno = 0;
		}
		mode = o->st.st_mode & 07777;
	} else if (o->flags & P11I_OUT_PRIVATE) {
		mode = 0600; /* whatever the umask took from the 0600 it was created with */
	} else {
		return 0; /* created 0666 less the umask, as any new file */
	}
	return fchmod(o->fd, mode);
}

static p11s_rc commit_file(struct p11i_out *o, char **why)
{
	if ((!o->prepared && set_mode(o) != 0) || (!o->synced && fsync(o->fd) != 0))
		goto fail;
	if (o->tmp_path != NULL) {
		if (rename(o->tmp_path, o->path) != 0)
			goto fail;
		free(o->tmp_path);
		o->tmp_path = NULL;
	} else if (place_unnamed(o) != 0) {
		goto fail;
	}
	return P11S_OK;
fail:
	o->werr = errno;
	return p11i_out_explain(o, P11S_E_IO, why);
}

p11s_rc p11i_out_prepare(struct p11i_out *o, char **why)
{
	if (o == NULL)
		return fail(why, P11S_E_INTERNAL, "no output");
	if (o->kind != OUT_FILE || o->prepared)
		return P11S_OK;
	if (out_drain(o) != 0 || o->werr || set_mode(o) != 0) {
		if (!o->werr)
			o->werr = errno;
		return p11i_out_explain(o, P11S_E_IO, why);
	}
	o->prepared = 1;
	return P11S_OK;
}

p11s_rc p11i_out_sync_group(struct p11i_out *const *outs, size_t n, char **why)
{
	/* Per file system, the output opened first (see below). */
	struct {
		dev_t dev;
		const struct p11i_out *first;
	} fs[8];
	size_t nfs = 0, j;
	struct stat st;

	for (size_t i = 0; i < n; i++) {
		const struct p11i_out *o = outs[i];

		if (o == NULL || o->kind != OUT_FILE)
			continue;
		if (!o->prepared)
			return fail(why, P11S_E_INTERNAL, "'%s' was not prepared", o->shown);
		if (o->dev_known) {
			st.st_dev = o->dev;
		} else if (fstat(o->fd, &st) != 0) {
			return fail(why, P11S_E_IO, "cannot sync '%s': %s", o->shown,
			            strerror(errno));
		}
		for (j = 0; j < nfs && fs[j].dev != st.st_dev; j++)
			;
		if (j == nfs) {
			/* Past a few file systems, one fsync each is as good. */
			if (nfs == sizeof(fs) / sizeof(fs[0]))
				return fail(why, P11S_E_IO, "outputs on too many file systems");
			fs[nfs].dev = st.st_dev;
			fs[nfs++].first = o;
		} else if (o->seq < fs[j].first->seq) {
			fs[j].first = o;
		}
	}
	/*
	 * syncfs() reports the write errors the file system had since the
	 * descriptor it is given was opened: the group's first-opened file's
	 * covers every file of the group.  A failure is anybody's on that file
	 * system; each commit's own fsync then tells whose.
	 */
	for (j = 0; j < nfs; j++)
		if (syncfs(fs[j].first->fd) != 0)
			return fail(why, P11S_E_IO, "cannot sync the file system of '%s': %s",
			            fs[j].first->shown, strerror(errno));
	for (size_t i = 0; i < n; i++)
		if (outs[i] != NULL && outs[i]->kind == OUT_FILE)
			outs[i]->synced = 1;
	return P11S_OK;
}

p11s_rc p11i_out_commit(struct p11i_out *o, char **why)
{
	p11s_rc rc = P11S_OK;

	if (o == NULL)
		return fail(why, P11S_E_INTERNAL, "no output");
	if (o->kind != OUT_STDOUT && out_drain(o) != 0)
		rc = p11i_out_explain(o, P11S_E_IO, why);
	else if (o->kind == OUT_STDOUT && (o->fd >= 0 || o->next > 0) && out_drain(o) != 0)
		rc = p11i_out_explain(o, P11S_E_IO, why);
	else if (o->werr)
		rc = p11i_out_explain(o, P11S_E_IO, why);
	else if (o->kind == OUT_STDOUT)
		rc = commit_stdout(o, why);
	else if (o->kind == OUT_FILE)
		rc = commit_file(o, why);
	p11i_out_abort(o);
	return rc;
}
