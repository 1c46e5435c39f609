/*
 * sign_and_validate: libp11smime in an application.
 *
 *   sign_and_validate MODULE PIN_SOURCE SIGNER MAIL OUT CERT [CA]
 *
 * Signs the mail in the file MAIL with the token key of SIGNER (a pkcs11:
 * URI or an e-mail address) and writes the signed mail to OUT, then judges
 * the certificate file CERT by the S/MIME rules (with CA as trust anchor,
 * if given) and prints the verdicts.  PIN_SOURCE is "file:PATH", "fd:N" or
 * "env:VAR".  Build it with nothing but pkg-config:
 *
 *   cc sign_and_validate.c $(pkg-config --cflags --libs p11smime)
 *
 * Exit status: 0 signed and every certificate accepted, 1 a certificate
 * rejected, 2 anything failed.
 */
#include <stdio.h>

#include <p11smime/io.h>
#include <p11smime/result.h>
#include <p11smime/rules.h>
#include <p11smime/sign.h>
#include <p11smime/token.h>
#include <p11smime/validate.h>

static int sign(const char *module, const char *pin_source, const char *signer, const char *mail,
                const char *out_path, p11s_error *err)
{
	p11s_ctx *ctx = NULL;
	p11s_signer *s = NULL;
	p11s_sign_opts opts;
	p11s_output *out = NULL;
	BIO *in = NULL;
	p11s_rc rc;

	/* One context per module; it may be shared by threads for signing and decrypting. */
	rc = p11s_ctx_new(module, &ctx, err);
	if (rc == P11S_OK)
		rc = p11s_ctx_set_pin_source(ctx, pin_source, err);
	/* The signer is prepared once: certificate chosen and checked, key opened, login done. */
	if (rc == P11S_OK) {
		p11s_sign_opts_init(&opts);
		opts.signer = signer;
		rc = p11s_signer_open(ctx, &opts, &s, err);
	}
	/* The output appears whole at commit, or not at all. */
	if (rc == P11S_OK)
		rc = p11s_input_open(mail, &in, err);
	if (rc == P11S_OK)
		rc = p11s_output_open(out_path, &out, err);
	if (rc == P11S_OK) {
		rc = p11s_signer_sign(s, in, p11s_output_bio(out), err);
		if (rc == P11S_OK) {
			rc = p11s_output_commit(out, err);
			out = NULL;
		}
	}
	if (rc == P11S_OK)
		printf("signed %s as %s (%s, %s)\n", mail, p11s_signer_subject(s),
		       p11s_signer_algorithm(s), p11s_signer_mechanism(s));
	p11s_output_abort(out);
	BIO_free_all(in);
	/* The signer uses the context: free it first. */
	p11s_signer_free(s);
	p11s_ctx_free(ctx);
	return rc;
}

static int validate(const char *cert, const char *ca, p11s_error *err)
{
	p11s_validation *v = NULL;
	p11s_rc rc;

	/* NULL options: judged now, default rules. */
	rc = p11s_validation_new(NULL, &v, err);
	if (rc == P11S_OK && ca != NULL)
		rc = p11s_validation_add_anchors(v, ca, err);
	if (rc == P11S_OK)
		rc = p11s_validation_add_file(v, cert, err);
	if (rc == P11S_OK)
		rc = p11s_validation_run(v, err);
	for (size_t i = 0; rc == P11S_OK && i < p11s_validation_count(v); i++) {
		const p11s_verdict *vd = p11s_validation_verdict(v, i);
		const char *why = NULL;
		p11s_check_result chain = p11s_verdict_chain(vd, &why);

		printf("%s #%zu: %s\n", p11s_validation_source(v, i), p11s_validation_index(v, i),
		       p11s_verdict_accepted(vd) ? "accepted" : "rejected");
		for (size_t c = 0; c < p11s_verdict_check_count(vd); c++)
			printf("  %s: %s (%s)\n", p11s_verdict_check_rule(vd, c),
			       p11s_check_result_name(p11s_verdict_check_result(vd, c)),
			       p11s_verdict_check_message(vd, c));
		printf("  chain: %s (%s)\n", p11s_check_result_name(chain), why ? why : "");
	}
	/* A file that could not be read is kept as an error of the run, not a failure of it. */
	for (size_t i = 0; rc == P11S_OK && i < p11s_validation_error_count(v); i++)
		printf("%s\n", p11s_validation_error_message(v, i));
	if (rc == P11S_OK)
		rc = p11s_validation_status(v);
	p11s_validation_free(v);
	return rc;
}

int main(int argc, char **argv)
{
	p11s_error *err = p11s_error_new();
	p11s_rc rc;

	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: %s MODULE PIN_SOURCE SIGNER MAIL OUT CERT [CA]\n", argv[0]);
		return 2;
	}
	rc = sign(argv[1], argv[2], argv[3], argv[4], argv[5], err);
	if (rc != P11S_OK) {
		fprintf(stderr, "sign: %s\n", p11s_error_message(err));
		p11s_error_free(err);
		return 2;
	}
	rc = validate(argv[6], argc == 8 ? argv[7] : NULL, err);
	if (rc != P11S_OK && *p11s_error_message(err) != '\0')
		fprintf(stderr, "validate: %s\n", p11s_error_message(err));
	p11s_error_free(err);
	return rc == P11S_OK ? 0 : rc == P11S_E_REJECTED ? 1 : 2;
}
