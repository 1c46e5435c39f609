#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "mailbox.h"
#include "p11smime/certs.h"
#include "p11smime/encrypt.h"
#include "mime.h"
#include "p11smime/rules.h"
#include "p11smime/io.h"

struct recipient {
	X509 *cert;
	char *source;
};

struct p11s_recipients {
	P11I_VEC(struct recipient) rcpt;
	/* --recipient-dir: candidates for e-mail lookups */
	STACK_OF(X509) * dir_certs;
	char **dir_sources;
};

static const struct {
	p11s_cipher c;
	const char *name;
} ciphers[] = {
    {P11S_CIPHER_AES256_GCM, "aes-256-gcm"},
    {P11S_CIPHER_AES256_CBC, "aes-256-cbc"},
    {P11S_CIPHER_AES128_CBC, "aes-128-cbc"},
};

const char *p11s_cipher_name(p11s_cipher c)
{
	for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++)
		if (ciphers[i].c == c)
			return ciphers[i].name;
	return "unknown";
}

p11s_rc p11s_cipher_from_name(const char *name, p11s_cipher *out, p11s_error *err)
{
	for (size_t i = 0; name && i < sizeof(ciphers) / sizeof(ciphers[0]); i++)
		if (strcasecmp(ciphers[i].name, name) == 0) {
			*out = ciphers[i].c;
			return P11S_OK;
		}
	return p11i_err(err, P11S_E_USAGE,
	                "unknown cipher '%s' (aes-256-gcm, aes-256-cbc or aes-128-cbc)",
	                name ? name : "");
}

static const EVP_CIPHER *evp_cipher(p11s_cipher c)
{
	switch (c) {
	case P11S_CIPHER_AES256_GCM:
		return EVP_aes_256_gcm();
	case P11S_CIPHER_AES256_CBC:
		return EVP_aes_256_cbc();
	case P11S_CIPHER_AES128_CBC:
		return EVP_aes_128_cbc();
	}
	return NULL;
}

/* ------------------------------------------------------------- recipients */

p11s_recipients *p11s_recipients_new(void)
{
	return calloc(1, sizeof(p11s_recipients));
}

void p11s_recipients_free(p11s_recipients *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->rcpt.n; i++) {
		X509_free(r->rcpt.v[i].cert);
		free(r->rcpt.v[i].source);
	}
	free(r->rcpt.v);
	if (r->dir_certs != NULL) {
		for (int i = 0; i < sk_X509_num(r->dir_certs); i++)
			free(r->dir_sources[i]);
		sk_X509_pop_free(r->dir_certs, X509_free);
	}
	free(r->dir_sources);
	free(r);
}

p11s_rc p11s_recipients_add_cert(p11s_recipients *r, X509 *cert, const char *source,
                                 p11s_error *err)
{
	for (size_t i = 0; i < r->rcpt.n; i++)
		if (X509_cmp(r->rcpt.v[i].cert, cert) == 0)
			return P11S_OK;
	if (p11i_vec_reserve(&r->rcpt, 1) != 0)
		return p11i_err_nomem(err);
	r->rcpt.v[r->rcpt.n].source = p11i_strdup(source ? source : "");
	if (r->rcpt.v[r->rcpt.n].source == NULL)
		return p11i_err_nomem(err);
	X509_up_ref(cert);
	r->rcpt.v[r->rcpt.n].cert = cert;
	r->rcpt.n++;
	return P11S_OK;
}

p11s_rc p11s_recipients_add_file(p11s_recipients *r, const char *path, p11s_error *err)
{
	p11s_cert_list *list = NULL;
	p11s_rc rc;
	char *src;

	rc = p11s_certs_read_file(path, NULL, &list, err);
	if (rc != P11S_OK)
		return rc;
	src = p11i_asprintf("file:%s", path);
	if (src == NULL) {
		p11s_cert_list_free(list);
		return p11i_err_nomem(err);
	}
	for (size_t i = 0; rc == P11S_OK && i < p11s_cert_list_count(list); i++)
		rc = p11s_recipients_add_cert(r, p11s_cert_list_get(list, i), src, err);
	free(src);
	p11s_cert_list_free(list);
	return rc;
}

