#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "p11.h"

/* @p addr anywhere in @p der, ignoring ASCII case. */
static int contains_nocase(const unsigned char *der, size_t len, const char *addr)
{
	size_t n = strlen(addr);
	int first = tolower((unsigned char)addr[0]);

	for (size_t i = 0; n > 0 && i + n <= len; i++)
		if (tolower(der[i]) == first && strncasecmp((const char *)der + i, addr, n) == 0)
			return 1;
	return 0;
}

/*
 * Only the SAN is read: the light parse skips the costly public key
 * decoding.  An rfc822Name is an IA5String, its bytes as they are in the
 * DER, so a certificate without the address's bytes anywhere cannot match
 * and is not parsed at all (on a token of many certificates, most).
 */
static int der_has_email(const unsigned char *der, size_t der_len, void *arg)
{
	const char *addr = arg;
	X509 *x;
	GENERAL_NAMES *gens;
	int found = 0;

	if (der == NULL || !contains_nocase(der, der_len, addr))
		return 0;
	x = p11i_x509_parse_light(der, der_len);
	gens = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const unsigned char *d;
		int len;

		if (g->type != GEN_EMAIL)
			continue;
		d = ASN1_STRING_get0_data(g->d.rfc822Name);
		len = ASN1_STRING_length(g->d.rfc822Name);
		found = len >= 0 && (size_t)len == strlen(addr) &&
		        strncasecmp((const char *)d, addr, (size_t)len) == 0;
	}
	GENERAL_NAMES_free(gens);
	X509_free(x);
	ERR_clear_error();
	return found;
}

static int has_email(const p11s_object *o, const char *addr)
{
	return der_has_email(o->der, o->der_len, (void *)addr);
}

/*
 * An address names no token, so a login cannot be limited by the URI as
 * the PIN policy wants: logging in to every token present would try one
 * token's PIN on all of them (a smartcard's PIN on a YubiKey costs the
 * YubiKey a try).  With one initialised token there is no question.  With
 * several, the certificate is found among the public objects first, and
 * only the token holding it is logged in to; when no public certificate
 * has the address, no token is logged in to (a pkcs11: URI naming the
 * token does that).  *multi tells the caller why nothing was found.
 */
static p11s_rc enumerate_address(p11s_ctx *ctx, P11KitUri *u, const struct der_filter *f,
                                 const char *addr, p11s_object_list **out, int *multi,
                                 p11s_error *err)
{
	p11s_object_list *pub = NULL;
	p11s_token_list *tl = NULL;
	const p11s_token *holder = NULL;
	P11KitUri *tu = NULL;
	size_t usable = 0;
	int holders = 0;
	p11s_rc rc;

	*multi = 0;
	rc = p11i_tokens_matching(ctx, u, &tl, err);
	if (rc != P11S_OK)
		return rc;
	for (size_t i = 0; i < tl->count; i++)
		usable += (tl->tokens[i]->info.flags & CKF_TOKEN_INITIALIZED) != 0;
	p11s_token_list_free(tl);
	if (usable <= 1)
		return p11i_objects_enumerate_der(ctx, u, 1, f, out, err);
	*multi = 1;
	rc = p11i_objects_enumerate_der(ctx, u, 0, f, &pub, err);
	if (rc != P11S_OK)
		return rc;
	for (size_t i = 0; i < pub->all_count; i++) {
		const p11s_object *o = pub->all[i];

		if (o->cls != P11S_OBJ_CERTIFICATE || !has_email(o, addr) || o->token == holder)
			continue;
		holder = o->token;
		holders++;
	}
	/* None (nothing to log in to) or several (ambiguous, whatever a login shows). */
	if (holders != 1) {
		*out = pub;
		return P11S_OK;
	}
	rc = p11i_uri_parse(holder->uri, &tu, err);
	if (rc == P11S_OK)
		rc = p11i_objects_enumerate_der(ctx, tu, 1, f, out, err);
	p11_kit_uri_free(tu);
	p11s_object_list_free(pub);
	return rc;
}

static int add_unique(const p11s_object **v, size_t *n, const p11s_object *o)
{
	for (size_t i = 0; i < *n; i++)
		if (v[i] == o)
			return 0;
	v[(*n)++] = o;
	return 1;
}

