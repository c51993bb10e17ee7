/* HTTP/1.1 request parsing over http-parser (see http.h). One parser per
 * connection; it yields one request at a time by pausing http-parser at the
 * end of each message (or at the end of the headers of an Upgrade), so
 * pipelined bytes stay with the caller. Every limit is checked in the
 * callbacks, before the data is kept. */
#include "codec/http.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/enc.h"
#include "base/err.h"
#include "base/mem.h"

struct http_parser_state {
	http_parser p;
	struct http_limits lim;
	struct http_request *req; /* being built */
	struct buf url;
	struct buf hname, hvalue; /* header being accumulated */
	bool in_value;
	size_t header_bytes;
	unsigned cap_headers;
	bool done;       /* a complete request waits in req */
	bool failed;
	int err_status;
	const char *err_reason;
};

static const struct http_limits default_limits = {8192, 64, 32768, 1024 * 1024};

static int fail(struct http_parser_state *ps, int status, const char *reason)
{
	ps->failed = true;
	ps->err_status = status;
	ps->err_reason = reason;
	return -1;
}

static struct http_parser_state *state_of(http_parser *p)
{
	return p->data;
}

static void request_new(struct http_parser_state *ps)
{
	ps->req = xcalloc(1, sizeof *ps->req);
	buf_init(&ps->req->body);
	buf_reset(&ps->url);
	buf_reset(&ps->hname);
	buf_reset(&ps->hvalue);
	ps->in_value = false;
	ps->header_bytes = 0;
	ps->cap_headers = 0;
}

static int on_message_begin(http_parser *p)
{
	struct http_parser_state *ps = state_of(p);
	if (!ps->req)
		request_new(ps);
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	struct http_parser_state *ps = state_of(p);
	if (ps->url.len + n > ps->lim.max_url)
		return fail(ps, 414, "request target too long");
	buf_append(&ps->url, at, n);
	return 0;
}

static int flush_header(struct http_parser_state *ps)
{
	struct http_request *r = ps->req;
	if (!ps->in_value)
		return 0;
	if (r->nheaders >= ps->lim.max_headers)
		return fail(ps, 431, "too many header fields");
	if (r->nheaders == ps->cap_headers) {
		ps->cap_headers = ps->cap_headers ? ps->cap_headers * 2 : 16;
		r->headers = xrealloc(r->headers, ps->cap_headers * sizeof *r->headers);
	}
	r->headers[r->nheaders].name = xstrndup(ps->hname.data ? ps->hname.data : "", ps->hname.len);
	r->headers[r->nheaders].value =
		xstrndup(ps->hvalue.data ? ps->hvalue.data : "", ps->hvalue.len);
	r->nheaders++;
	buf_reset(&ps->hname);
	buf_reset(&ps->hvalue);
	ps->in_value = false;
	return 0;
}

