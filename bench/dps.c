/* The load generator's provisioning scenarios (see dps.h).
 *
 * Each of the `concurrency` slots runs one device at a time:
 *
 *   CONNECTING --CONNACK--> SUBSCRIBING --SUBACK: PUT register--> REGISTERING
 *   REGISTERING / POLLING --res/202 (operationId, retry-after)--> WAITING
 *   WAITING --retry-after elapsed: GET operation status--> POLLING
 *   POLLING --res/200 "assigned"--> DONE (DISCONNECT)
 *   any other answer, a close or the timeout --> FAILED (an error)
 *   DONE / FAILED --connection closed--> the slot's next device (while measuring)
 *
 * (tls-handshakes: CONNECTING --handshake done--> DONE, close_notify.
 *  dps-tpm, over HTTPS: CONNECTING --ready: PUT register--> CHALLENGED
 *  --401 authenticationKey, opened: PUT register with its SAS--> REGISTERING,
 *  then as above with GET polls; "assigned" opens the hub key.)
 *
 * Waiting devices sit in a FIFO ordered by due time (every wait is the
 * server's retry-after from the moment its answer arrived, so appending
 * keeps it sorted when retry-after is the same for all, and a late entry
 * only delays the ones behind it); one timer drains it. Invariant: a slot
 * is in the FIFO at most once, only while WAITING (or, dps-tpm, THROTTLED:
 * a challenge answered 429, asked again after its retry-after). */
#include "dps.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>

#include "base/buf.h"
#include "base/enc.h"
#include "base/mem.h"
#include "client.h"
#include "codec/sas.h"
#include "core/tpm.h"
#include "httpc.h"
#include "hist.h"
#include "report.h"
#include "tlsconn.h"

#define API_VERSION "2019-03-31"
#define TICK_MS 2
#define SWEEP_MS 100

enum dstate {
	D_CONNECTING,
	D_SUBSCRIBING,
	D_CHALLENGED,
	D_REGISTERING,
	D_WAITING,
	D_THROTTLED, /* dps-tpm: a 429 to a challenge request, asked again after retry-after */
	D_POLLING,
	D_DONE,
	D_FAILED
};

#define TPM_POOL 8 /* EK/SRK pairs the enrollments share (RSA keys are slow to make) */

/* A software TPM: its keys and their public areas. */
struct soft_tpm {
	EVP_PKEY *ek, *srk;
	struct tpm_rsa_public ek_pub, srk_pub;
	char ek_b64[600], srk_b64[600];
};

struct dev {
	struct mqttc *c;   /* dps-register; NULL once closed */
	struct tlsconn *t; /* tls-handshakes; NULL once closed */
	struct httpc *h;   /* dps-tpm; NULL once closed */
	char sas[512];     /* dps-tpm: signed with the challenge's key */
	unsigned slot;
	uint64_t n;
	enum dstate state;
	uint64_t t0_ns, due_ns;
	unsigned polls;
	char regid[96];
	char op[128];
};

static struct {
	const struct dps_plan *p;
	uv_loop_t *loop;
	uv_timer_t tick, sweep, stop;
	struct dev *devs;
	unsigned *fifo; /* slots WAITING, by due time */
	unsigned fifo_head, fifo_len;
	bool measuring, draining;
	unsigned open;
	uint64_t next_n;
	char tag[16];
	uint64_t t_start_ns, t_end_ns;
	uint64_t ops, late_ops, polls, throttled;
	uint64_t connect_errors, status_errors, timeouts, disconnects;
	struct hist latency;
	struct soft_tpm tpms[TPM_POOL];
} d;

static void fail(struct dev *v, uint64_t *counter, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* FAILED: counted once, the connection closed at once. */
static void fail(struct dev *v, uint64_t *counter, const char *what, const char *fmt, ...)
{
	char detail[256];
	int k = snprintf(detail, sizeof detail, "%s: ", v->regid);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail + k, sizeof detail - (size_t)k, fmt, ap);
	va_end(ap);
	report(counter, what, detail);
	v->state = D_FAILED;
	if (v->c)
		mqttc_close(v->c, false);
	if (v->t)
		tlsconn_close(v->t, false);
	if (v->h)
		httpc_close(v->h, false);
}

