/*
 * p11smime: a validation run over tokens and files, as a report.
 *
 * Gather certificates (from pkcs11: URIs and from files or directories),
 * then run the rules engine (p11smime/rules.h) on each with the same time,
 * the same anchors (--ca files plus the CA certificates on the tokens
 * searched) and, for token certificates, the facts about the paired
 * private key.  The CLI renders the report as text for people and as JSON
 * (docs/json-validate.md); the library never prints.
 *
 *	p11s_validation *r;
 *	p11s_validation_new(&opts, &r, err);
 *	p11s_validation_add_anchors(r, "ca.pem", err);   // --ca
 *	p11s_validation_add_file(r, "alice.pem", err);   // errors are also kept in r
 *	p11s_validation_add_token(r, ctx, NULL, err);
 *	p11s_validation_run(r, err);
 *	// the getters below; `p11smime validate` renders them as text or JSON
 *	exit(p11s_rc_exit_code(p11s_validation_status(r)));
 *
 * Threads: a p11s_validation belongs to one thread; several runs may go at
 * once, sharing a p11s_ctx as token.h allows.
 */
#ifndef P11SMIME_VALIDATE_H
#define P11SMIME_VALIDATE_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "p11smime/result.h"
#include "p11smime/rules.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Options of a run. */
typedef struct p11s_validation_opts {
	time_t at;            /**< judge validity at this time; 0: now (taken once per run) */
	int warn_days;        /**< warn when this close to expiry (default 30; 0 never) */
	const char *p12_pass; /**< PKCS#12 password (copied), or NULL to try the empty one */
	int no_login; /**< tokens: do not log in; private keys stay unseen, key checks skipped */
} p11s_validation_opts;

/** Defaults: now, 30 days, no password, log in. */
void p11s_validation_opts_init(p11s_validation_opts *opts);

typedef struct p11s_validation p11s_validation;

/** @p opts may be NULL (defaults). */
p11s_rc p11s_validation_new(const p11s_validation_opts *opts, p11s_validation **out,
                            p11s_error *err);
/** NULL is fine.  Wipes the PKCS#12 password. */
void p11s_validation_free(p11s_validation *r);

/**
 * Trust every certificate in @p path (PEM bundle, DER, PKCS#7, PKCS#12) as
 * an anchor.  An unreadable file is an error for the caller to stop on
 * (it is not recorded in the report).
 */
p11s_rc p11s_validation_add_anchors(p11s_validation *r, const char *path, p11s_error *err);

/**
 * Trust the certificates on the tokens matching @p uri as anchors, found as
 * p11s_trust_certificates() finds them: @p ctx's module (may be NULL), else
 * every module p11-kit knows, its trust module included.  No match is an
 * error for the caller to stop on.
 */
p11s_rc p11s_validation_add_anchors_uri(p11s_validation *r, p11s_ctx *ctx, const char *uri,
                                        p11s_error *err);

/**
 * Add every certificate in @p path, or in each file under the directory
 * @p path (recursively, in name order; hidden files and symbolic links to
 * directories skipped; files that are not certificates at all listed as
 * skipped, not as errors).  A file given by name
 * that is not a certificate is an error, recorded in the report and
 * returned (P11S_E_INPUT / P11S_E_IO).  Damaged blocks in a bundle are
 * recorded as errors; the good certificates are still added.
 */
p11s_rc p11s_validation_add_file(p11s_validation *r, const char *path, p11s_error *err);

/**
 * Add every certificate on the tokens matching @p uri (NULL: every token),
 * filtered by the object part of @p uri, with its paired private key
 * (logging in unless no_login).  The CA certificates on those tokens
 * become anchors.  A token error is recorded in the report and returned.
 */
p11s_rc p11s_validation_add_token(p11s_validation *r, p11s_ctx *ctx, const char *uri,
                                  p11s_error *err);

/** Run the rules on everything added (once; later adds are not judged). */
p11s_rc p11s_validation_run(p11s_validation *r, p11s_error *err);

/**
 * The outcome for the exit code: the first recorded error, else
 * P11S_E_REJECTED when any certificate is rejected, else P11S_OK.
 */
p11s_rc p11s_validation_status(const p11s_validation *r);

/** The time judged at. */
time_t p11s_validation_time(const p11s_validation *r);

/** Certificates judged, in the order added. */
size_t p11s_validation_count(const p11s_validation *r);
/** Where certificate @p i came from: its pkcs11: URI, or the file path; owned by @p r. */
const char *p11s_validation_source(const p11s_validation *r, size_t i);
/** Its position in that file (0-based), or among the certificates of its token target. */
size_t p11s_validation_index(const p11s_validation *r, size_t i);
X509 *p11s_validation_cert(const p11s_validation *r, size_t i);
/** The verdict (NULL before p11s_validation_run()); owned by @p r. */
const p11s_verdict *p11s_validation_verdict(const p11s_validation *r, size_t i);

/** Errors recorded (file not a certificate, token errors): source, message, code. */
size_t p11s_validation_error_count(const p11s_validation *r);
const char *p11s_validation_error_source(const p11s_validation *r, size_t i);
const char *p11s_validation_error_message(const p11s_validation *r, size_t i);
p11s_rc p11s_validation_error_rc(const p11s_validation *r, size_t i);
/** Files of a directory that were not certificates: "path: reason"; owned by @p r. */
size_t p11s_validation_skipped_count(const p11s_validation *r);
const char *p11s_validation_skipped(const p11s_validation *r, size_t i);

/** "token" or "file": where certificate @p i came from; static. */
const char *p11s_validation_origin(const p11s_validation *r, size_t i);
/** "PEM", "DER", "PKCS#7", "PKCS#12" for a file; NULL for a token certificate.  Static. */
const char *p11s_validation_format(const p11s_validation *r, size_t i);

/** What is known of the private key of a certificate; strings owned by the report. */
typedef struct p11s_validation_key {
	int known;             /**< key facts were gathered (0: a certificate file without key) */
	const char *unchecked; /**< why a token certificate's keys were not looked at, or NULL */
	int present;           /**< a private key was found */
	int matches;           /**< its public half equals the certificate's: 1, 0, -1 unknown */
	int on_token;          /**< 1 a token key, 0 a software key (PKCS#12) */
	const char *uri;       /**< the key's pkcs11: URI, or NULL */
	const char *type;      /**< "RSA", "EC", "EC_EDWARDS", ...; static */
	int bits;              /**< 0 when unknown */
	const char *curve;     /**< or NULL */
	int flags_known;       /**< a token key whose attributes were read: the three below hold */
	int sensitive;         /**< CKA_SENSITIVE */
	int extractable;       /**< CKA_EXTRACTABLE */
	unsigned flags;        /**< P11S_KF_* bits */
} p11s_validation_key;

/** Fill *out for certificate @p i (all 0, matches -1, when @p i is out of range). */
void p11s_validation_key_info(const p11s_validation *r, size_t i, p11s_validation_key *out);

#ifdef __cplusplus
}
#endif
#endif
