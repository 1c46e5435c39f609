#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "cms_stream.h"
#include "common.h"
#include "p11smime/certs.h"
#include "p11smime/decrypt.h"
#include "p11smime/certs.h"
#include "mime.h"
#include "p11smime/io.h"

/* Bytes of the decrypted entity looked at for its header block. */
#define HEAD_MAX (64 * 1024)

/* One recipient the message names: a RecipientInfo, or one key of a KARI. */
struct rcpt {
	CMS_RecipientInfo *ri;
	CMS_RecipientEncryptedKey *rek; /* key agreement only */
	int type;                       /* CMS_RECIPINFO_* */
	char *issuer, *serial, *ski;
	int matched;
};

struct p11s_decrypt_report {
	int auth;
	char *content_cipher;
	struct rcpt *rcpts;
	size_t nrcpts, rcpts_cap;
	long chosen; /* index into rcpts, or -1 */
	X509 *cert;
	p11s_cert_info *info;
	char *cert_uri, *key_uri;
	char *key_encryption; /* in words */
	char *kea, *oaep_hash, *mgf1_hash, *label, *kdf, *key_wrap;
	const char *mechanism;
	const p11s_key *key; /* the token key, borrowed from the chooser */
	p11s_op op;
	int authenticated, auth_attrs, complete;
	uint64_t content_bytes;
	time_t at;
	p11s_verdict *verdict; /* the rules on the recipient certificate at r->at */
	int expired, not_yet_valid;
	char **notes;
	size_t nnotes, notes_cap;
};

/*
 * How the recipient is chosen: given the parsed recipients (in @p r), fill
 * r->chosen, r->cert (up-ref'd), the URIs and mechanism, *pkey and what is
 * known of that key for the rules, *kf (both borrowed from the chooser
 * until the chooser's cleanup).
 */
struct chooser {
	p11s_rc (*choose)(struct chooser *c, p11s_decrypt_report *r, EVP_PKEY **pkey,
	                  p11s_key_facts *kf, p11s_error *err);
	void (*cleanup)(struct chooser *c);
};

/* ---------------------------------------------------------- report */

void p11s_decrypt_report_free(p11s_decrypt_report *r)
{
	if (r == NULL)
		return;
	free(r->content_cipher);
	for (size_t i = 0; i < r->nrcpts; i++) {
		free(r->rcpts[i].issuer);
		free(r->rcpts[i].serial);
		free(r->rcpts[i].ski);
	}
	free(r->rcpts);
	X509_free(r->cert);
	p11s_cert_info_free(r->info);
	p11s_verdict_free(r->verdict);
	free(r->cert_uri);
	free(r->key_uri);
	free(r->key_encryption);
	free(r->kea);
	free(r->oaep_hash);
	free(r->mgf1_hash);
	free(r->label);
	free(r->kdf);
	free(r->key_wrap);
	for (size_t i = 0; i < r->nnotes; i++)
		free(r->notes[i]);
	free(r->notes);
	free(r);
}

static void add_note(p11s_decrypt_report *r, const char *fmt, ...) P11I_PRINTF(2, 3);
static void add_note(p11s_decrypt_report *r, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (s == NULL)
		return;
	if (P11I_GROW(r->notes, r->nnotes, r->notes_cap, 1) != 0) {
		free(s);
		return;
	}
	r->notes[r->nnotes++] = s;
}

const char *p11s_decrypt_report_content_type(const p11s_decrypt_report *r)
{
	return r->auth ? "authEnveloped-data" : "enveloped-data";
}

const char *p11s_decrypt_report_content_cipher(const p11s_decrypt_report *r)
{
	return r->content_cipher;
}

const char *p11s_decrypt_report_key_encryption(const p11s_decrypt_report *r)
{
	return r->key_encryption;
}

const char *p11s_decrypt_report_mechanism(const p11s_decrypt_report *r)
{
	return r->mechanism;
}

const char *p11s_decrypt_report_key_uri(const p11s_decrypt_report *r)
{
	return r->key_uri;
}

X509 *p11s_decrypt_report_certificate(const p11s_decrypt_report *r)
{
	return r->cert;
}

int p11s_decrypt_report_expired(const p11s_decrypt_report *r)
{
	return r->expired;
}

const p11s_verdict *p11s_decrypt_report_verdict(const p11s_decrypt_report *r)
{
	return r->verdict;
}

uint64_t p11s_decrypt_report_content_bytes(const p11s_decrypt_report *r)
{
	return r->content_bytes;
}

size_t p11s_decrypt_report_note_count(const p11s_decrypt_report *r)
{
	return r->nnotes;
}

const char *p11s_decrypt_report_note(const p11s_decrypt_report *r, size_t i)
{
	return i < r->nnotes ? r->notes[i] : NULL;
}

static const char *rcpt_type_name(int type)
{
	switch (type) {
	case CMS_RECIPINFO_TRANS:
		return "key-transport";
	case CMS_RECIPINFO_AGREE:
		return "key-agreement";
	case CMS_RECIPINFO_KEK:
		return "kek";
	case CMS_RECIPINFO_PASS:
		return "password";
	default:
		return "other";
	}
}

int p11s_decrypt_report_complete(const p11s_decrypt_report *r)
{
	return r->complete;
}

size_t p11s_decrypt_report_recipient_count(const p11s_decrypt_report *r)
{
	return r->nrcpts;
}

const char *p11s_decrypt_report_recipient(const p11s_decrypt_report *r, size_t i,
                                          const char **issuer, const char **serial,
                                          const char **ski, int *matched)
{
	const struct rcpt *rc = i < r->nrcpts ? &r->rcpts[i] : NULL;

	if (issuer != NULL)
		*issuer = rc ? rc->issuer : NULL;
	if (serial != NULL)
		*serial = rc ? rc->serial : NULL;
	if (ski != NULL)
		*ski = rc ? rc->ski : NULL;
	if (matched != NULL)
		*matched = rc ? rc->matched : 0;
	return rc ? rcpt_type_name(rc->type) : NULL;
}

long p11s_decrypt_report_chosen(const p11s_decrypt_report *r)
{
	return r->chosen;
}

const p11s_cert_info *p11s_decrypt_report_certificate_info(const p11s_decrypt_report *r)
{
	return r->info;
}

const char *p11s_decrypt_report_certificate_uri(const p11s_decrypt_report *r)
{
	return r->cert_uri;
}

