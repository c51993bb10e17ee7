/* The Device Provisioning Service virtual host: its name, id scope,
 * service policies and linked hubs, and the entry points the server wiring
 * calls for a device's MQTT connection or an HTTPS request routed to it.
 *
 * Files of this layer:
 *   dps.c         names, policies, keys, linked hubs, SAS checks
 *   dps_rest.c    service REST API: enrollments, groups, registrations,
 *                 webhook call log (one route table, like hub/rest.c)
 *   dps_device.c  device API over MQTT ($dps/registrations/...) and HTTPS
 *                 (/{idScope}/registrations/...)
 *   dps_ops.c     the registration operation state machine (below)
 *
 * A registration operation:
 *
 *   register --auth ok--> [assigning] --hub chosen--> [assigning] --assigned--> [assigned]
 *      |                     |   ^  webhook 429/5xx/timeout:   |
 *      | auth fails: 401     |   +--retry with back-off--------+--> [failed] errorCode
 *      | enrollment disabled: status "disabled" (nothing else stored)
 *
 * The operation record (STORE_OPERATION) is committed as "assigning" before
 * the device gets its 202 + operationId; the device identity, initial twin,
 * registration state (STORE_REGISTRATION) and the operation's "assigned" or
 * "failed" are committed before any poll can see them. On start-up, every
 * operation still "assigning" is resumed from its record. Everything runs
 * on the loop thread; webhook calls and remote hubs go through
 * net/http_client. */
#ifndef FH_DPS_DPS_H
#define FH_DPS_DPS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/map.h"
#include "codec/sas.h"
#include "core/allocation.h"
#include "core/ca.h"
#include "core/device_events.h"
#include "core/ratelimit.h"
#include "net/http_client.h"
#include "net/http_server.h"
#include "net/net.h"
#include "store/store.h"

enum dps_right {
	DPS_RIGHT_SERVICE_CONFIG = 1,
	DPS_RIGHT_ENROLLMENT_READ = 2,
	DPS_RIGHT_ENROLLMENT_WRITE = 4,
	DPS_RIGHT_REGISTRATION_READ = 8,
	DPS_RIGHT_REGISTRATION_WRITE = 16,
};

#define DPS_NPOLICIES 3

/* A linked hub: served by this process (local != NULL) or remote, reached
 * through its service REST API with its owner connection string. */
struct dps_linked_hub {
	struct alloc_hub alloc;      /* name, weight, apply_policy */
	bool local;                  /* served by this process (same store) */
	char *remote_key_name;       /* remote: SharedAccessKeyName */
	char *remote_key;            /* remote: SharedAccessKey (base64) */
	char *remote_address;        /* remote: "host:port" to dial (TLS and Host still
					name the hub), NULL = name:443 */
};

struct dps {
	char name[256];   /* host name, lowercase */
	char id_scope[64];
	char *aliases[16];
	size_t naliases;
	/* provisioningserviceowner, enrollmentread, enrollmentwrite; rights
	 * are enum dps_right bits */
	struct sas_policy policies[DPS_NPOLICIES];
	struct dps_linked_hub *linked;
	size_t nlinked;
	struct store *store;
	uv_loop_t *loop;
	/* Raised after an assignment changed a device of a hub in this
	 * process (deleted from the hub it left, new credentials): the hubs
	 * close its live session. Borrowed; NULL = none. */
	struct device_events *events;
	struct http_client *http; /* webhooks and remote hubs */
	uint64_t webhook_timeout_ms;
	unsigned retry_after_s;   /* what devices are told to wait between polls */
	size_t max_packet;
	unsigned webhook_attempts;     /* calls before a 429/5xx/timeout fails it (10) */
	uint64_t webhook_retry_ms;     /* first retry delay; each next adds 9x (1 s, 10 s, 19 s) */
	unsigned webhook_log_keep;     /* call records kept per registration (20) */
	uint64_t webhook_log_age_ms;   /* call records older than this are removed (7 days) */
	uv_timer_t calls_timer;        /* the call log's sweep by age (dps_calls.c) */
	bool calls_timer_open;
	bool calls_sweeping;           /* a sweep job is queued */
	struct map ops;           /* operationId -> in-memory operation (while assigning) */
	struct map ops_by_reg;    /* registrationId -> the same operation */
	unsigned nops;            /* operations in ops */
	unsigned max_assigning;   /* more new registrations are answered 429 */
	struct rate_table rate;   /* per-registration-id request rate */
	struct rate_table attest_fail; /* per-registration-id failed attestations */
	struct rate_limit attest_lim;  /* group key checks (HMACs) per second, all devices */
	struct rate_bucket attest_budget;
	uint64_t op_seq;
	/* Enrollment groups as stored, parsed ({id: record}), for device
	 * attestation: read at start-up, then kept in step one group at a
	 * time (dps__group_changed). NULL = not loaded (a failed read). */
	json_t *groups;
	uint64_t groups_gen; /* bumped by every group change this DPS commits */
	bool groups_loading;
	bool resuming;     /* a dps_resume pass (its read, then its claims) is under way */
	unsigned claiming; /* claims of operations not completed yet */
	char node[96];     /* this node (dps_config.node) */
	bool shared;       /* the store has several nodes: operations have leases */
	int64_t lease_ms;  /* when this node's heartbeat was last stored */
	struct dsession *sessions; /* live MQTT device sessions (dps_device.c) */
	unsigned x509_depth; /* intermediates allowed in a device's chain */
	unsigned tpm_ttl_s;  /* a TPM challenge's lifetime */
	char ca_scope[264];  /* its CA certificates' store scope: "dps:" + name */
	struct ca_cache anchors; /* enrollment and CA certificates, parsed (loop thread) */
	bool stopping;
};

