/* Unit tests for src/core/cluster.c: every kind encodes and decodes to the
 * same message; what is not a message (unknown kind, a missing, mistyped
 * or oversized member, not JSON) is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/cluster.h"

static void roundtrip(const struct cluster_msg *m)
{
	char *text = cluster_encode(m);
	assert_non_null(text);
	struct cluster_msg back;
	assert_int_equal(cluster_decode(text, &back), 0);
	assert_int_equal(back.kind, m->kind);
	assert_string_equal(back.node, m->node);
	assert_string_equal(back.scope, m->scope);
	assert_string_equal(back.id, m->id);
	assert_string_equal(back.to, m->to);
	assert_int_equal(back.change, m->change);
	assert_int_equal(back.n, m->n);
	if (m->text)
		assert_string_equal(back.text, m->text);
	else
		assert_null(back.text);
	cluster_msg_clear(&back);
	free(text);
}

static void test_roundtrip(void **state)
{
	struct cluster_msg m = {CLUSTER_DESIRED, "node-a", "", "hub1.example.com", "dev-1", 0, 42,
				"{\"temp\":\"h\\u00e9\",\"$version\":42}"};
	roundtrip(&m);
	struct cluster_msg d = {CLUSTER_DEVICE, "n", "", "hub", "dev", 1, 0, "identity disabled"};
	roundtrip(&d);
	struct cluster_msg c = {CLUSTER_CONNECTED, "n", "", "hub", "dev", 0, 1765000000123, NULL};
	roundtrip(&c);
	struct cluster_msg to = {CLUSTER_DEVICE, "n", "node-b", "hub", "dev", 0, 0, "for b only"};
	roundtrip(&to);
	struct cluster_msg g = {CLUSTER_GROUP, "n", "", "dps", "group-1", 0, 0, NULL};
	roundtrip(&g);
	struct cluster_msg e = {CLUSTER_ENROLLMENT, "n", "", "dps", "reg-1", 1, 0, NULL};
	roundtrip(&e);
	struct cluster_msg mc = {CLUSTER_METHOD, "n", "", "hub", "dev", 0, 17,
				 "{\"name\":\"reboot\",\"payload\":{\"delay\":5}}"};
	roundtrip(&mc);
	struct cluster_msg mr = {CLUSTER_METHOD_RESULT, "b", "n", "hub", "dev", 200, 17, "{\"ok\":true}"};
	roundtrip(&mr);
	struct cluster_msg w = {CLUSTER_C2D, "n", "", "hub", "dev", 0, 0, NULL};
	roundtrip(&w);
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
	    "",
	    "not json",
	    "[]",
	    "{\"k\":\"bogus\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"d\",\"c\":0,\"n\":0}",
	    "{\"node\":\"n\",\"scope\":\"h\",\"id\":\"d\",\"c\":0,\"n\":0}",
	    "{\"k\":\"device\",\"scope\":\"h\",\"id\":\"d\",\"c\":0,\"n\":0}",
	    "{\"k\":\"device\",\"node\":\"n\",\"scope\":\"h\",\"id\":7,\"c\":0,\"n\":0}",
	    "{\"k\":\"device\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"d\",\"c\":4294967296,\"n\":0}",
	    "{\"k\":\"device\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"d\",\"c\":-4294967296,\"n\":0}",
	    "{\"k\":\"device\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"d\",\"c\":0,\"n\":\"1\"}",
	    "{\"k\":\"device\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"d\",\"c\":0,\"n\":0,\"text\":1}",
	    "{\"k\":\"device\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"d\",\"c\":0,\"n\":0,\"to\":[]}",
	    "{\"k\":\"device\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"a\\u0000b\",\"c\":0,\"n\":0}",
	    "{\"k\":\"device\",\"k\":\"desired\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"d\",\"c\":0,"
	    "\"n\":0}",
	};
	struct cluster_msg m;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(cluster_decode(bad[i], &m), -1);
		assert_null(m.text);
	}
	/* An id longer than CLUSTER_ID_MAX. */
	char big[600];
	memset(big, 'x', sizeof big);
	big[sizeof big - 1] = '\0';
	char text[800];
	snprintf(text, sizeof text,
		 "{\"k\":\"device\",\"node\":\"n\",\"scope\":\"h\",\"id\":\"%s\",\"c\":0,\"n\":0}", big);
	assert_int_equal(cluster_decode(text, &m), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