int p11s_decrypt_report_not_yet_valid(const p11s_decrypt_report *r)
{
	return r->not_yet_valid;
}

int p11s_decrypt_report_key_encryption_params(const p11s_decrypt_report *r,
                                              p11s_decrypt_key_encryption *ke)
{
	memset(ke, 0, sizeof(*ke));
	if (r->key_encryption == NULL)
		return 0;
	ke->algorithm = r->kea;
	ke->description = r->key_encryption;
	ke->oaep_hash = r->oaep_hash;
	ke->mgf1_hash = r->mgf1_hash;
	ke->oaep_label = r->label;
	ke->kdf = r->kdf;
	ke->key_wrap = r->key_wrap;
	ke->curve = r->info != NULL ? r->info->curve : NULL;
	return 1;
}

int p11s_decrypt_report_authenticated(const p11s_decrypt_report *r)
{
	return r->auth && r->complete;
}

int p11s_decrypt_report_auth_attributes(const p11s_decrypt_report *r)
{
	return r->auth_attrs;
}

time_t p11s_decrypt_report_time(const p11s_decrypt_report *r)
{
	return r->at;
}

/* ------------------------------------------------------- recipients */

static p11s_rc add_rcpt(p11s_decrypt_report *r, CMS_RecipientInfo *ri,
                        CMS_RecipientEncryptedKey *rek, int type, ASN1_OCTET_STRING *keyid,
                        X509_NAME *issuer, ASN1_INTEGER *sno, p11s_error *err)
{
	struct rcpt *rc;

	if (P11I_GROW(r->rcpts, r->nrcpts, r->rcpts_cap, 1) != 0)
		return p11i_err_nomem(err);
	rc = &r->rcpts[r->nrcpts++];
	memset(rc, 0, sizeof(*rc));
	rc->ri = ri;
	rc->rek = rek;
	rc->type = type;
	if (keyid != NULL)
		rc->ski = p11i_hex(ASN1_STRING_get0_data(keyid), (size_t)ASN1_STRING_length(keyid));
	if (issuer != NULL)
		rc->issuer = p11s_cert_name_string(issuer);
	if (sno != NULL)
		rc->serial = p11i_serial_hex(sno);
	return P11S_OK;
}

static p11s_rc list_recipients(CMS_ContentInfo *cms, p11s_decrypt_report *r, p11s_error *err)
{
	STACK_OF(CMS_RecipientInfo) *ris = CMS_get0_RecipientInfos(cms);
	STACK_OF(CMS_RecipientEncryptedKey) * reks;
	ASN1_OCTET_STRING *keyid;
	X509_NAME *issuer;
	ASN1_INTEGER *sno;
	CMS_RecipientInfo *ri;
	CMS_RecipientEncryptedKey *rek;
	p11s_rc rc = P11S_OK;
	int type;

	for (int i = 0; i < sk_CMS_RecipientInfo_num(ris) && rc == P11S_OK; i++) {
		ri = sk_CMS_RecipientInfo_value(ris, i);
		type = CMS_RecipientInfo_type(ri);
		keyid = NULL;
		issuer = NULL;
		sno = NULL;
		if (type == CMS_RECIPINFO_TRANS) {
			CMS_RecipientInfo_ktri_get0_signer_id(ri, &keyid, &issuer, &sno);
			rc = add_rcpt(r, ri, NULL, type, keyid, issuer, sno, err);
		} else if (type == CMS_RECIPINFO_AGREE) {
			reks = CMS_RecipientInfo_kari_get0_reks(ri);
			for (int k = 0; k < sk_CMS_RecipientEncryptedKey_num(reks) && rc == P11S_OK;
			     k++) {
				rek = sk_CMS_RecipientEncryptedKey_value(reks, k);
				keyid = NULL;
				issuer = NULL;
				sno = NULL;
				CMS_RecipientEncryptedKey_get0_id(rek, &keyid, NULL, NULL, &issuer,
				                                  &sno);
				rc = add_rcpt(r, ri, rek, type, keyid, issuer, sno, err);
			}
		} else {
			rc = add_rcpt(r, ri, NULL, type, NULL, NULL, NULL, err);
		}
	}
	if (rc == P11S_OK && r->nrcpts == 0)
		return p11i_err(err, P11S_E_INPUT, "malformed CMS message: it names no recipient");
	return rc;
}

/* Does @p x identify recipient @p rc (and is its key of the right kind)? */
static int rcpt_matches(const struct rcpt *rc, X509 *x)
{
	EVP_PKEY *pub = X509_get0_pubkey(x);

	if (pub == NULL)
		return 0;
	if (rc->type == CMS_RECIPINFO_TRANS)
		return EVP_PKEY_is_a(pub, "RSA") && CMS_RecipientInfo_ktri_cert_cmp(rc->ri, x) == 0;
	if (rc->type == CMS_RECIPINFO_AGREE)
		return EVP_PKEY_is_a(pub, "EC") &&
		       CMS_RecipientEncryptedKey_cert_cmp(rc->rek, x) == 0;
	return 0;
}

static char *rcpt_describe(const struct rcpt *rc)
{
	if (rc->type != CMS_RECIPINFO_TRANS && rc->type != CMS_RECIPINFO_AGREE)
		return p11i_asprintf("a %s recipient (not supported by p11smime)",
		                     rcpt_type_name(rc->type));
	if (rc->ski != NULL)
		return p11i_asprintf("%s: subject key identifier %s", rcpt_type_name(rc->type),
		                     rc->ski);
	return p11i_asprintf("%s: issuer %s, serial %s", rcpt_type_name(rc->type),
	                     rc->issuer ? rc->issuer : "?", rc->serial ? rc->serial : "?");
}

/* Name every recipient in @p err (as candidates) after a failed match. */
static void list_candidates(const p11s_decrypt_report *r, p11s_error *err)
{
	char *d;

	for (size_t i = 0; i < r->nrcpts; i++) {
		d = rcpt_describe(&r->rcpts[i]);
		if (d != NULL)
			p11i_err_add_candidate(err, d);
		free(d);
	}
}

/* ------------------------------------------------------- algorithms */

static const char *hash_name(int nid)
{
	switch (nid) {
	case NID_sha1:
		return "SHA-1";
	case NID_sha224:
		return "SHA-224";
	case NID_sha256:
		return "SHA-256";
	case NID_sha384:
		return "SHA-384";
	case NID_sha512:
		return "SHA-512";
	default:
		return NULL;
	}
}

