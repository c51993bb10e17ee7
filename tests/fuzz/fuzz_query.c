/* libFuzzer target: the IoT Hub query language (src/codec/query.c). The
 * input is a query text. Invariants checked: a refusal names a position
 * within the text (or just past it) and a message; an accepted query keeps
 * every bound (items, TOP, segments, nodes) and every node's position lies
 * within the text; evaluating it over a document (core/query_eval.c)
 * neither crashes nor leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/query.h"
#include "core/query_eval.h"

static const char DOC[] =
    "{\"deviceId\":\"d\",\"tags\":{\"a\":1,\"s\":\"Str\",\"n\":null,\"o\":{\"x\":[1]}},"
    "\"properties\":{\"reported\":{\"t\":2.5,\"b\":true}}}";

static size_t walk(const struct query_node *n, size_t size, unsigned depth)
{
	if (!n)
		return 0;
	if (n->pos > size || depth > QUERY_MAX_NODES) /* chains of a + b + ... are deep */
		abort();
	if (n->kind == QN_PATH) {
		if (n->nseg == 0 || n->nseg > QUERY_MAX_SEGMENTS)
			abort();
		for (size_t i = 0; i < n->nseg; i++)
			if (n->seg[i].len == 0 || strlen(n->seg[i].name) != n->seg[i].len)
				abort();
	}
	if (n->kind == QN_STRING && strlen(n->str) != n->len)
		abort();
	size_t count = 1 + walk(n->a, size, depth + 1) + walk(n->b, size, depth + 1);
	for (size_t i = 0; i < n->nargs; i++)
		count += walk(n->args[i], size, depth + 1);
	return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct query q;
	struct query_error err;
	if (query_parse((const char *)data, size, &q, &err) != 0) {
		if (err.pos > size || !err.message[0])
			abort();
		return 0;
	}
	if (q.nitems > QUERY_MAX_ITEMS || q.top > QUERY_MAX_TOP || (q.star && q.nitems))
		abort();
	size_t nodes = walk(q.where, size, 0) + walk(q.group_by, size, 0);
	for (size_t i = 0; i < q.nitems; i++)
		nodes += walk(q.items[i].expr, size, 0);
	if (nodes > QUERY_MAX_NODES)
		abort();
	json_t *doc = json_loads(DOC, 0, NULL);
	(void)query_matches(q.where, doc);
	for (size_t i = 0; i < q.nitems; i++)
		if (q.items[i].expr)
			json_decref(query_value(q.items[i].expr, doc));
	json_decref(doc);
	query_free(&q);
	return 0;
}
