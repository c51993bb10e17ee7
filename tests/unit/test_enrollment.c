/* Unit tests for DPS enrollment records: defaults and generated keys,
 * groups, every validation rule with the field in its message, id rules,
 * updates keeping createdDateTimeUtc and keys, etag matching with and
 * without quotes, the redacted webhook view, and device keys (individual
 * and derived for a group, against a known vector). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/enc.h"
#include "base/err.h"
#include "base/x509.h"
#include "core/enrollment.h"
#include "core/tpm.h"

static const char *T1 = "2026-01-01T00:00:01.000Z";
static const char *T2 = "2026-01-01T00:00:02.000Z";

static const char *const HUB_NAMES[] = {"hub-a.example.com", "hub-b.example.com"};
static const struct enrollment_hubs HUBS = {HUB_NAMES, 2};

#define GROUP_KEY "Z3JvdXAta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="
#define KEY2 "c2Vjb25kYXJ5LWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE="

/* Two self-signed certificates as the base64 of their DER (what the
 * service SDK sends too), made at start-up, and their SHA-256 thumbprints. */
static char CERT_A[2048], CERT_B[2048], SHA_A[65], SHA_B[65];
/* A TPM's endorsement and storage root keys (base64 TPM2B_PUBLIC). */
static char EK_B64[512], SRK_B64[512];

static void make_tpm_key(bool ek, char *out)
{
	EVP_PKEY *k = EVP_RSA_gen(2048);
	uint8_t pub[400];
	int n = k ? tpm_marshal_public(k, ek, pub, sizeof pub) : -1;
	if (n <= 0)
		abort();
	b64_encode(pub, (size_t)n, out);
	EVP_PKEY_free(k);
}

static void make_cert(const char *cn, char *b64, char *sha256)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = x509_issue(key, cn, NULL, NULL, 30, X509_ROLE_CLIENT, NULL);
	unsigned char *der = NULL;
	int n = x ? i2d_X509(x, &der) : -1;
	if (n <= 0 || B64_ENCODED_LEN((size_t)n) >= sizeof CERT_A)
		abort();
	b64_encode(der, (size_t)n, b64);
	char sha1[41];
	x509_thumbprints(x, sha1, sha256);
	OPENSSL_free(der);
	X509_free(x);
	EVP_PKEY_free(key);
}

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fail_msg("bad test JSON (%s): %s", e.text, text);
	return j;
}

static const char *str_at(const json_t *o, const char *a, const char *b)
{
	const json_t *v = json_object_get(o, a);
	if (b)
		v = json_object_get(v, b);
	return json_string_value(v);
}

static json_t *build(enum enrollment_kind kind, const char *id, const char *body,
                     const json_t *existing, struct enrollment_error *err)
{
	json_t *b = J(body);
	json_t *r = enrollment_build(kind, id, b, existing, &HUBS, existing ? T2 : T1, err);
	json_decref(b);
	return r;
}

static json_t *ok(enum enrollment_kind kind, const char *id, const char *body)
{
	struct enrollment_error err;
	json_t *r = build(kind, id, body, NULL, &err);
	if (!r)
		fail_msg("refused (%d %d): %s -- %s", err.status, err.code, err.message, body);
	return r;
}

/* The body is refused with 400/400004 and a message containing want. */
static void refused(enum enrollment_kind kind, const char *id, const char *body, const char *want)
{
	struct enrollment_error err;
	json_t *r = build(kind, id, body, NULL, &err);
	if (r) {
		char *t = json_dumps(r, JSON_COMPACT);
		fail_msg("accepted %s as %s", body, t);
	}
	assert_int_equal(err.status, 400);
	assert_int_equal(err.code, 400004);
	if (!strstr(err.message, want))
		fail_msg("message '%s' lacks '%s' for %s", err.message, want, body);
}

static void assert_key_generated(const char *k)
{
	assert_non_null(k);
	assert_int_equal(strlen(k), 88);
	uint8_t raw[B64_DECODED_MAX(88)];
	size_t n;
	assert_int_equal(b64_decode(k, 88, raw, &n), 0);
	assert_int_equal(n, 64);
}

