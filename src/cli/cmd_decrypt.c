#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "p11smime/decrypt.h"

static void help(FILE *fp)
{
	fprintf(fp,
	        "Usage: p11smime decrypt [--key URI|EMAIL] [--at TIME] [--inform smime|der|pem]\n"
	        "                        [--keep-line-ends] [--entity] [-i FILE] [-o FILE]\n"
	        "\n"
	        "Decrypt an S/MIME message (application/pkcs7-mime; smime-type=enveloped-data\n"
	        "or authEnveloped-data) with a private key on the token.  The recipient is\n"
	        "found by matching the message's recipients against the token's certificates;\n"
	        "the token does the RSA decryption or the ECDH derivation.  The output is the\n"
	        "message with its outer headers kept and the decrypted entity in place of the\n"
	        "encrypted one; it appears whole or not at all.\n"
	        "\n"
	        "  --key URI|EMAIL   decrypt with this certificate's key (pkcs11: URI of the\n"
	        "                    certificate or key, or an e-mail address of a certificate\n"
	        "                    on the token); it must be one of the recipients\n"
	        "  --at TIME         judge the recipient certificate (rules, validity) at TIME\n"
	        "                    (RFC 3339 or date; default now); only reported: an expired\n"
	        "                    certificate still decrypts, old mail must stay readable\n"
	        "  --inform FORM     smime (default: a message or MIME entity), der or pem\n"
	        "                    (a bare CMS ContentInfo; the output is the content alone)\n"
	        "  --keep-line-ends  write the decrypted entity as decrypted (CRLF); by\n"
	        "                    default its line ends follow the input's headers\n"
	        "  --entity          write only the decrypted entity, not the outer headers\n"
	        "  -i, --in FILE     the encrypted message (default: standard input)\n"
	        "  -o, --out FILE    the decrypted message (default: standard output)\n"
	        "  --out-dir DIR FILE...  decrypt each FILE into DIR/<its name>, with one\n"
	        "                    login; a FILE that fails is named and does not stop the\n"
	        "                    others\n"
	        "  --jobs N          with --out-dir, decrypt N files at once (default: the\n"
	        "                    number of processors, at most 8; 1 for one at a time)\n"
	        "  --no-agent        do not use the agent named by $P11SMIME_AGENT_SOCK\n"
	        "\n"
	        "With --json, a report (recipient, key URI, key-encryption algorithm, content\n"
	        "cipher, token mechanism, the recipient certificate's verdict under the S/MIME\n"
	        "rules and its expiry) is printed instead of the content, or beside it when -o\n"
	        "is given.  A rejected or expired recipient certificate is noted, never refused.\n"
	        "\n"
	        "Exit: 0 decrypted, 2 usage, 3 token, PIN, mechanism, or no recipient on the\n"
	        "token, 4 malformed or truncated input, failed authentication or padding.\n");
}

static void print_summary(const struct cli *cli, const p11s_decrypt_report *r)
{
	const p11s_verdict *v;
	X509 *x;
	char *subject;

	if (r == NULL)
		return;
	if (cli->verbose && (x = p11s_decrypt_report_certificate(r)) != NULL) {
		subject = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0);
		cli_verbose(cli, "recipient: %s", subject ? subject : "?");
		OPENSSL_free(subject);
	}
	if ((v = p11s_decrypt_report_verdict(r)) != NULL)
		cli_verbose(cli,
		            "recipient certificate: %s by the S/MIME rules, %s for outgoing mail",
		            p11s_verdict_accepted(v) ? "accepted" : "rejected",
		            p11s_verdict_usable_for_outgoing(v) ? "usable" : "not usable");
	if (p11s_decrypt_report_key_uri(r) != NULL)
		cli_verbose(cli, "key: %s", p11s_decrypt_report_key_uri(r));
	if (p11s_decrypt_report_key_encryption(r) != NULL)
		cli_verbose(cli, "key encryption: %s", p11s_decrypt_report_key_encryption(r));
	if (p11s_decrypt_report_mechanism(r) != NULL)
		cli_verbose(cli, "token mechanism: %s%s", p11s_decrypt_report_mechanism(r),
		            strcmp(p11s_decrypt_report_mechanism(r), "CKM_RSA_X_509") == 0
		                ? " (raw RSA on the token; the OAEP decoding runs in OpenSSL's "
		                  "constant-time code)"
		                : "");
	if (p11s_decrypt_report_content_cipher(r) != NULL)
		cli_verbose(cli, "content: %s, %s", p11s_decrypt_report_content_type(r),
		            p11s_decrypt_report_content_cipher(r));
}

