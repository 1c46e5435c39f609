/*
 * p11smime csr: a PKCS#10 request signed on the token.  The extensions an
 * S/MIME CA should put in the certificate are requested, and judged first
 * by the rules engine on a throwaway certificate that carries exactly
 * them, so that a request the upload rules would reject is never made.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "p11smime/lifecycle.h"
#include "p11smime/rules.h"

static X509_EXTENSION *ext(int nid, int critical, void *value)
{
	return X509V3_EXT_i2d(nid, critical, value);
}

/* subjectAltName, keyUsage, extendedKeyUsage for an S/MIME key of @p is_ec. */
static STACK_OF(X509_EXTENSION) * smime_extensions(const char *const *emails, size_t n, int is_ec)
{
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	GENERAL_NAMES *san = GENERAL_NAMES_new();
	ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
	EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
	X509_EXTENSION *e;
	int ok = exts && san && ku && eku;

	for (size_t i = 0; ok && i < n; i++) {
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();

		ok = g && s && ASN1_STRING_set(s, emails[i], (int)strlen(emails[i]));
		if (ok) {
			GENERAL_NAME_set0_value(g, GEN_EMAIL, s);
			s = NULL;
			ok = sk_GENERAL_NAME_push(san, g) > 0;
			if (ok)
				g = NULL;
		}
		GENERAL_NAME_free(g);
		ASN1_IA5STRING_free(s);
	}
	/* digitalSignature (0), keyEncipherment (2) or keyAgreement (4). */
	ok = ok && ASN1_BIT_STRING_set_bit(ku, 0, 1) &&
	     ASN1_BIT_STRING_set_bit(ku, is_ec ? 4 : 2, 1);
	ok = ok && sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_email_protect)) > 0;
	if (ok && (e = ext(NID_subject_alt_name, 0, san)) != NULL)
		ok = sk_X509_EXTENSION_push(exts, e) > 0;
	else
		ok = 0;
	if (ok && (e = ext(NID_key_usage, 1, ku)) != NULL)
		ok = sk_X509_EXTENSION_push(exts, e) > 0;
	else
		ok = 0;
	if (ok && (e = ext(NID_ext_key_usage, 0, eku)) != NULL)
		ok = sk_X509_EXTENSION_push(exts, e) > 0;
	else
		ok = 0;
	GENERAL_NAMES_free(san);
	ASN1_BIT_STRING_free(ku);
	sk_ASN1_OBJECT_free(eku); /* the OID is static */
	if (!ok) {
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
		return NULL;
	}
	return exts;
}

/*
 * The verdict of the rules engine on a certificate for @p pub with
 * @p subject and @p exts, signed by a throwaway key (the engine reads the
 * certificate's signature algorithm, nothing more), with @p kf.
 */
static p11s_rc judge(X509_NAME *subject, EVP_PKEY *pub, STACK_OF(X509_EXTENSION) * exts,
                     const p11s_key_facts *kf, p11s_error *err)
{
	X509 *x = X509_new();
	EVP_PKEY *tmp = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	p11s_verdict *v = NULL;
	p11s_rc rc = P11S_OK;
	int ok = x && tmp;

	ok = ok && X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
	     X509_set_subject_name(x, subject) && X509_set_issuer_name(x, subject) &&
	     X509_gmtime_adj(X509_getm_notBefore(x), 0) &&
	     X509_gmtime_adj(X509_getm_notAfter(x), 365L * 86400) && X509_set_pubkey(x, pub);
	for (int i = 0; ok && i < sk_X509_EXTENSION_num(exts); i++)
		ok = X509_add_ext(x, sk_X509_EXTENSION_value(exts, i), -1);
	ok = ok && X509_sign(x, tmp, EVP_sha256()) > 0;
	if (!ok) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot build the certificate to judge");
		goto out;
	}
	rc = p11s_validate(x, kf, NULL, &v, err);
	if (rc == P11S_OK && !p11s_verdict_accepted(v)) {
		char *why = p11s_verdict_failures(v, 1);

		rc = p11i_err(err, P11S_E_REJECTED,
		              "a certificate issued for this request would be rejected by the "
		              "S/MIME rules: %s",
		              why ? why : "(no reason given)");
		free(why);
	}
out:
	p11s_verdict_free(v);
	X509_free(x);
	EVP_PKEY_free(tmp);
	return rc;
}

