/* MIME framing: header blocks, values, addresses, line ends, canonical form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/evp.h>

#include "common.h"
#include "mime.h"

/* Read the header block of @p msg; *body gets the rest of the BIO. */
static p11s_rc read_msg(const char *msg, size_t len, p11i_headers **h, char **body, p11s_error *err)
{
	BIO *in = BIO_new_mem_buf(msg, (int)len);
	p11s_rc rc = p11i_headers_read(in, 0, h, err);

	if (rc == P11S_OK && body != NULL) {
		char buf[4096];
		int n = BIO_read(in, buf, sizeof(buf) - 1);

		buf[n > 0 ? n : 0] = '\0';
		*body = strdup(buf);
	}
	BIO_free(in);
	return rc;
}

static void headers_order_folding_eol(void **state)
{
	static const char msg[] = "Received: from a\n\tby b\n"
	                          "From: Alice <alice@example.org>\n"
	                          "Subject: a long\n  subject\n"
	                          "Content-Type: text/plain;\n charset=utf-8\n"
	                          "MIME-Version: 1.0\n"
	                          "\n"
	                          "body line\n";
	p11i_headers *h = NULL;
	char *body = NULL, *v;
	size_t len;
	const char *raw;

	(void)state;
	assert_int_equal(read_msg(msg, strlen(msg), &h, &body, NULL), P11S_OK);
	assert_int_equal(p11i_headers_count(h), 5);
	assert_int_equal(p11i_headers_eol(h), P11I_EOL_LF);
	assert_true(p11i_headers_body_follows(h));
	assert_string_equal(p11i_headers_name(h, 0), "Received");
	assert_string_equal(p11i_headers_name(h, 3), "Content-Type");
	raw = p11i_headers_raw(h, 2, &len);
	assert_int_equal(len, strlen("Subject: a long\n  subject\n"));
	assert_memory_equal(raw, "Subject: a long\n  subject\n", len);
	v = p11i_headers_value(h, 2);
	assert_string_equal(v, "a long  subject");
	free(v);
	v = p11i_headers_get(h, "content-type");
	assert_string_equal(v, "text/plain; charset=utf-8");
	free(v);
	assert_null(p11i_headers_get(h, "Cc"));
	assert_string_equal(body, "body line\n");
	assert_int_equal(p11i_header_class_of("Content-Transfer-Encoding"), P11I_HDR_CONTENT);
	assert_int_equal(p11i_header_class_of("mime-version"), P11I_HDR_MIME_VERSION);
	assert_int_equal(p11i_header_class_of("Subject"), P11I_HDR_OUTER);

	/* Writing the outer class keeps them byte for byte, in order. */
	BIO *out = BIO_new(BIO_s_mem());
	char *data;
	long n;

	assert_int_equal(p11i_headers_write(h, P11I_HDR_OUTER, out, NULL), P11S_OK);
	n = BIO_get_mem_data(out, &data);
	assert_int_equal(n, strlen("Received: from a\n\tby b\nFrom: Alice <alice@example.org>\n"
	                           "Subject: a long\n  subject\n"));
	assert_memory_equal(data,
	                    "Received: from a\n\tby b\nFrom: Alice <alice@example.org>\n"
	                    "Subject: a long\n  subject\n",
	                    (size_t)n);
	BIO_free(out);
	free(body);
	p11i_headers_free(h);
}

static void headers_crlf_and_no_body(void **state)
{
	static const char crlf[] = "Subject: x\r\nTo: b@example.org\r\n\r\nhi\r\n";
	static const char nobody[] = "Subject: x\nTo: b@example.org\n";
	p11i_headers *h = NULL;
	char *body = NULL;

	(void)state;
	assert_int_equal(read_msg(crlf, strlen(crlf), &h, &body, NULL), P11S_OK);
	assert_int_equal(p11i_headers_eol(h), P11I_EOL_CRLF);
	assert_string_equal(body, "hi\r\n");
	free(body);
	p11i_headers_free(h);

	assert_int_equal(read_msg(nobody, strlen(nobody), &h, &body, NULL), P11S_OK);
	assert_false(p11i_headers_body_follows(h));
	assert_int_equal(p11i_headers_count(h), 2);
	assert_string_equal(body, "");
	free(body);
	p11i_headers_free(h);
}

static void headers_malformed(void **state)
{
	static const char *bad[] = {
	    "",                                           /* empty */
	    "Subject: x\nthis is not a header\n\nbody\n", /* not a field */
	    " continued\nSubject: x\n\n",                 /* continuation first */
	    "Subject: x\nTo: trunc",                      /* cut mid-line */
	    ": no name\n\n",                              /* empty name */
	    "From nobody Mon Jan 1\nSubject: x\n\n",      /* mbox separator */
	};
	p11s_error *err = p11s_error_new();
	p11i_headers *h = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		h = NULL;
		assert_int_equal(read_msg(bad[i], strlen(bad[i]), &h, NULL, err), P11S_E_INPUT);
		assert_null(h);
		assert_true(strlen(p11s_error_message(err)) > 0);
	}
	assert_int_equal(read_msg(bad[3], strlen(bad[3]), &h, NULL, err), P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "truncated"));

	/* The block is bounded. */
	size_t big = 3 * 1024 * 1024;
	char *huge = malloc(big + 16);

	assert_non_null(huge);

	strcpy(huge, "X-Big: ");
	for (size_t i = 0; i < big; i++)
		huge[7 + i] = 'a';
	strcpy(huge + 7 + big, "\n\nbody\n");
	assert_int_equal(read_msg(huge, strlen(huge), &h, NULL, err), P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "longer than"));
	free(huge);
	p11s_error_free(err);
}

