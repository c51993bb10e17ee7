/* The load generator's set-up step: device identities created through the
 * hub's service REST API (PUT /devices/{id} with an iothubowner SAS), so a
 * run starts from the same state a real fleet would. Runs before the loop
 * starts, with libcurl's multi interface (blocking the caller, a bounded
 * number of requests in flight); it is not part of any measurement. */
#ifndef FH_BENCH_DEVICES_H
#define FH_BENCH_DEVICES_H

#include <stdbool.h>
#include <stddef.h>

/* Device i is named "<prefix><i>". Its primary key is derived from the
 * run's group key as DPS derives group members' keys (sas_derive_key), so
 * the generator can sign its SAS tokens without asking the server. */
void devices_id(char *out, size_t outlen, const char *prefix, unsigned i);

struct devices_plan {
	const char *hub;     /* hub host name: URL host, TLS name, SAS resource */
	const char *address; /* "ip:port" of the hub's HTTPS listener */
	const char *ca_file; /* CA to verify the server (NULL with insecure) */
	bool insecure;
	const char *owner_key; /* iothubowner primary key (base64) */
	const char *group_key; /* base64; device keys are derived from it */
	const char *prefix;
	unsigned count;
};

/* Creates devices 0..count-1, or updates them when they exist (If-Match
 * "*"), so their keys are the derived ones either way. Returns 0, or -1
 * after printing the first failures to stderr. */
int devices_create(const struct devices_plan *p);

#endif
