/* Unit tests for src/codec/query_plan.c: which conjuncts of a WHERE become
 * terms a store may narrow by (only those every match must satisfy), how
 * paths map to sources, mirrored comparisons, IN lists, and what stays
 * for per-row evaluation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "codec/query_plan.h"

static struct query q;
static struct query_plan plan;

static void plan_of(const char *text)
{
	struct query_error err;
	if (query_parse(text, strlen(text), &q, &err) != 0)
		fail_msg("%s: %s", text, err.message);
	query_plan_build(&q, &plan);
}

/* The sub-path of term i joined with '.', e.g. "connectivity.type". */
static const char *subpath(size_t i)
{
	static char buf[256];
	buf[0] = 0;
	for (size_t s = 0; s < plan.terms[i].nseg; s++) {
		if (s)
			strcat(buf, ".");
		strncat(buf, plan.terms[i].seg[s].name, 64);
	}
	return buf;
}

static void test_sources(void **state)
{
	plan_of("SELECT * FROM devices WHERE tags.plant = 'Redmond43' AND "
	        "properties.reported.connectivity.type = 'cellular' AND "
	        "properties.desired.rate >= 5 AND deviceId = 'th-1'");
	assert_false(plan.empty);
	assert_int_equal(plan.nterms, 4);
	assert_int_equal(plan.terms[0].source, QP_TAGS);
	assert_string_equal(subpath(0), "plant");
	assert_int_equal(plan.terms[0].values[0].type, QP_STRING);
	assert_string_equal(plan.terms[0].values[0].str, "Redmond43");
	assert_int_equal(plan.terms[1].source, QP_REPORTED);
	assert_string_equal(subpath(1), "connectivity.type");
	assert_int_equal(plan.terms[2].source, QP_DESIRED);
	assert_int_equal(plan.terms[2].op, QO_GE);
	assert_true(plan.terms[2].values[0].num == 5);
	assert_int_equal(plan.terms[3].source, QP_DEVICE_ID);
	assert_int_equal(plan.terms[3].nseg, 0);
	query_free(&q);
}

static void test_only_necessary_conjuncts(void **state)
{
	/* Below OR and NOT nothing is necessary. */
	plan_of("SELECT * FROM devices WHERE tags.a = 1 OR tags.b = 2");
	assert_int_equal(plan.nterms, 0);
	query_free(&q);
	plan_of("SELECT * FROM devices WHERE NOT (tags.a = 1 AND tags.b = 2)");
	assert_int_equal(plan.nterms, 0);
	query_free(&q);
	plan_of("SELECT * FROM devices WHERE (tags.a = 1 OR tags.b = 2) AND tags.c = 3");
	assert_int_equal(plan.nterms, 1);
	assert_string_equal(subpath(0), "c");
	query_free(&q);
	/* Not narrowing: !=, null, functions, paths on both sides, $metadata. */
	plan_of("SELECT * FROM devices WHERE tags.a != 1 AND tags.b = null AND "
	        "IS_DEFINED(tags.c) AND tags.d = tags.e AND properties.reported.$version > 3 AND "
	        "status = 'enabled' AND tags = 1 AND tags.f > true");
	assert_int_equal(plan.nterms, 0);
	query_free(&q);
	/* No WHERE, or no rows. */
	plan_of("SELECT COUNT() FROM devices");
	assert_int_equal(plan.nterms, 0);
	assert_false(plan.empty);
	query_free(&q);
	plan_of("SELECT * FROM devices.modules WHERE tags.a = 1");
	assert_true(plan.empty);
	query_free(&q);
}

static void test_mirrored_and_in(void **state)
{
	plan_of("SELECT * FROM devices WHERE 20 < properties.reported.temp AND "
	        "tags.fw IN ['1.0', '1.1'] AND tags.n IN [1, 2, 3] AND tags.mixed IN [1, 'a'] AND "
	        "tags.b IN [true]");
	assert_int_equal(plan.nterms, 3);
	assert_int_equal(plan.terms[0].op, QO_GT);
	assert_true(plan.terms[0].values[0].num == 20);
	assert_true(plan.terms[1].in);
	assert_int_equal(plan.terms[1].nvalues, 2);
	assert_string_equal(plan.terms[1].values[1].str, "1.1");
	assert_true(plan.terms[2].in);
	assert_int_equal(plan.terms[2].values[0].type, QP_NUMBER);
	assert_int_equal(plan.terms[2].nvalues, 3);
	query_free(&q);
}

static void test_bounded(void **state)
{
	char text[2048] = "SELECT * FROM devices WHERE tags.t0 = 0";
	for (int i = 1; i < 40; i++) {
		char term[32];
		snprintf(term, sizeof term, " AND tags.t%d = %d", i, i);
		strcat(text, term);
	}
	plan_of(text);
	assert_int_equal(plan.nterms, QUERY_PLAN_MAX_TERMS);
	query_free(&q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sources),
	    cmocka_unit_test(test_only_necessary_conjuncts),
	    cmocka_unit_test(test_mirrored_and_in),
	    cmocka_unit_test(test_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
