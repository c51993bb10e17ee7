/* libFuzzer target: enrollment records. The input is a JSON body; it is
 * built as an individual enrollment and as an enrollment group, created and
 * then as an update of the record just made, and every view of an accepted
 * record is taken. Invariants checked: a refusal is a 400 with a message, a
 * record has the path id, an etag its own If-Match accepts, two symmetric
 * keys a device key can be read from, and a redacted view without key
 * material. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/enrollment.h"

static const char *const HUB_NAMES[] = {"hub-a.example.com", "hub-b.example.com"};
static const struct enrollment_hubs HUBS = {HUB_NAMES, 2};

static void check(enum enrollment_kind kind, const char *id, const json_t *rec)
{
	const char *idkey = kind == ENROLLMENT_GROUP ? "enrollmentGroupId" : "registrationId";
	const char *got = json_string_value(json_object_get(rec, idkey));
	if (!got || strcmp(got, id) != 0)
		abort();
	if (!enrollment_etag_matches(rec, json_string_value(json_object_get(rec, "etag"))))
		abort();
	(void)enrollment_enabled(rec);
	json_t *att = enrollment_attestation(rec);
	json_decref(att);
	json_t *red = enrollment_redacted(rec);
	json_t *ratt = json_object_get(red, "attestation");
	json_t *rsk = json_object_get(ratt, "symmetricKey"), *rtpm = json_object_get(ratt, "tpm");
	if ((rsk && json_object_size(rsk) != 0) || (rtpm && json_object_size(rtpm) != 0))
		abort();
	char *text = json_dumps(red, JSON_COMPACT);
	if (!text)
		abort();
	free(text);
	json_decref(red);
	bool sym = strcmp(enrollment_attestation_type(rec), "symmetricKey") == 0;
	for (int which = 0; which < 2; which++) {
		char key[96];
		int rc = enrollment_device_key(rec, kind, "fuzz-dev", which, key);
		if (sym != (rc == 0))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body = json_loadb((const char *)data, size, 0, NULL);
	if (!body)
		return 0;
	for (int k = 0; k < 2; k++) {
		enum enrollment_kind kind = k ? ENROLLMENT_GROUP : ENROLLMENT_INDIVIDUAL;
		const char *id = k ? "Fuzz-Group" : "fuzz-dev";
		struct enrollment_error err;
		json_t *rec =
		    enrollment_build(kind, id, body, NULL, &HUBS, "2026-01-01T00:00:00.000Z", &err);
		if (!rec) {
			if (err.status != 400 || err.code != 400004 || !err.message[0])
				abort();
			continue;
		}
		check(kind, id, rec);
		json_t *upd =
		    enrollment_build(kind, id, body, rec, &HUBS, "2026-01-01T00:00:01.000Z", &err);
		if (!upd)
			abort(); /* the same body cannot become invalid on update */
		check(kind, id, upd);
		json_decref(upd);
		json_decref(rec);
	}
	json_decref(body);
	return 0;
}
