/*
 * p11smime: encrypting outgoing mail to its recipients.
 *
 * No private key is involved: recipient certificates come from files, from
 * a token (certificates are public objects: no login) or from a directory
 * of contacts.  Every recipient certificate must pass the S/MIME rules,
 * be within its validity and allow key transport (RSA keyEncipherment) or
 * key agreement (EC keyAgreement); otherwise nothing is encrypted.
 *
 * Threads: no shared state; a p11s_recipients is filled by one thread,
 * then may be read by several (p11s_encrypt() does not change it).
 */
#ifndef P11SMIME_ENCRYPT_H
#define P11SMIME_ENCRYPT_H

#include <stddef.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/x509.h>

#include "p11smime/io.h"
#include "p11smime/result.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Content ciphers. */
typedef enum p11s_cipher {
	P11S_CIPHER_AES256_GCM = 0, /**< AuthEnvelopedData (RFC 5083/5084); the default */
	P11S_CIPHER_AES256_CBC,     /**< EnvelopedData, for older clients */
	P11S_CIPHER_AES128_CBC,
} p11s_cipher;

/** "aes-256-gcm", "aes-256-cbc", "aes-128-cbc"; static. */
const char *p11s_cipher_name(p11s_cipher c);
/** The cipher named @p name (as p11s_cipher_name() spells it); P11S_E_USAGE otherwise. */
p11s_rc p11s_cipher_from_name(const char *name, p11s_cipher *out, p11s_error *err);

/** Options for p11s_encrypt(). */
typedef struct p11s_encrypt_opts {
	p11s_cipher cipher;
	int oaep;        /**< RSA recipients: RSA-OAEP with SHA-256 (and MGF1-SHA-256), not v1.5 */
	time_t at;       /**< the time recipient certificates must be valid at; 0: now */
	int no_check_to; /**< do not require a certificate for every To/Cc address */
	/**
	 * P11S_FORM_SMIME (0): the whole message as described at p11s_encrypt();
	 * P11S_FORM_DER: only the CMS structure (BER, streamed), no headers;
	 * P11S_FORM_PEM: the same in base64 between PKCS7 PEM lines.
	 */
	p11s_outform outform;
} p11s_encrypt_opts;

/** The recipient certificates of one message, each with where it came from. */
typedef struct p11s_recipients p11s_recipients;

/** NULL on ENOMEM. */
p11s_recipients *p11s_recipients_new(void);
/** NULL is fine. */
void p11s_recipients_free(p11s_recipients *r);

/**
 * Add @p cert (up-referenced) with @p source ("file:PATH", a URI...) for
 * messages.  A certificate already present is not added twice.
 */
p11s_rc p11s_recipients_add_cert(p11s_recipients *r, X509 *cert, const char *source,
                                 p11s_error *err);
/** Add every certificate in the file @p path (PEM bundle, DER, PKCS#7). */
p11s_rc p11s_recipients_add_file(p11s_recipients *r, const char *path, p11s_error *err);
/**
 * Add the certificate a pkcs11: @p uri selects (of the certificate or of
 * its key; no login).  Selection errors as p11s_select_certificate().
 */
p11s_rc p11s_recipients_add_uri(p11s_recipients *r, p11s_ctx *ctx, const char *uri,
                                p11s_error *err);
/**
 * Use the certificates in the files of directory @p dir (PEM or DER; files
 * that hold none are skipped) for p11s_recipients_add_email().
 */
p11s_rc p11s_recipients_set_dir(p11s_recipients *r, const char *dir, p11s_error *err);
/**
 * Add the certificates whose SAN holds @p email (compared case-insensitively),
 * from the directory given to p11s_recipients_set_dir() and, when @p ctx is
 * not NULL, from the certificates on its tokens.  Where several match, those
 * fit for encryption at @p at are taken (all of them: each is the same
 * person's); when none is fit, all are added so that p11s_encrypt() says
 * why each is refused.  None: P11S_E_NOT_FOUND naming the address.
 */
p11s_rc p11s_recipients_add_email(p11s_recipients *r, p11s_ctx *ctx, const char *email, time_t at,
                                  p11s_error *err);

size_t p11s_recipients_count(const p11s_recipients *r);
/** Certificate @p i; owned by @p r. */
X509 *p11s_recipients_cert(const p11s_recipients *r, size_t i);
/** Where certificate @p i came from; owned by @p r. */
const char *p11s_recipients_source(const p11s_recipients *r, size_t i);

/**
 * Why @p cert cannot be an encryption recipient at @p at, as a sentence
 * (caller frees), or NULL when it can.  Checks the validate rules, the
 * validity period, and the Key Usage for the key type.  *rc (may be NULL)
 * gets P11S_E_REJECTED or P11S_E_NOT_VALID_NOW.  On ENOMEM returns NULL with
 * *rc = P11S_E_NOMEM.
 */
char *p11s_recipient_refusal(X509 *cert, time_t at, p11s_rc *rc);

/** How @p cert's content key will be wrapped under @p opts ("RSA-OAEP SHA-256"...); static. */
const char *p11s_encrypt_key_management(X509 *cert, const p11s_encrypt_opts *opts);

/**
 * Encrypt the message read from @p in (a complete RFC 5322 message or a
 * bare MIME entity) to every certificate of @p r, writing to @p out: the
 * outer headers kept as they were, and the content replaced by
 * application/pkcs7-mime; smime-type=enveloped-data (authEnveloped-data for
 * GCM); name=smime.p7m, base64, whose plaintext is the original Content-*
 * fields and body with CRLF line ends.  The output's line ends follow the
 * input's.  The body streams: memory stays flat however large it is.
 *
 * Refusals, before anything is written: a recipient certificate that
 * p11s_recipient_refusal() refuses (P11S_E_REJECTED or
 * P11S_E_NOT_VALID_NOW, every refused certificate listed as a candidate);
 * unless opts->no_check_to, a To or Cc address no recipient certificate
 * names (P11S_E_MISSING_RECIPIENT_CERT, each such address a candidate).
 * No recipient at all: P11S_E_USAGE.  P11S_E_INPUT for a malformed header
 * block; P11S_E_CRYPTO, P11S_E_IO when encrypting or writing fails (the
 * caller discards @p out, see p11s_output_abort()).
 */
p11s_rc p11s_encrypt(BIO *in, BIO *out, const p11s_recipients *r, const p11s_encrypt_opts *opts,
                     p11s_error *err);

/**
 * The mail addresses of the header fields named in @p names (a
 * NULL-terminated list, e.g. {"To", "Cc", NULL}) of the message read from
 * @p in (its header block only), in header order, duplicates dropped: the
 * recipients a sendmail wrapper encrypts to.  A NULL-terminated array; free
 * with p11s_strv_free().  *n (may be NULL) gets the count.  P11S_E_INPUT
 * for a malformed header block or address.
 */
p11s_rc p11s_message_addresses(BIO *in, const char *const *names, char ***out, size_t *n,
                               p11s_error *err);

#ifdef __cplusplus
}
#endif
#endif
