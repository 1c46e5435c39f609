/*
 * Certificates from files: recognised by content with OpenSSL's readers
 * (PEM_read_bio, d2i_X509, d2i_PKCS7, d2i_PKCS12), never a parser of our own.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/pkcs7.h>
#include <openssl/provider.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "p11smime/certs.h"
#include "p11smime/io.h"
#include "mime.h"

/*
 * The most PKCS#12 MAC iterations we run (docs/design.md): tools write
 * 2,048 to 600,000; 10 million takes a few seconds.
 */
#define P11I_P12_MAX_ITER 10000000

/* Nobody keeps certificates in files this big; a runaway stdin is refused. */
#define MAX_FILE (64u * 1024 * 1024)

struct p11s_cert_list {
	STACK_OF(X509) * certs;
	EVP_PKEY **keys; /* parallel to certs, mostly NULL */
	int holding;     /* p11i_secret_hold() taken for the keys */
	size_t keys_len;
	const char *format;
	char **problems;
	size_t nproblems, problems_cap;
};

static p11s_cert_list *list_new(void)
{
	p11s_cert_list *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->certs = sk_X509_new_null();
	if (l->certs == NULL) {
		free(l);
		return NULL;
	}
	return l;
}

void p11s_cert_list_free(p11s_cert_list *l)
{
	if (l == NULL)
		return;
	sk_X509_pop_free(l->certs, X509_free);
	for (size_t i = 0; i < l->keys_len; i++)
		EVP_PKEY_free(l->keys[i]);
	free(l->keys);
	if (l->holding)
		p11i_secret_release();
	for (size_t i = 0; i < l->nproblems; i++)
		free(l->problems[i]);
	free(l->problems);
	free(l);
}

/* Key @p key (the reference is taken on success) for certificate @p n. */
static int set_key(p11s_cert_list *l, size_t n, EVP_PKEY *key)
{
	if (l->keys_len <= n) {
		EVP_PKEY **grown = realloc(l->keys, (n + 1) * sizeof(*grown));

		if (grown == NULL)
			return 0;
		memset(grown + l->keys_len, 0, (n + 1 - l->keys_len) * sizeof(*grown));
		l->keys = grown;
		l->keys_len = n + 1;
	}
	l->keys[n] = key;
	/* A software private key is plaintext key material: no core files while it is here. */
	if (key != NULL && !l->holding) {
		p11i_secret_hold();
		l->holding = 1;
	}
	return 1;
}

/* Takes @p x (and @p key) whatever happens. */
static int list_add(p11s_cert_list *l, X509 *x, EVP_PKEY *key)
{
	size_t n = (size_t)sk_X509_num(l->certs);

	if (sk_X509_push(l->certs, x) <= 0) {
		X509_free(x);
		EVP_PKEY_free(key);
		return 0;
	}
	if (key == NULL)
		return 1;
	if (!set_key(l, n, key)) {
		EVP_PKEY_free(key);
		return 0;
	}
	return 1;
}

static void problem(p11s_cert_list *l, const char *fmt, ...) P11I_PRINTF(2, 3);
static void problem(p11s_cert_list *l, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	unsigned long e = ERR_peek_last_error();
	char reason[256] = "";

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	p11i_ossl_reason(e, s, reason, sizeof(reason));
	ERR_clear_error();
	if (s != NULL && reason[0]) {
		char *t = p11i_asprintf("%s (%s)", s, reason);

		free(s);
		s = t;
	}
	if (s == NULL)
		return;
	if (P11I_GROW(l->problems, l->nproblems, l->problems_cap, 1) != 0) {
		free(s);
		return;
	}
	l->problems[l->nproblems++] = s;
}

static int add_pkcs7(p11s_cert_list *l, PKCS7 *p7)
{
	STACK_OF(X509) *certs = NULL;
	int n = 0;

	if (p7 == NULL)
		return -1;
	if (PKCS7_type_is_signed(p7) && p7->d.sign != NULL)
		certs = p7->d.sign->cert;
	else if (PKCS7_type_is_signedAndEnveloped(p7) && p7->d.signed_and_enveloped != NULL)
		certs = p7->d.signed_and_enveloped->cert;
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);

		if (X509_up_ref(x) != 1 || !list_add(l, x, NULL))
			return -1;
		n++;
	}
	return n;
}

