/*
 * p11smime: certificates from files, and small facts about certificates.
 *
 * A file is read whole and recognised by content, not by name: PEM (every
 * CERTIFICATE, X509 CERTIFICATE, TRUSTED CERTIFICATE and PKCS7 block),
 * DER (one certificate, or several concatenated), DER PKCS#7
 * (certs-only .p7b/.p7c) or PKCS#12 (certificates and the private key
 * that belongs to one of them).  Unencrypted private keys in a PEM file
 * (PRIVATE KEY, RSA/EC PRIVATE KEY) are paired with the certificate whose
 * public key they match; other keys are ignored.
 *
 * Threads: no shared state (PKCS#12's legacy provider loads once, safely,
 * into a library context of p11smime's own); a p11s_cert_list or
 * p11s_cert_info belongs to one thread at a time.
 */
#ifndef P11SMIME_CERTS_H
#define P11SMIME_CERTS_H

#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "p11smime/result.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Certificates read from one file, in file order. */
typedef struct p11s_cert_list p11s_cert_list;

/**
 * Read every certificate in @p path ("-": standard input).  @p p12_pass is
 * the PKCS#12 password (NULL: try the empty password).  Errors:
 * P11S_E_IO (cannot read), P11S_E_INPUT (not a certificate file, or no
 * certificate in it, or a PKCS#12 that needs another password), each
 * message naming the file.  A PEM bundle where some blocks are damaged
 * succeeds with the good ones; the damaged ones are listed as problems.
 */
p11s_rc p11s_certs_read_file(const char *path, const char *p12_pass, p11s_cert_list **out,
                             p11s_error *err);
/** As p11s_certs_read_file() on @p len bytes at @p buf; @p name is used in messages. */
p11s_rc p11s_certs_read_mem(const unsigned char *buf, size_t len, const char *name,
                            const char *p12_pass, p11s_cert_list **out, p11s_error *err);
/** NULL is fine. */
void p11s_cert_list_free(p11s_cert_list *list);

/** The number of certificates read; 0 for NULL. */
size_t p11s_cert_list_count(const p11s_cert_list *list);
/** Certificate @p i; owned by @p list (X509_up_ref() to keep it). */
X509 *p11s_cert_list_get(const p11s_cert_list *list, size_t i);
/** The private key that came with certificate @p i (PKCS#12, PEM), or NULL; owned by @p list. */
EVP_PKEY *p11s_cert_list_key(const p11s_cert_list *list, size_t i);
/** Every certificate as a stack owned by @p list. */
STACK_OF(X509) * p11s_cert_list_stack(const p11s_cert_list *list);
/** "PEM", "DER", "PKCS#7" or "PKCS#12"; static. */
const char *p11s_cert_list_format(const p11s_cert_list *list);
/** Damaged parts of the file that were skipped, as sentences naming the file. */
size_t p11s_cert_list_problem_count(const p11s_cert_list *list);
const char *p11s_cert_list_problem(const p11s_cert_list *list, size_t i);

/** @p name as RFC 2253 text, valid UTF-8 (bad bytes as "?"); malloc'd, NULL on ENOMEM. */
char *p11s_cert_name_string(const X509_NAME *name);
/**
 * The rfc822Names in @p cert's Subject Alternative Name, printable ASCII
 * (other bytes as \\xNN), as a NULL-terminated malloc'd vector (free with
 * p11s_strv_free()); *n (may be NULL) gets the count.
 * NULL on ENOMEM.
 */
char **p11s_cert_san_emails(X509 *cert, size_t *n);

/** Free a NULL-terminated array of strings; NULL is fine. */
void p11s_strv_free(char **v);

/** A certificate described for listing. */
typedef struct p11s_cert_info {
	char *subject;     /**< RFC 2253, UTF-8 ("CN=Alice,O=Example"); p11s_cert_name_string() */
	char *issuer;      /**< RFC 2253, UTF-8 */
	char *serial;      /**< lower-case hex, no separators */
	time_t not_before; /**< notBefore, seconds since the epoch */
	time_t not_after;  /**< notAfter */
	char **emails;     /**< SAN rfc822Names that are mailboxes, in certificate order */
	size_t nemails;
	p11s_key_type key_type;    /**< of the subject public key */
	const char *key_algorithm; /**< p11s_key_type_name(key_type); static */
	int key_bits;              /**< RSA modulus, EC order size; 0 when unknown */
	char *curve;               /**< "P-256", else OpenSSL's name; NULL when not a named curve */
} p11s_cert_info;

/**
 * Describe @p x for a listing.  P11S_E_INPUT when a field cannot be read.
 * Free *out with p11s_cert_info_free().
 */
p11s_rc p11s_cert_describe(X509 *x, p11s_cert_info **out, p11s_error *err);
/**
 * As p11s_cert_describe() for the DER certificate @p der, parsed only for
 * what the description needs (several times faster than d2i_X509() in
 * OpenSSL 3.0, which decodes the public key through its providers).
 * P11S_E_INPUT when it is not a certificate.
 */
p11s_rc p11s_cert_describe_der(const unsigned char *der, size_t len, p11s_cert_info **out,
                               p11s_error *err);
/** NULL is fine. */
void p11s_cert_info_free(p11s_cert_info *info);

#ifdef __cplusplus
}
#endif
#endif
