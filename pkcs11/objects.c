/*
 * Object enumeration: one C_FindObjects pass per token (narrowed by the
 * URI's id or label, see find_for_uri), two C_GetAttributeValue calls per
 * object (lengths and fixed-size values, then the variable-length values),
 * pairing in our own code.  libp11's PKCS11_find_key/find_certificate
 * search the whole token per call, which made 500 certificates take
 * seconds.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509v3.h>

#include "p11.h"
#include "pairing.h"

#ifndef CKK_EC_MONTGOMERY
#define CKK_EC_MONTGOMERY 0x41UL
#endif

enum {
	/* Fixed size, read in the first call. */
	A_CLASS,
	A_KEY_TYPE,
	A_CERT_TYPE,
	A_MODULUS_BITS,
	A_BOOL0,
	A_SIGN = A_BOOL0,
	A_DECRYPT,
	A_DERIVE,
	A_UNWRAP,
	A_SENSITIVE,
	A_EXTRACTABLE,
	A_ALWAYS_AUTHENTICATE,
	A_PRIVATE,
	A_VERIFY,
	A_ENCRYPT,
	A_WRAP,
	A_LOCAL,
	A_NEVER_EXTRACTABLE,
	A_ALWAYS_SENSITIVE,
	/* Variable length: lengths in the first call, values in the second. */
	A_VAR0,
	A_ID = A_VAR0,
	A_LABEL,
	A_MODULUS,
	A_PUBLIC_EXPONENT,
	A_EC_PARAMS,
	A_EC_POINT,
	A_PUBLIC_KEY_INFO,
	/*
	 * Last, so that the first call can leave it out: a key's CKA_VALUE is
	 * its secret, so it is asked of certificates only (whose class the
	 * first call tells), not even its length of anything else.
	 */
	A_VALUE,
	A_N
};

/*
 * Room for a certificate's CKA_VALUE in the second call, so that it needs
 * no call of its own to learn the length; a larger one is fetched apart.
 */
#define VALUE_GUESS 8192

/*
 * No attribute we read is anywhere near this; a module that says otherwise
 * is broken or hostile, and the attribute is treated as unavailable rather
 * than allocated.
 */
#define ATTR_MAX (4u * 1024 * 1024)

/* Far more objects than any token holds: beyond it, a search that never ends. */
#define OBJECTS_MAX (1u << 20)

static const CK_ATTRIBUTE_TYPE attr_types[A_N] = {
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_CERTIFICATE_TYPE,
    CKA_MODULUS_BITS,
    CKA_SIGN,
    CKA_DECRYPT,
    CKA_DERIVE,
    CKA_UNWRAP,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_PRIVATE,
    CKA_VERIFY,
    CKA_ENCRYPT,
    CKA_WRAP,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_ID,
    CKA_LABEL,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_PUBLIC_KEY_INFO,
    CKA_VALUE,
};

static const unsigned bool_flags[A_VAR0 - A_BOOL0] = {
    P11S_KF_SIGN,
    P11S_KF_DECRYPT,
    P11S_KF_DERIVE,
    P11S_KF_UNWRAP,
    P11S_KF_SENSITIVE,
    P11S_KF_EXTRACTABLE,
    P11S_KF_ALWAYS_AUTHENTICATE,
    P11S_KF_PRIVATE,
    P11S_KF_VERIFY,
    P11S_KF_ENCRYPT,
    P11S_KF_WRAP,
    P11S_KF_LOCAL,
    P11S_KF_NEVER_EXTRACTABLE,
    P11S_KF_ALWAYS_SENSITIVE,
};

struct raw {
	CK_ATTRIBUTE a[A_N];
	CK_ULONG ulongs[A_BOOL0];
	CK_BBOOL bools[A_VAR0 - A_BOOL0];
};

static int have(const struct raw *r, int i)
{
	return r->a[i].ulValueLen != CK_UNAVAILABLE_INFORMATION &&
	       (i < A_VAR0 ? 1 : r->a[i].pValue != NULL);
}

static void raw_clear(struct raw *r)
{
	for (int i = A_VAR0; i < A_N; i++)
		free(r->a[i].pValue);
}

/* Modules that stop at the first troublesome attribute get one call per attribute. */
static void read_one_by_one(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                            CK_ATTRIBUTE *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		CK_ULONG len = a[i].ulValueLen;

		if (fl->C_GetAttributeValue(s, h, &a[i], 1) != CKR_OK && a[i].ulValueLen == len)
			a[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
	}
}

static int acceptable(CK_RV rv)
{
	return rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID;
}

/*
 * A certificate's CKA_VALUE after the second call: trimmed to its length
 * when it fitted the guess, else fetched by itself.  0: out of memory.
 */
static int read_value(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                      CK_ATTRIBUTE *v)
{
	CK_ULONG cap;

	if (v->pValue != NULL) {
		void *fit = v->ulValueLen > 0 ? realloc(v->pValue, v->ulValueLen) : NULL;

		if (v->ulValueLen == 0) {
			/* Empty: present, zero length, no buffer. */
			free(v->pValue);
			v->pValue = NULL;
		} else if (fit != NULL) {
			v->pValue = fit;
		}
		return 1;
	}
	v->ulValueLen = 0;
	if (fl->C_GetAttributeValue(s, h, v, 1) != CKR_OK ||
	    v->ulValueLen == CK_UNAVAILABLE_INFORMATION || v->ulValueLen == 0 ||
	    v->ulValueLen > ATTR_MAX) {
		v->ulValueLen = CK_UNAVAILABLE_INFORMATION;
		return 1;
	}
	cap = v->ulValueLen;
	if ((v->pValue = malloc(cap)) == NULL)
		return 0;
	/* A length beyond the buffer would have us read past it. */
	if (fl->C_GetAttributeValue(s, h, v, 1) != CKR_OK || v->ulValueLen > cap) {
		free(v->pValue);
		v->pValue = NULL;
		v->ulValueLen = CK_UNAVAILABLE_INFORMATION;
	}
	return 1;
}

/* The first call: fixed-size values into @p r, the variable ones' lengths. */
static void first_template(struct raw *r)
{
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < A_N; i++) {
		r->a[i].type = attr_types[i];
		if (i < A_BOOL0) {
			r->a[i].pValue = &r->ulongs[i];
			r->a[i].ulValueLen = sizeof(CK_ULONG);
		} else if (i < A_VAR0) {
			r->a[i].pValue = &r->bools[i - A_BOOL0];
			r->a[i].ulValueLen = sizeof(CK_BBOOL);
		}
	}
}

