/*
 * p11smime: the shapes mail clients' S/MIME hooks call (mutt, neomutt and
 * others that run an external tool): a MIME entity signed exactly as the
 * client wrote it, with only the signature given back, and a detached
 * signature checked over content and signature held in two files.
 *
 * Threads: as sign.h and verify.h: a prepared signer may sign entities from
 * several threads at once.
 */
#ifndef P11SMIME_HOOKS_H
#define P11SMIME_HOOKS_H

#include <openssl/bio.h>

#include "p11smime/io.h"
#include "p11smime/result.h"
#include "p11smime/sign.h"
#include "p11smime/verify.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Sign the entity read from @p in exactly as given: lone LF line ends
 * become CRLF and nothing else changes (no re-encoding, 8-bit bytes kept;
 * the caller owns the entity and sends it as it is).  Writes only the CMS
 * SignedData to @p out, in @p form (P11S_FORM_DER or P11S_FORM_PEM,
 * "-----BEGIN PKCS7-----"): without the content when @p detached, with it
 * encapsulated otherwise.  Same signer, signed attributes and refusals as
 * p11s_signer_sign().  The entity is held in memory until the signature
 * exists; @p out receives nothing before.  Errors: P11S_E_USAGE for
 * P11S_FORM_SMIME, P11S_E_CRYPTO, P11S_E_IO.
 */
p11s_rc p11s_signer_sign_entity(p11s_signer *s, BIO *in, BIO *out, int detached, p11s_outform form,
                                p11s_error *err);

/**
 * Verify the detached signature read from @p signature (DER or PEM as
 * @p inform says; P11S_FORM_SMIME: recognised by content) over the content
 * read from @p content (its line ends made CRLF, as when it was signed).
 * Same report, verdicts and errors as p11s_verify() for a multipart/signed
 * message with no From header (the sender is then not checked).
 */
p11s_rc p11s_verify_detached(BIO *content, BIO *signature, p11s_outform inform,
                             const p11s_verify_opts *opts, p11s_verify_report **out,
                             p11s_error *err);

/**
 * Verify the opaque signature (SignedData with its content inside) read
 * from @p signature, DER or PEM as for p11s_verify_detached(), writing the
 * signed content to @p content when it is not NULL, as p11s_verify() does
 * for an application/pkcs7-mime; smime-type=signed-data message.
 */
p11s_rc p11s_verify_opaque(BIO *signature, p11s_outform inform, BIO *content,
                           const p11s_verify_opts *opts, p11s_verify_report **out, p11s_error *err);

#ifdef __cplusplus
}
#endif
#endif
