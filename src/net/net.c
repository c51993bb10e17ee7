/* Listeners and TLS connections on the libuv loop (see net.h).
 *
 * Data path of a connection:
 *   socket --uv_read--> rbio --SSL_read--> [ws frames] --> on_data
 *   net_conn_write --> [ws frame] --> out --(check phase) SSL_write--> wbio
 *       --uv_try_write/uv_write--> socket
 *
 * Output is coalesced: net_conn_write only appends plaintext to the
 * connection's out buffer and puts the connection on the dirty list; a
 * uv_check handle (which runs once per loop iteration, after every I/O
 * callback of that iteration, including the store's completion async)
 * encrypts each dirty connection's out buffer with one SSL_write and hands
 * the records to the kernel with one write. So the answers to all packets of
 * one socket read, or to all jobs of one store batch, cost one TLS call and
 * one syscall per connection instead of one each. Order is kept because every
 * plaintext byte goes through out; anything that must follow it (SSL_shutdown
 * in net_conn_close, a hard close) flushes out first.
 *
 * Invariants: every SSL call is preceded by ERR_clear_error() (the loop
 * thread's OpenSSL error queue is shared with libcurl's webhook calls, and
 * SSL_get_error would read their leftovers as this connection's failure) and
 * followed by flush_wbio(); reading is
 * stopped while the app paused the connection or the kernel write queue is
 * above HIGH_WATER (backpressure); on_close runs exactly once, from the
 * uv_close callback; the struct is freed when on_close has run and the last
 * reference is gone. */
#include "net/net.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/ws.h"

#define HIGH_WATER (1024 * 1024)
#define LOW_WATER (256 * 1024)
#define HANDSHAKE_MS 10000
#define READ_CHUNK 16384

struct net_tls {
	SSL_CTX *ctx;
};

struct listener {
	uv_tcp_t tcp;
	struct net_tls *tls;
	net_accept_fn on_accept;
	void *ctx;
	struct listener *next;
};

enum conn_state { C_HANDSHAKE, C_OPEN, C_CLOSING, C_CLOSED };

struct net_conn {
	uv_tcp_t tcp;
	uv_timer_t timer; /* handshake deadline, then idle timeout */
	SSL *ssl;
	BIO *rbio, *wbio;
	net_accept_fn on_accept; /* copied from the listener, which may go first */
	void *accept_ctx;
	enum conn_state state;
	const struct net_conn_handler *h;
	void *app;
	unsigned refs;
	int handles_open; /* tcp + timer */
	bool on_close_done;
	bool app_paused;
	bool reading;
	bool in_data;     /* inside on_data delivery */
	bool close_after_flush;
	uint64_t idle_ms;
	bool deadline;    /* the timer is a deadline: reads do not restart it */
	size_t queued;    /* bytes handed to uv_write not yet completed */
	struct buf out;   /* plaintext waiting for the check phase (coalesced) */
	bool dirty;       /* on the dirty list (holds a reference) */
	struct net_conn *dirty_next;
	char *sni;
	char local_ip[INET6_ADDRSTRLEN];
	char peer[INET6_ADDRSTRLEN + 8];
	/* WebSocket mode */
	bool ws;
	bool ws_in_message; /* a fragmented binary message is open (FIN not seen) */
	uint64_t ws_max;
	struct buf ws_in;   /* undecoded frame bytes */
	struct buf ws_msg;  /* payload scratch */
	/* Plaintext decrypted while paused, delivered on resume. */
	struct buf held;
	struct net_conn *prev, *next; /* all live connections */
};

static struct listener *listeners;
static struct net_conn *conns;
static uint64_t max_conns = 20000;
static struct net_stats stats;
/* Connections with plaintext in out, flushed by the check handle. */
static struct net_conn *dirty;
static uv_check_t flusher;
static bool flusher_open;

static void conn_close(struct net_conn *c);
static void update_reading(struct net_conn *c);
static void deliver(struct net_conn *c, const uint8_t *p, size_t n);

/* ---- TLS context --------------------------------------------------------- */

