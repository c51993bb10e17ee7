/* Device-changed events: how a change to a device identity reaches the
 * live sessions that must react to it, whoever made the change.
 *
 * A writer (the hub's REST routes, the DPS assigning a device) raises an
 * event after the change is committed; every subscriber hears it (the
 * hubs: the one serving that hub name closes the device's live session).
 * So the DPS never calls into hub code (decisions.md 27): the hub and the
 * DPS meet here and in the store. With several nodes (issue 17) the same
 * events will also cross nodes through the store's notification channel.
 *
 * Loop thread only. Subscribers are few and fixed at start-up. */
#ifndef FH_CORE_DEVICE_EVENTS_H
#define FH_CORE_DEVICE_EVENTS_H

#include <stddef.h>

enum device_change {
	DEVICE_DELETED,        /* the identity is gone */
	DEVICE_ACCESS_CHANGED, /* disabled, or its credentials changed */
};

typedef void (*device_change_fn)(void *arg, const char *hub, const char *device_id,
				 enum device_change what, const char *why);

#define DEVICE_EVENTS_MAX 64

struct device_events {
	struct {
		device_change_fn fn;
		void *arg;
	} subs[DEVICE_EVENTS_MAX];
	size_t n;
};

/* Adds a subscriber (arg borrowed). Returns 0, or -1 when the table is full. */
int device_events_subscribe(struct device_events *e, device_change_fn fn, void *arg);
/* Tells every subscriber that device_id on hub changed; why is for logs. */
void device_events_raise(const struct device_events *e, const char *hub, const char *device_id,
			 enum device_change what, const char *why);

#endif
