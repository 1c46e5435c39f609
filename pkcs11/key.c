#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

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
	struct p11i_keyref *ref; /* owned by pkey (ex_data) */
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

/*
 * The EVP_PKEY of an on-token key: an RSA or EC key holding only the public
 * half, whose RSA_METHOD / EC_KEY_METHOD sends every private operation to
 * the token through our own session and the object handle the enumeration
 * found.  Opening a key thus costs no search: libp11 (which this replaced)
 * listed every private key of the token again, a second C_FindObjectsInit
 * over all objects, which on SoftHSM costs as much as the signature.
 *
 * Mechanisms (docs/design.md): CKM_RSA_PKCS for PKCS#1 v1.5, the token's
 * CKM_RSA_PKCS_PSS / CKM_RSA_PKCS_OAEP when offered (see pk_sign below),
 * else CKM_RSA_X_509 for OpenSSL's own PSS and OAEP padding, CKM_ECDSA,
 * CKM_ECDH1_DERIVE.  OpenSSL 3 treats keys with a method other
 * than its own as legacy ("foreign") keys and calls these methods itself.
 *
 * Threads: a key (and so a signer) may be used by several threads at once.
 * Each operation borrows its own session from the slot's pool
 * (p11i_op_session), never the login session, and nothing in the keyref
 * changes after p11s_key_check_op(); the mechanism that ran is the calling
 * thread's (p11s_key_last_mechanism).
 */
struct p11i_keyref {
	p11s_ctx *ctx;
	struct p11i_slot_state *slot; /* its session pool */
	unsigned long serial;         /* tells keys apart in last_op (an address may be reused) */
	CK_OBJECT_HANDLE handle;
	int always_authenticate;
	int protected_path; /* a PIN pad: the context-specific login takes no PIN */
	/* p11s_key_check_op found CKM_RSA_PKCS_PSS / CKM_RSA_PKCS_OAEP usable. */
	int pss_native, oaep_native;
	int can_native; /* the key carries pk_engine */
};

static atomic_ulong keyref_serial;

/*
 * The mechanism of the last C_Sign/C_Decrypt that worked, per thread: with
 * threads sharing a key there is no one "last" operation of the key, but
 * the thread that just signed wants to report its own.
 */
static _Thread_local struct {
	unsigned long serial;
	const char *mech;
} last_op;

/*
 * The last context-specific login that failed in this thread, in words:
 * OpenSSL's CMS code clears the key's error and goes on with a random key,
 * so decrypt asks here (p11s_key_login_failure()).  Per thread, as last_op.
 */
static _Thread_local struct {
	unsigned long serial;
	p11s_rc rc;
	char msg[512];
} login_fail;

static void set_last(const struct p11i_keyref *r, const char *mech)
{
	last_op.serial = r->serial;
	last_op.mech = mech;
}

static int rsa_idx = -1, ec_idx = -1;
static RSA_METHOD *rsa_meth;
static EC_KEY_METHOD *ec_meth;
static CRYPTO_ONCE meth_once = CRYPTO_ONCE_STATIC_INIT;

static void ref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct p11i_keyref *r = ptr;

	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(r);
}

static void token_error(const char *what, CK_RV rv)
{
	ERR_raise_data(ERR_LIB_USER, ERR_R_OPERATION_FAIL, "token: %s failed: %s (0x%lx)", what,
	               p11i_ckr_name(rv), (unsigned long)rv);
}

/*
 * After an *Init on a CKA_ALWAYS_AUTHENTICATE key: the PIN asked for again
 * (login.c), its failure in words on OpenSSL's queue.
 */
static CK_RV context_login(const struct p11i_keyref *r, CK_SESSION_HANDLE s)
{
	p11s_error *e;
	CK_RV rv = CKR_OK;

	if (!r->always_authenticate)
		return CKR_OK;
	if (r->protected_path) {
		rv = r->ctx->fl->C_Login(s, CKU_CONTEXT_SPECIFIC, NULL, 0);
		if (rv != CKR_OK)
			token_error("the context-specific C_Login", rv);
		return rv;
	}
	e = p11s_error_new();
	login_fail.serial = 0;
	if (e == NULL || p11i_context_login(r->ctx, r->slot->id, s, e) != P11S_OK) {
		login_fail.serial = r->serial;
		login_fail.rc = e ? p11s_error_rc(e) : P11S_E_NOMEM;
		snprintf(login_fail.msg, sizeof(login_fail.msg), "%s",
		         e ? p11s_error_message(e) : "out of memory");
		ERR_raise_data(ERR_LIB_USER, P11I_ERR_R_RC + (e ? p11s_error_rc(e) : P11S_E_NOMEM),
		               "%s", e ? p11s_error_message(e) : "out of memory");
		rv = CKR_USER_NOT_LOGGED_IN;
	}
	p11s_error_free(e);
	return rv;
}

/* A pooled session that died (its token went away and came back) is replaced once. */
static int session_gone(CK_RV rv)
{
	return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;
}

