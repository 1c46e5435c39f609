/*
 * The wire format between `p11smime agent` and its clients (docs/agent.md).
 *
 * A stream of frames: one type byte, a 4-byte big-endian length, then that
 * many bytes.  Every type has its own bound; a frame over it, or of a type
 * not expected, ends the connection.  Requests and results are lists of
 * strings (each a 4-byte big-endian length and the bytes, no NUL), read
 * as key/value pairs.  Nothing here trusts its input: this is the code the
 * fuzz target tests/fuzz/fuzz_agent.c runs.
 */
#ifndef P11I_AGENT_PROTO_H
#define P11I_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* The version both sides speak; a HELLO or request of another is refused. */
#define AGENT_PROTO_VERSION "1"

enum agent_frame_type {
	AGENT_HELLO = 'H',   /* agent -> client, first: version, the agent's module */
	AGENT_REQUEST = 'Q', /* client -> agent: version, command, options */
	AGENT_DATA = 'D',    /* either way: a piece of the message or of the result */
	AGENT_END = 'E',     /* client -> agent: the message is complete */
	AGENT_RESULT = 'R',  /* agent -> client, last: the outcome and the report */
};

/*
 * The greeting's third string, when the agent takes more than one request
 * on a connection (a batch's worker sends its files one after another on
 * one); a client that does not see it closes after its result.
 */
#define AGENT_HELLO_REUSE "reuse"

#define AGENT_HDR_LEN     5
#define AGENT_DATA_MAX    (64u * 1024)   /* D frames; the client sends this much at most */
#define AGENT_MSG_MAX     (64u * 1024)   /* Q and H frames */
#define AGENT_RESULT_MAX  (1024u * 1024) /* R frames: the reports are JSON documents */
#define AGENT_STRINGS_MAX 256            /* strings in one Q, H or R frame */

/* The bound of frames of @p type; 0 for a type that does not exist. */
uint32_t agent_frame_max(uint8_t type);

/*
 * Check a frame header: 0 with *type and *len set, or -1 for an unknown
 * type or a length over that type's bound.
 */
int agent_frame_header(const unsigned char hdr[AGENT_HDR_LEN], uint8_t *type, uint32_t *len);

/* Fill @p hdr for a frame of @p type and @p len bytes. */
void agent_frame_header_put(unsigned char hdr[AGENT_HDR_LEN], uint8_t type, uint32_t len);

/* A decoded string list: NUL-terminated copies. */
struct agent_strings {
	char **s;
	size_t n;
};

/*
 * Split @p buf into strings.  -1 (and nothing allocated) when a length runs
 * past the end, a string holds a NUL, or there are more than
 * AGENT_STRINGS_MAX.
 */
int agent_strings_parse(const unsigned char *buf, size_t len, struct agent_strings *out);
void agent_strings_free(struct agent_strings *sl);

/* A growing string list being encoded. */
struct agent_buf {
	unsigned char *p;
	size_t len, cap;
	int oom;  /* an append failed: the buffer is unusable */
	size_t n; /* strings so far */
};

/* Append @p s (may be NULL: then nothing).  Errors stick in b->oom. */
void agent_buf_str(struct agent_buf *b, const char *s);
/* Append "key" and "value". */
void agent_buf_kv(struct agent_buf *b, const char *key, const char *value);
void agent_buf_free(struct agent_buf *b);

/* What a client asks for. */
enum agent_cmd { AGENT_CMD_SIGN = 1, AGENT_CMD_DECRYPT = 2 };

#define AGENT_CHAIN_MAX 32

struct agent_request {
	enum agent_cmd cmd;
	int json, verbose;
	/* sign */
	const char *signer, *digest;
	const char *chain[AGENT_CHAIN_MAX];
	size_t chain_count;
	int pss, opaque, detached;
	int form; /* p11s_outform */
	/* decrypt */
	const char *key;
	int inform; /* p11s_decrypt_inform */
	int keep_line_ends, entity_only, discard;
	/* both */
	long long at;
};

/*
 * Read a request from @p sl (version, command, key/value pairs); the
 * strings it points to stay owned by @p sl.  -1 with a reason in @p why
 * (a static string) for anything malformed: another version, an unknown
 * command or key, a bad number, a key without a value.
 */
int agent_request_parse(const struct agent_strings *sl, struct agent_request *rq, const char **why);

/* The outcome a client receives. */
struct agent_result {
	long rc; /* p11s_rc */
	const char *message;
	const char *json;
	/* Indexes into the string list of each kind of line, in order. */
	size_t *candidates, *verbose, *notes;
	size_t n_candidates, n_verbose, n_notes;
};

/* As agent_request_parse() for an R frame; free with agent_result_free(). */
int agent_result_parse(const struct agent_strings *sl, struct agent_result *res, const char **why);
void agent_result_free(struct agent_result *res);

/* Write all of @p buf to @p fd (no SIGPIPE); 0 or -1 with errno. */
int agent_write_all(int fd, const void *buf, size_t len);
/* Read exactly @p len bytes; 1 done, 0 end of stream before any byte, -1 error or short. */
int agent_read_full(int fd, void *buf, size_t len);
/* Send one frame; 0 or -1. */
int agent_send(int fd, uint8_t type, const void *buf, uint32_t len);
/*
 * Receive one frame into *buf (grown as needed, caller frees); 1 with
 * *type and *len, 0 at the end of the stream, -1 on an error or a frame
 * that breaks the bounds.
 */
int agent_recv(int fd, uint8_t *type, unsigned char **buf, size_t *cap, uint32_t *len);

#endif
