/* Unit tests for src/store/sqlite_query.c, differential: for each query,
 * the twins the SQL condition selects (SQLite, in memory) must include
 * every twin query_matches accepts (the reference semantics), and every
 * twin the sufficient condition (sqlite_query_sure) holds for must match,
 * over twins
 * whose values mix types, nulls, missing paths, odd keys, reals that do
 * not print exactly and integers past 2^53; and selective conditions must
 * actually narrow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "core/query_eval.h"
#include "store/sqlite_query.h"
#include "support/test_where.h"

#define NTWINS 240

static sqlite3 *db;
static json_t *docs[NTWINS]; /* the twin as a query sees it */

static json_t *varied(int i, int salt)
{
	switch ((i + salt) % 12) {
	case 0: return json_string("Redmond43");
	case 1: return json_string("redmond43");
	case 2: return json_integer(i % 7);
	case 3: return json_real(0.1 * (i % 13));
	case 4: return json_null();
	case 5: return json_true();
	case 6: return json_false();
	case 7: return json_pack("{s:i}", "x", i);
	case 8: return json_pack("[i,i]", 1, 2);
	case 9: return json_string("it's \"quoted\"");
	case 10: return json_integer(9007199254740993LL);
	default: return NULL; /* missing */
	}
}

static void put(json_t *obj, const char *key, json_t *v)
{
	if (v)
		json_object_set_new(obj, key, v);
}

static int setup(void **state)
{
	assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
				      "CREATE TABLE twins (id TEXT PRIMARY KEY, tags TEXT NOT NULL,"
				      " desired TEXT NOT NULL, reported TEXT NOT NULL,"
				      " hub TEXT NOT NULL DEFAULT 'h')",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_stmt *ins;
	assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO twins (id, tags, desired, reported) VALUES (?, ?, ?, ?)", -1, &ins, NULL),
			 SQLITE_OK);
	for (int i = 0; i < NTWINS; i++) {
		char id[32];
		snprintf(id, sizeof id, "dev-%03d", i);
		json_t *tags = json_object(), *desired = json_object(), *reported = json_object();
		put(tags, "plant", varied(i, 0));
		put(tags, "floor", varied(i, 3));
		put(tags, "odd key", varied(i, 5));
		put(tags, "it's", varied(i, 7));
		put(desired, "rate", varied(i, 2));
		put(reported, "temp", json_real(0.1 * (i % 37) + 0.2));
		put(reported, "connectivity", json_pack("{s:s}", "type", i % 3 ? "wifi" : "cellular"));
		put(reported, "count", varied(i, 9));
		char *t = json_dumps(tags, JSON_COMPACT), *d = json_dumps(desired, JSON_COMPACT),
		     *r = json_dumps(reported, JSON_COMPACT);
		sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(ins, 2, t, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(ins, 3, d, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(ins, 4, r, -1, SQLITE_TRANSIENT);
		assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
		sqlite3_reset(ins);
		free(t);
		free(d);
		free(r);
		docs[i] = json_pack("{s:s, s:o, s:{s:o, s:o}}", "deviceId", id, "tags", tags,
				    "properties", "desired", desired, "reported", reported);
	}
	sqlite3_finalize(ins);
	return 0;
}

static int teardown(void **state)
{
	for (int i = 0; i < NTWINS; i++)
		json_decref(docs[i]);
	sqlite3_close(db);
	return 0;
}

/* Checks the conditions of "SELECT * FROM devices WHERE <cond>" against
 * the reference; returns how many twins the loose one selects, and in
 * *sure how many of them the sufficient one holds for. */
static int selected_sure(const char *cond, int *matching, int *sure)
{
	struct query q;
	parse_where(cond, &q);
	struct query_plan plan;
	query_plan_build(&q, &plan);
	struct buf sql = BUF_INIT;
	buf_appends(&sql, "SELECT t.id, ");
	sqlite_query_sure(&plan, &sql);
	buf_appends(&sql, " FROM twins t WHERE ");
	sqlite_query_where(&plan, &sql);
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, sql.data, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql.data, sqlite3_errmsg(db));
	bool chosen[NTWINS] = {false};
	int n = 0, rc;
	*sure = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int i = atoi((const char *)sqlite3_column_text(st, 0) + 4);
		chosen[i] = true;
		n++;
		if (sqlite3_column_int(st, 1) == 0)
			continue;
		++*sure;
		if (!query_matches(q.where, docs[i]))
			fail_msg("%s: dev-%03d does not match but %s is sure of it", cond, i, sql.data);
	}
	if (rc != SQLITE_DONE)
		fail_msg("%s: %s", sql.data, sqlite3_errmsg(db));
	sqlite3_finalize(st);
	*matching = 0;
	for (int i = 0; i < NTWINS; i++) {
		if (!query_matches(q.where, docs[i]))
			continue;
		++*matching;
		if (!chosen[i])
			fail_msg("%s: dev-%03d matches but %s leaves it out", cond, i, sql.data);
	}
	buf_free(&sql);
	query_free(&q);
	return n;
}