static void test_individual_defaults(void **state)
{
	json_t *r = ok(ENROLLMENT_INDIVIDUAL, "dev-1",
	               "{\"attestation\":{\"type\":\"symmetricKey\"},\"etag\":\"x\","
	               "\"createdDateTimeUtc\":\"1999\",\"registrationState\":{},\"extra\":1}");
	const char *first = json_object_iter_key(json_object_iter(r));
	assert_string_equal(first, "registrationId");
	assert_string_equal(str_at(r, "registrationId", NULL), "dev-1");
	assert_null(json_object_get(r, "deviceId"));
	assert_null(json_object_get(r, "extra"));
	assert_null(json_object_get(r, "registrationState"));
	assert_null(json_object_get(r, "iotHubHostName"));
	assert_null(json_object_get(r, "customAllocationDefinition"));
	json_t *sk = json_object_get(json_object_get(r, "attestation"), "symmetricKey");
	assert_key_generated(str_at(sk, "primaryKey", NULL));
	assert_key_generated(str_at(sk, "secondaryKey", NULL));
	assert_string_not_equal(str_at(sk, "primaryKey", NULL), str_at(sk, "secondaryKey", NULL));
	assert_string_equal(str_at(r, "attestation", "type"), "symmetricKey");
	assert_true(json_is_false(json_object_get(json_object_get(r, "capabilities"), "iotEdge")));
	assert_string_equal(str_at(r, "provisioningStatus", NULL), "enabled");
	assert_true(json_is_true(
	    json_object_get(json_object_get(r, "reprovisionPolicy"), "updateHubAssignment")));
	assert_true(json_is_true(
	    json_object_get(json_object_get(r, "reprovisionPolicy"), "migrateDeviceData")));
	assert_string_equal(str_at(r, "allocationPolicy", NULL), "hashed");
	assert_int_equal(json_array_size(json_object_get(r, "iotHubs")), 0);
	json_t *tw = J("{\"tags\":{},\"properties\":{\"desired\":{}}}");
	assert_true(json_equal(json_object_get(r, "initialTwin"), tw));
	json_decref(tw);
	assert_string_equal(str_at(r, "createdDateTimeUtc", NULL), T1);
	assert_string_equal(str_at(r, "lastUpdatedDateTimeUtc", NULL), T1);
	const char *etag = str_at(r, "etag", NULL);
	assert_int_equal(strlen(etag), 38);
	assert_true(etag[0] == '"' && etag[37] == '"');
	assert_true(enrollment_enabled(r));
	assert_string_equal(enrollment_attestation_type(r), "symmetricKey");

	/* A second build makes other keys and another etag. */
	json_t *r2 =
	    ok(ENROLLMENT_INDIVIDUAL, "dev-1", "{\"attestation\":{\"type\":\"symmetricKey\"}}");
	assert_string_not_equal(str_at(r2, "etag", NULL), etag);
	json_t *sk2 = json_object_get(json_object_get(r2, "attestation"), "symmetricKey");
	assert_string_not_equal(str_at(sk2, "primaryKey", NULL), str_at(sk, "primaryKey", NULL));
	json_decref(r2);
	json_decref(r);
}

