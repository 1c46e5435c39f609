/*
 * The PIN policy.  One C_Login per token and run, never a retry; the token
 * flags are read first and a login that could lock the token, or that the
 * token would refuse anyway, is not attempted.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "p11.h"
#include "pin.h"
#include "p11smime/io.h"

/* The URI's pin-source: file:/fd:/env:, or a bare path (RFC 7512). */
static p11s_rc read_uri_source(const char *src, char *buf, size_t len, p11s_error *err)
{
	p11s_rc rc;

	if (src[0] == '/') {
		char *spec = p11i_asprintf("file:%s", src);

		if (spec == NULL)
			return p11i_err_nomem(err);
		rc = p11s_secret_read(spec, P11S_SECRET_PIN, buf, len, err);
		free(spec);
	} else {
		rc = p11s_secret_read(src, P11S_SECRET_PIN, buf, len, err);
	}
	if (rc == P11S_E_BAD_PIN_SOURCE)
		rc = p11i_err(err, P11S_E_BAD_PIN_SOURCE, "the URI's pin-source: %s",
		              p11s_error_message(err));
	return rc;
}

/*
 * Where this login's PIN comes from, in order: --pin-source (the
 * person's explicit choice for this run), the URI's pin-value, the URI's
 * pin-source, the prompt callback.
 */
static p11s_rc get_pin(p11s_ctx *ctx, const p11s_token *t, P11KitUri *uri, char *buf, size_t len,
                       p11s_error *err)
{
	const char *v, *src;
	char *prompt;
	int r;

	if (ctx->pin_source != NULL) {
		/* Read once per run: a descriptor cannot be read twice. */
		if (ctx->source_pin == NULL) {
			p11s_rc rc =
			    p11s_secret_read(ctx->pin_source, P11S_SECRET_PIN, buf, len, err);

			if (rc != P11S_OK)
				return rc;
			ctx->source_pin = p11i_locked_strdup(buf);
			if (ctx->source_pin == NULL)
				return p11i_err_nomem(err);
			return P11S_OK;
		}
		if (strlen(ctx->source_pin) + 1 > len)
			return p11i_err(err, P11S_E_PIN_UNAVAILABLE, "PIN too long");
		strcpy(buf, ctx->source_pin);
		return P11S_OK;
	}
	v = uri ? p11_kit_uri_get_pin_value(uri) : NULL;
	if (v != NULL) {
		if (strlen(v) + 1 > len || *v == '\0')
			return p11i_err(err, P11S_E_PIN_UNAVAILABLE,
			                "the URI's pin-value is empty or too long");
		strcpy(buf, v);
		return P11S_OK;
	}
	src = uri ? p11_kit_uri_get_pin_source(uri) : NULL;
	if (src != NULL) {
		struct p11i_slot_state *st = p11i_slot_state(ctx, t->slot_id);
		p11s_rc rc;

		rc = read_uri_source(src, buf, len, err);
		if (rc == P11S_OK && st != NULL) {
			/* Where it came from, for the keys that need it again. */
			free(st->uri_pin_source);
			st->uri_pin_source = p11i_strdup(src);
		}
		return rc;
	}
	if (ctx->prompt == NULL)
		goto unavailable;
	prompt = p11i_asprintf("PIN for token '%s': ", t->label);
	if (prompt == NULL)
		return p11i_err_nomem(err);
	r = ctx->prompt(prompt, buf, len, ctx->prompt_user);
	free(prompt);
	if (r == 0 && buf[0] != '\0')
		return P11S_OK;
	OPENSSL_cleanse(buf, len);
unavailable:
	return p11i_err(err, P11S_E_PIN_UNAVAILABLE,
	                "token '%s' needs a PIN and there is no terminal to ask for it; "
	                "give one with --pin-source file:PATH, fd:N or env:VAR",
	                t->label);
}

