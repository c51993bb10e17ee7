/* Cloud-to-device messages (see c2d.h). Every change to a queue is a
 * write job keyed by the device (store_submit_keyed), so one device's
 * changes run in order; what it sends or answers goes out from the job's
 * completion, after the commit. */
#include "hub/c2d.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/props.h"
#include "core/cluster.h"
#include "hub/hub.h"
#include "hub/rest_internal.h"

#define SWEEP_LIMIT 1000
#define FEEDBACK_KEEP_MS (3600 * 1000) /* Azure's feedback time to live */
#define FEEDBACK_MAX 100000            /* records kept per hub at most */

enum fb_status { FB_SUCCESS, FB_EXPIRED, FB_DEAD, FB_REJECTED, FB_PURGED };
static const char *const fb_code[] = {"Success", "Expired", "DeliveryCountExceeded", "Rejected",
				      "Purged"};
static const char *const fb_text[] = {"Success", "Message expired",
				      "Message delivery count exceeded", "Message rejected",
				      "Message purged"};

/* Records the feedback of message m (its state, parsed) when its sender's
 * iothub-ack asked for this outcome. */
static int feedback(struct store_txn *t, const char *hub, const char *device, const json_t *m,
		    enum fb_status st)
{
	const char *ack = json_string_value(json_object_get(m, "ack"));
	bool want = ack && (strcmp(ack, "full") == 0 ||
			    (strcmp(ack, "positive") == 0 && st == FB_SUCCESS) ||
			    (strcmp(ack, "negative") == 0 && st != FB_SUCCESS));
	if (!want)
		return 0;
	char when[32];
	int64_t now = clock_now_ms();
	clock_iso8601(now, when);
	const char *mid = json_string_value(json_object_get(m, "messageId"));
	const char *gen = json_string_value(json_object_get(m, "generation"));
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "originalMessageId", mid ? mid : "",
			      "description", fb_text[st], "deviceGenerationId", gen ? gen : "",
			      "deviceId", device, "enqueuedTimeUtc", when, "statusCode",
			      fb_code[st]);
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	int rc = store_feedback_add(t, hub, now, text);
	free(text);
	return rc;
}

/* Deletes message seq with feedback st. */
static int finish(struct store_txn *t, const char *hub, const char *device, int64_t seq,
		  const json_t *m, enum fb_status st)
{
	int rc = store_c2d_delete(t, hub, device, seq);
	if (rc == 0)
		rc = feedback(t, hub, device, m, st);
	return rc;
}

static int64_t num(const json_t *m, const char *key)
{
	return json_integer_value(json_object_get(m, key));
}

/* ---- enqueue (POST /fleethub/devices/{id}/messages) ---- */

struct send_job {
	struct hub *hub;
	char id[REGISTRY_ID_MAX + 1];
	json_t *msg; /* the state, without generation until work */
	uint8_t *body;
	size_t body_len;
	int64_t seq;
	hub_c2d_done_fn done;
	void *arg;
};

static int send_work(void *arg, struct store_txn *t)
{
	struct send_job *j = arg;
	struct store_device d = {0};
	int rc = store_device_get(t, j->hub->name, j->id, &d);
	if (rc != 0)
		return rc;
	json_t *identity = json_loads(d.json, 0, NULL);
	store_device_clear(&d);
	json_object_set(j->msg, "generation", json_object_get(identity, "generationId"));
	json_decref(identity);
	char *text = json_dumps(j->msg, JSON_COMPACT);
	rc = store_c2d_add(t, j->hub->name, j->id, text, j->body, j->body_len,
			   num(j->msg, "expiryMs"), C2D_MAX_QUEUE, &j->seq);
	free(text);
	if (rc == 0 && store_shared(j->hub->store)) {
		struct cluster_msg m;
		cluster_msg_set(&m, CLUSTER_C2D, j->hub->name, j->id, 0, j->seq, NULL);
		rc = store_post(t, &m);
	}
	return rc;
}

static void send_done(void *arg, int rc)
{
	struct send_job *j = arg;
	if (rc == 0) {
		j->hub->c2d.enqueued++;
		hub_c2d_wake(j->hub, j->id);
	}
	j->done(j->arg, rc, j->id, j->msg, j->seq);
	json_decref(j->msg);
	free(j->body);
	free(j);
}

