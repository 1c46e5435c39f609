/*
 * The agent's client, on libc alone: connect, greet, send the request and
 * the message, take the output through the all-or-nothing output core
 * (src/outcore.c) and the result, print what the command prints.  The thin
 * executable (src/front/thin.c) and the whole command line
 * (src/cli/agent_client.c, batches included) both go through it, so a
 * message through the agent gives the same bytes, words and exit code
 * whichever front end sent it.  One request per struct agent_conn;
 * requests on separate structs may run in separate threads at once (a
 * batch's workers do), each printing to its own errf/outf.
 */
#ifndef P11I_AGENT_CONN_H
#define P11I_AGENT_CONN_H

#include <stddef.h>
#include <stdio.h>

#include "agent_proto.h"

struct p11i_out;

struct agent_conn {
	const char *sock;    /* $P11SMIME_AGENT_SOCK */
	const char *module;  /* --module, or NULL: $P11SMIME_MODULE is compared instead */
	const char *command; /* "sign" or "decrypt": usage errors name it */
	const char *label;   /* a batch's file, put before every message; NULL for none */
	int json, verbose;
	/*
	 * A batch's report names its file: the agent's JSON report, rewritten
	 * (takes @p doc, returns a new one or NULL when out of memory).  NULL:
	 * printed as it came.
	 */
	char *(*relabel)(char *doc, const char *label, const char *out_path);
	/* Where messages and reports go: NULL for stderr and stdout. */
	FILE *errf, *outf;
	/*
	 * A batch commits its outputs in groups, with one sync each
	 * (p11i_out_sync_group()): when set, a file output that succeeded is
	 * prepared (p11i_out_prepare()) and left in *keep, not committed,
	 * and what is printed after a commit is printed at once: the batch
	 * commits it, and drops what was printed if that fails.
	 */
	struct p11i_out **keep;
	/*
	 * Keep the connection for the next request (a batch's worker): with
	 * @p reuse set, agent_conn_run() uses c->fd when it is open, and
	 * leaves it open after a complete exchange when the agent offers
	 * reuse; the caller closes it (agent_conn_close()).  Otherwise c->fd
	 * is the call's own.
	 */
	int reuse;
	/* Filled in by agent_conn_run(). */
	int fd;
	int can_reuse; /* the agent's greeting offered reuse */
	int clean;     /* the last exchange ended with its result: the connection is usable */
	unsigned char *buf;
	size_t cap;
};

/* $P11SMIME_AGENT_SOCK when set and not empty, else NULL. */
const char *agent_socket(void);

/* Append "key=value" with a number to a request. */
void agent_put_num(struct agent_buf *b, const char *key, long long v);

/*
 * One request: open the input (@p in_path, NULL or "-" standard input),
 * connect and greet, send @p req and the message, take the output into
 * @p out_path (NULL or "-" standard output; @p out_flags as
 * p11i_out_open(); nothing at all when @p discard) and the result; then,
 * as the command does without the agent: commit, notes, the JSON report
 * when c->json, or the agent's error.  Returns the command's exit code;
 * everything it says is printed.
 */
int agent_conn_run(struct agent_conn *c, const struct agent_buf *req, const char *in_path,
                   const char *out_path, unsigned out_flags, int discard);
/* Close a connection kept for reuse; -1 is fine. */
void agent_conn_close(int fd);

/*
 * Control characters (C0, DEL, C1) of a name shown in a message become
 * \xNN: a file name must not move the cursor or forge a line.  The result
 * is one of six rotating buffers per thread.
 */
const char *cli_safe(const char *s);

/*
 * @p s written to @p fp as cli_safe() shows it, whole: for a library's
 * messages, which may quote a token's words and have no length bound.
 */
void cli_puts_safe(FILE *fp, const char *s);

/* "p11smime: COMMAND: MESSAGE", the pointer to --help; returns 2. */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
