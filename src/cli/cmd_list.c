#include "cli.h"

/* Placeholder until the list command lands; it refuses rather than pretends. */
int cmd_list(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	return cli_usage_error("list", "not implemented yet");
}
