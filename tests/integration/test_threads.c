/*
 * The library from several threads through one context, for
 * tests/integration/test_threads.sh (and its ThreadSanitizer build in
 * tools/ci-extra.sh).  Public API only.
 *
 *   test_threads sign SIGNER PSS THREADS N OUTDIR
 *       one signer, prepared once, shared by THREADS threads that each sign
 *       N messages at the same time: OUTDIR/T-I.eml, body "thread T message I"
 *   test_threads decrypt N OUTDIR IN...
 *       one thread per IN, each decrypting it N times through the shared
 *       context (its own key lookup, the token's key): OUTDIR/dec-T-I.eml
 *
 * The module is $P11SMIME_MODULE, the PIN source $P11S_PIN_SOURCE.  Exit 0
 * when every operation succeeded; each failure is printed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>

#include "p11smime/decrypt.h"
#include "p11smime/result.h"
#include "p11smime/sign.h"
#include "p11smime/token.h"

struct job {
	int id;
	p11s_ctx *ctx;
	p11s_signer *signer;
	const char *signer_addr, *in, *outdir;
	int n, failures;
};

static pthread_barrier_t start;

static BIO *out_file(const char *dir, const char *prefix, int t, int i)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s%d-%d.eml", dir, prefix, t, i);
	return BIO_new_file(path, "wb");
}

static void *sign_worker(void *arg)
{
	struct job *j = arg;
	p11s_error *err = p11s_error_new();

	pthread_barrier_wait(&start);
	for (int i = 0; i < j->n; i++) {
		char msg[512];
		BIO *in, *out = out_file(j->outdir, "", j->id, i);
		p11s_rc rc;

		snprintf(msg, sizeof(msg),
		         "From: <%s>\r\nTo: <%s>\r\nSubject: thread %d message %d\r\n"
		         "Content-Type: text/plain\r\n\r\nthread %d message %d\r\n",
		         j->signer_addr, j->signer_addr, j->id, i, j->id, i);
		in = BIO_new_mem_buf(msg, -1);
		rc = in && out ? p11s_signer_sign(j->signer, in, out, err) : P11S_E_NOMEM;
		if (rc != P11S_OK) {
			fprintf(stderr, "thread %d message %d: %s\n", j->id, i,
			        p11s_error_message(err));
			j->failures++;
		} else if (p11s_signer_mechanism(j->signer) == NULL) {
			fprintf(stderr, "thread %d message %d: no mechanism reported\n", j->id, i);
			j->failures++;
		}
		BIO_free(in);
		BIO_free(out);
	}
	p11s_error_free(err);
	return NULL;
}

static void *decrypt_worker(void *arg)
{
	struct job *j = arg;
	p11s_error *err = p11s_error_new();

	pthread_barrier_wait(&start);
	for (int i = 0; i < j->n; i++) {
		BIO *in = BIO_new_file(j->in, "rb"), *out = out_file(j->outdir, "dec-", j->id, i);
		p11s_decrypt_report *r = NULL;
		p11s_rc rc;

		/* NULL options: the defaults, the key found from the recipients. */
		rc = in && out ? p11s_decrypt(j->ctx, NULL, in, out, &r, err) : P11S_E_IO;
		if (rc != P11S_OK) {
			fprintf(stderr, "thread %d, %s, round %d: %s\n", j->id, j->in, i,
			        p11s_error_message(err));
			j->failures++;
		}
		p11s_decrypt_report_free(r);
		BIO_free(in);
		BIO_free(out);
	}
	p11s_error_free(err);
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "usage: test_threads sign SIGNER PSS THREADS N OUTDIR\n"
	                "       test_threads decrypt N OUTDIR IN...\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *pin = getenv("P11S_PIN_SOURCE");
	p11s_error *err = p11s_error_new();
	p11s_ctx *ctx = NULL;
	p11s_signer *signer = NULL;
	p11s_sign_opts so;
	struct job *jobs;
	pthread_t *tids;
	int sign, nthreads, n, failures = 0;
	const char *outdir;

	if (argc < 5)
		return usage();
	sign = strcmp(argv[1], "sign") == 0;
	if (sign ? argc != 7 : strcmp(argv[1], "decrypt") != 0)
		return usage();
	nthreads = sign ? atoi(argv[4]) : argc - 4;
	n = atoi(sign ? argv[5] : argv[2]);
	outdir = sign ? argv[6] : argv[3];
	if (nthreads < 1 || n < 1)
		return usage();
	if (p11s_ctx_new(NULL, &ctx, err) != P11S_OK ||
	    (pin != NULL && p11s_ctx_set_pin_source(ctx, pin, err) != P11S_OK)) {
		fprintf(stderr, "context: %s\n", p11s_error_message(err));
		return 1;
	}
	if (sign) {
		p11s_sign_opts_init(&so);
		so.signer = argv[2];
		so.pss = atoi(argv[3]);
		if (p11s_signer_open(ctx, &so, &signer, err) != P11S_OK) {
			fprintf(stderr, "signer: %s\n", p11s_error_message(err));
			return 1;
		}
	}
	jobs = calloc((size_t)nthreads, sizeof(*jobs));
	tids = calloc((size_t)nthreads, sizeof(*tids));
	if (jobs == NULL || tids == NULL || pthread_barrier_init(&start, NULL, (unsigned)nthreads))
		return 1;
	for (int t = 0; t < nthreads; t++) {
		jobs[t] =
		    (struct job){.id = t, .ctx = ctx, .signer = signer, .n = n, .outdir = outdir};
		jobs[t].signer_addr = sign ? argv[2] : NULL;
		jobs[t].in = sign ? NULL : argv[4 + t];
		if (pthread_create(&tids[t], NULL, sign ? sign_worker : decrypt_worker, &jobs[t]))
			return 1;
	}
	for (int t = 0; t < nthreads; t++) {
		pthread_join(tids[t], NULL);
		failures += jobs[t].failures;
	}
	pthread_barrier_destroy(&start);
	printf("%s: %d threads, %d operations each, %d failed\n", argv[1], nthreads, n, failures);
	free(jobs);
	free(tids);
	p11s_signer_free(signer);
	p11s_ctx_free(ctx);
	p11s_error_free(err);
	return failures ? 1 : 0;
}
