/* Registration operations (the state machine of dps.h).
 *
 *   register --> op record "assigning" committed --> 202 to the device
 *            --> choose: static | hashed | geoLatency | custom webhook
 *                 (429/5xx/timeout: retry after 1 s, 10 s, 19 s... up to
 *                  webhook_attempts, the device polling meanwhile)
 *            --> reprovisioning decision (core/allocation)
 *            --> remote hubs: REST calls (read old twin, create identity,
 *                set twin, delete old identity)
 *            --> one transaction: local identity + twin changes (a local
 *                hub the device leaves loses it, also for a remote target),
 *                the registration state (status, hub, device, payload) and
 *                the operation record removed
 *   a failure at any point stores the registration state "failed" with
 *   errorCode + errorMessage in one transaction likewise.
 *   When the store refuses that transaction (disk full, I/O error), the
 *   outcome is kept in memory and committed again every few seconds; the
 *   device keeps seeing "assigning" until it is durable, and never sees
 *   "assigned" before.
 *
 * The op record exists only while the operation is assigning; a finished
 * operation is answered from the registration state, which names its
 * operation (_operationId). On start-up every op record left is resumed;
 * one that cannot be (its enrollment deleted, or none named) ends failed
 * like any other, and one naming no registration is removed.
 *
 * An op in memory is shared by the maps, a store job, the webhook/REST
 * request and the retry timer: refs counts them; shutdown drops the maps'
 * share and stops the timer and requests, and the last unref frees. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/sas.h"
#include "base/x509.h"
#include "core/ca.h"
#include "core/cluster.h"
#include "core/registry.h"
#include "core/twin.h"
#include "internal.h"

#define WEBHOOK_MAX_RESPONSE (256 * 1024)
#define REMOTE_TIMEOUT_MS 10000
#define HUB_API_VERSION "2021-04-12"
#define HUB_CAS_MAX 100 /* CA certificates of a hub read for an identity */

enum remote_step { STEP_READ_TWIN, STEP_PUT_DEVICE, STEP_PUT_TWIN, STEP_DELETE_OLD, STEP_COMMIT };

struct op {
	struct dps *d;
	unsigned refs;
	bool live; /* in d->ops and d->ops_by_reg */
	char id[64];
	char regid[ENROLLMENT_ID_MAX + 1];
	struct dps_auth auth;
	json_t *payload; /* the device's, or NULL */
	char created[32];
	struct dps_reply *reply; /* waiting for the "assigning" commit */
	unsigned attempt;
	bool lease_waiting; /* the webhook call waits for this node's lease */
	uv_timer_t timer;
	bool timer_open;

	/* decided while assigning */
	json_t *prev; /* previous registration state, or NULL */
	char prev_hub[256];
	char initial_hub[256];
	struct dps_linked_hub *target;
	struct dps_linked_hub *old; /* prev hub, when linked and to be left */
	struct reprov_decision dec;
	char hub[256];
	char device_id[ENROLLMENT_ID_MAX + 1];
	char keys[2][96];
	uint8_t tpm_hub_key[32]; /* a TPM device's hub key (keys[0] is its base64) */
	json_t *initial_twin; /* for NEW/RESET */
	json_t *ret_payload;  /* the webhook's payload for the device */
	json_t *source_twin;  /* MIGRATE from a remote hub: its twin JSON */
	enum remote_step step;
	bool commit_local;    /* the outcome's transaction has local writes */
	bool access_changed;  /* the local target's identity got new credentials */
	unsigned commit_tries; /* refused by the store so far */

	const char *resume_error; /* a resumed op that cannot go on: why (static) */

	/* the outcome, written by the final job */
	json_t *state;
	int err_code;
	char err_msg[512];
};

static void op_unref(struct op *o)
{
	if (--o->refs)
		return;
	dps__auth_clear(&o->auth);
	json_decref(o->payload);
	json_decref(o->prev);
	json_decref(o->initial_twin);
	json_decref(o->ret_payload);
	json_decref(o->source_twin);
	json_decref(o->state);
	free(o);
}

static void op_close_timer(struct op *o);

static void op_forget(struct op *o)
{
	if (!o->live)
		return;
	o->live = false;
	o->d->nops--;
	op_close_timer(o);
	map_remove(&o->d->ops, o->id);
	if (map_get(&o->d->ops_by_reg, o->regid) == o)
		map_remove(&o->d->ops_by_reg, o->regid);
	op_unref(o);
}

static void reply_json(struct dps_reply *r, int status, json_t *body, unsigned retry_after)
{
	char *text = json_dumps(body, JSON_COMPACT);
	r->fn(r, status, text, retry_after);
	free(text);
}

static void reply_error(struct dps_reply *r, int status, int code, const char *message)
{
	char *text = dps__error_json(code, message);
	r->fn(r, status, text, 0);
	free(text);
}

static json_t *assigning_body(const struct op *o)
{
	return json_pack("{s:s,s:s,s:{s:s,s:s}}", "operationId", o->id, "status", "assigning",
			 "registrationState", "registrationId", o->regid, "status", "assigning");
}

/* ---- the op record ------------------------------------------------------ */

static json_t *op_doc(const struct op *o)
{
	json_t *doc = json_pack("{s:s,s:s,s:s,s:{s:s,s:s},s:i,s:s}", "operationId", o->id,
				"registrationId", o->regid, "status", "assigning", "enrollment",
				"kind", o->auth.kind == ENROLLMENT_GROUP ? "group" : "individual",
				"id", o->auth.enrollment_id, "keyIndex", o->auth.key_index,
				"createdDateTimeUtc", o->created);
	char lease[37];
	crypto_uuid(lease);
	json_object_set_new(doc, "owner", json_string(o->d->node));
	json_object_set_new(doc, "lease", json_string(lease));
	if (o->payload)
		json_object_set(doc, "payload", o->payload);
	if (o->auth.x509) {
		json_object_set(doc, "x509", o->auth.x509);
		json_object_set_new(doc, "certificates", json_string(o->auth.certificates));
	}
	if (o->auth.tpm)
		json_object_set(doc, "tpm", o->auth.tpm);
	return doc;
}

struct doc_job {
	enum store_doc_kind kind;
	char scope[256];
	char *id;
	char *json; /* NULL = delete */
	struct op *op;
	void (*then)(struct op *o, int rc);
};

static int doc_work(void *arg, struct store_txn *t)
{
	struct doc_job *j = arg;
	if (j->json)
		return store_doc_put(t, j->kind, j->scope, j->id, j->json);
	int rc = store_doc_delete(t, j->kind, j->scope, j->id);
	return rc == FH_ENOTFOUND ? 0 : rc;
}

static void doc_done(void *arg, int rc)
{
	struct doc_job *j = arg;
	if (j->then)
		j->then(j->op, rc);
	if (j->op)
		op_unref(j->op);
	free(j->id);
	free(j->json);
	free(j);
}

/* ---- finishing ---------------------------------------------------------- */

static json_t *state_base(const struct op *o, const char *now)
{
	json_t *s = json_object();
	json_object_set_new(s, "registrationId", json_string(o->regid));
	json_t *pc = o->prev ? json_object_get(o->prev, "createdDateTimeUtc") : NULL;
	json_object_set_new(s, "createdDateTimeUtc",
			    json_string(json_is_string(pc) ? json_string_value(pc) : now));
	return s;
}

