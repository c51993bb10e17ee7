/* Unit tests for src/core/allocation.c and src/core/enrollment.c: candidate
 * hubs, weighted hashing (stable, weighted, minimal movement), the webhook
 * request (no keys), every webhook answer of the outcome table, the
 * reprovisioning matrix, enrollment validation, etags, and per-registration
 * key derivation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/allocation.h"
#include "core/enrollment.h"

#define GROUP_KEY "Z3JvdXAta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="
#define T0 "2024-01-01T00:00:00Z"
/* alloc_hashed over hub1/hub2.azure-devices.net for dev-0 .. dev-19, computed
 * independently (Python: hashlib.sha256, the same formula). */
#define HASH_KAT "11121222212122121212"

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fail_msg("bad test JSON: %s: %s", e.text, text);
	return j;
}

static const struct alloc_hub linked[] = {
    {"hub1.example.test", 1, true},
    {"hub2.example.test", 1, true},
    {"hub3.example.test", 1, false},
};

static const char *const hub_names[] = {"hub1.example.test", "hub2.example.test",
                                        "hub3.example.test"};
static const struct enrollment_hubs hubs = {hub_names, 3};

/* ---- candidates ---------------------------------------------------------- */

/* The names alloc_candidates picks for record_text, joined by ' '. */
static void expect_candidates(const char *record_text, size_t max, const char *want)
{
	const struct alloc_hub *out[4];
	char got[256] = "";
	json_t *r = parse(record_text);
	size_t n = alloc_candidates(r, linked, 3, out, max);
	assert_true(n <= max);
	for (size_t i = 0; i < n; i++) {
		strcat(got, i ? " " : "");
		strcat(got, out[i]->name);
		assert_true(out[i] >= linked && out[i] < linked + 3); /* borrowed from linked */
	}
	if (strcmp(got, want) != 0)
		fail_msg("%s: got '%s', want '%s'", record_text, got, want);
	json_decref(r);
}

static void test_candidates(void **state)
{
	/* iotHubs: a subset of the linked hubs, in any case, unlinked dropped */
	expect_candidates("{\"iotHubs\":[\"HUB2.example.test\",\"gone.example.test\"]}", 3,
	                  "hub2.example.test");
	expect_candidates("{\"iotHubs\":[\"hub3.example.test\",\"hub1.example.test\"]}", 3,
	                  "hub1.example.test hub3.example.test");
	expect_candidates("{\"iotHubs\":[\"hub1.example.test\",\"Hub1.Example.Test\"]}", 3,
	                  "hub1.example.test"); /* each hub once */
	/* every named hub unlinked: nothing, not a fallback to all hubs */
	expect_candidates("{\"iotHubs\":[\"gone.example.test\",7]}", 3, "");
	expect_candidates("{\"iotHubs\":[\"hub1.example\"]}", 3, ""); /* no prefix match */
	/* iotHubs wins over iotHubHostName */
	expect_candidates("{\"iotHubs\":[\"hub1.example.test\"],\"iotHubHostName\":"
	                  "\"hub2.example.test\"}",
	                  3, "hub1.example.test");
	/* iotHubHostName when iotHubs is empty or absent; apply_policy does not matter */
	expect_candidates("{\"iotHubs\":[],\"iotHubHostName\":\"hub3.example.test\"}", 3,
	                  "hub3.example.test");
	expect_candidates("{\"iotHubHostName\":\"HUB1.EXAMPLE.TEST\"}", 3, "hub1.example.test");
	expect_candidates("{\"iotHubHostName\":\"gone.example.test\"}", 3, "");
	/* none named: every hub that applies allocation policies */
	expect_candidates("{}", 3, "hub1.example.test hub2.example.test");
	expect_candidates("{\"iotHubs\":[],\"iotHubHostName\":\"\"}", 3,
	                  "hub1.example.test hub2.example.test");
	expect_candidates("{\"iotHubs\":null,\"iotHubHostName\":null}", 3,
	                  "hub1.example.test hub2.example.test");
	/* max bounds the output */
	expect_candidates("{}", 1, "hub1.example.test");
	expect_candidates("{}", 0, "");
}

/* ---- hashed -------------------------------------------------------------- */

