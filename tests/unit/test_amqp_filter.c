/* Unit tests for src/codec/amqp_filter.c: the selector filters the Event
 * Hubs client sends (amqp.md §3) parse to their start positions; other
 * text is refused with a sentence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/err.h"
#include "codec/amqp_filter.h"

static struct amqp_filter parse_ok(const char *s)
{
	struct amqp_filter f;
	char err[160] = "";
	int rc = amqp_filter_parse(s, strlen(s), &f, err, sizeof err);
	if (rc != 0)
		fail_msg("%s: %s", s, err);
	return f;
}

static void test_client_filters(void **state)
{
	struct amqp_filter f = parse_ok("amqp.annotation.x-opt-offset > '-1'");
	assert_int_equal(f.kind, AMQP_FILTER_OFFSET);
	assert_false(f.inclusive);
	assert_false(f.latest);
	assert_int_equal(f.value, -1);
	f = parse_ok("amqp.annotation.x-opt-offset > '@latest'");
	assert_true(f.latest);
	f = parse_ok("amqp.annotation.x-opt-offset >= '4096'");
	assert_true(f.inclusive);
	assert_int_equal(f.value, 4096);
	f = parse_ok("amqp.annotation.x-opt-sequence-number > '41'");
	assert_int_equal(f.kind, AMQP_FILTER_SEQUENCE);
	assert_int_equal(f.value, 41);
	f = parse_ok("amqp.annotation.x-opt-enqueued-time > '1796539106620'");
	assert_int_equal(f.kind, AMQP_FILTER_TIME);
	assert_int_equal(f.value, 1796539106620LL);
	/* other clients: no quotes, double quotes, no spaces, any case */
	f = parse_ok("AMQP.ANNOTATION.X-OPT-SEQUENCE-NUMBER>=7");
	assert_true(f.inclusive);
	assert_int_equal(f.value, 7);
	f = parse_ok("  amqp.annotation.x-opt-offset>\"12\"  ");
	assert_int_equal(f.value, 12);
}

static void refused(const char *s, const char *says)
{
	struct amqp_filter f;
	char err[160] = "";
	assert_int_equal(amqp_filter_parse(s, strlen(s), &f, err, sizeof err), FH_EINVAL);
	if (!strstr(err, says))
		fail_msg("%s: %s does not say %s", s, err, says);
}

static void test_refusals(void **state)
{
	refused("", "must compare");
	refused("amqp.annotation.x-opt-partition-key > 'a'", "must compare");
	refused("amqp.annotation.x-opt-offset = '1'", "operator");
	refused("amqp.annotation.x-opt-offset < '1'", "operator");
	refused("amqp.annotation.x-opt-offset > '1", "closing quote");
	refused("amqp.annotation.x-opt-offset > '1' OR 1=1", "after its value");
	refused("amqp.annotation.x-opt-offset > 'abc'", "decimal integer");
	refused("amqp.annotation.x-opt-offset > ''", "decimal integer");
	refused("amqp.annotation.x-opt-sequence-number > '@latest'", "decimal integer");
	refused("amqp.annotation.x-opt-offset > '-5'", "negative");
	refused("amqp.annotation.x-opt-enqueued-time > '-1'", "negative");
	refused("amqp.annotation.x-opt-offset > '12345678901234567890'", "decimal integer");
	char big[AMQP_FILTER_MAX + 2];
	memset(big, ' ', sizeof big - 1);
	big[sizeof big - 1] = 0;
	refused(big, "too long");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_client_filters),
	    cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
