#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/provider.h>
#include <openssl/x509.h>

#include "common.h"
#include "p11smime/io.h"

char *p11i_hex(const unsigned char *buf, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	char *out = malloc(len * 2 + 1);

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[buf[i] >> 4];
		out[2 * i + 1] = digits[buf[i] & 0x0f];
	}
	out[len * 2] = '\0';
	return out;
}

char *p11i_serial_hex(const ASN1_INTEGER *serial)
{
	BIGNUM *bn = serial ? ASN1_INTEGER_to_BN(serial, NULL) : NULL;
	char *hex = bn == NULL ? NULL : BN_is_zero(bn) ? OPENSSL_strdup("0") : BN_bn2hex(bn);
	char *out = p11i_strdup(hex);

	for (char *p = out; p && *p; p++)
		*p = (char)tolower((unsigned char)*p);
	OPENSSL_free(hex);
	BN_free(bn);
	return out;
}

char *p11i_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

char *p11i_strndup(const char *s, size_t n)
{
	return s ? strndup(s, n) : NULL;
}

char *p11i_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *out = NULL;

	va_start(ap, fmt);
	if (vasprintf(&out, fmt, ap) < 0)
		out = NULL;
	va_end(ap);
	return out;
}

static int digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return 0;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 1;
}

p11s_rc p11s_time_parse(const char *text, time_t *out, p11s_error *err)
{
	int y, mo, d, h = 0, mi = 0, s = 0, off = 0;
	const char *p = text;
	char gt[64];
	ASN1_TIME *at;
	struct tm tm;

	if (text == NULL)
		goto bad;
	if (!digits(p, 4, &y) || p[4] != '-' || !digits(p + 5, 2, &mo) || p[7] != '-' ||
	    !digits(p + 8, 2, &d))
		goto bad;
	p += 10;
	if (*p != '\0') {
		if ((*p != 'T' && *p != 't' && *p != ' ') || !digits(p + 1, 2, &h) || p[3] != ':' ||
		    !digits(p + 4, 2, &mi) || p[6] != ':' || !digits(p + 7, 2, &s))
			goto bad;
		p += 9;
		if (*p == '.') {
			p++;
			if (!isdigit((unsigned char)*p))
				goto bad;
			while (isdigit((unsigned char)*p))
				p++;
		}
		if (*p == 'Z' || *p == 'z') {
			p++;
		} else if (*p == '+' || *p == '-') {
			int oh, om;

			if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) ||
			    oh > 23 || om > 59)
				goto bad;
			off = (oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
			p += 6;
		} else {
			/* A time without a zone is ambiguous: RFC 3339 requires one. */
			goto bad;
		}
		if (*p != '\0')
			goto bad;
	}
	/* Let OpenSSL check the calendar (month lengths, leap years). */
	if (h > 23 || mi > 59 || s > 60)
		goto bad;
	snprintf(gt, sizeof(gt), "%04d%02d%02d%02d%02d%02dZ", y, mo, d, h, mi, s > 59 ? 59 : s);
	at = ASN1_TIME_new();
	if (at == NULL)
		return p11i_err_nomem(err);
	if (!ASN1_TIME_set_string_X509(at, gt) || !ASN1_TIME_to_tm(at, &tm)) {
		ASN1_TIME_free(at);
		goto bad;
	}
	ASN1_TIME_free(at);
	*out = timegm(&tm) - off;
	return P11S_OK;
bad:
	return p11i_err(
	    err, P11S_E_BAD_TIME,
	    "'%s' is not an RFC 3339 time (2026-11-28T00:00:00Z) or a date (2026-11-28)",
	    text ? text : "(null)");
}

char *p11s_time_format(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
		if (len > 0)
			buf[0] = '\0';
	}
	return buf;
}

/*
 * A library context holding only the null provider: it has no decoders,
 * so a certificate parsed in it keeps its public key undecoded (OpenSSL
 * decodes it opportunistically and goes on when that fails).  Made once,
 * kept for the life of the process.
 */
static CRYPTO_ONCE light_once = CRYPTO_ONCE_STATIC_INIT;
static OSSL_LIB_CTX *light_libctx;

static void light_init(void)
{
	OSSL_LIB_CTX *lc = OSSL_LIB_CTX_new();

	/* Loading a provider explicitly also keeps the default one from loading itself. */
	if (lc != NULL && OSSL_PROVIDER_load(lc, "null") == NULL) {
		OSSL_LIB_CTX_free(lc);
		lc = NULL;
	}
	light_libctx = lc;
}

X509 *p11i_x509_parse_light(const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	X509 *x = NULL;

	if (der == NULL || len == 0 || len > LONG_MAX)
		return NULL;
	if (CRYPTO_THREAD_run_once(&light_once, light_init) && light_libctx != NULL) {
		/* The documented way to give d2i a library context; on failure d2i frees x. */
		x = X509_new_ex(light_libctx, NULL);
		if (x != NULL)
			return d2i_X509(&x, &p, (long)len);
	}
	/* No such context: the full parse is slower, not wrong. */
	return d2i_X509(NULL, &p, (long)len);
}

