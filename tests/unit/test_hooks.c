/*
 * The hook shapes (src/detached.c) with a software key, and the config
 * file (src/config.c): no token.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/cms.h>
#include <openssl/err.h>

#include "p11smime/config.h"
#include "p11smime/hooks.h"
#include "testutil.h"

/* 8-bit, LF ends, trailing blanks: what a whole-message sign would re-encode. */
static const char entity[] = "Content-Type: text/plain; charset=utf-8\n"
                             "Content-Transfer-Encoding: 8bit\n"
                             "\n"
                             "H\xc3\xa4llo  \n"
                             "From the start.\n";
static const char entity_crlf[] = "Content-Type: text/plain; charset=utf-8\r\n"
                                  "Content-Transfer-Encoding: 8bit\r\n"
                                  "\r\n"
                                  "H\xc3\xa4llo  \r\n"
                                  "From the start.\r\n";

static EVP_PKEY *ca_key, *key;
static X509 *ca, *cert;

static int setup(void **state)
{
	(void)state;
	ca_key = tu_key("ec:P-256");
	ca = tu_cert(&(tu_cert_spec){
	    .key = ca_key, .cn = "Test CA", .ca = 1, .ku = "critical,keyCertSign,cRLSign"});
	key = tu_key("rsa:2048");
	cert = tu_cert(&(tu_cert_spec){.key = key,
	                               .cn = "Alice",
	                               .san = "email:alice@example.org",
	                               .ku = "critical,digitalSignature,keyEncipherment",
	                               .eku = "emailProtection",
	                               .issuer = ca,
	                               .issuer_key = ca_key});
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	return 0;
}

static p11s_signer *signer(void)
{
	p11s_sign_opts o;
	p11s_signer *s = NULL;

	p11s_sign_opts_init(&o);
	assert_int_equal(p11s_signer_new(cert, key, NULL, &o, &s, NULL), P11S_OK);
	return s;
}

/* Sign the entity in @p form; the result in a memory BIO. */
static BIO *sign(int detached, p11s_outform form)
{
	p11s_signer *s = signer();
	BIO *in = BIO_new_mem_buf(entity, (int)strlen(entity));
	BIO *out = BIO_new(BIO_s_mem());
	p11s_error *err = p11s_error_new();

	if (p11s_signer_sign_entity(s, in, out, detached, form, err) != P11S_OK)
		fail_msg("sign_entity: %s", p11s_error_message(err));
	p11s_error_free(err);
	BIO_free(in);
	p11s_signer_free(s);
	return out;
}

/* Each call reads @p signed_bio's bytes through a fresh read-only BIO (BIO_reset empties a writable
 * one). */
static p11s_rc verify(BIO *signed_bio, const char *content, p11s_outform inform, p11s_rc *verdict,
                      p11s_error *err)
{
	char *bytes;
	long len = BIO_get_mem_data(signed_bio, &bytes);
	BIO *sig = BIO_new_mem_buf(bytes, (int)len);
	STACK_OF(X509) *trust = sk_X509_new_null();
	p11s_verify_opts vo = {0};
	p11s_verify_report *r = NULL;
	BIO *c = BIO_new_mem_buf(content, (int)strlen(content));
	p11s_rc rc;

	sk_X509_push(trust, ca);
	vo.trust = trust;
	rc = p11s_verify_detached(c, sig, inform, &vo, &r, err);
	if (rc == P11S_OK)
		*verdict = p11s_verify_report_rc(r);
	p11s_verify_report_free(r);
	BIO_free(c);
	BIO_free(sig);
	sk_X509_free(trust);
	return rc;
}

