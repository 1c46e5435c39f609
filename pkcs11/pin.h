/*
 * PIN sources (private to pkcs11/, unit-tested in tests/unit/test_pin.c).
 */
#ifndef P11S_PIN_H
#define P11S_PIN_H

#include <stddef.h>

#include "p11smime/result.h"

/* The longest PIN we read; PKCS#11 modules take far shorter ones. */
#define P11S_PIN_MAX 256

/*
 * Check @p spec: "file:PATH" (also "file:///PATH"), "fd:N", "env:VAR".
 * P11S_E_BAD_PIN_SOURCE with the reason otherwise.
 */
p11s_rc p11s_pin_spec_check(const char *spec, p11s_error *err);

/*
 * Read the PIN @p spec names into @p buf (@p len bytes, NUL included):
 * the first line of the file or descriptor (a trailing "\n" or "\r\n"
 * dropped) or the variable's value.  P11S_E_PIN_UNAVAILABLE when it cannot
 * be read, is empty or too long; @p buf is wiped on failure.
 */
p11s_rc p11s_pin_read(const char *spec, char *buf, size_t len, p11s_error *err);

#endif
