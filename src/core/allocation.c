/* Choosing a hub (see allocation.h). */
#include "core/allocation.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/crypto.h"

size_t alloc_candidates(const json_t *record, const struct alloc_hub *linked, size_t nlinked,
			const struct alloc_hub **out, size_t max)
{
	size_t n = 0;
	json_t *hubs = json_object_get(record, "iotHubs");
	const char *single = json_string_value(json_object_get(record, "iotHubHostName"));
	bool named = json_array_size(hubs) > 0 || (single && *single);
	for (size_t i = 0; i < nlinked && n < max; i++) {
		bool take;
		if (json_array_size(hubs) > 0) {
			take = false;
			size_t k;
			json_t *h;
			json_array_foreach(hubs, k, h)
			{
				const char *s = json_string_value(h);
				take |= s && strcasecmp(s, linked[i].name) == 0;
			}
		} else if (named) {
			take = strcasecmp(single, linked[i].name) == 0;
		} else {
			take = linked[i].apply_policy;
		}
		if (take)
			out[n++] = &linked[i];
	}
	return n;
}

/* Weighted rendezvous hashing: each hub scores -weight / ln(u) with u in
 * (0,1) from SHA-256(hub "\n" registration id); the highest score wins. */
const struct alloc_hub *alloc_hashed(const char *registration_id,
				     const struct alloc_hub *const *hubs, size_t n)
{
	const struct alloc_hub *best = NULL;
	double best_score = 0;
	for (size_t i = 0; i < n; i++) {
		char msg[640];
		uint8_t h[32];
		int len = snprintf(msg, sizeof msg, "%s\n%s", hubs[i]->name, registration_id);
		crypto_sha256(msg, (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1, h);
		uint64_t v = 0;
		for (int b = 0; b < 7; b++)
			v = v << 8 | h[b];
		double u = ((double)v + 0.5) / 72057594037927936.0; /* 2^56 */
		double score = -(double)(hubs[i]->weight ? hubs[i]->weight : 1) / log(u);
		if (!best || score > best_score) {
			best = hubs[i];
			best_score = score;
		}
	}
	return best;
}

json_t *alloc_webhook_request(const json_t *record, enum enrollment_kind kind,
			      const char *registration_id, const json_t *payload,
			      const char *current_hub, const char *current_device,
			      const struct alloc_hub *const *candidates, size_t n)
{
	json_t *req = json_object();
	json_object_set_new(req, kind == ENROLLMENT_GROUP ? "enrollmentGroup" : "individualEnrollment",
			    enrollment_redacted(record));
	json_t *ctx = json_object();
	json_object_set_new(ctx, "registrationId", json_string(registration_id));
	const char *type = enrollment_attestation_type(record);
	if (strcmp(type, "none") != 0)
		json_object_set_new(ctx, type, json_object());
	if (payload)
		json_object_set(ctx, "payload", (json_t *)payload);
	if (current_hub)
		json_object_set_new(ctx, "currentIotHubHostName", json_string(current_hub));
	if (current_device)
		json_object_set_new(ctx, "currentDeviceId", json_string(current_device));
	json_object_set_new(req, "deviceRuntimeContext", ctx);
	json_t *linked = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(linked, json_string(candidates[i]->name));
	json_object_set_new(req, "linkedHubs", linked);
	return req;
}

static void failed(struct alloc_result *out, int code, const char *fmt, const char *a,
		   const char *b)
{
	out->outcome = ALLOC_FAILED;
	out->error_code = code;
	snprintf(out->message, sizeof out->message, fmt, a, b);
}

/* A key looked up case-insensitively. */
static json_t *get_ci(const json_t *o, const char *key)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v)
		if (strcasecmp(k, key) == 0)
			return v;
	return NULL;
}

static bool twin_ok(const json_t *tw)
{
	if (!json_is_object(tw))
		return false;
	json_t *tags = json_object_get(tw, "tags");
	json_t *props = json_object_get(tw, "properties");
	json_t *desired = props ? json_object_get(props, "desired") : NULL;
	return (!tags || json_is_object(tags) || json_is_null(tags)) &&
	       (!props || json_is_object(props)) &&
	       (!desired || json_is_object(desired) || json_is_null(desired));
}

