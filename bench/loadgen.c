/* loadgen: the load generator of fleethub's benchmarks (bench/README.md).
 *
 * One process, one libuv loop, N MQTT/TLS device sessions (client.c), each
 * authenticated like a real device (user name "<hub>/<id>/?api-version=...",
 * password a SAS token signed with the device's key) or, with --no-auth,
 * like a plain MQTT client (the Mosquitto reference runs). Scenarios:
 *
 *   twin-reported  PUBLISH $iothub/twin/PATCH/properties/reported/?$rid=N
 *                  (a ~--size B JSON patch), timed to $iothub/twin/res/204/?$rid=N
 *   twin-get       PUBLISH $iothub/twin/GET/?$rid=N, timed to .../res/200/?$rid=N
 *   mqtt-publish   QoS 1 PUBLISH of --size B to --topic, timed to its PUBACK
 *   connections    ramp to N idle sessions at --rate per second and hold
 *                  them for --duration (the caller measures the server)
 *   method-roundtrip  direct methods POSTed at --patch-rate per second through
 *                  the REST API, answered by the devices at once; timed from
 *                  the request to its HTTP answer
 *   c2d-delivery   sessions subscribe to their cloud-to-device queues (filled
 *                  before, e.g. twin-rest-patch --rest-kind c2d --count N)
 *                  and acknowledge each message; messages per second until
 *                  --count arrived
 *   query-*        twin queries, one at a time on one HTTPS connection, each
 *                  over all its pages and checked (queries.c); with
 *                  --query-rate, a twin scenario also runs a query loop at
 *                  that fixed rate beside its devices
 *
 * seed-twins (seed.c), the provisioning scenarios (dps.c) and the webhook
 * (webhook.c) run their own loops.
 *
 * A run goes through these phases, each started by the previous one:
 *
 *   RAMP ------every session READY (twin: SUBACK too) or failed------> MEASURE
 *   MEASURE ---duration elapsed: no new requests--------------------> DRAIN
 *   DRAIN -----nothing in flight, or --timeout elapsed--------------> CLOSING
 *   CLOSING ---every session closed (DISCONNECT, or forced after 5 s)-> DONE
 *
 * Invariants: every session keeps at most --inflight requests outstanding
 * and produces nothing while its write queue is above the client's
 * high-water mark (on_drain resumes it), so neither side can be made to
 * buffer without bound; throughput counts only answers that arrive during
 * MEASURE, the histogram holds every answered request's latency
 * (microseconds, from just before the request was encrypted to the parsing
 * of its answer); every request is answered, timed out (an error) or lost
 * with its session (an error) before the result is printed; counts are
 * bounded by --devices, time by --duration, --timeout and the connect
 * deadline; only 127.0.0.0/8 targets are accepted.
 *
 * Output: one line on stdout, "loadgen scenario=... ops_per_s=... p50_us=...
 * errors=..." (key=value pairs), progress and the first errors of each kind
 * on stderr. Exit status: 0, 1 when errors exceed --max-errors, 2 for a
 * usage error, 3 when set-up failed. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "base/x509.h"
#include "base/buf.h"
#include "base/mem.h"
#include "client.h"
#include "codec/mqtt.h"
#include "devices.h"
#include "amqp.h"
#include "dps.h"
#include "hist.h"
#include "queries.h"
#include "report.h"
#include "rest.h"
#include "seed.h"
#include "webhook.h"

#define MAX_DEVICES 100000
#define MAX_INFLIGHT 1024
#define MAX_SIZE 65536
#define MAX_DURATION_S 3600
#define RAMP_TICK_MS 10
#define SWEEP_MS 100
#define FORCE_CLOSE_MS 5000
#define PAD_CHUNK 1000
#define BATCH_BYTES 16384 /* one TLS record */
#define DESIRED_WINDOW 64 /* twin-desired-latency: PATCHes in flight per connection */
#define QUERY_TICK_MS 1   /* --query-rate: the loop's timer */

enum scenario {
	SC_TWIN_REPORTED,
	SC_TWIN_GET,
	SC_PUBLISH,
	SC_CONNECTIONS,
	SC_TWIN_DESIRED,
	SC_REST_PATCH,
	SC_DPS_REGISTER,   /* dps.c */
	SC_TLS_HANDSHAKES, /* dps.c */
	SC_DPS_TPM,        /* dps.c */
	SC_WEBHOOK,        /* webhook.c */
	SC_SEED,           /* seed.c */
	SC_QUERY_TAG,      /* the query scenarios: queries.c, in this loop */
	SC_QUERY_RANGE,
	SC_QUERY_GROUP,
	SC_METHOD,
	SC_C2D,
	SC_AMQP_CONSUME,   /* amqp.c */
	SC_C2D_SEND,       /* amqp.c */
	SC_COUNT
};
static const char *const scenario_names[] = {"twin-reported",
                                             "twin-get",
                                             "mqtt-publish",
                                             "connections",
                                             "twin-desired-latency",
                                             "twin-rest-patch",
                                             "dps-register",
                                             "tls-handshakes",
                                             "dps-tpm",
                                             "webhook",
                                             "seed-twins",
                                             "query-tag-eq",
                                             "query-reported-range",
                                             "query-group-count",
                                             "method-roundtrip",
                                             "c2d-delivery",
                                             "amqp-consume",
                                             "c2d-send"};

enum phase { PH_RAMP, PH_MEASURE, PH_DRAIN, PH_CLOSING, PH_DONE };

struct options {
	enum scenario scenario;
	bool have_scenario;
	const char *target;   /* ip:port of MQTT over TLS */
	const char *hub;      /* hub host name */
	const char *tls_name; /* SNI and certificate name; default hub, else the IP */
	const char *ca_file;
	bool insecure;
	const char *key; /* group key; device keys are derived from it */
	bool no_auth;
	const char *prefix;
	const char *topic; /* mqtt-publish; "{id}" is replaced by the device id */
	unsigned devices;
	double duration_s;
	unsigned inflight;
	unsigned qos; /* twin requests; mqtt-publish is always QoS 1 */
	unsigned size;
	double rate; /* connections per second during the ramp */
	unsigned connect_concurrency;
	double timeout_s;
	unsigned keepalive;
	unsigned clean_session; /* the CONNECT's clean-session flag */
	unsigned long max_errors;
	bool create_devices;
	const char *rest; /* ip:port of the hub's HTTPS listener */
	const char *owner_key;
	unsigned connections; /* REST connections */
	double patch_rate;    /* twin-desired-latency, method-roundtrip: requests per second */
	unsigned rest_kind;   /* twin-rest-patch: enum rest_kind */
	unsigned count;       /* twin-rest-patch: requests at most; c2d-delivery: messages */
	const char *scope;    /* dps-register: id scope */
	unsigned concurrency; /* dps-register, tls-handshakes: devices in flight */
	const char *listen;   /* webhook: ip:port */
	const char *tls_cert, *tls_key;
	const char *x509_ca, *x509_ca_key; /* devices authenticate with certificates it signs */
	unsigned delay_ms; /* webhook: answer delay */
	unsigned seeded;   /* queries: devices seed-twins seeded (0: --devices) */
	double query_rate; /* twin scenarios: a query loop at this rate (0: none) */
};

struct slot {
	uint64_t rid; /* twin requests: the $rid; publish: unused (the packet id is slot + 1) */
	uint64_t t0_ns;
	bool used;
};

enum session_state { SS_CONNECTING, SS_SUBSCRIBING, SS_READY, SS_GONE };

struct session {
	struct mqttc *c; /* NULL once closed */
	unsigned index;
	enum session_state state;
	bool need_fill;
	uint64_t t_open_ns;
	uint64_t next_rid;
	unsigned inflight;
	struct slot *slots; /* opt.inflight entries */
	char *topic;        /* mqtt-publish */
};

static struct options opt = {
    .prefix = "bench-",
    .devices = 100,
    .duration_s = 5,
    .inflight = 4,
    .size = 100,
    .rate = 1000,
    .connect_concurrency = 200,
    .timeout_s = 10,
    .keepalive = 300,
    .clean_session = 1,
    .connections = 8,
    .patch_rate = 2000,
    .concurrency = 100,
};

/* The run: the only mutable global state of the program. */
static struct {
	uv_loop_t *loop;
	SSL_CTX *tls;
	struct sockaddr_in addr;
	char tls_name[256];
	struct session *sessions;
	X509 **certs;  /* --x509-ca: each session's certificate */
	EVP_PKEY *cert_key; /* their (one) key */
	enum phase phase;
	uv_timer_t ramp_timer, phase_timer, sweep_timer;
	unsigned opened, pending, ready, open_sessions;
	uint64_t t_ramp_ns, t_ramp_end_ns, t_measure_ns, t_measure_end_ns;
	uint64_t t_last_ns; /* c2d-delivery: the last message measured */
	uint64_t inflight; /* requests outstanding over all sessions */
	uint64_t ops, drain_ops, sent;
	uint64_t stalls; /* times a session stopped short of its window: write queue full */
	uint64_t connect_errors, status_errors, timeouts, disconnects, lost;
	struct hist latency, connect_time;
	char *payload; /* opt.size bytes of JSON (make_payload) */
	size_t seq_offset;
	struct buf out; /* scratch for one session's batch of requests */
	/* REST scenarios */
	unsigned rest_connected;
	bool rest_closed;
	uv_timer_t rate_timer; /* twin-desired-latency: the open-loop sender */
	uint64_t patch_seq;    /* PATCHes sent */
	uint64_t behind;       /* sender ticks with no connection free */
	uint64_t *desired_t0;  /* send time by seq, 0 once notified or given up */
	uint64_t desired_cap;  /* entries of desired_t0 */
	uint64_t desired_low;  /* every seq below this is notified or given up */
	uint64_t rest_errors;  /* REST answers other than 200 */
	/* twin queries (query scenarios, --query-rate) */
	bool queries_closed;
	uint64_t check_errors;  /* queries answered 200 with wrong rows */
	uint64_t rows, pages;   /* of the queries answered right */
	uv_timer_t query_timer; /* --query-rate: the loop's sender */
	uint64_t q_sent, q_ops, q_late_ops, q_errors;
	uint64_t q_done[QUERIES_KINDS]; /* right answers by kind */
	struct hist q_latency;
} run;

