/* The DPS device API (protocol.md §3, §4): MQTT sessions on
 * $dps/registrations/... (over TLS or WebSockets) and the HTTPS routes
 * /{idScope}/registrations/{registrationId}/register and .../operations/{id}.
 * Both authenticate the registration SAS token and hand the request to the
 * operations (dps_ops.c); answers go back through a dps_reply.
 *
 * A device proves itself with a SAS token (the MQTT password, the HTTPS
 * Authorization header) or, without one, with its TLS client certificate
 * (X.509 attestation, dps_x509.c).
 *
 * MQTT session states: AWAIT_CONNECT --CONNECT ok--> CONNECTED --> CLOSED.
 * The token or certificate of the CONNECT is checked at once (CONNACK 5
 * when it does not match any enrollment) and again on every register, so
 * an expired token or certificate or a changed enrollment is noticed. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/mqtt.h"
#include "internal.h"
#include "net/mqtt_conn.h"


struct dsession {
	struct dps *d;
	struct net_conn *conn; /* NULL once closed */
	unsigned refs;
	bool connected;
	char regid[ENROLLMENT_ID_MAX + 1];
	char *token;
	size_t token_len;
	struct buf in;
	/* The enrollment the CONNECT was attested by; while connected, the
	 * session is in d->sessions, so disabling or deleting that enrollment
	 * closes it (dps__enrollment_changed). */
	enum enrollment_kind kind;
	char enrollment_id[ENROLLMENT_ID_MAX + 1];
	struct dsession *prev, *next;
	bool listed;
};

static void unlist(struct dsession *s)
{
	if (!s->listed)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		s->d->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	s->listed = false;
}

void dps__enrollment_changed(struct dps *d, enum enrollment_kind kind, const char *id,
                             const json_t *record)
{
	if (record && enrollment_enabled(record))
		return;
	for (struct dsession *s = d->sessions, *next; s; s = next) {
		next = s->next;
		if (s->kind != kind || strcmp(s->enrollment_id, id) != 0 || !s->conn)
			continue;
		log_at(LOG_INFO, "dps %s: mqtt %s: %s closed: its enrollment%s %s was %s", d->name,
		       net_conn_peer(s->conn), s->regid, kind == ENROLLMENT_GROUP ? " group" : "",
		       id, record ? "disabled" : "deleted");
		unlist(s);
		net_conn_close(s->conn);
	}
}

static void dsession_unref(struct dsession *s)
{
	if (--s->refs)
		return;
	free(s->token);
	buf_free(&s->in);
	free(s);
}

static void send_buf(struct dsession *s, struct buf *b)
{
	mqtt_conn_send(s->conn, b);
}

/* ---- answers ------------------------------------------------------------ */

struct mqtt_reply {
	struct dps_reply base;
	struct dsession *s;
	char rid[DPS_RID_MAX + 1];
};

static void mqtt_reply_fn(struct dps_reply *r, int status, const char *json, unsigned retry)
{
	struct mqtt_reply *m = (struct mqtt_reply *)r;
	char topic[256];
	if (retry)
		snprintf(topic, sizeof topic, "$dps/registrations/res/%d/?$rid=%s&retry-after=%u",
		         status, m->rid, retry);
	else
		snprintf(topic, sizeof topic, "$dps/registrations/res/%d/?$rid=%s", status, m->rid);
	struct buf b = BUF_INIT;
	mqtt_encode_publish(&b, topic, strlen(topic), 0, 0, json, strlen(json));
	send_buf(m->s, &b);
	buf_free(&b);
	dsession_unref(m->s);
	free(m);
}

static struct dps_reply *mqtt_reply_new(struct dsession *s, const char *rid)
{
	struct mqtt_reply *m = xcalloc(1, sizeof *m);
	m->base.fn = mqtt_reply_fn;
	m->s = s;
	s->refs++;
	snprintf(m->rid, sizeof m->rid, "%s", rid);
	return &m->base;
}

struct http_reply {
	struct dps_reply base;
	struct http_exchange *ex;
};

