/* Device-facing MQTT sessions of a hub ($iothub/... topics, protocol.md §2).
 *
 * Session states:
 *
 *   AWAIT_CONNECT --CONNECT, names ok--> CONNECTING --identity, token and
 *        |                                   |         session loaded--> CONNECTED
 *        | anything else, bad names          | refused (CONNACK 2..5)       | DISCONNECT, error,
 *        v                                   v                             v kick, takeover
 *      CLOSED <------------------------------+-----------------------------+
 *
 * CONNECTING waits for a store read (store_read: the identity and the
 * stored session); reading from the connection is paused meanwhile and
 * bytes that came with the CONNECT wait in `in`, handled once CONNECTED.
 * Session state that outlives a connection (subscriptions of a clean
 * session 0, takeover, who is live) belongs to the hub's session table
 * (sessions.h); this file speaks MQTT and embeds the table's view of the
 * session (struct dev_session) as its first member. Topics and filters are
 * routed by the pure tables of hub_wire.c.
 *
 * A session is freed when its connection has closed and no store job still
 * refers to it (refs). Twin operations go through the store writer; their
 * answers are published from the job's completion, i.e. after the commit,
 * and are dropped when the session closed meanwhile; SUBACKs of a durable
 * session likewise wait for the subscription write. Bytes of one TLS or
 * WebSocket read may hold several packets or part of one: complete packets
 * are handled straight from the read; a partial tail is buffered (bounded by
 * the hub's max_packet, which mqtt_parse enforces from the length field). */
#include <jansson.h>
#include <openssl/crypto.h>
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
#include "codec/props.h"
#include "core/ca.h"
#include "core/registry.h"
#include "core/twin.h"
#include "internal.h"
#include "net/mqtt_conn.h"

enum session_state { S_AWAIT_CONNECT, S_CONNECTING, S_CONNECTED, S_CLOSED };

#define ACK_QUEUE 64

struct hub_session {
	struct dev_session base; /* first: the session table's view (hub, device, subs) */
	struct net_conn *conn;   /* NULL once closed */
	const struct hub_set *set;
	struct hub *sni_hub;
	enum session_state state;
	bool paused; /* reading paused while the CONNECT waits for the store */
	bool held;   /* reading paused while ACK_QUEUE telemetry waits for the store */
	unsigned inflight;
	char auth_type[24]; /* the identity's authentication type */
	/* QoS 1 PUBLISHes not acknowledged yet, in arrival order: PUBACKs
	 * go out in that order (MQTT 3.1.1 §4.6.0), each once ready (at once,
	 * or after its telemetry's commit). A ring indexed by ack_next - 1 -
	 * position; reading holds while it is full. */
	uint16_t ack_id[ACK_QUEUE];
	bool ack_ready[ACK_QUEUE];
	uint32_t ack_head; /* the oldest one's number */
	uint32_t ack_next; /* the next one's number */
	unsigned refs;
	struct buf in;
};

#define SUBSCRIBED(s, kind) (((s)->base.subs.mask & (1u << (kind))) != 0)

#define RID_MAX HUB_RID_MAX

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
	mqtt_conn_send(s->state != S_CLOSED ? s->conn : NULL, b);
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
	if (!SUBSCRIBED(s, HUB_SUB_TWIN_RES))
		return;
	/* Formatted by hand up to the rid: snprintf of the whole topic cost
	 * about as much as the rest of a GET's answer. status has 3 digits;
	 * rid has at most RID_MAX characters (hub__wire_topic). */
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
	mqtt_conn_refuse(s->state != S_CLOSED ? s->conn : NULL, rc);
	s->state = S_CLOSED;
}

/* ---- CONNECT ----------------------------------------------------------
 *
 * In steps:
 *   1. connect_names: the user name names a hub served here and the device
 *      the client id names (no store needed);
 *   2. connect_load, a store read: the identity and the stored session;
 *   3. connect_loaded: the SAS token against the identity's keys, the
 *      identity enabled;
 *   4. sessions_attach: a new, resumed or taken-over session, and the
 *      session-present flag;
 *   5. CONNACK and keep-alive, then the bytes that arrived meanwhile. */

static void send_connack(struct hub_session *s, bool present, uint8_t rc)
{
	struct buf b = BUF_INIT;
	mqtt_encode_connack(&b, present, rc);
	send_buf(s, &b);
	buf_free(&b);
}

