/*
 * The JSON documents of `tokens` and `list` (src/listing.c) and the
 * certificate description, built from objects made in memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/err.h>

#include "p11.h"
#include "p11smime/certs.h"
#include "report.h"
#include "testutil.h"

static void fill(unsigned char *field, size_t len, const char *s)
{
	memset(field, ' ', len);
	memcpy(field, s, strlen(s));
}

static p11s_token *make_token(void)
{
	p11s_token *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	fill(t->info.label, sizeof(t->info.label), "tok \"quoted\"");
	t->label = strdup("tok \"quoted\"");
	t->manufacturer = strdup("Maker");
	t->model = strdup("M1");
	t->serial = strdup("0042");
	t->slot_description = strdup("slot \\ backslash");
	t->uri = strdup("pkcs11:token=tok%20%22quoted%22");
	t->slot_id = 7;
	t->flags =
	    P11S_TOKEN_LOGIN_REQUIRED | P11S_TOKEN_INITIALIZED | P11S_TOKEN_USER_PIN_FINAL_TRY;
	return t;
}

static p11s_object *make_obj(const p11s_token *t, p11s_object_class cls, const char *label,
                             unsigned char id)
{
	p11s_object *o = calloc(1, sizeof(*o));

	assert_non_null(o);
	o->cls = cls;
	o->token = t;
	o->label = strdup(label);
	o->id = malloc(1);
	o->id[0] = id;
	o->id_len = 1;
	o->uri = p11i_object_uri_build(o);
	assert_non_null(o->uri);
	return o;
}

/* A certificate object as enumeration makes it: CKA_VALUE kept, parsed on first use. */
static void set_value(p11s_object *o, X509 *cert)
{
	size_t len;
	unsigned char *der = tu_der(cert, &len);

	o->der = malloc(len);
	assert_non_null(o->der);
	memcpy(o->der, der, len);
	o->der_len = len;
	OPENSSL_free(der);
}

static p11s_object_list *make_list(X509 *cert)
{
	p11s_object_list *l = calloc(1, sizeof(*l));
	p11s_object *c, *k, *p, *orphan;

	assert_non_null(l);
	l->tokens = calloc(1, sizeof(*l->tokens));
	l->tokens->tokens = calloc(1, sizeof(p11s_token *));
	l->tokens->tokens[0] = make_token();
	l->tokens->count = 1;
	c = make_obj(l->tokens->tokens[0], P11S_OBJ_CERTIFICATE, "alice", 0xa1);
	k = make_obj(l->tokens->tokens[0], P11S_OBJ_PRIVATE_KEY, "alice", 0xa1);
	p = make_obj(l->tokens->tokens[0], P11S_OBJ_PUBLIC_KEY, "alice", 0xa1);
	orphan = make_obj(l->tokens->tokens[0], P11S_OBJ_CERTIFICATE, "bob", 0xb0);
	set_value(c, cert);
	c->pairing = P11S_PAIR_CONFIRMED;
	c->evidence = P11S_EVIDENCE_KEY_ATTRIBUTES;
	c->paired = c->candidate = k;
	k->paired = c;
	k->key_type = P11S_KEY_EC;
	k->key_bits = 256;
	k->curve = strdup("P-256");
	k->key_flags = P11S_KF_SIGN | P11S_KF_DERIVE | P11S_KF_SENSITIVE | P11S_KF_PRIVATE;
	p->key_type = P11S_KEY_EC;
	p->key_flags = P11S_KF_VERIFY;
	set_value(orphan, cert);
	X509_free(cert);
	orphan->pairing = P11S_PAIR_MISMATCH;
	orphan->candidate = k;
	l->all = calloc(4, sizeof(*l->all));
	l->all[0] = c;
	l->all[1] = k;
	l->all[2] = p;
	l->all[3] = orphan;
	l->all_count = 4;
	assert_int_equal(p11i_object_list_filter(l, NULL, NULL, NULL), P11S_OK);
	return l;
}