static void http_reply_fn(struct dps_reply *r, int status, const char *json, unsigned retry)
{
	struct http_reply *h = (struct http_reply *)r;
	char value[16];
	snprintf(value, sizeof value, "%u", retry);
	const char *headers[] = {"Retry-After", value, NULL};
	http_respond_json(h->ex, status, retry ? headers : NULL, json);
	free(h);
}

static struct dps_reply *http_reply_new(struct http_exchange *ex)
{
	struct http_reply *h = xcalloc(1, sizeof *h);
	h->base.fn = http_reply_fn;
	h->ex = ex;
	return &h->base;
}

static void reply_error(struct dps_reply *r, int status, int code, const char *message)
{
	char *json = dps__error_json(code, message);
	r->fn(r, status, json, 0);
	free(json);
}

/* Takes a token from regid's request rate (registrations, polls and status
 * reads alike); when there is none, answers 429 with retry-after and returns
 * true. Called after authentication (on HTTPS, per request; on MQTT the
 * session authenticated at CONNECT), so nobody can spend another device's
 * tokens. */
static bool throttled(struct dps *d, const char *regid, struct dps_reply *r)
{
	unsigned wait = rate_table_take(&d->rate, regid, strlen(regid), clock_now_ms());
	if (!wait)
		return false;
	char msg[160];
	snprintf(msg, sizeof msg,
		 "this registration id is over its request rate (%u/s, burst %u); retry in %u s",
		 d->rate.lim.rate, d->rate.lim.burst, wait);
	char *json = dps__error_json(429001, msg);
	r->fn(r, 429, json, wait);
	free(json);
	return true;
}

static const char tpm_https_only[] =
    "TPM attestation is served over HTTPS only (the official SDKs register TPM devices "
    "over HTTPS or AMQP, never MQTT)";

/* Authenticates a request for regid: with its SAS token when it has one
 * (token[0..n)), else with the TLS client certificate of conn. */
static int authenticate(struct dps *d, const char *regid, const char *token, size_t n,
                        struct net_conn *conn, struct dps_auth *out, const char **why,
                        unsigned *wait)
{
	int64_t now_s = clock_now_ms() / 1000;
	if (token)
		return dps__authenticate(d, regid, token, n, now_s, out, why, wait);
	X509 *leaf = net_conn_peer_cert(conn);
	*wait = 0;
	if (!leaf) {
		*why = "no SAS token and no client certificate";
		char *text = NULL;
		json_t *rec = NULL;
		if (store_doc_get(store_reader(d->store), STORE_ENROLLMENT, d->name, regid, &text) ==
		    0)
			rec = json_loads(text, 0, NULL);
		free(text);
		if (rec && strcmp(enrollment_attestation_type(rec), "tpm") == 0)
			*why = tpm_https_only;
		json_decref(rec);
		return FH_EAUTH;
	}
	return dps__authenticate_x509(d, regid, leaf, net_conn_peer_chain(conn), now_s, out, why,
	                              wait);
}

/* Answers a failed authentication: 503 (store), 429 with retry-after (a
 * rate of dps__authenticate), else 401: for a SAS token without saying
 * which check failed, for a certificate with the reason (what is wrong
 * with a certificate is the device owner's to fix, and says nothing of
 * any key). */
static void refuse_auth(struct dps_reply *r, int rc, const char *why, unsigned wait,
                        bool with_token)
{
	if (rc == FH_EIO) {
		reply_error(r, 503, 503000, "the service cannot read its store; try again");
	} else if (rc == FH_EAGAIN) {
		char *json = dps__error_json(429001, why);
		r->fn(r, 429, json, wait);
		free(json);
	} else if (with_token) {
		reply_error(r, 401, 401002,
		            "Unauthorized: the SAS token does not match an enrollment of this "
		            "registration id");
	} else {
		char msg[300];
		snprintf(msg, sizeof msg, "Unauthorized: %s", why);
		reply_error(r, 401, 401002, msg);
	}
}

/* ---- shared by both transports ------------------------------------------ */

/* Register with body[0..n): {"registrationId":..,"payload":..,"tpm":..}
 * (all optional; an empty body is no payload). A TPM device's first PUT
 * (tpm, over HTTPS, no SAS token, no certificate) gets its challenge. */
