/*
 * Bench helper: put many DER certificates on a token in one process.
 * pkcs11-tool --write-object costs a process and a SoftHSM object-store load
 * per certificate (over 100 ms each with hundreds of objects); this makes
 * bench/list.sh's setup take seconds instead of minutes.  Built by list.sh.
 *
 *   import_certs MODULE TOKEN_LABEL PIN_FILE FILE.der...
 *
 * Each certificate gets CKA_SUBJECT/ISSUER/SERIAL_NUMBER from its DER, CKA_ID = 2 bytes big-endian
 * 0x1000 + its position and CKA_LABEL = the file's base name without ".der".
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include <p11-kit/pkcs11.h>

static unsigned char *slurp(const char *path, long *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (*len = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)*len);
		if (buf && fread(buf, 1, (size_t)*len, f) != (size_t)*len) {
			free(buf);
			buf = NULL;
		}
	}
	fclose(f);
	return buf;
}

static int die(const char *what, CK_RV rv)
{
	fprintf(stderr, "import_certs: %s failed: 0x%lx\n", what, rv);
	return 1;
}

int main(int argc, char **argv)
{
	CK_FUNCTION_LIST *fl;
	CK_RV (*get)(CK_FUNCTION_LIST **);
	CK_SLOT_ID slots[64];
	CK_ULONG nslots = 64, i;
	CK_SESSION_HANDLE s;
	CK_RV rv;
	char pin[128];
	FILE *pf;
	void *dl;
	int slot = -1;

	if (argc < 5) {
		fprintf(stderr, "usage: import_certs MODULE TOKEN_LABEL PIN_FILE FILE.der...\n");
		return 2;
	}
	dl = dlopen(argv[1], RTLD_NOW);
	if (!dl || !(get = (CK_RV(*)(CK_FUNCTION_LIST **))dlsym(dl, "C_GetFunctionList"))) {
		fprintf(stderr, "import_certs: cannot load %s\n", argv[1]);
		return 1;
	}
	if ((rv = get(&fl)) != CKR_OK || (rv = fl->C_Initialize(NULL)) != CKR_OK)
		return die("C_Initialize", rv);
	if ((rv = fl->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK)
		return die("C_GetSlotList", rv);
	for (i = 0; i < nslots && slot < 0; i++) {
		CK_TOKEN_INFO ti;
		char label[33];
		size_t n = strlen(argv[2]);

		if (fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		memcpy(label, ti.label, 32);
		label[32] = '\0';
		if (n <= 32 && !strncmp(label, argv[2], n) && strspn(label + n, " ") == 32 - n)
			slot = (int)i;
	}
	if (slot < 0) {
		fprintf(stderr, "import_certs: no token labelled %s\n", argv[2]);
		return 1;
	}
	pf = fopen(argv[3], "r");
	if (!pf || !fgets(pin, sizeof(pin), pf)) {
		fprintf(stderr, "import_certs: cannot read %s\n", argv[3]);
		return 1;
	}
	fclose(pf);
	pin[strcspn(pin, "\r\n")] = '\0';
	if ((rv = fl->C_OpenSession(slots[slot], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
	                            &s)) != CKR_OK)
		return die("C_OpenSession", rv);
	if ((rv = fl->C_Login(s, CKU_USER, (unsigned char *)pin, strlen(pin))) != CKR_OK)
		return die("C_Login", rv);

	for (int a = 4; a < argc; a++) {
		CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
		CK_CERTIFICATE_TYPE ct = CKC_X_509;
		CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
		unsigned id_num = 0x1000u + (unsigned)(a - 4);
		unsigned char id[2] = {(unsigned char)(id_num >> 8), (unsigned char)id_num};
		const char *base = strrchr(argv[a], '/');
		char label[128];
		long len = 0;
		unsigned char *der = slurp(argv[a], &len);
		CK_OBJECT_HANDLE h;
		const unsigned char *p = der;
		unsigned char *subj = NULL, *iss = NULL, *ser = NULL;
		int subj_len, iss_len, ser_len;
		X509 *x;

		if (!der || !(x = d2i_X509(NULL, &p, len))) {
			fprintf(stderr, "import_certs: cannot read a certificate from %s\n",
			        argv[a]);
			return 1;
		}
		subj_len = i2d_X509_NAME(X509_get_subject_name(x), &subj);
		iss_len = i2d_X509_NAME(X509_get_issuer_name(x), &iss);
		ser_len = i2d_ASN1_INTEGER(X509_get_serialNumber(x), &ser);
		X509_free(x);
		if (subj_len <= 0 || iss_len <= 0 || ser_len <= 0) {
			fprintf(stderr, "import_certs: cannot encode the names of %s\n", argv[a]);
			return 1;
		}
		snprintf(label, sizeof(label), "%s", base ? base + 1 : argv[a]);
		if (strlen(label) > 4 && !strcmp(label + strlen(label) - 4, ".der"))
			label[strlen(label) - 4] = '\0';
		{
			CK_ATTRIBUTE t[] = {
			    {CKA_CLASS, &cls, sizeof(cls)},
			    {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
			    {CKA_TOKEN, &yes, sizeof(yes)},
			    {CKA_PRIVATE, &no, sizeof(no)},
			    {CKA_ID, id, sizeof(id)},
			    {CKA_LABEL, label, strlen(label)},
			    {CKA_VALUE, der, (CK_ULONG)len},
			    {CKA_SUBJECT, subj, (CK_ULONG)subj_len},
			    {CKA_ISSUER, iss, (CK_ULONG)iss_len},
			    {CKA_SERIAL_NUMBER, ser, (CK_ULONG)ser_len},
			};

			rv = fl->C_CreateObject(s, t, sizeof(t) / sizeof(t[0]), &h);
		}
		free(der);
		OPENSSL_free(subj);
		OPENSSL_free(iss);
		OPENSSL_free(ser);
		if (rv != CKR_OK)
			return die("C_CreateObject", rv);
	}
	fl->C_Logout(s);
	fl->C_CloseSession(s);
	fl->C_Finalize(NULL);
	return 0;
}