void alloc_parse_response(int status, const char *body, size_t len,
			  const char *transport_error, const struct alloc_hub *const *candidates,
			  size_t n, struct alloc_result *out)
{
	memset(out, 0, sizeof *out);
	char st[16];
	snprintf(st, sizeof st, "%d", status);
	if (status == 0) {
		out->outcome = ALLOC_RETRY;
		snprintf(out->message, sizeof out->message,
			 "Custom allocation webhook could not be called: %s",
			 transport_error ? transport_error : "no answer");
		return;
	}
	if (status == 429 || status >= 500) {
		out->outcome = ALLOC_RETRY;
		snprintf(out->message, sizeof out->message,
			 "Custom allocation webhook answered status code %d", status);
		return;
	}
	if (status == 401) {
		failed(out, 400209,
		       "Custom allocation webhook refused the call: 401 Unauthorized (check the "
		       "key in its URL)%s%s",
		       "", "");
		return;
	}
	if (status != 200) {
		failed(out, 400207, "Custom allocation failed with status code: %s%s", st, "");
		return;
	}
	json_error_t je;
	json_t *o = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
	if (!o) {
		failed(out, 400207, "Custom allocation webhook answered with invalid JSON: %s%s",
		       je.text, "");
		return;
	}
	if (!json_is_object(o)) {
		json_decref(o);
		failed(out, 400207, "Custom allocation webhook answered with JSON that is not an "
				    "object%s%s",
		       "", "");
		return;
	}
	json_t *hub = get_ci(o, "iotHubHostName");
	const char *name = json_string_value(hub);
	if (!name || !*name) {
		json_decref(o);
		failed(out, 400208,
		       "Custom allocation webhook did not specify iotHubHostName%s%s", "", "");
		return;
	}
	const struct alloc_hub *chosen = NULL;
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(candidates[i]->name, name) == 0)
			chosen = candidates[i];
	if (!chosen) {
		char list[160] = "";
		for (size_t i = 0; i < n; i++) {
			size_t l = strlen(list);
			snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "",
				 candidates[i]->name);
		}
		char hubname[80];
		snprintf(hubname, sizeof hubname, "%s", name);
		json_decref(o);
		failed(out, 400207,
		       "Custom allocation webhook returned hub '%s', which is not one of the "
		       "linked hubs: %s",
		       hubname, n ? list : "(none)");
		return;
	}
	json_t *tw = json_object_get(o, "initialTwin");
	if (tw && !json_is_null(tw) && !twin_ok(tw)) {
		json_decref(o);
		failed(out, 400207,
		       "Custom allocation webhook returned an invalid initialTwin (it must be "
		       "{\"tags\":{..},\"properties\":{\"desired\":{..}}})%s%s",
		       "", "");
		return;
	}
	json_t *payload = json_object_get(o, "payload");
	if (!payload || json_is_null(payload))
		payload = json_object_get(o, "returnData");
	out->outcome = ALLOC_OK;
	snprintf(out->hub, sizeof out->hub, "%s", chosen->name);
	out->initial_twin = tw && !json_is_null(tw) ? json_incref(tw) : NULL;
	out->payload = payload && !json_is_null(payload) ? json_incref(payload) : NULL;
	json_decref(o);
}

void alloc_result_clear(struct alloc_result *r)
{
	json_decref(r->initial_twin);
	json_decref(r->payload);
	r->initial_twin = r->payload = NULL;
}

/* Reprovisioning: a device on the hub it already has keeps it (its twin
 * too) when data is migrated, and is reset to the initial twin when not;
 * a move either carries the twin (deviceDataMigrated) or starts over
 * (deviceDataReset); a move back onto the first hub reads
 * reprovisionedToInitialAssignment. */
void alloc_reprovision(const json_t *record, const char *prev_hub, const char *initial_hub,
		       const char *new_hub, struct reprov_decision *out)
{
	json_t *rp = json_object_get(record, "reprovisionPolicy");
	json_t *upd = json_object_get(rp, "updateHubAssignment");
	json_t *mig = json_object_get(rp, "migrateDeviceData");
	bool update = upd ? json_is_true(upd) : true;
	bool migrate = mig ? json_is_true(mig) : true;
	out->substatus = "initialAssignment";
	if (!prev_hub) {
		out->action = REPROV_NEW;
		out->hub = new_hub;
		return;
	}
	if (!update) {
		out->action = REPROV_STAY;
		out->hub = prev_hub;
		return;
	}
	out->hub = new_hub;
	if (strcasecmp(prev_hub, new_hub) == 0) {
		out->action = migrate ? REPROV_SAME : REPROV_RESET;
		if (!migrate)
			out->substatus = "deviceDataReset";
		return;
	}
	out->action = migrate ? REPROV_MIGRATE : REPROV_RESET;
	out->substatus = migrate ? "deviceDataMigrated" : "deviceDataReset";
	if (initial_hub && strcasecmp(initial_hub, new_hub) == 0)
		out->substatus = "reprovisionedToInitialAssignment";
}
