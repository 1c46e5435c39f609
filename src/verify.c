#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/buffer.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "p11smime/certs.h"
#include "p11smime/mime.h"
#include "p11smime/util.h"
#include "p11smime/verify.h"

struct signer {
	p11s_sig_verdict verdict;
	char *reason;
	X509 *cert;
	char *subject, *issuer, *serial, *digest, *sigalg;
	char **emails;
	size_t n_emails;
	int has_time;
	time_t signing_time;
	time_t checked_at; /* the time the chain was judged at */
	int valid_at_signing, valid_at;
	char **chain;
	size_t n_chain;
	p11s_verdict *rules;
};

struct p11s_verify_report {
	p11s_rc rc;
	char *summary;
	const char *format;
	time_t at;
	char **from;
	size_t n_from;
	char *from_error; /* why the From header could not be read, or NULL */
	int sender_ok;
	struct signer *signers;
	size_t n_signers;
};

/* ------------------------------------------------------------ certificates */

static char *x509_serial(X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex, *s;

	if (bn == NULL)
		return NULL;
	hex = BN_bn2hex(bn);
	BN_free(bn);
	if (hex == NULL)
		return NULL;
	s = p11s_strdup(hex);
	OPENSSL_free(hex);
	return s;
}

static int valid_at(X509 *x, time_t t)
{
	return X509_cmp_time(X509_get0_notBefore(x), &t) < 0 &&
	       X509_cmp_time(X509_get0_notAfter(x), &t) > 0;
}

static time_t asn1_time(const ASN1_TIME *a)
{
	struct tm tm;

	return ASN1_TIME_to_tm(a, &tm) ? timegm(&tm) : 0;
}

/* ------------------------------------------------------------------ verify */

static void signer_clear(struct signer *s)
{
	free(s->reason);
	X509_free(s->cert);
	free(s->subject);
	free(s->issuer);
	free(s->serial);
	free(s->digest);
	free(s->sigalg);
	p11s_strv_free(s->emails);
	p11s_strv_free(s->chain);
	p11s_verdict_free(s->rules);
}

void p11s_verify_report_free(p11s_verify_report *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n_signers; i++)
		signer_clear(&r->signers[i]);
	free(r->signers);
	p11s_strv_free(r->from);
	free(r->from_error);
	free(r->summary);
	free(r);
}

const char *p11s_sig_verdict_name(p11s_sig_verdict v)
{
	switch (v) {
	case P11S_SIG_GOOD:
		return "good";
	case P11S_SIG_BAD_SIGNATURE:
		return "bad-signature";
	case P11S_SIG_UNTRUSTED:
		return "untrusted";
	case P11S_SIG_NO_CERTIFICATE:
		return "no-certificate";
	case P11S_SIG_UNSUPPORTED:
		return "unsupported";
	}
	return "unknown";
}

static const char *sigalg_name(const X509_ALGOR *alg)
{
	int nid = OBJ_obj2nid(alg->algorithm);

	switch (nid) {
	case NID_rsaEncryption:
	case NID_sha1WithRSAEncryption:
	case NID_sha224WithRSAEncryption:
	case NID_sha256WithRSAEncryption:
	case NID_sha384WithRSAEncryption:
	case NID_sha512WithRSAEncryption:
	case NID_md5WithRSAEncryption:
		return "RSA PKCS#1 v1.5";
	case NID_rsassaPss:
		return "RSA-PSS";
	case NID_X9_62_id_ecPublicKey:
	case NID_ecdsa_with_SHA1:
	case NID_ecdsa_with_SHA224:
	case NID_ecdsa_with_SHA256:
	case NID_ecdsa_with_SHA384:
	case NID_ecdsa_with_SHA512:
		return "ECDSA";
	case NID_ED25519:
		return "Ed25519";
	case NID_ED448:
		return "Ed448";
	case NID_undef:
		return "unknown";
	}
	return OBJ_nid2ln(nid);
}

