/*
 * p11s_decrypt_with_pkey() against messages OpenSSL encrypts in-process
 * (and a few built by hand), with software keys: every key-management and
 * content-cipher combination, every framing, and the bad inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "report.h"
#include "p11smime/decrypt.h"
#include "testutil.h"

static const char small_pt[] = "Content-Type: text/plain; charset=utf-8\r\n"
                               "\r\n"
                               "Hello from the unit tests.\r\n"
                               "Second line.\r\n";

typedef enum { KT_V15, KT_OAEP_SHA1, KT_OAEP_SHA256 } kt_t;
typedef enum { F_DER, F_DER_STREAM, F_PEM, F_SMIME, F_SMIME_CRLF } form_t;

struct enc_spec {
	const EVP_CIPHER *cipher;
	kt_t kt;
	const EVP_MD *kdf_md;   /* EC: X9.63 KDF hash; NULL: OpenSSL's default (SHA-1) */
	const EVP_CIPHER *wrap; /* EC: key wrap; NULL: by content key size */
	int keyid;              /* identify recipients by subject key identifier */
	form_t form;
};

static X509 *make_cert(EVP_PKEY *key, const char *cn, time_t nb, time_t na)
{
	int ec = EVP_PKEY_is_a(key, "EC");

	return tu_cert(&(tu_cert_spec){.key = key,
	                               .cn = cn,
	                               .san = "email:someone@example.org",
	                               .ku = ec ? "critical,digitalSignature,keyAgreement"
	                                        : "critical,digitalSignature,keyEncipherment",
	                               .eku = "emailProtection",
	                               .not_before = nb,
	                               .not_after = na});
}

/* Encrypt @p pt for @p n recipients as @p sp says; returns the bytes (OPENSSL_free). */
static unsigned char *encrypt_for(X509 **rcpts, size_t n, const struct enc_spec *sp, const void *pt,
                                  size_t ptlen, size_t *outlen)
{
	int flags = CMS_BINARY | CMS_PARTIAL | CMS_KEY_PARAM | (sp->keyid ? CMS_USE_KEYID : 0);
	BIO *in = BIO_new_mem_buf(pt, (int)ptlen), *out = BIO_new(BIO_s_mem());
	CMS_ContentInfo *cms = CMS_encrypt(NULL, NULL, sp->cipher, flags);
	CMS_RecipientInfo *ri;
	EVP_PKEY_CTX *pctx;
	EVP_CIPHER_CTX *wctx;
	unsigned char *res;
	char *data;
	long len;
	int ok;

	assert_non_null(cms);
	for (size_t i = 0; i < n; i++) {
		ri = CMS_add1_recipient_cert(cms, rcpts[i], flags);
		assert_non_null(ri);
		pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
		assert_non_null(pctx);
		if (CMS_RecipientInfo_type(ri) == CMS_RECIPINFO_TRANS && sp->kt != KT_V15) {
			assert_true(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) > 0);
			assert_true(EVP_PKEY_CTX_set_rsa_oaep_md(pctx, sp->kt == KT_OAEP_SHA256
			                                                   ? EVP_sha256()
			                                                   : EVP_sha1()) > 0);
		}
		if (CMS_RecipientInfo_type(ri) == CMS_RECIPINFO_AGREE) {
			if (sp->kdf_md != NULL)
				assert_true(EVP_PKEY_CTX_set_ecdh_kdf_md(pctx, sp->kdf_md) > 0);
			if (sp->wrap != NULL) {
				wctx = CMS_RecipientInfo_kari_get0_ctx(ri);
				assert_true(EVP_EncryptInit_ex(wctx, sp->wrap, NULL, NULL, NULL));
			}
		}
	}
	switch (sp->form) {
	case F_DER:
		ok = CMS_final(cms, in, NULL, flags) && i2d_CMS_bio(out, cms);
		break;
	case F_DER_STREAM:
		ok = i2d_CMS_bio_stream(out, cms, in, flags | CMS_STREAM);
		break;
	case F_PEM:
		ok = PEM_write_bio_CMS_stream(out, cms, in, flags | CMS_STREAM);
		break;
	case F_SMIME:
		ok = SMIME_write_CMS(out, cms, in, flags | CMS_STREAM);
		break;
	default:
		ok = SMIME_write_CMS(out, cms, in, flags | CMS_STREAM | CMS_CRLFEOL);
		break;
	}
	if (!ok)
		ERR_print_errors_fp(stderr);
	assert_true(ok);
	len = BIO_get_mem_data(out, &data);
	/* NUL-terminated too, for the text forms. */
	res = OPENSSL_malloc((size_t)len + 1);
	memcpy(res, data, (size_t)len);
	res[len] = '\0';
	*outlen = (size_t)len;
	BIO_free(in);
	BIO_free(out);
	CMS_ContentInfo_free(cms);
	return res;
}

static p11s_decrypt_inform inform_of(form_t f)
{
	return f == F_PEM                          ? P11S_INFORM_PEM
	       : (f == F_DER || f == F_DER_STREAM) ? P11S_INFORM_DER
	                                           : P11S_INFORM_SMIME;
}

/*
 * 1: decrypt() reads through a pipe, which cannot be read twice (the
 * AuthEnvelopedData code then spools instead of reading again).
 */
static int use_pipe;

/* Decrypt; *out (malloc'd, NUL-terminated) and *outlen get what was written. */
static p11s_rc decrypt(EVP_PKEY *k, X509 *c, const p11s_decrypt_opts *o, const void *msg,
                       size_t len, char **out, size_t *outlen, p11s_decrypt_report **rep,
                       p11s_error *err)
{
	BIO *in, *ob = BIO_new(BIO_s_mem());
	FILE *pipe = NULL;
	char *data, *path, *cmd;
	long n;
	p11s_rc rc;

	if (use_pipe) {
		path = len ? tu_write("pipe-input", msg, len) : tu_write("pipe-input", "", 0);
		cmd = tu_cat("cat '", path, "'", NULL);
		pipe = popen(cmd, "r");
		assert_non_null(pipe);
		in = BIO_new_fp(pipe, BIO_NOCLOSE);
		assert_true(BIO_tell(in) < 0);
		free(cmd);
		free(path);
	} else {
		in = BIO_new_mem_buf(msg, (int)len);
	}
	rc = p11s_decrypt_with_pkey(k, c, o, in, ob, rep, err);
	if (pipe != NULL)
		pclose(pipe);
	n = BIO_get_mem_data(ob, &data);
	if (out != NULL) {
		*out = malloc((size_t)n + 1);
		if (n > 0)
			memcpy(*out, data, (size_t)n);
		(*out)[n] = '\0';
	}
	if (outlen != NULL)
		*outlen = (size_t)n;
	BIO_free(in);
	BIO_free(ob);
	return rc;
}

/* Round trip: decrypted content equals @p pt byte for byte (raw CMS forms). */
static void round_trip(EVP_PKEY *k, X509 *c, X509 **rcpts, size_t n, const struct enc_spec *sp,
                       const void *pt, size_t ptlen, const char *want_cipher, const char *want_kea)
{
	p11s_decrypt_opts o = {.inform = inform_of(sp->form)};
	p11s_decrypt_report *rep = NULL;
	p11s_error *err = p11s_error_new();
	unsigned char *msg;
	size_t len, outlen;
	char *out;
	p11s_rc rc;

	msg = encrypt_for(rcpts, n, sp, pt, ptlen, &len);
	rc = decrypt(k, c, &o, msg, len, &out, &outlen, &rep, err);
	if (rc != P11S_OK)
		fail_msg("decrypt failed (%s, %s): %s", want_cipher, want_kea ? want_kea : "",
		         p11s_error_message(err));
	assert_int_equal(outlen, ptlen);
	assert_memory_equal(out, pt, ptlen);
	assert_non_null(rep);
	assert_string_equal(p11s_decrypt_report_content_cipher(rep), want_cipher);
	if (want_kea != NULL && strstr(p11s_decrypt_report_key_encryption(rep), want_kea) == NULL)
		fail_msg("key encryption '%s' lacks '%s'", p11s_decrypt_report_key_encryption(rep),
		         want_kea);
	assert_int_equal(p11s_decrypt_report_content_bytes(rep), ptlen);
	assert_null(p11s_decrypt_report_mechanism(rep));
	p11s_decrypt_report_free(rep);
	free(out);
	OPENSSL_free(msg);
	p11s_error_free(err);
}

