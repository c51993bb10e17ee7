/* Names shared inside the DPS layer only. */
#ifndef FH_DPS_INTERNAL_H
#define FH_DPS_INTERNAL_H

#include <jansson.h>
#include <openssl/x509.h>
#include <stdint.h>

#include "base/buf.h"
#include "codec/sas.h"
#include "core/ca.h"
#include "core/enrollment.h"
#include "dps.h"

/* Verifies a service SAS (an Authorization header value: sr = the DPS host
 * name, skn = one of its policies) and returns the policy's rights.
 * Returns 0 or FH_EAUTH with a reason for the log in *why. */
int dps__auth_service(const struct dps *d, const char *header, int64_t now_s, unsigned *rights,
                      const char **why);

/* What a device proved: the enrollment whose symmetric key signed its
 * registration SAS token, or that its client certificate matched. */
struct dps_auth {
	json_t *record; /* the enrollment record, owned */
	enum enrollment_kind kind;
	char enrollment_id[ENROLLMENT_ID_MAX + 1];
	int key_index; /* symmetric keys: 0 primary, 1 secondary */
	/* X.509 only (else NULL): the X509RegistrationResult (certificateInfo,
	 * enrollmentGroupId, signingCertificateInfo) the registration state and
	 * the webhook show, and the device's certificate and the chain it sent
	 * as PEM text, to decide the identity on the hub it is assigned to. */
	json_t *x509;
	char *certificates;
	/* TPM only (else NULL): {"endorsementKey", "storageRootKey"} of the
	 * TPM the registration's challenge was made for (base64 TPM2B_PUBLIC),
	 * to wrap the hub key for and to show the webhook. */
	json_t *tpm;
};

/* The enrollment groups are kept parsed for attestation (struct
 * dps.groups): read once at start-up, then changed one group at a time by
 * the writes this DPS commits (record NULL: the group was deleted), never
 * read again in full on the loop. (With several nodes, issue 17, another
 * node's changes arrive through the store's notification channel.) */
void dps__group_changed(struct dps *d, const char *id, const json_t *record);
/* Reads every group again (store_read_slow; nothing when a read is under
 * way), replacing d->groups when it completes. */
void dps__groups_load(struct dps *d);
/* The enrollment groups ({id: record}); NULL (and a read started) while
 * they cannot be read. */
json_t *dps__groups(struct dps *d);
/* Counts a failed attestation against regid's failure rate; returns
 * FH_EAUTH. */
int dps__attest_failed(struct dps *d, const char *regid, int64_t now_ms);
/* In a store read or job: the document (kind, scope, id) parsed, or NULL
 * with *rc FH_ENOTFOUND, FH_EIO (also for text that does not parse) or
 * another store error. */
json_t *dps__doc_get(struct store_txn *t, enum store_doc_kind k, const char *scope,
                     const char *id, int *rc);

/* What attestation reads from the store, in one read (store_read) before
 * it decides on the loop: the individual enrollment of regid, a TPM
 * enrollment's challenge, and for a certificate the CA records its
 * enrollment and the x509 groups reference. */
struct dps_prefetch {
	char scope[256], ca_scope[300];
	char regid[ENROLLMENT_ID_MAX + 1];
	json_t *group_refs; /* X.509: the CA names the groups reference (input) */
	int rc;             /* the enrollment's read: 0, FH_ENOTFOUND or FH_EIO */
	json_t *rec;        /* the individual enrollment when rc == 0 */
	int challenge_rc;   /* a TPM enrollment: its challenge's read */
	json_t *challenge;  /* ... and the challenge */
	json_t *cas;        /* X.509: {name: CA record} of those that exist */
};
/* Fills pf's input for regid (x509: a certificate is to be checked). */
void dps__prefetch_init(struct dps *d, const char *regid, bool x509, struct dps_prefetch *pf);
/* The read: a store_read work with pf as its arg. */
int dps__prefetch(void *pf, struct store_txn *t);
void dps__prefetch_clear(struct dps_prefetch *pf);

/* The checks of a registration SAS token (token[0..n), parsed into *t)
 * that need no store and no HMAC: its form, expiry and resource
 * ("<idScope>/registrations/<regid>"), then regid's rate of failed
 * attempts. 0, or as dps__authenticate. */
