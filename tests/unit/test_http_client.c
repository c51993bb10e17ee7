/* Unit tests for the outgoing HTTP client against servers inside this
 * process: the test HTTP/1.1 server (support/test_web.h) on the same libuv
 * loop, plain, and over TLS with a certificate made at test time; each
 * records the last request and gives the answers a test sets.
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

#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include "base/err.h"
#include "net/http_client.h"
#include "support/test_web.h"

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
	struct web srv; /* plain; answers 200 "hello" unless a test says otherwise */
	struct web tls; /* started by tls_start */
	char ca[64];    /* the TLS server's certificate (PEM), "" when not started */
	struct http_client *c;
	char base[64]; /* http://127.0.0.1:port */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	uv_loop_init(&f->loop);
	web_start(&f->srv, &f->loop);
	f->srv.ans[0] = (struct web_answer){.status = 200, .body = "hello"};
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
	web_stop(&f->srv);
	if (f->ca[0])
		web_stop(&f->tls);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	if (f->ca[0])
		unlink(f->ca);
	free(f);
	return 0;
}

static void url(struct fixture *f, char *out, size_t n, const char *path)
{
	snprintf(out, n, "%s%s", f->base, path);
}

/* Starts the TLS server, answering 200 "secure"; its self-signed
 * certificate goes to /tmp/fh_test_<name>_<pid>.pem (removed at teardown). */
static void tls_start(struct fixture *f, const char *name)
{
	snprintf(f->ca, sizeof f->ca, "/tmp/fh_test_%s_%d.pem", name, (int)getpid());
	web_start_tls(&f->tls, &f->loop, f->ca);
	f->tls.ans[0] = (struct web_answer){.status = 200, .body = "secure"};
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
	assert_true(web_head_has(&f->srv, "Content-Type: application/json"));
	assert_true(web_head_has(&f->srv, "Content-Length: 7"));
	assert_true(web_head_has(&f->srv, "X-Test: 1"));
	assert_true(web_head_has(&f->srv, "Authorization: SharedAccessSignature sr=x"));
	assert_null(strcasestr(f->srv.head.data, "Expect:"));

	/* A Content-Type of the caller's is kept and not doubled. */
	const char *own[] = {"content-type: text/plain", NULL};
	assert_int_equal(request(f->c, "PUT", u, own, "x", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 200);
	assert_string_equal(f->srv.method, "PUT");
	assert_true(web_head_has(&f->srv, "Content-Type: text/plain"));
	assert_null(strcasestr(f->srv.head.data, "application/json"));

	/* No body: PATCH still says Content-Length: 0, and no form type. */
	assert_int_equal(request(f->c, "PATCH", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 200);
	assert_string_equal(f->srv.method, "PATCH");
	assert_true(web_head_has(&f->srv, "Content-Length: 0"));
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
	f->srv.ans[0] = (struct web_answer){.status = 500, .body = "boom"};
	f->srv.ans[1] = (struct web_answer){.status = 302, .headers = "Location: /ok\r\n"};
	f->srv.nans = 2;
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
	f->srv.ans[0] = (struct web_answer){0}; /* never answered */
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
	char u[128];
	snprintf(u, sizeof u, "http://127.0.0.1:%d/x", web_closed_port());
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
	static char big[10001];
	memset(big, 'x', 10000);
	f->srv.ans[0] = (struct web_answer){.status = 200, .body = big};
	f->srv.ans[1] = (struct web_answer){.status = 200, .body = big, .until_close = true};
	f->srv.nans = 2;
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

static void test_tls_untrusted_then_extra_ca(void **state)
{
	struct fixture *f = *state;
	char u[128], err[256];
	tls_start(f, "ca");
	snprintf(u, sizeof u, "https://127.0.0.1:%d/hook?code=1", f->tls.port);

	/* Self-signed and not trusted: a TLS failure, no answer. */
	struct got g;
	assert_int_equal(request(f->c, "POST", u, NULL, "{}", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_true(strncmp(g.error, "TLS: certificate verify failed", 30) == 0);

	/* Trusted through the extra CA file (next to the system bundle). */
	struct http_client *c2;
	assert_int_equal(http_client_new(&c2, &f->loop, f->ca, err, sizeof err), 0);
	assert_int_equal(request(c2, "POST", u, NULL, "{}", 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_string_equal(g.error, "");
	assert_int_equal(g.status, 200);
	assert_string_equal(g.body, "secure");
	http_client_close(c2);
	uv_run(&f->loop, UV_RUN_NOWAIT);

	/* The name must match too: "localhost" is not in the certificate. */
	assert_int_equal(http_client_new(&c2, &f->loop, f->ca, err, sizeof err), 0);
	snprintf(u, sizeof u, "https://localhost:%d/hook", f->tls.port);
	assert_int_equal(request(c2, "GET", u, NULL, NULL, 5000, 1024, &g), 0);
	run_until(&f->loop, &g.calls, 1);
	assert_int_equal(g.status, 0);
	assert_true(strncmp(g.error, "TLS: ", 5) == 0);
	assert_non_null(strstr(g.error, "host name"));
	http_client_close(c2);
	uv_run(&f->loop, UV_RUN_NOWAIT);

	assert_true(f->tls.handshakes >= 1);
}

/* http_client_request_via: the connection goes to the given address while
 * TLS verifies the URL's name (as a remote linked hub is reached). */
static void test_request_via(void **state)
{
	struct fixture *f = *state;
	char u[128], dial[64], err[256];
	tls_start(f, "via_ca");
	struct http_client *c2;
	assert_int_equal(http_client_new(&c2, &f->loop, f->ca, err, sizeof err), 0);
	struct got g;

	/* A name that resolves nowhere, dialled at the server: verified, answered. */
	snprintf(dial, sizeof dial, "127.0.0.1:%d", f->tls.port);
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
	snprintf(u, sizeof u, "https://localhost:%d/x", f->tls.port);
	assert_int_equal(
	    http_client_request_via(c2, dial, "GET", u, NULL, NULL, 0, 5000, 1024, on_done, &g), 0);
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
		assert_int_equal(http_client_request_via(c2, bad[i][1], "GET", bad[i][0], NULL,
		                                         NULL, 0, 500, 100, on_done, &g),
		                 FH_EINVAL);
	assert_int_equal(g.calls, 0);
	http_client_close(c2);
	uv_run(&f->loop, UV_RUN_NOWAIT);
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
	f->srv.ans[0] = (struct web_answer){0}; /* never answered */
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
