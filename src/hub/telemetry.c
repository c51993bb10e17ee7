/* A hub's telemetry: appends, retention and the HTTPS event stream (see
 * telemetry.h).
 *
 * The stream (GET /fleethub/events) answers newline-delimited JSON, one
 * event per line, in chunks, for as long as the client keeps reading:
 *
 *   start --pump--> read a partition from its cursor (store_read_slow)
 *     ^                  | events: write them, next partition, pump
 *     |                  | none in a whole round: wait
 *     +-- an append here (wake), WAIT_POLL_MS (other nodes' appends),
 *         the client's socket drained below STREAM_HIGH_WATER
 *
 * Each cursor only moves past what was read, and an append's done runs
 * after its commit, so a stream sees every event of its partitions once,
 * in order. A stream ends when the client goes away, after `limit`
 * events, after `wait` seconds without one, or at shutdown. An empty
 * line every HEARTBEAT_MS keeps idle proxies from closing it (clients
 * skip empty lines). */
#include "hub/telemetry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "hub/hub.h"
#include "hub/rest_internal.h"

#define TRIM_EVERY_MS 60000
#define TRIM_LIMIT 10000      /* events one trim job deletes at most */
#define READ_BATCH 200        /* events one stream read takes */
#define STREAM_HIGH_WATER (512 * 1024)
#define WAIT_POLL_MS 1000
#define HEARTBEAT_MS 15000
#define STREAMS_MAX 256       /* open streams per hub */

