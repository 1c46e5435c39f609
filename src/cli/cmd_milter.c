/*
 * `p11smime milter`: a libmilter mail filter that signs outgoing mail with
 * the keys on the token, inside Postfix or Sendmail.
 *
 * At start it logs in once, opens a signer for every certificate on the
 * token that passes the S/MIME rules now and has its key, and routes each
 * certificate's SAN mailboxes to it (--signer-map adds or overrides
 * routes).  The routes never change afterwards: when the token goes away
 * the same certificates are opened again, and nothing else is ever signed
 * with.  Per message: headers and body are collected by the library
 * (include/p11smime/milter.h; the body is spooled, not held), signed at
 * the end of the message and handed back to the MTA as header edits and a
 * new body.  A fault is a temporary failure, never unsigned mail.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <libmilter/mfapi.h>
#include <openssl/x509.h>

#include "cli.h"
#include "p11smime/certs.h"
#include "p11smime/milter.h"
#include "p11smime/sign.h"

/* Seconds between two attempts to reopen the token after a fault. */
#define RECOVER_INTERVAL 2

enum gw_state {
	GW_OK,         /* every signer open */
	GW_FAULT,      /* a signature failed: reopen the token before signing again */
	GW_LOGIN_LOST, /* the PIN no longer logs in: tempfail everything until restarted */
};

struct gsigner {
	char *uri;     /* the certificate's, as opened at start */
	X509 *cert;    /* the certificate opened at start: the only one ever signed with */
	char *subject; /* for the log */
	p11s_signer *s;
};

struct route {
	char *addr;
	size_t signer;
};

static struct gw {
	struct cli *cli;
	p11s_sign_opts so;
	p11s_ctx *ctx;
	struct gsigner *signers;
	size_t nsigners;
	struct route *routes; /* SAN mailboxes */
	size_t nroutes;
	p11s_signer_map *map;
	size_t *map_signer; /* signer of each map entry */
	int require;
	int use_syslog;
	const char *token;   /* --token: the tokens the milter sees and logs in to */
	pthread_rwlock_t rw; /* readers sign; the writer reopens the token */
	sem_t workers;
	atomic_int state;
	time_t last_attempt;
	pthread_mutex_t log_mu;
} G;

/* Per message (SMFICTX private data). */
struct msgctx {
	p11s_milter_msg *m;
	p11s_error *err;
	char *from;
	long signer; /* index into G.signers, -1 none */
	int header_failed;
	char why[256];
};

/* ------------------------------------------------------------- logging */

/* @p s with control characters and non-ASCII shown as '?', at most @p len - 1 bytes. */
static const char *printable(const char *s, char *buf, size_t len)
{
	size_t o = 0;

	for (; s != NULL && *s != '\0' && o + 1 < len; s++)
		buf[o++] = (*s < 0x20 || *s > 0x7e) ? '?' : *s;
	buf[o] = '\0';
	return buf;
}

static void logmsg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logmsg(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (G.use_syslog) {
		vsyslog(prio, fmt, ap);
	} else {
		pthread_mutex_lock(&G.log_mu);
		fprintf(stderr, "p11smime milter: ");
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		fflush(stderr);
		pthread_mutex_unlock(&G.log_mu);
	}
	va_end(ap);
}

/* --------------------------------------------------------------- signers */

/* Open the signer for @p uri with the sign options; --pss is for RSA keys only. */
static p11s_rc open_signer(p11s_ctx *ctx, const char *uri, p11s_signer **out, p11s_error *err)
{
	p11s_sign_opts so = G.so;
	p11s_rc rc;

	so.signer = uri;
	rc = p11s_signer_open(ctx, &so, out, err);
	if (rc == P11S_E_USAGE && so.pss) {
		p11s_error_clear(err);
		so.pss = 0;
		rc = p11s_signer_open(ctx, &so, out, err);
	}
	return rc;
}

