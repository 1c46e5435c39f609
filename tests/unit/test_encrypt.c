/*
 * p11s_encrypt() with software recipient keys: every cipher and key
 * management decrypts with OpenSSL's CMS_decrypt in-process, headers are
 * kept, and the refusals leave nothing written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include <openssl/cms.h>
#include <openssl/err.h>

#include "common.h"
#include "p11smime/encrypt.h"
#include "p11smime/verify.h"
#include "testutil.h"

#define DAY 86400

#define HEADERS                               \
	"From: Alice <alice@example.org>\r\n" \
	"To: Bob <bob@example.org>\r\n"       \
	"Subject: the plan\r\n"               \
	"Message-ID: <1@example.org>\r\n"     \
	"MIME-Version: 1.0\r\n"
#define CONTENT_HDR "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
#define BODY                 \
	"Gr\xc3\xbc\xc3\x9f" \
	"e,\r\nthe plan is on.\r\n"

static EVP_PKEY *ca_key, *rsa_key, *ec_key;
static X509 *ca, *rsa_cert, *ec_cert;
static time_t now;

static X509 *person(EVP_PKEY *key, const char *email, const char *ku, time_t nb, time_t na)
{
	char san[128];

	snprintf(san, sizeof(san), "email:%s", email);
	return tu_cert(&(tu_cert_spec){.key = key,
	                               .cn = email,
	                               .san = san,
	                               .ku = ku,
	                               .eku = "emailProtection",
	                               .ca = -1,
	                               .not_before = nb,
	                               .not_after = na,
	                               .issuer = ca,
	                               .issuer_key = ca_key});
}

static int setup(void **state)
{
	(void)state;
	now = time(NULL);
	ca_key = tu_key("ec:P-256#ca");
	ca = tu_cert(&(tu_cert_spec){.key = ca_key,
	                             .cn = "Encrypt Test Root",
	                             .ca = 1,
	                             .ku = "critical,keyCertSign,cRLSign"});
	rsa_key = tu_key("rsa:2048");
	rsa_cert = person(rsa_key, "bob@example.org", "critical,digitalSignature,keyEncipherment",
	                  now - DAY, now + 365 * DAY);
	ec_key = tu_key("ec:P-256");
	ec_cert = person(ec_key, "bob@example.org", "critical,digitalSignature,keyAgreement",
	                 now - DAY, now + 365 * DAY);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(ca);
	X509_free(rsa_cert);
	X509_free(ec_cert);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(rsa_key);
	EVP_PKEY_free(ec_key);
	return 0;
}

/* Encrypt @p msg to @p certs (NULL-terminated); *out gets the output (malloc'd). */
static p11s_rc run_encrypt(const char *msg, X509 **certs, const p11s_encrypt_opts *o, char **out,
                           p11s_error *err)
{
	p11s_recipients *r = p11s_recipients_new();
	BIO *in = BIO_new_mem_buf(msg, -1), *mem = BIO_new(BIO_s_mem());
	p11s_rc rc;
	char *p;
	long len;

	for (size_t i = 0; certs[i]; i++)
		assert_int_equal(p11s_recipients_add_cert(r, certs[i], "test", NULL), P11S_OK);
	rc = p11s_encrypt(in, mem, r, o, err);
	len = BIO_get_mem_data(mem, &p);
	*out = len > 0 ? strndup(p, (size_t)len) : strdup("");
	p11s_recipients_free(r);
	BIO_free(in);
	BIO_free(mem);
	return rc;
}

/* Decrypt @p msg with OpenSSL and return the plaintext (malloc'd); *cms_out keeps the CMS. */
static char *openssl_decrypt(const char *msg, EVP_PKEY *key, X509 *cert, CMS_ContentInfo **keep)
{
	BIO *in = BIO_new_mem_buf(msg, -1), *out = BIO_new(BIO_s_mem());
	CMS_ContentInfo *cms = SMIME_read_CMS(in, NULL);
	char *p, *s;
	long len;

	assert_non_null(cms);
	if (CMS_decrypt(cms, key, cert, NULL, out, CMS_BINARY) != 1) {
		ERR_print_errors_fp(stderr);
		fail_msg("CMS_decrypt failed");
	}
	len = BIO_get_mem_data(out, &p);
	s = strndup(p, (size_t)len);
	if (keep != NULL)
		*keep = cms;
	else
		CMS_ContentInfo_free(cms);
	BIO_free(in);
	BIO_free(out);
	return s;
}