static void state_tail(const struct op *o, json_t *s, const char *now)
{
	char etag[40], uuid[37];
	crypto_uuid(uuid);
	snprintf(etag, sizeof etag, "\"%s\"", uuid);
	json_object_set_new(s, "lastUpdatedDateTimeUtc", json_string(now));
	json_object_set_new(s, "etag", json_string(etag));
	if (o->auth.x509)
		json_object_set(s, "x509", o->auth.x509);
	if (o->auth.kind == ENROLLMENT_GROUP) {
		const char *type = enrollment_attestation_type(o->auth.record);
		if (strcmp(type, "symmetricKey") == 0)
			json_object_set_new(s, type,
					    json_pack("{s:s}", "enrollmentGroupId",
						      o->auth.enrollment_id));
		json_object_set_new(s, "_group", json_string(o->auth.enrollment_id));
	}
	json_object_set_new(s, "_operationId", json_string(o->id));
}

struct final_job {
	struct op *op;
	char *state_json;
	bool local_writes;
};

static void finish_done(void *arg, int rc);

static int twin_from_json(struct store_twin *tw, const json_t *src, const char *now)
{
	twin_init_new(tw, now);
	struct twin_error te;
	json_t *tags = json_object_get(src, "tags");
	json_t *props = json_object_get(src, "properties");
	json_t *desired = props ? json_object_get(props, "desired") : NULL;
	json_t *reported = props ? json_object_get(props, "reported") : NULL;
	json_t *d = json_is_object(desired) ? json_deep_copy(desired) : json_object();
	json_t *r = json_is_object(reported) ? json_deep_copy(reported) : NULL;
	json_object_del(d, "$version");
	json_object_del(d, "$metadata");
	int rc = twin_apply_service(tw, json_is_object(tags) ? tags : NULL, d, true, now,
				    &twin_limits_default, &te, NULL);
	if (rc == 0 && r) {
		json_object_del(r, "$version");
		json_object_del(r, "$metadata");
		rc = twin_apply_reported(tw, r, now, &twin_limits_default, &te);
	}
	json_decref(d);
	json_decref(r);
	return rc;
}

/* Whether local hub trusts the certificate the device registered with:
 * its CN is the device id and it chains to one of the hub's verified CA
 * certificates (then the identity is certificateAuthority, decisions.md
 * 8). On the writer thread. */
static bool hub_trusts(struct op *o, struct store_txn *t, const char *hub)
{
	X509 *leaf;
	STACK_OF(X509) *chain;
	if (ca_parse_chain(o->auth.certificates, &leaf, &chain) != 0)
		return false;
	char cn[ENROLLMENT_ID_MAX + 1];
	json_t *cas = json_array();
	const char *why;
	bool ok = x509_subject_cn(leaf, cn, sizeof cn) == 0 && strcmp(cn, o->device_id) == 0 &&
		  store_doc_list(t, STORE_CA_CERT, hub, "", "", HUB_CAS_MAX, ca_collect_verified,
				 cas) == 0 &&
		  ca_chain_verify_pems(leaf, chain, cas, (int)o->d->x509_depth,
				       clock_now_ms() / 1000, NULL, &why) == 0;
	json_decref(cas);
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	return ok;
}

/* The authentication of the device's identity on its hub: the enrollment's
 * symmetric keys (o->keys), or for a certificate the CA when trusted, else
 * the certificate's SHA-1 thumbprint. */
static json_t *identity_auth(const struct op *o, bool trusted)
{
	if (!o->auth.x509)
		return json_pack("{s:s,s:{s:s,s:s}}", "type", "sas", "symmetricKey", "primaryKey",
				 o->keys[0], "secondaryKey", o->keys[1]);
	if (trusted)
		return json_pack("{s:s}", "type", "certificateAuthority");
	const char *sha1 = json_string_value(json_object_get(
		json_object_get(o->auth.x509, "certificateInfo"), "sha1Thumbprint"));
	return json_pack("{s:s,s:{s:s}}", "type", "selfSigned", "x509Thumbprint",
			 "primaryThumbprint", sha1 ? sha1 : "");
}

/* The local half of an assignment, on the writer thread. */
static int assign_local(struct op *o, struct store_txn *t, const char *now)
{
	const char *hub = o->target->alloc.name;
	struct store_device dev = {0};
	int rc = store_device_get(t, hub, o->device_id, &dev);
	if (rc != 0 && rc != FH_ENOTFOUND)
		return rc;
	bool existed = rc == 0;
	json_t *existing = existed ? json_loads(dev.json, 0, NULL) : NULL;
	/* No "status": a new device is enabled, an existing one keeps the
	 * status its operator gave it on the hub. */
	json_t *body = json_pack("{s:s,s:o}", "deviceId", o->device_id, "authentication",
				 identity_auth(o, o->auth.x509 && hub_trusts(o, t, hub)));
	json_t *caps = json_object_get(o->auth.record, "capabilities");
	if (caps)
		json_object_set(body, "capabilities", caps);
	struct registry_error re;
	json_t *identity = registry_build_identity(o->device_id, body, existing, now, &re);
	json_decref(body);
	o->access_changed = existing && identity && registry_access_changed(existing, identity);
	json_decref(existing);
	if (!identity) {
		store_device_clear(&dev);
		snprintf(o->err_msg, sizeof o->err_msg, "cannot create device '%s' on %s: %s",
			 o->device_id, hub, re.message);
		return FH_EINVAL;
	}
	char *text = json_dumps(identity, JSON_COMPACT);
	json_decref(identity);
	struct store_device nd = {text, dev.etag + 1};
	rc = store_device_put(t, hub, o->device_id, &nd);
	free(text);
	store_device_clear(&dev);
	if (rc != 0)
		return rc;

	struct store_twin tw = {0};
	bool write_twin = true;
	enum reprov_action a = o->dec.action;
	if (a == REPROV_MIGRATE && o->old && o->old->local) {
		rc = store_twin_get(t, o->old->alloc.name, o->device_id, &tw);
		if (rc == FH_ENOTFOUND)
			a = REPROV_RESET; /* nothing left to migrate */
		else if (rc != 0)
			return rc;
	} else if (a == REPROV_MIGRATE && o->source_twin) {
		rc = twin_from_json(&tw, o->source_twin, now);
	} else if (a == REPROV_MIGRATE) {
		a = REPROV_RESET;
	}
	if (rc == 0 && a != REPROV_MIGRATE) {
		bool keep = (a == REPROV_SAME || a == REPROV_STAY) && existed;
		if (existed)
			rc = store_twin_get(t, hub, o->device_id, &tw);
		else
			twin_init_new(&tw, now);
		if (rc == 0 && !keep) {
			struct twin_error te;
			json_t *tags = json_object_get(o->initial_twin, "tags");
			json_t *props = json_object_get(o->initial_twin, "properties");
			json_t *desired = props ? json_object_get(props, "desired") : NULL;
			json_t *empty = json_object();
			rc = twin_apply_service(&tw, tags ? tags : empty, desired ? desired : empty,
						true, now, &twin_limits_default, &te, NULL);
			json_decref(empty);
			if (rc != 0)
				snprintf(o->err_msg, sizeof o->err_msg,
					 "the initial twin cannot be set: %s", te.message);
		} else if (rc == 0) {
			write_twin = false;
		}
	}
	if (rc == 0 && write_twin)
		rc = store_twin_put(t, hub, o->device_id, &tw);
	store_twin_clear(&tw);
	return rc;
}

static bool leaving_old(const struct op *o)
{
	return o->old && o->old != o->target &&
	       (o->dec.action == REPROV_MIGRATE || o->dec.action == REPROV_RESET);
}