/* The index of the signer of certificate @p uri, opening it when new; -1 after logging why. */
static long add_signer(const char *uri, const char *where, p11s_error *err)
{
	struct gsigner *g;
	p11s_signer *s = NULL;
	p11s_rc rc;

	for (size_t i = 0; i < G.nsigners; i++)
		if (strcmp(G.signers[i].uri, uri) == 0)
			return (long)i;
	rc = open_signer(G.ctx, uri, &s, err);
	if (rc != P11S_OK) {
		char b[512];

		logmsg(LOG_WARNING, "%s: not signing with %s: %s", where, uri,
		       printable(p11s_error_message(err), b, sizeof(b)));
		p11s_error_clear(err);
		return rc == P11S_E_NOMEM ? -2 : -1;
	}
	/* A key URI in the map names a certificate already opened. */
	for (size_t i = 0; i < G.nsigners; i++)
		if (strcmp(G.signers[i].uri, p11s_signer_uri(s)) == 0) {
			p11s_signer_free(s);
			return (long)i;
		}
	g = realloc(G.signers, (G.nsigners + 1) * sizeof(*g));
	if (g == NULL) {
		p11s_signer_free(s);
		return -2;
	}
	G.signers = g;
	g = &G.signers[G.nsigners];
	g->uri = strdup(p11s_signer_uri(s));
	g->subject = strdup(p11s_signer_subject(s));
	g->cert = p11s_signer_certificate(s);
	X509_up_ref(g->cert);
	g->s = s;
	if (g->uri == NULL || g->subject == NULL) {
		free(g->uri);
		free(g->subject);
		X509_free(g->cert);
		p11s_signer_free(s);
		return -2;
	}
	return (long)G.nsigners++;
}

static void free_signers(void)
{
	for (size_t i = 0; i < G.nsigners; i++) {
		p11s_signer_free(G.signers[i].s);
		X509_free(G.signers[i].cert);
		free(G.signers[i].uri);
		free(G.signers[i].subject);
	}
	free(G.signers);
	for (size_t i = 0; i < G.nroutes; i++)
		free(G.routes[i].addr);
	free(G.routes);
	free(G.map_signer);
	p11s_signer_map_free(G.map);
}

static int add_route(const char *addr, size_t signer)
{
	struct route *r;

	for (size_t i = 0; i < G.nroutes; i++)
		if (strcasecmp(G.routes[i].addr, addr) == 0) {
			if (G.routes[i].signer != signer)
				logmsg(LOG_WARNING,
				       "%s is in %s and %s: signing with the first (a --signer-map "
				       "line chooses)",
				       addr, G.signers[G.routes[i].signer].uri,
				       G.signers[signer].uri);
			return 0;
		}
	r = realloc(G.routes, (G.nroutes + 1) * sizeof(*r));
	if (r == NULL)
		return -1;
	G.routes = r;
	r[G.nroutes].addr = strdup(addr);
	r[G.nroutes].signer = signer;
	if (r[G.nroutes].addr == NULL)
		return -1;
	G.nroutes++;
	return 0;
}

/* Every accepted, currently valid certificate with its key, routed by its SAN mailboxes. */
static p11s_rc index_token(p11s_error *err)
{
	p11s_objects_opts oo = {.login = 1, .certificates = 1, .private_keys = 1};
	p11s_object_list *list = NULL;
	p11s_rc rc;

	rc = p11s_objects(G.ctx, NULL, &oo, &list, err);
	if (rc != P11S_OK)
		return rc;
	for (size_t i = 0; rc == P11S_OK && i < p11s_object_list_count(list); i++) {
		const p11s_object *o = p11s_object_list_get(list, i);
		p11s_cert_info *info = NULL;
		long k;

		if (p11s_object_get_class(o) != P11S_OBJ_CERTIFICATE ||
		    p11s_object_private_key(o) == NULL || p11s_object_x509(o) == NULL)
			continue;
		if (p11s_cert_describe(p11s_object_x509(o), &info, err) != P11S_OK ||
		    info->nemails == 0) {
			p11s_error_clear(err);
			p11s_cert_info_free(info);
			continue;
		}
		k = add_signer(p11s_object_uri(o), "token", err);
		if (k == -2)
			rc = P11S_E_NOMEM;
		for (size_t e = 0; k >= 0 && e < info->nemails; e++)
			if (add_route(info->emails[e], (size_t)k) != 0)
				rc = P11S_E_NOMEM;
		p11s_cert_info_free(info);
	}
	p11s_object_list_free(list);
	return rc;
}

