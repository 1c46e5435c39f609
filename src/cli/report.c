/*
 * The CLI's reports: JSON documents and the validate text, from the
 * library's getters.  See report.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "p11smime/certs.h"
#include "p11smime/io.h"
#include "report.h"

/*
 * jansson drops a member whose value could not be made (out of memory)
 * without a word; remembered here so that such a document is refused
 * whole at dump time.  The CLI renders from one thread.
 */
/* Per thread: a batch's workers build their reports at once. */
static _Thread_local int oom;

/* jansson's *_new calls take @p v even when they fail (a NULL @p o or @p v included). */
static void put(json_t *o, const char *key, json_t *v)
{
	if (json_object_set_new(o, key, v) != 0)
		oom = 1;
}

static void push(json_t *a, json_t *v)
{
	if (json_array_append_new(a, v) != 0)
		oom = 1;
}

static json_t *jbool(int v)
{
	return json_boolean(v != 0);
}

static json_t *jint(long long v)
{
	return json_integer((json_int_t)v);
}

/* A positive size, else null (unknown). */
static json_t *jsize(int v)
{
	return v > 0 ? json_integer(v) : json_null();
}

/* The text every --json prints; takes @p doc.  NULL when anything was lost on the way. */
static char *dump(json_t *doc)
{
	char *s =
	    doc != NULL && !oom ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;

	json_decref(doc);
	oom = 0;
	return s;
}

