/* Direct methods (see methods.h). */
#include "hub/methods.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "core/cluster.h"
#include "hub/hub.h"
#include "hub/rest_internal.h"

/* How long a call for a device connected to no node here waits for the
 * node that holds it to say it delivered the call. */
#define REPLY_MS 2000

struct method_call {
	struct hub *hub;
	struct method_call *prev, *next; /* hub->methods.all */
	char rid[24];                    /* its number here, as the device sees it */
	char device[REGISTRY_ID_MAX + 1];
	char name[METHOD_NAME_MAX + 1];
	char *payload;                   /* JSON text */
	struct http_exchange *ex;        /* the caller here; NULL: a remote call */
	char origin[CLUSTER_NODE_MAX + 1]; /* remote: the caller's node ... */
	int64_t origin_n;                  /* ... and the call's number there */
	int64_t connect_deadline, deadline; /* ms */
	bool delivered, remote_delivered;
	struct dev_session *session;     /* delivered to */
	uv_timer_t timer;
};

void hub_methods_init(struct hub *h)
{
	map_init(&h->methods.by_rid);
	h->methods.next = 1;
}

/* ---- messages to other nodes ---- */

struct post_job {
	struct cluster_msg m;
	char *text;
};

static int post_work(void *arg, struct store_txn *t)
{
	struct post_job *j = arg;
	j->m.text = j->text;
	return store_post(t, &j->m);
}

static void post_done(void *arg, int rc)
{
	struct post_job *j = arg;
	if (rc != 0)
		log_at(LOG_WARN, "hub %s: a method message to other nodes was not sent: %s",
		       j->m.scope, fh_strerror(rc));
	free(j->text);
	free(j);
}

/* Posts kind about device to node `to` ("" = all), text owned by the job. */
static void post(struct hub *h, enum cluster_kind kind, const char *to, const char *device,
		 int change, int64_t n, char *text)
{
	struct post_job *j = xcalloc(1, sizeof *j);
	cluster_msg_set(&j->m, kind, h->name, device, change, n, NULL);
	snprintf(j->m.to, sizeof j->m.to, "%s", to);
	j->text = text;
	store_submit(h->store, post_work, post_done, j);
}

/* Posts a refusal of call n (http, name, code, msg) back to its node. */
static void post_refusal(struct hub *h, const char *origin, const char *device, int64_t n,
			 int http, const char *name, int code, const char *msg)
{
	json_t *o = json_pack("{s:i, s:s, s:i, s:s}", "http", http, "name", name, "code", code,
			      "message", msg);
	post(h, CLUSTER_METHOD_RESULT, origin, device, 0, n, json_dumps(o, JSON_COMPACT));
	json_decref(o);
}

/* ---- a call's end ---- */

static void call_freed(uv_handle_t *t)
{
	struct method_call *c = t->data;
	free(c->payload);
	free(c);
}

static void call_free(struct method_call *c)
{
	struct hub_methods *m = &c->hub->methods;
	if (map_get(&m->by_rid, c->rid) == c)
		map_remove(&m->by_rid, c->rid);
	if (c->prev)
		c->prev->next = c->next;
	else
		m->all = c->next;
	if (c->next)
		c->next->prev = c->prev;
	m->count--;
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, call_freed);
}

/* Tells the caller what became of the call (here: the HTTP answer; on
 * another node: a CLUSTER_METHOD_RESULT), then frees it. result is
 * {"status","payload"} for an answer, NULL for a refusal http/code/msg. */
static void call_end(struct method_call *c, const char *result, int http, const char *name,
		     int code, const char *msg)
{
	struct hub *h = c->hub;
	if (result)
		h->methods.answered++;
	else
		h->methods.failed++;
	if (c->ex) {
		if (result)
			http_respond_json(c->ex, 200, NULL, result);
		else
			rest__respond_error(c->ex, http, name, code, "%s", msg);
		c->ex = NULL;
	} else if (c->origin[0] && result) {
		post(h, CLUSTER_METHOD_RESULT, c->origin, c->device, 0, c->origin_n,
		     xstrdup(result));
	} else if (c->origin[0]) {
		post_refusal(h, c->origin, c->device, c->origin_n, http, name, code, msg);
	}
	call_free(c);
}

static void not_online(struct method_call *c, const char *why)
{
	char msg[400];
	snprintf(msg, sizeof msg, "the device %s is not online: %s", c->device, why);
	call_end(c, NULL, 404, "DeviceNotOnline", 404103, msg);
}

