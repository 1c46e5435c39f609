/*
 * The S/MIME rules engine: pure functions of a certificate, optional key
 * facts, anchors and a time.  Facts are read from the certificate once
 * (struct facts); each rule is one small function in rule_table[].
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "mailbox.h"
#include "p11smime/certs.h"
#include "p11smime/certs.h"
#include "mime.h"
#include "p11smime/rules.h"
#include "p11smime/io.h"

#define MAX_CHECKS    8
#define MAX_KEYCHECKS 4

struct check {
	const char *id;
	p11s_check_result result;
	char *message;
	int decides;
};

struct p11s_verdict {
	time_t at;
	int ca;
	int in_validity;
	int accepted, usable, can_sign, can_encrypt;
	char *no_sign, *no_encrypt;
	struct check checks[MAX_CHECKS];
	size_t nchecks;
	struct check keychecks[MAX_KEYCHECKS];
	size_t nkeychecks;
	int key_checked;
	char **warnings;
	size_t nwarnings, warnings_cap;
	p11s_check_result chain;
	char *chain_message;
	char **chain_subjects;
	size_t chain_len;
	int oom;
};

/* State of an extension: absent, decoded, or present and undecodable. */
enum ext_state { EXT_ABSENT, EXT_OK, EXT_BAD, EXT_DUPLICATE };

/* Key Usage bits by their position in the BIT STRING (RFC 5280 4.2.1.3). */
enum {
	KUB_DIGITAL_SIGNATURE = 1u << 0,
	KUB_NON_REPUDIATION = 1u << 1,
	KUB_KEY_ENCIPHERMENT = 1u << 2,
	KUB_DATA_ENCIPHERMENT = 1u << 3,
	KUB_KEY_AGREEMENT = 1u << 4,
	KUB_KEY_CERT_SIGN = 1u << 5,
	KUB_CRL_SIGN = 1u << 6,
	KUB_ENCIPHER_ONLY = 1u << 7,
	KUB_DECIPHER_ONLY = 1u << 8,
};
static const char *const ku_names[] = {
    "digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment", "keyAgreement",
    "keyCertSign",      "cRLSign",        "encipherOnly",    "decipherOnly",
};
#define KU_NBITS (sizeof(ku_names) / sizeof(ku_names[0]))

/* Everything the rules look at, read once. */
struct facts {
	X509 *cert;
	const p11s_key_facts *key;
	time_t at;
	p11s_verdict *v;

	enum ext_state bc_state;
	int ca;

	enum ext_state san_state;
	size_t san_emails;    /* rfc822Names that are mailboxes */
	char *san_email_text; /* "a@b, c@d" */
	char **san_bad;       /* "'x' is not an e-mail address (why)", one per other rfc822Name */
	size_t san_nbad;
	char *subject_email; /* first emailAddress in the subject, or NULL */

	enum ext_state ku_state;
	unsigned ku;

	enum ext_state eku_state;
	int eku_email, eku_any;
	char *eku_text; /* the purposes named, for messages */

	p11s_key_alg pk_alg;
	char pk_name[96]; /* "RSA", "EC", "Ed25519", or the OID */
	EVP_PKEY *pkey;   /* borrowed from cert; NULL if it does not parse */
	int pk_bits;
	char curve[64]; /* OpenSSL group name, "" when unknown */

	int nb_cmp, na_cmp; /* ASN1_TIME_cmp_time_t(notBefore|notAfter, at) */
	char not_before[32], not_after[32], at_text[32];
};

/* ----------------------------------------------------------- small helpers */

static char *vfmt(p11s_verdict *v, const char *fmt, va_list ap) P11I_PRINTF(2, 0);
static char *vfmt(p11s_verdict *v, const char *fmt, va_list ap)
{
	char *s = NULL;

	if (vasprintf(&s, fmt, ap) < 0) {
		s = NULL;
		v->oom = 1;
	}
	return s;
}

static char *fmt(p11s_verdict *v, const char *f, ...) P11I_PRINTF(2, 3);
static char *fmt(p11s_verdict *v, const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	s = vfmt(v, f, ap);
	va_end(ap);
	return s;
}

static void warn(p11s_verdict *v, const char *f, ...) P11I_PRINTF(2, 3);
static void warn(p11s_verdict *v, const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	s = vfmt(v, f, ap);
	va_end(ap);
	if (s == NULL)
		return;
	if (P11I_GROW(v->warnings, v->nwarnings, v->warnings_cap, 1) != 0) {
		free(s);
		v->oom = 1;
		return;
	}
	v->warnings[v->nwarnings++] = s;
}

/* Append @p add to *@p buf with a ", " separator. */
static void append(p11s_verdict *v, char **buf, const char *add)
{
	char *s = *buf ? fmt(v, "%s, %s", *buf, add) : fmt(v, "%s", add);

	free(*buf);
	*buf = s;
}

/* Printable ASCII copy of an IA5String-ish value; other bytes as \xNN. */
static char *printable(p11s_verdict *v, const unsigned char *s, int len)
{
	char *out = malloc((size_t)(len > 0 ? len : 0) * 4 + 1), *p = out;

	if (out == NULL) {
		v->oom = 1;
		return NULL;
	}
	for (int i = 0; i < len; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
			*p++ = (char)s[i];
		else
			p += sprintf(p, "\\x%02x", s[i]);
	}
	*p = '\0';
	return out;
}

static time_t asn1_time_t(const ASN1_TIME *t, int *ok)
{
	struct tm tm;

	*ok = t != NULL && ASN1_TIME_to_tm(t, &tm) == 1;
	return *ok ? timegm(&tm) : 0;
}

static void time_text(const ASN1_TIME *t, char *buf, size_t len)
{
	int ok;
	time_t tt = asn1_time_t(t, &ok);

	if (ok)
		p11s_time_format(tt, buf, len);
	else
		snprintf(buf, len, "(unreadable time)");
}

