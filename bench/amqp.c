/* The AMQP scenarios (see amqp.h). Each connection: the bare AMQP header,
 * open, one session, $cbs sender and receiver, a put-token for the
 * audience the scenario needs, then its one data link. */
#include "amqp.h"

#include <inttypes.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "base/buf.h"
#include "base/enc.h"
#include "base/mem.h"
#include "codec/sas.h"
#include "devices.h"
#include "hist.h"
#include "report.h"
#include "tlsconn.h"

#define IDLE_END_NS (5ULL * 1000000000ULL) /* amqp-consume: no event this long ends it */
#define CREDIT 1000
#define MAX_WINDOW 4096

struct conn;

static struct {
	const struct amqp_plan *p;
	uv_loop_t *loop;
	struct conn **conns;
	unsigned nconns, open;
	uint64_t t_first, t_last, t_end_limit;
	uint64_t got;          /* events received / sends accepted */
	uint64_t sent;         /* c2d-send: transfers made */
	uint64_t errors, rejected, conn_errors;
	struct hist latency;
	uint64_t sent_at[MAX_WINDOW];
	uv_timer_t timer;
	bool done;
	char entity[128];
	pn_message_t *msg;
	struct buf scratch;
} run;

struct conn {
	struct tlsconn *tc;
	pn_connection_driver_t d;
	bool driver;
	unsigned part;
	pn_link_t *cbs_out, *cbs_in, *data;
	uint64_t tag;
	unsigned inflight;
};

static void finish(void);

static void put_token(struct conn *c)
{
	char audience[512];
	if (run.p->consume)
		snprintf(audience, sizeof audience, "sb://%s/%s/ConsumerGroups/$Default/Partitions/%u",
		         run.p->hub, run.entity, c->part);
	else
		snprintf(audience, sizeof audience, "%s", run.p->hub);
	struct buf sr = BUF_INIT, tok = BUF_INIT;
	pct_encode(&sr, audience, strlen(audience));
	if (sas_build(&tok, sr.data, run.p->owner_key, "iothubowner", (int64_t)time(NULL) + 3600) !=
	    0) {
		report(&run.errors, "put-token", "the owner key is not base64");
		tlsconn_close(c->tc, false);
		goto out;
	}
	pn_message_t *m = run.msg;
	pn_message_clear(m);
	pn_atom_t id = {.type = PN_STRING};
	id.u.as_bytes = pn_bytes(5, "cbs-1");
	pn_message_set_id(m, id);
	pn_message_set_address(m, "$cbs");
	pn_message_set_reply_to(m, "cbs");
	pn_data_t *ap = pn_message_properties(m);
	pn_data_put_map(ap);
	pn_data_enter(ap);
	pn_data_put_string(ap, pn_bytes(9, "operation"));
	pn_data_put_string(ap, pn_bytes(9, "put-token"));
	pn_data_put_string(ap, pn_bytes(4, "type"));
	pn_data_put_string(ap, pn_bytes(31, "servicebus.windows.net:sastoken"));
	pn_data_put_string(ap, pn_bytes(4, "name"));
	pn_data_put_string(ap, pn_bytes(strlen(audience), audience));
	pn_data_exit(ap);
	pn_message_set_inferred(m, false);
	pn_data_put_string(pn_message_body(m), pn_bytes(tok.len, tok.data));
	buf_reset(&run.scratch);
	buf_reserve(&run.scratch, 8192);
	size_t n = run.scratch.cap - 1;
	if (pn_message_encode(m, run.scratch.data, &n) == 0) {
		uint64_t tag = c->tag++;
		pn_delivery(c->cbs_out, pn_dtag((const char *)&tag, sizeof tag));
		pn_link_send(c->cbs_out, run.scratch.data, n);
		pn_link_advance(c->cbs_out);
	}
out:
	buf_free(&sr);
	buf_free(&tok);
}

