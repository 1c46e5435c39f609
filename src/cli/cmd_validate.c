#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "cli.h"
#include "p11smime/certs.h"
#include "p11smime/io.h"
#include "p11smime/validate.h"

static void validate_usage(FILE *fp)
{
	fprintf(fp,
	        "Usage: p11smime [GLOBAL OPTIONS] validate [OPTIONS] [TARGET...]\n"
	        "\n"
	        "Check certificates against the S/MIME upload rules, with a reason per rule:\n"
	        "  san-email              an e-mail address (rfc822Name) in the SAN\n"
	        "  key-usage              digitalSignature and/or keyEncipherment\n"
	        "  public-key-algorithm   RSA or EC\n"
	        "  extended-key-usage     optional; if present, emailProtection\n"
	        "  private-key-algorithm  the paired private key is RSA or EC\n"
	        "  validity               within its dates (else not usable for outgoing mail)\n"
	        "CA certificates (CA:TRUE) are exempt.  Token certificates also get key checks\n"
	        "(key present and matching, hardware-bound, flags fit the usage).  See\n"
	        "p11smime-validate(1) and docs/rules.md.\n"
	        "\n"
	        "TARGET is a pkcs11: URI (default: every certificate on every token), a file\n"
	        "(PEM with every certificate in it, DER, PKCS#7 or PKCS#12) or a directory of\n"
	        "such files.  With the global --json: docs/json-validate.md.\n"
	        "\n"
	        "Options:\n"
	        "  --at TIME               judge validity at TIME (RFC 3339 or YYYY-MM-DD;\n"
	        "                          default now)\n"
	        "  --ca FILE|URI           trust the certificates in FILE, or on the tokens a\n"
	        "                          pkcs11: URI names (any module p11-kit knows, e.g.\n"
	        "                          'pkcs11:token=System%%20Trust'), for the chain check\n"
	        "                          (repeatable); CA certificates on the tokens searched\n"
	        "                          are trusted too, the system store never\n"
	        "  --warn-days N           warn when a certificate expires within N days\n"
	        "                          (default 30; 0: never)\n"
	        "  --p12-pass-source SPEC  PKCS#12 password from file:PATH, fd:N or env:VAR\n"
	        "                          (default: try the empty password)\n"
	        "  --no-login              do not log in to tokens; skips the key checks\n"
	        "  -h, --help              this help\n"
	        "\n"
	        "Exit codes: 0 every certificate accepted, 1 some certificate rejected,\n"
	        "2 usage error, 3 token, module or PIN error, 4 a file that is not a\n"
	        "certificate or cannot be read (the other targets are still reported).\n");
}

static int is_uri(const char *s)
{
	return strncasecmp(s, "pkcs11:", 7) == 0;
}

int cmd_validate(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"at", required_argument, NULL, 'a'},
	    {"ca", required_argument, NULL, 'c'},
	    {"warn-days", required_argument, NULL, 'w'},
	    {"p12-pass-source", required_argument, NULL, 'P'},
	    {"no-login", no_argument, NULL, 'n'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	p11s_validation_opts vopts;
	p11s_validation *r = NULL;
	const char **cas = calloc((size_t)argc + 1, sizeof(char *));
	size_t ncas = 0;
	const char *pass_source = NULL;
	char pass[1024];
	int c, ret = 0, module_failed = 0;
	p11s_rc rc;
	char *out;

	if (cas == NULL)
		return cli_fail(cli, P11S_E_NOMEM);
	p11s_validation_opts_init(&vopts);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			if (cli_parse_time(optarg, &vopts.at) != 0) {
				free(cas);
				return 2;
			}
			break;
		case 'c':
			cas[ncas++] = optarg;
			break;
		case 'w': {
			char *end;
			long n = strtol(optarg, &end, 10);

			if (*optarg == '\0' || *end != '\0' || n < 0 || n > 36500) {
				free(cas);
				return cli_usage_error("validate",
				                       "--warn-days needs a number of days "
				                       "(0 to 36500), not '%s'",
				                       optarg);
			}
			vopts.warn_days = (int)n;
			break;
		}
		case 'P':
			pass_source = optarg;
			break;
		case 'n':
			vopts.no_login = 1;
			break;
		case 'h':
			validate_usage(stdout);
			free(cas);
			return 0;
		default:
			free(cas);
			validate_usage(stderr);
			return 2;
		}
	}

	if (pass_source != NULL) {
		rc = p11s_secret_read(pass_source, P11S_SECRET_PASSWORD, pass, sizeof(pass),
		                      cli->err);
		if (rc != P11S_OK) {
			free(cas);
			return cli_fail(cli, rc);
		}
		vopts.p12_pass = pass;
	}
	rc = p11s_validation_new(&vopts, &r, cli->err);
	OPENSSL_cleanse(pass, sizeof(pass));
	if (rc != P11S_OK) {
		free(cas);
		return cli_fail(cli, rc);
	}
	for (size_t i = 0; i < ncas; i++) {
		if (is_uri(cas[i])) {
			p11s_ctx *ctx = cli_ctx(cli);

			/* Without a module of our own, p11-kit's registry is still searched. */
			rc = p11s_validation_add_anchors_uri(r, ctx, cas[i], cli->err);
		} else {
			rc = p11s_validation_add_anchors(r, cas[i], cli->err);
		}
		if (rc != P11S_OK) {
			free(cas);
			p11s_validation_free(r);
			return cli_fail(cli, rc);
		}
	}
	free(cas);

	if (optind >= argc) {
		p11s_ctx *ctx = cli_ctx(cli);

		if (ctx == NULL)
			module_failed = 1;
		else
			p11s_validation_add_token(r, ctx, NULL, NULL);
	}
	for (int i = optind; i < argc; i++) {
		if (is_uri(argv[i])) {
			p11s_ctx *ctx = module_failed ? NULL : cli_ctx(cli);

			if (ctx == NULL)
				module_failed = 1;
			else
				p11s_validation_add_token(r, ctx, argv[i], NULL);
		} else {
			cli_verbose(cli, "reading %s", argv[i]);
			p11s_validation_add_file(r, argv[i], NULL);
		}
	}

	rc = p11s_validation_run(r, cli->err);
	if (rc != P11S_OK) {
		p11s_validation_free(r);
		return cli_fail(cli, rc);
	}
	out = cli->json ? report_validation_json(r) : report_validation_text(r);
	if (out == NULL) {
		p11s_validation_free(r);
		return cli_fail(cli, P11S_E_NOMEM);
	}
	if (cli->json) {
		cli_print_json(out);
	} else {
		fputs(out, stdout);
		free(out);
	}
	for (size_t i = 0; i < p11s_validation_error_count(r); i++)
		fprintf(stderr, "p11smime: %s\n", p11s_validation_error_message(r, i));
	ret = p11s_rc_exit_code(p11s_validation_status(r));
	if (module_failed && (ret == 0 || ret == 1))
		ret = 3;
	p11s_validation_free(r);
	return ret;
}
