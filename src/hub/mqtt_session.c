/* Device-facing MQTT sessions of a hub ($iothub/... topics, protocol.md §2).
 *
 * Session states:
 *
 *   AWAIT_CONNECT --CONNECT ok--> CONNECTED --DISCONNECT/error/kick--> CLOSED
 *        |                                                           ^
 *        +--anything else, bad credentials (CONNACK 4/5/3)-----------+
 *
 * A session is freed when its connection has closed and no store job still
 * refers to it (refs). Twin operations go through the store writer; their
 * answers are published from the job's completion, i.e. after the commit,
 * and are dropped when the session closed meanwhile. Bytes of one TLS or
 * WebSocket read may hold several packets or part of one: complete packets
 * are handled straight from the read; a partial tail is buffered (bounded by
 * the hub's max_packet, which mqtt_parse enforces from the length field). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/mqtt.h"
#include "core/registry.h"
#include "core/twin.h"
#include "internal.h"

enum {
	SUB_C2D = 1,
	SUB_METHODS = 2,
	SUB_TWIN_RES = 4,
	SUB_TWIN_DESIRED = 8,
};

enum session_state { S_AWAIT_CONNECT, S_CONNECTED, S_CLOSED };

struct hub_session {
	struct net_conn *conn; /* NULL once closed */
	const struct hub_set *set;
	struct hub *sni_hub;
	struct hub *hub; /* set by CONNECT */
	enum session_state state;
	char device_id[REGISTRY_ID_MAX + 1];
	bool clean;
	bool registered; /* present in hub->sessions */
	unsigned subs;
	unsigned inflight;
	unsigned refs;
	int64_t connected_ms;
	int64_t last_activity_ms;
	struct buf in;
};

#define CONNECT_TIMEOUT_MS 10000
#define RID_MAX 128

static void session_unref(struct hub_session *s)
{
	if (--s->refs > 0)
		return;
	buf_free(&s->in);
	free(s);
}

static void session_close(struct hub_session *s)
{
	if (s->conn)
		net_conn_close(s->conn);
}

static void send_buf(struct hub_session *s, struct buf *b)
{
	if (s->conn && s->state != S_CLOSED)
		net_conn_write(s->conn, b->data, b->len);
	buf_reset(b);
}

static void publish_n(struct hub_session *s, const char *topic, size_t topic_len,
		      const char *payload, size_t n)
{
	struct buf b = BUF_INIT;
	buf_reserve(&b, 5 + 2 + topic_len + n); /* fixed header, topic length, topic, payload */
	mqtt_encode_publish(&b, topic, topic_len, 0, 0, payload, n);
	send_buf(s, &b);
	buf_free(&b);
}

static void publish(struct hub_session *s, const char *topic, const char *payload, size_t n)
{
	publish_n(s, topic, strlen(topic), payload, n);
}

/* Publishes $iothub/twin/res/<status>/?$rid=<rid>[&$version=N] or, for a
 * refusal the device should retry later, [&retry-after=<seconds>] (the
 * parameter DPS answers carry; the SDKs read the query as name=value pairs
 * and ignore names they do not know). */
static void twin_respond(struct hub_session *s, int status, const char *rid, int64_t version,
			 unsigned retry_after, const char *body)
{
	if (!(s->subs & SUB_TWIN_RES))
		return;
	/* Formatted by hand up to the rid: snprintf of the whole topic cost
	 * about as much as the rest of a GET's answer. status has 3 digits;
	 * rid has at most RID_MAX characters (topic_rid). */
	static const char head[] = "$iothub/twin/res/", mid[] = "/?$rid=";
	char topic[64 + RID_MAX + 32];
	size_t n = sizeof head - 1, rn = strlen(rid);
	memcpy(topic, head, n);
	topic[n++] = (char)('0' + status / 100 % 10);
	topic[n++] = (char)('0' + status / 10 % 10);
	topic[n++] = (char)('0' + status % 10);
	memcpy(topic + n, mid, sizeof mid - 1);
	n += sizeof mid - 1;
	memcpy(topic + n, rid, rn);
	n += rn;
	static const char ver[] = "&$version=", retry[] = "&retry-after=";
	if (version > 0 || retry_after > 0) {
		const char *name = version > 0 ? ver : retry;
		size_t nl = version > 0 ? sizeof ver - 1 : sizeof retry - 1;
		memcpy(topic + n, name, nl);
		n += nl;
		n += dec_u64(version > 0 ? (uint64_t)version : retry_after, topic + n);
	}
	publish_n(s, topic, n, body, body ? strlen(body) : 0);
}

