/*
 * The agent's client, on libc alone (agent_conn.h).  Its messages are the
 * command's own words without the agent (the library's for the input and
 * the output, the command line's for usage errors): tests/integration/
 * test_thin.sh and test_agent.sh compare them.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent_conn.h"
#include "outcore.h"
#include "rc_names.h"

const char *agent_socket(void)
{
	const char *s = getenv("P11SMIME_AGENT_SOCK");

	return s != NULL && *s != '\0' ? s : NULL;
}

/*
 * One character of @p p shown safely: a control character (C0, DEL, or C1
 * in UTF-8, two bytes) as \xNN into @p out, anything else as itself.  The
 * bytes of @p p it stands for (1 or 2; never past the NUL).
 */
static size_t safe_char(const unsigned char *p, char out[5])
{
	int c1 = p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f;

	if (*p < 0x20 || *p == 0x7f || c1) {
		snprintf(out, 5, "\\x%02x", p[c1]);
		return 1 + (size_t)c1;
	}
	out[0] = (char)*p;
	out[1] = '\0';
	return 1;
}

const char *cli_safe(const char *s)
{
	/* Per thread: a batch's workers print at once. */
	static _Thread_local char bufs[6][1024];
	static _Thread_local unsigned next;
	char *out = bufs[next++ % 6];
	size_t o = 0;
	char c[5];

	if (s == NULL)
		return "";
	for (const unsigned char *p = (const unsigned char *)s; *p && o + 5 < sizeof(bufs[0]);) {
		p += safe_char(p, c);
		o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "%s", c);
	}
	out[o] = '\0';
	return out;
}

void cli_puts_safe(FILE *fp, const char *s)
{
	char c[5];

	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
		p += safe_char(p, c);
		fputs(c, fp);
	}
}

static int __attribute__((format(printf, 3, 0)))
vusage(FILE *fp, const char *command, const char *fmt, va_list ap)
{
	fprintf(fp, "p11smime: %s: ", command);
	vfprintf(fp, fmt, ap);
	fprintf(fp, "\nTry 'p11smime %s --help'.\n", command);
	return 2;
}

int cli_usage_error(const char *command, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vusage(stderr, command, fmt, ap);
	va_end(ap);
	return r;
}

/* cli_usage_error() to where this request's messages go. */
static int __attribute__((format(printf, 2, 3)))
usage(const struct agent_conn *c, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vusage(c->errf != NULL ? c->errf : stderr, c->command, fmt, ap);
	va_end(ap);
	return r;
}

void agent_put_num(struct agent_buf *b, const char *key, long long v)
{
	char num[32];

	snprintf(num, sizeof(num), "%lld", v);
	agent_buf_kv(b, key, num);
}

static FILE *errs(const struct agent_conn *c)
{
	return c->errf != NULL ? c->errf : stderr;
}

/* "p11smime: [FILE: ]MESSAGE" (NULL: out of memory), freed; the exit code of @p rc. */
static int fail(const struct agent_conn *c, p11s_rc rc, char *why)
{
	if (why == NULL && rc != P11S_E_NOMEM)
		why = strdup(p11i_rc_name(rc));
	fprintf(errs(c), "p11smime: %s%s%s\n", c->label ? cli_safe(c->label) : "",
	        c->label ? ": " : "", why != NULL ? why : "out of memory");
	free(why);
	return p11i_rc_exit_code(rc);
}

static int lost(const struct agent_conn *c, const char *what)
{
	fprintf(errs(c), "p11smime: %s%sthe agent at '%s' %s; nothing was written\n",
	        c->label ? cli_safe(c->label) : "", c->label ? ": " : "", cli_safe(c->sock), what);
	return 3;
}

static int connect_agent(struct agent_conn *c)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	if (strlen(c->sock) >= sizeof(sa.sun_path)) {
		fprintf(errs(c), "p11smime: P11SMIME_AGENT_SOCK is too long for a socket path\n");
		return 3;
	}
	memcpy(sa.sun_path, c->sock, strlen(c->sock) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		fprintf(errs(c),
		        "p11smime: cannot reach the agent at '%s' (P11SMIME_AGENT_SOCK): %s; "
		        "--no-agent works without it\n",
		        cli_safe(c->sock), strerror(errno));
		return 3;
	}
	return 0;
}

/* The module this command would load itself: --module, the config file's, $P11SMIME_MODULE. */
static int same_module(const char *mine, const char *agents)
{
	char a[PATH_MAX], b[PATH_MAX];

	if (strcmp(mine, agents) == 0)
		return 1;
	return realpath(mine, a) != NULL && realpath(agents, b) != NULL && strcmp(a, b) == 0;
}

