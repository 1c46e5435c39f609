/*
 * A validation run: gathers certificates from files and tokens, feeds the
 * pure rules engine, and renders the report as JSON (jansson) and text.
 * Token facts come through the p11s_ token API only.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "p11smime/certs.h"
#include "p11smime/listing.h"
#include "p11smime/util.h"
#include "p11smime/validate.h"

/* What the report shows of the private key beside the engine's key checks. */
struct keyinfo {
	char *uri;
	const char *type; /* static */
	int bits;
	char *curve;
	unsigned flags;
	int flags_known; /* token key: flags, sensitive, extractable read */
	int on_token;
};

struct entry {
	char *source;
	size_t index;
	const char *origin; /* "token" or "file"; static */
	const char *format; /* "PEM", ... or NULL for token certificates; static */
	X509 *cert;
	int has_facts;
	p11s_key_facts facts; /* strings point into key */
	struct keyinfo key;
	char *key_unchecked; /* why no key checks for a token certificate, or NULL */
	p11s_verdict *v;
};

struct problem {
	char *source;
	char *message;
	p11s_rc rc;
};

struct p11s_validation {
	p11s_validation_opts opts;
	char *p12_pass;
	time_t at;
	struct entry *e;
	size_t n, cap;
	struct problem *errors;
	size_t nerrors;
	char **skipped;
	size_t nskipped;
	STACK_OF(X509) * anchors;
	STACK_OF(X509) * untrusted;
	int ran;
};

/* ------------------------------------------------------------- plumbing */

void p11s_validation_opts_init(p11s_validation_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->warn_days = 30;
}

p11s_rc p11s_validation_new(const p11s_validation_opts *opts, p11s_validation **out,
                            p11s_error *err)
{
	p11s_validation *r = calloc(1, sizeof(*r));

	*out = NULL;
	if (r == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	if (opts != NULL)
		r->opts = *opts;
	else
		p11s_validation_opts_init(&r->opts);
	r->opts.p12_pass = NULL;
	r->at = r->opts.at ? r->opts.at : time(NULL);
	r->anchors = sk_X509_new_null();
	r->untrusted = sk_X509_new_null();
	if (opts != NULL && opts->p12_pass != NULL)
		r->p12_pass = strdup(opts->p12_pass);
	if (r->anchors == NULL || r->untrusted == NULL ||
	    (opts != NULL && opts->p12_pass != NULL && r->p12_pass == NULL)) {
		p11s_validation_free(r);
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	}
	*out = r;
	return P11S_OK;
}

static void entry_clear(struct entry *e)
{
	free(e->source);
	X509_free(e->cert);
	free(e->key.uri);
	free(e->key.curve);
	free(e->key_unchecked);
	p11s_verdict_free(e->v);
}

void p11s_validation_free(p11s_validation *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n; i++)
		entry_clear(&r->e[i]);
	free(r->e);
	for (size_t i = 0; i < r->nerrors; i++) {
		free(r->errors[i].source);
		free(r->errors[i].message);
	}
	free(r->errors);
	for (size_t i = 0; i < r->nskipped; i++)
		free(r->skipped[i]);
	free(r->skipped);
	sk_X509_pop_free(r->anchors, X509_free);
	sk_X509_pop_free(r->untrusted, X509_free);
	p11s_wipe_free(r->p12_pass);
	free(r);
}

/* Record an error for the report and hand it back to the caller too. */
static p11s_rc record(p11s_validation *r, const char *source, p11s_rc rc, const char *message,
                      p11s_error *err)
{
	struct problem *grown = realloc(r->errors, (r->nerrors + 1) * sizeof(*grown));

	if (grown != NULL) {
		r->errors = grown;
		r->errors[r->nerrors].source = p11s_strdup(source ? source : "");
		r->errors[r->nerrors].message = p11s_strdup(message);
		r->errors[r->nerrors].rc = rc;
		r->nerrors++;
	}
	if (err != NULL && p11s_error_rc(err) != rc)
		p11s_err(err, rc, "%s", message);
	return rc;
}

