/* HTTP/1.1 client connections for the load generator (see httpc.h).
 *
 * Data path:
 *   tlsconn on_data --http_parser_execute (HTTP_RESPONSE)--> on_response
 *   httpc_send --> tlsconn_send
 *
 * The parser keeps its state between reads, so a response split across TLS
 * records needs no buffering beyond the kept body prefix. */
#include "httpc.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

enum state { ST_CONNECTING, ST_READY, ST_CLOSING };

struct httpc {
	struct tlsconn *t;
	enum state state;
	const struct httpc_handler *h;
	void *app;
	http_parser parser;
	char body[HTTPC_MAX_BODY];
	size_t body_len;
	bool keep_alive; /* of the response being parsed */
};

void *httpc_app(const struct httpc *c)
{
	return c->app;
}

bool httpc_ready(const struct httpc *c)
{
	return c->state == ST_READY;
}

bool httpc_writable(const struct httpc *c)
{
	return c->state == ST_READY && tlsconn_writable(c->t);
}

int httpc_send(struct httpc *c, const void *p, size_t n)
{
	if (c->state != ST_READY)
		return -1;
	return tlsconn_send(c->t, p, n);
}

static int on_message_begin(http_parser *p)
{
	struct httpc *c = p->data;
	c->body_len = 0;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct httpc *c = p->data;
	size_t room = sizeof c->body - c->body_len;
	if (n > room)
		n = room;
	memcpy(c->body + c->body_len, at, n);
	c->body_len += n;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct httpc *c = p->data;
	c->keep_alive = http_should_keep_alive(p);
	if (c->state == ST_READY)
		c->h->on_response(c, (int)p->status_code, c->body, c->body_len);
	return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void on_data(struct tlsconn *t, const uint8_t *p, size_t n)
{
	struct httpc *c = tlsconn_app(t);
	size_t used = http_parser_execute(&c->parser, &settings, (const char *)p, n);
	if (c->state != ST_READY)
		return;
	if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != n) {
		tlsconn_fail(t, TLSCONN_EPROTO, "malformed response: %s",
		             http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
		return;
	}
	if (!c->keep_alive)
		tlsconn_fail(t, TLSCONN_ECLOSED, "the server answered Connection: close");
}

static void on_open(struct tlsconn *t)
{
	struct httpc *c = tlsconn_app(t);
	c->state = ST_READY;
	tlsconn_deadline(t, 0);
	c->h->on_ready(c);
}

static void on_batch_end(struct tlsconn *t)
{
	struct httpc *c = tlsconn_app(t);
	if (c->state == ST_READY && c->h->on_batch_end)
		c->h->on_batch_end(c);
}

static void on_drain(struct tlsconn *t)
{
	struct httpc *c = tlsconn_app(t);
	if (c->state == ST_READY && c->h->on_drain)
		c->h->on_drain(c);
}

static void on_close(struct tlsconn *t, enum tlsconn_error e, const char *detail)
{
	struct httpc *c = tlsconn_app(t);
	c->h->on_close(c, e, detail);
	free(c);
}

static const struct tlsconn_handler tls_handler = {on_open,  on_data, on_batch_end,
                                                   on_drain, NULL,    on_close};

struct httpc *httpc_open(uv_loop_t *loop, SSL_CTX *ctx, const struct sockaddr *addr,
                         const char *tls_name, uint64_t timeout_ms, const struct httpc_handler *h,
                         void *app)
{
	struct httpc *c = xcalloc(1, sizeof *c);
	c->h = h;
	c->app = app;
	c->state = ST_CONNECTING;
	c->keep_alive = true;
	http_parser_init(&c->parser, HTTP_RESPONSE);
	c->parser.data = c;
	c->t = tlsconn_connect(loop, ctx, addr, tls_name, timeout_ms, &tls_handler, c);
	return c;
}

void httpc_close(struct httpc *c, bool graceful)
{
	if (c->state == ST_CLOSING)
		return;
	c->state = ST_CLOSING;
	tlsconn_close(c->t, graceful);
}
