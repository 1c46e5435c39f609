/*
 * The other hand-written parsers of text a user or a certificate supplies:
 * RFC 5321 mailboxes (rfc822Names, --signer, --recipient), distinguished
 * names (csr --subject, both forms) and the user's config file.
 */
#include "fuzz.h"

#include <sys/mman.h>
#include <unistd.h>

#include "mailbox.h"
#include "p11smime/config.h"
#include "p11smime/lifecycle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_str(data, size);
	p11s_error *err = p11s_error_new();
	X509_NAME *name = NULL;
	p11s_config *cfg = NULL;
	char why[128], path[64];
	int fd;

	/* Bytes as they are (NULs included), then as the C string a caller passes. */
	p11i_mailbox_parse((const char *)data, size, why, sizeof(why));
	p11i_mailbox_parse(s, strlen(s), why, sizeof(why));
	p11i_mailbox_parse(s, strlen(s), why, 1);
	if (p11s_dn_parse(s, &name, err) == P11S_OK)
		X509_NAME_free(name);
	p11s_error_clear(err);
	fd = memfd_create("config", 0);
	if (fd >= 0) {
		if (write(fd, data, size) == (ssize_t)size) {
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
			if (p11s_config_load(path, 0, &cfg, err) == P11S_OK) {
				p11s_config_get(cfg, "module");
				p11s_config_get(cfg, "signer");
				p11s_config_free(cfg);
			}
		}
		close(fd);
	}
	ERR_clear_error();
	p11s_error_free(err);
	free(s);
	return 0;
}
