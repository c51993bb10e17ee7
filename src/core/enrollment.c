/* DPS enrollment records (see enrollment.h): the PUT body of an individual
 * enrollment or an enrollment group is checked and turned into the record
 * that is stored, and the views of a stored record are derived from it.
 *
 * Invariants of a record returned by enrollment_build:
 *   - it holds only the fields listed in enrollment.h, in that order, with
 *     the id first; nothing else from the body is copied;
 *   - every default is filled in, every enum holds its canonical spelling
 *     (the body's may differ in case);
 *   - a symmetricKey attestation always has two keys, each base64 of 16..64
 *     bytes; a tpm one an endorsementKey; an x509 one a certificate section;
 *   - hub names (iotHubs, iotHubHostName) are linked hubs, lowercase, and
 *     iotHubs has no duplicates;
 *   - customAllocationDefinition is present exactly when allocationPolicy is
 *     "custom", with a webhookUrl that is https:// or http:// to loopback;
 *   - etag is a fresh quoted UUID; createdDateTimeUtc survives updates.
 *
 * Pure: no I/O and no clock (now is passed in); randomness comes only from
 * base/crypto. Every failure is a 400 with errorCode 400004 and a message
 * that names the field and the rule. */
#include "core/enrollment.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "codec/sas.h"
#include "core/ca.h"
#include "core/registry.h"
#include "core/tpm.h"

#define KEY_MIN_BYTES 16
#define KEY_MAX_BYTES 64
#define KEY_MAX_B64 B64_ENCODED_LEN(KEY_MAX_BYTES) /* 88 */
#define WEBHOOK_URL_MAX 2048
#define API_VERSION_MAX 64
#define CODE_BAD_REQUEST 400004

/* ---- ids -------------------------------------------------------------------- */

static bool id_valid(const char *id, bool upper_ok)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0 || n > ENROLLMENT_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		          c == '.' || c == '_' || c == ':' || (upper_ok && c >= 'A' && c <= 'Z');
		if (!ok)
			return false;
	}
	/* Dot-segments: clients remove them from URL paths (as device ids). */
	return strcmp(id, ".") != 0 && strcmp(id, "..") != 0;
}

bool enrollment_regid_valid(const char *id)
{
	return id_valid(id, false);
}

bool enrollment_groupid_valid(const char *id)
{
	return id_valid(id, true);
}

/* ---- helpers ---------------------------------------------------------------- */

static int fail(struct enrollment_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct enrollment_error *err, const char *fmt, ...)
{
	err->status = 400;
	err->code = CODE_BAD_REQUEST;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return FH_EINVAL;
}

/* Copies at most 48 bytes of s for quoting in a message, never cutting a
 * UTF-8 sequence and replacing control characters, so the message stays
 * valid UTF-8 whatever the client sent. */
struct clip {
	char s[56];
};

static struct clip clip(const char *s)
{
	struct clip c;
	size_t n = strlen(s), max = 48, o = 0;
	if (n > max) {
		n = max;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	for (size_t i = 0; i < n; i++)
		c.s[o++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	if (n < strlen(s)) {
		memcpy(c.s + o, "...", 3);
		o += 3;
	}
	c.s[o] = '\0';
	return c;
}

/* A member that is absent or JSON null counts as absent. */
static json_t *member(const json_t *o, const char *name)
{
	json_t *v = json_is_object(o) ? json_object_get(o, name) : NULL;
	return json_is_null(v) ? NULL : v;
}

/* An optional string member: *out is NULL when absent, null or "". */
static int opt_string(const json_t *o, const char *name, const char *path,
                      struct enrollment_error *err, const char **out)
{
	json_t *v = member(o, name);
	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return fail(err, "%s must be a string", path);
	if (*json_string_value(v))
		*out = json_string_value(v);
	return 0;
}

/* Matches s case-insensitively against a NULL-terminated list; returns the
 * canonical spelling or NULL. */
static const char *canonical(const char *s, const char *const *names)
{
	for (; *names; names++)
		if (strcasecmp(s, *names) == 0)
			return *names;
	return NULL;
}

static json_t *lowercase_string(const char *s)
{
	char tmp[256];
	size_t n = strlen(s);
	if (n >= sizeof tmp)
		return json_string(s); /* linked hub names are far shorter */
	for (size_t i = 0; i <= n; i++)
		tmp[i] = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] - 'A' + 'a') : s[i];
	return json_string(tmp);
}

