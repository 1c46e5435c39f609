#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/asn1t.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "cms_stream.h"
#include "common.h"
#include "offload.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <tmmintrin.h>
#define P11I_B64_SSSE3 1
#endif

/* Read size; the look-ahead buffer is this plus what a small part needs. */
#define CHUNK (64 * 1024)
/* Bound on one small part decoded whole (RecipientInfos, originatorInfo, attributes). */
#define SMALL_MAX (16u * 1024 * 1024)
/* Enough bytes for any TLV header we accept (tag up to 5 bytes, length up to 9). */
#define HDR_MAX 16
/* Nesting of constructed OCTET STRINGs (BER) and of BER TLVs we walk. */
#define DEPTH_MAX 16
/* AuthEnvelopedData ciphertext kept in memory before spooling to a file. */
#define SPOOL_MEM_MAX (1024 * 1024)

/* RFC 5084 GCMParameters, to check the MAC length against icvLen. */
typedef struct {
	ASN1_OCTET_STRING *nonce;
	ASN1_INTEGER *icvlen;
} P11I_GCM_PARAMS;

ASN1_SEQUENCE(P11I_GCM_PARAMS) =
    {
        ASN1_SIMPLE(P11I_GCM_PARAMS, nonce, ASN1_OCTET_STRING),
        ASN1_OPT(P11I_GCM_PARAMS, icvlen, ASN1_INTEGER),
} static_ASN1_SEQUENCE_END(P11I_GCM_PARAMS)

    /* A constructed TLV being read: definite ones bound what is inside. */
    struct cons {
	int indef;
	uint64_t end;         /* absolute offset after its content (definite) */
	uint64_t saved_limit; /* the enclosing limit, restored on close */
};

struct tlv {
	int tag, cls, cons, indef;
	uint64_t len;
	size_t hlen;
};

/*
 * Ciphertext of an AuthEnvelopedData, kept only in case authenticated
 * attributes follow it: they are the AAD and GCM takes the AAD first.
 */
struct spool {
	unsigned char *mem;
	size_t len;
	int fd; /* the file past SPOOL_MEM_MAX, unnamed; valid when in_file */
	int in_file;
	uint64_t total;
};

/* Base64 decoding state (our own: EVP_DecodeUpdate was 40% of a large decrypt). */
struct b64dec {
	uint32_t acc; /* sextets of the group being read */
	int n;        /* how many */
	int pad;      /* '=' seen in this group */
	int done;     /* the padded group ended the data: only whitespace may follow */
	int stopped;  /* a '-' ended the data (as EVP_DecodeUpdate does): the rest is ignored */
};

struct p11i_cms_stream {
	BIO *in;
	p11i_cms_encoding enc;
	EVP_ENCODE_CTX *b64;
	struct b64dec dec;
	int pem_done;  /* PEM: the END line was seen */
	int input_eof; /* nothing more will come from @in (decoder flushed) */
	unsigned char *raw;
	unsigned char *buf;
	size_t cap, pos, end;
	uint64_t off;   /* absolute offset of buf[pos] in the BER stream */
	uint64_t limit; /* end of the innermost definite-length TLV */

	int auth;
	struct cons ci, ex, env, eci, ecc;
	int content_cons; /* encryptedContent is a constructed [0] */
	uint64_t content_len;
	CMS_ContentInfo *cms;
	X509_ALGOR *calg;
	int had_auth_attrs;
	struct spool spool;
};

#define B64_BAD  0x80
#define B64_WS   0x81
#define B64_PAD  0x82
#define B64_STOP 0x83

static unsigned char b64_table[256];
static int b64_simd; /* the CPU has SSSE3 */
static CRYPTO_ONCE b64_once = CRYPTO_ONCE_STATIC_INIT;

static void b64_table_init(void)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	memset(b64_table, B64_BAD, sizeof(b64_table));
	for (int i = 0; i < 64; i++)
		b64_table[(unsigned char)a[i]] = (unsigned char)i;
	b64_table[' '] = b64_table['\t'] = b64_table['\r'] = b64_table['\n'] = B64_WS;
	b64_table['='] = B64_PAD;
	b64_table['-'] = B64_STOP;
#ifdef P11I_B64_SSSE3
	b64_simd = __builtin_cpu_supports("ssse3");
#endif
}

#ifdef P11I_B64_SSSE3
/*
 * Alphabet characters sixteen at a time to twelve bytes each (W. Mula and
 * D. Lemire's method, as in A. Klomp's base64 library), up to the first
 * group of sixteen that holds anything else: padding, a line end, a bad
 * byte are left to the table decoder.  Returns the characters consumed (a
 * multiple of 16; the output is 3/4 of it, exactly).
 */
