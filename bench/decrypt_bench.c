/*
 * Bench helper for bench/decrypt.sh: the token's raw rate against
 * p11smime's in-process decrypt rate, same token, same key, same process.
 *
 *   decrypt_bench MODULE TOKEN_LABEL PIN_FILE CERT_PEM KEY_ID_HEX SECONDS
 *
 * Raw: what the token does per message, through the bare PKCS#11 function
 * list (a session logged in once): RSA keys, C_DecryptInit + C_Decrypt
 * (CKM_RSA_PKCS) of a 32-byte key encrypted to the certificate; EC keys,
 * C_DeriveKey (CKM_ECDH1_DERIVE with one peer point) plus the
 * C_GetAttributeValue of the derived secret and its C_DestroyObject, which
 * is what libp11 does for one ECDH.
 *
 * p11smime: p11s_decrypt_with_pkey() on a 4 KiB S/MIME-sized message made
 * in-process for the certificate (RSA: PKCS#1 v1.5; EC: ECDH X9.63 SHA-256;
 * both AES-256-GCM), the key opened once (p11s_key_open); and p11s_decrypt()
 * which also matches the recipients against the token's certificates on
 * every message, as the command does.
 *
 * Each loop runs for SECONDS; prints "name ops_per_s".
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/cms.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <p11-kit/pkcs11.h>

#include "p11smime/decrypt.h"
#include "p11smime/token.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *what, unsigned long rv)
{
	fprintf(stderr, "decrypt_bench: %s failed (0x%lx)\n", what, rv);
	exit(1);
}

static int hexval(int c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* ------------------------------------------------------- raw PKCS#11 */

