#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "p11smime/certs.h"
#include "p11smime/encrypt.h"

static void help(FILE *fp)
{
	fprintf(fp,
	        "Usage: p11smime encrypt --recipient FILE|URI|EMAIL [--recipient ...]\n"
	        "                        [--recipient-dir DIR] [--self URI|EMAIL]\n"
	        "                        [--cipher aes-256-gcm|aes-256-cbc|aes-128-cbc] [--oaep]\n"
	        "                        [--at TIME] [--no-check-recipients] [-i FILE] [-o FILE]\n"
	        "                        [--outform smime|der|pem]\n"
	        "\n"
	        "Encrypt a message to its recipients.  The headers are kept; the content becomes\n"
	        "application/pkcs7-mime; smime-type=authEnveloped-data (enveloped-data for CBC).\n"
	        "\n"
	        "  --recipient SPEC  a certificate file (PEM, DER, PKCS#7), a pkcs11: URI of a\n"
	        "                    certificate on a token, or an e-mail address looked up in\n"
	        "                    --recipient-dir, then among the token's certificates;\n"
	        "                    repeatable\n"
	        "  --recipient-dir DIR  a directory of contacts' certificate files\n"
	        "  --self SPEC       also encrypt to your own certificate (same forms), so the\n"
	        "                    sent copy stays readable\n"
	        "  --cipher NAME     content cipher (default aes-256-gcm)\n"
	        "  --oaep            RSA recipients: RSA-OAEP with SHA-256 instead of PKCS#1 v1.5\n"
	        "                    (EC recipients always use ECDH with the SHA-256 KDF)\n"
	        "  --at TIME         recipient certificates must be valid at TIME (default now)\n"
	        "  --no-check-recipients  do not require a certificate for every To/Cc address\n"
	        "  --outform FORM    smime: the whole message (default); der or pem: only the\n"
	        "                    CMS structure, no headers (mutt's and neomutt's hooks)\n"
	        "  -i, --in FILE     the message (default: standard input)\n"
	        "  -o, --out FILE    the encrypted message (default: standard output); written\n"
	        "                    whole or not at all\n"
	        "\n"
	        "Every recipient certificate must pass the S/MIME rules, be valid at TIME and\n"
	        "allow keyEncipherment (RSA) or keyAgreement (EC); otherwise nothing is written\n"
	        "and the exit code is 1, as when a To/Cc address has no certificate.\n");
}

static int add_spec(struct cli *cli, p11s_recipients *r, const char *spec, int have_dir, time_t at)
{
	p11s_ctx *ctx;
	p11s_rc rc;

	if (strncasecmp(spec, "pkcs11:", 7) == 0) { /* schemes are case-insensitive */
		ctx = cli_ctx(cli);
		if (ctx == NULL)
			return cli->ctx_exit;
		rc = p11s_recipients_add_uri(r, ctx, spec, cli->err);
	} else if (access(spec, F_OK) == 0 || strchr(spec, '@') == NULL) {
		rc = p11s_recipients_add_file(r, spec, cli->err);
	} else {
		rc = P11S_E_NOT_FOUND;
		/* The directory first: it needs no module. */
		if (have_dir)
			rc = p11s_recipients_add_email(r, NULL, spec, at, cli->err);
		if (rc == P11S_E_NOT_FOUND) {
			p11s_error_clear(cli->err);
			ctx = cli_ctx(cli);
			if (ctx == NULL)
				return cli->ctx_exit;
			rc = p11s_recipients_add_email(r, ctx, spec, at, cli->err);
		}
	}
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	return 0;
}

