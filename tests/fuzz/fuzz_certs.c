/*
 * Certificate files (PEM bundles, DER, PKCS#7, PKCS#12 with the empty
 * password or "fuzz") and then the rules engine on every certificate read,
 * with the fixture CA as the only anchor and the rest as intermediates;
 * the description (SANs, key usage) too.
 */
#include "fuzz.h"

#include "p11smime/certs.h"
#include "p11smime/certs.h"
#include "p11smime/rules.h"
#include "p11smime/validate.h"

static STACK_OF(X509) * anchors;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	anchors = sk_X509_new_null();
	if (anchors == NULL || !sk_X509_push(anchors, fuzz_cert("ca.pem")))
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	p11s_cert_list *list = NULL;
	p11s_error *err;
	int mode;

	if (size < 1)
		return 0;
	mode = data[0];
	err = p11s_error_new();
	if (p11s_certs_read_mem(data + 1, size - 1, "fuzz", mode & 1 ? "fuzz" : NULL, &list, err) ==
	    P11S_OK) {
		STACK_OF(X509) *untrusted = sk_X509_new_null();
		p11s_validate_opts vo;

		p11s_validate_opts_init(&vo);
		vo.at = 1798761600;
		vo.anchors = anchors;
		vo.untrusted = untrusted;
		(void)p11s_cert_list_format(list);
		for (size_t i = 0; i < p11s_cert_list_problem_count(list); i++)
			(void)p11s_cert_list_problem(list, i);
		for (size_t i = 0; untrusted && i < p11s_cert_list_count(list); i++)
			sk_X509_push(untrusted, p11s_cert_list_get(list, i));
		for (size_t i = 0; i < p11s_cert_list_count(list) && i < 8; i++) {
			X509 *x = p11s_cert_list_get(list, i);
			p11s_verdict *v = NULL;
			p11s_cert_info *info = NULL;
			p11s_key_facts kf;

			p11s_key_facts_init(&kf);
			if (mode & 2)
				p11s_key_facts_from_pkey(&kf, X509_get0_pubkey(x), x);
			if (p11s_validate(x, mode & 2 ? &kf : NULL, &vo, &v, err) == P11S_OK) {
				free(p11s_verdict_failures(v, 1));
				(void)p11s_verdict_can_sign(v);
				(void)p11s_verdict_can_encrypt(v);
			}
			p11s_verdict_free(v);
			if (p11s_cert_describe(x, &info, err) == P11S_OK)
				p11s_cert_info_free(info);
			free(p11s_cert_name_string(X509_get_subject_name(x)));
		}
		sk_X509_free(untrusted);
	}
	p11s_cert_list_free(list);
	p11s_error_free(err);
	ERR_clear_error();
	return 0;
}
