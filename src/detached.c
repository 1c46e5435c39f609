/*
 * The hook shapes of mail clients: a MIME entity signed as the client
 * wrote it with only the CMS structure given back, and a detached
 * signature verified over two files.  Clients such as mutt and neomutt
 * build the multipart/signed themselves, so the bytes signed must be the
 * bytes they send: nothing here re-encodes the entity.
 */
#include <string.h>
#include <strings.h>

#include <openssl/buffer.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "common.h"
#include "hooks_internal.h"
#include "p11smime/hooks.h"
#include "mime.h"

p11s_rc p11s_outform_from_name(const char *name, int allow_smime, p11s_outform *out,
                               p11s_error *err)
{
	if (name != NULL && strcasecmp(name, "der") == 0)
		*out = P11S_FORM_DER;
	else if (name != NULL && strcasecmp(name, "pem") == 0)
		*out = P11S_FORM_PEM;
	else if (allow_smime && name != NULL && strcasecmp(name, "smime") == 0)
		*out = P11S_FORM_SMIME;
	else
		return p11i_err(err, P11S_E_USAGE, "unknown form '%s' (use %s)", name ? name : "",
		                allow_smime ? "der, pem or smime" : "der or pem");
	return P11S_OK;
}

/* Copy @p in to @p out through a LF-to-CRLF converter. */
static p11s_rc copy_crlf(BIO *in, BIO *out, const char *what, p11s_error *err)
{
	BIO *crlf = p11i_bio_eol_new(P11I_EOL_CRLF);
	p11s_rc rc = P11S_OK;
	char buf[16384];
	int n;

	if (crlf == NULL)
		return p11i_err_nomem(err);
	BIO_push(crlf, out);
	while ((n = BIO_read(in, buf, sizeof(buf))) > 0)
		if (BIO_write(crlf, buf, n) != n) {
			rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot take in the %s", what);
			break;
		}
	if (rc == P11S_OK && n < 0 && !BIO_eof(in))
		rc = p11i_err(err, P11S_E_IO, "cannot read the %s", what);
	if (rc == P11S_OK && BIO_flush(crlf) <= 0)
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot take in the %s", what);
	BIO_pop(crlf);
	BIO_free(crlf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}

/* The DER of @p cms, to @p out as DER or as PEM labelled PKCS7 (what openssl smime and gpgsm read).
 */
static p11s_rc write_cms(CMS_ContentInfo *cms, BIO *out, p11s_outform form, p11s_error *err)
{
	unsigned char *der = NULL;
	int len = i2d_CMS_ContentInfo(cms, &der);
	int ok;

	if (len <= 0)
		return p11i_err_ossl(err, P11S_E_CRYPTO, "cannot encode the signature");
	if (form == P11S_FORM_DER)
		ok = BIO_write(out, der, len) == len;
	else
		ok = PEM_write_bio(out, PEM_STRING_PKCS7, "", der, len) > 0;
	OPENSSL_free(der);
	if (!ok || BIO_flush(out) <= 0)
		return p11i_err(err, P11S_E_IO, "cannot write the signature");
	return P11S_OK;
}

p11s_rc p11s_signer_sign_entity(p11s_signer *s, BIO *in, BIO *out, int detached, p11s_outform form,
                                p11s_error *err)
{
	CMS_ContentInfo *cms;
	BIO *chain;
	p11s_rc rc;

	if (s == NULL || in == NULL || out == NULL)
		return p11i_err(err, P11S_E_USAGE, "nothing to sign");
	if (form != P11S_FORM_DER && form != P11S_FORM_PEM)
		return p11i_err(err, P11S_E_USAGE, "the signature alone is written as der or pem");
	cms = p11i_signer_cms_new(s, detached, err);
	if (cms == NULL)
		return p11s_error_rc(err);
	/* Detached: the digest BIOs end in a null sink; encapsulated: in a memory BIO. */
	chain = CMS_dataInit(cms, NULL);
	if (chain == NULL) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "cannot start the signature");
		goto out;
	}
	rc = copy_crlf(in, chain, "entity to sign", err);
	if (rc != P11S_OK)
		goto out;
	/* The token signs here. */
	if (!CMS_dataFinal(cms, chain)) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "the %s signature failed",
		                   p11s_signer_algorithm(s));
		goto out;
	}
	rc = write_cms(cms, out, form, err);