static void expect_fail(EVP_PKEY *k, X509 *c, p11s_decrypt_inform inform, const void *msg,
                        size_t len, p11s_rc want, const char *want_msg);

/* The report's recipient.certificate object; *root (json_decref) holds it. */
static json_t *report_certificate(const p11s_decrypt_report *rep, json_t **root)
{
	char *doc = report_decrypt_json(rep);
	json_t *c;

	assert_non_null(doc);
	*root = json_loads(doc, 0, NULL);
	free(doc);
	assert_non_null(*root);
	c = json_object_get(json_object_get(*root, "recipient"), "certificate");
	assert_true(json_is_object(c));
	return c;
}

/* The "result" of rule @p rule in the certificate's "checks", as validate --json has them. */
static const char *check_result(json_t *cert, const char *rule)
{
	json_t *checks = json_object_get(cert, "checks"), *c;
	size_t i;

	assert_int_equal(json_array_size(checks), 6);
	json_array_foreach(checks, i, c)
	{
		assert_true(json_is_string(json_object_get(c, "message")));
		assert_true(json_is_boolean(json_object_get(c, "affects_verdict")));
		if (strcmp(json_string_value(json_object_get(c, "rule")), rule) == 0)
			return json_string_value(json_object_get(c, "result"));
	}
	fail_msg("no check for rule %s", rule);
	return NULL;
}

/* ---------------------------------------------------------- fixtures */

static EVP_PKEY *rsa_key, *rsa3072_key, *ec256_key, *ec384_key, *ec521_key, *other_key;
static X509 *rsa_cert, *rsa3072_cert, *ec256_cert, *ec384_cert, *ec521_cert, *other_cert;

static int setup(void **state)
{
	time_t now = time(NULL);

	(void)state;
	rsa_key = tu_key("rsa:2048");
	rsa3072_key = tu_key("rsa:3072");
	ec256_key = tu_key("ec:P-256");
	ec384_key = tu_key("ec:P-384");
	ec521_key = tu_key("ec:P-521");
	other_key = tu_key("rsa:2048#2");
	rsa_cert = make_cert(rsa_key, "rsa2048", now - 86400, now + 86400 * 365);
	rsa3072_cert = make_cert(rsa3072_key, "rsa3072", now - 86400, now + 86400 * 365);
	ec256_cert = make_cert(ec256_key, "p256", now - 86400, now + 86400 * 365);
	ec384_cert = make_cert(ec384_key, "p384", now - 86400, now + 86400 * 365);
	ec521_cert = make_cert(ec521_key, "p521", now - 86400, now + 86400 * 365);
	other_cert = make_cert(other_key, "other", now - 86400, now + 86400 * 365);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(rsa_key);
	EVP_PKEY_free(rsa3072_key);
	EVP_PKEY_free(ec256_key);
	EVP_PKEY_free(ec384_key);
	EVP_PKEY_free(ec521_key);
	EVP_PKEY_free(other_key);
	X509_free(rsa_cert);
	X509_free(rsa3072_cert);
	X509_free(ec256_cert);
	X509_free(ec384_cert);
	X509_free(ec521_cert);
	X509_free(other_cert);
	return 0;
}

static const struct {
	const char *name;
	const EVP_CIPHER *(*fn)(void);
} ciphers[] = {
    {"aes-128-cbc", EVP_aes_128_cbc}, {"aes-192-cbc", EVP_aes_192_cbc},
    {"aes-256-cbc", EVP_aes_256_cbc}, {"des-ede3-cbc", EVP_des_ede3_cbc},
    {"aes-128-gcm", EVP_aes_128_gcm}, {"aes-192-gcm", EVP_aes_192_gcm},
    {"aes-256-gcm", EVP_aes_256_gcm},
};
#define NCIPHERS (sizeof(ciphers) / sizeof(ciphers[0]))

/* ------------------------------------------------------------- tests */

static void rsa_every_combination(void **state)
{
	static const struct {
		kt_t kt;
		const char *name;
	} kts[] = {{KT_V15, "RSAES-PKCS1-v1_5"},
	           {KT_OAEP_SHA1, "RSAES-OAEP (SHA-1, MGF1 SHA-1)"},
	           {KT_OAEP_SHA256, "RSAES-OAEP (SHA-256, MGF1 SHA-256)"}};
	X509 *r2[] = {rsa_cert}, *r3[] = {rsa3072_cert};

	(void)state;
	for (size_t k = 0; k < 3; k++)
		for (size_t c = 0; c < NCIPHERS; c++)
			for (form_t f = F_DER; f <= F_DER_STREAM; f++) {
				struct enc_spec sp = {
				    .cipher = ciphers[c].fn(), .kt = kts[k].kt, .form = f};

				round_trip(rsa_key, rsa_cert, r2, 1, &sp, small_pt,
				           strlen(small_pt), ciphers[c].name, kts[k].name);
				if (c == 2 || c == 6)
					round_trip(rsa3072_key, rsa3072_cert, r3, 1, &sp, small_pt,
					           strlen(small_pt), ciphers[c].name, kts[k].name);
			}
}

static void ec_every_combination(void **state)
{
	static const struct {
		const EVP_MD *(*md)(void);
		const char *name;
	} kdfs[] = {{EVP_sha1, "KDF SHA-1"},
	            {EVP_sha224, "KDF SHA-224"},
	            {EVP_sha256, "KDF SHA-256"},
	            {EVP_sha384, "KDF SHA-384"},
	            {EVP_sha512, "KDF SHA-512"}};
	static const struct {
		const EVP_CIPHER *(*fn)(void);
		const char *name;
	} wraps[] = {{EVP_aes_128_wrap, "AES-128 key wrap"},
	             {EVP_aes_192_wrap, "AES-192 key wrap"},
	             {EVP_aes_256_wrap, "AES-256 key wrap"}};
	EVP_PKEY *keys[] = {ec256_key, ec384_key, ec521_key};
	X509 *certs[] = {ec256_cert, ec384_cert, ec521_cert};
	char want[128];

	(void)state;
	for (size_t k = 0; k < 3; k++) {
		for (size_t d = 0; d < 5; d++) {
			for (size_t c = 0; c < NCIPHERS; c++) {
				struct enc_spec sp = {.cipher = ciphers[c].fn(),
				                      .kdf_md = kdfs[d].md(),
				                      .form = c % 2 ? F_DER_STREAM : F_DER};

				round_trip(keys[k], certs[k], &certs[k], 1, &sp, small_pt,
				           strlen(small_pt), ciphers[c].name, kdfs[d].name);
			}
		}
		for (size_t w = 0; w < 3; w++) {
			struct enc_spec sp = {.cipher = EVP_aes_256_gcm(),
			                      .kdf_md = EVP_sha256(),
			                      .wrap = wraps[w].fn(),
			                      .form = F_DER};

			snprintf(want, sizeof(want), "ECDH (X9.63 KDF SHA-256, %s)", wraps[w].name);
			round_trip(keys[k], certs[k], &certs[k], 1, &sp, small_pt, strlen(small_pt),
			           "aes-256-gcm", want);
		}
	}
}

