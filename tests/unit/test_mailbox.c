/*
 * The mailbox parser (src/mailbox.c), table-driven: what RFC 5321 4.1.2
 * calls a Mailbox is accepted, everything else is refused with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mailbox.h"
#include "mime.h"
#include "testutil.h"

static const char *const accepted[] = {
    "alice@example.org",
    "Alice@Example.ORG",
    "a@b",
    "alice@localhost",
    "first.last@example.org",
    "first.m.last@sub.example.co.uk",
    "alice+tag@example.org",
    "o'hara@example.org",
    "!#$%&'*+-/=?^_`{|}~@example.org",
    "user@xn--bcher-kva.example",          /* IDN as an A-label */
    "xn--caf-dma@xn--fsqu00a.xn--0zwm56d", /* A-labels everywhere */
    "user@123.example",
    "user@a-b.example",
    "\"john doe\"@example.org",
    "\"john..doe\"@example.org",
    "\"a@b\"@example.org",
    "\"quote\\\"d\"@example.org",
    "\".dot\"@example.org",
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "user@[ipv6:::1]",
    /* 64 octets of local part, the most RFC 5321 allows */
    "0123456789012345678901234567890123456789012345678901234567890123@example.org",
};

static const struct {
	const char *in;
	const char *why;
} refused[] = {
    {"", "empty"},
    {"nobody", "no @"},
    {"nobody.example.org", "no @"},
    {"@example.org", "nothing before the @"},
    {"alice@", "nothing after the @"},
    {"@", "nothing before the @"},
    {"\"\"@example.org", "empty quoted local part"},
    {"<alice@example.org>", "angle brackets"},
    {"Alice <alice@example.org>", "angle brackets"},
    {"<alice@example.org", "angle brackets"},
    {"alice@example.org>", "angle brackets"},
    {"alice@example.org.", "the domain ends with a dot"},
    {"alice.@example.org", "the local part ends with a dot"},
    {".alice@example.org", "the local part starts with a dot"},
    {"al..ice@example.org", "two dots in a row"},
    {"alice@example..org", "an empty label"},
    {"alice@.example.org", "an empty label"},
    {"alice@-example.org", "hyphen"},
    {"alice@example-.org", "hyphen"},
    {"alice@ex_ample.org", "'_' is not allowed in a domain"},
    {"ali ce@example.org", "a space outside quotes"},
    {" alice@example.org", "a space outside quotes"},
    {"alice@example.org ", "a space in the domain"},
    {"alice @example.org", "a space outside quotes"},
    {"alice@exa mple.org", "a space in the domain"},
    {"alice@b@example.org", "more than one @"},
    {"ali(ce)@example.org", "'(' is not allowed"},
    {"ali,ce@example.org", "',' is not allowed"},
    {"ali\\ce@example.org", "'\\' is not allowed"},
    {"\"alice@example.org", "unterminated quoted"},
    {"\"alice\"x@example.org", "no @ after the quoted local part"},
    {"alice@[192.0.2.1", "unterminated address literal"},
    {"alice@[300.0.2.1]", "neither IPv4 nor IPv6"},
    {"alice@[2001:db8::1]", "neither IPv4 nor IPv6"},
    {"alice@[x-tag:foo]", "neither IPv4 nor IPv6"},
    {"alice@[]", "neither IPv4 nor IPv6"},
    {"al\tice@example.org", "a control character"},
    {"al\xc3\xa9@example.org", "outside ASCII"},
    {"alice@b\xc3\xbc"
     "cher.example",
     "outside ASCII"},
    {"mailto:alice@example.org", "':' is not allowed"},
    {"01234567890123456789012345678901234567890123456789012345678901234@example.org",
     "local part is longer than 64"},
    {"a@0123456789012345678901234567890123456789012345678901234567890123.example",
     "label longer than 63"},
};

static void accepted_forms(void **state)
{
	char why[128];

	(void)state;
	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		if (!p11i_mailbox_parse(accepted[i], strlen(accepted[i]), why, sizeof(why))) {
			print_error("'%s' refused: %s\n", accepted[i], why);
			fail();
		}
		assert_true(p11i_mailbox_valid(accepted[i]));
	}
}

static void refused_forms(void **state)
{
	char why[128];

	(void)state;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		strcpy(why, "(untouched)");
		if (p11i_mailbox_parse(refused[i].in, strlen(refused[i].in), why, sizeof(why)) ||
		    strstr(why, refused[i].why) == NULL) {
			print_error("'%s': got '%s', want refused with '%s'\n", refused[i].in, why,
			            refused[i].why);
			fail();
		}
		assert_false(p11i_mailbox_valid(refused[i].in));
	}
}