static int signing_time(CMS_SignerInfo *si, time_t *out)
{
	int idx = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
	X509_ATTRIBUTE *a;
	ASN1_TYPE *t;
	struct tm tm;

	if (idx < 0)
		return 0;
	a = CMS_signed_get_attr(si, idx);
	t = a ? X509_ATTRIBUTE_get0_type(a, 0) : NULL;
	if (t == NULL || (t->type != V_ASN1_UTCTIME && t->type != V_ASN1_GENERALIZEDTIME))
		return 0;
	if (!ASN1_TIME_to_tm(t->value.utctime, &tm))
		return 0;
	*out = timegm(&tm);
	return 1;
}

static char *sid_text(CMS_SignerInfo *si)
{
	ASN1_OCTET_STRING *keyid = NULL;
	X509_NAME *issuer = NULL;
	ASN1_INTEGER *sno = NULL;
	char *s = NULL, *a, *b;
	BIGNUM *bn;

	if (!CMS_SignerInfo_get0_signer_id(si, &keyid, &issuer, &sno))
		return p11s_strdup("an unknown signer");
	if (keyid != NULL) {
		a = p11s_hex(ASN1_STRING_get0_data(keyid), (size_t)ASN1_STRING_length(keyid));
		s = p11s_asprintf("subject key identifier %s", a ? a : "?");
		free(a);
		return s;
	}
	a = p11s_cert_name_string(issuer);
	bn = ASN1_INTEGER_to_BN(sno, NULL);
	b = bn ? BN_bn2hex(bn) : NULL;
	s = p11s_asprintf("issuer %s, serial %s", a ? a : "?", b ? b : "?");
	free(a);
	OPENSSL_free(b);
	BN_free(bn);
	return s;
}

/* Judge the chain of @p s->cert at s->checked_at; sets verdict/reason when it fails. */
static p11s_rc check_chain(struct signer *s, X509_STORE *store, STACK_OF(X509) * untrusted)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_VERIFY_PARAM *param;
	STACK_OF(X509) * chain;
	int ok, e, depth;
	char when[32];

	if (ctx == NULL || !X509_STORE_CTX_init(ctx, store, s->cert, untrusted)) {
		X509_STORE_CTX_free(ctx);
		return P11S_E_NOMEM;
	}
	/* The S/MIME signing purpose: KU and EKU of the signer, CA flags above. */
	X509_STORE_CTX_set_default(ctx, "smime_sign");
	param = X509_STORE_CTX_get0_param(ctx);
	/* An end-entity the user trusts is an anchor of its own. */
	X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
	X509_VERIFY_PARAM_set_time(param, s->checked_at);
	ok = X509_verify_cert(ctx);
	chain = X509_STORE_CTX_get0_chain(ctx);
	if (chain != NULL && sk_X509_num(chain) > 0) {
		int n = sk_X509_num(chain);

		/* NULL-terminated, as p11s_strv_free() expects. */
		s->chain = calloc((size_t)n + 1, sizeof(*s->chain));
		if (s->chain == NULL) {
			X509_STORE_CTX_free(ctx);
			return P11S_E_NOMEM;
		}
		for (int i = 0; i < n; i++) {
			s->chain[i] =
			    p11s_cert_name_string(X509_get_subject_name(sk_X509_value(chain, i)));
			if (s->chain[i] == NULL) {
				s->n_chain = (size_t)i;
				X509_STORE_CTX_free(ctx);
				return P11S_E_NOMEM;
			}
		}
		s->n_chain = (size_t)n;
	}
	if (ok <= 0) {
		e = X509_STORE_CTX_get_error(ctx);
		depth = X509_STORE_CTX_get_error_depth(ctx);
		p11s_time_format(s->checked_at, when, sizeof(when));
		s->verdict = P11S_SIG_UNTRUSTED;
		if (e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
		    e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
		    e == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
		    e == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN)
			s->reason =
			    p11s_asprintf("no chain to a certificate given with --trust (%s)",
			                  X509_verify_cert_error_string(e));
		else
			s->reason = p11s_asprintf("the chain does not hold at %s: %s (at depth %d)",
			                          when, X509_verify_cert_error_string(e), depth);
		if (s->reason == NULL) {
			X509_STORE_CTX_free(ctx);
			return P11S_E_NOMEM;
		}
	}
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return P11S_OK;
}