static void headers_build(void **state)
{
	p11i_headers *h = p11i_headers_new(P11I_EOL_LF);
	p11s_error *err = p11s_error_new();
	size_t len;

	(void)state;
	assert_int_equal(p11i_headers_add(h, "Content-Type", "text/plain", err), P11S_OK);
	assert_int_equal(p11i_headers_add(h, "X-A", "1", err), P11S_OK);
	assert_int_equal(p11i_headers_add(h, "X-B", "two\nlines", err), P11S_E_USAGE);
	const char *raw = p11i_headers_raw(h, 0, &len);

	assert_int_equal(len, 25);
	assert_memory_equal(raw, "Content-Type: text/plain\n", len);
	assert_int_equal(p11i_headers_remove(h, "content-type"), 1);
	assert_int_equal(p11i_headers_count(h), 1);
	assert_int_equal(p11i_headers_find(h, "x-a", 0), 0);
	p11i_headers_free(h);
	p11s_error_free(err);
}

static void values(void **state)
{
	char *s;

	(void)state;
	s = p11i_mime_media_type(" Multipart/Signed (c) ; protocol=x");
	assert_string_equal(s, "multipart/signed");
	free(s);
	assert_null(p11i_mime_media_type("text"));
	assert_null(p11i_mime_media_type(NULL));

	s = p11i_mime_param("multipart/mixed; Boundary=\"a b;\\\"c\"; charset=utf-8", "boundary");
	assert_string_equal(s, "a b;\"c");
	free(s);
	s = p11i_mime_param("multipart/mixed; charset=utf-8 (comment); boundary=xyz", "boundary");
	assert_string_equal(s, "xyz");
	free(s);
	s = p11i_mime_param("application/pkcs7-mime; smime-type=signed-data; name=smime.p7m",
	                    "smime-type");
	assert_string_equal(s, "signed-data");
	free(s);
	assert_null(p11i_mime_param("text/plain; charset=utf-8", "boundary"));
	s = p11i_mime_param("attachment; filename*0*=utf-8''R%C3%A9sum; filename*1=e.pdf",
	                    "filename");
	assert_string_equal(s, "R\xc3\xa9sume.pdf");
	free(s);
	/* An unterminated quote is not a value to trust. */
	s = p11i_mime_param("text/plain; name=\"abc", "name");
	assert_string_equal(s, "abc");
	free(s);

	p11i_headers *h = NULL;
	static const char m1[] = "Content-Transfer-Encoding: (x) BASE64\n\n";
	static const char m2[] = "Subject: x\n\n";

	assert_int_equal(read_msg(m1, strlen(m1), &h, NULL, NULL), P11S_OK);
	s = p11i_mime_transfer_encoding(h);
	assert_string_equal(s, "base64");
	free(s);
	p11i_headers_free(h);
	assert_int_equal(read_msg(m2, strlen(m2), &h, NULL, NULL), P11S_OK);
	s = p11i_mime_transfer_encoding(h);
	assert_string_equal(s, "7bit");
	free(s);
	p11i_headers_free(h);
}

static void addresses(void **state)
{
	char **v = NULL;
	size_t n = 0;
	p11s_error *err = p11s_error_new();

	(void)state;
	assert_int_equal(p11i_mime_addresses(
	                     "\"Doe, John\" <john@Example.ORG>, bob@b.example (Bob (the) Builder), "
	                     "team: c@c.example, \"d d\"@d.example;, <@route.example:e@e.example>,"
	                     " undisclosed-recipients:;",
	                     &v, &n, err),
	                 P11S_OK);
	assert_int_equal(n, 5);
	assert_string_equal(v[0], "john@Example.ORG");
	assert_string_equal(v[1], "bob@b.example");
	assert_string_equal(v[2], "c@c.example");
	assert_string_equal(v[3], "\"d d\"@d.example");
	assert_string_equal(v[4], "e@e.example");
	assert_null(v[5]);
	p11s_strv_free(v);

	assert_int_equal(p11i_mime_addresses("", &v, &n, err), P11S_OK);
	assert_int_equal(n, 0);
	assert_null(v[0]);
	p11s_strv_free(v);

	assert_int_equal(p11i_mime_addresses("\"open <a@b>", &v, &n, err), P11S_E_INPUT);
	assert_int_equal(p11i_mime_addresses("a@b (open", &v, &n, err), P11S_E_INPUT);
	assert_int_equal(p11i_mime_addresses("X <a@b", &v, &n, err), P11S_E_INPUT);

	assert_true(p11i_mail_addr_equal("john@Example.ORG", "john@example.org"));
	assert_false(p11i_mail_addr_equal("John@example.org", "john@example.org"));
	assert_false(p11i_mail_addr_equal("a@x.org", "a@y.org"));

	static const char msg[] = "From: A <a@x.org>\nTo: b@y.org,\n c@z.org\nCc: B <b@Y.org>\n"
	                          "Bcc: hidden@x.org\n\n";
	static const char *const names[] = {"To", "Cc", NULL};
	p11i_headers *h = NULL;

	assert_int_equal(read_msg(msg, strlen(msg), &h, NULL, NULL), P11S_OK);
	assert_int_equal(p11i_headers_addresses(h, names, &v, &n, err), P11S_OK);
	assert_int_equal(n, 2);
	assert_string_equal(v[0], "b@y.org");
	assert_string_equal(v[1], "c@z.org");
	p11s_strv_free(v);
	p11i_headers_free(h);
	p11s_error_free(err);
}

/* Push @p in through an EOL BIO in small writes; return what came out. */
static char *eol_through(p11i_eol to, const char *in, size_t chunk, int reading)
{
	BIO *mem = BIO_new(BIO_s_mem());
	BIO *eol = p11i_bio_eol_new(to);
	char *data, *res;
	long n;

	BIO_push(eol, mem);
	if (!reading) {
		for (size_t i = 0; i < strlen(in); i += chunk) {
			size_t k = strlen(in) - i < chunk ? strlen(in) - i : chunk;

			assert_int_equal(BIO_write(eol, in + i, (int)k), (int)k);
		}
		assert_int_equal(BIO_flush(eol), 1);
		n = BIO_get_mem_data(mem, &data);
		res = strndup(data, (size_t)n);
	} else {
		char buf[256];
		size_t o = 0;
		int r;

		BIO_write(mem, in, (int)strlen(in));
		BIO_set_mem_eof_return(mem, 0);
		res = calloc(1, 4 * strlen(in) + 1);
		while ((r = BIO_read(eol, buf, (int)chunk)) > 0) {
			memcpy(res + o, buf, (size_t)r);
			o += (size_t)r;
		}
	}
	BIO_free_all(eol);
	return res;
}