p11s_rc p11s_recipients_add_uri(p11s_recipients *r, p11s_ctx *ctx, const char *uri, p11s_error *err)
{
	p11s_objects_opts o = {.certificates = 1};
	p11s_object_list *list = NULL;
	const p11s_object *cert = NULL;
	p11s_rc rc;
	X509 *x;

	rc = p11s_select_certificate(ctx, uri, &o, &list, &cert, err);
	if (rc != P11S_OK) {
		p11s_object_list_free(list);
		return rc;
	}
	x = p11s_object_x509(cert);
	if (x == NULL)
		rc = p11i_err(err, P11S_E_INPUT, "the certificate %s does not parse",
		              p11s_object_uri(cert));
	else
		rc = p11s_recipients_add_cert(r, x, p11s_object_uri(cert), err);
	p11s_object_list_free(list);
	return rc;
}

p11s_rc p11s_recipients_set_dir(p11s_recipients *r, const char *dir, p11s_error *err)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	p11s_rc rc = P11S_OK;

	if (d == NULL)
		return p11i_err(err, P11S_E_IO, "cannot read the directory '%s'", dir);
	if (r->dir_certs == NULL && (r->dir_certs = sk_X509_new_null()) == NULL) {
		closedir(d);
		return p11i_err_nomem(err);
	}
	while (rc == P11S_OK && (e = readdir(d)) != NULL) {
		p11s_cert_list *list = NULL;
		struct stat st;
		char *path;

		if (e->d_name[0] == '.')
			continue;
		path = p11i_asprintf("%s/%s", dir, e->d_name);
		if (path == NULL) {
			rc = p11i_err_nomem(err);
			break;
		}
		/* Files that hold no certificate (notes, keys) are not contacts. */
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
		    p11s_certs_read_file(path, NULL, &list, NULL) != P11S_OK) {
			free(path);
			continue;
		}
		for (size_t i = 0; i < p11s_cert_list_count(list); i++) {
			X509 *x = p11s_cert_list_get(list, i);
			int n = sk_X509_num(r->dir_certs);
			char **s = realloc(r->dir_sources, (size_t)(n + 1) * sizeof(*s));

			if (s == NULL) {
				rc = p11i_err_nomem(err);
				break;
			}
			r->dir_sources = s;
			s[n] = p11i_asprintf("file:%s", path);
			if (s[n] == NULL || !sk_X509_push(r->dir_certs, x)) {
				free(s[n]);
				rc = p11i_err_nomem(err);
				break;
			}
			X509_up_ref(x);
		}
		p11s_cert_list_free(list);
		free(path);
	}
	closedir(d);
	ERR_clear_error();
	return rc;
}

/* Encryption needs the address in the SAN as a mailbox, as the upload rules do. */
static int cert_has_email(X509 *x, const char *email)
{
	return p11i_cert_has_mailbox(x, email, P11I_MAILBOX_IN_SAN) != 0;
}

struct candidates {
	X509 *cert[64];
	char *source[64];
	size_t n;
};

static void candidate_add(struct candidates *c, X509 *x, const char *source)
{
	if (c->n == sizeof(c->cert) / sizeof(c->cert[0]))
		return;
	X509_up_ref(x);
	c->cert[c->n] = x;
	c->source[c->n] = p11i_strdup(source);
	c->n++;
}

