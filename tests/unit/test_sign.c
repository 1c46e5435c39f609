/*
 * Signing with software keys: every signature is checked by OpenSSL's
 * CMS_verify against the bytes the test expects to be signed (built here
 * from the original message), never against what the signer wrote.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "hooks_internal.h"
#include "mime.h"
#include "p11smime/io.h"
#include "p11smime/sign.h"

static EVP_PKEY *ca_key, *rsa_key, *p256_key, *p384_key;
static X509 *ca_cert;

static X509 *make_cert(EVP_PKEY *key, EVP_PKEY *issuer_key, X509 *issuer, const char *cn,
                       const char *email, const char *ku, int ca, long from_days, long to_days)
{
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	char san[128];
	static long serial = 1;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400);
	X509_gmtime_adj(X509_getm_notAfter(x), to_days * 86400);
	X509_set_pubkey(x, key);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
	                          ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, ku);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (!ca) {
		snprintf(san, sizeof(san), "email:%s", email);
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_ext_key_usage, "emailProtection");
		X509_add_ext(x, ext, -1);
		X509_EXTENSION_free(ext);
	}
	assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	X509_NAME_free(name);
	return x;
}

static int setup(void **state)
{
	(void)state;
	ca_key = EVP_RSA_gen(2048);
	rsa_key = EVP_RSA_gen(2048);
	p256_key = EVP_EC_gen("P-256");
	p384_key = EVP_EC_gen("P-384");
	ca_cert = make_cert(ca_key, NULL, NULL, "Test CA", NULL, "critical,keyCertSign,cRLSign", 1,
	                    -1, 3650);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(rsa_key);
	EVP_PKEY_free(p256_key);
	EVP_PKEY_free(p384_key);
	X509_free(ca_cert);
	return 0;
}

static X509 *ee_cert(EVP_PKEY *key, const char *ku)
{
	return make_cert(key, ca_key, ca_cert, "Alice", "alice@example.org", ku, 0, -1, 365);
}

/* Sign @p msg; returns the rc, *out the signed message (NUL-terminated). */
static p11s_rc sign_str(p11s_signer *s, const char *msg, char **out, size_t *olen, p11s_error *err)
{
	BIO *in = BIO_new_mem_buf(msg, (int)strlen(msg));
	BIO *o = BIO_new(BIO_s_mem());
	p11s_rc rc = p11s_signer_sign(s, in, o, err);
	char *data;
	long n = BIO_get_mem_data(o, &data);

	*out = malloc((size_t)n + 1);
	if (n > 0)
		memcpy(*out, data, (size_t)n);
	(*out)[n] = '\0';
	if (olen != NULL)
		*olen = (size_t)n;
	BIO_free(in);
	BIO_free(o);
	return rc;
}

static p11s_signer *new_signer(X509 *cert, EVP_PKEY *key, int pss, int opaque, const char *digest)
{
	p11s_sign_opts o;
	p11s_signer *s = NULL;
	p11s_error *err = p11s_error_new();
	STACK_OF(X509) *chain = sk_X509_new_null();

	sk_X509_push(chain, ca_cert);
	p11s_sign_opts_init(&o);
	o.pss = pss;
	o.opaque = opaque;
	o.digest = digest;
	if (p11s_signer_new(cert, key, chain, &o, &s, err) != P11S_OK)
		fail_msg("p11s_signer_new: %s", p11s_error_message(err));
	sk_X509_free(chain);
	p11s_error_free(err);
	return s;
}

/*
 * Verify the signature in @p signed_msg against @p expected (the canonical
 * entity the test built): 1 good, 0 not.  @p content_out gets what an
 * opaque signature carries.
 */