/* The writes this process makes for an assignment: the identity and twin
 * on a local target, and the removal of the device from a local hub it
 * leaves (whether the new hub is local or remote). */
static int assign_writes(struct op *o, struct store_txn *t, const char *now)
{
	struct cluster_msg m;
	int rc = o->target->local ? assign_local(o, t, now) : 0;
	if (rc == 0 && o->target->local && o->access_changed) {
		/* The other nodes close the device's sessions, as this one will. */
		cluster_msg_set(&m, CLUSTER_DEVICE, o->target->alloc.name, o->device_id,
				DEVICE_ACCESS_CHANGED, 0, "re-provisioned with new credentials");
		rc = store_post(t, &m);
	}
	if (rc == 0 && leaving_old(o) && o->old->local) {
		rc = store_device_delete(t, o->old->alloc.name, o->device_id);
		if (rc == 0) {
			cluster_msg_set(&m, CLUSTER_DEVICE, o->old->alloc.name, o->device_id,
					DEVICE_DELETED, 0, "re-provisioned to another hub");
			rc = store_post(t, &m);
		} else if (rc == FH_ENOTFOUND) {
			rc = 0;
		}
	}
	return rc;
}

static int finish_work(void *arg, struct store_txn *t)
{
	struct final_job *j = arg;
	struct op *o = j->op;
	char now[32];
	clock_iso8601(clock_now_ms(), now);
	int rc = 0;
	if (j->local_writes)
		rc = assign_writes(o, t, now);
	if (rc == 0)
		rc = store_doc_put(t, STORE_REGISTRATION, o->d->name, o->regid, j->state_json);
	if (rc == 0) {
		rc = store_doc_delete(t, STORE_OPERATION, o->d->name, o->id);
		if (rc == FH_ENOTFOUND)
			rc = 0;
	}
	return rc;
}