static p11s_rc apply_map(const char *path, p11s_error *err)
{
	size_t n;

	if (path == NULL)
		return P11S_OK;
	n = p11s_signer_map_count(G.map);
	G.map_signer = calloc(n ? n : 1, sizeof(*G.map_signer));
	if (G.map_signer == NULL)
		return P11S_E_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *uri;
		unsigned line;
		char where[600];
		long k;

		p11s_signer_map_entry(G.map, i, &uri, &line);
		snprintf(where, sizeof(where), "%s:%u", path, line);
		k = add_signer(uri, where, err);
		if (k < 0) {
			fprintf(stderr, "p11smime: milter: %s: cannot sign with %s\n", where, uri);
			return k == -2 ? P11S_E_NOMEM : P11S_E_NOT_FOUND;
		}
		G.map_signer[i] = (size_t)k;
	}
	return P11S_OK;
}

static void print_routes(void)
{
	for (size_t i = 0; i < p11s_signer_map_count(G.map); i++) {
		const char *uri;
		unsigned line;
		const char *key = p11s_signer_map_entry(G.map, i, &uri, &line);
		const struct gsigner *g = &G.signers[G.map_signer[i]];

		logmsg(LOG_INFO, "signs for %s with %s (%s; signer map line %u)", key, g->subject,
		       g->uri, line);
	}
	for (size_t i = 0; i < G.nroutes; i++) {
		const struct gsigner *g = &G.signers[G.routes[i].signer];

		if (p11s_signer_map_find_address(G.map, G.routes[i].addr) >= 0)
			continue;
		logmsg(LOG_INFO, "signs for %s with %s (%s)", G.routes[i].addr, g->subject, g->uri);
	}
}

/* Exact map entry, then a certificate's own mailbox, then the map's @domain; -1 none. */
static long route_of(const char *addr)
{
	long i = p11s_signer_map_find_address(G.map, addr);

	if (i >= 0)
		return (long)G.map_signer[i];
	for (size_t k = 0; k < G.nroutes; k++)
		if (strcasecmp(G.routes[k].addr, addr) == 0)
			return (long)G.routes[k].signer;
	i = p11s_signer_map_find_domain(G.map, addr);
	return i >= 0 ? (long)G.map_signer[i] : -1;
}

/*
 * After a fault: a new module context, a new login, and the same
 * certificates opened again (the same DER, or the token is not the one we
 * started with).  A PIN that no longer logs in stops all signing for good:
 * trying it again and again would lock the token.
 */
static void recover(void)
{
	p11s_error *err;
	p11s_ctx *ctx = NULL;
	p11s_rc rc = P11S_OK;
	char b[512];
	time_t now = time(NULL);

	pthread_rwlock_wrlock(&G.rw);
	if (atomic_load(&G.state) != GW_FAULT || now - G.last_attempt < RECOVER_INTERVAL) {
		pthread_rwlock_unlock(&G.rw);
		return;
	}
	G.last_attempt = now;
	err = p11s_error_new();
	for (size_t i = 0; i < G.nsigners; i++) {
		p11s_signer_free(G.signers[i].s);
		G.signers[i].s = NULL;
	}
	p11s_ctx_free(G.ctx);
	G.ctx = NULL;
	if (err == NULL)
		rc = P11S_E_NOMEM;
	if (rc == P11S_OK)
		rc = p11s_ctx_new(G.cli->module, &ctx, err);
	if (rc == P11S_OK) {
		G.ctx = ctx;
		p11s_ctx_set_allow_final_try(ctx, G.cli->allow_final_try);
		if (G.cli->pin_source != NULL)
			rc = p11s_ctx_set_pin_source(ctx, G.cli->pin_source, err);
		if (rc == P11S_OK && G.token != NULL)
			rc = p11s_ctx_set_token_filter(ctx, G.token, err);
	}
	for (size_t i = 0; rc == P11S_OK && i < G.nsigners; i++) {
		rc = open_signer(ctx, G.signers[i].uri, &G.signers[i].s, err);
		if (rc == P11S_OK &&
		    X509_cmp(p11s_signer_certificate(G.signers[i].s), G.signers[i].cert) != 0)
			rc = P11S_E_NOT_FOUND;
	}
	if (rc == P11S_OK) {
		atomic_store(&G.state, GW_OK);
		logmsg(LOG_NOTICE, "the token is usable again: signing");
	} else if (p11s_rc_class(rc) == P11S_CLASS_PIN) {
		atomic_store(&G.state, GW_LOGIN_LOST);
		logmsg(LOG_ALERT,
		       "ALERT: the login to the token is lost and the PIN does not log in again "
		       "(%s): every message is refused with a temporary failure until the milter "
		       "is restarted",
		       printable(p11s_error_message(err), b, sizeof(b)));
	} else {
		logmsg(LOG_ERR, "the token is still not usable: %s",
		       rc == P11S_E_NOT_FOUND && *p11s_error_message(err) == '\0'
		           ? "a certificate differs from the one at start"
		           : printable(p11s_error_message(err), b, sizeof(b)));
	}
	p11s_error_free(err);
	pthread_rwlock_unlock(&G.rw);
}

