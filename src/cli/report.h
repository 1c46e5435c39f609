/*
 * Every report the CLI prints, written once: the JSON documents of --json
 * (docs/json-*.md and the man pages) and the validate text, built from the
 * library's result objects with jansson.  The library computes and never
 * renders; this module presents.  Private to the CLI (and its tests).
 *
 * Documents are malloc'd strings in the one layout of every --json
 * (two-space indent, members in a fixed order); the caller frees them.
 * NULL when out of memory: then nothing is printed rather than a document
 * with members missing.
 */
#ifndef P11I_CLI_REPORT_H
#define P11I_CLI_REPORT_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "p11smime/decrypt.h"
#include "p11smime/encrypt.h"
#include "p11smime/lifecycle.h"
#include "p11smime/rules.h"
#include "p11smime/sign.h"
#include "p11smime/token.h"
#include "p11smime/validate.h"
#include "p11smime/verify.h"

/* ---- building blocks (exposed for tests/unit/test_report.c) ---- */

/*
 * A JSON string for @p s, null for NULL.  Text from certificates and
 * tokens should be UTF-8 already; should it not be, each byte of 0x80 and
 * above becomes '?' rather than the member going missing.  Control bytes
 * and quotes are escaped by jansson.
 */
json_t *report_string(const char *s);
/* @p t as RFC 3339 in UTC ("2026-11-28T00:00:00Z"), p11s_time_format()'s form. */
json_t *report_time(time_t t);
/* true/false, or null when @p v < 0 (unknown). */
json_t *report_tristate(int v);
/*
 * The rules' verdict on a certificate in the documented shape
 * (docs/json-validate.md): "verdict", "ca", "usable_for_outgoing",
 * "in_validity", "checks" (each "rule", "result", "message",
 * "affects_verdict") and "warnings", set on @p o.  Members @p o already
 * has keep their place (validate's order), others are appended.  A NULL
 * @p v gives verdict null and empty lists.  0, or -1 out of memory.
 */
int report_verdict_set(json_t *o, const p11s_verdict *v);
/* The same members as a new object; null for a NULL @p v. */
json_t *report_verdict(const p11s_verdict *v);
/*
 * The rule checks of @p v, or with @p key_checks the key checks as
 * {"check", "result", "message"}.
 */
json_t *report_checks(const p11s_verdict *v, int key_checks);

/* ---- documents ---- */

char *report_tokens_json(const p11s_token_list *list);
char *report_objects_json(const p11s_object_list *list);
/* As report_objects_json() for the @p n objects of @p objs (a selection). */
char *report_objects_json_array(const p11s_object *const *objs, size_t n);
char *report_validation_json(const p11s_validation *r);
/* The validate report for people: one block per certificate and a summary line. */
char *report_validation_text(const p11s_validation *r);
char *report_verify_json(const p11s_verify_report *r);
char *report_decrypt_json(const p11s_decrypt_report *r);
char *report_signer_json(const p11s_signer *s);
/*
 * A report of one file of a batch (--out-dir): @p doc (taken) with "file"
 * (the input as given) and "output" (where it was written) first.  NULL
 * when out of memory.
 */
char *report_batch_json(char *doc, const char *file, const char *output);
char *report_encrypt_json(const p11s_recipients *r, const p11s_encrypt_opts *opts);
char *report_keygen_json(const p11s_keygen_result *r);
char *report_import_json(const p11s_import_result *r);
char *report_delete_json(const p11s_delete_plan *p, int deleted);

#endif