/* 1: read; 0: the object is gone or unreadable (skip it); -1: out of memory. */
static int read_attrs(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                      struct raw *r)
{
	CK_ATTRIBUTE sub[A_N - A_VAR0];
	CK_ULONG cap[A_N - A_VAR0];
	int idx[A_N - A_VAR0];
	size_t n = 0;
	CK_RV rv;

	first_template(r);
	rv = fl->C_GetAttributeValue(s, h, r->a, A_VALUE);
	if (!acceptable(rv))
		return 0;
	if (rv != CKR_OK && r->a[A_CLASS].ulValueLen != sizeof(CK_ULONG)) {
		first_template(r);
		read_one_by_one(fl, s, h, r->a, A_VALUE);
	}
	if (r->a[A_CLASS].ulValueLen != sizeof(CK_ULONG))
		return 0;
	r->a[A_VALUE].ulValueLen =
	    r->ulongs[A_CLASS] == CKO_CERTIFICATE ? VALUE_GUESS : CK_UNAVAILABLE_INFORMATION;
	for (int i = A_VAR0; i < A_N; i++) {
		CK_ULONG len = r->a[i].ulValueLen;

		r->a[i].pValue = NULL;
		if (len > ATTR_MAX)
			r->a[i].ulValueLen = len = CK_UNAVAILABLE_INFORMATION;
		if (len == CK_UNAVAILABLE_INFORMATION || len == 0)
			continue;
		if ((r->a[i].pValue = malloc(len)) == NULL)
			return -1;
		sub[n] = r->a[i];
		cap[n] = len;
		idx[n++] = i;
	}
	if (n > 0) {
		rv = fl->C_GetAttributeValue(s, h, sub, n);
		if (rv != CKR_OK) {
			/* A failed call may have set lengths beyond our buffers (SoftHSM does). */
			for (size_t k = 0; k < n; k++)
				sub[k].ulValueLen = cap[k];
			read_one_by_one(fl, s, h, sub, n);
		}
		for (size_t k = 0; k < n; k++) {
			r->a[idx[k]].ulValueLen = sub[k].ulValueLen;
			/* Beyond the buffer: a module saying how much a guess lacked. */
			if (sub[k].ulValueLen == CK_UNAVAILABLE_INFORMATION ||
			    sub[k].ulValueLen > cap[k]) {
				free(r->a[idx[k]].pValue);
				r->a[idx[k]].pValue = NULL;
				r->a[idx[k]].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			}
		}
	}
	if (r->ulongs[A_CLASS] == CKO_CERTIFICATE && !read_value(fl, s, h, &r->a[A_VALUE]))
		return -1;
	/* Empty values: present, zero length, no buffer. */
	for (int i = A_VAR0; i < A_N; i++)
		if (r->a[i].pValue == NULL && r->a[i].ulValueLen != CK_UNAVAILABLE_INFORMATION &&
		    r->a[i].ulValueLen != 0)
			r->a[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
	return 1;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pk = NULL;

	if (params == NULL || pc == NULL || EVP_PKEY_fromdata_init(pc) <= 0 ||
	    EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pk = NULL;
	OSSL_PARAM_free(params);
	EVP_PKEY_CTX_free(pc);
	return pk;
}

static EVP_PKEY *rsa_pub(const CK_ATTRIBUTE *n, const CK_ATTRIBUTE *e)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	BIGNUM *bn = BN_bin2bn(n->pValue, (int)n->ulValueLen, NULL);
	BIGNUM *be = BN_bin2bn(e->pValue, (int)e->ulValueLen, NULL);
	EVP_PKEY *pk = NULL;

	if (bld && bn && be && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
		pk = pkey_fromdata("RSA", bld);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	ERR_clear_error();
	return pk;
}

/* The curve of DER ECParameters holding a namedCurve OID; NID_undef otherwise. */
static int ec_params_nid(const CK_ATTRIBUTE *p)
{
	const unsigned char *d = p->pValue;
	ASN1_OBJECT *obj = d2i_ASN1_OBJECT(NULL, &d, (long)p->ulValueLen);
	int nid = obj ? OBJ_obj2nid(obj) : NID_undef;

	ASN1_OBJECT_free(obj);
	ERR_clear_error();
	return nid;
}

static EVP_PKEY *ec_pub(int nid, const CK_ATTRIBUTE *point)
{
	const unsigned char *d = point->pValue, *pt = point->pValue;
	size_t ptlen = point->ulValueLen;
	ASN1_OCTET_STRING *os;
	OSSL_PARAM_BLD *bld;
	EVP_PKEY *pk = NULL;
	const char *group = OBJ_nid2sn(nid);

	/* CKA_EC_POINT is DER (an OCTET STRING) by the standard, raw in some modules. */
	os = d2i_ASN1_OCTET_STRING(NULL, &d, (long)point->ulValueLen);
	if (os != NULL && d == (const unsigned char *)point->pValue + point->ulValueLen) {
		pt = os->data;
		ptlen = (size_t)os->length;
	}
	bld = OSSL_PARAM_BLD_new();
	if (group && bld &&
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen))
		pk = pkey_fromdata("EC", bld);
	OSSL_PARAM_BLD_free(bld);
	ASN1_OCTET_STRING_free(os);
	ERR_clear_error();
	return pk;
}

static int set_curve(p11s_object *o, int nid)
{
	const char *name = p11i_curve_name(nid);
	EC_GROUP *g;

	if (name == NULL)
		return 1;
	if ((o->curve = strdup(name)) == NULL)
		return 0;
	g = EC_GROUP_new_by_curve_name(nid);
	if (g != NULL)
		o->key_bits = EC_GROUP_get_degree(g);
	EC_GROUP_free(g);
	ERR_clear_error();
	return 1;
}

static p11s_key_type map_key_type(CK_ULONG k)
{
	switch (k) {
	case CKK_RSA:
		return P11S_KEY_RSA;
	case CKK_EC:
		return P11S_KEY_EC;
	case CKK_EC_EDWARDS:
		return P11S_KEY_EC_EDWARDS;
	case CKK_EC_MONTGOMERY:
		return P11S_KEY_EC_MONTGOMERY;
	case CKK_DSA:
		return P11S_KEY_DSA;
	case CKK_DH:
		return P11S_KEY_DH;
	default:
		return P11S_KEY_OTHER;
	}
}

static CK_OBJECT_CLASS ck_class(p11s_object_class c)
{
	return c == P11S_OBJ_CERTIFICATE   ? CKO_CERTIFICATE
	       : c == P11S_OBJ_PRIVATE_KEY ? CKO_PRIVATE_KEY
	                                   : CKO_PUBLIC_KEY;
}

/* The URI naming exactly this object: token fields, type, id and label. */
char *p11i_object_uri_build(const p11s_object *o)
{
	CK_OBJECT_CLASS cls = ck_class(o->cls);
	P11KitUri *u = p11_kit_uri_new();
	CK_ATTRIBUTE a;
	char *s = NULL;

	if (u == NULL)
		return NULL;
	memcpy(p11_kit_uri_get_token_info(u), &o->token->info, sizeof(o->token->info));
	a.type = CKA_CLASS;
	a.pValue = &cls;
	a.ulValueLen = sizeof(cls);
	p11_kit_uri_set_attribute(u, &a);
	if (o->id_len > 0) {
		a.type = CKA_ID;
		a.pValue = o->id;
		a.ulValueLen = o->id_len;
		p11_kit_uri_set_attribute(u, &a);
	}
	if (o->label != NULL && *o->label != '\0') {
		a.type = CKA_LABEL;
		a.pValue = o->label;
		a.ulValueLen = strlen(o->label);
		p11_kit_uri_set_attribute(u, &a);
	}
	if (p11_kit_uri_format(u, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &s) != P11_KIT_URI_OK)
		s = NULL;
	p11_kit_uri_free(u);
	return s;
}

static void object_free(p11s_object *o)
{
	if (o == NULL)
		return;
	free(o->uri);
	free(o->label);
	free(o->id);
	free(o->curve);
	free(o->der);
	X509_free(o->x509);
	EVP_PKEY_free(o->pub.pkey);
	free(o);
}

int p11i_uri_match_object(P11KitUri *uri, const p11s_object *o)
{
	CK_OBJECT_CLASS cls = ck_class(o->cls);
	/* All three always: p11-kit only checks the attributes we pass. */
	CK_ATTRIBUTE a[3] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, o->id, o->id_len},
	    {CKA_LABEL, o->label, o->label ? strlen(o->label) : 0},
	};

	return p11_kit_uri_match_attributes(uri, a, 3);
}