__attribute__((target("ssse3"))) static size_t b64_dec_simd(const unsigned char *src, size_t n,
                                                            unsigned char *dst)
{
	const __m128i nib = _mm_set1_epi8(0x0f), slash = _mm_set1_epi8('/');
	/* A bit per nibble class: a character is out of the alphabet when its two share one. */
	const __m128i lut_lo = _mm_setr_epi8(0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
	                                     0x11, 0x13, 0x1a, 0x1b, 0x1b, 0x1b, 0x1a);
	const __m128i lut_hi = _mm_setr_epi8(0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10,
	                                     0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10);
	/* What to add to a character of each high nibble ('/' apart) to get its sextet. */
	const __m128i lut_roll =
	    _mm_setr_epi8(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
	const __m128i order = _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
	size_t i = 0;

	/* Each round consumes 16 or stops. */
	while (i + 16 <= n) {
		const __m128i in = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
		const __m128i hi_n = _mm_and_si128(_mm_srli_epi32(in, 4), nib);
		const __m128i lo_n = _mm_and_si128(in, nib);
		__m128i bad, roll, merged, packed, out;
		uint32_t tail;

		bad = _mm_and_si128(_mm_shuffle_epi8(lut_lo, lo_n), _mm_shuffle_epi8(lut_hi, hi_n));
		if (_mm_movemask_epi8(_mm_cmpgt_epi8(bad, _mm_setzero_si128())) != 0)
			break;
		roll = _mm_shuffle_epi8(lut_roll, _mm_add_epi8(_mm_cmpeq_epi8(in, slash), hi_n));
		/* Sextet pairs to 12-bit fields, field pairs to 24 bits, then the bytes in order.
		 */
		merged = _mm_maddubs_epi16(_mm_add_epi8(in, roll), _mm_set1_epi32(0x01400140));
		packed = _mm_madd_epi16(merged, _mm_set1_epi32(0x00011000));
		out = _mm_shuffle_epi8(packed, order);
		_mm_storel_epi64((__m128i *)(void *)dst, out);
		tail = (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(out, 8));
		memcpy(dst + 8, &tail, 4);
		dst += 12;
		i += 16;
	}
	return i;
}
#endif

/* Decode @p n characters into @p out (room for n / 4 * 3 + 3); the length, or -1. */
static long b64_update(struct b64dec *d, unsigned char *out, const unsigned char *in, size_t n)
{
	const unsigned char *t = b64_table;
	size_t i = 0;
	long o = 0;
	unsigned v;

	if (d->stopped)
		return 0;
	for (;;) {
		/* Whole groups between line ends: four lookups, three bytes. */
		if (d->n == 0 && !d->pad && !d->done) {
#ifdef P11I_B64_SSSE3
			/* Twelve bytes for sixteen characters, exactly: within the room promised.
			 */
			if (b64_simd) {
				size_t k = b64_dec_simd(in + i, n - i, out + o);

				i += k;
				o += (long)(k / 4 * 3);
			}
#endif
			while (i + 4 <= n) {
				unsigned a = t[in[i]], b = t[in[i + 1]], c = t[in[i + 2]],
				         e = t[in[i + 3]];

				if ((a | b | c | e) & 0x80)
					break;
				out[o] = (unsigned char)(a << 2 | b >> 4);
				out[o + 1] = (unsigned char)(b << 4 | c >> 2);
				out[o + 2] = (unsigned char)(c << 6 | e);
				o += 3;
				i += 4;
			}
		}
		if (i >= n)
			return o;
		v = t[in[i++]];
		if (v < 64) {
			if (d->pad || d->done)
				return -1;
			d->acc = d->acc << 6 | v;
			if (++d->n == 4) {
				out[o++] = (unsigned char)(d->acc >> 16);
				out[o++] = (unsigned char)(d->acc >> 8);
				out[o++] = (unsigned char)d->acc;
				d->n = 0;
				d->acc = 0;
			}
		} else if (v == B64_WS) {
			continue;
		} else if (v == B64_PAD) {
			if (d->done || d->n < 2)
				return -1;
			if (d->n + ++d->pad == 4) {
				d->acc <<= 6 * d->pad;
				out[o++] = (unsigned char)(d->acc >> 16);
				if (d->n == 3)
					out[o++] = (unsigned char)(d->acc >> 8);
				d->n = d->pad = 0;
				d->acc = 0;
				d->done = 1;
			}
		} else if (v == B64_STOP) {
			d->stopped = 1;
			return d->pad ? -1 : o;
		} else {
			return -1;
		}
	}
}

/* The end: a group left unfinished means the data was cut. */
static int b64_final(const struct b64dec *d)
{
	return d->n == 0 && d->pad == 0 ? 0 : -1;
}

static p11s_rc malformed(p11s_error *err, const char *what)
{
	return p11i_err(err, P11S_E_INPUT, "malformed CMS message: %s", what);
}

static p11s_rc truncated(p11s_error *err)
{
	return p11i_err(err, P11S_E_INPUT, "the CMS message is truncated");
}

p11s_rc p11i_cms_stream_new(BIO *in, p11i_cms_encoding enc, p11i_cms_stream **out, p11s_error *err)
{
	p11i_cms_stream *s;

	if (!CRYPTO_THREAD_run_once(&b64_once, b64_table_init))
		return p11i_err(err, P11S_E_INTERNAL, "cannot set up base64 decoding");
	s = calloc(1, sizeof(*s));

	if (s == NULL)
		return p11i_err_nomem(err);
	s->in = in;
	s->enc = enc;
	s->limit = UINT64_MAX;
	s->cap = 2 * CHUNK;
	s->buf = malloc(s->cap);
	if (enc != P11I_CMS_DER) {
		s->raw = malloc(CHUNK);
		s->b64 = EVP_ENCODE_CTX_new();
		if (s->b64 != NULL)
			EVP_DecodeInit(s->b64);
	}
	if (s->buf == NULL || (enc != P11I_CMS_DER && (s->raw == NULL || s->b64 == NULL))) {
		p11i_cms_stream_free(s);
		return p11i_err_nomem(err);
	}
	*out = s;
	return P11S_OK;
}

void p11i_cms_stream_free(p11i_cms_stream *s)
{
	if (s == NULL)
		return;
	EVP_ENCODE_CTX_free(s->b64);
	free(s->raw);
	free(s->buf);
	CMS_ContentInfo_free(s->cms);
	X509_ALGOR_free(s->calg);
	OPENSSL_free(s->spool.mem);
	if (s->spool.in_file)
		close(s->spool.fd);
	free(s);
}

int p11i_cms_stream_is_auth(const p11i_cms_stream *s)
{
	return s->auth;
}

const X509_ALGOR *p11i_cms_stream_content_alg(const p11i_cms_stream *s)
{
	return s->calg;
}

int p11i_cms_stream_had_auth_attrs(const p11i_cms_stream *s)
{
	return s->had_auth_attrs;
}

/* ------------------------------------------------------------ input */

/* PEM: skip to the line after "-----BEGIN CMS-----" (or PKCS7). */
static p11s_rc pem_skip_to_begin(p11i_cms_stream *s, p11s_error *err)
{
	char line[256];
	int n;

	for (;;) {
		n = BIO_gets(s->in, line, sizeof(line));
		if (n <= 0)
			return p11i_err(err, P11S_E_INPUT,
			                "no '-----BEGIN CMS-----' line in the PEM input");
		if (strncmp(line, "-----BEGIN ", 11) != 0)
			continue;
		/* gpgsm --armor says ENCRYPTED MESSAGE. */
		if (strncmp(line + 11, "CMS-----", 8) == 0 ||
		    strncmp(line + 11, "PKCS7-----", 10) == 0 ||
		    strncmp(line + 11, "ENCRYPTED MESSAGE-----", 22) == 0)
			return P11S_OK;
		line[strcspn(line, "\r\n")] = '\0';
		return p11i_err(err, P11S_E_INPUT, "PEM input holds '%s', not CMS", line);
	}
}

/* Append decoded bytes to buf (which has room for CHUNK more). */
static p11s_rc read_more(p11i_cms_stream *s, p11s_error *err)
{
	int n;
	long outl = 0;
	size_t take;
	unsigned char *dash;

	if (s->enc == P11I_CMS_DER) {
		n = BIO_read(s->in, s->buf + s->end, CHUNK);
		if (n > 0) {
			s->end += (size_t)n;
			return P11S_OK;
		}
		if (n < 0 && !BIO_should_retry(s->in))
			return p11i_err_ossl(err, P11S_E_IO, "cannot read the input");
		s->input_eof = 1;
		return P11S_OK;
	}
	if (s->pem_done)
		n = 0;
	else
		n = BIO_read(s->in, s->raw, CHUNK / 4 * 3 - 128);
	if (n < 0 && !BIO_should_retry(s->in))
		return p11i_err_ossl(err, P11S_E_IO, "cannot read the input");
	if (n > 0) {
		take = (size_t)n;
		if (s->enc == P11I_CMS_PEM) {
			/* The body is pure base64; the first '-' starts the END line. */
			dash = memchr(s->raw, '-', take);
			if (dash != NULL) {
				take = (size_t)(dash - s->raw);
				s->pem_done = 1;
			}
		}
		if (take > 0 && (outl = b64_update(&s->dec, s->buf + s->end, s->raw, take)) < 0)
			return p11i_err(
			    err, P11S_E_INPUT,
			    "the message body is not valid base64 (near byte %llu of the "
			    "decoded CMS)",
			    (unsigned long long)(s->off + (s->end - s->pos)));
		s->end += (size_t)outl;
		if (!s->pem_done)
			return P11S_OK;
	} else if (s->enc == P11I_CMS_PEM && !s->pem_done) {
		return p11i_err(err, P11S_E_INPUT, "the PEM input ends without its END line");
	}
	if (b64_final(&s->dec) < 0)
		return p11i_err(err, P11S_E_INPUT, "the base64 body is truncated");
	s->input_eof = 1;
	return P11S_OK;
}

/*
 * Make @p want bytes available at buf[pos].  *got (may be NULL) is set to
 * 1 when they are, 0 when the input ended first.
 */
static p11s_rc fill(p11i_cms_stream *s, size_t want, int *got, p11s_error *err)
{
	p11s_rc rc;
	unsigned char *nb;
	size_t need;

	while (s->end - s->pos < want) {
		if (s->input_eof) {
			if (got != NULL)
				*got = 0;
			return P11S_OK;
		}
		if (s->pos > 0 && s->cap - s->end < CHUNK) {
			memmove(s->buf, s->buf + s->pos, s->end - s->pos);
			s->end -= s->pos;
			s->pos = 0;
		}
		need = (want > s->end ? want : s->end) + CHUNK;
		if (s->cap < need) {
			nb = realloc(s->buf, need);
			if (nb == NULL)
				return p11i_err_nomem(err);
			s->buf = nb;
			s->cap = need;
		}
		rc = read_more(s, err);
		if (rc != P11S_OK)
			return rc;
	}
	if (got != NULL)
		*got = 1;
	return P11S_OK;
}

static void advance(p11i_cms_stream *s, size_t n)
{
	s->pos += n;
	s->off += n;
	if (s->pos == s->end)
		s->pos = s->end = 0;
}

/* ------------------------------------------------------------- BER */

/*
 * Parse the TLV header at @p p (@p avail bytes).  1 ok, 0 incomplete,
 * -1 malformed.  The content need not be available.
 */
static int parse_header(const unsigned char *p, size_t avail, struct tlv *t)
{
	const unsigned char *q = p;
	long len;
	int tag, cls, ret;
	unsigned long e;

	if (avail == 0)
		return 0;
	if (avail > LONG_MAX)
		avail = LONG_MAX;
	ERR_set_mark();
	ret = ASN1_get_object(&q, &len, &tag, &cls, (long)avail);
	if (ret & 0x80) {
		/* ASN1_R_TOO_LONG only says the content is not all here. */
		e = ERR_peek_last_error();
		if (ERR_GET_LIB(e) != ERR_LIB_ASN1 || ERR_GET_REASON(e) != ASN1_R_TOO_LONG) {
			ERR_pop_to_mark();
			return avail < HDR_MAX ? 0 : -1;
		}
	}
	ERR_pop_to_mark();
	if (len < 0)
		return -1;
	t->tag = tag;
	t->cls = cls;
	t->cons = (ret & V_ASN1_CONSTRUCTED) != 0;
	t->indef = (ret & 0x01) != 0;
	t->len = t->indef ? 0 : (uint64_t)len;
	t->hlen = (size_t)(q - p);
	return 1;
}

/* Total length of the BER element at @p p, all of which must be in @p avail. */
static int ber_len(const unsigned char *p, size_t avail, size_t *total, int depth)
{
	struct tlv t;
	size_t at, sub;
	int r;

	if (depth > DEPTH_MAX)
		return -1;
	r = parse_header(p, avail, &t);
	if (r <= 0)
		return r;
	if (!t.indef) {
		if (t.len > avail - t.hlen)
			return 0;
		*total = t.hlen + (size_t)t.len;
		return 1;
	}
	at = t.hlen;
	for (;;) {
		if (avail - at < 2)
			return 0;
		if (p[at] == 0 && p[at + 1] == 0) {
			*total = at + 2;
			return 1;
		}
		r = ber_len(p + at, avail - at, &sub, depth + 1);
		if (r <= 0)
			return r;
		at += sub;
	}
}

/* Peek at the next TLV header; it must lie within the current limit. */
static p11s_rc peek(p11i_cms_stream *s, struct tlv *t, p11s_error *err)
{
	p11s_rc rc;
	int r;

	rc = fill(s, HDR_MAX, NULL, err);
	if (rc != P11S_OK)
		return rc;
	r = parse_header(s->buf + s->pos, s->end - s->pos, t);
	if (r == 0)
		return truncated(err);
	if (r < 0)
		return malformed(err, "a bad TLV header");
	if (s->off + t->hlen > s->limit || (!t->indef && t->len > s->limit - s->off - t->hlen))
		return malformed(err, "an element runs past the end of its container");
	return P11S_OK;
}

/* The next two bytes are an end-of-contents marker. */
static p11s_rc at_eoc(p11i_cms_stream *s, int *yes, p11s_error *err)
{
	int got;
	p11s_rc rc = fill(s, 2, &got, err);

	if (rc != P11S_OK)
		return rc;
	if (!got)
		return truncated(err);
	*yes = s->buf[s->pos] == 0 && s->buf[s->pos + 1] == 0;
	return P11S_OK;
}

/* At the end of constructed @p c: definite, its end is reached; indefinite, an EOC follows. */
static p11s_rc at_end(p11i_cms_stream *s, const struct cons *c, int *yes, p11s_error *err)
{
	if (!c->indef) {
		*yes = s->off >= c->end;
		return P11S_OK;
	}
	return at_eoc(s, yes, err);
}

static p11s_rc open_cons(p11i_cms_stream *s, int cls, int tag, struct cons *c, const char *what,
                         p11s_error *err)
{
	struct tlv t;
	p11s_rc rc = peek(s, &t, err);

	if (rc != P11S_OK)
		return rc;
	if (t.cls != cls || t.tag != tag || !t.cons)
		return p11i_err(err, P11S_E_INPUT, "malformed CMS message: expected %s", what);
	advance(s, t.hlen);
	c->indef = t.indef;
	c->saved_limit = s->limit;
	if (!t.indef) {
		c->end = s->off + t.len;
		s->limit = c->end;
	}
	return P11S_OK;
}

static p11s_rc close_cons(p11i_cms_stream *s, struct cons *c, const char *what, p11s_error *err)
{
	int eoc = 0;
	p11s_rc rc;

	if (!c->indef) {
		if (s->off != c->end)
			return p11i_err(err, P11S_E_INPUT,
			                "malformed CMS message: unexpected data at the end of %s",
			                what);
	} else {
		rc = at_eoc(s, &eoc, err);
		if (rc != P11S_OK)
			return rc;
		if (!eoc)
			return p11i_err(err, P11S_E_INPUT,
			                "malformed CMS message: unexpected data at the end of %s",
			                what);
		advance(s, 2);
	}
	s->limit = c->saved_limit;
	return P11S_OK;
}

/*
 * Read the whole next element (which must have class @p cls and tag
 * @p tag; -1 for any) into a fresh copy (OPENSSL_free).
 */
static p11s_rc read_element(p11i_cms_stream *s, int cls, int tag, const char *what,
                            unsigned char **der, size_t *len, p11s_error *err)
{
	struct tlv t;
	size_t total = 0, want;
	int got, r;
	p11s_rc rc = peek(s, &t, err);

	if (rc != P11S_OK)
		return rc;
	if ((cls >= 0 && t.cls != cls) || (tag >= 0 && t.tag != tag))
		return p11i_err(err, P11S_E_INPUT, "malformed CMS message: expected %s", what);
	if (!t.indef) {
		if (t.len > SMALL_MAX)
			return p11i_err(err, P11S_E_INPUT, "the %s in this message is too large",
			                what);
		total = t.hlen + (size_t)t.len;
		rc = fill(s, total, &got, err);
		if (rc != P11S_OK)
			return rc;
		if (!got)
			return truncated(err);
	} else {
		for (;;) {
			r = ber_len(s->buf + s->pos, s->end - s->pos, &total, 0);
			if (r > 0)
				break;
			if (r < 0)
				return p11i_err(err, P11S_E_INPUT,
				                "malformed CMS message: %s is not valid BER", what);
			if (s->end - s->pos > SMALL_MAX)
				return p11i_err(err, P11S_E_INPUT,
				                "the %s in this message is too large", what);
			/* Geometric growth: each retry walks the element from its start. */
			want = 2 * (s->end - s->pos) + 4096;
			rc = fill(s, want > SMALL_MAX + 4096 ? SMALL_MAX + 4096 : want, &got, err);
			if (rc != P11S_OK)
				return rc;
			if (!got && s->input_eof) {
				r = ber_len(s->buf + s->pos, s->end - s->pos, &total, 0);
				if (r > 0)
					break;
				return r < 0
				           ? p11i_err(err, P11S_E_INPUT,
				                      "malformed CMS message: %s is not valid BER",
				                      what)
				           : truncated(err);
			}
		}
		if (s->off + total > s->limit)
			return malformed(err, "an element runs past the end of its container");
	}
	*der = OPENSSL_memdup(s->buf + s->pos, total);
	if (*der == NULL)
		return p11i_err_nomem(err);
	*len = total;
	advance(s, total);
	return P11S_OK;
}

static int gcm_icv_len(const X509_ALGOR *alg, long *icv);

/* ------------------------------------------------------ building DER */

struct dbuf {
	unsigned char *p;
	size_t len, cap;
	int failed;
};

static void db_put(struct dbuf *d, const void *src, size_t n)
{
	unsigned char *np;
	size_t ncap;

	if (d->failed)
		return;
	if (d->len + n > d->cap) {
		ncap = (d->len + n) * 2 + 64;
		np = OPENSSL_realloc(d->p, ncap);
		if (np == NULL) {
			d->failed = 1;
			return;
		}
		d->p = np;
		d->cap = ncap;
	}
	memcpy(d->p + d->len, src, n);
	d->len += n;
}

/* A definite-length header (tag byte @p id, single-byte tags only). */
static void db_header(struct dbuf *d, unsigned char id, size_t len)
{
	unsigned char h[10];
	size_t n = 0, l = len;
	int bytes = 0;

	h[n++] = id;
	if (len < 0x80) {
		h[n++] = (unsigned char)len;
	} else {
		while (l > 0) {
			bytes++;
			l >>= 8;
		}
		h[n++] = (unsigned char)(0x80 | bytes);
		for (int i = bytes - 1; i >= 0; i--)
			h[n++] = (unsigned char)(len >> (8 * i));
	}
	db_put(d, h, n);
}

struct part {
	unsigned char *der;
	size_t len;
};

static size_t hdr_size(size_t len)
{
	size_t n = 2;

	if (len >= 0x80)
		for (; len > 0; len >>= 8)
			n++;
	return n;
}

/*
 * ContentInfo { oid, [0] { SEQUENCE { parts... } } }: definite lengths
 * around the parts as read (which may themselves be BER).
 */
static p11s_rc build_small(p11i_cms_stream *s, const struct part *oid, const struct part *parts,
                           size_t nparts, const struct part *eci_parts, size_t neci,
                           p11s_error *err)
{
	struct dbuf d = {0};
	size_t eci_len = 0, env_len, ex_len, ci_len;
	const unsigned char *p;
	unsigned char mac[2 + 16] = {0x04, 16};
	long icv = 16;

	for (size_t i = 0; i < neci; i++)
		eci_len += eci_parts[i].len;
	env_len = hdr_size(eci_len) + eci_len;
	for (size_t i = 0; i < nparts; i++)
		env_len += parts[i].len;
	/*
	 * The MAC comes after the content: a placeholder of the right size
	 * now (OpenSSL sets it on the cipher), the real one once read.
	 */
	if (s->auth && gcm_icv_len(s->calg, &icv) && icv >= 12 && icv <= 16)
		mac[1] = (unsigned char)icv;
	if (s->auth)
		env_len += 2 + mac[1];
	ex_len = hdr_size(env_len) + env_len;
	ci_len = oid->len + hdr_size(ex_len) + ex_len;

	db_header(&d, 0x30, ci_len);
	db_put(&d, oid->der, oid->len);
	db_header(&d, 0xa0, ex_len);
	db_header(&d, 0x30, env_len);
	for (size_t i = 0; i < nparts; i++)
		db_put(&d, parts[i].der, parts[i].len);
	db_header(&d, 0x30, eci_len);
	for (size_t i = 0; i < neci; i++)
		db_put(&d, eci_parts[i].der, eci_parts[i].len);
	if (s->auth)
		db_put(&d, mac, 2 + mac[1]);
	if (d.failed) {
		OPENSSL_free(d.p);
		return p11i_err_nomem(err);
	}
	p = d.p;
	s->cms = d2i_CMS_ContentInfo(NULL, &p, (long)d.len);
	OPENSSL_free(d.p);
	if (s->cms == NULL)
		return p11i_err_ossl(
		    err, P11S_E_INPUT,
		    "malformed CMS message: the recipient information does not parse");
	return P11S_OK;
}

/* ------------------------------------------------------------ header */

p11s_rc p11i_cms_stream_begin(p11i_cms_stream *s, CMS_ContentInfo **cms, p11s_error *err)
{
	struct part oid = {0}, parts[3] = {{0}}, eci[2] = {{0}};
	size_t nparts = 0;
	struct tlv t;
	ASN1_OBJECT *obj = NULL;
	const unsigned char *p;
	int nid, got;
	p11s_rc rc;

	if (s->enc == P11I_CMS_PEM) {
		rc = pem_skip_to_begin(s, err);
		if (rc != P11S_OK)
			return rc;
	}
	rc = fill(s, 1, &got, err);
	if (rc != P11S_OK)
		return rc;
	if (!got)
		return p11i_err(err, P11S_E_INPUT, "the CMS message is empty");
	if (s->buf[s->pos] != 0x30)
		return p11i_err(err, P11S_E_INPUT,
		                "the input is not a CMS message (no ContentInfo)");

	rc = open_cons(s, V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE, &s->ci, "a ContentInfo", err);
	if (rc == P11S_OK)
		rc = read_element(s, V_ASN1_UNIVERSAL, V_ASN1_OBJECT, "the content type", &oid.der,
		                  &oid.len, err);
	if (rc != P11S_OK)
		goto done;
	p = oid.der;
	obj = d2i_ASN1_OBJECT(NULL, &p, (long)oid.len);
	nid = obj ? OBJ_obj2nid(obj) : NID_undef;
	ASN1_OBJECT_free(obj);
	if (nid == NID_id_smime_ct_authEnvelopedData) {
		s->auth = 1;
	} else if (nid != NID_pkcs7_enveloped) {
		rc = p11i_err(err, P11S_E_INPUT,
		              "the message is not encrypted: its CMS content is %s",
		              nid == NID_pkcs7_signed                 ? "signed-data"
		              : nid == NID_id_smime_ct_compressedData ? "compressed-data"
		              : nid == NID_pkcs7_data                 ? "plain data"
		              : nid == NID_pkcs7_encrypted ? "encrypted-data (password based)"
		                                           : "of an unknown type");
		goto done;
	}
	rc = open_cons(s, V_ASN1_CONTEXT_SPECIFIC, 0, &s->ex, "the [0] content", err);
	if (rc == P11S_OK)
		rc = open_cons(s, V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE, &s->env,
		               s->auth ? "an AuthEnvelopedData" : "an EnvelopedData", err);
	if (rc == P11S_OK)
		rc = read_element(s, V_ASN1_UNIVERSAL, V_ASN1_INTEGER, "the version",
		                  &parts[nparts].der, &parts[nparts].len, err);
	if (rc != P11S_OK)
		goto done;
	nparts++;
	rc = peek(s, &t, err);
	if (rc != P11S_OK)
		goto done;
	if (t.cls == V_ASN1_CONTEXT_SPECIFIC && t.tag == 0) {
		rc = read_element(s, -1, -1, "originator information", &parts[nparts].der,
		                  &parts[nparts].len, err);
		if (rc != P11S_OK)
			goto done;
		nparts++;
	}
	rc = read_element(s, V_ASN1_UNIVERSAL, V_ASN1_SET, "the recipient information",
	                  &parts[nparts].der, &parts[nparts].len, err);
	if (rc != P11S_OK)
		goto done;
	nparts++;
	rc = open_cons(s, V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE, &s->eci, "an EncryptedContentInfo",
	               err);
	if (rc == P11S_OK)
		rc = read_element(s, V_ASN1_UNIVERSAL, V_ASN1_OBJECT, "the encrypted content type",
		                  &eci[0].der, &eci[0].len, err);
	if (rc == P11S_OK)
		rc =
		    read_element(s, V_ASN1_UNIVERSAL, V_ASN1_SEQUENCE,
		                 "the content-encryption algorithm", &eci[1].der, &eci[1].len, err);
	if (rc != P11S_OK)
		goto done;
	p = eci[1].der;
	s->calg = d2i_X509_ALGOR(NULL, &p, (long)eci[1].len);
	if (s->calg == NULL) {
		rc = malformed(err, "a bad content-encryption algorithm");
		goto done;
	}

	/* The encrypted content: [0] IMPLICIT OCTET STRING, primitive or constructed. */
	int end = 0;
	rc = at_end(s, &s->eci, &end, err);
	if (rc != P11S_OK)
		goto done;
	if (end) {
		rc = p11i_err(err, P11S_E_INPUT,
		              "the message carries no encrypted content (detached content is not "
		              "supported)");
		goto done;
	}
	rc = peek(s, &t, err);
	if (rc != P11S_OK)
		goto done;
	if (t.cls != V_ASN1_CONTEXT_SPECIFIC || t.tag != 0) {
		rc = malformed(err, "expected the encrypted content");
		goto done;
	}
	if (t.cons) {
		s->content_cons = 1;
		rc =
		    open_cons(s, V_ASN1_CONTEXT_SPECIFIC, 0, &s->ecc, "the encrypted content", err);
		if (rc != P11S_OK)
			goto done;
	} else {
		s->content_len = t.len;
		advance(s, t.hlen);
	}
	rc = build_small(s, &oid, parts, nparts, eci, 2, err);
	if (rc == P11S_OK)
		*cms = s->cms;
done:
	OPENSSL_free(oid.der);
	for (size_t i = 0; i < 3; i++)
		OPENSSL_free(parts[i].der);
	for (size_t i = 0; i < 2; i++)
		OPENSSL_free(eci[i].der);
	return rc;
}

/* ----------------------------------------------------------- content */

static p11s_rc spool_write(struct spool *sp, const unsigned char *p, size_t n, p11s_error *err)
{
	const char *dir = NULL;
	unsigned char *nm;

	sp->total += n;
	if (!sp->in_file && sp->len + n <= SPOOL_MEM_MAX) {
		nm = OPENSSL_realloc(sp->mem, sp->len + n);
		if (nm == NULL)
			return p11i_err_nomem(err);
		sp->mem = nm;
		memcpy(sp->mem + sp->len, p, n);
		sp->len += n;
		return P11S_OK;
	}
	if (!sp->in_file) {
		sp->fd = p11i_tmpfile(&dir);
		if (sp->fd < 0)
			return p11i_err(err, P11S_E_IO,
			                "cannot create a temporary file in '%s': %s", dir,
			                strerror(errno));
		sp->in_file = 1;
		if (sp->len > 0 && p11i_write_full(sp->fd, sp->mem, sp->len) != 0)
			goto ioerr;
		OPENSSL_free(sp->mem);
		sp->mem = NULL;
		sp->len = 0;
	}
	if (p11i_write_full(sp->fd, p, n) != 0)
		goto ioerr;
	return P11S_OK;
ioerr:
	/* A write error, not a bad message: the tag is never checked on a short spool. */
	dir = getenv("TMPDIR");
	return p11i_err(err, P11S_E_IO, "cannot write a temporary file in '%s': %s",
	                dir && *dir ? dir : "/tmp", strerror(errno));
}

struct feed {
	p11i_cms_stream *s;
	EVP_CIPHER_CTX *ctx;
	p11i_cms_sink sink; /* NULL: the plaintext is not wanted (a second pass) */
	void *user;
	unsigned char *out;
	int spool;         /* keep the ciphertext (AuthEnvelopedData, input read once) */
	EVP_MAC_CTX *gmac; /* fingerprint the ciphertext (AuthEnvelopedData, input re-readable) */
	/*
	 * NULL, or the stage that runs feed_now() on a helper thread for a
	 * large content (src/offload.h): the cipher and what follows it (the
	 * spool, the sink) beside the reading and the base64.  Its consumer
	 * owns ctx, out, gmac, the spool and the sink until synced; its errors
	 * go to werr, copied to the caller's.
	 */
	p11i_offload *q;
	p11s_error *werr;
};

static p11s_rc feed_now(struct feed *f, const unsigned char *p, size_t n, p11s_error *err)
{
	int outl;
	size_t piece;
	p11s_rc rc;

	while (n > 0) {
		piece = n > CHUNK ? CHUNK : n;
		if (f->spool) {
			rc = spool_write(&f->s->spool, p, piece, err);
			if (rc != P11S_OK)
				return rc;
		}
		if (f->gmac != NULL && !EVP_MAC_update(f->gmac, p, piece))
			return p11i_err_ossl(err, P11S_E_CRYPTO, "cannot fingerprint the content");
		if (!EVP_DecryptUpdate(f->ctx, f->out, &outl, p, (int)piece))
			return p11i_err_ossl(err, P11S_E_DECRYPT, "content decryption failed");
		if (outl > 0 && f->sink != NULL && f->sink(f->user, f->out, (size_t)outl) != 0)
			return p11i_err(err, P11S_E_IO, "cannot write the decrypted content");
		p += piece;
		n -= piece;
	}
	return P11S_OK;
}

static int feed_stage(void *arg, const unsigned char *p, size_t n)
{
	struct feed *f = arg;

	return feed_now(f, p, n, f->werr) != P11S_OK;
}

/* The stage's error, as the caller's. */
static p11s_rc stage_failed(struct feed *f, p11s_error *err)
{
	p11s_rc rc = p11s_error_rc(f->werr);

	if (rc == P11S_OK)
		return p11i_err(err, P11S_E_INTERNAL, "content decryption stopped");
	return p11i_err(err, rc, "%s", p11s_error_message(f->werr));
}

static p11s_rc feed(struct feed *f, const unsigned char *p, size_t n, p11s_error *err)
{
	if (f->q == NULL)
		return feed_now(f, p, n, err);
	return p11i_offload_put(f->q, p, n) == 0 ? P11S_OK : stage_failed(f, err);
}

/* Stream @p len bytes of content from the input through the cipher. */
static p11s_rc stream_bytes(struct feed *f, uint64_t len, p11s_error *err)
{
	p11i_cms_stream *s = f->s;
	size_t n;
	int got;
	p11s_rc rc;

	while (len > 0) {
		rc = fill(s, 1, &got, err);
		if (rc != P11S_OK)
			return rc;
		if (!got)
			return truncated(err);
		n = s->end - s->pos;
		if (n > len)
			n = (size_t)len;
		rc = feed(f, s->buf + s->pos, n, err);
		if (rc != P11S_OK)
			return rc;
		advance(s, n);
		len -= n;
	}
	return P11S_OK;
}

/* The chunks of a constructed OCTET STRING (which may nest, in BER). */
static p11s_rc stream_chunks(struct feed *f, struct cons *c, int depth, p11s_error *err)
{
	p11i_cms_stream *s = f->s;
	struct cons sub;
	struct tlv t;
	int end = 0;
	p11s_rc rc;

	for (;;) {
		rc = at_end(s, c, &end, err);
		if (rc != P11S_OK)
			return rc;
		if (end)
			return P11S_OK;
		rc = peek(s, &t, err);
		if (rc != P11S_OK)
			return rc;
		if (t.cls != V_ASN1_UNIVERSAL || t.tag != V_ASN1_OCTET_STRING)
			return malformed(err, "the encrypted content holds something other than "
			                      "OCTET STRINGs");
		if (t.cons) {
			if (depth >= DEPTH_MAX)
				return malformed(err, "the encrypted content nests too deeply");
			rc = open_cons(s, V_ASN1_UNIVERSAL, V_ASN1_OCTET_STRING, &sub,
			               "an OCTET STRING", err);
			if (rc == P11S_OK)
				rc = stream_chunks(f, &sub, depth + 1, err);
			if (rc == P11S_OK)
				rc = close_cons(s, &sub, "an OCTET STRING", err);
		} else {
			advance(s, t.hlen);
			rc = stream_bytes(f, t.len, err);
		}
		if (rc != P11S_OK)
			return rc;
	}
}

/* Skip an optional element with context tag @p tag; its DER copy in *der if wanted. */
static p11s_rc optional_element(p11i_cms_stream *s, struct cons *in, int tag, const char *what,
                                unsigned char **der, size_t *len, p11s_error *err)
{
	struct tlv t;
	unsigned char *d = NULL;
	size_t l = 0;
	int end = 0;
	p11s_rc rc = at_end(s, in, &end, err);

	if (rc != P11S_OK || end)
		return rc;
	rc = peek(s, &t, err);
	if (rc != P11S_OK)
		return rc;
	if (t.cls != V_ASN1_CONTEXT_SPECIFIC || t.tag != tag || !t.cons)
		return P11S_OK;
	rc = read_element(s, V_ASN1_CONTEXT_SPECIFIC, tag, what, &d, &l, err);
	if (rc != P11S_OK)
		return rc;
	if (der != NULL) {
		*der = d;
		*len = l;
	} else {
		OPENSSL_free(d);
	}
	return P11S_OK;
}

static int gcm_icv_len(const X509_ALGOR *alg, long *icv)
{
	const ASN1_OBJECT *obj;
	int ptype;
	const void *pval;
	const ASN1_STRING *seq;
	P11I_GCM_PARAMS *gp;

	X509_ALGOR_get0(&obj, &ptype, &pval, alg);
	if (ptype != V_ASN1_SEQUENCE)
		return 0;
	seq = pval;
	gp = ASN1_item_unpack(seq, ASN1_ITEM_rptr(P11I_GCM_PARAMS));
	if (gp == NULL)
		return 0;
	*icv = gp->icvlen ? ASN1_INTEGER_get(gp->icvlen) : 12;
	ASN1_item_free((ASN1_VALUE *)gp, ASN1_ITEM_rptr(P11I_GCM_PARAMS));
	return 1;
}

/*
 * The tag over AAD + ciphertext: GCM takes the AAD first, so the
 * ciphertext kept in the spool goes through a second context set up with
 * the same key and IV (@p fresh, copied before any data).
 */
static p11s_rc check_tag_with_aad(p11i_cms_stream *s, EVP_CIPHER_CTX *fresh,
                                  const unsigned char *aad, size_t aadlen,
                                  const ASN1_OCTET_STRING *mac, p11s_error *err)
{
	unsigned char in[CHUNK], *out = NULL;
	int outl;
	size_t n;
	p11s_rc rc = P11S_OK;

	out = OPENSSL_malloc(CHUNK + EVP_MAX_BLOCK_LENGTH);
	if (out == NULL)
		return p11i_err_nomem(err);
	if (!EVP_DecryptUpdate(fresh, NULL, &outl, aad, (int)aadlen)) {
		rc = p11i_err_ossl(err, P11S_E_DECRYPT, "cannot authenticate the attributes");
		goto done;
	}
	if (!s->spool.in_file) {
		for (size_t at = 0; at < s->spool.len; at += n) {
			n = s->spool.len - at > CHUNK ? CHUNK : s->spool.len - at;
			if (!EVP_DecryptUpdate(fresh, out, &outl, s->spool.mem + at, (int)n)) {
				rc =
				    p11i_err_ossl(err, P11S_E_DECRYPT, "content decryption failed");
				goto done;
			}
		}
	} else {
		ssize_t got;
		off_t off = 0;

		while ((got = pread(s->spool.fd, in, sizeof(in), off)) != 0) {
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0) {
				rc = p11i_err(err, P11S_E_IO, "cannot read a temporary file: %s",
				              strerror(errno));
				goto done;
			}
			off += got;
			if (!EVP_DecryptUpdate(fresh, out, &outl, in, (int)got)) {
				rc =
				    p11i_err_ossl(err, P11S_E_DECRYPT, "content decryption failed");
				goto done;
			}
		}
		/* Everything kept must come back, or the tag would blame the message. */
		if ((uint64_t)off != s->spool.total) {
			rc = p11i_err(err, P11S_E_IO, "cannot read a temporary file: it is short");
			goto done;
		}
	}
	if (EVP_CIPHER_CTX_ctrl(fresh, EVP_CTRL_AEAD_SET_TAG, mac->length, mac->data) <= 0 ||
	    EVP_DecryptFinal_ex(fresh, out, &outl) <= 0)
		rc = p11i_err(err, P11S_E_DECRYPT,
		              "the message failed authentication (AES-GCM tag mismatch): it was "
		              "altered, or is not for this key; nothing was written");
done:
	ERR_clear_error();
	OPENSSL_clear_free(out, CHUNK + EVP_MAX_BLOCK_LENGTH);
	return rc;
}

