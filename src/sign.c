/*
 * Signing outgoing mail: the signer is checked once (rules, validity,
 * pairing, mechanism), then each message streams through OpenSSL's CMS
 * digest BIOs and is signed on the token at the end.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "common.h"
#include "hooks_internal.h"
#include "mailbox.h"
#include "p11smime/certs.h"
#include "mime.h"
#include "offload.h"
#include "outcore.h"
#include "p11smime/rules.h"
#include "p11smime/sign.h"

struct p11s_signer {
	X509 *cert;
	EVP_PKEY *pkey;         /* software key (p11s_signer_new), referenced */
	p11s_key *key;          /* token key (p11s_signer_open) */
	STACK_OF(X509) * certs; /* included after the signer's, in order */
	p11i_certset *seen;     /* the signer's and those in certs */
	const EVP_MD *md;
	EVP_MD *md_fetched; /* md, fetched once (each init with md would fetch it again) */
	/*
	 * A detached signature's fixed parts (NULL: OpenSSL builds the message's
	 * CMS).  Made at the signer's second message (signer_template()): set
	 * once, then read by every thread sharing the signer.
	 */
	_Atomic(struct sd_template *) tpl;
	atomic_int tpl_ok;    /* the signer's shape has a template (template_fits()) */
	atomic_uint messages; /* messages begun, to know the second */
	const char *digest, *micalg, *algorithm, *mechanism;
	int pss, opaque;
	char *uri, *key_uri, *subject;
};

void p11s_sign_opts_init(p11s_sign_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
}

static void template_free(struct sd_template *t);
static void signer_prepare(p11s_signer *s);

void p11s_signer_free(p11s_signer *s)
{
	if (s == NULL)
		return;
	X509_free(s->cert);
	EVP_PKEY_free(s->pkey);
	p11s_key_free(s->key);
	sk_X509_pop_free(s->certs, X509_free);
	p11i_certset_free(s->seen);
	EVP_MD_free(s->md_fetched);
	template_free(atomic_load(&s->tpl));
	free(s->uri);
	free(s->key_uri);
	free(s->subject);
	free(s);
}

X509 *p11s_signer_certificate(const p11s_signer *s)
{
	return s->cert;
}

const char *p11s_signer_uri(const p11s_signer *s)
{
	return s->uri;
}

const char *p11s_signer_key_uri(const p11s_signer *s)
{
	return s->key_uri;
}

const char *p11s_signer_subject(const p11s_signer *s)
{
	return s->subject;
}

const char *p11s_signer_digest(const p11s_signer *s)
{
	return s->digest;
}

const char *p11s_signer_micalg(const p11s_signer *s)
{
	return s->micalg;
}

const char *p11s_signer_algorithm(const p11s_signer *s)
{
	return s->algorithm;
}

const char *p11s_signer_mechanism(const p11s_signer *s)
{
	/* After a signature, the mechanism that ran (raw RSA: the token refused PSS's parameters).
	 */
	if (s->key != NULL && p11s_key_last_mechanism(s->key) != NULL)
		return p11s_key_last_mechanism(s->key);
	return s->mechanism;
}

size_t p11s_signer_certificate_count(const p11s_signer *s)
{
	return 1 + (size_t)sk_X509_num(s->certs);
}

static EVP_PKEY *signer_pkey(const p11s_signer *s)
{
	return s->key ? p11s_key_pkey(s->key) : s->pkey;
}

/* ------------------------------------------------------------ preparing */

/* Digest, algorithm and the identity strings; no token involved. */
static p11s_rc choose_algorithms(p11s_signer *s, const p11s_sign_opts *opts, p11s_error *err)
{
	EVP_PKEY *pub = X509_get0_pubkey(s->cert);
	int is_rsa, is_ec, bits;
	const char *digest = opts->digest;

	if (pub == NULL)
		return p11i_err_ossl(err, P11S_E_INPUT,
		                     "the signer certificate's public key is "
		                     "unreadable");
	is_rsa = EVP_PKEY_is_a(pub, "RSA");
	is_ec = EVP_PKEY_is_a(pub, "EC");
	bits = EVP_PKEY_get_bits(pub);
	if (!is_rsa && !is_ec)
		return p11i_err(err, P11S_E_REJECTED, "the signer's key is %s, not RSA or EC",
		                EVP_PKEY_get0_type_name(pub));
	if (opts->pss && !is_rsa)
		return p11i_err(err, P11S_E_USAGE,
		                "--pss needs an RSA key; the signer's key is EC");
	if (digest == NULL)
		digest = is_ec && bits > 384 ? "sha512" : is_ec && bits > 256 ? "sha384" : "sha256";
	if (strcmp(digest, "sha256") == 0) {
		s->md = EVP_sha256();
		s->digest = "sha256";
		s->micalg = "sha-256";
	} else if (strcmp(digest, "sha384") == 0) {
		s->md = EVP_sha384();
		s->digest = "sha384";
		s->micalg = "sha-384";
	} else if (strcmp(digest, "sha512") == 0) {
		s->md = EVP_sha512();
		s->digest = "sha512";
		s->micalg = "sha-512";
	} else {
		return p11i_err(err, P11S_E_USAGE,
		                "unknown digest '%s' (use sha256, sha384 or sha512)", digest);
	}
	s->pss = opts->pss;
	s->opaque = opts->opaque;
	s->algorithm = is_ec ? "ecdsa" : opts->pss ? "rsassa-pss" : "rsassa-pkcs1-v1_5";
	s->subject = p11s_cert_name_string(X509_get_subject_name(s->cert));
	if (s->subject == NULL)
		return p11i_err_nomem(err);
	return P11S_OK;
}

/*
 * The rules at opts->at, and the refusals the issue lists: rejected,
 * outside validity, no digitalSignature, key not the certificate's.
 */
static p11s_rc check_rules(X509 *cert, const p11s_key_facts *kf, time_t at, p11s_error *err)
{
	p11s_validate_opts vo;
	p11s_verdict *v = NULL;
	p11s_rc rc;
	char *why = NULL;

	p11s_validate_opts_init(&vo);
	vo.at = at;
	rc = p11s_validate(cert, kf, &vo, &v, err);
	if (rc != P11S_OK)
		return rc;
	if (!p11s_verdict_accepted(v)) {
		why = p11s_verdict_failures(v, 1);
		rc = p11i_err(err, P11S_E_REJECTED, "the signer certificate is rejected: %s",
		              why ? why : "a rule failed");
	} else if (!p11s_verdict_in_validity(v)) {
		const char *msg = NULL;

		p11s_verdict_rule(v, P11S_RULE_VALIDITY, &msg);
		rc = p11i_err(err, P11S_E_NOT_VALID_NOW,
		              "the signer certificate is not valid at the signing time: %s",
		              msg ? msg : "outside its validity period");
	} else if (kf != NULL && kf->present && kf->matches != 1) {
		rc = p11i_err(err, P11S_E_KEY_MISMATCH,
		              kf->matches == 0
		                  ? "the private key does not match the signer certificate"
		                  : "the private key could not be confirmed to match the signer "
		                    "certificate");
	} else if (!p11s_verdict_can_sign(v)) {
		const char *reason = p11s_verdict_cannot_sign_reason(v);

		rc = p11i_err(err, P11S_E_REJECTED, "the signer certificate cannot sign: %s",
		              reason ? reason : "Key Usage lacks digitalSignature");
	}
	free(why);
	p11s_verdict_free(v);
	return rc;
}

