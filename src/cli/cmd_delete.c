#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "p11smime/lifecycle.h"

static void delete_usage(FILE *fp)
{
	fprintf(fp,
	        "Usage: p11smime [GLOBAL OPTIONS] delete URI [--yes] [--all]\n"
	        "\n"
	        "Delete the objects the pkcs11: URI matches on its one token.  A certificate's\n"
	        "URI without type= deletes the pair with it: the certificate, and the private\n"
	        "and public key of its id.  Without --yes, only list what would be deleted.\n"
	        "\n"
	        "  -y, --yes   really delete\n"
	        "  --all       allow a URI that matches objects of several ids\n"
	        "  -h, --help  this help\n"
	        "\n"
	        "Exit codes: 0 deleted, 1 not deleted (no --yes; the objects are listed),\n"
	        "2 usage error, 3 token, PIN or selection error (no match, several ids\n"
	        "without --all, several tokens).\n");
}

static const char *class_word(p11s_object_class c)
{
	return c == P11S_OBJ_CERTIFICATE   ? "certificate"
	       : c == P11S_OBJ_PRIVATE_KEY ? "private key"
	                                   : "public key";
}

int cmd_delete(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"yes", no_argument, NULL, 'y'},
	    {"all", no_argument, NULL, 'a'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	p11s_delete_plan *plan = NULL;
	const char *uri;
	int yes = 0, all = 0, c, ret = 0;
	size_t done = 0;
	p11s_ctx *ctx;
	p11s_rc rc;

	while ((c = getopt_long(argc, argv, "yh", opts, NULL)) != -1) {
		switch (c) {
		case 'y':
			yes = 1;
			break;
		case 'a':
			all = 1;
			break;
		case 'h':
			delete_usage(stdout);
			return 0;
		default:
			return cli_usage_error("delete", "unknown option");
		}
	}
	if (optind >= argc)
		return cli_usage_error("delete", "the URI of what to delete is required");
	uri = argv[optind++];
	if (optind < argc)
		return cli_usage_error("delete", "one URI only");
	ctx = cli_ctx(cli);
	if (ctx == NULL)
		return cli->ctx_exit;
	rc = p11s_delete_plan_new(ctx, uri, all, &plan, cli->err);
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	if (yes) {
		rc = p11s_delete_plan_run(ctx, plan, &done, cli->err);
		if (rc != P11S_OK) {
			ret = cli_fail(cli, rc);
			fprintf(stderr, "p11smime: %zu of %zu objects were deleted before that\n",
			        done, p11s_delete_plan_count(plan));
			p11s_delete_plan_free(plan);
			return ret;
		}
	} else {
		ret = 1;
	}
	if (cli->json) {
		cli_print_json(report_delete_json(plan, yes));
	} else {
		printf("%s:\n", yes ? "Deleted" : "Would delete (give --yes to delete)");
		for (size_t i = 0; i < p11s_delete_plan_count(plan); i++)
			printf("  %-12s %s\n", class_word(p11s_delete_plan_class(plan, i)),
			       p11s_delete_plan_uri(plan, i));
	}
	if (!yes)
		fprintf(stderr, "p11smime: nothing deleted without --yes\n");
	p11s_delete_plan_free(plan);
	return ret;
}
