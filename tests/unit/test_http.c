/* Unit tests for the HTTP/1.1 request codec: requests whole, byte by byte
 * and pipelined; chunked bodies; every limit and its status; CL+TE;
 * upgrades leaving the new protocol's bytes; query parameters; responses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "codec/http.h"

/* Feeds text in slices of `step` bytes; returns the first request and the
 * total bytes consumed up to and including it. */
static struct http_request *feed(struct http_parser_state *ps, const char *text, size_t n,
				 size_t step, size_t *consumed, int *err)
{
	size_t off = 0;
	*err = 0;
	while (off < n) {
		size_t len = n - off < step ? n - off : step;
		struct http_request *req = NULL;
		int used = http_parser_feed(ps, text + off, len, &req);
		if (used < 0) {
			*err = used;
			return NULL;
		}
		off += (size_t)used;
		if (req) {
			*consumed = off;
			return req;
		}
		if (used == 0)
			break; /* no progress without a request: a parser bug */
	}
	*consumed = off;
	return NULL;
}

static void test_get_any_slicing(void **state)
{
	const char *t = "GET /devices/d%201?api-version=2021-04-12&top=5 HTTP/1.1\r\n"
			"Host: localhost\r\nX-Long: " "aaaaaaaaaaaaaaaaaaaa" "\r\n\r\n";
	for (size_t step = 1; step <= strlen(t); step += 7) {
		struct http_parser_state *ps = http_parser_new(NULL);
		size_t used;
		int err;
		struct http_request *r = feed(ps, t, strlen(t), step, &used, &err);
		assert_non_null(r);
		assert_int_equal(used, strlen(t));
		assert_int_equal(r->verb, HTTP_VERB_GET);
		assert_string_equal(r->path, "/devices/d%201");
		assert_string_equal(r->query, "api-version=2021-04-12&top=5");
		assert_string_equal(http_request_header(r, "host"), "localhost");
		assert_string_equal(http_request_header(r, "X-LONG"), "aaaaaaaaaaaaaaaaaaaa");
		assert_null(http_request_header(r, "Nope"));
		assert_true(r->keep_alive);
		char v[32];
		assert_int_equal(http_query_param(r->query, "top", v, sizeof v), 1);
		assert_string_equal(v, "5");
		assert_int_equal(http_query_param(r->query, "api", v, sizeof v), 0);
		http_request_free(r);
		http_parser_free(ps);
	}
}

static void test_body_chunked_pipelined(void **state)
{
	const char *t = "PUT /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
			"PATCH /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
			"DELETE /c HTTP/1.1\r\nConnection: close\r\n\r\n";
	struct http_parser_state *ps = http_parser_new(NULL);
	size_t off = 0, n = strlen(t);
	const char *want_path[] = {"/a", "/b", "/c"};
	const char *want_body[] = {"hello", "abcde", ""};
	for (int i = 0; i < 3; i++) {
		struct http_request *r = NULL;
		int used = http_parser_feed(ps, t + off, n - off, &r);
		assert_true(used > 0);
		off += (size_t)used;
		assert_non_null(r);
		assert_string_equal(r->path, want_path[i]);
		assert_string_equal(r->body.data, want_body[i]);
		assert_int_equal(r->keep_alive, i < 2);
		http_request_free(r);
	}
	assert_int_equal(off, n);
	http_parser_free(ps);
}

static int error_status(const char *t, const struct http_limits *lim)
{
	struct http_parser_state *ps = http_parser_new(lim);
	struct http_request *r = NULL;
	int used = http_parser_feed(ps, t, strlen(t), &r);
	int status = 0;
	if (used < 0) {
		const char *why;
		status = http_parser_error(ps, &why);
		assert_non_null(why);
	}
	http_request_free(r);
	http_parser_free(ps);
	return status;
}

