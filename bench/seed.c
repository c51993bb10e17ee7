/* seed-twins (see seed.h).
 *
 * Step 1, tags. Each REST connection keeps a ring of the device indices
 * whose PATCH it wrote and has not had answered, in request order (the
 * server answers a connection's requests in order). Invariant: every index
 * below `next` was sent exactly once and is answered, in exactly one ring,
 * or counted lost; `settled` counts the answered and the lost. The step
 * ends when settled reaches the device count, or when no connection is
 * left (the devices never sent are then lost too).
 *
 * Step 2, reported. Each of the `concurrency` slots runs one device at a
 * time:
 *
 *   CONNECTING --CONNACK--> SUBSCRIBING --SUBACK: PUBLISH the patch--> REPORTING
 *   REPORTING --$iothub/twin/res/204/?$rid=1--> DONE (DISCONNECT)
 *   any other answer, a refused SUBSCRIBE, a close or the timeout --> FAILED
 *   DONE / FAILED --connection closed--> the slot's next device, if any
 *
 * A device is counted once: DONE, or one error when it fails. The loop
 * ends when the last slot's connection has closed. */
#include "seed.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "base/buf.h"
#include "base/mem.h"
#include "client.h"
#include "devices.h"
#include "hist.h"
#include "httpc.h"
#include "report.h"
#include "twinset.h"

#define API_VERSION "2021-04-12"
#define SWEEP_MS 100

struct pending {
	unsigned i; /* the device */
	uint64_t t0_ns;
};

struct tconn {
	struct httpc *c; /* NULL once closed */
	bool ready;
	unsigned head, count;
	struct pending *ring; /* window entries */
};

enum dstate { D_CONNECTING, D_SUBSCRIBING, D_REPORTING, D_DONE, D_FAILED };

struct dslot {
	struct mqttc *c; /* NULL once closed */
	unsigned i;      /* the device */
	enum dstate state;
	uint64_t t0_ns;
	char id[128];
};

static struct {
	const struct seed_plan *p;
	uv_loop_t *loop;
	uv_timer_t sweep;
	/* step 1 */
	struct tconn *conns;
	unsigned open_conns;
	unsigned next, settled;
	bool tags_over;
	char *auth;
	struct buf out, body;
	/* step 2 */
	bool reporting;
	struct dslot *slots;
	unsigned next_dev, open_slots;
	struct hist latency; /* per device: TCP connect to the 204 */
	/* results */
	uint64_t t_start_ns, t_tags_ns, t_end_ns;
	uint64_t tags_ok, reported_ok;
	uint64_t connect_errors, status_errors, timeouts, disconnects, lost;
} s;

static void start_reported(void);
static const struct mqttc_handler mqtt_handler;

/* ---- step 1: tags ---------------------------------------------------------------- */

static void encode_patch(unsigned i)
{
	char id[128];
	devices_id(id, sizeof id, s.p->prefix, i);
	buf_reset(&s.body);
	twinset_tags(&s.body, i);
	buf_printf(&s.out,
	           "PATCH /twins/%s?api-version=" API_VERSION " HTTP/1.1\r\n"
	           "Host: %s\r\n%s\r\nContent-Type: application/json\r\n"
	           "Content-Length: %zu\r\n\r\n%s",
	           id, s.p->hub, s.auth, s.body.len, s.body.data);
}

/* Tops the connection's window up with the next devices, one write. */
static void fill(struct tconn *k)
{
	if (!k->c || !k->ready || s.tags_over || !httpc_writable(k->c))
		return;
	buf_reset(&s.out);
	uint64_t now = uv_hrtime();
	while (k->count < s.p->window && s.next < s.p->devices) {
		struct pending *e = &k->ring[(k->head + k->count) % s.p->window];
		e->i = s.next++;
		e->t0_ns = now;
		k->count++;
		encode_patch(e->i);
	}
	if (s.out.len)
		httpc_send(k->c, s.out.data, s.out.len);
}

/* Step 1 is over: the connections close; step 2 starts once they have. */
static void tags_over(void)
{
	if (s.tags_over)
		return;
	s.tags_over = true;
	s.t_tags_ns = uv_hrtime();
	fprintf(stderr, "loadgen: tags: %" PRIu64 " of %u twins patched in %.2f s\n", s.tags_ok,
	        s.p->devices, (double)(s.t_tags_ns - s.t_start_ns) / 1e9);
	for (unsigned n = 0; n < s.p->connections; n++)
		if (s.conns[n].c)
			httpc_close(s.conns[n].c, true);
	if (s.open_conns == 0)
		start_reported();
}

