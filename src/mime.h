/*
 * p11smime: MIME framing shared by sign, verify, encrypt and decrypt.
 *
 * A message is read as a header block (kept byte for byte, in order, with
 * its line ends) and a body left unread in the input BIO, so bodies of any
 * size stream.  The header block is bounded; the body never is.
 *
 * Header classes (RFC 8551 section 3.1): the Content-* fields describe the
 * MIME entity and travel with it inside a signature or an envelope; every
 * other field is an outer message header and stays outside, unchanged.
 * MIME-Version belongs to neither: whoever writes the new top-level
 * Content-Type writes it (once) beside it.
 */
#ifndef P11SMIME_MIME_H
#define P11SMIME_MIME_H

#include <stddef.h>

#include <openssl/bio.h>

#include "p11smime/result.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Line-end styles. */
typedef enum p11i_eol {
	P11I_EOL_CRLF = 0, /**< "\r\n": canonical MIME, SMTP */
	P11I_EOL_LF = 1,   /**< "\n": Unix files, sendmail pipes */
} p11i_eol;

/** Header classes; combine as bits for p11i_headers_write(). */
enum p11i_header_class {
	P11I_HDR_OUTER = 1u << 0,        /**< From, To, Subject, Received, X-...: the message's */
	P11I_HDR_CONTENT = 1u << 1,      /**< Content-*: the entity's */
	P11I_HDR_MIME_VERSION = 1u << 2, /**< MIME-Version */
	P11I_HDR_ALL = 7u,
};

/** Default bound on a header block (bytes), for p11i_headers_read(). */
#define P11S_HEADERS_MAX_DEFAULT (1024 * 1024)

/** An ordered, byte-exact header block. */
typedef struct p11i_headers p11i_headers;

/**
 * Read the header block of a message or of a bare MIME entity from @p in,
 * up to and including the blank line that ends it, and leave @p in at the
 * first byte of the body.  @p in must support BIO_gets() so that nothing of
 * the body is consumed (file, fp, fd and memory BIOs do; put a BIO_f_buffer
 * in front of others and keep reading from it).
 *
 * Folded fields keep their line breaks; the line-end style is that of the
 * first line.  A block that ends at end of input after a complete line is a
 * message without a body (p11i_headers_body_follows() says 0).
 * P11S_E_INPUT when: the input is empty; a line is neither a field nor a
 * continuation ("line 3 is not a header field"); the input ends in the
 * middle of a line of the block (truncated); the block exceeds @p max bytes
 * (0: P11S_HEADERS_MAX_DEFAULT).
 */
p11s_rc p11i_headers_read(BIO *in, size_t max, p11i_headers **out, p11s_error *err);

/** An empty block, for building one with p11i_headers_add(); NULL on ENOMEM. */
p11i_headers *p11i_headers_new(p11i_eol eol);
/** NULL is fine. */
void p11i_headers_free(p11i_headers *h);

/** The line-end style of the block (of its first line). */
p11i_eol p11i_headers_eol(const p11i_headers *h);
/** 1 when a blank line ended the block, 0 when the input ended instead. */
int p11i_headers_body_follows(const p11i_headers *h);
/** Number of fields. */
size_t p11i_headers_count(const p11i_headers *h);
/** Field @p i's name as written (without trailing blanks); owned by @p h. */
const char *p11i_headers_name(const p11i_headers *h, size_t i);
/** Field @p i exactly as read, continuation lines and line ends included; owned by @p h. */
const char *p11i_headers_raw(const p11i_headers *h, size_t i, size_t *len);
/**
 * Field @p i's value unfolded (line breaks of folding removed, RFC 5322
 * 2.2.3) and trimmed of leading and trailing blanks; caller frees.  NULL on
 * ENOMEM.
 */
char *p11i_headers_value(const p11i_headers *h, size_t i);
/** Index of the first field named @p name (case-insensitive) at or after @p from; -1 if none. */
long p11i_headers_find(const p11i_headers *h, const char *name, size_t from);
/** Unfolded value of the first field named @p name; caller frees; NULL when absent. */
char *p11i_headers_get(const p11i_headers *h, const char *name);
/** The class of a field name (enum p11i_header_class, one bit). */
unsigned p11i_header_class_of(const char *name);

/**
 * Append "Name: value" with the block's line end.  @p value must be one
 * line (P11S_E_USAGE otherwise); long values are not folded.
 */
p11s_rc p11i_headers_add(p11i_headers *h, const char *name, const char *value, p11s_error *err);
/** Remove every field named @p name (case-insensitive); returns how many. */
size_t p11i_headers_remove(p11i_headers *h, const char *name);

/**
 * Write the fields whose class is in @p classes (enum p11i_header_class
 * bits), in order, byte for byte as read.  The blank line that ends a block
 * is not written.  P11S_E_IO when @p out fails.
 */
p11s_rc p11i_headers_write(const p11i_headers *h, unsigned classes, BIO *out, p11s_error *err);

/* ------------------------------------------------------- field values */

/**
 * The media type of a Content-Type value, lower case, without parameters
 * or comments ("multipart/signed"); caller frees.  NULL when @p value is
 * NULL or not "type/subtype".
 */
char *p11i_mime_media_type(const char *value);
/**
 * Parameter @p name (case-insensitive) of a Content-Type or
 * Content-Disposition value, unquoted ("boundary", "smime-type",
 * "protocol", "micalg", "name", "charset"); caller frees.  NULL when
 * absent.  RFC 2231 continuations (name*0=) are joined; their charset and
 * language prefix is dropped.
 */