static void eol_bio(void **state)
{
	static const char mixed[] = "a\nb\r\nc\rd\r\n\r\ne";
	char *s;

	(void)state;
	for (size_t chunk = 1; chunk <= 5; chunk++) {
		for (int reading = 0; reading <= 1; reading++) {
			s = eol_through(P11I_EOL_CRLF, mixed, chunk, reading);
			assert_string_equal(s, "a\r\nb\r\nc\rd\r\n\r\ne");
			free(s);
			s = eol_through(P11I_EOL_LF, mixed, chunk, reading);
			assert_string_equal(s, "a\nb\nc\rd\n\ne");
			free(s);
			/* A CR at the very end survives. */
			s = eol_through(P11I_EOL_LF, "x\r", chunk, reading);
			assert_string_equal(s, "x\r");
			free(s);
		}
	}
}

/* Canonicalise a whole message (Content-* headers only) or a bare entity. */
static p11s_rc canon(const char *msg, size_t len, unsigned classes, char **out, size_t *olen,
                     p11s_error *err)
{
	BIO *in = BIO_new_mem_buf(msg, (int)len);
	BIO *o = BIO_new(BIO_s_mem());
	p11i_headers *h = NULL;
	p11s_rc rc = p11i_headers_read(in, 0, &h, err);
	char *data;
	long n;

	if (rc == P11S_OK)
		rc = p11i_mime_canonicalize(h, classes, in, o, err);
	n = BIO_get_mem_data(o, &data);
	*out = malloc((size_t)n + 1);
	if (n > 0)
		memcpy(*out, data, (size_t)n);
	(*out)[n] = '\0';
	if (olen)
		*olen = (size_t)n;
	p11i_headers_free(h);
	BIO_free(in);
	BIO_free(o);
	return rc;
}

static void canon_expect(const char *msg, unsigned classes, const char *want)
{
	char *got;
	p11s_error *err = p11s_error_new();
	p11s_rc rc = canon(msg, strlen(msg), classes, &got, NULL, err);

	if (rc != P11S_OK)
		fail_msg("canonicalize failed: %s", p11s_error_message(err));
	assert_string_equal(got, want);
	free(got);
	p11s_error_free(err);
}

static void canon_plain(void **state)
{
	(void)state;
	/* LF in, CRLF out; outer headers left out, Content-* kept; final line end kept. */
	canon_expect("From: a@x.org\nContent-Type: text/plain\nSubject: s\n\nline 1\nline 2\n",
	             P11I_HDR_CONTENT, "Content-Type: text/plain\r\n\r\nline 1\r\nline 2\r\n");
	/* No Content-* at all: an empty header block, then the body. */
	canon_expect("Subject: s\n\nhello", P11I_HDR_CONTENT, "\r\nhello");
	/* Empty body, and no body at all. */
	canon_expect("Content-Type: text/plain\r\n\r\n", P11I_HDR_ALL,
	             "Content-Type: text/plain\r\n\r\n");
	canon_expect("Content-Type: text/plain\n", P11I_HDR_ALL,
	             "Content-Type: text/plain\r\n\r\n");
	/* Trailing CRs are one line end; folded fields become CRLF-folded. */
	canon_expect("Content-Type: text/plain;\n charset=us-ascii\n\na\r\r\nb\n", P11I_HDR_ALL,
	             "Content-Type: text/plain;\r\n charset=us-ascii\r\n\r\na\r\nb\r\n");
}