static void test_limits_and_errors(void **state)
{
	struct http_limits lim = {32, 4, 128, 8};
	assert_int_equal(error_status("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", &lim), 414);
	assert_int_equal(error_status("GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n", &lim), 431);
	char big[400];
	snprintf(big, sizeof big, "GET / HTTP/1.1\r\nx: %0200d\r\n\r\n", 0);
	assert_int_equal(error_status(big, &lim), 431);
	assert_int_equal(error_status("PUT / HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789", &lim), 413);
	assert_int_equal(error_status("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n", &lim), 413);
	assert_int_equal(error_status("PUT / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", NULL), 400);
	assert_int_equal(error_status("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", NULL), 400);
	assert_int_equal(error_status("\x01\x02 / HTTP/1.1\r\n\r\n", NULL), 400);
	assert_int_equal(error_status("GET / HTTP/1.1\r\nHost: a\r\n\r\n", NULL), 0);
}

static void test_upgrade_leaves_rest(void **state)
{
	const char *head = "GET /$iothub/websocket HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
			   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
	char t[512];
	snprintf(t, sizeof t, "%s\x82\x80MASK", head);
	struct http_parser_state *ps = http_parser_new(NULL);
	struct http_request *r = NULL;
	int used = http_parser_feed(ps, t, strlen(t), &r);
	assert_non_null(r);
	assert_true(r->upgrade);
	assert_int_equal(used, (int)strlen(head));
	http_request_free(r);
	http_parser_free(ps);
}

static void test_response(void **state)
{
	struct buf b = BUF_INIT;
	const char *h[] = {"Content-Type", "application/json", NULL};
	http_response_build(&b, 412, h, "{}", 2, true);
	assert_string_equal(b.data, "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n"
				    "Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}");
	buf_reset(&b);
	http_response_build(&b, 204, NULL, NULL, 0, false);
	assert_string_equal(b.data, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
	buf_free(&b);
	assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
}

static bool only_abc(const char *name, const char *id)
{
	return strcmp(name, "{id}") == 0 && strspn(id, "abc#") == strlen(id);
}

/* Route patterns: literal segments (any case), a captured and validated
 * segment, "*", "**", the trailing slash, and what is refused as -1. */
static void test_route_match(void **state)
{
	char id[16];
	static const struct {
		const char *pattern, *path;
		int want;
		const char *id;
	} cases[] = {
	    {"/devices/{id}", "/devices/abc", 1, "abc"},
	    {"/devices/{id}", "/DEVICES/abc/", 1, "abc"},
	    {"/devices/{id}", "/devices/a%23b", 1, "a#b"},
	    {"/devices/{id}", "/devices/", 0, NULL},
	    {"/devices/{id}", "/devices", 0, NULL},
	    {"/devices/{id}", "/devices/abc/x", 0, NULL},
	    {"/devices/{id}", "/devices/xyz", -1, NULL},
	    {"/devices/{id}", "/devices/a%2", -1, NULL},
	    {"/devices/{id}", "/devices/a%00", -1, NULL},
	    {"/devices/{id}", "/devices/aaaaaaaaaaaaaaaaaaaa", -1, NULL},
	    {"/devices/*/modules/**", "/devices/d1/modules", 1, NULL},
	    {"/devices/*/modules/**", "/devices/d1/modules/m1/twin", 1, NULL},
	    {"/devices/*/modules/**", "/devices//modules", 0, NULL},
	    {"/devices/*/modules/**", "/devices/d1/module", 0, NULL},
	    {"/jobs/**", "/jobs", 1, NULL},
	    {"/jobs/**", "/jobsx", 0, NULL},
	    {"/twins/{id}/methods", "/twins/abc/methods", 1, "abc"},
	    {"/statistics/devices", "/statistics/devices", 1, NULL},
	    {"/statistics/devices", "/statistics/devices//", 0, NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memset(id, 0, sizeof id);
		int m = http_route_match(cases[i].pattern, cases[i].path, id, sizeof id, only_abc);
		if (m != cases[i].want)
			fail_msg("%s vs %s: %d, want %d", cases[i].pattern, cases[i].path, m,
				 cases[i].want);
		if (cases[i].id)
			assert_string_equal(id, cases[i].id);
	}
	assert_int_equal(http_route_match("/devices/{id}", "/devices/abc", NULL, 0, NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_any_slicing),
		cmocka_unit_test(test_body_chunked_pipelined),
		cmocka_unit_test(test_limits_and_errors),
		cmocka_unit_test(test_upgrade_leaves_rest),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_route_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
