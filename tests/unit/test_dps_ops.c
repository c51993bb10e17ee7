/* Unit tests for the DPS registration operations (src/dps/dps_ops.c) on a
 * real SQLite store in a temporary directory, two real in-process hubs
 * linked with dps_link_local, and the test HTTP/1.1 server
 * (support/test_web.h) on the same libuv loop as the webhook. Devices are
 * authenticated with real SAS tokens (dps__authenticate) and driven through
 * the internal entry points dps__register and dps__poll with a recording
 * dps_reply.
 *
 * Covered:
 *   - static and hashed assignment: 202 + operationId with the operation
 *     record committed before the answer, then "assigned" with hub, device,
 *     substatus, etag and timestamps; the device identity on the hub with
 *     the key the device proved; the enrollment's initial twin; the
 *     registration state stored and the operation record removed;
 *   - custom allocation: the webhook request, a held webhook seen as
 *     "assigning" by polls and by a second register, the webhook's hub,
 *     initial twin and payload, retries after 5xx, the call log and its
 *     bounds (per registration, by age, with the registration);
 *   - failures: webhook 400/401/empty hub/invalid JSON/unlinked hub/5xx
 *     until the attempts run out, a closed port, a static hub that is no
 *     longer linked, unknown operations, disabled enrollments;
 *   - resume: a record as a previous run leaves it; a record whose
 *     enrollment was deleted or that names none (failed, keeping where an
 *     earlier registration put the device), one without its operationId
 *     (resumed under its key), one without a registrationId or not JSON
 *     (removed); a real shutdown with a webhook call in flight, then a
 *     restart;
 *   - re-registration with reprovisionPolicy migrate, reset and never, and
 *     back to the initial hub.
 * Every test ends with uv_loop_close() == 0, so a handle left open fails it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "codec/sas.h"
#include "core/enrollment.h"
#include "dps/dps.h"
#include "dps/internal.h"
#include "hub/hub.h"
#include "store/store.h"
#include "support/test_web.h"

#define DPS_NAME "dps.test"
#define SCOPE "0ne0000FEED"
#define HUB1 "hub-1.test"
#define HUB2 "hub-2.test"
#define GONE "hub-gone.test" /* valid when an enrollment is written, never linked */
#define RETRY_AFTER 3        /* retry_after_s: not the default, so it is seen to be used */

/* base64 of 32 ASCII bytes each */
#define KEY1 "cHJpbWFyeS1rZXktMDEyMzQ1Njc4OWFiY2RlZjAxMjM="
#define KEY2 "c2Vjb25kYXJ5LWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE="
#define GKEY1 "Z3JvdXAtcHJpbWFyeS0wMTIzNDU2Nzg5YWJjZGVmMDEyMw=="
#define GKEY2 "Z3JvdXAtc2Vjb25kYXJ5LTAxMjM0NTY3ODlhYmNkZWYwMQ=="

#define SYMKEY_ATT                                                                                 \
	"\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"" KEY1      \
	"\",\"secondaryKey\":\"" KEY2 "\"}}"

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fail_msg("bad JSON (%s): %s", e.text, text);
	return j;
}

/* assert_string_equal that fails, rather than crashes, when the string is
 * absent (NULL). */