static void attach_data(struct conn *c)
{
	pn_session_t *s = pn_link_session(c->cbs_out);
	if (run.p->consume) {
		char addr[256], name[64];
		snprintf(addr, sizeof addr, "%s/ConsumerGroups/$Default/Partitions/%u", run.entity,
		         c->part);
		snprintf(name, sizeof name, "bench-receiver-%u", c->part);
		c->data = pn_receiver(s, name);
		pn_terminus_t *src = pn_link_source(c->data);
		pn_terminus_set_address(src, addr);
		pn_data_t *f = pn_terminus_filter(src);
		pn_data_put_map(f);
		pn_data_enter(f);
		pn_data_put_symbol(f, pn_bytes(33, "apache.org:selector-filter:string"));
		pn_data_put_described(f);
		pn_data_enter(f);
		pn_data_put_ulong(f, 0x468C00000004ULL);
		const char *sel = "amqp.annotation.x-opt-offset > '-1'";
		pn_data_put_string(f, pn_bytes(strlen(sel), sel));
		pn_data_exit(f);
		pn_data_exit(f);
		pn_link_open(c->data);
		pn_link_flow(c->data, CREDIT);
	} else {
		c->data = pn_sender(s, "bench-c2d");
		pn_terminus_set_address(pn_link_target(c->data), "/messages/devicebound");
		pn_link_open(c->data);
	}
}

static void send_more(struct conn *c)
{
	const struct amqp_plan *p = run.p;
	while (!run.done && run.sent < p->count && c->inflight < p->window &&
	       pn_link_credit(c->data) > 0 && tlsconn_writable(c->tc)) {
		uint64_t seq = run.sent++;
		char id[128], to[256], mid[32];
		devices_id(id, sizeof id, p->prefix, (unsigned)(seq % p->devices));
		snprintf(to, sizeof to, "/devices/%s/messages/devicebound", id);
		snprintf(mid, sizeof mid, "bench-%" PRIu64, seq);
		pn_message_t *m = run.msg;
		pn_message_clear(m);
		pn_atom_t a = {.type = PN_STRING};
		a.u.as_bytes = pn_bytes(strlen(mid), mid);
		pn_message_set_id(m, a);
		pn_message_set_address(m, to);
		pn_message_set_inferred(m, true);
		char body[4096];
		unsigned bl = p->size < sizeof body ? p->size : (unsigned)sizeof body;
		memset(body, 'x', bl);
		pn_data_put_binary(pn_message_body(m), pn_bytes(bl, body));
		buf_reset(&run.scratch);
		buf_reserve(&run.scratch, bl + 1024);
		size_t n = run.scratch.cap - 1;
		if (pn_message_encode(m, run.scratch.data, &n) != 0) {
			report(&run.errors, "encode", "a message did not encode");
			continue;
		}
		uint64_t tag = seq;
		pn_delivery(c->data, pn_dtag((const char *)&tag, sizeof tag));
		pn_link_send(c->data, run.scratch.data, n);
		pn_link_advance(c->data);
		run.sent_at[seq % MAX_WINDOW] = uv_hrtime();
		if (!run.t_first)
			run.t_first = uv_hrtime();
		c->inflight++;
	}
}

static int status_code(pn_message_t *m)
{
	pn_data_t *p = pn_message_properties(m);
	pn_data_rewind(p);
	if (!pn_data_next(p) || pn_data_type(p) != PN_MAP)
		return -1;
	pn_data_enter(p);
	int code = -1;
	while (pn_data_next(p)) {
		bool is = pn_data_type(p) == PN_STRING && pn_data_get_string(p).size == 11 &&
		          memcmp(pn_data_get_string(p).start, "status-code", 11) == 0;
		if (!pn_data_next(p))
			break;
		if (is && pn_data_type(p) == PN_INT)
			code = pn_data_get_int(p);
	}
	return code;
}

