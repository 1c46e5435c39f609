/*
 * Input, and output that appears whole or not at all: a BIO over the
 * libc-only core in src/outcore.c (which the thin front end shares).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common.h"
#include "outcore.h"
#include "p11smime/io.h"

/* Input stdio buffer. */
#define IN_BUF (256 * 1024)

struct p11s_output {
	struct p11i_out core; /* first: the core allocates the whole object */
	BIO *bio;
};

/*
 * What an input file's BIO knows of it, so that the readers need not ask
 * the kernel again for each part of each message (an fstat and an lseek
 * a leaf, 2-5 us each on a paravirtualised guest): whether it is a
 * regular file (p11s_input_open() looked), and where stdio's next byte is
 * in it.  The position is counted from 0 (fopen() starts there) by the
 * BIO's callback, which sees every read, gets and seek that goes through
 * the BIO; anything it cannot account for (a control it does not know,
 * the FILE handed out, a write, a line with a NUL byte in it, which
 * fgets() reads past) makes it unknown for good, and the readers then ask
 * the kernel as before.  Also the stdio buffer (setvbuf() needs one that
 * outlives fclose()): the BIO's free callback closes the file itself, then
 * frees it.
 */
struct input_state {
	FILE *fp;    /* the file (p11i_input_fd(), without handing it out) */
	long pos;    /* where the next byte comes from, when known */
	int known;   /* pos is right: every move went through the BIO */
	int regular; /* a regular file (seekable, read again where that pays) */
	char vbuf[];
};

/* A gets of @p n bytes into @p buf of @p size: did fgets() take exactly those from the file? */
static int gets_exact(const char *buf, int size, size_t n)
{
	/* A NUL byte ends what strlen() counts, never what fgets() read. */
	return n > 0 && (buf[n - 1] == '\n' || n == (size_t)size - 1);
}

static long input_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                     size_t *processed)
{
	struct input_state *st = (struct input_state *)BIO_get_callback_arg(b);
	FILE *fp = NULL;

	switch (oper) {
	case BIO_CB_FREE:
		if (BIO_get_fp(b, &fp) > 0 && fp != NULL && fp != stdin) {
			BIO_set_close(b, BIO_NOCLOSE);
			fclose(fp);
		}
		free(st);
		BIO_set_callback_arg(b, NULL);
		break;
	case BIO_CB_READ | BIO_CB_RETURN:
		if (processed != NULL)
			st->pos += (long)*processed;
		break;
	case BIO_CB_GETS | BIO_CB_RETURN:
		/* A failed fgets() may have taken bytes all the same. */
		if (ret > 0 && processed != NULL && gets_exact(argp, (int)len, *processed))
			st->pos += (long)*processed;
		else
			st->known = 0;
		break;
	case BIO_CB_CTRL | BIO_CB_RETURN:
		switch (argi) {
		case BIO_C_FILE_SEEK:
		case BIO_CTRL_RESET:
			st->pos = argi == BIO_CTRL_RESET ? 0 : argl;
			if (ret != 0 || argl < 0)
				st->known = 0;
			break;
		case BIO_C_FILE_TELL:
		case BIO_CTRL_INFO:
		case BIO_CTRL_EOF:
		case BIO_CTRL_PENDING:
		case BIO_CTRL_WPENDING:
		case BIO_CTRL_FLUSH:
		case BIO_CTRL_GET_CLOSE:
		case BIO_CTRL_SET_CLOSE:
			break;
		default:
			st->known = 0;
		}
		break;
	case BIO_CB_READ:
	case BIO_CB_GETS:
	case BIO_CB_CTRL:
		break;
	default: /* a write, a puts: not an input's */
		st->known = 0;
	}
	return ret;
}

int p11i_input_pos(BIO *b, long *pos)
{
	const struct input_state *st;

	if (b == NULL || BIO_get_callback_ex(b) != input_cb ||
	    (st = (const struct input_state *)BIO_get_callback_arg(b)) == NULL || !st->known)
		return -1;
	if (!st->regular)
		return 0;
	*pos = st->pos;
	return 1;
}

int p11i_input_fd(BIO *b)
{
	const struct input_state *st;

	if (b == NULL || BIO_get_callback_ex(b) != input_cb ||
	    (st = (const struct input_state *)BIO_get_callback_arg(b)) == NULL)
		return -1;
	return fileno(st->fp);
}

