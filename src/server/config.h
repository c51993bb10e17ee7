/* Configuration: one table of settings (name, type, default, help) from
 * which the INI parser, `fleethub serve --help` text and the shipped example
 * file (examples/fleethub.ini) all come. A test checks that the example file
 * lists every row.
 *
 * File form (inih; ';' starts a comment, also after a value):
 *   [server]                 global settings
 *   [hub <host name>]        one section per hub, named by its host name
 *   [dps <host name>]        the Device Provisioning Service (at most one)
 * With no file at all (or a file with no [hub] and no [dps] section), one
 * hub and the DPS, both named "localhost", are served. */
#ifndef FH_SERVER_CONFIG_H
#define FH_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* "host:port" list entries, already split. host may be an IPv4/IPv6
 * literal or a name ("localhost" resolves at bind time). */
struct config_addr {
	char *host;
	int port;
};

struct config_addrs {
	struct config_addr *v;
	size_t n;
};

struct config_hub {
	char *name;      /* host name, lowercased */
	char *owner_key; /* iothubowner primary key (base64); NULL = generate once
	                    and keep in the store */
	/* Extra listeners whose clients default to this hub when they send no
	 * TLS SNI name (IP literals); their IPs also act as aliases of this hub
	 * in SAS resources and MQTT user names. */
	struct config_addrs mqtt_listen;
	struct config_addrs https_listen;
	struct config_addrs amqp_listen;
};

/* The Device Provisioning Service ([dps <host name>]). Lists are kept as
 * written (comma-separated); config_load checks their form and that every
 * linked hub is a configured [hub]. */
struct config_dps {
	char *name;                  /* host name, lowercased */
	char *id_scope;              /* NULL = generated once and kept in the store */
	char *owner_key;             /* provisioningserviceowner primary key; NULL = generated */
	char *linked_hubs;           /* hubs served here; NULL = every configured hub */
	char *linked_hub_connection_string; /* remote hubs' owner connection strings */
	char *linked_hub_addresses;  /* "hub=host:port, ...": where to dial remote hubs */
	char *allocation_weights;    /* "hub=weight, ..."; unlisted hubs weigh 1 */
	char *webhook_ca;            /* extra CAs for webhook TLS; NULL = system CAs only */
	unsigned webhook_timeout_ms; /* 5000 */
	unsigned webhook_attempts;   /* 10 */
	unsigned webhook_retry_ms;   /* 1000 */
	unsigned webhook_log_keep;   /* 20 */
	unsigned webhook_log_max_age_h; /* 168 */
	unsigned retry_after_s;      /* 1 */
	unsigned max_assigning;      /* 10000: registrations in progress at once */
	unsigned attestation_rate;   /* 50000 group key checks per second */
	unsigned tpm_challenge_ttl_s; /* 3600 */
	struct config_addrs mqtt_listen;
	struct config_addrs https_listen;
};

struct config {
	char *data_dir;                  /* ./fleethub-data */
	char *store;                     /* "sqlite" or "postgresql" */
	char *postgresql;                /* libpq connection string, or NULL */
	char *node_name;                 /* NULL = generated, kept in data_dir */
	struct config_addrs mqtt_listen; /* 127.0.0.1:8883 */
	struct config_addrs https_listen;/* 127.0.0.1:443 */
	struct config_addrs amqp_listen; /* 127.0.0.1:5671 */
	char *tls_cert;                  /* NULL = generated under data_dir/tls */
	char *tls_key;
	char *log_level;                 /* info */
	unsigned max_connections;        /* 20000 */
	unsigned max_packet_kb;          /* 256: largest MQTT packet accepted */
	unsigned request_timeout_s;      /* 30: to send one HTTPS request */
	unsigned max_inflight;           /* 64: twin operations per MQTT connection */
	unsigned device_request_rate;    /* 1000 per second per device; 0 = none */
	unsigned device_request_burst;   /* 2000 */
	unsigned max_write_backlog;      /* 20000 store jobs */
	unsigned max_write_backlog_mb;   /* 64 MiB of request bodies */
	unsigned x509_max_intermediates; /* 8: CA certificates between a device's and its anchor */
	unsigned event_partitions;       /* 4: partitions of each hub's event log */
	unsigned event_retention_hours;  /* 24 */
	unsigned event_retention_mb;     /* 1024 per partition; 0: by age only */
	char *query_indexes;             /* twin paths to index, comma-separated */
	struct config_hub *hubs;
	size_t nhubs;
	struct config_dps *dps; /* NULL = no DPS */
	char *path; /* the file it came from, or NULL */
};

/* Loads path (NULL = defaults only). Returns 0, or -1 with a message that
 * names the file, line, setting and the problem in err. Unknown sections or
 * keys, bad values, duplicate hubs are errors. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);
void config_free(struct config *cfg);
/* As config_load, from text[0..len) (need not be NUL-terminated); name is
 * used in messages. config_load reads the file and calls this. */
int config_load_text(struct config *cfg, const char *text, size_t len, const char *name,
		     char *err, size_t errlen);

/* Parses "host:port[, host:port...]" ("[::1]:443" for IPv6). Returns 0 or -1. */
int config_parse_addrs(const char *text, struct config_addrs *out, char *err, size_t errlen);

/* Writes the example configuration (every setting with its default and
 * help, commented) to f. */
#include <stdio.h>
void config_write_example(FILE *f);

#endif