static void succeed(struct dev *v)
{
	v->state = D_DONE;
	hist_add(&d.latency, (uv_hrtime() - v->t0_ns) / 1000);
	if (d.measuring)
		d.ops++;
	else
		d.late_ops++;
}

/* ---- dps-register ------------------------------------------------------------ */

static void publish(struct dev *v, const char *topic, const char *payload)
{
	struct buf b = BUF_INIT;
	mqtt_encode_publish(&b, topic, strlen(topic), 0, 0, payload, payload ? strlen(payload) : 0);
	mqttc_send(v->c, b.data, b.len);
	buf_free(&b);
}

static void send_poll(struct dev *v)
{
	char topic[256];
	snprintf(topic, sizeof topic,
	         "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=%u&operationId=%s",
	         v->polls + 2, v->op);
	v->polls++;
	d.polls++;
	v->state = D_POLLING;
	publish(v, topic, NULL);
}

static void send_tpm_poll(struct dev *v);
static void send_register(struct dev *v, bool auth);

static void on_tick(uv_timer_t *t)
{
	uint64_t now = uv_hrtime();
	while (d.fifo_len > 0) {
		struct dev *v = &d.devs[d.fifo[d.fifo_head]];
		if (v->due_ns > now)
			break;
		d.fifo_head = (d.fifo_head + 1) % d.p->concurrency;
		d.fifo_len--;
		if (v->state == D_WAITING && v->c)
			send_poll(v);
		else if (v->state == D_WAITING && v->h)
			send_tpm_poll(v);
		else if (v->state == D_THROTTLED && v->h) {
			v->state = D_CHALLENGED;
			send_register(v, false);
		}
	}
}

/* Copies the JSON string value of key ("operationId") from p[0..n). */
static bool json_string_field(const void *p, size_t n, const char *key, char *out, size_t outlen)
{
	char pat[64];
	int pl = snprintf(pat, sizeof pat, "\"%s\":\"", key);
	const char *s = memmem(p, n, pat, (size_t)pl);
	if (!s)
		return false;
	s += pl;
	const char *end = (const char *)p + n, *q = memchr(s, '"', (size_t)(end - s));
	if (!q || (size_t)(q - s) >= outlen)
		return false;
	memcpy(out, s, (size_t)(q - s));
	out[q - s] = '\0';
	return true;
}

/* "$dps/registrations/res/<status>/?$rid=<rid>[&retry-after=<s>]" */
static bool parse_answer(const struct mqtt_str *t, int *status, unsigned *retry_after)
{
	static const char prefix[] = "$dps/registrations/res/";
	const size_t pl = sizeof prefix - 1;
	if (t->len <= pl || memcmp(t->p, prefix, pl) != 0)
		return false;
	char tail[160];
	size_t tl = t->len - pl < sizeof tail - 1 ? t->len - pl : sizeof tail - 1;
	memcpy(tail, t->p + pl, tl);
	tail[tl] = '\0';
	char *end;
	long st = strtol(tail, &end, 10);
	if (end == tail || *end != '/')
		return false;
	*status = (int)st;
	*retry_after = 1;
	const char *ra = strstr(end, "retry-after=");
	if (ra)
		*retry_after = (unsigned)strtoul(ra + 12, NULL, 10);
	return true;
}

