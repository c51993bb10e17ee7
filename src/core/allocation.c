/* Choosing a hub for a registration (see allocation.h): candidate hubs,
 * weighted rendezvous hashing, the custom allocation webhook's request and
 * the interpretation of its answer, and the reprovisioning decision.
 *
 * Invariants kept here:
 *  - Hub names handed out (alloc_result.hub, candidates) are always the
 *    linked hub's canonical lowercase name, never the spelling a webhook or
 *    an enrollment used.
 *  - Nothing a webhook sends is trusted: the body is bounded, must be valid
 *    UTF-8 JSON without duplicate keys, and every text echoed into a message
 *    is truncated and stripped of control characters.
 *  - alloc_parse_response fills every field of its result on every path, so
 *    alloc_result_clear is always safe. */
#include "core/allocation.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/crypto.h"
#include "base/mem.h"

/* Largest webhook answer interpreted. The DPS's HTTP client stops reading
 * at the same size (dps_ops.c WEBHOOK_MAX_RESPONSE); this bound keeps the
 * parser safe for any other caller. */
#define ALLOC_RESPONSE_MAX (256 * 1024)

/* True when the JSON string s names the canonical hub `name`:
 * case-insensitive, same length (so "hub\u0000x" never matches "hub"). */
static bool name_eq(const char *name, const json_t *s)
{
	const char *v = json_string_value(s);
	return v && json_string_length(s) == strlen(name) && strcasecmp(v, name) == 0;
}

/* ---- candidates ----------------------------------------------------------- */

/* The enrollment names hubs through iotHubs; an empty or absent iotHubs
 * falls back to the older single iotHubHostName. Either way only linked
 * hubs survive (a hub unlinked after the enrollment was written is
 * dropped), in the linked order, each once. */
size_t alloc_candidates(const json_t *record, const struct alloc_hub *linked, size_t nlinked,
                        const struct alloc_hub **out, size_t max)
{
	const json_t *hubs = json_object_get(record, "iotHubs");
	const json_t *single = json_object_get(record, "iotHubHostName");
	bool by_list = json_array_size(hubs) > 0;
	bool by_single = !by_list && json_string_length(single) > 0;
	size_t n = 0;

	for (size_t i = 0; i < nlinked && n < max; i++) {
		bool take = false;
		if (by_list) {
			for (size_t k = 0; k < json_array_size(hubs) && !take; k++)
				take = name_eq(linked[i].name, json_array_get(hubs, k));
		} else if (by_single) {
			take = name_eq(linked[i].name, single);
		} else {
			take = linked[i].apply_policy;
		}
		if (take)
			out[n++] = &linked[i];
	}
	return n;
}

/* ---- hashed --------------------------------------------------------------- */

/* u in (0,1) from SHA-256(hub "\n" registration id): the first 52 bits as
 * an integer v, u = (v + 0.5) / 2^52. Both are exact in a double, so u is
 * never 0 or 1 and ln(u) is finite and negative. */
static double hub_draw(const char *hub, const char *registration_id)
{
	char stack[512];
	size_t hl = strlen(hub), rl = strlen(registration_id);
	size_t len = hl + 1 + rl;
	char *msg = len <= sizeof stack ? stack : xmalloc(len);
	memcpy(msg, hub, hl);
	msg[hl] = '\n';
	memcpy(msg + hl + 1, registration_id, rl);
	uint8_t h[32];
	crypto_sha256(msg, len, h);
	if (msg != stack)
		free(msg);
	uint64_t v = 0;
	for (int i = 0; i < 7; i++)
		v = v << 8 | h[i];
	v >>= 4;
	return ((double)v + 0.5) / 4503599627370496.0;
}

/* Weighted rendezvous (highest random weight) hashing: each hub scores
 * -weight / ln(u). For one device the scores are independent exponential
 * races, so hub i wins with probability weight_i / sum(weights); a hub's
 * score does not depend on the other hubs, so adding a hub moves only the
 * devices it now wins, and removing one moves only its own devices. */
const struct alloc_hub *alloc_hashed(const char *registration_id,
                                     const struct alloc_hub *const *hubs, size_t n)
{
	const struct alloc_hub *best = NULL;
	double best_score = 0;
	for (size_t i = 0; i < n; i++) {
		double w = hubs[i]->weight ? (double)hubs[i]->weight : 1.0;
		double score = -w / log(hub_draw(hubs[i]->name, registration_id));
		if (!best || score > best_score) {
			best = hubs[i];
			best_score = score;
		}
	}
	return best;
}