/* A copy of @p key's certificate with a subject key identifier extension. */
static X509 *cert_with_ski(EVP_PKEY *key, const char *cn)
{
	unsigned char der[22] = {0x04, 20}, md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	unsigned char *pub = NULL;
	int n = i2d_PUBKEY(key, &pub);
	int ec = EVP_PKEY_is_a(key, "EC");
	X509 *x;

	assert_true(n > 0);
	assert_true(EVP_Digest(pub, (size_t)n, md, &mdlen, EVP_sha1(), NULL));
	OPENSSL_free(pub);
	memcpy(der + 2, md, 20);
	x = tu_cert(&(tu_cert_spec){.key = key,
	                            .cn = cn,
	                            .ku = ec ? "critical,keyAgreement" : "critical,keyEncipherment",
	                            .raw = {{.oid = "2.5.29.14", .der = der, .len = sizeof(der)}}});
	assert_non_null(X509_get0_subject_key_id(x));
	return x;
}

static void subject_key_identifier(void **state)
{
	struct enc_spec sp = {.cipher = EVP_aes_256_gcm(), .keyid = 1, .form = F_DER};
	p11s_decrypt_opts o = {.inform = P11S_INFORM_DER};
	p11s_decrypt_report *rep = NULL;
	unsigned char *msg;
	size_t len;
	char *doc;
	json_t *j;

	X509 *rsa_ski = cert_with_ski(rsa_key, "rsa-ski"), *ec_ski = cert_with_ski(ec256_key, "ec");

	(void)state;
	round_trip(rsa_key, rsa_ski, &rsa_ski, 1, &sp, small_pt, strlen(small_pt), "aes-256-gcm",
	           "RSAES-PKCS1-v1_5");
	round_trip(ec256_key, ec_ski, &ec_ski, 1, &sp, small_pt, strlen(small_pt), "aes-256-gcm",
	           "ECDH");
	/* The certificate without the extension does not match an SKI recipient. */
	msg = encrypt_for(&rsa_ski, 1, &sp, small_pt, strlen(small_pt), &len);
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, msg, len, P11S_E_NO_RECIPIENT, "not among");
	assert_int_equal(decrypt(rsa_key, rsa_ski, &o, msg, len, NULL, NULL, &rep, NULL), P11S_OK);
	doc = report_decrypt_json(rep);
	j = json_loads(doc, 0, NULL);
	assert_non_null(j);
	assert_true(json_is_string(
	    json_object_get(json_object_get(j, "recipient"), "subject_key_identifier")));
	json_decref(j);
	free(doc);
	p11s_decrypt_report_free(rep);
	OPENSSL_free(msg);
	X509_free(rsa_ski);
	X509_free(ec_ski);
}

/* Several recipients, RSA and EC: each key finds its own, the report lists all. */
static void several_recipients(void **state)
{
	X509 *rc[] = {other_cert, ec384_cert, rsa_cert, ec256_cert};
	struct enc_spec sp = {.cipher = EVP_aes_128_gcm(), .kdf_md = EVP_sha256(), .form = F_DER};
	p11s_decrypt_opts o = {.inform = P11S_INFORM_DER};
	p11s_decrypt_report *rep = NULL;
	unsigned char *msg;
	size_t len;
	char *doc, *out;
	json_t *j, *arr;
	size_t matched = 0;

	(void)state;
	round_trip(rsa_key, rsa_cert, rc, 4, &sp, small_pt, strlen(small_pt), "aes-128-gcm",
	           "RSAES-PKCS1-v1_5");
	round_trip(ec256_key, ec256_cert, rc, 4, &sp, small_pt, strlen(small_pt), "aes-128-gcm",
	           "ECDH");
	round_trip(ec384_key, ec384_cert, rc, 4, &sp, small_pt, strlen(small_pt), "aes-128-gcm",
	           "ECDH");
	msg = encrypt_for(rc, 4, &sp, small_pt, strlen(small_pt), &len);
	assert_int_equal(decrypt(ec256_key, ec256_cert, &o, msg, len, &out, NULL, &rep, NULL),
	                 P11S_OK);
	doc = report_decrypt_json(rep);
	j = json_loads(doc, 0, NULL);
	arr = json_object_get(j, "recipients");
	assert_int_equal(json_array_size(arr), 4);
	for (size_t i = 0; i < 4; i++)
		matched += json_is_true(json_object_get(json_array_get(arr, i), "matched"));
	assert_int_equal(matched, 1);
	/* DER sorts the SET OF RecipientInfo: find the match by what it names. */
	for (size_t i = 0; i < 4; i++) {
		json_t *e = json_array_get(arr, i);

		if (!json_is_true(json_object_get(e, "matched")))
			continue;
		assert_string_equal(json_string_value(json_object_get(e, "type")), "key-agreement");
		assert_string_equal(json_string_value(json_object_get(e, "issuer")), "CN=p256");
	}
	assert_string_equal(json_string_value(json_object_get(j, "content_type")),
	                    "authEnveloped-data");
	assert_true(json_is_true(json_object_get(j, "authenticated")));
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "key_encryption"), "kdf")),
	    "X9.63 SHA-256");
	json_decref(j);
	free(doc);
	free(out);
	p11s_decrypt_report_free(rep);
	OPENSSL_free(msg);
}

static void nobody(void **state)
{
	X509 *rc[] = {rsa_cert, ec256_cert};
	struct enc_spec sp = {.cipher = EVP_aes_256_cbc(), .form = F_DER};
	p11s_decrypt_opts o = {.inform = P11S_INFORM_DER};
	p11s_error *err = p11s_error_new();
	p11s_decrypt_report *rep = NULL;
	unsigned char *msg;
	size_t len, outlen;

	(void)state;
	msg = encrypt_for(rc, 2, &sp, small_pt, strlen(small_pt), &len);
	assert_int_equal(decrypt(other_key, other_cert, &o, msg, len, NULL, &outlen, &rep, err),
	                 P11S_E_NO_RECIPIENT);
	assert_int_equal(outlen, 0);
	assert_int_equal(p11s_rc_exit_code(P11S_E_NO_RECIPIENT), 3);
	assert_int_equal(p11s_error_candidate_count(err), 2);
	assert_non_null(strstr(p11s_error_candidate(err, 0), "key-transport: issuer CN=rsa2048"));
	assert_non_null(strstr(p11s_error_candidate(err, 1), "key-agreement: issuer CN=p256"));
	assert_non_null(rep); /* the recipients were read: the report says who */
	p11s_decrypt_report_free(rep);
	OPENSSL_free(msg);
	p11s_error_free(err);
}

/* A message bigger than every buffer, in every framing, in chunks. */
static void large_every_form(void **state)
{
	size_t ptlen = 3 * 1024 * 1024 + 17, hl;
	char *pt = malloc(ptlen), *out, *want;
	static const char head[] = "Content-Type: application/octet-stream\r\n\r\n";
	p11s_decrypt_opts o = {.keep_line_ends = 1};
	unsigned char *msg;
	size_t len, outlen;
	p11s_error *err = p11s_error_new();

	(void)state;
	hl = strlen(head);
	memcpy(pt, head, hl);
	assert_true(RAND_bytes((unsigned char *)pt + hl, (int)(ptlen - hl)) == 1);
	for (form_t f = F_DER; f <= F_SMIME_CRLF; f++) {
		for (int gcm = 0; gcm < 2; gcm++) {
			struct enc_spec sp = {.cipher = gcm ? EVP_aes_256_gcm() : EVP_aes_128_cbc(),
			                      .form = f};

			msg = encrypt_for(&ec256_cert, 1, &sp, pt, ptlen, &len);
			o.inform = inform_of(f);
			if (decrypt(ec256_key, ec256_cert, &o, msg, len, &out, &outlen, NULL,
			            err) != P11S_OK)
				fail_msg("form %d gcm %d: %s", f, gcm, p11s_error_message(err));
			if (f >= F_SMIME) {
				/* SMIME_write_CMS puts MIME-Version outside; it stays outside. */
				want = "MIME-Version: 1.0\r\n";
				if (f == F_SMIME)
					want = "MIME-Version: 1.0\n";
				assert_int_equal(outlen, ptlen + strlen(want));
				assert_memory_equal(out, want, strlen(want));
				assert_memory_equal(out + strlen(want), pt, ptlen);
			} else {
				assert_int_equal(outlen, ptlen);
				assert_memory_equal(out, pt, ptlen);
			}
			free(out);
			OPENSSL_free(msg);
		}
	}
	free(pt);
	p11s_error_free(err);
}

