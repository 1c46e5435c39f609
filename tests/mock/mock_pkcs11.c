/*
 * A PKCS#11 v2.40 module for tests: one slot, one token ("mock"), and the
 * token faults SoftHSM cannot produce.  Behaviour comes from the
 * environment, read at C_Initialize:
 *
 *   P11S_MOCK_FLAGS  comma list:
 *     final-try       CKF_USER_PIN_FINAL_TRY (and COUNT_LOW)
 *     locked          CKF_USER_PIN_LOCKED; C_Login -> CKR_PIN_LOCKED
 *     to-be-changed   CKF_USER_PIN_TO_BE_CHANGED
 *     count-low       CKF_USER_PIN_COUNT_LOW
 *     uninitialized   no CKF_TOKEN_INITIALIZED; C_OpenSession -> CKR_TOKEN_NOT_RECOGNIZED
 *     removed         slot without CKF_TOKEN_PRESENT; C_GetTokenInfo and
 *                     C_OpenSession -> CKR_TOKEN_NOT_PRESENT
 *     open-session-fails  C_OpenSession -> CKR_DEVICE_ERROR
 *     protected-auth  CKF_PROTECTED_AUTHENTICATION_PATH; C_Login with a NULL PIN works
 *     always-auth     the private key has CKA_ALWAYS_AUTHENTICATE: C_Sign and
 *                     C_Decrypt need C_Login(CKU_CONTEXT_SPECIFIC) after their Init
 *     huge-length     a hostile module: CKA_LABEL's length is 2^60
 *     lying-length    a hostile module: the certificate's CKA_VALUE length is one
 *                     byte short, and a read of it claims a byte more than the
 *                     buffer it was given
 *     find-forever    C_FindObjects never runs dry: every call fills the batch
 *   P11S_MOCK_REMOVED_FILE  while this file exists the token is out, as with
 *                    "removed"; taking it out closes every session and logs
 *                    out (C_* on an old session -> CKR_DEVICE_REMOVED while it is out,
 *                    CKR_SESSION_HANDLE_INVALID once it is back), as a card
 *                    pulled and put back; for the long-running agent and milter
 *   P11S_MOCK_PIN    the user PIN (default 123456); a wrong one -> CKR_PIN_INCORRECT
 *   P11S_MOCK_CERT   PEM certificate, served with CKA_ID 01
 *   P11S_MOCK_KEY    PEM RSA private key (private, sensitive, not extractable,
 *                    CKA_ID 01) and its public key; C_Sign (CKM_RSA_PKCS,
 *                    CKM_RSA_X_509) and C_Decrypt are real, done with OpenSSL
 *   P11S_MOCK_LOG    every call is appended there, one line each: the function
 *                    and its key arguments ("C_Login user_type=1 pin_len=6")
 *
 * Fuzzing (tests/fuzz/fuzz_pkcs11.c): p11i_mock_fuzz_load(data, len), looked
 * up with dlsym, replaces the token's objects with ones read from fuzz
 * input (see there for the format): any class, any attribute values, and
 * lengths that lie in the ways a broken module's do.
 *
 * Without P11S_MOCK_CERT/KEY the token is empty.  Functions it has no use
 * for return CKR_FUNCTION_NOT_SUPPORTED.  Single-threaded use only, which
 * is all the tests need.
 */
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* OpenSSL first: p11-kit's compatibility names (#define value pValue, ...)
 * must not rename fields inside OpenSSL's headers. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <p11-kit/pkcs11.h>

#define MOCK_SLOT    0
#define MAX_SESSIONS 32
#define MAX_FOUND    8

enum {
	F_FINAL_TRY = 1 << 0,
	F_LOCKED = 1 << 1,
	F_TO_BE_CHANGED = 1 << 2,
	F_COUNT_LOW = 1 << 3,
	F_UNINITIALIZED = 1 << 4,
	F_REMOVED = 1 << 5,
	F_OPEN_FAILS = 1 << 6,
	F_PROTECTED = 1 << 7,
	F_ALWAYS_AUTH = 1 << 8,
	F_HUGE_LENGTH = 1 << 9,
	F_LYING_LENGTH = 1 << 10,
	F_FIND_FOREVER = 1 << 11,
	F_HOSTILE_SLOT = 1 << 12, /* a slot description with an escape sequence and a newline */
};

enum { H_CERT = 1, H_PUB = 2, H_PRIV = 3, N_OBJECTS = 3 };

/* How a fuzzed attribute's reads misbehave. */
enum lie { LIE_NONE, LIE_HUGE, LIE_SHORT, LIE_LONG, LIE_UNAVAILABLE, LIE_SENSITIVE, N_LIES };

struct attr {
	CK_ATTRIBUTE_TYPE type;
	unsigned char *val;
	CK_ULONG len;
	int sensitive;
	enum lie lie;
};

struct object {
	int present;
	int private_obj;
	struct attr attrs[40];
	size_t n;
};

enum op { OP_NONE, OP_SIGN, OP_DECRYPT };

struct session {
	int open;
	CK_FLAGS flags;
	CK_OBJECT_HANDLE found[MAX_FOUND];
	size_t nfound, pos;
	int finding;
	enum op op;
	CK_MECHANISM_TYPE mech;
	int context_login;
};

static struct {
	int initialized;
	unsigned flags;
	char pin[64];
	const char *log_path;
	const char *removed_file;
	int logged_in;
	EVP_PKEY *key;
	struct object objs[N_OBJECTS + 1];
	struct session sessions[MAX_SESSIONS + 1];
} m;

/*
 * One call at a time: the library says CKF_OS_LOCKING_OK and calls from
 * several threads (a batch's workers, the agent's clients), so the module
 * must lock for itself, as a real one does.  Recursive, held until the
 * entry point returns.
 */
static pthread_mutex_t mock_mutex = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static int mock_lock_now(void)
{
	pthread_mutex_lock(&mock_mutex);
	return 1;
}
static void mock_unlock(int *locked)
{
	if (*locked)
		pthread_mutex_unlock(&mock_mutex);
}
#define MOCK_LOCKED __attribute__((cleanup(mock_unlock), unused)) int mock_locked_ = mock_lock_now()

