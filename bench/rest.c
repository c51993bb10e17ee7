/* The load generator's back end over HTTPS (see rest.h).
 *
 * Per connection: a ring of `window` entries (send time, seq) in request
 * order; `head` is the oldest unanswered one, `count` how many are
 * unanswered. Invariant: count <= window, and the ring entries head ..
 * head+count-1 are exactly the requests written and not yet answered.
 * A request's text is built into one shared buffer per write (all of a
 * fill goes out in one SSL_write). */
#include "rest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/mem.h"
#include "devices.h"
#include "httpc.h"

#define API_VERSION "2021-04-12"

struct entry {
	uint64_t t0_ns;
	uint64_t seq;
};

struct rconn {
	struct httpc *c; /* NULL once closed */
	bool ready;
	unsigned head, count;
	struct entry *ring;
};

static struct {
	struct rest_config cfg;
	const struct rest_hooks *hooks;
	struct rconn *conns;
	unsigned connecting, ready, open;
	unsigned next; /* round robin over connections */
	uint64_t outstanding;
	char *auth;    /* "Authorization: SharedAccessSignature ..." */
	char *padding; /* "xxx..." to bring a body to about cfg.size bytes */
	struct buf out;
	bool filling;
	uint64_t seq; /* closed loop: the next sequence number */
	void (*closed)(void);
} r;

unsigned rest_connecting(void)
{
	return r.connecting;
}

unsigned rest_ready(void)
{
	return r.ready;
}

uint64_t rest_outstanding(void)
{
	return r.outstanding;
}

/* Appends request seq of the configured kind (rest.h) for device
 * seq % devices. */
static void encode(struct buf *out, uint64_t seq)
{
	char id[128], body[256 + 4096];
	devices_id(id, sizeof id, r.cfg.prefix, (unsigned)(seq % r.cfg.devices));
	const char *method = "PATCH", *path = "/twins/%s";
	int bl;
	switch (r.cfg.kind) {
	case REST_METHOD:
		method = "POST";
		path = "/twins/%s/methods";
		bl = snprintf(body, sizeof body,
		              "{\"methodName\":\"bench\",\"responseTimeoutInSeconds\":30,"
		              "\"payload\":{\"seq\":%" PRIu64 ",\"pad\":\"%s\"}}",
		              seq, r.padding);
		break;
	case REST_C2D:
		method = "POST";
		path = "/fleethub/devices/%s/messages";
		bl = snprintf(body, sizeof body, "{\"body\":\"%" PRIu64 " %s\"}", seq, r.padding);
		break;
	default:
		bl = snprintf(body, sizeof body,
		              "{\"properties\":{\"desired\":{\"seq\":%" PRIu64 ",\"pad\":\"%s\"}}}",
		              seq, r.padding);
	}
	char target[256];
	snprintf(target, sizeof target, path, id);
	buf_printf(out,
	           "%s %s?api-version=" API_VERSION " HTTP/1.1\r\n"
	           "Host: %s\r\n%s\r\nContent-Type: application/json\r\n"
	           "Content-Length: %d\r\n\r\n%s",
	           method, target, r.cfg.hub, r.auth, bl, body);
}

static void push(struct rconn *k, uint64_t seq, uint64_t t0)
{
	struct entry *e = &k->ring[(k->head + k->count) % r.cfg.window];
	e->t0_ns = t0;
	e->seq = seq;
	k->count++;
	r.outstanding++;
}

static bool has_room(const struct rconn *k)
{
	return k->ready && k->c && k->count < r.cfg.window && httpc_writable(k->c);
}

bool rest_send(uint64_t seq)
{
	for (unsigned n = 0; n < r.cfg.connections; n++) {
		struct rconn *k = &r.conns[r.next];
		r.next = (r.next + 1) % r.cfg.connections;
		if (!has_room(k))
			continue;
		buf_reset(&r.out);
		encode(&r.out, seq);
		push(k, seq, uv_hrtime());
		httpc_send(k->c, r.out.data, r.out.len);
		return true;
	}
	return false;
}

static void fill_one(struct rconn *k)
{
	if (!r.filling || !has_room(k))
		return;
	buf_reset(&r.out);
	uint64_t t0 = uv_hrtime();
	while (k->count < r.cfg.window && (!r.cfg.count || r.seq < r.cfg.count)) {
		encode(&r.out, r.seq);
		push(k, r.seq++, t0);
	}
	if (r.out.len)
		httpc_send(k->c, r.out.data, r.out.len);
}