int cmd_encrypt(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"recipient", required_argument, NULL, 'r'},
	    {"recipient-dir", required_argument, NULL, 'd'},
	    {"self", required_argument, NULL, 's'},
	    {"cipher", required_argument, NULL, 'c'},
	    {"oaep", no_argument, NULL, 'O'},
	    {"at", required_argument, NULL, 'a'},
	    {"no-check-recipients", no_argument, NULL, 'n'},
	    {"in", required_argument, NULL, 'i'},
	    {"out", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {"outform", required_argument, NULL, 'f'},
	    {NULL, 0, NULL, 0},
	};
	const char *in_path = NULL, *out_path = NULL, *dir = NULL;
	const char **specs = calloc((size_t)argc + 1, sizeof(*specs));
	size_t nspecs = 0;
	p11s_encrypt_opts eo = {0};
	p11s_recipients *r = p11s_recipients_new();
	p11s_output *out = NULL;
	BIO *in = NULL;
	int c, ret = 0;
	p11s_rc rc;

	if (specs == NULL || r == NULL) {
		fprintf(stderr, "p11smime: out of memory\n");
		ret = 4;
		goto done;
	}
	/* The config file's default; --cipher below wins. */
	if (cli->cfg_cipher != NULL &&
	    p11s_cipher_from_name(cli->cfg_cipher, &eo.cipher, cli->err) != P11S_OK) {
		ret = cli_usage_error("encrypt", "config file: %s", p11s_error_message(cli->err));
		p11s_error_clear(cli->err);
		goto done;
	}
	while ((c = getopt_long(argc, argv, "i:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
		case 's':
			specs[nspecs++] = optarg;
			break;
		case 'd':
			dir = optarg;
			break;
		case 'c':
			rc = p11s_cipher_from_name(optarg, &eo.cipher, cli->err);
			if (rc != P11S_OK) {
				ret =
				    cli_usage_error("encrypt", "%s", p11s_error_message(cli->err));
				p11s_error_clear(cli->err);
				goto done;
			}
			break;
		case 'O':
			eo.oaep = 1;
			break;
		case 'a':
			if (cli_parse_time(optarg, &eo.at) != 0) {
				ret = 2;
				goto done;
			}
			break;
		case 'n':
			eo.no_check_to = 1;
			break;
		case 'f':
			if (p11s_outform_from_name(optarg, 1, &eo.outform, cli->err) != P11S_OK) {
				p11s_error_clear(cli->err);
				ret = cli_usage_error("encrypt",
				                      "--outform must be smime, der or pem");
				goto done;
			}
			break;
		case 'i':
			in_path = optarg;
			break;
		case 'o':
			out_path = optarg;
			break;
		case 'h':
			help(stdout);
			goto done;
		default:
			ret = cli_usage_error("encrypt", "unknown option");
			goto done;
		}
	}
	if (optind < argc) {
		ret = cli_usage_error("encrypt", "unexpected argument '%s'", argv[optind]);
		goto done;
	}
	if (nspecs == 0) {
		ret = cli_usage_error("encrypt", "name at least one --recipient");
		goto done;
	}
	if (eo.at == 0)
		eo.at = time(NULL);
	if (dir != NULL) {
		rc = p11s_recipients_set_dir(r, dir, cli->err);
		if (rc != P11S_OK) {
			ret = cli_fail(cli, rc);
			goto done;
		}
	}
	for (size_t i = 0; i < nspecs; i++) {
		ret = add_spec(cli, r, specs[i], dir != NULL, eo.at);
		if (ret != 0)
			goto done;
	}
	for (size_t i = 0; i < p11s_recipients_count(r); i++)
		cli_verbose(cli, "recipient %s: %s", p11s_recipients_source(r, i),
		            p11s_encrypt_key_management(p11s_recipients_cert(r, i), &eo));
	cli_verbose(cli, "content cipher: %s", p11s_cipher_name(eo.cipher));

	rc = p11s_input_open(in_path, &in, cli->err);
	if (rc == P11S_OK)
		rc = p11s_output_open(out_path, &out, cli->err);
	if (rc == P11S_OK)
		rc = p11s_encrypt(in, p11s_output_bio(out), r, &eo, cli->err);
	ret = cli_finish(cli, &out, rc);
	if (ret == 0 && cli->json)
		cli_report(report_encrypt_json(r, &eo), cli_stdout_is_message(out_path));
done:
	p11s_output_abort(out);
	BIO_free_all(in);
	p11s_recipients_free(r);
	free(specs);
	return ret;
}
