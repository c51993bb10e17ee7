/* fleethub: the server (`fleethub serve`) and, for every other command, the
 * admin CLI (src/cli). This file wires the layers together: configuration,
 * store, hubs, TLS, listeners, signals. Globals live only here. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/crypto.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "cli/cli.h"
#include "codec/mqtt.h"
#include "codec/query.h"
#include "codec/query_plan.h"
#include "core/cluster.h"
#include "dps/dps.h"
#include "hub/hub.h"
#include "hub/amqp.h"
#include "net/http_server.h"
#include "net/mqtt_conn.h"
#include "net/net.h"
#include "server/config.h"
#include "server/devca.h"
#include "store/store.h"

#define FLEETHUB_VERSION "0.1.0"

enum listener_kind { LISTEN_MQTT, LISTEN_HTTPS, LISTEN_AMQP };

struct listener_ctx {
	enum listener_kind kind;
	struct hub *default_hub; /* for clients that send no SNI name */
	int port;
};

static struct {
	uv_loop_t *loop;
	struct config cfg;
	struct store *store;
	struct hub_set hubs;
	struct dps *dps; /* NULL when no DPS is served */
	struct net_tls *tls;
	struct listener_ctx *listeners[64];
	size_t nlisteners;
	uv_signal_t sigint, sigterm;
	bool stopping;
	struct device_events events; /* device changes: raised by REST and DPS, heard by hubs */
	char node[96]; /* this node's name (node_name) */
	int64_t started_ms;
	uv_timer_t beat; /* this node's record, every CLUSTER_HEARTBEAT_MS */
	bool beat_open;
	uv_timer_t c2d_sweep; /* expires cloud-to-device messages (hub/c2d.h) */
	int beat_failing; /* the last heartbeat's error, logged once */
} srv;

static struct hub *sni_hub(struct net_conn *c)
{
	const char *sni = net_conn_sni(c);
	return sni ? hub_set_find(&srv.hubs, sni, strlen(sni)) : NULL;
}

/* ---- the front door: one listener, hubs and the DPS behind it ---------------
 * An MQTT connection (TLS or WebSocket) is read until its first packet is
 * complete: a CONNECT whose user name is "<idScope>/registrations/..." goes
 * to the DPS, anything else to the hubs (which also answer malformed or
 * MQTT 5 CONNECTs). HTTPS requests go to the DPS by path, else to the hub
 * named by SNI or Host. */

struct front {
	struct hub *sni_hub;
	struct buf in;
};

static void front_data(struct net_conn *c, const uint8_t *p, size_t n)
{
	struct front *f = net_conn_app(c);
	buf_append(&f->in, p, n);
	struct mqtt_packet pk;
	int rc = mqtt_parse((const uint8_t *)f->in.data, f->in.len,
			    (size_t)srv.cfg.max_packet_kb * 1024, &pk);
	if (rc == 0)
		return; /* incomplete: the CONNECT timeout bounds the wait */
	bool to_dps = rc > 0 && pk.type == MQTT_CONNECT && pk.u.connect.has_username && srv.dps &&
		      dps_mqtt_username_matches(srv.dps, pk.u.connect.username.p,
						pk.u.connect.username.len);
	struct buf in = f->in;
	struct hub *sni = f->sni_hub;
	free(f);
	if (to_dps)
		dps_mqtt_accept(srv.dps, c, (const uint8_t *)in.data, in.len);
	else
		hub_mqtt_accept(&srv.hubs, sni, c, (const uint8_t *)in.data, in.len);
	buf_free(&in);
}

static void front_close(struct net_conn *c)
{
	struct front *f = net_conn_app(c);
	buf_free(&f->in);
	free(f);
}

static const struct net_conn_handler front_handler = {front_data, front_close};

static struct front *front_new(struct hub *sni_hub)
{
	struct front *f = xcalloc(1, sizeof *f);
	f->sni_hub = sni_hub;
	buf_init(&f->in);
	return f;
}

static void on_mqtt_accept(void *ctx, struct net_conn *c)
{
	net_conn_set_handler(c, &front_handler, front_new(sni_hub(c)));
	net_conn_set_deadline(c, MQTT_CONNECT_TIMEOUT_MS);
}

/* True when the Sec-WebSocket-Protocol list offered ("a, b") holds name. */
static bool ws_offers(const char *offered, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = offered; p && *p;) {
		p += strspn(p, " \t,");
		size_t n = strcspn(p, " \t,");
		if (n == nl && strncasecmp(p, name, n) == 0)
			return true;
		p += n;
	}
	return false;
}

/* GET /$iothub/websocket (or /$servicebus/websocket): MQTT over WebSockets
 * when the client offers subprotocol mqtt (or MQTT 3.1's mqttv3.1), AMQP
 * when it offers AMQPWSB10 (either path: the service SDK dials the first,
 * Event Hubs clients the second). */
static void upgrade_websocket(struct http_exchange *ex, struct hub *h)
{
	const char *offered = http_request_header(ex->req, "Sec-WebSocket-Protocol");
	const char *proto = NULL;
	if (strcmp(ex->req->path, "/$iothub/websocket") == 0)
		proto = ws_offers(offered, "mqtt")       ? "mqtt"
			: ws_offers(offered, "mqttv3.1") ? "mqttv3.1"
							 : NULL;
	if (!proto && ws_offers(offered, "AMQPWSB10")) {
		struct net_conn *c = ex->conn;
		void *ac = hub_amqp_new(&srv.hubs, sni_hub(c), h, 443);
		if (http_upgrade_websocket(ex, "AMQPWSB10", &hub_amqp_handler, ac,
					   AMQP_WS_MAX_FRAME) != 0) {
			hub_amqp_free(ac);
			hub_http_refuse(ex, 400, "ArgumentInvalid", 400004,
					"bad WebSocket upgrade request (Upgrade: websocket, "
					"Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key are "
					"needed)");
			return;
		}
		net_conn_set_deadline(c, AMQP_HANDSHAKE_MS);
		return;
	}
	if (!proto) {
		hub_http_refuse(ex, 400, "ArgumentInvalid", 400004,
				"this WebSocket endpoint serves MQTT (subprotocol mqtt, at "
				"/$iothub/websocket) and AMQP (subprotocol AMQPWSB10): offer one "
				"of them (Sec-WebSocket-Protocol)");
		return;
	}
	struct net_conn *c = ex->conn; /* the exchange is freed by the upgrade */
	struct front *f = front_new(h);
	size_t max = (size_t)srv.cfg.max_packet_kb * 1024 + 16;
	if (http_upgrade_websocket(ex, proto, &front_handler, f, max) != 0) {
		buf_free(&f->in);
		free(f);
		hub_http_refuse(ex, 400, "ArgumentInvalid", 400004,
				"bad WebSocket upgrade request (Upgrade: websocket, "
				"Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key are needed)");
		return;
	}
	net_conn_set_deadline(c, MQTT_CONNECT_TIMEOUT_MS);
}

