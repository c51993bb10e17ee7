/* Unit tests for the MQTT codec: encoders round-trip through the parser,
 * every protocol violation of mqtt.h is refused, lengths are bounded before
 * the body arrives, input may come in pieces, topic filters match. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/err.h"
#include "codec/mqtt.h"

static struct mqtt_str str(const char *s)
{
	return (struct mqtt_str){s, (uint16_t)strlen(s)};
}

static void test_connect_roundtrip(void **state)
{
	for (int level = 3; level <= 4; level++) {
		struct mqtt_connect c = {.level = (uint8_t)level, .clean = level == 4, .keepalive = 240};
		c.client_id = str("dev-1");
		c.has_username = true;
		c.username = str("localhost/dev-1/?api-version=2021-04-12");
		c.has_password = true;
		c.password = (const uint8_t *)"SharedAccessSignature sr=x&sig=y&se=1";
		c.password_len = (uint16_t)strlen((const char *)c.password);
		struct buf b = BUF_INIT;
		mqtt_encode_connect(&b, &c);
		struct mqtt_packet p;
		assert_int_equal(mqtt_parse((const uint8_t *)b.data, b.len, 4096, &p), (int)b.len);
		assert_int_equal(p.type, MQTT_CONNECT);
		assert_int_equal(p.u.connect.level, level);
		assert_int_equal(p.u.connect.keepalive, 240);
		assert_int_equal(p.u.connect.clean, level == 4);
		assert_memory_equal(p.u.connect.client_id.p, "dev-1", 5);
		assert_true(p.u.connect.has_password);
		assert_int_equal(p.u.connect.password_len, c.password_len);
		/* Every proper prefix asks for more bytes. */
		for (size_t i = 0; i < b.len; i++)
			assert_int_equal(mqtt_parse((const uint8_t *)b.data, i, 4096, &p), 0);
		buf_free(&b);
	}
}

static void test_publish_roundtrip(void **state)
{
	struct buf b = BUF_INIT;
	char big[20000];
	memset(big, 'x', sizeof big);
	mqtt_encode_publish(&b, "$iothub/twin/res/200/?$rid=1", 28, 0, 0, "{}", 2);
	mqtt_encode_publish(&b, "a/b", 3, 1, 77, big, sizeof big); /* 3-byte length */
	struct mqtt_packet p;
	int n = mqtt_parse((const uint8_t *)b.data, b.len, 65536, &p);
	assert_true(n > 0);
	assert_int_equal(p.u.publish.qos, 0);
	assert_int_equal(p.u.publish.payload_len, 2);
	int m = mqtt_parse((const uint8_t *)b.data + n, b.len - (size_t)n, 65536, &p);
	assert_int_equal((size_t)n + (size_t)m, b.len);
	assert_int_equal(p.u.publish.qos, 1);
	assert_int_equal(p.u.publish.packet_id, 77);
	assert_int_equal(p.u.publish.payload_len, sizeof big);
	buf_free(&b);
}

static void test_acks_and_subscribe(void **state)
{
	struct buf b = BUF_INIT;
	struct mqtt_packet p;
	mqtt_encode_subscribe(&b, 9, "$iothub/twin/res/#", 1);
	assert_int_equal(mqtt_parse((const uint8_t *)b.data, b.len, 4096, &p), (int)b.len);
	assert_int_equal(p.type, MQTT_SUBSCRIBE);
	assert_int_equal(p.u.subscribe.count, 1);
	assert_int_equal(p.u.subscribe.qos[0], 1);
	assert_int_equal(p.u.subscribe.packet_id, 9);
	buf_reset(&b);
	uint8_t codes[2] = {1, 0x80};
	mqtt_encode_suback(&b, 9, codes, 2);
	assert_memory_equal(b.data, "\x90\x04\x00\x09\x01\x80", 6);
	buf_reset(&b);
	mqtt_encode_ack(&b, MQTT_PUBREL, 5);
	assert_memory_equal(b.data, "\x62\x02\x00\x05", 4);
	assert_int_equal(mqtt_parse((const uint8_t *)b.data, b.len, 4096, &p), 4);
	assert_int_equal(p.u.packet_id, 5);
	buf_reset(&b);
	mqtt_encode_connack(&b, true, MQTT_RC_NOT_AUTHORIZED);
	assert_memory_equal(b.data, "\x20\x02\x01\x05", 4);
	buf_reset(&b);
	mqtt_encode_pingresp(&b);
	mqtt_encode_simple(&b, MQTT_DISCONNECT);
	assert_memory_equal(b.data, "\xd0\x00\xe0\x00", 4);
	buf_free(&b);
}

