/* The Event Hub-compatible endpoint over the hub's telemetry log
 * (amqp.md §3): $management reads of the hub and its partitions, and
 * receivers on <entity>/ConsumerGroups/<group>/Partitions/<n>.
 *
 * A receiver starts where its selector filter says (decisions.md 18: the
 * client's position, never one fleethub keeps), then:
 *
 *   pump --credit, under AMQP_MAX_UNSETTLED--> read (store_read_slow; the
 *     ^      events are encoded as AMQP messages on the worker thread)
 *     |        | events: send them, cursor past the last, pump
 *     |        | none: wait
 *     +-- an append to its partition (hub_events_watch), a poll every
 *         AMQP_POLL_MS (other nodes' appends), the client's flow or
 *         dispositions, the socket drained
 *
 * Epoch receivers (com.microsoft:epoch): a receiver with a higher epoch on
 * the same consumer group and partition of the hub takes it over and the
 * other is closed with amqp:link:stolen; one with a lower epoch, or none
 * while an epoch receiver is open, is refused the same way. */
#include <jansson.h>
#include <proton/condition.h>
#include <proton/terminus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/amqp_filter.h"
#include "hub/amqp_internal.h"

#define READ_MAX 300                    /* events one read takes at most */
#define SOCKET_HIGH_WATER (1024 * 1024) /* bytes queued to the client */

static struct amqp_conn *conn_of(struct hub_events_watch *w)
{
	return (struct amqp_conn *)((char *)w - offsetof(struct amqp_conn, watch));
}

/* ---- the start position ---- */

struct start_job {
	struct amqp_link *lk;
	char hub[256];
	unsigned part;
	struct amqp_filter f;
	bool none; /* no filter: the end */
	int64_t seq;
};

struct probe {
	int64_t seq, off;
};

static int probe_each(void *arg, const struct store_event *e)
{
	struct probe *q = arg;
	q->seq = e->seq;
	q->off = e->offset;
	return 1;
}

/* The offset of the event at seq (or the first after it), -1 for none, or
 * a store error (below -1). */
static int64_t offset_at(struct store_txn *t, const char *hub, unsigned part, int64_t seq,
			 int64_t *found_seq)
{
	struct probe p = {-1, -1};
	int rc = store_event_read(t, hub, part, seq, 1, probe_each, &p);
	if (rc < 0)
		return rc;
	*found_seq = p.seq;
	return p.off;
}

static int start_work(void *arg, struct store_txn *t)
{
	struct start_job *j = arg;
	struct store_partition p;
	int rc = store_event_partition(t, j->hub, j->part, &p);
	if (rc != 0)
		return rc;
	const struct amqp_filter *f = &j->f;
	if (j->none || f->latest) {
		j->seq = p.next_seq;
	} else if (f->kind == AMQP_FILTER_SEQUENCE) {
		j->seq = f->inclusive ? f->value : f->value + 1;
	} else if (f->kind == AMQP_FILTER_TIME) {
		rc = store_event_seek_time(t, j->hub, j->part, f->inclusive ? f->value : f->value + 1,
					   &j->seq);
	} else if (f->value < 0) {
		j->seq = p.begin_seq;
	} else {
		/* offsets grow with sequence numbers: the first event past the
		 * offset, by bisection over the events kept */
		int64_t lo = p.begin_seq, hi = p.next_seq;
		while (lo < hi && rc == 0) {
			int64_t mid = lo + (hi - lo) / 2, at;
			int64_t off = offset_at(t, j->hub, j->part, mid, &at);
			if (off < -1) {
				rc = (int)off;
			} else if (off < 0) {
				hi = mid; /* trimmed meanwhile */
			} else if (f->inclusive ? off >= f->value : off > f->value) {
				hi = mid;
			} else {
				lo = (at > mid ? at : mid) + 1;
			}
		}
		j->seq = lo;
	}
	if (rc == 0 && j->seq < p.begin_seq)
		j->seq = p.begin_seq; /* what is asked for is gone: the oldest kept */
	return rc;
}

static void start_done(void *arg, int rc)
{
	struct start_job *j = arg;
	struct amqp_link *lk = j->lk;
	if (!lk->closed) {
		if (rc != 0) {
			amqp__link_fail(lk, "amqp:internal-error", "reading the partition: %s",
					fh_strerror(rc));
		} else {
			lk->cursor = j->seq;
			lk->ready = true;
			log_at(LOG_DEBUG,
			       "amqp %s: receiver on partition %u of %s (group %s) from sequence "
			       "number %lld",
			       lk->ac->peer, lk->part, lk->ac->hub->name, lk->group,
			       (long long)lk->cursor);
			amqp__events_pump(lk);
		}
		amqp__run(lk->ac);
	}
	free(j);
	amqp__link_unref(lk);
}