static void settle(unsigned n)
{
	s.settled += n;
	if (s.settled >= s.p->devices)
		tags_over();
}

static void on_rest_ready(struct httpc *c)
{
	struct tconn *k = httpc_app(c);
	k->ready = true;
	fill(k);
}

static void on_rest_response(struct httpc *c, int status, const char *body, size_t len)
{
	struct tconn *k = httpc_app(c);
	if (k->count == 0) {
		report(&s.status_errors, "unexpected answer", "an HTTP response to no request");
		httpc_close(c, false);
		return;
	}
	struct pending e = k->ring[k->head];
	k->head = (k->head + 1) % s.p->window;
	k->count--;
	if (status == 200) {
		s.tags_ok++;
	} else {
		char d[256];
		snprintf(d, sizeof d, "PATCH /twins/%s%u: status %d: %.*s", s.p->prefix, e.i,
		         status, (int)(len > 160 ? 160 : len), body);
		report(&s.status_errors, "unexpected answer", d);
	}
	settle(1);
}

static void on_rest_batch_end(struct httpc *c)
{
	fill(httpc_app(c));
}

static void on_rest_close(struct httpc *c, enum tlsconn_error e, const char *detail)
{
	struct tconn *k = httpc_app(c);
	char d[256];
	snprintf(d, sizeof d, "REST connection: %s", detail);
	k->c = NULL;
	s.open_conns--;
	if (!k->ready) {
		report(&s.connect_errors, "REST connection failed", d);
	} else if (k->count > 0) {
		report(&s.disconnects, "REST connection lost", d);
		s.lost += k->count;
		unsigned n = k->count;
		k->count = 0;
		settle(n);
	}
	k->ready = false;
	if (!s.tags_over && s.open_conns == 0) {
		/* No connection left: the devices never sent are lost. */
		s.lost += s.p->devices - s.next;
		settle(s.p->devices - s.next);
		s.next = s.p->devices;
	}
	if (s.tags_over && s.open_conns == 0 && !s.reporting)
		start_reported();
}

static const struct httpc_handler rest_handler = {
    on_rest_ready, on_rest_response, on_rest_batch_end, on_rest_batch_end, on_rest_close};

/* ---- step 2: reported properties ----------------------------------------------- */

static void fail(struct dslot *v, uint64_t *counter, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* FAILED: counted once, the connection closed at once. */
static void fail(struct dslot *v, uint64_t *counter, const char *what, const char *fmt, ...)
{
	char detail[320];
	int n = snprintf(detail, sizeof detail, "%s: ", v->id);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail + n, sizeof detail - (size_t)n, fmt, ap);
	va_end(ap);
	report(counter, what, detail);
	v->state = D_FAILED;
	if (v->c)
		mqttc_close(v->c, false);
}

static void next_device(struct dslot *v)
{
	if (s.next_dev >= s.p->devices)
		return;
	v->i = s.next_dev++;
	v->state = D_CONNECTING;
	v->t0_ns = uv_hrtime();
	devices_id(v->id, sizeof v->id, s.p->prefix, v->i);
	struct buf user = BUF_INIT, tok = BUF_INIT;
	if (devices_mqtt_login(s.p->hub, s.p->group_key, v->id,
	                       (int64_t)time(NULL) + DEVICES_TOKEN_LIFETIME_S, &user, &tok) != 0) {
		fprintf(stderr, "loadgen: --key is not valid base64\n");
		exit(2);
	}
	struct mqttc_connect cc = {
	    .client_id = v->id,
	    .username = user.data,
	    .password = tok.data,
	    .keepalive = (uint16_t)s.p->keepalive,
	    .clean = true,
	    .timeout_ms = (uint64_t)(s.p->timeout_s * 1000),
	};
	s.open_slots++;
	v->c = mqttc_open(s.loop, s.p->tls, (const struct sockaddr *)&s.p->mqtt_addr, s.p->tls_name,
	                  &cc, &mqtt_handler, v);
	buf_free(&user);
	buf_free(&tok);
}

