/*
 * p11smime: decrypt incoming S/MIME mail with a key on a token.
 *
 * The CMS is read as a stream: the outer ContentInfo and EnvelopedData (or
 * AuthEnvelopedData) are parsed piece by piece, only the small parts
 * (RecipientInfos, algorithm identifiers, attributes) are decoded whole, and
 * the encrypted content flows through the cipher into the output.  Memory
 * stays bounded whatever the size of the message.
 *
 * The content-encryption key is recovered on the token: RSA decryption
 * (PKCS#1 v1.5 or OAEP) or ECDH derivation there, the KDF and key unwrap in
 * software.  The recipient is chosen by matching the message's
 * RecipientInfos against the certificates on the token: never by trying keys.
 *
 * The plaintext is written to @p out as it is decrypted, before the
 * authentication tag (AES-GCM) or the padding (CBC) has been checked: the
 * caller must write to an output it can discard (include/p11smime/io.h) and
 * commit it only when the call succeeded.
 *
 * Threads: p11s_decrypt() may run in several threads at once on one shared
 * p11s_ctx (each call selects its key and decrypts on a PKCS#11 session of
 * its own); a report belongs to the thread that got it.
 * p11s_decrypt_with_pkey() shares its key as OpenSSL allows.  Past 4 MiB
 * of content the cipher and the writing of the plaintext run on a helper
 * thread that the call starts and joins before it returns (beside the
 * reading and base64: half the wall time): the output BIO is then written
 * from that thread, never from two at once, and never after the call.
 */
#ifndef P11SMIME_DECRYPT_H
#define P11SMIME_DECRYPT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "p11smime/result.h"
#include "p11smime/rules.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** How the encrypted input is framed. */
typedef enum p11s_decrypt_inform {
	/**
	 * An RFC 5322 message or a bare MIME entity whose Content-Type is
	 * application/pkcs7-mime (or application/x-pkcs7-mime) with
	 * smime-type enveloped-data or authEnveloped-data (or none), body in
	 * base64 (or binary).  The default.
	 */
	P11S_INFORM_SMIME = 0,
	P11S_INFORM_DER, /**< a bare DER (or BER) ContentInfo */
	P11S_INFORM_PEM, /**< the same in PEM ("-----BEGIN CMS-----" or PKCS7) */
} p11s_decrypt_inform;

/** Options for p11s_decrypt() and p11s_decrypt_with_pkey(). */
typedef struct p11s_decrypt_opts {
	/**
	 * pkcs11: URI of the certificate or key to decrypt with, or an e-mail
	 * address of a certificate on the token (p11s_select_certificate()).
	 * NULL: the certificates on every token are matched against the
	 * message's recipients.  Only for p11s_decrypt().
	 */
	const char *key;
	/**
	 * The time the recipient certificate is judged at (the rules and its
	 * validity, reported only); 0: now.
	 */
	time_t at;
	p11s_decrypt_inform inform;
	/**
	 * 1: write the decrypted entity exactly as decrypted.  0 (default):
	 * when the input message's header block ends its lines with LF alone,
	 * convert the decrypted entity's CRLFs to LF too, so that the output
	 * is one consistent file.  Raw CMS input, and an entity whose
	 * Content-Transfer-Encoding is binary, are never converted.
	 */
	int keep_line_ends;
	/**
	 * 1: write only the decrypted entity, not the outer message headers.
	 */
	int entity_only;
} p11s_decrypt_opts;

/**
 * What a decryption found and did: the getters below (`p11smime decrypt
 * --json` renders them, docs/man/p11smime-decrypt.1).
 */
typedef struct p11s_decrypt_report p11s_decrypt_report;

/**
 * Decrypt @p in (framed as @p opts says) into @p out with a private key on
 * a token of @p ctx.  The output is the message with its outer headers
 * kept (order and bytes as read) and the decrypted MIME entity in place of
 * the encrypted one; for raw CMS input, the decrypted content alone.
 *
 * Errors: P11S_E_NO_RECIPIENT when no certificate on the tokens (or the one
 * @p opts->key names) is among the recipients, with each recipient the
 * message names ("issuer ..., serial ...") as a candidate in @p err;
 * P11S_E_NO_KEY when a matching certificate has no usable private key;
 * P11S_E_MECHANISM when the token lacks the mechanism (the message says
 * which); PIN errors from the login; P11S_E_INPUT for a message that is not
 * an encrypted S/MIME message, is malformed or truncated, or uses an
 * algorithm p11smime does not support; P11S_E_DECRYPT when the
 * authentication tag or the padding does not check (wrong key or tampered
 * message).  On any error, whatever reached @p out must be discarded.
 *
 * @p report (may be NULL) receives a report on success, and also on
 * failure once the recipients were read (caller frees).
 */
p11s_rc p11s_decrypt(p11s_ctx *ctx, const p11s_decrypt_opts *opts, BIO *in, BIO *out,
                     p11s_decrypt_report **report, p11s_error *err);

/**
 * As p11s_decrypt() with a given private key (on a token through libp11 or
 * in software) and its certificate @p cert, which selects the
 * RecipientInfo: the key is used only for the recipient whose identifier
 * (issuer and serial, or subject key identifier) matches @p cert.
 * @p opts->key is ignored.
 */
p11s_rc p11s_decrypt_with_pkey(EVP_PKEY *pkey, X509 *cert, const p11s_decrypt_opts *opts, BIO *in,
                               BIO *out, p11s_decrypt_report **report, p11s_error *err);

