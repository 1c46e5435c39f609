/*
 * p11smime: verifying signed mail against certificates the user trusts.
 *
 * Senders are distrusted by default: the only trust anchors are the
 * certificates the caller passes (never the system store).  A message
 * certificate helps build a chain but is never trusted on its own.
 *
 * Threads: no shared state: verifications may run at once in several
 * threads; the trust anchors passed in opts are only read.
 */
#ifndef P11SMIME_VERIFY_H
#define P11SMIME_VERIFY_H

#include <stddef.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/x509.h>

#include "p11smime/result.h"
#include "p11smime/rules.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What became of one signature. */
typedef enum p11s_sig_verdict {
	P11S_SIG_GOOD,           /**< signature correct, chain to a trust anchor */
	P11S_SIG_BAD_SIGNATURE,  /**< content or signed attributes altered, or wrong key */
	P11S_SIG_UNTRUSTED,      /**< signature correct, no chain to a trust anchor */
	P11S_SIG_NO_CERTIFICATE, /**< the signer's certificate is neither in the message nor given
	                          */
	P11S_SIG_UNSUPPORTED,    /**< OpenSSL cannot check this algorithm (Ed25519 in 3.0) */
} p11s_sig_verdict;

/** "good", "bad-signature", "untrusted", "no-certificate", "unsupported"; static. */
const char *p11s_sig_verdict_name(p11s_sig_verdict v);

/** Options for p11s_verify(). */
typedef struct p11s_verify_opts {
	/**
	 * The only trust anchors (CA or end-entity certificates; an end-entity
	 * is trusted itself).  Also searched for a signer certificate the
	 * message leaves out.  NULL or empty: nothing is trusted.
	 */
	STACK_OF(X509) * trust;
	time_t at; /**< "now" for the validity report and the rules; 0: the current time */
	/**
	 * 0 (default): @p content gets the message's outer headers (every field
	 * but Content-*, MIME-Version when the signed entity has none; order
	 * and bytes as read), then the signed entity, its CRLFs turned to LF
	 * when the message's header block uses LF (not for a binary entity),
	 * so that decrypt | verify -o keeps the mail.  1: the signed entity
	 * only, canonical CRLF, as signed.
	 */
	int entity_only;
} p11s_verify_opts;

/** The outcome of verifying one message. */
typedef struct p11s_verify_report p11s_verify_report;

/**
 * Verify the signed message read from @p in: a complete RFC 5322 message or
 * a bare entity whose content is multipart/signed (detached) or
 * application/pkcs7-mime; smime-type=signed-data (opaque), as written by
 * p11smime sign or left by p11smime decrypt.
 *
 * The signed content (see p11s_verify_opts.entity_only) is written to
 * @p content when it is not NULL, whatever the verdict: the caller decides
 * whether to keep it (see p11s_verify_report_rc()).
 *
 * A signature that is not good is a report, not an error: P11S_OK with
 * *out set.  Errors: P11S_E_INPUT for a message that is not signed or
 * cannot be parsed (*out NULL), P11S_E_IO when @p content cannot be written.
 *
 * The chain of each signer is built with the message's certificates as
 * intermediates and checked at the signing time the signer states (at
 * opts->at when it states none), so old mail from a since-expired signer
 * stays verifiable; validity at opts->at is reported beside it.
 */
p11s_rc p11s_verify(BIO *in, BIO *content, const p11s_verify_opts *opts, p11s_verify_report **out,
                    p11s_error *err);
/** NULL is fine. */
void p11s_verify_report_free(p11s_verify_report *r);

/**
 * The overall result: P11S_OK when every signer is good and the From
 * address is among a signer's SAN addresses (or there is no From); else,
 * the worst first: P11S_E_BAD_SIGNATURE, P11S_E_UNTRUSTED (also for a
 * missing signer certificate), P11S_E_CRYPTO (a signature OpenSSL cannot
 * check: neither good nor bad), P11S_E_SENDER_MISMATCH.
 */
p11s_rc p11s_verify_report_rc(const p11s_verify_report *r);
/** A one-line summary fit for a person; owned by @p r. */
const char *p11s_verify_report_summary(const p11s_verify_report *r);
/** "detached" (multipart/signed) or "opaque" (signed-data); static. */
const char *p11s_verify_report_format(const p11s_verify_report *r);