p11s_rc p11s_recipients_add_email(p11s_recipients *r, p11s_ctx *ctx, const char *email, time_t at,
                                  p11s_error *err)
{
	struct candidates c = {0};
	p11s_object_list *list = NULL;
	p11s_rc rc = P11S_OK;
	size_t fit = 0;
	char bad[128];

	if (email == NULL || !p11i_mailbox_parse(email, strlen(email), bad, sizeof(bad)))
		return p11i_err(err, P11S_E_USAGE, "'%s' is not an e-mail address (%s)",
		                email ? email : "", bad);
	for (int i = 0; r->dir_certs && i < sk_X509_num(r->dir_certs); i++)
		if (cert_has_email(sk_X509_value(r->dir_certs, i), email))
			candidate_add(&c, sk_X509_value(r->dir_certs, i), r->dir_sources[i]);
	if (ctx != NULL) {
		p11s_objects_opts o = {.certificates = 1};

		rc = p11s_objects(ctx, NULL, &o, &list, err);
		for (size_t i = 0; rc == P11S_OK && i < p11s_object_list_count(list); i++) {
			const p11s_object *obj = p11s_object_list_get(list, i);
			X509 *x = p11s_object_x509(obj);

			if (p11s_object_get_class(obj) == P11S_OBJ_CERTIFICATE && x != NULL &&
			    cert_has_email(x, email))
				candidate_add(&c, x, p11s_object_uri(obj));
		}
		p11s_object_list_free(list);
	}
	if (rc == P11S_OK && c.n == 0)
		rc = p11i_err(err, P11S_E_NOT_FOUND, "no certificate for %s %s", email,
		              ctx ? "on the token or in the recipient directory"
		                  : "in the recipient directory");
	if (rc == P11S_OK) {
		char *why[64] = {0};

		for (size_t i = 0; i < c.n; i++) {
			p11s_rc crc = P11S_OK;

			why[i] = p11s_recipient_refusal(c.cert[i], at, &crc);
			if (crc == P11S_E_NOMEM)
				rc = p11i_err_nomem(err);
			if (why[i] == NULL)
				fit++;
		}
		for (size_t i = 0; rc == P11S_OK && i < c.n; i++)
			if (fit == 0 || why[i] == NULL)
				rc = p11s_recipients_add_cert(r, c.cert[i], c.source[i], err);
		for (size_t i = 0; i < c.n; i++)
			free(why[i]);
	}
	for (size_t i = 0; i < c.n; i++) {
		X509_free(c.cert[i]);
		free(c.source[i]);
	}
	return rc;
}

size_t p11s_recipients_count(const p11s_recipients *r)
{
	return r ? r->rcpt.n : 0;
}

X509 *p11s_recipients_cert(const p11s_recipients *r, size_t i)
{
	return i < r->rcpt.n ? r->rcpt.v[i].cert : NULL;
}

const char *p11s_recipients_source(const p11s_recipients *r, size_t i)
{
	return i < r->rcpt.n ? r->rcpt.v[i].source : NULL;
}

/* ----------------------------------------------------------------- checks */

char *p11s_recipient_refusal(X509 *cert, time_t at, p11s_rc *rc)
{
	p11s_validate_opts vo = {.at = at ? at : time(NULL), .warn_days = 30};
	p11s_verdict *v = NULL;
	EVP_PKEY *pk = X509_get0_pubkey(cert);
	uint32_t ku = X509_get_key_usage(cert);
	char *why = NULL, when[32];
	p11s_rc r;

	if (rc != NULL)
		*rc = P11S_OK;
	r = p11s_validate(cert, NULL, &vo, &v, NULL);
	if (r != P11S_OK) {
		if (rc != NULL)
			*rc = r;
		return NULL;
	}
	if (!p11s_verdict_accepted(v)) {
		char *failures = p11s_verdict_failures(v, 1);

		why = failures ? p11i_asprintf("rejected by the S/MIME rules: %s", failures)
		               : p11i_strdup("rejected by the S/MIME rules");
		free(failures);
		if (rc != NULL)
			*rc = P11S_E_REJECTED;
	} else if (p11s_verdict_is_ca(v)) {
		why = p11i_strdup("a CA certificate, not a person's");
		if (rc != NULL)
			*rc = P11S_E_REJECTED;
	} else if (!p11s_verdict_usable_for_outgoing(v)) {
		const char *msg = NULL;

		p11s_verdict_rule(v, P11S_RULE_VALIDITY, &msg);
		why = p11i_asprintf("not valid at %s%s%s",
		                    p11s_time_format(vo.at, when, sizeof(when)), msg ? ": " : "",
		                    msg ? msg : "");
		if (rc != NULL)
			*rc = P11S_E_NOT_VALID_NOW;
	} else if (pk != NULL && EVP_PKEY_is_a(pk, "RSA") && !(ku & X509v3_KU_KEY_ENCIPHERMENT)) {
		why = p11i_strdup("its Key Usage lacks keyEncipherment, which RSA key transport "
		                  "needs");
		if (rc != NULL)
			*rc = P11S_E_REJECTED;
	} else if (pk != NULL && EVP_PKEY_is_a(pk, "EC") && !(ku & X509v3_KU_KEY_AGREEMENT)) {
		why =
		    p11i_strdup("its Key Usage lacks keyAgreement, which ECDH key agreement needs");
		if (rc != NULL)
			*rc = P11S_E_REJECTED;
	} else if (pk == NULL || (!EVP_PKEY_is_a(pk, "RSA") && !EVP_PKEY_is_a(pk, "EC"))) {
		why = p11i_strdup("its key is neither RSA nor EC");
		if (rc != NULL)
			*rc = P11S_E_REJECTED;
	}
	p11s_verdict_free(v);
	ERR_clear_error();
	if (why == NULL && rc != NULL && *rc != P11S_OK)
		*rc = P11S_E_NOMEM;
	return why;
}

