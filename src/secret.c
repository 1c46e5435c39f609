/*
 * Secrets named on the command line: "file:PATH", "fd:N", "env:VAR".  One
 * reader for token PINs (--pin-source, the URI's pin-source) and file
 * passwords (--p12-pass-source); the kind only changes the words and the
 * error codes.  The secret itself never appears in a message.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common.h"
#include "p11smime/io.h"

static const char *noun(p11s_secret_kind kind)
{
	return kind == P11S_SECRET_PIN ? "PIN" : "password";
}

/* A PIN that cannot be had is a token-class problem; a password one is about the input. */
static p11s_rc unreadable_rc(p11s_secret_kind kind)
{
	return kind == P11S_SECRET_PIN ? P11S_E_PIN_UNAVAILABLE : P11S_E_IO;
}

static p11s_rc too_long_rc(p11s_secret_kind kind)
{
	return kind == P11S_SECRET_PIN ? P11S_E_PIN_UNAVAILABLE : P11S_E_INPUT;
}

/* "file:///abs" (RFC 8089) and "file:PATH" both name PATH. */
static const char *file_path(const char *spec)
{
	const char *p = spec + 5;

	/* Keeps the leading '/' of "file:///abs"; "file://host/" is refused by the check. */
	if (strncmp(p, "//", 2) == 0)
		p += 2;
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

static int env_name_ok(const char *v)
{
	if (*v == '\0' || isdigit((unsigned char)*v))
		return 0;
	for (; *v; v++)
		if (!isalnum((unsigned char)*v) && *v != '_')
			return 0;
	return 1;
}

p11s_rc p11s_secret_source_check(const char *spec, p11s_secret_kind kind, p11s_error *err)
{
	int fd;

	if (spec == NULL || *spec == '\0')
		return p11i_err(err, P11S_E_BAD_PIN_SOURCE, "empty %s source", noun(kind));
	if (strncmp(spec, "file:", 5) == 0) {
		const char *p = file_path(spec);

		if (*p == '\0' || (strncmp(spec + 5, "//", 2) == 0 && *p != '/'))
			return p11i_err(err, P11S_E_BAD_PIN_SOURCE,
			                "%s source '%s': file: needs a local path (file:PATH)",
			                noun(kind), spec);
		return P11S_OK;
	}
	if (strncmp(spec, "fd:", 3) == 0) {
		if (!parse_fd(spec + 3, &fd))
			return p11i_err(err, P11S_E_BAD_PIN_SOURCE,
			                "%s source '%s': fd: needs a descriptor number (fd:3)",
			                noun(kind), spec);
		return P11S_OK;
	}
	if (strncmp(spec, "env:", 4) == 0) {
		if (!env_name_ok(spec + 4))
			return p11i_err(err, P11S_E_BAD_PIN_SOURCE,
			                "%s source '%s': env: needs a variable name (env:MY_%s)",
			                noun(kind), spec,
			                kind == P11S_SECRET_PIN ? "PIN" : "PASSWORD");
		return P11S_OK;
	}
	/*
	 * Not echoed: what was given may well be the secret itself, typed
	 * where its source belongs, and error messages end up in logs.
	 */
	return p11i_err(err, P11S_E_BAD_PIN_SOURCE,
	                "the %s source is not one of file:PATH, fd:N or env:VAR (it is not "
	                "repeated here, in case it is the %s itself)",
	                noun(kind), noun(kind));
}

/* The first line of @p fd, a byte at a time so that nothing after it is consumed. */
static p11s_rc read_line(int fd, const char *spec, p11s_secret_kind kind, char *buf, size_t len,
                         p11s_error *err)
{
	size_t n = 0;
	ssize_t r;
	char c;

	for (;;) {
		r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return p11i_err(err, unreadable_rc(kind), "cannot read the %s from %s: %s",
			                noun(kind), spec, strerror(errno));
		if (r == 0 || c == '\n')
			break;
		if (n + 1 >= len) {
			OPENSSL_cleanse(&c, 1);
			return p11i_err(err, too_long_rc(kind), "the %s from %s is too long",
			                noun(kind), spec);
		}
		buf[n++] = c;
	}
	OPENSSL_cleanse(&c, 1);
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return P11S_OK;
}

static p11s_rc read_secret(const char *spec, p11s_secret_kind kind, char *buf, size_t len,
                           p11s_error *err)
{
	p11s_rc rc = P11S_OK;
	int fd = -1;

	buf[0] = '\0';
	if (strncmp(spec, "file:", 5) == 0) {
		const char *path = file_path(spec);

		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return p11i_err(err, unreadable_rc(kind), "cannot open %s file %s: %s",
			                noun(kind), path, strerror(errno));
		rc = read_line(fd, spec, kind, buf, len, err);
		close(fd);
	} else if (strncmp(spec, "fd:", 3) == 0) {
		if (!parse_fd(spec + 3, &fd))
			return p11i_err(err, P11S_E_BAD_PIN_SOURCE, "bad descriptor in %s", spec);
		rc = read_line(fd, spec, kind, buf, len, err);
	} else {
		const char *v = getenv(spec + 4);
		size_t n;

		if (v == NULL)
			return p11i_err(err, unreadable_rc(kind),
			                "%s source %s: the variable is not set", noun(kind), spec);
		n = strcspn(v, "\r\n");
		if (n + 1 > len)
			rc = p11i_err(err, too_long_rc(kind), "the %s from %s is too long",
			              noun(kind), spec);
		else
			memcpy(buf, v, n);
		buf[rc == P11S_OK ? n : 0] = '\0';
		/*
		 * Read once, then gone: children (a pinentry, a hook) do not inherit
		 * it, and the bytes in the initial environment block, which
		 * /proc/PID/environ shows, are wiped too.
		 */
		OPENSSL_cleanse((char *)v, strlen(v));
		unsetenv(spec + 4);
	}
	/* An empty password is a real one (PKCS#12 files often have it); an empty PIN is not. */
	if (rc == P11S_OK && buf[0] == '\0' && kind == P11S_SECRET_PIN)
		rc =
		    p11i_err(err, P11S_E_PIN_UNAVAILABLE, "PIN source %s gives an empty PIN", spec);
	return rc;
}

p11s_rc p11s_secret_read(const char *spec, p11s_secret_kind kind, char *buf, size_t len,
                         p11s_error *err)
{
	p11s_rc rc = p11s_secret_source_check(spec, kind, err);

	if (rc != P11S_OK)
		return rc;
	if (buf == NULL || len == 0)
		return p11i_err(err, P11S_E_INTERNAL, "no room for a %s", noun(kind));
	rc = read_secret(spec, kind, buf, len, err);
	if (rc != P11S_OK)
		OPENSSL_cleanse(buf, len);
	return rc;
}

/*
 * While a secret is held the process is not dumpable: no core file, and
 * no ptrace or /proc/PID/mem by other processes of the same user.  Nested
 * holds count; the last release restores what was there before.
 */
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER; /* threads log in at once */
static unsigned hold_count;
static int dumpable_before = -1;

void p11i_secret_hold(void)
{
	pthread_mutex_lock(&hold_lock);
	if (hold_count++ == 0) {
		dumpable_before = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
		(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	}
	pthread_mutex_unlock(&hold_lock);
}

void p11i_secret_release(void)
{
	pthread_mutex_lock(&hold_lock);
	if (hold_count > 0 && --hold_count == 0) {
		if (dumpable_before > 0)
			(void)prctl(PR_SET_DUMPABLE, dumpable_before, 0, 0, 0);
		dumpable_before = -1;
	}
	pthread_mutex_unlock(&hold_lock);
}

/* The mapping behind a locked string: its size, then the string. */
struct locked {
	size_t size;
	char s[];
};

char *p11i_locked_strdup(const char *s)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = strlen(s) + 1;
	size_t size = (sizeof(struct locked) + n + page - 1) / page * page;
	struct locked *l;

	l = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (l == MAP_FAILED)
		return NULL;
	/*
	 * Best effort: a small RLIMIT_MEMLOCK makes mlock fail, and the PIN is
	 * still better kept than asked for twice; the hold below still keeps
	 * it out of core files.
	 */
	(void)mlock(l, size);
#ifdef MADV_DONTDUMP
	(void)madvise(l, size, MADV_DONTDUMP);
#endif
	p11i_secret_hold();
	l->size = size;
	memcpy(l->s, s, n);
	return l->s;
}

void p11i_locked_free(char *s)
{
	struct locked *l;
	size_t size;

	if (s == NULL)
		return;
	l = (struct locked *)(s - offsetof(struct locked, s));
	size = l->size;
	OPENSSL_cleanse(l, size);
	(void)munlock(l, size);
	(void)munmap(l, size);
	p11i_secret_release();
}

void p11i_wipe_free(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}