static const EVP_MD *pick_digest(const char *name, EVP_PKEY *pub, p11s_error *err)
{
	int bits = EVP_PKEY_get_bits(pub);

	if (name == NULL) {
		if (EVP_PKEY_is_a(pub, "EC"))
			return bits > 384 ? EVP_sha512() : bits > 256 ? EVP_sha384() : EVP_sha256();
		return EVP_sha256();
	}
	if (strcasecmp(name, "sha256") == 0)
		return EVP_sha256();
	if (strcasecmp(name, "sha384") == 0)
		return EVP_sha384();
	if (strcasecmp(name, "sha512") == 0)
		return EVP_sha512();
	p11i_err(err, P11S_E_USAGE, "digest '%s' is not sha256, sha384 or sha512", name);
	return NULL;
}

/* The one private key @p uri names, on its one token, logged in. */
static p11s_rc select_key(p11s_ctx *ctx, const char *uri, p11s_object_list **list,
                          const p11s_object **key, p11s_error *err)
{
	p11s_token_list *tl = NULL;
	const p11s_token *t;
	p11s_objects_opts o = {.login = 1, .private_keys = 1};
	p11s_rc rc;
	size_t n;

	*list = NULL;
	*key = NULL;
	if (uri == NULL || strncmp(uri, "pkcs11:", 7) != 0)
		return p11i_err(err, P11S_E_USAGE, "--key needs the pkcs11: URI of a private key");
	rc = p11s_token_select(ctx, uri, &tl, &t, err);
	p11s_token_list_free(tl);
	if (rc != P11S_OK)
		return rc;
	rc = p11s_objects(ctx, uri, &o, list, err);
	if (rc != P11S_OK)
		return rc;
	n = p11s_object_list_count(*list);
	if (n == 1) {
		*key = p11s_object_list_get(*list, 0);
		return P11S_OK;
	}
	if (n == 0) {
		rc = p11i_err(err, P11S_E_NOT_FOUND, "no private key matches the --key URI");
	} else {
		rc = p11i_err(err, P11S_E_AMBIGUOUS,
		              "the --key URI matches %zu private keys; name one by its URI:", n);
		for (size_t i = 0; i < n; i++)
			p11i_err_add_candidate(err,
			                       p11s_object_uri(p11s_object_list_get(*list, i)));
	}
	p11s_object_list_free(*list);
	*list = NULL;
	return rc;
}

static void facts_of(p11s_key_facts *kf, const p11s_object *key)
{
	unsigned f = p11s_object_key_flags(key);
	p11s_key_type t = p11s_object_key_type(key);

	p11s_key_facts_init(kf);
	kf->present = 1;
	kf->matches = 1;
	kf->on_token = 1;
	kf->alg = t == P11S_KEY_RSA  ? P11S_ALG_RSA
	          : t == P11S_KEY_EC ? P11S_ALG_EC
	                             : P11S_ALG_OTHER;
	kf->alg_name = p11s_key_type_name(t);
	kf->sensitive = !!(f & P11S_KF_SENSITIVE);
	kf->extractable = !!(f & P11S_KF_EXTRACTABLE);
	kf->can_sign = !!(f & P11S_KF_SIGN);
	kf->can_decrypt = !!(f & P11S_KF_DECRYPT);
	kf->can_unwrap = !!(f & P11S_KF_UNWRAP);
	kf->can_derive = !!(f & P11S_KF_DERIVE);
	kf->uri = p11s_object_uri(key);
	kf->bits = p11s_object_key_bits(key);
	kf->curve = p11s_object_key_curve(key);
}