/* ---- attach ---- */

/* The selector filter of the source, or NULL (none). */
static const char *selector(pn_link_t *l, char *out, size_t outlen)
{
	pn_data_t *f = pn_terminus_filter(pn_link_remote_source(l));
	pn_data_rewind(f);
	if (!pn_data_next(f) || pn_data_type(f) != PN_MAP)
		return NULL;
	pn_data_enter(f);
	const char *found = NULL;
	while (!found && pn_data_next(f)) { /* key */
		if (!pn_data_next(f))
			break;
		if (pn_data_type(f) != PN_DESCRIBED)
			continue;
		pn_data_enter(f);
		pn_data_next(f); /* descriptor */
		bool selector_kind =
		    (pn_data_type(f) == PN_ULONG && pn_data_get_ulong(f) == 0x468C00000004ULL) ||
		    (pn_data_type(f) == PN_SYMBOL && pn_data_get_symbol(f).size == 32 &&
		     memcmp(pn_data_get_symbol(f).start, "apache.org:selector-filter:string", 32) ==
			 0);
		if (selector_kind && pn_data_next(f) && pn_data_type(f) == PN_STRING) {
			pn_bytes_t s = pn_data_get_string(f);
			size_t n = s.size < outlen - 1 ? s.size : outlen - 1;
			memcpy(out, s.start, n);
			out[n] = 0;
			found = out;
		}
		pn_data_exit(f);
	}
	pn_data_exit(f);
	return found;
}

/* com.microsoft:epoch of the link's properties, or -1. */
static int64_t link_epoch(pn_link_t *l)
{
	pn_data_t *p = pn_link_remote_properties(l);
	if (!p)
		return -1; /* the attach had no properties */
	pn_data_rewind(p);
	if (!pn_data_next(p) || pn_data_type(p) != PN_MAP)
		return -1;
	pn_data_enter(p);
	int64_t epoch = -1;
	while (pn_data_next(p)) {
		bool is_epoch = pn_data_type(p) == PN_SYMBOL && pn_data_get_symbol(p).size == 19 &&
				memcmp(pn_data_get_symbol(p).start, "com.microsoft:epoch", 19) == 0;
		if (!pn_data_next(p))
			break;
		if (is_epoch) {
			pn_type_t t = pn_data_type(p);
			epoch = t == PN_LONG ? pn_data_get_long(p)
				: t == PN_INT ? pn_data_get_int(p)
				: t == PN_ULONG ? (int64_t)pn_data_get_ulong(p)
				: t == PN_UINT ? (int64_t)pn_data_get_uint(p)
					       : -1;
		}
	}
	pn_data_exit(p);
	return epoch;
}

/* Applies the epoch rules among the receivers of this hub, group and
 * partition on this node; false when lk is refused. */
static bool take_partition(struct amqp_link *lk)
{
	struct hub *h = lk->ac->hub;
	for (struct amqp_link *o = h->amqp_readers; o; o = o->reader_next) {
		if (o == lk || o->closed || o->part != lk->part ||
		    strcasecmp(o->group, lk->group) != 0)
			continue;
		if (o->epoch < 0 && lk->epoch < 0)
			continue; /* plain receivers share */
		if (lk->epoch < 0 || o->epoch > lk->epoch) {
			amqp__link_fail(lk, "amqp:link:stolen",
					"a receiver with epoch %lld holds partition %u of consumer "
					"group %s",
					(long long)o->epoch, lk->part, lk->group);
			return false;
		}
	}
	for (struct amqp_link *o = h->amqp_readers, *next; o; o = next) {
		next = o->reader_next; /* o may be freed */
		if (o == lk || o->closed || o->part != lk->part ||
		    strcasecmp(o->group, lk->group) != 0)
			continue;
		if (lk->epoch >= 0 && (o->epoch < 0 || o->epoch < lk->epoch)) {
			struct amqp_conn *oac = o->ac;
			amqp__link_fail(o, "amqp:link:stolen",
					"a receiver with epoch %lld took partition %u of consumer "
					"group %s over",
					(long long)lk->epoch, lk->part, lk->group);
			amqp__run(oac);
		}
	}
	return true;
}