static p11s_rc fill_signer(struct signer *s, CMS_SignerInfo *si, BIO *digests, X509_STORE *store,
                           STACK_OF(X509) * untrusted, const p11s_verify_opts *opts, time_t at,
                           p11s_error *err)
{
	EVP_PKEY *pk = NULL;
	X509 *x = NULL;
	X509_ALGOR *dig = NULL, *sig = NULL;
	p11s_validate_opts vopts = {0};
	p11s_rc rc;
	char *who;
	int has_attrs, v;

	CMS_SignerInfo_get0_algs(si, &pk, &x, &dig, &sig);
	if (dig != NULL)
		s->digest = p11s_strdup(OBJ_nid2sn(OBJ_obj2nid(dig->algorithm)));
	if (sig != NULL)
		s->sigalg = p11s_strdup(sigalg_name(sig));
	s->has_time = signing_time(si, &s->signing_time);
	s->checked_at = s->has_time ? s->signing_time : at;
	s->valid_at_signing = -1;
	s->valid_at = -1;
	if (x == NULL) {
		s->verdict = P11S_SIG_NO_CERTIFICATE;
		who = sid_text(si);
		s->reason = p11s_asprintf("the signer's certificate (%s) is neither in the message "
		                          "nor among the --trust certificates",
		                          who ? who : "?");
		free(who);
		return s->reason ? P11S_OK : p11s_err(err, P11S_E_NOMEM, "out of memory");
	}
	X509_up_ref(x);
	s->cert = x;
	s->subject = p11s_cert_name_string(X509_get_subject_name(x));
	s->issuer = p11s_cert_name_string(X509_get_issuer_name(x));
	s->serial = x509_serial(x);
	if (s->subject == NULL || s->issuer == NULL || s->serial == NULL ||
	    (s->emails = p11s_cert_san_emails(x, &s->n_emails)) == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	s->valid_at_signing = valid_at(x, s->checked_at);
	s->valid_at = valid_at(x, at);

	vopts.at = at;
	vopts.warn_days = 30;
	vopts.anchors = opts->trust;
	vopts.untrusted = untrusted;
	rc = p11s_validate(x, NULL, &vopts, &s->rules, err);
	if (rc != P11S_OK)
		return rc;

	/*
	 * Signed attributes first (they carry the content digest), then the
	 * digest.  OpenSSL says -1 when it cannot check at all (an algorithm it
	 * lacks), 0 when the check fails: only the latter is a bad signature.
	 */
	has_attrs = CMS_signed_get_attr_count(si) >= 0;
	v = has_attrs ? CMS_SignerInfo_verify(si) : 1;
	if (v == 0) {
		s->verdict = P11S_SIG_BAD_SIGNATURE;
		s->reason = p11s_strdup("the signature over the signed attributes does not verify "
		                        "with the certificate's key");
	} else if (v > 0 && (v = CMS_SignerInfo_verify_content(si, digests)) == 0) {
		s->verdict = P11S_SIG_BAD_SIGNATURE;
		s->reason =
		    p11s_strdup(has_attrs ? "the content was altered: its digest differs "
		                            "from the signed one"
		                          : "the signature over the content does not verify");
	}
	if (v < 0 && X509_get0_pubkey(x) == NULL) {
		/* Not an algorithm OpenSSL lacks: a key that does not decode. */
		s->verdict = P11S_SIG_UNSUPPORTED;
		s->reason = p11s_strdup("the signer's certificate holds a public key that does not "
		                        "decode (a damaged certificate?): the signature cannot be "
		                        "checked");
	} else if (v < 0) {
		unsigned long e = ERR_peek_last_error();

		s->verdict = P11S_SIG_UNSUPPORTED;
		s->reason = p11s_asprintf("OpenSSL %s cannot check this signature (%s with %s): %s",
		                          OpenSSL_version(OPENSSL_VERSION_STRING),
		                          s->sigalg ? s->sigalg : "?", s->digest ? s->digest : "?",
		                          e ? ERR_reason_error_string(e) : "no reason given");
	}
	ERR_clear_error();
	if (s->verdict != P11S_SIG_GOOD) {
		/* Still show the chain: it tells who claims to have signed. */
		struct signer tmp = *s;

		tmp.reason = NULL;
		rc = check_chain(&tmp, store, untrusted);
		free(tmp.reason);
		s->chain = tmp.chain;
		s->n_chain = tmp.n_chain;
		if (s->reason == NULL || rc != P11S_OK)
			return p11s_err(err, P11S_E_NOMEM, "out of memory");
		return P11S_OK;
	}
	if (check_chain(s, store, untrusted) != P11S_OK)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	return P11S_OK;
}

static int address_in(const char *addr, char **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(addr, list[i]) == 0)
			return 1;
	return 0;
}

