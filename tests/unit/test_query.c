/* Unit tests for src/codec/query.c: the IoT Hub query language parsed.
 * The grammar's every construct, precedence, constants and escapes, the
 * rules beyond the grammar (aggregates, GROUP BY, devices.jobs), each
 * bound, and errors that name their position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "codec/query.h"

static int parse(const char *text, struct query *q, struct query_error *err)
{
	return query_parse(text, strlen(text), q, err);
}

static void ok(const char *text, struct query *q)
{
	struct query_error err;
	if (parse(text, q, &err) != 0)
		fail_msg("%s: %s", text, err.message);
}

static int mismatches;

/* text must be refused at pos with a message holding want; every mismatch
 * is printed, and the test fails at its end (test_errors). */
static void bad(const char *text, size_t pos, const char *want)
{
	struct query q;
	struct query_error err;
	if (parse(text, &q, &err) == 0) {
		query_free(&q);
		print_error("%s: accepted\n", text);
		mismatches++;
		return;
	}
	if (err.pos != pos || !strstr(err.message, want)) {
		print_error("%s: got \"%s\" at %zu, want \"%s\" at %zu\n", text, err.message,
			    err.pos, want, pos);
		mismatches++;
	}
}

static bool path_is(const struct query_node *n, const char *dotted)
{
	char buf[256] = "";
	if (!n || n->kind != QN_PATH)
		return false;
	for (size_t i = 0; i < n->nseg; i++)
		snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? "." : "",
			 n->seg[i].name);
	return strcmp(buf, dotted) == 0;
}

static void test_select_forms(void **state)
{
	struct query q;
	ok("SELECT * FROM devices", &q);
	assert_true(q.star);
	assert_int_equal(q.from, QFROM_DEVICES);
	assert_null(q.where);
	query_free(&q);

	ok("select top 5 deviceId, properties.reported.fw AS firmware from DEVICES", &q);
	assert_int_equal(q.top, 5);
	assert_int_equal(q.nitems, 2);
	assert_true(path_is(q.items[0].expr, "deviceId"));
	assert_null(q.items[0].alias);
	assert_true(path_is(q.items[1].expr, "properties.reported.fw"));
	assert_string_equal(q.items[1].alias, "firmware");
	query_free(&q);

	ok("SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS n "
	   "FROM devices GROUP BY properties.reported.telemetryConfig.status",
	   &q);
	assert_true(q.aggregates);
	assert_int_equal(q.items[1].agg, QA_COUNT);
	assert_null(q.items[1].expr);
	assert_true(path_is(q.group_by, "properties.reported.telemetryConfig.status"));
	query_free(&q);

	ok("SELECT COUNT() AS total, AVG(properties.reported.temp) AS t, MIN(x) AS lo, MAX(x), "
	   "SUM(x) FROM devices WHERE tags.plant = 'Redmond43'",
	   &q);
	assert_int_equal(q.nitems, 5);
	assert_int_equal(q.items[1].agg, QA_AVG);
	assert_int_equal(q.items[4].agg, QA_SUM);
	query_free(&q);

	ok("SELECT * FROM devices.modules WHERE moduleId = 'm1'", &q);
	assert_int_equal(q.from, QFROM_MODULES);
	query_free(&q);
	ok("SELECT * FROM devices.jobs", &q);
	assert_int_equal(q.from, QFROM_JOBS);
	assert_string_equal(q.from_name, "devices.jobs");
	query_free(&q);
	/* other sources are named for their API to check (the DPS's) */
	ok("SELECT * FROM enrollmentGroups WHERE provisioningStatus = 'enabled'", &q);
	assert_int_equal(q.from, QFROM_OTHER);
	assert_string_equal(q.from_name, "enrollmentGroups");
	query_free(&q);
	/* a path may be named like an aggregate when no '(' follows */
	ok("SELECT count FROM devices WHERE tags.count > 1", &q);
	assert_true(path_is(q.items[0].expr, "count"));
	query_free(&q);
}

