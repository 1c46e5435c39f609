#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "p11smime/certs.h"

static void tokens_usage(FILE *fp)
{
	fprintf(fp, "Usage: p11smime [GLOBAL OPTIONS] tokens [URI]\n"
	            "\n"
	            "Show every slot that holds a token, or those matching the pkcs11: URI:\n"
	            "label, manufacturer, model, serial, flags and the token's URI.  No login.\n"
	            "With the global --json: {\"tokens\":[...]} (docs/json-list.md).\n"
	            "\n"
	            "Options:\n"
	            "  -h, --help   this help\n"
	            "\n"
	            "Exit codes: 0 success, 2 usage error, 3 module or token error, or no\n"
	            "token matches URI.\n");
}

/* Token flags worth a person's attention, in words. */
static void print_flags(unsigned f)
{
	static const struct {
		unsigned flag;
		const char *on;
	} words[] = {
	    {P11S_TOKEN_INITIALIZED, "initialised"},
	    {P11S_TOKEN_LOGIN_REQUIRED, "login required"},
	    {P11S_TOKEN_USER_PIN_INITIALIZED, "user PIN set"},
	    {P11S_TOKEN_PROTECTED_AUTH_PATH, "PIN pad (protected authentication path)"},
	    {P11S_TOKEN_USER_PIN_COUNT_LOW, "PIN COUNT LOW"},
	    {P11S_TOKEN_USER_PIN_FINAL_TRY, "PIN FINAL TRY"},
	    {P11S_TOKEN_USER_PIN_LOCKED, "PIN LOCKED"},
	    {P11S_TOKEN_USER_PIN_TO_BE_CHANGED, "PIN must be changed"},
	    {P11S_TOKEN_WRITE_PROTECTED, "write-protected"},
	    {P11S_TOKEN_REMOVABLE, "removable"},
	    {P11S_TOKEN_HW_SLOT, "hardware slot"},
	};
	const char *sep = "";

	printf("  flags:        ");
	if (!(f & P11S_TOKEN_INITIALIZED)) {
		printf("NOT INITIALISED");
		sep = ", ";
	}
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (f & words[i].flag) {
			printf("%s%s", sep, words[i].on);
			sep = ", ";
		}
	}
	printf("\n");
}

int cmd_tokens(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	p11s_token_list *list = NULL;
	const char *uri = NULL;
	p11s_ctx *ctx;
	p11s_rc rc;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			tokens_usage(stdout);
			return 0;
		default:
			tokens_usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		uri = argv[optind++];
	if (optind < argc)
		return cli_usage_error("tokens", "one URI at most");
	ctx = cli_ctx(cli);
	if (ctx == NULL)
		return cli->ctx_exit;
	rc = p11s_tokens(ctx, uri, &list, cli->err);
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	if (cli->json) {
		char *doc = report_tokens_json(list);

		p11s_token_list_free(list);
		if (doc == NULL) {
			fprintf(stderr, "p11smime: out of memory\n");
			return 4;
		}
		cli_print_json(doc);
		return 0;
	}
	if (p11s_token_list_count(list) == 0)
		printf("No tokens (module %s).\n", p11s_ctx_module_path(ctx));
	for (size_t i = 0; i < p11s_token_list_count(list); i++) {
		const p11s_token *t = p11s_token_list_get(list, i);

		if (i > 0)
			printf("\n");
		printf("Token '%s'\n", cli_safe(p11s_token_label(t)));
		printf("  uri:          %s\n", p11s_token_uri(t));
		printf("  manufacturer: %s\n", cli_safe(p11s_token_manufacturer(t)));
		printf("  model:        %s\n", cli_safe(p11s_token_model(t)));
		printf("  serial:       %s\n", cli_safe(p11s_token_serial(t)));
		printf("  slot:         %lu (%s)\n", p11s_token_slot_id(t),
		       cli_safe(p11s_token_slot_description(t)));
		print_flags(p11s_token_flags(t));
	}
	p11s_token_list_free(list);
	return 0;
}
