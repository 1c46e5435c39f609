#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "p11smime/certs.h"
#include "p11smime/hooks.h"
#include "p11smime/verify.h"

static void help(FILE *fp)
{
	fprintf(fp,
	        "Usage: p11smime verify --trust FILE|URI [--trust ...] [--at TIME]\n"
	        "                       [-i FILE] [-o FILE [--force-output] [--entity-only]]\n"
	        "       p11smime verify --trust FILE|URI [--content FILE] --signature FILE\n"
	        "                       [--inform der|pem] [-o FILE [--force-output]]\n"
	        "\n"
	        "Verify a signed message (multipart/signed or application/pkcs7-mime;\n"
	        "smime-type=signed-data, e.g. the output of p11smime decrypt) against the\n"
	        "certificates you trust, and only those: never the system store.\n"
	        "\n"
	        "  --trust FILE|URI  a trust anchor: a PEM/DER/PKCS#7 file of CA or end-entity\n"
	        "                    certificates, or a pkcs11: URI of certificates on a token;\n"
	        "                    repeatable; at least one\n"
	        "  --at TIME         judge the certificates' validity at TIME (RFC 3339 or date;\n"
	        "                    default now); chains are checked at the signing time\n"
	        "  -i, --in FILE     the message (default: standard input)\n"
	        "  -o, --out FILE    write the message there, only when the verdict is good: its\n"
	        "                    outer headers (From, To, Subject...; Content-* replaced by\n"
	        "                    the signed entity's) and the signed entity; '-': standard\n"
	        "                    output (the report then goes to standard error)\n"
	        "  --force-output    write the content with -o even when the verdict is not good\n"
	        "  --content FILE    with --signature: verify a detached signature over FILE\n"
	        "                    (its line ends made CRLF), instead of reading a message\n"
	        "  --signature FILE  the detached CMS signature, DER or PEM (recognised by\n"
	        "                    content unless --inform der|pem is given); without\n"
	        "                    --content: an opaque signature, its content inside\n"
	        "  --entity-only     with -o, write only the signed entity (canonical CRLF)\n"
	        "\n"
	        "Exit: 0 good, 1 not good (bad signature, untrusted, no certificate, not signed\n"
	        "by its sender), 2 usage, 3 token, 4 malformed input.\n");
}

static int load_trust(struct cli *cli, const char *spec, STACK_OF(X509) * trust)
{
	p11s_rc rc;

	/* Schemes are case-insensitive (RFC 3986): never open "PKCS11:..." as a file. */
	if (strncasecmp(spec, "pkcs11:", 7) == 0) {
		p11s_ctx *ctx = cli_ctx(cli);
		size_t added = 0;

		if (ctx == NULL)
			return cli->ctx_exit;
		/* The module in use first, then every module p11-kit knows (its trust module). */
		rc = p11s_trust_certificates(ctx, spec, trust, &added, cli->err);
		if (rc != P11S_OK)
			return cli_fail(cli, rc);
		cli_verbose(cli, "trusting %zu certificate(s) from %s", added, spec);
		return 0;
	}
	p11s_cert_list *list = NULL;

	rc = p11s_certs_read_file(spec, NULL, &list, cli->err);
	if (rc != P11S_OK)
		return cli_fail(cli, rc);
	for (size_t i = 0; i < p11s_cert_list_count(list); i++) {
		X509 *x = p11s_cert_list_get(list, i);

		X509_up_ref(x);
		if (!sk_X509_push(trust, x)) {
			X509_free(x);
			p11s_cert_list_free(list);
			fprintf(stderr, "p11smime: out of memory\n");
			return 4;
		}
	}
	for (size_t i = 0; i < p11s_cert_list_problem_count(list); i++)
		fprintf(stderr, "p11smime: warning: %s\n", p11s_cert_list_problem(list, i));
	cli_verbose(cli, "trusting %zu certificate(s) from %s", p11s_cert_list_count(list), spec);
	p11s_cert_list_free(list);
	return 0;
}

static const char *yesno(int v, const char *yes, const char *no, const char *unknown)
{
	return v < 0 ? unknown : v ? yes : no;
}