static void on_http_request(void *ctx, struct http_exchange *ex)
{
	struct listener_ctx *l = ctx;
	struct http_request *req = ex->req;
	if (srv.dps && !req->upgrade && dps_http_path_matches(srv.dps, req->path)) {
		dps_http_request(srv.dps, ex);
		return;
	}
	struct hub *h = sni_hub(ex->conn);
	if (!h) {
		const char *host = http_request_header(req, "Host");
		if (host)
			h = hub_set_find(&srv.hubs, host, strlen(host));
	}
	if (req->upgrade && req->verb == HTTP_VERB_GET &&
	    (strcmp(req->path, "/$iothub/websocket") == 0 ||
	     strcmp(req->path, "/$servicebus/websocket") == 0)) {
		upgrade_websocket(ex, h ? h : l->default_hub);
		return;
	}
	hub_http_request(h ? h : l->default_hub, ex);
}

static void on_amqp_accept(void *ctx, struct net_conn *c)
{
	struct listener_ctx *l = ctx;
	net_conn_set_handler(c, &hub_amqp_handler,
			     hub_amqp_new(&srv.hubs, sni_hub(c), l->default_hub, l->port));
	net_conn_set_deadline(c, AMQP_HANDSHAKE_MS);
}

static void on_https_accept(void *ctx, struct net_conn *c)
{
	http_server_attach(c, NULL, (uint64_t)srv.cfg.request_timeout_s * 1000, on_http_request, ctx);
}

static bool is_ip_literal(const char *host)
{
	unsigned char tmp[16];
	return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

static int listen_all(const struct config_addrs *addrs, enum listener_kind kind,
		      struct hub *default_hub, char *err, size_t errlen)
{
	for (size_t i = 0; i < addrs->n; i++) {
		if (srv.nlisteners == sizeof srv.listeners / sizeof srv.listeners[0]) {
			snprintf(err, errlen, "too many listeners");
			return -1;
		}
		struct listener_ctx *l = xcalloc(1, sizeof *l);
		l->kind = kind;
		l->default_hub = default_hub;
		l->port = addrs->v[i].port;
		srv.listeners[srv.nlisteners++] = l;
		net_accept_fn fn = kind == LISTEN_MQTT	 ? on_mqtt_accept
				   : kind == LISTEN_AMQP ? on_amqp_accept
							 : on_https_accept;
		if (net_listen(srv.loop, srv.tls, addrs->v[i].host, addrs->v[i].port, fn, l, err,
			       errlen) != 0)
			return -1;
	}
	return 0;
}

static void add_ip_aliases(struct hub *h, const struct config_addrs *addrs)
{
	for (size_t i = 0; i < addrs->n; i++)
		if (is_ip_literal(addrs->v[i].host))
			hub_add_alias(h, addrs->v[i].host);
}

/* Collects the SAN names and IPs for the generated server certificate. */
static void san_lists(const char ***names, size_t *nn, const char ***ips, size_t *ni)
{
	size_t cap = 4 + srv.cfg.nhubs + srv.cfg.mqtt_listen.n + srv.cfg.https_listen.n +
		     srv.cfg.amqp_listen.n;
	if (srv.cfg.dps)
		cap += 1 + srv.cfg.dps->mqtt_listen.n + srv.cfg.dps->https_listen.n;
	for (size_t i = 0; i < srv.cfg.nhubs; i++)
		cap += srv.cfg.hubs[i].mqtt_listen.n + srv.cfg.hubs[i].https_listen.n +
		       srv.cfg.hubs[i].amqp_listen.n;
	*names = xcalloc(cap, sizeof(char *));
	*ips = xcalloc(cap, sizeof(char *));
	*nn = *ni = 0;
	(*names)[(*nn)++] = "localhost";
	(*ips)[(*ni)++] = "127.0.0.1";
	for (size_t i = 0; i < srv.cfg.nhubs; i++)
		if (strcmp(srv.cfg.hubs[i].name, "localhost") != 0)
			(*names)[(*nn)++] = srv.cfg.hubs[i].name;
	if (srv.cfg.dps && strcmp(srv.cfg.dps->name, "localhost") != 0)
		(*names)[(*nn)++] = srv.cfg.dps->name;
	const struct config_addrs *lists[64];
	size_t nl = 0;
	lists[nl++] = &srv.cfg.mqtt_listen;
	lists[nl++] = &srv.cfg.https_listen;
	lists[nl++] = &srv.cfg.amqp_listen;
	for (size_t i = 0; i < srv.cfg.nhubs && nl + 5 <= 64; i++) {
		lists[nl++] = &srv.cfg.hubs[i].mqtt_listen;
		lists[nl++] = &srv.cfg.hubs[i].https_listen;
		lists[nl++] = &srv.cfg.hubs[i].amqp_listen;
	}
	if (srv.cfg.dps) {
		lists[nl++] = &srv.cfg.dps->mqtt_listen;
		lists[nl++] = &srv.cfg.dps->https_listen;
	}
	for (size_t l = 0; l < nl; l++)
		for (size_t i = 0; i < lists[l]->n; i++) {
			const char *host = lists[l]->v[i].host;
			bool dup = false;
			for (size_t k = 0; k < *ni; k++)
				dup |= strcmp((*ips)[k], host) == 0;
			if (!dup && is_ip_literal(host) && strcmp(host, "0.0.0.0") != 0 &&
			    strcmp(host, "::") != 0)
				(*ips)[(*ni)++] = host;
		}
}

/* The address the CLI should dial for a list of listeners ("-" for none). */
static void dial_address(const struct config_addrs *a, char *out, size_t outlen)
{
	if (a->n == 0) {
		snprintf(out, outlen, "-");
		return;
	}
	const char *host = a->v[0].host;
	if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	else if (strcmp(host, "::") == 0)
		host = "::1";
	if (strchr(host, ':'))
		snprintf(out, outlen, "[%s]:%d", host, a->v[0].port);
	else
		snprintf(out, outlen, "%s:%d", host, a->v[0].port);
}

static int write_cli_conf(const char *ca_path, char *err, size_t errlen)
{
	struct buf path = BUF_INIT, text = BUF_INIT;
	buf_printf(&path, "%s/cli.conf", srv.cfg.data_dir);
	buf_printf(&text, "# written by fleethub serve for the fleethub CLI; contains keys\n");
	if (ca_path)
		buf_printf(&text, "ca %s\n", ca_path);
	for (size_t i = 0; i < srv.hubs.n; i++) {
		char addr[128];
		struct buf cs = BUF_INIT;
		dial_address(srv.cfg.hubs[i].https_listen.n ? &srv.cfg.hubs[i].https_listen
							    : &srv.cfg.https_listen,
			     addr, sizeof addr);
		hub_connection_string(srv.hubs.v[i], &srv.hubs.v[i]->policies[0], &cs);
		buf_printf(&text, "hub %s %s %s\n", srv.hubs.v[i]->name, addr, cs.data);
		for (size_t k = 1; k < HUB_NPOLICIES; k++) {
			buf_reset(&cs);
			hub_connection_string(srv.hubs.v[i], &srv.hubs.v[i]->policies[k], &cs);
			buf_printf(&text, "hub-policy %s %s\n", srv.hubs.v[i]->name, cs.data);
		}
		buf_free(&cs);
	}
	if (srv.dps) {
		char addr[128];
		struct buf cs = BUF_INIT;
		const struct config_addrs *a = srv.cfg.dps->https_listen.n ? &srv.cfg.dps->https_listen
									     : &srv.cfg.https_listen;
		dial_address(a, addr, sizeof addr);
		dps_connection_string(srv.dps, &srv.dps->policies[0], &cs);
		buf_printf(&text, "dps %s %s %s\n", srv.dps->name, addr, cs.data);
		for (size_t k = 1; k < DPS_NPOLICIES; k++) {
			buf_reset(&cs);
			dps_connection_string(srv.dps, &srv.dps->policies[k], &cs);
			buf_printf(&text, "dps-policy %s %s\n", srv.dps->name, cs.data);
		}
		buf_free(&cs);
	}
	int rc = 0;
	int fd = open(path.data, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, text.data, text.len) != (ssize_t)text.len) {
		snprintf(err, errlen, "cannot write %s: %s", path.data, strerror(errno));
		rc = -1;
	}
	if (fd >= 0)
		close(fd);
	buf_free(&path);
	buf_free(&text);
	return rc;
}