static void test_individual_full(void **state)
{
	json_t *r =
	    ok(ENROLLMENT_INDIVIDUAL, "dev-2",
	       "{\"registrationId\":\"dev-2\",\"deviceId\":\"Device-Two\","
	       "\"attestation\":{\"type\":\"SymmetricKey\",\"symmetricKey\":{\"primaryKey\":"
	       "\"" GROUP_KEY "\",\"secondaryKey\":\"" KEY2 "\"}},"
	       "\"capabilities\":{\"iotEdge\":true},"
	       "\"iotHubHostName\":\"HUB-A.example.com\","
	       "\"initialTwin\":{\"tags\":{\"site\":\"lab\",\"$version\":3},"
	       "\"properties\":{\"desired\":{\"x\":{\"y\":1},\"$metadata\":{}}}},"
	       "\"provisioningStatus\":\"disabled\","
	       "\"reprovisionPolicy\":{\"updateHubAssignment\":false,\"migrateDeviceData\":false},"
	       "\"allocationPolicy\":\"Static\","
	       "\"optionalDeviceInformation\":{\"model\":\"m1\"}}");
	assert_string_equal(str_at(r, "deviceId", NULL), "Device-Two");
	assert_string_equal(str_at(r, "attestation", "type"), "symmetricKey");
	json_t *sk = json_object_get(json_object_get(r, "attestation"), "symmetricKey");
	assert_string_equal(str_at(sk, "primaryKey", NULL), GROUP_KEY);
	assert_string_equal(str_at(sk, "secondaryKey", NULL), KEY2);
	assert_true(json_is_true(json_object_get(json_object_get(r, "capabilities"), "iotEdge")));
	assert_string_equal(str_at(r, "iotHubHostName", NULL), "hub-a.example.com");
	json_t *tw =
	    J("{\"tags\":{\"site\":\"lab\"},\"properties\":{\"desired\":{\"x\":{\"y\":1}}}}");
	assert_true(json_equal(json_object_get(r, "initialTwin"), tw));
	json_decref(tw);
	assert_string_equal(str_at(r, "provisioningStatus", NULL), "disabled");
	assert_false(enrollment_enabled(r));
	assert_true(json_is_false(
	    json_object_get(json_object_get(r, "reprovisionPolicy"), "migrateDeviceData")));
	assert_string_equal(str_at(r, "allocationPolicy", NULL), "static");
	assert_string_equal(str_at(r, "optionalDeviceInformation", "model"), "m1");
	json_decref(r);

	/* Field order: the id first, then the header's order. */
	r = ok(ENROLLMENT_INDIVIDUAL, "dev-3",
	       "{\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":{\"apiVersion\":"
	       "\"2021-10-01\",\"webhookUrl\":\"https://fn.example.com/api/a?code=k\"},"
	       "\"iotHubs\":[\"hub-b.example.com\",\"HUB-A.EXAMPLE.COM\",\"hub-b.example.com\"],"
	       "\"deviceId\":\"d3\",\"attestation\":{\"type\":\"none\"}}");
	static const char *const order[] = {"registrationId",
	                                    "deviceId",
	                                    "attestation",
	                                    "capabilities",
	                                    "initialTwin",
	                                    "etag",
	                                    "provisioningStatus",
	                                    "reprovisionPolicy",
	                                    "createdDateTimeUtc",
	                                    "lastUpdatedDateTimeUtc",
	                                    "allocationPolicy",
	                                    "iotHubs",
	                                    "customAllocationDefinition"};
	void *it = json_object_iter(r);
	for (size_t i = 0; i < sizeof order / sizeof *order;
	     i++, it = json_object_iter_next(r, it)) {
		assert_non_null(it);
		assert_string_equal(json_object_iter_key(it), order[i]);
	}
	assert_null(it);
	json_t *hubs = J("[\"hub-b.example.com\",\"hub-a.example.com\"]");
	assert_true(json_equal(json_object_get(r, "iotHubs"), hubs));
	json_decref(hubs);
	assert_string_equal(str_at(r, "customAllocationDefinition", "webhookUrl"),
	                    "https://fn.example.com/api/a?code=k");
	assert_string_equal(str_at(r, "customAllocationDefinition", "apiVersion"), "2021-10-01");
	assert_string_equal(enrollment_attestation_type(r), "none");
	json_decref(r);
}

static void test_group(void **state)
{
	json_t *r = ok(ENROLLMENT_GROUP, "Group-1",
	               "{\"enrollmentGroupId\":\"Group-1\",\"deviceId\":\"ignored\","
	               "\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{"
	               "\"primaryKey\":\"" GROUP_KEY "\"}}}");
	assert_string_equal(json_object_iter_key(json_object_iter(r)), "enrollmentGroupId");
	assert_string_equal(str_at(r, "enrollmentGroupId", NULL), "Group-1");
	assert_null(json_object_get(r, "registrationId"));
	assert_null(json_object_get(r, "deviceId"));
	json_t *sk = json_object_get(json_object_get(r, "attestation"), "symmetricKey");
	assert_string_equal(str_at(sk, "primaryKey", NULL), GROUP_KEY);
	assert_key_generated(str_at(sk, "secondaryKey", NULL));
	json_decref(r);

	r = ok(ENROLLMENT_GROUP, "g-x509",
	       "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"caReferences\":{\"primary\":"
	       "\"ca1\"}}}}");
	assert_string_equal(enrollment_attestation_type(r), "x509");
	json_decref(r);
	char body[8192];
	snprintf(body, sizeof body,
	         "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"signingCertificates\":{"
	         "\"primary\":{\"certificate\":\"%s\"},\"secondary\":{\"certificate\":\"%s\","
	         "\"info\":{\"subjectName\":\"made up\"}}}}}}",
	         CERT_A, CERT_B);
	r = ok(ENROLLMENT_GROUP, "g-x509b", body);
	json_t *sc = json_object_get(
	    json_object_get(json_object_get(r, "attestation"), "x509"), "signingCertificates");
	/* Each certificate is kept as PEM with its info computed (the body's
	 * info is not believed). */
	json_t *sec = json_object_get(sc, "secondary");
	assert_non_null(strstr(str_at(sec, "certificate", NULL), "-----BEGIN CERTIFICATE-----"));
	assert_string_equal(str_at(sec, "info", "sha256Thumbprint"), SHA_B);
	assert_string_equal(str_at(sec, "info", "subjectName"), "CN=cert-b,O=fleethub");
	assert_string_equal(str_at(sec, "info", "issuerName"), "CN=cert-b,O=fleethub");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(sec, "info"), "version")),
	                 3);
	assert_string_equal(str_at(json_object_get(sc, "primary"), "info", "sha256Thumbprint"),
	                    SHA_A);
	json_decref(r);
	refused(ENROLLMENT_GROUP, "g-x509c",
	        "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"signingCertificates\":{"
	        "\"primary\":{\"certificate\":\"MIIB\"}}}}}",
	        "attestation.x509.signingCertificates.primary.certificate must be a certificate");
}

