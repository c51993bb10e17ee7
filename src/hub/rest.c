/* The hub's service REST API (protocol.md §6, as npm azure-iothub uses it)
 * and the MQTT-over-WebSocket upgrade on the same HTTPS listener.
 *
 * One table row per operation: method, path pattern, handler, the policy
 * right it needs, whether it writes. The dispatcher authenticates, checks
 * the right and, for a write, that the store's write backlog has room
 * (else 429 ThrottleBacklogLimitExceeded with Retry-After), once, so
 * handlers never re-implement policy. Changes go through the store writer
 * (counted in the backlog with their body's size) and are answered from the
 * job's completion, after the commit. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "core/cluster.h"
#include "core/registry.h"
#include "core/twin.h"
#include "internal.h"
#include "rest_internal.h"

#define LIST_MAX 1000


typedef void (*route_fn)(struct route_args *a);

struct route {
	enum http_verb verb;
	const char *pattern; /* "/devices/{id}": literal segments compared case-insensitively */
	route_fn fn;
	unsigned rights; /* any of these bits is enough */
	bool writes;     /* queues a store write: admitted only under the backlog bound */
};

/* ---- answers ------------------------------------------------------------ */

/* The error body the SDKs parse; retry_after > 0 adds Retry-After. */
static void send_error(struct http_exchange *ex, int status, const char *name, int code,
		       const char *msg, unsigned retry_after)
{
	char azure_msg[600], retry[16];
	snprintf(azure_msg, sizeof azure_msg, "ErrorCode:%s;%s", name, msg);
	snprintf(retry, sizeof retry, "%u", retry_after);
	json_t *o = json_pack("{s:s,s:s,s:i,s:s}", "Message", azure_msg, "ExceptionMessage", "",
			      "errorCode", code, "message", msg);
	char *body = json_dumps(o, JSON_COMPACT);
	const char *headers[] = {"iothub-errorcode", name, retry_after ? "Retry-After" : NULL,
				 retry, NULL};
	http_respond_json(ex, status, headers, body);
	free(body);
	json_decref(o);
}

void rest__respond_error(struct http_exchange *ex, int status, const char *name, int code,
			  const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	send_error(ex, status, name, code, msg, 0);
}

void hub_http_refuse(struct http_exchange *ex, int status, const char *name, int code,
		     const char *msg)
{
	send_error(ex, status, name, code, msg, 0);
}

/* 429 for a write while the store's backlog is full: the service SDKs map
 * 429 to ThrottlingError and retry; Retry-After says when. */
static void respond_throttled(struct http_exchange *ex)
{
	send_error(ex, 429, "ThrottleBacklogLimitExceeded", 429002,
		   "too many writes are waiting for the store; retry after Retry-After seconds",
		   1);
}

void rest__respond_scans_throttled(struct http_exchange *ex)
{
	send_error(ex, 429, "ThrottlingException", 429001,
		   "too many queries and listings are waiting for the store; retry after "
		   "Retry-After seconds",
		   1);
}

static void respond_json(struct http_exchange *ex, int status, json_t *o)
{
	char *body = json_dumps(o, JSON_COMPACT);
	http_respond_json(ex, status, NULL, body);
	free(body);
}

/* 404 for a missing device; otherwise 503 saying why: a write the store
 * refused (full or failing storage) or a read that failed. */
void rest__respond_store_error(struct http_exchange *ex, int rc, const char *id, bool write)
{
	if (rc == FH_ENOTFOUND)
		rest__respond_error(ex, 404, "DeviceNotFound", 404001, "device '%s' not found", id);
	else if (write)
		rest__respond_error(ex, 503, "ServiceUnavailable", 503001, "%s", store_write_error(rc));
	else
		rest__respond_error(ex, 503, "ServiceUnavailable", 503001,
			      "the store could not be read (%s); try again", fh_strerror(rc));
}

/* ---- rendering ----------------------------------------------------------- */

/* The device document with its live connection state, or (stored, when
 * not NULL and the device is not connected here) the times of its stored
 * connection row: when it disconnected, and its last activity. */
static json_t *render_device_stored(struct hub *h, const char *id, const json_t *identity,
				    int64_t etag, const struct store_connection *stored)
{
	int64_t since = 0, last = 0;
	bool on = hub_device_connected(h, id, &since, &last);
	if (!on && stored) {
		since = stored->updated_ms;
		last = stored->last_activity_ms;
		/* Several nodes: the device may be connected to another one. */
		on = stored->connected && store_shared(h->store);
	}
	char since_iso[32], last_iso[32];
	if (since > 0)
		clock_iso8601(since, since_iso);
	if (last > 0)
		clock_iso8601(last, last_iso);
	return registry_render(identity, etag, on, since > 0 ? since_iso : NULL,
			       last > 0 ? last_iso : NULL);
}

static json_t *render_device(struct hub *h, const char *id, const json_t *identity,
			     int64_t etag)
{
	return render_device_stored(h, id, identity, etag, NULL);
}

