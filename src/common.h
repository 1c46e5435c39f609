/*
 * Private helpers shared by src/ and pkcs11/.  Not installed.
 */
#ifndef P11I_COMMON_H
#define P11I_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <openssl/types.h>

#include "p11smime/result.h"
#include "p11smime/token.h"

#if defined(__GNUC__)
#define P11I_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define P11I_PRINTF(f, a)
#endif

/*
 * Record @p rc with a printf-style message in @p err (which may be NULL)
 * and return @p rc, so that callers can write `return p11i_err(...)`.
 * An error already recorded is replaced.
 */
p11s_rc p11i_err(p11s_error *err, p11s_rc rc, const char *fmt, ...) P11I_PRINTF(3, 4);

/*
 * As p11i_err(), and append the reason at the top of OpenSSL's error
 * queue in words ("... (unsupported)", never "error:1E08010C:..."; see
 * p11i_ossl_reason), then clear the queue so the next error does not
 * inherit stale reasons.
 */
p11s_rc p11i_err_ossl(p11s_error *err, p11s_rc rc, const char *fmt, ...) P11I_PRINTF(3, 4);

/* p11i_err(@p err, P11S_E_NOMEM, "out of memory"), the one wording of it. */
p11s_rc p11i_err_nomem(p11s_error *err);

/*
 * A p11s_rc with its message, passed through OpenSSL's error queue from
 * code OpenSSL calls (pkcs11/key.c's methods): raised as ERR_LIB_USER
 * with reason P11I_ERR_R_RC + rc and the message as data, it becomes the
 * rc and the reason of p11i_err_ossl() (a PIN problem stays one, exit 3).
 */
#define P11I_ERR_R_RC 0x10000

/*
 * Private controls of the output BIO (src/output.c); filters pass them on.
 * TELL: *(int64_t *)ptr = the bytes written so far, 1; 0 where the output
 * cannot be taken back (a device, a FIFO, another kind of BIO).  REWIND:
 * back to position num (from TELL), what followed dropped; 1, or 0.
 */
#define P11I_BIO_CTRL_TELL   0x7f11
#define P11I_BIO_CTRL_REWIND 0x7f12
/*
 * WRITE_REF (ptr: a struct p11i_bio_ref): bytes that are a range of a
 * regular input file (src/outcore.c's p11i_out_write_ref()).  The output
 * BIO answers P11I_BIO_CTRL_WRITE_REF itself when it took them; any other
 * answer: write the bytes.  Sent only to the last BIO of a chain, as a
 * filter would pass it on past itself.  With a NULL ptr, a question: the
 * same answer when the output may take ranges at all (standard output).
 */
#define P11I_BIO_CTRL_WRITE_REF 0x7f13

struct stat;
struct p11i_bio_ref {
	int fd;                /* the input */
	const struct stat *st; /* its identity when its reading started */
	long long off;         /* where the bytes are in it */
	const void *p;
	size_t n;
};

/*
 * OpenSSL's reason for the error @p e in words into @p buf, or "" when it
 * adds nothing to @p msg (none, a system error, words already there).
 */
void p11i_ossl_reason(unsigned long e, const char *msg, char *buf, size_t len);

/* Add a candidate to an ambiguous or failed selection. */
void p11i_err_add_candidate(p11s_error *err, const char *candidate);

/* Hex of @p len bytes, lower case, malloc'd; NULL on ENOMEM. */
char *p11i_hex(const unsigned char *buf, size_t len);

/*
 * A serial number as every report and message spells it: lower-case hex
 * of whole bytes ("0abc"), "0" for zero, "-" first when negative.
 * malloc'd; NULL on ENOMEM.
 */
char *p11i_serial_hex(const ASN1_INTEGER *serial);

/* Fatal on allocation failure is not our style: these return NULL. */
char *p11i_strdup(const char *s);
char *p11i_strndup(const char *s, size_t n);
char *p11i_asprintf(const char *fmt, ...) P11I_PRINTF(1, 2);

/*
 * A read-write temporary file in $TMPDIR (/tmp if unset) that never has a
 * name (O_TMPFILE), or has one for an instant where the file system lacks
 * it: nothing stays on disk after any exit, kill -9 included.  The fd, or
 * -1 with errno; *dirp (if given) is the directory, for messages.
 */
int p11i_tmpfile(const char **dirp);

/* All @p n bytes to @p fd (EINTR retried); 0, or -1 with errno. */
int p11i_write_full(int fd, const void *buf, size_t n);

/*
 * A read-write BIO on a p11i_tmpfile() (buffered, seekable, BIO_TYPE_FILE):
 * where a message too large to hold is spooled.  NULL with the reason in
 * @p err (which may be NULL; errno is kept).
 */
BIO *p11i_spool_new(p11s_error *err);