static int on_servername(SSL *ssl, int *alert, void *arg)
{
	struct net_conn *c = SSL_get_app_data(ssl);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (c && name && !c->sni)
		c->sni = xstrdup(name);
	return SSL_TLSEXT_ERR_OK;
}

static int accept_any_cert(int ok, X509_STORE_CTX *ctx)
{
	return 1; /* the application checks client certificates itself */
}

int net_tls_new(struct net_tls **out, const char *cert_path, const char *key_path, char *err,
		size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		snprintf(err, errlen, "TLS: cannot create a context");
		return FH_EIO;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Full handshakes only: the Azure SDKs do not resume sessions, and the
	 * two TLS 1.3 tickets OpenSSL sends by default (plus the TLS 1.2 session
	 * cache) cost every handshake work and memory for nothing. With
	 * AES-128-GCM/SHA-256 preferred (cheaper key schedule than SHA-384), a
	 * handshake costs the server 16 % fewer instructions (bench/README.md). */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
				      "TLS_AES_256_GCM_SHA384");
	SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
	/* Ask every client for a certificate and take whatever it sends (or
	 * none): a device's certificate is checked once its hub is known, after
	 * CONNECT or per request, and refused in the protocol with a message,
	 * never with a TLS alert (decisions.md 5). SAS clients send none. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any_cert);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
		snprintf(err, errlen, "TLS: cannot load certificate %s: %s", cert_path,
			 ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_free(ctx);
		return FH_EIO;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "TLS: cannot load private key %s (or it does not match %s): %s",
			 key_path, cert_path, ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_free(ctx);
		return FH_EIO;
	}
	*out = xcalloc(1, sizeof **out);
	(*out)->ctx = ctx;
	return 0;
}

void net_tls_free(struct net_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

/* ---- lifetime ---------------------------------------------------------------- */

static void maybe_free(struct net_conn *c)
{
	if (c->refs > 0 || c->handles_open > 0 || !c->on_close_done)
		return;
	if (c->ssl)
		SSL_free(c->ssl); /* frees the BIOs */
	free(c->sni);
	buf_free(&c->ws_in);
	buf_free(&c->ws_msg);
	buf_free(&c->held);
	buf_free(&c->out);
	free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct net_conn *c = h->data;
	if (--c->handles_open > 0)
		return;
	c->state = C_CLOSED;
	stats.open--;
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->h && c->h->on_close)
		c->h->on_close(c);
	c->on_close_done = true;
	maybe_free(c);
}

static void flush_out(struct net_conn *c);

/* Closes the handles now (pending writes are dropped by libuv). Plaintext
 * still coalescing in out is first handed to the kernel, as it would have
 * been without coalescing. */
