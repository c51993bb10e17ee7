/* Unit tests for src/core/registry.c: id validation, identity creation
 * and update from azure-iothub REST bodies (key generation, generationId,
 * statusUpdatedTime), every validation failure, rendering and accessors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/enc.h"
#include "core/registry.h"

#define KEY1 "ZGV2aWNlLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMw=="
#define KEY2 "ZGV2aWNlLWtleS1zZWNvbmRhcnktMDEyMzQ1Njc4OWE="
#define T0 "2024-01-01T00:00:00Z"
#define T1 "2024-02-02T00:00:00Z"
#define TP40 "0123456789ABCDEF0123456789abcdef01234567"
#define TP64 "0123456789ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef"

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fail_msg("bad test JSON: %s: %s", e.text, text);
	return j;
}

static const char *path_str(const json_t *o, const char *a, const char *b, const char *c)
{
	const json_t *v = json_object_get(o, a);
	if (b)
		v = json_object_get(v, b);
	if (c)
		v = json_object_get(v, c);
	return json_string_value(v);
}

/* Builds from body text; expects success. */
static json_t *build_ok(const char *id, const char *body, const json_t *existing, const char *now)
{
	json_t *b = parse(body);
	struct registry_error err;
	json_t *o = registry_build_identity(id, b, existing, now, &err);
	if (!o)
		fail_msg("rejected %s: %d %s %s", body, err.status, err.code, err.message);
	json_decref(b);
	return o;
}

/* Builds from body text; expects a 400 ArgumentInvalid naming `field`. */
static void build_bad(const char *id, const char *body, const json_t *existing, const char *field)
{
	json_t *b = parse(body);
	struct registry_error err;
	json_t *o = registry_build_identity(id, b, existing, T0, &err);
	if (o) {
		char *s = json_dumps(o, 0);
		fail_msg("accepted %s as %s", body, s);
	}
	assert_int_equal(err.status, 400);
	assert_string_equal(err.code, "ArgumentInvalid");
	if (!strstr(err.message, field))
		fail_msg("message '%s' does not name '%s'", err.message, field);
	json_decref(b);
}

static bool key_ok(const char *k)
{
	uint8_t raw[64];
	size_t n;
	return k && strlen(k) == 44 && b64_decode(k, 44, raw, &n) == 0 && n == 32;
}

static void test_id_valid(void **state)
{
	(void)state;
	assert_true(registry_id_valid("dev1"));
	assert_true(registry_id_valid("a-b:c.d+e%f_g#h*i?j!k(l)m,n=o@p$q'r"));
	assert_true(registry_id_valid("Z"));
	assert_true(registry_id_valid("..."));
	assert_false(registry_id_valid("."));
	assert_false(registry_id_valid(".."));
	char id[REGISTRY_ID_MAX + 2];
	memset(id, 'x', sizeof id);
	id[REGISTRY_ID_MAX] = '\0';
	assert_true(registry_id_valid(id));
	id[REGISTRY_ID_MAX] = 'x';
	id[REGISTRY_ID_MAX + 1] = '\0';
	assert_false(registry_id_valid(id));
	assert_false(registry_id_valid(""));
	assert_false(registry_id_valid(NULL));
	assert_false(registry_id_valid("dev 1"));
	assert_false(registry_id_valid("dev/1"));
	assert_false(registry_id_valid("dev&1"));
	assert_false(registry_id_valid("d\xc3\xa9v"));
	assert_false(registry_id_valid("dev\"1"));
}

