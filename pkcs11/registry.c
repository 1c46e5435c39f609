/*
 * Certificates to trust, from any module p11-kit knows.
 *
 * A context holds one module: the one given with --module, or p11-kit's
 * proxy.  The proxy leaves out modules configured "disable-in:
 * p11-kit-proxy", which is how p11-kit's own trust module (the system's
 * anchors, token "System Trust") is shipped.  So when no token of the
 * context matches a trust URI, p11-kit's module registry is asked:
 * p11_kit_modules_load() gives every module configured and enabled for
 * this program, with its configured options (the trust module's paths), and
 * each is initialised and finalised here, with p11-kit's reference counts,
 * so that sharing a module with the proxy in the same process is safe.
 * The context's own module is never loaded a second time through p11-kit:
 * a module dlopen()ed directly (--module) keeps a single owner.
 *
 * Only public objects are read (certificates), so no login is ever made.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <p11-kit/p11-kit.h>

#include "p11.h"

/* Bounds on what one module may make us hold. */
#define MAX_SLOTS  256
#define MAX_CERTS  4096
#define MAX_DER    (1L << 20)
#define FIND_CHUNK 64

/* Same file, whatever the spelling (symbolic links, relative directories). */
static int same_file(const char *a, const char *b)
{
	char ra[PATH_MAX], rb[PATH_MAX];

	if (a == NULL || b == NULL)
		return 0;
	if (realpath(a, ra) == NULL || realpath(b, rb) == NULL)
		return strcmp(a, b) == 0;
	return strcmp(ra, rb) == 0;
}

/* CKA_VALUE of @p obj, when its CKA_ID/CKA_LABEL/CKA_CLASS match @p uri; caller frees. */
static unsigned char *cert_value(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
                                 P11KitUri *uri, CK_ULONG *len)
{
	CK_OBJECT_CLASS cls = 0;
	CK_ATTRIBUTE attrs[4] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, NULL, 0},
	    {CKA_LABEL, NULL, 0},
	    {CKA_VALUE, NULL, 0},
	};
	unsigned char *value = NULL;
	int ok = 0;

	/* Sizes first; an attribute the object lacks comes back as -1. */
	m->C_GetAttributeValue(s, obj, attrs, 4);
	for (int i = 1; i < 4; i++) {
		if (attrs[i].ulValueLen == (CK_ULONG)-1)
			attrs[i].ulValueLen = 0;
		if (attrs[i].ulValueLen > (CK_ULONG)MAX_DER)
			return NULL;
		attrs[i].pValue = attrs[i].ulValueLen ? malloc(attrs[i].ulValueLen) : NULL;
		if (attrs[i].ulValueLen && attrs[i].pValue == NULL)
			goto out;
	}
	if (attrs[3].ulValueLen == 0)
		goto out;
	/* A missing CKA_ID or CKA_LABEL fails the call but not the certificate. */
	m->C_GetAttributeValue(s, obj, attrs, 4);
	for (int i = 1; i < 3; i++)
		if (attrs[i].ulValueLen == (CK_ULONG)-1)
			attrs[i].ulValueLen = 0;
	if (attrs[3].ulValueLen == (CK_ULONG)-1 || attrs[3].ulValueLen == 0)
		goto out;
	ok = p11_kit_uri_match_attributes(uri, attrs, 3);
out:
	free(attrs[1].pValue);
	free(attrs[2].pValue);
	if (ok) {
		value = attrs[3].pValue;
		*len = attrs[3].ulValueLen;
	} else {
		free(attrs[3].pValue);
	}
	return value;
}

/* The matching certificates on one token, pushed onto @p out. */
static int token_certs(CK_FUNCTION_LIST *m, CK_SLOT_ID slot, P11KitUri *uri, STACK_OF(X509) * out,
                       size_t *added)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}};
	CK_OBJECT_HANDLE objs[FIND_CHUNK];
	CK_SESSION_HANDLE s;
	CK_ULONG n = 0;
	size_t seen = 0;
	int ok = 1;

	if (m->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		return 1;
	if (m->C_FindObjectsInit(s, tmpl, 1) != CKR_OK) {
		m->C_CloseSession(s);
		return 1;
	}
	/* Each round reads at least one object or ends; MAX_CERTS bounds a looping module. */
	while (ok && seen < MAX_CERTS && m->C_FindObjects(s, objs, FIND_CHUNK, &n) == CKR_OK &&
	       n > 0 && n <= FIND_CHUNK) {
		for (CK_ULONG i = 0; ok && i < n; i++) {
			CK_ULONG len = 0;
			unsigned char *der = cert_value(m, s, objs[i], uri, &len);
			const unsigned char *p = der;
			X509 *x = der ? d2i_X509(NULL, &p, (long)len) : NULL;

			free(der);
			ERR_clear_error();
			if (x == NULL)
				continue;
			if (sk_X509_push(out, x) <= 0) {
				X509_free(x);
				ok = 0;
			} else {
				(*added)++;
			}
		}
		seen += n;
	}
	m->C_FindObjectsFinal(s);
	m->C_CloseSession(s);
	return ok;
}

