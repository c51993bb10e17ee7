/* Configuration loading. Every setting is one row of settings[] (scope,
 * name, type, bounds, default, help); the INI parser, the defaults, the
 * example file (config_write_example, shipped as examples/fleethub.ini) and
 * `fleethub serve --help` all come from that table, so they cannot drift.
 *
 * Parsing uses inih through a string reader of our own. The reader counts
 * lines (so every error names file:line), removes leading blanks (so inih
 * never sees a Python-style continuation line), rejects over-long lines and
 * notices section headers itself: inih calls the handler only for
 * name = value lines, and a "[hub name]" section with no keys must still
 * declare a hub. Invariants after a successful load: data_dir and log_level
 * are set, tls_cert and tls_key are both set or both NULL, and there is at
 * least one hub, each with a lowercased valid DNS name, no two alike. On
 * failure the config is left empty (config_free'd). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/enc.h"
#include "base/log.h"
#include "base/mem.h"
#include "server/config.h"

enum setting_scope { SCOPE_SERVER, SCOPE_HUB, SCOPE_DPS };

enum setting_type {
	SET_PATH,      /* char *, non-empty */
	SET_ADDRS,     /* struct config_addrs */
	SET_UINT,      /* unsigned within [min, max] */
	SET_LOG_LEVEL, /* char *, one of log_level_parse's names */
	SET_KEY,       /* char *, base64 of min..max bytes */
	SET_TEXT,      /* char *, non-empty; form checked after loading */
	SET_LIST,      /* as SET_TEXT, a comma-separated list; a repeated key adds
	                  its items (lines are limited to 198 characters) */
};

struct setting {
	enum setting_scope scope;
	const char *name;
	enum setting_type type;
	unsigned min, max;
	const char *def; /* default as it would be written; NULL = unset */
	const char *help;
	size_t offset; /* into struct config (server) or struct config_hub */
};

#define SRV(field) offsetof(struct config, field)
#define HUB(field) offsetof(struct config_hub, field)
#define DPS(field) offsetof(struct config_dps, field)

