#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "p11smime/hooks.h"
#include "p11smime/sign.h"

static void sign_usage(FILE *fp)
{
	fprintf(
	    fp,
	    "Usage: p11smime sign --signer URI|EMAIL [OPTIONS]\n"
	    "\n"
	    "Sign a message with a key on the token.  Reads a whole RFC 5322 message (or a\n"
	    "bare MIME entity) and writes it signed, its headers kept.\n"
	    "\n"
	    "  --signer URI|EMAIL  pkcs11: URI of the certificate or key, or an e-mail address\n"
	    "                      in the SAN of exactly one certificate on the token\n"
	    "  --chain FILE        add the certificates in FILE (PEM or DER); repeatable\n"
	    "  --digest NAME       sha256, sha384 or sha512 (default: sha256; sha384 for\n"
	    "                      P-384, sha512 for P-521 keys)\n"
	    "  --pss               RSA-PSS instead of RSA PKCS#1 v1.5\n"
	    "  --opaque            application/pkcs7-mime signed-data instead of\n"
	    "                      multipart/signed\n"
	    "  --at TIME           judge the certificate's validity at TIME (RFC 3339 or\n"
	    "                      YYYY-MM-DD; default now)\n"
	    "  --detached-signature  sign the input entity exactly as given (only LF made\n"
	    "                      CRLF, nothing re-encoded) and write only the detached CMS\n"
	    "                      signature: the shape of mutt's and neomutt's sign hooks\n"
	    "  --outform FORM      der or pem: the CMS structure alone (default der with\n"
	    "                      --detached-signature); smime: a whole message (default);\n"
	    "                      --opaque --outform der signs the entity as given\n"
	    "  -i, --in FILE       read the message from FILE (default: standard input)\n"
	    "  -o, --out FILE      write the signed message to FILE (default: standard output)\n"
	    "  --out-dir DIR FILE...  sign each FILE into DIR/<its name>, with one login;\n"
	    "                      a FILE that fails is named and does not stop the others\n"
	    "  --jobs N            with --out-dir, sign N files at once (default: the\n"
	    "                      number of processors, at most 8; 1 for one at a time)\n"
	    "  --no-agent          do not use the agent named by $P11SMIME_AGENT_SOCK\n"
	    "  -h, --help          this help\n"
	    "\n"
	    "With --json, a report is printed: on standard output when -o is given, else on\n"
	    "standard error.\n");
}

void cmd_sign_verbose(const struct cli *cli, const p11s_signer *signer)
{
	cli_verbose(cli, "signer: %s (%s)", p11s_signer_uri(signer), p11s_signer_subject(signer));
	cli_verbose(cli, "signature: %s with %s on the token (%s)", p11s_signer_algorithm(signer),
	            p11s_signer_digest(signer), p11s_signer_mechanism(signer));
}

/* What every file of a batch is signed with. */
struct sign_batch {
	p11s_signer *signer; /* NULL: through the agent */
	const char *agent;
	const p11s_sign_opts *so;
	int detached;
	p11s_outform form;
	const char *dir;
	p11s_output_dir *odir; /* dir, held open (NULL: each output looks it up) */
};

/*
 * One file of a batch into its directory, its output left in *outp for
 * the batch to commit; its failure printed with its name.  Exit code.
 */
static int sign_one_file(struct cli *cli, void *arg, const char *file,
                         struct cli_batch_output *outp)
{
	const struct sign_batch *b = arg;
	char *out_path = cli_batch_path(b->dir, file);
	p11s_output *output = NULL;
	BIO *in = NULL;
	p11s_rc rc;
	int ret;