static void twin_error_retry(struct hub_session *s, int status, const char *rid, int code,
			     const char *message, unsigned retry_after)
{
	json_t *o = json_pack("{s:i,s:s}", "errorCode", code, "message", message);
	char *body = json_dumps(o, JSON_COMPACT);
	twin_respond(s, status, rid, 0, retry_after, body);
	free(body);
	json_decref(o);
}

static void twin_error(struct hub_session *s, int status, const char *rid, int code,
		       const char *message)
{
	twin_error_retry(s, status, rid, code, message, 0);
}

static void connack_and_close(struct hub_session *s, uint8_t rc)
{
	struct buf b = BUF_INIT;
	mqtt_encode_connack(&b, false, rc);
	send_buf(s, &b);
	buf_free(&b);
	session_close(s);
}

/* ---- CONNECT ---------------------------------------------------------- */

/* Splits "<host>/<deviceId>/?<query>" (the hub user name). Returns 0 and the
 * pieces, FH_EINVAL when malformed, FH_EPROTO for a module identity. */
static int parse_username(const struct mqtt_str *u, const char **host, size_t *host_len,
			  char *device_id)
{
	const char *p = u->p, *end = u->p + u->len;
	const char *slash = memchr(p, '/', u->len);
	if (!slash || slash == p)
		return FH_EINVAL;
	*host = p;
	*host_len = (size_t)(slash - p);
	const char *id = slash + 1;
	const char *id_end = memchr(id, '/', (size_t)(end - id));
	if (!id_end)
		id_end = end;
	size_t id_len = (size_t)(id_end - id);
	if (id_len == 0 || id_len > REGISTRY_ID_MAX)
		return FH_EINVAL;
	memcpy(device_id, id, id_len);
	device_id[id_len] = '\0';
	if (id_end < end && id_end + 1 < end && id_end[1] != '?')
		return FH_EPROTO; /* <host>/<device>/<module>/... */
	return 0;
}

