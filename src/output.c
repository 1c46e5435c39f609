/*
 * Input, and output that appears whole or not at all.
 *
 * Output is written through our own BIO in large blocks (stdio's 4 KiB
 * buffer cost a system call per 2-4 KiB).  Temporary files are created
 * without a name (O_TMPFILE) and linked in only at commit, so that a
 * process killed at any point leaves nothing behind; where the file
 * system cannot, a named temporary file is the fallback.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common.h"
#include "p11smime/io.h"

/*
 * The order in which output files were opened (p11s_output_sync_group()):
 * taken with the open, under one lock, so that it is the order in which
 * the kernel sampled their file system's error state.
 */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long open_seq;

/* Input stdio buffer and output block size. */
#define IN_BUF  (256 * 1024)
#define OUT_BUF (256 * 1024)
/* Standard output is kept in memory up to this, then spilled to a file. */
#define MEM_MAX (1024 * 1024)
/* A file's writeback is started every this many bytes, so that the fsync at commit waits for the
 * tail only. */
#define WRITEBACK_STEP (8 * 1024 * 1024)

enum out_kind {
	OUT_FILE,   /* temporary file, linked or renamed over path at commit */
	OUT_STDOUT, /* memory, then an unnamed file; copied to fd 1 at commit */
	OUT_DIRECT, /* written as it comes (a device, a FIFO, /dev/null) */
};

struct p11s_output {
	enum out_kind kind;
	char *shown;    /* the name the user gave, for messages */
	char *path;     /* where the file goes (a symlink's target, resolved) */
	char *tmp_path; /* named temporary file (fallback); NULL when unnamed */
	int fd;         /* the temporary file, the device, or -1 (memory only) */
	unsigned flags;
	int exists; /* path existed at open: its mode and owner are kept */
	struct stat st;
	unsigned char *buf;
	size_t len, cap;
	/* The most of buf ever written: what a wipe must cover (the rest was never touched). */
	size_t touched;
	int werr;          /* errno of the first failed write, 0 if none */
	int prepared;      /* p11s_output_prepare(): mode set, writeback started */
	int synced;        /* p11s_output_sync_group(): the data is on the disk already */
	unsigned long seq; /* order of opening, for p11s_output_sync_group() */
	BIO *bio;
	off_t written, started; /* bytes in the file; how many of them are under writeback */
};

/*
 * The stdio buffer of an input file (setvbuf() needs one that outlives
 * fclose()): the BIO's free callback closes the file itself, then frees it.
 */
static long input_free_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl,
                          int ret, size_t *processed)
{
	FILE *fp = NULL;

	(void)argp;
	(void)len;
	(void)argi;
	(void)argl;
	(void)processed;
	if (oper == BIO_CB_FREE) {
		if (BIO_get_fp(b, &fp) > 0 && fp != NULL && fp != stdin) {
			BIO_set_close(b, BIO_NOCLOSE);
			fclose(fp);
		}
		free(BIO_get_callback_arg(b));
	}
	return ret;
}

p11s_rc p11s_input_open(const char *path, BIO **out, p11s_error *err)
{
	const char *name = path && strcmp(path, "-") != 0 ? path : "standard input";
	struct stat st;
	FILE *fp;
	BIO *b;

	if (path == NULL || strcmp(path, "-") == 0) {
		fp = stdin;
	} else {
		fp = fopen(path, "rb");
		if (fp == NULL)
			return p11i_err(err, P11S_E_IO, "cannot open '%s': %s", name,
			                strerror(errno));
	}
	/* fopen() takes a directory; its first read fails, which readers would take for an end. */
	if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
		if (fp != stdin)
			fclose(fp);
		return p11i_err(err, P11S_E_IO, "cannot read '%s': it is a directory", name);
	}
	b = BIO_new_fp(fp, fp == stdin ? BIO_NOCLOSE : BIO_CLOSE);
	if (b == NULL) {
		if (fp != stdin)
			fclose(fp);
		return p11i_err_nomem(err);
	}
	/*
	 * Readers ask for 64 KiB at a time, and stdio's 4 KiB buffer splits that
	 * into two reads: read in 256 KiB blocks.  Standard input gets a static
	 * buffer, once (setvbuf() must come before its first read).
	 */
	if (fp == stdin) {
		static char stdin_buf[IN_BUF];
		static int stdin_set;

		if (!stdin_set)
			setvbuf(stdin, stdin_buf, _IOFBF, sizeof(stdin_buf));
		stdin_set = 1;
	} else {
		char *vbuf = malloc(IN_BUF);

		if (vbuf != NULL && setvbuf(fp, vbuf, _IOFBF, IN_BUF) == 0) {
			BIO_set_callback_arg(b, vbuf);
			BIO_set_callback_ex(b, input_free_cb);
		} else {
			free(vbuf);
		}
	}
	*out = b;
	return P11S_OK;
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
static int open_unnamed(const char *dir, mode_t mode)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);

	if (fd < 0 && (errno == EISDIR || errno == EINVAL || errno == EOPNOTSUPP))
		errno = EOPNOTSUPP;
	return fd;
}