/* ------------------------------------------------------------------- PEM */

/* Give each key to the certificate whose public key it matches. */
typedef P11I_VEC(EVP_PKEY *) keyvec;

static void keyvec_push(keyvec *kv, EVP_PKEY *k)
{
	if (p11i_vec_push(kv, k) != 0)
		EVP_PKEY_free(k);
}

static void keyvec_free(keyvec *kv)
{
	for (size_t i = 0; i < kv->n; i++)
		EVP_PKEY_free(kv->v[i]);
	free(kv->v);
}

static void pair_keys(p11s_cert_list *l, const keyvec *keys)
{
	for (size_t k = 0; k < keys->n; k++) {
		EVP_PKEY *key = keys->v[k];

		for (size_t i = 0; i < p11s_cert_list_count(l); i++) {
			EVP_PKEY *pub = X509_get0_pubkey(p11s_cert_list_get(l, i));

			if (pub == NULL || EVP_PKEY_eq(pub, key) != 1 || p11s_cert_list_key(l, i))
				continue;
			if (set_key(l, i, key))
				EVP_PKEY_up_ref(key);
			break;
		}
	}
	ERR_clear_error();
}

static int is_pem(const unsigned char *buf, size_t len)
{
	return memmem(buf, len, "-----BEGIN ", 11) != NULL;
}

/* Remember the kinds of block that were not certificates, for the message. */
static void note_type(char **others, const char *type)
{
	char *s = *others ? p11i_asprintf("%s, %s", *others, type) : p11i_asprintf("%s", type);

	free(*others);
	*others = s;
}

static p11s_rc read_pem(p11s_cert_list *l, const unsigned char *buf, size_t len, const char *name,
                        p11s_error *err)
{
	BIO *bio = BIO_new_mem_buf(buf, (int)len);
	char *others = NULL;
	int block = 0;
	keyvec keys = {0};

	if (bio == NULL)
		return p11i_err_nomem(err);
	l->format = "PEM";
	for (;;) {
		char *type = NULL, *header = NULL;
		unsigned char *data = NULL;
		long dlen = 0;
		const unsigned char *p;
		X509 *x = NULL;

		if (PEM_read_bio(bio, &type, &header, &data, &dlen) != 1) {
			unsigned long e = ERR_peek_last_error();

			if (ERR_GET_LIB(e) == ERR_LIB_PEM &&
			    ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
				ERR_clear_error();
				break;
			}
			/* A damaged block: PEM_read_bio has consumed it; go on to the next. */
			problem(l, "%s: PEM block %d is damaged (bad base64 or no END line)", name,
			        ++block);
			if (BIO_eof(bio) || block > 100000)
				break;
			continue;
		}
		block++;
		p = data;
		if (strcmp(type, PEM_STRING_X509) == 0 || strcmp(type, PEM_STRING_X509_OLD) == 0) {
			x = d2i_X509(NULL, &p, dlen);
		} else if (strcmp(type, PEM_STRING_X509_TRUSTED) == 0) {
			x = d2i_X509_AUX(NULL, &p, dlen);
		} else if (strcmp(type, PEM_STRING_PKCS7) == 0) {
			PKCS7 *p7 = d2i_PKCS7(NULL, &p, dlen);

			if (add_pkcs7(l, p7) < 0)
				problem(l, "%s: PEM block %d (%s) does not decode", name, block,
				        type);
			PKCS7_free(p7);
		} else if (strcmp(type, PEM_STRING_PKCS8INF) == 0 ||
		           strcmp(type, PEM_STRING_RSA) == 0 ||
		           strcmp(type, PEM_STRING_ECPRIVATEKEY) == 0) {
			/* An unencrypted key beside its certificate, as many tools write them. */
			EVP_PKEY *k = d2i_AutoPrivateKey(NULL, &p, dlen);

			if (k != NULL)
				keyvec_push(&keys, k);
			ERR_clear_error();
			note_type(&others, type);
		} else {
			note_type(&others, type);
		}
		if (x != NULL) {
			if (!list_add(l, x, NULL)) {
				OPENSSL_free(type);
				OPENSSL_free(header);
				OPENSSL_free(data);
				free(others);
				BIO_free(bio);
				keyvec_free(&keys);
				return p11i_err_nomem(err);
			}
		} else if (strcmp(type, PEM_STRING_X509) == 0 ||
		           strcmp(type, PEM_STRING_X509_OLD) == 0 ||
		           strcmp(type, PEM_STRING_X509_TRUSTED) == 0) {
			problem(l, "%s: PEM block %d (%s) does not decode as a certificate", name,
			        block, type);
		}
		OPENSSL_free(type);
		OPENSSL_free(header);
		OPENSSL_free(data);
	}
	BIO_free(bio);
	pair_keys(l, &keys);
	keyvec_free(&keys);
	if (sk_X509_num(l->certs) == 0 && l->nproblems == 0) {
		p11s_rc rc =
		    p11i_err(err, P11S_E_INPUT, "%s: no certificate in this PEM file%s%s%s", name,
		             others ? " (it holds " : "", others ? others : "", others ? ")" : "");
		free(others);
		return rc;
	}
	free(others);
	if (sk_X509_num(l->certs) == 0)
		return p11i_err(err, P11S_E_INPUT, "%s", l->problems[0]);
	return P11S_OK;
}