/*
 * One C_SignInit/C_Sign or C_DecryptInit/C_Decrypt with @p m; the result
 * in @p out (room @p *outlen, set to what the token wrote).  0 on failure,
 * an OpenSSL error queued; *init_rv (may be NULL) is the Init's answer, so
 * that a caller can tell a refused mechanism from a failed operation.
 */
static int token_op_m(struct p11i_keyref *r, int decrypt, CK_MECHANISM *m, const unsigned char *in,
                      size_t inlen, unsigned char *out, CK_ULONG *outlen, CK_RV *init_rv)
{
	CK_FUNCTION_LIST_PTR fl = r->ctx->fl;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_RV rv;
	int ok = 0;

	for (int attempt = 0;; attempt++) {
		rv = p11i_op_session(r->ctx, r->slot, &s);
		if (rv != CKR_OK) {
			if (init_rv != NULL)
				*init_rv = rv;
			token_error("C_OpenSession", rv);
			return 0;
		}
		rv = decrypt ? fl->C_DecryptInit(s, m, r->handle) : fl->C_SignInit(s, m, r->handle);
		if (!session_gone(rv) || attempt > 0)
			break;
		p11i_op_session_done(r->ctx, r->slot, s, rv);
	}
	if (init_rv != NULL)
		*init_rv = rv;
	if (rv != CKR_OK) {
		token_error(decrypt ? "C_DecryptInit" : "C_SignInit", rv);
		goto out;
	}
	rv = context_login(r, s);
	if (rv != CKR_OK) {
		CK_ULONG none = 0;
		CK_RV login_rv = rv;

		/* End the operation the Init started, so that the session stays usable. */
		if (decrypt)
			rv = fl->C_Decrypt(s, (CK_BYTE_PTR)in, (CK_ULONG)inlen, NULL, &none);
		else
			rv = fl->C_Sign(s, (CK_BYTE_PTR)in, (CK_ULONG)inlen, NULL, &none);
		/* A length query leaves the operation active: then the session is not reused. */
		if (rv == CKR_OK)
			rv = CKR_OPERATION_ACTIVE;
		(void)login_rv; /* context_login() queued its own error */
		goto out;
	}
	rv = decrypt ? fl->C_Decrypt(s, (CK_BYTE_PTR)in, (CK_ULONG)inlen, out, outlen)
	             : fl->C_Sign(s, (CK_BYTE_PTR)in, (CK_ULONG)inlen, out, outlen);
	if (rv != CKR_OK) {
		token_error(decrypt ? "C_Decrypt" : "C_Sign", rv);
		goto out;
	}
	ok = 1;
out:
	p11i_op_session_done(r->ctx, r->slot, s, rv);
	return ok;
}

static int token_op(struct p11i_keyref *r, int decrypt, CK_MECHANISM_TYPE mech,
                    const unsigned char *in, size_t inlen, unsigned char *out, CK_ULONG *outlen)
{
	CK_MECHANISM m = {mech, NULL, 0};

	return token_op_m(r, decrypt, &m, in, inlen, out, outlen, NULL);
}

static int rsa_op(int decrypt, int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                  int padding)
{
	struct p11i_keyref *r = RSA_get_ex_data(rsa, rsa_idx);
	int size = RSA_size(rsa);
	CK_MECHANISM_TYPE mech;
	CK_ULONG len = (CK_ULONG)size;

	if (r == NULL || flen < 0 || size <= 0)
		return -1;
	switch (padding) {
	case RSA_PKCS1_PADDING:
		mech = CKM_RSA_PKCS;
		break;
	case RSA_NO_PADDING:
		/* OpenSSL pads (PSS) or checks the padding (OAEP) itself. */
		mech = CKM_RSA_X_509;
		break;
	default:
		ERR_raise_data(ERR_LIB_USER, ERR_R_UNSUPPORTED, "token RSA: padding %d", padding);
		return -1;
	}
	if (!token_op(r, decrypt, mech, from, (size_t)flen, to, &len) || len > (CK_ULONG)size)
		return -1;
	set_last(r, mech == CKM_RSA_PKCS ? "CKM_RSA_PKCS" : "CKM_RSA_X_509");
	/* Raw RSA is a number of the modulus' size: some modules drop leading zeros. */
	if (mech == CKM_RSA_X_509 && len < (CK_ULONG)size) {
		memmove(to + (size - (int)len), to, len);
		memset(to, 0, (size_t)size - len);
		len = (CK_ULONG)size;
	}
	return (int)len;
}

static int rsa_priv_enc(int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                        int padding)
{
	return rsa_op(0, flen, from, to, rsa, padding);
}

static int rsa_priv_dec(int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                        int padding)
{
	return rsa_op(1, flen, from, to, rsa, padding);
}