/* ------------------------------------------------------------ callbacks */

static const char *queue_id(SMFICTX *ctx)
{
	const char *q = smfi_getsymval(ctx, "i");

	return q != NULL ? q : "NOQUEUE";
}

static void msg_free(struct msgctx *mc)
{
	if (mc == NULL)
		return;
	p11s_milter_msg_free(mc->m);
	p11s_error_free(mc->err);
	free(mc->from);
	free(mc);
}

static sfsistat reply(SMFICTX *ctx, sfsistat st, const char *why)
{
	char b[300];

	/* libmilter reads the text as a format: no '%' gets through. */
	printable(why, b, sizeof(b));
	for (char *p = b; (p = strchr(p, '%')) != NULL;)
		*p = '?';
	if (st == SMFIS_REJECT)
		smfi_setreply(ctx, "550", "5.7.1", b);
	else if (st == SMFIS_TEMPFAIL)
		smfi_setreply(ctx, "451", "4.7.0", b);
	return st;
}

static void log_message(SMFICTX *ctx, const struct msgctx *mc, const char *what)
{
	char f[300];

	logmsg(LOG_INFO, "%s: from=<%s> %s", printable(queue_id(ctx), (char[64]){0}, 64),
	       printable(mc->from ? mc->from : "", f, sizeof(f)), what);
}

static sfsistat mlfi_envfrom(SMFICTX *ctx, char **argv)
{
	struct msgctx *mc = smfi_getpriv(ctx);

	msg_free(mc);
	smfi_setpriv(ctx, NULL);
	mc = calloc(1, sizeof(*mc));
	if (mc == NULL)
		return SMFIS_TEMPFAIL;
	mc->err = p11s_error_new();
	if (mc->err == NULL || p11s_milter_msg_new(&mc->m, mc->err) != P11S_OK) {
		msg_free(mc);
		return SMFIS_TEMPFAIL;
	}
	mc->signer = -1;
	smfi_setpriv(ctx, mc);
	return SMFIS_CONTINUE;
}

/*
 * RCPT and DATA need nothing here, but answering them keeps the MTA from
 * waiting: a command without a reply (with SMFIP_NORCPT/NODATA the MTA
 * still sends those stages' macros) leaves its segment unacknowledged, and
 * Nagle then holds the MTA's next packet until our delayed ACK, 40 ms a
 * message over TCP.
 */
static sfsistat mlfi_envrcpt(SMFICTX *ctx, char **argv)
{
	return SMFIS_CONTINUE;
}

static sfsistat mlfi_data(SMFICTX *ctx)
{
	return SMFIS_CONTINUE;
}

