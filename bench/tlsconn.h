/* A TLS connection on a libuv loop, for the load generator: TCP, TLS
 * through OpenSSL memory BIOs, backpressure and an orderly close. Client
 * side (tlsconn_connect) or server side (tlsconn_accept, for the local
 * webhook). It knows nothing of MQTT or HTTP: the owner gets plaintext and
 * frames it itself (mqttc in client.c, httpc in httpc.c, the webhook in
 * webhook.c).
 *
 * States (each transition in tlsconn.c next to the code that makes it):
 *
 *   TCP --connected (client) / accepted (server)--> TLS --handshake done--> OPEN
 *    |                                               |                       |
 *    +------------- error, deadline -----------------+---- error, EOF -------+--> CLOSED
 *                                                                            |
 *                                          OPEN --tlsconn_close(graceful)--> DRAINING
 *                        (close_notify queued, TCP shutdown once the writes are done,
 *                         then CLOSED at the peer's EOF or 2 s later)
 *
 * Lifetime: opening never fails synchronously; whatever happens, on_close
 * runs exactly once, from libuv's close callback (never from inside a call
 * the owner made), and the connection is freed right after it returns. So
 * the owner may call tlsconn_close or tlsconn_send from any callback and
 * keep using its pointer until on_close.
 *
 * Backpressure: writes are encrypted at once and handed to the kernel with
 * uv_try_write; what the kernel does not take is queued in libuv. While
 * that queue is above TLSCONN_HIGH_WATER, tlsconn_writable() is false and
 * the owner should stop producing; on_drain runs when it falls to
 * TLSCONN_LOW_WATER. Reading never pauses.
 *
 * One timer per connection serves the owner: a deadline (the connection
 * fails with TLSCONN_ETIMEOUT when it fires; armed at open for TCP + TLS,
 * which the owner may extend to its first answer) or a periodic tick
 * (keep-alive pings), never both at once. */
#ifndef FH_BENCH_TLSCONN_H
#define FH_BENCH_TLSCONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define TLSCONN_HIGH_WATER (256 * 1024)
#define TLSCONN_LOW_WATER (64 * 1024)

struct tlsconn;

/* Why a connection closed. TLSCONN_OK: the owner closed it. */
enum tlsconn_error {
	TLSCONN_OK = 0,
	TLSCONN_ECONNECT, /* TCP connect failed */
	TLSCONN_ETLS,     /* handshake or certificate verification failed, TLS error */
	TLSCONN_EREFUSED, /* the owner's protocol refused (MQTT CONNACK != 0) */
	TLSCONN_ETIMEOUT, /* a deadline passed */
	TLSCONN_EPROTO,   /* the peer sent something malformed or unexpected */
	TLSCONN_ECLOSED,  /* the peer closed the connection */
	TLSCONN_EIO,      /* socket read or write error */
};

const char *tlsconn_strerror(enum tlsconn_error e);

struct tlsconn_handler {
	/* The handshake is done; the connection is OPEN. */
	void (*on_open)(struct tlsconn *c);
	/* Plaintext arrived while OPEN (borrowed for the call). */
	void (*on_data)(struct tlsconn *c, const uint8_t *p, size_t n);
	/* Everything of one socket read has been delivered: the place to
	 * answer with one write. May be NULL. */
	void (*on_batch_end)(struct tlsconn *c);
	/* The write queue fell back to TLSCONN_LOW_WATER. May be NULL. */
	void (*on_drain)(struct tlsconn *c);
	/* The periodic tick (tlsconn_every). May be NULL. */
	void (*on_tick)(struct tlsconn *c);
	/* The connection is gone; detail is borrowed for the call. The
	 * struct is freed when this returns. */
	void (*on_close)(struct tlsconn *c, enum tlsconn_error e, const char *detail);
};

/* A client TLS context: TLS 1.2+, the server verified against ca_file
 * (insecure: not verified at all), SSL_MODE_RELEASE_BUFFERS. Returns NULL
 * with a message in err. */
SSL_CTX *tlsconn_client_ctx(const char *ca_file, bool insecure, char *err, size_t errlen);
/* A server TLS context from a PEM certificate chain and key. */
SSL_CTX *tlsconn_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen);

/* Starts connecting to addr. tls_name is sent as SNI and verified against
 * the certificate; an IP literal is verified as an IP address and sends no
 * SNI. ctx must outlive the connection. timeout_ms bounds TCP + TLS. */
/* Presents cert (with key) as this client's certificate: call right
 * after tlsconn_connect, before its handshake starts. Both are
 * referenced, not copied. */
void tlsconn_use_cert(struct tlsconn *c, X509 *cert, EVP_PKEY *key);

struct tlsconn *tlsconn_connect(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                                const char *tls_name, uint64_t timeout_ms,
                                const struct tlsconn_handler *h, void *app);
/* Accepts a pending connection of server and starts the server handshake. */
struct tlsconn *tlsconn_accept(uv_stream_t *server, SSL_CTX *ctx, uint64_t timeout_ms,
                               const struct tlsconn_handler *h, void *app);

void *tlsconn_app(const struct tlsconn *c);
bool tlsconn_open(const struct tlsconn *c);
/* Encrypts and sends p[0..n). Returns 0, or -1 when not OPEN (dropped). */
int tlsconn_send(struct tlsconn *c, const void *p, size_t n);
/* False while the write queue is above the high-water mark. */
bool tlsconn_writable(const struct tlsconn *c);
/* Arms (ms > 0) or disarms (0) the deadline; stops the tick. */
void tlsconn_deadline(struct tlsconn *c, uint64_t ms);
/* Calls on_tick every ms (0 stops it); disarms the deadline. */
void tlsconn_every(struct tlsconn *c, uint64_t ms);
/* Closes with e and a formatted detail (the owner's protocol failed).
 * Only the first failure is recorded. */
void tlsconn_fail(struct tlsconn *c, enum tlsconn_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* graceful: when OPEN, send close_notify and let the writes drain;
 * otherwise close at once. Idempotent. */
void tlsconn_close(struct tlsconn *c, bool graceful);

#endif
