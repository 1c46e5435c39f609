/*
 * p11smime: tokens, objects and on-token keys.
 *
 * Implemented in pkcs11/, the only part of p11smime that speaks PKCS#11
 * (raw function list and libp11).  Everything here is in p11smime's own
 * types and OpenSSL's: callers never see a CK_ type.
 *
 * Ownership: a p11s_ctx owns every list it returns until that list is
 * freed; objects belong to their list; strings and X509/EVP_PKEY pointers
 * returned by getters belong to the object they came from unless a
 * function says "caller frees".
 *
 * Threads: a p11s_ctx may be shared by threads for signing and decrypting
 * (sign.h, decrypt.h) and for listing and selecting: logins and object
 * searches take the context's lock, and each private-key operation borrows
 * a PKCS#11 session of its own (login state is per application and token in
 * PKCS#11, so it is logged in).  Set it up (p11s_ctx_set_pin_source, _prompt,
 * _allow_final_try) before sharing it, and free it after every thread is
 * done with it.  The PIN prompt may be called from any thread, one call at
 * a time.  A p11s_key may be used by several threads at once
 * (p11s_key_last_mechanism() answers per thread); token and object lists
 * belong to one thread at a time.
 */
#ifndef P11SMIME_TOKEN_H
#define P11SMIME_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "p11smime/result.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A loaded PKCS#11 module and the options for talking to it. */
typedef struct p11s_ctx p11s_ctx;

/**
 * Asks a person for a PIN.  Writes at most @p len - 1 bytes and a NUL into
 * @p buf and returns 0, or -1 when no PIN can be had.  The CLI supplies one
 * that reads /dev/tty without echo; the library never prompts by itself.
 */
typedef int (*p11s_pin_prompt_fn)(const char *prompt, char *buf, size_t len, void *user);

/**
 * Load @p module_path (NULL: $P11SMIME_MODULE, else p11-kit's proxy, which
 * offers every module registered with p11-kit) and initialise it.
 * P11S_E_MODULE when it cannot be loaded.
 */
p11s_rc p11s_ctx_new(const char *module_path, p11s_ctx **out, p11s_error *err);
/** Logs out nothing, closes every session and unloads the module; NULL ok. */
void p11s_ctx_free(p11s_ctx *ctx);
/**
 * Path of the loaded module; owned by @p ctx.
 */
const char *p11s_ctx_module_path(const p11s_ctx *ctx);

/**
 * Where PINs come from: "file:PATH" (first line), "fd:N" (first line),
 * "env:VAR"; NULL to prompt through the prompt callback.  The spec is
 * checked here (P11S_E_BAD_PIN_SOURCE); it is read only when a login needs it.
 */
p11s_rc p11s_ctx_set_pin_source(p11s_ctx *ctx, const char *spec, p11s_error *err);
/** Check a PIN source spec as p11s_ctx_set_pin_source() does, without a context. */
p11s_rc p11s_pin_source_check(const char *spec, p11s_error *err);
/** The callback used when there is no PIN source. */
void p11s_ctx_set_pin_prompt(p11s_ctx *ctx, p11s_pin_prompt_fn fn, void *user);
/** Allow a login when the token says the next wrong PIN locks it. */
void p11s_ctx_set_allow_final_try(p11s_ctx *ctx, int allow);
/**
 * Limit @p ctx to the tokens @p uri matches ("pkcs11:token=Mail", a token
 * URI: object attributes such as id or type are refused, P11S_E_BAD_URI):
 * every later listing, selection and login sees only those tokens, as if
 * the module held no other.  NULL lifts the limit.  A service serving one
 * token of several (agent, milter) sets it before its first login.  Set it
 * before threads share @p ctx.
 */
p11s_rc p11s_ctx_set_token_filter(p11s_ctx *ctx, const char *uri, p11s_error *err);

/* ---------------------------------------------------------------- tokens */

/** Token flags worth showing, as reported by C_GetTokenInfo. */
enum p11s_token_flag {
	P11S_TOKEN_LOGIN_REQUIRED = 1u << 0,
	P11S_TOKEN_PROTECTED_AUTH_PATH = 1u << 1,
	P11S_TOKEN_INITIALIZED = 1u << 2,
	P11S_TOKEN_USER_PIN_INITIALIZED = 1u << 3,
	P11S_TOKEN_USER_PIN_COUNT_LOW = 1u << 4,
	P11S_TOKEN_USER_PIN_FINAL_TRY = 1u << 5,
	P11S_TOKEN_USER_PIN_LOCKED = 1u << 6,
	P11S_TOKEN_USER_PIN_TO_BE_CHANGED = 1u << 7,
	P11S_TOKEN_WRITE_PROTECTED = 1u << 8,
	P11S_TOKEN_HW_SLOT = 1u << 9,
	P11S_TOKEN_REMOVABLE = 1u << 10,
};

