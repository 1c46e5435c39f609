/* Test fixtures made in memory: see testutil.h. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>

#include "testutil.h"
#include "p11smime/io.h"

static void tu_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void tu_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "testutil: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	ERR_print_errors_fp(stderr);
	abort();
}

/* ------------------------------------------------------------------ keys */

struct cached_key {
	char *spec;
	EVP_PKEY *key;
};
static struct cached_key *key_cache;
static size_t key_cache_len;
static char *tmpdir;

static void tu_cleanup(void)
{
	for (size_t i = 0; i < key_cache_len; i++) {
		free(key_cache[i].spec);
		EVP_PKEY_free(key_cache[i].key);
	}
	free(key_cache);
	key_cache = NULL;
	key_cache_len = 0;
	if (tmpdir != NULL) {
		DIR *d = opendir(tmpdir);
		struct dirent *e;

		while (d != NULL && (e = readdir(d)) != NULL) {
			char *p;

			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			p = tu_cat(tmpdir, "/", e->d_name, NULL);
			unlink(p);
			free(p);
		}
		if (d != NULL)
			closedir(d);
		rmdir(tmpdir);
		free(tmpdir);
		tmpdir = NULL;
	}
}

static void tu_init(void)
{
	static int done;

	if (!done) {
		done = 1;
		atexit(tu_cleanup);
	}
}

static EVP_PKEY *keygen_params(const char *alg, const char *group, int dsa_bits)
{
	EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL), *kctx = NULL;
	EVP_PKEY *params = NULL, *key = NULL;

	if (pctx == NULL)
		return NULL;
	if (dsa_bits > 0) {
		if (EVP_PKEY_paramgen_init(pctx) <= 0 ||
		    EVP_PKEY_CTX_set_dsa_paramgen_bits(pctx, dsa_bits) <= 0 ||
		    EVP_PKEY_paramgen(pctx, &params) <= 0)
			goto out;
		kctx = EVP_PKEY_CTX_new_from_pkey(NULL, params, NULL);
		if (kctx == NULL || EVP_PKEY_keygen_init(kctx) <= 0 ||
		    EVP_PKEY_keygen(kctx, &key) <= 0)
			key = NULL;
	} else {
		OSSL_PARAM p[2] = {
		    OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0),
		    OSSL_PARAM_construct_end()};

		if (EVP_PKEY_keygen_init(pctx) <= 0 || EVP_PKEY_CTX_set_params(pctx, p) <= 0 ||
		    EVP_PKEY_keygen(pctx, &key) <= 0)
			key = NULL;
	}
out:
	EVP_PKEY_CTX_free(kctx);
	EVP_PKEY_CTX_free(pctx);
	EVP_PKEY_free(params);
	return key;
}

