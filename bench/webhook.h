/* The load generator's custom allocation webhook: a local HTTPS server
 * that answers every POST with an AllocationResponse naming one hub, an
 * initial twin and a payload for the device, after a fixed delay (the
 * dps-custom-slow scenario). It checks that each request carries the
 * device's registration id and counts the ones that do not as errors.
 * Runs until SIGINT or SIGTERM, then prints one line:
 *   webhook requests=<n> answered=<n> errors=<n> p50_us=.. max_us=..
 * where the latency is the time from a request's last byte to its answer
 * being written (the delay plus the webhook's own work). */
#ifndef FH_BENCH_WEBHOOK_H
#define FH_BENCH_WEBHOOK_H

#include <netinet/in.h>
#include <openssl/ssl.h>

struct webhook_plan {
	struct sockaddr_in addr; /* where to listen (loopback) */
	SSL_CTX *tls;            /* server context (certificate and key) */
	const char *hub;         /* iotHubHostName of every answer */
	unsigned delay_ms;
};

/* Serves until a signal; returns the exit status (0, or 3 when it could
 * not listen). */
int webhook_run(const struct webhook_plan *p);

#endif