/* The linked hub name equal to name (case-insensitive), or NULL. */
static const char *linked_hub(const struct enrollment_hubs *linked, const char *name)
{
	for (size_t i = 0; linked && i < linked->n; i++)
		if (linked->names[i] && strcasecmp(linked->names[i], name) == 0)
			return linked->names[i];
	return NULL;
}

/* ---- attestation ------------------------------------------------------------ */

static bool key_valid(const char *k)
{
	size_t len = strlen(k);
	if (len > KEY_MAX_B64)
		return false;
	uint8_t raw[B64_DECODED_MAX(KEY_MAX_B64)];
	size_t got;
	return b64_decode(k, len, raw, &got) == 0 && got >= KEY_MIN_BYTES && got <= KEY_MAX_BYTES;
}

/* A new key as Azure makes them: base64 of 64 random bytes (88 chars). */
static json_t *new_key(void)
{
	uint8_t raw[KEY_MAX_BYTES];
	char text[KEY_MAX_B64 + 1];
	crypto_random(raw, sizeof raw);
	b64_encode(raw, sizeof raw, text);
	return json_string(text);
}

/* One symmetric key slot: the body's key when given (validated), else the
 * stored record's key of that slot, else a new one. */
static int pick_key(const json_t *body_sk, const json_t *old_sk, const char *slot,
                    struct enrollment_error *err, json_t **out)
{
	char path[64];
	const char *k;
	snprintf(path, sizeof path, "attestation.symmetricKey.%s", slot);
	if (opt_string(body_sk, slot, path, err, &k) != 0)
		return FH_EINVAL;
	if (k) {
		if (!key_valid(k))
			return fail(err, "%s must be base64 of %d to %d bytes", path, KEY_MIN_BYTES,
			            KEY_MAX_BYTES);
		*out = json_string(k);
		return 0;
	}
	const char *old = json_string_value(member(old_sk, slot));
	*out = old && key_valid(old) ? json_string(old) : new_key();
	return 0;
}

static int symmetric_key(const json_t *att, const json_t *old_att, struct enrollment_error *err,
                         json_t *out)
{
	json_t *sk = member(att, "symmetricKey");
	if (sk && !json_is_object(sk))
		return fail(err,
		            "attestation.symmetricKey must be an object "
		            "{\"primaryKey\":..,\"secondaryKey\":..} (or absent to generate keys)");
	json_t *old_sk = member(old_att, "symmetricKey");
	json_t *primary = NULL, *secondary = NULL;
	if (pick_key(sk, old_sk, "primaryKey", err, &primary) != 0)
		return FH_EINVAL;
	if (pick_key(sk, old_sk, "secondaryKey", err, &secondary) != 0) {
		json_decref(primary);
		return FH_EINVAL;
	}
	json_object_set_new(
	    out, "symmetricKey",
	    json_pack("{s:o,s:o}", "primaryKey", primary, "secondaryKey", secondary));
	return 0;
}