/*
 * The base64 body of a large message, decoded sixteen characters at a time
 * where the CPU can: lines of every width with blanks among them decode to
 * the same bytes, and a bad character megabytes in, or a cut mid-quad, is
 * refused as before.
 */
static void base64_body(void **state)
{
	static const char head[] = "Content-Type: application/octet-stream\r\n\r\n";
	static const unsigned char bad[] = {'*', '.', '@', 0x80, 0xff, 0, '=', '\x7f'};
	struct enc_spec sp = {.cipher = EVP_aes_256_gcm(), .form = F_SMIME};
	p11s_decrypt_opts o = {.inform = P11S_INFORM_SMIME, .keep_line_ends = 1};
	size_t ptlen = 2 * 1024 * 1024 + 5, hl = strlen(head), len, outlen, body, nc = 0, k = 0;
	char *pt = malloc(ptlen), *out, *chars, *wrapped;
	unsigned char *msg;
	p11s_error *err = p11s_error_new();

	(void)state;
	memcpy(pt, head, hl);
	assert_true(RAND_bytes((unsigned char *)pt + hl, (int)(ptlen - hl)) == 1);
	msg = encrypt_for(&ec256_cert, 1, &sp, pt, ptlen, &len);
	body = (size_t)((unsigned char *)strstr((char *)msg, "\n\n") - msg) + 2;

	/* The same characters in lines of 1 to 150, a blank or a tab now and then. */
	chars = malloc(len);
	for (size_t i = body; i < len; i++)
		if (msg[i] != '\n' && msg[i] != '\r')
			chars[nc++] = (char)msg[i];
	wrapped = malloc(body + 2 * nc + 16);
	memcpy(wrapped, msg, body);
	len = body;
	for (size_t i = 0, w = 1; i < nc; w = w % 150 + 1) {
		for (size_t j = 0; j < w && i < nc; j++, k++) {
			wrapped[len++] = chars[i++];
			if (k % 997 == 0)
				wrapped[len++] = k % 2 ? ' ' : '\t';
		}
		if (w % 3 == 0)
			wrapped[len++] = '\r';
		wrapped[len++] = '\n';
	}
	if (decrypt(ec256_key, ec256_cert, &o, wrapped, len, &out, &outlen, NULL, err) != P11S_OK)
		fail_msg("rewrapped: %s", p11s_error_message(err));
	assert_int_equal(outlen, ptlen + strlen("MIME-Version: 1.0\n"));
	assert_memory_equal(out + strlen("MIME-Version: 1.0\n"), pt, ptlen);
	free(out);

	/* A bad character deep in the body, at each place in a group of sixteen. */
	for (size_t b = 0; b < sizeof(bad); b++) {
		for (size_t off = 0; off < 17; off++) {
			size_t at = body + 1024 * 1024 + 61 * b + off;
			unsigned char keep;

			while (wrapped[at] == '\n' || wrapped[at] == '\r' || wrapped[at] == ' ' ||
			       wrapped[at] == '\t')
				at++;
			keep = (unsigned char)wrapped[at];
			wrapped[at] = (char)bad[b];
			expect_fail(ec256_key, ec256_cert, P11S_INFORM_SMIME, wrapped, len,
			            P11S_E_INPUT, "not valid base64");
			wrapped[at] = (char)keep;
		}
	}
	/* Cut mid-quad: three characters of the last group. */
	while (len > 0 && (wrapped[len - 1] == '\n' || wrapped[len - 1] == '\r'))
		len--;
	expect_fail(ec256_key, ec256_cert, P11S_INFORM_SMIME, wrapped, len - 1, P11S_E_INPUT,
	            "truncated");
	free(wrapped);
	free(chars);
	OPENSSL_free(msg);
	free(pt);
	p11s_error_free(err);
}

/* A whole message: outer headers kept in order, MIME-Version once, line ends. */
static void message_framing(void **state)
{
	static const char outer_crlf[] = "Received: from a by b\r\n"
	                                 "From: Alice <alice@example.org>\r\n"
	                                 "To: someone@example.org\r\n"
	                                 "Subject: secret\r\n"
	                                 "X-Long: folded\r\n"
	                                 " continuation\r\n";
	static const char inner_mv[] = "MIME-Version: 1.0\r\n"
	                               "Content-Type: text/plain\r\n\r\nbody\r\n";
	struct enc_spec sp = {.cipher = EVP_aes_256_gcm(), .form = F_SMIME_CRLF};
	p11s_decrypt_opts o = {0};
	unsigned char *msg;
	size_t len, outlen;
	char *full, *out, *want, *lf;

	(void)state;
	/* CRLF message: kept as is. */
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	full = tu_cat(outer_crlf, (char *)msg, NULL);
	assert_int_equal(
	    decrypt(rsa_key, rsa_cert, &o, full, strlen(full), &out, &outlen, NULL, NULL), P11S_OK);
	want = tu_cat(outer_crlf, "MIME-Version: 1.0\r\n", small_pt, NULL);
	assert_string_equal(out, want);
	free(out);
	free(want);

	/* --entity: the decrypted entity alone. */
	o.entity_only = 1;
	assert_int_equal(
	    decrypt(rsa_key, rsa_cert, &o, full, strlen(full), &out, &outlen, NULL, NULL), P11S_OK);
	assert_string_equal(out, small_pt);
	free(out);
	o.entity_only = 0;
	free(full);
	OPENSSL_free(msg);

	/* LF message: the decrypted entity follows, unless told to keep its CRLFs. */
	sp.form = F_SMIME;
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	full = tu_cat("From: alice@example.org\nSubject: lf\n", (char *)msg, NULL);
	assert_int_equal(
	    decrypt(rsa_key, rsa_cert, &o, full, strlen(full), &out, &outlen, NULL, NULL), P11S_OK);
	assert_string_equal(out, "From: alice@example.org\nSubject: lf\nMIME-Version: 1.0\n"
	                         "Content-Type: text/plain; charset=utf-8\n\n"
	                         "Hello from the unit tests.\nSecond line.\n");
	free(out);
	o.keep_line_ends = 1;
	assert_int_equal(
	    decrypt(rsa_key, rsa_cert, &o, full, strlen(full), &out, &outlen, NULL, NULL), P11S_OK);
	want = tu_cat("From: alice@example.org\nSubject: lf\nMIME-Version: 1.0\n", small_pt, NULL);
	assert_string_equal(out, want);
	free(want);
	free(out);
	o.keep_line_ends = 0;
	free(full);
	OPENSSL_free(msg);

	/* A binary entity in an LF message: its bytes are not lines, nothing converted. */
	static const char bin[] = "Content-Type: application/octet-stream\r\n"
	                          "Content-Transfer-Encoding: binary\r\n\r\n\x00\r\n\xff\r\n";
	msg = encrypt_for(&rsa_cert, 1, &sp, bin, sizeof(bin) - 1, &len);
	full = tu_cat("From: a@example.org\n", (char *)msg, NULL);
	assert_int_equal(
	    decrypt(rsa_key, rsa_cert, &o, full, strlen(full), &out, &outlen, NULL, NULL), P11S_OK);
	want = tu_cat("From: a@example.org\nMIME-Version: 1.0\n", NULL);
	assert_int_equal(outlen, strlen(want) + sizeof(bin) - 1);
	assert_memory_equal(out, want, strlen(want));
	assert_memory_equal(out + strlen(want), bin, sizeof(bin) - 1);
	free(want);
	free(out);
	free(full);
	OPENSSL_free(msg);

	/* An entity with its own MIME-Version: not written twice. */
	sp.form = F_SMIME_CRLF;
	msg = encrypt_for(&rsa_cert, 1, &sp, inner_mv, strlen(inner_mv), &len);
	full = tu_cat("From: a@example.org\r\n", (char *)msg, NULL);
	assert_int_equal(
	    decrypt(rsa_key, rsa_cert, &o, full, strlen(full), &out, &outlen, NULL, NULL), P11S_OK);
	want = tu_cat("From: a@example.org\r\n", inner_mv, NULL);
	assert_string_equal(out, want);
	free(want);
	free(out);
	free(full);
	OPENSSL_free(msg);

	/* A binary (DER) body, labelled so. */
	sp.form = F_DER;
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	static const char bin_head[] = "Subject: der body\r\n"
	                               "Content-Type: application/pkcs7-mime; name=smime.p7m;\r\n"
	                               "\tsmime-type=authEnveloped-data\r\n"
	                               "Content-Transfer-Encoding: binary\r\n\r\n";
	full = malloc(sizeof(bin_head) + len);
	memcpy(full, bin_head, sizeof(bin_head) - 1);
	memcpy(full + sizeof(bin_head) - 1, msg, len);
	assert_int_equal(decrypt(rsa_key, rsa_cert, &o, full, sizeof(bin_head) - 1 + len, &out,
	                         &outlen, NULL, NULL),
	                 P11S_OK);
	want = tu_cat("Subject: der body\r\n", small_pt, NULL);
	assert_string_equal(out, want);
	free(want);
	free(out);
	free(full);
	OPENSSL_free(msg);
	sp.form = F_SMIME_CRLF;

	/* Legacy x-pkcs7-mime with no smime-type, and the name-only octet-stream label. */
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	full = malloc(len + 8);
	memcpy(full, msg, len);
	full[len] = '\0';
	lf = strstr(full, "application/pkcs7-mime");
	assert_non_null(lf);
	memmove(lf + 14, lf + 12, strlen(lf + 12) + 1);
	memcpy(lf, "application/x-pkcs7-mime", 24);
	assert_int_equal(
	    decrypt(rsa_key, rsa_cert, &o, full, strlen(full), &out, &outlen, NULL, NULL), P11S_OK);
	assert_non_null(strstr(out, "Hello from the unit tests."));
	free(out);
	free(full);
	OPENSSL_free(msg);
}

