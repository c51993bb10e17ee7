/* Unit tests for src/core/allocation.c and src/core/enrollment.c: candidate
 * hubs, weighted hashing (stable, weighted, minimal movement), the webhook
 * request (no keys), every webhook answer, the reprovisioning matrix,
 * enrollment validation, etags, and per-registration key derivation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/allocation.h"
#include "core/enrollment.h"

#define GROUP_KEY "Z3JvdXAta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="
#define T0 "2024-01-01T00:00:00Z"

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

static void test_candidates(void **state)
{
	const struct alloc_hub *out[3];
	json_t *r = parse("{\"iotHubs\":[\"HUB2.example.test\",\"gone.example.test\"]}");
	assert_int_equal(alloc_candidates(r, linked, 3, out, 3), 1);
	assert_string_equal(out[0]->name, "hub2.example.test");
	json_decref(r);
	r = parse("{\"iotHubs\":[],\"iotHubHostName\":\"hub3.example.test\"}");
	assert_int_equal(alloc_candidates(r, linked, 3, out, 3), 1);
	assert_string_equal(out[0]->name, "hub3.example.test");
	json_decref(r);
	r = parse("{}"); /* none named: every hub that applies allocation policies */
	assert_int_equal(alloc_candidates(r, linked, 3, out, 3), 2);
	json_decref(r);
}

static void test_hashed(void **state)
{
	struct alloc_hub a = {"a.test", 1, true}, b = {"b.test", 3, true}, c = {"c.test", 1, true};
	const struct alloc_hub *two[] = {&a, &b}, *three[] = {&a, &b, &c};
	int count_b = 0, moved_elsewhere = 0;
	char id[32];
	for (int i = 0; i < 20000; i++) {
		snprintf(id, sizeof id, "device-%d", i);
		const struct alloc_hub *h = alloc_hashed(id, two, 2);
		assert_ptr_equal(h, alloc_hashed(id, two, 2)); /* stable */
		count_b += h == &b;
		const struct alloc_hub *h3 = alloc_hashed(id, three, 3);
		if (h3 != h && h3 != &c)
			moved_elsewhere++;
	}
	/* weight 3 against 1: about 75 % */
	assert_true(count_b > 14250 && count_b < 15750);
	assert_int_equal(moved_elsewhere, 0); /* adding c only moves devices to c */
}