static void test_attestation_rules(void **state)
{
	enum enrollment_kind I = ENROLLMENT_INDIVIDUAL, G = ENROLLMENT_GROUP;
	refused(I, "d", "{}", "attestation is required");
	refused(I, "d", "{\"attestation\":\"symmetricKey\"}", "attestation is required");
	refused(I, "d", "{\"attestation\":{}}", "attestation.type is required");
	refused(I, "d", "{\"attestation\":{\"type\":\"psk\"}}", "attestation.type 'psk'");
	refused(I, "d", "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":[]}}",
	        "attestation.symmetricKey must be an object");
	refused(I, "d",
	        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":5}}}",
	        "attestation.symmetricKey.primaryKey must be a string");
	refused(I, "d",
	        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":"
	        "\"not base64!\"}}}",
	        "attestation.symmetricKey.primaryKey must be base64 of 16 to 64 bytes");
	/* 15 bytes and 65 bytes are out of range; 16 and 64 are fine. */
	refused(I, "d",
	        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"secondaryKey\":"
	        "\"MDEyMzQ1Njc4OWFiY2Rl\"}}}",
	        "attestation.symmetricKey.secondaryKey");
	refused(I, "d",
	        "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":"
	        "\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4"
	        "OWFiY2RlZjA=\"}}}",
	        "attestation.symmetricKey.primaryKey");
	json_decref(
	    ok(I, "d",
	       "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":"
	       "\"MDEyMzQ1Njc4OWFiY2RlZg==\",\"secondaryKey\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NT"
	       "Y3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZg==\"}}}"));
	refused(I, "d", "{\"attestation\":{\"type\":\"tpm\"}}", "attestation.tpm.endorsementKey");
	refused(I, "d", "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"\"}}}",
	        "attestation.tpm.endorsementKey");
	refused(G, "g",
	        "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"AToA\"}}}",
	        "individual enrollments only");
	refused(I, "d", "{\"attestation\":{\"type\":\"x509\"}}",
	        "attestation.x509 needs clientCertificates");
	refused(G, "g",
	        "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":"
	        "{\"primary\":{\"certificate\":\"MII\"}}}}}",
	        "attestation.x509 needs signingCertificates or caReferences");
	refused(I, "d",
	        "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{}}}}",
	        "attestation.x509.clientCertificates must be");
	refused(G, "g",
	        "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"caReferences\":"
	        "{\"primary\":{}}}}}",
	        "attestation.x509.caReferences must be");

	/* TPM keys: the public areas a TPM gives, checked as such. */
	refused(I, "d", "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"AToA\"}}}",
	        "attestation.tpm.endorsementKey must be the base64 of the TPM2B_PUBLIC");
	char tpm_body[2048], tpm_want[2048];
	snprintf(tpm_body, sizeof tpm_body,
	         "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"%s\","
	         "\"storageRootKey\":\"%s\"}}}",
	         EK_B64, "AToA");
	refused(I, "d", tpm_body, "attestation.tpm.storageRootKey must be the base64");
	snprintf(tpm_body, sizeof tpm_body,
	         "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"%s\","
	         "\"storageRootKey\":\"%s\",\"other\":1}}}",
	         EK_B64, SRK_B64);
	snprintf(tpm_want, sizeof tpm_want,
	         "{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"%s\",\"storageRootKey\":\"%s\"}}",
	         EK_B64, SRK_B64);
	json_t *r = ok(I, "d", tpm_body);
	json_t *want = J(tpm_want);
	json_t *att = enrollment_attestation(r);
	assert_true(json_equal(att, want));
	json_decref(att);
	json_decref(want);
	json_decref(r);
}