static int ri_nid(CMS_ContentInfo *cms)
{
	CMS_RecipientInfo *ri = sk_CMS_RecipientInfo_value(CMS_get0_RecipientInfos(cms), 0);
	X509_ALGOR *alg = NULL;
	ASN1_OCTET_STRING *ukm = NULL;

	if (CMS_RecipientInfo_type(ri) == CMS_RECIPINFO_TRANS)
		CMS_RecipientInfo_ktri_get0_algs(ri, NULL, NULL, &alg);
	else
		CMS_RecipientInfo_kari_get0_alg(ri, &alg, &ukm);
	return OBJ_obj2nid(alg->algorithm);
}

static void every_cipher_and_key_management(void **state)
{
	static const struct {
		p11s_cipher cipher;
		int oaep, ec;
		const char *smime_type;
		int content_nid, kek_nid;
	} cases[] = {
	    {P11S_CIPHER_AES256_GCM, 0, 0, "authEnveloped-data", NID_id_smime_ct_authEnvelopedData,
	     NID_rsaEncryption},
	    {P11S_CIPHER_AES256_GCM, 1, 0, "authEnveloped-data", NID_id_smime_ct_authEnvelopedData,
	     NID_rsaesOaep},
	    {P11S_CIPHER_AES256_GCM, 0, 1, "authEnveloped-data", NID_id_smime_ct_authEnvelopedData,
	     NID_dhSinglePass_stdDH_sha256kdf_scheme},
	    {P11S_CIPHER_AES256_CBC, 0, 0, "enveloped-data", NID_pkcs7_enveloped,
	     NID_rsaEncryption},
	    {P11S_CIPHER_AES256_CBC, 1, 0, "enveloped-data", NID_pkcs7_enveloped, NID_rsaesOaep},
	    {P11S_CIPHER_AES256_CBC, 0, 1, "enveloped-data", NID_pkcs7_enveloped,
	     NID_dhSinglePass_stdDH_sha256kdf_scheme},
	    {P11S_CIPHER_AES128_CBC, 0, 0, "enveloped-data", NID_pkcs7_enveloped,
	     NID_rsaEncryption},
	    {P11S_CIPHER_AES128_CBC, 1, 0, "enveloped-data", NID_pkcs7_enveloped, NID_rsaesOaep},
	    {P11S_CIPHER_AES128_CBC, 0, 1, "enveloped-data", NID_pkcs7_enveloped,
	     NID_dhSinglePass_stdDH_sha256kdf_scheme},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		p11s_encrypt_opts o = {.cipher = cases[i].cipher, .oaep = cases[i].oaep};
		X509 *certs[] = {cases[i].ec ? ec_cert : rsa_cert, NULL};
		p11s_error *err = p11s_error_new();
		CMS_ContentInfo *cms = NULL;
		char *out = NULL, *plain, want[128];

		if (run_encrypt(HEADERS CONTENT_HDR "\r\n" BODY, certs, &o, &out, err) != P11S_OK)
			fail_msg("case %zu: %s", i, p11s_error_message(err));
		/* Outer headers kept, in order; the entity's moved inside. */
		assert_memory_equal(out, "From: Alice <alice@example.org>\r\nTo: Bob", 40);
		assert_non_null(
		    strstr(out, "Subject: the plan\r\nMessage-ID: <1@example.org>\r\n"));
		assert_null(strstr(out, "charset=utf-8"));
		snprintf(want, sizeof(want),
		         "Content-Type: application/pkcs7-mime; smime-type=%s; name=\"smime.p7m\"",
		         cases[i].smime_type);
		assert_non_null(strstr(out, want));
		assert_non_null(strstr(out, "Content-Transfer-Encoding: base64\r\n"));
		plain = openssl_decrypt(out, cases[i].ec ? ec_key : rsa_key,
		                        cases[i].ec ? ec_cert : rsa_cert, &cms);
		assert_string_equal(plain, CONTENT_HDR "\r\n" BODY);
		assert_int_equal(OBJ_obj2nid(CMS_get0_type(cms)), cases[i].content_nid);
		assert_int_equal(ri_nid(cms), cases[i].kek_nid);
		CMS_ContentInfo_free(cms);
		free(plain);
		free(out);
		p11s_error_free(err);
	}
}