static int verify(const char *signed_msg, const char *expected, int opaque, CMS_ContentInfo **cmsp)
{
	BIO *in = BIO_new_mem_buf(signed_msg, (int)strlen(signed_msg));
	BIO *part = NULL, *exp, *out = BIO_new(BIO_s_mem());
	CMS_ContentInfo *cms = SMIME_read_CMS(in, &part);
	X509_STORE *store = X509_STORE_new();
	int ok = 0;

	assert_non_null(cms);
	X509_STORE_add_cert(store, ca_cert);
	if (opaque) {
		char *data;
		long n;

		assert_null(part);
		ok = CMS_verify(cms, NULL, store, NULL, out, CMS_BINARY) == 1;
		n = BIO_get_mem_data(out, &data);
		ok = ok && (size_t)n == strlen(expected) && memcmp(data, expected, (size_t)n) == 0;
	} else {
		assert_non_null(part);
		exp = BIO_new_mem_buf(expected, (int)strlen(expected));
		ok = CMS_verify(cms, NULL, store, exp, NULL, CMS_BINARY) == 1;
		BIO_free(exp);
	}
	ERR_clear_error();
	BIO_free(part);
	BIO_free(in);
	BIO_free(out);
	X509_STORE_free(store);
	if (cmsp != NULL)
		*cmsp = cms;
	else
		CMS_ContentInfo_free(cms);
	return ok;
}

static const char plain_lf[] = "Received: from x by y\n"
                               "From: Alice <alice@example.org>\n"
                               "To: bob@example.org\n"
                               "Subject: hello\n"
                               " folded\n"
                               "MIME-Version: 1.0\n"
                               "Content-Type: text/plain; charset=us-ascii\n"
                               "Date: Sat, 28 Nov 2026 00:00:00 +0000\n"
                               "\n"
                               "Hello Bob.\n"
                               "\n"
                               "-- \n"
                               "Alice\n";
static const char plain_entity[] = "Content-Type: text/plain; charset=us-ascii\r\n"
                                   "\r\n"
                                   "Hello Bob.\r\n"
                                   "\r\n"
                                   "-- \r\n"
                                   "Alice\r\n";

static void check_outer_headers(const char *out, const char *eol)
{
	char *want = p11i_asprintf("Received: from x by y%sFrom: Alice <alice@example.org>%s"
	                           "To: bob@example.org%sSubject: hello%s folded%s"
	                           "Date: Sat, 28 Nov 2026 00:00:00 +0000%sMIME-Version: 1.0%s",
	                           eol, eol, eol, eol, eol, eol, eol);

	assert_memory_equal(out, want, strlen(want));
	free(want);
}

