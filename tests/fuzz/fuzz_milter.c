/*
 * What `p11smime milter` does with what an MTA sends: header fields given
 * as name and value (the value's line breaks made continuations), the
 * block parsed, From and the secured media types read, the body spooled,
 * the message signed with the EC fixture key and split back into header
 * edits and a new body; and the --signer-map parser on the raw input.
 *
 * Input: records separated by NUL bytes, name, value, name, value, ...; an
 * empty name ends the header fields and the rest of the input is the body.
 */
#include "fuzz.h"

#include "mime.h"
#include "p11smime/milter.h"
#include "p11smime/sign.h"

static p11s_signer *signer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	EVP_PKEY *key = fuzz_key("ec.key");
	X509 *cert = fuzz_cert("ec.pem");
	p11s_sign_opts so;

	(void)argc;
	(void)argv;
	p11s_sign_opts_init(&so);
	if (p11s_signer_new(cert, key, NULL, &so, &signer, NULL) != P11S_OK) {
		fprintf(stderr, "fuzz_milter: the EC fixture cannot sign\n");
		abort();
	}
	EVP_PKEY_free(key);
	X509_free(cert);
	return 0;
}

static void fuzz_map(const uint8_t *data, size_t size, p11s_error *err)
{
	p11s_signer_map *map = NULL;

	if (p11s_signer_map_parse("fuzz", (const char *)data, size, &map, err) == P11S_OK) {
		(void)p11s_signer_map_find_address(map, "a@example.org");
		(void)p11s_signer_map_find_domain(map, "a@example.org");
		for (size_t i = 0; i < p11s_signer_map_count(map); i++)
			(void)p11s_signer_map_entry(map, i, NULL, NULL);
	}
	p11s_signer_map_free(map);
	p11s_error_clear(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_str(data, size), *p = s, *end = s + size, *from = NULL;
	p11s_error *err = p11s_error_new();
	p11s_milter_msg *m = NULL;
	p11s_milter_signed *r = NULL;
	unsigned char buf[4096];
	size_t n;

	fuzz_map(data, size, err);
	if (p11s_milter_msg_new(&m, err) != P11S_OK)
		abort();
	/* Fields until an empty name or the end of the input. */
	while (p < end && *p != '\0') {
		char *name = p, *value = p + strlen(p) + 1;

		if (value > end)
			break;
		p = value + strlen(value) + 1;
		(void)p11s_milter_msg_header(m, name, value, err);
		p11s_error_clear(err);
	}
	if (p < end)
		p++;
	if (p11s_milter_msg_end_headers(m, err) == P11S_OK) {
		if (p11s_milter_msg_from(m, &from, err) == P11S_OK)
			free(from);
		(void)p11s_milter_msg_secured(m);
		if (p < end)
			(void)p11s_milter_msg_body(m, p, (size_t)(end - p), err);
		if (p11s_milter_msg_sign(m, signer, &r, err) == P11S_OK) {
			for (size_t i = 0; i < p11s_milter_signed_delete_count(r); i++)
				(void)p11s_milter_signed_delete(r, i, NULL);
			for (size_t i = 0; i < p11s_milter_signed_add_count(r); i++)
				(void)p11s_milter_signed_add(r, i, NULL);
			while (p11s_milter_signed_read(r, buf, sizeof(buf), &n, err) == P11S_OK &&
			       n > 0)
				;
		}
		p11s_milter_signed_free(r);
	}
	p11s_milter_msg_free(m);
	ERR_clear_error();
	p11s_error_free(err);
	free(s);
	return 0;
}