static json_t *render_twin(struct hub *h, const char *id, const json_t *identity, int64_t etag,
			   const struct store_twin *tw)
{
	json_t *dev = render_device(h, id, identity, etag);
	json_t *o = json_object();
	json_object_set_new(o, "deviceId", json_string(id));
	json_object_set(o, "deviceEtag", json_object_get(dev, "etag"));
	static const char *copy[] = {"status", "statusReason", "statusUpdatedTime",
				     "connectionState", "lastActivityTime",
				     "cloudToDeviceMessageCount", "capabilities"};
	for (size_t i = 0; i < sizeof copy / sizeof copy[0]; i++) {
		json_t *v = json_object_get(dev, copy[i]);
		if (v)
			json_object_set(o, strcmp(copy[i], "statusUpdatedTime") == 0
						   ? "statusUpdateTime"
						   : copy[i],
					v);
	}
	json_t *auth = json_object_get(dev, "authentication");
	json_t *type = auth ? json_object_get(auth, "type") : NULL;
	json_object_set_new(o, "authenticationType",
			    json_string(json_is_string(type) ? json_string_value(type) : "sas"));
	json_t *thumbs = auth ? json_object_get(auth, "x509Thumbprint") : NULL;
	if (thumbs)
		json_object_set(o, "x509Thumbprint", thumbs);
	else
		json_object_set_new(o, "x509Thumbprint",
				    json_pack("{s:n,s:n}", "primaryThumbprint",
					      "secondaryThumbprint"));
	twin_render_into(o, tw);
	json_decref(dev);
	return o;
}

/* The REST twin document spliced from a store view, appended to b: the
 * identity members it shows (as render_twin takes them from
 * render_device), then the twin, with the view's connection state. Pure,
 * so a worker may call it. */
void rest__render_twin_view(struct buf *b, const char *id, const struct store_twin_view *v)
{
	char etag[13], last_iso[32] = "0001-01-01T00:00:00Z", count[24];
	snprintf(count, sizeof count, "%lld", (long long)v->c2d_count);
	if (v->last_activity_ms > 0)
		clock_iso8601(v->last_activity_ms, last_iso);
	twin_etag(v->device_etag, etag);
	buf_reserve(b, 512 + strlen(v->twin.desired) + strlen(v->twin.reported) +
			       strlen(v->twin.tags) +
			       (v->meta_desired ? strlen(v->meta_desired) : 0) +
			       (v->meta_reported ? strlen(v->meta_reported) : 0));
	/* id passed registry_id_valid: no character of it needs escaping. The
	 * members are appended piece by piece: a query renders thousands of
	 * these, and printf's %s costs more than the copy. */
	const char *const parts[] = {
	    "{\"deviceId\":\"", id, "\",\"deviceEtag\":\"", etag, "\",\"status\":",
	    v->status ? v->status : "\"enabled\"", ",\"statusReason\":",
	    v->status_reason ? v->status_reason : "null", ",\"statusUpdateTime\":",
	    v->status_updated_time ? v->status_updated_time : "\"0001-01-01T00:00:00Z\"",
	    ",\"connectionState\":\"", v->connected ? "Connected" : "Disconnected",
	    "\",\"lastActivityTime\":\"", last_iso, "\",\"cloudToDeviceMessageCount\":", count,
	    ",\"capabilities\":",
	    v->capabilities ? v->capabilities : "{\"iotEdge\":false}", ",\"authenticationType\":",
	    v->auth_type && v->auth_type[0] == '"' ? v->auth_type : "\"sas\"", ",\"x509Thumbprint\":",
	    v->x509_thumbprint ? v->x509_thumbprint
			       : "{\"primaryThumbprint\":null,\"secondaryThumbprint\":null}",
	    ","};
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
		buf_appends(b, parts[i]);
	twin_render_view(b, v);
	buf_appendc(b, '}');
}

/* rest__render_twin_view with the device's live connection state (the
 * stored one lags it by a commit): on the loop. With several nodes, a
 * device not connected here is as its stored row says (it may be
 * connected to another node). */
static void render_twin_view_live(struct hub *h, struct buf *b, const char *id,
				  struct store_twin_view *v)
{
	int64_t since = 0, last = 0;
	if (hub_device_connected(h, id, &since, &last)) {
		v->connected = true;
		v->last_activity_ms = last;
	} else if (!store_shared(h->store)) {
		v->connected = false;
	}
	rest__render_twin_view(b, id, v);
}

static void respond_twin_view(struct hub *h, struct http_exchange *ex, const char *id,
			      struct store_twin_view *v)
{
	struct buf b = BUF_INIT;
	render_twin_view_live(h, &b, id, v);
	http_respond_json(ex, 200, NULL, b.data);
	buf_free(&b);
}

/* ---- If-Match ----------------------------------------------------------- */

/* Copies the If-Match value without surrounding quotes; "" when absent. */
void rest__if_match(const struct http_request *req, char out[128])
{
	const char *v = http_request_header(req, "If-Match");
	out[0] = '\0';
	if (!v)
		return;
	size_t n = strlen(v);
	while (n && (*v == ' ' || *v == '"')) {
		v++;
		n--;
	}
	while (n && (v[n - 1] == ' ' || v[n - 1] == '"'))
		n--;
	if (n >= 128)
		n = 127;
	memcpy(out, v, n);
	out[n] = '\0';
}

/* The twin version an If-Match value names: -1 for any ("" or "*"); 0,
 * which no twin has (versions start at 1), for a value that is no etag. */
static int64_t if_match_version(const char *if_match)
{
	if (!if_match[0] || strcmp(if_match, "*") == 0)
		return -1;
	uint8_t b[9];
	size_t n = 0;
	char canon[13];
	if (strlen(if_match) != 12 || b64_decode(if_match, 12, b, &n) != 0 || n != 8)
		return 0;
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	if (v > INT64_MAX)
		return 0;
	twin_etag((int64_t)v, canon); /* etag_ok compares the text */
	return strcmp(canon, if_match) == 0 ? (int64_t)v : 0;
}