json_t *hub_c2d_message(const char *device_id, const char *ack, int64_t expiry_ms)
{
	int64_t now = clock_now_ms();
	json_t *m = json_object();
	struct buf to = BUF_INIT;
	buf_appends(&to, "/devices/");
	pct_encode(&to, device_id, strlen(device_id));
	buf_appends(&to, "/messages/devicebound");
	json_object_set_new(m, "to", json_stringn(to.data, to.len));
	buf_free(&to);
	json_object_set_new(m, "ack", json_string(ack ? ack : "none"));
	json_object_set_new(m, "enqueuedMs", json_integer(now));
	json_object_set_new(m, "expiryMs",
			    json_integer(expiry_ms ? expiry_ms : now + C2D_TTL_DEFAULT_S * 1000));
	json_object_set_new(m, "deliveryCount", json_integer(0));
	json_object_set_new(m, "properties", json_object());
	return m;
}

void hub_c2d_enqueue(struct hub *h, const char *device_id, json_t *msg, uint8_t *body,
		     size_t body_len, hub_c2d_done_fn done, void *arg)
{
	struct send_job *j = xcalloc(1, sizeof *j);
	j->hub = h;
	snprintf(j->id, sizeof j->id, "%s", device_id);
	j->msg = msg;
	j->body = body;
	j->body_len = body_len;
	j->done = done;
	j->arg = arg;
	store_submit_keyed(h->store, j->id, send_work, send_done, j, body_len + 256);
}

/* The REST answer to POST /fleethub/devices/{id}/messages. */
static void rest_sent(void *arg, int rc, const char *id, const json_t *msg, int64_t seq)
{
	struct http_exchange *ex = arg;
	if (rc == FH_ETOOBIG) {
		rest__respond_error(ex, 403, "DeviceMaximumQueueDepthExceeded", 403004,
				    "the device %s has %d messages queued already: Azure's limit",
				    id, C2D_MAX_QUEUE);
	} else if (rc != 0) {
		rest__respond_store_error(ex, rc, id, true);
	} else {
		char exp[32];
		clock_iso8601(num(msg, "expiryMs"), exp);
		json_t *o = json_pack("{s:O, s:I, s:s}", "messageId",
				      json_object_get(msg, "messageId"), "sequenceNumber",
				      (json_int_t)seq, "expiryTimeUtc", exp);
		char *text = json_dumps(o, JSON_COMPACT);
		http_respond_json(ex, 201, NULL, text);
		free(text);
		json_decref(o);
	}
}

static const char *const ack_values[] = {"none", "positive", "negative", "full"};

void hub__c2d_send(struct route_args *a)
{
	json_t *b = rest__body_object(a->ex);
	if (!b)
		return;
	const char *bad = NULL;
	const json_t *text = json_object_get(b, "body"), *b64 = json_object_get(b, "bodyBase64");
	const json_t *props = json_object_get(b, "properties");
	const char *ack = json_string_value(json_object_get(b, "ack"));
	const json_t *ttl = json_object_get(b, "ttlSeconds");
	uint8_t *body = NULL;
	size_t n = 0;
	if ((text && !json_is_string(text)) || (b64 && !json_is_string(b64)) || (text && b64))
		bad = "give the body as \"body\" (text) or \"bodyBase64\", one of them";
	else if (props && !json_is_object(props))
		bad = "properties must be an object of strings";
	else if (ttl && (!json_is_integer(ttl) || json_integer_value(ttl) < 1 ||
			 json_integer_value(ttl) > C2D_TTL_MAX_S))
		bad = "ttlSeconds must be 1..172800 (48 hours)";
	else if (json_object_get(b, "ack") && !ack)
		bad = "ack must be none, positive, negative or full";
	if (!bad && ack) {
		bool ok = false;
		for (size_t i = 0; i < 4; i++)
			ok |= strcmp(ack, ack_values[i]) == 0;
		if (!ok)
			bad = "ack must be none, positive, negative or full";
	}
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)props, k, v) if (!bad && !json_is_string(v)) bad =
	    "properties must be an object of strings";
	static const char *const sys_keys[] = {"messageId", "correlationId", "userId",
					       "contentType", "contentEncoding"};
	for (size_t i = 0; !bad && i < sizeof sys_keys / sizeof sys_keys[0]; i++) {
		const json_t *s = json_object_get(b, sys_keys[i]);
		if (s && (!json_is_string(s) || json_string_length(s) > 128))
			bad = "messageId, correlationId, userId, contentType and contentEncoding "
			      "are strings of up to 128 characters";
	}
	if (!bad && b64) {
		size_t len = json_string_length(b64);
		body = xmalloc(B64_DECODED_MAX(len) + 1);
		if (b64_decode(json_string_value(b64), len, body, &n) != 0)
			bad = "bodyBase64 is not base64";
	} else if (!bad && text) {
		n = json_string_length(text);
		body = xmalloc(n + 1);
		memcpy(body, json_string_value(text), n);
	}
	if (!bad && n > C2D_MAX_BODY) {
		free(body);
		json_decref(b);
		rest__respond_error(a->ex, 413, "MessageTooLarge", 413001,
				    "the message is %zu bytes, over the 64 KB of a cloud-to-device "
				    "message",
				    n);
		return;
	}
	if (bad) {
		free(body);
		json_decref(b);
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004, "%s", bad);
		return;
	}
	int64_t now = clock_now_ms();
	char uuid[37];
	crypto_uuid(uuid);
	json_t *m = hub_c2d_message(
	    a->id, ack, now + (ttl ? json_integer_value(ttl) : C2D_TTL_DEFAULT_S) * 1000);
	json_object_set_new(m, "messageId", json_string(uuid));
	for (size_t i = 0; i < sizeof sys_keys / sizeof sys_keys[0]; i++)
		if (json_object_get(b, sys_keys[i]))
			json_object_set(m, sys_keys[i], json_object_get(b, sys_keys[i]));
	if (props)
		json_object_set(m, "properties", (json_t *)props);
	json_decref(b);
	hub_c2d_enqueue(a->hub, a->id, m, body, n, rest_sent, a->ex);
}