static void canon_8bit(void **state)
{
	(void)state;
	/* Declared 8bit text: quoted-printable, the label replaced. */
	canon_expect("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
	             "Gr\xc3\xbc\xc3\x9f"
	             "e = ok \nFrom here\n",
	             P11I_HDR_ALL,
	             "Content-Type: text/plain; charset=utf-8\r\n"
	             "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	             "Gr=C3=BC=C3=9Fe =3D ok=20\r\n=46rom here\r\n");
	/* Unlabelled 8-bit text gets the same. */
	canon_expect("Subject: x\n\ncaf\xc3\xa9\n", P11I_HDR_CONTENT,
	             "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n");
	/* Clean 7-bit stays as it is. */
	canon_expect("Content-Transfer-Encoding: 8bit\n\nplain\n", P11I_HDR_ALL,
	             "Content-Transfer-Encoding: quoted-printable\r\n\r\nplain\r\n");
	/* Binary: base64 of the bytes; 8bit non-text: base64 of the CRLF lines. */
	canon_expect("Content-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n"
	             "\x01\x02\n\xff",
	             P11I_HDR_ALL,
	             "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: "
	             "base64\r\n\r\nAQIK/w==");
	canon_expect("Content-Type: application/x-thing\nContent-Transfer-Encoding: 8bit\n\n"
	             "\xe9\n",
	             P11I_HDR_ALL,
	             "Content-Type: application/x-thing\r\nContent-Transfer-Encoding: "
	             "base64\r\n\r\n6Q0K");
}

/* RFC 2045 base64 written out: 76 columns, CRLF between lines, none after the last. */
static char *ref_base64(const unsigned char *p, size_t n)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc(n / 57 * 78 + 80), *o = out;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
		             (i + 2 < n ? p[i + 2] : 0);

		if (i > 0 && i % 57 == 0) {
			*o++ = '\r';
			*o++ = '\n';
		}
		*o++ = tab[v >> 18 & 63];
		*o++ = tab[v >> 12 & 63];
		*o++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? tab[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

/* Binary parts of every length around the line and buffer sizes: the bytes RFC 2045 gives. */
static void canon_base64_lines(void **state)
{
	static const char head[] =
	    "Content-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n";
	static const char want_head[] = "Content-Type: application/octet-stream\r\n"
	                                "Content-Transfer-Encoding: base64\r\n\r\n";
	static const size_t big[] = {65536 / 78 * 57, 200000, 300001};
	size_t hl = strlen(head);

	(void)state;
	for (size_t k = 0; k < 420 + sizeof(big) / sizeof(big[0]); k++) {
		size_t n = k < 420 ? k : big[k - 420], olen;
		char *msg = malloc(hl + n + 1), *got, *want;
		p11s_error *err = p11s_error_new();

		memcpy(msg, head, hl);
		/* Line ends among the bytes: the reader hands them over in pieces. */
		for (size_t i = 0; i < n; i++)
			msg[hl + i] = (char)(i % 41 == 40   ? '\n'
			                     : i % 53 == 52 ? '\r'
			                                    : i * 37 + 11);
		if (canon(msg, hl + n, P11I_HDR_ALL, &got, &olen, err) != P11S_OK)
			fail_msg("canonicalize failed at %zu bytes: %s", n,
			         p11s_error_message(err));
		want = ref_base64((const unsigned char *)msg + hl, n);
		assert_true(olen >= strlen(want_head));
		assert_memory_equal(got, want_head, strlen(want_head));
		assert_string_equal(got + strlen(want_head), want);
		free(want);
		free(got);
		free(msg);
		p11s_error_free(err);
	}
}

static void canon_long_lines(void **state)
{
	char *msg = malloc(3000), *got;
	size_t len;

	(void)state;
	strcpy(msg, "Content-Type: text/plain\n\n");
	len = strlen(msg);
	memset(msg + len, 'x', 1200);
	strcpy(msg + len + 1200, "\n");
	assert_int_equal(canon(msg, strlen(msg), P11I_HDR_ALL, &got, NULL, NULL), P11S_OK);
	/* Over 998: quoted-printable with soft breaks, no line over 76. */
	assert_non_null(strstr(got, "Content-Transfer-Encoding: quoted-printable\r\n"));
	for (char *l = strstr(got, "\r\n\r\n") + 4; *l;) {
		char *e = strstr(l, "\r\n");

		assert_non_null(e);
		assert_true(e - l <= 76);
		l = e + 2;
	}
	free(got);
	free(msg);
}

static void canon_multipart(void **state)
{
	(void)state;
	/* A nested 8bit part gets encoded; the multipart's 8bit label becomes 7bit. */
	canon_expect("Content-Type: multipart/mixed; boundary=\"XX\"\n"
	             "Content-Transfer-Encoding: 8bit\n"
	             "\n"
	             "preamble\n"
	             "--XX\n"
	             "Content-Type: text/plain; charset=utf-8\n"
	             "\n"
	             "\xc3\xa9t\xc3\xa9\n"
	             "--XX\n"
	             "Content-Type: multipart/alternative; boundary=YY\n"
	             "\n"
	             "--YY\n"
	             "\n"
	             "plain\n"
	             "--YY\n"
	             "Content-Type: text/html\n"
	             "\n"
	             "<p>x</p>\n"
	             "--YY--\n"
	             "--XX\n"
	             "Content-Type: application/octet-stream\n"
	             "Content-Transfer-Encoding: base64\n"
	             "\n"
	             "AAEC\n"
	             "--XX--  \n"
	             "epilogue\n",
	             P11I_HDR_CONTENT,
	             "Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
	             "Content-Transfer-Encoding: 7bit\r\n"
	             "\r\n"
	             "preamble\r\n"
	             "--XX\r\n"
	             "Content-Type: text/plain; charset=utf-8\r\n"
	             "Content-Transfer-Encoding: quoted-printable\r\n"
	             "\r\n"
	             "=C3=A9t=C3=A9\r\n"
	             "--XX\r\n"
	             "Content-Type: multipart/alternative; boundary=YY\r\n"
	             "\r\n"
	             "--YY\r\n"
	             "\r\n"
	             "plain\r\n"
	             "--YY\r\n"
	             "Content-Type: text/html\r\n"
	             "\r\n"
	             "<p>x</p>\r\n"
	             "--YY--\r\n"
	             "--XX\r\n"
	             "Content-Type: application/octet-stream\r\n"
	             "Content-Transfer-Encoding: base64\r\n"
	             "\r\n"
	             "AAEC\r\n"
	             "--XX--\r\n"
	             "epilogue\r\n");
}

static void canon_rejects(void **state)
{
	static const char *bad[] = {
	    /* truncated: no closing delimiter */
	    "Content-Type: multipart/mixed; boundary=B\n\n--B\n\nfirst\n--B\n\nsecond par",
	    /* no boundary parameter */
	    "Content-Type: multipart/mixed\n\n--B\n\nx\n--B--\n",
	    /* inner multipart cut off by the outer boundary */
	    ("Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: multipart/mixed; "
	     "boundary=C\n\n--C\n\nx\n--B--\n"),
	    /* 8-bit bytes in a base64 part */
	    "Content-Transfer-Encoding: base64\n\nQUJD\xff\n",
	    /* a part header that is not one */
	    "Content-Type: multipart/mixed; boundary=B\n\n--B\nnot a header\n\nx\n--B--\n",
	};
	p11s_error *err = p11s_error_new();
	char *got;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(canon(bad[i], strlen(bad[i]), P11I_HDR_ALL, &got, NULL, err),
		                 P11S_E_INPUT);
		free(got);
	}
	assert_int_equal(canon(bad[0], strlen(bad[0]), P11I_HDR_ALL, &got, NULL, err),
	                 P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "truncated"));
	free(got);
	p11s_error_free(err);
}