#define assert_str(actual, expected)                                                               \
	do {                                                                                       \
		const char *got_ = (actual);                                                       \
		if (!got_)                                                                         \
			fail_msg("%s is absent, expected \"%s\"", #actual, (expected));            \
		assert_string_equal(got_, (expected));                                             \
	} while (0)

/* The string at a path of object keys (NULL-terminated), or NULL. */
static const char *str_at(const json_t *o, ...)
{
	va_list ap;
	va_start(ap, o);
	for (const char *k; (k = va_arg(ap, const char *));)
		o = json_object_get(o, k);
	va_end(ap);
	return json_string_value(o);
}

/* ---- fixture: store, hubs, DPS, webhook server ------------------------------- */

struct fixture {
	char dir[64];
	char path[128];
	uv_loop_t loop;
	struct store *store;
	struct hub hub1, hub2;
	struct dps *d;      /* the running DPS */
	struct dps *all[4]; /* every DPS started (freed once the store has closed) */
	int nall;
	struct web web;   /* the webhook */
	uv_timer_t guard; /* fails a wait that lasts 10 s */
};

static void on_guard(uv_timer_t *t)
{
	fail_msg("the loop did not reach the expected state within 10 s");
}

/* Runs the loop until *count reaches want. The guard timer is the
 * fixture's, so a failed assertion leaves no handle on a dead stack frame. */
static void run_until(struct fixture *f, const int *count, int want)
{
	uv_timer_start(&f->guard, on_guard, 10000, 0);
	while (*count < want)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_timer_stop(&f->guard);
}

struct doc_job {
	enum store_doc_kind kind;
	const char *id;
	const char *json; /* NULL = delete */
	int done;
	int rc;
};

static int doc_work(void *arg, struct store_txn *t)
{
	struct doc_job *j = arg;
	if (j->json)
		return store_doc_put(t, j->kind, DPS_NAME, j->id, j->json);
	return store_doc_delete(t, j->kind, DPS_NAME, j->id);
}

static void job_done(void *arg, int rc)
{
	struct doc_job *j = arg;
	j->rc = rc;
	j->done = 1;
}

/* Writes (json) or deletes (NULL) a DPS document and waits for the commit.
 * Jobs complete in submission order, so this also waits for every job
 * submitted before it. */
static int doc_write(struct fixture *f, enum store_doc_kind kind, const char *id, const char *json)
{
	struct doc_job j = {kind, id, json, 0, 0};
	store_submit(f->store, doc_work, job_done, &j);
	run_until(f, &j.done, 1);
	return j.rc;
}

/* A document as committed now, parsed, or NULL when absent. */
static json_t *doc_read(struct fixture *f, enum store_doc_kind kind, const char *id)
{
	char *text = NULL;
	if (store_doc_get(store_reader(f->store), kind, DPS_NAME, id, &text) != 0)
		return NULL;
	json_t *j = J(text);
	free(text);
	return j;
}

static int count_doc(void *arg, const char *id, const char *json)
{
	json_array_append_new(arg, J(json));
	return 0;
}

/* Every document of kind whose id starts with prefix, in id order. */
static json_t *doc_list(struct fixture *f, enum store_doc_kind kind, const char *prefix)
{
	json_t *a = json_array();
	assert_int_equal(
	    store_doc_list(store_reader(f->store), kind, DPS_NAME, prefix, "", 1000, count_doc, a),
	    0);
	return a;
}

/* The device identity on hub, or NULL. */
static json_t *device_read(struct fixture *f, const char *hub, const char *id)
{
	struct store_device dev = {0};
	if (store_device_get(store_reader(f->store), hub, id, &dev) != 0)
		return NULL;
	json_t *j = J(dev.json);
	store_device_clear(&dev);
	return j;
}

/* The twin of a device on hub as {"tags":..,"desired":..,"reported":..}. */
static json_t *twin_read(struct fixture *f, const char *hub, const char *id)
{
	struct store_twin tw = {0};
	assert_int_equal(store_twin_get(store_reader(f->store), hub, id, &tw), 0);
	json_t *j = json_pack("{s:o,s:o,s:o}", "tags", J(tw.tags), "desired", J(tw.desired),
	                      "reported", J(tw.reported));
	store_twin_clear(&tw);
	return j;
}

/* Device data changed on a hub after provisioning (as the device and the
 * service would): a tag and a reported property. */
struct twin_job {
	const char *hub, *id, *tags, *reported;
	int done, rc;
};

static int twin_edit_work(void *arg, struct store_txn *t)
{
	struct twin_job *j = arg;
	struct store_twin tw = {0};
	int rc = store_twin_get(t, j->hub, j->id, &tw);
	if (rc == 0) {
		free(tw.tags);
		free(tw.reported);
		tw.tags = strdup(j->tags);
		tw.reported = strdup(j->reported);
		tw.version++;
		tw.reported_version++;
		rc = store_twin_put(t, j->hub, j->id, &tw);
	}
	store_twin_clear(&tw);
	return rc;
}

static void twin_edit_done(void *arg, int rc)
{
	struct twin_job *j = arg;
	j->rc = rc;
	j->done = 1;
}

static void twin_edit(struct fixture *f, const char *hub, const char *id, const char *tags,
                      const char *reported)
{
	struct twin_job j = {hub, id, tags, reported, 0, 0};
	store_submit(f->store, twin_edit_work, twin_edit_done, &j);
	run_until(f, &j.done, 1);
	assert_int_equal(j.rc, 0);
}

/* Stores an enrollment built from body by the same validation the REST API
 * uses (hub names checked against HUB1, HUB2 and GONE). Returns the record
 * (caller owns). */
static json_t *put_enrollment(struct fixture *f, enum enrollment_kind kind, const char *id,
                              const char *body)
{
	static const char *const names[] = {HUB1, HUB2, GONE};
	const struct enrollment_hubs hubs = {names, 3};
	char now[32];
	clock_iso8601(clock_now_ms(), now);
	json_t *b = J(body);
	json_t *old =
	    doc_read(f, kind == ENROLLMENT_GROUP ? STORE_ENROLLMENT_GROUP : STORE_ENROLLMENT, id);
	struct enrollment_error err;
	json_t *rec = enrollment_build(kind, id, b, old, &hubs, now, &err);
	json_decref(b);
	json_decref(old);
	if (!rec)
		fail_msg("enrollment %s refused: %s", id, err.message);
	char *text = json_dumps(rec, JSON_COMPACT);
	assert_int_equal(
	    doc_write(f, kind == ENROLLMENT_GROUP ? STORE_ENROLLMENT_GROUP : STORE_ENROLLMENT, id,
	              text),
	    0);
	free(text);
	/* As the REST route does after its commit: the DPS keeps its groups
	 * in step one at a time. */
	if (kind == ENROLLMENT_GROUP && f->d)
		dps__group_changed(f->d, id, rec);
	return rec;
}

/* Starts a DPS over the fixture's store (as a server start-up does): keys
 * and id scope, both hubs linked, then the operations left by a previous
 * run resumed when resume is set. */
static void dps_start(struct fixture *f, bool resume)
{
	struct dps *d = calloc(1, sizeof *d);
	struct dps_config c = {
	    .name = DPS_NAME,
	    .id_scope = SCOPE,
	    .webhook_timeout_ms = 3000,
	    .webhook_attempts = 2,
	    .webhook_retry_ms = 20,
	    .retry_after_s = RETRY_AFTER,
	};
	char err[256];
	if (dps_init(d, &c, f->store, &f->loop, 256 * 1024, err, sizeof err) != 0)
		fail_msg("dps_init: %s", err);
	dps_link_local(d, f->hub1.name, 1);
	dps_link_local(d, f->hub2.name, 1);
	assert_true(f->nall < 4);
	f->all[f->nall++] = d;
	f->d = d;
	if (resume) {
		dps_resume(d);
		while (d->resuming)
			uv_run(&f->loop, UV_RUN_ONCE);
	}
}

/* Stops the running DPS as a server shutdown does (its jobs drain; the
 * struct stays allocated until teardown, as jobs in flight still point at
 * it) and starts a new one that resumes. */
static void dps_restart(struct fixture *f)
{
	dps_shutdown(f->d);
	doc_write(f, STORE_OPERATION, "no-such-operation", NULL); /* drains earlier jobs */
	dps_start(f, true);
}

/* The webhook's answer to call i (from 0) and to every later call. */
static void hook_answer(struct fixture *f, int i, int status, const char *body)
{
	f->web.ans[i] = (struct web_answer){.status = status, .body = body};
	f->web.nans = i + 1;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/fh_dps_ops_XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof f->path, "%s/fleethub.db", f->dir);
	uv_loop_init(&f->loop);
	char err[256] = "";
	if (store_open(&f->store, &f->loop, STORE_SQLITE, f->path, err, sizeof err) != 0 ||
	    hub_init(&f->hub1, HUB1, NULL, f->store, &f->loop, 256 * 1024, err, sizeof err) != 0 ||
	    hub_init(&f->hub2, HUB2, NULL, f->store, &f->loop, 256 * 1024, err, sizeof err) != 0) {
		fprintf(stderr, "setup: %s\n", err);
		return -1;
	}
	web_start(&f->web, &f->loop);
	f->web.content_type = "application/json";
	hook_answer(f, 0, 200, "{\"iotHubHostName\":\"" HUB1 "\"}");
	uv_timer_init(&f->loop, &f->guard);
	dps_start(f, true);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	dps_shutdown(f->d);
	hub_shutdown(&f->hub1);
	hub_shutdown(&f->hub2);
	web_stop(&f->web);
	uv_close((uv_handle_t *)&f->guard, NULL);
	store_close(f->store);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	for (int i = 0; i < f->nall; i++) {
		dps_free(f->all[i]);
		free(f->all[i]);
	}
	const char *suffix[] = {"", "-wal", "-shm"};
	for (int i = 0; i < 3; i++) {
		char p[200];
		snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

/* ---- answers to the device ------------------------------------------------------- */

struct answer {
	int calls;
	int status;
	unsigned retry_after;
	json_t *body;   /* the JSON answered, owned */
	json_t *op_doc; /* the stored operation record named by the answer when it
	                   was given (NULL when none), owned */
};

struct test_reply {
	struct dps_reply base;
	struct fixture *f;
	struct answer *a;
};

static void answer_clear(struct answer *a)
{
	json_decref(a->body);
	json_decref(a->op_doc);
	memset(a, 0, sizeof *a);
}

static void reply_fn(struct dps_reply *r, int status, const char *json, unsigned retry_after_s)
{
	struct test_reply *t = (struct test_reply *)r;
	struct answer *a = t->a;
	a->calls++;
	a->status = status;
	a->retry_after = retry_after_s;
	json_decref(a->body);
	a->body = J(json);
	/* What a poll arriving right now would find in the store. */
	json_decref(a->op_doc);
	const char *id = str_at(a->body, "operationId", NULL);
	a->op_doc = id && *id ? doc_read(t->f, STORE_OPERATION, id) : NULL;
	free(t); /* the reply is the answerer's to free */
}

static struct dps_reply *reply_new(struct fixture *f, struct answer *a)
{
	struct test_reply *t = calloc(1, sizeof *t);
	t->base.fn = reply_fn;
	t->f = f;
	t->a = a;
	return &t->base;
}

/* A device's register request signed with key (its own or derived), with
 * payload (JSON text or NULL); waits for the answer. */
static void register_device(struct fixture *f, const char *regid, const char *key,
                            const char *payload, struct answer *a)
{
	answer_clear(a);
	char sr[256];
	snprintf(sr, sizeof sr, "%s/registrations/%s", f->d->id_scope, regid);
	struct buf tok = BUF_INIT;
	int64_t now_s = clock_now_ms() / 1000;
	assert_int_equal(sas_build(&tok, sr, key, NULL, now_s + 3600), 0);
	struct dps_auth auth;
	const char *why = "";
	unsigned wait;
	struct dps_prefetch pf;
	dps__prefetch_init(f->d, regid, false, &pf);
	assert_int_equal(dps__prefetch(&pf, store_reader(f->store)), 0);
	int rc = dps__authenticate(f->d, regid, tok.data, tok.len, now_s, &pf, &auth, &why, &wait);
	dps__prefetch_clear(&pf);
	buf_free(&tok);
	if (rc != 0)
		fail_msg("authenticate %s: %s (%s)", regid, fh_strerror(rc), why);
	dps__register(f->d, regid, &auth, payload ? J(payload) : NULL, reply_new(f, a));
	run_until(f, &a->calls, 1);
	assert_int_equal(a->calls, 1);
}

/* One poll; dps__poll always answers before it returns. */
static void poll_once(struct fixture *f, const char *regid, const char *op_id, struct answer *a)
{
	answer_clear(a);
	dps__poll(f->d, regid, op_id, reply_new(f, a));
	assert_int_equal(a->calls, 1);
}

/* Polls as a device does until the answer is no longer 202, running the
 * loop between polls. Checks the finished operation left no record. */
static void poll_until_done(struct fixture *f, const char *regid, const char *op_id,
                            struct answer *a)
{
	uv_timer_start(&f->guard, on_guard, 10000, 0);
	for (poll_once(f, regid, op_id, a); a->status == 202; poll_once(f, regid, op_id, a)) {
		assert_str(str_at(a->body, "status", NULL), "assigning");
		uv_run(&f->loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&f->guard);
	assert_int_equal(a->status, 200);
	assert_str(str_at(a->body, "operationId", NULL), op_id);
	json_t *rec = doc_read(f, STORE_OPERATION, op_id);
	assert_null(rec);
}

/* Registers and polls to the end; the operation id goes to op_id. */
static void register_to_end(struct fixture *f, const char *regid, const char *key,
                            const char *payload, struct answer *a, char op_id[64])
{
	register_device(f, regid, key, payload, a);
	assert_int_equal(a->status, 202);
	const char *id = str_at(a->body, "operationId", NULL);
	assert_non_null(id);
	snprintf(op_id, 64, "%s", id);
	poll_until_done(f, regid, op_id, a);
}

static void assert_timestamp(const char *s)
{
	/* 2026-11-23T16:59:59.801Z */
	assert_non_null(s);
	assert_int_equal(strlen(s), 24);
	assert_int_equal(s[10], 'T');
	assert_int_equal(s[23], 'Z');
}

/* The operation ended failed with code and a message containing want; the
 * failure is the stored registration state. */
static void assert_failed(struct fixture *f, const char *regid, const char *op_id,
                          const struct answer *a, int code, const char *want)
{
	assert_int_equal(a->status, 200);
	assert_str(str_at(a->body, "status", NULL), "failed");
	json_t *rs = json_object_get(a->body, "registrationState");
	assert_str(str_at(rs, "registrationId", NULL), regid);
	assert_str(str_at(rs, "status", NULL), "failed");
	assert_int_equal(json_integer_value(json_object_get(rs, "errorCode")), code);
	const char *msg = str_at(rs, "errorMessage", NULL);
	assert_non_null(msg);
	if (!strstr(msg, want))
		fail_msg("errorMessage '%s' lacks '%s'", msg, want);
	assert_null(json_object_get(rs, "_operationId")); /* internal fields stay inside */
	json_t *st = doc_read(f, STORE_REGISTRATION, regid);
	assert_non_null(st);
	assert_str(str_at(st, "status", NULL), "failed");
	assert_str(str_at(st, "_operationId", NULL), op_id);
	json_decref(st);
}

/* Neither hub has a device of this id. */
static void assert_no_device(struct fixture *f, const char *id)
{
	json_t *d1 = device_read(f, HUB1, id), *d2 = device_read(f, HUB2, id);
	assert_null(d1);
	assert_null(d2);
}

/* A static individual enrollment with symmetric keys KEY1/KEY2, its
 * reprovisionPolicy and an initial twin. */
static void put_static(struct fixture *f, const char *regid, const char *hub, bool update,
                       bool migrate)
{
	char body[1024];
	snprintf(body, sizeof body,
	         "{" SYMKEY_ATT ",\"allocationPolicy\":\"static\",\"iotHubs\":[\"%s\"],"
	         "\"reprovisionPolicy\":{\"updateHubAssignment\":%s,\"migrateDeviceData\":%s},"
	         "\"initialTwin\":{\"tags\":{\"site\":\"initial\"},"
	         "\"properties\":{\"desired\":{\"rate\":1}}}}",
	         hub, update ? "true" : "false", migrate ? "true" : "false");
	json_decref(put_enrollment(f, ENROLLMENT_INDIVIDUAL, regid, body));
}

/* Writes the static enrollment of regid naming hub (put_static) and
 * registers the device with KEY1 to the end. Returns the registration
 * state (borrowed from a->body). */
static json_t *register_static(struct fixture *f, const char *regid, const char *hub, bool update,
                               bool migrate, struct answer *a)
{
	put_static(f, regid, hub, update, migrate);
	char op[64];
	register_to_end(f, regid, KEY1, NULL, a, op);
	return json_object_get(a->body, "registrationState");
}

/* ---- 1. assignment ------------------------------------------------------------------ */

static void test_static_assignment(void **state)
{
	struct fixture *f = *state;
	json_t *rec = put_enrollment(
	    f, ENROLLMENT_INDIVIDUAL, "dev-1",
	    "{" SYMKEY_ATT ",\"deviceId\":\"device-one\",\"allocationPolicy\":\"static\","
	    "\"iotHubs\":[\"" HUB1 "\"],\"capabilities\":{\"iotEdge\":true},"
	    "\"initialTwin\":{\"tags\":{\"site\":\"north\"},"
	    "\"properties\":{\"desired\":{\"rate\":5}}}}");
	json_decref(rec);
	struct answer a = {0};
	register_device(f, "dev-1", KEY1, "{\"model\":\"m1\"}", &a);

	/* 202 + operationId; the record was committed before the answer. */
	assert_int_equal(a.status, 202);
	assert_int_equal(a.retry_after, RETRY_AFTER);
	assert_str(str_at(a.body, "status", NULL), "assigning");
	char op[64];
	snprintf(op, sizeof op, "%s", str_at(a.body, "operationId", NULL));
	assert_true(strncmp(op, "5.", 2) == 0 && strlen(op) > 20);
	assert_non_null(a.op_doc);
	assert_str(str_at(a.op_doc, "operationId", NULL), op);
	assert_str(str_at(a.op_doc, "registrationId", NULL), "dev-1");
	assert_str(str_at(a.op_doc, "status", NULL), "assigning");
	assert_str(str_at(a.op_doc, "enrollment", "kind", NULL), "individual");
	assert_str(str_at(a.op_doc, "enrollment", "id", NULL), "dev-1");
	assert_int_equal(json_integer_value(json_object_get(a.op_doc, "keyIndex")), 0);
	assert_str(str_at(a.op_doc, "payload", "model", NULL), "m1");
	assert_timestamp(str_at(a.op_doc, "createdDateTimeUtc", NULL));

	poll_until_done(f, "dev-1", op, &a);
	assert_int_equal(a.retry_after, 0);
	assert_str(str_at(a.body, "status", NULL), "assigned");
	json_t *rs = json_object_get(a.body, "registrationState");
	assert_str(str_at(rs, "registrationId", NULL), "dev-1");
	assert_str(str_at(rs, "assignedHub", NULL), HUB1);
	assert_str(str_at(rs, "deviceId", NULL), "device-one");
	assert_str(str_at(rs, "status", NULL), "assigned");
	assert_str(str_at(rs, "substatus", NULL), "initialAssignment");
	const char *etag = str_at(rs, "etag", NULL);
	assert_non_null(etag);
	assert_true(strlen(etag) == 38 && etag[0] == '"' && etag[37] == '"');
	assert_timestamp(str_at(rs, "createdDateTimeUtc", NULL));
	assert_timestamp(str_at(rs, "lastUpdatedDateTimeUtc", NULL));
	assert_null(json_object_get(rs, "errorCode"));
	assert_null(json_object_get(rs, "payload")); /* no webhook, nothing returned */
	const char *k;
	json_t *v;
	json_object_foreach(rs, k, v) assert_true(k[0] != '_');

	/* The registration state as stored, with its internal fields. */
	json_t *st = doc_read(f, STORE_REGISTRATION, "dev-1");
	assert_non_null(st);
	assert_str(str_at(st, "status", NULL), "assigned");
	assert_str(str_at(st, "_operationId", NULL), op);
	assert_str(str_at(st, "_initialHub", NULL), HUB1);
	assert_str(str_at(st, "etag", NULL), etag);
	json_decref(st);

	/* The device on the hub, with the key it proved. */
	json_t *dev = device_read(f, HUB1, "device-one");
	assert_non_null(dev);
	assert_str(str_at(dev, "deviceId", NULL), "device-one");
	assert_str(str_at(dev, "status", NULL), "enabled");
	assert_str(str_at(dev, "authentication", "type", NULL), "sas");
	assert_str(str_at(dev, "authentication", "symmetricKey", "primaryKey", NULL), KEY1);
	assert_str(str_at(dev, "authentication", "symmetricKey", "secondaryKey", NULL), KEY2);
	assert_true(json_is_true(json_object_get(json_object_get(dev, "capabilities"), "iotEdge")));
	json_decref(dev);
	dev = device_read(f, HUB2, "device-one");
	assert_null(dev);
	dev = device_read(f, HUB1, "dev-1");
	assert_null(dev);

	/* The enrollment's initial twin. */
	json_t *tw = twin_read(f, HUB1, "device-one");
	assert_str(str_at(tw, "tags", "site", NULL), "north");
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(tw, "desired"), "rate")), 5);
	assert_int_equal(json_object_size(json_object_get(tw, "reported")), 0);
	json_decref(tw);

	/* A poll after the end reads the same stored state again. */
	struct answer b = {0};
	poll_once(f, "dev-1", op, &b);
	assert_int_equal(b.status, 200);
	assert_str(str_at(b.body, "registrationState", "etag", NULL), etag);
	answer_clear(&b);
	answer_clear(&a);
}

