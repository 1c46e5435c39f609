/*
 * Frames and string lists of the agent protocol (docs/agent.md).  Hostile
 * input: every length is checked against what remains before it is used,
 * every loop consumes at least one byte or ends.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "agent_proto.h"

uint32_t agent_frame_max(uint8_t type)
{
	switch (type) {
	case AGENT_HELLO:
	case AGENT_REQUEST:
		return AGENT_MSG_MAX;
	case AGENT_DATA:
		return AGENT_DATA_MAX;
	case AGENT_END:
		return 0;
	case AGENT_RESULT:
		return AGENT_RESULT_MAX;
	default:
		return 0;
	}
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

int agent_frame_header(const unsigned char hdr[AGENT_HDR_LEN], uint8_t *type, uint32_t *len)
{
	uint8_t t = hdr[0];
	uint32_t n = get32(hdr + 1);

	if (t != AGENT_HELLO && t != AGENT_REQUEST && t != AGENT_DATA && t != AGENT_END &&
	    t != AGENT_RESULT)
		return -1;
	if (n > agent_frame_max(t))
		return -1;
	*type = t;
	*len = n;
	return 0;
}

void agent_frame_header_put(unsigned char hdr[AGENT_HDR_LEN], uint8_t type, uint32_t len)
{
	hdr[0] = type;
	put32(hdr + 1, len);
}

void agent_strings_free(struct agent_strings *sl)
{
	if (sl == NULL)
		return;
	for (size_t i = 0; i < sl->n; i++)
		free(sl->s[i]);
	free(sl->s);
	sl->s = NULL;
	sl->n = 0;
}

int agent_strings_parse(const unsigned char *buf, size_t len, struct agent_strings *out)
{
	size_t off = 0;

	out->s = NULL;
	out->n = 0;
	while (off < len) {
		uint32_t n;
		char **grown;

		if (len - off < 4 || out->n >= AGENT_STRINGS_MAX)
			goto bad;
		n = get32(buf + off);
		off += 4;
		if (n > len - off || memchr(buf + off, '\0', n) != NULL)
			goto bad;
		grown = realloc(out->s, (out->n + 1) * sizeof(*out->s));
		if (grown == NULL)
			goto bad;
		out->s = grown;
		out->s[out->n] = malloc((size_t)n + 1);
		if (out->s[out->n] == NULL)
			goto bad;
		memcpy(out->s[out->n], buf + off, n);
		out->s[out->n][n] = '\0';
		out->n++;
		off += n;
	}
	return 0;
bad:
	agent_strings_free(out);
	return -1;
}

void agent_buf_str(struct agent_buf *b, const char *s)
{
	size_t n, need;

	if (s == NULL || b->oom)
		return;
	n = strlen(s);
	if (n > UINT32_MAX - 4) {
		b->oom = 1;
		return;
	}
	need = b->len + 4 + n;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		unsigned char *p;

		while (cap < need)
			cap *= 2;
		p = realloc(b->p, cap);
		if (p == NULL) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	put32(b->p + b->len, (uint32_t)n);
	memcpy(b->p + b->len + 4, s, n);
	b->len += 4 + n;
	b->n++;
}

void agent_buf_kv(struct agent_buf *b, const char *key, const char *value)
{
	if (value == NULL)
		return;
	agent_buf_str(b, key);
	agent_buf_str(b, value);
}

void agent_buf_free(struct agent_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* A flag's value: "0" or "1" only. */
static int flag(const char *v, int *out)
{
	if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
		return -1;
	*out = v[0] == '1';
	return 0;
}