static void fail(struct op *o, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void commit_outcome(struct op *o, bool local_writes)
{
	struct final_job *j = xcalloc(1, sizeof *j);
	o->commit_local = local_writes;
	j->op = o;
	j->local_writes = local_writes;
	j->state_json = json_dumps(o->state, JSON_COMPACT);
	o->refs++;
	/* On the device's writer: the assignment writes its identity and twin. */
	store_submit_keyed(o->d->store, o->device_id[0] ? o->device_id : o->regid, finish_work,
			   finish_done, j, 0);
}

static void on_commit_retry(uv_timer_t *t)
{
	struct op *o = t->data;
	if (!o->d->stopping)
		commit_outcome(o, o->commit_local);
	op_unref(o); /* the retry timer's share */
}

static void finish_done(void *arg, int rc)
{
	struct final_job *j = arg;
	struct op *o = j->op;
	free(j->state_json);
	free(j);
	if (o->d->stopping) {
		op_unref(o);
		return;
	}
	const char *status = json_string_value(json_object_get(o->state, "status"));
	if (rc == FH_ENOSPC || rc == FH_EIO || rc == FH_EUNAVAIL || rc == FH_EAGAIN) {
		/* The store refused the outcome (it logs the fault once): keep it
		 * and try again, 1 s, 2 s, ... up to 10 s apart; polls meanwhile
		 * are answered "assigning" from memory. */
		uint64_t delay = 1000 * (uint64_t)(o->commit_tries < 10 ? o->commit_tries + 1 : 10);
		if (o->commit_tries++ == 0)
			log_at(LOG_WARN,
			       "dps %s: registration %s: its outcome (%s) could not be stored (%s); "
			       "retrying until it can",
			       o->d->name, o->regid, status, fh_strerror(rc));
		o->refs++; /* dropped when the timer fires */
		uv_timer_start(&o->timer, on_commit_retry, delay, 0);
	} else if (rc != 0 && strcmp(status, "assigned") == 0) {
		if (!o->err_msg[0])
			snprintf(o->err_msg, sizeof o->err_msg,
				 "the assignment could not be stored: %s", fh_strerror(rc));
		fail(o, rc == FH_EINVAL ? 400007 : 500000, "%s", o->err_msg);
	} else if (rc != 0) {
		/* Not even the failure could be stored: the op record stays
		 * "assigning" and is retried on the next start. */
		log_at(LOG_ERROR, "dps %s: registration %s: cannot store its outcome: %s",
		       o->d->name, o->regid, fh_strerror(rc));
		op_forget(o);
	} else {
		if (strcmp(status, "assigned") == 0) {
			log_at(LOG_INFO, "dps %s: %s assigned to %s as device %s (%s)", o->d->name,
			       o->regid, o->hub, o->device_id, o->dec.substatus);
			if (leaving_old(o) && o->old->local)
				device_events_raise(o->d->events, o->old->alloc.name, o->device_id,
						    DEVICE_DELETED, "re-provisioned to another hub");
			if (o->target->local && o->access_changed)
				device_events_raise(o->d->events, o->target->alloc.name,
						    o->device_id, DEVICE_ACCESS_CHANGED,
						    "re-provisioned with new credentials");
		} else {
			log_at(LOG_INFO, "dps %s: registration %s failed: %d %s", o->d->name,
			       o->regid, o->err_code, o->err_msg);
		}
		op_forget(o);
	}
	op_unref(o);
}

static void fail(struct op *o, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(o->err_msg, sizeof o->err_msg, fmt, ap);
	va_end(ap);
	o->err_code = code;
	char now[32];
	clock_iso8601(clock_now_ms(), now);
	json_decref(o->state);
	o->state = state_base(o, now);
	/* Where the device was stays known for the next registration. */
	static const char *keep[] = {"assignedHub", "deviceId", "_initialHub"};
	for (size_t i = 0; o->prev && i < 3; i++) {
		json_t *v = json_object_get(o->prev, keep[i]);
		if (json_is_string(v))
			json_object_set(o->state, keep[i], v);
	}
	json_object_set_new(o->state, "status", json_string("failed"));
	json_object_set_new(o->state, "errorCode", json_integer(code));
	json_object_set_new(o->state, "errorMessage", json_string(o->err_msg));
	state_tail(o, o->state, now);
	commit_outcome(o, false);
}

static void succeed(struct op *o)
{
	char now[32];
	clock_iso8601(clock_now_ms(), now);
	json_decref(o->state);
	o->state = state_base(o, now);
	json_object_set_new(o->state, "assignedHub", json_string(o->hub));
	json_object_set_new(o->state, "deviceId", json_string(o->device_id));
	json_object_set_new(o->state, "status", json_string("assigned"));
	json_object_set_new(o->state, "substatus", json_string(o->dec.substatus));
	if (o->ret_payload)
		json_object_set(o->state, "payload", o->ret_payload);
	json_object_set_new(o->state, "_initialHub",
			    json_string(o->initial_hub[0] ? o->initial_hub : o->hub));
	if (o->auth.tpm) {
		/* The hub key, for this TPM only; kept to wrap again next time. */
		char *blob = NULL;
		const char *why;
		if (dps__tpm_blob(o->auth.tpm, o->tpm_hub_key, sizeof o->tpm_hub_key, &blob, &why) !=
		    0) {
			fail(o, 400209, "the hub key cannot be wrapped for this TPM: %s", why);
			return;
		}
		json_object_set_new(o->state, "tpm", json_pack("{s:s}", "authenticationKey", blob));
		json_object_set_new(o->state, "_tpmHubKey", json_string(o->keys[0]));
		free(blob);
	}
	state_tail(o, o->state, now);
	commit_outcome(o, o->target->local || (leaving_old(o) && o->old->local));
}

/* ---- remote hubs: the service REST API -------------------------------- */

static void remote_next(struct op *o);

static const char *const step_name[] = {
	[STEP_READ_TWIN] = "the read of the device's twin",
	[STEP_PUT_DEVICE] = "the creation of the device identity",
	[STEP_PUT_TWIN] = "the update of the device twin",
	[STEP_DELETE_OLD] = "the deletion of the device identity it leaves",
	[STEP_COMMIT] = "",
};

static void remote_done(void *arg, const struct http_client_result *r)
{
	struct op *o = arg;
	if (o->d->stopping) {
		op_unref(o);
		return;
	}
	struct dps_linked_hub *h = o->step == STEP_READ_TWIN || o->step == STEP_DELETE_OLD
					   ? o->old
					   : o->target;
	bool missing_ok = o->step == STEP_READ_TWIN || o->step == STEP_DELETE_OLD;
	if (r->status >= 200 && r->status < 300) {
		if (o->step == STEP_READ_TWIN)
			o->source_twin = json_loadb(r->body, r->body_len, 0, NULL);
		o->step++;
		remote_next(o);
	} else if (r->status == 404 && missing_ok) {
		o->step++;
		remote_next(o);
	} else if (r->status == 0) {
		fail(o, 500000, "linked hub %s%s%s%s could not be reached: %s", h->alloc.name,
		     h->remote_address ? " (dialled at " : "",
		     h->remote_address ? h->remote_address : "", h->remote_address ? ")" : "",
		     r->error);
	} else if (r->status == 401 || r->status == 403) {
		fail(o, 500000,
		     "linked hub %s refused the DPS's credentials (%d) for %s: check "
		     "SharedAccessKeyName and SharedAccessKey of its "
		     "linked_hub_connection_string (an owner policy with registry write "
		     "rights): %.200s",
		     h->alloc.name, r->status, step_name[o->step], r->body);
	} else {
		fail(o, 500000, "linked hub %s answered %d to %s: %.200s", h->alloc.name,
		     r->status, step_name[o->step], r->body);
	}
	op_unref(o);
}

static void remote_call(struct op *o, struct dps_linked_hub *h, const char *method,
			const char *what, json_t *body)
{
	struct buf url = BUF_INIT, auth = BUF_INIT, hdr = BUF_INIT;
	buf_printf(&url, "https://%s/%s/%s?api-version=" HUB_API_VERSION, h->alloc.name, what,
		   o->device_id);
	sas_build(&auth, h->alloc.name, h->remote_key, h->remote_key_name,
		  clock_now_ms() / 1000 + 3600);
	buf_printf(&hdr, "Authorization: %s", auth.data);
	const char *headers[] = {hdr.data, "If-Match: *", "Accept: application/json", NULL};
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	o->refs++;
	if (http_client_request_via(o->d->http, h->remote_address, method, url.data, headers, text,
				    text ? strlen(text) : 0, REMOTE_TIMEOUT_MS, 1024 * 1024,
				    remote_done, o) != 0) {
		op_unref(o);
		fail(o, 500000, "hub %s: cannot build a request to %s", h->alloc.name, url.data);
	}
	free(text);
	buf_free(&url);
	buf_free(&auth);
	buf_free(&hdr);
}

/* The twin of the device on the local hub it leaves, in the service's
 * JSON form (tags, properties.desired/reported), for a remote target: read
 * (store_read), then the remote steps go on; none when there is none. */
struct twin_read {
	struct op *op;
	char hub[256];
	char id[ENROLLMENT_ID_MAX + 1];
	struct store_twin tw;
};

static int twin_read_work(void *arg, struct store_txn *t)
{
	struct twin_read *j = arg;
	return store_twin_get(t, j->hub, j->id, &j->tw);
}

static void twin_read_done(void *arg, int rc)
{
	struct twin_read *j = arg;
	struct op *o = j->op;
	if (rc == 0 && !o->d->stopping) {
		json_t *tags = json_loads(j->tw.tags ? j->tw.tags : "{}", 0, NULL);
		json_t *desired = json_loads(j->tw.desired ? j->tw.desired : "{}", 0, NULL);
		json_t *reported = json_loads(j->tw.reported ? j->tw.reported : "{}", 0, NULL);
		o->source_twin = json_pack("{s:o,s:{s:o,s:o}}", "tags", tags ? tags : json_object(),
					   "properties", "desired",
					   desired ? desired : json_object(), "reported",
					   reported ? reported : json_object());
	}
	store_twin_clear(&j->tw);
	free(j);
	if (!o->d->stopping) {
		if (rc != 0 && rc != FH_ENOTFOUND) {
			fail(o, 500000, "the device's twin on %s cannot be read: %s",
			     o->old->alloc.name, fh_strerror(rc));
		} else {
			o->step++;
			remote_next(o);
		}
	}
	op_unref(o);
}

static void local_twin_read(struct op *o)
{
	struct twin_read *j = xcalloc(1, sizeof *j);
	j->op = o;
	snprintf(j->hub, sizeof j->hub, "%s", o->old->alloc.name);
	snprintf(j->id, sizeof j->id, "%s", o->device_id);
	o->refs++;
	store_read(o->d->store, twin_read_work, twin_read_done, j);
}

/* Runs the next remote step that applies, then the final commit. */
static void remote_next(struct op *o)
{
	for (;; o->step++) {
		switch (o->step) {
		case STEP_READ_TWIN:
			if (o->dec.action == REPROV_MIGRATE && o->old && !o->old->local) {
				remote_call(o, o->old, "GET", "twins", NULL);
				return;
			}
			/* Local -> remote: the local twin is what moves. */
			if (o->dec.action == REPROV_MIGRATE && o->old && o->old->local &&
			    !o->target->local) {
				local_twin_read(o);
				return;
			}
			break;
		case STEP_PUT_DEVICE:
			if (!o->target->local) {
				/* No "status", as for a local hub. */
				json_t *b = json_pack("{s:s,s:o}", "deviceId", o->device_id,
						      "authentication", identity_auth(o, false));
				remote_call(o, o->target, "PUT", "devices", b);
				json_decref(b);
				return;
			}
			break;
		case STEP_PUT_TWIN:
			if (!o->target->local && o->dec.action != REPROV_SAME &&
			    o->dec.action != REPROV_STAY) {
				const json_t *src = o->dec.action == REPROV_MIGRATE && o->source_twin
							    ? o->source_twin
							    : o->initial_twin;
				json_t *props = json_object_get(src, "properties");
				json_t *desired = props ? json_object_get(props, "desired") : NULL;
				json_t *tags = json_object_get(src, "tags");
				json_t *d = json_is_object(desired) ? json_deep_copy(desired)
								    : json_object();
				json_object_del(d, "$version");
				json_object_del(d, "$metadata");
				json_t *b = json_pack("{s:O,s:{s:o}}", "tags",
						      json_is_object(tags) ? tags : json_object(),
						      "properties", "desired", d);
				remote_call(o, o->target, "PUT", "twins", b);
				json_decref(b);
				return;
			}
			break;
		case STEP_DELETE_OLD:
			if (leaving_old(o) && !o->old->local) {
				remote_call(o, o->old, "DELETE", "devices", NULL);
				return;
			}
			break;
		case STEP_COMMIT:
			succeed(o);
			return;
		}
	}
}

/* ---- choosing the hub ---------------------------------------------------- */

static void assign(struct op *o, const char *hub)
{
	struct dps *d = o->d;
	o->target = dps__linked_find(d, hub);
	snprintf(o->hub, sizeof o->hub, "%s", o->target->alloc.name);
	const char *prev_hub = o->prev_hub[0] ? o->prev_hub : NULL;
	alloc_reprovision(o->auth.record, prev_hub, o->initial_hub[0] ? o->initial_hub : NULL,
			  o->hub, &o->dec);
	if (o->dec.action == REPROV_STAY) {
		struct dps_linked_hub *stay = dps__linked_find(d, o->prev_hub);
		if (!stay) {
			fail(o, 500000,
			     "the device stays on %s (reprovisionPolicy.updateHubAssignment is "
			     "false), but that hub is no longer linked to this DPS",
			     o->prev_hub);
			return;
		}
		o->target = stay;
		snprintf(o->hub, sizeof o->hub, "%s", stay->alloc.name);
	}
	o->old = prev_hub ? dps__linked_find(d, prev_hub) : NULL;
	if (prev_hub && !o->old && o->dec.action == REPROV_MIGRATE)
		log_at(LOG_WARN,
		       "dps %s: %s: previous hub %s is no longer linked; its twin cannot be "
		       "migrated, the initial twin is used",
		       d->name, o->regid, prev_hub);
	if (o->auth.tpm) {
		/* The hub key stays the device's across registrations; the
		 * secondary follows from it (the device never uses it). */
		uint8_t secondary[32];
		dps__tpm_hub_key(o->prev, o->tpm_hub_key);
		crypto_hmac_sha256(o->tpm_hub_key, sizeof o->tpm_hub_key, "secondary", 9, secondary);
		b64_encode(o->tpm_hub_key, sizeof o->tpm_hub_key, o->keys[0]);
		b64_encode(secondary, sizeof secondary, o->keys[1]);
	}
	for (int i = 0; !o->auth.x509 && !o->auth.tpm && i < 2; i++)
		if (enrollment_device_key(o->auth.record, o->auth.kind, o->regid,
					  i ^ o->auth.key_index, o->keys[i]) != 0) {
			fail(o, 400007, "the enrollment has no symmetric keys for the device");
			return;
		}
	o->step = STEP_READ_TWIN;
	remote_next(o);
}

static void log_call(struct op *o, const char *url, const struct http_client_result *r,
		     const char *outcome)
{
	char safe[512], now[32];
	http_client_url_for_log(url, safe, sizeof safe);
	int64_t ms = clock_now_ms();
	clock_iso8601(ms, now);
	log_at(LOG_INFO, "dps %s: webhook %s for %s: status %d in %lld ms: %s", o->d->name, safe,
	       o->regid, r->status, (long long)r->elapsed_ms, outcome);
	json_t *doc = json_pack("{s:s,s:s,s:s,s:i,s:I,s:s}", "time", now, "registrationId",
				o->regid, "url", safe, "status", r->status, "latencyMs",
				(json_int_t)r->elapsed_ms, "outcome", outcome);
	if (r->status == 0 && r->error)
		json_object_set_new(doc, "error", json_string(r->error));
	json_object_set_new(doc, "attempt", json_integer(o->attempt));
	dps__calls_log(o->d, o->regid, ms, json_dumps(doc, JSON_COMPACT));
	json_decref(doc);
}

static void call_webhook(struct op *o);

static void on_retry_timer(uv_timer_t *t)
{
	struct op *o = t->data;
	call_webhook(o);
	op_unref(o); /* the timer's share */
}

static const struct alloc_hub **candidates(struct op *o, struct alloc_hub *hubs, size_t *n)
{
	struct dps *d = o->d;
	dps__alloc_hubs(d, hubs);
	const struct alloc_hub **c = xcalloc(d->nlinked + 1, sizeof *c);
	*n = alloc_candidates(o->auth.record, hubs, d->nlinked, c, d->nlinked);
	return c;
}

static void webhook_done(void *arg, const struct http_client_result *r)
{
	struct op *o = arg;
	struct dps *d = o->d;
	if (d->stopping) {
		op_unref(o);
		return;
	}
	struct alloc_hub *hubs = xcalloc(d->nlinked + 1, sizeof *hubs);
	size_t n;
	const struct alloc_hub **c = candidates(o, hubs, &n);
	struct alloc_result res;
	alloc_parse_response(r->status, r->body, r->body_len, r->error, c, n, &res);
	json_t *def = json_object_get(o->auth.record, "customAllocationDefinition");
	const char *url = json_string_value(json_object_get(def, "webhookUrl"));
	char outcome[600];
	if (res.outcome == ALLOC_OK) {
		snprintf(outcome, sizeof outcome, "hub %s", res.hub);
		log_call(o, url, r, outcome);
		if (res.initial_twin) {
			json_decref(o->initial_twin);
			o->initial_twin = json_incref(res.initial_twin);
		}
		o->ret_payload = res.payload ? json_incref(res.payload) : NULL;
		assign(o, res.hub);
	} else if (res.outcome == ALLOC_RETRY && o->attempt < d->webhook_attempts) {
		uint64_t delay = d->webhook_retry_ms * (1 + 9 * (uint64_t)(o->attempt - 1));
		snprintf(outcome, sizeof outcome, "retry in %llu ms: %s",
			 (unsigned long long)delay, res.message);
		log_call(o, url, r, outcome);
		o->refs++; /* the timer's share */
		uv_timer_start(&o->timer, on_retry_timer, delay, 0);
	} else if (res.outcome == ALLOC_RETRY) {
		snprintf(outcome, sizeof outcome, "failed after %u attempts: %s", o->attempt,
			 res.message);
		log_call(o, url, r, outcome);
		fail(o, 400207, "Custom allocation failed after %u attempts: %s", o->attempt,
		     res.message);
	} else {
		snprintf(outcome, sizeof outcome, "failed %d: %s", res.error_code, res.message);
		log_call(o, url, r, outcome);
		fail(o, res.error_code, "%s", res.message);
	}
	alloc_result_clear(&res);
	free(c);
	free(hubs);
	op_unref(o);
}

static void call_webhook(struct op *o)
{
	struct dps *d = o->d;
	if (d->stopping)
		return;
	if (d->shared && clock_now_ms() - d->lease_ms > CLUSTER_LEASE_MS / 2) {
		/* This node's heartbeats are not being stored: another node may
		 * take the operation over soon. No webhook call until they are
		 * (a webhook is never called twice for one live operation). */
		if (!o->lease_waiting)
			log_at(LOG_WARN, "dps %s: registration %s: its webhook call waits until this "
			       "node's heartbeat is stored again", d->name, o->regid);
		o->lease_waiting = true;
		o->refs++; /* the timer's share */
		uv_timer_start(&o->timer, on_retry_timer, 1000, 0);
		return;
	}
	o->lease_waiting = false;
	o->attempt++;
	struct alloc_hub *hubs = xcalloc(d->nlinked + 1, sizeof *hubs);
	size_t n;
	const struct alloc_hub **c = candidates(o, hubs, &n);
	const char *cur_hub = o->prev_hub[0] ? o->prev_hub : NULL;
	const char *cur_dev = NULL;
	if (cur_hub)
		cur_dev = json_string_value(json_object_get(o->prev, "deviceId"));
	json_t *req = alloc_webhook_request(o->auth.record, o->auth.kind,
					    o->auth.x509 ? o->auth.x509 : o->auth.tpm, o->regid,
					    o->payload,
					    cur_hub, cur_dev, c, n);
	char *body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	free(c);
	free(hubs);
	json_t *def = json_object_get(o->auth.record, "customAllocationDefinition");
	const char *url = json_string_value(json_object_get(def, "webhookUrl"));
	static const char *headers[] = {"Accept: application/json", NULL};
	o->refs++;
	if (!url || http_client_request(d->http, "POST", url, headers, body, strlen(body),
					d->webhook_timeout_ms, WEBHOOK_MAX_RESPONSE, webhook_done,
					o) != 0) {
		op_unref(o);
		fail(o, 400207, "Custom allocation failed: the webhook URL cannot be used");
	}
	free(body);
}

/* The device's previous registration state, when there is one: where the
 * device is (a failure keeps it too) and its first hub. Read (store_read)
 * before an operation starts (start), then proceed() goes on. */
struct prev_read {
	struct op *op;
	char scope[256];
	char regid[ENROLLMENT_ID_MAX + 1];
	json_t *prev;
};

static int prev_work(void *arg, struct store_txn *t)
{
	struct prev_read *j = arg;
	int rc;
	j->prev = dps__doc_get(t, STORE_REGISTRATION, j->scope, j->regid, &rc);
	return rc == FH_ENOTFOUND ? 0 : rc;
}

static void proceed(struct op *o);

static void prev_done(void *arg, int rc)
{
	struct prev_read *j = arg;
	struct op *o = j->op;
	json_t *prev = j->prev;
	free(j);
	if (o->d->stopping) {
		json_decref(prev);
		op_unref(o);
		return;
	}
	o->prev = prev;
	const char *h = json_string_value(json_object_get(prev, "assignedHub"));
	const char *i = json_string_value(json_object_get(prev, "_initialHub"));
	if (h && json_string_value(json_object_get(prev, "deviceId")))
		snprintf(o->prev_hub, sizeof o->prev_hub, "%s", h);
	if (i)
		snprintf(o->initial_hub, sizeof o->initial_hub, "%s", i);
	if (rc != 0)
		fail(o, 500000, "the previous registration state cannot be read: %s",
		     fh_strerror(rc));
	else if (o->resume_error)
		fail(o, 500000, "%s", o->resume_error);
	else
		proceed(o);
	op_unref(o);
}

static void start(struct op *o)
{
	struct prev_read *j = xcalloc(1, sizeof *j);
	j->op = o;
	snprintf(j->scope, sizeof j->scope, "%s", o->d->name);
	snprintf(j->regid, sizeof j->regid, "%s", o->regid);
	o->refs++;
	store_read(o->d->store, prev_work, prev_done, j);
}

static void proceed(struct op *o)
{
	struct dps *d = o->d;
	/* The device id: kept from an earlier registration, else the
	 * enrollment's deviceId, else the registration id. */
	const char *dev = o->prev_hub[0]
				  ? json_string_value(json_object_get(o->prev, "deviceId"))
				  : json_string_value(json_object_get(o->auth.record, "deviceId"));
	snprintf(o->device_id, sizeof o->device_id, "%s", dev && *dev ? dev : o->regid);
	o->initial_twin = json_incref(json_object_get(o->auth.record, "initialTwin"));

	const char *policy = json_string_value(json_object_get(o->auth.record, "allocationPolicy"));
	if (policy && strcmp(policy, "custom") == 0) {
		call_webhook(o);
		return;
	}
	struct alloc_hub *hubs = xcalloc(d->nlinked + 1, sizeof *hubs);
	size_t n;
	const struct alloc_hub **c = candidates(o, hubs, &n);
	if (n == 0) {
		fail(o, 500000,
		     "no linked hub is available for this enrollment (its iotHubs are not linked "
		     "to DPS %s, or no linked hub applies allocation policies)",
		     d->name);
	} else {
		const struct alloc_hub *h = policy && strcmp(policy, "static") == 0
						    ? c[0]
						    : alloc_hashed(o->regid, c, n);
		char hub[256];
		snprintf(hub, sizeof hub, "%s", h->name);
		assign(o, hub);
	}
	free(c);
	free(hubs);
}

/* ---- entry points ------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h)
{
	op_unref(h->data);
}

static struct op *op_new(struct dps *d, const char *regid, const char *id)
{
	struct op *o = xcalloc(1, sizeof *o);
	o->d = d;
	o->refs = 2; /* the maps, and the timer handle until its close callback */
	o->live = true;
	snprintf(o->regid, sizeof o->regid, "%s", regid);
	snprintf(o->id, sizeof o->id, "%s", id);
	uv_timer_init(d->loop, &o->timer);
	o->timer.data = o;
	o->timer_open = true;
	map_put(&d->ops, o->id, o);
	map_put(&d->ops_by_reg, o->regid, o);
	d->nops++;
	return o;
}

