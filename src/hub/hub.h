/* A hub virtual host: its name and aliases, shared access policies, its
 * session table (sessions.h), and the entry points the server wiring calls
 * for a new MQTT connection or an HTTPS request routed to it.
 *
 * Invariants: at most one live session per device id (a new CONNECT
 * replaces the old session); everything here runs on the loop thread; the
 * store is the only source of truth for identities, twins and durable
 * sessions (live sessions keep no copy of the first two). */
#ifndef FH_HUB_HUB_H
#define FH_HUB_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/map.h"
#include "codec/sas.h"
#include "core/ca.h"
#include "core/device_events.h"
#include "core/ratelimit.h"
#include "core/twin.h"
#include "net/http_server.h"
#include "net/net.h"
#include "sessions.h"
#include "store/store.h"
#include "c2d.h"
#include "methods.h"
#include "telemetry.h"

struct amqp_link;

enum hub_right {
	HUB_RIGHT_REGISTRY_READ = 1,
	HUB_RIGHT_REGISTRY_WRITE = 2,
	HUB_RIGHT_SERVICE_CONNECT = 4,
	HUB_RIGHT_DEVICE_CONNECT = 8,
};

#define HUB_NPOLICIES 5
#define HUB_MAX_ALIASES 16

struct hub {
	char name[256];
	char *aliases[HUB_MAX_ALIASES]; /* IP literals of this hub's own listeners */
	size_t naliases;
	/* iothubowner, service, device, registryRead, registryReadWrite;
	 * rights are enum hub_right bits */
	struct sas_policy policies[HUB_NPOLICIES];
	struct store *store;
	struct twin_limits limits;
	size_t max_packet;           /* largest MQTT packet accepted */
	unsigned max_inflight;       /* twin operations in flight per session */
	unsigned x509_depth;         /* intermediates allowed in a device's chain */
	struct ca_cache cas;         /* its CA certificates, parsed (loop thread) */
	struct rate_table rate;      /* per-device request rate (twin operations) */
	struct hub_sessions sessions; /* live and durable device sessions */
	struct device_events *devices; /* raised after identity changes; borrowed */
	struct hub_events events;      /* telemetry (telemetry.h) */
	struct hub_methods methods;    /* direct method calls in flight (methods.h) */
	struct hub_c2d_stats c2d;      /* cloud-to-device counters (c2d.h) */
	struct amqp_link *amqp_readers; /* Event Hubs receivers (amqp_eh.c) */
	struct amqp_link *amqp_feedback; /* feedback receivers (amqp_service.c) */
	struct hub_amqp_stats {        /* the AMQP endpoint's, since start */
		uint64_t connections, links; /* open now */
		uint64_t events_sent, c2d_accepted, c2d_refused, feedback_batches;
	} amqp;
	uv_loop_t *loop;
};

/* Every hub served by this process, for routing by name. */
struct hub_set {
	struct hub **v;
	size_t n;
};

/* Sets up hub name with its policies' keys: owner_key when given, else
 * the stored one, else a new one that is stored; the other policies' keys
 * likewise. Blocks on the store at start-up (runs the loop until the keys
 * are committed). Returns 0 or -1 with a message. */
int hub_init(struct hub *h, const char *name, const char *owner_key, struct store *store,
	     uv_loop_t *loop, size_t max_packet, char *err, size_t errlen);
void hub_add_alias(struct hub *h, const char *alias);
/* Overload limits: twin operations in flight per MQTT session (default 64),
 * and each device's request rate (default none). devices sizes the rate
 * table: how many devices may be busy at once (say max_connections).
 * x509_max_intermediates bounds a certificateAuthority device's chain
 * (default 8). */
void hub_set_limits(struct hub *h, unsigned max_inflight, const struct rate_limit *rate,
		    size_t devices, unsigned x509_max_intermediates);
/* Closes every live session (before the store closes: their last
 * answers are queued). */
void hub_shutdown(struct hub *h);
/* Frees what hub_init allocated (after the store closed and ran every
 * completion). */
void hub_free(struct hub *h);

/* True when host (with or without ":port", any case) names h or one of its
 * aliases. host need not be NUL-terminated. */
bool hub_name_matches(const struct hub *h, const char *host, size_t len);
struct hub *hub_set_find(const struct hub_set *set, const char *host, size_t len);
const struct sas_policy *hub_policy_find(const struct hub *h, const char *name);
/* "HostName=<hub>;SharedAccessKeyName=<policy>;SharedAccessKey=<primary>" */
void hub_connection_string(const struct hub *h, const struct sas_policy *p, struct buf *out);

/* Takes over an accepted MQTT connection (TLS or WebSocket). sni_hub is the
 * hub the TLS SNI name selected, or NULL; then the CONNECT user name
 * selects the hub among set. pending[0..n) are bytes already read from
 * the connection (the start of the CONNECT), handled first. */
void hub_mqtt_accept(const struct hub_set *set, struct hub *sni_hub, struct net_conn *c,
		     const uint8_t *pending, size_t n);

/* Handles one HTTPS request for hub h (the REST API). */
void hub_http_request(struct hub *h, struct http_exchange *ex);
/* Answers ex with the hub's error shape (errorCode, message, the Message
 * "ErrorCode:<name>;<msg>" the SDKs parse, iothub-errorcode: name). msg
 * must hold no ';'. */
void hub_http_refuse(struct http_exchange *ex, int status, const char *name, int code,
		     const char *msg);

/* Connects h to the device-changed events (raised by its REST routes and
 * by the DPS): h closes the live session of a device of its own that was
 * deleted, disabled or given other credentials. */
void hub_listen_events(struct hub *h, struct device_events *events);

/* Live-session operations used by the REST side. */
bool hub_device_connected(const struct hub *h, const char *device_id, int64_t *since_ms,
			  int64_t *last_activity_ms);
/* Closes the live session of a device (disabled, deleted, keys changed). */
void hub_kick(struct hub *h, const char *device_id, const char *why);
/* Sends a desired-properties notification (body includes "$version") to
 * the device's live session when it subscribed. */
void hub_notify_desired(struct hub *h, const char *device_id, const char *body, int64_t version);

/* ---- Several nodes (core/cluster.h) ----
 * Inside a job: tells the other nodes what this one changed (delivered
 * after the commit): a device identity change (they close its session),
 * a desired change (they notify the device). */
int hub_post_device(struct store_txn *t, const struct hub *h, const char *device_id,
		    enum device_change what, const char *why);
int hub_post_desired(struct store_txn *t, const struct hub *h, const char *device_id,
		     const char *notice, int64_t version);
/* Another node accepted a connection of device_id at at_ms: a session of
 * it here that connected before is closed (the newest connection wins,
 * across nodes as within one). */
void hub_connected_elsewhere(struct hub *h, const char *device_id, int64_t at_ms,
			     const char *node);

#endif