/* ---- helpers ---------------------------------------------------------------- */

static bool twin_scenario(void)
{
	return opt.scenario == SC_TWIN_REPORTED || opt.scenario == SC_TWIN_GET ||
	       opt.scenario == SC_TWIN_DESIRED;
}

static bool rest_scenario(void)
{
	return opt.scenario == SC_TWIN_DESIRED || opt.scenario == SC_REST_PATCH ||
	       opt.scenario == SC_METHOD;
}

static bool query_scenario(void)
{
	return opt.scenario == SC_QUERY_TAG || opt.scenario == SC_QUERY_RANGE ||
	       opt.scenario == SC_QUERY_GROUP;
}

/* Whether the run opens query connections (queries.c). */
static bool uses_queries(void)
{
	return query_scenario() || opt.query_rate > 0;
}

/* MQTT sessions a run opens (twin-rest-patch and the query scenarios only
 * talk to the back end; seed-twins opens its own). */
static unsigned sessions_wanted(void)
{
	return opt.scenario == SC_REST_PATCH || opt.scenario == SC_SEED || query_scenario()
	           ? 0
	           : opt.devices;
}

/* Requests (and, for twin-desired-latency, notifications) still owed. */
static uint64_t outstanding(void)
{
	return run.inflight + (rest_scenario() ? rest_outstanding() : 0) +
	       (uses_queries() ? queries_outstanding() : 0);
}

static double seconds(uint64_t ns)
{
	return (double)ns / 1e9;
}

/* ---- requests ------------------------------------------------------------------ */

/* {"seq":"0000000000","p0":"xx...","p1":"xx..."...} of exactly opt.size
 * bytes: padding in strings of at most PAD_CHUNK characters (the hub
 * refuses string values over 4 KiB), a few blanks before the brace when
 * the last bytes cannot hold another key. */
static void make_payload(void)
{
	struct buf b = BUF_INIT;
	buf_appends(&b, "{\"seq\":\"");
	run.seq_offset = b.len;
	buf_appends(&b, "0000000000\"");
	for (unsigned k = 0;; k++) {
		size_t room = opt.size - b.len - 1; /* the closing brace */
		char key[32];
		size_t kl = (size_t)snprintf(key, sizeof key, ",\"p%u\":\"", k);
		if (room < kl + 2)
			break;
		size_t x = room - kl - 1;
		if (x > PAD_CHUNK)
			x = PAD_CHUNK;
		buf_append(&b, key, kl);
		buf_reserve(&b, x);
		memset(b.data + b.len, 'x', x);
		b.len += x;
		buf_appendc(&b, '"');
	}
	while (b.len < opt.size - 1)
		buf_appendc(&b, ' ');
	buf_appendc(&b, '}');
	run.payload = buf_steal(&b);
}

/* The payload with seq written into it (10 digits; the JSON stays valid). */
static const char *payload_with_seq(uint64_t seq)
{
	char digits[16];
	snprintf(digits, sizeof digits, "%010" PRIu64, seq % UINT64_C(10000000000));
	memcpy(run.payload + run.seq_offset, digits, 10);
	return run.payload;
}

static int free_slot(const struct session *s)
{
	for (unsigned i = 0; i < opt.inflight; i++)
		if (!s->slots[i].used)
			return (int)i;
	return -1;
}

/* Appends one request of the scenario to run.out, using slot i. */
static void encode_request(struct session *s, unsigned i)
{
	struct slot *sl = &s->slots[i];
	char topic[96];
	int tl;
	sl->rid = ++s->next_rid;
	sl->used = true;
	sl->t0_ns = uv_hrtime();
	uint16_t pid = (uint16_t)(i + 1);
	switch (opt.scenario) {
	case SC_TWIN_REPORTED:
		tl = snprintf(topic, sizeof topic,
		              "$iothub/twin/PATCH/properties/reported/?$rid=%" PRIu64, sl->rid);
		mqtt_encode_publish(&run.out, topic, (size_t)tl, (uint8_t)opt.qos,
		                    opt.qos ? pid : 0, payload_with_seq(sl->rid), opt.size);
		break;
	case SC_TWIN_GET:
		tl = snprintf(topic, sizeof topic, "$iothub/twin/GET/?$rid=%" PRIu64, sl->rid);
		mqtt_encode_publish(&run.out, topic, (size_t)tl, (uint8_t)opt.qos,
		                    opt.qos ? pid : 0, NULL, 0);
		break;
	case SC_PUBLISH:
		mqtt_encode_publish(&run.out, s->topic, strlen(s->topic), 1, pid,
		                    payload_with_seq(sl->rid), opt.size);
		break;
	default: break; /* no session requests */
	}
}

/* Tops the session's window up: requests are encrypted and written in
 * batches of up to BATCH_BYTES, until the window is full or the write
 * queue is (on_drain calls this again). */
static void fill(struct session *s)
{
	s->need_fill = false;
	if (run.phase != PH_MEASURE || s->state != SS_READY || opt.scenario == SC_CONNECTIONS ||
	    opt.scenario == SC_TWIN_DESIRED || opt.scenario == SC_METHOD || opt.scenario == SC_C2D)
		return;
	while (s->inflight < opt.inflight && mqttc_writable(s->c)) {
		buf_reset(&run.out);
		while (s->inflight < opt.inflight && run.out.len < BATCH_BYTES) {
			int i = free_slot(s);
			if (i < 0)
				break;
			encode_request(s, (unsigned)i);
			s->inflight++;
			run.inflight++;
			run.sent++;
		}
		mqttc_send(s->c, run.out.data, run.out.len);
	}
	if (s->inflight < opt.inflight && mqttc_ready(s->c))
		run.stalls++;
}

static void begin_closing(void);

static void on_begin_closing(uv_timer_t *t)
{
	begin_closing();
}

/* Request i of s got its answer (ok: the expected one). */
static void complete(struct session *s, unsigned i, bool ok, const char *detail)
{
	struct slot *sl = &s->slots[i];
	uint64_t now = uv_hrtime();
	hist_add(&run.latency, (now - sl->t0_ns) / 1000);
	sl->used = false;
	s->inflight--;
	run.inflight--;
	if (!ok)
		report(&run.status_errors, "unexpected answer", detail);
	if (run.phase == PH_MEASURE)
		run.ops++;
	else
		run.drain_ops++;
	s->need_fill = true;
	if (run.phase == PH_DRAIN && outstanding() == 0)
		uv_timer_start(&run.phase_timer, on_begin_closing, 0, 0);
}

/* Parses "$iothub/twin/res/<status>/?$rid=<rid>[&...]". */
static bool parse_twin_answer(const struct mqtt_str *t, int *status, uint64_t *rid)
{
	static const char prefix[] = "$iothub/twin/res/";
	const size_t pl = sizeof prefix - 1;
	if (t->len <= pl || memcmp(t->p, prefix, pl) != 0)
		return false;
	size_t i = pl;
	int st = 0;
	while (i < t->len && t->p[i] >= '0' && t->p[i] <= '9' && st < 1000)
		st = st * 10 + (t->p[i++] - '0');
	static const char rid_key[] = "/?$rid=";
	const size_t rl = sizeof rid_key - 1;
	if (i == pl || t->len - i <= rl || memcmp(t->p + i, rid_key, rl) != 0)
		return false;
	i += rl;
	uint64_t r = 0;
	size_t start = i;
	while (i < t->len && t->p[i] >= '0' && t->p[i] <= '9' && i - start < 19)
		r = r * 10 + (uint64_t)(t->p[i++] - '0');
	if (i == start || (i < t->len && t->p[i] != '&'))
		return false;
	*status = st;
	*rid = r;
	return true;
}

static void on_twin_answer(struct session *s, const struct mqtt_publish *pub)
{
	int status;
	uint64_t rid;
	if (!parse_twin_answer(&pub->topic, &status, &rid)) {
		char d[160];
		snprintf(d, sizeof d, "%s%u: unexpected topic %.*s", opt.prefix, s->index,
		         (int)(pub->topic.len > 100 ? 100 : pub->topic.len), pub->topic.p);
		report(&run.status_errors, "unexpected message", d);
		return;
	}
	for (unsigned i = 0; i < opt.inflight; i++) {
		if (s->slots[i].used && s->slots[i].rid == rid) {
			int want = opt.scenario == SC_TWIN_REPORTED ? 204 : 200;
			char d[256];
			if (status != want)
				snprintf(d, sizeof d, "%s%u: status %d: %.*s", opt.prefix, s->index,
				         status,
				         (int)(pub->payload_len > 160 ? 160 : pub->payload_len),
				         (const char *)pub->payload);
			complete(s, i, status == want, d);
			return;
		}
	}
	/* An answer to a request already counted as timed out: ignored. */
}