static void op_close_timer(struct op *o)
{
	if (o->timer_open) {
		o->timer_open = false;
		uv_close((uv_handle_t *)&o->timer, on_timer_closed);
	}
}

static void registered(struct op *o, int rc)
{
	struct dps_reply *r = o->reply;
	o->reply = NULL;
	if (o->d->stopping) {
		if (r)
			reply_error(r, 503, 503000, "the service is shutting down; try again");
		return;
	}
	if (rc != 0) {
		if (r)
			reply_error(r, 503, 503000, store_write_error(rc));
		op_forget(o);
		return;
	}
	if (r) {
		json_t *body = json_pack("{s:s,s:s}", "operationId", o->id, "status", "assigning");
		reply_json(r, 202, body, o->d->retry_after_s);
		json_decref(body);
	}
	start(o);
}

void dps__register(struct dps *d, const char *regid, struct dps_auth *auth, json_t *payload,
		   struct dps_reply *r)
{
	struct op *busy = map_get(&d->ops_by_reg, regid);
	if (busy) {
		dps__auth_clear(auth);
		json_decref(payload);
		json_t *body = json_pack("{s:s,s:s}", "operationId", busy->id, "status", "assigning");
		reply_json(r, 202, body, d->retry_after_s);
		json_decref(body);
		return;
	}
	if (!enrollment_enabled(auth->record)) {
		log_at(LOG_INFO, "dps %s: %s refused: enrollment%s %s is disabled", d->name, regid,
		       auth->kind == ENROLLMENT_GROUP ? " group" : "", auth->enrollment_id);
		dps__auth_clear(auth);
		json_decref(payload);
		json_t *body = json_pack("{s:s,s:s,s:{s:s,s:s,s:i,s:s}}", "operationId", "",
					 "status", "disabled", "registrationState",
					 "registrationId", regid, "status", "disabled", "errorCode",
					 401001, "errorMessage", "the enrollment is disabled");
		reply_json(r, 200, body, 0);
		json_decref(body);
		return;
	}
	/* Overload: a new operation is refused (the device retries after
	 * retry-after) while too many are in progress or the store's write
	 * backlog is full, rather than held in memory without bound. */
	size_t cost = 512 + (payload ? json_dumpb(payload, NULL, 0, JSON_COMPACT) : 0);
	int full = d->nops >= d->max_assigning ? 1 : store_admit(d->store, cost) != 0 ? 2 : 0;
	if (full) {
		dps__auth_clear(auth);
		json_decref(payload);
		char *text = full == 1 ? dps__error_json(429001, "too many registrations are in "
								 "progress; retry later")
				       : dps__error_json(429002, "ThrottleBacklogLimitExceeded: too "
								 "many writes are waiting for the "
								 "store; retry later");
		r->fn(r, 429, text, d->retry_after_s);
		free(text);
		return;
	}
	char uuid[37], id[64];
	crypto_uuid(uuid);
	snprintf(id, sizeof id, "5.%016llx.%s", (unsigned long long)++d->op_seq, uuid);
	struct op *o = op_new(d, regid, id);
	o->auth = *auth;
	memset(auth, 0, sizeof *auth);
	o->payload = payload;
	clock_iso8601(clock_now_ms(), o->created);
	o->reply = r;
	json_t *doc = op_doc(o);
	struct doc_job *j = xcalloc(1, sizeof *j);
	j->kind = STORE_OPERATION;
	snprintf(j->scope, sizeof j->scope, "%s", d->name);
	j->id = xstrdup(o->id);
	j->json = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	j->op = o;
	j->then = registered;
	o->refs++;
	store_submit_sized(d->store, doc_work, doc_done, j, cost);
}