static void test_create_generates_keys(void **state)
{
	(void)state;
	json_t *o =
	    build_ok("dev2",
	             "{\"deviceId\":\"dev2\",\"status\":\"enabled\",\"authentication\":{"
	             "\"type\":\"sas\",\"symmetricKey\":{\"primaryKey\":\"\",\"secondaryKey\":"
	             "\"\"}},\"capabilities\":{\"iotEdge\":false}}",
	             NULL, T0);
	assert_string_equal(path_str(o, "deviceId", NULL, NULL), "dev2");
	assert_string_equal(path_str(o, "status", NULL, NULL), "enabled");
	assert_string_equal(path_str(o, "statusUpdatedTime", NULL, NULL), T0);
	assert_string_equal(path_str(o, "authentication", "type", NULL), "sas");
	const char *p = registry_primary_key(o), *s = registry_secondary_key(o);
	assert_true(key_ok(p));
	assert_true(key_ok(s));
	assert_string_not_equal(p, s);
	const char *gen = path_str(o, "generationId", NULL, NULL);
	assert_non_null(gen);
	assert_int_equal(strlen(gen), 18);
	assert_memory_equal(gen, "637", 3);
	for (int i = 0; i < 18; i++)
		assert_true(gen[i] >= '0' && gen[i] <= '9');
	assert_true(registry_enabled(o));
	assert_true(json_is_false(json_object_get(json_object_get(o, "capabilities"), "iotEdge")));
	json_decref(o);

	/* No authentication at all, no deviceId in the body. */
	o = build_ok("dev3", "{}", NULL, T0);
	assert_string_equal(path_str(o, "authentication", "type", NULL), "sas");
	assert_true(key_ok(registry_primary_key(o)));
	assert_true(key_ok(registry_secondary_key(o)));
	assert_true(registry_enabled(o));
	json_decref(o);

	/* Keys object with members missing or null. */
	o = build_ok("dev4", "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":null}}}", NULL,
	             T0);
	assert_true(key_ok(registry_primary_key(o)));
	assert_true(key_ok(registry_secondary_key(o)));
	json_decref(o);
}

static void test_create_with_keys(void **state)
{
	(void)state;
	json_t *o = build_ok("dev1",
	                     "{\"deviceId\":\"dev1\",\"status\":\"enabled\",\"authentication\":{"
	                     "\"symmetricKey\":{\"primaryKey\":\"" KEY1
	                     "\",\"secondaryKey\":\"" KEY2 "\"},\"type\":\"sas\"}}",
	                     NULL, T0);
	assert_string_equal(registry_primary_key(o), KEY1);
	assert_string_equal(registry_secondary_key(o), KEY2);
	assert_true(json_is_null(
	    json_object_get(json_object_get(json_object_get(o, "authentication"), "x509Thumbprint"),
	                    "primaryThumbprint")));
	json_decref(o);

	/* Only a primary given: the secondary is generated. */
	o = build_ok("dev1",
	             "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY1 "\"}}}", NULL,
	             T0);
	assert_string_equal(registry_primary_key(o), KEY1);
	assert_true(key_ok(registry_secondary_key(o)));
	json_decref(o);

	/* 16-byte and 64-byte keys are accepted. */
	o = build_ok(
	    "dev1",
	    "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":"
	    "\"MDEyMzQ1Njc4OWFiY2RlZg==\",\"secondaryKey\":"
	    "\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4O"
	    "WFiY2RlZg==\"}}}",
	    NULL, T0);
	assert_string_equal(registry_primary_key(o), "MDEyMzQ1Njc4OWFiY2RlZg==");
	json_decref(o);
}

static void test_x509(void **state)
{
	(void)state;
	json_t *o =
	    build_ok("cam",
	             "{\"authentication\":{\"type\":\"selfSigned\",\"x509Thumbprint\":{"
	             "\"primaryThumbprint\":\"" TP40 "\",\"secondaryThumbprint\":\"" TP64 "\"}}}",
	             NULL, T0);
	assert_string_equal(path_str(o, "authentication", "type", NULL), "selfSigned");
	assert_string_equal(path_str(o, "authentication", "x509Thumbprint", "primaryThumbprint"),
	                    TP40);
	assert_string_equal(path_str(o, "authentication", "x509Thumbprint", "secondaryThumbprint"),
	                    TP64);
	assert_null(registry_primary_key(o));
	assert_null(registry_secondary_key(o));
	json_decref(o);

	/* Type inferred from thumbprints; secondary optional. */
	o = build_ok(
	    "cam", "{\"authentication\":{\"x509Thumbprint\":{\"primaryThumbprint\":\"" TP64 "\"}}}",
	    NULL, T0);
	assert_string_equal(path_str(o, "authentication", "type", NULL), "selfSigned");
	assert_true(json_is_null(
	    json_object_get(json_object_get(json_object_get(o, "authentication"), "x509Thumbprint"),
	                    "secondaryThumbprint")));
	json_decref(o);

	o = build_ok("ca", "{\"authentication\":{\"type\":\"certificateAuthority\"}}", NULL, T0);
	assert_string_equal(path_str(o, "authentication", "type", NULL), "certificateAuthority");
	assert_null(registry_primary_key(o));
	json_decref(o);

	o = build_ok("n", "{\"authentication\":{\"type\":\"none\"}}", NULL, T0);
	assert_string_equal(path_str(o, "authentication", "type", NULL), "none");
	json_decref(o);
}

