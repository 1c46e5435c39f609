#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "p11.h"
#include "p11smime/io.h"

p11s_rc p11s_pin_source_check(const char *spec, p11s_error *err)
{
	return p11s_secret_source_check(spec, P11S_SECRET_PIN, err);
}

p11s_rc p11s_ctx_set_pin_source(p11s_ctx *ctx, const char *spec, p11s_error *err)
{
	p11s_rc rc;
	char *copy = NULL;

	if (spec != NULL) {
		rc = p11s_pin_source_check(spec, err);
		if (rc != P11S_OK)
			return rc;
		copy = strdup(spec);
		if (copy == NULL)
			return p11i_err_nomem(err);
	}
	p11i_ctx_lock(ctx);
	free(ctx->pin_source);
	ctx->pin_source = copy;
	/* A PIN read from the old source belongs to it. */
	p11i_locked_free(ctx->source_pin);
	ctx->source_pin = NULL;
	p11i_ctx_unlock(ctx);
	return P11S_OK;
}