static void on_deadline(uv_timer_t *t)
{
	struct method_call *c = t->data;
	int64_t now = clock_now_ms();
	if (!c->delivered && !c->remote_delivered && now >= c->connect_deadline) {
		if (!c->ex && c->origin[0]) {
			call_free(c); /* the caller's node answers 404 itself */
			return;
		}
		not_online(c, "it did not connect and subscribe to methods within the connect "
			      "timeout");
		return;
	}
	if (now >= c->deadline) {
		if (!c->ex) {
			call_free(c); /* the caller's node answers 504 itself */
			return;
		}
		call_end(c, NULL, 504, "GatewayTimeout", 504101,
			 "the device did not answer the method within its timeout");
		return;
	}
	uv_timer_start(t, on_deadline, (uint64_t)(c->deadline - now), 0);
}

/* ---- delivery ---- */

static bool takes_methods(const struct dev_session *s)
{
	return s && (s->subs.mask & (1u << HUB_SUB_METHODS));
}

static void deliver(struct method_call *c, struct dev_session *s)
{
	c->delivered = true;
	c->session = s;
	s->ops->method(s, c->name, c->rid, c->payload);
	if (!c->ex && c->origin[0]) /* the caller's node stops its connect deadline */
		post(c->hub, CLUSTER_METHOD_RESULT, c->origin, c->device, 0, c->origin_n,
		     xstrdup("{\"delivered\":true}"));
	uv_timer_start(&c->timer, on_deadline, (uint64_t)(c->deadline - clock_now_ms()), 0);
}

static struct method_call *call_new(struct hub *h, const char *device, const char *name,
				    const char *payload, int64_t connect_deadline,
				    int64_t deadline)
{
	struct method_call *c = xcalloc(1, sizeof *c);
	c->hub = h;
	snprintf(c->rid, sizeof c->rid, "%llu", (unsigned long long)h->methods.next++);
	snprintf(c->device, sizeof c->device, "%s", device);
	snprintf(c->name, sizeof c->name, "%s", name);
	c->payload = xstrdup(payload);
	c->connect_deadline = connect_deadline;
	c->deadline = deadline;
	uv_timer_init(h->loop, &c->timer);
	c->timer.data = c;
	c->next = h->methods.all;
	if (c->next)
		c->next->prev = c;
	h->methods.all = c;
	h->methods.count++;
	map_put(&h->methods.by_rid, c->rid, c);
	int64_t now = clock_now_ms();
	int64_t first = connect_deadline > now ? connect_deadline : deadline;
	uv_timer_start(&c->timer, on_deadline, (uint64_t)(first > now ? first - now : 0), 0);
	return c;
}

/* Posts the call to node `to` ("" = every node). */
static void post_call(struct method_call *c, const char *to)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:I}", "name", c->name, "payload", c->payload,
			      "connectUntil", (json_int_t)c->connect_deadline, "until",
			      (json_int_t)c->deadline);
	post(c->hub, CLUSTER_METHOD, to, c->device, 0, strtoll(c->rid, NULL, 10),
	     json_dumps(o, JSON_COMPACT));
	json_decref(o);
}

/* Whether another node holds the device (its stored connection row). */
struct elsewhere {
	struct hub *hub;
	char rid[24];
	char device[REGISTRY_ID_MAX + 1];
	struct store_connection conn;
};

static int elsewhere_work(void *arg, struct store_txn *t)
{
	struct elsewhere *e = arg;
	return store_connection_get(t, e->hub->name, e->device, &e->conn);
}

static void elsewhere_done(void *arg, int rc)
{
	struct elsewhere *e = arg;
	struct method_call *c = map_get(&e->hub->methods.by_rid, e->rid);
	if (c && !c->delivered && strcmp(c->device, e->device) == 0) {
		if (rc == 0 && e->conn.connected && e->conn.node[0] &&
		    strcmp(e->conn.node, store_node(e->hub->store)) != 0) {
			/* Ask the node its row names: it delivers, or says at
			 * once that it does not hold the device (its disconnect
			 * may not be stored yet). No word within REPLY_MS (that
			 * node is gone or cut off): not online. */
			post_call(c, e->conn.node);
			c->connect_deadline = clock_now_ms() + REPLY_MS;
			if (c->connect_deadline > c->deadline)
				c->connect_deadline = c->deadline;
			uv_timer_start(&c->timer, on_deadline, REPLY_MS, 0);
		} else {
			not_online(c, "it is not connected");
		}
	}
	free(e);
}

