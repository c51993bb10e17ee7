/* DPS enrollment records (individual enrollments and enrollment groups):
 * validation and normalisation of what the service REST API receives
 * (npm azure-iot-provisioning-service shapes, protocol.md §7), the views
 * the API and the custom allocation webhook get, and symmetric-key
 * attestation checks. Pure: no I/O, no clock; randomness only through
 * base/crypto.
 *
 * A stored record is the normalised JSON of protocol.md §7 with every
 * default filled in:
 *   individual: registrationId, deviceId (optional), attestation,
 *     capabilities {iotEdge}, iotHubHostName (optional), initialTwin
 *     {tags, properties {desired}}, etag, provisioningStatus,
 *     reprovisionPolicy {updateHubAssignment, migrateDeviceData},
 *     createdDateTimeUtc, lastUpdatedDateTimeUtc, allocationPolicy,
 *     iotHubs [], customAllocationDefinition {webhookUrl, apiVersion}
 *     (only with allocationPolicy "custom"), optionalDeviceInformation.
 *   group: enrollmentGroupId instead of registrationId/deviceId, same rest.
 * Defaults: provisioningStatus "enabled", reprovisionPolicy true/true,
 * allocationPolicy "hashed", capabilities.iotEdge false, iotHubs [] (= all
 * linked hubs), initialTwin {"tags":{},"properties":{"desired":{}}}.
 * The etag is a new random string (a UUID) on every change; If-Match is
 * compared with and without surrounding quotes. */
#ifndef FH_CORE_ENROLLMENT_H
#define FH_CORE_ENROLLMENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum enrollment_kind { ENROLLMENT_INDIVIDUAL, ENROLLMENT_GROUP };

#define ENROLLMENT_ID_MAX 128

/* Registration ids: 1..128 of lowercase ASCII letters, digits, - . _ :
 * Enrollment group ids: 1..128 of ASCII letters, digits, - . _ :
 * Neither may be "." or "..". */
bool enrollment_regid_valid(const char *id);
bool enrollment_groupid_valid(const char *id);

struct enrollment_error {
	int status;        /* HTTP status: 400, 404, 409, 412 */
	int code;          /* six-digit errorCode, e.g. 400004 */
	char message[256]; /* names the field and the rule */
};

/* The DPS's linked hubs, for validating iotHubs / iotHubHostName. */
struct enrollment_hubs {
	const char *const *names; /* host names, lowercase */
	size_t n;
};

/* Builds the record to store from a PUT body for id (the path's id; the
 * body's registrationId/enrollmentGroupId, when present, must match it).
 * existing is the stored record or NULL for a create: createdDateTimeUtc is
 * kept from it. Symmetric keys absent or empty are generated (base64 of 64
 * random bytes, as Azure does) -- on update, the existing keys are kept
 * when the body's are empty. Checks: attestation present with a known type
 * (none|tpm|x509|symmetricKey; tpm needs endorsementKey; x509 needs
 * clientCertificates (individual) or signingCertificates / caReferences;
 * symmetricKey keys base64 of 16..64 bytes), allocationPolicy one of
 * hashed|geoLatency|static|custom, custom needs customAllocationDefinition
 * with webhookUrl (https://, or http:// only to a loopback host: localhost,
 * 127.0.0.0/8, [::1]) and apiVersion, static needs exactly one hub (one
 * iotHubs entry or iotHubHostName), every hub in iotHubs / iotHubHostName
 * linked, provisioningStatus enabled|disabled, initialTwin an object whose
 * tags and properties.desired are objects, registrationId / deviceId valid.
 * Read-only fields in the body (etag, timestamps, registrationState) are
 * ignored. Returns a new object (caller owns) or NULL with *err filled. */
json_t *enrollment_build(enum enrollment_kind kind, const char *id, const json_t *body,
			 const json_t *existing, const struct enrollment_hubs *linked,
			 const char *now_iso, struct enrollment_error *err);

/* True when if_match (a header value, possibly quoted, "" or "*" match
 * anything) matches the record's etag. */
bool enrollment_etag_matches(const json_t *record, const char *if_match);

/* The record without key material (symmetric keys, TPM keys removed), as
 * sent to the custom allocation webhook. Caller owns. */
json_t *enrollment_redacted(const json_t *record);

/* The AttestationMechanism of a record (a new reference; caller owns). */
json_t *enrollment_attestation(const json_t *record);

bool enrollment_enabled(const json_t *record);
/* "symmetricKey", "x509", "tpm", "none". */
const char *enrollment_attestation_type(const json_t *record);

/* Symmetric-key attestation: the device key for registration_id under
 * this record -- for an individual enrollment its own keys, for a group the
 * keys derived per registration id (sas_derive_key). which: 0 primary,
 * 1 secondary. out gets 44 chars + NUL (derived) or the stored key (up to
 * 88 chars + NUL). Returns 0, or FH_ENOTFOUND when the record has no such
 * key (not symmetricKey attestation). */
int enrollment_device_key(const json_t *record, enum enrollment_kind kind,
			  const char *registration_id, int which, char out[96]);

#endif
