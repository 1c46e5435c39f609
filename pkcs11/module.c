/*
 * Loading the module, and the one design decision everything else in
 * pkcs11/ leans on: how libp11 and our raw calls share a module.
 *
 * libp11 0.4.12 gives us on-token keys as EVP_PKEYs but hides the module's
 * function list, and we need that list for what libp11 cannot do (one
 * C_FindObjects pass with bulk attribute reads, token flags before a
 * login, C_GetMechanismInfo).  So libp11 loads the module first
 * (PKCS11_CTX_load: dlopen + C_Initialize) and we dlopen() the same path:
 * the dynamic loader hands back the same, already mapped library, and we
 * call its C_GetFunctionList and C_Initialize ourselves.
 *
 * - An ordinary module (SoftHSM, OpenSC) has one global instance: our
 *   C_Initialize answers CKR_CRYPTOKI_ALREADY_INITIALIZED, which we accept
 *   and remember, so that only libp11 calls C_Finalize.
 * - p11-kit's proxy builds a fresh proxy instance on every
 *   C_GetFunctionList (p11-kit/proxy.c), so our C_Initialize succeeds and
 *   we own (and finalize) that instance.  Both instances sit on the same
 *   underlying modules, which p11-kit loads and initialises once per
 *   process, so the token's login state, kept by the real module, is
 *   shared: a C_Login through our instance lets libp11's sessions use the
 *   private keys.  Slot ids are the proxy's own per instance, so we map
 *   our slots to libp11's by the token's identity (p11s_lp_slot), not by id.
 *
 * Logins are always ours (raw C_Login after reading the token flags), never
 * PKCS11_login, which hangs when C_OpenSession fails.  We keep our session
 * on a slot open for the life of the context: closing a token's last
 * session logs it out.  libp11 is only asked to open sessions on a slot
 * where ours opened fine (a token present and initialised).
 *
 * Teardown: our sessions, our C_Finalize if we own an instance, then
 * libp11's slots and its C_Finalize/dlclose, then our dlclose.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/ui.h>

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

const char *p11s_ckr_name(CK_RV rv)
{
	for (size_t i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
		if (ckr_names[i].rv == rv)
			return ckr_names[i].name;
	return "CKR_(unknown)";
}

p11s_rc p11s_ckr(p11s_error *err, CK_RV rv, p11s_rc rc, const char *what)
{
	if (rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_REMOVED)
		rc = P11S_E_TOKEN_ABSENT;
	return p11s_err(err, rc, "%s failed: %s (0x%lx)", what, p11s_ckr_name(rv),
	                (unsigned long)rv);
}

/*
 * libp11 asks for a PIN through an OpenSSL UI only for the context-specific
 * login of CKA_ALWAYS_AUTHENTICATE keys: answer with the PIN of the user
 * login on that token (we cannot tell which slot asks, so every slot
 * logged in with a PIN must have had the same one; the usual case is one).
 */
static int ui_read(UI *ui, UI_STRING *uis)
{
	p11s_ctx *ctx = UI_get0_user_data(ui);
	const char *pin = NULL;

	if (UI_get_string_type(uis) != UIT_PROMPT && UI_get_string_type(uis) != UIT_VERIFY)
		return 1;
	for (size_t i = 0; ctx != NULL && i < ctx->nslots && pin == NULL; i++)
		pin = ctx->slots[i].pin_from_source ? ctx->source_pin : ctx->slots[i].pin;
	if (pin == NULL)
		return 0;
	return UI_set_result(ui, uis, pin) == 0 ? 1 : 0;
}

const char *p11s_ctx_module_path(const p11s_ctx *ctx)
{
	return ctx ? ctx->module_path : NULL;
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
	if (ctx == NULL || (ctx->module_path = strdup(module_path)) == NULL) {
		free(ctx);
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	}
	/* Ours first: dlerror() says why a path does not load, libp11 does not. */
	ctx->dl = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
	if (ctx->dl == NULL) {
		p11s_err(err, P11S_E_MODULE, "cannot load PKCS#11 module %s: %s", module_path,
		         dlerror());
		goto fail;
	}
	getfl = (CK_C_GetFunctionList)dlsym(ctx->dl, "C_GetFunctionList");
	if (getfl == NULL) {
		p11s_err(err, P11S_E_MODULE, "%s is not a PKCS#11 module (no C_GetFunctionList)",
		         module_path);
		goto fail;
	}
	ctx->lp = PKCS11_CTX_new();
	if (ctx->lp == NULL) {
		p11s_err(err, P11S_E_NOMEM, "out of memory");
		goto fail;
	}
	if (PKCS11_CTX_load(ctx->lp, module_path) != 0) {
		p11s_err_ossl(err, P11S_E_MODULE, "cannot initialise PKCS#11 module %s",
		              module_path);
		PKCS11_CTX_free(ctx->lp);
		ctx->lp = NULL;
		goto fail;
	}
	rv = getfl(&ctx->fl);
	if (rv != CKR_OK || ctx->fl == NULL) {
		p11s_ckr(err, rv, P11S_E_MODULE, "C_GetFunctionList");
		goto fail;
	}
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = ctx->fl->C_Initialize(&args);
	if (rv == CKR_OK) {
		ctx->we_initialized = 1;
	} else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		p11s_ckr(err, rv, P11S_E_MODULE, "C_Initialize");
		goto fail;
	}
	rv = ctx->fl->C_GetInfo(&ctx->module_info);
	if (rv != CKR_OK) {
		p11s_ckr(err, rv, P11S_E_MODULE, "C_GetInfo");
		goto fail;
	}
	ctx->ui = UI_create_method("p11smime context-specific login");
	if (ctx->ui == NULL || UI_method_set_reader(ctx->ui, ui_read) != 0) {
		p11s_err(err, P11S_E_NOMEM, "out of memory");
		goto fail;
	}
	PKCS11_set_ui_method(ctx->lp, ctx->ui, ctx);
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
		if (ctx->fl != NULL && ctx->slots[i].session != CK_INVALID_HANDLE)
			ctx->fl->C_CloseSession(ctx->slots[i].session);
		p11s_locked_free(ctx->slots[i].pin);
	}
	free(ctx->slots);
	if (ctx->fl != NULL && ctx->we_initialized)
		ctx->fl->C_Finalize(NULL);
	if (ctx->lp != NULL) {
		if (ctx->lp_slots != NULL)
			PKCS11_release_all_slots(ctx->lp, ctx->lp_slots, ctx->lp_nslots);
		PKCS11_CTX_unload(ctx->lp);
		PKCS11_CTX_free(ctx->lp);
	}
	if (ctx->ui != NULL)
		UI_destroy_method(ctx->ui);
	if (ctx->dl != NULL)
		dlclose(ctx->dl);
	p11s_locked_free(ctx->source_pin);
	free(ctx->pin_source);
	free(ctx->module_path);
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

