/* DPS enrollment records (see enrollment.h). */
#include "core/enrollment.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "codec/sas.h"

static bool id_valid(const char *id, bool upper_ok)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0 || n > ENROLLMENT_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
			  c == '_' || c == ':' || (upper_ok && c >= 'A' && c <= 'Z');
		if (!ok)
			return false;
	}
	return true;
}

bool enrollment_regid_valid(const char *id)
{
	return id_valid(id, false);
}

bool enrollment_groupid_valid(const char *id)
{
	return id_valid(id, true);
}

static json_t *fail(struct enrollment_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static json_t *fail(struct enrollment_error *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	err->status = 400;
	err->code = 400004;
	return NULL;
}

static bool key_ok(const char *k)
{
	uint8_t raw[B64_DECODED_MAX(128) + 1];
	size_t n;
	size_t len = strlen(k);
	return len <= 128 && b64_decode(k, len, raw, &n) == 0 && n >= 16 && n <= 64;
}

static json_t *new_key(void)
{
	uint8_t raw[64];
	struct buf b = BUF_INIT;
	crypto_random(raw, sizeof raw);
	b64_encode_buf(&b, raw, sizeof raw);
	json_t *s = json_string(b.data);
	buf_free(&b);
	return s;
}

static bool linked(const struct enrollment_hubs *hubs, const char *name)
{
	for (size_t i = 0; i < hubs->n; i++)
		if (strcasecmp(hubs->names[i], name) == 0)
			return true;
	return false;
}

static json_t *lower_string(const char *s)
{
	char *c = strdup(s);
	for (char *p = c; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	json_t *o = json_string(c);
	free(c);
	return o;
}

/* http:// is allowed for a loopback host only. */
static bool webhook_url_ok(const char *url, const char **why)
{
	const char *rest;
	if (strncasecmp(url, "https://", 8) == 0) {
		rest = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		rest = url + 7;
		size_t alen = strcspn(rest, "/?#");
		char auth[300];
		if (alen >= sizeof auth) {
			*why = "the URL's host is too long";
			return false;
		}
		memcpy(auth, rest, alen);
		auth[alen] = '\0';
		char *host = strrchr(auth, '@') ? strrchr(auth, '@') + 1 : auth;
		if (host[0] == '[') {
			char *close = strchr(host, ']');
			if (close)
				*close = '\0';
			host++;
		} else if (strchr(host, ':')) {
			*strchr(host, ':') = '\0';
		}
		unsigned a, b, c, d;
		char tail;
		bool loop = strcasecmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 ||
			    (sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4 && a == 127 &&
			     b < 256 && c < 256 && d < 256);
		if (!loop) {
			*why = "webhookUrl must be https:// (http:// is accepted only for localhost "
			       "and 127.0.0.0/8)";
			return false;
		}
	} else {
		*why = "webhookUrl must be an https:// URL";
		return false;
	}
	if (!*rest || *rest == '/' || *rest == '?') {
		*why = "webhookUrl has no host";
		return false;
	}
	return true;
}

static json_t *build_attestation(enum enrollment_kind kind, const json_t *att,
				 const json_t *old_att, struct enrollment_error *err)
{
	if (!json_is_object(att))
		return fail(err, "attestation is required: {\"type\":\"symmetricKey\"|\"x509\"|"
				 "\"tpm\"|\"none\", ...}");
	const char *type = json_string_value(json_object_get(att, "type"));
	if (!type)
		return fail(err, "attestation.type is required");
	json_t *out = json_object();
	if (strcmp(type, "symmetricKey") == 0) {
		json_t *sk = json_object_get(att, "symmetricKey");
		json_t *osk = json_object_get(old_att, "symmetricKey");
		json_t *keys = json_object();
		static const char *names[] = {"primaryKey", "secondaryKey"};
		for (int i = 0; i < 2; i++) {
			const char *k = json_string_value(json_object_get(sk, names[i]));
			const char *ok = json_string_value(json_object_get(osk, names[i]));
			if (k && *k) {
				if (!key_ok(k)) {
					json_decref(keys);
					json_decref(out);
					return fail(err,
						    "attestation.symmetricKey.%s must be base64 of "
						    "16..64 bytes",
						    names[i]);
				}
				json_object_set_new(keys, names[i], json_string(k));
			} else if (ok && *ok) {
				json_object_set_new(keys, names[i], json_string(ok));
			} else {
				json_object_set_new(keys, names[i], new_key());
			}
		}
		json_object_set_new(out, "type", json_string(type));
		json_object_set_new(out, "symmetricKey", keys);
		return out;
	}
	if (strcmp(type, "tpm") == 0) {
		json_t *tpm = json_object_get(att, "tpm");
		if (!json_is_string(json_object_get(tpm, "endorsementKey")))
			return json_decref(out), fail(err, "attestation.tpm.endorsementKey is required");
		if (kind == ENROLLMENT_GROUP)
			return json_decref(out),
			       fail(err, "TPM attestation is for individual enrollments only");
	} else if (strcmp(type, "x509") == 0) {
		json_t *x = json_object_get(att, "x509");
		bool has = json_object_get(x, "signingCertificates") ||
			   json_object_get(x, "caReferences") ||
			   (kind == ENROLLMENT_INDIVIDUAL && json_object_get(x, "clientCertificates"));
		if (!json_is_object(x) || !has)
			return json_decref(out),
			       fail(err, "attestation.x509 needs %s",
				    kind == ENROLLMENT_INDIVIDUAL
					    ? "clientCertificates, signingCertificates or "
					      "caReferences"
					    : "signingCertificates or caReferences");
	} else if (strcmp(type, "none") != 0) {
		return json_decref(out),
		       fail(err, "attestation.type '%s' is not one of none, tpm, x509, symmetricKey",
			    type);
	}
	json_decref(out);
	return json_deep_copy(att);
}

static json_t *build_twin(const json_t *tw, struct enrollment_error *err)
{
	json_t *tags = json_object_get(tw, "tags");
	json_t *props = json_object_get(tw, "properties");
	json_t *desired = json_is_object(props) ? json_object_get(props, "desired") : NULL;
	if ((tw && !json_is_object(tw)) || (tags && !json_is_object(tags) && !json_is_null(tags)) ||
	    (props && !json_is_object(props) && !json_is_null(props)) ||
	    (desired && !json_is_object(desired) && !json_is_null(desired)))
		return fail(err, "initialTwin must be {\"tags\":{..},\"properties\":{\"desired\":"
				 "{..}}}");
	json_t *t = json_is_object(tags) ? json_deep_copy(tags) : json_object();
	json_t *d = json_is_object(desired) ? json_deep_copy(desired) : json_object();
	/* TwinCollection bookkeeping ($metadata, $version, count) is not data. */
	static const char *drop[] = {"$metadata", "$version", "count", "version"};
	for (size_t i = 0; i < 4; i++) {
		json_object_del(t, drop[i]);
		json_object_del(d, drop[i]);
	}
	return json_pack("{s:o,s:{s:o}}", "tags", t, "properties", "desired", d);
}

json_t *enrollment_build(enum enrollment_kind kind, const char *id, const json_t *body,
			 const json_t *existing, const struct enrollment_hubs *hubs,
			 const char *now_iso, struct enrollment_error *err)
{
	memset(err, 0, sizeof *err);
	bool group = kind == ENROLLMENT_GROUP;
	const char *idkey = group ? "enrollmentGroupId" : "registrationId";
	if (group ? !enrollment_groupid_valid(id) : !enrollment_regid_valid(id))
		return fail(err, "%s '%.128s' is not valid (1-128 of %s, '-', '.', '_', ':')", idkey,
			    id, group ? "letters, digits" : "lowercase letters, digits");
	if (!json_is_object(body))
		return fail(err, "the body must be a JSON object");
	json_t *bid = json_object_get(body, idkey);
	if (bid && (!json_is_string(bid) || strcmp(json_string_value(bid), id) != 0))
		return fail(err, "%s in the body differs from the one in the path", idkey);

	json_t *rec = json_object();
	json_object_set_new(rec, idkey, json_string(id));
	if (!group) {
		json_t *dev = json_object_get(body, "deviceId");
		if (dev && !json_is_null(dev)) {
			const char *d = json_string_value(dev);
			size_t dl = d ? strlen(d) : 0;
			if (!d || dl == 0 || dl > 128)
				return json_decref(rec), fail(err, "deviceId must be 1-128 characters");
			json_object_set_new(rec, "deviceId", json_string(d));
		}
	}
	json_t *att = build_attestation(kind, json_object_get(body, "attestation"),
					existing ? json_object_get(existing, "attestation") : NULL, err);
	if (!att)
		return json_decref(rec), NULL;
	json_object_set_new(rec, "attestation", att);

	json_t *caps = json_object_get(body, "capabilities");
	json_t *edge = json_object_get(caps, "iotEdge");
	json_object_set_new(rec, "capabilities", json_pack("{s:b}", "iotEdge", json_is_true(edge)));

	json_t *hublist = json_array();
	json_t *ih = json_object_get(body, "iotHubs");
	if (ih && !json_is_null(ih) && !json_is_array(ih))
		return json_decref(rec), json_decref(hublist),
		       fail(err, "iotHubs must be an array of hub host names");
	size_t i;
	json_t *h;
	json_array_foreach(ih, i, h)
	{
		const char *name = json_string_value(h);
		if (!name || !linked(hubs, name))
			return json_decref(rec), json_decref(hublist),
			       fail(err, "iotHubs: hub '%.100s' is not linked to this DPS",
				    name ? name : "(not a string)");
		json_array_append_new(hublist, lower_string(name));
	}
	const char *single = json_string_value(json_object_get(body, "iotHubHostName"));
	if (single && *single) {
		if (!linked(hubs, single))
			return json_decref(rec), json_decref(hublist),
			       fail(err, "iotHubHostName: hub '%.100s' is not linked to this DPS",
				    single);
		json_object_set_new(rec, "iotHubHostName", lower_string(single));
	}

	json_t *tw = build_twin(json_object_get(body, "initialTwin"), err);
	if (!tw)
		return json_decref(rec), json_decref(hublist), NULL;
	json_object_set_new(rec, "initialTwin", tw);

	char uuid[37], etag[40];
	crypto_uuid(uuid);
	snprintf(etag, sizeof etag, "\"%s\"", uuid);
	json_object_set_new(rec, "etag", json_string(etag));

	json_t *ps = json_object_get(body, "provisioningStatus");
	const char *pss = ps ? json_string_value(ps) : "enabled";
	if (!pss || (strcmp(pss, "enabled") != 0 && strcmp(pss, "disabled") != 0))
		return json_decref(rec), json_decref(hublist),
		       fail(err, "provisioningStatus must be enabled or disabled");
	json_object_set_new(rec, "provisioningStatus", json_string(pss));

	json_t *rp = json_object_get(body, "reprovisionPolicy");
	json_t *upd = json_object_get(rp, "updateHubAssignment");
	json_t *mig = json_object_get(rp, "migrateDeviceData");
	if ((rp && !json_is_object(rp) && !json_is_null(rp)) || (upd && !json_is_boolean(upd)) ||
	    (mig && !json_is_boolean(mig)))
		return json_decref(rec), json_decref(hublist),
		       fail(err, "reprovisionPolicy must be {\"updateHubAssignment\":bool,"
				 "\"migrateDeviceData\":bool}");
	json_object_set_new(rec, "reprovisionPolicy",
			    json_pack("{s:b,s:b}", "updateHubAssignment", upd ? json_is_true(upd) : 1,
				      "migrateDeviceData", mig ? json_is_true(mig) : 1));

	const char *created = existing ? json_string_value(json_object_get(existing,
									   "createdDateTimeUtc"))
				       : NULL;
	json_object_set_new(rec, "createdDateTimeUtc", json_string(created ? created : now_iso));
	json_object_set_new(rec, "lastUpdatedDateTimeUtc", json_string(now_iso));

	json_t *ap = json_object_get(body, "allocationPolicy");
	const char *policy = ap && !json_is_null(ap) ? json_string_value(ap) : "hashed";
	if (!policy || (strcmp(policy, "hashed") != 0 && strcmp(policy, "geoLatency") != 0 &&
			strcmp(policy, "static") != 0 && strcmp(policy, "custom") != 0))
		return json_decref(rec), json_decref(hublist),
		       fail(err, "allocationPolicy must be hashed, geoLatency, static or custom");
	json_object_set_new(rec, "allocationPolicy", json_string(policy));
	size_t nhubs = json_array_size(hublist) + (single && *single && !json_array_size(hublist));
	if (strcmp(policy, "static") == 0 && nhubs != 1)
		return json_decref(rec), json_decref(hublist),
		       fail(err, "allocationPolicy 'static' needs exactly one hub (iotHubs or "
				 "iotHubHostName)");
	json_object_set_new(rec, "iotHubs", hublist);

	json_t *cad = json_object_get(body, "customAllocationDefinition");
	if (strcmp(policy, "custom") == 0) {
		const char *url = json_string_value(json_object_get(cad, "webhookUrl"));
		const char *ver = json_string_value(json_object_get(cad, "apiVersion"));
		const char *why = NULL;
		if (!url || !*url || !ver || !*ver)
			return json_decref(rec),
			       fail(err, "allocationPolicy 'custom' needs customAllocationDefinition "
					 "with webhookUrl and apiVersion");
		if (strlen(url) > 2048 || !webhook_url_ok(url, &why))
			return json_decref(rec), fail(err, "customAllocationDefinition: %s",
						      why ? why : "webhookUrl is too long");
		json_object_set_new(rec, "customAllocationDefinition",
				    json_pack("{s:s,s:s}", "webhookUrl", url, "apiVersion", ver));
	}
	json_t *odi = json_object_get(body, "optionalDeviceInformation");
	if (json_is_object(odi))
		json_object_set(rec, "optionalDeviceInformation", odi);
	return rec;
}

bool enrollment_etag_matches(const json_t *record, const char *if_match)
{
	if (!if_match || !*if_match || strcmp(if_match, "*") == 0)
		return true;
	const char *etag = json_string_value(json_object_get(record, "etag"));
	if (!etag)
		return false;
	size_t a = strlen(if_match), b = strlen(etag);
	const char *ap = if_match, *bp = etag;
	if (a >= 2 && ap[0] == '"' && ap[a - 1] == '"')
		ap++, a -= 2;
	if (b >= 2 && bp[0] == '"' && bp[b - 1] == '"')
		bp++, b -= 2;
	return a == b && memcmp(ap, bp, a) == 0;
}

json_t *enrollment_redacted(const json_t *record)
{
	json_t *r = json_deep_copy(record);
	json_t *att = json_object_get(r, "attestation");
	json_t *sk = json_object_get(att, "symmetricKey");
	if (sk)
		json_object_set_new(att, "symmetricKey", json_object());
	json_t *tpm = json_object_get(att, "tpm");
	if (tpm) {
		json_object_del(tpm, "endorsementKey");
		json_object_del(tpm, "storageRootKey");
	}
	json_object_del(r, "registrationState");
	return r;
}

json_t *enrollment_attestation(const json_t *record)
{
	json_t *a = json_object_get(record, "attestation");
	return a ? json_deep_copy(a) : json_object();
}

bool enrollment_enabled(const json_t *record)
{
	const char *s = json_string_value(json_object_get(record, "provisioningStatus"));
	return !s || strcmp(s, "enabled") == 0;
}

const char *enrollment_attestation_type(const json_t *record)
{
	const char *t = json_string_value(
		json_object_get(json_object_get(record, "attestation"), "type"));
	if (t && (strcmp(t, "symmetricKey") == 0 || strcmp(t, "x509") == 0 ||
		  strcmp(t, "tpm") == 0))
		return t;
	return "none";
}

int enrollment_device_key(const json_t *record, enum enrollment_kind kind,
			  const char *registration_id, int which, char out[96])
{
	json_t *sk = json_object_get(json_object_get(record, "attestation"), "symmetricKey");
	const char *k = json_string_value(json_object_get(sk, which ? "secondaryKey"
								    : "primaryKey"));
	if (!k || !*k || strlen(k) >= 96)
		return FH_ENOTFOUND;
	if (kind == ENROLLMENT_INDIVIDUAL) {
		snprintf(out, 96, "%s", k);
		return 0;
	}
	char derived[45];
	if (sas_derive_key(k, registration_id, derived) != 0)
		return FH_ENOTFOUND;
	snprintf(out, 96, "%s", derived);
	return 0;
}
