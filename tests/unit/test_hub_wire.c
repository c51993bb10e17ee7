/* Unit tests for src/hub/hub_wire.c: the hub's device requests as bytes.
 * User names as each SDK sends them and the malformed ones, every filter
 * kind and the ones refused, topic routing with its $rid rules, and the
 * stored form of a subscription set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "hub/hub_wire.h"

static int user(const char *s, struct hub_user *u)
{
	return hub__wire_username(s, strlen(s), u);
}

static void test_username(void **state)
{
	struct hub_user u;
	/* Node: host with a port, model-id unencoded before DeviceClientType */
	const char *node = "localhost:28883/dev1/?api-version=2021-04-12&model-id=dtmi:com:x;1"
			   "&DeviceClientType=azure-iot-device%2F1.18.4";
	assert_int_equal(user(node, &u), 0);
	assert_int_equal(u.host_len, strlen("localhost:28883"));
	assert_memory_equal(u.host, "localhost:28883", u.host_len);
	assert_int_equal(u.id_len, 4);
	assert_memory_equal(u.device_id, "dev1", 4);
	assert_memory_equal(u.query, "api-version=2021-04-12", 22);
	/* no query, and a trailing slash */
	assert_int_equal(user("hub.example/dev-2", &u), 0);
	assert_int_equal(u.id_len, 5);
	assert_null(u.query);
	assert_int_equal(user("hub.example/dev-2/", &u), 0);
	assert_int_equal(u.id_len, 5);
	/* ids with the odd characters Azure allows */
	assert_int_equal(user("h/a+b#c?d/?x=1", &u), 0);
	assert_memory_equal(u.device_id, "a+b#c?d", 7);
	/* modules are refused as such; malformed names as malformed */
	assert_int_equal(user("h/dev1/mod1/?api-version=1", &u), FH_EPROTO);
	assert_int_equal(user("h/dev1/mod1", &u), FH_EPROTO);
	assert_int_equal(user("/dev1/?x", &u), FH_EINVAL);
	assert_int_equal(user("h//?x", &u), FH_EINVAL);
	assert_int_equal(user("h", &u), FH_EINVAL);
	assert_int_equal(user("", &u), FH_EINVAL);
	char longid[200] = "h/";
	memset(longid + 2, 'a', 129);
	assert_int_equal(user(longid, &u), FH_EINVAL);
	longid[2 + 128] = '\0';
	assert_int_equal(user(longid, &u), 0);
	assert_int_equal(u.id_len, 128);
	assert_int_equal(hub__wire_username("h/d\0x/?", 7, &u), FH_EINVAL);
}

static int filter(const char *f, const char *id)
{
	return hub__wire_filter(f, strlen(f), id);
}

static void test_filters(void **state)
{
	assert_int_equal(filter("$iothub/twin/res/#", "d"), HUB_SUB_TWIN_RES);
	assert_int_equal(filter("$iothub/twin/PATCH/properties/desired/#", "d"), HUB_SUB_DESIRED);
	assert_int_equal(filter("$iothub/methods/POST/#", "d"), HUB_SUB_METHODS);
	assert_int_equal(filter("devices/d/messages/devicebound/#", "d"), HUB_SUB_C2D);
	assert_int_equal(filter("devices/+/messages/devicebound/#", "d"), HUB_SUB_C2D);
	assert_int_equal(filter("devices/a+b/messages/devicebound/#", "a+b"), HUB_SUB_C2D);
	/* refused: another device, wildcards elsewhere, near misses */
	assert_int_equal(filter("devices/e/messages/devicebound/#", "d"), -1);
	assert_int_equal(filter("devices/dd/messages/devicebound/#", "d"), -1);
	assert_int_equal(filter("#", "d"), -1);
	assert_int_equal(filter("$iothub/#", "d"), -1);
	assert_int_equal(filter("$iothub/twin/res/", "d"), -1);
	assert_int_equal(filter("$iothub/twin/res/#/x", "d"), -1);
	assert_int_equal(filter("", "d"), -1);
	assert_int_equal(hub__wire_filter("$iothub/twin/res/#\0", 19, "d"), -1);
}

static enum hub_topic topic(const char *t, const char *id, struct hub_topic_match *m)
{
	return hub__wire_topic(t, strlen(t), id, m);
}