static int tpm(enum enrollment_kind kind, const json_t *att, struct enrollment_error *err,
               json_t *out)
{
	if (kind == ENROLLMENT_GROUP)
		return fail(err, "attestation.type 'tpm' is for individual enrollments only; "
		                 "a group uses symmetricKey or x509");
	json_t *t = member(att, "tpm");
	if (t && !json_is_object(t))
		return fail(err, "attestation.tpm must be an object {\"endorsementKey\":..}");
	const char *ek, *srk;
	if (opt_string(t, "endorsementKey", "attestation.tpm.endorsementKey", err, &ek) != 0 ||
	    opt_string(t, "storageRootKey", "attestation.tpm.storageRootKey", err, &srk) != 0)
		return FH_EINVAL;
	if (!ek)
		return fail(err, "attestation.tpm.endorsementKey is required for tpm attestation");
	const char *names[2] = {"endorsementKey", "storageRootKey"}, *keys[2] = {ek, srk};
	for (int i = 0; i < 2; i++) {
		uint8_t raw[TPM_PUBLIC_MAX + 3];
		size_t n = keys[i] ? strlen(keys[i]) : 0, len = 0;
		struct tpm_rsa_public pub;
		const char *why = "it is not base64";
		if (keys[i] && (n > B64_ENCODED_LEN(TPM_PUBLIC_MAX) ||
		                b64_decode(keys[i], n, raw, &len) != 0 ||
		                tpm_parse_public(raw, len, &pub, &why) != 0))
			return fail(err,
			            "attestation.tpm.%s must be the base64 of the TPM2B_PUBLIC of an "
			            "RSA storage key, as the TPM gives it: %s",
			            names[i], why);
	}
	json_t *o = json_pack("{s:s}", "endorsementKey", ek);
	if (srk)
		json_object_set_new(o, "storageRootKey", json_string(srk));
	json_object_set_new(out, "tpm", o);
	return 0;
}

/* One certificate of clientCertificates / signingCertificates:
 * {"certificate": PEM or base64 DER}, stored as {"certificate": PEM,
 * "info": X509CertificateInfo} (the info the body may carry is replaced). */
static json_t *certificate_entry(const json_t *e, const char *path, struct enrollment_error *err)
{
	json_t *c = member(e, "certificate");
	X509 *x = json_is_string(c) ? ca_parse(json_string_value(c), json_string_length(c)) : NULL;
	char *pem = x ? ca_pem(x) : NULL;
	json_t *info = x ? ca_cert_info(x) : NULL;
	X509_free(x);
	if (!pem || !info) {
		free(pem);
		json_decref(info);
		fail(err, "%s.certificate must be a certificate (PEM, or the base64 of its DER, "
		          "at most %d bytes)",
		     path, CA_MAX_TEXT);
		return NULL;
	}
	json_t *o = json_pack("{s:s,s:o}", "certificate", pem, "info", info);
	free(pem);
	return o;
}

/* clientCertificates / signingCertificates: {primary: {certificate},
 * secondary?: {certificate}}; caReferences: {primary: "name",
 * secondary?: "name"}. */
static int x509_section(const json_t *x, const char *name, bool refs, struct enrollment_error *err,
                        json_t *out)
{
	json_t *s = member(x, name);
	if (!s)
		return 0;
	json_t *p = member(s, "primary");
	bool ok = json_is_object(s) &&
	          (refs ? json_is_string(p) && *json_string_value(p) : json_is_object(p));
	json_t *sec = member(s, "secondary");
	if (sec && (refs ? !json_is_string(sec) : !json_is_object(sec)))
		ok = false;
	if (!ok)
		return fail(err,
		            "attestation.x509.%s must be {\"primary\":%s, \"secondary\":%s "
		            "(optional)}",
		            name, refs ? "\"name\"" : "{\"certificate\":..}",
		            refs ? "\"name\"" : "{..}");
	json_t *o = json_object();
	for (int i = 0; i < 2; i++) {
		const char *slot = i ? "secondary" : "primary";
		json_t *v = i ? sec : p;
		if (!v)
			continue;
		char path[96];
		snprintf(path, sizeof path, "attestation.x509.%s.%s", name, slot);
		json_t *e = refs ? json_deep_copy(v) : certificate_entry(v, path, err);
		if (!e) {
			json_decref(o);
			return FH_EINVAL;
		}
		json_object_set_new(o, slot, e);
	}
	json_object_set_new(out, name, o);
	return 0;
}