/* --------------------------------------------------------------- PKCS#12 */

/*
 * Old PKCS#12 files use RC2/3DES from OpenSSL's legacy provider.  It is
 * loaded once, thread-safely, into a library context of our own beside the
 * default provider: never into the application's default context, whose
 * providers are the application's choice.
 */
static CRYPTO_ONCE legacy_once = CRYPTO_ONCE_STATIC_INIT;
static OSSL_LIB_CTX *legacy_libctx;

static void legacy_init(void)
{
	OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();

	if (lc != NULL && (OSSL_PROVIDER_load(lc, "default") == NULL ||
	                   OSSL_PROVIDER_load(lc, "legacy") == NULL)) {
		OSSL_LIB_CTX_free(lc);
		lc = NULL;
	}
	ERR_clear_error();
	legacy_libctx = lc;
}

/*
 * PKCS12_parse() takes no library context: it uses the thread's default,
 * which is ours for the length of the call only (OSSL_LIB_CTX_set0_default
 * is per thread).
 */
static int parse_legacy(PKCS12 *p12, const char *pass, EVP_PKEY **pkey, X509 **cert,
                        STACK_OF(X509) * *ca)
{
	OSSL_LIB_CTX *prev;
	int ok;

	if (!CRYPTO_THREAD_run_once(&legacy_once, legacy_init) || legacy_libctx == NULL)
		return 0;
	prev = OSSL_LIB_CTX_set0_default(legacy_libctx);
	if (prev == NULL)
		return 0;
	ok = PKCS12_parse(p12, pass, pkey, cert, ca) == 1;
	OSSL_LIB_CTX_set0_default(prev);
	return ok;
}

static p11s_rc read_p12(p11s_cert_list *l, PKCS12 *p12, const char *name, const char *pass,
                        p11s_error *err)
{
	EVP_PKEY *pkey = NULL;
	X509 *cert = NULL;
	STACK_OF(X509) *ca = NULL;
	const char *use = pass;

	l->format = "PKCS#12";
	if (PKCS12_mac_present(p12)) {
		const ASN1_INTEGER *iter = NULL;
		long n = 1;

		/*
		 * OpenSSL runs whatever count the file asks for, 2^31-1 included
		 * (minutes of CPU): the count is read first and bounded.
		 */
		PKCS12_get0_mac(NULL, NULL, NULL, &iter, p12);
		if (iter != NULL)
			n = ASN1_INTEGER_get(iter);
		if (n < 1) {
			ERR_clear_error();
			return p11i_err(err, P11S_E_INPUT,
			                "%s: the MAC iteration count of this PKCS#12 file is not a "
			                "positive number that fits",
			                name);
		}
		if (n > P11I_P12_MAX_ITER)
			return p11i_err(
			    err, P11S_E_INPUT,
			    "%s: this PKCS#12 file asks for %ld MAC iterations; p11smime "
			    "runs at most %d (more only keeps the computer busy)",
			    name, n, P11I_P12_MAX_ITER);
		if (pass != NULL) {
			if (PKCS12_verify_mac(p12, pass, -1) != 1)
				return p11i_err(
				    err, P11S_E_INPUT,
				    "%s: wrong PKCS#12 password (the integrity check failed)",
				    name);
		} else if (PKCS12_verify_mac(p12, "", 0) == 1) {
			use = "";
		} else if (PKCS12_verify_mac(p12, NULL, 0) == 1) {
			use = NULL;
		} else {
			ERR_clear_error();
			return p11i_err(
			    err, P11S_E_INPUT,
			    "%s: this PKCS#12 file needs a password (--p12-pass-source)", name);
		}
	}
	ERR_clear_error();
	if (PKCS12_parse(p12, use, &pkey, &cert, &ca) != 1) {
		if (!parse_legacy(p12, use, &pkey, &cert, &ca))
			return p11i_err_ossl(err, P11S_E_INPUT, "%s: cannot open this PKCS#12 file",
			                     name);
	}
	if (cert != NULL && !list_add(l, cert, pkey))
		goto nomem;
	if (cert == NULL)
		EVP_PKEY_free(pkey); /* a key without its certificate tells us nothing */
	while (sk_X509_num(ca) > 0)
		if (!list_add(l, sk_X509_shift(ca), NULL))
			goto nomem;
	sk_X509_free(ca);
	if (sk_X509_num(l->certs) == 0)
		return p11i_err(err, P11S_E_INPUT, "%s: no certificate in this PKCS#12 file", name);
	return P11S_OK;
nomem:
	sk_X509_pop_free(ca, X509_free);
	return p11i_err_nomem(err);
}

