/*
 * Private links between sign.c and detached.c.  Not installed.
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

#endif