struct p11i_cms_replay {
	EVP_CIPHER_CTX *fresh; /* keyed with the content key and IV, no data yet */
	unsigned char gkey[32], giv[12], fp[16];
	unsigned char *aad, *mac;
	size_t aadlen, maclen;
};

void p11i_cms_replay_free(p11i_cms_replay *rp)
{
	if (rp == NULL)
		return;
	EVP_CIPHER_CTX_free(rp->fresh);
	OPENSSL_free(rp->aad);
	OPENSSL_free(rp->mac);
	OPENSSL_cleanse(rp->gkey, sizeof(rp->gkey));
	free(rp);
}

/*
 * A keyed fingerprint of the ciphertext: GMAC under a random key of this
 * run, so that a second read of the input can be checked to be the first.
 */
static EVP_MAC_CTX *gmac_new(const unsigned char *key, const unsigned char *iv)
{
	EVP_MAC *m = EVP_MAC_fetch(NULL, "GMAC", NULL);
	EVP_MAC_CTX *c = m ? EVP_MAC_CTX_new(m) : NULL;
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, "AES-256-GCM", 0),
	    OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_IV, (void *)iv, 12),
	    OSSL_PARAM_construct_end()};

	EVP_MAC_free(m);
	if (c != NULL && !EVP_MAC_init(c, key, 32, params)) {
		EVP_MAC_CTX_free(c);
		c = NULL;
	}
	return c;
}