/*
 * A NUL byte in a header block is refused, wherever the block comes from:
 * a memory BIO, a file BIO (whose gets is fgets() + strlen(), which hid
 * the rest of the line and took a NUL at a line start for the end of the
 * input: the remaining header lines were signed as body), or a part header.
 */
static void headers_nul(void **state)
{
	static const char mid[] = "From: a@example.org\nSubject: te\0st\n\nbody\n";
	static const char start[] = "From: a@example.org\n\0X-Bad: 1\nSubject: s\n\nbody\n";
	static const char part[] = "Content-Type: multipart/mixed; boundary=B\n\n--B\n"
	                           "Content-Type: text/plain\nX-Bad: a\0b\n\nx\n--B--\n";
	const char *cases[] = {mid, start};
	size_t lens[] = {sizeof(mid) - 1, sizeof(start) - 1};
	p11s_error *err = p11s_error_new();
	p11i_headers *h = NULL;
	char *got = NULL;

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		FILE *fp = tmpfile();
		BIO *in;

		assert_int_equal(read_msg(cases[i], lens[i], &h, NULL, err), P11S_E_INPUT);
		assert_non_null(strstr(p11s_error_message(err), "NUL byte"));

		assert_non_null(fp);
		assert_int_equal(fwrite(cases[i], 1, lens[i], fp), lens[i]);
		rewind(fp);
		in = BIO_new_fp(fp, BIO_CLOSE);
		h = NULL;
		assert_int_equal(p11i_headers_read(in, 0, &h, err), P11S_E_INPUT);
		assert_null(h);
		assert_non_null(strstr(p11s_error_message(err), "header line 2 holds a NUL byte"));
		BIO_free(in);
	}
	assert_int_equal(canon(part, sizeof(part) - 1, P11I_HDR_ALL, &got, NULL, err),
	                 P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "NUL byte"));
	free(got);
	p11s_error_free(err);
}