/* Every token of @p m matching @p uri; 0 on ENOMEM. */
static int module_certs(CK_FUNCTION_LIST *m, P11KitUri *uri, STACK_OF(X509) * out, size_t *added,
                        size_t *tokens)
{
	CK_SLOT_ID slots[MAX_SLOTS];
	CK_ULONG n = MAX_SLOTS;
	CK_INFO info;
	CK_SLOT_ID want = p11_kit_uri_get_slot_id(uri);
	int ok = 1;

	if (m->C_GetInfo(&info) != CKR_OK || !p11_kit_uri_match_module_info(uri, &info))
		return 1;
	/* A module with more slots than we take answers CKR_BUFFER_TOO_SMALL: skipped. */
	if (m->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return 1;
	for (CK_ULONG i = 0; ok && i < n && i < MAX_SLOTS; i++) {
		CK_SLOT_INFO si;
		CK_TOKEN_INFO ti;

		if (m->C_GetSlotInfo(slots[i], &si) != CKR_OK ||
		    m->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
		    !p11_kit_uri_match_slot_info(uri, &si) ||
		    !p11_kit_uri_match_token_info(uri, &ti) ||
		    (want != (CK_SLOT_ID)-1 && want != slots[i]))
			continue;
		(*tokens)++;
		ok = token_certs(m, slots[i], uri, out, added);
	}
	return ok;
}

static p11s_rc registry_certificates(const char *skip_path, P11KitUri *uri, STACK_OF(X509) * out,
                                     size_t *added, size_t *tokens, p11s_error *err)
{
	CK_FUNCTION_LIST **mods = p11_kit_modules_load(NULL, 0);
	int ok = 1;

	if (mods == NULL)
		return p11i_err(err, P11S_E_MODULE,
		                "p11-kit cannot load its configured modules: %s",
		                p11_kit_message() ? p11_kit_message() : "no reason given");
	for (size_t i = 0; ok && mods[i] != NULL; i++) {
		char *file = p11_kit_module_get_filename(mods[i]);
		int skip = skip_path != NULL && same_file(file, skip_path);

		free(file);
		/* A module that does not start (no reader, no config) has no tokens for us. */
		if (skip || p11_kit_module_initialize(mods[i]) != CKR_OK)
			continue;
		ok = module_certs(mods[i], uri, out, added, tokens);
		p11_kit_module_finalize(mods[i]);
	}
	p11_kit_modules_release(mods);
	return ok ? P11S_OK : p11i_err_nomem(err);
}

p11s_rc p11s_trust_certificates(p11s_ctx *ctx, const char *uri, STACK_OF(X509) * out, size_t *added,
                                p11s_error *err)
{
	P11KitUri *u = NULL;
	size_t tokens = 0;
	char *shown;
	p11s_rc rc;

	*added = 0;
	if (ctx != NULL) {
		p11s_objects_opts o = {.certificates = 1};
		p11s_object_list *list = NULL;

		rc = p11s_objects(ctx, uri, &o, &list, err);
		for (size_t i = 0; rc == P11S_OK && i < p11s_object_list_count(list); i++) {
			const p11s_object *obj = p11s_object_list_get(list, i);
			X509 *x = p11s_object_x509(obj);

			if (p11s_object_get_class(obj) != P11S_OBJ_CERTIFICATE || x == NULL)
				continue;
			if (X509_up_ref(x) != 1 || sk_X509_push(out, x) <= 0) {
				X509_free(x);
				rc = p11i_err_nomem(err);
			} else {
				(*added)++;
			}
		}
		p11s_object_list_free(list);
		if (*added > 0 || (rc != P11S_OK && rc != P11S_E_NOT_FOUND))
			return rc;
	}
	rc = p11i_uri_parse(uri, &u, err);
	if (rc != P11S_OK)
		return rc;
	rc = registry_certificates(ctx ? ctx->module_path : NULL, u, out, added, &tokens, err);
	p11_kit_uri_free(u);
	if (rc != P11S_OK || *added > 0)
		return rc;
	shown = p11i_uri_redact(uri);
	rc = p11i_err(err, P11S_E_NOT_FOUND,
	              tokens ? "no certificate on a token matches %s"
	                     : "no token matches %s (among the module in use and every module "
	                       "p11-kit knows)",
	              shown ? shown : "");
	free(shown);
	return rc;
}
