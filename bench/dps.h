/* The load generator's provisioning scenarios, each a fresh TLS connection
 * per device, CONCURRENCY of them in flight, for a bounded duration:
 *
 *   dps-register    MQTT to the DPS: CONNECT as registration <prefix><n>
 *                   (SAS signed with the key derived from the group key),
 *                   SUBSCRIBE $dps/registrations/res/#, PUT iotdps-register,
 *                   then poll iotdps-get-operationstatus after each
 *                   retry-after the server gives, until "assigned"; then
 *                   DISCONNECT and start the next device
 *   tls-handshakes  the reference: TCP connect and a full TLS handshake with
 *                   the same listener, then close_notify
 *   dps-tpm         TPM attestation over HTTPS, the device side computed in
 *                   software (core/tpm.c does what the TPM would): PUT
 *                   register with the EK and SRK, open the 401's
 *                   authenticationKey, PUT again with the SAS it signs, poll
 *                   the operation after each retry-after, open the hub key
 *                   of "assigned"; one keep-alive connection per device.
 *                   Its individual enrollments are made first (REST, bulk,
 *                   --owner-key: the DPS's), spread over 8 EK/SRK pairs
 *
 * Registration ids carry a run tag so every run registers new devices.
 * Throughput counts completions during the measured window; latency is
 * from the TCP connect to "assigned" (to the finished handshake). */
#ifndef FH_BENCH_DPS_H
#define FH_BENCH_DPS_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

struct dps_plan {
	bool handshakes_only;    /* tls-handshakes */
	bool tpm;                /* dps-tpm: addr is the DPS's HTTPS listener */
	const char *owner_key;   /* dps-tpm: the DPS's provisioningserviceowner key */
	unsigned devices;        /* dps-tpm: enrollments made, the most registrations */
	const char *ca_file;     /* dps-tpm: to verify the DPS when making enrollments */
	struct sockaddr_in addr; /* the DPS's MQTT over TLS listener */
	const char *tls_name;    /* SNI and certificate name */
	SSL_CTX *tls;
	const char *scope;     /* id scope */
	const char *group_key; /* enrollment group key (base64) */
	const char *prefix;    /* registration ids <prefix><run tag>-<n> */
	unsigned concurrency;
	double duration_s;
	double timeout_s; /* per device, connect to assigned */
	unsigned long max_errors;
};

/* Runs the scenario, prints the result line; returns the exit status. */
int dps_run(const struct dps_plan *p);

#endif
