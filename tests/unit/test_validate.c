/* The validation report over files: gathering, status, JSON schema, text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "report.h"
#include "p11smime/validate.h"
#include "testutil.h"

#define AT "2026-06-01T00:00:00Z"

static X509 *ca, *good, *bad, *expired;
static EVP_PKEY *ca_key, *key;
static char *ca_path, *good_path, *bundle_path, *garbage_path, *p12_path;

static int setup(void **state)
{
	char *a, *b, *c, *e, *bundle;
	unsigned char *p12;
	size_t len;

	(void)state;
	ca_key = tu_key("ec:P-256#ca");
	key = tu_key("rsa:2048");
	ca = tu_cert(&(tu_cert_spec){.key = ca_key,
	                             .cn = "Report CA",
	                             .ca = 1,
	                             .not_before = tu_time("2020-01-01"),
	                             .not_after = tu_time("2040-01-01")});
	good = tu_cert(&(tu_cert_spec){.key = key,
	                               .cn = "Good",
	                               .san = "email:good@example.org",
	                               .ku = "digitalSignature,keyEncipherment",
	                               .eku = "emailProtection",
	                               .issuer = ca,
	                               .issuer_key = ca_key,
	                               .not_before = tu_time("2026-01-01"),
	                               .not_after = tu_time("2027-01-01")});
	bad = tu_cert(&(tu_cert_spec){.key = key,
	                              .cn = "Bad",
	                              .subject_email = "bad@example.org",
	                              .ku = "keyAgreement",
	                              .eku = "serverAuth",
	                              .issuer = ca,
	                              .issuer_key = ca_key,
	                              .not_before = tu_time("2026-01-01"),
	                              .not_after = tu_time("2027-01-01")});
	expired = tu_cert(&(tu_cert_spec){.key = key,
	                                  .cn = "Expired",
	                                  .san = "email:old@example.org",
	                                  .ku = "digitalSignature",
	                                  .not_before = tu_time("2020-01-01"),
	                                  .not_after = tu_time("2021-01-01")});
	a = tu_pem(good);
	b = tu_pem(bad);
	c = tu_pem(ca);
	e = tu_pem(expired);
	bundle = tu_cat(a, b, e, NULL);
	ca_path = tu_write("ca.pem", c, 0);
	good_path = tu_write("good.pem", a, 0);
	bundle_path = tu_write("bundle.pem", bundle, 0);
	garbage_path = tu_write("garbage.txt", "hello\n", 0);
	p12 = tu_p12(good, key, NULL, "", &len);
	p12_path = tu_write("good.p12", p12, len);
	OPENSSL_free(p12);
	free(a);
	free(b);
	free(c);
	free(e);
	free(bundle);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(ca);
	X509_free(good);
	X509_free(bad);
	X509_free(expired);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(key);
	free(ca_path);
	free(good_path);
	free(bundle_path);
	free(garbage_path);
	free(p12_path);
	return 0;
}

static p11s_validation *new_run(void)
{
	p11s_validation_opts o;
	p11s_validation *r = NULL;

	p11s_validation_opts_init(&o);
	o.at = tu_time(AT);
	assert_int_equal(p11s_validation_new(&o, &r, NULL), P11S_OK);
	return r;
}

static json_t *as_json(const p11s_validation *r)
{
	char *doc = report_validation_json(r);
	json_error_t e;
	json_t *j;

	assert_non_null(doc);
	j = json_loads(doc, 0, &e);
	if (j == NULL)
		print_error("JSON does not parse: %s\n%s\n", e.text, doc);
	assert_non_null(j);
	free(doc);
	return j;
}

static const char *jstr(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	if (!json_is_string(v)) {
		print_error("key %s is not a string\n", k);
		fail();
	}
	return json_string_value(v);
}

static void bundle_report(void **state)
{
	p11s_validation *r = new_run();
	json_t *j, *certs, *c;
	char *text;

	(void)state;
	assert_int_equal(p11s_validation_add_anchors(r, ca_path, NULL), P11S_OK);
	assert_int_equal(p11s_validation_add_file(r, bundle_path, NULL), P11S_OK);
	assert_int_equal(p11s_validation_run(r, NULL), P11S_OK);
	assert_int_equal(p11s_validation_count(r), 3);
	assert_int_equal(p11s_validation_status(r), P11S_E_REJECTED);
	assert_int_equal(p11s_rc_exit_code(p11s_validation_status(r)), 1);
	assert_string_equal(p11s_validation_source(r, 1), bundle_path);
	assert_int_equal(p11s_validation_index(r, 2), 2);
	assert_true(p11s_verdict_accepted(p11s_validation_verdict(r, 0)));
	assert_false(p11s_verdict_accepted(p11s_validation_verdict(r, 1)));

	/* The documented JSON shape (docs/json-validate.md). */
	j = as_json(r);
	certs = json_object_get(j, "certificates");
	assert_int_equal(json_array_size(certs), 3);
	assert_string_equal(jstr(j, "at"), AT);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(j, "summary"), "rejected")), 1);
	for (size_t i = 0; i < 3; i++) {
		static const char *keys[] = {"source",
		                             "index",
		                             "subject",
		                             "emails",
		                             "ca",
		                             "verdict",
		                             "usable_for_outgoing",
		                             "can_sign",
		                             "can_encrypt",
		                             "checks",
		                             "warnings",
		                             "key",
		                             "chain"};

		c = json_array_get(certs, i);
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			if (json_object_get(c, keys[k]) == NULL) {
				print_error("certificate %zu lacks '%s'\n", i, keys[k]);
				fail();
			}
		assert_string_equal(jstr(c, "source"), bundle_path);
		assert_int_equal(json_integer_value(json_object_get(c, "index")), i);
		assert_true(json_is_null(json_object_get(c, "key")));
		assert_int_equal(json_array_size(json_object_get(c, "checks")), 6);
	}
	c = json_array_get(certs, 0);
	assert_string_equal(jstr(c, "subject"), "CN=Good");
	assert_string_equal(jstr(c, "verdict"), "accepted");
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "emails"), 0)),
	                    "good@example.org");
	assert_true(json_is_true(json_object_get(c, "can_sign")));
	assert_string_equal(jstr(json_object_get(c, "chain"), "result"), "pass");
	assert_string_equal(jstr(json_array_get(json_object_get(c, "checks"), 0), "rule"),
	                    "san-email");

	c = json_array_get(certs, 1);
	assert_string_equal(jstr(c, "verdict"), "rejected");
	assert_int_equal(json_array_size(json_object_get(c, "emails")), 0);
	assert_string_equal(jstr(json_array_get(json_object_get(c, "checks"), 1), "result"),
	                    "fail");
	assert_non_null(strstr(jstr(json_array_get(json_object_get(c, "checks"), 1), "message"),
	                       "keyAgreement"));

	c = json_array_get(certs, 2);
	assert_string_equal(jstr(c, "verdict"), "accepted");
	assert_true(json_is_false(json_object_get(c, "usable_for_outgoing")));
	/* Self-signed, not an anchor: no chain. */
	assert_string_equal(jstr(json_object_get(c, "chain"), "result"), "fail");
	json_decref(j);

	/* The text: a block per certificate, a line per rule, the verdict. */
	text = report_validation_text(r);
	assert_non_null(text);
	assert_non_null(strstr(text, "certificate 1/3: "));
	assert_non_null(strstr(text, "    pass  san-email              e-mail address in the "
	                             "Subject Alternative Name: good@example.org\n"));
	assert_non_null(strstr(text, "  verdict   REJECTED by san-email, key-usage, "
	                             "extended-key-usage; not usable for outgoing mail\n"));
	assert_non_null(strstr(text, "ACCEPTED, but NOT USABLE for outgoing mail"));
	assert_non_null(strstr(text, "3 certificates judged at " AT
	                             ": 2 accepted, 1 rejected, 1 usable for outgoing mail\n"));
	free(text);
	p11s_validation_free(r);
}