	if (out_path == NULL) {
		fprintf(cli_err(cli), "p11smime: %s: out of memory\n", cli_safe(file));
		return 4;
	}
	if (b->agent != NULL) {
		ret = agent_client_sign(cli, b->agent, b->so, b->detached, b->form, file, out_path,
		                        file, &outp->agent);
		free(out_path);
		return ret;
	}
	rc = p11s_input_open(file, &in, cli->err);
	if (rc == P11S_OK)
		rc = p11s_output_open_in(b->odir, out_path, 0, &output, cli->err);
	if (rc == P11S_OK && b->form != P11S_FORM_SMIME)
		rc = p11s_signer_sign_entity(b->signer, in, p11s_output_bio(output), b->detached,
		                             b->form, cli->err);
	else if (rc == P11S_OK)
		rc = p11s_signer_sign(b->signer, in, p11s_output_bio(output), cli->err);
	if (rc != P11S_OK)
		rc = p11s_output_explain(output, rc, cli->err);
	BIO_free_all(in);
	if (rc != P11S_OK) {
		free(out_path);
		p11s_output_abort(output);
		return cli_fail_file(cli, file, rc);
	}
	/* Committed by the batch, with others; the report is printed once it is in place. */
	outp->lib = output;
	if (cli->json)
		cli_print_json_to(cli,
		                  report_batch_json(report_signer_json(b->signer), file, out_path));
	free(out_path);
	return 0;
}

/*
 * sign --out-dir: one signer (one login) for every FILE, signed by @p jobs
 * workers at once, or one agent request each.  The exit code is the
 * highest of the files'.
 */
static int sign_batch(struct cli *cli, const p11s_sign_opts *so, int detached, p11s_outform form,
                      const char *dir, char **files, int nfiles, int no_agent, int jobs)
{
	struct sign_batch b = {NULL, no_agent ? NULL : agent_socket(), so, detached, form, dir,
	                       NULL};
	p11s_ctx *ctx;
	p11s_rc rc;
	int worst;

	worst = cli_batch_check("sign", dir, files, nfiles);
	if (worst != 0)
		return worst;
	if (b.agent == NULL) {
		ctx = cli_ctx(cli);
		if (ctx == NULL)
			return cli->ctx_exit;
		rc = p11s_signer_open(ctx, so, &b.signer, cli->err);
		if (rc != P11S_OK)
			return cli_fail(cli, rc);
		cmd_sign_verbose(cli, b.signer);
		/* Without it (it went away?) each file says why when it gets there. */
		if (p11s_output_dir_open(dir, &b.odir, cli->err) != P11S_OK)
			p11s_error_clear(cli->err);
	} else {
		jobs = cli_batch_agent_jobs(jobs);
	}
	worst = cli_batch_run(cli, files, nfiles, jobs, sign_one_file, &b);
	p11s_output_dir_free(b.odir);
	p11s_signer_free(b.signer);
	return worst;
}