void amqp__events_attach(struct amqp_link *lk, const char *address)
{
	struct amqp_conn *ac = lk->ac;
	struct hub *h = ac->hub;
	char entity[128];
	amqp__entity(h, entity, sizeof entity);
	/* [/]<entity>/ConsumerGroups/<group>/Partitions/<n> */
	const char *a = address + (address[0] == '/');
	size_t el = strcspn(a, "/");
	const char *rest = a + el;
	const char *groups = "/ConsumerGroups/", *parts = "/Partitions/";
	const char *g = strncasecmp(rest, groups, 16) == 0 ? rest + 16 : NULL;
	const char *pp = g ? strcasestr(g, parts) : NULL;
	char *end = NULL;
	long part = pp ? strtol(pp + 12, &end, 10) : -1;
	if (!g || !pp || pp == g || (size_t)(pp - g) >= sizeof lk->group || !end || *end ||
	    end == pp + 12) {
		amqp__link_fail(lk, "amqp:not-found",
				"a receiver's address is <entity>/ConsumerGroups/<group>/"
				"Partitions/<n>, not %.200s",
				address);
		return;
	}
	if (el != strlen(entity) || strncasecmp(a, entity, el) != 0) {
		amqp__link_fail(lk, "amqp:not-found",
				"no Event Hub %.*s here: this hub's Event Hub-compatible name is %s",
				(int)(el < 200 ? el : 200), a, entity);
		return;
	}
	if (part < 0 || part >= (long)h->events.partitions) {
		amqp__link_fail(lk, "amqp:not-found", "the hub has partitions 0 to %u, not %.20s",
				h->events.partitions - 1, pp + 12);
		return;
	}
	if (!amqp__authorized(ac, true, 0)) {
		amqp__link_fail(lk, "amqp:unauthorized-access",
				"put a token for the Event Hub-compatible endpoint (a policy with "
				"ServiceConnect) on $cbs first");
		return;
	}
	lk->part = (unsigned)part;
	snprintf(lk->group, sizeof lk->group, "%.*s", (int)(pp - g), g);
	lk->epoch = link_epoch(lk->l);
	struct start_job *j = xcalloc(1, sizeof *j);
	char text[AMQP_FILTER_MAX + 1], err[200];
	const char *sel = selector(lk->l, text, sizeof text);
	if (!sel) {
		j->none = true;
	} else if (amqp_filter_parse(sel, strlen(sel), &j->f, err, sizeof err) != 0) {
		free(j);
		amqp__link_fail(lk, "amqp:invalid-field", "%s: %.200s", err, sel);
		return;
	}
	if (!take_partition(lk)) {
		free(j);
		return;
	}
	lk->reader_next = h->amqp_readers;
	h->amqp_readers = lk;
	if (!ac->watching) {
		hub_events_watch(h, &ac->watch);
		ac->watching = true;
	}
	pn_link_open(lk->l);
	j->lk = lk;
	snprintf(j->hub, sizeof j->hub, "%s", h->name);
	j->part = lk->part;
	amqp__link_ref(lk);
	store_read(h->store, start_work, start_done, j);
}

void amqp__events_detach(struct amqp_link *lk)
{
	struct hub *h = lk->ac->hub;
	for (struct amqp_link **p = &h->amqp_readers; *p; p = &(*p)->reader_next)
		if (*p == lk) {
			*p = lk->reader_next;
			return;
		}
}

/* ---- reading and sending ---- */

struct read_job {
	struct amqp_link *lk;
	char hub[256];
	unsigned part;
	int64_t from, last;
	unsigned limit, got;
	pn_message_t *m;
	struct buf out;   /* the encoded messages, one after the other */
	size_t *sizes;
};

static void put_sym(pn_data_t *d, const char *s)
{
	pn_data_put_symbol(d, pn_bytes(strlen(s), s));
}

static void put_str(pn_data_t *d, const char *s)
{
	pn_data_put_string(d, pn_bytes(strlen(s), s));
}

static pn_atom_t str_atom(const char *s)
{
	pn_atom_t a = {.type = PN_STRING};
	a.u.as_bytes = pn_bytes(strlen(s), s);
	return a;
}

/* One event as the AMQP message an Event Hubs consumer reads (amqp.md §3,
 * step 6), encoded at the end of j->out. Runs on the worker thread; j->m
 * belongs to the job. */
