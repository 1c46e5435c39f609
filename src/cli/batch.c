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
