/* HTTP/1.1 client connections for the load generator (see httpc.h).
 *
 * Data path:
 *   tlsconn on_data --http_parser_execute (HTTP_RESPONSE)--> on_response
 *   httpc_send --> tlsconn_send
 *
 * The parser keeps its state between reads, so a response split across TLS
 * records needs no buffering beyond the kept body prefix (max_body bytes)
 * and the kept header. http-parser may hand a header's name and value over
 * in pieces: a name piece after a value starts the next header, and the
 * value of the wanted header is collected while its name matched. */
#include "httpc.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/mem.h"

enum state { ST_CONNECTING, ST_READY, ST_CLOSING };

struct httpc {
	struct tlsconn *t;
	enum state state;
	const struct httpc_handler *h;
	void *app;
	http_parser parser;
	struct buf body; /* the first max_body bytes of the response's body */
	size_t max_body;
	bool truncated;          /* the body was longer */
	bool keep_alive;         /* of the response being parsed */
	char *header;            /* the header to keep (NULL: none) */
	struct buf field, value; /* the header being parsed; value only while it matches */
	bool in_value, matched, have_value;
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

const char *httpc_header(const struct httpc *c)
{
	if (!c->have_value)
		return NULL;
	return c->value.data ? c->value.data : "";
}

bool httpc_truncated(const struct httpc *c)
{
	return c->truncated;
}

void httpc_keep(struct httpc *c, size_t max_body, const char *header)
{
	c->max_body = max_body;
	free(c->header);
	c->header = header ? xstrdup(header) : NULL;
}

static int on_message_begin(http_parser *p)
{
	struct httpc *c = p->data;
	buf_reset(&c->body);
	c->truncated = false;
	buf_reset(&c->field);
	buf_reset(&c->value);
	c->in_value = c->matched = c->have_value = false;
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
	struct httpc *c = p->data;
	if (!c->header)
		return 0;
	if (c->in_value) { /* the previous header is complete */
		buf_reset(&c->field);
		c->in_value = false;
	}
	if (c->field.len + n <= HTTPC_MAX_HEADER)
		buf_append(&c->field, at, n);
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
	struct httpc *c = p->data;
	if (!c->header)
		return 0;
	if (!c->in_value) { /* the first piece of this header's value */
		c->in_value = true;
		c->matched = c->field.data && strcasecmp(c->field.data, c->header) == 0;
		if (c->matched) {
			buf_reset(&c->value);
			c->have_value = true;
		}
	}
	if (!c->matched)
		return 0;
	if (c->value.len + n > HTTPC_MAX_HEADER) {
		c->matched = c->have_value = false; /* too long to be one we expect */
		return 0;
	}
	buf_append(&c->value, at, n);
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct httpc *c = p->data;
	size_t room = c->max_body - c->body.len;
	if (n > room) {
		n = room;
		c->truncated = true;
	}
	buf_append(&c->body, at, n);
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct httpc *c = p->data;
	c->keep_alive = http_should_keep_alive(p);
	if (c->state == ST_READY)
		c->h->on_response(c, (int)p->status_code, c->body.data ? c->body.data : "",
		                  c->body.len);
	return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
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
	buf_free(&c->body);
	buf_free(&c->field);
	buf_free(&c->value);
	free(c->header);
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
	c->max_body = HTTPC_MAX_BODY;
	buf_init(&c->body);
	buf_init(&c->field);
	buf_init(&c->value);
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
