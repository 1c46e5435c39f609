/*
 * Changing a token: choosing the one token, read-write sessions, ids and
 * labels not in use, writing certificates and software keys, deleting.
 * Keys are written with C_CreateObject from their components, never
 * wrapped: no C_WrapKey, and nothing secret is read back.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "p11.h"
#include "p11smime/lifecycle.h"
#include "write.h"

/* ------------------------------------------------------------- tokens */

/* "pkcs11:token=LABEL" with LABEL percent-encoded by p11-kit. */
static char *label_uri(const char *label)
{
	P11KitUri *u = p11_kit_uri_new();
	CK_TOKEN_INFO *ti;
	size_t n = strlen(label);
	char *s = NULL;

	if (u == NULL || n > sizeof(ti->label)) {
		p11_kit_uri_free(u);
		return NULL;
	}
	ti = p11_kit_uri_get_token_info(u);
	memset(ti->label, ' ', sizeof(ti->label));
	memcpy(ti->label, label, n);
	if (p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN, &s) != P11_KIT_URI_OK)
		s = NULL;
	p11_kit_uri_free(u);
	return s;
}

p11s_rc p11s_token_select(p11s_ctx *ctx, const char *uri_or_label, p11s_token_list **list,
                          const p11s_token **token, p11s_error *err)
{
	P11KitUri *u = NULL;
	p11s_token_list *l = NULL;
	const p11s_token *found = NULL;
	char *uri = NULL, *shown;
	size_t n = 0;
	p11s_rc rc;

	*list = NULL;
	*token = NULL;
	if (uri_or_label != NULL && strncmp(uri_or_label, "pkcs11:", 7) != 0) {
		if (*uri_or_label == '\0' || strlen(uri_or_label) > 32)
			return p11i_err(err, P11S_E_USAGE,
			                "'%s' is neither a pkcs11: URI nor a token label (1 to 32 "
			                "bytes)",
			                uri_or_label);
		uri = label_uri(uri_or_label);
		if (uri == NULL)
			return p11i_err_nomem(err);
	}
	rc = p11i_uri_parse(uri ? uri : uri_or_label, &u, err);
	if (rc == P11S_OK)
		rc = p11i_tokens_matching(ctx, u, &l, err);
	if (rc != P11S_OK)
		goto out;
	for (size_t i = 0; i < l->count; i++) {
		if (!(l->tokens[i]->info.flags & CKF_TOKEN_INITIALIZED))
			continue;
		found = l->tokens[i];
		n++;
	}
	shown = p11i_uri_redact(uri_or_label);
	if (n == 0) {
		if (l->count > 0)
			rc = p11i_err(err, P11S_E_TOKEN_UNINITIALIZED,
			              "no initialised token matches %s", shown ? shown : "");
		else if (uri_or_label == NULL)
			rc = p11i_err(err, P11S_E_TOKEN_ABSENT, "no token present (module %s)",
			              ctx->module_path);
		else
			rc = p11i_err(err, P11S_E_NOT_FOUND, "no token matches %s",
			              shown ? shown : "");
	} else if (n > 1) {
		rc = p11i_err(err, P11S_E_AMBIGUOUS,
		              "%s matches %zu tokens; name one by its URI (--token):",
		              uri_or_label ? (shown ? shown : "") : "the selection", n);
		for (size_t i = 0; i < l->count; i++)
			if (l->tokens[i]->info.flags & CKF_TOKEN_INITIALIZED)
				p11i_err_add_candidate(err, l->tokens[i]->uri);
	}
	free(shown);
	if (rc == P11S_OK) {
		*list = l;
		*token = found;
		l = NULL;
	}
out:
	p11s_token_list_free(l);
	p11_kit_uri_free(u);
	free(uri);
	return rc;
}

p11s_rc p11s_token_login(p11s_ctx *ctx, const p11s_token *t, const char *uri, p11s_error *err)
{
	P11KitUri *u = NULL;
	p11s_rc rc;

	if (uri != NULL && strncmp(uri, "pkcs11:", 7) == 0) {
		rc = p11i_uri_parse(uri, &u, err);
		if (rc != P11S_OK)
			return rc;
	}
	rc = p11i_login(ctx, t, u, err);
	p11_kit_uri_free(u);
	return rc;
}

