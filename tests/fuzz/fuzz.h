/*
 * Shared by the libFuzzer targets: the fixed software keys and certificates
 * the seed corpora were made for (tests/fuzz/keys, by make-corpus.sh), and
 * small helpers.  A target aborts when its fixture is missing: a fuzzer
 * that silently fuzzes nothing is worse than one that does not start.
 */
#ifndef P11S_FUZZ_H
#define P11S_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static inline char *fuzz_path(const char *name)
{
	const char *dir = getenv("P11S_FUZZ_KEYS");
	size_t n = strlen(dir ? dir : P11S_FUZZ_KEYS) + strlen(name) + 2;
	char *p = malloc(n);

	if (p == NULL)
		abort();
	snprintf(p, n, "%s/%s", dir ? dir : P11S_FUZZ_KEYS, name);
	return p;
}

static inline EVP_PKEY *fuzz_key(const char *name)
{
	char *path = fuzz_path(name);
	BIO *b = BIO_new_file(path, "r");
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

	if (k == NULL) {
		fprintf(stderr, "fuzz: cannot read the key %s\n", path);
		abort();
	}
	BIO_free(b);
	free(path);
	return k;
}

static inline X509 *fuzz_cert(const char *name)
{
	char *path = fuzz_path(name);
	BIO *b = BIO_new_file(path, "r");
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

	if (x == NULL) {
		fprintf(stderr, "fuzz: cannot read the certificate %s\n", path);
		abort();
	}
	BIO_free(b);
	free(path);
	return x;
}

/* A NUL-terminated copy of the input (the string getters take C strings). */
static inline char *fuzz_str(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* A sink that throws everything away (BIO_s_null). */
static inline BIO *fuzz_null(void)
{
	BIO *b = BIO_new(BIO_s_null());

	if (b == NULL)
		abort();
	return b;
}

#endif
