/*
 * p11s_verify() on messages signed in-process by OpenSSL with software keys:
 * good, bad, untrusted, partial chains, expired signers, sender mismatch,
 * missing certificates, and input that is not a signed message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "common.h"
#include "report.h"
#include "p11smime/verify.h"
#include "testutil.h"

#define ENTITY "Content-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\nsee you at 5.\r\n"
#define DAY    86400

static EVP_PKEY *ca_key, *int_key, *other_ca_key;
static X509 *ca, *intermediate, *other_ca;
static time_t now;

static X509 *leaf(EVP_PKEY *key, const char *email, X509 *issuer, EVP_PKEY *issuer_key, time_t nb,
                  time_t na)
{
	char san[128];

	snprintf(san, sizeof(san), "email:%s", email);
	return tu_cert(&(tu_cert_spec){.key = key,
	                               .cn = email,
	                               .san = san,
	                               .ku = "critical,digitalSignature,keyEncipherment",
	                               .eku = "emailProtection",
	                               .ca = -1,
	                               .not_before = nb,
	                               .not_after = na,
	                               .issuer = issuer,
	                               .issuer_key = issuer_key});
}

static int setup(void **state)
{
	(void)state;
	now = time(NULL);
	ca_key = tu_key("ec:P-256#ca");
	ca = tu_cert(&(tu_cert_spec){.key = ca_key,
	                             .cn = "Verify Test Root",
	                             .ca = 1,
	                             .ku = "critical,keyCertSign,cRLSign",
	                             .not_before = now - 3650 * DAY,
	                             .not_after = now + 3650 * DAY});
	int_key = tu_key("ec:P-256#int");
	intermediate = tu_cert(&(tu_cert_spec){.key = int_key,
	                                       .cn = "Verify Test Intermediate",
	                                       .ca = 1,
	                                       .ku = "critical,keyCertSign,cRLSign",
	                                       .not_before = now - 3000 * DAY,
	                                       .not_after = now + 3000 * DAY,
	                                       .issuer = ca,
	                                       .issuer_key = ca_key});
	other_ca_key = tu_key("ec:P-256#other");
	other_ca = tu_cert(&(tu_cert_spec){.key = other_ca_key,
	                                   .cn = "Some Other Root",
	                                   .ca = 1,
	                                   .ku = "critical,keyCertSign,cRLSign"});
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	X509_free(ca);
	X509_free(intermediate);
	X509_free(other_ca);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(int_key);
	EVP_PKEY_free(other_ca_key);
	return 0;
}

struct sign_spec {
	X509 *cert;
	EVP_PKEY *key;
	STACK_OF(X509) * extra; /* more certificates to carry */
	const char *from;       /* NULL: a bare entity */
	const char *entity;     /* default ENTITY */
	int opaque;
	int nocerts; /* leave the signer's certificate out */
	int pss;
	time_t signing_time; /* 0: the current time */
	X509 *cert2;         /* a second signer */
	EVP_PKEY *key2;
	int may_fail; /* return NULL when OpenSSL cannot sign */
};

