/* Device identities: validation and normalisation of the identity JSON the
 * service REST API receives (azure-iothub Registry shapes), and the device
 * JSON it answers (protocol.md §6).
 *
 * Invariants of a document returned by registry_build_identity: deviceId
 * equals the path id; generationId is an 18-digit decimal string (kept
 * across updates); status is "enabled" or "disabled"; statusUpdatedTime is
 * set; authentication always has type, symmetricKey {primaryKey,
 * secondaryKey} and x509Thumbprint {primaryThumbprint, secondaryThumbprint}
 * (null where the type does not use them); a "sas" identity always has two
 * valid keys; a "selfSigned" one a valid primary thumbprint; capabilities
 * is {iotEdge: bool}. Nothing else from the body is stored. Pure: no I/O,
 * no clock, randomness only through base/crypto. */
#include "core/registry.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"

#define NULL_TIME "0001-01-01T00:00:00Z"
#define KEY_MIN_BYTES 16
#define KEY_MAX_BYTES 64
#define KEY_MAX_B64 B64_ENCODED_LEN(KEY_MAX_BYTES)

bool registry_id_valid(const char *id)
{
	static const char extra[] = "-:.+%_#*?!(),=@$'";
	if (!id)
		return false;
	size_t n = 0;
	for (const char *p = id; *p; p++, n++) {
		char c = *p;
		if (n >= REGISTRY_ID_MAX)
			return false;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
			continue;
		if (!strchr(extra, c))
			return false;
	}
	/* "." and ".." are dot-segments: HTTP clients remove them from a URL
	 * path (RFC 3986 5.2.4), so such a device could not be addressed. */
	return n > 0 && strcmp(id, ".") != 0 && strcmp(id, "..") != 0;
}

__attribute__((format(printf, 3, 4))) static json_t *fail(struct registry_error *err, int status,
                                                          const char *fmt, ...)
{
	if (err) {
		err->status = status;
		snprintf(err->code, sizeof err->code, "%s", "ArgumentInvalid");
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof err->message, fmt, ap);
		va_end(ap);
	}
	return NULL;
}

/* A member that is absent or JSON null counts as absent. */
static json_t *member(const json_t *o, const char *name)
{
	json_t *v = json_is_object(o) ? json_object_get(o, name) : NULL;
	return json_is_null(v) ? NULL : v;
}

static const char *member_str(const json_t *o, const char *name)
{
	return json_string_value(member(o, name));
}

static bool key_valid(const char *k)
{
	size_t len = strlen(k);
	if (len > KEY_MAX_B64)
		return false;
	uint8_t raw[B64_DECODED_MAX(KEY_MAX_B64)];
	size_t got;
	if (b64_decode(k, len, raw, &got) != 0)
		return false;
	return got >= KEY_MIN_BYTES && got <= KEY_MAX_BYTES;
}

static bool thumbprint_valid(const char *t)
{
	size_t len = strlen(t);
	if (len != 40 && len != 64)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = t[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return false;
	}
	return true;
}

/* 18 decimal digits starting with "637", like Azure's tick-based ids. */
static void new_generation_id(char out[19])
{
	uint8_t r[15];
	crypto_random(r, sizeof r);
	memcpy(out, "637", 3);
	for (size_t i = 0; i < sizeof r; i++)
		out[3 + i] = (char)('0' + r[i] % 10);
	out[18] = '\0';
}

/* Picks one symmetric key slot: the body's key when given (validated), else
 * the existing identity's key of that slot, else a new one. */