/* A group member signing with its derived secondary key: the device gets
 * that key as its primary one; the state names the group. */
static void test_group_hashed_secondary_key(void **state)
{
	struct fixture *f = *state;
	json_t *rec = put_enrollment(f, ENROLLMENT_GROUP, "Group-A",
	                             "{\"attestation\":{\"type\":\"symmetricKey\","
	                             "\"symmetricKey\":{\"primaryKey\":\"" GKEY1
	                             "\",\"secondaryKey\":\"" GKEY2 "\"}}}");
	json_decref(rec);
	char k1[45], k2[45];
	assert_int_equal(sas_derive_key(GKEY1, "member-7", k1), 0);
	assert_int_equal(sas_derive_key(GKEY2, "member-7", k2), 0);
	struct answer a = {0};
	char op[64];
	register_device(f, "member-7", k2, NULL, &a);
	assert_int_equal(a.status, 202);
	assert_int_equal(json_integer_value(json_object_get(a.op_doc, "keyIndex")), 1);
	assert_str(str_at(a.op_doc, "enrollment", "kind", NULL), "group");
	assert_str(str_at(a.op_doc, "enrollment", "id", NULL), "Group-A");
	assert_null(json_object_get(a.op_doc, "payload"));
	snprintf(op, sizeof op, "%s", str_at(a.body, "operationId", NULL));
	poll_until_done(f, "member-7", op, &a);

	json_t *rs = json_object_get(a.body, "registrationState");
	assert_str(str_at(rs, "status", NULL), "assigned");
	assert_str(str_at(rs, "deviceId", NULL), "member-7");
	assert_str(str_at(rs, "symmetricKey", "enrollmentGroupId", NULL), "Group-A");
	const char *hub = str_at(rs, "assignedHub", NULL);
	assert_non_null(hub);
	assert_true(strcmp(hub, HUB1) == 0 || strcmp(hub, HUB2) == 0);
	json_t *dev = device_read(f, hub, "member-7");
	assert_non_null(dev);
	assert_str(str_at(dev, "authentication", "symmetricKey", "primaryKey", NULL), k2);
	assert_str(str_at(dev, "authentication", "symmetricKey", "secondaryKey", NULL), k1);
	json_decref(dev);
	dev = device_read(f, strcmp(hub, HUB1) == 0 ? HUB2 : HUB1, "member-7");
	assert_null(dev);
	answer_clear(&a);
}

