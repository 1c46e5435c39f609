/*
 * The options of sign and decrypt, one table each: parsed by the commands
 * (src/cli/cmd_sign.c, cmd_decrypt.c) and by the thin front end
 * (src/front/thin.c), which must take exactly the same ones.
 */
#ifndef P11I_CLI_OPTS_H
#define P11I_CLI_OPTS_H

#include <getopt.h>

/* Global options, before the command. */
#define P11I_GLOBAL_SHORT "+vh"
static const struct option p11i_global_opts[] __attribute__((unused)) = {
    {"module", required_argument, NULL, 'm'},    {"pin-source", required_argument, NULL, 'p'},
    {"allow-final-try", no_argument, NULL, 'F'}, {"json", no_argument, NULL, 'j'},
    {"verbose", no_argument, NULL, 'v'},         {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},         {NULL, 0, NULL, 0},
};

#define P11I_SIGN_SHORT "i:o:h"
static const struct option p11i_sign_opts[] __attribute__((unused)) = {
    {"signer", required_argument, NULL, 's'},
    {"chain", required_argument, NULL, 'c'},
    {"digest", required_argument, NULL, 'd'},
    {"pss", no_argument, NULL, 'P'},
    {"opaque", no_argument, NULL, 'O'},
    {"at", required_argument, NULL, 'a'},
    {"in", required_argument, NULL, 'i'},
    {"out", required_argument, NULL, 'o'},
    {"help", no_argument, NULL, 'h'},
    {"detached-signature", no_argument, NULL, 'D'},
    {"outform", required_argument, NULL, 'f'},
    {"out-dir", required_argument, NULL, 'R'},
    {"no-agent", no_argument, NULL, 'N'},
    {"jobs", required_argument, NULL, 'J'},
    {NULL, 0, NULL, 0},
};

#define P11I_DECRYPT_SHORT "i:o:h"
static const struct option p11i_decrypt_opts[] __attribute__((unused)) = {
    {"key", required_argument, NULL, 'k'},     {"at", required_argument, NULL, 'a'},
    {"inform", required_argument, NULL, 'f'},  {"keep-line-ends", no_argument, NULL, 'L'},
    {"entity", no_argument, NULL, 'E'},        {"in", required_argument, NULL, 'i'},
    {"out", required_argument, NULL, 'o'},     {"help", no_argument, NULL, 'h'},
    {"out-dir", required_argument, NULL, 'R'}, {"no-agent", no_argument, NULL, 'N'},
    {"jobs", required_argument, NULL, 'J'},    {NULL, 0, NULL, 0},
};

#endif
