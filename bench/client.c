/* MQTT client connections for the load generator (see client.h), on top
 * of tlsconn.
 *
 * Data path:
 *   tlsconn on_data --buf_feed--> mqtt_parse --> CONNACK handling / on_packet
 *   mqttc_send --> tlsconn_send
 *
 * Invariants: only the tail of a packet that is still incomplete is copied
 * into the connection's own buffer, which mqtt_parse bounds by
 * MQTTC_MAX_PACKET; the struct is freed in the TLS connection's on_close,
 * right after the owner's on_close. */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/mem.h"

enum state { ST_CONNECTING, ST_MQTT, ST_READY, ST_CLOSING };

struct mqttc {
	struct tlsconn *t;
	enum state state;
	const struct mqttc_handler *h;
	void *app;
	bool sent_since_ping;
	uint16_t keepalive;
	struct buf connect_pkt; /* the CONNECT, until the handshake is done */
	struct buf in;          /* the incomplete tail of a packet */
};

int mqttc_send(struct mqttc *c, const void *p, size_t n)
{
	if (c->state != ST_READY)
		return -1;
	c->sent_since_ping = true;
	return tlsconn_send(c->t, p, n);
}

bool mqttc_writable(const struct mqttc *c)
{
	return c->state == ST_READY && tlsconn_writable(c->t);
}

bool mqttc_ready(const struct mqttc *c)
{
	return c->state == ST_READY;
}

void *mqttc_app(const struct mqttc *c)
{
	return c->app;
}

static void send_simple(struct mqttc *c, enum mqtt_type type)
{
	struct buf b = BUF_INIT;
	mqtt_encode_simple(&b, type);
	tlsconn_send(c->t, b.data, b.len);
	buf_free(&b);
}

/* READY: a PINGREQ every keepalive/2 unless something else was sent. */
static void on_tick(struct tlsconn *t)
{
	struct mqttc *c = tlsconn_app(t);
	if (c->state != ST_READY)
		return;
	if (!c->sent_since_ping)
		send_simple(c, MQTT_PINGREQ);
	c->sent_since_ping = false;
}

/* Handles every complete packet of p[0..n); returns the bytes used or -1. */
static long consume(void *ctx, const unsigned char *p, size_t n)
{
	struct mqttc *c = ctx;
	size_t off = 0;
	while (off < n && (c->state == ST_MQTT || c->state == ST_READY)) {
		struct mqtt_packet pk;
		int rc = mqtt_parse(p + off, n - off, MQTTC_MAX_PACKET, &pk);
		if (rc == 0)
			break;
		if (rc < 0) {
			tlsconn_fail(c->t, TLSCONN_EPROTO, "%s packet from the server",
			             rc == FH_ETOOBIG ? "oversized" : "malformed");
			return -1;
		}
		if (c->state == ST_MQTT) {
			/* MQTT --CONNACK 0--> READY; anything else closes. */
			if (pk.type != MQTT_CONNACK) {
				tlsconn_fail(c->t, TLSCONN_EPROTO, "packet type %d before CONNACK",
				             pk.type);
				return -1;
			}
			if (pk.u.connack.rc != MQTT_RC_ACCEPTED) {
				tlsconn_fail(c->t, TLSCONN_EREFUSED, "CONNACK return code %u",
				             pk.u.connack.rc);
				return -1;
			}
			c->state = ST_READY;
			tlsconn_every(c->t, (uint64_t)c->keepalive * 500);
			c->h->on_ready(c);
		} else if (pk.type != MQTT_PINGRESP) {
			c->h->on_packet(c, &pk, p + off, (size_t)rc);
		}
		off += (size_t)rc;
	}
	return (long)off;
}

static void on_data(struct tlsconn *t, const uint8_t *p, size_t n)
{
	struct mqttc *c = tlsconn_app(t);
	if (c->state == ST_MQTT || c->state == ST_READY)
		buf_feed(&c->in, p, n, consume, c);
}

/* TLS open --CONNECT sent--> MQTT (the deadline keeps running to CONNACK). */
static void on_open(struct tlsconn *t)
{
	struct mqttc *c = tlsconn_app(t);
	c->state = ST_MQTT;
	tlsconn_send(t, c->connect_pkt.data, c->connect_pkt.len);
	buf_free(&c->connect_pkt);
}

static void on_batch_end(struct tlsconn *t)
{
	struct mqttc *c = tlsconn_app(t);
	if (c->state == ST_READY && c->h->on_batch_end)
		c->h->on_batch_end(c);
}

static void on_drain(struct tlsconn *t)
{
	struct mqttc *c = tlsconn_app(t);
	if (c->state == ST_READY && c->h->on_drain)
		c->h->on_drain(c);
}

static void on_close(struct tlsconn *t, enum tlsconn_error e, const char *detail)
{
	struct mqttc *c = tlsconn_app(t);
	c->h->on_close(c, e, detail);
	buf_free(&c->connect_pkt);
	buf_free(&c->in);
	free(c);
}

static const struct tlsconn_handler tls_handler = {on_open,  on_data, on_batch_end,
                                                   on_drain, on_tick, on_close};

struct mqttc *mqttc_open(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                         const char *tls_name, const struct mqttc_connect *cc,
                         const struct mqttc_handler *h, void *app)
{
	struct mqttc *c = xcalloc(1, sizeof *c);
	c->h = h;
	c->app = app;
	c->keepalive = cc->keepalive;
	c->state = ST_CONNECTING;
	buf_init(&c->in);
	buf_init(&c->connect_pkt);

	struct mqtt_connect m = {0};
	m.level = 4;
	m.clean = cc->clean;
	m.keepalive = cc->keepalive;
	m.client_id.p = cc->client_id;
	m.client_id.len = (uint16_t)strlen(cc->client_id);
	if (cc->username) {
		m.has_username = true;
		m.username.p = cc->username;
		m.username.len = (uint16_t)strlen(cc->username);
		if (cc->password) {
			m.has_password = true;
			m.password = (const uint8_t *)cc->password;
			m.password_len = (uint16_t)strlen(cc->password);
		}
	}
	mqtt_encode_connect(&c->connect_pkt, &m);
	c->t = tlsconn_connect(loop, ctx, addr, tls_name, cc->timeout_ms, &tls_handler, c);
	if (cc->cert)
		tlsconn_use_cert(c->t, cc->cert, cc->key);
	return c;
}

/* graceful: DISCONNECT, then the TLS connection's orderly close. */
void mqttc_close(struct mqttc *c, bool graceful)
{
	if (c->state == ST_CLOSING)
		return;
	if (graceful && c->state == ST_READY)
		send_simple(c, MQTT_DISCONNECT);
	c->state = ST_CLOSING;
	tlsconn_close(c->t, graceful);
}