/* RFC 8550 readers also look at the subject's emailAddress; say so when only that matches. */
static int from_in_subject(const p11s_verify_report *r)
{
	for (size_t i = 0; i < r->n_signers; i++) {
		X509_NAME *name =
		    r->signers[i].cert ? X509_get_subject_name(r->signers[i].cert) : NULL;
		int idx = -1;

		while (name &&
		       (idx = X509_NAME_get_index_by_NID(name, NID_pkcs9_emailAddress, idx)) >= 0) {
			ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));

			for (size_t f = 0; f < r->n_from; f++)
				if ((size_t)ASN1_STRING_length(v) == strlen(r->from[f]) &&
				    strncasecmp((const char *)ASN1_STRING_get0_data(v), r->from[f],
				                strlen(r->from[f])) == 0)
					return 1;
		}
	}
	return 0;
}

static p11s_rc judge(p11s_verify_report *r)
{
	int bad = 0, untrusted = 0, unsupported = 0;
	char when[32];

	for (size_t i = 0; i < r->n_signers; i++) {
		if (r->signers[i].verdict == P11S_SIG_BAD_SIGNATURE)
			bad++;
		else if (r->signers[i].verdict == P11S_SIG_UNSUPPORTED)
			unsupported++;
		else if (r->signers[i].verdict != P11S_SIG_GOOD)
			untrusted++;
	}
	r->sender_ok = r->from_error ? 0 : -1;
	if (r->n_from > 0) {
		r->sender_ok = 1;
		for (size_t f = 0; f < r->n_from; f++) {
			int found = 0;

			for (size_t i = 0; i < r->n_signers && !found; i++)
				found = address_in(r->from[f], r->signers[i].emails,
				                   r->signers[i].n_emails);
			if (!found)
				r->sender_ok = 0;
		}
	}
	if (bad > 0) {
		r->rc = P11S_E_BAD_SIGNATURE;
		r->summary = p11s_asprintf("BAD SIGNATURE: %s",
		                           r->signers[0].verdict == P11S_SIG_BAD_SIGNATURE
		                               ? r->signers[0].reason
		                               : "a signature does not verify");
	} else if (untrusted > 0) {
		r->rc = P11S_E_UNTRUSTED;
		for (size_t i = 0; i < r->n_signers; i++)
			if (r->signers[i].verdict == P11S_SIG_UNTRUSTED ||
			    r->signers[i].verdict == P11S_SIG_NO_CERTIFICATE) {
				r->summary = p11s_asprintf("NOT TRUSTED: %s", r->signers[i].reason);
				break;
			}
	} else if (unsupported > 0) {
		r->rc = P11S_E_CRYPTO;
		for (size_t i = 0; i < r->n_signers; i++)
			if (r->signers[i].verdict == P11S_SIG_UNSUPPORTED) {
				r->summary =
				    p11s_asprintf("CANNOT VERIFY: %s", r->signers[i].reason);
				break;
			}
	} else if (r->sender_ok == 0 && r->from_error != NULL) {
		r->rc = P11S_E_SENDER_MISMATCH;
		r->summary =
		    p11s_asprintf("NOT CONFIRMED AS SIGNED BY ITS SENDER: the signature is "
		                  "good, but the From header cannot be read (%s)",
		                  r->from_error);
	} else if (r->sender_ok == 0) {
		r->rc = P11S_E_SENDER_MISMATCH;
		r->summary = p11s_asprintf(
		    "NOT SIGNED BY ITS SENDER: the signature is good, but the From address %s is "
		    "not among the signer's certificate (SAN) addresses%s",
		    r->from[0],
		    from_in_subject(r) ? "; it is only in the subject's emailAddress, which does "
		                         "not count"
		                       : "");
	} else {
		struct signer *s = &r->signers[0];

		r->rc = P11S_OK;
		if (s->valid_at == 0)
			r->summary = p11s_asprintf(
			    "good signature by %s; the certificate was valid when it signed (%s) "
			    "but is not valid at %s",
			    s->n_emails ? s->emails[0] : s->subject,
			    p11s_time_format(s->checked_at, when, sizeof(when)),
			    s->has_time ? "the time of checking" : "that time");
		else
			r->summary = p11s_asprintf("good signature by %s",
			                           s->n_emails ? s->emails[0] : s->subject);
	}
	return r->summary ? P11S_OK : P11S_E_NOMEM;
}

