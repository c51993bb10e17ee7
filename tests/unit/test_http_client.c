/* Unit tests for the outgoing HTTP client against servers inside this
 * process: a plain HTTP/1.1 server on the same libuv loop (127.0.0.1,
 * ephemeral port) that records each request and answers by path, and a
 * blocking OpenSSL server on a thread with a certificate made at test time.
 * Covered: answers with bodies and statuses, the request as sent (method,
 * target verbatim, headers, body), deadlines, refused connections, the
 * response bound (with and without Content-Length), the URL policy, TLS
 * failures and an extra trusted CA, redirects not followed, done never
 * running inside http_client_request, close with requests in flight, and
 * the URL form used in logs. Every test ends with uv_loop_close() == 0, so
 * a handle the client forgot to close fails it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/err.h"
#include "net/http_client.h"

/* ---- the plain HTTP server on the test loop -------------------------------- */

struct srv_conn {
	uv_tcp_t tcp;
	struct srv *s;
	struct buf in;
	bool done; /* request complete (answered or held) */
	struct srv_conn *next;
};

struct srv {
	uv_tcp_t listener;
	int port;
	int requests;           /* complete requests seen */
	struct srv_conn *conns; /* open connections */
	char method[16];
	char target[512];
	struct buf head; /* header lines of the last request */
	struct buf body; /* body of the last request */
};

static void srv_conn_closed(uv_handle_t *h)
{
	struct srv_conn *k = h->data;
	struct srv *s = k->s;
	for (struct srv_conn **p = &s->conns; *p; p = &(*p)->next)
		if (*p == k) {
			*p = k->next;
			break;
		}
	buf_free(&k->in);
	free(k);
}

static void srv_conn_close(struct srv_conn *k)
{
	if (!uv_is_closing((uv_handle_t *)&k->tcp))
		uv_close((uv_handle_t *)&k->tcp, srv_conn_closed);
}

struct srv_write {
	uv_write_t w;
	char *data;
	bool close_after;
};

static void srv_written(uv_write_t *w, int status)
{
	struct srv_write *sw = (struct srv_write *)w;
	struct srv_conn *k = w->data;
	if (sw->close_after)
		srv_conn_close(k);
	free(sw->data);
	free(sw);
}

static void srv_send(struct srv_conn *k, const char *data, size_t n, bool close_after)
{
	struct srv_write *sw = calloc(1, sizeof *sw);
	sw->data = malloc(n);
	memcpy(sw->data, data, n);
	sw->close_after = close_after;
	sw->w.data = k;
	uv_buf_t b = uv_buf_init(sw->data, (unsigned)n);
	assert_int_equal(uv_write(&sw->w, (uv_stream_t *)&k->tcp, &b, 1, srv_written), 0);
}

static void srv_answer(struct srv_conn *k, int status, const char *extra, const char *body)
{
	char head[512];
	int n = snprintf(head, sizeof head,
	                 "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
	                 status, strlen(body), extra);
	struct buf b = BUF_INIT;
	buf_append(&b, head, (size_t)n);
	buf_appends(&b, body);
	srv_send(k, b.data, b.len, true);
	buf_free(&b);
}

/* Answers by path: /hang never answers; /500; /redirect (302); /big (a
 * 10,000-byte body with Content-Length); /bigclose (the same without one,
 * ended by closing); anything else 200 "hello". */
static void srv_handle(struct srv_conn *k, const char *end_of_head, size_t body_len)
{
	struct srv *s = k->s;
	const char *line_end = strstr(k->in.data, "\r\n");
	s->method[0] = s->target[0] = '\0';
	sscanf(k->in.data, "%15s %511s", s->method, s->target);
	buf_reset(&s->head);
	buf_append(&s->head, line_end + 2, (size_t)(end_of_head - (line_end + 2)));
	buf_reset(&s->body);
	buf_append(&s->body, end_of_head + 4, body_len);
	s->requests++;
	k->done = true;
	const char *path = s->target;
	if (strncmp(path, "/hang", 5) == 0)
		return;
	if (strncmp(path, "/500", 4) == 0) {
		srv_answer(k, 500, "", "boom");
	} else if (strncmp(path, "/redirect", 9) == 0) {
		srv_answer(k, 302, "Location: /ok\r\n", "");
	} else if (strncmp(path, "/bigclose", 9) == 0) {
		char *big = malloc(10000);
		memset(big, 'x', 10000);
		const char *h = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
		srv_send(k, h, strlen(h), false);
		srv_send(k, big, 10000, true);
		free(big);
	} else if (strncmp(path, "/big", 4) == 0) {
		char *big = calloc(1, 10001);
		memset(big, 'x', 10000);
		srv_answer(k, 200, "", big);
		free(big);
	} else {
		srv_answer(k, 200, "", "hello");
	}
}