p11s_rc p11s_input_open(const char *path, BIO **out, p11s_error *err)
{
	const char *name = path && strcmp(path, "-") != 0 ? path : "standard input";
	struct input_state *ist;
	struct stat st;
	int stat_ok;
	FILE *fp;
	BIO *b;

	if (path == NULL || strcmp(path, "-") == 0) {
		fp = stdin;
	} else {
		fp = fopen(path, "rb");
		if (fp == NULL)
			return p11i_err(err, P11S_E_IO, "cannot open '%s': %s", name,
			                strerror(errno));
	}
	/* fopen() takes a directory; its first read fails, which readers would take for an end. */
	stat_ok = fstat(fileno(fp), &st) == 0;
	if (stat_ok && S_ISDIR(st.st_mode)) {
		if (fp != stdin)
			fclose(fp);
		return p11i_err(err, P11S_E_IO, "cannot read '%s': it is a directory", name);
	}
	b = BIO_new_fp(fp, fp == stdin ? BIO_NOCLOSE : BIO_CLOSE);
	if (b == NULL) {
		if (fp != stdin)
			fclose(fp);
		return p11i_err_nomem(err);
	}
	/*
	 * Readers ask for 64 KiB at a time, and stdio's 4 KiB buffer splits that
	 * into two reads: read in 256 KiB blocks.  Standard input gets a static
	 * buffer, once (setvbuf() must come before its first read), and no
	 * position: it may not start at 0.
	 */
	if (fp == stdin) {
		static char stdin_buf[IN_BUF];
		static int stdin_set;

		if (!stdin_set)
			setvbuf(stdin, stdin_buf, _IOFBF, sizeof(stdin_buf));
		stdin_set = 1;
	} else {
		ist = malloc(sizeof(*ist) + IN_BUF);
		if (ist != NULL && setvbuf(fp, ist->vbuf, _IOFBF, IN_BUF) == 0) {
			ist->fp = fp;
			ist->pos = 0;
			ist->regular = stat_ok && S_ISREG(st.st_mode);
			ist->known = stat_ok;
			BIO_set_callback_arg(b, (char *)ist);
			BIO_set_callback_ex(b, input_cb);
		} else {
			free(ist);
		}
	}
	*out = b;
	return P11S_OK;
}

/* ------------------------------------------------------------ writing */

/* The core's message into @p err ("out of memory" when it has none). */
static p11s_rc said(p11s_error *err, p11s_rc rc, char *why)
{
	if (rc == P11S_OK)
		return rc;
	if (why == NULL)
		return p11i_err_nomem(err);
	rc = p11i_err(err, rc, "%s", why);
	free(why);
	return rc;
}

static int out_write(BIO *b, const char *in, int inl)
{
	p11s_output *o = BIO_get_data(b);

	if (o == NULL || inl < 0 || p11i_out_write(&o->core, in, (size_t)inl) != 0)
		return -1;
	return inl;
}

static int out_puts(BIO *b, const char *s)
{
	return out_write(b, s, (int)strlen(s));
}

static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	p11s_output *o = BIO_get_data(b);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return p11i_out_flush(&o->core) == 0 ? 1 : 0;
	case BIO_CTRL_WPENDING:
		return (long)o->core.len;
	case P11I_BIO_CTRL_TELL: {
		long long t = p11i_out_tell(&o->core);

		if (t < 0 || ptr == NULL)
			return 0;
		*(int64_t *)ptr = (int64_t)t;
		return 1;
	}
	case P11I_BIO_CTRL_REWIND:
		return p11i_out_rewind(&o->core, num) == 0 ? 1 : 0;
	case P11I_BIO_CTRL_WRITE_REF: {
		const struct p11i_bio_ref *r = ptr;

		/* The question whether ranges may come at all: to standard output only. */
		if (r == NULL)
			return o != NULL && o->core.kind == P11I_OUT_STDOUT
			           ? P11I_BIO_CTRL_WRITE_REF
			           : 0;
		return o != NULL && p11i_out_write_ref(&o->core, r->fd, r->st, (off_t)r->off, r->p,
		                                       r->n) == 0
		           ? P11I_BIO_CTRL_WRITE_REF
		           : 0;
	}
	case BIO_CTRL_PENDING:
		return 0;
	case BIO_CTRL_EOF:
		return 1;
	default:
		return 0;
	}
}

static int out_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *out_method;
static CRYPTO_ONCE out_once = CRYPTO_ONCE_STATIC_INIT;

