/* Cloud-to-device messages (issue 18, protocol.md §2.9, decisions.md 15,
 * 16): a durable queue per device (store.h store_c2d_*), at most
 * C2D_MAX_QUEUE messages, each with an expiry, a delivery count and the
 * feedback its sender asked for (iothub-ack: none, positive, negative,
 * full).
 *
 * A message's life:
 *
 *   enqueued --delivered (MQTT PUBLISH QoS 1 / HTTPS receive, locked)--+
 *      ^  |                                                            |
 *      |  +-- expiry passes: Expired ---------------------------> deleted
 *      |                                                     (feedback as asked)
 *      +-- no PUBACK (connection lost) / abandon / lock ran out: delivery
 *          count + 1; over C2D_MAX_DELIVERIES: DeliveryCountExceeded
 *   PUBACK / complete: Success; reject: Rejected; purge: Purged
 *
 * MQTT: a device subscribed to devices/{id}/messages/devicebound/# gets
 * its queue in order, up to C2D_INFLIGHT unacknowledged at a time, at once
 * when it subscribes (or resumes a stored subscription), and whatever is
 * queued later. A message is deleted when its PUBACK arrives; one without
 * is delivered again on the next connection (clean session or not: the
 * queue is the device's, not the session's). With several nodes an enqueue
 * wakes the node holding the device (CLUSTER_C2D). */
#ifndef FH_HUB_C2D_H
#define FH_HUB_C2D_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define C2D_MAX_QUEUE 50       /* Azure's per-device limit */
#define C2D_MAX_DELIVERIES 10  /* Azure's default max delivery count */
#define C2D_TTL_DEFAULT_S 3600 /* Azure's default time to live */
#define C2D_TTL_MAX_S (48 * 3600)
#define C2D_LOCK_MS 60000      /* an HTTPS receive's lock */
#define C2D_MAX_BODY (64 * 1024) /* Azure's limit for a cloud-to-device message */
#define C2D_INFLIGHT 8         /* MQTT deliveries without a PUBACK, per device */

struct hub;
struct dev_session;
struct route_args;
struct store;

/* A session's deliveries (in struct dev_session). */
struct c2d_session {
	int64_t after;                    /* the last message sent on this connection */
	bool reading;                     /* a read of the queue is under way */
	bool again;                       /* woken while reading: read once more */
	unsigned inflight;
	uint16_t ids[C2D_INFLIGHT];      /* packet ids awaiting PUBACK ... */
	int64_t seqs[C2D_INFLIGHT];      /* ... and their messages */
	uint16_t next_id;
};

/* Counters of hub_stats. */
struct hub_c2d_stats {
	uint64_t enqueued, delivered, completed, rejected, expired, dead, purged;
};

/* The device of s subscribed to its messages (or resumed that): send. */
void hub__c2d_ready(struct hub *h, struct dev_session *s);
/* Something was queued for device id (here or on another node). */
void hub_c2d_wake(struct hub *h, const char *device_id);
/* The device acknowledged packet id (MQTT PUBACK). */
void hub__c2d_acked(struct hub *h, struct dev_session *s, uint16_t packet_id);
/* The session ends: what it did not acknowledge counts as one delivery. */
void hub__c2d_detached(struct hub *h, struct dev_session *s);

/* REST (rest.c): POST /fleethub/devices/{id}/messages (enqueue),
 * DELETE /devices/{id}/commands (purge), GET /fleethub/feedback. */
/* A new message's state for device_id (to, ack: none|positive|negative|full
 * or NULL for none, enqueued now, expiring at expiry_ms or 0 for the
 * default time to live, no properties); the caller adds messageId and the
 * other system properties, and "properties" (an object of strings). */
json_t *hub_c2d_message(const char *device_id, const char *ack, int64_t expiry_ms);
/* Queues msg (taken) with body (taken, malloc'd, up to C2D_MAX_BODY) for
 * device_id of h: done(arg, rc, device_id, msg, seq) after the commit with
 * 0 and the message's sequence number, FH_ETOOBIG (C2D_MAX_QUEUE queued
 * already), FH_ENOTFOUND (no such device) or a store error. */
typedef void (*hub_c2d_done_fn)(void *arg, int rc, const char *device_id, const json_t *msg,
				int64_t seq);
void hub_c2d_enqueue(struct hub *h, const char *device_id, json_t *msg, uint8_t *body,
		     size_t body_len, hub_c2d_done_fn done, void *arg);

void hub__c2d_send(struct route_args *a);
void hub__c2d_purge(struct route_args *a);
void hub__c2d_feedback(struct route_args *a);

/* Device HTTPS (device_http.c), after the device is authenticated:
 * receive, complete / reject, abandon. */
struct http_exchange;
void hub__c2d_receive(struct hub *h, struct http_exchange *ex, const char *device_id);
void hub__c2d_settle(struct hub *h, struct http_exchange *ex, const char *device_id,
		     const char *lock, int how); /* 0 complete, 1 reject, 2 abandon */

/* Feedback records older than an hour, or beyond 100,000, are deleted
 * (telemetry.c's retention timer calls this). */
void hub__c2d_trim_feedback(struct hub *h);

/* Expired messages of every hub of store: deleted, with feedback (a timer
 * in main.c). */
void hub_c2d_sweep(struct store *s);

#endif