static void srv_alloc(uv_handle_t *h, size_t size, uv_buf_t *b)
{
	static char chunk[65536];
	*b = uv_buf_init(chunk, sizeof chunk);
}

static void srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct srv_conn *k = st->data;
	if (n < 0) {
		srv_conn_close(k);
		return;
	}
	if (k->done)
		return;
	buf_append(&k->in, b->base, (size_t)n);
	if (k->in.len > 0 && (unsigned char)k->in.data[0] == 0x16) {
		/* A TLS ClientHello on the plain port. */
		srv_answer(k, 400, "", "not TLS here");
		k->done = true;
		return;
	}
	const char *eoh = k->in.data ? strstr(k->in.data, "\r\n\r\n") : NULL;
	if (!eoh)
		return;
	size_t clen = 0;
	const char *cl = strcasestr(k->in.data, "\r\nContent-Length:");
	if (cl && cl < eoh)
		clen = strtoul(cl + 17, NULL, 10);
	size_t have = k->in.len - (size_t)(eoh + 4 - k->in.data);
	if (have >= clen)
		srv_handle(k, eoh, clen);
}

static void srv_accept(uv_stream_t *l, int status)
{
	struct srv *s = l->data;
	struct srv_conn *k = calloc(1, sizeof *k);
	k->s = s;
	buf_init(&k->in);
	uv_tcp_init(l->loop, &k->tcp);
	k->tcp.data = k;
	k->next = s->conns;
	s->conns = k;
	assert_int_equal(uv_accept(l, (uv_stream_t *)&k->tcp), 0);
	uv_read_start((uv_stream_t *)&k->tcp, srv_alloc, srv_read);
}

static void srv_start(struct srv *s, uv_loop_t *loop)
{
	memset(s, 0, sizeof *s);
	buf_init(&s->head);
	buf_init(&s->body);
	struct sockaddr_in a;
	uv_ip4_addr("127.0.0.1", 0, &a);
	uv_tcp_init(loop, &s->listener);
	s->listener.data = s;
	assert_int_equal(uv_tcp_bind(&s->listener, (struct sockaddr *)&a, 0), 0);
	assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 64, srv_accept), 0);
	struct sockaddr_in got;
	int len = sizeof got;
	uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
	s->port = ntohs(got.sin_port);
}

static void srv_stop(struct srv *s)
{
	for (struct srv_conn *k = s->conns; k; k = k->next)
		srv_conn_close(k);
	uv_close((uv_handle_t *)&s->listener, NULL);
}

static bool head_has(struct srv *s, const char *line)
{
	/* The header block starts after the request line's CRLF. */
	char want[256];
	snprintf(want, sizeof want, "\r\n%s\r\n", line);
	struct buf b = BUF_INIT;
	buf_printf(&b, "\r\n%s\r\n", s->head.data);
	bool found = strcasestr(b.data, want) != NULL;
	buf_free(&b);
	return found;
}

/* ---- results and the loop ---------------------------------------------------- */

struct got {
	int calls;
	bool during_request; /* done ran inside http_client_request */
	int status;
	char body[16384];
	size_t body_len;
	char error[512];
	int64_t elapsed_ms;
};

static bool in_request;

static void on_done(void *arg, const struct http_client_result *r)
{
	struct got *g = arg;
	g->calls++;
	g->during_request |= in_request;
	g->status = r->status;
	assert_non_null(r->body);
	assert_true(r->body_len < sizeof g->body);
	memcpy(g->body, r->body, r->body_len + 1);
	g->body_len = r->body_len;
	snprintf(g->error, sizeof g->error, "%s", r->error ? r->error : "");
	g->elapsed_ms = r->elapsed_ms;
	if (r->status == 0)
		assert_non_null(r->error);
}

static int request(struct http_client *c, const char *method, const char *url,
                   const char *const *headers, const char *body, uint64_t timeout_ms,
                   size_t max_response, struct got *g)
{
	memset(g, 0, sizeof *g);
	in_request = true;
	int rc = http_client_request(c, method, url, headers, body, body ? strlen(body) : 0,
	                             timeout_ms, max_response, on_done, g);
	in_request = false;
	assert_int_equal(g->calls, 0);
	return rc;
}