static void on_connect(struct hub_session *s, const struct mqtt_connect *c)
{
	const char *host;
	size_t host_len;
	char device_id[REGISTRY_ID_MAX + 1];
	const char *why = NULL;
	const char *peer = net_conn_peer(s->conn);

	if (!c->has_username) {
		log_at(LOG_INFO, "mqtt %s: refused: no user name", peer);
		connack_and_close(s, MQTT_RC_NOT_AUTHORIZED);
		return;
	}
	int rc = parse_username(&c->username, &host, &host_len, device_id);
	if (rc != 0) {
		log_at(LOG_INFO, "mqtt %s: refused: %s", peer,
		       rc == FH_EPROTO ? "module identities are not supported"
				       : "user name is not <hub>/<deviceId>/?...");
		connack_and_close(s, rc == FH_EPROTO ? MQTT_RC_ID_REJECTED
						     : MQTT_RC_BAD_CREDENTIALS);
		return;
	}
	struct hub *h = s->sni_hub;
	if (h ? !hub_name_matches(h, host, host_len) : !(h = hub_set_find(s->set, host, host_len))) {
		log_at(LOG_INFO, "mqtt %s: refused device %s: user name names hub '%.*s' %s", peer,
		       device_id, (int)host_len, host,
		       s->sni_hub ? "but TLS SNI names another" : "which is not served here");
		connack_and_close(s, MQTT_RC_NOT_AUTHORIZED);
		return;
	}
	if (c->client_id.len != strlen(device_id) ||
	    memcmp(c->client_id.p, device_id, c->client_id.len) != 0) {
		log_at(LOG_INFO, "mqtt %s: refused device %s: client id differs from the user name",
		       peer, device_id);
		connack_and_close(s, MQTT_RC_ID_REJECTED);
		return;
	}
	struct store_device dev = {0};
	rc = store_device_get(store_reader(h->store), h->name, device_id, &dev);
	if (rc != 0) {
		log_at(LOG_INFO, "mqtt %s: refused device %s on %s: %s", peer, device_id, h->name,
		       rc == FH_ENOTFOUND ? "unknown device" : fh_strerror(rc));
		connack_and_close(s, rc == FH_ENOTFOUND ? MQTT_RC_NOT_AUTHORIZED
							: MQTT_RC_UNAVAILABLE);
		return;
	}
	json_t *identity = json_loads(dev.json, 0, NULL);
	store_device_clear(&dev);
	if (!identity) {
		connack_and_close(s, MQTT_RC_UNAVAILABLE);
		return;
	}
	if (!c->has_password) {
		why = "no password (SAS token) given";
		rc = FH_EAUTH;
	} else {
		rc = hub__auth_device(h, device_id, identity, (const char *)c->password,
				      c->password_len, clock_now_ms() / 1000, &why);
	}
	bool enabled = registry_enabled(identity);
	json_decref(identity);
	if (rc != 0) {
		log_at(LOG_INFO, "mqtt %s: refused device %s on %s: %s", peer, device_id, h->name,
		       why);
		connack_and_close(s, MQTT_RC_NOT_AUTHORIZED);
		return;
	}
	if (!enabled) {
		log_at(LOG_INFO, "mqtt %s: refused device %s on %s: device is disabled", peer,
		       device_id, h->name);
		connack_and_close(s, MQTT_RC_UNAVAILABLE);
		return;
	}

	/* One live connection per device: the newest wins. */
	struct hub_session *old = map_put(&h->sessions, device_id, s);
	if (old && old != s) {
		old->registered = false;
		log_at(LOG_INFO, "mqtt %s: device %s connected again; closing the older connection",
		       peer, device_id);
		session_close(old);
	}
	s->registered = true;
	s->hub = h;
	snprintf(s->device_id, sizeof s->device_id, "%s", device_id);
	s->clean = c->clean;
	s->state = S_CONNECTED;
	s->connected_ms = s->last_activity_ms = clock_now_ms();

	bool present = false;
	unsigned *saved = map_get(&h->persisted, device_id);
	if (c->clean) {
		free(map_remove(&h->persisted, device_id));
	} else if (saved) {
		s->subs = *saved;
		present = true;
	}
	net_conn_set_idle_timeout(s->conn, (uint64_t)c->keepalive * 1500);
	struct buf b = BUF_INIT;
	mqtt_encode_connack(&b, present, MQTT_RC_ACCEPTED);
	send_buf(s, &b);
	buf_free(&b);
	log_at(LOG_INFO, "mqtt %s: device %s connected to %s (MQTT %s, clean=%d, keepalive=%us)",
	       peer, device_id, h->name, c->level == 3 ? "3.1" : "3.1.1", c->clean,
	       c->keepalive);
}

/* ---- SUBSCRIBE -------------------------------------------------------- */

static unsigned filter_bit(const struct hub_session *s, const struct mqtt_str *f)
{
	char buf[512];
	if (f->len >= sizeof buf)
		return 0;
	memcpy(buf, f->p, f->len);
	buf[f->len] = '\0';
	if (strcmp(buf, "$iothub/twin/res/#") == 0)
		return SUB_TWIN_RES;
	if (strcmp(buf, "$iothub/twin/PATCH/properties/desired/#") == 0)
		return SUB_TWIN_DESIRED;
	if (strcmp(buf, "$iothub/methods/POST/#") == 0)
		return SUB_METHODS;
	if (strncmp(buf, "devices/", 8) == 0) {
		const char *id = buf + 8;
		const char *rest = strchr(id, '/');
		if (!rest || strcmp(rest, "/messages/devicebound/#") != 0)
			return 0;
		size_t id_len = (size_t)(rest - id);
		if ((id_len == 1 && id[0] == '+') ||
		    (id_len == strlen(s->device_id) && memcmp(id, s->device_id, id_len) == 0))
			return SUB_C2D;
	}
	return 0;
}