static char *obj_text(const ASN1_OBJECT *o)
{
	char buf[128];
	int nid = OBJ_obj2nid(o);

	if (nid != NID_undef)
		return p11i_strdup(OBJ_nid2sn(nid));
	if (OBJ_obj2txt(buf, sizeof(buf), o, 1) <= 0)
		return p11i_strdup("?");
	return p11i_strdup(buf);
}

/* A hash AlgorithmIdentifier (parameters absent or NULL). */
static const char *hash_of_algor(const X509_ALGOR *a)
{
	const ASN1_OBJECT *obj;
	int ptype;
	const void *pval;

	if (a == NULL)
		return "SHA-1";
	X509_ALGOR_get0(&obj, &ptype, &pval, a);
	if (ptype != V_ASN1_UNDEF && ptype != V_ASN1_NULL)
		return NULL;
	return hash_name(OBJ_obj2nid(obj));
}

/*
 * RFC 8017 / RFC 4055 RSAES-OAEP-params, checked before anything is
 * decrypted: an error here is the message's fault and never a reason to
 * fall back to PKCS#1 v1.5.
 */
static p11s_rc check_oaep(p11s_decrypt_report *r, const X509_ALGOR *alg, p11s_error *err)
{
	const ASN1_OBJECT *obj;
	int ptype;
	const void *pval;
	RSA_OAEP_PARAMS *op = NULL;
	X509_ALGOR *mgfhash = NULL;
	const char *h, *mh;
	p11s_rc rc = P11S_OK;

	X509_ALGOR_get0(&obj, &ptype, &pval, alg);
	if (ptype != V_ASN1_SEQUENCE)
		return p11i_err(err, P11S_E_INPUT,
		                "malformed RSA-OAEP parameters in the recipient information (%s); "
		                "refusing to decrypt",
		                ptype == V_ASN1_UNDEF ? "absent" : "not a SEQUENCE");
	op = ASN1_item_unpack(pval, ASN1_ITEM_rptr(RSA_OAEP_PARAMS));
	if (op == NULL) {
		ERR_clear_error();
		return p11i_err(err, P11S_E_INPUT,
		                "malformed RSA-OAEP parameters in the recipient information; "
		                "refusing to decrypt");
	}
	h = hash_of_algor(op->hashFunc);
	if (h == NULL) {
		rc = p11i_err(err, P11S_E_INPUT,
		              "RSA-OAEP with an unsupported or malformed hash in the recipient "
		              "information; refusing to decrypt");
		goto done;
	}
	mh = "SHA-1";
	if (op->maskGenFunc != NULL) {
		X509_ALGOR_get0(&obj, &ptype, &pval, op->maskGenFunc);
		if (OBJ_obj2nid(obj) != NID_mgf1 || ptype != V_ASN1_SEQUENCE ||
		    (mgfhash = ASN1_item_unpack(pval, ASN1_ITEM_rptr(X509_ALGOR))) == NULL ||
		    (mh = hash_of_algor(mgfhash)) == NULL) {
			ERR_clear_error();
			rc = p11i_err(err, P11S_E_INPUT,
			              "RSA-OAEP with an unsupported or malformed mask generation "
			              "function; refusing to decrypt");
			goto done;
		}
	}
	if (op->pSourceFunc != NULL) {
		X509_ALGOR_get0(&obj, &ptype, &pval, op->pSourceFunc);
		if (OBJ_obj2nid(obj) != NID_pSpecified || ptype != V_ASN1_OCTET_STRING) {
			rc =
			    p11i_err(err, P11S_E_INPUT,
			             "RSA-OAEP with a malformed label source; refusing to decrypt");
			goto done;
		}
		if (ASN1_STRING_length(pval) > 0)
			r->label =
			    p11i_hex(ASN1_STRING_get0_data(pval), (size_t)ASN1_STRING_length(pval));
	}
	r->oaep_hash = p11i_strdup(h);
	r->mgf1_hash = p11i_strdup(mh);
	r->key_encryption =
	    p11i_asprintf("RSAES-OAEP (%s, MGF1 %s%s)", h, mh, r->label ? ", with a label" : "");
done:
	X509_ALGOR_free(mgfhash);
	RSA_OAEP_PARAMS_free(op);
	return rc;
}

static const char *kdf_name(int nid, int *cofactor)
{
	*cofactor = 0;
	switch (nid) {
	case NID_dhSinglePass_cofactorDH_sha1kdf_scheme:
		*cofactor = 1;
		/* fall through */
	case NID_dhSinglePass_stdDH_sha1kdf_scheme:
		return "SHA-1";
	case NID_dhSinglePass_cofactorDH_sha224kdf_scheme:
		*cofactor = 1;
		/* fall through */
	case NID_dhSinglePass_stdDH_sha224kdf_scheme:
		return "SHA-224";
	case NID_dhSinglePass_cofactorDH_sha256kdf_scheme:
		*cofactor = 1;
		/* fall through */
	case NID_dhSinglePass_stdDH_sha256kdf_scheme:
		return "SHA-256";
	case NID_dhSinglePass_cofactorDH_sha384kdf_scheme:
		*cofactor = 1;
		/* fall through */
	case NID_dhSinglePass_stdDH_sha384kdf_scheme:
		return "SHA-384";
	case NID_dhSinglePass_cofactorDH_sha512kdf_scheme:
		*cofactor = 1;
		/* fall through */
	case NID_dhSinglePass_stdDH_sha512kdf_scheme:
		return "SHA-512";
	default:
		return NULL;
	}
}

static const char *wrap_name(int nid)
{
	switch (nid) {
	case NID_id_aes128_wrap:
		return "AES-128 key wrap";
	case NID_id_aes192_wrap:
		return "AES-192 key wrap";
	case NID_id_aes256_wrap:
		return "AES-256 key wrap";
	case NID_id_smime_alg_CMS3DESwrap:
		return "3DES key wrap";
	default:
		return NULL;
	}
}

