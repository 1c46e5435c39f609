/*
 * RFC 5321 4.1.2 Mailbox syntax, for addresses read out of certificates.
 *
 * The input is hostile (any bytes a certificate carries), so: every loop
 * below runs over an index that only grows and stops at len; nothing is
 * read past len; len is refused above P11I_MAILBOX_MAX (254) before any
 * parsing, so no work or copy grows beyond that; reasons are written with
 * snprintf into the caller's buffer.  No allocation in the parser.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "mailbox.h"
#include "mime.h"
#include "p11smime/encrypt.h"

#define LOCAL_MAX  64  /* RFC 5321 4.5.3.1.1 */
#define DOMAIN_MAX 255 /* RFC 5321 4.5.3.1.2 */
#define LABEL_MAX  63  /* RFC 1035 2.3.4 */

static int say(char *why, size_t whylen, const char *fmt, ...) P11I_PRINTF(3, 4);
static int say(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return 0;
}

static int is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 5322 atext. */
static int is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Dot-string = Atom *("." Atom): no dot first, last or twice in a row. */
static int dot_string(const char *s, size_t len, char *why, size_t whylen)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (i == 0)
				return say(why, whylen, "the local part starts with a dot");
			if (i + 1 == len)
				return say(why, whylen, "the local part ends with a dot");
			if (s[i + 1] == '.')
				return say(why, whylen, "two dots in a row in the local part");
		} else if (c == ' ') {
			return say(why, whylen, "a space outside quotes");
		} else if (!is_atext(c)) {
			return say(why, whylen, "'%c' is not allowed in an unquoted local part", c);
		}
	}
	return 1;
}

/*
 * Quoted-string = DQUOTE *QcontentSMTP DQUOTE, starting at s[0] == '"'.
 * *end gets the index just past the closing quote.
 */
static int quoted_string(const char *s, size_t len, size_t *end, char *why, size_t whylen)
{
	size_t i = 1;

	while (i < len) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"') {
			if (i == 1)
				return say(why, whylen,
				           "nothing before the @ (an empty quoted local part)");
			*end = i + 1;
			return 1;
		}
		if (c == '\\') {
			/* quoted-pairSMTP = "\" %d32-126: two bytes, both consumed. */
			if (i + 1 >= len)
				break;
			i += 2;
			continue;
		}
		i++; /* qtextSMTP: %d32-33 / %d35-91 / %d93-126, all printable ASCII */
	}
	return say(why, whylen, "an unterminated quoted local part");
}

/* sub-domain = Let-dig [Ldh-str], at most 63 octets. */
static int label(const char *s, size_t len, char *why, size_t whylen)
{
	if (len == 0)
		return say(why, whylen, "an empty label in the domain");
	if (len > LABEL_MAX)
		return say(why, whylen, "a domain label longer than %d characters", LABEL_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '-' && (i == 0 || i + 1 == len))
			return say(why, whylen, "a domain label starts or ends with a hyphen");
		if (c == '@')
			return say(why, whylen, "more than one @");
		if (c == ' ')
			return say(why, whylen, "a space in the domain");
		if (!is_alpha(c) && !is_digit(c) && c != '-')
			return say(why, whylen, "'%c' is not allowed in a domain", c);
	}
	return 1;
}

static int domain(const char *s, size_t len, char *why, size_t whylen)
{
	size_t start = 0;

	if (len > DOMAIN_MAX)
		return say(why, whylen, "the domain is longer than %d characters", DOMAIN_MAX);
	if (s[len - 1] == '.')
		return say(why, whylen, "the domain ends with a dot");
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '.')
			continue;
		if (!label(s + start, i - start, why, whylen))
			return 0;
		start = i + 1;
	}
	return 1;
}