static void print_report(FILE *fp, const p11s_verify_report *r, time_t at)
{
	char t1[32], t2[32];
	size_t n = p11s_verify_report_signer_count(r);

	fprintf(fp, "%s\n", p11s_verify_report_summary(r));
	fprintf(fp, "format:      %s\n", p11s_verify_report_format(r));
	for (size_t i = 0; i < n; i++) {
		p11s_sig_verdict v = p11s_verify_signer_verdict(r, i);
		const char *reason = p11s_verify_signer_reason(r, i);
		const p11s_verdict *rules = p11s_verify_signer_rules(r, i);
		X509 *x = p11s_verify_signer_cert(r, i);
		time_t st, na = 0;

		fprintf(fp, "signer %zu:    %s%s%s\n", i + 1, p11s_sig_verdict_name(v),
		        reason ? ": " : "", reason ? reason : "");
		if (p11s_verify_signer_signing_time(r, i, &st))
			fprintf(fp, "  signed at: %s\n", p11s_time_format(st, t1, sizeof(t1)));
		else
			fprintf(fp, "  signed at: (no signing time in the signature)\n");
		fprintf(fp, "  algorithm: %s with %s\n",
		        p11s_verify_signer_signature_alg(r, i)
		            ? p11s_verify_signer_signature_alg(r, i)
		            : "?",
		        p11s_verify_signer_digest(r, i) ? p11s_verify_signer_digest(r, i) : "?");
		if (x == NULL)
			continue;
		fprintf(fp, "  subject:   %s\n", p11s_verify_signer_subject(r, i));
		fprintf(fp, "  e-mails:  ");
		for (size_t j = 0; j < p11s_verify_signer_email_count(r, i); j++)
			fprintf(fp, " %s", p11s_verify_signer_email(r, i, j));
		if (p11s_verify_signer_email_count(r, i) == 0)
			fprintf(fp, " (none in the Subject Alternative Name)");
		fprintf(fp, "\n  issuer:    %s\n", p11s_verify_signer_issuer(r, i));
		fprintf(fp, "  serial:    %s\n", p11s_verify_signer_serial(r, i));
		int now = p11s_verify_signer_valid_at(r, i, &na);
		fprintf(fp, "  validity:  until %s; %s at the signing time; %s at %s\n",
		        p11s_time_format(na, t1, sizeof(t1)),
		        yesno(p11s_verify_signer_valid_at_signing(r, i), "valid", "NOT valid", "?"),
		        yesno(now, "valid", na < at ? "EXPIRED" : "NOT valid", "?"),
		        p11s_time_format(at, t2, sizeof(t2)));
		fprintf(fp, "  chain:    ");
		for (size_t j = 0; j < p11s_verify_signer_chain_count(r, i); j++)
			fprintf(fp, "%s%s", j ? "\n             <- " : " ",
			        p11s_verify_signer_chain_subject(r, i, j));
		if (v == P11S_SIG_GOOD)
			fprintf(fp, "  (trusted)");
		fprintf(fp, "\n");
		if (rules != NULL) {
			fprintf(fp, "  rules:     %s%s\n",
			        p11s_verdict_accepted(rules) ? "accepted" : "rejected",
			        p11s_verdict_is_ca(rules) ? " (a CA certificate signed: the "
			                                    "end-entity rules were skipped)"
			                                  : "");
			for (size_t j = 0; j < p11s_verdict_check_count(rules); j++)
				if (p11s_verdict_check_result(rules, j) == P11S_CHECK_FAIL)
					fprintf(fp, "    fail %s: %s\n",
					        p11s_verdict_check_rule(rules, j),
					        p11s_verdict_check_message(rules, j));
			for (size_t j = 0; j < p11s_verdict_warning_count(rules); j++)
				fprintf(fp, "    warning: %s\n", p11s_verdict_warning(rules, j));
		}
	}
	switch (p11s_verify_report_sender_ok(r)) {
	case 1: {
		const char *by = NULL;

		for (size_t i = 0; i < p11s_verify_report_signer_count(r) && by == NULL; i++)
			by = p11s_verify_signer_sender_matched_by(r, i);
		fprintf(fp, "sender:      From %s is among the signer's addresses (%s)\n",
		        p11s_verify_report_from(r, 0),
		        by && strcmp(by, "subject-emailAddress") == 0
		            ? "in its subject's emailAddress, as RFC 8550 allows"
		            : "in its subjectAltName");
		break;
	}
	case 0:
		fprintf(fp, "sender:      NOT SIGNED BY ITS SENDER: From");
		for (size_t i = 0; i < p11s_verify_report_from_count(r); i++)
			fprintf(fp, " %s", p11s_verify_report_from(r, i));
		fprintf(fp, " is not among the signer's addresses\n");
		break;
	default:
		fprintf(fp, "sender:      no From header; not checked\n");
	}
}