static X509 *alice_cert(EVP_PKEY **key_out)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *x =
	    tu_cert(&(tu_cert_spec){.key = key,
	                            .cn = "Alice \xc3\x89",
	                            .san = "email:alice@example.org,DNS:host,email:a2@example.org",
	                            .ku = "critical,digitalSignature",
	                            .not_before = 1767225600, /* 2026-01-01 */
	                            .not_after = 1798761600,  /* 2027-01-01 */
	                            .serial = 0x1234abcd});

	*key_out = key;
	return x;
}

static void test_cert_describe(void **state)
{
	EVP_PKEY *key;
	X509 *x = alice_cert(&key);
	p11s_cert_info *ci;

	(void)state;
	assert_int_equal(p11s_cert_describe(x, &ci, NULL), P11S_OK);
	assert_string_equal(ci->subject, "CN=Alice \xc3\x89");
	assert_string_equal(ci->serial, "1234abcd");
	assert_int_equal(ci->not_before, 1767225600);
	assert_int_equal(ci->not_after, 1798761600);
	assert_int_equal(ci->nemails, 2);
	assert_string_equal(ci->emails[0], "alice@example.org");
	assert_string_equal(ci->emails[1], "a2@example.org");
	assert_string_equal(ci->key_algorithm, "EC");
	assert_int_equal(ci->key_bits, 256);
	assert_string_equal(ci->curve, "P-256");
	p11s_cert_info_free(ci);
	assert_int_equal(p11s_cert_describe(NULL, &ci, NULL), P11S_E_INPUT);
	X509_free(x);
	EVP_PKEY_free(key);
}

/*
 * The description from DER (the certificate parsed without decoding its
 * public key) says exactly what the one from a full X509 says, for every
 * kind of key: RSA and EC are read from the SubjectPublicKeyInfo, the
 * others through an EVP_PKEY.
 */
static void test_describe_der_same(void **state)
{
	static const struct {
		const char *spec, *alg, *curve;
		int bits;
	} keys[] = {
	    {"rsa:2048", "RSA", NULL, 2048},
	    {"rsa:3072", "RSA", NULL, 3072},
	    {"ec:P-256", "EC", "P-256", 256},
	    {"ec:P-384", "EC", "P-384", 384},
	    {"ec:P-521", "EC", "P-521", 521},
	    {"ec:brainpoolP256r1", "EC", "brainpoolP256r1", 256},
	    {"ed25519", "EC_EDWARDS", NULL, 256},
	    {"x25519", "EC_MONTGOMERY", NULL, 253},
	    {"dsa:1024", "DSA", NULL, 1024},
	};
	EVP_PKEY *ca_key = tu_key("ec:P-256");
	X509 *ca = tu_cert(&(tu_cert_spec){.key = ca_key, .cn = "Test CA", .ca = 1});

	(void)state;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		EVP_PKEY *k = tu_key(keys[i].spec);
		X509 *x = tu_cert(&(tu_cert_spec){.key = k,
		                                  .cn = keys[i].spec,
		                                  .san = "email:k@example.org",
		                                  .issuer = ca,
		                                  .issuer_key = ca_key,
		                                  .serial = 0xbeef});
		size_t len;
		unsigned char *der = tu_der(x, &len);
		p11s_cert_info *full, *light;

		assert_int_equal(p11s_cert_describe(x, &full, NULL), P11S_OK);
		assert_int_equal(p11s_cert_describe_der(der, len, &light, NULL), P11S_OK);
		print_message("%s: %s %d %s\n", keys[i].spec, light->key_algorithm, light->key_bits,
		              light->curve ? light->curve : "-");
		assert_string_equal(light->key_algorithm, keys[i].alg);
		assert_int_equal(light->key_bits, keys[i].bits);
		if (keys[i].curve)
			assert_string_equal(light->curve, keys[i].curve);
		else
			assert_null(light->curve);
		assert_string_equal(full->key_algorithm, light->key_algorithm);
		assert_int_equal(full->key_bits, light->key_bits);
		assert_true((full->curve == NULL) == (light->curve == NULL));
		assert_string_equal(full->subject, light->subject);
		assert_string_equal(full->issuer, light->issuer);
		assert_string_equal(full->serial, "beef");
		assert_string_equal(full->serial, light->serial);
		assert_int_equal(full->not_before, light->not_before);
		assert_int_equal(full->not_after, light->not_after);
		assert_int_equal(light->nemails, 1);
		assert_string_equal(light->emails[0], "k@example.org");
		/* Truncated DER is not a certificate. */
		p11s_cert_info_free(full);
		full = NULL;
		assert_int_equal(p11s_cert_describe_der(der, len - 1, &full, NULL), P11S_E_INPUT);
		assert_null(full);
		p11s_cert_info_free(light);
		OPENSSL_free(der);
		X509_free(x);
		EVP_PKEY_free(k);
	}
	/* The fast path is taken: the light parse leaves the key undecoded. */
	{
		size_t len;
		unsigned char *der = tu_der(ca, &len);
		X509 *light = p11i_x509_parse_light(der, len);

		assert_non_null(light);
		assert_null(X509_get0_pubkey(light));
		assert_non_null(X509_get_X509_PUBKEY(light));
		assert_int_equal(
		    X509_NAME_cmp(X509_get_subject_name(light), X509_get_subject_name(ca)), 0);
		ERR_clear_error();
		X509_free(light);
		OPENSSL_free(der);
	}
	X509_free(ca);
	EVP_PKEY_free(ca_key);
}