static int x509(enum enrollment_kind kind, const json_t *att, struct enrollment_error *err,
                json_t *out)
{
	json_t *x = member(att, "x509");
	if (x && !json_is_object(x))
		return fail(err, "attestation.x509 must be an object");
	json_t *o = json_object();
	int rc = 0;
	if (kind == ENROLLMENT_INDIVIDUAL)
		rc = x509_section(x, "clientCertificates", false, err, o);
	if (rc == 0)
		rc = x509_section(x, "signingCertificates", false, err, o);
	if (rc == 0)
		rc = x509_section(x, "caReferences", true, err, o);
	if (rc == 0 && json_object_size(o) == 0)
		rc = fail(err, "attestation.x509 needs %s",
		          kind == ENROLLMENT_INDIVIDUAL
		              ? "clientCertificates, signingCertificates or caReferences"
		              : "signingCertificates or caReferences");
	if (rc != 0) {
		json_decref(o);
		return rc;
	}
	json_object_set_new(out, "x509", o);
	return 0;
}

static int build_attestation(enum enrollment_kind kind, const json_t *body, const json_t *existing,
                             struct enrollment_error *err, json_t **out)
{
	static const char *const types[] = {"symmetricKey", "x509", "tpm", "none", NULL};
	json_t *att = member(body, "attestation");
	if (!json_is_object(att))
		return fail(err, "attestation is required: {\"type\":\"symmetricKey\"|\"x509\"|"
		                 "\"tpm\"|\"none\", ...}");
	json_t *t = member(att, "type");
	if (!json_is_string(t))
		return fail(err, "attestation.type is required: symmetricKey, x509, tpm or none");
	const char *type = canonical(json_string_value(t), types);
	if (!type)
		return fail(err,
		            "attestation.type '%s' is not one of symmetricKey, x509, tpm, none",
		            clip(json_string_value(t)).s);
	json_t *a = json_pack("{s:s}", "type", type);
	int rc = 0;
	if (strcmp(type, "symmetricKey") == 0)
		rc = symmetric_key(att, member(existing, "attestation"), err, a);
	else if (strcmp(type, "tpm") == 0)
		rc = tpm(kind, att, err, a);
	else if (strcmp(type, "x509") == 0)
		rc = x509(kind, att, err, a);
	if (rc != 0) {
		json_decref(a);
		return rc;
	}
	*out = a;
	return 0;
}

/* ---- webhook URL -------------------------------------------------------------- */

static bool port_valid(const char *p, size_t n)
{
	if (n == 0 || n > 5)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	return v <= 65535;
}

static bool loopback(const char *host, bool bracketed)
{
	unsigned char addr[16];
	if (bracketed)
		return inet_pton(AF_INET6, host, addr) == 1 &&
		       memcmp(addr, &in6addr_loopback, 16) == 0;
	if (strcasecmp(host, "localhost") == 0)
		return true;
	return inet_pton(AF_INET, host, addr) == 1 && addr[0] == 127;
}

/* https://<authority>[/path][?query][#fragment] with any host, or http://
 * when the host is loopback. The authority is [userinfo@]host[:port] with
 * host a name, a dotted IPv4 address or a bracketed IPv6 literal. */