/* ---- MQTT delivery ---- */

struct deliver_read {
	struct hub *hub;
	struct dev_session *s;
	char id[REGISTRY_ID_MAX + 1];
	int64_t after;
	unsigned limit;
	struct {
		int64_t seq;
		json_t *m;
		uint8_t *body;
		size_t n;
	} rows[C2D_INFLIGHT];
	unsigned nrows;
};

static int deliver_each(void *arg, const struct store_c2d *c)
{
	struct deliver_read *r = arg;
	json_t *m = json_loads(c->json, 0, NULL);
	if (!m)
		return 0; /* not ours to read: left alone */
	r->rows[r->nrows].seq = c->seq;
	r->rows[r->nrows].m = m;
	r->rows[r->nrows].body = xmalloc(c->body_len + 1);
	if (c->body_len)
		memcpy(r->rows[r->nrows].body, c->body, c->body_len);
	r->rows[r->nrows].n = c->body_len;
	r->nrows++;
	return r->nrows == C2D_INFLIGHT;
}

static int deliver_work(void *arg, struct store_txn *t)
{
	struct deliver_read *r = arg;
	int rc = store_c2d_list(t, r->hub->name, r->id, r->after, r->limit, deliver_each, r);
	return rc > 0 ? 0 : rc;
}

static void expire_one(struct hub *h, const char *device, int64_t seq, json_t *m);
static void pump(struct hub *h, struct dev_session *s);

/* The property bag of a delivery (protocol.md §2.9). */
static void topic_of(struct buf *topic, const char *device, const json_t *m)
{
	json_t *sys = json_object();
	static const char *const keys[] = {"messageId", "to", "correlationId", "userId",
					   "contentType", "contentEncoding"};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (json_is_string(json_object_get(m, keys[i])))
			json_object_set(sys, keys[i], json_object_get(m, keys[i]));
	char exp[32];
	clock_iso8601(num(m, "expiryMs"), exp);
	json_object_set_new(sys, "expiryTimeUtc", json_string(exp));
	buf_printf(topic, "devices/%s/messages/devicebound/", device);
	props_encode(topic, sys, json_object_get(m, "properties"));
	json_decref(sys);
}

static void deliver_done(void *arg, int rc)
{
	struct deliver_read *r = arg;
	struct dev_session *s = r->s;
	struct hub *h = r->hub;
	s->c2d.reading = false;
	int64_t now = clock_now_ms();
	for (unsigned i = 0; i < r->nrows; i++) {
		json_t *m = r->rows[i].m;
		bool send = rc == 0 && s->live && (s->subs.mask & (1u << HUB_SUB_C2D)) &&
			    s->c2d.inflight < C2D_INFLIGHT;
		if (send && num(m, "expiryMs") <= now) {
			expire_one(h, r->id, r->rows[i].seq, m);
			s->c2d.after = r->rows[i].seq;
		} else if (send) {
			struct buf topic = BUF_INIT;
			topic_of(&topic, r->id, m);
			if (++s->c2d.next_id == 0)
				s->c2d.next_id = 1;
			uint16_t pid = s->c2d.next_id;
			s->c2d.ids[s->c2d.inflight] = pid;
			s->c2d.seqs[s->c2d.inflight] = r->rows[i].seq;
			s->c2d.inflight++;
			s->c2d.after = r->rows[i].seq;
			s->ops->c2d(s, topic.data, topic.len, r->rows[i].body, r->rows[i].n, pid);
			h->c2d.delivered++;
			buf_free(&topic);
		}
		json_decref(m);
		free(r->rows[i].body);
	}
	if (rc != 0 && s->live)
		log_at(LOG_WARN, "hub %s: device %s: its queue could not be read: %s", h->name,
		       r->id, fh_strerror(rc));
	bool more = rc == 0 && (s->c2d.again || r->nrows == r->limit);
	s->c2d.again = false;
	free(r);
	if (more && s->live)
		pump(h, s);
	s->ops->ref(s, -1);
}