/*
 * @p n more bytes are in the file.  The disk starts on them as they come
 * rather than at the commit's fsync: on a disk slower than the work, the
 * fsync then waits for the last step only.  Standard output's spill file
 * is copied, not kept: no writeback for it.  An error here is the fsync's
 * to report.
 */
static void out_wrote(p11s_output *o, size_t n)
{
	o->written += (off_t)n;
	if (o->kind == OUT_FILE && o->written - o->started >= WRITEBACK_STEP) {
		sync_file_range(o->fd, o->started, o->written - o->started, SYNC_FILE_RANGE_WRITE);
		o->started = o->written;
	}
}

/* Write out the buffer (spilling standard output to a file first if needed). */
static int out_drain(p11s_output *o)
{
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
	out_wrote(o, o->len);
	o->len = 0;
	return 0;
}

static int out_write(BIO *b, const char *in, int inl)
{
	p11s_output *o = BIO_get_data(b);
	size_t n = inl > 0 ? (size_t)inl : 0, room, k;
	const unsigned char *p = (const unsigned char *)in;
	unsigned char *nb;

	if (o == NULL || inl < 0 || o->werr)
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
			OPENSSL_cleanse(o->buf, o->touched);
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
			out_wrote(o, n);
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
	return inl;
}

/* Back to @p off (at most what was written): what a speculative writer takes back. */
static int out_rewind(p11s_output *o, long off)
{
	off_t to = (off_t)off;

	if (o->kind == OUT_DIRECT || o->werr || off < 0 || to > o->written + (off_t)o->len)
		return -1;
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
	return 0;
}

static int out_puts(BIO *b, const char *s)
{
	return out_write(b, s, (int)strlen(s));
}

static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	p11s_output *o = BIO_get_data(b);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		/* Standard output stays in memory until commit; a file is written now. */
		if (o->kind == OUT_STDOUT && o->fd < 0)
			return o->werr ? 0 : 1;
		return out_drain(o) == 0 ? 1 : 0;
	case BIO_CTRL_WPENDING:
		return (long)o->len;
	case P11I_BIO_CTRL_TELL:
		if (o->kind == OUT_DIRECT || o->werr || ptr == NULL)
			return 0;
		*(int64_t *)ptr = (int64_t)o->written + (int64_t)o->len;
		return 1;
	case P11I_BIO_CTRL_REWIND:
		return out_rewind(o, num) == 0 ? 1 : 0;
	case BIO_CTRL_PENDING:
		return 0;
	case BIO_CTRL_EOF:
		return 1;
	default:
		return 0;
	}
}

static int out_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *out_method;
static CRYPTO_ONCE out_once = CRYPTO_ONCE_STATIC_INIT;

static void out_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "p11smime output");

	if (m == NULL)
		return;
	BIO_meth_set_write(m, out_write);
	BIO_meth_set_puts(m, out_puts);
	BIO_meth_set_ctrl(m, out_ctrl);
	BIO_meth_set_create(m, out_create);
	out_method = m;
}

/* ------------------------------------------------------------ opening */

static p11s_rc open_fail(p11s_output *o, p11s_rc rc)
{
	p11s_output_abort(o);
	return rc;
}

/*
 * A symbolic link at @p path: the file it points to is replaced, the link
 * stays.  The link is followed by open(), so the kernel's protection of
 * links in sticky directories (fs.protected_symlinks) applies.
 */