/* Calls fn for each comma-separated, blank-trimmed item of list. */
static void each_item(const char *list, void (*fn)(void *arg, const char *item), void *arg)
{
	char *copy = xstrdup(list), *save = NULL;
	for (char *it = strtok_r(copy, ",", &save); it; it = strtok_r(NULL, ",", &save)) {
		while (*it == ' ' || *it == '\t')
			it++;
		size_t n = strlen(it);
		while (n && (it[n - 1] == ' ' || it[n - 1] == '\t'))
			it[--n] = '\0';
		if (n)
			fn(arg, it);
	}
	free(copy);
}

struct name_search {
	const char *name;
	bool found;
	unsigned weight;
};

static void find_name(void *arg, const char *item)
{
	struct name_search *n = arg;
	n->found |= strcasecmp(item, n->name) == 0;
}

static void find_weight(void *arg, const char *item)
{
	struct name_search *n = arg;
	const char *eq = strchr(item, '=');
	if (eq && (size_t)(eq - item) == strlen(n->name) &&
	    strncasecmp(item, n->name, (size_t)(eq - item)) == 0)
		n->weight = (unsigned)strtoul(eq + 1, NULL, 10);
}

struct remote_link {
	char *err;
	size_t errlen;
	int rc;
};

static void link_remote(void *arg, const char *cs)
{
	struct remote_link *r = arg;
	if (r->rc == 0)
		r->rc = dps_link_remote(srv.dps, cs, 1, r->err, r->errlen);
}

static void set_address(void *arg, const char *item)
{
	struct remote_link *r = arg;
	const char *eq = strchr(item, '=');
	if (r->rc != 0 || !eq)
		return;
	char *name = xstrndup(item, (size_t)(eq - item));
	size_t n = strlen(name);
	while (n && (name[n - 1] == ' ' || name[n - 1] == '\t'))
		name[--n] = '\0';
	const char *addr = eq + 1;
	while (*addr == ' ' || *addr == '\t')
		addr++;
	r->rc = dps_set_remote_address(srv.dps, name, addr, r->err, r->errlen);
	free(name);
}

static void add_dps_aliases(const struct config_addrs *addrs)
{
	for (size_t i = 0; i < addrs->n; i++)
		if (is_ip_literal(addrs->v[i].host))
			dps_add_alias(srv.dps, addrs->v[i].host);
}

/* The per-device (and per-registration-id) request rate of the config. */
static struct rate_limit device_rate(void)
{
	return (struct rate_limit){srv.cfg.device_request_rate, srv.cfg.device_request_burst};
}

/* The DPS: keys and id scope, linked hubs (local and remote) with their
 * weights, aliases for the IPs of its listeners. */