const char *p11s_encrypt_key_management(X509 *cert, const p11s_encrypt_opts *opts)
{
	EVP_PKEY *pk = X509_get0_pubkey(cert);
	p11s_encrypt_opts defaults = {0};

	if (opts == NULL)
		opts = &defaults;

	if (pk != NULL && EVP_PKEY_is_a(pk, "EC"))
		return "ECDH dhSinglePass-stdDH-sha256kdf, AES key wrap";
	if (pk != NULL && EVP_PKEY_is_a(pk, "RSA"))
		return opts->oaep ? "RSA-OAEP SHA-256" : "RSA PKCS#1 v1.5";
	return "unsupported";
}

/* Every To/Cc address some recipient certificate names; the rest are candidates in @p err. */
static p11s_rc check_coverage(const p11i_headers *h, const p11s_recipients *r, p11s_error *err)
{
	static const char *const names[] = {"To", "Cc", NULL};
	char **addrs = NULL;
	size_t n = 0, missing = 0;
	p11s_rc rc;

	rc = p11i_headers_addresses(h, names, &addrs, &n, err);
	if (rc != P11S_OK)
		return rc;
	for (size_t i = 0; i < n; i++) {
		int found = 0;

		for (size_t j = 0; j < r->rcpt.n && !found; j++)
			found = cert_has_email(r->rcpt.v[j].cert, addrs[i]);
		if (!found)
			missing++;
	}
	if (missing > 0) {
		rc = p11i_err(err, P11S_E_MISSING_RECIPIENT_CERT,
		              "no recipient certificate for %zu of the message's To/Cc addresses "
		              "(add --recipient for each, or --no-check-recipients):",
		              missing);
		for (size_t i = 0; i < n; i++) {
			int found = 0;

			for (size_t j = 0; j < r->rcpt.n && !found; j++)
				found = cert_has_email(r->rcpt.v[j].cert, addrs[i]);
			if (!found)
				p11i_err_add_candidate(err, addrs[i]);
		}
	}
	p11s_strv_free(addrs);
	return rc;
}

static p11s_rc check_recipients(const p11s_recipients *r, time_t at, p11s_error *err)
{
	p11s_rc rc = P11S_OK, first = P11S_OK;
	size_t refused = 0;
	char **why;

	why = calloc(r->rcpt.n ? r->rcpt.n : 1, sizeof(*why));
	if (why == NULL)
		return p11i_err_nomem(err);
	for (size_t i = 0; i < r->rcpt.n; i++) {
		why[i] = p11s_recipient_refusal(r->rcpt.v[i].cert, at, &rc);
		if (why[i] == NULL && rc != P11S_OK)
			goto out;
		if (why[i] != NULL) {
			if (first == P11S_OK)
				first = rc;
			refused++;
		}
	}
	rc = P11S_OK;
	if (refused > 0) {
		rc =
		    p11i_err(err, first,
		             "%zu recipient certificate%s refused; nothing was encrypted:", refused,
		             refused > 1 ? "s" : "");
		for (size_t i = 0; i < r->rcpt.n; i++) {
			char *subject, *line;

			if (why[i] == NULL)
				continue;
			subject = p11s_cert_name_string(X509_get_subject_name(r->rcpt.v[i].cert));
			line = p11i_asprintf("%s (%s): %s", subject ? subject : "?",
			                     r->rcpt.v[i].source, why[i]);
			if (line != NULL)
				p11i_err_add_candidate(err, line);
			free(line);
			free(subject);
		}
	}
out:
	for (size_t i = 0; i < r->rcpt.n; i++)
		free(why[i]);
	free(why);
	if (rc != P11S_OK && p11s_error_rc(err) != rc)
		return p11i_err(err, rc, "cannot check the recipient certificates");
	return rc;
}

