#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "p11.h"

static char *trim_field(const unsigned char *field, size_t len)
{
	/* PKCS#11 pads fixed-size fields with blanks; some modules with NULs. */
	while (len > 0 && (field[len - 1] == ' ' || field[len - 1] == '\0'))
		len--;
	return p11i_strndup((const char *)field, len);
}

void p11i_token_free(p11s_token *t)
{
	if (t == NULL)
		return;
	free(t->uri);
	free(t->label);
	free(t->manufacturer);
	free(t->model);
	free(t->serial);
	free(t->slot_description);
	free(t);
}

static unsigned map_flags(const CK_SLOT_INFO *si, const CK_TOKEN_INFO *ti)
{
	static const struct {
		CK_FLAGS ck;
		unsigned ours;
	} tf[] = {
	    {CKF_LOGIN_REQUIRED, P11S_TOKEN_LOGIN_REQUIRED},
	    {CKF_PROTECTED_AUTHENTICATION_PATH, P11S_TOKEN_PROTECTED_AUTH_PATH},
	    {CKF_TOKEN_INITIALIZED, P11S_TOKEN_INITIALIZED},
	    {CKF_USER_PIN_INITIALIZED, P11S_TOKEN_USER_PIN_INITIALIZED},
	    {CKF_USER_PIN_COUNT_LOW, P11S_TOKEN_USER_PIN_COUNT_LOW},
	    {CKF_USER_PIN_FINAL_TRY, P11S_TOKEN_USER_PIN_FINAL_TRY},
	    {CKF_USER_PIN_LOCKED, P11S_TOKEN_USER_PIN_LOCKED},
	    {CKF_USER_PIN_TO_BE_CHANGED, P11S_TOKEN_USER_PIN_TO_BE_CHANGED},
	    {CKF_WRITE_PROTECTED, P11S_TOKEN_WRITE_PROTECTED},
	};
	unsigned f = 0;

	for (size_t i = 0; i < sizeof(tf) / sizeof(tf[0]); i++)
		if (ti->flags & tf[i].ck)
			f |= tf[i].ours;
	if (si->flags & CKF_HW_SLOT)
		f |= P11S_TOKEN_HW_SLOT;
	if (si->flags & CKF_REMOVABLE_DEVICE)
		f |= P11S_TOKEN_REMOVABLE;
	return f;
}

/* The token URI: the four token fields, which is what p11tool prints too. */
static char *token_uri(const CK_TOKEN_INFO *ti)
{
	P11KitUri *u = p11_kit_uri_new();
	char *s = NULL;

	if (u == NULL)
		return NULL;
	memcpy(p11_kit_uri_get_token_info(u), ti, sizeof(*ti));
	if (p11_kit_uri_format(u, P11_KIT_URI_FOR_TOKEN, &s) != P11_KIT_URI_OK)
		s = NULL;
	p11_kit_uri_free(u);
	return s;
}

static p11s_rc token_read(p11s_ctx *ctx, CK_SLOT_ID id, p11s_token **out, p11s_error *err)
{
	p11s_token *t = calloc(1, sizeof(*t));
	CK_RV rv;

	*out = NULL;
	if (t == NULL)
		return p11i_err_nomem(err);
	t->slot_id = id;
	rv = ctx->fl->C_GetSlotInfo(id, &t->slot_info);
	if (rv == CKR_OK)
		rv = ctx->fl->C_GetTokenInfo(id, &t->info);
	if (rv != CKR_OK) {
		p11i_token_free(t);
		return p11i_ckr(err, rv, P11S_E_TOKEN, "reading the token information");
	}
	t->label = trim_field(t->info.label, sizeof(t->info.label));
	t->manufacturer = trim_field(t->info.manufacturerID, sizeof(t->info.manufacturerID));
	t->model = trim_field(t->info.model, sizeof(t->info.model));
	t->serial = trim_field(t->info.serialNumber, sizeof(t->info.serialNumber));
	t->slot_description =
	    trim_field(t->slot_info.slotDescription, sizeof(t->slot_info.slotDescription));
	t->uri = token_uri(&t->info);
	t->flags = map_flags(&t->slot_info, &t->info);
	if (!t->label || !t->manufacturer || !t->model || !t->serial || !t->slot_description ||
	    !t->uri) {
		p11i_token_free(t);
		return p11i_err_nomem(err);
	}
	*out = t;
	return P11S_OK;
}