/* Decode an extension and say which of the four states it is in. */
static void *ext_d2i(X509 *cert, int nid, enum ext_state *state)
{
	int crit = -1;
	void *ext = X509_get_ext_d2i(cert, nid, &crit, NULL);

	if (ext != NULL)
		*state = EXT_OK;
	else if (crit == -1)
		*state = EXT_ABSENT;
	else if (crit == -2)
		*state = EXT_DUPLICATE;
	else
		*state = EXT_BAD;
	ERR_clear_error();
	return ext;
}

static const char *ext_problem(enum ext_state s)
{
	return s == EXT_DUPLICATE ? "appears more than once" : "does not decode";
}

/* ---------------------------------------------------------------- facts */

static void read_names(struct facts *f)
{
	GENERAL_NAMES *gens = ext_d2i(f->cert, NID_subject_alt_name, &f->san_state);
	X509_NAME *subject = X509_get_subject_name(f->cert);
	int idx;
	char **good;

	GENERAL_NAMES_free(gens);
	/* An rfc822Name that is not a Mailbox is no address (RFC 5280 4.2.1.6). */
	good = p11i_cert_mailboxes(f->cert, P11I_MAILBOX_IN_SAN, &f->san_emails);
	f->san_bad = p11i_cert_bad_mailboxes(f->cert, &f->san_nbad);
	if (good == NULL || f->san_bad == NULL)
		f->v->oom = 1;
	for (size_t i = 0; good != NULL && i < f->san_emails; i++)
		append(f->v, &f->san_email_text, good[i]);
	if (good == NULL)
		f->san_emails = 0;
	p11s_strv_free(good);

	idx = subject ? X509_NAME_get_index_by_NID(subject, NID_pkcs9_emailAddress, -1) : -1;
	if (idx >= 0) {
		ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));

		if (s != NULL)
			f->subject_email =
			    printable(f->v, ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
	}
}

static void read_usages(struct facts *f)
{
	BASIC_CONSTRAINTS *bc = ext_d2i(f->cert, NID_basic_constraints, &f->bc_state);
	ASN1_BIT_STRING *ku = ext_d2i(f->cert, NID_key_usage, &f->ku_state);
	EXTENDED_KEY_USAGE *eku = ext_d2i(f->cert, NID_ext_key_usage, &f->eku_state);

	f->ca = bc != NULL && bc->ca;
	BASIC_CONSTRAINTS_free(bc);

	for (unsigned i = 0; ku != NULL && i < KU_NBITS; i++)
		if (ASN1_BIT_STRING_get_bit(ku, (int)i))
			f->ku |= 1u << i;
	ASN1_BIT_STRING_free(ku);

	for (int i = 0; eku != NULL && i < sk_ASN1_OBJECT_num(eku); i++) {
		const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
		int nid = OBJ_obj2nid(o);
		char oid[80];

		if (nid == NID_email_protect)
			f->eku_email = 1;
		else if (nid == NID_anyExtendedKeyUsage)
			f->eku_any = 1;
		if (nid != NID_undef)
			append(f->v, &f->eku_text, OBJ_nid2sn(nid));
		else if (OBJ_obj2txt(oid, sizeof(oid), o, 1) > 0)
			append(f->v, &f->eku_text, oid);
	}
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
}

/* Names people know, for the algorithms that fail the rule. */
static const char *alg_friendly(int nid)
{
	switch (nid) {
	case NID_rsaEncryption:
		return "RSA";
	case NID_X9_62_id_ecPublicKey:
		return "EC";
	case NID_ED25519:
		return "Ed25519";
	case NID_ED448:
		return "Ed448";
	case NID_X25519:
		return "X25519";
	case NID_X448:
		return "X448";
	case NID_dsa:
		return "DSA";
	case NID_dhKeyAgreement:
		return "DH (PKCS #3)";
	case NID_dhpublicnumber:
		return "DH (X9.42)";
	case NID_rsassaPss:
		return "RSASSA-PSS";
	case NID_sm2:
		return "SM2";
	default:
		return NULL;
	}
}

/* OpenSSL 3.0 has no names for the NIST post-quantum algorithms; certificates do. */
static void name_pqc(char *oid, size_t len)
{
	static const struct {
		const char *oid, *name;
	} pqc[] = {
	    {"2.16.840.1.101.3.4.3.17", "ML-DSA-44"}, {"2.16.840.1.101.3.4.3.18", "ML-DSA-65"},
	    {"2.16.840.1.101.3.4.3.19", "ML-DSA-87"}, {"2.16.840.1.101.3.4.4.1", "ML-KEM-512"},
	    {"2.16.840.1.101.3.4.4.2", "ML-KEM-768"}, {"2.16.840.1.101.3.4.4.3", "ML-KEM-1024"},
	};

	for (size_t i = 0; i < sizeof(pqc) / sizeof(pqc[0]); i++) {
		if (strcmp(oid, pqc[i].oid) == 0) {
			char tmp[96];

			snprintf(tmp, sizeof(tmp), "%s (%s)", pqc[i].name, pqc[i].oid);
			snprintf(oid, len, "%s", tmp);
			return;
		}
	}
}

static void read_key(struct facts *f)
{
	X509_PUBKEY *xpk = X509_get_X509_PUBKEY(f->cert);
	ASN1_OBJECT *obj = NULL;
	int nid = NID_undef;
	const char *name;

	if (xpk != NULL && X509_PUBKEY_get0_param(&obj, NULL, NULL, NULL, xpk) == 1 && obj != NULL)
		nid = OBJ_obj2nid(obj);
	name = alg_friendly(nid);
	if (name != NULL)
		snprintf(f->pk_name, sizeof(f->pk_name), "%s", name);
	else if (nid != NID_undef)
		snprintf(f->pk_name, sizeof(f->pk_name), "%s", OBJ_nid2ln(nid));
	else if (obj == NULL || OBJ_obj2txt(f->pk_name, sizeof(f->pk_name), obj, 1) <= 0)
		snprintf(f->pk_name, sizeof(f->pk_name), "an unreadable algorithm");
	else
		name_pqc(f->pk_name, sizeof(f->pk_name));
	f->pk_alg = nid == NID_rsaEncryption          ? P11S_ALG_RSA
	            : nid == NID_X9_62_id_ecPublicKey ? P11S_ALG_EC
	                                              : P11S_ALG_OTHER;

	/* Unknown algorithms and broken keys give NULL here, not a crash. */
	f->pkey = X509_get0_pubkey(f->cert);
	ERR_clear_error();
	if (f->pkey != NULL) {
		size_t len = 0;

		f->pk_bits = EVP_PKEY_get_bits(f->pkey);
		if (f->pk_alg == P11S_ALG_EC &&
		    EVP_PKEY_get_group_name(f->pkey, f->curve, sizeof(f->curve), &len) != 1)
			f->curve[0] = '\0';
		ERR_clear_error();
	}
}