static void expect_fail(EVP_PKEY *k, X509 *c, p11s_decrypt_inform inform, const void *msg,
                        size_t len, p11s_rc want, const char *want_msg)
{
	p11s_decrypt_opts o = {.inform = inform};
	p11s_error *err = p11s_error_new();
	p11s_rc rc;

	rc = decrypt(k, c, &o, msg, len, NULL, NULL, NULL, err);
	if (rc != want || (want_msg && !strstr(p11s_error_message(err), want_msg)))
		fail_msg("want %s '%s', got %s: %s", p11s_rc_name(want), want_msg ? want_msg : "",
		         p11s_rc_name(rc), p11s_error_message(err));
	assert_int_equal(p11s_rc_exit_code(rc), want == P11S_E_NO_RECIPIENT ? 3 : 4);
	p11s_error_free(err);
}

/* Every prefix of a message fails, and says why. */
static void truncated(void **state)
{
	for (form_t f = F_DER; f <= F_DER_STREAM; f++) {
		for (int gcm = 0; gcm < 2; gcm++) {
			struct enc_spec sp = {.cipher = gcm ? EVP_aes_256_gcm() : EVP_aes_128_cbc(),
			                      .form = f};
			unsigned char *msg;
			size_t len;
			p11s_error *err = p11s_error_new();
			p11s_decrypt_opts o = {.inform = P11S_INFORM_DER};
			p11s_rc rc;

			(void)state;
			msg = encrypt_for(&ec256_cert, 1, &sp, small_pt, strlen(small_pt), &len);
			for (size_t cut = 0; cut < len; cut++) {
				rc = decrypt(ec256_key, ec256_cert, &o, msg, cut, NULL, NULL, NULL,
				             err);
				if (rc == P11S_OK || p11s_rc_exit_code(rc) != 4)
					fail_msg("prefix %zu of %zu: %s", cut, len,
					         p11s_rc_name(rc));
				if (cut > 0 && rc != P11S_E_INPUT)
					fail_msg("prefix %zu of %zu: %s: %s", cut, len,
					         p11s_rc_name(rc), p11s_error_message(err));
			}
			expect_fail(ec256_key, ec256_cert, P11S_INFORM_DER, msg, len / 2,
			            P11S_E_INPUT, "truncated");
			p11s_error_free(err);
			OPENSSL_free(msg);
		}
	}
	/* base64 cut mid-quad, and a MIME message cut in its headers. */
	struct enc_spec sp = {.cipher = EVP_aes_256_gcm(), .form = F_SMIME};
	unsigned char *msg;
	size_t len;

	msg = encrypt_for(&ec256_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
		len--;
	expect_fail(ec256_key, ec256_cert, P11S_INFORM_SMIME, msg, len - 1, P11S_E_INPUT, NULL);
	expect_fail(ec256_key, ec256_cert, P11S_INFORM_SMIME, msg, len - 200, P11S_E_INPUT, NULL);
	expect_fail(ec256_key, ec256_cert, P11S_INFORM_SMIME, msg, 40, P11S_E_INPUT, NULL);
	OPENSSL_free(msg);
}

static void tampered(void **state)
{
	struct enc_spec sp = {.cipher = EVP_aes_256_gcm(), .form = F_DER};
	EVP_PKEY *k2;
	unsigned char *msg;
	size_t len;

	(void)state;
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	/* Definite DER without unauthenticated attributes: the MAC is last. */
	msg[len - 1] ^= 0x01;
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, msg, len, P11S_E_DECRYPT, "tag mismatch");
	msg[len - 1] ^= 0x01;
	/* A ciphertext byte: the last byte of the content is 16 + 2 before the end. */
	msg[len - 19] ^= 0x80;
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, msg, len, P11S_E_DECRYPT, "tag mismatch");
	msg[len - 19] ^= 0x80;
	/* Trailing bytes after the ContentInfo. */
	msg = OPENSSL_realloc(msg, len + 2);
	msg[len] = 0x05;
	msg[len + 1] = 0x00;
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, msg, len + 2, P11S_E_INPUT,
	            "unexpected data after");
	OPENSSL_free(msg);

	/* The wrong key for the named certificate: GCM says so, nothing else. */
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	expect_fail(other_key, rsa_cert, P11S_INFORM_DER, msg, len, P11S_E_DECRYPT, NULL);
	OPENSSL_free(msg);
	/* ECDH with another key: the key unwrap's integrity check fails. */
	k2 = tu_key("ec:P-256#2");
	msg = encrypt_for(&ec256_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	expect_fail(k2, ec256_cert, P11S_INFORM_DER, msg, len, P11S_E_DECRYPT, NULL);
	OPENSSL_free(msg);
	EVP_PKEY_free(k2);
}