static void on_mqtt_ready(struct mqttc *c)
{
	struct dslot *v = mqttc_app(c);
	struct buf b = BUF_INIT;
	mqtt_encode_subscribe(&b, 1, "$iothub/twin/res/#", 0);
	v->state = D_SUBSCRIBING;
	mqttc_send(c, b.data, b.len);
	buf_free(&b);
}

/* Whether topic is "$iothub/twin/res/<status>/?$rid=1", possibly followed
 * by "&..."; *status gets the status. */
static bool parse_answer(const struct mqtt_str *t, int *status)
{
	static const char prefix[] = "$iothub/twin/res/", rid[] = "/?$rid=1";
	const size_t pl = sizeof prefix - 1, rl = sizeof rid - 1;
	if (t->len <= pl || memcmp(t->p, prefix, pl) != 0)
		return false;
	size_t i = pl;
	int st = 0;
	while (i < t->len && t->p[i] >= '0' && t->p[i] <= '9' && st < 1000)
		st = st * 10 + (t->p[i++] - '0');
	if (i == pl || t->len - i < rl || memcmp(t->p + i, rid, rl) != 0)
		return false;
	i += rl;
	*status = st;
	return i == t->len || t->p[i] == '&';
}

static void on_mqtt_packet(struct mqttc *c, const struct mqtt_packet *pk, const uint8_t *raw,
                           size_t len)
{
	struct dslot *v = mqttc_app(c);
	if (v->state == D_DONE || v->state == D_FAILED)
		return;
	if (pk->type == MQTT_SUBACK && v->state == D_SUBSCRIBING) {
		if (raw[len - 1] & 0x80) {
			fail(v, &s.connect_errors, "device failed", "SUBSCRIBE refused");
			return;
		}
		struct buf b = BUF_INIT;
		buf_reset(&s.body);
		twinset_reported(&s.body, v->i);
		static const char topic[] = "$iothub/twin/PATCH/properties/reported/?$rid=1";
		mqtt_encode_publish(&b, topic, sizeof topic - 1, 0, 0, s.body.data, s.body.len);
		v->state = D_REPORTING;
		mqttc_send(c, b.data, b.len);
		buf_free(&b);
		return;
	}
	if (pk->type != MQTT_PUBLISH)
		return;
	const struct mqtt_publish *pub = &pk->u.publish;
	int status = 0;
	if (v->state != D_REPORTING || !parse_answer(&pub->topic, &status) || status != 204) {
		fail(v, &s.status_errors, "unexpected answer", "%.*s: %.*s",
		     (int)(pub->topic.len > 100 ? 100 : pub->topic.len), pub->topic.p,
		     (int)(pub->payload_len > 160 ? 160 : pub->payload_len),
		     (const char *)pub->payload);
		return;
	}
	/* REPORTING --204--> DONE */
	v->state = D_DONE;
	s.reported_ok++;
	hist_add(&s.latency, (uv_hrtime() - v->t0_ns) / 1000);
	mqttc_close(c, true);
}

static void on_mqtt_close(struct mqttc *c, enum tlsconn_error e, const char *detail)
{
	struct dslot *v = mqttc_app(c);
	v->c = NULL;
	s.open_slots--;
	if (v->state != D_DONE && v->state != D_FAILED) {
		char d[320];
		snprintf(d, sizeof d, "%s: %s", v->id, detail);
		if (v->state == D_CONNECTING || v->state == D_SUBSCRIBING)
			report(&s.connect_errors, "device failed", d);
		else
			report(&s.disconnects, "session lost", d);
		v->state = D_FAILED;
	}
	next_device(v);
	if (s.open_slots == 0 && s.next_dev >= s.p->devices) {
		s.t_end_ns = uv_hrtime();
		uv_close((uv_handle_t *)&s.sweep, NULL);
	}
}

static const struct mqttc_handler mqtt_handler = {on_mqtt_ready, on_mqtt_packet, NULL, NULL,
                                                  on_mqtt_close};

static void start_reported(void)
{
	s.reporting = true;
	unsigned n = s.p->concurrency < s.p->devices ? s.p->concurrency : s.p->devices;
	s.slots = xcalloc(n, sizeof *s.slots);
	for (unsigned k = 0; k < n; k++)
		next_device(&s.slots[k]);
}

/* ---- both ---------------------------------------------------------------------------- */

