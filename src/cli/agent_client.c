/*
 * sign and decrypt through `p11smime agent` (docs/agent.md): the options
 * the command parsed go to the agent with the message; the result comes
 * back through the same all-or-nothing output, with the same messages,
 * reports and exit codes as without the agent.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent_proto.h"
#include "cli.h"

const char *agent_socket(void)
{
	const char *s = getenv("P11SMIME_AGENT_SOCK");

	return s != NULL && *s != '\0' ? s : NULL;
}

/* One request in flight. */
struct client {
	struct cli *cli;
	const char *sock;
	const char *label; /* a batch's file, for messages */
	const char *command;
	int fd;
	unsigned char *buf;
	size_t cap;
};

static void put_num(struct agent_buf *b, const char *key, long long v)
{
	char num[32];

	snprintf(num, sizeof(num), "%lld", v);
	agent_buf_kv(b, key, num);
}

static int lost(struct client *c, const char *what)
{
	fprintf(stderr, "p11smime: %s%sthe agent at '%s' %s; nothing was written\n",
	        c->label ? cli_safe(c->label) : "", c->label ? ": " : "", cli_safe(c->sock), what);
	return 3;
}

static int connect_agent(struct client *c)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	if (strlen(c->sock) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "p11smime: P11SMIME_AGENT_SOCK is too long for a socket path\n");
		return 3;
	}
	memcpy(sa.sun_path, c->sock, strlen(c->sock) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		fprintf(stderr,
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
static int hello(struct client *c, const struct agent_strings *sl)
{
	const char *mine = c->cli->module ? c->cli->module : getenv("P11SMIME_MODULE");

	if (sl->n < 2 || strcmp(sl->s[0], AGENT_PROTO_VERSION) != 0) {
		fprintf(stderr,
		        "p11smime: the agent at '%s' speaks another protocol version; restart it "
		        "with this p11smime, or use --no-agent\n",
		        cli_safe(c->sock));
		return 3;
	}
	if (mine != NULL && *mine != '\0' && !same_module(mine, sl->s[1]))
		return cli_usage_error(c->command,
		                       "--module '%s' is not the agent's module ('%s'); "
		                       "use --no-agent to load it here",
		                       cli_safe(mine), cli_safe(sl->s[1]));
	cli_verbose(c->cli, "module: %s", sl->s[1]);
	return 0;
}

/* Send the whole message: D frames, then E.  -1 when the agent stopped listening. */
static int send_input(struct client *c, BIO *in, int *read_failed)
{
	unsigned char *chunk = malloc(AGENT_DATA_MAX);
	int n, ret = 0;

	if (chunk == NULL)
		return -1;
	while ((n = BIO_read(in, chunk, AGENT_DATA_MAX)) > 0) {
		if (agent_send(c->fd, AGENT_DATA, chunk, (uint32_t)n) != 0) {
			ret = -1;
			break;
		}
	}
	if (ret == 0 && n < 0 && !BIO_eof(in))
		*read_failed = 1;
	free(chunk);
	if (ret == 0 && !*read_failed)
		ret = agent_send(c->fd, AGENT_END, NULL, 0);
	return ret;
}

static void print_error(struct client *c, const struct agent_strings *sl,
                        const struct agent_result *r)
{
	const char *msg = r->message && *r->message ? r->message : p11s_rc_name((p11s_rc)r->rc);

	if (c->label)
		fprintf(stderr, "p11smime: %s: %s\n", cli_safe(c->label), msg);
	else
		fprintf(stderr, "p11smime: %s\n", msg);
	for (size_t i = 0; i < r->n_candidates; i++)
		fprintf(stderr, "  %s\n", sl->s[r->candidates[i]]);
}

/*
 * The request after the greeting: send it and the message, take the
 * output and the result.  *rs and *res receive the result on success.
 * 0, or the exit code after printing.
 */
static int exchange(struct client *c, const struct agent_buf *req, BIO *in, const char *in_path,
                    const char *out_path, unsigned out_flags, int discard, p11s_output **outp,
                    struct agent_strings *rs, struct agent_result *res)
{
	p11s_output *out = NULL;
	uint8_t type;
	uint32_t len;
	p11s_rc rc = P11S_E_IO;
	int r, read_failed = 0, write_failed = 0;
	const char *why;

	if (req->oom || req->len > AGENT_MSG_MAX) {
		fprintf(stderr, "p11smime: the request is too large for the agent\n");
		return 4;
	}
	/* A failed send is not final: the agent may have answered why it stopped reading. */
	if (agent_send(c->fd, AGENT_REQUEST, req->p, (uint32_t)req->len) == 0)
		send_input(c, in, &read_failed);
	if (read_failed) {
		fprintf(stderr, "p11smime: cannot read '%s': %s\n",
		        in_path ? cli_safe(in_path) : "standard input", strerror(errno));
		return 4;
	}
	for (;;) {
		r = agent_recv(c->fd, &type, &c->buf, &c->cap, &len);
		if (r <= 0) {
			p11s_output_abort(out);
			return lost(c, r == 0 ? "stopped during the request"
			                      : "broke off the request");
		}
		if (type == AGENT_RESULT)
			break;
		if (type != AGENT_DATA) {
			p11s_output_abort(out);
			return lost(c, "sent something unexpected");
		}
		if (discard || write_failed)
			continue;
		if (out == NULL) {
			rc = p11s_output_open_ex(out_path, out_flags, &out, c->cli->err);
			if (rc != P11S_OK) {
				/* Still read the result: the agent's report comes first. */
				write_failed = 1;
				continue;
			}
		}
		if (len > 0 && BIO_write(p11s_output_bio(out), c->buf, (int)len) != (int)len)
			write_failed = 1;
	}
	if (agent_strings_parse(c->buf, len, rs) != 0 || agent_result_parse(rs, res, &why) != 0) {
		agent_strings_free(rs);
		p11s_output_abort(out);
		return lost(c, "sent a malformed result");
	}
	for (size_t i = 0; i < res->n_verbose; i++)
		cli_verbose(c->cli, "%s", rs->s[res->verbose[i]]);
	if (res->rc != P11S_OK)
		p11s_error_clear(c->cli->err); /* a failed output open: the agent's reason wins */
	if (res->rc == P11S_OK && !discard && out == NULL && !write_failed) {
		/* An empty output (nothing came) is still an output. */
		rc = p11s_output_open_ex(out_path, out_flags, &out, c->cli->err);
		write_failed = rc != P11S_OK;
	}
	if (res->rc == P11S_OK && write_failed) {
		if (out != NULL)
			rc = p11s_output_explain(out, P11S_E_IO, c->cli->err);
		p11s_output_abort(out);
		agent_result_free(res);
		agent_strings_free(rs);
		return c->label ? cli_fail_file(c->cli, c->label, rc) : cli_fail(c->cli, rc);
	}
	*outp = out;
	return 0;
}

/* Commit the output; 0 or the exit code after printing. */
static int commit(struct client *c, p11s_output *out)
{
	p11s_rc rc;

	if (out == NULL)
		return 0;
	rc = p11s_output_commit(out, c->cli->err);
	if (rc != P11S_OK)
		return c->label ? cli_fail_file(c->cli, c->label, rc) : cli_fail(c->cli, rc);
	return 0;
}

/* Open the input (first, as the command does), connect, read the greeting. */
static int start(struct client *c, const char *in_path, BIO **in)
{
	struct agent_strings sl = {0};
	struct agent_result res;
	uint8_t type;
	uint32_t len;
	const char *why;
	int r;
	p11s_rc rc = p11s_input_open(in_path, in, c->cli->err);

	if (rc != P11S_OK)
		return c->label ? cli_fail_file(c->cli, c->label, rc) : cli_fail(c->cli, rc);
	r = connect_agent(c);
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
		r = p11s_rc_exit_code((p11s_rc)res.rc);
		agent_result_free(&res);
		agent_strings_free(&sl);
		return r ? r : 3;
	}
	r = hello(c, &sl);
	agent_strings_free(&sl);
	return r;
}

/* The agent's report: on standard output or error; a batch's names its file first. */
static void print_report(struct client *c, const struct agent_result *res, const char *out_path,
                         int on_stdout)
{
	FILE *fp = on_stdout ? stdout : stderr;
	char *doc = NULL;

	if (c->label != NULL) {
		doc = report_batch_json(strdup(res->json), c->label, out_path);
		if (doc == NULL) {
			fprintf(stderr, "p11smime: %s: out of memory: no report\n",
			        cli_safe(c->label));
			return;
		}
	}
	fprintf(fp, "%s\n", doc != NULL ? doc : res->json);
	free(doc);
}

static void finish(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
}

int agent_client_sign(struct cli *cli, const char *sock, const p11s_sign_opts *so, int detached,
                      p11s_outform form, const char *in_path, const char *out_path,
                      const char *label)
{
	struct client c = {cli, sock, label, "sign", -1, NULL, 0};
	struct agent_buf req = {0};
	struct agent_strings rs = {0};
	struct agent_result res;
	p11s_output *out = NULL;
	BIO *in = NULL;
	int ret;

	agent_buf_str(&req, AGENT_PROTO_VERSION);
	agent_buf_str(&req, "sign");
	agent_buf_kv(&req, "signer", so->signer);
	agent_buf_kv(&req, "digest", so->digest);
	for (size_t i = 0; i < so->chain_count; i++) {
		/* The agent's working directory is not ours. */
		char *abs = realpath(so->chain_files[i], NULL);

		if (abs == NULL) {
			fprintf(stderr, "p11smime: cannot read '%s': %s\n",
			        cli_safe(so->chain_files[i]), strerror(errno));
			agent_buf_free(&req);
			return 4;
		}
		agent_buf_kv(&req, "chain", abs);
		free(abs);
	}
	put_num(&req, "pss", so->pss);
	put_num(&req, "opaque", so->opaque);
	put_num(&req, "detached", detached);
	put_num(&req, "form", form);
	put_num(&req, "at", (long long)so->at);
	put_num(&req, "json", cli->json);
	put_num(&req, "verbose", cli->verbose);

	ret = start(&c, in_path, &in);
	if (ret == 0)
		ret = exchange(&c, &req, in, in_path, out_path, 0, 0, &out, &rs, &res);
	BIO_free_all(in);
	agent_buf_free(&req);
	if (ret != 0) {
		finish(&c);
		return ret;
	}
	if (res.rc != P11S_OK) {
		p11s_output_abort(out);
		print_error(&c, &rs, &res);
		ret = p11s_rc_exit_code((p11s_rc)res.rc);
	} else {
		ret = commit(&c, out);
		if (ret == 0 && cli->json && res.json != NULL)
			print_report(&c, &res, out_path,
			             out_path != NULL && strcmp(out_path, "-") != 0);
	}
	agent_result_free(&res);
	agent_strings_free(&rs);
	finish(&c);
	return ret;
}

int agent_client_decrypt(struct cli *cli, const char *sock, const p11s_decrypt_opts *o,
                         const char *in_path, const char *out_path, const char *label)
{
	struct client c = {cli, sock, label, "decrypt", -1, NULL, 0};
	struct agent_buf req = {0};
	struct agent_strings rs = {0};
	struct agent_result res;
	p11s_output *out = NULL;
	/* With --json and no -o the report takes standard output: the content is checked, then
	 * dropped. */
	int discard = cli->json && out_path == NULL;
	BIO *in = NULL;
	int ret;

	agent_buf_str(&req, AGENT_PROTO_VERSION);
	agent_buf_str(&req, "decrypt");
	agent_buf_kv(&req, "key", o->key);
	put_num(&req, "at", (long long)o->at);
	put_num(&req, "inform", o->inform);
	put_num(&req, "keep-line-ends", o->keep_line_ends);
	put_num(&req, "entity", o->entity_only);
	put_num(&req, "discard", discard);
	put_num(&req, "json", cli->json);
	put_num(&req, "verbose", cli->verbose);

	ret = start(&c, in_path, &in);
	if (ret == 0)
		ret = exchange(&c, &req, in, in_path, out_path, P11S_OUTPUT_PRIVATE, discard, &out,
		               &rs, &res);
	BIO_free_all(in);
	agent_buf_free(&req);
	if (ret != 0) {
		finish(&c);
		return ret;
	}
	if (res.rc != P11S_OK) {
		p11s_output_abort(out);
		if (cli->json && res.json != NULL)
			print_report(&c, &res, out_path, 1);
		print_error(&c, &rs, &res);
		ret = p11s_rc_exit_code((p11s_rc)res.rc);
	} else {
		ret = commit(&c, out);
		for (size_t i = 0; ret == 0 && i < res.n_notes; i++) {
			if (label)
				fprintf(stderr, "p11smime: %s: note: %s\n", cli_safe(label),
				        rs.s[res.notes[i]]);
			else
				fprintf(stderr, "p11smime: note: %s\n", rs.s[res.notes[i]]);
		}
		if (ret == 0 && cli->json && res.json != NULL)
			print_report(&c, &res, out_path,
			             out_path == NULL || strcmp(out_path, "-") != 0);
	}
	agent_result_free(&res);
	agent_strings_free(&rs);
	finish(&c);
	return ret;
}