static void on_answer(struct dev *v, const struct mqtt_publish *pub)
{
	int status;
	unsigned retry_after;
	if (!parse_answer(&pub->topic, &status, &retry_after)) {
		fail(v, &d.status_errors, "unexpected message", "topic %.*s",
		     (int)(pub->topic.len > 100 ? 100 : pub->topic.len), pub->topic.p);
		return;
	}
	const char *body = (const char *)pub->payload;
	int bl = (int)(pub->payload_len > 200 ? 200 : pub->payload_len);
	char st[32] = "";
	json_string_field(pub->payload, pub->payload_len, "status", st, sizeof st);
	if (v->state != D_REGISTERING && v->state != D_POLLING) {
		fail(v, &d.status_errors, "unexpected answer", "status %d while not asking",
		     status);
		return;
	}
	if (status == 202) {
		if (!json_string_field(pub->payload, pub->payload_len, "operationId", v->op,
		                       sizeof v->op)) {
			fail(v, &d.status_errors, "unexpected answer",
			     "202 without operationId: %.*s", bl, body);
			return;
		}
		/* REGISTERING / POLLING --202--> WAITING */
		v->state = D_WAITING;
		v->due_ns = uv_hrtime() + (uint64_t)retry_after * 1000000000u;
		d.fifo[(d.fifo_head + d.fifo_len) % d.p->concurrency] = v->slot;
		d.fifo_len++;
		return;
	}
	if (status == 200 && strcmp(st, "assigned") == 0) {
		succeed(v);
		mqttc_close(v->c, true);
		return;
	}
	fail(v, &d.status_errors, "unexpected answer", "status %d: %.*s", status, bl, body);
}

static void on_ready(struct mqttc *c)
{
	struct dev *v = mqttc_app(c);
	struct buf b = BUF_INIT;
	mqtt_encode_subscribe(&b, 1, "$dps/registrations/res/#", 1);
	v->state = D_SUBSCRIBING;
	mqttc_send(c, b.data, b.len);
	buf_free(&b);
}

static void on_packet(struct mqttc *c, const struct mqtt_packet *pk, const uint8_t *raw, size_t len)
{
	struct dev *v = mqttc_app(c);
	if (v->state == D_FAILED || v->state == D_DONE)
		return;
	if (pk->type == MQTT_SUBACK && v->state == D_SUBSCRIBING) {
		if (raw[len - 1] & 0x80) {
			fail(v, &d.connect_errors, "registration failed", "SUBSCRIBE refused");
			return;
		}
		char payload[160];
		snprintf(payload, sizeof payload,
		         "{\"registrationId\":\"%s\",\"payload\":{\"bench\":%" PRIu64 "}}",
		         v->regid, v->n);
		v->state = D_REGISTERING;
		publish(v, "$dps/registrations/PUT/iotdps-register/?$rid=1", payload);
	} else if (pk->type == MQTT_PUBLISH) {
		on_answer(v, &pk->u.publish);
	}
}

static void next_device(struct dev *v);

static void device_closed(struct dev *v, enum tlsconn_error e, const char *detail)
{
	if (v->state != D_DONE && v->state != D_FAILED) {
		uint64_t *counter = v->state == D_CONNECTING ? &d.connect_errors : &d.disconnects;
		report(counter, v->state == D_CONNECTING ? "connection failed" : "connection lost",
		       detail);
	}
	d.open--;
	if (d.measuring) {
		next_device(v);
		return;
	}
	if (d.draining && d.open == 0) {
		uv_close((uv_handle_t *)&d.tick, NULL);
		uv_close((uv_handle_t *)&d.sweep, NULL);
		uv_close((uv_handle_t *)&d.stop, NULL);
	}
}

static void on_mqtt_close(struct mqttc *c, enum tlsconn_error e, const char *detail)
{
	struct dev *v = mqttc_app(c);
	v->c = NULL;
	device_closed(v, e, detail);
}

static const struct mqttc_handler mqtt_handler = {on_ready, on_packet, NULL, NULL, on_mqtt_close};

/* ---- tls-handshakes ------------------------------------------------------------ */

static void on_tls_open(struct tlsconn *t)
{
	struct dev *v = tlsconn_app(t);
	succeed(v);
	tlsconn_close(t, true);
}

static void on_tls_data(struct tlsconn *t, const uint8_t *p, size_t n)
{
}

static void on_tls_close(struct tlsconn *t, enum tlsconn_error e, const char *detail)
{
	struct dev *v = tlsconn_app(t);
	v->t = NULL;
	device_closed(v, e, detail);
}

static const struct tlsconn_handler tls_handler = {on_tls_open, on_tls_data, NULL,
                                                   NULL,        NULL,        on_tls_close};

/* ---- dps-tpm --------------------------------------------------------------------- */