static p11s_rc login_locked(p11s_ctx *ctx, const p11s_token *t, P11KitUri *uri, p11s_error *err)
{
	struct p11i_slot_state *st;
	CK_SESSION_HANDLE s;
	CK_SESSION_INFO si;
	CK_TOKEN_INFO ti;
	CK_RV rv;
	p11s_rc rc;
	char pin[P11I_PIN_MAX + 1];

	rc = p11i_slot_session(ctx, t, &s, err);
	if (rc != P11S_OK)
		return rc;
	st = p11i_slot_state(ctx, t->slot_id);
	if (st->logged_in)
		return P11S_OK;
	if (st->pin_refused)
		return p11i_err(err, P11S_E_PIN_INCORRECT,
		                "token '%s' did not accept the PIN given; not trying it again",
		                t->label);
	/* Fresh flags: the ones read at enumeration may be stale. */
	rv = ctx->fl->C_GetTokenInfo(t->slot_id, &ti);
	if (rv != CKR_OK)
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_GetTokenInfo");
	if (!(ti.flags & CKF_LOGIN_REQUIRED)) {
		st->logged_in = 1;
		return P11S_OK;
	}
	rv = ctx->fl->C_GetSessionInfo(s, &si);
	if (rv == CKR_OK &&
	    (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS)) {
		st->logged_in = 1;
		return P11S_OK;
	}
	if (ti.flags & CKF_USER_PIN_LOCKED)
		return p11i_err(err, P11S_E_PIN_LOCKED,
		                "the user PIN of token '%s' is locked; not trying to log in "
		                "(unblock it with the SO PIN)",
		                t->label);
	if (ti.flags & CKF_USER_PIN_TO_BE_CHANGED)
		return p11i_err(err, P11S_E_PIN_TO_BE_CHANGED,
		                "the user PIN of token '%s' must be changed before use; not "
		                "logging in",
		                t->label);
	if (!(ti.flags & CKF_USER_PIN_INITIALIZED))
		return p11i_err(err, P11S_E_TOKEN_UNINITIALIZED,
		                "token '%s' has no user PIN set; not logging in", t->label);
	if ((ti.flags & CKF_USER_PIN_FINAL_TRY) && !ctx->allow_final_try)
		return p11i_err(err, P11S_E_PIN_FINAL_TRY,
		                "token '%s' says one more wrong PIN locks it; not logging in "
		                "(--allow-final-try if you are sure of the PIN)",
		                t->label);
	if (ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH) {
		/* PIN pad: the token asks the person itself. */
		rv = ctx->fl->C_Login(s, CKU_USER, NULL, 0);
	} else {
		p11i_secret_hold();
		rc = get_pin(ctx, t, uri, pin, sizeof(pin), err);
		if (rc != P11S_OK) {
			OPENSSL_cleanse(pin, sizeof(pin));
			p11i_secret_release();
			return rc;
		}
		rv = ctx->fl->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
		OPENSSL_cleanse(pin, sizeof(pin));
		p11i_secret_release();
	}
	switch (rv) {
	case CKR_OK:
	case CKR_USER_ALREADY_LOGGED_IN:
		st->logged_in = 1;
		return P11S_OK;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
		st->pin_refused = 1;
		rc = p11i_err(err, P11S_E_PIN_INCORRECT,
		              "token '%s' did not accept the PIN (%s); not trying again", t->label,
		              p11i_ckr_name(rv));
		if (ctx->fl->C_GetTokenInfo(t->slot_id, &ti) == CKR_OK) {
			if (ti.flags & CKF_USER_PIN_LOCKED)
				rc = p11i_err(err, P11S_E_PIN_INCORRECT,
				              "token '%s' did not accept the PIN and is now locked",
				              t->label);
			else if (ti.flags & CKF_USER_PIN_FINAL_TRY)
				rc = p11i_err(
				    err, P11S_E_PIN_INCORRECT,
				    "token '%s' did not accept the PIN; one more wrong PIN "
				    "locks it",
				    t->label);
		}
		return rc;
	case CKR_PIN_LOCKED:
		return p11i_err(err, P11S_E_PIN_LOCKED, "the user PIN of token '%s' is locked",
		                t->label);
	case CKR_PIN_EXPIRED:
		return p11i_err(err, P11S_E_PIN_TO_BE_CHANGED,
		                "the user PIN of token '%s' has expired and must be changed",
		                t->label);
	default:
		return p11i_ckr(err, rv, P11S_E_TOKEN, "C_Login");
	}
}