static void do_register(struct dps *d, const char *regid, const char *token, size_t token_len,
                        struct net_conn *conn, bool https, const char *body, size_t n,
                        struct dps_reply *r)
{
	const char *peer = net_conn_peer(conn);
	json_t *payload, *tpm;
	char msg[300];
	if (dps__wire_register_body(regid, body, n, &payload, &tpm, msg, sizeof msg) != 0) {
		reply_error(r, 400, 400004, msg);
		return;
	}
	if (tpm && !https) {
		json_decref(payload);
		json_decref(tpm);
		log_at(LOG_INFO, "dps %s: mqtt %s: registration %s refused: TPM over MQTT", d->name,
		       peer, regid);
		reply_error(r, 400, 400004, tpm_https_only);
		return;
	}
	if (tpm && !token && !net_conn_peer_cert(conn)) {
		json_decref(payload);
		dps__tpm_challenge(d, regid, tpm, peer, r);
		json_decref(tpm);
		return;
	}
	json_decref(tpm);
	struct dps_auth auth;
	const char *why;
	unsigned wait;
	int rc = authenticate(d, regid, token, token_len, conn, &auth, &why, &wait);
	if (rc != 0) {
		json_decref(payload);
		log_at(LOG_INFO, "dps %s: %s: registration %s refused: %s", d->name, peer, regid,
		       rc == FH_EIO ? "store unavailable" : why);
		refuse_auth(r, rc, why, wait, token != NULL);
		return;
	}
	if (throttled(d, regid, r)) {
		dps__auth_clear(&auth);
		json_decref(payload);
		return;
	}
	dps__register(d, regid, &auth, payload, r);
}

/* ---- MQTT --------------------------------------------------------------- */

static void connack_and_close(struct dsession *s, uint8_t rc)
{
	mqtt_conn_refuse(s->conn, rc);
}

static bool on_connect(struct dsession *s, const struct mqtt_connect *c)
{
	struct dps *d = s->d;
	const char *peer = net_conn_peer(s->conn);
	char regid[ENROLLMENT_ID_MAX + 1];
	if (!c->has_username ||
	    !dps__wire_username(d->id_scope, c->username.p, c->username.len, regid)) {
		log_at(LOG_INFO,
		       "dps %s: mqtt %s: refused: user name is not "
		       "<idScope>/registrations/<registrationId>/api-version=...",
		       d->name, peer);
		connack_and_close(s, MQTT_RC_BAD_CREDENTIALS);
		return true;
	}
	if (c->client_id.len != strlen(regid) || memcmp(c->client_id.p, regid, c->client_id.len)) {
		log_at(LOG_INFO,
		       "dps %s: mqtt %s: refused %s: client id differs from the "
		       "registration id",
		       d->name, peer, regid);
		connack_and_close(s, MQTT_RC_ID_REJECTED);
		return true;
	}
	struct dps_auth auth;
	const char *why;
	unsigned wait;
	int rc = authenticate(d, regid, c->has_password ? (const char *)c->password : NULL,
	                      c->password_len, s->conn, &auth, &why, &wait);
	if (rc != 0) {
		log_at(LOG_INFO, "dps %s: mqtt %s: refused %s: %s", d->name, peer, regid,
		       rc == FH_EIO ? "store unavailable" : why);
		/* 3 (server unavailable): the SDKs retry it; a bad token is 5. */
		connack_and_close(s, rc == FH_EIO || rc == FH_EAGAIN ? MQTT_RC_UNAVAILABLE
		                                                     : MQTT_RC_NOT_AUTHORIZED);
		return true;
	}
	s->kind = auth.kind;
	snprintf(s->enrollment_id, sizeof s->enrollment_id, "%s", auth.enrollment_id);
	s->next = d->sessions;
	if (d->sessions)
		d->sessions->prev = s;
	d->sessions = s;
	s->listed = true;
	dps__auth_clear(&auth);
	snprintf(s->regid, sizeof s->regid, "%s", regid);
	if (c->has_password) { /* else the certificate is checked again */
		s->token = xmalloc(c->password_len + 1u);
		memcpy(s->token, c->password, c->password_len);
		s->token[c->password_len] = '\0';
		s->token_len = c->password_len;
	}
	s->connected = true;
	net_conn_set_idle_timeout(s->conn, c->keepalive ? (uint64_t)c->keepalive * 1500 : 0);
	struct buf b = BUF_INIT;
	mqtt_encode_connack(&b, false, MQTT_RC_ACCEPTED);
	send_buf(s, &b);
	buf_free(&b);
	log_at(LOG_DEBUG, "dps %s: mqtt %s: %s connected", d->name, peer, regid);
	return true;
}