/* 1 built (*out may be NULL for an object we skip), -1 out of memory. */
static int build_object(const p11s_token *t, CK_OBJECT_HANDLE h, struct raw *r, p11s_object **out)
{
	CK_ULONG cls = r->ulongs[A_CLASS];
	p11s_object *o;

	*out = NULL;
	if (cls == CKO_CERTIFICATE) {
		if (have(r, A_CERT_TYPE) && r->ulongs[A_CERT_TYPE] != CKC_X_509)
			return 1;
	} else if (cls != CKO_PRIVATE_KEY && cls != CKO_PUBLIC_KEY) {
		return 1;
	}
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return -1;
	o->cls = cls == CKO_CERTIFICATE   ? P11S_OBJ_CERTIFICATE
	         : cls == CKO_PRIVATE_KEY ? P11S_OBJ_PRIVATE_KEY
	                                  : P11S_OBJ_PUBLIC_KEY;
	o->handle = h;
	o->token = t;
	if (have(r, A_ID) && r->a[A_ID].ulValueLen > 0) {
		if ((o->id = malloc(r->a[A_ID].ulValueLen)) == NULL)
			goto nomem;
		memcpy(o->id, r->a[A_ID].pValue, r->a[A_ID].ulValueLen);
		o->id_len = r->a[A_ID].ulValueLen;
	}
	if (have(r, A_LABEL)) {
		o->label = p11i_strndup(r->a[A_LABEL].pValue ? r->a[A_LABEL].pValue : "",
		                        r->a[A_LABEL].ulValueLen);
		if (o->label == NULL)
			goto nomem;
	}
	if (o->cls == P11S_OBJ_CERTIFICATE) {
		/*
		 * Kept as DER, parsed on first use: d2i_X509 decodes the public
		 * key through OpenSSL 3.0's provider decoders, which cost more
		 * than everything else listing a certificate does.
		 */
		if (have(r, A_VALUE) && r->a[A_VALUE].ulValueLen > 0) {
			o->der = r->a[A_VALUE].pValue;
			o->der_len = r->a[A_VALUE].ulValueLen;
			r->a[A_VALUE].pValue = NULL;
		}
	} else {
		o->key_type =
		    have(r, A_KEY_TYPE) ? map_key_type(r->ulongs[A_KEY_TYPE]) : P11S_KEY_OTHER;
		for (int i = A_BOOL0; i < A_VAR0; i++)
			if (have(r, i) && r->bools[i - A_BOOL0])
				o->key_flags |= bool_flags[i - A_BOOL0];
		if (o->key_type == P11S_KEY_RSA) {
			if (have(r, A_MODULUS) && r->a[A_MODULUS].ulValueLen > 0) {
				BIGNUM *bn = BN_bin2bn(r->a[A_MODULUS].pValue,
				                       (int)r->a[A_MODULUS].ulValueLen, NULL);

				o->key_bits = bn ? BN_num_bits(bn) : 0;
				BN_free(bn);
			} else if (have(r, A_MODULUS_BITS)) {
				o->key_bits = (int)r->ulongs[A_MODULUS_BITS];
			}
			if (have(r, A_MODULUS) && have(r, A_PUBLIC_EXPONENT)) {
				o->pub.pkey = rsa_pub(&r->a[A_MODULUS], &r->a[A_PUBLIC_EXPONENT]);
				o->pub.from = P11S_EVIDENCE_KEY_ATTRIBUTES;
			}
		} else if (o->key_type == P11S_KEY_EC && have(r, A_EC_PARAMS)) {
			int nid = ec_params_nid(&r->a[A_EC_PARAMS]);

			if (!set_curve(o, nid))
				goto nomem;
			if (have(r, A_EC_POINT) && nid != NID_undef) {
				o->pub.pkey = ec_pub(nid, &r->a[A_EC_POINT]);
				o->pub.from = o->cls == P11S_OBJ_PUBLIC_KEY
				                  ? P11S_EVIDENCE_PUBLIC_KEY_OBJECT
				                  : P11S_EVIDENCE_KEY_ATTRIBUTES;
			}
		}
		if (o->pub.pkey == NULL && have(r, A_PUBLIC_KEY_INFO) &&
		    r->a[A_PUBLIC_KEY_INFO].ulValueLen > 0) {
			const unsigned char *d = r->a[A_PUBLIC_KEY_INFO].pValue;

			o->pub.pkey =
			    d2i_PUBKEY(NULL, &d, (long)r->a[A_PUBLIC_KEY_INFO].ulValueLen);
			o->pub.from = P11S_EVIDENCE_PUBLIC_KEY_INFO;
			ERR_clear_error();
		}
		if (o->pub.pkey == NULL)
			o->pub.from = P11S_EVIDENCE_NONE;
		else if (o->key_bits == 0)
			o->key_bits = EVP_PKEY_get_bits(o->pub.pkey);
	}
	o->uri = p11i_object_uri_build(o);
	if (o->uri == NULL)
		goto nomem;
	*out = o;
	return 1;
nomem:
	object_free(o);
	return -1;
}