/* ---- the back end and desired notifications -------------------------------- */

static void ramp_check(void);

/* CLOSING ends when every session and REST connection is closed. */
static void maybe_done(void)
{
	if (run.phase != PH_CLOSING || run.open_sessions > 0 ||
	    (rest_scenario() && !run.rest_closed) || (uses_queries() && !run.queries_closed))
		return;
	run.phase = PH_DONE;
	uv_close((uv_handle_t *)&run.ramp_timer, NULL);
	uv_close((uv_handle_t *)&run.phase_timer, NULL);
	uv_close((uv_handle_t *)&run.sweep_timer, NULL);
	uv_close((uv_handle_t *)&run.rate_timer, NULL);
	uv_close((uv_handle_t *)&run.query_timer, NULL);
}

static void on_rest_closed(void)
{
	run.rest_closed = true;
	maybe_done();
}

static void on_queries_closed(void)
{
	run.queries_closed = true;
	maybe_done();
}

static void rest_connected(const char *detail)
{
	if (detail)
		report(&run.connect_errors, "REST connection failed", detail);
	ramp_check();
}

static void on_measure_end(uv_timer_t *t);

static void rest_answered(uint64_t t0_ns, uint64_t seq, int status, const char *body, size_t len)
{
	int want = opt.rest_kind == REST_C2D ? 201 : 200;
	if (status != want) {
		char d[256];
		snprintf(d, sizeof d, "request %" PRIu64 ": status %d: %.*s", seq, status,
		         (int)(len > 160 ? 160 : len), body);
		report(&run.rest_errors, "unexpected REST answer", d);
	}
	if ((opt.scenario == SC_REST_PATCH || opt.scenario == SC_METHOD) && status == want) {
		hist_add(&run.latency, (uv_hrtime() - t0_ns) / 1000);
		if (run.phase == PH_MEASURE)
			run.ops++;
		else
			run.drain_ops++;
		/* --count requests sent and answered: the measurement ends. */
		if (opt.count && run.phase == PH_MEASURE && run.ops >= opt.count)
			on_measure_end(NULL);
	}
	if (run.phase == PH_DRAIN && outstanding() == 0)
		uv_timer_start(&run.phase_timer, on_begin_closing, 0, 0);
}

static void rest_lost(unsigned n, const char *detail)
{
	report(&run.disconnects, "REST connection lost", detail);
	run.lost += n;
	if (run.phase == PH_DRAIN && outstanding() == 0)
		uv_timer_start(&run.phase_timer, on_begin_closing, 0, 0);
}

static const struct rest_hooks rest_hooks = {rest_connected, rest_answered, rest_lost};

/* ---- twin queries ---------------------------------------------------------------- */

static void on_query_tick(uv_timer_t *t);

/* The kind a query scenario runs. */
static enum queries_kind scenario_kind(void)
{
	return opt.scenario == SC_QUERY_TAG     ? QUERIES_TAG_EQ
	       : opt.scenario == SC_QUERY_RANGE ? QUERIES_REPORTED_RANGE
	                                        : QUERIES_GROUP_COUNT;
}

/* A query ended. The scenarios count it in the run's ops and latency and
 * start the next one at once (closed loop); --query-rate counts it apart
 * and starts the next when due. Only right answers count as done. */
static void query_done(const struct queries_outcome *o)
{
	uint64_t now = uv_hrtime();
	if (o->error) {
		bool status = o->status != 200;
		char d[400];
		snprintf(d, sizeof d, "%s: %s", queries_kind_names[o->kind], o->error);
		report(status ? &run.rest_errors : &run.check_errors,
		       status ? "unexpected query answer" : "wrong query result", d);
		run.q_errors++;
	} else if (query_scenario()) {
		hist_add(&run.latency, (now - o->t0_ns) / 1000);
		if (run.phase == PH_MEASURE)
			run.ops++;
		else
			run.drain_ops++;
		run.rows += o->rows;
		run.pages += o->pages;
	} else {
		hist_add(&run.q_latency, (now - o->t0_ns) / 1000);
		if (run.phase == PH_MEASURE)
			run.q_ops++;
		else
			run.q_late_ops++;
		run.q_done[o->kind]++;
	}
	if (run.phase == PH_MEASURE) {
		if (query_scenario() && queries_send(scenario_kind()))
			run.sent++;
		else if (opt.query_rate > 0)
			on_query_tick(NULL);
	}
	if (run.phase == PH_DRAIN && outstanding() == 0)
		uv_timer_start(&run.phase_timer, on_begin_closing, 0, 0);
}

static void query_lost(unsigned n, const char *detail)
{
	run.q_errors += n;
	rest_lost(n, detail);
}

static const struct queries_hooks queries_hooks = {rest_connected, query_done, query_lost};

/* The loop's n-th query: of every QUERY_MIX, one reported range (all its
 * pages) and one GROUP BY, the others tag equalities: a back end's
 * lookups, with a scan and an aggregate now and then. (The kinds in turn
 * at 50/s would need about four cores of this machine: a range query of
 * 10,000 twins costs the server ~160 ms, a GROUP BY over 100,000 ~75 ms.) */
#define QUERY_MIX 50
static enum queries_kind loop_kind(uint64_t n)
{
	return n % QUERY_MIX == QUERY_MIX - 2	? QUERIES_REPORTED_RANGE
	       : n % QUERY_MIX == QUERY_MIX - 1 ? QUERIES_GROUP_COUNT
						: QUERIES_TAG_EQ;
}

/* --query-rate: the loop starts query n (loop_kind) once n < rate x
 * the time measured so far and its connection is free. A query that is
 * due while the previous one still runs starts when that one ends, so
 * the loop never runs ahead of the rate but may fall behind it. */
static void on_query_tick(uv_timer_t *t)
{
	double due = opt.query_rate * seconds(uv_hrtime() - run.t_measure_ns);
	while (run.q_sent < due) {
		if (!queries_send(loop_kind(run.q_sent)))
			return;
		run.q_sent++;
	}
}

/* twin-desired-latency: PATCHes at opt.patch_rate per second from the
 * start of MEASURE, each to device seq % devices; a tick that finds every
 * connection's window full counts as "behind" (the back end could not
 * keep the rate). */
static void on_rate_tick(uv_timer_t *t)
{
	double due = opt.patch_rate * seconds(uv_hrtime() - run.t_measure_ns);
	while (run.patch_seq < due && run.patch_seq < run.desired_cap) {
		uint64_t seq = run.patch_seq;
		run.desired_t0[seq] = uv_hrtime();
		if (!rest_send(seq)) {
			run.desired_t0[seq] = 0;
			run.behind++;
			return;
		}
		run.patch_seq++;
		run.inflight++; /* a notification is owed */
		run.sent++;
	}
}

/* method-roundtrip: calls at opt.patch_rate per second from the start of
 * MEASURE; the REST answer is what is timed (rest_answered). */
static void on_method_tick(uv_timer_t *t)
{
	double due = opt.patch_rate * seconds(uv_hrtime() - run.t_measure_ns);
	while (run.patch_seq < due) {
		if (!rest_send(run.patch_seq)) {
			run.behind++;
			return;
		}
		run.patch_seq++;
		run.sent++;
	}
}

/* method-roundtrip: the device answers a call at once, echoing its rid. */
static void on_method_call(struct session *s, const struct mqtt_publish *pub)
{
	static const char key[] = "?$rid=";
	const char *p = memmem(pub->topic.p, pub->topic.len, key, sizeof key - 1);
	if (!p)
		return;
	p += sizeof key - 1;
	size_t n = (size_t)(pub->topic.p + pub->topic.len - p);
	char topic[160];
	int tl = snprintf(topic, sizeof topic, "$iothub/methods/res/200/?$rid=%.*s", (int)n, p);
	struct buf b = BUF_INIT;
	mqtt_encode_publish(&b, topic, (size_t)tl, 0, 0, "{\"ok\":1}", 8);
	mqttc_send(s->c, b.data, b.len);
	buf_free(&b);
}

/* c2d-delivery: a message; acknowledged at once (PUBACK) and counted. */
static void on_c2d(struct session *s, const struct mqtt_publish *pub)
{
	if (pub->qos == 1) {
		struct buf b = BUF_INIT;
		mqtt_encode_ack(&b, MQTT_PUBACK, pub->packet_id);
		mqttc_send(s->c, b.data, b.len);
		buf_free(&b);
	}
	if (run.phase == PH_MEASURE) {
		run.ops++;
		run.t_last_ns = uv_hrtime();
		if (opt.count && run.ops >= opt.count)
			on_measure_end(NULL);
	} else {
		run.drain_ops++;
	}
}

/* A desired-properties notification: {"seq":N,...,"$version":V}. */
static void on_desired(struct session *s, const struct mqtt_publish *pub)
{
	static const char key[] = "\"seq\":";
	const char *p = memmem(pub->payload, pub->payload_len, key, sizeof key - 1);
	char d[160];
	uint64_t seq = 0;
	if (p) {
		const char *end = (const char *)pub->payload + pub->payload_len;
		p += sizeof key - 1;
		while (p < end && *p >= '0' && *p <= '9')
			seq = seq * 10 + (uint64_t)(*p++ - '0');
	}
	if (!p || seq >= run.patch_seq || seq % opt.devices != s->index) {
		snprintf(d, sizeof d, "%s%u: unexpected notification %.*s", opt.prefix, s->index,
		         (int)(pub->payload_len > 100 ? 100 : pub->payload_len),
		         (const char *)pub->payload);
		report(&run.status_errors, "unexpected message", d);
		return;
	}
	if (run.desired_t0[seq] == 0)
		return; /* already given up on */
	hist_add(&run.latency, (uv_hrtime() - run.desired_t0[seq]) / 1000);
	run.desired_t0[seq] = 0;
	run.inflight--;
	if (run.phase == PH_MEASURE)
		run.ops++;
	else
		run.drain_ops++;
	if (run.phase == PH_DRAIN && outstanding() == 0)
		uv_timer_start(&run.phase_timer, on_begin_closing, 0, 0);
}

