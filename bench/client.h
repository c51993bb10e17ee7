/* An MQTT 3.1.1 client connection over TLS on a libuv loop, for the load
 * generator: TCP, TLS through OpenSSL memory BIOs, CONNECT/CONNACK, packet
 * framing, keep-alive pings. It knows nothing about scenarios; the owner
 * sends whole encoded packets and receives parsed ones.
 *
 * States (each transition in client.c next to the code that makes it):
 *
 *   TCP --connected--> TLS --handshake done, CONNECT sent--> MQTT --CONNACK 0--> READY
 *    |                  |                                     |                   |
 *    +------------------+---- error, deadline, CONNACK != 0 --+---- error, EOF ---+--> CLOSED
 *                                                                                 |
 *                                                READY --mqttc_close(graceful)--> DRAINING
 *                           (DISCONNECT and close_notify queued, TCP shutdown once the
 *                            writes are done, then CLOSED at the server's EOF or 2 s later)
 *
 * Lifetime: mqttc_open never fails synchronously; whatever happens, on_close
 * runs exactly once, from libuv's close callback (never from inside a call
 * the owner made), and the connection is freed right after it returns. So
 * the owner may call mqttc_close or mqttc_send from any callback and keep
 * using its pointer until on_close.
 *
 * Backpressure: writes are encrypted at once and handed to the kernel with
 * uv_try_write; what the kernel does not take is queued in libuv. When that
 * queue is above MQTTC_HIGH_WATER, mqttc_writable() is false and the owner
 * should stop producing; on_drain runs when it falls to MQTTC_LOW_WATER.
 * Reading never pauses: every packet is handled as it is parsed, and the
 * partial-packet buffer is bounded by MQTTC_MAX_PACKET. */
#ifndef FH_BENCH_CLIENT_H
#define FH_BENCH_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "codec/mqtt.h"

#define MQTTC_HIGH_WATER (256 * 1024)
#define MQTTC_LOW_WATER (64 * 1024)
#define MQTTC_MAX_PACKET (1024 * 1024)

struct mqttc;

/* Why a connection closed. MQTTC_OK: the owner closed it. */
enum mqttc_error {
	MQTTC_OK = 0,
	MQTTC_ECONNECT, /* TCP connect failed */
	MQTTC_ETLS,     /* handshake or certificate verification failed, TLS error */
	MQTTC_EREFUSED, /* CONNACK with a non-zero return code */
	MQTTC_ETIMEOUT, /* not READY within the connect deadline */
	MQTTC_EPROTO,   /* the peer sent a malformed or unexpected packet */
	MQTTC_ECLOSED,  /* the peer closed the connection */
	MQTTC_EIO,      /* socket read or write error */
};

const char *mqttc_strerror(enum mqttc_error e);

struct mqttc_handler {
	/* CONNACK 0 arrived; the connection is READY. */
	void (*on_ready)(struct mqttc *c);
	/* A packet arrived while READY (PINGRESP is consumed here). raw/len
	 * are the packet's bytes (for fields the codec does not decode, such
	 * as SUBACK return codes); all pointers are borrowed for the call. */
	void (*on_packet)(struct mqttc *c, const struct mqtt_packet *pk, const uint8_t *raw,
	                  size_t len);
	/* Every packet of one socket read has been delivered: the place to
	 * answer them with one write. May be NULL. */
	void (*on_batch_end)(struct mqttc *c);
	/* The write queue fell back to MQTTC_LOW_WATER. May be NULL. */
	void (*on_drain)(struct mqttc *c);
	/* The connection is gone; detail is a short static or formatted text
	 * (borrowed for the call). The struct is freed when this returns. */
	void (*on_close)(struct mqttc *c, enum mqttc_error e, const char *detail);
};

struct mqttc_connect {
	const char *client_id;
	const char *username; /* NULL: no user name (and no password) */
	const char *password; /* NULL: none */
	uint16_t keepalive;   /* seconds; a PINGREQ goes out every keepalive/2 */
	bool clean;
	uint64_t timeout_ms; /* deadline for TCP + TLS + CONNACK */
};

/* A client TLS context: TLS 1.2+, the server verified against ca_file
 * (insecure: not verified at all), SSL_MODE_RELEASE_BUFFERS. Returns NULL
 * with a message in err. */
SSL_CTX *mqttc_tls_ctx(const char *ca_file, bool insecure, char *err, size_t errlen);

/* Starts connecting to addr. tls_name is sent as SNI and verified against
 * the certificate; an IP literal is verified as an IP address and sends no
 * SNI. ctx, the strings in cc and tls_name are copied or used before the
 * call returns, except ctx, which must outlive the connection. */
struct mqttc *mqttc_open(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                         const char *tls_name, const struct mqttc_connect *cc,
                         const struct mqttc_handler *h, void *app);
void *mqttc_app(const struct mqttc *c);
bool mqttc_ready(const struct mqttc *c);
/* Sends whole encoded packets (copied). Returns 0, or -1 when the
 * connection is not READY (the data is dropped). */
int mqttc_send(struct mqttc *c, const void *p, size_t n);
/* False while the write queue is above the high-water mark. */
bool mqttc_writable(const struct mqttc *c);
/* graceful: when READY, send DISCONNECT and close_notify and let them
 * drain; otherwise (or when not READY) close at once. Idempotent. */
void mqttc_close(struct mqttc *c, bool graceful);

#endif