static void test_hashed_stable(void **state)
{
	struct alloc_hub a = {"a.test", 1, true}, b = {"b.test", 1, true}, c = {"c.test", 1, true};
	const struct alloc_hub *abc[] = {&a, &b, &c}, *cab[] = {&c, &a, &b};
	const struct alloc_hub *one[] = {&b};
	char id[32];
	for (int i = 0; i < 2000; i++) {
		snprintf(id, sizeof id, "device-%d", i);
		const struct alloc_hub *h = alloc_hashed(id, abc, 3);
		assert_ptr_equal(h, alloc_hashed(id, abc, 3)); /* deterministic */
		assert_ptr_equal(h, alloc_hashed(id, cab, 3)); /* order does not matter */
		assert_ptr_equal(alloc_hashed(id, one, 1), &b);
	}
	/* ids longer than any stack buffer hash whole: a difference at the end counts */
	char long_a[2048], long_b[2048];
	memset(long_a, 'x', sizeof long_a - 1);
	long_a[sizeof long_a - 1] = '\0';
	memcpy(long_b, long_a, sizeof long_b);
	int differ = 0;
	for (char ch = 'a'; ch <= 'z'; ch++) {
		long_b[sizeof long_b - 2] = ch;
		assert_ptr_equal(alloc_hashed(long_b, abc, 3), alloc_hashed(long_b, abc, 3));
		differ += alloc_hashed(long_b, abc, 3) != alloc_hashed(long_a, abc, 3);
	}
	assert_true(differ > 0);
	/* a known answer, so a change of the hash (which would move devices on
	 * their next registration) cannot go unnoticed */
	struct alloc_hub h1 = {"hub1.azure-devices.net", 1, true},
	                 h2 = {"hub2.azure-devices.net", 1, true};
	const struct alloc_hub *pair[] = {&h1, &h2};
	char seq[21] = "";
	for (int i = 0; i < 20; i++) {
		snprintf(id, sizeof id, "dev-%d", i);
		seq[i] = alloc_hashed(id, pair, 2) == &h1 ? '1' : '2';
	}
	assert_string_equal(seq, HASH_KAT);
}

static void test_hashed_weights(void **state)
{
	struct alloc_hub a = {"a.test", 1, true}, b = {"b.test", 3, true}, c = {"c.test", 1, true};
	const struct alloc_hub *two[] = {&a, &b}, *three[] = {&a, &b, &c};
	int count_a = 0, count_b = 0, moved_to_c = 0, moved_elsewhere = 0;
	char id[32];
	for (int i = 0; i < 20000; i++) {
		snprintf(id, sizeof id, "device-%d", i);
		const struct alloc_hub *h = alloc_hashed(id, two, 2);
		count_a += h == &a;
		count_b += h == &b;
		const struct alloc_hub *h3 = alloc_hashed(id, three, 3);
		if (h3 == &c)
			moved_to_c++;
		else if (h3 != h)
			moved_elsewhere++;
		/* removing c moves only c's devices back */
		const struct alloc_hub *back[] = {&a, &b};
		if (h3 != &c)
			assert_ptr_equal(alloc_hashed(id, back, 2), h3);
	}
	assert_int_equal(count_a + count_b, 20000);
	/* weight 3 against 1: b gets 3 times a's devices, within 10 % */
	double ratio = (double)count_b / count_a;
	if (ratio < 2.7 || ratio > 3.3)
		fail_msg("b/a = %d/%d = %.3f, want 3 +- 10%%", count_b, count_a, ratio);
	/* adding c (weight 1 of 5) takes about a fifth, and only moves devices to c */
	assert_int_equal(moved_elsewhere, 0);
	assert_true(moved_to_c > 3600 && moved_to_c < 4400);
	/* weight 0 counts as 1 */
	struct alloc_hub z = {"z.test", 0, true}, y = {"y.test", 1, true};
	const struct alloc_hub *zy[] = {&z, &y};
	int count_z = 0;
	for (int i = 0; i < 4000; i++) {
		snprintf(id, sizeof id, "device-%d", i);
		count_z += alloc_hashed(id, zy, 2) == &z;
	}
	assert_true(count_z > 1800 && count_z < 2200);
	assert_null(alloc_hashed("device-1", zy, 0));
}

/* ---- webhook request ----------------------------------------------------- */

static json_t *group_record(const char *extra)
{
	char text[2048];
	snprintf(
	    text, sizeof text,
	    "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"%s\","
	    "\"secondaryKey\":\"%s\"}}%s%s}",
	    GROUP_KEY, GROUP_KEY, extra[0] ? "," : "", extra);
	struct enrollment_error err;
	json_t *body = parse(text);
	json_t *rec = enrollment_build(ENROLLMENT_GROUP, "Group-A", body, NULL, &hubs, T0, &err);
	json_decref(body);
	if (!rec)
		fail_msg("build failed: %s", err.message);
	return rec;
}

