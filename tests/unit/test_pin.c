/* Secret sources: parsing the spec and reading a PIN or a password (src/secret.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/crypto.h>

#include "pin.h"
#include "p11smime/result.h"
#include "p11smime/io.h"

static char tmpdir[] = "/tmp/p11s-test-pin.XXXXXX";

static char *write_file(const char *name, const char *content, size_t len)
{
	char *path = NULL;
	FILE *f;

	assert_true(asprintf(&path, "%s/%s", tmpdir, name) > 0);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(content, 1, len, f), len);
	fclose(f);
	return path;
}

static void check_ok(const char *spec, const char *want)
{
	char buf[P11I_PIN_MAX + 1];
	p11s_error *err = p11s_error_new();

	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PIN, buf, sizeof(buf), err), P11S_OK);
	assert_string_equal(buf, want);
	p11s_error_free(err);
}

static void check_fails(const char *spec, p11s_rc want, const char *in_message)
{
	char buf[P11I_PIN_MAX + 1];
	p11s_error *err = p11s_error_new();

	memset(buf, 'x', sizeof(buf));
	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PIN, buf, sizeof(buf), err), want);
	assert_non_null(strstr(p11s_error_message(err), in_message));
	/* Nothing of a half-read PIN is left behind. */
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_true(buf[i] == '\0' || want == P11S_E_BAD_PIN_SOURCE);
	p11s_error_free(err);
}

static void test_spec_check(void **state)
{
	static const char *good[] = {
	    "file:/tmp/pin", "file:relative/pin", "file:///tmp/pin", "fd:0",
	    "fd:17",         "env:PIN",           "env:MY_PIN_2"};
	static const char *bad[] = {
	    "",       "pin",     "123456",        "file:",          "file://host/pin",
	    "fd:",    "fd:-1",   "fd:3x",         "fd:99999999999", "env:",
	    "env:1A", "env:A-B", "FILE:/tmp/pin", "pass:123456"};
	p11s_error *err = p11s_error_new();

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(p11s_secret_source_check(good[i], P11S_SECRET_PIN, err), P11S_OK);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p11s_error_clear(err);
		assert_int_equal(p11s_secret_source_check(bad[i], P11S_SECRET_PIN, err),
		                 P11S_E_BAD_PIN_SOURCE);
		assert_true(strlen(p11s_error_message(err)) > 0);
	}
	assert_int_equal(p11s_secret_source_check(NULL, P11S_SECRET_PIN, err),
	                 P11S_E_BAD_PIN_SOURCE);
	/* Exit code 2: a malformed option is a usage error. */
	assert_int_equal(p11s_rc_exit_code(P11S_E_BAD_PIN_SOURCE), 2);
	p11s_error_free(err);
}

static void test_file(void **state)
{
	char *a = write_file("a", "123456\n", 7);
	char *b = write_file("b", "123456\r\nsecond line\n", 20);
	char *c = write_file("c", "no newline", 10);
	char *d = write_file("d", "", 0);
	char *e = write_file("e", "\nafter an empty line\n", 21);
	char *spec, *spec3;

	(void)state;
	spec = NULL;
	assert_true(asprintf(&spec, "file:%s", a) > 0);
	check_ok(spec, "123456");
	free(spec);
	assert_true(asprintf(&spec3, "file://%s", a) > 0);
	check_ok(spec3, "123456");
	free(spec3);
	assert_true(asprintf(&spec, "file:%s", b) > 0);
	check_ok(spec, "123456");
	free(spec);
	assert_true(asprintf(&spec, "file:%s", c) > 0);
	check_ok(spec, "no newline");
	free(spec);
	assert_true(asprintf(&spec, "file:%s", d) > 0);
	check_fails(spec, P11S_E_PIN_UNAVAILABLE, "empty");
	free(spec);
	assert_true(asprintf(&spec, "file:%s", e) > 0);
	check_fails(spec, P11S_E_PIN_UNAVAILABLE, "empty");
	free(spec);
	assert_true(asprintf(&spec, "file:%s/missing", tmpdir) > 0);
	check_fails(spec, P11S_E_PIN_UNAVAILABLE, "cannot open PIN file");
	free(spec);
	/* exit code 3: a PIN problem */
	assert_int_equal(p11s_rc_exit_code(P11S_E_PIN_UNAVAILABLE), 3);
	free(a);
	free(b);
	free(c);
	free(d);
	free(e);
}