static bool etag_ok(const char *if_match, int64_t current)
{
	char etag[13];
	if (!if_match[0] || strcmp(if_match, "*") == 0)
		return true;
	twin_etag(current, etag);
	return strcmp(if_match, etag) == 0;
}

/* ---- jobs ----------------------------------------------------------------- */

struct rest_job {
	struct hub *hub;
	struct http_exchange *ex;
	char id[REGISTRY_ID_MAX + 1];
	char if_match[128];
	char now[32];
	json_t *body;      /* request body (device identity or twin update) */
	/* results */
	int status;        /* HTTP status for an error decided in work */
	struct registry_error rerr;
	struct twin_error terr;
	json_t *identity;  /* identity after the change */
	int64_t etag;
	bool kick;         /* the device must reconnect (disabled, keys changed) */
	struct store_twin twin;
	json_t *notice;    /* desired notification */
	char *notice_text; /* ... as the device gets it (also told to the other nodes) */
};

static struct rest_job *job_new(struct route_args *a)
{
	struct rest_job *j = xcalloc(1, sizeof *j);
	j->hub = a->hub;
	j->ex = a->ex;
	snprintf(j->id, sizeof j->id, "%s", a->id);
	rest__if_match(a->ex->req, j->if_match);
	clock_iso8601(clock_now_ms(), j->now);
	return j;
}

static void job_free(struct rest_job *j)
{
	free(j->notice_text);
	json_decref(j->body);
	json_decref(j->identity);
	json_decref(j->notice);
	store_twin_clear(&j->twin);
	free(j);
}

/* Parses the request body as a JSON object; answers 400 and returns NULL
 * otherwise. */
