/* An HTTP/1.1 keep-alive client connection for the load generator, on a
 * TLS connection (tlsconn.h). The owner writes whole requests (it builds
 * their text, so a run can pipeline several); responses are parsed with
 * http-parser and handed back one by one, in the order of the requests.
 *
 *   TLS open --> READY --response ... (Connection: close, error)--> CLOSED
 *
 * Only a response's status and the first HTTPC_MAX_BODY bytes of its body
 * are kept (enough for the error messages a run prints), unless the owner
 * asks for more with httpc_keep (whole query pages, one header). Lifetime and
 * backpressure are the TLS connection's: on_close runs exactly once, from
 * libuv's close callback. */
#ifndef FH_BENCH_HTTPC_H
#define FH_BENCH_HTTPC_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "tlsconn.h"

#define HTTPC_MAX_BODY 1024
#define HTTPC_MAX_HEADER 1024

struct httpc;

struct httpc_handler {
	/* The TLS handshake is done: requests may be sent. */
	void (*on_ready)(struct httpc *c);
	/* The next response arrived; body holds its first bytes (borrowed). */
	void (*on_response)(struct httpc *c, int status, const char *body, size_t len);
	/* Every response of one socket read has been delivered: the place to
	 * send the next requests with one write. May be NULL. */
	void (*on_batch_end)(struct httpc *c);
	/* The write queue fell back to TLSCONN_LOW_WATER. May be NULL. */
	void (*on_drain)(struct httpc *c);
	/* The connection is gone; the struct is freed when this returns. */
	void (*on_close)(struct httpc *c, enum tlsconn_error e, const char *detail);
};

/* As tlsconn_connect; timeout_ms bounds TCP + TLS. */
struct httpc *httpc_open(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                         const char *tls_name, uint64_t timeout_ms, const struct httpc_handler *h,
                         void *app);
void *httpc_app(const struct httpc *c);
bool httpc_ready(const struct httpc *c);
/* Sends whole requests. Returns 0, or -1 when not READY (dropped). */
int httpc_send(struct httpc *c, const void *p, size_t n);
bool httpc_writable(const struct httpc *c);
void httpc_close(struct httpc *c, bool graceful);
/* Keeps up to max_body bytes of every response body from now on (instead
 * of HTTPC_MAX_BODY), and the value of the response header named header
 * (case-insensitive; NULL: none), at most HTTPC_MAX_HEADER bytes of it. */
void httpc_keep(struct httpc *c, size_t max_body, const char *header);
/* During on_response: the kept header's value (borrowed; NULL when the
 * response had none or it was longer than HTTPC_MAX_HEADER), and whether
 * the body was longer than what was kept. */
const char *httpc_header(const struct httpc *c);
bool httpc_truncated(const struct httpc *c);

#endif