int cmd_verify(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"trust", required_argument, NULL, 't'},
	    {"at", required_argument, NULL, 'a'},
	    {"in", required_argument, NULL, 'i'},
	    {"out", required_argument, NULL, 'o'},
	    {"force-output", no_argument, NULL, 'f'},
	    {"entity-only", no_argument, NULL, 'E'},
	    {"content", required_argument, NULL, 'C'},
	    {"signature", required_argument, NULL, 'S'},
	    {"inform", required_argument, NULL, 'I'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *in_path = NULL, *out_path = NULL, *content_path = NULL, *sig_path = NULL;
	p11s_outform inform = P11S_FORM_SMIME;
	BIO *sig = NULL;
	p11s_verify_opts vo = {0};
	p11s_verify_report *report = NULL;
	p11s_output *out = NULL;
	STACK_OF(X509) *trust = sk_X509_new_null();
	BIO *in = NULL;
	int force = 0, c, ret = 0, ntrust = 0;
	p11s_rc rc;
	FILE *rfp = stdout;

	if (trust == NULL) {
		fprintf(stderr, "p11smime: out of memory\n");
		return 4;
	}
	vo.trust = trust;
	while ((c = getopt_long(argc, argv, "i:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			ntrust++;
			ret = load_trust(cli, optarg, trust);
			if (ret != 0)
				goto done;
			break;
		case 'a':
			if (cli_parse_time(optarg, &vo.at) != 0) {
				ret = 2;
				goto done;
			}
			break;
		case 'i':
			in_path = optarg;
			break;
		case 'o':
			out_path = optarg;
			break;
		case 'f':
			force = 1;
			break;
		case 'C':
			content_path = optarg;
			break;
		case 'S':
			sig_path = optarg;
			break;
		case 'I':
			if (p11s_outform_from_name(optarg, 0, &inform, cli->err) != P11S_OK) {
				p11s_error_clear(cli->err);
				ret = cli_usage_error("verify", "--inform must be der or pem");
				goto done;
			}
			break;
		case 'E':
			vo.entity_only = 1;
			break;
		case 'h':
			help(stdout);
			goto done;
		default:
			ret = cli_usage_error("verify", "unknown option");
			goto done;
		}
	}
	if (optind < argc) {
		ret = cli_usage_error("verify", "unexpected argument '%s'", argv[optind]);
		goto done;
	}
	if (ntrust == 0) {
		ret = cli_usage_error("verify", "name the certificates you trust with --trust "
		                                "(p11smime never trusts the system store)");
		goto done;
	}
	if (content_path != NULL && sig_path == NULL) {
		ret = cli_usage_error("verify", "--content needs --signature");
		goto done;
	}
	if (sig_path != NULL && in_path != NULL) {
		ret = cli_usage_error("verify", "--signature takes the place of -i");
		goto done;
	}
	if (content_path != NULL && (in_path != NULL || out_path != NULL)) {
		ret =
		    cli_usage_error("verify", "--content/--signature take the place of -i and -o");
		goto done;
	}
	if (inform != P11S_FORM_SMIME && sig_path == NULL) {
		ret = cli_usage_error("verify", "--inform needs --signature");
		goto done;
	}
	if (vo.entity_only && out_path == NULL) {
		ret = cli_usage_error("verify", "--entity-only needs -o FILE");
		goto done;
	}
	if (force && out_path == NULL) {
		ret = cli_usage_error("verify", "--force-output needs -o FILE");
		goto done;
	}
	if (vo.at == 0)
		vo.at = time(NULL);
	/* The content has standard output: the report, text or JSON, goes to standard error. */
	if (out_path != NULL && cli_stdout_is_message(out_path))
		rfp = stderr;

	if (content_path != NULL) {
		rc = p11s_input_open(content_path, &in, cli->err);
		if (rc == P11S_OK)
			rc = p11s_input_open(sig_path, &sig, cli->err);
		if (rc == P11S_OK)
			rc = p11s_verify_detached(in, sig, inform, &vo, &report, cli->err);
		if (rc != P11S_OK) {
			ret = cli_fail(cli, rc);
			goto done;
		}
	}
	rc = report != NULL ? P11S_OK
	                    : p11s_input_open(sig_path ? sig_path : in_path, &in, cli->err);
	if (rc == P11S_OK && out_path != NULL)
		rc = p11s_output_open(out_path, &out, cli->err);
	/* --signature alone: an opaque SignedData, its content inside. */
	if (rc == P11S_OK && report == NULL && sig_path != NULL)
		rc = p11s_verify_opaque(in, inform, out ? p11s_output_bio(out) : NULL, &vo, &report,
		                        cli->err);
	else if (rc == P11S_OK && report == NULL)
		rc = p11s_verify(in, out ? p11s_output_bio(out) : NULL, &vo, &report, cli->err);
	if (rc != P11S_OK)
		rc = p11s_output_explain(out, rc, cli->err);
	if (rc != P11S_OK) {
		ret = cli_fail(cli, rc);
		goto done;
	}
	rc = p11s_verify_report_rc(report);
	if (cli->json)
		cli_report(report_verify_json(report), rfp == stderr);
	else
		print_report(rfp, report, vo.at);
	ret = p11s_rc_exit_code(rc);
	if (out != NULL && (rc == P11S_OK || force)) {
		int wret = cli_finish(cli, &out, P11S_OK);

		if (wret != 0)
			ret = wret;
		else if (rc != P11S_OK)
			fprintf(stderr, "p11smime: the content was written although the "
			                "signature is not good (--force-output)\n");
	} else if (out != NULL) {
		fprintf(stderr, "p11smime: the content was not written: the verdict is "
		                "not good (--force-output writes it anyway)\n");
	}
done:
	p11s_output_abort(out);
	p11s_verify_report_free(report);
	BIO_free_all(in);
	BIO_free_all(sig);
	sk_X509_pop_free(trust, X509_free);
	return ret;
}
