/* The load generator's AMQP scenarios (issue 19), an AMQP 1.0 client on
 * Qpid Proton's connection driver over tlsconn (the bare AMQP header and a
 * CBS put-token, as the service SDK does it):
 *
 *   amqp-consume  one connection and one receiver per partition of the
 *                 hub's Event Hub-compatible endpoint, from the start of
 *                 the log, with credit kept topped up, until count events
 *                 arrived (or none came for 5 s): events per second from
 *                 the first event to the last
 *   c2d-send      one connection, a sender on /messages/devicebound with
 *                 up to window messages unsettled, count messages spread
 *                 over the devices <prefix>0..<devices-1>: sends accepted
 *                 per second, latency from transfer to disposition */
#ifndef FH_BENCH_AMQP_H
#define FH_BENCH_AMQP_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>

struct amqp_plan {
	bool consume;            /* amqp-consume, else c2d-send */
	struct sockaddr_in addr; /* the hub's AMQP listener */
	const char *tls_name;    /* SNI and certificate name: the hub's */
	SSL_CTX *tls;
	const char *hub;         /* its host name */
	const char *owner_key;   /* iothubowner's key */
	unsigned partitions;     /* amqp-consume: receivers */
	unsigned long count;     /* events to read / messages to send */
	unsigned devices;        /* c2d-send: the devices messages go to */
	const char *prefix;      /* their ids: <prefix><n> (devices_id) */
	unsigned window;         /* c2d-send: unsettled at once */
	unsigned size;           /* c2d-send: body bytes */
	double duration_s;       /* the most a run takes */
};

/* Runs the scenario, prints the result line; returns the exit status. */
int amqp_run(const struct amqp_plan *p);

#endif