static json_t *find(json_t *arr, const char *cls, const char *label)
{
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v)
	{
		if (strcmp(json_string_value(json_object_get(v, "class")), cls) == 0 &&
		    strcmp(json_string_value(json_object_get(v, "label")), label) == 0)
			return v;
	}
	fail_msg("no %s '%s' in the JSON", cls, label);
	return NULL;
}

static void test_objects_json(void **state)
{
	EVP_PKEY *key;
	X509 *x = alice_cert(&key);
	p11s_object_list *l = make_list(x);
	char *doc = report_objects_json(l);
	json_error_t jerr;
	json_t *root, *arr, *c, *k, *p, *o;

	(void)state;
	assert_non_null(doc);
	root = json_loads(doc, 0, &jerr);
	assert_non_null(root);
	arr = json_object_get(root, "objects");
	assert_true(json_is_array(arr));
	assert_int_equal(json_array_size(arr), 4);
	c = find(arr, "certificate", "alice");
	k = find(arr, "private-key", "alice");
	p = find(arr, "public-key", "alice");
	o = find(arr, "certificate", "bob");
	/* Common members. */
	assert_string_equal(json_string_value(json_object_get(c, "id")), "a1");
	assert_string_equal(json_string_value(json_object_get(c, "uri")), l->all[0]->uri);
	assert_string_equal(json_string_value(json_object_get(c, "token")),
	                    "pkcs11:token=tok%20%22quoted%22");
	/* Certificate members. */
	assert_int_equal(json_array_size(json_object_get(c, "emails")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "emails"), 1)),
	                    "a2@example.org");
	assert_string_equal(json_string_value(json_object_get(c, "private_key")), l->all[1]->uri);
	assert_string_equal(json_string_value(json_object_get(c, "pairing")), "confirmed");
	assert_string_equal(json_string_value(json_object_get(c, "pairing_evidence")),
	                    "key-attributes");
	assert_string_equal(json_string_value(json_object_get(c, "subject")), "CN=Alice \xc3\x89");
	assert_string_equal(json_string_value(json_object_get(c, "serial")), "1234abcd");
	assert_string_equal(json_string_value(json_object_get(c, "not_before")),
	                    "2026-01-01T00:00:00Z");
	assert_string_equal(json_string_value(json_object_get(c, "not_after")),
	                    "2027-01-01T00:00:00Z");
	assert_string_equal(json_string_value(json_object_get(c, "key_algorithm")), "EC");
	assert_int_equal(json_integer_value(json_object_get(c, "key_bits")), 256);
	assert_string_equal(json_string_value(json_object_get(c, "curve")), "P-256");
	/* A mismatch offers no key for use, but names the one with the same id. */
	assert_true(json_is_null(json_object_get(o, "private_key")));
	assert_string_equal(json_string_value(json_object_get(o, "pairing")), "mismatch");
	assert_string_equal(json_string_value(json_object_get(o, "same_id_key")), l->all[1]->uri);
	/* Private key members. */
	assert_string_equal(json_string_value(json_object_get(k, "key_type")), "EC");
	assert_true(json_is_true(json_object_get(k, "sensitive")));
	assert_true(json_is_false(json_object_get(k, "extractable")));
	assert_true(json_is_true(json_object_get(k, "sign")));
	assert_true(json_is_false(json_object_get(k, "decrypt")));
	assert_true(json_is_true(json_object_get(k, "derive")));
	assert_true(json_is_false(json_object_get(k, "unwrap")));
	assert_true(json_is_false(json_object_get(k, "always_authenticate")));
	assert_string_equal(json_string_value(json_object_get(k, "certificate")), l->all[0]->uri);
	/* Public key members. */
	assert_true(json_is_true(json_object_get(p, "verify")));
	assert_null(json_object_get(p, "sensitive"));
	json_decref(root);
	free(doc);
	p11s_object_list_free(l);
	EVP_PKEY_free(key);
}

