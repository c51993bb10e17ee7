/* Device-changed events: see device_events.h. */
#include "device_events.h"

int device_events_subscribe(struct device_events *e, device_change_fn fn, void *arg)
{
	if (e->n == DEVICE_EVENTS_MAX)
		return -1;
	e->subs[e->n].fn = fn;
	e->subs[e->n].arg = arg;
	e->n++;
	return 0;
}

void device_events_raise(const struct device_events *e, const char *hub, const char *device_id,
			 enum device_change what, const char *why)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n; i++)
		e->subs[i].fn(e->subs[i].arg, hub, device_id, what, why);
}