json_t *rest__body_object(struct http_exchange *ex)
{
	json_error_t jerr;
	const struct buf *b = &ex->req->body;
	json_t *o = json_loadb(b->data ? b->data : "", b->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!o || !json_is_object(o)) {
		rest__respond_error(ex, 400, "ArgumentInvalid", 400004,
			      "the request body is not a JSON object: %s",
			      o ? "another JSON type" : jerr.text);
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *load_identity(struct store_txn *t, struct rest_job *j, int64_t *etag, int *rc)
{
	struct store_device d = {0};
	*rc = store_device_get(t, j->hub->name, j->id, &d);
	if (*rc != 0)
		return NULL;
	json_t *o = json_loads(d.json, 0, NULL);
	*etag = d.etag;
	store_device_clear(&d);
	if (!o)
		*rc = FH_EIO;
	return o;
}

/* PUT /devices/{id} */
#define KICK_WHY "identity disabled or its credentials changed"

static int device_put_work(void *arg, struct store_txn *t)
{
	struct rest_job *j = arg;
	int rc;
	int64_t etag = 0;
	json_t *old = load_identity(t, j, &etag, &rc);
	if (rc != 0 && rc != FH_ENOTFOUND)
		return rc;
	if (old && !j->if_match[0]) {
		json_decref(old);
		j->status = 409;
		return FH_EEXIST;
	}
	if (!old && j->if_match[0] && strcmp(j->if_match, "*") != 0) {
		j->status = 404;
		return FH_ENOTFOUND;
	}
	if (old && !etag_ok(j->if_match, etag)) {
		json_decref(old);
		j->status = 412;
		return FH_EPRECOND;
	}
	j->identity = registry_build_identity(j->id, j->body, old, j->now, &j->rerr);
	if (!j->identity) {
		json_decref(old);
		j->status = j->rerr.status;
		return FH_EINVAL;
	}
	if (old) {
		j->kick = registry_access_changed(old, j->identity);
	}
	char *text = json_dumps(j->identity, JSON_COMPACT);
	struct store_device d = {text, etag + 1};
	rc = store_device_put(t, j->hub->name, j->id, &d);
	free(text);
	j->etag = etag + 1;
	if (rc == FH_EEXIST)
		j->status = 409; /* another node created it meanwhile */
	if (rc == 0 && !old) {
		struct store_twin tw;
		twin_init_new(&tw, j->now);
		rc = store_twin_put(t, j->hub->name, j->id, &tw);
		store_twin_clear(&tw);
	}
	if (rc == 0 && j->kick)
		rc = hub_post_device(t, j->hub, j->id, DEVICE_ACCESS_CHANGED, KICK_WHY);
	json_decref(old);
	return rc;
}

static void device_put_done(void *arg, int rc)
{
	struct rest_job *j = arg;
	if (rc == 0) {
		if (j->kick)
			device_events_raise(j->hub->devices, j->hub->name, j->id,
					    DEVICE_ACCESS_CHANGED, KICK_WHY);
		json_t *o = render_device(j->hub, j->id, j->identity, j->etag);
		respond_json(j->ex, 200, o);
		json_decref(o);
	} else if (j->status == 409) {
		rest__respond_error(j->ex, 409, "DeviceAlreadyExists", 409001,
			      "device '%s' already exists", j->id);
	} else if (j->status == 404) {
		rest__respond_store_error(j->ex, FH_ENOTFOUND, j->id, true);
	} else if (j->status == 412) {
		rest__respond_error(j->ex, 412, "PreconditionFailed", 412002,
			      "the etag in If-Match does not match device '%s'", j->id);
	} else if (rc == FH_EINVAL) {
		int status = j->rerr.status ? j->rerr.status : 400;
		rest__respond_error(j->ex, status, j->rerr.code[0] ? j->rerr.code : "ArgumentInvalid",
			      status * 1000 + 4, "%s", j->rerr.message);
	} else {
		rest__respond_store_error(j->ex, rc, j->id, true);
	}
	job_free(j);
}

static void device_put(struct route_args *a)
{
	json_t *body = rest__body_object(a->ex);
	if (!body)
		return;
	struct rest_job *j = job_new(a);
	j->body = body;
	store_submit_keyed(a->hub->store, j->id, device_put_work, device_put_done, j,
			   a->ex->req->body.len);
}

/* DELETE /devices/{id} */
static int device_delete_work(void *arg, struct store_txn *t)
{
	struct rest_job *j = arg;
	int rc;
	int64_t etag = 0;
	json_t *old = load_identity(t, j, &etag, &rc);
	if (rc != 0)
		return rc;
	json_decref(old);
	if (!etag_ok(j->if_match, etag)) {
		j->status = 412;
		return FH_EPRECOND;
	}
	rc = store_device_delete(t, j->hub->name, j->id);
	return rc == 0 ? hub_post_device(t, j->hub, j->id, DEVICE_DELETED, "identity deleted") : rc;
}

static void device_delete_done(void *arg, int rc)
{
	struct rest_job *j = arg;
	if (rc == 0) {
		device_events_raise(j->hub->devices, j->hub->name, j->id, DEVICE_DELETED,
				    "identity deleted");
		http_respond(j->ex, 204, NULL, NULL, 0);
	} else if (rc == FH_EPRECOND) {
		rest__respond_error(j->ex, 412, "PreconditionFailed", 412002,
			      "the etag in If-Match does not match device '%s'", j->id);
	} else {
		rest__respond_store_error(j->ex, rc, j->id, true);
	}
	job_free(j);
}

static void device_delete(struct route_args *a)
{
	struct rest_job *j = job_new(a);
	store_submit_keyed(a->hub->store, j->id, device_delete_work, device_delete_done, j, 0);
}

/* GET /devices/{id} and GET /twins/{id}: one read through the store's
 * completion API (decisions.md 1); work touches only the job and the txn,
 * done renders (on the loop, where the live sessions are) and answers. */
struct read_job {
	struct hub *hub;
	struct http_exchange *ex;
	char hub_name[256];
	char id[REGISTRY_ID_MAX + 1];
	struct store_device dev;       /* device GET */
	struct store_connection conn;  /* device GET, when have_conn */
	bool have_conn;
	int64_t c2d_count;             /* device GET */
	struct store_twin_view view;   /* twin GET */
};

static struct read_job *read_job_new(struct route_args *a)
{
	struct read_job *r = xcalloc(1, sizeof *r);
	r->hub = a->hub;
	r->ex = a->ex;
	snprintf(r->hub_name, sizeof r->hub_name, "%s", a->hub->name);
	snprintf(r->id, sizeof r->id, "%s", a->id);
	return r;
}

static int device_read_work(void *arg, struct store_txn *t)
{
	struct read_job *r = arg;
	int rc = store_device_get(t, r->hub_name, r->id, &r->dev);
	if (rc == 0)
		r->have_conn = store_connection_get(t, r->hub_name, r->id, &r->conn) == 0;
	if (rc == 0)
		rc = store_c2d_count(t, r->hub_name, r->id, &r->c2d_count);
	return rc;
}

static void device_read_done(void *arg, int rc)
{
	struct read_job *r = arg;
	if (rc != 0) {
		rest__respond_store_error(r->ex, rc, r->id, false);
	} else {
		json_t *identity = json_loads(r->dev.json, 0, NULL);
		json_t *o = render_device_stored(r->hub, r->id, identity, r->dev.etag,
						 r->have_conn ? &r->conn : NULL);
		json_object_set_new(o, "cloudToDeviceMessageCount", json_integer(r->c2d_count));
		respond_json(r->ex, 200, o);
		json_decref(o);
		json_decref(identity);
	}
	store_device_clear(&r->dev);
	free(r);
}

static void device_get(struct route_args *a)
{
	store_read(a->hub->store, device_read_work, device_read_done, read_job_new(a));
}

/* GET /devices */
/* GET /devices: up to LIST_MAX identities read on a worker
 * (store_read_slow); rendered on the loop, where the live sessions are. */
struct list_job {
	struct http_exchange *ex;
	struct hub *hub;
	char hub_name[256];
	unsigned limit;
	json_t *rows; /* [[id, identity, etag, messages queued], ...] */
	struct store_txn *t; /* during list_work */
};

static int list_each(void *arg, const char *id, const struct store_device *d)
{
	struct list_job *j = arg;
	json_t *identity = json_loads(d->json, 0, NULL);
	int64_t queued = 0;
	int rc = store_c2d_count(j->t, j->hub_name, id, &queued);
	if (identity)
		json_array_append_new(j->rows, json_pack("[s,o,I,I]", id, identity,
							 (json_int_t)d->etag, (json_int_t)queued));
	return rc;
}

static int list_work(void *arg, struct store_txn *t)
{
	struct list_job *j = arg;
	j->t = t;
	return store_device_list(t, j->hub_name, "", j->limit, list_each, j);
}

static void list_done(void *arg, int rc)
{
	struct list_job *j = arg;
	if (rc != 0) {
		rest__respond_store_error(j->ex, rc, "", false);
	} else {
		json_t *arr = json_array();
		size_t i;
		json_t *row;
		json_array_foreach(j->rows, i, row) {
			json_t *d = render_device(j->hub, json_string_value(json_array_get(row, 0)),
						  json_array_get(row, 1),
						  json_integer_value(json_array_get(row, 2)));
			json_object_set(d, "cloudToDeviceMessageCount", json_array_get(row, 3));
			json_array_append_new(arr, d);
		}
		respond_json(j->ex, 200, arr);
		json_decref(arr);
	}
	json_decref(j->rows);
	free(j);
}

static void device_list(struct route_args *a)
{
	if (store_read_slow_waiting(a->hub->store) >= REST_MAX_SCANS) {
		rest__respond_scans_throttled(a->ex);
		return;
	}
	char top[16];
	unsigned limit = LIST_MAX;
	if (http_query_param(a->ex->req->query, "top", top, sizeof top)) {
		long v = strtol(top, NULL, 10);
		if (v > 0 && v < LIST_MAX)
			limit = (unsigned)v;
	}
	struct list_job *j = xcalloc(1, sizeof *j);
	j->ex = a->ex;
	j->hub = a->hub;
	snprintf(j->hub_name, sizeof j->hub_name, "%s", a->hub->name);
	j->limit = limit;
	j->rows = json_array();
	store_read_slow(a->hub->store, list_work, list_done, j);
}

/* GET /statistics/devices */
/* The counts read every device of the hub: on a worker (store_read_slow). */
struct stats_job {
	struct http_exchange *ex;
	char hub[256];
	int64_t total, enabled;
};

static int stats_work(void *arg, struct store_txn *t)
{
	struct stats_job *j = arg;
	return store_device_count(t, j->hub, &j->total, &j->enabled);
}

static void stats_done(void *arg, int rc)
{
	struct stats_job *j = arg;
	if (rc != 0) {
		rest__respond_store_error(j->ex, rc, "", false);
	} else {
		json_t *o = json_pack("{s:I,s:I,s:I}", "totalDeviceCount", (json_int_t)j->total,
				      "enabledDeviceCount", (json_int_t)j->enabled,
				      "disabledDeviceCount", (json_int_t)(j->total - j->enabled));
		respond_json(j->ex, 200, o);
		json_decref(o);
	}
	free(j);
}

static void device_stats(struct route_args *a)
{
	struct stats_job *j = xcalloc(1, sizeof *j);
	j->ex = a->ex;
	snprintf(j->hub, sizeof j->hub, "%s", a->hub->name);
	store_read_slow(a->hub->store, stats_work, stats_done, j);
}

/* GET /fleethub/nodes (fleethub's own): the nodes serving from this
 * store, from their records (STORE_NODE), each with "live" (its lease
 * holds, core/cluster.h). */
struct nodes_job {
	struct http_exchange *ex;
	int64_t now_ms;
	json_t *nodes;
};

static int node_each(void *arg, const char *id, const char *json)
{
	struct nodes_job *j = arg;
	json_t *o = json_loads(json, 0, NULL);
	if (json_is_object(o)) {
		json_object_set_new(o, "name", json_string(id));
		json_object_set_new(o, "live", json_boolean(cluster_node_live(json, j->now_ms)));
		json_array_append(j->nodes, o);
	}
	json_decref(o);
	return 0;
}

static int nodes_work(void *arg, struct store_txn *t)
{
	return store_doc_list(t, STORE_NODE, "", "", "", 10000, node_each, arg);
}

static void nodes_done(void *arg, int rc)
{
	struct nodes_job *j = arg;
	if (rc != 0)
		rest__respond_store_error(j->ex, rc, "", false);
	else
		respond_json(j->ex, 200, j->nodes);
	json_decref(j->nodes);
	free(j);
}

static void nodes_list(struct route_args *a)
{
	struct nodes_job *j = xcalloc(1, sizeof *j);
	j->ex = a->ex;
	j->now_ms = clock_now_ms();
	j->nodes = json_array();
	store_read(a->hub->store, nodes_work, nodes_done, j);
}

static int twin_read_work(void *arg, struct store_txn *t)
{
	struct read_job *r = arg;
	return store_twin_view_get(t, r->hub_name, r->id, &r->view);
}

static void twin_read_done(void *arg, int rc)
{
	struct read_job *r = arg;
	if (rc != 0)
		rest__respond_store_error(r->ex, rc, r->id, false);
	else
		respond_twin_view(r->hub, r->ex, r->id, &r->view);
	store_twin_view_clear(&r->view);
	free(r);
}

/* GET /twins/{id} */
static void twin_get(struct route_args *a)
{
	store_read(a->hub->store, twin_read_work, twin_read_done, read_job_new(a));
}

/* PATCH and PUT /twins/{id}: body {"tags":{..},"properties":{"desired":{..}}}. */
struct twin_job {
	struct rest_job base;
	bool replace;
	json_t *tags;    /* borrowed from base.body */
	json_t *desired; /* borrowed from base.body */
};

static int twin_update_work(void *arg, struct store_txn *t)
{
	struct twin_job *tj = arg;
	struct rest_job *j = &tj->base;
	int rc;
	j->identity = load_identity(t, j, &j->etag, &rc);
	if (rc != 0)
		return rc;
	rc = store_twin_get(t, j->hub->name, j->id, &j->twin);
	if (rc != 0)
		return rc;
	if (!etag_ok(j->if_match, j->twin.version)) {
		j->status = 412;
		return FH_EPRECOND;
	}
	/* twin_apply_service leaves the twin unchanged on failure. */
	rc = twin_apply_service(&j->twin, tj->tags, tj->desired, tj->replace, j->now,
				&j->hub->limits, &j->terr, &j->notice);
	if (rc != 0) {
		j->status = 400;
		return rc;
	}
	rc = store_twin_put(t, j->hub->name, j->id, &j->twin);
	if (rc == 0 && j->notice) {
		j->notice_text = json_dumps(j->notice, JSON_COMPACT);
		rc = hub_post_desired(t, j->hub, j->id, j->notice_text, j->twin.desired_version);
	}
	return rc;
}

/* The answer to a twin PUT or PATCH whose job failed with rc. */
static void twin_update_error(struct rest_job *j, int rc)
{
	if (rc == FH_EPRECOND)
		rest__respond_error(j->ex, 412, "PreconditionFailed", 412002,
			      "the etag in If-Match does not match the twin of device '%s'",
			      j->id);
	else if (rc == FH_EINVAL)
		rest__respond_error(j->ex, 400, j->terr.name, j->terr.code, "%s", j->terr.message);
	else
		rest__respond_store_error(j->ex, rc, j->id, true);
}

static void twin_update_done(void *arg, int rc)
{
	struct twin_job *tj = arg;
	struct rest_job *j = &tj->base;
	if (rc == 0) {
		if (j->notice_text)
			hub_notify_desired(j->hub, j->id, j->notice_text, j->twin.desired_version);
		json_t *o = render_twin(j->hub, j->id, j->identity, j->etag, &j->twin);
		respond_json(j->ex, 200, o);
		json_decref(o);
	} else {
		twin_update_error(j, rc);
	}
	job_free(j);
}

/* PATCH /twins/{id}: merged in place by the store (store_twin_patch_service:
 * json_patch of the sections, metadata by the two merge patches built here),
 * then the answer is read back in one statement (store_twin_view_get) and
 * spliced; no twin JSON is parsed or rebuilt. A result over a section's
 * size limit fails the job, whose savepoint rolls the change back. */
struct twin_patch_job {
	struct rest_job base;
	char *tags;    /* the tags patch as compact JSON text, or NULL */
	char *desired; /* the desired patch, or NULL */
	struct buf meta_clear;
	struct buf meta_set;
	int64_t if_version;
	struct store_twin_view view; /* the twin after the change */
};

static void twin_patch_free(struct twin_patch_job *pj)
{
	free(pj->tags);
	free(pj->desired);
	buf_free(&pj->meta_clear);
	buf_free(&pj->meta_set);
	store_twin_view_clear(&pj->view);
	job_free(&pj->base); /* frees pj: base is its first member */
}

static int twin_patch_work(void *arg, struct store_txn *t)
{
	struct twin_patch_job *pj = arg;
	struct rest_job *j = &pj->base;
	struct store_twin_service_patch p = {pj->tags, pj->desired, pj->meta_clear.data,
					     pj->meta_set.data, pj->if_version};
	int rc = store_twin_patch_service(t, j->hub->name, j->id, &p);
	if (rc == 0)
		rc = store_twin_view_get(t, j->hub->name, j->id, &pj->view);
	if (rc != 0)
		return rc;
	if ((pj->tags &&
	     twin_check_size(TWIN_TAGS, pj->view.tags_len, &j->hub->limits, &j->terr) != 0) ||
	    (pj->desired &&
	     twin_check_size(TWIN_DESIRED, pj->view.desired_len, &j->hub->limits, &j->terr) != 0)) {
		j->status = 400;
		return FH_EINVAL;
	}
	if (!pj->desired)
		return 0;
	j->notice_text = twin_render_notice(pj->desired, pj->view.twin.desired_version);
	return hub_post_desired(t, j->hub, j->id, j->notice_text, pj->view.twin.desired_version);
}

static void twin_patch_done(void *arg, int rc)
{
	struct twin_patch_job *pj = arg;
	struct rest_job *j = &pj->base;
	if (rc == 0) {
		if (j->notice_text)
			hub_notify_desired(j->hub, j->id, j->notice_text, pj->view.twin.desired_version);
		respond_twin_view(j->hub, j->ex, j->id, &pj->view);
	} else {
		twin_update_error(j, rc);
	}
	twin_patch_free(pj);
}

/* Takes body (validated; tags and desired borrowed from it, NULL when
 * absent). */
static void twin_patch_submit(struct route_args *a, json_t *body, json_t *tags, json_t *desired)
{
	struct twin_patch_job *pj = xcalloc(1, sizeof *pj);
	struct rest_job *j = job_new(a);
	pj->base = *j;
	free(j);
	pj->base.body = body;
	pj->tags = tags ? json_dumps(tags, JSON_COMPACT) : NULL;
	pj->desired = desired ? json_dumps(desired, JSON_COMPACT) : NULL;
	twin_service_meta_patches(tags, desired, pj->base.now, &pj->meta_clear, &pj->meta_set);
	pj->if_version = if_match_version(pj->base.if_match);
	store_submit_keyed(a->hub->store, pj->base.id, twin_patch_work, twin_patch_done, pj,
			   a->ex->req->body.len);
}

static void twin_update(struct route_args *a, bool replace)
{
	json_t *body = rest__body_object(a->ex);
	if (!body)
		return;
	json_t *tags = json_object_get(body, "tags");
	json_t *props = json_object_get(body, "properties");
	json_t *desired = props ? json_object_get(props, "desired") : NULL;
	const char *bad = NULL;
	if (tags && !json_is_object(tags) && !(json_is_null(tags) && !replace))
		bad = "tags must be a JSON object";
	else if (props && !json_is_object(props))
		bad = "properties must be a JSON object";
	else if (props && json_object_get(props, "reported"))
		bad = "properties.reported can only be changed by the device";
	else if (desired && !json_is_object(desired))
		bad = "properties.desired must be a JSON object";
	if (bad) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004, "%s", bad);
		json_decref(body);
		return;
	}
	if (json_is_null(tags))
		tags = NULL;
	struct twin_error terr;
	if ((tags && twin_check_patch(tags, TWIN_TAGS, replace, &a->hub->limits, &terr) != 0) ||
	    (desired &&
	     twin_check_patch(desired, TWIN_DESIRED, replace, &a->hub->limits, &terr) != 0)) {
		rest__respond_error(a->ex, 400, terr.name, terr.code, "%s", terr.message);
		json_decref(body);
		return;
	}
	if (!replace) {
		twin_patch_submit(a, body, tags, desired);
		return;
	}
	struct twin_job *tj = xcalloc(1, sizeof *tj);
	struct rest_job *j = job_new(a);
	tj->base = *j;
	free(j);
	tj->base.body = body;
	tj->replace = replace;
	tj->tags = tags;
	tj->desired = desired;
	if (replace) {
		/* A replaced twin gets exactly what the body has: absent
		 * sections become empty. */
		if (!tj->tags) {
			tj->tags = json_object();
			json_object_set_new(body, "$fh_tags", tj->tags);
		}
		if (!tj->desired) {
			tj->desired = json_object();
			json_object_set_new(body, "$fh_desired", tj->desired);
		}
	}
	store_submit_keyed(a->hub->store, tj->base.id, twin_update_work, twin_update_done, tj,
			   a->ex->req->body.len);
}