/* A certificate object parses its CKA_VALUE on first use, once; garbage gives NULL. */
static void test_object_x509_lazy(void **state)
{
	EVP_PKEY *key;
	X509 *x = alice_cert(&key);
	p11s_object_list *l = make_list(x);
	const p11s_object *c = l->all[0];
	size_t len;
	X509 *parsed;

	(void)state;
	assert_null(c->x509);
	assert_non_null(p11s_object_value(c, &len));
	assert_int_equal(len, c->der_len);
	parsed = p11s_object_x509(c);
	assert_non_null(parsed);
	assert_non_null(X509_get0_pubkey(parsed));
	assert_ptr_equal(p11s_object_x509(c), parsed);
	/* Not a certificate: NULL, and the listing marks it instead of failing. */
	l->all[3]->der[0] ^= 0xff;
	assert_null(p11s_object_x509(l->all[3]));
	{
		char *doc = report_objects_json(l);
		json_t *root = json_loads(doc, 0, NULL);

		assert_non_null(root);
		assert_true(json_is_true(json_object_get(
		    find(json_object_get(root, "objects"), "certificate", "bob"), "parse_error")));
		json_decref(root);
		free(doc);
	}
	/* Keys have no value. */
	assert_null(p11s_object_value(l->all[1], &len));
	assert_int_equal(len, 0);
	assert_null(p11s_object_x509(l->all[1]));
	p11s_object_list_free(l);
	EVP_PKEY_free(key);
}

static void test_tokens_json(void **state)
{
	p11s_token_list l;
	p11s_token *t = make_token();
	char *doc;
	json_t *root, *tok, *flags;

	(void)state;
	l.tokens = &t;
	l.count = 1;
	doc = report_tokens_json(&l);
	assert_non_null(doc);
	root = json_loads(doc, 0, NULL);
	assert_non_null(root);
	assert_int_equal(json_array_size(json_object_get(root, "tokens")), 1);
	tok = json_array_get(json_object_get(root, "tokens"), 0);
	/* Quotes and backslashes survive: jansson escapes them. */
	assert_string_equal(json_string_value(json_object_get(tok, "label")), "tok \"quoted\"");
	assert_string_equal(json_string_value(json_object_get(tok, "slot_description")),
	                    "slot \\ backslash");
	assert_string_equal(json_string_value(json_object_get(tok, "serial")), "0042");
	assert_int_equal(json_integer_value(json_object_get(tok, "slot_id")), 7);
	flags = json_object_get(tok, "flags");
	assert_true(json_is_true(json_object_get(flags, "login_required")));
	assert_true(json_is_true(json_object_get(flags, "user_pin_final_try")));
	assert_true(json_is_false(json_object_get(flags, "user_pin_locked")));
	assert_true(json_is_false(json_object_get(flags, "protected_auth_path")));
	json_decref(root);
	free(doc);
	/* An empty list is still a document. */
	l.count = 0;
	doc = report_tokens_json(&l);
	assert_string_equal(doc, "{\n  \"tokens\": []\n}");
	free(doc);
	p11i_token_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cert_describe), cmocka_unit_test(test_describe_der_same),
	    cmocka_unit_test(test_objects_json),  cmocka_unit_test(test_object_x509_lazy),
	    cmocka_unit_test(test_tokens_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