static int setup_dps(char *err, size_t errlen)
{
	const struct config_dps *c = srv.cfg.dps;
	srv.dps = xcalloc(1, sizeof *srv.dps);
	struct dps_config dc = {
		.name = c->name,
		.id_scope = c->id_scope,
		.owner_key = c->owner_key,
		.webhook_ca = c->webhook_ca,
		.webhook_timeout_ms = c->webhook_timeout_ms,
		.webhook_attempts = c->webhook_attempts,
		.webhook_retry_ms = c->webhook_retry_ms,
		.webhook_log_keep = c->webhook_log_keep,
		.webhook_log_max_age_h = c->webhook_log_max_age_h,
		.retry_after_s = c->retry_after_s,
		.max_assigning = c->max_assigning,
		.attestation_rate = c->attestation_rate,
		.tpm_challenge_ttl_s = c->tpm_challenge_ttl_s,
		.rate = device_rate(),
		.rate_keys = srv.cfg.max_connections,
		.x509_max_intermediates = srv.cfg.x509_max_intermediates,
		.node = srv.node,
	};
	if (dps_init(srv.dps, &dc, srv.store, srv.loop, (size_t)srv.cfg.max_packet_kb * 1024, err,
		     errlen) != 0)
		return -1;
	srv.dps->events = &srv.events;
	for (size_t i = 0; i < srv.hubs.n; i++) {
		struct name_search n = {srv.hubs.v[i]->name, false, 1};
		if (c->linked_hubs)
			each_item(c->linked_hubs, find_name, &n);
		if (!c->linked_hubs || n.found)
			dps_link_local(srv.dps, srv.hubs.v[i]->name, 1);
	}
	struct remote_link r = {err, errlen, 0};
	if (c->linked_hub_connection_string)
		each_item(c->linked_hub_connection_string, link_remote, &r);
	if (r.rc == 0 && c->linked_hub_addresses)
		each_item(c->linked_hub_addresses, set_address, &r);
	if (r.rc != 0)
		return -1;
	for (size_t i = 0; c->allocation_weights && i < srv.dps->nlinked; i++) {
		struct name_search n = {srv.dps->linked[i].alloc.name, false, 1};
		each_item(c->allocation_weights, find_weight, &n);
		srv.dps->linked[i].alloc.weight = n.weight ? n.weight : 1;
	}
	add_dps_aliases(&srv.cfg.mqtt_listen);
	add_dps_aliases(&srv.cfg.https_listen);
	add_dps_aliases(&c->mqtt_listen);
	add_dps_aliases(&c->https_listen);
	return 0;
}

static void heartbeat(bool remove);

static void on_closed_handle(uv_handle_t *h)
{
}

static void stop_server(void)
{
	if (srv.stopping)
		return;
	srv.stopping = true;
	log_at(LOG_INFO, "stopping");
	net_stop_listening();
	for (size_t i = 0; i < srv.hubs.n; i++)
		hub_shutdown(srv.hubs.v[i]);
	if (srv.dps)
		dps_shutdown(srv.dps);
	if (srv.beat_open) {
		srv.beat_open = false;
		uv_close((uv_handle_t *)&srv.beat, on_closed_handle);
		uv_close((uv_handle_t *)&srv.c2d_sweep, on_closed_handle);
		heartbeat(true); /* a clean stop: this node is gone at once */
	}
	store_close(srv.store);
	net_close_all();
	uv_close((uv_handle_t *)&srv.sigint, on_closed_handle);
	uv_close((uv_handle_t *)&srv.sigterm, on_closed_handle);
}

static void on_signal(uv_signal_t *s, int signum)
{
	stop_server();
}

static void print_banner(const char *ca_path)
{
	printf("fleethub %s serving\n", FLEETHUB_VERSION);
	for (size_t i = 0; i < srv.hubs.n; i++) {
		struct buf cs = BUF_INIT;
		hub_connection_string(srv.hubs.v[i], &srv.hubs.v[i]->policies[0], &cs);
		printf("hub %s\n  owner connection string: %s\n", srv.hubs.v[i]->name, cs.data);
		buf_free(&cs);
	}
	if (srv.dps) {
		struct buf cs = BUF_INIT;
		dps_connection_string(srv.dps, &srv.dps->policies[0], &cs);
		printf("dps %s\n  id scope: %s\n  owner connection string: %s\n  linked hubs:",
		       srv.dps->name, srv.dps->id_scope, cs.data);
		for (size_t i = 0; i < srv.dps->nlinked; i++)
			printf(" %s%s", srv.dps->linked[i].alloc.name,
			       srv.dps->linked[i].local ? "" : " (remote)");
		printf("\n");
		buf_free(&cs);
	}
	if (ca_path)
		printf("CA certificate (trust it in clients, e.g. NODE_EXTRA_CA_CERTS): %s\n",
		       ca_path);
	for (size_t i = 0; i < srv.cfg.mqtt_listen.n; i++)
		printf("MQTT over TLS on %s:%d\n", srv.cfg.mqtt_listen.v[i].host,
		       srv.cfg.mqtt_listen.v[i].port);
	for (size_t i = 0; i < srv.cfg.https_listen.n; i++)
		printf("HTTPS (REST, MQTT and AMQP over WebSockets) on %s:%d\n",
		       srv.cfg.https_listen.v[i].host, srv.cfg.https_listen.v[i].port);
	for (size_t i = 0; i < srv.cfg.amqp_listen.n; i++)
		printf("AMQP over TLS (service clients, Event Hubs consumers) on %s:%d\n",
		       srv.cfg.amqp_listen.v[i].host, srv.cfg.amqp_listen.v[i].port);
	printf("state in %s\nready\n", srv.cfg.data_dir);
	fflush(stdout);
}

/* Start-up failed after the store opened: stop its writer thread and close
 * every handle before returning, so the process never exits with the
 * writer still running. */
/* ---- query_indexes: the store's twin indexes, made at start-up ---- */

struct index_job {
	struct qp_path paths[QUERY_MAX_ITEMS];
	size_t n;
	int rc;
	bool done;
};

static int index_work(void *arg, struct store_txn *t)
{
	struct index_job *j = arg;
	return store_twin_indexes(t, j->paths, j->n);
}

static void index_done(void *arg, int rc)
{
	struct index_job *j = arg;
	j->rc = rc;
	j->done = true;
}

/* Reads query_indexes (each item a twin path, as a query writes it) and
 * has the store index exactly those paths. 0, or -1 with err filled. */