static int gmac_final(EVP_MAC_CTX *c, unsigned char *fp)
{
	size_t n = 0;

	return EVP_MAC_final(c, fp, &n, 16) && n == 16;
}

/* The encrypted content, then the rest of the structure to its end. */
static p11s_rc content_and_trailer(p11i_cms_stream *s, struct feed *f, unsigned char **auth_der,
                                   size_t *auth_len, ASN1_OCTET_STRING **mac, p11s_error *err)
{
	unsigned char *mac_der = NULL;
	size_t mac_len = 0;
	const unsigned char *p;
	long icv = 0;
	int got;
	p11s_rc rc;

	if (s->content_cons) {
		rc = stream_chunks(f, &s->ecc, 0, err);
		if (rc == P11S_OK)
			rc = close_cons(s, &s->ecc, "the encrypted content", err);
	} else {
		rc = stream_bytes(f, s->content_len, err);
	}
	if (rc == P11S_OK)
		rc = close_cons(s, &s->eci, "the EncryptedContentInfo", err);
	if (rc != P11S_OK)
		return rc;

	if (!s->auth) {
		/* unprotectedAttrs [1]: nothing in them changes the content. */
		rc = optional_element(s, &s->env, 1, "unprotected attributes", NULL, NULL, err);
	} else {
		rc = optional_element(s, &s->env, 1, "authenticated attributes", auth_der, auth_len,
		                      err);
		if (rc == P11S_OK)
			rc = read_element(s, V_ASN1_UNIVERSAL, V_ASN1_OCTET_STRING,
			                  "the message authentication code", &mac_der, &mac_len,
			                  err);
		if (rc != P11S_OK)
			return rc;
		p = mac_der;
		*mac = d2i_ASN1_OCTET_STRING(NULL, &p, (long)mac_len);
		OPENSSL_free(mac_der);
		if (*mac == NULL)
			return malformed(err, "a bad message authentication code");
		if (!gcm_icv_len(s->calg, &icv))
			return malformed(err, "bad AES-GCM parameters");
		if (icv < 12 || icv > 16 || (*mac)->length != icv)
			return p11i_err(err, P11S_E_INPUT,
			                "malformed CMS message: the MAC is %d bytes, the GCM "
			                "parameters say %ld (12 to 16 allowed)",
			                (*mac)->length, icv);
		rc = optional_element(s, &s->env, 2, "unauthenticated attributes", NULL, NULL, err);
	}
	if (rc == P11S_OK)
		rc = close_cons(s, &s->env, s->auth ? "the AuthEnvelopedData" : "the EnvelopedData",
		                err);
	if (rc == P11S_OK)
		rc = close_cons(s, &s->ex, "the [0] content", err);
	if (rc == P11S_OK)
		rc = close_cons(s, &s->ci, "the ContentInfo", err);
	if (rc == P11S_OK)
		rc = fill(s, 1, &got, err);
	if (rc == P11S_OK && got)
		rc = p11i_err(err, P11S_E_INPUT, "unexpected data after the CMS message");
	if (rc == P11S_OK && *auth_der != NULL) {
		/* RFC 5083: the AAD is the DER of the SET OF, not of the [1]. */
		(*auth_der)[0] = 0x31;
		s->had_auth_attrs = 1;
	}
	return rc;
}

