/*
 * A stage of a stream on a helper thread (src/offload.c): every byte put
 * reaches the consumer once, in order, whatever the sizes of the puts;
 * inline below the start, on the helper past it; a consumer that fails is
 * not called again and the failure reaches the producer; the consumer's
 * state is the producer's again after a sync.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "offload.h"

struct consumer {
	EVP_MD_CTX *md;
	size_t total, calls;
	size_t fail_at; /* fail the call that would pass this many bytes; 0: never */
	int on_other_thread;
	pthread_t producer;
	int signals_open; /* a call off the producer's thread could take SIGTERM */
};

static int consume(void *arg, const unsigned char *p, size_t n)
{
	struct consumer *c = arg;

	c->calls++;
	if (!pthread_equal(pthread_self(), c->producer)) {
		sigset_t cur;

		c->on_other_thread = 1;
		if (pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0 || !sigismember(&cur, SIGTERM))
			c->signals_open = 1;
	}
	if (c->fail_at > 0 && c->total + n > c->fail_at)
		return -1;
	c->total += n;
	return EVP_DigestUpdate(c->md, p, n) ? 0 : -1;
}

/* A SHA-256 consumer on @p c, and its stage starting after @p start_after bytes. */
static p11i_offload *consumer_stage(struct consumer *c, size_t start_after)
{
	p11i_offload *o;

	memset(c, 0, sizeof(*c));
	c->md = EVP_MD_CTX_new();
	c->producer = pthread_self();
	assert_non_null(c->md);
	assert_int_equal(EVP_DigestInit_ex(c->md, EVP_sha256(), NULL), 1);
	o = p11i_offload_new(consume, c, start_after);
	assert_non_null(o);
	return o;
}

/* A stream of @p len pseudo-random bytes (the same for a seed). */
static unsigned char *stream(size_t len, unsigned seed)
{
	unsigned char *b = malloc(len);
	uint32_t x = seed * 2654435761u + 1;

	assert_non_null(b);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		b[i] = (unsigned char)x;
	}
	return b;
}

static void digest_of(const unsigned char *b, size_t len, unsigned char out[32])
{
	unsigned int l = 0;

	assert_int_equal(EVP_Digest(b, len, out, &l, EVP_sha256(), NULL), 1);
}

/* Puts @p b in pieces of varying sizes (1 byte to 1.5 MiB, so slots fill across puts). */
static void put_all(p11i_offload *o, const unsigned char *b, size_t len)
{
	static const size_t sizes[] = {1, 4095, 65536, 3, 1572864, 524288, 777, 524289};
	size_t i = 0, k = 0;

	while (i < len) {
		size_t n = sizes[k++ % (sizeof(sizes) / sizeof(sizes[0]))];

		if (n > len - i)
			n = len - i;
		assert_int_equal(p11i_offload_put(o, b + i, n), 0);
		i += n;
	}
}

static void run(size_t len, size_t start_after, int want_thread)
{
	unsigned char *b = stream(len, (unsigned)len), want[32], got[32];
	struct consumer c;
	p11i_offload *o = consumer_stage(&c, start_after);
	unsigned int l = 0;

	put_all(o, b, len);
	assert_int_equal(p11i_offload_sync(o), 0);
	/* After the sync the consumer's state is ours: every byte is in it. */
	assert_int_equal(c.total, len);
	assert_int_equal(EVP_DigestFinal_ex(c.md, got, &l), 1);
	digest_of(b, len, want);
	assert_memory_equal(got, want, 32);
	assert_int_equal(p11i_offload_threaded(o), want_thread);
	assert_int_equal(c.on_other_thread, want_thread);
	/* The helper takes no signal meant for the caller. */
	assert_int_equal(c.signals_open, 0);
	p11i_offload_free(o);
	EVP_MD_CTX_free(c.md);
	free(b);
}

static void small_streams_stay_inline(void **state)
{
	(void)state;
	run(0, P11I_OFFLOAD_START, 0);
	run(100000, P11I_OFFLOAD_START, 0);
	run(P11I_OFFLOAD_START, P11I_OFFLOAD_START, 0);
}

