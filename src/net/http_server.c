/* HTTP/1.1 exchanges on a net connection (see http_server.h).
 *
 * Per connection:  READING --request--> HANDLING --http_respond--> READING
 *                                           \--upgrade--> (WebSocket owner)
 * Timers: idle READING (nothing buffered) closes after IDLE_MS of silence; a
 * request partly received must be complete within request_ms of its first
 * byte (a deadline, so a client dripping bytes cannot hold the connection);
 * HANDLING has no timer (the handler answers).
 * While HANDLING the connection is paused; bytes already received stay in
 * `in` and are parsed after the answer (pipelining, in order).
 *
 * Overload: one request in flight per connection, and backpressure rather
 * than 429 beyond it. HTTP/1.1 answers must leave in request order, so
 * handling pipelined requests side by side would only add answers to hold;
 * pausing the read instead bounds what a connection costs to one read chunk
 * (`in`, plus what net holds) whatever a client pipelines, and the kernel's
 * TCP window then slows the client down for free. A client that sends
 * without reading is held the same way by net's write high-water mark.
 * Answering 429 would need the read to continue, i.e. the very buffering
 * this avoids. Flood limits across connections are max_connections and the
 * store's write backlog (hub/rest.c). Measured in tests/hostile/overload. */
#include "net/http_server.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/ws.h"

#define IDLE_MS 60000

struct http_conn {
	struct net_conn *conn;
	struct http_parser_state *ps;
	struct http_limits limits;
	bool has_limits;
	http_handler_fn handler;
	void *ctx;
	struct buf in;
	bool handling;
	bool in_parse; /* parse_more is on the stack: answers given synchronously
	                  continue its loop instead of recursing */
	bool closed;
	bool upgraded;
	bool close_after;
	bool in_request;   /* a request is partly received: its deadline runs */
	uint64_t request_ms;
};

static void parse_more(struct http_conn *hc);

static void hc_free(struct http_conn *hc)
{
	http_parser_free(hc->ps);
	buf_free(&hc->in);
	free(hc);
}

static void on_data(struct net_conn *c, const uint8_t *p, size_t n)
{
	struct http_conn *hc = net_conn_app(c);
	buf_append(&hc->in, p, n);
	parse_more(hc);
}

static void on_close(struct net_conn *c)
{
	struct http_conn *hc = net_conn_app(c);
	hc->closed = true;
	if (!hc->handling && !hc->in_parse)
		hc_free(hc);
	/* else freed when the exchange is answered */
}

static const struct net_conn_handler handler = {on_data, on_close};

static void parse_error(struct http_conn *hc)
{
	const char *reason;
	int status = http_parser_error(hc->ps, &reason);
	struct buf body = BUF_INIT, out = BUF_INIT;
	buf_printf(&body, "{\"Message\":\"ErrorCode:BadRequest;%s\",\"errorCode\":%d000,"
			  "\"message\":\"%s\"}",
		   reason, status, reason);
	static const char *const hdr[] = {"Content-Type", "application/json; charset=utf-8", NULL};
	http_response_build(&out, status, hdr, body.data, body.len, false);
	net_conn_write(hc->conn, out.data, out.len);
	net_conn_close(hc->conn);
	buf_free(&body);
	buf_free(&out);
	log_at(LOG_INFO, "https %s: bad request: %d %s", net_conn_peer(hc->conn), status, reason);
}

static void parse_more(struct http_conn *hc)
{
	if (hc->in_parse)
		return; /* the running loop picks up where this call would */
	hc->in_parse = true;
	while (!hc->handling && !hc->closed && !hc->upgraded && hc->in.len > 0 &&
	       !net_conn_closed(hc->conn)) {
		struct http_request *req = NULL;
		int used = http_parser_feed(hc->ps, hc->in.data, hc->in.len, &req);
		if (used < 0) {
			buf_reset(&hc->in);
			parse_error(hc);
			break;
		}
		buf_consume(&hc->in, (size_t)used);
		if (!req) {
			if (used == 0)
				break;
			continue;
		}
		struct http_exchange *ex = xcalloc(1, sizeof *ex);
		ex->req = req;
		ex->conn = hc->conn;
		net_conn_ref(hc->conn);
		hc->handling = true;
		hc->in_request = false;
		net_conn_pause(hc->conn);
		net_conn_set_idle_timeout(hc->conn, 0);
		hc->handler(hc->ctx, ex);
		if (hc->upgraded) {
			/* The connection belongs to the WebSocket owner now. */
			http_parser_free(hc->ps);
			buf_free(&hc->in);
			free(hc);
			return;
		}
		/* Answered already (synchronously): loop for the next pipelined
		 * request. Otherwise http_respond continues later. */
	}
	hc->in_parse = false;
	if (hc->closed && !hc->handling) {
		hc_free(hc);
		return;
	}
	if (!hc->handling && !hc->upgraded && !net_conn_closed(hc->conn)) {
		bool partial = hc->in.len > 0 || http_parser_in_request(hc->ps);
		if (partial && !hc->in_request)
			net_conn_set_deadline(hc->conn, hc->request_ms);
		else if (!partial && hc->in_request)
			net_conn_set_idle_timeout(hc->conn, IDLE_MS);
		hc->in_request = partial;
	}
}

