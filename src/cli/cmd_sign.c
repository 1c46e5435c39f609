#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
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
	    "  -i, --in FILE       read the message from FILE (default: standard input)\n"
	    "  -o, --out FILE      write the signed message to FILE (default: standard output)\n"
	    "  -h, --help          this help\n"
	    "\n"
	    "With --json, a report is printed: on standard output when -o is given, else on\n"
	    "standard error.\n");
}

int cmd_sign(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"signer", required_argument, NULL, 's'}, {"chain", required_argument, NULL, 'c'},
	    {"digest", required_argument, NULL, 'd'}, {"pss", no_argument, NULL, 'P'},
	    {"opaque", no_argument, NULL, 'O'},       {"at", required_argument, NULL, 'a'},
	    {"in", required_argument, NULL, 'i'},     {"out", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	p11s_sign_opts so;
	const char **chain = NULL;
	const char *in_path = NULL, *out_path = NULL;
	p11s_signer *signer = NULL;
	p11s_output *output = NULL;
	BIO *in = NULL;
	p11s_ctx *ctx;
	p11s_rc rc;
	int c, ret;

	p11s_sign_opts_init(&so);
	chain = calloc((size_t)argc, sizeof(*chain));
	if (chain == NULL) {
		fprintf(stderr, "p11smime: out of memory\n");
		return 4;
	}
	while ((c = getopt_long(argc, argv, "i:o:h", opts, NULL)) != -1) {
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
	if (optind < argc) {
		free(chain);
		return cli_usage_error("sign", "unexpected argument '%s'", argv[optind]);
	}
	if (so.signer == NULL) {
		free(chain);
		return cli_usage_error("sign", "--signer URI|EMAIL is required");
	}
	if (so.digest != NULL && strcmp(so.digest, "sha256") != 0 &&
	    strcmp(so.digest, "sha384") != 0 && strcmp(so.digest, "sha512") != 0) {
		free(chain);
		return cli_usage_error("sign", "--digest must be sha256, sha384 or sha512");
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
		cli_verbose(cli, "signer: %s (%s)", p11s_signer_uri(signer),
		            p11s_signer_subject(signer));
		cli_verbose(cli, "signature: %s with %s on the token (%s)",
		            p11s_signer_algorithm(signer), p11s_signer_digest(signer),
		            p11s_signer_mechanism(signer));
		rc = p11s_output_open(out_path, &output, cli->err);
	}
	if (rc == P11S_OK)
		rc = p11s_signer_sign(signer, in, p11s_output_bio(output), cli->err);
	if (rc != P11S_OK)
		rc = p11s_output_explain(output, rc, cli->err);
	if (rc == P11S_OK) {
		rc = p11s_output_commit(output, cli->err);
		output = NULL;
	}
	if (rc == P11S_OK) {
		ret = 0;
		if (cli->json) {
			char *doc = p11s_signer_report_json(signer);

			if (out_path != NULL && strcmp(out_path, "-") != 0) {
				cli_print_json(doc);
			} else if (doc != NULL) {
				fprintf(stderr, "%s\n", doc);
				free(doc);
			}
		}
	} else {
		p11s_output_abort(output);
		ret = cli_fail(cli, rc);
	}
	p11s_signer_free(signer);
	BIO_free_all(in);
	free(chain);
	return ret;
}
