/*
 * The field-value scanners (addresses, parameters, media types, transfer
 * encodings) end on every input, and in time linear in it.  A stray ')' in
 * a From once made verify spin forever; these tests are what keeps that
 * from coming back.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>

#include "common.h"
#include "mime.h"

/*
 * A scanner that stops advancing never returns: the alarm turns that into
 * a failed test instead of a hung one.  Generous because of the sanitizers.
 */
static void on_alarm(int sig)
{
	static const char msg[] =
	    "FAIL: a scanner did not return within 30 s (endless loop or quadratic time)\n";

	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(1);
}

static int arm(void **state)
{
	(void)state;
	signal(SIGALRM, on_alarm);
	alarm(30);
	return 0;
}

static int disarm(void **state)
{
	(void)state;
	alarm(0);
	return 0;
}

/*
 * Quadratic de-duplication took 77 s here; linear takes about 0.05 s
 * optimised, 0.4 s under the sanitizers.  The bound leaves room for a
 * loaded machine, not for a quadratic algorithm.
 */
#define LINEAR_BOUND_S 3.0

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One representative of each class of byte the scanners tell apart. */
static const char classes[] = " \t\r\n()\"[]<>:,;@\\=*'%/?.a0\x7f\x80\xff";

/* Every scanner on @p v: none may hang, crash or leak. */
static void scan_all(const char *v)
{
	char **addrs = NULL;
	size_t n = 99;
	p11s_error *err = p11s_error_new();
	p11s_rc rc = p11i_mime_addresses(v, &addrs, &n, err);

	assert_true(rc == P11S_OK || rc == P11S_E_INPUT);
	if (rc == P11S_OK) {
		for (size_t i = 0; i < n; i++)
			assert_non_null(addrs[i]);
		assert_null(addrs[n]);
	} else {
		assert_true(strlen(p11s_error_message(err)) > 0);
	}
	p11s_strv_free(addrs);
	p11s_error_free(err);
	free(p11i_mime_media_type(v));
	free(p11i_mime_param(v, "a"));
	free(p11i_mime_param(v, "boundary"));
}

/* Each class alone, at the start, in the middle and at the end of an address. */
static void scanners_every_class(void **state)
{
	/* '#' stands for the byte under test. */
	static const char *const shapes[] = {
	    "#",
	    "###",
	    "#b@example.org",
	    "a#b@example.org",
	    "a@example.org#",
	    "X <a#b@example.org>",
	    "g: a#b@example.org;",
	    "a@b, #, c@d",
	    "text/plain; a=#; b=\"#\"",
	    "text/plain; a*0=x#; a*1*=%41#",
	};

	(void)state;
	for (const char *c = classes; *c != '\0'; c++) {
		for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
			char v[128];
			size_t i = 0;

			for (const char *q = shapes[s]; *q != '\0'; q++)
				v[i++] = *q == '#' ? *c : *q;
			v[i] = '\0';
			scan_all(v);
		}
	}
}

/* Every string of up to three class representatives: 27,000 inputs. */
static void scanners_all_short_strings(void **state)
{
	size_t k = sizeof(classes) - 1;

	(void)state;
	for (size_t a = 0; a < k; a++)
		for (size_t b = 0; b <= k; b++)
			for (size_t c = 0; c <= k; c++) {
				char v[4] = {classes[a], b < k ? classes[b] : '\0',
				             b < k && c < k ? classes[c] : '\0', '\0'};

				scan_all(v);
			}
}

static void expect_bad(const char *v, const char *why)
{
	char **addrs = NULL;
	p11s_error *err = p11s_error_new();

	assert_int_equal(p11i_mime_addresses(v, &addrs, NULL, err), P11S_E_INPUT);
	assert_null(addrs);
	if (strstr(p11s_error_message(err), why) == NULL)
		fail_msg("%s: \"%s\" does not say \"%s\"", v, p11s_error_message(err), why);
	p11s_error_free(err);
}

/* The two bytes that used to stop the cursor: a clear error, not a hang. */
static void addresses_stray_closers(void **state)
{
	(void)state;
	expect_bad("a)b@example.org", "')' closes no comment");
	expect_bad(")", "')' closes no comment");
	expect_bad("Alice <a@example.org>)", "')' closes no comment");
	expect_bad("a@example.org (c)) x", "')' closes no comment");
	expect_bad("a]b@example.org", "']' closes no domain literal");
	expect_bad("]", "']' closes no domain literal");
	expect_bad("a@[1.2.3.4]]", "']' closes no domain literal");

	/* What surrounds them still reads as before. */
	char **v = NULL;
	size_t n = 0;

	assert_int_equal(p11i_mime_addresses("a@[192.0.2.1], (x) b@example.org", &v, &n, NULL),
	                 P11S_OK);
	assert_int_equal(n, 2);
	assert_string_equal(v[0], "a@[192.0.2.1]");
	assert_string_equal(v[1], "b@example.org");
	p11s_strv_free(v);
}

/* A header block of @p n addresses, each "u<i % distinct>@Example.ORG". */
static p11i_headers *many_addresses(size_t n, size_t distinct, const char *field)
{
	BIO *mem = BIO_new(BIO_s_mem());
	p11i_headers *h = NULL;

	assert_non_null(mem);
	BIO_printf(mem, "%s: ", field);
	for (size_t i = 0; i < n; i++)
		BIO_printf(mem, "%su%zu@%s", i ? ", " : "", i % distinct,
		           i % 2 ? "Example.ORG" : "example.org");
	BIO_printf(mem, "\n\nbody\n");
	assert_int_equal(p11i_headers_read(mem, 8u << 20, &h, NULL), P11S_OK);
	BIO_free(mem);
	return h;
}