/*
 * For an input from p11s_input_open(), without a system call: 1 with its
 * position in *@p pos (what BIO_tell() would say) when it is a regular
 * file; 0 when it is known to be none; -1 when the BIO does not know (any
 * other BIO, standard input, a move it could not follow): ask the file.
 */
int p11i_input_pos(BIO *b, long *pos);
/*
 * The descriptor of an input from p11s_input_open(), else -1: for reads at
 * offsets (pread, copy_file_range), which leave its position as it is.
 * Asking the BIO for its FILE instead makes the position unknown.
 */
int p11i_input_fd(BIO *b);

/* The stdio stream behind a file BIO (BIO_new_file() and the like), else NULL; the BIO's. */
FILE *p11i_bio_fp(BIO *b);

/*
 * Free the BIOs of a chain from @p top down to, not including, @p keep
 * (the filters a function stacked on a BIO it was given).  NULL @p top is
 * fine; a NULL @p keep frees the whole chain.
 */
void p11i_bio_free_upto(BIO *top, BIO *keep);

/*
 * The one growable array: v[0..n) in use, room for cap elements of T.
 * {0} is empty; free(x.v), after what the elements own, releases it.
 */
#define P11I_VEC(T)            \
	struct {               \
		T *v;          \
		size_t n, cap; \
	}

/*
 * Room for @p more elements after the @p n in use of the array @p arr
 * (an lvalue T *, @p cap allocated; both size_t lvalues): 0, or -1 (out of
 * memory or overflow; nothing changed).  The capacity at least doubles, so
 * that n pushes cost linear time.  For arrays kept in fields of their own;
 * p11i_vec_reserve() is the same on a P11I_VEC.
 */
#define P11I_GROW(arr, n, cap, more)   \
	((cap) - (n) >= (size_t)(more) \
	     ? 0                       \
	     : p11i_vec_grow(&(arr), &(cap), (n), (more), sizeof(*(arr))))

/* Room in the P11I_VEC @p vec for @p more elements after its n: as P11I_GROW. */
#define p11i_vec_reserve(vec, more) P11I_GROW((vec)->v, (vec)->n, (vec)->cap, (more))

/* Append @p x to the P11I_VEC @p vec: 0, or -1 (out of memory; @p vec unchanged). */
#define p11i_vec_push(vec, x) \
	(p11i_vec_reserve((vec), 1) != 0 ? -1 : ((vec)->v[(vec)->n++] = (x), 0))

/* Behind P11I_GROW: @p arrayp points at the array's T *. */
int p11i_vec_grow(void *arrayp, size_t *cap, size_t n, size_t more, size_t size);

/*
 * The DER certificate @p der parsed without decoding its public key, for
 * reading names, serial, validity and extensions: OpenSSL 3.0 decodes the
 * key of every certificate through the provider decoders, which costs
 * about 100 us a certificate, more than everything else a listing does
 * with it.  On the result X509_get0_pubkey() gives NULL and nothing that
 * needs an algorithm works (digests, signatures, X509_check_purpose);
 * X509_get_X509_PUBKEY() gives the undecoded key.  NULL when @p der is not
 * a certificate.  X509_free() it.
 */
X509 *p11i_x509_parse_light(const unsigned char *der, size_t len);

/* The name of the named curve @p nid: "P-256", else OpenSSL's short name; NULL if none. Static. */
const char *p11i_curve_name(int nid);

/*
 * Type, size (RSA modulus bits, EC order bits; 0 when unknown) and named
 * curve (p11i_curve_name(), or NULL) of @p pk.  NULL @p pk: P11S_KEY_OTHER.
 */
p11s_key_type p11i_pkey_facts(EVP_PKEY *pk, int *bits, const char **curve);

/*
 * A set of certificates by content (src/certs.c), for de-duplicating long
 * lists in linear time.  p11i_certset_add(): 1 added, 0 already there,
 * -1 out of memory or a certificate that does not encode.
 */
typedef struct p11i_certset p11i_certset;
p11i_certset *p11i_certset_new(void);
void p11i_certset_free(p11i_certset *set);
int p11i_certset_add(p11i_certset *set, X509 *x);

/* Wipe the NUL-terminated secret @p s with OPENSSL_cleanse, then free it; NULL is fine. */
void p11i_wipe_free(char *s);

/*
 * Mark the start and end of holding a secret (a PIN, a plaintext private
 * key): the process is kept non-dumpable (prctl PR_SET_DUMPABLE 0) from
 * the first hold to the last release.  Not thread-safe: one CLI run.
 */
void p11i_secret_hold(void);
void p11i_secret_release(void);

/*
 * A copy of the secret @p s in its own mlock'ed, MADV_DONTDUMP pages, held
 * (p11i_secret_hold) until p11i_locked_free() wipes and unmaps it.  NULL
 * on failure.  Only for secrets that must outlive the call that read them.
 */
char *p11i_locked_strdup(const char *s);
void p11i_locked_free(char *s);

#endif