static sfsistat mlfi_header(SMFICTX *ctx, char *name, char *value)
{
	struct msgctx *mc = smfi_getpriv(ctx);

	if (mc == NULL)
		return SMFIS_TEMPFAIL;
	if (mc->header_failed)
		return SMFIS_CONTINUE;
	if (p11s_milter_msg_header(mc->m, name, value, mc->err) != P11S_OK) {
		mc->header_failed = 1;
		snprintf(mc->why, sizeof(mc->why), "%s", p11s_error_message(mc->err));
	}
	return SMFIS_CONTINUE;
}

/* No signer: passed unchanged, or refused with --require-signature. */
static sfsistat no_signer(SMFICTX *ctx, struct msgctx *mc, const char *why)
{
	char line[400];

	if (G.require) {
		snprintf(line, sizeof(line), "refused: %s (a signature is required)", why);
		log_message(ctx, mc, line);
		snprintf(line, sizeof(line), "not signed: %s; this gateway sends only signed mail",
		         why);
		return reply(ctx, SMFIS_REJECT, line);
	}
	snprintf(line, sizeof(line), "passed unsigned: %s", why);
	log_message(ctx, mc, line);
	return SMFIS_ACCEPT;
}

static sfsistat tempfail_state(SMFICTX *ctx, struct msgctx *mc)
{
	int lost = atomic_load(&G.state) == GW_LOGIN_LOST;

	log_message(ctx, mc,
	            lost ? "tempfail: the login to the token is lost (restart the milter)"
	                 : "tempfail: the token is not usable");
	return reply(ctx, SMFIS_TEMPFAIL,
	             lost ? "signing is unavailable; try again later"
	                  : "the signing token is unavailable; try again later");
}

static sfsistat mlfi_eoh(SMFICTX *ctx)
{
	struct msgctx *mc = smfi_getpriv(ctx);
	const char *secured;
	char why[400];

	if (mc == NULL)
		return SMFIS_TEMPFAIL;
	if (atomic_load(&G.state) == GW_LOGIN_LOST)
		return tempfail_state(ctx, mc);
	if (mc->header_failed)
		return no_signer(ctx, mc, mc->why);
	if (p11s_milter_msg_end_headers(mc->m, mc->err) != P11S_OK) {
		snprintf(why, sizeof(why), "the header block does not parse: %s",
		         p11s_error_message(mc->err));
		return no_signer(ctx, mc, why);
	}
	if (p11s_milter_msg_from(mc->m, &mc->from, mc->err) != P11S_OK)
		return no_signer(ctx, mc, p11s_error_message(mc->err));
	secured = p11s_milter_msg_secured(mc->m);
	if (secured != NULL) {
		snprintf(why, sizeof(why), "passed: already signed or encrypted (%s)", secured);
		log_message(ctx, mc, why);
		return SMFIS_ACCEPT;
	}
	mc->signer = route_of(mc->from);
	if (mc->signer < 0) {
		char f[300];

		snprintf(why, sizeof(why), "no signer for %s", printable(mc->from, f, sizeof(f)));
		return no_signer(ctx, mc, why);
	}
	if (atomic_load(&G.state) == GW_FAULT)
		recover();
	if (atomic_load(&G.state) != GW_OK)
		return tempfail_state(ctx, mc);
	return SMFIS_CONTINUE;
}

static sfsistat mlfi_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct msgctx *mc = smfi_getpriv(ctx);

	if (mc == NULL)
		return SMFIS_TEMPFAIL;
	if (p11s_milter_msg_body(mc->m, chunk, len, mc->err) != P11S_OK) {
		char b[300];

		log_message(ctx, mc, "tempfail: cannot spool the body");
		logmsg(LOG_ERR, "%s", printable(p11s_error_message(mc->err), b, sizeof(b)));
		return reply(ctx, SMFIS_TEMPFAIL, "cannot spool the message; try again later");
	}
	return SMFIS_CONTINUE;
}