/*
 * Each certificate once, the signer's not again: a set by content, so that
 * a --chain of 10,000 certificates is linear (a scan per certificate took
 * 7.7 s).
 */
static p11s_rc add_cert(p11s_signer *s, X509 *x)
{
	int r;

	if (s->seen == NULL) {
		s->seen = p11i_certset_new();
		if (s->seen == NULL || p11i_certset_add(s->seen, s->cert) < 0)
			return P11S_E_NOMEM;
	}
	r = p11i_certset_add(s->seen, x);
	if (r < 0)
		return P11S_E_NOMEM;
	if (r == 0)
		return P11S_OK;
	if (!X509_up_ref(x))
		return P11S_E_NOMEM;
	if (!sk_X509_push(s->certs, x)) {
		X509_free(x);
		return P11S_E_NOMEM;
	}
	return P11S_OK;
}

/* The CA certificates of @p pool on the signer's issuer path, nearest first. */
static p11s_rc add_issuer_path(p11s_signer *s, STACK_OF(X509) * pool)
{
	X509 *cur = s->cert;

	for (int depth = 0; depth < 16; depth++) {
		X509 *issuer = NULL;

		if (X509_check_issued(cur, cur) == X509_V_OK)
			break; /* self-signed: the root */
		for (int i = 0; i < sk_X509_num(pool) && issuer == NULL; i++) {
			X509 *c = sk_X509_value(pool, i);

			if (X509_check_ca(c) > 0 && X509_cmp(c, cur) != 0 &&
			    X509_check_issued(c, cur) == X509_V_OK)
				issuer = c;
		}
		if (issuer == NULL)
			break;
		if (add_cert(s, issuer) != P11S_OK)
			return P11S_E_NOMEM;
		cur = issuer;
	}
	return P11S_OK;
}

static p11s_signer *signer_alloc(void)
{
	p11s_signer *s = calloc(1, sizeof(*s));

	if (s != NULL && (s->certs = sk_X509_new_null()) == NULL) {
		free(s);
		s = NULL;
	}
	return s;
}

p11s_rc p11s_signer_new(X509 *cert, EVP_PKEY *pkey, STACK_OF(X509) * chain,
                        const p11s_sign_opts *opts, p11s_signer **out, p11s_error *err)
{
	p11s_signer *s;
	p11s_key_facts kf;
	p11s_rc rc;
	p11s_sign_opts defaults;

	if (opts == NULL) {
		p11s_sign_opts_init(&defaults);
		opts = &defaults;
	}
	if (cert == NULL || pkey == NULL || out == NULL)
		return p11i_err(err, P11S_E_USAGE, "a certificate and a key are needed to sign");
	s = signer_alloc();
	if (s == NULL)
		return p11i_err_nomem(err);
	X509_up_ref(cert);
	s->cert = cert;
	EVP_PKEY_up_ref(pkey);
	s->pkey = pkey;
	rc = choose_algorithms(s, opts, err);
	if (rc == P11S_OK) {
		p11s_key_facts_from_pkey(&kf, pkey, cert);
		rc = check_rules(cert, &kf, opts->at, err);
	}
	for (int i = 0; rc == P11S_OK && i < sk_X509_num(chain); i++)
		if (add_cert(s, sk_X509_value(chain, i)) != P11S_OK)
			rc = p11i_err_nomem(err);
	if (rc != P11S_OK) {
		p11s_signer_free(s);
		return rc;
	}
	signer_prepare(s);
	*out = s;
	return P11S_OK;
}

/*
 * The CA certificates on the signer's token, to complete the chain.  The
 * selection's list is the whole enumeration of the matching tokens (the
 * selector only picks in it), so no second enumeration is needed.
 */
static p11s_rc add_token_cas(p11s_signer *s, const p11s_object_list *list, const p11s_object *cert)
{
	STACK_OF(X509) *pool = sk_X509_new_null();
	p11s_rc rc;

	if (pool == NULL)
		return P11S_E_NOMEM;
	for (size_t i = 0; i < p11s_object_list_count(list); i++) {
		const p11s_object *o = p11s_object_list_get(list, i);
		X509 *x = p11s_object_x509(o);

		if (p11s_object_get_class(o) == P11S_OBJ_CERTIFICATE && x != NULL &&
		    p11s_object_token(o) == p11s_object_token(cert) && X509_check_ca(x) > 0 &&
		    !sk_X509_push(pool, x)) {
			sk_X509_free(pool);
			return P11S_E_NOMEM;
		}
	}
	rc = add_issuer_path(s, pool);
	sk_X509_free(pool); /* the list owns the certificates */
	return rc;
}

