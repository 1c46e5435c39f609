/*
 * The token's own signing rate: C_SignInit/C_Sign in a loop on one logged-in
 * session, nothing else.  For bench/agent.sh.
 *
 *   csign MODULE TOKEN_LABEL PIN_FILE ID_HEX rsa|ec SECONDS [THREADS]
 *
 * rsa: CKM_RSA_PKCS over a SHA-256 DigestInfo (what a CMS signature asks
 * of the token); ec: CKM_ECDSA over a 32-byte hash.  Prints signatures per
 * second.  With THREADS > 1, as many threads each sign on a session of
 * their own at once (the module told CKF_OS_LOCKING_OK): what the token
 * gives a batch's workers, its own locks included.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, CK_RV rv)
{
	fprintf(stderr, "csign: %s failed: 0x%lx\n", what, (unsigned long)rv);
	exit(1);
}

/* What every signing loop shares. */
static CK_FUNCTION_LIST_PTR fl;
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE key;
static CK_MECHANISM mech = {CKM_RSA_PKCS, NULL, 0};
static unsigned char in[64];
static CK_ULONG inlen;
static double secs;

/* Sign in a loop on session *@p arg (NULL: a session of its own) for secs; the count. */
static void *loop(void *arg)
{
	CK_SESSION_HANDLE s = arg != NULL ? *(CK_SESSION_HANDLE *)arg : CK_INVALID_HANDLE;
	unsigned char sig[1024];
	CK_ULONG siglen;
	long count = 0;
	double t0;

	if (arg == NULL && fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		die("C_OpenSession", 0);
	t0 = now();
	while (now() - t0 < secs) {
		CK_RV rv = fl->C_SignInit(s, &mech, key);

		if (rv != CKR_OK)
			die("C_SignInit", rv);
		siglen = sizeof(sig);
		rv = fl->C_Sign(s, in, inlen, sig, &siglen);
		if (rv != CKR_OK)
			die("C_Sign", rv);
		count++;
	}
	if (arg == NULL)
		fl->C_CloseSession(s);
	return (void *)count;
}

int main(int argc, char **argv)
{
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
	CK_SLOT_ID slots[64];
	CK_ULONG nslots = 64, n;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_C_INITIALIZE_ARGS ia = {.flags = CKF_OS_LOCKING_OK};
	unsigned char id[64];
	CK_ULONG idlen = 0;
	char pin[256];
	FILE *pf;
	void *h;
	double t0;
	long count = 0;
	int threads = 1;
	pthread_t tids[64];
	/* SHA-256 DigestInfo prefix, then the hash. */
	static const unsigned char di[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
	                                   0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
	                                   0x01, 0x05, 0x00, 0x04, 0x20};

	if (argc != 7 && argc != 8) {
		fprintf(
		    stderr,
		    "usage: csign MODULE TOKEN_LABEL PIN_FILE ID_HEX rsa|ec SECONDS [THREADS]\n");
		return 2;
	}
	secs = atof(argv[6]);
	if (argc == 8)
		threads = atoi(argv[7]);
	if (threads < 1 || threads > 64)
		threads = 1;
	for (const char *p = argv[4]; p[0] && p[1] && idlen < sizeof(id); p += 2) {
		unsigned v;

		sscanf(p, "%2x", &v);
		id[idlen++] = (unsigned char)v;
	}
	memset(in, 0x5a, sizeof(in));
	if (strcmp(argv[5], "rsa") == 0) {
		memcpy(in, di, sizeof(di));
		inlen = sizeof(di) + 32;
	} else {
		mech.mechanism = CKM_ECDSA;
		inlen = 32;
	}
	pf = fopen(argv[3], "r");
	if (pf == NULL || fgets(pin, sizeof(pin), pf) == NULL)
		return 1;
	fclose(pf);
	pin[strcspn(pin, "\r\n")] = '\0';

	h = dlopen(argv[1], RTLD_NOW);
	if (h == NULL) {
		fprintf(stderr, "csign: %s\n", dlerror());
		return 1;
	}
	*(void **)&get = dlsym(h, "C_GetFunctionList");
	if (get == NULL || get(&fl) != CKR_OK)
		return 1;
	if (fl->C_Initialize(&ia) != CKR_OK)
		return 1;
	if (fl->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK)
		return 1;
	for (CK_ULONG i = 0; i < nslots && s == CK_INVALID_HANDLE; i++) {
		CK_TOKEN_INFO ti;
		char label[33];

		if (fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		memcpy(label, ti.label, 32);
		label[32] = '\0';
		for (int j = 31; j >= 0 && label[j] == ' '; j--)
			label[j] = '\0';
		if (strcmp(label, argv[2]) == 0 &&
		    fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
			die("C_OpenSession", 0);
		slot = slots[i];
	}
	if (s == CK_INVALID_HANDLE) {
		fprintf(stderr, "csign: no token '%s'\n", argv[2]);
		return 1;
	}
	if (fl->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) != CKR_OK)
		die("C_Login", 0);
	{
		CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, id, idlen}};

		if (fl->C_FindObjectsInit(s, t, 2) != CKR_OK ||
		    fl->C_FindObjects(s, &key, 1, &n) != CKR_OK || n != 1)
			die("finding the key", 0);
		fl->C_FindObjectsFinal(s);
	}
	t0 = now();
	if (threads == 1) {
		count = (long)loop(&s);
	} else {
		for (int i = 0; i < threads; i++)
			if (pthread_create(&tids[i], NULL, loop, NULL) != 0)
				die("pthread_create", 0);
		for (int i = 0; i < threads; i++) {
			void *c;

			pthread_join(tids[i], &c);
			count += (long)c;
		}
	}
	printf("%.1f\n", (double)count / (now() - t0));
	fl->C_Logout(s);
	fl->C_CloseSession(s);
	fl->C_Finalize(NULL);
	return 0;
}