/* Hand the signed form to the MTA: MIME fields out, new ones in, new body. */
static int apply(SMFICTX *ctx, p11s_milter_signed *r, p11s_error *err)
{
	unsigned char *buf = malloc(65536);
	size_t n;
	int ok = buf != NULL;

	for (size_t i = 0; ok && i < p11s_milter_signed_delete_count(r); i++) {
		int index;
		const char *name = p11s_milter_signed_delete(r, i, &index);

		ok = smfi_chgheader(ctx, (char *)name, index, NULL) == MI_SUCCESS;
	}
	for (size_t i = 0; ok && i < p11s_milter_signed_add_count(r); i++) {
		const char *value, *name = p11s_milter_signed_add(r, i, &value);

		ok = smfi_addheader(ctx, (char *)name, (char *)value) == MI_SUCCESS;
	}
	while (ok) {
		ok = p11s_milter_signed_read(r, buf, 65536, &n, err) == P11S_OK;
		if (!ok || n == 0)
			break;
		ok = smfi_replacebody(ctx, buf, (int)n) == MI_SUCCESS;
	}
	free(buf);
	return ok;
}

static sfsistat mlfi_eom(SMFICTX *ctx)
{
	struct msgctx *mc = smfi_getpriv(ctx);
	p11s_milter_signed *r = NULL;
	const struct gsigner *g;
	char line[900], b[500];
	p11s_rc rc = P11S_E_TOKEN;
	sfsistat st;

	if (mc == NULL || mc->signer < 0)
		return SMFIS_TEMPFAIL; /* eoh accepted or refused everything else */
	pthread_rwlock_rdlock(&G.rw);
	g = &G.signers[mc->signer];
	if (atomic_load(&G.state) == GW_OK && g->s != NULL) {
		sem_wait(&G.workers);
		rc = p11s_milter_msg_sign(mc->m, g->s, &r, mc->err);
		sem_post(&G.workers);
		if (rc != P11S_OK && p11s_rc_class(rc) != P11S_CLASS_INPUT &&
		    p11s_rc_class(rc) != P11S_CLASS_INTERNAL) {
			int expected = GW_OK;

			atomic_compare_exchange_strong(&G.state, &expected, GW_FAULT);
		}
	}
	snprintf(line, sizeof(line), "%s (%s)", g->subject, g->uri);
	pthread_rwlock_unlock(&G.rw);

	if (rc == P11S_OK && apply(ctx, r, mc->err)) {
		char what[1000];

		snprintf(what, sizeof(what), "signed by %s", printable(line, b, sizeof(b)));
		log_message(ctx, mc, what);
		st = SMFIS_CONTINUE;
	} else if (rc == P11S_OK) {
		log_message(ctx, mc, "tempfail: the MTA did not take the signed message");
		st = reply(ctx, SMFIS_TEMPFAIL, "cannot hand over the signed message");
	} else if (p11s_rc_class(rc) == P11S_CLASS_INPUT) {
		char what[700];

		snprintf(what, sizeof(what), "refused: cannot be signed: %s",
		         printable(p11s_error_message(mc->err), b, sizeof(b)));
		log_message(ctx, mc, what);
		st = reply(ctx, SMFIS_REJECT, what + 9);
	} else if (p11s_rc_class(rc) == P11S_CLASS_INTERNAL || rc == P11S_E_TOKEN) {
		st = tempfail_state(ctx, mc);
	} else {
		char what[700];

		snprintf(what, sizeof(what), "tempfail: signing failed: %s",
		         printable(p11s_error_message(mc->err), b, sizeof(b)));
		log_message(ctx, mc, what);
		st = reply(ctx, SMFIS_TEMPFAIL, "signing failed; try again later");
	}
	p11s_milter_signed_free(r);
	return st;
}

