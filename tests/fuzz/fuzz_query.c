/* libFuzzer target: the IoT Hub query language (src/codec/query.c). The
 * input is a query text. Invariants checked: a refusal names a position
 * within the text (or just past it) and a message; an accepted query keeps
 * every bound (items, TOP, segments, nodes) and every node's position lies
 * within the text; evaluating it over a document (core/query_eval.c)
 * neither crashes nor leaks; its plan (codec/query_plan.c) keeps its bounds
 * and, rendered in SQLite's dialect (store/sqlite_query.c), always
 * prepares against the twins table and selects the document's row whenever
 * query_matches accepts the document (the plan is a necessary condition),
 * its sufficient condition holds for the row only when query_matches
 * accepts it, and an aggregable plan's statement prepares. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "codec/query.h"
#include "codec/query_plan.h"
#include "core/query_eval.h"
#include "store/sqlite_query.h"

static const char DOC[] =
    "{\"deviceId\":\"d\",\"tags\":{\"a\":1,\"s\":\"Str\",\"n\":null,\"o\":{\"x\":[1]}},"
    "\"properties\":{\"reported\":{\"t\":2.5,\"b\":true}}}";

/* DOC's twin as a row of the twins table, in an in-memory database. */
static sqlite3 *twins_db(void)
{
	static sqlite3 *db;
	if (db)
		return db;
	if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
	    sqlite3_exec(db,
			 "CREATE TABLE twins (id TEXT, tags TEXT, desired TEXT, reported TEXT, hub TEXT);"
			 "INSERT INTO twins VALUES ('d', '{\"a\":1,\"s\":\"Str\",\"n\":null,"
			 "\"o\":{\"x\":[1]}}', '{}', '{\"t\":2.5,\"b\":true}', 'h')",
			 NULL, NULL, NULL) != SQLITE_OK)
		abort();
	return db;
}

/* The single integer sql yields over the twins table (aborts on an
 * error: whatever the query, what is rendered must prepare and run). */
static int sql_int(const struct buf *sql)
{
	sqlite3_stmt *st;
	if (strlen(sql->data) != sql->len ||
	    sqlite3_prepare_v2(twins_db(), sql->data, -1, &st, NULL) != SQLITE_OK)
		abort();
	sqlite3_bind_text(st, 1, "h", -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		abort();
	int v = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	return v;
}

/* Checks q's plan and whether its SQL selects DOC's row when it must. */
static void check_plan(const struct query *q, bool matches)
{
	struct query_plan plan;
	query_plan_build(q, &plan);
	if (plan.nterms > QUERY_PLAN_MAX_TERMS)
		abort();
	for (size_t i = 0; i < plan.nterms; i++)
		if (plan.terms[i].nvalues == 0 || plan.terms[i].nvalues > QUERY_PLAN_MAX_IN)
			abort();
	struct buf sql = BUF_INIT;
	buf_appends(&sql, "SELECT count(*) FROM twins t WHERE ");
	sqlite_query_where(&plan, &sql);
	if (sql_int(&sql) != 1 && !plan.empty && matches)
		abort();
	buf_reset(&sql);
	buf_appends(&sql, "SELECT count(*) FROM twins t WHERE ");
	sqlite_query_sure(&plan, &sql);
	if (sql_int(&sql) == 1 && !plan.empty && !matches)
		abort();
	buf_reset(&sql);
	if (sqlite_query_aggregate(&plan, &sql))
		sql_int(&sql);
	buf_free(&sql);
}

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
	check_plan(&q, query_matches(q.where, doc));
	for (size_t i = 0; i < q.nitems; i++)
		if (q.items[i].expr)
			json_decref(query_value(q.items[i].expr, doc));
	json_decref(doc);
	query_free(&q);
	return 0;
}