/* A file that is not a certificate: an error naming it; the others still judged; exit 4. */
static void input_errors(void **state)
{
	p11s_validation *r = new_run();
	p11s_error *err = p11s_error_new();
	json_t *j, *e;

	(void)state;
	assert_int_equal(p11s_validation_add_file(r, garbage_path, err), P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), garbage_path));
	assert_int_equal(p11s_validation_add_file(r, good_path, NULL), P11S_OK);
	assert_int_equal(p11s_validation_run(r, NULL), P11S_OK);
	assert_int_equal(p11s_validation_count(r), 1);
	assert_int_equal(p11s_validation_error_count(r), 1);
	assert_string_equal(p11s_validation_error_source(r, 0), garbage_path);
	assert_int_equal(p11s_validation_status(r), P11S_E_INPUT);
	assert_int_equal(p11s_rc_exit_code(p11s_validation_status(r)), 4);
	j = as_json(r);
	e = json_array_get(json_object_get(j, "errors"), 0);
	assert_string_equal(jstr(e, "source"), garbage_path);
	assert_string_equal(jstr(e, "code"), "input");
	assert_non_null(strstr(jstr(e, "message"), "not a certificate"));
	json_decref(j);

	/* --ca with a file that is not a certificate is refused outright. */
	assert_int_equal(p11s_validation_add_anchors(r, garbage_path, err), P11S_E_INPUT);
	p11s_error_free(err);
	p11s_validation_free(r);
}