typedef struct p11s_token p11s_token;
typedef struct p11s_token_list p11s_token_list;

/**
 * Every slot that holds a token and matches @p uri (NULL or "pkcs11:"
 * matches all).  Only the token part of the URI is used.  No login.
 */
p11s_rc p11s_tokens(p11s_ctx *ctx, const char *uri, p11s_token_list **out, p11s_error *err);
/** Frees the list and its tokens; NULL ok. */
void p11s_token_list_free(p11s_token_list *list);
/** The number of tokens; 0 for NULL. */
size_t p11s_token_list_count(const p11s_token_list *list);
/** Token @p i, owned by @p list; NULL when out of range. */
const p11s_token *p11s_token_list_get(const p11s_token_list *list, size_t i);

/** The token's URI, "pkcs11:model=...;manufacturer=...;serial=...;token=...". */
const char *p11s_token_uri(const p11s_token *t);
/** Token fields (CK_TOKEN_INFO, CK_SLOT_INFO) trimmed of PKCS#11 padding, owned by @p t. */
const char *p11s_token_label(const p11s_token *t);
/** See p11s_token_label(). */
const char *p11s_token_manufacturer(const p11s_token *t);
/** See p11s_token_label(). */
const char *p11s_token_model(const p11s_token *t);
/** See p11s_token_label(). */
const char *p11s_token_serial(const p11s_token *t);
/** See p11s_token_label(). */
const char *p11s_token_slot_description(const p11s_token *t);
/** The module's slot id (p11-kit's proxy numbers slots its own way). */
unsigned long p11s_token_slot_id(const p11s_token *t);
/** enum p11s_token_flag bits, as read when the list was made. */
unsigned p11s_token_flags(const p11s_token *t);

/* --------------------------------------------------------------- objects */

typedef enum p11s_object_class {
	P11S_OBJ_CERTIFICATE,
	P11S_OBJ_PRIVATE_KEY,
	P11S_OBJ_PUBLIC_KEY,
} p11s_object_class;

typedef enum p11s_key_type {
	P11S_KEY_OTHER = 0,
	P11S_KEY_RSA,
	P11S_KEY_EC,
	P11S_KEY_EC_EDWARDS,
	P11S_KEY_EC_MONTGOMERY,
	P11S_KEY_DSA,
	P11S_KEY_DH,
} p11s_key_type;

/** Key attribute bits (CKA_*) read from private and public key objects. */
enum p11s_key_flag {
	P11S_KF_SIGN = 1u << 0,
	P11S_KF_DECRYPT = 1u << 1,
	P11S_KF_DERIVE = 1u << 2,
	P11S_KF_UNWRAP = 1u << 3,
	P11S_KF_SENSITIVE = 1u << 4,
	P11S_KF_EXTRACTABLE = 1u << 5,
	P11S_KF_ALWAYS_AUTHENTICATE = 1u << 6,
	P11S_KF_PRIVATE = 1u << 7,
	P11S_KF_VERIFY = 1u << 8,
	P11S_KF_ENCRYPT = 1u << 9,
	P11S_KF_WRAP = 1u << 10,
	P11S_KF_LOCAL = 1u << 11, /**< generated on the token */
	P11S_KF_NEVER_EXTRACTABLE = 1u << 12,
	P11S_KF_ALWAYS_SENSITIVE = 1u << 13,
};

/** How a certificate was paired with a private key. */
typedef enum p11s_pairing {
	P11S_PAIR_NONE,          /**< no private key with the certificate's CKA_ID */
	P11S_PAIR_CONFIRMED,     /**< same CKA_ID and the public keys are equal */
	P11S_PAIR_MISMATCH,      /**< same CKA_ID but a different key */
	P11S_PAIR_UNCONFIRMED,   /**< same CKA_ID; the token shows no public half to compare */
	P11S_PAIR_NOT_LOGGED_IN, /**< keys are private objects and we did not log in */
} p11s_pairing;

/** Where the public half of a private key, compared with the certificate's, came from. */
typedef enum p11s_pair_evidence {
	P11S_EVIDENCE_NONE,            /**< not compared */
	P11S_EVIDENCE_KEY_ATTRIBUTES,  /**< RSA: CKA_MODULUS/CKA_PUBLIC_EXPONENT of the private key
	                                */
	P11S_EVIDENCE_PUBLIC_KEY_INFO, /**< CKA_PUBLIC_KEY_INFO of the private key */
	P11S_EVIDENCE_PUBLIC_KEY_OBJECT, /**< the public key object with the same CKA_ID */
} p11s_pair_evidence;

