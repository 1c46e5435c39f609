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
 * p11s_decrypt_with_pkey() shares its key as OpenSSL allows.
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

/** What a decryption found and did; see p11s_decrypt_report_json(). */
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

/**
 * The report as a JSON document (caller frees with free()); NULL on
 * ENOMEM.  Keys: "content_type" ("enveloped-data" or
 * "authEnveloped-data"), "recipients" (every RecipientInfo: "type",
 * "issuer", "serial" or "subject_key_identifier", "matched"), "recipient"
 * (the one used: its identifier, "certificate" with "subject", "issuer",
 * "serial", "emails", "not_before", "not_after", "expired",
 * "not_yet_valid", "certificate_uri", and the rules' verdict at "at" as
 * `p11smime validate --json` gives it: "verdict" ("accepted" or
 * "rejected"), "usable_for_outgoing", "in_validity", "checks" (each
 * "rule", "result", "message", "affects_verdict") and "warnings"),
 * "key_uri", "key_encryption" (name
 * and parameters: "algorithm", "oaep_hash", "mgf1_hash", "kdf",
 * "key_wrap", "curve"), "content_cipher", "mechanism", "authenticated",
 * "auth_attributes", "content_bytes", "at", "notes".
 */
char *p11s_decrypt_report_json(const p11s_decrypt_report *r);

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

#ifdef __cplusplus
}
#endif
#endif