static p11s_rc tag_mismatch(p11s_error *err)
{
	ERR_clear_error();
	return p11i_err(err, P11S_E_DECRYPT,
	                "the message failed authentication (AES-GCM tag mismatch): it was "
	                "altered, or is not for this key; nothing was written");
}

p11s_rc p11i_cms_stream_decrypt(p11i_cms_stream *s, EVP_CIPHER_CTX *ctx, p11i_cms_sink sink,
                                void *user, p11i_cms_replay **replay, p11s_error *err)
{
	struct feed f = {s, ctx, sink, user, NULL, 0, NULL, NULL, NULL};
	EVP_CIPHER_CTX *fresh = NULL;
	unsigned char *auth_der = NULL, gkey[32], giv[12];
	size_t auth_len = 0;
	ASN1_OCTET_STRING *mac = NULL;
	p11i_cms_replay *rp;
	int outl;
	p11s_rc rc;

	if (replay != NULL)
		*replay = NULL;
	f.out = OPENSSL_malloc(CHUNK + EVP_MAX_BLOCK_LENGTH);
	if (f.out == NULL)
		return p11i_err_nomem(err);
	if (s->auth) {
		/* In case authenticated attributes follow the content: see the header. */
		fresh = EVP_CIPHER_CTX_new();
		if (fresh == NULL || !EVP_CIPHER_CTX_copy(fresh, ctx)) {
			rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot set up the cipher");
			goto done;
		}
		if (replay == NULL) {
			f.spool = 1;
		} else if (RAND_bytes(gkey, sizeof(gkey)) != 1 ||
		           RAND_bytes(giv, sizeof(giv)) != 1 ||
		           (f.gmac = gmac_new(gkey, giv)) == NULL) {
			rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot set up GMAC");
			goto done;
		}
	}
	/* Without the stage (no memory), the content is decrypted inline. */
	if ((f.werr = p11s_error_new()) != NULL &&
	    (f.q = p11i_offload_new(feed_stage, &f, p11i_offload_start)) == NULL) {
		p11s_error_free(f.werr);
		f.werr = NULL;
	}
	rc = content_and_trailer(s, &f, &auth_der, &auth_len, &mac, err);
	/* Everything below is the caller's thread's again. */
	if (rc == P11S_OK && p11i_offload_sync(f.q) != 0)
		rc = stage_failed(&f, err);
	p11i_offload_free(f.q);
	f.q = NULL;
	if (rc != P11S_OK)
		goto done;

	if (auth_der != NULL && f.spool) {
		rc = check_tag_with_aad(s, fresh, auth_der, auth_len, mac, err);
		goto done;
	}
	if (auth_der != NULL) {
		/* The caller reads the input again, the AAD first this time. */
		rp = calloc(1, sizeof(*rp));
		if (rp == NULL || !gmac_final(f.gmac, rp->fp) ||
		    (rp->mac = OPENSSL_memdup(mac->data, (size_t)mac->length)) == NULL) {
			p11i_cms_replay_free(rp);
			rc = p11i_err_nomem(err);
			goto done;
		}
		memcpy(rp->gkey, gkey, sizeof(gkey));
		memcpy(rp->giv, giv, sizeof(giv));
		rp->maclen = (size_t)mac->length;
		rp->aad = auth_der;
		rp->aadlen = auth_len;
		auth_der = NULL;
		rp->fresh = fresh;
		fresh = NULL;
		*replay = rp;
		goto done;
	}
	if (s->auth &&
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, mac->length, mac->data) <= 0) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot set the authentication tag");
		goto done;
	}
	if (EVP_DecryptFinal_ex(ctx, f.out, &outl) <= 0) {
		ERR_clear_error();
		rc = s->auth ? tag_mismatch(err)
		             : p11i_err(err, P11S_E_DECRYPT,
		                        "decryption failed (bad padding): the message was altered, "
		                        "or is not for this key; nothing was written");
		goto done;
	}
	if (outl > 0 && sink(user, f.out, (size_t)outl) != 0)
		rc = p11i_err(err, P11S_E_IO, "cannot write the decrypted content");
