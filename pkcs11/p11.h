/*
 * Private to pkcs11/: the context, tokens and objects behind the opaque
 * types of include/p11smime/token.h.
 */
#ifndef P11I_PKCS11_INTERNAL_H
#define P11I_PKCS11_INTERNAL_H

#include <pthread.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "common.h"
#include "p11smime/token.h"
#include "pairing.h"

/*
 * What we keep per slot between calls.  Allocated one by one so that a
 * pointer to it stays valid while other slots are added (other threads).
 */
struct p11i_slot_state {
	CK_SLOT_ID id;
	/*
	 * The login session: logins and object searches, under ctx->lock.  It
	 * stays open for the life of the context, since closing a token's last
	 * session logs it out.
	 */
	CK_SESSION_HANDLE session; /* CK_INVALID_HANDLE: none opened yet */
	int logged_in;
	/*
	 * The token refused the PIN this context gave it: every later login
	 * (the next file of a batch, another thread) is refused without
	 * trying again, so that one wrong PIN costs one try.
	 */
	int pin_refused;
	/*
	 * The URI's pin-source that gave the PIN of the user login (a path or
	 * fd:/env: name, never the PIN): keys with CKA_ALWAYS_AUTHENTICATE
	 * read it again for each context-specific login.  No PIN is kept.
	 */
	char *uri_pin_source;
	/*
	 * Idle sessions for private-key operations (key.c), under
	 * ctx->pool_lock: each operation borrows one, so threads sharing a key
	 * never meet on a session.  Login state is per application and token
	 * in PKCS#11, so they are logged in with the login session.
	 */
	P11I_VEC(CK_SESSION_HANDLE) idle;
};

struct p11s_ctx {
	char *module_path;
	/* The one instance of the module, see module.c. */
	void *dl;
	CK_FUNCTION_LIST_PTR fl;
	int we_initialized; /* our C_Initialize returned CKR_OK: we finalize */
	CK_INFO module_info;
	/* Options. */
	char *pin_source;
	p11s_pin_prompt_fn prompt;
	void *prompt_user;
	int allow_final_try;
	/* p11s_ctx_set_token_filter(): tokens outside it are not seen at all. */
	P11KitUri *token_filter;
	/* A PIN read from a source that cannot be read twice (fd:); locked memory. */
	char *source_pin;
	/*
	 * Threads (docs/design.md): @p lock (recursive) guards the slot table,
	 * logins, PINs and the login sessions' searches; @p pool_lock only the
	 * idle lists, so that signatures do not wait for a search.
	 */
	pthread_mutex_t lock, pool_lock;
	struct p11i_slot_state **slots;
	size_t nslots;
};

struct p11s_token {
	CK_SLOT_ID slot_id;
	CK_SLOT_INFO slot_info;
	CK_TOKEN_INFO info;
	char *uri;
	char *label, *manufacturer, *model, *serial, *slot_description;
	unsigned flags;
};

struct p11s_token_list {
	p11s_token **tokens;
	size_t count;
};

struct p11s_object {
	p11s_object_class cls;
	CK_OBJECT_HANDLE handle;
	const p11s_token *token; /* owned by the list's token list */
	char *uri;
	char *label;
	unsigned char *id;
	size_t id_len;
	/* Certificates: CKA_VALUE, and the certificate parsed from it on first use. */
	unsigned char *der;
	size_t der_len;
	X509 *x509;
	int x509_tried;
	/* Keys. */
	p11s_key_type key_type;
	int key_bits;
	char *curve;
	unsigned key_flags;
	struct p11i_pair_candidate pub; /* keys: the public half as the token shows it */
	/* Certificates: pairing; keys: the certificate that chose them. */
	p11s_pairing pairing;
	p11s_pair_evidence evidence;
	const p11s_object *paired;    /* confirmed or unconfirmed key / its certificate */
	const p11s_object *candidate; /* the key with the same CKA_ID, whatever the outcome */
};

struct p11s_object_list {
	p11s_token_list *tokens;
	p11s_object **all; /* every object enumerated (owned), for pairing */
	size_t all_count;
	p11s_object **objects; /* those the caller asked for (borrowed from all) */
	size_t count;
};