static p11s_rc resolve_link(p11s_output *o, p11s_error *err)
{
	struct stat st;
	char *real;
	int fd = open(o->shown, O_PATH | O_CLOEXEC);

	if (fd < 0) {
		if (errno == ENOENT)
			return p11i_err(
			    err, P11S_E_IO,
			    "cannot write '%s': it is a symbolic link to a file that does "
			    "not exist (give the file's own name)",
			    o->shown);
		return p11i_err(err, P11S_E_IO, "cannot write '%s': %s", o->shown, strerror(errno));
	}
	if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* /dev/stdout and the like: written directly through the link. */
		close(fd);
		o->st = st;
		return P11S_OK;
	}
	if (fstat(fd, &st) != 0 || (real = realpath(o->shown, NULL)) == NULL) {
		p11s_rc rc =
		    p11i_err(err, P11S_E_IO, "cannot write '%s': %s", o->shown, strerror(errno));
		close(fd);
		return rc;
	}
	close(fd);
	free(o->path);
	o->path = real;
	/* The link moved while we looked: refuse rather than guess. */
	if (lstat(real, &o->st) != 0 || o->st.st_dev != st.st_dev || o->st.st_ino != st.st_ino)
		return p11i_err(err, P11S_E_IO, "cannot write '%s': it changed while being opened",
		                o->shown);
	o->exists = 1;
	return P11S_OK;
}