static int setup_query_indexes(char *err, size_t errlen)
{
	struct index_job j = {0};
	struct query q[QUERY_MAX_ITEMS];
	char *list = xstrdup(srv.cfg.query_indexes ? srv.cfg.query_indexes : "");
	int rc = 0;
	for (char *save = NULL, *item = strtok_r(list, ",", &save); item && rc == 0;
	     item = strtok_r(NULL, ",", &save)) {
		while (*item == ' ' || *item == '\t')
			item++;
		if (!*item)
			continue;
		struct buf text = BUF_INIT;
		struct query_error qe;
		buf_printf(&text, "SELECT %s FROM devices", item);
		const struct query_node *e = NULL;
		if (j.n < QUERY_MAX_ITEMS && query_parse(text.data, text.len, &q[j.n], &qe) == 0) {
			e = q[j.n].nitems == 1 && q[j.n].items[0].agg == QA_NONE
				? q[j.n].items[0].expr : NULL;
			struct qp_path *p = &j.paths[j.n++];
			if (!query_plan_source(e, &p->source, &p->seg, &p->nseg) ||
			    p->source == QP_DEVICE_ID)
				e = NULL;
		}
		if (!e) {
			snprintf(err, errlen,
				 "query_indexes: \"%s\" is not a path under tags or properties "
				 "(e.g. tags.plant, properties.reported.temperature), or there are "
				 "more than %d",
				 item, QUERY_MAX_ITEMS);
			rc = -1;
		}
		buf_free(&text);
	}
	if (rc == 0) {
		store_submit(srv.store, index_work, index_done, &j);
		while (!j.done)
			uv_run(srv.loop, UV_RUN_ONCE);
		if (j.rc != 0) {
			snprintf(err, errlen, "query_indexes: the indexes could not be made: %s",
				 j.rc == FH_EINVAL ? "a path cannot be indexed" : fh_strerror(j.rc));
			rc = -1;
		} else if (j.n) {
			log_at(LOG_INFO, "store: twin queries use %zu index%s (query_indexes)", j.n,
			       j.n == 1 ? "" : "es");
		}
	}
	for (size_t i = 0; i < j.n; i++)
		query_free(&q[i]);
	free(list);
	return rc;
}

static struct hub *hub_named(const char *name)
{
	for (size_t i = 0; i < srv.hubs.n; i++)
		if (strcmp(srv.hubs.v[i]->name, name) == 0)
			return srv.hubs.v[i];
	return NULL;
}

/* A message from a node sharing the store (core/cluster.h; our own come
 * back too, and are skipped): handed to the hub or the DPS it concerns. */
static void on_cluster_message(void *arg, const char *text)
{
	struct cluster_msg m;
	if (cluster_decode(text, &m) != 0) {
		log_at(LOG_WARN, "store: a message from another node was not understood; dropped");
		return;
	}
	if (strcmp(m.node, srv.node) == 0 || (m.to[0] && strcmp(m.to, srv.node) != 0) ||
	    srv.stopping) {
		cluster_msg_clear(&m);
		return;
	}
	struct hub *h = hub_named(m.scope);
	const char *why = m.text ? m.text : "changed on another node";
	switch (m.kind) {
	case CLUSTER_DEVICE:
		device_events_raise(&srv.events, m.scope, m.id,
				    m.change == DEVICE_DELETED ? DEVICE_DELETED : DEVICE_ACCESS_CHANGED,
				    why);
		break;
	case CLUSTER_DESIRED:
		if (h && m.text)
			hub_notify_desired(h, m.id, m.text, m.n);
		break;
	case CLUSTER_CONNECTED:
		if (h)
			hub_connected_elsewhere(h, m.id, m.n, m.node);
		break;
	case CLUSTER_METHOD:
	case CLUSTER_METHOD_RESULT:
		if (h)
			hub_methods_cluster(h, &m);
		break;
	case CLUSTER_C2D:
		if (h)
			hub_c2d_wake(h, m.id);
		break;
	case CLUSTER_GROUP:
	case CLUSTER_ENROLLMENT:
		if (srv.dps)
			dps_cluster_message(srv.dps, &m);
		break;
	}
	cluster_msg_clear(&m);
}

/* ---- this node's record (store.h STORE_NODE) ----
 * Written every CLUSTER_HEARTBEAT_MS with the devices connected here;
 * removed at a clean stop. `fleethub nodes` lists the records; the DPS
 * takes over the operations of a node whose record is older than the
 * lease (core/cluster.h). */
struct beat_job {
	char node[96];
	char *json; /* NULL: remove the record */
	int64_t at_ms;
};

static int beat_work(void *arg, struct store_txn *t)
{
	struct beat_job *j = arg;
	if (!j->json) {
		int rc = store_doc_delete(t, STORE_NODE, "", j->node);
		return rc == FH_ENOTFOUND ? 0 : rc;
	}
	return store_doc_put(t, STORE_NODE, "", j->node, j->json);
}

static void beat_done(void *arg, int rc)
{
	struct beat_job *j = arg;
	if (j->json && rc == 0) {
		if (srv.beat_failing)
			log_at(LOG_INFO, "node %s: heartbeats are stored again", srv.node);
		srv.beat_failing = 0;
		if (srv.dps)
			dps_lease_renewed(srv.dps, j->at_ms);
	} else if (j->json && rc != srv.beat_failing) {
		log_at(LOG_WARN, "node %s: its heartbeat could not be stored (%s)", srv.node,
		       fh_strerror(rc));
		srv.beat_failing = rc;
	}
	free(j->json);
	free(j);
}

static void heartbeat(bool remove)
{
	struct beat_job *j = xcalloc(1, sizeof *j);
	snprintf(j->node, sizeof j->node, "%s", srv.node);
	j->at_ms = clock_now_ms();
	if (!remove) {
		size_t devices = 0;
		for (size_t i = 0; i < srv.hubs.n; i++)
			devices += srv.hubs.v[i]->sessions.live.count;
		json_t *o = json_pack("{s:s,s:I,s:I,s:I,s:s,s:s}", "name", srv.node, "startedMs",
				      (json_int_t)srv.started_ms, "heartbeatMs", (json_int_t)j->at_ms,
				      "devices", (json_int_t)devices, "version", FLEETHUB_VERSION,
				      "store", store_backend_name(srv.store));
		j->json = json_dumps(o, JSON_COMPACT);
		json_decref(o);
	}
	store_submit(srv.store, beat_work, beat_done, j);
}

