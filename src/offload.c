/*
 * A stage of a stream on a helper thread (src/offload.h).
 *
 * A ring of SLOTS blocks: the producer fills slot head % SLOTS and
 * publishes it (head++); the helper consumes slot tail % SLOTS and frees it
 * (tail++).  head - tail is the number of published, unconsumed slots; the
 * producer fills a slot only while it is below SLOTS, so the slot it fills
 * is never the one being consumed.  The lock orders the slot's bytes (written
 * before the publish) before the helper's read of them (after it takes the
 * lock), and the consumer's work before the producer's return from sync.
 *
 * Each side sleeps only when it has nothing to do and says so
 * (helper_idle, producer_waits), so that a wake-up is sent only to a side
 * asleep: a futex call per 512 KiB at most, not per block put.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "offload.h"

#define SLOTS 4
/*
 * 512 KiB: large enough that the hand-over (a lock, at most a wake-up)
 * is lost in the block's digest or cipher (about 0.3 ms of SHA-256), small
 * enough that the ring stays in a processor's cache share.
 */
#define SLOT_SIZE ((size_t)512 * 1024)

size_t p11i_offload_start = P11I_OFFLOAD_START;

struct p11i_offload {
	p11i_offload_fn fn;
	void *arg;
	size_t start_after; /* inline bytes left before the helper starts; SIZE_MAX: never */
	int started;
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t work; /* helper: a slot was published, or stop */
	pthread_cond_t room; /* producer: a slot was consumed */
	unsigned char *buf[SLOTS];
	size_t len[SLOTS];
	unsigned long head, tail; /* under lock */
	size_t fill;              /* producer's: bytes in slot head % SLOTS */
	int failed;               /* under lock once started: the consumer failed (sticky) */
	int broken;               /* producer's: a put or a sync said so (no lock to ask again) */
	int stop;                 /* under lock */
	int helper_idle, producer_waits;
};

static void *helper(void *arg)
{
	p11i_offload *o = arg;
	unsigned long slot;
	int failed;

	pthread_mutex_lock(&o->lock);
	for (;;) {
		while (o->tail == o->head && !o->stop) {
			o->helper_idle = 1;
			pthread_cond_wait(&o->work, &o->lock);
			o->helper_idle = 0;
		}
		if (o->stop)
			break;
		slot = o->tail % SLOTS;
		failed = o->failed;
		pthread_mutex_unlock(&o->lock);
		/* After a failure the slots are only freed: the consumer is not called again. */
		if (!failed && o->fn(o->arg, o->buf[slot], o->len[slot]) != 0)
			failed = 1;
		pthread_mutex_lock(&o->lock);
		if (failed)
			o->failed = 1;
		o->tail++;
		if (o->producer_waits)
			pthread_cond_signal(&o->room);
	}
	pthread_mutex_unlock(&o->lock);
	return NULL;
}

p11i_offload *p11i_offload_new(p11i_offload_fn fn, void *arg, size_t start_after)
{
	p11i_offload *o = calloc(1, sizeof(*o));

	if (o == NULL)
		return NULL;
	o->fn = fn;
	o->arg = arg;
	o->start_after = start_after;
	return o;
}

/* The helper and its ring; on any failure the stage stays inline. */
static void start(p11i_offload *o)
{
	sigset_t all, old;
	int r;

	o->start_after = SIZE_MAX;
	for (int i = 0; i < SLOTS; i++) {
		o->buf[i] = malloc(SLOT_SIZE);
		if (o->buf[i] == NULL)
			return;
	}
	if (pthread_mutex_init(&o->lock, NULL) != 0)
		return;
	if (pthread_cond_init(&o->work, NULL) != 0) {
		pthread_mutex_destroy(&o->lock);
		return;
	}
	if (pthread_cond_init(&o->room, NULL) != 0) {
		pthread_cond_destroy(&o->work);
		pthread_mutex_destroy(&o->lock);
		return;
	}
	/*
	 * The helper takes no asynchronous signal: a SIGINT or SIGTERM meant
	 * for the caller's thread (a handler that expects its system call
	 * interrupted, a sigwait() elsewhere) is never taken by a thread the
	 * caller does not know of.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&o->th, NULL, helper, o);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		pthread_cond_destroy(&o->room);
		pthread_cond_destroy(&o->work);
		pthread_mutex_destroy(&o->lock);
		return;
	}
	o->started = 1;
}

/* Hands the slot being filled to the helper, then waits until fewer than @p busy slots are queued.
 */
static int publish(p11i_offload *o, unsigned long busy)
{
	int failed;

	pthread_mutex_lock(&o->lock);
	if (o->fill > 0) {
		o->len[o->head % SLOTS] = o->fill;
		o->head++;
		o->fill = 0;
		if (o->helper_idle)
			pthread_cond_signal(&o->work);
	}
	while (o->head - o->tail >= busy && !o->failed) {
		o->producer_waits = 1;
		pthread_cond_wait(&o->room, &o->lock);
		o->producer_waits = 0;
	}
	failed = o->failed;
	pthread_mutex_unlock(&o->lock);
	if (failed)
		o->broken = 1;
	return failed ? -1 : 0;
}

int p11i_offload_put(p11i_offload *o, const void *p, size_t n)
{
	const unsigned char *u = p;

	if (o->broken)
		return -1;
	if (!o->started) {
		if (n <= o->start_after) {
			if (o->start_after != SIZE_MAX)
				o->start_after -= n;
			if (n > 0 && o->fn(o->arg, u, n) != 0) {
				o->broken = 1;
				return -1;
			}
			return 0;
		}
		start(o);
		if (!o->started)
			return p11i_offload_put(o, p, n);
	}
	while (n > 0) {
		size_t k = SLOT_SIZE - o->fill < n ? SLOT_SIZE - o->fill : n;

		memcpy(o->buf[o->head % SLOTS] + o->fill, u, k);
		o->fill += k;
		u += k;
		n -= k;
		/* Published full; the next slot is free once fewer than SLOTS are queued. */
		if (o->fill == SLOT_SIZE && publish(o, SLOTS) != 0)
			return -1;
	}
	return 0;
}

int p11i_offload_sync(p11i_offload *o)
{
	if (o == NULL)
		return 0;
	if (!o->started || o->broken)
		return o->broken ? -1 : 0;
	/* Everything queued consumed: nothing busy. */
	return publish(o, 1);
}

int p11i_offload_threaded(const p11i_offload *o)
{
	return o != NULL && o->started;
}

void p11i_offload_free(p11i_offload *o)
{
	if (o == NULL)
		return;
	if (o->started) {
		pthread_mutex_lock(&o->lock);
		o->stop = 1;
		pthread_cond_signal(&o->work);
		pthread_mutex_unlock(&o->lock);
		pthread_join(o->th, NULL);
		pthread_cond_destroy(&o->room);
		pthread_cond_destroy(&o->work);
		pthread_mutex_destroy(&o->lock);
	}
	/*
	 * Not wiped: the blocks are what the caller reads anyway and writes
	 * out (a message to sign, a ciphertext), never a plaintext of its own.
	 */
	for (int i = 0; i < SLOTS; i++)
		free(o->buf[i]);
	free(o);
}
