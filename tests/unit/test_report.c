/*
 * The CLI's report module (src/cli/report.c): the one string, time,
 * verdict and serial rendering every --json document shares.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/x509.h>

#include "p11smime/encrypt.h"
#include "p11smime/rules.h"
#include "p11smime/validate.h"
#include "report.h"
#include "testutil.h"

/* @p j as compact text (and freed), for comparing whole renderings. */
static char *text(json_t *j)
{
	char *s;

	assert_non_null(j);
	s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	assert_non_null(s);
	return s;
}

static void assert_renders(json_t *j, const char *want)
{
	char *s = text(j);

	assert_string_equal(s, want);
	free(s);
}

static void strings_escaped_and_never_lost(void **state)
{
	(void)state;
	assert_renders(report_string(NULL), "null");
	assert_renders(report_string(""), "\"\"");
	/* Quotes, backslashes and control bytes are escaped, never passed raw. */
	assert_renders(report_string("a\"b\\c\x01\x1b[2J\n\t"),
	               "\"a\\\"b\\\\c\\u0001\\u001B[2J\\n\\t\"");
	/* UTF-8 is kept; bytes that are not UTF-8 become '?' instead of dropping the member. */
	assert_renders(report_string("Jos\xc3\xa9"), "\"Jos\xc3\xa9\"");
	assert_renders(report_string("caf\xe9 \xff\xfe"), "\"caf? ??\"");
	assert_renders(report_string("half \xc3"), "\"half ?\"");
}

static void times_and_tristates(void **state)
{
	(void)state;
	assert_renders(report_time(0), "\"1970-01-01T00:00:00Z\"");
	assert_renders(report_time(tu_time("2026-11-28T12:34:56Z")), "\"2026-11-28T12:34:56Z\"");
	assert_renders(report_tristate(1), "true");
	assert_renders(report_tristate(0), "false");
	assert_renders(report_tristate(-1), "null");
}

static X509 *mail_cert(const char *san, long serial)
{
	EVP_PKEY *k = tu_key("ec:P-256");
	X509 *x = tu_cert(&(tu_cert_spec){.key = k,
	                                  .cn = "Report",
	                                  .san = san,
	                                  .ku = "critical,digitalSignature,keyAgreement",
	                                  .eku = "emailProtection",
	                                  .serial = serial,
	                                  .not_before = tu_time("2026-01-01"),
	                                  .not_after = tu_time("2027-01-01")});

	EVP_PKEY_free(k);
	return x;
}

static p11s_verdict *judge(X509 *x, const char *at)
{
	p11s_validate_opts o;
	p11s_verdict *v = NULL;

	p11s_validate_opts_init(&o);
	o.at = tu_time(at);
	assert_int_equal(p11s_validate(x, NULL, &o, &v, NULL), P11S_OK);
	return v;
}

/* The documented shape (docs/json-validate.md), the same for validate, verify and decrypt. */
static void verdict_shape(void **state)
{
	X509 *good = mail_cert("email:alice@example.org", 0), *bad = mail_cert(NULL, 0);
	p11s_verdict *v1 = judge(good, "2026-06-01"), *v2 = judge(bad, "2028-06-01");
	json_t *j = report_verdict(v1), *checks, *c;
	const char *key;
	json_t *val;
	const char *order[] = {"verdict",     "ca",     "usable_for_outgoing",
	                       "in_validity", "checks", "warnings"};
	size_t n = 0;
	char *s;

	(void)state;
	json_object_foreach(j, key, val)
	{
		assert_true(n < 6);
		assert_string_equal(key, order[n++]);
	}
	assert_int_equal(n, 6);
	assert_string_equal(json_string_value(json_object_get(j, "verdict")), "accepted");
	assert_true(json_is_true(json_object_get(j, "usable_for_outgoing")));
	checks = json_object_get(j, "checks");
	assert_int_equal(json_array_size(checks), 6);
	c = json_array_get(checks, 0);
	assert_string_equal(json_string_value(json_object_get(c, "rule")), "san-email");
	assert_string_equal(json_string_value(json_object_get(c, "result")), "pass");
	assert_true(json_is_true(json_object_get(c, "affects_verdict")));
	c = json_array_get(checks, 5);
	assert_string_equal(json_string_value(json_object_get(c, "rule")), "validity");
	assert_true(json_is_false(json_object_get(c, "affects_verdict")));
	json_decref(j);

	/* Rejected and out of its validity: both said, validity not deciding. */
	j = report_verdict(v2);
	assert_string_equal(json_string_value(json_object_get(j, "verdict")), "rejected");
	assert_true(json_is_false(json_object_get(j, "usable_for_outgoing")));
	assert_true(json_is_false(json_object_get(j, "in_validity")));
	c = json_array_get(json_object_get(j, "checks"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "result")), "fail");
	json_decref(j);

	/* No verdict: null as a member (verify), and null-verdict members set on an object
	 * (decrypt). */
	assert_renders(report_verdict(NULL), "null");
	j = json_object();
	assert_int_equal(report_verdict_set(j, NULL), 0);
	assert_renders(j, "{\"verdict\":null,\"ca\":false,\"usable_for_outgoing\":false,"
	                  "\"in_validity\":false,\"checks\":[],\"warnings\":[]}");

	/* Members already present keep their place: validate's order survives. */
	j = json_pack("{s:s, s:n, s:n, s:b}", "source", "x.pem", "ca", "verdict", "can_sign", 1);
	assert_int_equal(report_verdict_set(j, v1), 0);
	s = text(j);
	assert_non_null(strstr(s, "{\"source\":\"x.pem\",\"ca\":false,\"verdict\":\"accepted\","
	                          "\"can_sign\":true,\"usable_for_outgoing\":true,"
	                          "\"in_validity\":true,\"checks\":["));
	free(s);

	/* Key checks have their own shape: "check", no affects_verdict. */
	assert_renders(report_checks(v1, 1), "[]");
	p11s_verdict_free(v1);
	p11s_verdict_free(v2);
	X509_free(good);
	X509_free(bad);
}

