/* The load generator's set-up step: device identities created through the
 * hub's service REST API (PUT /devices/{id} with an iothubowner SAS), so a
 * run starts from the same state a real fleet would. Runs before the loop
 * starts, with libcurl's multi interface (blocking the caller, a bounded
 * number of requests in flight); it is not part of any measurement. */
#ifndef FH_BENCH_DEVICES_H
#define FH_BENCH_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* Device i is named "<prefix><i>". Its primary key is derived from the
 * run's group key as DPS derives group members' keys (sas_derive_key), so
 * the generator can sign its SAS tokens without asking the server. */
void devices_id(char *out, size_t outlen, const char *prefix, unsigned i);

/* Appends the MQTT user name ("<hub>/<id>/?api-version=...") and password
 * (a SAS token for <hub>/devices/<id>, signed with the key derived from
 * group_key, valid until expiry, Unix seconds) device id presents to the
 * hub. Returns 0, or -1 when group_key is not base64. */
int devices_mqtt_login(const char *hub, const char *group_key, const char *id, int64_t expiry,
                       struct buf *user, struct buf *password);

/* Appends the header line "Authorization: SharedAccessSignature ..." (no
 * CRLF) of the hub's iothubowner policy, valid until expiry (Unix
 * seconds). Returns 0, or -1 when owner_key is not base64. */
int devices_owner_auth(const char *hub, const char *owner_key, int64_t expiry, struct buf *out);
/* That header line, valid for DEVICES_TOKEN_LIFETIME_S from now, as a new
 * string; NULL (after saying why on stderr) when owner_key is not base64. */
#define DEVICES_TOKEN_LIFETIME_S 7200
char *devices_owner_header(const char *hub, const char *owner_key);

struct devices_plan {
	const char *hub;     /* hub host name: URL host, TLS name, SAS resource */
	const char *address; /* "ip:port" of the hub's HTTPS listener */
	const char *ca_file; /* CA to verify the server (NULL with insecure) */
	bool insecure;
	const char *owner_key; /* iothubowner primary key (base64) */
	const char *group_key; /* base64; device keys are derived from it */
	const char *prefix;
	unsigned count;
	bool x509_ca; /* certificateAuthority devices (no keys) instead of SAS ones */
};

/* Creates devices 0..count-1, or updates them when they exist (If-Match
 * "*"), so their keys are the derived ones either way. Returns 0, or -1
 * after printing the first failures to stderr. */
int devices_create(const struct devices_plan *p);

#endif
