/*
 * The MIME header reader and what reads field values: media types,
 * parameters (RFC 2231 sections included), transfer encodings, address
 * lists and their de-duplication across fields, and writing a block back.
 */
#include "fuzz.h"

#include "mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const addr_fields[] = {"From", "To", "Cc", "Sender", NULL};
	BIO *in = BIO_new_mem_buf(data, (int)size);
	p11i_headers *h = NULL;
	p11s_error *err = p11s_error_new();

	if (p11i_headers_read(in, 64 * 1024, &h, err) == 0) {
		char **addrs = NULL;
		BIO *out = fuzz_null();

		for (size_t i = 0; i < p11i_headers_count(h); i++) {
			char *v = p11i_headers_value(h, i), **a = NULL;
			size_t len;

			(void)p11i_headers_raw(h, i, &len);
			(void)p11i_header_class_of(p11i_headers_name(h, i));
			free(p11i_mime_media_type(v));
			free(p11i_mime_param(v, "boundary"));
			free(p11i_mime_param(v, "charset"));
			free(p11i_mime_param(v, "filename"));
			if (p11i_mime_addresses(v, &a, NULL, err) == 0)
				for (size_t k = 0; a[k] != NULL; k++)
					(void)p11i_mail_addr_equal(a[k], "A@example.org");
			p11s_strv_free(a);
			p11s_error_clear(err);
			free(v);
		}
		free(p11i_mime_transfer_encoding(h));
		if (p11i_headers_addresses(h, addr_fields, &addrs, NULL, err) == 0)
			p11s_strv_free(addrs);
		p11i_headers_remove(h, "Content-Type");
		p11i_headers_add(h, "X-Fuzz", "value", err);
		p11i_headers_write(h, P11I_HDR_ALL, out, err);
		BIO_free(out);
	}
	p11i_headers_free(h);
	p11s_error_free(err);
	BIO_free(in);
	return 0;
}
