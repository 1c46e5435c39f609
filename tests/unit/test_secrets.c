/*
 * Secrets held as briefly and as privately as we can (issue 9, "Secrets"):
 * an env: PIN leaves the environment once read, a kept PIN sits in locked
 * pages and keeps the process non-dumpable, a URI's pin-value never reaches
 * a message, and OpenSSL's reasons reach messages in words, not codes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include <cmocka.h>

#include <openssl/asn1.h>
#include <openssl/err.h>

#include "common.h"
#include "p11.h"
#include "pin.h"
#include "p11smime/io.h"

static void test_env_pin_is_removed(void **state)
{
	char buf[P11I_PIN_MAX + 1];
	p11s_error *err = p11s_error_new();

	(void)state;
	setenv("P11S_TEST_SECRET_PIN", "4711-secret", 1);
	assert_int_equal(
	    p11s_secret_read("env:P11S_TEST_SECRET_PIN", P11S_SECRET_PIN, buf, sizeof(buf), err),
	    P11S_OK);
	assert_string_equal(buf, "4711-secret");
	/* Gone from this process and from what a child inherits. */
	assert_null(getenv("P11S_TEST_SECRET_PIN"));
	assert_int_equal(system("test -z \"${P11S_TEST_SECRET_PIN+set}\""), 0);
	assert_int_equal(system("env | grep -q 4711-secret"), 256);
	/* Read once: a second read finds nothing. */
	assert_int_equal(
	    p11s_secret_read("env:P11S_TEST_SECRET_PIN", P11S_SECRET_PIN, buf, sizeof(buf), err),
	    P11S_E_PIN_UNAVAILABLE);
	p11s_error_free(err);
}

static void test_locked_pin_not_dumpable(void **state)
{
	char *a, *b;

	(void)state;
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1);
	a = p11i_locked_strdup("123456");
	assert_non_null(a);
	assert_string_equal(a, "123456");
	/* No core file, no ptrace while a PIN is held. */
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
	/* (Whether mlock took is not asserted: AddressSanitizer makes mlock a no-op.) */
	b = p11i_locked_strdup("654321");
	assert_non_null(b);
	p11i_locked_free(a);
	/* Still one held. */
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
	p11i_locked_free(b);
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1);
	p11i_locked_free(NULL);
}

static void check_redacted(const char *uri, const char *want)
{
	char *s = p11i_uri_redact(uri);

	assert_non_null(s);
	assert_string_equal(s, want);
	assert_null(strstr(s, "SECRET"));
	free(s);
}

static void test_redact(void **state)
{
	(void)state;
	check_redacted("pkcs11:token=a?pin-value=SECRET", "pkcs11:token=a?pin-value=(hidden)");
	/* Malformed URIs are the ones that get echoed: pin-value in the path, bad escapes. */
	check_redacted("pkcs11:token=x;pin-value=SECRET;id=%zz",
	               "pkcs11:token=x;pin-value=(hidden);id=%zz");
	check_redacted("PKCS11:TOKEN=x;PIN-VALUE=SECRET", "PKCS11:TOKEN=x;PIN-VALUE=(hidden)");
	check_redacted("pkcs11:pin%2dvalue=SECRET", "pkcs11:pin%2dvalue=(hidden)");
	check_redacted("pkcs11:?pin-value=SE:CRET&pin-value=SECRET&x=1",
	               "pkcs11:?pin-value=(hidden)&pin-value=(hidden)&x=1");
	check_redacted("pkcs11:a=1;b;c?d&e&f&g&h&i&pin-value=",
	               "pkcs11:a=1;b;c?d&e&f&g&h&i&pin-value=(hidden)");
	check_redacted("pkcs11:token=x?pin-source=file:/tmp/p",
	               "pkcs11:token=x?pin-source=file:/tmp/p");
}

static void test_ossl_reason_in_words(void **state)
{
	p11s_error *err = p11s_error_new();

	(void)state;
	ERR_raise(ERR_LIB_ASN1, ASN1_R_NO_CONTENT_TYPE);
	p11i_err_ossl(err, P11S_E_INPUT, "cannot read it");
	assert_null(strstr(p11s_error_message(err), "error:"));
	assert_string_equal(p11s_error_message(err), "cannot read it (no content type)");
	assert_int_equal(ERR_peek_error(), 0);
	/* Words already said are not repeated. */
	ERR_raise(ERR_LIB_ASN1, ASN1_R_NO_CONTENT_TYPE);
	p11i_err_ossl(err, P11S_E_INPUT, "no content type here");
	assert_string_equal(p11s_error_message(err), "no content type here");
	p11s_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_env_pin_is_removed),
	    cmocka_unit_test(test_locked_pin_not_dumpable),
	    cmocka_unit_test(test_redact),
	    cmocka_unit_test(test_ossl_reason_in_words),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