/* ---- custom allocation ---------------------------------------------------------------- */

static void put_custom(struct fixture *f, const char *regid, int port)
{
	char body[1024];
	snprintf(body, sizeof body,
	         "{" SYMKEY_ATT ",\"allocationPolicy\":\"custom\",\"customAllocationDefinition\":"
	         "{\"webhookUrl\":\"http://127.0.0.1:%d/api/alloc?code=hook-secret\","
	         "\"apiVersion\":\"2021-10-01\"},\"iotHubs\":[\"" HUB1 "\",\"" HUB2 "\"],"
	         "\"initialTwin\":{\"tags\":{\"from\":\"enrollment\"},"
	         "\"properties\":{\"desired\":{}}}}",
	         port);
	json_decref(put_enrollment(f, ENROLLMENT_INDIVIDUAL, regid, body));
}

static void test_webhook_assignment(void **state)
{
	struct fixture *f = *state;
	put_custom(f, "hooked", f->web.port);
	f->web.hold = true;
	hook_answer(f, 0, 200,
	            "{\"iotHubHostName\":\"HUB-2.TEST\",\"initialTwin\":{\"tags\":{\"from\":"
	            "\"webhook\"},\"properties\":{\"desired\":{\"mode\":\"fast\"}}},"
	            "\"payload\":{\"hello\":\"device\"}}");
	struct answer a = {0};
	register_device(f, "hooked", KEY1, "{\"model\":\"m2\",\"n\":[1,2]}", &a);
	assert_int_equal(a.status, 202);
	char op[64];
	snprintf(op, sizeof op, "%s", str_at(a.body, "operationId", NULL));
	run_until(f, &f->web.requests, 1);

	/* The webhook's request: the enrollment without its keys, the device's
	 * payload, the candidate hubs. */
	assert_str(f->web.target, "/api/alloc?code=hook-secret");
	assert_null(strstr(f->web.body.data, KEY1));
	assert_null(strstr(f->web.body.data, KEY2));
	json_t *req = J(f->web.body.data);
	assert_str(str_at(req, "individualEnrollment", "registrationId", NULL), "hooked");
	assert_str(str_at(req, "deviceRuntimeContext", "registrationId", NULL), "hooked");
	assert_str(str_at(req, "deviceRuntimeContext", "payload", "model", NULL), "m2");
	assert_null(
	    json_object_get(json_object_get(req, "deviceRuntimeContext"), "currentIotHubHostName"));
	json_t *linked = json_object_get(req, "linkedHubs");
	assert_int_equal(json_array_size(linked), 2);
	assert_str(json_string_value(json_array_get(linked, 0)), HUB1);
	assert_str(json_string_value(json_array_get(linked, 1)), HUB2);
	json_decref(req);

	/* While the webhook holds the answer: polls say assigning, and a second
	 * register names the same operation without a second webhook call. */
	struct answer b = {0};
	poll_once(f, "hooked", op, &b);
	assert_int_equal(b.status, 202);
	assert_int_equal(b.retry_after, RETRY_AFTER);
	assert_str(str_at(b.body, "operationId", NULL), op);
	assert_str(str_at(b.body, "status", NULL), "assigning");
	assert_str(str_at(b.body, "registrationState", "registrationId", NULL), "hooked");
	assert_str(str_at(b.body, "registrationState", "status", NULL), "assigning");
	assert_non_null(b.op_doc);
	/* The same operation id polled by another registration id is not found. */
	poll_once(f, "other-device", op, &b);
	assert_int_equal(b.status, 404);
	register_device(f, "hooked", KEY2, NULL, &b);
	assert_int_equal(b.status, 202);
	assert_str(str_at(b.body, "operationId", NULL), op);
	answer_clear(&b);
	assert_int_equal(f->web.requests, 1);

	web_release(&f->web);
	poll_until_done(f, "hooked", op, &a);
	json_t *rs = json_object_get(a.body, "registrationState");
	assert_str(str_at(rs, "status", NULL), "assigned");
	assert_str(str_at(rs, "assignedHub", NULL), HUB2);
	assert_str(str_at(rs, "deviceId", NULL), "hooked");
	assert_str(str_at(rs, "substatus", NULL), "initialAssignment");
	assert_str(str_at(rs, "payload", "hello", NULL), "device");
	json_t *tw = twin_read(f, HUB2, "hooked");
	assert_str(str_at(tw, "tags", "from", NULL), "webhook");
	assert_str(str_at(tw, "desired", "mode", NULL), "fast");
	json_decref(tw);
	assert_int_equal(f->web.requests, 1);

	/* The call log: one entry, without the URL's query string. */
	json_t *log = doc_list(f, STORE_WEBHOOK_CALL, "hooked/");
	assert_int_equal(json_array_size(log), 1);
	json_t *e = json_array_get(log, 0);
	assert_int_equal(json_integer_value(json_object_get(e, "status")), 200);
	assert_int_equal(json_integer_value(json_object_get(e, "attempt")), 1);
	assert_null(strstr(str_at(e, "url", NULL), "hook-secret"));
	assert_str(str_at(e, "outcome", NULL), "hub " HUB2);
	json_decref(log);
	answer_clear(&a);
}