static void mlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mlog(const char *fmt, ...)
{
	FILE *f;
	va_list ap;

	if (!m.log_path)
		return;
	f = fopen(m.log_path, "a");
	if (!f)
		return;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

/*
 * Out of its slot: by the flag, or while P11S_MOCK_REMOVED_FILE exists.  A
 * removal seen here ends every session and the login, as on a real reader.
 */
static int removed(void)
{
	if (m.flags & F_REMOVED)
		return 1;
	if (m.removed_file == NULL || access(m.removed_file, F_OK) != 0)
		return 0;
	memset(m.sessions, 0, sizeof(m.sessions));
	m.logged_in = 0;
	return 1;
}

/* ------------------------------------------------------------- objects */

static int add_attr(struct object *o, CK_ATTRIBUTE_TYPE type, const void *val, CK_ULONG len,
                    int sensitive)
{
	struct attr *a;

	if (o->n >= sizeof(o->attrs) / sizeof(o->attrs[0]))
		return -1;
	a = &o->attrs[o->n];
	a->val = malloc(len ? len : 1);
	if (!a->val)
		return -1;
	if (len)
		memcpy(a->val, val, len);
	a->type = type;
	a->len = len;
	a->sensitive = sensitive;
	o->n++;
	return 0;
}

static int add_ulong(struct object *o, CK_ATTRIBUTE_TYPE type, CK_ULONG v)
{
	return add_attr(o, type, &v, sizeof(v), 0);
}

static int add_bool(struct object *o, CK_ATTRIBUTE_TYPE type, int v)
{
	CK_BBOOL b = v ? CK_TRUE : CK_FALSE;

	return add_attr(o, type, &b, sizeof(b), 0);
}

/* Takes ownership of @p der, which an i2d_ function allocated (len < 0: failed). */
static int add_der(struct object *o, CK_ATTRIBUTE_TYPE type, unsigned char *der, int len)
{
	int rc = len > 0 ? add_attr(o, type, der, (CK_ULONG)len, 0) : -1;

	OPENSSL_free(der);
	return rc;
}

static int add_bn(struct object *o, CK_ATTRIBUTE_TYPE type, const char *param, int sensitive)
{
	BIGNUM *bn = NULL;
	unsigned char *buf;
	int len, rc = -1;

	if (!EVP_PKEY_get_bn_param(m.key, param, &bn))
		return sensitive ? 0 : -1; /* a key without CRT parts is still a key */
	len = BN_num_bytes(bn);
	buf = malloc(len ? len : 1);
	if (buf) {
		BN_bn2bin(bn, buf);
		rc = add_attr(o, type, buf, (CK_ULONG)len, sensitive);
		OPENSSL_cleanse(buf, len);
		free(buf);
	}
	BN_clear_free(bn);
	return rc;
}

static const unsigned char obj_id[] = {0x01};
static const char obj_label[] = "mock";

static int add_common(struct object *o, CK_OBJECT_CLASS cls, int private_obj)
{
	o->present = 1;
	o->private_obj = private_obj;
	if (add_ulong(o, CKA_CLASS, cls) || add_bool(o, CKA_TOKEN, 1) ||
	    add_bool(o, CKA_PRIVATE, private_obj) || add_bool(o, CKA_MODIFIABLE, 0) ||
	    add_attr(o, CKA_LABEL, obj_label, sizeof(obj_label) - 1, 0) ||
	    add_attr(o, CKA_ID, obj_id, sizeof(obj_id), 0))
		return -1;
	return 0;
}

static int load_cert(const char *path)
{
	struct object *o = &m.objs[H_CERT];
	FILE *f = fopen(path, "r");
	X509 *x;
	int rc = -1;

	if (!f)
		return -1;
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		return -1;
	if (add_common(o, CKO_CERTIFICATE, 0) || add_ulong(o, CKA_CERTIFICATE_TYPE, CKC_X_509) ||
	    add_bool(o, CKA_TRUSTED, 0) || add_ulong(o, CKA_CERTIFICATE_CATEGORY, 0))
		goto out;
	{
		unsigned char *der = NULL;
		int len = i2d_X509_NAME(X509_get_subject_name(x), &der);

		if (add_der(o, CKA_SUBJECT, der, len))
			goto out;
		der = NULL;
		len = i2d_X509_NAME(X509_get_issuer_name(x), &der);
		if (add_der(o, CKA_ISSUER, der, len))
			goto out;
		der = NULL;
		len = i2d_ASN1_INTEGER(X509_get_serialNumber(x), &der);
		if (add_der(o, CKA_SERIAL_NUMBER, der, len))
			goto out;
		der = NULL;
		len = i2d_X509(x, &der);
		if (add_der(o, CKA_VALUE, der, len))
			goto out;
	}
	rc = 0;
out:
	X509_free(x);
	return rc;
}

static int add_key_common(struct object *o, CK_OBJECT_CLASS cls, int private_obj)
{
	CK_ULONG bits = (CK_ULONG)EVP_PKEY_get_bits(m.key);

	if (add_common(o, cls, private_obj) || add_ulong(o, CKA_KEY_TYPE, CKK_RSA) ||
	    add_bool(o, CKA_LOCAL, 0) || add_bool(o, CKA_DERIVE, 0) ||
	    add_ulong(o, CKA_KEY_GEN_MECHANISM, CK_UNAVAILABLE_INFORMATION) ||
	    add_attr(o, CKA_START_DATE, "", 0, 0) || add_attr(o, CKA_END_DATE, "", 0, 0) ||
	    add_bn(o, CKA_MODULUS, OSSL_PKEY_PARAM_RSA_N, 0) ||
	    add_bn(o, CKA_PUBLIC_EXPONENT, OSSL_PKEY_PARAM_RSA_E, 0))
		return -1;
	if (cls == CKO_PUBLIC_KEY && add_ulong(o, CKA_MODULUS_BITS, bits))
		return -1;
	{
		unsigned char *der = NULL;
		int len = i2d_PUBKEY(m.key, &der);

		if (add_der(o, CKA_PUBLIC_KEY_INFO, der, len))
			return -1;
	}
	/* The certificate's subject, as keys imported with it carry. */
	if (m.objs[H_CERT].present) {
		for (size_t i = 0; i < m.objs[H_CERT].n; i++) {
			struct attr *a = &m.objs[H_CERT].attrs[i];

			if (a->type == CKA_SUBJECT && add_attr(o, CKA_SUBJECT, a->val, a->len, 0))
				return -1;
		}
	}
	return 0;
}

static int load_key(const char *path)
{
	struct object *pub = &m.objs[H_PUB], *priv = &m.objs[H_PRIV];
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	m.key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!m.key || EVP_PKEY_get_base_id(m.key) != EVP_PKEY_RSA)
		return -1;

	if (add_key_common(pub, CKO_PUBLIC_KEY, 0) || add_bool(pub, CKA_ENCRYPT, 1) ||
	    add_bool(pub, CKA_VERIFY, 1) || add_bool(pub, CKA_VERIFY_RECOVER, 0) ||
	    add_bool(pub, CKA_WRAP, 0) || add_bool(pub, CKA_TRUSTED, 0))
		return -1;

	if (add_key_common(priv, CKO_PRIVATE_KEY, 1) || add_bool(priv, CKA_SENSITIVE, 1) ||
	    add_bool(priv, CKA_EXTRACTABLE, 0) || add_bool(priv, CKA_ALWAYS_SENSITIVE, 0) ||
	    add_bool(priv, CKA_NEVER_EXTRACTABLE, 0) || add_bool(priv, CKA_DECRYPT, 1) ||
	    add_bool(priv, CKA_SIGN, 1) || add_bool(priv, CKA_SIGN_RECOVER, 0) ||
	    add_bool(priv, CKA_UNWRAP, 0) || add_bool(priv, CKA_WRAP_WITH_TRUSTED, 0) ||
	    add_bool(priv, CKA_ALWAYS_AUTHENTICATE, (m.flags & F_ALWAYS_AUTH) != 0) ||
	    add_bn(priv, CKA_PRIVATE_EXPONENT, OSSL_PKEY_PARAM_RSA_D, 1) ||
	    add_bn(priv, CKA_PRIME_1, OSSL_PKEY_PARAM_RSA_FACTOR1, 1) ||
	    add_bn(priv, CKA_PRIME_2, OSSL_PKEY_PARAM_RSA_FACTOR2, 1) ||
	    add_bn(priv, CKA_EXPONENT_1, OSSL_PKEY_PARAM_RSA_EXPONENT1, 1) ||
	    add_bn(priv, CKA_EXPONENT_2, OSSL_PKEY_PARAM_RSA_EXPONENT2, 1) ||
	    add_bn(priv, CKA_COEFFICIENT, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 1))
		return -1;
	return 0;
}