static void conn_close(struct net_conn *c)
{
	if (c->state == C_CLOSED || c->handles_open == 0 || uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	if (c->state == C_OPEN && c->out.len)
		flush_out(c);
	if (c->state == C_CLOSED || uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	c->state = C_CLOSING;
	c->refs++; /* keep c alive until on_close */
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	c->refs--;
}

void net_conn_ref(struct net_conn *c)
{
	c->refs++;
}

void net_conn_unref(struct net_conn *c)
{
	if (--c->refs == 0)
		maybe_free(c);
}

bool net_conn_closed(const struct net_conn *c)
{
	return c->state == C_CLOSING || c->state == C_CLOSED || c->close_after_flush;
}

/* ---- writing ------------------------------------------------------------------- */

struct write_req {
	uv_write_t req;
	struct net_conn *c;
	size_t n;
	char data[];
};

static void on_written(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct net_conn *c = w->c;
	c->queued -= w->n;
	free(w);
	if (status < 0) {
		conn_close(c);
	} else if (c->close_after_flush && c->queued == 0) {
		conn_close(c);
	} else {
		update_reading(c);
	}
	net_conn_unref(c);
}

/* Moves what OpenSSL produced into the socket: straight from the BIO with
 * uv_try_write when nothing is queued before it, and what the kernel did not
 * take through a copied uv_write. */
static void flush_wbio(struct net_conn *c)
{
	size_t pending;
	while ((pending = BIO_ctrl_pending(c->wbio)) > 0) {
		if (c->state == C_CLOSING || c->state == C_CLOSED) {
			(void)BIO_reset(c->wbio);
			return;
		}
		if (c->queued == 0) {
			char *p;
			long len = BIO_get_mem_data(c->wbio, &p);
			if (len > 0) {
				uv_buf_t tb = uv_buf_init(p, (unsigned)len);
				int k = uv_try_write((uv_stream_t *)&c->tcp, &tb, 1);
				if (k == len) {
					(void)BIO_reset(c->wbio);
					continue;
				}
				if (k > 0) {
					char skip[4096];
					for (int left = k; left > 0;) {
						int r = BIO_read(c->wbio, skip,
								 left < (int)sizeof skip ? left : (int)sizeof skip);
						if (r <= 0)
							break;
						left -= r;
					}
					continue;
				}
				if (k != UV_EAGAIN && k != UV_ENOSYS) {
					(void)BIO_reset(c->wbio);
					conn_close(c);
					return;
				}
			}
			pending = BIO_ctrl_pending(c->wbio);
		}
		struct write_req *w = xmalloc(sizeof *w + pending);
		int n = BIO_read(c->wbio, w->data, (int)pending);
		if (n <= 0) {
			free(w);
			return;
		}
		w->c = c;
		w->n = (size_t)n;
		uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
		c->refs++;
		c->queued += (size_t)n;
		if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
			c->queued -= (size_t)n;
			c->refs--;
			free(w);
			conn_close(c);
			return;
		}
	}
	update_reading(c);
}

static int tls_write(struct net_conn *c, const void *p, size_t n)
{
	const uint8_t *q = p;
	while (n > 0) {
		ERR_clear_error();
		int k = SSL_write(c->ssl, q, n > INT32_MAX ? INT32_MAX : (int)n);
		if (k <= 0) {
			flush_wbio(c);
			conn_close(c);
			return FH_EIO;
		}
		q += k;
		n -= (size_t)k;
	}
	flush_wbio(c);
	return 0;
}

/* Encrypts and sends what out holds (one SSL_write, one write). */
static void flush_out(struct net_conn *c)
{
	if (!c->out.len)
		return;
	struct buf o = c->out;
	buf_init(&c->out); /* tls_write may close c, which flushes again */
	tls_write(c, o.data, o.len);
	buf_free(&o); /* an idle connection holds no output memory */
}

static void on_check(uv_check_t *h)
{
	while (dirty) {
		struct net_conn *c = dirty;
		dirty = c->dirty_next;
		c->dirty_next = NULL;
		c->dirty = false;
		if (c->state == C_OPEN)
			flush_out(c);
		else
			buf_reset(&c->out);
		net_conn_unref(c);
	}
	uv_check_stop(h);
}

static void mark_dirty(struct net_conn *c)
{
	if (c->dirty)
		return;
	if (!flusher_open) {
		uv_check_init(c->tcp.loop, &flusher);
		uv_unref((uv_handle_t *)&flusher); /* never keeps the loop alive */
		flusher_open = true;
	}
	if (!dirty)
		uv_check_start(&flusher, on_check);
	c->dirty = true;
	c->refs++;
	c->dirty_next = dirty;
	dirty = c;
}

/* Queues plaintext (or a WebSocket frame) in out, to be sent at the end of
 * this loop iteration together with whatever else the connection answers. */
static void queue_out(struct net_conn *c, bool frame, enum ws_opcode op, const void *p, size_t n)
{
	if (frame)
		ws_encode_frame(&c->out, op, p, n);
	else
		buf_append(&c->out, p, n);
	mark_dirty(c);
}

int net_conn_write(struct net_conn *c, const void *p, size_t n)
{
	if (c->state != C_OPEN || c->close_after_flush)
		return FH_EIO;
	queue_out(c, c->ws, WS_BINARY, p, n);
	return 0;
}

size_t net_conn_queued(const struct net_conn *c)
{
	return c->queued;
}

void net_conn_close(struct net_conn *c)
{
	if (c->state == C_CLOSING || c->state == C_CLOSED || c->close_after_flush)
		return;
	if (c->state == C_OPEN)
		flush_out(c);
	if (c->state == C_CLOSING || c->state == C_CLOSED)
		return;
	if (c->state == C_OPEN) {
		ERR_clear_error();
		SSL_shutdown(c->ssl);
		flush_wbio(c);
	}
	if (c->queued == 0 || c->state != C_OPEN) {
		conn_close(c);
		return;
	}
	c->close_after_flush = true;
	update_reading(c);
}

/* ---- reading -------------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char chunk[READ_CHUNK]; /* the loop thread only; consumed synchronously */
	*b = uv_buf_init(chunk, sizeof chunk);
}

