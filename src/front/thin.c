/*
 * The p11smime executable: a thin front end on libc alone.
 *
 * Through `p11smime agent`, a process per message costs mostly the loading
 * of libcrypto, p11-kit, jansson and libmilter (page faults and mmaps),
 * none of which an agent client needs.  So `sign` and `decrypt` with
 * $P11SMIME_AGENT_SOCK set are done here: the same options, frames,
 * output (src/outcore.c, the library's own file logic), messages, reports
 * and exit codes as src/cli/agent_client.c.  Everything else, and every
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
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent_proto.h"
#include "cli_opts.h"
#include "outcore.h"
#include "rc_names.h"

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

/* ------------------------------------------------- what the CLI prints */

/* As cli_safe() (src/cli/main.c): control characters become \xNN. */
static const char *safe(const char *s)
{
	static char bufs[6][1024];
	static unsigned next;
	char *out = bufs[next++ % 6];
	size_t o = 0;

	if (s == NULL)
		return "";
	for (const unsigned char *p = (const unsigned char *)s; *p && o + 5 < sizeof(bufs[0]);
	     p++) {
		int c1 = p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f;

		if (*p < 0x20 || *p == 0x7f || c1) {
			if (c1)
				p++;
			o += (size_t)snprintf(out + o, sizeof(bufs[0]) - o, "\\x%02x", *p);
		} else {
			out[o++] = (char)*p;
		}
	}
	out[o] = '\0';
	return out;
}

static int usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const char *command, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "p11smime: %s: ", command);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'p11smime %s --help'.\n", command);
	return 2;
}

/* As cli_fail(): the message (NULL: out of memory), its exit code. */
static int fail(p11s_rc rc, char *why)
{
	fprintf(stderr, "p11smime: %s\n", why != NULL ? why : "out of memory");
	free(why);
	return p11i_rc_exit_code(rc);
}

/* ------------------------------------------------------------ the agent */

/* The global options and one request in flight. */
struct client {
	const char *module;
	int json, verbose;
	const char *sock;
	const char *command;
	int fd;
	unsigned char *buf;
	size_t cap;
};

static void put_num(struct agent_buf *b, const char *key, long long v)
{
	char num[32];

	snprintf(num, sizeof(num), "%lld", v);
	agent_buf_kv(b, key, num);
}

static int lost(struct client *c, const char *what)
{
	fprintf(stderr, "p11smime: the agent at '%s' %s; nothing was written\n", safe(c->sock),
	        what);
	return 3;
}

static int connect_agent(struct client *c)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	if (strlen(c->sock) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "p11smime: P11SMIME_AGENT_SOCK is too long for a socket path\n");
		return 3;
	}
	memcpy(sa.sun_path, c->sock, strlen(c->sock) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		fprintf(stderr,
		        "p11smime: cannot reach the agent at '%s' (P11SMIME_AGENT_SOCK): %s; "
		        "--no-agent works without it\n",
		        safe(c->sock), strerror(errno));
		return 3;
	}
	return 0;
}

static int same_module(const char *mine, const char *agents)
{
	char a[PATH_MAX], b[PATH_MAX];

	if (strcmp(mine, agents) == 0)
		return 1;
	return realpath(mine, a) != NULL && realpath(agents, b) != NULL && strcmp(a, b) == 0;
}

static int hello(struct client *c, const struct agent_strings *sl)
{
	const char *mine = c->module ? c->module : getenv("P11SMIME_MODULE");

	if (sl->n < 2 || strcmp(sl->s[0], AGENT_PROTO_VERSION) != 0) {
		fprintf(stderr,
		        "p11smime: the agent at '%s' speaks another protocol version; restart it "
		        "with this p11smime, or use --no-agent\n",
		        safe(c->sock));
		return 3;
	}
	if (mine != NULL && *mine != '\0' && !same_module(mine, sl->s[1]))
		return usage_error(c->command,
		                   "--module '%s' is not the agent's module ('%s'); "
		                   "use --no-agent to load it here",
		                   safe(mine), safe(sl->s[1]));
	if (c->verbose)
		fprintf(stderr, "p11smime: module: %s\n", sl->s[1]);
	return 0;
}

/* As p11s_input_open(): the file or standard input, never a directory.  -1 after printing. */
static int input_open(const char *path)
{
	const char *name = path && strcmp(path, "-") != 0 ? path : "standard input";
	struct stat st;
	int fd = STDIN_FILENO;

	if (path != NULL && strcmp(path, "-") != 0) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "p11smime: cannot open '%s': %s\n", name, strerror(errno));
			return -1;
		}
	}
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (fd != STDIN_FILENO)
			close(fd);
		fprintf(stderr, "p11smime: cannot read '%s': it is a directory\n", name);
		return -1;
	}
	return fd;
}

