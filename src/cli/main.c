#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <fcntl.h>

#include "cli.h"
#include "cli_opts.h"
#include "p11smime/config.h"

static const struct cli_command commands[] = {
    {"tokens", "show the tokens in every slot", cmd_tokens},
    {"list", "list certificates and keys, paired, with their URIs", cmd_list},
    {"validate", "check certificates against the S/MIME rules", cmd_validate},
    {"sign", "sign an outgoing message with a key on the token", cmd_sign},
    {"verify", "verify a signed message against certificates you trust", cmd_verify},
    {"encrypt", "encrypt an outgoing message to its recipients", cmd_encrypt},
    {"decrypt", "decrypt an incoming message with a key on the token", cmd_decrypt},
    {"keygen", "generate a key pair on the token", cmd_keygen},
    {"csr", "request a certificate for a key on the token", cmd_csr},
    {"import", "put a certificate or a PKCS#12 file on the token", cmd_import},
    {"delete", "delete objects from the token", cmd_delete},
    {"sendmail", "sign (and encrypt) a message, then hand it to sendmail", cmd_sendmail},
    {"agent", "log in once and sign or decrypt for later commands", cmd_agent},
    {"milter", "sign outgoing mail inside the MTA (Postfix, Sendmail)", cmd_milter},
};

static void usage(FILE *fp)
{
	fprintf(fp, "Usage: p11smime [GLOBAL OPTIONS] COMMAND [OPTIONS] [ARGS]\n"
	            "\n"
	            "S/MIME with private keys on smartcards and HSMs, through PKCS#11.\n"
	            "\n"
	            "Global options:\n"
	            "  --module PATH       PKCS#11 module to load (default: $P11SMIME_MODULE,\n"
	            "                      else p11-kit's proxy: every registered module)\n"
	            "  --pin-source SPEC   where the PIN comes from: file:PATH, fd:N, env:VAR\n"
	            "                      (default: ask on the terminal, without echo)\n"
	            "  --allow-final-try   log in even when the next wrong PIN locks the token\n"
	            "  --json              print machine-readable JSON\n"
	            "  -v, --verbose       say more on standard error\n"
	            "  -h, --help          this help; COMMAND --help for a command's\n"
	            "  --version           print the version\n"
	            "\n"
	            "Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(fp, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(fp, "\n"
	            "Exit codes:\n"
	            "  0  success\n"
	            "  1  a check did not pass (certificate rejected, signature not good)\n"
	            "  2  usage error\n"
	            "  3  token, module, PIN or selection error\n"
	            "  4  bad input or cryptographic failure\n");
	fprintf(fp, "\nDefaults for --module, --pin-source and sign/encrypt's --signer, --cipher "
	            "and\n--digest may be set in $XDG_CONFIG_HOME/p11smime/config (see "
	            "p11smime(1)).\n");
}

/*
 * The config file's defaults, under the command line: @p cli keeps pointers
 * into @p *cfg, which lives until the command is done.  Exit code or 0.
 */
static int load_config(struct cli *cli, p11s_config **cfg)
{
	char *path = p11s_config_default_path();
	p11s_error *err;
	p11s_rc rc;

	if (path == NULL)
		return 0;
	err = p11s_error_new();
	if (err == NULL) {
		free(path);
		fprintf(stderr, "p11smime: out of memory\n");
		return 4;
	}
	rc = p11s_config_load(path, 1, cfg, err);
	if (rc != P11S_OK)
		fprintf(stderr, "p11smime: config file: %s\n", p11s_error_message(err));
	p11s_error_free(err);
	free(path);
	if (rc != P11S_OK)
		return p11s_rc_exit_code(rc);
	/* --module, then $P11SMIME_MODULE, then the file. */
	if (cli->module == NULL && getenv("P11SMIME_MODULE") == NULL)
		cli->module = p11s_config_get(*cfg, "module");
	if (cli->pin_source == NULL)
		cli->pin_source = p11s_config_get(*cfg, "pin-source");
	cli->cfg_signer = p11s_config_get(*cfg, "signer");
	cli->cfg_cipher = p11s_config_get(*cfg, "cipher");
	cli->cfg_digest = p11s_config_get(*cfg, "digest");
	return 0;
}

/* Read a secret from the terminal without echo; stdin may carry the message. */
int cli_tty_prompt(const char *prompt, char *buf, size_t len, void *user)
{
	struct termios old, quiet;
	FILE *tty;
	int ok = -1;
	size_t n;

	(void)user;
	tty = fopen("/dev/tty", "r+");
	if (tty == NULL)
		return -1;
	/* Unbuffered: the secret goes straight into @p buf, no stdio buffer keeps a copy. */
	setvbuf(tty, NULL, _IONBF, 0);
	if (tcgetattr(fileno(tty), &old) != 0) {
		fclose(tty);
		return -1;
	}
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	quiet.c_lflag |= ICANON;
	fprintf(tty, "%s", prompt);
	fflush(tty);
	if (tcsetattr(fileno(tty), TCSAFLUSH, &quiet) == 0) {
		if (fgets(buf, (int)len, tty) != NULL) {
			n = strcspn(buf, "\r\n");
			buf[n] = '\0';
			ok = 0;
		}
		tcsetattr(fileno(tty), TCSAFLUSH, &old);
	}
	fprintf(tty, "\n");
	fclose(tty);
	return ok;
}