/* One login at a time per context: threads sharing it log in once, and one prompt at a time. */
p11s_rc p11i_login(p11s_ctx *ctx, const p11s_token *t, P11KitUri *uri, p11s_error *err)
{
	p11s_rc rc;

	p11i_ctx_lock(ctx);
	rc = login_locked(ctx, t, uri, err);
	p11i_ctx_unlock(ctx);
	return rc;
}

/*
 * Why a one-shot source cannot give the PIN again: fd: gives one PIN a
 * line, and env: is removed from the environment once read (so that no
 * child inherits it).
 */
static p11s_rc explain_again(const char *spec, p11s_error *err)
{
	const char *why = NULL;

	if (strncmp(spec, "fd:", 3) == 0)
		why = "a descriptor gives one PIN per line: one line for the token login and one "
		      "for each use of such a key; file: is read again each time";
	else if (strncmp(spec, "env:", 4) == 0)
		why = "env: serves one login only (the variable is removed once read); use "
		      "file:, or fd: with one line per login";
	return p11i_err(
	    err, p11s_error_rc(err),
	    "the key asks for its PIN on every use (CKA_ALWAYS_AUTHENTICATE), and %s%s%s",
	    p11s_error_message(err), why ? ": " : "", why ? why : "");
}

/*
 * No PIN is kept between logins: each context-specific login reads
 * --pin-source again (a changed PIN file is seen), else the URI pin-source
 * of the user login, else asks the prompt again.  A pin-value in a URI is
 * not kept, so such keys need one of those.
 */
static p11s_rc context_login_locked(p11s_ctx *ctx, CK_SLOT_ID slot, CK_SESSION_HANDLE s,
                                    p11s_error *err)
{
	struct p11i_slot_state *st = p11i_slot_state(ctx, slot);
	const char *spec = ctx->pin_source;
	char pin[P11I_PIN_MAX + 1];
	p11s_rc rc;
	CK_RV rv;

	if (spec == NULL && st != NULL)
		spec = st->uri_pin_source;
	p11i_secret_hold();
	if (spec != NULL) {
		rc = spec == ctx->pin_source
		         ? p11s_secret_read(spec, P11S_SECRET_PIN, pin, sizeof(pin), err)
		         : read_uri_source(spec, pin, sizeof(pin), err);
		if (rc != P11S_OK)
			rc = explain_again(spec, err);
	} else if (ctx->prompt != NULL) {
		rc = ctx->prompt("PIN again (this key asks for it on every use): ", pin,
		                 sizeof(pin), ctx->prompt_user) == 0 &&
		             pin[0] != '\0'
		         ? P11S_OK
		         : p11i_err(
		               err, P11S_E_PIN_UNAVAILABLE,
		               "the key asks for its PIN on every use (CKA_ALWAYS_AUTHENTICATE) "
		               "and none came from the terminal; give --pin-source file:PATH (a "
		               "URI's pin-value serves the token login only)");
	} else {
		rc = p11i_err(err, P11S_E_PIN_UNAVAILABLE,
		              "the key asks for its PIN on every use (CKA_ALWAYS_AUTHENTICATE) and "
		              "there is nowhere to ask: give --pin-source file:PATH (a URI's "
		              "pin-value serves the token login only)");
	}
	if (rc == P11S_OK) {
		rv = ctx->fl->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)pin, strlen(pin));
		if (rv != CKR_OK)
			rc = p11i_err(
			    err, rv == CKR_PIN_INCORRECT ? P11S_E_PIN_INCORRECT : P11S_E_TOKEN,
			    "the context-specific login for the key failed: %s", p11i_ckr_name(rv));
	}
	OPENSSL_cleanse(pin, sizeof(pin));
	p11i_secret_release();
	return rc;
}

/* Under the context lock: the PIN source and the prompt serve one thread at a time. */
p11s_rc p11i_context_login(p11s_ctx *ctx, CK_SLOT_ID slot, CK_SESSION_HANDLE s, p11s_error *err)
{
	p11s_rc rc;

	p11i_ctx_lock(ctx);
	rc = context_login_locked(ctx, slot, s, err);
	p11i_ctx_unlock(ctx);
	return rc;
}
