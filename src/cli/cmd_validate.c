#include "cli.h"

/* Placeholder until the validate command lands; it refuses rather than pretends. */
int cmd_validate(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	return cli_usage_error("validate", "not implemented yet");
}
