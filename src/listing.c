#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "mailbox.h"
#include "p11smime/certs.h"
#include "p11smime/certs.h"
#include "p11smime/io.h"

static int asn1_time(const ASN1_TIME *t, time_t *out)
{
	struct tm tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	*out = timegm(&tm);
	return 1;
}

void p11s_cert_info_free(p11s_cert_info *info)
{
	if (info == NULL)
		return;
	free(info->subject);
	free(info->issuer);
	free(info->serial);
	for (size_t i = 0; i < info->nemails; i++)
		free(info->emails[i]);
	free(info->emails);
	free(info->curve);
	free(info);
}

/*
 * RSA and EC keys are described from the SubjectPublicKeyInfo itself, with
 * OpenSSL readers that need no provider, so that a certificate parsed
 * without its key (p11i_x509_parse_light) says the same as a full one;
 * other key types from the EVP_PKEY.  0 when out of memory.
 */
static int key_facts(X509 *x, p11s_cert_info *ci)
{
	X509_PUBKEY *xpk = X509_get_X509_PUBKEY(x);
	ASN1_OBJECT *alg = NULL;
	X509_ALGOR *algor = NULL;
	const unsigned char *raw = NULL;
	const void *param = NULL;
	int rawlen = 0, ptype = V_ASN1_UNDEF;
	const char *curve = NULL;
	EVP_PKEY *pk, *decoded = NULL;

	if (xpk == NULL || !X509_PUBKEY_get0_param(&alg, &raw, &rawlen, &algor, xpk))
		return 1;
	switch (OBJ_obj2nid(alg)) {
	case NID_rsaEncryption:
	case NID_rsassaPss:
		/* The key is an RSAPublicKey for both. */
		decoded = d2i_PublicKey(EVP_PKEY_RSA, NULL, &raw, rawlen);
		ci->key_type = P11S_KEY_RSA;
		ci->key_bits = decoded ? EVP_PKEY_get_bits(decoded) : 0;
		EVP_PKEY_free(decoded);
		return 1;
	case NID_X9_62_id_ecPublicKey:
		X509_ALGOR_get0(NULL, &ptype, &param, algor);
		if (ptype == V_ASN1_OBJECT) {
			int nid = OBJ_obj2nid(param);
			EC_GROUP *g = EC_GROUP_new_by_curve_name(nid);

			if (g != NULL) {
				ci->key_type = P11S_KEY_EC;
				ci->key_bits = EC_GROUP_order_bits(g);
				EC_GROUP_free(g);
				curve = p11i_curve_name(nid);
				return curve == NULL || (ci->curve = strdup(curve)) != NULL;
			}
		}
		break; /* explicit parameters: the EVP_PKEY knows */
	default:
		break;
	}
	pk = X509_get0_pubkey(x);
	if (pk == NULL) {
		/* A light certificate: decode its key alone, the slow way. */
		unsigned char *der = NULL;
		int n = i2d_X509_PUBKEY(xpk, &der);
		const unsigned char *p = der;

		pk = decoded = n > 0 ? d2i_PUBKEY(NULL, &p, n) : NULL;
		OPENSSL_free(der);
	}
	ci->key_type = p11i_pkey_facts(pk, &ci->key_bits, &curve);
	EVP_PKEY_free(decoded);
	return curve == NULL || (ci->curve = strdup(curve)) != NULL;
}

p11s_rc p11s_cert_describe(X509 *x, p11s_cert_info **out, p11s_error *err)
{
	p11s_cert_info *ci;

	*out = NULL;
	if (x == NULL)
		return p11i_err(err, P11S_E_INPUT, "no certificate");
	ci = calloc(1, sizeof(*ci));
	if (ci == NULL)
		return p11i_err_nomem(err);
	ci->subject = p11s_cert_name_string(X509_get_subject_name(x));
	ci->issuer = p11s_cert_name_string(X509_get_issuer_name(x));
	ci->serial = p11i_serial_hex(X509_get0_serialNumber(x));
	if (ci->subject == NULL || ci->issuer == NULL || ci->serial == NULL) {
		p11s_cert_info_free(ci);
		return p11i_err_ossl(err, P11S_E_INPUT, "cannot read the certificate's names");
	}
	if (!asn1_time(X509_get0_notBefore(x), &ci->not_before) ||
	    !asn1_time(X509_get0_notAfter(x), &ci->not_after)) {
		p11s_cert_info_free(ci);
		return p11i_err_ossl(err, P11S_E_INPUT, "cannot read the certificate's validity");
	}
	/* Only what is a mailbox is an address; validate names the rest. */
	ci->emails = p11i_cert_mailboxes(x, P11I_MAILBOX_IN_SAN, &ci->nemails);
	if (ci->emails == NULL || !key_facts(x, ci)) {
		p11s_cert_info_free(ci);
		return p11i_err_nomem(err);
	}
	ci->key_algorithm = p11s_key_type_name(ci->key_type);
	ERR_clear_error();
	*out = ci;
	return P11S_OK;
}

p11s_rc p11s_cert_describe_der(const unsigned char *der, size_t len, p11s_cert_info **out,
                               p11s_error *err)
{
	X509 *x = p11i_x509_parse_light(der, len);
	p11s_rc rc;

	*out = NULL;
	if (x == NULL)
		return p11i_err_ossl(err, P11S_E_INPUT, "the certificate does not parse as X.509");
	rc = p11s_cert_describe(x, out, err);
	X509_free(x);
	return rc;
}
