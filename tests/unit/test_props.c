/* Unit tests for src/codec/props.c: property bags as the SDKs send them
 * parse into application and system properties; what is malformed or over
 * a bound is refused with a sentence; encoding and parsing round-trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/err.h"
#include "codec/props.h"

static char *dump(const json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
}

static void check(const char *bag, const char *want_app, const char *want_sys)
{
	json_t *app, *sys;
	char err[160];
	assert_int_equal(props_parse(bag, strlen(bag), &app, &sys, err, sizeof err), 0);
	char *a = dump(app), *s = dump(sys);
	assert_string_equal(a, want_app);
	assert_string_equal(s, want_sys);
	free(a);
	free(s);
	json_decref(app);
	json_decref(sys);
}

static void refused(const char *bag, int want, const char *says)
{
	json_t *app = (json_t *)1, *sys = (json_t *)1;
	char err[160] = "";
	assert_int_equal(props_parse(bag, strlen(bag), &app, &sys, err, sizeof err), want);
	assert_null(app);
	assert_null(sys);
	assert_non_null(strstr(err, says));
}

static void test_node_sdk_bag(void **state)
{
	/* As captured from azure-iot-device-mqtt (sdk-wire.md). */
	check("%24.mid=msg-001&%24.cid=corr-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high%20temp"
	      "&level=3",
	      "{\"alert\":\"high temp\",\"level\":\"3\"}",
	      "{\"contentEncoding\":\"utf-8\",\"contentType\":\"application/json\","
	      "\"correlationId\":\"corr-1\",\"messageId\":\"msg-001\"}");
}

static void test_empty_and_bare(void **state)
{
	check("", "{}", "{}");
	check("/", "{}", "{}");
	check("a&b=&&c=1&", "{\"a\":null,\"b\":\"\",\"c\":\"1\"}", "{}");
	/* '+' is a plus, not a space; unknown system keys keep their key. */
	check("k=a+b&$.zz=1", "{\"k\":\"a+b\"}", "{\"$.zz\":\"1\"}");
	check("%24.exp=2026-12-07T10%3A00%3A00.000Z&$.to=%2Fdevices%2Fd%2Fmessages",
	      "{}", "{\"expiryTimeUtc\":\"2026-12-07T10:00:00.000Z\",\"to\":\"/devices/d/messages\"}");
}

static void test_refusals(void **state)
{
	refused("a=%zz", FH_EINVAL, "malformed");
	refused("a=%", FH_EINVAL, "malformed");
	refused("a=%00", FH_EINVAL, "NUL");
	refused("=v", FH_EINVAL, "empty name");
	refused("a=1&a=2", FH_EINVAL, "twice");
	refused("%24.mid=1&$.mid=2", FH_EINVAL, "twice");
	refused("a=%ff%fe", FH_EINVAL, "UTF-8");
	char many[PROPS_MAX_COUNT * 8];
	size_t n = 0;
	for (int i = 0; i <= PROPS_MAX_COUNT; i++)
		n += (size_t)snprintf(many + n, sizeof many - n, "%sk%d", i ? "&" : "", i);
	refused(many, FH_ETOOBIG, "more than");
	char *big = malloc(PROPS_MAX_BAG + 2);
	memset(big, 'a', PROPS_MAX_BAG + 1);
	big[PROPS_MAX_BAG + 1] = '\0';
	refused(big, FH_ETOOBIG, "bytes");
	free(big);
}

static void test_encode_roundtrip(void **state)
{
	json_t *sys = json_pack("{s:s, s:s}", "messageId", "m 1", "to", "/devices/d 1/messages/devicebound");
	json_t *app = json_pack("{s:s, s:n, s:s}", "color", "red&blue=x", "flag", "é", "ü");
	struct buf b = BUF_INIT;
	props_encode(&b, sys, app);
	buf_appendc(&b, '\0');
	assert_string_equal(b.data, "%24.mid=m%201&%24.to=%2Fdevices%2Fd%201%2Fmessages%2Fdevicebound"
				    "&color=red%26blue%3Dx&flag&%C3%A9=%C3%BC");
	json_t *app2, *sys2;
	char err[160];
	assert_int_equal(props_parse(b.data, b.len - 1, &app2, &sys2, err, sizeof err), 0);
	assert_true(json_equal(app, app2));
	assert_true(json_equal(sys, sys2));
	json_decref(app2);
	json_decref(sys2);
	json_decref(app);
	json_decref(sys);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_node_sdk_bag),
	    cmocka_unit_test(test_empty_and_bare),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_encode_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