p11s_rc p11s_signer_open(p11s_ctx *ctx, const p11s_sign_opts *opts, p11s_signer **out,
                         p11s_error *err)
{
	p11s_objects_opts oo = {0};
	p11s_object_list *list = NULL;
	const p11s_object *cert = NULL, *keyobj;
	p11s_signer *s = NULL;
	p11s_key_facts kf;
	p11s_rc rc;
	p11s_op op;
	p11s_sign_opts defaults;

	if (opts == NULL) {
		p11s_sign_opts_init(&defaults);
		opts = &defaults;
	}
	if (ctx == NULL || opts->signer == NULL || out == NULL)
		return p11i_err(err, P11S_E_USAGE, "a signer (pkcs11: URI or e-mail) is needed");
	/* "PKCS11:..." is left to the selection, which names it without its pin-value. */
	if (strncasecmp(opts->signer, "pkcs11:", 7) != 0) {
		char why[128];

		/* An address must be a mailbox: "nobody" or "<a@b>" never picks a certificate. */
		if (!p11i_mailbox_parse(opts->signer, strlen(opts->signer), why, sizeof(why)))
			return p11i_err(err, P11S_E_BAD_URI,
			                "'%s' is neither a pkcs11: URI nor an e-mail address (%s)",
			                opts->signer, why);
	}
	s = signer_alloc();
	if (s == NULL)
		return p11i_err_nomem(err);
	oo.login = 1;
	oo.certificates = 1;
	oo.private_keys = 1;
	oo.public_keys = 1;
	rc = p11s_select_certificate(ctx, opts->signer, &oo, &list, &cert, err);
	if (rc != P11S_OK)
		goto out;
	if (p11s_object_x509(cert) == NULL) {
		rc = p11i_err(err, P11S_E_INPUT, "the certificate %s does not parse",
		              p11s_object_uri(cert));
		goto out;
	}
	s->cert = p11s_object_x509(cert);
	X509_up_ref(s->cert);
	/* The selection compares bytes; the address must also be a SAN mailbox of the certificate.
	 */
	if (strncmp(opts->signer, "pkcs11:", 7) != 0 &&
	    !p11i_cert_has_mailbox(s->cert, opts->signer, P11I_MAILBOX_IN_SAN)) {
		rc =
		    p11i_err(err, P11S_E_NOT_FOUND,
		             "no certificate on the token has the e-mail address %s", opts->signer);
		goto out;
	}
	s->uri = p11i_strdup(p11s_object_uri(cert));
	rc = choose_algorithms(s, opts, err);
	if (rc != P11S_OK)
		goto out;

	p11s_key_facts_from_token(&kf, cert);
	rc = check_rules(s->cert, &kf, opts->at, err);
	if (rc != P11S_OK)
		goto out;
	/* A MISMATCH key is never offered; UNCONFIRMED is not good enough to sign with. */
	keyobj = p11s_object_private_key(cert);
	if (p11s_object_pairing(cert) != P11S_PAIR_CONFIRMED || keyobj == NULL) {
		rc = p11i_err(err, keyobj == NULL ? P11S_E_NO_KEY : P11S_E_KEY_MISMATCH,
		              "the private key of %s is %s", s->uri,
		              keyobj == NULL ? "not on the token"
		                             : "not confirmed to match the certificate");
		goto out;
	}

	for (size_t i = 0; i < opts->chain_count; i++) {
		p11s_cert_list *files = NULL;

		rc = p11s_certs_read_file(opts->chain_files[i], NULL, &files, err);
		for (size_t k = 0; rc == P11S_OK && k < p11s_cert_list_count(files); k++)
			if (add_cert(s, p11s_cert_list_get(files, k)) != P11S_OK)
				rc = p11i_err_nomem(err);
		p11s_cert_list_free(files);
		if (rc != P11S_OK)
			goto out;
	}
	if (add_token_cas(s, list, cert) != P11S_OK) {
		rc = p11i_err_nomem(err);
		goto out;
	}

	rc = p11s_key_open(ctx, keyobj, &s->key, err);
	if (rc != P11S_OK)
		goto out;
	s->key_uri = p11i_strdup(p11s_key_uri(s->key));
	op = strcmp(s->algorithm, "ecdsa") == 0 ? P11S_OP_SIGN_ECDSA
	     : s->pss                           ? P11S_OP_SIGN_RSA_PSS
	                                        : P11S_OP_SIGN_RSA_PKCS1;
	rc = p11s_key_check_op(s->key, op, &s->mechanism, err);
	if (rc != P11S_OK) {
		rc = p11i_err(err, rc, "cannot sign with %s: %s",
		              op == P11S_OP_SIGN_RSA_PSS ? "RSA-PSS"
		              : op == P11S_OP_SIGN_ECDSA ? "ECDSA"
		                                         : "RSA PKCS#1 v1.5",
		              p11s_error_message(err));
		goto out;
	}
	if (s->uri == NULL || s->key_uri == NULL)
		rc = p11i_err_nomem(err);
out:
	p11s_object_list_free(list);
	if (rc != P11S_OK) {
		p11s_signer_free(s);
		return rc;
	}
	signer_prepare(s);
	*out = s;
	return P11S_OK;
}

/* -------------------------------------------------------------- signing */

/*
 * RSA-PSS parameters as OpenSSL will write them at signing time (salt =
 * digest length, MGF1 with the same digest).  An opaque signature is
 * encoded before it is signed, and OpenSSL 3.0 cannot encode the
 * placeholder it leaves there for PSS ("illegal zero content"): give it
 * the real identifier up front.
 */
static int preset_pss_algorithm(CMS_SignerInfo *si, const EVP_MD *md)
{
	RSA_PSS_PARAMS *pss = RSA_PSS_PARAMS_new();
	X509_ALGOR *mgf1md = X509_ALGOR_new(), *sig = NULL;
	ASN1_STRING *mgf1 = NULL, *params = NULL;
	int ok = 0;

	if (pss == NULL || mgf1md == NULL)
		goto out;
	pss->hashAlgorithm = X509_ALGOR_new();
	pss->maskGenAlgorithm = X509_ALGOR_new();
	pss->saltLength = ASN1_INTEGER_new();
	if (pss->hashAlgorithm == NULL || pss->maskGenAlgorithm == NULL || pss->saltLength == NULL)
		goto out;
	X509_ALGOR_set_md(pss->hashAlgorithm, md);
	X509_ALGOR_set_md(mgf1md, md);
	if (ASN1_item_pack(mgf1md, ASN1_ITEM_rptr(X509_ALGOR), &mgf1) == NULL ||
	    !X509_ALGOR_set0(pss->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1), V_ASN1_SEQUENCE, mgf1))
		goto out;
	mgf1 = NULL;
	if (!ASN1_INTEGER_set(pss->saltLength, EVP_MD_get_size(md)) ||
	    ASN1_item_pack(pss, ASN1_ITEM_rptr(RSA_PSS_PARAMS), &params) == NULL)
		goto out;
	CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &sig);
	if (sig == NULL ||
	    !X509_ALGOR_set0(sig, OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE, params))
		goto out;
	params = NULL;
	ok = 1;
out:
	ASN1_STRING_free(mgf1);
	ASN1_STRING_free(params);
	X509_ALGOR_free(mgf1md);
	RSA_PSS_PARAMS_free(pss);
	return ok;
}

/*
 * What we can decrypt, strongest first (RFC 8551 2.5.2).  OpenSSL's default
 * list would also invite correspondents to use DES and 40-bit RC2.
 */
static int add_capabilities(CMS_SignerInfo *si)
{
	static const int nids[] = {NID_aes_256_gcm, NID_aes_128_gcm, NID_aes_256_cbc,
	                           NID_aes_192_cbc, NID_aes_128_cbc};
	STACK_OF(X509_ALGOR) *caps = NULL;
	int ok = 1;

	for (size_t i = 0; ok && i < sizeof(nids) / sizeof(nids[0]); i++)
		ok = CMS_add_simple_smimecap(&caps, nids[i], -1);
	ok = ok && CMS_add_smimecap(si, caps);
	sk_X509_ALGOR_pop_free(caps, X509_ALGOR_free);
	return ok;
}

static CMS_ContentInfo *new_cms(p11s_signer *s, p11s_error *err)
{
	unsigned flags = CMS_PARTIAL | CMS_STREAM | CMS_BINARY | (s->opaque ? 0 : CMS_DETACHED);
	CMS_ContentInfo *cms = CMS_sign(NULL, NULL, NULL, NULL, flags);
	CMS_SignerInfo *si;

	if (cms == NULL) {
		p11i_err_ossl(err, P11S_E_CRYPTO, "cannot start a signature");
		return NULL;
	}
	si = CMS_add1_signer(cms, s->cert, signer_pkey(s), s->md,
	                     flags | CMS_NOSMIMECAP | (s->pss ? CMS_KEY_PARAM : 0));
	if (si == NULL || !add_capabilities(si))
		goto fail;
	if (s->pss) {
		EVP_PKEY_CTX *pctx = CMS_SignerInfo_get0_pkey_ctx(si);

		if (pctx == NULL ||
		    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
		    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0 ||
		    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, s->md) <= 0 ||
		    !preset_pss_algorithm(si, s->md))
			goto fail;
	}
	for (int i = 0; i < sk_X509_num(s->certs); i++)
		if (!CMS_add1_cert(cms, sk_X509_value(s->certs, i)))
			goto fail;
	return cms;
