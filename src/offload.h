/*
 * p11smime internal: a stage of a stream run on a helper thread.
 *
 * A large message's sign spends half its time in SHA-256 and its decrypt
 * half in AES-GCM; the other half (reading, MIME framing, base64, writing)
 * needs neither.  p11i_offload hands the digest's or the cipher's blocks to
 * a helper thread, so the two halves run on two processors: the message's
 * wall time is the larger half, not the sum.
 *
 * The bytes are copied into a ring of four 512 KiB blocks (2 MiB at most,
 * allocated when the helper starts); the producer waits when the ring is
 * full.  The first @p start_after bytes are consumed inline, on the
 * producer's thread, with no copy and no thread: the usual mail never
 * starts one.
 *
 * Threads: one offload is used by one producer thread; its consumer runs on
 * that thread (inline) or on the helper, never on both at once, and never
 * after p11i_offload_sync() or p11i_offload_free() returned.  Whatever the
 * consumer touches belongs to it between p11i_offload_new() and those
 * calls: the producer leaves it alone meanwhile.
 */
#ifndef P11SMIME_OFFLOAD_H
#define P11SMIME_OFFLOAD_H

#include <stddef.h>

/** The consumer: 0, or nonzero to fail the stream (it is not called again). */
typedef int (*p11i_offload_fn)(void *arg, const unsigned char *p, size_t n);

typedef struct p11i_offload p11i_offload;

/** Bytes consumed inline before the helper thread starts (4 MiB). */
#define P11I_OFFLOAD_START ((size_t)4 << 20)

/**
 * The start sign and decrypt give their stages: P11I_OFFLOAD_START.  The
 * fuzz targets lower it (before any thread runs) so that their small
 * inputs reach the helper too.
 */
extern size_t p11i_offload_start;

/**
 * A stage calling @p fn with @p arg on each block put, in order; inline up
 * to @p start_after bytes, then on a helper thread.  NULL when out of memory.
 * A helper that cannot be started leaves the stage inline: slower, not wrong.
 */
p11i_offload *p11i_offload_new(p11i_offload_fn fn, void *arg, size_t start_after);

/**
 * Queues @p n bytes at @p p (copied: the caller may reuse @p p at once).
 * -1 when the consumer failed on these or earlier bytes; then nothing more
 * is consumed.
 */
int p11i_offload_put(p11i_offload *o, const void *p, size_t n);

/**
 * Waits until every byte put is consumed.  0, or -1 when the consumer
 * failed.  The consumer's state is the caller's again until the next put.
 */
int p11i_offload_sync(p11i_offload *o);

/** 1 when the helper thread ran (for tests and figures). */
int p11i_offload_threaded(const p11i_offload *o);

/**
 * Stops the helper (what was put and not yet consumed is dropped: call
 * p11i_offload_sync() first to keep it), joins it, frees @p o.  NULL is fine.
 */
void p11i_offload_free(p11i_offload *o);

#endif