static void free_objects(void)
{
	for (size_t h = 1; h <= N_OBJECTS; h++) {
		for (size_t i = 0; i < m.objs[h].n; i++) {
			OPENSSL_cleanse(m.objs[h].attrs[i].val, m.objs[h].attrs[i].len);
			free(m.objs[h].attrs[i].val);
		}
	}
	EVP_PKEY_free(m.key);
	m.key = NULL;
	memset(m.objs, 0, sizeof(m.objs));
}

static struct object *visible(CK_OBJECT_HANDLE h)
{
	if (h < 1 || h > N_OBJECTS || !m.objs[h].present)
		return NULL;
	if (m.objs[h].private_obj && !m.logged_in)
		return NULL;
	return &m.objs[h];
}

static struct attr *find_attr(struct object *o, CK_ATTRIBUTE_TYPE type)
{
	for (size_t i = 0; i < o->n; i++)
		if (o->attrs[i].type == type)
			return &o->attrs[i];
	return NULL;
}

/* ----------------------------------------------------------- lifecycle */

static unsigned parse_flags(const char *s)
{
	static const struct {
		const char *name;
		unsigned flag;
	} names[] = {
	    {"final-try", F_FINAL_TRY},           {"locked", F_LOCKED},
	    {"to-be-changed", F_TO_BE_CHANGED},   {"count-low", F_COUNT_LOW},
	    {"uninitialized", F_UNINITIALIZED},   {"removed", F_REMOVED},
	    {"open-session-fails", F_OPEN_FAILS}, {"protected-auth", F_PROTECTED},
	    {"always-auth", F_ALWAYS_AUTH},       {"huge-length", F_HUGE_LENGTH},
	    {"lying-length", F_LYING_LENGTH},     {"find-forever", F_FIND_FOREVER},
	    {"hostile-slot", F_HOSTILE_SLOT},
	};
	unsigned flags = 0;
	char *copy, *tok, *save = NULL;

	if (!s || !*s)
		return 0;
	copy = strdup(s);
	if (!copy)
		return 0;
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		size_t i;

		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (!strcmp(tok, names[i].name))
				break;
		if (i < sizeof(names) / sizeof(names[0]))
			flags |= names[i].flag;
		else
			fprintf(stderr, "mock_pkcs11: unknown flag '%s' in P11S_MOCK_FLAGS\n", tok);
	}
	free(copy);
	return flags;
}

static CK_RV m_Initialize(void *args)
{
	MOCK_LOCKED;
	const char *pin, *cert, *key;

	m.log_path = getenv("P11S_MOCK_LOG");
	m.removed_file = getenv("P11S_MOCK_REMOVED_FILE");
	mlog("C_Initialize");
	if (m.initialized)
		return CKR_CRYPTOKI_ALREADY_INITIALIZED;
	if (args) {
		CK_C_INITIALIZE_ARGS *ia = args;

		if (ia->pReserved)
			return CKR_ARGUMENTS_BAD;
	}
	m.flags = parse_flags(getenv("P11S_MOCK_FLAGS"));
	pin = getenv("P11S_MOCK_PIN");
	snprintf(m.pin, sizeof(m.pin), "%s", pin && *pin ? pin : "123456");
	cert = getenv("P11S_MOCK_CERT");
	key = getenv("P11S_MOCK_KEY");
	if (cert && *cert && load_cert(cert)) {
		fprintf(stderr, "mock_pkcs11: cannot load certificate %s\n", cert);
		free_objects();
		return CKR_GENERAL_ERROR;
	}
	if (key && *key && load_key(key)) {
		fprintf(stderr, "mock_pkcs11: cannot load RSA key %s\n", key);
		free_objects();
		return CKR_GENERAL_ERROR;
	}
	m.logged_in = 0;
	memset(m.sessions, 0, sizeof(m.sessions));
	m.initialized = 1;
	return CKR_OK;
}

static CK_RV m_Finalize(void *reserved)
{
	MOCK_LOCKED;
	mlog("C_Finalize");
	if (!m.initialized)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (reserved)
		return CKR_ARGUMENTS_BAD;
	free_objects();
	OPENSSL_cleanse(m.pin, sizeof(m.pin));
	m.initialized = 0;
	return CKR_OK;
}

static void pad(unsigned char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	memset(dst, ' ', len);
	memcpy(dst, src, n < len ? n : len);
}

static CK_RV m_GetInfo(CK_INFO *info)
{
	MOCK_LOCKED;
	mlog("C_GetInfo");
	if (!m.initialized)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (!info)
		return CKR_ARGUMENTS_BAD;
	memset(info, 0, sizeof(*info));
	info->cryptokiVersion.major = 2;
	info->cryptokiVersion.minor = 40;
	pad(info->manufacturerID, sizeof(info->manufacturerID), "p11smime tests");
	pad(info->libraryDescription, sizeof(info->libraryDescription), "p11smime mock module");
	info->libraryVersion.major = 1;
	return CKR_OK;
}

#define CHECK_INIT()                                         \
	do {                                                 \
		if (!m.initialized)                          \
			return CKR_CRYPTOKI_NOT_INITIALIZED; \
	} while (0)

static CK_RV m_GetSlotList(CK_BBOOL present, CK_SLOT_ID *list, CK_ULONG *n)
{
	MOCK_LOCKED;
	CK_ULONG have;

	mlog("C_GetSlotList token_present=%u", (unsigned)present);
	CHECK_INIT();
	if (!n)
		return CKR_ARGUMENTS_BAD;
	have = (present && removed()) ? 0 : 1;
	if (!list) {
		*n = have;
		return CKR_OK;
	}
	if (*n < have) {
		*n = have;
		return CKR_BUFFER_TOO_SMALL;
	}
	if (have)
		list[0] = MOCK_SLOT;
	*n = have;
	return CKR_OK;
}