static void pump(struct hub *h, struct dev_session *s)
{
	if (s->c2d.reading) {
		s->c2d.again = true;
		return;
	}
	if (!s->live || !(s->subs.mask & (1u << HUB_SUB_C2D)) || s->c2d.inflight >= C2D_INFLIGHT)
		return;
	struct deliver_read *r = xcalloc(1, sizeof *r);
	r->hub = h;
	r->s = s;
	memcpy(r->id, s->device_id, sizeof r->id);
	r->after = s->c2d.after;
	r->limit = C2D_INFLIGHT - s->c2d.inflight;
	s->c2d.reading = true;
	s->ops->ref(s, 1);
	store_read(h->store, deliver_work, deliver_done, r);
}

void hub__c2d_ready(struct hub *h, struct dev_session *s)
{
	pump(h, s);
}

void hub_c2d_wake(struct hub *h, const char *device_id)
{
	struct dev_session *s = sessions_live(h, device_id);
	if (s)
		pump(h, s);
}

/* A change to one message: work reads it (by seq) and decides. */
struct msg_job {
	struct hub *hub;
	struct dev_session *s; /* MQTT: the session to pump after; NULL */
	char id[REGISTRY_ID_MAX + 1];
	int64_t seq;
	int kind; /* MJ_* */
	json_t *m; /* expire: the state already read */
};

enum { MJ_ACKED, MJ_UNACKED, MJ_EXPIRE };

static int find_seq(void *arg, const struct store_c2d *c)
{
	struct msg_job *j = arg;
	if (c->seq != j->seq)
		return 0;
	j->m = json_loads(c->json, 0, NULL);
	return 1;
}

static int msg_work(void *arg, struct store_txn *t)
{
	struct msg_job *j = arg;
	const char *hub = j->hub->name;
	if (!j->m) {
		int rc = store_c2d_list(t, hub, j->id, j->seq - 1, 1, find_seq, j);
		if (rc < 0)
			return rc;
		if (!j->m)
			return FH_ENOTFOUND; /* settled meanwhile (swept, purged) */
	}
	switch (j->kind) {
	case MJ_ACKED: return finish(t, hub, j->id, j->seq, j->m, FB_SUCCESS);
	case MJ_EXPIRE: return finish(t, hub, j->id, j->seq, j->m, FB_EXPIRED);
	case MJ_UNACKED: {
		int64_t count = num(j->m, "deliveryCount") + 1;
		if (count >= C2D_MAX_DELIVERIES)
			return finish(t, hub, j->id, j->seq, j->m, FB_DEAD) == 0 ? 1 : FH_EIO;
		json_object_set_new(j->m, "deliveryCount", json_integer(count));
		char *text = json_dumps(j->m, JSON_COMPACT);
		int rc = store_c2d_update(t, hub, j->id, j->seq, text);
		free(text);
		return rc;
	}
	}
	return 0;
}

static void msg_done(void *arg, int rc)
{
	struct msg_job *j = arg;
	if (rc == 0 && j->kind == MJ_ACKED)
		j->hub->c2d.completed++;
	else if (rc == 0 && j->kind == MJ_EXPIRE)
		j->hub->c2d.expired++;
	else if (rc == 1)
		j->hub->c2d.dead++;
	if (j->s) {
		pump(j->hub, j->s);
		j->s->ops->ref(j->s, -1);
	}
	json_decref(j->m);
	free(j);
}

static void msg_submit(struct hub *h, struct dev_session *s, const char *device, int64_t seq,
		       int kind, json_t *m)
{
	struct msg_job *j = xcalloc(1, sizeof *j);
	j->hub = h;
	j->s = s;
	if (s)
		s->ops->ref(s, 1);
	snprintf(j->id, sizeof j->id, "%s", device);
	j->seq = seq;
	j->kind = kind;
	j->m = m ? json_incref(m) : NULL;
	store_submit_keyed(h->store, device, msg_work, msg_done, j, 64);
}

