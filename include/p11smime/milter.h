/*
 * p11smime: what a mail filter (`p11smime milter`) needs from the library,
 * without knowing libmilter: a message rebuilt from the MTA's header
 * callbacks and body chunks (the body spooled to an unnamed temporary
 * file, so memory stays bounded), signed with a prepared p11s_signer, and
 * split back into header edits and a new body; and the --signer-map file.
 */
#ifndef P11SMIME_MILTER_H
#define P11SMIME_MILTER_H

#include <stddef.h>

#include "p11smime/result.h"
#include "p11smime/sign.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The longest line of a signer map, line end included. */
#define P11S_SIGNER_MAP_LINE_MAX 2048
/** The most mappings a signer map may hold. */
#define P11S_SIGNER_MAP_ENTRIES_MAX 10000
/** The most bytes a signer map may hold. */
#define P11S_SIGNER_MAP_MAX (4 * 1024 * 1024)

/** One message as the MTA hands it over. */
typedef struct p11s_milter_msg p11s_milter_msg;

/** A new, empty message.  P11S_E_NOMEM. */
p11s_rc p11s_milter_msg_new(p11s_milter_msg **out, p11s_error *err);
/** NULL is fine; closes the spool file. */
void p11s_milter_msg_free(p11s_milter_msg *m);

/**
 * Append the field @p name with @p value (as the MTA gives it: without the
 * colon and the blank after it; folded lines separated by "\n" or "\r\n").
 * Every line break becomes CRLF, and a line that does not begin with a
 * blank gets one, so that a value can never start a field of its own.
 * P11S_E_INPUT when @p name is not a field name (printable ASCII other
 * than ':') or the block would exceed P11S_HEADERS_MAX_DEFAULT.
 */
p11s_rc p11s_milter_msg_header(p11s_milter_msg *m, const char *name, const char *value,
                               p11s_error *err);

/**
 * The header block is complete: parse it (p11i_headers_read()).
 * P11S_E_INPUT when it does not parse (no field at all, for one).
 */
p11s_rc p11s_milter_msg_end_headers(p11s_milter_msg *m, p11s_error *err);

/**
 * The one address of the message's one From field; caller frees.
 * P11S_E_INPUT, with the reason in words, when there is no From field,
 * more than one, a From with no or several addresses, or one that does not
 * parse.
 */
p11s_rc p11s_milter_msg_from(const p11s_milter_msg *m, char **out, p11s_error *err);

/**
 * The media type that shows the message already signed or encrypted
 * ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
 * "application/x-pkcs7-mime"); static.  NULL otherwise.
 */
const char *p11s_milter_msg_secured(const p11s_milter_msg *m);

/** Append @p len bytes of body to the spool file.  P11S_E_IO when it cannot be written. */
p11s_rc p11s_milter_msg_body(p11s_milter_msg *m, const void *buf, size_t len, p11s_error *err);

/** Bytes of body received so far. */
unsigned long long p11s_milter_msg_body_size(const p11s_milter_msg *m);

/** The message signed, as edits for the MTA. */
typedef struct p11s_milter_signed p11s_milter_signed;

/**
 * Sign the message with @p s (p11s_signer_sign() of the rebuilt message,
 * written to a second spool file) and read back what changes: the
 * original Content-* and MIME-Version fields to delete, the new ones to
 * add, and the new body.  Errors are p11s_signer_sign()'s: P11S_E_INPUT
 * for a message that cannot be signed as it is, P11S_E_CRYPTO when the
 * signature failed, P11S_E_IO.
 */
p11s_rc p11s_milter_msg_sign(p11s_milter_msg *m, p11s_signer *s, p11s_milter_signed **out,
                             p11s_error *err);

/** NULL is fine. */
void p11s_milter_signed_free(p11s_milter_signed *r);
/** How many original fields to delete. */
size_t p11s_milter_signed_delete_count(const p11s_milter_signed *r);
/**
 * Deletion @p i: the field name; *index (1-based) is its occurrence among
 * the original fields of that name.  Later occurrences come first, so that
 * deleting in order never shifts an index still to be used.
 */
const char *p11s_milter_signed_delete(const p11s_milter_signed *r, size_t i, int *index);
/** How many fields to add (MIME-Version and the new Content-* fields). */
size_t p11s_milter_signed_add_count(const p11s_milter_signed *r);
/** Addition @p i: the name; *value gets the value, unfolded, one line. */
const char *p11s_milter_signed_add(const p11s_milter_signed *r, size_t i, const char **value);
/**
 * The next at most @p len bytes of the new body into @p buf; *n is 0 at
 * its end.  P11S_E_IO when the spool cannot be read.
 */
p11s_rc p11s_milter_signed_read(p11s_milter_signed *r, void *buf, size_t len, size_t *n,
                                p11s_error *err);

/* ------------------------------------------------------------ signer map */

/** Addresses and domains mapped to signers (--signer-map). */
typedef struct p11s_signer_map p11s_signer_map;

/**
 * Parse a signer map: one mapping a line, "address URI" or "@domain URI"
 * (blanks between; the URI a pkcs11: URI), blank lines and lines starting
 * with '#' ignored.  @p origin names the text in messages
 * ("FILE:LINE: ..."). P11S_E_USAGE, with the line, for: a line longer
 * than P11S_SIGNER_MAP_LINE_MAX, a NUL byte, a key that is neither a
 * mailbox nor "@" and a domain, a missing or non-pkcs11: URI, a third
 * field, a key given twice, more than P11S_SIGNER_MAP_ENTRIES_MAX mappings.
 */
p11s_rc p11s_signer_map_parse(const char *origin, const char *text, size_t len,
                              p11s_signer_map **out, p11s_error *err);
/** Read @p path (at most P11S_SIGNER_MAP_MAX bytes) and parse it. */
p11s_rc p11s_signer_map_load(const char *path, p11s_signer_map **out, p11s_error *err);
/** NULL is fine. */
void p11s_signer_map_free(p11s_signer_map *map);
/** Number of mappings. */
size_t p11s_signer_map_count(const p11s_signer_map *map);
/** Mapping @p i: its key ("a@b" or "@b"); *uri and *line (may be NULL) set. */
const char *p11s_signer_map_entry(const p11s_signer_map *map, size_t i, const char **uri,
                                  unsigned *line);
/**
 * The index of the mapping for exactly @p address (compared without regard
 * to ASCII case), else -1.
 */
long p11s_signer_map_find_address(const p11s_signer_map *map, const char *address);
/** The index of the mapping for @p address's domain ("@domain"), else -1. */
long p11s_signer_map_find_domain(const p11s_signer_map *map, const char *address);

#ifdef __cplusplus
}
#endif
#endif