static int same_id(const p11s_object *a, const p11s_object *b)
{
	return a->id_len > 0 && a->id_len == b->id_len && memcmp(a->id, b->id, a->id_len) == 0;
}

/* Certificates: the public key (parsing the certificate if not yet done), or NULL. */
static EVP_PKEY *cert_pubkey(const p11s_object *o)
{
	X509 *x = p11s_object_x509(o);
	EVP_PKEY *pk = x ? X509_get0_pubkey(x) : NULL;

	ERR_clear_error();
	return pk;
}

/* Pair the certificates among objs[0..n) (one token's) with their private keys. */
static p11s_rc pair_token(p11s_object **objs, size_t n, int keys_hidden, p11s_error *err)
{
	struct p11i_pair_candidate *cands = calloc(n ? n : 1, sizeof(*cands));
	const p11s_object **keys = calloc(n ? n : 1, sizeof(*keys));

	if (cands == NULL || keys == NULL) {
		free(cands);
		free(keys);
		return p11i_err_nomem(err);
	}
	/*
	 * A private key that shows no public half of its own (SoftHSM's EC keys
	 * carry no CKA_EC_POINT) takes it from the public key object of its id,
	 * so a key with no certificate yet (csr) can still be opened.
	 */
	for (size_t j = 0; j < n; j++) {
		p11s_object *k = objs[j];

		if (k->cls != P11S_OBJ_PRIVATE_KEY || k->pub.pkey != NULL)
			continue;
		for (size_t m = 0; m < n; m++) {
			p11s_object *p = objs[m];

			if (p->cls == P11S_OBJ_PUBLIC_KEY && same_id(p, k) && p->pub.pkey != NULL &&
			    p->key_type == k->key_type && EVP_PKEY_up_ref(p->pub.pkey)) {
				k->pub.pkey = p->pub.pkey;
				k->pub.from = P11S_EVIDENCE_PUBLIC_KEY_OBJECT;
				break;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		p11s_object *c = objs[i];
		size_t nc = 0, chosen;

		if (c->cls != P11S_OBJ_CERTIFICATE)
			continue;
		for (size_t j = 0; j < n; j++) {
			p11s_object *k = objs[j];

			if (k->cls != P11S_OBJ_PRIVATE_KEY || !same_id(c, k))
				continue;
			keys[nc] = k;
			cands[nc] = k->pub;
			/* No public half on the key itself: the public key object with its id. */
			if (cands[nc].pkey == NULL) {
				for (size_t m = 0; m < n; m++) {
					p11s_object *p = objs[m];

					if (p->cls == P11S_OBJ_PUBLIC_KEY && same_id(p, k) &&
					    p->pub.pkey != NULL && p->key_type == k->key_type) {
						cands[nc].pkey = p->pub.pkey;
						cands[nc].from = P11S_EVIDENCE_PUBLIC_KEY_OBJECT;
						break;
					}
				}
			}
			nc++;
		}
		/* Parsing the certificate only when a key may pair with it. */
		c->pairing = p11i_pair_decide(nc ? cert_pubkey(c) : NULL, cands, nc, keys_hidden,
		                              &chosen, &c->evidence);
		ERR_clear_error();
		if (chosen < nc) {
			c->candidate = keys[chosen];
			if (c->pairing == P11S_PAIR_CONFIRMED ||
			    c->pairing == P11S_PAIR_UNCONFIRMED) {
				c->paired = keys[chosen];
				if (keys[chosen]->paired == NULL ||
				    (c->pairing == P11S_PAIR_CONFIRMED &&
				     keys[chosen]->paired->pairing != P11S_PAIR_CONFIRMED))
					((p11s_object *)keys[chosen])->paired = c;
			}
		}
	}
	free(cands);
	free(keys);
	return P11S_OK;
}

/* What a listing gathers, in the order found. */
typedef P11I_VEC(p11s_object *) object_vec;
typedef P11I_VEC(CK_OBJECT_HANDLE) handle_vec;

/*
 * Append to @p h what one search with @p tmpl finds, leaving out handles
 * already in @p h (a module may ignore a template, or two searches overlap).
 */
static p11s_rc find_handles(p11s_ctx *ctx, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl,
                            handle_vec *h, p11s_error *err)
{
	CK_OBJECT_HANDLE batch[256];
	CK_ULONG got, known = h->n, returned = 0;
	CK_RV rv;

	rv = ctx->fl->C_FindObjectsInit(s, tmpl, ntmpl);
	if (rv != CKR_OK)
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_FindObjectsInit");
	for (;;) {
		rv = ctx->fl->C_FindObjects(s, batch, sizeof(batch) / sizeof(batch[0]), &got);
		if (rv != CKR_OK || got == 0)
			break;
		/* A module that claims more than the batch holds, or never stops. */
		if (got > sizeof(batch) / sizeof(batch[0])) {
			ctx->fl->C_FindObjectsFinal(s);
			return p11i_err(err, P11S_E_TOKEN,
			                "module fault: C_FindObjects returned %lu handles for a "
			                "batch of %zu",
			                (unsigned long)got, sizeof(batch) / sizeof(batch[0]));
		}
		/* What came back, not what was new: old handles can come forever. */
		returned += got;
		if (returned > OBJECTS_MAX || h->n + got > OBJECTS_MAX) {
			ctx->fl->C_FindObjectsFinal(s);
			return p11i_err(err, P11S_E_TOKEN,
			                "module fault: the object search does not end (over %u "
			                "objects)",
			                OBJECTS_MAX);
		}
		if (p11i_vec_reserve(h, got) != 0) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		for (CK_ULONG i = 0; i < got; i++) {
			CK_ULONG j = 0;

			while (j < known && h->v[j] != batch[i])
				j++;
			if (j == known)
				h->v[h->n++] = batch[i];
		}
	}
	ctx->fl->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_FindObjects");
	return P11S_OK;
}

/* More objects than this under one label: one whole-token search beats a search per id. */
#define PEER_SEARCHES_MAX 16

/*
 * The handles worth reading for @p uri: when it names an id or a label, a
 * search for those (sign and decrypt select one key by URI, and a token
 * may hold hundreds of certificates), else every object.  Pairing needs
 * every object sharing a CKA_ID with a match, whatever its class or label:
 * a search by id finds them itself; after a search by label, one search
 * per id among the matches.
 */
static p11s_rc find_for_uri(p11s_ctx *ctx, CK_SESSION_HANDLE s, P11KitUri *uri, handle_vec *h,
                            p11s_error *err)
{
	CK_ATTRIBUTE *id = uri ? p11_kit_uri_get_attribute(uri, CKA_ID) : NULL;
	CK_ATTRIBUTE *label = uri ? p11_kit_uri_get_attribute(uri, CKA_LABEL) : NULL;
	CK_ATTRIBUTE *cls = uri ? p11_kit_uri_get_attribute(uri, CKA_CLASS) : NULL;
	CK_ATTRIBUTE tmpl[2];
	CK_ULONG nt = 0, matched;
	p11s_rc rc;

	if (id != NULL && id->ulValueLen > 0)
		return find_handles(ctx, s, id, 1, h, err);
	if (label == NULL || label->ulValueLen == 0)
		return find_handles(ctx, s, NULL, 0, h, err);
	tmpl[nt++] = *label;
	if (cls != NULL)
		tmpl[nt++] = *cls;
	rc = find_handles(ctx, s, tmpl, nt, h, err);
	if (rc != P11S_OK || h->n == 0)
		return rc;
	if (h->n > PEER_SEARCHES_MAX)
		return find_handles(ctx, s, NULL, 0, h, err);
	matched = h->n;
	for (CK_ULONG i = 0; i < matched && rc == P11S_OK; i++) {
		unsigned char buf[256];
		CK_ATTRIBUTE a = {CKA_ID, buf, sizeof(buf)};

		/* An id we cannot read here: let the whole token speak for it. */
		if (ctx->fl->C_GetAttributeValue(s, h->v[i], &a, 1) != CKR_OK ||
		    a.ulValueLen > sizeof(buf))
			return find_handles(ctx, s, NULL, 0, h, err);
		if (a.ulValueLen > 0)
			rc = find_handles(ctx, s, &a, 1, h, err);
	}
	return rc;
}

/* One DER element at *p (before @p end): its whole encoding; *p moves past it. */
static int der_skip(const unsigned char **p, const unsigned char *end, const unsigned char **start,
                    size_t *total, int *tag, int *cls)
{
	const unsigned char *q = *p;
	long len;
	int r;

	if (q >= end)
		return 0;
	r = ASN1_get_object(&q, &len, tag, cls, end - q);
	/* Errors and the indefinite length (never in DER) alike. */
	if (r & 0x80 || r & 0x01 || len < 0 || len > end - q)
		return 0;
	*start = *p;
	*total = (size_t)(q + len - *p);
	*p = q + len;
	return 1;
}

/* The issuer and subject Names of a DER certificate, as encoded: no parse, no key decoding. */
static int cert_names(const unsigned char *der, size_t len, const unsigned char **iss,
                      size_t *iss_len, const unsigned char **sub, size_t *sub_len)
{
	const unsigned char *p = der, *end = der + len, *el;
	size_t n;
	long l;
	int tag, cls, r;

	/* Into Certificate, then into tbsCertificate. */
	for (int i = 0; i < 2; i++) {
		r = ASN1_get_object(&p, &l, &tag, &cls, end - p);
		if (r & 0x80 || r & 0x01 || tag != V_ASN1_SEQUENCE || l < 0 || l > end - p)
			return 0;
		end = p + l;
	}
	if (!der_skip(&p, end, &el, &n, &tag, &cls))
		return 0;
	/* [0] version, then the serial number; or the serial number first (v1). */
	if (cls == V_ASN1_CONTEXT_SPECIFIC && !der_skip(&p, end, &el, &n, &tag, &cls))
		return 0;
	return der_skip(&p, end, &el, &n, &tag, &cls) /* signature algorithm */ &&
	       der_skip(&p, end, iss, iss_len, &tag, &cls) &&
	       der_skip(&p, end, &el, &n, &tag, &cls) /* validity */ &&
	       der_skip(&p, end, sub, sub_len, &tag, &cls);
}

struct scanned {
	CK_OBJECT_HANDLE h;
	unsigned char *der;
	size_t der_len;
	unsigned char id[256];
	CK_ULONG id_len; /* CK_UNAVAILABLE_INFORMATION: none readable */
};

static void add_handle(handle_vec *h, CK_OBJECT_HANDLE o, int *ok)
{
	for (size_t i = 0; i < h->n; i++)
		if (h->v[i] == o)
			return;
	if (p11i_vec_push(h, o) != 0)
		*ok = 0;
}

/*
 * For a selection no template can express (an e-mail address lives in the
 * SAN): one search for X.509 certificates, one C_GetAttributeValue per
 * certificate for its CKA_CLASS, CKA_ID and CKA_VALUE only, @p keep
 * judging the DER.
 * Then what the kept certificates need, and nothing else: the objects
 * sharing their CKA_ID (a search by id, for pairing) and their issuers
 * among the certificates already read (names compared as encoded, which
 * is how a CA's subject is copied into what it issues), so that sign can
 * still add the token's CA certificates.  Keys and unrelated certificates
 * are never read.
 */
static p11s_rc find_by_der(p11s_ctx *ctx, CK_SESSION_HANDLE s, const struct der_filter *f,
                           handle_vec *h, p11s_error *err)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE ct = CKC_X_509;
	CK_ATTRIBUTE tmpl[2] = {{CKA_CLASS, &cls, sizeof(cls)},
	                        {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)}};
	handle_vec certs = {0};
	struct scanned *sc = NULL;
	p11s_rc rc;
	int ok = 1;

	rc = find_handles(ctx, s, tmpl, 2, &certs, err);
	if (rc != P11S_OK || certs.n == 0)
		goto out;
	sc = calloc(certs.n, sizeof(*sc));
	if (sc == NULL) {
		ok = 0;
		goto out;
	}
	for (CK_ULONG i = 0; i < certs.n && ok; i++) {
		CK_OBJECT_CLASS got = (CK_OBJECT_CLASS)-1;
		/*
		 * The class in the same call, and checked: the search asked for
		 * certificates only, and a module that ignored the template
		 * does not get its key's value kept.
		 */
		CK_ATTRIBUTE a[3] = {{CKA_CLASS, &got, sizeof(got)},
		                     {CKA_ID, sc[i].id, sizeof(sc[i].id)},
		                     {CKA_VALUE, malloc(VALUE_GUESS), VALUE_GUESS}};
		CK_RV rv;

		sc[i].h = certs.v[i];
		sc[i].id_len = CK_UNAVAILABLE_INFORMATION;
		if (a[2].pValue == NULL) {
			ok = 0;
			break;
		}
		rv = ctx->fl->C_GetAttributeValue(s, certs.v[i], a, 3);
		if (rv != CKR_OK) {
			/* A value beyond the guess, or an id we cannot read: one at a time. */
			got = (CK_OBJECT_CLASS)-1;
			a[0].ulValueLen = sizeof(got);
			a[1].ulValueLen = sizeof(sc[i].id);
			read_one_by_one(ctx->fl, s, certs.v[i], a, 2);
			free(a[2].pValue);
			a[2].pValue = NULL;
		} else if (a[2].ulValueLen > VALUE_GUESS) {
			free(a[2].pValue);
			a[2].pValue = NULL;
		}
		if (a[0].ulValueLen != sizeof(got) || got != CKO_CERTIFICATE) {
			free(a[2].pValue);
			continue;
		}
		if (!read_value(ctx->fl, s, certs.v[i], &a[2])) {
			ok = 0;
			break;
		}
		if (a[1].ulValueLen <= sizeof(sc[i].id))
			sc[i].id_len = a[1].ulValueLen;
		if (a[2].pValue != NULL && a[2].ulValueLen != CK_UNAVAILABLE_INFORMATION) {
			sc[i].der = a[2].pValue;
			sc[i].der_len = a[2].ulValueLen;
		} else {
			free(a[2].pValue);
		}
	}
	for (CK_ULONG i = 0; i < certs.n && ok && rc == P11S_OK; i++) {
		size_t cur = i;

		if (sc[i].der == NULL || !f->keep(sc[i].der, sc[i].der_len, f->arg))
			continue;
		if (sc[i].id_len != CK_UNAVAILABLE_INFORMATION && sc[i].id_len > 0) {
			CK_ATTRIBUTE id = {CKA_ID, sc[i].id, sc[i].id_len};

			rc = find_handles(ctx, s, &id, 1, h, err);
		}
		add_handle(h, sc[i].h, &ok);
		/* Up the issuer path, as far as the token has it. */
		for (int depth = 0; depth < 16 && ok; depth++) {
			const unsigned char *iss, *sub, *ciss, *csub;
			size_t il, sl, cil, csl, next = certs.n;

			if (!cert_names(sc[cur].der, sc[cur].der_len, &iss, &il, &sub, &sl) ||
			    (il == sl && memcmp(iss, sub, il) == 0))
				break;
			for (CK_ULONG j = 0; j < certs.n && next == certs.n; j++)
				if (j != cur && sc[j].der != NULL &&
				    cert_names(sc[j].der, sc[j].der_len, &ciss, &cil, &csub,
				               &csl) &&
				    csl == il && memcmp(csub, iss, il) == 0)
					next = j;
			if (next == certs.n)
				break;
			add_handle(h, sc[next].h, &ok);
			cur = next;
		}
	}
out:
	for (CK_ULONG i = 0; sc != NULL && i < certs.n; i++)
		free(sc[i].der);
	free(sc);
	free(certs.v);
	if (!ok && rc == P11S_OK)
		rc = p11i_err_nomem(err);
	return rc;
}