static void expire_one(struct hub *h, const char *device, int64_t seq, json_t *m)
{
	msg_submit(h, NULL, device, seq, MJ_EXPIRE, m);
}

void hub__c2d_acked(struct hub *h, struct dev_session *s, uint16_t packet_id)
{
	struct c2d_session *c = &s->c2d;
	for (unsigned i = 0; i < c->inflight; i++) {
		if (c->ids[i] != packet_id)
			continue;
		int64_t seq = c->seqs[i];
		c->inflight--;
		c->ids[i] = c->ids[c->inflight];
		c->seqs[i] = c->seqs[c->inflight];
		msg_submit(h, s, s->device_id, seq, MJ_ACKED, NULL);
		return;
	}
	log_at(LOG_DEBUG, "hub %s: device %s acknowledged packet %u, which was not sent to it",
	       h->name, s->device_id, packet_id);
}

void hub__c2d_detached(struct hub *h, struct dev_session *s)
{
	for (unsigned i = 0; i < s->c2d.inflight; i++)
		msg_submit(h, NULL, s->device_id, s->c2d.seqs[i], MJ_UNACKED, NULL);
	s->c2d.inflight = 0;
}

/* ---- purge (DELETE /devices/{id}/commands) ---- */

struct purge_job {
	struct http_exchange *ex;
	struct hub *hub;
	char id[REGISTRY_ID_MAX + 1];
	int64_t seqs[C2D_MAX_QUEUE * 2];
	json_t *msgs[C2D_MAX_QUEUE * 2];
	unsigned n;
};

static int purge_each(void *arg, const struct store_c2d *c)
{
	struct purge_job *j = arg;
	if (j->n == sizeof j->seqs / sizeof j->seqs[0])
		return 1;
	j->seqs[j->n] = c->seq;
	j->msgs[j->n++] = json_loads(c->json, 0, NULL);
	return 0;
}

static int purge_work(void *arg, struct store_txn *t)
{
	struct purge_job *j = arg;
	struct store_device d = {0};
	int rc = store_device_get(t, j->hub->name, j->id, &d);
	store_device_clear(&d);
	if (rc != 0)
		return rc;
	rc = store_c2d_list(t, j->hub->name, j->id, 0, C2D_MAX_QUEUE * 2, purge_each, j);
	for (unsigned i = 0; rc >= 0 && i < j->n; i++)
		rc = finish(t, j->hub->name, j->id, j->seqs[i], j->msgs[i], FB_PURGED);
	return rc < 0 ? rc : 0;
}

static void purge_done(void *arg, int rc)
{
	struct purge_job *j = arg;
	if (rc != 0) {
		rest__respond_store_error(j->ex, rc, j->id, true);
	} else {
		j->hub->c2d.purged += j->n;
		char body[400];
		snprintf(body, sizeof body,
			 "{\"totalMessagesPurged\":%u,\"deviceId\":\"%s\",\"moduleId\":null}", j->n,
			 j->id);
		http_respond_json(j->ex, 200, NULL, body);
	}
	for (unsigned i = 0; i < j->n; i++)
		json_decref(j->msgs[i]);
	free(j);
}

void hub__c2d_purge(struct route_args *a)
{
	struct purge_job *j = xcalloc(1, sizeof *j);
	j->ex = a->ex;
	j->hub = a->hub;
	memcpy(j->id, a->id, sizeof j->id);
	store_submit_keyed(a->hub->store, a->id, purge_work, purge_done, j, 64);
}

/* ---- feedback (GET /fleethub/feedback?after=N) ---- */

struct fb_read {
	struct http_exchange *ex;
	struct hub *hub;
	int64_t after;
	json_t *arr;
};

static int fb_each(void *arg, int64_t seq, const char *json)
{
	struct fb_read *r = arg;
	json_t *o = json_loads(json, 0, NULL);
	if (o) {
		json_object_set_new(o, "sequenceNumber", json_integer(seq));
		json_array_append_new(r->arr, o);
	}
	return 0;
}

static int fb_work(void *arg, struct store_txn *t)
{
	struct fb_read *r = arg;
	return store_feedback_list(t, r->hub->name, r->after, 1000, fb_each, r);
}

static void fb_done(void *arg, int rc)
{
	struct fb_read *r = arg;
	if (rc != 0) {
		rest__respond_store_error(r->ex, rc, "", false);
	} else {
		char *text = json_dumps(r->arr, JSON_COMPACT);
		http_respond_json(r->ex, 200, NULL, text);
		free(text);
	}
	json_decref(r->arr);
	free(r);
}