static void on_delivery(struct conn *c, pn_delivery_t *d)
{
	pn_link_t *l = pn_delivery_link(d);
	if (l == c->data && !run.p->consume) {
		if (!pn_delivery_updated(d))
			return;
		uint64_t state = pn_delivery_remote_state(d);
		pn_delivery_tag_t tag = pn_delivery_tag(d);
		uint64_t seq = 0;
		memcpy(&seq, tag.start, tag.size < sizeof seq ? tag.size : sizeof seq);
		if (state == PN_ACCEPTED) {
			run.got++;
			hist_add(&run.latency, (uv_hrtime() - run.sent_at[seq % MAX_WINDOW]) / 1000);
		} else {
			char detail[256];
			pn_condition_t *cond = pn_disposition_condition(pn_delivery_remote(d));
			snprintf(detail, sizeof detail, "%s: %s",
			         pn_condition_get_name(cond) ? pn_condition_get_name(cond) : "?",
			         pn_condition_get_description(cond) ? pn_condition_get_description(cond)
			                                            : "");
			report(&run.rejected, "send rejected", detail);
		}
		pn_delivery_settle(d);
		c->inflight--;
		run.t_last = uv_hrtime();
		if (run.got + run.rejected >= run.p->count)
			finish();
		else
			send_more(c);
		return;
	}
	if (!pn_delivery_readable(d) || pn_delivery_partial(d))
		return;
	size_t pending = pn_delivery_pending(d);
	buf_reset(&run.scratch);
	buf_reserve(&run.scratch, pending + 1);
	ssize_t n = pn_link_recv(l, run.scratch.data, pending);
	pn_link_advance(l);
	if (l == c->cbs_in) {
		pn_message_clear(run.msg);
		int code = n > 0 && pn_message_decode(run.msg, run.scratch.data, (size_t)n) == 0
		               ? status_code(run.msg)
		               : -1;
		pn_delivery_update(d, PN_ACCEPTED);
		pn_delivery_settle(d);
		if (code != 200) {
			char detail[64];
			snprintf(detail, sizeof detail, "status %d", code);
			report(&run.errors, "put-token refused", detail);
			tlsconn_close(c->tc, false);
			return;
		}
		attach_data(c);
		return;
	}
	/* an event */
	pn_delivery_update(d, PN_ACCEPTED);
	pn_delivery_settle(d);
	uint64_t now = uv_hrtime();
	if (!run.t_first)
		run.t_first = now;
	run.t_last = now;
	if (++run.got >= run.p->count)
		finish();
	else if (pn_link_credit(l) < CREDIT / 2)
		pn_link_flow(l, CREDIT - pn_link_credit(l));
}

static void handle(struct conn *c, pn_event_t *e)
{
	switch (pn_event_type(e)) {
	case PN_LINK_REMOTE_OPEN:
		if (pn_event_link(e) == c->cbs_in)
			put_token(c);
		break;
	case PN_LINK_FLOW:
		if (pn_event_link(e) == c->data && !run.p->consume)
			send_more(c);
		break;
	case PN_DELIVERY:
		on_delivery(c, pn_event_delivery(e));
		break;
	case PN_LINK_REMOTE_CLOSE:
	case PN_CONNECTION_REMOTE_CLOSE: {
		pn_condition_t *cond = pn_event_type(e) == PN_LINK_REMOTE_CLOSE
		                           ? pn_link_remote_condition(pn_event_link(e))
		                           : pn_connection_remote_condition(c->d.connection);
		if (!run.done && pn_condition_is_set(cond)) {
			char detail[256];
			snprintf(detail, sizeof detail, "%s: %s", pn_condition_get_name(cond),
			         pn_condition_get_description(cond) ? pn_condition_get_description(cond)
			                                            : "");
			report(&run.errors, "closed by the server", detail);
		}
		tlsconn_close(c->tc, false);
		break;
	}
	default:
		break;
	}
}

static void drive(struct conn *c)
{
	pn_event_t *e;
	while ((e = pn_connection_driver_next_event(&c->d)))
		handle(c, e);
	for (;;) {
		pn_bytes_t wb = pn_connection_driver_write_buffer(&c->d);
		if (!wb.size)
			break;
		tlsconn_send(c->tc, wb.start, wb.size);
		pn_connection_driver_write_done(&c->d, wb.size);
	}
}

static void on_open(struct tlsconn *tc)
{
	struct conn *c = tlsconn_app(tc);
	pn_connection_driver_init(&c->d, NULL, NULL);
	c->driver = true;
	pn_connection_t *pc = c->d.connection;
	pn_connection_set_container(pc, "fleethub-loadgen");
	pn_connection_set_hostname(pc, run.p->hub);
	pn_connection_open(pc);
	pn_session_t *s = pn_session(pc);
	pn_session_set_incoming_capacity(s, 64 * 1024 * 1024);
	pn_session_open(s);
	c->cbs_out = pn_sender(s, "bench-cbs-out");
	pn_terminus_set_address(pn_link_target(c->cbs_out), "$cbs");
	pn_link_open(c->cbs_out);
	c->cbs_in = pn_receiver(s, "bench-cbs-in");
	pn_terminus_set_address(pn_link_source(c->cbs_in), "$cbs");
	pn_link_open(c->cbs_in);
	pn_link_flow(c->cbs_in, 10);
	drive(c);
}