static void raw(const char *module, const char *label, const char *pin, X509 *cert,
                const unsigned char *id, size_t idlen, double secs)
{
	CK_FUNCTION_LIST *fl;
	CK_RV (*get)(CK_FUNCTION_LIST **);
	CK_SLOT_ID slots[64], slot = 0;
	CK_ULONG nslots = 64, n;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_TOKEN_INFO ti;
	CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, (void *)id, idlen}};
	EVP_PKEY *pub = X509_get0_pubkey(cert);
	int is_rsa = EVP_PKEY_is_a(pub, "RSA"), found = 0;
	unsigned long ops = 0;
	double t0, t;
	void *dl = dlopen(module, RTLD_NOW | RTLD_LOCAL);

	if (dl == NULL ||
	    (get = (CK_RV(*)(CK_FUNCTION_LIST **))dlsym(dl, "C_GetFunctionList")) == NULL)
		die("dlopen", 0);
	if (get(&fl) != CKR_OK)
		die("C_GetFunctionList", 0);
	if (fl->C_Initialize(NULL) != CKR_OK)
		die("C_Initialize", 0);
	if (fl->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK)
		die("C_GetSlotList", 0);
	for (CK_ULONG i = 0; i < nslots; i++) {
		if (fl->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    strncmp((char *)ti.label, label, strlen(label)) == 0) {
			slot = slots[i];
			found = 1;
		}
	}
	if (!found)
		die("finding the token", 0);
	if (fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		die("C_OpenSession", 0);
	if (fl->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin)) != CKR_OK)
		die("C_Login", 0);
	if (fl->C_FindObjectsInit(s, find, 2) != CKR_OK ||
	    fl->C_FindObjects(s, &key, 1, &n) != CKR_OK || n != 1 ||
	    fl->C_FindObjectsFinal(s) != CKR_OK)
		die("finding the key", 0);

	if (is_rsa) {
		unsigned char cek[32], ct[1024], pt[1024];
		size_t ctlen = sizeof(ct);
		CK_ULONG ptlen;
		CK_MECHANISM m = {CKM_RSA_PKCS, NULL, 0};
		EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(pub, NULL);

		RAND_bytes(cek, sizeof(cek));
		if (EVP_PKEY_encrypt_init(pc) <= 0 ||
		    EVP_PKEY_encrypt(pc, ct, &ctlen, cek, 32) <= 0)
			die("RSA encryption", 0);
		EVP_PKEY_CTX_free(pc);
		t0 = now();
		do {
			ptlen = sizeof(pt);
			if (fl->C_DecryptInit(s, &m, key) != CKR_OK ||
			    fl->C_Decrypt(s, ct, ctlen, pt, &ptlen) != CKR_OK || ptlen != 32)
				die("C_Decrypt", 0);
			ops++;
		} while ((t = now()) - t0 < secs);
		printf("raw-C_Decrypt %.1f\n", (double)ops / (t - t0));
	} else {
		CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
		CK_KEY_TYPE gk = CKK_GENERIC_SECRET;
		CK_BBOOL f = CK_FALSE, tr = CK_TRUE;
		int bits = EVP_PKEY_get_bits(pub);
		CK_ULONG vlen = (CK_ULONG)(bits + 7) / 8;
		CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &f, 1},
		                       {CKA_CLASS, &sk, sizeof(sk)},
		                       {CKA_KEY_TYPE, &gk, sizeof(gk)},
		                       {CKA_VALUE_LEN, &vlen, sizeof(vlen)},
		                       {CKA_SENSITIVE, &f, 1},
		                       {CKA_EXTRACTABLE, &tr, 1}};
		unsigned char point[256], secret[128];
		size_t plen;
		CK_ECDH1_DERIVE_PARAMS p;
		CK_MECHANISM m = {CKM_ECDH1_DERIVE, &p, sizeof(p)};
		CK_OBJECT_HANDLE dk;
		CK_ATTRIBUTE val = {CKA_VALUE, secret, sizeof(secret)};
		char group[64];
		size_t glen;

		EVP_PKEY *eph;

		if (!EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof(group), &glen))
			die("curve of the certificate", 0);
		/* One peer point, as the p11smime loop decrypts one message over and over. */
		eph = EVP_EC_gen(group);
		plen = 0;
		if (eph == NULL || !EVP_PKEY_get_octet_string_param(eph, "encoded-pub-key", point,
		                                                    sizeof(point), &plen))
			die("ephemeral key", 0);
		EVP_PKEY_free(eph);
		t0 = now();
		do {
			p.kdf = CKD_NULL;
			p.ulSharedDataLen = 0;
			p.pSharedData = NULL;
			p.ulPublicDataLen = plen;
			p.pPublicData = point;
			val.ulValueLen = sizeof(secret);
			if (fl->C_DeriveKey(s, &m, key, tmpl, 6, &dk) != CKR_OK ||
			    fl->C_GetAttributeValue(s, dk, &val, 1) != CKR_OK ||
			    fl->C_DestroyObject(s, dk) != CKR_OK)
				die("C_DeriveKey", 0);
			ops++;
		} while ((t = now()) - t0 < secs);
		printf("raw-C_DeriveKey %.1f\n", (double)ops / (t - t0));
	}
	fl->C_Logout(s);
	fl->C_CloseSession(s);
	fl->C_Finalize(NULL);
	dlclose(dl);
}

/* ---------------------------------------------------------- p11smime */

static unsigned char *make_message(X509 *cert, size_t *len)
{
	unsigned char body[4096];
	BIO *in, *out = BIO_new(BIO_s_mem());
	int flags = CMS_BINARY | CMS_PARTIAL | CMS_KEY_PARAM;
	CMS_ContentInfo *cms = CMS_encrypt(NULL, NULL, EVP_aes_256_gcm(), flags);
	CMS_RecipientInfo *ri = CMS_add1_recipient_cert(cms, cert, flags);
	unsigned char *res;
	char *data;
	long n;

	memset(body, 'x', sizeof(body));
	memcpy(body, "Content-Type: text/plain\r\n\r\n", 28);
	in = BIO_new_mem_buf(body, sizeof(body));
	if (CMS_RecipientInfo_type(ri) == CMS_RECIPINFO_AGREE)
		EVP_PKEY_CTX_set_ecdh_kdf_md(CMS_RecipientInfo_get0_pkey_ctx(ri), EVP_sha256());
	if (!CMS_final(cms, in, NULL, flags) || !i2d_CMS_bio(out, cms))
		die("CMS_encrypt", 0);
	n = BIO_get_mem_data(out, &data);
	res = malloc((size_t)n);
	memcpy(res, data, (size_t)n);
	*len = (size_t)n;
	BIO_free(in);
	BIO_free(out);
	CMS_ContentInfo_free(cms);
	return res;
}