static void lf_input_and_two_recipients(void **state)
{
	const char *msg = "From: alice@example.org\nTo: bob@example.org, carol@example.org\n"
	                  "Subject: hi\n\nline one\nline two\n";
	EVP_PKEY *key2 = tu_key("rsa:2048#2");
	X509 *carol = person(key2, "carol@example.org", "critical,keyEncipherment", now - DAY,
	                     now + 30 * DAY);
	X509 *certs[] = {ec_cert, carol, NULL};
	p11s_encrypt_opts o = {.cipher = P11S_CIPHER_AES256_GCM};
	char *out = NULL, *plain;

	(void)state;
	assert_int_equal(run_encrypt(msg, certs, &o, &out, NULL), P11S_OK);
	/* Output line ends follow the input's; the plaintext is canonical CRLF. */
	assert_null(strchr(out, '\r'));
	assert_non_null(strstr(out, "Subject: hi\nMIME-Version: 1.0\n"));
	plain = openssl_decrypt(out, key2, carol, NULL);
	assert_string_equal(plain, "\r\nline one\r\nline two\r\n");
	free(plain);
	plain = openssl_decrypt(out, ec_key, ec_cert, NULL);
	assert_string_equal(plain, "\r\nline one\r\nline two\r\n");
	free(plain);
	free(out);
	X509_free(carol);
	EVP_PKEY_free(key2);
}

static void refusals(void **state)
{
	EVP_PKEY *k = tu_key("ec:P-256#r");
	EVP_PKEY *rk = tu_key("rsa:2048#r");
	X509 *expired = person(k, "bob@example.org", "critical,digitalSignature,keyAgreement",
	                       now - 400 * DAY, now - DAY);
	X509 *sign_only_ec =
	    person(k, "bob@example.org", "critical,digitalSignature", now - DAY, now + DAY);
	X509 *sign_only_rsa =
	    person(rk, "bob@example.org", "critical,digitalSignature", now - DAY, now + DAY);
	X509 *no_san = tu_cert(&(tu_cert_spec){.key = rk,
	                                       .cn = "bob",
	                                       .subject_email = "bob@example.org",
	                                       .ku = "critical,keyEncipherment",
	                                       .issuer = ca,
	                                       .issuer_key = ca_key});
	static const struct {
		int which;
		p11s_rc rc;
		const char *text;
	} cases[] = {
	    {0, P11S_E_NOT_VALID_NOW, "not valid at"},
	    {1, P11S_E_REJECTED, "keyAgreement"},
	    {2, P11S_E_REJECTED, "keyEncipherment"},
	    {3, P11S_E_REJECTED, "san-email"},
	};
	X509 *bad[] = {expired, sign_only_ec, sign_only_rsa, no_san};
	p11s_encrypt_opts o = {0};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		X509 *certs[] = {rsa_cert, bad[cases[i].which], NULL};
		p11s_error *err = p11s_error_new();
		char *out = NULL;

		assert_int_equal(run_encrypt(HEADERS "\r\nhi\r\n", certs, &o, &out, err),
		                 cases[i].rc);
		assert_int_equal(p11s_rc_exit_code(cases[i].rc), 1);
		/* The refused one is listed with its reason; nothing is written. */
		assert_int_equal(p11s_error_candidate_count(err), 1);
		if (strstr(p11s_error_candidate(err, 0), cases[i].text) == NULL)
			fail_msg("case %zu: '%s' lacks '%s'", i, p11s_error_candidate(err, 0),
			         cases[i].text);
		assert_string_equal(out, "");
		free(out);
		p11s_error_free(err);
	}
	/* A time when the expired one was valid: accepted. */
	{
		X509 *certs[] = {expired, NULL};
		p11s_encrypt_opts at = {.at = now - 10 * DAY};
		char *out = NULL;

		assert_int_equal(run_encrypt(HEADERS "\r\nhi\r\n", certs, &at, &out, NULL),
		                 P11S_OK);
		free(out);
	}
	X509_free(expired);
	X509_free(sign_only_ec);
	X509_free(sign_only_rsa);
	X509_free(no_san);
	EVP_PKEY_free(k);
	EVP_PKEY_free(rk);
}