/* Step 1. Returns the hub with the device id copied, or NULL after
 * refusing the CONNECT. */
static struct hub *connect_names(struct hub_session *s, const struct mqtt_connect *c,
				 char device_id[REGISTRY_ID_MAX + 1])
{
	const char *peer = net_conn_peer(s->conn);
	if (!c->has_username) {
		log_at(LOG_INFO, "mqtt %s: refused: no user name", peer);
		connack_and_close(s, MQTT_RC_NOT_AUTHORIZED);
		return NULL;
	}
	struct hub_user u;
	int rc = hub__wire_username(c->username.p, c->username.len, &u);
	if (rc != 0) {
		log_at(LOG_INFO, "mqtt %s: refused: %s", peer,
		       rc == FH_EPROTO ? "module identities are not supported"
				       : "user name is not <hub>/<deviceId>/?...");
		connack_and_close(s, rc == FH_EPROTO ? MQTT_RC_ID_REJECTED
						     : MQTT_RC_BAD_CREDENTIALS);
		return NULL;
	}
	memcpy(device_id, u.device_id, u.id_len);
	device_id[u.id_len] = '\0';
	struct hub *h = s->sni_hub;
	if (h ? !hub_name_matches(h, u.host, u.host_len)
	      : !(h = hub_set_find(s->set, u.host, u.host_len))) {
		log_at(LOG_INFO, "mqtt %s: refused device %s: user name names hub '%.*s' %s", peer,
		       device_id, (int)u.host_len, u.host,
		       s->sni_hub ? "but TLS SNI names another" : "which is not served here");
		connack_and_close(s, MQTT_RC_NOT_AUTHORIZED);
		return NULL;
	}
	if (c->client_id.len != u.id_len || memcmp(c->client_id.p, device_id, u.id_len) != 0) {
		log_at(LOG_INFO, "mqtt %s: refused device %s: client id differs from the user name",
		       peer, device_id);
		connack_and_close(s, MQTT_RC_ID_REJECTED);
		return NULL;
	}
	return h;
}

/* What a CONNECT needs from the store, and what it keeps of the packet
 * (whose bytes are gone by the time a read completes elsewhere). */
struct connect_job {
	struct hub_session *s;
	struct hub *h;
	char device_id[REGISTRY_ID_MAX + 1];
	bool clean;
	uint8_t level;
	uint16_t keepalive;
	char *password; /* NULL when the CONNECT had none */
	size_t password_len;
	/* filled by connect_load */
	json_t *identity;
	char generation[SESSION_GEN_MAX + 1];
	struct session_stored stored;
	json_t *cas; /* a certificateAuthority device: the hub's verified CAs (PEM) */
};

/* Step 2, inside a store read: touches only the job and the txn. */
static int connect_load(void *arg, struct store_txn *t)
{
	struct connect_job *j = arg;
	struct store_device dev = {0};
	int rc = store_device_get(t, j->h->name, j->device_id, &dev);
	if (rc != 0)
		return rc;
	j->identity = json_loads(dev.json, 0, NULL);
	store_device_clear(&dev);
	if (!j->identity)
		return FH_EIO;
	const char *gen = json_string_value(json_object_get(j->identity, "generationId"));
	snprintf(j->generation, sizeof j->generation, "%s", gen ? gen : "");
	if (!j->password && strcmp(registry_auth_type(j->identity), "certificateAuthority") == 0) {
		j->cas = json_array();
		rc = store_doc_list(t, STORE_CA_CERT, j->h->name, "", "", HUB_MAX_CAS, ca_collect_verified,
				    j->cas);
		if (rc != 0)
			return rc;
	}
	return sessions_read(t, j->h->name, j->device_id, j->generation, &j->stored);
}