static p11s_rc enumerate_token_locked(p11s_ctx *ctx, const p11s_token *t, P11KitUri *uri,
                                      const struct der_filter *f, object_vec *all, int *keys_hidden,
                                      p11s_error *err)
{
	CK_SESSION_HANDLE s;
	handle_vec h = {0};
	p11s_rc rc;
	size_t first = all->n;

	rc = p11i_slot_session(ctx, t, &s, err);
	if (rc != P11S_OK)
		return rc;
	rc = f != NULL ? find_by_der(ctx, s, f, &h, err) : find_for_uri(ctx, s, uri, &h, err);
	if (rc != P11S_OK) {
		free(h.v);
		return rc;
	}
	for (CK_ULONG i = 0; i < h.n; i++) {
		struct raw r;
		p11s_object *o = NULL;
		int ok = read_attrs(ctx->fl, s, h.v[i], &r);

		if (ok > 0)
			ok = build_object(t, h.v[i], &r, &o);
		raw_clear(&r);
		if (ok < 0 || (o != NULL && p11i_vec_push(all, o) != 0)) {
			object_free(o);
			free(h.v);
			return p11i_err_nomem(err);
		}
	}
	free(h.v);
	{
		struct p11i_slot_state *st = p11i_slot_state(ctx, t->slot_id);

		*keys_hidden = (t->info.flags & CKF_LOGIN_REQUIRED) && !(st && st->logged_in);
	}
	/* No object yet on any token: v is NULL, and NULL + 0 is undefined. */
	return pair_token(all->v ? all->v + first : NULL, all->n - first, *keys_hidden, err);
}