void cmd_decrypt_summary(const struct cli *cli, const p11s_decrypt_report *report)
{
	print_summary(cli, report);
}

/* What every file of a batch is decrypted with. */
struct decrypt_batch {
	const char *agent; /* NULL: here, through cli_ctx() */
	const p11s_decrypt_opts *o;
	const char *dir;
	p11s_output_dir *odir; /* dir, held open (NULL: each output looks it up) */
};

/*
 * One file of a batch into its directory, its output left in *outp for
 * the batch to commit; its failure printed with its name.  Exit code.
 */
static int decrypt_one_file(struct cli *cli, void *arg, const char *file,
                            struct cli_batch_output *outp)
{
	const struct decrypt_batch *b = arg;
	char *out_path = cli_batch_path(b->dir, file);
	p11s_decrypt_report *report = NULL;
	p11s_output *out = NULL;
	BIO *in = NULL;
	p11s_rc rc;
	int ret;

	if (out_path == NULL) {
		fprintf(cli_err(cli), "p11smime: %s: out of memory\n", cli_safe(file));
		return 4;
	}
	if (b->agent != NULL) {
		ret = agent_client_decrypt(cli, b->agent, b->o, file, out_path, file, &outp->agent);
		free(out_path);
		return ret;
	}
	rc = p11s_input_open(file, &in, cli->err);
	if (rc == P11S_OK)
		rc = p11s_output_open_in(b->odir, out_path, P11S_OUTPUT_PRIVATE, &out, cli->err);
	if (rc == P11S_OK) {
		rc = p11s_decrypt(cli->ctx, b->o, in, p11s_output_bio(out), &report, cli->err);
		if (rc != P11S_OK)
			rc = p11s_output_explain(out, rc, cli->err);
		print_summary(cli, report);
	}
	BIO_free_all(in);
	if (rc != P11S_OK) {
		p11s_output_abort(out);
		if (cli->json && report != NULL)
			cli_print_json_to(
			    cli, report_batch_json(report_decrypt_json(report), file, out_path));
		free(out_path);
		p11s_decrypt_report_free(report);
		return cli_fail_file(cli, file, rc);
	}
	for (size_t i = 0; i < p11s_decrypt_report_note_count(report); i++)
		fprintf(cli_err(cli), "p11smime: %s: note: %s\n", cli_safe(file),
		        p11s_decrypt_report_note(report, i));
	if (cli->json)
		cli_print_json_to(cli,
		                  report_batch_json(report_decrypt_json(report), file, out_path));
	free(out_path);
	p11s_decrypt_report_free(report);
	/* Committed by the batch, with others; the notes and report wait for it. */
	outp->lib = out;
	return 0;
}

/*
 * decrypt --out-dir: one context (one login) for every FILE, decrypted by
 * @p jobs workers at once, or one agent request each; the worst exit.
 */
static int decrypt_batch(struct cli *cli, const p11s_decrypt_opts *o, const char *dir, char **files,
                         int nfiles, int no_agent, int jobs)
{
	struct decrypt_batch b = {no_agent ? NULL : agent_socket(), o, dir, NULL};
	int bad = cli_batch_check("decrypt", dir, files, nfiles);

	if (bad != 0)
		return bad;
	if (b.agent != NULL) {
		jobs = cli_batch_agent_jobs(jobs);
	} else if (cli_ctx(cli) == NULL) {
		return cli->ctx_exit; /* a module that fails once fails for every file */
	} else if (p11s_output_dir_open(dir, &b.odir, cli->err) != P11S_OK) {
		/* Without it (it went away?) each file says why when it gets there. */
		p11s_error_clear(cli->err);
	}
	bad = cli_batch_run(cli, files, nfiles, jobs, decrypt_one_file, &b);
	p11s_output_dir_free(b.odir);
	return bad;
}

