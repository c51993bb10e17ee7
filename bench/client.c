/* MQTT over TLS client connections for the load generator (see client.h).
 *
 * Data path:
 *   socket --uv_read--> rbio --SSL_read--> MQTT framing (mqtt_parse) --> on_packet
 *   mqttc_send --SSL_write--> wbio --uv_try_write, else uv_write--> socket
 *
 * Invariants: every SSL call is preceded by ERR_clear_error() and followed
 * by flush_wbio() (TLS 1.3 session tickets and alerts appear as output of
 * SSL_read too); the read buffer and the plaintext buffer are shared by all
 * connections of the loop, which is safe because BIO_write copies and the
 * plaintext is parsed before the next read; only the tail of a packet that
 * is still incomplete is copied into the connection's own buffer, which
 * mqtt_parse bounds by MQTTC_MAX_PACKET; the struct is freed only in the
 * close callback of its last handle, after libuv has cancelled (and called
 * back) every pending write, shutdown and connect request. */
#include "client.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/mem.h"

#define READ_CHUNK (64 * 1024)
#define PLAIN_CHUNK (16 * 1024)
#define DRAIN_MS 2000 /* how long a graceful close waits for the server's EOF */

enum state { ST_TCP, ST_TLS, ST_MQTT, ST_READY, ST_DRAINING, ST_CLOSED };

struct mqttc {
	uv_tcp_t tcp;
	uv_timer_t timer; /* connect deadline, then keep-alive */
	uv_connect_t connect_req;
	uv_shutdown_t shutdown_req;
	SSL *ssl;
	BIO *rbio, *wbio; /* owned by ssl */
	enum state state;
	enum mqttc_error err;
	char detail[160];
	const struct mqttc_handler *h;
	void *app;
	int handles_open;
	bool blocked; /* the queue went above HIGH_WATER; on_drain is owed */
	bool sent_since_ping;
	uint16_t keepalive;
	uint64_t timeout_ms;
	size_t queued;          /* bytes handed to uv_write, not yet written */
	struct buf connect_pkt; /* the CONNECT, until the handshake is done */
	struct buf in;          /* the incomplete tail of a packet */
};

