/* p11s_dn_parse(): the subjects `p11smime csr --subject` takes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/x509.h>

#include "p11smime/lifecycle.h"

/* @p text parsed, as RFC 2253 (most specific RDN first); aborts on failure. */
static char *rfc2253(const char *text)
{
	X509_NAME *n = NULL;
	p11s_error *err = p11s_error_new();
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long len;

	if (p11s_dn_parse(text, &n, err) != P11S_OK)
		fail_msg("'%s' did not parse: %s", text, p11s_error_message(err));
	X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
	len = BIO_get_mem_data(b, &data);
	out = strndup(data, (size_t)len);
	BIO_free(b);
	X509_NAME_free(n);
	p11s_error_free(err);
	return out;
}

static void check(const char *text, const char *want)
{
	char *got = rfc2253(text);

	assert_string_equal(got, want);
	free(got);
}

/* The name's attributes in DER order, "CN=a|O=b", '+' inside a multi-valued RDN. */
static char *sequence(const char *text)
{
	X509_NAME *n = NULL;
	char buf[512] = "";
	int last_set = -1;

	assert_int_equal(p11s_dn_parse(text, &n, NULL), P11S_OK);
	for (int i = 0; i < X509_NAME_entry_count(n); i++) {
		X509_NAME_ENTRY *e = X509_NAME_get_entry(n, i);
		const ASN1_STRING *v = X509_NAME_ENTRY_get_data(e);
		int set = X509_NAME_ENTRY_set(e);

		if (i > 0)
			strcat(buf, set == last_set ? "+" : "|");
		strcat(buf, OBJ_nid2sn(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e))));
		strcat(buf, "=");
		strncat(buf, (const char *)ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
		last_set = set;
	}
	X509_NAME_free(n);
	return strdup(buf);
}

static void check_seq(const char *text, const char *want)
{
	char *got = sequence(text);

	assert_string_equal(got, want);
	free(got);
}

static void openssl_form(void **state)
{
	(void)state;
	/* Most general first: O is the first RDN of the DER, CN the last. */
	check_seq("/O=Example/CN=Alice", "O=Example|CN=Alice");
	check("/O=Example/CN=Alice", "CN=Alice,O=Example");
	check_seq("/C=DE/O=Example GmbH/OU=IT/CN=Alice Smith/emailAddress=alice@example.org",
	          "C=DE|O=Example GmbH|OU=IT|CN=Alice Smith|emailAddress=alice@example.org");
	/* A backslash makes the next character literal; '+' is an ordinary character. */
	check_seq("/CN=a\\/b/O=x", "CN=a/b|O=x");
	check_seq("/emailAddress=alice+smime@example.org", "emailAddress=alice+smime@example.org");
	check_seq("/CN=a=b", "CN=a=b");
	/* A trailing slash is forgiven. */
	check_seq("/CN=Alice/", "CN=Alice");
	check_seq("/commonName=Alice/2.5.4.10=Example", "CN=Alice|O=Example");
}

static void rfc4514_form(void **state)
{
	(void)state;
	/* Most specific first: the reverse of the DER order. */
	check_seq("CN=Alice,O=Example", "O=Example|CN=Alice");
	check("CN=Alice,O=Example", "CN=Alice,O=Example");
	check("CN=Alice, O=Example, C=DE", "CN=Alice,O=Example,C=DE");
	check_seq(" CN = Alice , O = Example ", "O=Example|CN=Alice");
	/* Escapes. */
	check_seq("CN=Smith\\, John,O=Ex\\+Co", "O=Ex+Co|CN=Smith, John");
	check_seq("CN=\\\"quoted\\\" \\<x\\>\\;\\=\\\\", "CN=\"quoted\" <x>;=\\");
	check_seq("CN=\\#1", "CN=#1");
	check_seq("CN=J\\C3\\BCrgen", "CN=J\xc3\xbcrgen");
	check_seq("CN=trailing\\ ", "CN=trailing ");
	check_seq("CN=\\ leading", "CN= leading");
	/* Multi-valued RDNs. */
	check_seq("CN=Alice+UID=alice,O=Example", "O=Example|CN=Alice+UID=alice");
	check_seq("2.5.4.3=Alice", "CN=Alice");
	/* UTF-8 as is. */
	check_seq("CN=Zo\xc3\xab,O=Example", "O=Example|CN=Zo\xc3\xab");
}

static void errors(void **state)
{
	static const struct {
		const char *text, *says;
	} bad[] = {
	    {"", "empty subject"},
	    {"   ", "empty subject"},
	    {"/", "empty part"},
	    {"/CN=a//O=b", "empty part"},
	    {"CN", "no '='"},
	    {"/CN=Alice/O", "no '='"},
	    {"CN=", "empty value"},
	    {"CN=a,O=", "empty value"},
	    {",CN=a", "empty part"},
	    {"CN=a,", "empty part"},
	    {"=a", "no type"},
	    {"XX=a", "'XX' is not an attribute type"},
	    {"/CN=a/Bogus=b", "'Bogus' is not an attribute type"},
	    {"CN=a\\", "lone backslash"},
	    {"CN=\\4", "two hex digits"},
	    {"CN=#04024869", "'#' hex-encoded values are not supported"},
	    {"C=DEU", "C=DEU is refused"},
	    {"CN=a+", "empty part"},
	    /* The null-prefix trick; once read past the copy (fuzz_text). */
	    {"CN=a\\00b", "NUL character"},
	    {"CN=\\00", "NUL character"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p11s_error *err = p11s_error_new();
		X509_NAME *n = (X509_NAME *)1;

		if (p11s_dn_parse(bad[i].text, &n, err) != P11S_E_USAGE)
			fail_msg("'%s' was accepted", bad[i].text);
		assert_null(n);
		if (strstr(p11s_error_message(err), bad[i].says) == NULL)
			fail_msg("'%s': message '%s' lacks '%s'", bad[i].text,
			         p11s_error_message(err), bad[i].says);
		p11s_error_free(err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(openssl_form),
	    cmocka_unit_test(rfc4514_form),
	    cmocka_unit_test(errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