static ECDSA_SIG *ec_sign_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv,
                              const BIGNUM *rp, EC_KEY *ec)
{
	struct p11i_keyref *r = EC_KEY_get_ex_data(ec, ec_idx);
	const EC_GROUP *g = EC_KEY_get0_group(ec);
	unsigned char raw[2 * 66 + 2];
	CK_ULONG len = sizeof(raw);
	int half = g ? (EC_GROUP_order_bits(g) + 7) / 8 : 0;
	BIGNUM *br, *bs;
	ECDSA_SIG *sig;

	(void)kinv, (void)rp;
	if (r == NULL || dlen < 0 || half <= 0 || 2 * half > (int)sizeof(raw))
		return NULL;
	if (!token_op(r, 0, CKM_ECDSA, dgst, (size_t)dlen, raw, &len))
		return NULL;
	if (len != (CK_ULONG)(2 * half)) {
		ERR_raise_data(ERR_LIB_USER, ERR_R_OPERATION_FAIL,
		               "token: an ECDSA signature of %lu bytes, not %d", (unsigned long)len,
		               2 * half);
		return NULL;
	}
	sig = ECDSA_SIG_new();
	br = BN_bin2bn(raw, half, NULL);
	bs = BN_bin2bn(raw + half, half, NULL);
	if (sig == NULL || br == NULL || bs == NULL || !ECDSA_SIG_set0(sig, br, bs)) {
		ECDSA_SIG_free(sig);
		BN_free(br);
		BN_free(bs);
		return NULL;
	}
	return sig;
}

static int ec_sign(int type, const unsigned char *dgst, int dlen, unsigned char *out,
                   unsigned int *outlen, const BIGNUM *kinv, const BIGNUM *rp, EC_KEY *ec)
{
	ECDSA_SIG *sig = ec_sign_sig(dgst, dlen, kinv, rp, ec);
	int n;

	(void)type;
	if (sig == NULL)
		return 0;
	n = i2d_ECDSA_SIG(sig, &out);
	ECDSA_SIG_free(sig);
	if (n <= 0)
		return 0;
	*outlen = (unsigned int)n;
	return 1;
}

/* ECDH: C_DeriveKey with the peer's point, then the derived secret's value. */
static int ec_compute_key(unsigned char **psec, size_t *pseclen, const EC_POINT *peer,
                          const EC_KEY *ec)
{
	const struct p11i_keyref *r = EC_KEY_get_ex_data(ec, ec_idx);
	CK_FUNCTION_LIST_PTR fl;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_TOKEN, &no, sizeof(no)},         {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_KEY_TYPE, &kt, sizeof(kt)},      {CKA_SENSITIVE, &no, sizeof(no)},
	    {CKA_EXTRACTABLE, &yes, sizeof(yes)},
	};
	CK_ECDH1_DERIVE_PARAMS params;
	CK_MECHANISM m;
	CK_OBJECT_HANDLE secret = CK_INVALID_HANDLE;
	CK_ATTRIBUTE v = {CKA_VALUE, NULL, 0};
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	unsigned char *point = NULL;
	size_t plen;
	CK_RV rv;
	int ok = 0;

	if (r == NULL)
		return 0;
	fl = r->ctx->fl;
	plen = EC_POINT_point2buf(EC_KEY_get0_group(ec), peer, POINT_CONVERSION_UNCOMPRESSED,
	                          &point, NULL);
	if (plen == 0)
		return 0;
	rv = p11i_op_session(r->ctx, r->slot, &s);
	if (rv != CKR_OK) {
		s = CK_INVALID_HANDLE;
		token_error("C_OpenSession", rv);
		goto out;
	}
	memset(&params, 0, sizeof(params));
	params.kdf = CKD_NULL;
	params.pPublicData = point;
	params.ulPublicDataLen = plen;
	m.mechanism = CKM_ECDH1_DERIVE;
	m.pParameter = &params;
	m.ulParameterLen = sizeof(params);
	rv = fl->C_DeriveKey(s, &m, r->handle, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &secret);
	if (rv != CKR_OK) {
		token_error("C_DeriveKey", rv);
		goto out;
	}
	rv = fl->C_GetAttributeValue(s, secret, &v, 1);
	if (rv != CKR_OK || v.ulValueLen == CK_UNAVAILABLE_INFORMATION || v.ulValueLen == 0 ||
	    v.ulValueLen > 1024) {
		token_error("reading the derived secret", rv != CKR_OK ? rv : CKR_GENERAL_ERROR);
		goto out;
	}
	if ((v.pValue = OPENSSL_malloc(v.ulValueLen)) == NULL)
		goto out;
	rv = fl->C_GetAttributeValue(s, secret, &v, 1);
	if (rv != CKR_OK) {
		OPENSSL_clear_free(v.pValue, v.ulValueLen);
		token_error("reading the derived secret", rv);
		goto out;
	}
	*psec = v.pValue;
	*pseclen = v.ulValueLen;
	ok = 1;
out:
	if (secret != CK_INVALID_HANDLE)
		fl->C_DestroyObject(s, secret);
	p11i_op_session_done(r->ctx, r->slot, s, rv);
	OPENSSL_free(point);
	return ok;
}