/* address-literal: "[" IPv4 or "IPv6:" IPv6 "]" (no other tag is registered). */
static int address_literal(const char *s, size_t len, char *why, size_t whylen)
{
	char buf[P11I_MAILBOX_MAX + 1];
	unsigned char addr[16];
	size_t n;

	if (len < 2 || s[len - 1] != ']')
		return say(why, whylen, "an unterminated address literal");
	n = len - 2;
	memcpy(buf, s + 1, n); /* n < len <= P11I_MAILBOX_MAX */
	buf[n] = '\0';
	/* inet_pton's IPv4 form is exactly four decimal octets, as RFC 5321 wants. */
	if (inet_pton(AF_INET, buf, addr) == 1)
		return 1;
	if (n > 5 && strncasecmp(buf, "IPv6:", 5) == 0 && inet_pton(AF_INET6, buf + 5, addr) == 1)
		return 1;
	return say(why, whylen, "an address literal that is neither IPv4 nor IPv6");
}

int p11i_mailbox_parse(const char *s, size_t len, char *why, size_t whylen)
{
	size_t at = 0;

	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (s == NULL || len == 0)
		return say(why, whylen, "empty");
	if (len > P11I_MAILBOX_MAX)
		return say(why, whylen, "longer than %d characters", P11I_MAILBOX_MAX);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c >= 0x7f)
			return say(why, whylen,
			           c >= 0x80 ? "a character outside ASCII (an internationalised "
			                       "address belongs in an SmtpUTF8Mailbox)"
			                     : "a control character");
	}
	if (s[0] == '<' || s[len - 1] == '>')
		return say(why, whylen, "angle brackets: only the address itself belongs here");
	if (memchr(s, '@', len) == NULL)
		return say(why, whylen, "no @");

	if (s[0] == '"') {
		if (!quoted_string(s, len, &at, why, whylen))
			return 0;
		if (at >= len || s[at] != '@')
			return say(why, whylen, "no @ after the quoted local part");
	} else {
		/* The first @ ends a dot-string: '@' is not atext. */
		at = (size_t)((const char *)memchr(s, '@', len) - s);
		if (at == 0)
			return say(why, whylen, "nothing before the @");
		if (!dot_string(s, at, why, whylen))
			return 0;
	}
	if (at > LOCAL_MAX)
		return say(why, whylen, "the local part is longer than %d characters", LOCAL_MAX);
	if (at + 1 == len)
		return say(why, whylen, "nothing after the @");
	if (s[at + 1] == '[')
		return address_literal(s + at + 1, len - at - 1, why, whylen);
	return domain(s + at + 1, len - at - 1, why, whylen);
}

int p11i_mailbox_valid(const char *s)
{
	return s != NULL && p11i_mailbox_parse(s, strlen(s), NULL, 0);
}

int p11i_mailbox_equal(const char *a, const char *b)
{
	return p11i_mailbox_valid(a) && p11i_mailbox_valid(b) && strcasecmp(a, b) == 0;
}

/* ----------------------------------------------------------- certificates */

/* Printable ASCII copy; other bytes (and the backslash) as \xNN.  len <= INT_MAX. */
static char *printable(const unsigned char *s, int len)
{
	char *out = malloc((size_t)(len > 0 ? len : 0) * 4 + 1), *p = out;

	if (out == NULL)
		return NULL;
	for (int i = 0; i < len; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
			*p++ = (char)s[i];
		else
			p += sprintf(p, "\\x%02x", s[i]);
	}
	*p = '\0';
	return out;
}

/* A NULL-terminated vector of strings; oom: a push failed (p11s_strv_free() it). */
struct strv {
	P11I_VEC(char *) a;
	int oom;
};

static void strv_push(struct strv *sv, char *s)
{
	if (s == NULL || p11i_vec_reserve(&sv->a, 2) != 0) {
		free(s);
		sv->oom = 1;
		return;
	}
	sv->a.v[sv->a.n++] = s;
	sv->a.v[sv->a.n] = NULL;
}

static char **strv_done(struct strv *sv, size_t *n)
{
	if (!sv->oom && sv->a.v == NULL)
		sv->a.v = calloc(1, sizeof(char *));
	if (sv->oom || sv->a.v == NULL) {
		p11s_strv_free(sv->a.v);
		return NULL;
	}
	if (n != NULL)
		*n = sv->a.n;
	return sv->a.v;
}

