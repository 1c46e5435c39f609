/*
 * A message rebuilt from a mail filter's callbacks, signed, and split back
 * into header edits and a new body (include/p11smime/milter.h).
 *
 * Everything the MTA sends is hostile input: the header block is bounded,
 * each value is copied byte by byte with its line breaks made CRLF
 * continuations, and the parsing itself is left to p11i_headers_read().
 * The body goes to an unnamed temporary file, and so does the signed
 * message, which is read back with the same header reader.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/bio.h>

#include "common.h"
#include "mime.h"
#include "p11smime/milter.h"

struct p11s_milter_msg {
	char *block; /* "Name: value\r\n"..., without the blank line */
	size_t len, cap;
	p11i_headers *h;
	int fd; /* the spool: the header block, a blank line, the body; -1 until needed */
	unsigned long long body;
};

struct edit {
	char *name;
	char *value; /* additions only */
	int index;   /* deletions only */
};

struct p11s_milter_signed {
	struct edit *del, *add;
	size_t ndel, nadd;
	int fd;
	BIO *in; /* buffer over fd, at the first byte of the new body */
};

p11s_rc p11s_milter_msg_new(p11s_milter_msg **out, p11s_error *err)
{
	p11s_milter_msg *m = calloc(1, sizeof(*m));

	if (m == NULL)
		return p11i_err_nomem(err);
	m->fd = -1;
	*out = m;
	return P11S_OK;
}

void p11s_milter_msg_free(p11s_milter_msg *m)
{
	if (m == NULL)
		return;
	if (m->fd >= 0)
		close(m->fd);
	p11i_headers_free(m->h);
	free(m->block);
	free(m);
}

static int reserve(p11s_milter_msg *m, size_t more)
{
	size_t cap;
	char *b;

	if (more > P11S_HEADERS_MAX_DEFAULT - m->len)
		return -1;
	if (m->len + more <= m->cap)
		return 0;
	cap = m->cap ? m->cap : 4096;
	while (cap < m->len + more)
		cap *= 2;
	if (cap > P11S_HEADERS_MAX_DEFAULT)
		cap = P11S_HEADERS_MAX_DEFAULT;
	b = realloc(m->block, cap);
	if (b == NULL)
		return -2;
	m->block = b;
	m->cap = cap;
	return 0;
}

/*
 * Copy @p value (its @p vlen bytes) to @p o, or only count when @p o is NULL:
 * every line break becomes CRLF and a line that does not begin with a
 * blank gets one.  Returns the bytes (to be) written.
 */
static size_t copy_value(char *o, const char *value, size_t vlen)
{
	size_t n = 0;

	for (size_t i = 0; i < vlen; i++) {
		char c = value[i];
		int blank_next = i + 1 < vlen && (value[i + 1] == ' ' || value[i + 1] == '\t');

		if (c == '\r' && i + 1 < vlen && value[i + 1] == '\n')
			continue; /* the "\n" makes the line end */
		if (c != '\n') {
			if (o != NULL)
				o[n] = c;
			n++;
			continue;
		}
		if (o != NULL) {
			o[n] = '\r';
			o[n + 1] = '\n';
			if (!blank_next)
				o[n + 2] = ' ';
		}
		n += blank_next ? 2 : 3;
	}
	return n;
}