/* The agent's greeting: its version and module.  0, or the exit code after printing. */
static int hello(const struct agent_conn *c, const struct agent_strings *sl)
{
	const char *mine = c->module ? c->module : getenv("P11SMIME_MODULE");

	if (sl->n < 2 || strcmp(sl->s[0], AGENT_PROTO_VERSION) != 0) {
		fprintf(errs(c),
		        "p11smime: the agent at '%s' speaks another protocol version; restart it "
		        "with this p11smime, or use --no-agent\n",
		        cli_safe(c->sock));
		return 3;
	}
	if (mine != NULL && *mine != '\0' && !same_module(mine, sl->s[1]))
		return usage(c,
		             "--module '%s' is not the agent's module ('%s'); "
		             "use --no-agent to load it here",
		             cli_safe(mine), cli_safe(sl->s[1]));
	if (c->verbose)
		fprintf(errs(c), "p11smime: module: %s\n", sl->s[1]);
	return 0;
}

/* Whether a greeting offers more than one request on the connection. */
static int offers_reuse(const struct agent_strings *sl)
{
	for (size_t i = 2; i < sl->n; i++)
		if (strcmp(sl->s[i], AGENT_HELLO_REUSE) == 0)
			return 1;
	return 0;
}

/* As p11s_input_open(): the file or standard input, never a directory.  -1 after printing. */
static int input_open(const struct agent_conn *c, const char *path)
{
	const char *name = path && strcmp(path, "-") != 0 ? path : "standard input";
	struct stat st;
	int fd = STDIN_FILENO;
	char *why = NULL;

	if (path != NULL && strcmp(path, "-") != 0) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			if (asprintf(&why, "cannot open '%s': %s", name, strerror(errno)) < 0)
				why = NULL;
			fail(c, P11S_E_IO, why);
			return -1;
		}
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (fd != STDIN_FILENO)
			close(fd);
		if (asprintf(&why, "cannot read '%s': it is a directory", name) < 0)
			why = NULL;
		fail(c, P11S_E_IO, why);
		return -1;
	}
	return fd;
}