static void detached_rsa(void **state)
{
	X509 *cert = ee_cert(rsa_key, "critical,digitalSignature,keyEncipherment");
	p11s_signer *s = new_signer(cert, rsa_key, 0, 0, NULL);
	CMS_ContentInfo *cms = NULL;
	p11s_error *err = p11s_error_new();
	char *out, *bad;
	STACK_OF(X509) * certs;
	CMS_SignerInfo *si;

	(void)state;
	assert_int_equal(sign_str(s, plain_lf, &out, NULL, err), P11S_OK);
	check_outer_headers(out, "\n");
	assert_non_null(strstr(out, "Content-Type: multipart/signed; "
	                            "protocol=\"application/pkcs7-signature\"; micalg=sha-256;"));
	/* LF in, LF out. */
	assert_null(strchr(out, '\r'));
	assert_true(verify(out, plain_entity, 0, &cms));

	/* The attributes and certificates the issue asks for. */
	si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
	assert_true(CMS_signed_get_attr_by_NID(si, NID_pkcs9_contentType, -1) >= 0);
	assert_true(CMS_signed_get_attr_by_NID(si, NID_pkcs9_messageDigest, -1) >= 0);
	assert_true(CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1) >= 0);
	assert_true(CMS_signed_get_attr_by_NID(si, NID_SMIMECapabilities, -1) >= 0);
	/* Capabilities: AES only, strongest first; nothing weak is invited. */
	ASN1_STRING *capseq = CMS_signed_get0_data_by_OBJ(si, OBJ_nid2obj(NID_SMIMECapabilities),
	                                                  -3, V_ASN1_SEQUENCE);
	const unsigned char *cp = ASN1_STRING_get0_data(capseq);
	STACK_OF(X509_ALGOR) *caps = d2i_X509_ALGORS(NULL, &cp, ASN1_STRING_length(capseq));
	char first[64];

	assert_int_equal(sk_X509_ALGOR_num(caps), 5);
	OBJ_obj2txt(first, sizeof(first), sk_X509_ALGOR_value(caps, 0)->algorithm, 0);
	assert_string_equal(first, "aes-256-gcm");
	for (int i = 0; i < sk_X509_ALGOR_num(caps); i++) {
		int nid = OBJ_obj2nid(sk_X509_ALGOR_value(caps, i)->algorithm);

		assert_true(nid != NID_des_cbc && nid != NID_rc2_cbc && nid != NID_des_ede3_cbc);
	}
	sk_X509_ALGOR_pop_free(caps, X509_ALGOR_free);
	certs = CMS_get1_certs(cms);
	/* DER sorts a SET OF: the order given is not kept, the members are. */
	assert_int_equal(sk_X509_num(certs), 2);
	assert_true((X509_cmp(sk_X509_value(certs, 0), cert) == 0 &&
	             X509_cmp(sk_X509_value(certs, 1), ca_cert) == 0) ||
	            (X509_cmp(sk_X509_value(certs, 1), cert) == 0 &&
	             X509_cmp(sk_X509_value(certs, 0), ca_cert) == 0));
	sk_X509_pop_free(certs, X509_free);
	CMS_ContentInfo_free(cms);

	/* Negative control: one byte changed in what we expect fails. */
	bad = strdup(plain_entity);
	bad[strlen(bad) - 3] ^= 1;
	assert_false(verify(out, bad, 0, NULL));
	free(bad);

	/* The same signer signs again (a batch): CRLF in, CRLF out. */
	char *crlf = malloc(2 * sizeof(plain_lf)), *o2;
	size_t k = 0;

	for (const char *p = plain_lf; *p; p++) {
		if (*p == '\n')
			crlf[k++] = '\r';
		crlf[k++] = *p;
	}
	crlf[k] = '\0';
	assert_int_equal(sign_str(s, crlf, &o2, NULL, err), P11S_OK);
	check_outer_headers(o2, "\r\n");
	for (char *p = strchr(o2, '\n'); p != NULL; p = strchr(p + 1, '\n'))
		assert_int_equal(p[-1], '\r');
	assert_true(verify(o2, plain_entity, 0, NULL));
	assert_string_equal(p11s_signer_algorithm(s), "rsassa-pkcs1-v1_5");
	assert_null(p11s_signer_mechanism(s));
	free(o2);
	free(crlf);
	free(out);
	p11s_signer_free(s);
	X509_free(cert);
	p11s_error_free(err);
}

static int sig_nid(CMS_ContentInfo *cms, int *md_nid)
{
	CMS_SignerInfo *si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
	X509_ALGOR *dig, *sig;

	CMS_SignerInfo_get0_algs(si, NULL, NULL, &dig, &sig);
	*md_nid = OBJ_obj2nid(dig->algorithm);
	return OBJ_obj2nid(sig->algorithm);
}

