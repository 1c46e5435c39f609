/*
 * MIME framing: header blocks, field values, addresses, line ends and the
 * canonical 7-bit form of an entity (RFC 5322, RFC 2045-2046, RFC 8551).
 *
 * Bodies are processed a line segment at a time so that nothing grows with
 * the message; only header blocks are held in memory, and they are bounded.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common.h"
#include "mime.h"
#include "offload.h"

#if defined(__SSE2__)
/* A bit for each byte of @p v that leaves 7-bit text's fast path: >= 0x80, CR or NUL. */
static inline unsigned sse_not_plain(__m128i v)
{
	const __m128i cr = _mm_set1_epi8('\r'), zero = _mm_setzero_si128();

	return (unsigned)_mm_movemask_epi8(v) |
	       (unsigned)_mm_movemask_epi8(
	           _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, zero)));
}
#endif

/* ------------------------------------------------------------ headers */

struct field {
	char *name;
	char *raw;
	size_t len;
	size_t cap; /* of raw; 0: len + 1 */
};

struct p11i_headers {
	P11I_VEC(struct field) f;
	p11i_eol eol;
	int body_follows;
};

p11i_headers *p11i_headers_new(p11i_eol eol)
{
	p11i_headers *h = calloc(1, sizeof(*h));

	if (h != NULL)
		h->eol = eol;
	return h;
}

void p11i_headers_free(p11i_headers *h)
{
	if (h == NULL)
		return;
	/* Wiped: decrypt parses the header block of a plaintext. */
	for (size_t i = 0; i < h->f.n; i++) {
		p11i_wipe_free(h->f.v[i].name);
		p11i_wipe_free(h->f.v[i].raw);
	}
	free(h->f.v);
	free(h);
}

p11i_eol p11i_headers_eol(const p11i_headers *h)
{
	return h->eol;
}

int p11i_headers_body_follows(const p11i_headers *h)
{
	return h->body_follows;
}

size_t p11i_headers_count(const p11i_headers *h)
{
	return h ? h->f.n : 0;
}

const char *p11i_headers_name(const p11i_headers *h, size_t i)
{
	return i < h->f.n ? h->f.v[i].name : NULL;
}

const char *p11i_headers_raw(const p11i_headers *h, size_t i, size_t *len)
{
	if (i >= h->f.n)
		return NULL;
	if (len != NULL)
		*len = h->f.v[i].len;
	return h->f.v[i].raw;
}

static int is_wsp(int c)
{
	return c == ' ' || c == '\t';
}

char *p11i_headers_value(const p11i_headers *h, size_t i)
{
	const char *raw, *colon;
	size_t len, o = 0;
	char *v;

	if (i >= h->f.n)
		return NULL;
	raw = h->f.v[i].raw;
	len = h->f.v[i].len;
	colon = memchr(raw, ':', len);
	if (colon == NULL)
		return p11i_strdup("");
	v = malloc(len + 1);
	if (v == NULL)
		return NULL;
	/* Unfolding removes CR and LF only; the blanks after them stay. */
	for (const char *p = colon + 1; p < raw + len; p++)
		if (*p != '\r' && *p != '\n')
			v[o++] = *p;
	while (o > 0 && is_wsp((unsigned char)v[o - 1]))
		o--;
	v[o] = '\0';
	size_t lead = strspn(v, " \t");
	memmove(v, v + lead, o - lead + 1);
	return v;
}

long p11i_headers_find(const p11i_headers *h, const char *name, size_t from)
{
	for (size_t i = from; h != NULL && i < h->f.n; i++)
		if (strcasecmp(h->f.v[i].name, name) == 0)
			return (long)i;
	return -1;
}

char *p11i_headers_get(const p11i_headers *h, const char *name)
{
	long i = p11i_headers_find(h, name, 0);

	return i < 0 ? NULL : p11i_headers_value(h, (size_t)i);
}

unsigned p11i_header_class_of(const char *name)
{
	if (strncasecmp(name, "Content-", 8) == 0)
		return P11I_HDR_CONTENT;
	if (strcasecmp(name, "MIME-Version") == 0)
		return P11I_HDR_MIME_VERSION;
	return P11I_HDR_OUTER;
}

static int push_field(p11i_headers *h, char *name, char *raw, size_t len)
{
	struct field f = {name, raw, len, 0};

	return p11i_vec_push(&h->f, f);
}

p11s_rc p11i_headers_add(p11i_headers *h, const char *name, const char *value, p11s_error *err)
{
	char *n, *raw;

	if (strpbrk(value, "\r\n") != NULL || strpbrk(name, ": \t\r\n") != NULL || *name == '\0')
		return p11i_err(err, P11S_E_USAGE, "a header field must be one line");
	n = strdup(name);
	raw = p11i_asprintf("%s: %s%s", name, value, h->eol == P11I_EOL_CRLF ? "\r\n" : "\n");
	if (n == NULL || raw == NULL || push_field(h, n, raw, strlen(raw)) != 0) {
		free(n);
		free(raw);
		return p11i_err_nomem(err);
	}
	return P11S_OK;
}

size_t p11i_headers_remove(p11i_headers *h, const char *name)
{
	size_t o = 0, removed = 0;

	for (size_t i = 0; i < h->f.n; i++) {
		if (strcasecmp(h->f.v[i].name, name) == 0) {
			free(h->f.v[i].name);
			free(h->f.v[i].raw);
			removed++;
		} else {
			h->f.v[o++] = h->f.v[i];
		}
	}
	h->f.n = o;
	return removed;
}

p11s_rc p11i_headers_write(const p11i_headers *h, unsigned classes, BIO *out, p11s_error *err)
{
	for (size_t i = 0; i < h->f.n; i++) {
		if (!(p11i_header_class_of(h->f.v[i].name) & classes))
			continue;
		if (BIO_write(out, h->f.v[i].raw, (int)h->f.v[i].len) != (int)h->f.v[i].len)
			return p11i_err(err, P11S_E_IO, "cannot write the message headers");
	}
	return P11S_OK;
}

/*
 * A source of line segments: a segment ends with '\n' or is the longest
 * piece that fits a buffer.  Returns 1 with a segment, 0 at the end, -1 on
 * a read error, SEG_NUL when a NUL byte was met and could not be passed on.
 */
typedef int (*seg_fn)(void *src, const char **p, size_t *n);

#define SEG_NUL (-2)

struct gets_src {
	BIO *in;
	char buf[4096];
};

/* BIO_gets stops at '\n', so the body stays unread in the BIO. */
static int gets_seg(void *arg, const char **p, size_t *n)
{
	struct gets_src *s = arg;
	int r = BIO_gets(s->in, s->buf, (int)sizeof(s->buf));

	/*
	 * A file BIO's gets is fgets() then strlen(): a NUL byte hides the rest
	 * of its line (and one at the start looks like the end of input).  Short
	 * of the buffer, without '\n' and before the end: that is what happened.
	 */
	if (r >= 0 && r < (int)sizeof(s->buf) - 1 && (r == 0 || s->buf[r - 1] != '\n') &&
	    !BIO_eof(s->in)) {
		FILE *fp = p11i_bio_fp(s->in);

		/* Unless the read failed, which fgets() does not tell either. */
		if (fp != NULL && ferror(fp))
			return -1;
		return SEG_NUL;
	}
	if (r == 0 || (r < 0 && BIO_eof(s->in)))
		return 0;
	if (r < 0)
		return -1;
	*p = s->buf;
	*n = (size_t)r;
	return 1;
}

static size_t strip_eol(const char *p, size_t n)
{
	if (n > 0 && p[n - 1] == '\n') {
		n--;
		while (n > 0 && p[n - 1] == '\r')
			n--;
	}
	return n;
}

/*
 * Parse a header block.  @p top: the block of a whole input (an empty input
 * is an error there; inside a multipart, an empty part is not).
 */
static p11s_rc parse_headers(seg_fn seg, void *src, size_t max, int top, p11i_headers **out,
                             p11s_error *err)
{
	p11i_headers *h = p11i_headers_new(P11I_EOL_CRLF);
	char *line = NULL;
	size_t cap = 0, total = 0, lineno = 0;
	p11s_rc rc = P11S_OK;

	if (max == 0)
		max = P11S_HEADERS_MAX_DEFAULT;
	if (h == NULL)
		return p11i_err_nomem(err);
	for (;;) {
		size_t len = 0;
		const char *p;
		size_t n;
		int r, complete = 0;

		/* Gather one whole line. */
		while (!complete && (r = seg(src, &p, &n)) > 0) {
			if (total + len + n > max) {
				rc = p11i_err(err, P11S_E_INPUT,
				              "the header block is longer than %zu bytes", max);
				goto out;
			}
			if (len + n + 1 > cap) {
				size_t ncap = (len + n + 1) * 2;
				char *nl = realloc(line, ncap);

				if (nl == NULL) {
					rc = p11i_err_nomem(err);
					goto out;
				}
				line = nl;
				cap = ncap;
			}
			memcpy(line + len, p, n);
			len += n;
			complete = line[len - 1] == '\n';
		}
		if (!complete && r == SEG_NUL) {
			rc = p11i_err(err, P11S_E_INPUT, "header line %zu holds a NUL byte",
			              lineno + 1);
			goto out;
		}
		if (!complete && r < 0) {
			rc = p11i_err(err, P11S_E_IO, "cannot read the message");
			goto out;
		}
		if (len == 0) {
			if (top && lineno == 0) {
				rc = p11i_err(err, P11S_E_INPUT, "the input is empty");
				goto out;
			}
			h->body_follows = 0;
			break;
		}
		if (!complete) {
			rc =
			    p11i_err(err, P11S_E_INPUT,
			             "the input ends in the middle of header line %zu (truncated?)",
			             lineno + 1);
			goto out;
		}
		/* Fields are kept as C strings: a NUL would cut one short. */
		if (memchr(line, '\0', len) != NULL) {
			rc = p11i_err(err, P11S_E_INPUT, "header line %zu holds a NUL byte",
			              lineno + 1);
			goto out;
		}
		line[len] = '\0';
		if (lineno++ == 0)
			h->eol = (len >= 2 && line[len - 2] == '\r') ? P11I_EOL_CRLF : P11I_EOL_LF;
		total += len;
		if (strip_eol(line, len) == 0) {
			h->body_follows = 1;
			break;
		}
		if (is_wsp((unsigned char)line[0])) {
			struct field *f;
			char *nr;

			if (h->f.n == 0) {
				rc = p11i_err(
				    err, P11S_E_INPUT,
				    "header line %zu continues a field that does not exist",
				    lineno);
				goto out;
			}
			f = &h->f.v[h->f.n - 1];
			/* Doubling: a field folded over 300,000 lines is read in linear time. */
			if (f->len + len + 1 > (f->cap ? f->cap : f->len + 1)) {
				size_t ncap = (f->len + len + 1) * 2;

				nr = realloc(f->raw, ncap);
				if (nr == NULL) {
					rc = p11i_err_nomem(err);
					goto out;
				}
				f->raw = nr;
				f->cap = ncap;
			}
			memcpy(f->raw + f->len, line, len + 1);
			f->len += len;
			continue;
		}
		/* field-name = 1*(%d33-57 / %d59-126), then (obsolete) blanks, then ':' */
		size_t i = 0;
		while (i < len && line[i] != ':' && (unsigned char)line[i] > 32 &&
		       (unsigned char)line[i] < 127)
			i++;
		size_t name_len = i;
		while (i < len && is_wsp((unsigned char)line[i]))
			i++;
		if (name_len == 0 || i >= len || line[i] != ':') {
			rc = p11i_err(err, P11S_E_INPUT,
			              "line %zu of the header block is not a header field", lineno);
			goto out;
		}
		char *name = p11i_strndup(line, name_len);
		char *raw = p11i_strndup(line, len);

		if (name == NULL || raw == NULL || push_field(h, name, raw, len) != 0) {
			free(name);
			free(raw);
			rc = p11i_err_nomem(err);
			goto out;
		}
	}
out:
	if (line != NULL)
		OPENSSL_cleanse(line, cap);
	free(line);
	if (rc != P11S_OK) {
		p11i_headers_free(h);
		return rc;
	}
	*out = h;
	return P11S_OK;
}

