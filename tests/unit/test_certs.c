/* Certificates from files: every format, bundles, and input that is not a certificate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>

#include "p11smime/certs.h"
#include "mime.h"
#include "p11smime/io.h"
#include "testutil.h"

static X509 *alice, *bob, *ca;
static EVP_PKEY *alice_key, *ca_key;

static int setup(void **state)
{
	EVP_PKEY *bob_key = tu_key("ec:P-256");

	(void)state;
	ca_key = tu_key("ec:P-256#ca");
	ca = tu_cert(&(tu_cert_spec){.key = ca_key, .cn = "Test CA", .ca = 1});
	alice_key = tu_key("rsa:2048");
	alice = tu_cert(&(tu_cert_spec){.key = alice_key,
	                                .cn = "Alice",
	                                .san = "email:alice@example.org",
	                                .ku = "digitalSignature,keyEncipherment",
	                                .issuer = ca,
	                                .issuer_key = ca_key});
	bob = tu_cert(&(tu_cert_spec){.key = bob_key,
	                              .cn = "Bob",
	                              .san = "email:bob@example.org",
	                              .ku = "digitalSignature,keyAgreement"});
	EVP_PKEY_free(bob_key);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(alice);
	X509_free(bob);
	X509_free(ca);
	EVP_PKEY_free(alice_key);
	EVP_PKEY_free(ca_key);
	return 0;
}

/* Read @p path and check the certificates are @p want, in order. */
static p11s_cert_list *expect_certs(const char *path, const char *pass, const char *format,
                                    X509 **want, size_t n)
{
	p11s_cert_list *l = NULL;
	p11s_error *err = p11s_error_new();
	p11s_rc rc = p11s_certs_read_file(path, pass, &l, err);

	if (rc != P11S_OK)
		print_error("%s: %s\n", path, p11s_error_message(err));
	assert_int_equal(rc, P11S_OK);
	assert_string_equal(p11s_cert_list_format(l), format);
	assert_int_equal(p11s_cert_list_count(l), n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(X509_cmp(p11s_cert_list_get(l, i), want[i]), 0);
	assert_null(p11s_cert_list_get(l, n));
	assert_int_equal(sk_X509_num(p11s_cert_list_stack(l)), n);
	p11s_error_free(err);
	return l;
}

/* Reading @p path fails with @p rc and a message naming the file and saying @p phrase. */
static void expect_error(const char *path, const char *pass, p11s_rc want, const char *phrase)
{
	p11s_cert_list *l = (p11s_cert_list *)1;
	p11s_error *err = p11s_error_new();
	p11s_rc rc = p11s_certs_read_file(path, pass, &l, err);

	if (rc != want || strstr(p11s_error_message(err), path) == NULL ||
	    strstr(p11s_error_message(err), phrase) == NULL)
		print_error("%s: rc %s, message '%s' (want %s, '%s')\n", path, p11s_rc_name(rc),
		            p11s_error_message(err), p11s_rc_name(want), phrase);
	assert_int_equal(rc, want);
	assert_non_null(strstr(p11s_error_message(err), path));
	assert_non_null(strstr(p11s_error_message(err), phrase));
	assert_null(l);
	p11s_error_free(err);
}

static void pem_single_and_bundle(void **state)
{
	char *a = tu_pem(alice), *b = tu_pem(bob), *c = tu_pem(ca);
	/* Text around the blocks, as in mail and in openssl's -text output. */
	char *bundle = tu_cat("Certificate chain\n", a, "some text\n", b, c, "trailer\n", NULL);
	char *p1 = tu_write("one.pem", a, 0), *p3 = tu_write("bundle.pem", bundle, 0);
	X509 *one[] = {alice}, *three[] = {alice, bob, ca};

	(void)state;
	p11s_cert_list_free(expect_certs(p1, NULL, "PEM", one, 1));
	p11s_cert_list_free(expect_certs(p3, NULL, "PEM", three, 3));
	free(a);
	free(b);
	free(c);
	free(bundle);
	free(p1);
	free(p3);
}

static void pem_trusted_certificate(void **state)
{
	char *t = tu_pem_trusted(alice), *b = tu_pem(bob);
	char *both = tu_cat(t, b, NULL);
	char *path = tu_write("trusted.pem", both, 0);
	X509 *want[] = {alice, bob};
	p11s_cert_list *l;

	(void)state;
	assert_non_null(strstr(t, "BEGIN TRUSTED CERTIFICATE"));
	l = expect_certs(path, NULL, "PEM", want, 2);
	p11s_cert_list_free(l);
	free(t);
	free(b);
	free(both);
	free(path);
}

static void der_single_and_concatenated(void **state)
{
	size_t la, lb;
	unsigned char *da = tu_der(alice, &la), *db = tu_der(bob, &lb);
	unsigned char *cat = malloc(la + lb);
	char *p1, *p2;
	X509 *one[] = {alice}, *two[] = {alice, bob};

	(void)state;
	memcpy(cat, da, la);
	memcpy(cat + la, db, lb);
	p1 = tu_write("alice.der", da, la);
	p2 = tu_write("two.der", cat, la + lb);
	p11s_cert_list_free(expect_certs(p1, NULL, "DER", one, 1));
	p11s_cert_list_free(expect_certs(p2, NULL, "DER", two, 2));
	OPENSSL_free(da);
	OPENSSL_free(db);
	free(cat);
	free(p1);
	free(p2);
}

static void pkcs12(void **state)
{
	STACK_OF(X509) *cas = sk_X509_new_null();
	size_t len, len2;
	unsigned char *der, *der2;
	char *path, *nopass;
	p11s_cert_list *l;
	X509 *want[] = {alice, ca};

	(void)state;
	sk_X509_push(cas, ca);
	der = tu_p12(alice, alice_key, cas, "s3cret", &len);
	path = tu_write("alice.p12", der, len);
	l = expect_certs(path, "s3cret", "PKCS#12", want, 2);
	/* The key belongs to the end-entity, not to the CA. */
	assert_non_null(p11s_cert_list_key(l, 0));
	assert_int_equal(EVP_PKEY_eq(p11s_cert_list_key(l, 0), alice_key), 1);
	assert_null(p11s_cert_list_key(l, 1));
	p11s_cert_list_free(l);

	expect_error(path, NULL, P11S_E_INPUT, "needs a password (--p12-pass-source)");
	expect_error(path, "wrong", P11S_E_INPUT, "wrong PKCS#12 password");

	/* An empty password is tried when none is given. */
	der2 = tu_p12(alice, alice_key, NULL, "", &len2);
	nopass = tu_write("nopass.p12", der2, len2);
	p11s_cert_list_free(expect_certs(nopass, NULL, "PKCS#12", want, 1));

	sk_X509_free(cas);
	OPENSSL_free(der);
	OPENSSL_free(der2);
	free(path);
	free(nopass);
}

/*
 * A PKCS#12 file of the old kind (RC2-40 and 3DES, as Windows and OpenSSL
 * 1.x wrote them) opens, and opens again: the legacy provider loads once,
 * into the library's own context, and the application's default context
 * does not get it.
 */
static void pkcs12_legacy(void **state)
{
	OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();
	OSSL_PROVIDER *def, *legacy;
	PKCS12 *p12;
	unsigned char *der = NULL;
	char *path;
	int n;
	X509 *want[] = {alice};

	(void)state;
	assert_non_null(lc);
	assert_non_null(def = OSSL_PROVIDER_load(lc, "default"));
	assert_non_null(legacy = OSSL_PROVIDER_load(lc, "legacy"));
	p12 =
	    PKCS12_create_ex("old", "test", alice_key, alice, NULL, NID_pbe_WithSHA1And40BitRC2_CBC,
	                     NID_pbe_WithSHA1And3_Key_TripleDES_CBC, 0, 0, 0, lc, NULL);
	assert_non_null(p12);
	n = i2d_PKCS12(p12, &der);
	assert_true(n > 0);
	path = tu_write("legacy.p12", der, (size_t)n);
	assert_int_equal(OSSL_PROVIDER_available(NULL, "legacy"), 0);
	p11s_cert_list_free(expect_certs(path, "old", "PKCS#12", want, 1));
	p11s_cert_list_free(expect_certs(path, "old", "PKCS#12", want, 1));
	assert_int_equal(OSSL_PROVIDER_available(NULL, "legacy"), 0);
	PKCS12_free(p12);
	OPENSSL_free(der);
	free(path);
	OSSL_PROVIDER_unload(legacy);
	OSSL_PROVIDER_unload(def);
	OSSL_LIB_CTX_free(lc);
}

/* An unencrypted key in the PEM file goes with the certificate it matches. */
static void pem_with_key(void **state)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *b = tu_pem(bob), *a = tu_pem(alice), *key, *all, *path;
	long n;
	X509 *want[] = {bob, alice};
	p11s_cert_list *l;

	(void)state;
	PEM_write_bio_PrivateKey(bio, alice_key, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(bio, &key);
	all = tu_cat(b, "", NULL);
	{
		char *k = strndup(key, (size_t)n), *t = tu_cat(all, k, a, NULL);

		free(all);
		free(k);
		all = t;
	}
	path = tu_write("withkey.pem", all, 0);
	l = expect_certs(path, NULL, "PEM", want, 2);
	assert_null(p11s_cert_list_key(l, 0));
	assert_non_null(p11s_cert_list_key(l, 1));
	assert_int_equal(EVP_PKEY_eq(p11s_cert_list_key(l, 1), alice_key), 1);
	p11s_cert_list_free(l);
	BIO_free(bio);
	free(a);
	free(b);
	free(all);
	free(path);
}

static void pkcs7_certs_only(void **state)
{
	PKCS7 *p7 = PKCS7_new();
	unsigned char *der = NULL;
	int len;
	char *path, *pem_path;
	X509 *want[] = {alice, bob};
	BIO *bio = BIO_new(BIO_s_mem());
	char *pem;
	long n;

	(void)state;
	assert_int_equal(PKCS7_set_type(p7, NID_pkcs7_signed), 1);
	assert_int_equal(PKCS7_content_new(p7, NID_pkcs7_data), 1);
	PKCS7_add_certificate(p7, alice);
	PKCS7_add_certificate(p7, bob);
	len = i2d_PKCS7(p7, &der);
	assert_true(len > 0);
	path = tu_write("certs.p7c", der, (size_t)len);
	p11s_cert_list_free(expect_certs(path, NULL, "PKCS#7", want, 2));
	PEM_write_bio_PKCS7(bio, p7);
	n = BIO_get_mem_data(bio, &pem);
	pem_path = tu_write("certs.p7b", pem, (size_t)n);
	p11s_cert_list_free(expect_certs(pem_path, NULL, "PEM", want, 2));
	BIO_free(bio);
	PKCS7_free(p7);
	OPENSSL_free(der);
	free(path);
	free(pem_path);
}

static void not_certificates(void **state)
{
	static const unsigned char garbage[] = "\x13\x37 this is not a certificate\n";
	char *a = tu_pem(alice);
	size_t dlen;
	unsigned char *der = tu_der(alice, &dlen);
	char *key_pem, *p;
	BIO *bio = BIO_new(BIO_s_mem());
	long n;

	(void)state;
	p = tu_write("garbage.bin", garbage, sizeof(garbage) - 1);
	expect_error(p, NULL, P11S_E_INPUT, "not a certificate file");
	free(p);

	p = tu_write("empty.pem", "", 0);
	expect_error(p, NULL, P11S_E_INPUT, "empty");
	free(p);

	/* Truncated DER: looks like DER, decodes as nothing. */
	p = tu_write("truncated.der", der, dlen / 2);
	expect_error(p, NULL, P11S_E_INPUT, "truncated or damaged");
	free(p);

	/* Truncated PEM: no END line. */
	a[strlen(a) / 2] = '\0';
	p = tu_write("truncated.pem", a, 0);
	expect_error(p, NULL, P11S_E_INPUT, "damaged");
	free(p);

	/* A PEM file with a key and no certificate says what it does hold. */
	PEM_write_bio_PrivateKey(bio, alice_key, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(bio, &key_pem);
	p = tu_write("key.pem", key_pem, (size_t)n);
	expect_error(p, NULL, P11S_E_INPUT,
	             "no certificate in this PEM file (it holds PRIVATE KEY)");
	free(p);
	BIO_free(bio);

	/* A CERTIFICATE block whose content is not a certificate. */
	p = tu_write("notcert.pem",
	             "-----BEGIN CERTIFICATE-----\naGVsbG8K\n"
	             "-----END CERTIFICATE-----\n",
	             0);
	expect_error(p, NULL, P11S_E_INPUT, "block 1 (CERTIFICATE) does not decode");
	free(p);

	expect_error("/nonexistent/file.pem", NULL, P11S_E_IO, "cannot open");
	expect_error(tu_tmpdir(), NULL, P11S_E_IO, "cannot read");
	free(a);
	OPENSSL_free(der);
}

/* One bad block in a bundle: the good ones are read, the bad one is a problem. */
static void bundle_with_a_bad_block(void **state)
{
	char *a = tu_pem(alice), *b = tu_pem(bob);
	char *mixed =
	    tu_cat(a, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b, NULL);
	char *path = tu_write("mixed.pem", mixed, 0);
	X509 *want[] = {alice, bob};
	p11s_cert_list *l = expect_certs(path, NULL, "PEM", want, 2);

	(void)state;
	assert_int_equal(p11s_cert_list_problem_count(l), 1);
	assert_non_null(strstr(p11s_cert_list_problem(l, 0), "PEM block 2"));
	assert_non_null(strstr(p11s_cert_list_problem(l, 0), path));
	p11s_cert_list_free(l);
	free(a);
	free(b);
	free(mixed);
	free(path);
}

/* Every truncation of a PEM bundle and of a PKCS#12 is either read or refused; never a crash. */
static void truncations(void **state)
{
	char *a = tu_pem(alice), *b = tu_pem(bob);
	char *bundle = tu_cat(a, b, NULL);
	size_t blen = strlen(bundle), plen;
	unsigned char *p12 = tu_p12(alice, alice_key, NULL, "pw", &plen);
	size_t read_ok = 0;

	(void)state;
	for (size_t n = 1; n < blen; n += 7) {
		p11s_cert_list *l = NULL;

		if (p11s_certs_read_mem((unsigned char *)bundle, n, "cut.pem", NULL, &l, NULL) ==
		    P11S_OK) {
			assert_true(p11s_cert_list_count(l) >= 1);
			read_ok++;
		}
		p11s_cert_list_free(l);
	}
	/* Past the first END line the first certificate is read. */
	assert_true(read_ok > 0);
	for (size_t n = 1; n < plen; n += 3) {
		p11s_cert_list *l = NULL;

		assert_int_not_equal(p11s_certs_read_mem(p12, n, "cut.p12", "pw", &l, NULL),
		                     P11S_OK);
		assert_null(l);
	}
	free(a);
	free(b);
	free(bundle);
	OPENSSL_free(p12);
}

static void secret_sources(void **state)
{
	char buf[64];
	char *path = tu_write("pass.txt", "filepass\nsecond line\n", 0);
	char *spec = tu_cat("file:", path, NULL);
	int fds[2];
	p11s_error *err = p11s_error_new();

	(void)state;
	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	                 P11S_OK);
	assert_string_equal(buf, "filepass");

	setenv("P11S_TEST_PASS", "envpass", 1);
	assert_int_equal(
	    p11s_secret_read("env:P11S_TEST_PASS", P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	    P11S_OK);
	assert_string_equal(buf, "envpass");

	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "fdpass\r\n", 8), 8);
	close(fds[1]);
	{
		char spec_fd[32];

		snprintf(spec_fd, sizeof(spec_fd), "fd:%d", fds[0]);
		assert_int_equal(
		    p11s_secret_read(spec_fd, P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
		    P11S_OK);
	}
	assert_string_equal(buf, "fdpass");
	close(fds[0]);

	assert_int_equal(p11s_secret_read("pass:oops", P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	                 P11S_E_BAD_PIN_SOURCE);
	assert_non_null(strstr(p11s_error_message(err), "file:PATH, fd:N or env:VAR"));
	assert_int_equal(p11s_secret_read("fd:x", P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	                 P11S_E_BAD_PIN_SOURCE);
	assert_int_equal(
	    p11s_secret_read("env:P11S_NO_SUCH_VAR", P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	    P11S_E_IO);
	assert_int_equal(
	    p11s_secret_read("file:/nonexistent", P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	    P11S_E_IO);
	OPENSSL_cleanse(buf, sizeof(buf));
	p11s_error_free(err);
	free(path);
	free(spec);
}

static void names_and_emails(void **state)
{
	EVP_PKEY *k = tu_key("ec:P-256");
	X509 *x = tu_cert(
	    &(tu_cert_spec){.key = k,
	                    .subject = "/O=Ex, Inc./CN=J\xc3\xbcrgen",
	                    .san = "email:a@example.org,DNS:h.example,email:b@example.org"});
	char *s = p11s_cert_name_string(X509_get_subject_name(x));
	size_t n;
	char **emails = p11s_cert_san_emails(x, &n);

	(void)state;
	/* RFC 2253 order and escaping; UTF-8 kept as UTF-8. */
	assert_string_equal(s, "CN=J\xc3\xbcrgen,O=Ex\\, Inc.");
	assert_int_equal(n, 2);
	assert_string_equal(emails[0], "a@example.org");
	assert_string_equal(emails[1], "b@example.org");
	assert_null(emails[2]);
	p11s_strv_free(emails);
	free(s);
	emails = p11s_cert_san_emails(alice, &n);
	assert_int_equal(n, 1);
	p11s_strv_free(emails);
	p11s_strv_free(NULL);
	X509_free(x);
	EVP_PKEY_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(pem_single_and_bundle),
	    cmocka_unit_test(pem_trusted_certificate),
	    cmocka_unit_test(der_single_and_concatenated),
	    cmocka_unit_test(pkcs12),
	    cmocka_unit_test(pkcs12_legacy),
	    cmocka_unit_test(pkcs7_certs_only),
	    cmocka_unit_test(pem_with_key),
	    cmocka_unit_test(not_certificates),
	    cmocka_unit_test(bundle_with_a_bad_block),
	    cmocka_unit_test(truncations),
	    cmocka_unit_test(secret_sources),
	    cmocka_unit_test(names_and_emails),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