static int count_header_bytes(struct http_parser_state *ps, size_t n)
{
	ps->header_bytes += n;
	if (ps->header_bytes > ps->lim.max_header_bytes)
		return fail(ps, 431, "header fields too large");
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
	struct http_parser_state *ps = state_of(p);
	if (count_header_bytes(ps, n) || flush_header(ps))
		return -1;
	buf_append(&ps->hname, at, n);
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
	struct http_parser_state *ps = state_of(p);
	if (count_header_bytes(ps, n))
		return -1;
	ps->in_value = true;
	buf_append(&ps->hvalue, at, n);
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_parser_state *ps = state_of(p);
	struct http_request *r = ps->req;
	if (flush_header(ps))
		return -1;
	bool has_cl = false, has_te = false;
	for (unsigned i = 0; i < r->nheaders; i++) {
		has_cl |= strcasecmp(r->headers[i].name, "Content-Length") == 0;
		has_te |= strcasecmp(r->headers[i].name, "Transfer-Encoding") == 0;
	}
	if (has_cl && has_te) {
		fail(ps, 400, "both Content-Length and Transfer-Encoding");
		return -1;
	}
	if (has_cl && p->content_length > ps->lim.max_body) {
		fail(ps, 413, "request body too large");
		return -1;
	}
	r->target = buf_steal(&ps->url);
	if (!r->target)
		r->target = xstrdup("");
	char *q = strchr(r->target, '?');
	r->path = q ? xstrndup(r->target, (size_t)(q - r->target)) : xstrdup(r->target);
	r->query = xstrdup(q ? q + 1 : "");
	r->verb = HTTP_VERB_OTHER;
	switch (p->method) {
	case HTTP_GET: r->verb = HTTP_VERB_GET; break;
	case HTTP_PUT: r->verb = HTTP_VERB_PUT; break;
	case HTTP_POST: r->verb = HTTP_VERB_POST; break;
	case HTTP_PATCH: r->verb = HTTP_VERB_PATCH; break;
	case HTTP_DELETE: r->verb = HTTP_VERB_DELETE; break;
	case HTTP_HEAD: r->verb = HTTP_VERB_HEAD; break;
	default: break;
	}
	r->method = http_method_str(p->method);
	r->keep_alive = http_should_keep_alive(p);
	r->upgrade = p->upgrade;
	if (r->upgrade) {
		ps->done = true;
		return 2; /* no body; stop here: the rest is the new protocol */
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct http_parser_state *ps = state_of(p);
	struct buf *b = &ps->req->body;
	if (b->len + n > ps->lim.max_body)
		return fail(ps, 413, "request body too large");
	buf_append(b, at, n);
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_parser_state *ps = state_of(p);
	ps->done = true;
	if (!ps->req->body.data)
		buf_reserve(&ps->req->body, 0);
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

struct http_parser_state *http_parser_new(const struct http_limits *limits)
{
	struct http_parser_state *ps = xcalloc(1, sizeof *ps);
	ps->lim = limits ? *limits : default_limits;
	http_parser_init(&ps->p, HTTP_REQUEST);
	ps->p.data = ps;
	buf_init(&ps->url);
	buf_init(&ps->hname);
	buf_init(&ps->hvalue);
	return ps;
}

void http_parser_free(struct http_parser_state *ps)
{
	if (!ps)
		return;
	http_request_free(ps->req);
	buf_free(&ps->url);
	buf_free(&ps->hname);
	buf_free(&ps->hvalue);
	free(ps);
}

int http_parser_feed(struct http_parser_state *ps, const char *data, size_t n,
		     struct http_request **req_out)
{
	*req_out = NULL;
	if (ps->failed)
		return FH_EPROTO;
	if (HTTP_PARSER_ERRNO(&ps->p) == HPE_PAUSED)
		http_parser_pause(&ps->p, 0);
	if (n == 0)
		return 0;
	size_t used = http_parser_execute(&ps->p, &settings, data, n);
	enum http_errno e = HTTP_PARSER_ERRNO(&ps->p);
	if (ps->failed)
		return FH_EPROTO;
	if (e != HPE_OK && e != HPE_PAUSED) {
		if (ps->done && ps->req && ps->req->upgrade) {
			/* fallthrough: upgrade handled below */
		} else {
			fail(ps, 400, http_errno_description(e));
			return FH_EPROTO;
		}
	}
	if (ps->done) {
		if (e == HPE_PAUSED && used < n && used > 0) {
			/* http-parser counts the byte that completed the message */
		}
		*req_out = ps->req;
		ps->req = NULL;
		ps->done = false;
		if ((*req_out)->upgrade) {
			/* The parser is spent after an upgrade; later feeds fail. */
			ps->failed = true;
			ps->err_status = 400;
			ps->err_reason = "data after an upgrade";
		}
	}
	return (int)used;
}

bool http_parser_in_request(const struct http_parser_state *ps)
{
	return ps->req != NULL && !ps->done;
}

int http_parser_error(const struct http_parser_state *ps, const char **reason)
{
	if (reason)
		*reason = ps->err_reason ? ps->err_reason : "malformed request";
	return ps->err_status ? ps->err_status : 400;
}

void http_request_free(struct http_request *req)
{
	if (!req)
		return;
	for (unsigned i = 0; i < req->nheaders; i++) {
		free(req->headers[i].name);
		free(req->headers[i].value);
	}
	free(req->headers);
	free(req->target);
	free(req->path);
	free(req->query);
	buf_free(&req->body);
	free(req);
}

const char *http_request_header(const struct http_request *req, const char *name)
{
	for (unsigned i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

int http_query_param(const char *query, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	const char *p = query;
	while (p && *p) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len >= nl && strncmp(p, name, nl) == 0 && (len == nl || p[nl] == '=')) {
			const char *v = len == nl ? p + len : p + nl + 1;
			size_t vl = len == nl ? 0 : len - nl - 1;
			if (vl + 1 > outlen)
				return 0;
			size_t got;
			if (pct_decode(v, vl, out, &got) != 0)
				return 0;
			return 1;
		}
		p = end ? end + 1 : NULL;
	}
	return 0;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 412: return "Precondition Failed";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Unknown";
	}
}

void http_response_build_head(struct buf *out, int status, const char *const *headers,
			      bool keep_alive)
{
	buf_printf(out, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
	for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
		buf_printf(out, "%s: %s\r\n", headers[i], headers[i + 1]);
	buf_printf(out, "Transfer-Encoding: chunked\r\nConnection: %s\r\n\r\n",
		   keep_alive ? "keep-alive" : "close");
}

void http_response_build(struct buf *out, int status, const char *const *headers,
			 const char *body, size_t body_len, bool keep_alive)
{
	buf_printf(out, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
	for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
		buf_printf(out, "%s: %s\r\n", headers[i], headers[i + 1]);
	if (status != 101 && status != 204 && status >= 200)
		buf_printf(out, "Content-Length: %zu\r\n", body_len);
	if (status != 101)
		buf_printf(out, "Connection: %s\r\n", keep_alive ? "keep-alive" : "close");
	buf_appends(out, "\r\n");
	if (body_len)
		buf_append(out, body, body_len);
}

int http_route_match(const char *pattern, const char *path, char *id, size_t idlen,
		     bool (*valid)(const char *name, const char *id))
{
	while (*pattern) {
		if (strcmp(pattern, "/**") == 0)
			return 1;
		if (*pattern != '/' || *path != '/')
			return 0;
		pattern++;
		path++;
		size_t plen = strcspn(pattern, "/"), slen = strcspn(path, "/");
		if (plen >= 2 && pattern[0] == '{' && pattern[plen - 1] == '}') {
			char name[32];
			size_t n;
			if (slen == 0)
				return 0;
			if (!id || plen >= sizeof name || slen >= idlen ||
			    pct_decode(path, slen, id, &n) != 0)
				return -1;
			memcpy(name, pattern, plen);
			name[plen] = '\0';
			if (valid && !valid(name, id))
				return -1;
		} else if (plen == 1 && pattern[0] == '*') {
			if (slen == 0)
				return 0;
		} else if (plen != slen || strncasecmp(pattern, path, plen) != 0) {
			return 0;
		}
		pattern += plen;
		path += slen;
	}
	return *path == '\0' || (path[0] == '/' && path[1] == '\0');
}