void hub__c2d_feedback(struct route_args *a)
{
	char after[24] = "0";
	http_query_param(a->ex->req->query, "after", after, sizeof after);
	struct fb_read *r = xcalloc(1, sizeof *r);
	r->ex = a->ex;
	r->hub = a->hub;
	r->after = strtoll(after, NULL, 10);
	r->arr = json_array();
	store_read(a->hub->store, fb_work, fb_done, r);
}

/* ---- device HTTPS: receive, complete, reject, abandon ---- */

struct http_job {
	struct http_exchange *ex;
	struct hub *hub;
	char id[REGISTRY_ID_MAX + 1];
	char lock[40];
	int how; /* settle: 0 complete, 1 reject, 2 abandon */
	/* receive: what it locked */
	int64_t seq;
	json_t *m;
	uint8_t *body;
	size_t n;
	/* the messages of the device, read in work */
	struct {
		int64_t seq;
		json_t *m;
		uint8_t *body;
		size_t n;
	} rows[C2D_MAX_QUEUE * 2];
	unsigned nrows;
	unsigned expired, dead;
	int64_t queued; /* receive: the queue's length, as a read found it */
};

static int http_each(void *arg, const struct store_c2d *c)
{
	struct http_job *j = arg;
	if (j->nrows == sizeof j->rows / sizeof j->rows[0])
		return 1;
	json_t *m = json_loads(c->json, 0, NULL);
	if (!m)
		return 0;
	j->rows[j->nrows].seq = c->seq;
	j->rows[j->nrows].m = m;
	j->rows[j->nrows].body = xmalloc(c->body_len + 1);
	if (c->body_len)
		memcpy(j->rows[j->nrows].body, c->body, c->body_len);
	j->rows[j->nrows].n = c->body_len;
	j->nrows++;
	return 0;
}

/* Reads the device's whole queue into j->rows. */
static int load_queue(struct store_txn *t, struct http_job *j)
{
	int rc = store_c2d_list(t, j->hub->name, j->id, 0, C2D_MAX_QUEUE * 2, http_each, j);
	return rc < 0 ? rc : 0;
}

static struct http_job *http_job_new(struct hub *h, struct http_exchange *ex, const char *id)
{
	struct http_job *j = xcalloc(1, sizeof *j);
	j->ex = ex;
	j->hub = h;
	snprintf(j->id, sizeof j->id, "%s", id);
	return j;
}

static int update(struct store_txn *t, struct http_job *j, int64_t seq, json_t *m)
{
	char *text = json_dumps(m, JSON_COMPACT);
	int rc = store_c2d_update(t, j->hub->name, j->id, seq, text);
	free(text);
	return rc;
}

static int receive_work(void *arg, struct store_txn *t)
{
	struct http_job *j = arg;
	int rc = load_queue(t, j);
	if (rc != 0)
		return rc;
	int64_t now = clock_now_ms();
	for (unsigned i = 0; i < j->nrows; i++) {
		json_t *m = j->rows[i].m;
		int64_t seq = j->rows[i].seq;
		if (num(m, "expiryMs") <= now) {
			j->expired++;
			if ((rc = finish(t, j->hub->name, j->id, seq, m, FB_EXPIRED)) != 0)
				return rc;
			continue;
		}
		if (num(m, "lockedUntilMs") > now)
			continue; /* locked by an earlier receive */
		int64_t count = num(m, "deliveryCount");
		if (count >= C2D_MAX_DELIVERIES) {
			j->dead++;
			if ((rc = finish(t, j->hub->name, j->id, seq, m, FB_DEAD)) != 0)
				return rc;
			continue;
		}
		char lock[37];
		crypto_uuid(lock);
		json_object_set_new(m, "lockToken", json_string(lock));
		json_object_set_new(m, "lockedUntilMs", json_integer(now + C2D_LOCK_MS));
		json_object_set_new(m, "deliveryCount", json_integer(count + 1));
		if ((rc = update(t, j, seq, m)) != 0)
			return rc;
		j->seq = seq;
		j->m = json_incref(m);
		j->body = j->rows[i].body;
		j->rows[i].body = NULL;
		j->n = j->rows[i].n;
		return 0;
	}
	return 0;
}

static void http_job_free(struct http_job *j)
{
	for (unsigned i = 0; i < j->nrows; i++) {
		json_decref(j->rows[i].m);
		free(j->rows[i].body);
	}
	json_decref(j->m);
	free(j->body);
	free(j);
}

