/*
 * p11smime: signing outgoing mail (RFC 8551), with the private key on a
 * token or, for tests and tools, any EVP_PKEY.
 *
 * A signer is prepared once (certificate selected and validated, key
 * opened, mechanism checked) and then signs any number of messages, so a
 * batch or an agent logs in once.  Each message streams: memory does not
 * grow with its size.
 *
 * Threads: p11s_signer_open() may run in several threads on one shared
 * p11s_ctx, and one prepared p11s_signer may sign from several threads at
 * once (each signature runs on a PKCS#11 session of its own);
 * p11s_signer_mechanism() then answers for the calling thread's last
 * signature.  Free the signer once no thread uses it, and before its
 * context.  A message past 4 MiB is digested on a helper thread that the
 * call starts and joins before it returns (the digest beside the reading
 * and writing: half the wall time); the output BIO is written only by the
 * calling thread.
 */
#ifndef P11SMIME_SIGN_H
#define P11SMIME_SIGN_H

#include <stddef.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "p11smime/result.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Options for preparing a signer.  Start from p11s_sign_opts_init(). */
typedef struct p11s_sign_opts {
	/** pkcs11: URI of the certificate or its key, or an e-mail address (p11s_signer_open). */
	const char *signer;
	/** Files of certificates (PEM or DER) to include after the signer's, in order. */
	const char *const *chain_files;
	size_t chain_count;
	/** "sha256", "sha384" or "sha512"; NULL: SHA-256, SHA-384 for P-384, SHA-512 for P-521. */
	const char *digest;
	int pss;    /**< RSA-PSS instead of PKCS#1 v1.5 (RSA keys only) */
	int opaque; /**< application/pkcs7-mime signed-data instead of multipart/signed */
	time_t at;  /**< the time the certificate must be valid at; 0: now */
} p11s_sign_opts;

/** Everything 0/NULL: detached, PKCS#1 v1.5 or ECDSA, digest by key, now. */
void p11s_sign_opts_init(p11s_sign_opts *opts);

/** A certificate and key ready to sign messages. */
typedef struct p11s_signer p11s_signer;

/**
 * Prepare to sign with a certificate on a token: select it
 * (p11s_select_certificate, logging in), run the S/MIME rules on it at
 * opts->at, check its pairing with the private key, open the key, and ask
 * the token for the mechanism the signature needs.
 *
 * Refusals, each with the reason in @p err and nothing signed:
 * P11S_E_REJECTED (a rule failed, or Key Usage lacks digitalSignature),
 * P11S_E_NOT_VALID_NOW (outside its validity at opts->at),
 * P11S_E_KEY_MISMATCH (the key is not the certificate's, or the pairing
 * cannot be confirmed), P11S_E_NO_KEY, P11S_E_MECHANISM (the token lacks
 * the mechanism; never replaced by another padding), P11S_E_USAGE (--pss
 * on an EC key, an unknown digest), selection and PIN errors from the token
 * layer, P11S_E_IO/P11S_E_INPUT for --chain files.
 *
 * The signer keeps using @p ctx: free it before the context.
 */
p11s_rc p11s_signer_open(p11s_ctx *ctx, const p11s_sign_opts *opts, p11s_signer **out,
                         p11s_error *err);

/**
 * Prepare to sign with @p cert and @p pkey (any EVP_PKEY: software, or one
 * from an engine or provider).  The same rules and refusals as
 * p11s_signer_open() apply (the key must match the certificate);
 * opts->signer and opts->chain_files are ignored: @p chain (may be NULL)
 * lists the certificates to include after the signer's.  References are
 * taken on everything passed.
 */
p11s_rc p11s_signer_new(X509 *cert, EVP_PKEY *pkey, STACK_OF(X509) * chain,
                        const p11s_sign_opts *opts, p11s_signer **out, p11s_error *err);

/** NULL is fine.  Closes the token key. */
void p11s_signer_free(p11s_signer *s);

/**
 * Sign one message: read a complete RFC 5322 message or a bare MIME entity
 * from @p in (which must support BIO_gets(): see p11i_headers_read()) and
 * write the signed message to @p out.
 *
 * The outer headers are written unchanged and in order; MIME-Version: 1.0
 * and the new Content-Type follow them.  The entity signed is the input's
 * Content-* fields and body in canonical 7-bit form
 * (p11i_mime_canonicalize()).  Detached: multipart/signed;
 * protocol="application/pkcs7-signature"; micalg=sha-256 (etc.), the
 * entity as its first part and smime.p7s as its second.  Opaque:
 * application/pkcs7-mime; smime-type=signed-data; name=smime.p7m, base64.
 * Signed attributes: contentType, messageDigest, signingTime (now),
 * SMIMECapabilities.  Line ends of the output follow the input's.
 *
 * Everything streams; @p out receives data before the signature exists, so
 * write to something that can be discarded (p11s_output_open()).  Errors:
 * P11S_E_INPUT (malformed or truncated input), P11S_E_CRYPTO (the
 * signature failed), P11S_E_IO.
 */
p11s_rc p11s_signer_sign(p11s_signer *s, BIO *in, BIO *out, p11s_error *err);

/** The signer certificate; owned by @p s. */
X509 *p11s_signer_certificate(const p11s_signer *s);
/** The certificate's pkcs11: URI (NULL for p11s_signer_new()); owned by @p s. */
const char *p11s_signer_uri(const p11s_signer *s);
/** The key's pkcs11: URI (NULL for p11s_signer_new()); owned by @p s. */
const char *p11s_signer_key_uri(const p11s_signer *s);
/** The certificate's subject, RFC 2253; owned by @p s. */
const char *p11s_signer_subject(const p11s_signer *s);
/** "sha256", "sha384", "sha512"; static. */
const char *p11s_signer_digest(const p11s_signer *s);
/** RFC 8551 micalg: "sha-256", ...; static. */
const char *p11s_signer_micalg(const p11s_signer *s);
/** "rsassa-pkcs1-v1_5", "rsassa-pss" or "ecdsa"; static. */
const char *p11s_signer_algorithm(const p11s_signer *s);
/** The token mechanism ("CKM_RSA_PKCS", ...), or NULL for a software key; static. */
const char *p11s_signer_mechanism(const p11s_signer *s);
/** Certificates included in each signature (the signer's first). */
size_t p11s_signer_certificate_count(const p11s_signer *s);

/** "detached" (multipart/signed) or "opaque" (signed-data), as opened; static. */
const char *p11s_signer_format(const p11s_signer *s);

#ifdef __cplusplus
}
#endif
#endif