static int noop_work(void *arg, struct store_txn *t)
{
	return 0;
}

static void count_done(void *arg, int rc)
{
	++*(int *)arg;
}

/* Overload: while max_assigning registrations are in progress (here one,
 * held by its webhook), or the store's write backlog is full, a new
 * registration is answered 429 with retry-after and nothing is stored;
 * once there is room it goes through. */
static void test_register_overload(void **state)
{
	struct fixture *f = *state;
	put_custom(f, "first", f->web.port);
	put_custom(f, "second", f->web.port);
	f->d->max_assigning = 1;
	f->web.hold = true;
	hook_answer(f, 0, 200, "{\"iotHubHostName\":\"" HUB1 "\"}");
	hook_answer(f, 1, 200, "{\"iotHubHostName\":\"" HUB1 "\"}");
	struct answer a = {0}, b = {0};
	register_device(f, "first", KEY1, NULL, &a);
	assert_int_equal(a.status, 202);
	run_until(f, &f->web.requests, 1);
	register_device(f, "second", KEY1, NULL, &b);
	assert_int_equal(b.status, 429);
	assert_int_equal(b.retry_after, RETRY_AFTER);
	assert_int_equal(json_integer_value(json_object_get(b.body, "errorCode")), 429001);
	json_t *ops = doc_list(f, STORE_OPERATION, "");
	assert_int_equal(json_array_size(ops), 1); /* only the first one's */
	json_decref(ops);
	/* The one in progress is still answered: 202 naming its operation. */
	register_device(f, "first", KEY1, NULL, &b);
	assert_int_equal(b.status, 202);

	web_release(&f->web);
	char op[64];
	snprintf(op, sizeof op, "%s", str_at(a.body, "operationId", NULL));
	poll_until_done(f, "first", op, &a);

	/* The store's backlog full (one write queued whose completion has not
	 * run yet): refused with 429002, nothing stored. */
	store_set_backlog_limit(f->store, 1, 0);
	int noop_done = 0;
	store_submit(f->store, noop_work, count_done, &noop_done);
	register_device(f, "second", KEY1, NULL, &b);
	assert_int_equal(b.status, 429);
	assert_int_equal(b.retry_after, RETRY_AFTER);
	assert_int_equal(json_integer_value(json_object_get(b.body, "errorCode")), 429002);
	run_until(f, &noop_done, 1);
	ops = doc_list(f, STORE_OPERATION, "");
	assert_int_equal(json_array_size(ops), 0);
	json_decref(ops);
	/* Room again: accepted. */
	register_device(f, "second", KEY1, NULL, &b);
	assert_int_equal(b.status, 202);
	snprintf(op, sizeof op, "%s", str_at(b.body, "operationId", NULL));
	poll_until_done(f, "second", op, &b);
	answer_clear(&a);
	answer_clear(&b);
}

/* 503 first: the call is retried after webhook_retry_ms and succeeds. */
static void test_webhook_retry_then_assigned(void **state)
{
	struct fixture *f = *state;
	put_custom(f, "retried", f->web.port);
	hook_answer(f, 0, 503, "{}");
	hook_answer(f, 1, 200, "{\"iotHubHostName\":\"" HUB1 "\"}");
	struct answer a = {0};
	char op[64];
	register_to_end(f, "retried", KEY1, NULL, &a, op);
	assert_str(str_at(a.body, "registrationState", "status", NULL), "assigned");
	assert_str(str_at(a.body, "registrationState", "assignedHub", NULL), HUB1);
	assert_int_equal(f->web.requests, 2);
	/* Without a webhook initialTwin the enrollment's applies. */
	json_t *tw = twin_read(f, HUB1, "retried");
	assert_str(str_at(tw, "tags", "from", NULL), "enrollment");
	json_decref(tw);
	json_t *log = doc_list(f, STORE_WEBHOOK_CALL, "retried/");
	assert_int_equal(json_array_size(log), 2);
	json_t *e0 = json_array_get(log, 0), *e1 = json_array_get(log, 1);
	assert_int_equal(json_integer_value(json_object_get(e0, "status")), 503);
	assert_int_equal(json_integer_value(json_object_get(e0, "attempt")), 1);
	assert_true(strncmp(str_at(e0, "outcome", NULL), "retry in 20 ms", 14) == 0);
	assert_int_equal(json_integer_value(json_object_get(e1, "status")), 200);
	assert_int_equal(json_integer_value(json_object_get(e1, "attempt")), 2);
	json_decref(log);
	answer_clear(&a);
}

/* ---- 2. failures -------------------------------------------------------------------- */