static void test_conditions(void **state)
{
	struct query q;
	/* OR binds looser than AND, AND looser than NOT and comparisons */
	ok("SELECT * FROM devices WHERE a = 1 OR b = 2 AND NOT c = 3", &q);
	const struct query_node *w = q.where;
	assert_int_equal(w->kind, QN_BINARY);
	assert_int_equal(w->op, QO_OR);
	assert_int_equal(w->b->op, QO_AND);
	assert_int_equal(w->b->b->kind, QN_NOT);
	assert_int_equal(w->b->b->a->op, QO_EQ);
	query_free(&q);

	/* arithmetic: * before +, parentheses, unary minus */
	ok("SELECT * FROM devices WHERE (p.a + 2 * p.b) % 3 <> -1", &q);
	w = q.where;
	assert_int_equal(w->op, QO_NE);
	assert_int_equal(w->a->op, QO_MOD);
	assert_int_equal(w->a->a->op, QO_ADD);
	assert_int_equal(w->a->a->b->op, QO_MUL);
	assert_int_equal(w->b->kind, QN_NUMBER);
	assert_true(w->b->num == -1);
	query_free(&q);

	ok("SELECT * FROM devices WHERE tags.location.region IN ['US', 'EU'] AND status NIN "
	   "['disabled'] AND properties.reported.n IN [1, -2.5, 0x1F, 1e3, true, null]",
	   &q);
	w = q.where;
	const struct query_node *in = w->a->a;
	assert_int_equal(in->kind, QN_IN);
	assert_int_equal(in->b->nargs, 2);
	assert_string_equal(in->b->args[1]->str, "EU");
	assert_int_equal(w->a->b->kind, QN_NIN);
	const struct query_node *arr = w->b->b;
	assert_int_equal(arr->nargs, 6);
	assert_true(arr->args[1]->num == -2.5);
	assert_true(arr->args[2]->num == 31);
	assert_true(arr->args[3]->num == 1000);
	assert_int_equal(arr->args[4]->kind, QN_BOOL);
	assert_int_equal(arr->args[5]->kind, QN_NULL);
	query_free(&q);

	ok("SELECT * FROM devices WHERE IS_DEFINED(tags.a) AND NOT is_null(tags.b) AND "
	   "STARTSWITH(deviceId, 'th-') AND LOWER(tags.c) = 'x' AND x = undefined",
	   &q);
	w = q.where;
	assert_int_equal(w->a->a->a->a->kind, QN_CALL);
	assert_int_equal(w->a->a->a->a->fn, QF_IS_DEFINED);
	assert_int_equal(w->a->a->a->b->a->fn, QF_IS_NULL);
	assert_int_equal(w->a->a->b->fn, QF_STARTSWITH);
	assert_int_equal(w->a->a->b->nargs, 2);
	assert_int_equal(w->b->b->kind, QN_UNDEFINED);
	query_free(&q);
}

static void test_paths_and_strings(void **state)
{
	struct query q;
	ok("SELECT * FROM devices WHERE tags['odd key.with dots'].x = 'it\\'s' AND "
	   "properties.reported.$metadata.$lastUpdated > \"2026\" AND "
	   "tags.s = 'a\\\\b\\\"c\\u00e9\\n'",
	   &q);
	const struct query_node *w = q.where;
	const struct query_node *pa = w->a->a->a;
	assert_int_equal(pa->nseg, 3);
	assert_string_equal(pa->seg[1].name, "odd key.with dots");
	assert_string_equal(w->a->a->b->str, "it's");
	assert_true(path_is(w->a->b->a, "properties.reported.$metadata.$lastUpdated"));
	assert_string_equal(w->b->b->str, "a\\b\"c\xc3\xa9\n");
	query_free(&q);
	/* path segments keep their case; keywords do not matter */
	ok("SeLeCt * FrOm devices wHeRe Tags.Floor = 3", &q);
	assert_true(path_is(q.where->a, "Tags.Floor"));
	query_free(&q);
}

