/* The pairing decision (pkcs11/pairing.c), without a token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pairing.h"
#include "testutil.h"

static void test_none_and_hidden(void **state)
{
	EVP_PKEY *k = tu_key("rsa:2048");
	size_t chosen = 99;
	p11s_pair_evidence how = P11S_EVIDENCE_PUBLIC_KEY_INFO;

	(void)state;
	assert_int_equal(p11i_pair_decide(k, NULL, 0, 0, &chosen, &how), P11S_PAIR_NONE);
	assert_int_equal(chosen, 0);
	assert_int_equal(how, P11S_EVIDENCE_NONE);
	/* No key seen because the token hides private objects until login. */
	assert_int_equal(p11i_pair_decide(k, NULL, 0, 1, &chosen, &how), P11S_PAIR_NOT_LOGGED_IN);
	EVP_PKEY_free(k);
}

static void test_confirmed(void **state)
{
	EVP_PKEY *rsa = tu_key("rsa:2048"), *ec = tu_key("ec:P-256");
	struct p11i_pair_candidate c[1] = {{rsa, P11S_EVIDENCE_KEY_ATTRIBUTES}};
	struct p11i_pair_candidate e[1] = {{ec, P11S_EVIDENCE_PUBLIC_KEY_OBJECT}};
	size_t chosen;
	p11s_pair_evidence how;

	(void)state;
	assert_int_equal(p11i_pair_decide(rsa, c, 1, 0, &chosen, &how), P11S_PAIR_CONFIRMED);
	assert_int_equal(chosen, 0);
	assert_int_equal(how, P11S_EVIDENCE_KEY_ATTRIBUTES);
	assert_int_equal(p11i_pair_decide(ec, e, 1, 0, &chosen, &how), P11S_PAIR_CONFIRMED);
	assert_int_equal(how, P11S_EVIDENCE_PUBLIC_KEY_OBJECT);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
}

static void test_mismatch(void **state)
{
	EVP_PKEY *a = tu_key("rsa:2048"), *b = tu_key("rsa:2048#2"), *ec = tu_key("ec:P-256");
	struct p11i_pair_candidate other[1] = {{b, P11S_EVIDENCE_KEY_ATTRIBUTES}};
	struct p11i_pair_candidate type[1] = {{ec, P11S_EVIDENCE_PUBLIC_KEY_INFO}};
	size_t chosen;
	p11s_pair_evidence how;

	(void)state;
	/* Negative control: the two RSA keys really differ. */
	assert_int_not_equal(EVP_PKEY_eq(a, b), 1);
	assert_int_equal(p11i_pair_decide(a, other, 1, 0, &chosen, &how), P11S_PAIR_MISMATCH);
	assert_int_equal(chosen, 0);
	assert_int_equal(how, P11S_EVIDENCE_KEY_ATTRIBUTES);
	/* A key of another type is a mismatch, not "not comparable". */
	assert_int_equal(p11i_pair_decide(a, type, 1, 0, &chosen, &how), P11S_PAIR_MISMATCH);
	assert_int_equal(how, P11S_EVIDENCE_PUBLIC_KEY_INFO);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	EVP_PKEY_free(ec);
}

static void test_unconfirmed(void **state)
{
	EVP_PKEY *a = tu_key("rsa:2048"), *b = tu_key("rsa:2048#2");
	struct p11i_pair_candidate unknown[1] = {{NULL, P11S_EVIDENCE_NONE}};
	struct p11i_pair_candidate mixed[2] = {{b, P11S_EVIDENCE_KEY_ATTRIBUTES},
	                                       {NULL, P11S_EVIDENCE_NONE}};
	size_t chosen;
	p11s_pair_evidence how;

	(void)state;
	assert_int_equal(p11i_pair_decide(a, unknown, 1, 0, &chosen, &how), P11S_PAIR_UNCONFIRMED);
	assert_int_equal(chosen, 0);
	assert_int_equal(how, P11S_EVIDENCE_NONE);
	/* A different key and one we cannot check: the uncheckable one may be it. */
	assert_int_equal(p11i_pair_decide(a, mixed, 2, 0, &chosen, &how), P11S_PAIR_UNCONFIRMED);
	assert_int_equal(chosen, 1);
	/* A certificate that did not parse confirms nothing. */
	assert_int_equal(p11i_pair_decide(NULL, mixed, 2, 0, &chosen, &how), P11S_PAIR_UNCONFIRMED);
	assert_int_equal(chosen, 0);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
}

static void test_picks_the_matching_one(void **state)
{
	EVP_PKEY *a = tu_key("rsa:2048"), *b = tu_key("rsa:2048#2");
	struct p11i_pair_candidate c[3] = {{b, P11S_EVIDENCE_KEY_ATTRIBUTES},
	                                   {NULL, P11S_EVIDENCE_NONE},
	                                   {a, P11S_EVIDENCE_PUBLIC_KEY_INFO}};
	size_t chosen;
	p11s_pair_evidence how;

	(void)state;
	assert_int_equal(p11i_pair_decide(a, c, 3, 0, &chosen, &how), P11S_PAIR_CONFIRMED);
	assert_int_equal(chosen, 2);
	assert_int_equal(how, P11S_EVIDENCE_PUBLIC_KEY_INFO);
	assert_int_equal(p11i_pair_decide(b, c, 3, 0, &chosen, &how), P11S_PAIR_CONFIRMED);
	assert_int_equal(chosen, 0);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(p11s_pairing_name(P11S_PAIR_CONFIRMED), "confirmed");
	assert_string_equal(p11s_pairing_name(P11S_PAIR_MISMATCH), "mismatch");
	assert_string_equal(p11s_pairing_name(P11S_PAIR_UNCONFIRMED), "unconfirmed");
	assert_string_equal(p11s_pairing_name(P11S_PAIR_NOT_LOGGED_IN), "not-logged-in");
	assert_string_equal(p11s_pairing_name(P11S_PAIR_NONE), "none");
	assert_string_equal(p11s_pair_evidence_name(P11S_EVIDENCE_KEY_ATTRIBUTES),
	                    "key-attributes");
	assert_string_equal(p11s_pair_evidence_name(P11S_EVIDENCE_PUBLIC_KEY_OBJECT),
	                    "public-key-object");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_none_and_hidden),
	    cmocka_unit_test(test_confirmed),
	    cmocka_unit_test(test_mismatch),
	    cmocka_unit_test(test_unconfirmed),
	    cmocka_unit_test(test_picks_the_matching_one),
	    cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