static void test_too_long(void **state)
{
	char big[P11I_PIN_MAX + 10];
	char *path, *spec = NULL;
	char small[5];
	p11s_error *err = p11s_error_new();

	(void)state;
	memset(big, '7', sizeof(big));
	path = write_file("long", big, sizeof(big));
	assert_true(asprintf(&spec, "file:%s", path) > 0);
	check_fails(spec, P11S_E_PIN_UNAVAILABLE, "too long");
	/* The caller's buffer bounds it too. */
	free(path);
	path = write_file("five", "12345\n", 6);
	free(spec);
	assert_true(asprintf(&spec, "file:%s", path) > 0);
	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PIN, small, sizeof(small), err),
	                 P11S_E_PIN_UNAVAILABLE);
	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PIN, big, 6, err), P11S_OK);
	assert_string_equal(big, "12345");
	free(spec);
	free(path);
	p11s_error_free(err);
}

static void test_fd(void **state)
{
	int p[2];
	char spec[32], rest[64];
	ssize_t n;

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "4321\nnot the pin\n", 17), 17);
	close(p[1]);
	snprintf(spec, sizeof(spec), "fd:%d", p[0]);
	check_ok(spec, "4321");
	/* Only the first line is consumed: the rest stays for whoever owns the fd. */
	n = read(p[0], rest, sizeof(rest) - 1);
	assert_int_equal(n, 12);
	rest[n] = '\0';
	assert_string_equal(rest, "not the pin\n");
	close(p[0]);
	/* A closed descriptor. */
	check_fails(spec, P11S_E_PIN_UNAVAILABLE, "cannot read");
}

static void test_env(void **state)
{
	(void)state;
	setenv("P11S_TEST_PIN", "s3cret", 1);
	check_ok("env:P11S_TEST_PIN", "s3cret");
	setenv("P11S_TEST_PIN", "withnewline\n", 1);
	check_ok("env:P11S_TEST_PIN", "withnewline");
	setenv("P11S_TEST_PIN", "", 1);
	check_fails("env:P11S_TEST_PIN", P11S_E_PIN_UNAVAILABLE, "empty");
	unsetenv("P11S_TEST_PIN");
	check_fails("env:P11S_TEST_PIN", P11S_E_PIN_UNAVAILABLE, "not set");
	check_fails("nonsense", P11S_E_BAD_PIN_SOURCE, "PIN source is not one of file:PATH");
	{
		p11s_error *e = p11s_error_new();

		/* What was typed may be the PIN itself: never repeated. */
		assert_int_equal(p11s_secret_source_check("123456", P11S_SECRET_PIN, e),
		                 P11S_E_BAD_PIN_SOURCE);
		assert_null(strstr(p11s_error_message(e), "123456"));
		p11s_error_free(e);
	}
}

/* The same reader for a file's password: an empty one is allowed, the error codes differ. */
static void test_password(void **state)
{
	char buf[8], *path, *spec = NULL;
	p11s_error *err = p11s_error_new();

	(void)state;
	path = write_file("emptypass", "\n", 1);
	assert_true(asprintf(&spec, "file:%s", path) > 0);
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	                 P11S_OK);
	assert_string_equal(buf, "");
	/* ...where an empty PIN is refused. */
	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PIN, buf, sizeof(buf), err),
	                 P11S_E_PIN_UNAVAILABLE);
	free(spec);
	free(path);

	path = write_file("longpass", "0123456789\n", 11);
	assert_true(asprintf(&spec, "file:%s", path) > 0);
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	                 P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "password"));
	assert_non_null(strstr(p11s_error_message(err), "too long"));
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	free(spec);
	free(path);

	assert_true(asprintf(&spec, "file:%s/missing", tmpdir) > 0);
	assert_int_equal(p11s_secret_read(spec, P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	                 P11S_E_IO);
	assert_non_null(strstr(p11s_error_message(err), "cannot open password file"));
	free(spec);

	unsetenv("P11S_TEST_PASS");
	assert_int_equal(
	    p11s_secret_read("env:P11S_TEST_PASS", P11S_SECRET_PASSWORD, buf, sizeof(buf), err),
	    P11S_E_IO);
	assert_int_equal(p11s_secret_source_check("env:1", P11S_SECRET_PASSWORD, err),
	                 P11S_E_BAD_PIN_SOURCE);
	assert_non_null(strstr(p11s_error_message(err), "password source"));
	OPENSSL_cleanse(buf, sizeof(buf));
	p11s_error_free(err);
}

static int setup(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char *cmd = NULL;

	(void)state;
	if (asprintf(&cmd, "rm -rf '%s'", tmpdir) > 0 && system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	free(cmd);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spec_check), cmocka_unit_test(test_file),
	    cmocka_unit_test(test_too_long),   cmocka_unit_test(test_fd),
	    cmocka_unit_test(test_env),        cmocka_unit_test(test_password),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