/* ---- webhook request ------------------------------------------------------ */

/* The record is redacted by enrollment_redacted (no key material leaves
 * the DPS); payload is shared by reference, the rest is copied. */
json_t *alloc_webhook_request(const json_t *record, enum enrollment_kind kind,
                              const json_t *attested, const char *registration_id, const json_t *payload,
                              const char *current_hub, const char *current_device,
                              const struct alloc_hub *const *candidates, size_t n)
{
	json_t *req = json_object();
	json_object_set_new(req,
	                    kind == ENROLLMENT_GROUP ? "enrollmentGroup" : "individualEnrollment",
	                    enrollment_redacted(record));

	json_t *ctx = json_object();
	json_object_set_new(ctx, "registrationId", json_string(registration_id));
	const char *type = enrollment_attestation_type(record);
	if (type && (strcmp(type, "symmetricKey") == 0 || strcmp(type, "x509") == 0 ||
	             strcmp(type, "tpm") == 0))
		json_object_set_new(ctx, type,
		                    attested ? json_deep_copy(attested) : json_object());
	if (payload)
		json_object_set(ctx, "payload", (json_t *)payload);
	if (current_hub)
		json_object_set_new(ctx, "currentIotHubHostName", json_string(current_hub));
	if (current_device)
		json_object_set_new(ctx, "currentDeviceId", json_string(current_device));
	json_object_set_new(req, "deviceRuntimeContext", ctx);

	json_t *hubs = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(hubs, json_string(candidates[i]->name));
	json_object_set_new(req, "linkedHubs", hubs);
	return req;
}

/* ---- webhook response ----------------------------------------------------- */

static void set_message(struct alloc_result *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_message(struct alloc_result *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out->message, sizeof out->message, fmt, ap);
	va_end(ap);
}

static void set_failed(struct alloc_result *out, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_failed(struct alloc_result *out, int code, const char *fmt, ...)
{
	out->outcome = ALLOC_FAILED;
	out->error_code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out->message, sizeof out->message, fmt, ap);
	va_end(ap);
}

/* Text from the peer made fit for a message: at most max bytes, control
 * and non-ASCII bytes as '?', "..." when cut. out has room for max + 4. */
static void printable(char *out, const char *s, size_t max)
{
	size_t i = 0;
	for (; s[i] && i < max; i++) {
		unsigned char c = (unsigned char)s[i];
		out[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
	}
	strcpy(out + i, s[i] ? "..." : "");
}

/* The value of the member named key in any letter case; NULL when there is
 * none. *twice is set when two members differ only in case (an answer that
 * says two things), which the caller rejects. */
static json_t *member_ci(const json_t *o, const char *key, bool *twice)
{
	const char *k;
	json_t *v, *found = NULL;
	json_object_foreach((json_t *)o, k, v)
	{
		if (strcasecmp(k, key) != 0)
			continue;
		if (found)
			*twice = true;
		found = v;
	}
	return found;
}

static const char *type_name(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER:
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

/* An optional member that must be an object: NULL when absent or null. */
static int object_member(const json_t *o, const char *key, const char *path, json_t **val,
                         struct alloc_result *out)
{
	bool twice = false;
	json_t *v = member_ci(o, key, &twice);
	*val = NULL;
	if (twice) {
		set_failed(out, 400207, "Custom allocation webhook returned %s more than once",
		           path);
		return -1;
	}
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v)) {
		set_failed(out, 400207,
		           "Custom allocation webhook returned %s as %s; it must be an object",
		           path, type_name(v));
		return -1;
	}
	*val = v;
	return 0;
}

/* initialTwin: {"tags":{..},"properties":{"desired":{..}}}, each part
 * optional (absent or null). The result always has that full shape (empty
 * objects for the missing parts), so the caller replaces the whole initial
 * twin; other members (reported properties, etag, version, a full Twin
 * object's extras) are ignored. *twin is NULL when no initialTwin came. */
