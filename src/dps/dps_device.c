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
	bool connecting; /* the CONNECT's credentials are being checked */
	bool paused;     /* reading paused meanwhile */
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

/* ---- authentication: prechecks, one store read, the decision ---------------
 *
 *   request --prechecks (no store, no HMAC)--> refused at once
 *           --store_read (dps__prefetch)--> decided on the loop --> then()
 *
 * An attest carries what its continuation needs: the MQTT session (a
 * reference; the CONNECT pauses reading meanwhile), or the reply of a
 * register / poll / status request. */
enum attest_for { FOR_CONNECT, FOR_REGISTER, FOR_POLL, FOR_STATUS };

struct attest {
	struct dps_prefetch pf; /* store_read's arg is the attest: pf comes first */
	struct dps *d;
	enum attest_for what;
	char regid[ENROLLMENT_ID_MAX + 1];
	char *token; /* a copy, or NULL: the certificate (or nothing) */
	size_t token_len;
	X509 *leaf; /* referenced */
	STACK_OF(X509) *chain;
	bool rated; /* the request's rate token is taken (an MQTT session's request) */
	char peer[96];
	struct dsession *s;   /* FOR_CONNECT (referenced) */
	uint16_t keepalive;   /* FOR_CONNECT */
	struct dps_reply *r;  /* the others */
	struct http_exchange *ex; /* FOR_STATUS */
	json_t *payload;      /* FOR_REGISTER */
	char op[DPS_OPID_MAX + 1]; /* FOR_POLL */
};

static void attest_free(struct attest *a)
{
	dps__prefetch_clear(&a->pf);
	if (a->token)
		OPENSSL_clear_free(a->token, a->token_len + 1);
	X509_free(a->leaf);
	sk_X509_pop_free(a->chain, X509_free);
	json_decref(a->payload);
	free(a);
}

static struct attest *attest_new(struct dps *d, enum attest_for what, const char *regid,
                                 const char *token, size_t n, struct net_conn *conn)
{
	struct attest *a = xcalloc(1, sizeof *a);
	a->d = d;
	a->what = what;
	snprintf(a->regid, sizeof a->regid, "%s", regid);
	snprintf(a->peer, sizeof a->peer, "%s", net_conn_peer(conn));
	if (token) {
		a->token = xmalloc(n + 1);
		memcpy(a->token, token, n);
		a->token[n] = '\0';
		a->token_len = n;
	} else if ((a->leaf = net_conn_peer_cert(conn))) {
		X509_up_ref(a->leaf);
		STACK_OF(X509) *chain = net_conn_peer_chain(conn);
		a->chain = chain ? X509_chain_up_ref(chain) : NULL;
	}
	return a;
}

static void attested(struct attest *a, int rc, struct dps_auth *auth, const char *why,
                     unsigned wait);

static int attest_work(void *arg, struct store_txn *t)
{
	return dps__prefetch(arg, t); /* pf is the attest's first member */
}

static void attest_done(void *arg, int rc)
{
	struct attest *a = arg;
	struct dps *d = a->d;
	struct dps_auth auth;
	memset(&auth, 0, sizeof auth);
	const char *why = "the service cannot read its store";
	unsigned wait = 0;
	int64_t now_s = clock_now_ms() / 1000;
	if (rc != 0) {
		rc = FH_EIO;
	} else if (a->token) {
		rc = dps__authenticate(d, a->regid, a->token, a->token_len, now_s, &a->pf, &auth,
		                       &why, &wait);
	} else if (a->leaf) {
		rc = dps__authenticate_x509(d, a->regid, a->leaf, a->chain, now_s, &a->pf, &auth,
		                            &why, &wait);
	} else {
		rc = FH_EAUTH;
		why = a->pf.rec && strcmp(enrollment_attestation_type(a->pf.rec), "tpm") == 0
		          ? tpm_https_only
		          : "no SAS token and no client certificate";
	}
	attested(a, rc, &auth, why, wait);
	dps__auth_clear(&auth);
	attest_free(a);
}

