/* A small HTTP/1.1 server for unit tests, on the test's libuv loop
 * (127.0.0.1, an ephemeral port), plain or TLS (OpenSSL memory BIOs, with a
 * self-signed certificate made at start). It stands in for a webhook or any
 * other server the code under test calls.
 *
 * Each connection carries one request: once the head and Content-Length
 * bytes of body have arrived the request is complete, counted, recorded
 * (method, target, header lines, body of the last request) and answered
 * with the canned answer for its index, then the connection is closed
 * (Connection: close); later bytes are ignored. Answers can be held until
 * web_release, and an answer with status 0 never comes, so the request
 * hangs until the client gives up. A TLS ClientHello on the plain server is
 * answered 400 in plain text, as a real plain server would.
 *
 * Memory: the struct web is the caller's and must stay in place from
 * web_start until the loop has run the close callbacks web_stop asks for
 * (keep it in a test fixture whose teardown runs the loop, not on the stack
 * of a test that can fail). Answer bodies and headers are borrowed and
 * must outlive the request they answer. Everything runs on the loop
 * thread. */
#ifndef FH_TESTS_WEB_H
#define FH_TESTS_WEB_H

#include <stdbool.h>
#include <uv.h>

#include "base/buf.h"

#define WEB_MAX_ANSWERS 4

struct web_answer {
	int status;          /* 0: never answered (the request hangs) */
	const char *body;    /* NULL is taken as "" */
	const char *headers; /* extra header lines, each ending in "\r\n", or NULL */
	bool until_close;    /* no Content-Length: the body ends when the connection does */
};

struct web_conn;

struct web {
	/* Set by the test, read when a request is answered. */
	struct web_answer ans[WEB_MAX_ANSWERS]; /* request i gets ans[min(i, nans - 1)] */
	int nans;                               /* 1 to WEB_MAX_ANSWERS; web_start sets 1 */
	bool hold;                              /* keep answers back until web_release */
	const char *content_type;               /* Content-Type of every answer, or NULL */

	/* Read by the test. */
	int port;
	int requests;    /* complete requests seen */
	int handshakes;  /* TLS handshakes completed */
	char method[16]; /* of the last request */
	char target[512];
	struct buf head; /* header lines of the last request, without the final CRLF */
	struct buf body; /* body of the last request */

	/* Internal. */
	uv_tcp_t listener;
	void *tls; /* SSL_CTX *, NULL for plain HTTP */
	struct web_conn *conns;
};

/* Starts a plain HTTP server answering every request 200 with an empty
 * body (until the test sets ans). It also unsets the proxy variables
 * libcurl reads, so that clients in this process reach the server (and any
 * other loopback address) directly. */
void web_start(struct web *w, uv_loop_t *loop);
/* The same over TLS with a self-signed P-256 certificate for IP 127.0.0.1
 * and the name hub.fleethub.invalid (which resolves nowhere), written as
 * PEM to ca_path for the client to trust. */
void web_start_tls(struct web *w, uv_loop_t *loop, const char *ca_path);
/* Answers every request held so far and stops holding. */
void web_release(struct web *w);
/* Closes the listener and every connection (their close callbacks run as
 * the loop turns) and frees what the server holds. */
void web_stop(struct web *w);

/* Whether the last request had this whole header line, e.g.
 * "Content-Length: 7" (compared without regard to case). */
bool web_head_has(const struct web *w, const char *line);

/* A loopback port nothing listens on (bound, then closed). */
int web_closed_port(void);

#endif
