/*
 * p11smime: the user's config file, so that mail-client hooks stay short.
 *
 * $XDG_CONFIG_HOME/p11smime/config (default ~/.config/p11smime/config):
 * one "option = value" a line; blank lines and lines starting with '#'
 * are ignored.  Options: module, pin-source, signer, cipher, digest.
 *
 * Threads: a p11s_config belongs to one thread at a time; reading the file
 * touches no shared state.
 */
#ifndef P11SMIME_CONFIG_H
#define P11SMIME_CONFIG_H

#include "p11smime/result.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The settings read from one config file. */
typedef struct p11s_config p11s_config;

/**
 * The config file's path: $XDG_CONFIG_HOME/p11smime/config when that is
 * set to an absolute path, else $HOME/.config/p11smime/config; NULL when
 * neither is known or on ENOMEM.  Caller frees.
 */
char *p11s_config_default_path(void);

/**
 * Read @p path.  A missing file gives an empty config when @p missing_ok.
 * A malformed line, an unknown or repeated option, or a bad value (cipher,
 * digest, pin-source are checked here) is P11S_E_USAGE with a message
 * "PATH:LINE: ..."; an unreadable file P11S_E_IO.
 */
p11s_rc p11s_config_load(const char *path, int missing_ok, p11s_config **out, p11s_error *err);

/** The value of @p option ("module", ...) or NULL when not set; owned by @p c. */
const char *p11s_config_get(const p11s_config *c, const char *option);

/** NULL is fine. */
void p11s_config_free(p11s_config *c);

#ifdef __cplusplus
}
#endif
#endif
