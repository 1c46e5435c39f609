/*
 * p11smime sendmail: a drop-in for the sendmail that mail clients, git
 * send-email, mailx or cron call.  The message is signed (and, asked to,
 * encrypted) before the real sendmail sees it; a message that cannot be
 * signed is not sent, so mail the user meant to sign never leaves unsigned.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/buffer.h>

#include "cli.h"
#include "p11smime/certs.h"
#include "p11smime/encrypt.h"
#include "p11smime/sign.h"

#define DEFAULT_SENDMAIL "/usr/sbin/sendmail"

static void help(FILE *fp)
{
	fprintf(
	    fp,
	    "Usage: p11smime [GLOBAL OPTIONS] sendmail [--sendmail PATH] [--signer URI|EMAIL]\n"
	    "                [--allow-unsigned] [--encrypt --recipients-dir DIR] [--] [ARGS...]\n"
	    "\n"
	    "Read a whole message on standard input, sign it with the certificate whose\n"
	    "address is the From address, and pipe the signed message to PATH with ARGS\n"
	    "unchanged.  Every argument after p11smime's own options is passed on, unknown\n"
	    "options included (sendmail -oem -oi -- rcpt..., sendmail -oi -t); a '--' right\n"
	    "after them ends them and is not passed on.\n"
	    "\n"
	    "  --sendmail PATH     the real sendmail (default " DEFAULT_SENDMAIL ")\n"
	    "  --signer URI|EMAIL  sign with this certificate instead of the From address's\n"
	    "                      (needed when several certificates hold that address)\n"
	    "  --allow-unsigned    pass a message that cannot be signed on unsigned (never\n"
	    "                      unencrypted with --encrypt)\n"
	    "  --encrypt           also encrypt to every To, Cc and Bcc address; nothing is\n"
	    "                      sent when one of them has no certificate\n"
	    "  --recipients-dir DIR  the recipients' certificates (PEM or DER files)\n"
	    "  -h, --help          this help\n"
	    "\n"
	    "Exit: the real sendmail's exit code once it ran; else, nothing was sent and\n"
	    "the code says why: 1 a certificate refused or a recipient without one, 2 usage,\n"
	    "3 token, PIN or signer selection, 4 bad input or the sendmail could not run.\n");
}

struct sendmail_opts {
	const char *sendmail, *signer, *dir;
	int allow_unsigned, encrypt;
	int pass_from; /* argv index of the first argument passed on */
};

/* Our options end at the first argument that is not one of them: the rest is sendmail's. */
static int parse(int argc, char **argv, struct sendmail_opts *o)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		const char *names[] = {"--sendmail", "--signer", "--recipients-dir"};
		const char **slot[] = {&o->sendmail, &o->signer, &o->dir};
		int matched = 0;

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "--allow-unsigned") == 0) {
			o->allow_unsigned = 1;
			continue;
		}
		if (strcmp(a, "--encrypt") == 0) {
			o->encrypt = 1;
			continue;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
			return -1;
		for (size_t k = 0; k < 3 && !matched; k++) {
			size_t n = strlen(names[k]);

			if (strcmp(a, names[k]) == 0) {
				if (i + 1 >= argc)
					return cli_usage_error("sendmail", "%s needs a value",
					                       names[k]);
				val = argv[++i];
			} else if (strncmp(a, names[k], n) == 0 && a[n] == '=') {
				val = a + n + 1;
			} else {
				continue;
			}
			*slot[k] = val;
			matched = 1;
		}
		if (!matched)
			break;
	}
	o->pass_from = i;
	return 0;
}

static int read_all(BIO *in, BUF_MEM *buf)
{
	char tmp[16384];
	int n;

	while ((n = BIO_read(in, tmp, sizeof(tmp))) > 0) {
		size_t len = buf->length;

		if (BUF_MEM_grow(buf, len + (size_t)n) == 0)
			return -1;
		memcpy(buf->data + len, tmp, (size_t)n);
	}
	return n < 0 && !BIO_eof(in) ? -1 : 0;
}

/* The addresses of @p names in the message's header block; NULL after printing why. */
static char **addresses(struct cli *cli, const BUF_MEM *msg, const char *const *names, size_t *n,
                        int *ret)
{
	BIO *mem = BIO_new_mem_buf(msg->data, (int)msg->length);
	char **v = NULL;
	p11s_rc rc = mem ? p11s_message_addresses(mem, names, &v, n, cli->err) : P11S_E_NOMEM;

	if (rc != P11S_OK)
		*ret = cli_fail(cli, rc);
	BIO_free(mem);
	return v;
}