int cmd_decrypt(struct cli *cli, int argc, char **argv)
{
	p11s_decrypt_opts o = {0};
	const char *in_path = NULL, *out_path = NULL, *out_dir = NULL;
	p11s_decrypt_report *report = NULL;
	p11s_output *out = NULL;
	BIO *in = NULL, *sinkbio = NULL, *target;
	p11s_ctx *ctx;
	p11s_rc rc;
	int c, ret, no_agent = 0, jobs = 0;

	while ((c = getopt_long(argc, argv, P11I_DECRYPT_SHORT, p11i_decrypt_opts, NULL)) != -1) {
		switch (c) {
		case 'J':
			if (cli_batch_jobs("decrypt", optarg, &jobs) != 0)
				return 2;
			break;
		case 'k':
			o.key = optarg;
			break;
		case 'R':
			out_dir = optarg;
			break;
		case 'N':
			no_agent = 1;
			break;
		case 'a':
			if (cli_parse_time(optarg, &o.at) != 0)
				return 2;
			break;
		case 'f':
			if (strcmp(optarg, "smime") == 0)
				o.inform = P11S_INFORM_SMIME;
			else if (strcmp(optarg, "der") == 0)
				o.inform = P11S_INFORM_DER;
			else if (strcmp(optarg, "pem") == 0)
				o.inform = P11S_INFORM_PEM;
			else
				return cli_usage_error("decrypt",
				                       "--inform takes smime, der or pem");
			break;
		case 'L':
			o.keep_line_ends = 1;
			break;
		case 'E':
			o.entity_only = 1;
			break;
		case 'i':
			in_path = optarg;
			break;
		case 'o':
			out_path = optarg;
			break;
		case 'h':
			help(stdout);
			return 0;
		default:
			help(stderr);
			return 2;
		}
	}
	if (out_dir != NULL && (in_path != NULL || out_path != NULL || optind == argc))
		return cli_usage_error("decrypt", "--out-dir takes FILE arguments, not -i or -o");
	if (out_dir != NULL)
		return decrypt_batch(cli, &o, out_dir, argv + optind, argc - optind, no_agent,
		                     jobs);
	if (optind < argc)
		return cli_usage_error("decrypt", "unexpected argument '%s'", argv[optind]);
	if (!no_agent && agent_socket() != NULL)
		return agent_client_decrypt(cli, agent_socket(), &o, in_path, out_path, NULL, NULL);

	rc = p11s_input_open(in_path, &in, cli->err);
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	ctx = cli_ctx(cli);
	if (ctx == NULL) {
		BIO_free_all(in);
		return cli->ctx_exit;
	}
	if (cli->json && out_path == NULL) {
		/* The report takes standard output; the content is checked, then dropped. */
		sinkbio = BIO_new(BIO_s_null());
		if (sinkbio == NULL) {
			BIO_free_all(in);
			fprintf(stderr, "p11smime: out of memory\n");
			return 4;
		}
		target = sinkbio;
	} else {
		/* Plaintext: a new file is readable by its owner only. */
		rc = p11s_output_open_ex(out_path, P11S_OUTPUT_PRIVATE, &out, cli->err);
		if (rc != P11S_OK) {
			BIO_free_all(in);
			return cli_fail(cli, rc);
		}
		target = p11s_output_bio(out);
	}

	rc = p11s_decrypt(ctx, &o, in, target, &report, cli->err);
	BIO_free_all(in);
	BIO_free(sinkbio);
	print_summary(cli, report);
	ret = cli_finish(cli, &out, rc);
	if (ret == 0)
		for (size_t i = 0; i < p11s_decrypt_report_note_count(report); i++)
			fprintf(stderr, "p11smime: note: %s\n",
			        p11s_decrypt_report_note(report, i));
	/* Also on a failure once the recipients were read: who the message was for. */
	if (cli->json && report != NULL && (ret == 0 || rc != P11S_OK))
		cli_report(report_decrypt_json(report),
		           out_path != NULL && cli_stdout_is_message(out_path));
	p11s_decrypt_report_free(report);
	return ret;
}