static int encode_event(struct read_job *j, const struct store_event *e)
{
	pn_message_t *m = j->m;
	pn_message_clear(m);
	json_t *props = json_loads(e->props, 0, NULL);
	const json_t *app = json_object_get(props, "p"), *sys = json_object_get(props, "s");
	const char *gen = json_string_value(json_object_get(props, "g"));
	const char *auth = json_string_value(json_object_get(props, "a"));
	pn_data_t *ann = pn_message_annotations(m);
	pn_data_put_map(ann);
	pn_data_enter(ann);
	put_sym(ann, "x-opt-sequence-number");
	pn_data_put_long(ann, e->seq);
	char off[24];
	snprintf(off, sizeof off, "%lld", (long long)e->offset);
	put_sym(ann, "x-opt-offset");
	put_str(ann, off);
	put_sym(ann, "x-opt-enqueued-time");
	pn_data_put_timestamp(ann, e->enqueued_ms);
	char method[160];
	hub_events_auth_method(auth, method);
	put_sym(ann, "iothub-connection-device-id");
	put_str(ann, e->device);
	put_sym(ann, "iothub-connection-auth-method");
	put_str(ann, method);
	put_sym(ann, "iothub-connection-auth-generation-id");
	put_str(ann, gen ? gen : "");
	put_sym(ann, "iothub-enqueuedtime");
	pn_data_put_timestamp(ann, e->enqueued_ms);
	put_sym(ann, "iothub-message-source");
	put_str(ann, "Telemetry");
	/* the message's system properties: the AMQP properties they are, the
	 * rest as annotations by their names */
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)sys, k, v)
	{
		const char *s = json_string_value(v);
		int64_t ms;
		if (!s)
			continue;
		if (strcmp(k, "messageId") == 0)
			pn_message_set_id(m, str_atom(s));
		else if (strcmp(k, "correlationId") == 0)
			pn_message_set_correlation_id(m, str_atom(s));
		else if (strcmp(k, "userId") == 0)
			pn_message_set_user_id(m, pn_bytes(strlen(s), s));
		else if (strcmp(k, "to") == 0)
			pn_message_set_address(m, s);
		else if (strcmp(k, "contentType") == 0)
			pn_message_set_content_type(m, s);
		else if (strcmp(k, "contentEncoding") == 0)
			pn_message_set_content_encoding(m, s);
		else if (strcmp(k, "expiryTimeUtc") == 0 && clock_parse_iso8601(s, &ms) == 0)
			pn_message_set_expiry_time(m, ms);
		else if (strcmp(k, "creationTimeUtc") == 0 && clock_parse_iso8601(s, &ms) == 0)
			pn_message_set_creation_time(m, ms);
		else {
			put_sym(ann, k);
			put_str(ann, s);
		}
	}
	pn_data_exit(ann);
	pn_data_t *ap = pn_message_properties(m);
	pn_data_put_map(ap);
	pn_data_enter(ap);
	json_object_foreach((json_t *)app, k, v)
	{
		put_str(ap, k);
		if (json_is_string(v))
			put_str(ap, json_string_value(v));
		else
			pn_data_put_null(ap);
	}
	pn_data_exit(ap);
	json_decref(props);
	pn_message_set_inferred(m, true); /* a data section */
	pn_data_put_binary(pn_message_body(m), pn_bytes(e->body_len, (const char *)e->body));
	size_t cap = e->body_len + 1024;
	for (;;) {
		buf_reserve(&j->out, cap);
		size_t n = j->out.cap - 1 - j->out.len;
		int rc = pn_message_encode(m, j->out.data + j->out.len, &n);
		if (rc == 0) {
			j->out.len += n;
			j->sizes[j->got++] = n;
			j->last = e->seq;
			return 0;
		}
		if (rc != PN_OVERFLOW)
			return FH_EIO;
		cap *= 2;
	}
}

static int read_each(void *arg, const struct store_event *e)
{
	return encode_event(arg, e);
}

static int read_work(void *arg, struct store_txn *t)
{
	struct read_job *j = arg;
	j->m = pn_message();
	int rc = store_event_read(t, j->hub, j->part, j->from, j->limit, read_each, j);
	pn_message_free(j->m);
	j->m = NULL;
	return rc;
}