p11s_rc p11i_headers_read(BIO *in, size_t max, p11i_headers **out, p11s_error *err)
{
	struct gets_src *s = malloc(sizeof(*s));
	p11s_rc rc;

	if (s == NULL)
		return p11i_err_nomem(err);
	s->in = in;
	rc = parse_headers(gets_seg, s, max, 1, out, err);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
	return rc;
}

/* ------------------------------------------------------- field values */

/* Skip blanks, line breaks and (nested) comments. */
static const char *skip_cfws(const char *p)
{
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		if (*p != '(')
			return p;
		int depth = 0;
		do {
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '(')
				depth++;
			else if (*p == ')')
				depth--;
			p++;
		} while (depth > 0 && *p != '\0');
	}
}

/* RFC 2045 token characters. */
static int is_tspecial(int c)
{
	return strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

static int is_token_char(int c)
{
	return c > 32 && c < 127 && !is_tspecial(c);
}

static char *lower_dup(const char *p, size_t n)
{
	char *s = p11i_strndup(p, n);

	for (size_t i = 0; s != NULL && i < n; i++)
		s[i] = (char)tolower((unsigned char)s[i]);
	return s;
}

char *p11i_mime_media_type(const char *value)
{
	const char *p, *t, *s;
	size_t tl, sl;
	char *out;

	if (value == NULL)
		return NULL;
	p = skip_cfws(value);
	t = p;
	while (is_token_char((unsigned char)*p))
		p++;
	tl = (size_t)(p - t);
	p = skip_cfws(p);
	if (tl == 0 || *p != '/')
		return NULL;
	p = skip_cfws(p + 1);
	s = p;
	while (is_token_char((unsigned char)*p))
		p++;
	sl = (size_t)(p - s);
	if (sl == 0)
		return NULL;
	out = malloc(tl + sl + 2);
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < tl; i++)
		out[i] = (char)tolower((unsigned char)t[i]);
	out[tl] = '/';
	for (size_t i = 0; i < sl; i++)
		out[tl + 1 + i] = (char)tolower((unsigned char)s[i]);
	out[tl + 1 + sl] = '\0';
	return out;
}

/*
 * Parse a quoted-string at @p p (on the '"'), unescaped into @p dst (may be
 * NULL).  Returns what follows the closing quote, or NULL when there is none.
 */
static const char *quoted(const char *p, char *dst, size_t *dlen)
{
	size_t o = 0;

	p++;
	while (*p != '\0' && *p != '"') {
		if (*p == '\\' && p[1] != '\0')
			p++;
		if (*p != '\r' && *p != '\n' && dst != NULL)
			dst[o++] = *p;
		p++;
	}
	if (dlen != NULL)
		*dlen = o;
	return *p == '"' ? p + 1 : NULL;
}

