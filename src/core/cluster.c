#include "core/cluster.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

static const char *const kind_names[] = {
	[CLUSTER_DEVICE] = "device",	 [CLUSTER_DESIRED] = "desired",
	[CLUSTER_CONNECTED] = "connected", [CLUSTER_GROUP] = "group",
	[CLUSTER_ENROLLMENT] = "enrollment", [CLUSTER_METHOD] = "method",
	[CLUSTER_METHOD_RESULT] = "methodResult", [CLUSTER_C2D] = "c2d",
};
#define NKINDS (sizeof kind_names / sizeof kind_names[0])

void cluster_msg_set(struct cluster_msg *m, enum cluster_kind kind, const char *scope,
		     const char *id, int change, int64_t n, const char *text)
{
	memset(m, 0, sizeof *m);
	m->kind = kind;
	snprintf(m->scope, sizeof m->scope, "%s", scope);
	snprintf(m->id, sizeof m->id, "%s", id);
	m->change = change;
	m->n = n;
	m->text = (char *)text;
}

bool cluster_node_live(const char *record, int64_t now_ms)
{
	json_t *o = json_loads(record, 0, NULL);
	json_int_t hb = json_integer_value(json_object_get(o, "heartbeatMs"));
	json_decref(o);
	return hb > 0 && now_ms - hb < CLUSTER_LEASE_MS;
}

char *cluster_encode(const struct cluster_msg *m)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:I}", "k", kind_names[m->kind], "node",
			      m->node, "scope", m->scope, "id", m->id, "c", m->change, "n",
			      (json_int_t)m->n);
	if (m->text)
		json_object_set_new(o, "text", json_string(m->text));
	if (m->to[0])
		json_object_set_new(o, "to", json_string(m->to));
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* Copies member name of o (a string of at most max bytes) into out. */
static int copy_str(const json_t *o, const char *name, char *out, size_t max)
{
	const json_t *v = json_object_get(o, name);
	if (!json_is_string(v) || json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return -1;
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

int cluster_decode(const char *text, struct cluster_msg *out)
{
	memset(out, 0, sizeof *out);
	json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
	const char *k = json_string_value(json_object_get(o, "k"));
	const json_t *c = json_object_get(o, "c"), *n = json_object_get(o, "n");
	const json_t *t = json_object_get(o, "text");
	int rc = -1;
	for (size_t i = 0; k && i < NKINDS; i++)
		if (strcmp(k, kind_names[i]) == 0) {
			out->kind = (enum cluster_kind)i;
			rc = 0;
		}
	if (rc == 0 && (copy_str(o, "node", out->node, CLUSTER_NODE_MAX) != 0 ||
			copy_str(o, "scope", out->scope, CLUSTER_SCOPE_MAX) != 0 ||
			copy_str(o, "id", out->id, CLUSTER_ID_MAX) != 0 ||
			(json_object_get(o, "to") && copy_str(o, "to", out->to, CLUSTER_NODE_MAX) != 0) ||
			!json_is_integer(c) ||
			json_integer_value(c) < INT_MIN || json_integer_value(c) > INT_MAX ||
			!json_is_integer(n) || (t && !json_is_string(t))))
		rc = -1;
	if (rc == 0) {
		out->change = (int)json_integer_value(c);
		out->n = json_integer_value(n);
		out->text = t ? xstrdup(json_string_value(t)) : NULL;
	}
	json_decref(o);
	return rc;
}

void cluster_msg_clear(struct cluster_msg *m)
{
	free(m->text);
	m->text = NULL;
}