/* Steps 3 to 5 for a session still waiting for them. */
static void connect_finish(struct hub_session *s, struct connect_job *j, int rc)
{
	const char *peer = net_conn_peer(s->conn);
	struct hub *h = j->h;
	if (rc != 0) {
		log_at(LOG_INFO, "mqtt %s: refused device %s on %s: %s", peer, j->device_id, h->name,
		       rc == FH_ENOTFOUND ? "unknown device" : fh_strerror(rc));
		connack_and_close(s, rc == FH_ENOTFOUND ? MQTT_RC_NOT_AUTHORIZED
							: MQTT_RC_UNAVAILABLE);
		return;
	}
	/* A password is a SAS token; without one, the TLS client certificate
	 * speaks for the device (protocol.md §2.1). */
	const char *why = "no password (SAS token) and no client certificate given";
	X509 *leaf = net_conn_peer_cert(s->conn);
	int64_t now_s = clock_now_ms() / 1000;
	if (j->password)
		rc = hub__auth_device(h, j->device_id, j->identity, j->password, j->password_len,
				      now_s, &why);
	else
		rc = leaf ? hub__auth_device_x509(h, j->device_id, j->identity, leaf,
						  net_conn_peer_chain(s->conn), j->cas, now_s, &why)
			  : FH_EAUTH;
	if (rc != 0) {
		log_at(LOG_INFO, "mqtt %s: refused device %s on %s: %s", peer, j->device_id, h->name,
		       why);
		connack_and_close(s, MQTT_RC_NOT_AUTHORIZED);
		return;
	}
	if (!registry_enabled(j->identity)) {
		/* Its stored session stays for when it is enabled again. */
		log_at(LOG_INFO, "mqtt %s: refused device %s on %s: device is disabled", peer,
		       j->device_id, h->name);
		connack_and_close(s, MQTT_RC_UNAVAILABLE);
		return;
	}

	struct dev_session *d = &s->base;
	d->hub = h;
	snprintf(s->auth_type, sizeof s->auth_type, "%s", registry_auth_type(j->identity));
	memcpy(d->device_id, j->device_id, sizeof d->device_id);
	memcpy(d->generation, j->generation, sizeof d->generation);
	d->connected_ms = d->last_activity_ms = clock_now_ms();
	s->state = S_CONNECTED;
	bool present = sessions_attach(h, d, j->clean, &j->stored);

	net_conn_set_idle_timeout(s->conn, (uint64_t)j->keepalive * 1500);
	send_connack(s, present, MQTT_RC_ACCEPTED);
	log_at(LOG_INFO,
	       "mqtt %s: device %s connected to %s (MQTT %s, clean=%d, keepalive=%us, "
	       "session present=%d)",
	       peer, j->device_id, h->name, j->level == 3 ? "3.1" : "3.1.1", j->clean,
	       j->keepalive, present);
	hub__methods_ready(h, d); /* a resumed session may take method calls at once */
	hub__c2d_ready(h, d);     /* and its queued messages */
}

static long consume(void *ctx, const uint8_t *p, size_t n);

static void connect_loaded(void *arg, int rc)
{
	struct connect_job *j = arg;
	struct hub_session *s = j->s;
	if (s->state == S_CONNECTING && s->conn)
		connect_finish(s, j, rc);
	json_decref(j->identity);
	json_decref(j->cas);
	if (j->password)
		OPENSSL_clear_free(j->password, j->password_len + 1);
	free(j);
	/* A read that completed later: handle what arrived meanwhile. */
	if (s->paused && s->conn && s->state == S_CONNECTED) {
		s->paused = false;
		long used = s->in.len ? consume(s, (const uint8_t *)s->in.data, s->in.len) : 0;
		if (used < 0)
			session_close(s);
		else
			buf_consume(&s->in, (size_t)used);
		if (s->conn)
			net_conn_resume(s->conn);
	}
	session_unref(s);
}

static void on_connect(struct hub_session *s, const struct mqtt_connect *c)
{
	char device_id[REGISTRY_ID_MAX + 1];
	struct hub *h = connect_names(s, c, device_id);
	if (!h)
		return;
	struct connect_job *j = xcalloc(1, sizeof *j);
	j->s = s;
	j->h = h;
	memcpy(j->device_id, device_id, sizeof j->device_id);
	j->clean = c->clean;
	j->level = c->level;
	j->keepalive = c->keepalive;
	if (c->has_password) {
		j->password = xmalloc((size_t)c->password_len + 1);
		memcpy(j->password, c->password, c->password_len);
		j->password[c->password_len] = '\0';
		j->password_len = c->password_len;
	}
	s->state = S_CONNECTING;
	s->refs++; /* dropped in connect_loaded */
	store_read(h->store, connect_load, connect_loaded, j);
	if (s->state == S_CONNECTING) {
		/* Completes later: later bytes wait in the kernel. */
		s->paused = true;
		net_conn_pause(s->conn);
	}
}