static EVP_PKEY *keygen(const char *spec)
{
	char base[64];
	const char *arg;
	size_t n = strcspn(spec, "#");

	if (n >= sizeof(base))
		tu_die("key spec too long: %s", spec);
	memcpy(base, spec, n);
	base[n] = '\0';
	arg = strchr(base, ':');
	arg = arg ? arg + 1 : "";
	if (strncmp(base, "rsa:", 4) == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)atoi(arg));
	if (strncmp(base, "ec:", 3) == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", arg);
	if (strcmp(base, "ed25519") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (strcmp(base, "ed448") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "ED448");
	if (strcmp(base, "x25519") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	if (strcmp(base, "x448") == 0)
		return EVP_PKEY_Q_keygen(NULL, NULL, "X448");
	if (strncmp(base, "dsa:", 4) == 0)
		return keygen_params("DSA", NULL, atoi(arg));
	if (strcmp(base, "dh") == 0)
		return keygen_params("DH", "ffdhe2048", 0);
	tu_die("unknown key spec '%s'", spec);
}

EVP_PKEY *tu_key(const char *spec)
{
	struct cached_key *grown;
	EVP_PKEY *key;

	tu_init();
	for (size_t i = 0; i < key_cache_len; i++) {
		if (strcmp(key_cache[i].spec, spec) == 0) {
			EVP_PKEY_up_ref(key_cache[i].key);
			return key_cache[i].key;
		}
	}
	key = keygen(spec);
	if (key == NULL)
		tu_die("cannot generate a key for '%s'", spec);
	grown = realloc(key_cache, (key_cache_len + 1) * sizeof(*grown));
	if (grown == NULL)
		tu_die("out of memory");
	key_cache = grown;
	key_cache[key_cache_len].spec = strdup(spec);
	key_cache[key_cache_len].key = key;
	key_cache_len++;
	EVP_PKEY_up_ref(key);
	return key;
}

/* ---------------------------------------------------------- certificates */

static void add_conf_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext;

	if (value == NULL)
		return;
	ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	if (ext == NULL)
		tu_die("bad %s extension '%s'", OBJ_nid2sn(nid), value);
	if (X509_add_ext(x, ext, -1) != 1)
		tu_die("cannot add %s", OBJ_nid2sn(nid));
	X509_EXTENSION_free(ext);
}

static void set_time(ASN1_TIME *field, time_t t)
{
	if (ASN1_TIME_set(field, t) == NULL)
		tu_die("cannot set a time");
}

static int key_signs_raw(EVP_PKEY *key)
{
	int id = EVP_PKEY_get_base_id(key);

	return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448;
}

X509 *tu_cert(const tu_cert_spec *s)
{
	static long serial_counter = 1000;
	X509 *x = X509_new(), *out;
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX ctx;
	EVP_PKEY *signer;
	const EVP_MD *md = NULL;
	time_t nb, na;
	unsigned char *der = NULL;
	const unsigned char *p;
	int len;

	if (x == NULL || name == NULL || s == NULL || s->key == NULL)
		tu_die("tu_cert: no key");
	if (s->issuer != NULL && s->issuer_key == NULL)
		tu_die("tu_cert: issuer without issuer_key");
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), s->serial ? s->serial : serial_counter++);

	if (s->subject != NULL) {
		/* "/O=Example/CN=Alice": split on '/', then on the first '='. */
		char *copy = strdup(s->subject), *save = NULL;

		for (char *part = strtok_r(copy, "/", &save); part;
		     part = strtok_r(NULL, "/", &save)) {
			char *eq = strchr(part, '=');

			if (eq == NULL)
				tu_die("bad subject part '%s'", part);
			*eq = '\0';
			if (!X509_NAME_add_entry_by_txt(name, part, MBSTRING_UTF8,
			                                (unsigned char *)eq + 1, -1, -1, 0))
				tu_die("bad subject attribute '%s'", part);
		}
		free(copy);
	} else {
		if (s->cn != NULL || s->subject_email == NULL)
			X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
			                           (const unsigned char *)(s->cn ? s->cn : "Test"),
			                           -1, -1, 0);
		if (s->subject_email != NULL)
			X509_NAME_add_entry_by_NID(name, NID_pkcs9_emailAddress, MBSTRING_ASC,
			                           (const unsigned char *)s->subject_email, -1, -1,
			                           0);
	}
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, s->issuer ? X509_get_subject_name(s->issuer) : name);
	X509_NAME_free(name);

	nb = s->not_before ? s->not_before : time(NULL) - 86400;
	na = s->not_after ? s->not_after : nb + 365 * 86400;
	set_time(X509_getm_notBefore(x), nb);
	set_time(X509_getm_notAfter(x), na);
	if (X509_set_pubkey(x, s->key) != 1)
		tu_die("cannot set the public key");

	X509V3_set_ctx(&ctx, s->issuer ? s->issuer : x, x, NULL, NULL, 0);
	if (s->ca == 1)
		add_conf_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE");
	else if (s->ca == -1)
		add_conf_ext(x, &ctx, NID_basic_constraints, "CA:FALSE");
	add_conf_ext(x, &ctx, NID_key_usage, s->ku);
	add_conf_ext(x, &ctx, NID_ext_key_usage, s->eku);
	add_conf_ext(x, &ctx, NID_subject_alt_name, s->san);
	for (size_t i = 0; i < sizeof(s->raw) / sizeof(s->raw[0]) && s->raw[i].oid; i++) {
		ASN1_OBJECT *obj = OBJ_txt2obj(s->raw[i].oid, 0);
		ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
		X509_EXTENSION *ext;

		if (obj == NULL || os == NULL ||
		    !ASN1_OCTET_STRING_set(os, s->raw[i].der, (int)s->raw[i].len))
			tu_die("bad raw extension %s", s->raw[i].oid);
		ext = X509_EXTENSION_create_by_OBJ(NULL, obj, s->raw[i].critical, os);
		if (ext == NULL || X509_add_ext(x, ext, -1) != 1)
			tu_die("cannot add raw extension %s", s->raw[i].oid);
		X509_EXTENSION_free(ext);
		ASN1_OCTET_STRING_free(os);
		ASN1_OBJECT_free(obj);
	}
	if (s->pubkey_oid != NULL) {
		X509_PUBKEY *pk = X509_get_X509_PUBKEY(x);
		unsigned char *bits = OPENSSL_malloc(32);
		ASN1_OBJECT *obj = OBJ_txt2obj(s->pubkey_oid, 1);

		if (bits == NULL || obj == NULL)
			tu_die("bad pubkey_oid %s", s->pubkey_oid);
		memset(bits, 0x42, 32);
		if (X509_PUBKEY_set0_param(pk, obj, V_ASN1_UNDEF, NULL, bits, 32) != 1)
			tu_die("cannot replace the public key algorithm");
	}

	signer = s->issuer ? s->issuer_key : s->key;
	if (!key_signs_raw(signer)) {
		md = EVP_get_digestbyname(s->md ? s->md : "SHA256");
		if (md == NULL)
			tu_die("unknown digest %s", s->md);
	}
	if (X509_sign(x, signer, md) <= 0)
		tu_die("cannot sign with this key (an X25519/DH key cannot self-sign: give an "
		       "issuer)");

	/* Re-read: cached fields then match what a file would give. */
	len = i2d_X509(x, &der);
	if (len <= 0)
		tu_die("cannot encode the certificate");
	p = der;
	out = d2i_X509(NULL, &p, len);
	if (out == NULL)
		tu_die("cannot re-read the certificate");
	OPENSSL_free(der);
	X509_free(x);
	return out;
}

