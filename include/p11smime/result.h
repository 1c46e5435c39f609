/*
 * p11smime: results and errors.
 *
 * Every fallible library call returns a p11s_rc and, when given a
 * p11s_error, fills it with a message fit to show a person.  The library
 * never prints; the CLI maps the class of a result to its exit code.
 *
 * Threads: a p11s_error belongs to one thread at a time (give each its
 * own); the name and exit-code functions are pure.
 */
#ifndef P11SMIME_RESULT_H
#define P11SMIME_RESULT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Classes of results; the high byte of a p11s_rc. */
typedef enum p11s_class {
	P11S_CLASS_OK = 0,
	P11S_CLASS_USAGE = 1,      /**< the caller asked for something malformed */
	P11S_CLASS_TOKEN = 2,      /**< module, slot, token or mechanism trouble */
	P11S_CLASS_PIN = 3,        /**< PIN wrong, locked, or unavailable */
	P11S_CLASS_SELECTION = 4,  /**< a URI or address matched none or several */
	P11S_CLASS_VALIDATION = 5, /**< a rule or a signature check did not pass */
	P11S_CLASS_CRYPTO = 6,     /**< a cryptographic operation failed */
	P11S_CLASS_INPUT = 7,      /**< input that is not what it should be, I/O */
	P11S_CLASS_INTERNAL = 8,   /**< out of memory, a bug */
} p11s_class;

#define P11S_RC(cls, n) (((cls) << 8) | (n))

/** Result codes.  Values are stable; add new ones at the end of a class. */
typedef enum p11s_rc {
	P11S_OK = 0,

	P11S_E_USAGE = P11S_RC(P11S_CLASS_USAGE, 1),
	P11S_E_BAD_TIME = P11S_RC(P11S_CLASS_USAGE, 2),
	P11S_E_BAD_URI = P11S_RC(P11S_CLASS_USAGE, 3),
	P11S_E_BAD_PIN_SOURCE = P11S_RC(P11S_CLASS_USAGE, 4),

	P11S_E_MODULE = P11S_RC(P11S_CLASS_TOKEN, 1),
	P11S_E_TOKEN = P11S_RC(P11S_CLASS_TOKEN, 2),
	P11S_E_TOKEN_ABSENT = P11S_RC(P11S_CLASS_TOKEN, 3),
	P11S_E_TOKEN_UNINITIALIZED = P11S_RC(P11S_CLASS_TOKEN, 4),
	P11S_E_MECHANISM = P11S_RC(P11S_CLASS_TOKEN, 5),

	P11S_E_PIN_INCORRECT = P11S_RC(P11S_CLASS_PIN, 1),
	P11S_E_PIN_LOCKED = P11S_RC(P11S_CLASS_PIN, 2),
	P11S_E_PIN_FINAL_TRY = P11S_RC(P11S_CLASS_PIN, 3),
	P11S_E_PIN_TO_BE_CHANGED = P11S_RC(P11S_CLASS_PIN, 4),
	P11S_E_PIN_UNAVAILABLE = P11S_RC(P11S_CLASS_PIN, 5),

	P11S_E_NOT_FOUND = P11S_RC(P11S_CLASS_SELECTION, 1),
	P11S_E_AMBIGUOUS = P11S_RC(P11S_CLASS_SELECTION, 2),
	P11S_E_NO_KEY = P11S_RC(P11S_CLASS_SELECTION, 3),
	P11S_E_NO_RECIPIENT = P11S_RC(P11S_CLASS_SELECTION, 4),

	P11S_E_REJECTED = P11S_RC(P11S_CLASS_VALIDATION, 1),
	P11S_E_NOT_VALID_NOW = P11S_RC(P11S_CLASS_VALIDATION, 2),
	P11S_E_KEY_MISMATCH = P11S_RC(P11S_CLASS_VALIDATION, 3),
	P11S_E_BAD_SIGNATURE = P11S_RC(P11S_CLASS_VALIDATION, 4),
	P11S_E_UNTRUSTED = P11S_RC(P11S_CLASS_VALIDATION, 5),
	P11S_E_SENDER_MISMATCH = P11S_RC(P11S_CLASS_VALIDATION, 6),
	P11S_E_MISSING_RECIPIENT_CERT = P11S_RC(P11S_CLASS_VALIDATION, 7),

	P11S_E_CRYPTO = P11S_RC(P11S_CLASS_CRYPTO, 1),
	P11S_E_DECRYPT = P11S_RC(P11S_CLASS_CRYPTO, 2),

	P11S_E_INPUT = P11S_RC(P11S_CLASS_INPUT, 1),
	P11S_E_IO = P11S_RC(P11S_CLASS_INPUT, 2),

	P11S_E_NOMEM = P11S_RC(P11S_CLASS_INTERNAL, 1),
	P11S_E_INTERNAL = P11S_RC(P11S_CLASS_INTERNAL, 2),
} p11s_rc;

/** The class of @p rc. */
p11s_class p11s_rc_class(p11s_rc rc);

/** A short constant name for @p rc ("pin-locked"); never NULL, static. */
const char *p11s_rc_name(p11s_rc rc);

/**
 * Exit code the CLI documents for @p rc: 0 success, 1 a check did not pass,
 * 2 usage, 3 token/module/PIN/selection, 4 bad input or crypto failure.
 */
int p11s_rc_exit_code(p11s_rc rc);

/** Error details: a message and, for selections, the candidates. */
typedef struct p11s_error p11s_error;

/** A new, empty error; NULL when out of memory. */
p11s_error *p11s_error_new(void);
/** Frees @p err; NULL is fine. */
void p11s_error_free(p11s_error *err);
/** Forget what @p err held. */
void p11s_error_clear(p11s_error *err);
/** The recorded code; P11S_OK when none. */
p11s_rc p11s_error_rc(const p11s_error *err);
/** The message, owned by @p err; "" when none. */
const char *p11s_error_message(const p11s_error *err);
/** How many candidates (URIs) an ambiguous or failed selection named. */
size_t p11s_error_candidate_count(const p11s_error *err);
/** Candidate @p i, owned by @p err. */
const char *p11s_error_candidate(const p11s_error *err, size_t i);

#ifdef __cplusplus
}
#endif
#endif
