/*
 * p11smime: input and all-or-nothing output.
 *
 * Threads: a p11s_output belongs to one thread; standard input and output
 * are the process's, so at most one thread reads or writes them through
 * these functions.
 */
#ifndef P11SMIME_IO_H
#define P11SMIME_IO_H

#include <stddef.h>
#include <time.h>

#include <openssl/bio.h>

#include "p11smime/result.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Open @p path for reading as a BIO (NULL or "-": standard input).
 * P11S_E_IO naming the file when it cannot be opened.  Caller frees
 * the BIO with BIO_free_all().
 */
p11s_rc p11s_input_open(const char *path, BIO **out, p11s_error *err);

/** Output that appears whole or not at all. */
typedef struct p11s_output p11s_output;

/**
 * Begin an output to @p path (NULL or "-": standard output); nothing
 * reaches @p path or standard output before p11s_output_commit().
 *
 * A file is written to a temporary file without a name in @p path's
 * directory (O_TMPFILE; a named ".p11smime-XXXXXX" where the file system
 * cannot), linked or renamed over @p path at commit, so a process killed
 * midway leaves nothing.  A file that exists keeps its permission bits
 * (and its owner and group when running as root); a new one gets 0666
 * less the umask, or 0600 with P11S_OUTPUT_PRIVATE.  A symbolic link at
 * @p path stays and the file it points to is replaced; a link to nothing
 * is refused.  A @p path that exists and is not a regular file (/dev/null,
 * a FIFO, a terminal) is written directly: there is nothing to rename
 * over, and renaming would replace a device with a file.
 *
 * Standard output is kept in memory up to 1 MiB, then in an unnamed file
 * in $TMPDIR, and copied out at commit (in the kernel where it can).
 */
p11s_rc p11s_output_open(const char *path, p11s_output **out, p11s_error *err);

/** For p11s_output_open_ex(): a new file gets mode 0600 whatever the umask. */
#define P11S_OUTPUT_PRIVATE 1u

/** p11s_output_open() with flags (P11S_OUTPUT_PRIVATE). */
p11s_rc p11s_output_open_ex(const char *path, unsigned flags, p11s_output **out, p11s_error *err);
/** A directory a batch writes its outputs in (p11s_output_open_in()). */
typedef struct p11s_output_dir p11s_output_dir;

/**
 * Open the directory @p path once for a batch of outputs in it.  P11S_E_IO
 * when it cannot be opened (or is no directory).
 */
p11s_rc p11s_output_dir_open(const char *path, p11s_output_dir **out, p11s_error *err);
/** Close it; NULL is fine.  Outputs opened in it are not affected. */
void p11s_output_dir_free(p11s_output_dir *d);
/**
 * p11s_output_open_ex() of @p path, a file in @p dir (the string @p dir
 * was opened with, '/', a name): its temporary file is made in the
 * directory @p dir holds open, with no lookup of the directory's path,
 * and p11s_output_sync_group() knows its file system without asking.
 * Everything else, the commit included, goes by @p path as before: should
 * the directory be moved meanwhile to another file system, the commit
 * fails and nothing is placed.  A @p path in another directory, or a
 * NULL @p dir: p11s_output_open_ex().
 */
p11s_rc p11s_output_open_in(const p11s_output_dir *dir, const char *path, unsigned flags,
                            p11s_output **out, p11s_error *err);
/** The BIO to write to; owned by @p o. */
BIO *p11s_output_bio(p11s_output *o);
/**
 * Flush, then rename into place (or copy to standard output) and free
 * @p o.  On failure nothing is left at @p path; @p o is freed either way.
 */
p11s_rc p11s_output_commit(p11s_output *o, p11s_error *err);
/**
 * For a batch of outputs: write out what is buffered and give the file its
 * final mode, so that p11s_output_sync_group() can make a group of them
 * durable at once and p11s_output_commit() then only puts each in place.
 * Nothing is visible at the path before the commit; abort still drops
 * everything.  A no-op for standard output and devices.  P11S_E_IO, naming
 * the file, when a write failed.
 */
