#include "cli.h"

/* Placeholder until the decrypt command lands; it refuses rather than pretends. */
int cmd_decrypt(struct cli *cli, int argc, char **argv)
{
	(void)cli;
	(void)argc;
	(void)argv;
	return cli_usage_error("decrypt", "not implemented yet");
}