static int same_id(const p11s_object *a, const p11s_object *b)
{
	return a->id_len > 0 && a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0;
}

EVP_PKEY *p11s_object_public_key(const p11s_object_list *list, const p11s_object *o)
{
	if (o == NULL)
		return NULL;
	if (o->cls == P11S_OBJ_CERTIFICATE) {
		X509 *x = p11s_object_x509(o);

		return x ? X509_get0_pubkey(x) : NULL;
	}
	if (o->pub.pkey != NULL)
		return o->pub.pkey;
	for (size_t i = 0; list != NULL && i < list->all_count; i++) {
		const p11s_object *p = list->all[i];

		if (p->cls == P11S_OBJ_PUBLIC_KEY && p->token == o->token && same_id(p, o) &&
		    p->key_type == o->key_type && p->pub.pkey != NULL)
			return p->pub.pkey;
	}
	return NULL;
}

/* ------------------------------------------------------------ sessions */

p11s_rc p11i_rw_session(p11s_ctx *ctx, const p11s_token *t, CK_SESSION_HANDLE *out, p11s_error *err)
{
	CK_TOKEN_INFO ti;
	CK_RV rv;

	*out = CK_INVALID_HANDLE;
	rv = ctx->fl->C_GetTokenInfo(t->slot_id, &ti);
	if (rv != CKR_OK)
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_GetTokenInfo");
	if (ti.flags & CKF_WRITE_PROTECTED)
		return p11i_err(err, P11S_E_TOKEN, "token '%s' is write-protected", t->label);
	rv = ctx->fl->C_OpenSession(t->slot_id, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
	                            out);
	if (rv == CKR_TOKEN_WRITE_PROTECTED)
		return p11i_err(err, P11S_E_TOKEN, "token '%s' is write-protected", t->label);
	if (rv != CKR_OK) {
		*out = CK_INVALID_HANDLE;
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_OpenSession (read-write)");
	}
	return P11S_OK;
}

int p11i_count_objects(p11s_ctx *ctx, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	CK_OBJECT_HANDLE h[2];
	CK_ULONG got = 0;
	CK_RV rv;

	if (ctx->fl->C_FindObjectsInit(s, tmpl, n) != CKR_OK)
		return -1;
	rv = ctx->fl->C_FindObjects(s, h, 2, &got);
	ctx->fl->C_FindObjectsFinal(s);
	if (rv != CKR_OK || got > 2)
		return -1;
	return (int)got;
}

p11s_rc p11i_check_unused(p11s_ctx *ctx, const p11s_token *t, CK_SESSION_HANDLE s,
                          const unsigned char *id, size_t id_len, const char *label,
                          p11s_error *err)
{
	CK_ATTRIBUTE a;
	int n;

	if (id != NULL && id_len > 0) {
		a.type = CKA_ID;
		a.pValue = (void *)id;
		a.ulValueLen = id_len;
		n = p11i_count_objects(ctx, s, &a, 1);
		if (n < 0)
			return p11i_err(err, P11S_E_TOKEN, "cannot search token '%s'", t->label);
		if (n > 0) {
			char *hex = p11i_hex(id, id_len);
			p11s_rc rc = p11i_err(err, P11S_E_USAGE,
			                      "token '%s' already holds an object with id %s; "
			                      "choose another --id (or leave it out)",
			                      t->label, hex ? hex : "");

			free(hex);
			return rc;
		}
	}
	if (label != NULL) {
		a.type = CKA_LABEL;
		a.pValue = (void *)label;
		a.ulValueLen = strlen(label);
		n = p11i_count_objects(ctx, s, &a, 1);
		if (n < 0)
			return p11i_err(err, P11S_E_TOKEN, "cannot search token '%s'", t->label);
		if (n > 0)
			return p11i_err(err, P11S_E_USAGE,
			                "token '%s' already holds an object labelled '%s'; choose "
			                "another --label",
			                t->label, label);
	}
	return P11S_OK;
}