/* Name and check the key-encryption algorithm of the chosen recipient. */
static p11s_rc describe_kea(p11s_decrypt_report *r, p11s_error *err)
{
	const struct rcpt *rc = &r->rcpts[r->chosen];
	X509_ALGOR *alg = NULL, *wrap = NULL;
	ASN1_OCTET_STRING *ukm = NULL, *keyid = NULL;
	X509_ALGOR *pubalg = NULL;
	ASN1_BIT_STRING *pubkey = NULL;
	X509_NAME *issuer = NULL;
	ASN1_INTEGER *sno = NULL;
	const ASN1_OBJECT *obj;
	int ptype, nid, cofactor;
	const void *pval;
	const char *kdf, *wn;
	p11s_rc ret = P11S_OK;

	if (rc->type == CMS_RECIPINFO_TRANS) {
		CMS_RecipientInfo_ktri_get0_algs(rc->ri, NULL, NULL, &alg);
		nid = OBJ_obj2nid(alg->algorithm);
		r->kea = obj_text(alg->algorithm);
		if (nid == NID_rsaEncryption) {
			r->key_encryption = p11i_strdup("RSAES-PKCS1-v1_5");
			r->op = P11S_OP_DECRYPT_RSA_PKCS1;
			return P11S_OK;
		}
		if (nid == NID_rsaesOaep) {
			r->op = P11S_OP_DECRYPT_RSA_OAEP;
			return check_oaep(r, alg, err);
		}
		return p11i_err(err, P11S_E_INPUT, "unsupported key transport algorithm %s",
		                r->kea ? r->kea : "?");
	}
	/* Key agreement: ephemeral-static ECDH, X9.63 KDF, AES key wrap. */
	r->op = P11S_OP_DERIVE_ECDH;
	if (!CMS_RecipientInfo_kari_get0_alg(rc->ri, &alg, &ukm) || alg == NULL)
		return p11i_err(err, P11S_E_INPUT, "malformed key agreement recipient");
	r->kea = obj_text(alg->algorithm);
	kdf = kdf_name(OBJ_obj2nid(alg->algorithm), &cofactor);
	if (kdf == NULL)
		return p11i_err(err, P11S_E_INPUT, "unsupported key agreement algorithm %s",
		                r->kea ? r->kea : "?");
	X509_ALGOR_get0(&obj, &ptype, &pval, alg);
	if (ptype != V_ASN1_SEQUENCE ||
	    (wrap = ASN1_item_unpack(pval, ASN1_ITEM_rptr(X509_ALGOR))) == NULL) {
		ERR_clear_error();
		return p11i_err(err, P11S_E_INPUT,
		                "malformed key agreement parameters (no key wrap algorithm)");
	}
	wn = wrap_name(OBJ_obj2nid(wrap->algorithm));
	if (wn == NULL) {
		char *w = obj_text(wrap->algorithm);

		ret = p11i_err(err, P11S_E_INPUT, "unsupported key wrap algorithm %s", w ? w : "?");
		free(w);
		goto done;
	}
	if (!CMS_RecipientInfo_kari_get0_orig_id(rc->ri, &pubalg, &pubkey, &keyid, &issuer, &sno) ||
	    pubkey == NULL) {
		ret = p11i_err(err, P11S_E_INPUT,
		               "the sender used static-static ECDH (an originator certificate), "
		               "which p11smime does not support: only ephemeral-static ECDH");
		goto done;
	}
	r->kdf = p11i_asprintf("X9.63 %s", kdf);
	r->key_wrap = p11i_strdup(wn);
	r->key_encryption =
	    p11i_asprintf("ECDH%s (X9.63 KDF %s, %s)", cofactor ? " cofactor" : "", kdf, wn);
done:
	X509_ALGOR_free(wrap);
	return ret;
}

/* The content cipher: only what S/MIME 4.0 and old mail use, each in its envelope. */
static p11s_rc check_content_cipher(p11s_decrypt_report *r, const X509_ALGOR *calg, p11s_error *err)
{
	static const struct {
		int nid;
		const char *name;
		int aead;
	} ciphers[] = {
	    {NID_aes_128_cbc, "aes-128-cbc", 0}, {NID_aes_192_cbc, "aes-192-cbc", 0},
	    {NID_aes_256_cbc, "aes-256-cbc", 0}, {NID_des_ede3_cbc, "des-ede3-cbc", 0},
	    {NID_aes_128_gcm, "aes-128-gcm", 1}, {NID_aes_192_gcm, "aes-192-gcm", 1},
	    {NID_aes_256_gcm, "aes-256-gcm", 1},
	};
	const ASN1_OBJECT *obj;
	int nid;
	char *name;

	X509_ALGOR_get0(&obj, NULL, NULL, calg);
	nid = OBJ_obj2nid(obj);
	for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++) {
		if (ciphers[i].nid != nid)
			continue;
		r->content_cipher = p11i_strdup(ciphers[i].name);
		if (ciphers[i].aead && !r->auth)
			return p11i_err(err, P11S_E_INPUT,
			                "malformed message: %s in an EnvelopedData (an AEAD cipher "
			                "belongs in an AuthEnvelopedData, where its tag is)",
			                ciphers[i].name);
		if (!ciphers[i].aead && r->auth)
			return p11i_err(err, P11S_E_INPUT,
			                "malformed message: %s in an AuthEnvelopedData, which "
			                "needs an authenticated cipher",
			                ciphers[i].name);
		if (nid == NID_des_ede3_cbc)
			add_note(r, "the content is encrypted with 3DES (old mail); ask the sender "
			            "for AES");
		return P11S_OK;
	}
	name = obj_text(obj);
	p11i_err(err, P11S_E_INPUT,
	         "unsupported content cipher %s (p11smime decrypts AES-CBC, AES-GCM and 3DES)",
	         name ? name : "?");
	free(name);
	return P11S_E_INPUT;
}

/*
 * The recipient certificate through the S/MIME rules at r->at, with what is
 * known of its key (@p kf).  The verdict is reported, never a refusal: the
 * rules govern outgoing mail, and old mail must stay readable.
 */
static p11s_rc judge_certificate(p11s_decrypt_report *r, const p11s_key_facts *kf, p11s_error *err)
{
	p11s_validate_opts vo;
	char b1[32], b2[32], *failed = NULL;
	p11s_rc rc = p11s_cert_describe(r->cert, &r->info, err);

	if (rc != P11S_OK)
		return rc;
	p11s_validate_opts_init(&vo);
	vo.at = r->at;
	rc = p11s_validate(r->cert, kf, &vo, &r->verdict, err);
	if (rc != P11S_OK)
		return rc;
	if (!p11s_verdict_accepted(r->verdict)) {
		failed = p11s_verdict_failures(r->verdict, 0);
		add_note(r,
		         "the recipient certificate is rejected by the S/MIME rules (%s); the "
		         "message was decrypted anyway, as the rules govern outgoing mail",
		         failed ? failed : "see the report");
		free(failed);
	}
	if (p11s_verdict_in_validity(r->verdict))
		return P11S_OK;
	if (r->info->not_after < r->at) {
		r->expired = 1;
		add_note(r,
		         "the recipient certificate expired on %s (checked at %s); the message "
		         "was decrypted anyway, as old mail must stay readable",
		         p11s_time_format(r->info->not_after, b1, sizeof(b1)),
		         p11s_time_format(r->at, b2, sizeof(b2)));
	}
	if (r->info->not_before > r->at) {
		r->not_yet_valid = 1;
		add_note(r, "the recipient certificate is not valid before %s (checked at %s)",
		         p11s_time_format(r->info->not_before, b1, sizeof(b1)),
		         p11s_time_format(r->at, b2, sizeof(b2)));
	}
	return P11S_OK;
}

