/* Listeners and connections on the libuv loop: TCP, TLS through OpenSSL
 * memory BIOs, and WebSocket framing once a connection is upgraded.
 *
 * Everything here runs on the loop thread. A connection is created by a
 * listener, does its TLS handshake, and is then handed to the accept
 * callback with its SNI name (if any) and local address, which pick the
 * virtual host. From then on the owner sets a handler and receives
 * plaintext bytes; writes are copied, encrypted and queued. When the kernel
 * write queue grows past a high-water mark, reading pauses until it drains
 * (backpressure), so a slow reader cannot make the server buffer without
 * bound.
 *
 * Lifetime: a connection is freed after its on_close callback has run and
 * its reference count (net_conn_ref/unref, starting at 1 owned by net) has
 * dropped to zero. Code that finishes work asynchronously (a store commit)
 * takes a reference and checks net_conn_closed() before writing.
 *
 * TLS: TLS 1.2 and 1.3, SSL_MODE_RELEASE_BUFFERS. The context can ask for a
 * client certificate without requiring one (for X.509 device auth later):
 * net_conn_peer_cert() returns it. */
#ifndef FH_NET_NET_H
#define FH_NET_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct net_tls;
struct net_conn;

struct net_conn_handler {
	/* Plaintext bytes arrived (unwrapped from WebSocket frames in ws mode). */
	void (*on_data)(struct net_conn *c, const uint8_t *p, size_t n);
	/* The connection is closed (peer, error, timeout, or net_conn_close).
	 * No further I/O is possible; the owner drops its pointer or its ref. */
	void (*on_close)(struct net_conn *c);
};

/* Called once per connection after the TLS handshake. The callee must call
 * net_conn_set_handler (or net_conn_close). */
typedef void (*net_accept_fn)(void *ctx, struct net_conn *c);

/* Loads a PEM certificate chain and key. Returns 0 or an error with a
 * message. */
int net_tls_new(struct net_tls **out, const char *cert_path, const char *key_path, char *err,
		size_t errlen);
void net_tls_free(struct net_tls *t);

/* Listens on addr:port ("127.0.0.1", "::1", "0.0.0.0"; port > 0). Each
 * accepted connection is TLS; on_accept(ctx, conn) runs after its handshake.
 * Handshakes that do not finish in 10 s are dropped. Returns 0 or an error
 * with a message (e.g. "bind 127.0.0.1:443: permission denied"). */
int net_listen(uv_loop_t *loop, struct net_tls *tls, const char *addr, int port,
	       net_accept_fn on_accept, void *ctx, char *err, size_t errlen);
/* Closes every listener (new connections are refused). */
void net_stop_listening(void);
/* Closes every connection at once (shutdown, after the last answers were
 * queued); their on_close callbacks run as the loop turns. */
void net_close_all(void);
/* Connections beyond n at once are closed as soon as they are accepted. */
void net_set_max_connections(unsigned n);

void net_conn_set_handler(struct net_conn *c, const struct net_conn_handler *h, void *app);
void *net_conn_app(const struct net_conn *c);
/* The TLS SNI host name, or NULL when the client sent none. */
const char *net_conn_sni(const struct net_conn *c);
/* Local IP address the connection arrived on, e.g. "127.0.0.4". */
const char *net_conn_local_ip(const struct net_conn *c);
/* "ip:port" of the peer, for logs. */
const char *net_conn_peer(const struct net_conn *c);
/* The client certificate (an X509 *), or NULL. Borrowed. It is whatever
 * the client sent: nothing about it is verified at the TLS layer. */
void *net_conn_peer_cert(const struct net_conn *c);
/* The certificates the client sent after its own (a STACK_OF(X509) *,
 * possibly empty), or NULL. Borrowed. */
void *net_conn_peer_chain(const struct net_conn *c);

/* Queues data (copied). In ws mode it is sent as one binary frame. Returns
 * 0, or FH_EIO when the connection is closing/closed (data dropped). */
int net_conn_write(struct net_conn *c, const void *p, size_t n);
/* Bytes queued for sending and not yet written to the socket: a writer
 * that produces without a request (a stream) waits while this is high. */
size_t net_conn_queued(const struct net_conn *c);
/* Sends what is queued, then closes. Idempotent. */
void net_conn_close(struct net_conn *c);
bool net_conn_closed(const struct net_conn *c);
void net_conn_ref(struct net_conn *c);
void net_conn_unref(struct net_conn *c);

/* Stop / resume delivering on_data (bytes stay in the kernel meanwhile). */
void net_conn_pause(struct net_conn *c);
void net_conn_resume(struct net_conn *c);
/* Closes the connection when no byte arrives for ms milliseconds (0 turns
 * it off). Any received byte restarts the timer. */
void net_conn_set_idle_timeout(struct net_conn *c, uint64_t ms);
/* Closes the connection ms milliseconds from now whatever arrives meanwhile
 * (a deadline for a CONNECT or a request: a peer dripping bytes cannot hold
 * it open). Replaces the idle timeout until the next
 * net_conn_set_idle_timeout. */
void net_conn_set_deadline(struct net_conn *c, uint64_t ms);

/* Switches to WebSocket framing (after the caller sent the 101 answer):
 * from now on incoming frames are unmasked and their payloads passed to
 * on_data as one byte stream (binary and continuation frames; text frames
 * close the connection with 1003), PING is answered with PONG, CLOSE is
 * answered and closes; writes become binary frames. rest holds bytes that
 * arrived after the upgrade request and are fed to the frame parser first.
 * max_frame bounds a frame's payload (larger: close 1009). */
void net_conn_start_ws(struct net_conn *c, const uint8_t *rest, size_t n, uint64_t max_frame);

/* Counters for metrics and tests. */
struct net_stats {
	uint64_t accepted, open, handshake_failures;
};
void net_get_stats(struct net_stats *out);

#endif