static CK_RV m_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO *info)
{
	MOCK_LOCKED;
	mlog("C_GetSlotInfo slot=%lu", slot);
	CHECK_INIT();
	if (slot != MOCK_SLOT)
		return CKR_SLOT_ID_INVALID;
	if (!info)
		return CKR_ARGUMENTS_BAD;
	memset(info, 0, sizeof(*info));
	/* A reader's name comes from the device: this one clears a terminal, forges a line. */
	pad(info->slotDescription, sizeof(info->slotDescription),
	    (m.flags & F_HOSTILE_SLOT) ? "mock\x1b[2J\np11smime: forged" : "p11smime mock slot");
	pad(info->manufacturerID, sizeof(info->manufacturerID), "p11smime tests");
	info->flags = CKF_REMOVABLE_DEVICE | CKF_HW_SLOT;
	if (!removed())
		info->flags |= CKF_TOKEN_PRESENT;
	return CKR_OK;
}

static CK_RV m_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO *info)
{
	MOCK_LOCKED;
	mlog("C_GetTokenInfo slot=%lu", slot);
	CHECK_INIT();
	if (slot != MOCK_SLOT)
		return CKR_SLOT_ID_INVALID;
	if (removed())
		return CKR_TOKEN_NOT_PRESENT;
	if (!info)
		return CKR_ARGUMENTS_BAD;
	memset(info, 0, sizeof(*info));
	pad(info->label, sizeof(info->label), "mock");
	pad(info->manufacturerID, sizeof(info->manufacturerID), "p11smime tests");
	pad(info->model, sizeof(info->model), "mock");
	pad(info->serialNumber, sizeof(info->serialNumber), "0001");
	info->flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED;
	if (!(m.flags & F_UNINITIALIZED))
		info->flags |= CKF_TOKEN_INITIALIZED;
	if (m.flags & F_FINAL_TRY)
		info->flags |= CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_COUNT_LOW;
	if (m.flags & F_COUNT_LOW)
		info->flags |= CKF_USER_PIN_COUNT_LOW;
	if (m.flags & F_LOCKED)
		info->flags |= CKF_USER_PIN_LOCKED;
	if (m.flags & F_TO_BE_CHANGED)
		info->flags |= CKF_USER_PIN_TO_BE_CHANGED;
	if (m.flags & F_PROTECTED)
		info->flags |= CKF_PROTECTED_AUTHENTICATION_PATH;
	info->ulMaxSessionCount = MAX_SESSIONS;
	info->ulMaxRwSessionCount = MAX_SESSIONS;
	for (size_t i = 1; i <= MAX_SESSIONS; i++) {
		if (m.sessions[i].open) {
			info->ulSessionCount++;
			if (m.sessions[i].flags & CKF_RW_SESSION)
				info->ulRwSessionCount++;
		}
	}
	info->ulMaxPinLen = 32;
	info->ulMinPinLen = 4;
	info->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
	info->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
	info->hardwareVersion.major = 1;
	info->firmwareVersion.major = 1;
	pad(info->utcTime, sizeof(info->utcTime), "");
	return CKR_OK;
}

/* ---------------------------------------------------------- mechanisms */

static const CK_MECHANISM_TYPE mechs[] = {CKM_RSA_PKCS, CKM_RSA_X_509};

static CK_RV m_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE *list, CK_ULONG *n)
{
	MOCK_LOCKED;
	const CK_ULONG have = sizeof(mechs) / sizeof(mechs[0]);

	mlog("C_GetMechanismList slot=%lu", slot);
	CHECK_INIT();
	if (slot != MOCK_SLOT)
		return CKR_SLOT_ID_INVALID;
	if (removed())
		return CKR_TOKEN_NOT_PRESENT;
	if (!n)
		return CKR_ARGUMENTS_BAD;
	if (!list) {
		*n = have;
		return CKR_OK;
	}
	if (*n < have) {
		*n = have;
		return CKR_BUFFER_TOO_SMALL;
	}
	memcpy(list, mechs, sizeof(mechs));
	*n = have;
	return CKR_OK;
}

static CK_RV m_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO *info)
{
	MOCK_LOCKED;
	mlog("C_GetMechanismInfo slot=%lu mechanism=0x%lx", slot, type);
	CHECK_INIT();
	if (slot != MOCK_SLOT)
		return CKR_SLOT_ID_INVALID;
	if (removed())
		return CKR_TOKEN_NOT_PRESENT;
	if (!info)
		return CKR_ARGUMENTS_BAD;
	if (type != CKM_RSA_PKCS && type != CKM_RSA_X_509)
		return CKR_MECHANISM_INVALID;
	info->ulMinKeySize = 1024;
	info->ulMaxKeySize = 4096;
	info->flags = CKF_HW | CKF_SIGN | CKF_DECRYPT;
	return CKR_OK;
}

/* ------------------------------------------------------------ sessions */

static struct session *get_session(CK_SESSION_HANDLE h)
{
	if (h < 1 || h > MAX_SESSIONS || !m.sessions[h].open)
		return NULL;
	return &m.sessions[h];
}

#define GET_SESSION(s, h)                                  \
	do {                                               \
		CHECK_INIT();                              \
		if (removed())                             \
			return CKR_DEVICE_REMOVED;         \
		if (!((s) = get_session(h)))               \
			return CKR_SESSION_HANDLE_INVALID; \
	} while (0)

static CK_RV m_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify,
                           CK_SESSION_HANDLE *out)
{
	MOCK_LOCKED;
	mlog("C_OpenSession slot=%lu flags=0x%lx", slot, flags);
	CHECK_INIT();
	if (slot != MOCK_SLOT)
		return CKR_SLOT_ID_INVALID;
	if (removed())
		return CKR_TOKEN_NOT_PRESENT;
	if (m.flags & F_OPEN_FAILS)
		return CKR_DEVICE_ERROR;
	if (m.flags & F_UNINITIALIZED)
		return CKR_TOKEN_NOT_RECOGNIZED;
	if (!(flags & CKF_SERIAL_SESSION))
		return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
	if (!out)
		return CKR_ARGUMENTS_BAD;
	for (CK_SESSION_HANDLE h = 1; h <= MAX_SESSIONS; h++) {
		if (!m.sessions[h].open) {
			memset(&m.sessions[h], 0, sizeof(m.sessions[h]));
			m.sessions[h].open = 1;
			m.sessions[h].flags = flags;
			*out = h;
			return CKR_OK;
		}
	}
	return CKR_SESSION_COUNT;
}

static int any_session_open(void)
{
	for (size_t i = 1; i <= MAX_SESSIONS; i++)
		if (m.sessions[i].open)
			return 1;
	return 0;
}

static CK_RV m_CloseSession(CK_SESSION_HANDLE h)
{
	MOCK_LOCKED;
	struct session *s;

	mlog("C_CloseSession session=%lu", h);
	GET_SESSION(s, h);
	s->open = 0;
	/* Closing the application's last session logs it out. */
	if (!any_session_open())
		m.logged_in = 0;
	return CKR_OK;
}