static sfsistat mlfi_abort(SMFICTX *ctx)
{
	msg_free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static sfsistat mlfi_close(SMFICTX *ctx)
{
	msg_free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

/* ------------------------------------------------------------- command */

static void milter_usage(FILE *fp)
{
	fprintf(fp,
	        "Usage: p11smime [--module M] [--pin-source S] milter --listen SOCKET [OPTIONS]\n"
	        "\n"
	        "Sign outgoing mail inside the MTA (Postfix smtpd_milters, Sendmail\n"
	        "INPUT_MAIL_FILTER) with the keys on the token.  Runs in the foreground.\n"
	        "\n"
	        "  --listen SOCKET     inet:PORT@HOST, inet6:PORT@HOST or unix:PATH\n"
	        "  --signer-map FILE   'address URI' and '@domain URI' lines: who signs what\n"
	        "                      beyond (or instead of) the certificates' own addresses\n"
	        "  --token URI         see only the tokens URI matches (pkcs11:token=LABEL):\n"
	        "                      log in, index and sign there only\n"
	        "  --require-signature refuse (5xx) mail whose From has no signer\n"
	        "  --workers N         at most N messages signed at once (default 4)\n"
	        "  --syslog            log to syslog (facility mail) instead of standard error\n"
	        "  --chain FILE        add the certificates in FILE to each signature; repeatable\n"
	        "  --digest NAME       sha256, sha384 or sha512 (default by key)\n"
	        "  --pss               RSA-PSS for RSA keys instead of PKCS#1 v1.5\n"
	        "  --opaque            application/pkcs7-mime instead of multipart/signed\n"
	        "  -h, --help          this help\n"
	        "\n"
	        "At start it logs in once (use --pin-source), finds every certificate on the\n"
	        "token that passes the S/MIME rules now and has its key, and signs mail from\n"
	        "its SAN addresses; it logs what it signs for.  See p11smime-milter(1).\n");
}

/*
 * TCP_NODELAY on libmilter's listening TCP socket, which accepted sockets
 * inherit on Linux: at the end of a message libmilter writes each header
 * change and body chunk as its own small packet, and with Nagle each waits
 * for the MTA's delayed ACK (40 ms).  libmilter does not hand out the
 * socket, so it is found among our descriptors: the one listening on TCP.
 */
static void nodelay_listener(void)
{
	for (int fd = 3; fd < 1024; fd++) {
		struct sockaddr_storage sa;
		socklen_t len = sizeof(sa), olen = sizeof(int);
		int listening = 0, one = 1;

		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen) != 0 || !listening)
			continue;
		if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 ||
		    (sa.ss_family != AF_INET && sa.ss_family != AF_INET6))
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
}

static int valid_listen(const char *s)
{
	return strncmp(s, "inet:", 5) == 0 || strncmp(s, "inet6:", 6) == 0 ||
	       strncmp(s, "unix:", 5) == 0 || strncmp(s, "local:", 6) == 0;
}