/* Sign @p msg into a new memory BIO; NULL after printing why, *ret the exit code. */
static BIO *sign_msg(struct cli *cli, const struct sendmail_opts *o, const BUF_MEM *msg, int *ret)
{
	static const char *const from_names[] = {"From", NULL};
	p11s_sign_opts so;
	char **from = NULL;
	size_t nfrom = 0;
	p11s_signer *signer = NULL;
	BIO *in = NULL, *out = NULL;
	p11s_ctx *ctx;
	p11s_rc rc;

	p11s_sign_opts_init(&so);
	so.signer = o->signer;
	so.digest = cli->cfg_digest;
	if (so.signer == NULL) {
		from = addresses(cli, msg, from_names, &nfrom, ret);
		if (from == NULL)
			return NULL;
		if (nfrom != 1) {
			fprintf(stderr,
			        "p11smime: sendmail: the message has %s From address: name the "
			        "signer with --signer\n",
			        nfrom == 0 ? "no" : "more than one");
			p11s_strv_free(from);
			*ret = 2;
			return NULL;
		}
		so.signer = from[0];
	}
	ctx = cli_ctx(cli);
	if (ctx == NULL) {
		*ret = cli->ctx_exit;
		p11s_strv_free(from);
		return NULL;
	}
	rc = p11s_signer_open(ctx, &so, &signer, cli->err);
	if (rc == P11S_OK) {
		cli_verbose(cli, "signer: %s (%s)", p11s_signer_uri(signer),
		            p11s_signer_subject(signer));
		in = BIO_new_mem_buf(msg->data, (int)msg->length);
		out = BIO_new(BIO_s_mem());
		rc = in && out ? p11s_signer_sign(signer, in, out, cli->err) : P11S_E_NOMEM;
	}
	if (rc != P11S_OK) {
		*ret = cli_fail(cli, rc);
		BIO_free(out);
		out = NULL;
	}
	BIO_free(in);
	p11s_signer_free(signer);
	p11s_strv_free(from);
	return out;
}

/* Encrypt @p msg to every To, Cc and Bcc address; NULL after printing why. */
static BIO *encrypt_msg(struct cli *cli, const struct sendmail_opts *o, BIO *msg, int *ret)
{
	static const char *const rcpt_names[] = {"To", "Cc", "Bcc", NULL};
	p11s_encrypt_opts eo = {0};
	p11s_recipients *r = p11s_recipients_new();
	BUF_MEM *bm = NULL;
	char **rcpts = NULL;
	size_t n = 0, missing = 0;
	BIO *out = NULL;
	p11s_rc rc;

	BIO_get_mem_ptr(msg, &bm);
	if (r == NULL || bm == NULL) {
		fprintf(stderr, "p11smime: out of memory\n");
		*ret = 4;
		goto done;
	}
	if (cli->cfg_cipher != NULL)
		p11s_cipher_from_name(cli->cfg_cipher, &eo.cipher, NULL);
	eo.at = time(NULL);
	/* Every address is checked here, Bcc included: the library checks only To and Cc. */
	eo.no_check_to = 1;
	rcpts = addresses(cli, bm, rcpt_names, &n, ret);
	if (rcpts == NULL)
		goto done;
	if (n == 0) {
		fprintf(stderr, "p11smime: sendmail: --encrypt: the message has no To, Cc or Bcc "
		                "address; nothing was sent\n");
		*ret = 2;
		goto done;
	}
	rc = p11s_recipients_set_dir(r, o->dir, cli->err);
	if (rc != P11S_OK) {
		*ret = cli_fail(cli, rc);
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		rc = p11s_recipients_add_email(r, NULL, rcpts[i], eo.at, cli->err);
		if (rc == P11S_E_NOT_FOUND) {
			if (missing++ == 0)
				fprintf(stderr, "p11smime: sendmail: no certificate in %s for:\n",
				        o->dir);
			fprintf(stderr, "  %s\n", cli_safe(rcpts[i]));
			p11s_error_clear(cli->err);
		} else if (rc != P11S_OK) {
			*ret = cli_fail(cli, rc);
			goto done;
		}
	}
	if (missing > 0) {
		fprintf(stderr, "p11smime: sendmail: nothing was sent\n");
		*ret = p11s_rc_exit_code(P11S_E_MISSING_RECIPIENT_CERT);
		goto done;
	}
	out = BIO_new(BIO_s_mem());
	rc = out ? p11s_encrypt(msg, out, r, &eo, cli->err) : P11S_E_NOMEM;
	if (rc != P11S_OK) {
		*ret = cli_fail(cli, rc);
		BIO_free(out);
		out = NULL;
	}
done:
	p11s_strv_free(rcpts);
	p11s_recipients_free(r);
	return out;
}