p11s_rc p11s_csr(p11s_ctx *ctx, const p11s_csr_opts *opts, char **pem, char **key_uri,
                 p11s_error *err)
{
	p11s_object_list *list = NULL;
	const p11s_object *key = NULL;
	p11s_key *k = NULL;
	EVP_PKEY *pub;
	X509_NAME *subject = NULL;
	X509_REQ *req = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	const EVP_MD *md;
	p11s_key_facts kf;
	BIO *mem = NULL;
	p11s_rc rc;
	int is_ec;
	p11s_csr_opts defaults = {0};

	*pem = NULL;
	if (key_uri != NULL)
		*key_uri = NULL;
	if (opts == NULL)
		opts = &defaults;
	if (opts->email_count == 0)
		return p11i_err(err, P11S_E_USAGE, "a request needs at least one --email");
	for (size_t i = 0; i < opts->email_count; i++) {
		const char *e = opts->emails[i], *at = strchr(e, '@');

		if (at == NULL || at == e || at[1] == '\0' || strchr(at + 1, '@') != NULL ||
		    strpbrk(e, " \t\r\n<>,;\"") != NULL)
			return p11i_err(err, P11S_E_USAGE, "'%s' is not an e-mail address", e);
		for (const unsigned char *p = (const unsigned char *)e; *p; p++)
			if (*p < 0x21 || *p > 0x7e)
				return p11i_err(err, P11S_E_USAGE,
				                "'%s' is not an ASCII e-mail address (rfc822Name)",
				                e);
	}
	if (opts->subject != NULL) {
		rc = p11s_dn_parse(opts->subject, &subject, err);
	} else {
		subject = X509_NAME_new();
		rc = subject && X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
		                                           (const unsigned char *)opts->emails[0],
		                                           -1, -1, 0)
		         ? P11S_OK
		         : p11i_err_ossl(err, P11S_E_USAGE, "cannot make a subject from %s",
		                         opts->emails[0]);
	}
	if (rc != P11S_OK)
		goto out;
	rc = select_key(ctx, opts->key, &list, &key, err);
	if (rc != P11S_OK)
		goto out;
	pub = p11s_object_public_key(list, key);
	if (pub == NULL) {
		rc = p11i_err(err, P11S_E_TOKEN,
		              "the token shows no public key for %s (no CKA_MODULUS/CKA_EC_POINT "
		              "and no public key object with its id); cannot make a request",
		              p11s_object_uri(key));
		goto out;
	}
	is_ec = EVP_PKEY_is_a(pub, "EC");
	if (!is_ec && !EVP_PKEY_is_a(pub, "RSA")) {
		rc = p11i_err(err, P11S_E_REJECTED, "%s is a %s key; S/MIME needs RSA or EC",
		              p11s_object_uri(key), p11s_key_type_name(p11s_object_key_type(key)));
		goto out;
	}
	md = pick_digest(opts->digest, pub, err);
	if (md == NULL) {
		rc = p11s_error_rc(err);
		goto out;
	}
	exts = smime_extensions(opts->emails, opts->email_count, is_ec);
	if (exts == NULL) {
		rc = p11i_err_ossl(err, P11S_E_INTERNAL, "cannot build the extensions");
		goto out;
	}
	facts_of(&kf, key);
	rc = judge(subject, pub, exts, &kf, err);
	if (rc != P11S_OK)
		goto out;
	rc = p11s_key_open(ctx, key, &k, err);
	if (rc == P11S_OK)
		rc = p11s_key_check_op(k, is_ec ? P11S_OP_SIGN_ECDSA : P11S_OP_SIGN_RSA_PKCS1, NULL,
		                       err);
	if (rc != P11S_OK)
		goto out;
	req = X509_REQ_new();
	if (req == NULL || !X509_REQ_set_version(req, 0) ||
	    !X509_REQ_set_subject_name(req, subject) || !X509_REQ_set_pubkey(req, pub) ||
	    !X509_REQ_add_extensions(req, exts)) {
		rc = p11i_err_ossl(err, P11S_E_INTERNAL, "cannot build the request");
		goto out;
	}
	if (X509_REQ_sign(req, p11s_key_pkey(k), md) <= 0) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO,
		                   "the token could not sign the request with %s",
		                   p11s_object_uri(key));
		goto out;
	}
	/* The token's key and the public key we put in must be one pair. */
	if (X509_REQ_verify(req, pub) != 1) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO,
		                   "the request's signature does not verify with the public key "
		                   "the token shows for %s: the key objects do not match",
		                   p11s_object_uri(key));
		goto out;
	}
	mem = BIO_new(BIO_s_mem());
	if (mem == NULL || !PEM_write_bio_X509_REQ(mem, req)) {
		rc = p11i_err_ossl(err, P11S_E_NOMEM, "cannot write the request");
		goto out;
	}
	{
		char *data;
		long len = BIO_get_mem_data(mem, &data);

		*pem = p11i_strndup(data, (size_t)len);
	}
	if (*pem == NULL ||
	    (key_uri != NULL && (*key_uri = strdup(p11s_object_uri(key))) == NULL)) {
		free(*pem);
		*pem = NULL;
		rc = p11i_err_nomem(err);
	}
out:
	BIO_free(mem);
	X509_REQ_free(req);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subject);
	p11s_key_free(k);
	p11s_object_list_free(list);
	ERR_clear_error();
	return rc;
}