p11s_rc p11s_milter_msg_header(p11s_milter_msg *m, const char *name, const char *value,
                               p11s_error *err)
{
	size_t nlen, vlen, need;
	char *o;
	int r;

	if (m == NULL || name == NULL || value == NULL)
		return p11i_err(err, P11S_E_USAGE, "no header field");
	if (m->h != NULL)
		return p11i_err(err, P11S_E_USAGE, "the header block is already complete");
	nlen = strlen(name);
	if (nlen == 0)
		return p11i_err(err, P11S_E_INPUT, "a header field has no name");
	for (size_t i = 0; i < nlen; i++)
		if ((unsigned char)name[i] < 33 || (unsigned char)name[i] > 126 || name[i] == ':')
			return p11i_err(err, P11S_E_INPUT,
			                "a header field name holds a byte 0x%02x not allowed there",
			                (unsigned char)name[i]);
	vlen = strlen(value);
	/* At most three bytes out for one in: the count below cannot overflow. */
	if (nlen > P11S_HEADERS_MAX_DEFAULT || vlen > P11S_HEADERS_MAX_DEFAULT)
		return p11i_err(err, P11S_E_INPUT, "the header block is larger than %d bytes",
		                P11S_HEADERS_MAX_DEFAULT);
	need = nlen + 2 + copy_value(NULL, value, vlen) + 2;
	r = reserve(m, need);
	if (r == -1)
		return p11i_err(err, P11S_E_INPUT, "the header block is larger than %d bytes",
		                P11S_HEADERS_MAX_DEFAULT);
	if (r != 0)
		return p11i_err_nomem(err);
	o = m->block + m->len;
	memcpy(o, name, nlen);
	o += nlen;
	*o++ = ':';
	*o++ = ' ';
	o += copy_value(o, value, vlen);
	*o++ = '\r';
	*o++ = '\n';
	m->len = (size_t)(o - m->block);
	return P11S_OK;
}

p11s_rc p11s_milter_msg_end_headers(p11s_milter_msg *m, p11s_error *err)
{
	BIO *b;
	p11s_rc rc;

	if (m == NULL)
		return p11i_err(err, P11S_E_USAGE, "no message");
	if (m->h != NULL)
		return P11S_OK;
	if (m->len == 0)
		return p11i_err(err, P11S_E_INPUT, "the message has no header fields");
	b = BIO_new_mem_buf(m->block, (int)m->len);
	if (b == NULL)
		return p11i_err_nomem(err);
	rc = p11i_headers_read(b, P11S_HEADERS_MAX_DEFAULT, &m->h, err);
	BIO_free(b);
	return rc;
}

const p11i_headers *p11i_milter_msg_headers(const p11s_milter_msg *m)
{
	return m != NULL ? m->h : NULL;
}

p11s_rc p11s_milter_msg_from(const p11s_milter_msg *m, char **out, p11s_error *err)
{
	char **addrs = NULL, *value;
	long i;
	size_t n = 0;
	p11s_rc rc;

	*out = NULL;
	if (m == NULL || m->h == NULL)
		return p11i_err(err, P11S_E_INPUT, "the header block was not read");
	i = p11i_headers_find(m->h, "From", 0);
	if (i < 0)
		return p11i_err(err, P11S_E_INPUT, "no From field");
	if (p11i_headers_find(m->h, "From", (size_t)i + 1) >= 0)
		return p11i_err(err, P11S_E_INPUT, "more than one From field");
	value = p11i_headers_value(m->h, (size_t)i);
	if (value == NULL)
		return p11i_err_nomem(err);
	rc = p11i_mime_addresses(value, &addrs, &n, err);
	free(value);
	if (rc != P11S_OK)
		return p11i_err(err, P11S_E_INPUT, "the From field does not parse");
	if (n != 1) {
		p11s_strv_free(addrs);
		return p11i_err(err, P11S_E_INPUT, "the From field has %s",
		                n ? "several addresses" : "no address");
	}
	*out = addrs[0];
	addrs[0] = NULL;
	p11s_strv_free(addrs);
	return P11S_OK;
}

const char *p11s_milter_msg_secured(const p11s_milter_msg *m)
{
	static const char *const secured[] = {"multipart/signed", "multipart/encrypted",
	                                      "application/pkcs7-mime", "application/x-pkcs7-mime"};
	const char *hit = NULL;
	char *ct, *type;

	if (m == NULL || m->h == NULL)
		return NULL;
	ct = p11i_headers_get(m->h, "Content-Type");
	type = p11i_mime_media_type(ct);
	for (size_t i = 0; type != NULL && i < sizeof(secured) / sizeof(secured[0]); i++)
		if (strcmp(type, secured[i]) == 0)
			hit = secured[i];
	free(type);
	free(ct);
	return hit;
}