void rest_filling(bool on)
{
	r.filling = on && r.cfg.closed_loop;
	for (unsigned n = 0; n < r.cfg.connections; n++)
		fill_one(&r.conns[n]);
}

static void on_batch_end(struct httpc *c)
{
	fill_one(httpc_app(c));
}

static void on_ready(struct httpc *c)
{
	struct rconn *k = httpc_app(c);
	k->ready = true;
	r.connecting--;
	r.ready++;
	r.hooks->connected(NULL);
}

static void on_response(struct httpc *c, int status, const char *body, size_t len)
{
	struct rconn *k = httpc_app(c);
	if (k->count == 0) {
		/* An answer to nothing: the server is confused. */
		r.hooks->lost(0, "an HTTP response to no request");
		httpc_close(c, false);
		return;
	}
	struct entry e = k->ring[k->head];
	k->head = (k->head + 1) % r.cfg.window;
	k->count--;
	r.outstanding--;
	r.hooks->answered(e.t0_ns, e.seq, status, body, len);
}

static void on_close(struct httpc *c, enum tlsconn_error e, const char *detail)
{
	struct rconn *k = httpc_app(c);
	char d[256];
	snprintf(d, sizeof d, "REST connection: %s", detail);
	k->c = NULL;
	r.open--;
	if (!k->ready) {
		r.connecting--;
		r.hooks->connected(d);
	} else {
		k->ready = false;
		r.ready--;
		unsigned n = k->count;
		r.outstanding -= n;
		k->count = 0;
		if (e != TLSCONN_OK || n > 0)
			r.hooks->lost(n, d);
	}
	if (r.open == 0 && r.closed)
		r.closed();
}

static const struct httpc_handler handler = {on_ready, on_response, on_batch_end, on_batch_end,
                                             on_close};

void rest_sweep(uint64_t now_ns)
{
	uint64_t limit = (uint64_t)(r.cfg.timeout_s * 1e9);
	for (unsigned n = 0; n < r.cfg.connections; n++) {
		struct rconn *k = &r.conns[n];
		if (k->c && k->count > 0 && now_ns - k->ring[k->head].t0_ns > limit) {
			char d[128];
			snprintf(d, sizeof d, "REST request unanswered after %.1f s",
			         r.cfg.timeout_s);
			r.hooks->lost(k->count, d);
			r.outstanding -= k->count;
			k->count = 0;
			httpc_close(k->c, false);
		}
	}
}

int rest_start(const struct rest_config *cfg, const struct rest_hooks *hooks)
{
	r.cfg = *cfg;
	r.hooks = hooks;
	buf_init(&r.out);
	r.auth = devices_owner_header(cfg->hub, cfg->owner_key);
	if (!r.auth)
		return -1;
	/* {"properties":{"desired":{"seq":NNNNNN,"pad":""}}} is about 50 bytes. */
	size_t pad = cfg->size > 50 ? cfg->size - 50 : 1;
	if (pad > 4000)
		pad = 4000;
	r.padding = xmalloc(pad + 1);
	memset(r.padding, 'x', pad);
	r.padding[pad] = '\0';
	r.conns = xcalloc(cfg->connections, sizeof *r.conns);
	for (unsigned n = 0; n < cfg->connections; n++) {
		struct rconn *k = &r.conns[n];
		k->ring = xcalloc(cfg->window, sizeof *k->ring);
		r.connecting++;
		r.open++;
		k->c = httpc_open(cfg->loop, cfg->tls, (const struct sockaddr *)&cfg->addr,
		                  cfg->hub, (uint64_t)(cfg->timeout_s * 1000), &handler, k);
	}
	return 0;
}

void rest_close(bool graceful, void (*done)(void))
{
	r.closed = done;
	if (r.open == 0) {
		if (done)
			done();
		return;
	}
	for (unsigned n = 0; n < r.cfg.connections; n++)
		if (r.conns[n].c)
			httpc_close(r.conns[n].c, graceful);
}

void rest_free(void)
{
	for (unsigned n = 0; r.conns && n < r.cfg.connections; n++)
		free(r.conns[n].ring);
	free(r.conns);
	free(r.auth);
	free(r.padding);
	buf_free(&r.out);
	memset(&r, 0, sizeof r);
}
