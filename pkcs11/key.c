#include <stdlib.h>
#include <string.h>

#include "p11.h"

struct p11s_key {
	p11s_ctx *ctx;
	CK_SLOT_ID slot_id;
	char *token_label;
	EVP_PKEY *pkey;
	char *uri;
	p11s_key_type type;
	int bits;
	unsigned flags;
};

void p11s_key_free(p11s_key *key)
{
	if (key == NULL)
		return;
	EVP_PKEY_free(key->pkey);
	free(key->uri);
	free(key->token_label);
	free(key);
}

EVP_PKEY *p11s_key_pkey(const p11s_key *key)
{
	return key->pkey;
}

const char *p11s_key_uri(const p11s_key *key)
{
	return key->uri;
}

p11s_key_type p11s_key_get_type(const p11s_key *key)
{
	return key->type;
}

int p11s_key_bits(const p11s_key *key)
{
	return key->bits;
}

static int lp_key_is(const PKCS11_KEY *k, const p11s_object *o)
{
	const char *label = k->label ? k->label : "";

	return k->isPrivate && k->id_len == o->id_len &&
	       (o->id_len == 0 || memcmp(k->id, o->id, o->id_len) == 0) &&
	       strcmp(label, o->label ? o->label : "") == 0;
}

p11s_rc p11s_key_open(p11s_ctx *ctx, const p11s_object *o, p11s_key **out, p11s_error *err)
{
	PKCS11_SLOT *slot;
	PKCS11_KEY *keys = NULL, *match = NULL;
	unsigned int n = 0, nmatch = 0;
	p11s_key *k;
	p11s_rc rc;

	*out = NULL;
	if (o == NULL || o->cls != P11S_OBJ_PRIVATE_KEY)
		return p11s_err(err, P11S_E_USAGE, "%s is not a private key",
		                o ? o->uri : "(nothing)");
	/* Our login, with its PIN policy, before libp11 touches the slot. */
	rc = p11s_login(ctx, o->token, NULL, err);
	if (rc != P11S_OK)
		return rc;
	rc = p11s_lp_slot(ctx, o->token, &slot, err);
	if (rc != P11S_OK)
		return rc;
	if (PKCS11_enumerate_keys(slot->token, &keys, &n) != 0)
		return p11s_err_ossl(err, P11S_E_TOKEN, "libp11 cannot list the keys of token '%s'",
		                     o->token->label);
	for (unsigned int i = 0; i < n; i++) {
		if (lp_key_is(&keys[i], o)) {
			match = &keys[i];
			nmatch++;
		}
	}
	if (nmatch == 0)
		return p11s_err(err, P11S_E_NOT_FOUND, "the key %s is no longer on the token",
		                o->uri);
	if (nmatch > 1)
		return p11s_err(err, P11S_E_AMBIGUOUS,
		                "%u private keys on token '%s' share the id and label of %s",
		                nmatch, o->token->label, o->uri);
	k = calloc(1, sizeof(*k));
	if (k == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	k->ctx = ctx;
	k->slot_id = o->token->slot_id;
	k->type = o->key_type;
	k->bits = o->key_bits;
	k->flags = o->key_flags;
	k->uri = strdup(o->uri);
	k->token_label = strdup(o->token->label);
	if (k->uri == NULL || k->token_label == NULL) {
		p11s_key_free(k);
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	}
	k->pkey = PKCS11_get_private_key(match);
	if (k->pkey == NULL) {
		p11s_key_free(k);
		return p11s_err_ossl(err, P11S_E_TOKEN, "libp11 cannot use the key %s", o->uri);
	}
	*out = k;
	return P11S_OK;
}

static const struct op_need {
	p11s_op op;
	p11s_key_type type;
	CK_MECHANISM_TYPE mech;
	const char *mech_name;
	CK_FLAGS flag;
	const char *flag_name;
	unsigned key_flag;
	const char *key_attr;
	const char *what;
} op_needs[] = {
    {P11S_OP_SIGN_RSA_PKCS1, P11S_KEY_RSA, CKM_RSA_PKCS, "CKM_RSA_PKCS", CKF_SIGN, "CKF_SIGN",
     P11S_KF_SIGN, "CKA_SIGN", "RSA PKCS#1 v1.5 signing"},
    {P11S_OP_SIGN_RSA_PSS, P11S_KEY_RSA, CKM_RSA_X_509, "CKM_RSA_X_509", CKF_SIGN, "CKF_SIGN",
     P11S_KF_SIGN, "CKA_SIGN",
     "RSA-PSS signing (PSS padding done by OpenSSL, raw RSA on the token)"},
    {P11S_OP_SIGN_ECDSA, P11S_KEY_EC, CKM_ECDSA, "CKM_ECDSA", CKF_SIGN, "CKF_SIGN", P11S_KF_SIGN,
     "CKA_SIGN", "ECDSA signing"},
    {P11S_OP_DECRYPT_RSA_PKCS1, P11S_KEY_RSA, CKM_RSA_PKCS, "CKM_RSA_PKCS", CKF_DECRYPT,
     "CKF_DECRYPT", P11S_KF_DECRYPT, "CKA_DECRYPT", "RSA PKCS#1 v1.5 decryption"},
    {P11S_OP_DECRYPT_RSA_OAEP, P11S_KEY_RSA, CKM_RSA_X_509, "CKM_RSA_X_509", CKF_DECRYPT,
     "CKF_DECRYPT", P11S_KF_DECRYPT, "CKA_DECRYPT",
     "RSA-OAEP decryption (OAEP padding checked by OpenSSL, raw RSA on the token)"},
    {P11S_OP_DERIVE_ECDH, P11S_KEY_EC, CKM_ECDH1_DERIVE, "CKM_ECDH1_DERIVE", CKF_DERIVE,
     "CKF_DERIVE", P11S_KF_DERIVE, "CKA_DERIVE", "ECDH key agreement"},
};

/*
 * 1 when the token lists @p mech, 0 when it does not, -1 when it cannot say.
 * Some modules (SoftHSM's slots.mechanisms) leave a mechanism out of the
 * list and still answer C_GetMechanismInfo for it: the list is what the
 * token offers.
 */
static int mechanism_listed(const p11s_key *key, CK_MECHANISM_TYPE mech)
{
	CK_FUNCTION_LIST_PTR fl = key->ctx->fl;
	CK_MECHANISM_TYPE *list;
	CK_ULONG n = 0, cap;
	int found = 0;

	if (fl->C_GetMechanismList(key->slot_id, NULL, &n) != CKR_OK || n == 0)
		return -1;
	cap = n;
	list = calloc(n, sizeof(*list));
	if (list == NULL)
		return -1;
	if (fl->C_GetMechanismList(key->slot_id, list, &n) != CKR_OK) {
		free(list);
		return -1;
	}
	/* More than the room given: a broken module; what it wrote is all we have. */
	if (n > cap)
		n = cap;
	for (CK_ULONG i = 0; i < n && !found; i++)
		found = list[i] == mech;
	free(list);
	return found;
}

p11s_rc p11s_key_check_op(const p11s_key *key, p11s_op op, const char **mechanism, p11s_error *err)
{
	const struct op_need *need = NULL;
	CK_MECHANISM_INFO mi;
	CK_RV rv;

	if (mechanism != NULL)
		*mechanism = NULL;
	for (size_t i = 0; i < sizeof(op_needs) / sizeof(op_needs[0]); i++)
		if (op_needs[i].op == op)
			need = &op_needs[i];
	if (need == NULL)
		return p11s_err(err, P11S_E_USAGE, "unknown operation %d", (int)op);
	if (key->type != need->type)
		return p11s_err(err, P11S_E_MECHANISM, "%s needs an %s key; %s is %s", need->what,
		                p11s_key_type_name(need->type), key->uri,
		                p11s_key_type_name(key->type));
	if (!(key->flags & need->key_flag))
		return p11s_err(err, P11S_E_MECHANISM,
		                "the key %s does not allow %s (its %s is false)", key->uri,
		                need->what, need->key_attr);
	rv = key->ctx->fl->C_GetMechanismInfo(key->slot_id, need->mech, &mi);
	if (rv == CKR_MECHANISM_INVALID || (rv == CKR_OK && mechanism_listed(key, need->mech) == 0))
		return p11s_err(err, P11S_E_MECHANISM, "token '%s' has no %s, needed for %s",
		                key->token_label, need->mech_name, need->what);
	if (rv != CKR_OK)
		return p11s_ckr(err, rv, P11S_E_TOKEN, "C_GetMechanismInfo");
	if (!(mi.flags & need->flag))
		return p11s_err(err, P11S_E_MECHANISM,
		                "token '%s' has %s but not for %s (no %s), needed for %s",
		                key->token_label, need->mech_name,
		                need->flag == CKF_SIGN      ? "signing"
		                : need->flag == CKF_DECRYPT ? "decryption"
		                                            : "derivation",
		                need->flag_name, need->what);
	if (key->bits > 0 && mi.ulMaxKeySize > 0) {
		CK_ULONG bits = (CK_ULONG)key->bits, bytes = (bits + 7) / 8;
		int fits = bits >= mi.ulMinKeySize && bits <= mi.ulMaxKeySize;

		/* Some modules give EC sizes in bytes rather than bits. */
		if (!fits && need->type == P11S_KEY_EC)
			fits = bytes >= mi.ulMinKeySize && bytes <= mi.ulMaxKeySize;
		if (!fits)
			return p11s_err(
			    err, P11S_E_MECHANISM,
			    "token '%s' does %s with keys of %lu to %lu bits; %s has %d",
			    key->token_label, need->mech_name, (unsigned long)mi.ulMinKeySize,
			    (unsigned long)mi.ulMaxKeySize, key->uri, key->bits);
	}
	if (mechanism != NULL)
		*mechanism = need->mech_name;
	return P11S_OK;
}