time_t tu_time(const char *text)
{
	time_t t;

	if (p11s_time_parse(text, &t, NULL) != P11S_OK)
		tu_die("bad time '%s'", text);
	return t;
}

/* ---------------------------------------------------------- encodings */

static char *bio_string(BIO *bio)
{
	char *data;
	long n = BIO_get_mem_data(bio, &data);
	char *out = malloc((size_t)n + 1);

	if (out == NULL)
		tu_die("out of memory");
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	BIO_free(bio);
	return out;
}

char *tu_pem(X509 *x)
{
	BIO *bio = BIO_new(BIO_s_mem());

	if (bio == NULL || PEM_write_bio_X509(bio, x) != 1)
		tu_die("cannot write PEM");
	return bio_string(bio);
}

char *tu_pem_trusted(X509 *x)
{
	BIO *bio = BIO_new(BIO_s_mem());
	X509 *dup = X509_dup(x);

	if (bio == NULL || dup == NULL ||
	    X509_add1_trust_object(dup, OBJ_nid2obj(NID_email_protect)) != 1 ||
	    PEM_write_bio_X509_AUX(bio, dup) != 1)
		tu_die("cannot write TRUSTED CERTIFICATE PEM");
	X509_free(dup);
	return bio_string(bio);
}

unsigned char *tu_der(X509 *x, size_t *len)
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);

	if (n <= 0)
		tu_die("cannot write DER");
	*len = (size_t)n;
	return der;
}

unsigned char *tu_p12(X509 *cert, EVP_PKEY *key, STACK_OF(X509) * cas, const char *pass,
                      size_t *len)
{
	PKCS12 *p12 = PKCS12_create(pass, "test", key, cert, cas, 0, 0, 0, 0, 0);
	unsigned char *der = NULL;
	int n;

	if (p12 == NULL)
		tu_die("cannot make a PKCS#12");
	n = i2d_PKCS12(p12, &der);
	PKCS12_free(p12);
	if (n <= 0)
		tu_die("cannot encode a PKCS#12");
	*len = (size_t)n;
	return der;
}

/* ---------------------------------------------------------------- files */

const char *tu_tmpdir(void)
{
	const char *base = getenv("TMPDIR");

	tu_init();
	if (tmpdir == NULL) {
		tmpdir = tu_cat(base && *base ? base : "/tmp", "/p11s-unit-XXXXXX", NULL);
		if (mkdtemp(tmpdir) == NULL)
			tu_die("cannot make a temporary directory");
	}
	return tmpdir;
}

char *tu_write(const char *name, const void *data, size_t len)
{
	char *path = tu_cat(tu_tmpdir(), "/", name, NULL);
	FILE *fp = fopen(path, "wb");

	if (len == 0 && data != NULL)
		len = strlen(data);
	if (fp == NULL || (len > 0 && fwrite(data, 1, len, fp) != len) || fclose(fp) != 0)
		tu_die("cannot write %s", path);
	return path;
}

char *tu_cat(const char *first, ...)
{
	va_list ap;
	size_t n = 0;
	char *out;

	va_start(ap, first);
	for (const char *s = first; s; s = va_arg(ap, const char *))
		n += strlen(s);
	va_end(ap);
	out = malloc(n + 1);
	if (out == NULL)
		tu_die("out of memory");
	out[0] = '\0';
	va_start(ap, first);
	for (const char *s = first; s; s = va_arg(ap, const char *))
		strcat(out, s);
	va_end(ap);
	return out;
}