static void every_to_and_cc_needs_a_certificate(void **state)
{
	const char *msg = "From: alice@example.org\r\nTo: Bob <bob@example.org>\r\n"
	                  "Cc: dave@example.org, team: erin@example.org;\r\n\r\nhi\r\n";
	X509 *certs[] = {rsa_cert, NULL};
	p11s_encrypt_opts o = {0};
	p11s_error *err = p11s_error_new();
	char *out = NULL;

	(void)state;
	assert_int_equal(run_encrypt(msg, certs, &o, &out, err), P11S_E_MISSING_RECIPIENT_CERT);
	assert_int_equal(p11s_error_candidate_count(err), 2);
	assert_string_equal(p11s_error_candidate(err, 0), "dave@example.org");
	assert_string_equal(p11s_error_candidate(err, 1), "erin@example.org");
	assert_string_equal(out, "");
	free(out);
	o.no_check_to = 1;
	assert_int_equal(run_encrypt(msg, certs, &o, &out, err), P11S_OK);
	assert_non_null(strstr(out, "Cc: dave@example.org"));
	free(out);
	p11s_error_free(err);
}

static void recipient_dir_lookup(void **state)
{
	EVP_PKEY *k = tu_key("rsa:2048#dir");
	X509 *old =
	    person(k, "frank@example.org", "critical,keyEncipherment", now - 400 * DAY, now - DAY);
	X509 *cur =
	    person(k, "frank@example.org", "critical,keyEncipherment", now - DAY, now + DAY);
	char *pem_old = tu_pem(old), *pem_cur = tu_pem(cur);
	char *dir = tu_cat(tu_tmpdir(), "/contacts", NULL);
	char *p1, *p2, *p3;
	p11s_recipients *r = p11s_recipients_new();
	p11s_error *err = p11s_error_new();

	(void)state;
	assert_int_equal(mkdir(dir, 0700), 0);
	p1 = tu_write("contacts/frank-old.pem", pem_old, 0);
	p2 = tu_write("contacts/frank.pem", pem_cur, 0);
	p3 = tu_write("contacts/notes.txt", "not a certificate\n", 0);
	assert_int_equal(p11s_recipients_set_dir(r, dir, err), P11S_OK);
	/* Both match the address; only the valid one is taken. */
	assert_int_equal(p11s_recipients_add_email(r, NULL, "Frank@example.org", now, err),
	                 P11S_OK);
	assert_int_equal(p11s_recipients_count(r), 1);
	assert_int_equal(X509_cmp(p11s_recipients_cert(r, 0), cur), 0);
	assert_non_null(strstr(p11s_recipients_source(r, 0), "frank.pem"));
	assert_int_equal(p11s_recipients_add_email(r, NULL, "nobody@example.org", now, err),
	                 P11S_E_NOT_FOUND);
	assert_non_null(strstr(p11s_error_message(err), "nobody@example.org"));
	/* When none is fit, all are taken so that encrypt says why. */
	p11s_recipients_free(r);
	r = p11s_recipients_new();
	assert_int_equal(p11s_recipients_set_dir(r, dir, err), P11S_OK);
	assert_int_equal(
	    p11s_recipients_add_email(r, NULL, "frank@example.org", now + 10 * DAY, err), P11S_OK);
	assert_int_equal(p11s_recipients_count(r), 2);
	p11s_recipients_free(r);
	p11s_error_free(err);
	free(p1);
	free(p2);
	free(p3);
	free(dir);
	free(pem_old);
	free(pem_cur);
	X509_free(old);
	X509_free(cur);
	EVP_PKEY_free(k);
}

