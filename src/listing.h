/*
 * Private: the parts of listing and reporting that are not public API (the
 * public ones are in p11smime/certs.h and p11smime/token.h).
 */
#ifndef P11S_LISTING_H
#define P11S_LISTING_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include "p11smime/certs.h"
#include "p11smime/result.h"
#include "p11smime/rules.h"
#include "p11smime/token.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Token flag bit (enum p11s_token_flag) -> JSON key ("login_required"); NULL if unknown. */
const char *p11s_token_flag_key(unsigned flag);

struct json_t;
/**
 * The verdict's checks as a new jansson array, in the shape `p11smime
 * validate --json` gives them (docs/json-validate.md): the rule checks as
 * {"rule", "result", "message", "affects_verdict"}, or with @p key_checks
 * the key checks as {"check", "result", "message"}.  NULL on ENOMEM.
 */
struct json_t *p11s_verdict_checks_json(const p11s_verdict *v, int key_checks);

#ifdef __cplusplus
}
#endif
#endif