char *p11i_mime_param(const char *value, const char *name);
/**
 * Content-Transfer-Encoding of a block, lower case ("7bit" when absent);
 * caller frees; NULL on ENOMEM.
 */
char *p11i_mime_transfer_encoding(const p11i_headers *h);

/* ------------------------------------------------------------ addresses */

/**
 * The addr-specs of an address-list field value (From, To, Cc, Reply-To,
 * Sender): display names, comments, quoted strings, angle brackets, source
 * routes and groups ("team: a@x, b@y;") are handled; an empty group adds
 * nothing.  The addresses are returned as written (quoted local parts keep
 * their quotes) in a NULL-terminated array; free with p11s_strv_free().
 * *n (may be NULL) gets the count.  P11S_E_INPUT on an unterminated quote,
 * comment, angle address or domain literal.
 */
p11s_rc p11i_mime_addresses(const char *value, char ***out, size_t *n, p11s_error *err);
/**
 * The addresses of every field named in @p names (a NULL-terminated list,
 * e.g. {"To", "Cc", NULL}), in header order, duplicates (by
 * p11i_mail_addr_equal) dropped.  Same array convention.
 */
p11s_rc p11i_headers_addresses(const p11i_headers *h, const char *const *names, char ***out,
                               size_t *n, p11s_error *err);
/**
 * Address equality as mail systems use it: local parts compared exactly,
 * domains (after the last '@') case-insensitively.  1 equal, 0 not.
 */
int p11i_mail_addr_equal(const char *a, const char *b);
/** Free a NULL-terminated array of strings; NULL is fine. */
void p11s_strv_free(char **v);

/* ------------------------------------------------------------ line ends */

/**
 * A filter BIO that converts line ends, in whichever direction data flows
 * through it: to P11I_EOL_CRLF, a bare "\n" becomes "\r\n" and "\r\n" stays
 * (canonicalisation); to P11I_EOL_LF, "\r\n" becomes "\n" and other bytes,
 * lone CRs included, stay.  A "\r\n" split between two writes or reads is
 * handled.  Push it onto the BIO it filters: BIO_push(eol, file).  NULL on
 * ENOMEM.
 */
BIO *p11i_bio_eol_new(p11i_eol to);

/* -------------------------------------------------------- canonical form */

/**
 * Write a MIME entity in canonical, 7-bit form (RFC 8551 3.1): the fields
 * of @p h in @p classes (P11I_HDR_CONTENT for the top-level entity of a
 * message; P11I_HDR_ALL for a bare entity), the blank line, then the body
 * read from @p body to its end.
 *
 * Every line end becomes CRLF (trailing CRs of a line are one line end).
 * Leaves declared 8bit or binary, and leaves declared 7bit (or not at all)
 * whose bytes are not 7-bit text (a byte >= 0x80, NUL, a lone CR, a line
 * over 998 bytes) get a transfer encoding: quoted-printable for text types,
 * base64 otherwise (binary leaves are encoded byte for byte).  Multiparts
 * and message/rfc822 are descended into, so nested parts get the same
 * treatment, and their own 8bit/binary label becomes 7bit.  Memory stays
 * bounded: a leaf that must be scanned before its encoding is chosen is
 * spooled, past 1 MiB, to an unlinked temporary file.
 *
 * P11S_E_INPUT when a multipart lacks its boundary parameter or its closing
 * delimiter (a truncated message), a part's headers are malformed, a part
 * declared base64 or quoted-printable holds 8-bit bytes, or nesting is
 * deeper than 32.  P11S_E_IO when @p body or @p out fails.
 */
p11s_rc p11i_mime_canonicalize(const p11i_headers *h, unsigned classes, BIO *body, BIO *out,
                               p11s_error *err);

/**
 * How a caller lets p11i_mime_canonicalize_undo() write a top-level 7-bit
 * part as it reads it, once: mark() says that what was written so far
 * stays (0; -1 when the output cannot be taken back), rewind() takes the
 * output, and whatever it feeds (a digest), back to the mark (0 or -1).
 */
struct stat;
struct p11i_offload;
typedef struct p11i_canon_undo {
	int (*mark)(void *arg);
	int (*rewind)(void *arg);
	void *arg;
	/*
	 * The body's identity (fstat) when its reading started, or NULL.  Given,
	 * a clean part written as the file has it goes to the output as ranges
	 * of the file (P11I_BIO_CTRL_WRITE_REF) where the output takes them.
	 */
	const struct stat *in_st;
	/*
	 * NULL, or where the output's digests (the BIO_f_md at the front of
	 * the output chain) are fed instead of by the chain: what goes to the
	 * chain goes to the first BIO after them and to this stage, whose
	 * consumer updates their contexts (src/offload.h).  mark() and
	 * rewind() sync it before they touch the contexts.
	 */
	struct p11i_offload *digests;
} p11i_canon_undo;

/**
 * p11i_mime_canonicalize(), the same bytes, reading a top-level leaf that
 * may stay 7-bit once when @p body is a regular file and @p undo (may be
 * NULL) can take the output back: written as it is scanned, taken back and
 * read again from the file only when it turns out to need an encoding.
 */
p11s_rc p11i_mime_canonicalize_undo(const p11i_headers *h, unsigned classes, BIO *body, BIO *out,
                                    const p11i_canon_undo *undo, p11s_error *err);

struct p11s_milter_msg;
/**
 * The milter message's parsed header block (after
 * p11s_milter_msg_end_headers()), or NULL; owned by @p m.  Private: for the
 * tests (src/milter_msg.c).
 */
const p11i_headers *p11i_milter_msg_headers(const struct p11s_milter_msg *m);

#ifdef __cplusplus
}
#endif
#endif
