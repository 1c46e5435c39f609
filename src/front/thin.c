/*
 * The p11smime executable: a thin front end on libc alone.
 *
 * Through `p11smime agent`, a process per message costs mostly the loading
 * of libcrypto, p11-kit, jansson and libmilter (page faults and mmaps),
 * none of which an agent client needs.  So `sign` and `decrypt` with
 * $P11SMIME_AGENT_SOCK set are done here: the options are parsed as the
 * command parses them, and the request goes through the same client as
 * the whole command line's (src/front/agent_conn.c), output, messages,
 * reports and exit codes included.  Everything else, and every
 * case this file does not handle (see thin_sign() and thin_decrypt()), is
 * handed, before anything observable, to the whole command line: a
 * private shared object, libp11smime-cli.so, loaded with dlopen.  See
 * docs/design.md, "The executable".
 *
 * $P11SMIME_FULL_CLI=1 always hands over (a debugging aid: the same
 * invocation through both paths must give the same bytes).
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_conn.h"
#include "cli_opts.h"
#include "outcore.h"

/* Values of the library's enums (p11smime/io.h, decrypt.h), whose headers need OpenSSL. */
enum { FORM_SMIME = 0, FORM_DER = 1, FORM_PEM = 2 };
enum { INFORM_SMIME = 0, INFORM_DER = 1, INFORM_PEM = 2 };

/* Not handled here: the whole command line takes the invocation. */
#define HAND_OVER (-1)

/* ------------------------------------------------------ handing over */

#ifdef P11S_CLI_LINKED
int p11i_cli_main(int argc, char **argv);
#endif

static int full_cli(int argc, char **argv)
{
#ifdef P11S_CLI_LINKED
	return p11i_cli_main(argc, argv);
#else
	/*
	 * Beside the executable (build tree), else in the private directory
	 * (installed).  One buffer: every page of stack touched is a fault
	 * that the commands handed over pay.
	 */
	static const char *const where[] = {"", P11S_CLI_RELDIR "/"};
	static const char name[] = "libp11smime-cli.so";
	char path[PATH_MAX + 64];
	ssize_t n = readlink("/proc/self/exe", path, PATH_MAX);
	int (*cli_main)(int, char **) = NULL;
	const char *why = "libp11smime-cli.so is not installed";
	char *dir_end;
	void *h = NULL;

	if (n <= 0 || (path[n] = '\0', dir_end = strrchr(path, '/')) == NULL) {
		fprintf(stderr,
		        "p11smime: cannot load the command line: cannot find /proc/self/exe\n");
		return 4;
	}
	dir_end++;
	for (size_t i = 0; h == NULL && i < sizeof(where) / sizeof(where[0]); i++) {
		const char *full = path;

		if (where[i][0] == '/') {
			full = P11S_CLI_RELDIR "/libp11smime-cli.so";
		} else if ((size_t)(dir_end - path) + strlen(where[i]) + sizeof(name) <=
		           sizeof(path)) {
			strcpy(dir_end, where[i]);
			strcat(dir_end, name);
		} else {
			continue;
		}
		if (access(full, F_OK) != 0)
			continue;
		h = dlopen(full, RTLD_LAZY | RTLD_LOCAL);
		why = h == NULL ? dlerror() : "p11i_cli_main is missing";
	}
	if (h != NULL)
		*(void **)&cli_main = dlsym(h, "p11i_cli_main");
	if (cli_main == NULL) {
		fprintf(stderr, "p11smime: cannot load the command line: %s\n", why);
		return 4;
	}
	return cli_main(argc, argv);
#endif
}

/*
 * sign through the agent, as cmd_sign.c and agent_client_sign() do it; or
 * HAND_OVER for what only the whole command line does: --at (the
 * library's time parser), --out-dir and --jobs (batches), --no-agent,
 * --help, and every usage error (its words are the command's).
 */