int cmd_sign(struct cli *cli, int argc, char **argv)
{
	p11s_sign_opts so;
	const char **chain = NULL;
	const char *in_path = NULL, *out_path = NULL, *out_dir = NULL;
	p11s_signer *signer = NULL;
	p11s_output *output = NULL;
	BIO *in = NULL;
	p11s_ctx *ctx;
	p11s_rc rc;
	int c, ret, detached_sig = 0, have_form = 0, no_agent = 0, jobs = 0;
	p11s_outform form = P11S_FORM_SMIME;

	p11s_sign_opts_init(&so);
	chain = calloc((size_t)argc, sizeof(*chain));
	if (chain == NULL) {
		fprintf(stderr, "p11smime: out of memory\n");
		return 4;
	}
	while ((c = getopt_long(argc, argv, P11I_SIGN_SHORT, p11i_sign_opts, NULL)) != -1) {
		switch (c) {
		case 's':
			so.signer = optarg;
			break;
		case 'c':
			chain[so.chain_count++] = optarg;
			break;
		case 'd':
			so.digest = optarg;
			break;
		case 'P':
			so.pss = 1;
			break;
		case 'O':
			so.opaque = 1;
			break;
		case 'a':
			if (cli_parse_time(optarg, &so.at) != 0) {
				free(chain);
				return 2;
			}
			break;
		case 'i':
			in_path = optarg;
			break;
		case 'o':
			out_path = optarg;
			break;
		case 'D':
			detached_sig = 1;
			break;
		case 'R':
			out_dir = optarg;
			break;
		case 'N':
			no_agent = 1;
			break;
		case 'J':
			if (cli_batch_jobs("sign", optarg, &jobs) != 0) {
				free(chain);
				return 2;
			}
			break;
		case 'f':
			if (p11s_outform_from_name(optarg, 1, &form, cli->err) != P11S_OK) {
				p11s_error_clear(cli->err);
				free(chain);
				return cli_usage_error("sign",
				                       "--outform must be der, pem or smime");
			}
			have_form = 1;
			break;
		case 'h':
			sign_usage(stdout);
			free(chain);
			return 0;
		default:
			free(chain);
			return cli_usage_error("sign", "unknown option");
		}
	}
	so.chain_files = chain;
	if (out_dir != NULL && (in_path != NULL || out_path != NULL || optind == argc)) {
		free(chain);
		return cli_usage_error("sign", "--out-dir takes FILE arguments, not -i or -o");
	}
	if (out_dir == NULL && optind < argc) {
		free(chain);
		return cli_usage_error("sign", "unexpected argument '%s'", argv[optind]);
	}
	if (so.signer == NULL)
		so.signer = cli->cfg_signer; /* the config file's default */
	if (so.digest == NULL)
		so.digest = cli->cfg_digest;
	if (detached_sig && so.opaque) {
		free(chain);
		return cli_usage_error("sign",
		                       "--detached-signature and --opaque exclude each other");
	}
	if (detached_sig && !have_form)
		form = P11S_FORM_DER;
	if (detached_sig && form == P11S_FORM_SMIME) {
		free(chain);
		return cli_usage_error("sign", "--detached-signature writes der or pem");
	}
	if (!detached_sig && !so.opaque && form != P11S_FORM_SMIME) {
		free(chain);
		return cli_usage_error("sign", "--outform der|pem needs --detached-signature or "
		                               "--opaque");
	}
	if (so.signer == NULL) {
		free(chain);
		return cli_usage_error("sign", "--signer URI|EMAIL is required (or signer = "
		                               "in the config file)");
	}
	if (so.digest != NULL && strcmp(so.digest, "sha256") != 0 &&
	    strcmp(so.digest, "sha384") != 0 && strcmp(so.digest, "sha512") != 0) {
		free(chain);
		return cli_usage_error("sign", "--digest must be sha256, sha384 or sha512");
	}

	if (out_dir != NULL) {
		ret = sign_batch(cli, &so, detached_sig, form, out_dir, argv + optind,
		                 argc - optind, no_agent, jobs);
		free(chain);
		return ret;
	}
	if (!no_agent && agent_socket() != NULL) {
		ret = agent_client_sign(cli, agent_socket(), &so, detached_sig, form, in_path,
		                        out_path, NULL, NULL);
		free(chain);
		return ret;
	}
	rc = p11s_input_open(in_path, &in, cli->err);
	if (rc != P11S_OK) {
		free(chain);
		return cli_fail(cli, rc);
	}
	ctx = cli_ctx(cli);
	if (ctx == NULL) {
		BIO_free_all(in);
		free(chain);
		return cli->ctx_exit;
	}
	/* The signer is settled (login, rules, mechanism) before any input is read. */
	rc = p11s_signer_open(ctx, &so, &signer, cli->err);
	if (rc == P11S_OK) {
		cmd_sign_verbose(cli, signer);
		rc = p11s_output_open(out_path, &output, cli->err);
	}
	if (rc == P11S_OK && form != P11S_FORM_SMIME)
		rc = p11s_signer_sign_entity(signer, in, p11s_output_bio(output), detached_sig,
		                             form, cli->err);
	else if (rc == P11S_OK)
		rc = p11s_signer_sign(signer, in, p11s_output_bio(output), cli->err);
	ret = cli_finish(cli, &output, rc);
	if (ret == 0 && cli->json)
		cli_report(report_signer_json(signer), cli_stdout_is_message(out_path));
	p11s_signer_free(signer);
	BIO_free_all(in);
	free(chain);
	return ret;
}