static void test_errors(void **state)
{
	bad("SELECT * devices", 9, "expected FROM");
	bad("", 0, "expected SELECT");
	bad("SELECT * FROM WHERE", 14, "expected devices");
	bad("SELECT * FROM devices.twins", 14, "expected devices, devices.modules");
	bad("SELECT * FROM devices WHERE", 27, "the query ends where a value is expected");
	bad("SELECT * FROM devices WHERE a = 'open", 32, "string not closed");
	bad("SELECT * FROM devices WHERE a = 'x\\q'", 34, "unknown escape");
	bad("SELECT * FROM devices WHERE a = '\\u00'", 37, "bad \\u escape");
	bad("SELECT * FROM devices WHERE a = '\\u0000'", 33, "NUL or a surrogate");
	bad("SELECT * FROM devices WHERE FOO(a)", 28, "unknown function FOO");
	bad("SELECT * FROM devices WHERE COUNT() > 1", 28, "aggregate: only in SELECT");
	bad("SELECT * FROM devices WHERE a IN 'x'", 33, "expected '[' after IN");
	bad("SELECT * FROM devices WHERE a IN [b]", 34, "expected a constant");
	bad("SELECT * FROM devices WHERE a = 1 extra", 34, "unexpected text after the query");
	bad("SELECT * FROM devices WHERE a # 1", 30, "unexpected character '#'");
	bad("SELECT TOP 0 * FROM devices", 11, "TOP takes a whole number");
	bad("SELECT TOP 1.5 * FROM devices", 11, "TOP takes a whole number");
	bad("SELECT deviceId FROM devices.jobs", 21, "devices.jobs takes SELECT * only");
	bad("SELECT deviceId FROM devices GROUP BY deviceId", 38, "GROUP BY needs an aggregate");
	bad("SELECT deviceId, COUNT() FROM devices", 7, "cannot be mixed");
	bad("SELECT tags.a, COUNT() FROM devices GROUP BY tags.b", 7, "aggregate or the grouped path");
	bad("SELECT COUNT(x) FROM devices", 13, "COUNT() takes no argument");
	bad("SELECT * FROM devices WHERE STARTSWITH(a)", 40, "two arguments");
	bad("SELECT * FROM devices WHERE a. = 1", 31, "expected a name after '.'");
	bad("SELECT * FROM devices WHERE a[''] = 1", 30, "an empty key");
	bad("SELECT * FROM devices WHERE a = 0x", 32, "bad hexadecimal number");
	bad("SELECT * FROM devices WHERE a = 1e", 32, "bad number");
	bad("SELECT * FROM devices WHERE a = 1e999", 32, "out of range");
	bad("SELECT x AS FROM devices", 12, "expected a name after AS");
	assert_int_equal(mismatches, 0);
}

static void test_bounds(void **state)
{
	char text[QUERY_MAX_TEXT + 64];
	/* nesting */
	strcpy(text, "SELECT * FROM devices WHERE ");
	for (int i = 0; i < 40; i++)
		strcat(text, "(");
	strcat(text, "a = 1");
	for (int i = 0; i < 40; i++)
		strcat(text, ")");
	struct query q;
	struct query_error err;
	assert_int_equal(parse(text, &q, &err), -1);
	assert_non_null(strstr(err.message, "nested too deep"));
	strcpy(text, "SELECT * FROM devices WHERE ");
	for (int i = 0; i < 40; i++)
		strcat(text, "NOT ");
	strcat(text, "a = 1");
	assert_int_equal(parse(text, &q, &err), -1);
	assert_non_null(strstr(err.message, "nested too deep"));
	/* terms */
	strcpy(text, "SELECT * FROM devices WHERE a IN [");
	for (int i = 0; i < 600; i++)
		strcat(text, i ? ",1" : "1");
	strcat(text, "]");
	assert_int_equal(parse(text, &q, &err), -1);
	assert_non_null(strstr(err.message, "too long"));
	/* text */
	memset(text, ' ', sizeof text);
	assert_int_equal(query_parse(text, QUERY_MAX_TEXT + 1, &q, &err), -1);
	assert_non_null(strstr(err.message, "longer than"));
	/* path segments */
	strcpy(text, "SELECT * FROM devices WHERE a");
	for (int i = 0; i < 20; i++)
		strcat(text, ".b");
	strcat(text, " = 1");
	assert_int_equal(parse(text, &q, &err), -1);
	assert_non_null(strstr(err.message, "more than 16 segments"));
	/* select items */
	strcpy(text, "SELECT ");
	for (int i = 0; i < 40; i++)
		strcat(text, i ? ", a" : "a");
	strcat(text, " FROM devices");
	assert_int_equal(parse(text, &q, &err), -1);
	assert_non_null(strstr(err.message, "more than 32 items"));
	/* NUL */
	assert_int_equal(query_parse("SELECT *\0 FROM devices", 22, &q, &err), -1);
	assert_int_equal(err.pos, 8);
	/* just within: 32 levels of parentheses around a comparison */
	strcpy(text, "SELECT * FROM devices WHERE ");
	for (int i = 0; i < 30; i++)
		strcat(text, "(");
	strcat(text, "a = 1");
	for (int i = 0; i < 30; i++)
		strcat(text, ")");
	ok(text, &q);
	query_free(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_select_forms),
		cmocka_unit_test(test_conditions),
		cmocka_unit_test(test_paths_and_strings),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
