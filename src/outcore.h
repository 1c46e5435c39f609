/*
 * The file logic of the all-or-nothing output (src/output.c), on libc
 * alone: the library wraps it in a BIO, and the thin front end
 * (src/front/thin.c) writes the agent's answers through it without
 * loading OpenSSL.  Messages are the library's, word for word.
 */
#ifndef P11I_OUTCORE_H
#define P11I_OUTCORE_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "p11smime/result.h"

enum p11i_out_kind {
	P11I_OUT_FILE,   /* temporary file, linked or renamed over path at commit */
	P11I_OUT_STDOUT, /* memory, then an unnamed file; copied to fd 1 at commit */
	P11I_OUT_DIRECT, /* written as it comes (a device, a FIFO, /dev/null) */
};

/* For p11i_out_open(): a new file gets mode 0600 (P11S_OUTPUT_PRIVATE's value). */
#define P11I_OUT_PRIVATE 1u

/* A range of standard output that is a range of an input file (p11i_out_write_ref()). */
struct p11i_out_ext {
	off_t at;    /* where it starts in the output */
	off_t spool; /* the spill file's bytes that come before it */
	off_t off, len;
};

struct p11i_out {
	enum p11i_out_kind kind;
	char *shown;    /* the name the user gave, for messages */
	char *path;     /* where the file goes (a symlink's target, resolved) */
	char *tmp_path; /* named temporary file (fallback); NULL when unnamed */
	int fd;         /* the temporary file, the device, or -1 (memory only) */
	unsigned flags;
	int exists; /* path existed at open: its mode and owner are kept */
	struct stat st;
	/* The file system the temporary file is on, when known at open (p11i_out_sync_group()). */
	int dev_known;
	dev_t dev;
	unsigned char *buf;
	size_t len, cap;
	/* The most of buf ever written: what a wipe must cover (the rest was never touched). */
	size_t touched;
	int werr;               /* errno of the first failed write, 0 if none */
	int prepared;           /* p11i_out_prepare(): mode set, writeback started */
	int synced;             /* p11i_out_sync_group(): the data is on the disk already */
	unsigned long seq;      /* order of opening, for p11i_out_sync_group() */
	off_t written, started; /* bytes in the file; how many of them are under writeback */
	off_t dropped;          /* how many of them are on the disk and out of the page cache */
	/* Standard output's ranges of the input, copied from it at commit (p11i_out_write_ref()).
	 */
	struct p11i_out_ext *ext;
	size_t next, ext_cap;
	off_t ext_bytes; /* their total length */
	int ref_fd;      /* the input (a duplicate), or -1 */
	struct stat ref_st;
};

/* A directory outputs are made in, opened once (p11s_output_dir_open()). */
struct p11i_out_dir {
	int fd;     /* O_PATH | O_DIRECTORY */
	dev_t dev;  /* its file system */
	char *path; /* as given: an output whose directory is this string is made in it */
};

/*
 * Every function that can fail returns a p11s_rc and, on failure, puts in
 * *why its message (malloc'd; NULL when out of memory: the caller says
 * "out of memory").
 */
/*
 * Open the output for @p path (NULL or "-": standard output); the object
 * is @p size bytes (>= sizeof(struct p11i_out), the rest zeroed: a
 * wrapper's fields follow the core).
 */
p11s_rc p11i_out_open(const char *path, unsigned flags, size_t size, struct p11i_out **out,
                      char **why);
/*
 * p11i_out_open() of a file whose directory is @p d's (or NULL): see
 * p11s_output_open_in().
 */
p11s_rc p11i_out_open_in(const struct p11i_out_dir *d, const char *path, unsigned flags,
                         size_t size, struct p11i_out **out, char **why);
/* See p11s_output_dir_open() and p11s_output_dir_free(). */
p11s_rc p11i_out_dir_open(const char *path, struct p11i_out_dir **out, char **why);
void p11i_out_dir_free(struct p11i_out_dir *d);
/* Append @p n bytes; 0, or -1 (o->werr says why, p11i_out_explain() in words). */
int p11i_out_write(struct p11i_out *o, const void *p, size_t n);
/*
 * p11i_out_write() of @p n bytes that are the bytes at @p off of the
 * regular file @p fd, whose identity was @p st when its reading started
 * (before these bytes were read).  Standard output past its memory keeps
 * only the range, merged with the one before when they meet; the commit
 * copies it from the file, after checking that the file is still what @p st
 * says (and again after the copy).  Anything else takes the bytes.  0 or -1.
 */
int p11i_out_write_ref(struct p11i_out *o, int fd, const struct stat *st, off_t off, const void *p,
                       size_t n);
/*
 * The identity of the input @p fd as its reading starts, for
 * p11i_out_write_ref(): 0; -1 when it is no regular file, or when it
 * changed in the current tick of the clock the kernel stamps files with (a
 * change later in that tick would leave its times as they are).
 */
int p11i_out_identity(int fd, struct stat *st);
/* A flush: a file's buffer is written; standard output stays in memory. 0 or -1. */
int p11i_out_flush(struct p11i_out *o);
/*
 * What a speculative writer takes back (sign writes a part as it scans it):
 * p11i_out_tell() the bytes written so far (-1 for a device, or after a
 * failed write), p11i_out_rewind() back to such an offset (0 or -1).
 */
long long p11i_out_tell(const struct p11i_out *o);
int p11i_out_rewind(struct p11i_out *o, long long off);
/* @p rc, or the failed write's reason when there was one. */
p11s_rc p11i_out_explain(const struct p11i_out *o, p11s_rc rc, char **why);
/* Drop: nothing reaches the path; frees @p o (NULL is fine). */
void p11i_out_abort(struct p11i_out *o);
/* Put the output in place whole, and free @p o. */
p11s_rc p11i_out_commit(struct p11i_out *o, char **why);
/* See p11s_output_prepare() and p11s_output_sync_group(). */
p11s_rc p11i_out_prepare(struct p11i_out *o, char **why);
p11s_rc p11i_out_sync_group(struct p11i_out *const *outs, size_t n, char **why);

/*
 * A temporary file written once, then read once from its start (verify's
 * spools): past three steps its pages stream through the page cache as an
 * output file's do (written behind, dropped, read back from the disk), so
 * that a large message takes neither its size in new pages nor the
 * cache's room.  Zero-initialise; one per file and direction.
 */
struct p11i_stream {
	off_t started, dropped; /* writing: see behind() */
	off_t gone;             /* reading: the bytes already given back */
};
/*
 * @p pos bytes are now written to @p fd (flushed: in the kernel's hands).
 * 0, or -1 (errno) when the disk failed to write a step back: the file is
 * not what was written, and the wait took the error (see behind()).
 */
int p11i_stream_wrote(int fd, struct p11i_stream *s, off_t pos);
/*
 * @p pos bytes of @p fd were read and are not needed again: their clean
 * pages go, a step behind.  Never wrong: a page read again is read from
 * the disk, and a page still dirty stays.
 */
void p11i_stream_read(int fd, struct p11i_stream *s, off_t pos);

/* See src/common.h. */
int p11i_tmpfile(const char **dirp);
int p11i_write_full(int fd, const void *buf, size_t n);

#endif
