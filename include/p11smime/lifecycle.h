/*
 * p11smime: the token lifecycle: generate a key pair on a token, request a
 * certificate for it (PKCS#10, signed on the token), import certificates
 * and PKCS#12 files, delete objects.
 *
 * Every function that changes a token logs in following the PIN policy
 * (one attempt; refused when the PIN is locked, on its final try or to be
 * changed) and acts only when the URI or label names exactly one token:
 * several give P11S_E_AMBIGUOUS with every token's URI as a candidate.
 * Token work is in pkcs11/ (keygen.c, write.c); requests and imports in
 * src/ (csr.c, dn.c, import.c).
 *
 * Threads: these write to the token; while one runs, no other thread may
 * use the same p11s_ctx (a new context for each writer is fine).
 */
#ifndef P11SMIME_LIFECYCLE_H
#define P11SMIME_LIFECYCLE_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "p11smime/result.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- tokens */

/**
 * The one token that @p uri_or_label names: a pkcs11: URI (its token part
 * is used) or a token label.  NULL names every token, which is fine when
 * there is one.  Uninitialised tokens are left out.  None: P11S_E_NOT_FOUND;
 * several: P11S_E_AMBIGUOUS with each token's URI as a candidate.  *list
 * (caller frees) owns *token.  No login.
 */
p11s_rc p11s_token_select(p11s_ctx *ctx, const char *uri_or_label, p11s_token_list **list,
                          const p11s_token **token, p11s_error *err);

/**
 * Log in to @p t following the PIN policy (nothing to do when already
 * logged in).  @p uri (may be NULL; a label is ignored) lends its
 * pin-value or pin-source query attribute, after --pin-source.
 */
p11s_rc p11s_token_login(p11s_ctx *ctx, const p11s_token *t, const char *uri, p11s_error *err);

/**
 * The public half of the key object @p o as the token shows it (its own
 * attributes, or the public key object with the same CKA_ID in @p list);
 * a certificate's public key for a certificate.  Owned by the list; NULL
 * when the token shows none.
 */
EVP_PKEY *p11s_object_public_key(const p11s_object_list *list, const p11s_object *o);

/** CKA_CERTIFICATE_CATEGORY values for p11s_token_write_cert(). */
enum p11s_cert_category {
	P11S_CERT_UNSPECIFIED = 0,
	P11S_CERT_OWN = 1,       /**< token user: pairs with a key on the token */
	P11S_CERT_AUTHORITY = 2, /**< a CA certificate */
	P11S_CERT_OTHER = 3,     /**< someone else's (a correspondent) */
};

/**
 * Write @p cert on @p t (logging in; a read-write session) as a public
 * certificate object with CKA_ID @p id, CKA_LABEL @p label, subject,
 * issuer, serial and @p category.  *uri (caller frees) names it.
 */
p11s_rc p11s_token_write_cert(p11s_ctx *ctx, const p11s_token *t, X509 *cert,
                              const unsigned char *id, size_t id_len, const char *label,
                              int category, char **uri, p11s_error *err);

/**
 * Write the software key @p pk (RSA with its CRT parts, or EC on a named
 * curve) with C_CreateObject as a private key (CKA_PRIVATE, CKA_SENSITIVE,
 * not CKA_EXTRACTABLE, CKA_SIGN and CKA_DECRYPT + CKA_UNWRAP or
 * CKA_DERIVE) and its public key object, both with @p id and @p label.
 * The components pass through wiped buffers only.  *priv_uri, *pub_uri:
 * caller frees.  The private key is taken back when the public one
 * cannot be written.
 */
p11s_rc p11s_token_write_keypair(p11s_ctx *ctx, const p11s_token *t, EVP_PKEY *pk,
                                 const unsigned char *id, size_t id_len, const char *label,
                                 char **priv_uri, char **pub_uri, p11s_error *err);

/** Destroy the one object @p uri (with type, id and label) names on @p t, if any; no errors. */
void p11s_token_forget(p11s_ctx *ctx, const p11s_token *t, const char *uri);

/**
 * A CKA_ID for a new key pair on @p t (logging in): the smallest one-byte
 * id (01, 02, ...) no object has.  @p id needs room for 2 bytes.
 */
p11s_rc p11s_token_free_id(p11s_ctx *ctx, const p11s_token *t, unsigned char *id, size_t *id_len,
                           p11s_error *err);

/* ------------------------------------------------------------- keygen */

