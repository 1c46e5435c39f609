/*
 * p11smime: certificates described for `p11smime list` and the other
 * reports (the CLI renders them; schema: docs/json-list.md).
 */
#ifndef P11SMIME_LISTING_H
#define P11SMIME_LISTING_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "p11smime/result.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

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