static void test_update(void **state)
{
	(void)state;
	json_t *old =
	    build_ok("dev1", "{\"status\":\"enabled\",\"statusReason\":\"ok\"}", NULL, T0);
	const char *gen = path_str(old, "generationId", NULL, NULL);
	const char *pk = registry_primary_key(old);

	/* Same status: statusUpdatedTime, generationId, keys kept. */
	json_t *o =
	    build_ok("dev1",
	             "{\"deviceId\":\"dev1\",\"generationId\":\"1\",\"status\":\"enabled\","
	             "\"authentication\":{\"type\":\"sas\",\"symmetricKey\":{\"primaryKey\":\"\","
	             "\"secondaryKey\":\"\"}},\"deviceScope\":\"x\",\"parentScopes\":[],"
	             "\"etag\":\"AAAAAAAAAAE=\"}",
	             old, T1);
	assert_string_equal(path_str(o, "generationId", NULL, NULL), gen);
	assert_string_equal(path_str(o, "statusUpdatedTime", NULL, NULL), T0);
	assert_string_equal(registry_primary_key(o), pk);
	assert_string_equal(registry_secondary_key(o), registry_secondary_key(old));
	assert_string_equal(path_str(o, "statusReason", NULL, NULL), "ok");
	assert_null(json_object_get(o, "deviceScope"));
	assert_null(json_object_get(o, "parentScopes"));
	assert_null(json_object_get(o, "etag"));
	json_decref(o);

	/* Status change: new statusUpdatedTime, new reason, new keys given. */
	o = build_ok("dev1",
	             "{\"status\":\"disabled\",\"statusReason\":\"stolen\",\"authentication\":{"
	             "\"symmetricKey\":{\"primaryKey\":\"" KEY1 "\",\"secondaryKey\":\"" KEY2
	             "\"}}}",
	             old, T1);
	assert_string_equal(path_str(o, "status", NULL, NULL), "disabled");
	assert_false(registry_enabled(o));
	assert_string_equal(path_str(o, "statusUpdatedTime", NULL, NULL), T1);
	assert_string_equal(path_str(o, "statusReason", NULL, NULL), "stolen");
	assert_string_equal(path_str(o, "generationId", NULL, NULL), gen);
	assert_string_equal(registry_primary_key(o), KEY1);

	/* Status absent on update keeps "disabled"; null reason clears it. */
	json_t *o2 = build_ok("dev1", "{\"statusReason\":null}", o, "2025-01-01T00:00:00Z");
	assert_string_equal(path_str(o2, "status", NULL, NULL), "disabled");
	assert_string_equal(path_str(o2, "statusUpdatedTime", NULL, NULL), T1);
	assert_true(json_is_null(json_object_get(o2, "statusReason")));
	assert_string_equal(registry_primary_key(o2), KEY1);
	json_decref(o2);

	/* Switching to x509 drops the keys; switching back generates new ones. */
	o2 = build_ok("dev1",
	              "{\"authentication\":{\"x509Thumbprint\":{\"primaryThumbprint\":\"" TP40
	              "\"}}}",
	              o, T1);
	assert_null(registry_primary_key(o2));
	json_t *o3 = build_ok("dev1", "{}", o2, T1);
	assert_true(key_ok(registry_primary_key(o3)));
	assert_string_not_equal(registry_primary_key(o3), KEY1);
	json_decref(o3);
	json_decref(o2);
	json_decref(o);

	/* Capabilities kept when absent on update. */
	o = build_ok("e", "{\"capabilities\":{\"iotEdge\":true}}", NULL, T0);
	o2 = build_ok("e", "{}", o, T0);
	assert_true(json_is_true(json_object_get(json_object_get(o2, "capabilities"), "iotEdge")));
	json_decref(o2);
	json_decref(o);

	/* Case-insensitive status is normalised. */
	o = build_ok("e", "{\"status\":\"Disabled\"}", NULL, T0);
	assert_string_equal(path_str(o, "status", NULL, NULL), "disabled");
	json_decref(o);
	json_decref(old);
}

