/*
 * The rules engine, table-driven over certificates made by testutil.
 * Every row names the certificate, the expected result of each rule (in
 * rule order: san-email, key-usage, public-key-algorithm,
 * extended-key-usage, private-key-algorithm, validity as P/F/S), the
 * verdict, the usage summary, and a phrase the interesting message or
 * warning must contain.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "p11smime/rules.h"
#include "testutil.h"

#define GOOD_SAN   "email:alice@example.org"
#define GOOD_KU    "critical,digitalSignature,keyEncipherment"
#define EC_KU      "critical,digitalSignature,keyAgreement"
#define GOOD_EKU   "emailProtection"
#define AT         "2026-06-01T12:00:00Z"
#define NOT_BEFORE "2026-01-01"
#define NOT_AFTER  "2027-01-01"

static const char *rule_ids[] = {
    P11S_RULE_SAN_EMAIL,
    P11S_RULE_KEY_USAGE,
    P11S_RULE_PUBLIC_KEY_ALGORITHM,
    P11S_RULE_EXTENDED_KEY_USAGE,
    P11S_RULE_PRIVATE_KEY_ALGORITHM,
    P11S_RULE_VALIDITY,
};

/* The test CA, for key types that cannot sign their own certificate. */
static X509 *ca_cert;
static EVP_PKEY *ca_key;

static int setup(void **state)
{
	(void)state;
	ca_key = tu_key("ec:P-256#ca");
	ca_cert = tu_cert(&(tu_cert_spec){.key = ca_key,
	                                  .cn = "Test CA",
	                                  .ca = 1,
	                                  .ku = "critical,keyCertSign,cRLSign",
	                                  .not_before = tu_time("2020-01-01"),
	                                  .not_after = tu_time("2040-01-01")});
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	return 0;
}

static char letter(p11s_check_result r)
{
	return r == P11S_CHECK_PASS ? 'P' : r == P11S_CHECK_FAIL ? 'F' : 'S';
}

/* Rule results as a string "PPPPSP" in rule_ids order. */
static void results(const p11s_verdict *v, char out[7])
{
	for (size_t i = 0; i < 6; i++)
		out[i] = letter(p11s_verdict_rule(v, rule_ids[i], NULL));
	out[6] = '\0';
}

static int has_warning(const p11s_verdict *v, const char *phrase)
{
	for (size_t i = 0; i < p11s_verdict_warning_count(v); i++)
		if (strstr(p11s_verdict_warning(v, i), phrase) != NULL)
			return 1;
	return 0;
}

/* ----------------------------------------------------------- rule table */

struct rule_case {
	const char *name;
	const char *key; /* NULL: rsa:2048 */
	const char *san, *subject_email, *ku, *eku;
	int ca;
	const char *not_before, *not_after; /* NULL: NOT_BEFORE/NOT_AFTER */
	const char *md;
	int issued; /* by the test CA rather than self-signed */
	const char *pubkey_oid;
	const char *raw_oid; /* a raw extension with undecodable content */
	int raw_twice;       /* ... or a good SAN added twice */

	const char *expect; /* rule results */
	int accepted, usable, can_sign, can_encrypt;
	const char *msg_rule, *msg_phrase; /* a message that must say something */
	const char *warning;               /* a warning phrase; NULL: no warning at all */
};