static void twin_patch(struct route_args *a)
{
	twin_update(a, false);
}

static void twin_put(struct route_args *a)
{
	twin_update(a, true);
}

/* ---- dispatch --------------------------------------------------------- */

static const struct route routes[] = {
	{HTTP_VERB_GET, "/devices", device_list, HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_GET, "/devices/{id}", device_get, HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_PUT, "/devices/{id}", device_put, HUB_RIGHT_REGISTRY_WRITE, true},
	{HTTP_VERB_DELETE, "/devices/{id}", device_delete, HUB_RIGHT_REGISTRY_WRITE, true},
	{HTTP_VERB_GET, "/statistics/devices", device_stats, HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_GET, "/fleethub/nodes", nodes_list, HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_GET, "/fleethub/events", hub__events_stream, HUB_RIGHT_SERVICE_CONNECT, false},
	{HTTP_VERB_GET, "/fleethub/events/groups/{id}", hub__events_group_get,
	 HUB_RIGHT_SERVICE_CONNECT, false},
	{HTTP_VERB_PUT, "/fleethub/events/groups/{id}", hub__events_group_put,
	 HUB_RIGHT_SERVICE_CONNECT, true},
	{HTTP_VERB_POST, "/devices/query", rest__twin_query, HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_GET, "/twins/{id}", twin_get,
	 HUB_RIGHT_SERVICE_CONNECT | HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_PATCH, "/twins/{id}", twin_patch, HUB_RIGHT_SERVICE_CONNECT, true},
	{HTTP_VERB_PUT, "/twins/{id}", twin_put, HUB_RIGHT_SERVICE_CONNECT, true},
	{HTTP_VERB_POST, "/twins/{id}/methods", hub__method_invoke, HUB_RIGHT_SERVICE_CONNECT,
	 false},
	{HTTP_VERB_POST, "/fleethub/devices/{id}/messages", hub__c2d_send, HUB_RIGHT_SERVICE_CONNECT,
	 true},
	{HTTP_VERB_DELETE, "/devices/{id}/commands", hub__c2d_purge, HUB_RIGHT_SERVICE_CONNECT, true},
	{HTTP_VERB_GET, "/fleethub/feedback", hub__c2d_feedback, HUB_RIGHT_SERVICE_CONNECT, false},
	{HTTP_VERB_GET, "/fleethub/stats", hub__stats,
	 HUB_RIGHT_SERVICE_CONNECT | HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_GET, "/certificates", rest__ca_list, HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_GET, "/certificates/{id}", rest__ca_get, HUB_RIGHT_REGISTRY_READ, false},
	{HTTP_VERB_PUT, "/certificates/{id}", rest__ca_put, HUB_RIGHT_REGISTRY_WRITE, true},
	{HTTP_VERB_DELETE, "/certificates/{id}", rest__ca_delete, HUB_RIGHT_REGISTRY_WRITE, true},
	{HTTP_VERB_POST, "/certificates/{id}/generateVerificationCode", rest__ca_code,
	 HUB_RIGHT_REGISTRY_WRITE, true},
	{HTTP_VERB_POST, "/certificates/{id}/verify", rest__ca_verify, HUB_RIGHT_REGISTRY_WRITE,
	 true},
};

