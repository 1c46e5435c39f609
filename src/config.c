/*
 * The user's config file: defaults for the global options and for sign
 * and encrypt.  Strict on purpose: a typo in a hook's config must say
 * where it is, not silently sign with another key or a weaker cipher.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common.h"
#include "p11smime/config.h"
#include "p11smime/encrypt.h"
#include "p11smime/token.h"

static const char *const options[] = {"module", "pin-source", "signer", "cipher", "digest"};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

struct p11s_config {
	char *value[N_OPTIONS];
};

char *p11s_config_default_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");

	/* The XDG base directory spec: a relative path there is to be ignored. */
	if (xdg != NULL && xdg[0] == '/')
		return p11i_asprintf("%s/p11smime/config", xdg);
	if (home != NULL && home[0] != '\0')
		return p11i_asprintf("%s/.config/p11smime/config", home);
	return NULL;
}

void p11s_config_free(p11s_config *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < N_OPTIONS; i++)
		free(c->value[i]);
	free(c);
}

const char *p11s_config_get(const p11s_config *c, const char *option)
{
	for (size_t i = 0; c != NULL && i < N_OPTIONS; i++)
		if (strcmp(options[i], option) == 0)
			return c->value[i];
	return NULL;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

static p11s_rc check_value(const char *path, unsigned line, const char *opt, const char *value,
                           p11s_error *err)
{
	p11s_cipher cipher;

	if (strcmp(opt, "cipher") == 0 && p11s_cipher_from_name(value, &cipher, err) != P11S_OK)
		return p11i_err(err, P11S_E_USAGE,
		                "%s:%u: unknown cipher '%s' (use aes-256-gcm, aes-256-cbc or "
		                "aes-128-cbc)",
		                path, line, value);
	if (strcmp(opt, "digest") == 0 && strcmp(value, "sha256") != 0 &&
	    strcmp(value, "sha384") != 0 && strcmp(value, "sha512") != 0)
		return p11i_err(err, P11S_E_USAGE,
		                "%s:%u: unknown digest '%s' (use sha256, sha384 or sha512)", path,
		                line, value);
	/* The check's own message never repeats the spec: it may hold a secret. */
	if (strcmp(opt, "pin-source") == 0 && p11s_pin_source_check(value, err) != P11S_OK) {
		char *why = p11i_strdup(p11s_error_message(err));
		p11s_rc rc = p11i_err(err, P11S_E_USAGE, "%s:%u: %s", path, line,
		                      why ? why : "malformed pin-source");

		free(why);
		return rc;
	}
	return P11S_OK;
}

static p11s_rc parse_line(p11s_config *c, const char *path, unsigned line, char *text,
                          p11s_error *err)
{
	char *s = trim(text), *eq, *opt, *value;
	size_t i;

	if (*s == '\0' || *s == '#')
		return P11S_OK;
	eq = strchr(s, '=');
	if (eq == NULL)
		return p11i_err(err, P11S_E_USAGE, "%s:%u: expected 'option = value'", path, line);
	*eq = '\0';
	opt = trim(s);
	value = trim(eq + 1);
	for (i = 0; i < N_OPTIONS; i++)
		if (strcmp(options[i], opt) == 0)
			break;
	if (i == N_OPTIONS)
		return p11i_err(err, P11S_E_USAGE,
		                "%s:%u: unknown option '%s' (known: module, pin-source, signer, "
		                "cipher, digest)",
		                path, line, opt);
	if (*value == '\0')
		return p11i_err(err, P11S_E_USAGE, "%s:%u: '%s' has no value", path, line, opt);
	if (c->value[i] != NULL)
		return p11i_err(err, P11S_E_USAGE, "%s:%u: '%s' is set a second time", path, line,
		                opt);
	if (check_value(path, line, opt, value, err) != P11S_OK)
		return P11S_E_USAGE;
	c->value[i] = p11i_strdup(value);
	if (c->value[i] == NULL)
		return p11i_err_nomem(err);
	return P11S_OK;
}

p11s_rc p11s_config_load(const char *path, int missing_ok, p11s_config **out, p11s_error *err)
{
	p11s_config *c;
	FILE *fp;
	char buf[4096];
	unsigned line = 0;
	p11s_rc rc = P11S_OK;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return p11i_err_nomem(err);
	fp = fopen(path, "r");
	if (fp == NULL) {
		if (errno == ENOENT && missing_ok) {
			*out = c;
			return P11S_OK;
		}
		p11s_config_free(c);
		return p11i_err(err, P11S_E_IO, "cannot read the config file %s: %s", path,
		                strerror(errno));
	}
	while (rc == P11S_OK && fgets(buf, sizeof(buf), fp) != NULL) {
		line++;
		if (strchr(buf, '\n') == NULL && !feof(fp)) {
			rc = p11i_err(err, P11S_E_USAGE, "%s:%u: line too long", path, line);
			break;
		}
		rc = parse_line(c, path, line, buf, err);
	}
	if (rc == P11S_OK && ferror(fp))
		rc = p11i_err(err, P11S_E_IO, "cannot read the config file %s", path);
	fclose(fp);
	OPENSSL_cleanse(buf, sizeof(buf));
	if (rc != P11S_OK) {
		p11s_config_free(c);
		return rc;
	}
	*out = c;
	return P11S_OK;
}