static void read_validity(struct facts *f)
{
	const ASN1_TIME *nb = X509_get0_notBefore(f->cert);
	const ASN1_TIME *na = X509_get0_notAfter(f->cert);

	f->nb_cmp = nb ? ASN1_TIME_cmp_time_t(nb, f->at) : -2;
	f->na_cmp = na ? ASN1_TIME_cmp_time_t(na, f->at) : -2;
	time_text(nb, f->not_before, sizeof(f->not_before));
	time_text(na, f->not_after, sizeof(f->not_after));
	p11s_time_format(f->at, f->at_text, sizeof(f->at_text));
}

static void facts_free(struct facts *f)
{
	free(f->san_email_text);
	p11s_strv_free(f->san_bad);
	free(f->subject_email);
	free(f->eku_text);
}

/* ---------------------------------------------------------------- rules */

static const char *p_curve(const char *group)
{
	if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
		return "P-256";
	if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
		return "P-384";
	if (strcmp(group, "secp521r1") == 0 || strcmp(group, "P-521") == 0)
		return "P-521";
	return NULL;
}

/* A rule: result plus a message (malloc'd, via fmt()). */
typedef p11s_check_result (*rule_fn)(struct facts *f, char **msg);

static p11s_check_result rule_san_email(struct facts *f, char **msg)
{
	p11s_verdict *v = f->v;
	const char *subj = f->subject_email;
	char *bad = NULL;
	p11s_check_result r;

	if (f->san_state == EXT_BAD || f->san_state == EXT_DUPLICATE) {
		*msg =
		    fmt(v, "the Subject Alternative Name extension %s", ext_problem(f->san_state));
		return P11S_CHECK_FAIL;
	}
	for (size_t i = 0; i < f->san_nbad; i++) {
		char *next =
		    bad ? fmt(v, "%s; %s", bad, f->san_bad[i]) : fmt(v, "%s", f->san_bad[i]);

		free(bad);
		bad = next;
	}
	if (f->san_emails > 0) {
		*msg = fmt(v, "e-mail address%s in the Subject Alternative Name: %s%s%s",
		           f->san_emails > 1 ? "es" : "", f->san_email_text, bad ? "; " : "",
		           bad ? bad : "");
		r = P11S_CHECK_PASS;
	} else if (bad != NULL) {
		*msg =
		    subj ? fmt(v,
		               "the Subject Alternative Name holds no e-mail address: %s; the "
		               "address %s in the subject's emailAddress does not count",
		               bad, subj)
		         : fmt(v, "the Subject Alternative Name holds no e-mail address: %s", bad);
		r = P11S_CHECK_FAIL;
	} else {
		r = P11S_CHECK_FAIL;
	}
	free(bad);
	if (r == P11S_CHECK_PASS || f->san_nbad > 0)
		return r;
	if (f->san_state == EXT_ABSENT)
		*msg = subj ? fmt(v,
		                  "no Subject Alternative Name extension; the address %s in the "
		                  "subject's emailAddress does not count",
		                  subj)
		            : fmt(v, "no Subject Alternative Name extension, so no e-mail address");
	else
		*msg =
		    subj ? fmt(v,
		               "the Subject Alternative Name holds no e-mail address (rfc822Name); "
		               "the address %s in the subject's emailAddress does not count",
		               subj)
		         : fmt(v,
		               "the Subject Alternative Name holds no e-mail address (rfc822Name)");
	return P11S_CHECK_FAIL;
}

static char *ku_text(p11s_verdict *v, unsigned ku)
{
	char *s = NULL;

	for (unsigned i = 0; i < KU_NBITS; i++)
		if (ku & (1u << i))
			append(v, &s, ku_names[i]);
	return s;
}

static p11s_check_result rule_key_usage(struct facts *f, char **msg)
{
	p11s_verdict *v = f->v;
	char *bits;
	p11s_check_result r;

	if (f->ku_state == EXT_ABSENT) {
		*msg = fmt(v, "no Key Usage extension; S/MIME needs digitalSignature and/or "
		              "keyEncipherment");
		return P11S_CHECK_FAIL;
	}
	if (f->ku_state != EXT_OK) {
		*msg = fmt(v, "the Key Usage extension %s", ext_problem(f->ku_state));
		return P11S_CHECK_FAIL;
	}
	if (f->ku == 0) {
		*msg = fmt(v, "the Key Usage extension is empty; S/MIME needs digitalSignature "
		              "and/or keyEncipherment");
		return P11S_CHECK_FAIL;
	}
	bits = ku_text(v, f->ku);
	if (f->ku & (KUB_DIGITAL_SIGNATURE | KUB_KEY_ENCIPHERMENT)) {
		*msg = fmt(v, "Key Usage: %s", bits);
		r = P11S_CHECK_PASS;
	} else if (f->ku & KUB_KEY_AGREEMENT) {
		*msg =
		    fmt(v,
		        "Key Usage: %s; keyAgreement alone does not satisfy the rule, which asks "
		        "for digitalSignature and/or keyEncipherment (EC encryption certificates "
		        "carry keyAgreement, but need one of those beside it)",
		        bits);
		r = P11S_CHECK_FAIL;
	} else {
		*msg = fmt(v, "Key Usage: %s; neither digitalSignature nor keyEncipherment", bits);
		r = P11S_CHECK_FAIL;
	}
	free(bits);
	return r;
}

