/*
 * Keys with CKA_ALWAYS_AUTHENTICATE, through the library on the mock
 * module (tests/mock, flag always-auth): one C_Login(CKU_CONTEXT_SPECIFIC)
 * per operation, the PIN source read again for each (a PIN file changed
 * between two operations is seen), nothing kept from the user login.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "p11smime/token.h"
#include "testutil.h"

static char *mock_log;

/* Another PIN in the file the source names. */
static void write_pin(const char *pin)
{
	free(tu_write("pin", pin, 0));
}

/* tu_write(), the path exported as @p var. */
static void write_env(const char *var, const char *name, const char *data)
{
	char *path = tu_write(name, data, 0);

	setenv(var, path, 1);
	free(path);
}

/* Lines of the mock's log that start with @p prefix. */
static int log_count(const char *prefix)
{
	FILE *f = fopen(mock_log, "r");
	char line[512];
	int n = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strncmp(line, prefix, strlen(prefix)) == 0;
	fclose(f);
	return n;
}

struct fixture {
	p11s_ctx *ctx;
	p11s_object_list *list;
	p11s_key *key;
	p11s_error *err;
	char *pin_file;
};

static int setup(void **state)
{
	static struct fixture fx;
	const char *module = getenv("P11S_MOCK_MODULE");
	EVP_PKEY *k = tu_key("rsa:2048");
	X509 *x = tu_cert(&(tu_cert_spec){.key = k, .cn = "Mock", .san = "email:mock@example.org"});
	char *pem_key = NULL, *pem_cert = tu_pem(x);
	BIO *b = BIO_new(BIO_s_mem());
	long n;
	char *p;

	if (module == NULL) {
		fprintf(stderr, "P11S_MOCK_MODULE is not set\n");
		return -1;
	}
	PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(b, &p);
	pem_key = strndup(p, (size_t)n);
	write_env("P11S_MOCK_KEY", "mock-key.pem", pem_key);
	write_env("P11S_MOCK_CERT", "mock-cert.pem", pem_cert);
	mock_log = tu_write("mock.log", "", 0);
	setenv("P11S_MOCK_LOG", mock_log, 1);
	setenv("P11S_MOCK_FLAGS", "always-auth", 1);
	setenv("P11S_MOCK_PIN", "123456", 1);
	free(pem_key);
	free(pem_cert);
	BIO_free(b);
	X509_free(x);
	EVP_PKEY_free(k);

	memset(&fx, 0, sizeof(fx));
	fx.err = p11s_error_new();
	fx.pin_file = tu_write("pin", "123456\n", 0);
	if (p11s_ctx_new(module, &fx.ctx, fx.err) != P11S_OK) {
		fprintf(stderr, "%s\n", p11s_error_message(fx.err));
		return -1;
	}
	*state = &fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	p11s_key_free(fx->key);
	p11s_object_list_free(fx->list);
	p11s_ctx_free(fx->ctx);
	p11s_error_free(fx->err);
	free(fx->pin_file);
	free(mock_log);
	return 0;
}

/* The private key, opened with the PIN from file:. */
static void open_key(struct fixture *fx)
{
	p11s_objects_opts o = {.login = 1, .private_keys = 1};
	char *spec = tu_cat("file:", fx->pin_file, NULL);

	assert_int_equal(p11s_ctx_set_pin_source(fx->ctx, spec, fx->err), P11S_OK);
	free(spec);
	assert_int_equal(p11s_objects(fx->ctx, NULL, &o, &fx->list, fx->err), P11S_OK);
	assert_int_equal(p11s_object_list_count(fx->list), 1);
	assert_int_equal(
	    p11s_key_open(fx->ctx, p11s_object_list_get(fx->list, 0), &fx->key, fx->err), P11S_OK);
	assert_true(p11s_object_key_flags(p11s_object_list_get(fx->list, 0)) &
	            P11S_KF_ALWAYS_AUTHENTICATE);
}

static int sign_once(struct fixture *fx)
{
	unsigned char md[32] = {1, 2, 3}, sig[512];
	size_t siglen = sizeof(sig);
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(p11s_key_pkey(fx->key), NULL);
	int ok = pc != NULL && EVP_PKEY_sign_init(pc) > 0 &&
	         EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) > 0 &&
	         EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) > 0 &&
	         EVP_PKEY_sign(pc, sig, &siglen, md, sizeof(md)) > 0;

	EVP_PKEY_CTX_free(pc);
	ERR_clear_error();
	return ok;
}

static int decrypt_once(struct fixture *fx)
{
	unsigned char msg[16] = "session key 123", ct[512], pt[512];
	size_t ctlen = sizeof(ct), ptlen = sizeof(pt);
	EVP_PKEY_CTX *enc = EVP_PKEY_CTX_new(p11s_key_pkey(fx->key), NULL);
	EVP_PKEY_CTX *dec = EVP_PKEY_CTX_new(p11s_key_pkey(fx->key), NULL);
	int ok = enc != NULL && dec != NULL && EVP_PKEY_encrypt_init(enc) > 0 &&
	         EVP_PKEY_CTX_set_rsa_padding(enc, RSA_PKCS1_PADDING) > 0 &&
	         EVP_PKEY_encrypt(enc, ct, &ctlen, msg, sizeof(msg)) > 0 &&
	         EVP_PKEY_decrypt_init(dec) > 0 &&
	         EVP_PKEY_CTX_set_rsa_padding(dec, RSA_PKCS1_PADDING) > 0 &&
	         EVP_PKEY_decrypt(dec, pt, &ptlen, ct, ctlen) > 0 && ptlen == sizeof(msg) &&
	         memcmp(pt, msg, ptlen) == 0;

	EVP_PKEY_CTX_free(enc);
	EVP_PKEY_CTX_free(dec);
	ERR_clear_error();
	return ok;
}

/*
 * Two signatures and two decryptions: one context-specific login each,
 * the PIN file read each time.  A wrong PIN written between operations
 * makes the next one fail (the old code kept the login's PIN and did not
 * notice); the right one again makes the one after work.
 */
static void test_reread_per_operation(void **state)
{
	struct fixture *fx = *state;

	open_key(fx);
	assert_int_equal(log_count("C_Login user_type=1 "), 1);
	assert_int_equal(log_count("C_Login user_type=2 "), 0);

	assert_true(sign_once(fx));
	assert_int_equal(log_count("C_Login user_type=2 "), 1);
	assert_true(sign_once(fx));
	assert_int_equal(log_count("C_Login user_type=2 "), 2);
	assert_true(decrypt_once(fx));
	assert_int_equal(log_count("C_Login user_type=2 "), 3);

	/* Changed between two operations: the next login reads the new PIN. */
	write_pin("654321\n");
	assert_false(sign_once(fx));
	assert_int_equal(log_count("C_Login user_type=2 pin_len=6"), 4);
	assert_false(decrypt_once(fx));
	assert_int_equal(log_count("C_Login user_type=2 "), 5);

	/* A different length shows which PIN reached the token. */
	write_pin("1234567\n");
	assert_false(sign_once(fx));
	assert_int_equal(log_count("C_Login user_type=2 pin_len=7"), 1);

	write_pin("123456\n");
	assert_true(sign_once(fx));
	assert_true(decrypt_once(fx));
	assert_int_equal(log_count("C_Login user_type=2 "), 8);
	/* One user login for the whole run: only the key's logins repeat. */
	assert_int_equal(log_count("C_Login user_type=1 "), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reread_per_operation),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