static void pss_and_ec(void **state)
{
	struct {
		EVP_PKEY **key;
		int pss;
		const char *digest;
		const char *micalg;
		int md_nid;
		const char *alg;
	} cases[] = {
	    {&rsa_key, 1, NULL, "micalg=sha-256", NID_sha256, "rsassa-pss"},
	    {&rsa_key, 0, "sha512", "micalg=sha-512", NID_sha512, "rsassa-pkcs1-v1_5"},
	    {&p256_key, 0, NULL, "micalg=sha-256", NID_sha256, "ecdsa"},
	    {&p384_key, 0, NULL, "micalg=sha-384", NID_sha384, "ecdsa"},
	};
	p11s_error *err = p11s_error_new();

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		X509 *cert = ee_cert(*cases[i].key, "critical,digitalSignature");
		p11s_signer *s = new_signer(cert, *cases[i].key, cases[i].pss, 0, cases[i].digest);
		CMS_ContentInfo *cms = NULL;
		char *out;
		int md, nid;

		assert_int_equal(sign_str(s, plain_lf, &out, NULL, err), P11S_OK);
		assert_non_null(strstr(out, cases[i].micalg));
		assert_true(verify(out, plain_entity, 0, &cms));
		nid = sig_nid(cms, &md);
		assert_int_equal(md, cases[i].md_nid);
		if (cases[i].pss)
			assert_int_equal(nid, NID_rsassaPss);
		else if (*cases[i].key == rsa_key)
			assert_true(nid == NID_rsaEncryption || nid == NID_sha512WithRSAEncryption);
		else
			assert_true(nid == NID_ecdsa_with_SHA256 || nid == NID_ecdsa_with_SHA384);
		assert_string_equal(p11s_signer_algorithm(s), cases[i].alg);
		CMS_ContentInfo_free(cms);
		free(out);
		p11s_signer_free(s);
		X509_free(cert);
	}
	p11s_error_free(err);
}

static void opaque_and_entities(void **state)
{
	X509 *cert = ee_cert(p256_key, "critical,digitalSignature");
	p11s_signer *s = new_signer(cert, p256_key, 0, 1, NULL);
	p11s_error *err = p11s_error_new();
	char *out;

	(void)state;
	assert_int_equal(sign_str(s, plain_lf, &out, NULL, err), P11S_OK);
	check_outer_headers(out, "\n");
	assert_non_null(
	    strstr(out, "Content-Type: application/pkcs7-mime; smime-type=signed-data;"));
	assert_non_null(strstr(out, "name=\"smime.p7m\""));
	assert_true(verify(out, plain_entity, 1, NULL));
	free(out);
	p11s_signer_free(s);

	/* Opaque RSA-PSS: encoded before it is signed (OpenSSL 3.0 needs help there). */
	X509 *rc = ee_cert(rsa_key, "critical,digitalSignature");

	s = new_signer(rc, rsa_key, 1, 1, NULL);
	assert_int_equal(sign_str(s, plain_lf, &out, NULL, err), P11S_OK);
	assert_true(verify(out, plain_entity, 1, NULL));
	free(out);
	p11s_signer_free(s);
	X509_free(rc);

	/* A bare entity with 8-bit text and an empty-bodied message, detached. */
	s = new_signer(cert, p256_key, 0, 0, NULL);
	assert_int_equal(sign_str(s,
	                          "Content-Type: text/plain; charset=utf-8\r\n"
	                          "Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9f"
	                          "e\r\n",
	                          &out, NULL, err),
	                 P11S_OK);
	assert_memory_equal(out, "MIME-Version: 1.0\r\nContent-Type: multipart/signed", 49);
	assert_true(verify(out,
	                   "Content-Type: text/plain; charset=utf-8\r\n"
	                   "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n",
	                   0, NULL));
	free(out);
	assert_int_equal(sign_str(s, "Subject: nothing\n\n", &out, NULL, err), P11S_OK);
	assert_true(verify(out, "\r\n", 0, NULL));
	/* The empty body really is what got signed. */
	assert_false(verify(out, "\r\nx", 0, NULL));
	free(out);
	p11s_signer_free(s);
	X509_free(cert);
	p11s_error_free(err);
}