static int initial_twin(const json_t *answer, json_t **twin, struct alloc_result *out)
{
	json_t *tw, *tags, *props, *desired = NULL;
	*twin = NULL;
	if (object_member(answer, "initialTwin", "initialTwin", &tw, out) != 0)
		return -1;
	if (!tw)
		return 0;
	if (object_member(tw, "tags", "initialTwin.tags", &tags, out) != 0 ||
	    object_member(tw, "properties", "initialTwin.properties", &props, out) != 0 ||
	    (props &&
	     object_member(props, "desired", "initialTwin.properties.desired", &desired, out) != 0))
		return -1;
	json_t *p = json_object();
	json_object_set_new(p, "desired", desired ? json_incref(desired) : json_object());
	*twin = json_object();
	json_object_set_new(*twin, "tags", tags ? json_incref(tags) : json_object());
	json_object_set_new(*twin, "properties", p);
	return 0;
}

/* Decision table, checked in this order:
 *   status 0            -> RETRY (transport failure; the caller bounds tries)
 *   429, >= 500         -> RETRY
 *   401                 -> 400209 CustomAllocationUnauthorizedAccess
 *   anything but 200    -> 400207 "... failed with status code: N"
 *   200, body too big / not UTF-8 JSON / duplicate keys / not an object
 *                       -> 400207 naming the problem
 *   iotHubHostName missing, null or ""  -> 400208
 *   iotHubHostName not a string, not a candidate -> 400207
 *   initialTwin malformed                -> 400207
 *   otherwise           -> OK
 * Any JSON value is decoded (JSON_DECODE_ANY) so that a bare string or
 * number is reported as such rather than as a syntax error. Duplicate keys
 * are rejected (JSON_REJECT_DUPLICATES, and members whose names differ only
 * in case): which of two iotHubHostName values a webhook meant cannot be
 * known, and guessing would place devices silently. Top-level
 * member names (iotHubHostName, initialTwin, payload, returnData) and the
 * initialTwin's tags/properties/desired match in any case, because .NET
 * webhooks serialise PascalCase or camelCase depending on their settings. */
void alloc_parse_response(int status, const char *body, size_t len, const char *transport_error,
                          const struct alloc_hub *const *candidates, size_t n,
                          struct alloc_result *out)
{
	memset(out, 0, sizeof *out);
	json_t *answer = NULL;

	if (status == 0) {
		out->outcome = ALLOC_RETRY;
		set_message(out, "Custom allocation webhook could not be called: %s",
		            transport_error && *transport_error ? transport_error : "no answer");
		return;
	}
	if (status == 429 || status >= 500) {
		out->outcome = ALLOC_RETRY;
		set_message(out, "Custom allocation webhook answered with status code %d", status);
		return;
	}
	if (status == 401) {
		set_failed(
		    out, 400209,
		    "Custom allocation webhook refused the call: 401 Unauthorized (check the "
		    "function key in the webhook URL)");
		return;
	}
	if (status != 200) {
		set_failed(out, 400207, "Custom allocation failed with status code: %d", status);
		return;
	}