const char *p11i_curve_name(int nid)
{
	const char *nist = nid != NID_undef ? EC_curve_nid2nist(nid) : NULL;

	return nist ? nist : nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
}

p11s_key_type p11i_pkey_facts(EVP_PKEY *pk, int *bits, const char **curve)
{
	char group[80];
	int nid;

	*bits = 0;
	*curve = NULL;
	if (pk == NULL)
		return P11S_KEY_OTHER;
	*bits = EVP_PKEY_get_bits(pk) > 0 ? EVP_PKEY_get_bits(pk) : 0;
	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_RSA:
	case EVP_PKEY_RSA_PSS:
		return P11S_KEY_RSA;
	case EVP_PKEY_EC:
		if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
		                                   sizeof(group), NULL)) {
			nid = OBJ_sn2nid(group);
			*curve = p11i_curve_name(nid != NID_undef ? nid : OBJ_ln2nid(group));
		}
		ERR_clear_error();
		return P11S_KEY_EC;
	case EVP_PKEY_ED25519:
	case EVP_PKEY_ED448:
		return P11S_KEY_EC_EDWARDS;
	case EVP_PKEY_X25519:
	case EVP_PKEY_X448:
		return P11S_KEY_EC_MONTGOMERY;
	case EVP_PKEY_DSA:
		return P11S_KEY_DSA;
	case EVP_PKEY_DH:
	case EVP_PKEY_DHX:
		return P11S_KEY_DH;
	default:
		return P11S_KEY_OTHER;
	}
}

/*
 * The spool's stdio buffer, 64 KiB: its users write and read in 64 KiB
 * blocks, and with the default 4 KiB buffer each block written became two
 * write()s.  Owned by the BIO (ex_data, freed after its fclose).
 */
#define SPOOL_BUF (64 * 1024)
static int spool_buf_index = -1;
static CRYPTO_ONCE spool_once = CRYPTO_ONCE_STATIC_INIT;

static void spool_buf_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

static void spool_index_init(void)
{
	spool_buf_index = BIO_get_ex_new_index(0, NULL, NULL, NULL, spool_buf_free);
}

BIO *p11i_spool_new(p11s_error *err)
{
	const char *dir;
	FILE *f;
	BIO *b;
	char *buf;
	int fd = p11i_tmpfile(&dir), e;

	if (fd < 0 || (f = fdopen(fd, "w+b")) == NULL) {
		e = errno;
		p11i_err(err, P11S_E_IO, "cannot make a temporary file in '%s': %s", dir,
		         strerror(e));
		if (fd >= 0)
			close(fd);
		errno = e;
		return NULL;
	}
	b = BIO_new_fp(f, BIO_CLOSE);
	if (b == NULL) {
		fclose(f);
		p11i_err_nomem(err);
		errno = ENOMEM;
		return NULL;
	}
	/* Without the larger buffer the spool works, only with more system calls. */
	buf = malloc(SPOOL_BUF);
	if (buf != NULL && CRYPTO_THREAD_run_once(&spool_once, spool_index_init) &&
	    spool_buf_index >= 0 && BIO_set_ex_data(b, spool_buf_index, buf) == 1)
		setvbuf(f, buf, _IOFBF, SPOOL_BUF);
	else
		free(buf);
	return b;
}

FILE *p11i_bio_fp(BIO *b)
{
	FILE *fp = NULL;

	if (b == NULL || BIO_method_type(b) != BIO_TYPE_FILE || BIO_get_fp(b, &fp) <= 0)
		return NULL;
	return fp;
}

void p11i_bio_free_upto(BIO *top, BIO *keep)
{
	while (top != NULL && top != keep) {
		BIO *next = BIO_pop(top);

		BIO_free(top);
		top = next;
	}
}

int p11i_vec_grow(void *arrayp, size_t *cap, size_t n, size_t more, size_t size)
{
	size_t want;
	void *v, *nv;

	/* No allocation may exceed PTRDIFF_MAX bytes (pointer differences must hold). */
	if (more > (size_t)PTRDIFF_MAX / size - n)
		return -1;
	want = *cap == 0 ? 8 : *cap <= (size_t)PTRDIFF_MAX / size / 2 ? *cap * 2 : n + more;
	if (want < n + more)
		want = n + more;
	/* The vector's T *v: read and written as bytes, whatever T is. */
	memcpy(&v, arrayp, sizeof(v));
	nv = realloc(v, want * size);
	if (nv == NULL)
		return -1;
	memcpy(arrayp, &nv, sizeof(nv));
	*cap = want;
	return 0;
}