/* Azure IoT Hub routes fleethub does not serve yet: their official clients
 * get 501 and a sentence naming the feature at once, instead of a 404 or
 * 405 that reads like a client bug or a missing device. A pattern segment
 * "*" is any one segment; a final "**" any rest, including none
 * (http_route_match); ANY_VERB
 * any method. Checked before the served routes, with the verb. Answered
 * before authentication, as a 404 would be: device routes carry device
 * tokens, and the answer tells nothing about the hub's data. */
#define ANY_VERB (-1)
static const struct unserved {
	int verb; /* enum http_verb, or ANY_VERB */
	const char *pattern;
	const char *feature;
} unserved[] = {
	{HTTP_VERB_POST, "/devices",
	 "bulk registry operations (Registry.addDevices, updateDevices, removeDevices)"},
	{ANY_VERB, "/devices/*/modules/**", "module identities"},
	{ANY_VERB, "/twins/*/modules/**", "module identities"},
	{ANY_VERB, "/configurations/**", "automatic device configurations"},
	{HTTP_VERB_POST, "/devices/*/applyConfigurationContent",
	 "configuration content (Registry.applyConfigurationContentOnDevice)"},
	{ANY_VERB, "/jobs/v2/**", "jobs (JobClient)"},
	{ANY_VERB, "/jobs/**", "import and export jobs"},
	{ANY_VERB, "/messages/servicebound/**", "cloud-to-device feedback"},
	{HTTP_VERB_POST, "/devices/*/files/**", "file uploads"},
	{HTTP_VERB_GET, "/statistics/service", "service statistics"},
	{ANY_VERB, "/digitaltwins/**", "digital twins (IoT Plug and Play)"},
};

