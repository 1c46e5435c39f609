#include "cli.h"

/* Placeholder until the sign command lands; it refuses rather than pretends. */
int cmd_sign(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	return cli_usage_error("sign", "not implemented yet");
}