/* Up to @p n bytes, as fread() gives them: short only at the end.  -1 on an error. */
static ssize_t read_block(int fd, unsigned char *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, p + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* D frames, then E.  -1 when the agent stopped listening. */
static int send_input(struct agent_conn *c, int in, int *read_failed)
{
	unsigned char *chunk = malloc(AGENT_DATA_MAX);
	ssize_t n;
	int ret = 0;

	if (chunk == NULL)
		return -1;
	while ((n = read_block(in, chunk, AGENT_DATA_MAX)) > 0) {
		if (agent_send(c->fd, AGENT_DATA, chunk, (uint32_t)n) != 0) {
			ret = -1;
			break;
		}
	}
	if (ret == 0 && n < 0)
		*read_failed = 1;
	free(chunk);
	if (ret == 0 && !*read_failed)
		ret = agent_send(c->fd, AGENT_END, NULL, 0);
	return ret;
}

static void print_error(const struct agent_conn *c, const struct agent_strings *sl,
                        const struct agent_result *r)
{
	const char *msg = r->message && *r->message ? r->message : p11i_rc_name((p11s_rc)r->rc);

	/* The message may quote a token's words (its label, a slot's name): shown safely. */
	fprintf(errs(c), "p11smime: %s%s", c->label ? cli_safe(c->label) : "",
	        c->label ? ": " : "");
	cli_puts_safe(errs(c), msg);
	fputc('\n', errs(c));
	for (size_t i = 0; i < r->n_candidates; i++) {
		fputs("  ", errs(c));
		cli_puts_safe(errs(c), sl->s[r->candidates[i]]);
		fputc('\n', errs(c));
	}
}

/* Connect and read the greeting: 0, or the exit code after printing. */
static int start(struct agent_conn *c)
{
	struct agent_strings sl = {0};
	struct agent_result res;
	uint8_t type;
	uint32_t len;
	const char *why;
	int r = connect_agent(c);

	if (r != 0)
		return r;
	r = agent_recv(c->fd, &type, &c->buf, &c->cap, &len);
	if (r <= 0 || (type != AGENT_HELLO && type != AGENT_RESULT) ||
	    agent_strings_parse(c->buf, len, &sl) != 0)
		return lost(c, r == 0 ? "closed the connection" : "did not greet");
	if (type == AGENT_RESULT) {
		/* Refused before any request (another user, too many clients). */
		if (agent_result_parse(&sl, &res, &why) != 0) {
			agent_strings_free(&sl);
			return lost(c, "sent a malformed result");
		}
		print_error(c, &sl, &res);
		r = p11i_rc_exit_code((p11s_rc)res.rc);
		agent_result_free(&res);
		agent_strings_free(&sl);
		return r ? r : 3;
	}
	r = hello(c, &sl);
	c->can_reuse = r == 0 && offers_reuse(&sl);
	agent_strings_free(&sl);
	return r;
}

/* exchange(): a kept connection closed before the answer began; nothing was printed. */
#define EXCHANGE_AGAIN (-1)

/*
 * The request after the greeting: send it and the message, take the
 * output and the result.  *rs and *res receive the result on success.
 * 0, or the exit code after printing; EXCHANGE_AGAIN, printing nothing,
 * when @p kept (the connection served the file before) ends first.
 */
static int exchange(struct agent_conn *c, const struct agent_buf *req, int in, const char *in_path,
                    const char *out_path, unsigned out_flags, int discard, int kept,
                    struct p11i_out **outp, struct agent_strings *rs, struct agent_result *res)
{
	struct p11i_out *out = NULL;
	uint8_t type;
	uint32_t len;
	p11s_rc rc = P11S_E_IO;
	int r, read_failed = 0, write_failed = 0;
	const char *why;
	char *owhy = NULL;

	if (req->oom || req->len > AGENT_MSG_MAX) {
		fprintf(errs(c), "p11smime: the request is too large for the agent\n");
		return 4;
	}
	/* A failed send is not final: the agent may have answered why it stopped reading. */
	if (agent_send(c->fd, AGENT_REQUEST, req->p, (uint32_t)req->len) == 0)
		send_input(c, in, &read_failed);
	if (read_failed) {
		fprintf(errs(c), "p11smime: cannot read '%s': %s\n",
		        in_path ? cli_safe(in_path) : "standard input", strerror(errno));
		return 4;
	}
	for (int frames = 0;; frames++) {
		r = agent_recv(c->fd, &type, &c->buf, &c->cap, &len);
		/*
		 * A connection kept from the last file that ends before any
		 * answer was closed by the agent between the two (its idle
		 * timeout, a restart): the request is sent again on a new one.
		 * One that ends later, or a new one, is the agent stopping
		 * during the request.
		 */
		if (r <= 0 && kept && frames == 0)
			return EXCHANGE_AGAIN;
		if (r <= 0) {
			p11i_out_abort(out);
			free(owhy);
			return lost(c, r == 0 ? "stopped during the request"
			                      : "broke off the request");
		}
		if (type == AGENT_RESULT)
			break;
		if (type != AGENT_DATA) {
			p11i_out_abort(out);
			free(owhy);
			return lost(c, "sent something unexpected");
		}
		if (discard || write_failed)
			continue;
		if (out == NULL) {
			rc = p11i_out_open(out_path, out_flags, sizeof(*out), &out, &owhy);
			if (rc != P11S_OK) {
				/* Still read the result: the agent's report comes first. */
				write_failed = 1;
				continue;
			}
		}
		if (len > 0 && p11i_out_write(out, c->buf, len) != 0)
			write_failed = 1;
	}
	if (agent_strings_parse(c->buf, len, rs) != 0 || agent_result_parse(rs, res, &why) != 0) {
		agent_strings_free(rs);
		p11i_out_abort(out);
		free(owhy);
		return lost(c, "sent a malformed result");
	}
	/* The exchange is whole: the connection may carry another. */
	c->clean = 1;
	for (size_t i = 0; c->verbose && i < res->n_verbose; i++) {
		fputs("p11smime: ", errs(c));
		cli_puts_safe(errs(c), rs->s[res->verbose[i]]);
		fputc('\n', errs(c));
	}
	if (res->rc != P11S_OK) {
		free(owhy); /* a failed output open: the agent's reason wins */
		owhy = NULL;
	}
	if (res->rc == P11S_OK && !discard && out == NULL && !write_failed) {
		/* An empty output (nothing came) is still an output. */
		rc = p11i_out_open(out_path, out_flags, sizeof(*out), &out, &owhy);
		write_failed = rc != P11S_OK;
	}
	if (res->rc == P11S_OK && write_failed) {
		if (out != NULL)
			rc = p11i_out_explain(out, P11S_E_IO, &owhy);
		p11i_out_abort(out);
		agent_result_free(res);
		agent_strings_free(rs);
		return fail(c, rc, owhy);
	}
	free(owhy);
	*outp = out;
	return 0;
}

/* The agent's JSON report, on standard output or error; a batch's names its file first. */
static void print_report(const struct agent_conn *c, const char *json, const char *out_path,
                         int on_stdout)
{
	FILE *fp = on_stdout ? (c->outf != NULL ? c->outf : stdout) : errs(c);
	char *doc = NULL;

	if (c->relabel != NULL && c->label != NULL) {
		doc = strdup(json);
		doc = doc != NULL ? c->relabel(doc, c->label, out_path) : NULL;
		if (doc == NULL) {
			fprintf(errs(c), "p11smime: %s: out of memory: no report\n",
			        cli_safe(c->label));
			return;
		}
	}
	fprintf(fp, "%s\n", doc != NULL ? doc : json);
	free(doc);
}

int agent_conn_run(struct agent_conn *c, const struct agent_buf *req, const char *in_path,
                   const char *out_path, unsigned out_flags, int discard)
{
	int decrypt = strcmp(c->command, "decrypt") == 0;
	int to_file = out_path != NULL && strcmp(out_path, "-") != 0;
	struct agent_strings rs = {0};
	struct agent_result res;
	struct p11i_out *out = NULL;
	char *why = NULL;
	int in, ret, kept;
	off_t in_at;
	p11s_rc rc;

	if (!c->reuse)
		c->fd = -1;
	else if (c->fd >= 0)
		c->can_reuse = 1; /* kept only where the greeting offered it */
	c->buf = NULL;
	c->cap = 0;
	c->clean = 0;
	/* The input first, as the command opens it before it loads anything. */
	in = input_open(c, in_path);
	if (in < 0)
		return p11i_rc_exit_code(P11S_E_IO);
	kept = c->fd >= 0;
	in_at = kept ? lseek(in, 0, SEEK_CUR) : -1;
	/* A kept connection is greeted already. */
	ret = kept ? 0 : start(c);
	if (ret == 0)
		ret = exchange(c, req, in, in_path, out_path, out_flags, discard, kept, &out, &rs,
		               &res);
	if (ret == EXCHANGE_AGAIN) {
		close(c->fd);
		c->fd = -1;
		/* The message again from its start: a file can be read again, a pipe cannot. */
		if (in_at < 0 || lseek(in, in_at, SEEK_SET) != in_at)
			ret = lost(c, "closed the connection");
		else if ((ret = start(c)) == 0)
			ret = exchange(c, req, in, in_path, out_path, out_flags, discard, 0, &out,
			               &rs, &res);
	}
	if (ret != 0)
		goto done;
	if (res.rc != P11S_OK) {
		p11i_out_abort(out);
		/* decrypt's report says which recipients the message has: it comes first. */
		if (decrypt && c->json && res.json != NULL)
			print_report(c, res.json, out_path, 1);
		print_error(c, &rs, &res);
		ret = p11i_rc_exit_code((p11s_rc)res.rc);
	} else {
		if (out == NULL) {
			rc = P11S_OK;
		} else if (c->keep != NULL && to_file) {
			/* Written out here; synced and put in place with the batch's group. */
			rc = p11i_out_prepare(out, &why);
			if (rc == P11S_OK)
				*c->keep = out;
			else
				p11i_out_abort(out);
		} else {
			rc = p11i_out_commit(out, &why);
		}
		out = NULL;
		ret = rc != P11S_OK ? fail(c, rc, why) : 0;
		for (size_t i = 0; ret == 0 && i < res.n_notes; i++)
			fprintf(errs(c), "p11smime: %s%snote: %s\n",
			        c->label ? cli_safe(c->label) : "", c->label ? ": " : "",
			        rs.s[res.notes[i]]);
		/* The report takes standard output unless the message does. */
		if (ret == 0 && c->json && res.json != NULL)
			print_report(c, res.json, out_path,
			             decrypt ? out_path == NULL || to_file : to_file);
	}
	agent_result_free(&res);
	agent_strings_free(&rs);
done:
	if (c->fd >= 0 && !(c->reuse && c->can_reuse && c->clean)) {
		close(c->fd);
		c->fd = -1;
	}
	if (in > STDIN_FILENO)
		close(in);
	/* Frames of the message and of its output (decrypted content) passed through it. */
	if (c->buf != NULL)
		explicit_bzero(c->buf, c->cap);
	free(c->buf);
	c->buf = NULL;
	return ret;
}

void agent_conn_close(int fd)
{
	if (fd >= 0)
		close(fd);
}
