/*
 * The pairing decision, kept free of PKCS#11 so that it can be unit-tested
 * (tests/unit/test_pairing.c).
 */
#ifndef P11I_PAIRING_H
#define P11I_PAIRING_H

#include <stddef.h>

#include <openssl/evp.h>

#include "p11smime/token.h"

/* One private key whose CKA_ID equals the certificate's. */
struct p11i_pair_candidate {
	EVP_PKEY *pkey;          /* its public half as the token shows it, or NULL */
	p11s_pair_evidence from; /* where pub came from */
};

/*
 * Decide how a certificate whose public key is @p cert_pub pairs with the
 * @p n private keys that share its CKA_ID:
 * - a candidate whose public half equals @p cert_pub: CONFIRMED (the first);
 * - else one whose public half is unknown: UNCONFIRMED (the first);
 * - else, with candidates, all known and all different: MISMATCH (the first);
 * - no candidates: NOT_LOGGED_IN when @p keys_hidden (the token keeps its
 *   private keys from us until we log in), else NONE.
 * *chosen receives the candidate's index (n when none), *how the evidence.
 * A NULL @p cert_pub (an unparsable certificate) confirms nothing.
 */
p11s_pairing p11i_pair_decide(EVP_PKEY *cert_pub, const struct p11i_pair_candidate *cands, size_t n,
                              int keys_hidden, size_t *chosen, p11s_pair_evidence *how);

#endif
