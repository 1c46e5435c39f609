/*
 * The p11smime command line: shared state of one run.  The CLI parses
 * arguments, calls the public library API and prints; nothing else.
 */
#ifndef P11S_CLI_H
#define P11S_CLI_H

#include <stdio.h>
#include <time.h>

#include "p11smime/io.h"
#include "p11smime/result.h"
#include "p11smime/rules.h"
#include "p11smime/token.h"
#include "p11smime/io.h"

/* Global options, parsed before the command. */
struct cli {
	const char *module;     /* --module, else $P11SMIME_MODULE, else the proxy */
	const char *pin_source; /* --pin-source */
	int allow_final_try;    /* --allow-final-try */
	int json;               /* --json */
	int verbose;            /* -v, repeatable */
	p11s_ctx *ctx;          /* loaded on first use by cli_ctx() */
	p11s_error *err;        /* the error of the current command */
	int ctx_exit;           /* exit code when cli_ctx() failed */
	/* Defaults from the config file (p11smime(1)); the command line wins. */
	const char *cfg_signer, *cfg_cipher, *cfg_digest;
};

/* One command: its name, a one-line summary, and its entry point. */
struct cli_command {
	const char *name;
	const char *summary;
	int (*run)(struct cli *cli, int argc, char **argv);
};

/*
 * Load the module and set the PIN options once; NULL after printing why,
 * with the exit code for it in cli->ctx_exit.
 */
p11s_ctx *cli_ctx(struct cli *cli);

/*
 * Print cli->err (or @p rc's name when it holds no message) as
 * "p11smime: <message>", with candidates one per line, and return the
 * exit code for @p rc.
 */
int cli_fail(struct cli *cli, p11s_rc rc);

/* Print "p11smime: <command>: <message>" and return 2 (usage). */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parse --at; prints and returns 2 on a bad time. */
int cli_parse_time(const char *text, time_t *out);

/* Print a JSON document the library built (adds a newline), then free it. */
void cli_print_json(char *doc);

/*
 * @p s made safe for a terminal: control characters (C0, DEL and C1 in
 * UTF-8) become \xNN, so a hostile token label cannot send escape
 * sequences.  Returns one of a few rotating static buffers: fine for the
 * arguments of one printf, not to keep.
 */
const char *cli_safe(const char *s);

/* Verbose note to stderr when -v was given. */
void cli_verbose(const struct cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The commands. */
int cmd_tokens(struct cli *cli, int argc, char **argv);
int cmd_list(struct cli *cli, int argc, char **argv);
int cmd_validate(struct cli *cli, int argc, char **argv);
/* Ask for a secret on /dev/tty without echo (a PIN, a PKCS#12 password); 0 or -1. */
int cli_tty_prompt(const char *prompt, char *buf, size_t len, void *user);

int cmd_sign(struct cli *cli, int argc, char **argv);
int cmd_verify(struct cli *cli, int argc, char **argv);
int cmd_encrypt(struct cli *cli, int argc, char **argv);
int cmd_decrypt(struct cli *cli, int argc, char **argv);
int cmd_keygen(struct cli *cli, int argc, char **argv);
int cmd_csr(struct cli *cli, int argc, char **argv);
int cmd_import(struct cli *cli, int argc, char **argv);
int cmd_delete(struct cli *cli, int argc, char **argv);
int cmd_sendmail(struct cli *cli, int argc, char **argv);

#endif
