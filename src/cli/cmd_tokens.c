#include "cli.h"

/* Placeholder until the tokens command lands; it refuses rather than pretends. */
int cmd_tokens(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	return cli_usage_error("tokens", "not implemented yet");
}
