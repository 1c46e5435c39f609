#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "p11smime/lifecycle.h"

static void keygen_usage(FILE *fp)
{
	fprintf(
	    fp,
	    "Usage: p11smime [GLOBAL OPTIONS] keygen --token URI|LABEL --type TYPE --label LABEL\n"
	    "                [--id HEX]\n"
	    "\n"
	    "Generate a key pair on the token (C_GenerateKeyPair): the private key is\n"
	    "private, sensitive and not extractable, and can sign and decrypt/unwrap (RSA)\n"
	    "or derive (EC); the public key sits beside it with the same id and label.\n"
	    "Prints both URIs (with the global --json: an object, see the man page).\n"
	    "\n"
	    "  --token URI|LABEL  the token (a pkcs11: URI or its label); exactly one\n"
	    "  --type TYPE        rsa:2048, rsa:3072, rsa:4096, ec:P-256, ec:P-384, ec:P-521\n"
	    "  --label LABEL      CKA_LABEL of both keys; refused when already in use\n"
	    "  --id HEX           CKA_ID (default: the smallest one-byte id not in use);\n"
	    "                     refused when already in use\n"
	    "  -h, --help         this help\n"
	    "\n"
	    "Exit codes: 0 generated, 2 usage error (also an id or label in use), 3 token,\n"
	    "mechanism, PIN or selection error.\n");
}

int cmd_keygen(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"token", required_argument, NULL, 't'}, {"type", required_argument, NULL, 'T'},
	    {"label", required_argument, NULL, 'l'}, {"id", required_argument, NULL, 'i'},
	    {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
	};
	p11s_keygen_opts ko = {0};
	p11s_keygen_result *r = NULL;
	p11s_ctx *ctx;
	p11s_rc rc;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			ko.token = optarg;
			break;
		case 'T':
			ko.type = optarg;
			break;
		case 'l':
			ko.label = optarg;
			break;
		case 'i':
			ko.id = optarg;
			break;
		case 'h':
			keygen_usage(stdout);
			return 0;
		default:
			return cli_usage_error("keygen", "unknown option");
		}
	}
	if (optind < argc)
		return cli_usage_error("keygen", "unexpected argument '%s'", argv[optind]);
	if (ko.token == NULL)
		return cli_usage_error("keygen", "--token URI|LABEL is required");
	if (ko.type == NULL)
		return cli_usage_error("keygen", "--type is required (rsa:2048, ec:P-256, ...)");
	if (ko.label == NULL || *ko.label == '\0')
		return cli_usage_error("keygen", "--label is required");
	if (p11s_keygen_type_parse(ko.type, NULL, NULL, cli->err) != P11S_OK)
		return cli_fail(cli, P11S_E_USAGE);
	ctx = cli_ctx(cli);
	if (ctx == NULL)
		return cli->ctx_exit;
	rc = p11s_keygen(ctx, &ko, &r, cli->err);
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	if (cli->json) {
		char *doc = report_keygen_json(r);

		if (doc == NULL) {
			p11s_keygen_result_free(r);
			fprintf(stderr, "p11smime: out of memory\n");
			return 4;
		}
		cli_print_json(doc);
	} else {
		printf("Generated a %s key pair on the token (%s), id %s, label '%s'.\n", r->type,
		       r->mechanism, r->id, cli_safe(r->label));
		printf("private key: %s\n", r->private_uri);
		printf("public key:  %s\n", r->public_uri);
	}
	p11s_keygen_result_free(r);
	return 0;
}