p11s_rc p11i_pick_id(p11s_ctx *ctx, CK_SESSION_HANDLE s, unsigned char *id, size_t *id_len,
                     p11s_error *err)
{
	for (unsigned v = 1; v <= 0xffff; v++) {
		unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
		size_t len = v < 0x100 ? 1 : 2;
		CK_ATTRIBUTE a = {CKA_ID, len == 1 ? b + 1 : b, len};
		int n = p11i_count_objects(ctx, s, &a, 1);

		if (n < 0)
			return p11i_err(err, P11S_E_TOKEN, "cannot search the token for a free id");
		if (n == 0) {
			memcpy(id, a.pValue, len);
			*id_len = len;
			return P11S_OK;
		}
	}
	return p11i_err(err, P11S_E_TOKEN, "no free two-byte id on the token; give one with --id");
}

char *p11i_new_object_uri(const p11s_token *t, p11s_object_class cls, const unsigned char *id,
                          size_t id_len, const char *label)
{
	p11s_object o;

	memset(&o, 0, sizeof(o));
	o.cls = cls;
	o.token = t;
	o.id = (unsigned char *)id;
	o.id_len = id_len;
	o.label = (char *)label;
	return p11i_object_uri_build(&o);
}

p11s_rc p11i_hex_parse(const char *hex, unsigned char *out, size_t cap, size_t *len,
                       p11s_error *err)
{
	size_t n = 0;
	const char *p = hex;

	if (hex == NULL || *hex == '\0')
		return p11i_err(err, P11S_E_USAGE, "empty id");
	while (*p != '\0') {
		int hi, lo;

		if (*p == ':' && n > 0) {
			p++;
			continue;
		}
		if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]))
			return p11i_err(err, P11S_E_USAGE,
			                "id '%s' is not hex bytes (such as 0a or 0a:1b)", hex);
		if (n == cap)
			return p11i_err(err, P11S_E_USAGE, "id '%s' is longer than %zu bytes", hex,
			                cap);
		hi = isdigit((unsigned char)p[0]) ? p[0] - '0'
		                                  : (tolower((unsigned char)p[0]) - 'a' + 10);
		lo = isdigit((unsigned char)p[1]) ? p[1] - '0'
		                                  : (tolower((unsigned char)p[1]) - 'a' + 10);
		out[n++] = (unsigned char)(hi << 4 | lo);
		p += 2;
	}
	*len = n;
	return P11S_OK;
}

/* ------------------------------------------------------------- writing */

/* Everything a token-changing call in this file starts with. */
struct writer {
	p11s_ctx *ctx;
	const p11s_token *t;
	CK_SESSION_HANDLE s;
};

static p11s_rc writer_open(struct writer *w, p11s_ctx *ctx, const p11s_token *t, p11s_error *err)
{
	p11s_rc rc;

	w->ctx = ctx;
	w->t = t;
	w->s = CK_INVALID_HANDLE;
	rc = p11i_login(ctx, t, NULL, err);
	if (rc == P11S_OK)
		rc = p11i_rw_session(ctx, t, &w->s, err);
	return rc;
}

static void writer_close(struct writer *w)
{
	if (w->s != CK_INVALID_HANDLE)
		w->ctx->fl->C_CloseSession(w->s);
	w->s = CK_INVALID_HANDLE;
}

/* The handle of the object that @p tmpl finds, if exactly one does; else CK_INVALID_HANDLE. */
static CK_OBJECT_HANDLE find_one(struct writer *w, CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	CK_OBJECT_HANDLE h[2];
	CK_ULONG got = 0;
	CK_RV rv;

	if (w->ctx->fl->C_FindObjectsInit(w->s, tmpl, n) != CKR_OK)
		return CK_INVALID_HANDLE;
	rv = w->ctx->fl->C_FindObjects(w->s, h, 2, &got);
	w->ctx->fl->C_FindObjectsFinal(w->s);
	return rv == CKR_OK && got == 1 ? h[0] : CK_INVALID_HANDLE;
}