/*
 * RSA-PSS and RSA-OAEP with the token's own mechanisms.  An RSA_METHOD only
 * sees blocks OpenSSL has already padded, so the padding parameters are
 * taken one level up: our keys carry an ENGINE whose only use is an
 * EVP_PKEY_METHOD for RSA, a copy of OpenSSL's own whose sign and decrypt
 * hand the digest (PSS) or the ciphertext (OAEP) to the token with
 * CK_RSA_PKCS_PSS_PARAMS / CK_RSA_PKCS_OAEP_PARAMS.  OpenSSL 3 builds the
 * EVP_PKEY_CTX of a key with an engine from the legacy method, so CMS's
 * EVP_DigestSignFinal and EVP_PKEY_decrypt land here with the padding,
 * digests and label it set through the usual ctrls.  Everything else, and
 * these two when the token refuses the parameters, goes to OpenSSL's code
 * and so to the RSA_METHOD above (CKM_RSA_PKCS, CKM_RSA_X_509).
 */
static ENGINE *pk_engine;
static EVP_PKEY_METHOD *rsa_pmeth;
static int (*orig_sign)(EVP_PKEY_CTX *, unsigned char *, size_t *, const unsigned char *, size_t);
static int (*orig_decrypt)(EVP_PKEY_CTX *, unsigned char *, size_t *, const unsigned char *,
                           size_t);
static const int pk_nids[] = {EVP_PKEY_RSA};

static struct p11i_keyref *ctx_ref(EVP_PKEY_CTX *ctx)
{
	EVP_PKEY *pk = EVP_PKEY_CTX_get0_pkey(ctx);
	const RSA *rsa = pk != NULL ? EVP_PKEY_get0_RSA(pk) : NULL;

	return rsa != NULL ? RSA_get_ex_data(rsa, rsa_idx) : NULL;
}

/* The PKCS#11 hash and MGF1 of @p md; 0 when PKCS#11 has none. */
static int md_mechs(const EVP_MD *md, CK_MECHANISM_TYPE *hash, CK_RSA_PKCS_MGF_TYPE *mgf)
{
	static const struct {
		int nid;
		CK_MECHANISM_TYPE hash;
		CK_RSA_PKCS_MGF_TYPE mgf;
	} map[] = {
	    {NID_sha1, CKM_SHA_1, CKG_MGF1_SHA1},      {NID_sha224, CKM_SHA224, CKG_MGF1_SHA224},
	    {NID_sha256, CKM_SHA256, CKG_MGF1_SHA256}, {NID_sha384, CKM_SHA384, CKG_MGF1_SHA384},
	    {NID_sha512, CKM_SHA512, CKG_MGF1_SHA512},
	};

	for (size_t i = 0; md != NULL && i < sizeof(map) / sizeof(map[0]); i++)
		if (EVP_MD_get_type(md) == map[i].nid) {
			if (hash != NULL)
				*hash = map[i].hash;
			if (mgf != NULL)
				*mgf = map[i].mgf;
			return 1;
		}
	return 0;
}

/* An Init refusing the mechanism or its parameters: raw RSA may still do it. */
static int refused(CK_RV rv)
{
	return rv == CKR_MECHANISM_INVALID || rv == CKR_MECHANISM_PARAM_INVALID ||
	       rv == CKR_ARGUMENTS_BAD || rv == CKR_FUNCTION_NOT_SUPPORTED ||
	       rv == CKR_KEY_FUNCTION_NOT_PERMITTED;
}

static int pk_sign(EVP_PKEY_CTX *ctx, unsigned char *sig, size_t *siglen, const unsigned char *tbs,
                   size_t tbslen)
{
	struct p11i_keyref *r = ctx_ref(ctx);
	const EVP_MD *md = NULL, *mgf1 = NULL;
	CK_RSA_PKCS_PSS_PARAMS pp;
	CK_MECHANISM m = {CKM_RSA_PKCS_PSS, &pp, sizeof(pp)};
	CK_RV init_rv = CKR_OK;
	CK_ULONG len;
	int pad = 0, saltlen = 0, size;

	if (r == NULL || !r->pss_native || sig == NULL ||
	    EVP_PKEY_CTX_get_rsa_padding(ctx, &pad) <= 0 || pad != RSA_PKCS1_PSS_PADDING ||
	    EVP_PKEY_CTX_get_signature_md(ctx, &md) <= 0 ||
	    EVP_PKEY_CTX_get_rsa_mgf1_md(ctx, &mgf1) <= 0 ||
	    EVP_PKEY_CTX_get_rsa_pss_saltlen(ctx, &saltlen) <= 0 ||
	    !md_mechs(md, &pp.hashAlg, NULL) || !md_mechs(mgf1 ? mgf1 : md, NULL, &pp.mgf) ||
	    tbslen != (size_t)EVP_MD_get_size(md))
		return orig_sign(ctx, sig, siglen, tbs, tbslen);
	/* The salt CMS asks for (RSA_PSS_SALTLEN_DIGEST) or a length; "max"/"auto" stay OpenSSL's.
	 */
	if (saltlen == RSA_PSS_SALTLEN_DIGEST)
		saltlen = EVP_MD_get_size(md);
	if (saltlen < 0)
		return orig_sign(ctx, sig, siglen, tbs, tbslen);
	pp.sLen = (CK_ULONG)saltlen;
	size = EVP_PKEY_get_size(EVP_PKEY_CTX_get0_pkey(ctx));
	if (size <= 0 || *siglen < (size_t)size)
		return orig_sign(ctx, sig, siglen, tbs, tbslen);
	len = (CK_ULONG)*siglen;
	if (token_op_m(r, 0, &m, tbs, tbslen, sig, &len, &init_rv)) {
		*siglen = len;
		set_last(r, "CKM_RSA_PKCS_PSS");
		return 1;
	}
	if (!refused(init_rv))
		return -1;
	ERR_clear_error();
	return orig_sign(ctx, sig, siglen, tbs, tbslen);
}

