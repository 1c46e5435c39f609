/*
 * p11smime agent: load the module and log in once, then sign and decrypt
 * for the sign and decrypt commands of the same user (docs/agent.md).
 *
 * Each client has its own thread.  A request's message is spooled to an
 * unnamed temporary file before the library runs, and its output to
 * another before it is sent: memory stays bounded whatever the size of a
 * message, and a slow or stopped client holds nothing another needs.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>

#include "agent_proto.h"
#include "cli.h"
#include "outcore.h"
#include "p11smime/hooks.h"

#define MAX_CLIENTS       64
#define CLIENT_TIMEOUT    300 /* s: a client silent this long is dropped */
#define SIGNER_CACHE      32  /* prepared signers kept (option sets) */
#define SIGNER_FRESH      300 /* s: a signer judged "now" is judged again after this */
#define MAX_START_SIGNERS 16

/* A prepared signer for one set of sign options. */
struct cached {
	struct cached *next;
	unsigned char *key;
	size_t keylen;
	p11s_signer *signer;
	time_t opened;
	int users; /* requests using it now */
	int dead;  /* out of the list: freed by its last user */
};

struct agent {
	struct cli *cli;
	p11s_ctx *ctx;
	char *module; /* the module path, for the greeting */
	uid_t uid;
	int foreground;
	const char *start_signers[MAX_START_SIGNERS];
	int n_start;
	const char *token; /* --token: the tokens this agent sees and logs in to */
	/*
	 * Held (read) by every request around its library calls, and (write)
	 * to replace the context after a token fault: no request runs on a
	 * context being freed.
	 */
	pthread_rwlock_t ctx_lock;
	pthread_mutex_t mu; /* the fields below */
	pthread_cond_t idle;
	struct cached *signers;
	int active;
	int clients[MAX_CLIENTS]; /* their sockets, -1 when free; shut down on SIGTERM */
	char *fault;              /* a token fault the agent has not recovered from */
	/*
	 * A client's thread waits a while for the next connection rather than
	 * exit: a thread's start and end (its stack given back) cost system
	 * calls and, once two processors run the agent, a TLB shootdown each,
	 * per request.  Accepted connections wait in @p queue for them.
	 */
	pthread_cond_t work;
	struct conn *queue; /* FIFO, through conn.next */
	struct conn **queue_end;
	int threads; /* live client threads */
	int waiting; /* of them, waiting for a connection */
	int stopping;
};

struct conn {
	struct agent *a;
	int fd;
	int slot;
	struct conn *next;
};

#define THREAD_LINGER 30 /* s: an idle client thread waits this long for another connection */

static int sig_pipe[2] = {-1, -1};

/* -------------------------------------------------------------- logging */