/* DER of an X509 field, malloc'd. */
#define I2D_DUP(fn, x, out, len)                                      \
	do {                                                          \
		int l_ = fn((x), NULL);                               \
		unsigned char *p_;                                    \
		(out) = NULL;                                         \
		(len) = 0;                                            \
		if (l_ > 0 && ((out) = malloc((size_t)l_)) != NULL) { \
			p_ = (out);                                   \
			(len) = (size_t)fn((x), &p_);                 \
		}                                                     \
	} while (0)

p11s_rc p11s_token_write_cert(p11s_ctx *ctx, const p11s_token *t, X509 *cert,
                              const unsigned char *id, size_t id_len, const char *label,
                              int category, char **uri, p11s_error *err)
{
	struct writer w;
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG cat = (CK_ULONG)category;
	unsigned char *der = NULL, *subj = NULL, *iss = NULL, *ser = NULL;
	size_t der_len, subj_len, iss_len, ser_len;
	CK_OBJECT_HANDLE h;
	CK_RV rv;
	p11s_rc rc;

	*uri = NULL;
	rc = writer_open(&w, ctx, t, err);
	if (rc != P11S_OK)
		goto out;
	I2D_DUP(i2d_X509, cert, der, der_len);
	I2D_DUP(i2d_X509_NAME, X509_get_subject_name(cert), subj, subj_len);
	I2D_DUP(i2d_X509_NAME, X509_get_issuer_name(cert), iss, iss_len);
	I2D_DUP(i2d_ASN1_INTEGER, X509_get0_serialNumber(cert), ser, ser_len);
	if (der == NULL || subj == NULL || iss == NULL || ser == NULL) {
		rc = p11i_err_ossl(err, P11S_E_INPUT, "cannot encode the certificate");
		goto out;
	}
	{
		CK_ATTRIBUTE tmpl[] = {
		    {CKA_CLASS, &cls, sizeof(cls)},
		    {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
		    {CKA_TOKEN, &yes, sizeof(yes)},
		    {CKA_PRIVATE, &no, sizeof(no)},
		    {CKA_MODIFIABLE, &yes, sizeof(yes)},
		    {CKA_ID, (void *)id, id_len},
		    {CKA_LABEL, (void *)label, strlen(label)},
		    {CKA_SUBJECT, subj, subj_len},
		    {CKA_ISSUER, iss, iss_len},
		    {CKA_SERIAL_NUMBER, ser, ser_len},
		    {CKA_VALUE, der, der_len},
		    {CKA_CERTIFICATE_CATEGORY, &cat, sizeof(cat)},
		};
		CK_ULONG n = sizeof(tmpl) / sizeof(tmpl[0]);

		rv = ctx->fl->C_CreateObject(w.s, tmpl, n, &h);
		/* CKA_CERTIFICATE_CATEGORY is PKCS#11 2.20+: an older token may not know it. */
		if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_TEMPLATE_INCONSISTENT)
			rv = ctx->fl->C_CreateObject(w.s, tmpl, n - 1, &h);
	}
	if (rv != CKR_OK) {
		rc = p11i_ckr(err, rv, P11S_E_TOKEN, "writing the certificate (C_CreateObject)");
		goto out;
	}
	*uri = p11i_new_object_uri(t, P11S_OBJ_CERTIFICATE, id, id_len, label);
	if (*uri == NULL)
		rc = p11i_err_nomem(err);
out:
	writer_close(&w);
	free(der);
	free(subj);
	free(iss);
	free(ser);
	return rc;
}

/* A big number as big-endian bytes, for the template; wiped by attrs_wipe(). */
struct bnbuf {
	unsigned char *p;
	size_t len;
};

static int bn_param(EVP_PKEY *pk, const char *name, struct bnbuf *b, size_t pad)
{
	BIGNUM *bn = NULL;
	int ok = 0;

	if (!EVP_PKEY_get_bn_param(pk, name, &bn))
		return 0;
	b->len = pad ? pad : (size_t)BN_num_bytes(bn);
	if (b->len == 0)
		b->len = 1;
	b->p = malloc(b->len);
	if (b->p != NULL && BN_bn2binpad(bn, b->p, (int)b->len) == (int)b->len)
		ok = 1;
	BN_clear_free(bn);
	return ok;
}