static int pk_decrypt(EVP_PKEY_CTX *ctx, unsigned char *out, size_t *outlen,
                      const unsigned char *in, size_t inlen)
{
	struct p11i_keyref *r = ctx_ref(ctx);
	const EVP_MD *md = NULL, *mgf1 = NULL;
	unsigned char *label = NULL;
	int pad = 0, labellen, size;
	CK_RSA_PKCS_OAEP_PARAMS op;
	CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &op, sizeof(op)};
	CK_RV init_rv = CKR_OK;
	CK_ULONG len;

	if (r == NULL || !r->oaep_native || EVP_PKEY_CTX_get_rsa_padding(ctx, &pad) <= 0 ||
	    pad != RSA_PKCS1_OAEP_PADDING || EVP_PKEY_CTX_get_rsa_oaep_md(ctx, &md) <= 0 ||
	    EVP_PKEY_CTX_get_rsa_mgf1_md(ctx, &mgf1) <= 0 || !md_mechs(md, &op.hashAlg, NULL) ||
	    !md_mechs(mgf1 ? mgf1 : md, NULL, &op.mgf))
		return orig_decrypt(ctx, out, outlen, in, inlen);
	/* OpenSSL 3 answers -1 rather than 0 for "no label" (the empty one). */
	labellen = EVP_PKEY_CTX_get0_rsa_oaep_label(ctx, &label);
	if (labellen <= 0) {
		labellen = 0;
		label = NULL;
	}
	size = EVP_PKEY_get_size(EVP_PKEY_CTX_get0_pkey(ctx));
	if (size <= 0)
		return orig_decrypt(ctx, out, outlen, in, inlen);
	if (out == NULL) {
		*outlen = (size_t)size;
		return 1;
	}
	op.source = CKZ_DATA_SPECIFIED;
	op.pSourceData = label;
	op.ulSourceDataLen = (CK_ULONG)labellen;
	len = (CK_ULONG)*outlen;
	if (token_op_m(r, 1, &m, in, inlen, out, &len, &init_rv)) {
		*outlen = len;
		set_last(r, "CKM_RSA_PKCS_OAEP");
		return 1;
	}
	if (!refused(init_rv))
		return -1;
	ERR_clear_error();
	return orig_decrypt(ctx, out, outlen, in, inlen);
}

static int pk_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
	(void)e;
	if (pmeth == NULL) {
		*nids = pk_nids;
		return 1;
	}
	*pmeth = nid == EVP_PKEY_RSA ? rsa_pmeth : NULL;
	return *pmeth != NULL;
}

static void pmeth_init(void)
{
	const EVP_PKEY_METHOD *def = EVP_PKEY_meth_find(EVP_PKEY_RSA);
	int (*sinit)(EVP_PKEY_CTX *) = NULL, (*dinit)(EVP_PKEY_CTX *) = NULL;

	if (def == NULL ||
	    (rsa_pmeth = EVP_PKEY_meth_new(EVP_PKEY_RSA, EVP_PKEY_FLAG_AUTOARGLEN)) == NULL)
		return;
	EVP_PKEY_meth_copy(rsa_pmeth, def);
	EVP_PKEY_meth_get_sign(def, &sinit, &orig_sign);
	EVP_PKEY_meth_get_decrypt(def, &dinit, &orig_decrypt);
	EVP_PKEY_meth_set_sign(rsa_pmeth, sinit, pk_sign);
	EVP_PKEY_meth_set_decrypt(rsa_pmeth, dinit, pk_decrypt);
	pk_engine = ENGINE_new();
	if (orig_sign == NULL || orig_decrypt == NULL || pk_engine == NULL ||
	    !ENGINE_set_id(pk_engine, "p11smime-token") ||
	    !ENGINE_set_name(pk_engine, "p11smime token keys (native PSS and OAEP)") ||
	    !ENGINE_set_pkey_meths(pk_engine, pk_meths)) {
		ENGINE_free(pk_engine);
		pk_engine = NULL;
		EVP_PKEY_meth_free(rsa_pmeth);
		rsa_pmeth = NULL;
	}
}