static void agent_log(const struct agent *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void agent_log(const struct agent *a, const char *fmt, ...)
{
	va_list ap;

	/* Detached, standard error is /dev/null: only -D has someone to tell. */
	if (!a->foreground)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "p11smime agent: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ------------------------------------------------------------- results */

static int send_result(int fd, struct agent_buf *res)
{
	if (res->oom || res->len > AGENT_RESULT_MAX)
		return -1;
	return agent_send(fd, AGENT_RESULT, res->p, (uint32_t)res->len);
}

static void put_rc(struct agent_buf *b, p11s_rc rc)
{
	char num[16];

	snprintf(num, sizeof(num), "%u", (unsigned)rc);
	agent_buf_kv(b, "rc", num);
}

/* A result that is only a refusal: @p rc and a message. */
static void refuse(int fd, p11s_rc rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(int fd, p11s_rc rc, const char *fmt, ...)
{
	struct agent_buf b = {0};
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	put_rc(&b, rc);
	agent_buf_kv(&b, "message", msg ? msg : "refused by the agent");
	send_result(fd, &b);
	agent_buf_free(&b);
	free(msg);
}

/* Take the library's error (message, candidates) into the result. */
static void put_error(struct agent_buf *b, p11s_rc rc, const p11s_error *err)
{
	put_rc(b, rc);
	if (rc == P11S_OK)
		return;
	agent_buf_kv(b, "message", p11s_error_message(err));
	for (size_t i = 0; i < p11s_error_candidate_count(err); i++)
		agent_buf_kv(b, "candidate", p11s_error_candidate(err, i));
}

static void verbose_sink(void *arg, const char *line)
{
	agent_buf_kv(arg, "verbose", line);
}

/* ------------------------------------------------------- signer cache */

static void cached_free(struct cached *e)
{
	if (e == NULL)
		return;
	p11s_signer_free(e->signer);
	free(e->key);
	free(e);
}

/* The options that make a signer different, as bytes. */
static int signer_key(const p11s_sign_opts *so, struct agent_buf *k)
{
	char num[64];

	agent_buf_str(k, so->signer);
	agent_buf_str(k, so->digest ? so->digest : "-");
	snprintf(num, sizeof(num), "%d %d %lld", so->pss, so->opaque, (long long)so->at);
	agent_buf_str(k, num);
	for (size_t i = 0; i < so->chain_count; i++)
		agent_buf_str(k, so->chain_files[i]);
	return k->oom ? -1 : 0;
}

/* Take @p e out of the list (under a->mu); freed now or by its last user. */
static void unlink_cached(struct agent *a, struct cached *e)
{
	for (struct cached **pp = &a->signers; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	}
	e->dead = 1;
	if (e->users == 0)
		cached_free(e);
}

/*
 * A prepared signer for @p so: the cached one, or a new one opened (and
 * kept).  Release it with signer_put().  The login is the context's: no
 * PIN is read again.
 */
static p11s_rc signer_get(struct agent *a, const p11s_sign_opts *so, struct cached **out,
                          p11s_error *err)
{
	struct agent_buf k = {0};
	struct cached *e, *oldest = NULL;
	time_t now = time(NULL);
	size_t n = 0;
	p11s_rc rc;

	if (signer_key(so, &k) != 0) {
		agent_buf_free(&k);
		return P11S_E_NOMEM;
	}
	pthread_mutex_lock(&a->mu);
	for (e = a->signers; e != NULL; e = e->next) {
		if (e->keylen == k.len && memcmp(e->key, k.p, k.len) == 0)
			break;
	}
	if (e != NULL && so->at == 0 && now - e->opened > SIGNER_FRESH) {
		/* Judged "now" a while ago: judge it again (it may have expired). */
		unlink_cached(a, e);
		e = NULL;
	}
	if (e != NULL) {
		e->users++;
		pthread_mutex_unlock(&a->mu);
		agent_buf_free(&k);
		*out = e;
		return P11S_OK;
	}
	pthread_mutex_unlock(&a->mu);

	e = calloc(1, sizeof(*e));
	if (e == NULL) {
		agent_buf_free(&k);
		return P11S_E_NOMEM;
	}
	rc = p11s_signer_open(a->ctx, so, &e->signer, err);
	if (rc != P11S_OK) {
		agent_buf_free(&k);
		free(e);
		return rc;
	}
	e->key = k.p; /* the buffer becomes the key */
	e->keylen = k.len;
	e->opened = now;
	e->users = 1;
	pthread_mutex_lock(&a->mu);
	for (struct cached *c = a->signers; c != NULL; c = c->next) {
		n++;
		if (c->users == 0 && (oldest == NULL || c->opened < oldest->opened))
			oldest = c;
	}
	if (n >= SIGNER_CACHE && oldest != NULL)
		unlink_cached(a, oldest);
	e->next = a->signers;
	a->signers = e;
	pthread_mutex_unlock(&a->mu);
	*out = e;
	return P11S_OK;
}

static void signer_put(struct agent *a, struct cached *e)
{
	pthread_mutex_lock(&a->mu);
	if (--e->users == 0 && e->dead)
		cached_free(e);
	pthread_mutex_unlock(&a->mu);
}

/* Every cached signer goes (a token fault, shutdown).  Under a->mu. */
static void drop_signers(struct agent *a)
{
	while (a->signers != NULL)
		unlink_cached(a, a->signers);
}

/* ------------------------------------------------------ login, faults */

/*
 * Log in: open the --signer signers (which logs in on their tokens), or,
 * without one, log in on every token of the module that --token lets it
 * see (more than one with one PIN is refused before any login).
 */
static p11s_rc agent_login(struct agent *a, p11s_error *err)
{
	p11s_rc rc = P11S_OK;

	for (int i = 0; i < a->n_start && rc == P11S_OK; i++) {
		p11s_sign_opts so;
		struct cached *e;

		p11s_sign_opts_init(&so);
		so.signer = a->start_signers[i];
		so.digest = a->cli->cfg_digest;
		rc = signer_get(a, &so, &e, err);
		if (rc == P11S_OK)
			signer_put(a, e);
	}
	if (a->n_start == 0) {
		p11s_objects_opts oo = {.login = 1, .private_keys = 1};
		p11s_object_list *list = NULL;

		rc = p11s_objects(a->ctx, NULL, &oo, &list, err);
		p11s_object_list_free(list);
	}
	return rc;
}

static p11s_rc new_ctx(struct agent *a, p11s_error *err)
{
	p11s_rc rc = p11s_ctx_new(a->cli->module, &a->ctx, err);

	if (rc != P11S_OK)
		return rc;
	p11s_ctx_set_pin_prompt(a->ctx, cli_tty_prompt, NULL);
	p11s_ctx_set_allow_final_try(a->ctx, a->cli->allow_final_try);
	if (a->cli->pin_source != NULL)
		rc = p11s_ctx_set_pin_source(a->ctx, a->cli->pin_source, err);
	if (rc == P11S_OK && a->token != NULL)
		rc = p11s_ctx_set_token_filter(a->ctx, a->token, err);
	return rc;
}

/*
 * Did the token fail under the request (pulled out, session closed), as
 * opposed to the message or the options?  The token classes say so; a
 * failed C_Sign or C_Decrypt reaches us as a crypto error whose message
 * carries the token's CKR_ name (pkcs11/key.c).
 */
static int token_fault(p11s_rc rc, const char *msg)
{
	static const char *const ckr[] = {
	    "CKR_DEVICE_REMOVED",         "CKR_DEVICE_ERROR",
	    "CKR_TOKEN_NOT_PRESENT",      "CKR_SESSION_CLOSED",
	    "CKR_SESSION_HANDLE_INVALID", "CKR_USER_NOT_LOGGED_IN",
	    "CKR_TOKEN_NOT_RECOGNIZED",   "CKR_CRYPTOKI_NOT_INITIALIZED",
	};

	if (rc == P11S_E_TOKEN || rc == P11S_E_TOKEN_ABSENT || rc == P11S_E_MODULE)
		return 1;
	if (rc == P11S_OK || msg == NULL)
		return 0;
	for (size_t i = 0; i < sizeof(ckr) / sizeof(ckr[0]); i++)
		if (strstr(msg, ckr[i]) != NULL)
			return 1;
	return 0;
}

/* The PIN can be had again without a person: only a file can be read twice. */
static int can_relogin(const struct agent *a)
{
	return a->cli->pin_source != NULL && strncmp(a->cli->pin_source, "file:", 5) == 0;
}

/*
 * After a token fault: a new context (sessions) and a new login, when the
 * token is back and the PIN can be read again.  Called with ctx_lock held
 * for writing: no request is using the old context.
 */
static void recover(struct agent *a)
{
	p11s_error *err = p11s_error_new();
	p11s_rc rc;

	if (err == NULL || !can_relogin(a)) {
		p11s_error_free(err);
		return;
	}
	pthread_mutex_lock(&a->mu);
	drop_signers(a);
	pthread_mutex_unlock(&a->mu);
	p11s_ctx_free(a->ctx);
	a->ctx = NULL;
	rc = new_ctx(a, err);
	if (rc == P11S_OK)
		rc = agent_login(a, err);
	pthread_mutex_lock(&a->mu);
	if (rc == P11S_OK) {
		free(a->fault);
		a->fault = NULL;
		agent_log(a, "the token is back; logged in again");
	} else {
		agent_log(a, "not recovered yet: %s", p11s_error_message(err));
		drop_signers(a);
	}
	pthread_mutex_unlock(&a->mu);
	if (rc != P11S_OK) {
		p11s_ctx_free(a->ctx);
		a->ctx = NULL;
	}
	p11s_error_free(err);
}

/* Record a fault and say what the client's message is. */
static char *fault_message(struct agent *a, const char *what)
{
	char *msg = NULL;

	if (asprintf(&msg, "the token failed during the request (%s); %s", what,
	             can_relogin(a) ? "the agent logs in again when it is back"
	                            : "the agent cannot log in again without its PIN: "
	                              "restart it (p11smime agent -k, then p11smime agent)") < 0)
		msg = NULL;
	pthread_mutex_lock(&a->mu);
	if (a->fault == NULL && msg != NULL)
		a->fault = strdup(msg);
	drop_signers(a);
	pthread_mutex_unlock(&a->mu);
	agent_log(a, "%s", msg ? msg : what);
	return msg;
}

/* ----------------------------------------------------------- requests */

static p11s_rc run_sign(struct agent *a, struct cli *rcli, const struct agent_request *rq, BIO *in,
                        BIO *out, struct agent_buf *res)
{
	p11s_sign_opts so;
	struct cached *e;
	p11s_rc rc;

	p11s_sign_opts_init(&so);
	so.signer = rq->signer;
	so.digest = rq->digest;
	so.chain_files = rq->chain;
	so.chain_count = rq->chain_count;
	so.pss = rq->pss;
	so.opaque = rq->opaque;
	so.at = (time_t)rq->at;
	rc = signer_get(a, &so, &e, rcli->err);
	if (rc != P11S_OK)
		return rc;
	cmd_sign_verbose(rcli, e->signer);
	if (rq->form != P11S_FORM_SMIME)
		rc = p11s_signer_sign_entity(e->signer, in, out, rq->detached,
		                             (p11s_outform)rq->form, rcli->err);
	else
		rc = p11s_signer_sign(e->signer, in, out, rcli->err);
	if (rc == P11S_OK && rq->json) {
		char *doc = report_signer_json(e->signer);

		agent_buf_kv(res, "json", doc);
		free(doc);
	}
	signer_put(a, e);
	return rc;
}

static p11s_rc run_decrypt(struct agent *a, struct cli *rcli, const struct agent_request *rq,
                           BIO *in, BIO *out, struct agent_buf *res)
{
	p11s_decrypt_opts o = {0};
	p11s_decrypt_report *report = NULL;
	p11s_rc rc;

	o.key = rq->key;
	o.at = (time_t)rq->at;
	o.inform = (p11s_decrypt_inform)rq->inform;
	o.keep_line_ends = rq->keep_line_ends;
	o.entity_only = rq->entity_only;
	rc = p11s_decrypt(a->ctx, &o, in, out, &report, rcli->err);
	cmd_decrypt_summary(rcli, report);
	for (size_t i = 0; rc == P11S_OK && i < p11s_decrypt_report_note_count(report); i++)
		agent_buf_kv(res, "note", p11s_decrypt_report_note(report, i));
	if (rq->json && report != NULL) {
		char *doc = report_decrypt_json(report);

		agent_buf_kv(res, "json", doc);
		free(doc);
	}
	p11s_decrypt_report_free(report);
	return rc;
}

/*
 * A request's message or output: in memory up to SPOOL_MEM (a mail is
 * small: no file, no disk, and decrypted content stays off the disk), then
 * in an unnamed file in $TMPDIR.  The memory is wiped when freed: it may
 * be plaintext.
 */
#define SPOOL_MEM (1024 * 1024)

struct spool {
	unsigned char *buf;
	size_t len, cap;
	int fd; /* -1 while in memory */
};

static int spool_put(struct spool *sp, const unsigned char *p, size_t n)
{
	if (sp->fd < 0 && sp->len + n > SPOOL_MEM) {
		sp->fd = p11i_tmpfile(NULL); /* unnamed, 0600: readable by us alone */
		if (sp->fd < 0 || p11i_write_full(sp->fd, sp->buf, sp->len) != 0)
			return -1;
		OPENSSL_cleanse(sp->buf, sp->len);
		sp->len = 0;
	}
	if (sp->fd >= 0)
		return p11i_write_full(sp->fd, p, n);
	if (sp->len + n > sp->cap) {
		size_t cap = sp->cap ? sp->cap : 16 * 1024;
		unsigned char *nb;

		while (cap < sp->len + n)
			cap *= 2;
		nb = malloc(cap);
		if (nb == NULL)
			return errno = ENOMEM, -1;
		if (sp->len > 0)
			memcpy(nb, sp->buf, sp->len);
		OPENSSL_cleanse(sp->buf, sp->len);
		free(sp->buf);
		sp->buf = nb;
		sp->cap = cap;
	}
	memcpy(sp->buf + sp->len, p, n);
	sp->len += n;
	return 0;
}

static void spool_free(struct spool *sp)
{
	OPENSSL_cleanse(sp->buf, sp->len);
	free(sp->buf);
	if (sp->fd >= 0)
		close(sp->fd);
	sp->buf = NULL;
	sp->len = sp->cap = 0;
	sp->fd = -1;
}

static int spool_bio_write(BIO *b, const char *in, int inl)
{
	struct spool *sp = BIO_get_data(b);

	if (inl < 0 || sp == NULL)
		return -1;
	return spool_put(sp, (const unsigned char *)in, (size_t)inl) == 0 ? inl : -1;
}

static long spool_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int spool_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *spool_method;
static pthread_once_t spool_once = PTHREAD_ONCE_INIT;

static void spool_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "agent spool");

	if (m == NULL)
		return;
	BIO_meth_set_write(m, spool_bio_write);
	BIO_meth_set_ctrl(m, spool_bio_ctrl);
	BIO_meth_set_create(m, spool_bio_create);
	spool_method = m;
}

/* A BIO writing into @p sp (which must outlive it); NULL when out of memory. */
static BIO *spool_bio(struct spool *sp)
{
	BIO *b;

	pthread_once(&spool_once, spool_method_init);
	if (spool_method == NULL || (b = BIO_new(spool_method)) == NULL)
		return NULL;
	BIO_set_data(b, sp);
	return b;
}

/*
 * Run a request on the spooled message @p in, its output into @p out
 * (NULL: dropped), the result into @p res.  Returns the request's code.
 */
static p11s_rc run_request(struct agent *a, const struct agent_request *rq, struct spool *in_sp,
                           struct spool *out_sp, struct agent_buf *res)
{
	struct cli rcli = *a->cli;
	char path[64];
	BIO *in = NULL, *out = NULL;
	p11s_rc rc;
	char *fault = NULL;

	rcli.err = p11s_error_new();
	rcli.json = rq->json;
	rcli.verbose = rq->verbose;
	rcli.verbose_sink = verbose_sink;
	rcli.verbose_arg = res; /* the -v lines first, as they are printed before the outcome */
	if (rcli.err == NULL)
		return P11S_E_NOMEM;
	if (in_sp->fd >= 0) {
		/* The library's own buffered input, on the spool file. */
		snprintf(path, sizeof(path), "/proc/self/fd/%d", in_sp->fd);
		rc = p11s_input_open(path, &in, rcli.err);
	} else {
		in = BIO_new_mem_buf(in_sp->buf != NULL ? in_sp->buf : (unsigned char *)"",
		                     (int)in_sp->len);
		rc = in != NULL ? P11S_OK : P11S_E_NOMEM;
	}
	if (rc == P11S_OK && out_sp != NULL) {
		BIO *sb = spool_bio(out_sp), *buf = BIO_new(BIO_f_buffer());

		/* Small writes (headers, base64 lines) gather before they reach the spool. */
		if (sb != NULL && buf != NULL && BIO_set_write_buffer_size(buf, 64 * 1024) == 1) {
			out = BIO_push(buf, sb);
		} else {
			BIO_free(sb);
			BIO_free(buf);
		}
	} else if (rc == P11S_OK) {
		out = BIO_new(BIO_s_null());
	}
	if (rc == P11S_OK && out == NULL)
		rc = P11S_E_NOMEM;

	pthread_rwlock_rdlock(&a->ctx_lock);
	pthread_mutex_lock(&a->mu);
	int faulted = a->fault != NULL;
	pthread_mutex_unlock(&a->mu);
	if (faulted) {
		pthread_rwlock_unlock(&a->ctx_lock);
		pthread_rwlock_wrlock(&a->ctx_lock);
		if (a->fault != NULL)
			recover(a);
		pthread_rwlock_unlock(&a->ctx_lock);
		pthread_rwlock_rdlock(&a->ctx_lock);
	}
	pthread_mutex_lock(&a->mu);
	if (a->fault != NULL && rc == P11S_OK)
		fault = strdup(a->fault);
	pthread_mutex_unlock(&a->mu);

	if (rc == P11S_OK && fault == NULL && a->ctx != NULL) {
		if (rq->cmd == AGENT_CMD_SIGN)
			rc = run_sign(a, &rcli, rq, in, out, res);
		else
			rc = run_decrypt(a, &rcli, rq, in, out, res);
		if (rc == P11S_OK && BIO_flush(out) != 1)
			rc = P11S_E_IO;
		if (token_fault(rc, p11s_error_message(rcli.err)))
			fault = fault_message(a, p11s_error_message(rcli.err));
	}
	pthread_rwlock_unlock(&a->ctx_lock);

	if (fault != NULL) {
		rc = P11S_E_TOKEN;
		put_rc(res, rc);
		agent_buf_kv(res, "message", fault);
		free(fault);
	} else if (rc == P11S_E_IO && p11s_error_message(rcli.err)[0] == '\0') {
		put_rc(res, rc);
		agent_buf_kv(res, "message", "the agent cannot write its temporary file");
	} else {
		put_error(res, rc, rcli.err);
	}
	BIO_free_all(in);
	BIO_free_all(out);
	p11s_error_free(rcli.err);
	return rc;
}

/*
 * One request on a connection, after the greeting: the request, the
 * message, the output and the result.  1 when the connection may carry
 * another request, 0 when it ends here (the client went away, a frame out
 * of turn, a refusal, a failed send).
 */
static int serve_request(struct agent *a, int fd, unsigned char **buf, size_t *cap)
{
	struct agent_buf res = {0};
	struct agent_strings sl = {0};
	struct agent_request rq;
	uint8_t type;
	uint32_t len;
	struct spool in_sp = {.fd = -1}, out_sp = {.fd = -1};
	int ok, more = 0;
	const char *why;

	/* Between requests the client may end the connection: no request, nothing to answer. */
	if (agent_recv(fd, &type, buf, cap, &len) != 1 || type != AGENT_REQUEST)
		goto out;
	if (agent_strings_parse(*buf, len, &sl) != 0) {
		refuse(fd, P11S_E_INTERNAL, "the agent could not read the request");
		goto out;
	}
	if (agent_request_parse(&sl, &rq, &why) != 0) {
		refuse(fd, P11S_E_INTERNAL, "the agent refused the request: %s", why);
		goto out;
	}
	/* The whole message first: in memory, or a file the library reads at disk speed. */
	for (;;) {
		if (agent_recv(fd, &type, buf, cap, &len) != 1)
			goto out; /* the client went away: nothing to answer */
		if (type == AGENT_END)
			break;
		if (type != AGENT_DATA)
			goto out;
		if (spool_put(&in_sp, *buf, len) != 0) {
			refuse(fd, P11S_E_IO, "the agent cannot spool the message: %s",
			       strerror(errno));
			goto out;
		}
	}
	/* Output only after success: the client commits nothing else. */
	ok = run_request(a, &rq, &in_sp, rq.discard ? NULL : &out_sp, &res) == P11S_OK &&
	     !rq.discard;
	if (ok && out_sp.fd < 0) {
		for (size_t off = 0; off < out_sp.len;) {
			size_t k =
			    out_sp.len - off < AGENT_DATA_MAX ? out_sp.len - off : AGENT_DATA_MAX;

			if (agent_send(fd, AGENT_DATA, out_sp.buf + off, (uint32_t)k) != 0)
				goto out;
			off += k;
		}
	} else if (ok) {
		ssize_t n;
		int out_fd = out_sp.fd;

		if (lseek(out_fd, 0, SEEK_SET) != 0)
			goto out;
		if (*cap < AGENT_DATA_MAX) {
			unsigned char *p = realloc(*buf, AGENT_DATA_MAX);

			if (p == NULL)
				goto out;
			*buf = p;
			*cap = AGENT_DATA_MAX;
		}
		while ((n = read(out_fd, *buf, AGENT_DATA_MAX)) > 0)
			if (agent_send(fd, AGENT_DATA, *buf, (uint32_t)n) != 0)
				goto out;
		if (n < 0)
			goto out; /* no result: the client reports a broken request */
	}
	more = send_result(fd, &res) == 0;
out:
	agent_buf_free(&res);
	agent_strings_free(&sl);
	spool_free(&in_sp);
	spool_free(&out_sp);
	return more;
}

/*
 * One client, from greeting to its last result.  The greeting offers
 * "reuse": a client that takes it (a batch's worker) sends its next
 * request on the same connection, without a connect, a greeting and a
 * thread's hand-over per file; any other client closes after its result.
 */
static void serve(struct agent *a, int fd)
{
	struct ucred cr = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
	socklen_t crlen = sizeof(cr);
	struct timeval tv = {.tv_sec = CLIENT_TIMEOUT};
	struct agent_buf hello = {0};
	unsigned char *buf = NULL;
	size_t cap = 0;
	int r;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) != 0 || cr.uid != a->uid) {
		agent_log(a, "refused a client of uid %ld", (long)cr.uid);
		refuse(fd, P11S_E_TOKEN, "the agent serves uid %ld only; uid %ld is refused",
		       (long)a->uid, (long)cr.uid);
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	agent_buf_str(&hello, AGENT_PROTO_VERSION);
	agent_buf_str(&hello, a->module);
	agent_buf_str(&hello, AGENT_HELLO_REUSE);
	r = hello.oom ? -1 : agent_send(fd, AGENT_HELLO, hello.p, (uint32_t)hello.len);
	agent_buf_free(&hello);
	if (r != 0)
		return;
	while (serve_request(a, fd, &buf, &cap))
		;
	/* Frames of messages and of decrypted content passed through it. */
	OPENSSL_clear_free(buf, cap);
}

