/* The small parsers of keygen: key types and --id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/obj_mac.h>

#include "p11smime/lifecycle.h"
#include "write.h"

static void key_types(void **state)
{
	static const struct {
		const char *type;
		int is_ec, size;
	} good[] = {
	    {"rsa:2048", 0, 2048},          {"rsa:3072", 0, 3072},
	    {"RSA:4096", 0, 4096},          {"ec:P-256", 1, NID_X9_62_prime256v1},
	    {"ec:p-384", 1, NID_secp384r1}, {"EC:P-521", 1, NID_secp521r1},
	};
	static const char *bad[] = {"",          "rsa",       "rsa:1024",     "rsa:2047",
	                            "rsa:8192",  "ec:P-192",  "ec:secp256k1", "ed25519",
	                            "rsa:2048 ", "ec:P-256:x"};
	int is_ec, size;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(p11s_keygen_type_parse(good[i].type, &is_ec, &size, NULL),
		                 P11S_OK);
		assert_int_equal(is_ec, good[i].is_ec);
		assert_int_equal(size, good[i].size);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p11s_error *err = p11s_error_new();

		assert_int_equal(p11s_keygen_type_parse(bad[i], &is_ec, &size, err), P11S_E_USAGE);
		assert_non_null(strstr(p11s_error_message(err), "rsa:2048, rsa:3072, rsa:4096"));
		p11s_error_free(err);
	}
	assert_int_equal(p11s_keygen_type_parse(NULL, NULL, NULL, NULL), P11S_E_USAGE);
}

static void ids(void **state)
{
	unsigned char id[4];
	size_t len = 0;

	(void)state;
	assert_int_equal(p11i_hex_parse("05", id, sizeof(id), &len, NULL), P11S_OK);
	assert_int_equal(len, 1);
	assert_int_equal(id[0], 0x05);
	assert_int_equal(p11i_hex_parse("0a:1B:ff", id, sizeof(id), &len, NULL), P11S_OK);
	assert_int_equal(len, 3);
	assert_memory_equal(id, "\x0a\x1b\xff", 3);
	assert_int_equal(p11i_hex_parse("deadBEEF", id, sizeof(id), &len, NULL), P11S_OK);
	assert_int_equal(len, 4);
	/* Odd digits, not hex, a leading colon, too long, empty. */
	assert_int_equal(p11i_hex_parse("5", id, sizeof(id), &len, NULL), P11S_E_USAGE);
	assert_int_equal(p11i_hex_parse("0g", id, sizeof(id), &len, NULL), P11S_E_USAGE);
	assert_int_equal(p11i_hex_parse(":05", id, sizeof(id), &len, NULL), P11S_E_USAGE);
	assert_int_equal(p11i_hex_parse("0102030405", id, sizeof(id), &len, NULL), P11S_E_USAGE);
	assert_int_equal(p11i_hex_parse("", id, sizeof(id), &len, NULL), P11S_E_USAGE);
	assert_int_equal(p11i_hex_parse("01 02", id, sizeof(id), &len, NULL), P11S_E_USAGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(key_types),
	    cmocka_unit_test(ids),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