/** What p11s_keygen() makes. */
typedef struct p11s_keygen_opts {
	const char *token; /**< URI or label of the token (NULL: the only one) */
	const char *type;  /**< rsa:2048|rsa:3072|rsa:4096|ec:P-256|ec:P-384|ec:P-521 */
	const char *label; /**< CKA_LABEL of both keys; required, not already in use */
	const char *id;    /**< CKA_ID in hex, or NULL to pick one not in use */
} p11s_keygen_opts;

/** The pair made by p11s_keygen(). */
typedef struct p11s_keygen_result {
	char *private_uri; /**< the private key's URI */
	char *public_uri;  /**< the public key's URI */
	char *id;          /**< CKA_ID in hex */
	char *label;
	char *type;      /**< as asked, normalised ("rsa:2048", "ec:P-256") */
	char *mechanism; /**< "CKM_RSA_PKCS_KEY_PAIR_GEN" or "CKM_EC_KEY_PAIR_GEN" */
	char *token_uri;
} p11s_keygen_result;

/**
 * Check @p type ("rsa:2048", "ec:P-256", ...; case-insensitive).  On success
 * *is_ec and *size (RSA bits, or the curve's NID) are set; P11S_E_USAGE
 * naming the types otherwise.  Either out pointer may be NULL.
 */
p11s_rc p11s_keygen_type_parse(const char *type, int *is_ec, int *size, p11s_error *err);

/**
 * Generate a key pair on the token (C_GenerateKeyPair): the private key
 * CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, not CKA_EXTRACTABLE, CKA_SIGN and
 * CKA_DECRYPT + CKA_UNWRAP (RSA) or CKA_DERIVE (EC); the public key with the
 * same CKA_ID and CKA_LABEL.  The mechanism, its CKF_GENERATE_KEY_PAIR flag
 * and the key size are checked first (P11S_E_MECHANISM saying what is
 * missing).  An id or label already on the token: P11S_E_USAGE.  A
 * write-protected token: P11S_E_TOKEN.
 */
p11s_rc p11s_keygen(p11s_ctx *ctx, const p11s_keygen_opts *opts, p11s_keygen_result **out,
                    p11s_error *err);
/** NULL is fine. */
void p11s_keygen_result_free(p11s_keygen_result *r);

/* ---------------------------------------------------------------- DNs */

/**
 * Parse a distinguished name in OpenSSL's "/CN=Alice/O=Example" form
 * (most general RDN first; a backslash makes the next character literal,
 * "\\/" a slash; "+" is an ordinary character, as in `openssl req -subj`) or RFC 4514's
 * "CN=Alice,O=Example" (most specific first; escapes "\\," "\\+" "\\\\" "\\\"" "\\;" "\\<" "\\>"
 * "\\=" "\\#" "\\ " and
 * "\\HH"; "+" joins attributes).  Attribute types are OpenSSL's short or
 * long names (CN, O, OU, C, L, ST, emailAddress, ...) or dotted OIDs;
 * values are UTF-8.  P11S_E_USAGE with the reason otherwise (empty name,
 * a part without '=', an unknown type, an empty value, a dangling escape,
 * a value OpenSSL refuses, such as a C of more than two letters).
 */
p11s_rc p11s_dn_parse(const char *text, X509_NAME **out, p11s_error *err);

/* ---------------------------------------------------------------- CSR */

/** What p11s_csr() asks for. */
typedef struct p11s_csr_opts {
	const char *key;           /**< URI of the key (no type=: the private key of that id) */
	const char *const *emails; /**< SAN rfc822Names; at least one */
	size_t email_count;
	const char *subject; /**< DN (p11s_dn_parse()); NULL: CN=<first e-mail> */
	const char *digest;  /**< sha256|sha384|sha512; NULL: sha256, sha384 for P-384,
	                          sha512 for P-521 */
} p11s_csr_opts;

/**
 * A PKCS#10 request for the private key @p opts->key, signed on the token
 * (the key never leaves it): subject, subjectAltName rfc822Names, Key Usage
 * digitalSignature + keyEncipherment (RSA) or digitalSignature +
 * keyAgreement (EC), Extended Key Usage emailProtection, requested as
 * extensions.  Before signing, a certificate carrying exactly those
 * extensions is judged by the rules engine (P11S_E_REJECTED naming the
 * rules that would fail), and the token's mechanism is checked
 * (P11S_E_MECHANISM).  After signing, the request's signature is verified
 * with the public key.  *pem (caller frees) is the request in PEM;
 * *key_uri (may be NULL; caller frees) the key used.
 */