static void *client_thread(void *arg)
{
	struct conn *c = arg;
	struct agent *a = c->a;
	struct timespec until;

	while (c != NULL) {
		serve(a, c->fd);
		pthread_mutex_lock(&a->mu);
		a->clients[c->slot] = -1;
		close(c->fd);
		free(c);
		c = NULL;
		a->active--;
		/* The next connection, if one comes before long. */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += THREAD_LINGER;
		a->waiting++;
		while (a->queue == NULL && !a->stopping &&
		       pthread_cond_timedwait(&a->work, &a->mu, &until) == 0)
			;
		a->waiting--;
		if (a->queue != NULL) {
			c = a->queue;
			a->queue = c->next;
			if (a->queue == NULL)
				a->queue_end = &a->queue;
		} else {
			a->threads--;
		}
		if (a->active == 0 || a->threads == 0)
			pthread_cond_broadcast(&a->idle);
		pthread_mutex_unlock(&a->mu);
	}
	return NULL;
}

static void accept_one(struct agent *a, int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	pthread_attr_t attr;
	pthread_t t;
	struct conn *c;
	int slot = -1;

	if (fd < 0)
		return;
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
		if (a->clients[i] < 0)
			slot = i;
	if (slot >= 0) {
		a->clients[slot] = fd;
		a->active++;
	}
	pthread_mutex_unlock(&a->mu);
	if (slot < 0) {
		refuse(fd, P11S_E_TOKEN, "the agent is serving %d clients already; try again",
		       MAX_CLIENTS);
		close(fd);
		return;
	}
	c = malloc(sizeof(*c));
	if (c != NULL) {
		c->a = a;
		c->fd = fd;
		c->slot = slot;
		c->next = NULL;
		pthread_mutex_lock(&a->mu);
		/* To a waiting thread not promised to a connection queued before. */
		if (a->waiting > 0 && !a->stopping) {
			int queued = 0;

			for (const struct conn *q = a->queue; q != NULL; q = q->next)
				queued++;
			if (queued < a->waiting) {
				*a->queue_end = c;
				a->queue_end = &c->next;
				pthread_cond_signal(&a->work);
				pthread_mutex_unlock(&a->mu);
				return;
			}
		}
		a->threads++;
		pthread_mutex_unlock(&a->mu);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, client_thread, c) == 0) {
			pthread_attr_destroy(&attr);
			return;
		}
		pthread_attr_destroy(&attr);
		pthread_mutex_lock(&a->mu);
		a->threads--;
		pthread_mutex_unlock(&a->mu);
		free(c);
	}
	pthread_mutex_lock(&a->mu);
	a->clients[slot] = -1;
	a->active--;
	pthread_mutex_unlock(&a->mu);
	close(fd);
}

