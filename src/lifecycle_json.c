/*
 * JSON for keygen, import and delete (docs/man/p11smime-keygen.1 and the
 * others describe the members).
 */
#include <stdlib.h>

#include <jansson.h>

#include "common.h"
#include "p11smime/lifecycle.h"

static json_t *jstr(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

static char *dump(json_t *doc)
{
	char *s = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;

	json_decref(doc);
	return s;
}

char *p11s_keygen_result_json(const p11s_keygen_result *r)
{
	return dump(json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "token", jstr(r->token_uri),
	                      "private_key", jstr(r->private_uri), "public_key",
	                      jstr(r->public_uri), "id", jstr(r->id), "label", jstr(r->label),
	                      "type", jstr(r->type), "mechanism", jstr(r->mechanism)));
}

char *p11s_import_result_json(const p11s_import_result *r)
{
	json_t *chain = json_array();

	for (size_t i = 0; chain != NULL && i < r->chain_count; i++)
		json_array_append_new(chain, json_string(r->chain_uris[i]));
	return dump(json_pack("{s:o, s:b, s:o, s:o, s:b, s:o, s:o, s:o}", "certificate",
	                      jstr(r->cert_uri), "already_present", r->already, "private_key",
	                      jstr(r->key_uri), "public_key", jstr(r->public_uri), "key_written",
	                      r->key_written, "key_local",
	                      r->key_written ? json_false() : json_null(), "chain",
	                      chain ? chain : json_null(), "subject", jstr(r->subject)));
}

char *p11s_delete_plan_json(const p11s_delete_plan *p, int deleted)
{
	json_t *objs = json_array();

	for (size_t i = 0; objs != NULL && i < p11s_delete_plan_count(p); i++)
		json_array_append_new(
		    objs, json_pack("{s:s, s:s}", "uri", p11s_delete_plan_uri(p, i), "class",
		                    p11s_object_class_name(p11s_delete_plan_class(p, i))));
	return dump(
	    json_pack("{s:b, s:o}", "deleted", deleted, "objects", objs ? objs : json_null()));
}
