#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "common.h"
#include "rc_names.h"

struct p11s_error {
	p11s_rc rc;
	char *message;
	P11I_VEC(char *) candidates;
};

p11s_class p11s_rc_class(p11s_rc rc)
{
	return (p11s_class)((unsigned)rc >> 8);
}

const char *p11s_rc_name(p11s_rc rc)
{
	return p11i_rc_name(rc);
}

int p11s_rc_exit_code(p11s_rc rc)
{
	return p11i_rc_exit_code(rc);
}

p11s_error *p11s_error_new(void)
{
	return calloc(1, sizeof(p11s_error));
}

void p11s_error_clear(p11s_error *err)
{
	if (err == NULL)
		return;
	free(err->message);
	for (size_t i = 0; i < err->candidates.n; i++)
		free(err->candidates.v[i]);
	free(err->candidates.v);
	memset(err, 0, sizeof(*err));
}

void p11s_error_free(p11s_error *err)
{
	p11s_error_clear(err);
	free(err);
}

p11s_rc p11s_error_rc(const p11s_error *err)
{
	return err ? err->rc : P11S_OK;
}

const char *p11s_error_message(const p11s_error *err)
{
	return err && err->message ? err->message : "";
}

size_t p11s_error_candidate_count(const p11s_error *err)
{
	return err ? err->candidates.n : 0;
}

const char *p11s_error_candidate(const p11s_error *err, size_t i)
{
	return err && i < err->candidates.n ? err->candidates.v[i] : NULL;
}

static void set_message(p11s_error *err, p11s_rc rc, char *msg)
{
	free(err->message);
	err->message = msg;
	err->rc = rc;
}

p11s_rc p11i_err(p11s_error *err, p11s_rc rc, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	if (err == NULL)
		return rc;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	set_message(err, rc, msg);
	return rc;
}

p11s_rc p11i_err_nomem(p11s_error *err)
{
	return p11i_err(err, P11S_E_NOMEM, "out of memory");
}

/*
 * OpenSSL's reason for the last error queued, in words ("unsupported"),
 * or "" when it adds nothing a person can act on: none, a system error
 * (the caller says it with strerror), or words @p msg already has.  Never
 * the "error:1E08010C:..." code: that is for a debugger, not a person.
 */
void p11i_ossl_reason(unsigned long e, const char *msg, char *buf, size_t len)
{
	const char *r;

	buf[0] = '\0';
	if (e == 0 || ERR_SYSTEM_ERROR(e) || ERR_GET_LIB(e) == ERR_LIB_SYS)
		return;
	r = ERR_reason_error_string(e);
	if (r == NULL || *r == '\0' || (msg != NULL && strcasestr(msg, r) != NULL))
		return;
	snprintf(buf, len, "%s", r);
}

/*
 * A token's refusal (pkcs11/key.c queues "token: C_Sign failed:
 * CKR_DEVICE_REMOVED (0x32)" under OpenSSL's generic errors) says more
 * than OpenSSL's reason ("operation fail"): a pulled token, a closed
 * session.  It replaces the reason when the queue holds one.
 */
static void token_reason(char *reason, size_t len, p11s_rc *rc)
{
	const char *data;
	unsigned long e;
	int flags;

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		if (ERR_GET_LIB(e) != ERR_LIB_USER || !(flags & ERR_TXT_STRING) || data == NULL)
			continue;
		if (ERR_GET_REASON(e) > P11I_ERR_R_RC) {
			/* A p11s_rc raised under OpenSSL (see P11I_ERR_R_RC) wins, however deep. */
			*rc = (p11s_rc)(ERR_GET_REASON(e) - P11I_ERR_R_RC);
			snprintf(reason, len, "%s", data);
		} else if (strncmp(data, "token: ", 7) == 0) {
			snprintf(reason, len, "%s", data);
		}
	}
}

p11s_rc p11i_err_ossl(p11s_error *err, p11s_rc rc, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL, *full = NULL;
	char reason[256] = "";
	unsigned long e;

	/* The last error queued is the most specific one. */
	e = ERR_peek_last_error();
	if (err == NULL) {
		ERR_clear_error();
		return rc;
	}
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	p11i_ossl_reason(e, msg, reason, sizeof(reason));
	token_reason(reason, sizeof(reason), &rc);
	ERR_clear_error();
	if (msg != NULL && reason[0] != '\0') {
		if (asprintf(&full, "%s (%s)", msg, reason) < 0)
			full = NULL;
		if (full != NULL) {
			free(msg);
			msg = full;
		}
	}
	set_message(err, rc, msg);
	return rc;
}

void p11i_err_add_candidate(p11s_error *err, const char *candidate)
{
	char *copy;

	if (err == NULL || candidate == NULL)
		return;
	copy = strdup(candidate);
	if (copy != NULL && p11i_vec_push(&err->candidates, copy) != 0)
		free(copy);
}