p11s_ctx *cli_ctx(struct cli *cli)
{
	p11s_rc rc;

	if (cli->ctx != NULL)
		return cli->ctx;
	rc = p11s_ctx_new(cli->module, &cli->ctx, cli->err);
	if (rc != P11S_OK) {
		cli->ctx_exit = cli_fail(cli, rc);
		return NULL;
	}
	cli_verbose(cli, "module: %s", p11s_ctx_module_path(cli->ctx));
	p11s_ctx_set_pin_prompt(cli->ctx, cli_tty_prompt, NULL);
	p11s_ctx_set_allow_final_try(cli->ctx, cli->allow_final_try);
	if (cli->pin_source != NULL) {
		rc = p11s_ctx_set_pin_source(cli->ctx, cli->pin_source, cli->err);
		if (rc != P11S_OK) {
			cli->ctx_exit = cli_fail(cli, rc);
			p11s_ctx_free(cli->ctx);
			cli->ctx = NULL;
			return NULL;
		}
	}
	return cli->ctx;
}

int cli_fail(struct cli *cli, p11s_rc rc)
{
	const char *msg = p11s_error_message(cli->err);
	size_t n = p11s_error_candidate_count(cli->err);

	fputs("p11smime: ", cli_err(cli));
	cli_put_message(cli, msg, rc, n);
	return p11s_rc_exit_code(rc);
}

void cli_put_message(struct cli *cli, const char *msg, p11s_rc rc, size_t n)
{
	FILE *fp = cli_err(cli);

	/* A message may quote a token's words (a label, a slot's name): shown safely. */
	cli_puts_safe(fp, *msg ? msg : p11s_rc_name(rc));
	fputc('\n', fp);
	for (size_t i = 0; i < n; i++) {
		fputs("  ", fp);
		cli_puts_safe(fp, p11s_error_candidate(cli->err, i));
		fputc('\n', fp);
	}
	p11s_error_clear(cli->err);
}

int cli_parse_time(const char *text, time_t *out)
{
	p11s_error *err = p11s_error_new();
	p11s_rc rc = p11s_time_parse(text, out, err);

	if (rc != P11S_OK)
		fprintf(stderr, "p11smime: %s\n", p11s_error_message(err));
	p11s_error_free(err);
	return rc == P11S_OK ? 0 : 2;
}

void cli_print_json_to(const struct cli *cli, char *doc)
{
	if (doc == NULL)
		return;
	fputs(doc, cli_out(cli));
	fputc('\n', cli_out(cli));
	free(doc);
}

void cli_print_json(char *doc)
{
	static const struct cli plain;

	cli_print_json_to(&plain, doc);
}

void cli_verbose(const struct cli *cli, const char *fmt, ...)
{
	va_list ap;

	if (!cli->verbose)
		return;
	if (cli->verbose_sink != NULL) {
		char *line = NULL;

		va_start(ap, fmt);
		if (vasprintf(&line, fmt, ap) >= 0)
			cli->verbose_sink(cli->verbose_arg, line);
		va_end(ap);
		free(line);
		return;
	}
	fprintf(cli_err(cli), "p11smime: ");
	va_start(ap, fmt);
	vfprintf(cli_err(cli), fmt, ap);
	va_end(ap);
	fputc('\n', cli_err(cli));
}

/*
 * The whole command line: main() of libp11smime-cli.so, called by the thin
 * front end (src/front/thin.c) for everything it does not do itself.
 */
int p11i_cli_main(int argc, char **argv)
{
	struct cli cli = {0};
	p11s_config *cfg = NULL;
	int c, ret;

	/*
	 * A reader that goes away (`| head`) gives EPIPE, reported like any
	 * write error (exit 4), rather than a silent death by SIGPIPE.
	 */
	signal(SIGPIPE, SIG_IGN);

	/* "+": stop at the command; its options are its own. */
	while ((c = getopt_long(argc, argv, P11I_GLOBAL_SHORT, p11i_global_opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			cli.module = optarg;
			break;
		case 'p':
			cli.pin_source = optarg;
			break;
		case 'F':
			cli.allow_final_try = 1;
			break;
		case 'j':
			cli.json = 1;
			break;
		case 'v':
			cli.verbose++;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("p11smime %s\n", P11S_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	ret = load_config(&cli, &cfg);
	if (ret != 0)
		return ret;
	/* A malformed PIN source is a usage error, whatever the command. */
	if (cli.pin_source != NULL) {
		p11s_error *err = p11s_error_new();
		p11s_rc rc = p11s_pin_source_check(cli.pin_source, err);

		if (rc != P11S_OK)
			fprintf(stderr, "p11smime: %s\n", p11s_error_message(err));
		p11s_error_free(err);
		if (rc != P11S_OK) {
			p11s_config_free(cfg);
			return p11s_rc_exit_code(rc);
		}
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name) != 0)
			continue;
		cli.err = p11s_error_new();
		if (cli.err == NULL) {
			fprintf(stderr, "p11smime: out of memory\n");
			p11s_config_free(cfg);
			return 4;
		}
		/* Commands see argv[0] = their name, as getopt expects. */
		int sub_argc = argc - optind;
		char **sub_argv = argv + optind;

		optind = 0;
		ret = commands[i].run(&cli, sub_argc, sub_argv);
		p11s_ctx_free(cli.ctx);
		p11s_error_free(cli.err);
		p11s_config_free(cfg);
		if (fflush(stdout) != 0 && ret == 0) {
			fprintf(stderr, "p11smime: cannot write to standard output: %s\n",
			        strerror(errno));
			ret = 4;
		}
		return ret;
	}
	p11s_config_free(cfg);
	fprintf(stderr, "p11smime: unknown command '%s'\nTry 'p11smime --help'.\n", argv[optind]);
	return 2;
}