/* PKCS#12: the key is known (software), so private-key-algorithm is judged. */
static void pkcs12_key(void **state)
{
	p11s_validation *r = new_run();
	json_t *j, *k;

	(void)state;
	assert_int_equal(p11s_validation_add_file(r, p12_path, NULL), P11S_OK);
	assert_int_equal(p11s_validation_run(r, NULL), P11S_OK);
	assert_int_equal(
	    p11s_verdict_rule(p11s_validation_verdict(r, 0), P11S_RULE_PRIVATE_KEY_ALGORITHM, NULL),
	    P11S_CHECK_PASS);
	j = as_json(r);
	k = json_object_get(json_array_get(json_object_get(j, "certificates"), 0), "key");
	assert_true(json_is_true(json_object_get(k, "present")));
	assert_true(json_is_true(json_object_get(k, "matches")));
	assert_true(json_is_false(json_object_get(k, "on_token")));
	assert_string_equal(jstr(k, "type"), "RSA");
	json_decref(j);
	p11s_validation_free(r);
}

/*
 * An EC key from a PKCS#12 file is shown by its curve, as token keys are,
 * and the certificate's facts are those `list` gives (p11s_cert_describe).
 */
static void pkcs12_ec_key_curve(void **state)
{
	EVP_PKEY *ec = tu_key("ec:P-384");
	X509 *x = tu_cert(&(tu_cert_spec){.key = ec,
	                                  .cn = "EC file",
	                                  .san = "email:ec@example.org",
	                                  .ku = "digitalSignature",
	                                  .issuer = ca,
	                                  .issuer_key = ca_key,
	                                  .serial = 0xabc,
	                                  .not_before = tu_time("2026-01-01"),
	                                  .not_after = tu_time("2027-01-01")});
	size_t len;
	unsigned char *p12 = tu_p12(x, ec, NULL, "", &len);
	char *path = tu_write("ec.p12", p12, len), *text;
	p11s_validation *r = new_run();
	json_t *j, *c, *k, *pk;

	(void)state;
	assert_int_equal(p11s_validation_add_file(r, path, NULL), P11S_OK);
	assert_int_equal(p11s_validation_run(r, NULL), P11S_OK);
	text = report_validation_text(r);
	assert_non_null(strstr(text, "  private key EC P-384"));
	assert_non_null(strstr(text, "  key       EC P-384\n"));
	assert_non_null(strstr(text, "  e-mail    ec@example.org\n"));
	assert_non_null(strstr(text, "  validity  2026-01-01T00:00:00Z .. 2027-01-01T00:00:00Z\n"));
	j = as_json(r);
	c = json_array_get(json_object_get(j, "certificates"), 0);
	k = json_object_get(c, "key");
	assert_string_equal(jstr(k, "type"), "EC");
	assert_string_equal(jstr(k, "curve"), "P-384");
	assert_int_equal(json_integer_value(json_object_get(k, "bits")), 384);
	pk = json_object_get(c, "public_key");
	assert_string_equal(jstr(pk, "algorithm"), "EC");
	assert_string_equal(jstr(pk, "curve"), "P-384");
	assert_int_equal(json_integer_value(json_object_get(pk, "bits")), 384);
	/* Whole bytes, lower case as in every report. */
	assert_string_equal(jstr(c, "serial"), "0abc");
	assert_string_equal(jstr(c, "subject"), "CN=EC file");
	assert_string_equal(jstr(c, "issuer"), "CN=Report CA");
	assert_string_equal(jstr(c, "not_after"), "2027-01-01T00:00:00Z");
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "emails"), 0)),
	                    "ec@example.org");
	json_decref(j);
	free(text);
	p11s_validation_free(r);
	free(path);
	OPENSSL_free(p12);
	X509_free(x);
	EVP_PKEY_free(ec);
}