/* The search runs on the login session, one search at a time (p11.h). */
static p11s_rc enumerate_token(p11s_ctx *ctx, const p11s_token *t, P11KitUri *uri,
                               const struct der_filter *f, object_vec *all, int *keys_hidden,
                               p11s_error *err)
{
	p11s_rc rc;

	p11i_ctx_lock(ctx);
	rc = enumerate_token_locked(ctx, t, uri, f, all, keys_hidden, err);
	p11i_ctx_unlock(ctx);
	return rc;
}

/*
 * A PIN given once (--pin-source, the URI's pin-value or pin-source)
 * would be tried on every token the URI matches, and a smartcard's PIN
 * costs a YubiKey a try.  With more than one token still to log in to
 * with it, none is logged in to and the tokens are listed, as for any
 * ambiguous selection.  A prompt names the token it asks for, so the
 * person decides token by token; a PIN pad asks for itself.
 */
static p11s_rc one_pin_one_token(p11s_ctx *ctx, const p11s_token_list *tl, P11KitUri *uri,
                                 p11s_error *err)
{
	const p11s_token **want;
	size_t n = 0;
	p11s_rc rc;

	if (ctx->pin_source == NULL && (uri == NULL || (p11_kit_uri_get_pin_value(uri) == NULL &&
	                                                p11_kit_uri_get_pin_source(uri) == NULL)))
		return P11S_OK;
	want = calloc(tl->count ? tl->count : 1, sizeof(*want));
	if (want == NULL)
		return p11i_err_nomem(err);
	for (size_t i = 0; i < tl->count; i++) {
		const p11s_token *t = tl->tokens[i];
		const struct p11i_slot_state *st;
		CK_FLAGS fl = t->info.flags;

		if (!(fl & CKF_TOKEN_INITIALIZED) || !(fl & CKF_LOGIN_REQUIRED) ||
		    (fl & CKF_PROTECTED_AUTHENTICATION_PATH))
			continue;
		st = p11i_slot_state(ctx, t->slot_id);
		if (st != NULL && st->logged_in)
			continue;
		want[n++] = t;
	}
	if (n <= 1) {
		free(want);
		return P11S_OK;
	}
	rc = p11i_err(err, P11S_E_AMBIGUOUS,
	              "%zu tokens need a login and one PIN is given (%s): it would be tried on "
	              "each; name the token in a pkcs11: URI:",
	              n, ctx->pin_source != NULL ? "--pin-source" : "the URI's pin");
	for (size_t i = 0; i < n; i++)
		p11i_err_add_candidate(err, want[i]->uri);
	free(want);
	return rc;
}