/* ------------------------------------------------------------ lifecycle */

static void on_signal(int sig)
{
	int saved = errno;
	char c = (char)sig;

	if (write(sig_pipe[1], &c, 1) < 0) {
		/* Nothing to do: a signal already waiting wakes the loop as well. */
	}
	errno = saved;
}

static int listen_on(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* The directory (0700) keeps others out; the socket's own mode as well. */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, 0600) != 0 ||
	    listen(fd, 64) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Serve until SIGTERM (SIGINT, SIGHUP); then stop every client and clean up. */
static void serve_loop(struct agent *a, int lfd)
{
	for (;;) {
		struct pollfd p[2] = {{lfd, POLLIN, 0}, {sig_pipe[0], POLLIN, 0}};

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents != 0)
			break;
		if (p[0].revents & POLLIN)
			accept_one(a, lfd);
	}
	agent_log(a, "stopping");
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (a->clients[i] >= 0)
			shutdown(a->clients[i], SHUT_RDWR);
	/* Idle threads end; a queued connection is still served (shut down: it ends at once). */
	a->stopping = 1;
	pthread_cond_broadcast(&a->work);
	while (a->active > 0 || a->threads > 0)
		pthread_cond_wait(&a->idle, &a->mu);
	drop_signers(a);
	pthread_mutex_unlock(&a->mu);
}