static void receive_done(void *arg, int rc)
{
	struct http_job *j = arg;
	j->hub->c2d.expired += j->expired;
	j->hub->c2d.dead += j->dead;
	if (rc != 0) {
		rest__respond_store_error(j->ex, rc, j->id, true);
	} else if (!j->m) {
		http_respond(j->ex, 204, NULL, NULL, 0);
	} else {
		/* Headers as decisions.md 16 lists them; the ETag is the lock
		 * token in quotes (the SDK strips the first and last character). */
		j->hub->c2d.delivered++;
		json_t *m = j->m;
		struct buf h = BUF_INIT;
		const char *v[64];
		size_t k = 0;
		char etag[48], exp[32], enq[32], count[24];
		snprintf(etag, sizeof etag, "\"%s\"", json_string_value(json_object_get(m, "lockToken")));
		clock_iso8601(num(m, "expiryMs"), exp);
		clock_iso8601(num(m, "enqueuedMs"), enq);
		snprintf(count, sizeof count, "%lld", (long long)num(m, "deliveryCount"));
		v[k++] = "ETag";
		v[k++] = etag;
		v[k++] = "iothub-messageid";
		v[k++] = json_string_value(json_object_get(m, "messageId"));
		v[k++] = "iothub-to";
		v[k++] = json_string_value(json_object_get(m, "to"));
		v[k++] = "iothub-expiry";
		v[k++] = exp;
		v[k++] = "iothub-deliverycount";
		v[k++] = count;
		v[k++] = "iothub-enqueuedtime";
		v[k++] = enq;
		static const struct {
			const char *key, *header;
		} opt[] = {{"correlationId", "iothub-correlationid"},
			   {"userId", "iothub-userid"},
			   {"contentType", "iothub-contenttype"},
			   {"contentEncoding", "iothub-contentencoding"}};
		for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++)
			if (json_is_string(json_object_get(m, opt[i].key))) {
				v[k++] = opt[i].header;
				v[k++] = json_string_value(json_object_get(m, opt[i].key));
			}
		/* Application properties: "iothub-app-<name>" headers; names and
		 * values that cannot be header text are left out. */
		const char *name;
		json_t *val;
		size_t names_at[24], nn = 0;
		json_object_foreach(json_object_get(m, "properties"), name, val)
		{
			const char *s = json_string_value(val);
			if (!s || k + 2 >= sizeof v / sizeof v[0] - 1 || nn == 24)
				break;
			bool ok = true;
			for (const char *p = name; *p && ok; p++)
				ok = (*p > ' ' && *p < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", *p));
			for (const char *p = s; *p && ok; p++)
				ok = (unsigned char)*p >= ' ' && *p != 0x7f;
			if (!ok)
				continue;
			names_at[nn++] = h.len;
			buf_printf(&h, "iothub-app-%s", name);
			buf_appendc(&h, '\0');
			v[k++] = NULL; /* filled below, once h stops moving */
			v[k++] = s;
		}
		size_t at = k - 2 * nn;
		for (size_t i = 0; i < nn; i++)
			v[at + 2 * i] = h.data + names_at[i];
		v[k++] = "Content-Type";
		v[k++] = json_is_string(json_object_get(m, "contentType"))
			     ? json_string_value(json_object_get(m, "contentType"))
			     : "application/octet-stream";
		v[k] = NULL;
		http_respond(j->ex, 200, v, (const char *)j->body, j->n);
		buf_free(&h);
	}
	http_job_free(j);
}

/* A poll of an empty queue (most of an HTTPS device's polls) is a read;
 * only a queue with messages takes a write job (it locks one). */
static int queued_work(void *arg, struct store_txn *t)
{
	struct http_job *j = arg;
	int64_t n = 0;
	int rc = store_c2d_count(t, j->hub->name, j->id, &n);
	j->queued = n;
	return rc;
}

static void queued_done(void *arg, int rc)
{
	struct http_job *j = arg;
	if (rc != 0 || j->queued == 0) {
		receive_done(j, rc);
		return;
	}
	store_submit_keyed(j->hub->store, j->id, receive_work, receive_done, j, 64);
}

void hub__c2d_receive(struct hub *h, struct http_exchange *ex, const char *device_id)
{
	struct http_job *j = http_job_new(h, ex, device_id);
	store_read(h->store, queued_work, queued_done, j);
}