static int webhook_url_check(const char *url, struct enrollment_error *err)
{
	static const char *const path = "customAllocationDefinition.webhookUrl";
	size_t len = strlen(url);
	if (len > WEBHOOK_URL_MAX)
		return fail(err, "%s is longer than %d characters", path, WEBHOOK_URL_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f)
			return fail(err, "%s contains a space or a control character", path);
	bool tls;
	const char *p;
	if (strncasecmp(url, "https://", 8) == 0) {
		tls = true;
		p = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		tls = false;
		p = url + 7;
	} else {
		return fail(err,
		            "%s must be an https:// URL (http:// only to localhost, "
		            "127.0.0.0/8 or [::1])",
		            path);
	}
	size_t alen = strcspn(p, "/?#");
	const char *at = NULL;
	for (size_t i = 0; i < alen; i++)
		if (p[i] == '@')
			at = p + i;
	const char *h = at ? at + 1 : p, *end = p + alen;
	char host[256];
	const char *after;
	bool bracketed = h < end && *h == '[';
	if (bracketed) {
		const char *close = memchr(h, ']', (size_t)(end - h));
		if (!close)
			return fail(err, "%s: the IPv6 host has no closing ']'", path);
		h++;
		after = close + 1;
		if ((size_t)(close - h) >= sizeof host || close == h)
			return fail(err, "%s: the IPv6 host is not valid", path);
		memcpy(host, h, (size_t)(close - h));
		host[close - h] = '\0';
		unsigned char addr[16];
		if (inet_pton(AF_INET6, host, addr) != 1)
			return fail(err, "%s: '[%s]' is not an IPv6 address", path, clip(host).s);
	} else {
		const char *colon = memchr(h, ':', (size_t)(end - h));
		after = colon ? colon : end;
		if ((size_t)(after - h) >= sizeof host)
			return fail(err, "%s: the host is longer than 255 characters", path);
		memcpy(host, h, (size_t)(after - h));
		host[after - h] = '\0';
	}
	if (!host[0])
		return fail(err, "%s has no host", path);
	if (after < end && (*after != ':' || !port_valid(after + 1, (size_t)(end - after - 1))))
		return fail(err, "%s: the port must be a number from 0 to 65535", path);
	if (!tls && !loopback(host, bracketed))
		return fail(err,
		            "%s must use https:// for host '%s' (http:// only to localhost, "
		            "127.0.0.0/8 or [::1])",
		            path, clip(host).s);
	return 0;
}

static bool api_version_valid(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > API_VERSION_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return false;
	}
	return true;
}

/* ---- the other sections ------------------------------------------------------- */

/* A twin collection: an object, kept as given without its '$' keys
 * ($metadata, $version: bookkeeping, not data). */
static int twin_collection(const json_t *v, const char *path, struct enrollment_error *err,
                           json_t **out)
{
	if (v && !json_is_object(v))
		return fail(err, "%s must be an object", path);
	json_t *o = v ? json_deep_copy(v) : json_object();
	const char *k;
	json_t *x;
	void *tmp;
	json_object_foreach_safe(o, tmp, k, x)
	{
		if (k[0] == '$')
			json_object_del(o, k);
	}
	*out = o;
	return 0;
}

static int build_twin(const json_t *body, struct enrollment_error *err, json_t **out)
{
	json_t *tw = member(body, "initialTwin");
	if (tw && !json_is_object(tw))
		return fail(err, "initialTwin must be an object {\"tags\":{..},\"properties\":"
		                 "{\"desired\":{..}}}");
	json_t *props = member(tw, "properties");
	if (props && !json_is_object(props))
		return fail(err, "initialTwin.properties must be an object {\"desired\":{..}}");
	json_t *tags, *desired;
	if (twin_collection(member(tw, "tags"), "initialTwin.tags", err, &tags) != 0)
		return FH_EINVAL;
	if (twin_collection(member(props, "desired"), "initialTwin.properties.desired", err,
	                    &desired) != 0) {
		json_decref(tags);
		return FH_EINVAL;
	}
	*out = json_pack("{s:o,s:{s:o}}", "tags", tags, "properties", "desired", desired);
	return 0;
}

/* iotHubs (deduplicated) and iotHubHostName, each a linked hub, stored in
 * lowercase. *nhubs counts the distinct hubs named by both. */