static void print_env(int csh, const char *sock, long pid)
{
	if (csh)
		printf("setenv P11SMIME_AGENT_SOCK %s;\nsetenv P11SMIME_AGENT_PID %ld;\n", sock,
		       pid);
	else
		printf("P11SMIME_AGENT_SOCK=%s; export P11SMIME_AGENT_SOCK;\n"
		       "P11SMIME_AGENT_PID=%ld; export P11SMIME_AGENT_PID;\n",
		       sock, pid);
	fflush(stdout);
}

static int kill_agent(int csh)
{
	const char *v = getenv("P11SMIME_AGENT_PID");
	const char *sock = getenv("P11SMIME_AGENT_SOCK");
	char *end;
	long pid;

	if (v == NULL || *v == '\0')
		return cli_usage_error("agent", "-k: P11SMIME_AGENT_PID is not set");
	errno = 0;
	pid = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || pid <= 1)
		return cli_usage_error("agent", "-k: P11SMIME_AGENT_PID is not a process id");
	if (kill((pid_t)pid, SIGTERM) != 0) {
		fprintf(stderr, "p11smime: agent -k: cannot stop process %ld: %s\n", pid,
		        strerror(errno));
		return 3;
	}
	/* Done when its socket is gone (it is not our child to wait for): 10 s at most. */
	for (int i = 0; sock != NULL && i < 1000 && access(sock, F_OK) == 0; i++)
		usleep(10000);
	if (csh)
		printf("unsetenv P11SMIME_AGENT_SOCK;\nunsetenv P11SMIME_AGENT_PID;\n");
	else
		printf("unset P11SMIME_AGENT_SOCK;\nunset P11SMIME_AGENT_PID;\n");
	printf("echo Agent pid %ld killed;\n", pid);
	return 0;
}