/* ----------------------------------------------------------------- encrypt */

static p11s_rc add_recipients(CMS_ContentInfo *cms, const p11s_recipients *r,
                              const p11s_encrypt_opts *opts, p11s_error *err)
{
	for (size_t i = 0; i < r->rcpt.n; i++) {
		X509 *x = r->rcpt.v[i].cert;
		EVP_PKEY *pk = X509_get0_pubkey(x);
		CMS_RecipientInfo *ri;
		EVP_PKEY_CTX *pctx;
		int ok = 1;

		/* CMS_KEY_PARAM: the key-management parameters are ours to set. */
		ri = CMS_add1_recipient_cert(cms, x, CMS_KEY_PARAM);
		pctx = ri ? CMS_RecipientInfo_get0_pkey_ctx(ri) : NULL;
		if (pctx == NULL)
			return p11i_err_ossl(err, P11S_E_CRYPTO, "cannot add recipient %s",
			                     r->rcpt.v[i].source);
		if (EVP_PKEY_is_a(pk, "RSA")) {
			if (opts->oaep)
				ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) >
				         0 &&
				     EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256()) > 0 &&
				     EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0;
			else
				ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0;
		} else if (EVP_PKEY_is_a(pk, "EC")) {
			/* OpenSSL would pick the SHA-1 KDF; RFC 8551 wants SHA-256. */
			ok = EVP_PKEY_CTX_set_ecdh_kdf_md(pctx, EVP_sha256()) > 0;
		}
		if (!ok)
			return p11i_err_ossl(err, P11S_E_CRYPTO,
			                     "cannot set the key management for recipient %s",
			                     r->rcpt.v[i].source);
	}
	return P11S_OK;
}

static int write_line(BIO *out, const char *eol, const char *line)
{
	return BIO_puts(out, line) > 0 && BIO_puts(out, eol) > 0;
}

/* Content-Transfer-Encoding: binary (RFC 2045): line ends are data there. */
static int is_binary(const p11i_headers *h)
{
	char *cte = p11i_mime_transfer_encoding(h);
	int binary = cte != NULL && strcasecmp(cte, "binary") == 0;

	free(cte);
	return binary;
}