/* Several nodes: every beat, the node records are read; the devices still
 * stored as connected to a node whose lease ran out are disconnected (once:
 * its record then says "cleared"), and a record gone for a day is removed.
 * (The records and rows of this node are its own to write.) */
#define NODE_FORGET_MS (24 * 3600 * 1000)

struct gone_job {
	int64_t now_ms;
	json_t *gone; /* [{"name", "doc" (with "cleared"), "forget"}] */
};

static int gone_each(void *arg, const char *id, const char *json)
{
	struct gone_job *j = arg;
	json_t *doc = json_loads(json, 0, NULL);
	int64_t hb = json_integer_value(json_object_get(doc, "heartbeatMs"));
	if (doc && strcmp(id, srv.node) != 0 && !cluster_node_live(json, j->now_ms)) {
		bool forget = j->now_ms - hb > NODE_FORGET_MS;
		if (forget || !json_is_true(json_object_get(doc, "cleared"))) {
			json_object_set_new(doc, "cleared", json_true());
			json_array_append_new(j->gone, json_pack("{s:s,s:O,s:b}", "name", id, "doc",
								 doc, "forget", forget));
		}
	}
	json_decref(doc);
	return 0;
}

static int gone_read(void *arg, struct store_txn *t)
{
	return store_doc_list(t, STORE_NODE, "", "", "", 10000, gone_each, arg);
}

static int gone_work(void *arg, struct store_txn *t)
{
	struct gone_job *j = arg;
	size_t i;
	json_t *g;
	int rc = 0;
	json_array_foreach(j->gone, i, g) {
		const char *name = json_string_value(json_object_get(g, "name"));
		if (json_is_true(json_object_get(g, "forget"))) {
			rc = store_doc_delete(t, STORE_NODE, "", name);
			rc = rc == FH_ENOTFOUND ? 0 : rc;
		} else {
			char *text = json_dumps(json_object_get(g, "doc"), JSON_COMPACT);
			rc = store_connections_clear_node(t, name, j->now_ms);
			if (rc == 0)
				rc = store_doc_put(t, STORE_NODE, "", name, text);
			free(text);
		}
		if (rc != 0)
			break;
	}
	return rc;
}

static void gone_done(void *arg, int rc)
{
	struct gone_job *j = arg;
	size_t i;
	json_t *g;
	json_array_foreach(j->gone, i, g) {
		if (rc == 0 && !json_is_true(json_object_get(g, "forget")))
			log_at(LOG_WARN, "node %s is gone (no heartbeat for %d s): its devices are "
			       "shown disconnected, its registrations taken over",
			       json_string_value(json_object_get(g, "name")), CLUSTER_LEASE_MS / 1000);
	}
	json_decref(j->gone);
	free(j);
}

static void gone_read_done(void *arg, int rc)
{
	struct gone_job *j = arg;
	if (rc == 0 && json_array_size(j->gone) && !srv.stopping) {
		store_submit(srv.store, gone_work, gone_done, j);
		return;
	}
	json_decref(j->gone);
	free(j);
}

/* Every C2D_SWEEP_MS: expired cloud-to-device messages go, with the
 * feedback their senders asked for. */
#define C2D_SWEEP_MS 5000
static void on_c2d_sweep(uv_timer_t *t)
{
	hub_c2d_sweep(srv.store);
}

static void on_beat(uv_timer_t *t)
{
	heartbeat(false);
	if (!store_shared(srv.store))
		return;
	struct gone_job *j = xcalloc(1, sizeof *j);
	j->now_ms = clock_now_ms();
	j->gone = json_array();
	store_read(srv.store, gone_read, gone_read_done, j);
	if (srv.dps)
		dps_take_over(srv.dps);
}

/* This node's name: node_name, else the one kept in data_dir/node_name,
 * else a new one (the host name and 6 random hex digits) kept there. */
static int node_name(char *out, size_t outlen, char *err, size_t errlen)
{
	if (srv.cfg.node_name) {
		snprintf(out, outlen, "%s", srv.cfg.node_name);
		return 0;
	}
	struct buf path = BUF_INIT;
	buf_printf(&path, "%s/node_name", srv.cfg.data_dir);
	FILE *f = fopen(path.data, "r");
	if (f) {
		if (!fgets(out, (int)outlen, f))
			out[0] = '\0';
		fclose(f);
		out[strcspn(out, "\r\n")] = '\0';
	}
	if (!f || !out[0]) {
		char host[64] = "node";
		gethostname(host, sizeof host - 1);
		host[sizeof host - 1] = '\0';
		for (char *p = host; *p; p++)
			if (!isalnum((unsigned char)*p) && *p != '-')
				*p = '-';
		uint8_t rnd[3];
		crypto_random(rnd, sizeof rnd);
		snprintf(out, outlen, "%.40s-%02x%02x%02x", host, rnd[0], rnd[1], rnd[2]);
		f = fopen(path.data, "w");
		if (!f || fprintf(f, "%s\n", out) < 0 || fclose(f) != 0) {
			snprintf(err, errlen, "cannot write %s: %s", path.data, strerror(errno));
			buf_free(&path);
			return -1;
		}
	}
	buf_free(&path);
	return 0;
}

/* ---- one development CA for several nodes (decisions.md 25) ----
 * The first node to start on an empty store keeps its generated CA there;
 * every other node writes that CA into its data_dir/tls and issues its own
 * server certificate from it, so clients trust one ca.pem for all. */
struct ca_share {
	char *pem, *key; /* in: this node's; out: the store's */
	int rc;
	bool done;
};

static int ca_share_work(void *arg, struct store_txn *t)
{
	struct ca_share *j = arg;
	int rc = store_setting_add(t, "devca/ca.pem", j->pem);
	if (rc == 0)
		return store_setting_add(t, "devca/ca.key", j->key);
	if (rc != FH_EEXIST)
		return rc;
	char *pem = NULL, *key = NULL;
	rc = store_setting_get(t, "devca/ca.pem", &pem);
	if (rc == 0)
		rc = store_setting_get(t, "devca/ca.key", &key);
	if (rc == 0) {
		free(j->pem);
		free(j->key);
		j->pem = pem;
		j->key = key;
	} else {
		free(pem);
		free(key);
	}
	return rc;
}