/* The spool starts with the header block and the blank line that ends it. */
static p11s_rc spool_open(p11s_milter_msg *m, p11s_error *err)
{
	const char *dir = NULL;

	if (m->fd >= 0)
		return P11S_OK;
	m->fd = p11i_tmpfile(&dir);
	if (m->fd < 0)
		return p11i_err(err, P11S_E_IO, "cannot make a temporary file in %s: %s", dir,
		                strerror(errno));
	if (p11i_write_full(m->fd, m->block, m->len) != 0 || p11i_write_full(m->fd, "\r\n", 2) != 0)
		return p11i_err(err, P11S_E_IO, "cannot write a temporary file in %s: %s", dir,
		                strerror(errno));
	return P11S_OK;
}

p11s_rc p11s_milter_msg_body(p11s_milter_msg *m, const void *buf, size_t len, p11s_error *err)
{
	p11s_rc rc;

	if (m == NULL || m->h == NULL)
		return p11i_err(err, P11S_E_USAGE, "body before the end of the header block");
	rc = spool_open(m, err);
	if (rc != P11S_OK)
		return rc;
	if (len > 0 && p11i_write_full(m->fd, buf, len) != 0)
		return p11i_err(err, P11S_E_IO, "cannot spool the body: %s", strerror(errno));
	m->body += len;
	return P11S_OK;
}

unsigned long long p11s_milter_msg_body_size(const p11s_milter_msg *m)
{
	return m != NULL ? m->body : 0;
}

void p11s_milter_signed_free(p11s_milter_signed *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->ndel; i++)
		free(r->del[i].name);
	for (size_t i = 0; i < r->nadd; i++) {
		free(r->add[i].name);
		free(r->add[i].value);
	}
	free(r->del);
	free(r->add);
	BIO_free_all(r->in);
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

/* A buffered reader over @p fd from its start; the fd stays open. */
static BIO *reader_at_start(int fd)
{
	BIO *buf, *raw;

	if (lseek(fd, 0, SEEK_SET) != 0)
		return NULL;
	buf = BIO_new(BIO_f_buffer());
	raw = BIO_new_fd(fd, BIO_NOCLOSE);
	if (buf == NULL || raw == NULL) {
		BIO_free(buf);
		BIO_free(raw);
		return NULL;
	}
	return BIO_push(buf, raw);
}

static int is_mime_field(const char *name)
{
	return (p11i_header_class_of(name) & (P11I_HDR_CONTENT | P11I_HDR_MIME_VERSION)) != 0;
}

/* The original Content-* and MIME-Version fields, last first, with their occurrence index. */
static p11s_rc list_deletions(const p11i_headers *h, p11s_milter_signed *r, p11s_error *err)
{
	size_t n = p11i_headers_count(h);

	r->del = calloc(n ? n : 1, sizeof(*r->del));
	if (r->del == NULL)
		return p11i_err_nomem(err);
	for (size_t k = n; k-- > 0;) {
		const char *name = p11i_headers_name(h, k);
		int index = 1;

		if (!is_mime_field(name))
			continue;
		for (size_t j = 0; j < k; j++)
			if (strcasecmp(p11i_headers_name(h, j), name) == 0)
				index++;
		r->del[r->ndel].name = p11i_strdup(name);
		r->del[r->ndel].index = index;
		if (r->del[r->ndel++].name == NULL)
			return p11i_err_nomem(err);
	}
	return P11S_OK;
}

static p11s_rc list_additions(const p11i_headers *h, p11s_milter_signed *r, p11s_error *err)
{
	size_t n = p11i_headers_count(h);

	r->add = calloc(n ? n : 1, sizeof(*r->add));
	if (r->add == NULL)
		return p11i_err_nomem(err);
	for (size_t k = 0; k < n; k++) {
		const char *name = p11i_headers_name(h, k);

		if (!is_mime_field(name))
			continue;
		r->add[r->nadd].name = p11i_strdup(name);
		r->add[r->nadd].value = p11i_headers_value(h, k);
		if (r->add[r->nadd++].name == NULL || r->add[r->nadd - 1].value == NULL)
			return p11i_err_nomem(err);
	}
	return P11S_OK;
}