static void fail(struct mqttc *c, enum mqttc_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *mqttc_strerror(enum mqttc_error e)
{
	switch (e) {
	case MQTTC_OK: return "ok";
	case MQTTC_ECONNECT: return "TCP connect failed";
	case MQTTC_ETLS: return "TLS failure";
	case MQTTC_EREFUSED: return "CONNECT refused";
	case MQTTC_ETIMEOUT: return "connect timed out";
	case MQTTC_EPROTO: return "protocol error";
	case MQTTC_ECLOSED: return "closed by the peer";
	case MQTTC_EIO: return "socket error";
	}
	return "?";
}

/* ---- TLS context ---------------------------------------------------------- */

SSL_CTX *mqttc_tls_ctx(const char *ca_file, bool insecure, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (insecure) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		snprintf(err, errlen, "cannot load CA file %s: %s", ca_file,
		         ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

/* ---- closing -------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *hd)
{
	struct mqttc *c = hd->data;
	if (--c->handles_open > 0)
		return;
	c->state = ST_CLOSED;
	c->h->on_close(c, c->err, c->detail[0] ? c->detail : mqttc_strerror(c->err));
	SSL_free(c->ssl);
	buf_free(&c->connect_pkt);
	buf_free(&c->in);
	free(c);
}

/* Closes both handles now; pending requests are cancelled by libuv. */
static void close_now(struct mqttc *c)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	c->state = ST_CLOSED;
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* Records the first failure and closes. Later failures (often consequences
 * of the first) are not recorded. */
static void fail(struct mqttc *c, enum mqttc_error e, const char *fmt, ...)
{
	if (c->state == ST_CLOSED)
		return;
	if (c->err == MQTTC_OK && c->state != ST_DRAINING) {
		c->err = e;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->detail, sizeof c->detail, fmt, ap);
		va_end(ap);
	}
	close_now(c);
}

/* ---- writing -------------------------------------------------------------- */

struct write_req {
	uv_write_t req;
	struct mqttc *c;
	size_t n;
	char data[];
};

static void on_written(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct mqttc *c = w->c;
	c->queued -= w->n;
	free(w);
	if (status < 0) {
		if (status != UV_ECANCELED)
			fail(c, MQTTC_EIO, "write: %s", uv_strerror(status));
		return;
	}
	if (c->blocked && c->queued <= MQTTC_LOW_WATER) {
		c->blocked = false;
		if (c->state == ST_READY && c->h->on_drain)
			c->h->on_drain(c);
	}
}

/* Hands n bytes to the kernel: directly when nothing is queued ahead of
 * them, the rest through a copied uv_write. */
static void write_out(struct mqttc *c, const char *p, size_t n)
{
	if (c->queued == 0) {
		uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
		int k = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		if (k >= 0) {
			p += k;
			n -= (size_t)k;
			if (n == 0)
				return;
		} else if (k != UV_EAGAIN) {
			fail(c, MQTTC_EIO, "write: %s", uv_strerror(k));
			return;
		}
	}
	struct write_req *w = xmalloc(sizeof *w + n);
	memcpy(w->data, p, n);
	w->c = c;
	w->n = n;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
	int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
	if (rc != 0) {
		free(w);
		fail(c, MQTTC_EIO, "write: %s", uv_strerror(rc));
		return;
	}
	c->queued += n;
	if (c->queued > MQTTC_HIGH_WATER)
		c->blocked = true;
}

/* Moves what OpenSSL produced into the socket. */
static void flush_wbio(struct mqttc *c)
{
	static char chunk[READ_CHUNK]; /* loop thread only; written out before reuse */
	size_t pending;
	while ((pending = BIO_ctrl_pending(c->wbio)) > 0) {
		if (c->state == ST_CLOSED) {
			(void)BIO_reset(c->wbio);
			return;
		}
		int n = BIO_read(c->wbio, chunk,
		                 pending < sizeof chunk ? (int)pending : (int)sizeof chunk);
		if (n <= 0)
			return;
		write_out(c, chunk, (size_t)n);
	}
}

static int tls_write(struct mqttc *c, const void *p, size_t n)
{
	const char *q = p;
	while (n > 0) {
		ERR_clear_error();
		int k = SSL_write(c->ssl, q, n > INT32_MAX ? INT32_MAX : (int)n);
		if (k <= 0) {
			flush_wbio(c);
			fail(c, MQTTC_ETLS, "SSL_write: %s",
			     ERR_reason_error_string(ERR_get_error()));
			return -1;
		}
		q += k;
		n -= (size_t)k;
	}
	flush_wbio(c);
	c->sent_since_ping = true;
	return 0;
}

int mqttc_send(struct mqttc *c, const void *p, size_t n)
{
	if (c->state != ST_READY)
		return -1;
	return tls_write(c, p, n);
}

bool mqttc_writable(const struct mqttc *c)
{
	return c->state == ST_READY && !c->blocked;
}

bool mqttc_ready(const struct mqttc *c)
{
	return c->state == ST_READY;
}

void *mqttc_app(const struct mqttc *c)
{
	return c->app;
}

/* ---- timers --------------------------------------------------------------- */

static void on_connect_deadline(uv_timer_t *t)
{
	struct mqttc *c = t->data;
	static const char *const names[] = {"TCP connect", "TLS handshake", "CONNACK"};
	fail(c, MQTTC_ETIMEOUT, "no %s within %llu ms",
	     c->state <= ST_MQTT ? names[c->state] : "answer", (unsigned long long)c->timeout_ms);
}

/* READY: a PINGREQ every keepalive/2 unless something else was sent. */
static void on_keepalive(uv_timer_t *t)
{
	struct mqttc *c = t->data;
	if (c->state != ST_READY)
		return;
	if (!c->sent_since_ping) {
		struct buf b = BUF_INIT;
		mqtt_encode_simple(&b, MQTT_PINGREQ);
		tls_write(c, b.data, b.len);
		buf_free(&b);
	}
	c->sent_since_ping = false;
}

/* ---- reading -------------------------------------------------------------- */

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
			fail(c, MQTTC_EPROTO, "%s packet from the server",
			     rc == FH_ETOOBIG ? "oversized" : "malformed");
			return -1;
		}
		if (c->state == ST_MQTT) {
			/* MQTT --CONNACK 0--> READY; anything else closes. */
			if (pk.type != MQTT_CONNACK) {
				fail(c, MQTTC_EPROTO, "packet type %d before CONNACK", pk.type);
				return -1;
			}
			if (pk.u.connack.rc != MQTT_RC_ACCEPTED) {
				fail(c, MQTTC_EREFUSED, "CONNACK return code %u", pk.u.connack.rc);
				return -1;
			}
			c->state = ST_READY;
			if (c->keepalive) {
				uint64_t every = (uint64_t)c->keepalive * 500;
				uv_timer_start(&c->timer, on_keepalive, every, every);
			} else {
				uv_timer_stop(&c->timer);
			}
			c->h->on_ready(c);
		} else if (pk.type != MQTT_PINGRESP) {
			c->h->on_packet(c, &pk, p + off, (size_t)rc);
		}
		off += (size_t)rc;
	}
	return (long)off;
}