/* Past a comment at @p p (on the '('), nested ones included; NULL when unclosed. */
static const char *comment_end(const char *p)
{
	int depth = 0;

	for (; *p != '\0'; p++) {
		if (*p == '\\' && p[1] != '\0')
			p++;
		else if (*p == '(')
			depth++;
		else if (*p == ')' && --depth == 0)
			return p + 1;
	}
	return NULL;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

#define MAX_SECTIONS 64

char *p11i_mime_param(const char *value, const char *name)
{
	char *plain = NULL, *sect[MAX_SECTIONS] = {0};
	size_t nlen = strlen(name), nsect = 0;
	const char *p;
	char *result = NULL;

	if (value == NULL)
		return NULL;
	/* Skip the media type (or disposition type). */
	p = value;
	while (p != NULL && *p != '\0' && *p != ';') {
		if (*p == '"')
			p = quoted(p, NULL, NULL);
		else if (*p == '(')
			p = comment_end(p);
		else
			p++;
	}
	if (p == NULL)
		return NULL;
	while (*p == ';') {
		const char *a, *v;
		size_t al, vl = 0;
		char *val;

		p = skip_cfws(p + 1);
		a = p;
		while (is_token_char((unsigned char)*p) || *p == '*')
			p++;
		al = (size_t)(p - a);
		p = skip_cfws(p);
		if (*p != '=') {
			while (*p != '\0' && *p != ';')
				p++;
			continue;
		}
		p = skip_cfws(p + 1);
		v = p;
		if (*p == '"') {
			/* Sized by the value, not the rest of the field: many parameters stay
			 * linear. */
			const char *e = quoted(p, NULL, NULL);

			val = malloc((e ? (size_t)(e - p) : strlen(p)) + 1);
			if (val == NULL)
				goto out;
			e = quoted(p, val, &vl);
			p = e ? e : p + strlen(p);
		} else {
			while (is_token_char((unsigned char)*p) || *p == '*' || *p == '\'' ||
			       *p == '%')
				p++;
			vl = (size_t)(p - v);
			val = malloc(vl + 1);
			if (val == NULL)
				goto out;
			memcpy(val, v, vl);
		}
		val[vl] = '\0';
		p = skip_cfws(p);
		while (*p != '\0' && *p != ';')
			p++;

		if (al == nlen && strncasecmp(a, name, nlen) == 0) {
			free(plain);
			plain = val;
			continue;
		}
		/* RFC 2231: name*, name*N, name*N* */
		if (al > nlen && strncasecmp(a, name, nlen) == 0 && a[nlen] == '*') {
			const char *s = a + nlen + 1, *end = a + al;
			int ext = end[-1] == '*' && end - 1 >= s;
			size_t idx = 0;

			if (ext)
				end--;
			for (const char *q = s; q < end; q++) {
				if (!isdigit((unsigned char)*q)) {
					idx = MAX_SECTIONS;
					break;
				}
				idx = idx * 10 + (size_t)(*q - '0');
				if (idx >= MAX_SECTIONS)
					break;
			}
			if (s == end)
				ext = 1; /* "name*=" */
			if (idx >= MAX_SECTIONS) {
				free(val);
				continue;
			}
			if (ext) {
				char *src = val, *d = val;

				if (idx == 0) {
					char *q1 = strchr(val, '\'');
					char *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;

					if (q2 != NULL)
						src = q2 + 1;
				}
				while (*src != '\0') {
					if (*src == '%' && hexval((unsigned char)src[1]) >= 0 &&
					    hexval((unsigned char)src[2]) >= 0) {
						*d++ = (char)(hexval((unsigned char)src[1]) * 16 +
						              hexval((unsigned char)src[2]));
						src += 3;
					} else {
						*d++ = *src++;
					}
				}
				*d = '\0';
			}
			free(sect[idx]);
			sect[idx] = val;
			if (idx + 1 > nsect)
				nsect = idx + 1;
			continue;
		}
		free(val);
	}
	if (nsect > 0 && sect[0] != NULL) {
		size_t total = 1;

		for (size_t i = 0; i < nsect && sect[i] != NULL; i++)
			total += strlen(sect[i]);
		result = malloc(total);
		if (result != NULL) {
			result[0] = '\0';
			for (size_t i = 0; i < nsect && sect[i] != NULL; i++)
				strcat(result, sect[i]);
		}
	} else {
		result = plain;
		plain = NULL;
	}
out:
	free(plain);
	for (size_t i = 0; i < MAX_SECTIONS; i++)
		free(sect[i]);
	return result;
}

char *p11i_mime_transfer_encoding(const p11i_headers *h)
{
	char *v = p11i_headers_get(h, "Content-Transfer-Encoding");
	const char *p, *s;
	char *out;

	if (v == NULL)
		return p11i_strdup("7bit");
	p = skip_cfws(v);
	s = p;
	while (is_token_char((unsigned char)*p))
		p++;
	out = p == s ? p11i_strdup("7bit") : lower_dup(s, (size_t)(p - s));
	free(v);
	return out;
}

/* ------------------------------------------------------------ addresses */

/* A NULL-terminated vector of strings (v[n] == NULL once anything was pushed). */
typedef P11I_VEC(char *) strv;

static int strv_push(strv *sv, char *s)
{
	if (p11i_vec_reserve(sv, 2) != 0) {
		free(s);
		return -1;
	}
	sv->v[sv->n++] = s;
	sv->v[sv->n] = NULL;
	return 0;
}

void p11s_strv_free(char **v)
{
	for (size_t i = 0; v != NULL && v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

/* A growing string, NUL-terminated. */
typedef P11I_VEC(char) sbuf;

static int sb_add(sbuf *b, const char *p, size_t n)
{
	if (p11i_vec_reserve(b, n + 1) != 0)
		return -1;
	memcpy(b->v + b->n, p, n);
	b->n += n;
	b->v[b->n] = '\0';
	return 0;
}

static int finish_mailbox(strv *sv, sbuf *plain, sbuf *angle, int saw_angle)
{
	sbuf *b = saw_angle ? angle : plain;
	int r = 0;

	if (b->n > 0) {
		char *s = p11i_strndup(b->v, b->n);

		r = s == NULL ? -1 : strv_push(sv, s);
	}
	plain->n = 0;
	angle->n = 0;
	return r;
}

/* The bytes that end a word in an address list; each has a case of its own below. */
static int is_addr_delim(char c)
{
	return c != '\0' && strchr(" \t\r\n()\"[]<>:,;", c) != NULL;
}

p11s_rc p11i_mime_addresses(const char *value, char ***out, size_t *n, p11s_error *err)
{
	strv sv = {0};
	sbuf plain = {0}, angle = {0};
	int in_angle = 0, saw_angle = 0, nomem = 0;
	const char *p = value ? value : "", *bad = NULL;

	while (bad == NULL && !nomem && *p != '\0') {
		sbuf *cur = in_angle ? &angle : &plain;
		const char *s = p;

		switch (*p) {
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			p++;
			break;
		case '(':
			p = comment_end(p);
			if (p == NULL)
				bad = "a comment is not closed";
			break;
		case '"':
			p = quoted(p, NULL, NULL);
			if (p == NULL)
				bad = "a quoted string is not closed";
			else
				nomem = sb_add(cur, s, (size_t)(p - s));
			break;
		case '[':
			p++;
			while (*p != '\0' && *p != ']')
				p++;
			if (*p != ']')
				bad = "a domain literal is not closed";
			else
				nomem = sb_add(cur, s, (size_t)(++p - s));
			break;
		case '<':
			in_angle = saw_angle = 1;
			angle.n = 0;
			p++;
			break;
		case '>':
			in_angle = 0;
			p++;
			break;
		case ')':
			bad = "a ')' closes no comment";
			break;
		case ']':
			bad = "a ']' closes no domain literal";
			break;
		case ':':
			/* In angle brackets it ends a source route; outside, it opens a group. */
			if (in_angle)
				angle.n = 0;
			else
				plain.n = 0;
			p++;
			break;
		case ',':
			if (!in_angle) {
				nomem = finish_mailbox(&sv, &plain, &angle, saw_angle);
				saw_angle = 0;
			}
			p++;
			break;
		case ';':
			nomem = finish_mailbox(&sv, &plain, &angle, saw_angle);
			saw_angle = in_angle = 0;
			p++;
			break;
		default:
			/*
			 * Every delimiter has a case above, so this is a word byte;
			 * taking it before the test keeps the loop moving even if the
			 * two lists ever disagree.
			 */
			do
				p++;
			while (*p != '\0' && !is_addr_delim(*p));
			nomem = sb_add(cur, s, (size_t)(p - s));
			break;
		}
	}
	if (bad == NULL && !nomem && in_angle)
		bad = "an angle-bracketed address is not closed";
	if (bad == NULL && !nomem)
		nomem = finish_mailbox(&sv, &plain, &angle, saw_angle);
	free(plain.v);
	free(angle.v);
	if (bad != NULL || nomem) {
		p11s_strv_free(sv.v);
		if (nomem)
			return p11i_err_nomem(err);
		return p11i_err(err, P11S_E_INPUT, "malformed address list: %s", bad);
	}
	if (sv.v == NULL) {
		sv.v = calloc(1, sizeof(char *));
		if (sv.v == NULL)
			return p11i_err_nomem(err);
	}
	*out = sv.v;
	if (n != NULL)
		*n = sv.n;
	return P11S_OK;
}

int p11i_mail_addr_equal(const char *a, const char *b)
{
	const char *da = strrchr(a, '@'), *db = strrchr(b, '@');

	if (da == NULL || db == NULL)
		return strcmp(a, b) == 0;
	return da - a == db - b && strncmp(a, b, (size_t)(da - a)) == 0 &&
	       strcasecmp(da + 1, db + 1) == 0;
}

/* A hash that agrees with p11i_mail_addr_equal: equal addresses hash alike. */
static size_t addr_hash(const char *a)
{
	const char *at = strrchr(a, '@');
	size_t h = 14695981039346656037u;

	for (const char *p = a; *p != '\0'; p++) {
		int c = at != NULL && p > at ? tolower((unsigned char)*p) : (unsigned char)*p;

		h = (h ^ (size_t)c) * 1099511628211u;
	}
	return h;
}

/*
 * The addresses seen so far, as indexes into a strv, in an open-addressing
 * table: a From with 100,000 addresses is de-duplicated in linear time.
 */
struct addr_set {
	size_t *slot; /* index + 1; 0 is empty */
	size_t cap, n;
};

/* 1 if @p a is new (and now recorded as sv->v[idx]), 0 if seen, -1 on ENOMEM. */
static int addr_set_add(struct addr_set *set, const strv *sv, const char *a, size_t idx)
{
	size_t i;

	if (2 * (set->n + 1) > set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 64;
		size_t *slot = calloc(cap, sizeof(*slot));

		if (slot == NULL)
			return -1;
		for (size_t k = 0; k < set->cap; k++) {
			if (set->slot[k] == 0)
				continue;
			i = addr_hash(sv->v[set->slot[k] - 1]) & (cap - 1);
			while (slot[i] != 0)
				i = (i + 1) & (cap - 1);
			slot[i] = set->slot[k];
		}
		free(set->slot);
		set->slot = slot;
		set->cap = cap;
	}
	for (i = addr_hash(a) & (set->cap - 1); set->slot[i] != 0; i = (i + 1) & (set->cap - 1))
		if (p11i_mail_addr_equal(sv->v[set->slot[i] - 1], a))
			return 0;
	set->slot[i] = idx + 1;
	set->n++;
	return 1;
}

p11s_rc p11i_headers_addresses(const p11i_headers *h, const char *const *names, char ***out,
                               size_t *n, p11s_error *err)
{
	strv sv = {0};
	struct addr_set seen = {0};
	p11s_rc rc = P11S_OK;

	for (size_t i = 0; i < h->f.n && rc == P11S_OK; i++) {
		int wanted = 0;

		for (size_t k = 0; names[k] != NULL; k++)
			wanted |= strcasecmp(h->f.v[i].name, names[k]) == 0;
		if (!wanted)
			continue;
		char *v = p11i_headers_value(h, i);
		char **addrs = NULL;

		if (v == NULL) {
			rc = p11i_err_nomem(err);
			break;
		}
		rc = p11i_mime_addresses(v, &addrs, NULL, err);
		if (rc != P11S_OK)
			rc = p11i_err(err, rc, "%s: %s", h->f.v[i].name, p11s_error_message(err));
		free(v);
		for (size_t k = 0; rc == P11S_OK && addrs[k] != NULL; k++) {
			char *copy;
			int added;

			/* Recorded before the copy is made: the set only reads sv.v[0..n). */
			added = addr_set_add(&seen, &sv, addrs[k], sv.n);
			if (added == 0)
				continue;
			if (added < 0 || (copy = strdup(addrs[k])) == NULL ||
			    strv_push(&sv, copy) != 0)
				rc = p11i_err_nomem(err);
		}
		p11s_strv_free(addrs);
	}
	free(seen.slot);
	if (rc != P11S_OK) {
		p11s_strv_free(sv.v);
		return rc;
	}
	if (sv.v == NULL && (sv.v = calloc(1, sizeof(char *))) == NULL)
		return p11i_err_nomem(err);
	*out = sv.v;
	if (n != NULL)
		*n = sv.n;
	return P11S_OK;
}

/* ------------------------------------------------------------ line ends */

#define EOL_RAW 4096

struct eol_state {
	p11i_eol to;
	int w_cr;                   /* write side: a CR whose successor is unknown (LF mode) */
	int w_prev_cr;              /* write side: last byte was CR (CRLF mode) */
	int r_cr, r_prev_cr;        /* read side, the same */
	int r_eof;                  /* read side: the next BIO is exhausted */
	char rbuf[2 * EOL_RAW + 2]; /* read side: converted, not yet returned */
	size_t rpos, rlen;
};

/* Convert @p n bytes; returns the output length (at most 2n + 1). */
static size_t eol_convert(p11i_eol to, int *held_cr, int *prev_cr, const char *in, size_t n,
                          char *o)
{
	const char *end = in + n;
	size_t k = 0;

	/* Runs without the special byte are copied whole: bodies are mostly runs. */
	while (in < end) {
		if (to == P11I_EOL_LF) {
			if (*held_cr) {
				*held_cr = 0;
				if (*in == '\n') {
					o[k++] = '\n';
					in++;
					continue;
				}
				o[k++] = '\r';
			}
			const char *cr = memchr(in, '\r', (size_t)(end - in));
			size_t run = cr ? (size_t)(cr - in) : (size_t)(end - in);

			memcpy(o + k, in, run);
			k += run;
			in += run;
			if (cr != NULL) {
				*held_cr = 1;
				in++;
			}
		} else {
			const char *nl = memchr(in, '\n', (size_t)(end - in));
			size_t run = nl ? (size_t)(nl - in) : (size_t)(end - in);

			if (run > 0) {
				memcpy(o + k, in, run);
				k += run;
				*prev_cr = in[run - 1] == '\r';
				in += run;
			}
			if (nl != NULL) {
				if (!*prev_cr)
					o[k++] = '\r';
				o[k++] = '\n';
				*prev_cr = 0;
				in++;
			}
		}
	}
	return k;
}

static int write_all(BIO *next, const char *p, size_t n)
{
	while (n > 0) {
		int w = BIO_write(next, p, (int)n);

		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int eol_write(BIO *b, const char *in, int inl)
{
	struct eol_state *s = BIO_get_data(b);
	BIO *next = BIO_next(b);
	char o[2 * EOL_RAW + 2];

	if (next == NULL || inl < 0)
		return -1;
	for (int done = 0; done < inl;) {
		size_t chunk = (size_t)(inl - done) > EOL_RAW ? EOL_RAW : (size_t)(inl - done);
		size_t k = eol_convert(s->to, &s->w_cr, &s->w_prev_cr, in + done, chunk, o);

		if (write_all(next, o, k) != 0)
			return done > 0 ? done : -1;
		done += (int)chunk;
	}
	return inl;
}

static int eol_read(BIO *b, char *out, int outl)
{
	struct eol_state *s = BIO_get_data(b);
	BIO *next = BIO_next(b);
	int given = 0;

	if (next == NULL || outl <= 0)
		return 0;
	BIO_clear_retry_flags(b);
	while (given < outl) {
		if (s->rpos == s->rlen) {
			char raw[EOL_RAW];
			int r;

			if (s->r_eof)
				break;
			s->rpos = s->rlen = 0;
			r = BIO_read(next, raw, sizeof(raw));
			if (r <= 0) {
				if (BIO_should_retry(next)) {
					BIO_copy_next_retry(b);
					break;
				}
				s->r_eof = 1;
				if (s->r_cr) {
					s->rbuf[s->rlen++] = '\r';
					s->r_cr = 0;
				}
				continue;
			}
			s->rlen =
			    eol_convert(s->to, &s->r_cr, &s->r_prev_cr, raw, (size_t)r, s->rbuf);
			continue;
		}
		size_t take = s->rlen - s->rpos;

		if (take > (size_t)(outl - given))
			take = (size_t)(outl - given);
		memcpy(out + given, s->rbuf + s->rpos, take);
		s->rpos += take;
		given += (int)take;
	}
	if (given == 0 && s->r_eof)
		return 0;
	return given > 0 ? given : -1;
}

static int eol_puts(BIO *b, const char *str)
{
	return eol_write(b, str, (int)strlen(str));
}

static long eol_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct eol_state *s = BIO_get_data(b);
	BIO *next = BIO_next(b);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		if (s->w_cr) {
			s->w_cr = 0;
			if (next == NULL || write_all(next, "\r", 1) != 0)
				return 0;
		}
		return next ? BIO_ctrl(next, cmd, num, ptr) : 0;
	case BIO_CTRL_RESET:
		s->w_cr = s->w_prev_cr = s->r_cr = s->r_prev_cr = s->r_eof = 0;
		s->rpos = s->rlen = 0;
		return next ? BIO_ctrl(next, cmd, num, ptr) : 1;
	case BIO_CTRL_PENDING:
		return (long)(s->rlen - s->rpos) + (next ? BIO_ctrl(next, cmd, num, ptr) : 0);
	case BIO_CTRL_EOF:
		if (s->rpos < s->rlen || s->r_cr)
			return 0;
		return next ? BIO_ctrl(next, cmd, num, ptr) : 1;
	case BIO_CTRL_DUP:
		return 0;
	default:
		return next ? BIO_ctrl(next, cmd, num, ptr) : 0;
	}
}

static long eol_callback_ctrl(BIO *b, int cmd, BIO_info_cb *fp)
{
	BIO *next = BIO_next(b);

	return next ? BIO_callback_ctrl(next, cmd, fp) : 0;
}

static int eol_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static int eol_destroy(BIO *b)
{
	free(BIO_get_data(b));
	BIO_set_data(b, NULL);
	return 1;
}

static BIO_METHOD *eol_method;
static int eol_type; /* its BIO_method_type(), to know it in a chain */
static CRYPTO_ONCE eol_once = CRYPTO_ONCE_STATIC_INIT;

static void eol_method_init(void)
{
	int type = BIO_get_new_index() | BIO_TYPE_FILTER;
	BIO_METHOD *m = BIO_meth_new(type, "p11smime line ends");

	if (m == NULL)
		return;
	BIO_meth_set_write(m, eol_write);
	BIO_meth_set_read(m, eol_read);
	BIO_meth_set_puts(m, eol_puts);
	BIO_meth_set_ctrl(m, eol_ctrl);
	BIO_meth_set_callback_ctrl(m, eol_callback_ctrl);
	BIO_meth_set_create(m, eol_create);
	BIO_meth_set_destroy(m, eol_destroy);
	eol_type = type;
	eol_method = m;
}

BIO *p11i_bio_eol_new(p11i_eol to)
{
	struct eol_state *s;
	BIO *b;

	if (!CRYPTO_THREAD_run_once(&eol_once, eol_method_init) || eol_method == NULL)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->to = to;
	b = BIO_new(eol_method);
	if (b == NULL) {
		free(s);
		return NULL;
	}
	BIO_set_data(b, s);
	return b;
}

/* -------------------------------------------------------- canonical form */

#define LR_SIZE   65536
#define OBUF_SIZE 65536
#define SPOOL_MEM (1024 * 1024)
#define MAX_DEPTH 32
#define MAX_LINE  998

/* Buffered line-segment reader over BIO_read (the body is ours to consume). */
struct lr {
	BIO *in;
	char *buf;
	size_t start, end, last;
	int eof, error;
	int limited; /* read no more than @left bytes from @in */
	uint64_t left;
};

static int lr_init(struct lr *r, BIO *in)
{
	memset(r, 0, sizeof(*r));
	r->in = in;
	r->buf = malloc(LR_SIZE);
	return r->buf ? 0 : -1;
}

/* Read more after the unread bytes (moved to the front): 1 when the buffer grew, else at end. */
static int lr_refill(struct lr *r)
{
	size_t avail = r->end - r->start, want;
	int got;

	if (r->eof)
		return 0;
	memmove(r->buf, r->buf + r->start, avail);
	r->start = 0;
	r->end = avail;
	want = LR_SIZE - r->end;
	if (r->limited && want > r->left)
		want = (size_t)r->left;
	got = want > 0 ? BIO_read(r->in, r->buf + r->end, (int)want) : 0;
	if (got > 0) {
		r->end += (size_t)got;
		if (r->limited)
			r->left -= (size_t)got;
		return 1;
	}
	if (r->limited && want == 0) {
		r->eof = 1;
	} else {
		/* A replay of the input that ends early: the file changed. */
		if (r->limited)
			r->error = 1;
		r->eof = 1;
		if (got < 0 && !BIO_eof(r->in))
			r->error = 1;
	}
	return 0;
}

static int lr_seg(struct lr *r, const char **p, size_t *n)
{
	for (;;) {
		char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
		size_t avail = r->end - r->start;

		if (nl != NULL || (avail > 0 && (r->eof || avail == LR_SIZE))) {
			size_t len = nl ? (size_t)(nl - (r->buf + r->start)) + 1 : avail;

			/* Keep trailing CRs with the '\n' that may follow them. */
			if (nl == NULL && !r->eof) {
				size_t k = len;

				while (k > 0 && r->buf[r->start + k - 1] == '\r')
					k--;
				if (k > 0)
					len = k;
			}
			*p = r->buf + r->start;
			*n = len;
			r->last = r->start;
			r->start += len;
			return 1;
		}
		if (r->eof)
			return r->error ? -1 : 0;
		lr_refill(r);
	}
}

/*
 * Everything buffered, whatever its lines (a top-level leaf has no
 * delimiter to look for): 1, 0 at the end, -1 on error.  lr_unread() gives
 * back the tail of the block.
 */
static int lr_block(struct lr *r, const char **p, size_t *n)
{
	while (r->start == r->end)
		if (lr_refill(r) == 0)
			return r->error ? -1 : 0;
	*p = r->buf + r->start;
	*n = r->end - r->start;
	r->last = r->start;
	r->start = r->end;
	return 1;
}

/* Keep only the first @p k bytes of the block lr_block() gave last. */
static void lr_unread(struct lr *r, size_t k)
{
	r->start = r->last + k;
}

enum end_kind { END_NONE, END_EOF, END_DELIM };

struct canon {
	struct lr r;       /* the body */
	struct lr spool_r; /* replay of a spooled leaf, when active */
	BIO *spool;        /* what spool_r reads */
	int spooling;      /* spool_r is active */
	int replay_in;     /* spool_r reads the input itself, from where the leaf began */
	long resume;       /* then: where the body reader's next read starts */
	int bol;           /* the next segment starts a line */
	/* The end met by the body reader, sticky until the multipart takes it. */
	enum end_kind end;
	size_t end_level; /* index into bnd */
	int end_close, end_eol;
	const char *bnd[MAX_DEPTH];
	size_t blen[MAX_DEPTH];
	size_t nb;
	/* Output */
	BIO *out;
	char *ob;
	size_t on;
	int ofail;
	int pending; /* a line end is owed before the next output */
	const p11i_canon_undo *undo;
	/* The line-end filter a clean block may bypass (split_eol()): 0 not looked for, -1 none. */
	int split;
	BIO *split_eol;
	char *sbuf; /* a block in CRLF for the digests (split_fast()) */
	/* The body, whose clean blocks the output may take as ranges of it (as_read()). */
	int ref_fd; /* -1: none */
	const struct stat *ref_st;
	/* The digests on a helper (p11i_canon_undo.digests): fed here; the chain from dout on. */
	struct p11i_offload *dq;
	BIO *dout;
	/* The line end split_block() left owed: where the file has it (hold_len 0: nowhere). */
	long long hold_off;
	size_t hold_len;
	p11s_error *err;
};

static void flush_out(struct canon *c)
{
	if (c->on > 0 && !c->ofail) {
		if (c->dq != NULL) {
			/* What the digest BIOs would do: the bytes to their next, and hashed. */
			if (write_all(c->dout, c->ob, c->on) != 0 ||
			    p11i_offload_put(c->dq, c->ob, c->on) != 0)
				c->ofail = 1;
		} else if (write_all(c->out, c->ob, c->on) != 0) {
			c->ofail = 1;
		}
	}
	c->on = 0;
}

static void put(struct canon *c, const char *p, size_t n)
{
	while (n > 0) {
		size_t room = OBUF_SIZE - c->on;
		size_t k = n < room ? n : room;

		memcpy(c->ob + c->on, p, k);
		c->on += k;
		p += k;
		n -= k;
		if (c->on == OBUF_SIZE)
			flush_out(c);
	}
}

static void put_s(struct canon *c, const char *s)
{
	put(c, s, strlen(s));
}

static void put_pending(struct canon *c)
{
	if (c->pending) {
		put(c, "\r\n", 2);
		c->pending = 0;
	}
}

/* Which enclosing boundary, if any, the line @p p opens or closes. */
static int match_delim(struct canon *c, const char *p, size_t n, size_t *level, int *close)
{
	size_t len = strip_eol(p, n);

	if (len < 2 || p[0] != '-' || p[1] != '-')
		return 0;
	/* Innermost first: an inner boundary may extend an outer one. */
	for (size_t i = c->nb; i-- > 0;) {
		size_t bl = c->blen[i], k;

		if (len < 2 + bl || memcmp(p + 2, c->bnd[i], bl) != 0)
			continue;
		k = 2 + bl;
		*close = 0;
		if (len >= k + 2 && p[k] == '-' && p[k + 1] == '-') {
			*close = 1;
			k += 2;
		}
		while (k < len && is_wsp((unsigned char)p[k]))
			k++;
		if (k != len)
			continue;
		*level = i;
		return 1;
	}
	return 0;
}

/*
 * The next segment of the current body: from the spool while replaying,
 * then from the input.  0 at the end of the body: a delimiter of an
 * enclosing multipart, or the end of input (c->end says which).
 */
static int body_next(struct canon *c, const char **p, size_t *n, int block)
{
	int r;

	/* A spooled leaf replays first: the end it met comes after it. */
	if (c->spooling) {
		r = block ? lr_block(&c->spool_r, p, n) : lr_seg(&c->spool_r, p, n);
		if (r > 0) {
			c->bol = (*p)[*n - 1] == '\n';
			return 1;
		}
		c->spooling = 0;
		free(c->spool_r.buf);
		c->spool_r.buf = NULL;
		BIO_free(c->spool);
		c->spool = NULL;
		if (c->replay_in) {
			c->replay_in = 0;
			if (BIO_seek(c->r.in, c->resume) != 0)
				return -1;
		}
		if (r < 0)
			return -1;
	}
	if (c->end != END_NONE)
		return 0;
	r = block ? lr_block(&c->r, p, n) : lr_seg(&c->r, p, n);
	if (r < 0)
		return -1;
	if (r == 0) {
		c->end = END_EOF;
		return 0;
	}
	if (c->bol && c->nb > 0) {
		size_t level;
		int close;

		if (match_delim(c, *p, *n, &level, &close)) {
			c->end = END_DELIM;
			c->end_level = level;
			c->end_close = close;
			c->end_eol = (*p)[*n - 1] == '\n';
			return 0;
		}
	}
	c->bol = (*p)[*n - 1] == '\n';
	return 1;
}

/* One line (or a piece of a long one) of the current body. */
static int body_seg(struct canon *c, const char **p, size_t *n)
{
	return body_next(c, p, n, 0);
}

/*
 * Whatever is buffered of the current body, lines or not: only where no
 * delimiter can end it (c->nb == 0, a top-level leaf).
 */
static int body_block(struct canon *c, const char **p, size_t *n)
{
	return body_next(c, p, n, c->nb == 0);
}

static int body_seg_fn(void *arg, const char **p, size_t *n)
{
	return body_seg(arg, p, n);
}

static p11s_rc read_fail(struct canon *c)
{
	return p11i_err(c->err, P11S_E_IO, "cannot read the message body");
}

/* Header fields in canonical form (CRLF), optionally without one field. */
static void put_fields(struct canon *c, const p11i_headers *h, unsigned classes, const char *skip)
{
	for (size_t i = 0; i < h->f.n; i++) {
		const char *raw = h->f.v[i].raw, *end = raw + h->f.v[i].len;

		if (!(p11i_header_class_of(h->f.v[i].name) & classes))
			continue;
		if (skip != NULL && strcasecmp(h->f.v[i].name, skip) == 0)
			continue;
		while (raw < end) {
			const char *nl = memchr(raw, '\n', (size_t)(end - raw));
			size_t n = nl ? (size_t)(nl - raw) + 1 : (size_t)(end - raw);

			put(c, raw, strip_eol(raw, n));
			put(c, "\r\n", 2);
			raw += n;
		}
	}
}

enum leaf_enc { ENC_PASS, ENC_QP, ENC_B64_LINES, ENC_B64_RAW };

/*
 * Base64 as S/MIME has it (RFC 2045): lines of 76 characters, CRLF between
 * them, none after the last.  The alphabet is OpenSSL's EVP_EncodeBlock(),
 * a line (57 bytes) at a time; its own streaming encoder
 * (EVP_EncodeUpdate, BIO_f_base64) only writes 64-character LF lines.
 */
#define B64_LINE_IN  57
#define B64_LINE_OUT 76

struct b64 {
	unsigned char in[B64_LINE_IN]; /* the start of a line not yet encoded */
	size_t nin;
	int started; /* a line is out: the next one follows a CRLF */
};

/* Encode @p n bytes as lines (all full but the last), straight into the output buffer. */
static void b64_lines(struct canon *c, struct b64 *b, const unsigned char *u, size_t n)
{
	if (n == 0)
		return;
	if (!b->started)
		put_pending(c);
	while (n > 0) {
		size_t k = n < B64_LINE_IN ? n : B64_LINE_IN;

		/* Room for CRLF, the line and the NUL that EVP_EncodeBlock() adds. */
		if (OBUF_SIZE - c->on < 2 + B64_LINE_OUT + 1)
			flush_out(c);
		if (b->started) {
			c->ob[c->on++] = '\r';
			c->ob[c->on++] = '\n';
		}
		b->started = 1;
		c->on += (size_t)EVP_EncodeBlock((unsigned char *)c->ob + c->on, u, (int)k);
		u += k;
		n -= k;
	}
}

static void b64_feed(struct canon *c, struct b64 *b, const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t whole;

	if (b->nin > 0) {
		size_t k = n < B64_LINE_IN - b->nin ? n : B64_LINE_IN - b->nin;

		memcpy(b->in + b->nin, u, k);
		b->nin += k;
		u += k;
		n -= k;
		if (b->nin < B64_LINE_IN)
			return;
		b64_lines(c, b, b->in, B64_LINE_IN);
		b->nin = 0;
	}
	whole = n - n % B64_LINE_IN;
	b64_lines(c, b, u, whole);
	memcpy(b->in, u + whole, n - whole);
	b->nin = n - whole;
}

static void b64_final(struct canon *c, struct b64 *b)
{
	b64_lines(c, b, b->in, b->nin);
	b->nin = 0;
}

struct qp {
	int col;
	int held; /* a blank whose fate depends on what follows */
};

static void qp_tok(struct canon *c, struct qp *q, const char *t, int n)
{
	if (q->col + n > 75) {
		put(c, "=\r\n", 3);
		q->col = 0;
	}
	put(c, t, (size_t)n);
	q->col += n;
}

static void qp_hex(struct canon *c, struct qp *q, unsigned char b)
{
	static const char hex[] = "0123456789ABCDEF";
	char t[3] = {'=', hex[b >> 4], hex[b & 15]};

	qp_tok(c, q, t, 3);
}

static void qp_flush_held(struct canon *c, struct qp *q, int at_eol)
{
	if (!q->held)
		return;
	if (at_eol) {
		qp_hex(c, q, (unsigned char)q->held);
	} else {
		char t = (char)q->held;

		qp_tok(c, q, &t, 1);
	}
	q->held = 0;
}

static void qp_feed(struct canon *c, struct qp *q, const char *p, size_t n, int bol)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char b = (unsigned char)p[i];

		qp_flush_held(c, q, 0);
		if (b == ' ' || b == '\t') {
			q->held = b;
		} else if (i == 0 && bol && b == 'F' && n >= 5 && memcmp(p, "From ", 5) == 0) {
			/* mbox writers would turn the line into ">From ". */
			qp_hex(c, q, b);
		} else if (i == 0 && bol && b == '.' && (n == 1 || p[1] == '\r' || p[1] == '\n')) {
			qp_hex(c, q, b);
		} else if (b >= 33 && b <= 126 && b != '=') {
			char t = (char)b;

			qp_tok(c, q, &t, 1);
		} else {
			qp_hex(c, q, b);
		}
	}
}

/*
 * The 7-bit text test of a leaf, fed its body in pieces of any size: a
 * byte >= 0x80 or NUL, a CR that is not one of the CRs before a line's
 * LF, or a line over 998 bytes (line ends not counted) makes it dirty.
 */
struct scan7 {
	size_t linelen; /* the current line so far, line end not counted */
	size_t crs;     /* CRs just seen, whose fate the next byte decides */
	int dirty;
	int done; /* dirty, and the line where it happened has ended */
};

/* Nonzero when one of the eight bytes of @p w is LF, CR, NUL or >= 0x80. */
static uint64_t special8(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	uint64_t lf = w ^ (ones * '\n'), cr = w ^ (ones * '\r');

	/* (v - ones) & ~v flags a zero byte (and may flag bytes above one: no matter here). */
	return (w | ((w - ones) & ~w) | ((lf - ones) & ~lf) | ((cr - ones) & ~cr)) & high;
}

/*
 * Scan @p n bytes; the count consumed: all of them, or fewer when the leaf
 * turned out dirty and the line where it did ended (past its LF), so that
 * a replay of what was consumed ends at a line start.
 */
static size_t scan7_feed(struct scan7 *s, const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = 0;
	uint64_t w;

	if (s->done)
		return 0;
	while (i < n) {
		if (s->dirty) {
			const unsigned char *nl = memchr(u + i, '\n', n - i);

			if (nl == NULL)
				return n;
			s->done = 1;
			return (size_t)(nl - u) + 1;
		}
		/* Plain text eight bytes at a time; every loop below advances i. */
		if (s->crs == 0) {
			size_t run = 0;

#if defined(__SSE2__)
			/* Sixteen at a time, line ends included (a line a few vectors long is the
			 * rule). */
			const __m128i lf = _mm_set1_epi8('\n');

			while (i + 16 <= n) {
				__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(u + i));
				unsigned bad = sse_not_plain(v);
				unsigned lfs = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf));

				if (bad != 0)
					break;
				if (lfs == 0) {
					if (s->linelen + 16 > MAX_LINE)
						break;
					s->linelen += 16;
				} else {
					/* The first LF ends the current line; lines after it are
					 * short. */
					if (s->linelen + (size_t)__builtin_ctz(lfs) > MAX_LINE)
						break;
					s->linelen = 15 - (size_t)(31 - __builtin_clz(lfs));
				}
				i += 16;
			}
#endif
			while (i + 8 <= n) {
				memcpy(&w, u + i, 8);
				if (special8(w))
					break;
				i += 8;
				run += 8;
			}
			s->linelen += run;
			if (s->linelen > MAX_LINE) {
				s->dirty = 1;
				continue;
			}
			if (i >= n)
				break;
		}
		unsigned char b = u[i++];

		if (b == '\n') {
			s->crs = 0;
			s->linelen = 0;
		} else if (b == '\r') {
			/* The line reader hands a buffer of CRs over as text: bare CRs. */
			if (++s->crs >= LR_SIZE)
				s->dirty = 1;
		} else if (s->crs > 0 || b >= 0x80 || b == 0 || ++s->linelen > MAX_LINE) {
			s->dirty = 1;
		}
	}
	return n;
}