out:
	BIO_free_all(chain);
	CMS_ContentInfo_free(cms);
	ERR_clear_error();
	return rc;
}

/* ------------------------------------------------------------- verifying */

static p11s_rc slurp(BIO *in, BUF_MEM *buf, const char *what, p11s_error *err)
{
	char tmp[16384];
	int n;

	while ((n = BIO_read(in, tmp, sizeof(tmp))) > 0) {
		size_t len = buf->length;

		if (BUF_MEM_grow(buf, len + (size_t)n) == 0)
			return p11i_err_nomem(err);
		memcpy(buf->data + len, tmp, (size_t)n);
	}
	if (n < 0 && !BIO_eof(in))
		return p11i_err(err, P11S_E_IO, "cannot read the %s", what);
	return P11S_OK;
}

static int looks_pem(const BUF_MEM *b)
{
	size_t i = 0;

	while (i < b->length && (b->data[i] == ' ' || b->data[i] == '\t' || b->data[i] == '\r' ||
	                         b->data[i] == '\n'))
		i++;
	return b->length - i >= 10 && memcmp(b->data + i, "-----BEGIN", 10) == 0;
}

/* The signature's DER, from DER or PEM (PKCS7, CMS or "PKCS #7 SIGNED DATA"). */
static p11s_rc signature_der(BIO *sig, p11s_outform inform, unsigned char **der, long *len,
                             p11s_error *err)
{
	BUF_MEM *b = BUF_MEM_new();
	const unsigned char *p;
	CMS_ContentInfo *cms = NULL;
	p11s_rc rc;

	if (b == NULL)
		return p11i_err_nomem(err);
	rc = slurp(sig, b, "signature", err);
	if (rc != P11S_OK)
		goto out;
	if (b->length == 0) {
		rc = p11i_err(err, P11S_E_INPUT, "the signature file is empty");
		goto out;
	}
	if (inform == P11S_FORM_SMIME)
		inform = looks_pem(b) ? P11S_FORM_PEM : P11S_FORM_DER;
	if (inform == P11S_FORM_PEM) {
		BIO *mem = BIO_new_mem_buf(b->data, (int)b->length);
		char *name = NULL, *header = NULL;

		if (mem == NULL || !PEM_read_bio(mem, &name, &header, der, len)) {
			rc = p11i_err_ossl(err, P11S_E_INPUT,
			                   "the signature is not PEM (--inform pem)");
		} else if (strcmp(name, PEM_STRING_PKCS7) != 0 &&
		           strcmp(name, PEM_STRING_CMS) != 0 &&
		           strcmp(name, "PKCS #7 SIGNED DATA") != 0) {
			rc = p11i_err(err, P11S_E_INPUT,
			              "the PEM signature is a '%s', not PKCS7 or CMS", name);
			OPENSSL_free(*der);
			*der = NULL;
		}
		OPENSSL_free(name);
		OPENSSL_free(header);
		BIO_free(mem);
		if (rc != P11S_OK)
			goto out;
	} else {
		*der = OPENSSL_malloc(b->length);
		if (*der == NULL) {
			rc = p11i_err_nomem(err);
			goto out;
		}
		memcpy(*der, b->data, b->length);
		*len = (long)b->length;
	}
	p = *der;
	cms = d2i_CMS_ContentInfo(NULL, &p, *len);
	if (cms == NULL || p != *der + *len) {
		rc = p11i_err_ossl(err, P11S_E_INPUT,
		                   "the signature is not a CMS structure in %s (--inform der|pem)",
		                   inform == P11S_FORM_PEM ? "PEM" : "DER");
		OPENSSL_free(*der);
		*der = NULL;
	}
out:
	CMS_ContentInfo_free(cms);
	BUF_MEM_free(b);
	ERR_clear_error();
	return rc;
}

static int put(BIO *b, const char *s)
{
	int n = (int)strlen(s);

	return BIO_write(b, s, n) == n;
}