static void check_elsewhere(struct method_call *c)
{
	struct elsewhere *e = xcalloc(1, sizeof *e);
	e->hub = c->hub;
	memcpy(e->rid, c->rid, sizeof e->rid);
	memcpy(e->device, c->device, sizeof e->device);
	store_read(c->hub->store, elsewhere_work, elsewhere_done, e);
}

/* A call here, for a device that may be here or elsewhere. */
static void dispatch(struct method_call *c)
{
	struct dev_session *s = sessions_live(c->hub, c->device);
	bool shared = store_shared(c->hub->store);
	if (takes_methods(s)) {
		deliver(c, s);
	} else if (c->connect_deadline > clock_now_ms()) {
		/* It may connect or subscribe in time, here (hub__methods_ready)
		 * or on another node (which then says so). */
		if (shared && !s)
			post_call(c, "");
	} else if (s) {
		not_online(c, "it is connected but has not subscribed to methods");
	} else if (shared) {
		check_elsewhere(c);
	} else {
		not_online(c, "it is not connected");
	}
}

/* ---- the REST call ---- */

static bool name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > METHOD_NAME_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p <= ' ' || *p == 0x7f || strchr("/?#+%&", *p))
			return false;
	return true;
}

/* An integer member in lo..hi, or dflt when absent or null; false when it
 * is something else. */
static bool seconds(const json_t *body, const char *key, int64_t dflt, int64_t lo, int64_t hi,
		    int64_t *out)
{
	const json_t *v = json_object_get(body, key);
	if (!v || json_is_null(v)) {
		*out = dflt;
		return true;
	}
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return false;
	*out = json_integer_value(v);
	return true;
}

void hub__method_invoke(struct route_args *a)
{
	struct hub *h = a->hub;
	int64_t arrival = clock_now_ms();
	json_t *body = rest__body_object(a->ex);
	if (!body)
		return;
	const char *name = json_string_value(json_object_get(body, "methodName"));
	int64_t response_s, connect_s;
	const char *bad = NULL;
	if (!name || !name_ok(name))
		bad = "methodName must be 1-100 characters without spaces, control characters or "
		      "any of /?#+%&";
	else if (!seconds(body, "responseTimeoutInSeconds", 30, 5, 300, &response_s))
		bad = "responseTimeoutInSeconds must be 5..300";
	else if (!seconds(body, "connectTimeoutInSeconds", 0, 0, 300, &connect_s))
		bad = "connectTimeoutInSeconds must be 0..300";
	json_t *pl = json_object_get(body, "payload");
	char *payload = json_dumps(pl ? pl : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
	if (!bad && strlen(payload) > METHOD_PAYLOAD_MAX)
		bad = "the payload is over 128 KB";
	if (!bad && h->methods.count >= METHODS_MAX)
		bad = "";
	if (bad) {
		if (*bad)
			rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004, "%s", bad);
		else
			rest__respond_error(a->ex, 429, "ThrottlingException", 429001,
					    "%u method calls are in flight on this hub already; "
					    "retry later",
					    h->methods.count);
		free(payload);
		json_decref(body);
		return;
	}
	h->methods.invoked++;
	struct method_call *c =
	    call_new(h, a->id, name, payload, arrival + connect_s * 1000,
		     arrival + (connect_s + response_s) * 1000);
	c->ex = a->ex;
	free(payload);
	json_decref(body);
	log_at(LOG_DEBUG, "hub %s: method %s for device %s: call %s", h->name, c->name, c->device,
	       c->rid);
	dispatch(c);
}

/* ---- the device side ---- */

void hub__methods_ready(struct hub *h, struct dev_session *s)
{
	if (!takes_methods(s))
		return;
	int64_t now = clock_now_ms();
	for (struct method_call *c = h->methods.all, *next; c; c = next) {
		next = c->next;
		if (!c->delivered && strcmp(c->device, s->device_id) == 0 &&
		    c->connect_deadline > now)
			deliver(c, s);
	}
}