static void bnbuf_wipe(struct bnbuf *b)
{
	if (b->p != NULL) {
		OPENSSL_cleanse(b->p, b->len);
		free(b->p);
	}
	b->p = NULL;
	b->len = 0;
}

p11s_rc p11s_token_write_keypair(p11s_ctx *ctx, const p11s_token *t, EVP_PKEY *pk,
                                 const unsigned char *id, size_t id_len, const char *label,
                                 char **priv_uri, char **pub_uri, p11s_error *err)
{
	static const char *const rsa_names[8] = {
	    OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
	    OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
	    OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
	    OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
	};
	static const CK_ATTRIBUTE_TYPE rsa_attrs[8] = {
	    CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1,
	    CKA_PRIME_2, CKA_EXPONENT_1,      CKA_EXPONENT_2,       CKA_COEFFICIENT,
	};
	struct writer w;
	struct bnbuf parts[8];
	CK_OBJECT_CLASS priv_cls = CKO_PRIVATE_KEY, pub_cls = CKO_PUBLIC_KEY;
	CK_KEY_TYPE kt;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE priv[24], pub[16];
	CK_ULONG np = 0, nu = 0;
	CK_OBJECT_HANDLE hpriv = CK_INVALID_HANDLE, hpub = CK_INVALID_HANDLE;
	unsigned char *params = NULL, *point_der = NULL, pt[200];
	size_t pt_len = 0;
	int params_len = 0, point_der_len = 0, is_ec;
	CK_RV rv;
	p11s_rc rc;

	*priv_uri = NULL;
	*pub_uri = NULL;
	memset(parts, 0, sizeof(parts));
	memset(&w, 0, sizeof(w));
	w.s = CK_INVALID_HANDLE;
	is_ec = EVP_PKEY_is_a(pk, "EC");
	if (!is_ec && !EVP_PKEY_is_a(pk, "RSA"))
		return p11i_err(
		    err, P11S_E_INPUT, "the key is %s; only RSA and EC keys can be imported",
		    EVP_PKEY_get0_type_name(pk) ? EVP_PKEY_get0_type_name(pk) : "unknown");
	kt = is_ec ? CKK_EC : CKK_RSA;
#define ADD(arr, n, t_, v_, l_)                   \
	do {                                      \
		(arr)[(n)].type = (t_);           \
		(arr)[(n)].pValue = (void *)(v_); \
		(arr)[(n)].ulValueLen = (l_);     \
		(n)++;                            \
	} while (0)
	ADD(priv, np, CKA_CLASS, &priv_cls, sizeof(priv_cls));
	ADD(priv, np, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(priv, np, CKA_TOKEN, &yes, sizeof(yes));
	ADD(priv, np, CKA_PRIVATE, &yes, sizeof(yes));
	ADD(priv, np, CKA_SENSITIVE, &yes, sizeof(yes));
	ADD(priv, np, CKA_EXTRACTABLE, &no, sizeof(no));
	ADD(priv, np, CKA_SIGN, &yes, sizeof(yes));
	ADD(priv, np, CKA_ID, id, id_len);
	ADD(priv, np, CKA_LABEL, label, strlen(label));
	ADD(pub, nu, CKA_CLASS, &pub_cls, sizeof(pub_cls));
	ADD(pub, nu, CKA_KEY_TYPE, &kt, sizeof(kt));
	ADD(pub, nu, CKA_TOKEN, &yes, sizeof(yes));
	ADD(pub, nu, CKA_PRIVATE, &no, sizeof(no));
	ADD(pub, nu, CKA_VERIFY, &yes, sizeof(yes));
	ADD(pub, nu, CKA_ID, id, id_len);
	ADD(pub, nu, CKA_LABEL, label, strlen(label));
	if (!is_ec) {
		for (int i = 0; i < 8; i++)
			if (!bn_param(pk, rsa_names[i], &parts[i], 0)) {
				rc = p11i_err(
				    err, P11S_E_INPUT,
				    "the RSA key lacks its CRT components; cannot import it");
				goto out;
			}
		for (int i = 0; i < 8; i++)
			ADD(priv, np, rsa_attrs[i], parts[i].p, parts[i].len);
		ADD(priv, np, CKA_DECRYPT, &yes, sizeof(yes));
		ADD(priv, np, CKA_UNWRAP, &yes, sizeof(yes));
		ADD(priv, np, CKA_DERIVE, &no, sizeof(no));
		ADD(pub, nu, CKA_MODULUS, parts[0].p, parts[0].len);
		ADD(pub, nu, CKA_PUBLIC_EXPONENT, parts[1].p, parts[1].len);
		ADD(pub, nu, CKA_ENCRYPT, &yes, sizeof(yes));
		ADD(pub, nu, CKA_WRAP, &yes, sizeof(yes));
	} else {
		char group[64];
		int nid, degree;
		ASN1_OBJECT *obj;
		ASN1_OCTET_STRING *os = NULL;
		EC_GROUP *g;

		if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
		                                    sizeof(group), NULL) ||
		    (nid = OBJ_txt2nid(group)) == NID_undef || (obj = OBJ_nid2obj(nid)) == NULL) {
			rc = p11i_err_ossl(err, P11S_E_INPUT,
			                   "the EC key is not on a named curve; cannot import it");
			goto out;
		}
		params_len = i2d_ASN1_OBJECT(obj, &params);
		g = EC_GROUP_new_by_curve_name(nid);
		degree = g ? EC_GROUP_get_degree(g) : 0;
		EC_GROUP_free(g);
		if (params_len <= 0 || degree <= 0 ||
		    !bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &parts[0], ((size_t)degree + 7) / 8) ||
		    !EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt),
		                                     &pt_len)) {
			rc = p11i_err_ossl(err, P11S_E_INPUT, "cannot read the EC key's parts");
			goto out;
		}
		/* CKA_EC_POINT is the DER OCTET STRING around the point. */
		os = ASN1_OCTET_STRING_new();
		if (os == NULL || !ASN1_OCTET_STRING_set(os, pt, (int)pt_len) ||
		    (point_der_len = i2d_ASN1_OCTET_STRING(os, &point_der)) <= 0) {
			ASN1_OCTET_STRING_free(os);
			rc = p11i_err_nomem(err);
			goto out;
		}
		ASN1_OCTET_STRING_free(os);
		ADD(priv, np, CKA_EC_PARAMS, params, (CK_ULONG)params_len);
		ADD(priv, np, CKA_VALUE, parts[0].p, parts[0].len);
		ADD(priv, np, CKA_DERIVE, &yes, sizeof(yes));
		ADD(priv, np, CKA_DECRYPT, &no, sizeof(no));
		ADD(priv, np, CKA_UNWRAP, &no, sizeof(no));
		ADD(pub, nu, CKA_EC_PARAMS, params, (CK_ULONG)params_len);
		ADD(pub, nu, CKA_EC_POINT, point_der, (CK_ULONG)point_der_len);
		ADD(pub, nu, CKA_ENCRYPT, &no, sizeof(no));
		ADD(pub, nu, CKA_WRAP, &no, sizeof(no));
	}
