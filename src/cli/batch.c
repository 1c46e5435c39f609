/*
 * sign and decrypt --out-dir: many files, one login.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "agent_conn.h"
#include "outcore.h"

static const char *last_component(const char *file)
{
	const char *slash = strrchr(file, '/');

	return slash != NULL ? slash + 1 : file;
}

char *cli_batch_path(const char *dir, const char *file)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s", dir, last_component(file)) < 0)
		return NULL;
	return p;
}

/* For cli_batch_check(): files by output name, then by their place on the command line. */
struct named {
	const char *name;
	int index;
};

static int named_cmp(const void *a, const void *b)
{
	const struct named *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : (x->index > y->index) - (x->index < y->index);
}

int cli_batch_check(const char *command, const char *dir, char **files, int nfiles)
{
	struct named *v;
	struct stat st;
	int bad = nfiles, dup = nfiles, dup_of = 0, first = 0;

	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return cli_usage_error(command, "--out-dir '%s' is not a directory", cli_safe(dir));
	for (int i = 0; i < nfiles && bad == nfiles; i++) {
		const char *name = last_component(files[i]);

		if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			bad = i;
	}
	/*
	 * Sorted, not each name against every earlier one: that was 4.5
	 * million strcmp for a batch of 3,000 files, before any signing.  The
	 * report is the same: the first file (in command-line order) whose
	 * name an earlier one has, with the first of those.
	 */
	v = malloc((size_t)(nfiles > 0 ? nfiles : 1) * sizeof(*v));
	if (v == NULL) {
		fprintf(stderr, "p11smime: %s: out of memory\n", command);
		return 4;
	}
	for (int i = 0; i < nfiles; i++)
		v[i] = (struct named){last_component(files[i]), i};
	qsort(v, (size_t)nfiles, sizeof(*v), named_cmp);
	for (int k = 1; k < nfiles; k++) {
		if (strcmp(v[k].name, v[first].name) != 0) {
			first = k;
		} else if (k == first + 1 && v[k].index < dup) {
			dup = v[k].index;
			dup_of = v[first].index;
		}
	}
	free(v);
	if (bad < nfiles && bad <= dup)
		return cli_usage_error(command, "'%s' does not name a file", cli_safe(files[bad]));
	if (dup < nfiles)
		return cli_usage_error(command, "'%s' and '%s' would both be written to '%s/%s'",
		                       cli_safe(files[dup_of]), cli_safe(files[dup]), cli_safe(dir),
		                       cli_safe(last_component(files[dup])));
	return 0;
}

int cli_fail_file(struct cli *cli, const char *file, p11s_rc rc)
{
	const char *msg = p11s_error_message(cli->err);
	size_t n = p11s_error_candidate_count(cli->err);
	FILE *fp = cli_err(cli);

	fprintf(fp, "p11smime: %s: ", cli_safe(file));
	cli_put_message(cli, msg, rc, n);
	return p11s_rc_exit_code(rc);
}

int cli_batch_jobs(const char *command, const char *text, int *jobs)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || n < 1 || n > CLI_BATCH_JOBS_MAX)
		return cli_usage_error(command, "--jobs wants a number from 1 to %d, not '%s'",
		                       CLI_BATCH_JOBS_MAX, cli_safe(text));
	*jobs = (int)n;
	return 0;
}

