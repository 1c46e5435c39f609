/*
 * Distinguished names as people type them: OpenSSL's "/CN=a/O=b" (what
 * `openssl req -subj` takes) and RFC 4514's "CN=a,O=b" (what LDAP tools
 * and `openssl x509 -nameopt RFC2253` print).  The two list the RDNs in
 * opposite orders: OpenSSL's from the most general, RFC 4514's from the
 * most specific.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "common.h"
#include "p11smime/lifecycle.h"

struct ava {
	char *type;
	char *value;
	size_t value_len;
	int new_rdn; /* first attribute of its RDN */
};

struct avas {
	struct ava *v;
	size_t n;
};

static void avas_free(struct avas *a)
{
	for (size_t i = 0; i < a->n; i++) {
		free(a->v[i].type);
		free(a->v[i].value);
	}
	free(a->v);
}

static int hexval(int c)
{
	return isdigit(c) ? c - '0' : tolower(c) - 'a' + 10;
}

static char *trim(char *s, size_t *len)
{
	size_t n = *len;

	while (n > 0 && *s == ' ') {
		s++;
		n--;
	}
	while (n > 0 && s[n - 1] == ' ')
		n--;
	*len = n;
	return s;
}

/*
 * Split @p text into attributes: @p sep ends an RDN; in RFC 4514 '+' ends
 * an attribute within one (OpenSSL's form keeps '+' literal, as
 * `openssl req -subj` does, so "/emailAddress=a+b@example.org" works); a backslash escapes the next
 * character (RFC 4514 also allows two hex digits).  Spaces around types and values are dropped,
 * escaped ones kept.
 */
static p11s_rc split(const char *text, char sep, int rfc4514, struct avas *out, p11s_error *err)
{
	size_t cap = strlen(text) + 1;
	char *buf = malloc(cap), *type = NULL;
	size_t n = 0, keep = 0;
	int new_rdn = 1;
	p11s_rc rc = P11S_OK;

	out->v = calloc(cap, sizeof(*out->v));
	out->n = 0;
	if (buf == NULL || out->v == NULL) {
		free(buf);
		return p11i_err_nomem(err);
	}
	for (const char *p = text;; p++) {
		if (*p == '\\') {
			if (p[1] == '\0') {
				rc = p11i_err(err, P11S_E_USAGE,
				              "subject '%s' ends with a lone backslash", text);
				break;
			}
			if (rfc4514 && isxdigit((unsigned char)p[1])) {
				if (!isxdigit((unsigned char)p[2])) {
					rc = p11i_err(
					    err, P11S_E_USAGE,
					    "subject '%s': a backslash must be followed by "
					    "a special character or two hex digits",
					    text);
					break;
				}
				buf[n] = (char)(hexval((unsigned char)p[1]) << 4 |
				                hexval((unsigned char)p[2]));
				/*
				 * A NUL inside a name value is the null-prefix trick
				 * ("CN=bank.example\00.evil.example"): readers that stop at
				 * the NUL see another name than the certificate holds.
				 */
				if (buf[n] == '\0') {
					rc = p11i_err(err, P11S_E_USAGE,
					              "subject '%s': a NUL character (\\00) is not "
					              "allowed in a value",
					              text);
					break;
				}
				n++;
				p += 2;
			} else {
				buf[n++] = p[1];
				p++;
			}
			/* Escaped characters survive the trimming of spaces. */
			keep = n;
			continue;
		}
		if (*p == '=' && type == NULL) {
			size_t tl = n;
			char *t = trim(buf, &tl);

			if (tl == 0) {
				rc = p11i_err(err, P11S_E_USAGE,
				              "subject '%s': an attribute has no type before '='",
				              text);
				break;
			}
			type = p11i_strndup(t, tl);
			if (type == NULL) {
				rc = p11i_err_nomem(err);
				break;
			}
			n = 0;
			keep = 0;
			while (p[1] == ' ')
				p++;
			if (rfc4514 && p[1] == '#') {
				rc = p11i_err(
				    err, P11S_E_USAGE,
				    "subject '%s': '#' hex-encoded values are not supported; "
				    "write the value as text",
				    text);
				break;
			}
			continue;
		}
		if (*p == sep || (*p == '+' && rfc4514) || *p == '\0') {
			size_t vl = n;
			char *v = buf;

			/* Trailing spaces go unless escaped. */
			while (vl > keep && v[vl - 1] == ' ')
				vl--;
			if (type == NULL) {
				size_t tl = n;

				trim(buf, &tl);
				if (tl == 0 && *p == '\0' && out->n > 0 && !rfc4514)
					break; /* "/CN=a/": a trailing separator */
				rc = p11i_err(err, P11S_E_USAGE,
				              tl == 0
				                  ? "subject '%s' has an empty part"
				                  : "subject '%s': a part has no '=' (type=value)",
				              text);
				break;
			}
			if (vl == 0) {
				rc = p11i_err(err, P11S_E_USAGE,
				              "subject '%s': %s has an empty value", text, type);
				break;
			}
			out->v[out->n].type = type;
			out->v[out->n].value = p11i_strndup(v, vl);
			/* The copy's own length: what is handed to OpenSSL is what was copied. */
			out->v[out->n].value_len =
			    out->v[out->n].value ? strlen(out->v[out->n].value) : 0;
			out->v[out->n].new_rdn = new_rdn;
			out->n++;
			type = NULL;
			if (out->v[out->n - 1].value == NULL) {
				rc = p11i_err_nomem(err);
				break;
			}
			new_rdn = *p != '+';
			n = 0;
			keep = 0;
			if (*p == '\0')
				break;
			continue;
		}
		buf[n++] = *p;
	}
	free(type);
	OPENSSL_cleanse(buf, cap);
	free(buf);
	if (rc != P11S_OK) {
		avas_free(out);
		memset(out, 0, sizeof(*out));
	}
	return rc;
}