static bool on_publish(struct dsession *s, const struct mqtt_publish *pub)
{
	char rid[DPS_RID_MAX + 1], op[DPS_OPID_MAX + 1];
	const char *peer = net_conn_peer(s->conn);
	if (pub->qos == 2) {
		log_at(LOG_INFO, "dps %s: mqtt %s: %s: QoS 2 is not supported; closing", s->d->name,
		       peer, s->regid);
		return false;
	}
	if (pub->qos == 1) {
		struct buf b = BUF_INIT;
		mqtt_encode_ack(&b, MQTT_PUBACK, pub->packet_id);
		send_buf(s, &b);
		buf_free(&b);
	}
	enum dps_topic kind = dps__wire_topic(pub->topic.p, pub->topic.len, rid, op);
	if (kind == DPS_TOPIC_UNKNOWN) {
		log_at(LOG_INFO, "dps %s: mqtt %s: %s: publish to unknown topic '%.*s'; closing",
		       s->d->name, peer, s->regid,
		       (int)(pub->topic.len > 200 ? 200 : pub->topic.len), pub->topic.p);
		return false;
	}
	if (kind == DPS_TOPIC_REGISTER) {
		do_register(s->d, s->regid, s->token, s->token_len, s->conn, false,
		            (const char *)pub->payload, pub->payload_len, mqtt_reply_new(s, rid));
	} else if (!op[0]) {
		reply_error(mqtt_reply_new(s, rid), 400, 400004,
		            "the operation status request names no operationId");
	} else {
		struct dps_reply *r = mqtt_reply_new(s, rid);
		if (!throttled(s->d, s->regid, r))
			dps__poll(s->d, s->regid, op, r);
	}
	return true;
}

static void on_subscribe(struct dsession *s, const struct mqtt_subscribe *sub, bool unsub)
{
	struct buf b = BUF_INIT;
	if (unsub) {
		mqtt_encode_ack(&b, MQTT_UNSUBACK, sub->packet_id);
	} else {
		uint8_t codes[MQTT_MAX_FILTERS];
		static const char res[] = "$dps/registrations/res/#";
		for (unsigned i = 0; i < sub->count; i++) {
			bool ok = sub->filters[i].len == sizeof res - 1 &&
			          memcmp(sub->filters[i].p, res, sizeof res - 1) == 0;
			codes[i] = ok ? (sub->qos[i] > 1 ? 1 : sub->qos[i]) : 0x80;
		}
		mqtt_encode_suback(&b, sub->packet_id, codes, sub->count);
	}
	send_buf(s, &b);
	buf_free(&b);
}

static bool handle_packet(struct dsession *s, const struct mqtt_packet *pk)
{
	if (!s->connected) {
		if (pk->type != MQTT_CONNECT)
			return false;
		return on_connect(s, &pk->u.connect);
	}
	struct buf b = BUF_INIT;
	switch (pk->type) {
	case MQTT_PUBLISH: return on_publish(s, &pk->u.publish);
	case MQTT_SUBSCRIBE:
	case MQTT_UNSUBSCRIBE:
		on_subscribe(s, &pk->u.subscribe, pk->type == MQTT_UNSUBSCRIBE);
		return true;
	case MQTT_PINGREQ:
		mqtt_encode_pingresp(&b);
		send_buf(s, &b);
		buf_free(&b);
		return true;
	case MQTT_PUBACK: return true;
	default: /* DISCONNECT, a second CONNECT, server-only packets */ return false;
	}
}