static struct soft_tpm *tpm_of(const struct dev *v)
{
	return &d.tpms[v->n % TPM_POOL];
}

static void http_send(struct dev *v, const char *method, const char *path, const char *body,
                      bool auth)
{
	struct buf b = BUF_INIT;
	buf_printf(&b,
	           "%s /%s/registrations/%s%s?api-version=" API_VERSION " HTTP/1.1\r\n"
	           "Host: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
	           method, d.p->scope, v->regid, path, d.p->tls_name, body ? strlen(body) : 0);
	if (auth)
		buf_printf(&b, "Authorization: %s\r\n", v->sas);
	buf_appends(&b, "\r\n");
	if (body)
		buf_appends(&b, body);
	httpc_send(v->h, b.data, b.len);
	buf_free(&b);
}

static void send_register(struct dev *v, bool auth)
{
	struct soft_tpm *s = tpm_of(v);
	struct buf body = BUF_INIT;
	buf_printf(&body,
	           "{\"registrationId\":\"%s\",\"tpm\":{\"endorsementKey\":\"%s\","
	           "\"storageRootKey\":\"%s\"},\"payload\":{\"bench\":%" PRIu64 "}}",
	           v->regid, s->ek_b64, s->srk_b64, v->n);
	http_send(v, "PUT", "/register", body.data, auth);
	buf_free(&body);
}

static void send_tpm_poll(struct dev *v)
{
	char path[200];
	snprintf(path, sizeof path, "/operations/%s", v->op);
	v->polls++;
	d.polls++;
	v->state = D_POLLING;
	http_send(v, "GET", path, NULL, true);
}

/* Opens the authenticationKey in body's member path (a, then b) as the
 * TPM would: 0 with the key in key[0..*n). */
static int open_key(struct dev *v, const char *body, size_t len, const char *a, const char *b,
                    uint8_t key[TPM_KEY_MAX], size_t *n)
{
	json_t *o = json_loadb(body, len, 0, NULL);
	json_t *m = json_object_get(o, a);
	if (b)
		m = json_object_get(json_object_get(m, b), "authenticationKey");
	const char *text = json_string_value(m);
	uint8_t blob[TPM_BLOB_MAX];
	size_t blen = 0;
	const char *why = "no authenticationKey";
	struct soft_tpm *s = tpm_of(v);
	int rc = text && strlen(text) <= B64_ENCODED_LEN(TPM_BLOB_MAX) - 4 &&
	                 b64_decode(text, strlen(text), blob, &blen) == 0 &&
	                 tpm_open_blob(s->ek, &s->ek_pub, s->srk, &s->srk_pub, blob, blen, key, n,
	                               &why) == 0
	             ? 0
	             : -1;
	json_decref(o);
	if (rc != 0)
		fail(v, &d.status_errors, "TPM blob refused", "%s", why);
	return rc;
}

static void tpm_http_ready(struct httpc *h)
{
	struct dev *v = httpc_app(h);
	httpc_keep(h, 16384, "Retry-After");
	v->state = D_CHALLENGED;
	send_register(v, false);
}