static const struct unserved *find_unserved(enum http_verb verb, const char *path)
{
	for (size_t i = 0; i < sizeof unserved / sizeof unserved[0]; i++)
		if ((unserved[i].verb == ANY_VERB || unserved[i].verb == (int)verb) &&
		    http_route_match(unserved[i].pattern, path, NULL, 0, NULL) == 1)
			return &unserved[i];
	return NULL;
}

static bool device_id_valid(const char *name, const char *id)
{
	return registry_id_valid(id);
}

/* Matches path against pattern; fills a->id. Returns 1 on match, 0 when it
 * does not match, -1 when the {id} segment is not a valid id. */
static int match(const char *pattern, const char *path, struct route_args *a)
{
	char id[3 * REGISTRY_ID_MAX + 1]; /* percent-encoded, every byte may take 3 */
	int m = http_route_match(pattern, path, id, sizeof id, device_id_valid);
	if (m == 1 && strchr(pattern, '{'))
		memcpy(a->id, id, strlen(id) + 1); /* valid: at most REGISTRY_ID_MAX */
	return m;
}

void hub_http_request(struct hub *h, struct http_exchange *ex)
{
	struct http_request *req = ex->req;
	if (req->upgrade) {
		rest__respond_error(ex, 404, "NotFound", 404000, "no WebSocket endpoint at %s",
			      req->path);
		return;
	}
	struct route_args a = {.hub = h, .ex = ex};
	const struct route *r = NULL;
	/* The device's own routes authenticate the device (device_http.c). */
	int dm = match("/devices/{id}/messages/**", req->path, &a);
	if (dm == 1 && hub__device_http(h, ex, a.id))
		return;
	const struct unserved *u = find_unserved(req->verb, req->path);
	bool path_known = false;
	for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !u; i++) {
		int m = match(routes[i].pattern, req->path, &a);
		if (m < 0) {
			rest__respond_error(ex, 400, "ArgumentInvalid", 400004,
				      "the device id in %s is not valid (1-128 characters: letters, "
				      "digits and -:.+%%_#*?!(),=@$')",
				      req->path);
			return;
		}
		if (m == 0)
			continue;
		path_known = true;
		if (routes[i].verb == req->verb) {
			r = &routes[i];
			break;
		}
	}
	if (u) {
		rest__respond_error(ex, 501, "NotImplemented", 501001, "fleethub does not serve %s yet",
			      u->feature);
		return;
	}
	if (!r) {
		if (path_known)
			rest__respond_error(ex, 405, "MethodNotAllowed", 405000, "%s is not allowed on %s",
				      req->method, req->path);
		else
			rest__respond_error(ex, 404, "NotFound", 404000, "no such resource: %s",
				      req->path);
		return;
	}
	unsigned rights = 0;
	const char *why = NULL;
	if (hub__auth_service(h, http_request_header(req, "Authorization"), clock_now_ms() / 1000,
			      &rights, &why) != 0) {
		log_at(LOG_INFO, "https %s: %s %s refused: %s", net_conn_peer(ex->conn), req->method,
		       req->path, why);
		rest__respond_error(ex, 401, "IotHubUnauthorizedAccess", 401002, "unauthorized: %s", why);
		return;
	}
	if (!(rights & r->rights)) {
		rest__respond_error(ex, 401, "IotHubUnauthorizedAccess", 401002,
			      "the shared access policy lacks the right for %s %s", req->method,
			      req->path);
		return;
	}
	if (r->writes && store_admit(h->store, req->body.len) != 0) {
		respond_throttled(ex);
		return;
	}
	r->fn(&a);
}
