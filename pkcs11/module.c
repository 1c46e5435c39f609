/*
 * Loading the module: one dlopen(), one C_GetFunctionList, one
 * C_Initialize, and every PKCS#11 call of the process goes through that
 * function list (object searches, logins, C_GetMechanismInfo, and the
 * private-key operations of pkcs11/key.c).  One instance matters twice:
 * p11-kit's proxy builds a fresh proxy instance on every
 * C_GetFunctionList, and each instance costs its own slot set-up; and a
 * second user (libp11 did this until the one-shot speed work) would search
 * the token again for the key we already found.
 *
 * CKR_CRYPTOKI_ALREADY_INITIALIZED is accepted (an application that
 * initialised the module itself) and remembered, so that we only
 * C_Finalize what we initialised.  We keep our login session on a slot
 * open for the life of the context: closing a token's last session logs it
 * out.  Private-key operations each borrow a session of the slot's pool
 * (p11i_op_session), so threads may share the context and its keys;
 * C_Initialize says CKF_OS_LOCKING_OK, so the module locks for itself.
 *
 * Teardown: our sessions, our C_Finalize if we initialised, dlclose.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "p11.h"

static const struct {
	CK_RV rv;
	const char *name;
} ckr_names[] = {
    {CKR_OK, "CKR_OK"},
    {CKR_CANCEL, "CKR_CANCEL"},
    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
    {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
    {CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"},
    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
    {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
    {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
    {CKR_PIN_INVALID, "CKR_PIN_INVALID"},
    {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
    {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"},
    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
    {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"},
    {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
    {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
    {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
    {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"},
    {CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID"},
    {CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"},
    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
};

const char *p11i_ckr_name(CK_RV rv)
{
	for (size_t i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
		if (ckr_names[i].rv == rv)
			return ckr_names[i].name;
	return "CKR_(unknown)";
}

p11s_rc p11i_ckr(p11s_error *err, CK_RV rv, p11s_rc rc, const char *what)
{
	if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED)
		rc = P11S_E_TOKEN_ABSENT;
	return p11i_err(err, rc, "%s failed: %s (0x%lx)", what, p11i_ckr_name(rv),
	                (unsigned long)rv);
}

const char *p11s_ctx_module_path(const p11s_ctx *ctx)
{
	return ctx ? ctx->module_path : NULL;
}

/* A recursive lock: a login runs inside a search, both hold it. */
static int locks_init(p11s_ctx *ctx)
{
	pthread_mutexattr_t a;
	int ok;

	if (pthread_mutexattr_init(&a) != 0)
		return 0;
	ok = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE) == 0 &&
	     pthread_mutex_init(&ctx->lock, &a) == 0;
	pthread_mutexattr_destroy(&a);
	if (ok && pthread_mutex_init(&ctx->pool_lock, NULL) != 0) {
		pthread_mutex_destroy(&ctx->lock);
		ok = 0;
	}
	return ok;
}

void p11i_ctx_lock(p11s_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
}

void p11i_ctx_unlock(p11s_ctx *ctx)
{
	pthread_mutex_unlock(&ctx->lock);
}