static void tpm_http_response(struct httpc *h, int status, const char *body, size_t len)
{
	struct dev *v = httpc_app(h);
	int bl = (int)(len > 200 ? 200 : len);
	uint8_t key[TPM_KEY_MAX];
	size_t n;
	if (v->state == D_CHALLENGED && status == 401) {
		if (open_key(v, body, len, "authenticationKey", NULL, key, &n) != 0)
			return;
		/* The SAS the TPM signs with the key it just imported. */
		char key_b64[B64_ENCODED_LEN(TPM_KEY_MAX) + 1];
		struct buf sr = BUF_INIT, tok = BUF_INIT;
		b64_encode(key, n, key_b64);
		buf_printf(&sr, "%s%%2Fregistrations%%2F%s", d.p->scope, v->regid);
		sas_build(&tok, sr.data, key_b64, "registration", (int64_t)time(NULL) + 3600);
		snprintf(v->sas, sizeof v->sas, "%s", tok.data);
		buf_free(&sr);
		buf_free(&tok);
		v->state = D_REGISTERING;
		send_register(v, true);
		return;
	}
	if (v->state == D_CHALLENGED && status == 429) {
		/* The DPS's attestation budget: a device waits retry-after and asks
		 * again, as the SDK's retry policy does. Counted, not an error. */
		const char *ra = httpc_header(h);
		unsigned retry_after = ra ? (unsigned)strtoul(ra, NULL, 10) : 1;
		d.throttled++;
		v->state = D_THROTTLED;
		v->due_ns = uv_hrtime() + (uint64_t)retry_after * 1000000000u;
		d.fifo[(d.fifo_head + d.fifo_len) % d.p->concurrency] = v->slot;
		d.fifo_len++;
		return;
	}
	if ((v->state == D_REGISTERING || v->state == D_POLLING) && status == 202) {
		char st[32] = "";
		json_string_field(body, len, "status", st, sizeof st);
		if (!json_string_field(body, len, "operationId", v->op, sizeof v->op)) {
			fail(v, &d.status_errors, "unexpected answer", "202 without operationId: %.*s",
			     bl, body);
			return;
		}
		const char *ra = httpc_header(h);
		unsigned retry_after = ra ? (unsigned)strtoul(ra, NULL, 10) : 1;
		v->state = D_WAITING;
		v->due_ns = uv_hrtime() + (uint64_t)retry_after * 1000000000u;
		d.fifo[(d.fifo_head + d.fifo_len) % d.p->concurrency] = v->slot;
		d.fifo_len++;
		return;
	}
	if (v->state == D_POLLING && status == 200) {
		/* "assigned": the hub key, opened as the TPM imports it. */
		if (open_key(v, body, len, "registrationState", "tpm", key, &n) != 0)
			return;
		succeed(v);
		httpc_close(h, true);
		return;
	}
	fail(v, &d.status_errors, "unexpected answer", "status %d in state %d: %.*s", status,
	     v->state, bl, body);
}

static void tpm_http_close(struct httpc *h, enum tlsconn_error e, const char *detail)
{
	struct dev *v = httpc_app(h);
	v->h = NULL;
	device_closed(v, e, detail);
}

static const struct httpc_handler tpm_http_handler = {tpm_http_ready, tpm_http_response, NULL,
                                                      NULL, tpm_http_close};

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
	return size * n;
}

/* The software TPMs and the run's enrollments (blocking, before the run). */
static int tpm_setup(const struct dps_plan *p)
{
	uint64_t t0 = uv_hrtime();
	for (int i = 0; i < TPM_POOL; i++) {
		struct soft_tpm *s = &d.tpms[i];
		uint8_t pub[400];
		const char *why;
		int n;
		s->ek = EVP_RSA_gen(2048);
		s->srk = EVP_RSA_gen(2048);
		if (!s->ek || !s->srk || (n = tpm_marshal_public(s->ek, true, pub, sizeof pub)) < 0 ||
		    tpm_parse_public(pub, (size_t)n, &s->ek_pub, &why) != 0)
			return -1;
		b64_encode(pub, (size_t)n, s->ek_b64);
		if ((n = tpm_marshal_public(s->srk, false, pub, sizeof pub)) < 0 ||
		    tpm_parse_public(pub, (size_t)n, &s->srk_pub, &why) != 0)
			return -1;
		b64_encode(pub, (size_t)n, s->srk_b64);
	}
	/* The enrollments, 10 per bulk request on one keep-alive connection. */
	char url[300], resolve[300], ip[64];
	inet_ntop(AF_INET, &p->addr.sin_addr, ip, sizeof ip);
	snprintf(url, sizeof url, "https://%s/enrollments?api-version=2021-10-01", p->tls_name);
	snprintf(resolve, sizeof resolve, "%s:443:%s", p->tls_name, ip);
	struct buf auth = BUF_INIT, tok = BUF_INIT;
	if (sas_build(&tok, p->tls_name, p->owner_key, "provisioningserviceowner",
	              (int64_t)time(NULL) + 3600) != 0)
		return -1;
	buf_printf(&auth, "Authorization: %s", tok.data);
	CURL *c = curl_easy_init();
	struct curl_slist *rs = curl_slist_append(NULL, resolve);
	struct curl_slist *hs = curl_slist_append(NULL, auth.data);
	hs = curl_slist_append(hs, "Content-Type: application/json");
	int rc = 0;
	for (unsigned k = 0; k < p->devices && rc == 0; k += 10) {
		struct buf body = BUF_INIT;
		buf_appends(&body, "{\"mode\":\"create\",\"enrollments\":[");
		for (unsigned i = k; i < k + 10 && i < p->devices; i++)
			buf_printf(&body,
			           "%s{\"registrationId\":\"%s%s-%u\",\"allocationPolicy\":\"hashed\","
			           "\"attestation\":{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":"
			           "\"%s\"}}}",
			           i > k ? "," : "", p->prefix, d.tag, i, d.tpms[i % TPM_POOL].ek_b64);
		buf_appends(&body, "]}");
		long status = 0;
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_RESOLVE, rs);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
		curl_easy_setopt(c, CURLOPT_CAINFO, p->ca_file);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data);
		curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
		if (curl_easy_perform(c) != CURLE_OK ||
		    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK ||
		    status != 200) {
			fprintf(stderr, "loadgen: making the TPM enrollments failed (HTTP %ld)\n",
			        status);
			rc = -1;
		}
		buf_free(&body);
	}
	curl_slist_free_all(rs);
	curl_slist_free_all(hs);
	curl_easy_cleanup(c);
	buf_free(&auth);
	buf_free(&tok);
	fprintf(stderr, "loadgen: %d software TPMs and %u TPM enrollments made in %.2f s\n",
	        TPM_POOL, p->devices, (double)(uv_hrtime() - t0) / 1e9);
	return rc;
}

