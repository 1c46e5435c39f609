#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "p11smime/io.h"

struct p11s_output {
	int direct;     /* writing straight to a device or pipe named by path */
	char *path;     /* NULL: standard output */
	char *tmp_path; /* the temporary file */
	BIO *bio;
	FILE *fp;
};

p11s_rc p11s_input_open(const char *path, BIO **out, p11s_error *err)
{
	BIO *b;
	const char *name = path && strcmp(path, "-") != 0 ? path : "standard input";
	struct stat st;
	FILE *fp = NULL;

	if (path == NULL || strcmp(path, "-") == 0)
		b = BIO_new_fp(stdin, BIO_NOCLOSE);
	else
		b = BIO_new_file(path, "rb");
	if (b == NULL)
		return p11s_err_ossl(err, P11S_E_IO, "cannot open '%s': %s", name, strerror(errno));
	/* fopen() takes a directory; its first read fails, which readers would take for an end. */
	if (BIO_get_fp(b, &fp) > 0 && fp != NULL && fstat(fileno(fp), &st) == 0 &&
	    S_ISDIR(st.st_mode)) {
		BIO_free(b);
		return p11s_err(err, P11S_E_IO, "cannot read '%s': it is a directory", name);
	}
	*out = b;
	return P11S_OK;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

p11s_rc p11s_output_open(const char *path, p11s_output **out, p11s_error *err)
{
	p11s_output *o = calloc(1, sizeof(*o));
	char *dir = NULL;
	const char *tmpdir;
	struct stat st;
	int fd;

	if (o == NULL)
		return p11s_err(err, P11S_E_NOMEM, "out of memory");
	if (path != NULL && strcmp(path, "-") != 0 && stat(path, &st) == 0 &&
	    !S_ISREG(st.st_mode)) {
		/*
		 * /dev/null, a FIFO, a terminal: there is nothing to rename over,
		 * and renaming over a device would replace it with a file.
		 */
		o->direct = 1;
		o->fp = fopen(path, "wb");
		if (o->fp == NULL) {
			free(o);
			return p11s_err(err, P11S_E_IO, "cannot open '%s': %s", path,
			                strerror(errno));
		}
		o->bio = BIO_new_fp(o->fp, BIO_NOCLOSE);
		if (o->bio == NULL)
			goto nomem;
		*out = o;
		return P11S_OK;
	}
	if (path != NULL && strcmp(path, "-") != 0) {
		o->path = strdup(path);
		dir = dir_of(path);
	} else {
		tmpdir = getenv("TMPDIR");
		dir = strdup(tmpdir && *tmpdir ? tmpdir : "/tmp");
	}
	if (dir == NULL || (path != NULL && strcmp(path, "-") != 0 && o->path == NULL))
		goto nomem;
	o->tmp_path = p11s_asprintf("%s/.p11smime-XXXXXX", dir);
	free(dir);
	if (o->tmp_path == NULL)
		goto nomem;
	fd = mkstemp(o->tmp_path);
	if (fd < 0) {
		p11s_rc rc = p11s_err(err, P11S_E_IO, "cannot create a temporary file for '%s': %s",
		                      path ? path : "standard output", strerror(errno));
		free(o->tmp_path);
		o->tmp_path = NULL;
		p11s_output_abort(o);
		return rc;
	}
	o->fp = fdopen(fd, "w+b");
	if (o->fp == NULL) {
		close(fd);
		goto nomem;
	}
	o->bio = BIO_new_fp(o->fp, BIO_NOCLOSE);
	if (o->bio == NULL)
		goto nomem;
	*out = o;
	return P11S_OK;
nomem:
	p11s_output_abort(o);
	return p11s_err(err, P11S_E_NOMEM, "out of memory");
}

BIO *p11s_output_bio(p11s_output *o)
{
	return o ? o->bio : NULL;
}

static void output_free(p11s_output *o)
{
	BIO_free_all(o->bio);
	if (o->fp != NULL)
		fclose(o->fp);
	free(o->path);
	free(o->tmp_path);
	free(o);
}

void p11s_output_abort(p11s_output *o)
{
	if (o == NULL)
		return;
	if (o->tmp_path != NULL)
		unlink(o->tmp_path);
	output_free(o);
}

static int copy_to_stdout(FILE *fp)
{
	char buf[65536];
	size_t n;

	if (fseek(fp, 0, SEEK_SET) != 0)
		return -1;
	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0)
		if (fwrite(buf, 1, n, stdout) != n)
			return -1;
	if (ferror(fp) || fflush(stdout) != 0)
		return -1;
	return 0;
}

p11s_rc p11s_output_commit(p11s_output *o, p11s_error *err)
{
	p11s_rc rc = P11S_OK;
	mode_t mask;

	if (o == NULL)
		return p11s_err(err, P11S_E_INTERNAL, "no output");
	if (BIO_flush(o->bio) <= 0 || fflush(o->fp) != 0) {
		rc = p11s_err(err, P11S_E_IO, "cannot write the output: %s", strerror(errno));
	} else if (o->direct) {
		/* Written as it came: nothing to move into place. */
	} else if (o->path == NULL) {
		if (copy_to_stdout(o->fp) != 0)
			rc = p11s_err(err, P11S_E_IO, "cannot write to standard output: %s",
			              strerror(errno));
	} else {
		/* mkstemp makes 0600; give the file what a plain create would. */
		mask = umask(0);
		umask(mask);
		if (fchmod(fileno(o->fp), 0666 & ~mask) != 0 || fsync(fileno(o->fp)) != 0 ||
		    rename(o->tmp_path, o->path) != 0)
			rc = p11s_err(err, P11S_E_IO, "cannot write '%s': %s", o->path,
			              strerror(errno));
		else {
			free(o->tmp_path);
			o->tmp_path = NULL;
		}
	}
	if (o->tmp_path != NULL)
		unlink(o->tmp_path);
	output_free(o);
	return rc;
}