/* Serials: lower-case hex of whole bytes in every report (list and decrypt always were). */
static void serials_lower_case(void **state)
{
	X509 *a = mail_cert("email:a@example.org", 0xABCDEF01L),
	     *b = mail_cert("email:b@example.org", 0xabcL);
	p11s_recipients *r = p11s_recipients_new();
	p11s_encrypt_opts eo;
	char *doc;
	json_t *j, *list;

	(void)state;
	memset(&eo, 0, sizeof(eo));
	eo.cipher = P11S_CIPHER_AES256_GCM;
	assert_int_equal(p11s_recipients_add_cert(r, a, "file:a.pem", NULL), P11S_OK);
	assert_int_equal(p11s_recipients_add_cert(r, b, "file:b.pem", NULL), P11S_OK);
	doc = report_encrypt_json(r, &eo);
	assert_non_null(doc);
	j = json_loads(doc, 0, NULL);
	assert_non_null(j);
	list = json_object_get(j, "recipients");
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "serial")),
	                    "abcdef01");
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "serial")),
	                    "0abc");
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "source")),
	                    "file:b.pem");
	/* Every document: two-space indent, members in order. */
	assert_memory_equal(doc, "{\n  \"cipher\": ", 14);
	json_decref(j);
	free(doc);
	p11s_recipients_free(r);
	X509_free(a);
	X509_free(b);
}

/* A validate entry: the verdict members in validate's order, serial lower case, times RFC 3339. */
static void validation_entry(void **state)
{
	X509 *x = mail_cert("email:v@example.org", 0x0fL);
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	char *path = tu_write("v.der", der, (size_t)len), *doc, *p;
	p11s_validation_opts o;
	p11s_validation *r = NULL;
	const char *order[] = {"\"ca\"",
	                       "\"verdict\"",
	                       "\"usable_for_outgoing\"",
	                       "\"can_sign\"",
	                       "\"cannot_encrypt_reason\"",
	                       "\"in_validity\"",
	                       "\"checks\"",
	                       "\"warnings\"",
	                       "\"key\"",
	                       "\"chain\"",
	                       "\"format\"",
	                       "\"serial\"",
	                       "\"not_before\""};

	(void)state;
	p11s_validation_opts_init(&o);
	o.at = tu_time("2026-06-01");
	assert_int_equal(p11s_validation_new(&o, &r, NULL), P11S_OK);
	assert_int_equal(p11s_validation_add_file(r, path, NULL), P11S_OK);
	assert_int_equal(p11s_validation_run(r, NULL), P11S_OK);
	doc = report_validation_json(r);
	assert_non_null(doc);
	p = doc;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		p = strstr(p, order[i]);
		assert_non_null(p);
	}
	assert_non_null(strstr(doc, "\"serial\": \"0f\""));
	assert_non_null(strstr(doc, "\"not_before\": \"2026-01-01T00:00:00Z\""));
	assert_non_null(strstr(doc, "\"format\": \"DER\""));
	assert_non_null(strstr(doc, "\"at\": \"2026-06-01T00:00:00Z\""));
	free(doc);
	doc = report_validation_text(r);
	assert_non_null(strstr(doc, "1 certificate judged at 2026-06-01T00:00:00Z: 1 accepted"));
	free(doc);
	p11s_validation_free(r);
	OPENSSL_free(der);
	free(path);
	X509_free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(strings_escaped_and_never_lost),
	    cmocka_unit_test(times_and_tristates),
	    cmocka_unit_test(verdict_shape),
	    cmocka_unit_test(serials_lower_case),
	    cmocka_unit_test(validation_entry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