static long consume(void *ctx, const uint8_t *p, size_t n)
{
	struct dsession *s = ctx;
	size_t off = 0;
	while (off < n && s->conn && !net_conn_closed(s->conn)) {
		struct mqtt_packet pk;
		int rc = mqtt_parse(p + off, n - off, s->d->max_packet, &pk);
		if (rc == 0)
			break;
		if (rc < 0 || !handle_packet(s, &pk))
			return -1;
		off += (size_t)rc;
	}
	return (long)off;
}

static void on_data(struct net_conn *c, const uint8_t *p, size_t n)
{
	struct dsession *s = net_conn_app(c);
	s->refs++; /* a handler may close the connection under us */
	if (buf_feed(&s->in, p, n, consume, s) < 0 && s->conn)
		net_conn_close(s->conn);
	dsession_unref(s);
}

static void on_close(struct net_conn *c)
{
	struct dsession *s = net_conn_app(c);
	unlist(s);
	s->conn = NULL;
	dsession_unref(s);
}

static const struct net_conn_handler dsession_handler = {on_data, on_close};

void dps_mqtt_accept(struct dps *d, struct net_conn *c, const uint8_t *pending, size_t n)
{
	struct dsession *s = xcalloc(1, sizeof *s);
	s->d = d;
	s->conn = c;
	s->refs = 1; /* dropped in on_close */
	buf_init(&s->in);
	net_conn_set_handler(c, &dsession_handler, s);
	net_conn_set_deadline(c, MQTT_CONNECT_TIMEOUT_MS);
	if (n)
		on_data(c, pending, n);
}

/* ---- HTTPS -------------------------------------------------------------- */

void dps__device_http(struct dps *d, struct http_exchange *ex)
{
	struct http_request *req = ex->req;
	char regid[ENROLLMENT_ID_MAX + 1], op[DPS_OPID_MAX + 1];
	enum dps_path route = dps__wire_path(d->id_scope, req->path, regid, op);
	const char *peer = net_conn_peer(ex->conn);
	if (route == DPS_PATH_INVALID) {
		reply_error(http_reply_new(ex), 400, 400004,
		            "the registration id in the path is not valid (1-128 of lowercase "
		            "a-z, 0-9, '-', '.', '_', ':')");
		return;
	}
	const char *auth = http_request_header(req, "Authorization");
	if (route == DPS_PATH_REGISTER && req->verb == HTTP_VERB_PUT) {
		do_register(d, regid, auth, auth ? strlen(auth) : 0, ex->conn, true, req->body.data,
		            req->body.len, http_reply_new(ex));
		return;
	}
	bool is_poll = route == DPS_PATH_OPERATION && req->verb == HTTP_VERB_GET;
	bool is_status = route == DPS_PATH_STATUS && req->verb == HTTP_VERB_POST;
	if (!is_poll && !is_status) {
		reply_error(http_reply_new(ex), 404, 404000, "no such device API resource");
		return;
	}
	struct dps_auth a;
	const char *why;
	unsigned wait;
	int rc = authenticate(d, regid, auth, auth ? strlen(auth) : 0, ex->conn, &a, &why, &wait);
	if (rc != 0) {
		log_at(LOG_INFO, "dps %s: https %s: %s refused: %s", d->name, peer, regid, why);
		refuse_auth(http_reply_new(ex), rc, why, wait, auth != NULL);
		return;
	}
	dps__auth_clear(&a);
	struct dps_reply *r = http_reply_new(ex);
	if (throttled(d, regid, r))
		return;
	if (is_poll) {
		dps__poll(d, regid, op, r);
		return;
	}
	free(r); /* the status read answers the exchange itself */
	char *text = NULL;
	json_t *state = NULL;
	if (store_doc_get(store_reader(d->store), STORE_REGISTRATION, d->name, regid, &text) == 0)
		state = json_loads(text, 0, NULL);
	free(text);
	if (!state) {
		reply_error(http_reply_new(ex), 404, 404203, "this device has not registered yet");
		return;
	}
	json_t *pub = dps__public_state(state);
	char *body = json_dumps(pub, JSON_COMPACT);
	http_respond_json(ex, 200, NULL, body);
	free(body);
	json_decref(pub);
	json_decref(state);
}
