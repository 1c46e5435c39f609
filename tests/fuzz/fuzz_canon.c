/*
 * Canonicalisation (what sign does to an entity): headers, then the body
 * through multipart descent, transfer-encoding choice, spooling and the
 * base64 and quoted-printable writers.  The first byte picks the header
 * classes and the line-end filter the output goes through.  With bit 16,
 * sign's own chain instead (SHA-256, then the LF filter, or with bit 32
 * the CRLF one, then the output), where clean blocks take the split (the
 * output as the input had it, the digest in CRLF): its output and digest
 * must be what the plain canonical form gives; bit 64 reads it from a
 * regular file (a memfd), where a top-level part is written as it is
 * scanned and taken back if it turns out to need an encoding, and where
 * the output takes clean blocks as ranges of the file
 * (P11I_BIO_CTRL_WRITE_REF): each must be the file's bytes at its offset.
 * With bit 2 as well, the file is opened as the command opens one
 * (p11s_input_open()): its BIO counts its own position instead of asking
 * the kernel, and the readers' offsets come from that count.  With bit 4
 * the digest is fed through a helper thread as sign feeds a large entity's
 * (src/offload.h), from the first byte on (bit 8) or past the 64th.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#include "common.h"
#include "mime.h"
#include "offload.h"
#include "p11smime/io.h"

static unsigned char *mem_copy(BIO *m, size_t *n)
{
	char *d;
	long l = BIO_get_mem_data(m, &d);
	unsigned char *c = malloc(l > 0 ? (size_t)l : 1);

	if (c == NULL)
		abort();
	if (l > 0)
		memcpy(c, d, (size_t)l);
	*n = l > 0 ? (size_t)l : 0;
	return c;
}

/*
 * The end of the chain, in front of a memory BIO: it takes a range of the
 * input by reference as the output does, once it has read the same bytes
 * at that offset of the file.
 */
static long ref_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	BIO *mem = BIO_get_data(b);

	if (cmd == P11I_BIO_CTRL_WRITE_REF) {
		const struct p11i_bio_ref *r = ptr;
		unsigned char *buf = malloc(r->n ? r->n : 1);

		if (buf == NULL || !S_ISREG(r->st->st_mode) ||
		    pread(r->fd, buf, r->n, (off_t)r->off) != (ssize_t)r->n ||
		    memcmp(buf, r->p, r->n) != 0)
			abort();
		free(buf);
		return BIO_write(mem, r->p, (int)r->n) == (int)r->n ? P11I_BIO_CTRL_WRITE_REF : 0;
	}
	return BIO_ctrl(mem, cmd, num, ptr);
}

static int ref_write(BIO *b, const char *p, int n)
{
	return BIO_write(BIO_get_data(b), p, n);
}

static int ref_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO *ref_sink(BIO *mem)
{
	static BIO_METHOD *m;
	BIO *b;

	if (m == NULL) {
		m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "fuzz reference sink");
		if (m == NULL || !BIO_meth_set_write(m, ref_write) ||
		    !BIO_meth_set_ctrl(m, ref_ctrl) || !BIO_meth_set_create(m, ref_create))
			abort();
	}
	b = BIO_new(m);
	if (b == NULL)
		abort();
	BIO_set_data(b, mem);
	return b;
}

/* Taking back a part written ahead, as sign does: the digest and the output as they were. */
struct undo {
	BIO *md, *eol, *mem;
	EVP_MD_CTX *saved;
	long pos;
	p11i_offload *dq; /* the digest's helper: synced before the context is touched */
};

static int digest_update(void *arg, const unsigned char *p, size_t n)
{
	return EVP_DigestUpdate(arg, p, n) ? 0 : -1;
}

static int undo_mark(void *arg)
{
	struct undo *u = arg;
	EVP_MD_CTX *ctx = NULL;
	char *d;

	u->pos = BIO_get_mem_data(u->mem, &d);
	if (p11i_offload_sync(u->dq) != 0 || BIO_get_md_ctx(u->md, &ctx) <= 0 ||
	    (u->saved == NULL && (u->saved = EVP_MD_CTX_new()) == NULL) ||
	    !EVP_MD_CTX_copy_ex(u->saved, ctx))
		abort();
	return 0;
}

static int undo_rewind(void *arg)
{
	struct undo *u = arg;
	EVP_MD_CTX *ctx = NULL;
	char *d, *keep;
	long n = BIO_get_mem_data(u->mem, &d);

	if (p11i_offload_sync(u->dq) != 0 || n < u->pos || BIO_get_md_ctx(u->md, &ctx) <= 0 ||
	    !EVP_MD_CTX_copy_ex(ctx, u->saved) || (keep = malloc((size_t)u->pos + 1)) == NULL)
		abort();
	if (u->pos > 0)
		memcpy(keep, d, (size_t)u->pos);
	/* The filter's reset goes on to the memory BIO and empties it. */
	(void)BIO_ctrl(u->eol, BIO_CTRL_RESET, 0, NULL);
	(void)BIO_reset(u->mem);
	if (u->pos > 0 && BIO_write(u->mem, keep, (int)u->pos) != (int)u->pos)
		abort();
	free(keep);
	return 0;
}

/*
 * The input as a regular file (a memfd), where sign writes a top-level
 * part ahead; @p file 2: through p11s_input_open().  Its identity in *@p st.
 */
