/* HTTP/1.1 server exchanges on a net connection, using codec/http.
 *
 * Requests on one connection are handled one at a time, in order: while a
 * request is being handled (possibly asynchronously, e.g. waiting for a
 * commit), reading pauses; http_respond() sends the answer and resumes with
 * the next pipelined request. Keep-alive follows the request. Malformed
 * requests get their 4xx answer (400/413/414/431) and the connection is
 * closed. Connections idle for 60 s between requests are closed.
 *
 * An Upgrade request is passed to the handler like any other; the handler
 * either answers it normally or calls http_upgrade_websocket(). */
#ifndef FH_NET_HTTP_SERVER_H
#define FH_NET_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "codec/http.h"
#include "net/net.h"

struct http_exchange {
	struct http_request *req; /* owned by the exchange */
	struct net_conn *conn;    /* referenced by the exchange */
	void *user;               /* free for the handler */
};

typedef void (*http_handler_fn)(void *ctx, struct http_exchange *ex);

/* Makes c an HTTP connection: every request goes to handler(ctx, ex).
 * limits may be NULL for the codec defaults. A request must arrive whole
 * within request_ms of its first byte; between requests the connection may
 * stay idle for a minute. */
void http_server_attach(struct net_conn *c, const struct http_limits *limits,
			uint64_t request_ms, http_handler_fn handler, void *ctx);

/* Answers and frees the exchange. headers: name/value pairs, NULL-
 * terminated, or NULL. When the connection closed meanwhile, only frees. */
void http_respond(struct http_exchange *ex, int status, const char *const *headers,
		  const char *body, size_t body_len);
/* Convenience: JSON body with Content-Type: application/json; charset=utf-8. */
void http_respond_json(struct http_exchange *ex, int status, const char *const *extra_headers,
		       const char *json);

/* A streamed answer (chunked transfer coding), for answers produced over
 * time: http_stream_start sends the status and headers, each
 * http_stream_write one chunk (n > 0), http_stream_end the last chunk and
 * frees the exchange (the connection then takes its next request). While
 * streaming the connection reads nothing; the writer checks
 * net_conn_closed(ex->conn) and net_conn_queued() between writes, and
 * ends the stream when the peer is gone. */
void http_stream_start(struct http_exchange *ex, int status, const char *const *headers);
void http_stream_write(struct http_exchange *ex, const void *p, size_t n);
void http_stream_end(struct http_exchange *ex);

/* Answers a WebSocket upgrade with 101 (Sec-WebSocket-Accept, and
 * Sec-WebSocket-Protocol: subprotocol when not NULL), switches the
 * connection to ws mode with handler h/app, feeds it any bytes that followed
 * the request, and frees the exchange. Returns 0, or FH_EINVAL (no or bad
 * Sec-WebSocket-Key / version: the caller answers 400). */
int http_upgrade_websocket(struct http_exchange *ex, const char *subprotocol,
			   const struct net_conn_handler *h, void *app, size_t max_frame);

#endif
