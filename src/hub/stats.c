/* GET /fleethub/stats (fleethub hub stats): what a hub's messaging holds
 * and did. The queue depths and the event log's partitions are read from
 * the store (every node's); the counters are this node's since it
 * started. */
#include <jansson.h>
#include <stdlib.h>

#include "base/clock.h"
#include "base/mem.h"
#include "hub/hub.h"
#include "hub/rest_internal.h"

struct stats_read {
	struct http_exchange *ex;
	struct hub *hub;
	struct store_partition parts[TELEMETRY_MAX_PARTITIONS];
	int64_t queued, total, enabled;
};

static int stats_work(void *arg, struct store_txn *t)
{
	struct stats_read *r = arg;
	int rc = 0;
	for (unsigned p = 0; rc == 0 && p < r->hub->events.partitions; p++)
		rc = store_event_partition(t, r->hub->name, p, &r->parts[p]);
	if (rc == 0)
		rc = store_c2d_count(t, r->hub->name, NULL, &r->queued);
	if (rc == 0)
		rc = store_device_count(t, r->hub->name, &r->total, &r->enabled);
	return rc;
}

static void stats_done(void *arg, int rc)
{
	struct stats_read *r = arg;
	struct hub *h = r->hub;
	if (rc != 0) {
		rest__respond_store_error(r->ex, rc, "", false);
		free(r);
		return;
	}
	json_t *parts = json_array();
	int64_t events = 0, bytes = 0;
	for (unsigned p = 0; p < h->events.partitions; p++) {
		const struct store_partition *sp = &r->parts[p];
		char when[32] = "";
		if (sp->last_enqueued_ms)
			clock_iso8601(sp->last_enqueued_ms, when);
		events += sp->next_seq - sp->begin_seq;
		bytes += sp->bytes;
		json_array_append_new(
		    parts, json_pack("{s:i, s:I, s:I, s:I, s:s?}", "partition", (int)p,
				     "beginSequenceNumber", (json_int_t)sp->begin_seq,
				     "nextSequenceNumber", (json_int_t)sp->next_seq, "bytes",
				     (json_int_t)sp->bytes, "lastEnqueuedTime",
				     sp->last_enqueued_ms ? when : NULL));
	}
	uint64_t appended, refused;
	hub__events_counts(h, &appended, &refused);
	json_t *o = json_pack(
	    "{s:s, s:s, s:{s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:o},"
	    " s:{s:I, s:I, s:I, s:i},"
	    " s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I},"
	    " s:{s:I, s:I, s:I, s:I, s:I, s:I}}",
	    "hub", h->name, "counters", "since this node started; depths and partitions: the store's",
	    "devices", "total", (json_int_t)r->total, "enabled", (json_int_t)r->enabled,
	    "telemetry", "appended", (json_int_t)appended, "refused", (json_int_t)refused,
	    "eventsKept", (json_int_t)events, "bytesKept", (json_int_t)bytes, "partitions", parts,
	    "methods", "invoked", (json_int_t)h->methods.invoked, "answered",
	    (json_int_t)h->methods.answered, "failed", (json_int_t)h->methods.failed, "inFlight",
	    (int)h->methods.count, "cloudToDevice", "queued", (json_int_t)r->queued, "enqueued",
	    (json_int_t)h->c2d.enqueued, "delivered", (json_int_t)h->c2d.delivered, "completed",
	    (json_int_t)h->c2d.completed, "rejected", (json_int_t)h->c2d.rejected, "expired",
	    (json_int_t)h->c2d.expired, "deadLettered", (json_int_t)h->c2d.dead, "purged",
	    (json_int_t)h->c2d.purged, "amqp", "connections", (json_int_t)h->amqp.connections,
	    "links", (json_int_t)h->amqp.links, "eventsSent", (json_int_t)h->amqp.events_sent,
	    "cloudToDeviceAccepted", (json_int_t)h->amqp.c2d_accepted, "cloudToDeviceRefused",
	    (json_int_t)h->amqp.c2d_refused, "feedbackBatches", (json_int_t)h->amqp.feedback_batches);
	char *text = json_dumps(o, JSON_INDENT(0) | JSON_COMPACT);
	http_respond_json(r->ex, 200, NULL, text);
	free(text);
	json_decref(o);
	free(r);
}

void hub__stats(struct route_args *a)
{
	struct stats_read *r = xcalloc(1, sizeof *r);
	r->ex = a->ex;
	r->hub = a->hub;
	store_read(a->hub->store, stats_work, stats_done, r);
}
