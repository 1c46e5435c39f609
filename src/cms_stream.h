/*
 * A streaming reader of CMS EnvelopedData and AuthEnvelopedData (private).
 *
 * The outer TLVs are walked one header at a time with a bounded look-ahead;
 * the small parts are decoded whole, and the encrypted content (a primitive
 * [0], or a constructed one of OCTET STRING chunks, definite or indefinite)
 * is passed through a cipher in pieces.  Nothing of the content is kept.
 */
#ifndef P11I_CMS_STREAM_H
#define P11I_CMS_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/evp.h>

#include "p11smime/result.h"

/* How the bytes of the ContentInfo arrive. */
typedef enum p11i_cms_encoding {
	P11I_CMS_DER,    /* the BER bytes themselves */
	P11I_CMS_BASE64, /* base64 text (a MIME body); whitespace ignored */
	P11I_CMS_PEM,    /* text before a -----BEGIN line, base64, -----END */
} p11i_cms_encoding;

typedef struct p11i_cms_stream p11i_cms_stream;

/* Where plaintext goes; returns 0, or -1 when it cannot be written. */
typedef int (*p11i_cms_sink)(void *user, const unsigned char *buf, size_t len);

/* A reader of @p in (borrowed; it must outlive the stream). */
p11s_rc p11i_cms_stream_new(BIO *in, p11i_cms_encoding enc, p11i_cms_stream **out, p11s_error *err);
void p11i_cms_stream_free(p11i_cms_stream *s);

/*
 * Read up to the first byte of the encrypted content.  *cms receives a
 * CMS_ContentInfo (owned by @p s) with everything that comes before the
 * content: version, originatorInfo, RecipientInfos and the
 * EncryptedContentInfo without its content (and, for AuthEnvelopedData, an
 * empty MAC): enough for OpenSSL's CMS code to recover the content key.
 */
p11s_rc p11i_cms_stream_begin(p11i_cms_stream *s, CMS_ContentInfo **cms, p11s_error *err);

/* After begin: 1 for AuthEnvelopedData. */
int p11i_cms_stream_is_auth(const p11i_cms_stream *s);
/* After begin: the content-encryption algorithm (owned by @p s). */
const X509_ALGOR *p11i_cms_stream_content_alg(const p11i_cms_stream *s);

/*
 * State kept between two reads of the same input (see below); opaque.
 */
typedef struct p11i_cms_replay p11i_cms_replay;
void p11i_cms_replay_free(p11i_cms_replay *rp);

/*
 * Pass the encrypted content through @p ctx (initialised for decryption
 * with the content key and IV) into @p sink, read the rest of the
 * structure, and finish: for CBC the padding must check; for
 * AuthEnvelopedData the MAC must, over the authenticated attributes (the
 * AAD, RFC 5083) and the ciphertext.  Then nothing may follow the
 * ContentInfo.  P11S_E_INPUT (malformed, truncated), P11S_E_DECRYPT (tag
 * or padding), P11S_E_IO (sink).
 *
 * GCM takes the AAD first, but the attributes come after the content, so
 * for AuthEnvelopedData the tag cannot be checked in one pass when they
 * are present:
 * - @p replay NULL (an input that can be read only once): the ciphertext
 *   is kept (in memory up to 1 MiB, then in an unlinked file in $TMPDIR)
 *   and run through the cipher a second time, the AAD first.
 * - @p replay given (the caller can read the input again): nothing is kept
 *   but a keyed fingerprint (GMAC) of the ciphertext.  When attributes
 *   were present, P11S_OK comes back with *replay set: the content is
 *   NOT yet authenticated until p11i_cms_stream_replay() on a second
 *   stream over the same input succeeds.  Without attributes *replay
 *   stays NULL and the tag was checked.
 */
p11s_rc p11i_cms_stream_decrypt(p11i_cms_stream *s, EVP_CIPHER_CTX *ctx, p11i_cms_sink sink,
                                void *user, p11i_cms_replay **replay, p11s_error *err);

/*
 * The second pass: @p s is a new stream over the same input, after
 * p11i_cms_stream_begin().  The AAD goes first, then the ciphertext
 * (plaintext dropped); the ciphertext, attributes and MAC must be those of
 * the first pass (P11S_E_INPUT "the input changed" otherwise), and the tag
 * must check (P11S_E_DECRYPT).
 */
p11s_rc p11i_cms_stream_replay(p11i_cms_stream *s, p11i_cms_replay *rp, p11s_error *err);

/* After decrypt: 1 when authenticated attributes were present (and checked). */
int p11i_cms_stream_had_auth_attrs(const p11i_cms_stream *s);

#endif