int cli_batch_default_jobs(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

/*
 * Outputs committed together: one sync of the file system makes a group's
 * data durable (p11s_output_sync_group()) instead of one fsync per file.
 * A group has GROUP outputs, more (up to GROUP_MAX) when more are done by
 * then: a slow sync (a disk busy with other writers: 2-60 ms here) makes
 * the next group larger, and the syncs fewer.  Workers may run this far
 * ahead of the files printed, which bounds the open outputs, so that they
 * go on signing while the main thread waits for a sync.
 */
#define GROUP       32
#define GROUP_MAX   128
#define AHEAD(jobs) (GROUP_MAX + GROUP + 2 * (jobs))

/* One file of a batch: what it printed and its output, kept until the files before it are done. */
struct item {
	char *out, *err;
	size_t out_len, err_len;
	int rc; /* exit code; -1 when its messages were lost (out of memory) */
	/* Complete and prepared, to commit; neither if none. */
	struct cli_batch_output output;
	int done;
};

static int has_output(const struct cli_batch_output *o)
{
	return o->lib != NULL || o->agent != NULL;
}

static void output_abort(struct cli_batch_output *o)
{
	p11s_output_abort(o->lib);
	p11i_out_abort(o->agent);
	o->lib = NULL;
	o->agent = NULL;
}

/* Drop what a file printed: it failed after all, or its messages were lost. */
static void item_forget(struct item *it)
{
	free(it->out);
	free(it->err);
	it->out = it->err = NULL;
	it->out_len = it->err_len = 0;
}

struct run {
	struct cli *cli;
	char **files;
	int nfiles;
	cli_batch_one one;
	void *arg;
	struct item *items;
	pthread_mutex_t lock;
	/*
	 * Signalled only when someone waits: on this VM a futex call costs as
	 * much as a small mail's parsing, and one per file per thread showed.
	 */
	pthread_cond_t done_cond;   /* files are done; the main thread waits for them */
	pthread_cond_t window_cond; /* files were printed; workers wait to go on */
	int main_waiting;
	int workers_waiting;
	int next;    /* the next file to take */
	int done;    /* the files before this one are done */
	int want;    /* the main thread waits until the file at this index is done */
	int printed; /* the files before this one are printed */
	int ahead;   /* AHEAD(jobs) */
};

struct worker {
	struct run *run;
	struct cli cli; /* the run's, with its own error and buffers */
	pthread_t tid;
	int started;
	/*
	 * What a file prints goes here, then into its item when there is
	 * any: two streams a worker rather than two a file (opening and
	 * closing them was 6% of the instructions of a small mail).
	 */
	FILE *out, *err;
	char *obuf, *ebuf;
	size_t olen, elen;
	int agent_fd; /* its connection to the agent, kept from file to file; -1: none */
};

/* A worker is done: its buffers, and its connection to the agent. */
static void worker_close(struct worker *w)
{
	if (w->out != NULL)
		fclose(w->out);
	if (w->err != NULL)
		fclose(w->err);
	free(w->obuf);
	free(w->ebuf);
	w->out = w->err = NULL;
	w->obuf = w->ebuf = NULL;
	agent_conn_close(w->agent_fd);
	w->agent_fd = -1;
}

/* A copy of the @p len bytes the stream holds in @p buf into *@p to (NULL when none); -1 if out of
 * memory. */
static int keep(const char *buf, size_t len, char **to, size_t *to_len)
{
	*to = NULL;
	*to_len = 0;
	if (len == 0)
		return 0;
	*to = malloc(len);
	if (*to == NULL)
		return -1;
	memcpy(*to, buf, len);
	*to_len = len;
	return 0;
}

/* Run @p one for file @p i with its messages kept; prepare its output for the group. */
static void handle(struct worker *w, int i)
{
	struct run *r = w->run;
	struct item *it = &r->items[i];
	const char *file = r->files[i];
	struct cli_batch_output output = {NULL, NULL};
	FILE *err;
	p11s_rc prc;
	int rc;

	if (w->out == NULL)
		w->out = open_memstream(&w->obuf, &w->olen);
	if (w->err == NULL)
		w->err = open_memstream(&w->ebuf, &w->elen);
	/* Each file's messages from the start of the streams (a flush then gives their length). */
	if (w->out == NULL || w->err == NULL || fseeko(w->out, 0, SEEK_SET) != 0 ||
	    fseeko(w->err, 0, SEEK_SET) != 0) {
		item_forget(it);
		rc = -1; /* said when it is printed */
	} else {
		w->cli.outf = w->out;
		w->cli.errf = w->err;
		rc = r->one(&w->cli, r->arg, file, &output);
		w->cli.outf = w->cli.errf = NULL;
		if (fflush(w->out) != 0 || fflush(w->err) != 0 ||
		    keep(w->obuf, w->olen, &it->out, &it->out_len) != 0 ||
		    keep(w->ebuf, w->elen, &it->err, &it->err_len) != 0) {
			item_forget(it);
			rc = -1;
		}
	}
	if (output.lib != NULL && rc == 0) {
		/* Written out here, in the worker; synced and linked in with its group. */
		prc = p11s_output_prepare(output.lib, w->cli.err);
		if (prc != P11S_OK) {
			output_abort(&output);
			/* What it printed was its report: it failed after all. */
			item_forget(it);
			err = open_memstream(&it->err, &it->err_len);
			w->cli.errf = err;
			rc = err != NULL ? cli_fail_file(&w->cli, file, prc) : -1;
			w->cli.errf = NULL;
			if (err != NULL && fclose(err) != 0)
				rc = -1;
		}
	} else if (rc != 0) {
		/* The agent's client prepared its own: it is dropped as any other. */
		output_abort(&output);
	}
	pthread_mutex_lock(&r->lock);
	it->rc = rc;
	it->output = output;
	it->done = 1;
	while (r->done < r->nfiles && r->items[r->done].done)
		r->done++;
	if (r->main_waiting && r->done > r->want)
		pthread_cond_signal(&r->done_cond);
	pthread_mutex_unlock(&r->lock);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	int i;

	for (;;) {
		pthread_mutex_lock(&r->lock);
		while (r->next < r->nfiles && r->next >= r->printed + r->ahead) {
			r->workers_waiting++;
			pthread_cond_wait(&r->window_cond, &r->lock);
			r->workers_waiting--;
		}
		i = r->next < r->nfiles ? r->next++ : -1;
		pthread_mutex_unlock(&r->lock);
		if (i < 0) {
			worker_close(w);
			return NULL;
		}
		handle(w, i);
	}
}

/* Print what file @p i printed, as it would have one file at a time; its exit code. */
static int print_item(struct run *r, int i)
{
	struct item *it = &r->items[i];
	int rc = it->rc;

	if (rc < 0) {
		fprintf(stderr, "p11smime: %s: out of memory: its result is unknown\n",
		        cli_safe(r->files[i]));
		rc = 4;
	}
	if (it->err_len > 0)
		fwrite(it->err, 1, it->err_len, stderr);
	if (it->out_len > 0)
		fwrite(it->out, 1, it->out_len, stdout);
	fflush(stderr);
	fflush(stdout);
	item_forget(it);
	return rc;
}

/*
 * Commit the outputs of files @p from .. @p to - 1 (those that have one)
 * with one sync, and print each file; the highest exit code.
 */
static int commit_group(struct run *r, int from, int to)
{
	p11s_output *outs[GROUP_MAX];
	struct p11i_out *aouts[GROUP_MAX];
	int n = 0, an = 0, worst = 0, rc;
	p11s_rc crc;
	char *why = NULL;

	for (int i = from; i < to; i++) {
		if (r->items[i].output.lib != NULL)
			outs[n++] = r->items[i].output.lib;
		else if (r->items[i].output.agent != NULL)
			aouts[an++] = r->items[i].output.agent;
	}
	/* On failure each commit below syncs its own file, and says whose failed. */
	if (n > 1 && p11s_output_sync_group(outs, (size_t)n, r->cli->err) != P11S_OK)
		p11s_error_clear(r->cli->err);
	if (an > 1 && p11i_out_sync_group(aouts, (size_t)an, &why) != P11S_OK) {
		free(why);
		why = NULL;
	}
	for (int i = from; i < to; i++) {
		struct item *it = &r->items[i];

		if (it->output.lib != NULL) {
			crc = p11s_output_commit(it->output.lib, r->cli->err);
			it->output.lib = NULL;
			if (crc != P11S_OK) {
				item_forget(it);
				fflush(stdout);
				it->rc = cli_fail_file(r->cli, r->files[i], crc);
			}
		} else if (it->output.agent != NULL) {
			crc = p11i_out_commit(it->output.agent, &why);
			it->output.agent = NULL;
			if (crc != P11S_OK) {
				/* As the agent's client says it when it commits one file itself. */
				item_forget(it);
				fflush(stdout);
				fprintf(stderr, "p11smime: %s: %s\n", cli_safe(r->files[i]),
				        why != NULL ? why : "out of memory");
				free(why);
				why = NULL;
				it->rc = p11s_rc_exit_code(crc);
			}
		}
		rc = print_item(r, i);
		worst = rc > worst ? rc : worst;
	}
	pthread_mutex_lock(&r->lock);
	r->printed = to;
	if (r->workers_waiting)
		pthread_cond_broadcast(&r->window_cond);
	pthread_mutex_unlock(&r->lock);
	return worst;
}

int cli_batch_run(struct cli *cli, char **files, int nfiles, int jobs, cli_batch_one one, void *arg)
{
	struct run r = {.cli = cli,
	                .files = files,
	                .nfiles = nfiles,
	                .one = one,
	                .arg = arg,
	                .lock = PTHREAD_MUTEX_INITIALIZER,
	                .done_cond = PTHREAD_COND_INITIALIZER,
	                .window_cond = PTHREAD_COND_INITIALIZER};
	struct worker *w;
	int worst = 0, from = 0, outputs = 0, started = 0, rc;

	if (jobs < 1)
		jobs = cli_batch_default_jobs(); /* asked only here: it reads /sys */
	if (jobs > nfiles)
		jobs = nfiles;
	r.ahead = AHEAD(jobs);
	r.items = calloc((size_t)nfiles, sizeof(*r.items));
	w = calloc((size_t)jobs, sizeof(*w));
	if (r.items == NULL || w == NULL) {
		free(r.items);
		free(w);
		fprintf(stderr, "p11smime: out of memory\n");
		return 4;
	}
	/*
	 * @p jobs threads sign; this one commits and prints, so that the
	 * workers go on while it waits for a group's sync.  Each worker has
	 * its own error; the run's is this thread's.
	 */
	for (int j = 0; j < jobs; j++) {
		w[j].run = &r;
		w[j].cli = *cli;
		w[j].agent_fd = -1;
		w[j].cli.agent_fd = &w[j].agent_fd;
		w[j].cli.err = p11s_error_new();
		if (w[j].cli.err == NULL || pthread_create(&w[j].tid, NULL, work, &w[j]) != 0) {
			p11s_error_free(w[j].cli.err);
			w[j].cli.err = cli->err;
			break; /* fewer workers, still correct */
		}
		w[j].started = 1;
		started++;
	}
	/*
	 * Print (and commit) the files in their order, a group at a time.
	 * Without a worker (none could start) this thread signs too: while
	 * the next file is not done, it works on one more rather than wait.
	 */
	for (int i = 0; i < nfiles; i++) {
		int done;

		pthread_mutex_lock(&r.lock);
		while (!r.items[i].done) {
			if (started == 0 && r.next < nfiles && r.next < r.printed + r.ahead) {
				int mine = r.next++;

				pthread_mutex_unlock(&r.lock);
				handle(&w[0], mine);
				pthread_mutex_lock(&r.lock);
				continue;
			}
			/* Woken once for the rest of the group, not for each file. */
			r.want = from + GROUP < nfiles ? from + GROUP - 1 : nfiles - 1;
			if (r.want < i)
				r.want = i;
			r.main_waiting = 1;
			pthread_cond_wait(&r.done_cond, &r.lock);
			r.main_waiting = 0;
		}
		done = r.done;
		pthread_mutex_unlock(&r.lock);
		outputs += has_output(&r.items[i].output);
		/*
		 * A group ends when it is full (GROUP, or GROUP_MAX while the
		 * next file is done too), at the last file, or at a file without
		 * output (a failure, whose message must not wait).
		 */
		if (outputs == GROUP_MAX || (outputs >= GROUP && done <= i + 1) ||
		    i == nfiles - 1 || !has_output(&r.items[i].output)) {
			rc = commit_group(&r, from, i + 1);
			worst = rc > worst ? rc : worst;
			from = i + 1;
			outputs = 0;
		}
	}
	for (int j = 0; j < jobs; j++) {
		if (!w[j].started)
			continue;
		pthread_join(w[j].tid, NULL);
		p11s_error_free(w[j].cli.err);
	}
	if (started == 0)
		worker_close(&w[0]);
	free(r.items);
	free(w);
	return worst;
}