/* The body ended: CRs with no LF after them are bare CRs. */
static int scan7_end(struct scan7 *s)
{
	if (s->crs > 0)
		s->dirty = 1;
	return s->dirty;
}

/* Lines are gathered into blocks before they go to the spool (one BIO_write per line cost more than
 * the copy). */
static int stage_flush(struct canon *c, char *stage, size_t *sn)
{
	if (*sn > 0 && write_all(c->spool, stage, *sn) != 0)
		return -1;
	*sn = 0;
	return 0;
}

/*
 * Where the reader @p in is, as BIO_tell() says it: from the input's own
 * count when it keeps one (no system call), else from stdio (an lseek).
 */
static long in_tell(BIO *in)
{
	long t;

	return p11i_input_pos(in, &t) == 1 ? t : BIO_tell(in);
}

/* Where the body reader's next segment starts in a regular file, or -1. */
static long body_offset(struct canon *c)
{
	FILE *fp;
	struct stat st;
	long t;
	int known = c->spooling ? 0 : p11i_input_pos(c->r.in, &t);

	if (c->spooling || known == 0)
		return -1;
	if (known < 0) {
		/* Not an input that knows itself (standard input, another BIO): ask the file. */
		fp = p11i_bio_fp(c->r.in);
		if (fp == NULL || fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode))
			return -1;
		t = BIO_tell(c->r.in);
	}
	if (t < 0 || (size_t)t < c->r.end - c->r.start)
		return -1;
	return t - (long)(c->r.end - c->r.start);
}

