/* The DPS device requests as bytes (protocol.md §3, §4): the MQTT CONNECT
 * user name, the PUBLISH topics with their $rid and operationId, the
 * register body, and the HTTPS device paths. Pure functions over untrusted
 * input with fixed-size outputs: no allocation except the payload handed
 * back, no store, no loop. dps_device.c calls them; fuzz_dps_device drives
 * them directly. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/enc.h"
#include "core/tpm.h"
#include "internal.h"

static const char REGISTRATIONS[] = "/registrations/";

bool dps__wire_username(const char *scope, const char *u, size_t len,
                        char regid[ENROLLMENT_ID_MAX + 1])
{
	size_t sl = strlen(scope);
	size_t off = sl + sizeof REGISTRATIONS - 1;
	if (len <= off || strncasecmp(u, scope, sl) != 0 ||
	    memcmp(u + sl, REGISTRATIONS, sizeof REGISTRATIONS - 1) != 0)
		return false;
	const char *p = u + off;
	const char *end = memchr(p, '/', len - off);
	size_t n = end ? (size_t)(end - p) : len - off;
	if (n == 0 || n > ENROLLMENT_ID_MAX || memchr(p, '\0', n))
		return false;
	memcpy(regid, p, n);
	regid[n] = '\0';
	return enrollment_regid_valid(regid);
}

/* A $rid goes back verbatim in the response topic: only characters that
 * cannot change that topic's meaning (no '&', '/', '+', '#', NUL). The SDKs
 * send decimal numbers or UUIDs. */
static bool rid_valid(const char *p, size_t n)
{
	if (n == 0 || n > DPS_RID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == '~' || c == ':'))
			return false;
	}
	return true;
}

/* The value of name in the query q[0..n) ("a=1&b=2"): *val, *vlen; false
 * when absent. The first occurrence counts. */
static bool query_find(const char *q, size_t n, const char *name, const char **val, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *end = q + n;
	for (const char *p = q; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
			*val = p + nl + 1;
			*vlen = (size_t)(stop - *val);
			return true;
		}
		p = amp ? amp + 1 : end;
	}
	return false;
}

enum dps_topic dps__wire_topic(const char *topic, size_t len, char rid[DPS_RID_MAX + 1],
                               char op[DPS_OPID_MAX + 1])
{
	static const char reg[] = "$dps/registrations/PUT/iotdps-register/?";
	static const char get[] = "$dps/registrations/GET/iotdps-get-operationstatus/?";
	enum dps_topic kind;
	size_t pre;
	if (len >= sizeof reg - 1 && memcmp(topic, reg, sizeof reg - 1) == 0) {
		kind = DPS_TOPIC_REGISTER;
		pre = sizeof reg - 1;
	} else if (len >= sizeof get - 1 && memcmp(topic, get, sizeof get - 1) == 0) {
		kind = DPS_TOPIC_POLL;
		pre = sizeof get - 1;
	} else {
		return DPS_TOPIC_UNKNOWN;
	}
	const char *q = topic + pre, *v;
	size_t qn = len - pre, vn;
	if (memchr(q, '\0', qn) || !query_find(q, qn, "$rid", &v, &vn) || !rid_valid(v, vn))
		return DPS_TOPIC_UNKNOWN;
	memcpy(rid, v, vn);
	rid[vn] = '\0';
	op[0] = '\0';
	if (kind == DPS_TOPIC_POLL && query_find(q, qn, "operationId", &v, &vn) && vn > 0 &&
	    vn <= DPS_OPID_MAX) {
		memcpy(op, v, vn);
		op[vn] = '\0';
	}
	return kind;
}

/* A base64 member of the tpm object: absent (when optional), or the
 * encoding of 1..TPM_PUBLIC_MAX bytes. */
static bool tpm_key_ok(const json_t *tpm, const char *name, bool optional)
{
	json_t *v = json_object_get(tpm, name);
	if (!v)
		return optional;
	size_t len = json_string_length(v), out_len;
	uint8_t out[B64_DECODED_MAX(B64_ENCODED_LEN(TPM_PUBLIC_MAX))];
	return json_is_string(v) && len > 0 && len <= B64_ENCODED_LEN(TPM_PUBLIC_MAX) &&
	       b64_decode(json_string_value(v), len, out, &out_len) == 0 && out_len > 0;
}