/* ---- devices and phases ---------------------------------------------------------- */

static void next_device(struct dev *v)
{
	const struct dps_plan *p = d.p;
	v->n = d.next_n++;
	v->state = D_CONNECTING;
	v->polls = 0;
	v->op[0] = '\0';
	v->t0_ns = uv_hrtime();
	snprintf(v->regid, sizeof v->regid, "%s%s-%" PRIu64, p->prefix, d.tag, v->n);
	if (p->tpm && v->n >= p->devices) {
		v->state = D_DONE; /* every enrollment used: this slot rests */
		return;
	}
	d.open++;
	if (p->tpm) {
		v->h = httpc_open(d.loop, p->tls, (const struct sockaddr *)&p->addr, p->tls_name,
		                  (uint64_t)(p->timeout_s * 1000), &tpm_http_handler, v);
		return;
	}
	if (p->handshakes_only) {
		v->t =
		    tlsconn_connect(d.loop, p->tls, (const struct sockaddr *)&p->addr, p->tls_name,
		                    (uint64_t)(p->timeout_s * 1000), &tls_handler, v);
		return;
	}
	char key[45], user[256];
	struct buf sr = BUF_INIT, tok = BUF_INIT;
	snprintf(user, sizeof user,
	         "%s/registrations/%s/api-version=" API_VERSION "&ClientVersion=fleethub-loadgen",
	         p->scope, v->regid);
	buf_printf(&sr, "%s%%2fregistrations%%2f%s", p->scope, v->regid);
	if (sas_derive_key(p->group_key, v->regid, key) != 0 ||
	    sas_build(&tok, sr.data, key, "registration", (int64_t)time(NULL) + 3600) != 0) {
		fprintf(stderr, "loadgen: --key is not valid base64\n");
		exit(2);
	}
	struct mqttc_connect cc = {
	    .client_id = v->regid,
	    .username = user,
	    .password = tok.data,
	    .keepalive = 60,
	    .clean = true,
	    .timeout_ms = (uint64_t)(p->timeout_s * 1000),
	};
	v->c = mqttc_open(d.loop, p->tls, (const struct sockaddr *)&p->addr, p->tls_name, &cc,
	                  &mqtt_handler, v);
	buf_free(&sr);
	buf_free(&tok);
}