/* A directory: recursive, in name order; non-certificates skipped, not errors. */
static void directory(void **state)
{
	char *dir = tu_cat(tu_tmpdir(), "/folder", NULL), *sub = tu_cat(dir, "/sub", NULL);
	char *a = tu_pem(good), *b = tu_pem(bad);
	char *pa = tu_cat(dir, "/b.pem", NULL), *pb = tu_cat(sub, "/a.pem", NULL);
	char *pn = tu_cat(dir, "/notes.txt", NULL), *ph = tu_cat(dir, "/.hidden.pem", NULL);
	FILE *fp;
	p11s_validation *r = new_run();

	(void)state;
	mkdir(dir, 0700);
	mkdir(sub, 0700);
	fp = fopen(pa, "w");
	fputs(a, fp);
	fclose(fp);
	fp = fopen(pb, "w");
	fputs(b, fp);
	fclose(fp);
	fp = fopen(pn, "w");
	fputs("not a certificate\n", fp);
	fclose(fp);
	fp = fopen(ph, "w");
	fputs("hidden\n", fp);
	fclose(fp);

	assert_int_equal(p11s_validation_add_file(r, dir, NULL), P11S_OK);
	assert_int_equal(p11s_validation_run(r, NULL), P11S_OK);
	assert_int_equal(p11s_validation_count(r), 2);
	assert_string_equal(p11s_validation_source(r, 0), pa);
	assert_string_equal(p11s_validation_source(r, 1), pb);
	assert_int_equal(p11s_validation_error_count(r), 0);
	assert_int_equal(p11s_validation_skipped_count(r), 1);
	assert_non_null(strstr(p11s_validation_skipped(r, 0), "notes.txt"));
	assert_int_equal(p11s_validation_status(r), P11S_E_REJECTED);
	p11s_validation_free(r);
	remove(pa);
	remove(pb);
	remove(pn);
	remove(ph);
	rmdir(sub);
	rmdir(dir);
	free(a);
	free(b);
	free(pa);
	free(pb);
	free(pn);
	free(ph);
	free(dir);
	free(sub);
}

/* All accepted: status OK, exit 0; nothing at all is also OK. */
static void all_accepted(void **state)
{
	p11s_validation *r = new_run();

	(void)state;
	assert_int_equal(p11s_validation_run(r, NULL), P11S_OK);
	assert_int_equal(p11s_validation_status(r), P11S_OK);
	assert_int_equal(p11s_validation_add_file(r, good_path, NULL), P11S_OK);
	assert_int_equal(p11s_validation_run(r, NULL), P11S_OK);
	assert_int_equal(p11s_validation_status(r), P11S_OK);
	p11s_validation_free(r);
	p11s_validation_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(bundle_report), cmocka_unit_test(input_errors),
	    cmocka_unit_test(pkcs12_key),    cmocka_unit_test(directory),
	    cmocka_unit_test(all_accepted),  cmocka_unit_test(pkcs12_ec_key_curve),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