p11s_rc p11s_select_certificate(p11s_ctx *ctx, const char *selector, const p11s_objects_opts *opts,
                                p11s_object_list **list, const p11s_object **cert, p11s_error *err)
{
	P11KitUri *u = NULL;
	p11s_object_list *l = NULL;
	const p11s_object **found = NULL;
	size_t nfound = 0;
	int is_uri, multi = 0;
	p11s_rc rc;

	*list = NULL;
	*cert = NULL;
	if (selector == NULL || *selector == '\0')
		return p11i_err(err, P11S_E_USAGE,
		                "no certificate given (a pkcs11: URI or an e-mail address)");
	is_uri = strncmp(selector, "pkcs11:", 7) == 0;
	if (!is_uri && strchr(selector, '@') == NULL) {
		/* "PKCS11:...;pin-value=..." lands here too. */
		char *shown = p11i_uri_redact(selector);

		rc = p11i_err(err, P11S_E_BAD_URI,
		              "'%s' is neither a pkcs11: URI nor an e-mail address",
		              shown ? shown : "(the selector)");
		free(shown);
		return rc;
	}
	rc = p11i_uri_parse(is_uri ? selector : NULL, &u, err);
	if (rc != P11S_OK)
		return rc;
	if (is_uri) {
		rc = p11i_objects_enumerate(ctx, u, opts && opts->login, &l, err);
	} else {
		/* No template names a SAN: the certificates' DER decides, keys are not read. */
		struct der_filter f = {der_has_email, (void *)selector};

		if (opts && opts->login)
			rc = enumerate_address(ctx, u, &f, selector, &l, &multi, err);
		else
			rc = p11i_objects_enumerate_der(ctx, u, 0, &f, &l, err);
	}
	if (rc == P11S_OK)
		rc = p11i_object_list_filter(l, NULL, NULL, err);
	if (rc != P11S_OK)
		goto out;
	found = calloc(l->all_count ? l->all_count : 1, sizeof(*found));
	if (found == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	/* The sorted view, so that candidates come in a stable order. */
	for (size_t i = 0; i < l->count; i++) {
		const p11s_object *o = l->objects[i];

		if (o->cls != P11S_OBJ_CERTIFICATE)
			continue;
		if (is_uri ? p11i_uri_match_object(u, o) : has_email(o, selector))
			add_unique(found, &nfound, o);
	}
	/* A key's URI selects the certificate paired with it. */
	if (is_uri && nfound == 0) {
		size_t keys = 0;

		for (size_t i = 0; i < l->count; i++) {
			const p11s_object *o = l->objects[i];

			if (o->cls != P11S_OBJ_PRIVATE_KEY || !p11i_uri_match_object(u, o))
				continue;
			keys++;
			if (o->paired != NULL)
				add_unique(found, &nfound, o->paired);
		}
		if (keys > 0 && nfound == 0) {
			char *shown = p11i_uri_redact(selector);

			rc = p11i_err(
			    err, P11S_E_NOT_FOUND,
			    "%s names a private key, but no certificate on the token pairs "
			    "with it",
			    shown ? shown : "");
			free(shown);
			goto out;
		}
	}
	if (nfound == 0) {
		if (!is_uri && multi)
			rc = p11i_err(err, P11S_E_NOT_FOUND,
			              "no public certificate on the %zu tokens has the e-mail "
			              "address %s; not logging in to all of them with one PIN "
			              "(name the token in a pkcs11: URI to search its private "
			              "objects)",
			              l->tokens->count, selector);
		else if (!is_uri)
			rc = p11i_err(err, P11S_E_NOT_FOUND,
			              "no certificate on the token%s has the e-mail address %s%s",
			              l->tokens->count > 1 ? "s" : "", selector,
			              opts && opts->login ? "" : " (without logging in)");
		else {
			char *shown = p11i_uri_redact(selector);

			rc = p11i_err(err, P11S_E_NOT_FOUND, "no certificate matches %s",
			              shown ? shown : "");
			free(shown);
		}
		goto out;
	}
	if (nfound > 1) {
		char *shown = p11i_uri_redact(selector);

		rc = p11i_err(err, P11S_E_AMBIGUOUS,
		              "%s matches %zu certificates; name one by its URI:",
		              shown ? shown : "", nfound);
		free(shown);
		for (size_t i = 0; i < nfound; i++)
			p11i_err_add_candidate(err, found[i]->uri);
		goto out;
	}
	*cert = found[0];
	*list = l;
	l = NULL;
out:
	free(found);
	p11s_object_list_free(l);
	p11_kit_uri_free(u);
	return rc;
}
