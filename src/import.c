/*
 * p11smime import: a certificate goes onto the token beside the private
 * key it belongs to (found by comparing public keys, not by trusting a
 * file name or a label); a PKCS#12 file brings its key along, written
 * non-extractable, and its chain.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "p11smime/certs.h"
#include "p11smime/lifecycle.h"
#include "mime.h"

void p11s_import_result_free(p11s_import_result *r)
{
	if (r == NULL)
		return;
	free(r->cert_uri);
	free(r->key_uri);
	free(r->public_uri);
	for (size_t i = 0; i < r->chain_count; i++)
		free(r->chain_uris[i]);
	free(r->chain_uris);
	free(r->subject);
	free(r);
}

p11s_rc p11s_file_is_pkcs12(const char *path, int *yes, p11s_error *err)
{
	BIO *b = BIO_new_file(path, "rb");
	PKCS12 *p12;

	*yes = 0;
	if (b == NULL) {
		ERR_clear_error();
		return p11i_err(err, P11S_E_IO, "cannot open %s", path);
	}
	p12 = d2i_PKCS12_bio(b, NULL);
	*yes = p12 != NULL;
	PKCS12_free(p12);
	BIO_free(b);
	ERR_clear_error();
	return P11S_OK;
}

/* The same certificate (byte for byte) on the token, or NULL. */
static const p11s_object *cert_on_token(const p11s_object_list *l, X509 *x)
{
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	const p11s_object *found = NULL;

	for (size_t i = 0; len > 0 && i < p11s_object_list_count(l) && found == NULL; i++) {
		const p11s_object *o = p11s_object_list_get(l, i);
		size_t olen;
		const unsigned char *od;

		if (p11s_object_get_class(o) != P11S_OBJ_CERTIFICATE)
			continue;
		od = p11s_object_value(o, &olen);
		if (od != NULL && olen == (size_t)len && memcmp(od, der, olen) == 0)
			found = o;
	}
	OPENSSL_free(der);
	return found;
}

/* The private key on the token whose public half is @p x's key, or NULL. */
static const p11s_object *key_on_token(const p11s_object_list *l, X509 *x)
{
	EVP_PKEY *want = X509_get0_pubkey(x);

	for (size_t i = 0; want != NULL && i < p11s_object_list_count(l); i++) {
		const p11s_object *o = p11s_object_list_get(l, i);
		EVP_PKEY *pk;

		if (p11s_object_get_class(o) != P11S_OBJ_PRIVATE_KEY)
			continue;
		pk = p11s_object_public_key(l, o);
		if (pk != NULL && EVP_PKEY_eq(pk, want) == 1)
			return o;
	}
	ERR_clear_error();
	return NULL;
}

/* A label for a certificate without one: its first SAN address, its CN, or its subject. */
static char *default_label(X509 *x)
{
	size_t n = 0;
	char **emails = p11s_cert_san_emails(x, &n);
	char *label = NULL;
	int idx;

	if (emails != NULL && n > 0)
		label = strdup(emails[0]);
	p11s_strv_free(emails);
	if (label != NULL)
		return label;
	idx = X509_NAME_get_index_by_NID(X509_get_subject_name(x), NID_commonName, -1);
	if (idx >= 0) {
		ASN1_STRING *s =
		    X509_NAME_ENTRY_get_data(X509_NAME_get_entry(X509_get_subject_name(x), idx));
		unsigned char *u = NULL;
		int len = ASN1_STRING_to_UTF8(&u, s);

		if (len > 0)
			label = p11i_strndup((const char *)u, (size_t)len);
		OPENSSL_free(u);
		if (label != NULL)
			return label;
	}
	return p11s_cert_name_string(X509_get_subject_name(x));
}

/* CKA_ID for a certificate without a key: the SHA-1 of its public key, as most tools do. */
static int pubkey_id(X509 *x, unsigned char *id, size_t *len)
{
	unsigned int n = 0;

	if (!X509_pubkey_digest(x, EVP_sha1(), id, &n))
		return 0;
	*len = n;
	return 1;
}

static int push_uri(p11s_import_result *r, const char *uri)
{
	char **n = realloc(r->chain_uris, (r->chain_count + 1) * sizeof(*n));

	if (n == NULL)
		return 0;
	r->chain_uris = n;
	if ((n[r->chain_count] = strdup(uri)) == NULL)
		return 0;
	r->chain_count++;
	return 1;
}