/* Authenticates a's request for its registration id: with its SAS token
 * when it has one, else with the TLS client certificate; then attested()
 * goes on (now, when a precheck refuses, or after the store read). */
static void authenticate(struct attest *a)
{
	struct dps *d = a->d;
	int64_t now_s = clock_now_ms() / 1000;
	const char *why = NULL;
	unsigned wait = 0;
	int rc = 0;
	if (a->token) {
		struct sas_token t;
		rc = dps__sas_precheck(d, a->regid, a->token, a->token_len, now_s, &t, &why, &wait);
	} else if (a->leaf) {
		rc = dps__x509_precheck(d, a->regid, a->leaf, a->chain, now_s, &why, &wait);
	}
	if (rc != 0) {
		struct dps_auth none;
		memset(&none, 0, sizeof none);
		attested(a, rc, &none, why, wait);
		attest_free(a);
		return;
	}
	dps__prefetch_init(d, a->regid, a->leaf != NULL, &a->pf);
	store_read(d->store, attest_work, attest_done, a);
}

/* Answers a failed authentication: 503 (store), 429 with retry-after (a
 * rate of dps__authenticate), else 401: for a SAS token without saying
 * which check failed, for a certificate with the reason (what is wrong
 * with a certificate is the device owner's to fix, and says nothing of
 * any key). */