/* A clean 7-bit part larger than the memory spool, then an 8-bit one the same size. */
static void canon_spool(void **state)
{
	size_t body = 3 * 1024 * 1024, hl;
	const char *hdr = "Content-Type: text/plain\n\n";
	char *msg = malloc(body + 64), *got;
	size_t olen;

	(void)state;
	hl = strlen(hdr);
	memcpy(msg, hdr, hl);
	for (size_t i = 0; i < body; i++)
		msg[hl + i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
	assert_int_equal(canon(msg, hl + body, P11I_HDR_ALL, &got, &olen, NULL), P11S_OK);
	/* 7-bit: unchanged but for CRLF. */
	assert_int_equal(olen, hl + 2 + body + body / 64);
	assert_memory_equal(got, "Content-Type: text/plain\r\n\r\nabc", 31);
	free(got);
	msg[hl + body - 10] = (char)0xe9;
	assert_int_equal(canon(msg, hl + body, P11I_HDR_ALL, &got, &olen, NULL), P11S_OK);
	assert_non_null(strstr(got, "quoted-printable"));
	assert_non_null(strstr(got, "=E9"));
	free(got);
	free(msg);
}

/* An output that can be taken back: a memory BIO, cut back to the mark. */
struct mem_undo {
	BIO *mem;
	long pos;
	int marks, rewinds;
};

static int mem_mark(void *arg)
{
	struct mem_undo *u = arg;
	char *data;

	u->pos = BIO_get_mem_data(u->mem, &data);
	u->marks++;
	return 0;
}

static int mem_rewind(void *arg)
{
	struct mem_undo *u = arg;
	char *data, *keep;
	long n = BIO_get_mem_data(u->mem, &data);

	assert_true(n >= u->pos);
	keep = malloc((size_t)u->pos + 1);
	memcpy(keep, data, (size_t)u->pos);
	(void)BIO_reset(u->mem);
	assert_int_equal(BIO_write(u->mem, keep, (int)u->pos), (int)u->pos);
	free(keep);
	u->rewinds++;
	return 0;
}

static struct mem_undo *canon_undo; /* canon_file() writes as it scans, through this */

/*
 * canon() from a regular file: the scan of a 7-bit leaf is replayed from
 * the file itself, or with canon_undo set, the leaf is written as it is
 * scanned and taken back if it turns dirty.
 */
static p11s_rc canon_file(const char *msg, size_t len, unsigned classes, char **out, size_t *olen,
                          p11s_error *err)
{
	FILE *fp = tmpfile();
	BIO *in, *o = BIO_new(BIO_s_mem());
	p11i_headers *h = NULL;
	p11s_rc rc;
	char *data;
	long n;

	assert_non_null(fp);
	assert_int_equal(fwrite(msg, 1, len, fp), len);
	rewind(fp);
	in = BIO_new_fp(fp, BIO_CLOSE);
	rc = p11i_headers_read(in, 0, &h, err);
	if (rc == P11S_OK && canon_undo != NULL) {
		p11i_canon_undo undo = {mem_mark, mem_rewind, canon_undo, NULL, NULL};

		canon_undo->mem = o;
		rc = p11i_mime_canonicalize_undo(h, classes, in, o, &undo, err);
	} else if (rc == P11S_OK) {
		rc = p11i_mime_canonicalize(h, classes, in, o, err);
	}
	n = BIO_get_mem_data(o, &data);
	*out = malloc((size_t)n + 1);
	if (n > 0)
		memcpy(*out, data, (size_t)n);
	(*out)[n] = '\0';
	*olen = (size_t)n;
	p11i_headers_free(h);
	BIO_free(in);
	BIO_free(o);
	return rc;
}

/* What a clean 7-bit body becomes: each LF with the CRs before it is CRLF. */
static char *ref_crlf(const char *p, size_t n, size_t *olen)
{
	char *out = malloc(2 * n + 1), *o = out;
	size_t i = 0;

	while (i < n) {
		const char *nl = memchr(p + i, '\n', n - i);
		size_t e = nl ? (size_t)(nl - p) : n, t = e;

		while (nl && t > i && p[t - 1] == '\r')
			t--;
		memcpy(o, p + i, t - i);
		o += t - i;
		if (nl) {
			*o++ = '\r';
			*o++ = '\n';
		}
		i = e + 1;
	}
	*olen = (size_t)(o - out);
	return out;
}

/*
 * Megabytes of clean 7-bit text, then what makes a part dirty (or nearly):
 * the scan goes a block at a time at the top level, so every case is
 * checked from memory and from a file, against the line-by-line writers:
 * a clean part must come out as CRLF lines, a dirty one exactly as the
 * same part labelled 8bit (which is encoded without a scan).
 */
static void canon_dirty_late(void **state)
{
	static const struct {
		const char *tail;
		size_t tail_len;
		int dirty;
	} cases[] = {
	    {"end\n", 4, 0},
	    {"caf\xc3\xa9 at the end\n", 18, 1},
	    {"a NUL \0 here\nmore\n", 18, 1},
	    {"bare \r CR\nmore\n", 15, 1},
	    {"CRLF\r\nand CRCRLF\r\r\nend", 22, 0},
	    {"ends in a CR\r", 13, 1},
	    {"ends in CRs\r\r\n", 14, 0},
	    {"no final line end", 17, 0},
	    {"8-bit last byte\xff", 16, 1},
	};
	const char *types[] = {"text/plain", "application/x-thing"};
	size_t body = 3 * 1024 * 1024 + 77;
	char *base = malloc(body + 2048);

	(void)state;
	/* Lines of 1 to 120 bytes, some CRLF, with an LF or CRLF across every 64 KiB boundary. */
	for (size_t i = 0, col = 0, line = 0; i < body; i++, col++) {
		if (col == 1 + line * 37 % 120 || (i + 1) % 65536 == 0) {
			base[i] = '\n';
			if (col > 0 && line % 3 == 0)
				base[i - 1] = '\r';
			col = (size_t)-1;
			line++;
		} else {
			base[i] = (char)('!' + i % 90);
		}
	}
	base[body - 1] = '\n';
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]) + 3; k++) {
			char head[128], head8[160], *msg, *msg8, *a, *b, *want;
			size_t hl, hl8, n, al, bl, wl, extra = 0;
			p11s_error *err = p11s_error_new();
			int dirty;

			hl = (size_t)snprintf(head, sizeof(head), "Content-Type: %s\n\n", types[t]);
			hl8 = (size_t)snprintf(
			    head8, sizeof(head8),
			    "Content-Type: %s\nContent-Transfer-Encoding: 8bit\n\n", types[t]);
			msg = malloc(hl + body + 2048);
			memcpy(msg, head, hl);
			memcpy(msg + hl, base, body);
			n = hl + body;
			if (k < sizeof(cases) / sizeof(cases[0])) {
				memcpy(msg + n, cases[k].tail, cases[k].tail_len);
				n += cases[k].tail_len;
				dirty = cases[k].dirty;
			} else {
				/* Lines of 998 (fine) and 999 bytes, a line end or none after. */
				extra = k == sizeof(cases) / sizeof(cases[0]) ? 998 : 999;
				memset(msg + n, 'x', extra);
				n += extra;
				if (k < sizeof(cases) / sizeof(cases[0]) + 2)
					msg[n++] = '\n';
				dirty = extra > 998;
			}
			msg8 = malloc(hl8 + n);
			memcpy(msg8, head8, hl8);
			memcpy(msg8 + hl8, msg + hl, n - hl);

			assert_int_equal(canon(msg, n, P11I_HDR_ALL, &a, &al, err), P11S_OK);
			assert_int_equal(canon_file(msg, n, P11I_HDR_ALL, &b, &bl, err), P11S_OK);
			assert_int_equal(al, bl);
			assert_memory_equal(a, b, al);
			free(b);
			/* Written as scanned: taken back exactly when the part is dirty. */
			struct mem_undo u = {0};

			canon_undo = &u;
			assert_int_equal(canon_file(msg, n, P11I_HDR_ALL, &b, &bl, err), P11S_OK);
			canon_undo = NULL;
			assert_int_equal(u.marks, 1);
			assert_int_equal(u.rewinds, dirty);
			assert_int_equal(al, bl);
			assert_memory_equal(a, b, al);
			if (dirty) {
				free(b);
				assert_int_equal(
				    canon(msg8, hl8 + n - hl, P11I_HDR_ALL, &want, &wl, err),
				    P11S_OK);
				assert_non_null(strstr(want, "Content-Transfer-Encoding: "));
			} else {
				char *body_want = ref_crlf(msg + hl, n - hl, &wl);

				free(b);
				b = NULL;
				want = malloc(hl + 2 + wl);
				memcpy(want, head, hl - 2);
				memcpy(want + hl - 2, "\r\n\r\n", 4);
				memcpy(want + hl + 2, body_want, wl);
				wl += hl + 2;
				free(body_want);
			}
			if (al != wl || memcmp(a, want, al) != 0) {
				size_t d = 0;

				while (d < al && d < wl && a[d] == want[d])
					d++;
				fail_msg("%s, case %zu: the output differs from the line-by-line "
				         "writer's at byte %zu (%zu and %zu bytes)",
				         types[t], k, d, al, wl);
			}
			free(a);
			free(want);
			free(msg);
			free(msg8);
			p11s_error_free(err);
		}
	}
	free(base);
}

/*
 * Written ahead inside a top-level message/rfc822 (the mark falls after
 * the inner headers) and never inside a multipart (a delimiter may end a
 * line): the same bytes as the line-by-line path, clean or dirty.
 */