static const struct rule_case rule_cases[] = {
    /* Good certificates. */
    {"good RSA", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .expect = "PPPPSP", 1, 1, 1, 1,
     P11S_RULE_SAN_EMAIL, "alice@example.org"},
    {"good EC P-256", "ec:P-256", GOOD_SAN, NULL, EC_KU, GOOD_EKU, .expect = "PPPPSP", 1, 1, 1, 1,
     P11S_RULE_PUBLIC_KEY_ALGORITHM, "P-256"},
    {"EC signing only", "ec:P-384", GOOD_SAN, NULL, "digitalSignature", GOOD_EKU,
     .expect = "PPPPSP", 1, 1, 1, 0},
    {"good RSA issued by a CA", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .issued = 1,
     .expect = "PPPPSP", 1, 1, 1, 1},

    /* san-email */
    {"no SAN at all", NULL, NULL, NULL, GOOD_KU, GOOD_EKU, .expect = "FPPPSP", 0, 0, 0, 0,
     P11S_RULE_SAN_EMAIL, "no Subject Alternative Name extension"},
    {"address only in subject", NULL, NULL, "alice@example.org", GOOD_KU, GOOD_EKU,
     .expect = "FPPPSP", 0, 0, 0, 0, P11S_RULE_SAN_EMAIL,
     "alice@example.org in the subject's "
     "emailAddress does not count"},
    {"SAN with DNS only", NULL, "DNS:mail.example.org", NULL, GOOD_KU, GOOD_EKU, .expect = "FPPPSP",
     0, 0, 0, 0, P11S_RULE_SAN_EMAIL, "holds no e-mail address"},
    {"SAN DNS, address in subject", NULL, "DNS:mail.example.org", "bob@example.org", GOOD_KU,
     GOOD_EKU, .expect = "FPPPSP", 0, 0, 0, 0, P11S_RULE_SAN_EMAIL, "does not count"},
    {"SAN two addresses", NULL, "email:a@example.org,email:b@example.org", NULL, GOOD_KU, GOOD_EKU,
     .expect = "PPPPSP", 1, 1, 1, 1, P11S_RULE_SAN_EMAIL, "a@example.org, b@example.org"},
    {"SAN and subject address", NULL, GOOD_SAN, "alice@example.org", GOOD_KU, GOOD_EKU,
     .expect = "PPPPSP", 1, 1, 1, 1},
    /* san-email: an rfc822Name that is not a mailbox is no address */
    {"SAN 'nobody'", NULL, "email:nobody", NULL, GOOD_KU, GOOD_EKU, .expect = "FPPPSP", 0, 0, 0, 0,
     P11S_RULE_SAN_EMAIL, "'nobody' is not an e-mail address (no @)",
     .warning = "'nobody' is not an e-mail address (no @)"},
    {"SAN '@example.org'", NULL, "email:@example.org", NULL, GOOD_KU, GOOD_EKU, .expect = "FPPPSP",
     0, 0, 0, 0, P11S_RULE_SAN_EMAIL,
     "'@example.org' is not an e-mail address (nothing before the @)",
     .warning = "'@example.org' is not an e-mail address"},
    {"SAN in angle brackets", NULL, "email:<alice@example.org>", NULL, GOOD_KU, GOOD_EKU,
     .expect = "FPPPSP", 0, 0, 0, 0, P11S_RULE_SAN_EMAIL,
     "'<alice@example.org>' is not an e-mail address (angle brackets",
     .warning = "'<alice@example.org>' is not an e-mail address"},
    {"SAN trailing dot, address in subject", NULL, "email:alice@example.org.", "alice@example.org",
     GOOD_KU, GOOD_EKU, .expect = "FPPPSP", 0, 0, 0, 0, P11S_RULE_SAN_EMAIL,
     "the domain ends with a dot); the address alice@example.org in the subject's emailAddress "
     "does not count",
     .warning = "the domain ends with a dot"},
    {"SAN one good, one not", NULL, "email:nobody,email:alice@example.org", NULL, GOOD_KU, GOOD_EKU,
     .expect = "PPPPSP", 1, 1, 1, 1, P11S_RULE_SAN_EMAIL,
     "Name: alice@example.org; 'nobody' is not an e-mail address (no @)",
     .warning = "'nobody' is not an e-mail address (no @)"},

    /* key-usage: absent, each bit alone */
    {"no Key Usage", NULL, GOOD_SAN, NULL, NULL, GOOD_EKU, .expect = "PFPPSP", 0, 0, 0, 0,
     P11S_RULE_KEY_USAGE, "no Key Usage extension"},
    {"KU digitalSignature", NULL, GOOD_SAN, NULL, "digitalSignature", GOOD_EKU, .expect = "PPPPSP",
     1, 1, 1, 0},
    {"KU nonRepudiation", NULL, GOOD_SAN, NULL, "nonRepudiation", GOOD_EKU, .expect = "PFPPSP", 0,
     0, 0, 0, P11S_RULE_KEY_USAGE, "neither digitalSignature nor keyEncipherment"},
    {"KU keyEncipherment", NULL, GOOD_SAN, NULL, "keyEncipherment", GOOD_EKU, .expect = "PPPPSP", 1,
     1, 0, 1},
    {"KU dataEncipherment", NULL, GOOD_SAN, NULL, "dataEncipherment", GOOD_EKU, .expect = "PFPPSP",
     0, 0, 0, 0},
    {"KU keyAgreement (EC)", "ec:P-256", GOOD_SAN, NULL, "keyAgreement", GOOD_EKU,
     .expect = "PFPPSP", 0, 0, 0, 0, P11S_RULE_KEY_USAGE, "keyAgreement alone does not satisfy"},
    {"KU keyCertSign", NULL, GOOD_SAN, NULL, "keyCertSign", GOOD_EKU, .expect = "PFPPSP", 0, 0, 0,
     0},
    {"KU cRLSign", NULL, GOOD_SAN, NULL, "cRLSign", GOOD_EKU, .expect = "PFPPSP", 0, 0, 0, 0},
    {"KU encipherOnly", NULL, GOOD_SAN, NULL, "encipherOnly", GOOD_EKU, .expect = "PFPPSP", 0, 0, 0,
     0},
    {"KU decipherOnly", NULL, GOOD_SAN, NULL, "decipherOnly", GOOD_EKU, .expect = "PFPPSP", 0, 0, 0,
     0},

    /* extended-key-usage */
    {"EKU absent", NULL, GOOD_SAN, NULL, GOOD_KU, NULL, .expect = "PPPPSP", 1, 1, 1, 1,
     P11S_RULE_EXTENDED_KEY_USAGE, "optional"},
    {"EKU serverAuth only", NULL, GOOD_SAN, NULL, GOOD_KU, "serverAuth", .expect = "PPPFSP", 0, 0,
     0, 0, P11S_RULE_EXTENDED_KEY_USAGE, "serverAuth; it must contain emailProtection"},
    {"EKU anyExtendedKeyUsage only", NULL, GOOD_SAN, NULL, GOOD_KU, "anyExtendedKeyUsage",
     .expect = "PPPFSP", 0, 0, 0, 0, P11S_RULE_EXTENDED_KEY_USAGE, "only anyExtendedKeyUsage"},
    {"EKU serverAuth and emailProtection", NULL, GOOD_SAN, NULL, GOOD_KU,
     "serverAuth,emailProtection", .expect = "PPPPSP", 1, 1, 1, 1},
    {"EKU unknown OID only", NULL, GOOD_SAN, NULL, GOOD_KU, "1.3.6.1.4.1.99999.1",
     .expect = "PPPFSP", 0, 0, 0, 0, P11S_RULE_EXTENDED_KEY_USAGE, "1.3.6.1.4.1.99999.1"},

    /* public-key-algorithm: none of these may crash */
    {"Ed25519", "ed25519", GOOD_SAN, NULL, "digitalSignature", GOOD_EKU, .expect = "PPFPSP", 0, 0,
     0, 0, P11S_RULE_PUBLIC_KEY_ALGORITHM, "the public key is Ed25519"},
    {"Ed448", "ed448", GOOD_SAN, NULL, "digitalSignature", GOOD_EKU, .expect = "PPFPSP", 0, 0, 0, 0,
     P11S_RULE_PUBLIC_KEY_ALGORITHM, "Ed448"},
    {"X25519", "x25519", GOOD_SAN, NULL, "keyAgreement,digitalSignature", GOOD_EKU, .issued = 1,
     .expect = "PPFPSP", 0, 0, 0, 0, P11S_RULE_PUBLIC_KEY_ALGORITHM, "X25519"},
    {"DSA", "dsa:1024", GOOD_SAN, NULL, "digitalSignature", GOOD_EKU, .expect = "PPFPSP", 0, 0, 0,
     0, P11S_RULE_PUBLIC_KEY_ALGORITHM, "the public key is DSA"},
    {"DH", "dh", GOOD_SAN, NULL, "keyAgreement,digitalSignature", GOOD_EKU, .issued = 1,
     .expect = "PPFPSP", 0, 0, 0, 0, P11S_RULE_PUBLIC_KEY_ALGORITHM, "DH"},
    {"unknown algorithm OID", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .issued = 1,
     .pubkey_oid = "1.2.3.4.5", .expect = "PPFPSP", 0, 0, 0, 0, P11S_RULE_PUBLIC_KEY_ALGORITHM,
     "1.2.3.4.5"},
    {"RSA OID with a broken key", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .issued = 1,
     .pubkey_oid = "1.2.840.113549.1.1.1", .expect = "PPFPSP", 0, 0, 0, 0,
     P11S_RULE_PUBLIC_KEY_ALGORITHM, "does not decode"},

    /* CA exemption */
    {"CA:TRUE with nothing else", NULL, NULL, NULL, NULL, NULL, .ca = 1, .expect = "SSSSSP", 1, 0,
     0, 0, P11S_RULE_SAN_EMAIL, "exempt"},
    {"CA:FALSE is not exempt", NULL, NULL, NULL, GOOD_KU, GOOD_EKU, .ca = -1, .expect = "FPPPSP", 0,
     0, 0, 0},

    /* validity at AT: decides usability, not acceptance */
    {"expired", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .not_before = "2024-01-01",
     .not_after = "2025-01-01", .expect = "PPPPSF", 1, 0, 0, 0, P11S_RULE_VALIDITY,
     "expired 2025-01-01T00:00:00Z"},
    {"not yet valid", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .not_before = "2026-07-01",
     .not_after = "2027-07-01", .expect = "PPPPSF", 1, 0, 0, 0, P11S_RULE_VALIDITY,
     "not valid before 2026-07-01"},
    {"rejected and expired", NULL, NULL, NULL, GOOD_KU, GOOD_EKU, .not_before = "2024-01-01",
     .not_after = "2025-01-01", .expect = "FPPPSF", 0, 0, 0, 0},

    /* warnings, which never reject */
    {"expires within 30 days", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .not_before = "2025-06-01",
     .not_after = "2026-06-11T12:00:00Z", .expect = "PPPPSP", 1, 1, 1, 1,
     .warning = "expires in 10 days"},
    {"RSA 1024", "rsa:1024", GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .expect = "PPPPSP", 1, 1, 1, 1,
     .warning = "RSA key of 1024 bits, below 2048"},
    {"EC secp256k1", "ec:secp256k1", GOOD_SAN, NULL, EC_KU, GOOD_EKU, .expect = "PPPPSP", 1, 1, 1,
     1, .warning = "secp256k1 is outside"},
    {"SHA-1 signature", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .md = "SHA1", .expect = "PPPPSP",
     1, 1, 1, 1, .warning = "signed with SHA-1"},
    {"MD5 signature", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .md = "MD5", .expect = "PPPPSP", 1,
     1, 1, 1, .warning = "signed with MD5"},
    {"keyEncipherment on EC", "ec:P-256", GOOD_SAN, NULL, GOOD_KU, GOOD_EKU, .expect = "PPPPSP", 1,
     1, 1, 0, .warning = "RFC 5480"},

    /* malformed extensions: failed checks, no crash */
    {"SAN undecodable", NULL, .raw_oid = "subjectAltName", .ku = GOOD_KU, .eku = GOOD_EKU,
     .expect = "FPPPSP", 0, 0, 0, 0, P11S_RULE_SAN_EMAIL, "does not decode"},
    {"SAN twice", NULL, .raw_twice = 1, .ku = GOOD_KU, .eku = GOOD_EKU, .expect = "FPPPSP", 0, 0, 0,
     0, P11S_RULE_SAN_EMAIL, "more than once"},
    {"KU undecodable", NULL, GOOD_SAN, .raw_oid = "keyUsage", .eku = GOOD_EKU, .expect = "PFPPSP",
     0, 0, 0, 0, P11S_RULE_KEY_USAGE, "does not decode"},
    {"EKU undecodable", NULL, GOOD_SAN, NULL, GOOD_KU, .raw_oid = "extendedKeyUsage",
     .expect = "PPPFSP", 0, 0, 0, 0, P11S_RULE_EXTENDED_KEY_USAGE, "does not decode"},
    {"basicConstraints undecodable", NULL, GOOD_SAN, NULL, GOOD_KU, GOOD_EKU,
     .raw_oid = "basicConstraints", .expect = "PPPPSP", 1, 1, 1, 1},
};

