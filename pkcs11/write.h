/*
 * Private to pkcs11/: what keygen.c and write.c share for changing a token.
 */
#ifndef P11I_WRITE_H
#define P11I_WRITE_H

#include "p11.h"

/*
 * A read-write session on @p t, opened after p11i_login() (the login state
 * is the token's, so it covers this session too).  A write-protected token
 * is refused here, saying so.  Close it with C_CloseSession.
 */
p11s_rc p11i_rw_session(p11s_ctx *ctx, const p11s_token *t, CK_SESSION_HANDLE *out,
                        p11s_error *err);

/* How many objects match @p tmpl (at most 2 are counted); -1 when the search fails. */
int p11i_count_objects(p11s_ctx *ctx, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n);

/* P11S_E_USAGE when an object on the token has CKA_ID @p id or CKA_LABEL @p label. */
p11s_rc p11i_check_unused(p11s_ctx *ctx, const p11s_token *t, CK_SESSION_HANDLE s,
                          const unsigned char *id, size_t id_len, const char *label,
                          p11s_error *err);

/* The smallest one-byte CKA_ID (01, 02, ...) that no object on the token has. */
p11s_rc p11i_pick_id(p11s_ctx *ctx, CK_SESSION_HANDLE s, unsigned char *id, size_t *id_len,
                     p11s_error *err);

/* The URI naming the object of @p cls with @p id and @p label on @p t; malloc'd. */
char *p11i_new_object_uri(const p11s_token *t, p11s_object_class cls, const unsigned char *id,
                          size_t id_len, const char *label);

/* Hex (case-insensitive, optional ':' between bytes) into @p out (room for @p cap bytes). */
p11s_rc p11i_hex_parse(const char *hex, unsigned char *out, size_t cap, size_t *len,
                       p11s_error *err);

#endif