/* The signature covers the entity as given, with CRLF: checked by OpenSSL itself. */
static void detached_der_exact(void **state)
{
	BIO *sig = sign(1, P11S_FORM_DER);
	BIO *content = BIO_new_mem_buf(entity_crlf, (int)strlen(entity_crlf));
	BIO *altered = BIO_new_mem_buf(entity, (int)strlen(entity));
	X509_STORE *store = X509_STORE_new();
	CMS_ContentInfo *cms;
	p11s_rc verdict = P11S_E_INTERNAL;

	(void)state;
	X509_STORE_add_cert(store, ca);
	{
		char *bytes;
		long len = BIO_get_mem_data(sig, &bytes);
		BIO *ro = BIO_new_mem_buf(bytes, (int)len);

		cms = d2i_CMS_bio(ro, NULL);
		BIO_free(ro);
	}
	assert_non_null(cms);
	assert_int_equal(CMS_is_detached(cms), 1);
	assert_int_equal(CMS_verify(cms, NULL, store, content, NULL, CMS_BINARY), 1);
	/* The LF form is not what was signed: the CRLF conversion happened. */
	assert_int_equal(CMS_verify(cms, NULL, store, altered, NULL, CMS_BINARY), 0);
	CMS_ContentInfo_free(cms);
	ERR_clear_error();

	assert_int_equal(verify(sig, entity, P11S_FORM_SMIME, &verdict, NULL), P11S_OK);
	assert_int_equal(verdict, P11S_OK);
	assert_int_equal(verify(sig, entity_crlf, P11S_FORM_DER, &verdict, NULL), P11S_OK);
	assert_int_equal(verdict, P11S_OK);
	assert_int_equal(
	    verify(sig, "Content-Type: text/plain\n\nother\n", P11S_FORM_SMIME, &verdict, NULL),
	    P11S_OK);
	assert_int_equal(verdict, P11S_E_BAD_SIGNATURE);
	X509_STORE_free(store);
	BIO_free(altered);
	BIO_free(content);
	BIO_free(sig);
}

static void pem_forms(void **state)
{
	BIO *sig = sign(1, P11S_FORM_PEM);
	p11s_error *err = p11s_error_new();
	p11s_rc verdict = P11S_E_INTERNAL;
	char *data;
	long n = BIO_get_mem_data(sig, &data);

	(void)state;
	assert_true(n > 21 && memcmp(data, "-----BEGIN PKCS7-----\n", 22) == 0);
	assert_int_equal(verify(sig, entity, P11S_FORM_SMIME, &verdict, err), P11S_OK);
	assert_int_equal(verdict, P11S_OK);
	assert_int_equal(verify(sig, entity, P11S_FORM_PEM, &verdict, err), P11S_OK);
	assert_int_equal(verify(sig, entity, P11S_FORM_DER, &verdict, err), P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "DER"));
	BIO_free(sig);
	/* Junk, empty, a PEM certificate: bad input, said in words. */
	sig = BIO_new_mem_buf("garbage", 7);
	assert_int_equal(verify(sig, entity, P11S_FORM_SMIME, &verdict, err), P11S_E_INPUT);
	BIO_free(sig);
	sig = BIO_new_mem_buf("", 0);
	assert_int_equal(verify(sig, entity, P11S_FORM_SMIME, &verdict, err), P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "empty"));
	BIO_free(sig);
	{
		char *pem = tu_pem(cert);

		sig = BIO_new_mem_buf(pem, (int)strlen(pem));
		assert_int_equal(verify(sig, entity, P11S_FORM_SMIME, &verdict, err), P11S_E_INPUT);
		assert_non_null(strstr(p11s_error_message(err), "CERTIFICATE"));
		BIO_free(sig);
		free(pem);
	}
	p11s_error_free(err);
}

