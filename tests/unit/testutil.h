/*
 * Helpers for the unit tests: keys, certificates, PKCS#12 files and temp
 * files made in memory.  Linked into every unit test.
 *
 * Every function aborts the test program (with a message naming what
 * failed) instead of returning an error: a test that cannot build its
 * fixture has failed.  Whatever a tu_ function returns is the caller's
 * to free with the usual OpenSSL/libc function, except where noted.
 *
 * Example: a CA and an S/MIME certificate it issues.
 *
 *	EVP_PKEY *ca_key = tu_key("ec:P-256");
 *	X509 *ca = tu_cert(&(tu_cert_spec){.key = ca_key, .cn = "Test CA", .ca = 1,
 *	                                   .ku = "critical,keyCertSign,cRLSign"});
 *	EVP_PKEY *key = tu_key("rsa:2048");
 *	X509 *ee = tu_cert(&(tu_cert_spec){.key = key, .cn = "Alice",
 *	                                   .san = "email:alice@example.org",
 *	                                   .ku = "critical,digitalSignature,keyEncipherment",
 *	                                   .eku = "emailProtection",
 *	                                   .issuer = ca, .issuer_key = ca_key});
 */
#ifndef P11S_TESTUTIL_H
#define P11S_TESTUTIL_H

#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/**
 * A key from a spec: "rsa:BITS" (e.g. "rsa:2048"), "ec:CURVE" (OpenSSL or
 * NIST name: "P-256", "P-384", "P-521", "secp256k1", "prime256v1"),
 * "ed25519", "ed448", "x25519", "x448", "dsa:BITS", "dh" (ffdhe2048).
 * Keys are cached per spec (generation is slow: DSA parameters, RSA) and
 * every call returns a new reference to the same key, so free each with
 * EVP_PKEY_free().  Append "#N" ("rsa:2048#2") for a distinct key with the
 * same parameters.  The cache is freed at exit.
 */
EVP_PKEY *tu_key(const char *spec);

/** What tu_cert() builds.  Zero fields take the default shown. */
typedef struct tu_cert_spec {
	EVP_PKEY *key;             /**< the subject's public key (required) */
	const char *cn;            /**< subject CN; default "Test" (NULL and no email: CN=Test) */
	const char *subject_email; /**< subject emailAddress attribute; default none */
	const char *subject;       /**< whole subject "/O=X/CN=Y" instead of cn/subject_email */
	/**
	 * Extensions in openssl.cnf syntax (v3_conf), each NULL for absent:
	 * .san "email:a@b,DNS:host", .ku "critical,digitalSignature,keyEncipherment",
	 * .eku "emailProtection,serverAuth" (or "anyExtendedKeyUsage", or an OID).
	 */
	const char *san;
	const char *ku;
	const char *eku;
	int ca;               /**< 1: basicConstraints critical,CA:TRUE; -1: CA:FALSE; 0: none */
	time_t not_before;    /**< default: now - 1 day */
	time_t not_after;     /**< default: not_before + 365 days */
	const char *md;       /**< signature digest: "SHA256" (default), "SHA1", "MD5", ...;
	                         ignored (none) for Ed25519/Ed448 issuers */
	X509 *issuer;         /**< NULL: self-signed (then key must be able to sign) */
	EVP_PKEY *issuer_key; /**< the issuer's private key (required with issuer) */
	long serial;          /**< default: a counter */
	/** Raw extensions: DER bytes as the extnValue of an extension with this OID. */
	struct {
		const char *oid; /**< "2.5.29.17" or a short name; NULL ends the list */
		const unsigned char *der;
		size_t len;
		int critical;
	} raw[4];
	/**
	 * Replace the public key's algorithm with this OID ("1.2.3.4") and bit
	 * string bytes after signing; the result is still signed, just not by a
	 * key anyone could use.  For unknown-algorithm tests.
	 */
	const char *pubkey_oid;
} tu_cert_spec;

/**
 * A certificate as @p spec says, signed, then re-read from its DER so it
 * looks exactly as a certificate loaded from a file.  X509_free() it.
 */
X509 *tu_cert(const tu_cert_spec *spec);

/** "2026-11-28T00:00:00Z" or "2026-11-28" as time_t; aborts on a bad time. */
time_t tu_time(const char *rfc3339);

/** PEM of @p x as a NUL-terminated malloc'd string; free(). */
char *tu_pem(X509 *x);
/** PEM "TRUSTED CERTIFICATE" (with aux trust for emailProtection); free(). */
char *tu_pem_trusted(X509 *x);
/** DER of @p x; *len set; OPENSSL_free(). */
unsigned char *tu_der(X509 *x, size_t *len);
/** A PKCS#12 (DER) of @p cert, @p key and extra @p cas (may be NULL), with @p pass. */
unsigned char *tu_p12(X509 *cert, EVP_PKEY *key, STACK_OF(X509) * cas, const char *pass,
                      size_t *len);

/** A fresh temporary directory, removed with its files at exit; owned by testutil. */
const char *tu_tmpdir(void);
/** Write @p len bytes (len 0 with text: strlen) to tu_tmpdir()/@p name; returns the path
 * (malloc'd). */
char *tu_write(const char *name, const void *data, size_t len);

/** Concatenate NUL-terminated strings, NULL-terminated argument list; free(). */
char *tu_cat(const char *first, ...);

#endif
