/*
 * p11smime: small public helpers.
 */
#ifndef P11SMIME_UTIL_H
#define P11SMIME_UTIL_H

#include <time.h>

#include "p11smime/result.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Parse an RFC 3339 time ("2026-11-28T00:00:00Z", "...T01:00:00+01:00",
 * fractions of a second ignored) or a bare date ("2026-11-28", midnight
 * UTC) into seconds since the epoch.  P11S_E_BAD_TIME otherwise.
 */
p11s_rc p11s_time_parse(const char *text, time_t *out, p11s_error *err);

/**
 * Format @p t as RFC 3339 in UTC ("2026-11-28T00:00:00Z") into @p buf,
 * which must hold at least 21 bytes.  Returns @p buf.
 */
char *p11s_time_format(time_t t, char *buf, size_t len);

/** What p11s_secret_read() reads; it picks the words of messages and the error codes. */
typedef enum p11s_secret_kind {
	/** A token PIN: must not be empty; unreadable, empty or too long: P11S_E_PIN_UNAVAILABLE.
	 */
	P11S_SECRET_PIN,
	/** A file's password (PKCS#12): may be empty; unreadable: P11S_E_IO, too long:
	   P11S_E_INPUT. */
	P11S_SECRET_PASSWORD,
} p11s_secret_kind;

/**
 * Check the form of the secret source @p spec: "file:PATH" (also
 * "file:///PATH"), "fd:N" or "env:VAR" (the --pin-source forms).
 * P11S_E_BAD_PIN_SOURCE, with the reason, otherwise.
 */
p11s_rc p11s_secret_source_check(const char *spec, p11s_secret_kind kind, p11s_error *err);

/**
 * Read the secret @p spec names into @p buf (@p len bytes, NUL included):
 * the first line of the file or descriptor (a trailing "\n" or "\r\n"
 * dropped; nothing after the line is consumed from a descriptor) or the
 * variable's value up to its first line break.  A malformed @p spec is
 * P11S_E_BAD_PIN_SOURCE; for the other errors see p11s_secret_kind.
 * @p buf is wiped on failure; on success the caller wipes it with
 * OPENSSL_cleanse() when done.
 */
p11s_rc p11s_secret_read(const char *spec, p11s_secret_kind kind, char *buf, size_t len,
                         p11s_error *err);

#ifdef __cplusplus
}
#endif
#endif