#undef ADD
	rc = writer_open(&w, ctx, t, err);
	if (rc != P11S_OK)
		goto out;
	rv = ctx->fl->C_CreateObject(w.s, priv, np, &hpriv);
	if (rv != CKR_OK) {
		rc = p11i_ckr(err, rv, P11S_E_TOKEN, "writing the private key (C_CreateObject)");
		goto out;
	}
	rv = ctx->fl->C_CreateObject(w.s, pub, nu, &hpub);
	if (rv != CKR_OK) {
		/* Whole or not at all: a private key without the rest is taken back. */
		ctx->fl->C_DestroyObject(w.s, hpriv);
		rc = p11i_ckr(err, rv, P11S_E_TOKEN, "writing the public key (C_CreateObject)");
		goto out;
	}
	*priv_uri = p11i_new_object_uri(t, P11S_OBJ_PRIVATE_KEY, id, id_len, label);
	*pub_uri = p11i_new_object_uri(t, P11S_OBJ_PUBLIC_KEY, id, id_len, label);
	if (*priv_uri == NULL || *pub_uri == NULL)
		rc = p11i_err_nomem(err);
out:
	writer_close(&w);
	for (int i = 0; i < 8; i++)
		bnbuf_wipe(&parts[i]);
	OPENSSL_free(params);
	OPENSSL_free(point_der);
	ERR_clear_error();
	return rc;
}