static void on_data(struct tlsconn *tc, const uint8_t *p, size_t n)
{
	struct conn *c = tlsconn_app(tc);
	while (n) {
		pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->d);
		if (!rb.size)
			break;
		size_t k = n < rb.size ? n : rb.size;
		memcpy(rb.start, p, k);
		pn_connection_driver_read_done(&c->d, k);
		p += k;
		n -= k;
		drive(c);
	}
}

static void on_batch_end(struct tlsconn *tc)
{
	drive(tlsconn_app(tc));
}

static void on_drain(struct tlsconn *tc)
{
	struct conn *c = tlsconn_app(tc);
	if (c->data && !run.p->consume) {
		send_more(c);
		drive(c);
	}
}

static void on_close(struct tlsconn *tc, enum tlsconn_error e, const char *detail)
{
	struct conn *c = tlsconn_app(tc);
	if (e != TLSCONN_OK && !run.done)
		report(&run.conn_errors, tlsconn_strerror(e), detail);
	if (c->driver)
		pn_connection_driver_destroy(&c->d);
	for (unsigned i = 0; i < run.nconns; i++)
		if (run.conns[i] == c)
			run.conns[i] = NULL;
	free(c);
	if (--run.open == 0) {
		run.done = true;
		uv_timer_stop(&run.timer);
		uv_close((uv_handle_t *)&run.timer, NULL);
	}
}

static const struct tlsconn_handler handler = {
    .on_open = on_open,
    .on_data = on_data,
    .on_batch_end = on_batch_end,
    .on_drain = on_drain,
    .on_close = on_close,
};

static void finish(void)
{
	if (run.done)
		return;
	run.done = true;
	for (unsigned i = 0; i < run.nconns; i++)
		if (run.conns[i])
			tlsconn_close(run.conns[i]->tc, false);
}

static void on_timer(uv_timer_t *t)
{
	uint64_t now = uv_hrtime();
	if (now >= run.t_end_limit || (run.p->consume && run.t_last && now - run.t_last > IDLE_END_NS))
		finish();
}

int amqp_run(const struct amqp_plan *p)
{
	memset(&run, 0, sizeof run);
	run.p = p;
	run.loop = uv_default_loop();
	run.msg = pn_message();
	buf_init(&run.scratch);
	hist_init(&run.latency);
	snprintf(run.entity, sizeof run.entity, "%.*s", (int)strcspn(p->hub, "."), p->hub);
	if (!p->consume && (p->window == 0 || p->window > MAX_WINDOW)) {
		fprintf(stderr, "loadgen: --inflight must be 1..%d for c2d-send\n", MAX_WINDOW);
		return 2;
	}
	run.nconns = p->consume ? p->partitions : 1;
	run.conns = xcalloc(run.nconns, sizeof *run.conns);
	uint64_t t0 = uv_hrtime();
	run.t_end_limit = t0 + (uint64_t)(p->duration_s * 1e9);
	uv_timer_init(run.loop, &run.timer);
	uv_timer_start(&run.timer, on_timer, 200, 200);
	for (unsigned i = 0; i < run.nconns; i++) {
		struct conn *c = xcalloc(1, sizeof *c);
		c->part = i;
		run.conns[i] = c;
		run.open++;
		c->tc = tlsconn_connect(run.loop, p->tls, (const struct sockaddr *)&p->addr,
		                        p->tls_name, 10000, &handler, c);
	}
	double cpu0 = self_cpu_s();
	uv_run(run.loop, UV_RUN_DEFAULT);
	double window = run.t_first && run.t_last > run.t_first
	                    ? (double)(run.t_last - run.t_first) / 1e9
	                    : 0;
	printf("loadgen scenario=%s target=%s connections=%u duration_s=%.2f ops=%" PRIu64
	       " ops_per_s=%.1f p50_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64
	       " errors=%" PRIu64 " rejected=%" PRIu64 " connect_errors=%" PRIu64 " cpu_s=%.2f\n",
	       p->consume ? "amqp-consume" : "c2d-send", p->tls_name, run.nconns, window, run.got,
	       window > 0 ? (double)run.got / window : 0, hist_percentile(&run.latency, 0.5),
	       hist_percentile(&run.latency, 0.99), run.latency.max, run.errors, run.rejected,
	       run.conn_errors, self_cpu_s() - cpu0);
	pn_message_free(run.msg);
	buf_free(&run.scratch);
	free(run.conns);
	bool ok = run.errors == 0 && run.conn_errors == 0 && run.rejected == 0 &&
	          run.got >= (p->consume ? 1 : p->count);
	return ok ? 0 : 1;
}