/*
 * The next piece of the leaf being scanned, fed to @p s: a line, or at the
 * top level (no delimiter to find) a whole buffered block.  The count of
 * bytes taken in *n (what a replay must cover); 0 at the end of the leaf
 * or once it is decided, -1 on error.
 */
static int scan_piece(struct canon *c, struct scan7 *s, const char **p, size_t *n)
{
	size_t used;
	int r;

	if (s->done)
		return 0;
	r = body_block(c, p, n);
	if (r <= 0) {
		if (r == 0)
			scan7_end(s);
		return r;
	}
	used = scan7_feed(s, *p, *n);
	if (used < *n) {
		/* The rest of the block stays for the reader it came from. */
		lr_unread(c->spooling ? &c->spool_r : &c->r, used);
		if (used > 0 && (*p)[used - 1] == '\n')
			c->bol = 1;
		*n = used;
	}
	return *n > 0 ? 1 : 0;
}

/*
 * A leaf of a regular file is read again from the file rather than kept:
 * for a large text part that halves what passes through the kernel.
 */
static int scan_leaf_seekable(struct canon *c, long start)
{
	const char *p;
	size_t n;
	uint64_t scanned = 0;
	struct scan7 s = {0};
	int r;

	while ((r = scan_piece(c, &s, &p, &n)) > 0)
		scanned += n;
	if (r < 0)
		return read_fail(c), -1;
	c->resume = in_tell(c->r.in);
	if (c->resume < 0 || BIO_seek(c->r.in, start) != 0)
		return p11i_err(c->err, P11S_E_IO, "cannot read the input a second time"), -1;
	if (lr_init(&c->spool_r, c->r.in) != 0)
		return p11i_err_nomem(c->err), -1;
	c->spool_r.limited = 1;
	c->spool_r.left = scanned;
	c->replay_in = 1;
	c->spooling = 1;
	c->bol = 1;
	return s.dirty;
}