/** "none", "confirmed", "mismatch", "unconfirmed", "not-logged-in"; static. */
const char *p11s_pairing_name(p11s_pairing p);
/** "none", "key-attributes", "public-key-info", "public-key-object"; static. */
const char *p11s_pair_evidence_name(p11s_pair_evidence e);
/** "certificate", "private-key", "public-key"; static. */
const char *p11s_object_class_name(p11s_object_class c);

typedef struct p11s_object p11s_object;
typedef struct p11s_object_list p11s_object_list;

/** Options for p11s_objects(). */
typedef struct p11s_objects_opts {
	int login;        /**< log in (PIN policy applies) to see private objects */
	int certificates; /**< include certificates (all three 0 = all classes) */
	int private_keys;
	int public_keys;
} p11s_objects_opts;

/**
 * Enumerate the objects on every token matching @p uri (NULL: all tokens),
 * filtered by the object part of the URI, and pair each certificate with
 * its private key (CKA_ID, then the public keys are compared).  Tokens are
 * filtered by the URI before any login.  One search per token; when the
 * URI names an id (or a label), only the objects with it, and those sharing
 * their CKA_ID for the pairing, are read, so selecting one key is cheap
 * however many certificates the token holds.
 */
p11s_rc p11s_objects(p11s_ctx *ctx, const char *uri, const p11s_objects_opts *opts,
                     p11s_object_list **out, p11s_error *err);
/** Frees the list, its objects and their tokens; NULL ok. */
void p11s_object_list_free(p11s_object_list *list);
/** The number of objects asked for (the URI and class filters applied); 0 for NULL. */
size_t p11s_object_list_count(const p11s_object_list *list);
/**
 * Object @p i, owned by @p list; NULL when out of range.  Sorted token by
 * token: certificates, private keys, public keys, each by id then label.
 */
const p11s_object *p11s_object_list_get(const p11s_object_list *list, size_t i);

/** Certificate, private key or public key. */
p11s_object_class p11s_object_get_class(const p11s_object *o);
/** The object's RFC 7512 URI (token + object + id + type), which selects exactly it. */
const char *p11s_object_uri(const p11s_object *o);
/** CKA_LABEL, owned by @p o; NULL when the object has none. */
const char *p11s_object_label(const p11s_object *o);
/** CKA_ID bytes; *len set; NULL when empty. */
const unsigned char *p11s_object_id(const p11s_object *o, size_t *len);
/** The token it lives on (owned by the list). */
const p11s_token *p11s_object_token(const p11s_object *o);

/**
 * Certificates: the parsed certificate (NULL if CKA_VALUE did not parse).
 * Parsed on first use: listing many certificates need not pay for it.
 */
X509 *p11s_object_x509(const p11s_object *o);
/**
 * Certificates: CKA_VALUE, the DER certificate as the token holds it
 * (*len set), or NULL when empty.  Owned by the object.
 */
const unsigned char *p11s_object_value(const p11s_object *o, size_t *len);
/** Certificates: how the private key was paired. */
p11s_pairing p11s_object_pairing(const p11s_object *o);
/** Certificates: how the pairing was confirmed (or refuted). */
p11s_pair_evidence p11s_object_pairing_evidence(const p11s_object *o);
/**
 * Certificates: the paired private key when the pairing is CONFIRMED or
 * UNCONFIRMED, else NULL (a MISMATCH key is never offered for use).
 */
const p11s_object *p11s_object_private_key(const p11s_object *o);
/**
 * Certificates: the private key with the same CKA_ID whatever the pairing
 * says (the mismatched key of a MISMATCH), or NULL.
 */
const p11s_object *p11s_object_id_key(const p11s_object *o);
/** Private keys: the certificate paired with this key, or NULL. */
const p11s_object *p11s_object_certificate(const p11s_object *o);

/**
 * Keys: type, bits (RSA modulus, EC field; 0 when unknown), curve name
 * ("P-256", else OpenSSL's short name such as "brainpoolP256r1") or NULL.
 */
p11s_key_type p11s_object_key_type(const p11s_object *o);
/** See p11s_object_key_type(). */
int p11s_object_key_bits(const p11s_object *o);
/** See p11s_object_key_type(); owned by @p o. */
const char *p11s_object_key_curve(const p11s_object *o);
/** Keys: enum p11s_key_flag bits. */
unsigned p11s_object_key_flags(const p11s_object *o);
/** "RSA", "EC", "EC_EDWARDS", ...; static. */
const char *p11s_key_type_name(p11s_key_type t);

/**
 * Select exactly one certificate: @p selector is a pkcs11: URI (of the
 * certificate, or of its key) or an e-mail address matched
 * case-insensitively against the certificates' SAN rfc822Names.  None:
 * P11S_E_NOT_FOUND; several: P11S_E_AMBIGUOUS with every candidate's URI in
 * @p err.  Logs in when @p opts->login is set.  *list receives the
 * enumeration the certificate belongs to (caller frees it).
 */