static CK_RV m_CloseAllSessions(CK_SLOT_ID slot)
{
	MOCK_LOCKED;
	mlog("C_CloseAllSessions slot=%lu", slot);
	CHECK_INIT();
	if (slot != MOCK_SLOT)
		return CKR_SLOT_ID_INVALID;
	memset(m.sessions, 0, sizeof(m.sessions));
	m.logged_in = 0;
	return CKR_OK;
}

static CK_RV m_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO *info)
{
	MOCK_LOCKED;
	struct session *s;
	int rw;

	mlog("C_GetSessionInfo session=%lu", h);
	GET_SESSION(s, h);
	if (!info)
		return CKR_ARGUMENTS_BAD;
	rw = (s->flags & CKF_RW_SESSION) != 0;
	info->slotID = MOCK_SLOT;
	info->flags = s->flags;
	info->ulDeviceError = 0;
	if (m.logged_in)
		info->state = rw ? CKS_RW_USER_FUNCTIONS : CKS_RO_USER_FUNCTIONS;
	else
		info->state = rw ? CKS_RW_PUBLIC_SESSION : CKS_RO_PUBLIC_SESSION;
	return CKR_OK;
}

static CK_RV m_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, unsigned char *pin, CK_ULONG len)
{
	MOCK_LOCKED;
	struct session *s;

	if (pin)
		mlog("C_Login user_type=%lu pin_len=%lu", user, len);
	else
		mlog("C_Login user_type=%lu pin=NULL", user);
	GET_SESSION(s, h);
	if (user != CKU_USER && user != CKU_CONTEXT_SPECIFIC)
		return user == CKU_SO ? CKR_PIN_INCORRECT : CKR_USER_TYPE_INVALID;
	if (m.flags & F_LOCKED)
		return CKR_PIN_LOCKED;
	if (user == CKU_USER && m.logged_in)
		return CKR_USER_ALREADY_LOGGED_IN;
	if (user == CKU_CONTEXT_SPECIFIC) {
		if (!m.logged_in)
			return CKR_USER_NOT_LOGGED_IN;
		if (s->op == OP_NONE)
			return CKR_OPERATION_NOT_INITIALIZED;
	}
	if (!pin) {
		if (!(m.flags & F_PROTECTED))
			return CKR_ARGUMENTS_BAD;
	} else if (len != strlen(m.pin) || memcmp(pin, m.pin, len) != 0) {
		return CKR_PIN_INCORRECT;
	}
	if (user == CKU_USER)
		m.logged_in = 1;
	else
		s->context_login = 1;
	return CKR_OK;
}

static CK_RV m_Logout(CK_SESSION_HANDLE h)
{
	MOCK_LOCKED;
	struct session *s;

	mlog("C_Logout session=%lu", h);
	GET_SESSION(s, h);
	(void)s;
	if (!m.logged_in)
		return CKR_USER_NOT_LOGGED_IN;
	m.logged_in = 0;
	return CKR_OK;
}

/* ------------------------------------------------------------- objects */

/*
 * A fuzzed attribute's answer.  Writes never pass the caller's buffer: the
 * lies are in the lengths reported, which is what a caller must survive.
 */
static CK_RV lie(const struct attr *a, CK_ATTRIBUTE *t, CK_RV rv)
{
	switch (a->lie) {
	case LIE_HUGE:
		t->ulValueLen = t->pValue ? CK_UNAVAILABLE_INFORMATION : (CK_ULONG)1 << 60;
		return t->pValue ? CKR_BUFFER_TOO_SMALL : rv;
	case LIE_SHORT: /* the size query says one less; a read claims one more than given */
	case LIE_LONG:  /* the size query says one more; a read fills what fits */
		if (!t->pValue) {
			t->ulValueLen =
			    a->lie == LIE_SHORT ? (a->len ? a->len - 1 : 0) : a->len + 1;
			return rv;
		}
		memcpy(t->pValue, a->val, t->ulValueLen < a->len ? t->ulValueLen : a->len);
		if (a->lie == LIE_SHORT)
			t->ulValueLen++;
		else if (t->ulValueLen > a->len)
			t->ulValueLen = a->len;
		return rv;
	case LIE_UNAVAILABLE:
		t->ulValueLen = CK_UNAVAILABLE_INFORMATION;
		return rv;
	case LIE_SENSITIVE:
	default:
		t->ulValueLen = CK_UNAVAILABLE_INFORMATION;
		return CKR_ATTRIBUTE_SENSITIVE;
	}
}

static CK_RV m_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE *tmpl,
                                 CK_ULONG n)
{
	MOCK_LOCKED;
	struct session *s;
	struct object *o;
	CK_RV rv = CKR_OK;

	mlog("C_GetAttributeValue session=%lu object=%lu count=%lu", h, obj, n);
	GET_SESSION(s, h);
	(void)s;
	if (!(o = visible(obj)))
		return CKR_OBJECT_HANDLE_INVALID;
	if (!tmpl && n)
		return CKR_ARGUMENTS_BAD;
	for (CK_ULONG i = 0; i < n; i++) {
		struct attr *a = find_attr(o, tmpl[i].type);

		if (!a) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_ATTRIBUTE_TYPE_INVALID;
		} else if (a->lie != LIE_NONE) {
			rv = lie(a, &tmpl[i], rv);
		} else if ((m.flags & F_HUGE_LENGTH) && a->type == CKA_LABEL && !tmpl[i].pValue) {
			tmpl[i].ulValueLen = (CK_ULONG)1 << 60;
		} else if ((m.flags & F_LYING_LENGTH) && a->type == CKA_VALUE && !a->sensitive) {
			if (!tmpl[i].pValue) {
				tmpl[i].ulValueLen = a->len - 1;
			} else {
				memcpy(tmpl[i].pValue, a->val,
				       tmpl[i].ulValueLen < a->len ? tmpl[i].ulValueLen : a->len);
				tmpl[i].ulValueLen++;
			}
		} else if (a->sensitive) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_ATTRIBUTE_SENSITIVE;
		} else if (!tmpl[i].pValue) {
			tmpl[i].ulValueLen = a->len;
		} else if (tmpl[i].ulValueLen < a->len) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_BUFFER_TOO_SMALL;
		} else {
			memcpy(tmpl[i].pValue, a->val, a->len);
			tmpl[i].ulValueLen = a->len;
		}
	}
	/* PKCS#11 gives one code for several problems; sensitive and
	 * type-invalid outrank buffer-too-small in what callers act on. */
	return rv;
}

static int matches(struct object *o, const CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	for (CK_ULONG i = 0; i < n; i++) {
		struct attr *a = find_attr(o, tmpl[i].type);

		if (!a || a->sensitive || a->len != tmpl[i].ulValueLen ||
		    (a->len && memcmp(a->val, tmpl[i].pValue, a->len)))
			return 0;
	}
	return 1;
}

