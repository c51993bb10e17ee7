/* libFuzzer target: the DPS device requests (src/dps/dps_wire.c). The
 * first byte picks the parser, the rest is its input: 0 an MQTT CONNECT
 * user name, 1 a PUBLISH topic, 2 a register body, 3 an HTTPS device path.
 * Invariants checked: whatever is accepted is valid (a registration id
 * that enrollment_regid_valid accepts and that occurs in the input, a $rid
 * of safe characters that occurs in the input, bounded operation ids), a
 * refused body has a message, and a payload is a reference the caller owns. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps/internal.h"

#define SCOPE "0ne00F1EE7"

static void check_in_input(const char *s, const uint8_t *data, size_t size)
{
	size_t n = strlen(s);
	if (n == 0 || !memmem(data, size, s, n))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0] & 3;
	const char *in = (const char *)data + 1;
	size_t n = size - 1;
	char regid[ENROLLMENT_ID_MAX + 1], rid[DPS_RID_MAX + 1], op[DPS_OPID_MAX + 1];

	if (mode == 0) {
		if (dps__wire_username(SCOPE, in, n, regid)) {
			if (!enrollment_regid_valid(regid))
				abort();
			check_in_input(regid, data, size);
		}
	} else if (mode == 1) {
		enum dps_topic t = dps__wire_topic(in, n, rid, op);
		if (t != DPS_TOPIC_UNKNOWN) {
			check_in_input(rid, data, size);
			if (strcspn(rid, "&/+#?=") != strlen(rid) || strlen(op) > DPS_OPID_MAX)
				abort();
			if (t == DPS_TOPIC_REGISTER && op[0])
				abort();
			if (op[0])
				check_in_input(op, data, size);
		}
	} else if (mode == 2) {
		json_t *payload = (json_t *)1, *tpm = (json_t *)1;
		char msg[300] = "";
		int rc = dps__wire_register_body("dev-1", in, n, &payload, &tpm, msg, sizeof msg);
		if (rc == 0) {
			if (msg[0] || (tpm && !json_is_string(json_object_get(tpm, "endorsementKey"))))
				abort();
			json_decref(payload);
			json_decref(tpm);
		} else if (rc != -1 || payload || tpm || !msg[0]) {
			abort();
		}
	} else {
		/* A path as the HTTP codec hands it over: NUL-terminated, no
		 * query string. */
		char *path = malloc(n + 1);
		memcpy(path, in, n);
		path[n] = '\0';
		(void)dps__wire_is_device_path(SCOPE, path);
		enum dps_path p = dps__wire_path(SCOPE, path, regid, op);
		if (p != DPS_PATH_INVALID) {
			if (!enrollment_regid_valid(regid))
				abort();
			if ((p == DPS_PATH_OPERATION) != (op[0] != '\0') ||
			    strlen(op) > DPS_OPID_MAX)
				abort();
		}
		free(path);
	}
	return 0;
}