static int skip_note(p11s_validation *r, const char *path, const char *why)
{
	char **grown = realloc(r->skipped, (r->nskipped + 1) * sizeof(*grown));
	char *s = p11s_asprintf("%s: %s", path, why);

	if (grown == NULL || s == NULL) {
		free(s);
		if (grown != NULL)
			r->skipped = grown;
		return 0;
	}
	r->skipped = grown;
	r->skipped[r->nskipped++] = s;
	return 1;
}

static struct entry *entry_add(p11s_validation *r, const char *source, size_t index, X509 *cert)
{
	struct entry *e;

	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct entry *grown = realloc(r->e, cap * sizeof(*grown));

		if (grown == NULL)
			return NULL;
		r->e = grown;
		r->cap = cap;
	}
	e = &r->e[r->n];
	memset(e, 0, sizeof(*e));
	e->source = p11s_strdup(source);
	if (e->source == NULL || X509_up_ref(cert) != 1) {
		free(e->source);
		return NULL;
	}
	e->cert = cert;
	e->index = index;
	r->n++;
	return e;
}

/* Keep @p cert in @p sk once (by content). */
static int stack_add_unique(STACK_OF(X509) * sk, X509 *cert)
{
	for (int i = 0; i < sk_X509_num(sk); i++)
		if (X509_cmp(sk_X509_value(sk, i), cert) == 0)
			return 1;
	if (X509_up_ref(cert) != 1)
		return 0;
	if (sk_X509_push(sk, cert) <= 0) {
		X509_free(cert);
		return 0;
	}
	return 1;
}

/* A possible issuer, for building chains (never trusted for that). */
static int maybe_intermediate(p11s_validation *r, X509 *cert)
{
	if (X509_check_ca(cert) == 0)
		return 1;
	return stack_add_unique(r->untrusted, cert);
}

/* ------------------------------------------------------------------ files */

p11s_rc p11s_validation_add_anchors(p11s_validation *r, const char *path, p11s_error *err)
{
	p11s_cert_list *l;
	p11s_rc rc = p11s_certs_read_file(path, r->p12_pass, &l, err);

	if (rc != P11S_OK)
		return rc;
	if (p11s_cert_list_problem_count(l) > 0) {
		rc = p11s_err(err, P11S_E_INPUT, "--ca %s", p11s_cert_list_problem(l, 0));
		p11s_cert_list_free(l);
		return rc;
	}
	for (size_t i = 0; i < p11s_cert_list_count(l); i++)
		if (!stack_add_unique(r->anchors, p11s_cert_list_get(l, i))) {
			p11s_cert_list_free(l);
			return p11s_err(err, P11S_E_NOMEM, "out of memory");
		}
	p11s_cert_list_free(l);
	return P11S_OK;
}

