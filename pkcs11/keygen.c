/*
 * p11smime keygen: a key pair made on the token by C_GenerateKeyPair, so
 * the private key has never existed anywhere else (CKA_LOCAL true,
 * CKA_NEVER_EXTRACTABLE true on tokens that keep those).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/objects.h>

#include "p11.h"
#include "p11smime/lifecycle.h"
#include "write.h"

static const struct keytype {
	const char *name;
	int is_ec;
	int size; /* RSA bits, or the curve's NID */
	int bits; /* RSA modulus or EC field size, for the mechanism's range */
} keytypes[] = {
    {"rsa:2048", 0, 2048, 2048},         {"rsa:3072", 0, 3072, 3072},
    {"rsa:4096", 0, 4096, 4096},         {"ec:P-256", 1, NID_X9_62_prime256v1, 256},
    {"ec:P-384", 1, NID_secp384r1, 384}, {"ec:P-521", 1, NID_secp521r1, 521},
};

static const struct keytype *keytype_find(const char *type)
{
	for (size_t i = 0; type != NULL && i < sizeof(keytypes) / sizeof(keytypes[0]); i++)
		if (strcasecmp(type, keytypes[i].name) == 0)
			return &keytypes[i];
	return NULL;
}

p11s_rc p11s_keygen_type_parse(const char *type, int *is_ec, int *size, p11s_error *err)
{
	const struct keytype *k = keytype_find(type);

	if (k == NULL)
		return p11i_err(err, P11S_E_USAGE,
		                "key type '%s' is not one of rsa:2048, rsa:3072, rsa:4096, "
		                "ec:P-256, ec:P-384, ec:P-521",
		                type ? type : "");
	if (is_ec != NULL)
		*is_ec = k->is_ec;
	if (size != NULL)
		*size = k->size;
	return P11S_OK;
}

void p11s_keygen_result_free(p11s_keygen_result *r)
{
	if (r == NULL)
		return;
	free(r->private_uri);
	free(r->public_uri);
	free(r->id);
	free(r->label);
	free(r->type);
	free(r->mechanism);
	free(r->token_uri);
	free(r);
}

/* The token can generate this key: mechanism listed, CKF_GENERATE_KEY_PAIR, size in range. */
static p11s_rc check_mechanism(p11s_ctx *ctx, const p11s_token *t, const struct keytype *k,
                               p11s_error *err)
{
	CK_MECHANISM_TYPE mech = k->is_ec ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN;
	const char *name = k->is_ec ? "CKM_EC_KEY_PAIR_GEN" : "CKM_RSA_PKCS_KEY_PAIR_GEN";
	const char *what = k->is_ec ? "EC" : "RSA";
	CK_MECHANISM_INFO mi;
	CK_RV rv;
	int listed = p11i_mech_listed(ctx, t->slot_id, mech);

	rv = ctx->fl->C_GetMechanismInfo(t->slot_id, mech, &mi);
	if (listed == 0 || rv == CKR_MECHANISM_INVALID)
		return p11i_err(err, P11S_E_MECHANISM,
		                "token '%s' has no %s: it cannot generate %s keys", t->label, name,
		                what);
	if (rv != CKR_OK)
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_GetMechanismInfo");
	if (!(mi.flags & CKF_GENERATE_KEY_PAIR))
		return p11i_err(err, P11S_E_MECHANISM,
		                "token '%s' has %s but not for key pair generation (no "
		                "CKF_GENERATE_KEY_PAIR)",
		                t->label, name);
	if (mi.ulMaxKeySize > 0) {
		CK_ULONG bits = (CK_ULONG)k->bits, bytes = (bits + 7) / 8;
		int fits = bits >= mi.ulMinKeySize && bits <= mi.ulMaxKeySize;

		/* Some modules give EC sizes in bytes. */
		if (!fits && k->is_ec)
			fits = bytes >= mi.ulMinKeySize && bytes <= mi.ulMaxKeySize;
		if (!fits)
			return p11i_err(err, P11S_E_MECHANISM,
			                "token '%s' generates %s keys of %lu to %lu bits with %s; "
			                "%s needs %d",
			                t->label, what, (unsigned long)mi.ulMinKeySize,
			                (unsigned long)mi.ulMaxKeySize, name, k->name, k->bits);
	}
	return P11S_OK;
}