static const struct setting settings[] = {
    {SCOPE_SERVER, "data_dir", SET_PATH, 0, 0, "./fleethub-data",
     "Directory for the database, the generated TLS files (tls/) and cli.conf.\n"
     "Created with mode 0700 when absent.",
     SRV(data_dir)},
    {SCOPE_SERVER, "store", SET_TEXT, 0, 0, "sqlite",
     "Where state is kept: sqlite (embedded, data_dir/fleethub.db) or\n"
     "postgresql (the database of the postgresql setting; several nodes may\n"
     "share it, docs/scaling.md).",
     SRV(store)},
    {SCOPE_SERVER, "postgresql", SET_TEXT, 0, 0, NULL,
     "libpq connection string of the database for store = postgresql, e.g.\n"
     "postgresql://fleethub@db.example.com/fleethub or host=/run/postgresql\n"
     "dbname=fleethub. Its tables are created at the first start.",
     SRV(postgresql)},
    {SCOPE_SERVER, "node_name", SET_TEXT, 0, 0, NULL,
     "This node's name among several sharing one PostgreSQL database (letters,\n"
     "digits, '-', '.', '_'). Unset = generated once and kept in\n"
     "data_dir/node_name.",
     SRV(node_name)},
    {SCOPE_SERVER, "mqtt_listen", SET_ADDRS, 0, 0, "127.0.0.1:8883",
     "MQTT over TLS listeners: host:port, comma-separated list allowed,\n"
     "[::1]:8883 for IPv6. Empty = no MQTT listener.",
     SRV(mqtt_listen)},
    {SCOPE_SERVER, "https_listen", SET_ADDRS, 0, 0, "127.0.0.1:443",
     "HTTPS listeners (service REST API, device HTTPS, MQTT over WebSockets).\n"
     "Node's HTTPS clients only dial port 443.",
     SRV(https_listen)},
    {SCOPE_SERVER, "amqp_listen", SET_ADDRS, 0, 0, "127.0.0.1:5671",
     "AMQP over TLS listeners (the service SDK's cloud-to-device messages and\n"
     "feedback, Event Hubs consumers of telemetry). Empty = none; AMQP over\n"
     "WebSockets is served on the HTTPS listeners either way.",
     SRV(amqp_listen)},
    {SCOPE_SERVER, "tls_cert", SET_PATH, 0, 0, NULL,
     "Server certificate chain (PEM). Unset = a development CA and a server\n"
     "certificate are generated under data_dir/tls. Needs tls_key.",
     SRV(tls_cert)},
    {SCOPE_SERVER, "tls_key", SET_PATH, 0, 0, NULL,
     "Private key (PEM) of tls_cert. Unset together with tls_cert.", SRV(tls_key)},
    {SCOPE_SERVER, "log_level", SET_LOG_LEVEL, 0, 0, "info",
     "Least severe log level written to stderr: debug, info, warn or error.", SRV(log_level)},
    {SCOPE_SERVER, "max_connections", SET_UINT, 1, 1000000, "20000",
     "Most simultaneous client connections (1..1000000); more are refused.", SRV(max_connections)},
    {SCOPE_SERVER, "max_packet_kb", SET_UINT, 1, 262144, "256",
     "Largest MQTT packet accepted, in KiB (1..262144).", SRV(max_packet_kb)},
    {SCOPE_SERVER, "request_timeout_s", SET_UINT, 1, 3600, "30",
     "Seconds an HTTPS client may take to send one whole request once it\n"
     "started (1..3600); slower clients are disconnected.",
     SRV(request_timeout_s)},
    {SCOPE_SERVER, "max_inflight", SET_UINT, 1, 65535, "64",
     "Twin operations one MQTT connection may have waiting for the store\n"
     "(1..65535); more are answered 429 at once. (An HTTPS connection has one\n"
     "request in flight: the next pipelined one is read after the answer.)",
     SRV(max_inflight)},
    {SCOPE_SERVER, "device_request_rate", SET_UINT, 0, 1000000, "1000",
     "Requests per second one device may sustain (twin GET and reported\n"
     "PATCH over MQTT), and one registration id at the DPS (registrations and\n"
     "status polls, MQTT and HTTPS); more are answered 429 with retry-after.\n"
     "0 = no limit.",
     SRV(device_request_rate)},
    {SCOPE_SERVER, "device_request_burst", SET_UINT, 1, 1000000, "2000",
     "Requests one device or registration id may send at once above\n"
     "device_request_rate before it is held to that rate (1..1000000).",
     SRV(device_request_burst)},
    {SCOPE_SERVER, "max_write_backlog", SET_UINT, 1, 10000000, "20000",
     "Writes (twin patches, REST changes, DPS registrations) queued for the\n"
     "store at most; beyond, clients get 429 with retry-after instead of a\n"
     "longer queue (1..10000000).",
     SRV(max_write_backlog)},
    {SCOPE_SERVER, "max_write_backlog_mb", SET_UINT, 1, 65536, "64",
     "MiB of request bodies queued for the store at most, as max_write_backlog\n"
     "(1..65536).",
     SRV(max_write_backlog_mb)},
    {SCOPE_SERVER, "x509_max_intermediates", SET_UINT, 0, 16, "8",
     "Most intermediate CA certificates between a device certificate and the\n"
     "CA certificate it is trusted through (a hub's CA, an enrollment group's\n"
     "signing certificate or CA), at the hubs and the DPS (0..16).",
     SRV(x509_max_intermediates)},
    {SCOPE_SERVER, "event_partitions", SET_UINT, 1, 32, "4",
     "Partitions of each hub's telemetry log (1..32). A device's messages\n"
     "always go to one partition, in order. Takes effect for new hubs' logs;\n"
     "changing it moves devices to other partitions.",
     SRV(event_partitions)},
    {SCOPE_SERVER, "event_retention_hours", SET_UINT, 1, 8760, "24",
     "Hours telemetry is kept (1..8760); older events are deleted.",
     SRV(event_retention_hours)},
    {SCOPE_SERVER, "event_retention_mb", SET_UINT, 0, 1048576, "1024",
     "MiB of telemetry kept per partition at most (0 = no bound but the\n"
     "age); the oldest events go first.",
     SRV(event_retention_mb)},
    {SCOPE_SERVER, "query_indexes", SET_LIST, 0, 0, NULL,
     "Twin paths that twin queries compare often, comma-separated, e.g.\n"
     "tags.plant, properties.reported.temperature: each gets an index, so that\n"
     "an equality or a range on it reads the matching twins only (every index\n"
     "costs some speed on each write of its section). Unset = none.",
     SRV(query_indexes)},
    {SCOPE_HUB, "owner_key", SET_KEY, 16, 64, NULL,
     "Primary key of the iothubowner policy: base64 of 16..64 bytes.\n"
     "Unset = generated once and kept in the database.",
     HUB(owner_key)},
    {SCOPE_HUB, "mqtt_listen", SET_ADDRS, 0, 0, NULL,
     "Extra MQTT over TLS listeners of this hub: clients that send no TLS SNI\n"
     "name (they dial an IP) default to this hub. Unset = none.",
     HUB(mqtt_listen)},
    {SCOPE_HUB, "https_listen", SET_ADDRS, 0, 0, NULL,
     "Extra HTTPS listeners of this hub, as mqtt_listen. Unset = none.", HUB(https_listen)},
    {SCOPE_HUB, "amqp_listen", SET_ADDRS, 0, 0, NULL,
     "Extra AMQP over TLS listeners of this hub, as mqtt_listen. Unset = none.",
     HUB(amqp_listen)},
    {SCOPE_DPS, "id_scope", SET_TEXT, 0, 0, NULL,
     "The id scope devices name in their registrations (letters and digits).\n"
     "Unset = generated once (\"0ne\" and 8 hex digits) and kept in the database.",
     DPS(id_scope)},
    {SCOPE_DPS, "owner_key", SET_KEY, 16, 64, NULL,
     "Primary key of the provisioningserviceowner policy: base64 of 16..64\n"
     "bytes. Unset = generated once and kept in the database.",
     DPS(owner_key)},
    {SCOPE_DPS, "linked_hubs", SET_LIST, 0, 0, NULL,
     "Hubs served by this process that devices can be assigned to, comma-\n"
     "separated host names of [hub] sections. Unset = every configured hub.",
     DPS(linked_hubs)},
    {SCOPE_DPS, "linked_hub_connection_string", SET_LIST, 0, 0, NULL,
     "Hubs served elsewhere, reached through their service REST API: owner\n"
     "connection strings (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...),\n"
     "comma-separated; repeat the key for one per line. Unset = none.",
     DPS(linked_hub_connection_string)},
    {SCOPE_DPS, "linked_hub_addresses", SET_LIST, 0, 0, NULL,
     "Where to dial hubs of linked_hub_connection_string whose names do not\n"
     "resolve to them: hub=host:port, comma-separated ([v6]:port for IPv6).\n"
     "TLS and the Host header still name the hub. Unlisted hubs: name:443.",
     DPS(linked_hub_addresses)},
    {SCOPE_DPS, "allocation_weights", SET_LIST, 0, 0, NULL,
     "Allocation weight of linked hubs for the hashed policy: hub=weight,\n"
     "comma-separated (1..1000). Unlisted hubs weigh 1.",
     DPS(allocation_weights)},
    {SCOPE_DPS, "webhook_ca", SET_PATH, 0, 0, NULL,
     "Extra CA certificates (PEM) trusted for custom allocation webhooks,\n"
     "besides the system's. Unset = system CAs only.",
     DPS(webhook_ca)},
    {SCOPE_DPS, "webhook_timeout_ms", SET_UINT, 100, 600000, "5000",
     "Deadline of one custom allocation webhook call, in ms (100..600000).",
     DPS(webhook_timeout_ms)},
    {SCOPE_DPS, "webhook_attempts", SET_UINT, 1, 100, "10",
     "Calls of a custom allocation webhook that answers 429 or 5xx, times out\n"
     "or cannot be reached, before the registration fails (1..100).",
     DPS(webhook_attempts)},
    {SCOPE_DPS, "webhook_retry_ms", SET_UINT, 10, 600000, "1000",
     "Wait before the first webhook retry, in ms; each further retry waits\n"
     "nine times this value longer than the one before (1 s, 10 s, 19 s, ...\n"
     "by default).",
     DPS(webhook_retry_ms)},
    {SCOPE_DPS, "webhook_log_keep", SET_UINT, 1, 1000, "20",
     "Webhook call records kept per registration (what `fleethub webhook\n"
     "calls` shows); the oldest go first (1..1000).",
     DPS(webhook_log_keep)},
    {SCOPE_DPS, "webhook_log_max_age_h", SET_UINT, 1, 87600, "168",
     "Hours a webhook call record is kept at most (1..87600; 168 = 7 days).\n"
     "Records also go when their registration is deleted.",
     DPS(webhook_log_max_age_h)},
    {SCOPE_DPS, "retry_after_s", SET_UINT, 1, 60, "1",
     "Seconds devices are told to wait (retry-after) between status polls.",
     DPS(retry_after_s)},
    {SCOPE_DPS, "attestation_rate", SET_UINT, 100, 10000000, "50000",
     "Enrollment group key checks (HMACs) per second for all registrations\n"
     "together: a device that no individual enrollment matches costs 4 per\n"
     "group. Beyond it registrations get 429 (MQTT CONNECT: CONNACK 3) with\n"
     "retry-after, so invented registration ids cannot take the server's\n"
     "CPU (100..10000000).",
     DPS(attestation_rate)},
    {SCOPE_DPS, "tpm_challenge_ttl_s", SET_UINT, 1, 86400, "3600",
     "Seconds a TPM device's challenge key (the authenticationKey of the\n"
     "401) signs its registration and status polls; a new register starts\n"
     "a new challenge (1..86400). A challenge also costs 50 of\n"
     "attestation_rate: it is RSA work.",
     DPS(tpm_challenge_ttl_s)},
    {SCOPE_DPS, "max_assigning", SET_UINT, 1, 1000000, "10000",
     "Registrations in progress (assigning, e.g. waiting for a webhook) at\n"
     "most; new ones beyond are answered 429 with retry-after (1..1000000).",
     DPS(max_assigning)},
    {SCOPE_DPS, "mqtt_listen", SET_ADDRS, 0, 0, NULL,
     "Extra MQTT over TLS listeners whose clients default to the DPS when\n"
     "they send no TLS SNI name. Unset = none.",
     DPS(mqtt_listen)},
    {SCOPE_DPS, "https_listen", SET_ADDRS, 0, 0, NULL,
     "Extra HTTPS listeners of the DPS, as mqtt_listen. Unset = none.", DPS(https_listen)},
};

