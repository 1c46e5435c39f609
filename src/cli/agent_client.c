/*
 * sign and decrypt through `p11smime agent` (docs/agent.md): the options
 * the command parsed go to the agent with the message; the client itself
 * (src/front/agent_conn.c, shared with the thin executable) brings the
 * result back through the same all-or-nothing output, with the same
 * messages, reports and exit codes as without the agent.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_conn.h"
#include "cli.h"
#include "outcore.h"
#include "report.h"

static void conn_init(struct agent_conn *c, const struct cli *cli, const char *sock,
                      const char *command, const char *label, struct p11i_out **keep)
{
	memset(c, 0, sizeof(*c));
	c->sock = sock;
	c->module = cli->module;
	c->command = command;
	c->label = label;
	c->json = cli->json;
	c->verbose = cli->verbose;
	c->relabel = report_batch_json;
	c->fd = -1;
	c->errf = cli_err(cli);
	c->outf = cli_out(cli);
	c->keep = keep;
	/* A batch's worker sends its files on one connection. */
	if (keep != NULL && cli->agent_fd != NULL) {
		c->reuse = 1;
		c->fd = *cli->agent_fd;
	}
}

/* After a request: what the connection is now, for the worker's next file. */
static void conn_done(struct cli *cli, const struct agent_conn *c)
{
	if (c->reuse)
		*cli->agent_fd = c->fd;
}

int agent_client_sign(struct cli *cli, const char *sock, const p11s_sign_opts *so, int detached,
                      p11s_outform form, const char *in_path, const char *out_path,
                      const char *label, struct p11i_out **keep)
{
	struct agent_conn c;
	struct agent_buf req = {0};
	int ret;

	conn_init(&c, cli, sock, "sign", label, keep);
	agent_buf_str(&req, AGENT_PROTO_VERSION);
	agent_buf_str(&req, "sign");
	agent_buf_kv(&req, "signer", so->signer);
	agent_buf_kv(&req, "digest", so->digest);
	for (size_t i = 0; i < so->chain_count; i++) {
		/* The agent's working directory is not ours. */
		char *abs = realpath(so->chain_files[i], NULL);

		if (abs == NULL) {
			fprintf(cli_err(cli), "p11smime: cannot read '%s': %s\n",
			        cli_safe(so->chain_files[i]), strerror(errno));
			agent_buf_free(&req);
			return 4;
		}
		agent_buf_kv(&req, "chain", abs);
		free(abs);
	}
	agent_put_num(&req, "pss", so->pss);
	agent_put_num(&req, "opaque", so->opaque);
	agent_put_num(&req, "detached", detached);
	agent_put_num(&req, "form", form);
	agent_put_num(&req, "at", (long long)so->at);
	agent_put_num(&req, "json", cli->json);
	agent_put_num(&req, "verbose", cli->verbose);
	ret = agent_conn_run(&c, &req, in_path, out_path, 0, 0);
	conn_done(cli, &c);
	agent_buf_free(&req);
	return ret;
}

int agent_client_decrypt(struct cli *cli, const char *sock, const p11s_decrypt_opts *o,
                         const char *in_path, const char *out_path, const char *label,
                         struct p11i_out **keep)
{
	struct agent_conn c;
	struct agent_buf req = {0};
	/* With --json and no -o the report takes standard output: the content is checked, then
	 * dropped. */
	int discard = cli->json && out_path == NULL;
	int ret;

	conn_init(&c, cli, sock, "decrypt", label, keep);
	agent_buf_str(&req, AGENT_PROTO_VERSION);
	agent_buf_str(&req, "decrypt");
	agent_buf_kv(&req, "key", o->key);
	agent_put_num(&req, "at", (long long)o->at);
	agent_put_num(&req, "inform", o->inform);
	agent_put_num(&req, "keep-line-ends", o->keep_line_ends);
	agent_put_num(&req, "entity", o->entity_only);
	agent_put_num(&req, "discard", discard);
	agent_put_num(&req, "json", cli->json);
	agent_put_num(&req, "verbose", cli->verbose);
	ret = agent_conn_run(&c, &req, in_path, out_path, P11I_OUT_PRIVATE, discard);
	conn_done(cli, &c);
	agent_buf_free(&req);
	return ret;
}