/* The encrypted entity of a signed message still verifies after decryption. */
static void signed_then_encrypted_round_trip(void **state)
{
	const char *entity = "Content-Type: text/plain\r\n\r\nsigned and sealed\r\n";
	BIO *data = BIO_new_mem_buf(entity, -1), *mem = BIO_new(BIO_s_mem());
	CMS_ContentInfo *cms;
	X509 *certs[] = {rsa_cert, NULL};
	p11s_encrypt_opts o = {0};
	STACK_OF(X509) *trust = sk_X509_new_null();
	p11s_verify_opts vo = {.trust = trust};
	p11s_verify_report *rep = NULL;
	char *signed_msg, *out = NULL, *plain, *whole, *p;
	long len;

	(void)state;
	cms = CMS_sign(ec_cert, ec_key, NULL, data, CMS_DETACHED | CMS_STREAM);
	assert_non_null(cms);
	BIO_puts(mem, "From: bob@example.org\r\nTo: bob@example.org\r\n");
	assert_true(SMIME_write_CMS(mem, cms, data, CMS_DETACHED | CMS_STREAM));
	len = BIO_get_mem_data(mem, &p);
	signed_msg = strndup(p, (size_t)len);
	assert_int_equal(run_encrypt(signed_msg, certs, &o, &out, NULL), P11S_OK);
	plain = openssl_decrypt(out, rsa_key, rsa_cert, NULL);
	/* What a decrypt step leaves: the outer headers, then the entity. */
	whole = tu_cat("From: bob@example.org\r\n", plain, NULL);
	sk_X509_push(trust, ca);
	BIO *in = BIO_new_mem_buf(whole, -1);
	assert_int_equal(p11s_verify(in, NULL, &vo, &rep, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(rep), P11S_OK);
	p11s_verify_report_free(rep);
	BIO_free(in);
	free(whole);
	free(plain);
	free(out);
	free(signed_msg);
	sk_X509_free(trust);
	CMS_ContentInfo_free(cms);
	BIO_free(data);
	BIO_free(mem);
}

static void cipher_names(void **state)
{
	p11s_cipher c;

	(void)state;
	assert_int_equal(p11s_cipher_from_name("aes-128-cbc", &c, NULL), P11S_OK);
	assert_int_equal(c, P11S_CIPHER_AES128_CBC);
	assert_string_equal(p11s_cipher_name(P11S_CIPHER_AES256_GCM), "aes-256-gcm");
	assert_int_equal(p11s_cipher_from_name("des-ede3-cbc", &c, NULL), P11S_E_USAGE);
}

/* A binary body is bytes: its LF bytes must not become CRLF (text headers still do). */
static void binary_body_is_not_converted(void **state)
{
	const char *msg = "From: alice@example.org\nTo: bob@example.org\nSubject: blob\n"
	                  "Content-Type: application/octet-stream\n"
	                  "Content-Transfer-Encoding: binary\n\nab\ncd\n\nef\r\ngh";
	X509 *certs[] = {rsa_cert, NULL};
	p11s_encrypt_opts o = {.cipher = P11S_CIPHER_AES256_GCM, .no_check_to = 1};
	char *out = NULL, *plain;

	(void)state;
	assert_int_equal(run_encrypt(msg, certs, &o, &out, NULL), P11S_OK);
	plain = openssl_decrypt(out, rsa_key, rsa_cert, NULL);
	assert_string_equal(plain, "Content-Type: application/octet-stream\r\n"
	                           "Content-Transfer-Encoding: binary\r\n\r\n"
	                           "ab\ncd\n\nef\r\ngh");
	free(plain);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(every_cipher_and_key_management),
	    cmocka_unit_test(lf_input_and_two_recipients),
	    cmocka_unit_test(refusals),
	    cmocka_unit_test(every_to_and_cc_needs_a_certificate),
	    cmocka_unit_test(recipient_dir_lookup),
	    cmocka_unit_test(signed_then_encrypted_round_trip),
	    cmocka_unit_test(cipher_names),
	    cmocka_unit_test(binary_body_is_not_converted),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
