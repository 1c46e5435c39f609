/*
 * decrypt end to end with a software key: S/MIME framing (outer headers,
 * Content-Type, base64 or binary body), raw DER and PEM, recipient
 * matching, key recovery (RSA and ECDH fixtures), the content stream, the
 * inner entity and line-end conversion.  The first byte picks the form and
 * the options.  An input of odd length is decrypted on the helper thread
 * from its first byte (src/offload.h), as a message past 4 MiB is.
 */
#include "fuzz.h"

#include "report.h"
#include "offload.h"
#include "p11smime/decrypt.h"

static EVP_PKEY *rsa_key, *ec_key;
static X509 *rsa_cert, *ec_cert;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	rsa_key = fuzz_key("rsa.key");
	rsa_cert = fuzz_cert("rsa.pem");
	ec_key = fuzz_key("ec.key");
	ec_cert = fuzz_cert("ec.pem");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	p11s_decrypt_opts opts = {0};
	p11s_decrypt_report *r = NULL;
	p11s_error *err;
	BIO *in, *out;
	int mode;

	if (size < 1)
		return 0;
	p11i_offload_start = size & 1 ? 0 : P11I_OFFLOAD_START;
	mode = data[0];
	opts.inform = (p11s_decrypt_inform)((mode & 3) % 3);
	opts.keep_line_ends = (mode >> 2) & 1;
	opts.entity_only = (mode >> 3) & 1;
	opts.at = 1798761600; /* 2027-01-01: inside the fixtures' validity */
	in = BIO_new_mem_buf(data + 1, (int)(size - 1));
	out = fuzz_null();
	err = p11s_error_new();
	if (mode & 16)
		p11s_decrypt_with_pkey(ec_key, ec_cert, &opts, in, out, &r, err);
	else
		p11s_decrypt_with_pkey(rsa_key, rsa_cert, &opts, in, out, &r, err);
	if (r != NULL)
		free(report_decrypt_json(r));
	p11s_decrypt_report_free(r);
	p11s_error_free(err);
	BIO_free(out);
	BIO_free(in);
	ERR_clear_error();
	return 0;
}