/* ------------------------------------------------------------------- DER */

static p11s_rc read_der(p11s_cert_list *l, const unsigned char *buf, size_t len, const char *name,
                        const char *pass, p11s_error *err)
{
	const unsigned char *p = buf, *end = buf + len;
	X509 *x = d2i_X509(NULL, &p, (long)len);
	PKCS12 *p12;
	PKCS7 *p7;
	p11s_rc rc;

	if (x != NULL) {
		l->format = "DER";
		if (!list_add(l, x, NULL))
			return p11i_err_nomem(err);
		/* Several DER certificates back to back, as some tools write them. */
		while (p < end) {
			x = d2i_X509(NULL, &p, (long)(end - p));
			if (x == NULL) {
				problem(l,
				        "%s: %zu bytes after certificate %d are not a certificate",
				        name, (size_t)(end - p), sk_X509_num(l->certs));
				break;
			}
			if (!list_add(l, x, NULL))
				return p11i_err_nomem(err);
		}
		return P11S_OK;
	}
	ERR_clear_error();
	p = buf;
	p12 = d2i_PKCS12(NULL, &p, (long)len);
	if (p12 != NULL) {
		rc = read_p12(l, p12, name, pass, err);
		PKCS12_free(p12);
		return rc;
	}
	ERR_clear_error();
	p = buf;
	p7 = d2i_PKCS7(NULL, &p, (long)len);
	if (p7 != NULL) {
		int n = add_pkcs7(l, p7);

		PKCS7_free(p7);
		l->format = "PKCS#7";
		if (n < 0)
			return p11i_err_nomem(err);
		if (n == 0)
			return p11i_err(err, P11S_E_INPUT, "%s: no certificate in this PKCS#7 file",
			                name);
		return P11S_OK;
	}
	ERR_clear_error();
	if (len > 0 && buf[0] == 0x30)
		return p11i_err(err, P11S_E_INPUT,
		                "%s: not a certificate: DER data that decodes as neither a "
		                "certificate, PKCS#12 nor PKCS#7 (truncated or damaged?)",
		                name);
	return p11i_err(err, P11S_E_INPUT,
	                "%s: not a certificate file (expected PEM, DER, PKCS#7 or PKCS#12)", name);
}

/* ------------------------------------------------------------------- API */

p11s_rc p11s_certs_read_mem(const unsigned char *buf, size_t len, const char *name,
                            const char *p12_pass, p11s_cert_list **out, p11s_error *err)
{
	p11s_cert_list *l;
	p11s_rc rc;

	*out = NULL;
	if (name == NULL)
		name = "(memory)";
	if (buf == NULL || len == 0)
		return p11i_err(err, P11S_E_INPUT, "%s: empty, not a certificate", name);
	if (len > MAX_FILE || len > (size_t)INT32_MAX)
		return p11i_err(err, P11S_E_INPUT, "%s: too large for a certificate file", name);
	l = list_new();
	if (l == NULL)
		return p11i_err_nomem(err);
	rc = is_pem(buf, len) ? read_pem(l, buf, len, name, err)
	                      : read_der(l, buf, len, name, p12_pass, err);
	ERR_clear_error();
	if (rc != P11S_OK) {
		p11s_cert_list_free(l);
		return rc;
	}
	*out = l;
	return P11S_OK;
}