static X509 *make_cert(const struct rule_case *c)
{
	static const unsigned char garbage[] = {0x04, 0x03, 0xde, 0xad};
	static const unsigned char san_der[] = {0x30, 0x0f, 0x81, 0x0d, 'b', 'o', 'b', '@', 'e',
	                                        'x',  'a',  'm',  'p',  'l', 'e', '.', 'o'};
	EVP_PKEY *key = tu_key(c->key ? c->key : "rsa:2048");
	tu_cert_spec s = {.key = key,
	                  .cn = c->name,
	                  .subject_email = c->subject_email,
	                  .san = c->san,
	                  .ku = c->ku,
	                  .eku = c->eku,
	                  .ca = c->ca,
	                  .md = c->md,
	                  .pubkey_oid = c->pubkey_oid,
	                  .not_before = tu_time(c->not_before ? c->not_before : NOT_BEFORE),
	                  .not_after = tu_time(c->not_after ? c->not_after : NOT_AFTER)};
	X509 *x;

	if (c->issued) {
		s.issuer = ca_cert;
		s.issuer_key = ca_key;
	}
	if (c->raw_oid) {
		s.raw[0].oid = c->raw_oid;
		s.raw[0].der = garbage;
		s.raw[0].len = sizeof(garbage);
	}
	if (c->raw_twice) {
		s.raw[0].oid = s.raw[1].oid = "subjectAltName";
		s.raw[0].der = s.raw[1].der = san_der;
		s.raw[0].len = s.raw[1].len = sizeof(san_der);
	}
	x = tu_cert(&s);
	EVP_PKEY_free(key);
	return x;
}