static void large_streams_reach_the_helper_whole_and_in_order(void **state)
{
	(void)state;
	/* Past the start; many times the ring; a slot's size exactly; one byte over. */
	run(P11I_OFFLOAD_START + 1, P11I_OFFLOAD_START, 1);
	run((size_t)40 << 20, P11I_OFFLOAD_START, 1);
	run((size_t)512 * 1024, 0, 1);
	run((size_t)512 * 1024 + 1, 0, 1);
	run((size_t)4 * 512 * 1024 * 3, 0, 1);
}

/* Syncs in the middle (a mark, a rewind): the state so far is whole, and the stream goes on. */
static void a_sync_midway_hands_the_state_back(void **state)
{
	size_t len = (size_t)9 << 20, half = len / 2 + 12345;
	unsigned char *b = stream(len, 7), want[32], got[32];
	struct consumer c;
	p11i_offload *o = consumer_stage(&c, 1000);
	EVP_MD_CTX *copy = EVP_MD_CTX_new();
	unsigned int l = 0;

	(void)state;
	put_all(o, b, half);
	assert_int_equal(p11i_offload_sync(o), 0);
	assert_int_equal(c.total, half);
	assert_int_equal(EVP_MD_CTX_copy_ex(copy, c.md), 1);
	assert_int_equal(EVP_DigestFinal_ex(copy, got, &l), 1);
	digest_of(b, half, want);
	assert_memory_equal(got, want, 32);
	put_all(o, b + half, len - half);
	assert_int_equal(p11i_offload_sync(o), 0);
	assert_int_equal(EVP_DigestFinal_ex(c.md, got, &l), 1);
	digest_of(b, len, want);
	assert_memory_equal(got, want, 32);
	p11i_offload_free(o);
	EVP_MD_CTX_free(copy);
	EVP_MD_CTX_free(c.md);
	free(b);
}

static void a_failing_consumer_stops_the_stream(void **state)
{
	size_t len = (size_t)24 << 20;
	unsigned char *b = stream(len, 3);
	int seen = 0;

	(void)state;
	/* Failing inline (before the start) and on the helper (after it). */
	for (int on_helper = 0; on_helper <= 1; on_helper++) {
		struct consumer c;
		p11i_offload *o = consumer_stage(&c, on_helper ? 1000 : len);
		size_t i = 0, calls;

		c.fail_at = (size_t)10 << 20;
		seen = 0;
		/* The producer learns of it at a put (once the ring is full) or at the sync. */
		for (; i < len; i += 65536)
			if (p11i_offload_put(o, b + i, 65536) != 0) {
				seen = 1;
				break;
			}
		assert_int_equal(seen, 1);
		assert_int_equal(p11i_offload_sync(o), -1);
		assert_int_equal(p11i_offload_put(o, b, 1), -1);
		assert_true(c.total <= c.fail_at);
		assert_int_equal(c.on_other_thread, on_helper);
		calls = c.calls;
		/* Not called again, however much more is put. */
		assert_int_equal(p11i_offload_put(o, b, (size_t)3 << 20), -1);
		assert_int_equal(p11i_offload_sync(o), -1);
		assert_int_equal(c.calls, calls);
		p11i_offload_free(o);
		EVP_MD_CTX_free(c.md);
	}
	free(b);
}

/* Freed with bytes still queued: the helper stops, nothing leaks (ASan), no call after the free. */
static void free_without_sync_stops_the_helper(void **state)
{
	size_t len = (size_t)12 << 20;
	unsigned char *b = stream(len, 5);
	struct consumer c;
	p11i_offload *o = consumer_stage(&c, 0);

	(void)state;
	put_all(o, b, len);
	p11i_offload_free(o);
	assert_true(c.total <= len);
	p11i_offload_free(NULL);
	assert_int_equal(p11i_offload_sync(NULL), 0);
	EVP_MD_CTX_free(c.md);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(small_streams_stay_inline),
	    cmocka_unit_test(large_streams_reach_the_helper_whole_and_in_order),
	    cmocka_unit_test(a_sync_midway_hands_the_state_back),
	    cmocka_unit_test(a_failing_consumer_stops_the_stream),
	    cmocka_unit_test(free_without_sync_stops_the_helper),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
