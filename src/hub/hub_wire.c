/* A hub's device requests as bytes: see hub_wire.h for the contract.
 *
 * Topics and filters are matched against pattern tables. A pattern is
 * literal text with placeholders:
 *   {id}      the device's own id (filters also accept "+" there, the
 *             embedded C SDK's constant);
 *   {status}  a decimal integer, optionally negative (a method's status);
 *   {rid}     the rest of the topic: a query whose $rid is usable;
 *   {rest}    the rest of the topic, whatever it holds (a property bag).
 * {rid} and {rest} end a pattern. */
#include "hub_wire.h"

#include <jansson.h>
#include <string.h>

#include "base/err.h"

int hub__wire_username(const char *p, size_t n, struct hub_user *out)
{
	memset(out, 0, sizeof *out);
	const char *end = p + n;
	const char *slash = memchr(p, '/', n);
	if (!slash || slash == p || memchr(p, '\0', n))
		return FH_EINVAL;
	out->host = p;
	out->host_len = (size_t)(slash - p);
	const char *id = slash + 1;
	const char *id_end = memchr(id, '/', (size_t)(end - id));
	if (!id_end)
		id_end = end;
	out->device_id = id;
	out->id_len = (size_t)(id_end - id);
	if (out->id_len == 0 || out->id_len > REGISTRY_ID_MAX)
		return FH_EINVAL;
	if (id_end == end || id_end + 1 == end)
		return 0; /* "<host>/<id>" or "<host>/<id>/" */
	if (id_end[1] != '?')
		return FH_EPROTO; /* <host>/<device>/<module>/... */
	out->query = id_end + 2;
	out->query_len = (size_t)(end - out->query);
	return 0;
}

/* A $rid goes back verbatim in the answer topic: nothing that could change
 * that topic's meaning. The SDKs send decimal numbers or UUIDs. */
static bool rid_char_ok(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '/' && c != '+' && c != '#' && c != '?';
}

/* Copies the $rid of the query q[0..n) ("a=1&$rid=X&b=2"): the first
 * occurrence counts. False when absent or unusable. */
static bool query_rid(const char *q, size_t n, char rid[HUB_RID_MAX + 1])
{
	static const char name[] = "$rid=";
	const char *end = q + n;
	for (const char *p = q; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		size_t len = (size_t)(stop - p);
		if (len >= sizeof name - 1 && memcmp(p, name, sizeof name - 1) == 0) {
			const char *v = p + sizeof name - 1;
			size_t vl = (size_t)(stop - v);
			if (vl == 0 || vl > HUB_RID_MAX)
				return false;
			for (size_t i = 0; i < vl; i++)
				if (!rid_char_ok((unsigned char)v[i]))
					return false;
			memcpy(rid, v, vl);
			rid[vl] = '\0';
			return true;
		}
		p = stop + 1;
	}
	return false;
}

enum match { M_NO, M_YES, M_NO_RID };

/* The placeholder at pat ("{id}", ...): its kind, and pat moved past it.
 * Told apart by their second and third characters (the patterns are
 * ours; this runs for every PUBLISH). */
enum ph { PH_ID, PH_STATUS, PH_RID, PH_REST, PH_BAD };

static enum ph placeholder(const char **pat)
{
	const char *p = *pat, *end = strchr(p, '}');
	if (!end)
		return PH_BAD;
	*pat = end + 1;
	switch (p[1]) {
	case 'i': return PH_ID;
	case 's': return PH_STATUS;
	case 'r': return p[2] == 'i' ? PH_RID : PH_REST;
	default: return PH_BAD;
	}
}

/* Matches t[0..n) against pat (see the top of the file); plus: "+" may
 * stand for {id}. */