void p11s_token_forget(p11s_ctx *ctx, const p11s_token *t, const char *uri)
{
	struct writer w;
	P11KitUri *u = NULL;
	CK_ATTRIBUTE tmpl[3];
	CK_ULONG n = 0;
	CK_OBJECT_HANDLE h;
	static const CK_ATTRIBUTE_TYPE types[3] = {CKA_CLASS, CKA_ID, CKA_LABEL};

	if (uri == NULL || p11i_uri_parse(uri, &u, NULL) != P11S_OK)
		return;
	for (int i = 0; i < 3; i++) {
		CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(u, types[i]);

		if (a != NULL)
			tmpl[n++] = *a;
	}
	if (n == 3 && writer_open(&w, ctx, t, NULL) == P11S_OK &&
	    (h = find_one(&w, tmpl, n)) != CK_INVALID_HANDLE)
		ctx->fl->C_DestroyObject(w.s, h);
	writer_close(&w);
	p11_kit_uri_free(u);
}

/* -------------------------------------------------------------- delete */

struct p11s_delete_plan {
	p11s_object_list *list;
	const p11s_object **objs;
	size_t n;
};

static int in_plan(const p11s_delete_plan *p, const p11s_object *o)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->objs[i] == o)
			return 1;
	return 0;
}

static int id_cmp(const p11s_object *a, const p11s_object *b)
{
	return a->id_len == b->id_len && (a->id_len == 0 || memcmp(a->id, b->id, a->id_len) == 0);
}