/* ---- features not served yet ------------------------------------------- */

/* ---- SUBSCRIBE and UNSUBSCRIBE ------------------------------------------ */

/* An acknowledgement that waits for the session table's write. */
struct sub_ack {
	struct hub_session *s;
	bool unsub;
	uint16_t packet_id;
	unsigned count;
	uint8_t codes[MQTT_MAX_FILTERS];
};

static void send_sub_ack(struct hub_session *s, const struct sub_ack *a)
{
	struct buf b = BUF_INIT;
	if (a->unsub)
		mqtt_encode_ack(&b, MQTT_UNSUBACK, a->packet_id);
	else
		mqtt_encode_suback(&b, a->packet_id, a->codes, a->count);
	send_buf(s, &b);
	buf_free(&b);
}

/* rc != 0: not stored, yet in force on this connection (sessions.h). */
/* After a SUBACK: what waits for the subscriptions now in force goes out
 * (behind the SUBACK, so a client that handles packets in order sees its
 * acknowledgement first). */
static void subscribed(struct hub_session *s)
{
	hub__methods_ready(s->base.hub, &s->base);
	hub__c2d_ready(s->base.hub, &s->base);
}

static void sub_stored(void *arg, int rc)
{
	struct sub_ack *a = arg;
	struct hub_session *s = a->s;
	if (s->state == S_CONNECTED) {
		send_sub_ack(s, a);
		subscribed(s);
	}
	free(a);
	session_unref(s);
}