static int build_hubs(const json_t *body, const struct enrollment_hubs *linked,
                      struct enrollment_error *err, json_t **list, const char **single,
                      size_t *nhubs)
{
	json_t *ih = member(body, "iotHubs");
	if (ih && !json_is_array(ih))
		return fail(err, "iotHubs must be an array of linked hub host names");
	if (opt_string(body, "iotHubHostName", "iotHubHostName", err, single) != 0)
		return FH_EINVAL;
	if (*single) {
		const char *name = linked_hub(linked, *single);
		if (!name)
			return fail(err, "iotHubHostName: hub '%s' is not linked to this DPS",
			            clip(*single).s);
		*single = name;
	}
	json_t *out = json_array();
	bool single_listed = false;
	size_t i;
	json_t *h;
	json_array_foreach(ih, i, h)
	{
		if (!json_is_string(h)) {
			json_decref(out);
			return fail(err, "iotHubs[%zu] must be a hub host name (a string)", i);
		}
		const char *name = linked_hub(linked, json_string_value(h));
		if (!name) {
			json_decref(out);
			return fail(err, "iotHubs: hub '%s' is not linked to this DPS",
			            clip(json_string_value(h)).s);
		}
		bool dup = false;
		for (size_t j = 0; j < json_array_size(out) && !dup; j++)
			dup = strcasecmp(json_string_value(json_array_get(out, j)), name) == 0;
		if (!dup)
			json_array_append_new(out, lowercase_string(name));
		if (*single && strcasecmp(*single, name) == 0)
			single_listed = true;
	}
	*nhubs = json_array_size(out) + (*single && !single_listed ? 1 : 0);
	*list = out;
	return 0;
}

static int bool_member(const json_t *o, const char *name, const char *path, bool dflt,
                       struct enrollment_error *err, bool *out)
{
	json_t *v = member(o, name);
	if (v && !json_is_boolean(v))
		return fail(err, "%s must be true or false", path);
	*out = v ? json_is_true(v) : dflt;
	return 0;
}

/* ---- the record --------------------------------------------------------------- */

