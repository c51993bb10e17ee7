/* A hub's device requests as bytes (protocol.md §2): the MQTT CONNECT user
 * name, SUBSCRIBE topic filters, PUBLISH topics with their $rid, and the
 * subscription set as the store keeps it. Pure functions over untrusted
 * input with fixed-size outputs: no allocation (except jansson's, inside
 * hub__wire_subs_decode), no store, no loop, no globals. mqtt_session.c
 * and sessions.c call them; tests/fuzz/fuzz_hub_wire.c drives them
 * directly.
 *
 * Topics and filters are matched against one table each (hub_wire.c):
 * patterns with placeholders, so adding a topic is adding a row. */
#ifndef FH_HUB_HUB_WIRE_H
#define FH_HUB_HUB_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "core/registry.h"

#define HUB_RID_MAX 128

/* ---- CONNECT user name -------------------------------------------------- */

/* "<host>/<deviceId>/?<query>" (the hub user name; the query may be absent)
 * split into slices of the input (borrowed, not NUL-terminated). */
struct hub_user {
	const char *host;
	size_t host_len;
	const char *device_id;
	size_t id_len; /* 1..REGISTRY_ID_MAX */
	const char *query;
	size_t query_len;
};
/* 0, FH_EINVAL when malformed (no host, no id, an id too long or holding
 * a NUL), FH_EPROTO for a module identity ("<host>/<device>/<module>/..."). */
int hub__wire_username(const char *p, size_t n, struct hub_user *out);

/* ---- subscriptions ------------------------------------------------------ */

/* What a device may subscribe to: one kind per filter of protocol.md §2.3. */
enum hub_sub {
	HUB_SUB_TWIN_RES, /* $iothub/twin/res/# */
	HUB_SUB_DESIRED,  /* $iothub/twin/PATCH/properties/desired/# */
	HUB_SUB_METHODS,  /* $iothub/methods/POST/# */
	HUB_SUB_C2D,      /* devices/{id or +}/messages/devicebound/# */
	HUB_SUB_COUNT
};

/* A session's subscriptions: the kinds it holds and the QoS granted to each
 * (0 or 1; meaningful only for kinds in mask). */
struct hub_subs {
	uint8_t mask; /* bit (1 << enum hub_sub) */
	uint8_t qos[HUB_SUB_COUNT];
};

/* The kind filter[0..n) subscribes device_id to, or -1 when it names
 * nothing a device may subscribe to (the SUBACK refuses it). */
int hub__wire_filter(const char *filter, size_t n, const char *device_id);

/* The stored form of a subscription set: a JSON object of kind names to
 * granted QoS, e.g. {"twinResponses":0,"desired":0}. Encode appends to out. */
void hub__wire_subs_encode(const struct hub_subs *s, struct buf *out);
/* 0 with *out filled, or FH_EINVAL when text is not such an object (kinds
 * it does not know are skipped: a newer version may have written them). */
int hub__wire_subs_decode(const char *text, size_t n, struct hub_subs *out);

/* ---- PUBLISH topics ----------------------------------------------------- */

enum hub_topic {
	HUB_TOPIC_FORBIDDEN,     /* nothing a device may publish to */
	HUB_TOPIC_NO_RID,        /* a request topic without a usable $rid */
	HUB_TOPIC_TWIN_GET,      /* $iothub/twin/GET/?$rid=.. */
	HUB_TOPIC_TWIN_REPORTED, /* $iothub/twin/PATCH/properties/reported/?$rid=.. */
	HUB_TOPIC_METHOD_RES,    /* $iothub/methods/res/{status}/?$rid=.. */
	HUB_TOPIC_TELEMETRY,     /* devices/{id}/messages/events/{property bag} */
};

struct hub_topic_match {
	char rid[HUB_RID_MAX + 1]; /* request topics: the $rid, safe to echo */
	long status;               /* METHOD_RES: the device's status code */
	const char *props;         /* TELEMETRY: the property bag (borrowed) */
	size_t props_len;
};

/* Routes topic[0..n) published by device_id. Fills m for the kinds that
 * carry something. A $rid is copied verbatim up to the next '&' and must
 * be 1..HUB_RID_MAX characters none of which could change the meaning of
 * the answer topic ('/', '+', '#', '?', control characters). */
enum hub_topic hub__wire_topic(const char *topic, size_t n, const char *device_id,
			       struct hub_topic_match *m);

#endif