fail:
	p11i_err_ossl(err, P11S_E_CRYPTO, "cannot set up the %s signature", s->algorithm);
	CMS_ContentInfo_free(cms);
	return NULL;
}

/* ------------------------------------------- a prepared detached signature */

/*
 * Of a detached SignedData (multipart/signed), only the signingTime, the
 * messageDigest and the signature change from one message to the next.
 * The rest (the certificates, the SignerInfo's identifier, the algorithm
 * identifiers, the contentType and SMIMECapabilities attributes) is
 * encoded once, by OpenSSL's own CMS code, when the signer is prepared:
 * building and encoding a CMS_ContentInfo per message was a tenth of a
 * P-256 batch's time.  Each message then gets its attributes encoded and
 * sorted here (DER's SET OF order), its signature from the key, and the
 * enclosing lengths.  The bytes are those OpenSSL writes (tests/unit/
 * test_sign.c compares the two).
 */
#define TPL_ATTRS 8

struct sd_template {
	unsigned char *der; /* the template's encoding; the pieces below point into it */
	const unsigned char *ci_oid, *sd_head, *si_head, *sig_alg;
	size_t ci_oid_len, sd_head_len, si_head_len, sig_alg_len;
	const unsigned char *attr[TPL_ATTRS]; /* the fixed signed attributes, whole */
	size_t attr_len[TPL_ATTRS];
	int nattrs;
};

static void template_free(struct sd_template *t)
{
	if (t == NULL)
		return;
	OPENSSL_free(t->der);
	free(t);
}

/* One DER TLV at *p (single-byte tag, definite length) within @p end; 0 if malformed. */
static int tlv(const unsigned char **p, const unsigned char *end, unsigned char *tag,
               const unsigned char **content, size_t *len)
{
	const unsigned char *q = *p;
	size_t n = 0;

	if (end - q < 2 || (q[0] & 0x1f) == 0x1f)
		return 0;
	*tag = q[0];
	if (q[1] < 0x80) {
		n = q[1];
		q += 2;
	} else {
		int k = q[1] & 0x7f;

		if (k == 0 || k > 4 || end - q < 2 + k)
			return 0;
		for (int i = 0; i < k; i++)
			n = (n << 8) | q[2 + i];
		q += 2 + k;
	}
	if ((size_t)(end - q) < n)
		return 0;
	*content = q;
	*len = n;
	*p = q + n;
	return 1;
}

static const unsigned char oid_signing_time[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                                 0xf7, 0x0d, 0x01, 0x09, 0x05};
static const unsigned char oid_message_digest[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                                   0xf7, 0x0d, 0x01, 0x09, 0x04};

/* The one TLV filling [*p, *end) must be a @p tag; [*p, *end) becomes its content.  0 if not. */
static int enter(const unsigned char **p, const unsigned char **end, unsigned char tag)
{
	const unsigned char *c;
	unsigned char got;
	size_t n;

	if (!tlv(p, *end, &got, &c, &n) || got != tag || *p != *end)
		return 0;
	*p = c;
	*end = c + n;
	return 1;
}

/* The pieces of @p t->der (a ContentInfo with one SignerInfo, its signature empty); 0 if its shape
 * is another. */
static int template_parse(struct sd_template *t, size_t len)
{
	const unsigned char *p = t->der, *end = t->der + len, *c, *q, *last = NULL;
	const unsigned char *a, *aend, *attrs = NULL, *sig_alg = NULL;
	size_t n, attrs_len = 0;
	unsigned char tag;

	/* ContentInfo { contentType, [0] SignedData } */
	if (!enter(&p, &end, 0x30))
		return 0;
	q = p;
	if (!tlv(&p, end, &tag, &c, &n) || tag != 0x06)
		return 0;
	t->ci_oid = q;
	t->ci_oid_len = (size_t)(p - q);
	if (!enter(&p, &end, 0xa0) || !enter(&p, &end, 0x30))
		return 0;
	/* SignedData: everything before signerInfos, which comes last. */
	t->sd_head = p;
	while (p < end) {
		last = p;
		if (!tlv(&p, end, &tag, &c, &n))
			return 0;
	}
	if (last == NULL)
		return 0;
	t->sd_head_len = (size_t)(last - t->sd_head);
	/* signerInfos, the last element, holding one SignerInfo. */
	p = last;
	if (!enter(&p, &end, 0x31) || !enter(&p, &end, 0x30))
		return 0;
	t->si_head = p;
	for (;;) {
		q = p;
		if (!tlv(&p, end, &tag, &c, &n))
			return 0;
		if (tag == 0xa0) {
			t->si_head_len = (size_t)(q - t->si_head);
			attrs = c;
			attrs_len = n;
			break;
		}
	}
	q = p;
	if (!tlv(&p, end, &tag, &c, &n) || tag != 0x30)
		return 0;
	sig_alg = q;
	t->sig_alg = sig_alg;
	t->sig_alg_len = (size_t)(p - q);
	/* The signature, empty, and nothing after it (no unsigned attributes). */
	if (!tlv(&p, end, &tag, &c, &n) || tag != 0x04 || n != 0 || p != end)
		return 0;
	/* The attributes that stay: all but signingTime and messageDigest. */
	a = attrs;
	aend = attrs + attrs_len;
	while (a < aend) {
		const unsigned char *at = a, *ac;
		size_t an;

		if (!tlv(&a, aend, &tag, &ac, &an) || tag != 0x30)
			return 0;
		if (an >= sizeof(oid_signing_time) &&
		    (memcmp(ac, oid_signing_time, sizeof(oid_signing_time)) == 0 ||
		     memcmp(ac, oid_message_digest, sizeof(oid_message_digest)) == 0))
			continue;
		if (t->nattrs == TPL_ATTRS)
			return 0;
		t->attr[t->nattrs] = at;
		t->attr_len[t->nattrs++] = (size_t)(a - at);
	}
	return 1;
}

/*
 * The template of @p s's detached signature, or NULL (then each message is
 * built by OpenSSL's CMS code, as before).
 */
static struct sd_template *template_new(p11s_signer *s)
{
	struct sd_template *t = calloc(1, sizeof(*t));
	CMS_ContentInfo *cms = NULL;
	CMS_SignerInfo *si;
	int len, ok = 0;

	if (t == NULL)
		return NULL;
	/* The signer is detached (template_fits()): new_cms() builds that, changing nothing in s.
	 */
	cms = new_cms(s, NULL);
	si = cms != NULL ? sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0) : NULL;
	/* What CMS_dataFinal() adds besides signingTime and messageDigest. */
	if (si != NULL && CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
	                                              OBJ_nid2obj(NID_pkcs7_data), -1) > 0) {
		len = i2d_CMS_ContentInfo(cms, &t->der);
		ok = len > 0 && template_parse(t, (size_t)len);
	}
	CMS_ContentInfo_free(cms);
	ERR_clear_error();
	if (!ok) {
		template_free(t);
		t = NULL;
	}
	return t;
}