static void meth_init(void)
{
	int (*osign)(int, const unsigned char *, int, unsigned char *, unsigned int *,
	             const BIGNUM *, const BIGNUM *, EC_KEY *) = NULL;
	int (*osetup)(EC_KEY *, BN_CTX *, BIGNUM **, BIGNUM **) = NULL;
	ECDSA_SIG *(*osig)(const unsigned char *, int, const BIGNUM *, const BIGNUM *, EC_KEY *) =
	    NULL;

	rsa_idx = RSA_get_ex_new_index(0, NULL, NULL, NULL, ref_free);
	ec_idx = EC_KEY_get_ex_new_index(0, NULL, NULL, NULL, ref_free);
	rsa_meth = RSA_meth_dup(RSA_get_default_method());
	if (rsa_meth != NULL &&
	    (!RSA_meth_set1_name(rsa_meth, "p11smime token RSA") ||
	     !RSA_meth_set_priv_enc(rsa_meth, rsa_priv_enc) ||
	     !RSA_meth_set_priv_dec(rsa_meth, rsa_priv_dec) ||
	     !RSA_meth_set_flags(rsa_meth, RSA_meth_get_flags(rsa_meth) | RSA_FLAG_EXT_PKEY))) {
		RSA_meth_free(rsa_meth);
		rsa_meth = NULL;
	}
	ec_meth = EC_KEY_METHOD_new(EC_KEY_get_default_method());
	if (ec_meth != NULL) {
		EC_KEY_METHOD_get_sign(ec_meth, &osign, &osetup, &osig);
		EC_KEY_METHOD_set_sign(ec_meth, ec_sign, osetup, ec_sign_sig);
		EC_KEY_METHOD_set_compute_key(ec_meth, ec_compute_key);
	}
	pmeth_init();
}

/* The public half: the key's own attributes, else its certificate's key. */
static EVP_PKEY *public_half(const p11s_object *o)
{
	const p11s_object *c = o->paired;
	X509 *x;

	if (o->pub.pkey != NULL)
		return o->pub.pkey;
	x = c != NULL ? p11s_object_x509(c) : NULL;
	return x != NULL ? X509_get0_pubkey(x) : NULL;
}

static EVP_PKEY *token_pkey(const p11s_object *o, struct p11i_keyref *ref)
{
	EVP_PKEY *pub = public_half(o), *pk = EVP_PKEY_new();

	if (pk == NULL || pub == NULL)
		goto fail;
	if (o->key_type == P11S_KEY_RSA && EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA &&
	    rsa_meth != NULL) {
		const RSA *src = EVP_PKEY_get0_RSA(pub);
		const BIGNUM *n = NULL, *e = NULL;
		RSA *rsa = RSA_new();
		BIGNUM *dn, *de;

		if (src != NULL)
			RSA_get0_key(src, &n, &e, NULL);
		dn = n ? BN_dup(n) : NULL;
		de = e ? BN_dup(e) : NULL;
		if (rsa == NULL || dn == NULL || de == NULL || !RSA_set_method(rsa, rsa_meth) ||
		    !RSA_set0_key(rsa, dn, de, NULL)) {
			BN_free(dn);
			BN_free(de);
			RSA_free(rsa);
			goto fail;
		}
		if (!RSA_set_ex_data(rsa, rsa_idx, ref) || !EVP_PKEY_assign_RSA(pk, rsa)) {
			RSA_set_ex_data(rsa, rsa_idx, NULL);
			RSA_free(rsa);
			goto fail;
		}
		/* Without the engine PSS and OAEP still work, through raw RSA only. */
		if (pk_engine != NULL && EVP_PKEY_set1_engine(pk, pk_engine))
			ref->can_native = 1;
		else
			ERR_clear_error();
		return pk;
	}
	if (o->key_type == P11S_KEY_EC && EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC &&
	    ec_meth != NULL) {
		const EC_KEY *src = EVP_PKEY_get0_EC_KEY(pub);
		EC_KEY *ec = EC_KEY_new();

		if (ec == NULL || src == NULL || !EC_KEY_set_method(ec, ec_meth) ||
		    !EC_KEY_set_group(ec, EC_KEY_get0_group(src)) ||
		    !EC_KEY_set_public_key(ec, EC_KEY_get0_public_key(src))) {
			EC_KEY_free(ec);
			goto fail;
		}
		if (!EC_KEY_set_ex_data(ec, ec_idx, ref) || !EVP_PKEY_assign_EC_KEY(pk, ec)) {
			EC_KEY_set_ex_data(ec, ec_idx, NULL);
			EC_KEY_free(ec);
			goto fail;
		}
		return pk;
	}
fail:
	EVP_PKEY_free(pk);
	return NULL;
}