static uint32_t fnv(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

unsigned hub_events_partition(const struct hub *h, const char *device_id)
{
	return fnv(device_id) % h->events.partitions;
}

/* The lock order of a partition's row (store_submit_ordered): the same
 * for the same hub and partition on every node. */
static uint32_t partition_order(const struct hub *h, unsigned part)
{
	return ((fnv(h->name) & 0xffffffu) << 6 | part) + 1;
}

static void partition_key(const struct hub *h, unsigned part, char out[300])
{
	snprintf(out, 300, "%s\n%u", h->name, part);
}

void hub__events_counts(const struct hub *h, uint64_t *appended, uint64_t *refused)
{
	*appended = h->events.appended;
	*refused = h->events.refused;
}

/* ---- appends ---------------------------------------------------------- */

/* Appends v as compact JSON ("{}" for an empty object, without jansson's
 * dump). */
static void append_json(struct buf *b, const json_t *v)
{
	if (json_is_object(v) && json_object_size(v) == 0) {
		buf_appends(b, "{}");
		return;
	}
	char *t = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	buf_appends(b, t ? t : "null");
	free(t);
}

/* Appends that arrive in one turn of the loop go to the store together, a
 * job per partition (one read and one write of the partition's row, one
 * savepoint, however many events): the check handle submits them once the
 * turn's reads are done, or a group at once when it is full. (An idle
 * handle runs beside it: an append made outside the turn's I/O, in a
 * timer, is then submitted before the loop would wait for I/O.) What waits
 * there is not in the store's backlog yet: at most one full group per
 * partition more than store_admit counts. */
#define GROUP_MAX 512
#define GROUP_BYTES (1024 * 1024)

struct append_msg {
	char *mem; /* the device id, the properties and the body, in one block */
	void (*done)(void *arg, int rc);
	void *arg;
};

struct append_group {
	struct hub *hub;
	unsigned part;
	size_t n, cap, bytes;
	struct store_event *ev;
	struct append_msg *msg;
};

static int append_work(void *arg, struct store_txn *t)
{
	struct append_group *g = arg;
	return store_events_append(t, g->hub->name, g->part, g->ev, g->n);
}

static void wake_streams(struct hub *h, unsigned part);

static void append_done(void *arg, int rc)
{
	struct append_group *g = arg;
	struct hub *h = g->hub;
	if (rc == 0) {
		h->events.appended += g->n;
		wake_streams(h, g->part);
	} else {
		h->events.refused += g->n;
	}
	for (size_t i = 0; i < g->n; i++) {
		log_at(LOG_DEBUG, "hub %s: telemetry of %s: %s (partition %u, sequence number %lld)",
		       h->name, g->ev[i].device, rc == 0 ? "stored" : fh_strerror(rc), g->part,
		       (long long)g->ev[i].seq);
		g->msg[i].done(g->msg[i].arg, rc);
		free(g->msg[i].mem);
	}
	free(g->ev);
	free(g->msg);
	free(g);
}

static void group_submit(struct hub *h, unsigned part)
{
	struct append_group *g = h->events.pending[part];
	h->events.pending[part] = NULL;
	char key[300];
	partition_key(h, part, key);
	store_submit_ordered(h->store, key, partition_order(h, part), append_work, append_done,
			     g, g->bytes);
}

static void submit_pending(struct hub *h)
{
	for (unsigned p = 0; p < h->events.partitions; p++)
		if (h->events.pending[p])
			group_submit(h, p);
}

static void turn_end(struct hub *h)
{
	uv_check_stop(&h->events.turn->check);
	uv_idle_stop(&h->events.turn->idle);
	submit_pending(h);
}

static void on_turn_check(uv_check_t *c)
{
	turn_end(c->data);
}

static void on_turn_idle(uv_idle_t *i)
{
	turn_end(i->data);
}

int hub_telemetry_append(struct hub *h, const struct telemetry_msg *m,
			 void (*done)(void *arg, int rc), void *arg)
{
	if (m->body_len > TELEMETRY_MAX_BODY) {
		h->events.refused++;
		return FH_ETOOBIG;
	}
	if (store_admit(h->store, m->body_len) != 0) {
		h->events.refused++;
		return FH_EAGAIN;
	}
	/* What the log keeps of the properties, compactly (the body and the
	 * device id have their columns; render_event spells out the system
	 * properties the hub adds from these, amqp.md §6):
	 *   {"p":{application},"s":{message's system},"g":"<generationId>","a":"<auth type>"} */
	struct buf pb = BUF_INIT;
	size_t id_len = strlen(m->device_id);
	buf_append(&pb, m->device_id, id_len + 1);
	buf_appends(&pb, "{\"p\":");
	append_json(&pb, m->app);
	buf_appends(&pb, ",\"s\":");
	append_json(&pb, m->sys);
	buf_appends(&pb, ",\"g\":");
	json_t *g = json_string(m->generation), *a = json_string(m->auth_type);
	append_json(&pb, g);
	buf_appends(&pb, ",\"a\":");
	append_json(&pb, a);
	buf_appendc(&pb, '}');
	json_decref(g);
	json_decref(a);
	size_t props_len = pb.len - id_len - 1;
	buf_appendc(&pb, '\0');
	buf_append(&pb, m->body, m->body_len);
	unsigned part = hub_events_partition(h, m->device_id);
	struct append_group *grp = h->events.pending[part];
	if (!grp) {
		grp = h->events.pending[part] = xcalloc(1, sizeof *grp);
		grp->hub = h;
		grp->part = part;
	}
	if (grp->n == grp->cap) {
		grp->cap = grp->cap ? 2 * grp->cap : 8;
		grp->ev = xrealloc(grp->ev, grp->cap * sizeof *grp->ev);
		grp->msg = xrealloc(grp->msg, grp->cap * sizeof *grp->msg);
	}
	struct append_msg *am = &grp->msg[grp->n];
	am->mem = buf_steal(&pb);
	am->done = done;
	am->arg = arg;
	grp->ev[grp->n++] = (struct store_event){
	    .enqueued_ms = clock_now_ms(),
	    .device = am->mem,
	    .props = am->mem + id_len + 1,
	    .body = (const uint8_t *)am->mem + id_len + 1 + props_len + 1,
	    .body_len = m->body_len,
	};
	grp->bytes += m->body_len + props_len;
	if (grp->n >= GROUP_MAX || grp->bytes >= GROUP_BYTES || !h->events.turn) {
		group_submit(h, part);
	} else if (!uv_is_active((uv_handle_t *)&h->events.turn->check)) {
		uv_check_start(&h->events.turn->check, on_turn_check);
		uv_idle_start(&h->events.turn->idle, on_turn_idle);
	}
	return 0;
}

/* ---- retention -------------------------------------------------------- */

struct trim_job {
	struct hub *hub;
	unsigned part;
	int64_t before_ms;
	unsigned deleted;
};

static int trim_work(void *arg, struct store_txn *t)
{
	struct trim_job *j = arg;
	return store_event_trim(t, j->hub->name, j->part, j->before_ms,
				j->hub->events.retention_bytes, TRIM_LIMIT, &j->deleted);
}

static void trim_partition(struct hub *h, unsigned part);

static void trim_done(void *arg, int rc)
{
	struct trim_job *j = arg;
	if (rc != 0)
		log_at(LOG_WARN, "hub %s: event retention of partition %u: %s", j->hub->name, j->part,
		       fh_strerror(rc));
	else if (j->deleted)
		log_at(LOG_DEBUG, "hub %s: retention deleted %u events of partition %u",
		       j->hub->name, j->deleted, j->part);
	/* A full pass: more may be due; the next job goes behind the queue. */
	if (rc == 0 && j->deleted == TRIM_LIMIT && j->hub->events.trim_timer)
		trim_partition(j->hub, j->part);
	free(j);
}

static void trim_partition(struct hub *h, unsigned part)
{
	struct trim_job *j = xcalloc(1, sizeof *j);
	j->hub = h;
	j->part = part;
	j->before_ms = clock_now_ms() - h->events.retention_ms;
	char key[300];
	partition_key(h, part, key);
	store_submit_ordered(h->store, key, partition_order(h, part), trim_work, trim_done, j, 0);
}

static void on_trim_timer(uv_timer_t *t)
{
	struct hub *h = t->data;
	for (unsigned p = 0; p < h->events.partitions; p++)
		trim_partition(h, p);
	hub__c2d_trim_feedback(h);
}

void hub_events_start(struct hub *h, uv_loop_t *loop, unsigned partitions,
		      int64_t retention_ms, int64_t retention_bytes)
{
	h->events.started_ms = clock_now_ms();
	h->events.partitions = partitions < 1 ? 1
			       : partitions > TELEMETRY_MAX_PARTITIONS ? TELEMETRY_MAX_PARTITIONS
								      : partitions;
	h->events.retention_ms = retention_ms;
	h->events.retention_bytes = retention_bytes;
	h->events.trim_timer = xcalloc(1, sizeof *h->events.trim_timer);
	uv_timer_init(loop, h->events.trim_timer);
	h->events.trim_timer->data = h;
	uv_timer_start(h->events.trim_timer, on_trim_timer, 5000, TRIM_EVERY_MS);
	h->events.turn = xcalloc(1, sizeof *h->events.turn);
	uv_check_init(loop, &h->events.turn->check);
	uv_idle_init(loop, &h->events.turn->idle);
	h->events.turn->check.data = h->events.turn->idle.data = h;
}

/* ---- the stream ------------------------------------------------------- */

struct event_stream {
	struct hub *hub;
	struct http_exchange *ex;
	uv_timer_t timer;
	struct event_stream *next; /* hub->events.streams */
	unsigned first, count;     /* partitions first .. first + count - 1 */
	int64_t cursor[TELEMETRY_MAX_PARTITIONS];
	unsigned turn;         /* the partition read next (index from first) */
	unsigned empty_reads;  /* reads in a row that found nothing */
	int64_t remaining;     /* events still to send; < 0: no bound */
	int64_t idle_end_ms;   /* end when nothing came for this long; 0: never */
	int64_t last_event_ms, last_write_ms;
	bool reading, ending, timer_closed;
	struct buf out;        /* lines of one read */
};

static void pump(struct event_stream *st);

static void stream_freed(uv_handle_t *h)
{
	struct event_stream *st = h->data;
	buf_free(&st->out);
	free(st);
}

/* Ends the stream (once nothing is in flight). */
static void stream_end(struct event_stream *st)
{
	st->ending = true;
	if (st->reading)
		return; /* read_done comes back here */
	struct event_stream **p = &st->hub->events.streams;
	while (*p && *p != st)
		p = &(*p)->next;
	if (*p)
		*p = st->next;
	uv_timer_stop(&st->timer);
	if (st->ex)
		http_stream_end(st->ex);
	st->ex = NULL;
	uv_close((uv_handle_t *)&st->timer, stream_freed);
}

static void on_stream_timer(uv_timer_t *t)
{
	pump(t->data);
}

void hub_events_watch(struct hub *h, struct hub_events_watch *w)
{
	w->next = h->events.watches;
	h->events.watches = w;
}

void hub_events_unwatch(struct hub *h, struct hub_events_watch *w)
{
	for (struct hub_events_watch **p = &h->events.watches; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			return;
		}
}

static void wake_streams(struct hub *h, unsigned part)
{
	for (struct hub_events_watch *w = h->events.watches, *next; w; w = next) {
		next = w->next;
		w->wake(w, part);
	}
	for (struct event_stream *st = h->events.streams; st; st = st->next)
		if (!st->reading && part >= st->first && part < st->first + st->count) {
			st->empty_reads = 0;
			uv_timer_start(&st->timer, on_stream_timer, 0, 0);
		}
}

void hub_events_auth_method(const char *auth_type, char out[160])
{
	snprintf(out, 160,
		 "{\"scope\":\"device\",\"type\":\"%s\",\"issuer\":\"iothub\","
		 "\"acceptingIpFilterRule\":null}",
		 auth_type ? auth_type : "sas");
}

/* One event as a line of the stream. */
static void render_event(struct buf *out, unsigned part, const struct store_event *e)
{
	char when[32];
	clock_iso8601(e->enqueued_ms, when);
	json_t *props = json_loads(e->props, 0, NULL);
	json_t *app = json_object_get(props, "p");
	json_t *sys = json_object(); /* the message's, then the hub's */
	json_object_update(sys, json_object_get(props, "s"));
	const char *gen = json_string_value(json_object_get(props, "g"));
	const char *auth = json_string_value(json_object_get(props, "a"));
	char method[160];
	hub_events_auth_method(auth, method);
	json_object_set_new(sys, "iothub-connection-device-id", json_string(e->device));
	json_object_set_new(sys, "iothub-connection-auth-method", json_string(method));
	json_object_set_new(sys, "iothub-connection-auth-generation-id",
			    json_string(gen ? gen : ""));
	json_object_set_new(sys, "iothub-enqueuedtime", json_string(when));
	json_object_set_new(sys, "iothub-message-source", json_string("Telemetry"));
	json_t *o = json_pack("{s:i, s:I, s:s#, s:s, s:s, s:o, s:o}", "partition", (int)part,
			      "sequenceNumber", (json_int_t)e->seq, "offset", "", 0,
			      "enqueuedTime", when, "deviceId", e->device, "properties",
			      app ? json_incref(app) : json_object(), "systemProperties", sys);
	char off[24];
	snprintf(off, sizeof off, "%lld", (long long)e->offset);
	json_object_set_new(o, "offset", json_string(off));
	if (utf8_valid((const char *)e->body, e->body_len) || e->body_len == 0) {
		json_object_set_new(o, "body", json_stringn((const char *)e->body, e->body_len));
	} else {
		struct buf b64 = BUF_INIT;
		b64_encode_buf(&b64, e->body, e->body_len);
		json_object_set_new(o, "bodyBase64", json_stringn(b64.data, b64.len));
		buf_free(&b64);
	}
	char *line = json_dumps(o, JSON_COMPACT);
	buf_appends(out, line);
	buf_appendc(out, '\n');
	free(line);
	json_decref(o);
	json_decref(props);
}

struct stream_read {
	struct event_stream *st;
	struct hub *hub;
	unsigned part;
	int64_t from, last;
	unsigned limit, got;
	struct buf lines;
};

static int read_each(void *arg, const struct store_event *e)
{
	struct stream_read *r = arg;
	render_event(&r->lines, r->part, e);
	r->last = e->seq;
	r->got++;
	return 0;
}

static int read_work(void *arg, struct store_txn *t)
{
	struct stream_read *r = arg;
	return store_event_read(t, r->hub->name, r->part, r->from, r->limit, read_each, r);
}

static void read_done(void *arg, int rc)
{
	struct stream_read *r = arg;
	struct event_stream *st = r->st;
	st->reading = false;
	if (!st->ending && rc != 0) {
		log_at(LOG_WARN, "hub %s: event stream: reading partition %u: %s", r->hub->name,
		       r->part, fh_strerror(rc));
		st->ending = true;
	}
	if (!st->ending && r->got) {
		http_stream_write(st->ex, r->lines.data, r->lines.len);
		st->cursor[r->part - st->first] = r->last + 1;
		st->last_event_ms = st->last_write_ms = clock_now_ms();
		st->empty_reads = 0;
		if (st->remaining > 0)
			st->remaining -= r->got;
	} else if (!st->ending) {
		st->empty_reads++;
	}
	buf_free(&r->lines);
	free(r);
	if (st->ending || st->remaining == 0) {
		stream_end(st);
		return;
	}
	st->turn = (st->turn + 1) % st->count;
	pump(st);
}

static void pump(struct event_stream *st)
{
	if (st->reading || st->ending)
		return;
	if (!st->ex || net_conn_closed(st->ex->conn)) {
		stream_end(st);
		return;
	}
	int64_t now = clock_now_ms();
	if (net_conn_queued(st->ex->conn) > STREAM_HIGH_WATER) {
		uv_timer_start(&st->timer, on_stream_timer, 20, 0);
		return;
	}
	if (st->empty_reads >= st->count) {
		/* A whole round found nothing: wait for an append, a poll (other
		 * nodes' appends), or the end of the idle time. */
		if (st->idle_end_ms && now - st->last_event_ms >= st->idle_end_ms) {
			stream_end(st);
			return;
		}
		if (now - st->last_write_ms >= HEARTBEAT_MS) {
			http_stream_write(st->ex, "\n", 1);
			st->last_write_ms = now;
		}
		st->empty_reads = 0;
		uint64_t wait = WAIT_POLL_MS;
		if (st->idle_end_ms && st->last_event_ms + st->idle_end_ms - now < (int64_t)wait)
			wait = (uint64_t)(st->last_event_ms + st->idle_end_ms - now);
		uv_timer_start(&st->timer, on_stream_timer, wait, 0);
		return;
	}
	struct stream_read *r = xcalloc(1, sizeof *r);
	r->st = st;
	r->hub = st->hub;
	r->part = st->first + st->turn;
	r->from = st->cursor[st->turn];
	r->limit = st->remaining > 0 && st->remaining < READ_BATCH ? (unsigned)st->remaining
								    : READ_BATCH;
	st->reading = true;
	store_read_slow(st->hub->store, read_work, read_done, r);
}

/* ---- the stream's start: where each cursor begins ---- */

enum start_kind { START_BEGIN, START_END, START_SEQ, START_TIME, START_GROUP };

struct stream_open {
	struct event_stream *st;
	enum start_kind kind;
	int64_t value; /* START_SEQ: the sequence number; START_TIME: ms */
	char group[REGISTRY_ID_MAX + 1];
};

/* The settings key of a consumer group's position in a partition. */
static void position_key(const char *hub, const char *group, unsigned part, char out[512])
{
	snprintf(out, 512, "events/%s/%s/%u", hub, group, part);
}

static int open_work(void *arg, struct store_txn *t)
{
	struct stream_open *o = arg;
	struct event_stream *st = o->st;
	for (unsigned i = 0; i < st->count; i++) {
		unsigned part = st->first + i;
		struct store_partition p;
		int rc = store_event_partition(t, st->hub->name, part, &p);
		if (rc != 0)
			return rc;
		switch (o->kind) {
		case START_BEGIN: st->cursor[i] = p.begin_seq; break;
		case START_END: st->cursor[i] = p.next_seq; break;
		case START_SEQ: st->cursor[i] = o->value; break;
		case START_TIME:
			rc = store_event_seek_time(t, st->hub->name, part, o->value, &st->cursor[i]);
			break;
		case START_GROUP: {
			char key[512], *v = NULL;
			position_key(st->hub->name, o->group, part, key);
			rc = store_setting_get(t, key, &v);
			/* A checkpoint is the last event processed; none: the end. */
			st->cursor[i] = rc == 0 ? strtoll(v, NULL, 10) + 1 : p.next_seq;
			free(v);
			rc = rc == FH_ENOTFOUND ? 0 : rc;
			break;
		}
		}
		if (rc != 0)
			return rc;
		if (st->cursor[i] < p.begin_seq)
			st->cursor[i] = p.begin_seq; /* trimmed: the oldest kept */
	}
	return 0;
}

static void open_done(void *arg, int rc)
{
	struct stream_open *o = arg;
	struct event_stream *st = o->st;
	free(o);
	st->reading = false;
	if (rc != 0) {
		rest__respond_store_error(st->ex, rc, "", false);
		st->ex = NULL;
		stream_end(st);
		return;
	}
	static const char *const headers[] = {"Content-Type", "application/x-ndjson",
					      "Cache-Control", "no-store", NULL};
	http_stream_start(st->ex, 200, headers);
	st->last_event_ms = st->last_write_ms = clock_now_ms();
	pump(st);
}

static bool group_name_ok(const char *g)
{
	size_t n = strlen(g);
	if (n == 0 || n > 50)
		return false;
	for (const char *p = g; *p; p++)
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
		    !(*p >= '0' && *p <= '9') && !strchr("$-_.", *p))
			return false;
	return true;
}