static void test_webhook_request(void **state)
{
	json_t *rec = group_record("\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":"
	                           "{\"webhookUrl\":\"https://fn.example.test/api/a?code=k\","
	                           "\"apiVersion\":\"2021-10-01\"}");
	const struct alloc_hub *c[] = {&linked[1], &linked[0]};
	json_t *payload = parse("{\"modelId\":\"toaster\"}");
	json_t *req = alloc_webhook_request(rec, ENROLLMENT_GROUP, NULL, "dev-1", payload,
	                                    "hub1.example.test", "dev-1-id", c, 2);
	char *text = json_dumps(req, JSON_COMPACT);
	assert_null(strstr(text, GROUP_KEY)); /* no key material */
	assert_null(strstr(text, "primaryKey"));
	free(text);
	assert_int_equal(json_object_size(req), 3);
	assert_null(json_object_get(req, "individualEnrollment"));
	json_t *group = json_object_get(req, "enrollmentGroup");
	assert_string_equal(json_string_value(json_object_get(group, "enrollmentGroupId")),
	                    "Group-A");
	assert_string_equal(json_string_value(json_object_get(group, "allocationPolicy")),
	                    "custom");
	assert_non_null(json_object_get(group, "customAllocationDefinition"));
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(group, "attestation"), "type")),
	    "symmetricKey");
	json_t *ctx = json_object_get(req, "deviceRuntimeContext");
	assert_int_equal(json_object_size(ctx), 5);
	assert_string_equal(json_string_value(json_object_get(ctx, "registrationId")), "dev-1");
	assert_true(json_is_object(json_object_get(ctx, "symmetricKey")));
	assert_int_equal(json_object_size(json_object_get(ctx, "symmetricKey")), 0);
	assert_true(json_equal(json_object_get(ctx, "payload"), payload));
	assert_string_equal(json_string_value(json_object_get(ctx, "currentIotHubHostName")),
	                    "hub1.example.test");
	assert_string_equal(json_string_value(json_object_get(ctx, "currentDeviceId")), "dev-1-id");
	json_t *lh = json_object_get(req, "linkedHubs");
	assert_int_equal(json_array_size(lh), 2);
	assert_string_equal(json_string_value(json_array_get(lh, 0)), "hub2.example.test");
	assert_string_equal(json_string_value(json_array_get(lh, 1)), "hub1.example.test");
	json_decref(req);

	/* first registration: no current hub or device, no payload */
	req = alloc_webhook_request(rec, ENROLLMENT_GROUP, NULL, "dev-1", NULL, NULL, NULL, c, 2);
	ctx = json_object_get(req, "deviceRuntimeContext");
	assert_int_equal(json_object_size(ctx), 2); /* registrationId, symmetricKey */
	assert_null(json_object_get(ctx, "currentIotHubHostName"));
	assert_null(json_object_get(ctx, "currentDeviceId"));
	assert_null(json_object_get(ctx, "payload"));
	json_decref(req);
	json_decref(payload);
	json_decref(rec);

	/* individual enrollments, each attestation type */
	static const struct {
		const char *attestation, *key; /* key: the runtime context member, or NULL */
	} kinds[] = {
	    {"{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{}}}", "x509"},
	    {"{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"EKSECRET\"}}", "tpm"},
	    {"{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" GROUP_KEY "\"}}",
	     "symmetricKey"},
	    {"{\"type\":\"none\"}", NULL},
	};
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		char rt[512];
		snprintf(rt, sizeof rt, "{\"registrationId\":\"dev-2\",\"attestation\":%s}",
		         kinds[i].attestation);
		rec = parse(rt);
		req = alloc_webhook_request(rec, ENROLLMENT_INDIVIDUAL, NULL, "dev-2", NULL, NULL,
		                            NULL, c, 1);
		assert_null(json_object_get(req, "enrollmentGroup"));
		assert_string_equal(
		    json_string_value(json_object_get(json_object_get(req, "individualEnrollment"),
		                                      "registrationId")),
		    "dev-2");
		ctx = json_object_get(req, "deviceRuntimeContext");
		assert_int_equal(json_object_size(ctx), kinds[i].key ? 2 : 1);
		if (kinds[i].key) {
			json_t *m = json_object_get(ctx, kinds[i].key);
			assert_true(json_is_object(m) && json_object_size(m) == 0);
		}
		text = json_dumps(req, JSON_COMPACT);
		assert_null(strstr(text, "EKSECRET"));
		assert_null(strstr(text, GROUP_KEY));
		free(text);
		assert_int_equal(json_array_size(json_object_get(req, "linkedHubs")), 1);
		json_decref(req);
		json_decref(rec);
	}
	/* What an X.509 attestation proved goes to the webhook as it is. */
	rec = parse("{\"registrationId\":\"dev-3\",\"attestation\":{\"type\":\"x509\"}}");
	json_t *proved = parse("{\"certificateInfo\":{\"subjectName\":\"CN=dev-3\"},"
	                       "\"enrollmentGroupId\":\"g\"}");
	req = alloc_webhook_request(rec, ENROLLMENT_INDIVIDUAL, proved, "dev-3", NULL, NULL, NULL,
	                            c, 1);
	assert_true(json_equal(json_object_get(json_object_get(req, "deviceRuntimeContext"), "x509"),
	                       proved));
	json_decref(req);
	json_decref(proved);
	json_decref(rec);
}

/* ---- webhook response ---------------------------------------------------- */

static const struct alloc_hub *const two_hubs[] = {&linked[0], &linked[1]};

static void answer(int status, const char *body, struct alloc_result *r)
{
	alloc_parse_response(status, body, body ? strlen(body) : 0, "timed out after 5 ms",
	                     two_hubs, 2, r);
	assert_true(strlen(r->message) < sizeof r->message);
}