/* A signed message as OpenSSL writes it; caller frees. */
static char *sign_message(const struct sign_spec *s)
{
	const char *entity = s->entity ? s->entity : ENTITY;
	BIO *data = BIO_new_mem_buf(entity, -1), *out = BIO_new(BIO_s_mem());
	int flags = CMS_PARTIAL | CMS_STREAM | (s->opaque ? 0 : CMS_DETACHED);
	CMS_ContentInfo *cms;
	CMS_SignerInfo *si;
	char *p, *msg;
	long len;

	assert_non_null(data);
	assert_non_null(out);
	cms = CMS_sign(NULL, NULL, s->extra, NULL, flags);
	assert_non_null(cms);
	/* Ed25519 has no default digest for CMS in OpenSSL 3.0: SHA-512 (RFC 8419). */
	si = CMS_add1_signer(cms, s->cert, s->key,
	                     EVP_PKEY_is_a(s->key, "ED25519") ? EVP_sha512() : NULL,
	                     flags | (s->nocerts ? CMS_NOCERTS : 0) | (s->pss ? CMS_KEY_PARAM : 0));
	assert_non_null(si);
	if (s->pss)
		assert_true(EVP_PKEY_CTX_set_rsa_padding(CMS_SignerInfo_get0_pkey_ctx(si),
		                                         RSA_PKCS1_PSS_PADDING) > 0);
	if (s->signing_time != 0) {
		ASN1_TIME *t = ASN1_TIME_adj(NULL, s->signing_time, 0, 0);

		assert_non_null(t);
		assert_true(CMS_signed_add1_attr_by_NID(si, NID_pkcs9_signingTime, t->type, t, -1));
		ASN1_TIME_free(t);
	}
	if (s->cert2 != NULL)
		assert_non_null(CMS_add1_signer(cms, s->cert2, s->key2, NULL, flags));
	if (s->from != NULL)
		BIO_printf(out, "From: Alice <%s>\r\nTo: bob@example.org\r\nSubject: lunch\r\n",
		           s->from);
	if (!SMIME_write_CMS(out, cms, data, flags)) {
		assert_true(s->may_fail);
		ERR_clear_error();
		CMS_ContentInfo_free(cms);
		BIO_free(data);
		BIO_free(out);
		return NULL;
	}
	len = BIO_get_mem_data(out, &p);
	msg = malloc((size_t)len + 1);
	assert_non_null(msg);
	memcpy(msg, p, (size_t)len);
	msg[len] = '\0';
	CMS_ContentInfo_free(cms);
	BIO_free(data);
	BIO_free(out);
	return msg;
}

/* Verify @p msg trusting @p anchors (NULL-terminated); the content goes to *content. */
/* 1: run_verify() asks for the whole message (outer headers), not the entity only. */
static int whole_message;

static p11s_rc run_verify(const char *msg, X509 **anchors, time_t at, p11s_verify_report **r,
                          char **content)
{
	STACK_OF(X509) *trust = sk_X509_new_null();
	BIO *in = BIO_new_mem_buf(msg, -1), *out = BIO_new(BIO_s_mem());
	p11s_verify_opts o = {.trust = trust, .at = at, .entity_only = !whole_message};
	p11s_error *err = p11s_error_new();
	p11s_rc rc;
	char *p;
	long len;

	for (size_t i = 0; anchors && anchors[i]; i++)
		sk_X509_push(trust, anchors[i]);
	rc = p11s_verify(in, out, &o, r, err);
	if (rc != P11S_OK) {
		print_message("p11s_verify: %s\n", p11s_error_message(err));
		/* Words, never OpenSSL's error-queue codes. */
		assert_null(strstr(p11s_error_message(err), "error:"));
	} else
		assert_non_null(*r);
	if (content != NULL) {
		len = BIO_get_mem_data(out, &p);
		*content = len > 0 ? strndup(p, (size_t)len) : strdup("");
	}
	p11s_error_free(err);
	sk_X509_free(trust);
	BIO_free(in);
	BIO_free(out);
	return rc;
}

