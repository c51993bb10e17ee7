/* Unit tests for src/core/query_eval.c: Azure's query semantics over one
 * document: undefined is not null, comparisons across types are neither
 * true nor false, strings compare with their case, NOT/AND/OR over
 * undefined, arithmetic, IN/NIN, the functions, and projected values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "core/query_eval.h"
#include "support/test_where.h"

static const char *const TWIN =
    "{\"deviceId\":\"th-1\",\"status\":\"enabled\",\"tags\":{\"plant\":\"Redmond43\","
    "\"floor\":3,\"nothing\":null,\"odd key\":{\"x\":1},\"list\":[1,2]},"
    "\"properties\":{\"reported\":{\"connectivity\":{\"type\":\"cellular\"},\"temp\":21.5,"
    "\"ok\":true,\"fw\":\"1.2.3\"},\"desired\":{}}}";

/* Whether the WHERE of "SELECT * FROM devices WHERE <cond>" holds. */
static bool holds(const char *cond)
{
	struct query q;
	parse_where(cond, &q);
	json_t *doc = json_loads(TWIN, 0, NULL);
	bool r = query_matches(q.where, doc);
	json_decref(doc);
	query_free(&q);
	return r;
}

static void test_undefined_is_not_null(void **state)
{
	assert_true(holds("tags.nothing = null"));
	assert_false(holds("tags.missing = null"));
	assert_true(holds("IS_DEFINED(tags.nothing)"));
	assert_false(holds("IS_DEFINED(tags.missing)"));
	assert_true(holds("IS_NULL(tags.nothing)"));
	assert_false(holds("IS_NULL(tags.missing)"));
	assert_false(holds("tags.missing = undefined")); /* undefined equals nothing */
	assert_false(holds("tags.missing != 'x'"));
	assert_false(holds("NOT (tags.missing = 'x')")); /* NOT undefined is undefined */
	assert_true(holds("NOT IS_DEFINED(tags.missing)"));
	assert_false(holds("tags.floor.deeper = 3")); /* a path through a number */
}

static void test_types_and_case(void **state)
{
	assert_true(holds("tags.floor = 3"));
	assert_false(holds("tags.floor = '3'")); /* other types: not equal, not unequal */
	assert_false(holds("tags.floor != '3'"));
	assert_false(holds("tags.floor > 'a'"));
	assert_true(holds("tags.plant = 'Redmond43'"));
	assert_false(holds("tags.plant = 'redmond43'"));
	assert_true(holds("tags.plant > 'Redmond' AND tags.plant < 'Redmond5'"));
	assert_true(holds("properties.reported.ok = true"));
	assert_false(holds("properties.reported.ok > false")); /* bools: = and != only */
	assert_false(holds("tags['odd key'] = 1"));            /* an object is no primitive */
	assert_true(holds("tags['odd key'].x = 1"));
	assert_true(holds("Tags.plant = 'Redmond43'") == false); /* paths keep their case */
	assert_true(holds("deviceId = 'th-1' AND status = 'enabled'"));
}

static void test_logic(void **state)
{
	/* false AND undefined is false; true OR undefined is true */
	assert_true(holds("NOT (tags.floor = 4 AND tags.missing = 1)"));
	assert_true(holds("tags.floor = 3 OR tags.missing = 1"));
	assert_false(holds("tags.floor = 3 AND tags.missing = 1"));
	assert_false(holds("NOT (tags.floor = 3 AND tags.missing = 1)"));
	assert_false(holds("tags.floor = 4 OR tags.missing = 1"));
	assert_false(holds("tags.floor")); /* a number is no condition */
}

static void test_arithmetic_in_functions(void **state)
{
	assert_true(holds("tags.floor * 2 + 1 = 7"));
	assert_true(holds("properties.reported.temp - 0.5 = 21"));
	assert_true(holds("tags.floor % 2 = 1"));
	assert_false(holds("tags.floor / 0 = 1"));
	assert_false(holds("tags.floor / 0 != 1"));
	assert_false(holds("tags.plant + 1 = 1"));
	assert_true(holds("-tags.floor = -3"));
	assert_true(holds("properties.reported.connectivity.type IN ['wifi', 'cellular']"));
	assert_false(holds("properties.reported.connectivity.type IN ['wifi']"));
	assert_true(holds("properties.reported.connectivity.type NIN ['wifi']"));
	assert_false(holds("tags.missing NIN ['wifi']"));
	assert_false(holds("tags.missing IN ['wifi']"));
	assert_true(holds("tags.floor IN ['3', 3]"));
	assert_true(holds("STARTSWITH(deviceId, 'th-')"));
	assert_false(holds("STARTSWITH(deviceId, 'TH-')"));
	assert_true(holds("ENDSWITH(properties.reported.fw, '.3')"));
	assert_true(holds("CONTAINS(tags.plant, 'mond')"));
	assert_true(holds("CONTAINS(tags.plant, '')"));
	assert_false(holds("CONTAINS(tags.floor, '3')"));
	assert_true(holds("LOWER(tags.plant) = 'redmond43'"));
	assert_true(holds("UPPER(tags.plant) = 'REDMOND43'"));
	assert_true(holds("IS_STRING(deviceId) AND IS_NUMBER(tags.floor) AND IS_BOOL(properties.reported.ok)"));
	assert_true(holds("IS_OBJECT(tags) AND NOT IS_OBJECT(tags.list) AND IS_PRIMITIVE(tags.nothing)"));
	assert_false(holds("IS_PRIMITIVE(tags.list)"));
}

static void test_values(void **state)
{
	const char *text = "SELECT deviceId, tags.floor * 2 AS f, tags.missing, tags.list, "
			   "properties.reported.temp / 2, UPPER(tags.plant) FROM devices";
	struct query q;
	struct query_error err;
	assert_int_equal(query_parse(text, strlen(text), &q, &err), 0);
	json_t *doc = json_loads(TWIN, 0, NULL);
	json_t *v = query_value(q.items[0].expr, doc);
	assert_string_equal(json_string_value(v), "th-1");
	json_decref(v);
	v = query_value(q.items[1].expr, doc);
	assert_true(json_is_integer(v) && json_integer_value(v) == 6);
	json_decref(v);
	assert_null(query_value(q.items[2].expr, doc));
	v = query_value(q.items[3].expr, doc);
	assert_true(json_is_array(v) && json_array_size(v) == 2);
	json_decref(v);
	v = query_value(q.items[4].expr, doc);
	assert_true(json_is_real(v) && json_real_value(v) == 10.75);
	json_decref(v);
	v = query_value(q.items[5].expr, doc);
	assert_string_equal(json_string_value(v), "REDMOND43");
	json_decref(v);
	json_decref(doc);
	query_free(&q);
	assert_true(query_matches(NULL, NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_undefined_is_not_null),
		cmocka_unit_test(test_types_and_case),
		cmocka_unit_test(test_logic),
		cmocka_unit_test(test_arithmetic_in_functions),
		cmocka_unit_test(test_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