p11s_rc p11s_output_prepare(p11s_output *o, p11s_error *err);
/**
 * Make the data of @p n prepared outputs durable together: one sync of
 * each file system they are on (syncfs(2)) instead of one fsync each, so
 * that p11s_output_commit() then only puts them in place.  This is for
 * batches: the sync also writes out whatever else that file system holds
 * dirty.  NULL entries and outputs that are not files are skipped.  On
 * failure (P11S_E_IO) nothing is marked, and each commit syncs its own
 * file as usual; nothing is visible at any path either way.
 */
p11s_rc p11s_output_sync_group(p11s_output *const *outs, size_t n, p11s_error *err);
/**
 * When a write to @p o failed, record in @p err a message naming the file
 * and the system's reason ("cannot write 'out.eml': No space left on
 * device") and return P11S_E_IO; else return @p rc and leave @p err.  For
 * callers whose operation failed on a write through p11s_output_bio().
 */
p11s_rc p11s_output_explain(const p11s_output *o, p11s_rc rc, p11s_error *err);
/** Drop everything written and free @p o; NULL is fine. */
void p11s_output_abort(p11s_output *o);

/** How a CMS structure is written or read. */
typedef enum p11s_outform {
	P11S_FORM_SMIME = 0, /**< a whole S/MIME message (headers, base64 body); the default */
	P11S_FORM_DER,       /**< the CMS ContentInfo alone, DER (or BER when streamed) */
	P11S_FORM_PEM,       /**< the same, base64 between -----BEGIN/END PKCS7----- lines */
} p11s_outform;

/**
 * The form named @p name: "der", "pem", or (when @p allow_smime) "smime";
 * P11S_E_USAGE otherwise.
 */
p11s_rc p11s_outform_from_name(const char *name, int allow_smime, p11s_outform *out,
                               p11s_error *err);

/* ------------------------------------------------ times and secret sources */

/**
 * Parse an RFC 3339 time ("2026-11-28T00:00:00Z", "...T01:00:00+01:00",
 * fractions of a second ignored) or a bare date ("2026-11-28", midnight
 * UTC) into seconds since the epoch.  P11S_E_BAD_TIME otherwise.
 */
p11s_rc p11s_time_parse(const char *text, time_t *out, p11s_error *err);

/**
 * Format @p t as RFC 3339 in UTC ("2026-11-28T00:00:00Z") into @p buf,
 * which must hold at least 21 bytes.  Returns @p buf.
 */
char *p11s_time_format(time_t t, char *buf, size_t len);

/** What p11s_secret_read() reads; it picks the words of messages and the error codes. */
typedef enum p11s_secret_kind {
	/** A token PIN: must not be empty; unreadable, empty or too long: P11S_E_PIN_UNAVAILABLE.
	 */
	P11S_SECRET_PIN,
	/** A file's password (PKCS#12): may be empty; unreadable: P11S_E_IO, too long:
	   P11S_E_INPUT. */
	P11S_SECRET_PASSWORD,
} p11s_secret_kind;

/**
 * Check the form of the secret source @p spec: "file:PATH" (also
 * "file:///PATH"), "fd:N" or "env:VAR" (the --pin-source forms).
 * P11S_E_BAD_PIN_SOURCE, with the reason, otherwise.
 */
p11s_rc p11s_secret_source_check(const char *spec, p11s_secret_kind kind, p11s_error *err);

/**
 * Read the secret @p spec names into @p buf (@p len bytes, NUL included):
 * the first line of the file or descriptor (a trailing "\n" or "\r\n"
 * dropped; nothing after the line is consumed from a descriptor) or the
 * variable's value up to its first line break.  A malformed @p spec is
 * P11S_E_BAD_PIN_SOURCE; for the other errors see p11s_secret_kind.
 * @p buf is wiped on failure; on success the caller wipes it with
 * OPENSSL_cleanse() when done.
 */
p11s_rc p11s_secret_read(const char *spec, p11s_secret_kind kind, char *buf, size_t len,
                         p11s_error *err);

#ifdef __cplusplus
}
#endif
#endif