static p11s_check_result rule_public_key_algorithm(struct facts *f, char **msg)
{
	p11s_verdict *v = f->v;

	if (f->pk_alg == P11S_ALG_OTHER) {
		*msg = fmt(v, "the public key is %s; S/MIME here needs RSA or EC (id-ecPublicKey)",
		           f->pk_name);
		return P11S_CHECK_FAIL;
	}
	if (f->pkey == NULL) {
		*msg = fmt(v, "the %s public key does not decode", f->pk_name);
		return P11S_CHECK_FAIL;
	}
	if (f->pk_alg == P11S_ALG_EC)
		*msg = fmt(v, "EC, %s",
		           !f->curve[0]        ? "explicit curve parameters"
		           : p_curve(f->curve) ? p_curve(f->curve)
		                               : f->curve);
	else
		*msg = fmt(v, "RSA, %d bits", f->pk_bits);
	return P11S_CHECK_PASS;
}

static p11s_check_result rule_extended_key_usage(struct facts *f, char **msg)
{
	p11s_verdict *v = f->v;

	if (f->eku_state == EXT_ABSENT) {
		*msg = fmt(v, "no Extended Key Usage extension (optional)");
		return P11S_CHECK_PASS;
	}
	if (f->eku_state != EXT_OK) {
		*msg = fmt(v, "the Extended Key Usage extension %s", ext_problem(f->eku_state));
		return P11S_CHECK_FAIL;
	}
	if (f->eku_email) {
		*msg = fmt(v, "Extended Key Usage: %s", f->eku_text);
		return P11S_CHECK_PASS;
	}
	if (f->eku_text == NULL)
		*msg = fmt(v, "the Extended Key Usage extension is empty; it must contain "
		              "emailProtection");
	else if (f->eku_any && strchr(f->eku_text, ',') == NULL)
		*msg = fmt(v, "Extended Key Usage holds only anyExtendedKeyUsage, which does not "
		              "count; it must contain emailProtection");
	else
		*msg =
		    fmt(v, "Extended Key Usage: %s; it must contain emailProtection", f->eku_text);
	return P11S_CHECK_FAIL;
}

static p11s_check_result rule_private_key_algorithm(struct facts *f, char **msg)
{
	const p11s_key_facts *k = f->key;
	p11s_verdict *v = f->v;

	if (k == NULL) {
		*msg = fmt(v, "no private key known (a certificate without its key)");
		return P11S_CHECK_SKIP;
	}
	if (k->present != 1) {
		*msg = fmt(v, "no private key paired with this certificate");
		return P11S_CHECK_SKIP;
	}
	if (k->matches == 0) {
		*msg = fmt(v, "the key found is not this certificate's key (see %s)",
		           P11S_KEYCHECK_MATCH);
		return P11S_CHECK_SKIP;
	}
	if (k->alg == P11S_ALG_RSA || k->alg == P11S_ALG_EC) {
		*msg = fmt(v, "the private key is %s", k->alg == P11S_ALG_RSA ? "RSA" : "EC");
		return P11S_CHECK_PASS;
	}
	if (k->alg == P11S_ALG_UNKNOWN) {
		*msg = fmt(v, "the token did not say the private key's type");
		return P11S_CHECK_SKIP;
	}
	*msg = fmt(v, "the private key is %s; S/MIME here needs RSA or EC",
	           k->alg_name ? k->alg_name : "neither RSA nor EC");
	return P11S_CHECK_FAIL;
}

static p11s_check_result rule_validity(struct facts *f, char **msg)
{
	p11s_verdict *v = f->v;

	if (f->nb_cmp == -2 || f->na_cmp == -2) {
		*msg = fmt(v, "the validity dates do not decode; not usable for outgoing mail");
		return P11S_CHECK_FAIL;
	}
	if (f->nb_cmp > 0) {
		*msg = fmt(v, "not valid before %s (judged at %s); not usable for outgoing mail",
		           f->not_before, f->at_text);
		return P11S_CHECK_FAIL;
	}
	if (f->na_cmp < 0) {
		*msg = fmt(v, "expired %s (judged at %s); not usable for outgoing mail",
		           f->not_after, f->at_text);
		return P11S_CHECK_FAIL;
	}
	*msg =
	    fmt(v, "valid from %s to %s (judged at %s)", f->not_before, f->not_after, f->at_text);
	return P11S_CHECK_PASS;
}

/* The rules, in report order.  A new rule is a new row. */
static const struct rule {
	const char *id;
	rule_fn fn;
	int ca_exempt; /* skipped for CA:TRUE certificates */
	int decides;   /* a failure rejects the certificate */
} rule_table[] = {
    {P11S_RULE_SAN_EMAIL, rule_san_email, 1, 1},
    {P11S_RULE_KEY_USAGE, rule_key_usage, 1, 1},
    {P11S_RULE_PUBLIC_KEY_ALGORITHM, rule_public_key_algorithm, 1, 1},
    {P11S_RULE_EXTENDED_KEY_USAGE, rule_extended_key_usage, 1, 1},
    {P11S_RULE_PRIVATE_KEY_ALGORITHM, rule_private_key_algorithm, 1, 1},
    {P11S_RULE_VALIDITY, rule_validity, 0, 0},
};

/* ------------------------------------------------------------- warnings */

