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

#ifdef __cplusplus
}
#endif
#endif