static p11s_rc open_file(p11s_output *o, p11s_error *err)
{
	char *dir;
	mode_t mode;
	int e;

	o->path = strdup(o->shown);
	if (o->path == NULL)
		return p11i_err_nomem(err);
	if (lstat(o->path, &o->st) == 0) {
		o->exists = 1;
		if (S_ISLNK(o->st.st_mode)) {
			p11s_rc rc = resolve_link(o, err);

			if (rc != P11S_OK)
				return rc;
		}
		if (S_ISDIR(o->st.st_mode))
			return p11i_err(err, P11S_E_IO, "cannot write '%s': it is a directory",
			                o->shown);
		if (!S_ISREG(o->st.st_mode)) {
			/*
			 * /dev/null, a FIFO, a terminal: there is nothing to rename
			 * over, and renaming over a device would replace it with a file.
			 */
			o->kind = OUT_DIRECT;
			o->fd = open(o->path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
			if (o->fd < 0)
				return p11i_err(err, P11S_E_IO, "cannot open '%s': %s", o->shown,
				                strerror(errno));
			return P11S_OK;
		}
	} else if (errno != ENOENT) {
		return p11i_err(err, P11S_E_IO, "cannot write '%s': %s", o->shown, strerror(errno));
	}
	dir = dir_of(o->path);
	if (dir == NULL)
		return p11i_err_nomem(err);
	/*
	 * Linking an unnamed file in later needs CAP_DAC_READ_SEARCH or
	 * /proc/self/fd: without either (a bare container), use a named one.
	 */
	/*
	 * A new file is created with its final mode, the umask applied by the
	 * kernel as for any new file: no fchmod at commit, and no umask(2)
	 * dance, which is not safe while other threads create files.  Nobody
	 * else can open it before it has its name and its whole content.
	 */
	mode = o->exists ? 0600 : (o->flags & P11S_OUTPUT_PRIVATE) ? 0600 : 0666;
	pthread_mutex_lock(&open_lock);
	if (geteuid() != 0 && access("/proc/self/fd", X_OK) != 0) {
		o->fd = -1;
		errno = EOPNOTSUPP;
	} else {
		o->fd = open_unnamed(dir, mode);
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
			o->tmp_path = p11i_asprintf("%s/.p11smime-%02x%02x%02x%02x%02x%02x", dir,
			                            rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
			if (o->tmp_path == NULL) {
				pthread_mutex_unlock(&open_lock);
				free(dir);
				return p11i_err_nomem(err);
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
		return p11i_err(err, P11S_E_IO, "cannot create '%s': %s", o->shown, strerror(e));
	return P11S_OK;
}

p11s_rc p11s_output_open_ex(const char *path, unsigned flags, p11s_output **out, p11s_error *err)
{
	p11s_output *o;
	struct stat st, null_st;
	p11s_rc rc;

	if (!CRYPTO_THREAD_run_once(&out_once, out_method_init) || out_method == NULL)
		return p11i_err_nomem(err);
	o = calloc(1, sizeof(*o));
	if (o == NULL)
		return p11i_err_nomem(err);
	o->fd = -1;
	o->flags = flags;
	if (path != NULL && strcmp(path, "-") != 0) {
		o->kind = OUT_FILE;
		o->shown = strdup(path);
		if (o->shown == NULL)
			return open_fail(o, p11i_err_nomem(err));
		rc = open_file(o, err);
		if (rc != P11S_OK)
			return open_fail(o, rc);
	} else {
		o->kind = OUT_STDOUT;
		o->shown = strdup("standard output");
		if (o->shown == NULL)
			return open_fail(o, p11i_err_nomem(err));
		/* Nothing to keep whole on /dev/null. */
		if (fstat(STDOUT_FILENO, &st) == 0 && S_ISCHR(st.st_mode) &&
		    stat("/dev/null", &null_st) == 0 && st.st_rdev == null_st.st_rdev) {
			o->kind = OUT_DIRECT;
			o->fd = dup(STDOUT_FILENO);
			if (o->fd < 0)
				return open_fail(o, p11i_err(err, P11S_E_IO,
				                             "cannot write to standard output: %s",
				                             strerror(errno)));
		}
	}
	o->cap = o->kind == OUT_DIRECT ? OUT_BUF : 16 * 1024;
	o->buf = malloc(o->cap);
	o->bio = BIO_new(out_method);
	if (o->buf == NULL || o->bio == NULL)
		return open_fail(o, p11i_err_nomem(err));
	BIO_set_data(o->bio, o);
	*out = o;
	return P11S_OK;
}

p11s_rc p11s_output_open(const char *path, p11s_output **out, p11s_error *err)
{
	return p11s_output_open_ex(path, 0, out, err);
}

BIO *p11s_output_bio(p11s_output *o)
{
	return o ? o->bio : NULL;
}

static void output_free(p11s_output *o)
{
	if (o->bio != NULL) {
		BIO_set_data(o->bio, NULL);
		BIO_free_all(o->bio);
	}
	if (o->fd >= 0)
		close(o->fd);
	if (o->buf != NULL) {
		/*
		 * It may be plaintext.  Only what was written: wiping the whole
		 * 256 KiB block touched every page of it, for each output of a
		 * batch (a quarter of the time of a batch of small mails).
		 */
		OPENSSL_cleanse(o->buf, o->touched);
		free(o->buf);
	}
	free(o->shown);
	free(o->path);
	free(o->tmp_path);
	free(o);
}

void p11s_output_abort(p11s_output *o)
{
	if (o == NULL)
		return;
	if (o->tmp_path != NULL)
		unlink(o->tmp_path);
	output_free(o);
}

p11s_rc p11s_output_explain(const p11s_output *o, p11s_rc rc, p11s_error *err)
{
	if (o == NULL || !o->werr)
		return rc;
	return p11i_err(err, P11S_E_IO,
	                o->kind == OUT_STDOUT ? "cannot write to %s: %s" : "cannot write '%s': %s",
	                o->shown, strerror(o->werr));
}

/* ------------------------------------------------------------ commit */

/* Copy the spill file to standard output in the kernel where it can. */
static int copy_spill(int from, int to, off_t size)
{
	unsigned char *buf;
	off_t off = 0;
	ssize_t n;

	while (off < size) {
		n = copy_file_range(from, &off, to, NULL, (size_t)(size - off), 0);
		if (n <= 0)
			break;
	}
	while (off < size) {
		n = sendfile(to, from, &off, (size_t)(size - off));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EINVAL || errno == ENOSYS))
			break;
		if (n <= 0)
			return n == 0 ? (errno = EIO, -1) : -1;
	}
	if (off >= size)
		return 0;
	/* Neither works between these two (an O_APPEND file, say): a plain loop. */
	buf = malloc(OUT_BUF);
	if (buf == NULL) {
		errno = ENOMEM;
		return -1;
	}
	while (off < size) {
		n = pread(from, buf, OUT_BUF, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || p11i_write_full(to, buf, (size_t)n) != 0) {
			if (n == 0)
				errno = EIO;
			free(buf);
			return -1;
		}
		off += n;
	}
	free(buf);
	return 0;
}

static p11s_rc commit_stdout(p11s_output *o, p11s_error *err)
{
	struct stat st;
	off_t start = -1;
	int regular = fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode);
	int fail;

	/* Whatever stdio holds goes first (nothing should, but keep the order). */
	fflush(stdout);
	if (regular)
		start = lseek(STDOUT_FILENO, 0, SEEK_CUR);
	if (o->fd < 0) {
		fail = p11i_write_full(STDOUT_FILENO, o->buf, o->len);
	} else {
		off_t size = lseek(o->fd, 0, SEEK_END);

		fail = size < 0 || copy_spill(o->fd, STDOUT_FILENO, size);
	}
	if (!fail)
		return P11S_OK;
	o->werr = errno;
	/* A file on standard output (disk full): take back the part written. */
	if (start >= 0 && ftruncate(STDOUT_FILENO, start) == 0)
		lseek(STDOUT_FILENO, start, SEEK_SET);
	return p11s_output_explain(o, P11S_E_IO, err);
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
static int place_unnamed(p11s_output *o)
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
		tmp = p11i_asprintf("%s/.p11smime-%02x%02x%02x%02x%02x%02x", dir, rnd[0], rnd[1],
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

/* The owner and mode the file will have in place (see p11s_output_open()). */
static int set_mode(p11s_output *o)
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
	} else if (o->flags & P11S_OUTPUT_PRIVATE) {
		mode = 0600; /* whatever the umask took from the 0600 it was created with */
	} else {
		return 0; /* created 0666 less the umask, as any new file */
	}
	return fchmod(o->fd, mode);
}

static p11s_rc commit_file(p11s_output *o, p11s_error *err)
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
	return p11s_output_explain(o, P11S_E_IO, err);
}

