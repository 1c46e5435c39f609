/*
 * Canonicalisation (what sign does to an entity): headers, then the body
 * through multipart descent, transfer-encoding choice, spooling and the
 * base64 and quoted-printable writers.  The first byte picks the header
 * classes and the line-end filter the output goes through.
 */
#include "fuzz.h"

#include "mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned mode;
	BIO *in, *out;
	p11i_headers *h = NULL;
	p11s_error *err;

	if (size < 1)
		return 0;
	mode = data[0];
	in = BIO_new_mem_buf(data + 1, (int)(size - 1));
	out = fuzz_null();
	err = p11s_error_new();
	if (mode & 4) {
		BIO *eol = p11i_bio_eol_new(mode & 8 ? P11I_EOL_LF : P11I_EOL_CRLF);

		if (eol != NULL)
			out = BIO_push(eol, out);
	}
	if (p11i_headers_read(in, 64 * 1024, &h, err) == 0)
		p11i_mime_canonicalize(h, mode & 1 ? P11I_HDR_ALL : P11I_HDR_CONTENT, in, out, err);
	p11i_headers_free(h);
	p11s_error_free(err);
	BIO_free_all(out);
	BIO_free(in);
	return 0;
}
