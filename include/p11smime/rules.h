/*
 * p11smime: the S/MIME certificate rules engine.
 *
 * Pure: a certificate, optional facts about its private key, optional
 * trust anchors and a time go in; a verdict comes out.  No PKCS#11, no
 * I/O.  Each rule is one row in a table (src/rules.c).
 */
#ifndef P11SMIME_RULES_H
#define P11SMIME_RULES_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "p11smime/result.h"

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
 * token).  Pass NULL to the engine when nothing is known (a file).
 */
typedef struct p11s_key_facts {
	int present; /**< a private key was found for the certificate */
	int matches; /**< its public half equals the certificate's key (1), differs (0), unknown
	                (-1) */
	p11s_key_alg alg;
	const char *alg_name; /**< "RSA", "EC", "EC_EDWARDS", ... for messages */
	int sensitive;        /**< CKA_SENSITIVE; -1 unknown */
	int extractable;      /**< CKA_EXTRACTABLE; -1 unknown */
	int can_sign;         /**< CKA_SIGN */
	int can_decrypt;      /**< CKA_DECRYPT */
	int can_unwrap;       /**< CKA_UNWRAP */
	int can_derive;       /**< CKA_DERIVE */
	const char *uri;      /**< the key's pkcs11: URI, for the report; may be NULL */
} p11s_key_facts;

/** Options for p11s_validate(). */
typedef struct p11s_validate_opts {
	time_t at;                  /**< the time to judge validity at */
	int warn_days;              /**< warn when notAfter is this close (default 30) */
	STACK_OF(X509) * anchors;   /**< the only trust anchors; NULL or empty: no chain check */
	STACK_OF(X509) * untrusted; /**< intermediates that may help build a chain */
} p11s_validate_opts;

typedef struct p11s_verdict p11s_verdict;

/**
 * Run every rule on @p cert.  @p key may be NULL.  Fails only on bad
 * arguments or memory; a rejected certificate is a verdict, not an error.
 */
p11s_rc p11s_validate(X509 *cert, const p11s_key_facts *key, const p11s_validate_opts *opts,
                      p11s_verdict **out, p11s_error *err);
void p11s_verdict_free(p11s_verdict *v);

/** Accepted when no rule failed. */
int p11s_verdict_accepted(const p11s_verdict *v);
/** Accepted and within its validity at opts->at: fit to sign or encrypt. */
int p11s_verdict_usable_for_outgoing(const p11s_verdict *v);
/** As the rules (Key Usage) and, when known, the key allow. */
int p11s_verdict_can_sign(const p11s_verdict *v);
int p11s_verdict_can_encrypt(const p11s_verdict *v);
/** Basic Constraints CA:TRUE. */
int p11s_verdict_is_ca(const p11s_verdict *v);

size_t p11s_verdict_check_count(const p11s_verdict *v);
/** Check @p i: rule id (static), result, message (owned by @p v). */
const char *p11s_verdict_check_rule(const p11s_verdict *v, size_t i);
p11s_check_result p11s_verdict_check_result(const p11s_verdict *v, size_t i);
const char *p11s_verdict_check_message(const p11s_verdict *v, size_t i);
/** The result of rule @p rule; P11S_CHECK_SKIP when it was not run. */
p11s_check_result p11s_verdict_rule(const p11s_verdict *v, const char *rule, const char **message);

size_t p11s_verdict_warning_count(const p11s_verdict *v);
const char *p11s_verdict_warning(const p11s_verdict *v, size_t i);

/** "pass"/"fail"/"skip"; static. */
const char *p11s_check_result_name(p11s_check_result r);

#ifdef __cplusplus
}
#endif
#endif