static json_t *pick_key(const json_t *body_sk, const json_t *old_sk, const char *slot,
                        struct registry_error *err)
{
	json_t *v = member(body_sk, slot);
	if (v && !json_is_string(v))
		return fail(err, 400, "authentication.symmetricKey.%s must be a string", slot);
	const char *k = json_string_value(v);
	if (k && *k) {
		if (!key_valid(k))
			return fail(
			    err, 400,
			    "authentication.symmetricKey.%s must be base64 of %d to %d bytes", slot,
			    KEY_MIN_BYTES, KEY_MAX_BYTES);
		return json_string(k);
	}
	const char *old = member_str(old_sk, slot);
	if (old && *old && key_valid(old))
		return json_string(old);
	char fresh[45];
	crypto_new_key_b64(fresh);
	return json_string(fresh);
}

static json_t *pick_thumbprint(const json_t *body_x5, const char *slot, bool required,
                               struct registry_error *err)
{
	json_t *v = member(body_x5, slot);
	if (v && !json_is_string(v))
		return fail(err, 400, "authentication.x509Thumbprint.%s must be a string", slot);
	const char *t = json_string_value(v);
	if (!t || !*t) {
		if (required)
			return fail(err, 400, "authentication.x509Thumbprint.%s is required", slot);
		return json_null();
	}
	if (!thumbprint_valid(t))
		return fail(err, 400,
		            "authentication.x509Thumbprint.%s must be 40 or 64 hex characters",
		            slot);
	return json_string(t);
}

static bool has_thumbprint(const json_t *x5)
{
	const char *p = member_str(x5, "primaryThumbprint");
	const char *s = member_str(x5, "secondaryThumbprint");
	return (p && *p) || (s && *s);
}

/* Builds the normalised authentication object, or NULL with *err. */
static json_t *build_auth(const json_t *body_auth, const json_t *old_auth,
                          struct registry_error *err)
{
	if (body_auth && !json_is_object(body_auth))
		return fail(err, 400, "authentication must be an object");
	json_t *sk = member(body_auth, "symmetricKey");
	json_t *x5 = member(body_auth, "x509Thumbprint");
	if (sk && !json_is_object(sk))
		return fail(err, 400, "authentication.symmetricKey must be an object");
	if (x5 && !json_is_object(x5))
		return fail(err, 400, "authentication.x509Thumbprint must be an object");

	json_t *tv = member(body_auth, "type");
	if (tv && !json_is_string(tv))
		return fail(err, 400, "authentication.type must be a string");
	const char *type = json_string_value(tv);
	if (!type)
		type = has_thumbprint(x5) ? "selfSigned" : "sas";
	static const char *const types[] = {"sas", "selfSigned", "certificateAuthority", "none"};
	const char *canon = NULL;
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (strcasecmp(type, types[i]) == 0)
			canon = types[i];
	if (!canon)
		return fail(err, 400,
		            "authentication.type must be sas, selfSigned, certificateAuthority or "
		            "none");

	json_t *auth = json_object();
	json_t *osk = json_object();
	json_t *ox5 = json_object();
	json_object_set_new(auth, "symmetricKey", osk);
	json_object_set_new(auth, "x509Thumbprint", ox5);
	json_object_set_new(auth, "type", json_string(canon));

	if (strcmp(canon, "sas") == 0) {
		/* Keys of an existing sas identity survive an update with empty keys. */
		const char *old_type = member_str(old_auth, "type");
		const json_t *old_sk = old_type && strcmp(old_type, "sas") == 0
		                           ? member(old_auth, "symmetricKey")
		                           : NULL;
		json_t *pk = pick_key(sk, old_sk, "primaryKey", err);
		json_t *sec = pk ? pick_key(sk, old_sk, "secondaryKey", err) : NULL;
		if (!pk || !sec) {
			json_decref(pk);
			json_decref(auth);
			return NULL;
		}
		json_object_set_new(osk, "primaryKey", pk);
		json_object_set_new(osk, "secondaryKey", sec);
		json_object_set_new(ox5, "primaryThumbprint", json_null());
		json_object_set_new(ox5, "secondaryThumbprint", json_null());
	} else if (strcmp(canon, "selfSigned") == 0) {
		json_t *pt = pick_thumbprint(x5, "primaryThumbprint", true, err);
		json_t *st = pt ? pick_thumbprint(x5, "secondaryThumbprint", false, err) : NULL;
		if (!pt || !st) {
			json_decref(pt);
			json_decref(auth);
			return NULL;
		}
		json_object_set_new(osk, "primaryKey", json_null());
		json_object_set_new(osk, "secondaryKey", json_null());
		json_object_set_new(ox5, "primaryThumbprint", pt);
		json_object_set_new(ox5, "secondaryThumbprint", st);
	} else {
		json_object_set_new(osk, "primaryKey", json_null());
		json_object_set_new(osk, "secondaryKey", json_null());
		json_object_set_new(ox5, "primaryThumbprint", json_null());
		json_object_set_new(ox5, "secondaryThumbprint", json_null());
	}
	return auth;
}