/* A DER header for @p len bytes of content with @p tag; its length. */
static size_t der_head(unsigned char *h, unsigned char tag, size_t len)
{
	size_t n = 0;

	h[n++] = tag;
	if (len < 0x80) {
		h[n++] = (unsigned char)len;
	} else {
		int k = len > 0xffffff ? 4 : len > 0xffff ? 3 : len > 0xff ? 2 : 1;

		h[n++] = (unsigned char)(0x80 | k);
		for (int i = k - 1; i >= 0; i--)
			h[n++] = (unsigned char)(len >> (8 * i));
	}
	return n;
}

/* DER's SET OF order: by encoding, a prefix first (as OpenSSL sorts). */
struct enc {
	const unsigned char *p;
	size_t n;
};

static int enc_cmp(const void *a, const void *b)
{
	const struct enc *x = a, *y = b;
	int r = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);

	return r != 0 ? r : x->n < y->n ? -1 : x->n > y->n;
}

/* signingTime now, as ASN1_TIME_set() writes it (UTCTime until 2049); 0 on failure. */
static size_t signing_time_attr(unsigned char *out)
{
	time_t now = time(NULL);
	struct tm tm;
	char v[16];
	int n, gen;
	size_t o = 0;

	if (now == (time_t)-1 || gmtime_r(&now, &tm) == NULL)
		return 0;
	gen = tm.tm_year < 50 || tm.tm_year >= 150;
	n = gen ? snprintf(v, sizeof(v), "%04d%02d%02d%02d%02d%02dZ", tm.tm_year + 1900,
	                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
	        : snprintf(v, sizeof(v), "%02d%02d%02d%02d%02d%02dZ", tm.tm_year % 100,
	                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (n != (gen ? 15 : 13))
		return 0;
	o += der_head(out + o, 0x30, sizeof(oid_signing_time) + 2 + 2 + (size_t)n);
	memcpy(out + o, oid_signing_time, sizeof(oid_signing_time));
	o += sizeof(oid_signing_time);
	o += der_head(out + o, 0x31, 2 + (size_t)n);
	o += der_head(out + o, gen ? 0x18 : 0x17, (size_t)n);
	memcpy(out + o, v, (size_t)n);
	return o + (size_t)n;
}

static size_t message_digest_attr(unsigned char *out, const unsigned char *md, size_t mdlen)
{
	size_t o = 0;

	o += der_head(out + o, 0x30, sizeof(oid_message_digest) + 2 + 2 + mdlen);
	memcpy(out + o, oid_message_digest, sizeof(oid_message_digest));
	o += sizeof(oid_message_digest);
	o += der_head(out + o, 0x31, 2 + mdlen);
	o += der_head(out + o, 0x04, mdlen);
	memcpy(out + o, md, mdlen);
	return o + mdlen;
}

/* The signature over @p tbs as CMS makes it: digest, then the key's sign with CMS's padding. */
static int template_signature(p11s_signer *s, const unsigned char *tbs, size_t tbslen,
                              unsigned char **sig, size_t *siglen)
{
	const EVP_MD *md = s->md_fetched != NULL ? (const EVP_MD *)s->md_fetched : s->md;
	unsigned char dgst[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	EVP_PKEY_CTX *pctx = NULL;
	int ok = 0;

	*sig = NULL;
	if (!EVP_Digest(tbs, tbslen, dgst, &dlen, md, NULL))
		return 0;
	pctx = EVP_PKEY_CTX_new(signer_pkey(s), NULL);
	if (pctx == NULL || EVP_PKEY_sign_init(pctx) <= 0 ||
	    EVP_PKEY_CTX_set_signature_md(pctx, md) <= 0)
		goto out;
	if (s->pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
	               EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0 ||
	               EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) <= 0))
		goto out;
	if (EVP_PKEY_sign(pctx, NULL, siglen, dgst, dlen) <= 0 ||
	    (*sig = OPENSSL_malloc(*siglen)) == NULL)
		goto out;
	ok = EVP_PKEY_sign(pctx, *sig, siglen, dgst, dlen) > 0;
out:
	EVP_PKEY_CTX_free(pctx);
	if (!ok) {
		OPENSSL_free(*sig);
		*sig = NULL;
	}
	return ok;
}

/*
 * The DER of the detached signature of content whose digest is @p md:
 * signed here (the token's operation), in *der (free()).
 */
static p11s_rc template_sign(p11s_signer *s, const unsigned char *md, size_t mdlen,
                             unsigned char **der, size_t *derlen, p11s_error *err)
{
	/* Set before the message began (signer_template()), and kept until the signer goes. */
	const struct sd_template *t = atomic_load(&s->tpl);
	unsigned char st[64], mdat[32 + EVP_MAX_MD_SIZE], *attrs = NULL, *sig = NULL, *out;
	unsigned char h[6][8];
	size_t hl[6], alen = 0, slen, siglen = 0, si_len, set_len, sd_len, a0_len, ci_len, o;
	struct enc e[TPL_ATTRS + 2];
	int ne = 0;
	p11s_rc rc = P11S_OK;

	*der = NULL;
	e[ne].n = signing_time_attr(st);
	e[ne++].p = st;
	e[ne].n = message_digest_attr(mdat, md, mdlen);
	e[ne++].p = mdat;
	if (e[0].n == 0)
		return p11i_err(err, P11S_E_INTERNAL, "no signing time: the clock is unreadable");
	for (int i = 0; i < t->nattrs; i++) {
		e[ne].p = t->attr[i];
		e[ne++].n = t->attr_len[i];
	}
	qsort(e, (size_t)ne, sizeof(e[0]), enc_cmp);
	for (int i = 0; i < ne; i++)
		alen += e[i].n;
	/* Signed as a SET (RFC 5652 5.4), carried as [0] IMPLICIT: the same length. */
	attrs = malloc(8 + alen);
	if (attrs == NULL)
		return p11i_err_nomem(err);
	slen = der_head(attrs, 0x31, alen);
	for (int i = 0; i < ne; i++) {
		memcpy(attrs + slen, e[i].p, e[i].n);
		slen += e[i].n;
	}
	if (!template_signature(s, attrs, slen, &sig, &siglen)) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "the %s signature failed", s->algorithm);
		goto out;
	}
	attrs[0] = 0xa0;
	/* The lengths, from the inside out. */
	hl[5] = der_head(h[5], 0x04, siglen);
	si_len = t->si_head_len + slen + t->sig_alg_len + hl[5] + siglen;
	hl[4] = der_head(h[4], 0x30, si_len);
	set_len = hl[4] + si_len;
	hl[3] = der_head(h[3], 0x31, set_len);
	sd_len = t->sd_head_len + hl[3] + set_len;
	hl[2] = der_head(h[2], 0x30, sd_len);
	a0_len = hl[2] + sd_len;
	hl[1] = der_head(h[1], 0xa0, a0_len);
	ci_len = t->ci_oid_len + hl[1] + a0_len;
	hl[0] = der_head(h[0], 0x30, ci_len);
	*derlen = hl[0] + ci_len;
	out = malloc(*derlen);
	if (out == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	o = 0;
#define PUT(ptr, n)                          \
	do {                                 \
		memcpy(out + o, (ptr), (n)); \
		o += (n);                    \
	} while (0)
	PUT(h[0], hl[0]);
	PUT(t->ci_oid, t->ci_oid_len);
	PUT(h[1], hl[1]);
	PUT(h[2], hl[2]);
	PUT(t->sd_head, t->sd_head_len);
	PUT(h[3], hl[3]);
	PUT(h[4], hl[4]);
	PUT(t->si_head, t->si_head_len);
	PUT(attrs, slen);
	PUT(t->sig_alg, t->sig_alg_len);
	PUT(h[5], hl[5]);
	PUT(sig, siglen);
#undef PUT
	*der = out;
out:
	free(attrs);
	OPENSSL_free(sig);
	return rc;
}