static void add_warnings(struct facts *f, const p11s_validate_opts *opts)
{
	p11s_verdict *v = f->v;
	int mdnid = NID_undef, pknid = NID_undef;

	for (size_t i = 0; i < f->san_nbad; i++)
		warn(v, "%s", f->san_bad[i]);
	if (f->pk_alg == P11S_ALG_RSA && f->pkey != NULL && f->pk_bits < 2048)
		warn(v, "RSA key of %d bits, below 2048", f->pk_bits);
	if (f->pk_alg == P11S_ALG_EC && f->pkey != NULL) {
		if (f->curve[0] == '\0')
			warn(v, "EC key with explicit curve parameters, not P-256, P-384 or P-521");
		else if (p_curve(f->curve) == NULL)
			warn(v, "EC curve %s is outside P-256, P-384 and P-521", f->curve);
	}
	if (X509_get_signature_info(f->cert, &mdnid, &pknid, NULL, NULL) == 1 &&
	    (mdnid == NID_sha1 || mdnid == NID_md5 || mdnid == NID_md5_sha1 || mdnid == NID_md4 ||
	     mdnid == NID_md2))
		warn(v, "signed with %s (%s), a broken digest",
		     mdnid == NID_sha1 ? "SHA-1" : OBJ_nid2sn(mdnid),
		     OBJ_nid2ln(X509_get_signature_nid(f->cert)));
	ERR_clear_error();
	if (f->pk_alg == P11S_ALG_EC && f->ku_state == EXT_OK && (f->ku & KUB_KEY_ENCIPHERMENT))
		warn(v, "keyEncipherment on an EC key, which RFC 5480 does not allow "
		        "(EC keys encrypt through keyAgreement)");
	if (opts->warn_days > 0 && f->nb_cmp <= 0 && f->na_cmp >= 0) {
		int ok;
		time_t na = asn1_time_t(X509_get0_notAfter(f->cert), &ok);
		double left = ok ? difftime(na, f->at) : 0;

		if (ok && left <= (double)opts->warn_days * 86400.0)
			warn(v, "expires in %ld day%s (%s), within the %d-day warning period",
			     (long)(left / 86400), (long)(left / 86400) == 1 ? "" : "s",
			     f->not_after, opts->warn_days);
	}
}

/* ----------------------------------------------------------- key checks */

static void keycheck(p11s_verdict *v, const char *id, p11s_check_result r, char *msg)
{
	struct check *c = &v->keychecks[v->nkeychecks++];

	c->id = id;
	c->result = r;
	c->message = msg;
	c->decides = 0;
}

static void key_flags_check(struct facts *f)
{
	const p11s_key_facts *k = f->key;
	p11s_verdict *v = f->v;
	char *need = NULL, *missing = NULL;

	if (!k->on_token) {
		keycheck(v, P11S_KEYCHECK_FLAGS, P11S_CHECK_SKIP,
		         fmt(v, "a software key carries no token usage flags"));
		return;
	}
	if (f->ku_state != EXT_OK) {
		keycheck(v, P11S_KEYCHECK_FLAGS, P11S_CHECK_SKIP,
		         fmt(v, "no Key Usage to compare the key's flags with"));
		return;
	}
	if (f->ku & KUB_DIGITAL_SIGNATURE) {
		append(v, &need, "CKA_SIGN (digitalSignature)");
		if (k->can_sign == 0)
			append(v, &missing, "CKA_SIGN, which digitalSignature needs");
	}
	if (f->pk_alg == P11S_ALG_RSA && (f->ku & KUB_KEY_ENCIPHERMENT)) {
		append(v, &need, "CKA_DECRYPT or CKA_UNWRAP (keyEncipherment)");
		if (k->can_decrypt == 0 && k->can_unwrap == 0)
			append(v, &missing,
			       "CKA_DECRYPT and CKA_UNWRAP, one of which keyEncipherment "
			       "needs");
	}
	if (f->pk_alg == P11S_ALG_EC && (f->ku & KUB_KEY_AGREEMENT)) {
		append(v, &need, "CKA_DERIVE (keyAgreement)");
		if (k->can_derive == 0)
			append(v, &missing, "CKA_DERIVE, which keyAgreement needs");
	}
	if (missing != NULL)
		keycheck(v, P11S_KEYCHECK_FLAGS, P11S_CHECK_FAIL,
		         fmt(v, "the key lacks %s", missing));
	else if (need != NULL)
		keycheck(v, P11S_KEYCHECK_FLAGS, P11S_CHECK_PASS, fmt(v, "the key has %s", need));
	else
		keycheck(v, P11S_KEYCHECK_FLAGS, P11S_CHECK_SKIP,
		         fmt(v, "the Key Usage asks for nothing the key's flags govern"));
	free(need);
	free(missing);
}

static void key_checks(struct facts *f)
{
	const p11s_key_facts *k = f->key;
	p11s_verdict *v = f->v;
	const char *where = k->on_token ? "on the token" : "in the file";

	v->key_checked = 1;
	if (f->ca) {
		/* A CA certificate signs certificates, not mail: it needs no key here. */
		static const char *const ids[] = {P11S_KEYCHECK_PRESENT, P11S_KEYCHECK_MATCH,
		                                  P11S_KEYCHECK_HARDWARE_BOUND,
		                                  P11S_KEYCHECK_FLAGS};

		for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
			keycheck(v, ids[i], P11S_CHECK_SKIP,
			         fmt(v, "a CA certificate needs no private key for mail"));
		return;
	}
	if (k->present != 1) {
		keycheck(v, P11S_KEYCHECK_PRESENT, P11S_CHECK_FAIL,
		         fmt(v, "no private key %s for this certificate%s%s", where,
		             k->absent_note ? ": " : "", k->absent_note ? k->absent_note : ""));
		keycheck(v, P11S_KEYCHECK_MATCH, P11S_CHECK_SKIP, fmt(v, "no private key"));
		keycheck(v, P11S_KEYCHECK_HARDWARE_BOUND, P11S_CHECK_SKIP,
		         fmt(v, "no private key"));
		keycheck(v, P11S_KEYCHECK_FLAGS, P11S_CHECK_SKIP, fmt(v, "no private key"));
		return;
	}
	keycheck(v, P11S_KEYCHECK_PRESENT, P11S_CHECK_PASS,
	         k->uri ? fmt(v, "private key %s: %s", where, k->uri)
	                : fmt(v, "private key %s", where));
	if (k->matches == 1)
		keycheck(v, P11S_KEYCHECK_MATCH, P11S_CHECK_PASS,
		         fmt(v, "its public key equals the certificate's"));
	else if (k->matches == 0)
		keycheck(v, P11S_KEYCHECK_MATCH, P11S_CHECK_FAIL,
		         fmt(v, "it is a different key: its public key differs from the "
		                "certificate's"));
	else
		keycheck(v, P11S_KEYCHECK_MATCH, P11S_CHECK_SKIP,
		         fmt(v, "paired by CKA_ID only: the token shows no public key to compare"));

	if (!k->on_token)
		keycheck(v, P11S_KEYCHECK_HARDWARE_BOUND, P11S_CHECK_FAIL,
		         fmt(v, "a software key in a file, not bound to hardware"));
	else if (k->sensitive == 1 && k->extractable == 0)
		keycheck(v, P11S_KEYCHECK_HARDWARE_BOUND, P11S_CHECK_PASS,
		         fmt(v, "CKA_SENSITIVE true and CKA_EXTRACTABLE false"));
	else if (k->sensitive == 0 || k->extractable == 1)
		keycheck(v, P11S_KEYCHECK_HARDWARE_BOUND, P11S_CHECK_FAIL,
		         fmt(v, "%s%s%s", k->sensitive == 0 ? "CKA_SENSITIVE is false" : "",
		             k->sensitive == 0 && k->extractable == 1 ? " and " : "",
		             k->extractable == 1 ? "CKA_EXTRACTABLE is true: the key can leave the "
		                                   "token"
		                                 : ": the key's value can be read"));
	else
		keycheck(v, P11S_KEYCHECK_HARDWARE_BOUND, P11S_CHECK_SKIP,
		         fmt(v, "the token did not report CKA_SENSITIVE/CKA_EXTRACTABLE"));
	key_flags_check(f);
}