int dps__sas_precheck(struct dps *d, const char *regid, const char *token, size_t n,
                      int64_t now_s, struct sas_token *t, const char **why,
                      unsigned *retry_after);
/* Checks token[0..n) against the individual enrollment of regid (pf, read
 * by dps__prefetch), else against every enrollment group (keys derived per
 * registration id): the prechecks first, then (before trying the groups)
 * the rate of group key checks of all devices together. Returns 0 with
 * *out filled, FH_EAUTH with *why, FH_EAGAIN with *why and *retry_after
 * (seconds) when a rate refuses the attempt (the caller answers 429 or
 * CONNACK 3), or FH_EIO when the store could not be read. */
int dps__authenticate(struct dps *d, const char *regid, const char *token, size_t n, int64_t now_s,
                      const struct dps_prefetch *pf, struct dps_auth *out, const char **why,
                      unsigned *retry_after);
void dps__auth_clear(struct dps_auth *a);

/* X.509 attestation (dps_x509.c, decisions.md 7): leaf (the TLS client
 * certificate, its CN the registration id) and chain (the certificates the
 * device sent after it, may be NULL) against the individual enrollment of
 * regid, else the x509 enrollment group whose signing certificate or
 * verified CA (caReferences, this DPS's CA certificates; in pf) is nearest
 * the leaf, with at most d->x509_depth intermediates, all valid at now_s.
 * The checks that need no store come first (dps__x509_precheck).
 * Returns as dps__authenticate. */
int dps__x509_precheck(struct dps *d, const char *regid, X509 *leaf, STACK_OF(X509) *chain,
                       int64_t now_s, const char **why, unsigned *retry_after);
int dps__authenticate_x509(struct dps *d, const char *regid, X509 *leaf, STACK_OF(X509) *chain,
                           int64_t now_s, const struct dps_prefetch *pf, struct dps_auth *out,
                           const char **why, unsigned *retry_after);

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
/* A registration in progress on this DPS as its state reads while it
 * lasts: registrationId, status "assigning", operationId, created time,
 * the enrollment (or group) and webhook attempts so far; NULL when none is
 * in flight. Owned by the caller. */
json_t *dps__assigning_state(struct dps *d, const char *regid);
/* Stops every operation in flight (they stay "assigning" in the store and
 * are resumed on the next start). */
void dps__ops_shutdown(struct dps *d);

/* ---- the webhook call log (dps_calls.c): bounded per registration, by
 * age and with the registration ---- */

/* Stores the record json (taken) of a call made now for regid. */
void dps__calls_log(struct dps *d, const char *regid, int64_t now_ms, char *json);
/* Inside a store job: deletes every record of regid. */
int dps__calls_delete(struct store_txn *t, const char *scope, const char *regid);
/* Removes the records past their age now (a store job; tests call it). */
void dps__calls_sweep(struct dps *d);
/* The sweep's timer, started by dps_init and closed by dps_shutdown. */
void dps__calls_start(struct dps *d);
void dps__calls_stop(struct dps *d);

/* ---- TPM attestation (dps_tpm.c) ---- */

/* The first register PUT of a TPM device (no Authorization; tpm = its
 * {"endorsementKey", "storageRootKey"}): answers 401 with a fresh
 * authenticationKey once the challenge is stored, or refuses (400, 401
 * without a key, 429, 503). */
void dps__tpm_challenge(struct dps *d, const char *regid, const json_t *tpm, const char *peer,
                        struct dps_reply *r);
/* For dps__authenticate, rec being a TPM enrollment: t must be signed with
 * the key of regid's current challenge (pf->challenge), unexpired, made
 * for the enrollment's EK. 0 with *tpm_out (the challenge's keys, a new
 * reference), FH_EAUTH with *why, or FH_EIO. */
int dps__tpm_authenticate(struct dps *d, const json_t *rec, const struct dps_prefetch *pf,
                          const struct sas_token *t, int64_t now_s, json_t **tpm_out,
                          const char **why);