static CK_RV m_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG n)
{
	MOCK_LOCKED;
	struct session *s;
	char desc[256] = "";
	size_t off = 0;

	for (CK_ULONG i = 0; tmpl && i < n && off < sizeof(desc) - 32; i++)
		off += (size_t)snprintf(desc + off, sizeof(desc) - off, " 0x%lx", tmpl[i].type);
	mlog("C_FindObjectsInit session=%lu count=%lu attrs=%s", h, n, off ? desc + 1 : "");
	GET_SESSION(s, h);
	if (s->finding)
		return CKR_OPERATION_ACTIVE;
	if (!tmpl && n)
		return CKR_ARGUMENTS_BAD;
	s->nfound = s->pos = 0;
	for (CK_OBJECT_HANDLE o = 1; o <= N_OBJECTS; o++)
		if (visible(o) && matches(&m.objs[o], tmpl, n))
			s->found[s->nfound++] = o;
	s->finding = 1;
	return CKR_OK;
}

static CK_RV m_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n)
{
	MOCK_LOCKED;
	struct session *s;

	mlog("C_FindObjects session=%lu max=%lu", h, max);
	GET_SESSION(s, h);
	if (!s->finding)
		return CKR_OPERATION_NOT_INITIALIZED;
	if (!out || !n)
		return CKR_ARGUMENTS_BAD;
	*n = 0;
	if ((m.flags & F_FIND_FOREVER) && s->nfound > 0) {
		while (*n < max)
			out[(*n)++] = s->found[0];
		return CKR_OK;
	}
	while (*n < max && s->pos < s->nfound)
		out[(*n)++] = s->found[s->pos++];
	return CKR_OK;
}

static CK_RV m_FindObjectsFinal(CK_SESSION_HANDLE h)
{
	MOCK_LOCKED;
	struct session *s;

	mlog("C_FindObjectsFinal session=%lu", h);
	GET_SESSION(s, h);
	if (!s->finding)
		return CKR_OPERATION_NOT_INITIALIZED;
	s->finding = 0;
	return CKR_OK;
}

/* ---------------------------------------------------- sign and decrypt */

static CK_RV op_init(CK_SESSION_HANDLE h, enum op op, CK_MECHANISM *mech, CK_OBJECT_HANDLE key)
{
	struct session *s;

	GET_SESSION(s, h);
	if (s->op != OP_NONE)
		return CKR_OPERATION_ACTIVE;
	if (!mech)
		return CKR_ARGUMENTS_BAD;
	if (key != H_PRIV || !m.objs[H_PRIV].present)
		return CKR_KEY_HANDLE_INVALID;
	if (!m.logged_in)
		return CKR_USER_NOT_LOGGED_IN;
	if (mech->mechanism != CKM_RSA_PKCS && mech->mechanism != CKM_RSA_X_509)
		return CKR_MECHANISM_INVALID;
	s->op = op;
	s->mech = mech->mechanism;
	s->context_login = 0;
	return CKR_OK;
}

static CK_RV m_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM *mech, CK_OBJECT_HANDLE key)
{
	MOCK_LOCKED;
	mlog("C_SignInit session=%lu mechanism=0x%lx key=%lu", h, mech ? mech->mechanism : 0UL,
	     key);
	return op_init(h, OP_SIGN, mech, key);
}

static CK_RV m_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM *mech, CK_OBJECT_HANDLE key)
{
	MOCK_LOCKED;
	mlog("C_DecryptInit session=%lu mechanism=0x%lx key=%lu", h, mech ? mech->mechanism : 0UL,
	     key);
	return op_init(h, OP_DECRYPT, mech, key);
}

/*
 * One RSA private-key operation.  Sign with CKM_RSA_PKCS pads the input
 * (PKCS#1 type 1); CKM_RSA_X_509 is the raw operation on a left-padded
 * input; decrypt removes PKCS#1 type 2 padding or none.
 */
static CK_RV rsa_op(struct session *s, const unsigned char *in, CK_ULONG inlen, unsigned char *out,
                    CK_ULONG *outlen)
{
	size_t k = (size_t)EVP_PKEY_get_size(m.key);
	EVP_PKEY_CTX *ctx = NULL;
	unsigned char *buf = NULL, *tmp = NULL;
	size_t len = k;
	int raw = s->mech == CKM_RSA_X_509;
	CK_RV rv = CKR_FUNCTION_FAILED;

	if (!in || !outlen)
		return CKR_ARGUMENTS_BAD;
	if (!out) {
		*outlen = k;
		return CKR_OK;
	}
	if (s->op == OP_SIGN && *outlen < k) {
		*outlen = k;
		return CKR_BUFFER_TOO_SMALL;
	}
	if (inlen > k || (s->op == OP_SIGN && !raw && inlen > k - 11)) {
		rv = s->op == OP_SIGN ? CKR_DATA_LEN_RANGE : CKR_ENCRYPTED_DATA_LEN_RANGE;
		goto done;
	}
	if (raw) {
		/* RSA_NO_PADDING wants exactly k bytes: CKM_RSA_X_509 pads with zeros on the left.
		 */
		buf = calloc(1, k);
		if (!buf) {
			rv = CKR_HOST_MEMORY;
			goto done;
		}
		memcpy(buf + k - inlen, in, inlen);
		in = buf;
		inlen = k;
	}
	tmp = malloc(k);
	ctx = EVP_PKEY_CTX_new(m.key, NULL);
	if (!tmp || !ctx) {
		rv = CKR_HOST_MEMORY;
		goto done;
	}
	if (s->op == OP_SIGN) {
		if (EVP_PKEY_sign_init(ctx) <= 0 ||
		    EVP_PKEY_CTX_set_rsa_padding(ctx, raw ? RSA_NO_PADDING : RSA_PKCS1_PADDING) <=
		        0 ||
		    EVP_PKEY_sign(ctx, tmp, &len, in, inlen) <= 0) {
			rv = raw ? CKR_DATA_INVALID : CKR_FUNCTION_FAILED;
			goto done;
		}
	} else {
		if (EVP_PKEY_decrypt_init(ctx) <= 0 ||
		    EVP_PKEY_CTX_set_rsa_padding(ctx, raw ? RSA_NO_PADDING : RSA_PKCS1_PADDING) <=
		        0 ||
		    EVP_PKEY_decrypt(ctx, tmp, &len, in, inlen) <= 0) {
			rv = CKR_ENCRYPTED_DATA_INVALID;
			goto done;
		}
	}
	if (*outlen < len) {
		*outlen = len;
		rv = CKR_BUFFER_TOO_SMALL;
		EVP_PKEY_CTX_free(ctx);
		OPENSSL_clear_free(tmp, k);
		free(buf);
		return rv; /* the operation stays active */
	}
	memcpy(out, tmp, len);
	*outlen = len;
	rv = CKR_OK;
done:
	EVP_PKEY_CTX_free(ctx);
	OPENSSL_clear_free(tmp, k);
	free(buf);
	s->op = OP_NONE;
	s->context_login = 0;
	return rv;
}