static void on_subscribe(struct hub_session *s, const struct mqtt_subscribe *sub, bool unsub)
{
	uint8_t codes[MQTT_MAX_FILTERS];
	for (unsigned i = 0; i < sub->count; i++) {
		unsigned bit = filter_bit(s, &sub->filters[i]);
		if (unsub) {
			s->subs &= ~bit;
			continue;
		}
		if (bit) {
			s->subs |= bit;
			codes[i] = sub->qos[i] > 1 ? 1 : sub->qos[i];
		} else {
			codes[i] = 0x80;
			log_at(LOG_INFO, "mqtt %s: device %s: subscription to '%.*s' refused",
			       net_conn_peer(s->conn), s->device_id, (int)sub->filters[i].len,
			       sub->filters[i].p);
		}
	}
	struct buf b = BUF_INIT;
	if (unsub)
		mqtt_encode_ack(&b, MQTT_UNSUBACK, sub->packet_id);
	else
		mqtt_encode_suback(&b, sub->packet_id, codes, sub->count);
	send_buf(s, &b);
	buf_free(&b);
}

/* ---- twin operations -------------------------------------------------- */

struct reported_job {
	struct hub_session *s;
	struct hub *hub;
	char device_id[REGISTRY_ID_MAX + 1];
	char rid[RID_MAX + 1];
	char *patch; /* the device's JSON text, checked */
	struct buf meta_clear, meta_set; /* twin_reported_meta_patches */
	int64_t version;
	struct twin_error err;
};

/* The store merges in place (json_patch): no load, merge and dump of the
 * twin in C; an oversized result fails the job, which rolls it back. */
static int reported_work(void *arg, struct store_txn *t)
{
	struct reported_job *j = arg;
	size_t len = 0;
	int rc = store_twin_patch_reported(t, j->hub->name, j->device_id, j->patch,
					   j->meta_clear.data, j->meta_set.data, &j->version, &len);
	if (rc == 0)
		rc = twin_check_reported_size(len, &j->hub->limits, &j->err);
	return rc;
}

static void reported_done(void *arg, int rc)
{
	struct reported_job *j = arg;
	struct hub_session *s = j->s;
	s->inflight--;
	if (s->state == S_CONNECTED) {
		if (rc == 0)
			twin_respond(s, 204, j->rid, j->version, 0, NULL);
		else if (rc == FH_EINVAL)
			twin_error(s, 400, j->rid, j->err.code, j->err.message);
		else if (rc == FH_ENOTFOUND)
			twin_error(s, 404, j->rid, 404001, "the device no longer exists");
		else
			twin_error(s, 503, j->rid, 503001, store_write_error(rc));
	}
	free(j->patch);
	buf_free(&j->meta_clear);
	buf_free(&j->meta_set);
	session_unref(s);
	free(j);
}

static void twin_get(struct hub_session *s, const char *rid)
{
	struct store_twin tw = {0};
	int rc = store_twin_get_properties(store_reader(s->hub->store), s->hub->name, s->device_id,
					   &tw);
	if (rc != 0) {
		twin_error(s, rc == FH_ENOTFOUND ? 404 : 503, rid,
			   rc == FH_ENOTFOUND ? 404001 : 503001,
			   rc == FH_ENOTFOUND ? "the device no longer exists"
					      : "the twin could not be read; try again");
		return;
	}
	char *body = twin_render_properties(&tw);
	twin_respond(s, 200, rid, 0, 0, body);
	free(body);
	store_twin_clear(&tw);
}