static void rule_table(void **state)
{
	p11s_validate_opts opts;

	(void)state;
	p11s_validate_opts_init(&opts);
	opts.at = tu_time(AT);
	for (size_t i = 0; i < sizeof(rule_cases) / sizeof(rule_cases[0]); i++) {
		const struct rule_case *c = &rule_cases[i];
		X509 *x = make_cert(c);
		p11s_verdict *v = NULL;
		char got[7];
		const char *msg = NULL;

		assert_int_equal(p11s_validate(x, NULL, &opts, &v, NULL), P11S_OK);
		results(v, got);
		if (strcmp(got, c->expect) != 0 || p11s_verdict_accepted(v) != c->accepted ||
		    p11s_verdict_usable_for_outgoing(v) != c->usable ||
		    p11s_verdict_can_sign(v) != c->can_sign ||
		    p11s_verdict_can_encrypt(v) != c->can_encrypt) {
			print_error("case '%s': rules %s (want %s), accepted %d/%d, usable %d/%d, "
			            "sign %d/%d, encrypt %d/%d\n",
			            c->name, got, c->expect, p11s_verdict_accepted(v), c->accepted,
			            p11s_verdict_usable_for_outgoing(v), c->usable,
			            p11s_verdict_can_sign(v), c->can_sign,
			            p11s_verdict_can_encrypt(v), c->can_encrypt);
			for (size_t j = 0; j < p11s_verdict_check_count(v); j++)
				print_error("  %s %s: %s\n",
				            p11s_check_result_name(p11s_verdict_check_result(v, j)),
				            p11s_verdict_check_rule(v, j),
				            p11s_verdict_check_message(v, j));
			fail();
		}
		/* Every rule is reported, with a message, whatever the outcome. */
		assert_int_equal(p11s_verdict_check_count(v), 6);
		for (size_t j = 0; j < 6; j++)
			assert_true(strlen(p11s_verdict_check_message(v, j)) > 0);
		if (c->msg_rule != NULL) {
			p11s_verdict_rule(v, c->msg_rule, &msg);
			if (msg == NULL || strstr(msg, c->msg_phrase) == NULL) {
				print_error("case '%s': %s says '%s', want '%s'\n", c->name,
				            c->msg_rule, msg ? msg : "(null)", c->msg_phrase);
				fail();
			}
		}
		if (c->warning != NULL && !has_warning(v, c->warning)) {
			print_error("case '%s': no warning '%s' among %zu\n", c->name, c->warning,
			            p11s_verdict_warning_count(v));
			fail();
		}
		if (c->warning == NULL && strcmp(c->name, "keyEncipherment on EC") != 0 &&
		    p11s_verdict_warning_count(v) != 0) {
			print_error("case '%s': unexpected warning '%s'\n", c->name,
			            p11s_verdict_warning(v, 0));
			fail();
		}
		/* Can-not reasons exist exactly when the answer is no. */
		assert_int_equal(p11s_verdict_cannot_sign_reason(v) == NULL, c->can_sign);
		assert_int_equal(p11s_verdict_cannot_encrypt_reason(v) == NULL, c->can_encrypt);
		assert_int_equal(p11s_verdict_is_ca(v), c->ca == 1);
		p11s_verdict_free(v);
		X509_free(x);
	}
}