static void test_webhook_failures(void **state)
{
	struct fixture *f = *state;
	static const struct {
		int status;
		const char *body;
		int code;
		const char *want;
	} cases[] = {
	    {400, "{\"error\":\"bad\"}", 400207, "Custom allocation failed with status code: 400"},
	    {401, "{}", 400209, "401 Unauthorized"},
	    {200, "{}", 400208, "did not specify iotHubHostName"},
	    {200, "{\"iotHubHostName\":null}", 400208, "did not specify iotHubHostName"},
	    {200, "not json", 400207, "invalid JSON"},
	    {200, "[\"" HUB1 "\"]", 400207, "not an object"},
	    {200, "{\"iotHubHostName\":\"" GONE "\"}", 400207,
	     "'" GONE "', which is not one of the linked hubs: " HUB1 ", " HUB2},
	    {200, "{\"iotHubHostName\":\"" HUB1 "\",\"initialTwin\":{\"tags\":1}}", 400207, "tags"},
	    {500, "{}", 400207,
	     "failed after 2 attempts: Custom allocation webhook answered with "
	     "status code 500"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char regid[32], op[64];
		snprintf(regid, sizeof regid, "fail-%zu", i);
		put_custom(f, regid, f->web.port);
		hook_answer(f, 0, cases[i].status, cases[i].body);
		int before = f->web.requests;
		struct answer a = {0};
		register_to_end(f, regid, KEY1, NULL, &a, op);
		assert_failed(f, regid, op, &a, cases[i].code, cases[i].want);
		assert_no_device(f, regid);
		/* Only 5xx (and 429) are retried. */
		assert_int_equal(f->web.requests - before, cases[i].status == 500 ? 2 : 1);
		answer_clear(&a);
	}
}

static void test_webhook_unreachable(void **state)
{
	struct fixture *f = *state;
	put_custom(f, "nobody-home", web_closed_port());
	struct answer a = {0};
	char op[64];
	register_to_end(f, "nobody-home", KEY1, NULL, &a, op);
	assert_failed(f, "nobody-home", op, &a, 400207,
	              "Custom allocation failed after 2 attempts: Custom allocation webhook could "
	              "not be called");
	assert_no_device(f, "nobody-home");
	json_t *log = doc_list(f, STORE_WEBHOOK_CALL, "nobody-home/");
	assert_int_equal(json_array_size(log), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *e = json_array_get(log, i);
		assert_int_equal(json_integer_value(json_object_get(e, "status")), 0);
		assert_int_equal(json_integer_value(json_object_get(e, "attempt")), (int)i + 1);
		assert_non_null(str_at(e, "error", NULL));
	}
	json_decref(log);
	answer_clear(&a);
}

/* Deletes a registration's webhook call records in a store job. */
struct del_calls_job {
	const char *regid;
	int rc;
	int done;
};

static int del_calls_work(void *arg, struct store_txn *t)
{
	struct del_calls_job *j = arg;
	return dps__calls_delete(t, DPS_NAME, j->regid);
}

static void del_calls_done(void *arg, int rc)
{
	struct del_calls_job *j = arg;
	j->rc = rc;
	j->done++;
}

/* Runs one sweep of the call log by age to its end. */
static void sweep_now(struct fixture *f)
{
	dps__calls_sweep(f->d);
	uv_timer_start(&f->guard, on_guard, 10000, 0);
	while (f->d->calls_sweeping)
		uv_run(&f->loop, UV_RUN_ONCE);
	uv_timer_stop(&f->guard);
}

/* The call log is bounded: per registration (the oldest records go), by age
 * (the sweep removes what is due, both keys of each record) and with the
 * registration (dps__calls_delete). */
static void test_webhook_log_bounded(void **state)
{
	struct fixture *f = *state;
	f->d->webhook_log_keep = 3;
	put_custom(f, "chatty", f->web.port);
	put_custom(f, "quiet", f->web.port);
	hook_answer(f, 0, 503, "{}"); /* every call: retried, then failed */
	for (int i = 0; i < 3; i++) {
		struct answer a = {0};
		char op[64];
		register_to_end(f, "chatty", KEY1, NULL, &a, op);
		answer_clear(&a);
	}
	struct answer a = {0};
	char op[64];
	register_to_end(f, "quiet", KEY1, NULL, &a, op);
	answer_clear(&a);
	/* 6 calls for chatty, 3 kept: the newest (attempt 2, 1, 2) */
	json_t *log = doc_list(f, STORE_WEBHOOK_CALL, "chatty/");
	assert_int_equal(json_array_size(log), 3);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(log, 2), "attempt")), 2);
	json_decref(log);
	log = doc_list(f, STORE_WEBHOOK_CALL, "quiet/");
	assert_int_equal(json_array_size(log), 2);
	json_decref(log);
	log = doc_list(f, STORE_WEBHOOK_CALL_TIME, "");
	assert_int_equal(json_array_size(log), 5); /* no time key left behind */
	json_decref(log);

	/* With the registration: quiet's records go, chatty's stay. */
	struct del_calls_job dj = {"quiet", -99, 0};
	store_submit(f->store, del_calls_work, del_calls_done, &dj);
	run_until(f, &dj.done, 1);
	assert_int_equal(dj.rc, 0);
	log = doc_list(f, STORE_WEBHOOK_CALL, "quiet/");
	assert_int_equal(json_array_size(log), 0);
	json_decref(log);
	log = doc_list(f, STORE_WEBHOOK_CALL_TIME, "");
	assert_int_equal(json_array_size(log), 3);
	json_decref(log);

	/* By age: a sweep with a day's retention keeps them... */
	f->d->webhook_log_age_ms = 86400000;
	sweep_now(f);
	log = doc_list(f, STORE_WEBHOOK_CALL, "chatty/");
	assert_int_equal(json_array_size(log), 3);
	json_decref(log);
	/* ...and with none, removes every one, both keys. */
	f->d->webhook_log_age_ms = 0;
	sweep_now(f);
	log = doc_list(f, STORE_WEBHOOK_CALL, "chatty/");
	assert_int_equal(json_array_size(log), 0);
	json_decref(log);
	log = doc_list(f, STORE_WEBHOOK_CALL_TIME, "");
	assert_int_equal(json_array_size(log), 0);
	json_decref(log);
}

/* The enrollment names a hub that was linked when it was written but is not
 * linked to this DPS. */
static void test_static_hub_not_linked(void **state)
{
	struct fixture *f = *state;
	json_decref(put_enrollment(f, ENROLLMENT_INDIVIDUAL, "stranded",
	                           "{" SYMKEY_ATT ",\"allocationPolicy\":\"static\","
	                           "\"iotHubHostName\":\"" GONE "\"}"));
	struct answer a = {0};
	char op[64];
	register_to_end(f, "stranded", KEY1, NULL, &a, op);
	assert_failed(f, "stranded", op, &a, 500000, "no linked hub is available");
	assert_no_device(f, "stranded");
	answer_clear(&a);
}

static void test_poll_unknown_operation(void **state)
{
	struct fixture *f = *state;
	struct answer a = {0};
	poll_once(f, "dev-x", "5.0000000000000001.no-such-operation", &a);
	assert_int_equal(a.status, 404);
	assert_int_equal(json_integer_value(json_object_get(a.body, "errorCode")), 404204);
	assert_non_null(str_at(a.body, "message", NULL));
	assert_non_null(str_at(a.body, "trackingId", NULL));

	/* A finished registration: only its own operation id finds it. */
	json_decref(put_enrollment(f, ENROLLMENT_INDIVIDUAL, "dev-x",
	                           "{" SYMKEY_ATT ",\"iotHubs\":[\"" HUB1 "\"]}"));
	char op[64];
	register_to_end(f, "dev-x", KEY1, NULL, &a, op);
	poll_once(f, "dev-x", "5.0000000000000001.no-such-operation", &a);
	assert_int_equal(a.status, 404);
	assert_int_equal(json_integer_value(json_object_get(a.body, "errorCode")), 404204);
	poll_once(f, "dev-y", op, &a);
	assert_int_equal(a.status, 404);
	poll_once(f, "dev-x", op, &a);
	assert_int_equal(a.status, 200);
	answer_clear(&a);
}

static void test_disabled_enrollment(void **state)
{
	struct fixture *f = *state;
	json_decref(put_enrollment(f, ENROLLMENT_INDIVIDUAL, "off-1",
	                           "{" SYMKEY_ATT ",\"provisioningStatus\":\"disabled\"}"));
	struct answer a = {0};
	register_device(f, "off-1", KEY1, "{\"x\":1}", &a);
	assert_int_equal(a.status, 200);
	assert_int_equal(a.retry_after, 0);
	assert_str(str_at(a.body, "status", NULL), "disabled");
	assert_str(str_at(a.body, "operationId", NULL), "");
	json_t *rs = json_object_get(a.body, "registrationState");
	assert_str(str_at(rs, "registrationId", NULL), "off-1");
	assert_str(str_at(rs, "status", NULL), "disabled");
	assert_int_equal(json_integer_value(json_object_get(rs, "errorCode")), 401001);
	/* Nothing stored, nothing in flight. */
	doc_write(f, STORE_OPERATION, "no-such-operation", NULL); /* any job still queued ran */
	json_t *ops = doc_list(f, STORE_OPERATION, "");
	assert_int_equal(json_array_size(ops), 0);
	json_decref(ops);
	json_t *st = doc_read(f, STORE_REGISTRATION, "off-1");
	assert_null(st);
	assert_int_equal(f->d->ops.count, 0);
	assert_no_device(f, "off-1");
	answer_clear(&a);
}