json_t *report_string(const char *s)
{
	json_t *j;
	char *copy;

	if (s == NULL)
		return json_null();
	j = json_string(s);
	if (j != NULL || (copy = strdup(s)) == NULL)
		return j;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

json_t *report_time(time_t t)
{
	char buf[32];

	return json_string(p11s_time_format(t, buf, sizeof(buf)));
}

json_t *report_tristate(int v)
{
	return v < 0 ? json_null() : jbool(v);
}

static json_t *strings(size_t n, const char *(*get)(const void *, size_t), const void *obj)
{
	json_t *a = json_array();

	for (size_t i = 0; a != NULL && i < n; i++)
		push(a, report_string(get(obj, i)));
	if (a == NULL)
		oom = 1;
	return a;
}

static const char *warning_at(const void *v, size_t i)
{
	return p11s_verdict_warning(v, i);
}

json_t *report_checks(const p11s_verdict *v, int key_checks)
{
	json_t *a = json_array();
	size_t n = key_checks ? p11s_verdict_key_check_count(v) : p11s_verdict_check_count(v);

	for (size_t i = 0; a != NULL && i < n; i++) {
		json_t *c = json_object();

		if (key_checks) {
			put(c, "check", report_string(p11s_verdict_key_check_id(v, i)));
			put(c, "result",
			    json_string(
			        p11s_check_result_name(p11s_verdict_key_check_result(v, i))));
			put(c, "message", report_string(p11s_verdict_key_check_message(v, i)));
		} else {
			put(c, "rule", report_string(p11s_verdict_check_rule(v, i)));
			put(c, "result",
			    json_string(p11s_check_result_name(p11s_verdict_check_result(v, i))));
			put(c, "message", report_string(p11s_verdict_check_message(v, i)));
			put(c, "affects_verdict", jbool(p11s_verdict_check_decides(v, i)));
		}
		push(a, c);
	}
	if (a == NULL)
		oom = 1;
	return a;
}

int report_verdict_set(json_t *o, const p11s_verdict *v)
{
	put(o, "verdict",
	    v == NULL ? json_null()
	              : json_string(p11s_verdict_accepted(v) ? "accepted" : "rejected"));
	put(o, "ca", jbool(p11s_verdict_is_ca(v)));
	put(o, "usable_for_outgoing", jbool(p11s_verdict_usable_for_outgoing(v)));
	put(o, "in_validity", jbool(p11s_verdict_in_validity(v)));
	put(o, "checks", report_checks(v, 0));
	put(o, "warnings", strings(p11s_verdict_warning_count(v), warning_at, v));
	return oom ? -1 : 0;
}

json_t *report_verdict(const p11s_verdict *v)
{
	json_t *o;

	if (v == NULL)
		return json_null();
	o = json_object();
	report_verdict_set(o, v);
	return o;
}

/* ------------------------------------------------------------- tokens, list */

static const struct {
	unsigned flag;
	const char *key;
} token_flag_keys[] = {
    {P11S_TOKEN_LOGIN_REQUIRED, "login_required"},
    {P11S_TOKEN_PROTECTED_AUTH_PATH, "protected_auth_path"},
    {P11S_TOKEN_INITIALIZED, "initialized"},
    {P11S_TOKEN_USER_PIN_INITIALIZED, "user_pin_initialized"},
    {P11S_TOKEN_USER_PIN_COUNT_LOW, "user_pin_count_low"},
    {P11S_TOKEN_USER_PIN_FINAL_TRY, "user_pin_final_try"},
    {P11S_TOKEN_USER_PIN_LOCKED, "user_pin_locked"},
    {P11S_TOKEN_USER_PIN_TO_BE_CHANGED, "user_pin_to_be_changed"},
    {P11S_TOKEN_WRITE_PROTECTED, "write_protected"},
    {P11S_TOKEN_HW_SLOT, "hardware_slot"},
    {P11S_TOKEN_REMOVABLE, "removable"},
};

static json_t *token_json(const p11s_token *t)
{
	json_t *o = json_object(), *f = json_object();
	unsigned flags = p11s_token_flags(t);

	for (size_t i = 0; i < sizeof(token_flag_keys) / sizeof(token_flag_keys[0]); i++)
		put(f, token_flag_keys[i].key, jbool(flags & token_flag_keys[i].flag));
	put(o, "uri", report_string(p11s_token_uri(t)));
	put(o, "label", report_string(p11s_token_label(t)));
	put(o, "manufacturer", report_string(p11s_token_manufacturer(t)));
	put(o, "model", report_string(p11s_token_model(t)));
	put(o, "serial", report_string(p11s_token_serial(t)));
	put(o, "slot_id", jint((long long)p11s_token_slot_id(t)));
	put(o, "slot_description", report_string(p11s_token_slot_description(t)));
	put(o, "flags", f);
	return o;
}

char *report_tokens_json(const p11s_token_list *list)
{
	json_t *doc = json_object(), *arr = json_array();

	for (size_t i = 0; i < p11s_token_list_count(list); i++)
		push(arr, token_json(p11s_token_list_get(list, i)));
	put(doc, "tokens", arr);
	return dump(doc);
}

static json_t *uri_of(const p11s_object *o)
{
	return o ? report_string(p11s_object_uri(o)) : json_null();
}

static void key_members(json_t *j, const p11s_object *o)
{
	unsigned kf = p11s_object_key_flags(o);

	put(j, "key_type", json_string(p11s_key_type_name(p11s_object_key_type(o))));
	put(j, "key_bits", jsize(p11s_object_key_bits(o)));
	put(j, "curve", report_string(p11s_object_key_curve(o)));
	if (p11s_object_get_class(o) == P11S_OBJ_PRIVATE_KEY) {
		put(j, "sensitive", jbool(kf & P11S_KF_SENSITIVE));
		put(j, "extractable", jbool(kf & P11S_KF_EXTRACTABLE));
		put(j, "sign", jbool(kf & P11S_KF_SIGN));
		put(j, "decrypt", jbool(kf & P11S_KF_DECRYPT));
		put(j, "derive", jbool(kf & P11S_KF_DERIVE));
		put(j, "unwrap", jbool(kf & P11S_KF_UNWRAP));
		put(j, "always_authenticate", jbool(kf & P11S_KF_ALWAYS_AUTHENTICATE));
		put(j, "private", jbool(kf & P11S_KF_PRIVATE));
		put(j, "local", jbool(kf & P11S_KF_LOCAL));
		put(j, "never_extractable", jbool(kf & P11S_KF_NEVER_EXTRACTABLE));
		put(j, "always_sensitive", jbool(kf & P11S_KF_ALWAYS_SENSITIVE));
		put(j, "certificate", uri_of(p11s_object_certificate(o)));
	} else {
		put(j, "verify", jbool(kf & P11S_KF_VERIFY));
		put(j, "encrypt", jbool(kf & P11S_KF_ENCRYPT));
		put(j, "derive", jbool(kf & P11S_KF_DERIVE));
		put(j, "wrap", jbool(kf & P11S_KF_WRAP));
	}
}

static const char *email_at(const void *ci, size_t i)
{
	return ((const p11s_cert_info *)ci)->emails[i];
}

static void cert_members(json_t *j, const p11s_object *o)
{
	p11s_cert_info *ci = NULL;
	const unsigned char *der;
	size_t derlen;

	put(j, "private_key", uri_of(p11s_object_private_key(o)));
	put(j, "pairing", json_string(p11s_pairing_name(p11s_object_pairing(o))));
	put(j, "pairing_evidence",
	    json_string(p11s_pair_evidence_name(p11s_object_pairing_evidence(o))));
	put(j, "same_id_key", uri_of(p11s_object_id_key(o)));
	der = p11s_object_value(o, &derlen);
	/* Parsed without the public key, which nothing listed needs decoded. */
	if (der == NULL || p11s_cert_describe_der(der, derlen, &ci, NULL) != P11S_OK) {
		/* Still listed, so that a person sees the broken object. */
		put(j, "parse_error", json_true());
		put(j, "emails", json_array());
		return;
	}
	put(j, "emails", strings(ci->nemails, email_at, ci));
	put(j, "subject", report_string(ci->subject));
	put(j, "issuer", report_string(ci->issuer));
	put(j, "serial", report_string(ci->serial));
	put(j, "not_before", report_time(ci->not_before));
	put(j, "not_after", report_time(ci->not_after));
	put(j, "key_algorithm", report_string(ci->key_algorithm));
	put(j, "key_bits", jsize(ci->key_bits));
	put(j, "curve", report_string(ci->curve));
	p11s_cert_info_free(ci);
}

/* @p len bytes as lower-case hex into @p out (2 * len + 1 bytes). */
static char *hex_into(char *out, const unsigned char *buf, size_t len)
{
	out[0] = '\0';
	for (size_t i = 0; i < len; i++)
		snprintf(out + 2 * i, 3, "%02x", buf[i]);
	return out;
}

static json_t *hex(const unsigned char *buf, size_t len)
{
	char *s = malloc(len * 2 + 1);
	json_t *j = s ? json_string(hex_into(s, buf, len)) : NULL;

	free(s);
	return j;
}

char *report_objects_json_array(const p11s_object *const *objs, size_t n)
{
	json_t *doc = json_object(), *arr = json_array();

	for (size_t i = 0; i < n; i++) {
		const p11s_object *o = objs[i];
		json_t *j = json_object();
		size_t idlen = 0;
		const unsigned char *id = p11s_object_id(o, &idlen);

		put(j, "uri", report_string(p11s_object_uri(o)));
		put(j, "class", json_string(p11s_object_class_name(p11s_object_get_class(o))));
		put(j, "label", report_string(p11s_object_label(o)));
		put(j, "id", hex(id, id ? idlen : 0));
		put(j, "token", report_string(p11s_token_uri(p11s_object_token(o))));
		if (p11s_object_get_class(o) == P11S_OBJ_CERTIFICATE)
			cert_members(j, o);
		else
			key_members(j, o);
		push(arr, j);
	}
	put(doc, "objects", arr);
	return dump(doc);
}

char *report_objects_json(const p11s_object_list *list)
{
	size_t n = p11s_object_list_count(list);
	const p11s_object **v = calloc(n ? n : 1, sizeof(*v));
	char *doc;

	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		v[i] = p11s_object_list_get(list, i);
	doc = report_objects_json_array(v, n);
	free(v);
	return doc;
}

/* ------------------------------------------------------------------ validate */

/*
 * A certificate as the validate report shows it: the description `list`
 * gives, the key algorithm by its own name ("RSA", "EC", "ED25519", an
 * OID) and the SHA-256 fingerprint.
 */
struct view {
	p11s_cert_info *ci; /* NULL when the certificate cannot be described */
	char alg[96];
	char nb[32], na[32];
	char fp[2 * EVP_MAX_MD_SIZE + 1];
};

static void view_init(struct view *w, X509 *x)
{
	X509_PUBKEY *xpk = X509_get_X509_PUBKEY(x);
	ASN1_OBJECT *obj = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (p11s_cert_describe(x, &w->ci, NULL) != P11S_OK)
		w->ci = NULL;
	snprintf(w->alg, sizeof(w->alg), "?");
	if (xpk != NULL && X509_PUBKEY_get0_param(&obj, NULL, NULL, NULL, xpk) == 1 &&
	    obj != NULL) {
		int nid = OBJ_obj2nid(obj);

		if (nid == NID_rsaEncryption)
			snprintf(w->alg, sizeof(w->alg), "RSA");
		else if (nid == NID_X9_62_id_ecPublicKey)
			snprintf(w->alg, sizeof(w->alg), "EC");
		else if (nid != NID_undef)
			snprintf(w->alg, sizeof(w->alg), "%s", OBJ_nid2sn(nid));
		else
			OBJ_obj2txt(w->alg, (int)sizeof(w->alg), obj, 1);
	}
	snprintf(w->nb, sizeof(w->nb), "?");
	snprintf(w->na, sizeof(w->na), "?");
	if (w->ci != NULL) {
		p11s_time_format(w->ci->not_before, w->nb, sizeof(w->nb));
		p11s_time_format(w->ci->not_after, w->na, sizeof(w->na));
	}
	if (X509_digest(x, EVP_sha256(), md, &len) != 1)
		len = 0;
	hex_into(w->fp, md, len);
	ERR_clear_error();
}

static const struct {
	unsigned bit;
	const char *name;
} flag_names[] = {
    {P11S_KF_SIGN, "sign"},
    {P11S_KF_DECRYPT, "decrypt"},
    {P11S_KF_UNWRAP, "unwrap"},
    {P11S_KF_DERIVE, "derive"},
    {P11S_KF_SENSITIVE, "sensitive"},
    {P11S_KF_EXTRACTABLE, "extractable"},
    {P11S_KF_ALWAYS_AUTHENTICATE, "always-authenticate"},
    {P11S_KF_LOCAL, "local"},
    {P11S_KF_NEVER_EXTRACTABLE, "never-extractable"},
    {P11S_KF_ALWAYS_SENSITIVE, "always-sensitive"},
};

static json_t *key_json(const p11s_validation_key *k, const p11s_verdict *v)
{
	json_t *o, *flags;

	if (k->unchecked != NULL) {
		o = json_object();
		put(o, "checked", json_false());
		put(o, "reason", report_string(k->unchecked));
		return o;
	}
	if (!k->known)
		return json_null();
	o = json_object();
	put(o, "checked", json_true());
	put(o, "present", jbool(k->present));
	put(o, "matches", k->present ? report_tristate(k->matches) : json_null());
	put(o, "on_token", jbool(k->on_token));
	if (k->present) {
		put(o, "uri", report_string(k->uri));
		put(o, "type", report_string(k->type));
		put(o, "bits", jsize(k->bits));
		put(o, "curve", report_string(k->curve));
		if (k->flags_known) {
			put(o, "sensitive", jbool(k->sensitive));
			put(o, "extractable", jbool(k->extractable));
			flags = json_array();
			for (size_t i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
				if (k->flags & flag_names[i].bit)
					push(flags, json_string(flag_names[i].name));
			put(o, "flags", flags);
		}
	}
	put(o, "checks", report_checks(v, 1));
	return o;
}

static json_t *chain_json(const p11s_verdict *v)
{
	const char *msg;
	p11s_check_result res = p11s_verdict_chain(v, &msg);
	json_t *o = json_object(), *path = json_array();

	for (size_t i = 0; i < p11s_verdict_chain_length(v); i++)
		push(path, report_string(p11s_verdict_chain_subject(v, i)));
	put(o, "result", json_string(p11s_check_result_name(res)));
	put(o, "trusted", jbool(res == P11S_CHECK_PASS));
	put(o, "message", report_string(msg));
	put(o, "path", path);
	return o;
}

static json_t *entry_json(const p11s_validation *r, size_t i)
{
	const p11s_verdict *v = p11s_validation_verdict(r, i);
	p11s_validation_key k;
	struct view w;
	json_t *o = json_object(), *pk = json_object();

	view_init(&w, p11s_validation_cert(r, i));
	p11s_validation_key_info(r, i, &k);
	put(o, "source", report_string(p11s_validation_source(r, i)));
	put(o, "index", jint((long long)p11s_validation_index(r, i)));
	put(o, "origin", report_string(p11s_validation_origin(r, i)));
	put(o, "subject", report_string(w.ci ? w.ci->subject : NULL));
	put(o, "emails", w.ci ? strings(w.ci->nemails, email_at, w.ci) : json_array());
	/* Placeholders: report_verdict_set() fills them where validate has always had them. */
	put(o, "ca", json_null());
	put(o, "verdict", json_null());
	put(o, "usable_for_outgoing", json_null());
	put(o, "can_sign", jbool(p11s_verdict_can_sign(v)));
	put(o, "can_encrypt", jbool(p11s_verdict_can_encrypt(v)));
	put(o, "cannot_sign_reason", report_string(p11s_verdict_cannot_sign_reason(v)));
	put(o, "cannot_encrypt_reason", report_string(p11s_verdict_cannot_encrypt_reason(v)));
	report_verdict_set(o, v);
	put(o, "key", key_json(&k, v));
	put(o, "chain", chain_json(v));
	put(o, "format", report_string(p11s_validation_format(r, i)));
	put(o, "issuer", report_string(w.ci ? w.ci->issuer : NULL));
	put(o, "serial", report_string(w.ci ? w.ci->serial : NULL));
	put(o, "not_before", report_string(w.nb));
	put(o, "not_after", report_string(w.na));
	put(o, "sha256_fingerprint", report_string(w.fp[0] ? w.fp : NULL));
	put(pk, "algorithm", report_string(w.alg));
	put(pk, "bits", jsize(w.ci ? w.ci->key_bits : 0));
	put(pk, "curve", report_string(w.ci ? w.ci->curve : NULL));
	put(o, "public_key", pk);
	p11s_cert_info_free(w.ci);
	return o;
}

char *report_validation_json(const p11s_validation *r)
{
	json_t *root = json_object(), *certs = json_array(), *errors = json_array(),
	       *skipped = json_array(), *summary = json_object();
	size_t n = p11s_validation_count(r), nerrors = p11s_validation_error_count(r), accepted = 0;

	for (size_t i = 0; i < n; i++) {
		push(certs, entry_json(r, i));
		accepted += p11s_verdict_accepted(p11s_validation_verdict(r, i)) != 0;
	}
	for (size_t i = 0; i < nerrors; i++) {
		json_t *e = json_object();

		put(e, "source", report_string(p11s_validation_error_source(r, i)));
		put(e, "message", report_string(p11s_validation_error_message(r, i)));
		put(e, "code", json_string(p11s_rc_name(p11s_validation_error_rc(r, i))));
		push(errors, e);
	}
	for (size_t i = 0; i < p11s_validation_skipped_count(r); i++)
		push(skipped, report_string(p11s_validation_skipped(r, i)));
	put(root, "certificates", certs);
	put(root, "errors", errors);
	put(root, "skipped", skipped);
	put(root, "at", report_time(p11s_validation_time(r)));
	put(summary, "certificates", jint((long long)n));
	put(summary, "accepted", jint((long long)accepted));
	put(summary, "rejected", jint((long long)(n - accepted)));
	put(summary, "errors", jint((long long)nerrors));
	put(root, "summary", summary);
	return dump(root);
}

static const char *mark(p11s_check_result r)
{
	return r == P11S_CHECK_PASS ? "pass" : r == P11S_CHECK_FAIL ? "FAIL" : "skip";
}

static void entry_text(FILE *fp, const p11s_validation *r, size_t i)
{
	const p11s_verdict *v = p11s_validation_verdict(r, i);
	const char *origin = p11s_validation_origin(r, i);
	p11s_validation_key k;
	struct view w;
	const p11s_cert_info *ci;
	const char *msg;
	p11s_check_result chain;

	view_init(&w, p11s_validation_cert(r, i));
	p11s_validation_key_info(r, i, &k);
	ci = w.ci;
	fprintf(fp, "certificate %zu/%zu: %s", i + 1, p11s_validation_count(r),
	        p11s_validation_source(r, i));
	if (origin && strcmp(origin, "file") == 0)
		fprintf(fp, " [%zu]", p11s_validation_index(r, i));
	fprintf(fp, "\n  subject   %s\n", ci ? ci->subject : "?");
	fprintf(fp, "  e-mail    ");
	for (size_t j = 0; ci && j < ci->nemails; j++)
		fprintf(fp, "%s%s", j ? ", " : "", ci->emails[j]);
	fprintf(fp, "%s\n", ci && ci->nemails ? "" : "(none in the SAN)");
	fprintf(fp, "  key       %s", w.alg);
	if (ci && ci->curve)
		fprintf(fp, " %s", ci->curve);
	else if (ci && ci->key_bits > 0)
		fprintf(fp, " %d", ci->key_bits);
	fprintf(fp, "%s\n", p11s_verdict_is_ca(v) ? ", CA certificate" : "");
	fprintf(fp, "  validity  %s .. %s\n", w.nb, w.na);

	fprintf(fp, "  rules\n");
	for (size_t j = 0; j < p11s_verdict_check_count(v); j++)
		fprintf(fp, "    %s  %-22s %s\n", mark(p11s_verdict_check_result(v, j)),
		        p11s_verdict_check_rule(v, j), p11s_verdict_check_message(v, j));
	for (size_t j = 0; j < p11s_verdict_warning_count(v); j++)
		fprintf(fp, "  warning   %s\n", p11s_verdict_warning(v, j));
	if (k.unchecked != NULL) {
		fprintf(fp, "  private key: not checked: %s\n", k.unchecked);
	} else if (k.known) {
		fprintf(fp, "  private key");
		if (k.present) {
			fprintf(fp, " %s", k.type ? k.type : "?");
			if (k.curve)
				fprintf(fp, " %s", k.curve);
			else if (k.bits > 0)
				fprintf(fp, " %d", k.bits);
			if (k.flags_known) {
				fprintf(fp, " [");
				for (size_t j = 0, n = 0;
				     j < sizeof(flag_names) / sizeof(flag_names[0]); j++)
					if (k.flags & flag_names[j].bit)
						fprintf(fp, "%s%s", n++ ? " " : "",
						        flag_names[j].name);
				fprintf(fp, "]");
			}
		}
		fprintf(fp, "\n");
		for (size_t j = 0; j < p11s_verdict_key_check_count(v); j++)
			fprintf(fp, "    %s  %-22s %s\n", mark(p11s_verdict_key_check_result(v, j)),
			        p11s_verdict_key_check_id(v, j),
			        p11s_verdict_key_check_message(v, j));
	}
	chain = p11s_verdict_chain(v, &msg);
	fprintf(fp, "  chain     %s  %s\n", mark(chain), msg ? msg : "");

	if (!p11s_verdict_accepted(v)) {
		fprintf(fp, "  verdict   REJECTED by");
		for (size_t j = 0, n = 0; j < p11s_verdict_check_count(v); j++)
			if (p11s_verdict_check_result(v, j) == P11S_CHECK_FAIL &&
			    p11s_verdict_check_decides(v, j))
				fprintf(fp, "%s %s", n++ ? "," : "", p11s_verdict_check_rule(v, j));
		fprintf(fp, "; not usable for outgoing mail\n");
	} else if (p11s_verdict_is_ca(v)) {
		fprintf(fp, "  verdict   ACCEPTED (a CA certificate, exempt from the mail rules); "
		            "not used for outgoing mail\n");
	} else if (!p11s_verdict_usable_for_outgoing(v)) {
		fprintf(fp, "  verdict   ACCEPTED, but NOT USABLE for outgoing mail: outside its "
		            "validity\n");
	} else {
		fprintf(fp, "  verdict   ACCEPTED, usable for outgoing mail\n");
		fprintf(fp, "            sign: %s%s%s\n", p11s_verdict_can_sign(v) ? "yes" : "no",
		        p11s_verdict_can_sign(v) ? "" : " - ",
		        p11s_verdict_can_sign(v) ? "" : p11s_verdict_cannot_sign_reason(v));
		fprintf(fp, "            encrypt: %s%s%s\n",
		        p11s_verdict_can_encrypt(v) ? "yes" : "no",
		        p11s_verdict_can_encrypt(v) ? "" : " - ",
		        p11s_verdict_can_encrypt(v) ? "" : p11s_verdict_cannot_encrypt_reason(v));
	}
	p11s_cert_info_free(w.ci);
}

char *report_validation_text(const p11s_validation *r)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);
	size_t n = p11s_validation_count(r), nerrors = p11s_validation_error_count(r);
	size_t accepted = 0, usable = 0;
	char at[32];

	if (fp == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const p11s_verdict *v = p11s_validation_verdict(r, i);

		entry_text(fp, r, i);
		fputc('\n', fp);
		accepted += p11s_verdict_accepted(v) != 0;
		usable += p11s_verdict_usable_for_outgoing(v) != 0;
	}
	for (size_t i = 0; i < p11s_validation_skipped_count(r); i++)
		fprintf(fp, "skipped %s\n", p11s_validation_skipped(r, i));
	p11s_time_format(p11s_validation_time(r), at, sizeof(at));
	fprintf(fp,
	        "%zu certificate%s judged at %s: %zu accepted, %zu rejected, %zu usable for "
	        "outgoing mail",
	        n, n == 1 ? "" : "s", at, accepted, n - accepted, usable);
	if (nerrors > 0)
		fprintf(fp, "; %zu error%s", nerrors, nerrors == 1 ? "" : "s");
	fputc('\n', fp);
	if (fclose(fp) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* -------------------------------------------------------------------- verify */

/* The overall verdict as docs/man/p11smime-verify.1 names it. */
static const char *overall_name(p11s_rc rc)
{
	switch (rc) {
	case P11S_OK:
		return "good";
	case P11S_E_BAD_SIGNATURE:
		return "bad-signature";
	case P11S_E_UNTRUSTED:
		return "untrusted";
	case P11S_E_SENDER_MISMATCH:
		return "sender-mismatch";
	case P11S_E_CRYPTO:
		return "unsupported";
	default:
		return p11s_rc_name(rc);
	}
}

static json_t *signer_json(const p11s_verify_report *r, size_t i)
{
	json_t *o = json_object(), *emails = json_array(), *chain = json_array();
	time_t st, nb, na;

	for (size_t j = 0; j < p11s_verify_signer_email_count(r, i); j++)
		push(emails, report_string(p11s_verify_signer_email(r, i, j)));
	for (size_t j = 0; j < p11s_verify_signer_chain_count(r, i); j++)
		push(chain, report_string(p11s_verify_signer_chain_subject(r, i, j)));
	put(o, "verdict", json_string(p11s_sig_verdict_name(p11s_verify_signer_verdict(r, i))));
	put(o, "reason", report_string(p11s_verify_signer_reason(r, i)));
	put(o, "subject", report_string(p11s_verify_signer_subject(r, i)));
	put(o, "emails", emails);
	put(o, "sender_matched_by", report_string(p11s_verify_signer_sender_matched_by(r, i)));
	put(o, "issuer", report_string(p11s_verify_signer_issuer(r, i)));
	put(o, "serial", report_string(p11s_verify_signer_serial(r, i)));
	put(o, "signing_time",
	    p11s_verify_signer_signing_time(r, i, &st) ? report_time(st) : json_null());
	put(o, "digest", report_string(p11s_verify_signer_digest(r, i)));
	put(o, "signature_algorithm", report_string(p11s_verify_signer_signature_alg(r, i)));
	if (p11s_verify_signer_validity(r, i, &nb, &na)) {
		put(o, "not_before", report_time(nb));
		put(o, "not_after", report_time(na));
	} else {
		put(o, "not_before", json_null());
		put(o, "not_after", json_null());
	}
	put(o, "chain_checked_at", report_time(p11s_verify_signer_checked_at(r, i)));
	put(o, "valid_at_signing_time", report_tristate(p11s_verify_signer_valid_at_signing(r, i)));
	put(o, "valid_at", report_tristate(p11s_verify_signer_valid_at(r, i, NULL)));
	put(o, "chain", chain);
	put(o, "rules", report_verdict(p11s_verify_signer_rules(r, i)));
	return o;
}

char *report_verify_json(const p11s_verify_report *r)
{
	json_t *root = json_object(), *signers = json_array(), *from = json_array();

	for (size_t i = 0; i < p11s_verify_report_from_count(r); i++)
		push(from, report_string(p11s_verify_report_from(r, i)));
	for (size_t i = 0; i < p11s_verify_report_signer_count(r); i++)
		push(signers, signer_json(r, i));
	put(root, "verdict", json_string(overall_name(p11s_verify_report_rc(r))));
	put(root, "summary", report_string(p11s_verify_report_summary(r)));
	put(root, "format", report_string(p11s_verify_report_format(r)));
	put(root, "at", report_time(p11s_verify_report_time(r)));
	put(root, "from", from);
	put(root, "sender_matches", report_tristate(p11s_verify_report_sender_ok(r)));
	if (p11s_verify_report_from_error(r) != NULL)
		put(root, "from_error", report_string(p11s_verify_report_from_error(r)));
	put(root, "signers", signers);
	return dump(root);
}

/* ------------------------------------------------------------------- decrypt */

/* A RecipientInfo: its type and identifier, and with @p matched whether it was ours. */
static json_t *rcpt_json(const p11s_decrypt_report *r, size_t i, int with_matched)
{
	const char *issuer, *serial, *ski;
	int matched;
	const char *type = p11s_decrypt_report_recipient(r, i, &issuer, &serial, &ski, &matched);
	json_t *j = json_object();

	put(j, "type", report_string(type));
	if (ski != NULL) {
		put(j, "subject_key_identifier", report_string(ski));
	} else {
		put(j, "issuer", report_string(issuer));
		put(j, "serial", report_string(serial));
	}
	if (with_matched)
		put(j, "matched", jbool(matched));
	return j;
}

char *report_decrypt_json(const p11s_decrypt_report *r)
{
	json_t *root = json_object(), *arr = json_array(), *notes = json_array();
	const p11s_cert_info *info = p11s_decrypt_report_certificate_info(r);
	const char *mech = p11s_decrypt_report_mechanism(r);
	long chosen = p11s_decrypt_report_chosen(r);
	p11s_decrypt_key_encryption ke;

	put(root, "content_type", json_string(p11s_decrypt_report_content_type(r)));
	put(root, "decrypted", jbool(p11s_decrypt_report_complete(r)));
	for (size_t i = 0; i < p11s_decrypt_report_recipient_count(r); i++)
		push(arr, rcpt_json(r, i, 1));
	put(root, "recipients", arr);
	if (chosen >= 0) {
		json_t *j = rcpt_json(r, (size_t)chosen, 0);

		if (info != NULL) {
			json_t *c = json_object();

			put(c, "subject", report_string(info->subject));
			put(c, "issuer", report_string(info->issuer));
			put(c, "serial", report_string(info->serial));
			put(c, "emails", strings(info->nemails, email_at, info));
			put(c, "not_before", report_time(info->not_before));
			put(c, "not_after", report_time(info->not_after));
			put(c, "expired", jbool(p11s_decrypt_report_expired(r)));
			put(c, "not_yet_valid", jbool(p11s_decrypt_report_not_yet_valid(r)));
			put(c, "certificate_uri",
			    report_string(p11s_decrypt_report_certificate_uri(r)));
			report_verdict_set(c, p11s_decrypt_report_verdict(r));
			put(j, "certificate", c);
		}
		put(root, "recipient", j);
	} else {
		put(root, "recipient", json_null());
	}
	put(root, "key_uri", report_string(p11s_decrypt_report_key_uri(r)));
	if (p11s_decrypt_report_key_encryption_params(r, &ke)) {
		json_t *k = json_object();

		put(k, "algorithm", report_string(ke.algorithm));
		put(k, "description", report_string(ke.description));
		if (ke.oaep_hash != NULL) {
			put(k, "oaep_hash", report_string(ke.oaep_hash));
			put(k, "mgf1_hash", report_string(ke.mgf1_hash));
			put(k, "oaep_label", report_string(ke.oaep_label));
		}
		if (ke.kdf != NULL) {
			put(k, "kdf", report_string(ke.kdf));
			put(k, "key_wrap", report_string(ke.key_wrap));
			put(k, "curve", report_string(ke.curve));
		}
		put(root, "key_encryption", k);
	} else {
		put(root, "key_encryption", json_null());
	}
	put(root, "content_cipher", report_string(p11s_decrypt_report_content_cipher(r)));
	put(root, "mechanism", report_string(mech));
	put(root, "padding_in_software", jbool(mech != NULL && strcmp(mech, "CKM_RSA_X_509") == 0));
	put(root, "authenticated", jbool(p11s_decrypt_report_authenticated(r)));
	put(root, "auth_attributes", jbool(p11s_decrypt_report_auth_attributes(r)));
	put(root, "content_bytes", jint((long long)p11s_decrypt_report_content_bytes(r)));
	put(root, "at", report_time(p11s_decrypt_report_time(r)));
	for (size_t i = 0; i < p11s_decrypt_report_note_count(r); i++)
		push(notes, report_string(p11s_decrypt_report_note(r, i)));
	put(root, "notes", notes);
	return dump(root);
}

/* ---------------------------------------------------------------- sign, encrypt */

char *report_signer_json(const p11s_signer *s)
{
	json_t *o = json_object();

	put(o, "signer", report_string(p11s_signer_uri(s)));
	put(o, "key", report_string(p11s_signer_key_uri(s)));
	put(o, "subject", report_string(p11s_signer_subject(s)));
	put(o, "digest", report_string(p11s_signer_digest(s)));
	put(o, "micalg", report_string(p11s_signer_micalg(s)));
	put(o, "signature_algorithm", report_string(p11s_signer_algorithm(s)));
	put(o, "mechanism", report_string(p11s_signer_mechanism(s)));
	put(o, "format", report_string(p11s_signer_format(s)));
	put(o, "certificates", jint((long long)p11s_signer_certificate_count(s)));
	return dump(o);
}

char *report_batch_json(char *doc, const char *file, const char *output)
{
	json_t *o = doc != NULL ? json_loads(doc, 0, NULL) : NULL;

	free(doc);
	if (!json_is_object(o)) {
		json_decref(o);
		return NULL;
	}
	/* First, so that a person reading a batch's reports sees which file each is. */
	json_object_del(o, "file");
	json_object_del(o, "output");
	{
		json_t *n = json_object();

		put(n, "file", report_string(file));
		put(n, "output", report_string(output));
		if (json_object_update(n, o) != 0)
			oom = 1;
		json_decref(o);
		return dump(n);
	}
}

char *report_encrypt_json(const p11s_recipients *r, const p11s_encrypt_opts *opts)
{
	json_t *root = json_object(), *list = json_array();

	for (size_t i = 0; i < p11s_recipients_count(r); i++) {
		X509 *x = p11s_recipients_cert(r, i);
		p11s_cert_info *ci = NULL;
		json_t *o = json_object();

		if (p11s_cert_describe(x, &ci, NULL) != P11S_OK)
			ci = NULL;
		ERR_clear_error();
		put(o, "source", report_string(p11s_recipients_source(r, i)));
		put(o, "subject", report_string(ci ? ci->subject : NULL));
		put(o, "emails", ci ? strings(ci->nemails, email_at, ci) : json_array());
		put(o, "serial", report_string(ci ? ci->serial : NULL));
		put(o, "key_management", report_string(p11s_encrypt_key_management(x, opts)));
		push(list, o);
		p11s_cert_info_free(ci);
	}
	put(root, "cipher", report_string(p11s_cipher_name(opts->cipher)));
	put(root, "content_type",
	    json_string(opts->cipher == P11S_CIPHER_AES256_GCM
	                    ? "application/pkcs7-mime; smime-type=authEnveloped-data"
	                    : "application/pkcs7-mime; smime-type=enveloped-data"));
	put(root, "recipients", list);
	return dump(root);
}

/* ------------------------------------------------------------------ lifecycle */

char *report_keygen_json(const p11s_keygen_result *r)
{
	json_t *o = json_object();

	put(o, "token", report_string(r->token_uri));
	put(o, "private_key", report_string(r->private_uri));
	put(o, "public_key", report_string(r->public_uri));
	put(o, "id", report_string(r->id));
	put(o, "label", report_string(r->label));
	put(o, "type", report_string(r->type));
	put(o, "mechanism", report_string(r->mechanism));
	return dump(o);
}

char *report_import_json(const p11s_import_result *r)
{
	json_t *o = json_object(), *chain = json_array();

	for (size_t i = 0; i < r->chain_count; i++)
		push(chain, report_string(r->chain_uris[i]));
	put(o, "certificate", report_string(r->cert_uri));
	put(o, "already_present", jbool(r->already));
	put(o, "private_key", report_string(r->key_uri));
	put(o, "public_key", report_string(r->public_uri));
	put(o, "key_written", jbool(r->key_written));
	put(o, "key_local", r->key_written ? json_false() : json_null());
	put(o, "chain", chain);
	put(o, "subject", report_string(r->subject));
	return dump(o);
}

char *report_delete_json(const p11s_delete_plan *p, int deleted)
{
	json_t *o = json_object(), *objs = json_array();

	for (size_t i = 0; i < p11s_delete_plan_count(p); i++) {
		json_t *e = json_object();

		put(e, "uri", report_string(p11s_delete_plan_uri(p, i)));
		put(e, "class", json_string(p11s_object_class_name(p11s_delete_plan_class(p, i))));
		push(objs, e);
	}
	put(o, "deleted", jbool(deleted));
	put(o, "objects", objs);
	return dump(o);
}