#define NSETTINGS (sizeof settings / sizeof settings[0])
_Static_assert(NSETTINGS <= 64, "the parser keeps a 64-bit mask of the settings seen");

/* ---- values ---- */

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 &&
	       (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

static void addrs_free(struct config_addrs *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i].host);
	free(a->v);
	a->v = NULL;
	a->n = 0;
}

static bool host_name_chars_ok(const char *h)
{
	for (const char *p = h; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
			return false;
	return true;
}

/* Parses one "host:port" or "[v6]:port" entry of length n. */
static int parse_addr(const char *s, size_t n, struct config_addr *out, char *err, size_t errlen)
{
	char *e = xstrndup(s, n);
	char *host, *port;
	int rc = -1;
	if (e[0] == '[') {
		char *close = strchr(e, ']');
		if (!close || close[1] != ':') {
			snprintf(err, errlen, "\"%s\": expected [IPv6 address]:port", e);
			goto done;
		}
		*close = '\0';
		host = e + 1;
		port = close + 2;
		unsigned char tmp[16];
		if (inet_pton(AF_INET6, host, tmp) != 1) {
			snprintf(err, errlen, "\"%s\" is not an IPv6 address", host);
			goto done;
		}
	} else {
		char *colon = strrchr(e, ':');
		if (!colon) {
			snprintf(err, errlen, "\"%s\": expected host:port", e);
			goto done;
		}
		*colon = '\0';
		host = e;
		port = colon + 1;
		if (strchr(host, ':')) {
			snprintf(err, errlen, "\"%s\": write IPv6 addresses as [address]:port",
			         s[0] ? e : "");
			goto done;
		}
		if (host[0] == '\0' || !host_name_chars_ok(host)) {
			snprintf(err, errlen, "\"%s\" is not a host name or IP address", host);
			goto done;
		}
	}
	if (port[0] == '\0' || strspn(port, "0123456789") != strlen(port) || strlen(port) > 9) {
		snprintf(err, errlen, "\"%s\" is not a port number", port);
		goto done;
	}
	long p = strtol(port, NULL, 10);
	if (p < 1 || p > 65535) {
		snprintf(err, errlen, "port %ld out of range", p);
		goto done;
	}
	out->host = xstrdup(host);
	out->port = (int)p;
	rc = 0;
done:
	free(e);
	return rc;
}

int config_parse_addrs(const char *text, struct config_addrs *out, char *err, size_t errlen)
{
	out->v = NULL;
	out->n = 0;
	const char *p = text;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0')
		return 0;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == 0) {
			snprintf(err, errlen, "empty entry in address list");
			goto fail;
		}
		struct config_addr a;
		if (parse_addr(p, n, &a, err, errlen) != 0)
			goto fail;
		out->v = xrealloc(out->v, (out->n + 1) * sizeof *out->v);
		out->v[out->n++] = a;
		if (!comma)
			return 0;
		p = comma + 1;
		while (*p == ' ' || *p == '\t')
			p++;
	}