/* Up to @p n bytes, as fread() gives them: short only at the end.  -1 on an error. */
static ssize_t read_block(int fd, unsigned char *p, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, p + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* D frames, then E.  -1 when the agent stopped listening. */
static int send_input(struct client *c, int in, int *read_failed)
{
	unsigned char *chunk = malloc(AGENT_DATA_MAX);
	ssize_t n;
	int ret = 0;

	if (chunk == NULL)
		return -1;
	while ((n = read_block(in, chunk, AGENT_DATA_MAX)) > 0) {
		if (agent_send(c->fd, AGENT_DATA, chunk, (uint32_t)n) != 0) {
			ret = -1;
			break;
		}
	}
	if (ret == 0 && n < 0)
		*read_failed = 1;
	free(chunk);
	if (ret == 0 && !*read_failed)
		ret = agent_send(c->fd, AGENT_END, NULL, 0);
	return ret;
}

static void print_error(const struct agent_strings *sl, const struct agent_result *r)
{
	const char *msg = r->message && *r->message ? r->message : p11i_rc_name((p11s_rc)r->rc);

	fprintf(stderr, "p11smime: %s\n", msg);
	for (size_t i = 0; i < r->n_candidates; i++)
		fprintf(stderr, "  %s\n", sl->s[r->candidates[i]]);
}

/* As agent_client.c's exchange(): the request, the message, the output and the result. */
static int exchange(struct client *c, const struct agent_buf *req, int in, const char *in_path,
                    const char *out_path, unsigned out_flags, int discard, struct p11i_out **outp,
                    struct agent_strings *rs, struct agent_result *res)
{
	struct p11i_out *out = NULL;
	uint8_t type;
	uint32_t len;
	p11s_rc rc = P11S_E_IO;
	int r, read_failed = 0, write_failed = 0;
	const char *why;
	char *owhy = NULL;

	if (req->oom || req->len > AGENT_MSG_MAX) {
		fprintf(stderr, "p11smime: the request is too large for the agent\n");
		return 4;
	}
	/* A failed send is not final: the agent may have answered why it stopped reading. */
	if (agent_send(c->fd, AGENT_REQUEST, req->p, (uint32_t)req->len) == 0)
		send_input(c, in, &read_failed);
	if (read_failed) {
		fprintf(stderr, "p11smime: cannot read '%s': %s\n",
		        in_path ? safe(in_path) : "standard input", strerror(errno));
		return 4;
	}
	for (;;) {
		r = agent_recv(c->fd, &type, &c->buf, &c->cap, &len);
		if (r <= 0) {
			p11i_out_abort(out);
			free(owhy);
			return lost(c, r == 0 ? "stopped during the request"
			                      : "broke off the request");
		}
		if (type == AGENT_RESULT)
			break;
		if (type != AGENT_DATA) {
			p11i_out_abort(out);
			free(owhy);
			return lost(c, "sent something unexpected");
		}
		if (discard || write_failed)
			continue;
		if (out == NULL) {
			rc = p11i_out_open(out_path, out_flags, sizeof(*out), &out, &owhy);
			if (rc != P11S_OK) {
				/* Still read the result: the agent's report comes first. */
				write_failed = 1;
				continue;
			}
		}
		if (len > 0 && p11i_out_write(out, c->buf, len) != 0)
			write_failed = 1;
	}
	if (agent_strings_parse(c->buf, len, rs) != 0 || agent_result_parse(rs, res, &why) != 0) {
		agent_strings_free(rs);
		p11i_out_abort(out);
		free(owhy);
		return lost(c, "sent a malformed result");
	}
	for (size_t i = 0; c->verbose && i < res->n_verbose; i++)
		fprintf(stderr, "p11smime: %s\n", rs->s[res->verbose[i]]);
	if (res->rc != P11S_OK) {
		free(owhy); /* a failed output open: the agent's reason wins */
		owhy = NULL;
	}
	if (res->rc == P11S_OK && !discard && out == NULL && !write_failed) {
		/* An empty output (nothing came) is still an output. */
		rc = p11i_out_open(out_path, out_flags, sizeof(*out), &out, &owhy);
		write_failed = rc != P11S_OK;
	}
	if (res->rc == P11S_OK && write_failed) {
		if (out != NULL)
			rc = p11i_out_explain(out, P11S_E_IO, &owhy);
		p11i_out_abort(out);
		agent_result_free(res);
		agent_strings_free(rs);
		if (owhy == NULL && rc != P11S_E_NOMEM) {
			fprintf(stderr, "p11smime: %s\n", p11i_rc_name(rc));
			return p11i_rc_exit_code(rc);
		}
		return fail(rc, owhy);
	}
	free(owhy);
	*outp = out;
	return 0;
}

static int commit(struct p11i_out *out)
{
	char *why = NULL;
	p11s_rc rc;

	if (out == NULL)
		return 0;
	rc = p11i_out_commit(out, &why);
	return rc != P11S_OK ? fail(rc, why) : 0;
}

/* Open the input (first, as the command does), connect, read the greeting. */
static int start(struct client *c, const char *in_path, int *in)
{
	struct agent_strings sl = {0};
	struct agent_result res;
	uint8_t type;
	uint32_t len;
	const char *why;
	int r;

	*in = input_open(in_path);
	if (*in < 0)
		return p11i_rc_exit_code(P11S_E_IO);
	r = connect_agent(c);
	if (r != 0)
		return r;
	r = agent_recv(c->fd, &type, &c->buf, &c->cap, &len);
	if (r <= 0 || (type != AGENT_HELLO && type != AGENT_RESULT) ||
	    agent_strings_parse(c->buf, len, &sl) != 0)
		return lost(c, r == 0 ? "closed the connection" : "did not greet");
	if (type == AGENT_RESULT) {
		/* Refused before any request (another user, too many clients). */
		if (agent_result_parse(&sl, &res, &why) != 0) {
			agent_strings_free(&sl);
			return lost(c, "sent a malformed result");
		}
		print_error(&sl, &res);
		r = p11i_rc_exit_code((p11s_rc)res.rc);
		agent_result_free(&res);
		agent_strings_free(&sl);
		return r ? r : 3;
	}
	r = hello(c, &sl);
	agent_strings_free(&sl);
	return r;
}

static void finish(struct client *c, int in)
{
	if (c->fd >= 0)
		close(c->fd);
	if (in > STDIN_FILENO)
		close(in);
	free(c->buf);
}

/*
 * sign through the agent, as cmd_sign.c and agent_client_sign() do it; or
 * HAND_OVER for what only the whole command line does: --at (the
 * library's time parser), --out-dir and --jobs (batches), --no-agent,
 * --help, and every usage error (its words are the command's).
 */
static int thin_sign(struct client *c, int argc, char **argv)
{
	const char *signer = NULL, *digest = NULL, *in_path = NULL, *out_path = NULL;
	int opt, pss = 0, opaque = 0, detached = 0, have_form = 0, form = FORM_SMIME, ret;
	struct agent_buf req = {0};
	struct agent_strings rs = {0};
	struct agent_result res;
	struct p11i_out *out = NULL;
	int in = -1;

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
			fprintf(stderr, "p11smime: cannot read '%s': %s\n", safe(optarg),
			        strerror(errno));
			agent_buf_free(&req);
			return 4;
		}
		agent_buf_kv(&req, "chain", abs);
		free(abs);
	}
	put_num(&req, "pss", pss);
	put_num(&req, "opaque", opaque);
	put_num(&req, "detached", detached);
	put_num(&req, "form", form);
	put_num(&req, "at", 0);
	put_num(&req, "json", c->json);
	put_num(&req, "verbose", c->verbose);

	c->command = "sign";
	ret = start(c, in_path, &in);
	if (ret == 0)
		ret = exchange(c, &req, in, in_path, out_path, 0, 0, &out, &rs, &res);
	agent_buf_free(&req);
	if (ret != 0) {
		finish(c, in);
		return ret;
	}
	if (res.rc != P11S_OK) {
		p11i_out_abort(out);
		print_error(&rs, &res);
		ret = p11i_rc_exit_code((p11s_rc)res.rc);
	} else {
		ret = commit(out);
		if (ret == 0 && c->json && res.json != NULL)
			fprintf(out_path != NULL && strcmp(out_path, "-") != 0 ? stdout : stderr,
			        "%s\n", res.json);
	}
	agent_result_free(&res);
	agent_strings_free(&rs);
	finish(c, in);
	return ret;