static void read_done(void *arg, int rc)
{
	struct read_job *j = arg;
	struct amqp_link *lk = j->lk;
	lk->reading = false;
	if (!lk->closed && rc != 0) {
		amqp__link_fail(lk, "amqp:internal-error", "reading the partition: %s",
				fh_strerror(rc));
	} else if (!lk->closed) {
		size_t at = 0;
		unsigned sent = 0;
		for (; sent < j->got; sent++) {
			if (!amqp__send(lk, j->out.data + at, j->sizes[sent]))
				break;
			at += j->sizes[sent];
		}
		lk->ac->hub->amqp.events_sent += sent;
		if (sent == j->got && j->got)
			lk->cursor = j->last + 1;
		else if (sent) /* credit shrank meanwhile: go on from the first not sent */
			lk->cursor = j->from + sent;
		lk->waiting = j->got == 0;
		if (j->got)
			amqp__events_pump(lk);
		amqp__run(lk->ac);
	}
	buf_free(&j->out);
	free(j->sizes);
	free(j);
	amqp__link_unref(lk);
}

void amqp__events_pump(struct amqp_link *lk)
{
	if (lk->closed || !lk->ready || lk->reading)
		return;
	int credit = pn_link_credit(lk->l);
	if (credit <= 0 || pn_link_unsettled(lk->l) >= AMQP_MAX_UNSETTLED)
		return; /* the client's flow or dispositions pump again */
	if (lk->ac->net && net_conn_queued(lk->ac->net) > SOCKET_HIGH_WATER) {
		lk->waiting = true; /* the timer looks again */
		return;
	}
	struct read_job *j = xcalloc(1, sizeof *j);
	j->lk = lk;
	snprintf(j->hub, sizeof j->hub, "%s", lk->ac->hub->name);
	j->part = lk->part;
	j->from = lk->cursor;
	j->limit = credit < READ_MAX ? (unsigned)credit : READ_MAX;
	j->sizes = xcalloc(j->limit, sizeof *j->sizes);
	buf_init(&j->out);
	lk->reading = true;
	lk->waiting = false;
	amqp__link_ref(lk);
	store_read_slow(lk->ac->hub->store, read_work, read_done, j);
}

void amqp__events_wake(struct hub_events_watch *w, unsigned part)
{
	struct amqp_conn *ac = conn_of(w);
	bool any = false;
	for (struct amqp_link *lk = ac->all; lk; lk = lk->next)
		if (!lk->closed && lk->kind == AL_EVENTS && lk->waiting && lk->part == part) {
			amqp__events_pump(lk);
			any = true;
		}
	if (any)
		amqp__run(ac);
}

void amqp__events_poll(struct amqp_conn *ac)
{
	for (struct amqp_link *lk = ac->all; lk; lk = lk->next)
		if (!lk->closed && lk->kind == AL_EVENTS && lk->waiting)
			amqp__events_pump(lk);
}

/* ---- $management ---- */

struct part_job {
	struct amqp_conn *ac;
	char hub[256];
	unsigned part;
	struct store_partition p;
	int64_t last_offset;
	pn_msgid_t id;
	char id_text[128];
	char reply_to[256];
	char entity[128];
};

static pn_data_t *partition_body(const struct part_job *j)
{
	pn_data_t *b = pn_data(16);
	pn_data_put_map(b);
	pn_data_enter(b);
	char part[16], off[24];
	snprintf(part, sizeof part, "%u", j->part);
	bool empty = j->p.next_seq <= j->p.begin_seq;
	put_str(b, "name");
	put_str(b, j->entity);
	put_str(b, "type");
	put_sym(b, "com.microsoft:partition");
	put_str(b, "partition");
	put_str(b, part);
	put_str(b, "begin_sequence_number");
	pn_data_put_long(b, j->p.begin_seq);
	put_str(b, "last_enqueued_sequence_number");
	pn_data_put_long(b, j->p.next_seq - 1);
	/* the last event's offset; -1 before the first */
	snprintf(off, sizeof off, "%lld", (long long)j->last_offset);
	put_str(b, "last_enqueued_offset");
	put_str(b, off);
	put_str(b, "last_enqueued_time_utc");
	pn_data_put_timestamp(b, j->p.last_enqueued_ms);
	put_str(b, "is_partition_empty");
	pn_data_put_bool(b, empty);
	pn_data_exit(b);
	return b;
}

static int part_work(void *arg, struct store_txn *t)
{
	struct part_job *j = arg;
	int rc = store_event_partition(t, j->hub, j->part, &j->p);
	j->last_offset = -1;
	if (rc == 0 && j->p.next_seq > j->p.begin_seq) {
		int64_t at, off = offset_at(t, j->hub, j->part, j->p.next_seq - 1, &at);
		if (off < -1)
			return (int)off;
		j->last_offset = off;
	}
	return rc;
}