static void canon_undo_nested(void **state)
{
	static const char *heads[] = {
	    "Content-Type: message/rfc822\n\nSubject: inner\nContent-Type: text/plain\n\n",
	    "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\n",
	};
	size_t body = 300 * 1000;

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		for (int dirty = 0; dirty < 2; dirty++) {
			size_t hl = strlen(heads[i]), n = 0, al, bl;
			char *msg = malloc(hl + body + 16), *a, *b;
			struct mem_undo u = {0};

			memcpy(msg, heads[i], hl);
			n = hl;
			for (size_t k = 0; k < body; k++)
				msg[n++] = k % 70 == 69 ? '\n' : (char)('a' + k % 26);
			if (dirty)
				msg[n - 5] = (char)0xe9;
			if (i == 1) {
				memcpy(msg + n, "\n--B--\n", 7);
				n += 7;
			}
			assert_int_equal(canon(msg, n, P11I_HDR_ALL, &a, &al, NULL), P11S_OK);
			canon_undo = &u;
			assert_int_equal(canon_file(msg, n, P11I_HDR_ALL, &b, &bl, NULL), P11S_OK);
			canon_undo = NULL;
			assert_int_equal(u.marks, i == 0);
			assert_int_equal(u.rewinds, i == 0 && dirty);
			assert_int_equal(al, bl);
			assert_memory_equal(a, b, al);
			assert_true((strstr(a, "quoted-printable") != NULL) == dirty);
			free(a);
			free(b);
			free(msg);
		}
	}
}

/*
 * The split (an LF file's clean blocks go to the output as they are, the
 * digest alone sees CRLF): through digest -> LF filter -> output, as sign
 * chains them, the output and the digest must be what the whole chain
 * gives the canonical form, from memory, from a file, and written ahead
 * (with a take-back that restores the digest); and for a CR-free body the
 * bulk must not pass through the filter (the split took it).
 */
struct chain_undo {
	BIO *md, *eol, *mem;
	EVP_MD_CTX *saved;
	long pos;
	int rewinds;
};

static int chain_mark(void *arg)
{
	struct chain_undo *u = arg;
	EVP_MD_CTX *ctx = NULL;
	char *data;

	u->pos = BIO_get_mem_data(u->mem, &data);
	assert_true(BIO_get_md_ctx(u->md, &ctx) > 0);
	if (u->saved == NULL)
		u->saved = EVP_MD_CTX_new();
	assert_true(EVP_MD_CTX_copy_ex(u->saved, ctx));
	return 0;
}

static int chain_rewind(void *arg)
{
	struct chain_undo *u = arg;
	EVP_MD_CTX *ctx = NULL;
	char *data, *keep;
	long n = BIO_get_mem_data(u->mem, &data);

	assert_true(n >= u->pos);
	assert_true(BIO_get_md_ctx(u->md, &ctx) > 0);
	assert_true(EVP_MD_CTX_copy_ex(ctx, u->saved));
	keep = malloc((size_t)u->pos + 1);
	memcpy(keep, data, (size_t)u->pos);
	/* The filter's reset goes on to the memory BIO (and empties it). */
	(void)BIO_ctrl(u->eol, BIO_CTRL_RESET, 0, NULL);
	(void)BIO_reset(u->mem);
	assert_int_equal(BIO_write(u->mem, keep, (int)u->pos), (int)u->pos);
	free(keep);
	u->rewinds++;
	return 0;
}

static size_t through_eol; /* bytes written into the LF filter */

static long count_eol(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                      size_t *processed)
{
	(void)b;
	(void)argp;
	(void)len;
	(void)argi;
	(void)argl;
	if (oper == (BIO_CB_WRITE | BIO_CB_RETURN) && ret > 0 && processed != NULL)
		through_eol += *processed;
	return ret;
}

/* mode 0: from memory; 1: from a file; 2: from a file, written ahead. */
static void canon_chain(const char *msg, size_t len, int mode, p11i_eol to, char **out,
                        size_t *olen, unsigned char md[32], int *rewinds)
{
	BIO *in, *mem = BIO_new(BIO_s_mem()), *eol = p11i_bio_eol_new(to);
	BIO *mdb = BIO_new(BIO_f_md());
	p11i_headers *h = NULL;
	struct chain_undo u = {0};
	p11i_canon_undo undo = {chain_mark, chain_rewind, &u, NULL, NULL};
	FILE *fp = NULL;
	EVP_MD_CTX *ctx = NULL;
	unsigned int mdl = 0;
	char *data;
	long n;

	assert_non_null(mem);
	assert_non_null(eol);
	assert_non_null(mdb);
	assert_true(BIO_set_md(mdb, EVP_sha256()) > 0);
	BIO_push(mdb, eol);
	BIO_push(eol, mem);
	BIO_set_callback_ex(eol, count_eol);
	if (mode == 0) {
		in = BIO_new_mem_buf(msg, (int)len);
	} else {
		fp = tmpfile();
		assert_non_null(fp);
		assert_int_equal(fwrite(msg, 1, len, fp), len);
		rewind(fp);
		in = BIO_new_fp(fp, BIO_CLOSE);
	}
	assert_int_equal(p11i_headers_read(in, 0, &h, NULL), P11S_OK);
	through_eol = 0;
	u.md = mdb;
	u.eol = eol;
	u.mem = mem;
	assert_int_equal(
	    p11i_mime_canonicalize_undo(h, P11I_HDR_ALL, in, mdb, mode == 2 ? &undo : NULL, NULL),
	    P11S_OK);
	assert_int_equal(BIO_flush(mdb), 1);
	assert_true(BIO_get_md_ctx(mdb, &ctx) > 0);
	assert_true(EVP_DigestFinal_ex(ctx, md, &mdl));
	assert_int_equal(mdl, 32);
	n = BIO_get_mem_data(mem, &data);
	*out = malloc((size_t)n + 1);
	if (n > 0)
		memcpy(*out, data, (size_t)n);
	*olen = (size_t)n;
	*rewinds = u.rewinds;
	EVP_MD_CTX_free(u.saved);
	p11i_headers_free(h);
	BIO_free(in);
	BIO_free_all(mdb);
}

