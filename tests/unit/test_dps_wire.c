/* Unit tests for the DPS register body (src/dps/dps_wire.c,
 * dps__wire_register_body): empty bodies, payloads, the registrationId
 * rule, and a TPM device's "tpm" keys (base64 of at most TPM_PUBLIC_MAX
 * bytes, the storage root key optional) with each refusal. The topics,
 * user names and paths are covered by fuzz_dps_device and the interop
 * tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dps/internal.h"

static int body(const char *text, json_t **payload, json_t **tpm, char *msg)
{
	return dps__wire_register_body("dev-1", text, strlen(text), payload, tpm, msg, 300);
}

static void test_register_body(void **state)
{
	json_t *payload, *tpm;
	char msg[300] = "";
	assert_int_equal(body("  \n", &payload, &tpm, msg), 0);
	assert_null(payload);
	assert_null(tpm);
	assert_int_equal(body("{\"registrationId\":\"dev-1\",\"payload\":{\"a\":1}}", &payload,
	                      &tpm, msg),
	                 0);
	assert_int_equal(json_integer_value(json_object_get(payload, "a")), 1);
	assert_null(tpm);
	json_decref(payload);
	assert_int_equal(body("{\"registrationId\":\"dev-2\"}", &payload, &tpm, msg), -1);
	assert_non_null(strstr(msg, "differs"));
	assert_int_equal(body("[1]", &payload, &tpm, msg), -1);

	/* tpm: both keys, the EK alone, null (none). */
	assert_int_equal(body("{\"tpm\":{\"endorsementKey\":\"AToA\",\"storageRootKey\":\"ARsA\","
	                      "\"extra\":1}}",
	                      &payload, &tpm, msg),
	                 0);
	assert_string_equal(json_string_value(json_object_get(tpm, "endorsementKey")), "AToA");
	assert_string_equal(json_string_value(json_object_get(tpm, "storageRootKey")), "ARsA");
	assert_int_equal(json_object_size(tpm), 2);
	json_decref(tpm);
	assert_int_equal(body("{\"tpm\":{\"endorsementKey\":\"AToA\"}}", &payload, &tpm, msg), 0);
	assert_null(json_object_get(tpm, "storageRootKey"));
	json_decref(tpm);
	assert_int_equal(body("{\"tpm\":null}", &payload, &tpm, msg), 0);
	assert_null(tpm);

	/* Refused: no EK, not a string, not base64, empty, too long, not an
	 * object; nothing is handed back. */
	static const char *const bad[] = {
	    "{\"tpm\":{}}",
	    "{\"tpm\":{\"endorsementKey\":7}}",
	    "{\"tpm\":{\"endorsementKey\":\"not base64!\"}}",
	    "{\"tpm\":{\"endorsementKey\":\"\"}}",
	    "{\"tpm\":{\"endorsementKey\":\"AToA\",\"storageRootKey\":\"%%\"}}",
	    "{\"tpm\":\"AToA\"}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		payload = tpm = (json_t *)1;
		msg[0] = '\0';
		assert_int_equal(body(bad[i], &payload, &tpm, msg), -1);
		assert_null(payload);
		assert_null(tpm);
		assert_non_null(strstr(msg, "tpm must be"));
	}
	char *big = malloc(4000);
	strcpy(big, "{\"tpm\":{\"endorsementKey\":\"");
	size_t n = strlen(big);
	memset(big + n, 'A', 1372); /* base64 of 1029 bytes: over TPM_PUBLIC_MAX */
	strcpy(big + n + 1372, "\"}}");
	assert_int_equal(body(big, &payload, &tpm, msg), -1);
	assert_non_null(strstr(msg, "at most 1024 bytes"));
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_register_body),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