/* ---------------------------------------------------------------- chain */

static int in_stack(STACK_OF(X509) * sk, X509 *cert)
{
	for (int i = 0; i < sk_X509_num(sk); i++)
		if (X509_cmp(sk_X509_value(sk, i), cert) == 0)
			return 1;
	return 0;
}

static void chain(struct facts *f, const p11s_validate_opts *opts)
{
	p11s_verdict *v = f->v;
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	STACK_OF(X509) * built;

	if (opts->anchors == NULL || sk_X509_num(opts->anchors) == 0) {
		v->chain = P11S_CHECK_SKIP;
		v->chain_message = fmt(v, "no trust anchors (--ca FILE, or CA certificates on the "
		                          "token); nothing is trusted by default");
		return;
	}
	/* Our own store: never the system's default paths. */
	store = X509_STORE_new();
	ctx = X509_STORE_CTX_new();
	if (store == NULL || ctx == NULL)
		goto oom;
	if (X509_STORE_CTX_init(ctx, store, f->cert, opts->untrusted) != 1)
		goto oom;
	/*
	 * The anchors as a trusted stack, not X509_STORE_add_cert() one by one:
	 * OpenSSL 3.0 re-sorts the store on every insert (20 s for 10,000).
	 */
	X509_STORE_CTX_set0_trusted_stack(ctx, opts->anchors);
	X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx), f->at);
	/* An end-entity the user trusts directly need not lead to a root. */
	if (in_stack(opts->anchors, f->cert))
		X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx),
		                            X509_V_FLAG_PARTIAL_CHAIN);
	if (X509_verify_cert(ctx) == 1) {
		built = X509_STORE_CTX_get0_chain(ctx);
		v->chain = P11S_CHECK_PASS;
		v->chain_len = (size_t)sk_X509_num(built);
		v->chain_subjects = calloc(v->chain_len + 1, sizeof(char *));
		if (v->chain_subjects == NULL)
			goto oom;
		for (size_t i = 0; i < v->chain_len; i++) {
			v->chain_subjects[i] = p11s_cert_name_string(
			    X509_get_subject_name(sk_X509_value(built, (int)i)));
			if (v->chain_subjects[i] == NULL)
				v->oom = 1;
		}
		v->chain_message =
		    fmt(v, "chain of %zu built to the anchor %s", v->chain_len,
		        v->chain_subjects[v->chain_len - 1] ? v->chain_subjects[v->chain_len - 1]
		                                            : "?");
	} else {
		int e = X509_STORE_CTX_get_error(ctx);
		X509 *at = X509_STORE_CTX_get_current_cert(ctx);
		char *who = at ? p11s_cert_name_string(X509_get_subject_name(at)) : NULL;

		v->chain = P11S_CHECK_FAIL;
		if (e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
		    e == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
		    e == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
		    e == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN)
			v->chain_message =
			    fmt(v, "no chain to a supplied anchor: %s (at %s)",
			        X509_verify_cert_error_string(e), who ? who : "the certificate");
		else
			v->chain_message =
			    fmt(v, "chain rejected: %s (at %s)", X509_verify_cert_error_string(e),
			        who ? who : "the certificate");
		free(who);
	}
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return;
oom:
	v->oom = 1;
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
}

/* ---------------------------------------------------------------- usage */

static void usage_summary(struct facts *f)
{
	p11s_verdict *v = f->v;
	const p11s_key_facts *k = f->key;
	int key_ok = k == NULL || (k->present == 1 && k->matches != 0);
	const char *gate = NULL;

	if (!v->accepted)
		gate = "the certificate is rejected by the rules";
	else if (!v->in_validity)
		gate = "the certificate is outside its validity";
	else if (f->ca)
		gate = "a CA certificate, not a mail certificate";
	else if (!key_ok)
		gate = k->present == 1 ? "the private key does not match the certificate"
		                       : "no private key for it";

	if (gate)
		v->no_sign = fmt(v, "%s", gate);
	else if (!(f->ku & KUB_DIGITAL_SIGNATURE))
		v->no_sign = fmt(v, "the Key Usage lacks digitalSignature");
	else if (k != NULL && k->can_sign == 0)
		v->no_sign = fmt(v, "the private key lacks CKA_SIGN");
	else
		v->can_sign = 1;

	if (gate)
		v->no_encrypt = fmt(v, "%s", gate);
	else if (f->pk_alg == P11S_ALG_RSA && !(f->ku & KUB_KEY_ENCIPHERMENT))
		v->no_encrypt = fmt(v, "the Key Usage lacks keyEncipherment, which RSA key "
		                       "transport needs");
	else if (f->pk_alg == P11S_ALG_EC && !(f->ku & KUB_KEY_AGREEMENT))
		v->no_encrypt = fmt(v, "the Key Usage lacks keyAgreement, which EC (ECDH) needs");
	else if (k != NULL && f->pk_alg == P11S_ALG_RSA && k->can_decrypt == 0 &&
	         k->can_unwrap == 0)
		v->no_encrypt = fmt(v, "the private key has neither CKA_DECRYPT nor CKA_UNWRAP, so "
		                       "mail encrypted to it could not be read");
	else if (k != NULL && f->pk_alg == P11S_ALG_EC && k->can_derive == 0)
		v->no_encrypt = fmt(v, "the private key lacks CKA_DERIVE, so mail encrypted to it "
		                       "could not be read");
	else
		v->can_encrypt = 1;
}

