#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common.h"
#include "pin.h"
#include "p11.h"

/* "file:///abs" (RFC 8089) and "file:PATH" both name PATH. */
static const char *file_path(const char *spec)
{
	const char *p = spec + 5;

	if (strncmp(p, "//", 2) == 0)
		p +=
		    2; /* keeps the leading '/' of "file:///abs"; "file://host/" is refused below */
	return p;
}

static int parse_fd(const char *s, int *fd)
{
	char *end;
	long v;

	if (!isdigit((unsigned char)*s))
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > INT_MAX)
		return 0;
	*fd = (int)v;
	return 1;
}

p11s_rc p11s_pin_spec_check(const char *spec, p11s_error *err)
{
	int fd;

	if (spec == NULL || *spec == '\0')
		return p11s_err(err, P11S_E_BAD_PIN_SOURCE, "empty PIN source");
	if (strncmp(spec, "file:", 5) == 0) {
		const char *p = file_path(spec);

		if (*p == '\0' || (strncmp(spec + 5, "//", 2) == 0 && *p != '/'))
			return p11s_err(err, P11S_E_BAD_PIN_SOURCE,
			                "PIN source '%s': file: needs a local path (file:PATH)",
			                spec);
		return P11S_OK;
	}
	if (strncmp(spec, "fd:", 3) == 0) {
		if (!parse_fd(spec + 3, &fd))
			return p11s_err(err, P11S_E_BAD_PIN_SOURCE,
			                "PIN source '%s': fd: needs a descriptor number (fd:3)",
			                spec);
		return P11S_OK;
	}
	if (strncmp(spec, "env:", 4) == 0) {
		const char *v = spec + 4;

		if (*v == '\0' || isdigit((unsigned char)*v))
			goto badenv;
		for (; *v; v++)
			if (!isalnum((unsigned char)*v) && *v != '_')
				goto badenv;
		return P11S_OK;
	badenv:
		return p11s_err(err, P11S_E_BAD_PIN_SOURCE,
		                "PIN source '%s': env: needs a variable name (env:MY_PIN)", spec);
	}
	return p11s_err(err, P11S_E_BAD_PIN_SOURCE,
	                "unknown PIN source '%s' (use file:PATH, fd:N or env:VAR)", spec);
}

/* The first line of @p fd, a byte at a time so that nothing after it is consumed. */
static p11s_rc read_line(int fd, const char *spec, char *buf, size_t len, p11s_error *err)
{
	size_t n = 0;
	ssize_t r;
	char c;

	for (;;) {
		r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return p11s_err(err, P11S_E_PIN_UNAVAILABLE,
			                "cannot read the PIN from %s: %s", spec, strerror(errno));
		if (r == 0 || c == '\n')
			break;
		if (n + 1 >= len) {
			OPENSSL_cleanse(&c, 1);
			return p11s_err(err, P11S_E_PIN_UNAVAILABLE, "the PIN from %s is too long",
			                spec);
		}
		buf[n++] = c;
	}
	OPENSSL_cleanse(&c, 1);
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return P11S_OK;
}

static p11s_rc read_pin(const char *spec, char *buf, size_t len, p11s_error *err)
{
	p11s_rc rc = P11S_OK;
	int fd;

	buf[0] = '\0';
	if (strncmp(spec, "file:", 5) == 0) {
		const char *path = file_path(spec);

		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return p11s_err(err, P11S_E_PIN_UNAVAILABLE, "cannot open PIN file %s: %s",
			                path, strerror(errno));
		rc = read_line(fd, spec, buf, len, err);
		close(fd);
	} else if (strncmp(spec, "fd:", 3) == 0) {
		parse_fd(spec + 3, &fd);
		rc = read_line(fd, spec, buf, len, err);
	} else {
		const char *v = getenv(spec + 4);
		size_t n;

		if (v == NULL)
			return p11s_err(err, P11S_E_PIN_UNAVAILABLE,
			                "PIN source %s: the variable is not set", spec);
		n = strcspn(v, "\r\n");
		if (n + 1 > len)
			return p11s_err(err, P11S_E_PIN_UNAVAILABLE, "the PIN from %s is too long",
			                spec);
		memcpy(buf, v, n);
		buf[n] = '\0';
	}
	if (rc == P11S_OK && buf[0] == '\0')
		rc =
		    p11s_err(err, P11S_E_PIN_UNAVAILABLE, "PIN source %s gives an empty PIN", spec);
	return rc;
}

p11s_rc p11s_pin_read(const char *spec, char *buf, size_t len, p11s_error *err)
{
	p11s_rc rc = p11s_pin_spec_check(spec, err);

	if (rc != P11S_OK)
		return rc;
	if (len == 0)
		return p11s_err(err, P11S_E_INTERNAL, "no room for a PIN");
	rc = read_pin(spec, buf, len, err);
	if (rc != P11S_OK)
		OPENSSL_cleanse(buf, len);
	return rc;
}

p11s_rc p11s_pin_source_check(const char *spec, p11s_error *err)
{
	return p11s_pin_spec_check(spec, err);
}

p11s_rc p11s_ctx_set_pin_source(p11s_ctx *ctx, const char *spec, p11s_error *err)
{
	p11s_rc rc;
	char *copy = NULL;

	if (spec != NULL) {
		rc = p11s_pin_spec_check(spec, err);
		if (rc != P11S_OK)
			return rc;
		copy = strdup(spec);
		if (copy == NULL)
			return p11s_err(err, P11S_E_NOMEM, "out of memory");
	}
	free(ctx->pin_source);
	ctx->pin_source = copy;
	if (ctx->source_pin != NULL) {
		OPENSSL_cleanse(ctx->source_pin, strlen(ctx->source_pin));
		free(ctx->source_pin);
		ctx->source_pin = NULL;
	}
	return P11S_OK;
}