/* Is the attribute name at @p p (up to '=') "pin-value", case or percent-encoding aside? */
static int names_pin_value(const char *p, const char *eq)
{
	static const char want[] = "pin-value";
	size_t i = 0;

	while (p < eq) {
		int c = (unsigned char)*p++;

		if (c == '%' && eq - p >= 2) {
			char hex[3] = {p[0], p[1], '\0'};

			c = (int)strtol(hex, NULL, 16);
			p += 2;
		}
		if (i >= sizeof(want) - 1 || tolower(c) != want[i++])
			return 0;
	}
	return i == sizeof(want) - 1;
}

/*
 * @p uri as it may appear in a message: the value of any pin-value
 * attribute replaced by "(hidden)", since messages end up in logs.  Path
 * and query alike, and whatever else is wrong with the URI: a malformed
 * one is exactly the one that gets echoed.  The caller frees it; NULL on
 * ENOMEM.
 */
char *p11i_uri_redact(const char *uri)
{
	const char *p;
	char *out, *o;
	size_t parts = 1;

	if (uri == NULL)
		return strdup("(none)");
	for (p = uri; *p != '\0'; p++)
		parts += strchr(";?&", *p) != NULL;
	out = malloc(strlen(uri) + parts * (sizeof("(hidden)") - 1) + 1);
	if (out == NULL)
		return NULL;
	o = out;
	p = uri;
	/* The scheme; a ':' after it is just a character of a value. */
	if (p[strcspn(p, ":;?&=")] == ':') {
		size_t n = strcspn(p, ":") + 1;

		memcpy(o, p, n);
		o += n;
		p += n;
	}
	/* Each attribute ends before one of ";?&". */
	for (;;) {
		size_t n = strcspn(p, ";?&");
		const char *eq = memchr(p, '=', n);

		if (eq != NULL && names_pin_value(p, eq)) {
			memcpy(o, p, (size_t)(eq - p) + 1);
			o += eq - p + 1;
			o += sprintf(o, "(hidden)");
		} else {
			memcpy(o, p, n);
			o += n;
		}
		p += n;
		if (*p == '\0')
			break;
		*o++ = *p++;
	}
	*o = '\0';
	return out;
}

p11s_rc p11i_uri_parse(const char *uri, P11KitUri **out, p11s_error *err)
{
	P11KitUri *u = p11_kit_uri_new();
	int r;

	*out = NULL;
	if (u == NULL)
		return p11i_err_nomem(err);
	if (uri != NULL) {
		char *shown;
		p11s_rc rc = P11S_OK;

		r = p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u);
		if (r != P11_KIT_URI_OK || p11_kit_uri_any_unrecognized(u)) {
			shown = p11i_uri_redact(uri);
			if (r != P11_KIT_URI_OK)
				rc = p11i_err(err, P11S_E_BAD_URI, "'%s' is not a PKCS#11 URI: %s",
				              shown ? shown : "", p11_kit_uri_message(r));
			else /* p11-kit would quietly match nothing; better to say why. */
				rc = p11i_err(err, P11S_E_BAD_URI,
				              "'%s' has a part p11smime does not understand (a "
				              "misspelt attribute, or a type other than cert, "
				              "private, public?)",
				              shown ? shown : "");
			free(shown);
			p11_kit_uri_free(u);
			return rc;
		}
	}
	*out = u;
	return P11S_OK;
}

int p11i_uri_match_token(p11s_ctx *ctx, P11KitUri *uri, const p11s_token *t)
{
	CK_SLOT_ID want = p11_kit_uri_get_slot_id(uri);

	if (!p11_kit_uri_match_token_info(uri, &t->info) ||
	    !p11_kit_uri_match_slot_info(uri, &t->slot_info))
		return 0;
	if (want != (CK_SLOT_ID)-1 && want != t->slot_id)
		return 0;
	return p11_kit_uri_match_module_info(uri, &ctx->module_info);
}

static void token_list_add(p11s_token_list *l, p11s_token *t, int *ok)
{
	p11s_token **n = realloc(l->tokens, (l->count + 1) * sizeof(*n));

	if (n == NULL) {
		p11i_token_free(t);
		*ok = 0;
		return;
	}
	l->tokens = n;
	n[l->count++] = t;
}