/* A certificate of a PKCS#12 chain: stored without a key, unless it is there already. */
static p11s_rc import_chain_cert(p11s_ctx *ctx, const p11s_token *t, const p11s_object_list *l,
                                 X509 *x, p11s_import_result *r, p11s_error *err)
{
	const p11s_object *there = cert_on_token(l, x);
	unsigned char id[EVP_MAX_MD_SIZE];
	size_t id_len = 0;
	char *label, *uri = NULL;
	p11s_rc rc;
	int ca = (X509_get_extension_flags(x) & EXFLAG_CA) != 0;

	if (there != NULL)
		return push_uri(r, p11s_object_uri(there)) ? P11S_OK : p11i_err_nomem(err);
	if (!pubkey_id(x, id, &id_len))
		return p11i_err_ossl(err, P11S_E_INPUT, "cannot hash a chain certificate's key");
	label = default_label(x);
	if (label == NULL)
		return p11i_err_nomem(err);
	rc = p11s_token_write_cert(ctx, t, x, id, id_len, label,
	                           ca ? P11S_CERT_AUTHORITY : P11S_CERT_OTHER, &uri, err);
	free(label);
	if (rc == P11S_OK && !push_uri(r, uri))
		rc = p11i_err_nomem(err);
	free(uri);
	return rc;
}