static p11s_rc add(X509_NAME *name, const struct ava *a, int set, const char *text, p11s_error *err)
{
	ASN1_OBJECT *obj = OBJ_txt2obj(a->type, 0);
	int ok;

	if (obj == NULL) {
		ERR_clear_error();
		return p11i_err(err, P11S_E_USAGE,
		                "subject '%s': '%s' is not an attribute type OpenSSL knows (CN, O, "
		                "OU, C, L, ST, emailAddress, ... or a dotted OID)",
		                text, a->type);
	}
	ok = X509_NAME_add_entry_by_OBJ(name, obj, MBSTRING_UTF8, (const unsigned char *)a->value,
	                                (int)a->value_len, -1, set);
	ASN1_OBJECT_free(obj);
	if (!ok)
		return p11i_err_ossl(err, P11S_E_USAGE, "subject '%s': %s=%s is refused", text,
		                     a->type, a->value);
	return P11S_OK;
}

p11s_rc p11s_dn_parse(const char *text, X509_NAME **out, p11s_error *err)
{
	struct avas a = {0};
	X509_NAME *name;
	int rfc4514;
	p11s_rc rc;

	*out = NULL;
	if (text == NULL || text[strspn(text, " ")] == '\0')
		return p11i_err(err, P11S_E_USAGE, "empty subject");
	rfc4514 = text[0] != '/';
	rc = split(rfc4514 ? text : text + 1, rfc4514 ? ',' : '/', rfc4514, &a, err);
	if (rc != P11S_OK)
		return rc;
	if (a.n == 0)
		return p11i_err(err, P11S_E_USAGE, "empty subject");
	name = X509_NAME_new();
	if (name == NULL) {
		avas_free(&a);
		return p11i_err_nomem(err);
	}
	if (!rfc4514) {
		for (size_t i = 0; i < a.n && rc == P11S_OK; i++)
			rc = add(name, &a.v[i], a.v[i].new_rdn ? 0 : -1, text, err);
	} else {
		/* RDNs from the last to the first, attributes within each in order. */
		size_t end = a.n;

		while (end > 0 && rc == P11S_OK) {
			size_t start = end - 1;

			while (start > 0 && !a.v[start].new_rdn)
				start--;
			for (size_t i = start; i < end && rc == P11S_OK; i++)
				rc = add(name, &a.v[i], i == start ? 0 : -1, text, err);
			end = start;
		}
	}
	avas_free(&a);
	if (rc != P11S_OK) {
		X509_NAME_free(name);
		return rc;
	}
	*out = name;
	return P11S_OK;
}