	if (len > ALLOC_RESPONSE_MAX) {
		set_failed(
		    out, 400207,
		    "Custom allocation webhook answered with %zu bytes, more than the %d allowed",
		    len, ALLOC_RESPONSE_MAX);
		return;
	}
	if (!body) {
		body = "";
		len = 0;
	}
	if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) { /* a UTF-8 BOM, as .NET writes */
		body += 3;
		len -= 3;
	}
	json_error_t je;
	answer = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
	if (!answer) {
		char why[sizeof je.text + 4]; /* jansson quotes the body near the error */
		printable(why, len ? je.text : "the body is empty", sizeof je.text - 1);
		set_failed(out, 400207, "Custom allocation webhook answered with invalid JSON: %s",
		           why);
		return;
	}
	if (!json_is_object(answer)) {
		set_failed(out, 400207,
		           "Custom allocation webhook answered with %s, not an object with "
		           "iotHubHostName",
		           type_name(answer));
		goto fail;
	}

	bool twice = false;
	json_t *hub = member_ci(answer, "iotHubHostName", &twice);
	if (twice) {
		set_failed(out, 400207,
		           "Custom allocation webhook returned iotHubHostName more than once");
		goto fail;
	}
	if (!hub || json_is_null(hub) || (json_is_string(hub) && json_string_length(hub) == 0)) {
		set_failed(out, 400208, "Custom allocation webhook did not specify iotHubHostName");
		goto fail;
	}
	if (!json_is_string(hub)) {
		set_failed(
		    out, 400207,
		    "Custom allocation webhook returned iotHubHostName as %s; it must be a string",
		    type_name(hub));
		goto fail;
	}
	const struct alloc_hub *chosen = NULL;
	for (size_t i = 0; i < n && !chosen; i++)
		if (name_eq(candidates[i]->name, hub))
			chosen = candidates[i];
	if (!chosen) {
		/* Both echoes are bounded so the sentence always ends in one piece. */
		enum { NAME_ECHO = 64, LIST_ECHO = 120 };
		char name[NAME_ECHO + 4], list[LIST_ECHO + 4] = "(none)";
		printable(name, json_string_value(hub), NAME_ECHO);
		size_t used = 0;
		for (size_t i = 0; i < n; i++) {
			size_t room = LIST_ECHO + 1 - used;
			int w =
			    snprintf(list + used, room, "%s%s", i ? ", " : "", candidates[i]->name);
			if (w < 0 || (size_t)w >= room) {
				strcat(list, "...");
				break;
			}
			used += (size_t)w;
		}
		set_failed(
		    out, 400207,
		    "Custom allocation webhook returned hub '%s', which is not one of the linked "
		    "hubs: %s",
		    name, list);
		goto fail;
	}

	json_t *twin;
	if (initial_twin(answer, &twin, out) != 0)
		goto fail;
	json_t *payload = member_ci(answer, "payload", &twice);
	if (!payload || json_is_null(payload))
		payload = member_ci(answer, "returnData", &twice);
	if (twice) {
		json_decref(twin);
		set_failed(out, 400207,
		           "Custom allocation webhook returned payload more than once");
		goto fail;
	}

	out->outcome = ALLOC_OK;
	snprintf(out->hub, sizeof out->hub, "%s", chosen->name);
	out->initial_twin = twin;
	out->payload = payload && !json_is_null(payload) ? json_incref(payload) : NULL;
	json_decref(answer);
	return;

fail:
	json_decref(answer);
}

void alloc_result_clear(struct alloc_result *r)
{
	json_decref(r->initial_twin);
	json_decref(r->payload);
	r->initial_twin = NULL;
	r->payload = NULL;
}

/* ---- reprovisioning ------------------------------------------------------- */

/* reprovisionPolicy members default to true when absent or not booleans
 * (enrollment_build stores booleans; this only guards older records). */
static bool policy_flag(const json_t *policy, const char *key)
{
	const json_t *v = json_object_get(policy, key);
	return json_is_boolean(v) ? json_is_true(v) : true;
}

/* The decision, with the substatus the device reads (protocol.md §5.2):
 *
 *   prev_hub   update  migrate  new_hub vs prev  action    substatus
 *   NULL       -       -        -                NEW       initialAssignment
 *   set        false   -        -                STAY      initialAssignment
 *   set        true    true     same             SAME      initialAssignment
 *   set        true    false    same             RESET     deviceDataReset
 *   set        true    true     other            MIGRATE   deviceDataMigrated (*)
 *   set        true    false    other            RESET     deviceDataReset (*)
 *
 * (*) a move back onto initial_hub reads reprovisionedToInitialAssignment.
 * "Re-provision and reset" resets the twin even when the hub does not
 * change: the policy says the device starts over from the enrollment's
 * initial state on every registration (REPROV_RESET with hub == prev_hub;
 * the caller must not delete the identity it is resetting). Staying on the
 * same hub with migration is not a move, so it keeps initialAssignment.
 *
 * Azure also reports reprovisionedToInitialAssignment on a first DPS
 * assignment whose device identity already existed in the hub
 * (api-version >= 2019-04-15); that needs the hub's state, so it is the
 * caller's to apply to REPROV_NEW. */
void alloc_reprovision(const json_t *record, const char *prev_hub, const char *initial_hub,
                       const char *new_hub, struct reprov_decision *out)
{
	const json_t *policy = json_object_get(record, "reprovisionPolicy");
	bool update = policy_flag(policy, "updateHubAssignment");
	bool migrate = policy_flag(policy, "migrateDeviceData");

	out->substatus = "initialAssignment";
	out->hub = new_hub;
	if (!prev_hub) {
		out->action = REPROV_NEW;
		return;
	}
	if (!update) {
		out->action = REPROV_STAY;
		out->hub = prev_hub;
		return;
	}
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
