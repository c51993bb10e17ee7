/* The load generator's back end: K HTTPS keep-alive connections to the
 * hub's service REST API, each with a window of pipelined requests,
 * sending twin PATCHes (PATCH /twins/{id}, desired properties, signed with
 * the iothubowner policy). Used by twin-rest-patch (closed loop: every
 * window kept full) and twin-desired-latency (open loop: the caller sends
 * at a fixed rate and times the devices' notifications).
 *
 * Each request's desired patch carries a sequence number ("seq") that the
 * devices' notifications echo; answers come back in request order on each
 * connection, so a ring per connection matches them with their send
 * times. Connections are opened once; one that fails or closes is not
 * reopened (its outstanding requests are reported lost). */
#ifndef FH_BENCH_REST_H
#define FH_BENCH_REST_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* What each request is. */
enum rest_kind {
	REST_PATCH,  /* PATCH /twins/{id}: desired {"seq":N,"pad":".."} (answer 200) */
	REST_METHOD, /* POST /twins/{id}/methods: method "bench", payload {"seq":N,"pad":".."}
	                (answer 200 with the device's {"status","payload"}) */
	REST_C2D,    /* POST /fleethub/devices/{id}/messages: a --size B body (answer 201) */
};

struct rest_config {
	enum rest_kind kind;
	uv_loop_t *loop;
	SSL_CTX *tls;
	struct sockaddr_in addr; /* the hub's HTTPS listener */
	const char *hub;         /* host name: Host header, TLS name, SAS resource */
	const char *owner_key;   /* iothubowner primary key (base64) */
	const char *prefix;      /* device ids prefix0..prefix(devices-1) */
	unsigned devices;
	unsigned connections;
	unsigned window;  /* requests in flight per connection */
	unsigned size;    /* approximate body bytes */
	double timeout_s; /* TLS connect deadline and request timeout */
	bool closed_loop; /* while filling: every answered batch is replaced at once */
	uint64_t count;   /* closed loop: requests sent at most (0: no bound) */
};

struct rest_hooks {
	/* A connection became ready, or failed before it did (detail != NULL). */
	void (*connected)(const char *detail);
	/* The answer to a request sent at t0_ns (body: its first bytes). */
	void (*answered)(uint64_t t0_ns, uint64_t seq, int status, const char *body, size_t len);
	/* A ready connection closed or timed out with n requests outstanding. */
	void (*lost)(unsigned n, const char *detail);
};

/* Opens every connection; returns -1 after a message when the owner key is
 * unusable. */
int rest_start(const struct rest_config *cfg, const struct rest_hooks *hooks);
unsigned rest_connecting(void);
unsigned rest_ready(void);
/* Requests sent and not yet answered or lost. */
uint64_t rest_outstanding(void);
/* Sends PATCH seq for device seq % devices on the next ready connection
 * with room in its window; false when none has room. */
bool rest_send(uint64_t seq);
/* Closed loop: on (at the start of the measurement) fills every
 * connection's window, one write each, and keeps them full; off stops
 * sending. */
void rest_filling(bool on);
/* Requests older than the timeout: their connection is closed (lost). */
void rest_sweep(uint64_t now_ns);
/* Closes every connection; done() runs once all are closed. */
void rest_close(bool graceful, void (*done)(void));
void rest_free(void);

#endif