static void on_guard(uv_timer_t *t)
{
	fail_msg("the loop did not reach the expected state within 10 s");
}

/* Runs the loop until *count reaches want (a 10 s guard fails the test). */
static void run_until(uv_loop_t *loop, const int *count, int want)
{
	uv_timer_t guard;
	uv_timer_init(loop, &guard);
	uv_timer_start(&guard, on_guard, 10000, 0);
	while (*count < want)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&guard, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

struct fixture {
	uv_loop_t loop;
	struct srv srv;
	struct http_client *c;
	char base[64]; /* http://127.0.0.1:port */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	uv_loop_init(&f->loop);
	srv_start(&f->srv, &f->loop);
	snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d", f->srv.port);
	char err[256];
	assert_int_equal(http_client_new(&f->c, &f->loop, NULL, err, sizeof err), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	http_client_close(f->c);
	srv_stop(&f->srv);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	buf_free(&f->srv.head);
	buf_free(&f->srv.body);
	free(f);
	return 0;
}

static void url(struct fixture *f, char *out, size_t n, const char *path)
{
	snprintf(out, n, "%s%s", f->base, path);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_get_200_with_body(void **state)
{
	struct fixture *f = *state;
	char u[128];
	struct got g;
	url(f, u, sizeof u, "/ok");
	assert_int_equal(request(f->c, "GET", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.calls, 1);
	assert_false(g.during_request);
	assert_int_equal(g.status, 200);
	assert_string_equal(g.body, "hello");
	assert_int_equal(g.body_len, 5);
	assert_string_equal(g.error, "");
	assert_true(g.elapsed_ms >= 0 && g.elapsed_ms < 5000);
	assert_string_equal(f->srv.method, "GET");
	assert_string_equal(f->srv.target, "/ok");
	assert_null(strcasestr(f->srv.head.data, "Content-Type"));
}

static void test_post_body_and_headers(void **state)
{
	struct fixture *f = *state;
	char u[128];
	struct got g;
	url(f, u, sizeof u, "/echo");
	const char *headers[] = {"X-Test: 1", "Authorization: SharedAccessSignature sr=x", NULL};
	assert_int_equal(request(f->c, "POST", u, headers, "{\"a\":1}", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_false(g.during_request);
	assert_int_equal(g.status, 200);
	assert_string_equal(f->srv.method, "POST");
	assert_string_equal(f->srv.target, "/echo");
	assert_string_equal(f->srv.body.data, "{\"a\":1}");
	assert_true(head_has(&f->srv, "Content-Type: application/json"));
	assert_true(head_has(&f->srv, "Content-Length: 7"));
	assert_true(head_has(&f->srv, "X-Test: 1"));
	assert_true(head_has(&f->srv, "Authorization: SharedAccessSignature sr=x"));
	assert_null(strcasestr(f->srv.head.data, "Expect:"));

	/* A Content-Type of the caller's is kept and not doubled. */
	const char *own[] = {"content-type: text/plain", NULL};
	assert_int_equal(request(f->c, "PUT", u, own, "x", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 200);
	assert_string_equal(f->srv.method, "PUT");
	assert_true(head_has(&f->srv, "Content-Type: text/plain"));
	assert_null(strcasestr(f->srv.head.data, "application/json"));

	/* No body: PATCH still says Content-Length: 0, and no form type. */
	assert_int_equal(request(f->c, "PATCH", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 200);
	assert_string_equal(f->srv.method, "PATCH");
	assert_true(head_has(&f->srv, "Content-Length: 0"));
	assert_null(strcasestr(f->srv.head.data, "Content-Type"));

	/* A body on a GET keeps the method (libcurl would make it a POST). */
	assert_int_equal(request(f->c, "GET", u, NULL, "{\"q\":2}", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 200);
	assert_string_equal(f->srv.method, "GET");
	assert_string_equal(f->srv.body.data, "{\"q\":2}");

	assert_int_equal(request(f->c, "DELETE", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 200);
	assert_string_equal(f->srv.method, "DELETE");
	assert_string_equal(f->srv.body.data, "");
}

static void test_query_kept_verbatim(void **state)
{
	struct fixture *f = *state;
	char u[256];
	struct got g;
	url(f, u, sizeof u, "/hook/../q?code=abc%2B1&x=%2f%20y&z=a+b");
	assert_int_equal(request(f->c, "GET", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 200);
	assert_string_equal(f->srv.target, "/hook/../q?code=abc%2B1&x=%2f%20y&z=a+b");
}

static void test_status_500_and_redirect(void **state)
{
	struct fixture *f = *state;
	char u[128];
	struct got g;
	url(f, u, sizeof u, "/500");
	assert_int_equal(request(f->c, "POST", u, NULL, "{}", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 500);
	assert_string_equal(g.body, "boom");
	assert_string_equal(g.error, "");

	url(f, u, sizeof u, "/redirect");
	assert_int_equal(request(f->c, "GET", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 302);
	assert_int_equal(f->srv.requests, 2); /* /ok was not asked for */
}

static void test_timeout(void **state)
{
	struct fixture *f = *state;
	char u[128];
	struct got g;
	url(f, u, sizeof u, "/hang");
	assert_int_equal(request(f->c, "POST", u, NULL, "{}", 200, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_string_equal(g.error, "timed out after 200 ms");
	assert_string_equal(g.body, "");
	assert_int_equal(g.body_len, 0);
	assert_true(g.elapsed_ms >= 190 && g.elapsed_ms < 3000);
	assert_int_equal(f->srv.requests, 1);
}

static void test_connection_refused(void **state)
{
	struct fixture *f = *state;
	/* A port that was just free: bind, read it, close. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t len = sizeof a;
	getsockname(fd, (struct sockaddr *)&a, &len);
	close(fd);
	char u[128];
	snprintf(u, sizeof u, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
	struct got g;
	assert_int_equal(request(f->c, "GET", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_false(g.during_request);
	assert_int_equal(g.status, 0);
	assert_string_equal(g.error, "connection refused");
}

static void test_response_too_large(void **state)
{
	struct fixture *f = *state;
	char u[128];
	struct got g;
	url(f, u, sizeof u, "/big"); /* Content-Length: 10000 */
	assert_int_equal(request(f->c, "GET", u, NULL, NULL, 5000, 100, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_string_equal(g.error, "response too large (over 100 bytes)");
	assert_int_equal(g.body_len, 0);

	url(f, u, sizeof u, "/bigclose"); /* no length: the body callback stops it */
	assert_int_equal(request(f->c, "GET", u, NULL, NULL, 5000, 100, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_string_equal(g.error, "response too large (over 100 bytes)");

	/* Exactly at the bound is fine. */
	assert_int_equal(request(f->c, "GET", u, NULL, NULL, 5000, 10000, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 200);
	assert_int_equal(g.body_len, 10000);
}

static void test_url_policy(void **state)
{
	struct fixture *f = *state;
	struct got g;
	const char *refused[] = {
	    "http://example.com/x",
	    "http://10.0.0.1/x",
	    "http://128.0.0.1/x",
	    "http://127.0.0.1.example.com/x",
	    "http://localhost.example.com/x",
	    "http://[::2]/x",
	    "ftp://127.0.0.1/x",
	    "file:///etc/passwd",
	    "gopher://127.0.0.1/",
	    "127.0.0.1/x",
	    "not a url",
	    "",
	};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		assert_int_equal(request(f->c, "GET", refused[i], NULL, NULL, 500, 100, &g),
		                 FH_EINVAL);
	}
	/* Loopback in its forms: allowed (and refused by the closed port 1). */
	const char *allowed[] = {"http://localhost:1/x", "http://LOCALHOST:1/x",
	                         "http://127.9.8.7:1/x", "http://[::1]:1/x",
	                         "https://127.0.0.1:1/x"};
	struct got ga[5];
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(request(f->c, "GET", allowed[i], NULL, NULL, 3000, 100, &ga[i]),
		                 0);
	int total = 0;
	uv_timer_t guard;
	uv_timer_init(&f->loop, &guard);
	uv_timer_start(&guard, on_guard, 10000, 0);
	while (total < 5) {
		uv_run(&f->loop, UV_RUN_ONCE);
		total = 0;
		for (size_t i = 0; i < 5; i++)
			total += ga[i].calls;
	}
	uv_close((uv_handle_t *)&guard, NULL);
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(ga[i].calls, 1);
		assert_false(ga[i].during_request);
		assert_int_equal(ga[i].status, 0);
		assert_true(strstr(ga[i].error, "connect") != NULL);
	}
	assert_int_equal(g.calls, 0); /* refused requests never call done */
}

static void test_https_to_plain_port(void **state)
{
	struct fixture *f = *state;
	char u[128];
	snprintf(u, sizeof u, "https://127.0.0.1:%d/ok", f->srv.port);
	struct got g;
	assert_int_equal(request(f->c, "GET", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_true(strncmp(g.error, "TLS: ", 5) == 0);
	assert_null(strstr(g.error, "certificate")); /* no certificate was ever seen */
}

/* ---- TLS: a blocking OpenSSL server on a thread -------------------------------- */

struct tls_srv {
	int fd;
	int port;
	SSL_CTX *ctx;
	pthread_t thread;
	int handshakes_ok;
};

static void *tls_serve(void *arg)
{
	struct tls_srv *t = arg;
	for (;;) {
		int k = accept(t->fd, NULL, NULL);
		if (k < 0)
			break; /* shut down */
		SSL *ssl = SSL_new(t->ctx);
		SSL_set_fd(ssl, k);
		if (SSL_accept(ssl) == 1) {
			t->handshakes_ok++;
			char req[4096];
			size_t n = 0;
			while (n < sizeof req - 1) {
				int got = SSL_read(ssl, req + n, (int)(sizeof req - 1 - n));
				if (got <= 0)
					break;
				n += (size_t)got;
				req[n] = '\0';
				if (strstr(req, "\r\n\r\n"))
					break;
			}
			const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n"
			                   "Connection: close\r\n\r\nsecure";
			SSL_write(ssl, resp, (int)strlen(resp));
			SSL_shutdown(ssl);
		}
		SSL_free(ssl);
		ERR_clear_error();
		close(k);
	}
	return NULL;
}

/* A self-signed P-256 certificate for IP 127.0.0.1 and the name
 * hub.fleethub.invalid (which resolves nowhere), written as PEM to
 * ca_path; the key and certificate also go into the server's context. */
static SSL_CTX *make_tls_ctx(const char *ca_path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	assert_non_null(key);
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fleethub test",
	                           -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, key);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	const char *exts[][2] = {{"basicConstraints", "critical,CA:TRUE"},
	                         {"keyUsage", "critical,digitalSignature,keyCertSign"},
	                         {"subjectAltName", "IP:127.0.0.1,DNS:hub.fleethub.invalid"},
	                         {"subjectKeyIdentifier", "hash"}};
	for (size_t i = 0; i < 4; i++) {
		X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
		assert_non_null(e);
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	FILE *fp = fopen(ca_path, "w");
	assert_non_null(fp);
	PEM_write_X509(fp, x);
	fclose(fp);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	X509_free(x);
	EVP_PKEY_free(key);
	return ctx;
}

static void tls_start(struct tls_srv *t, const char *ca_path)
{
	memset(t, 0, sizeof *t);
	t->ctx = make_tls_ctx(ca_path);
	t->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(t->fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(t->fd, 16), 0);
	socklen_t len = sizeof a;
	getsockname(t->fd, (struct sockaddr *)&a, &len);
	t->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&t->thread, NULL, tls_serve, t), 0);
}

static void tls_stop(struct tls_srv *t)
{
	shutdown(t->fd, SHUT_RDWR); /* wakes accept() */
	pthread_join(t->thread, NULL);
	close(t->fd);
	SSL_CTX_free(t->ctx);
}

static void test_tls_untrusted_then_extra_ca(void **state)
{
	struct fixture *f = *state;
	char ca[64], u[128], err[256];
	snprintf(ca, sizeof ca, "/tmp/fh_test_ca_%d.pem", (int)getpid());
	struct tls_srv t;
	tls_start(&t, ca);
	snprintf(u, sizeof u, "https://127.0.0.1:%d/hook?code=1", t.port);

	/* Self-signed and not trusted: a TLS failure, no answer. */
	struct got g;
	assert_int_equal(request(f->c, "POST", u, NULL, "{}", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_true(strncmp(g.error, "TLS: certificate verify failed", 30) == 0);

	/* Trusted through the extra CA file (next to the system bundle). */
	struct http_client *c2;
	assert_int_equal(http_client_new(&c2, &f->loop, ca, err, sizeof err), 0);
	assert_int_equal(request(c2, "POST", u, NULL, "{}", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_string_equal(g.error, "");
	assert_int_equal(g.status, 200);
	assert_string_equal(g.body, "secure");
	http_client_close(c2);
	uv_run(&f->loop, UV_RUN_NOWAIT);

	/* The name must match too: "localhost" is not in the certificate. */
	assert_int_equal(http_client_new(&c2, &f->loop, ca, err, sizeof err), 0);
	snprintf(u, sizeof u, "https://localhost:%d/hook", t.port);
	assert_int_equal(request(c2, "GET", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_true(strncmp(g.error, "TLS: ", 5) == 0);
	assert_non_null(strstr(g.error, "host name"));
	http_client_close(c2);
	uv_run(&f->loop, UV_RUN_NOWAIT);

	tls_stop(&t);
	assert_true(t.handshakes_ok >= 1);
	unlink(ca);
}

/* http_client_request_via: the connection goes to the given address while
 * TLS verifies the URL's name (as a remote linked hub is reached). */
static void test_request_via(void **state)
{
	struct fixture *f = *state;
	char ca[64], u[128], dial[64], err[256];
	snprintf(ca, sizeof ca, "/tmp/fh_test_via_ca_%d.pem", (int)getpid());
	struct tls_srv t;
	tls_start(&t, ca);
	struct http_client *c2;
	assert_int_equal(http_client_new(&c2, &f->loop, ca, err, sizeof err), 0);
	struct got g;

	/* A name that resolves nowhere, dialled at the server: verified, answered. */
	snprintf(dial, sizeof dial, "127.0.0.1:%d", t.port);
	memset(&g, 0, sizeof g);
	assert_int_equal(http_client_request_via(c2, dial, "GET", "https://hub.fleethub.invalid/x",
	                                         NULL, NULL, 0, 5000, 1024, on_done, &g),
	                 0);
	run_until(&f->loop, &g.calls, 1);
	assert_string_equal(g.error, "");
	assert_int_equal(g.status, 200);
	assert_string_equal(g.body, "secure");

	/* The URL's name is what is verified: "localhost" is not in the certificate. */
	memset(&g, 0, sizeof g);
	snprintf(u, sizeof u, "https://localhost:%d/x", t.port);
	assert_int_equal(http_client_request_via(c2, dial, "GET", u, NULL, NULL, 0, 5000, 1024,
	                                         on_done, &g),
	                 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_non_null(strstr(g.error, "host name"));

	/* Refused before any connection: plain http, or a dial that is not host:port. */
	const char *bad[][2] = {{"http://127.0.0.1/x", "127.0.0.1:1"},
	                        {"https://hub.fleethub.invalid/x", "127.0.0.1"},
	                        {"https://hub.fleethub.invalid/x", "127.0.0.1:"},
	                        {"https://hub.fleethub.invalid/x", "127.0.0.1:x"},
	                        {"https://hub.fleethub.invalid/x", "::1:443"},
	                        {"https://hub.fleethub.invalid/x", ":443"}};
	memset(&g, 0, sizeof g);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(http_client_request_via(c2, bad[i][1], "GET", bad[i][0], NULL, NULL,
		                                         0, 500, 100, on_done, &g),
		                 FH_EINVAL);
	assert_int_equal(g.calls, 0);
	http_client_close(c2);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	tls_stop(&t);
	unlink(ca);
}

static void test_new_with_bad_ca_file(void **state)
{
	struct fixture *f = *state;
	struct http_client *c2 = NULL;
	char err[256] = "";
	assert_int_equal(http_client_new(&c2, &f->loop, "/nonexistent/ca.pem", err, sizeof err),
	                 FH_EINVAL);
	assert_non_null(strstr(err, "/nonexistent/ca.pem"));
	char path[64];
	snprintf(path, sizeof path, "/tmp/fh_test_noca_%d.pem", (int)getpid());
	FILE *fp = fopen(path, "w");
	fputs("not a certificate\n", fp);
	fclose(fp);
	err[0] = '\0';
	assert_int_equal(http_client_new(&c2, &f->loop, path, err, sizeof err), FH_EINVAL);
	assert_non_null(strstr(err, "no PEM certificate"));
	unlink(path);
}

static void test_close_with_requests_in_flight(void **state)
{
	struct fixture *f = *state;
	struct http_client *c2;
	char err[256], u[128];
	assert_int_equal(http_client_new(&c2, &f->loop, NULL, err, sizeof err), 0);
	url(f, u, sizeof u, "/hang");
	struct got g1, g2;
	assert_int_equal(request(c2, "POST", u, NULL, "{}", 60000, 1024, &g1), 0);
	run_until(&f->loop, &f->srv.requests, 1); /* the server holds it */
	/* One more that has not even connected yet. */
	assert_int_equal(request(c2, "GET", u, NULL, NULL, 60000, 1024, &g2), 0);
	http_client_close(c2);
	assert_int_equal(g1.calls, 1);
	assert_int_equal(g1.status, 0);
	assert_string_equal(g1.error, "shutting down");
	assert_int_equal(g2.calls, 1);
	assert_string_equal(g2.error, "shutting down");
	http_client_close(NULL);
	/* The handles close on the next turns (teardown checks the loop). */
	uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(g1.calls, 1);
	assert_int_equal(g2.calls, 1);
}

/* A callback that starts the next request, then one that closes its own
 * client: both are legal from inside done. */
struct chain {
	struct http_client *c;
	char url[128];
	struct got first, second;
	int calls;
};

static void chain_second(void *arg, const struct http_client_result *r)
{
	struct chain *ch = arg;
	on_done(&ch->second, r);
	ch->calls++;
	http_client_close(ch->c);
	assert_int_equal(http_client_request(ch->c, "GET", ch->url, NULL, NULL, 0, 1000, 1000,
	                                     on_done, &ch->first),
	                 FH_EINVAL); /* closing */
}

static void chain_first(void *arg, const struct http_client_result *r)
{
	struct chain *ch = arg;
	on_done(&ch->first, r);
	ch->calls++;
	in_request = true;
	assert_int_equal(
	    http_client_request(ch->c, "GET", ch->url, NULL, NULL, 0, 5000, 1000, chain_second, ch),
	    0);
	in_request = false;
}

static void test_requests_from_callbacks(void **state)
{
	struct fixture *f = *state;
	struct chain ch;
	memset(&ch, 0, sizeof ch);
	char err[256];
	assert_int_equal(http_client_new(&ch.c, &f->loop, NULL, err, sizeof err), 0);
	url(f, ch.url, sizeof ch.url, "/ok");
	assert_int_equal(
	    http_client_request(ch.c, "GET", ch.url, NULL, NULL, 0, 5000, 1000, chain_first, &ch),
	    0);
	run_until(&f->loop, &ch.calls, 2);
	assert_int_equal(ch.first.status, 200);
	assert_int_equal(ch.second.status, 200);
	assert_false(ch.second.during_request);
	assert_string_equal(ch.second.body, "hello");
}

static void test_url_for_log(void **state)
{
	char out[128];
	http_client_url_for_log("https://h.example/alloc?code=abc%2B1#frag", out, sizeof out);
	assert_string_equal(out, "https://h.example/alloc");
	http_client_url_for_log("https://user:p@ss@h.example:8443/a/b#x", out, sizeof out);
	assert_string_equal(out, "https://h.example:8443/a/b");
	http_client_url_for_log("https://h.example?key=1", out, sizeof out);
	assert_string_equal(out, "https://h.example");
	http_client_url_for_log("https://h.example/p?next=https://u:p@x/", out, sizeof out);
	assert_string_equal(out, "https://h.example/p");
	http_client_url_for_log("http://127.0.0.1:8080/x", out, sizeof out);
	assert_string_equal(out, "http://127.0.0.1:8080/x");
	http_client_url_for_log("", out, sizeof out);
	assert_string_equal(out, "");
	char small[10];
	http_client_url_for_log("https://h.example/long/path", small, sizeof small);
	assert_string_equal(small, "https://h");
	char one[1] = {'z'};
	http_client_url_for_log("https://h.example/", one, sizeof one);
	assert_int_equal(one[0], '\0');
	http_client_url_for_log("https://h.example/", one, 0); /* nothing written */
	assert_int_equal(one[0], '\0');
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	/* The loopback servers must be reached directly. */
	const char *proxies[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "ALL_PROXY",
	                         "all_proxy"};
	for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++)
		unsetenv(proxies[i]);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_get_200_with_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_post_body_and_headers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_query_kept_verbatim, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_status_500_and_redirect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_response_too_large, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_url_policy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_https_to_plain_port, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tls_untrusted_then_extra_ca, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_request_via, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_new_with_bad_ca_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_with_requests_in_flight, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_requests_from_callbacks, setup, teardown),
	    cmocka_unit_test(test_url_for_log),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