static unsigned char *find(unsigned char *hay, size_t len, const void *needle, size_t nlen)
{
	for (size_t i = 0; i + nlen <= len; i++)
		if (memcmp(hay + i, needle, nlen) == 0)
			return hay + i;
	return NULL;
}

/*
 * Every byte of an AES-GCM message changed in turn (DER and streamed BER):
 * either the content comes out exactly right (a byte nothing depends on)
 * or there is an error of the input, crypto or recipient kind; never other
 * plaintext, never a crash (the suite runs under ASan in CI).
 */
static void every_byte_mutated(void **state)
{
	X509 *rc[] = {rsa_cert, ec256_cert};
	p11s_decrypt_opts o = {.inform = P11S_INFORM_DER};
	unsigned char *msg;
	size_t len, outlen, ok = 0, failed = 0;
	char *out;
	p11s_rc r;

	(void)state;
	for (form_t f = F_DER; f <= F_DER_STREAM; f++) {
		struct enc_spec sp = {
		    .cipher = EVP_aes_128_gcm(), .kdf_md = EVP_sha256(), .form = f};

		msg = encrypt_for(rc, 2, &sp, small_pt, strlen(small_pt), &len);
		for (size_t i = 0; i < len; i++) {
			unsigned char bit = (unsigned char)(i % 2 ? 0x80 : 0x01);

			msg[i] ^= bit;
			r = decrypt(ec256_key, ec256_cert, &o, msg, len, &out, &outlen, NULL, NULL);
			msg[i] ^= bit;
			if (r == P11S_OK) {
				if (outlen != strlen(small_pt) ||
				    memcmp(out, small_pt, outlen) != 0)
					fail_msg("byte %zu changed: other plaintext accepted", i);
				ok++;
			} else {
				if (p11s_rc_exit_code(r) != 4 && r != P11S_E_NO_RECIPIENT)
					fail_msg("byte %zu changed: %s", i, p11s_rc_name(r));
				failed++;
			}
			free(out);
		}
		OPENSSL_free(msg);
	}
	/* Most bytes matter (the RSA recipient's do not, for the EC key). */
	print_message("every_byte_mutated: %zu same content, %zu refused\n", ok, failed);
	assert_true(failed > ok);
}

/* Bad OAEP parameters are an error: never a quiet fallback to PKCS#1 v1.5. */
static void malformed_oaep(void **state)
{
	static const unsigned char sha256_oid[] = {0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
	                                           0x65, 0x03, 0x04, 0x02, 0x01};
	static const unsigned char oaep_oid[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
	                                         0xf7, 0x0d, 0x01, 0x01, 0x07};
	struct enc_spec sp = {.cipher = EVP_aes_256_cbc(), .kt = KT_OAEP_SHA256, .form = F_DER};
	unsigned char *msg, *p;
	size_t len;

	(void)state;
	/* An unknown hash (the OID's last arc changed). */
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	p = find(msg, len, sha256_oid, sizeof(sha256_oid));
	assert_non_null(p);
	p[10] = 0x7f;
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, msg, len, P11S_E_INPUT, "RSA-OAEP");
	OPENSSL_free(msg);

	/* The parameters are not RSAES-OAEP-params (the [0] tag changed). */
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	p = find(msg, len, oaep_oid, sizeof(oaep_oid));
	assert_non_null(p);
	assert_int_equal(p[sizeof(oaep_oid)], 0x30);
	assert_int_equal(p[sizeof(oaep_oid) + 2], 0xa0);
	p[sizeof(oaep_oid) + 2] = 0xa5;
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, msg, len, P11S_E_INPUT,
	            "malformed RSA-OAEP parameters");
	OPENSSL_free(msg);

	/* The MGF is not MGF1. */
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	p = find(msg, len, "\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x08", 11);
	assert_non_null(p);
	p[10] = 0x09;
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, msg, len, P11S_E_INPUT,
	            "mask generation function");
	OPENSSL_free(msg);
}

static void not_encrypted(void **state)
{
	static const char plain[] = "From: a@example.org\r\nSubject: x\r\n\r\nhello\r\n";
	static const char signed_msg[] = "Content-Type: multipart/signed; "
	                                 "protocol=\"application/pkcs7-signature\"; "
	                                 "boundary=x\r\n\r\n--x--\r\n";
	static const char sd[] = "Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
	                         "Content-Transfer-Encoding: base64\r\n\r\nMAA=\r\n";
	static const char bad64[] = "Content-Type: application/pkcs7-mime; "
	                            "smime-type=enveloped-data\r\n"
	                            "Content-Transfer-Encoding: base64\r\n\r\nMIAG*CSqGSIb3\r\n";
	unsigned char garbage[512];
	CMS_ContentInfo *cms;
	BIO *in, *out;
	char *data;
	long n;

	(void)state;
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_SMIME, plain, strlen(plain), P11S_E_INPUT,
	            "not encrypted");
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_SMIME, signed_msg, strlen(signed_msg),
	            P11S_E_INPUT, "p11smime verify");
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_SMIME, sd, strlen(sd), P11S_E_INPUT,
	            "smime-type=signed-data");
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_SMIME, bad64, strlen(bad64), P11S_E_INPUT,
	            "base64");
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_SMIME, "", 0, P11S_E_INPUT, NULL);
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, "", 0, P11S_E_INPUT, "empty");
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_PEM, "hello\n", 6, P11S_E_INPUT, "BEGIN");
	for (int i = 0; i < 50; i++) {
		assert_true(RAND_bytes(garbage, sizeof(garbage)) == 1);
		garbage[0] = 0x30; /* past the first check, into the parser */
		expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, garbage, sizeof(garbage),
		            P11S_E_INPUT, NULL);
	}

	/* A signed CMS is named as such. */
	in = BIO_new_mem_buf(small_pt, -1);
	cms = CMS_sign(rsa_cert, rsa_key, NULL, in, CMS_BINARY);
	assert_non_null(cms);
	out = BIO_new(BIO_s_mem());
	assert_true(i2d_CMS_bio(out, cms));
	n = BIO_get_mem_data(out, &data);
	expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, data, (size_t)n, P11S_E_INPUT,
	            "signed-data");
	BIO_free(out);
	BIO_free(in);
	CMS_ContentInfo_free(cms);
}

/*
 * small_pt encrypted (AES-256-CBC, RSA v1.5) for @p cert, decrypted with
 * rsa_key judging the certificate at @p at: the content must come back
 * whatever the certificate; the report is the caller's.
 */
static p11s_decrypt_report *decrypt_rsa_for(X509 *cert, time_t at)
{
	struct enc_spec sp = {.cipher = EVP_aes_256_cbc(), .form = F_DER};
	p11s_decrypt_opts o = {.inform = P11S_INFORM_DER, .at = at};
	p11s_decrypt_report *rep = NULL;
	unsigned char *msg;
	size_t len;
	char *out;

	msg = encrypt_for(&cert, 1, &sp, small_pt, strlen(small_pt), &len);
	assert_int_equal(decrypt(rsa_key, cert, &o, msg, len, &out, NULL, &rep, NULL), P11S_OK);
	assert_string_equal(out, small_pt);
	assert_non_null(rep);
	free(out);
	OPENSSL_free(msg);
	return rep;
}