/* Parses a decimal integer of a query parameter; false when malformed. */
static bool parse_i64(const char *s, int64_t *out)
{
	char *end;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end)
		return false;
	*out = v;
	return true;
}

void hub__events_stream(struct route_args *a)
{
	struct hub *h = a->hub;
	const char *q = a->ex->req->query;
	char part[16], from[64], group[64], limit[24], wait[24];
	bool has_part = http_query_param(q, "partition", part, sizeof part);
	bool has_from = http_query_param(q, "from", from, sizeof from);
	bool has_group = http_query_param(q, "group", group, sizeof group);
	bool has_limit = http_query_param(q, "limit", limit, sizeof limit);
	bool has_wait = http_query_param(q, "wait", wait, sizeof wait);
	int64_t p = 0, lim = -1, w = 0, v = 0;
	if (has_part && (!parse_i64(part, &p) || p < 0 || p >= h->events.partitions)) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
				    "partition must be 0..%u", h->events.partitions - 1);
		return;
	}
	if ((has_limit && (!parse_i64(limit, &lim) || lim < 1)) ||
	    (has_wait && (!parse_i64(wait, &w) || w < 0 || w > 86400))) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
				    "limit must be a positive number and wait 0..86400 seconds");
		return;
	}
	if (has_group && !group_name_ok(group)) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
				    "a consumer group name is 1-50 letters, digits and $-_.");
		return;
	}
	struct stream_open *o = xcalloc(1, sizeof *o);
	if (!has_from)
		o->kind = has_group ? START_GROUP : START_END;
	else if (strcmp(from, "start") == 0)
		o->kind = START_BEGIN;
	else if (strcmp(from, "end") == 0)
		o->kind = START_END;
	else if (parse_i64(from, &v) && v >= 0 && has_part)
		o->kind = START_SEQ;
	else if (clock_parse_iso8601(from, &v) == 0)
		o->kind = START_TIME;
	else {
		free(o);
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
				    "from must be start, end, a time (ISO 8601) or, with a "
				    "partition, a sequence number");
		return;
	}
	o->value = v;
	snprintf(o->group, sizeof o->group, "%s", has_group ? group : "$Default");
	unsigned open = 0;
	for (struct event_stream *s = h->events.streams; s; s = s->next)
		open++;
	if (open >= STREAMS_MAX) {
		free(o);
		rest__respond_error(a->ex, 429, "ThrottlingException", 429001,
				    "%u event streams are open on this hub already", open);
		return;
	}
	struct event_stream *st = xcalloc(1, sizeof *st);
	st->hub = h;
	st->ex = a->ex;
	st->first = has_part ? (unsigned)p : 0;
	st->count = has_part ? 1 : h->events.partitions;
	st->remaining = lim;
	st->idle_end_ms = w * 1000;
	buf_init(&st->out);
	uv_timer_init(h->loop, &st->timer);
	st->timer.data = st;
	st->next = h->events.streams;
	h->events.streams = st;
	st->reading = true;
	o->st = st;
	store_read(h->store, open_work, open_done, o);
}