static void large_message_streams(void **state)
{
	/* 8 MiB of base64-ish lines inside a multipart; signed and verified. */
	X509 *cert = ee_cert(rsa_key, "critical,digitalSignature");
	p11s_signer *s = new_signer(cert, rsa_key, 0, 0, NULL);
	p11s_error *err = p11s_error_new();
	const char *head = "From: a@example.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
	                   "Content-Type: application/octet-stream\nContent-Transfer-Encoding: "
	                   "base64\n\n";
	size_t lines = 8 * 1024 * 1024 / 77, hl = strlen(head);
	char *msg = malloc(hl + lines * 77 + 16), *exp = malloc(hl + lines * 78 + 32), *out;
	size_t m = 0, e = 0;

	(void)state;
	memcpy(msg, head, hl);
	m = hl;
	e = 0;
	for (const char *p = strstr(head, "Content-Type"); *p; p++) {
		if (*p == '\n')
			exp[e++] = '\r';
		exp[e++] = *p;
	}
	for (size_t i = 0; i < lines; i++) {
		memset(msg + m, 'A' + (int)(i % 26), 76);
		msg[m + 76] = '\n';
		memcpy(exp + e, msg + m, 76);
		exp[e + 76] = '\r';
		exp[e + 77] = '\n';
		m += 77;
		e += 78;
	}
	memcpy(msg + m, "--b--\n", 7);
	memcpy(exp + e, "--b--\r\n", 8);
	assert_int_equal(sign_str(s, msg, &out, NULL, err), P11S_OK);
	assert_true(verify(out, exp, 0, NULL));
	free(out);
	free(msg);
	free(exp);
	p11s_signer_free(s);
	X509_free(cert);
	p11s_error_free(err);
}

static void refusals(void **state)
{
	p11s_sign_opts o;
	p11s_signer *s = NULL;
	p11s_error *err = p11s_error_new();
	X509 *good = ee_cert(rsa_key, "critical,digitalSignature,keyEncipherment");
	X509 *nods = ee_cert(rsa_key, "critical,keyEncipherment");
	char *out;

	(void)state;
	p11s_sign_opts_init(&o);
	/* Outside validity at --at. */
	o.at = time(NULL) + 2 * 365 * 86400L;
	assert_int_equal(p11s_signer_new(good, rsa_key, NULL, &o, &s, err), P11S_E_NOT_VALID_NOW);
	assert_null(s);
	assert_non_null(strstr(p11s_error_message(err), "not valid"));
	o.at = 0;
	/* Key Usage without digitalSignature. */
	assert_int_equal(p11s_signer_new(nods, rsa_key, NULL, &o, &s, err), P11S_E_REJECTED);
	assert_non_null(strstr(p11s_error_message(err), "sign"));
	/* Not the certificate's key. */
	assert_int_equal(p11s_signer_new(good, p256_key, NULL, &o, &s, err), P11S_E_KEY_MISMATCH);
	/* PSS needs RSA; digests are the three named. */
	X509 *ec = ee_cert(p256_key, "critical,digitalSignature");

	o.pss = 1;
	assert_int_equal(p11s_signer_new(ec, p256_key, NULL, &o, &s, err), P11S_E_USAGE);
	o.pss = 0;
	o.digest = "md5";
	assert_int_equal(p11s_signer_new(good, rsa_key, NULL, &o, &s, err), P11S_E_USAGE);
	o.digest = NULL;

	/* Bad input: nothing signed, an error that says why. */
	assert_int_equal(p11s_signer_new(good, rsa_key, NULL, &o, &s, err), P11S_OK);
	assert_int_equal(sign_str(s, "", &out, NULL, err), P11S_E_INPUT);
	free(out);
	assert_int_equal(sign_str(s,
	                          "Content-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n--b\n"
	                          "\nmore tex",
	                          &out, NULL, err),
	                 P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "truncated"));
	free(out);
	assert_int_equal(sign_str(s, "Subject: x\nTo: cut", &out, NULL, err), P11S_E_INPUT);
	free(out);
	p11s_signer_free(s);
	X509_free(good);
	X509_free(nods);
	X509_free(ec);
	p11s_error_free(err);
}

/* @p msg with its multipart boundary ("----=_p11s_" and 24 random hex digits) made constant. */
static void same_boundary(char *msg)
{
	for (char *p = msg; (p = strstr(p, "_p11s_")) != NULL; p += 6)
		for (int i = 0; i < 24 && p[6 + i] != '\0'; i++)
			p[6 + i] = 'x';
}

/* The DER of the signature in @p signed_msg with the signature value emptied (ECDSA and PSS are
 * random). */
