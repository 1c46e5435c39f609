#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "mailbox.h"
#include "p11smime/certs.h"
#include "listing.h"
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
 * without its key (p11s_x509_parse_light) says the same as a full one;
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
				curve = p11s_curve_name(nid);
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
	ci->key_type = p11s_pkey_facts(pk, &ci->key_bits, &curve);
	EVP_PKEY_free(decoded);
	return curve == NULL || (ci->curve = strdup(curve)) != NULL;
}

static char *serial_hex(X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn == NULL ? NULL : BN_is_zero(bn) ? OPENSSL_strdup("0") : BN_bn2hex(bn);
	char *out = p11s_strdup(hex);

	for (char *p = out; p && *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	OPENSSL_free(hex);
	BN_free(bn);
	return out;
}

p11s_rc p11s_cert_describe(X509 *x, p11s_cert_info **out, p11s_error *err)
{
	p11s_cert_info *ci;

	*out = NULL;
	if (x == NULL)
		return p11s_err(err, P11S_E_INPUT, "no certificate");
	ci = calloc(1, sizeof(*ci));
	if (ci == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	ci->subject = p11s_cert_name_string(X509_get_subject_name(x));
	ci->issuer = p11s_cert_name_string(X509_get_issuer_name(x));
	ci->serial = serial_hex(x);
	if (ci->subject == NULL || ci->issuer == NULL || ci->serial == NULL) {
		p11s_cert_info_free(ci);
		return p11s_err_ossl(err, P11S_E_INPUT, "cannot read the certificate's names");
	}
	if (!asn1_time(X509_get0_notBefore(x), &ci->not_before) ||
	    !asn1_time(X509_get0_notAfter(x), &ci->not_after)) {
		p11s_cert_info_free(ci);
		return p11s_err_ossl(err, P11S_E_INPUT, "cannot read the certificate's validity");
	}
	/* Only what is a mailbox is an address; validate names the rest. */
	ci->emails = p11s_cert_mailboxes(x, P11S_MAILBOX_IN_SAN, &ci->nemails);
	if (ci->emails == NULL || !key_facts(x, ci)) {
		p11s_cert_info_free(ci);
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	}
	ci->key_algorithm = p11s_key_type_name(ci->key_type);
	ERR_clear_error();
	*out = ci;
	return P11S_OK;
}

p11s_rc p11s_cert_describe_der(const unsigned char *der, size_t len, p11s_cert_info **out,
                               p11s_error *err)
{
	X509 *x = p11s_x509_parse_light(der, len);
	p11s_rc rc;

	*out = NULL;
	if (x == NULL)
		return p11s_err_ossl(err, P11S_E_INPUT, "the certificate does not parse as X.509");
	rc = p11s_cert_describe(x, out, err);
	X509_free(x);
	return rc;
}

static const struct {
	unsigned flag;
	const char *key;
} token_flag_keys[] = {
    {P11S_TOKEN_LOGIN_REQUIRED, "login_required"},
    {P11S_TOKEN_PROTECTED_AUTH_PATH, "protected_auth_path"},
    {P11S_TOKEN_INITIALIZED, "initialized"},
    {P11S_TOKEN_USER_PIN_INITIALIZED, "user_pin_initialized"},
    {P11S_TOKEN_USER_PIN_COUNT_LOW, "user_pin_count_low"},
    {P11S_TOKEN_USER_PIN_FINAL_TRY, "user_pin_final_try"},
    {P11S_TOKEN_USER_PIN_LOCKED, "user_pin_locked"},
    {P11S_TOKEN_USER_PIN_TO_BE_CHANGED, "user_pin_to_be_changed"},
    {P11S_TOKEN_WRITE_PROTECTED, "write_protected"},
    {P11S_TOKEN_HW_SLOT, "hardware_slot"},
    {P11S_TOKEN_REMOVABLE, "removable"},
};

const char *p11s_token_flag_key(unsigned flag)
{
	for (size_t i = 0; i < sizeof(token_flag_keys) / sizeof(token_flag_keys[0]); i++)
		if (token_flag_keys[i].flag == flag)
			return token_flag_keys[i].key;
	return NULL;
}

/* jansson steals the reference of *_new values: a NULL from OOM is caught at dump time. */
static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *token_json(const p11s_token *t)
{
	json_t *o = json_object(), *f = json_object();
	unsigned flags = p11s_token_flags(t);

	if (o == NULL || f == NULL) {
		json_decref(o);
		json_decref(f);
		return NULL;
	}
	for (size_t i = 0; i < sizeof(token_flag_keys) / sizeof(token_flag_keys[0]); i++)
		json_object_set_new(f, token_flag_keys[i].key,
		                    json_boolean(flags & token_flag_keys[i].flag));
	json_object_set_new(o, "uri", str_or_null(p11s_token_uri(t)));
	json_object_set_new(o, "label", str_or_null(p11s_token_label(t)));
	json_object_set_new(o, "manufacturer", str_or_null(p11s_token_manufacturer(t)));
	json_object_set_new(o, "model", str_or_null(p11s_token_model(t)));
	json_object_set_new(o, "serial", str_or_null(p11s_token_serial(t)));
	json_object_set_new(o, "slot_id", json_integer((json_int_t)p11s_token_slot_id(t)));
	json_object_set_new(o, "slot_description", str_or_null(p11s_token_slot_description(t)));
	json_object_set_new(o, "flags", f);
	return o;
}

static char *dump(json_t *doc)
{
	char *s = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;

	json_decref(doc);
	return s;
}

char *p11s_tokens_json(const p11s_token_list *list)
{
	json_t *doc = json_object(), *arr = json_array();

	if (doc == NULL || arr == NULL) {
		json_decref(doc);
		json_decref(arr);
		return NULL;
	}
	for (size_t i = 0; i < p11s_token_list_count(list); i++) {
		json_t *t = token_json(p11s_token_list_get(list, i));

		if (t == NULL || json_array_append_new(arr, t) != 0) {
			json_decref(doc);
			json_decref(arr);
			return NULL;
		}
	}
	json_object_set_new(doc, "tokens", arr);
	return dump(doc);
}

static json_t *uri_of(const p11s_object *o)
{
	return o ? str_or_null(p11s_object_uri(o)) : json_null();
}

static void key_members(json_t *j, const p11s_object *o)
{
	unsigned kf = p11s_object_key_flags(o);
	int bits = p11s_object_key_bits(o);
	const char *curve = p11s_object_key_curve(o);

	json_object_set_new(j, "key_type",
	                    json_string(p11s_key_type_name(p11s_object_key_type(o))));
	json_object_set_new(j, "key_bits", bits > 0 ? json_integer(bits) : json_null());
	json_object_set_new(j, "curve", str_or_null(curve));
	if (p11s_object_get_class(o) == P11S_OBJ_PRIVATE_KEY) {
		json_object_set_new(j, "sensitive", json_boolean(kf & P11S_KF_SENSITIVE));
		json_object_set_new(j, "extractable", json_boolean(kf & P11S_KF_EXTRACTABLE));
		json_object_set_new(j, "sign", json_boolean(kf & P11S_KF_SIGN));
		json_object_set_new(j, "decrypt", json_boolean(kf & P11S_KF_DECRYPT));
		json_object_set_new(j, "derive", json_boolean(kf & P11S_KF_DERIVE));
		json_object_set_new(j, "unwrap", json_boolean(kf & P11S_KF_UNWRAP));
		json_object_set_new(j, "always_authenticate",
		                    json_boolean(kf & P11S_KF_ALWAYS_AUTHENTICATE));
		json_object_set_new(j, "private", json_boolean(kf & P11S_KF_PRIVATE));
		json_object_set_new(j, "local", json_boolean(kf & P11S_KF_LOCAL));
		json_object_set_new(j, "never_extractable",
		                    json_boolean(kf & P11S_KF_NEVER_EXTRACTABLE));
		json_object_set_new(j, "always_sensitive",
		                    json_boolean(kf & P11S_KF_ALWAYS_SENSITIVE));
		json_object_set_new(j, "certificate", uri_of(p11s_object_certificate(o)));
	} else {
		json_object_set_new(j, "verify", json_boolean(kf & P11S_KF_VERIFY));
		json_object_set_new(j, "encrypt", json_boolean(kf & P11S_KF_ENCRYPT));
		json_object_set_new(j, "derive", json_boolean(kf & P11S_KF_DERIVE));
		json_object_set_new(j, "wrap", json_boolean(kf & P11S_KF_WRAP));
	}
}

static int cert_members(json_t *j, const p11s_object *o)
{
	p11s_cert_info *ci = NULL;
	char tb[32];
	json_t *emails;
	const unsigned char *der;
	size_t derlen;

	json_object_set_new(j, "private_key", uri_of(p11s_object_private_key(o)));
	json_object_set_new(j, "pairing", json_string(p11s_pairing_name(p11s_object_pairing(o))));
	json_object_set_new(j, "pairing_evidence",
	                    json_string(p11s_pair_evidence_name(p11s_object_pairing_evidence(o))));
	json_object_set_new(j, "same_id_key", uri_of(p11s_object_id_key(o)));
	der = p11s_object_value(o, &derlen);
	/* Parsed here without the public key, which nothing listed needs decoded. */
	if (der == NULL || p11s_cert_describe_der(der, derlen, &ci, NULL) != P11S_OK) {
		/* Still listed, so that a person sees the broken object. */
		json_object_set_new(j, "parse_error", json_true());
		json_object_set_new(j, "emails", json_array());
		return 1;
	}
	emails = json_array();
	for (size_t i = 0; emails && i < ci->nemails; i++)
		json_array_append_new(emails, json_string(ci->emails[i]));
	json_object_set_new(j, "emails", emails);
	json_object_set_new(j, "subject", json_string(ci->subject));
	json_object_set_new(j, "issuer", json_string(ci->issuer));
	json_object_set_new(j, "serial", json_string(ci->serial));
	json_object_set_new(j, "not_before",
	                    json_string(p11s_time_format(ci->not_before, tb, sizeof(tb))));
	json_object_set_new(j, "not_after",
	                    json_string(p11s_time_format(ci->not_after, tb, sizeof(tb))));
	json_object_set_new(j, "key_algorithm", json_string(ci->key_algorithm));
	json_object_set_new(j, "key_bits",
	                    ci->key_bits > 0 ? json_integer(ci->key_bits) : json_null());
	json_object_set_new(j, "curve", str_or_null(ci->curve));
	p11s_cert_info_free(ci);
	return 1;
}

char *p11s_objects_json(const p11s_object_list *list)
{
	size_t n = p11s_object_list_count(list);
	const p11s_object **v = calloc(n ? n : 1, sizeof(*v));
	char *doc;

	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		v[i] = p11s_object_list_get(list, i);
	doc = p11s_objects_json_array(v, n);
	free(v);
	return doc;
}

char *p11s_objects_json_array(const p11s_object *const *objs, size_t n)
{
	json_t *doc = json_object(), *arr = json_array();

	if (doc == NULL || arr == NULL) {
		json_decref(doc);
		json_decref(arr);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		const p11s_object *o = objs[i];
		json_t *j = json_object();
		size_t idlen;
		const unsigned char *id = p11s_object_id(o, &idlen);
		char *hex = p11s_hex(id ? id : (const unsigned char *)"", idlen);

		if (j == NULL || hex == NULL) {
			free(hex);
			json_decref(j);
			json_decref(doc);
			json_decref(arr);
			return NULL;
		}
		json_object_set_new(j, "uri", json_string(p11s_object_uri(o)));
		json_object_set_new(j, "class",
		                    json_string(p11s_object_class_name(p11s_object_get_class(o))));
		json_object_set_new(j, "label", str_or_null(p11s_object_label(o)));
		json_object_set_new(j, "id", json_string(hex));
		free(hex);
		json_object_set_new(j, "token", str_or_null(p11s_token_uri(p11s_object_token(o))));
		if (p11s_object_get_class(o) == P11S_OBJ_CERTIFICATE)
			cert_members(j, o);
		else
			key_members(j, o);
		json_array_append_new(arr, j);
	}
	json_object_set_new(doc, "objects", arr);
	return dump(doc);
}