hand_over:
	agent_buf_free(&req);
	return HAND_OVER;
}

/* decrypt through the agent, as cmd_decrypt.c and agent_client_decrypt(); HAND_OVER as sign. */
static int thin_decrypt(struct client *c, int argc, char **argv)
{
	const char *key = NULL, *in_path = NULL, *out_path = NULL;
	int opt, inform = INFORM_SMIME, keep = 0, entity = 0, discard, ret;
	struct agent_buf req = {0};
	struct agent_strings rs = {0};
	struct agent_result res;
	struct p11i_out *out = NULL;
	int in = -1;

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
	put_num(&req, "at", 0);
	put_num(&req, "inform", inform);
	put_num(&req, "keep-line-ends", keep);
	put_num(&req, "entity", entity);
	put_num(&req, "discard", discard);
	put_num(&req, "json", c->json);
	put_num(&req, "verbose", c->verbose);

	c->command = "decrypt";
	ret = start(c, in_path, &in);
	if (ret == 0)
		ret = exchange(c, &req, in, in_path, out_path, P11I_OUT_PRIVATE, discard, &out, &rs,
		               &res);
	agent_buf_free(&req);
	if (ret != 0) {
		finish(c, in);
		return ret;
	}
	if (res.rc != P11S_OK) {
		p11i_out_abort(out);
		if (c->json && res.json != NULL)
			fprintf(stdout, "%s\n", res.json);
		print_error(&rs, &res);
		ret = p11i_rc_exit_code((p11s_rc)res.rc);
	} else {
		ret = commit(out);
		for (size_t i = 0; ret == 0 && i < res.n_notes; i++)
			fprintf(stderr, "p11smime: note: %s\n", rs.s[res.notes[i]]);
		if (ret == 0 && c->json && res.json != NULL)
			fprintf(out_path == NULL || strcmp(out_path, "-") != 0 ? stdout : stderr,
			        "%s\n", res.json);
	}
	agent_result_free(&res);
	agent_strings_free(&rs);
	finish(c, in);
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
	struct client c = {.fd = -1};
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