/* ---- 3. resume ------------------------------------------------------------------------ */

#define LEFT_OP "5.00000000000000ff.1b4e28ba-2fa1-11d2-883f-0016d3cca427"

/* Two DPSes resuming the same left record at once (a node restarting while
 * another takes its operations over): the record is claimed by exactly one,
 * and only that one runs the operation; the record then names the claimer
 * and a new lease token. */
static void test_resume_claimed_once(void **state)
{
	struct fixture *f = *state;
	json_decref(put_enrollment(f, ENROLLMENT_INDIVIDUAL, "left-2",
	                           "{" SYMKEY_ATT ",\"allocationPolicy\":\"static\","
	                           "\"iotHubs\":[\"" HUB2 "\"]}"));
	assert_int_equal(doc_write(f, STORE_OPERATION, LEFT_OP,
	                           "{\"operationId\":\"" LEFT_OP "\",\"registrationId\":\"left-2\","
	                           "\"status\":\"assigning\",\"enrollment\":{\"kind\":"
	                           "\"individual\",\"id\":\"left-2\"},\"keyIndex\":0,"
	                           "\"createdDateTimeUtc\":\"2026-01-01T00:00:00.000Z\"}"),
	                 0);
	dps_shutdown(f->d);
	dps_start(f, false);
	struct dps *a = f->d;
	dps_start(f, false);
	struct dps *b = f->d;
	dps_resume(a);
	dps_resume(b);
	while (a->resuming || b->resuming)
		uv_run(&f->loop, UV_RUN_ONCE);
	size_t running = a->ops.count + b->ops.count;
	struct dps *runner = a->ops.count ? a : b;
	f->d = runner;
	dps_shutdown(runner == a ? b : a); /* teardown stops f->d */
	assert_int_equal(running, 1);
	struct answer ans = {0};
	poll_until_done(f, "left-2", LEFT_OP, &ans);
	assert_str(str_at(json_object_get(ans.body, "registrationState"), "status", NULL),
	           "assigned");
	answer_clear(&ans);
}

/* A record exactly as dps__register writes it (op_doc in dps_ops.c), left
 * "assigning" by a run that stopped before the assignment. */
static void test_resume_left_record(void **state)
{
	struct fixture *f = *state;
	json_decref(put_enrollment(f, ENROLLMENT_INDIVIDUAL, "left-1",
	                           "{" SYMKEY_ATT ",\"allocationPolicy\":\"static\","
	                           "\"iotHubs\":[\"" HUB2 "\"],\"initialTwin\":{\"tags\":"
	                           "{\"t\":1},\"properties\":{\"desired\":{}}}}"));
	assert_int_equal(doc_write(f, STORE_OPERATION, LEFT_OP,
	                           "{\"operationId\":\"" LEFT_OP "\",\"registrationId\":\"left-1\","
	                           "\"status\":\"assigning\",\"enrollment\":{\"kind\":"
	                           "\"individual\",\"id\":\"left-1\"},\"keyIndex\":1,"
	                           "\"createdDateTimeUtc\":\"2026-01-01T00:00:00.000Z\","
	                           "\"payload\":{\"p\":true}}"),
	                 0);
	dps_restart(f);
	/* Resumed: in flight again, so a poll says assigning until it ends. */
	assert_int_equal(f->d->ops.count, 1);
	struct answer a = {0};
	poll_once(f, "left-1", LEFT_OP, &a);
	assert_int_equal(a.status, 202);
	poll_until_done(f, "left-1", LEFT_OP, &a);
	json_t *rs = json_object_get(a.body, "registrationState");
	assert_str(str_at(rs, "status", NULL), "assigned");
	assert_str(str_at(rs, "assignedHub", NULL), HUB2);
	assert_str(str_at(rs, "substatus", NULL), "initialAssignment");
	json_t *st = doc_read(f, STORE_REGISTRATION, "left-1");
	assert_str(str_at(st, "_operationId", NULL), LEFT_OP);
	json_decref(st);
	/* keyIndex 1: the device had proved the secondary key. */
	json_t *dev = device_read(f, HUB2, "left-1");
	assert_non_null(dev);
	assert_str(str_at(dev, "authentication", "symmetricKey", "primaryKey", NULL), KEY2);
	json_decref(dev);
	json_t *tw = twin_read(f, HUB2, "left-1");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(tw, "tags"), "t")), 1);
	json_decref(tw);
	assert_int_equal(f->d->ops.count, 0);
	answer_clear(&a);
}

/* Records that cannot be carried on. One whose enrollment was deleted, or
 * that does not name its enrollment, ends failed for its device (keeping
 * where an earlier registration put the device); one without its
 * operationId is resumed under the id it is stored by; one that names no
 * registration (or is not JSON) is removed. None is left "assigning". */
static void test_resume_unusable_records(void **state)
{
	struct fixture *f = *state;
	/* orphan-1 was assigned before; its re-registration was in flight when
	 * the server stopped, and its enrollment was deleted meanwhile. */
	struct answer a = {0};
	json_t *first = json_incref(register_static(f, "orphan-1", HUB1, true, true, &a));
	assert_int_equal(doc_write(f, STORE_ENROLLMENT, "orphan-1", NULL), 0);
	assert_int_equal(doc_write(f, STORE_OPERATION, "5.0000000000000001.a",
	                           "{\"operationId\":\"5.0000000000000001.a\","
	                           "\"registrationId\":\"orphan-1\",\"status\":\"assigning\","
	                           "\"enrollment\":{\"kind\":\"individual\",\"id\":\"orphan-1\"},"
	                           "\"keyIndex\":0,\"createdDateTimeUtc\":"
	                           "\"2026-01-01T00:00:00.000Z\"}"),
	                 0);
	assert_int_equal(doc_write(f, STORE_OPERATION, "5.0000000000000002.b",
	                           "{\"operationId\":\"5.0000000000000002.b\","
	                           "\"registrationId\":\"orphan-2\",\"status\":\"assigning\","
	                           "\"enrollment\":{\"id\":\"orphan-2\"},\"keyIndex\":0}"),
	                 0);
	json_decref(put_enrollment(f, ENROLLMENT_INDIVIDUAL, "orphan-3",
	                           "{" SYMKEY_ATT ",\"iotHubs\":[\"" HUB1 "\"]}"));
	assert_int_equal(doc_write(f, STORE_OPERATION, "5.0000000000000003.c",
	                           "{\"registrationId\":\"orphan-3\",\"status\":\"assigning\","
	                           "\"enrollment\":{\"kind\":\"individual\",\"id\":\"orphan-3\"},"
	                           "\"keyIndex\":0}"),
	                 0);
	assert_int_equal(doc_write(f, STORE_OPERATION, "5.0000000000000004.d",
	                           "{\"operationId\":\"5.0000000000000004.d\",\"status\":"
	                           "\"assigning\",\"enrollment\":{\"kind\":\"individual\","
	                           "\"id\":\"orphan-3\"}}"),
	                 0);
	assert_int_equal(doc_write(f, STORE_OPERATION, "5.0000000000000005.e", "not json"), 0);
	dps_restart(f);

	poll_until_done(f, "orphan-1", "5.0000000000000001.a", &a);
	assert_failed(f, "orphan-1", "5.0000000000000001.a", &a, 500000,
	              "the enrollment was deleted");
	json_t *rs = json_object_get(a.body, "registrationState");
	assert_str(str_at(rs, "assignedHub", NULL), HUB1);
	assert_str(str_at(rs, "deviceId", NULL), "orphan-1");
	assert_str(str_at(rs, "createdDateTimeUtc", NULL),
	           str_at(first, "createdDateTimeUtc", NULL));
	json_decref(first);

	poll_until_done(f, "orphan-2", "5.0000000000000002.b", &a);
	assert_failed(f, "orphan-2", "5.0000000000000002.b", &a, 500000,
	              "operation record is unusable");
	assert_no_device(f, "orphan-2");

	poll_until_done(f, "orphan-3", "5.0000000000000003.c", &a);
	assert_str(str_at(a.body, "registrationState", "status", NULL), "assigned");
	assert_str(str_at(a.body, "registrationState", "assignedHub", NULL), HUB1);

	doc_write(f, STORE_OPERATION, "no-such-operation", NULL); /* the removals ran */
	json_t *ops = doc_list(f, STORE_OPERATION, "");
	assert_int_equal(json_array_size(ops), 0);
	json_decref(ops);
	assert_int_equal(f->d->ops.count, 0);

	/* The failure kept where orphan-1 is: a new enrollment on HUB2
	 * migrates it from HUB1 rather than leaving a second identity. */
	rs = register_static(f, "orphan-1", HUB2, true, true, &a);
	assert_str(str_at(rs, "substatus", NULL), "deviceDataMigrated");
	json_t *old = device_read(f, HUB1, "orphan-1");
	assert_null(old);
	answer_clear(&a);
}