p11s_rc p11s_certs_read_file(const char *path, const char *p12_pass, p11s_cert_list **out,
                             p11s_error *err)
{
	BIO *bio = NULL;
	unsigned char *buf = NULL;
	size_t len = 0, cap = 0;
	const char *name = path && strcmp(path, "-") != 0 ? path : "standard input";
	p11s_rc rc;

	*out = NULL;
	rc = p11s_input_open(path, &bio, err);
	if (rc != P11S_OK)
		return rc;
	for (;;) {
		int n;

		if (cap - len < 65536) {
			unsigned char *grown;

			if (cap > MAX_FILE) {
				rc = p11i_err(err, P11S_E_INPUT,
				              "%s: too large for a certificate file", name);
				goto done;
			}
			/* By steps, not doubling: a file over MAX_FILE costs no more than it. */
			grown = realloc(buf, cap + 65536 * 4);
			if (grown == NULL) {
				rc = p11i_err_nomem(err);
				goto done;
			}
			buf = grown;
			cap += 65536 * 4;
		}
		n = BIO_read(bio, buf + len, (int)(cap - len));
		if (n > 0) {
			len += (size_t)n;
			continue;
		}
		if (BIO_should_retry(bio))
			continue;
		break;
	}
	if (ERR_peek_error() != 0 || (BIO_method_type(bio) == BIO_TYPE_FILE && BIO_eof(bio) == 0)) {
		rc = p11i_err_ossl(err, P11S_E_IO, "%s: cannot read: %s", name, strerror(errno));
		goto done;
	}
	rc = p11s_certs_read_mem(buf, len, name, p12_pass, out, err);
done:
	BIO_free_all(bio);
	free(buf);
	return rc;
}

size_t p11s_cert_list_count(const p11s_cert_list *l)
{
	return l ? (size_t)sk_X509_num(l->certs) : 0;
}

X509 *p11s_cert_list_get(const p11s_cert_list *l, size_t i)
{
	return l && i < p11s_cert_list_count(l) ? sk_X509_value(l->certs, (int)i) : NULL;
}

EVP_PKEY *p11s_cert_list_key(const p11s_cert_list *l, size_t i)
{
	return l && i < l->keys_len ? l->keys[i] : NULL;
}

STACK_OF(X509) * p11s_cert_list_stack(const p11s_cert_list *l)
{
	return l ? l->certs : NULL;
}

const char *p11s_cert_list_format(const p11s_cert_list *l)
{
	return l && l->format ? l->format : "";
}

size_t p11s_cert_list_problem_count(const p11s_cert_list *l)
{
	return l ? l->nproblems : 0;
}

const char *p11s_cert_list_problem(const p11s_cert_list *l, size_t i)
{
	return l && i < l->nproblems ? l->problems[i] : NULL;
}

/* ------------------------------------------------------------- cert facts */

/* Replace bytes that are not well-formed UTF-8 with '?', in place. */
static void utf8_fix(unsigned char *s)
{
	while (*s) {
		int n = *s < 0x80             ? 0
		        : (*s & 0xe0) == 0xc0 ? 1
		        : (*s & 0xf0) == 0xe0 ? 2
		        : (*s & 0xf8) == 0xf0 ? 3
		                              : -1;
		int ok = n >= 0;

		for (int i = 1; ok && i <= n; i++)
			ok = (s[i] & 0xc0) == 0x80;
		if (!ok) {
			*s++ = '?';
			continue;
		}
		if (*s < 0x20 || *s == 0x7f)
			*s = '?';
		s += n + 1;
	}
}