static void turn_closed(uv_handle_t *handle)
{
	struct hub_events_turn *t = handle->data;
	if (--t->closing == 0)
		free(t);
}

void hub_events_stop(struct hub *h)
{
	while (h->events.streams) {
		struct event_stream *st = h->events.streams;
		if (st->reading) {
			/* its read's done ends it; take it off the list now */
			h->events.streams = st->next;
			st->next = NULL;
			st->ending = true;
			continue;
		}
		stream_end(st);
	}
	if (h->events.trim_timer) {
		uv_close((uv_handle_t *)h->events.trim_timer, (uv_close_cb)free);
		h->events.trim_timer = NULL;
	}
	if (h->events.turn) {
		/* what waits goes to the store (stopped after the hubs) */
		submit_pending(h);
		struct hub_events_turn *t = h->events.turn;
		t->check.data = t->idle.data = t;
		t->closing = 2;
		uv_close((uv_handle_t *)&t->check, turn_closed);
		uv_close((uv_handle_t *)&t->idle, turn_closed);
		h->events.turn = NULL;
	}
}

/* ---- consumer groups' positions ---- */

struct group_job {
	struct http_exchange *ex;
	struct hub *hub;
	char group[REGISTRY_ID_MAX + 1];
	unsigned part;
	int64_t seq;
	struct buf out;
};

