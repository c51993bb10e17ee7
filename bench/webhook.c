/* The custom allocation webhook of the benchmarks (see webhook.h).
 *
 *   accept --TLS handshake--> OPEN --request parsed--> answer due after delay
 *   --timer: response written--> OPEN (keep-alive) ... --peer closes--> freed
 *
 * Requests are answered in the order they arrive on a connection (the
 * delay is the same for all, so their timers fire in that order). A
 * connection that closes while answers are pending is freed only when the
 * last pending timer has fired: `pending` counts them, `closed` marks the
 * connection gone (its answers are then dropped). */
#include "webhook.h"

#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/mem.h"
#include "codec/http.h"
#include "hist.h"
#include "report.h"
#include "tlsconn.h"

#define HANDSHAKE_MS 10000

struct wconn {
	struct tlsconn *t; /* NULL once closed */
	struct http_parser_state *ps;
	unsigned pending;
};

struct answer {
	uv_timer_t timer;
	struct wconn *w;
	uint64_t t0_ns;
	int status;
	bool keep_alive;
	char *body;
};

static struct {
	const struct webhook_plan *p;
	uv_loop_t *loop;
	uv_tcp_t server;
	uv_signal_t sigint, sigterm;
	uint64_t requests, answered, errors;
	struct hist latency;
} wh;

static void wconn_release(struct wconn *w)
{
	if (w->t || w->pending > 0)
		return;
	http_parser_free(w->ps);
	free(w);
}

static void on_answer_closed(uv_handle_t *h)
{
	struct answer *a = h->data;
	struct wconn *w = a->w;
	free(a->body);
	free(a);
	w->pending--;
	wconn_release(w);
}

static void on_due(uv_timer_t *t)
{
	struct answer *a = t->data;
	struct wconn *w = a->w;
	if (w->t) {
		struct buf out = BUF_INIT;
		static const char *const headers[] = {"Content-Type", "application/json", NULL};
		http_response_build(&out, a->status, headers, a->body, strlen(a->body),
		                    a->keep_alive);
		tlsconn_send(w->t, out.data, out.len);
		buf_free(&out);
		hist_add(&wh.latency, (uv_hrtime() - a->t0_ns) / 1000);
		wh.answered++;
		if (!a->keep_alive)
			tlsconn_close(w->t, true);
	}
	uv_close((uv_handle_t *)&a->timer, on_answer_closed);
}

/* The AllocationResponse for a request, or an error answer. */
static char *answer_body(const struct http_request *req, int *status)
{
	json_error_t je;
	json_t *in = json_loadb(req->body.data, req->body.len, 0, &je);
	const char *regid = NULL;
	if (in)
		json_unpack(in, "{s:{s:s}}", "deviceRuntimeContext", "registrationId", &regid);
	if (req->verb != HTTP_VERB_POST || !regid) {
		char d[160];
		snprintf(d, sizeof d, "%s %s without deviceRuntimeContext.registrationId",
		         req->method, req->path);
		report(&wh.errors, "webhook: bad request", d);
		json_decref(in);
		*status = 400;
		return xstrdup("{\"message\":\"expected an allocation request\"}");
	}
	json_t *out =
	    json_pack("{s:s,s:{s:{s:b},s:{s:{s:s}}},s:{s:s}}", "iotHubHostName", wh.p->hub,
	              "initialTwin", "tags", "bench", 1, "properties", "desired", "allocatedBy",
	              "webhook", "payload", "registrationId", regid);
	char *text = json_dumps(out, JSON_COMPACT);
	json_decref(out);
	json_decref(in);
	*status = 200;
	return text;
}

static void on_data(struct tlsconn *t, const uint8_t *p, size_t n)
{
	struct wconn *w = tlsconn_app(t);
	while (n > 0 && w->t) {
		struct http_request *req = NULL;
		int used = http_parser_feed(w->ps, (const char *)p, n, &req);
		if (used < 0) {
			const char *why;
			http_parser_error(w->ps, &why);
			report(&wh.errors, "webhook: malformed request", why);
			tlsconn_close(t, false);
			return;
		}
		p += used;
		n -= (size_t)used;
		if (!req)
			continue;
		wh.requests++;
		struct answer *a = xcalloc(1, sizeof *a);
		a->w = w;
		a->t0_ns = uv_hrtime();
		a->keep_alive = req->keep_alive;
		a->body = answer_body(req, &a->status);
		http_request_free(req);
		uv_timer_init(wh.loop, &a->timer);
		a->timer.data = a;
		w->pending++;
		uv_timer_start(&a->timer, on_due, wh.p->delay_ms, 0);
	}
}

static void on_open(struct tlsconn *t)
{
	tlsconn_deadline(t, 0);
}

static void on_close(struct tlsconn *t, enum tlsconn_error e, const char *detail)
{
	struct wconn *w = tlsconn_app(t);
	/* A client may drop an idle keep-alive connection abruptly (EIO);
	 * failed handshakes and malformed requests are errors. */
	if (e == TLSCONN_ETLS || e == TLSCONN_EPROTO || e == TLSCONN_ETIMEOUT)
		report(&wh.errors, "webhook: connection failed", detail);
	w->t = NULL;
	wconn_release(w);
}

static const struct tlsconn_handler handler = {on_open, on_data, NULL, NULL, NULL, on_close};

static void on_connection(uv_stream_t *server, int status)
{
	if (status < 0) {
		report(&wh.errors, "webhook: accept", uv_strerror(status));
		return;
	}
	struct wconn *w = xcalloc(1, sizeof *w);
	w->ps = http_parser_new(NULL);
	w->t = tlsconn_accept(server, wh.p->tls, HANDSHAKE_MS, &handler, w);
}

static void on_signal(uv_signal_t *s, int signum)
{
	uv_close((uv_handle_t *)&wh.server, NULL);
	uv_close((uv_handle_t *)&wh.sigint, NULL);
	uv_close((uv_handle_t *)&wh.sigterm, NULL);
	uv_stop(wh.loop);
}

int webhook_run(const struct webhook_plan *p)
{
	wh.p = p;
	wh.loop = uv_default_loop();
	hist_init(&wh.latency);
	uv_tcp_init(wh.loop, &wh.server);
	int rc = uv_tcp_bind(&wh.server, (const struct sockaddr *)&p->addr, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&wh.server, 1024, on_connection);
	if (rc != 0) {
		fprintf(stderr, "loadgen: webhook cannot listen: %s\n", uv_strerror(rc));
		return 3;
	}
	uv_signal_init(wh.loop, &wh.sigint);
	uv_signal_init(wh.loop, &wh.sigterm);
	uv_signal_start(&wh.sigint, on_signal, SIGINT);
	uv_signal_start(&wh.sigterm, on_signal, SIGTERM);
	fprintf(stderr, "loadgen: webhook listening, answering after %u ms\n", p->delay_ms);
	uv_run(wh.loop, UV_RUN_DEFAULT);
	printf("webhook requests=%" PRIu64 " answered=%" PRIu64 " errors=%" PRIu64
	       " p50_us=%" PRIu64 " max_us=%" PRIu64 "\n",
	       wh.requests, wh.answered, wh.errors, hist_percentile(&wh.latency, 0.5),
	       wh.latency.max);
	fflush(stdout);
	return 0;
}