static void agent_help(FILE *fp)
{
	fprintf(fp,
	        "Usage: p11smime [--module M] [--pin-source S] agent [--signer URI|EMAIL]...\n"
	        "                [--token URI] [-D] [-c | -s]\n"
	        "       p11smime agent -k [-c | -s]\n"
	        "\n"
	        "Load the module and log in once, then sign and decrypt for the sign and\n"
	        "decrypt commands of the same user that find P11SMIME_AGENT_SOCK set.  Prints\n"
	        "the variables to set, like ssh-agent: eval \"$(p11smime agent)\".\n"
	        "\n"
	        "  --signer URI|EMAIL  prepare this signer now (repeatable); without one, log\n"
	        "                      in on every token of the module\n"
	        "  --token URI         see only the tokens URI matches (pkcs11:token=LABEL):\n"
	        "                      log in there, sign and decrypt there only\n"
	        "  -D                  stay in the foreground (for systemd); messages on stderr\n"
	        "  -k                  stop the agent named by P11SMIME_AGENT_PID\n"
	        "  -c                  print C shell commands\n"
	        "  -s                  print Bourne shell commands (default unless $SHELL is a\n"
	        "                      csh)\n"
	        "  -h, --help          this help\n");
}

/* Load, log in, listen: 0, or the exit code after printing why. */
static int agent_setup(struct agent *a, const char *sock, int *lfd)
{
	p11s_rc rc = new_ctx(a, a->cli->err);

	if (rc == P11S_OK) {
		a->module = strdup(p11s_ctx_module_path(a->ctx));
		if (a->module == NULL)
			rc = P11S_E_NOMEM;
	}
	if (rc == P11S_OK)
		rc = agent_login(a, a->cli->err);
	if (rc != P11S_OK)
		return cli_fail(a->cli, rc);
	*lfd = listen_on(sock);
	if (*lfd < 0) {
		fprintf(stderr, "p11smime: agent: cannot listen on '%s': %s\n", cli_safe(sock),
		        strerror(errno));
		return 4;
	}
	return 0;
}

