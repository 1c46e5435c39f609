/*
 * The streaming CMS reader alone (src/cms_stream.c): EnvelopedData and
 * AuthEnvelopedData framing, definite and indefinite lengths, chunked
 * content, the GCM spool and the two-pass replay.  The content key comes
 * from the fixture RSA key when the input is addressed to it (so seeds made
 * by make-corpus.sh decrypt for real); otherwise an all-zero key of the
 * declared cipher keeps the content path running.  The first byte picks the
 * encoding (DER, base64, PEM) and whether the second pass is a replay.
 * An input of odd length is decrypted on the helper thread from its first
 * byte (src/offload.h), as a message past 4 MiB is.
 */
#include "fuzz.h"

#include <openssl/cms.h>

#include "cms_stream.h"
#include "offload.h"
#include "p11smime/result.h"

static EVP_PKEY *key;
static X509 *cert;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	key = fuzz_key("rsa.key");
	cert = fuzz_cert("rsa.pem");
	return 0;
}

static int sink(void *user, const unsigned char *buf, size_t len)
{
	(void)user;
	(void)buf;
	(void)len;
	return 0;
}

/* A decryption context for the content: the real one, or a zero key. */
static EVP_CIPHER_CTX *content_ctx(p11i_cms_stream *s, CMS_ContentInfo *cms, BIO **chain)
{
	const X509_ALGOR *alg = p11i_cms_stream_content_alg(s);
	EVP_CIPHER_CTX *ctx = NULL;
	unsigned char zero[64] = {0};
	const EVP_CIPHER *c;
	BIO *dummy;

	ERR_clear_error();
	if (CMS_decrypt_set1_pkey_and_peer(cms, key, cert, NULL) &&
	    (dummy = BIO_new(BIO_s_null())) != NULL) {
		*chain = CMS_dataInit(cms, dummy);
		if (*chain != NULL && BIO_get_cipher_ctx(*chain, &ctx) > 0 && ctx != NULL)
			return ctx;
		if (*chain == NULL)
			BIO_free(dummy);
		BIO_free_all(*chain);
		*chain = NULL;
	}
	ERR_clear_error();
	if (alg == NULL || (c = EVP_get_cipherbyobj(alg->algorithm)) == NULL ||
	    EVP_CIPHER_get_key_length(c) > (int)sizeof(zero))
		return NULL;
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL || !EVP_DecryptInit_ex(ctx, c, NULL, zero, NULL) ||
	    EVP_CIPHER_asn1_to_param(ctx, alg->parameter) <= 0) {
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const p11i_cms_encoding encs[] = {P11I_CMS_DER, P11I_CMS_BASE64, P11I_CMS_PEM};
	p11i_cms_stream *s = NULL, *s2 = NULL;
	p11i_cms_replay *rp = NULL;
	CMS_ContentInfo *cms = NULL, *cms2 = NULL;
	EVP_CIPHER_CTX *ctx = NULL;
	BIO *in, *in2 = NULL, *chain = NULL;
	p11s_error *err;
	int mode, replay;

	if (size < 1)
		return 0;
	p11i_offload_start = size & 1 ? 0 : P11I_OFFLOAD_START;
	mode = data[0];
	replay = mode & 4;
	data++;
	size--;
	in = BIO_new_mem_buf(data, (int)size);
	err = p11s_error_new();
	if (p11i_cms_stream_new(in, encs[(mode & 3) % 3], &s, err) != P11S_OK ||
	    p11i_cms_stream_begin(s, &cms, err) != P11S_OK)
		goto out;
	(void)p11i_cms_stream_is_auth(s);
	ctx = content_ctx(s, cms, &chain);
	if (ctx == NULL)
		goto out;
	if (p11i_cms_stream_decrypt(s, ctx, sink, NULL, replay ? &rp : NULL, err) == P11S_OK &&
	    rp != NULL) {
		in2 = BIO_new_mem_buf(data, (int)size);
		if (p11i_cms_stream_new(in2, encs[(mode & 3) % 3], &s2, err) == P11S_OK &&
		    p11i_cms_stream_begin(s2, &cms2, err) == P11S_OK)
			p11i_cms_stream_replay(s2, rp, err);
	}
	(void)p11i_cms_stream_had_auth_attrs(s);
out:
	if (chain != NULL)
		BIO_free_all(chain);
	else
		EVP_CIPHER_CTX_free(ctx);
	p11i_cms_replay_free(rp);
	p11i_cms_stream_free(s2);
	p11i_cms_stream_free(s);
	BIO_free(in2);
	BIO_free(in);
	p11s_error_free(err);
	ERR_clear_error();
	return 0;
}