static int group_put_work(void *arg, struct store_txn *t)
{
	struct group_job *j = arg;
	char key[512], v[24];
	position_key(j->hub->name, j->group, j->part, key);
	snprintf(v, sizeof v, "%lld", (long long)j->seq);
	return store_setting_put(t, key, v);
}

static void group_done(void *arg, int rc)
{
	struct group_job *j = arg;
	if (rc != 0)
		rest__respond_store_error(j->ex, rc, "", true);
	else
		http_respond_json(j->ex, 200, NULL, j->out.len ? j->out.data : "{}");
	buf_free(&j->out);
	free(j);
}

void hub__events_group_put(struct route_args *a)
{
	if (!group_name_ok(a->id)) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
				    "a consumer group name is 1-50 letters, digits and $-_.");
		return;
	}
	json_t *body = rest__body_object(a->ex);
	if (!body)
		return;
	json_t *p = json_object_get(body, "partition"), *s = json_object_get(body, "sequenceNumber");
	if (!json_is_integer(p) || json_integer_value(p) < 0 ||
	    json_integer_value(p) >= a->hub->events.partitions || !json_is_integer(s) ||
	    json_integer_value(s) < 0) {
		json_decref(body);
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
				    "the body is {\"partition\":0..%u,\"sequenceNumber\":n}",
				    a->hub->events.partitions - 1);
		return;
	}
	struct group_job *j = xcalloc(1, sizeof *j);
	j->ex = a->ex;
	j->hub = a->hub;
	snprintf(j->group, sizeof j->group, "%s", a->id);
	j->part = (unsigned)json_integer_value(p);
	j->seq = json_integer_value(s);
	buf_init(&j->out);
	char *text = json_dumps(body, JSON_COMPACT);
	buf_appends(&j->out, text);
	buf_appendc(&j->out, '\0');
	free(text);
	json_decref(body);
	store_submit_sized(a->hub->store, group_put_work, group_done, j, 64);
}