static void on_subscribe(struct hub_session *s, const struct mqtt_subscribe *sub, bool unsub)
{
	struct sub_ack *a = xcalloc(1, sizeof *a);
	a->s = s;
	a->unsub = unsub;
	a->packet_id = sub->packet_id;
	a->count = sub->count;
	struct hub_subs next = s->base.subs;
	for (unsigned i = 0; i < sub->count; i++) {
		const struct mqtt_str *f = &sub->filters[i];
		int k = hub__wire_filter(f->p, f->len, s->base.device_id);
		uint8_t bit = k >= 0 ? (uint8_t)(1u << k) : 0;
		if (k >= 0 && unsub) {
			next.mask &= (uint8_t)~bit;
			next.qos[k] = 0;
		} else if (k >= 0) {
			next.mask |= bit;
			next.qos[k] = a->codes[i] = sub->qos[i] > 1 ? 1 : sub->qos[i];
		} else if (!unsub) {
			a->codes[i] = 0x80;
			log_at(LOG_INFO, "mqtt %s: device %s: subscription to '%.*s' refused",
			       net_conn_peer(s->conn), s->base.device_id, (int)f->len, f->p);
		}
	}
	int rc = sessions_subscribe(s->base.hub, &s->base, &next, sub_stored, a);
	if (rc == 1) {
		s->refs++; /* dropped in sub_stored */
		return;
	}
	if (rc == FH_EAGAIN) {
		/* The store's backlog is full: nothing changed. (Removals are
		 * never refused: an UNSUBSCRIBE has no failure code.) */
		log_at(LOG_INFO, "mqtt %s: device %s: SUBSCRIBE refused: the store's backlog is full",
		       net_conn_peer(s->conn), s->base.device_id);
		for (unsigned i = 0; i < a->count; i++)
			a->codes[i] = 0x80;
	}
	send_sub_ack(s, a);
	free(a);
	if (rc != FH_EAGAIN)
		subscribed(s);
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

/* A twin GET: one read through the store's completion API (decisions.md
 * 1); the answer goes out only if the session is still connected. */
struct get_job {
	struct hub_session *s;
	struct hub *hub;
	char device_id[REGISTRY_ID_MAX + 1];
	char rid[RID_MAX + 1];
	struct store_twin tw;
};

static int get_work(void *arg, struct store_txn *t)
{
	struct get_job *j = arg;
	return store_twin_get_properties(t, j->hub->name, j->device_id, &j->tw);
}

static void get_done(void *arg, int rc)
{
	struct get_job *j = arg;
	struct hub_session *s = j->s;
	if (s->state != S_CONNECTED) {
		/* gone meanwhile: nobody to answer */
	} else if (rc != 0) {
		twin_error(s, rc == FH_ENOTFOUND ? 404 : 503, j->rid,
			   rc == FH_ENOTFOUND ? 404001 : 503001,
			   rc == FH_ENOTFOUND ? "the device no longer exists"
					      : "the twin could not be read; try again");
	} else {
		char *body = twin_render_properties(&j->tw);
		twin_respond(s, 200, j->rid, 0, 0, body);
		free(body);
	}
	store_twin_clear(&j->tw);
	session_unref(s);
	free(j);
}

static void twin_get(struct hub_session *s, const char *rid)
{
	struct get_job *j = xcalloc(1, sizeof *j);
	j->s = s;
	j->hub = s->base.hub;
	_Static_assert(sizeof j->device_id == sizeof s->base.device_id, "same id bound");
	memcpy(j->device_id, s->base.device_id, sizeof j->device_id);
	snprintf(j->rid, sizeof j->rid, "%s", rid);
	s->refs++; /* dropped in get_done */
	store_read(s->base.hub->store, get_work, get_done, j);
}

static void twin_patch_reported(struct hub_session *s, const char *rid, const uint8_t *p,
				size_t n)
{
	/* Overload, cheapest check first: this session's operations waiting
	 * for the store, then the store's backlog as a whole. */
	if (s->inflight >= s->base.hub->max_inflight) {
		twin_error_retry(s, 429, rid, 429001, "too many twin operations in flight", 1);
		return;
	}
	if (store_admit(s->base.hub->store, n) != 0) {
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
	if (!twin_reported_meta_fast((const char *)p, n, now, &s->base.hub->limits, &j->meta_clear,
				     &j->meta_set)) {
		json_error_t jerr;
		json_t *patch = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
		struct twin_error terr;
		if (!patch || !json_is_object(patch)) {
			snprintf(terr.message, sizeof terr.message,
				 "reported patch is not a JSON object: %s",
				 patch ? "another JSON type" : jerr.text);
			terr.code = 400004;
		} else if (twin_check_patch(patch, TWIN_REPORTED, false, &s->base.hub->limits,
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
	j->hub = s->base.hub;
	_Static_assert(sizeof j->device_id == sizeof s->base.device_id, "same id bound");
	memcpy(j->device_id, s->base.device_id, sizeof j->device_id);
	size_t rl = strnlen(rid, RID_MAX);
	memcpy(j->rid, rid, rl);
	j->rid[rl] = '\0';
	j->patch = xmalloc(n + 1);
	memcpy(j->patch, p, n);
	j->patch[n] = '\0';
	s->refs++;
	s->inflight++;
	store_submit_keyed(s->base.hub->store, s->base.device_id, reported_work, reported_done, j,
			   n);
}

/* Takes a token from the device's request rate; when there is none,
 * answers 429 with the seconds to wait and returns true. */
static bool twin_throttled(struct hub_session *s, const char *rid)
{
	unsigned wait =
	    rate_table_take(&s->base.hub->rate, s->base.device_id, strlen(s->base.device_id), clock_now_ms());
	if (!wait)
		return false;
	char msg[160];
	snprintf(msg, sizeof msg,
		 "ThrottlingException: this device is over its request rate (%u/s, burst %u); "
		 "retry in %u s",
		 s->base.hub->rate.lim.rate, s->base.hub->rate.lim.burst, wait);
	twin_error_retry(s, 429, rid, 429001, msg, wait);
	return true;
}

/* ---- PUBACKs in order --------------------------------------------------- */

static void send_ack(struct hub_session *s, uint16_t id)
{
	struct buf b = BUF_INIT;
	mqtt_encode_ack(&b, MQTT_PUBACK, id);
	send_buf(s, &b);
	buf_free(&b);
}

/* Sends the acknowledgements that are ready, oldest first. */
static void ack_flush(struct hub_session *s)
{
	while (s->ack_head != s->ack_next && s->ack_ready[s->ack_head % ACK_QUEUE]) {
		send_ack(s, s->ack_id[s->ack_head % ACK_QUEUE]);
		s->ack_head++;
	}
}

/* Queues the acknowledgement of QoS 1 packet id (sent at once when ready
 * and nothing waits before it); returns its number for ack_ready. */
static uint32_t ack_push(struct hub_session *s, uint16_t id, bool ready)
{
	if (ready && s->ack_head == s->ack_next) {
		send_ack(s, id);
		return s->ack_next;
	}
	uint32_t n = s->ack_next++;
	s->ack_id[n % ACK_QUEUE] = id;
	s->ack_ready[n % ACK_QUEUE] = ready;
	return n;
}


/* Reading stops while ACK_QUEUE acknowledgements or max_inflight
 * operations wait (backpressure instead of a refusal MQTT 3.1.1 cannot
 * express), and goes on once they are under. */
static void hold_check(struct hub_session *s)
{
	bool full = s->ack_next - s->ack_head >= ACK_QUEUE - 1 ||
		    s->inflight >= s->base.hub->max_inflight;
	if (full && !s->held && s->conn) {
		s->held = true;
		net_conn_pause(s->conn);
	} else if (!full && s->held && s->conn && s->state == S_CONNECTED) {
		s->held = false;
		long used = s->in.len ? consume(s, (const uint8_t *)s->in.data, s->in.len) : 0;
		if (used < 0) {
			session_close(s);
			return;
		}
		buf_consume(&s->in, (size_t)used);
		if (s->conn && !s->held)
			net_conn_resume(s->conn);
	}
}

/* ---- telemetry ---------------------------------------------------------- */

struct telemetry_job {
	struct hub_session *s;
	uint8_t qos;
	uint32_t ack; /* its number in the acknowledgement queue (QoS 1) */
};

static void telemetry_done(void *arg, int rc)
{
	struct telemetry_job *j = arg;
	struct hub_session *s = j->s;
	s->inflight--;
	if (s->state == S_CONNECTED && s->conn) {
		if (rc != 0) {
			/* No PUBACK: the device sends it again after it reconnects. */
			log_at(LOG_WARN,
			       "mqtt %s: device %s: telemetry not stored (%s); closing so that the "
			       "device sends it again",
			       net_conn_peer(s->conn), s->base.device_id, store_write_error(rc));
			session_close(s);
		} else if (j->qos == 1) {
			s->ack_ready[j->ack % ACK_QUEUE] = true;
			ack_flush(s);
		}
		hold_check(s);
	}
	session_unref(s);
	free(j);
}

/* A device's telemetry: appended to the hub's log, acknowledged after the
 * commit. Returns false when the connection must close (a bag that does
 * not parse, a message over the limit, a store that cannot take it). */
static bool telemetry(struct hub_session *s, const struct mqtt_publish *pub,
		      const struct hub_topic_match *m)
{
	const char *peer = net_conn_peer(s->conn), *id = s->base.device_id;
	json_t *app, *sys;
	char err[160];
	if (props_parse(m->props, m->props_len, &app, &sys, err, sizeof err) != 0) {
		log_at(LOG_INFO, "mqtt %s: device %s: telemetry refused: %s; closing", peer, id,
		       err);
		return false;
	}
	struct telemetry_msg msg = {id,  s->base.generation, s->auth_type, app,
				    sys, pub->payload,       pub->payload_len};
	struct telemetry_job *j = xcalloc(1, sizeof *j);
	j->s = s;
	j->qos = pub->qos;
	int rc = hub_telemetry_append(s->base.hub, &msg, telemetry_done, j);
	json_decref(app);
	json_decref(sys);
	if (rc != 0) {
		free(j);
		log_at(LOG_INFO, "mqtt %s: device %s: telemetry refused: %s; closing", peer, id,
		       rc == FH_ETOOBIG ? "the message is over 256 KB"
					: "too many writes are waiting for the store");
		return false;
	}
	if (pub->qos == 1)
		j->ack = ack_push(s, pub->packet_id, false);
	s->refs++;
	s->inflight++;
	hold_check(s);
	return true;
}

/* ---- PUBLISH ---------------------------------------------------------- */

/* Returns false when the publish is not allowed (the connection closes). */
static bool on_publish(struct hub_session *s, const struct mqtt_publish *pub)
{
	const char *peer = net_conn_peer(s->conn), *id = s->base.device_id;
	if (pub->qos == 2) {
		log_at(LOG_INFO, "mqtt %s: device %s: QoS 2 is not supported; closing", peer, id);
		return false;
	}
	struct hub_topic_match m;
	enum hub_topic t = hub__wire_topic(pub->topic.p, pub->topic.len, id, &m);
	if (t == HUB_TOPIC_FORBIDDEN || t == HUB_TOPIC_NO_RID) {
		log_at(LOG_INFO, "mqtt %s: device %s: %s '%.*s'; closing", peer, id,
		       t == HUB_TOPIC_NO_RID ? "request without a usable $rid on"
					     : "publish to forbidden topic",
		       (int)pub->topic.len, pub->topic.p);
		return false;
	}
	if (t == HUB_TOPIC_TELEMETRY)
		return telemetry(s, pub, &m);
	if (pub->qos == 1) {
		ack_push(s, pub->packet_id, true);
		hold_check(s); /* queued behind telemetry: the ring is bounded too */
	}
	switch (t) {
	case HUB_TOPIC_TWIN_GET:
		if (!twin_throttled(s, m.rid))
			twin_get(s, m.rid);
		break;
	case HUB_TOPIC_TWIN_REPORTED:
		if (!twin_throttled(s, m.rid))
			twin_patch_reported(s, m.rid, pub->payload, pub->payload_len);
		break;
	case HUB_TOPIC_METHOD_RES:
		hub__methods_answer(s->base.hub, &s->base, m.rid, m.status, pub->payload,
				    pub->payload_len);
		break;
	default:
		break;
	}
	return true;
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
	sessions_activity(s->base.hub, &s->base);
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
		hub__c2d_acked(s->base.hub, &s->base, pk->u.packet_id);
		return true;
	case MQTT_DISCONNECT:
		return false;
	default:
		log_at(LOG_INFO, "mqtt %s: device %s: unexpected packet type %d; closing",
		       net_conn_peer(s->conn), s->base.device_id, pk->type);
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
	/* CONNECTING: what follows the CONNECT waits for its answer. */
	while (off < n && s->state != S_CLOSED && s->state != S_CONNECTING && !s->held && s->conn) {
		struct mqtt_packet pk;
		int rc = mqtt_parse(p + off, n - off, s->base.hub ? s->base.hub->max_packet : 65536,
				    &pk);
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
	if (s->base.live) {
		sessions_detach(s->base.hub, &s->base);
		log_at(LOG_INFO, "mqtt: device %s disconnected from %s", s->base.device_id,
		       s->base.hub->name);
	}
	s->state = S_CLOSED;
	s->conn = NULL;
	session_unref(s);
}

static const struct net_conn_handler session_handler = {on_data, on_close};

/* ---- what the session table asks of a session ---- */

static void ops_close(struct dev_session *d, const char *why)
{
	struct hub_session *s = (struct hub_session *)d;
	s->state = S_CLOSED; /* nothing more is handled or sent */
	session_close(s);
}

static void ops_desired(struct dev_session *d, const char *body, int64_t version)
{
	struct hub_session *s = (struct hub_session *)d;
	char topic[96];
	snprintf(topic, sizeof topic, "$iothub/twin/PATCH/properties/desired/?$version=%lld",
		 (long long)version);
	publish(s, topic, body, strlen(body));
}

static void ops_method(struct dev_session *d, const char *name, const char *rid,
		       const char *payload)
{
	struct hub_session *s = (struct hub_session *)d;
	char topic[200];
	int n = snprintf(topic, sizeof topic, "$iothub/methods/POST/%s/?$rid=%s", name, rid);
	publish_n(s, topic, (size_t)n, payload, strlen(payload));
}

static void ops_c2d(struct dev_session *d, const char *topic, size_t topic_len,
		    const uint8_t *body, size_t n, uint16_t packet_id)
{
	struct hub_session *s = (struct hub_session *)d;
	struct buf b = BUF_INIT;
	buf_reserve(&b, 5 + 2 + topic_len + 2 + n);
	mqtt_encode_publish(&b, topic, topic_len, 1, packet_id, body, n);
	send_buf(s, &b);
	buf_free(&b);
}

static void ops_ref(struct dev_session *d, int delta)
{
	struct hub_session *s = (struct hub_session *)d;
	if (delta > 0)
		s->refs++;
	else
		session_unref(s);
}

static const struct dev_session_ops session_ops = {ops_close, ops_desired, ops_method, ops_c2d,
						   ops_ref};

static struct hub_session *session_new(const struct hub_set *set, struct hub *sni_hub,
				       struct net_conn *c)
{
	struct hub_session *s = xcalloc(1, sizeof *s);
	s->base.ops = &session_ops;
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
	net_conn_set_deadline(c, MQTT_CONNECT_TIMEOUT_MS);
	if (n)
		on_data(c, pending, n);
}