/* @p der in base64, 64 characters and "\n" a line as BIO_f_base64 writes it, into @p sink. */
static p11s_rc write_base64(BIO *sink, const unsigned char *der, size_t len, p11s_error *err)
{
	EVP_ENCODE_CTX *ectx = NULL;
	unsigned char *b64 = NULL;
	int outl = 0, tail = 0;
	p11s_rc rc = P11S_OK;

	if (len > INT_MAX / 2)
		return p11i_err(err, P11S_E_INTERNAL, "the signature is too large");
	ectx = EVP_ENCODE_CTX_new();
	b64 = malloc(len / 48 * 65 + 130);
	if (ectx == NULL || b64 == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	EVP_EncodeInit(ectx);
	if (EVP_EncodeUpdate(ectx, b64, &outl, der, (int)len) != 1) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot write the signature");
		goto out;
	}
	EVP_EncodeFinal(ectx, b64 + outl, &tail);
	outl += tail;
	if (BIO_write(sink, b64, outl) != outl)
		rc = p11i_err(err, P11S_E_IO, "cannot write the signature");
out:
	EVP_ENCODE_CTX_free(ectx);
	free(b64);
	return rc;
}

/*
 * Whether @p s's detached signatures can come from a template.  Not PSS
 * with a software key: OpenSSL's providers rewrite the PSS parameters
 * when they sign (the hash with explicit NULL parameters), where our
 * token keys (OpenSSL's legacy path) keep those set up front.
 */
static int template_fits(const p11s_signer *s)
{
	return !s->opaque && !(s->pss && s->key == NULL && EVP_PKEY_get0_provider(s->pkey) != NULL);
}

/* Prepare @p s's digest; its template comes with its second message. */
static void signer_prepare(p11s_signer *s)
{
	s->md_fetched = EVP_MD_fetch(NULL, EVP_MD_get0_name(s->md), NULL);
	atomic_store(&s->tpl_ok, template_fits(s));
	ERR_clear_error();
}

/*
 * The template for this message, or NULL (OpenSSL builds the CMS).  It is
 * made at the second message, not when the signer is opened: it costs
 * about one message's CMS, which a process signing one message (a
 * one-shot `sign`) would otherwise pay twice.  Threads racing to make it
 * keep the first one stored.
 */
static struct sd_template *signer_template(p11s_signer *s)
{
	struct sd_template *t = atomic_load(&s->tpl), *fresh;

	if (t != NULL || !atomic_load(&s->tpl_ok) || atomic_fetch_add(&s->messages, 1) == 0)
		return t;
	fresh = template_new(s);
	ERR_clear_error();
	if (fresh == NULL) {
		atomic_store(&s->tpl_ok, 0); /* no second try per message */
		return NULL;
	}
	if (!atomic_compare_exchange_strong(&s->tpl, &t, fresh)) {
		template_free(fresh);
		return t;
	}
	return fresh;
}

void p11i_signer_set_template(p11s_signer *s, int on)
{
	struct sd_template *t = atomic_exchange(&s->tpl, NULL);

	template_free(t);
	atomic_store(&s->tpl_ok, on && template_fits(s));
	if (atomic_load(&s->tpl_ok))
		atomic_store(&s->tpl, template_new(s));
}

static p11s_rc put(BIO *b, const char *s, p11s_error *err)
{
	int n = (int)strlen(s);

	if (BIO_write(b, s, n) != n)
		return p11i_err(err, P11S_E_IO, "cannot write the signed message");
	return P11S_OK;
}

/* Base64 of the finished signature, then BIO_f_base64's "\n" ends made right by @p sink. */
/* @p cms's DER in base64 into @p sink, as a prepared signature's (write_base64()). */
static p11s_rc write_der_base64(BIO *sink, CMS_ContentInfo *cms, p11s_error *err)
{
	unsigned char *der = NULL;
	int len = i2d_CMS_ContentInfo(cms, &der);
	p11s_rc rc;

	if (len <= 0)
		return p11i_err_ossl(err, P11S_E_CRYPTO, "cannot encode the signature");
	rc = write_base64(sink, der, (size_t)len, err);
	OPENSSL_free(der);
	return rc;
}

/*
 * The chain's digests: the contexts of its BIO_f_md, in front of the
 * output (at most DIGESTS of them).  A large entity's are fed on a helper
 * thread (src/offload.h), which the canonicaliser then writes past:
 * SHA-256 is half of a large sign's work, the other half (reading,
 * framing, writing) runs beside it.
 */
#define DIGESTS 4

struct digests {
	EVP_MD_CTX *ctx[DIGESTS];
	int n;
};

static int digests_update(void *arg, const unsigned char *p, size_t n)
{
	struct digests *d = arg;

	for (int i = 0; i < d->n; i++)
		if (!EVP_DigestUpdate(d->ctx[i], p, n))
			return -1;
	return 0;
}

/* 0 with @p d set to the chain's digest contexts (up to @p sink); -1: none, or too many. */
static int digests_of(BIO *chain, BIO *sink, struct digests *d)
{
	d->n = 0;
	for (BIO *b = chain; b != NULL && b != sink; b = BIO_next(b)) {
		EVP_MD_CTX *ctx = NULL;

		if (BIO_method_type(b) != BIO_TYPE_MD || d->n == DIGESTS ||
		    BIO_get_md_ctx(b, &ctx) <= 0 || ctx == NULL) {
			d->n = 0;
			return -1;
		}
		d->ctx[d->n++] = ctx;
	}
	return d->n > 0 ? 0 : -1;
}

/*
 * Taking back a part written ahead (p11i_canon_undo): the digests as they
 * were, and the output's length, when our output BIO is at the end of the
 * chain (other outputs answer no, and the part is read twice).  Without
 * digests we can name, nothing is taken back.
 */
struct undo {
	BIO *sink, *out;
	struct digests dg;
	EVP_MD_CTX *saved[DIGESTS];
	int64_t pos;
	p11i_offload *dq; /* the digests' helper, synced before their contexts are touched */
};