json_t *dps__assigning_state(struct dps *d, const char *regid)
{
	const struct op *o = map_get(&d->ops_by_reg, regid);
	if (!o)
		return NULL;
	json_t *st = json_pack("{s:s,s:s,s:s,s:s}", "registrationId", o->regid, "status",
			       "assigning", "operationId", o->id, "createdDateTimeUtc", o->created);
	json_object_set_new(st, o->auth.kind == ENROLLMENT_GROUP ? "enrollmentGroupId"
								: "enrollmentId",
			    json_string(o->auth.enrollment_id));
	if (o->attempt)
		json_object_set_new(st, "webhookAttempts", json_integer(o->attempt));
	return st;
}

/* A poll for an operation not in progress here: its registration state. */
struct poll_read {
	struct dps_reply *r;
	char scope[256];
	char regid[ENROLLMENT_ID_MAX + 1];
	char op_id[DPS_OPID_MAX + 1];
	unsigned retry_after_s;
	bool assigning; /* its op record says so */
	json_t *state;
};

static int poll_work(void *arg, struct store_txn *t)
{
	struct poll_read *j = arg;
	int rc;
	/* An operation still assigning that this process does not run (it is
	 * being resumed, or another node runs it) has its record. */
	json_t *op = dps__doc_get(t, STORE_OPERATION, j->scope, j->op_id, &rc);
	const char *regid = json_string_value(json_object_get(op, "registrationId"));
	j->assigning = regid && strcmp(regid, j->regid) == 0;
	json_decref(op);
	if (j->assigning)
		return 0;
	if (rc != 0 && rc != FH_ENOTFOUND)
		return rc;
	j->state = dps__doc_get(t, STORE_REGISTRATION, j->scope, j->regid, &rc);
	return rc == FH_ENOTFOUND ? 0 : rc;
}