static unsigned char *der_unsigned(const char *signed_msg, int *len)
{
	BIO *in = BIO_new_mem_buf(signed_msg, (int)strlen(signed_msg)), *part = NULL;
	CMS_ContentInfo *cms = SMIME_read_CMS(in, &part);
	CMS_SignerInfo *si;
	unsigned char *der = NULL;

	assert_non_null(cms);
	si = sk_CMS_SignerInfo_value(CMS_get0_SignerInfos(cms), 0);
	assert_non_null(si);
	assert_true(ASN1_STRING_set(CMS_SignerInfo_get0_signature(si), "", 0));
	*len = i2d_CMS_ContentInfo(cms, &der);
	assert_true(*len > 0);
	CMS_ContentInfo_free(cms);
	BIO_free(part);
	BIO_free(in);
	return der;
}

/*
 * @p key as a "foreign" key: OpenSSL's legacy path, as the token's keys
 * take (pkcs11/key.c gives them a method of their own).
 */
static EVP_PKEY *legacy_rsa(EVP_PKEY *key)
{
	static RSA_METHOD *meth;
	RSA *r = EVP_PKEY_get1_RSA(key);
	EVP_PKEY *pk = EVP_PKEY_new();

	if (meth == NULL)
		meth = RSA_meth_dup(RSA_get_default_method());
	assert_non_null(r);
	assert_non_null(meth);
	assert_true(RSA_set_method(r, meth));
	assert_true(EVP_PKEY_assign_RSA(pk, r));
	return pk;
}

/*
 * A detached signature from the signer's prepared template is the one
 * OpenSSL's CMS code makes, byte for byte: RSA PKCS#1 v1.5 is
 * deterministic, so whole messages compare (both signed within one second:
 * a few tries); ECDSA and PSS compare with their signature values emptied.
 */
static void template_matches_openssl(void **state)
{
	X509 *rsa = ee_cert(rsa_key, "critical,digitalSignature,keyEncipherment");
	X509 *ec = ee_cert(p256_key, "critical,digitalSignature");
	X509 *ec384 = ee_cert(p384_key, "critical,digitalSignature");
	EVP_PKEY *legacy = legacy_rsa(rsa_key);
	struct {
		X509 *cert;
		EVP_PKEY *key;
		int pss, exact, big_chain;
		const char *digest;
	} cases[] = {
	    {rsa, rsa_key, 0, 1, 0, NULL},     {rsa, rsa_key, 0, 1, 0, "sha384"},
	    {rsa, rsa_key, 0, 1, 0, "sha512"}, {rsa, rsa_key, 0, 1, 1, NULL},
	    {rsa, rsa_key, 1, 0, 0, NULL},     {ec, p256_key, 0, 0, 0, NULL},
	    {ec384, p384_key, 0, 0, 0, NULL},
	};
	const char *msgs[] = {plain_lf,
	                      "Subject: x\r\nContent-Type: text/plain\r\n\r\nCRLF body\r\n"};
	p11s_error *err = p11s_error_new();

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		p11s_sign_opts o;
		p11s_signer *s = NULL;
		STACK_OF(X509) *chain = sk_X509_new_null();

		sk_X509_push(chain, ca_cert);
		/* 100 more certificates: lengths of three bytes in the outer headers. */
		for (int i = 0; cases[c].big_chain && i < 100; i++)
			sk_X509_push(chain, make_cert(p256_key, ca_key, ca_cert, "CA n", NULL,
			                              "critical,keyCertSign", 1, -1, 365));
		p11s_sign_opts_init(&o);
		o.pss = cases[c].pss;
		o.digest = cases[c].digest;
		assert_int_equal(p11s_signer_new(cases[c].cert, cases[c].key, chain, &o, &s, err),
		                 P11S_OK);
		for (size_t m = 0; m < sizeof(msgs) / sizeof(msgs[0]); m++) {
			int same = 0;

			for (int tries = 0; tries < 5 && !same; tries++) {
				char *a = NULL, *b = NULL;

				p11i_signer_set_template(s, 1);
				assert_int_equal(sign_str(s, msgs[m], &a, NULL, err), P11S_OK);
				p11i_signer_set_template(s, 0);
				assert_int_equal(sign_str(s, msgs[m], &b, NULL, err), P11S_OK);
				p11i_signer_set_template(s, 1);
				same_boundary(a);
				same_boundary(b);
				if (cases[c].exact) {
					same = strcmp(a, b) == 0;
				} else {
					int la, lb;
					unsigned char *da = der_unsigned(a, &la),
					              *db = der_unsigned(b, &lb);

					same = la == lb && memcmp(da, db, (size_t)la) == 0;
					OPENSSL_free(da);
					OPENSSL_free(db);
					/* The text around the signature: the same up to its base64.
					 */
					same = same &&
					       strncmp(a, b,
					               (size_t)(strstr(a, "smime.p7s\"") - a)) == 0;
				}
				free(a);
				free(b);
			}
			if (!same)
				fail_msg("case %zu, message %zu: the template's signature differs",
				         c, m);
		}
		for (int i = 1; i < sk_X509_num(chain); i++)
			X509_free(sk_X509_value(chain, i));
		sk_X509_free(chain);
		p11s_signer_free(s);
	}
	X509_free(rsa);
	X509_free(ec);
	X509_free(ec384);
	EVP_PKEY_free(legacy);
	p11s_error_free(err);
}

