/* HTTP/1.1 request codec over http-parser (server side). Pure: bytes in,
 * requests out; no sockets.
 *
 * A parser instance lives as long as its connection and yields requests one
 * at a time. Header names/values may arrive split across reads; they are
 * accumulated. Limits (URL length, header count, header bytes, body size) are
 * enforced while parsing, before anything larger is buffered. Chunked request
 * bodies are decoded. A request with both Content-Length and
 * Transfer-Encoding, or a malformed chunk, is rejected. */
#ifndef FH_CODEC_HTTP_H
#define FH_CODEC_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

enum http_verb { HTTP_VERB_OTHER, HTTP_VERB_GET, HTTP_VERB_PUT, HTTP_VERB_POST,
		 HTTP_VERB_PATCH, HTTP_VERB_DELETE, HTTP_VERB_HEAD };

struct http_limits {
	size_t max_url;          /* bytes of the request target (default 8 KiB) */
	unsigned max_headers;    /* header count (default 64) */
	size_t max_header_bytes; /* all header names + values (default 32 KiB) */
	size_t max_body;         /* decoded body bytes (default 1 MiB) */
};

struct http_header {
	char *name;  /* NUL-terminated, owned by the request */
	char *value; /* NUL-terminated, owned by the request */
};

struct http_request {
	enum http_verb verb;
	const char *method;   /* "GET", ... (static string) */
	char *target;         /* raw request target, e.g. "/devices/d%201?api-version=x" */
	char *path;           /* target up to '?', still percent-encoded */
	char *query;          /* after '?', or "" */
	struct http_header *headers;
	unsigned nheaders;
	struct buf body;      /* decoded body, NUL-terminated */
	bool keep_alive;      /* per HTTP/1.1 rules and Connection: header */
	bool upgrade;         /* Upgrade requested (parsing stopped after headers) */
};

struct http_parser_state; /* opaque */

/* limits may be NULL for the defaults above. */
struct http_parser_state *http_parser_new(const struct http_limits *limits);
void http_parser_free(struct http_parser_state *ps);

/* Feeds data[0..n). Returns the number of bytes consumed (>= 0) or an error
 * (< 0). When a complete request has been parsed, *req_out receives it
 * (ownership transferred: free with http_request_free) and the parser stops
 * consuming right after that request's last byte, so the caller handles
 * requests one at a time and feeds the rest later. For an Upgrade request,
 * consumption stops at the end of the headers: the remaining bytes belong to
 * the new protocol. On error, http_parser_error() gives the HTTP status to
 * answer (400, 413 body too large, 414 URI too long, 431 headers too large)
 * and a short reason; the connection must then be closed. */
int http_parser_feed(struct http_parser_state *ps, const char *data, size_t n,
		     struct http_request **req_out);
int http_parser_error(const struct http_parser_state *ps, const char **reason);
/* True while a request is partly parsed (from its first byte to its end). */
bool http_parser_in_request(const struct http_parser_state *ps);

void http_request_free(struct http_request *req);
/* Case-insensitive lookup; NULL when absent. */
const char *http_request_header(const struct http_request *req, const char *name);
/* Looks up a query parameter (percent-decoded into out, NUL-terminated);
 * returns 1 when found. */
int http_query_param(const char *query, const char *name, char *out, size_t outlen);

/* Appends a complete response: status line, the given headers (name/value
 * pairs, NULL-terminated list; may be NULL), Content-Length, Connection:
 * keep-alive|close, blank line, body. */
/* The status line and headers of a chunked answer (http_stream_start). */
void http_response_build_head(struct buf *out, int status, const char *const *headers,
			      bool keep_alive);
void http_response_build(struct buf *out, int status, const char *const *headers,
			 const char *body, size_t body_len, bool keep_alive);
const char *http_status_text(int status);

/* Matches a request path (no query) against a route pattern, segment by
 * segment, literal segments case-insensitively. Pattern segments:
 *   "{name}"  one non-empty segment, percent-decoded into id (idlen bytes
 *             with the NUL) and checked with valid(name_with_braces, id);
 *   "*"       any one non-empty segment;
 *   "**"      (last) any rest of the path, none included.
 * A trailing "/" on the path is accepted. Returns 1 on a match, 0 when the
 * path does not match, -1 when a "{name}" segment does (its place) but is
 * not valid, too long or badly encoded (the caller answers 400). id and
 * valid may be NULL for patterns without "{...}". */
int http_route_match(const char *pattern, const char *path, char *id, size_t idlen,
		     bool (*valid)(const char *name, const char *id));

#endif
