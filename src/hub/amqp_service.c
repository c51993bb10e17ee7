/* What the service SDK's Client does over AMQP (amqp.md §4), and the
 * redirect of the IoT Hub connection string sample (§3a):
 *
 * - a C2D send on /messages/devicebound goes into the device's queue
 *   (hub_c2d_enqueue) and is accepted after the commit, or rejected with
 *   the condition the SDK maps (amqp:not-found: no such device;
 *   amqp:resource-limit-exceeded: the queue is full). The sender's credit
 *   tops up as its messages are settled, so it never has more than
 *   AMQP_C2D_CREDIT waiting for the store.
 * - the feedback receiver on /messages/serviceBound/feedback gets the hub's
 *   feedback records in batches (one JSON array per message); a batch is
 *   deleted when the client accepts (or rejects) it, sent again when it
 *   releases it or the link closes first. Receivers compete, as on a
 *   queue: a batch waiting for its disposition is claimed, and the other
 *   receivers of this node read around the claims (a receiver on another
 *   node may still get the same records).
 * - a receiver on .../messages/events... is answered, once the client gave
 *   it credit, with amqp:link:redirect to the hub's own host name: the
 *   Event Hub-compatible endpoint (decisions.md 19). */
#include <jansson.h>
#include <proton/condition.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "hub/amqp_internal.h"
#include "store/store.h"

#define FEEDBACK_BATCH 100
#define FEEDBACK_RETRY_MS 1000

static void reject(pn_delivery_t *d, const char *cond, const char *text)
{
	pn_condition_t *c = pn_disposition_condition(pn_delivery_local(d));
	pn_condition_set_name(c, cond);
	pn_condition_set_description(c, text);
	pn_delivery_update(d, PN_REJECTED);
	pn_delivery_settle(d);
}

/* ---- cloud-to-device sends ---- */

struct c2d_job {
	struct amqp_link *lk;
	pn_delivery_t *d;
};

static void c2d_done(void *arg, int rc, const char *device_id, const json_t *msg, int64_t seq)
{
	struct c2d_job *j = arg;
	struct amqp_link *lk = j->lk;
	if (!lk->closed) {
		char text[200];
		if (rc == 0)
			lk->ac->hub->amqp.c2d_accepted++;
		else
			lk->ac->hub->amqp.c2d_refused++;
		if (rc == 0) {
			pn_delivery_update(j->d, PN_ACCEPTED);
			pn_delivery_settle(j->d);
		} else if (rc == FH_ENOTFOUND) {
			snprintf(text, sizeof text, "Device not found: %s", device_id);
			reject(j->d, "amqp:not-found", text);
		} else if (rc == FH_ETOOBIG) {
			snprintf(text, sizeof text,
				 "the device %s has %d messages queued already: Azure's limit",
				 device_id, C2D_MAX_QUEUE);
			reject(j->d, "amqp:resource-limit-exceeded", text);
		} else {
			reject(j->d, "amqp:internal-error", store_write_error(rc));
		}
		log_at(LOG_DEBUG, "amqp %s: cloud-to-device message for %s: %s", lk->ac->peer,
		       device_id, rc == 0 ? "queued" : fh_strerror(rc));
		pn_link_flow(lk->l, 1);
		amqp__run(lk->ac);
	}
	free(j);
	amqp__link_unref(lk);
}

/* The text of a scalar AMQP value (an application property), or NULL. */
static const char *scalar_text(pn_data_t *p, char *out, size_t outlen)
{
	switch (pn_data_type(p)) {
	case PN_STRING:
	case PN_SYMBOL: {
		pn_bytes_t s = pn_data_type(p) == PN_STRING ? pn_data_get_string(p)
							    : pn_data_get_symbol(p);
		if (s.size >= outlen)
			return NULL;
		memcpy(out, s.start, s.size);
		out[s.size] = 0;
		return out;
	}
	case PN_BOOL:
		return strcpy(out, pn_data_get_bool(p) ? "true" : "false");
	case PN_INT:
		snprintf(out, outlen, "%d", pn_data_get_int(p));
		return out;
	case PN_UINT:
		snprintf(out, outlen, "%u", pn_data_get_uint(p));
		return out;
	case PN_LONG:
		snprintf(out, outlen, "%lld", (long long)pn_data_get_long(p));
		return out;
	case PN_ULONG:
		snprintf(out, outlen, "%llu", (unsigned long long)pn_data_get_ulong(p));
		return out;
	default:
		return NULL;
	}
}

