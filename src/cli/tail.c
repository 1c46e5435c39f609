/*
 * The tail every message command shares: the operation's result explained
 * by the output, the output committed or discarded, and the --json report
 * placed by one policy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_stdout_is_message(const char *out_path)
{
	return out_path == NULL || strcmp(out_path, "-") == 0;
}

int cli_finish(struct cli *cli, p11s_output **out, p11s_rc rc)
{
	if (rc != P11S_OK)
		rc = p11s_output_explain(*out, rc, cli->err);
	if (rc == P11S_OK && *out != NULL)
		rc = p11s_output_commit(*out, cli->err);
	else
		p11s_output_abort(*out);
	*out = NULL;
	return rc == P11S_OK ? 0 : cli_fail(cli, rc);
}

void cli_report(char *doc, int message_on_stdout)
{
	FILE *fp = message_on_stdout ? stderr : stdout;

	if (doc == NULL) {
		fprintf(stderr, "p11smime: out of memory: no report\n");
		return;
	}
	fputs(doc, fp);
	fputc('\n', fp);
	fflush(fp);
	free(doc);
}