static void test_validation_failures(void **state)
{
	(void)state;
	build_bad("dev 1", "{}", NULL, "deviceId");
	build_bad("dev1", "{\"deviceId\":\"dev2\"}", NULL, "deviceId");
	build_bad("dev1", "{\"deviceId\":\"DEV1\"}", NULL, "deviceId");
	build_bad("dev1", "{\"deviceId\":5}", NULL, "deviceId");
	build_bad("dev1", "[]", NULL, "body");
	build_bad("dev1", "{\"status\":\"on\"}", NULL, "status");
	build_bad("dev1", "{\"status\":1}", NULL, "status");
	build_bad("dev1", "{\"statusReason\":1}", NULL, "statusReason");
	build_bad("dev1", "{\"capabilities\":1}", NULL, "capabilities");
	build_bad("dev1", "{\"capabilities\":{\"iotEdge\":\"yes\"}}", NULL, "iotEdge");
	build_bad("dev1", "{\"authentication\":\"sas\"}", NULL, "authentication");
	build_bad("dev1", "{\"authentication\":{\"type\":\"tpm\"}}", NULL, "authentication.type");
	build_bad("dev1", "{\"authentication\":{\"type\":7}}", NULL, "authentication.type");
	build_bad("dev1", "{\"authentication\":{\"symmetricKey\":[]}}", NULL, "symmetricKey");
	build_bad("dev1", "{\"authentication\":{\"x509Thumbprint\":1}}", NULL, "x509Thumbprint");
	build_bad("dev1", "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"abc\"}}}", NULL,
	          "primaryKey");
	build_bad("dev1", "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":3}}}", NULL,
	          "primaryKey");
	/* 15 bytes: too short */
	build_bad(
	    "dev1",
	    "{\"authentication\":{\"symmetricKey\":{\"secondaryKey\":\"MDEyMzQ1Njc4OWFiY2Rl\"}}}",
	    NULL, "secondaryKey");
	/* 65 bytes: too long */
	build_bad(
	    "dev1",
	    "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":"
	    "\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFi"
	    "Y2RlZjA=\"}}}",
	    NULL, "primaryKey");
	build_bad("dev1", "{\"authentication\":{\"type\":\"selfSigned\"}}", NULL,
	          "primaryThumbprint");
	build_bad("dev1",
	          "{\"authentication\":{\"type\":\"selfSigned\",\"x509Thumbprint\":{"
	          "\"primaryThumbprint\":\"abc\"}}}",
	          NULL, "primaryThumbprint");
	build_bad("dev1",
	          "{\"authentication\":{\"type\":\"selfSigned\",\"x509Thumbprint\":{"
	          "\"primaryThumbprint\":\"" TP40 "\",\"secondaryThumbprint\":\"" TP40 "0\"}}}",
	          NULL, "secondaryThumbprint");
	build_bad("dev1",
	          "{\"authentication\":{\"type\":\"selfSigned\",\"x509Thumbprint\":{"
	          "\"primaryThumbprint\":\"G123456789ABCDEF0123456789abcdef01234567\"}}}",
	          NULL, "primaryThumbprint");

	/* A NULL body is rejected too. */
	struct registry_error err;
	assert_null(registry_build_identity("dev1", NULL, NULL, T0, &err));
	assert_int_equal(err.status, 400);
}