/*
 * Read a leaf declared 7bit (or nothing) ahead until it proves 7-bit text
 * or not, keeping what was read for replay.  Returns 1 when it needs an
 * encoding, 0 when it does not, -1 on error (recorded).
 */
static int scan_leaf(struct canon *c)
{
	const char *p;
	size_t n, spooled = 0, sn = 0;
	struct scan7 s = {0};
	int r;
	BIO *fb = NULL;
	char *stage;
	long start = body_offset(c);

	if (start >= 0)
		return scan_leaf_seekable(c, start);
	stage = malloc(OBUF_SIZE);
	c->spool = BIO_new(BIO_s_mem());
	if (c->spool == NULL || stage == NULL) {
		free(stage);
		return p11i_err_nomem(c->err), -1;
	}
	while ((r = scan_piece(c, &s, &p, &n)) > 0) {
		if (spooled + n > SPOOL_MEM && fb == NULL) {
			/* Past the memory budget: move the spool to an unlinked file. */
			char *mem;
			long ml;

			if (stage_flush(c, stage, &sn) != 0)
				goto write_fail;
			ml = BIO_get_mem_data(c->spool, &mem);
			fb = p11i_spool_new(NULL);
			if (fb == NULL || (ml > 0 && write_all(fb, mem, (size_t)ml) != 0)) {
				BIO_free(fb);
				free(stage);
				return p11i_err(c->err, P11S_E_IO,
				                "cannot spool a large part to a temporary file: %s",
				                strerror(errno)),
				       -1;
			}
			BIO_free(c->spool);
			c->spool = fb;
		}
		if (sn + n > OBUF_SIZE && stage_flush(c, stage, &sn) != 0)
			goto write_fail;
		if (n > OBUF_SIZE) {
			if (write_all(c->spool, p, n) != 0)
				goto write_fail;
		} else {
			memcpy(stage + sn, p, n);
			sn += n;
		}
		spooled += n;
	}
	if (stage_flush(c, stage, &sn) != 0)
		goto write_fail;
	free(stage);
	stage = NULL;
	if (r < 0)
		return read_fail(c), -1;
	if (fb != NULL && BIO_seek(c->spool, 0) != 0)
		return p11i_err(c->err, P11S_E_IO, "cannot read back a spooled part: %s",
		                strerror(errno)),
		       -1;
	if (lr_init(&c->spool_r, c->spool) != 0)
		return p11i_err_nomem(c->err), -1;
	c->spooling = 1;
	/* Replay starts where the leaf started: at a line start. */
	c->bol = 1;
	return s.dirty;
write_fail:
	free(stage);
	return p11i_err(c->err, P11S_E_IO, "cannot spool a large part to a temporary file: %s",
	                strerror(errno)),
	       -1;
}

/* Eight bytes at a time: every byte of a large attachment passes here. */
static int has_8bit(const char *p, size_t n)
{
	uint64_t acc = 0, w;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		acc |= w;
	}
	for (; i < n; i++)
		acc |= (unsigned char)p[i];
	return (acc & 0x8080808080808080ull) != 0;
}

/* One block of a clean leaf; *crs: CRs at the end of the last block, their fate unknown. */
static void emit_clean_block(struct canon *c, const char *p, size_t n, size_t *crs)
{
	const char *end = p + n, *nl, *t;

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		t = nl ? nl : end;
		while (t > p && t[-1] == '\r')
			t--;
		put_pending(c);
		if (t > p) {
			/* Held CRs with text after them were bare ones. */
			for (; *crs > 0; (*crs)--)
				put(c, "\r", 1);
			put(c, p, (size_t)(t - p));
		}
		if (nl == NULL) {
			*crs += (size_t)(end - t);
			return;
		}
		/* The CRs before this LF, held ones included, were the line end's. */
		*crs = 0;
		c->pending = 1;
		p = nl + 1;
	}
}

/*
 * The split: a clean block goes to the output as the file had it, and
 * only the digests see its canonical form.  That form went through the
 * digests and then a line-end filter that took each CRLF back to the
 * file's line end (for an LF file a quarter of sign's own CPU for a large
 * text part: two copies and two scans of every byte); with nothing but
 * digests between us and that filter, the digests are fed directly and
 * the filter is bypassed.  The output is the same bytes: the filter would
 * have turned exactly these CRLFs into exactly these line ends.  Blocks
 * where that is not so simple (a CR in an LF file, a line end other than
 * one CR and an LF in a CRLF file) take the whole chain.
 */
#define SPLIT_CHUNK ((OBUF_SIZE - 32) / 2)

/*
 * @p n bytes into @p o, each LF as CRLF; the length (at most 2n).  With
 * @p scan (a constant: each caller gets its own copy), also scan7_feed()'s
 * test, *linelen carried as the scan carries it: (size_t)-1 (nothing
 * decided) at the first byte that is not plain text (CR, NUL, >= 0x80) or
 * a line over MAX_LINE, and the two passes then do it.  Without, @p p
 * holds no CR.
 */
static inline __attribute__((always_inline)) size_t to_crlf(const char *p, size_t n, char *o,
                                                            size_t *linelen, int scan)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = 0, k = 0, ll = scan ? *linelen : 0;

#if defined(__SSE2__)
	const __m128i lf = _mm_set1_epi8('\n');

	/* Sixteen bytes stored at once; an LF's CRLF overwrites from where the LF went. */
	while (i + 16 <= n) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(u + i));
		unsigned bad = scan ? sse_not_plain(v) : 0;
		unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf));

		if (m == 0) {
			if (scan && (bad != 0 || (ll += 16) > MAX_LINE))
				return (size_t)-1;
			_mm_storeu_si128((__m128i *)(void *)(o + k), v);
			i += 16;
			k += 16;
			continue;
		}
		m = (unsigned)__builtin_ctz(m);
		/* Only the bytes up to the LF are this step's. */
		if (scan && ((bad & ((1u << m) - 1u)) != 0 || ll + m > MAX_LINE))
			return (size_t)-1;
		_mm_storeu_si128((__m128i *)(void *)(o + k), v);
		k += m;
		o[k++] = '\r';
		o[k++] = '\n';
		i += m + 1;
		ll = 0;
	}
#endif
	for (; i < n; i++) {
		if (u[i] == '\n') {
			o[k++] = '\r';
			ll = 0;
		} else if (scan && (u[i] == '\r' || u[i] == 0 || u[i] >= 0x80 || ++ll > MAX_LINE)) {
			return (size_t)-1;
		}
		o[k++] = (char)u[i];
	}
	if (scan)
		*linelen = ll;
	return k;
}

/* The filter to bypass: the chain is digests, then our line-end filter, then the output. */
static BIO *split_eol(struct canon *c)
{
	if (c->split == 0) {
		c->split = -1;
		for (BIO *b = c->out; b != NULL; b = BIO_next(b)) {
			if (BIO_method_type(b) == BIO_TYPE_MD)
				continue;
			if (eol_method != NULL && BIO_method_type(b) == eol_type &&
			    BIO_next(b) != NULL) {
				c->split_eol = b;
				c->split = 1;
			}
			break;
		}
	}
	return c->split > 0 ? c->split_eol : NULL;
}

/*
 * A CRLF file's block whose every line ends in exactly one CR and an LF
 * (each CR followed by an LF, each LF preceded by a CR, neither at an end
 * of the block alone) is its own canonical form and its own output.
 */
static int crlf_exact(const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = 0;
	unsigned carry = 0; /* a CR ended the last vector */

	if (n == 0 || u[0] == '\n' || u[n - 1] == '\r')
		return 0;
#if defined(__SSE2__)
	const __m128i lf = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r');

	for (; i + 16 <= n; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(u + i));
		unsigned c = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, cr));
		unsigned l = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf));

		if ((((c << 1) | carry) & 0xffffu) != l)
			return 0;
		carry = c >> 15;
	}
#endif
	for (; i < n; i++) {
		if ((u[i] == '\n') != (carry != 0))
			return 0;
		carry = u[i] == '\r';
	}
	return carry == 0;
}