static void test_topics(void **state)
{
	struct hub_topic_match m;
	assert_int_equal(topic("$iothub/twin/GET/?$rid=c641d057-5bdf", "d", &m), HUB_TOPIC_TWIN_GET);
	assert_string_equal(m.rid, "c641d057-5bdf");
	assert_int_equal(topic("$iothub/twin/PATCH/properties/reported/?$rid=7&x=1", "d", &m),
			 HUB_TOPIC_TWIN_REPORTED);
	assert_string_equal(m.rid, "7");
	assert_int_equal(topic("$iothub/twin/GET/?a=1&$rid=9", "d", &m), HUB_TOPIC_TWIN_GET);
	assert_string_equal(m.rid, "9");
	assert_int_equal(topic("$iothub/methods/res/200/?$rid=7", "d", &m), HUB_TOPIC_METHOD_RES);
	assert_int_equal(m.status, 200);
	assert_string_equal(m.rid, "7");
	assert_int_equal(topic("$iothub/methods/res/-1/?$rid=x", "d", &m), HUB_TOPIC_METHOD_RES);
	assert_int_equal(m.status, -1);
	const char *t = "devices/d/messages/events/%24.mid=msg-1&alert=high%20temp";
	assert_int_equal(topic(t, "d", &m), HUB_TOPIC_TELEMETRY);
	assert_int_equal(m.props_len, strlen("%24.mid=msg-1&alert=high%20temp"));
	assert_memory_equal(m.props, "%24.mid=", 8);
	assert_int_equal(topic("devices/d/messages/events/", "d", &m), HUB_TOPIC_TELEMETRY);
	assert_int_equal(m.props_len, 0);

	/* a request topic without a usable $rid */
	static const char *no_rid[] = {
	    "$iothub/twin/GET/?",
	    "$iothub/twin/GET/?$rid=",
	    "$iothub/twin/GET/?rid=1",
	    "$iothub/twin/GET/?$rid=a/b",
	    "$iothub/twin/GET/?$rid=a+b",
	    "$iothub/twin/GET/?$rid=a#",
	    "$iothub/twin/GET/?$rid=a?b",
	    "$iothub/twin/GET/?$rid=a b",
	    "$iothub/methods/res/200/?x=1",
	};
	for (size_t i = 0; i < sizeof no_rid / sizeof no_rid[0]; i++)
		assert_int_equal(topic(no_rid[i], "d", &m), HUB_TOPIC_NO_RID);
	char longrid[200] = "$iothub/twin/GET/?$rid=";
	size_t at = strlen(longrid);
	memset(longrid + at, '1', HUB_RID_MAX + 1);
	assert_int_equal(topic(longrid, "d", &m), HUB_TOPIC_NO_RID);
	longrid[at + HUB_RID_MAX] = '\0';
	assert_int_equal(topic(longrid, "d", &m), HUB_TOPIC_TWIN_GET);
	assert_int_equal(strlen(m.rid), HUB_RID_MAX);

	/* forbidden: other devices, unknown paths, near misses */
	static const char *forbidden[] = {
	    "devices/e/messages/events/",
	    "devices/dd/messages/events/",
	    "devices/+/messages/events/",
	    "devices/d/messages/events",
	    "devices/d/modules/m/messages/events/",
	    "$iothub/twin/GET/",
	    "$iothub/twin/GET?$rid=1",
	    "$iothub/twin/PATCH/properties/desired/?$rid=1",
	    "$iothub/unknown",
	    "$iothub/methods/res/abc/?$rid=1",
	    "$iothub/methods/res//?$rid=1",
	    "",
	};
	for (size_t i = 0; i < sizeof forbidden / sizeof forbidden[0]; i++)
		assert_int_equal(topic(forbidden[i], "d", &m), HUB_TOPIC_FORBIDDEN);
}

static void test_subs_roundtrip(void **state)
{
	struct hub_subs s = {0}, back;
	struct buf b = BUF_INIT;
	hub__wire_subs_encode(&s, &b);
	assert_string_equal(b.data, "{}");
	assert_int_equal(hub__wire_subs_decode(b.data, b.len, &back), 0);
	assert_int_equal(back.mask, 0);
	buf_reset(&b);

	s.mask = (1u << HUB_SUB_TWIN_RES) | (1u << HUB_SUB_DESIRED) | (1u << HUB_SUB_C2D);
	s.qos[HUB_SUB_C2D] = 1;
	s.qos[HUB_SUB_METHODS] = 1; /* not in the mask: not written */
	hub__wire_subs_encode(&s, &b);
	assert_string_equal(b.data, "{\"twinResponses\":0,\"desired\":0,\"c2d\":1}");
	assert_int_equal(hub__wire_subs_decode(b.data, b.len, &back), 0);
	assert_int_equal(back.mask, s.mask);
	assert_int_equal(back.qos[HUB_SUB_C2D], 1);
	assert_int_equal(back.qos[HUB_SUB_METHODS], 0);
	buf_free(&b);

	/* unknown kinds are skipped; anything else malformed is refused */
	const char *newer = "{\"methods\":0,\"moduleInputs\":1}";
	assert_int_equal(hub__wire_subs_decode(newer, strlen(newer), &back), 0);
	assert_int_equal(back.mask, 1u << HUB_SUB_METHODS);
	static const char *bad[] = {"", "[]", "{\"desired\":2}", "{\"desired\":\"0\"}",
				    "{\"desired\":-1}", "{", "null"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(hub__wire_subs_decode(bad[i], strlen(bad[i]), &back), FH_EINVAL);
		assert_int_equal(back.mask, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_username),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_topics),
		cmocka_unit_test(test_subs_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
