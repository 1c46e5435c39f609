/*
 * Result names and exit codes, on libc alone: the library's
 * p11s_rc_name() and p11s_rc_exit_code(), and the thin front end's
 * (src/front/thin.c), which loads no library of ours.
 */
#ifndef P11I_RC_NAMES_H
#define P11I_RC_NAMES_H

#include "p11smime/result.h"

static const struct {
	p11s_rc rc;
	const char *name;
} p11i_rc_names[] = {
    {P11S_OK, "ok"},
    {P11S_E_USAGE, "usage"},
    {P11S_E_BAD_TIME, "bad-time"},
    {P11S_E_BAD_URI, "bad-uri"},
    {P11S_E_BAD_PIN_SOURCE, "bad-pin-source"},
    {P11S_E_MODULE, "module"},
    {P11S_E_TOKEN, "token"},
    {P11S_E_TOKEN_ABSENT, "token-absent"},
    {P11S_E_TOKEN_UNINITIALIZED, "token-uninitialized"},
    {P11S_E_MECHANISM, "mechanism"},
    {P11S_E_PIN_INCORRECT, "pin-incorrect"},
    {P11S_E_PIN_LOCKED, "pin-locked"},
    {P11S_E_PIN_FINAL_TRY, "pin-final-try"},
    {P11S_E_PIN_TO_BE_CHANGED, "pin-to-be-changed"},
    {P11S_E_PIN_UNAVAILABLE, "pin-unavailable"},
    {P11S_E_NOT_FOUND, "not-found"},
    {P11S_E_AMBIGUOUS, "ambiguous"},
    {P11S_E_NO_KEY, "no-key"},
    {P11S_E_NO_RECIPIENT, "no-recipient"},
    {P11S_E_REJECTED, "rejected"},
    {P11S_E_NOT_VALID_NOW, "not-valid-now"},
    {P11S_E_KEY_MISMATCH, "key-mismatch"},
    {P11S_E_BAD_SIGNATURE, "bad-signature"},
    {P11S_E_UNTRUSTED, "untrusted"},
    {P11S_E_SENDER_MISMATCH, "sender-mismatch"},
    {P11S_E_MISSING_RECIPIENT_CERT, "missing-recipient-certificate"},
    {P11S_E_CRYPTO, "crypto"},
    {P11S_E_DECRYPT, "decrypt"},
    {P11S_E_INPUT, "input"},
    {P11S_E_IO, "io"},
    {P11S_E_NOMEM, "out-of-memory"},
    {P11S_E_INTERNAL, "internal"},
};

static inline const char *p11i_rc_name(p11s_rc rc)
{
	for (size_t i = 0; i < sizeof(p11i_rc_names) / sizeof(p11i_rc_names[0]); i++)
		if (p11i_rc_names[i].rc == rc)
			return p11i_rc_names[i].name;
	return "unknown";
}

static inline int p11i_rc_exit_code(p11s_rc rc)
{
	switch ((p11s_class)((unsigned)rc >> 8)) {
	case P11S_CLASS_OK:
		return 0;
	case P11S_CLASS_VALIDATION:
		return 1;
	case P11S_CLASS_USAGE:
		return 2;
	case P11S_CLASS_TOKEN:
	case P11S_CLASS_PIN:
	case P11S_CLASS_SELECTION:
		return 3;
	case P11S_CLASS_CRYPTO:
	case P11S_CLASS_INPUT:
	case P11S_CLASS_INTERNAL:
	default:
		return 4;
	}
}

#endif