static void ca_share_done(void *arg, int rc)
{
	struct ca_share *j = arg;
	j->rc = rc;
	j->done = true;
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	struct buf b = BUF_INIT;
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	return buf_steal(&b);
}

static int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	size_t n = strlen(text);
	int ok = write(fd, text, n) == (ssize_t)n;
	return close(fd) == 0 && ok ? 0 : -1;
}

/* 0: this node's CA is the store's; 1: the store's was written here (the
 * server certificate must be issued again); -1 with err. */
static int share_dev_ca(char *err, size_t errlen)
{
	struct buf pem_path = BUF_INIT, key_path = BUF_INIT;
	buf_printf(&pem_path, "%s/tls/ca.pem", srv.cfg.data_dir);
	buf_printf(&key_path, "%s/tls/ca.key", srv.cfg.data_dir);
	struct ca_share j = {read_text(pem_path.data), read_text(key_path.data), 0, false};
	char *mine = j.pem ? xstrdup(j.pem) : NULL;
	int rc = -1;
	if (j.pem && j.key) {
		store_submit(srv.store, ca_share_work, ca_share_done, &j);
		while (!j.done)
			uv_run(srv.loop, UV_RUN_ONCE);
		if (j.rc != 0)
			snprintf(err, errlen, "the development CA cannot be shared through the store: %s",
				 fh_strerror(j.rc));
		else if (strcmp(j.pem, mine) == 0)
			rc = 0;
		else if (write_text(pem_path.data, j.pem) != 0 || write_text(key_path.data, j.key) != 0)
			snprintf(err, errlen, "cannot write %s: %s", pem_path.data, strerror(errno));
		else
			rc = 1;
		if (rc == 1)
			log_at(LOG_INFO, "the development CA is the one another node keeps in the store");
	} else {
		snprintf(err, errlen, "cannot read %s", pem_path.data);
	}
	if (j.key)
		OPENSSL_cleanse(j.key, strlen(j.key));
	free(j.pem);
	free(j.key);
	free(mine);
	buf_free(&pem_path);
	buf_free(&key_path);
	return rc;
}

static int fail_serve(const char *msg)
{
	fprintf(stderr, "fleethub: %s\n", msg);
	net_stop_listening();
	if (srv.dps)
		dps_shutdown(srv.dps);
	for (size_t i = 0; i < srv.hubs.n; i++)
		hub_events_stop(srv.hubs.v[i]); /* its retention timer would submit to a closed store */
	store_close(srv.store);
	uv_run(srv.loop, UV_RUN_DEFAULT);
	return 1;
}