static void twin_patch_reported(struct hub_session *s, const char *rid, const uint8_t *p,
				size_t n)
{
	/* Overload, cheapest check first: this session's operations waiting
	 * for the store, then the store's backlog as a whole. */
	if (s->inflight >= s->hub->max_inflight) {
		twin_error_retry(s, 429, rid, 429001, "too many twin operations in flight", 1);
		return;
	}
	if (store_admit(s->hub->store, n) != 0) {
		twin_error_retry(s, 429, rid, 429002,
				 "ThrottleBacklogLimitExceeded: too many writes are waiting for "
				 "the store; retry later",
				 1);
		return;
	}
	struct reported_job *j = xcalloc(1, sizeof *j);
	char now[32];
	clock_iso8601(clock_now_ms(), now);
	/* Most patches are simple enough to stamp without a JSON tree; the
	 * others are parsed, checked (and maybe refused) here. */
	if (!twin_reported_meta_fast((const char *)p, n, now, &s->hub->limits, &j->meta_clear,
				     &j->meta_set)) {
		json_error_t jerr;
		json_t *patch = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
		struct twin_error terr;
		if (!patch || !json_is_object(patch)) {
			snprintf(terr.message, sizeof terr.message,
				 "reported patch is not a JSON object: %s",
				 patch ? "another JSON type" : jerr.text);
			terr.code = 400004;
		} else if (twin_check_patch(patch, TWIN_REPORTED, false, &s->hub->limits,
					    &terr) == 0) {
			twin_reported_meta_patches(patch, now, &j->meta_clear, &j->meta_set);
			terr.code = 0;
		}
		json_decref(patch);
		if (terr.code) {
			buf_free(&j->meta_clear);
			buf_free(&j->meta_set);
			free(j);
			twin_error(s, 400, rid, terr.code, terr.message);
			return;
		}
	}
	j->s = s;
	j->hub = s->hub;
	_Static_assert(sizeof j->device_id == sizeof s->device_id, "same id bound");
	memcpy(j->device_id, s->device_id, sizeof j->device_id);
	size_t rl = strnlen(rid, RID_MAX);
	memcpy(j->rid, rid, rl);
	j->rid[rl] = '\0';
	j->patch = xmalloc(n + 1);
	memcpy(j->patch, p, n);
	j->patch[n] = '\0';
	s->refs++;
	s->inflight++;
	store_submit_sized(s->hub->store, reported_work, reported_done, j, n);
}

/* Takes a token from the device's request rate; when there is none,
 * answers 429 with the seconds to wait and returns true. */
static bool twin_throttled(struct hub_session *s, const char *rid)
{
	unsigned wait =
	    rate_table_take(&s->hub->rate, s->device_id, strlen(s->device_id), clock_now_ms());
	if (!wait)
		return false;
	char msg[160];
	snprintf(msg, sizeof msg,
		 "ThrottlingException: this device is over its request rate (%u/s, burst %u); "
		 "retry in %u s",
		 s->hub->rate.lim.rate, s->hub->rate.lim.burst, wait);
	twin_error_retry(s, 429, rid, 429001, msg, wait);
	return true;
}

/* ---- PUBLISH ---------------------------------------------------------- */

/* Finds the request id in the query part of a topic ("...?$rid=X&..."):
 * copied verbatim up to the next '&'. Returns 0, or -1 when absent, empty,
 * too long or containing characters that would change the answer topic. */
static int topic_rid(const char *query, char rid[RID_MAX + 1])
{
	const char *p = query;
	while (p && *p) {
		if (strncmp(p, "$rid=", 5) == 0) {
			p += 5;
			size_t n = strcspn(p, "&");
			if (n == 0 || n > RID_MAX || memchr(p, '/', n) || memchr(p, '+', n) ||
			    memchr(p, '#', n))
				return -1;
			memcpy(rid, p, n);
			rid[n] = '\0';
			return 0;
		}
		p = strchr(p, '&');
		if (p)
			p++;
	}
	return -1;
}