static void opaque_der(void **state)
{
	BIO *sig = sign(0, P11S_FORM_DER);
	BIO *content = BIO_new(BIO_s_mem());
	STACK_OF(X509) *trust = sk_X509_new_null();
	p11s_verify_opts vo = {0};
	p11s_verify_report *r = NULL;
	char *data;
	long n;

	(void)state;
	sk_X509_push(trust, ca);
	vo.trust = trust;
	assert_int_equal(p11s_verify_opaque(sig, P11S_FORM_SMIME, content, &vo, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	assert_string_equal(p11s_verify_report_format(r), "opaque");
	n = BIO_get_mem_data(content, &data);
	assert_int_equal(n, (long)strlen(entity_crlf));
	assert_memory_equal(data, entity_crlf, (size_t)n);
	p11s_verify_report_free(r);
	sk_X509_free(trust);
	BIO_free(content);
	BIO_free(sig);
}

static void forms_and_usage(void **state)
{
	p11s_signer *s = signer();
	BIO *in = BIO_new_mem_buf(entity, (int)strlen(entity));
	BIO *out = BIO_new(BIO_s_mem());
	p11s_outform f;

	(void)state;
	assert_int_equal(p11s_signer_sign_entity(s, in, out, 1, P11S_FORM_SMIME, NULL),
	                 P11S_E_USAGE);
	assert_int_equal(BIO_ctrl_pending(out), 0);
	assert_int_equal(p11s_outform_from_name("DER", 0, &f, NULL), P11S_OK);
	assert_int_equal(f, P11S_FORM_DER);
	assert_int_equal(p11s_outform_from_name("pem", 0, &f, NULL), P11S_OK);
	assert_int_equal(f, P11S_FORM_PEM);
	assert_int_equal(p11s_outform_from_name("smime", 0, &f, NULL), P11S_E_USAGE);
	assert_int_equal(p11s_outform_from_name("smime", 1, &f, NULL), P11S_OK);
	assert_int_equal(f, P11S_FORM_SMIME);
	assert_int_equal(p11s_outform_from_name("xml", 1, &f, NULL), P11S_E_USAGE);
	BIO_free(in);
	BIO_free(out);
	p11s_signer_free(s);
}

/* ------------------------------------------------------------------ config */

static p11s_rc load(const char *text, p11s_config **c, p11s_error *err)
{
	char *path = tu_write("config", text, strlen(text));
	p11s_rc rc = p11s_config_load(path, 0, c, err);

	free(path);
	return rc;
}

static void config_good(void **state)
{
	p11s_config *c = NULL;

	(void)state;
	assert_int_equal(load("# comment\n"
	                      "\n"
	                      "  module =  /lib/x.so  \n"
	                      "signer=alice@example.org\n"
	                      "\t# indented comment\n"
	                      "cipher = aes-256-cbc\r\n"
	                      "digest = sha384\n"
	                      "pin-source = env:PIN",
	                      &c, NULL),
	                 P11S_OK);
	assert_string_equal(p11s_config_get(c, "module"), "/lib/x.so");
	assert_string_equal(p11s_config_get(c, "signer"), "alice@example.org");
	assert_string_equal(p11s_config_get(c, "cipher"), "aes-256-cbc");
	assert_string_equal(p11s_config_get(c, "digest"), "sha384");
	assert_string_equal(p11s_config_get(c, "pin-source"), "env:PIN");
	assert_null(p11s_config_get(c, "colour"));
	p11s_config_free(c);
	p11s_config_free(NULL);
}

static void config_errors(void **state)
{
	static const struct {
		const char *text, *msg;
	} bad[] = {
	    {"cipher = aes-256-cbc\nnonsense\n", ":2: expected 'option = value'"},
	    {"colour = blue\n", ":1: unknown option 'colour'"},
	    {"cipher = rc2\n", ":1: unknown cipher 'rc2'"},
	    {"\ndigest = md5\n", ":2: unknown digest 'md5'"},
	    {"signer = \n", ":1: 'signer' has no value"},
	    {"signer = a@b\nsigner = c@d\n", ":2: 'signer' is set a second time"},
	    {"pin-source = 123456\n", ":1: the PIN source"},
	};
	p11s_error *err = p11s_error_new();

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p11s_config *c = (p11s_config *)1;

		assert_int_equal(load(bad[i].text, &c, err), P11S_E_USAGE);
		assert_null(c);
		if (strstr(p11s_error_message(err), bad[i].msg) == NULL)
			fail_msg("'%s': got '%s'", bad[i].msg, p11s_error_message(err));
		/* A PIN written where the source goes is never repeated. */
		assert_null(strstr(p11s_error_message(err), "123456"));
	}
	p11s_error_free(err);
}

static void config_files(void **state)
{
	p11s_config *c = NULL;
	char *missing = tu_cat(tu_tmpdir(), "/no-such-config", NULL);
	char *path;

	(void)state;
	assert_int_equal(p11s_config_load(missing, 1, &c, NULL), P11S_OK);
	assert_null(p11s_config_get(c, "module"));
	p11s_config_free(c);
	assert_int_equal(p11s_config_load(missing, 0, &c, NULL), P11S_E_IO);
	free(missing);

	setenv("XDG_CONFIG_HOME", "/x/cfg", 1);
	setenv("HOME", "/home/u", 1);
	path = p11s_config_default_path();
	assert_string_equal(path, "/x/cfg/p11smime/config");
	free(path);
	/* A relative XDG_CONFIG_HOME is ignored, as the XDG spec says. */
	setenv("XDG_CONFIG_HOME", "rel", 1);
	path = p11s_config_default_path();
	assert_string_equal(path, "/home/u/.config/p11smime/config");
	free(path);
	unsetenv("XDG_CONFIG_HOME");
	path = p11s_config_default_path();
	assert_string_equal(path, "/home/u/.config/p11smime/config");
	free(path);
	unsetenv("HOME");
	assert_null(p11s_config_default_path());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(detached_der_exact), cmocka_unit_test(pem_forms),
	    cmocka_unit_test(opaque_der),         cmocka_unit_test(forms_and_usage),
	    cmocka_unit_test(config_good),        cmocka_unit_test(config_errors),
	    cmocka_unit_test(config_files),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