static void refuse_auth(struct dps_reply *r, int rc, const char *why, unsigned wait,
                        bool with_token)
{
	if (rc == FH_EIO || rc == FH_EUNAVAIL) {
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

static void status_read(struct dps *d, struct http_exchange *ex, const char *regid);
static void connected(struct attest *a, int rc, struct dps_auth *auth, const char *why,
                      unsigned wait);

/* The request of a goes on, authenticated (rc 0, auth) or not. */
static void attested(struct attest *a, int rc, struct dps_auth *auth, const char *why,
                     unsigned wait)
{
	struct dps *d = a->d;
	if (a->what == FOR_CONNECT) {
		connected(a, rc, auth, why, wait);
		return;
	}
	struct dps_reply *r = a->r;
	if (rc != 0) {
		log_at(LOG_INFO, "dps %s: %s: %s %s refused: %s", d->name, a->peer,
		       a->what == FOR_REGISTER ? "registration" : "request of", a->regid,
		       rc == FH_EIO ? "store unavailable" : why);
		refuse_auth(r, rc, why, wait, a->token != NULL);
		return;
	}
	if (!a->rated && throttled(d, a->regid, r))
		return;
	switch (a->what) {
	case FOR_REGISTER:
		dps__register(d, a->regid, auth, a->payload, r);
		a->payload = NULL; /* taken */
		break;
	case FOR_POLL: dps__poll(d, a->regid, a->op, r); break;
	default:
		free(r); /* the status read answers the exchange itself */
		status_read(d, a->ex, a->regid);
		break;
	}
}

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
	/* A session's requests are its own (it authenticated at CONNECT): the
	 * rate is taken in their order, before the credentials are checked
	 * again. Over HTTPS only an authenticated request may spend it. */
	if (!https && throttled(d, regid, r)) {
		json_decref(payload);
		return;
	}
	struct attest *a = attest_new(d, FOR_REGISTER, regid, token, token_len, conn);
	a->rated = !https;
	a->r = r;
	a->payload = payload;
	authenticate(a);
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
	struct attest *a = attest_new(d, FOR_CONNECT, regid,
	                              c->has_password ? (const char *)c->password : NULL,
	                              c->password_len, s->conn);
	a->s = s;
	a->keepalive = c->keepalive;
	s->refs++; /* dropped in connected() */
	s->connecting = true;
	authenticate(a);
	if (s->connecting && s->conn) {
		/* Completes later: later bytes wait in the kernel. */
		s->paused = true;
		net_conn_pause(s->conn);
	}
	return true;
}

static long consume(void *ctx, const uint8_t *p, size_t n);

/* The CONNECT's credentials are checked: CONNACK, then what arrived
 * meanwhile. */
static void connected(struct attest *a, int rc, struct dps_auth *auth, const char *why,
                      unsigned wait)
{
	struct dsession *s = a->s;
	struct dps *d = a->d;
	s->connecting = false;
	if (!s->conn) {
		dsession_unref(s);
		return;
	}
	if (rc != 0) {
		log_at(LOG_INFO, "dps %s: mqtt %s: refused %s: %s", d->name, a->peer, a->regid,
		       rc == FH_EIO ? "store unavailable" : why);
		/* 3 (server unavailable): the SDKs retry it; a bad token is 5. */
		connack_and_close(s, rc == FH_EIO || rc == FH_EUNAVAIL || rc == FH_EAGAIN
		                             ? MQTT_RC_UNAVAILABLE
		                                                     : MQTT_RC_NOT_AUTHORIZED);
		dsession_unref(s);
		return;
	}
	s->kind = auth->kind;
	snprintf(s->enrollment_id, sizeof s->enrollment_id, "%s", auth->enrollment_id);
	s->next = d->sessions;
	if (d->sessions)
		d->sessions->prev = s;
	d->sessions = s;
	s->listed = true;
	snprintf(s->regid, sizeof s->regid, "%s", a->regid);
	if (a->token) { /* else the certificate is checked again */
		s->token = xmalloc(a->token_len + 1u);
		memcpy(s->token, a->token, a->token_len + 1u);
		s->token_len = a->token_len;
	}
	s->connected = true;
	net_conn_set_idle_timeout(s->conn, a->keepalive ? (uint64_t)a->keepalive * 1500 : 0);
	struct buf b = BUF_INIT;
	mqtt_encode_connack(&b, false, MQTT_RC_ACCEPTED);
	send_buf(s, &b);
	buf_free(&b);
	log_at(LOG_DEBUG, "dps %s: mqtt %s: %s connected", d->name, a->peer, a->regid);
	if (s->paused && s->conn) {
		s->paused = false;
		long used = s->in.len ? consume(s, (const uint8_t *)s->in.data, s->in.len) : 0;
		if (used < 0)
			net_conn_close(s->conn);
		else
			buf_consume(&s->in, (size_t)used);
		if (s->conn)
			net_conn_resume(s->conn);
	}
	dsession_unref(s);
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
	/* Connecting: what follows the CONNECT waits for its answer. */
	while (off < n && s->conn && !net_conn_closed(s->conn) && !s->connecting) {
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
	struct attest *a = attest_new(d, is_poll ? FOR_POLL : FOR_STATUS, regid, auth,
	                              auth ? strlen(auth) : 0, ex->conn);
	a->r = http_reply_new(ex);
	a->ex = ex;
	snprintf(a->op, sizeof a->op, "%s", op);
	authenticate(a);
}

/* POST /{scope}/registrations/{regid}: the stored registration state. */
struct status_job {
	struct http_exchange *ex;
	char scope[256];
	char regid[ENROLLMENT_ID_MAX + 1];
	json_t *state;
};

static int status_work(void *arg, struct store_txn *t)
{
	struct status_job *j = arg;
	int rc;
	j->state = dps__doc_get(t, STORE_REGISTRATION, j->scope, j->regid, &rc);
	return rc;
}

static void status_done(void *arg, int rc)
{
	struct status_job *j = arg;
	if (rc != 0 && rc != FH_ENOTFOUND) {
		reply_error(http_reply_new(j->ex), 503, 503000,
		            "the service cannot read its store; try again");
	} else if (!j->state) {
		reply_error(http_reply_new(j->ex), 404, 404203, "this device has not registered yet");
	} else {
		json_t *pub = dps__public_state(j->state);
		char *body = json_dumps(pub, JSON_COMPACT);
		http_respond_json(j->ex, 200, NULL, body);
		free(body);
		json_decref(pub);
	}
	json_decref(j->state);
	free(j);
}

static void status_read(struct dps *d, struct http_exchange *ex, const char *regid)
{
	struct status_job *j = xcalloc(1, sizeof *j);
	j->ex = ex;
	snprintf(j->scope, sizeof j->scope, "%s", d->name);
	snprintf(j->regid, sizeof j->regid, "%s", regid);
	store_read(d->store, status_work, status_done, j);
}