static json_t *group_record(const char *extra)
{
	char text[2048];
	snprintf(text, sizeof text,
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
	const struct alloc_hub *c[] = {&linked[0], &linked[1]};
	json_t *payload = parse("{\"modelId\":\"toaster\"}");
	json_t *req = alloc_webhook_request(rec, ENROLLMENT_GROUP, "dev-1", payload,
					    "hub1.example.test", "dev-1", c, 2);
	char *text = json_dumps(req, JSON_COMPACT);
	assert_null(strstr(text, GROUP_KEY));
	assert_string_equal(json_string_value(json_object_get(json_object_get(req, "enrollmentGroup"),
							      "enrollmentGroupId")),
			    "Group-A");
	json_t *ctx = json_object_get(req, "deviceRuntimeContext");
	assert_string_equal(json_string_value(json_object_get(ctx, "registrationId")), "dev-1");
	assert_true(json_is_object(json_object_get(ctx, "symmetricKey")));
	assert_true(json_equal(json_object_get(ctx, "payload"), payload));
	assert_string_equal(json_string_value(json_object_get(ctx, "currentIotHubHostName")),
			    "hub1.example.test");
	assert_int_equal(json_array_size(json_object_get(req, "linkedHubs")), 2);
	free(text);
	json_decref(req);
	/* first registration: no current hub or device */
	req = alloc_webhook_request(rec, ENROLLMENT_GROUP, "dev-1", NULL, NULL, NULL, c, 2);
	ctx = json_object_get(req, "deviceRuntimeContext");
	assert_null(json_object_get(ctx, "currentIotHubHostName"));
	assert_null(json_object_get(ctx, "payload"));
	json_decref(req);
	json_decref(payload);
	json_decref(rec);
}

static void expect(int status, const char *body, enum alloc_outcome outcome, int code,
		   const char *in_message)
{
	const struct alloc_hub *c[] = {&linked[0], &linked[1]};
	struct alloc_result r;
	alloc_parse_response(status, body, body ? strlen(body) : 0, "timed out after 5 ms", c, 2,
			     &r);
	assert_int_equal(r.outcome, outcome);
	if (outcome == ALLOC_FAILED)
		assert_int_equal(r.error_code, code);
	if (in_message && !strstr(r.message, in_message))
		fail_msg("'%s' not in '%s'", in_message, r.message);
	alloc_result_clear(&r);
}

static void test_responses(void **state)
{
	const struct alloc_hub *c[] = {&linked[0], &linked[1]};
	struct alloc_result r;
	const char *ok = "{\"iotHubHostName\":\"HUB2.example.test\",\"initialTwin\":{\"tags\":"
			 "{\"t\":1},\"properties\":{\"desired\":{\"d\":2}}},\"payload\":{\"p\":3}}";
	alloc_parse_response(200, ok, strlen(ok), NULL, c, 2, &r);
	assert_int_equal(r.outcome, ALLOC_OK);
	assert_string_equal(r.hub, "hub2.example.test");
	assert_non_null(r.initial_twin);
	assert_int_equal(json_integer_value(json_object_get(r.payload, "p")), 3);
	alloc_result_clear(&r);
	const char *old = "{\"iotHubHostname\":\"hub1.example.test\",\"returnData\":[1]}";
	alloc_parse_response(200, old, strlen(old), NULL, c, 2, &r);
	assert_int_equal(r.outcome, ALLOC_OK);
	assert_true(json_is_array(r.payload));
	assert_null(r.initial_twin);
	alloc_result_clear(&r);

	expect(200, "{}", ALLOC_FAILED, 400208, "iotHubHostName");
	expect(200, "{\"iotHubHostName\":null}", ALLOC_FAILED, 400208, NULL);
	expect(200, "{\"iotHubHostName\":\"\"}", ALLOC_FAILED, 400208, NULL);
	expect(200, "{\"iotHubHostName\":\"hub3.example.test\"}", ALLOC_FAILED, 400207,
	       "hub1.example.test, hub2.example.test");
	expect(200, "{\"iotHubHostName\":", ALLOC_FAILED, 400207, "invalid JSON");
	expect(200, "[1]", ALLOC_FAILED, 400207, "not an object");
	expect(200, "", ALLOC_FAILED, 400207, "invalid JSON");
	expect(200, "{\"iotHubHostName\":\"hub1.example.test\",\"initialTwin\":{\"tags\":3}}",
	       ALLOC_FAILED, 400207, "initialTwin");
	expect(401, "", ALLOC_FAILED, 400209, "401");
	expect(400, "", ALLOC_FAILED, 400207, "status code: 400");
	expect(404, "nope", ALLOC_FAILED, 400207, "status code: 404");
	expect(429, "", ALLOC_RETRY, 0, "429");
	expect(500, "", ALLOC_RETRY, 0, NULL);
	expect(503, "", ALLOC_RETRY, 0, NULL);
	expect(0, NULL, ALLOC_RETRY, 0, "timed out");
}

static void reprov(const char *policy, const char *prev, const char *initial, const char *now,
		   enum reprov_action action, const char *hub, const char *substatus)
{
	char text[256];
	snprintf(text, sizeof text, "{\"reprovisionPolicy\":%s}", policy);
	json_t *rec = parse(text);
	struct reprov_decision d;
	alloc_reprovision(rec, prev, initial, now, &d);
	assert_int_equal(d.action, action);
	assert_string_equal(d.hub, hub);
	assert_string_equal(d.substatus, substatus);
	json_decref(rec);
}

static void test_reprovision(void **state)
{
	const char *mig = "{\"updateHubAssignment\":true,\"migrateDeviceData\":true}";
	const char *reset = "{\"updateHubAssignment\":true,\"migrateDeviceData\":false}";
	const char *never = "{\"updateHubAssignment\":false,\"migrateDeviceData\":false}";
	reprov(mig, NULL, NULL, "a", REPROV_NEW, "a", "initialAssignment");
	reprov(mig, "a", "a", "a", REPROV_SAME, "a", "initialAssignment");
	reprov(mig, "a", "a", "b", REPROV_MIGRATE, "b", "deviceDataMigrated");
	reprov(mig, "b", "a", "a", REPROV_MIGRATE, "a", "reprovisionedToInitialAssignment");
	reprov(reset, "a", "a", "b", REPROV_RESET, "b", "deviceDataReset");
	reprov(reset, "a", "a", "a", REPROV_RESET, "a", "deviceDataReset");
	reprov(never, "a", "a", "b", REPROV_STAY, "a", "initialAssignment");
	reprov("null", "a", "a", "b", REPROV_MIGRATE, "b", "deviceDataMigrated"); /* defaults */
}

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
	json_t *rec = build(ENROLLMENT_INDIVIDUAL, "dev-1",
			    "{\"registrationId\":\"dev-1\",\"attestation\":{\"type\":\"symmetricKey\"}}",
			    NULL, &err);
	assert_non_null(rec);
	json_t *sk = json_object_get(json_object_get(rec, "attestation"), "symmetricKey");
	const char *pk = json_string_value(json_object_get(sk, "primaryKey"));
	assert_int_equal(strlen(pk), 88); /* 64 random bytes */
	assert_string_equal(json_string_value(json_object_get(rec, "provisioningStatus")), "enabled");
	assert_string_equal(json_string_value(json_object_get(rec, "allocationPolicy")), "hashed");
	assert_true(json_is_true(json_object_get(json_object_get(rec, "reprovisionPolicy"),
						 "migrateDeviceData")));
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
	assert_string_equal(json_string_value(json_object_get(
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
		{"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"abc\"}}}",
		 "base64"},
		{"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"custom\"}",
		 "customAllocationDefinition"},
		{"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"custom\","
			  "\"customAllocationDefinition\":{\"webhookUrl\":\"http://example.test/x\","
			  "\"apiVersion\":\"1\"}}",
		 "http"},
		{"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"static\"}",
		 "exactly one hub"},
		{"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"},\"iotHubs\":[\"x.test\"]}",
		 "not linked"},
		{"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"},\"allocationPolicy\":\"nearest\"}",
		 "allocationPolicy"},
		{"dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"},\"provisioningStatus\":\"off\"}",
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
	rec = build(ENROLLMENT_INDIVIDUAL, "dev-1",
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
		cmocka_unit_test(test_candidates),     cmocka_unit_test(test_hashed),
		cmocka_unit_test(test_webhook_request), cmocka_unit_test(test_responses),
		cmocka_unit_test(test_reprovision),    cmocka_unit_test(test_enrollment_build),
		cmocka_unit_test(test_device_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