/* The canonical entity sign signs of @p msg, computed from memory. */
static char *canonical(const char *msg)
{
	BIO *in = BIO_new_mem_buf(msg, (int)strlen(msg)), *out = BIO_new(BIO_s_mem());
	p11i_headers *h = NULL;
	char *data, *copy;
	long n;

	assert_int_equal(p11i_headers_read(in, 0, &h, NULL), P11S_OK);
	assert_int_equal(p11i_mime_canonicalize(h, P11I_HDR_CONTENT, in, out, NULL), P11S_OK);
	n = BIO_get_mem_data(out, &data);
	copy = malloc((size_t)n + 1);
	memcpy(copy, data, (size_t)n);
	copy[n] = '\0';
	p11i_headers_free(h);
	BIO_free(in);
	BIO_free(out);
	return copy;
}

/*
 * From a file opened as the command opens one (its position counted by
 * its BIO, parts read again from the file, a top-level part written ahead
 * and taken back): the same message as from memory, whose signature is
 * over the same canonical entity.
 */
static void file_input_signs_as_memory(void **state)
{
	static const char multi[] =
	    /* A part declared 7bit that is not: scanned, then read again from the file. */
	    "From: a@example.org\nMIME-Version: 1.0\n"
	    "Content-Type: multipart/mixed; boundary=b\n\npreamble\n--b\n"
	    "Content-Type: text/plain\n\nclean text\n--b\n"
	    "Content-Type: text/plain; charset=utf-8\n\ncaf\xc3\xa9 au lait\n--b\n"
	    "Content-Type: text/plain\n\nlast\n--b--\nepilogue\n";
	/* A top-level part found 8-bit halfway: written ahead, taken back, encoded. */
	static const char top8[] =
	    "From: a@example.org\nContent-Type: text/plain; charset=utf-8\n\n"
	    "first line\nsecond line \xe2\x82\xac\n";
	static const char head[] = "From: a@example.org\nContent-Type: text/plain\n\n";
	static const char line[] = "a line of some thirty bytes..\n";
	const char *msgs[5] = {plain_lf, multi, top8, NULL, NULL};
	X509 *cert = ee_cert(p256_key, "critical,digitalSignature");
	p11s_signer *s = new_signer(cert, p256_key, 0, 0, NULL);
	p11s_error *err = p11s_error_new();
	char path[] = "/tmp/p11s-sign-file-XXXXXX", *big, *mem_out, *file_out, *entity;
	size_t n = sizeof(head) - 1;

	(void)state;
	/* A long one too: past the readers' blocks. */
	big = malloc(n + 10000 * (sizeof(line) - 1) + 1);
	memcpy(big, head, n);
	for (int i = 0; i < 10000; i++, n += sizeof(line) - 1)
		memcpy(big + n, line, sizeof(line) - 1);
	big[n] = '\0';
	msgs[3] = big;
	for (int i = 0; msgs[i] != NULL; i++) {
		const char *m = msgs[i];
		int fd = mkstemp(path);
		BIO *in = NULL, *out = BIO_new(BIO_s_mem());
		char *data;
		long len;

		assert_true(fd >= 0);
		assert_int_equal(write(fd, m, strlen(m)), (ssize_t)strlen(m));
		close(fd);
		assert_int_equal(p11s_input_open(path, &in, err), P11S_OK);
		assert_int_equal(p11s_signer_sign(s, in, out, err), P11S_OK);
		BIO_free_all(in);
		unlink(path);
		strcpy(path + strlen(path) - 6, "XXXXXX");
		len = BIO_get_mem_data(out, &data);
		file_out = strndup(data, (size_t)len);
		BIO_free(out);
		assert_int_equal(sign_str(s, m, &mem_out, NULL, err), P11S_OK);
		entity = canonical(m);
		assert_true(verify(file_out, entity, 0, NULL));
		/* The same bytes up to the signature (ECDSA's differ every time). */
		same_boundary(file_out);
		same_boundary(mem_out);
		*strstr(file_out, "Content-Type: application/pkcs7-signature") = '\0';
		*strstr(mem_out, "Content-Type: application/pkcs7-signature") = '\0';
		assert_string_equal(file_out, mem_out);
		free(entity);
		free(file_out);
		free(mem_out);
	}
	free(big);
	p11s_signer_free(s);
	X509_free(cert);
	p11s_error_free(err);
}