static int settle_work(void *arg, struct store_txn *t)
{
	struct http_job *j = arg;
	int rc = load_queue(t, j);
	if (rc != 0)
		return rc;
	int64_t now = clock_now_ms();
	for (unsigned i = 0; i < j->nrows; i++) {
		json_t *m = j->rows[i].m;
		const char *lock = json_string_value(json_object_get(m, "lockToken"));
		if (!lock || strcmp(lock, j->lock) != 0 || num(m, "lockedUntilMs") <= now)
			continue;
		int64_t seq = j->rows[i].seq;
		if (j->how == 0)
			return finish(t, j->hub->name, j->id, seq, m, FB_SUCCESS);
		if (j->how == 1)
			return finish(t, j->hub->name, j->id, seq, m, FB_REJECTED);
		json_object_set_new(m, "lockedUntilMs", json_integer(0));
		json_object_del(m, "lockToken");
		return update(t, j, seq, m);
	}
	return FH_EPRECOND;
}

static void settle_done(void *arg, int rc)
{
	struct http_job *j = arg;
	if (rc == FH_EPRECOND) {
		rest__respond_error(j->ex, 412, "PreconditionFailed", 412002,
				    "no message of device %s holds the lock %s: it was settled, or "
				    "its lock ran out",
				    j->id, j->lock);
	} else if (rc != 0) {
		rest__respond_store_error(j->ex, rc, j->id, true);
	} else {
		if (j->how == 0)
			j->hub->c2d.completed++;
		else if (j->how == 1)
			j->hub->c2d.rejected++;
		http_respond(j->ex, 204, NULL, NULL, 0);
		if (j->how == 2)
			hub_c2d_wake(j->hub, j->id);
	}
	http_job_free(j);
}

void hub__c2d_settle(struct hub *h, struct http_exchange *ex, const char *device_id,
		     const char *lock, int how)
{
	struct http_job *j = http_job_new(h, ex, device_id);
	snprintf(j->lock, sizeof j->lock, "%s", lock);
	j->how = how;
	store_submit_keyed(h->store, device_id, settle_work, settle_done, j, 64);
}

/* ---- expiry ---- */

struct sweep_row {
	char *hub, *id;
	int64_t seq;
	json_t *m;
};

struct sweep_job {
	struct sweep_row rows[SWEEP_LIMIT];
	unsigned n;
	int64_t now;
};

static int sweep_each(void *arg, const char *hub, const char *id, const struct store_c2d *c)
{
	struct sweep_job *j = arg;
	struct sweep_row *r = &j->rows[j->n++];
	r->hub = xstrdup(hub);
	r->id = xstrdup(id);
	r->seq = c->seq;
	r->m = json_loads(c->json, 0, NULL);
	return 0;
}

static int sweep_work(void *arg, struct store_txn *t)
{
	struct sweep_job *j = arg;
	int rc = store_c2d_expired(t, j->now, SWEEP_LIMIT, sweep_each, j);
	for (unsigned i = 0; rc == 0 && i < j->n; i++) {
		struct sweep_row *r = &j->rows[i];
		rc = finish(t, r->hub, r->id, r->seq, r->m, FB_EXPIRED);
		if (rc == FH_ENOTFOUND)
			rc = 0;
	}
	return rc;
}

static void sweep_done(void *arg, int rc)
{
	struct sweep_job *j = arg;
	if (rc != 0)
		log_at(LOG_WARN, "c2d: expiring messages: %s", fh_strerror(rc));
	else if (j->n)
		log_at(LOG_INFO, "c2d: %u expired cloud-to-device messages deleted", j->n);
	for (unsigned i = 0; i < j->n; i++) {
		free(j->rows[i].hub);
		free(j->rows[i].id);
		json_decref(j->rows[i].m);
	}
	free(j);
}

void hub_c2d_sweep(struct store *s)
{
	struct sweep_job *j = xcalloc(1, sizeof *j);
	j->now = clock_now_ms();
	store_submit(s, sweep_work, sweep_done, j);
}

/* ---- feedback retention ---- */

struct fb_trim {
	char hub[256];
};

static int fb_trim_work(void *arg, struct store_txn *t)
{
	struct fb_trim *j = arg;
	return store_feedback_trim(t, j->hub, clock_now_ms() - FEEDBACK_KEEP_MS, FEEDBACK_MAX,
				   10000);
}

static void fb_trim_done(void *arg, int rc)
{
	struct fb_trim *j = arg;
	if (rc != 0)
		log_at(LOG_WARN, "hub %s: feedback retention: %s", j->hub, fh_strerror(rc));
	free(j);
}

void hub__c2d_trim_feedback(struct hub *h)
{
	struct fb_trim *j = xcalloc(1, sizeof *j);
	snprintf(j->hub, sizeof j->hub, "%s", h->name);
	store_submit(h->store, fb_trim_work, fb_trim_done, j);
}