/* ------------------------------------------------------------ output */

struct outstage {
	BIO *out;            /* the caller's */
	BIO *eol;            /* LF converter pushed onto out, or NULL */
	BIO *body;           /* eol or out */
	p11i_headers *outer; /* NULL for raw CMS or entity_only */
	int head_done;
	unsigned char *head;
	size_t head_len;
	uint64_t total;
};

static int head_complete(const unsigned char *h, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		if (h[i] == '\n' &&
		    (h[i + 1] == '\n' || (h[i + 1] == '\r' && i + 2 < n && h[i + 2] == '\n')))
			return 1;
	return n > 0 && (h[0] == '\n' || h[0] == '\r');
}

/*
 * The entity's header block, read by mime.c's parser from the buffered
 * start of the plaintext (a block longer than the buffer up to its last
 * whole line); NULL when the plaintext does not start with one.
 */
static p11i_headers *head_parse(const struct outstage *o)
{
	size_t n = o->head_len;
	p11i_headers *h = NULL;
	BIO *b;

	if (!head_complete(o->head, n))
		while (n > 0 && o->head[n - 1] != '\n')
			n--;
	b = BIO_new_mem_buf(o->head, (int)n);
	if (b != NULL && p11i_headers_read(b, HEAD_MAX, &h, NULL) != P11S_OK)
		h = NULL;
	BIO_free(b);
	return h;
}

static int flush_head(struct outstage *o)
{
	unsigned classes = P11I_HDR_OUTER;
	p11i_headers *eh = head_parse(o);
	char *cte = eh != NULL ? p11i_mime_transfer_encoding(eh) : NULL;
	int ok = 1;

	o->head_done = 1;
	/* A binary entity is bytes, not lines: never convert its line ends. */
	if (o->eol != NULL && cte != NULL && strcmp(cte, "binary") == 0)
		o->body = o->out;
	/* The entity becomes the message's content: MIME-Version once, outside or in. */
	if (p11i_headers_find(eh, "MIME-Version", 0) < 0)
		classes |= P11I_HDR_MIME_VERSION;
	free(cte);
	p11i_headers_free(eh);
	if (o->outer != NULL && p11i_headers_write(o->outer, classes, o->out, NULL) != P11S_OK)
		ok = 0;
	if (ok && o->head_len > 0 &&
	    BIO_write(o->body, o->head, (int)o->head_len) != (int)o->head_len)
		ok = 0;
	OPENSSL_clear_free(o->head, HEAD_MAX);
	o->head = NULL;
	return ok ? 0 : -1;
}