/* The authenticationKey delivering key[0..keylen) to the TPM of tpm
 * ({"endorsementKey", "storageRootKey"}), base64 in *b64_out (malloc'd).
 * 0, or FH_EINVAL with *why. */
int dps__tpm_blob(const json_t *tpm, const uint8_t *key, size_t keylen, char **b64_out,
                  const char **why);
/* The device's hub key: the one its previous registration state keeps
 * (returns 0), else a new random one (returns 1). */
int dps__tpm_hub_key(const json_t *prev_state, uint8_t key[32]);

/* An enrollment (kind, id) was written (record) or deleted (NULL): when
 * it is gone or disabled, the live MQTT sessions attested by it are
 * closed (dps_device.c). */
void dps__enrollment_changed(struct dps *d, enum enrollment_kind kind, const char *id,
                             const json_t *record);

/* The DPS's CA certificates over HTTPS (dps_ca.c): a change (PUT,
 * DELETE, a verification code, a proof of possession) to name, one read,
 * the list. */
void dps__ca_change(struct dps *d, struct http_exchange *ex, const char *name,
                    enum ca_change op);
void dps__ca_get(struct dps *d, struct http_exchange *ex, const char *name);
void dps__ca_list(struct dps *d, struct http_exchange *ex);

/* The device API over HTTPS (dps_device.c). */
void dps__device_http(struct dps *d, struct http_exchange *ex);

/* ---- device requests as bytes (dps_wire.c): pure, bounded, fuzzed ---- */

#define DPS_RID_MAX 128
#define DPS_OPID_MAX 63

/* MQTT CONNECT user name "<scope>/registrations/<regid>[/api-version=...]"
 * (scope case-insensitive): true with the registration id copied to regid
 * when it is a valid one. */
bool dps__wire_username(const char *scope, const char *u, size_t len,
                        char regid[ENROLLMENT_ID_MAX + 1]);

enum dps_topic {
	DPS_TOPIC_UNKNOWN,  /* not a DPS request topic, or no usable $rid */
	DPS_TOPIC_REGISTER, /* $dps/registrations/PUT/iotdps-register/?$rid=.. */
	DPS_TOPIC_POLL, /* $dps/registrations/GET/iotdps-get-operationstatus/?$rid=..&operationId=..
	                 */
};
/* A device PUBLISH topic topic[0..len): its kind, with $rid copied to rid
 * (1..DPS_RID_MAX of [A-Za-z0-9-_.~:], so it cannot alter the response
 * topic) and, for a poll, operationId to op ("" when missing or too long). */
enum dps_topic dps__wire_topic(const char *topic, size_t len, char rid[DPS_RID_MAX + 1],
                               char op[DPS_OPID_MAX + 1]);

/* A register body[0..n): empty, or a JSON object whose optional
 * registrationId must equal regid. Returns 0 with *payload (the "payload"
 * member, a new reference, or NULL) and *tpm (a TPM device's "tpm":
 * {"endorsementKey", "storageRootKey"}, each the base64 of at most
 * TPM_PUBLIC_MAX bytes, the storage root key optional; a new reference, or
 * NULL), or -1 with a message for the device. */
int dps__wire_register_body(const char *regid, const char *body, size_t n, json_t **payload,
                            json_t **tpm, char *msg, size_t msglen);

/* True when path is "/<scope>/registrations/..." (the device API). */
bool dps__wire_is_device_path(const char *scope, const char *path);

enum dps_path {
	DPS_PATH_INVALID,   /* malformed, other scope, or not a valid registration id: 400 */
	DPS_PATH_STATUS,    /* /<scope>/registrations/<regid> */
	DPS_PATH_REGISTER,  /* .../<regid>/register */
	DPS_PATH_OPERATION, /* .../<regid>/operations/<operationId> */
	DPS_PATH_OTHER,     /* anything else under <regid>: 404 */
};
/* Splits an HTTPS device path (segments percent-decoded; the query string
 * already removed) into regid and, for an operation, op. */
enum dps_path dps__wire_path(const char *scope, const char *path, char regid[ENROLLMENT_ID_MAX + 1],
                             char op[DPS_OPID_MAX + 1]);

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