/* Run @p path with @p args, the message on its standard input; its exit code, or 4. */
static int run_sendmail(const char *path, int nargs, char **args, const char *data, size_t len)
{
	char **av = calloc((size_t)nargs + 2, sizeof(*av));
	int fds[2], errfds[2], status, child_errno = 0;
	pid_t pid;
	struct sigaction ign = {0}, old;
	size_t off = 0;

	/* exec's errno comes back on a close-on-exec pipe: silence means it ran. */
	if (av == NULL || pipe(fds) != 0) {
		free(av);
		fprintf(stderr, "p11smime: sendmail: cannot start %s: %s\n", path, strerror(errno));
		return 4;
	}
	if (pipe2(errfds, O_CLOEXEC) != 0) {
		fprintf(stderr, "p11smime: sendmail: cannot start %s: %s\n", path, strerror(errno));
		close(fds[0]);
		close(fds[1]);
		free(av);
		return 4;
	}
	av[0] = (char *)path;
	for (int i = 0; i < nargs; i++)
		av[i + 1] = args[i];
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "p11smime: sendmail: cannot start %s: %s\n", path, strerror(errno));
		close(fds[0]);
		close(fds[1]);
		close(errfds[0]);
		close(errfds[1]);
		free(av);
		return 4;
	}
	if (pid == 0) {
		int e;

		close(errfds[0]);
		dup2(fds[0], 0);
		close(fds[0]);
		close(fds[1]);
		execv(path, av);
		e = errno;
		/* Should this write fail too, the parent still sees exit status 127. */
		if (write(errfds[1], &e, sizeof(e)) != (ssize_t)sizeof(e))
			e = 0;
		_exit(127);
	}
	free(av);
	close(fds[0]);
	close(errfds[1]);
	while (read(errfds[0], &child_errno, sizeof(child_errno)) < 0 && errno == EINTR)
		;
	close(errfds[0]);
	if (child_errno != 0) {
		close(fds[1]);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		fprintf(stderr, "p11smime: sendmail: cannot run %s: %s; nothing was sent\n", path,
		        strerror(child_errno));
		return 4;
	}
	/* A sendmail that stops reading must not kill us before we have its exit code. */
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, &old);
	while (off < len) {
		ssize_t w = write(fds[1], data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	close(fds[1]);
	sigaction(SIGPIPE, &old, NULL);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			fprintf(stderr, "p11smime: sendmail: lost %s: %s\n", path, strerror(errno));
			return 4;
		}
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "p11smime: sendmail: %s was killed by signal %d\n", path,
		        WTERMSIG(status));
		return 128 + WTERMSIG(status);
	}
	if (off < len && WEXITSTATUS(status) == 0) {
		fprintf(stderr, "p11smime: sendmail: %s did not read the whole message\n", path);
		return 4;
	}
	return WEXITSTATUS(status);
}

int cmd_sendmail(struct cli *cli, int argc, char **argv)
{
	struct sendmail_opts o = {0};
	BUF_MEM *msg = BUF_MEM_new();
	BIO *in = NULL, *signed_msg = NULL, *final = NULL;
	BUF_MEM *out = NULL;
	int ret = 0;

	if (msg == NULL) {
		fprintf(stderr, "p11smime: out of memory\n");
		return 4;
	}
	ret = parse(argc, argv, &o);
	if (ret < 0) {
		help(stdout);
		ret = 0;
		goto done;
	}
	if (ret != 0)
		goto done;
	if (o.sendmail == NULL)
		o.sendmail = DEFAULT_SENDMAIL;
	if (o.encrypt && o.dir == NULL) {
		ret = cli_usage_error("sendmail", "--encrypt needs --recipients-dir DIR");
		goto done;
	}
	if (!o.encrypt && o.dir != NULL) {
		ret = cli_usage_error("sendmail", "--recipients-dir is for --encrypt");
		goto done;
	}
	if (p11s_input_open(NULL, &in, cli->err) != P11S_OK || read_all(in, msg) != 0) {
		fprintf(stderr, "p11smime: sendmail: cannot read the message on standard input\n");
		ret = 4;
		goto done;
	}
	if (msg->length == 0) {
		fprintf(stderr, "p11smime: sendmail: the message is empty; nothing was sent\n");
		ret = 4;
		goto done;
	}

	signed_msg = sign_msg(cli, &o, msg, &ret);
	if (signed_msg == NULL) {
		if (!o.allow_unsigned) {
			fprintf(stderr, "p11smime: sendmail: the message could not be signed; "
			                "nothing was sent (--allow-unsigned sends it unsigned)\n");
			goto done;
		}
		fprintf(stderr, "p11smime: sendmail: warning: sending the message unsigned "
		                "(--allow-unsigned)\n");
		signed_msg = BIO_new_mem_buf(msg->data, (int)msg->length);
		if (signed_msg == NULL) {
			ret = 4;
			goto done;
		}
	}
	ret = 0;
	if (o.encrypt) {
		final = encrypt_msg(cli, &o, signed_msg, &ret);
		if (final == NULL) {
			if (ret == 0)
				ret = 4;
			goto done;
		}
	} else {
		final = signed_msg;
		signed_msg = NULL;
	}
	BIO_get_mem_ptr(final, &out);
	cli_verbose(cli, "passing %zu bytes to %s", out->length, o.sendmail);
	ret = run_sendmail(o.sendmail, argc - o.pass_from, argv + o.pass_from, out->data,
	                   out->length);
done:
	BIO_free(final);
	BIO_free(signed_msg);
	BIO_free_all(in);
	BUF_MEM_free(msg);
	return ret;
}