done:
	p11i_offload_free(f.q);
	p11s_error_free(f.werr);
	OPENSSL_cleanse(gkey, sizeof(gkey));
	EVP_MAC_CTX_free(f.gmac);
	EVP_CIPHER_CTX_free(fresh);
	ASN1_OCTET_STRING_free(mac);
	OPENSSL_free(auth_der);
	OPENSSL_clear_free(f.out, CHUNK + EVP_MAX_BLOCK_LENGTH);
	return rc;
}

p11s_rc p11i_cms_stream_replay(p11i_cms_stream *s, p11i_cms_replay *rp, p11s_error *err)
{
	struct feed f = {s, rp->fresh, NULL, NULL, NULL, 0, NULL, NULL, NULL};
	unsigned char *auth_der = NULL, fp[16], *tmp = NULL;
	size_t auth_len = 0;
	ASN1_OCTET_STRING *mac = NULL;
	int outl;
	p11s_rc rc;

	f.out = OPENSSL_malloc(CHUNK + EVP_MAX_BLOCK_LENGTH);
	f.gmac = gmac_new(rp->gkey, rp->giv);
	if (f.out == NULL || f.gmac == NULL) {
		rc = p11i_err_ossl(err, P11S_E_NOMEM, "cannot set up the second pass");
		goto done;
	}
	if (!s->auth) {
		rc = p11i_err(err, P11S_E_INPUT, "the input changed while it was being read");
		goto done;
	}
	if (!EVP_DecryptUpdate(rp->fresh, NULL, &outl, rp->aad, (int)rp->aadlen)) {
		rc = p11i_err_ossl(err, P11S_E_DECRYPT, "cannot authenticate the attributes");
		goto done;
	}
	rc = content_and_trailer(s, &f, &auth_der, &auth_len, &mac, err);
	if (rc != P11S_OK)
		goto done;
	/* What was decrypted is what is authenticated now, or the input moved under us. */
	if (!gmac_final(f.gmac, fp) || CRYPTO_memcmp(fp, rp->fp, sizeof(fp)) != 0 ||
	    auth_der == NULL || auth_len != rp->aadlen ||
	    memcmp(auth_der, rp->aad, auth_len) != 0 || (size_t)mac->length != rp->maclen ||
	    memcmp(mac->data, rp->mac, rp->maclen) != 0) {
		rc = p11i_err(err, P11S_E_INPUT, "the input changed while it was being read");
		goto done;
	}
	tmp = OPENSSL_malloc(EVP_MAX_BLOCK_LENGTH);
	if (tmp == NULL ||
	    EVP_CIPHER_CTX_ctrl(rp->fresh, EVP_CTRL_AEAD_SET_TAG, (int)rp->maclen, rp->mac) <= 0 ||
	    EVP_DecryptFinal_ex(rp->fresh, tmp, &outl) <= 0)
		rc = tag_mismatch(err);
done:
	OPENSSL_clear_free(tmp, EVP_MAX_BLOCK_LENGTH);
	EVP_MAC_CTX_free(f.gmac);
	ASN1_OCTET_STRING_free(mac);
	OPENSSL_free(auth_der);
	OPENSSL_clear_free(f.out, CHUNK + EVP_MAX_BLOCK_LENGTH);
	return rc;
}