json_t *registry_build_identity(const char *id, const json_t *body, const json_t *existing,
                                const char *now_iso, struct registry_error *err)
{
	if (err)
		memset(err, 0, sizeof *err);
	if (!registry_id_valid(id))
		return fail(err, 400, "deviceId is not a valid device id");
	if (!json_is_object(body))
		return fail(err, 400, "the device body must be a JSON object");
	if (existing && !json_is_object(existing))
		existing = NULL;

	json_t *did = member(body, "deviceId");
	if (did && (!json_is_string(did) || strcmp(json_string_value(did), id) != 0))
		return fail(err, 400, "deviceId in the body does not match the id '%s' in the path",
		            id);

	/* status */
	const char *old_status = member_str(existing, "status");
	json_t *sv = member(body, "status");
	if (sv && !json_is_string(sv))
		return fail(err, 400, "status must be \"enabled\" or \"disabled\"");
	const char *status;
	if (!sv)
		status = old_status && strcmp(old_status, "disabled") == 0 ? "disabled" : "enabled";
	else if (strcasecmp(json_string_value(sv), "enabled") == 0)
		status = "enabled";
	else if (strcasecmp(json_string_value(sv), "disabled") == 0)
		status = "disabled";
	else
		return fail(err, 400, "status must be \"enabled\" or \"disabled\"");

	/* statusReason */
	json_t *rv = json_is_object(body) ? json_object_get(body, "statusReason") : NULL;
	if (rv && !json_is_string(rv) && !json_is_null(rv))
		return fail(err, 400, "statusReason must be a string");
	const char *reason = rv ? json_string_value(rv) : member_str(existing, "statusReason");

	/* capabilities */
	json_t *cv = member(body, "capabilities");
	if (cv && !json_is_object(cv))
		return fail(err, 400, "capabilities must be an object");
	json_t *ev = member(cv, "iotEdge");
	if (ev && !json_is_boolean(ev))
		return fail(err, 400, "capabilities.iotEdge must be a boolean");
	bool edge = ev ? json_is_true(ev)
	               : json_is_true(member(member(existing, "capabilities"), "iotEdge"));

	/* authentication */
	json_t *auth =
	    build_auth(member(body, "authentication"), member(existing, "authentication"), err);
	if (!auth)
		return NULL;

	/* generationId: kept on update, new on create */
	const char *old_gen = member_str(existing, "generationId");
	char gen[19] = "";
	if (!old_gen || !*old_gen)
		new_generation_id(gen);

	/* statusUpdatedTime */
	const char *old_sut = member_str(existing, "statusUpdatedTime");
	const char *sut;
	if (!existing || !old_status || strcmp(old_status, status) != 0 || !old_sut)
		sut = now_iso ? now_iso : NULL_TIME;
	else
		sut = old_sut;

	json_t *o = json_object();
	json_object_set_new(o, "deviceId", json_string(id));
	json_object_set_new(o, "generationId", json_string(old_gen && *old_gen ? old_gen : gen));
	json_object_set_new(o, "status", json_string(status));
	json_object_set_new(o, "statusReason", reason ? json_string(reason) : json_null());
	json_object_set_new(o, "statusUpdatedTime", json_string(sut));
	json_object_set_new(o, "authentication", auth);
	json_t *caps = json_object();
	json_object_set_new(caps, "iotEdge", json_boolean(edge));
	json_object_set_new(o, "capabilities", caps);
	return o;
}