/* Returns false when the publish is not allowed (the connection closes). */
static bool on_publish(struct hub_session *s, const struct mqtt_publish *pub)
{
	char topic[1024];
	if (pub->qos == 2) {
		log_at(LOG_INFO, "mqtt %s: device %s: QoS 2 is not supported; closing",
		       net_conn_peer(s->conn), s->device_id);
		return false;
	}
	if (pub->topic.len >= sizeof topic)
		return false;
	memcpy(topic, pub->topic.p, pub->topic.len);
	topic[pub->topic.len] = '\0';
	if (pub->qos == 1) {
		struct buf b = BUF_INIT;
		mqtt_encode_ack(&b, MQTT_PUBACK, pub->packet_id);
		send_buf(s, &b);
		buf_free(&b);
	}
	char rid[RID_MAX + 1];
	if (strncmp(topic, "$iothub/twin/", 13) == 0) {
		const char *q = strchr(topic, '?');
		if (!q || topic_rid(q + 1, rid) != 0) {
			log_at(LOG_INFO, "mqtt %s: device %s: twin request without a usable $rid",
			       net_conn_peer(s->conn), s->device_id);
			return false;
		}
		size_t head = (size_t)(q - topic);
		bool get = head == strlen("$iothub/twin/GET/") &&
			   strncmp(topic, "$iothub/twin/GET/", head) == 0;
		bool patch = head == strlen("$iothub/twin/PATCH/properties/reported/") &&
			     strncmp(topic, "$iothub/twin/PATCH/properties/reported/", head) == 0;
		if (get || patch) {
			if (!twin_throttled(s, rid)) {
				if (get)
					twin_get(s, rid);
				else
					twin_patch_reported(s, rid, pub->payload, pub->payload_len);
			}
			return true;
		}
		log_at(LOG_INFO, "mqtt %s: device %s: unknown twin topic '%s'",
		       net_conn_peer(s->conn), s->device_id, topic);
		return false;
	}
	if (strncmp(topic, "$iothub/methods/res/", 20) == 0)
		return true; /* direct-method answers: no method is pending (not served yet) */
	if (strncmp(topic, "devices/", 8) == 0) {
		const char *id = topic + 8;
		size_t id_len = strlen(s->device_id);
		if (strncmp(id, s->device_id, id_len) == 0 &&
		    strncmp(id + id_len, "/messages/events/", 17) == 0) {
			/* Telemetry is accepted (acknowledged above) but not routed
			 * anywhere yet: fleethub has no event endpoint so far. */
			log_at(LOG_DEBUG, "mqtt: device %s: telemetry of %zu bytes", s->device_id,
			       pub->payload_len);
			return true;
		}
	}
	log_at(LOG_INFO, "mqtt %s: device %s: publish to forbidden topic '%s'; closing",
	       net_conn_peer(s->conn), s->device_id, topic);
	return false;
}

/* ---- packet dispatch --------------------------------------------------- */

/* Returns false when the session must close. */
static bool handle_packet(struct hub_session *s, const struct mqtt_packet *pk)
{
	if (s->state == S_AWAIT_CONNECT) {
		if (pk->type != MQTT_CONNECT) {
			log_at(LOG_INFO, "mqtt %s: packet type %d before CONNECT; closing",
			       net_conn_peer(s->conn), pk->type);
			return false;
		}
		on_connect(s, &pk->u.connect);
		return true;
	}
	s->last_activity_ms = clock_now_ms();
	switch (pk->type) {
	case MQTT_PUBLISH:
		return on_publish(s, &pk->u.publish);
	case MQTT_SUBSCRIBE:
		on_subscribe(s, &pk->u.subscribe, false);
		return true;
	case MQTT_UNSUBSCRIBE:
		on_subscribe(s, &pk->u.subscribe, true);
		return true;
	case MQTT_PINGREQ: {
		struct buf b = BUF_INIT;
		mqtt_encode_pingresp(&b);
		send_buf(s, &b);
		buf_free(&b);
		return true;
	}
	case MQTT_PUBACK:
		return true; /* acknowledgement of a cloud-to-device message */
	case MQTT_DISCONNECT:
		return false;
	default:
		log_at(LOG_INFO, "mqtt %s: device %s: unexpected packet type %d; closing",
		       net_conn_peer(s->conn), s->device_id, pk->type);
		return false;
	}
}

/* True when p holds the start of a CONNECT for protocol "MQTT" at a level
 * other than 4 (MQTT 5, say): the client gets CONNACK 1 rather than a bare
 * close, as MQTT 3.1.1 asks. */
static bool unsupported_level(const uint8_t *p, size_t n)
{
	if (n < 2 || p[0] != (MQTT_CONNECT << 4))
		return false;
	size_t i = 1;
	while (i < n && i < 5 && (p[i] & 0x80))
		i++;
	i++; /* past the last length byte */
	return n >= i + 7 && memcmp(p + i, "\x00\x04MQTT", 6) == 0 && p[i + 6] != 4;
}

/* Parses and handles every complete packet of p[0..n); returns the bytes
 * consumed, or -1 when the session must close. */