/* The 24 hex digits of @p signed_msg's boundary. */
static void boundary_of(const char *signed_msg, char out[25])
{
	const char *p = strstr(signed_msg, "_p11s_");

	assert_non_null(p);
	memcpy(out, p + 6, 24);
	out[24] = '\0';
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

/*
 * Boundaries come from a page of the kernel's random bytes: all differ,
 * across the page's refills, and a child after fork() does not hand out
 * the bytes its parent goes on with.
 */
static void boundaries_differ_across_fork(void **state)
{
	enum { N = 800 };
	X509 *cert = ee_cert(p256_key, "critical,digitalSignature");
	p11s_signer *s = new_signer(cert, p256_key, 0, 0, NULL);
	p11s_error *err = p11s_error_new();
	char(*seen)[25] = calloc(N + 2, 25), *out;
	int p[2], status;
	pid_t pid;

	(void)state;
	for (int i = 0; i < N; i++) {
		assert_int_equal(sign_str(s, plain_lf, &out, NULL, err), P11S_OK);
		boundary_of(out, seen[i]);
		free(out);
	}
	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char b[25];

		if (sign_str(s, plain_lf, &out, NULL, err) != P11S_OK)
			_exit(1);
		boundary_of(out, b);
		_exit(write(p[1], b, 24) == 24 ? 0 : 1);
	}
	close(p[1]);
	assert_int_equal(read(p[0], seen[N], 24), 24);
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(sign_str(s, plain_lf, &out, NULL, err), P11S_OK);
	boundary_of(out, seen[N + 1]);
	free(out);
	qsort(seen, N + 2, 25, cmp_str);
	for (int i = 1; i < N + 2; i++)
		assert_string_not_equal(seen[i - 1], seen[i]);
	free(seen);
	p11s_signer_free(s);
	X509_free(cert);
	p11s_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(detached_rsa),
	    cmocka_unit_test(pss_and_ec),
	    cmocka_unit_test(opaque_and_entities),
	    cmocka_unit_test(large_message_streams),
	    cmocka_unit_test(refusals),
	    cmocka_unit_test(template_matches_openssl),
	    cmocka_unit_test(file_input_signs_as_memory),
	    cmocka_unit_test(boundaries_differ_across_fork),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