static int selected(const char *cond, int *matching)
{
	int sure;
	return selected_sure(cond, matching, &sure);
}

static void test_never_leaves_a_match_out(void **state)
{
	static const char *const conds[] = {
	    "tags.plant = 'Redmond43'",
	    "tags.plant = 'redmond43' AND tags.floor = 3",
	    "tags.plant != 'Redmond43'",
	    "tags.floor = 0.30000000000000004",
	    "tags.floor = 0.3",
	    "tags.floor >= 0.3 AND tags.floor < 0.9",
	    "tags.floor > 2",
	    "tags.floor <= 2",
	    "tags.floor = true",
	    "tags.floor = false",
	    "tags.floor = null",
	    "tags.floor = 9007199254740993",
	    "tags.floor = 9007199254740992",
	    "tags.floor > 9007199254740990",
	    "tags['odd key'] = 'Redmond43'",
	    "tags['it\\'s'] IN ['Redmond43', 'redmond43']",
	    "tags['odd key'] = 'it\\'s \"quoted\"'",
	    "tags.plant IN [1, 2, 3]",
	    "tags.plant IN ['x', 'Redmond43']",
	    "tags.plant.x > 10",
	    "properties.desired.rate > 0.5",
	    "properties.reported.temp > 2.1 AND properties.reported.temp <= 3.3",
	    "properties.reported.temp = 0.30000000000000004",
	    "properties.reported.temp = 0.3",
	    "3.3 >= properties.reported.temp",
	    "properties.reported.connectivity.type = 'cellular'",
	    "properties.reported.connectivity = 'cellular'",
	    "properties.reported.count < 1e300",
	    "properties.reported.count >= -1e300",
	    "deviceId = 'dev-007'",
	    "deviceId >= 'dev-100' AND deviceId < 'dev-120'",
	    "deviceId = 7",
	    "(tags.plant = 'Redmond43' OR tags.floor = 1) AND properties.reported.temp > 1",
	    "NOT tags.plant = 'Redmond43'",
	    "IS_DEFINED(tags.plant)",
	    "tags.plant = 'Redmond43' AND tags.plant = 'redmond43'",
	};
	for (size_t i = 0; i < sizeof conds / sizeof *conds; i++) {
		int matching;
		selected(conds[i], &matching);
	}
}

static void test_narrows(void **state)
{
	int matching, n;
	n = selected("tags.plant = 'Redmond43'", &matching);
	assert_int_equal(n, matching);
	assert_int_equal(matching, NTWINS / 12);
	n = selected("deviceId = 'dev-007'", &matching);
	assert_int_equal(n, 1);
	n = selected("properties.reported.connectivity.type = 'cellular'", &matching);
	assert_int_equal(n, matching);
	/* Number bounds are widened by an ulp or so: the rows on either bound may be
	 * selected too. */
	n = selected("properties.reported.temp > 2.1 AND properties.reported.temp <= 3.3", &matching);
	print_message("temp range: %d selected, %d match\n", n, matching);
	assert_true(matching > 0 && n >= matching && n <= matching + 2 * (NTWINS / 37 + 1));
	n = selected("tags['it\\'s'] IN ['Redmond43', 'redmond43']", &matching);
	assert_true(matching > 0 && n == matching);
	/* What the plan leaves out selects everything; query_matches decides. */
	n = selected("IS_DEFINED(tags.plant)", &matching);
	assert_int_equal(n, NTWINS);
}

/* The sufficient condition decides the common cases alone: string and
 * boolean equality, integer equality, ranges away from their bounds; it
 * leaves to query_matches what the plan does not hold entirely. */
