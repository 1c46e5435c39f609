#include "pairing.h"

p11s_pairing p11i_pair_decide(EVP_PKEY *cert_pub, const struct p11i_pair_candidate *cands, size_t n,
                              int keys_hidden, size_t *chosen, p11s_pair_evidence *how)
{
	size_t unknown = n, differs = n;

	*chosen = n;
	*how = P11S_EVIDENCE_NONE;
	if (n == 0)
		return keys_hidden ? P11S_PAIR_NOT_LOGGED_IN : P11S_PAIR_NONE;
	for (size_t i = 0; i < n; i++) {
		if (cands[i].pkey == NULL || cert_pub == NULL) {
			if (unknown == n)
				unknown = i;
			continue;
		}
		/* EVP_PKEY_eq: 1 equal, 0 different, <0 not comparable (other types). */
		if (EVP_PKEY_eq(cert_pub, cands[i].pkey) == 1) {
			*chosen = i;
			*how = cands[i].from;
			return P11S_PAIR_CONFIRMED;
		}
		if (differs == n)
			differs = i;
	}
	if (unknown < n) {
		*chosen = unknown;
		return P11S_PAIR_UNCONFIRMED;
	}
	*chosen = differs;
	*how = cands[differs].from;
	return P11S_PAIR_MISMATCH;
}