void http_server_attach(struct net_conn *c, const struct http_limits *limits,
			uint64_t request_ms, http_handler_fn fn, void *ctx)
{
	struct http_conn *hc = xcalloc(1, sizeof *hc);
	hc->request_ms = request_ms;
	hc->conn = c;
	hc->ps = http_parser_new(limits);
	hc->handler = fn;
	hc->ctx = ctx;
	buf_init(&hc->in);
	net_conn_set_handler(c, &handler, hc);
	net_conn_set_idle_timeout(c, IDLE_MS);
}

static void exchange_end(struct http_exchange *ex, bool keep_alive)
{
	struct net_conn *c = ex->conn;
	struct http_conn *hc = net_conn_app(c);
	http_request_free(ex->req);
	free(ex);
	if (hc && !hc->upgraded) {
		hc->handling = false;
		if (hc->closed) {
			if (!hc->in_parse)
				hc_free(hc);
		} else if (!keep_alive) {
			net_conn_close(c);
		} else {
			net_conn_set_idle_timeout(c, IDLE_MS);
			net_conn_resume(c);
			parse_more(hc);
		}
	}
	net_conn_unref(c);
}

void http_respond(struct http_exchange *ex, int status, const char *const *headers,
		  const char *body, size_t body_len)
{
	bool keep = ex->req->keep_alive;
	if (!net_conn_closed(ex->conn)) {
		struct buf out = BUF_INIT;
		http_response_build(&out, status, headers, body, body_len, keep);
		net_conn_write(ex->conn, out.data, out.len);
		buf_free(&out);
	}
	exchange_end(ex, keep);
}

void http_stream_start(struct http_exchange *ex, int status, const char *const *headers)
{
	if (net_conn_closed(ex->conn))
		return;
	struct buf out = BUF_INIT;
	http_response_build_head(&out, status, headers, ex->req->keep_alive);
	net_conn_write(ex->conn, out.data, out.len);
	buf_free(&out);
}

void http_stream_write(struct http_exchange *ex, const void *p, size_t n)
{
	if (n == 0 || net_conn_closed(ex->conn))
		return;
	char head[24];
	int k = snprintf(head, sizeof head, "%zx\r\n", n);
	struct buf out = BUF_INIT;
	buf_reserve(&out, (size_t)k + n + 2);
	buf_append(&out, head, (size_t)k);
	buf_append(&out, p, n);
	buf_append(&out, "\r\n", 2);
	net_conn_write(ex->conn, out.data, out.len);
	buf_free(&out);
}

void http_stream_end(struct http_exchange *ex)
{
	bool keep = ex->req->keep_alive;
	if (!net_conn_closed(ex->conn))
		net_conn_write(ex->conn, "0\r\n\r\n", 5);
	exchange_end(ex, keep && !net_conn_closed(ex->conn));
}

void http_respond_json(struct http_exchange *ex, int status, const char *const *extra_headers,
		       const char *json)
{
	const char *h[32];
	size_t k = 0;
	h[k++] = "Content-Type";
	h[k++] = "application/json; charset=utf-8";
	for (size_t i = 0; extra_headers && extra_headers[i] && extra_headers[i + 1] && k < 28;
	     i += 2) {
		h[k++] = extra_headers[i];
		h[k++] = extra_headers[i + 1];
	}
	h[k] = NULL;
	http_respond(ex, status, h, json, json ? strlen(json) : 0);
}

int http_upgrade_websocket(struct http_exchange *ex, const char *subprotocol,
			   const struct net_conn_handler *h, void *app, size_t max_frame)
{
	const char *up = http_request_header(ex->req, "Upgrade");
	const char *ver = http_request_header(ex->req, "Sec-WebSocket-Version");
	const char *key = http_request_header(ex->req, "Sec-WebSocket-Key");
	char accept[29];
	if (!up || strcasecmp(up, "websocket") != 0 || !ver || strcmp(ver, "13") != 0 || !key ||
	    ws_accept_key(key, accept) != 0)
		return FH_EINVAL;
	struct net_conn *c = ex->conn;
	struct http_conn *hc = net_conn_app(c);
	struct buf out = BUF_INIT;
	buf_printf(&out,
		   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
		   "Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
		   accept);
	if (subprotocol)
		buf_printf(&out, "Sec-WebSocket-Protocol: %s\r\n", subprotocol);
	buf_appends(&out, "\r\n");
	net_conn_write(c, out.data, out.len);
	buf_free(&out);
	/* The HTTP layer steps aside: its leftover bytes belong to the new
	 * protocol. */
	struct buf rest = hc->in;
	buf_init(&hc->in);
	hc->upgraded = true;
	if (!hc->in_parse) { /* else parse_more frees it when the handler returns */
		http_parser_free(hc->ps);
		free(hc);
	}
	net_conn_set_handler(c, h, app);
	http_request_free(ex->req);
	free(ex);
	net_conn_start_ws(c, (const uint8_t *)rest.data, rest.len, max_frame);
	buf_free(&rest);
	net_conn_resume(c);
	net_conn_unref(c);
	return 0;
}