/** The From header's addresses (none for a bare entity); owned by @p r. */
size_t p11s_verify_report_from_count(const p11s_verify_report *r);
const char *p11s_verify_report_from(const p11s_verify_report *r, size_t i);
/**
 * 1 when every From address is a SAN address of a good signer, 0 when
 * not ("not signed by its sender"), -1 when the message has no From.
 */
int p11s_verify_report_sender_ok(const p11s_verify_report *r);

size_t p11s_verify_report_signer_count(const p11s_verify_report *r);

/** Signer @p i: verdict and, unless good, the reason (owned by @p r). */
p11s_sig_verdict p11s_verify_signer_verdict(const p11s_verify_report *r, size_t i);
const char *p11s_verify_signer_reason(const p11s_verify_report *r, size_t i);
/** The signer's certificate or NULL (no-certificate); owned by @p r. */
X509 *p11s_verify_signer_cert(const p11s_verify_report *r, size_t i);
/**
 * Printable facts of signer @p i, owned by @p r (NULL when unknown):
 * subject, issuer (RFC 2253), serial (lower-case hex), digest ("SHA256"), signature
 * algorithm ("RSA PKCS#1 v1.5", "RSA-PSS", "ECDSA", "Ed25519", else the
 * OID's name).
 */
const char *p11s_verify_signer_subject(const p11s_verify_report *r, size_t i);
const char *p11s_verify_signer_issuer(const p11s_verify_report *r, size_t i);
const char *p11s_verify_signer_serial(const p11s_verify_report *r, size_t i);
const char *p11s_verify_signer_digest(const p11s_verify_report *r, size_t i);
const char *p11s_verify_signer_signature_alg(const p11s_verify_report *r, size_t i);
/** The certificate's SAN rfc822Name addresses; owned by @p r. */
size_t p11s_verify_signer_email_count(const p11s_verify_report *r, size_t i);
const char *p11s_verify_signer_email(const p11s_verify_report *r, size_t i, size_t j);
/** The signingTime attribute: 1 and *t set, or 0 when absent. */
int p11s_verify_signer_signing_time(const p11s_verify_report *r, size_t i, time_t *t);
/**
 * The certificate's validity at the time the chain was checked (the
 * signing time, else opts->at) and at opts->at: 1 within, 0 outside, -1
 * no certificate.  *not_after (may be NULL) receives notAfter.
 */
int p11s_verify_signer_valid_at_signing(const p11s_verify_report *r, size_t i);
int p11s_verify_signer_valid_at(const p11s_verify_report *r, size_t i, time_t *not_after);
/** The chain built, signer first, subjects; the last is the trust anchor when good. */
size_t p11s_verify_signer_chain_count(const p11s_verify_report *r, size_t i);
const char *p11s_verify_signer_chain_subject(const p11s_verify_report *r, size_t i, size_t j);
/** The validate rules on the signer's certificate, or NULL; owned by @p r. */
const p11s_verdict *p11s_verify_signer_rules(const p11s_verify_report *r, size_t i);
/**
 * Where signer @p i's certificate holds a From address of the message
 * (RFC 8550 3): "subjectAltName", else "subject-emailAddress", or NULL when
 * it holds none (or the message has no From).  Static.
 */
const char *p11s_verify_signer_sender_matched_by(const p11s_verify_report *r, size_t i);

/**
 * The validity of signer @p i's certificate: 1 with *not_before and
 * *not_after set (either may be NULL), 0 when there is no certificate.
 */
int p11s_verify_signer_validity(const p11s_verify_report *r, size_t i, time_t *not_before,
                                time_t *not_after);
/** The time signer @p i's chain was judged at (its signing time, else opts->at). */
time_t p11s_verify_signer_checked_at(const p11s_verify_report *r, size_t i);
/** opts->at (or the time the check ran). */
time_t p11s_verify_report_time(const p11s_verify_report *r);
/** Why the From header could not be read (owned by @p r), or NULL. */
const char *p11s_verify_report_from_error(const p11s_verify_report *r);

#ifdef __cplusplus
}
#endif
#endif
