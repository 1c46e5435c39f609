/*
 * verify: a whole message (multipart/signed or signed-data, with or without
 * outer headers), the From header, signer and chain checks against the
 * fixture CA, and the report in words and JSON.
 */
#include "fuzz.h"

#include "report.h"
#include "p11smime/verify.h"

static STACK_OF(X509) * trust;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	trust = sk_X509_new_null();
	if (trust == NULL || !sk_X509_push(trust, fuzz_cert("ca.pem")))
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	p11s_verify_opts opts = {.trust = trust, .at = 1798761600};
	p11s_verify_report *r = NULL;
	p11s_error *err = p11s_error_new();
	BIO *in = BIO_new_mem_buf(data, (int)size), *content = fuzz_null();

	if (p11s_verify(in, content, &opts, &r, err) == P11S_OK && r != NULL) {
		(void)p11s_verify_report_summary(r);
		free(report_verify_json(r));
	}
	p11s_verify_report_free(r);
	p11s_error_free(err);
	BIO_free(content);
	BIO_free(in);
	ERR_clear_error();
	return 0;
}
