/* Direct methods (issue 18, protocol.md §2.7, decisions.md 14): a service's
 * POST /twins/{id}/methods becomes $iothub/methods/POST/{name}/?$rid= to
 * the device, and the device's $iothub/methods/res/{status}/?$rid= the
 * HTTP answer {"status", "payload"}.
 *
 * A call, from the request's arrival:
 *
 *   WAITING --the device is connected and subscribed--> DELIVERED
 *      |  (at once, or when it connects or subscribes      |  answer: 200
 *      |   before arrival + connectTimeoutInSeconds)       |  disconnect: 404
 *      |                                                   |  arrival + connect +
 *      v connect deadline: 404 DeviceNotOnline             v  response timeout: 504
 *
 * Nothing blocks the loop: each call is a record with a timer, and every
 * path (answer, deadline, the device's disconnect, shutdown) answers and
 * frees it once. With several nodes (PostgreSQL) a call for a device not
 * connected here goes to the node its stored connection row names
 * (CLUSTER_METHOD; to every node while a connect timeout runs); the node
 * that holds the device, or sees it connect in time, delivers it and posts
 * what became of it back to the caller's node (CLUSTER_METHOD_RESULT), and
 * a node asked by name that does not hold it says so at once. */
#ifndef FH_HUB_METHODS_H
#define FH_HUB_METHODS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/map.h"

struct hub;
struct dev_session;
struct route_args;
struct cluster_msg;

#define METHOD_NAME_MAX 100
#define METHOD_PAYLOAD_MAX (128 * 1024)
#define METHODS_MAX 10000 /* calls in flight per hub */

struct hub_methods {
	struct map by_rid;  /* "<rid>" -> struct method_call * */
	struct method_call *all; /* every call in flight here */
	uint64_t next;      /* the next call's number (its $rid) */
	unsigned count;
	uint64_t invoked, answered, failed; /* since start */
};

void hub_methods_init(struct hub *h);
/* Answers every call in flight (503: the server is stopping). */
void hub_methods_stop(struct hub *h);

/* POST /twins/{id}/methods (rest.c). */
void hub__method_invoke(struct route_args *a);
/* The device of s now takes method calls (it subscribed, or connected with
 * a stored subscription): the calls waiting for it are delivered. */
void hub__methods_ready(struct hub *h, struct dev_session *s);
/* The device of s answered request rid with status and a payload. */
void hub__methods_answer(struct hub *h, struct dev_session *s, const char *rid, long status,
			 const uint8_t *payload, size_t n);
/* The session s ends: the calls delivered to it get no answer from it. */
void hub__methods_detached(struct hub *h, struct dev_session *s);
/* A CLUSTER_METHOD or CLUSTER_METHOD_RESULT from another node. */
void hub_methods_cluster(struct hub *h, const struct cluster_msg *m);

#endif
