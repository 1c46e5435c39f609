/*
 * The parsers of what a user types: pkcs11: URIs (and their redaction for
 * messages), PIN and password sources, and times.  Nothing is read: the
 * source specs are only checked.
 */
#include "fuzz.h"

#include "p11.h"
#include "p11smime/token.h"
#include "p11smime/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_str(data, size);
	p11s_error *err = p11s_error_new();
	P11KitUri *uri = NULL;
	time_t t;

	if (p11i_uri_parse(s, &uri, err) == P11S_OK)
		p11_kit_uri_free(uri);
	free(p11i_uri_redact(s));
	p11s_pin_source_check(s, err);
	p11s_secret_source_check(s, P11S_SECRET_PASSWORD, err);
	p11s_time_parse(s, &t, err);
	p11s_error_free(err);
	free(s);
	return 0;
}