struct dps_config {
	const char *name;
	const char *id_scope;       /* NULL = generated once ("0ne" + 8 hex digits) and stored */
	const char *owner_key;      /* NULL = generated once and stored */
	const char *webhook_ca;     /* NULL = system CAs only */
	uint64_t webhook_timeout_ms;
	unsigned webhook_attempts;  /* 0 = 10 */
	uint64_t webhook_retry_ms;  /* 0 = 1000 */
	unsigned webhook_log_keep;  /* 0 = 20 */
	unsigned webhook_log_max_age_h; /* 0 = 168 */
	unsigned retry_after_s;     /* 0 = 1 */
	unsigned max_assigning;     /* 0 = 10000 */
	struct rate_limit rate;     /* per registration id; rate 0 = none */
	size_t rate_keys;           /* registration ids busy at once (sizes the rate table) */
	uint32_t attestation_rate;  /* group key checks per second; 0 = 50,000 */
	unsigned x509_max_intermediates; /* in a device's certificate chain */
	unsigned tpm_challenge_ttl_s;    /* 0 = 3600 */
	const char *node;                /* this node's name: the owner of its operations */
};

/* Sets up the DPS (keys and id scope loaded or generated and stored; runs
 * the loop until committed, like hub_init). Linked hubs are added after.
 * Returns 0 or -1 with a message. */
int dps_init(struct dps *d, const struct dps_config *cfg, struct store *store, uv_loop_t *loop,
	     size_t max_packet, char *err, size_t errlen);
void dps_link_local(struct dps *d, const char *hub_name, unsigned weight);
/* Parses a hub owner connection string (HostName, SharedAccessKeyName,
 * SharedAccessKey). Returns 0 or -1 with a message. */
int dps_link_remote(struct dps *d, const char *connection_string, unsigned weight, char *err,
		    size_t errlen);
/* Dials the remote linked hub name at address ("host:port", "[v6]:port")
 * instead of name:443. Returns 0, or -1 with a message when name is not a
 * remote linked hub. */
int dps_set_remote_address(struct dps *d, const char *name, const char *address, char *err,
			   size_t errlen);
void dps_add_alias(struct dps *d, const char *alias);
/* A message from another node (core/cluster.h) about this DPS: a group
 * changed (the groups are read again), an enrollment was disabled or
 * deleted (the sessions it attested close). */
struct cluster_msg;
void dps_cluster_message(struct dps *d, const struct cluster_msg *m);
/* This node's heartbeat was stored at at_ms (its lease runs from there). */
void dps_lease_renewed(struct dps *d, int64_t at_ms);
/* Several nodes: takes over (and runs) the operations of nodes whose lease
 * ran out (core/cluster.h), as dps_resume does at start-up. */
void dps_take_over(struct dps *d);
/* Resumes operations left "assigning" by a previous run: reads their
 * records (store_read_slow; d->resuming until then), then runs them. */
void dps_resume(struct dps *d);
/* Stops the operations in flight and the HTTP client (before the store
 * closes); dps_free releases the rest once the store has closed. */
void dps_shutdown(struct dps *d);
void dps_free(struct dps *d);

bool dps_name_matches(const struct dps *d, const char *host, size_t len);
/* "HostName=<dps>;SharedAccessKeyName=<policy>;SharedAccessKey=<primary>" */
void dps_connection_string(const struct dps *d, const struct sas_policy *p, struct buf *out);

/* True when the MQTT CONNECT user name is a DPS one:
 * "<idScope>/registrations/<registrationId>/api-version=..." with this
 * DPS's id scope. */
bool dps_mqtt_username_matches(const struct dps *d, const char *username, size_t len);
/* Takes over an MQTT connection whose CONNECT (in pending[0..n), with any
 * bytes that followed it) names this DPS. */
void dps_mqtt_accept(struct dps *d, struct net_conn *c, const uint8_t *pending, size_t n);

/* True when an HTTPS request path belongs to the DPS: "/<idScope>/registrations/..."
 * (device API) or "/enrollments", "/enrollmentGroups", "/registrations",
 * "/dps/certificates" (service API; case-insensitive). A hub and the DPS
 * may share a host name (both are "localhost" by default): paths alone
 * tell them apart, so the DPS's CA certificates are not at a hub's
 * "/certificates". */
bool dps_http_path_matches(const struct dps *d, const char *path);
void dps_http_request(struct dps *d, struct http_exchange *ex);

#endif