p11s_rc p11s_import(p11s_ctx *ctx, const char *path, const p11s_import_opts *opts,
                    p11s_import_result **out, p11s_error *err)
{
	p11s_cert_list *certs = NULL;
	p11s_token_list *tl = NULL;
	const p11s_token *t;
	p11s_object_list *objs = NULL;
	p11s_import_result *r = NULL;
	const p11s_object *key = NULL, *there;
	EVP_PKEY *soft_key = NULL;
	X509 *x = NULL;
	size_t xi = 0, ncerts;
	unsigned char id[EVP_MAX_MD_SIZE];
	size_t id_len = 0;
	char *label = NULL;
	int category;
	p11s_rc rc;
	p11s_import_opts defaults = {0};

	*out = NULL;
	if (opts == NULL)
		opts = &defaults;
	/* Loading the module can leave stale reasons that the reader would take for its own. */
	ERR_clear_error();
	rc = p11s_certs_read_file(path, opts->p12_pass ? opts->p12_pass : NULL, &certs, err);
	if (rc != P11S_OK)
		return rc;
	ncerts = p11s_cert_list_count(certs);
	if (opts->p12_pass != NULL) {
		if (strcmp(p11s_cert_list_format(certs), "PKCS#12") != 0) {
			rc = p11i_err(err, P11S_E_USAGE,
			              "%s is not a PKCS#12 file; import certificates without "
			              "--p12-pass-source",
			              path);
			goto out;
		}
		for (xi = 0; xi < ncerts && soft_key == NULL; xi++)
			soft_key = p11s_cert_list_key(certs, xi);
		if (soft_key == NULL) {
			rc = p11i_err(err, P11S_E_INPUT,
			              "%s holds no private key that belongs to one of its "
			              "certificates",
			              path);
			goto out;
		}
		xi--;
	} else {
		if (strcmp(p11s_cert_list_format(certs), "PKCS#12") == 0) {
			rc = p11i_err(err, P11S_E_USAGE,
			              "%s is a PKCS#12 file: import it with --p12-pass-source",
			              path);
			goto out;
		}
		if (ncerts != 1) {
			rc = p11i_err(err, P11S_E_USAGE,
			              "%s holds %zu certificates; import them one file at a time",
			              path, ncerts);
			goto out;
		}
		xi = 0;
	}
	x = p11s_cert_list_get(certs, xi);
	r = calloc(1, sizeof(*r));
	if (r == NULL || (r->subject = p11s_cert_name_string(X509_get_subject_name(x))) == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	rc = p11s_token_select(ctx, opts->token, &tl, &t, err);
	if (rc != P11S_OK)
		goto out;
	rc = p11s_token_login(ctx, t, opts->token, err);
	if (rc == P11S_OK) {
		p11s_objects_opts o = {.login = 1};

		rc = p11s_objects(ctx, p11s_token_uri(t), &o, &objs, err);
	}
	if (rc != P11S_OK)
		goto out;
	key = key_on_token(objs, x);
	there = cert_on_token(objs, x);
	if (there != NULL) {
		const p11s_object *k = p11s_object_private_key(there);

		r->already = 1;
		if ((r->cert_uri = strdup(p11s_object_uri(there))) == NULL ||
		    (k != NULL && (r->key_uri = strdup(p11s_object_uri(k))) == NULL))
			rc = p11i_err_nomem(err);
		goto chain;
	}
	if (key == NULL && soft_key != NULL) {
		/* The PKCS#12 key goes on the token, with the certificate beside it. */
		char *priv = NULL, *pub = NULL;
		int alen = 0;
		const unsigned char *alias = X509_alias_get0(x, &alen);

		/* The PKCS#12 friendlyName, as the file's owner named it. */
		label = opts->label         ? strdup(opts->label)
		        : alias && alen > 0 ? p11i_strndup((const char *)alias, (size_t)alen)
		                            : default_label(x);
		if (label == NULL) {
			rc = p11i_err_nomem(err);
			goto out;
		}
		rc = p11s_token_free_id(ctx, t, id, &id_len, err);
		if (rc == P11S_OK)
			rc = p11s_token_write_keypair(ctx, t, soft_key, id, id_len, label, &priv,
			                              &pub, err);
		if (rc != P11S_OK)
			goto out;
		r->key_written = 1;
		r->key_uri = priv;
		r->public_uri = pub;
		rc = p11s_token_write_cert(ctx, t, x, id, id_len, label, P11S_CERT_OWN,
		                           &r->cert_uri, err);
		if (rc != P11S_OK) {
			/* Whole or not at all. */
			p11s_token_forget(ctx, t, r->public_uri);
			p11s_token_forget(ctx, t, r->key_uri);
			goto out;
		}
		goto chain;
	}
	if (key != NULL) {
		const unsigned char *kid = p11s_object_id(key, &id_len);

		if (kid == NULL) {
			rc =
			    p11i_err(err, P11S_E_TOKEN,
			             "the matching key %s has no CKA_ID to pair the certificate by",
			             p11s_object_uri(key));
			goto out;
		}
		memcpy(id, kid, id_len < sizeof(id) ? id_len : sizeof(id));
		if (id_len > sizeof(id)) {
			rc = p11i_err(err, P11S_E_TOKEN, "the matching key's CKA_ID is too long");
			goto out;
		}
		label = opts->label                      ? strdup(opts->label)
		        : p11s_object_label(key) != NULL ? strdup(p11s_object_label(key))
		                                         : default_label(x);
		category = P11S_CERT_OWN;
		if ((r->key_uri = strdup(p11s_object_uri(key))) == NULL) {
			rc = p11i_err_nomem(err);
			goto out;
		}
	} else if (opts->ca) {
		if (!(X509_get_extension_flags(x) & EXFLAG_CA)) {
			rc = p11i_err(err, P11S_E_REJECTED,
			              "%s is not a CA certificate (no Basic Constraints CA:TRUE); "
			              "for someone else's certificate use --no-key",
			              path);
			goto out;
		}
		category = P11S_CERT_AUTHORITY;
	} else if (opts->no_key) {
		category = P11S_CERT_OTHER;
	} else {
		rc = p11i_err(err, P11S_E_KEY_MISMATCH,
		              "no private key on token '%s' matches the certificate in %s; a CA "
		              "certificate is imported with --ca, someone else's with --no-key",
		              p11s_token_label(t), path);
		goto out;
	}
	if (key == NULL) {
		if (!pubkey_id(x, id, &id_len)) {
			rc = p11i_err_ossl(err, P11S_E_INPUT, "cannot hash the certificate's key");
			goto out;
		}
		label = opts->label ? strdup(opts->label) : default_label(x);
	}
	if (label == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	rc = p11s_token_write_cert(ctx, t, x, id, id_len, label, category, &r->cert_uri, err);
	if (rc != P11S_OK)
		goto out;
chain:
	for (size_t i = 0; rc == P11S_OK && soft_key != NULL && i < ncerts; i++)
		if (i != xi)
			rc = import_chain_cert(ctx, t, objs, p11s_cert_list_get(certs, i), r, err);
	if (rc != P11S_OK)
		goto out;
	*out = r;
	r = NULL;
out:
	free(label);
	p11s_import_result_free(r);
	p11s_object_list_free(objs);
	p11s_token_list_free(tl);
	p11s_cert_list_free(certs);
	ERR_clear_error();
	return rc;
}