static void restart_timer(struct net_conn *c);

static void read_plaintext(struct net_conn *c)
{
	uint8_t buf[READ_CHUNK];
	while (c->state == C_OPEN && !c->close_after_flush) {
		if (c->app_paused) {
			/* Keep decrypting into held so nothing is lost; bounded by
			 * the TLS record already received. */
			ERR_clear_error();
			int k = SSL_read(c->ssl, buf, sizeof buf);
			if (k <= 0)
				break;
			buf_append(&c->held, buf, (size_t)k);
			continue;
		}
		ERR_clear_error();
		int k = SSL_read(c->ssl, buf, sizeof buf);
		if (k > 0) {
			deliver(c, buf, (size_t)k);
			continue;
		}
		int e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		/* close_notify or error */
		if (e != SSL_ERROR_ZERO_RETURN)
			log_at(LOG_DEBUG, "tls %s: closing: %s", c->peer,
			       e == SSL_ERROR_SSL ? ERR_reason_error_string(ERR_get_error())
						  : "connection error");
		ERR_clear_error();
		flush_wbio(c);
		conn_close(c);
		return;
	}
	flush_wbio(c);
}

static void finish_handshake(struct net_conn *c)
{
	c->state = C_OPEN;
	uv_timer_stop(&c->timer);
	stats.accepted++;
	c->on_accept(c->accept_ctx, c);
	if (!c->h && c->state == C_OPEN) {
		conn_close(c); /* nobody took it */
		return;
	}
	restart_timer(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
	struct net_conn *c = s->data;
	if (nread < 0) {
		conn_close(c);
		return;
	}
	if (nread == 0)
		return;
	if (c->state != C_HANDSHAKE && c->state != C_OPEN)
		return;
	restart_timer(c);
	BIO_write(c->rbio, b->base, (int)nread);
	c->refs++;
	if (c->state == C_HANDSHAKE) {
		ERR_clear_error();
		int r = SSL_do_handshake(c->ssl);
		flush_wbio(c);
		if (r == 1) {
			finish_handshake(c);
		} else {
			int e = SSL_get_error(c->ssl, r);
			if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
				stats.handshake_failures++;
				log_at(LOG_DEBUG, "tls %s: handshake failed: %s", c->peer,
				       ERR_reason_error_string(ERR_get_error()));
				ERR_clear_error();
				conn_close(c);
			}
		}
	}
	if (c->state == C_OPEN)
		read_plaintext(c);
	net_conn_unref(c);
}

static void update_reading(struct net_conn *c)
{
	if (c->state == C_CLOSING || c->state == C_CLOSED)
		return;
	bool want = !c->app_paused && !c->close_after_flush && c->queued < HIGH_WATER;
	if (c->reading && !want && (c->app_paused || c->queued >= HIGH_WATER)) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	} else if (!c->reading && want && (c->queued <= LOW_WATER || c->state == C_HANDSHAKE)) {
		if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) == 0)
			c->reading = true;
	}
}

void net_conn_pause(struct net_conn *c)
{
	c->app_paused = true;
	update_reading(c);
}


void net_conn_resume(struct net_conn *c)
{
	if (!c->app_paused)
		return;
	c->app_paused = false;
	if (c->state != C_OPEN)
		return;
	if (c->held.len && !c->in_data) {
		struct buf h = c->held;
		buf_init(&c->held);
		c->refs++;
		deliver(c, (const uint8_t *)h.data, h.len);
		buf_free(&h);
		if (c->state == C_OPEN && !c->app_paused)
			read_plaintext(c);
		net_conn_unref(c);
	}
	update_reading(c);
}

