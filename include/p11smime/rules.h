/*
 * p11smime: the S/MIME certificate rules engine.
 *
 * Pure: a certificate, optional facts about its private key, optional
 * trust anchors and a time go in; a verdict comes out.  No PKCS#11, no
 * I/O.  Each rule is one row in a table (src/rules.c); docs/rules.md is
 * the reference for every rule, check and warning.
 *
 * A verdict holds three kinds of results:
 *  - rule checks ("san-email", ...): the S/MIME upload rules.  Any failure
 *    except "validity" rejects the certificate.
 *  - key checks ("key-present", ...): what the token says about the paired
 *    private key.  They never reject; they decide can_sign/can_encrypt.
 *  - the chain: built to the caller's anchors only; informative.
 *
 * Threads: pure, so any number of threads may validate at once; a verdict
 * is read-only once made and may be read by several threads.
 */
#ifndef P11SMIME_RULES_H
#define P11SMIME_RULES_H

#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "p11smime/result.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Stable rule ids, as printed and in JSON ("san-email", ...). */
#define P11S_RULE_SAN_EMAIL             "san-email"
#define P11S_RULE_KEY_USAGE             "key-usage"
#define P11S_RULE_PUBLIC_KEY_ALGORITHM  "public-key-algorithm"
#define P11S_RULE_EXTENDED_KEY_USAGE    "extended-key-usage"
#define P11S_RULE_PRIVATE_KEY_ALGORITHM "private-key-algorithm"
#define P11S_RULE_VALIDITY              "validity"

/** Stable key check ids (token side; never reject a certificate). */
#define P11S_KEYCHECK_PRESENT        "key-present"
#define P11S_KEYCHECK_MATCH          "key-match"
#define P11S_KEYCHECK_HARDWARE_BOUND "key-hardware-bound"
#define P11S_KEYCHECK_FLAGS          "key-flags"

typedef enum p11s_check_result {
	P11S_CHECK_PASS,
	P11S_CHECK_FAIL,
	P11S_CHECK_SKIP,
} p11s_check_result;

/** Key algorithm families the rules know. */
typedef enum p11s_key_alg {
	P11S_ALG_UNKNOWN = 0,
	P11S_ALG_RSA,
	P11S_ALG_EC,
	P11S_ALG_OTHER, /**< known to be neither RSA nor EC; see alg_name */
} p11s_key_alg;

/**
 * What is known of the private key paired with the certificate (from a
 * token, or from a PKCS#12 file).  Pass NULL to the engine when nothing is
 * known (a certificate file).  Start from p11s_key_facts_init(): every
 * tri-state field is then -1 (unknown).
 */
typedef struct p11s_key_facts {
	int present; /**< a private key was found for the certificate (1) or not (0) */
	int matches; /**< its public half equals the certificate's key (1), differs (0), unknown
	                (-1) */
	p11s_key_alg alg;
	const char *alg_name; /**< "RSA", "EC", "EC_EDWARDS", ... for messages */
	int sensitive;        /**< CKA_SENSITIVE; -1 unknown */
	int extractable;      /**< CKA_EXTRACTABLE; -1 unknown */
	int can_sign;         /**< CKA_SIGN; -1 unknown */
	int can_decrypt;      /**< CKA_DECRYPT; -1 unknown */
	int can_unwrap;       /**< CKA_UNWRAP; -1 unknown */
	int can_derive;       /**< CKA_DERIVE; -1 unknown */
	const char *uri;      /**< the key's pkcs11: URI, for the report; may be NULL */
	/* Added after the draft: */
	int on_token;            /**< 1 token key; 0 a software key (PKCS#12) */
	int bits;                /**< RSA modulus / EC field size; 0 unknown */
	const char *curve;       /**< "P-256", ... or NULL */
	const char *absent_note; /**< why present == 0 ("CKA_ID matches no key"); may be NULL */
} p11s_key_facts;

/** Every tri-state field to -1 (unknown), pointers NULL, present 0, on_token 1. */
void p11s_key_facts_init(p11s_key_facts *kf);

/**
 * Facts about a software private key (from a PKCS#12 file): algorithm,
 * size, and whether its public half matches @p cert.  Strings point into
 * static storage.  @p pkey NULL gives present = 0.
 */
void p11s_key_facts_from_pkey(p11s_key_facts *kf, EVP_PKEY *pkey, X509 *cert);

/**
 * Facts about the private key of the token certificate @p cert as the
 * token shows them: the paired key, or the key with the certificate's
 * CKA_ID when the pairing is a MISMATCH (matches = 0); algorithm, size,
 * curve, CKA_SENSITIVE, CKA_EXTRACTABLE and the usage flags.  present = 0
 * with an absent_note when no key has the certificate's CKA_ID.  Strings
 * point into the object list and static storage.
 */
void p11s_key_facts_from_token(p11s_key_facts *kf, const p11s_object *cert);

/** Options for p11s_validate(). */
typedef struct p11s_validate_opts {
	time_t at;                  /**< the time to judge validity at; 0 means now */
	int warn_days;              /**< warn when notAfter is this close; 0 never (init: 30) */
	STACK_OF(X509) * anchors;   /**< the only trust anchors; NULL or empty: no chain check */
	STACK_OF(X509) * untrusted; /**< intermediates that may help build a chain */
} p11s_validate_opts;