/* The most of a message verify holds in memory (it is read whole). */
#define VERIFY_MAX (1024u * 1024 * 1024)

/* Read all of @p in: the header block is needed before OpenSSL parses the rest. */
static p11s_rc slurp(BIO *in, BUF_MEM **out, p11s_error *err)
{
	BUF_MEM *m = BUF_MEM_new();
	char buf[65536];
	int n;

	if (m == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	while ((n = BIO_read(in, buf, sizeof(buf))) > 0) {
		size_t old = m->length;

		/* The whole message is held: refuse a runaway input before memory runs out. */
		if (old + (size_t)n > VERIFY_MAX) {
			BUF_MEM_free(m);
			return p11s_err(err, P11S_E_INPUT,
			                "the message is too large to verify (over %u MiB)",
			                VERIFY_MAX >> 20);
		}
		if (BUF_MEM_grow(m, old + (size_t)n) == 0) {
			BUF_MEM_free(m);
			return p11s_err(err, P11S_E_NOMEM, "out of memory");
		}
		memcpy(m->data + old, buf, (size_t)n);
	}
	if (n < 0 && BIO_should_retry(in) == 0 && !BIO_eof(in) && m->length == 0) {
		BUF_MEM_free(m);
		return p11s_err_ossl(err, P11S_E_IO, "cannot read the message");
	}
	*out = m;
	return P11S_OK;
}

static p11s_rc from_addresses(BIO *mem, p11s_verify_report *r, p11s_error *err)
{
	static const char *const names[] = {"From", NULL};
	p11s_headers *h = NULL;
	p11s_rc rc;

	rc = p11s_headers_read(mem, 0, &h, err);
	if (rc != P11S_OK)
		return rc;
	rc = p11s_headers_addresses(h, names, &r->from, &r->n_from, err);
	p11s_headers_free(h);
	if (rc == P11S_E_INPUT) {
		/*
		 * Real mail carries broken From headers.  The signature can still
		 * be checked; only the sender cannot be confirmed, which the
		 * verdict then says.
		 */
		r->from_error = p11s_strdup(p11s_error_message(err));
		p11s_error_clear(err);
		r->from = NULL;
		r->n_from = 0;
		return r->from_error ? P11S_OK : p11s_err(err, P11S_E_NOMEM, "out of memory");
	}
	return rc;
}

p11s_rc p11s_verify(BIO *in, BIO *content, const p11s_verify_opts *opts, p11s_verify_report **out,
                    p11s_error *err)
{
	p11s_verify_report *r = NULL;
	BUF_MEM *msg = NULL;
	BIO *mem = NULL, *bcont = NULL, *digests = NULL;
	CMS_ContentInfo *cms = NULL;
	STACK_OF(X509) *msgcerts = NULL;
	STACK_OF(CMS_SignerInfo) * sis;
	X509_STORE *store = NULL;
	p11s_rc rc;
	char buf[16384];
	int n, nid;

	*out = NULL;
	if (in == NULL || opts == NULL)
		return p11s_err(err, P11S_E_INTERNAL, "p11s_verify: no input");
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	r->at = opts->at ? opts->at : time(NULL);
	rc = slurp(in, &msg, err);
	if (rc != P11S_OK)
		goto out;
	if (msg->length == 0) {
		rc = p11s_err(err, P11S_E_INPUT, "the input is empty");
		goto out;
	}
	mem = BIO_new_mem_buf(msg->data, (int)msg->length);
	if (mem == NULL) {
		rc = p11s_err(err, P11S_E_NOMEM, "out of memory");
		goto out;
	}
	/* Not CMS_BINARY: OpenSSL joins the signed part's lines with CRLF (canonical form). */
	cms = SMIME_read_CMS_ex(mem, 0, &bcont, NULL);
	if (cms == NULL) {
		rc = p11s_err_ossl(err, P11S_E_INPUT,
		                   "not an S/MIME signed message (multipart/signed or "
		                   "application/pkcs7-mime; smime-type=signed-data)");
		goto out;
	}
	nid = OBJ_obj2nid(CMS_get0_type(cms));
	if (nid == NID_pkcs7_enveloped || nid == NID_id_smime_ct_authEnvelopedData) {
		rc = p11s_err(err, P11S_E_INPUT,
		              "the message is encrypted, not signed: decrypt it first "
		              "(p11smime decrypt | p11smime verify)");
		goto out;
	}
	if (nid != NID_pkcs7_signed) {
		rc = p11s_err(err, P11S_E_INPUT, "the message is S/MIME but not signed (%s)",
		              OBJ_nid2ln(nid));
		goto out;
	}
	if (bcont == NULL && CMS_is_detached(cms)) {
		rc = p11s_err(err, P11S_E_INPUT, "a detached signature without the signed content");
		goto out;
	}
	/* Only now the From header: a message that is not signed costs no address parsing. */
	BIO_reset(mem);
	rc = from_addresses(mem, r, err);
	if (rc != P11S_OK)
		goto out;
	r->format = bcont ? "detached" : "opaque";
	sis = CMS_get0_SignerInfos(cms);
	if (sis == NULL || sk_CMS_SignerInfo_num(sis) == 0) {
		rc = p11s_err(err, P11S_E_INPUT, "the message carries no signature");
		goto out;
	}
	msgcerts = CMS_get1_certs(cms);
	/* Signer certificates from the message, or from --trust when it leaves them out. */
	CMS_set1_signers_certs(cms, opts->trust, 0);
	ERR_clear_error();

	store = X509_STORE_new();
	if (store == NULL) {
		rc = p11s_err(err, P11S_E_NOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; opts->trust && i < sk_X509_num(opts->trust); i++)
		if (!X509_STORE_add_cert(store, sk_X509_value(opts->trust, i))) {
			unsigned long e = ERR_peek_last_error();

			/* The same anchor given twice is harmless. */
			if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
				rc = p11s_err_ossl(err, P11S_E_NOMEM, "cannot add a trust anchor");
				goto out;
			}
			ERR_clear_error();
		}

	/* One pass over the content feeds every signer's digest and the output. */
	digests = CMS_dataInit(cms, bcont);
	if (digests == NULL) {
		rc = p11s_err_ossl(err, P11S_E_INPUT, "cannot read the signed content");
		goto out;
	}
	while ((n = BIO_read(digests, buf, sizeof(buf))) > 0)
		if (content != NULL && BIO_write(content, buf, n) != n) {
			rc = p11s_err(err, P11S_E_IO, "cannot write the signed content");
			goto out;
		}
	if (n < 0) {
		rc = p11s_err_ossl(err, P11S_E_INPUT, "cannot read the signed content");
		goto out;
	}

	r->n_signers = (size_t)sk_CMS_SignerInfo_num(sis);
	r->signers = calloc(r->n_signers, sizeof(*r->signers));
	if (r->signers == NULL) {
		r->n_signers = 0;
		rc = p11s_err(err, P11S_E_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < r->n_signers; i++) {
		rc = fill_signer(&r->signers[i], sk_CMS_SignerInfo_value(sis, (int)i), digests,
		                 store, msgcerts, opts, r->at, err);
		if (rc != P11S_OK)
			goto out;
	}
	rc = judge(r);
	if (rc != P11S_OK)
		p11s_err(err, rc, "out of memory");
out:
	if (digests != NULL) {
		/* CMS_dataInit pushed its digest BIOs onto bcont; free only those. */
		while (digests != NULL && digests != bcont) {
			BIO *next = BIO_pop(digests);

			BIO_free(digests);
			digests = next;
		}
	}
	BIO_free(bcont);
	BIO_free(mem);
	X509_STORE_free(store);
	sk_X509_pop_free(msgcerts, X509_free);
	CMS_ContentInfo_free(cms);
	BUF_MEM_free(msg);
	ERR_clear_error();
	if (rc != P11S_OK) {
		p11s_verify_report_free(r);
		return rc;
	}
	*out = r;
	return P11S_OK;
}

/* ----------------------------------------------------------------- getters */

#define SIGNER(r, i) (&(r)->signers[i])

p11s_rc p11s_verify_report_rc(const p11s_verify_report *r)
{
	return r->rc;
}

const char *p11s_verify_report_summary(const p11s_verify_report *r)
{
	return r->summary;
}

const char *p11s_verify_report_format(const p11s_verify_report *r)
{
	return r->format;
}

size_t p11s_verify_report_from_count(const p11s_verify_report *r)
{
	return r->n_from;
}

const char *p11s_verify_report_from(const p11s_verify_report *r, size_t i)
{
	return i < r->n_from ? r->from[i] : NULL;
}

int p11s_verify_report_sender_ok(const p11s_verify_report *r)
{
	return r->sender_ok;
}

size_t p11s_verify_report_signer_count(const p11s_verify_report *r)
{
	return r->n_signers;
}

p11s_sig_verdict p11s_verify_signer_verdict(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->verdict;
}

const char *p11s_verify_signer_reason(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->reason;
}

X509 *p11s_verify_signer_cert(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->cert;
}

const char *p11s_verify_signer_subject(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->subject;
}

const char *p11s_verify_signer_issuer(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->issuer;
}

const char *p11s_verify_signer_serial(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->serial;
}

const char *p11s_verify_signer_digest(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->digest;
}

const char *p11s_verify_signer_signature_alg(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->sigalg;
}

size_t p11s_verify_signer_email_count(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->n_emails;
}

const char *p11s_verify_signer_email(const p11s_verify_report *r, size_t i, size_t j)
{
	return j < SIGNER(r, i)->n_emails ? SIGNER(r, i)->emails[j] : NULL;
}

int p11s_verify_signer_signing_time(const p11s_verify_report *r, size_t i, time_t *t)
{
	if (SIGNER(r, i)->has_time && t != NULL)
		*t = SIGNER(r, i)->signing_time;
	return SIGNER(r, i)->has_time;
}

int p11s_verify_signer_valid_at_signing(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->valid_at_signing;
}

int p11s_verify_signer_valid_at(const p11s_verify_report *r, size_t i, time_t *not_after)
{
	if (not_after != NULL && SIGNER(r, i)->cert != NULL)
		*not_after = asn1_time(X509_get0_notAfter(SIGNER(r, i)->cert));
	return SIGNER(r, i)->valid_at;
}

size_t p11s_verify_signer_chain_count(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->n_chain;
}

const char *p11s_verify_signer_chain_subject(const p11s_verify_report *r, size_t i, size_t j)
{
	return j < SIGNER(r, i)->n_chain ? SIGNER(r, i)->chain[j] : NULL;
}

const p11s_verdict *p11s_verify_signer_rules(const p11s_verify_report *r, size_t i)
{
	return SIGNER(r, i)->rules;
}

/* -------------------------------------------------------------------- JSON */

static json_t *jstr(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *jtime(time_t t)
{
	char buf[32];

	return json_string(p11s_time_format(t, buf, sizeof(buf)));
}

static json_t *jtri(int v)
{
	return v < 0 ? json_null() : json_boolean(v);
}

static json_t *verdict_json(const p11s_verdict *v)
{
	json_t *o, *checks, *warnings;

	if (v == NULL)
		return json_null();
	o = json_object();
	checks = json_array();
	warnings = json_array();
	for (size_t i = 0; i < p11s_verdict_check_count(v); i++)
		json_array_append_new(
		    checks,
		    json_pack("{s:s, s:s, s:o}", "rule", p11s_verdict_check_rule(v, i), "result",
		              p11s_check_result_name(p11s_verdict_check_result(v, i)), "message",
		              jstr(p11s_verdict_check_message(v, i))));
	for (size_t i = 0; i < p11s_verdict_warning_count(v); i++)
		json_array_append_new(warnings, json_string(p11s_verdict_warning(v, i)));
	json_object_set_new(o, "verdict",
	                    json_string(p11s_verdict_accepted(v) ? "accepted" : "rejected"));
	json_object_set_new(o, "ca", json_boolean(p11s_verdict_is_ca(v)));
	json_object_set_new(o, "usable_for_outgoing",
	                    json_boolean(p11s_verdict_usable_for_outgoing(v)));
	json_object_set_new(o, "checks", checks);
	json_object_set_new(o, "warnings", warnings);
	return o;
}

static const char *overall_name(p11s_rc rc)
{
	switch (rc) {
	case P11S_OK:
		return "good";
	case P11S_E_BAD_SIGNATURE:
		return "bad-signature";
	case P11S_E_UNTRUSTED:
		return "untrusted";
	case P11S_E_SENDER_MISMATCH:
		return "sender-mismatch";
	case P11S_E_CRYPTO:
		return "unsupported";
	default:
		return p11s_rc_name(rc);
	}
}

char *p11s_verify_report_json(const p11s_verify_report *r)
{
	json_t *root = json_object(), *signers = json_array(), *from = json_array();
	char *doc;

	if (root == NULL || signers == NULL || from == NULL) {
		json_decref(root);
		json_decref(signers);
		json_decref(from);
		return NULL;
	}
	for (size_t i = 0; i < r->n_from; i++)
		json_array_append_new(from, json_string(r->from[i]));
	for (size_t i = 0; i < r->n_signers; i++) {
		const struct signer *s = SIGNER(r, i);
		json_t *o = json_object(), *emails = json_array(), *chain = json_array();

		for (size_t j = 0; j < s->n_emails; j++)
			json_array_append_new(emails, json_string(s->emails[j]));
		for (size_t j = 0; j < s->n_chain; j++)
			json_array_append_new(chain, json_string(s->chain[j]));
		json_object_set_new(o, "verdict", json_string(p11s_sig_verdict_name(s->verdict)));
		json_object_set_new(o, "reason", jstr(s->reason));
		json_object_set_new(o, "subject", jstr(s->subject));
		json_object_set_new(o, "emails", emails);
		json_object_set_new(o, "issuer", jstr(s->issuer));
		json_object_set_new(o, "serial", jstr(s->serial));
		json_object_set_new(o, "signing_time",
		                    s->has_time ? jtime(s->signing_time) : json_null());
		json_object_set_new(o, "digest", jstr(s->digest));
		json_object_set_new(o, "signature_algorithm", jstr(s->sigalg));
		if (s->cert != NULL) {
			json_object_set_new(o, "not_before",
			                    jtime(asn1_time(X509_get0_notBefore(s->cert))));
			json_object_set_new(o, "not_after",
			                    jtime(asn1_time(X509_get0_notAfter(s->cert))));
		} else {
			json_object_set_new(o, "not_before", json_null());
			json_object_set_new(o, "not_after", json_null());
		}
		json_object_set_new(o, "chain_checked_at", jtime(s->checked_at));
		json_object_set_new(o, "valid_at_signing_time", jtri(s->valid_at_signing));
		json_object_set_new(o, "valid_at", jtri(s->valid_at));
		json_object_set_new(o, "chain", chain);
		json_object_set_new(o, "rules", verdict_json(s->rules));
		json_array_append_new(signers, o);
	}
	json_object_set_new(root, "verdict", json_string(overall_name(r->rc)));
	json_object_set_new(root, "summary", jstr(r->summary));
	json_object_set_new(root, "format", jstr(r->format));
	json_object_set_new(root, "at", jtime(r->at));
	json_object_set_new(root, "from", from);
	json_object_set_new(root, "sender_matches", jtri(r->sender_ok));
	if (r->from_error != NULL)
		json_object_set_new(root, "from_error", json_string(r->from_error));
	json_object_set_new(root, "signers", signers);
	doc = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return doc;
}