/* Notifications owed for longer than limit ns (0: all of them) are given
 * up on as timeouts. */
static void desired_sweep(uint64_t now, uint64_t limit)
{
	while (run.desired_low < run.patch_seq && run.desired_t0[run.desired_low] == 0)
		run.desired_low++;
	for (uint64_t q = run.desired_low; q < run.patch_seq; q++) {
		if (run.desired_t0[q] == 0 || now - run.desired_t0[q] < limit)
			continue;
		char d[96];
		snprintf(d, sizeof d, "no notification of PATCH %" PRIu64 " for %s%u", q,
		         opt.prefix, (unsigned)(q % opt.devices));
		report(&run.timeouts, "timeout", d);
		run.desired_t0[q] = 0;
		run.inflight--;
	}
}

/* ---- sessions ---------------------------------------------------------------------- */

static void start_measure(void);

static void ramp_check(void)
{
	if (run.phase != PH_RAMP || run.opened < sessions_wanted() || run.pending > 0 ||
	    (rest_scenario() && rest_connecting() > 0) ||
	    (uses_queries() && queries_connecting() > 0))
		return;
	run.t_ramp_end_ns = uv_hrtime();
	uv_timer_stop(&run.ramp_timer);
	double took = seconds(run.t_ramp_end_ns - run.t_ramp_ns);
	fprintf(stderr, "loadgen: ramp done: %u of %u sessions ready in %.2f s\n", run.ready,
	        sessions_wanted(), took);
	if (rest_scenario())
		fprintf(stderr, "loadgen: %u of %u REST connections ready\n", rest_ready(),
		        opt.connections);
	if ((sessions_wanted() > 0 && run.ready == 0) || (rest_scenario() && rest_ready() == 0) ||
	    (uses_queries() && queries_ready() == 0)) {
		begin_closing();
		return;
	}
	start_measure();
}

static void session_ready(struct session *s)
{
	s->state = SS_READY;
	run.pending--;
	run.ready++;
	hist_add(&run.connect_time, (uv_hrtime() - s->t_open_ns) / 1000);
	ramp_check();
}

static void on_ready(struct mqttc *c)
{
	struct session *s = mqttc_app(c);
	if (!twin_scenario() && opt.scenario != SC_METHOD) {
		session_ready(s);
		return;
	}
	struct buf b = BUF_INIT;
	mqtt_encode_subscribe(&b, 1,
	                      opt.scenario == SC_TWIN_DESIRED
	                          ? "$iothub/twin/PATCH/properties/desired/#"
	                      : opt.scenario == SC_METHOD ? "$iothub/methods/POST/#"
	                                                  : "$iothub/twin/res/#",
	                      0);
	s->state = SS_SUBSCRIBING;
	mqttc_send(c, b.data, b.len);
	buf_free(&b);
}

static void on_packet(struct mqttc *c, const struct mqtt_packet *pk, const uint8_t *raw, size_t len)
{
	struct session *s = mqttc_app(c);
	switch (pk->type) {
	case MQTT_SUBACK:
		if (s->state != SS_SUBSCRIBING)
			break;
		if (raw[len - 1] & 0x80) {
			char d[96];
			snprintf(d, sizeof d, "%s%u: SUBSCRIBE refused", opt.prefix, s->index);
			report(&run.connect_errors, "session failed", d);
			s->state = SS_GONE; /* counted here, not again in on_close */
			run.pending--;
			mqttc_close(c, false);
			ramp_check();
			break;
		}
		session_ready(s);
		break;
	case MQTT_PUBACK:
		if (opt.scenario == SC_PUBLISH && pk->u.packet_id >= 1 &&
		    pk->u.packet_id <= opt.inflight && s->slots[pk->u.packet_id - 1].used)
			complete(s, pk->u.packet_id - 1, true, NULL);
		break; /* twin requests at QoS 1: the answer topic is what counts */
	case MQTT_PUBLISH:
		if (opt.scenario == SC_METHOD)
			on_method_call(s, &pk->u.publish);
		else if (opt.scenario == SC_C2D)
			on_c2d(s, &pk->u.publish);
		else if (opt.scenario == SC_TWIN_DESIRED)
			on_desired(s, &pk->u.publish);
		else if (twin_scenario())
			on_twin_answer(s, &pk->u.publish);
		break;
	default: break;
	}
}

static void on_batch_end(struct mqttc *c)
{
	struct session *s = mqttc_app(c);
	if (s->need_fill)
		fill(s);
}

static void on_drain(struct mqttc *c)
{
	fill(mqttc_app(c));
}

static void on_close(struct mqttc *c, enum tlsconn_error e, const char *detail)
{
	struct session *s = mqttc_app(c);
	char d[256];
	s->c = NULL;
	run.open_sessions--;
	if (s->state == SS_CONNECTING || s->state == SS_SUBSCRIBING) {
		snprintf(d, sizeof d, "%s%u: %s", opt.prefix, s->index, detail);
		report(&run.connect_errors, "session failed", d);
		run.pending--;
		s->state = SS_GONE;
		ramp_check();
	} else if (s->state == SS_READY) {
		if (run.phase < PH_CLOSING) {
			snprintf(d, sizeof d, "%s%u: %s (%s)", opt.prefix, s->index, detail,
			         tlsconn_strerror(e));
			report(&run.disconnects, "session lost", d);
			run.lost += s->inflight;
			run.inflight -= s->inflight;
			s->inflight = 0;
			if (run.phase == PH_DRAIN && outstanding() == 0)
				uv_timer_start(&run.phase_timer, on_begin_closing, 0, 0);
		}
		s->state = SS_GONE;
	}
	maybe_done();
}

static const struct mqttc_handler handler = {on_ready, on_packet, on_batch_end, on_drain, on_close};

/* --x509-ca: a certificate for each of the n devices (CN = its id), signed
 * by the CA before the run so that the ramp measures the server alone. */
static int make_certs(unsigned n)
{
	X509 *ca = x509_read_file(opt.x509_ca);
	EVP_PKEY *ca_key = x509_read_key_file(opt.x509_ca_key);
	run.cert_key = EVP_EC_gen("P-256");
	if (!ca || !ca_key || !run.cert_key) {
		fprintf(stderr, "loadgen: --x509-ca and --x509-ca-key must be a CA's PEM "
		                "certificate and key\n");
		X509_free(ca);
		EVP_PKEY_free(ca_key);
		return -1;
	}
	uint64_t t0 = uv_hrtime();
	run.certs = xcalloc(n, sizeof *run.certs);
	for (unsigned i = 0; i < n; i++) {
		char id[128];
		devices_id(id, sizeof id, opt.prefix, i);
		run.certs[i] = x509_issue(run.cert_key, id, ca, ca_key, 2, X509_ROLE_CLIENT, NULL);
		if (!run.certs[i]) {
			fprintf(stderr, "loadgen: cannot sign a device certificate\n");
			abort();
		}
	}
	fprintf(stderr, "loadgen: %u device certificates signed in %.2f s\n", n,
	        seconds(uv_hrtime() - t0));
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return 0;
}

static void open_session(unsigned i)
{
	struct session *s = &run.sessions[i];
	char id[128];
	struct buf user = BUF_INIT, tok = BUF_INIT;
	s->index = i;
	s->state = SS_CONNECTING;
	s->t_open_ns = uv_hrtime();
	devices_id(id, sizeof id, opt.prefix, i);
	struct mqttc_connect cc = {
	    .client_id = id,
	    .keepalive = (uint16_t)opt.keepalive,
	    .clean = opt.clean_session != 0,
	    .timeout_ms = (uint64_t)(opt.timeout_s * 1000),
	};
	if (!opt.no_auth) {
		int64_t expiry = (int64_t)time(NULL) + 3600 + (int64_t)opt.duration_s;
		if (devices_mqtt_login(opt.hub, opt.key, id, expiry, &user, &tok) != 0) {
			fprintf(stderr, "loadgen: --key is not valid base64\n");
			exit(2);
		}
		cc.username = user.data;
		cc.password = run.certs ? NULL : tok.data;
	}
	if (run.certs) {
		cc.cert = run.certs[i];
		cc.key = run.cert_key;
	}
	if (opt.scenario == SC_PUBLISH) {
		struct buf t = BUF_INIT;
		const char *p = opt.topic, *hit;
		while ((hit = strstr(p, "{id}"))) {
			buf_append(&t, p, (size_t)(hit - p));
			buf_appends(&t, id);
			p = hit + 4;
		}
		buf_appends(&t, p);
		s->topic = buf_steal(&t);
	}
	run.opened++;
	run.pending++;
	run.open_sessions++;
	s->c = mqttc_open(run.loop, run.tls, (const struct sockaddr *)&run.addr, run.tls_name, &cc,
	                  &handler, s);
	buf_free(&user);
	buf_free(&tok);
}

/* ---- phases ------------------------------------------------------------------------- */