p11s_rc p11s_select_certificate(p11s_ctx *ctx, const char *selector, const p11s_objects_opts *opts,
                                p11s_object_list **list, const p11s_object **cert, p11s_error *err);

/**
 * The certificates on the tokens matching @p uri, for trusting: those
 * of @p ctx's module (may be NULL) when a token there matches; else those
 * on every module p11-kit knows and enables for this program, including
 * the ones it keeps out of its proxy (its trust module, token "System
 * Trust"), except @p ctx's own module.  Public objects only: no login.
 * Each is pushed onto @p out with its own reference; *added counts them.
 * P11S_E_NOT_FOUND when no certificate matches.
 */
p11s_rc p11s_trust_certificates(p11s_ctx *ctx, const char *uri, STACK_OF(X509) * out, size_t *added,
                                p11s_error *err);

/* --------------------------------------------------------- on-token keys */

/** A private key on a token, usable through OpenSSL. */
typedef struct p11s_key p11s_key;

/**
 * Open @p private_key (from a list enumerated with login) for use: logs in
 * if needed (PIN policy: one attempt, refuse on locked/final try/to be
 * changed) and returns a handle whose EVP_PKEY performs every private-key
 * operation on the token.  Keys with CKA_ALWAYS_AUTHENTICATE get their
 * context-specific login from the PIN of the user login (a protected
 * authentication path: without a PIN).  The handle must be freed before
 * @p ctx; the list may be freed first.
 */
p11s_rc p11s_key_open(p11s_ctx *ctx, const p11s_object *private_key, p11s_key **out,
                      p11s_error *err);
/** Releases the handle (before its p11s_ctx); NULL ok. */
void p11s_key_free(p11s_key *key);
/** The EVP_PKEY; owned by @p key, valid until p11s_key_free(). */
EVP_PKEY *p11s_key_pkey(const p11s_key *key);
/** The key object's URI; owned by @p key. */
const char *p11s_key_uri(const p11s_key *key);

/** Operations a caller may need a token mechanism for. */
typedef enum p11s_op {
	P11S_OP_SIGN_RSA_PKCS1,    /**< RSA PKCS#1 v1.5 signature */
	P11S_OP_SIGN_RSA_PSS,      /**< RSA-PSS signature */
	P11S_OP_SIGN_ECDSA,        /**< ECDSA over a digest */
	P11S_OP_DECRYPT_RSA_PKCS1, /**< RSA PKCS#1 v1.5 key transport */
	P11S_OP_DECRYPT_RSA_OAEP,  /**< RSA-OAEP key transport */
	P11S_OP_DERIVE_ECDH,       /**< ECDH (CKM_ECDH1_DERIVE) */
} p11s_op;

/**
 * Ask the token (C_GetMechanismInfo) whether it can do @p op with @p key:
 * the mechanism the key will use exists, has the flag (CKF_SIGN,
 * CKF_DECRYPT, CKF_DERIVE) and accepts the key's size; the key's own
 * CKA_SIGN/CKA_DECRYPT/CKA_DERIVE allows it.  The mechanisms: RSA PKCS#1
 * v1.5 sign and decrypt: CKM_RSA_PKCS; RSA-PSS sign: CKM_RSA_PKCS_PSS, else
 * CKM_RSA_X_509 (raw RSA, padding done by OpenSSL); OAEP decrypt:
 * CKM_RSA_PKCS_OAEP, else CKM_RSA_X_509; ECDSA: CKM_ECDSA; ECDH:
 * CKM_ECDH1_DERIVE.  The native PSS/OAEP chosen here is then used for @p
 * key; should the token refuse its parameters at signing or decryption
 * time, raw RSA is tried (see p11s_key_last_mechanism()).
 * On success *mechanism (may be NULL) names it; static string.
 * P11S_E_MECHANISM with a plain message saying what is missing otherwise.
 */
p11s_rc p11s_key_check_op(const p11s_key *key, p11s_op op, const char **mechanism, p11s_error *err);

/**
 * The mechanism of the last signature or decryption with @p key that
 * worked in the calling thread, or NULL (none yet in this thread); static.
 */
const char *p11s_key_last_mechanism(const p11s_key *key);

/**
 * Why the last operation on @p key failed before the token used the key:
 * the context-specific login of a CKA_ALWAYS_AUTHENTICATE key (no PIN to
 * be had, a wrong one).  Recorded in @p err and returned; P11S_OK when the
 * last operation got past it.  For callers whose OpenSSL layer hides the
 * key's failure (CMS decryption goes on with a random key).
 */
p11s_rc p11s_key_login_failure(const p11s_key *key, p11s_error *err);

#ifdef __cplusplus
}
#endif
#endif
