/*
 * Private helpers shared by src/ and pkcs11/.  Not installed.
 */
#ifndef P11S_COMMON_H
#define P11S_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "p11smime/result.h"

#if defined(__GNUC__)
#define P11S_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define P11S_PRINTF(f, a)
#endif

/*
 * Record @p rc with a printf-style message in @p err (which may be NULL)
 * and return @p rc, so that callers can write `return p11s_err(...)`.
 * An error already recorded is replaced.
 */
p11s_rc p11s_err(p11s_error *err, p11s_rc rc, const char *fmt, ...) P11S_PRINTF(3, 4);

/*
 * As p11s_err(), and append the reason at the top of OpenSSL's error
 * queue ("...: error:1E08010C:DECODER routines::unsupported"), then clear
 * the queue so the next error does not inherit stale reasons.
 */
p11s_rc p11s_err_ossl(p11s_error *err, p11s_rc rc, const char *fmt, ...) P11S_PRINTF(3, 4);

/* Add a candidate to an ambiguous or failed selection. */
void p11s_err_add_candidate(p11s_error *err, const char *candidate);

/* Hex of @p len bytes, lower case, malloc'd; NULL on ENOMEM. */
char *p11s_hex(const unsigned char *buf, size_t len);

/* Fatal on allocation failure is not our style: these return NULL. */
char *p11s_strdup(const char *s);
char *p11s_strndup(const char *s, size_t n);
char *p11s_asprintf(const char *fmt, ...) P11S_PRINTF(1, 2);

#endif