/* RAMP: opens sessions at opt.rate per second, at most
 * connect_concurrency of them still connecting. */
static void on_ramp_tick(uv_timer_t *t)
{
	double elapsed = seconds(uv_hrtime() - run.t_ramp_ns);
	double allowed = opt.rate * elapsed + 1;
	while (run.opened < sessions_wanted() && run.opened < allowed &&
	       run.pending < opt.connect_concurrency)
		open_session(run.opened);
	if (run.opened == sessions_wanted()) {
		uv_timer_stop(&run.ramp_timer);
		ramp_check();
	}
}

/* MEASURE and DRAIN: requests unanswered for opt.timeout_s are errors. */
static void on_sweep(uv_timer_t *t)
{
	uint64_t now = uv_hrtime(), limit = (uint64_t)(opt.timeout_s * 1e9);
	for (unsigned k = 0; k < run.opened; k++) {
		struct session *s = &run.sessions[k];
		if (s->state != SS_READY || s->inflight == 0)
			continue;
		for (unsigned i = 0; i < opt.inflight; i++) {
			struct slot *sl = &s->slots[i];
			if (!sl->used || now - sl->t0_ns < limit)
				continue;
			char d[96];
			snprintf(d, sizeof d, "%s%u: request %" PRIu64 " unanswered after %.1f s",
			         opt.prefix, k, sl->rid, opt.timeout_s);
			report(&run.timeouts, "timeout", d);
			sl->used = false;
			s->inflight--;
			run.inflight--;
			s->need_fill = true;
		}
		if (s->need_fill)
			fill(s);
	}
	if (rest_scenario())
		rest_sweep(now);
	if (uses_queries())
		queries_sweep(now);
	if (opt.scenario == SC_TWIN_DESIRED)
		desired_sweep(now, limit);
	if (run.phase == PH_DRAIN && outstanding() == 0)
		begin_closing();
}

static void on_measure_end(uv_timer_t *t)
{
	if (run.phase != PH_MEASURE)
		return;
	run.t_measure_end_ns = opt.scenario == SC_C2D && run.t_last_ns ? run.t_last_ns : uv_hrtime();
	run.phase = PH_DRAIN;
	uv_timer_stop(&run.rate_timer);
	uv_timer_stop(&run.query_timer);
	if (rest_scenario())
		rest_filling(false);
	if (outstanding() == 0) {
		begin_closing();
		return;
	}
	/* The sweep times out whatever is left after opt.timeout_s. */
	uv_timer_start(&run.phase_timer, on_begin_closing,
	               (uint64_t)(opt.timeout_s * 1000) + SWEEP_MS * 2, 0);
}

static void start_measure(void)
{
	run.phase = PH_MEASURE;
	run.t_measure_ns = uv_hrtime();
	uv_timer_start(&run.phase_timer, on_measure_end, (uint64_t)(opt.duration_s * 1000), 0);
	if (opt.scenario == SC_CONNECTIONS)
		return;
	uv_timer_start(&run.sweep_timer, on_sweep, SWEEP_MS, SWEEP_MS);
	for (unsigned k = 0; k < run.opened; k++)
		fill(&run.sessions[k]);
	if (opt.scenario == SC_REST_PATCH)
		rest_filling(true);
	if (opt.scenario == SC_TWIN_DESIRED)
		uv_timer_start(&run.rate_timer, on_rate_tick, 0, 1);
	if (opt.scenario == SC_METHOD)
		uv_timer_start(&run.rate_timer, on_method_tick, 0, 1);
	if (opt.scenario == SC_C2D) {
		/* The queues start flowing now: every session subscribes. */
		struct buf b = BUF_INIT;
		for (unsigned k = 0; k < run.opened; k++) {
			struct session *se = &run.sessions[k];
			if (se->state != SS_READY || !se->c)
				continue;
			char filter[160];
			devices_id(filter, sizeof filter, opt.prefix, k);
			buf_reset(&b);
			char f[200];
			snprintf(f, sizeof f, "devices/%s/messages/devicebound/#", filter);
			mqtt_encode_subscribe(&b, 1, f, 1);
			mqttc_send(se->c, b.data, b.len);
		}
		buf_free(&b);
	}
	if (query_scenario() && queries_send(scenario_kind()))
		run.sent++;
	if (opt.query_rate > 0)
		uv_timer_start(&run.query_timer, on_query_tick, 0, QUERY_TICK_MS);
}

static void on_force_close(uv_timer_t *t)
{
	for (unsigned k = 0; k < run.opened; k++)
		if (run.sessions[k].c)
			mqttc_close(run.sessions[k].c, false);
	if (rest_scenario())
		rest_close(false, on_rest_closed);
	if (uses_queries())
		queries_close(false, on_queries_closed);
}

static void begin_closing(void)
{
	if (run.phase >= PH_CLOSING)
		return;
	if (run.phase == PH_RAMP || run.phase == PH_MEASURE)
		run.t_measure_end_ns = uv_hrtime();
	/* Whatever is still outstanding was never answered. */
	for (unsigned k = 0; k < run.opened; k++) {
		struct session *s = &run.sessions[k];
		if (s->inflight) {
			char d[96];
			snprintf(d, sizeof d, "%s%u: %u requests unanswered at the end", opt.prefix,
			         k, s->inflight);
			report(&run.timeouts, "timeout", d);
			run.timeouts += s->inflight - 1;
			run.inflight -= s->inflight;
			s->inflight = 0;
		}
	}
	if (opt.scenario == SC_TWIN_DESIRED)
		desired_sweep(uv_hrtime(), 0);
	run.phase = PH_CLOSING;
	uv_timer_stop(&run.ramp_timer);
	uv_timer_stop(&run.sweep_timer);
	uv_timer_stop(&run.rate_timer);
	uv_timer_stop(&run.query_timer);
	uv_timer_start(&run.phase_timer, on_force_close, FORCE_CLOSE_MS, 0);
	for (unsigned k = 0; k < run.opened; k++)
		if (run.sessions[k].c)
			mqttc_close(run.sessions[k].c, true);
	if (rest_scenario())
		rest_close(true, on_rest_closed);
	if (uses_queries())
		queries_close(true, on_queries_closed);
	maybe_done();
}

/* ---- result ------------------------------------------------------------------------ */

static uint64_t print_result(void)
{
	uint64_t errors = run.connect_errors + run.status_errors + run.timeouts + run.disconnects +
	                  run.lost + run.rest_errors + run.check_errors;
	double window = seconds(run.t_measure_end_ns - run.t_measure_ns);
	if (run.t_measure_ns == 0)
		window = 0;
	double ramp = run.t_ramp_end_ns ? seconds(run.t_ramp_end_ns - run.t_ramp_ns) : 0;
	double connect_rate = ramp > 0 ? run.ready / ramp : 0;
	const struct hist *h = opt.scenario == SC_CONNECTIONS ? &run.connect_time : &run.latency;
	uint64_t ops = opt.scenario == SC_CONNECTIONS ? run.ready : run.ops;
	double ops_per_s = opt.scenario == SC_CONNECTIONS
	                       ? connect_rate
	                       : (window > 0 ? (double)run.ops / window : 0);
	printf("loadgen scenario=%s target=%s devices=%u ready=%u inflight=%u qos=%u size=%u "
	       "duration_s=%.2f ops=%" PRIu64 " ops_per_s=%.1f p50_us=%" PRIu64 " p99_us=%" PRIu64
	       " max_us=%" PRIu64 " errors=%" PRIu64 " connect_errors=%" PRIu64
	       " status_errors=%" PRIu64 " timeouts=%" PRIu64 " disconnects=%" PRIu64
	       " lost=%" PRIu64 " sent=%" PRIu64 " late_ops=%" PRIu64 " stalls=%" PRIu64
	       " connect_per_s=%.1f connect_p99_us=%" PRIu64 " rest_errors=%" PRIu64
	       " behind=%" PRIu64,
	       scenario_names[opt.scenario],
	       opt.scenario == SC_REST_PATCH || query_scenario() ? opt.rest : opt.target,
	       opt.devices, run.ready,
	       opt.scenario == SC_CONNECTIONS ? 0
	       : query_scenario()             ? 1
	                                      : opt.inflight,
	       opt.scenario == SC_PUBLISH ? 1 : opt.qos, opt.size, window, ops, ops_per_s,
	       hist_percentile(h, 0.50), hist_percentile(h, 0.99), h->max, errors,
	       run.connect_errors, run.status_errors, run.timeouts, run.disconnects, run.lost,
	       run.sent, run.drain_ops, run.stalls, connect_rate,
	       hist_percentile(&run.connect_time, 0.99), run.rest_errors, run.behind);
	if (uses_queries())
		printf(" seeded=%u check_errors=%" PRIu64, opt.seeded, run.check_errors);
	if (query_scenario())
		printf(" rows=%" PRIu64 " pages=%" PRIu64, run.rows, run.pages);
	if (opt.query_rate > 0) {
		/* The loop: queries done right in the window (and after it),
		 * their latency over all pages, the due count at the fixed rate. */
		const struct hist *qh = &run.q_latency;
		printf(" query_rate=%.1f queries=%" PRIu64 " queries_per_s=%.1f queries_due=%.0f"
		       " late_queries=%" PRIu64 " query_errors=%" PRIu64 " query_p50_us=%" PRIu64
		       " query_p99_us=%" PRIu64 " query_max_us=%" PRIu64 " queries_tag_eq=%" PRIu64
		       " queries_reported_range=%" PRIu64 " queries_group_count=%" PRIu64,
		       opt.query_rate, run.q_ops, window > 0 ? (double)run.q_ops / window : 0,
		       opt.query_rate * window, run.q_late_ops, run.q_errors,
		       hist_percentile(qh, 0.50), hist_percentile(qh, 0.99), qh->max,
		       run.q_done[QUERIES_TAG_EQ], run.q_done[QUERIES_REPORTED_RANGE],
		       run.q_done[QUERIES_GROUP_COUNT]);
	}
	printf(" cpu_s=%.2f\n", self_cpu_s());
	fflush(stdout);
	return errors;
}

