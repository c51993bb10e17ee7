/* seed-twins: gives devices 0..N-1 the tags and reported properties of
 * twinset.h, as a back end and the devices themselves would, so the query
 * scenarios have a known fleet to ask about. Not a measurement (its line
 * says how long each step took), but every answer is checked:
 *
 *   1. tags      PATCH /twins/{id} {"tags":{...}} (iothubowner SAS) over
 *                --connections HTTPS keep-alive connections, --inflight
 *                pipelined on each; every answer must be 200
 *   2. reported  --concurrency devices at a time, each its own MQTT/TLS
 *                session (SAS signed with its derived key): SUBSCRIBE
 *                $iothub/twin/res/#, PUBLISH
 *                $iothub/twin/PATCH/properties/reported/?$rid=1, wait for
 *                $iothub/twin/res/204/?$rid=1, DISCONNECT; then the slot's
 *                next device
 *
 * A device whose PATCH or report fails is an error (nothing is retried);
 * the exit status is 1 when errors exceed --max-errors. */
#ifndef FH_BENCH_SEED_H
#define FH_BENCH_SEED_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdint.h>

struct seed_plan {
	struct sockaddr_in mqtt_addr; /* the hub's MQTT over TLS listener */
	struct sockaddr_in rest_addr; /* its HTTPS listener */
	const char *target, *rest;    /* the same, as given (for the line) */
	const char *tls_name;         /* SNI and certificate name */
	SSL_CTX *tls;
	const char *hub;       /* host name: Host header, user names, SAS resources */
	const char *owner_key; /* iothubowner key (base64) */
	const char *group_key; /* device keys are derived from it */
	const char *prefix;    /* device ids <prefix>0 .. <prefix>(devices-1) */
	unsigned devices;
	unsigned connections; /* REST connections for the tags */
	unsigned window;      /* PATCHes pipelined per connection */
	unsigned concurrency; /* device sessions at once for the reports */
	unsigned keepalive;
	double timeout_s; /* connect deadline; per PATCH; per device, connect to 204 */
	unsigned long max_errors;
};

/* Runs both steps, prints the result line; returns the exit status. */
int seed_run(const struct seed_plan *p);

#endif