/* An expired recipient certificate: old mail stays readable; the report says so. */
static void expired_certificate(void **state)
{
	time_t now = time(NULL);
	X509 *old = make_cert(rsa_key, "old", now - 86400 * 800, now - 86400 * 400);
	p11s_decrypt_report *rep;
	json_t *j, *c;

	(void)state;
	rep = decrypt_rsa_for(old, 0);
	assert_int_equal(p11s_decrypt_report_expired(rep), 1);
	assert_int_equal(p11s_decrypt_report_note_count(rep), 1);
	assert_non_null(strstr(p11s_decrypt_report_note(rep, 0), "expired"));
	c = report_certificate(rep, &j);
	assert_true(json_is_true(json_object_get(c, "expired")));
	/* The rules judge it as validate does: accepted, but not for outgoing mail. */
	assert_string_equal(json_string_value(json_object_get(c, "verdict")), "accepted");
	assert_true(json_is_false(json_object_get(c, "usable_for_outgoing")));
	assert_true(json_is_false(json_object_get(c, "in_validity")));
	assert_string_equal(check_result(c, "validity"), "fail");
	assert_string_equal(check_result(c, "san-email"), "pass");
	json_decref(j);
	p11s_decrypt_report_free(rep);

	/* At a time it was valid, no note. */
	rep = decrypt_rsa_for(old, now - 86400 * 500);
	assert_int_equal(p11s_decrypt_report_expired(rep), 0);
	assert_int_equal(p11s_decrypt_report_note_count(rep), 0);
	c = report_certificate(rep, &j);
	assert_true(json_is_true(json_object_get(c, "usable_for_outgoing")));
	assert_string_equal(check_result(c, "validity"), "pass");
	json_decref(j);
	p11s_decrypt_report_free(rep);
	X509_free(old);
}

/*
 * A recipient certificate the S/MIME rules reject (no e-mail address in its
 * SAN): the mail still decrypts; the report says why it is rejected.
 */
static void rejected_certificate(void **state)
{
	X509 *bare = tu_cert(&(tu_cert_spec){.key = rsa_key,
	                                     .cn = "no-san",
	                                     .ku = "critical,digitalSignature,keyEncipherment",
	                                     .eku = "emailProtection"});
	p11s_decrypt_report *rep;
	const p11s_verdict *v;
	json_t *j, *c;

	(void)state;
	rep = decrypt_rsa_for(bare, 0);
	v = p11s_decrypt_report_verdict(rep);
	assert_non_null(v);
	assert_false(p11s_verdict_accepted(v));
	assert_int_equal(p11s_verdict_rule(v, P11S_RULE_SAN_EMAIL, NULL), P11S_CHECK_FAIL);
	assert_int_equal(p11s_decrypt_report_expired(rep), 0);
	assert_int_equal(p11s_decrypt_report_note_count(rep), 1);
	assert_non_null(strstr(p11s_decrypt_report_note(rep, 0), "rejected"));
	assert_non_null(strstr(p11s_decrypt_report_note(rep, 0), "(san-email)"));

	c = report_certificate(rep, &j);
	assert_string_equal(json_string_value(json_object_get(c, "verdict")), "rejected");
	assert_true(json_is_false(json_object_get(c, "usable_for_outgoing")));
	assert_true(json_is_true(json_object_get(c, "in_validity")));
	assert_true(json_is_false(json_object_get(c, "expired")));
	assert_true(json_is_array(json_object_get(c, "warnings")));
	assert_string_equal(check_result(c, "san-email"), "fail");
	assert_string_equal(check_result(c, "key-usage"), "pass");
	assert_string_equal(check_result(c, "validity"), "pass");
	/* The software key is known: its algorithm is judged too. */
	assert_string_equal(check_result(c, "private-key-algorithm"), "pass");
	json_decref(j);
	p11s_decrypt_report_free(rep);
	X509_free(bare);
}

/* ----------------------------- AuthEnvelopedData with authAttrs, by hand */

struct der {
	unsigned char *p;
	size_t len;
};

static struct der tlv(unsigned char tag, struct der content)
{
	struct der d;
	unsigned char h[6];
	size_t n = 0;

	h[n++] = tag;
	if (content.len < 0x80) {
		h[n++] = (unsigned char)content.len;
	} else if (content.len < 0x100) {
		h[n++] = 0x81;
		h[n++] = (unsigned char)content.len;
	} else if (content.len < 0x10000) {
		h[n++] = 0x82;
		h[n++] = (unsigned char)(content.len >> 8);
		h[n++] = (unsigned char)content.len;
	} else {
		h[n++] = 0x83;
		h[n++] = (unsigned char)(content.len >> 16);
		h[n++] = (unsigned char)(content.len >> 8);
		h[n++] = (unsigned char)content.len;
	}
	d.len = n + content.len;
	d.p = malloc(d.len);
	memcpy(d.p, h, n);
	memcpy(d.p + n, content.p, content.len);
	free(content.p);
	return d;
}

static struct der raw(const void *p, size_t len)
{
	struct der d = {malloc(len ? len : 1), len};

	memcpy(d.p, p, len);
	return d;
}

static struct der cat(int n, ...)
{
	struct der d = {NULL, 0}, x;
	va_list ap;

	va_start(ap, n);
	for (int i = 0; i < n; i++) {
		x = va_arg(ap, struct der);
		d.p = realloc(d.p, d.len + x.len + 1);
		memcpy(d.p + d.len, x.p, x.len);
		d.len += x.len;
		free(x.p);
	}
	va_end(ap);
	return d;
}

static struct der i2d_of(int (*fn)(const void *, unsigned char **), const void *obj)
{
	unsigned char *p = NULL;
	int n = fn(obj, &p);
	struct der d = raw(p, (size_t)n);

	OPENSSL_free(p);
	return d;
}

static int i2d_name(const void *n, unsigned char **p)
{
	return i2d_X509_NAME(n, p);
}

static int i2d_int(const void *n, unsigned char **p)
{
	return i2d_ASN1_INTEGER(n, p);
}

/*
 * AuthEnvelopedData for rsa_cert (PKCS#1 v1.5) with AES-256-GCM, the given
 * authAttrs (DER of the SET, tag 0x31) as AAD, and an unauthAttrs [2].
 * @p aad_for_tag is what the tag is computed over (to make a mismatch).
 */
static struct der hand_made(const unsigned char *pt, size_t ptlen, struct der attrs,
                            struct der aad_for_tag)
{
	static const unsigned char oid_auth_env[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
	                                             0x01, 0x09, 0x10, 0x01, 0x17};
	static const unsigned char oid_rsa[] = {0x2a, 0x86, 0x48, 0x86, 0xf7,
	                                        0x0d, 0x01, 0x01, 0x01};
	static const unsigned char oid_data[] = {0x2a, 0x86, 0x48, 0x86, 0xf7,
	                                         0x0d, 0x01, 0x07, 0x01};
	static const unsigned char oid_gcm256[] = {0x60, 0x86, 0x48, 0x01, 0x65,
	                                           0x03, 0x04, 0x01, 0x2e};
	unsigned char cek[32], iv[12], tag[16], ek[512], *ct;
	size_t eklen = sizeof(ek);
	int outl;
	EVP_PKEY_CTX *pc;
	EVP_CIPHER_CTX *c;
	struct der ktri, eci, body;