/* ---- options ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: loadgen [SCENARIO] [options]\n"
	    "Scenarios: twin-reported, twin-get, mqtt-publish, connections,\n"
	    "  twin-desired-latency, twin-rest-patch, dps-register, tls-handshakes, dps-tpm,\n"
	    "  webhook,\n"
	    "  seed-twins, query-tag-eq, query-reported-range, query-group-count,\n"
	    "  method-roundtrip, c2d-delivery.\n"
	    "Target (loopback 127.0.0.0/8 only):\n"
	    "  --target IP:PORT      MQTT over TLS address (required for a scenario)\n"
	    "  --hub NAME            hub host name: user name, SAS resource, default TLS name\n"
	    "  --tls-name NAME       SNI and certificate name (default --hub, else the IP)\n"
	    "  --ca FILE             CA that signed the server certificate\n"
	    "  --insecure            do not verify the server certificate\n"
	    "  --key B64             group key; device keys are HMAC(key, device id)\n"
	    "  --no-auth             plain MQTT: no user name, no password (reference broker)\n"
	    "Load (every count and time is bounded):\n"
	    "  --devices N           sessions, 1..%d (default 100)\n"
	    "  --prefix P            device ids P0..P(N-1) (default bench-)\n"
	    "  --duration S          measured seconds, or hold time for connections (default 5)\n"
	    "  --inflight K          requests in flight per session, 1..%d (default 4)\n"
	    "  --qos 0|1             QoS of twin requests (default 0; mqtt-publish uses 1)\n"
	    "  --size B              payload bytes, 32..%d (default 100)\n"
	    "  --topic T             mqtt-publish topic, {id} = device id (default\n"
	    "                        devices/{id}/messages/events/, with --no-auth bench/{id})\n"
	    "  --rate R              new sessions per second during the ramp (default 1000)\n"
	    "  --connect-concurrency C  sessions connecting at once (default 200)\n"
	    "  --timeout S           connect deadline and request timeout (default 10)\n"
	    "  --keepalive S         MQTT keep-alive (default 300)\n"
	    "  --clean-session 0|1   the CONNECT's clean-session flag (default 1)\n"
	    "  --max-errors N        exit 1 when more errors than this (default 0)\n"
	    "Back end (twin-desired-latency, twin-rest-patch; needs --rest, --owner-key):\n"
	    "  --connections K       HTTPS keep-alive connections (default 8); with\n"
	    "                        twin-rest-patch each keeps --inflight PATCHes pipelined\n"
	    "  --patch-rate R        twin-desired-latency: PATCHes per second (default 2000)\n"
	    "AMQP (needs --owner-key, --hub, --count; --target is the AMQP listener):\n"
	    "  amqp-consume          --connections receivers (one per partition) read the\n"
	    "                        Event Hub-compatible endpoint from the start until\n"
	    "                        --count events came (or none for 5 s)\n"
	    "  c2d-send              --count cloud-to-device sends over AMQP to devices\n"
	    "                        0..--devices-1, --inflight unsettled, --size bytes\n"
	    "Twin queries (needs --rest, --owner-key, --hub; bench/README.md):\n"
	    "  seed-twins            give devices 0..--devices-1 the query fleet's tags (REST,\n"
	    "                        --connections x --inflight pipelined) and reported\n"
	    "                        properties (MQTT, --concurrency devices at a time;\n"
	    "                        needs --target, --key)\n"
	    "  query-tag-eq, query-reported-range, query-group-count\n"
	    "                        one query at a time on one connection, all its pages,\n"
	    "                        each answer checked against the seeded fleet\n"
	    "  --seeded N            devices seed-twins seeded (default --devices)\n"
	    "  --rest-kind K         twin-rest-patch's requests: patch (default), method\n"
	    "                        (direct method calls) or c2d (cloud-to-device sends)\n"
	    "  --count N             twin-rest-patch: send N requests at most, end when all\n"
	    "                        are answered; c2d-delivery: end when N messages came\n"
	    "  --query-rate R        twin scenarios: also run queries at R per second on one\n"
	    "                        connection, of every 50 one range and one GROUP BY,\n"
	    "                        the others tag equalities (default 0)\n"
	    "Provisioning (dps-register, tls-handshakes: --target is the DPS's MQTT address):\n"
	    "  --scope S             id scope; --key is the enrollment group's key\n"
	    "  --concurrency C       devices in flight, each on a new connection (default 100)\n"
	    "  dps-tpm: --target is the DPS's HTTPS address; --owner-key the DPS's owner\n"
	    "  key to make --devices TPM enrollments first; the device side in software\n"
	    "Webhook (a custom allocation webhook; runs until SIGINT or SIGTERM):\n"
	    "  --listen IP:PORT      where to listen (loopback)\n"
	    "  --tls-cert FILE, --tls-key FILE   its certificate chain and key (PEM)\n"
	    "  --delay-ms D          answer each request after D ms (default 0); its answer\n"
	    "                        assigns the device to --hub\n"
	    "Set-up:\n"
	    "  --create-devices      create or update the devices first (REST, then exit if\n"
	    "                        no scenario is given); needs --rest, --owner-key, --key\n"
	    "  --rest IP:PORT        the hub's HTTPS address\n"
	    "  --owner-key B64       the hub's iothubowner key\n"
	    "  --x509-ca FILE, --x509-ca-key FILE   devices are certificateAuthority ones:\n"
	    "                        created so, and connecting (MQTT scenarios) with a\n"
	    "                        certificate this CA signs (CN = the device id, made\n"
	    "                        before the run) instead of a SAS token\n",
	    MAX_DEVICES, MAX_INFLIGHT, MAX_SIZE);
}

static bool parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (!*s || *end || !(v >= lo && v <= hi))
		return false;
	*out = v;
	return true;
}

/* "a.b.c.d:port" within 127.0.0.0/8. */
static bool parse_loopback(const char *s, struct sockaddr_in *out, char *ip, size_t iplen)
{
	const char *colon = strrchr(s, ':');
	unsigned long port;
	if (!colon || (size_t)(colon - s) >= iplen || !parse_uint(colon + 1, 1, 65535, &port))
		return false;
	memcpy(ip, s, (size_t)(colon - s));
	ip[colon - s] = '\0';
	if (uv_ip4_addr(ip, (int)port, out) != 0)
		return false;
	return (ntohl(out->sin_addr.s_addr) >> 24) == 127;
}

enum {
	O_TARGET = 256,
	O_HUB,
	O_TLS_NAME,
	O_CA,
	O_INSECURE,
	O_KEY,
	O_NO_AUTH,
	O_DEVICES,
	O_PREFIX,
	O_DURATION,
	O_INFLIGHT,
	O_QOS,
	O_SIZE,
	O_TOPIC,
	O_RATE,
	O_CONCURRENCY,
	O_TIMEOUT,
	O_KEEPALIVE,
	O_CLEAN_SESSION,
	O_MAX_ERRORS,
	O_CREATE,
	O_REST,
	O_OWNER_KEY,
	O_CONNECTIONS,
	O_PATCH_RATE,
	O_SCOPE,
	O_DPS_CONCURRENCY,
	O_LISTEN,
	O_TLS_CERT,
	O_TLS_KEY,
	O_DELAY,
	O_SEEDED,
	O_QUERY_RATE,
	O_REST_KIND,
	O_COUNT,
	O_X509_CA,
	O_X509_CA_KEY,
	O_HELP,
};

static const struct option long_options[] = {
    {"target", required_argument, NULL, O_TARGET},
    {"hub", required_argument, NULL, O_HUB},
    {"tls-name", required_argument, NULL, O_TLS_NAME},
    {"ca", required_argument, NULL, O_CA},
    {"insecure", no_argument, NULL, O_INSECURE},
    {"key", required_argument, NULL, O_KEY},
    {"no-auth", no_argument, NULL, O_NO_AUTH},
    {"devices", required_argument, NULL, O_DEVICES},
    {"prefix", required_argument, NULL, O_PREFIX},
    {"duration", required_argument, NULL, O_DURATION},
    {"inflight", required_argument, NULL, O_INFLIGHT},
    {"qos", required_argument, NULL, O_QOS},
    {"size", required_argument, NULL, O_SIZE},
    {"topic", required_argument, NULL, O_TOPIC},
    {"rate", required_argument, NULL, O_RATE},
    {"connect-concurrency", required_argument, NULL, O_CONCURRENCY},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"keepalive", required_argument, NULL, O_KEEPALIVE},
    {"clean-session", required_argument, NULL, O_CLEAN_SESSION},
    {"max-errors", required_argument, NULL, O_MAX_ERRORS},
    {"create-devices", no_argument, NULL, O_CREATE},
    {"rest", required_argument, NULL, O_REST},
    {"owner-key", required_argument, NULL, O_OWNER_KEY},
    {"connections", required_argument, NULL, O_CONNECTIONS},
    {"patch-rate", required_argument, NULL, O_PATCH_RATE},
    {"scope", required_argument, NULL, O_SCOPE},
    {"concurrency", required_argument, NULL, O_DPS_CONCURRENCY},
    {"listen", required_argument, NULL, O_LISTEN},
    {"tls-cert", required_argument, NULL, O_TLS_CERT},
    {"tls-key", required_argument, NULL, O_TLS_KEY},
    {"delay-ms", required_argument, NULL, O_DELAY},
    {"seeded", required_argument, NULL, O_SEEDED},
    {"query-rate", required_argument, NULL, O_QUERY_RATE},
    {"rest-kind", required_argument, NULL, O_REST_KIND},
    {"count", required_argument, NULL, O_COUNT},
    {"x509-ca", required_argument, NULL, O_X509_CA},
    {"x509-ca-key", required_argument, NULL, O_X509_CA_KEY},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