static void read_plaintext(struct mqttc *c)
{
	static uint8_t plain[PLAIN_CHUNK]; /* parsed before the next SSL_read */
	while (c->state == ST_MQTT || c->state == ST_READY || c->state == ST_DRAINING) {
		ERR_clear_error();
		int k = SSL_read(c->ssl, plain, sizeof plain);
		if (k > 0) {
			if (c->state == ST_DRAINING)
				continue; /* answers after our DISCONNECT: nobody waits */
			if (buf_feed(&c->in, plain, (size_t)k, consume, c) < 0)
				return;
			continue;
		}
		int e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		if (e == SSL_ERROR_ZERO_RETURN)
			fail(c, MQTTC_ECLOSED, "TLS close_notify from the server");
		else
			fail(c, MQTTC_ETLS, "SSL_read: %s",
			     e == SSL_ERROR_SSL ? ERR_reason_error_string(ERR_get_error())
			                        : "connection error");
		return;
	}
}

static void alloc_cb(uv_handle_t *hd, size_t suggested, uv_buf_t *b)
{
	static char chunk[READ_CHUNK]; /* copied into the rbio at once */
	*b = uv_buf_init(chunk, sizeof chunk);
}

static void handshake(struct mqttc *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	flush_wbio(c);
	if (r == 1) {
		/* TLS --handshake done--> MQTT: send the CONNECT. */
		c->state = ST_MQTT;
		ERR_clear_error();
		int k = SSL_write(c->ssl, c->connect_pkt.data, (int)c->connect_pkt.len);
		flush_wbio(c);
		buf_free(&c->connect_pkt);
		if (k <= 0)
			fail(c, MQTTC_ETLS, "SSL_write: %s",
			     ERR_reason_error_string(ERR_get_error()));
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	long v = SSL_get_verify_result(c->ssl);
	if (v != X509_V_OK)
		fail(c, MQTTC_ETLS, "certificate verification failed: %s",
		     X509_verify_cert_error_string(v));
	else
		fail(c, MQTTC_ETLS, "handshake failed: %s",
		     ERR_reason_error_string(ERR_get_error()));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct mqttc *c = s->data;
	if (nread == 0 || c->state == ST_CLOSED)
		return;
	if (nread < 0) {
		if (c->state == ST_DRAINING)
			close_now(c);
		else if (nread == UV_EOF)
			fail(c, MQTTC_ECLOSED, "connection closed by the server");
		else
			fail(c, MQTTC_EIO, "read: %s", uv_strerror((int)nread));
		return;
	}
	BIO_write(c->rbio, b->base, (int)nread);
	if (c->state == ST_TLS)
		handshake(c);
	if (c->state == ST_MQTT || c->state == ST_READY || c->state == ST_DRAINING) {
		read_plaintext(c);
		flush_wbio(c);
	}
	if (c->state == ST_READY && c->h->on_batch_end)
		c->h->on_batch_end(c);
}

static void on_connected(uv_connect_t *req, int status)
{
	struct mqttc *c = req->data;
	if (status == UV_ECANCELED || c->state == ST_CLOSED)
		return;
	if (status < 0) {
		fail(c, MQTTC_ECONNECT, "connect: %s", uv_strerror(status));
		return;
	}
	/* TCP --connected--> TLS: the ClientHello goes out. */
	uv_tcp_nodelay(&c->tcp, 1);
	c->state = ST_TLS;
	int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
	if (rc != 0) {
		fail(c, MQTTC_EIO, "read: %s", uv_strerror(rc));
		return;
	}
	handshake(c);
}

/* ---- opening ---------------------------------------------------------------- */

static bool is_ip(const char *s)
{
	unsigned char a[16];
	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

struct mqttc *mqttc_open(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                         const char *tls_name, const struct mqttc_connect *cc,
                         const struct mqttc_handler *h, void *app)
{
	struct mqttc *c = xcalloc(1, sizeof *c);
	c->h = h;
	c->app = app;
	c->keepalive = cc->keepalive;
	c->timeout_ms = cc->timeout_ms;
	c->state = ST_TCP;
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

	c->ssl = SSL_new(ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	if (!c->ssl || !c->rbio || !c->wbio) {
		fprintf(stderr, "loadgen: out of memory (SSL_new)\n");
		abort();
	}
	BIO_set_mem_eof_return(c->rbio, -1);
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_connect_state(c->ssl);
	if (is_ip(tls_name)) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), tls_name);
	} else {
		SSL_set_tlsext_host_name(c->ssl, tls_name);
		SSL_set1_host(c->ssl, tls_name);
	}

	uv_tcp_init(loop, &c->tcp);
	uv_timer_init(loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->connect_req.data = c;
	c->shutdown_req.data = c;
	c->handles_open = 2;
	uv_timer_start(&c->timer, on_connect_deadline, c->timeout_ms, 0);
	int rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connected);
	if (rc != 0)
		fail(c, MQTTC_ECONNECT, "connect: %s", uv_strerror(rc));
	return c;
}

/* ---- closing by the owner ----------------------------------------------------- */

/* DRAINING ends with the server's EOF (on_read), or here. */
static void on_drain_deadline(uv_timer_t *t)
{
	close_now(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct mqttc *c = req->data;
	if (status < 0)
		close_now(c);
}

void mqttc_close(struct mqttc *c, bool graceful)
{
	if (c->state == ST_CLOSED || c->state == ST_DRAINING)
		return;
	if (!graceful || c->state != ST_READY) {
		close_now(c);
		return;
	}
	/* READY --graceful close--> DRAINING */
	struct buf b = BUF_INIT;
	mqtt_encode_simple(&b, MQTT_DISCONNECT);
	tls_write(c, b.data, b.len);
	buf_free(&b);
	if (c->state != ST_READY)
		return; /* the write failed and closed it */
	c->state = ST_DRAINING;
	uv_timer_start(&c->timer, on_drain_deadline, DRAIN_MS, 0);
	ERR_clear_error();
	SSL_shutdown(c->ssl);
	flush_wbio(c);
	if (c->state == ST_CLOSED)
		return;
	if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		close_now(c);
}