static void good_detached_rsa(void **state)
{
	EVP_PKEY *key = tu_key("rsa:2048");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	char *msg = sign_message(
	    &(struct sign_spec){.cert = cert, .key = key, .from = "alice@example.org"});
	p11s_verify_report *r = NULL;
	char *content = NULL;
	X509 *anchors[] = {ca, NULL};
	char *json;

	(void)state;
	assert_int_equal(run_verify(msg, anchors, 0, &r, &content), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	assert_string_equal(p11s_verify_report_format(r), "detached");
	assert_int_equal(p11s_verify_report_signer_count(r), 1);
	assert_int_equal(p11s_verify_signer_verdict(r, 0), P11S_SIG_GOOD);
	assert_null(p11s_verify_signer_reason(r, 0));
	assert_string_equal(p11s_verify_signer_signature_alg(r, 0), "RSA PKCS#1 v1.5");
	assert_string_equal(p11s_verify_signer_digest(r, 0), "SHA256");
	assert_int_equal(p11s_verify_signer_email_count(r, 0), 1);
	assert_string_equal(p11s_verify_signer_email(r, 0, 0), "alice@example.org");
	assert_int_equal(p11s_verify_report_sender_ok(r), 1);
	assert_string_equal(p11s_verify_report_from(r, 0), "alice@example.org");
	assert_int_equal(p11s_verify_signer_chain_count(r, 0), 2);
	assert_non_null(strstr(p11s_verify_signer_chain_subject(r, 0, 1), "Verify Test Root"));
	assert_non_null(p11s_verify_signer_rules(r, 0));
	assert_true(p11s_verdict_accepted(p11s_verify_signer_rules(r, 0)));
	assert_int_equal(p11s_verify_signer_signing_time(r, 0, NULL), 1);
	/* The signed content is the entity, canonical, byte for byte. */
	assert_string_equal(content, ENTITY);
	json = report_verify_json(r);
	assert_non_null(strstr(json, "\"verdict\": \"good\""));
	assert_non_null(strstr(json, "\"sender_matches\": true"));
	free(json);
	p11s_verify_report_free(r);
	free(content);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void good_opaque_ec_via_intermediate(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-384");
	X509 *cert =
	    leaf(key, "carol@example.org", intermediate, int_key, now - DAY, now + 365 * DAY);
	STACK_OF(X509) *extra = sk_X509_new_null();
	char *msg, *content = NULL;
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {ca, NULL};

	(void)state;
	sk_X509_push(extra, intermediate);
	msg = sign_message(&(struct sign_spec){
	    .cert = cert, .key = key, .extra = extra, .from = "carol@example.org", .opaque = 1});
	assert_non_null(strstr(msg, "smime-type=signed-data"));
	assert_int_equal(run_verify(msg, anchors, 0, &r, &content), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	assert_string_equal(p11s_verify_report_format(r), "opaque");
	assert_string_equal(p11s_verify_signer_signature_alg(r, 0), "ECDSA");
	assert_int_equal(p11s_verify_signer_chain_count(r, 0), 3);
	assert_string_equal(content, ENTITY);
	p11s_verify_report_free(r);
	free(content);

	/* Without the intermediate in the message there is no chain: untrusted. */
	free(msg);
	msg = sign_message(&(struct sign_spec){.cert = cert, .key = key, .opaque = 1});
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_UNTRUSTED);
	assert_int_equal(p11s_verify_signer_verdict(r, 0), P11S_SIG_UNTRUSTED);
	p11s_verify_report_free(r);
	sk_X509_free(extra);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void tampered_is_bad(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	char *msg = sign_message(
	    &(struct sign_spec){.cert = cert, .key = key, .from = "alice@example.org"});
	char *p = strstr(msg, "see you at 5.");
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {ca, NULL};

	(void)state;
	/* Control: the untouched message is good. */
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	p11s_verify_report_free(r);
	assert_non_null(p);
	p[11] = '6';
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_BAD_SIGNATURE);
	assert_int_equal(p11s_verify_signer_verdict(r, 0), P11S_SIG_BAD_SIGNATURE);
	assert_non_null(strstr(p11s_verify_signer_reason(r, 0), "content was altered"));
	assert_non_null(strstr(p11s_verify_report_summary(r), "BAD SIGNATURE"));
	p11s_verify_report_free(r);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

/* A complete chain in the message is not trust: only --trust is. */
static void complete_chain_but_untrusted(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	STACK_OF(X509) *extra = sk_X509_new_null();
	char *msg;
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {other_ca, NULL};

	(void)state;
	sk_X509_push(extra, ca);
	msg = sign_message(&(struct sign_spec){
	    .cert = cert, .key = key, .extra = extra, .from = "alice@example.org"});
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_UNTRUSTED);
	assert_int_equal(p11s_verify_signer_verdict(r, 0), P11S_SIG_UNTRUSTED);
	assert_non_null(strstr(p11s_verify_signer_reason(r, 0), "--trust"));
	p11s_verify_report_free(r);
	/* Nothing trusted at all: the same. */
	assert_int_equal(run_verify(msg, NULL, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_UNTRUSTED);
	p11s_verify_report_free(r);
	/* The intermediate carried in the message is no anchor either. */
	free(msg);
	sk_X509_pop(extra);
	sk_X509_push(extra, intermediate);
	X509 *cert2 =
	    leaf(key, "alice@example.org", intermediate, int_key, now - DAY, now + 365 * DAY);
	msg = sign_message(&(struct sign_spec){.cert = cert2, .key = key, .extra = extra});
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_UNTRUSTED);
	p11s_verify_report_free(r);
	/* ... but an intermediate the user names is (partial chain). */
	X509 *anchors2[] = {intermediate, NULL};
	assert_int_equal(run_verify(msg, anchors2, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	p11s_verify_report_free(r);
	sk_X509_free(extra);
	free(msg);
	X509_free(cert);
	X509_free(cert2);
	EVP_PKEY_free(key);
}

/* An end-entity certificate given as trust is an anchor of its own. */
static void end_entity_as_anchor(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	char *msg = sign_message(
	    &(struct sign_spec){.cert = cert, .key = key, .from = "alice@example.org"});
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {cert, NULL};

	(void)state;
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	assert_int_equal(p11s_verify_signer_chain_count(r, 0), 1);
	p11s_verify_report_free(r);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

/* Old mail from a since-expired signer verifies, with the expiry stated. */
static void expired_signer(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - 800 * DAY, now - 100 * DAY);
	char *msg = sign_message(&(struct sign_spec){.cert = cert,
	                                             .key = key,
	                                             .from = "alice@example.org",
	                                             .signing_time = now - 400 * DAY});
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {ca, NULL};
	time_t st = 0, na = 0;
	char *json;

	(void)state;
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	assert_int_equal(p11s_verify_signer_signing_time(r, 0, &st), 1);
	assert_true(st > now - 400 * DAY - 2 && st < now - 400 * DAY + 2);
	assert_int_equal(p11s_verify_signer_valid_at_signing(r, 0), 1);
	assert_int_equal(p11s_verify_signer_valid_at(r, 0, &na), 0);
	assert_true(na < now);
	assert_non_null(strstr(p11s_verify_report_summary(r), "not valid at"));
	json = report_verify_json(r);
	assert_non_null(strstr(json, "\"valid_at\": false"));
	assert_non_null(strstr(json, "\"valid_at_signing_time\": true"));
	free(json);
	p11s_verify_report_free(r);
	free(msg);

	/* A signing time after the expiry: the chain fails at that time. */
	msg = sign_message(&(struct sign_spec){
	    .cert = cert, .key = key, .from = "alice@example.org", .signing_time = now - 50 * DAY});
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_UNTRUSTED);
	assert_non_null(strstr(p11s_verify_signer_reason(r, 0), "expired"));
	p11s_verify_report_free(r);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void sender_mismatch(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	char *msg =
	    sign_message(&(struct sign_spec){.cert = cert, .key = key, .from = "ceo@example.org"});
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {ca, NULL};

	(void)state;
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_SENDER_MISMATCH);
	assert_int_equal(p11s_verify_signer_verdict(r, 0), P11S_SIG_GOOD);
	assert_int_equal(p11s_verify_report_sender_ok(r), 0);
	assert_non_null(strstr(p11s_verify_report_summary(r), "NOT SIGNED BY ITS SENDER"));
	p11s_verify_report_free(r);
	free(msg);

	/* Case of the address does not matter. */
	msg = sign_message(
	    &(struct sign_spec){.cert = cert, .key = key, .from = "Alice@EXAMPLE.org"});
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	p11s_verify_report_free(r);
	free(msg);

	/* A bare entity has no From: nothing to compare, not a mismatch. */
	msg = sign_message(&(struct sign_spec){.cert = cert, .key = key});
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	assert_int_equal(p11s_verify_report_sender_ok(r), -1);
	p11s_verify_report_free(r);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void no_certificate(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	char *msg = sign_message(&(struct sign_spec){
	    .cert = cert, .key = key, .nocerts = 1, .from = "alice@example.org"});
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {ca, NULL};
	X509 *anchors2[] = {cert, NULL};

	(void)state;
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_UNTRUSTED);
	assert_int_equal(p11s_verify_signer_verdict(r, 0), P11S_SIG_NO_CERTIFICATE);
	assert_null(p11s_verify_signer_cert(r, 0));
	assert_non_null(strstr(p11s_verify_signer_reason(r, 0), "serial"));
	p11s_verify_report_free(r);
	/* The certificate given with --trust fills the gap. */
	assert_int_equal(run_verify(msg, anchors2, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	p11s_verify_report_free(r);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void pss_and_two_signers(void **state)
{
	EVP_PKEY *key = tu_key("rsa:2048");
	EVP_PKEY *key2 = tu_key("ec:P-256#2");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	X509 *cert2 =
	    leaf(key2, "mallory@example.org", other_ca, other_ca_key, now - DAY, now + 365 * DAY);
	char *msg = sign_message(
	    &(struct sign_spec){.cert = cert, .key = key, .pss = 1, .from = "alice@example.org"});
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {ca, NULL};

	(void)state;
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	assert_string_equal(p11s_verify_signer_signature_alg(r, 0), "RSA-PSS");
	p11s_verify_report_free(r);
	free(msg);

	/* Every signer must be good: one from an untrusted CA spoils it. */
	msg = sign_message(&(struct sign_spec){
	    .cert = cert, .key = key, .cert2 = cert2, .key2 = key2, .from = "alice@example.org"});
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_signer_count(r), 2);
	/* SignerInfos is a SET: DER may reorder it. */
	for (size_t i = 0; i < 2; i++)
		assert_int_equal(p11s_verify_signer_verdict(r, i),
		                 strcmp(p11s_verify_signer_email(r, i, 0), "alice@example.org") == 0
		                     ? P11S_SIG_GOOD
		                     : P11S_SIG_UNTRUSTED);
	assert_int_equal(p11s_verify_report_rc(r), P11S_E_UNTRUSTED);
	p11s_verify_report_free(r);
	free(msg);
	X509_free(cert);
	X509_free(cert2);
	EVP_PKEY_free(key);
	EVP_PKEY_free(key2);
}

static void ed25519_where_openssl_can(void **state)
{
	EVP_PKEY *key = tu_key("ed25519");
	X509 *cert = tu_cert(&(tu_cert_spec){.key = key,
	                                     .cn = "ed",
	                                     .san = "email:ed@example.org",
	                                     .ku = "critical,digitalSignature",
	                                     .issuer = ca,
	                                     .issuer_key = ca_key});
	char *msg = sign_message(
	    &(struct sign_spec){.cert = cert, .key = key, .from = "ed@example.org", .may_fail = 1});
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {ca, NULL};

	(void)state;
	if (msg == NULL) {
		/* OpenSSL 3.0 signs (and checks) no Ed25519 CMS; verify says "unsupported". */
		X509_free(cert);
		EVP_PKEY_free(key);
		skip();
	}
	assert_int_equal(run_verify(msg, anchors, 0, &r, NULL), P11S_OK);
	assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
	assert_string_equal(p11s_verify_signer_signature_alg(r, 0), "Ed25519");
	/* The rules reject Ed25519 for upload; verify reports it and still checks. */
	assert_false(p11s_verdict_accepted(p11s_verify_signer_rules(r, 0)));
	p11s_verify_report_free(r);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

/* The outer headers stay, Content-* become the signed entity's; LF as the message had. */
static void whole_message_keeps_headers(void **state)
{
	EVP_PKEY *key = tu_key("ec:P-256");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	char *msg, *lf, *content = NULL, *d;
	const char *s;
	p11s_verify_report *r = NULL;
	X509 *anchors[] = {ca, NULL};

	(void)state;
	msg = sign_message(
	    &(struct sign_spec){.cert = cert, .key = key, .from = "alice@example.org"});
	/* The same message with LF line ends, as a mail pipeline hands it over. */
	lf = calloc(1, strlen(msg) + 1);
	assert_non_null(lf);
	for (s = msg, d = lf; *s; s++)
		if (!(s[0] == '\r' && s[1] == '\n'))
			*d++ = *s;
	whole_message = 1;
	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(run_verify(pass ? lf : msg, anchors, 0, &r, &content), P11S_OK);
		assert_int_equal(p11s_verify_report_rc(r), P11S_OK);
		assert_non_null(strstr(content, "From: "));
		assert_non_null(strstr(content, "alice@example.org"));
		assert_non_null(strstr(content, "Content-Type: text/plain; charset=utf-8"));
		assert_null(strstr(content, "multipart/signed"));
		assert_null(strstr(content, "pkcs7"));
		/* CRLF input: the entity as signed; LF input: LF throughout. */
		if (pass == 0)
			assert_non_null(strstr(content, "\r\n\r\nHello Bob,\r\nsee you at 5.\r\n"));
		else
			assert_null(strchr(content, '\r'));
		p11s_verify_report_free(r);
		free(content);
	}
	whole_message = 0;
	free(lf);
	free(msg);
	X509_free(cert);
	EVP_PKEY_free(key);
}

static void not_signed_input(void **state)
{
	static const char *bad[] = {
	    "From: a@example.org\r\nSubject: plain\r\n\r\nhello\r\n",
	    "",
	    "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; "
	    "boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n--XX\r\n"
	    "Content-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: "
	    "base64\r\n\r\nAAAA\r\n--XX--\r\n",
	};
	X509 *anchors[] = {ca, NULL};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		p11s_verify_report *r = NULL;

		assert_int_equal(run_verify(bad[i], anchors, 0, &r, NULL), P11S_E_INPUT);
		assert_null(r);
	}

	/* An encrypted message: says to decrypt first. */
	EVP_PKEY *key = tu_key("rsa:2048");
	X509 *cert = leaf(key, "alice@example.org", ca, ca_key, now - DAY, now + 365 * DAY);
	STACK_OF(X509) *rcpts = sk_X509_new_null();
	BIO *data = BIO_new_mem_buf(ENTITY, -1), *out = BIO_new(BIO_s_mem());
	CMS_ContentInfo *cms;
	STACK_OF(X509) *trust = sk_X509_new_null();
	p11s_verify_opts o = {.trust = trust};
	p11s_error *err = p11s_error_new();
	p11s_verify_report *r = NULL;

	sk_X509_push(rcpts, cert);
	cms = CMS_encrypt(rcpts, data, EVP_aes_128_cbc(), 0);
	assert_non_null(cms);
	assert_true(SMIME_write_CMS(out, cms, NULL, 0));
	assert_int_equal(p11s_verify(out, NULL, &o, &r, err), P11S_E_INPUT);
	assert_non_null(strstr(p11s_error_message(err), "decrypt"));
	CMS_ContentInfo_free(cms);
	BIO_free(data);
	BIO_free(out);
	sk_X509_free(rcpts);
	sk_X509_free(trust);
	p11s_error_free(err);
	X509_free(cert);
	EVP_PKEY_free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(good_detached_rsa),
	    cmocka_unit_test(good_opaque_ec_via_intermediate),
	    cmocka_unit_test(tampered_is_bad),
	    cmocka_unit_test(complete_chain_but_untrusted),
	    cmocka_unit_test(end_entity_as_anchor),
	    cmocka_unit_test(expired_signer),
	    cmocka_unit_test(sender_mismatch),
	    cmocka_unit_test(no_certificate),
	    cmocka_unit_test(pss_and_two_signers),
	    cmocka_unit_test(ed25519_where_openssl_can),
	    cmocka_unit_test(not_signed_input),
	    cmocka_unit_test(whole_message_keeps_headers),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