p11s_rc p11s_delete_plan_new(p11s_ctx *ctx, const char *uri, int all, p11s_delete_plan **out,
                             p11s_error *err)
{
	p11s_delete_plan *p = NULL;
	p11s_token_list *tl = NULL;
	const p11s_token *t;
	P11KitUri *u = NULL;
	CK_ATTRIBUTE *cls;
	char *shown = NULL;
	size_t ids = 0;
	p11s_rc rc;

	*out = NULL;
	if (uri == NULL || strncmp(uri, "pkcs11:", 7) != 0)
		return p11i_err(err, P11S_E_USAGE, "delete needs a pkcs11: URI");
	rc = p11i_uri_parse(uri, &u, err);
	if (rc != P11S_OK)
		return rc;
	shown = p11i_uri_redact(uri);
	if (p11_kit_uri_get_attribute(u, CKA_ID) == NULL &&
	    p11_kit_uri_get_attribute(u, CKA_LABEL) == NULL &&
	    p11_kit_uri_get_attribute(u, CKA_CLASS) == NULL) {
		rc = p11i_err(err, P11S_E_USAGE,
		              "%s names no object (id=, object= or type=); refusing to delete a "
		              "whole token",
		              shown ? shown : "");
		goto out;
	}
	/* The token first, before any login: an ambiguous URI touches nothing. */
	rc = p11s_token_select(ctx, uri, &tl, &t, err);
	if (rc != P11S_OK)
		goto out;
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	rc = p11i_login(ctx, t, u, err);
	if (rc != P11S_OK)
		goto out;
	{
		/* Everything on that token, so that a certificate's keys can be found. */
		p11s_objects_opts o = {.login = 1};

		rc = p11s_objects(ctx, t->uri, &o, &p->list, err);
	}
	if (rc != P11S_OK)
		goto out;
	p->objs = calloc(p->list->all_count ? p->list->all_count : 1, sizeof(*p->objs));
	if (p->objs == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	cls = p11_kit_uri_get_attribute(u, CKA_CLASS);
	for (size_t i = 0; i < p->list->count; i++) {
		const p11s_object *o = p->list->objects[i];

		if (p11i_uri_match_object(u, o))
			p->objs[p->n++] = o;
	}
	/* A certificate URI without type=: the pair goes with it. */
	for (size_t i = 0, n = p->n; cls == NULL && i < n; i++) {
		const p11s_object *c = p->objs[i];

		if (c->cls != P11S_OBJ_CERTIFICATE || c->id_len == 0)
			continue;
		for (size_t j = 0; j < p->list->count; j++) {
			const p11s_object *k = p->list->objects[j];

			if (k->cls != P11S_OBJ_CERTIFICATE && same_id(k, c) && !in_plan(p, k))
				p->objs[p->n++] = k;
		}
	}
	if (p->n == 0) {
		rc = p11i_err(err, P11S_E_NOT_FOUND, "no object matches %s", shown ? shown : "");
		goto out;
	}
	for (size_t i = 0; i < p->n; i++) {
		size_t j = 0;

		while (j < i && !id_cmp(p->objs[j], p->objs[i]))
			j++;
		if (j == i)
			ids++;
	}
	if (ids > 1 && !all) {
		rc = p11i_err(err, P11S_E_AMBIGUOUS,
		              "%s matches objects of %zu different ids; name one, or delete them "
		              "all with --all:",
		              shown ? shown : "", ids);
		for (size_t i = 0; i < p->n; i++)
			p11i_err_add_candidate(err, p->objs[i]->uri);
		goto out;
	}
	*out = p;
	p = NULL;
out:
	p11s_token_list_free(tl);
	p11s_delete_plan_free(p);
	p11_kit_uri_free(u);
	free(shown);
	return rc;
}

void p11s_delete_plan_free(p11s_delete_plan *p)
{
	if (p == NULL)
		return;
	p11s_object_list_free(p->list);
	free(p->objs);
	free(p);
}

size_t p11s_delete_plan_count(const p11s_delete_plan *p)
{
	return p ? p->n : 0;
}

const char *p11s_delete_plan_uri(const p11s_delete_plan *p, size_t i)
{
	return p && i < p->n ? p->objs[i]->uri : NULL;
}

p11s_object_class p11s_delete_plan_class(const p11s_delete_plan *p, size_t i)
{
	return p->objs[i]->cls;
}

p11s_rc p11s_delete_plan_run(p11s_ctx *ctx, p11s_delete_plan *p, size_t *done, p11s_error *err)
{
	struct writer w;
	size_t n = 0;
	p11s_rc rc;

	if (done != NULL)
		*done = 0;
	if (p == NULL || p->n == 0)
		return P11S_OK;
	rc = writer_open(&w, ctx, p->objs[0]->token, err);
	/* Certificates first: a key is never left behind by a certificate that pairs with it. */
	for (int pass = 0; rc == P11S_OK && pass < 3; pass++) {
		for (size_t i = 0; rc == P11S_OK && i < p->n; i++) {
			const p11s_object *o = p->objs[i];
			CK_RV rv;

			if ((int)o->cls != pass)
				continue;
			rv = ctx->fl->C_DestroyObject(w.s, o->handle);
			if (rv != CKR_OK) {
				rc = p11i_ckr(err, rv, P11S_E_TOKEN, "C_DestroyObject");
				rc = p11i_err(err, rc, "cannot delete %s: %s", o->uri,
				              p11i_ckr_name(rv));
			} else {
				n++;
			}
		}
	}
	writer_close(&w);
	if (done != NULL)
		*done = n;
	return rc;
}

p11s_rc p11s_token_free_id(p11s_ctx *ctx, const p11s_token *t, unsigned char *id, size_t *id_len,
                           p11s_error *err)
{
	struct writer w;
	p11s_rc rc = writer_open(&w, ctx, t, err);

	if (rc == P11S_OK)
		rc = p11i_pick_id(ctx, w.s, id, id_len, err);
	writer_close(&w);
	return rc;
}