static void poll_done(void *arg, int rc)
{
	struct poll_read *j = arg;
	const char *sop = json_string_value(json_object_get(j->state, "_operationId"));
	if (rc != 0) {
		reply_error(j->r, 503, 503000, "the service cannot read its store; try again");
	} else if (j->assigning) {
		json_t *body = json_pack("{s:s,s:s,s:{s:s,s:s}}", "operationId", j->op_id, "status",
					 "assigning", "registrationState", "registrationId",
					 j->regid, "status", "assigning");
		reply_json(j->r, 202, body, j->retry_after_s);
		json_decref(body);
	} else if (!sop || strcmp(sop, j->op_id) != 0) {
		reply_error(j->r, 404, 404204,
			    "no registration operation with this operationId for this device");
	} else {
		json_t *body = json_pack("{s:s,s:O,s:o}", "operationId", j->op_id, "status",
					 json_object_get(j->state, "status"), "registrationState",
					 dps__public_state(j->state));
		reply_json(j->r, 200, body, 0);
		json_decref(body);
	}
	json_decref(j->state);
	free(j);
}

void dps__poll(struct dps *d, const char *regid, const char *op_id, struct dps_reply *r)
{
	struct op *o = map_get(&d->ops, op_id);
	if (o && strcmp(o->regid, regid) == 0) {
		json_t *body = assigning_body(o);
		reply_json(r, 202, body, d->retry_after_s);
		json_decref(body);
		return;
	}
	if (o) { /* another device's operation */
		reply_error(r, 404, 404204,
			    "no registration operation with this operationId for this device");
		return;
	}
	struct poll_read *j = xcalloc(1, sizeof *j);
	j->r = r;
	snprintf(j->scope, sizeof j->scope, "%s", d->name);
	snprintf(j->regid, sizeof j->regid, "%s", regid);
	snprintf(j->op_id, sizeof j->op_id, "%s", op_id);
	j->retry_after_s = d->retry_after_s;
	store_read(d->store, poll_work, poll_done, j);
}

/* The operation records left by the last run, each with its enrollment,
 * read together on a worker (store_read_slow) at start-up. */
struct resumed {
	char *key; /* the record's store id (its operation id) */
	json_t *doc;
	json_t *record; /* its enrollment, or NULL */
};

struct resume_list {
	struct dps *d;
	char scope[256];
	int64_t now_ms;
	struct resumed *v;
	size_t n;
	json_t *live; /* {node name: true} of the nodes whose lease holds */
};

static int collect_docs(void *arg, const char *id, const char *json)
{
	struct resume_list *l = arg;
	l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
	l->v[l->n].key = xstrdup(id);
	l->v[l->n].doc = json_loads(json, 0, NULL);
	l->v[l->n++].record = NULL;
	return 0;
}

static int collect_live(void *arg, const char *id, const char *json)
{
	struct resume_list *l = arg;
	if (cluster_node_live(json, l->now_ms))
		json_object_set_new(l->live, id, json_true());
	return 0;
}

static int resume_work(void *arg, struct store_txn *t)
{
	struct resume_list *l = arg;
	int rc = store_doc_list(t, STORE_NODE, "", "", "", 100000, collect_live, l);
	if (rc == 0)
		rc = store_doc_list(t, STORE_OPERATION, l->scope, "", "", 1000000, collect_docs, l);
	for (size_t i = 0; rc == 0 && i < l->n; i++) {
		json_t *en = json_object_get(l->v[i].doc, "enrollment");
		const char *kind = json_string_value(json_object_get(en, "kind"));
		const char *eid = json_string_value(json_object_get(en, "id"));
		int erc;
		if (kind && eid)
			l->v[i].record = dps__doc_get(t, strcmp(kind, "group") == 0
								 ? STORE_ENROLLMENT_GROUP
								 : STORE_ENROLLMENT,
						      l->scope, eid, &erc);
	}
	return rc;
}

/* A record that names no registration cannot be answered to anyone: it is
 * removed rather than skipped at every start. */
static void drop_record(struct dps *d, const char *key)
{
	log_at(LOG_WARN, "dps %s: operation record %s names no registration; removed", d->name,
	       key);
	struct doc_job *j = xcalloc(1, sizeof *j);
	j->kind = STORE_OPERATION;
	snprintf(j->scope, sizeof j->scope, "%s", d->name);
	j->id = xstrdup(key);
	store_submit(d->store, doc_work, doc_done, j);
}

/* Resumes the record stored under key, with its enrollment record (taken;
 * NULL when it is gone). One that names its registration always ends
 * assigned or failed (its device is polling for it). */