/* module.c */
p11s_rc p11i_ckr(p11s_error *err, CK_RV rv, p11s_rc rc, const char *what);
const char *p11i_ckr_name(CK_RV rv);
/* The recursive context lock (p11s_ctx); every path that logs in or searches holds it. */
void p11i_ctx_lock(p11s_ctx *ctx);
void p11i_ctx_unlock(p11s_ctx *ctx);
/* Found or added; NULL on ENOMEM.  Valid for the life of @p ctx. */
struct p11i_slot_state *p11i_slot_state(p11s_ctx *ctx, CK_SLOT_ID id);
/* P11S_E_TOKEN_UNINITIALIZED, said of @p t by its slot's number and description. */
p11s_rc p11i_err_uninitialised(p11s_error *err, const p11s_token *t);
/*
 * Check the token is present and initialised, then open (once) the login
 * session.  Use it with ctx->lock held (searches); private-key operations
 * take a session of their own with p11i_op_session().
 */
p11s_rc p11i_slot_session(p11s_ctx *ctx, const p11s_token *t, CK_SESSION_HANDLE *out,
                          p11s_error *err);
/* A session of @p st for one private-key operation: an idle one, else a new one. */
CK_RV p11i_op_session(p11s_ctx *ctx, struct p11i_slot_state *st, CK_SESSION_HANDLE *out);
/*
 * Give @p s back after the operation; @p rv, the operation's last answer,
 * says whether the session is still worth keeping (else it is closed).
 */
void p11i_op_session_done(p11s_ctx *ctx, struct p11i_slot_state *st, CK_SESSION_HANDLE s, CK_RV rv);

/* key.c */
/*
 * 1 when the token in @p slot lists @p mech, 0 when it does not, -1 when it
 * cannot say.  Some modules (SoftHSM's slots.mechanisms) leave a mechanism
 * out of the list and still answer C_GetMechanismInfo for it: the list is
 * what the token offers.
 */
int p11i_mech_listed(p11s_ctx *ctx, CK_SLOT_ID slot, CK_MECHANISM_TYPE mech);

/* tokens.c */
void p11i_token_free(p11s_token *t);
/* @p uri for messages, with any pin-value hidden; caller frees. */
char *p11i_uri_redact(const char *uri);
/* Parse @p uri (NULL: match all) for P11_KIT_URI_FOR_ANY; BAD_URI if malformed. */
p11s_rc p11i_uri_parse(const char *uri, P11KitUri **out, p11s_error *err);
int p11i_uri_match_token(p11s_ctx *ctx, P11KitUri *uri, const p11s_token *t);
/* The tokens matching @p uri; NOT_FOUND when none. */
p11s_rc p11i_tokens_matching(p11s_ctx *ctx, P11KitUri *uri, p11s_token_list **out, p11s_error *err);

/* login.c */
/* Log in to @p t following the PIN policy; @p uri may carry pin-value/pin-source. */
p11s_rc p11i_login(p11s_ctx *ctx, const p11s_token *t, P11KitUri *uri, p11s_error *err);
/*
 * The context-specific login a CKA_ALWAYS_AUTHENTICATE key needs after
 * each C_SignInit/C_DecryptInit on @p s: the PIN is asked for again (the
 * source read anew, the prompt shown again) and wiped when the call returns.
 */
p11s_rc p11i_context_login(p11s_ctx *ctx, CK_SLOT_ID slot, CK_SESSION_HANDLE s, p11s_error *err);

/* objects.c */
p11s_rc p11i_objects_enumerate(p11s_ctx *ctx, P11KitUri *uri, int login, p11s_object_list **out,
                               p11s_error *err);
/*
 * The same, for a selection that only a certificate's DER can decide (an
 * e-mail address): the tokens' certificates are read (CKA_ID and
 * CKA_VALUE only) and @p f->keep judges each; the list holds those kept,
 * the objects sharing their CKA_ID, and their issuers on the token.
 */
struct der_filter {
	int (*keep)(const unsigned char *der, size_t len, void *arg);
	void *arg;
};
p11s_rc p11i_objects_enumerate_der(p11s_ctx *ctx, P11KitUri *uri, int login,
                                   const struct der_filter *f, p11s_object_list **out,
                                   p11s_error *err);
int p11i_uri_match_object(P11KitUri *uri, const p11s_object *o);
/* The URI that names exactly @p o (token fields, type, id, label); malloc'd. */
char *p11i_object_uri_build(const p11s_object *o);
/* Show only the objects matching @p uri (NULL: all) and the classes of @p opts. */
p11s_rc p11i_object_list_filter(p11s_object_list *l, P11KitUri *uri, const p11s_objects_opts *opts,
                                p11s_error *err);

#endif
