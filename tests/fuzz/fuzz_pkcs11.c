/*
 * A PKCS#11 module is input too.  The mock module (tests/mock, loaded once)
 * serves objects made from the fuzz input: any class, attribute values and
 * lengths that lie (2^60, one short, one long, unavailable, sensitive).
 * Each input goes through object enumeration, pairing, URI building, the
 * JSON listing, key facts and the certificate description.
 */
#include "fuzz.h"

#include <dlfcn.h>

#include "p11smime/certs.h"
#include "report.h"
#include "p11smime/rules.h"
#include "p11smime/token.h"

static p11s_ctx *ctx;
static int (*load)(const unsigned char *data, size_t len);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	p11s_error *err = p11s_error_new();
	void *dl;

	(void)argc;
	(void)argv;
	unsetenv("P11S_MOCK_FLAGS");
	unsetenv("P11S_MOCK_CERT");
	unsetenv("P11S_MOCK_KEY");
	unsetenv("P11S_MOCK_LOG");
	if (p11s_ctx_new(P11S_FUZZ_MOCK, &ctx, err) != P11S_OK) {
		fprintf(stderr, "fuzz: %s\n", p11s_error_message(err));
		abort();
	}
	/* Already loaded by p11s_ctx_new(): the same handle, the same module state. */
	dl = dlopen(P11S_FUZZ_MOCK, RTLD_NOW | RTLD_NOLOAD);
	load = dl ? (int (*)(const unsigned char *, size_t))dlsym(dl, "p11i_mock_fuzz_load") : NULL;
	if (load == NULL) {
		fprintf(stderr, "fuzz: %s has no p11i_mock_fuzz_load\n", P11S_FUZZ_MOCK);
		abort();
	}
	p11s_error_free(err);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	p11s_objects_opts opts = {0};
	p11s_object_list *list = NULL;
	p11s_error *err = p11s_error_new();

	load(data, size);
	if (p11s_objects(ctx, NULL, &opts, &list, err) == P11S_OK) {
		for (size_t i = 0; i < p11s_object_list_count(list); i++) {
			const p11s_object *o = p11s_object_list_get(list, i);
			const unsigned char *der;
			size_t len;

			(void)p11s_object_uri(o);
			(void)p11s_object_label(o);
			(void)p11s_object_id(o, &len);
			(void)p11s_object_pairing(o);
			(void)p11s_object_key_bits(o);
			(void)p11s_object_key_curve(o);
			(void)p11s_object_private_key(o);
			der = p11s_object_value(o, &len);
			if (p11s_object_get_class(o) == P11S_OBJ_CERTIFICATE && der != NULL) {
				p11s_cert_info *info = NULL;
				p11s_key_facts kf;

				p11s_key_facts_from_token(&kf, o);
				if (p11s_cert_describe_der(der, len, &info, err) == P11S_OK)
					p11s_cert_info_free(info);
			}
		}
		free(report_objects_json(list));
	}
	p11s_object_list_free(list);
	p11s_error_free(err);
	ERR_clear_error();
	return 0;
}