static long consume(void *ctx, const uint8_t *p, size_t n)
{
	struct hub_session *s = ctx;
	size_t off = 0;
	while (off < n && s->state != S_CLOSED && s->conn) {
		struct mqtt_packet pk;
		int rc = mqtt_parse(p + off, n - off, s->hub ? s->hub->max_packet : 65536, &pk);
		if (rc == 0)
			break;
		if (rc < 0) {
			if (s->state == S_AWAIT_CONNECT && unsupported_level(p + off, n - off)) {
				log_at(LOG_INFO, "mqtt %s: unsupported MQTT protocol level; closing",
				       net_conn_peer(s->conn));
				connack_and_close(s, MQTT_RC_BAD_PROTOCOL);
				return (long)n;
			}
			log_at(LOG_INFO, "mqtt %s: %s packet; closing", net_conn_peer(s->conn),
			       rc == FH_ETOOBIG ? "oversized" : "malformed");
			return -1;
		}
		if (!handle_packet(s, &pk))
			return -1;
		off += (size_t)rc;
	}
	return (long)off;
}

static void on_data(struct net_conn *c, const uint8_t *p, size_t n)
{
	struct hub_session *s = net_conn_app(c);
	s->refs++; /* a handler may close the connection under us */
	if (buf_feed(&s->in, p, n, consume, s) < 0)
		session_close(s);
	session_unref(s);
}

static void on_close(struct net_conn *c)
{
	struct hub_session *s = net_conn_app(c);
	if (s->registered && map_get(&s->hub->sessions, s->device_id) == s) {
		map_remove(&s->hub->sessions, s->device_id);
		if (!s->clean) {
			unsigned *saved = map_get(&s->hub->persisted, s->device_id);
			if (!saved) {
				saved = xmalloc(sizeof *saved);
				map_put(&s->hub->persisted, s->device_id, saved);
			}
			*saved = s->subs;
		}
		log_at(LOG_INFO, "mqtt: device %s disconnected from %s", s->device_id,
		       s->hub->name);
	}
	s->registered = false;
	s->state = S_CLOSED;
	s->conn = NULL;
	session_unref(s);
}

static const struct net_conn_handler session_handler = {on_data, on_close};

static struct hub_session *session_new(const struct hub_set *set, struct hub *sni_hub,
				       struct net_conn *c)
{
	struct hub_session *s = xcalloc(1, sizeof *s);
	s->conn = c;
	s->set = set;
	s->sni_hub = sni_hub;
	s->refs = 1; /* dropped in on_close */
	buf_init(&s->in);
	return s;
}

void hub_mqtt_accept(const struct hub_set *set, struct hub *sni_hub, struct net_conn *c,
		     const uint8_t *pending, size_t n)
{
	struct hub_session *s = session_new(set, sni_hub, c);
	net_conn_set_handler(c, &session_handler, s);
	net_conn_set_deadline(c, CONNECT_TIMEOUT_MS);
	if (n)
		on_data(c, pending, n);
}

/* ---- used by the REST side -------------------------------------------- */

bool hub_device_connected(const struct hub *h, const char *device_id, int64_t *since_ms,
			  int64_t *last_activity_ms)
{
	struct hub_session *s = map_get(&h->sessions, device_id);
	if (!s)
		return false;
	if (since_ms)
		*since_ms = s->connected_ms;
	if (last_activity_ms)
		*last_activity_ms = s->last_activity_ms;
	return true;
}

void hub_kick(struct hub *h, const char *device_id, const char *why)
{
	struct hub_session *s = map_remove(&h->sessions, device_id);
	if (!s)
		return;
	s->registered = false;
	log_at(LOG_INFO, "mqtt: closing device %s on %s: %s", device_id, h->name, why);
	session_close(s);
}

void hub_notify_desired(struct hub *h, const char *device_id, const char *body, int64_t version)
{
	struct hub_session *s = map_get(&h->sessions, device_id);
	if (!s || !(s->subs & SUB_TWIN_DESIRED))
		return;
	char topic[96];
	snprintf(topic, sizeof topic, "$iothub/twin/PATCH/properties/desired/?$version=%lld",
		 (long long)version);
	publish(s, topic, body, strlen(body));
}
