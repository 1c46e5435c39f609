/*
 * The milter's library side without an MTA: a message rebuilt from header
 * callbacks and body chunks, signed with a software key, split into header
 * edits and a body whose signature OpenSSL checks against the entity the
 * test builds itself; and the --signer-map parser's refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>

#include "mime.h"
#include "p11smime/milter.h"
#include "p11smime/sign.h"
#include "testutil.h"

static p11s_milter_msg *msg_with(const char *const *fields)
{
	p11s_milter_msg *m = NULL;

	assert_int_equal(p11s_milter_msg_new(&m, NULL), P11S_OK);
	for (size_t i = 0; fields[i] != NULL; i += 2)
		assert_int_equal(p11s_milter_msg_header(m, fields[i], fields[i + 1], NULL),
		                 P11S_OK);
	return m;
}

static void test_from_and_secured(void **state)
{
	static const char *const one[] = {"From", "Alice <Alice@Example.org>", "To", "b@x.org",
	                                  NULL};
	static const char *const two[] = {"From", "a@x.org", "from", "b@x.org", NULL};
	static const char *const many[] = {"From", "a@x.org, b@x.org", NULL};
	static const char *const none[] = {"To", "a@x.org", NULL};
	static const char *const sig[] = {
	    "From", "a@x.org", "Content-Type",
	    "Multipart/Signed; protocol=\"application/pkcs7-signature\"", NULL};
	static const char *const enc[] = {"From", "a@x.org", "Content-Type",
	                                  "application/x-pkcs7-mime; smime-type=enveloped-data",
	                                  NULL};
	p11s_error *err = p11s_error_new();
	p11s_milter_msg *m;
	char *from = NULL;

	(void)state;
	m = msg_with(one);
	assert_int_equal(p11s_milter_msg_end_headers(m, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_from(m, &from, err), P11S_OK);
	assert_string_equal(from, "Alice@Example.org");
	assert_null(p11s_milter_msg_secured(m));
	free(from);
	p11s_milter_msg_free(m);

	m = msg_with(two);
	assert_int_equal(p11s_milter_msg_end_headers(m, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_from(m, &from, err), P11S_E_INPUT);
	assert_string_equal(p11s_error_message(err), "more than one From field");
	p11s_milter_msg_free(m);

	m = msg_with(many);
	assert_int_equal(p11s_milter_msg_end_headers(m, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_from(m, &from, err), P11S_E_INPUT);
	assert_string_equal(p11s_error_message(err), "the From field has several addresses");
	p11s_milter_msg_free(m);

	m = msg_with(none);
	assert_int_equal(p11s_milter_msg_end_headers(m, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_from(m, &from, err), P11S_E_INPUT);
	assert_string_equal(p11s_error_message(err), "no From field");
	p11s_milter_msg_free(m);

	m = msg_with(sig);
	assert_int_equal(p11s_milter_msg_end_headers(m, err), P11S_OK);
	assert_string_equal(p11s_milter_msg_secured(m), "multipart/signed");
	p11s_milter_msg_free(m);
	m = msg_with(enc);
	assert_int_equal(p11s_milter_msg_end_headers(m, err), P11S_OK);
	assert_string_equal(p11s_milter_msg_secured(m), "application/x-pkcs7-mime");
	p11s_milter_msg_free(m);
	p11s_error_free(err);
}

static void test_header_hostile(void **state)
{
	/* A value's bare line break never starts a field of its own. */
	static const char *const inject[] = {"From", "a@x.org", "Subject", "hi\nFrom: evil@x.org",
	                                     NULL};
	p11s_error *err = p11s_error_new();
	p11s_milter_msg *m = msg_with(inject);
	char *big, *from = NULL;

	(void)state;
	assert_int_equal(p11s_milter_msg_end_headers(m, err), P11S_OK);
	assert_int_equal(p11i_headers_count(p11i_milter_msg_headers(m)), 2);
	assert_int_equal(p11s_milter_msg_from(m, &from, err), P11S_OK);
	assert_string_equal(from, "a@x.org");
	free(from);
	p11s_milter_msg_free(m);

	assert_int_equal(p11s_milter_msg_new(&m, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_header(m, "Bad Name", "v", err), P11S_E_INPUT);
	assert_int_equal(p11s_milter_msg_header(m, "Bad:Name", "v", err), P11S_E_INPUT);
	assert_int_equal(p11s_milter_msg_header(m, "", "v", err), P11S_E_INPUT);
	/* The block is bounded: 400 KiB of value fits twice, not three times. */
	big = malloc(400 * 1024 + 1);
	assert_non_null(big);
	memset(big, 'a', 400 * 1024);
	big[400 * 1024] = '\0';
	assert_int_equal(p11s_milter_msg_header(m, "X-A", "short", err), P11S_OK);
	assert_int_equal(p11s_milter_msg_header(m, "X-Big", big, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_header(m, "X-Big", big, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_header(m, "X-Big", big, err), P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "header block is larger"));
	free(big);
	p11s_milter_msg_free(m);
	p11s_error_free(err);
}

/* Verify @p r's new body under Content-Type @p ct against @p entity. */
static void verify_signed(p11s_milter_signed *r, const char *ct, X509 *ca, const char *entity)
{
	BIO *msg = BIO_new(BIO_s_mem()), *cont = NULL, *out = BIO_new(BIO_s_mem());
	X509_STORE *store = X509_STORE_new();
	CMS_ContentInfo *cms;
	char buf[4096], *got;
	size_t n;
	long len;

	BIO_printf(msg, "Content-Type: %s\r\n\r\n", ct);
	while (p11s_milter_signed_read(r, buf, sizeof(buf), &n, NULL) == P11S_OK && n > 0)
		BIO_write(msg, buf, (int)n);
	cms = SMIME_read_CMS(msg, &cont);
	assert_non_null(cms);
	assert_non_null(cont);
	X509_STORE_add_cert(store, ca);
	assert_int_equal(CMS_verify(cms, NULL, store, cont, out, CMS_BINARY), 1);
	len = BIO_get_mem_data(out, &got);
	assert_int_equal(len, strlen(entity));
	assert_memory_equal(got, entity, strlen(entity));
	CMS_ContentInfo_free(cms);
	X509_STORE_free(store);
	BIO_free(cont);
	BIO_free(out);
	BIO_free(msg);
}

static void test_sign_split(void **state)
{
	static const char *const fields[] = {"Received",
	                                     "from x\n\tby y",
	                                     "From",
	                                     "Alice <alice@example.org>",
	                                     "MIME-Version",
	                                     "1.0",
	                                     "Content-Type",
	                                     "text/plain;\n\tcharset=us-ascii",
	                                     "Subject",
	                                     "signed in a milter",
	                                     "Content-Transfer-Encoding",
	                                     "7bit",
	                                     NULL};
	static const char body1[] = "Hello,\r\n", body2[] = "this is the body.\r\n";
	EVP_PKEY *ca_key = tu_key("ec:P-256"), *key = tu_key("ec:P-256#2");
	X509 *ca = tu_cert(&(tu_cert_spec){
	    .key = ca_key, .cn = "Milter CA", .ca = 1, .ku = "critical,keyCertSign,cRLSign"});
	X509 *ee = tu_cert(&(tu_cert_spec){.key = key,
	                                   .cn = "Alice",
	                                   .san = "email:alice@example.org",
	                                   .ku = "critical,digitalSignature",
	                                   .eku = "emailProtection",
	                                   .ca = -1,
	                                   .issuer = ca,
	                                   .issuer_key = ca_key});
	p11s_error *err = p11s_error_new();
	p11s_milter_signed *r = NULL;
	p11s_signer *s = NULL;
	p11s_sign_opts so;
	p11s_milter_msg *m = msg_with(fields);
	const char *name, *value, *ct = NULL;
	int index;

	(void)state;
	p11s_sign_opts_init(&so);
	assert_int_equal(p11s_signer_new(ee, key, NULL, &so, &s, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_end_headers(m, err), P11S_OK);
	assert_int_equal(p11s_milter_msg_body(m, body1, strlen(body1), err), P11S_OK);
	assert_int_equal(p11s_milter_msg_body(m, body2, strlen(body2), err), P11S_OK);
	assert_int_equal(p11s_milter_msg_body_size(m), strlen(body1) + strlen(body2));
	assert_int_equal(p11s_milter_msg_sign(m, s, &r, err), P11S_OK);

	/* Deleted: the three MIME fields, later ones first; every outer field stays. */
	assert_int_equal(p11s_milter_signed_delete_count(r), 3);
	name = p11s_milter_signed_delete(r, 0, &index);
	assert_string_equal(name, "Content-Transfer-Encoding");
	assert_int_equal(index, 1);
	assert_string_equal(p11s_milter_signed_delete(r, 1, &index), "Content-Type");
	assert_string_equal(p11s_milter_signed_delete(r, 2, &index), "MIME-Version");
	/* Added: MIME-Version and the multipart/signed Content-Type, one line each. */
	assert_int_equal(p11s_milter_signed_add_count(r), 2);
	assert_string_equal(p11s_milter_signed_add(r, 0, &value), "MIME-Version");
	assert_string_equal(value, "1.0");
	assert_string_equal(p11s_milter_signed_add(r, 1, &ct), "Content-Type");
	assert_non_null(strstr(ct, "multipart/signed; protocol=\"application/pkcs7-signature\""));
	assert_null(strchr(ct, '\n'));
	verify_signed(r, ct, ca,
	              "Content-Type: text/plain;\r\n\tcharset=us-ascii\r\n"
	              "Content-Transfer-Encoding: 7bit\r\n\r\nHello,\r\nthis is the body.\r\n");

	p11s_milter_signed_free(r);
	p11s_milter_msg_free(m);
	p11s_signer_free(s);
	X509_free(ee);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	p11s_error_free(err);
}

static void map_refused(const char *text, const char *message)
{
	p11s_error *err = p11s_error_new();
	p11s_signer_map *map = NULL;

	assert_int_equal(p11s_signer_map_parse("map", text, strlen(text), &map, err), P11S_E_USAGE);
	assert_null(map);
	if (strstr(p11s_error_message(err), message) == NULL)
		fail_msg("'%s': got '%s', want '%s'", text, p11s_error_message(err), message);
	p11s_error_free(err);
}

static void test_signer_map(void **state)
{
	static const char good[] = "# comment\n"
	                           "\n"
	                           "  Alice@Example.org\tpkcs11:token=t;id=%01  \r\n"
	                           "@example.net pkcs11:token=t;object=p256;type=cert\n"
	                           "bob@example.net PKCS11:id=%02";
	p11s_signer_map *map = NULL;
	const char *uri;
	unsigned line;
	char *huge;

	(void)state;
	assert_int_equal(p11s_signer_map_parse("map", good, strlen(good), &map, NULL), P11S_OK);
	assert_int_equal(p11s_signer_map_count(map), 3);
	assert_string_equal(p11s_signer_map_entry(map, 0, &uri, &line), "Alice@Example.org");
	assert_string_equal(uri, "pkcs11:token=t;id=%01");
	assert_int_equal(line, 3);
	assert_int_equal(p11s_signer_map_find_address(map, "alice@example.org"), 0);
	assert_int_equal(p11s_signer_map_find_address(map, "carol@example.net"), -1);
	assert_int_equal(p11s_signer_map_find_domain(map, "carol@EXAMPLE.net"), 1);
	assert_int_equal(p11s_signer_map_find_address(map, "bob@example.net"), 2);
	assert_int_equal(p11s_signer_map_find_domain(map, "carol@example.org"), -1);
	p11s_signer_map_free(map);

	map_refused("a@x.org\n", "map:1: expected 'address-or-@domain URI'");
	map_refused("\n\na@x.org pkcs11:id=%01 extra\n", "map:3: more than two fields");
	map_refused("nobody pkcs11:id=%01\n",
	            "map:1: 'nobody' is not an e-mail address or @domain");
	map_refused("@ pkcs11:id=%01\n", "map:1: '@' is not @ and a domain");
	map_refused("a@x.org /path/to/key\n", "map:1: the signer must be a pkcs11: URI");
	map_refused("a@x.org pkcs11:id=%01\nA@X.ORG pkcs11:id=%02\n",
	            "map:2: 'a@x.org' is mapped a second time (first on line 1)");
	{
		static const char nul[] = "a@x.org pkcs11:id=%01\nb@x.org pkcs11:\0id\n";
		p11s_error *err = p11s_error_new();

		assert_int_equal(p11s_signer_map_parse("map", nul, sizeof(nul) - 1, &map, err),
		                 P11S_E_USAGE);
		assert_string_equal(p11s_error_message(err), "map:2: a NUL byte");
		p11s_error_free(err);
	}
	huge = malloc(P11S_SIGNER_MAP_LINE_MAX + 20);
	assert_non_null(huge);
	memcpy(huge, "a@x.org pkcs11:", 15);
	memset(huge + 15, 'x', P11S_SIGNER_MAP_LINE_MAX);
	huge[P11S_SIGNER_MAP_LINE_MAX + 15] = '\0';
	map_refused(huge, "map:1: line longer than 2048 bytes");
	free(huge);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_from_and_secured),
	    cmocka_unit_test(test_header_hostile),
	    cmocka_unit_test(test_sign_split),
	    cmocka_unit_test(test_signer_map),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