static int undo_mark(void *arg)
{
	struct undo *u = arg;

	if (u->dg.n == 0 || p11i_offload_sync(u->dq) != 0 ||
	    BIO_ctrl(u->out, P11I_BIO_CTRL_TELL, 0, &u->pos) != 1)
		return -1;
	for (int i = 0; i < u->dg.n; i++) {
		if (u->saved[i] == NULL && (u->saved[i] = EVP_MD_CTX_new()) == NULL)
			return -1;
		if (!EVP_MD_CTX_copy_ex(u->saved[i], u->dg.ctx[i]))
			return -1;
	}
	return 0;
}

static int undo_rewind(void *arg)
{
	struct undo *u = arg;

	if (u->dg.n == 0 || p11i_offload_sync(u->dq) != 0)
		return -1;
	for (int i = 0; i < u->dg.n; i++)
		if (u->saved[i] == NULL || !EVP_MD_CTX_copy_ex(u->dg.ctx[i], u->saved[i]))
			return -1;
	/* The line-end filter holds nothing at a mark (a line end was the last byte): reset it. */
	BIO_ctrl(u->sink, BIO_CTRL_RESET, 0, NULL);
	return BIO_ctrl(u->out, P11I_BIO_CTRL_REWIND, (long)u->pos, NULL) == 1 ? 0 : -1;
}

static void undo_free(struct undo *u)
{
	for (int i = 0; i < DIGESTS; i++)
		EVP_MD_CTX_free(u->saved[i]);
}

/*
 * Random bytes for the boundaries: the kernel's generator, a page of it at
 * a time, each byte handed out once.  A getrandom(2) per message was a
 * system call per message of a batch (3-5 us on a paravirtualised guest);
 * now it is one per 340 messages.  A boundary is exactly as random as
 * before (96 bits straight from the kernel, never reused, none derived
 * from another), so it stays as unpredictable to whoever writes the
 * content, and two are as unlikely to meet.  The page is wiped in a
 * child at fork (MADV_WIPEONFORK): a child never hands out its parent's
 * bytes again, it finds the page empty and fills it anew.  Where the
 * kernel cannot wipe on fork there is no page, and every boundary asks
 * the kernel, as before.
 */
struct rnd_page {
	size_t left; /* the unused bytes: the first left of b; 0 after a fork */
	unsigned char b[4096 - sizeof(size_t)];
};

static pthread_mutex_t rnd_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t rnd_once = PTHREAD_ONCE_INIT;
static struct rnd_page *rnd_page;

static void rnd_page_map(void)
{
	void *p = mmap(NULL, sizeof(struct rnd_page), PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return;
	if (madvise(p, sizeof(struct rnd_page), MADV_WIPEONFORK) != 0) {
		munmap(p, sizeof(struct rnd_page));
		return;
	}
	/* Boundaries not yet written stay out of core dumps. */
	(void)madvise(p, sizeof(struct rnd_page), MADV_DONTDUMP);
	rnd_page = p;
}

/* @p n (< the page) random bytes for a boundary: 0, or -1 when the kernel gave none. */
static int boundary_random(unsigned char *out, size_t n)
{
	struct rnd_page *pg;
	int r = 0;

	pthread_once(&rnd_once, rnd_page_map);
	pg = rnd_page;
	if (pg == NULL || n > sizeof(pg->b))
		return getrandom(out, n, 0) == (ssize_t)n ? 0 : -1;
	pthread_mutex_lock(&rnd_lock);
	if (pg->left < n) {
		if (getrandom(pg->b, sizeof(pg->b), 0) == (ssize_t)sizeof(pg->b))
			pg->left = sizeof(pg->b);
		else
			r = -1;
	}
	if (r == 0) {
		pg->left -= n;
		memcpy(out, pg->b + pg->left, n);
		OPENSSL_cleanse(pg->b + pg->left, n);
	}
	pthread_mutex_unlock(&rnd_lock);
	return r;
}

static p11s_rc sign_detached(p11s_signer *s, CMS_ContentInfo *cms, const p11i_headers *h, BIO *in,
                             const struct stat *in_st, BIO *sink, p11s_error *err)
{
	unsigned char rnd[12], *der = NULL;
	size_t der_len = 0;
	char *hex, *head = NULL;
	BIO *chain = NULL;
	struct undo u = {0};
	p11i_canon_undo undo = {undo_mark, undo_rewind, &u, in_st, NULL};
	p11s_rc rc;

	/*
	 * The kernel's generator (boundary_random()): OpenSSL's per-thread
	 * DRBG cost 2% of a small mail of a batch for these 12 bytes (its
	 * locks and fork check).
	 */
	if ((boundary_random(rnd, sizeof(rnd)) != 0 && RAND_bytes(rnd, sizeof(rnd)) != 1) ||
	    (hex = p11i_hex(rnd, sizeof(rnd))) == NULL)
		return p11i_err_ossl(err, P11S_E_CRYPTO, "no random boundary");
	head = p11i_asprintf("Content-Type: multipart/signed; protocol=\"application/"
	                     "pkcs7-signature\"; micalg=%s;\r\n boundary=\"----=_p11s_%s\"\r\n"
	                     "\r\n"
	                     "This is an S/MIME signed message.\r\n"
	                     "\r\n"
	                     "------=_p11s_%s\r\n",
	                     s->micalg, hex, hex);
	if (head == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	rc = put(sink, head, err);
	if (rc != P11S_OK)
		goto out;
	/* Digest BIOs in front of the output: the entity is hashed as it is written. */
	if (cms != NULL) {
		chain = CMS_dataInit(cms, sink);
	} else if ((chain = BIO_new(BIO_f_md())) != NULL) {
		/* The prepared signer's: one digest, fetched once. */
		if (BIO_set_md(chain, s->md_fetched != NULL ? s->md_fetched : s->md) <= 0) {
			BIO_free(chain);
			chain = NULL;
		} else {
			BIO_push(chain, sink);
		}
	}
	if (chain == NULL) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot start the signature");
		goto out;
	}
	u.sink = sink;
	u.out = BIO_next(sink);
	/* Without the stage (no memory, digests we cannot name), the chain digests inline. */
	if (digests_of(chain, sink, &u.dg) == 0)
		u.dq = undo.digests = p11i_offload_new(digests_update, &u.dg, p11i_offload_start);
	rc = p11i_mime_canonicalize_undo(h, P11I_HDR_CONTENT, in, chain, &undo, err);
	if (rc != P11S_OK)
		goto out;
	if (p11i_offload_sync(u.dq) != 0) {
		/* Failed on the helper: OpenSSL's reason is in its queue, not ours. */
		rc = p11i_err(err, P11S_E_CRYPTO,
		              "the %s signature failed: cannot digest the content", s->algorithm);
		goto out;
	}
	if (cms == NULL) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int mdlen = 0;
		EVP_MD_CTX *mctx = NULL;

		if (BIO_get_md_ctx(chain, &mctx) <= 0 || mctx == NULL ||
		    !EVP_DigestFinal_ex(mctx, md, &mdlen)) {
			rc = p11i_err_ossl(err, P11S_E_CRYPTO, "the %s signature failed",
			                   s->algorithm);
			goto out;
		}
		rc = template_sign(s, md, mdlen, &der, &der_len, err);
		if (rc != P11S_OK)
			goto out;
	} else if (!CMS_dataFinal(cms, chain)) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "the %s signature failed", s->algorithm);
		goto out;
	}
	free(head);
	head = p11i_asprintf("\r\n------=_p11s_%s\r\n"
	                     "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"
	                     "Content-Transfer-Encoding: base64\r\n"
	                     "Content-Disposition: attachment; filename=\"smime.p7s\"\r\n"
	                     "\r\n",
	                     hex);
	if (head == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	rc = put(sink, head, err);
	if (rc == P11S_OK)
		rc = cms != NULL ? write_der_base64(sink, cms, err)
		                 : write_base64(sink, der, der_len, err);
	free(head);
	head = p11i_asprintf("\r\n------=_p11s_%s--\r\n", hex);
	if (rc == P11S_OK && head == NULL)
		rc = p11i_err_nomem(err);
	if (rc == P11S_OK)
		rc = put(sink, head, err);
out:
	p11i_offload_free(u.dq);
	undo_free(&u);
	p11i_bio_free_upto(chain, sink);
	free(der);
	free(head);
	free(hex);
	return rc;
}