static void lengths_and_nul(void **state)
{
	char big[1024], why[128];

	(void)state;
	/* A NUL inside the bytes (as an IA5String may hold) is not an address. */
	assert_false(p11i_mailbox_parse("a\0b@example.org", 15, why, sizeof(why)));
	assert_non_null(strstr(why, "control character"));
	/* Only len bytes are read: a prefix of a longer buffer is judged alone. */
	assert_true(p11i_mailbox_parse("alice@example.org trailing junk", 17, NULL, 0));
	/* The limit is checked before anything else, whatever the content. */
	memset(big, 'a', sizeof(big));
	memcpy(big + 10, "@example.org", 12);
	assert_false(p11i_mailbox_parse(big, sizeof(big), why, sizeof(why)));
	assert_non_null(strstr(why, "longer than 254"));
	/* A too small reason buffer is truncated, not overrun; none at all is fine. */
	assert_false(p11i_mailbox_parse("nobody", 6, why, 3));
	assert_int_equal(strlen(why), 2);
	assert_false(p11i_mailbox_parse("nobody", 6, NULL, 0));
	assert_false(p11i_mailbox_parse(NULL, 0, why, sizeof(why)));
}

static void equality(void **state)
{
	(void)state;
	assert_true(p11i_mailbox_equal("Alice@Example.org", "alice@example.ORG"));
	assert_false(p11i_mailbox_equal("alice@example.org", "alice@example.org."));
	assert_false(p11i_mailbox_equal("nobody", "nobody"));
	assert_false(p11i_mailbox_equal("alice@example.org", "bob@example.org"));
	assert_false(p11i_mailbox_equal(NULL, "alice@example.org"));
}

static void certificate_places(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *x = tu_cert(&(tu_cert_spec){
	    .key = key,
	    .cn = "Mixed",
	    .subject_email = "Legacy@Example.org",
	    .san =
	        "email:nobody,email:Alice@example.org,email:<bob@example.org>,email:@example.org",
	    .not_before = tu_time("2026-01-01"),
	    .not_after = tu_time("2027-01-01")});
	size_t n = 0;
	char **v;

	(void)state;
	v = p11i_cert_mailboxes(x, P11I_MAILBOX_IN_SAN, &n);
	assert_int_equal(n, 1);
	assert_string_equal(v[0], "Alice@example.org");
	p11s_strv_free(v);

	v = p11i_cert_mailboxes(x, P11I_MAILBOX_IN_SAN | P11I_MAILBOX_IN_SUBJECT, &n);
	assert_int_equal(n, 2);
	assert_string_equal(v[1], "Legacy@Example.org");
	p11s_strv_free(v);

	v = p11i_cert_bad_mailboxes(x, &n);
	assert_int_equal(n, 3);
	assert_string_equal(v[0], "'nobody' is not an e-mail address (no @)");
	assert_non_null(strstr(v[1], "'<bob@example.org>' is not an e-mail address (angle"));
	assert_string_equal(v[2], "'@example.org' is not an e-mail address (nothing before the @)");
	p11s_strv_free(v);

	assert_int_equal(p11i_cert_has_mailbox(x, "alice@EXAMPLE.org", P11I_MAILBOX_IN_SAN),
	                 P11I_MAILBOX_IN_SAN);
	assert_int_equal(p11i_cert_has_mailbox(x, "legacy@example.org", P11I_MAILBOX_IN_SAN), 0);
	assert_int_equal(p11i_cert_has_mailbox(x, "legacy@example.org",
	                                       P11I_MAILBOX_IN_SAN | P11I_MAILBOX_IN_SUBJECT),
	                 P11I_MAILBOX_IN_SUBJECT);
	/* A non-address never matches, even one spelled the same. */
	assert_int_equal(p11i_cert_has_mailbox(x, "nobody", P11I_MAILBOX_IN_SAN), 0);
	assert_int_equal(p11i_cert_has_mailbox(x, "<bob@example.org>", P11I_MAILBOX_IN_SAN), 0);

	/* No certificate: an empty list, not NULL. */
	v = p11i_cert_mailboxes(NULL, P11I_MAILBOX_IN_SAN, &n);
	assert_non_null(v);
	assert_int_equal(n, 0);
	p11s_strv_free(v);
	X509_free(x);
	EVP_PKEY_free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(accepted_forms),     cmocka_unit_test(refused_forms),
	    cmocka_unit_test(lengths_and_nul),    cmocka_unit_test(equality),
	    cmocka_unit_test(certificate_places),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