p11s_rc p11s_milter_msg_sign(p11s_milter_msg *m, p11s_signer *s, p11s_milter_signed **out,
                             p11s_error *err)
{
	p11s_milter_signed *r = NULL;
	p11i_headers *nh = NULL;
	BIO *in = NULL, *sink = NULL;
	const char *dir = NULL;
	p11s_rc rc;

	*out = NULL;
	if (m == NULL || m->h == NULL || s == NULL)
		return p11i_err(err, P11S_E_USAGE, "nothing to sign");
	rc = spool_open(m, err);
	if (rc != P11S_OK)
		return rc;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return p11i_err_nomem(err);
	r->fd = p11i_tmpfile(&dir);
	if (r->fd < 0) {
		rc = p11i_err(err, P11S_E_IO, "cannot make a temporary file in %s: %s", dir,
		              strerror(errno));
		goto out;
	}
	in = reader_at_start(m->fd);
	sink = BIO_new(BIO_f_buffer());
	if (in == NULL || sink == NULL || BIO_push(sink, BIO_new_fd(r->fd, BIO_NOCLOSE)) == NULL ||
	    BIO_next(sink) == NULL) {
		rc = p11i_err(err, P11S_E_IO, "cannot read the spooled message");
		goto out;
	}
	rc = p11s_signer_sign(s, in, sink, err);
	if (rc == P11S_OK && BIO_flush(sink) <= 0)
		rc = p11i_err(err, P11S_E_IO, "cannot write a temporary file in %s", dir);
	if (rc != P11S_OK)
		goto out;
	r->in = reader_at_start(r->fd);
	if (r->in == NULL) {
		rc = p11i_err(err, P11S_E_IO, "cannot read the signed message back");
		goto out;
	}
	/* The signer wrote every outer field unchanged; only the MIME fields differ. */
	rc = p11i_headers_read(r->in, 0, &nh, err);
	if (rc == P11S_OK)
		rc = list_deletions(m->h, r, err);
	if (rc == P11S_OK)
		rc = list_additions(nh, r, err);
out:
	p11i_headers_free(nh);
	BIO_free_all(in);
	BIO_free_all(sink);
	if (rc != P11S_OK) {
		p11s_milter_signed_free(r);
		return rc;
	}
	*out = r;
	return P11S_OK;
}

size_t p11s_milter_signed_delete_count(const p11s_milter_signed *r)
{
	return r != NULL ? r->ndel : 0;
}

const char *p11s_milter_signed_delete(const p11s_milter_signed *r, size_t i, int *index)
{
	if (r == NULL || i >= r->ndel)
		return NULL;
	if (index != NULL)
		*index = r->del[i].index;
	return r->del[i].name;
}

size_t p11s_milter_signed_add_count(const p11s_milter_signed *r)
{
	return r != NULL ? r->nadd : 0;
}

const char *p11s_milter_signed_add(const p11s_milter_signed *r, size_t i, const char **value)
{
	if (r == NULL || i >= r->nadd)
		return NULL;
	if (value != NULL)
		*value = r->add[i].value;
	return r->add[i].name;
}

p11s_rc p11s_milter_signed_read(p11s_milter_signed *r, void *buf, size_t len, size_t *n,
                                p11s_error *err)
{
	int got;

	*n = 0;
	if (r == NULL || r->in == NULL)
		return p11i_err(err, P11S_E_USAGE, "nothing signed");
	if (len > 1 << 30)
		len = 1 << 30;
	got = BIO_read(r->in, buf, (int)len);
	if (got > 0) {
		*n = (size_t)got;
		return P11S_OK;
	}
	if (BIO_eof(r->in) || got == 0)
		return P11S_OK;
	return p11i_err(err, P11S_E_IO, "cannot read the signed message back");
}