/* data_dir, when not NULL, replaces the configuration's. */
static int serve(const char *config_path, const char *data_dir)
{
	char err[512];
	if (config_load(&srv.cfg, config_path, err, sizeof err) != 0) {
		fprintf(stderr, "fleethub: %s\n", err);
		return 2;
	}
	if (data_dir) {
		free(srv.cfg.data_dir);
		srv.cfg.data_dir = xstrdup(data_dir);
	}
	int level = log_level_parse(srv.cfg.log_level ? srv.cfg.log_level : "info");
	log_min_level = level < 0 ? LOG_INFO : (enum log_level)level;
	signal(SIGPIPE, SIG_IGN);
	umask(077);
	if (mkdir(srv.cfg.data_dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "fleethub: cannot create data directory %s: %s\n",
			srv.cfg.data_dir, strerror(errno));
		return 1;
	}
	srv.loop = uv_default_loop();
	net_set_max_connections(srv.cfg.max_connections);

	if (node_name(srv.node, sizeof srv.node, err, sizeof err) != 0) {
		fprintf(stderr, "fleethub: %s\n", err);
		return 1;
	}
	struct buf db = BUF_INIT;
	bool pg = strcmp(srv.cfg.store, "postgresql") == 0;
	buf_printf(&db, "%s/fleethub.db", srv.cfg.data_dir);
	int rc = store_open(&srv.store, srv.loop, pg ? STORE_POSTGRESQL : STORE_SQLITE,
			    pg ? srv.cfg.postgresql : db.data, err, sizeof err);
	buf_free(&db);
	if (rc != 0) {
		fprintf(stderr, "fleethub: %s\n", err);
		return 1;
	}
	store_set_node(srv.store, srv.node);
	log_at(LOG_INFO, "store: %s, node %s", pg ? "PostgreSQL" : "SQLite", srv.node);
	store_set_backlog_limit(srv.store, srv.cfg.max_write_backlog,
				(size_t)srv.cfg.max_write_backlog_mb << 20);
	if (setup_query_indexes(err, sizeof err) != 0)
		return fail_serve(err);

	srv.hubs.v = xcalloc(srv.cfg.nhubs, sizeof(struct hub *));
	for (size_t i = 0; i < srv.cfg.nhubs; i++) {
		struct hub *h = xcalloc(1, sizeof *h);
		if (hub_init(h, srv.cfg.hubs[i].name, srv.cfg.hubs[i].owner_key, srv.store,
			     srv.loop, (size_t)srv.cfg.max_packet_kb * 1024, err,
			     sizeof err) != 0) {
			return fail_serve(err);
		}
		struct rate_limit rate = device_rate();
		hub_set_limits(h, srv.cfg.max_inflight, &rate, srv.cfg.max_connections,
			       srv.cfg.x509_max_intermediates);
		hub_events_start(h, srv.loop, srv.cfg.event_partitions,
				 (int64_t)srv.cfg.event_retention_hours * 3600 * 1000,
				 (int64_t)srv.cfg.event_retention_mb << 20);
		add_ip_aliases(h, &srv.cfg.hubs[i].mqtt_listen);
		add_ip_aliases(h, &srv.cfg.hubs[i].https_listen);
		add_ip_aliases(h, &srv.cfg.hubs[i].amqp_listen);
		hub_listen_events(h, &srv.events);
		srv.hubs.v[srv.hubs.n++] = h;
	}
	/* The shared listeners' addresses name the first (default) hub. */
	add_ip_aliases(srv.hubs.v[0], &srv.cfg.mqtt_listen);
	add_ip_aliases(srv.hubs.v[0], &srv.cfg.https_listen);
	add_ip_aliases(srv.hubs.v[0], &srv.cfg.amqp_listen);
	if (srv.cfg.dps && setup_dps(err, sizeof err) != 0)
		return fail_serve(err);

	char *cert = srv.cfg.tls_cert, *key = srv.cfg.tls_key, *ca_path = NULL;
	bool generated = false;
	if (!cert) {
		const char **names, **ips;
		size_t nn, ni;
		san_lists(&names, &nn, &ips, &ni);
		rc = devca_ensure(srv.cfg.data_dir, names, nn, ips, ni, &cert, &key, err,
				  sizeof err);
		if (rc == 0 && store_shared(srv.store)) {
			int shared = share_dev_ca(err, sizeof err);
			if (shared > 0) { /* the store's CA replaced ours: issue again */
				free(cert);
				free(key);
				rc = devca_ensure(srv.cfg.data_dir, names, nn, ips, ni, &cert, &key,
						  err, sizeof err);
			} else if (shared < 0) {
				rc = -1;
			}
		}
		free(names);
		free(ips);
		if (rc != 0) {
			return fail_serve(err);
		}
		generated = true;
		char abs[4096];
		struct buf p = BUF_INIT;
		buf_printf(&p, "%s/tls/ca.pem", srv.cfg.data_dir);
		ca_path = realpath(p.data, abs) ? xstrdup(abs) : buf_steal(&p);
		buf_free(&p);
	}
	rc = net_tls_new(&srv.tls, cert, key, err, sizeof err);
	if (generated) {
		free(cert);
		free(key);
	}
	if (rc != 0) {
		free(ca_path);
		return fail_serve(err);
	}

	if (listen_all(&srv.cfg.mqtt_listen, LISTEN_MQTT, srv.hubs.v[0], err, sizeof err) ||
	    listen_all(&srv.cfg.https_listen, LISTEN_HTTPS, srv.hubs.v[0], err, sizeof err) ||
	    listen_all(&srv.cfg.amqp_listen, LISTEN_AMQP, srv.hubs.v[0], err, sizeof err)) {
		free(ca_path);
		return fail_serve(err);
	}
	for (size_t i = 0; i < srv.cfg.nhubs; i++)
		if (listen_all(&srv.cfg.hubs[i].mqtt_listen, LISTEN_MQTT, srv.hubs.v[i], err,
			       sizeof err) ||
		    listen_all(&srv.cfg.hubs[i].https_listen, LISTEN_HTTPS, srv.hubs.v[i], err,
			       sizeof err) ||
		    listen_all(&srv.cfg.hubs[i].amqp_listen, LISTEN_AMQP, srv.hubs.v[i], err,
			       sizeof err)) {
			free(ca_path);
			return fail_serve(err);
		}
	if (srv.cfg.dps &&
	    (listen_all(&srv.cfg.dps->mqtt_listen, LISTEN_MQTT, srv.hubs.v[0], err, sizeof err) ||
	     listen_all(&srv.cfg.dps->https_listen, LISTEN_HTTPS, srv.hubs.v[0], err,
			sizeof err))) {
		free(ca_path);
		return fail_serve(err);
	}
	if (write_cli_conf(ca_path, err, sizeof err) != 0) {
		free(ca_path);
		return fail_serve(err);
	}

	uv_signal_init(srv.loop, &srv.sigint);
	uv_signal_init(srv.loop, &srv.sigterm);
	uv_signal_start(&srv.sigint, on_signal, SIGINT);
	uv_signal_start(&srv.sigterm, on_signal, SIGTERM);
	/* Several nodes on one store: what the others change reaches the
	 * sessions here (nothing to hear on SQLite). */
	store_listen(srv.store, on_cluster_message, NULL);
	srv.started_ms = clock_now_ms();
	heartbeat(false);
	uv_timer_init(srv.loop, &srv.beat);
	uv_timer_start(&srv.beat, on_beat, CLUSTER_HEARTBEAT_MS, CLUSTER_HEARTBEAT_MS);
	uv_timer_init(srv.loop, &srv.c2d_sweep);
	uv_timer_start(&srv.c2d_sweep, on_c2d_sweep, C2D_SWEEP_MS, C2D_SWEEP_MS);
	srv.beat_open = true;
	if (srv.dps) {
		dps_resume(srv.dps);
		while (srv.dps->resuming)
			uv_run(srv.loop, UV_RUN_ONCE);
	}
	print_banner(ca_path);
	/* From here on no thread waits for stderr (base/log.c). */
	if (log_start_async(2) != 0)
		log_at(LOG_WARN, "cannot start the log thread: log lines are written directly");
	log_at(LOG_INFO, "fleethub %s ready", FLEETHUB_VERSION);

	uv_run(srv.loop, UV_RUN_DEFAULT);

	net_tls_free(srv.tls);
	for (size_t i = 0; i < srv.hubs.n; i++) {
		hub_free(srv.hubs.v[i]);
		free(srv.hubs.v[i]);
	}
	free(srv.hubs.v);
	if (srv.dps) {
		dps_free(srv.dps);
		free(srv.dps);
	}
	for (size_t i = 0; i < srv.nlisteners; i++)
		free(srv.listeners[i]);
	free(ca_path);
	config_free(&srv.cfg);
	log_at(LOG_INFO, "stopped");
	log_stop();
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fleethub serve [--config FILE] [--data-dir DIR]\n"
		   "       fleethub --version\n"
		   "       fleethub <command> ...   (run `fleethub help` for the admin "
		   "commands)\n");
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
		const char *config = NULL, *data_dir = NULL;
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
				config = argv[++i];
			} else if (strcmp(argv[i], "--data-dir") == 0 && i + 1 < argc) {
				data_dir = argv[++i];
			} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
				usage(stdout);
				printf("\nConfiguration file settings (with their defaults):\n\n");
				config_write_example(stdout);
				return 0;
			} else {
				fprintf(stderr, "fleethub serve: %s %s\n",
					strcmp(argv[i], "--config") == 0 ||
							strcmp(argv[i], "--data-dir") == 0
						? "a value is missing after"
						: "unknown option",
					argv[i]);
				usage(stderr);
				return 2;
			}
		}
		return serve(config, data_dir);
	}
	if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
		printf("fleethub %s\n", FLEETHUB_VERSION);
		return 0;
	}
	return cli_main(argc, argv);
}