/* 100,000 addresses took 77 s through verify (quadratic de-duplication). */
static void addresses_many_linear(void **state)
{
	static const char *const from[] = {"From", NULL};
	p11i_headers *h = many_addresses(100000, 100000, "From");
	char **v = NULL;
	size_t n = 0;
	double t = now();

	(void)state;
	assert_int_equal(p11i_headers_addresses(h, from, &v, &n, NULL), P11S_OK);
	t = now() - t;
	assert_int_equal(n, 100000);
	assert_string_equal(v[0], "u0@example.org");
	assert_string_equal(v[99999], "u99999@Example.ORG");
	p11s_strv_free(v);
	p11i_headers_free(h);
	if (t > LINEAR_BOUND_S)
		fail_msg("100,000 addresses took %.2f s", t);
	print_message("100,000 addresses in %.3f s\n", t);

	/* The same with duplicates: the domain's case does not make them new. */
	h = many_addresses(100000, 1000, "From");
	t = now();
	assert_int_equal(p11i_headers_addresses(h, from, &v, &n, NULL), P11S_OK);
	t = now() - t;
	assert_int_equal(n, 1000);
	for (size_t i = 0; i < n; i++) {
		char want[64];

		snprintf(want, sizeof(want), "u%zu@%s", i, i % 2 ? "Example.ORG" : "example.org");
		assert_string_equal(v[i], want);
	}
	p11s_strv_free(v);
	p11i_headers_free(h);
	if (t > LINEAR_BOUND_S)
		fail_msg("100,000 addresses (1,000 distinct) took %.2f s", t);
}

/* Local parts differ by case (kept apart); domains only by case (one address). */
static void addresses_dedup_rules(void **state)
{
	static const char msg[] = "To: a@x.org, A@x.org, a@X.ORG, \"q\"@x.org, a@y.org\n"
	                          "Cc: a@x.org, b, b, B\n\n";
	static const char *const names[] = {"To", "Cc", NULL};
	BIO *in = BIO_new_mem_buf(msg, -1);
	p11i_headers *h = NULL;
	char **v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(p11i_headers_read(in, 0, &h, NULL), P11S_OK);
	assert_int_equal(p11i_headers_addresses(h, names, &v, &n, NULL), P11S_OK);
	assert_int_equal(n, 6);
	assert_string_equal(v[0], "a@x.org");
	assert_string_equal(v[1], "A@x.org");
	assert_string_equal(v[2], "\"q\"@x.org");
	assert_string_equal(v[3], "a@y.org");
	assert_string_equal(v[4], "b");
	assert_string_equal(v[5], "B");
	assert_null(v[6]);
	p11s_strv_free(v);
	p11i_headers_free(h);
	BIO_free(in);
}

/* 100,000 parameters: each value is sized by itself, not by the rest of the field. */
static void params_many_linear(void **state)
{
	size_t n = 100000;
	char *v = malloc(16 + n * 12 + 32), *p = v, *got;
	double t;

	(void)state;
	assert_non_null(v);
	p += sprintf(p, "text/plain");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "; x=\"%05zu\"", i % 100000);
	sprintf(p, "; a=last");
	t = now();
	got = p11i_mime_param(v, "a");
	t = now() - t;
	assert_string_equal(got, "last");
	free(got);
	free(v);
	if (t > LINEAR_BOUND_S)
		fail_msg("100,000 parameters took %.2f s", t);
}

/* One field folded over 300,000 lines: each continuation used to copy the whole field. */
static void headers_folded_linear(void **state)
{
	size_t n = 300000;
	char *msg = malloc(32 + 3 * n), *p = msg;
	static const char *const from[] = {"From", NULL};
	p11i_headers *h = NULL;
	char **v = NULL;
	size_t count = 0;
	BIO *in;
	double t;

	(void)state;
	assert_non_null(msg);
	p += sprintf(p, "From: a@b.c\n");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, " ,\n");
	p += sprintf(p, "\nbody\n");
	in = BIO_new_mem_buf(msg, (int)(p - msg));
	t = now();
	assert_int_equal(p11i_headers_read(in, 0, &h, NULL), P11S_OK);
	assert_int_equal(p11i_headers_addresses(h, from, &v, &count, NULL), P11S_OK);
	t = now() - t;
	assert_int_equal(p11i_headers_count(h), 1);
	assert_int_equal(count, 1);
	assert_string_equal(v[0], "a@b.c");
	p11s_strv_free(v);
	p11i_headers_free(h);
	BIO_free(in);
	free(msg);
	if (t > LINEAR_BOUND_S)
		fail_msg("a field folded over 300,000 lines took %.2f s", t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(scanners_every_class, arm, disarm),
	    cmocka_unit_test_setup_teardown(scanners_all_short_strings, arm, disarm),
	    cmocka_unit_test_setup_teardown(addresses_stray_closers, arm, disarm),
	    cmocka_unit_test_setup_teardown(addresses_many_linear, arm, disarm),
	    cmocka_unit_test_setup_teardown(addresses_dedup_rules, arm, disarm),
	    cmocka_unit_test_setup_teardown(params_many_linear, arm, disarm),
	    cmocka_unit_test_setup_teardown(headers_folded_linear, arm, disarm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