static int bad(const char *what, const char *value)
{
	fprintf(stderr, "loadgen: bad %s: %s (see --help)\n", what, value);
	return 2;
}

/* Numeric options: each is checked against its bounds. */
struct num_option {
	int id;
	const char *name;
	unsigned *u; /* one of u and d */
	double *d;
	double lo, hi;
};

static const struct num_option num_options[] = {
    {O_DEVICES, "--devices", &opt.devices, NULL, 1, MAX_DEVICES},
    {O_DURATION, "--duration", NULL, &opt.duration_s, 0.001, MAX_DURATION_S},
    {O_INFLIGHT, "--inflight", &opt.inflight, NULL, 1, MAX_INFLIGHT},
    {O_QOS, "--qos", &opt.qos, NULL, 0, 1},
    {O_SIZE, "--size", &opt.size, NULL, 32, MAX_SIZE},
    {O_RATE, "--rate", NULL, &opt.rate, 1, 1e6},
    {O_CONCURRENCY, "--connect-concurrency", &opt.connect_concurrency, NULL, 1, MAX_DEVICES},
    {O_TIMEOUT, "--timeout", NULL, &opt.timeout_s, 0.1, 600},
    {O_KEEPALIVE, "--keepalive", &opt.keepalive, NULL, 0, 65535},
    {O_CLEAN_SESSION, "--clean-session", &opt.clean_session, NULL, 0, 1},
    {O_CONNECTIONS, "--connections", &opt.connections, NULL, 1, 1000},
    {O_PATCH_RATE, "--patch-rate", NULL, &opt.patch_rate, 1, 1e6},
    {O_DPS_CONCURRENCY, "--concurrency", &opt.concurrency, NULL, 1, MAX_DEVICES},
    {O_DELAY, "--delay-ms", &opt.delay_ms, NULL, 0, 600000},
    {O_SEEDED, "--seeded", &opt.seeded, NULL, 1, MAX_DEVICES},
    {O_QUERY_RATE, "--query-rate", NULL, &opt.query_rate, 0, 10000},
    {O_COUNT, "--count", &opt.count, NULL, 1, 100000000},
};

/* Sets numeric option id from optarg. Returns false when id is not one;
 * *rc becomes 2 (after a message) when the value is out of bounds. */
static bool set_number(int id, int *rc)
{
	*rc = 2;
	for (size_t i = 0; i < sizeof num_options / sizeof num_options[0]; i++) {
		const struct num_option *o = &num_options[i];
		if (o->id != id)
			continue;
		unsigned long u;
		bool ok = o->u ? parse_uint(optarg, (unsigned long)o->lo, (unsigned long)o->hi, &u)
		               : parse_double(optarg, o->lo, o->hi, o->d);
		if (ok && o->u)
			*o->u = (unsigned)u;
		*rc = ok ? 0 : bad(o->name, optarg);
		return true;
	}
	return false;
}

/* Fills opt; returns 0 or an exit status. */
static int parse_options(int argc, char **argv)
{
	int c, rc;
	unsigned long u;
	while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		switch (c) {
		case O_TARGET: opt.target = optarg; break;
		case O_HUB: opt.hub = optarg; break;
		case O_TLS_NAME: opt.tls_name = optarg; break;
		case O_CA: opt.ca_file = optarg; break;
		case O_INSECURE: opt.insecure = true; break;
		case O_KEY: opt.key = optarg; break;
		case O_NO_AUTH: opt.no_auth = true; break;
		case O_PREFIX:
			if (!*optarg || strlen(optarg) > 64 || strpbrk(optarg, "/+#?&% "))
				return bad("--prefix", optarg);
			opt.prefix = optarg;
			break;
		case O_TOPIC:
			if (!*optarg || strlen(optarg) > 256 || strpbrk(optarg, "+#"))
				return bad("--topic", optarg);
			opt.topic = optarg;
			break;
		case O_MAX_ERRORS:
			if (!parse_uint(optarg, 0, ULONG_MAX, &u))
				return bad("--max-errors", optarg);
			opt.max_errors = u;
			break;
		case O_CREATE: opt.create_devices = true; break;
		case O_REST: opt.rest = optarg; break;
		case O_OWNER_KEY: opt.owner_key = optarg; break;
		case O_SCOPE: opt.scope = optarg; break;
		case O_LISTEN: opt.listen = optarg; break;
		case O_TLS_CERT: opt.tls_cert = optarg; break;
		case O_TLS_KEY: opt.tls_key = optarg; break;
		case O_X509_CA: opt.x509_ca = optarg; break;
		case O_X509_CA_KEY: opt.x509_ca_key = optarg; break;
		case O_REST_KIND:
			if (strcmp(optarg, "patch") == 0)
				opt.rest_kind = REST_PATCH;
			else if (strcmp(optarg, "method") == 0)
				opt.rest_kind = REST_METHOD;
			else if (strcmp(optarg, "c2d") == 0)
				opt.rest_kind = REST_C2D;
			else
				return bad("--rest-kind", optarg);
			break;
		case O_HELP: usage(stdout); exit(0);
		default:
			if (!set_number(c, &rc))
				usage(stderr);
			if (rc != 0)
				return rc;
			break;
		}
	}
	if (optind < argc) {
		for (unsigned i = 0; i < SC_COUNT; i++) {
			if (strcmp(argv[optind], scenario_names[i]) == 0) {
				opt.scenario = (enum scenario)i;
				opt.have_scenario = true;
			}
		}
		if (!opt.have_scenario || optind + 1 < argc)
			return bad("scenario", argv[optind]);
	}
	if (!opt.have_scenario && !opt.create_devices) {
		usage(stderr);
		return 2;
	}
	if (opt.scenario == SC_WEBHOOK)
		return opt.listen && opt.tls_cert && opt.tls_key && opt.hub
		           ? 0
		           : bad("webhook",
		                 "--listen, --tls-cert, --tls-key and --hub are required");
	if (opt.scenario == SC_DPS_REGISTER && (!opt.scope || !opt.key))
		return bad("dps-register", "--scope and --key are required");
	if (opt.scenario == SC_DPS_TPM && (!opt.scope || !opt.owner_key || !opt.ca_file))
		return bad("dps-tpm", "--scope, --owner-key (the DPS's) and --ca are required");
	if (opt.have_scenario && !opt.target && opt.scenario != SC_REST_PATCH && !query_scenario())
		return bad("target", "--target IP:PORT is required");
	if (opt.have_scenario && (rest_scenario() || uses_queries() || opt.scenario == SC_SEED) &&
	    (!opt.rest || !opt.owner_key || !opt.hub))
		return bad("back end", "--rest, --owner-key and --hub are required");
	if (opt.have_scenario && !opt.ca_file && !opt.insecure)
		return bad("TLS settings", "--ca FILE (or --insecure) is required");
	if (!opt.x509_ca != !opt.x509_ca_key)
		return bad("--x509-ca", "--x509-ca and --x509-ca-key go together");
	if ((opt.scenario == SC_AMQP_CONSUME || opt.scenario == SC_C2D_SEND) &&
	    (!opt.owner_key || !opt.hub || !opt.count))
		return bad(scenario_names[opt.scenario], "--owner-key, --hub and --count are required");
	if (opt.have_scenario && !opt.no_auth && (!opt.hub || !opt.key) &&
	    opt.scenario != SC_AMQP_CONSUME && opt.scenario != SC_C2D_SEND &&
	    opt.scenario != SC_TLS_HANDSHAKES && opt.scenario != SC_DPS_REGISTER &&
	    opt.scenario != SC_DPS_TPM &&
	    !query_scenario())
		return bad("authentication", "--hub and --key are required (or --no-auth)");
	if (opt.no_auth && (twin_scenario() || opt.scenario == SC_SEED))
		return bad("authentication", "twin scenarios need a hub (--hub, --key)");
	if (opt.query_rate > 0 && !twin_scenario())
		return bad("--query-rate",
		           "only with twin-reported, twin-get, twin-desired-latency");
	if (!opt.seeded)
		opt.seeded = opt.devices;
	if (opt.create_devices && (!opt.rest || !opt.owner_key || !opt.hub || !opt.key))
		return bad("--create-devices", "needs --rest, --owner-key, --hub and --key");
	if (opt.create_devices && !opt.ca_file && !opt.insecure)
		return bad("TLS settings", "--ca FILE (or --insecure) is required");
	if (!opt.topic)
		opt.topic = opt.no_auth ? "bench/{id}" : "devices/{id}/messages/events/";
	if (opt.qos && opt.inflight > 65535)
		return bad("--inflight", "at most 65535 with QoS 1");
	if (opt.scenario == SC_PUBLISH && opt.inflight > 65535)
		return bad("--inflight", "at most 65535 with QoS 1");
	return 0;
}

