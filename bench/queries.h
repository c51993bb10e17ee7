/* The load generator's twin queries: POST /devices/query on HTTPS
 * keep-alive connections to the hub (iothubowner SAS), one query at a time
 * per connection, each query's pages fetched one after another
 * (x-ms-max-item-count: QUERIES_PAGE, then the previous page's
 * x-ms-continuation until a page comes without one). Kinds:
 *
 *   tag-eq          SELECT * FROM devices WHERE tags.plant = 'plant-<k>'
 *                   (k = 389 q mod 1000 for the q-th query of the kind)
 *   reported-range  SELECT * FROM devices WHERE properties.reported.temperature
 *                   >= X AND properties.reported.temperature < X + 10
 *                   (X = (3779 q mod 9001) / 100, in [0, 90], two decimals)
 *   group-count     SELECT properties.reported.firmware AS firmware, COUNT() AS n
 *                   FROM devices GROUP BY properties.reported.firmware
 *
 * Every answer is checked against the seeded fleet, devices 0..seeded-1
 * (twinset.h), and a query counts as done only when all of it is right:
 * every page 200; for twin rows, each row's deviceId is a seeded device
 * that satisfies the condition and comes once, and their number is exactly
 * the one twinset gives (so the set is exactly the expected one); for
 * GROUP BY, one row per firmware the fleet has, its n the seeded count
 * (so the n sum to the device count). The first wrong page ends the query
 * as failed. The hub must hold no other twins that match. */
#ifndef FH_BENCH_QUERIES_H
#define FH_BENCH_QUERIES_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define QUERIES_PAGE 1000 /* x-ms-max-item-count: the most the hub serves */

enum queries_kind { QUERIES_TAG_EQ, QUERIES_REPORTED_RANGE, QUERIES_GROUP_COUNT, QUERIES_KINDS };

extern const char *const queries_kind_names[QUERIES_KINDS]; /* "tag-eq", ... */

struct queries_config {
	uv_loop_t *loop;
	SSL_CTX *tls;
	struct sockaddr_in addr; /* the hub's HTTPS listener */
	const char *hub;         /* host name: Host header, TLS name, SAS resource */
	const char *owner_key;   /* iothubowner key (base64) */
	const char *prefix;      /* device ids <prefix>0 .. */
	unsigned seeded;         /* devices seed-twins gave twinset's values */
	unsigned connections;
	double timeout_s; /* TLS connect deadline, and per page */
};

/* A query that ended. error is NULL when it was right (status 200);
 * otherwise it says what was wrong, and status is the first status other
 * than 200 (or 200 when the rows were wrong). */
struct queries_outcome {
	enum queries_kind kind;
	uint64_t t0_ns; /* when its first page was requested */
	int status;
	const char *error; /* borrowed for the call */
	unsigned rows, pages;
};

struct queries_hooks {
	/* A connection became ready, or failed before it did (detail != NULL). */
	void (*connected)(const char *detail);
	/* A query ended; the connection is idle again (queries_send may be
	 * called from here). */
	void (*done)(const struct queries_outcome *o);
	/* A ready connection closed (other than by queries_close) or timed
	 * out; n is 1 when it lost a query in progress, else 0. */
	void (*lost)(unsigned n, const char *detail);
};

/* Opens every connection; returns -1 after a message when the owner key is
 * unusable. */
int queries_start(const struct queries_config *cfg, const struct queries_hooks *hooks);
unsigned queries_connecting(void);
unsigned queries_ready(void);
/* Queries in progress. */
uint64_t queries_outstanding(void);
/* Starts the next query of kind on an idle ready connection; false when
 * there is none. */
bool queries_send(enum queries_kind kind);
/* A page unanswered for longer than the timeout: its connection is closed
 * and its query lost. */
void queries_sweep(uint64_t now_ns);
/* Closes every connection; done() runs once all are closed. */
void queries_close(bool graceful, void (*done)(void));
void queries_free(void);

#endif
