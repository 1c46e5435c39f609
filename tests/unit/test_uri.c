/*
 * URI selection without a token: the URIs we print for tokens and objects
 * parse back with p11-kit and select exactly the object they came from,
 * even with awkward labels and binary ids (pkcs11/tokens.c, objects.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "p11.h"

static void fill(unsigned char *field, size_t len, const char *s)
{
	memset(field, ' ', len);
	memcpy(field, s, strlen(s));
}

static p11s_token *token(const char *label, const char *serial)
{
	p11s_token *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	fill(t->info.label, sizeof(t->info.label), label);
	fill(t->info.manufacturerID, sizeof(t->info.manufacturerID), "Test Maker");
	fill(t->info.model, sizeof(t->info.model), "Model/1");
	fill(t->info.serialNumber, sizeof(t->info.serialNumber), serial);
	fill(t->slot_info.slotDescription, sizeof(t->slot_info.slotDescription), "slot");
	t->info.flags = CKF_TOKEN_INITIALIZED;
	return t;
}

static p11s_object obj(const p11s_token *t, p11s_object_class cls, const char *label,
                       const void *id, size_t id_len)
{
	p11s_object o;

	memset(&o, 0, sizeof(o));
	o.cls = cls;
	o.token = t;
	o.label = label ? strdup(label) : NULL;
	o.id = id_len ? malloc(id_len) : NULL;
	if (id_len)
		memcpy(o.id, id, id_len);
	o.id_len = id_len;
	return o;
}

static size_t count_matches(const char *uri, p11s_object *objs, size_t n, size_t *which)
{
	P11KitUri *u;
	p11s_ctx ctx;
	size_t hits = 0;

	memset(&ctx, 0, sizeof(ctx));
	assert_int_equal(p11i_uri_parse(uri, &u, NULL), P11S_OK);
	for (size_t i = 0; i < n; i++) {
		if (p11i_uri_match_token(&ctx, u, objs[i].token) &&
		    p11i_uri_match_object(u, &objs[i])) {
			hits++;
			*which = i;
		}
	}
	p11_kit_uri_free(u);
	return hits;
}

static void test_object_round_trip(void **state)
{
	p11s_token *t1 = token("alice's token", "0001"), *t2 = token("alice's token", "0002");
	static const unsigned char id1[] = {0x01}, id2[] = {0x00, 0xff, 0x25, 0x3b};
	p11s_object objs[] = {
	    obj(t1, P11S_OBJ_CERTIFICATE, "Alice", id1, 1),
	    obj(t1, P11S_OBJ_PRIVATE_KEY, "Alice", id1, 1),
	    obj(t1, P11S_OBJ_PUBLIC_KEY, "Alice", id1, 1),
	    obj(t1, P11S_OBJ_CERTIFICATE, "Alice; old/2024 %20 \xc3\xa9", id1, 1),
	    obj(t1, P11S_OBJ_CERTIFICATE, "binary id", id2, sizeof(id2)),
	    obj(t1, P11S_OBJ_CERTIFICATE, "no id", NULL, 0),
	    /* The same object on another token with the same label: the serial tells. */
	    obj(t2, P11S_OBJ_CERTIFICATE, "Alice", id1, 1),
	};
	size_t n = sizeof(objs) / sizeof(objs[0]);

	(void)state;
	for (size_t i = 0; i < n; i++) {
		size_t which = n;
		char *uri = p11i_object_uri_build(&objs[i]);

		assert_non_null(uri);
		assert_int_equal(strncmp(uri, "pkcs11:", 7), 0);
		/* Exactly itself. */
		assert_int_equal(count_matches(uri, objs, n, &which), 1);
		assert_int_equal(which, i);
		free(uri);
	}
	for (size_t i = 0; i < n; i++) {
		free(objs[i].label);
		free(objs[i].id);
	}
	p11i_token_free(t1);
	p11i_token_free(t2);
}