static int run_webhook(void)
{
	struct webhook_plan plan = {.hub = opt.hub, .delay_ms = opt.delay_ms};
	char ip[64], err[256];
	if (!parse_loopback(opt.listen, &plan.addr, ip, sizeof ip))
		return bad("--listen (an IPv4 address in 127.0.0.0/8 and a port)", opt.listen);
	plan.tls = tlsconn_server_ctx(opt.tls_cert, opt.tls_key, err, sizeof err);
	if (!plan.tls) {
		fprintf(stderr, "loadgen: %s\n", err);
		return 3;
	}
	int rc = webhook_run(&plan);
	SSL_CTX_free(plan.tls);
	return rc;
}

/* Raises the soft limit on open files as far as needed (and allowed). */
static int raise_fd_limit(unsigned need)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	if (rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max < need) {
		fprintf(stderr,
		        "loadgen: %u sessions need %u file descriptors; the hard limit is %llu\n",
		        opt.devices, need, (unsigned long long)rl.rlim_max);
		return -1;
	}
	rl.rlim_cur = need;
	return setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv)
{
	int rc = parse_options(argc, argv);
	if (rc != 0)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	/* OpenSSL allocates and frees a lot per handshake and per record
	 * (SSL_MODE_RELEASE_BUFFERS); without this glibc keeps giving the top
	 * of the heap back with brk and faulting it in again, which cost the
	 * generator a quarter of its CPU time in a connection ramp. */
	mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
	mallopt(M_TOP_PAD, 16 * 1024 * 1024);
	char ip[64] = "", rest_ip[64];
	struct sockaddr_in rest_addr;
	if (opt.have_scenario && opt.target &&
	    !parse_loopback(opt.target, &run.addr, ip, sizeof ip))
		return bad("--target (an IPv4 address in 127.0.0.0/8 and a port)", opt.target);
	if (opt.rest && !parse_loopback(opt.rest, &rest_addr, rest_ip, sizeof rest_ip))
		return bad("--rest (an IPv4 address in 127.0.0.0/8 and a port)", opt.rest);
	if (opt.create_devices) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		struct devices_plan plan = {
		    .hub = opt.hub,
		    .address = opt.rest,
		    .ca_file = opt.ca_file,
		    .insecure = opt.insecure,
		    .owner_key = opt.owner_key,
		    .group_key = opt.key,
		    .prefix = opt.prefix,
		    .count = opt.devices,
		    .x509_ca = opt.x509_ca != NULL,
		};
		uint64_t t0 = uv_hrtime();
		rc = devices_create(&plan);
		curl_global_cleanup();
		if (rc != 0)
			return 3;
		fprintf(stderr, "loadgen: %u devices created or updated in %.2f s\n", opt.devices,
		        seconds(uv_hrtime() - t0));
		if (!opt.have_scenario)
			return 0;
	}
	char err[256];
	if (opt.scenario == SC_WEBHOOK)
		return run_webhook();
	if (raise_fd_limit(sessions_wanted() + opt.connections + opt.concurrency + 64) != 0)
		return 3;
	snprintf(run.tls_name, sizeof run.tls_name, "%s",
	         opt.tls_name ? opt.tls_name
	         : opt.hub    ? opt.hub
	                      : ip);
	run.tls = tlsconn_client_ctx(opt.ca_file, opt.insecure, err, sizeof err);
	if (!run.tls) {
		fprintf(stderr, "loadgen: %s\n", err);
		return 3;
	}
	if (opt.scenario == SC_DPS_REGISTER || opt.scenario == SC_TLS_HANDSHAKES ||
	    opt.scenario == SC_DPS_TPM) {
		struct dps_plan plan = {
		    .handshakes_only = opt.scenario == SC_TLS_HANDSHAKES,
		    .tpm = opt.scenario == SC_DPS_TPM,
		    .owner_key = opt.owner_key,
		    .devices = opt.devices,
		    .ca_file = opt.ca_file,
		    .addr = run.addr,
		    .tls_name = run.tls_name,
		    .tls = run.tls,
		    .scope = opt.scope,
		    .group_key = opt.key,
		    .prefix = opt.prefix,
		    .concurrency = opt.concurrency,
		    .duration_s = opt.duration_s,
		    .timeout_s = opt.timeout_s,
		    .max_errors = opt.max_errors,
		};
		rc = dps_run(&plan);
		SSL_CTX_free(run.tls);
		return rc;
	}
	if (opt.scenario == SC_AMQP_CONSUME || opt.scenario == SC_C2D_SEND) {
		struct amqp_plan plan = {
		    .consume = opt.scenario == SC_AMQP_CONSUME,
		    .addr = run.addr,
		    .tls_name = run.tls_name,
		    .tls = run.tls,
		    .hub = opt.hub,
		    .owner_key = opt.owner_key,
		    .partitions = opt.connections,
		    .count = opt.count,
		    .devices = opt.devices,
		    .prefix = opt.prefix,
		    .window = opt.inflight,
		    .size = opt.size,
		    .duration_s = opt.duration_s,
		};
		rc = amqp_run(&plan);
		SSL_CTX_free(run.tls);
		return rc;
	}
	if (opt.scenario == SC_SEED) {
		struct seed_plan plan = {
		    .mqtt_addr = run.addr,
		    .rest_addr = rest_addr,
		    .target = opt.target,
		    .rest = opt.rest,
		    .tls_name = run.tls_name,
		    .tls = run.tls,
		    .hub = opt.hub,
		    .owner_key = opt.owner_key,
		    .group_key = opt.key,
		    .prefix = opt.prefix,
		    .devices = opt.devices,
		    .connections = opt.connections,
		    .window = opt.inflight,
		    .concurrency = opt.concurrency,
		    .keepalive = opt.keepalive,
		    .timeout_s = opt.timeout_s,
		    .max_errors = opt.max_errors,
		};
		rc = seed_run(&plan);
		SSL_CTX_free(run.tls);
		return rc;
	}
	make_payload();
	hist_init(&run.latency);
	hist_init(&run.connect_time);
	hist_init(&run.q_latency);
	buf_init(&run.out);
	unsigned nsessions = sessions_wanted();
	run.sessions = xcalloc(nsessions, sizeof *run.sessions);
	for (unsigned k = 0; k < nsessions; k++)
		run.sessions[k].slots = xcalloc(opt.inflight, sizeof(struct slot));
	if (opt.x509_ca && make_certs(nsessions) != 0)
		return 2;

	run.loop = uv_default_loop();
	uv_timer_init(run.loop, &run.ramp_timer);
	uv_timer_init(run.loop, &run.phase_timer);
	uv_timer_init(run.loop, &run.sweep_timer);
	uv_timer_init(run.loop, &run.rate_timer);
	uv_timer_init(run.loop, &run.query_timer);
	run.phase = PH_RAMP;
	run.t_ramp_ns = uv_hrtime();
	if (opt.scenario == SC_TWIN_DESIRED) {
		run.desired_cap =
		    (uint64_t)(opt.patch_rate * (opt.duration_s + 1)) + opt.connections * 64;
		run.desired_t0 = xcalloc(run.desired_cap, sizeof *run.desired_t0);
	}
	if (rest_scenario()) {
		struct rest_config rc_cfg = {
		    .loop = run.loop,
		    .tls = run.tls,
		    .addr = rest_addr,
		    .hub = opt.hub,
		    .owner_key = opt.owner_key,
		    .prefix = opt.prefix,
		    .devices = opt.devices,
		    .connections = opt.connections,
		    .window = opt.scenario == SC_REST_PATCH ? opt.inflight : DESIRED_WINDOW,
		    .size = opt.size,
		    .timeout_s = opt.timeout_s,
		    .closed_loop = opt.scenario == SC_REST_PATCH,
		    .kind = opt.scenario == SC_METHOD ? REST_METHOD : (enum rest_kind)opt.rest_kind,
		    .count = opt.scenario == SC_REST_PATCH ? opt.count : 0,
		};
		if (rest_start(&rc_cfg, &rest_hooks) != 0)
			return 2;
	}
	if (uses_queries()) {
		struct queries_config qc = {
		    .loop = run.loop,
		    .tls = run.tls,
		    .addr = rest_addr,
		    .hub = opt.hub,
		    .owner_key = opt.owner_key,
		    .prefix = opt.prefix,
		    .seeded = opt.seeded,
		    .connections = 1,
		    .timeout_s = opt.timeout_s,
		};
		if (queries_start(&qc, &queries_hooks) != 0)
			return 2;
	}
	uv_timer_start(&run.ramp_timer, on_ramp_tick, 0, RAMP_TICK_MS);
	uv_run(run.loop, UV_RUN_DEFAULT);

	uint64_t errors = print_result();
	uv_loop_close(run.loop);
	for (unsigned k = 0; k < nsessions; k++) {
		free(run.sessions[k].slots);
		free(run.sessions[k].topic);
	}
	free(run.sessions);
	for (unsigned k = 0; run.certs && k < nsessions; k++)
		X509_free(run.certs[k]);
	free(run.certs);
	EVP_PKEY_free(run.cert_key);
	free(run.payload);
	free(run.desired_t0);
	rest_free();
	queries_free();
	buf_free(&run.out);
	SSL_CTX_free(run.tls);
	if (errors > opt.max_errors) {
		fprintf(stderr, "loadgen: %" PRIu64 " errors (more than --max-errors %lu)\n",
		        errors, opt.max_errors);
		return 1;
	}
	return 0;
}