/* Requests and devices older than the timeout fail. */
static void on_sweep(uv_timer_t *t)
{
	uint64_t now = uv_hrtime(), limit = (uint64_t)(s.p->timeout_s * 1e9);
	if (!s.reporting) {
		for (unsigned n = 0; n < s.p->connections; n++) {
			struct tconn *k = &s.conns[n];
			if (!k->c || k->count == 0 || now - k->ring[k->head].t0_ns <= limit)
				continue;
			char d[160];
			snprintf(d, sizeof d, "%u PATCHes unanswered after %.1f s", k->count,
			         s.p->timeout_s);
			report(&s.timeouts, "timeout", d);
			s.timeouts += k->count - 1;
			unsigned lost = k->count;
			k->count = 0;
			httpc_close(k->c, false);
			settle(lost);
		}
		return;
	}
	unsigned n = s.p->concurrency < s.p->devices ? s.p->concurrency : s.p->devices;
	for (unsigned k = 0; k < n; k++) {
		struct dslot *v = &s.slots[k];
		if (v->c && v->state != D_DONE && v->state != D_FAILED && now - v->t0_ns > limit)
			fail(v, &s.timeouts, "timeout", "no 204 after %.1f s (state %d)",
			     s.p->timeout_s, v->state);
	}
}

int seed_run(const struct seed_plan *p)
{
	memset(&s, 0, sizeof s);
	s.p = p;
	s.loop = uv_default_loop();
	hist_init(&s.latency);
	buf_init(&s.out);
	buf_init(&s.body);
	s.auth = devices_owner_header(p->hub, p->owner_key);
	if (!s.auth)
		return 2;
	uv_timer_init(s.loop, &s.sweep);
	uv_timer_start(&s.sweep, on_sweep, SWEEP_MS, SWEEP_MS);
	s.t_start_ns = uv_hrtime();
	s.conns = xcalloc(p->connections, sizeof *s.conns);
	for (unsigned n = 0; n < p->connections; n++) {
		struct tconn *k = &s.conns[n];
		k->ring = xcalloc(p->window, sizeof *k->ring);
		s.open_conns++;
		k->c = httpc_open(s.loop, p->tls, (const struct sockaddr *)&p->rest_addr,
		                  p->tls_name, (uint64_t)(p->timeout_s * 1000), &rest_handler, k);
	}
	uv_run(s.loop, UV_RUN_DEFAULT);
	uv_loop_close(s.loop);

	double tags_s = (double)(s.t_tags_ns - s.t_start_ns) / 1e9;
	double reported_s = (double)(s.t_end_ns - s.t_tags_ns) / 1e9;
	uint64_t errors = s.connect_errors + s.status_errors + s.timeouts + s.disconnects + s.lost;
	printf("loadgen scenario=seed-twins target=%s rest=%s devices=%u ops=%" PRIu64
	       " tags=%" PRIu64 " reported=%" PRIu64 " tags_s=%.2f tags_per_s=%.1f"
	       " reported_s=%.2f reported_per_s=%.1f p50_us=%" PRIu64 " p99_us=%" PRIu64
	       " max_us=%" PRIu64 " errors=%" PRIu64 " connect_errors=%" PRIu64
	       " status_errors=%" PRIu64 " timeouts=%" PRIu64 " disconnects=%" PRIu64
	       " lost=%" PRIu64 " cpu_s=%.2f\n",
	       p->target, p->rest, p->devices, s.tags_ok + s.reported_ok, s.tags_ok, s.reported_ok,
	       tags_s, tags_s > 0 ? (double)s.tags_ok / tags_s : 0, reported_s,
	       reported_s > 0 ? (double)s.reported_ok / reported_s : 0,
	       hist_percentile(&s.latency, 0.5), hist_percentile(&s.latency, 0.99), s.latency.max,
	       errors, s.connect_errors, s.status_errors, s.timeouts, s.disconnects, s.lost,
	       self_cpu_s());
	fflush(stdout);
	for (unsigned n = 0; n < p->connections; n++)
		free(s.conns[n].ring);
	free(s.conns);
	free(s.slots);
	free(s.auth);
	buf_free(&s.out);
	buf_free(&s.body);
	if (errors > p->max_errors) {
		fprintf(stderr, "loadgen: %" PRIu64 " errors (more than --max-errors %lu)\n",
		        errors, p->max_errors);
		return 1;
	}
	return 0;
}