/* ---- timers ------------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t)
{
	struct net_conn *c = t->data;
	if (c->state == C_HANDSHAKE)
		log_at(LOG_DEBUG, "tls %s: handshake timed out", c->peer);
	else
		log_at(LOG_DEBUG, "net %s: %s", c->peer,
		       c->deadline ? "deadline passed" : "idle timeout");
	conn_close(c);
}

static void restart_timer(struct net_conn *c)
{
	if (c->state == C_HANDSHAKE || c->deadline)
		return;
	if (c->idle_ms)
		uv_timer_start(&c->timer, on_timer, c->idle_ms, 0);
	else
		uv_timer_stop(&c->timer);
}

void net_conn_set_idle_timeout(struct net_conn *c, uint64_t ms)
{
	c->idle_ms = ms;
	c->deadline = false;
	if (c->state == C_OPEN)
		restart_timer(c);
}

void net_conn_set_deadline(struct net_conn *c, uint64_t ms)
{
	c->idle_ms = 0;
	c->deadline = true;
	if (c->state == C_OPEN)
		uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- WebSocket mode ------------------------------------------------------------------ */

static void ws_send_control(struct net_conn *c, enum ws_opcode op, const void *p, size_t n)
{
	queue_out(c, true, op, p, n);
}

static void ws_fail(struct net_conn *c, uint16_t code, const char *why)
{
	ws_encode_close(&c->out, code, why);
	net_conn_close(c); /* flushes out, the close frame last */
}

static void ws_input(struct net_conn *c, const uint8_t *p, size_t n)
{
	buf_append(&c->ws_in, p, n);
	size_t off = 0;
	while (c->state == C_OPEN && !c->close_after_flush) {
		struct ws_frame f;
		buf_reset(&c->ws_msg);
		int rc = ws_parse_frame((const uint8_t *)c->ws_in.data + off, c->ws_in.len - off,
					c->ws_max, &f, &c->ws_msg);
		if (rc == 0)
			break;
		if (rc < 0) {
			ws_fail(c, rc == FH_ETOOBIG ? 1009 : 1002,
				rc == FH_ETOOBIG ? "frame too large" : "protocol error");
			break;
		}
		off += (size_t)rc;
		switch (f.opcode) {
		case WS_BINARY:
		case WS_CONT:
			/* RFC 6455 5.4: a continuation only inside a fragmented
			 * message, a new message only after the last one ended. */
			if ((f.opcode == WS_CONT) != c->ws_in_message) {
				ws_fail(c, 1002, f.opcode == WS_CONT ? "continuation outside a message"
								     : "new message inside a fragmented one");
				break;
			}
			c->ws_in_message = !f.fin;
			if (c->ws_msg.len && c->h && c->h->on_data)
				c->h->on_data(c, (const uint8_t *)c->ws_msg.data, c->ws_msg.len);
			break;
		case WS_TEXT:
			ws_fail(c, 1003, "binary frames only");
			break;
		case WS_PING:
			ws_send_control(c, WS_PONG, c->ws_msg.data, c->ws_msg.len);
			break;
		case WS_PONG:
			break;
		case WS_CLOSE:
			ws_fail(c, 1000, "");
			break;
		}
	}
	if (off)
		buf_consume(&c->ws_in, off);
}

void net_conn_start_ws(struct net_conn *c, const uint8_t *rest, size_t n, uint64_t max_frame)
{
	c->ws = true;
	c->ws_max = max_frame;
	buf_init(&c->ws_in);
	buf_init(&c->ws_msg);
	if (n)
		ws_input(c, rest, n);
}

static void deliver(struct net_conn *c, const uint8_t *p, size_t n)
{
	if (c->app_paused || c->in_data) {
		buf_append(&c->held, p, n);
		return;
	}
	c->in_data = true;
	if (c->ws)
		ws_input(c, p, n);
	else if (c->h && c->h->on_data)
		c->h->on_data(c, p, n);
	c->in_data = false;
}

/* ---- accessors ------------------------------------------------------------------------- */

