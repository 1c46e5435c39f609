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
	/*
	 * Where the command's report and messages go; NULL means standard
	 * output and standard error.  A batch's worker sets them to its
	 * file's buffers, printed in the order of the files.
	 */
	FILE *outf, *errf;
	/*
	 * A batch worker's connection to the agent, kept from one file to the
	 * next (-1: none yet; the worker closes it); NULL outside batches.
	 */
	int *agent_fd;
};

/* The command's standard output and standard error (see struct cli). */
static inline FILE *cli_out(const struct cli *cli)
{
	return cli->outf != NULL ? cli->outf : stdout;
}
static inline FILE *cli_err(const struct cli *cli)
{
	return cli->errf != NULL ? cli->errf : stderr;
}

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

/*
 * The rest of cli_fail()'s lines, after its prefix: @p msg (or @p rc's
 * name when empty) and cli->err's @p n candidates, shown safely; clears
 * cli->err.
 */
void cli_put_message(struct cli *cli, const char *msg, p11s_rc rc, size_t n);

/* Print "p11smime: <command>: <message>" and return 2 (usage). */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parse --at; prints and returns 2 on a bad time. */
int cli_parse_time(const char *text, time_t *out);

/* Print a --json document (src/cli/report.c) on standard output with a newline, then free it. */
void cli_print_json(char *doc);
/* The same on the command's output (cli_out()). */
void cli_print_json_to(const struct cli *cli, char *doc);

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
 * sequences.  Returns one of a few rotating per-thread buffers: fine for
 * the arguments of one printf, not to keep.
 */
const char *cli_safe(const char *s);

/*
 * @p s written to @p fp as cli_safe() shows it, whole, with no length
 * bound: for the library's messages, which may quote a token's words.
 */
void cli_puts_safe(FILE *fp, const char *s);

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
 * the exit code, having printed what the command would have (to
 * cli_out() and cli_err()); @p label (a batch's input file, or NULL)
 * prefixes the error message.  @p keep (a batch's, or NULL): the output
 * file, prepared and not committed, as struct agent_conn's keep.
 */
const char *agent_socket(void);
struct p11i_out;
int agent_client_sign(struct cli *cli, const char *sock, const p11s_sign_opts *so, int detached,
                      p11s_outform form, const char *in_path, const char *out_path,
                      const char *label, struct p11i_out **keep);
int agent_client_decrypt(struct cli *cli, const char *sock, const p11s_decrypt_opts *o,
                         const char *in_path, const char *out_path, const char *label,
                         struct p11i_out **keep);

/* --out-dir (src/cli/batch.c). */
/* DIR/<last component of FILE>; caller frees.  NULL when out of memory. */
char *cli_batch_path(const char *dir, const char *file);
/*
 * DIR is a directory and no two FILEs have the same name (one would
 * replace the other): 0; else print why and return the exit code (2, or 4
 * when out of memory).
 */
int cli_batch_check(const char *command, const char *dir, char **files, int nfiles);
/* As cli_fail(), the message prefixed with "FILE: ". */
int cli_fail_file(struct cli *cli, const char *file, p11s_rc rc);

/*
 * A batch's files are handled by @p jobs workers at once (each with its
 * own struct cli copy: its own error, its output and messages kept in
 * buffers), and what each file printed is printed in the order of the
 * files.  @p one handles one file with the worker's cli and returns its
 * exit code; on success it may leave in *out its complete output,
 * uncommitted: the runner commits it with others (one sync of the file
 * system for a group of files) and prints the file's messages only once
 * it is in place, or the commit's failure instead.  The batch's exit code
 * is the highest.
 */
struct cli_batch_output {
	p11s_output *lib; /* made by the library */
	/* Or, through the agent, its client's output (src/front/agent_conn.c), prepared. */
	struct p11i_out *agent;
};
typedef int (*cli_batch_one)(struct cli *cli, void *arg, const char *file,
                             struct cli_batch_output *out);
int cli_batch_run(struct cli *cli, char **files, int nfiles, int jobs, cli_batch_one one,
                  void *arg);
/* --jobs N: 1 to CLI_BATCH_JOBS_MAX; prints and returns 2 when not. */
#define CLI_BATCH_JOBS_MAX 64
/*
 * Through the agent, each worker sends its files as requests of its own,
 * served at once by the agent; its 64 connections are shared with other
 * clients, so a batch takes at most a quarter of them.
 */
#define AGENT_BATCH_JOBS_MAX 16
static inline int cli_batch_agent_jobs(int jobs)
{
	return jobs > AGENT_BATCH_JOBS_MAX ? AGENT_BATCH_JOBS_MAX : jobs;
}
int cli_batch_jobs(const char *command, const char *text, int *jobs);
/*
 * Without --jobs (@p jobs 0 for cli_batch_run()): the processors online (the
 * token and OpenSSL work on the CPU), at most 8.
 */
int cli_batch_default_jobs(void);

int cmd_milter(struct cli *cli, int argc, char **argv);

/* The command line's main() (src/cli/main.c); the executable is src/front/thin.c. */
int p11i_cli_main(int argc, char **argv);

#endif