static p11s_rc enumerate(p11s_ctx *ctx, P11KitUri *uri, int login, const struct der_filter *f,
                         p11s_object_list **out, p11s_error *err)
{
	p11s_object_list *l;
	object_vec all = {0};
	p11s_rc rc = P11S_OK;
	size_t usable = 0;

	*out = NULL;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return p11i_err_nomem(err);
	rc = p11i_tokens_matching(ctx, uri, &l->tokens, err);
	if (rc != P11S_OK)
		goto done;
	if (l->tokens->count == 0) {
		char *tu = NULL;

		/* Only the token part: that is what matched nothing. */
		if (p11_kit_uri_format(
		        uri, P11_KIT_URI_FOR_TOKEN | P11_KIT_URI_FOR_SLOT | P11_KIT_URI_FOR_MODULE,
		        &tu) != P11_KIT_URI_OK)
			tu = NULL;
		if (tu == NULL || strcmp(tu, "pkcs11:") == 0)
			rc = p11i_err(err, P11S_E_TOKEN_ABSENT, "no token present (module %s)",
			              ctx->module_path);
		else {
			char *shown = p11i_uri_redact(tu);

			rc = p11i_err(err, P11S_E_NOT_FOUND, "no token matches %s",
			              shown ? shown : "");
			free(shown);
		}
		free(tu);
		goto done;
	}
	if (login) {
		p11i_ctx_lock(ctx);
		rc = one_pin_one_token(ctx, l->tokens, uri, err);
		p11i_ctx_unlock(ctx);
		if (rc != P11S_OK)
			goto done;
	}
	for (size_t i = 0; i < l->tokens->count; i++) {
		const p11s_token *t = l->tokens->tokens[i];
		int hidden;

		/* Uninitialised tokens hold nothing; say so only if nothing else matched. */
		if (!(t->info.flags & CKF_TOKEN_INITIALIZED))
			continue;
		usable++;
		if (login) {
			rc = p11i_login(ctx, t, uri, err);
			if (rc != P11S_OK)
				goto done;
		}
		rc = enumerate_token(ctx, t, uri, f, &all, &hidden, err);
		if (rc != P11S_OK)
			goto done;
	}
	if (usable == 0) {
		if (l->tokens->count == 1)
			rc = p11i_err_uninitialised(err, l->tokens->tokens[0]);
		else
			rc = p11i_err(err, P11S_E_TOKEN_UNINITIALIZED,
			              "none of the %zu matching tokens is initialised",
			              l->tokens->count);
		goto done;
	}
done:
	l->all = all.v;
	l->all_count = all.n;
	if (rc != P11S_OK) {
		p11s_object_list_free(l);
		return rc;
	}
	*out = l;
	return P11S_OK;
}

p11s_rc p11i_objects_enumerate(p11s_ctx *ctx, P11KitUri *uri, int login, p11s_object_list **out,
                               p11s_error *err)
{
	return enumerate(ctx, uri, login, NULL, out, err);
}

p11s_rc p11i_objects_enumerate_der(p11s_ctx *ctx, P11KitUri *uri, int login,
                                   const struct der_filter *f, p11s_object_list **out,
                                   p11s_error *err)
{
	return enumerate(ctx, uri, login, f, out, err);
}

static int wanted(const p11s_objects_opts *opts, const p11s_object *o)
{
	if (opts == NULL || (!opts->certificates && !opts->private_keys && !opts->public_keys))
		return 1;
	return (o->cls == P11S_OBJ_CERTIFICATE && opts->certificates) ||
	       (o->cls == P11S_OBJ_PRIVATE_KEY && opts->private_keys) ||
	       (o->cls == P11S_OBJ_PUBLIC_KEY && opts->public_keys);
}

/* Token by token, certificates first, then private and public keys, by id and label. */
static int view_cmp(const void *pa, const void *pb, void *arg)
{
	const p11s_object *a = *(p11s_object *const *)pa, *b = *(p11s_object *const *)pb;
	const p11s_token_list *tl = arg;
	size_t ta = 0, tb = 0, n;
	int r;

	for (size_t i = 0; i < tl->count; i++) {
		if (tl->tokens[i] == a->token)
			ta = i;
		if (tl->tokens[i] == b->token)
			tb = i;
	}
	if (ta != tb)
		return ta < tb ? -1 : 1;
	if (a->cls != b->cls)
		return a->cls < b->cls ? -1 : 1;
	n = a->id_len < b->id_len ? a->id_len : b->id_len;
	r = n ? memcmp(a->id, b->id, n) : 0;
	if (r != 0 || a->id_len != b->id_len)
		return r != 0 ? r : (a->id_len < b->id_len ? -1 : 1);
	r = strcmp(a->label ? a->label : "", b->label ? b->label : "");
	if (r != 0)
		return r;
	return a->handle < b->handle ? -1 : a->handle > b->handle;
}