p11s_rc p11s_output_prepare(p11s_output *o, p11s_error *err)
{
	if (o == NULL)
		return p11i_err(err, P11S_E_INTERNAL, "no output");
	if (o->kind != OUT_FILE || o->prepared)
		return P11S_OK;
	if (out_drain(o) != 0 || o->werr || set_mode(o) != 0) {
		if (!o->werr)
			o->werr = errno;
		return p11s_output_explain(o, P11S_E_IO, err);
	}
	o->prepared = 1;
	return P11S_OK;
}

p11s_rc p11s_output_sync_group(p11s_output *const *outs, size_t n, p11s_error *err)
{
	/* Per file system, the output opened first (see below). */
	struct {
		dev_t dev;
		const p11s_output *first;
	} fs[8];
	size_t nfs = 0, j;
	struct stat st;

	for (size_t i = 0; i < n; i++) {
		const p11s_output *o = outs[i];

		if (o == NULL || o->kind != OUT_FILE)
			continue;
		if (!o->prepared)
			return p11i_err(err, P11S_E_INTERNAL, "'%s' was not prepared", o->shown);
		if (fstat(o->fd, &st) != 0)
			return p11i_err(err, P11S_E_IO, "cannot sync '%s': %s", o->shown,
			                strerror(errno));
		for (j = 0; j < nfs && fs[j].dev != st.st_dev; j++)
			;
		if (j == nfs) {
			/* Past a few file systems, one fsync each is as good. */
			if (nfs == sizeof(fs) / sizeof(fs[0]))
				return p11i_err(err, P11S_E_IO, "outputs on too many file systems");
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
			return p11i_err(err, P11S_E_IO, "cannot sync the file system of '%s': %s",
			                fs[j].first->shown, strerror(errno));
	for (size_t i = 0; i < n; i++)
		if (outs[i] != NULL && outs[i]->kind == OUT_FILE)
			outs[i]->synced = 1;
	return P11S_OK;
}

p11s_rc p11s_output_commit(p11s_output *o, p11s_error *err)
{
	p11s_rc rc = P11S_OK;

	if (o == NULL)
		return p11i_err(err, P11S_E_INTERNAL, "no output");
	if (o->kind != OUT_STDOUT && out_drain(o) != 0)
		rc = p11s_output_explain(o, P11S_E_IO, err);
	else if (o->kind == OUT_STDOUT && o->fd >= 0 && out_drain(o) != 0)
		rc = p11s_output_explain(o, P11S_E_IO, err);
	else if (o->werr)
		rc = p11s_output_explain(o, P11S_E_IO, err);
	else if (o->kind == OUT_STDOUT)
		rc = commit_stdout(o, err);
	else if (o->kind == OUT_FILE)
		rc = commit_file(o, err);
	p11s_output_abort(o);
	return rc;
}