/* ----------------------------------------------------------------- API */

void p11s_key_facts_init(p11s_key_facts *kf)
{
	memset(kf, 0, sizeof(*kf));
	kf->matches = -1;
	kf->sensitive = kf->extractable = -1;
	kf->can_sign = kf->can_decrypt = kf->can_unwrap = kf->can_derive = -1;
	kf->on_token = 1;
}

void p11s_key_facts_from_pkey(p11s_key_facts *kf, EVP_PKEY *pkey, X509 *cert)
{
	EVP_PKEY *pub = cert ? X509_get0_pubkey(cert) : NULL;
	int id;

	p11s_key_facts_init(kf);
	kf->on_token = 0;
	if (pkey == NULL)
		return;
	kf->present = 1;
	kf->matches = pub != NULL && EVP_PKEY_eq(pkey, pub) == 1;
	id = EVP_PKEY_get_base_id(pkey);
	kf->alg = id == EVP_PKEY_RSA  ? P11S_ALG_RSA
	          : id == EVP_PKEY_EC ? P11S_ALG_EC
	                              : P11S_ALG_OTHER;
	kf->alg_name = alg_friendly(id) ? alg_friendly(id) : "neither RSA nor EC";
	/* The curve by name: a person knows "P-256", not its field size. */
	p11i_pkey_facts(pkey, &kf->bits, &kf->curve);
	ERR_clear_error();
}

static p11s_key_alg key_alg(p11s_key_type t)
{
	switch (t) {
	case P11S_KEY_RSA:
		return P11S_ALG_RSA;
	case P11S_KEY_EC:
		return P11S_ALG_EC;
	case P11S_KEY_OTHER:
		return P11S_ALG_UNKNOWN;
	default:
		return P11S_ALG_OTHER;
	}
}

static int flag(unsigned flags, unsigned bit)
{
	return (flags & bit) != 0;
}

void p11s_key_facts_from_token(p11s_key_facts *kf, const p11s_object *cert)
{
	const p11s_object *key = p11s_object_private_key(cert);
	p11s_pairing pairing = p11s_object_pairing(cert);
	unsigned f;

	p11s_key_facts_init(kf);
	kf->on_token = 1;
	/* A MISMATCH offers no key for use, but the one with the CKA_ID is what is judged. */
	if (key == NULL)
		key = p11s_object_id_key(cert);
	if (key == NULL) {
		kf->present = 0;
		kf->absent_note = "no private key on the token has this certificate's CKA_ID";
		return;
	}
	f = p11s_object_key_flags(key);
	kf->present = 1;
	kf->matches = pairing == P11S_PAIR_CONFIRMED ? 1 : pairing == P11S_PAIR_MISMATCH ? 0 : -1;
	kf->alg = key_alg(p11s_object_key_type(key));
	kf->alg_name = p11s_key_type_name(p11s_object_key_type(key));
	kf->sensitive = flag(f, P11S_KF_SENSITIVE);
	kf->extractable = flag(f, P11S_KF_EXTRACTABLE);
	kf->can_sign = flag(f, P11S_KF_SIGN);
	kf->can_decrypt = flag(f, P11S_KF_DECRYPT);
	kf->can_unwrap = flag(f, P11S_KF_UNWRAP);
	kf->can_derive = flag(f, P11S_KF_DERIVE);
	kf->uri = p11s_object_uri(key);
	kf->bits = p11s_object_key_bits(key);
	kf->curve = p11s_object_key_curve(key);
}

void p11s_validate_opts_init(p11s_validate_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->warn_days = 30;
}

p11s_rc p11s_validate(X509 *cert, const p11s_key_facts *key, const p11s_validate_opts *opts,
                      p11s_verdict **out, p11s_error *err)
{
	p11s_validate_opts defaults;
	struct facts f;
	p11s_verdict *v;

	if (out != NULL)
		*out = NULL;
	if (cert == NULL || out == NULL)
		return p11i_err(err, P11S_E_USAGE, "p11s_validate: no certificate");
	if (opts == NULL) {
		p11s_validate_opts_init(&defaults);
		opts = &defaults;
	}
	v = calloc(1, sizeof(*v));
	if (v == NULL)
		return p11i_err_nomem(err);
	memset(&f, 0, sizeof(f));
	f.cert = cert;
	f.key = key;
	f.v = v;
	f.at = v->at = opts->at ? opts->at : time(NULL);

	read_names(&f);
	read_usages(&f);
	read_key(&f);
	read_validity(&f);
	v->ca = f.ca;
	v->in_validity = f.nb_cmp != -2 && f.na_cmp != -2 && f.nb_cmp <= 0 && f.na_cmp >= 0;

	v->accepted = 1;
	for (size_t i = 0; i < sizeof(rule_table) / sizeof(rule_table[0]); i++) {
		const struct rule *r = &rule_table[i];
		struct check *c = &v->checks[v->nchecks++];

		c->id = r->id;
		c->decides = r->decides;
		if (f.ca && r->ca_exempt) {
			c->result = P11S_CHECK_SKIP;
			c->message = fmt(v, "CA certificate (Basic Constraints CA:TRUE): exempt");
		} else {
			c->result = r->fn(&f, &c->message);
		}
		if (c->result == P11S_CHECK_FAIL && c->decides)
			v->accepted = 0;
	}
	/* A CA certificate is never used to sign or encrypt mail. */
	v->usable = v->accepted && v->in_validity && !f.ca;
	add_warnings(&f, opts);
	if (key != NULL)
		key_checks(&f);
	chain(&f, opts);
	usage_summary(&f);
	facts_free(&f);
	ERR_clear_error();

	if (v->oom) {
		p11s_verdict_free(v);
		return p11i_err_nomem(err);
	}
	*out = v;
	return P11S_OK;
}