/* A decimal number in [lo, hi], nothing else. */
static int number(const char *v, long long lo, long long hi, long long *out)
{
	char *end;
	long long x = 0;

	if (*v == '\0' || strlen(v) > 20)
		return -1;
	errno = 0;
	x = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0' || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

int agent_request_parse(const struct agent_strings *sl, struct agent_request *rq, const char **why)
{
	long long x = 0;

	memset(rq, 0, sizeof(*rq));
	if (sl->n < 2 || strcmp(sl->s[0], AGENT_PROTO_VERSION) != 0) {
		*why = "the client speaks another protocol version";
		return -1;
	}
	if (strcmp(sl->s[1], "sign") == 0) {
		rq->cmd = AGENT_CMD_SIGN;
	} else if (strcmp(sl->s[1], "decrypt") == 0) {
		rq->cmd = AGENT_CMD_DECRYPT;
	} else {
		*why = "unknown command";
		return -1;
	}
	if ((sl->n - 2) % 2 != 0) {
		*why = "an option without a value";
		return -1;
	}
	for (size_t i = 2; i + 1 < sl->n; i += 2) {
		const char *k = sl->s[i], *v = sl->s[i + 1];
		int bad = 0, sign = rq->cmd == AGENT_CMD_SIGN;

		if (strcmp(k, "json") == 0) {
			bad = flag(v, &rq->json);
		} else if (strcmp(k, "verbose") == 0) {
			bad = number(v, 0, 100, &x);
			rq->verbose = (int)x;
		} else if (strcmp(k, "at") == 0) {
			bad = number(v, 0, LLONG_MAX / 2, &rq->at);
		} else if (sign && strcmp(k, "signer") == 0) {
			rq->signer = v;
		} else if (sign && strcmp(k, "digest") == 0) {
			rq->digest = v;
		} else if (sign && strcmp(k, "chain") == 0) {
			bad = rq->chain_count >= AGENT_CHAIN_MAX || v[0] != '/';
			if (!bad)
				rq->chain[rq->chain_count++] = v;
		} else if (sign && strcmp(k, "pss") == 0) {
			bad = flag(v, &rq->pss);
		} else if (sign && strcmp(k, "opaque") == 0) {
			bad = flag(v, &rq->opaque);
		} else if (sign && strcmp(k, "detached") == 0) {
			bad = flag(v, &rq->detached);
		} else if (sign && strcmp(k, "form") == 0) {
			bad = number(v, 0, 2, &x);
			rq->form = (int)x;
		} else if (!sign && strcmp(k, "key") == 0) {
			rq->key = v;
		} else if (!sign && strcmp(k, "inform") == 0) {
			bad = number(v, 0, 2, &x);
			rq->inform = (int)x;
		} else if (!sign && strcmp(k, "keep-line-ends") == 0) {
			bad = flag(v, &rq->keep_line_ends);
		} else if (!sign && strcmp(k, "entity") == 0) {
			bad = flag(v, &rq->entity_only);
		} else if (!sign && strcmp(k, "discard") == 0) {
			bad = flag(v, &rq->discard);
		} else {
			*why = "unknown option";
			return -1;
		}
		if (bad) {
			*why = "a malformed option value";
			return -1;
		}
	}
	if (rq->cmd == AGENT_CMD_SIGN && rq->signer == NULL) {
		*why = "no signer";
		return -1;
	}
	return 0;
}

void agent_result_free(struct agent_result *res)
{
	free(res->candidates);
	free(res->verbose);
	free(res->notes);
	memset(res, 0, sizeof(*res));
}

int agent_result_parse(const struct agent_strings *sl, struct agent_result *res, const char **why)
{
	long long x = 0;
	int have_rc = 0;

	memset(res, 0, sizeof(*res));
	/* At most n/2 lines of each kind: one array each, sized once. */
	res->candidates = calloc(sl->n / 2 + 1, sizeof(size_t));
	res->verbose = calloc(sl->n / 2 + 1, sizeof(size_t));
	res->notes = calloc(sl->n / 2 + 1, sizeof(size_t));
	if (res->candidates == NULL || res->verbose == NULL || res->notes == NULL) {
		*why = "out of memory";
		goto bad;
	}
	if (sl->n % 2 != 0) {
		*why = "a field without a value";
		goto bad;
	}
	for (size_t i = 0; i + 1 < sl->n; i += 2) {
		const char *k = sl->s[i], *v = sl->s[i + 1];

		if (strcmp(k, "rc") == 0) {
			/* p11s_rc: a class byte and a code byte. */
			if (number(v, 0, 0xffff, &x) != 0) {
				*why = "a malformed result code";
				goto bad;
			}
			res->rc = (long)x;
			have_rc = 1;
		} else if (strcmp(k, "message") == 0) {
			res->message = v;
		} else if (strcmp(k, "json") == 0) {
			res->json = v;
		} else if (strcmp(k, "candidate") == 0) {
			res->candidates[res->n_candidates++] = i + 1;
		} else if (strcmp(k, "verbose") == 0) {
			res->verbose[res->n_verbose++] = i + 1;
		} else if (strcmp(k, "note") == 0) {
			res->notes[res->n_notes++] = i + 1;
		} else {
			*why = "an unknown result field";
			goto bad;
		}
	}
	if (!have_rc) {
		*why = "no result code";
		goto bad;
	}
	return 0;
bad:
	agent_result_free(res);
	return -1;
}

int agent_write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int agent_read_full(int fd, void *buf, size_t len)
{
	unsigned char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			return got == 0 ? 0 : -1;
		got += (size_t)n;
	}
	return 1;
}

int agent_send(int fd, uint8_t type, const void *buf, uint32_t len)
{
	unsigned char hdr[AGENT_HDR_LEN];
	/* Header and payload in one system call: a frame is a send, not two. */
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)(uintptr_t)buf, len}};
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len > 0 ? 2 : 1};

	agent_frame_header_put(hdr, type, len);
	while (mh.msg_iovlen > 0) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		/* Past the @p n bytes sent (n > 0: the loop advances; no iovec is empty). */
		while (n > 0) {
			size_t k =
			    (size_t)n < mh.msg_iov->iov_len ? (size_t)n : mh.msg_iov->iov_len;

			mh.msg_iov->iov_base = (unsigned char *)mh.msg_iov->iov_base + k;
			mh.msg_iov->iov_len -= k;
			n -= (ssize_t)k;
			if (mh.msg_iov->iov_len == 0) {
				mh.msg_iov++;
				mh.msg_iovlen--;
			}
		}
	}
	return 0;
}

int agent_recv(int fd, uint8_t *type, unsigned char **buf, size_t *cap, uint32_t *len)
{
	unsigned char hdr[AGENT_HDR_LEN];
	int r = agent_read_full(fd, hdr, sizeof(hdr));

	if (r <= 0)
		return r;
	if (agent_frame_header(hdr, type, len) != 0) {
		errno = EPROTO;
		return -1;
	}
	if (*len + (size_t)1 > *cap) {
		unsigned char *p = realloc(*buf, (size_t)*len + 1);

		if (p == NULL)
			return -1;
		*buf = p;
		*cap = (size_t)*len + 1;
	}
	if (*len > 0 && agent_read_full(fd, *buf, *len) != 1) {
		errno = errno ? errno : EPROTO;
		return -1;
	}
	return 1;
}
