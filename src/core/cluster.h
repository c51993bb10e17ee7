/* Messages between nodes that share a store (issue 17): what one node
 * changed that the live sessions on another node must react to. A job
 * posts one with store_notify (delivered to the other nodes after its
 * commit); each node hands what it hears, when it is for every node or
 * for this one, to the hubs and the DPS it serves. This is their one codec, JSON text such as
 *   {"k":"desired","node":"a","scope":"hub1","id":"dev1","n":7,"text":"{..}"}
 * Pure: no store, no loop. The text arrives from the database, written by
 * other nodes: it is decoded as untrusted input (bounded, fuzzed). */
#ifndef FH_CORE_CLUSTER_H
#define FH_CORE_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#define CLUSTER_NODE_MAX 95

/* Every node writes its record (store.h STORE_NODE) every
 * CLUSTER_HEARTBEAT_MS; one whose last heartbeat is older than
 * CLUSTER_LEASE_MS is gone: the DPS operations it owned are taken over. A
 * node that could not write its heartbeat for CLUSTER_LEASE_MS / 2 calls no
 * webhook (another node may be about to take its operations over). */
#define CLUSTER_HEARTBEAT_MS 5000
#define CLUSTER_LEASE_MS 15000
#define CLUSTER_SCOPE_MAX 255
#define CLUSTER_ID_MAX 255

enum cluster_kind {
	CLUSTER_DEVICE,     /* a device identity changed: scope = hub, id, change
	                       (enum device_change), text = why */
	CLUSTER_DESIRED,    /* a desired change: scope = hub, id, n = its $version,
	                       text = the notice the device gets */
	CLUSTER_CONNECTED,  /* a device connected on node at n (ms): scope = hub, id */
	CLUSTER_GROUP,      /* an enrollment group changed: scope = DPS, id */
	CLUSTER_ENROLLMENT, /* an enrollment was disabled or deleted: scope = DPS, id,
	                       change = enum enrollment_kind */
	CLUSTER_METHOD,     /* a direct method call for a device that may be on another
	                       node: scope = hub, id = device, n = the call's number on
	                       the sender, text = the call (hub/methods.c) */
	CLUSTER_METHOD_RESULT, /* the device's answer (or why none), to the caller's
	                       node: scope = hub, id = device, n = the call's number,
	                       change = the status, text = the answer */
	CLUSTER_C2D,        /* a device's cloud-to-device queue grew: scope = hub, id */
};

struct cluster_msg {
	enum cluster_kind kind;
	char node[CLUSTER_NODE_MAX + 1]; /* the sender */
	/* The one node it is for ("" = every node): a request to the node
	 * holding a device, and its answer back to the asking node, address
	 * each other this way (what direct methods and cloud-to-device
	 * wake-ups will use). */
	char to[CLUSTER_NODE_MAX + 1];
	char scope[CLUSTER_SCOPE_MAX + 1];
	char id[CLUSTER_ID_MAX + 1];
	int change;
	int64_t n;
	char *text; /* owned; NULL when none */
};

/* Fills m (node left for store_post) with kind, scope, id, change, n and
 * text (borrowed: m lives no longer than it). */
void cluster_msg_set(struct cluster_msg *m, enum cluster_kind kind, const char *scope,
		     const char *id, int change, int64_t n, const char *text);

/* Whether the node record text (a STORE_NODE document) says its node is
 * live at now_ms. */
bool cluster_node_live(const char *record, int64_t now_ms);

/* The message as text (malloc'd). */
char *cluster_encode(const struct cluster_msg *m);
/* Parses text: 0 with *out filled (clear it), or -1 for anything that is
 * not a message of this version (unknown kind, missing or oversized
 * member): the caller logs and drops it. */
int cluster_decode(const char *text, struct cluster_msg *out);
void cluster_msg_clear(struct cluster_msg *m);

#endif
