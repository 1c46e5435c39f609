#include "cli.h"

/* Placeholder until the verify command lands; it refuses rather than pretends. */
int cmd_verify(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	return cli_usage_error("verify", "not implemented yet");
}