fail:
	addrs_free(out);
	return -1;
}

/* 1 when name is a valid DNS host name: dot-separated labels of 1..63
 * letters, digits and hyphens, not starting or ending with a hyphen, 253
 * characters at most. */
static bool dns_name_ok(const char *name)
{
	size_t n = strlen(name), label = 0;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i <= n; i++) {
		char c = name[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || name[i - 1] == '-')
				return false;
			label = 0;
		} else if (isalnum((unsigned char)c) || c == '-') {
			if (label == 0 && c == '-')
				return false;
			label++;
		} else {
			return false;
		}
	}
	return true;
}

/* Stores value into the field of base that s describes. Replaces any value
 * already there. */
static int apply(const struct setting *s, void *base, const char *value, char *err, size_t errlen)
{
	char *field = (char *)base + s->offset;
	switch (s->type) {
	case SET_PATH:
	case SET_TEXT:
	case SET_LIST:
		if (value[0] == '\0') {
			snprintf(err, errlen, "empty value");
			return -1;
		}
		break;
	case SET_LOG_LEVEL:
		if (log_level_parse(value) < 0) {
			snprintf(err, errlen, "\"%s\" is not one of debug, info, warn, error",
			         value);
			return -1;
		}
		break;
	case SET_KEY: {
		size_t n = strlen(value), got = 0;
		if (n > 256) {
			snprintf(err, errlen, "key too long");
			return -1;
		}
		uint8_t raw[B64_DECODED_MAX(256) + 1];
		if (b64_decode(value, n, raw, &got) != 0) {
			snprintf(err, errlen, "not valid base64");
			return -1;
		}
		if (got < s->min || got > s->max) {
			snprintf(err, errlen, "key is %zu bytes; it must be %u..%u bytes", got,
			         s->min, s->max);
			return -1;
		}
		break;
	}
	case SET_UINT: {
		if (value[0] == '\0' || strspn(value, "0123456789") != strlen(value) ||
		    strlen(value) > 10) {
			snprintf(err, errlen, "\"%s\" is not a whole number", value);
			return -1;
		}
		unsigned long long v = strtoull(value, NULL, 10);
		if (v < s->min || v > s->max) {
			snprintf(err, errlen, "%llu out of range %u..%u", v, s->min, s->max);
			return -1;
		}
		*(unsigned *)(void *)field = (unsigned)v;
		return 0;
	}
	case SET_ADDRS: {
		struct config_addrs a;
		if (config_parse_addrs(value, &a, err, errlen) != 0)
			return -1;
		addrs_free((struct config_addrs *)(void *)field);
		*(struct config_addrs *)(void *)field = a;
		return 0;
	}
	}
	char **sp = (char **)(void *)field;
	free(*sp);
	*sp = xstrdup(value);
	return 0;
}

/* A [dps] section's record with the table's defaults (they are all valid,
 * so apply cannot fail on them). */