int cmd_milter(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"signer-map", required_argument, NULL, 'M'},
	    {"token", required_argument, NULL, 'T'},
	    {"require-signature", no_argument, NULL, 'R'},
	    {"workers", required_argument, NULL, 'w'},
	    {"syslog", no_argument, NULL, 'S'},
	    {"chain", required_argument, NULL, 'c'},
	    {"digest", required_argument, NULL, 'd'},
	    {"pss", no_argument, NULL, 'P'},
	    {"opaque", no_argument, NULL, 'O'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct smfiDesc desc = {
	    .xxfi_name = "p11smime",
	    .xxfi_version = SMFI_VERSION,
	    .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY,
	    .xxfi_envfrom = mlfi_envfrom,
	    .xxfi_envrcpt = mlfi_envrcpt,
	    .xxfi_data = mlfi_data,
	    .xxfi_header = mlfi_header,
	    .xxfi_eoh = mlfi_eoh,
	    .xxfi_body = mlfi_body,
	    .xxfi_eom = mlfi_eom,
	    .xxfi_abort = mlfi_abort,
	    .xxfi_close = mlfi_close,
	};
	const char *listen = NULL, *map_path = NULL;
	const char **chain;
	long workers = 4;
	char *end;
	int c, ret = 0;
	p11s_rc rc;

	memset(&G, 0, sizeof(G));
	G.cli = cli;
	p11s_sign_opts_init(&G.so);
	chain = calloc((size_t)argc, sizeof(*chain));
	if (chain == NULL) {
		fprintf(stderr, "p11smime: out of memory\n");
		return 4;
	}
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen = optarg;
			break;
		case 'M':
			map_path = optarg;
			break;
		case 'T':
			G.token = optarg;
			break;
		case 'R':
			G.require = 1;
			break;
		case 'w':
			errno = 0;
			workers = strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || end == optarg || workers < 1 ||
			    workers > 1024) {
				free(chain);
				return cli_usage_error("milter", "--workers must be 1 to 1024");
			}
			break;
		case 'S':
			G.use_syslog = 1;
			break;
		case 'c':
			chain[G.so.chain_count++] = optarg;
			break;
		case 'd':
			G.so.digest = optarg;
			break;
		case 'P':
			G.so.pss = 1;
			break;
		case 'O':
			G.so.opaque = 1;
			break;
		case 'h':
			milter_usage(stdout);
			free(chain);
			return 0;
		default:
			free(chain);
			return cli_usage_error("milter", "unknown option");
		}
	}
	G.so.chain_files = chain;
	if (G.so.digest == NULL)
		G.so.digest = cli->cfg_digest;
	if (optind < argc) {
		free(chain);
		return cli_usage_error("milter", "unexpected argument '%s'", argv[optind]);
	}
	if (listen == NULL || !valid_listen(listen)) {
		free(chain);
		return cli_usage_error("milter",
		                       "--listen inet:PORT@HOST or unix:PATH is required");
	}
	if (G.so.digest != NULL && strcmp(G.so.digest, "sha256") != 0 &&
	    strcmp(G.so.digest, "sha384") != 0 && strcmp(G.so.digest, "sha512") != 0) {
		free(chain);
		return cli_usage_error("milter", "--digest must be sha256, sha384 or sha512");
	}
	if (G.use_syslog)
		openlog("p11smime", LOG_PID, LOG_MAIL);
	pthread_mutex_init(&G.log_mu, NULL);
	pthread_rwlock_init(&G.rw, NULL);
	sem_init(&G.workers, 0, (unsigned)workers);
	atomic_init(&G.state, GW_OK);

	/* A typo in the map is reported before any login. */
	if (map_path != NULL) {
		rc = p11s_signer_map_load(map_path, &G.map, cli->err);
		if (rc != P11S_OK) {
			ret = cli_fail(cli, rc);
			goto out;
		}
	}
	G.ctx = cli_ctx(cli);
	if (G.ctx == NULL) {
		ret = cli->ctx_exit;
		goto out;
	}
	/* From here on G.ctx is ours: recovery replaces it. */
	cli->ctx = NULL;
	if (G.token != NULL) {
		rc = p11s_ctx_set_token_filter(G.ctx, G.token, cli->err);
		if (rc != P11S_OK) {
			ret = cli_fail(cli, rc);
			goto out;
		}
	}
	rc = index_token(cli->err);
	if (rc != P11S_OK) {
		ret = cli_fail(cli, rc);
		goto out;
	}
	rc = apply_map(map_path, cli->err);
	if (rc != P11S_OK) {
		ret = *p11s_error_message(cli->err) ? cli_fail(cli, rc) : p11s_rc_exit_code(rc);
		goto out;
	}
	if (G.nroutes == 0 && p11s_signer_map_count(G.map) == 0) {
		fprintf(stderr, "p11smime: milter: no certificate on the token can sign mail now "
		                "(see p11smime validate --token)\n");
		ret = 3;
		goto out;
	}
	print_routes();

	if (smfi_setconn((char *)listen) != MI_SUCCESS || smfi_register(desc) != MI_SUCCESS ||
	    smfi_opensocket(1) != MI_SUCCESS) {
		fprintf(stderr, "p11smime: milter: cannot listen on %s\n", listen);
		ret = 3;
		goto out;
	}
	nodelay_listener();
	logmsg(LOG_INFO, "listening on %s", listen);
	/* libmilter stops on SIGTERM (and SIGINT) by itself: smfi_main() returns. */
	if (smfi_main() != MI_SUCCESS) {
		logmsg(LOG_ERR, "stopped on an error");
		ret = 3;
	} else {
		logmsg(LOG_INFO, "stopped");
	}
out:
	/* Signers before their context; main() frees the context. */
	free_signers();
	cli->ctx = G.ctx;
	sem_destroy(&G.workers);
	pthread_rwlock_destroy(&G.rw);
	pthread_mutex_destroy(&G.log_mu);
	if (G.use_syslog)
		closelog();
	free(chain);
	return ret;
}
