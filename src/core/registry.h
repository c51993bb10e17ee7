/* Device identities: validation and normalisation of the identity JSON the
 * service REST API receives (azure-iothub Registry shapes), and the JSON it
 * answers. Pure: no I/O, no clock; randomness only through base/crypto.
 *
 * Stored identity document (store_device.json) fields: deviceId,
 * generationId, status ("enabled"|"disabled"), statusReason,
 * statusUpdatedTime, authentication {type: "sas"|"selfSigned"|
 * "certificateAuthority"|"none", symmetricKey {primaryKey, secondaryKey},
 * x509Thumbprint {primaryThumbprint, secondaryThumbprint}},
 * capabilities {iotEdge}. */
#ifndef FH_CORE_REGISTRY_H
#define FH_CORE_REGISTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/records.h"

#define REGISTRY_ID_MAX 128

/* A device id: 1..128 chars of ASCII letters, digits and
 * - : . + % _ # * ? ! ( ) , = @ $ ' (as Azure allows), except "." and "..". */
bool registry_id_valid(const char *id);

struct registry_error {
	int status;        /* HTTP status: 400, 409, 412 ... */
	char code[48];     /* e.g. "ArgumentInvalid", "DeviceNotFound" */
	char message[256];
};

/* Builds the identity to store from a REST PUT body for device id (the
 * path's id; a deviceId in the body must match it). existing is the stored
 * identity JSON or NULL for a create. Generates keys when the body's
 * symmetric keys are absent or empty (type sas), keeps generationId of an
 * existing device and makes a new one on create, validates status, key
 * base64 (16..64 decoded bytes), thumbprints (40 or 64 hex chars).
 * statusUpdatedTime is set to now_iso when status changes or on create.
 * Returns a new JSON object (caller owns) or NULL with *err filled. */
json_t *registry_build_identity(const char *id, const json_t *body, const json_t *existing,
				const char *now_iso, struct registry_error *err);

/* The device JSON the REST API answers: the stored identity plus etag
 * (quoted-less base64 of the etag counter, like the twin etag),
 * connectionState, connectionStateUpdatedTime, lastActivityTime,
 * cloudToDeviceMessageCount. connected/last_activity_iso come from the
 * live sessions (NULL time = "0001-01-01T00:00:00Z" as Azure does). */
json_t *registry_render(const json_t *identity, int64_t etag, bool connected,
			const char *conn_state_time_iso, const char *last_activity_iso);

/* Key lookups on a stored identity. Return NULL when absent. */
const char *registry_primary_key(const json_t *identity);
const char *registry_secondary_key(const json_t *identity);
bool registry_enabled(const json_t *identity);
/* authentication.type: "sas" (also when absent), "selfSigned",
 * "certificateAuthority" or "none". */
const char *registry_auth_type(const json_t *identity);
/* authentication.x509Thumbprint's primary or secondary thumbprint, or NULL. */
const char *registry_thumbprint(const json_t *identity, bool primary);
/* True when a device that could connect with the old identity may no
 * longer do so with the new one: it is disabled now, or its
 * authentication (keys, thumbprints, type) changed. Its live session must
 * then close (a DEVICE_ACCESS_CHANGED event). */
bool registry_access_changed(const json_t *old_identity, const json_t *new_identity);

#endif