static void resume_one(struct dps *d, const char *key, json_t *doc, json_t *record)
{
	const char *id = json_string_value(json_object_get(doc, "operationId"));
	const char *regid = json_string_value(json_object_get(doc, "registrationId"));
	json_t *en = json_object_get(doc, "enrollment");
	const char *kind = json_string_value(json_object_get(en, "kind"));
	const char *eid = json_string_value(json_object_get(en, "id"));
	if (!id)
		id = key; /* the record is stored under its operation id */
	if (!regid || !*regid) {
		json_decref(record);
		drop_record(d, key);
		return;
	}
	if (map_get(&d->ops, id) || map_get(&d->ops_by_reg, regid)) {
		json_decref(record);
		return;
	}
	struct op *o = op_new(d, regid, id);
	o->auth.kind = kind && strcmp(kind, "group") == 0 ? ENROLLMENT_GROUP
							    : ENROLLMENT_INDIVIDUAL;
	snprintf(o->auth.enrollment_id, sizeof o->auth.enrollment_id, "%s", eid ? eid : "");
	o->auth.key_index = (int)json_integer_value(json_object_get(doc, "keyIndex")) & 1;
	json_t *p = json_object_get(doc, "payload");
	o->payload = p ? json_incref(p) : NULL;
	json_t *tpm = json_object_get(doc, "tpm");
	if (json_is_object(tpm))
		o->auth.tpm = json_incref(tpm);
	json_t *x509 = json_object_get(doc, "x509");
	const char *certs = json_string_value(json_object_get(doc, "certificates"));
	if (json_is_object(x509) && certs) {
		o->auth.x509 = json_incref(x509);
		o->auth.certificates = xstrdup(certs);
	}
	const char *created = json_string_value(json_object_get(doc, "createdDateTimeUtc"));
	snprintf(o->created, sizeof o->created, "%s", created ? created : "");
	o->auth.record = record;
	log_at(LOG_INFO, "dps %s: resuming registration %s (operation %s)", d->name, regid, id);
	if (!o->auth.record) {
		o->auth.record = json_object();
		o->resume_error = kind && eid ? "the enrollment was deleted while the registration "
						"was in progress"
					      : "the operation record is unusable: it does not "
						"name its enrollment";
	}
	start(o);
}

/* An operation runs where it was claimed: its record is locked, checked
 * to be still as it was read (its owner and the lease token of the last
 * claim), and rewritten with this node as owner and a new token (a job);
 * then it runs here. Every resume claims, this node's own operations at
 * its start-up too: a node that comes back while another is taking its
 * operations over finds them claimed (or the other does), and no
 * operation runs twice. */
struct claim_job {
	struct dps *d;
	char *key;
	json_t *doc;    /* with its new owner and token */
	json_t *record; /* its enrollment */
	char *was;      /* the owner it had */
	char *token;    /* the lease token it had ("" for none) */
};

static const char *str_or_empty(const json_t *o, const char *name)
{
	const char *s = json_string_value(json_object_get(o, name));
	return s ? s : "";
}

static int claim_work(void *arg, struct store_txn *t)
{
	struct claim_job *j = arg;
	int rc;
	json_t *now = dps__doc_get(t, STORE_OPERATION, j->d->name, j->key, &rc);
	bool same = now && strcmp(str_or_empty(now, "owner"), j->was) == 0 &&
		    strcmp(str_or_empty(now, "lease"), j->token) == 0;
	json_decref(now);
	if (rc != 0)
		return rc;
	if (!same)
		return FH_EEXIST; /* another node took it */
	char *text = json_dumps(j->doc, JSON_COMPACT);
	rc = store_doc_put(t, STORE_OPERATION, j->d->name, j->key, text);
	free(text);
	return rc;
}

static void claim_done(void *arg, int rc)
{
	struct claim_job *j = arg;
	struct dps *d = j->d;
	if (--d->claiming == 0)
		d->resuming = false; /* the pass is over once its claims are */
	if (rc == 0 && !d->stopping) {
		if (j->was[0] && strcmp(j->was, d->node) != 0)
			log_at(LOG_INFO,
			       "dps %s: taking over operation %s from node %s (its lease ran out)",
			       d->name, j->key, j->was);
		resume_one(d, j->key, j->doc, j->record);
	} else {
		json_decref(j->record);
	}
	json_decref(j->doc);
	free(j->key);
	free(j->was);
	free(j->token);
	free(j);
}

static void claim(struct dps *d, const char *key, json_t *doc, json_t *record)
{
	struct claim_job *j = xcalloc(1, sizeof *j);
	char lease[37];
	crypto_uuid(lease);
	j->d = d;
	j->key = xstrdup(key);
	j->was = xstrdup(str_or_empty(doc, "owner"));
	j->token = xstrdup(str_or_empty(doc, "lease"));
	j->doc = json_deep_copy(doc);
	json_object_set_new(j->doc, "owner", json_string(d->node));
	json_object_set_new(j->doc, "lease", json_string(lease));
	j->record = record;
	d->claiming++;
	store_submit(d->store, claim_work, claim_done, j);
}

static void resume_done(void *arg, int rc)
{
	struct resume_list *l = arg;
	struct dps *d = l->d;
	if (rc != 0)
		log_at(LOG_ERROR, "dps %s: the registrations in progress cannot be read (%s); "
		       "they are resumed at the next start", d->name, fh_strerror(rc));
	for (size_t i = 0; i < l->n; i++) {
		json_t *doc = l->v[i].doc;
		const char *owner = json_string_value(json_object_get(doc, "owner"));
		const char *id = json_string_value(json_object_get(doc, "operationId"));
		const char *regid = json_string_value(json_object_get(doc, "registrationId"));
		/* Ours (or written before operations had owners), or a live
		 * node's (left to it), or a gone node's: claimed, then run. */
		bool mine = !owner || !*owner || strcmp(owner, d->node) == 0;
		bool here = map_get(&d->ops, id ? id : l->v[i].key) ||
			    (regid && map_get(&d->ops_by_reg, regid));
		if (rc != 0 || d->stopping || here || (!mine && json_object_get(l->live, owner)))
			json_decref(l->v[i].record);
		else if (!json_is_object(doc)) {
			json_decref(l->v[i].record);
			drop_record(d, l->v[i].key);
		} else
			claim(d, l->v[i].key, doc, l->v[i].record);
		json_decref(doc);
		free(l->v[i].key);
	}
	json_decref(l->live);
	free(l->v);
	free(l);
	if (d->claiming == 0)
		d->resuming = false;
}

void dps_resume(struct dps *d)
{
	struct resume_list *l = xcalloc(1, sizeof *l);
	l->d = d;
	snprintf(l->scope, sizeof l->scope, "%s", d->name);
	l->now_ms = clock_now_ms();
	l->live = json_object();
	d->resuming = true;
	store_read_slow(d->store, resume_work, resume_done, l);
}

void dps_lease_renewed(struct dps *d, int64_t at_ms)
{
	if (at_ms > d->lease_ms)
		d->lease_ms = at_ms;
}

void dps_take_over(struct dps *d)
{
	if (d->shared && !d->resuming && !d->stopping)
		dps_resume(d);
}

struct op_list {
	struct op **v;
	size_t n;
};

static void collect_ops(void *arg, const char *key, void *value)
{
	struct op_list *l = arg;
	l->v = xrealloc(l->v, (l->n + 1) * sizeof *l->v);
	l->v[l->n++] = value;
}

void dps__ops_shutdown(struct dps *d)
{
	d->stopping = true;
	struct op_list l = {0};
	map_each(&d->ops, collect_ops, &l);
	for (size_t i = 0; i < l.n; i++) {
		struct op *o = l.v[i];
		bool armed = uv_is_active((uv_handle_t *)&o->timer);
		uv_timer_stop(&o->timer);
		if (armed)
			op_unref(o); /* the retry timer's share */
		op_forget(o);
	}
	free(l.v);
}