static void out_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "p11smime output");

	if (m == NULL)
		return;
	BIO_meth_set_write(m, out_write);
	BIO_meth_set_puts(m, out_puts);
	BIO_meth_set_ctrl(m, out_ctrl);
	BIO_meth_set_create(m, out_create);
	out_method = m;
}

struct p11s_output_dir {
	struct p11i_out_dir core;
};

p11s_rc p11s_output_dir_open(const char *path, p11s_output_dir **out, p11s_error *err)
{
	struct p11i_out_dir *d = NULL;
	char *why = NULL;
	p11s_rc rc;

	if (path == NULL || out == NULL)
		return p11i_err(err, P11S_E_USAGE, "no directory");
	rc = p11i_out_dir_open(path, &d, &why);
	if (rc != P11S_OK)
		return said(err, rc, why);
	*out = (p11s_output_dir *)d;
	return P11S_OK;
}

void p11s_output_dir_free(p11s_output_dir *d)
{
	p11i_out_dir_free(d != NULL ? &d->core : NULL);
}

p11s_rc p11s_output_open_ex(const char *path, unsigned flags, p11s_output **out, p11s_error *err)
{
	return p11s_output_open_in(NULL, path, flags, out, err);
}

p11s_rc p11s_output_open_in(const p11s_output_dir *dir, const char *path, unsigned flags,
                            p11s_output **out, p11s_error *err)
{
	struct p11i_out *core = NULL;
	char *why = NULL;
	p11s_output *o;
	p11s_rc rc;

	if (!CRYPTO_THREAD_run_once(&out_once, out_method_init) || out_method == NULL)
		return p11i_err_nomem(err);
	rc = p11i_out_open_in(dir != NULL ? &dir->core : NULL, path,
	                      flags & P11S_OUTPUT_PRIVATE ? P11I_OUT_PRIVATE : 0,
	                      sizeof(p11s_output), &core, &why);
	if (rc != P11S_OK)
		return said(err, rc, why);
	o = (p11s_output *)core;
	o->bio = BIO_new(out_method);
	if (o->bio == NULL) {
		p11i_out_abort(core);
		return p11i_err_nomem(err);
	}
	BIO_set_data(o->bio, o);
	*out = o;
	return P11S_OK;
}

p11s_rc p11s_output_open(const char *path, p11s_output **out, p11s_error *err)
{
	return p11s_output_open_ex(path, 0, out, err);
}

BIO *p11s_output_bio(p11s_output *o)
{
	return o ? o->bio : NULL;
}

void p11s_output_abort(p11s_output *o)
{
	if (o == NULL)
		return;
	if (o->bio != NULL) {
		BIO_set_data(o->bio, NULL);
		BIO_free_all(o->bio);
		o->bio = NULL;
	}
	p11i_out_abort(&o->core);
}

p11s_rc p11s_output_explain(const p11s_output *o, p11s_rc rc, p11s_error *err)
{
	char *why = NULL;

	if (o == NULL)
		return rc;
	rc = p11i_out_explain(&o->core, rc, &why);
	return why != NULL || o->core.werr ? said(err, rc, why) : rc;
}

p11s_rc p11s_output_prepare(p11s_output *o, p11s_error *err)
{
	char *why = NULL;
	p11s_rc rc;

	if (o == NULL)
		return p11i_err(err, P11S_E_INTERNAL, "no output");
	rc = p11i_out_prepare(&o->core, &why);
	return said(err, rc, why);
}

p11s_rc p11s_output_sync_group(p11s_output *const *outs, size_t n, p11s_error *err)
{
	struct p11i_out **cores = calloc(n ? n : 1, sizeof(*cores));
	char *why = NULL;
	p11s_rc rc;

	if (cores == NULL)
		return p11i_err_nomem(err);
	for (size_t i = 0; i < n; i++)
		cores[i] = outs[i] != NULL ? &outs[i]->core : NULL;
	rc = p11i_out_sync_group(cores, n, &why);
	rc = said(err, rc, why);
	free(cores);
	return rc;
}

p11s_rc p11s_output_commit(p11s_output *o, p11s_error *err)
{
	char *why = NULL;
	p11s_rc rc;

	if (o == NULL)
		return p11i_err(err, P11S_E_INTERNAL, "no output");
	if (o->bio != NULL) {
		BIO_set_data(o->bio, NULL);
		BIO_free_all(o->bio);
		o->bio = NULL;
	}
	rc = p11i_out_commit(&o->core, &why);
	return said(err, rc, why);
}