p11s_rc p11s_verify_detached(BIO *content, BIO *signature, p11s_outform inform,
                             const p11s_verify_opts *opts, p11s_verify_report **out,
                             p11s_error *err)
{
	unsigned char *der = NULL, rnd[16];
	char *hex = NULL, *head = NULL, *mid = NULL, *tail = NULL;
	BIO *msg = NULL, *b64 = NULL;
	long len = 0;
	p11s_rc rc;

	*out = NULL;
	if (content == NULL || signature == NULL)
		return p11i_err(err, P11S_E_USAGE, "a content and a signature are needed");
	rc = signature_der(signature, inform, &der, &len, err);
	if (rc != P11S_OK)
		return rc;
	/*
	 * The two files become the multipart/signed they came from, and the
	 * one verifier judges it: the same report whatever shape came in.
	 */
	if (RAND_bytes(rnd, sizeof(rnd)) != 1 || (hex = p11i_hex(rnd, sizeof(rnd))) == NULL) {
		rc = p11i_err_ossl(err, P11S_E_CRYPTO, "no random boundary");
		goto out;
	}
	head = p11i_asprintf("MIME-Version: 1.0\r\n"
	                     "Content-Type: multipart/signed; protocol=\"application/"
	                     "pkcs7-signature\"; boundary=\"=_p11s_%s\"\r\n"
	                     "\r\n"
	                     "--=_p11s_%s\r\n",
	                     hex, hex);
	mid = p11i_asprintf("\r\n--=_p11s_%s\r\n"
	                    "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"
	                    "Content-Transfer-Encoding: base64\r\n"
	                    "\r\n",
	                    hex);
	tail = p11i_asprintf("\r\n--=_p11s_%s--\r\n", hex);
	msg = BIO_new(BIO_s_mem());
	b64 = BIO_new(BIO_f_base64());
	if (head == NULL || mid == NULL || tail == NULL || msg == NULL || b64 == NULL) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	if (!put(msg, head)) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	rc = copy_crlf(content, msg, "signed content", err);
	if (rc != P11S_OK)
		goto out;
	BIO_push(b64, msg);
	if (!put(msg, mid) || BIO_write(b64, der, (int)len) != (int)len || BIO_flush(b64) <= 0 ||
	    !put(msg, tail)) {
		BIO_pop(b64);
		rc = p11i_err_nomem(err);
		goto out;
	}
	BIO_pop(b64);
	rc = p11s_verify(msg, NULL, opts, out, err);
out:
	BIO_free(b64);
	BIO_free(msg);
	OPENSSL_free(der);
	free(hex);
	free(head);
	free(mid);
	free(tail);
	return rc;
}

p11s_rc p11s_verify_opaque(BIO *signature, p11s_outform inform, BIO *content,
                           const p11s_verify_opts *opts, p11s_verify_report **out, p11s_error *err)
{
	static const char head[] = "MIME-Version: 1.0\r\n"
	                           "Content-Type: application/pkcs7-mime; smime-type=signed-data; "
	                           "name=\"smime.p7m\"\r\n"
	                           "Content-Transfer-Encoding: base64\r\n"
	                           "\r\n";
	unsigned char *der = NULL;
	BIO *msg = NULL, *b64 = NULL;
	p11s_verify_opts vo;
	long len = 0;
	p11s_rc rc;

	*out = NULL;
	if (signature == NULL)
		return p11i_err(err, P11S_E_USAGE, "a signature is needed");
	rc = signature_der(signature, inform, &der, &len, err);
	if (rc != P11S_OK)
		return rc;
	msg = BIO_new(BIO_s_mem());
	b64 = BIO_new(BIO_f_base64());
	if (msg == NULL || b64 == NULL || !put(msg, head)) {
		rc = p11i_err_nomem(err);
		goto out;
	}
	BIO_push(b64, msg);
	if (BIO_write(b64, der, (int)len) != (int)len || BIO_flush(b64) <= 0) {
		BIO_pop(b64);
		rc = p11i_err_nomem(err);
		goto out;
	}
	BIO_pop(b64);
	/* The hook wants the signed content itself: the wrapper's headers are ours, not mail's. */
	/* NULL: the defaults, as in p11s_verify(). */
	if (opts != NULL)
		vo = *opts;
	else
		memset(&vo, 0, sizeof(vo));
	vo.entity_only = 1;
	rc = p11s_verify(msg, content, &vo, out, err);
out:
	BIO_free(b64);
	BIO_free(msg);
	OPENSSL_free(der);
	return rc;
}
