/*
 * The milter's --signer-map: "address URI" and "@domain URI" lines.  Strict
 * like the config file: a typo must say where it is, never sign a
 * domain's mail with some other key.  The file is hostile input (bounded
 * size and line length, NUL bytes refused, every loop advances).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "mailbox.h"
#include "mime.h"
#include "p11smime/milter.h"

struct map_entry {
	char *key; /* "a@b" or "@b" */
	char *uri;
	unsigned line;
};

struct p11s_signer_map {
	struct map_entry *e;
	size_t n, cap;
};

void p11s_signer_map_free(p11s_signer_map *map)
{
	if (map == NULL)
		return;
	for (size_t i = 0; i < map->n; i++) {
		free(map->e[i].key);
		free(map->e[i].uri);
	}
	free(map->e);
	free(map);
}

static int blank(char c)
{
	return c == ' ' || c == '\t';
}

/* The next blank-separated field of [*p, end), or NULL; *p moves past it. */
static const char *field(const char **p, const char *end, size_t *len)
{
	const char *s = *p;

	while (s < end && blank(*s))
		s++;
	if (s == end)
		return NULL;
	*p = s;
	while (*p < end && !blank(**p))
		(*p)++;
	*len = (size_t)(*p - s);
	return s;
}

static p11s_rc add_line(p11s_signer_map *map, const char *origin, unsigned line, const char *s,
                        const char *end, p11s_error *err)
{
	const char *key, *uri, *p = s;
	size_t klen = 0, ulen = 0, extra;
	char why[128], probe[P11S_SIGNER_MAP_LINE_MAX + 2];
	struct map_entry *e;

	key = field(&p, end, &klen);
	if (key == NULL || *key == '#')
		return P11S_OK;
	uri = field(&p, end, &ulen);
	if (uri == NULL)
		return p11i_err(err, P11S_E_USAGE, "%s:%u: expected 'address-or-@domain URI'",
		                origin, line);
	if (field(&p, end, &extra) != NULL)
		return p11i_err(err, P11S_E_USAGE, "%s:%u: more than two fields", origin, line);
	if (key[0] == '@') {
		/* A domain is what a mailbox has after its "@". */
		snprintf(probe, sizeof(probe), "x%.*s", (int)klen, key);
		if (!p11i_mailbox_parse(probe, klen + 1, why, sizeof(why)))
			return p11i_err(err, P11S_E_USAGE,
			                "%s:%u: '%.*s' is not @ and a domain (%s)", origin, line,
			                (int)(klen > 80 ? 80 : klen), key, why);
	} else if (!p11i_mailbox_parse(key, klen, why, sizeof(why))) {
		return p11i_err(err, P11S_E_USAGE,
		                "%s:%u: '%.*s' is not an e-mail address or @domain (%s)", origin,
		                line, (int)(klen > 80 ? 80 : klen), key, why);
	}
	if (ulen < 7 || strncasecmp(uri, "pkcs11:", 7) != 0)
		return p11i_err(err, P11S_E_USAGE, "%s:%u: the signer must be a pkcs11: URI",
		                origin, line);
	for (size_t i = 0; i < map->n; i++)
		if (strlen(map->e[i].key) == klen && strncasecmp(map->e[i].key, key, klen) == 0)
			return p11i_err(err, P11S_E_USAGE,
			                "%s:%u: '%s' is mapped a second time (first on line %u)",
			                origin, line, map->e[i].key, map->e[i].line);
	if (map->n == P11S_SIGNER_MAP_ENTRIES_MAX)
		return p11i_err(err, P11S_E_USAGE, "%s:%u: more than %d mappings", origin, line,
		                P11S_SIGNER_MAP_ENTRIES_MAX);
	if (map->n == map->cap) {
		size_t cap = map->cap ? map->cap * 2 : 16;

		e = realloc(map->e, cap * sizeof(*e));
		if (e == NULL)
			return p11i_err_nomem(err);
		map->e = e;
		map->cap = cap;
	}
	e = &map->e[map->n];
	e->key = p11i_strndup(key, klen);
	e->uri = p11i_strndup(uri, ulen);
	e->line = line;
	if (e->key == NULL || e->uri == NULL) {
		free(e->key);
		free(e->uri);
		return p11i_err_nomem(err);
	}
	map->n++;
	return P11S_OK;
}