static int group_get_work(void *arg, struct store_txn *t)
{
	struct group_job *j = arg;
	json_t *o = json_object(), *parts = json_array();
	json_object_set_new(o, "group", json_string(j->group));
	for (unsigned i = 0; i < j->hub->events.partitions; i++) {
		char key[512], *v = NULL;
		position_key(j->hub->name, j->group, i, key);
		int rc = store_setting_get(t, key, &v);
		if (rc != 0 && rc != FH_ENOTFOUND) {
			json_decref(o);
			json_decref(parts);
			return rc;
		}
		json_array_append_new(parts, json_pack("{s:i, s:o}", "partition", (int)i,
						       "sequenceNumber",
						       v ? json_integer(strtoll(v, NULL, 10))
							 : json_null()));
		free(v);
	}
	json_object_set_new(o, "partitions", parts);
	char *text = json_dumps(o, JSON_COMPACT);
	buf_appends(&j->out, text);
	buf_appendc(&j->out, '\0');
	free(text);
	json_decref(o);
	return 0;
}

void hub__events_group_get(struct route_args *a)
{
	if (!group_name_ok(a->id)) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
				    "a consumer group name is 1-50 letters, digits and $-_.");
		return;
	}
	struct group_job *j = xcalloc(1, sizeof *j);
	j->ex = a->ex;
	j->hub = a->hub;
	snprintf(j->group, sizeof j->group, "%s", a->id);
	buf_init(&j->out);
	store_read(a->hub->store, group_get_work, group_done, j);
}