void p11s_verdict_free(p11s_verdict *v)
{
	if (v == NULL)
		return;
	for (size_t i = 0; i < v->nchecks; i++)
		free(v->checks[i].message);
	for (size_t i = 0; i < v->nkeychecks; i++)
		free(v->keychecks[i].message);
	for (size_t i = 0; i < v->nwarnings; i++)
		free(v->warnings[i]);
	free(v->warnings);
	for (size_t i = 0; v->chain_subjects && i < v->chain_len; i++)
		free(v->chain_subjects[i]);
	free(v->chain_subjects);
	free(v->chain_message);
	free(v->no_sign);
	free(v->no_encrypt);
	free(v);
}

int p11s_verdict_accepted(const p11s_verdict *v)
{
	return v && v->accepted;
}

int p11s_verdict_usable_for_outgoing(const p11s_verdict *v)
{
	return v && v->usable;
}

int p11s_verdict_can_sign(const p11s_verdict *v)
{
	return v && v->can_sign;
}

int p11s_verdict_can_encrypt(const p11s_verdict *v)
{
	return v && v->can_encrypt;
}

const char *p11s_verdict_cannot_sign_reason(const p11s_verdict *v)
{
	return v && !v->can_sign ? v->no_sign : NULL;
}

const char *p11s_verdict_cannot_encrypt_reason(const p11s_verdict *v)
{
	return v && !v->can_encrypt ? v->no_encrypt : NULL;
}

int p11s_verdict_is_ca(const p11s_verdict *v)
{
	return v && v->ca;
}

int p11s_verdict_in_validity(const p11s_verdict *v)
{
	return v && v->in_validity;
}

time_t p11s_verdict_time(const p11s_verdict *v)
{
	return v ? v->at : 0;
}

size_t p11s_verdict_check_count(const p11s_verdict *v)
{
	return v ? v->nchecks : 0;
}

const char *p11s_verdict_check_rule(const p11s_verdict *v, size_t i)
{
	return v && i < v->nchecks ? v->checks[i].id : NULL;
}

p11s_check_result p11s_verdict_check_result(const p11s_verdict *v, size_t i)
{
	return v && i < v->nchecks ? v->checks[i].result : P11S_CHECK_SKIP;
}

const char *p11s_verdict_check_message(const p11s_verdict *v, size_t i)
{
	return v && i < v->nchecks ? v->checks[i].message : NULL;
}

int p11s_verdict_check_decides(const p11s_verdict *v, size_t i)
{
	return v && i < v->nchecks ? v->checks[i].decides : 0;
}

char *p11s_verdict_failures(const p11s_verdict *v, int with_messages)
{
	char *out = NULL, *next;

	for (size_t i = 0; v != NULL && i < v->nchecks; i++) {
		if (v->checks[i].result != P11S_CHECK_FAIL || !v->checks[i].decides)
			continue;
		if (with_messages)
			next = p11i_asprintf("%s%s%s: %s", out ? out : "", out ? "; " : "",
			                     p11s_verdict_check_rule(v, i),
			                     p11s_verdict_check_message(v, i));
		else
			next = p11i_asprintf("%s%s%s", out ? out : "", out ? ", " : "",
			                     p11s_verdict_check_rule(v, i));
		free(out);
		out = next;
		if (out == NULL)
			break;
	}
	return out;
}

p11s_check_result p11s_verdict_rule(const p11s_verdict *v, const char *rule, const char **message)
{
	if (message != NULL)
		*message = NULL;
	for (size_t i = 0; v && rule && i < v->nchecks; i++) {
		if (strcmp(v->checks[i].id, rule) != 0)
			continue;
		if (message != NULL)
			*message = v->checks[i].message;
		return v->checks[i].result;
	}
	return P11S_CHECK_SKIP;
}

size_t p11s_verdict_warning_count(const p11s_verdict *v)
{
	return v ? v->nwarnings : 0;
}

const char *p11s_verdict_warning(const p11s_verdict *v, size_t i)
{
	return v && i < v->nwarnings ? v->warnings[i] : NULL;
}

int p11s_verdict_key_checked(const p11s_verdict *v)
{
	return v && v->key_checked;
}

size_t p11s_verdict_key_check_count(const p11s_verdict *v)
{
	return v ? v->nkeychecks : 0;
}

const char *p11s_verdict_key_check_id(const p11s_verdict *v, size_t i)
{
	return v && i < v->nkeychecks ? v->keychecks[i].id : NULL;
}

p11s_check_result p11s_verdict_key_check_result(const p11s_verdict *v, size_t i)
{
	return v && i < v->nkeychecks ? v->keychecks[i].result : P11S_CHECK_SKIP;
}

const char *p11s_verdict_key_check_message(const p11s_verdict *v, size_t i)
{
	return v && i < v->nkeychecks ? v->keychecks[i].message : NULL;
}

p11s_check_result p11s_verdict_chain(const p11s_verdict *v, const char **message)
{
	if (message != NULL)
		*message = v ? v->chain_message : NULL;
	return v ? v->chain : P11S_CHECK_SKIP;
}

size_t p11s_verdict_chain_length(const p11s_verdict *v)
{
	return v ? v->chain_len : 0;
}

const char *p11s_verdict_chain_subject(const p11s_verdict *v, size_t i)
{
	return v && i < v->chain_len ? v->chain_subjects[i] : NULL;
}

const char *p11s_check_result_name(p11s_check_result r)
{
	switch (r) {
	case P11S_CHECK_PASS:
		return "pass";
	case P11S_CHECK_FAIL:
		return "fail";
	default:
		return "skip";
	}
}