static enum match match(const char *pat, const char *t, size_t n, const char *id, bool plus,
			struct hub_topic_match *m)
{
	size_t i = 0;
	while (*pat) {
		if (*pat != '{') {
			size_t lit = strcspn(pat, "{"); /* a run of literal text */
			if (n - i < lit || memcmp(t + i, pat, lit) != 0)
				return M_NO;
			i += lit;
			pat += lit;
			continue;
		}
		switch (placeholder(&pat)) {
		case PH_ID: {
			size_t il = strlen(id);
			if (n - i >= il && memcmp(t + i, id, il) == 0)
				i += il;
			else if (plus && i < n && t[i] == '+')
				i++;
			else
				return M_NO;
			break;
		}
		case PH_STATUS: {
			bool neg = i < n && t[i] == '-';
			size_t start = i + neg, j = start;
			long v = 0;
			while (j < n && j - start < 9 && t[j] >= '0' && t[j] <= '9')
				v = v * 10 + (t[j++] - '0');
			if (j == start)
				return M_NO;
			if (m)
				m->status = neg ? -v : v;
			i = j;
			break;
		}
		case PH_RID: {
			char tmp[HUB_RID_MAX + 1];
			return query_rid(t + i, n - i, m ? m->rid : tmp) ? M_YES : M_NO_RID;
		}
		case PH_REST:
			if (m) {
				m->props = t + i;
				m->props_len = n - i;
			}
			return M_YES;
		case PH_BAD:
			return M_NO; /* a pattern typo: matches nothing */
		}
	}
	return i == n ? M_YES : M_NO;
}

/* ---- filters ---- */

static const struct {
	const char *pattern;
	const char *name; /* in the stored form */
} filter_table[HUB_SUB_COUNT] = {
	[HUB_SUB_TWIN_RES] = {"$iothub/twin/res/#", "twinResponses"},
	[HUB_SUB_DESIRED] = {"$iothub/twin/PATCH/properties/desired/#", "desired"},
	[HUB_SUB_METHODS] = {"$iothub/methods/POST/#", "methods"},
	[HUB_SUB_C2D] = {"devices/{id}/messages/devicebound/#", "c2d"},
};

int hub__wire_filter(const char *filter, size_t n, const char *device_id)
{
	for (int k = 0; k < HUB_SUB_COUNT; k++)
		if (match(filter_table[k].pattern, filter, n, device_id, true, NULL) == M_YES)
			return k;
	return -1;
}

void hub__wire_subs_encode(const struct hub_subs *s, struct buf *out)
{
	buf_appendc(out, '{');
	bool first = true;
	for (int k = 0; k < HUB_SUB_COUNT; k++) {
		if (!(s->mask & (1u << k)))
			continue;
		buf_printf(out, "%s\"%s\":%u", first ? "" : ",", filter_table[k].name,
			   s->qos[k] ? 1u : 0u);
		first = false;
	}
	buf_appendc(out, '}');
}

int hub__wire_subs_decode(const char *text, size_t n, struct hub_subs *out)
{
	memset(out, 0, sizeof *out);
	json_t *o = json_loadb(text, n, 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return FH_EINVAL;
	}
	int rc = 0;
	for (int k = 0; k < HUB_SUB_COUNT && rc == 0; k++) {
		json_t *v = json_object_get(o, filter_table[k].name);
		if (!v)
			continue;
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1) {
			rc = FH_EINVAL;
			break;
		}
		out->mask |= (uint8_t)(1u << k);
		out->qos[k] = (uint8_t)json_integer_value(v);
	}
	json_decref(o);
	if (rc)
		memset(out, 0, sizeof *out);
	return rc;
}

/* ---- topics ---- */

static const struct {
	const char *pattern;
	enum hub_topic topic;
} topic_table[] = {
	{"$iothub/twin/GET/?{rid}", HUB_TOPIC_TWIN_GET},
	{"$iothub/twin/PATCH/properties/reported/?{rid}", HUB_TOPIC_TWIN_REPORTED},
	{"$iothub/methods/res/{status}/?{rid}", HUB_TOPIC_METHOD_RES},
	{"devices/{id}/messages/events/{rest}", HUB_TOPIC_TELEMETRY},
};

/* Empties what a row that did not match may have filled in. (Not a
 * memset: this runs for every PUBLISH, and m holds a 129-byte rid.) */
static void match_clear(struct hub_topic_match *m)
{
	m->rid[0] = '\0';
	m->status = 0;
	m->props = NULL;
	m->props_len = 0;
}

enum hub_topic hub__wire_topic(const char *topic, size_t n, const char *device_id,
			       struct hub_topic_match *m)
{
	match_clear(m);
	for (size_t i = 0; i < sizeof topic_table / sizeof topic_table[0]; i++) {
		enum match r = match(topic_table[i].pattern, topic, n, device_id, false, m);
		if (r == M_YES)
			return topic_table[i].topic;
		match_clear(m);
		if (r == M_NO_RID)
			return HUB_TOPIC_NO_RID;
	}
	return HUB_TOPIC_FORBIDDEN;
}