p11s_rc p11s_csr(p11s_ctx *ctx, const p11s_csr_opts *opts, char **pem, char **key_uri,
                 p11s_error *err);

/* -------------------------------------------------------------- import */

/** What p11s_import() does with a file. */
typedef struct p11s_import_opts {
	const char *token;    /**< URI or label of the token (NULL: the only one) */
	const char *label;    /**< CKA_LABEL; NULL: the key's (or the file's, or the e-mail) */
	int ca;               /**< a CA certificate: stored without a key */
	int no_key;           /**< someone else's certificate: stored without a key */
	const char *p12_pass; /**< the PKCS#12 password; NULL: the file is not PKCS#12 */
} p11s_import_opts;

/** What p11s_import() did. */
typedef struct p11s_import_result {
	int already;        /**< the certificate was on the token: nothing written */
	int key_written;    /**< PKCS#12: the private key was written (it existed in software) */
	char *cert_uri;     /**< the certificate's URI on the token */
	char *key_uri;      /**< the private key it pairs with, or NULL (--ca, --no-key) */
	char *public_uri;   /**< PKCS#12: the public key object written, or NULL */
	char **chain_uris;  /**< PKCS#12: chain certificates written (or found) */
	size_t chain_count; /**< number of chain_uris */
	char *subject;      /**< the certificate's subject, RFC 2253 */
} p11s_import_result;

/**
 * Import the one certificate of @p path (PEM or DER) onto the token: with
 * the CKA_ID (and, without opts->label, the CKA_LABEL) of the private key
 * whose public key it carries.  No such key: P11S_E_KEY_MISMATCH (exit 1)
 * unless opts->ca (a CA certificate: Basic Constraints CA:TRUE required)
 * or opts->no_key (someone's certificate, kept for encryption), which
 * store it with the SHA-1 of its public key as CKA_ID.  The same
 * certificate already on the token: P11S_OK with already set.
 *
 * With opts->p12_pass, @p path is a PKCS#12 file: its private key is
 * written with C_CreateObject (CKA_SENSITIVE, not CKA_EXTRACTABLE,
 * CKA_PRIVATE; the token sets CKA_LOCAL false, since the key existed in
 * software), its public key and certificate beside it with a CKA_ID not in
 * use, and its other certificates as CA certificates.  A key already on
 * the token is not written again.
 */
p11s_rc p11s_import(p11s_ctx *ctx, const char *path, const p11s_import_opts *opts,
                    p11s_import_result **out, p11s_error *err);
/** *yes = 1 when @p path holds a PKCS#12 file (DER PFX); P11S_E_IO when it cannot be opened. */
p11s_rc p11s_file_is_pkcs12(const char *path, int *yes, p11s_error *err);
/** NULL is fine. */
void p11s_import_result_free(p11s_import_result *r);

/* -------------------------------------------------------------- delete */

/** What a delete would remove, worked out before anything is removed. */
typedef struct p11s_delete_plan p11s_delete_plan;

/**
 * The objects @p uri matches on its one token (logging in to see private
 * keys): a certificate URI without type= brings the private and public key
 * of the certificate's CKA_ID with it.  The URI must name objects (id,
 * object or type); none matching: P11S_E_NOT_FOUND; objects of several
 * CKA_IDs without @p all: P11S_E_AMBIGUOUS listing them.
 */
p11s_rc p11s_delete_plan_new(p11s_ctx *ctx, const char *uri, int all, p11s_delete_plan **out,
                             p11s_error *err);
/** NULL is fine. */
void p11s_delete_plan_free(p11s_delete_plan *p);
/** The objects to delete: count, URI and class of each (owned by @p p). */
size_t p11s_delete_plan_count(const p11s_delete_plan *p);
const char *p11s_delete_plan_uri(const p11s_delete_plan *p, size_t i);
p11s_object_class p11s_delete_plan_class(const p11s_delete_plan *p, size_t i);
/**
 * Destroy every object of the plan (C_DestroyObject), certificates first.
 * On a failure the objects already destroyed are counted in *done (may
 * be NULL) and the error names the one that failed.
 */
p11s_rc p11s_delete_plan_run(p11s_ctx *ctx, p11s_delete_plan *p, size_t *done, p11s_error *err);

#ifdef __cplusplus
}
#endif
#endif