p11s_rc p11s_ctx_new(const char *module_path, p11s_ctx **out, p11s_error *err)
{
	CK_C_GetFunctionList getfl;
	CK_C_INITIALIZE_ARGS args;
	CK_RV rv;
	p11s_ctx *ctx;
	const char *env;

	*out = NULL;
	if (module_path == NULL || *module_path == '\0') {
		env = getenv("P11SMIME_MODULE");
		module_path = env && *env ? env : P11S_DEFAULT_MODULE;
	}
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL)
		return p11i_err_nomem(err);
	if (!locks_init(ctx)) {
		free(ctx);
		return p11i_err(err, P11S_E_INTERNAL, "cannot create the context's locks");
	}
	if ((ctx->module_path = strdup(module_path)) == NULL) {
		p11s_ctx_free(ctx);
		return p11i_err_nomem(err);
	}
	ctx->dl = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
	if (ctx->dl == NULL) {
		p11i_err(err, P11S_E_MODULE, "cannot load PKCS#11 module %s: %s", module_path,
		         dlerror());
		goto fail;
	}
	getfl = (CK_C_GetFunctionList)dlsym(ctx->dl, "C_GetFunctionList");
	if (getfl == NULL) {
		p11i_err(err, P11S_E_MODULE, "%s is not a PKCS#11 module (no C_GetFunctionList)",
		         module_path);
		goto fail;
	}
	rv = getfl(&ctx->fl);
	if (rv != CKR_OK || ctx->fl == NULL) {
		p11i_ckr(err, rv, P11S_E_MODULE, "C_GetFunctionList");
		goto fail;
	}
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = ctx->fl->C_Initialize(&args);
	if (rv == CKR_OK) {
		ctx->we_initialized = 1;
	} else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		p11i_ckr(err, rv, P11S_E_MODULE, "C_Initialize");
		goto fail;
	}
	rv = ctx->fl->C_GetInfo(&ctx->module_info);
	if (rv != CKR_OK) {
		p11i_ckr(err, rv, P11S_E_MODULE, "C_GetInfo");
		goto fail;
	}
	*out = ctx;
	return P11S_OK;
fail:
	p11s_ctx_free(ctx);
	return p11s_error_rc(err) != P11S_OK ? p11s_error_rc(err) : P11S_E_MODULE;
}