p11s_rc p11s_ctx_set_token_filter(p11s_ctx *ctx, const char *uri, p11s_error *err)
{
	P11KitUri *u = NULL;
	CK_ULONG nattrs = 0;
	p11s_rc rc;

	if (ctx == NULL)
		return p11i_err(err, P11S_E_USAGE, "p11s_ctx_set_token_filter: no context");
	if (uri != NULL) {
		rc = p11i_uri_parse(uri, &u, err);
		if (rc != P11S_OK)
			return rc;
		/* An object attribute would be ignored here: better refused than misread. */
		p11_kit_uri_get_attributes(u, &nattrs);
		if (nattrs > 0) {
			char *shown = p11i_uri_redact(uri);

			p11_kit_uri_free(u);
			rc =
			    p11i_err(err, P11S_E_BAD_URI,
			             "%s names objects (id, object, type); a token URI names only "
			             "the token (token=, manufacturer=, model=, serial=, slot-...)",
			             shown ? shown : "the URI");
			free(shown);
			return rc;
		}
	}
	p11i_ctx_lock(ctx);
	p11_kit_uri_free(ctx->token_filter);
	ctx->token_filter = u;
	p11i_ctx_unlock(ctx);
	return P11S_OK;
}

p11s_rc p11i_tokens_matching(p11s_ctx *ctx, P11KitUri *uri, p11s_token_list **out, p11s_error *err)
{
	CK_SLOT_ID *ids = NULL;
	CK_ULONG n = 0, cap = 0;
	CK_RV rv;
	p11s_token_list *l;
	p11s_rc rc = P11S_OK;
	int ok = 1;

	*out = NULL;
	rv = ctx->fl->C_GetSlotList(CK_TRUE, NULL, &n);
	if (rv == CKR_OK && n > 0) {
		ids = calloc(n, sizeof(*ids));
		if (ids == NULL)
			return p11i_err_nomem(err);
		cap = n;
		rv = ctx->fl->C_GetSlotList(CK_TRUE, ids, &n);
		/* More than the room given: a broken module; what it wrote is all we have. */
		if (n > cap)
			n = cap;
	}
	if (rv != CKR_OK) {
		free(ids);
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_GetSlotList");
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		free(ids);
		return p11i_err_nomem(err);
	}
	for (CK_ULONG i = 0; i < n && ok; i++) {
		p11s_token *t;

		/* A token pulled out between the two calls is simply not listed. */
		if (token_read(ctx, ids[i], &t, NULL) != P11S_OK)
			continue;
		if (!p11i_uri_match_token(ctx, uri, t) ||
		    (ctx->token_filter != NULL &&
		     !p11i_uri_match_token(ctx, ctx->token_filter, t))) {
			p11i_token_free(t);
			continue;
		}
		token_list_add(l, t, &ok);
	}
	free(ids);
	if (!ok)
		rc = p11i_err_nomem(err);
	if (rc != P11S_OK) {
		p11s_token_list_free(l);
		return rc;
	}
	*out = l;
	return P11S_OK;
}

p11s_rc p11s_tokens(p11s_ctx *ctx, const char *uri, p11s_token_list **out, p11s_error *err)
{
	P11KitUri *u;
	p11s_rc rc;

	*out = NULL;
	rc = p11i_uri_parse(uri, &u, err);
	if (rc != P11S_OK)
		return rc;
	rc = p11i_tokens_matching(ctx, u, out, err);
	p11_kit_uri_free(u);
	if (rc == P11S_OK && (*out)->count == 0 && uri != NULL && strcmp(uri, "pkcs11:") != 0) {
		char *shown = p11i_uri_redact(uri);

		p11s_token_list_free(*out);
		*out = NULL;
		rc = p11i_err(err, P11S_E_NOT_FOUND, "no token matches %s", shown ? shown : "");
		free(shown);
		return rc;
	}
	return rc;
}

void p11s_token_list_free(p11s_token_list *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->count; i++)
		p11i_token_free(list->tokens[i]);
	free(list->tokens);
	free(list);
}

size_t p11s_token_list_count(const p11s_token_list *list)
{
	return list ? list->count : 0;
}

const p11s_token *p11s_token_list_get(const p11s_token_list *list, size_t i)
{
	return list && i < list->count ? list->tokens[i] : NULL;
}

const char *p11s_token_uri(const p11s_token *t)
{
	return t->uri;
}

const char *p11s_token_label(const p11s_token *t)
{
	return t->label;
}

const char *p11s_token_manufacturer(const p11s_token *t)
{
	return t->manufacturer;
}

const char *p11s_token_model(const p11s_token *t)
{
	return t->model;
}

const char *p11s_token_serial(const p11s_token *t)
{
	return t->serial;
}

const char *p11s_token_slot_description(const p11s_token *t)
{
	return t->slot_description;
}

unsigned long p11s_token_slot_id(const p11s_token *t)
{
	return (unsigned long)t->slot_id;
}

unsigned p11s_token_flags(const p11s_token *t)
{
	return t->flags;
}