void hub__methods_answer(struct hub *h, struct dev_session *s, const char *rid, long status,
			 const uint8_t *payload, size_t n)
{
	struct method_call *c = map_get(&h->methods.by_rid, rid);
	if (!c || !c->delivered || c->session != s) {
		log_at(LOG_INFO, "hub %s: device %s answered method request %s, which it was not "
				 "sent or which ended; ignored",
		       h->name, s->device_id, rid);
		return;
	}
	json_t *p = NULL;
	if (n > METHOD_PAYLOAD_MAX) {
		call_end(c, NULL, 502, "BadDeviceResponse", 502001,
			 "the device's answer is over 128 KB");
		return;
	}
	if (n && !(p = json_loadb((const char *)payload, n, JSON_DECODE_ANY, NULL)))
		p = json_stringn((const char *)payload, n); /* not JSON: given as text */
	json_t *o = json_pack("{s:I, s:o}", "status", (json_int_t)status, "payload",
			      p ? p : json_null());
	char *text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	call_end(c, text, 200, NULL, 0, NULL);
	free(text);
}

void hub__methods_detached(struct hub *h, struct dev_session *s)
{
	for (struct method_call *c = h->methods.all, *next; c; c = next) {
		next = c->next;
		if (c->delivered && c->session == s)
			not_online(c, "it disconnected before it answered");
	}
}

void hub_methods_stop(struct hub *h)
{
	while (h->methods.all) {
		struct method_call *c = h->methods.all;
		if (c->ex)
			call_end(c, NULL, 503, "ServiceUnavailable", 503000,
				 "the server is stopping");
		else
			call_free(c);
	}
	map_free(&h->methods.by_rid);
}

/* ---- other nodes ---- */

static struct method_call *find_origin(struct hub *h, const char *origin, int64_t n)
{
	for (struct method_call *c = h->methods.all; c; c = c->next)
		if (!c->ex && strcmp(c->origin, origin) == 0 && c->origin_n == n)
			return c;
	return NULL;
}

void hub_methods_cluster(struct hub *h, const struct cluster_msg *m)
{
	json_t *o = m->text ? json_loads(m->text, 0, NULL) : NULL;
	if (!json_is_object(o)) {
		json_decref(o);
		return;
	}
	if (m->kind == CLUSTER_METHOD) {
		/* A call of node m->node: deliver it if the device is here (or
		 * comes here in time); say so when it is here and cannot, or
		 * when the call was for this node alone (the caller read that
		 * the device is here) and it is not. */
		const char *name = json_string_value(json_object_get(o, "name"));
		const char *payload = json_string_value(json_object_get(o, "payload"));
		int64_t cu = json_integer_value(json_object_get(o, "connectUntil"));
		int64_t until = json_integer_value(json_object_get(o, "until"));
		struct dev_session *s = sessions_live(h, m->id);
		if (name && payload && !find_origin(h, m->node, m->n) &&
		    (s || cu > clock_now_ms())) {
			struct method_call *c = call_new(h, m->id, name, payload, cu, until);
			snprintf(c->origin, sizeof c->origin, "%s", m->node);
			c->origin_n = m->n;
			if (takes_methods(s))
				deliver(c, s);
			else if (cu <= clock_now_ms())
				not_online(c, "it has not subscribed to methods");
		} else if (name && payload && m->to[0] && !s) {
			char msg[400];
			snprintf(msg, sizeof msg, "the device %s is not online: it is not connected",
				 m->id);
			post_refusal(h, m->node, m->id, m->n, 404, "DeviceNotOnline", 404103, msg);
		}
	} else if (m->kind == CLUSTER_METHOD_RESULT) {
		char rid[24];
		snprintf(rid, sizeof rid, "%lld", (long long)m->n);
		struct method_call *c = map_get(&h->methods.by_rid, rid);
		if (c && c->ex && strcmp(c->device, m->id) == 0) {
			if (json_object_get(o, "delivered")) {
				c->remote_delivered = true;
				uv_timer_start(&c->timer, on_deadline,
					       (uint64_t)(c->deadline > clock_now_ms()
							      ? c->deadline - clock_now_ms()
							      : 0),
					       0);
			} else if (json_object_get(o, "status")) {
				char *text = json_dumps(o, JSON_COMPACT);
				call_end(c, text, 200, NULL, 0, NULL);
				free(text);
			} else {
				const char *msg = json_string_value(json_object_get(o, "message"));
				const char *nm = json_string_value(json_object_get(o, "name"));
				call_end(c, NULL, (int)json_integer_value(json_object_get(o, "http")),
					 nm ? nm : "DeviceNotOnline",
					 (int)json_integer_value(json_object_get(o, "code")),
					 msg ? msg : "the device is not online");
			}
		}
	}
	json_decref(o);
}
