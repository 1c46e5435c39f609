#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common.h"
#include "p11smime/io.h"

static void time_rfc3339(void **state)
{
	time_t t;

	(void)state;
	assert_int_equal(p11s_time_parse("2026-11-28T00:00:00Z", &t, NULL), P11S_OK);
	assert_int_equal(t, 1795824000);
	assert_int_equal(p11s_time_parse("2026-11-28", &t, NULL), P11S_OK);
	assert_int_equal(t, 1795824000);
	assert_int_equal(p11s_time_parse("2026-11-28T01:30:00+01:30", &t, NULL), P11S_OK);
	assert_int_equal(t, 1795824000);
	assert_int_equal(p11s_time_parse("2026-11-27T23:00:00.125-01:00", &t, NULL), P11S_OK);
	assert_int_equal(t, 1795824000);
}

static void time_rejects(void **state)
{
	static const char *bad[] = {"",
	                            "2026-11-28T00:00:00",
	                            "2026-02-30",
	                            "2026-11-28T24:00:00Z",
	                            "26-11-28",
	                            "2026-11-28Z",
	                            "2026-11-28T00:00:00Zjunk",
	                            "now"};
	p11s_error *err = p11s_error_new();
	time_t t;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(p11s_time_parse(bad[i], &t, err), P11S_E_BAD_TIME);
		assert_non_null(strstr(p11s_error_message(err), "RFC 3339"));
	}
	assert_int_equal(p11s_rc_exit_code(P11S_E_BAD_TIME), 2);
	p11s_error_free(err);
}

static void time_format(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(p11s_time_format(1795824000, buf, sizeof(buf)), "2026-11-28T00:00:00Z");
}

static void exit_codes(void **state)
{
	(void)state;
	assert_int_equal(p11s_rc_exit_code(P11S_OK), 0);
	assert_int_equal(p11s_rc_exit_code(P11S_E_REJECTED), 1);
	assert_int_equal(p11s_rc_exit_code(P11S_E_USAGE), 2);
	assert_int_equal(p11s_rc_exit_code(P11S_E_PIN_LOCKED), 3);
	assert_int_equal(p11s_rc_exit_code(P11S_E_AMBIGUOUS), 3);
	assert_int_equal(p11s_rc_exit_code(P11S_E_MODULE), 3);
	assert_int_equal(p11s_rc_exit_code(P11S_E_INPUT), 4);
	assert_int_equal(p11s_rc_exit_code(P11S_E_DECRYPT), 4);
	assert_string_equal(p11s_rc_name(P11S_E_PIN_FINAL_TRY), "pin-final-try");
}

static void error_candidates(void **state)
{
	p11s_error *err = p11s_error_new();

	(void)state;
	assert_int_equal(p11i_err(err, P11S_E_AMBIGUOUS, "%d objects match", 2), P11S_E_AMBIGUOUS);
	p11i_err_add_candidate(err, "pkcs11:object=a");
	p11i_err_add_candidate(err, "pkcs11:object=b");
	assert_string_equal(p11s_error_message(err), "2 objects match");
	assert_int_equal(p11s_error_candidate_count(err), 2);
	assert_string_equal(p11s_error_candidate(err, 1), "pkcs11:object=b");
	assert_null(p11s_error_candidate(err, 2));
	p11s_error_clear(err);
	assert_int_equal(p11s_error_rc(err), P11S_OK);
	assert_string_equal(p11s_error_message(err), "");
	p11s_error_free(err);
	p11s_error_free(NULL);
}

/* The one growable array: order kept, linear growth, a size that cannot be held refused. */
static void vec_grows(void **state)
{
	P11I_VEC(int) v = {0};
	struct {
		char *v;
		size_t n, cap;
	} huge = {0};
	p11s_error *err = p11s_error_new();

	(void)state;
	for (int i = 0; i < 100000; i++)
		assert_int_equal(p11i_vec_push(&v, i), 0);
	assert_int_equal(v.n, 100000);
	assert_true(v.cap >= v.n && v.cap < 2 * v.n + 8);
	for (int i = 0; i < 100000; i++)
		assert_int_equal(v.v[i], i);
	free(v.v);
	assert_int_equal(p11i_vec_reserve(&huge, SIZE_MAX), -1);
	assert_null(huge.v);
	assert_int_equal(huge.cap, 0);
	/* Two thousand candidates: every one kept, in order. */
	for (int i = 0; i < 2000; i++) {
		char c[32];

		snprintf(c, sizeof(c), "pkcs11:id=%%%04x", i);
		p11i_err_add_candidate(err, c);
	}
	assert_int_equal(p11s_error_candidate_count(err), 2000);
	assert_string_equal(p11s_error_candidate(err, 1999), "pkcs11:id=%07cf");
	assert_int_equal(p11i_err_nomem(err), P11S_E_NOMEM);
	assert_string_equal(p11s_error_message(err), "out of memory");
	p11s_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(time_rfc3339),     cmocka_unit_test(time_rejects),
	    cmocka_unit_test(time_format),      cmocka_unit_test(exit_codes),
	    cmocka_unit_test(error_candidates), cmocka_unit_test(vec_grows),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