static int thin_sign(struct agent_conn *c, int argc, char **argv)
{
	const char *signer = NULL, *digest = NULL, *in_path = NULL, *out_path = NULL;
	int opt, pss = 0, opaque = 0, detached = 0, have_form = 0, form = FORM_SMIME, ret;
	struct agent_buf req = {0};

	agent_buf_str(&req, AGENT_PROTO_VERSION);
	agent_buf_str(&req, "sign");
	/* --chain files are read in a second pass: a usage error must come first, as in the
	 * command. */
	while ((opt = getopt_long(argc, argv, P11I_SIGN_SHORT, p11i_sign_opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			signer = optarg;
			break;
		case 'c':
			break;
		case 'd':
			digest = optarg;
			break;
		case 'P':
			pss = 1;
			break;
		case 'O':
			opaque = 1;
			break;
		case 'i':
			in_path = optarg;
			break;
		case 'o':
			out_path = optarg;
			break;
		case 'D':
			detached = 1;
			break;
		case 'f':
			if (strcasecmp(optarg, "der") == 0)
				form = FORM_DER;
			else if (strcasecmp(optarg, "pem") == 0)
				form = FORM_PEM;
			else if (strcasecmp(optarg, "smime") == 0)
				form = FORM_SMIME;
			else
				goto hand_over;
			have_form = 1;
			break;
		default: /* --at, --out-dir, --jobs, --no-agent, --help, unknown */
			goto hand_over;
		}
	}
	if (optind < argc || signer == NULL || (detached && opaque))
		goto hand_over;
	if (detached && !have_form)
		form = FORM_DER;
	if ((detached && form == FORM_SMIME) || (!detached && !opaque && form != FORM_SMIME))
		goto hand_over;
	if (digest != NULL && strcmp(digest, "sha256") != 0 && strcmp(digest, "sha384") != 0 &&
	    strcmp(digest, "sha512") != 0)
		goto hand_over;

	agent_buf_kv(&req, "signer", signer);
	agent_buf_kv(&req, "digest", digest);
	/* The chain files, in their order: parse again, picking only them. */
	optind = 0;
	while ((opt = getopt_long(argc, argv, P11I_SIGN_SHORT, p11i_sign_opts, NULL)) != -1) {
		char *abs;

		if (opt != 'c')
			continue;
		/* The agent's working directory is not ours. */
		abs = realpath(optarg, NULL);
		if (abs == NULL) {
			fprintf(stderr, "p11smime: cannot read '%s': %s\n", cli_safe(optarg),
			        strerror(errno));
			agent_buf_free(&req);
			return 4;
		}
		agent_buf_kv(&req, "chain", abs);
		free(abs);
	}
	agent_put_num(&req, "pss", pss);
	agent_put_num(&req, "opaque", opaque);
	agent_put_num(&req, "detached", detached);
	agent_put_num(&req, "form", form);
	agent_put_num(&req, "at", 0);
	agent_put_num(&req, "json", c->json);
	agent_put_num(&req, "verbose", c->verbose);

	c->command = "sign";
	ret = agent_conn_run(c, &req, in_path, out_path, 0, 0);
	agent_buf_free(&req);
	return ret;
hand_over:
	agent_buf_free(&req);
	return HAND_OVER;
}

/* decrypt through the agent, as cmd_decrypt.c and agent_client_decrypt(); HAND_OVER as sign. */
static int thin_decrypt(struct agent_conn *c, int argc, char **argv)
{
	const char *key = NULL, *in_path = NULL, *out_path = NULL;
	int opt, inform = INFORM_SMIME, keep = 0, entity = 0, discard, ret;
	struct agent_buf req = {0};

	while ((opt = getopt_long(argc, argv, P11I_DECRYPT_SHORT, p11i_decrypt_opts, NULL)) != -1) {
		switch (opt) {
		case 'k':
			key = optarg;
			break;
		case 'f':
			if (strcmp(optarg, "smime") == 0)
				inform = INFORM_SMIME;
			else if (strcmp(optarg, "der") == 0)
				inform = INFORM_DER;
			else if (strcmp(optarg, "pem") == 0)
				inform = INFORM_PEM;
			else
				return HAND_OVER;
			break;
		case 'L':
			keep = 1;
			break;
		case 'E':
			entity = 1;
			break;
		case 'i':
			in_path = optarg;
			break;
		case 'o':
			out_path = optarg;
			break;
		default: /* --at, --out-dir, --jobs, --no-agent, --help, unknown */
			return HAND_OVER;
		}
	}
	if (optind < argc)
		return HAND_OVER;
	/* With --json and no -o the report takes standard output: the content is checked, then
	 * dropped. */
	discard = c->json && out_path == NULL;
	agent_buf_str(&req, AGENT_PROTO_VERSION);
	agent_buf_str(&req, "decrypt");
	agent_buf_kv(&req, "key", key);
	agent_put_num(&req, "at", 0);
	agent_put_num(&req, "inform", inform);
	agent_put_num(&req, "keep-line-ends", keep);
	agent_put_num(&req, "entity", entity);
	agent_put_num(&req, "discard", discard);
	agent_put_num(&req, "json", c->json);
	agent_put_num(&req, "verbose", c->verbose);

	c->command = "decrypt";
	ret = agent_conn_run(c, &req, in_path, out_path, P11I_OUT_PRIVATE, discard);
	agent_buf_free(&req);
	return ret;
}

/* A config file (p11s_config_default_path()) may set defaults: only the whole CLI reads it. */
static int config_present(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char path[PATH_MAX + 32];
	struct stat st;

	if (xdg != NULL && xdg[0] == '/')
		snprintf(path, sizeof(path), "%s/p11smime/config", xdg);
	else if (home != NULL && home[0] != '\0')
		snprintf(path, sizeof(path), "%s/.config/p11smime/config", home);
	else
		return 0;
	return stat(path, &st) == 0 || errno != ENOENT;
}

/* The agent path, or HAND_OVER.  Works on its own copy of argv (getopt permutes). */
static int thin(int argc, char **argv)
{
	struct agent_conn c = {.fd = -1};
	const char *env = getenv("P11SMIME_FULL_CLI");
	int opt, ret;

	c.sock = getenv("P11SMIME_AGENT_SOCK");
	if (c.sock == NULL || *c.sock == '\0' || (env != NULL && *env != '\0' && strcmp(env, "0")))
		return HAND_OVER;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, P11I_GLOBAL_SHORT, p11i_global_opts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			c.module = optarg;
			break;
		case 'F':
			break; /* a PIN is never asked here */
		case 'j':
			c.json = 1;
			break;
		case 'v':
			c.verbose++;
			break;
		default: /* --pin-source (checked by the library), --help, --version, unknown */
			return HAND_OVER;
		}
	}
	if (optind >= argc || config_present())
		return HAND_OVER;
	argc -= optind;
	argv += optind;
	optind = 0;
	if (strcmp(argv[0], "sign") == 0)
		ret = thin_sign(&c, argc, argv);
	else if (strcmp(argv[0], "decrypt") == 0)
		ret = thin_decrypt(&c, argc, argv);
	else
		return HAND_OVER;
	if (ret != HAND_OVER && fflush(stdout) != 0 && ret == 0) {
		fprintf(stderr, "p11smime: cannot write to standard output: %s\n", strerror(errno));
		ret = 4;
	}
	return ret;
}

int main(int argc, char **argv)
{
	const char *sock = getenv("P11SMIME_AGENT_SOCK");
	char **copy = NULL;
	int ret = HAND_OVER;

	/* As the command line does: EPIPE is a write error (exit 4), not a silent death. */
	signal(SIGPIPE, SIG_IGN);
	/* Without an agent nothing is done here: not even a malloc, whose pages the rest pays. */
	if (sock != NULL && *sock != '\0')
		copy = malloc(((size_t)argc + 1) * sizeof(*copy));
	if (copy != NULL) {
		memcpy(copy, argv, ((size_t)argc + 1) * sizeof(*copy));
		ret = thin(argc, copy);
		free(copy);
	}
	if (ret != HAND_OVER)
		return ret;
	/* The command line starts afresh, getopt's state included. */
	optind = 0;
	opterr = 1;
	return full_cli(argc, argv);
}