static void test_selection_breadth(void **state)
{
	p11s_token *t = token("tok", "42");
	static const unsigned char id1[] = {0x01}, id2[] = {0x02};
	p11s_object objs[] = {
	    obj(t, P11S_OBJ_CERTIFICATE, "a", id1, 1),
	    obj(t, P11S_OBJ_PRIVATE_KEY, "a", id1, 1),
	    obj(t, P11S_OBJ_CERTIFICATE, "b", id2, 1),
	};
	size_t which;

	(void)state;
	/* Everything; a token; an id across classes; a type; nothing. */
	assert_int_equal(count_matches("pkcs11:", objs, 3, &which), 3);
	assert_int_equal(count_matches("pkcs11:token=tok", objs, 3, &which), 3);
	assert_int_equal(count_matches("pkcs11:id=%01", objs, 3, &which), 2);
	assert_int_equal(count_matches("pkcs11:type=cert", objs, 3, &which), 2);
	assert_int_equal(count_matches("pkcs11:id=%01;type=private", objs, 3, &which), 1);
	assert_int_equal(which, 1);
	assert_int_equal(count_matches("pkcs11:object=b", objs, 3, &which), 1);
	assert_int_equal(which, 2);
	assert_int_equal(count_matches("pkcs11:token=other", objs, 3, &which), 0);
	assert_int_equal(count_matches("pkcs11:serial=43", objs, 3, &which), 0);
	assert_int_equal(count_matches("pkcs11:object=c", objs, 3, &which), 0);
	/* An empty label in a URI is a constraint, not a wildcard. */
	assert_int_equal(count_matches("pkcs11:object=", objs, 3, &which), 0);
	for (size_t i = 0; i < 3; i++) {
		free(objs[i].label);
		free(objs[i].id);
	}
	p11i_token_free(t);
}

static void test_token_uri(void **state)
{
	CK_SLOT_INFO si;
	p11s_token *t = token("tok;1", "99");
	p11s_ctx ctx;
	P11KitUri *u;
	char *uri = NULL;

	(void)state;
	memset(&ctx, 0, sizeof(ctx));
	memset(&si, 0, sizeof(si));
	u = p11_kit_uri_new();
	memcpy(p11_kit_uri_get_token_info(u), &t->info, sizeof(t->info));
	assert_int_equal(p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN, &uri), P11_KIT_URI_OK);
	p11_kit_uri_free(u);
	assert_non_null(strstr(uri, "token=tok%3B1"));
	assert_int_equal(p11i_uri_parse(uri, &u, NULL), P11S_OK);
	assert_true(p11i_uri_match_token(&ctx, u, t));
	p11_kit_uri_free(u);
	/* slot-id is honoured. */
	t->slot_id = 5;
	assert_int_equal(p11i_uri_parse("pkcs11:slot-id=5", &u, NULL), P11S_OK);
	assert_true(p11i_uri_match_token(&ctx, u, t));
	p11_kit_uri_free(u);
	assert_int_equal(p11i_uri_parse("pkcs11:slot-id=6", &u, NULL), P11S_OK);
	assert_false(p11i_uri_match_token(&ctx, u, t));
	p11_kit_uri_free(u);
	free(uri);
	p11i_token_free(t);
}

static void test_bad_uris(void **state)
{
	static const char *bad[] = {"notauri", "pkcs11:id=%zz", "pkcs11:type=nonsense",
	                            "http://example.org/"};
	p11s_error *err = p11s_error_new();
	P11KitUri *u;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p11s_error_clear(err);
		assert_int_equal(p11i_uri_parse(bad[i], &u, err), P11S_E_BAD_URI);
		assert_null(u);
		assert_non_null(strstr(p11s_error_message(err), bad[i]));
	}
	/* NULL matches everything. */
	assert_int_equal(p11i_uri_parse(NULL, &u, err), P11S_OK);
	p11_kit_uri_free(u);
	/* pin-value and pin-source reach the login code. */
	assert_int_equal(p11i_uri_parse("pkcs11:token=t?pin-value=1234", &u, err), P11S_OK);
	assert_string_equal(p11_kit_uri_get_pin_value(u), "1234");
	p11_kit_uri_free(u);
	assert_int_equal(p11i_uri_parse("pkcs11:token=t?pin-source=file:/x", &u, err), P11S_OK);
	assert_string_equal(p11_kit_uri_get_pin_source(u), "file:/x");
	p11_kit_uri_free(u);
	p11s_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_object_round_trip),
	    cmocka_unit_test(test_selection_breadth),
	    cmocka_unit_test(test_token_uri),
	    cmocka_unit_test(test_bad_uris),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