/* Validity is not a deciding rule; the others are. */
static void validity_does_not_decide(void **state)
{
	const struct rule_case *c = &rule_cases[0];
	X509 *x = make_cert(c);
	p11s_verdict *v;

	(void)state;
	assert_int_equal(p11s_validate(x, NULL, NULL, &v, NULL), P11S_OK);
	for (size_t i = 0; i < p11s_verdict_check_count(v); i++)
		assert_int_equal(p11s_verdict_check_decides(v, i),
		                 strcmp(p11s_verdict_check_rule(v, i), P11S_RULE_VALIDITY) != 0);
	assert_string_equal(p11s_check_result_name(P11S_CHECK_FAIL), "fail");
	assert_int_equal(p11s_verdict_rule(v, "no-such-rule", NULL), P11S_CHECK_SKIP);
	p11s_verdict_free(v);
	X509_free(x);
}

/* --warn-days: the boundary and 0 (never). */
static void warn_days(void **state)
{
	EVP_PKEY *k = tu_key("rsa:2048");
	X509 *x = tu_cert(&(tu_cert_spec){.key = k,
	                                  .san = GOOD_SAN,
	                                  .ku = GOOD_KU,
	                                  .not_before = tu_time("2026-01-01"),
	                                  .not_after = tu_time("2026-06-21T12:00:00Z")});
	p11s_validate_opts opts;
	p11s_verdict *v;

	(void)state;
	p11s_validate_opts_init(&opts);
	opts.at = tu_time(AT); /* 20 days before notAfter */
	opts.warn_days = 19;
	assert_int_equal(p11s_validate(x, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_warning_count(v), 0);
	p11s_verdict_free(v);
	opts.warn_days = 20;
	assert_int_equal(p11s_validate(x, NULL, &opts, &v, NULL), P11S_OK);
	assert_true(has_warning(v, "expires in 20 days"));
	p11s_verdict_free(v);
	opts.warn_days = 0;
	assert_int_equal(p11s_validate(x, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_warning_count(v), 0);
	p11s_verdict_free(v);
	X509_free(x);
	EVP_PKEY_free(k);
}

/* ------------------------------------------------------------- key facts */

struct key_case {
	const char *name;
	const char *cert_key; /* NULL: rsa:2048 */
	const char *ku;
	p11s_key_facts facts;
	const char *expect_keychecks; /* present, match, hardware-bound, flags */
	const char *expect_rules;
	int accepted, can_sign, can_encrypt;
	const char *phrase; /* in some key check message */
};

#define TOKEN_RSA                                                                                \
	{                                                                                        \
		.present = 1, .matches = 1, .alg = P11S_ALG_RSA, .alg_name = "RSA",              \
		.sensitive = 1, .extractable = 0, .can_sign = 1, .can_decrypt = 1,               \
		.can_unwrap = 1, .can_derive = 0, .uri = "pkcs11:token=t;object=k;type=private", \
		.on_token = 1                                                                    \
	}

static const struct key_case key_cases[] = {
    {"good token key", NULL, GOOD_KU, TOKEN_RSA, "PPPP", "PPPPPP", 1, 1, 1, "pkcs11:token=t"},
    {"no key on the token",
     NULL,
     GOOD_KU,
     {.present = 0,
      .matches = -1,
      .sensitive = -1,
      .extractable = -1,
      .on_token = 1,
      .absent_note = "no private key has this CKA_ID"},
     "FSSS",
     "PPPPSP",
     1,
     0,
     0,
     "no private key has this CKA_ID"},
    {"CKA_ID points to a different key",
     NULL,
     GOOD_KU,
     {.present = 1,
      .matches = 0,
      .alg = P11S_ALG_RSA,
      .sensitive = 1,
      .extractable = 0,
      .can_sign = 1,
      .can_decrypt = 1,
      .on_token = 1},
     "PFPP",
     "PPPPSP",
     1,
     0,
     0,
     "different key"},
    {"extractable key",
     NULL,
     GOOD_KU,
     {.present = 1,
      .matches = 1,
      .alg = P11S_ALG_RSA,
      .sensitive = 1,
      .extractable = 1,
      .can_sign = 1,
      .can_decrypt = 1,
      .on_token = 1},
     "PPFP",
     "PPPPPP",
     1,
     1,
     1,
     "CKA_EXTRACTABLE is true"},
    {"not sensitive",
     NULL,
     GOOD_KU,
     {.present = 1,
      .matches = 1,
      .alg = P11S_ALG_RSA,
      .sensitive = 0,
      .extractable = 0,
      .can_sign = 1,
      .can_decrypt = 1,
      .on_token = 1},
     "PPFP",
     "PPPPPP",
     1,
     1,
     1,
     "CKA_SENSITIVE is false"},
    {"no CKA_SIGN",
     NULL,
     GOOD_KU,
     {.present = 1,
      .matches = 1,
      .alg = P11S_ALG_RSA,
      .sensitive = 1,
      .extractable = 0,
      .can_sign = 0,
      .can_decrypt = 1,
      .on_token = 1},
     "PPPF",
     "PPPPPP",
     1,
     0,
     1,
     "lacks CKA_SIGN"},
    {"RSA without decrypt or unwrap",
     NULL,
     GOOD_KU,
     {.present = 1,
      .matches = 1,
      .alg = P11S_ALG_RSA,
      .sensitive = 1,
      .extractable = 0,
      .can_sign = 1,
      .can_decrypt = 0,
      .can_unwrap = 0,
      .on_token = 1},
     "PPPF",
     "PPPPPP",
     1,
     1,
     0,
     "CKA_DECRYPT and CKA_UNWRAP"},
    {"RSA with unwrap only",
     NULL,
     GOOD_KU,
     {.present = 1,
      .matches = 1,
      .alg = P11S_ALG_RSA,
      .sensitive = 1,
      .extractable = 0,
      .can_sign = 1,
      .can_decrypt = 0,
      .can_unwrap = 1,
      .on_token = 1},
     "PPPP",
     "PPPPPP",
     1,
     1,
     1,
     NULL},
    {"EC without derive",
     "ec:P-256",
     EC_KU,
     {.present = 1,
      .matches = 1,
      .alg = P11S_ALG_EC,
      .sensitive = 1,
      .extractable = 0,
      .can_sign = 1,
      .can_derive = 0,
      .on_token = 1},
     "PPPF",
     "PPPPPP",
     1,
     1,
     0,
     "lacks CKA_DERIVE"},
    {"EC with derive",
     "ec:P-256",
     EC_KU,
     {.present = 1,
      .matches = 1,
      .alg = P11S_ALG_EC,
      .sensitive = 1,
      .extractable = 0,
      .can_sign = 1,
      .can_derive = 1,
      .on_token = 1},
     "PPPP",
     "PPPPPP",
     1,
     1,
     1,
     "CKA_DERIVE"},
    {"private key Ed25519",
     NULL,
     GOOD_KU,
     {.present = 1,
      .matches = -1,
      .alg = P11S_ALG_OTHER,
      .alg_name = "EC_EDWARDS",
      .sensitive = 1,
      .extractable = 0,
      .can_sign = 1,
      .can_decrypt = 1,
      .on_token = 1},
     "PSPP",
     "PPPPFP",
     0,
     0,
     0,
     "no public key to compare"},
    {"flags unknown",
     NULL,
     GOOD_KU,
     {.present = 1,
      .matches = 1,
      .alg = P11S_ALG_RSA,
      .sensitive = -1,
      .extractable = -1,
      .can_sign = -1,
      .can_decrypt = -1,
      .can_unwrap = -1,
      .can_derive = -1,
      .on_token = 1},
     "PPSP",
     "PPPPPP",
     1,
     1,
     1,
     "did not report"},
};

/* A CA certificate needs no private key: key checks skip, and it is never for mail. */
static void ca_key_checks(void **state)
{
	p11s_validate_opts opts;
	p11s_key_facts none = {.present = 0,
	                       .matches = -1,
	                       .sensitive = -1,
	                       .extractable = -1,
	                       .on_token = 1,
	                       .absent_note = "no private key has this CKA_ID"};
	p11s_verdict *v;

	(void)state;
	p11s_validate_opts_init(&opts);
	opts.at = tu_time(AT);
	assert_int_equal(p11s_validate(ca_cert, &none, &opts, &v, NULL), P11S_OK);
	assert_true(p11s_verdict_accepted(v));
	assert_true(p11s_verdict_is_ca(v));
	assert_false(p11s_verdict_usable_for_outgoing(v));
	assert_false(p11s_verdict_can_sign(v));
	assert_false(p11s_verdict_can_encrypt(v));
	assert_int_equal(p11s_verdict_key_check_count(v), 4);
	for (size_t j = 0; j < 4; j++) {
		assert_int_equal(p11s_verdict_key_check_result(v, j), P11S_CHECK_SKIP);
		assert_non_null(strstr(p11s_verdict_key_check_message(v, j), "CA certificate"));
	}
	p11s_verdict_free(v);
}

static void key_table(void **state)
{
	p11s_validate_opts opts;

	(void)state;
	p11s_validate_opts_init(&opts);
	opts.at = tu_time(AT);
	for (size_t i = 0; i < sizeof(key_cases) / sizeof(key_cases[0]); i++) {
		const struct key_case *c = &key_cases[i];
		EVP_PKEY *k = tu_key(c->cert_key ? c->cert_key : "rsa:2048");
		X509 *x = tu_cert(&(tu_cert_spec){.key = k,
		                                  .san = GOOD_SAN,
		                                  .ku = c->ku,
		                                  .eku = GOOD_EKU,
		                                  .not_before = tu_time(NOT_BEFORE),
		                                  .not_after = tu_time(NOT_AFTER)});
		p11s_verdict *v;
		char got[7], keys[5] = "";
		int found = c->phrase == NULL;

		assert_int_equal(p11s_validate(x, &c->facts, &opts, &v, NULL), P11S_OK);
		results(v, got);
		assert_true(p11s_verdict_key_checked(v));
		assert_int_equal(p11s_verdict_key_check_count(v), 4);
		for (size_t j = 0; j < 4; j++) {
			keys[j] = letter(p11s_verdict_key_check_result(v, j));
			if (c->phrase && strstr(p11s_verdict_key_check_message(v, j), c->phrase))
				found = 1;
		}
		keys[4] = '\0';
		if (strcmp(keys, c->expect_keychecks) != 0 || strcmp(got, c->expect_rules) != 0 ||
		    p11s_verdict_accepted(v) != c->accepted ||
		    p11s_verdict_can_sign(v) != c->can_sign ||
		    p11s_verdict_can_encrypt(v) != c->can_encrypt || !found) {
			print_error(
			    "case '%s': key checks %s (want %s), rules %s (want %s), accepted "
			    "%d, sign %d, encrypt %d, phrase %s\n",
			    c->name, keys, c->expect_keychecks, got, c->expect_rules,
			    p11s_verdict_accepted(v), p11s_verdict_can_sign(v),
			    p11s_verdict_can_encrypt(v), found ? "found" : "missing");
			for (size_t j = 0; j < 4; j++)
				print_error("  %s: %s\n", p11s_verdict_key_check_id(v, j),
				            p11s_verdict_key_check_message(v, j));
			fail();
		}
		assert_string_equal(p11s_verdict_key_check_id(v, 0), P11S_KEYCHECK_PRESENT);
		assert_string_equal(p11s_verdict_key_check_id(v, 3), P11S_KEYCHECK_FLAGS);
		p11s_verdict_free(v);
		X509_free(x);
		EVP_PKEY_free(k);
	}
}

/* Facts from a software key: matches its certificate, and not another. */
static void key_facts_from_pkey(void **state)
{
	EVP_PKEY *k = tu_key("ec:P-256"), *other = tu_key("ec:P-256#2");
	X509 *x = tu_cert(&(tu_cert_spec){.key = k, .san = GOOD_SAN, .ku = EC_KU});
	p11s_key_facts kf;
	p11s_verdict *v;

	(void)state;
	p11s_key_facts_from_pkey(&kf, k, x);
	assert_int_equal(kf.present, 1);
	assert_int_equal(kf.matches, 1);
	assert_int_equal(kf.alg, P11S_ALG_EC);
	assert_int_equal(kf.on_token, 0);
	assert_int_equal(p11s_validate(x, &kf, NULL, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_rule(v, P11S_RULE_PRIVATE_KEY_ALGORITHM, NULL),
	                 P11S_CHECK_PASS);
	assert_int_equal(p11s_verdict_key_check_result(v, 2), P11S_CHECK_FAIL); /* software key */
	assert_int_equal(p11s_verdict_key_check_result(v, 3), P11S_CHECK_SKIP);
	assert_true(p11s_verdict_can_sign(v));
	p11s_verdict_free(v);

	p11s_key_facts_from_pkey(&kf, other, x);
	assert_int_equal(kf.matches, 0);
	p11s_key_facts_from_pkey(&kf, NULL, x);
	assert_int_equal(kf.present, 0);
	X509_free(x);
	EVP_PKEY_free(k);
	EVP_PKEY_free(other);
}

/* ----------------------------------------------------------------- chain */

static void chain_cases(void **state)
{
	EVP_PKEY *k = tu_key("rsa:2048");
	EVP_PKEY *rogue_key = tu_key("ec:P-256#rogue");
	X509 *ee = tu_cert(&(tu_cert_spec){.key = k,
	                                   .san = GOOD_SAN,
	                                   .ku = GOOD_KU,
	                                   .issuer = ca_cert,
	                                   .issuer_key = ca_key,
	                                   .not_before = tu_time(NOT_BEFORE),
	                                   .not_after = tu_time(NOT_AFTER)});
	/* Same name as the CA, different key: must not be taken for it. */
	X509 *rogue = tu_cert(&(tu_cert_spec){.key = rogue_key, .cn = "Test CA", .ca = 1});
	X509 *self = tu_cert(&(tu_cert_spec){.key = k, .san = GOOD_SAN, .ku = GOOD_KU});
	STACK_OF(X509) *anchors = sk_X509_new_null();
	p11s_validate_opts opts;
	p11s_verdict *v;
	const char *msg;

	(void)state;
	p11s_validate_opts_init(&opts);
	opts.at = tu_time(AT);

	/* No anchors: distrust by default. */
	assert_int_equal(p11s_validate(ee, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_chain(v, &msg), P11S_CHECK_SKIP);
	assert_non_null(strstr(msg, "no trust anchors"));
	p11s_verdict_free(v);

	/* The issuing CA as anchor. */
	opts.anchors = anchors;
	sk_X509_push(anchors, ca_cert);
	assert_int_equal(p11s_validate(ee, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_chain(v, &msg), P11S_CHECK_PASS);
	assert_int_equal(p11s_verdict_chain_length(v), 2);
	assert_string_equal(p11s_verdict_chain_subject(v, 1), "CN=Test CA");
	p11s_verdict_free(v);

	/* At a time the CA did not cover, the chain fails and says why. */
	opts.at = tu_time("2045-01-01");
	assert_int_equal(p11s_validate(ee, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_chain(v, &msg), P11S_CHECK_FAIL);
	assert_non_null(strstr(msg, "expired"));
	p11s_verdict_free(v);
	opts.at = tu_time(AT);

	/* A look-alike anchor is not the issuer. */
	(void)sk_X509_pop(anchors);
	sk_X509_push(anchors, rogue);
	assert_int_equal(p11s_validate(ee, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_chain(v, &msg), P11S_CHECK_FAIL);
	assert_non_null(strstr(msg, "CN=Test"));
	p11s_verdict_free(v);

	/* The CA as an intermediate only: still no anchor. */
	opts.untrusted = sk_X509_new_null();
	sk_X509_push(opts.untrusted, ca_cert);
	assert_int_equal(p11s_validate(ee, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_chain(v, NULL), P11S_CHECK_FAIL);
	p11s_verdict_free(v);
	sk_X509_free(opts.untrusted);
	opts.untrusted = NULL;

	/* The end-entity itself trusted: a partial chain is enough. */
	(void)sk_X509_pop(anchors);
	sk_X509_push(anchors, ee);
	assert_int_equal(p11s_validate(ee, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_chain(v, &msg), P11S_CHECK_PASS);
	assert_int_equal(p11s_verdict_chain_length(v), 1);
	p11s_verdict_free(v);

	/* ... but trusting one certificate trusts no other. */
	assert_int_equal(p11s_validate(self, NULL, &opts, &v, NULL), P11S_OK);
	assert_int_equal(p11s_verdict_chain(v, NULL), P11S_CHECK_FAIL);
	p11s_verdict_free(v);

	sk_X509_free(anchors);
	X509_free(ee);
	X509_free(rogue);
	X509_free(self);
	EVP_PKEY_free(k);
	EVP_PKEY_free(rogue_key);
}

/* ------------------------------------------------------------ robustness */

/*
 * Every single-byte corruption and truncation of a good certificate that
 * OpenSSL still parses goes through the engine (with anchors, so the chain
 * code runs too).  Under ASan/UBSan this is the malformed-input test.
 */
static void corrupted_certificates(void **state)
{
	EVP_PKEY *k = tu_key("ec:P-256");
	X509 *good = tu_cert(&(tu_cert_spec){.key = k,
	                                     .subject_email = "alice@example.org",
	                                     .san = "email:alice@example.org,DNS:x.example",
	                                     .ku = EC_KU,
	                                     .eku = "emailProtection,serverAuth",
	                                     .ca = -1,
	                                     .issuer = ca_cert,
	                                     .issuer_key = ca_key});
	STACK_OF(X509) *anchors = sk_X509_new_null();
	static const unsigned char flips[] = {0x00, 0xff, 0x80, 0x01};
	p11s_validate_opts opts;
	p11s_key_facts kf;
	size_t len, parsed = 0;
	unsigned char *der = tu_der(good, &len), *copy = malloc(len);

	(void)state;
	p11s_validate_opts_init(&opts);
	sk_X509_push(anchors, ca_cert);
	opts.anchors = anchors;
	p11s_key_facts_init(&kf);
	kf.present = 1;
	for (size_t pos = 0; pos < len; pos++) {
		for (size_t f = 0; f <= sizeof(flips); f++) {
			const unsigned char *p = copy;
			size_t n = len;
			X509 *x;
			p11s_verdict *v = NULL;

			memcpy(copy, der, len);
			if (f < sizeof(flips))
				copy[pos] ^= flips[f] ? flips[f] : 0x55;
			else
				n = pos; /* truncated */
			x = d2i_X509(NULL, &p, (long)n);
			if (x == NULL)
				continue;
			parsed++;
			assert_int_equal(p11s_validate(x, (pos & 1) ? &kf : NULL, &opts, &v, NULL),
			                 P11S_OK);
			assert_int_equal(p11s_verdict_check_count(v), 6);
			p11s_verdict_free(v);
			X509_free(x);
		}
	}
	/* The corruption must have reached the engine, not only the parser. */
	assert_true(parsed > len);
	free(copy);
	OPENSSL_free(der);
	sk_X509_free(anchors);
	X509_free(good);
	EVP_PKEY_free(k);
}

static void bad_arguments(void **state)
{
	p11s_verdict *v = (p11s_verdict *)1;
	p11s_error *err = p11s_error_new();

	(void)state;
	assert_int_equal(p11s_validate(NULL, NULL, NULL, &v, err), P11S_E_USAGE);
	assert_null(v);
	p11s_verdict_free(NULL);
	assert_int_equal(p11s_verdict_accepted(NULL), 0);
	assert_null(p11s_verdict_check_rule(NULL, 0));
	p11s_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(rule_table),    cmocka_unit_test(validity_does_not_decide),
	    cmocka_unit_test(warn_days),     cmocka_unit_test(key_table),
	    cmocka_unit_test(ca_key_checks), cmocka_unit_test(key_facts_from_pkey),
	    cmocka_unit_test(chain_cases),   cmocka_unit_test(corrupted_certificates),
	    cmocka_unit_test(bad_arguments),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