p11s_rc p11s_signer_map_parse(const char *origin, const char *text, size_t len,
                              p11s_signer_map **out, p11s_error *err)
{
	p11s_signer_map *map;
	const char *p = text, *end = text + len;
	unsigned line = 0;
	p11s_rc rc = P11S_OK;

	*out = NULL;
	if (len > P11S_SIGNER_MAP_MAX)
		return p11i_err(err, P11S_E_USAGE, "%s: larger than %d bytes", origin,
		                P11S_SIGNER_MAP_MAX);
	map = calloc(1, sizeof(*map));
	if (map == NULL)
		return p11i_err_nomem(err);
	while (rc == P11S_OK && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *stop = nl != NULL ? nl : end;
		size_t n = (size_t)(stop - p) + (nl != NULL);

		line++;
		if (n > P11S_SIGNER_MAP_LINE_MAX) {
			rc = p11i_err(err, P11S_E_USAGE, "%s:%u: line longer than %d bytes", origin,
			              line, P11S_SIGNER_MAP_LINE_MAX);
			break;
		}
		if (memchr(p, '\0', (size_t)(stop - p)) != NULL) {
			rc = p11i_err(err, P11S_E_USAGE, "%s:%u: a NUL byte", origin, line);
			break;
		}
		if (stop > p && stop[-1] == '\r')
			stop--;
		rc = add_line(map, origin, line, p, stop, err);
		p += n;
	}
	if (rc != P11S_OK) {
		p11s_signer_map_free(map);
		return rc;
	}
	*out = map;
	return P11S_OK;
}

p11s_rc p11s_signer_map_load(const char *path, p11s_signer_map **out, p11s_error *err)
{
	FILE *fp;
	char *buf;
	size_t len;
	p11s_rc rc;

	*out = NULL;
	fp = fopen(path, "rb");
	if (fp == NULL)
		return p11i_err(err, P11S_E_IO, "cannot read the signer map %s: %s", path,
		                strerror(errno));
	buf = malloc(P11S_SIGNER_MAP_MAX + 1);
	if (buf == NULL) {
		fclose(fp);
		return p11i_err_nomem(err);
	}
	len = fread(buf, 1, P11S_SIGNER_MAP_MAX + 1, fp);
	if (ferror(fp))
		rc = p11i_err(err, P11S_E_IO, "cannot read the signer map %s", path);
	else
		rc = p11s_signer_map_parse(path, buf, len, out, err);
	fclose(fp);
	free(buf);
	return rc;
}

size_t p11s_signer_map_count(const p11s_signer_map *map)
{
	return map != NULL ? map->n : 0;
}

const char *p11s_signer_map_entry(const p11s_signer_map *map, size_t i, const char **uri,
                                  unsigned *line)
{
	if (map == NULL || i >= map->n)
		return NULL;
	if (uri != NULL)
		*uri = map->e[i].uri;
	if (line != NULL)
		*line = map->e[i].line;
	return map->e[i].key;
}

long p11s_signer_map_find_address(const p11s_signer_map *map, const char *address)
{
	for (size_t i = 0; map != NULL && address != NULL && i < map->n; i++)
		if (map->e[i].key[0] != '@' && strcasecmp(map->e[i].key, address) == 0)
			return (long)i;
	return -1;
}

long p11s_signer_map_find_domain(const p11s_signer_map *map, const char *address)
{
	const char *at = address != NULL ? strrchr(address, '@') : NULL;

	for (size_t i = 0; map != NULL && at != NULL && i < map->n; i++)
		if (map->e[i].key[0] == '@' && strcasecmp(map->e[i].key, at) == 0)
			return (long)i;
	return -1;
}