/* A real shutdown with the webhook call in flight: the operation stays
 * "assigning" in the store and the next start carries it to the end. */
static void test_resume_after_shutdown(void **state)
{
	struct fixture *f = *state;
	put_custom(f, "restarted", f->web.port);
	f->web.hold = true;
	struct answer a = {0};
	register_device(f, "restarted", KEY1, "{\"boot\":1}", &a);
	assert_int_equal(a.status, 202);
	char op[64];
	snprintf(op, sizeof op, "%s", str_at(a.body, "operationId", NULL));
	run_until(f, &f->web.requests, 1);

	dps_shutdown(f->d);
	doc_write(f, STORE_OPERATION, "no-such-operation", NULL);
	json_t *rec = doc_read(f, STORE_OPERATION, op);
	assert_non_null(rec);
	assert_str(str_at(rec, "status", NULL), "assigning");
	json_decref(rec);
	json_t *st = doc_read(f, STORE_REGISTRATION, "restarted");
	assert_null(st);

	web_release(&f->web); /* the next call is answered at once */
	hook_answer(f, 0, 200, "{\"iotHubHostName\":\"" HUB2 "\"}");
	dps_start(f, true);
	poll_until_done(f, "restarted", op, &a);
	assert_str(str_at(a.body, "registrationState", "status", NULL), "assigned");
	assert_str(str_at(a.body, "registrationState", "assignedHub", NULL), HUB2);
	assert_int_equal(f->web.requests, 2);
	/* The resumed call carried the stored payload. */
	json_t *req = J(f->web.body.data);
	assert_int_equal(
	    json_integer_value(json_object_get(
	        json_object_get(json_object_get(req, "deviceRuntimeContext"), "payload"), "boot")),
	    1);
	json_decref(req);
	json_t *dev = device_read(f, HUB2, "restarted");
	assert_non_null(dev);
	json_decref(dev);
	answer_clear(&a);
}

/* ---- 4. re-registration --------------------------------------------------------------- */

/* First assignment to HUB1, then device data changes on HUB1. Returns the
 * first registration state (caller owns). */
static json_t *first_assignment(struct fixture *f, const char *regid, bool update, bool migrate)
{
	struct answer a = {0};
	json_t *rs = json_incref(register_static(f, regid, HUB1, update, migrate, &a));
	assert_str(str_at(rs, "assignedHub", NULL), HUB1);
	answer_clear(&a);
	twin_edit(f, HUB1, regid, "{\"site\":\"moved-by-service\"}", "{\"temp\":21}");
	return rs;
}

/* A registration after the first one: assigned to hub with substatus, under
 * the same device id, created when the first registration was. */
static void assert_assigned_again(const json_t *rs, const json_t *first, const char *hub,
                                  const char *regid, const char *substatus)
{
	assert_str(str_at(rs, "status", NULL), "assigned");
	assert_str(str_at(rs, "assignedHub", NULL), hub);
	assert_str(str_at(rs, "deviceId", NULL), regid);
	assert_str(str_at(rs, "substatus", NULL), substatus);
	assert_str(str_at(rs, "createdDateTimeUtc", NULL),
	           str_at(first, "createdDateTimeUtc", NULL));
}

/* The twin on hub holds the device data first_assignment changed. */
static void assert_device_data_kept(struct fixture *f, const char *hub, const char *regid)
{
	json_t *tw = twin_read(f, hub, regid);
	assert_str(str_at(tw, "tags", "site", NULL), "moved-by-service");
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(tw, "reported"), "temp")), 21);
	json_decref(tw);
}

static void test_reprovision_migrate(void **state)
{
	struct fixture *f = *state;
	json_t *first = first_assignment(f, "mover", true, true);
	struct answer a = {0};
	json_t *rs = register_static(f, "mover", HUB2, true, true, &a);
	assert_assigned_again(rs, first, HUB2, "mover", "deviceDataMigrated");
	assert_string_not_equal(str_at(rs, "etag", NULL), str_at(first, "etag", NULL));
	/* The twin moved with the device; the old identity is gone. */
	assert_device_data_kept(f, HUB2, "mover");
	json_t *old = device_read(f, HUB1, "mover");
	assert_null(old);
	json_t *dev = device_read(f, HUB2, "mover");
	assert_non_null(dev);
	json_decref(dev);

	/* Back to the first hub: reprovisioned to the initial assignment. */
	rs = register_static(f, "mover", HUB1, true, true, &a);
	assert_str(str_at(rs, "assignedHub", NULL), HUB1);
	assert_str(str_at(rs, "substatus", NULL), "reprovisionedToInitialAssignment");
	json_t *tw = twin_read(f, HUB1, "mover");
	assert_str(str_at(tw, "tags", "site", NULL), "moved-by-service");
	json_decref(tw);
	old = device_read(f, HUB2, "mover");
	assert_null(old);
	json_decref(first);
	answer_clear(&a);
}

static void test_reprovision_reset(void **state)
{
	struct fixture *f = *state;
	json_decref(first_assignment(f, "resetter", true, false));
	struct answer a = {0};
	json_t *rs = register_static(f, "resetter", HUB2, true, false, &a);
	assert_str(str_at(rs, "assignedHub", NULL), HUB2);
	assert_str(str_at(rs, "substatus", NULL), "deviceDataReset");
	/* The initial twin, not the device data of HUB1. */
	json_t *tw = twin_read(f, HUB2, "resetter");
	assert_str(str_at(tw, "tags", "site", NULL), "initial");
	assert_int_equal(json_object_size(json_object_get(tw, "reported")), 0);
	json_decref(tw);
	json_t *old = device_read(f, HUB1, "resetter");
	assert_null(old);
	answer_clear(&a);
}

static void test_reprovision_never(void **state)
{
	struct fixture *f = *state;
	json_t *first = first_assignment(f, "stayer", false, true);
	struct answer a = {0};
	json_t *rs = register_static(f, "stayer", HUB2, false, true, &a);
	assert_assigned_again(rs, first, HUB1, "stayer", "initialAssignment");
	/* The device and its data stay where they were. */
	assert_device_data_kept(f, HUB1, "stayer");
	json_t *other = device_read(f, HUB2, "stayer");
	assert_null(other);
	json_decref(first);
	answer_clear(&a);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	log_min_level = LOG_ERROR; /* the operations log every step at info */
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_static_assignment, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_group_hashed_secondary_key, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_webhook_assignment, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_webhook_retry_then_assigned, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_webhook_failures, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_webhook_unreachable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_webhook_log_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_static_hub_not_linked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_poll_unknown_operation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_disabled_enrollment, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resume_left_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resume_claimed_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resume_unusable_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resume_after_shutdown, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reprovision_migrate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reprovision_reset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reprovision_never, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_register_overload, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