static void canon_split(void **state)
{
	enum { BODY = 400 * 1000 };
	static const char *heads[] = {
	    "Content-Type: text/plain\n\n",
	    "Content-Type: application/x-thing\nSubject: s\n\n",
	    "Content-Type: message/rfc822\n\nSubject: inner\nContent-Type: text/plain\n\n",
	};
	unsigned seed = 12345;

	(void)state;
	/*
	 * Bodies: 0 lines of 70; 1 no final LF; 2 lines of 0-200 bytes (empty
	 * lines, LFs at block edges); 3 as 2 with CRLF lines in the second
	 * half and CRs before LFs (blocks the split declines, and CRs held
	 * across a block edge); 4 as 0 with an 8-bit byte late (dirty: taken
	 * back, encoded); 5 a body of one LF; 6 an empty body; 7 and 8 as 0
	 * with a line of 998 bytes (clean) or 999 (dirty) late.
	 */
	for (size_t hc = 0; hc < 2 * sizeof(heads) / sizeof(heads[0]); hc++) {
		/* The second round in CRLF: every LF of the message (headers too) is CRLF. */
		size_t hi = hc % (sizeof(heads) / sizeof(heads[0]));
		int crlf = hc >= sizeof(heads) / sizeof(heads[0]);

		for (int kind = 0; kind < 9; kind++) {
			size_t hl = strlen(heads[hi]), n = hl,
			       bodylen = kind == 5 || kind == 6 ? 0 : BODY;
			char *msg = malloc(hl + BODY + 1024), *ref, *conv, *got;
			size_t refl, convl, gotl;
			unsigned char want_md[32], got_md[32];
			unsigned int mdl;
			int rewinds;

			memcpy(msg, heads[hi], hl);
			if (kind == 5)
				msg[n++] = '\n';
			while (n < hl + bodylen) {
				size_t line =
				    kind == 2 || kind == 3
				        ? (seed = seed * 1103515245u + 12345u) >> 16 & 0xff
				        : 70;

				if (line > 200)
					line = line % 3 == 0 ? 0 : 76;
				for (size_t k = 0; k < line && n < hl + bodylen; k++)
					msg[n] = (char)('a' + (n + k) % 26), n++;
				if (kind == 3 && n > hl + bodylen / 2) {
					for (size_t r = (seed >> 8) % 3; r > 0; r--)
						msg[n++] = '\r';
				}
				msg[n++] = '\n';
			}
			if (kind == 1)
				n--;
			if (kind == 4)
				msg[n - 1000] = (char)0xe9;
			if (kind >= 7) {
				/* A line of 998 bytes (still clean) or 999 (not) late in the body.
				 */
				size_t at = n - 5000, len = kind == 7 ? 998 : 999;

				while (msg[at - 1] != '\n')
					at--;
				memset(msg + at, 'x', len);
				msg[at + len] = '\n';
			}
			if (crlf) {
				char *w = malloc(2 * n + 1);
				size_t wn = 0;

				for (size_t k = 0; k < n; k++) {
					if (msg[k] == '\n')
						w[wn++] = '\r';
					w[wn++] = msg[k];
				}
				free(msg);
				msg = w;
				n = wn;
			}

			/* The reference: the canonical form, digested, then through the filter. */
			assert_int_equal(canon(msg, n, P11I_HDR_ALL, &ref, &refl, NULL), P11S_OK);
			assert_true(EVP_Digest(ref, refl, want_md, &mdl, EVP_sha256(), NULL));
			for (int to = 0; to < 2; to++) {
				BIO *e = p11i_bio_eol_new(to ? P11I_EOL_LF : P11I_EOL_CRLF),
				    *m = BIO_new(BIO_s_mem());
				char *d;
				long dl;

				BIO_push(e, m);
				assert_int_equal(BIO_write(e, ref, (int)refl), (int)refl);
				assert_int_equal(BIO_flush(e), 1);
				dl = BIO_get_mem_data(m, &d);
				conv = malloc((size_t)dl + 1);
				memcpy(conv, d, (size_t)dl);
				convl = (size_t)dl;
				BIO_free_all(e);
				for (int mode = 0; mode < 3; mode++) {
					canon_chain(msg, n, mode, to ? P11I_EOL_LF : P11I_EOL_CRLF,
					            &got, &gotl, got_md, &rewinds);
					if (gotl != convl || memcmp(got, conv, gotl) != 0) {
						size_t at = 0;

						while (at < gotl && at < convl &&
						       got[at] == conv[at])
							at++;
						fail_msg(
						    "head %zu%s, body %d, to %s, mode %d: output "
						    "differs at byte %zu (%zu and %zu bytes)",
						    hi, crlf ? " CRLF" : "", kind,
						    to ? "LF" : "CRLF", mode, at, gotl, convl);
					}
					assert_memory_equal(got_md, want_md, 32);
					assert_int_equal(rewinds,
					                 mode == 2 && (kind == 4 || kind == 8));
					/*
					 * A clean body whose line ends are the filter's own
					 * bypasses it: only fields pass.
					 */
					if (kind <= 2 && crlf == (to == 0))
						assert_true(through_eol < 1024);
					free(got);
				}
				free(conv);
			}
			free(ref);
			free(msg);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(headers_order_folding_eol),
	    cmocka_unit_test(headers_crlf_and_no_body),
	    cmocka_unit_test(headers_malformed),
	    cmocka_unit_test(headers_build),
	    cmocka_unit_test(values),
	    cmocka_unit_test(addresses),
	    cmocka_unit_test(eol_bio),
	    cmocka_unit_test(canon_plain),
	    cmocka_unit_test(canon_8bit),
	    cmocka_unit_test(canon_long_lines),
	    cmocka_unit_test(canon_multipart),
	    cmocka_unit_test(canon_rejects),
	    cmocka_unit_test(headers_nul),
	    cmocka_unit_test(canon_spool),
	    cmocka_unit_test(canon_base64_lines),
	    cmocka_unit_test(canon_dirty_late),
	    cmocka_unit_test(canon_undo_nested),
	    cmocka_unit_test(canon_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
