/* An MQTT 3.1.1 client connection for the load generator, on a TLS
 * connection (tlsconn.h): CONNECT/CONNACK, packet framing, keep-alive
 * pings. It knows nothing about scenarios; the owner sends whole encoded
 * packets and receives parsed ones.
 *
 *   TLS open --CONNECT sent--> MQTT --CONNACK 0--> READY
 *                               |                    |
 *                               +-- CONNACK != 0, malformed packet, any TLS failure --> CLOSED
 *
 * Lifetime and backpressure are the TLS connection's: on_close runs exactly
 * once, from libuv's close callback; mqttc_writable() is false while the
 * write queue is above TLSCONN_HIGH_WATER. The partial-packet buffer is
 * bounded by MQTTC_MAX_PACKET. The connect deadline covers TCP, TLS and
 * CONNACK. */
#ifndef FH_BENCH_CLIENT_H
#define FH_BENCH_CLIENT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "codec/mqtt.h"
#include "tlsconn.h"

#define MQTTC_MAX_PACKET (1024 * 1024)

struct mqttc;

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
	/* The write queue fell back to TLSCONN_LOW_WATER. May be NULL. */
	void (*on_drain)(struct mqttc *c);
	/* The connection is gone (TLSCONN_EREFUSED: CONNACK with a non-zero
	 * return code); detail is borrowed for the call. The struct is freed
	 * when this returns. */
	void (*on_close)(struct mqttc *c, enum tlsconn_error e, const char *detail);
};

struct mqttc_connect {
	const char *client_id;
	const char *username; /* NULL: no user name (and no password) */
	const char *password; /* NULL: none */
	uint16_t keepalive;   /* seconds; a PINGREQ goes out every keepalive/2 */
	bool clean;
	uint64_t timeout_ms; /* deadline for TCP + TLS + CONNACK */
	X509 *cert;          /* a TLS client certificate (with key), or NULL */
	EVP_PKEY *key;
};

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