static void split_digest(struct canon *c, BIO *eol, const char *p, size_t n)
{
	if (c->dq != NULL) {
		if (p11i_offload_put(c->dq, p, n) != 0)
			c->ofail = 1;
		return;
	}
	for (BIO *b = c->out; b != eol; b = BIO_next(b)) {
		EVP_MD_CTX *ctx = NULL;

		if (BIO_get_md_ctx(b, &ctx) <= 0 || ctx == NULL || !EVP_DigestUpdate(ctx, p, n))
			c->ofail = 1;
	}
}

/*
 * Where the body reader's @p p (a block as the file has it) is in the
 * file, or -1 when the output is not to take it by reference: no file, a
 * replay, or an output that is not the end of the chain.
 */
static long long as_read_offset(struct canon *c, BIO *next, const char *p)
{
	long t;

	if (c->ref_fd < 0 || c->spooling || c->r.limited || p < c->r.buf ||
	    p >= c->r.buf + c->r.end || BIO_next(next) != NULL)
		return -1;
	t = in_tell(c->r.in);
	if (t < 0 || (size_t)t < c->r.end)
		return -1;
	return (long long)t - (long long)(c->r.end - (size_t)(p - c->r.buf));
}

/* @p n bytes to @p next that are the file's at @p off (-1: not known to be): by reference if it
 * can. */
static void as_read(struct canon *c, BIO *next, long long off, const char *p, size_t n)
{
	struct p11i_bio_ref ref = {c->ref_fd, c->ref_st, off, p, n};

	if (off >= 0 && BIO_ctrl(next, P11I_BIO_CTRL_WRITE_REF, 0, &ref) == P11I_BIO_CTRL_WRITE_REF)
		return;
	if (write_all(next, p, n) != 0)
		c->ofail = 1;
}

/*
 * emit_clean_block() of a block, split: with no CR at all to an LF filter
 * (the digests get each LF as CRLF), or crlf_exact() to a CRLF filter (the
 * digests get the block itself).
 */
static void split_block(struct canon *c, BIO *eol, const char *p, size_t n, const char *conv,
                        size_t convn)
{
	struct eol_state *es = BIO_get_data(eol);
	int lf = es->to == P11I_EOL_LF;
	/* A final line end stays owed, as emit_clean_block() leaves it pending. */
	size_t m = p[n - 1] != '\n' ? n : lf ? n - 1 : n - 2;
	BIO *next = BIO_next(eol);
	long long off = as_read_offset(c, next, p);

	if (c->pending) {
		/* The line end a block held back: by reference where the file has those bytes. */
		split_digest(c, eol, "\r\n", 2);
		as_read(c, next, c->hold_len == (lf ? 1u : 2u) ? c->hold_off : -1,
		        lf ? "\n" : "\r\n", lf ? 1 : 2);
	}
	c->hold_len = 0;
	if (lf && conv != NULL) {
		/* Converted already, the whole block: its last CRLF is the owed one. */
		split_digest(c, eol, conv, m < n ? convn - 2 : convn);
	} else if (lf) {
		for (size_t i = 0; i < m;) {
			size_t k = m - i < SPLIT_CHUNK ? m - i : SPLIT_CHUNK;

			split_digest(c, eol, c->ob, to_crlf(p + i, k, c->ob, NULL, 0));
			i += k;
		}
	} else if (m > 0) {
		split_digest(c, eol, p, m);
	}
	if (m > 0)
		as_read(c, next, off, p, m);
	c->pending = m < n;
	/* Held back: p[m..n), the very bytes (LF, or CR LF) the filter will write for it. */
	if (m < n && off >= 0 && memcmp(p + m, lf ? "\n" : "\r\n", n - m) == 0) {
		c->hold_off = off + (long long)m;
		c->hold_len = n - m;
	}
	/* The filter's state as if the block had gone through it: its last byte was no CR. */
	es->w_cr = es->w_prev_cr = 0;
}

/* A clean block: split when it can be, else through the whole chain. */
static void emit_block(struct canon *c, const char *p, size_t n, size_t *crs)
{
	BIO *eol = n > 0 ? split_eol(c) : NULL;
	struct eol_state *es = eol != NULL ? BIO_get_data(eol) : NULL;
	size_t a = 0, b = n;

	if (es == NULL || c->ofail) {
		emit_clean_block(c, p, n, crs);
		return;
	}
	if (es->to == P11I_EOL_CRLF) {
		/*
		 * A CRLF cut by an edge of the block goes the long way (the line
		 * up to the first LF, the CRs after the last), the lines between
		 * are split: blocks fall anywhere in a CRLF file.
		 */
		if (*crs > 0 || p[0] == '\n') {
			const char *nl = memchr(p, '\n', n);

			a = nl ? (size_t)(nl - p) + 1 : n;
		}
		if (a < n && p[n - 1] == '\r') {
			for (b = n; b > a && p[b - 1] != '\n'; b--)
				;
		}
		if (a > 0)
			emit_clean_block(c, p, a, crs);
	} else if (*crs > 0) {
		emit_clean_block(c, p, n, crs);
		return;
	}
	if (b > a) {
		/* What is buffered goes first, through the filter, which then holds nothing. */
		flush_out(c);
		if (!c->ofail && !es->w_cr &&
		    (es->to == P11I_EOL_LF ? memchr(p + a, '\r', b - a) == NULL
		                           : crlf_exact(p + a, b - a)))
			split_block(c, eol, p + a, b - a, NULL, 0);
		else
			emit_clean_block(c, p + a, b - a, crs);
	}
	if (b < n)
		emit_clean_block(c, p + b, n - b, crs);
}

/*
 * speculate_leaf()'s block of an LF file in one pass: scanned, converted
 * for the digests and split.  0 when it cannot be (nothing done: the scan
 * and emit_block() follow), 1 when done.
 */
static int split_fast(struct canon *c, struct scan7 *s, const char *p, size_t n)
{
	BIO *eol = n > 0 && n <= LR_SIZE && s->crs == 0 ? split_eol(c) : NULL;
	struct eol_state *es = eol != NULL ? BIO_get_data(eol) : NULL;
	size_t ll = s->linelen, k;

	if (es == NULL || es->to != P11I_EOL_LF || c->ofail)
		return 0;
	if (c->sbuf == NULL && (c->sbuf = malloc(2 * LR_SIZE + 32)) == NULL)
		return 0;
	k = to_crlf(p, n, c->sbuf, &ll, 1);
	if (k == (size_t)-1)
		return 0;
	flush_out(c);
	if (c->ofail || es->w_cr)
		return 0;
	s->linelen = ll;
	split_block(c, eol, p, n, c->sbuf, k);
	return 1;
}

static void emit_clean_end(struct canon *c, size_t *crs)
{
	if (*crs > 0) {
		put_pending(c);
		for (; *crs > 0; (*crs)--)
			put(c, "\r", 1);
		c->pending = 0;
	}
}

/*
 * A top-level leaf that scanned as 7-bit text, passed through a buffered
 * block at a time: each LF and the CRs before it become CRLF.  The same
 * bytes as emit_leaf()'s line by line path, without its cost per line.
 */
static p11s_rc emit_clean_blocks(struct canon *c)
{
	const char *p;
	size_t n, crs = 0;
	int r;

	while ((r = body_block(c, &p, &n)) > 0)
		emit_block(c, p, n, &crs);
	if (r < 0)
		return read_fail(c);
	emit_clean_end(c, &crs);
	return P11S_OK;
}

static p11s_rc emit_leaf(struct canon *c, enum leaf_enc enc, int check_7bit)
{
	const char *p;
	size_t n;
	int r, bol = 1, data_eol = 0;
	char raw_eol[2];
	size_t raw_eol_len = 0;
	struct b64 b = {0};
	struct qp q = {0};

	while ((r = body_seg(c, &p, &n)) > 0) {
		int eol = p[n - 1] == '\n';
		size_t len = eol ? strip_eol(p, n) : n;

		switch (enc) {
		case ENC_PASS:
			if (check_7bit && has_8bit(p, len))
				return p11i_err(c->err, P11S_E_INPUT,
				                "a part declared base64 or quoted-printable holds "
				                "8-bit bytes");
			put_pending(c);
			put(c, p, len);
			c->pending = eol;
			break;
		case ENC_QP:
			if (bol) {
				put_pending(c);
				q.col = 0;
			}
			qp_feed(c, &q, p, len, bol);
			if (eol) {
				qp_flush_held(c, &q, 1);
				c->pending = 1;
			}
			break;
		case ENC_B64_LINES:
			if (data_eol)
				b64_feed(c, &b, "\r\n", 2);
			b64_feed(c, &b, p, len);
			data_eol = eol;
			break;
		case ENC_B64_RAW:
			if (raw_eol_len)
				b64_feed(c, &b, raw_eol, raw_eol_len);
			raw_eol_len = 0;
			/* Hold back the line end: before a delimiter it is the delimiter's. */
			if (eol) {
				raw_eol_len = n >= 2 && p[n - 2] == '\r' ? 2 : 1;
				memcpy(raw_eol, &"\r\n"[2 - raw_eol_len], raw_eol_len);
			}
			b64_feed(c, &b, p, n - raw_eol_len);
			break;
		}
		bol = eol;
	}
	if (r < 0)
		return read_fail(c);
	/* At the end of input the last line end belongs to the content. */
	if (enc == ENC_QP)
		qp_flush_held(c, &q, 1);
	if (c->end == END_EOF) {
		if (enc == ENC_B64_LINES && data_eol)
			b64_feed(c, &b, "\r\n", 2);
		if (enc == ENC_B64_RAW && raw_eol_len)
			b64_feed(c, &b, raw_eol, raw_eol_len);
	}
	if (enc == ENC_B64_LINES || enc == ENC_B64_RAW) {
		b64_final(c, &b);
		if (b.started)
			c->pending = 0;
	}
	return P11S_OK;
}

/*
 * A top-level leaf of a regular file, written as it is scanned (as clean
 * 7-bit text, its fields first) instead of scanned and then read again.
 * 0: it was clean and is written; 1: it was not, the output is back at
 * the mark and the input at the leaf's start, for the encoders; 2: the
 * output cannot be taken back (nothing done); -1: error (recorded).
 */