int dps__wire_register_body(const char *regid, const char *body, size_t n, json_t **payload,
                            json_t **tpm, char *msg, size_t msglen)
{
	*payload = NULL;
	*tpm = NULL;
	size_t i = 0;
	while (i < n && (body[i] == ' ' || body[i] == '\r' || body[i] == '\n' || body[i] == '\t'))
		i++;
	if (i == n)
		return 0; /* no body: no payload */
	json_error_t je;
	json_t *o = json_loadb(body, n, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(o)) {
		snprintf(msg, msglen,
		         "the register body must be a JSON object "
		         "{\"registrationId\":..,\"payload\":..}: %s",
		         o ? "not an object" : je.text);
		json_decref(o);
		return -1;
	}
	json_t *id = json_object_get(o, "registrationId");
	if (id && (!json_is_string(id) || strcmp(json_string_value(id), regid) != 0)) {
		json_decref(o);
		snprintf(msg, msglen,
		         "registrationId in the body differs from the one in the request");
		return -1;
	}
	json_t *t = json_object_get(o, "tpm");
	if (t && !json_is_null(t) &&
	    (!json_is_object(t) || !tpm_key_ok(t, "endorsementKey", false) ||
	     !tpm_key_ok(t, "storageRootKey", true))) {
		json_decref(o);
		snprintf(msg, msglen,
		         "tpm must be {\"endorsementKey\":..,\"storageRootKey\":..}, each the base64 "
		         "of a TPM2B_PUBLIC of at most %d bytes",
		         TPM_PUBLIC_MAX);
		return -1;
	}
	json_t *p = json_object_get(o, "payload");
	*payload = p ? json_incref(p) : NULL;
	if (t && !json_is_null(t))
		*tpm = json_pack("{s:O,s:O*}", "endorsementKey", json_object_get(t, "endorsementKey"),
		                 "storageRootKey", json_object_get(t, "storageRootKey"));
	json_decref(o);
	return 0;
}

bool dps__wire_is_device_path(const char *scope, const char *path)
{
	size_t sl = strlen(scope);
	return path[0] == '/' && strncasecmp(path + 1, scope, sl) == 0 &&
	       strncasecmp(path + 1 + sl, REGISTRATIONS, sizeof REGISTRATIONS - 1) == 0;
}

enum dps_path dps__wire_path(const char *scope, const char *path, char regid[ENROLLMENT_ID_MAX + 1],
                             char op[DPS_OPID_MAX + 1])
{
	/* Up to five percent-decoded segments; a decoded segment is never
	 * longer than its encoding. */
	char segs[5][3 * ENROLLMENT_ID_MAX + 1];
	size_t nseg = 0, out;
	for (const char *p = path; *p == '/';) {
		p++;
		if (!*p)
			break; /* a trailing slash */
		size_t len = strcspn(p, "/");
		if (nseg == 5 || len == 0 || len >= sizeof segs[0] ||
		    pct_decode(p, len, segs[nseg], &out) != 0)
			return DPS_PATH_INVALID;
		nseg++;
		p += len;
	}
	if (nseg < 3 || strcasecmp(segs[0], scope) != 0 ||
	    strcasecmp(segs[1], "registrations") != 0 || !enrollment_regid_valid(segs[2]))
		return DPS_PATH_INVALID;
	strcpy(regid, segs[2]);
	op[0] = '\0';
	if (nseg == 3)
		return DPS_PATH_STATUS;
	if (nseg == 4 && strcasecmp(segs[3], "register") == 0)
		return DPS_PATH_REGISTER;
	if (nseg == 5 && strcasecmp(segs[3], "operations") == 0 && strlen(segs[4]) > 0 &&
	    strlen(segs[4]) <= DPS_OPID_MAX) {
		strcpy(op, segs[4]);
		return DPS_PATH_OPERATION;
	}
	return DPS_PATH_OTHER;
}