static p11s_rc sign_opaque(p11s_signer *s, CMS_ContentInfo *cms, const p11i_headers *h, BIO *in,
                           BIO *sink, p11s_error *err)
{
	BIO *b64 = NULL, *chain = NULL;
	p11s_rc rc;

	rc = put(sink,
	         "Content-Type: application/pkcs7-mime; smime-type=signed-data;\r\n"
	         " name=\"smime.p7m\"\r\n"
	         "Content-Transfer-Encoding: base64\r\n"
	         "Content-Disposition: attachment; filename=\"smime.p7m\"\r\n"
	         "\r\n",
	         err);
	if (rc != P11S_OK)
		return rc;
	b64 = BIO_new(BIO_f_base64());
	if (b64 == NULL)
		return p11i_err_nomem(err);
	BIO_push(b64, sink);
	/* BER with indefinite lengths: the content streams into the structure. */
	chain = BIO_new_CMS(b64, cms);
	if (chain == NULL) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot start the signature");
		goto out;
	}
	rc = p11i_mime_canonicalize(h, P11I_HDR_CONTENT, in, chain, err);
	if (rc != P11S_OK)
		goto out;
	/* The flush writes the signer infos: the token signs here. */
	if (BIO_flush(chain) <= 0) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "the %s signature failed", s->algorithm);
		goto out;
	}
	p11i_bio_free_upto(chain, b64);
	chain = NULL;
	if (BIO_flush(b64) <= 0)
		rc = p11i_err(err, P11S_E_IO, "cannot write the signed message");
	if (rc == P11S_OK)
		rc = put(sink, "\r\n", err);
out:
	p11i_bio_free_upto(chain, b64);
	BIO_pop(b64);
	BIO_free(b64);
	return rc;
}

/*
 * A regular file's identity before anything of it is read: the output may
 * copy clean parts from the file itself at its commit, once it has checked
 * the file against this (src/outcore.c).  NULL: no such input.
 */
static const struct stat *input_identity(BIO *in, struct stat *st)
{
	/* The input's own descriptor and count where it has them: its FILE asked for, the count
	 * is lost for the readers after. */
	FILE *fp = NULL;
	int fd = p11i_input_fd(in);
	long t;

	if (fd < 0 && (fp = p11i_bio_fp(in)) != NULL)
		fd = fileno(fp);
	if (fd < 0 || p11i_out_identity(fd, st) != 0)
		return NULL;
	/* Bytes stdio read ahead before now were read before the identity: none may be. */
	if (p11i_input_pos(in, &t) != 1) {
		if (fp == NULL)
			fp = p11i_bio_fp(in);
		t = fp != NULL ? ftell(fp) : -1;
	}
	if (t < 0 || t != (long)lseek(fd, 0, SEEK_CUR))
		return NULL;
	return st;
}

p11s_rc p11s_signer_sign(p11s_signer *s, BIO *in, BIO *out, p11s_error *err)
{
	const struct sd_template *tpl;
	p11i_headers *h = NULL;
	CMS_ContentInfo *cms = NULL;
	BIO *sink = NULL, *last;
	struct stat st;
	const struct stat *in_st;
	p11s_rc rc;

	if (s == NULL || in == NULL || out == NULL)
		return p11i_err(err, P11S_E_USAGE, "nothing to sign");
	/* Asked only where it can serve: its system calls were per message of a batch. */
	for (last = out; BIO_next(last) != NULL; last = BIO_next(last))
		;
	in_st = BIO_ctrl(last, P11I_BIO_CTRL_WRITE_REF, 0, NULL) == P11I_BIO_CTRL_WRITE_REF
	            ? input_identity(in, &st)
	            : NULL;
	rc = p11i_headers_read(in, 0, &h, err);
	if (rc != P11S_OK)
		return rc;
	/* Everything below is written with CRLF; the sink gives the input's line ends. */
	sink = p11i_bio_eol_new(p11i_headers_eol(h));
	/* A prepared detached signature needs no CMS structure (see template_sign()). */
	tpl = s->opaque ? NULL : signer_template(s);
	if (tpl == NULL)
		cms = new_cms(s, err);
	if (sink == NULL || (cms == NULL && tpl == NULL)) {
		rc = cms == NULL && tpl == NULL ? p11s_error_rc(err) : p11i_err_nomem(err);
		goto out;
	}
	BIO_push(sink, out);
	rc = p11i_headers_write(h, P11I_HDR_OUTER, sink, err);
	if (rc == P11S_OK)
		rc = put(sink, "MIME-Version: 1.0\r\n", err);
	if (rc == P11S_OK)
		rc = s->opaque ? sign_opaque(s, cms, h, in, sink, err)
		               : sign_detached(s, cms, h, in, in_st, sink, err);
	if (rc == P11S_OK && BIO_flush(sink) <= 0)
		rc = p11i_err(err, P11S_E_IO, "cannot write the signed message");
out:
	if (sink != NULL) {
		BIO_pop(sink);
		BIO_free(sink);
	}
	CMS_ContentInfo_free(cms);
	p11i_headers_free(h);
	ERR_clear_error();
	return rc;
}

const char *p11s_signer_format(const p11s_signer *s)
{
	return s->opaque ? "opaque" : "detached";
}

CMS_ContentInfo *p11i_signer_cms_new(p11s_signer *s, int detached, p11s_error *err)
{
	int opaque = s->opaque;
	CMS_ContentInfo *cms;

	/* new_cms() reads the format from the signer; the hook shapes choose it per call. */
	s->opaque = !detached;
	cms = new_cms(s, err);
	s->opaque = opaque;
	return cms;
}