static void lib(const char *module, const char *pin_file, X509 *cert, const char *key_uri,
                double secs)
{
	p11s_objects_opts oo = {.login = 1, .certificates = 1, .private_keys = 1};
	p11s_decrypt_opts o = {.inform = P11S_INFORM_DER};
	p11s_error *err = p11s_error_new();
	p11s_object_list *list = NULL;
	const p11s_object *c;
	p11s_key *key = NULL;
	p11s_ctx *ctx = NULL;
	unsigned char *msg;
	size_t len;
	char spec[4096];
	unsigned long ops = 0;
	double t0, t;

	snprintf(spec, sizeof(spec), "file:%s", pin_file);
	if (p11s_ctx_new(module, &ctx, err) != P11S_OK ||
	    p11s_ctx_set_pin_source(ctx, spec, err) != P11S_OK ||
	    p11s_select_certificate(ctx, key_uri, &oo, &list, &c, err) != P11S_OK ||
	    p11s_key_open(ctx, p11s_object_private_key(c), &key, err) != P11S_OK) {
		fprintf(stderr, "decrypt_bench: %s\n", p11s_error_message(err));
		exit(1);
	}
	msg = make_message(cert, &len);
	for (int pass = 0; pass < 2; pass++) {
		ops = 0;
		t0 = now();
		do {
			BIO *in = BIO_new_mem_buf(msg, (int)len), *out = BIO_new(BIO_s_null());
			p11s_rc rc = pass == 0 ? p11s_decrypt_with_pkey(p11s_key_pkey(key), cert,
			                                                &o, in, out, NULL, err)
			                       : p11s_decrypt(ctx, &o, in, out, NULL, err);

			if (rc != P11S_OK) {
				fprintf(stderr, "decrypt_bench: %s\n", p11s_error_message(err));
				exit(1);
			}
			BIO_free(in);
			BIO_free(out);
			ops++;
		} while ((t = now()) - t0 < secs);
		printf("%s %.1f\n", pass == 0 ? "p11smime-open-key" : "p11smime-match-each",
		       (double)ops / (t - t0));
	}
	free(msg);
	p11s_key_free(key);
	p11s_object_list_free(list);
	p11s_ctx_free(ctx);
	p11s_error_free(err);
}

int main(int argc, char **argv)
{
	unsigned char id[64];
	size_t idlen = 0;
	char pin[256], uri[512];
	FILE *f;
	X509 *cert;
	double secs;

	if (argc != 7) {
		fprintf(stderr,
		        "usage: decrypt_bench MODULE TOKEN_LABEL PIN_FILE CERT_PEM KEY_ID_HEX "
		        "SECONDS\n");
		return 2;
	}
	f = fopen(argv[3], "r");
	if (f == NULL || fgets(pin, sizeof(pin), f) == NULL)
		die("reading the PIN", 0);
	fclose(f);
	pin[strcspn(pin, "\r\n")] = '\0';
	f = fopen(argv[4], "r");
	cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	if (cert == NULL)
		die("reading the certificate", 0);
	fclose(f);
	for (const char *h = argv[5]; h[0] && h[1] && idlen < sizeof(id); h += 2)
		id[idlen++] = (unsigned char)(hexval(h[0]) << 4 | hexval(h[1]));
	secs = atof(argv[6]);
	raw(argv[1], argv[2], pin, cert, id, idlen, secs);
	snprintf(uri, sizeof(uri), "pkcs11:token=%s;id=%%%s;type=cert", argv[2], argv[5]);
	lib(argv[1], argv[3], cert, uri, secs);
	X509_free(cert);
	return 0;
}