static void test_render(void **state)
{
	(void)state;
	json_t *id = build_ok("dev1",
	                      "{\"authentication\":{\"symmetricKey\":{\"primaryKey\":\"" KEY1
	                      "\",\"secondaryKey\":\"" KEY2 "\"}}}",
	                      NULL, T0);
	json_t *r = registry_render(id, 1, false, NULL, NULL);
	assert_string_equal(path_str(r, "deviceId", NULL, NULL), "dev1");
	assert_string_equal(path_str(r, "etag", NULL, NULL), "AAAAAAAAAAE=");
	assert_string_equal(path_str(r, "connectionState", NULL, NULL), "Disconnected");
	assert_string_equal(path_str(r, "connectionStateUpdatedTime", NULL, NULL),
	                    "0001-01-01T00:00:00Z");
	assert_string_equal(path_str(r, "lastActivityTime", NULL, NULL), "0001-01-01T00:00:00Z");
	assert_string_equal(path_str(r, "statusUpdatedTime", NULL, NULL), T0);
	assert_int_equal(json_integer_value(json_object_get(r, "cloudToDeviceMessageCount")), 0);
	assert_true(json_is_integer(json_object_get(r, "cloudToDeviceMessageCount")));
	assert_string_equal(path_str(r, "generationId", NULL, NULL),
	                    path_str(id, "generationId", NULL, NULL));
	assert_string_equal(registry_primary_key(r), KEY1);
	assert_string_equal(path_str(r, "status", NULL, NULL), "enabled");
	assert_true(json_is_object(json_object_get(r, "capabilities")));
	/* The identity itself is untouched. */
	assert_null(json_object_get(id, "etag"));
	json_decref(r);

	r = registry_render(id, 0x0102030405060708LL, true, T1, "2024-03-03T00:00:00Z");
	assert_string_equal(path_str(r, "etag", NULL, NULL), "AQIDBAUGBwg=");
	assert_string_equal(path_str(r, "connectionState", NULL, NULL), "Connected");
	assert_string_equal(path_str(r, "connectionStateUpdatedTime", NULL, NULL), T1);
	assert_string_equal(path_str(r, "lastActivityTime", NULL, NULL), "2024-03-03T00:00:00Z");
	json_decref(r);
	json_decref(id);

	/* A minimal stored document renders with defaults. */
	id = parse("{\"deviceId\":\"x\",\"status\":\"disabled\"}");
	r = registry_render(id, 2, false, NULL, NULL);
	assert_string_equal(path_str(r, "etag", NULL, NULL), "AAAAAAAAAAI=");
	assert_string_equal(path_str(r, "statusUpdatedTime", NULL, NULL), "0001-01-01T00:00:00Z");
	assert_string_equal(path_str(r, "status", NULL, NULL), "disabled");
	json_decref(r);
	json_decref(id);
}

static void test_accessors(void **state)
{
	(void)state;
	assert_null(registry_primary_key(NULL));
	assert_false(registry_enabled(NULL));
	json_t *j = parse("{\"status\":\"enabled\",\"authentication\":{\"symmetricKey\":{"
	                  "\"primaryKey\":\"\",\"secondaryKey\":null}}}");
	assert_null(registry_primary_key(j));
	assert_null(registry_secondary_key(j));
	assert_true(registry_enabled(j));
	json_decref(j);
	j = parse("{\"status\":\"Enabled\",\"authentication\":7}");
	assert_false(registry_enabled(j));
	assert_null(registry_primary_key(j));
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_id_valid),         cmocka_unit_test(test_create_generates_keys),
	    cmocka_unit_test(test_create_with_keys), cmocka_unit_test(test_x509),
	    cmocka_unit_test(test_update),           cmocka_unit_test(test_validation_failures),
	    cmocka_unit_test(test_render),           cmocka_unit_test(test_accessors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