int cmd_agent(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"signer", required_argument, NULL, 'S'},
	    {"token", required_argument, NULL, 'T'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct agent a = {.cli = cli, .uid = getuid()};
	const char *shell = getenv("SHELL"), *tmp = getenv("TMPDIR");
	char *dir = NULL, *sock = NULL;
	int c, kill_it = 0, csh, status[2] = {-1, -1}, lfd = -1, ret = 0;
	size_t sl;
	pid_t pid;

	sl = shell ? strlen(shell) : 0;
	csh = sl >= 3 && strcmp(shell + sl - 3, "csh") == 0;
	while ((c = getopt_long(argc, argv, "Dkcsh", opts, NULL)) != -1) {
		switch (c) {
		case 'S':
			if (a.n_start == MAX_START_SIGNERS)
				return cli_usage_error("agent", "at most %d --signer",
				                       MAX_START_SIGNERS);
			a.start_signers[a.n_start++] = optarg;
			break;
		case 'T':
			a.token = optarg;
			break;
		case 'D':
			a.foreground = 1;
			break;
		case 'k':
			kill_it = 1;
			break;
		case 'c':
			csh = 1;
			break;
		case 's':
			csh = 0;
			break;
		case 'h':
			agent_help(stdout);
			return 0;
		default:
			return cli_usage_error("agent", "unknown option");
		}
	}
	if (optind < argc)
		return cli_usage_error("agent", "unexpected argument '%s'", argv[optind]);
	if (kill_it)
		return kill_agent(csh);

	if (asprintf(&dir, "%s/p11smime-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0 ||
	    mkdtemp(dir) == NULL || asprintf(&sock, "%s/agent.%ld", dir, (long)getpid()) < 0) {
		fprintf(stderr, "p11smime: agent: cannot make its directory: %s\n",
		        strerror(errno));
		free(dir);
		return 4;
	}
	/* mkdtemp made it 0700: only its owner can reach the socket. */
	if (!a.foreground) {
		/*
		 * The module is loaded after the fork (a PKCS#11 module cannot be
		 * used across one); the parent waits for the login to report.
		 */
		if (pipe2(status, O_CLOEXEC) != 0 || (pid = fork()) < 0) {
			fprintf(stderr, "p11smime: agent: cannot start: %s\n", strerror(errno));
			rmdir(dir);
			free(dir);
			free(sock);
			return 4;
		}
		if (pid > 0) {
			unsigned char code = 3;

			close(status[1]);
			if (read(status[0], &code, 1) != 1)
				code = 3;
			close(status[0]);
			if (code == 0)
				print_env(csh, sock, (long)pid);
			free(dir);
			free(sock);
			return code;
		}
		close(status[0]);
	}

	pthread_rwlock_init(&a.ctx_lock, NULL);
	pthread_mutex_init(&a.mu, NULL);
	pthread_cond_init(&a.idle, NULL);
	pthread_cond_init(&a.work, NULL);
	a.queue_end = &a.queue;
	for (int i = 0; i < MAX_CLIENTS; i++)
		a.clients[i] = -1;
	ret = agent_setup(&a, sock, &lfd);
	if (ret == 0 && pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		ret = 4;
	if (ret == 0) {
		struct sigaction sa = {.sa_handler = on_signal};

		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
	}
	if (!a.foreground) {
		unsigned char code = (unsigned char)ret;

		if (write(status[1], &code, 1) != 1)
			ret = ret ? ret : 4;
		close(status[1]);
	}
	if (ret == 0) {
		if (a.foreground) {
			print_env(csh, sock, (long)getpid());
		} else {
			int null = open("/dev/null", O_RDWR | O_CLOEXEC);

			/* Detach: no terminal, no stdio of the shell that started it. */
			setsid();
			if (null >= 0) {
				dup2(null, 0);
				dup2(null, 1);
				dup2(null, 2);
				close(null);
			}
			if (chdir("/") != 0) {
				/* Paths from clients are absolute; nothing depends on it. */
			}
		}
		/*
		 * A request's buffers are freed as it ends, and glibc gives the
		 * top of a thread's arena back (madvise) each time more than 128
		 * KiB is free there: two system calls a request, and with the
		 * agent on two processors a TLB shootdown each.  An arena keeps
		 * up to 4 MiB free instead (glibc makes at most 8 per processor).
		 */
		mallopt(M_TRIM_THRESHOLD, 4 << 20);
		serve_loop(&a, lfd);
	}
	if (lfd >= 0) {
		close(lfd);
		unlink(sock);
	}
	rmdir(dir);
	free(dir);
	free(sock);
	free(a.module);
	free(a.fault);
	pthread_mutex_lock(&a.mu);
	drop_signers(&a);
	pthread_mutex_unlock(&a.mu);
	/* main() frees the context, as for every command. */
	cli->ctx = a.ctx;
	for (int i = 0; i < 2; i++)
		if (sig_pipe[i] >= 0)
			close(sig_pipe[i]);
	pthread_cond_destroy(&a.idle);
	pthread_cond_destroy(&a.work);
	pthread_mutex_destroy(&a.mu);
	pthread_rwlock_destroy(&a.ctx_lock);
	return ret;
}