struct p11s_slot_state *p11s_slot_state(p11s_ctx *ctx, CK_SLOT_ID id)
{
	struct p11s_slot_state *n;

	for (size_t i = 0; i < ctx->nslots; i++)
		if (ctx->slots[i].id == id)
			return &ctx->slots[i];
	n = realloc(ctx->slots, (ctx->nslots + 1) * sizeof(*n));
	if (n == NULL)
		return NULL;
	ctx->slots = n;
	memset(&n[ctx->nslots], 0, sizeof(*n));
	n[ctx->nslots].id = id;
	n[ctx->nslots].session = CK_INVALID_HANDLE;
	return &n[ctx->nslots++];
}

p11s_rc p11s_slot_session(p11s_ctx *ctx, const p11s_token *t, CK_SESSION_HANDLE *out,
                          p11s_error *err)
{
	struct p11s_slot_state *st = p11s_slot_state(ctx, t->slot_id);
	CK_SLOT_INFO si;
	CK_TOKEN_INFO ti;
	CK_SESSION_INFO sess;
	CK_RV rv;

	if (st == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
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
	 * Never open a session on a slot without an initialised token: the
	 * failure would leave libp11 waiting forever on its session pool.
	 */
	rv = ctx->fl->C_GetSlotInfo(t->slot_id, &si);
	if (rv != CKR_OK)
		return p11s_ckr(err, rv, P11S_E_TOKEN, "C_GetSlotInfo");
	if (!(si.flags & CKF_TOKEN_PRESENT))
		return p11s_err(err, P11S_E_TOKEN_ABSENT, "no token in slot %lu (%s)",
		                (unsigned long)t->slot_id, t->slot_description);
	rv = ctx->fl->C_GetTokenInfo(t->slot_id, &ti);
	if (rv != CKR_OK)
		return p11s_ckr(err, rv, P11S_E_TOKEN, "C_GetTokenInfo");
	if (!(ti.flags & CKF_TOKEN_INITIALIZED))
		return p11s_err(err, P11S_E_TOKEN_UNINITIALIZED,
		                "the token in slot %lu is not initialised",
		                (unsigned long)t->slot_id);
	rv = ctx->fl->C_OpenSession(t->slot_id, CKF_SERIAL_SESSION, NULL, NULL, &st->session);
	if (rv != CKR_OK) {
		st->session = CK_INVALID_HANDLE;
		return p11s_ckr(err, rv, P11S_E_TOKEN, "C_OpenSession");
	}
	*out = st->session;
	return P11S_OK;
}

static int same_field(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

p11s_rc p11s_lp_slot(p11s_ctx *ctx, const p11s_token *t, PKCS11_SLOT **out, p11s_error *err)
{
	PKCS11_SLOT *by_token = NULL;
	size_t n_by_token = 0;

	if (!ctx->lp_enumerated) {
		if (PKCS11_enumerate_slots(ctx->lp, &ctx->lp_slots, &ctx->lp_nslots) != 0)
			return p11s_err_ossl(err, P11S_E_TOKEN, "libp11 cannot list the slots");
		ctx->lp_enumerated = 1;
	}
	for (unsigned int i = 0; i < ctx->lp_nslots; i++) {
		PKCS11_SLOT *s = &ctx->lp_slots[i];
		PKCS11_TOKEN *lt = s->token;

		if (lt == NULL || !same_field(lt->label, t->label) ||
		    !same_field(lt->manufacturer, t->manufacturer) ||
		    !same_field(lt->model, t->model) || !same_field(lt->serialnr, t->serial))
			continue;
		/* Same id and same token: certainly the same slot. */
		if (PKCS11_get_slotid_from_slot(s) == t->slot_id) {
			*out = s;
			return P11S_OK;
		}
		by_token = s;
		n_by_token++;
	}
	if (n_by_token == 1) {
		*out = by_token;
		return P11S_OK;
	}
	return p11s_err(err, n_by_token ? P11S_E_AMBIGUOUS : P11S_E_TOKEN,
	                "libp11 does not see token '%s' unambiguously", t->label);
}
