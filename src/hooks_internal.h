/*
 * Private links between sign.c, detached.c and the tests.  Not installed.
 */
#ifndef P11I_HOOKS_INTERNAL_H
#define P11I_HOOKS_INTERNAL_H

#include <openssl/cms.h>

#include "p11smime/sign.h"

/*
 * A SignedData set up for @p s (signer, digest, padding, capabilities,
 * chain) as p11s_signer_sign() makes it, with the content detached or
 * encapsulated whatever opts->opaque said; NULL with @p err set.
 */
CMS_ContentInfo *p11i_signer_cms_new(p11s_signer *s, int detached, p11s_error *err);

/*
 * Whether p11s_signer_sign() builds a detached signature from the signer's
 * prepared template (@p on, the default) or with OpenSSL's CMS code for
 * each message; for tests, which compare the two.  Not while @p s is in use.
 */
void p11i_signer_set_template(p11s_signer *s, int on);

#endif
