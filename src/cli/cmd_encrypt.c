#include "cli.h"

/* Placeholder until the encrypt command lands; it refuses rather than pretends. */
int cmd_encrypt(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	return cli_usage_error("encrypt", "not implemented yet");
}