/* Call @p fn on each address-bearing string of @p cert in @p where, in order. */
typedef void (*visit_fn)(void *user, unsigned place, const ASN1_STRING *value);

static void visit(X509 *cert, unsigned where, visit_fn fn, void *user)
{
	if (cert == NULL)
		return;
	if (where & P11I_MAILBOX_IN_SAN) {
		GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);

		for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
			GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);

			if (gn->type == GEN_EMAIL && gn->d.rfc822Name != NULL)
				fn(user, P11I_MAILBOX_IN_SAN, gn->d.rfc822Name);
		}
		GENERAL_NAMES_free(gens);
	}
	if (where & P11I_MAILBOX_IN_SUBJECT) {
		X509_NAME *name = X509_get_subject_name(cert);
		int idx = -1;

		while (name != NULL &&
		       (idx = X509_NAME_get_index_by_NID(name, NID_pkcs9_emailAddress, idx)) >= 0)
			fn(user, P11I_MAILBOX_IN_SUBJECT,
			   X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
	}
	ERR_clear_error();
}

static int value_is_mailbox(const ASN1_STRING *value, char *why, size_t whylen)
{
	const unsigned char *s = value ? ASN1_STRING_get0_data(value) : NULL;
	int len = value ? ASN1_STRING_length(value) : 0;

	return p11i_mailbox_parse((const char *)s, len > 0 ? (size_t)len : 0, why, whylen);
}

static void collect_good(void *user, unsigned place, const ASN1_STRING *value)
{
	(void)place;
	if (value_is_mailbox(value, NULL, 0))
		strv_push(user, printable(ASN1_STRING_get0_data(value), ASN1_STRING_length(value)));
}

char **p11i_cert_mailboxes(X509 *cert, unsigned where, size_t *n)
{
	struct strv sv = {0};

	visit(cert, where, collect_good, &sv);
	return strv_done(&sv, n);
}

static void collect_bad(void *user, unsigned place, const ASN1_STRING *value)
{
	char why[128];
	char *shown, *msg;

	(void)place;
	if (value_is_mailbox(value, why, sizeof(why)))
		return;
	shown = value ? printable(ASN1_STRING_get0_data(value), ASN1_STRING_length(value))
	              : p11i_strdup("");
	msg = shown ? p11i_asprintf("'%s' is not an e-mail address (%s)", shown, why) : NULL;
	free(shown);
	strv_push(user, msg);
}

char **p11i_cert_bad_mailboxes(X509 *cert, size_t *n)
{
	struct strv sv = {0};

	visit(cert, P11I_MAILBOX_IN_SAN, collect_bad, &sv);
	return strv_done(&sv, n);
}

struct find {
	const char *address;
	int found;
};

static void find_one(void *user, unsigned place, const ASN1_STRING *value)
{
	struct find *f = user;
	const char *s = (const char *)ASN1_STRING_get0_data(value);
	int len = ASN1_STRING_length(value);

	/* SAN entries come first, so the first match is the better place. */
	if (f->found || len <= 0 || !value_is_mailbox(value, NULL, 0) ||
	    strlen(f->address) != (size_t)len || strncasecmp(f->address, s, (size_t)len) != 0)
		return;
	f->found = (int)place;
}

int p11i_cert_has_mailbox(X509 *cert, const char *address, unsigned where)
{
	struct find f = {address, 0};

	if (!p11i_mailbox_valid(address))
		return 0;
	visit(cert, where, find_one, &f);
	return f.found;
}

p11s_rc p11s_message_addresses(BIO *in, const char *const *names, char ***out, size_t *n,
                               p11s_error *err)
{
	p11i_headers *h = NULL;
	p11s_rc rc = p11i_headers_read(in, 0, &h, err);

	*out = NULL;
	if (rc == P11S_OK)
		rc = p11i_headers_addresses(h, names, out, n, err);
	p11i_headers_free(h);
	return rc;
}
