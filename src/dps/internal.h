/* Names shared inside the DPS layer only. */
#ifndef FH_DPS_INTERNAL_H
#define FH_DPS_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "base/buf.h"
#include "core/enrollment.h"
#include "dps.h"

/* Verifies a service SAS (an Authorization header value: sr = the DPS host
 * name, skn = one of its policies) and returns the policy's rights.
 * Returns 0 or FH_EAUTH with a reason for the log in *why. */
int dps__auth_service(const struct dps *d, const char *header, int64_t now_s, unsigned *rights,
		      const char **why);

/* What a device proved with its registration SAS token: the enrollment
 * whose symmetric key signed it. */
struct dps_auth {
	json_t *record; /* the enrollment record, owned */
	enum enrollment_kind kind;
	char enrollment_id[ENROLLMENT_ID_MAX + 1];
	int key_index; /* 0 primary, 1 secondary */
};

/* Checks token[0..n) (sr = "<idScope>/registrations/<regid>") against the
 * individual enrollment of regid, else against every enrollment group
 * (keys derived per registration id). Returns 0 with *out filled, FH_EAUTH
 * with *why, or FH_EIO when the store could not be read. */
int dps__authenticate(struct dps *d, const char *regid, const char *token, size_t n,
		      int64_t now_s, struct dps_auth *out, const char **why);
void dps__auth_clear(struct dps_auth *a);

/* An answer to a device request, sent by whoever made the request (MQTT
 * session or HTTPS exchange). fn sends status and the JSON body (with
 * retry_after_s > 0 as retry-after) and frees r; it must cope with the
 * device having gone. */
struct dps_reply {
	void (*fn)(struct dps_reply *r, int status, const char *json, unsigned retry_after_s);
};

/* Register: auth is taken over (cleared), payload taken (may be NULL).
 * Answers 202 + operationId once the operation is committed, or 200 with
 * status "disabled". */
void dps__register(struct dps *d, const char *regid, struct dps_auth *auth, json_t *payload,
		   struct dps_reply *r);
/* Operation status for regid's op_id: 202 while assigning, 200 when done,
 * 404 when there is no such operation of this registration. */
void dps__poll(struct dps *d, const char *regid, const char *op_id, struct dps_reply *r);
/* Stops every operation in flight (they stay "assigning" in the store and
 * are resumed on the next start). */
void dps__ops_shutdown(struct dps *d);

/* The device API over HTTPS (dps_device.c): path test and handler. */
bool dps__device_path(const struct dps *d, const char *path);
void dps__device_http(struct dps *d, struct http_exchange *ex);

/* ProvisioningServiceErrorDetails: {errorCode, trackingId, message, info,
 * timestampUtc}. */
char *dps__error_json(int code, const char *message);

struct dps_linked_hub *dps__linked_find(struct dps *d, const char *name);
/* The linked hubs as allocation candidates input. out holds d->nlinked. */
void dps__alloc_hubs(const struct dps *d, struct alloc_hub *out);

/* The registration state as the APIs show it: internal fields ("_...")
 * removed. Caller owns. */
json_t *dps__public_state(const json_t *state);

#endif