p11s_rc p11i_object_list_filter(p11s_object_list *l, P11KitUri *uri, const p11s_objects_opts *opts,
                                p11s_error *err)
{
	free(l->objects);
	l->count = 0;
	l->objects = calloc(l->all_count ? l->all_count : 1, sizeof(*l->objects));
	if (l->objects == NULL)
		return p11i_err_nomem(err);
	for (size_t i = 0; i < l->all_count; i++)
		if ((uri == NULL || p11i_uri_match_object(uri, l->all[i])) &&
		    wanted(opts, l->all[i]))
			l->objects[l->count++] = l->all[i];
	qsort_r(l->objects, l->count, sizeof(*l->objects), view_cmp, l->tokens);
	return P11S_OK;
}

static int uri_names_objects(P11KitUri *u)
{
	static const CK_ATTRIBUTE_TYPE t[] = {CKA_CLASS, CKA_ID, CKA_LABEL};

	for (size_t i = 0; i < 3; i++)
		if (p11_kit_uri_get_attribute(u, t[i]) != NULL)
			return 1;
	return 0;
}

p11s_rc p11s_objects(p11s_ctx *ctx, const char *uri, const p11s_objects_opts *opts,
                     p11s_object_list **out, p11s_error *err)
{
	P11KitUri *u;
	p11s_rc rc;

	*out = NULL;
	rc = p11i_uri_parse(uri, &u, err);
	if (rc != P11S_OK)
		return rc;
	rc = p11i_objects_enumerate(ctx, u, opts && opts->login, out, err);
	if (rc == P11S_OK)
		rc = p11i_object_list_filter(*out, u, opts, err);
	/* A URI naming objects that are not there is an error, not an empty list. */
	if (rc == P11S_OK && (*out)->count == 0 && uri_names_objects(u)) {
		char *shown = p11i_uri_redact(uri);

		rc = p11i_err(err, P11S_E_NOT_FOUND, "no object matches %s%s", shown ? shown : "",
		              opts && opts->login
		                  ? ""
		                  : " (private objects, such as private keys, are only "
		                    "visible after logging in: --login)");
		free(shown);
	}
	p11_kit_uri_free(u);
	if (rc != P11S_OK) {
		p11s_object_list_free(*out);
		*out = NULL;
	}
	return rc;
}

void p11s_object_list_free(p11s_object_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->all_count; i++)
		object_free(list->all[i]);
	free(list->all);
	free(list->objects);
	p11s_token_list_free(list->tokens);
	free(list);
}

size_t p11s_object_list_count(const p11s_object_list *list)
{
	return list ? list->count : 0;
}

const p11s_object *p11s_object_list_get(const p11s_object_list *list, size_t i)
{
	return list && i < list->count ? list->objects[i] : NULL;
}

p11s_object_class p11s_object_get_class(const p11s_object *o)
{
	return o->cls;
}

const char *p11s_object_uri(const p11s_object *o)
{
	return o->uri;
}

const char *p11s_object_label(const p11s_object *o)
{
	return o->label;
}

const unsigned char *p11s_object_id(const p11s_object *o, size_t *len)
{
	if (len != NULL)
		*len = o->id_len;
	return o->id_len ? o->id : NULL;
}

const p11s_token *p11s_object_token(const p11s_object *o)
{
	return o->token;
}

X509 *p11s_object_x509(const p11s_object *o)
{
	/* Objects are made non-const by their list; only the cache is written here. */
	p11s_object *mut = (p11s_object *)o;

	if (o->cls == P11S_OBJ_CERTIFICATE && o->x509 == NULL && !o->x509_tried) {
		const unsigned char *d = o->der;

		mut->x509_tried = 1;
		if (d != NULL)
			mut->x509 = d2i_X509(NULL, &d, (long)o->der_len);
		ERR_clear_error();
	}
	return o->x509;
}

const unsigned char *p11s_object_value(const p11s_object *o, size_t *len)
{
	if (len != NULL)
		*len = o->der != NULL ? o->der_len : 0;
	return o->der;
}

p11s_pairing p11s_object_pairing(const p11s_object *o)
{
	return o->pairing;
}

p11s_pair_evidence p11s_object_pairing_evidence(const p11s_object *o)
{
	return o->evidence;
}

const p11s_object *p11s_object_private_key(const p11s_object *o)
{
	return o->cls == P11S_OBJ_CERTIFICATE ? o->paired : NULL;
}

const p11s_object *p11s_object_id_key(const p11s_object *o)
{
	return o->cls == P11S_OBJ_CERTIFICATE ? o->candidate : NULL;
}

const p11s_object *p11s_object_certificate(const p11s_object *o)
{
	return o->cls == P11S_OBJ_PRIVATE_KEY ? o->paired : NULL;
}

p11s_key_type p11s_object_key_type(const p11s_object *o)
{
	return o->key_type;
}

int p11s_object_key_bits(const p11s_object *o)
{
	return o->key_bits;
}

const char *p11s_object_key_curve(const p11s_object *o)
{
	return o->curve;
}

unsigned p11s_object_key_flags(const p11s_object *o)
{
	return o->key_flags;
}

const char *p11s_key_type_name(p11s_key_type t)
{
	switch (t) {
	case P11S_KEY_RSA:
		return "RSA";
	case P11S_KEY_EC:
		return "EC";
	case P11S_KEY_EC_EDWARDS:
		return "EC_EDWARDS";
	case P11S_KEY_EC_MONTGOMERY:
		return "EC_MONTGOMERY";
	case P11S_KEY_DSA:
		return "DSA";
	case P11S_KEY_DH:
		return "DH";
	default:
		return "other";
	}
}

const char *p11s_pairing_name(p11s_pairing p)
{
	switch (p) {
	case P11S_PAIR_CONFIRMED:
		return "confirmed";
	case P11S_PAIR_MISMATCH:
		return "mismatch";
	case P11S_PAIR_UNCONFIRMED:
		return "unconfirmed";
	case P11S_PAIR_NOT_LOGGED_IN:
		return "not-logged-in";
	default:
		return "none";
	}
}

const char *p11s_pair_evidence_name(p11s_pair_evidence e)
{
	switch (e) {
	case P11S_EVIDENCE_KEY_ATTRIBUTES:
		return "key-attributes";
	case P11S_EVIDENCE_PUBLIC_KEY_INFO:
		return "public-key-info";
	case P11S_EVIDENCE_PUBLIC_KEY_OBJECT:
		return "public-key-object";
	default:
		return "none";
	}
}

const char *p11s_object_class_name(p11s_object_class c)
{
	switch (c) {
	case P11S_OBJ_CERTIFICATE:
		return "certificate";
	case P11S_OBJ_PRIVATE_KEY:
		return "private-key";
	default:
		return "public-key";
	}
}