p11s_rc p11s_keygen(p11s_ctx *ctx, const p11s_keygen_opts *opts, p11s_keygen_result **out,
                    p11s_error *err)
{
	const struct keytype *k;
	p11s_token_list *tl = NULL;
	const p11s_token *t;
	p11s_keygen_result *r = NULL;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	unsigned char id[64];
	size_t id_len = 0;
	unsigned char *params = NULL;
	int params_len = 0;
	p11s_rc rc;
	CK_RV rv;
	p11s_keygen_opts defaults = {0};

	*out = NULL;
	if (opts == NULL)
		opts = &defaults;
	rc = p11s_keygen_type_parse(opts->type, NULL, NULL, err);
	if (rc != P11S_OK)
		return rc;
	k = keytype_find(opts->type);
	if (opts->label == NULL || *opts->label == '\0')
		return p11i_err(err, P11S_E_USAGE, "a key pair needs a --label");
	if (opts->id != NULL) {
		rc = p11i_hex_parse(opts->id, id, sizeof(id), &id_len, err);
		if (rc != P11S_OK)
			return rc;
	}
	rc = p11s_token_select(ctx, opts->token, &tl, &t, err);
	if (rc != P11S_OK)
		return rc;
	/* Before the login: a token that cannot do it needs no PIN to say so. */
	rc = check_mechanism(ctx, t, k, err);
	if (rc == P11S_OK)
		rc = p11s_token_login(ctx, t, opts->token, err);
	if (rc == P11S_OK)
		rc = p11i_rw_session(ctx, t, &s, err);
	if (rc == P11S_OK && id_len == 0)
		rc = p11i_pick_id(ctx, s, id, &id_len, err);
	if (rc == P11S_OK)
		rc = p11i_check_unused(ctx, t, s, id, id_len, opts->label, err);
	if (rc != P11S_OK)
		goto out;
	if (k->is_ec) {
		ASN1_OBJECT *obj = OBJ_nid2obj(k->size);

		params_len = obj ? i2d_ASN1_OBJECT(obj, &params) : 0;
		if (params_len <= 0) {
			rc = p11i_err(err, P11S_E_INTERNAL, "cannot encode the curve of %s",
			              k->name);
			goto out;
		}
	}
	{
		CK_OBJECT_CLASS pub_cls = CKO_PUBLIC_KEY, priv_cls = CKO_PRIVATE_KEY;
		CK_KEY_TYPE kt = k->is_ec ? CKK_EC : CKK_RSA;
		CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
		CK_ULONG bits = (CK_ULONG)k->size;
		CK_BYTE e[] = {0x01, 0x00, 0x01};
		CK_MECHANISM mech = {k->is_ec ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN,
		                     NULL, 0};
		CK_ATTRIBUTE pub[12] = {
		    {CKA_CLASS, &pub_cls, sizeof(pub_cls)},
		    {CKA_KEY_TYPE, &kt, sizeof(kt)},
		    {CKA_TOKEN, &yes, sizeof(yes)},
		    {CKA_PRIVATE, &no, sizeof(no)},
		    {CKA_VERIFY, &yes, sizeof(yes)},
		    {CKA_ID, id, id_len},
		    {CKA_LABEL, (void *)opts->label, strlen(opts->label)},
		};
		CK_ATTRIBUTE priv[14] = {
		    {CKA_CLASS, &priv_cls, sizeof(priv_cls)},
		    {CKA_KEY_TYPE, &kt, sizeof(kt)},
		    {CKA_TOKEN, &yes, sizeof(yes)},
		    {CKA_PRIVATE, &yes, sizeof(yes)},
		    {CKA_SENSITIVE, &yes, sizeof(yes)},
		    {CKA_EXTRACTABLE, &no, sizeof(no)},
		    {CKA_SIGN, &yes, sizeof(yes)},
		    {CKA_ID, id, id_len},
		    {CKA_LABEL, (void *)opts->label, strlen(opts->label)},
		};
		CK_ULONG npub = 7, npriv = 9;
		CK_OBJECT_HANDLE hpub, hpriv;

		/* Explicit falses: some tokens (SoftHSM) default every usage to true. */
		if (k->is_ec) {
			pub[npub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, params, (CK_ULONG)params_len};
			pub[npub++] = (CK_ATTRIBUTE){CKA_ENCRYPT, &no, sizeof(no)};
			pub[npub++] = (CK_ATTRIBUTE){CKA_WRAP, &no, sizeof(no)};
			priv[npriv++] = (CK_ATTRIBUTE){CKA_DERIVE, &yes, sizeof(yes)};
			priv[npriv++] = (CK_ATTRIBUTE){CKA_DECRYPT, &no, sizeof(no)};
			priv[npriv++] = (CK_ATTRIBUTE){CKA_UNWRAP, &no, sizeof(no)};
		} else {
			pub[npub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
			pub[npub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, e, sizeof(e)};
			pub[npub++] = (CK_ATTRIBUTE){CKA_ENCRYPT, &yes, sizeof(yes)};
			pub[npub++] = (CK_ATTRIBUTE){CKA_WRAP, &yes, sizeof(yes)};
			priv[npriv++] = (CK_ATTRIBUTE){CKA_DECRYPT, &yes, sizeof(yes)};
			priv[npriv++] = (CK_ATTRIBUTE){CKA_UNWRAP, &yes, sizeof(yes)};
			priv[npriv++] = (CK_ATTRIBUTE){CKA_DERIVE, &no, sizeof(no)};
		}
		rv = ctx->fl->C_GenerateKeyPair(s, &mech, pub, npub, priv, npriv, &hpub, &hpriv);
		if (rv != CKR_OK) {
			rc = p11i_ckr(err, rv, P11S_E_TOKEN, "C_GenerateKeyPair");
			goto out;
		}
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL ||
	    (r->private_uri =
	         p11i_new_object_uri(t, P11S_OBJ_PRIVATE_KEY, id, id_len, opts->label)) == NULL ||
	    (r->public_uri =
	         p11i_new_object_uri(t, P11S_OBJ_PUBLIC_KEY, id, id_len, opts->label)) == NULL ||
	    (r->id = p11i_hex(id, id_len)) == NULL || (r->label = strdup(opts->label)) == NULL ||
	    (r->type = strdup(k->name)) == NULL ||
	    (r->mechanism =
	         strdup(k->is_ec ? "CKM_EC_KEY_PAIR_GEN" : "CKM_RSA_PKCS_KEY_PAIR_GEN")) == NULL ||
	    (r->token_uri = strdup(t->uri)) == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	*out = r;
	r = NULL;
out:
	if (s != CK_INVALID_HANDLE)
		ctx->fl->C_CloseSession(s);
	p11s_keygen_result_free(r);
	OPENSSL_free(params);
	p11s_token_list_free(tl);
	return rc;
}
