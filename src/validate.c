/*
 * A validation run: gathers certificates from files and tokens, feeds the
 * pure rules engine, and keeps the results for the getters (the CLI renders
 * them: src/cli/report.c).
 * Token facts come through the p11s_ token API only.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "p11smime/certs.h"
#include "p11smime/certs.h"
#include "p11smime/io.h"
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
	size_t nerrors, errors_cap;
	char **skipped;
	size_t nskipped, skipped_cap;
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
		return p11i_err_nomem(err);
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
		return p11i_err_nomem(err);
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
	p11i_wipe_free(r->p12_pass);
	free(r);
}

/* Record an error for the report and hand it back to the caller too. */
static p11s_rc record(p11s_validation *r, const char *source, p11s_rc rc, const char *message,
                      p11s_error *err)
{
	if (P11I_GROW(r->errors, r->nerrors, r->errors_cap, 1) == 0) {
		r->errors[r->nerrors].source = p11i_strdup(source ? source : "");
		r->errors[r->nerrors].message = p11i_strdup(message);
		r->errors[r->nerrors].rc = rc;
		r->nerrors++;
	}
	if (err != NULL && p11s_error_rc(err) != rc)
		p11i_err(err, rc, "%s", message);
	return rc;
}

static int skip_note(p11s_validation *r, const char *path, const char *why)
{
	char *s = p11i_asprintf("%s: %s", path, why);

	if (s == NULL || P11I_GROW(r->skipped, r->nskipped, r->skipped_cap, 1) != 0) {
		free(s);
		return 0;
	}
	r->skipped[r->nskipped++] = s;
	return 1;
}

static struct entry *entry_add(p11s_validation *r, const char *source, size_t index, X509 *cert)
{
	struct entry *e;

	if (P11I_GROW(r->e, r->n, r->cap, 1) != 0)
		return NULL;
	e = &r->e[r->n];
	memset(e, 0, sizeof(*e));
	e->source = p11i_strdup(source);
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
		rc = p11i_err(err, P11S_E_INPUT, "--ca %s", p11s_cert_list_problem(l, 0));
		p11s_cert_list_free(l);
		return rc;
	}
	for (size_t i = 0; i < p11s_cert_list_count(l); i++)
		if (!stack_add_unique(r->anchors, p11s_cert_list_get(l, i))) {
			p11s_cert_list_free(l);
			return p11i_err_nomem(err);
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
		return p11i_err_nomem(err);
	rc = p11s_trust_certificates(ctx, uri, found, &added, err);
	for (int i = 0; rc == P11S_OK && i < sk_X509_num(found); i++)
		if (!stack_add_unique(r->anchors, sk_X509_value(found, i)))
			rc = p11i_err_nomem(err);
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
		return p11i_err_nomem(err);
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
			return p11i_err_nomem(err);
		}
		e->origin = "file";
		e->format = p11s_cert_list_format(l);
		if (key != NULL) {
			/* A PKCS#12 key: known, checked as a software key. */
			p11s_key_facts_from_pkey(&e->facts, key, x);
			e->has_facts = 1;
			e->key.type = e->facts.alg_name;
			e->key.bits = e->facts.bits;
			e->key.curve = p11i_strdup(e->facts.curve);
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
		    p11i_asprintf("cannot read the directory '%s': %s", dir, strerror(errno));

		rc = record(r, dir, P11S_E_IO, msg ? msg : "cannot read a directory", err);
		free(msg);
		return rc;
	}
	for (int i = 0; i < n; i++) {
		char *child = p11i_asprintf("%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
		                            names[i]->d_name);
		p11s_rc one = P11S_OK;

		if (child == NULL)
			one = p11i_err_nomem(err);
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
		e->key_unchecked = p11i_strdup("not logged in (--no-login): private keys, and any "
		                               "certificates the token keeps private, were not "
		                               "looked at");
		return e->key_unchecked != NULL;
	}
	if (p11s_object_pairing(o) == P11S_PAIR_NOT_LOGGED_IN) {
		e->key_unchecked = p11i_strdup("the token keeps its keys private and we are not "
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
	e->key.uri = p11i_strdup(kf->uri);
	e->key.curve = p11i_strdup(kf->curve);
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
			return p11i_err_nomem(err);
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
		return p11i_err_nomem(err);
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
		return p11i_err_nomem(err);
	rc = p11s_objects(ctx, whole ? NULL : uri, &opts, &list, local);
	if (rc != P11S_OK) {
		/* Without a PIN the rules can still be judged; say how. */
		char *hint = p11s_rc_class(rc) == P11S_CLASS_PIN
		                 ? p11i_asprintf("%s (--no-login judges the certificates without "
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
			    p11i_asprintf("%s: the certificate's value does not decode as X.509",
			                  p11s_object_uri(o));

			record(r, p11s_object_uri(o), P11S_E_INPUT, msg ? msg : "undecodable",
			       NULL);
			free(msg);
			continue;
		}
		e = entry_add(r, p11s_object_uri(o), i, x);
		if (e == NULL || !maybe_intermediate(r, x) || !token_key_facts(r, e, o))
			rc = p11i_err_nomem(err);
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

/* ------------------------------------------------------------- the key */

const char *p11s_validation_origin(const p11s_validation *r, size_t i)
{
	return r && i < r->n ? (r->e[i].origin ? r->e[i].origin : "file") : NULL;
}

const char *p11s_validation_format(const p11s_validation *r, size_t i)
{
	return r && i < r->n ? r->e[i].format : NULL;
}

void p11s_validation_key_info(const p11s_validation *r, size_t i, p11s_validation_key *out)
{
	const struct entry *e = r && i < r->n ? &r->e[i] : NULL;

	memset(out, 0, sizeof(*out));
	out->matches = -1;
	if (e == NULL)
		return;
	out->unchecked = e->key_unchecked;
	out->known = e->has_facts;
	if (!e->has_facts)
		return;
	out->present = e->facts.present == 1;
	out->matches = e->facts.matches;
	out->on_token = e->key.on_token;
	out->uri = e->key.uri;
	out->type = e->key.type;
	out->bits = e->key.bits;
	out->curve = e->key.curve;
	out->flags_known = e->key.flags_known;
	out->sensitive = e->facts.sensitive == 1;
	out->extractable = e->facts.extractable == 1;
	out->flags = e->key.flags;
}