static int speculate_leaf(struct canon *c, const p11i_headers *h, unsigned classes)
{
	long start = body_offset(c);
	struct scan7 s = {0};
	const char *p;
	size_t n, crs = 0;
	int r, pending = c->pending;

	if (start < 0 || c->undo == NULL)
		return 2;
	flush_out(c);
	if (c->ofail)
		return p11i_err_ossl(c->err, P11S_E_IO, "cannot write the canonical MIME entity"),
		       -1;
	if (c->undo->mark(c->undo->arg) != 0)
		return 2;
	put_fields(c, h, classes, NULL);
	c->pending = 1;
	while ((r = body_block(c, &p, &n)) > 0) {
		if (crs == 0 && split_fast(c, &s, p, n))
			continue;
		/* A block goes out only once the whole of it is known clean. */
		scan7_feed(&s, p, n);
		if (s.dirty)
			break;
		emit_block(c, p, n, &crs);
	}
	if (r < 0)
		return read_fail(c), -1;
	if (r == 0 && !scan7_end(&s)) {
		emit_clean_end(c, &crs);
		return 0;
	}
	/* Dirty: what went out of this leaf is taken back, and the leaf is read again. */
	c->on = 0;
	c->pending = pending;
	if (c->ofail)
		return p11i_err_ossl(c->err, P11S_E_IO, "cannot write the canonical MIME entity"),
		       -1;
	if (c->undo->rewind(c->undo->arg) != 0)
		return p11i_err(c->err, P11S_E_IO, "cannot take back a part written ahead"), -1;
	c->r.start = c->r.end = 0;
	c->r.eof = c->r.error = 0;
	c->end = END_NONE;
	c->bol = 1;
	if (BIO_seek(c->r.in, start) != 0)
		return p11i_err(c->err, P11S_E_IO, "cannot read the input a second time"), -1;
	return 1;
}

static p11s_rc entity(struct canon *c, const p11i_headers *h, unsigned classes, int in_digest,
                      size_t depth);

static const char *end_name(struct canon *c)
{
	return c->end == END_EOF ? "the end of the input" : "an enclosing multipart's boundary";
}

/* Preamble and epilogue: invisible text, kept, but never allowed to carry 8-bit bytes. */
static p11s_rc emit_filler(struct canon *c)
{
	const char *p;
	size_t n;
	int r;

	while ((r = body_seg(c, &p, &n)) > 0) {
		int eol = p[n - 1] == '\n';
		size_t len = eol ? strip_eol(p, n) : n;

		put_pending(c);
		for (size_t i = 0; i < len; i++) {
			unsigned char b = (unsigned char)p[i];

			put(c, (b >= 0x80 || b == 0 || b == '\r') ? "?" : (const char *)p + i, 1);
		}
		c->pending = eol;
	}
	return r < 0 ? read_fail(c) : P11S_OK;
}

static void put_delim(struct canon *c, const char *bnd, int close)
{
	put(c, "\r\n--", 4);
	put_s(c, bnd);
	if (close)
		put(c, "--", 2);
	c->pending = c->end_eol;
}

static p11s_rc multipart(struct canon *c, const p11i_headers *h, unsigned classes,
                         const char *media, const char *boundary, int relabel, size_t depth)
{
	size_t level = c->nb;
	int digest = strcmp(media, "multipart/digest") == 0;
	size_t part = 0;
	p11s_rc rc;

	if (c->nb >= MAX_DEPTH)
		return p11i_err(c->err, P11S_E_INPUT, "MIME nesting is deeper than %d", MAX_DEPTH);
	put_fields(c, h, classes, relabel ? "Content-Transfer-Encoding" : NULL);
	if (relabel)
		put_s(c, "Content-Transfer-Encoding: 7bit\r\n");
	c->pending = 1;
	c->bnd[level] = boundary;
	c->blen[level] = strlen(boundary);
	c->nb++;

	rc = emit_filler(c);
	if (rc != P11S_OK)
		goto out;
	for (;;) {
		if (c->end != END_DELIM || c->end_level != level) {
			rc =
			    p11i_err(c->err, P11S_E_INPUT,
			             "%s (boundary \"%s\") ends at %s before its closing delimiter "
			             "(truncated?)",
			             media, boundary, end_name(c));
			goto out;
		}
		int close = c->end_close;

		put_delim(c, boundary, close);
		c->end = END_NONE;
		c->bol = 1;
		if (close)
			break;
		part++;
		p11i_headers *ph = NULL;

		rc = parse_headers(body_seg_fn, c, 0, 0, &ph, c->err);
		if (rc != P11S_OK) {
			rc = p11i_err(c->err, rc, "part %zu of %s: %s", part, media,
			              p11s_error_message(c->err));
			goto out;
		}
		put_pending(c);
		rc = entity(c, ph, P11I_HDR_ALL, digest, depth + 1);
		p11i_headers_free(ph);
		if (rc != P11S_OK)
			goto out;
	}
	/* The epilogue runs to the end of the enclosing entity. */
	c->nb--;
	return emit_filler(c);
out:
	c->nb = level;
	return rc;
}

static int is_text(const char *media)
{
	return strncmp(media, "text/", 5) == 0;
}

static p11s_rc entity(struct canon *c, const p11i_headers *h, unsigned classes, int in_digest,
                      size_t depth)
{
	char *ct = p11i_headers_get(h, "Content-Type");
	char *media = p11i_mime_media_type(ct);
	char *cte = p11i_mime_transfer_encoding(h);
	char *boundary = NULL;
	p11s_rc rc = P11S_OK;
	int relabel;

	if (depth > MAX_DEPTH) {
		rc = p11i_err(c->err, P11S_E_INPUT, "MIME nesting is deeper than %d", MAX_DEPTH);
		goto out;
	}
	if (media == NULL)
		media = p11i_strdup(in_digest ? "message/rfc822" : "text/plain");
	if (media == NULL || cte == NULL) {
		rc = p11i_err_nomem(c->err);
		goto out;
	}
	relabel = strcmp(cte, "8bit") == 0 || strcmp(cte, "binary") == 0;

	if (strncmp(media, "multipart/", 10) == 0) {
		boundary = p11i_mime_param(ct, "boundary");
		if (boundary == NULL || *boundary == '\0' || strlen(boundary) > 200) {
			rc = p11i_err(c->err, P11S_E_INPUT, "%s without a boundary parameter",
			              media);
			goto out;
		}
		if (!relabel && strcmp(cte, "7bit") != 0) {
			rc = p11i_err(c->err, P11S_E_INPUT, "%s with transfer encoding %s", media,
			              cte);
			goto out;
		}
		rc = multipart(c, h, classes, media, boundary, relabel, depth);
		goto out;
	}
	if (strcmp(media, "message/rfc822") == 0 && (relabel || strcmp(cte, "7bit") == 0)) {
		p11i_headers *eh = NULL;

		put_fields(c, h, classes, relabel ? "Content-Transfer-Encoding" : NULL);
		if (relabel)
			put_s(c, "Content-Transfer-Encoding: 7bit\r\n");
		c->pending = 1;
		rc = parse_headers(body_seg_fn, c, 0, 0, &eh, c->err);
		if (rc != P11S_OK)
			goto out;
		put_pending(c);
		rc = entity(c, eh, P11I_HDR_ALL, 0, depth + 1);
		p11i_headers_free(eh);
		goto out;
	}

	enum leaf_enc enc = ENC_PASS;
	int check = 0;

	if (strcmp(cte, "base64") == 0 || strcmp(cte, "quoted-printable") == 0) {
		check = 1;
	} else if (strcmp(cte, "binary") == 0) {
		enc = ENC_B64_RAW;
	} else if (strcmp(cte, "8bit") == 0) {
		enc = is_text(media) ? ENC_QP : ENC_B64_LINES;
	} else {
		/* At the top level of a file, read once while it stays 7-bit. */
		int dirty = c->nb == 0 ? speculate_leaf(c, h, classes) : 2;

		if (dirty == 0)
			goto out;
		if (dirty == 2)
			dirty = scan_leaf(c);
		if (dirty < 0) {
			rc = p11s_error_rc(c->err);
			goto out;
		}
		if (dirty)
			enc = is_text(media) ? ENC_QP : ENC_B64_LINES;
	}
	if (enc == ENC_PASS) {
		put_fields(c, h, classes, NULL);
	} else {
		put_fields(c, h, classes, "Content-Transfer-Encoding");
		put_s(c, enc == ENC_QP ? "Content-Transfer-Encoding: quoted-printable\r\n"
		                       : "Content-Transfer-Encoding: base64\r\n");
	}
	c->pending = 1;
	if (enc == ENC_PASS && !check && c->nb == 0)
		rc = emit_clean_blocks(c);
	else
		rc = emit_leaf(c, enc, check);
out:
	free(ct);
	free(media);
	free(cte);
	free(boundary);
	return rc;
}

p11s_rc p11i_mime_canonicalize(const p11i_headers *h, unsigned classes, BIO *body, BIO *out,
                               p11s_error *err)
{
	return p11i_mime_canonicalize_undo(h, classes, body, out, NULL, err);
}

p11s_rc p11i_mime_canonicalize_undo(const p11i_headers *h, unsigned classes, BIO *body, BIO *out,
                                    const p11i_canon_undo *undo, p11s_error *err)
{
	struct canon *c = calloc(1, sizeof(*c));
	p11s_rc rc;

	if (c == NULL)
		return p11i_err_nomem(err);
	c->out = out;
	c->undo = undo;
	c->err = err;
	if (undo != NULL && undo->digests != NULL) {
		c->dq = undo->digests;
		for (c->dout = out; c->dout != NULL && BIO_method_type(c->dout) == BIO_TYPE_MD;
		     c->dout = BIO_next(c->dout))
			;
		if (c->dout == NULL) {
			free(c);
			return p11i_err(err, P11S_E_INTERNAL, "digests without an output");
		}
	}
	c->bol = 1;
	c->ref_fd = -1;
	if (undo != NULL && undo->in_st != NULL && S_ISREG(undo->in_st->st_mode)) {
		FILE *fp;

		/* Not from the BIO's FILE where the input has its own: its position stays known. */
		c->ref_fd = p11i_input_fd(body);
		if (c->ref_fd < 0 && (fp = p11i_bio_fp(body)) != NULL)
			c->ref_fd = fileno(fp);
		if (c->ref_fd >= 0)
			c->ref_st = undo->in_st;
	}
	c->ob = malloc(OBUF_SIZE);
	if (c->ob == NULL || lr_init(&c->r, body) != 0) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	rc = entity(c, h, classes, 0, 0);
	if (rc == P11S_OK && c->end != END_EOF)
		rc = p11i_err(err, P11S_E_INTERNAL, "MIME framing stopped before the end");
	if (rc == P11S_OK) {
		put_pending(c);
		flush_out(c);
		if (c->ofail)
			rc =
			    p11i_err_ossl(err, P11S_E_IO, "cannot write the canonical MIME entity");
	}
out:
	free(c->r.buf);
	free(c->spool_r.buf);
	BIO_free(c->spool);
	free(c->ob);
	free(c->sbuf);
	free(c);
	return rc;
}