p11s_rc p11s_key_open(p11s_ctx *ctx, const p11s_object *o, p11s_key **out, p11s_error *err)
{
	struct p11i_keyref *ref;
	p11s_key *k;
	p11s_rc rc;

	*out = NULL;
	if (o == NULL || o->cls != P11S_OBJ_PRIVATE_KEY)
		return p11i_err(err, P11S_E_USAGE, "%s is not a private key",
		                o ? o->uri : "(nothing)");
	if (o->key_type != P11S_KEY_RSA && o->key_type != P11S_KEY_EC)
		return p11i_err(err, P11S_E_MECHANISM,
		                "%s is an %s key; only RSA and EC keys are used", o->uri,
		                p11s_key_type_name(o->key_type));
	/* Our login, with its PIN policy; it also opens the session the key is used on. */
	rc = p11i_login(ctx, o->token, NULL, err);
	if (rc != P11S_OK)
		return rc;
	if (!CRYPTO_THREAD_run_once(&meth_once, meth_init) || rsa_idx < 0 || ec_idx < 0)
		return p11i_err_nomem(err);
	k = calloc(1, sizeof(*k));
	ref = calloc(1, sizeof(*ref));
	if (k == NULL || ref == NULL) {
		free(k);
		free(ref);
		return p11i_err_nomem(err);
	}
	ref->ctx = ctx;
	ref->slot = p11i_slot_state(ctx, o->token->slot_id);
	ref->serial = atomic_fetch_add(&keyref_serial, 1) + 1;
	ref->handle = o->handle;
	ref->always_authenticate = (o->key_flags & P11S_KF_ALWAYS_AUTHENTICATE) != 0;
	ref->protected_path = (o->token->info.flags & CKF_PROTECTED_AUTHENTICATION_PATH) != 0;
	k->ctx = ctx;
	k->slot_id = o->token->slot_id;
	k->type = o->key_type;
	k->bits = o->key_bits;
	k->flags = o->key_flags;
	k->uri = strdup(o->uri);
	k->token_label = strdup(o->token->label);
	if (k->uri == NULL || k->token_label == NULL || ref->slot == NULL) {
		ref_free(NULL, ref, NULL, 0, 0, NULL);
		p11s_key_free(k);
		return p11i_err_nomem(err);
	}
	/* From here the key owns @p ref (freed with it through its ex_data). */
	k->ref = ref;
	k->pkey = token_pkey(o, ref);
	if (k->pkey == NULL) {
		ref_free(NULL, ref, NULL, 0, 0, NULL);
		p11s_key_free(k);
		return p11i_err_ossl(err, P11S_E_TOKEN,
		                     "cannot use the key %s: its public half is not known (no "
		                     "public attributes, public key object or certificate)",
		                     o->uri);
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
	int native; /* tried first; the entry after it (raw RSA) is the fallback */
} op_needs[] = {
    {P11S_OP_SIGN_RSA_PKCS1, P11S_KEY_RSA, CKM_RSA_PKCS, "CKM_RSA_PKCS", CKF_SIGN, "CKF_SIGN",
     P11S_KF_SIGN, "CKA_SIGN", "RSA PKCS#1 v1.5 signing", 0},
    {P11S_OP_SIGN_RSA_PSS, P11S_KEY_RSA, CKM_RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS", CKF_SIGN, "CKF_SIGN",
     P11S_KF_SIGN, "CKA_SIGN", "RSA-PSS signing (PSS on the token)", 1},
    {P11S_OP_SIGN_RSA_PSS, P11S_KEY_RSA, CKM_RSA_X_509, "CKM_RSA_X_509", CKF_SIGN, "CKF_SIGN",
     P11S_KF_SIGN, "CKA_SIGN",
     "RSA-PSS signing (PSS padding done by OpenSSL, raw RSA on the token)", 0},
    {P11S_OP_SIGN_ECDSA, P11S_KEY_EC, CKM_ECDSA, "CKM_ECDSA", CKF_SIGN, "CKF_SIGN", P11S_KF_SIGN,
     "CKA_SIGN", "ECDSA signing", 0},
    {P11S_OP_DECRYPT_RSA_PKCS1, P11S_KEY_RSA, CKM_RSA_PKCS, "CKM_RSA_PKCS", CKF_DECRYPT,
     "CKF_DECRYPT", P11S_KF_DECRYPT, "CKA_DECRYPT", "RSA PKCS#1 v1.5 decryption", 0},
    {P11S_OP_DECRYPT_RSA_OAEP, P11S_KEY_RSA, CKM_RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP", CKF_DECRYPT,
     "CKF_DECRYPT", P11S_KF_DECRYPT, "CKA_DECRYPT", "RSA-OAEP decryption (OAEP on the token)", 1},
    {P11S_OP_DECRYPT_RSA_OAEP, P11S_KEY_RSA, CKM_RSA_X_509, "CKM_RSA_X_509", CKF_DECRYPT,
     "CKF_DECRYPT", P11S_KF_DECRYPT, "CKA_DECRYPT",
     "RSA-OAEP decryption (OAEP padding checked by OpenSSL, raw RSA on the token)", 0},
    {P11S_OP_DERIVE_ECDH, P11S_KEY_EC, CKM_ECDH1_DERIVE, "CKM_ECDH1_DERIVE", CKF_DERIVE,
     "CKF_DERIVE", P11S_KF_DERIVE, "CKA_DERIVE", "ECDH key agreement", 0},
};

/* The list, not C_GetMechanismInfo, is what the token offers (p11.h). */
int p11i_mech_listed(p11s_ctx *ctx, CK_SLOT_ID slot, CK_MECHANISM_TYPE mech)
{
	CK_FUNCTION_LIST_PTR fl = ctx->fl;
	CK_MECHANISM_TYPE *list;
	CK_ULONG n = 0, cap;
	int found = 0;

	if (fl->C_GetMechanismList(slot, NULL, &n) != CKR_OK || n == 0)
		return -1;
	cap = n;
	list = calloc(n, sizeof(*list));
	if (list == NULL)
		return -1;
	if (fl->C_GetMechanismList(slot, list, &n) != CKR_OK) {
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

static p11s_rc check_need(const p11s_key *key, const struct op_need *need, p11s_error *err)
{
	CK_MECHANISM_INFO mi;
	CK_RV rv;

	if (key->type != need->type)
		return p11i_err(err, P11S_E_MECHANISM, "%s needs an %s key; %s is %s", need->what,
		                p11s_key_type_name(need->type), key->uri,
		                p11s_key_type_name(key->type));
	if (!(key->flags & need->key_flag))
		return p11i_err(err, P11S_E_MECHANISM,
		                "the key %s does not allow %s (its %s is false)", key->uri,
		                need->what, need->key_attr);
	rv = key->ctx->fl->C_GetMechanismInfo(key->slot_id, need->mech, &mi);
	if (rv == CKR_MECHANISM_INVALID ||
	    (rv == CKR_OK && p11i_mech_listed(key->ctx, key->slot_id, need->mech) == 0))
		return p11i_err(err, P11S_E_MECHANISM, "token '%s' has no %s, needed for %s",
		                key->token_label, need->mech_name, need->what);
	if (rv != CKR_OK)
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_GetMechanismInfo");
	if (!(mi.flags & need->flag))
		return p11i_err(err, P11S_E_MECHANISM,
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
			return p11i_err(
			    err, P11S_E_MECHANISM,
			    "token '%s' does %s with keys of %lu to %lu bits; %s has %d",
			    key->token_label, need->mech_name, (unsigned long)mi.ulMinKeySize,
			    (unsigned long)mi.ulMaxKeySize, key->uri, key->bits);
	}
	return P11S_OK;
}

p11s_rc p11s_key_check_op(const p11s_key *key, p11s_op op, const char **mechanism, p11s_error *err)
{
	const struct op_need *need = NULL;
	char *native_msg = NULL;
	p11s_rc rc;

	if (mechanism != NULL)
		*mechanism = NULL;
	for (size_t i = 0; i < sizeof(op_needs) / sizeof(op_needs[0]) && need == NULL; i++)
		if (op_needs[i].op == op)
			need = &op_needs[i];
	if (need == NULL)
		return p11i_err(err, P11S_E_USAGE, "unknown operation %d", (int)op);
	/* The token's own PSS/OAEP first: it then enforces the padding itself. */
	if (need->native) {
		if (key->ref != NULL && key->ref->can_native) {
			rc = check_need(key, need, err);
			if (rc == P11S_OK) {
				if (op == P11S_OP_SIGN_RSA_PSS)
					key->ref->pss_native = 1;
				else
					key->ref->oaep_native = 1;
				if (mechanism != NULL)
					*mechanism = need->mech_name;
				return P11S_OK;
			}
			if (rc != P11S_E_MECHANISM)
				return rc;
			native_msg = p11i_strdup(p11s_error_message(err));
		}
		need++;
	}
	rc = check_need(key, need, err);
	if (rc == P11S_E_MECHANISM && native_msg != NULL) {
		char *raw_msg = p11i_strdup(p11s_error_message(err));

		rc = p11i_err(err, P11S_E_MECHANISM, "%s; and without it: %s", native_msg,
		              raw_msg ? raw_msg : "raw RSA is not usable either");
		free(raw_msg);
	}
	free(native_msg);
	if (rc == P11S_OK && mechanism != NULL)
		*mechanism = need->mech_name;
	return rc;
}

const char *p11s_key_last_mechanism(const p11s_key *key)
{
	return key != NULL && key->ref != NULL && last_op.serial == key->ref->serial ? last_op.mech
	                                                                             : NULL;
}

p11s_rc p11s_key_login_failure(const p11s_key *key, p11s_error *err)
{
	const struct p11i_keyref *r = key != NULL ? key->ref : NULL;

	if (r == NULL || login_fail.serial != r->serial || login_fail.rc == P11S_OK)
		return P11S_OK;
	return p11i_err(err, login_fail.rc, "%s", login_fail.msg);
}