json_t *enrollment_build(enum enrollment_kind kind, const char *id, const json_t *body,
                         const json_t *existing, const struct enrollment_hubs *linked,
                         const char *now_iso, struct enrollment_error *err)
{
	static const char *const statuses[] = {"enabled", "disabled", NULL};
	static const char *const policies[] = {"hashed", "geoLatency", "static", "custom", NULL};
	bool group = kind == ENROLLMENT_GROUP;
	const char *idkey = group ? "enrollmentGroupId" : "registrationId";
	json_t *rec = NULL, *att = NULL, *twin = NULL, *hubs = NULL;
	const char *s;

	memset(err, 0, sizeof *err);
	if (!(group ? enrollment_groupid_valid(id) : enrollment_regid_valid(id))) {
		fail(err, "%s '%s' is not valid: 1 to %d of %s, digits, '-', '.', '_', ':'", idkey,
		     clip(id ? id : "").s, ENROLLMENT_ID_MAX,
		     group ? "ASCII letters" : "lowercase ASCII letters");
		goto fail;
	}
	if (!json_is_object(body)) {
		fail(err, "the body must be a JSON object (an %s)",
		     group ? "EnrollmentGroup" : "IndividualEnrollment");
		goto fail;
	}
	if (opt_string(body, idkey, idkey, err, &s) != 0)
		goto fail;
	if (s && strcmp(s, id) != 0) {
		fail(err, "%s '%s' in the body differs from '%s' in the path", idkey, clip(s).s,
		     clip(id).s);
		goto fail;
	}

	rec = json_object();
	json_object_set_new(rec, idkey, json_string(id));
	if (!group) {
		if (opt_string(body, "deviceId", "deviceId", err, &s) != 0)
			goto fail;
		if (s && !registry_id_valid(s)) {
			fail(err,
			     "deviceId '%s' is not a valid device id (1 to 128 of letters, "
			     "digits and -:.+%%_#*?!(),=@$')",
			     clip(s).s);
			goto fail;
		}
		if (s)
			json_object_set_new(rec, "deviceId", json_string(s));
	}

	if (build_attestation(kind, body, existing, err, &att) != 0)
		goto fail;
	json_object_set_new(rec, "attestation", att);

	json_t *caps = member(body, "capabilities");
	bool edge = false;
	if (caps && !json_is_object(caps)) {
		fail(err, "capabilities must be an object {\"iotEdge\":true|false}");
		goto fail;
	}
	if (bool_member(caps, "iotEdge", "capabilities.iotEdge", false, err, &edge) != 0)
		goto fail;
	json_object_set_new(rec, "capabilities", json_pack("{s:b}", "iotEdge", edge));

	size_t nhubs = 0;
	const char *single = NULL;
	if (build_hubs(body, linked, err, &hubs, &single, &nhubs) != 0)
		goto fail;
	if (single)
		json_object_set_new(rec, "iotHubHostName", lowercase_string(single));

	if (build_twin(body, err, &twin) != 0)
		goto fail;
	json_object_set_new(rec, "initialTwin", twin);

	char uuid[37], etag[40];
	crypto_uuid(uuid);
	snprintf(etag, sizeof etag, "\"%s\"", uuid);
	json_object_set_new(rec, "etag", json_string(etag));

	json_t *ps = member(body, "provisioningStatus");
	const char *status =
	    ps ? canonical(json_string_value(ps) ? json_string_value(ps) : "", statuses)
	       : "enabled";
	if (!status) {
		fail(err, "provisioningStatus must be 'enabled' or 'disabled'");
		goto fail;
	}
	json_object_set_new(rec, "provisioningStatus", json_string(status));

	json_t *rp = member(body, "reprovisionPolicy");
	bool update_hub = true, migrate = true;
	if (rp && !json_is_object(rp)) {
		fail(err, "reprovisionPolicy must be an object {\"updateHubAssignment\":bool,"
		          "\"migrateDeviceData\":bool}");
		goto fail;
	}
	if (bool_member(rp, "updateHubAssignment", "reprovisionPolicy.updateHubAssignment", true,
	                err, &update_hub) != 0 ||
	    bool_member(rp, "migrateDeviceData", "reprovisionPolicy.migrateDeviceData", true, err,
	                &migrate) != 0)
		goto fail;
	json_object_set_new(rec, "reprovisionPolicy",
	                    json_pack("{s:b,s:b}", "updateHubAssignment", update_hub,
	                              "migrateDeviceData", migrate));

	const char *created = json_string_value(member(existing, "createdDateTimeUtc"));
	json_object_set_new(rec, "createdDateTimeUtc", json_string(created ? created : now_iso));
	json_object_set_new(rec, "lastUpdatedDateTimeUtc", json_string(now_iso));

	json_t *ap = member(body, "allocationPolicy");
	const char *policy =
	    ap ? canonical(json_string_value(ap) ? json_string_value(ap) : "", policies) : "hashed";
	if (!policy) {
		fail(err, "allocationPolicy must be one of hashed, geoLatency, static, custom");
		goto fail;
	}
	if (strcmp(policy, "static") == 0 && nhubs != 1) {
		fail(err,
		     "allocationPolicy 'static' needs exactly one hub (one iotHubs entry or "
		     "iotHubHostName); %zu given",
		     nhubs);
		goto fail;
	}
	json_object_set_new(rec, "allocationPolicy", json_string(policy));
	json_object_set_new(rec, "iotHubs", hubs);
	hubs = NULL;

	if (strcmp(policy, "custom") == 0) {
		json_t *cad = member(body, "customAllocationDefinition");
		const char *url = json_string_value(member(cad, "webhookUrl"));
		const char *ver = json_string_value(member(cad, "apiVersion"));
		if (!json_is_object(cad) || !url || !*url || !ver || !*ver) {
			fail(err, "allocationPolicy 'custom' needs customAllocationDefinition with "
			          "webhookUrl and apiVersion");
			goto fail;
		}
		if (webhook_url_check(url, err) != 0)
			goto fail;
		if (!api_version_valid(ver)) {
			fail(err,
			     "customAllocationDefinition.apiVersion '%s' is not an API version "
			     "(like 2021-10-01)",
			     clip(ver).s);
			goto fail;
		}
		json_object_set_new(rec, "customAllocationDefinition",
		                    json_pack("{s:s,s:s}", "webhookUrl", url, "apiVersion", ver));
	}

	json_t *odi = member(body, "optionalDeviceInformation");
	if (odi && !json_is_object(odi)) {
		fail(err, "optionalDeviceInformation must be an object");
		goto fail;
	}
	if (odi)
		json_object_set_new(rec, "optionalDeviceInformation", json_deep_copy(odi));
	return rec;

fail:
	json_decref(hubs);
	json_decref(rec);
	return NULL;
}