p11s_rc p11s_encrypt(BIO *in, BIO *out, const p11s_recipients *r, const p11s_encrypt_opts *opts,
                     p11s_error *err)
{
	p11i_headers *h = NULL;
	CMS_ContentInfo *cms = NULL;
	BIO *conv = NULL, *b64 = NULL, *cmsbio = NULL, *plain = NULL, *top = NULL;
	const char *eol, *type;
	p11s_rc rc;
	time_t at;
	char buf[16384];
	int n;
	p11s_encrypt_opts defaults = {0};

	if (opts == NULL)
		opts = &defaults;
	if (r == NULL || r->rcpt.n == 0)
		return p11i_err(err, P11S_E_USAGE,
		                "no recipient: name at least one with --recipient");
	at = opts->at ? opts->at : time(NULL);
	rc = check_recipients(r, at, err);
	if (rc != P11S_OK)
		return rc;
	rc = p11i_headers_read(in, 0, &h, err);
	if (rc != P11S_OK)
		return rc;
	if (!opts->no_check_to) {
		rc = check_coverage(h, r, err);
		if (rc != P11S_OK)
			goto out;
	}

	cms = CMS_encrypt(NULL, NULL, evp_cipher(opts->cipher),
	                  CMS_BINARY | CMS_STREAM | CMS_PARTIAL);
	if (cms == NULL) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot set up the encryption");
		goto out;
	}
	rc = add_recipients(cms, r, opts, err);
	if (rc != P11S_OK)
		goto out;

	eol = p11i_headers_eol(h) == P11I_EOL_LF ? "\n" : "\r\n";
	type = opts->cipher == P11S_CIPHER_AES256_GCM
	           ? "Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; "
	             "name=\"smime.p7m\""
	           : "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; "
	             "name=\"smime.p7m\"";
	/* DER and PEM: the CMS structure alone, for clients that write their own headers. */
	if (opts->outform == P11S_FORM_SMIME) {
		rc = p11i_headers_write(h, P11I_HDR_OUTER, out, err);
		if (rc != P11S_OK)
			goto out;
	}
	if (opts->outform == P11S_FORM_SMIME &&
	    (!write_line(out, eol, "MIME-Version: 1.0") || !write_line(out, eol, type) ||
	     !write_line(out, eol, "Content-Transfer-Encoding: base64") ||
	     !write_line(out, eol, "Content-Disposition: attachment; filename=\"smime.p7m\"") ||
	     BIO_puts(out, eol) <= 0)) {
		rc = p11i_err(err, P11S_E_IO, "cannot write the output");
		goto out;
	}
	if (opts->outform == P11S_FORM_PEM && BIO_puts(out, "-----BEGIN PKCS7-----\n") <= 0) {
		rc = p11i_err(err, P11S_E_IO, "cannot write the output");
		goto out;
	}

	/* out <- [LF to CRLF] <- base64 <- CMS stream <- CRLF canonicaliser <- entity */
	if (opts->outform == P11S_FORM_SMIME && p11i_headers_eol(h) == P11I_EOL_CRLF) {
		conv = p11i_bio_eol_new(P11I_EOL_CRLF);
		if (conv == NULL) {
			rc = p11i_err_nomem(err);
			goto out;
		}
		BIO_push(conv, out);
	}
	b64 = opts->outform == P11S_FORM_DER ? NULL : BIO_new(BIO_f_base64());
	if (b64 == NULL && opts->outform != P11S_FORM_DER) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	if (b64 != NULL)
		BIO_push(b64, conv ? conv : out);
	cmsbio = BIO_new_CMS(b64 ? b64 : out, cms);
	if (cmsbio == NULL) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot start the encryption");
		goto out;
	}
	plain = p11i_bio_eol_new(P11I_EOL_CRLF);
	if (plain == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	top = BIO_push(plain, cmsbio);

	rc = p11i_headers_write(h, P11I_HDR_CONTENT, top, err);
	if (rc != P11S_OK)
		goto out;
	if (BIO_write(top, "\r\n", 2) != 2) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot encrypt the message");
		goto out;
	}
	if (p11i_headers_body_follows(h)) {
		/*
		 * A binary body is bytes, not lines: it goes in as it is.  The
		 * converter holds nothing back after the blank line above.
		 */
		BIO *body = is_binary(h) ? cmsbio : top;

		while ((n = BIO_read(in, buf, sizeof(buf))) > 0)
			if (BIO_write(body, buf, n) != n) {
				rc =
				    p11i_err_ossl(err, P11S_E_CRYPTO, "cannot encrypt the message");
				goto out;
			}
		if (n < 0 && !BIO_eof(in)) {
			rc = p11i_err_ossl(err, P11S_E_IO, "cannot read the message");
			goto out;
		}
	}
	/* The flush ends the content, writes the tag (GCM) and the last base64 line. */
	if (BIO_flush(top) <= 0) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot finish the encryption");
		goto out;
	}
	if (opts->outform == P11S_FORM_PEM && BIO_puts(out, "-----END PKCS7-----\n") <= 0) {
		rc = p11i_err(err, P11S_E_IO, "cannot write the output");
		goto out;
	}
	rc = P11S_OK;
out:
	/* Free the filters we stacked, never @p out itself. */
	p11i_bio_free_upto(top ? top : cmsbio, b64 ? b64 : out);
	if (b64 != NULL) {
		BIO_pop(b64);
		BIO_free(b64);
	}
	if (conv != NULL) {
		BIO_pop(conv);
		BIO_free(conv);
	}
	CMS_ContentInfo_free(cms);
	p11i_headers_free(h);
	OPENSSL_cleanse(buf, sizeof(buf));
	ERR_clear_error();
	return rc;
}
