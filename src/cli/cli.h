/*
 * The p11smime command line: shared state of one run.  The CLI parses
 * arguments, calls the public library API and prints; nothing else.
 */
#ifndef P11I_CLI_H
#define P11I_CLI_H

#include <stdio.h>
#include <time.h>

#include "p11smime/decrypt.h"
#include "p11smime/io.h"
#include "p11smime/result.h"
#include "p11smime/rules.h"
#include "p11smime/sign.h"
#include "p11smime/token.h"
#include "report.h"

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
	/*
	 * When set, cli_verbose() hands each line to this instead of standard
	 * error: the agent collects a request's lines to send to its client.
	 */
	void (*verbose_sink)(void *arg, const char *line);
	void *verbose_arg;
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

/* Print a --json document (src/cli/report.c) on standard output with a newline, then free it. */
void cli_print_json(char *doc);

/*
 * The tail of the commands that write a message (src/cli/tail.c).  One
 * policy for --json: the report goes to standard output unless standard
 * output carries the message (no -o, or -o -), then to standard error.
 */
/* 1 when -o @p out_path leaves the message on standard output. */
int cli_stdout_is_message(const char *out_path);
/*
 * @p rc, the operation's result, explained by *out (a full disk is named),
 * then *out committed when all went well, else discarded; *out is NULL
 * afterwards (NULL before is fine).  The exit code: 0, or cli_fail()'s.
 */
int cli_finish(struct cli *cli, p11s_output **out, p11s_rc rc);
/*
 * Print the report @p doc (taken; NULL means out of memory, said on
 * standard error) on standard error when @p message_on_stdout, else on
 * standard output.
 */
void cli_report(char *doc, int message_on_stdout);

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
int cmd_agent(struct cli *cli, int argc, char **argv);

/*
 * Shared by the agent (src/cli/cmd_agent.c) with sign and decrypt, so that
 * its clients print exactly what the commands print.
 */
/* The -v lines about a prepared signer. */
void cmd_sign_verbose(const struct cli *cli, const p11s_signer *signer);
/* The -v lines about a decryption (report may be NULL). */
void cmd_decrypt_summary(const struct cli *cli, const p11s_decrypt_report *report);

/*
 * The client side of the agent (src/cli/agent_client.c).  agent_socket():
 * the agent's socket from $P11SMIME_AGENT_SOCK, or NULL to work alone.
 * The two requests take the options sign and decrypt parsed and return
 * the exit code, having printed what the command would have; @p label
 * (a batch's input file, or NULL) prefixes the error message.
 */
const char *agent_socket(void);
int agent_client_sign(struct cli *cli, const char *sock, const p11s_sign_opts *so, int detached,
                      p11s_outform form, const char *in_path, const char *out_path,
                      const char *label);
int agent_client_decrypt(struct cli *cli, const char *sock, const p11s_decrypt_opts *o,
                         const char *in_path, const char *out_path, const char *label);

/* --out-dir (src/cli/batch.c). */
/* DIR/<last component of FILE>; caller frees.  NULL when out of memory. */
char *cli_batch_path(const char *dir, const char *file);
/*
 * DIR is a directory and no two FILEs have the same name (one would
 * replace the other); else print why and return 2.
 */
int cli_batch_check(const char *command, const char *dir, char **files, int nfiles);
/* As cli_fail(), the message prefixed with "FILE: ". */
int cli_fail_file(struct cli *cli, const char *file, p11s_rc rc);

/*
 * Outputs of a batch committed together: each is prepared
 * (p11s_output_prepare()) when it is complete, and a group's first fsync
 * then carries them all to the disk.  Its JSON report (stdout) and notes
 * (stderr, whole lines) are printed once it is in place.
 */
#define CLI_BATCH_GROUP 16
struct cli_batch_group {
	p11s_output *out[CLI_BATCH_GROUP];
	const char *file[CLI_BATCH_GROUP];
	char *json[CLI_BATCH_GROUP], *notes[CLI_BATCH_GROUP];
	int n;
};
/* Add a complete output (taking it, @p json and @p notes); the exit code of what failed. */
int cli_batch_add(struct cli *cli, struct cli_batch_group *g, p11s_output *out, const char *file,
                  char *json, char *notes);
/* Commit what the group holds; the highest exit code of its files. */
int cli_batch_flush(struct cli *cli, struct cli_batch_group *g);
int cmd_milter(struct cli *cli, int argc, char **argv);

#endif