/* The application properties as an object of strings, iothub-ack apart. */
static json_t *app_properties(pn_message_t *m, char *ack, size_t acklen)
{
	json_t *o = json_object();
	pn_data_t *p = pn_message_properties(m);
	pn_data_rewind(p);
	if (!pn_data_next(p) || pn_data_type(p) != PN_MAP)
		return o;
	pn_data_enter(p);
	char key[256], val[1024];
	while (pn_data_next(p)) {
		const char *k = scalar_text(p, key, sizeof key);
		if (!pn_data_next(p))
			break;
		const char *v = scalar_text(p, val, sizeof val);
		if (!k || !v)
			continue;
		if (strcmp(k, "iothub-ack") == 0)
			snprintf(ack, acklen, "%s", v);
		else if (json_object_size(o) < 128)
			json_object_set_new(o, k, json_string(v));
	}
	pn_data_exit(p);
	return o;
}

void amqp__c2d_delivery(struct amqp_link *lk, pn_delivery_t *d, pn_message_t *m, size_t size)
{
	struct hub *h = lk->ac->hub;
	/* to: /devices/<url-encoded id>/messages/devicebound */
	const char *to = pn_message_get_address(m);
	const char *suffix = "/messages/devicebound";
	size_t tl = to ? strlen(to) : 0, sl = strlen(suffix);
	char id[REGISTRY_ID_MAX + 1];
	size_t idlen = 0;
	if (!to || tl <= 9 + sl || strncmp(to, "/devices/", 9) != 0 ||
	    strcmp(to + tl - sl, suffix) != 0 || tl - 9 - sl > 3 * REGISTRY_ID_MAX ||
	    pct_decode(to + 9, tl - 9 - sl, id, &idlen) != 0 || idlen == 0 ||
	    idlen > REGISTRY_ID_MAX) {
		reject(d, "com.microsoft:argument-error",
		       "the message's to must be /devices/<device id>/messages/devicebound");
		return;
	}
	id[idlen] = 0;
	pn_data_t *b = pn_message_body(m);
	pn_data_rewind(b);
	pn_bytes_t body = {0, NULL};
	if (pn_data_next(b)) {
		if (pn_data_type(b) == PN_BINARY)
			body = pn_data_get_binary(b);
		else if (pn_data_type(b) == PN_STRING)
			body = pn_data_get_string(b);
	}
	if (body.size > C2D_MAX_BODY) {
		reject(d, "amqp:link:message-size-exceeded",
		       "a cloud-to-device message is at most 64 KB");
		return;
	}
	char ack[32] = "";
	json_t *props = app_properties(m, ack, sizeof ack);
	if (ack[0] && strcmp(ack, "none") != 0 && strcmp(ack, "positive") != 0 &&
	    strcmp(ack, "negative") != 0 && strcmp(ack, "full") != 0) {
		json_decref(props);
		reject(d, "com.microsoft:argument-error",
		       "iothub-ack must be none, positive, negative or full");
		return;
	}
	int64_t now = clock_now_ms(), expiry = pn_message_get_expiry_time(m);
	if (expiry <= 0)
		expiry = now + C2D_TTL_DEFAULT_S * 1000LL;
	else if (expiry > now + C2D_TTL_MAX_S * 1000LL)
		expiry = now + C2D_TTL_MAX_S * 1000LL;
	json_t *msg = hub_c2d_message(id, ack[0] ? ack : NULL, expiry);
	char text[256];
	amqp__msgid_text(pn_message_get_id(m), text, sizeof text);
	if (!text[0])
		crypto_uuid(text);
	json_object_set_new(msg, "messageId", json_string(text));
	amqp__msgid_text(pn_message_get_correlation_id(m), text, sizeof text);
	if (text[0])
		json_object_set_new(msg, "correlationId", json_string(text));
	pn_bytes_t user = pn_message_get_user_id(m);
	if (user.size && user.size < 256 && utf8_valid(user.start, user.size))
		json_object_set_new(msg, "userId", json_stringn(user.start, user.size));
	const char *ct = pn_message_get_content_type(m), *ce = pn_message_get_content_encoding(m);
	if (ct && strlen(ct) <= 128)
		json_object_set_new(msg, "contentType", json_string(ct));
	if (ce && strlen(ce) <= 128)
		json_object_set_new(msg, "contentEncoding", json_string(ce));
	json_object_set_new(msg, "properties", props);
	uint8_t *copy = xmalloc(body.size + 1);
	if (body.size)
		memcpy(copy, body.start, body.size);
	struct c2d_job *j = xcalloc(1, sizeof *j);
	j->lk = lk;
	j->d = d;
	amqp__link_ref(lk);
	hub_c2d_enqueue(h, id, msg, copy, body.size, c2d_done, j);
}

