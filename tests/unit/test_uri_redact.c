/*
 * p11i_uri_redact on query attributes that grow when hidden: a short
 * pin-value ("pin-value=p", 11 bytes) becomes "pin-value=(hidden)" (18), and
 * the buffer once had room for one such growth only (found by fuzz_uri).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "p11.h"

static void redact_many_short_pin_values(void **state)
{
	char uri[4096], want[8192];
	size_t u, w;
	char *got;

	(void)state;
	u = (size_t)sprintf(uri, "pkcs11:token=t?");
	w = (size_t)sprintf(want, "pkcs11:token=t?");
	for (int i = 0; i < 100; i++) {
		u += (size_t)sprintf(uri + u, "%spin-value=%c", i ? "&" : "", 'a' + i % 26);
		w += (size_t)sprintf(want + w, "%spin-value=(hidden)", i ? "&" : "");
	}
	got = p11i_uri_redact(uri);
	assert_non_null(got);
	assert_string_equal(got, want);
	assert_null(strstr(got, "=a"));
	free(got);

	/* Empty values and other attributes around them. */
	got = p11i_uri_redact("pkcs11:id=%01?pin-value=&module-name=x&pin-value=&&pin-value");
	assert_string_equal(
	    got, "pkcs11:id=%01?pin-value=(hidden)&module-name=x&pin-value=(hidden)&&pin-value");
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(redact_many_short_pin_values),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