static void test_sure(void **state)
{
	int matching, n, sure;
	n = selected_sure("tags.plant = 'Redmond43'", &matching, &sure);
	assert_true(matching > 0 && sure == matching && n == matching);
	n = selected_sure("tags.plant = 'redmond43' AND tags.floor = 3", &matching, &sure);
	assert_int_equal(sure, matching);
	n = selected_sure("tags.plant = true", &matching, &sure);
	assert_true(matching > 0 && sure == matching);
	n = selected_sure("tags.plant IN ['x', 'Redmond43']", &matching, &sure);
	assert_true(matching > 0 && sure == matching);
	n = selected_sure("deviceId >= 'dev-100' AND deviceId < 'dev-120'", &matching, &sure);
	assert_true(matching == 20 && sure == 20);
	/* A range: sure of every match not within the slack of a bound. */
	n = selected_sure("properties.reported.temp > 2.15 AND properties.reported.temp <= 3.35",
			  &matching, &sure);
	assert_true(matching > 0 && sure == matching);
	/* 0.3 is not exactly 0.1 * 3: equality on reals is query_matches'. */
	n = selected_sure("properties.reported.temp = 0.3", &matching, &sure);
	assert_int_equal(sure, 0);
	n = selected_sure("tags.floor = null", &matching, &sure);
	assert_true(matching > 0 && sure == 0);
	n = selected_sure("tags.plant = 'Redmond43' OR tags.floor = 1", &matching, &sure);
	assert_true(matching > 0 && sure == 0);
	n = selected_sure("deviceId = 7", &matching, &sure);
	assert_true(matching == 0 && sure == 0);
	(void)n;
}

/* The aggregate statement, for a plan without WHERE: one row per value of
 * the GROUP BY path (undefined as NULL) whose counts cover every twin, and
 * SUM/MIN/MAX over the numbers only, equal to the reference's. */
static void test_aggregate(void **state)
{
	struct query q;
	struct query_error err;
	const char *text = "SELECT tags.floor, COUNT(), SUM(properties.reported.temp),"
			   " MIN(properties.reported.temp), MAX(tags.floor) FROM devices"
			   " GROUP BY tags.floor";
	assert_int_equal(query_parse(text, strlen(text), &q, &err), 0);
	struct query_plan plan;
	query_plan_build(&q, &plan);
	assert_true(plan.aggregable && plan.grouped && plan.naggs == 5);
	struct buf sql = BUF_INIT;
	assert_true(sqlite_query_aggregate(&plan, &sql));
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, sql.data, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql.data, sqlite3_errmsg(db));
	sqlite3_bind_text(st, 1, "h", -1, SQLITE_STATIC);
	double sum = 0, min = 1e300, ref_sum = 0, ref_min = 1e300;
	int rows = 0, undefined = 0;
	long total = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		rows++;
		total += sqlite3_column_int64(st, 1);
		undefined += sqlite3_column_type(st, 0) == SQLITE_NULL;
		sum += sqlite3_column_double(st, 2 + 4 * 2 + 1);
		if (sqlite3_column_int64(st, 2 + 4 * 3) > 0 && sqlite3_column_double(st, 2 + 4 * 3 + 2) < min)
			min = sqlite3_column_double(st, 2 + 4 * 3 + 2);
		/* MAX(tags.floor) counts only the numbers of its group. */
		json_t *k = sqlite3_column_type(st, 0) == SQLITE_NULL
				? NULL
				: json_loads((const char *)sqlite3_column_text(st, 0), JSON_DECODE_ANY, NULL);
		assert_int_equal(sqlite3_column_int64(st, 2 + 4 * 4) > 0, json_is_number(k));
		json_decref(k);
	}
	sqlite3_finalize(st);
	for (int i = 0; i < NTWINS; i++) {
		json_t *t = json_object_get(json_object_get(json_object_get(docs[i], "properties"),
							    "reported"), "temp");
		ref_sum += json_number_value(t);
		if (json_number_value(t) < ref_min)
			ref_min = json_number_value(t);
	}
	assert_int_equal(total, NTWINS);
	assert_int_equal(undefined, 1);
	assert_true(rows > 5);
	assert_true(fabs(sum - ref_sum) < 1e-9 * fabs(ref_sum));
	assert_true(min == ref_min);
	buf_free(&sql);
	query_free(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_never_leaves_a_match_out),
	    cmocka_unit_test(test_narrows),
	    cmocka_unit_test(test_sure),
	    cmocka_unit_test(test_aggregate),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
