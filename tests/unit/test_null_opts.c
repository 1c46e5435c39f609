/*
 * A NULL options pointer means the defaults, at every entry point that
 * takes one: before, p11s_verify() answered P11S_E_INTERNAL, the verify
 * hooks and p11s_signer_new() P11S_E_USAGE, and p11s_encrypt(),
 * p11s_encrypt_key_management(), p11s_keygen(), p11s_csr() and
 * p11s_import() read through the NULL pointer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bio.h>

#include "p11smime/decrypt.h"
#include "p11smime/encrypt.h"
#include "p11smime/hooks.h"
#include "p11smime/lifecycle.h"
#include "p11smime/sign.h"
#include "p11smime/verify.h"
#include "testutil.h"

#define DAY 86400
#define MESSAGE                           \
	"From: Bob <bob@example.org>\r\n" \
	"To: Bob <bob@example.org>\r\n"   \
	"Subject: defaults\r\n"           \
	"Content-Type: text/plain\r\n"    \
	"\r\n"                            \
	"Signed and sealed with the defaults.\r\n"

static EVP_PKEY *ca_key, *key;
static X509 *ca, *cert;

static int setup(void **state)
{
	time_t now = time(NULL);

	(void)state;
	ca_key = tu_key("ec:P-256#ca");
	ca = tu_cert(&(tu_cert_spec){
	    .key = ca_key, .cn = "Defaults Root", .ca = 1, .ku = "critical,keyCertSign,cRLSign"});
	key = tu_key("rsa:2048");
	cert = tu_cert(&(tu_cert_spec){.key = key,
	                               .cn = "bob@example.org",
	                               .san = "email:bob@example.org",
	                               .ku = "critical,digitalSignature,keyEncipherment",
	                               .eku = "emailProtection",
	                               .ca = -1,
	                               .not_before = now - DAY,
	                               .not_after = now + 365 * DAY,
	                               .issuer = ca,
	                               .issuer_key = ca_key});
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(ca);
	X509_free(cert);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(key);
	return 0;
}

/* Sign with default options, then verify with none: the signature is good. */
static void sign_and_verify(void **state)
{
	p11s_error *err = p11s_error_new();
	p11s_signer *s = NULL;
	p11s_verify_report *r = NULL;
	BIO *in = BIO_new_mem_buf(MESSAGE, -1), *signed_msg = BIO_new(BIO_s_mem());
	p11s_rc rc;

	(void)state;
	assert_int_equal(p11s_signer_new(cert, key, NULL, NULL, &s, err), P11S_OK);
	assert_string_equal(p11s_signer_digest(s), "sha256");
	assert_int_equal(p11s_signer_sign(s, in, signed_msg, err), P11S_OK);
	rc = p11s_verify(signed_msg, NULL, NULL, &r, err);
	/* No trust anchors by default: the signature checks, the chain cannot. */
	assert_int_not_equal(rc, P11S_E_INTERNAL);
	assert_int_not_equal(rc, P11S_E_USAGE);
	assert_non_null(r);
	p11s_verify_report_free(r);
	p11s_signer_free(s);
	BIO_free(in);
	BIO_free(signed_msg);
	p11s_error_free(err);
}

/* The hooks' verifiers take NULL too: garbage is then an input error, not a usage one. */
static void hooks_verify(void **state)
{
	p11s_error *err = p11s_error_new();
	p11s_verify_report *r = NULL;
	BIO *content = BIO_new_mem_buf("text\r\n", -1), *sig = BIO_new_mem_buf("not a CMS", -1),
	    *sig2 = BIO_new_mem_buf("not a CMS", -1);

	(void)state;
	assert_int_equal(p11s_verify_detached(content, sig, P11S_FORM_DER, NULL, &r, err),
	                 P11S_E_INPUT);
	assert_null(r);
	assert_int_equal(p11s_verify_opaque(sig2, P11S_FORM_DER, NULL, NULL, &r, err),
	                 P11S_E_INPUT);
	assert_null(r);
	BIO_free(content);
	BIO_free(sig);
	BIO_free(sig2);
	p11s_error_free(err);
}

/* Encrypt with default options (AES, PKCS#1 v1.5 for RSA, To checked) and decrypt it back. */
static void encrypt_and_decrypt(void **state)
{
	p11s_error *err = p11s_error_new();
	p11s_recipients *rs = p11s_recipients_new();
	BIO *in = BIO_new_mem_buf(MESSAGE, -1), *sealed = BIO_new(BIO_s_mem()),
	    *opened = BIO_new(BIO_s_mem());
	char *data;
	long len;

	(void)state;
	assert_string_equal(p11s_encrypt_key_management(cert, NULL), "RSA PKCS#1 v1.5");
	assert_int_equal(p11s_recipients_add_cert(rs, cert, "test", err), P11S_OK);
	assert_int_equal(p11s_encrypt(in, sealed, rs, NULL, err), P11S_OK);
	assert_int_equal(p11s_decrypt_with_pkey(key, cert, NULL, sealed, opened, NULL, err),
	                 P11S_OK);
	len = BIO_get_mem_data(opened, &data);
	assert_true(len > 0);
	assert_non_null(memmem(data, (size_t)len, "Signed and sealed", 17));
	p11s_recipients_free(rs);
	BIO_free(in);
	BIO_free(sealed);
	BIO_free(opened);
	p11s_error_free(err);
}

/* The token entry points refuse the defaults in words, before they need a token. */
static void lifecycle(void **state)
{
	p11s_error *err = p11s_error_new();
	p11s_keygen_result *kr = NULL;
	p11s_import_result *ir = NULL;
	p11s_signer *s = NULL;
	char *pem = NULL;

	(void)state;
	assert_int_equal(p11s_keygen(NULL, NULL, &kr, err), P11S_E_USAGE);
	assert_non_null(strstr(p11s_error_message(err), "key type"));
	assert_int_equal(p11s_csr(NULL, NULL, &pem, NULL, err), P11S_E_USAGE);
	assert_non_null(strstr(p11s_error_message(err), "--email"));
	assert_int_equal(p11s_import(NULL, "/nonexistent/p11s-null-opts.pem", NULL, &ir, err),
	                 P11S_E_IO);
	assert_int_equal(p11s_signer_open(NULL, NULL, &s, err), P11S_E_USAGE);
	assert_null(kr);
	assert_null(pem);
	assert_null(ir);
	assert_null(s);
	p11s_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(sign_and_verify),
	    cmocka_unit_test(hooks_verify),
	    cmocka_unit_test(encrypt_and_decrypt),
	    cmocka_unit_test(lifecycle),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