static void expect(int status, const char *body, enum alloc_outcome outcome, int code,
                   const char *in_message)
{
	struct alloc_result r;
	answer(status, body, &r);
	if (r.outcome != outcome)
		fail_msg("%d %s: outcome %d, want %d (%s)", status, body ? body : "(null)",
		         (int)r.outcome, (int)outcome, r.message);
	if (outcome == ALLOC_FAILED)
		assert_int_equal(r.error_code, code);
	if (outcome != ALLOC_OK) {
		assert_null(r.initial_twin);
		assert_null(r.payload);
		assert_string_equal(r.hub, "");
	}
	if (in_message && !strstr(r.message, in_message))
		fail_msg("'%s' not in '%s'", in_message, r.message);
	alloc_result_clear(&r);
}

/* 200 answers that assign: hub, and the initial twin and payload as JSON
 * text ("" for none). */
static void expect_ok(const char *body, const char *hub, const char *twin, const char *payload)
{
	struct alloc_result r;
	answer(200, body, &r);
	if (r.outcome != ALLOC_OK)
		fail_msg("%s: %s", body, r.message);
	assert_string_equal(r.hub, hub);
	assert_int_equal(r.error_code, 0);
	const struct {
		json_t *got;
		const char *want;
	} parts[] = {{r.initial_twin, twin}, {r.payload, payload}};
	for (int i = 0; i < 2; i++) {
		if (!*parts[i].want) {
			assert_null(parts[i].got);
			continue;
		}
		json_t *want = json_loads(parts[i].want, JSON_DECODE_ANY, NULL);
		assert_non_null(want);
		if (!json_equal(parts[i].got, want)) {
			char *g = json_dumps(parts[i].got, JSON_COMPACT | JSON_ENCODE_ANY);
			fail_msg("%s: got %s, want %s", body, g ? g : "NULL", parts[i].want);
		}
		json_decref(want);
	}
	alloc_result_clear(&r);
	assert_null(r.initial_twin);
	assert_null(r.payload);
	alloc_result_clear(&r); /* twice is harmless */
}