	assert_true(RAND_bytes(cek, sizeof(cek)) == 1 && RAND_bytes(iv, sizeof(iv)) == 1);
	pc = EVP_PKEY_CTX_new(rsa_key, NULL);
	assert_true(EVP_PKEY_encrypt_init(pc) > 0);
	assert_true(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) > 0);
	assert_true(EVP_PKEY_encrypt(pc, ek, &eklen, cek, sizeof(cek)) > 0);
	EVP_PKEY_CTX_free(pc);

	ct = malloc(ptlen + 16);
	c = EVP_CIPHER_CTX_new();
	assert_true(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, cek, iv));
	if (aad_for_tag.len > 0)
		assert_true(EVP_EncryptUpdate(c, NULL, &outl, aad_for_tag.p, (int)aad_for_tag.len));
	assert_true(EVP_EncryptUpdate(c, ct, &outl, pt, (int)ptlen));
	assert_int_equal(outl, ptlen);
	assert_true(EVP_EncryptFinal_ex(c, ct + outl, &outl));
	assert_true(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, tag));
	EVP_CIPHER_CTX_free(c);
	free(aad_for_tag.p);

	ktri =
	    tlv(0x30,
	        cat(4, raw("\x02\x01\x00", 3),
	            tlv(0x30, cat(2, i2d_of(i2d_name, X509_get_issuer_name(rsa_cert)),
	                          i2d_of(i2d_int, X509_get0_serialNumber(rsa_cert)))),
	            tlv(0x30, cat(2, tlv(0x06, raw(oid_rsa, sizeof(oid_rsa))), raw("\x05\x00", 2))),
	            tlv(0x04, raw(ek, eklen))));
	eci = tlv(0x30, cat(3, tlv(0x06, raw(oid_data, sizeof(oid_data))),
	                    tlv(0x30, cat(2, tlv(0x06, raw(oid_gcm256, sizeof(oid_gcm256))),
	                                  tlv(0x30, cat(2, tlv(0x04, raw(iv, sizeof(iv))),
	                                                raw("\x02\x01\x10", 3))))),
	                    tlv(0x80, raw(ct, ptlen))));
	free(ct);
	attrs.p[0] = 0xa1; /* [1] IMPLICIT in the structure */
	body =
	    tlv(0x30, cat(6, raw("\x02\x01\x00", 3), tlv(0x31, ktri), eci, attrs,
	                  tlv(0x04, raw(tag, sizeof(tag))),
	                  tlv(0xa2, raw("\x30\x0a\x06\x03\x2a\x03\x04\x31\x03\x02\x01\x07", 12))));
	return tlv(0x30,
	           cat(2, tlv(0x06, raw(oid_auth_env, sizeof(oid_auth_env))), tlv(0xa0, body)));
}

static struct der attrs_der(void)
{
	/* SET { Attribute { contentType, SET { id-data } } } */
	static const unsigned char a[] = {
	    0x31, 0x1a, 0x30, 0x18, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09,
	    0x03, 0x31, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01};
	return raw(a, sizeof(a));
}

static void auth_attributes(void **state)
{
	size_t sizes[] = {strlen(small_pt), 2 * 1024 * 1024 + 3}; /* the second spills to a file */
	p11s_decrypt_opts o = {.inform = P11S_INFORM_DER};
	p11s_decrypt_report *rep = NULL;
	p11s_error *err = p11s_error_new();
	unsigned char *pt;
	struct der m, aad;
	char *out, *doc;
	size_t outlen;
	json_t *j;

	(void)state;
	for (size_t s = 0; s < 4; s++) {
		/* Read twice from memory, then once through a pipe (spooled). */
		use_pipe = s >= 2;
		pt = malloc(sizes[s % 2]);
		if (s % 2 == 0)
			memcpy(pt, small_pt, sizes[s % 2]);
		else
			assert_true(RAND_bytes(pt, (int)sizes[s % 2]) == 1);
		m = hand_made(pt, sizes[s % 2], attrs_der(), attrs_der());
		if (decrypt(rsa_key, rsa_cert, &o, m.p, m.len, &out, &outlen, &rep, err) != P11S_OK)
			fail_msg("hand-made AuthEnvelopedData: %s", p11s_error_message(err));
		assert_int_equal(outlen, sizes[s % 2]);
		assert_memory_equal(out, pt, sizes[s % 2]);
		doc = report_decrypt_json(rep);
		j = json_loads(doc, 0, NULL);
		assert_true(json_is_true(json_object_get(j, "auth_attributes")));
		assert_true(json_is_true(json_object_get(j, "authenticated")));
		json_decref(j);
		free(doc);
		p11s_decrypt_report_free(rep);
		free(out);
		free(m.p);

		/* The tag was made without the attributes: they were added later. */
		m = hand_made(pt, sizes[s % 2], attrs_der(), raw("", 0));
		expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, m.p, m.len, P11S_E_DECRYPT,
		            "tag mismatch");
		free(m.p);

		/* An attribute changed after tagging. */
		aad = attrs_der();
		m = hand_made(pt, sizes[s % 2], attrs_der(), aad);
		m.p[m.len - 16 - 2 - 14 - 1] ^= 0x01; /* inside the attributes, before the MAC */
		expect_fail(rsa_key, rsa_cert, P11S_INFORM_DER, m.p, m.len, P11S_E_DECRYPT,
		            "tag mismatch");
		free(m.p);
		free(pt);
	}
	use_pipe = 0;
	p11s_error_free(err);
}

/* The JSON report carries the keys the issue names. */
static void json_report(void **state)
{
	struct enc_spec sp = {.cipher = EVP_aes_256_cbc(), .kt = KT_OAEP_SHA256, .form = F_DER};
	p11s_decrypt_opts o = {.inform = P11S_INFORM_DER};
	p11s_decrypt_report *rep = NULL;
	unsigned char *msg;
	size_t len;
	char *doc;
	json_t *j, *ke, *c;

	(void)state;
	msg = encrypt_for(&rsa_cert, 1, &sp, small_pt, strlen(small_pt), &len);
	assert_int_equal(decrypt(rsa_key, rsa_cert, &o, msg, len, NULL, NULL, &rep, NULL), P11S_OK);
	doc = report_decrypt_json(rep);
	j = json_loads(doc, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "content_type")),
	                    "enveloped-data");
	assert_string_equal(json_string_value(json_object_get(j, "content_cipher")), "aes-256-cbc");
	ke = json_object_get(j, "key_encryption");
	assert_string_equal(json_string_value(json_object_get(ke, "algorithm")), "RSAES-OAEP");
	assert_string_equal(json_string_value(json_object_get(ke, "oaep_hash")), "SHA-256");
	assert_string_equal(json_string_value(json_object_get(ke, "mgf1_hash")), "SHA-256");
	assert_true(json_is_null(json_object_get(j, "mechanism")));
	assert_true(json_is_null(json_object_get(j, "key_uri")));
	assert_true(json_is_false(json_object_get(j, "authenticated")));
	assert_true(json_is_true(json_object_get(j, "decrypted")));
	assert_int_equal(json_integer_value(json_object_get(j, "content_bytes")), strlen(small_pt));
	assert_string_equal(
	    json_string_value(json_object_get(
	        json_object_get(json_object_get(j, "recipient"), "certificate"), "subject")),
	    "CN=rsa2048");
	json_decref(j);
	/* A certificate that meets every rule: accepted, and no note about it. */
	c = report_certificate(rep, &j);
	assert_string_equal(json_string_value(json_object_get(c, "verdict")), "accepted");
	assert_true(json_is_true(json_object_get(c, "usable_for_outgoing")));
	assert_string_equal(check_result(c, "san-email"), "pass");
	assert_int_equal(p11s_decrypt_report_note_count(rep), 0);
	json_decref(j);
	free(doc);
	p11s_decrypt_report_free(rep);
	OPENSSL_free(msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(rsa_every_combination),
	    cmocka_unit_test(ec_every_combination),
	    cmocka_unit_test(subject_key_identifier),
	    cmocka_unit_test(several_recipients),
	    cmocka_unit_test(nobody),
	    cmocka_unit_test(large_every_form),
	    cmocka_unit_test(base64_body),
	    cmocka_unit_test(message_framing),
	    cmocka_unit_test(truncated),
	    cmocka_unit_test(tampered),
	    cmocka_unit_test(every_byte_mutated),
	    cmocka_unit_test(malformed_oaep),
	    cmocka_unit_test(not_encrypted),
	    cmocka_unit_test(expired_certificate),
	    cmocka_unit_test(rejected_certificate),
	    cmocka_unit_test(auth_attributes),
	    cmocka_unit_test(json_report),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
