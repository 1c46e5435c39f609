#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "p11smime/lifecycle.h"

static void csr_usage(FILE *fp)
{
	fprintf(fp,
	        "Usage: p11smime [GLOBAL OPTIONS] csr --key URI --email ADDR [--email ADDR]...\n"
	        "                [--subject DN] [--digest sha256|sha384|sha512] [-o FILE]\n"
	        "\n"
	        "Make a PKCS#10 certificate request for a key on the token, signed there (the\n"
	        "key never leaves it), asking for subjectAltName e-mail addresses, Key Usage\n"
	        "digitalSignature + keyEncipherment (RSA) or + keyAgreement (EC) and Extended\n"
	        "Key Usage emailProtection.  The request is refused when a certificate carrying\n"
	        "those would fail the S/MIME rules.  For a renewal, run it on the existing key.\n"
	        "\n"
	        "  --key URI          the private key (a URI without type= selects the private\n"
	        "                     key of that id)\n"
	        "  --email ADDR       an address for the subjectAltName; repeatable\n"
	        "  --subject DN       /CN=Alice/O=Example or CN=Alice,O=Example (RFC 4514);\n"
	        "                     default CN=<the first --email>\n"
	        "  --digest NAME      sha256 (default; sha384 for P-384, sha512 for P-521 keys)\n"
	        "  -o, --out FILE     write the PEM request to FILE (default: standard output)\n"
	        "  -h, --help         this help\n"
	        "\n"
	        "Exit codes: 0 written, 1 the rules would reject the certificate, 2 usage\n"
	        "error, 3 token, mechanism, PIN or selection error, 4 signing failed.\n");
}

int cmd_csr(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"key", required_argument, NULL, 'k'},
	    {"email", required_argument, NULL, 'e'},
	    {"subject", required_argument, NULL, 's'},
	    {"digest", required_argument, NULL, 'd'},
	    {"out", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	p11s_csr_opts co = {0};
	const char **emails;
	const char *out_path = NULL;
	char *pem = NULL, *key_uri = NULL;
	p11s_output *output = NULL;
	size_t n = 0;
	p11s_ctx *ctx;
	p11s_rc rc;
	int c, ret = 0;

	emails = calloc((size_t)argc + 1, sizeof(*emails));
	if (emails == NULL) {
		fprintf(stderr, "p11smime: out of memory\n");
		return 4;
	}
	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			co.key = optarg;
			break;
		case 'e':
			emails[n++] = optarg;
			break;
		case 's':
			co.subject = optarg;
			break;
		case 'd':
			co.digest = optarg;
			break;
		case 'o':
			out_path = optarg;
			break;
		case 'h':
			csr_usage(stdout);
			free(emails);
			return 0;
		default:
			free(emails);
			return cli_usage_error("csr", "unknown option");
		}
	}
	co.emails = emails;
	co.email_count = n;
	if (optind < argc)
		ret = cli_usage_error("csr", "unexpected argument '%s'", argv[optind]);
	else if (co.key == NULL)
		ret = cli_usage_error("csr", "--key URI is required");
	else if (n == 0)
		ret = cli_usage_error("csr", "at least one --email is required");
	else if (co.digest != NULL && strcmp(co.digest, "sha256") != 0 &&
	         strcmp(co.digest, "sha384") != 0 && strcmp(co.digest, "sha512") != 0)
		ret = cli_usage_error("csr", "--digest must be sha256, sha384 or sha512");
	if (ret != 0) {
		free(emails);
		return ret;
	}
	/* A malformed subject is a usage error before any module or PIN. */
	if (co.subject != NULL) {
		X509_NAME *dn = NULL;

		rc = p11s_dn_parse(co.subject, &dn, cli->err);
		X509_NAME_free(dn);
		if (rc != P11S_OK) {
			free(emails);
			return cli_fail(cli, rc);
		}
	}
	ctx = cli_ctx(cli);
	if (ctx == NULL) {
		free(emails);
		return cli->ctx_exit;
	}
	rc = p11s_csr(ctx, &co, &pem, &key_uri, cli->err);
	if (rc == P11S_OK)
		rc = p11s_output_open(out_path, &output, cli->err);
	if (rc == P11S_OK &&
	    BIO_write(p11s_output_bio(output), pem, (int)strlen(pem)) != (int)strlen(pem)) {
		p11s_output_abort(output);
		output = NULL;
		fprintf(stderr, "p11smime: cannot write the request\n");
		ret = 4;
	} else if (rc == P11S_OK) {
		rc = p11s_output_commit(output, cli->err);
		output = NULL;
	}
	if (rc != P11S_OK)
		ret = cli_fail(cli, rc);
	else if (ret == 0)
		cli_verbose(cli, "request signed on the token with %s", key_uri);
	free(pem);
	free(key_uri);
	free(emails);
	return ret;
}