void net_conn_set_handler(struct net_conn *c, const struct net_conn_handler *h, void *app)
{
	c->h = h;
	c->app = app;
}

void *net_conn_app(const struct net_conn *c)
{
	return c->app;
}

const char *net_conn_sni(const struct net_conn *c)
{
	return c->sni;
}

const char *net_conn_local_ip(const struct net_conn *c)
{
	return c->local_ip;
}

const char *net_conn_peer(const struct net_conn *c)
{
	return c->peer;
}

void *net_conn_peer_cert(const struct net_conn *c)
{
	return c->ssl ? (void *)SSL_get0_peer_certificate(c->ssl) : NULL;
}

void *net_conn_peer_chain(const struct net_conn *c)
{
	return c->ssl ? (void *)SSL_get_peer_cert_chain(c->ssl) : NULL;
}

void net_get_stats(struct net_stats *out)
{
	*out = stats;
}

/* ---- listeners --------------------------------------------------------------------------- */

static void addr_text(const struct sockaddr_storage *ss, char *ip, size_t iplen, int *port)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		uv_ip6_name(a, ip, iplen);
		*port = ntohs(a->sin6_port);
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		uv_ip4_name(a, ip, iplen);
		*port = ntohs(a->sin_port);
	}
}

static void on_connection(uv_stream_t *server, int status)
{
	struct listener *l = server->data;
	if (status < 0)
		return;
	struct net_conn *c = xcalloc(1, sizeof *c);
	c->on_accept = l->on_accept;
	c->accept_ctx = l->ctx;
	uv_tcp_init(server->loop, &c->tcp);
	uv_timer_init(server->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->handles_open = 2;
	c->state = C_HANDSHAKE;
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	stats.open++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c);
		return;
	}
	if (stats.open > max_conns) {
		log_at(LOG_WARN, "net: refusing a connection: max_connections (%llu) reached",
		       (unsigned long long)max_conns);
		conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	struct sockaddr_storage ss;
	int len = sizeof ss, port = 0;
	char ip[INET6_ADDRSTRLEN] = "?";
	if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		addr_text(&ss, c->local_ip, sizeof c->local_ip, &port);
	len = sizeof ss;
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		addr_text(&ss, ip, sizeof ip, &port);
	snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
	c->ssl = SSL_new(l->tls->ctx);
	c->rbio = BIO_new(BIO_s_mem());
	c->wbio = BIO_new(BIO_s_mem());
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_accept_state(c->ssl);
	SSL_set_app_data(c->ssl, c);
	uv_timer_start(&c->timer, on_timer, HANDSHAKE_MS, 0);
	update_reading(c);
}

int net_listen(uv_loop_t *loop, struct net_tls *tls, const char *addr, int port,
	       net_accept_fn on_accept, void *ctx, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	const char *host = strcmp(addr, "localhost") == 0 ? "127.0.0.1" : addr;
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
		snprintf(err, errlen, "listen %s:%d: not an IP address", addr, port);
		return FH_EINVAL;
	}
	struct listener *l = xcalloc(1, sizeof *l);
	l->tls = tls;
	l->on_accept = on_accept;
	l->ctx = ctx;
	uv_tcp_init(loop, &l->tcp);
	l->tcp.data = l;
	int rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
	if (rc != 0) {
		snprintf(err, errlen, "bind %s:%d: %s", addr, port, uv_strerror(rc));
		uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
		return FH_EIO;
	}
	l->next = listeners;
	listeners = l;
	return 0;
}

static void free_listener(uv_handle_t *h)
{
	free(h->data);
}

void net_stop_listening(void)
{
	while (listeners) {
		struct listener *l = listeners;
		listeners = l->next;
		uv_close((uv_handle_t *)&l->tcp, free_listener);
	}
}

void net_close_all(void)
{
	for (struct net_conn *c = conns; c; c = c->next)
		conn_close(c);
	if (flusher_open) {
		on_check(&flusher); /* drops the dirty list's references */
		uv_close((uv_handle_t *)&flusher, NULL);
		flusher_open = false;
	}
}

void net_set_max_connections(unsigned n)
{
	max_conns = n;
}