static int sink(void *user, const unsigned char *buf, size_t len)
{
	struct outstage *o = user;
	size_t take;

	o->total += len;
	if (!o->head_done) {
		take = len;
		if (o->head_len + take > HEAD_MAX)
			take = HEAD_MAX - o->head_len;
		/* Plaintext: one buffer, wiped when done (a realloc would leave copies). */
		if (o->head == NULL && (o->head = OPENSSL_malloc(HEAD_MAX)) == NULL)
			return -1;
		memcpy(o->head + o->head_len, buf, take);
		o->head_len += take;
		buf += take;
		len -= take;
		if (o->head_len < HEAD_MAX && !head_complete(o->head, o->head_len))
			return 0;
		if (flush_head(o) != 0)
			return -1;
	}
	while (len > 0) {
		int n = BIO_write(o->body, buf, len > INT32_MAX ? INT32_MAX : (int)len);

		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* --------------------------------------------------------- framing */

/* The S/MIME entity's headers say how its body holds the CMS. */
static p11s_rc frame_smime(BIO *in, p11i_headers **h, p11i_cms_encoding *enc, p11s_error *err)
{
	char *ct = NULL, *media = NULL, *st = NULL, *name = NULL, *cte = NULL;
	size_t nl;
	p11s_rc rc;

	rc = p11i_headers_read(in, 0, h, err);
	if (rc != P11S_OK)
		return rc;
	ct = p11i_headers_get(*h, "Content-Type");
	media = ct ? p11i_mime_media_type(ct) : NULL;
	if (media == NULL) {
		rc = p11i_err(err, P11S_E_INPUT,
		              "the message is not encrypted: it has no Content-Type (plain text)");
		goto done;
	}
	if (strcmp(media, "application/pkcs7-mime") == 0 ||
	    strcmp(media, "application/x-pkcs7-mime") == 0) {
		st = p11i_mime_param(ct, "smime-type");
		if (st != NULL && strcasecmp(st, "enveloped-data") != 0 &&
		    strcasecmp(st, "authEnveloped-data") != 0) {
			rc = p11i_err(
			    err, P11S_E_INPUT,
			    "the message is S/MIME but not encrypted (smime-type=%s)%s", st,
			    strcasecmp(st, "signed-data") == 0 ? ": check it with 'p11smime verify'"
			                                       : "");
			goto done;
		}
	} else if (strcmp(media, "application/octet-stream") == 0 &&
	           ((name = p11i_mime_param(ct, "name")) != NULL) && (nl = strlen(name)) > 4 &&
	           strcasecmp(name + nl - 4, ".p7m") == 0) {
		/* Some old clients label the envelope by its file name only. */
	} else {
		rc =
		    p11i_err(err, P11S_E_INPUT, "the message is not S/MIME encrypted (%s)%s", media,
		             strcmp(media, "multipart/signed") == 0
		                 ? ": it is signed; check it with 'p11smime verify'"
		                 : "");
		goto done;
	}
	if (!p11i_headers_body_follows(*h)) {
		rc = p11i_err(err, P11S_E_INPUT, "the encrypted message has no body (truncated)");
		goto done;
	}
	cte = p11i_mime_transfer_encoding(*h);
	if (cte == NULL) {
		rc = p11i_err_nomem(err);
	} else if (strcmp(cte, "base64") == 0 || strcmp(cte, "7bit") == 0) {
		/* A DER body cannot be 7-bit: a missing label means base64 too. */
		*enc = P11I_CMS_BASE64;
	} else if (strcmp(cte, "binary") == 0 || strcmp(cte, "8bit") == 0) {
		*enc = P11I_CMS_DER;
	} else {
		rc = p11i_err(err, P11S_E_INPUT,
		              "unsupported Content-Transfer-Encoding '%s' for an S/MIME envelope",
		              cte);
	}
done:
	free(ct);
	free(media);
	free(st);
	free(name);
	free(cte);
	return rc;
}

/* ------------------------------------------------------------- core */

/* Recover the content key on the token (no trial) and get a cipher context keyed with it. */
static p11s_rc content_cipher_ctx(CMS_ContentInfo *cms, EVP_PKEY *pkey, X509 *cert, BIO **chain,
                                  EVP_CIPHER_CTX **cctx, p11s_error *err)
{
	BIO *dummy;

	ERR_clear_error();
	if (!CMS_decrypt_set1_pkey_and_peer(cms, pkey, cert, NULL))
		return p11i_err_ossl(
		    err, P11S_E_DECRYPT,
		    "cannot recover the content-encryption key with the recipient's "
		    "private key");
	dummy = BIO_new(BIO_s_null());
	if (dummy == NULL)
		return p11i_err_nomem(err);
	/* OpenSSL keys a cipher BIO; its context is all we need, the data we stream ourselves. */
	*chain = CMS_dataInit(cms, dummy);
	if (*chain == NULL) {
		BIO_free(dummy);
		return p11i_err_ossl(err, P11S_E_DECRYPT, "cannot set up the content cipher");
	}
	if (BIO_get_cipher_ctx(*chain, cctx) <= 0 || *cctx == NULL)
		return p11i_err(err, P11S_E_INTERNAL, "no cipher context in the CMS chain");
	return P11S_OK;
}

/*
 * Frame @p in_arg as @p opts says (a buffer BIO pushed in front, *in, for
 * header reading) and parse the CMS up to its content.
 */
static p11s_rc open_stream(BIO *in_arg, const p11s_decrypt_opts *opts, BIO **in, p11i_headers **h,
                           p11i_cms_stream **s, CMS_ContentInfo **cms, p11s_error *err)
{
	p11i_cms_encoding enc = P11I_CMS_DER;
	p11s_rc rc;

	/* Header reading needs BIO_gets() that stops at the line end. */
	*in = BIO_new(BIO_f_buffer());
	if (*in == NULL)
		return p11i_err_nomem(err);
	BIO_push(*in, in_arg);
	switch (opts->inform) {
	case P11S_INFORM_SMIME:
		rc = frame_smime(*in, h, &enc, err);
		break;
	case P11S_INFORM_PEM:
		enc = P11I_CMS_PEM;
		rc = P11S_OK;
		break;
	case P11S_INFORM_DER:
		enc = P11I_CMS_DER;
		rc = P11S_OK;
		break;
	default:
		rc = p11i_err(err, P11S_E_USAGE, "unknown input form");
	}
	if (rc == P11S_OK)
		rc = p11i_cms_stream_new(*in, enc, s, err);
	if (rc == P11S_OK)
		rc = p11i_cms_stream_begin(*s, cms, err);
	return rc;
}

static void close_stream(BIO **in, p11i_headers **h, p11i_cms_stream **s)
{
	p11i_cms_stream_free(*s);
	*s = NULL;
	p11i_headers_free(*h);
	*h = NULL;
	if (*in != NULL) {
		BIO_pop(*in);
		BIO_free(*in);
		*in = NULL;
	}
}

/* Read the input again from @p start to check the tag with the AAD first. */
static p11s_rc second_pass(BIO *in_arg, long start, const p11s_decrypt_opts *opts,
                           p11i_cms_replay *rp, p11s_error *err)
{
	BIO *in = NULL;
	p11i_headers *h = NULL;
	p11i_cms_stream *s = NULL;
	CMS_ContentInfo *cms = NULL;
	p11s_rc rc;

	if (BIO_seek(in_arg, start) < 0)
		return p11i_err(err, P11S_E_IO, "cannot read the input a second time");
	rc = open_stream(in_arg, opts, &in, &h, &s, &cms, err);
	if (rc == P11S_OK)
		rc = p11i_cms_stream_replay(s, rp, err);
	else if (p11s_rc_class(rc) == P11S_CLASS_INPUT)
		rc = p11i_err(err, P11S_E_INPUT, "the input changed while it was being read");
	close_stream(&in, &h, &s);
	return rc;
}

static p11s_rc run(struct chooser *ch, const p11s_decrypt_opts *opts, BIO *in_arg, BIO *out,
                   p11s_decrypt_report **report, p11s_error *err)
{
	p11s_decrypt_opts defaults = {0};
	p11s_decrypt_report *r = NULL;
	p11i_headers *h = NULL;
	p11i_cms_stream *s = NULL;
	p11i_cms_replay *rp = NULL;
	CMS_ContentInfo *cms = NULL;
	EVP_PKEY *pkey = NULL;
	p11s_key_facts kf;
	EVP_CIPHER_CTX *cctx = NULL;
	BIO *in = NULL, *chain = NULL;
	struct outstage o = {0};
	long start;
	p11s_rc rc;

	if (report != NULL)
		*report = NULL;
	if (opts == NULL)
		opts = &defaults;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return p11i_err_nomem(err);
	r->chosen = -1;
	r->at = opts->at ? opts->at : time(NULL);
	/* A file can be read twice; a pipe cannot (see p11i_cms_stream_decrypt()). */
	start = BIO_tell(in_arg);

	rc = open_stream(in_arg, opts, &in, &h, &s, &cms, err);
	if (rc != P11S_OK)
		goto done;
	r->auth = p11i_cms_stream_is_auth(s);
	rc = list_recipients(cms, r, err);
	if (rc == P11S_OK)
		rc = check_content_cipher(r, p11i_cms_stream_content_alg(s), err);
	if (rc != P11S_OK)
		goto done;

	p11s_key_facts_init(&kf);
	rc = ch->choose(ch, r, &pkey, &kf, err);
	if (rc != P11S_OK)
		goto done;
	rc = judge_certificate(r, &kf, err);
	if (rc == P11S_OK)
		rc = content_cipher_ctx(cms, pkey, r->cert, &chain, &cctx, err);
	/* CMS hides a key that failed (a random key instead): say why it did. */
	if (rc == P11S_OK || p11s_rc_class(rc) == P11S_CLASS_CRYPTO || rc == P11S_E_DECRYPT) {
		p11s_rc lrc = p11s_key_login_failure(r->key, err);

		if (lrc != P11S_OK)
			rc = lrc;
	}
	if (rc != P11S_OK)
		goto done;
	/* The mechanism that ran: raw RSA when the token refused OAEP's parameters. */
	if (r->key != NULL && p11s_key_last_mechanism(r->key) != NULL)
		r->mechanism = p11s_key_last_mechanism(r->key);
	r->key = NULL; /* the chooser's cleanup frees it */

	o.out = out;
	o.body = out;
	if (h != NULL && !opts->entity_only)
		o.outer = h;
	if (h != NULL && !opts->keep_line_ends && p11i_headers_eol(h) == P11I_EOL_LF) {
		o.eol = p11i_bio_eol_new(P11I_EOL_LF);
		if (o.eol == NULL) {
			rc = p11i_err_nomem(err);
			goto done;
		}
		o.body = BIO_push(o.eol, out);
	}
	if (h == NULL)
		o.head_done = 1; /* raw CMS: the content as it is */
	rc = p11i_cms_stream_decrypt(s, cctx, sink, &o, start >= 0 ? &rp : NULL, err);
	if (rc == P11S_OK && !o.head_done && flush_head(&o) != 0)
		rc = p11i_err(err, P11S_E_IO, "cannot write the decrypted message");
	if (rc == P11S_OK && BIO_flush(o.body) <= 0)
		rc = p11i_err(err, P11S_E_IO, "cannot write the decrypted message");
	r->content_bytes = o.total;
	r->auth_attrs = p11i_cms_stream_had_auth_attrs(s);
	if (rc == P11S_OK && rp != NULL) {
		/* The outer headers (o.outer) are no longer needed: h can go with the stream. */
		close_stream(&in, &h, &s);
		rc = second_pass(in_arg, start, opts, rp, err);
	}
	if (rc == P11S_OK) {
		r->complete = 1;
		r->authenticated = r->auth;
	}
done:
	p11i_cms_replay_free(rp);
	if (o.eol != NULL) {
		BIO_pop(o.eol);
		BIO_free(o.eol);
	}
	OPENSSL_clear_free(o.head, HEAD_MAX);
	BIO_free_all(chain);
	/* The CMS may hold a reference to the token key: gone before the key is. */
	close_stream(&in, &h, &s);
	if (ch->cleanup != NULL)
		ch->cleanup(ch);
	if (report != NULL && r->nrcpts > 0)
		*report = r;
	else
		p11s_decrypt_report_free(r);
	return rc;
}

/* ------------------------------------------------ a key in software */

struct pkey_chooser {
	struct chooser base;
	EVP_PKEY *pkey;
	X509 *cert;
};

static p11s_rc choose_given(struct chooser *c, p11s_decrypt_report *r, EVP_PKEY **pkey,
                            p11s_key_facts *kf, p11s_error *err)
{
	struct pkey_chooser *pc = (struct pkey_chooser *)c;

	for (size_t i = 0; i < r->nrcpts; i++) {
		if (rcpt_matches(&r->rcpts[i], pc->cert)) {
			r->rcpts[i].matched = 1;
			if (r->chosen < 0)
				r->chosen = (long)i;
		}
	}
	if (r->chosen < 0) {
		list_candidates(r, err);
		return p11i_err(err, P11S_E_NO_RECIPIENT,
		                "the given certificate is not among the message's recipients; it "
		                "names:");
	}
	X509_up_ref(pc->cert);
	r->cert = pc->cert;
	*pkey = pc->pkey;
	p11s_key_facts_from_pkey(kf, pc->pkey, pc->cert);
	return describe_kea(r, err);
}

p11s_rc p11s_decrypt_with_pkey(EVP_PKEY *pkey, X509 *cert, const p11s_decrypt_opts *opts, BIO *in,
                               BIO *out, p11s_decrypt_report **report, p11s_error *err)
{
	struct pkey_chooser pc = {{choose_given, NULL}, pkey, cert};

	if (pkey == NULL || cert == NULL || in == NULL || out == NULL)
		return p11i_err(err, P11S_E_USAGE, "p11s_decrypt_with_pkey: missing argument");
	return run(&pc.base, opts, in, out, report, err);
}

/* ----------------------------------------------------- keys on tokens */

struct token_chooser {
	struct chooser base;
	p11s_ctx *ctx;
	const char *selector;
	p11s_object_list *list;
	p11s_key *key;
};

static const p11s_objects_opts certs_only = {.login = 0, .certificates = 1};
static const p11s_objects_opts with_keys = {.login = 1, .certificates = 1, .private_keys = 1};

/* Mark every recipient @p x matches; the first one in message order wins. */
static int match_cert(p11s_decrypt_report *r, X509 *x, long *first)
{
	int any = 0;

	*first = -1;
	for (size_t i = 0; i < r->nrcpts; i++) {
		if (x != NULL && rcpt_matches(&r->rcpts[i], x)) {
			if (*first < 0)
				*first = (long)i;
			any = 1;
		}
	}
	return any;
}

static p11s_rc no_recipient(p11s_decrypt_report *r, const char *what, p11s_error *err)
{
	list_candidates(r, err);
	return p11i_err(err, P11S_E_NO_RECIPIENT, "%s; the message is for:", what);
}

/*
 * How many tokens keep objects behind a login (some smartcards keep their
 * certificates private too).  More than one: a login to
 * look for private certificates would try one PIN on all of them, which
 * the PIN policy forbids (a smartcard's PIN must not cost a YubiKey a try).
 */
static size_t tokens_wanting_login(p11s_ctx *ctx)
{
	p11s_token_list *tl = NULL;
	p11s_error *e = p11s_error_new();
	size_t n = 0;

	if (e != NULL && p11s_tokens(ctx, NULL, &tl, e) == P11S_OK)
		for (size_t i = 0; i < p11s_token_list_count(tl); i++) {
			unsigned f = p11s_token_flags(p11s_token_list_get(tl, i));

			/* An uninitialised token holds nothing to log in to. */
			n += (f & P11S_TOKEN_LOGIN_REQUIRED) && (f & P11S_TOKEN_INITIALIZED);
		}
	p11s_token_list_free(tl);
	p11s_error_free(e);
	return n;
}

/*
 * Certificates are matched without a login (no PIN for mail that is not
 * ours); when none is a recipient and a token wants a login, they are
 * looked for again after it (certificates kept private).  The key of the
 * matching one is then found in an enumeration with login.
 */
static p11s_rc choose_on_token(struct chooser *c, p11s_decrypt_report *r, EVP_PKEY **pkey,
                               p11s_key_facts *kf, p11s_error *err)
{
	struct token_chooser *tc = (struct token_chooser *)c;
	const p11s_object *cert = NULL, *o, *key_obj;
	p11s_object_list *pub = NULL;
	char *cert_uri = NULL;
	long first, best = -1;
	size_t ncerts = 0, wanting = 0;
	p11s_rc rc;

	if (tc->selector != NULL) {
		rc = p11s_select_certificate(tc->ctx, tc->selector, &with_keys, &tc->list, &cert,
		                             err);
		if (rc != P11S_OK)
			return rc;
		if (!match_cert(r, p11s_object_x509(cert), &best)) {
			rc = no_recipient(
			    r,
			    "the certificate selected with --key is not a recipient of "
			    "this message",
			    err);
			return rc;
		}
	} else {
		/* Which certificate on the tokens names a recipient, earliest in the message first.
		 */
		for (int pass = 0; pass < 2 && best < 0; pass++) {
			/* Tokens that keep certificates private show them only after a login. */
			if (pass == 1 && ((wanting = tokens_wanting_login(tc->ctx)) > 1 ||
			                  (ncerts > 0 && wanting == 0)))
				break;
			rc = p11s_objects(tc->ctx, NULL, pass == 0 ? &certs_only : &with_keys, &pub,
			                  err);
			if (rc != P11S_OK && pass == 1 && ncerts > 0) {
				/* What the public certificates say comes first. */
				char *why = p11i_strdup(p11s_error_message(err));

				list_candidates(r, err);
				rc = p11i_err(
				    err, P11S_E_NO_RECIPIENT,
				    "no certificate on the token is a recipient of this "
				    "message (none of the public ones; the login to look for "
				    "private ones failed: %s); the message is for:",
				    why ? why : "out of memory");
				free(why);
				return rc;
			}
			if (rc != P11S_OK)
				return rc;
			for (size_t i = 0; i < p11s_object_list_count(pub); i++) {
				o = p11s_object_list_get(pub, i);
				if (p11s_object_get_class(o) != P11S_OBJ_CERTIFICATE)
					continue;
				ncerts++;
				if (match_cert(r, p11s_object_x509(o), &first) &&
				    (best < 0 || first < best)) {
					best = first;
					free(cert_uri);
					cert_uri = p11i_strdup(p11s_object_uri(o));
				}
			}
			p11s_object_list_free(pub);
			pub = NULL;
		}
		if (best < 0 && wanting > 1) {
			char why[256];

			snprintf(why, sizeof(why),
			         "no public certificate on the tokens is a recipient of this "
			         "message; not logging in to the %zu tokens with one PIN (--key "
			         "with a pkcs11: URI naming the token searches its private ones)",
			         wanting);
			return no_recipient(r, why, err);
		}
		if (best < 0)
			return no_recipient(r,
			                    "no certificate on the token is a recipient of this "
			                    "message",
			                    err);
		if (cert_uri == NULL)
			return p11i_err_nomem(err);
		rc = p11s_select_certificate(tc->ctx, cert_uri, &with_keys, &tc->list, &cert, err);
		free(cert_uri);
		if (rc != P11S_OK)
			return rc;
		if (!match_cert(r, p11s_object_x509(cert), &best))
			return p11i_err(err, P11S_E_INTERNAL, "the recipient certificate changed");
	}
	for (size_t i = 0; i < r->nrcpts; i++)
		r->rcpts[i].matched = rcpt_matches(&r->rcpts[i], p11s_object_x509(cert));
	r->chosen = best;
	r->cert = p11s_object_x509(cert);
	X509_up_ref(r->cert);
	r->cert_uri = p11i_strdup(p11s_object_uri(cert));
	rc = describe_kea(r, err);
	if (rc != P11S_OK)
		return rc;

	key_obj = p11s_object_private_key(cert);
	switch (p11s_object_pairing(cert)) {
	case P11S_PAIR_CONFIRMED:
	case P11S_PAIR_UNCONFIRMED:
		break;
	case P11S_PAIR_MISMATCH:
		return p11i_err(err, P11S_E_NO_KEY,
		                "the private key with the id of certificate %s is not its key",
		                p11s_object_uri(cert));
	default:
		key_obj = NULL;
	}
	if (key_obj == NULL)
		return p11i_err(err, P11S_E_NO_KEY,
		                "certificate %s is a recipient, but the token holds no private key "
		                "for it",
		                p11s_object_uri(cert));
	rc = p11s_key_open(tc->ctx, key_obj, &tc->key, err);
	if (rc != P11S_OK)
		return rc;
	r->key_uri = p11i_strdup(p11s_key_uri(tc->key));
	rc = p11s_key_check_op(tc->key, r->op, &r->mechanism, err);
	if (rc != P11S_OK)
		return rc;
	r->key = tc->key;
	*pkey = p11s_key_pkey(tc->key);
	p11s_key_facts_from_token(kf, cert);
	return P11S_OK;
}

static void token_cleanup(struct chooser *c)
{
	struct token_chooser *tc = (struct token_chooser *)c;

	/* The key first: its EVP_PKEY refers to the slot the list's context holds. */
	p11s_key_free(tc->key);
	tc->key = NULL;
	p11s_object_list_free(tc->list);
	tc->list = NULL;
}

p11s_rc p11s_decrypt(p11s_ctx *ctx, const p11s_decrypt_opts *opts, BIO *in, BIO *out,
                     p11s_decrypt_report **report, p11s_error *err)
{
	struct token_chooser tc = {{choose_on_token, token_cleanup}, ctx, NULL, NULL, NULL};

	if (ctx == NULL || in == NULL || out == NULL)
		return p11i_err(err, P11S_E_USAGE, "p11s_decrypt: missing argument");
	tc.selector = opts ? opts->key : NULL;
	return run(&tc.base, opts, in, out, report, err);
}