/** NULL is fine. */
void p11s_decrypt_report_free(p11s_decrypt_report *r);

/** "enveloped-data" or "authEnveloped-data"; static. */
const char *p11s_decrypt_report_content_type(const p11s_decrypt_report *r);
/** Content cipher ("aes-256-gcm", "aes-128-cbc", "des-ede3-cbc"); owned by @p r. */
const char *p11s_decrypt_report_content_cipher(const p11s_decrypt_report *r);
/**
 * Key-encryption algorithm in words ("RSAES-OAEP (SHA-256, MGF1 SHA-256)",
 * "RSAES-PKCS1-v1_5", "ECDH (X9.63 KDF SHA-256, AES-128 key wrap)");
 * owned by @p r; NULL before a recipient was chosen.
 */
const char *p11s_decrypt_report_key_encryption(const p11s_decrypt_report *r);
/**
 * The PKCS#11 mechanism the token was asked for ("CKM_RSA_PKCS",
 * "CKM_RSA_X_509" when the padding is removed in software,
 * "CKM_ECDH1_DERIVE"); NULL for a software key.  Static or owned by @p r.
 */
const char *p11s_decrypt_report_mechanism(const p11s_decrypt_report *r);
/** URI of the private key used; NULL for a software key.  Owned by @p r. */
const char *p11s_decrypt_report_key_uri(const p11s_decrypt_report *r);
/** The recipient certificate used (owned by @p r), or NULL. */
X509 *p11s_decrypt_report_certificate(const p11s_decrypt_report *r);
/** 1 when the recipient certificate had expired at opts->at (decryption still works). */
int p11s_decrypt_report_expired(const p11s_decrypt_report *r);
/**
 * The S/MIME rules on the recipient certificate at opts->at, with what is
 * known of its private key (p11s_validate()); owned by @p r; NULL before a
 * recipient was chosen.  Information only: a rejected or expired
 * certificate still decrypts.
 */
const p11s_verdict *p11s_decrypt_report_verdict(const p11s_decrypt_report *r);
/** Bytes of decrypted content. */
uint64_t p11s_decrypt_report_content_bytes(const p11s_decrypt_report *r);
/** Number of notes (things a person should know: a rejected or expired certificate, 3DES). */
size_t p11s_decrypt_report_note_count(const p11s_decrypt_report *r);
/** Note @p i; owned by @p r. */
const char *p11s_decrypt_report_note(const p11s_decrypt_report *r, size_t i);

/** 1 when the content was decrypted and checked to its end (tag, padding). */
int p11s_decrypt_report_complete(const p11s_decrypt_report *r);
/** 1 when an AES-GCM tag was verified. */
int p11s_decrypt_report_authenticated(const p11s_decrypt_report *r);
/** 1 when authenticated attributes were part of the tag. */
int p11s_decrypt_report_auth_attributes(const p11s_decrypt_report *r);
/** The time the recipient certificate was judged at (opts->at, or when the run began). */
time_t p11s_decrypt_report_time(const p11s_decrypt_report *r);

/** The recipients the message names (every RecipientInfo, each key of a key agreement). */
size_t p11s_decrypt_report_recipient_count(const p11s_decrypt_report *r);
/**
 * Recipient @p i: its type ("key-transport", "key-agreement", "kek",
 * "password", "other"; static) is returned; *issuer (RFC 2253) and *serial
 * (lower-case hex), or *ski (hex), the others NULL, owned by @p r; *matched
 * 1 when it names a certificate that was tried.  Out pointers may be NULL.
 * NULL when @p i is out of range.
 */
const char *p11s_decrypt_report_recipient(const p11s_decrypt_report *r, size_t i,
                                          const char **issuer, const char **serial,
                                          const char **ski, int *matched);
/** The index of the recipient used, or -1 when none was chosen. */
long p11s_decrypt_report_chosen(const p11s_decrypt_report *r);
/** The recipient certificate described (owned by @p r; p11smime/listing.h), or NULL. */
const struct p11s_cert_info *p11s_decrypt_report_certificate_info(const p11s_decrypt_report *r);
/** The recipient certificate's pkcs11: URI (owned by @p r), or NULL. */
const char *p11s_decrypt_report_certificate_uri(const p11s_decrypt_report *r);
/** 1 when the recipient certificate was not yet valid at opts->at. */
int p11s_decrypt_report_not_yet_valid(const p11s_decrypt_report *r);

/** How the content key was encrypted to the recipient; strings owned by the report. */
typedef struct p11s_decrypt_key_encryption {
	const char *algorithm;   /**< the OID's name: "rsaEncryption", "RSAES-OAEP", ... */
	const char *description; /**< p11s_decrypt_report_key_encryption() */
	const char *oaep_hash;   /**< OAEP only, else NULL */
	const char *mgf1_hash;   /**< OAEP only */
	const char *oaep_label;  /**< OAEP only; NULL when none */
	const char *kdf;         /**< ECDH only, else NULL */
	const char *key_wrap;    /**< ECDH only */
	const char *curve;       /**< ECDH only: the recipient key's curve */
} p11s_decrypt_key_encryption;

/** Fill *ke and return 1; 0 (and *ke all NULL) before a recipient was chosen. */
int p11s_decrypt_report_key_encryption_params(const p11s_decrypt_report *r,
                                              p11s_decrypt_key_encryption *ke);

#ifdef __cplusplus
}
#endif
#endif
