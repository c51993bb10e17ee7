/* Choosing a hub for a registration (protocol.md §5): the hashed, static
 * and geoLatency policies, the custom allocation webhook's request and
 * response, and the reprovisioning decision. Pure: no I/O, no clock.
 *
 * geoLatency: one site has no geography, so it chooses like hashed among
 * the candidate hubs (documented in the README). */
#ifndef FH_CORE_ALLOCATION_H
#define FH_CORE_ALLOCATION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/enrollment.h"

struct alloc_hub {
	const char *name; /* host name, lowercase */
	unsigned weight;  /* allocationWeight, >= 1 */
	bool apply_policy; /* applyAllocationPolicy: eligible for hashed/geoLatency */
};

/* The candidate hubs of an enrollment: its iotHubs (or iotHubHostName)
 * intersected with the linked hubs, or every linked hub with apply_policy
 * when the enrollment names none. Fills out (up to max) and returns the
 * count; 0 when none is left. Pointers borrow from linked. */
size_t alloc_candidates(const json_t *record, const struct alloc_hub *linked, size_t nlinked,
			const struct alloc_hub **out, size_t max);

/* Weighted rendezvous hashing: the same registration id and hub set give
 * the same hub; a hub of weight 2 gets about twice the devices of weight 1;
 * adding a hub moves only the devices that go to it. n >= 1. */
const struct alloc_hub *alloc_hashed(const char *registration_id,
				     const struct alloc_hub *const *hubs, size_t n);

/* The AllocationRequest body sent to the webhook:
 *   {"individualEnrollment"|"enrollmentGroup": <record without keys>,
 *    "deviceRuntimeContext": {"registrationId", "symmetricKey":{} | "x509":{..} |
 *        "tpm":{}, "payload": <device payload, when given>,
 *        "currentIotHubHostName", "currentDeviceId" (re-registration only)},
 *    "linkedHubs": [<candidate hub names>]}
 * attested: what the attestation proved, the value of its member (for x509
 * the X509RegistrationResult: certificateInfo, enrollmentGroupId,
 * signingCertificateInfo), NULL = {}. payload, current_hub and
 * current_device may be NULL. Caller owns. */
json_t *alloc_webhook_request(const json_t *record, enum enrollment_kind kind,
                              const json_t *attested,
			      const char *registration_id, const json_t *payload,
			      const char *current_hub, const char *current_device,
			      const struct alloc_hub *const *candidates, size_t n);

enum alloc_outcome {
	ALLOC_OK,     /* hub chosen */
	ALLOC_RETRY,  /* 429 or 5xx: try again later (the caller bounds retries) */
	ALLOC_FAILED, /* terminal: error_code + message */
};

struct alloc_result {
	enum alloc_outcome outcome;
	char hub[256];        /* ALLOC_OK: the chosen hub, one of the candidates */
	json_t *initial_twin; /* ALLOC_OK: {"tags":..,"properties":{"desired":..}} or NULL; owned */
	json_t *payload;      /* ALLOC_OK: returned to the device, or NULL; owned */
	int error_code;       /* ALLOC_FAILED: 400207, 400208, 400209 */
	char message[256];    /* ALLOC_FAILED / ALLOC_RETRY: for the device and the log */
};

/* Interprets the webhook's answer: status (the HTTP status, or 0 when no
 * answer came: timeout, TLS or connection failure, with transport_error
 * describing it), body[0..len). 200 with a JSON object whose
 * iotHubHostName (case-insensitive) is a candidate -> ALLOC_OK with the
 * optional initialTwin (must be an object with object tags / properties.
 * desired when present) and payload (or the older returnData); 200 with
 * iotHubHostName missing/empty/null -> 400208; a hub that is not a
 * candidate, invalid JSON, a non-object -> 400207 with a message naming the
 * problem; 401 -> 400209; 429 and >= 500 -> ALLOC_RETRY; status 0 ->
 * ALLOC_RETRY for a timeout/connection failure (the caller decides when to
 * give up, then fails with 400207 and the message); any other status ->
 * 400207 "Custom allocation failed with status code: N". Free with
 * alloc_result_clear. */
void alloc_parse_response(int status, const char *body, size_t len,
			  const char *transport_error, const struct alloc_hub *const *candidates,
			  size_t n, struct alloc_result *out);
void alloc_result_clear(struct alloc_result *r);

/* Reprovisioning (protocol.md §5.2) for a device registered before on
 * prev_hub (NULL on the first registration) when the policy chose
 * new_hub. */
enum reprov_action {
	REPROV_NEW,     /* first assignment: create on new_hub with the initial twin */
	REPROV_SAME,    /* same hub: keep the device and its twin */
	REPROV_MIGRATE, /* move to new_hub, copy the twin, delete the old identity */
	REPROV_RESET,   /* move to new_hub with the initial twin, delete the old identity */
	REPROV_STAY,    /* never re-provision: keep prev_hub */
};

struct reprov_decision {
	enum reprov_action action;
	const char *hub;       /* where the device ends up (new_hub or prev_hub) */
	const char *substatus; /* initialAssignment | deviceDataMigrated |
	                          deviceDataReset | reprovisionedToInitialAssignment */
};

/* record's reprovisionPolicy {updateHubAssignment, migrateDeviceData}
 * (defaults true/true). initial_hub is the hub of the first assignment
 * (NULL when unknown): returning to it reads
 * reprovisionedToInitialAssignment. */
void alloc_reprovision(const json_t *record, const char *prev_hub, const char *initial_hub,
		       const char *new_hub, struct reprov_decision *out);

#endif