/* ---- views -------------------------------------------------------------------- */

/* Drops one pair of surrounding double quotes. */
static void unquote(const char **s, size_t *n)
{
	if (*n >= 2 && (*s)[0] == '"' && (*s)[*n - 1] == '"') {
		(*s)++;
		*n -= 2;
	}
}

bool enrollment_etag_matches(const json_t *record, const char *if_match)
{
	if (!if_match || !*if_match || strcmp(if_match, "*") == 0)
		return true;
	const char *etag = json_string_value(json_object_get(record, "etag"));
	if (!etag)
		return false;
	size_t a = strlen(if_match), b = strlen(etag);
	unquote(&if_match, &a);
	unquote(&etag, &b);
	return a == b && memcmp(if_match, etag, a) == 0;
}

json_t *enrollment_redacted(const json_t *record)
{
	json_t *r = json_deep_copy(record);
	json_t *att = json_object_get(r, "attestation");
	if (json_is_object(att)) {
		if (json_object_get(att, "symmetricKey"))
			json_object_set_new(att, "symmetricKey", json_object());
		if (json_object_get(att, "tpm"))
			json_object_set_new(att, "tpm", json_object());
	}
	json_object_del(r, "registrationState");
	return r;
}

json_t *enrollment_attestation(const json_t *record)
{
	json_t *a = json_object_get(record, "attestation");
	return json_is_object(a) ? json_deep_copy(a) : json_pack("{s:s}", "type", "none");
}

bool enrollment_enabled(const json_t *record)
{
	const char *s = json_string_value(json_object_get(record, "provisioningStatus"));
	return !s || strcmp(s, "enabled") == 0;
}

const char *enrollment_attestation_type(const json_t *record)
{
	static const char *const types[] = {"symmetricKey", "x509", "tpm", NULL};
	const char *t =
	    json_string_value(json_object_get(json_object_get(record, "attestation"), "type"));
	const char *c = t ? canonical(t, types) : NULL;
	return c ? c : "none";
}

int enrollment_device_key(const json_t *record, enum enrollment_kind kind,
                          const char *registration_id, int which, char out[96])
{
	if (which != 0 && which != 1)
		return FH_ENOTFOUND;
	if (strcmp(enrollment_attestation_type(record), "symmetricKey") != 0)
		return FH_ENOTFOUND;
	json_t *sk = json_object_get(json_object_get(record, "attestation"), "symmetricKey");
	const char *k =
	    json_string_value(json_object_get(sk, which ? "secondaryKey" : "primaryKey"));
	if (!k || !*k || strlen(k) >= 96)
		return FH_ENOTFOUND;
	if (kind == ENROLLMENT_INDIVIDUAL) {
		memcpy(out, k, strlen(k) + 1);
		return 0;
	}
	char derived[45];
	if (!registration_id || sas_derive_key(k, registration_id, derived) != 0)
		return FH_ENOTFOUND;
	memcpy(out, derived, sizeof derived);
	return 0;
}