/** at = 0 (now), warn_days = 30, no anchors. */
void p11s_validate_opts_init(p11s_validate_opts *opts);

typedef struct p11s_verdict p11s_verdict;

/**
 * Run every rule on @p cert.  @p key may be NULL.  @p opts may be NULL
 * (as p11s_validate_opts_init()).  Fails only on bad arguments or memory
 * (P11S_E_USAGE, P11S_E_NOMEM); a rejected certificate is a verdict, not
 * an error.  Never crashes on odd certificates: unknown algorithms and
 * malformed extensions become failed checks.
 */
p11s_rc p11s_validate(X509 *cert, const p11s_key_facts *key, const p11s_validate_opts *opts,
                      p11s_verdict **out, p11s_error *err);
/** NULL is fine. */
void p11s_verdict_free(p11s_verdict *v);

/** Accepted when no rule failed ("validity" does not count: see usable_for_outgoing). */
int p11s_verdict_accepted(const p11s_verdict *v);
/** Accepted and within its validity at opts->at: fit to sign or encrypt. */
int p11s_verdict_usable_for_outgoing(const p11s_verdict *v);
/**
 * Usable for outgoing mail, not a CA, public key RSA or EC, Key Usage
 * digitalSignature, and, when key facts were given, a matching private
 * key with CKA_SIGN.
 */
int p11s_verdict_can_sign(const p11s_verdict *v);
/**
 * Usable for outgoing mail, not a CA, and Key Usage keyEncipherment (RSA)
 * or keyAgreement (EC); when key facts were given, a matching private key
 * that can decrypt the result (CKA_DECRYPT or CKA_UNWRAP for RSA,
 * CKA_DERIVE for EC).
 */
int p11s_verdict_can_encrypt(const p11s_verdict *v);
/** Why can_sign / can_encrypt is false, for a person; NULL when it is true. Owned by @p v. */
const char *p11s_verdict_cannot_sign_reason(const p11s_verdict *v);
const char *p11s_verdict_cannot_encrypt_reason(const p11s_verdict *v);
/** Basic Constraints CA:TRUE. */
int p11s_verdict_is_ca(const p11s_verdict *v);
/** Within notBefore..notAfter at the time judged. */
int p11s_verdict_in_validity(const p11s_verdict *v);
/** The time judged (opts->at, or the time p11s_validate() ran). */
time_t p11s_verdict_time(const p11s_verdict *v);

/** The number of rule checks run, for the getters below. */
size_t p11s_verdict_check_count(const p11s_verdict *v);
/** Check @p i: rule id (static), result, message (owned by @p v). */
const char *p11s_verdict_check_rule(const p11s_verdict *v, size_t i);
p11s_check_result p11s_verdict_check_result(const p11s_verdict *v, size_t i);
const char *p11s_verdict_check_message(const p11s_verdict *v, size_t i);
/** Whether a failure of check @p i rejects the certificate (all but "validity"). */
int p11s_verdict_check_decides(const p11s_verdict *v, size_t i);

/**
 * The rules that rejected @p v, for a message: "san-email: <reason>;
 * key-usage: <reason>" with @p with_messages, else "san-email, key-usage".
 * Only failures that decide the verdict (not validity).  Caller frees;
 * NULL when none failed or out of memory.
 */
char *p11s_verdict_failures(const p11s_verdict *v, int with_messages);
/** The result of rule @p rule; P11S_CHECK_SKIP when it was not run. @p message may be NULL. */
p11s_check_result p11s_verdict_rule(const p11s_verdict *v, const char *rule, const char **message);

/** Warnings (do not reject the certificate): count, and each as text owned by @p v. */
size_t p11s_verdict_warning_count(const p11s_verdict *v);
const char *p11s_verdict_warning(const p11s_verdict *v, size_t i);

/** Whether key facts were given (0: key checks are absent). */
int p11s_verdict_key_checked(const p11s_verdict *v);
/** Key checks (0 when no key facts were given); same ownership as rule checks. */
size_t p11s_verdict_key_check_count(const p11s_verdict *v);
const char *p11s_verdict_key_check_id(const p11s_verdict *v, size_t i);
p11s_check_result p11s_verdict_key_check_result(const p11s_verdict *v, size_t i);
const char *p11s_verdict_key_check_message(const p11s_verdict *v, size_t i);

/**
 * The chain to opts->anchors: SKIP when no anchors were given, PASS when
 * a chain was built, FAIL with the reason otherwise.  @p message (may be
 * NULL) receives a sentence owned by @p v.
 */
p11s_check_result p11s_verdict_chain(const p11s_verdict *v, const char **message);
/** The chain built (end-entity first), subjects as RFC 2253 strings owned by @p v. */
size_t p11s_verdict_chain_length(const p11s_verdict *v);
const char *p11s_verdict_chain_subject(const p11s_verdict *v, size_t i);

/** "pass"/"fail"/"skip"; static. */
const char *p11s_check_result_name(p11s_check_result r);

#ifdef __cplusplus
}
#endif
#endif