static struct config_dps *dps_new(const char *name)
{
	struct config_dps *d = xcalloc(1, sizeof *d);
	d->name = xstrdup(name);
	char err[64];
	for (size_t i = 0; i < NSETTINGS; i++)
		if (settings[i].scope == SCOPE_DPS && settings[i].def)
			apply(&settings[i], d, settings[i].def, err, sizeof err);
	return d;
}

/* ---- parsing ---- */

#define MAX_LINE 1024

struct parse_state {
	struct config *cfg;
	const char *name; /* file name for messages */
	const char *text; /* NUL-terminated */
	size_t pos;
	int lineno;
	/* Current section: -1 none yet, 0 [server], 1 a hub (cur_hub), 2 [dps]. */
	int cur_kind;
	size_t cur_hub;
	bool bad_section;       /* current section was rejected: its keys are skipped */
	uint64_t server_set;    /* bit per settings[] row already set */
	uint64_t *hub_set;      /* per hub */
	uint64_t dps_set;
	int dps_line;           /* line of the [dps] header */
	int line_of[NSETTINGS]; /* where each server setting was set */
	char *err;
	size_t errlen;
	bool failed;
	bool stop; /* reader returns EOF from now on */
};

static void fail_at(struct parse_state *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail_at(struct parse_state *st, const char *fmt, ...)
{
	if (st->failed)
		return;
	st->failed = true;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(st->err, st->errlen, "%s:%d: %s", st->name, st->lineno, msg);
}

static void begin_section(struct parse_state *st, char *sec)
{
	sec = trim(sec);
	st->bad_section = false;
	if (strcmp(sec, "server") == 0) {
		st->cur_kind = 0;
		return;
	}
	if (strncmp(sec, "hub", 3) == 0 && (sec[3] == '\0' || sec[3] == ' ' || sec[3] == '\t')) {
		char *hn = trim(sec + 3);
		if (*hn == '\0') {
			fail_at(st, "[hub]: a hub section needs a host name, as [hub "
			            "hub1.example.test]");
			goto bad;
		}
		for (char *p = hn; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (!dns_name_ok(hn)) {
			fail_at(st, "[hub %s]: \"%s\" is not a valid DNS host name", hn, hn);
			goto bad;
		}
		struct config *cfg = st->cfg;
		for (size_t i = 0; i < cfg->nhubs; i++)
			if (strcmp(cfg->hubs[i].name, hn) == 0) {
				fail_at(st, "[hub %s]: duplicate hub", hn);
				goto bad;
			}
		cfg->hubs = xrealloc(cfg->hubs, (cfg->nhubs + 1) * sizeof *cfg->hubs);
		st->hub_set = xrealloc(st->hub_set, (cfg->nhubs + 1) * sizeof *st->hub_set);
		memset(&cfg->hubs[cfg->nhubs], 0, sizeof cfg->hubs[0]);
		cfg->hubs[cfg->nhubs].name = xstrdup(hn);
		st->hub_set[cfg->nhubs] = 0;
		st->cur_kind = 1;
		st->cur_hub = cfg->nhubs++;
		return;
	}
	if (strncmp(sec, "dps", 3) == 0 && (sec[3] == '\0' || sec[3] == ' ' || sec[3] == '\t')) {
		char *dn = trim(sec + 3);
		for (char *p = dn; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (*dn == '\0' || !dns_name_ok(dn)) {
			fail_at(st, "[dps %s]: a DPS section needs a valid DNS host name, as [dps "
			            "dps.example.test]", dn);
			goto bad;
		}
		if (st->cfg->dps) {
			fail_at(st, "[dps %s]: only one [dps] section is allowed", dn);
			goto bad;
		}
		st->cfg->dps = dps_new(dn);
		st->dps_line = st->lineno;
		st->cur_kind = 2;
		return;
	}
	fail_at(st, "[%s]: unknown section (expected [server], [hub <host name>] or [dps <host "
	            "name>])", sec);
bad:
	st->cur_kind = -1;
	st->bad_section = true;
}

/* fgets-like reader over st->text, see the file comment. */
static char *read_line(char *str, int num, void *stream)
{
	struct parse_state *st = stream;
	if (st->stop || st->text[st->pos] == '\0')
		return NULL;
	const char *p = st->text + st->pos;
	const char *nl = strchr(p, '\n');
	size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
	st->pos += n;
	st->lineno++;
	if (st->lineno == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
		p += 3;
		n -= 3;
	}
	while (n > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	if (n + 1 > (size_t)num || n > MAX_LINE) {
		fail_at(st, "line too long (at most %d characters)",
		        num - 2 < MAX_LINE ? num - 2 : MAX_LINE);
		st->stop = true;
		return NULL;
	}
	memcpy(str, p, n);
	str[n] = '\0';
	if (str[0] == '[') {
		char *close = strchr(str, ']');
		if (close) {
			char *sec = xstrndup(str + 1, (size_t)(close - str - 1));
			begin_section(st, sec);
			free(sec);
		}
	}
	return str;
}

static int on_value(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *st = user;
	if (st->bad_section)
		return 1; /* already reported */
	if (st->cur_kind < 0) {
		fail_at(st,
		        "%s: setting outside a section (start with [server], [hub "
		        "<host name>] or [dps <host name>])",
		        name);
		return 0;
	}
	enum setting_scope scope = st->cur_kind == 0   ? SCOPE_SERVER
	                           : st->cur_kind == 1 ? SCOPE_HUB
	                                               : SCOPE_DPS;
	char sect[300];
	if (scope == SCOPE_SERVER)
		snprintf(sect, sizeof sect, "[server]");
	else if (scope == SCOPE_HUB)
		snprintf(sect, sizeof sect, "[hub %s]", st->cfg->hubs[st->cur_hub].name);
	else
		snprintf(sect, sizeof sect, "[dps %s]", st->cfg->dps->name);
	for (size_t i = 0; i < NSETTINGS; i++) {
		const struct setting *s = &settings[i];
		if (s->scope != scope || strcmp(s->name, name) != 0)
			continue;
		uint64_t *set = scope == SCOPE_SERVER ? &st->server_set
		                : scope == SCOPE_HUB  ? &st->hub_set[st->cur_hub]
		                                      : &st->dps_set;
		void *base = scope == SCOPE_SERVER ? (void *)st->cfg
		             : scope == SCOPE_HUB  ? (void *)&st->cfg->hubs[st->cur_hub]
		                                   : (void *)st->cfg->dps;
		if ((*set & (UINT64_C(1) << i)) && s->type == SET_LIST && value[0]) {
			char **sp = (char **)(void *)((char *)base + s->offset);
			struct buf joined = BUF_INIT;
			buf_printf(&joined, "%s, %s", *sp, value);
			free(*sp);
			*sp = xstrdup(joined.data);
			buf_free(&joined);
			return 1;
		}
		if (*set & (UINT64_C(1) << i)) {
			fail_at(st, "%s %s: set more than once", sect, name);
			return 0;
		}
		*set |= UINT64_C(1) << i;
		if (scope == SCOPE_SERVER)
			st->line_of[i] = st->lineno;
		char msg[300];
		if (apply(s, base, value, msg, sizeof msg) != 0) {
			fail_at(st, "%s %s: %s", sect, name, msg);
			return 0;
		}
		return 1;
	}
	fail_at(st, "%s %s: unknown setting", sect, name);
	return 0;
}

static int set_defaults(struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (settings[i].scope == SCOPE_SERVER && settings[i].def &&
		    apply(&settings[i], cfg, settings[i].def, err, errlen) != 0)
			return -1;
	return 0;
}

/* Calls fn(arg, item, len) for each comma-separated, blank-trimmed item of
 * list; stops at the first non-zero return and returns it. Empty items are
 * an error (-1). */
static int each_item(const char *list, int (*fn)(void *arg, const char *item, size_t len),
                     void *arg)
{
	const char *p = list;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == 0)
			return -1;
		int rc = fn(arg, p, n);
		if (rc != 0 || !comma)
			return rc;
		p = comma + 1;
	}
}

struct dps_check {
	const struct config *cfg;
	char *msg;
	size_t msglen;
};

static int check_linked_hub(void *arg, const char *item, size_t n)
{
	struct dps_check *c = arg;
	for (size_t i = 0; i < c->cfg->nhubs; i++)
		if (strlen(c->cfg->hubs[i].name) == n && strncasecmp(c->cfg->hubs[i].name, item, n) == 0)
			return 0;
	snprintf(c->msg, c->msglen, "linked_hubs: \"%.*s\" is not a configured [hub]", (int)n,
	         item);
	return 1;
}

static int check_connection_string(void *arg, const char *item, size_t n)
{
	struct dps_check *c = arg;
	char *cs = xstrndup(item, n);
	bool host = strstr(cs, "HostName=") != NULL, name = strstr(cs, "SharedAccessKeyName=") != NULL;
	const char *key = strstr(cs, "SharedAccessKey=");
	size_t klen = key ? strcspn(key + 16, ";") : 0;
	uint8_t raw[B64_DECODED_MAX(256) + 1];
	size_t got;
	bool key_ok = key && klen > 0 && klen <= 256 && b64_decode(key + 16, klen, raw, &got) == 0;
	free(cs);
	if (host && name && key_ok)
		return 0;
	snprintf(c->msg, c->msglen,
	         "linked_hub_connection_string: an entry is not of the form "
	         "HostName=...;SharedAccessKeyName=...;SharedAccessKey=<base64>");
	return 1;
}

/* "hub=host:port" or "hub=[v6]:port". */
static int check_address(void *arg, const char *item, size_t n)
{
	struct dps_check *c = arg;
	const char *eq = memchr(item, '=', n);
	const char *colon = NULL;
	for (const char *p = item + n; eq && p > eq + 1; p--)
		if (p[-1] == ':') {
			colon = p - 1;
			break;
		}
	size_t hl = colon ? (size_t)(colon - eq - 1) : 0, pl = colon ? n - (size_t)(colon + 1 - item) : 0;
	bool host_ok = hl > 0 && (eq[1] == '[' ? colon[-1] == ']' && hl > 2
	                                       : memchr(eq + 1, ':', hl) == NULL);
	char num[8] = "";
	if (pl > 0 && pl < sizeof num) {
		memcpy(num, colon + 1, pl);
		num[pl] = '\0';
	}
	unsigned long port = num[0] && strspn(num, "0123456789") == strlen(num) ? strtoul(num, NULL, 10) : 0;
	if (!eq || eq == item || !host_ok || port < 1 || port > 65535) {
		snprintf(c->msg, c->msglen,
		         "linked_hub_addresses: \"%.*s\" is not hub=host:port", (int)n, item);
		return 1;
	}
	return 0;
}

static int check_weight(void *arg, const char *item, size_t n)
{
	struct dps_check *c = arg;
	const char *eq = memchr(item, '=', n);
	char num[16] = "";
	size_t nl = eq ? n - (size_t)(eq + 1 - item) : 0;
	if (eq && nl > 0 && nl < sizeof num) {
		memcpy(num, eq + 1, nl);
		num[nl] = '\0';
	}
	unsigned long w = strspn(num, "0123456789") == strlen(num) && num[0] ? strtoul(num, NULL, 10) : 0;
	if (!eq || eq == item || w < 1 || w > 1000) {
		snprintf(c->msg, c->msglen, "allocation_weights: \"%.*s\" is not hub=weight (1..1000)",
		         (int)n, item);
		return 1;
	}
	return 0;
}

/* The checks of [dps] that need the whole file. */
static int check_dps(const struct config *cfg, char *msg, size_t msglen)
{
	const struct config_dps *d = cfg->dps;
	struct dps_check c = {cfg, msg, msglen};
	if (d->id_scope) {
		size_t n = strlen(d->id_scope);
		bool ok = n <= 64;
		for (size_t i = 0; i < n; i++)
			ok = ok && isalnum((unsigned char)d->id_scope[i]);
		if (!ok) {
			snprintf(msg, msglen, "id_scope: \"%s\" must be 1..64 letters and digits",
			         d->id_scope);
			return -1;
		}
	}
	if (d->linked_hubs && each_item(d->linked_hubs, check_linked_hub, &c) != 0)
		goto bad_list;
	if (d->linked_hub_connection_string &&
	    each_item(d->linked_hub_connection_string, check_connection_string, &c) != 0)
		goto bad_list;
	if (d->allocation_weights && each_item(d->allocation_weights, check_weight, &c) != 0)
		goto bad_list;
	if (d->linked_hub_addresses && each_item(d->linked_hub_addresses, check_address, &c) != 0)
		goto bad_list;
	return 0;
bad_list:
	if (!msg[0])
		snprintf(msg, msglen, "empty entry in a list");
	return -1;
}

static void add_default_dps(struct config *cfg)
{
	cfg->dps = dps_new("localhost");
}

static void add_default_hub(struct config *cfg)
{
	cfg->hubs = xcalloc(1, sizeof *cfg->hubs);
	cfg->hubs[0].name = xstrdup("localhost");
	cfg->nhubs = 1;
}

int config_load_text(struct config *cfg, const char *text, size_t len, const char *name, char *err,
                     size_t errlen)
{
	memset(cfg, 0, sizeof *cfg);
	if (set_defaults(cfg, err, errlen) != 0)
		goto fail;
	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "%s: contains a NUL byte", name);
		goto fail;
	}
	struct parse_state st = {
	    .cfg = cfg, .name = name, .cur_kind = -1, .err = err, .errlen = errlen};
	char *copy = xstrndup(text, len);
	st.text = copy;
	int rc = ini_parse_stream(read_line, &st, on_value, &st);
	free(copy);
	free(st.hub_set);
	if (!st.failed && rc > 0) {
		snprintf(err, errlen, "%s:%d: syntax error (expected [section] or name = value)",
		         name, rc);
		goto fail;
	}
	if (!st.failed && rc < 0) {
		snprintf(err, errlen, "%s: cannot parse (error %d)", name, rc);
		goto fail;
	}
	if (st.failed)
		goto fail;
	if (!cfg->tls_cert != !cfg->tls_key) {
		size_t idx = 0;
		const char *have = cfg->tls_cert ? "tls_cert" : "tls_key";
		for (size_t i = 0; i < NSETTINGS; i++)
			if (settings[i].scope == SCOPE_SERVER &&
			    strcmp(settings[i].name, have) == 0)
				idx = i;
		snprintf(err, errlen, "%s:%d: [server] %s: set without %s", name, st.line_of[idx],
		         have, cfg->tls_cert ? "tls_key" : "tls_cert");
		goto fail;
	}
	if (strcmp(cfg->store, "sqlite") != 0 && strcmp(cfg->store, "postgresql") != 0) {
		snprintf(err, errlen, "%s: [server] store: \"%s\" is neither sqlite nor postgresql",
		         name, cfg->store);
		goto fail;
	}
	if (strcmp(cfg->store, "postgresql") == 0 && !cfg->postgresql) {
		snprintf(err, errlen,
		         "%s: [server] store = postgresql needs postgresql = <libpq connection "
		         "string>",
		         name);
		goto fail;
	}
	if (cfg->node_name && strspn(cfg->node_name, "abcdefghijklmnopqrstuvwxyz"
	                                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") !=
	                          strlen(cfg->node_name)) {
		snprintf(err, errlen,
		         "%s: [server] node_name: only letters, digits, '-', '.' and '_' may be used",
		         name);
		goto fail;
	}
	if (cfg->dps) {
		char msg[400] = "";
		if (cfg->nhubs == 0)
			add_default_hub(cfg);
		if (check_dps(cfg, msg, sizeof msg) != 0) {
			snprintf(err, errlen, "%s:%d: [dps %s] %s", name, st.dps_line, cfg->dps->name,
			         msg);
			goto fail;
		}
	}
	if (cfg->nhubs == 0) {
		add_default_hub(cfg);
		add_default_dps(cfg);
	}
	return 0;
fail:
	config_free(cfg);
	return -1;
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
	if (!path) {
		memset(cfg, 0, sizeof *cfg);
		if (set_defaults(cfg, err, errlen) != 0) {
			config_free(cfg);
			return -1;
		}
		add_default_hub(cfg);
		add_default_dps(cfg);
		return 0;
	}
	FILE *f = fopen(path, "rb");
	if (!f) {
		memset(cfg, 0, sizeof *cfg);
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	struct buf b = BUF_INIT;
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		buf_append(&b, chunk, n);
		if (b.len > 1024 * 1024) {
			fclose(f);
			buf_free(&b);
			memset(cfg, 0, sizeof *cfg);
			snprintf(err, errlen, "%s: file too large", path);
			return -1;
		}
	}
	bool bad = ferror(f);
	fclose(f);
	if (bad) {
		buf_free(&b);
		memset(cfg, 0, sizeof *cfg);
		snprintf(err, errlen, "cannot read %s", path);
		return -1;
	}
	int rc = config_load_text(cfg, b.data ? b.data : "", b.len, path, err, errlen);
	buf_free(&b);
	if (rc == 0)
		cfg->path = xstrdup(path);
	return rc;
}

void config_free(struct config *cfg)
{
	free(cfg->data_dir);
	addrs_free(&cfg->mqtt_listen);
	addrs_free(&cfg->amqp_listen);
	addrs_free(&cfg->https_listen);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->store);
	free(cfg->postgresql);
	free(cfg->node_name);
	free(cfg->log_level);
	free(cfg->query_indexes);
	for (size_t i = 0; i < cfg->nhubs; i++) {
		free(cfg->hubs[i].name);
		free(cfg->hubs[i].owner_key);
		addrs_free(&cfg->hubs[i].mqtt_listen);
		addrs_free(&cfg->hubs[i].amqp_listen);
		addrs_free(&cfg->hubs[i].https_listen);
	}
	free(cfg->hubs);
	if (cfg->dps) {
		struct config_dps *d = cfg->dps;
		free(d->name);
		free(d->id_scope);
		free(d->owner_key);
		free(d->linked_hubs);
		free(d->linked_hub_connection_string);
		free(d->linked_hub_addresses);
		free(d->allocation_weights);
		free(d->webhook_ca);
		addrs_free(&d->mqtt_listen);
		addrs_free(&d->https_listen);
		free(d);
	}
	free(cfg->path);
	memset(cfg, 0, sizeof *cfg);
}