/* ---- feedback ---- */

#define FB_CLAIMS_MAX 64 /* batches a hub's receivers here may hold at once */

struct fb_job {
	struct amqp_link *lk;
	char hub[256];
	int64_t first, last;
	unsigned n;
	bool ended;      /* a claimed record came after the batch began */
	unsigned nclaims;
	int64_t claims[FB_CLAIMS_MAX][2]; /* the other receivers' batches, as read began */
	unsigned claimed; /* how many records they hold */
	struct buf json; /* the batch: a JSON array */
};

void amqp__feedback_attach(struct amqp_link *lk)
{
	struct hub *h = lk->ac->hub;
	lk->reader_next = h->amqp_feedback;
	h->amqp_feedback = lk;
}

void amqp__feedback_detach(struct amqp_link *lk)
{
	for (struct amqp_link **p = &lk->ac->hub->amqp_feedback; *p; p = &(*p)->reader_next)
		if (*p == lk) {
			*p = lk->reader_next;
			break;
		}
}

static bool fb_claimed(const struct fb_job *j, int64_t seq)
{
	for (unsigned i = 0; i < j->nclaims; i++)
		if (seq >= j->claims[i][0] && seq <= j->claims[i][1])
			return true;
	return false;
}

/* One contiguous run of unclaimed records, the first FEEDBACK_BATCH at
 * most: a batch is deleted by its range, which must hold no other
 * receiver's records. */
static int fb_each(void *arg, int64_t seq, const char *json)
{
	struct fb_job *j = arg;
	if (j->ended || j->n == FEEDBACK_BATCH)
		return 0;
	if (fb_claimed(j, seq)) {
		j->ended = j->n > 0;
		return 0;
	}
	buf_appendc(&j->json, j->n++ ? ',' : '[');
	buf_appends(&j->json, json);
	if (!j->first)
		j->first = seq;
	j->last = seq;
	return 0;
}

static int fb_read_work(void *arg, struct store_txn *t)
{
	struct fb_job *j = arg;
	return store_feedback_list(t, j->hub, 0, FEEDBACK_BATCH + j->claimed, fb_each, j);
}

static void fb_job_free(struct fb_job *j)
{
	struct amqp_link *lk = j->lk;
	buf_free(&j->json);
	free(j);
	amqp__link_unref(lk);
}

/* Whether another receiver here holds a batch that overlaps first..last
 * (claimed while this one read). */
static bool fb_overlaps(const struct amqp_link *lk, int64_t first, int64_t last)
{
	for (const struct amqp_link *o = lk->ac->hub->amqp_feedback; o; o = o->reader_next)
		if (o != lk && o->fb_pending && first <= o->fb_last && o->fb_first <= last)
			return true;
	return false;
}

static void fb_read_done(void *arg, int rc)
{
	struct fb_job *j = arg;
	struct amqp_link *lk = j->lk;
	lk->reading = false;
	if (!lk->closed && rc == 0 && j->n && fb_overlaps(lk, j->first, j->last)) {
		fb_job_free(j);
		amqp__feedback_pump(lk); /* read again around the new claim */
		return;
	}
	if (!lk->closed && rc == 0 && j->n) {
		buf_appendc(&j->json, ']');
		pn_message_t *m = pn_message();
		char uuid[37];
		crypto_uuid(uuid);
		pn_atom_t id = {.type = PN_STRING};
		id.u.as_bytes = pn_bytes(strlen(uuid), uuid);
		pn_message_set_id(m, id);
		pn_message_set_content_type(m, "application/vnd.microsoft.iothub.feedback.json");
		const char *host = lk->ac->hub->name;
		pn_message_set_user_id(m, pn_bytes(strlen(host), host));
		pn_message_set_inferred(m, true);
		pn_data_put_binary(pn_message_body(m), pn_bytes(j->json.len, j->json.data));
		if (amqp__send_message(lk, m)) {
			lk->fb_first = j->first;
			lk->fb_last = j->last;
			lk->fb_count = j->n;
			lk->fb_pending = true;
			lk->ac->hub->amqp.feedback_batches++;
		}
		pn_message_free(m);
		amqp__run(lk->ac);
	} else if (!lk->closed && rc != 0) {
		log_at(LOG_WARN, "amqp %s: reading feedback: %s", lk->ac->peer, fh_strerror(rc));
		lk->fb_retry_ms = clock_now_ms() + FEEDBACK_RETRY_MS;
	}
	fb_job_free(j);
}