static void part_done(void *arg, int rc)
{
	struct part_job *j = arg;
	struct amqp_conn *ac = j->ac;
	if (!ac->dead) {
		pn_msgid_t id = j->id;
		if (id.type == PN_STRING)
			id.u.as_bytes = pn_bytes(strlen(j->id_text), j->id_text);
		if (rc != 0) {
			amqp__answer(ac, true, id, j->reply_to, 500, fh_strerror(rc), NULL);
		} else {
			pn_data_t *b = partition_body(j);
			amqp__answer(ac, true, id, j->reply_to, 200, "OK", b);
			pn_data_free(b);
		}
		amqp__run(ac);
	}
	free(j);
	amqp__unref(ac);
}

void amqp__mgmt_request(struct amqp_conn *ac, pn_delivery_t *d, pn_message_t *m)
{
	struct hub *h = ac->hub;
	char op[32] = "", type[64] = "", name[256] = "", part[32] = "", reply_to[256] = "";
	char token[SAS_MAX_TOKEN + 1];
	const char *r = pn_message_get_reply_to(m);
	snprintf(reply_to, sizeof reply_to, "%s", r ? r : "");
	pn_msgid_t id = pn_message_get_id(m);
	amqp__app_prop(m, "operation", op, sizeof op);
	amqp__app_prop(m, "type", type, sizeof type);
	amqp__app_prop(m, "name", name, sizeof name);
	amqp__app_prop(m, "partition", part, sizeof part);
	char entity[128];
	amqp__entity(h, entity, sizeof entity);
	const char *why = NULL;
	int status = 0;
	if (!amqp__authorized(ac, true, 0)) {
		if (!amqp__app_prop(m, "security_token", token, sizeof token)) {
			status = 401;
			why = "put a token for the Event Hub-compatible endpoint on $cbs, or give "
			      "a security_token";
		} else if (amqp__grant_token(ac, "$management", token, &why) != 0) {
			status = 401;
		}
	}
	if (!status && strcmp(op, "READ") != 0) {
		status = 400;
		why = "only the READ operation is served";
	} else if (!status && strcasecmp(name, entity) != 0) {
		status = 404;
		why = "no such Event Hub here";
	}
	char *end = NULL;
	long p = part[0] ? strtol(part, &end, 10) : -1;
	if (!status && strcmp(type, "com.microsoft:eventhub") == 0) {
		pn_data_t *b = pn_data(16);
		pn_data_put_map(b);
		pn_data_enter(b);
		put_str(b, "name");
		put_str(b, entity);
		put_str(b, "type");
		put_sym(b, "com.microsoft:eventhub");
		put_str(b, "created_at");
		pn_data_put_timestamp(b, h->events.started_ms);
		put_str(b, "partition_count");
		pn_data_put_int(b, (int32_t)h->events.partitions);
		put_str(b, "partition_ids");
		pn_data_put_array(b, false, PN_STRING);
		pn_data_enter(b);
		for (unsigned i = 0; i < h->events.partitions; i++) {
			char n[16];
			snprintf(n, sizeof n, "%u", i);
			put_str(b, n);
		}
		pn_data_exit(b);
		pn_data_exit(b);
		amqp__answer(ac, true, id, reply_to, 200, "OK", b);
		pn_data_free(b);
	} else if (!status && strcmp(type, "com.microsoft:partition") == 0) {
		if (p < 0 || !end || *end || p >= (long)h->events.partitions) {
			status = 404;
			why = "no such partition";
		} else {
			struct part_job *j = xcalloc(1, sizeof *j);
			j->ac = ac;
			snprintf(j->hub, sizeof j->hub, "%s", h->name);
			j->part = (unsigned)p;
			j->id = id;
			if (id.type == PN_STRING)
				snprintf(j->id_text, sizeof j->id_text, "%.*s",
					 (int)id.u.as_bytes.size, id.u.as_bytes.start);
			else if (id.type != PN_UUID && id.type != PN_ULONG && id.type != PN_NULL)
				j->id.type = PN_NULL; /* kept by value only */
			snprintf(j->reply_to, sizeof j->reply_to, "%s", reply_to);
			snprintf(j->entity, sizeof j->entity, "%s", entity);
			amqp__ref(ac);
			store_read(h->store, part_work, part_done, j);
		}
	} else if (!status) {
		status = 400;
		why = "the type must be com.microsoft:eventhub or com.microsoft:partition";
	}
	if (status)
		amqp__answer(ac, true, id, reply_to, status, why, NULL);
	pn_delivery_update(d, PN_ACCEPTED);
	pn_delivery_settle(d);
}