static void expect(const char *bytes, size_t n, int rc)
{
	struct mqtt_packet p;
	assert_int_equal(mqtt_parse((const uint8_t *)bytes, n, 1024, &p), rc);
}

#define EXPECT(lit, rc) expect(lit, sizeof(lit) - 1, rc)

static void test_violations(void **state)
{
	EXPECT("\x30\xff\xff\xff\xff\x01", FH_EPROTO); /* five length bytes */
	EXPECT("\x30\x80\x80\x80\x01", FH_ETOOBIG);    /* 2 MiB declared, body absent */
	EXPECT("\x30\x81\x08", FH_ETOOBIG);            /* 1025 > 1024 */
	EXPECT("\x36\x03\x00\x01" "a", FH_EPROTO);     /* QoS 3 */
	EXPECT("\x32\x05\x00\x01" "a\x00\x00", FH_EPROTO); /* QoS 1 with packet id 0 */
	EXPECT("\x30\x03\x00\x01+", FH_EPROTO);        /* wildcard topic */
	EXPECT("\x30\x03\x00\x01#", FH_EPROTO);
	EXPECT("\x30\x02\x00\x00", FH_EPROTO);         /* empty topic */
	EXPECT("\x30\x04\x00\x02\xc3\x28", FH_EPROTO); /* invalid UTF-8 */
	EXPECT("\x30\x04\x00\x02" "a\x00", FH_EPROTO); /* U+0000 */
	EXPECT("\x80\x02\x00\x01", FH_EPROTO);         /* SUBSCRIBE flags 0 */
	EXPECT("\x82\x02\x00\x01", FH_EPROTO);         /* SUBSCRIBE without filters */
	EXPECT("\x82\x05\x00\x01\x00\x00\x00", FH_EPROTO); /* empty filter */
	EXPECT("\x82\x06\x00\x01\x00\x01" "a\x03", FH_EPROTO); /* QoS 3 requested */
	EXPECT("\xc1\x00", FH_EPROTO);                 /* PINGREQ flags */
	EXPECT("\xc0\x01\x00", FH_EPROTO);             /* PINGREQ with a body */
	EXPECT("\x40\x03\x00\x01\x00", FH_EPROTO);     /* PUBACK trailing byte */
	EXPECT("\xf0\x00", FH_EPROTO);                 /* type 15 */
	EXPECT("\x00\x00", FH_EPROTO);                 /* type 0 */
	/* CONNECT: wrong protocol name/level, reserved flag, password without
	 * user name, will flags without will. */
	EXPECT("\x10\x0c\x00\x04MQTT\x05\x02\x00\x3c\x00\x00", FH_EPROTO);
	EXPECT("\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00", FH_EPROTO);
	EXPECT("\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", FH_EPROTO);
	EXPECT("\x10\x0e\x00\x04MQTT\x04\x42\x00\x3c\x00\x00\x00\x00", FH_EPROTO);
	EXPECT("\x10\x0c\x00\x04MQTT\x04\x0a\x00\x3c\x00\x00", FH_EPROTO);
	EXPECT("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", 14); /* minimal valid */
	EXPECT("\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x00\x00", FH_EPROTO); /* trailing */
}

static void test_topic_match(void **state)
{
	static const struct {
		const char *f, *t;
		int m;
	} cases[] = {
		{"a/b", "a/b", 1},         {"a/b", "a/c", 0},      {"a/+", "a/b", 1},
		{"a/+", "a/b/c", 0},       {"a/#", "a", 1},        {"a/#", "a/b/c", 1},
		{"#", "a/b", 1},           {"+/b", "a/b", 1},      {"+/+", "a/b", 1},
		{"a/b/#", "a/bc", 0},      {"a", "a/b", 0},        {"a/b", "a", 0},
		{"+", "", 1},              {"a/+/c", "a//c", 1},   {"$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", 1},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		assert_int_equal(mqtt_topic_match(cases[i].f, strlen(cases[i].f), cases[i].t,
						  strlen(cases[i].t)),
				 cases[i].m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect_roundtrip),
		cmocka_unit_test(test_publish_roundtrip),
		cmocka_unit_test(test_acks_and_subscribe),
		cmocka_unit_test(test_violations),
		cmocka_unit_test(test_topic_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