p11s_rc p11s_validation_add_anchors_uri(p11s_validation *r, p11s_ctx *ctx, const char *uri,
                                        p11s_error *err)
{
	STACK_OF(X509) *found = sk_X509_new_null();
	size_t added = 0;
	p11s_rc rc;

	if (found == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	rc = p11s_trust_certificates(ctx, uri, found, &added, err);
	for (int i = 0; rc == P11S_OK && i < sk_X509_num(found); i++)
		if (!stack_add_unique(r->anchors, sk_X509_value(found, i)))
			rc = p11s_err(err, P11S_E_NOMEM, "out of memory");
	sk_X509_pop_free(found, X509_free);
	return rc;
}

static int not_ours(const char *msg)
{
	return strstr(msg, ": not a certificate") != NULL || strstr(msg, ": empty") != NULL ||
	       strstr(msg, "no certificate in this PEM file") != NULL;
}

/* One file; @p in_dir: files that are not certificates are skipped, not errors. */
static p11s_rc add_one_file(p11s_validation *r, const char *path, int in_dir, p11s_error *err)
{
	p11s_error *local = p11s_error_new();
	p11s_cert_list *l = NULL;
	p11s_rc rc;

	if (local == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	rc = p11s_certs_read_file(path, r->p12_pass, &l, local);
	if (rc != P11S_OK) {
		/* In a folder, files we do not recognise at all are someone else's. */
		if (in_dir && rc == P11S_E_INPUT && not_ours(p11s_error_message(local)))
			rc = skip_note(r, path, "not a certificate file") ? P11S_OK : P11S_E_NOMEM;
		else
			rc = record(r, path, rc, p11s_error_message(local), err);
		p11s_error_free(local);
		return rc;
	}
	p11s_error_free(local);
	for (size_t i = 0; i < p11s_cert_list_count(l); i++) {
		X509 *x = p11s_cert_list_get(l, i);
		EVP_PKEY *key = p11s_cert_list_key(l, i);
		struct entry *e = entry_add(r, path, i, x);

		if (e == NULL || !maybe_intermediate(r, x)) {
			p11s_cert_list_free(l);
			return p11s_err(err, P11S_E_NOMEM, "out of memory");
		}
		e->origin = "file";
		e->format = p11s_cert_list_format(l);
		if (key != NULL) {
			/* A PKCS#12 key: known, checked as a software key. */
			p11s_key_facts_from_pkey(&e->facts, key, x);
			e->has_facts = 1;
			e->key.type = e->facts.alg_name;
			e->key.bits = e->facts.bits;
			e->key.curve = p11s_strdup(e->facts.curve);
			e->key.on_token = 0;
		}
	}
	rc = P11S_OK;
	for (size_t i = 0; i < p11s_cert_list_problem_count(l); i++)
		rc = record(r, path, P11S_E_INPUT, p11s_cert_list_problem(l, i), err);
	p11s_cert_list_free(l);
	return rc;
}

static int visible_file(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Every file under @p dir, in name order; symbolic links to directories are not followed. */
static p11s_rc add_dir(p11s_validation *r, const char *dir, int depth, p11s_error *err)
{
	struct dirent **names = NULL;
	struct stat st;
	int n = scandir(dir, &names, visible_file, alphasort);
	p11s_rc rc = P11S_OK;

	if (n < 0) {
		char *msg =
		    p11s_asprintf("cannot read the directory '%s': %s", dir, strerror(errno));

		rc = record(r, dir, P11S_E_IO, msg ? msg : "cannot read a directory", err);
		free(msg);
		return rc;
	}
	for (int i = 0; i < n; i++) {
		char *child = p11s_asprintf("%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
		                            names[i]->d_name);
		p11s_rc one = P11S_OK;

		if (child == NULL)
			one = p11s_err(err, P11S_E_NOMEM, "out of memory");
		else if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode) && depth < 32)
			one = add_dir(r, child, depth + 1, err);
		else if (stat(child, &st) == 0 && S_ISREG(st.st_mode))
			one = add_one_file(r, child, 1, err);
		if (rc == P11S_OK)
			rc = one;
		free(child);
		free(names[i]);
	}
	free(names);
	return rc;
}

p11s_rc p11s_validation_add_file(p11s_validation *r, const char *path, p11s_error *err)
{
	struct stat st;

	if (path == NULL || strcmp(path, "-") == 0 || stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return add_one_file(r, path, 0, err);
	return add_dir(r, path, 0, err);
}

/* ------------------------------------------------------------------ tokens */

/* Key facts of token certificate @p o into @p e; 0 when out of memory. */
static int token_key_facts(p11s_validation *r, struct entry *e, const p11s_object *o)
{
	p11s_key_facts *kf = &e->facts;
	const p11s_object *key;

	if (r->opts.no_login) {
		e->key_unchecked = p11s_strdup("not logged in (--no-login): private keys, and any "
		                               "certificates the token keeps private, were not "
		                               "looked at");
		return e->key_unchecked != NULL;
	}
	if (p11s_object_pairing(o) == P11S_PAIR_NOT_LOGGED_IN) {
		e->key_unchecked = p11s_strdup("the token keeps its keys private and we are not "
		                               "logged in");
		return e->key_unchecked != NULL;
	}
	p11s_key_facts_from_token(kf, o);
	e->has_facts = 1;
	e->key.on_token = 1;
	if (!kf->present)
		return 1;
	key = p11s_object_private_key(o) ? p11s_object_private_key(o) : p11s_object_id_key(o);
	/* The report outlives the object list: keep our own copies. */
	e->key.uri = p11s_strdup(kf->uri);
	e->key.curve = p11s_strdup(kf->curve);
	kf->uri = e->key.uri;
	kf->curve = e->key.curve;
	e->key.type = kf->alg_name;
	e->key.bits = kf->bits;
	e->key.flags = p11s_object_key_flags(key);
	e->key.flags_known = 1;
	return (e->key.uri != NULL || p11s_object_uri(key) == NULL) &&
	       (e->key.curve != NULL || p11s_object_key_curve(key) == NULL);
}

/* The CA certificates on @p list's tokens become anchors. */
static p11s_rc token_anchors(p11s_validation *r, const p11s_object_list *list, p11s_error *err)
{
	for (size_t i = 0; i < p11s_object_list_count(list); i++) {
		const p11s_object *o = p11s_object_list_get(list, i);
		X509 *x = p11s_object_x509(o);
		BASIC_CONSTRAINTS *bc;

		if (p11s_object_get_class(o) != P11S_OBJ_CERTIFICATE || x == NULL)
			continue;
		bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
		ERR_clear_error();
		if (bc != NULL && bc->ca && !stack_add_unique(r->anchors, x)) {
			BASIC_CONSTRAINTS_free(bc);
			return p11s_err(err, P11S_E_NOMEM, "out of memory");
		}
		BASIC_CONSTRAINTS_free(bc);
	}
	return P11S_OK;
}

/* Anchors from the whole of each token the targets live on. */
static p11s_rc whole_token_anchors(p11s_validation *r, p11s_ctx *ctx, const char *uri,
                                   const p11s_object_list *list, p11s_error *err)
{
	p11s_objects_opts certs_only = {.certificates = 1};
	const char **seen = calloc(p11s_object_list_count(list) + 1, sizeof(char *));
	size_t nseen = 0;
	p11s_rc rc = P11S_OK;

	if (seen == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	for (size_t i = 0; rc == P11S_OK && i < p11s_object_list_count(list); i++) {
		const char *turi = p11s_token_uri(p11s_object_token(p11s_object_list_get(list, i)));
		p11s_object_list *all = NULL;
		size_t j;

		for (j = 0; j < nseen && strcmp(seen[j], turi) != 0; j++)
			;
		if (j < nseen || (uri != NULL && strcmp(uri, turi) == 0))
			continue;
		seen[nseen++] = turi;
		/* Certificates are public objects: no login for this. */
		if (p11s_objects(ctx, turi, &certs_only, &all, NULL) == P11S_OK)
			rc = token_anchors(r, all, err);
		p11s_object_list_free(all);
	}
	free(seen);
	return rc;
}

p11s_rc p11s_validation_add_token(p11s_validation *r, p11s_ctx *ctx, const char *uri,
                                  p11s_error *err)
{
	p11s_error *local = p11s_error_new();
	p11s_objects_opts opts = {.login = !r->opts.no_login, .certificates = 1};
	p11s_object_list *list = NULL;
	const char *source = uri ? uri : "pkcs11:";
	int whole = uri == NULL || strcmp(uri, "pkcs11:") == 0;
	p11s_rc rc;

	if (local == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	rc = p11s_objects(ctx, whole ? NULL : uri, &opts, &list, local);
	if (rc != P11S_OK) {
		/* Without a PIN the rules can still be judged; say how. */
		char *hint = p11s_rc_class(rc) == P11S_CLASS_PIN
		                 ? p11s_asprintf("%s (--no-login judges the certificates without "
		                                 "looking at their keys)",
		                                 p11s_error_message(local))
		                 : NULL;

		rc = record(r, source, rc, hint ? hint : p11s_error_message(local), err);
		free(hint);
		p11s_error_free(local);
		return rc;
	}
	p11s_error_free(local);
	rc = token_anchors(r, list, err);
	if (rc == P11S_OK && !whole)
		rc = whole_token_anchors(r, ctx, uri, list, err);
	for (size_t i = 0; rc == P11S_OK && i < p11s_object_list_count(list); i++) {
		const p11s_object *o = p11s_object_list_get(list, i);
		X509 *x = p11s_object_x509(o);
		struct entry *e;

		if (p11s_object_get_class(o) != P11S_OBJ_CERTIFICATE)
			continue;
		if (x == NULL) {
			char *msg =
			    p11s_asprintf("%s: the certificate's value does not decode as X.509",
			                  p11s_object_uri(o));

			record(r, p11s_object_uri(o), P11S_E_INPUT, msg ? msg : "undecodable",
			       NULL);
			free(msg);
			continue;
		}
		e = entry_add(r, p11s_object_uri(o), i, x);
		if (e == NULL || !maybe_intermediate(r, x) || !token_key_facts(r, e, o))
			rc = p11s_err(err, P11S_E_NOMEM, "out of memory");
		else
			e->origin = "token";
	}
	p11s_object_list_free(list);
	return rc;
}

/* -------------------------------------------------------------------- run */

p11s_rc p11s_validation_run(p11s_validation *r, p11s_error *err)
{
	p11s_validate_opts vo;

	p11s_validate_opts_init(&vo);
	vo.at = r->at;
	vo.warn_days = r->opts.warn_days;
	vo.anchors = r->anchors;
	vo.untrusted = r->untrusted;
	for (size_t i = 0; i < r->n; i++) {
		struct entry *e = &r->e[i];
		p11s_rc rc;

		if (e->v != NULL)
			continue;
		rc = p11s_validate(e->cert, e->has_facts ? &e->facts : NULL, &vo, &e->v, err);
		if (rc != P11S_OK)
			return rc;
	}
	r->ran = 1;
	return P11S_OK;
}

p11s_rc p11s_validation_status(const p11s_validation *r)
{
	if (r->nerrors > 0)
		return r->errors[0].rc;
	for (size_t i = 0; i < r->n; i++)
		if (!p11s_verdict_accepted(r->e[i].v))
			return P11S_E_REJECTED;
	return P11S_OK;
}

time_t p11s_validation_time(const p11s_validation *r)
{
	return r->at;
}

size_t p11s_validation_count(const p11s_validation *r)
{
	return r ? r->n : 0;
}

const char *p11s_validation_source(const p11s_validation *r, size_t i)
{
	return r && i < r->n ? r->e[i].source : NULL;
}

size_t p11s_validation_index(const p11s_validation *r, size_t i)
{
	return r && i < r->n ? r->e[i].index : 0;
}

X509 *p11s_validation_cert(const p11s_validation *r, size_t i)
{
	return r && i < r->n ? r->e[i].cert : NULL;
}

const p11s_verdict *p11s_validation_verdict(const p11s_validation *r, size_t i)
{
	return r && i < r->n ? r->e[i].v : NULL;
}

size_t p11s_validation_error_count(const p11s_validation *r)
{
	return r ? r->nerrors : 0;
}

const char *p11s_validation_error_source(const p11s_validation *r, size_t i)
{
	return r && i < r->nerrors ? r->errors[i].source : NULL;
}

const char *p11s_validation_error_message(const p11s_validation *r, size_t i)
{
	return r && i < r->nerrors ? r->errors[i].message : NULL;
}

p11s_rc p11s_validation_error_rc(const p11s_validation *r, size_t i)
{
	return r && i < r->nerrors ? r->errors[i].rc : P11S_OK;
}

size_t p11s_validation_skipped_count(const p11s_validation *r)
{
	return r ? r->nskipped : 0;
}

const char *p11s_validation_skipped(const p11s_validation *r, size_t i)
{
	return r && i < r->nskipped ? r->skipped[i] : NULL;
}

/* -------------------------------------------------------- certificate facts */

static char *fingerprint(X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (X509_digest(x, EVP_sha256(), md, &len) != 1)
		return NULL;
	return p11s_hex(md, len);
}

/*
 * The certificate as the report shows it: the same description `list`
 * gives (p11s_cert_describe), plus the key algorithm by its own name
 * ("RSA", "EC", "ED25519", an OID) as docs/json-validate.md has it.
 */
struct view {
	p11s_cert_info *ci; /* NULL when the certificate cannot be described */
	char alg[96];
	char nb[32], na[32];
};

static void view_init(struct view *w, X509 *x)
{
	X509_PUBKEY *xpk = X509_get_X509_PUBKEY(x);
	ASN1_OBJECT *obj = NULL;

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
		/* The report has always given the serial in upper case. */
		for (char *p = w->ci->serial; *p; p++)
			if (*p >= 'a' && *p <= 'f')
				*p = (char)(*p - 'a' + 'A');
	}
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

/* ------------------------------------------------------------------- JSON */

/* json_string() refuses bad UTF-8; our strings are cleaned, but never trust that blindly. */
static json_t *jstr(const char *s)
{
	json_t *j;

	if (s == NULL)
		return json_null();
	j = json_string(s);
	if (j == NULL) {
		char *copy = strdup(s);

		if (copy == NULL)
			return NULL;
		for (char *p = copy; *p; p++)
			if ((unsigned char)*p >= 0x80)
				*p = '?';
		j = json_string(copy);
		free(copy);
	}
	return j;
}

static json_t *jbool3(int v)
{
	return v < 0 ? json_null() : json_boolean(v);
}

static json_t *key_json(const struct entry *e)
{
	json_t *k, *flags;

	if (e->key_unchecked != NULL)
		return json_pack("{s:b, s:s}", "checked", 0, "reason", e->key_unchecked);
	if (!e->has_facts)
		return json_null();
	k = json_pack("{s:b, s:b, s:o, s:b}", "checked", 1, "present", e->facts.present == 1,
	              "matches", e->facts.present == 1 ? jbool3(e->facts.matches) : json_null(),
	              "on_token", e->key.on_token);
	if (k == NULL)
		return NULL;
	if (e->facts.present == 1) {
		json_object_set_new(k, "uri", jstr(e->key.uri));
		json_object_set_new(k, "type", jstr(e->key.type));
		json_object_set_new(k, "bits",
		                    e->key.bits > 0 ? json_integer(e->key.bits) : json_null());
		json_object_set_new(k, "curve", jstr(e->key.curve));
		if (e->key.flags_known) {
			json_object_set_new(k, "sensitive", json_boolean(e->facts.sensitive == 1));
			json_object_set_new(k, "extractable",
			                    json_boolean(e->facts.extractable == 1));
			flags = json_array();
			for (size_t i = 0; flags && i < sizeof(flag_names) / sizeof(flag_names[0]);
			     i++)
				if (e->key.flags & flag_names[i].bit)
					json_array_append_new(flags,
					                      json_string(flag_names[i].name));
			json_object_set_new(k, "flags", flags);
		}
	}
	json_object_set_new(k, "checks", p11s_verdict_checks_json(e->v, 1));
	return k;
}

static json_t *chain_json(const p11s_verdict *v)
{
	const char *msg;
	p11s_check_result res = p11s_verdict_chain(v, &msg);
	json_t *path = json_array();

	for (size_t i = 0; path && i < p11s_verdict_chain_length(v); i++)
		json_array_append_new(path, jstr(p11s_verdict_chain_subject(v, i)));
	return json_pack("{s:s, s:b, s:o, s:o}", "result", p11s_check_result_name(res), "trusted",
	                 res == P11S_CHECK_PASS, "message", jstr(msg), "path", path);
}

static json_t *entry_json(const struct entry *e)
{
	const p11s_verdict *v = e->v;
	struct view w;
	char *fp = fingerprint(e->cert);
	json_t *jemails = json_array(), *warnings = json_array(), *o = NULL;

	view_init(&w, e->cert);
	for (size_t i = 0; w.ci && jemails && i < w.ci->nemails; i++)
		json_array_append_new(jemails, jstr(w.ci->emails[i]));
	for (size_t i = 0; warnings && i < p11s_verdict_warning_count(v); i++)
		json_array_append_new(warnings, jstr(p11s_verdict_warning(v, i)));
	if (jemails == NULL || warnings == NULL)
		goto out;
	o = json_pack("{s:s, s:I, s:s, s:o, s:o, s:b, s:s, s:b, s:b, s:b}", "source", e->source,
	              "index", (json_int_t)e->index, "origin", e->origin ? e->origin : "file",
	              "subject", jstr(w.ci ? w.ci->subject : NULL), "emails", jemails, "ca",
	              p11s_verdict_is_ca(v), "verdict",
	              p11s_verdict_accepted(v) ? "accepted" : "rejected", "usable_for_outgoing",
	              p11s_verdict_usable_for_outgoing(v), "can_sign", p11s_verdict_can_sign(v),
	              "can_encrypt", p11s_verdict_can_encrypt(v));
	jemails = NULL;
	if (o == NULL)
		goto out;
	json_object_set_new(o, "cannot_sign_reason", jstr(p11s_verdict_cannot_sign_reason(v)));
	json_object_set_new(o, "cannot_encrypt_reason",
	                    jstr(p11s_verdict_cannot_encrypt_reason(v)));
	json_object_set_new(o, "in_validity", json_boolean(p11s_verdict_in_validity(v)));
	json_object_set_new(o, "checks", p11s_verdict_checks_json(v, 0));
	json_object_set_new(o, "warnings", warnings);
	warnings = NULL;
	json_object_set_new(o, "key", key_json(e));
	json_object_set_new(o, "chain", chain_json(v));
	json_object_set_new(o, "format", jstr(e->format));
	json_object_set_new(o, "issuer", jstr(w.ci ? w.ci->issuer : NULL));
	json_object_set_new(o, "serial", jstr(w.ci ? w.ci->serial : NULL));
	json_object_set_new(o, "not_before", jstr(w.nb));
	json_object_set_new(o, "not_after", jstr(w.na));
	json_object_set_new(o, "sha256_fingerprint", jstr(fp));
	json_object_set_new(
	    o, "public_key",
	    json_pack("{s:s, s:o, s:o}", "algorithm", w.alg, "bits",
	              w.ci && w.ci->key_bits > 0 ? json_integer(w.ci->key_bits) : json_null(),
	              "curve", jstr(w.ci ? w.ci->curve : NULL)));
out:
	json_decref(jemails);
	json_decref(warnings);
	p11s_cert_info_free(w.ci);
	free(fp);
	return o;
}

char *p11s_validation_json(const p11s_validation *r)
{
	json_t *root, *certs = json_array(), *errors = json_array(), *skipped = json_array();
	size_t accepted = 0;
	char at[32];
	char *out;

	if (certs == NULL || errors == NULL || skipped == NULL) {
		json_decref(certs);
		json_decref(errors);
		json_decref(skipped);
		return NULL;
	}
	for (size_t i = 0; i < r->n; i++) {
		json_array_append_new(certs, entry_json(&r->e[i]));
		accepted += p11s_verdict_accepted(r->e[i].v) != 0;
	}
	for (size_t i = 0; i < r->nerrors; i++)
		json_array_append_new(errors, json_pack("{s:o, s:o, s:s}", "source",
		                                        jstr(r->errors[i].source), "message",
		                                        jstr(r->errors[i].message), "code",
		                                        p11s_rc_name(r->errors[i].rc)));
	for (size_t i = 0; i < r->nskipped; i++)
		json_array_append_new(skipped, jstr(r->skipped[i]));
	p11s_time_format(r->at, at, sizeof(at));
	root = json_pack("{s:o, s:o, s:o, s:s, s:{s:I, s:I, s:I, s:I}}", "certificates", certs,
	                 "errors", errors, "skipped", skipped, "at", at, "summary", "certificates",
	                 (json_int_t)r->n, "accepted", (json_int_t)accepted, "rejected",
	                 (json_int_t)(r->n - accepted), "errors", (json_int_t)r->nerrors);
	if (root == NULL)
		return NULL;
	out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return out;
}

/* ------------------------------------------------------------------- text */

static const char *mark(p11s_check_result r)
{
	return r == P11S_CHECK_PASS ? "pass" : r == P11S_CHECK_FAIL ? "FAIL" : "skip";
}

static void entry_text(FILE *fp, const struct entry *e, size_t number, size_t total)
{
	const p11s_verdict *v = e->v;
	struct view w;
	const p11s_cert_info *ci;
	const char *msg;
	p11s_check_result chain;

	view_init(&w, e->cert);
	ci = w.ci;
	fprintf(fp, "certificate %zu/%zu: %s", number, total, e->source);
	if (e->origin && strcmp(e->origin, "file") == 0)
		fprintf(fp, " [%zu]", e->index);
	fprintf(fp, "\n  subject   %s\n", ci ? ci->subject : "?");
	fprintf(fp, "  e-mail    ");
	for (size_t i = 0; ci && i < ci->nemails; i++)
		fprintf(fp, "%s%s", i ? ", " : "", ci->emails[i]);
	fprintf(fp, "%s\n", ci && ci->nemails ? "" : "(none in the SAN)");
	fprintf(fp, "  key       %s", w.alg);
	if (ci && ci->curve)
		fprintf(fp, " %s", ci->curve);
	else if (ci && ci->key_bits > 0)
		fprintf(fp, " %d", ci->key_bits);
	fprintf(fp, "%s\n", p11s_verdict_is_ca(v) ? ", CA certificate" : "");
	fprintf(fp, "  validity  %s .. %s\n", w.nb, w.na);

	fprintf(fp, "  rules\n");
	for (size_t i = 0; i < p11s_verdict_check_count(v); i++)
		fprintf(fp, "    %s  %-22s %s\n", mark(p11s_verdict_check_result(v, i)),
		        p11s_verdict_check_rule(v, i), p11s_verdict_check_message(v, i));
	for (size_t i = 0; i < p11s_verdict_warning_count(v); i++)
		fprintf(fp, "  warning   %s\n", p11s_verdict_warning(v, i));
	if (e->key_unchecked != NULL) {
		fprintf(fp, "  private key: not checked: %s\n", e->key_unchecked);
	} else if (e->has_facts) {
		fprintf(fp, "  private key");
		if (e->facts.present == 1) {
			fprintf(fp, " %s", e->key.type ? e->key.type : "?");
			if (e->key.curve)
				fprintf(fp, " %s", e->key.curve);
			else if (e->key.bits > 0)
				fprintf(fp, " %d", e->key.bits);
			if (e->key.flags_known) {
				fprintf(fp, " [");
				for (size_t i = 0, n = 0;
				     i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
					if (e->key.flags & flag_names[i].bit)
						fprintf(fp, "%s%s", n++ ? " " : "",
						        flag_names[i].name);
				fprintf(fp, "]");
			}
		}
		fprintf(fp, "\n");
		for (size_t i = 0; i < p11s_verdict_key_check_count(v); i++)
			fprintf(fp, "    %s  %-22s %s\n", mark(p11s_verdict_key_check_result(v, i)),
			        p11s_verdict_key_check_id(v, i),
			        p11s_verdict_key_check_message(v, i));
	}
	chain = p11s_verdict_chain(v, &msg);
	fprintf(fp, "  chain     %s  %s\n", mark(chain), msg ? msg : "");

	if (!p11s_verdict_accepted(v)) {
		fprintf(fp, "  verdict   REJECTED by");
		for (size_t i = 0, n = 0; i < p11s_verdict_check_count(v); i++)
			if (p11s_verdict_check_result(v, i) == P11S_CHECK_FAIL &&
			    p11s_verdict_check_decides(v, i))
				fprintf(fp, "%s %s", n++ ? "," : "", p11s_verdict_check_rule(v, i));
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

char *p11s_validation_text(const p11s_validation *r)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);
	size_t accepted = 0, usable = 0;
	char at[32];

	if (fp == NULL)
		return NULL;
	for (size_t i = 0; i < r->n; i++) {
		entry_text(fp, &r->e[i], i + 1, r->n);
		fputc('\n', fp);
		accepted += p11s_verdict_accepted(r->e[i].v) != 0;
		usable += p11s_verdict_usable_for_outgoing(r->e[i].v) != 0;
	}
	for (size_t i = 0; i < r->nskipped; i++)
		fprintf(fp, "skipped %s\n", r->skipped[i]);
	p11s_time_format(r->at, at, sizeof(at));
	fprintf(fp,
	        "%zu certificate%s judged at %s: %zu accepted, %zu rejected, %zu usable for "
	        "outgoing mail",
	        r->n, r->n == 1 ? "" : "s", at, accepted, r->n - accepted, usable);
	if (r->nerrors > 0)
		fprintf(fp, "; %zu error%s", r->nerrors, r->nerrors == 1 ? "" : "s");
	fputc('\n', fp);
	if (fclose(fp) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
