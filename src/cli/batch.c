/*
 * sign and decrypt --out-dir: many files, one login.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

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

int cli_batch_check(const char *command, const char *dir, char **files, int nfiles)
{
	struct stat st;

	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return cli_usage_error(command, "--out-dir '%s' is not a directory", cli_safe(dir));
	for (int i = 0; i < nfiles; i++) {
		const char *name = last_component(files[i]);

		if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			return cli_usage_error(command, "'%s' does not name a file",
			                       cli_safe(files[i]));
		for (int j = 0; j < i; j++)
			if (strcmp(name, last_component(files[j])) == 0)
				return cli_usage_error(command,
				                       "'%s' and '%s' would both be written to "
				                       "'%s/%s'",
				                       cli_safe(files[j]), cli_safe(files[i]),
				                       cli_safe(dir), cli_safe(name));
	}
	return 0;
}

int cli_fail_file(struct cli *cli, const char *file, p11s_rc rc)
{
	const char *msg = p11s_error_message(cli->err);
	size_t n = p11s_error_candidate_count(cli->err);

	fprintf(stderr, "p11smime: %s: %s\n", cli_safe(file), *msg ? msg : p11s_rc_name(rc));
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "  %s\n", p11s_error_candidate(cli->err, i));
	p11s_error_clear(cli->err);
	return p11s_rc_exit_code(rc);
}

int cli_batch_flush(struct cli *cli, struct cli_batch_group *g)
{
	int worst = 0;

	for (int i = 0; i < g->n; i++) {
		p11s_rc rc = p11s_output_commit(g->out[i], cli->err);

		if (rc != P11S_OK) {
			int r = cli_fail_file(cli, g->file[i], rc);

			worst = r > worst ? r : worst;
		} else {
			if (g->notes[i] != NULL)
				fputs(g->notes[i], stderr);
			if (g->json[i] != NULL)
				printf("%s\n", g->json[i]);
		}
		free(g->notes[i]);
		free(g->json[i]);
	}
	g->n = 0;
	return worst;
}

int cli_batch_add(struct cli *cli, struct cli_batch_group *g, p11s_output *out, const char *file,
                  char *json, char *notes)
{
	p11s_rc rc = p11s_output_prepare(out, cli->err);

	if (rc != P11S_OK) {
		p11s_output_abort(out);
		free(json);
		free(notes);
		return cli_fail_file(cli, file, rc);
	}
	g->out[g->n] = out;
	g->file[g->n] = file;
	g->json[g->n] = json;
	g->notes[g->n] = notes;
	if (++g->n < CLI_BATCH_GROUP)
		return 0;
	return cli_batch_flush(cli, g);
}