static void test_response_ok(void **state)
{
	expect_ok("{\"iotHubHostName\":\"HUB2.example.test\",\"initialTwin\":{\"tags\":"
	          "{\"t\":1},\"properties\":{\"desired\":{\"d\":2}}},\"payload\":{\"p\":3}}",
	          "hub2.example.test",
	          "{\"tags\":{\"t\":1},\"properties\":{\"desired\":{\"d\":2}}}", "{\"p\":3}");
	/* the hub key in any case; the hub always comes back in its canonical form */
	expect_ok("{\"iotHubHostname\":\"hub1.example.test\"}", "hub1.example.test", "", "");
	expect_ok("{\"IotHubHostName\":\"Hub1.Example.Test\"}", "hub1.example.test", "", "");
	/* returnData, the older name of payload; payload wins when both come */
	expect_ok("{\"iotHubHostName\":\"hub1.example.test\",\"returnData\":[1]}",
	          "hub1.example.test", "", "[1]");
	expect_ok("{\"iotHubHostName\":\"hub1.example.test\",\"returnData\":1,\"payload\":2}",
	          "hub1.example.test", "", "2");
	expect_ok(
	    "{\"iotHubHostName\":\"hub1.example.test\",\"payload\":null,\"returnData\":\"r\"}",
	    "hub1.example.test", "", "\"r\"");
	expect_ok("{\"iotHubHostName\":\"hub1.example.test\",\"Payload\":{\"x\":true}}",
	          "hub1.example.test", "", "{\"x\":true}");
	/* initialTwin: null means none; missing parts become empty objects; extras of a
	 * full Twin object are ignored */
	expect_ok("{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":null}",
	          "hub1.example.test", "", "");
	expect_ok("{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":{}}",
	          "hub1.example.test", "{\"tags\":{},\"properties\":{\"desired\":{}}}", "");
	expect_ok("{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":{\"tags\":{\"a\":1},"
	          "\"properties\":null}}",
	          "hub1.example.test", "{\"tags\":{\"a\":1},\"properties\":{\"desired\":{}}}", "");
	expect_ok("{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":{\"tags\":null,"
	          "\"deviceId\":\"x\",\"etag\":\"e\",\"properties\":{\"desired\":{\"d\":1},"
	          "\"reported\":{\"r\":1}}}}",
	          "hub1.example.test", "{\"tags\":{},\"properties\":{\"desired\":{\"d\":1}}}", "");
	expect_ok("{\"iotHubHostName\":\"hub1.example.test\",\"InitialTwin\":{\"Tags\":{\"a\":1},"
	          "\"Properties\":{\"Desired\":{\"d\":1}}}}",
	          "hub1.example.test",
	          "{\"tags\":{\"a\":1},\"properties\":{\"desired\":{\"d\":1}}}", "");
	/* a UTF-8 byte order mark, as some .NET writers put first */
	expect_ok("\xEF\xBB\xBF{\"iotHubHostName\":\"hub2.example.test\"}", "hub2.example.test", "",
	          "");
	/* whitespace around the document */
	expect_ok(" \r\n{\"iotHubHostName\":\"hub2.example.test\"}\n", "hub2.example.test", "", "");
}

static void test_response_200_failures(void **state)
{
	/* no hub: 400208 */
	expect(200, "{}", ALLOC_FAILED, 400208,
	       "Custom allocation webhook did not specify iotHubHostName");
	expect(200, "{\"iotHubHostName\":null}", ALLOC_FAILED, 400208, "did not specify");
	expect(200, "{\"iotHubHostName\":\"\"}", ALLOC_FAILED, 400208, "did not specify");
	expect(200, "{\"payload\":{\"iotHubHostName\":\"hub1.example.test\"}}", ALLOC_FAILED,
	       400208, NULL);
	/* a hub that is not a candidate (hub3 is linked but not a candidate here) */
	expect(200, "{\"iotHubHostName\":\"hub3.example.test\"}", ALLOC_FAILED, 400207,
	       "Custom allocation webhook returned hub 'hub3.example.test', which is not one of "
	       "the linked hubs: hub1.example.test, hub2.example.test");
	expect(200, "{\"iotHubHostName\":\"hub1.example.test:443\"}", ALLOC_FAILED, 400207,
	       "'hub1.example.test:443'");
	expect(200, "{\"iotHubHostName\":\"hub1.example.tes\"}", ALLOC_FAILED, 400207,
	       "not one of the linked hubs");
	expect(200, "{\"iotHubHostName\":\"evil\\u001b[2J\\nhub\"}", ALLOC_FAILED, 400207,
	       "'evil?[2J?hub'"); /* control characters are not echoed */
	expect(
	    200,
	    "{\"iotHubHostName\":"
	    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "\"}",
	    ALLOC_FAILED, 400207, "...', which is not one of the linked hubs: hub1");
	/* the hub is not a string */
	expect(200, "{\"iotHubHostName\":42}", ALLOC_FAILED, 400207,
	       "returned iotHubHostName as a number; it must be a string");
	expect(200, "{\"iotHubHostName\":[\"hub1.example.test\"]}", ALLOC_FAILED, 400207,
	       "as an array");
	/* not JSON, not UTF-8, not one document */
	expect(200, "{\"iotHubHostName\":", ALLOC_FAILED, 400207,
	       "Custom allocation webhook answered with invalid JSON: ");
	expect(200, "", ALLOC_FAILED, 400207, "invalid JSON: the body is empty");
	expect(200, NULL, ALLOC_FAILED, 400207, "invalid JSON");
	expect(200, "<html>OK</html>", ALLOC_FAILED, 400207, "invalid JSON");
	expect(200, "{\"iotHubHostName\":\"hub1.example.test\"} {}", ALLOC_FAILED, 400207,
	       "invalid JSON");
	expect(200, "{\"iotHubHostName\":\"hub1.example.test\xff\"}", ALLOC_FAILED, 400207,
	       "invalid JSON");
	expect(200, "{\"iotHubHostName\":\"hub1.example.test\\u0000x\"}", ALLOC_FAILED, 400207,
	       "invalid JSON");
	/* duplicate keys: which one was meant cannot be known */
	expect(
	    200,
	    "{\"iotHubHostName\":\"hub1.example.test\",\"iotHubHostName\":\"hub2.example.test\"}",
	    ALLOC_FAILED, 400207, "invalid JSON: duplicate object key");
	expect(
	    200,
	    "{\"iotHubHostName\":\"hub1.example.test\",\"iothubhostname\":\"hub2.example.test\"}",
	    ALLOC_FAILED, 400207, "returned iotHubHostName more than once");
	expect(200, "{\"iotHubHostName\":\"hub1.example.test\",\"payload\":1,\"PAYLOAD\":2}",
	       ALLOC_FAILED, 400207, "payload more than once");
	/* not an object */
	expect(200, "[1]", ALLOC_FAILED, 400207,
	       "Custom allocation webhook answered with an array, not an object");
	expect(200, "\"hub1.example.test\"", ALLOC_FAILED, 400207, "with a string, not an object");
	expect(200, "null", ALLOC_FAILED, 400207, "with null, not an object");
	expect(200, "3", ALLOC_FAILED, 400207, "with a number, not an object");
	/* a malformed initialTwin, naming the part */
	expect(200, "{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":[]}", ALLOC_FAILED,
	       400207, "returned initialTwin as an array; it must be an object");
	expect(200, "{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":{\"tags\":3}}",
	       ALLOC_FAILED, 400207, "initialTwin.tags as a number");
	expect(200,
	       "{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":{\"properties\":\"p\"}}",
	       ALLOC_FAILED, 400207, "initialTwin.properties as a string");
	expect(200,
	       "{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":{\"properties\":{"
	       "\"desired\":"
	       "true}}}",
	       ALLOC_FAILED, 400207, "initialTwin.properties.desired as a boolean");
	expect(
	    200,
	    "{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":{\"tags\":{},\"TAGS\":{}}}",
	    ALLOC_FAILED, 400207, "initialTwin.tags more than once");

	/* bounded: an answer past 256 KiB is refused before parsing */
	size_t big = 256 * 1024 + 1;
	char *body = malloc(big + 1);
	memset(body, ' ', big);
	memcpy(body, "{\"iotHubHostName\":\"hub1.example.test\"}", 38);
	body[big] = '\0';
	expect(200, body, ALLOC_FAILED, 400207, "more than the 262144 allowed");
	body[big - 1] = '\0'; /* exactly the limit is fine */
	expect(200, body, ALLOC_OK, 0, NULL);
	free(body);

	/* no candidates at all */
	struct alloc_result r;
	const char *b = "{\"iotHubHostName\":\"hub1.example.test\"}";
	alloc_parse_response(200, b, strlen(b), NULL, two_hubs, 0, &r);
	assert_int_equal(r.outcome, ALLOC_FAILED);
	assert_int_equal(r.error_code, 400207);
	assert_non_null(strstr(r.message, "linked hubs: (none)"));
	alloc_result_clear(&r);

	/* many candidates: the list is cut, the sentence stays whole */
	struct alloc_hub many[12];
	const struct alloc_hub *mp[12];
	char names[12][40];
	for (int i = 0; i < 12; i++) {
		snprintf(names[i], sizeof names[i], "hub-number-%02d.example.test", i);
		many[i] = (struct alloc_hub){names[i], 1, true};
		mp[i] = &many[i];
	}
	b = "{\"iotHubHostName\":\"other.example.test\"}";
	alloc_parse_response(200, b, strlen(b), NULL, mp, 12, &r);
	assert_int_equal(r.error_code, 400207);
	assert_non_null(strstr(r.message, "linked hubs: hub-number-00.example.test, "));
	assert_int_equal(strcmp(r.message + strlen(r.message) - 3, "..."), 0);
	alloc_result_clear(&r);
}

static void test_response_status(void **state)
{
	expect(401, "", ALLOC_FAILED, 400209,
	       "Custom allocation webhook refused the call: 401 Unauthorized");
	expect(401, "{\"iotHubHostName\":\"hub1.example.test\"}", ALLOC_FAILED, 400209, NULL);
	expect(400, "", ALLOC_FAILED, 400207, "Custom allocation failed with status code: 400");
	expect(404, "nope", ALLOC_FAILED, 400207, "Custom allocation failed with status code: 404");
	expect(403, NULL, ALLOC_FAILED, 400207, "status code: 403");
	expect(302, NULL, ALLOC_FAILED, 400207, "status code: 302");
	/* only 200 assigns, even with a valid body */
	expect(201, "{\"iotHubHostName\":\"hub1.example.test\"}", ALLOC_FAILED, 400207,
	       "status code: 201");
	expect(204, NULL, ALLOC_FAILED, 400207, "status code: 204");
	expect(428, NULL, ALLOC_FAILED, 400207, "status code: 428");
	/* 429 and 5xx: retried by the caller */
	expect(429, "", ALLOC_RETRY, 0, "status code 429");
	expect(500, "", ALLOC_RETRY, 0, "status code 500");
	expect(503, "{\"iotHubHostName\":\"hub1.example.test\"}", ALLOC_RETRY, 0, "503");
	expect(504, NULL, ALLOC_RETRY, 0, NULL);
	/* no answer: retried, with the transport's reason */
	expect(0, NULL, ALLOC_RETRY, 0,
	       "Custom allocation webhook could not be called: timed out after 5 ms");
	struct alloc_result r;
	alloc_parse_response(0, NULL, 0, NULL, two_hubs, 2, &r);
	assert_int_equal(r.outcome, ALLOC_RETRY);
	assert_non_null(strstr(r.message, "no answer"));
	alloc_result_clear(&r);
}

/* ---- reprovisioning ------------------------------------------------------ */

static void reprov(const char *policy, const char *prev, const char *initial, const char *now,
                   enum reprov_action action, const char *hub, const char *substatus)
{
	char text[256];
	snprintf(text, sizeof text, "{\"reprovisionPolicy\":%s}", policy);
	json_t *rec = parse(text);
	struct reprov_decision d;
	alloc_reprovision(rec, prev, initial, now, &d);
	if (d.action != action || strcmp(d.hub, hub) != 0 || strcmp(d.substatus, substatus) != 0)
		fail_msg("%s prev=%s initial=%s new=%s: got %d %s %s, want %d %s %s", policy,
		         prev ? prev : "-", initial ? initial : "-", now, (int)d.action, d.hub,
		         d.substatus, (int)action, hub, substatus);
	json_decref(rec);
}

static void test_reprovision(void **state)
{
	const char *mig = "{\"updateHubAssignment\":true,\"migrateDeviceData\":true}";
	const char *reset = "{\"updateHubAssignment\":true,\"migrateDeviceData\":false}";
	const char *never = "{\"updateHubAssignment\":false,\"migrateDeviceData\":false}";
	const char *never_mig = "{\"updateHubAssignment\":false,\"migrateDeviceData\":true}";
	const char *policies[] = {mig, reset, never, never_mig, "null", "{}"};

	/* first registration: always NEW on the chosen hub */
	for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++) {
		reprov(policies[i], NULL, NULL, "a", REPROV_NEW, "a", "initialAssignment");
		reprov(policies[i], NULL, "b", "a", REPROV_NEW, "a", "initialAssignment");
	}
	/* re-provision and migrate */
	reprov(mig, "a", "a", "a", REPROV_SAME, "a", "initialAssignment");
	reprov(mig, "a", NULL, "a", REPROV_SAME, "a", "initialAssignment");
	reprov(mig, "b", "a", "b", REPROV_SAME, "b", "initialAssignment");
	reprov(mig, "a", "a", "b", REPROV_MIGRATE, "b", "deviceDataMigrated");
	reprov(mig, "a", NULL, "b", REPROV_MIGRATE, "b", "deviceDataMigrated");
	reprov(mig, "b", "a", "c", REPROV_MIGRATE, "c", "deviceDataMigrated");
	reprov(mig, "b", "a", "a", REPROV_MIGRATE, "a", "reprovisionedToInitialAssignment");
	/* re-provision and reset: the twin starts over even on the same hub */
	reprov(reset, "a", "a", "b", REPROV_RESET, "b", "deviceDataReset");
	reprov(reset, "a", NULL, "b", REPROV_RESET, "b", "deviceDataReset");
	reprov(reset, "a", "a", "a", REPROV_RESET, "a", "deviceDataReset");
	reprov(reset, "b", "a", "a", REPROV_RESET, "a", "reprovisionedToInitialAssignment");
	/* never re-provision: stays, whatever the policy chose */
	reprov(never, "a", "a", "b", REPROV_STAY, "a", "initialAssignment");
	reprov(never, "a", "a", "a", REPROV_STAY, "a", "initialAssignment");
	reprov(never_mig, "b", "a", "a", REPROV_STAY, "b", "initialAssignment");
	/* defaults: true/true when the policy or a member is absent or not a boolean */
	reprov("null", "a", "a", "b", REPROV_MIGRATE, "b", "deviceDataMigrated");
	reprov("{}", "a", "a", "b", REPROV_MIGRATE, "b", "deviceDataMigrated");
	reprov("{\"migrateDeviceData\":false}", "a", "a", "b", REPROV_RESET, "b",
	       "deviceDataReset");
	reprov("{\"updateHubAssignment\":false}", "a", "a", "b", REPROV_STAY, "a",
	       "initialAssignment");
	reprov("{\"updateHubAssignment\":\"no\",\"migrateDeviceData\":0}", "a", "a", "b",
	       REPROV_MIGRATE, "b", "deviceDataMigrated");
	/* hub names compare without case */
	reprov(mig, "HUB-A", "hub-b", "hub-a", REPROV_SAME, "hub-a", "initialAssignment");
	reprov(mig, "hub-a", "HUB-B", "hub-b", REPROV_MIGRATE, "hub-b",
	       "reprovisionedToInitialAssignment");
	/* no record at all: defaults */
	struct reprov_decision d;
	alloc_reprovision(NULL, "a", NULL, "b", &d);
	assert_int_equal(d.action, REPROV_MIGRATE);
}

/* ---- enrollment ---------------------------------------------------------- */

static json_t *build(enum enrollment_kind kind, const char *id, const char *body_text,
                     const json_t *existing, struct enrollment_error *err)
{
	json_t *body = parse(body_text);
	json_t *rec = enrollment_build(kind, id, body, existing, &hubs, T0, err);
	json_decref(body);
	return rec;
}

static void test_enrollment_build(void **state)
{
	struct enrollment_error err;
	json_t *rec =
	    build(ENROLLMENT_INDIVIDUAL, "dev-1",
	          "{\"registrationId\":\"dev-1\",\"attestation\":{\"type\":\"symmetricKey\"}}",
	          NULL, &err);
	assert_non_null(rec);
	json_t *sk = json_object_get(json_object_get(rec, "attestation"), "symmetricKey");
	const char *pk = json_string_value(json_object_get(sk, "primaryKey"));
	assert_int_equal(strlen(pk), 88); /* 64 random bytes */
	assert_string_equal(json_string_value(json_object_get(rec, "provisioningStatus")),
	                    "enabled");
	assert_string_equal(json_string_value(json_object_get(rec, "allocationPolicy")), "hashed");
	assert_true(json_is_true(
	    json_object_get(json_object_get(rec, "reprovisionPolicy"), "migrateDeviceData")));
	const char *etag = json_string_value(json_object_get(rec, "etag"));
	assert_int_equal(etag[0], '"');
	assert_true(enrollment_etag_matches(rec, etag));
	char bare[64];
	snprintf(bare, sizeof bare, "%.*s", (int)strlen(etag) - 2, etag + 1);
	assert_true(enrollment_etag_matches(rec, bare));
	assert_true(enrollment_etag_matches(rec, "*"));
	assert_false(enrollment_etag_matches(rec, "\"other\""));

	/* update: keys and createdDateTimeUtc kept, new etag */
	json_t *ub = parse("{\"attestation\":{\"type\":\"symmetricKey\","
	                   "\"symmetricKey\":{\"primaryKey\":\"\"}}}");
	json_t *upd = enrollment_build(ENROLLMENT_INDIVIDUAL, "dev-1", ub, rec, &hubs,
	                               "2030-01-01T00:00:00Z", &err);
	json_decref(ub);
	assert_non_null(upd);
	assert_string_equal(
	    json_string_value(json_object_get(
	        json_object_get(json_object_get(upd, "attestation"), "symmetricKey"),
	        "primaryKey")),
	    pk);
	assert_string_equal(json_string_value(json_object_get(upd, "createdDateTimeUtc")), T0);
	assert_false(enrollment_etag_matches(upd, etag));
	json_t *red = enrollment_redacted(upd);
	char *text = json_dumps(red, JSON_COMPACT);
	assert_null(strstr(text, pk));
	free(text);
	json_decref(red);
	json_decref(upd);
	json_decref(rec);

	static const struct {
		const char *id, *body, *why;
	} bad[] = {
	    {"Dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"}}", "registrationId"},
	    {"dev-1", "{\"registrationId\":\"dev-2\",\"attestation\":{\"type\":\"symmetricKey\"}}",
	     "differs"},
	    {"dev-1", "{}", "attestation"},
	    {"dev-1", "{\"attestation\":{\"type\":\"magic\"}}", "magic"},
	    {"dev-1", "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{}}}", "endorsementKey"},
	    {"dev-1", "{\"attestation\":{\"type\":\"x509\",\"x509\":{}}}", "x509"},
	    {"dev-1",
	     "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"abc\"}"
	     "}}",
	     "base64"},
	    {"dev-1",
	     "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"custom\"}",
	     "customAllocationDefinition"},
	    {"dev-1",
	     "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"custom\","
	     "\"customAllocationDefinition\":{\"webhookUrl\":\"http://example.test/x\","
	     "\"apiVersion\":\"1\"}}",
	     "http"},
	    {"dev-1",
	     "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"static\"}",
	     "exactly one hub"},
	    {"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"},\"iotHubs\":[\"x.test\"]}",
	     "not linked"},
	    {"dev-1",
	     "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"nearest\"}",
	     "allocationPolicy"},
	    {"dev-1",
	     "{\"attestation\":{\"type\":\"symmetricKey\"},\"provisioningStatus\":\"off\"}",
	     "provisioningStatus"},
	    {"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"},\"initialTwin\":{\"tags\":[]}}",
	     "initialTwin"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *r = build(ENROLLMENT_INDIVIDUAL, bad[i].id, bad[i].body, NULL, &err);
		if (r)
			fail_msg("accepted: %s", bad[i].body);
		assert_int_equal(err.status, 400);
		if (!strstr(err.message, bad[i].why))
			fail_msg("'%s' not in '%s'", bad[i].why, err.message);
	}
	/* http:// to loopback is fine */
	rec = build(
	    ENROLLMENT_INDIVIDUAL, "dev-1",
	    "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"custom\","
	    "\"customAllocationDefinition\":{\"webhookUrl\":\"http://127.0.0.1:7071/api/x?code=1\","
	    "\"apiVersion\":\"2021-10-01\"}}",
	    NULL, &err);
	assert_non_null(rec);
	json_decref(rec);
	assert_true(enrollment_regid_valid("a-b.c_d:e"));
	assert_false(enrollment_regid_valid("A"));
	assert_true(enrollment_groupid_valid("Group-A"));
	assert_false(enrollment_groupid_valid(""));
}

static void test_device_keys(void **state)
{
	json_t *g = group_record("");
	char key[96];
	assert_int_equal(enrollment_device_key(g, ENROLLMENT_GROUP, "grp-dev-1", 0, key), 0);
	assert_string_equal(key, "pJVzPE1FRYvYvIUr81Yq73StGA6ujBZmMFOZ9wszqp4=");
	assert_int_equal(enrollment_device_key(g, ENROLLMENT_INDIVIDUAL, "grp-dev-1", 1, key), 0);
	assert_string_equal(key, GROUP_KEY);
	json_decref(g);
	json_t *none = parse("{\"attestation\":{\"type\":\"x509\"}}");
	assert_int_not_equal(enrollment_device_key(none, ENROLLMENT_GROUP, "x", 0, key), 0);
	json_decref(none);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_candidates),       cmocka_unit_test(test_hashed_stable),
	    cmocka_unit_test(test_hashed_weights),   cmocka_unit_test(test_webhook_request),
	    cmocka_unit_test(test_response_ok),      cmocka_unit_test(test_response_200_failures),
	    cmocka_unit_test(test_response_status),  cmocka_unit_test(test_reprovision),
	    cmocka_unit_test(test_enrollment_build), cmocka_unit_test(test_device_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