static CK_RV op_run(CK_SESSION_HANDLE h, enum op op, unsigned char *in, CK_ULONG inlen,
                    unsigned char *out, CK_ULONG *outlen)
{
	struct session *s;

	GET_SESSION(s, h);
	if (s->op != op)
		return CKR_OPERATION_NOT_INITIALIZED;
	if ((m.flags & F_ALWAYS_AUTH) && !s->context_login) {
		s->op = OP_NONE;
		return CKR_USER_NOT_LOGGED_IN;
	}
	return rsa_op(s, in, inlen, out, outlen);
}

static CK_RV m_Sign(CK_SESSION_HANDLE h, unsigned char *data, CK_ULONG len, unsigned char *sig,
                    CK_ULONG *siglen)
{
	MOCK_LOCKED;
	mlog("C_Sign session=%lu data_len=%lu%s", h, len, sig ? "" : " (size query)");
	return op_run(h, OP_SIGN, data, len, sig, siglen);
}

static CK_RV m_Decrypt(CK_SESSION_HANDLE h, unsigned char *enc, CK_ULONG len, unsigned char *data,
                       CK_ULONG *datalen)
{
	MOCK_LOCKED;
	mlog("C_Decrypt session=%lu data_len=%lu%s", h, len, data ? "" : " (size query)");
	return op_run(h, OP_DECRYPT, enc, len, data, datalen);
}

/* ------------------------------------------------------- not supported */

#define NS(name, args)                                                                            \
	static CK_RV m_##name args                                                                \
	{                                                                                         \
		mlog("C_" #name " (not supported)");                                              \
		return m.initialized ? CKR_FUNCTION_NOT_SUPPORTED : CKR_CRYPTOKI_NOT_INITIALIZED; \
	}

NS(WaitForSlotEvent, (CK_FLAGS f, CK_SLOT_ID *sl, void *r))
NS(InitToken, (CK_SLOT_ID sl, unsigned char *p, CK_ULONG l, unsigned char *lab))
NS(InitPIN, (CK_SESSION_HANDLE h, unsigned char *p, CK_ULONG l))
NS(SetPIN, (CK_SESSION_HANDLE h, unsigned char *o, CK_ULONG ol, unsigned char *n, CK_ULONG nl))
NS(GetOperationState, (CK_SESSION_HANDLE h, unsigned char *st, CK_ULONG *l))
NS(SetOperationState,
   (CK_SESSION_HANDLE h, unsigned char *st, CK_ULONG l, CK_OBJECT_HANDLE e, CK_OBJECT_HANDLE a))
NS(CreateObject, (CK_SESSION_HANDLE h, CK_ATTRIBUTE *t, CK_ULONG c, CK_OBJECT_HANDLE *o))
NS(CopyObject,
   (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t, CK_ULONG c, CK_OBJECT_HANDLE *n))
NS(DestroyObject, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o))
NS(GetObjectSize, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ULONG *sz))
NS(SetAttributeValue, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t, CK_ULONG c))
NS(EncryptInit, (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_OBJECT_HANDLE k))
NS(Encrypt, (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG l, unsigned char *e, CK_ULONG *el))
NS(EncryptUpdate,
   (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG l, unsigned char *e, CK_ULONG *el))
NS(EncryptFinal, (CK_SESSION_HANDLE h, unsigned char *e, CK_ULONG *el))
NS(DecryptUpdate,
   (CK_SESSION_HANDLE h, unsigned char *e, CK_ULONG l, unsigned char *d, CK_ULONG *dl))
NS(DecryptFinal, (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG *dl))
NS(DigestInit, (CK_SESSION_HANDLE h, CK_MECHANISM *mc))
NS(Digest, (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG l, unsigned char *o, CK_ULONG *ol))
NS(DigestUpdate, (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG l))
NS(DigestKey, (CK_SESSION_HANDLE h, CK_OBJECT_HANDLE k))
NS(DigestFinal, (CK_SESSION_HANDLE h, unsigned char *o, CK_ULONG *ol))
NS(SignUpdate, (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG l))
NS(SignFinal, (CK_SESSION_HANDLE h, unsigned char *s, CK_ULONG *sl))
NS(SignRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_OBJECT_HANDLE k))
NS(SignRecover, (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG l, unsigned char *s, CK_ULONG *sl))
NS(VerifyInit, (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_OBJECT_HANDLE k))
NS(Verify, (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG l, unsigned char *s, CK_ULONG sl))
NS(VerifyUpdate, (CK_SESSION_HANDLE h, unsigned char *d, CK_ULONG l))
NS(VerifyFinal, (CK_SESSION_HANDLE h, unsigned char *s, CK_ULONG sl))
NS(VerifyRecoverInit, (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_OBJECT_HANDLE k))
NS(VerifyRecover,
   (CK_SESSION_HANDLE h, unsigned char *s, CK_ULONG sl, unsigned char *d, CK_ULONG *dl))
NS(DigestEncryptUpdate,
   (CK_SESSION_HANDLE h, unsigned char *p, CK_ULONG l, unsigned char *e, CK_ULONG *el))
NS(DecryptDigestUpdate,
   (CK_SESSION_HANDLE h, unsigned char *e, CK_ULONG l, unsigned char *p, CK_ULONG *pl))
NS(SignEncryptUpdate,
   (CK_SESSION_HANDLE h, unsigned char *p, CK_ULONG l, unsigned char *e, CK_ULONG *el))
NS(DecryptVerifyUpdate,
   (CK_SESSION_HANDLE h, unsigned char *e, CK_ULONG l, unsigned char *p, CK_ULONG *pl))
NS(GenerateKey,
   (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_ATTRIBUTE *t, CK_ULONG c, CK_OBJECT_HANDLE *k))
NS(GenerateKeyPair, (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_ATTRIBUTE *pt, CK_ULONG pc,
                     CK_ATTRIBUTE *st, CK_ULONG sc, CK_OBJECT_HANDLE *pk, CK_OBJECT_HANDLE *sk))
NS(WrapKey, (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k,
             unsigned char *o, CK_ULONG *ol))
NS(UnwrapKey, (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_OBJECT_HANDLE u, unsigned char *w,
               CK_ULONG wl, CK_ATTRIBUTE *t, CK_ULONG c, CK_OBJECT_HANDLE *k))
NS(DeriveKey, (CK_SESSION_HANDLE h, CK_MECHANISM *mc, CK_OBJECT_HANDLE b, CK_ATTRIBUTE *t,
               CK_ULONG c, CK_OBJECT_HANDLE *k))
NS(SeedRandom, (CK_SESSION_HANDLE h, unsigned char *sd, CK_ULONG l))
NS(GenerateRandom, (CK_SESSION_HANDLE h, unsigned char *r, CK_ULONG l))
NS(GetFunctionStatus, (CK_SESSION_HANDLE h))
NS(CancelFunction, (CK_SESSION_HANDLE h))