char *p11s_cert_name_string(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL, *out = NULL;
	long n;

	if (bio == NULL)
		return NULL;
	if (name != NULL &&
	    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0)
		ERR_clear_error();
	n = BIO_get_mem_data(bio, &data);
	out = malloc((size_t)(n > 0 ? n : 0) + 1);
	if (out != NULL) {
		if (n > 0)
			memcpy(out, data, (size_t)n);
		out[n > 0 ? n : 0] = '\0';
		utf8_fix((unsigned char *)out);
	}
	BIO_free(bio);
	return out;
}

char **p11s_cert_san_emails(X509 *cert, size_t *count)
{
	GENERAL_NAMES *gens =
	    cert ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) : NULL;
	int total = sk_GENERAL_NAME_num(gens);
	char **v = calloc((size_t)(total > 0 ? total : 0) + 1, sizeof(char *));
	size_t n = 0;

	ERR_clear_error();
	if (v == NULL) {
		GENERAL_NAMES_free(gens);
		return NULL;
	}
	for (int i = 0; i < total; i++) {
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
		const unsigned char *s;
		int len;
		char *e, *p;

		if (gn->type != GEN_EMAIL || gn->d.rfc822Name == NULL)
			continue;
		s = ASN1_STRING_get0_data(gn->d.rfc822Name);
		len = ASN1_STRING_length(gn->d.rfc822Name);
		if (len <= 0)
			continue;
		e = p = malloc((size_t)len * 4 + 1);
		if (e == NULL) {
			p11s_strv_free(v);
			GENERAL_NAMES_free(gens);
			return NULL;
		}
		for (int j = 0; j < len; j++) {
			if (s[j] >= 0x20 && s[j] < 0x7f && s[j] != '\\')
				*p++ = (char)s[j];
			else
				p += sprintf(p, "\\x%02x", s[j]);
		}
		*p = '\0';
		v[n++] = e;
	}
	GENERAL_NAMES_free(gens);
	if (count != NULL)
		*count = n;
	return v;
}

/* ---------------------------------------------------------- certificate set */

/*
 * Certificates by the SHA-256 of their encoding, in an open-addressing
 * table: "seen this one?" in constant time, so that a --chain or --ca of
 * 10,000 certificates is read in linear time.
 */
struct p11i_certset {
	unsigned char (*slot)[SHA256_DIGEST_LENGTH];
	unsigned char *used;
	size_t cap, n;
};

p11i_certset *p11i_certset_new(void)
{
	return calloc(1, sizeof(p11i_certset));
}

void p11i_certset_free(p11i_certset *set)
{
	if (set == NULL)
		return;
	free(set->slot);
	free(set->used);
	free(set);
}

static size_t certset_find(const p11i_certset *set, const unsigned char *md)
{
	size_t i;

	memcpy(&i, md, sizeof(i));
	for (i &= set->cap - 1; set->used[i] && memcmp(set->slot[i], md, SHA256_DIGEST_LENGTH) != 0;
	     i = (i + 1) & (set->cap - 1))
		;
	return i;
}

static int certset_grow(p11i_certset *set)
{
	p11i_certset bigger = {NULL, NULL, set->cap ? set->cap * 2 : 64, 0};

	bigger.slot = calloc(bigger.cap, sizeof(*bigger.slot));
	bigger.used = calloc(bigger.cap, 1);
	if (bigger.slot == NULL || bigger.used == NULL) {
		free(bigger.slot);
		free(bigger.used);
		return 0;
	}
	for (size_t i = 0; i < set->cap; i++)
		if (set->used[i]) {
			size_t j = certset_find(&bigger, set->slot[i]);

			memcpy(bigger.slot[j], set->slot[i], SHA256_DIGEST_LENGTH);
			bigger.used[j] = 1;
			bigger.n++;
		}
	free(set->slot);
	free(set->used);
	*set = bigger;
	return 1;
}

int p11i_certset_add(p11i_certset *set, X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	size_t i;

	if (X509_digest(x, EVP_sha256(), md, &len) != 1 || len != SHA256_DIGEST_LENGTH) {
		ERR_clear_error();
		return -1;
	}
	/* At most half full, so that probes stay short. */
	if ((set->n + 1) * 2 > set->cap && !certset_grow(set))
		return -1;
	i = certset_find(set, md);
	if (set->used[i])
		return 0;
	memcpy(set->slot[i], md, SHA256_DIGEST_LENGTH);
	set->used[i] = 1;
	set->n++;
	return 1;
}
