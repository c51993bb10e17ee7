/* A hub's telemetry (issue 18, design.md §3b): device-to-cloud messages
 * appended durably to the hub's event log (store.h), read back through a
 * streaming HTTPS endpoint of fleethub's own, kept as long as the
 * retention says.
 *
 *   device PUBLISH / POST --hub_telemetry_append--> job (partition lock)
 *        ^                                            | commit
 *        +------ PUBACK / 204 <------- done ----------+--> wake streams
 *
 * A device always writes to one partition (a hash of its id), so its
 * messages keep their order. Jobs are keyed and ordered by partition
 * (store_submit_ordered): with several writers or nodes each partition's
 * appends commit in sequence order. Retention runs as write jobs, one
 * partition at a time, a bounded number of events each. */
#ifndef FH_HUB_TELEMETRY_H
#define FH_HUB_TELEMETRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "net/http_server.h"

struct hub;
struct append_group;

#define TELEMETRY_MAX_BODY (256 * 1024) /* Azure's limit for a device message */
#define TELEMETRY_MAX_PARTITIONS 32

/* Someone reading the log as it grows (an AMQP receiver): wake(w, part)
 * runs on the loop thread after an append to partition part committed. */
struct hub_events_watch {
	void (*wake)(struct hub_events_watch *w, unsigned part);
	struct hub_events_watch *next;
};

struct hub_events {
	unsigned partitions;      /* 1..TELEMETRY_MAX_PARTITIONS */
	int64_t retention_ms;     /* events older are deleted */
	int64_t retention_bytes;  /* per partition; 0: no bound */
	uv_timer_t *trim_timer;
	struct hub_events_turn {  /* submit the appends of a turn of the loop */
		uv_check_t check;
		uv_idle_t idle;
		int closing;      /* handles not closed yet, at the end */
	} *turn;
	struct append_group *pending[TELEMETRY_MAX_PARTITIONS]; /* ... waiting for it */
	unsigned trim_next;       /* the partition the next trim pass starts at */
	struct event_stream *streams; /* open streams, for wake-ups and shutdown */
	struct hub_events_watch *watches;
	int64_t started_ms;       /* the log's "created" time as Event Hubs clients read it */
	uint64_t appended;        /* since start: events acknowledged */
	uint64_t refused;         /* since start: appends refused or failed */
};

void hub_events_watch(struct hub *h, struct hub_events_watch *w);
void hub_events_unwatch(struct hub *h, struct hub_events_watch *w);
/* Starts retention (a timer on loop) with the hub's settings. */
void hub_events_start(struct hub *h, uv_loop_t *loop, unsigned partitions,
		      int64_t retention_ms, int64_t retention_bytes);
/* Ends the streams and stops the timer (hub_shutdown). */
void hub_events_stop(struct hub *h);

/* The iothub-connection-auth-method property of a device's events:
 * {"scope":"device","type":"<auth_type>","issuer":"iothub",...}. */
void hub_events_auth_method(const char *auth_type, char out[160]);

/* The partition of a device's events. */
unsigned hub_events_partition(const struct hub *h, const char *device_id);

/* What a device sent, with what the hub knows of the connection. app and
 * sys are JSON objects of the message's properties (codec/props.h),
 * borrowed. */
struct telemetry_msg {
	const char *device_id;
	const char *generation; /* the identity's generationId */
	const char *auth_type;  /* "sas", "selfSigned", "certificateAuthority" */
	const json_t *app;
	const json_t *sys;
	const uint8_t *body;
	size_t body_len;
};
/* Appends m to the hub's log: done(arg, rc) runs once it is durable (rc 0)
 * or failed (a store error). Returns 0 when queued, FH_ETOOBIG (the body is
 * over TELEMETRY_MAX_BODY), or FH_EAGAIN (the store's backlog is full);
 * then done is not called. */
int hub_telemetry_append(struct hub *h, const struct telemetry_msg *m,
			 void (*done)(void *arg, int rc), void *arg);

/* REST (rest.c routes): GET /fleethub/events, the stream; PUT and GET
 * /fleethub/events/groups/{group}, a consumer group's positions. */
struct route_args;
void hub__events_stream(struct route_args *a);
void hub__events_group_put(struct route_args *a);
void hub__events_group_get(struct route_args *a);

/* The counts of hub_stats (hub.h). */
void hub__events_counts(const struct hub *h, uint64_t *appended, uint64_t *refused);

#endif