void p11s_ctx_free(p11s_ctx *ctx)
{
	if (ctx == NULL)
		return;
	for (size_t i = 0; i < ctx->nslots; i++) {
		struct p11i_slot_state *st = ctx->slots[i];

		for (size_t j = 0; ctx->fl != NULL && j < st->idle.n; j++)
			ctx->fl->C_CloseSession(st->idle.v[j]);
		free(st->idle.v);
		if (ctx->fl != NULL && st->session != CK_INVALID_HANDLE)
			ctx->fl->C_CloseSession(st->session);
		free(st->uri_pin_source);
		free(st);
	}
	free(ctx->slots);
	if (ctx->fl != NULL && ctx->we_initialized)
		ctx->fl->C_Finalize(NULL);
	if (ctx->dl != NULL)
		dlclose(ctx->dl);
	p11i_locked_free(ctx->source_pin);
	p11_kit_uri_free(ctx->token_filter);
	free(ctx->pin_source);
	free(ctx->module_path);
	pthread_mutex_destroy(&ctx->pool_lock);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

void p11s_ctx_set_pin_prompt(p11s_ctx *ctx, p11s_pin_prompt_fn fn, void *user)
{
	ctx->prompt = fn;
	ctx->prompt_user = user;
}

void p11s_ctx_set_allow_final_try(p11s_ctx *ctx, int allow)
{
	ctx->allow_final_try = allow;
}

struct p11i_slot_state *p11i_slot_state(p11s_ctx *ctx, CK_SLOT_ID id)
{
	struct p11i_slot_state **n, *st = NULL;

	p11i_ctx_lock(ctx);
	for (size_t i = 0; i < ctx->nslots && st == NULL; i++)
		if (ctx->slots[i]->id == id)
			st = ctx->slots[i];
	if (st == NULL && (st = calloc(1, sizeof(*st))) != NULL) {
		n = realloc(ctx->slots, (ctx->nslots + 1) * sizeof(*n));
		if (n == NULL) {
			free(st);
			st = NULL;
		} else {
			ctx->slots = n;
			st->id = id;
			st->session = CK_INVALID_HANDLE;
			n[ctx->nslots++] = st;
		}
	}
	p11i_ctx_unlock(ctx);
	return st;
}

CK_RV p11i_op_session(p11s_ctx *ctx, struct p11i_slot_state *st, CK_SESSION_HANDLE *out)
{
	pthread_mutex_lock(&ctx->pool_lock);
	if (st->idle.n > 0) {
		*out = st->idle.v[--st->idle.n];
		pthread_mutex_unlock(&ctx->pool_lock);
		return CKR_OK;
	}
	pthread_mutex_unlock(&ctx->pool_lock);
	return ctx->fl->C_OpenSession(st->id, CKF_SERIAL_SESSION, NULL, NULL, out);
}

/* More idle sessions than this are closed: a burst of threads should not pin them all. */
#define IDLE_MAX 16

void p11i_op_session_done(p11s_ctx *ctx, struct p11i_slot_state *st, CK_SESSION_HANDLE s, CK_RV rv)
{
	int keep = rv != CKR_SESSION_HANDLE_INVALID && rv != CKR_SESSION_CLOSED &&
	           rv != CKR_DEVICE_REMOVED && rv != CKR_TOKEN_NOT_PRESENT &&
	           rv != CKR_DEVICE_ERROR && rv != CKR_OPERATION_ACTIVE &&
	           rv != CKR_BUFFER_TOO_SMALL; /* the operation is still active then */

	if (s == CK_INVALID_HANDLE)
		return;
	pthread_mutex_lock(&ctx->pool_lock);
	if (keep && st->idle.n < IDLE_MAX && p11i_vec_push(&st->idle, s) == 0)
		s = CK_INVALID_HANDLE;
	pthread_mutex_unlock(&ctx->pool_lock);
	if (s != CK_INVALID_HANDLE)
		ctx->fl->C_CloseSession(s);
}

p11s_rc p11i_err_uninitialised(p11s_error *err, const p11s_token *t)
{
	/* With the slot's own name: a module's slot numbers mean little to a user. */
	return p11i_err(err, P11S_E_TOKEN_UNINITIALIZED,
	                "the token in slot %lu (%s) is not initialised", (unsigned long)t->slot_id,
	                t->slot_description);
}

p11s_rc p11i_slot_session(p11s_ctx *ctx, const p11s_token *t, CK_SESSION_HANDLE *out,
                          p11s_error *err)
{
	struct p11i_slot_state *st = p11i_slot_state(ctx, t->slot_id);
	CK_SLOT_INFO si;
	CK_TOKEN_INFO ti;
	CK_SESSION_INFO sess;
	CK_RV rv;

	if (st == NULL)
		return p11i_err_nomem(err);
	if (st->session != CK_INVALID_HANDLE) {
		if (ctx->fl->C_GetSessionInfo(st->session, &sess) == CKR_OK) {
			*out = st->session;
			return P11S_OK;
		}
		/* The token went away or was reinserted: start again. */
		st->session = CK_INVALID_HANDLE;
		st->logged_in = 0;
	}
	/*
	 * The flags the token list read moments ago say whether the token is
	 * initialised; only a failed C_OpenSession needs the slot and token
	 * read again, to say why.
	 */
	if (!(t->info.flags & CKF_TOKEN_INITIALIZED))
		return p11i_err_uninitialised(err, t);
	rv = ctx->fl->C_OpenSession(t->slot_id, CKF_SERIAL_SESSION, NULL, NULL, &st->session);
	if (rv != CKR_OK) {
		CK_RV why = rv;

		st->session = CK_INVALID_HANDLE;
		rv = ctx->fl->C_GetSlotInfo(t->slot_id, &si);
		if (rv == CKR_OK && !(si.flags & CKF_TOKEN_PRESENT))
			return p11i_err(err, P11S_E_TOKEN_ABSENT, "no token in slot %lu (%s)",
			                (unsigned long)t->slot_id, t->slot_description);
		if (rv == CKR_OK && ctx->fl->C_GetTokenInfo(t->slot_id, &ti) == CKR_OK &&
		    !(ti.flags & CKF_TOKEN_INITIALIZED))
			return p11i_err_uninitialised(err, t);
		return p11i_ckr(err, why, P11S_E_TOKEN, "C_OpenSession");
	}
	*out = st->session;
	return P11S_OK;
}