static BIO *file_bio(const uint8_t *data, size_t size, int file, struct stat *st)
{
	int fd = memfd_create("fuzz_canon", 0);
	char path[64];
	FILE *fp;
	BIO *b = NULL;

	if (fd < 0 || (size > 0 && write(fd, data, size) != (ssize_t)size) ||
	    lseek(fd, 0, SEEK_SET) != 0 || fstat(fd, st) != 0)
		abort();
	if (file == 2) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (p11s_input_open(path, &b, NULL) != P11S_OK ||
		    p11i_input_pos(b, &(long){0}) != 1)
			abort();
		close(fd);
		return b;
	}
	if ((fp = fdopen(fd, "rb")) == NULL)
		abort();
	return BIO_new_fp(fp, BIO_CLOSE);
}

/*
 * sign's chain against the canonical form digested and then filtered;
 * @p file: from a regular file, written ahead and taken back as sign does.
 */
static void split_check(const uint8_t *data, size_t size, unsigned classes, p11i_eol to, int file,
                        int offload)
{
	struct stat st;
	BIO *in = file ? file_bio(data, size, file, &st) : BIO_new_mem_buf(data, (int)size);
	BIO *ref = BIO_new(BIO_s_mem());
	BIO *mem = BIO_new(BIO_s_mem()), *eol = p11i_bio_eol_new(to);
	BIO *md = BIO_new(BIO_f_md()), *e2 = p11i_bio_eol_new(to);
	BIO *m2 = BIO_new(BIO_s_mem()), *sink = mem != NULL ? ref_sink(mem) : NULL;
	p11i_headers *h = NULL;
	p11s_rc a, b;
	unsigned char dig[32], want[32], *got, *can, *conv;
	size_t gl, cl, vl;
	unsigned int dl;
	EVP_MD_CTX *ctx = NULL;

	if (in == NULL || ref == NULL || mem == NULL || eol == NULL || md == NULL || e2 == NULL ||
	    m2 == NULL || BIO_set_md(md, EVP_sha256()) <= 0)
		abort();
	BIO_push(md, eol);
	BIO_push(eol, sink);
	BIO_push(e2, m2);
	if (p11i_headers_read(in, 64 * 1024, &h, NULL) != 0)
		goto out;
	{
		EVP_MD_CTX *mctx = NULL;
		p11i_offload *dq = NULL;

		if (offload &&
		    (BIO_get_md_ctx(md, &mctx) <= 0 ||
		     (dq = p11i_offload_new(digest_update, mctx, offload == 1 ? 0 : 64)) == NULL))
			abort();
		struct undo u = {md, eol, mem, NULL, 0, dq};
		const p11i_canon_undo undo = {undo_mark, undo_rewind, &u, file ? &st : NULL, dq};

		a = p11i_mime_canonicalize_undo(h, classes, in, md, file || dq ? &undo : NULL,
		                                NULL);
		/* The digest whole again before it is read (or freed with the helper). */
		if (a == 0 && p11i_offload_sync(dq) != 0)
			abort();
		p11i_offload_free(dq);
		EVP_MD_CTX_free(u.saved);
	}
	p11i_headers_free(h);
	h = NULL;
	BIO_free(in);
	/* The reference reads the same kind of BIO (a FILE's line reads treat a NUL unlike
	 * memory's). */
	in = file ? file_bio(data, size, file, &st) : BIO_new_mem_buf(data, (int)size);
	if (in == NULL || p11i_headers_read(in, 64 * 1024, &h, NULL) != 0)
		abort();
	b = p11i_mime_canonicalize(h, classes, in, ref, NULL);
	if (a != b)
		abort();
	if (a != 0)
		goto out;
	if (BIO_flush(md) != 1 || BIO_get_md_ctx(md, &ctx) <= 0 ||
	    !EVP_DigestFinal_ex(ctx, dig, &dl))
		abort();
	can = mem_copy(ref, &cl);
	if (!EVP_Digest(can, cl, want, &dl, EVP_sha256(), NULL) ||
	    (cl > 0 && BIO_write(e2, can, (int)cl) != (int)cl) || BIO_flush(e2) != 1)
		abort();
	got = mem_copy(mem, &gl);
	conv = mem_copy(m2, &vl);
	if (memcmp(dig, want, 32) != 0 || gl != vl || memcmp(got, conv, gl) != 0)
		abort();
	free(can);
	free(got);
	free(conv);
out:
	p11i_headers_free(h);
	BIO_free(in);
	BIO_free(ref);
	BIO_free_all(md);
	BIO_free(mem);
	BIO_free_all(e2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned mode;
	BIO *in, *out;
	p11i_headers *h = NULL;
	p11s_error *err;

	if (size < 1)
		return 0;
	mode = data[0];
	if (mode & 16) {
		split_check(data + 1, size - 1, mode & 1 ? P11I_HDR_ALL : P11I_HDR_CONTENT,
		            mode & 32 ? P11I_EOL_CRLF : P11I_EOL_LF,
		            mode & 64 ? (mode & 2 ? 2 : 1) : 0, mode & 4 ? (mode & 8 ? 1 : 2) : 0);
		return 0;
	}
	in = BIO_new_mem_buf(data + 1, (int)(size - 1));
	out = fuzz_null();
	err = p11s_error_new();
	if (mode & 4) {
		BIO *eol = p11i_bio_eol_new(mode & 8 ? P11I_EOL_LF : P11I_EOL_CRLF);

		if (eol != NULL)
			out = BIO_push(eol, out);
	}
	if (p11i_headers_read(in, 64 * 1024, &h, err) == 0)
		p11i_mime_canonicalize(h, mode & 1 ? P11I_HDR_ALL : P11I_HDR_CONTENT, in, out, err);
	p11i_headers_free(h);
	p11s_error_free(err);
	BIO_free_all(out);
	BIO_free(in);
	return 0;
}