static void copy_or(json_t *dst, const json_t *src, const char *name, json_t *dflt)
{
	json_t *v = json_is_object(src) ? json_object_get(src, name) : NULL;
	if (v) {
		json_object_set_new(dst, name, json_deep_copy(v));
		json_decref(dflt);
	} else {
		json_object_set_new(dst, name, dflt);
	}
}

json_t *registry_render(const json_t *identity, int64_t etag, bool connected,
                        const char *conn_state_time_iso, const char *last_activity_iso)
{
	uint8_t be[8];
	uint64_t e = (uint64_t)etag;
	for (int i = 7; i >= 0; i--) {
		be[i] = (uint8_t)(e & 0xff);
		e >>= 8;
	}
	char etag_b64[B64_ENCODED_LEN(8) + 1];
	b64_encode(be, sizeof be, etag_b64);

	json_t *o = json_object();
	copy_or(o, identity, "deviceId", json_string(""));
	copy_or(o, identity, "generationId", json_string(""));
	json_object_set_new(o, "etag", json_string(etag_b64));
	json_object_set_new(o, "connectionState",
	                    json_string(connected ? "Connected" : "Disconnected"));
	copy_or(o, identity, "status", json_string("enabled"));
	copy_or(o, identity, "statusReason", json_null());
	json_object_set_new(o, "connectionStateUpdatedTime",
	                    json_string(conn_state_time_iso ? conn_state_time_iso : NULL_TIME));
	copy_or(o, identity, "statusUpdatedTime", json_string(NULL_TIME));
	json_object_set_new(o, "lastActivityTime",
	                    json_string(last_activity_iso ? last_activity_iso : NULL_TIME));
	json_object_set_new(o, "cloudToDeviceMessageCount", json_integer(0));
	copy_or(o, identity, "authentication", json_object());
	json_t *caps = json_object();
	json_object_set_new(caps, "iotEdge", json_false());
	copy_or(o, identity, "capabilities", caps);

	/* Anything else the stored document carries, after the known fields. */
	if (json_is_object(identity)) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)identity, k, v)
		{
			if (!json_object_get(o, k))
				json_object_set_new(o, k, json_deep_copy(v));
		}
	}
	return o;
}

static const char *sym_key(const json_t *identity, const char *slot)
{
	const char *k =
	    member_str(member(member(identity, "authentication"), "symmetricKey"), slot);
	return k && *k ? k : NULL;
}

const char *registry_primary_key(const json_t *identity)
{
	return sym_key(identity, "primaryKey");
}

const char *registry_secondary_key(const json_t *identity)
{
	return sym_key(identity, "secondaryKey");
}

const char *registry_auth_type(const json_t *identity)
{
	const char *t = json_string_value(
	    json_object_get(json_object_get(identity, "authentication"), "type"));
	return t ? t : "sas";
}

const char *registry_thumbprint(const json_t *identity, bool primary)
{
	json_t *x5 = json_object_get(json_object_get(identity, "authentication"), "x509Thumbprint");
	return json_string_value(
	    json_object_get(x5, primary ? "primaryThumbprint" : "secondaryThumbprint"));
}

bool registry_access_changed(const json_t *old_identity, const json_t *new_identity)
{
	return !registry_enabled(new_identity) ||
	       !json_equal(json_object_get(old_identity, "authentication"),
			   json_object_get(new_identity, "authentication"));
}

bool registry_enabled(const json_t *identity)
{
	const char *s = member_str(identity, "status");
	return s && strcmp(s, "enabled") == 0;
}
