#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>

#include <openssl/crypto.h>

#include "cli.h"
#include "p11smime/lifecycle.h"
#include "p11smime/validate.h"

#define PASS_MAX 1024

static void import_usage(FILE *fp)
{
	fprintf(
	    fp,
	    "Usage: p11smime [GLOBAL OPTIONS] import FILE [--label L] [--ca | --no-key]\n"
	    "                [--token URI|LABEL]\n"
	    "       p11smime [GLOBAL OPTIONS] import --p12-pass-source SRC FILE.p12 [--label L]\n"
	    "\n"
	    "Put a certificate (PEM or DER) on the token with the id and label of the\n"
	    "private key it belongs to (found by its public key), then judge it as\n"
	    "validate does and print the verdict.  A PKCS#12 file brings its private key,\n"
	    "written sensitive and not extractable, and its chain.\n"
	    "\n"
	    "  --label L             CKA_LABEL (default: the key's, else the file's\n"
	    "                        friendly name or the first e-mail address)\n"
	    "  --ca                  a CA certificate, stored without a key\n"
	    "  --no-key              someone else's certificate, stored for encryption\n"
	    "  --p12-pass-source SRC the PKCS#12 password: file:PATH, fd:N, env:VAR (a\n"
	    "                        PKCS#12 file without it: asked on the terminal)\n"
	    "  --token URI|LABEL     the token (default: the only one)\n"
	    "  -h, --help            this help\n"
	    "\n"
	    "With the global --json: {\"import\": {...}, \"validation\": {...}} (see the\n"
	    "man page).\n"
	    "\n"
	    "Exit codes: 0 imported (or already there) and accepted, 1 no private key\n"
	    "matches (without --ca/--no-key), not a CA (--ca), or imported but rejected by\n"
	    "the rules, 2 usage error, 3 token, PIN or selection error, 4 bad input.\n");
}

/* A PKCS#12 password from the terminal without echo, as PINs are asked for. */
static int ask_password(const char *path, char *buf, size_t len)
{
	char prompt[PATH_MAX + 32];

	snprintf(prompt, sizeof(prompt), "Password for %s: ", cli_safe(path));
	return cli_tty_prompt(prompt, buf, len, NULL);
}

static void print_result(const p11s_import_result *r)
{
	if (r->already)
		printf("Already on the token: %s\n(nothing written)\n", r->cert_uri);
	else
		printf("Imported certificate: %s\n", r->cert_uri);
	printf("  subject:     %s\n", cli_safe(r->subject));
	printf("  private key: %s\n", r->key_uri ? r->key_uri : "(none: stored without a key)");
	if (r->public_uri != NULL)
		printf("  public key:  %s\n", r->public_uri);
	for (size_t i = 0; i < r->chain_count; i++)
		printf("  chain:       %s\n", r->chain_uris[i]);
	printf("\n");
}

int cmd_import(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"label", required_argument, NULL, 'l'},
	    {"ca", no_argument, NULL, 'C'},
	    {"no-key", no_argument, NULL, 'N'},
	    {"p12-pass-source", required_argument, NULL, 'P'},
	    {"token", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	p11s_import_opts io = {0};
	p11s_import_result *r = NULL;
	p11s_validation *v = NULL;
	const char *path, *pass_source = NULL;
	char pass[PASS_MAX];
	int c, is_p12 = 0, ret;
	p11s_ctx *ctx;
	p11s_rc rc;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			io.label = optarg;
			break;
		case 'C':
			io.ca = 1;
			break;
		case 'N':
			io.no_key = 1;
			break;
		case 'P':
			pass_source = optarg;
			break;
		case 't':
			io.token = optarg;
			break;
		case 'h':
			import_usage(stdout);
			return 0;
		default:
			return cli_usage_error("import", "unknown option");
		}
	}
	if (optind >= argc)
		return cli_usage_error("import", "the file to import is required");
	path = argv[optind++];
	if (optind < argc)
		return cli_usage_error("import", "one file at a time");
	if (io.ca && io.no_key)
		return cli_usage_error("import", "--ca and --no-key exclude each other");
	if (io.label != NULL && *io.label == '\0')
		return cli_usage_error("import", "--label must not be empty");
	if (pass_source != NULL) {
		rc = p11s_secret_source_check(pass_source, P11S_SECRET_PASSWORD, cli->err);
		if (rc != P11S_OK)
			return cli_fail(cli, rc);
	}
	rc = p11s_file_is_pkcs12(path, &is_p12, cli->err);
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	if (pass_source != NULL && !is_p12)
		return cli_usage_error("import",
		                       "%s is not a PKCS#12 file; --p12-pass-source is for "
		                       "PKCS#12 files",
		                       cli_safe(path));
	if (is_p12 && (io.ca || io.no_key))
		return cli_usage_error("import", "--ca and --no-key are for certificate files, not "
		                                 "PKCS#12");
	if (is_p12) {
		if (pass_source != NULL) {
			rc = p11s_secret_read(pass_source, P11S_SECRET_PASSWORD, pass, sizeof(pass),
			                      cli->err);
			if (rc != P11S_OK)
				return cli_fail(cli, rc);
		} else if (ask_password(path, pass, sizeof(pass)) != 0) {
			OPENSSL_cleanse(pass, sizeof(pass));
			fprintf(stderr,
			        "p11smime: %s is a PKCS#12 file and there is no terminal to ask "
			        "for its password; give --p12-pass-source file:PATH, fd:N or "
			        "env:VAR\n",
			        cli_safe(path));
			return 2;
		}
		io.p12_pass = pass;
	}
	ctx = cli_ctx(cli);
	if (ctx == NULL) {
		OPENSSL_cleanse(pass, sizeof(pass));
		return cli->ctx_exit;
	}
	rc = p11s_import(ctx, path, &io, &r, cli->err);
	OPENSSL_cleanse(pass, sizeof(pass));
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	if (r->key_written)
		fprintf(stderr,
		        "p11smime: warning: this private key existed in software before it was "
		        "imported (CKA_LOCAL is false): copies of %s may remain elsewhere; a key "
		        "generated on the token (p11smime keygen) never leaves it\n",
		        cli_safe(path));
	/* The verdict, as validate gives it, on the certificate now on the token. */
	rc = p11s_validation_new(NULL, &v, cli->err);
	if (rc == P11S_OK)
		rc = p11s_validation_add_token(v, ctx, r->cert_uri, cli->err);
	if (rc == P11S_OK)
		rc = p11s_validation_run(v, cli->err);
	if (rc != P11S_OK) {
		ret = cli_fail(cli, rc);
		goto out;
	}
	ret = p11s_rc_exit_code(p11s_validation_status(v));
	if (cli->json) {
		char *a = report_import_json(r), *b = report_validation_json(v);

		if (a == NULL || b == NULL) {
			fprintf(stderr, "p11smime: out of memory\n");
			ret = 4;
		} else {
			printf("{\"import\": %s,\n\"validation\": %s}\n", a, b);
		}
		free(a);
		free(b);
	} else {
		char *text = report_validation_text(v);

		print_result(r);
		if (text != NULL)
			fputs(text, stdout);
		free(text);
		if (ret == 1)
			fprintf(stderr, "p11smime: the certificate is on the token, but the S/MIME "
			                "rules reject it\n");
	}
out:
	p11s_validation_free(v);
	p11s_import_result_free(r);
	return ret;
}