/* ---- the example file ---- */

static void write_comment(FILE *f, const char *text)
{
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		fprintf(f, "; %.*s\n", (int)n, p);
		p += n;
		if (*p == '\n')
			p++;
	}
}

static void write_rows(FILE *f, enum setting_scope scope)
{
	for (size_t i = 0; i < NSETTINGS; i++) {
		if (settings[i].scope != scope)
			continue;
		fprintf(f, "\n");
		write_comment(f, settings[i].help);
		if (settings[i].def)
			fprintf(f, ";%s = %s\n", settings[i].name, settings[i].def);
		else
			fprintf(f, ";%s =\n", settings[i].name);
	}
}

void config_write_example(FILE *f)
{
	fprintf(f, "; fleethub configuration (fleethub serve --config FILE).\n"
	           "; Every setting is listed, commented out, with its default; remove the\n"
	           "; leading ';' to change one. A ';' after a value (with a blank before it)\n"
	           "; starts a comment too. Generated from the settings table in\n"
	           "; src/server/config.c; `fleethub serve --help` prints the same text.\n"
	           "\n[server]\n");
	write_rows(f, SCOPE_SERVER);
	fprintf(f, "\n; One [hub <host name>] section per hub, named by its DNS host name\n"
	           "; (lowercased). Clients pick the hub by TLS SNI name, or by MQTT user name\n"
	           "; or HTTP Host when they dial an IP. Without any [hub] section, one hub\n"
	           "; named \"localhost\" is served.\n"
	           ";[hub localhost]\n");
	write_rows(f, SCOPE_HUB);
	fprintf(f, "\n; The Device Provisioning Service, at most one, named by its DNS host name\n"
	           "; (it may share a host name with a hub: MQTT user names and HTTP paths tell\n"
	           "; them apart). Without any [hub] and [dps] section, a DPS named \"localhost\"\n"
	           "; linked to the default hub is served; with [hub] sections but no [dps],\n"
	           "; none is.\n"
	           ";[dps localhost]\n");
	write_rows(f, SCOPE_DPS);
}