static void on_sweep(uv_timer_t *t)
{
	uint64_t now = uv_hrtime(), limit = (uint64_t)(d.p->timeout_s * 1e9);
	for (unsigned k = 0; k < d.p->concurrency; k++) {
		struct dev *v = &d.devs[k];
		if ((v->c || v->t || v->h) && v->state != D_DONE && v->state != D_FAILED &&
		    now - v->t0_ns > limit)
			fail(v, &d.timeouts, "timeout",
			     "not done after %.1f s (state %d, %u polls)", d.p->timeout_s, v->state,
			     v->polls);
	}
}

/* The measured window is over: no new devices; the ones in flight finish
 * (or time out); then the handles close and the loop ends. */
static void on_stop(uv_timer_t *t)
{
	d.measuring = false;
	d.draining = true;
	d.t_end_ns = uv_hrtime();
	if (d.open == 0) {
		uv_close((uv_handle_t *)&d.tick, NULL);
		uv_close((uv_handle_t *)&d.sweep, NULL);
		uv_close((uv_handle_t *)&d.stop, NULL);
	}
}

int dps_run(const struct dps_plan *p)
{
	memset(&d, 0, sizeof d);
	d.p = p;
	d.loop = uv_default_loop();
	snprintf(d.tag, sizeof d.tag, "%08x", (unsigned)(time(NULL) ^ (uv_hrtime() & 0xffffff)));
	hist_init(&d.latency);
	if (p->tpm && tpm_setup(p) != 0)
		return 2;
	uv_update_time(d.loop); /* the set-up blocked: timers count from now */
	d.devs = xcalloc(p->concurrency, sizeof *d.devs);
	d.fifo = xcalloc(p->concurrency, sizeof *d.fifo);
	uv_timer_init(d.loop, &d.tick);
	uv_timer_init(d.loop, &d.sweep);
	uv_timer_init(d.loop, &d.stop);
	uv_timer_start(&d.tick, on_tick, TICK_MS, TICK_MS);
	uv_timer_start(&d.sweep, on_sweep, SWEEP_MS, SWEEP_MS);
	uv_timer_start(&d.stop, on_stop, (uint64_t)(p->duration_s * 1000), 0);
	d.measuring = true;
	d.t_start_ns = uv_hrtime();
	for (unsigned k = 0; k < p->concurrency; k++) {
		d.devs[k].slot = k;
		next_device(&d.devs[k]);
	}
	uv_run(d.loop, UV_RUN_DEFAULT);
	uv_loop_close(d.loop);

	double window = (double)(d.t_end_ns - d.t_start_ns) / 1e9;
	uint64_t errors = d.connect_errors + d.status_errors + d.timeouts + d.disconnects;
	printf("loadgen scenario=%s target=%s concurrency=%u duration_s=%.2f ops=%" PRIu64
	       " ops_per_s=%.1f p50_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64
	       " errors=%" PRIu64 " connect_errors=%" PRIu64 " status_errors=%" PRIu64
	       " timeouts=%" PRIu64 " disconnects=%" PRIu64 " started=%" PRIu64 " polls=%" PRIu64
	       " late_ops=%" PRIu64 " throttled=%" PRIu64 " cpu_s=%.2f\n",
	       p->handshakes_only ? "tls-handshakes" : p->tpm ? "dps-tpm" : "dps-register",
	       p->tls_name, p->concurrency,
	       window, d.ops, window > 0 ? (double)d.ops / window : 0,
	       hist_percentile(&d.latency, 0.5), hist_percentile(&d.latency, 0.99), d.latency.max,
	       errors, d.connect_errors, d.status_errors, d.timeouts, d.disconnects, d.next_n,
	       d.polls, d.late_ops, d.throttled, self_cpu_s());
	fflush(stdout);
	free(d.devs);
	free(d.fifo);
	for (int i = 0; i < TPM_POOL; i++) {
		EVP_PKEY_free(d.tpms[i].ek);
		EVP_PKEY_free(d.tpms[i].srk);
	}
	if (errors > p->max_errors) {
		fprintf(stderr, "loadgen: %" PRIu64 " errors (more than --max-errors %lu)\n",
		        errors, p->max_errors);
		return 1;
	}
	return 0;
}