static CK_FUNCTION_LIST function_list;

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **out)
{
	if (!out)
		return CKR_ARGUMENTS_BAD;
	*out = &function_list;
	return CKR_OK;
}

static CK_FUNCTION_LIST function_list = {
    .version = {2, 40},
    .C_Initialize = m_Initialize,
    .C_Finalize = m_Finalize,
    .C_GetInfo = m_GetInfo,
    .C_GetFunctionList = C_GetFunctionList,
    .C_GetSlotList = m_GetSlotList,
    .C_GetSlotInfo = m_GetSlotInfo,
    .C_GetTokenInfo = m_GetTokenInfo,
    .C_GetMechanismList = m_GetMechanismList,
    .C_GetMechanismInfo = m_GetMechanismInfo,
    .C_InitToken = m_InitToken,
    .C_InitPIN = m_InitPIN,
    .C_SetPIN = m_SetPIN,
    .C_OpenSession = m_OpenSession,
    .C_CloseSession = m_CloseSession,
    .C_CloseAllSessions = m_CloseAllSessions,
    .C_GetSessionInfo = m_GetSessionInfo,
    .C_GetOperationState = m_GetOperationState,
    .C_SetOperationState = m_SetOperationState,
    .C_Login = m_Login,
    .C_Logout = m_Logout,
    .C_CreateObject = m_CreateObject,
    .C_CopyObject = m_CopyObject,
    .C_DestroyObject = m_DestroyObject,
    .C_GetObjectSize = m_GetObjectSize,
    .C_GetAttributeValue = m_GetAttributeValue,
    .C_SetAttributeValue = m_SetAttributeValue,
    .C_FindObjectsInit = m_FindObjectsInit,
    .C_FindObjects = m_FindObjects,
    .C_FindObjectsFinal = m_FindObjectsFinal,
    .C_EncryptInit = m_EncryptInit,
    .C_Encrypt = m_Encrypt,
    .C_EncryptUpdate = m_EncryptUpdate,
    .C_EncryptFinal = m_EncryptFinal,
    .C_DecryptInit = m_DecryptInit,
    .C_Decrypt = m_Decrypt,
    .C_DecryptUpdate = m_DecryptUpdate,
    .C_DecryptFinal = m_DecryptFinal,
    .C_DigestInit = m_DigestInit,
    .C_Digest = m_Digest,
    .C_DigestUpdate = m_DigestUpdate,
    .C_DigestKey = m_DigestKey,
    .C_DigestFinal = m_DigestFinal,
    .C_SignInit = m_SignInit,
    .C_Sign = m_Sign,
    .C_SignUpdate = m_SignUpdate,
    .C_SignFinal = m_SignFinal,
    .C_SignRecoverInit = m_SignRecoverInit,
    .C_SignRecover = m_SignRecover,
    .C_VerifyInit = m_VerifyInit,
    .C_Verify = m_Verify,
    .C_VerifyUpdate = m_VerifyUpdate,
    .C_VerifyFinal = m_VerifyFinal,
    .C_VerifyRecoverInit = m_VerifyRecoverInit,
    .C_VerifyRecover = m_VerifyRecover,
    .C_DigestEncryptUpdate = m_DigestEncryptUpdate,
    .C_DecryptDigestUpdate = m_DecryptDigestUpdate,
    .C_SignEncryptUpdate = m_SignEncryptUpdate,
    .C_DecryptVerifyUpdate = m_DecryptVerifyUpdate,
    .C_GenerateKey = m_GenerateKey,
    .C_GenerateKeyPair = m_GenerateKeyPair,
    .C_WrapKey = m_WrapKey,
    .C_UnwrapKey = m_UnwrapKey,
    .C_DeriveKey = m_DeriveKey,
    .C_SeedRandom = m_SeedRandom,
    .C_GenerateRandom = m_GenerateRandom,
    .C_GetFunctionStatus = m_GetFunctionStatus,
    .C_CancelFunction = m_CancelFunction,
    .C_WaitForSlotEvent = m_WaitForSlotEvent,
};

/* ---------------------------------------------------------------- fuzzing */

/*
 * Attribute types worth hitting: what object enumeration, pairing and the
 * certificate and key readers ask for.  A type byte past the table is taken
 * as a raw (vendor or unknown) type.
 */
static const CK_ATTRIBUTE_TYPE fuzz_types[] = {
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_ID,
    CKA_VALUE,
    CKA_KEY_TYPE,
    CKA_CERTIFICATE_TYPE,
    CKA_SUBJECT,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_PUBLIC_KEY_INFO,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_MODIFIABLE,
    CKA_ENCRYPT,
};

/*
 * Replace the token's objects with ones read from @p data: for each object
 * (up to N_OBJECTS) a byte "private" (bit 0) and a byte with the number of
 * attributes; for each attribute a type byte (an index into fuzz_types, or
 * past it: the next four bytes are the raw type), a lie byte (mod N_LIES),
 * two bytes of length (big-endian, cut to what is left) and the value.
 * Objects without a CKA_CLASS are still served: the reader must cope.
 * Returns 0; the module stays initialised.
 */
__attribute__((visibility("default"))) int p11i_mock_fuzz_load(const unsigned char *data,
                                                               size_t len);
__attribute__((visibility("default"))) int p11i_mock_fuzz_load(const unsigned char *data,
                                                               size_t len)
{
	const unsigned char *p = data, *end = data + len;

	free_objects();
	for (CK_OBJECT_HANDLE h = 1; h <= N_OBJECTS && end - p >= 2; h++) {
		struct object *o = &m.objs[h];
		size_t nattr = p[1];

		o->present = 1;
		o->private_obj = p[0] & 1;
		p += 2;
		for (size_t i = 0; i < nattr && end - p >= 4; i++) {
			CK_ATTRIBUTE_TYPE type;
			enum lie how;
			size_t vlen;

			if (*p < sizeof(fuzz_types) / sizeof(fuzz_types[0])) {
				type = fuzz_types[*p++];
			} else {
				p++;
				if (end - p < 4)
					break;
				type = (CK_ATTRIBUTE_TYPE)p[0] << 24 |
				       (CK_ATTRIBUTE_TYPE)p[1] << 16 |
				       (CK_ATTRIBUTE_TYPE)p[2] << 8 | p[3];
				p += 4;
			}
			if (end - p < 3)
				break;
			how = (enum lie)(p[0] % N_LIES);
			vlen = (size_t)p[1] << 8 | p[2];
			p += 3;
			if (vlen > (size_t)(end - p))
				vlen = (size_t)(end - p);
			if (find_attr(o, type) != NULL || add_attr(o, type, p, vlen, 0) != 0)
				break;
			o->attrs[o->n - 1].lie = how;
			p += vlen;
		}
	}
	m.logged_in = 0;
	return 0;
}