void amqp__feedback_pump(struct amqp_link *lk)
{
	if (lk->closed || lk->fb_pending || lk->reading || pn_link_credit(lk->l) <= 0 ||
	    clock_now_ms() < lk->fb_retry_ms)
		return;
	struct fb_job *j = xcalloc(1, sizeof *j);
	for (const struct amqp_link *o = lk->ac->hub->amqp_feedback; o; o = o->reader_next) {
		if (o == lk || !o->fb_pending)
			continue;
		if (j->nclaims == FB_CLAIMS_MAX) {
			/* as many batches out as a job can skip: wait for one */
			free(j);
			lk->fb_retry_ms = clock_now_ms() + FEEDBACK_RETRY_MS;
			return;
		}
		j->claims[j->nclaims][0] = o->fb_first;
		j->claims[j->nclaims][1] = o->fb_last;
		j->nclaims++;
		j->claimed += o->fb_count;
	}
	j->lk = lk;
	snprintf(j->hub, sizeof j->hub, "%s", lk->ac->hub->name);
	buf_init(&j->json);
	lk->reading = true;
	amqp__link_ref(lk);
	store_read(lk->ac->hub->store, fb_read_work, fb_read_done, j);
}

static int fb_delete_work(void *arg, struct store_txn *t)
{
	struct fb_job *j = arg;
	return store_feedback_delete(t, j->hub, j->first, j->last);
}

static void fb_delete_done(void *arg, int rc)
{
	struct fb_job *j = arg;
	struct amqp_link *lk = j->lk;
	if (rc != 0)
		log_at(LOG_WARN, "amqp %s: deleting delivered feedback: %s", lk->ac->peer,
		       fh_strerror(rc));
	lk->fb_pending = false;
	if (!lk->closed) {
		amqp__feedback_pump(lk);
		amqp__run(lk->ac);
	}
	fb_job_free(j);
}

void amqp__feedback_settled(struct amqp_link *lk, pn_delivery_t *d)
{
	uint64_t state = pn_delivery_remote_state(d);
	if (!state && !pn_delivery_remote(d))
		return;
	pn_delivery_settle(d);
	if (!lk->fb_pending)
		return;
	if (state == PN_ACCEPTED || state == PN_REJECTED) {
		struct fb_job *j = xcalloc(1, sizeof *j);
		j->lk = lk;
		snprintf(j->hub, sizeof j->hub, "%s", lk->ac->hub->name);
		j->first = lk->fb_first;
		j->last = lk->fb_last;
		buf_init(&j->json);
		amqp__link_ref(lk);
		store_submit(lk->ac->hub->store, fb_delete_work, fb_delete_done, j);
	} else {
		/* released or modified: the same batch again, a little later */
		lk->fb_pending = false;
		lk->fb_retry_ms = clock_now_ms() + FEEDBACK_RETRY_MS;
	}
}

/* ---- the redirect ---- */

void amqp__redirect(struct amqp_link *lk)
{
	if (lk->redirected || lk->closed)
		return;
	lk->redirected = true;
	struct amqp_conn *ac = lk->ac;
	if (!amqp__authorized(ac, true, 0)) {
		amqp__link_fail(lk, "amqp:unauthorized-access",
				"authenticate first (SASL PLAIN with <policy>@sas.root.<hub> and a "
				"token, or a put-token on $cbs)");
		return;
	}
	const char *host = ac->hub->name;
	char entity[128], address[512], text[640];
	amqp__entity(ac->hub, entity, sizeof entity);
	snprintf(address, sizeof address, "amqps://%s:%d/%s/$management", host, ac->port,
		 entity);
	snprintf(text, sizeof text,
		 "the Event Hub-compatible endpoint of this hub is %s, Event Hub %s", host,
		 entity);
	pn_condition_t *c = pn_link_condition(lk->l);
	pn_condition_set_name(c, "amqp:link:redirect");
	pn_condition_set_description(c, text);
	pn_data_t *info = pn_condition_info(c);
	pn_data_put_map(info);
	pn_data_enter(info);
	pn_data_put_symbol(info, pn_bytes(8, "hostname"));
	pn_data_put_string(info, pn_bytes(strlen(host), host));
	pn_data_put_symbol(info, pn_bytes(12, "network-host"));
	pn_data_put_string(info, pn_bytes(strlen(host), host));
	pn_data_put_symbol(info, pn_bytes(4, "port"));
	pn_data_put_int(info, ac->port);
	pn_data_put_symbol(info, pn_bytes(7, "address"));
	pn_data_put_string(info, pn_bytes(strlen(address), address));
	pn_data_exit(info);
	log_at(LOG_DEBUG, "amqp %s: redirected to %s", ac->peer, address);
	amqp__link_close(lk);
}