static void test_other_rules(void **state)
{
	enum enrollment_kind I = ENROLLMENT_INDIVIDUAL;
#define SK "\"attestation\":{\"type\":\"symmetricKey\"}"
	refused(I, "d", "[]", "the body must be a JSON object");
	refused(I, "d", "{\"registrationId\":\"other\"," SK "}",
	        "registrationId 'other' in the body differs from 'd'");
	refused(ENROLLMENT_GROUP, "g", "{\"enrollmentGroupId\":7," SK "}",
	        "enrollmentGroupId must be a string");
	refused(I, "d", "{\"deviceId\":\"bad id\"," SK "}", "deviceId 'bad id' is not a valid");
	refused(I, "d", "{\"deviceId\":3," SK "}", "deviceId must be a string");
	refused(I, "d", "{\"capabilities\":true," SK "}", "capabilities must be an object");
	refused(I, "d", "{\"capabilities\":{\"iotEdge\":\"yes\"}," SK "}",
	        "capabilities.iotEdge must be true or false");
	refused(I, "d", "{\"iotHubs\":\"hub-a.example.com\"," SK "}", "iotHubs must be an array");
	refused(I, "d", "{\"iotHubs\":[1]," SK "}", "iotHubs[0] must be a hub host name");
	refused(I, "d", "{\"iotHubs\":[\"hub-a.example.com\",\"x\"]," SK "}",
	        "iotHubs: hub 'x' is not linked to this DPS");
	refused(I, "d", "{\"iotHubs\":[\"hub-a.example.com:443\"]," SK "}",
	        "iotHubs: hub 'hub-a.example.com:443' is not linked");
	refused(I, "d", "{\"iotHubHostName\":\"nothere.example.com\"," SK "}",
	        "iotHubHostName: hub 'nothere.example.com' is not linked to this DPS");
	refused(I, "d", "{\"iotHubHostName\":[]," SK "}", "iotHubHostName must be a string");
	refused(I, "d", "{\"initialTwin\":[]," SK "}", "initialTwin must be an object");
	refused(I, "d", "{\"initialTwin\":{\"tags\":1}," SK "}",
	        "initialTwin.tags must be an object");
	refused(I, "d", "{\"initialTwin\":{\"properties\":\"p\"}," SK "}",
	        "initialTwin.properties must be an object");
	refused(I, "d", "{\"initialTwin\":{\"properties\":{\"desired\":[1]}}," SK "}",
	        "initialTwin.properties.desired must be an object");
	refused(I, "d", "{\"provisioningStatus\":\"paused\"," SK "}",
	        "provisioningStatus must be 'enabled' or 'disabled'");
	refused(I, "d", "{\"provisioningStatus\":1," SK "}", "provisioningStatus must be");
	refused(I, "d", "{\"reprovisionPolicy\":[]," SK "}", "reprovisionPolicy must be an object");
	refused(I, "d", "{\"reprovisionPolicy\":{\"migrateDeviceData\":0}," SK "}",
	        "reprovisionPolicy.migrateDeviceData must be true or false");
	refused(I, "d", "{\"allocationPolicy\":\"random\"," SK "}",
	        "allocationPolicy must be one of hashed, geoLatency, static, custom");
	refused(I, "d", "{\"allocationPolicy\":\"static\"," SK "}",
	        "allocationPolicy 'static' needs exactly one hub");
	refused(I, "d",
	        "{\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub-a.example.com\","
	        "\"hub-b.example.com\"]," SK "}",
	        "allocationPolicy 'static' needs exactly one hub");
	refused(I, "d",
	        "{\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub-a.example.com\"],"
	        "\"iotHubHostName\":\"hub-b.example.com\"," SK "}",
	        "allocationPolicy 'static' needs exactly one hub");
	json_decref(ok(I, "d",
	               "{\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub-a.example.com\"],"
	               "\"iotHubHostName\":\"Hub-A.example.com\"," SK "}"));
	json_decref(ok(I, "d",
	               "{\"allocationPolicy\":\"static\",\"iotHubs\":[\"hub-b.example.com\","
	               "\"HUB-B.example.com\"]," SK "}"));
	refused(I, "d", "{\"optionalDeviceInformation\":\"x\"," SK "}",
	        "optionalDeviceInformation must be an object");

	/* Custom allocation. */
	const char *need = "allocationPolicy 'custom' needs customAllocationDefinition with "
	                   "webhookUrl and apiVersion";
	refused(I, "d", "{\"allocationPolicy\":\"custom\"," SK "}", need);
	refused(I, "d",
	        "{\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":{\"webhookUrl\":"
	        "\"https://x.example.com\"}," SK "}",
	        need);
	refused(I, "d",
	        "{\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":{\"apiVersion\":"
	        "\"2021-10-01\",\"webhookUrl\":\"\"}," SK "}",
	        need);
	refused(I, "d",
	        "{\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":{\"apiVersion\":"
	        "\"2021 10 01\",\"webhookUrl\":\"https://x.example.com\"}," SK "}",
	        "customAllocationDefinition.apiVersion '2021 10 01'");
	json_decref(ok(
	    I, "d",
	    "{\"allocationPolicy\":\"hashed\",\"customAllocationDefinition\":{\"bad\":1}," SK "}"));
#undef SK
}

static void check_url(const char *url, const char *want)
{
	char body[1024];
	snprintf(
	    body, sizeof body,
	    "{\"attestation\":{\"type\":\"none\"},\"allocationPolicy\":\"custom\","
	    "\"customAllocationDefinition\":{\"webhookUrl\":\"%s\",\"apiVersion\":\"2021-10-01\"}}",
	    url);
	if (want) {
		refused(ENROLLMENT_INDIVIDUAL, "d", body, want);
		return;
	}
	json_t *r = ok(ENROLLMENT_INDIVIDUAL, "d", body);
	assert_string_equal(str_at(r, "customAllocationDefinition", "webhookUrl"), url);
	json_decref(r);
}

static void test_webhook_url(void **state)
{
	check_url("https://fn.example.com/api/allocate?code=s3cr%2Bt", NULL);
	check_url("HTTPS://fn.example.com", NULL);
	check_url("https://user:pw@fn.example.com:8443/x", NULL);
	check_url("https://[2001:db8::1]:443/x", NULL);
	check_url("http://localhost:7071/api/x", NULL);
	check_url("http://LOCALHOST/x", NULL);
	check_url("http://127.0.0.1:8080/x", NULL);
	check_url("http://127.255.3.4/x", NULL);
	check_url("http://[::1]:9000/x", NULL);
	check_url("http://[0:0:0:0:0:0:0:1]/x", NULL);
	check_url("http://user@127.0.0.1/x", NULL);

	check_url("http://example.com/hook", "must use https:// for host 'example.com'");
	check_url("http://127.0.0.1.example.com/x", "must use https://");
	check_url("http://localhost@example.com/x", "for host 'example.com'");
	check_url("http://128.0.0.1/x", "must use https://");
	check_url("http://127.1/x", "must use https://");
	check_url("http://[::2]/x", "must use https://");
	check_url("http://localhost:80@evil.example.com/", "for host 'evil.example.com'");
	check_url("ftp://x.example.com/", "must be an https:// URL");
	check_url("fn.example.com/api", "must be an https:// URL");
	check_url("https:///path", "has no host");
	check_url("https://", "has no host");
	check_url("https://user@/x", "has no host");
	check_url("https://x.example.com:http/", "the port must be a number");
	check_url("https://x.example.com:123456/", "the port must be a number");
	check_url("https://x.example.com:/", "the port must be a number");
	check_url("https://[::1/x", "no closing ']'");
	check_url("https://[zz]/x", "is not an IPv6 address");
	check_url("https://[::1]x/", "the port must be a number");
	check_url("https://x.example.com/a b", "a space or a control character");
}

static void test_ids(void **state)
{
	char max[ENROLLMENT_ID_MAX + 2];
	memset(max, 'a', ENROLLMENT_ID_MAX);
	max[ENROLLMENT_ID_MAX] = '\0';
	assert_true(enrollment_regid_valid(max));
	assert_true(enrollment_groupid_valid(max));
	max[ENROLLMENT_ID_MAX] = 'a';
	max[ENROLLMENT_ID_MAX + 1] = '\0';
	assert_false(enrollment_regid_valid(max));
	assert_false(enrollment_groupid_valid(max));

	assert_true(enrollment_regid_valid("dev-1.a_b:c"));
	assert_false(enrollment_regid_valid("Dev-1"));
	assert_false(enrollment_regid_valid(""));
	assert_false(enrollment_regid_valid(".."));
	assert_false(enrollment_regid_valid("."));
	assert_true(enrollment_regid_valid("..."));
	assert_false(enrollment_groupid_valid(".."));
	assert_false(enrollment_regid_valid(NULL));
	assert_false(enrollment_regid_valid("a b"));
	assert_false(enrollment_regid_valid("a/b"));
	assert_false(enrollment_regid_valid("\xc3\xa9"));
	assert_true(enrollment_groupid_valid("Group-1.a_b:C"));
	assert_false(enrollment_groupid_valid("g#1"));
	assert_false(enrollment_groupid_valid(""));

	refused(ENROLLMENT_INDIVIDUAL, "Dev-1", "{\"attestation\":{\"type\":\"none\"}}",
	        "registrationId 'Dev-1' is not valid");
	refused(ENROLLMENT_GROUP, "g/1", "{\"attestation\":{\"type\":\"none\"}}",
	        "enrollmentGroupId 'g/1' is not valid");
}

static void test_update(void **state)
{
	json_t *old = ok(ENROLLMENT_INDIVIDUAL, "dev-u",
	                 "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{"
	                 "\"secondaryKey\":\"" KEY2 "\"}}}");
	const char *p_old =
	    str_at(json_object_get(old, "attestation"), "symmetricKey", "primaryKey");
	struct enrollment_error err;
	json_t *r = build(ENROLLMENT_INDIVIDUAL, "dev-u",
	                  "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{"
	                  "\"primaryKey\":\"\",\"secondaryKey\":null}},"
	                  "\"createdDateTimeUtc\":\"1999-01-01T00:00:00Z\"}",
	                  old, &err);
	assert_non_null(r);
	json_t *sk = json_object_get(json_object_get(r, "attestation"), "symmetricKey");
	assert_string_equal(str_at(sk, "primaryKey", NULL), p_old);
	assert_string_equal(str_at(sk, "secondaryKey", NULL), KEY2);
	assert_string_equal(str_at(r, "createdDateTimeUtc", NULL), T1);
	assert_string_equal(str_at(r, "lastUpdatedDateTimeUtc", NULL), T2);
	assert_string_not_equal(str_at(r, "etag", NULL), str_at(old, "etag", NULL));
	json_decref(r);

	/* The same without a symmetricKey section, then with a new key. */
	r = build(ENROLLMENT_INDIVIDUAL, "dev-u", "{\"attestation\":{\"type\":\"symmetricKey\"}}",
	          old, &err);
	assert_non_null(r);
	sk = json_object_get(json_object_get(r, "attestation"), "symmetricKey");
	assert_string_equal(str_at(sk, "primaryKey", NULL), p_old);
	json_decref(r);
	r = build(ENROLLMENT_INDIVIDUAL, "dev-u",
	          "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":"
	          "\"" GROUP_KEY "\"}}}",
	          old, &err);
	assert_non_null(r);
	sk = json_object_get(json_object_get(r, "attestation"), "symmetricKey");
	assert_string_equal(str_at(sk, "primaryKey", NULL), GROUP_KEY);
	assert_string_equal(str_at(sk, "secondaryKey", NULL), KEY2);
	json_decref(r);

	/* A failed update reports the error and returns NULL. */
	assert_null(build(ENROLLMENT_INDIVIDUAL, "dev-u", "{\"attestation\":{\"type\":\"what\"}}",
	                  old, &err));
	assert_int_equal(err.status, 400);
	json_decref(old);
}

static void test_etag(void **state)
{
	json_t *r = J("{\"etag\":\"\\\"abc-1\\\"\"}");
	assert_true(enrollment_etag_matches(r, NULL));
	assert_true(enrollment_etag_matches(r, ""));
	assert_true(enrollment_etag_matches(r, "*"));
	assert_true(enrollment_etag_matches(r, "\"abc-1\""));
	assert_true(enrollment_etag_matches(r, "abc-1"));
	assert_false(enrollment_etag_matches(r, "abc-2"));
	assert_false(enrollment_etag_matches(r, "\"abc-2\""));
	assert_false(enrollment_etag_matches(r, "\"abc-1"));
	assert_false(enrollment_etag_matches(r, "abc-"));
	assert_false(enrollment_etag_matches(r, "\""));
	json_decref(r);

	r = J("{\"etag\":\"abc-1\"}");
	assert_true(enrollment_etag_matches(r, "\"abc-1\""));
	assert_true(enrollment_etag_matches(r, "abc-1"));
	assert_false(enrollment_etag_matches(r, "\"\"abc-1\"\""));
	json_decref(r);

	r = J("{}");
	assert_true(enrollment_etag_matches(r, "*"));
	assert_false(enrollment_etag_matches(r, "abc-1"));
	json_decref(r);

	/* A built record matches its own etag, quoted or not. */
	r = ok(ENROLLMENT_INDIVIDUAL, "e", "{\"attestation\":{\"type\":\"none\"}}");
	const char *etag = str_at(r, "etag", NULL);
	char bare[64];
	snprintf(bare, sizeof bare, "%.*s", (int)strlen(etag) - 2, etag + 1);
	assert_true(enrollment_etag_matches(r, etag));
	assert_true(enrollment_etag_matches(r, bare));
	json_decref(r);
}

static void test_redacted(void **state)
{
	json_t *r = ok(ENROLLMENT_GROUP, "g-r",
	               "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{"
	               "\"primaryKey\":\"" GROUP_KEY
	               "\"}},\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":{"
	               "\"webhookUrl\":\"https://x.example.com\",\"apiVersion\":\"2021-10-01\"}}");
	json_t *v = enrollment_redacted(r);
	json_t *want = J("{\"type\":\"symmetricKey\",\"symmetricKey\":{}}");
	assert_true(json_equal(json_object_get(v, "attestation"), want));
	json_decref(want);
	char *text = json_dumps(v, JSON_COMPACT);
	assert_null(strstr(text, GROUP_KEY));
	free(text);
	/* Everything else is kept; the record itself is untouched. */
	assert_string_equal(str_at(v, "enrollmentGroupId", NULL), "g-r");
	assert_string_equal(str_at(v, "etag", NULL), str_at(r, "etag", NULL));
	assert_string_equal(str_at(v, "customAllocationDefinition", "webhookUrl"),
	                    "https://x.example.com");
	assert_string_equal(str_at(json_object_get(r, "attestation"), "symmetricKey", "primaryKey"),
	                    GROUP_KEY);
	json_decref(v);
	json_decref(r);

	char tpm_body[2048];
	snprintf(tpm_body, sizeof tpm_body,
	         "{\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"%s\","
	         "\"storageRootKey\":\"%s\"}}}",
	         EK_B64, SRK_B64);
	r = ok(ENROLLMENT_INDIVIDUAL, "t-r", tpm_body);
	v = enrollment_redacted(r);
	want = J("{\"type\":\"tpm\",\"tpm\":{}}");
	assert_true(json_equal(json_object_get(v, "attestation"), want));
	json_decref(want);
	json_decref(v);
	json_decref(r);

	char body[4096];
	snprintf(body, sizeof body,
	         "{\"attestation\":{\"type\":\"x509\",\"x509\":{\"clientCertificates\":{"
	         "\"primary\":{\"certificate\":\"%s\"}}}}}",
	         CERT_A);
	r = ok(ENROLLMENT_INDIVIDUAL, "x-r", body);
	v = enrollment_redacted(r);
	assert_true(
	    json_equal(json_object_get(v, "attestation"), json_object_get(r, "attestation")));
	json_decref(v);
	json_decref(r);
}

static void test_device_key(void **state)
{
	char out[96];
	json_t *r = ok(ENROLLMENT_INDIVIDUAL, "dev-k",
	               "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{"
	               "\"primaryKey\":\"" GROUP_KEY "\",\"secondaryKey\":\"" KEY2 "\"}}}");
	assert_int_equal(enrollment_device_key(r, ENROLLMENT_INDIVIDUAL, "dev-k", 0, out), 0);
	assert_string_equal(out, GROUP_KEY);
	assert_int_equal(enrollment_device_key(r, ENROLLMENT_INDIVIDUAL, "dev-k", 1, out), 0);
	assert_string_equal(out, KEY2);
	assert_int_equal(enrollment_device_key(r, ENROLLMENT_INDIVIDUAL, "dev-k", 2, out),
	                 FH_ENOTFOUND);
	json_decref(r);

	/* A generated 88-character key fits. */
	r = ok(ENROLLMENT_INDIVIDUAL, "dev-g", "{\"attestation\":{\"type\":\"symmetricKey\"}}");
	assert_int_equal(enrollment_device_key(r, ENROLLMENT_INDIVIDUAL, "dev-g", 1, out), 0);
	assert_int_equal(strlen(out), 88);
	json_decref(r);

	r = ok(ENROLLMENT_GROUP, "grp",
	       "{\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":"
	       "\"" GROUP_KEY "\",\"secondaryKey\":\"" KEY2 "\"}}}");
	assert_int_equal(enrollment_device_key(r, ENROLLMENT_GROUP, "grp-dev-1", 0, out), 0);
	assert_string_equal(out, "pJVzPE1FRYvYvIUr81Yq73StGA6ujBZmMFOZ9wszqp4=");
	assert_int_equal(enrollment_device_key(r, ENROLLMENT_GROUP, "grp-dev-1", 1, out), 0);
	assert_int_equal(strlen(out), 44);
	assert_string_not_equal(out, "pJVzPE1FRYvYvIUr81Yq73StGA6ujBZmMFOZ9wszqp4=");
	json_decref(r);

	r = ok(ENROLLMENT_INDIVIDUAL, "dev-n", "{\"attestation\":{\"type\":\"none\"}}");
	assert_int_equal(enrollment_device_key(r, ENROLLMENT_INDIVIDUAL, "dev-n", 0, out),
	                 FH_ENOTFOUND);
	json_decref(r);
	r = J("{}");
	assert_int_equal(enrollment_device_key(r, ENROLLMENT_GROUP, "x", 0, out), FH_ENOTFOUND);
	json_t *a = enrollment_attestation(r);
	assert_string_equal(str_at(a, "type", NULL), "none");
	json_decref(a);
	assert_true(enrollment_enabled(r));
	json_decref(r);
}

int main(void)
{
	make_cert("cert-a", CERT_A, SHA_A);
	make_cert("cert-b", CERT_B, SHA_B);
	make_tpm_key(true, EK_B64);
	make_tpm_key(false, SRK_B64);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_individual_defaults),
	    cmocka_unit_test(test_individual_full),
	    cmocka_unit_test(test_group),
	    cmocka_unit_test(test_attestation_rules),
	    cmocka_unit_test(test_other_rules),
	    cmocka_unit_test(test_webhook_url),
	    cmocka_unit_test(test_ids),
	    cmocka_unit_test(test_update),
	    cmocka_unit_test(test_etag),
	    cmocka_unit_test(test_redacted),
	    cmocka_unit_test(test_device_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
