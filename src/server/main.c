/* fleethub: the server (`fleethub serve`) and, for every other command, the
 * admin CLI (src/cli). This file wires the layers together: configuration,
 * store, hubs, TLS, listeners, signals. Globals live only here. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/mem.h"
#include "cli/cli.h"
#include "hub/hub.h"
#include "net/http_server.h"
#include "net/net.h"
#include "server/config.h"
#include "server/devca.h"
#include "store/store.h"

#define FLEETHUB_VERSION "0.1.0"

enum listener_kind { LISTEN_MQTT, LISTEN_HTTPS };

struct listener_ctx {
	enum listener_kind kind;
	struct hub *default_hub; /* for clients that send no SNI name */
};

static struct {
	uv_loop_t *loop;
	struct config cfg;
	struct store *store;
	struct hub_set hubs;
	struct net_tls *tls;
	struct listener_ctx *listeners[64];
	size_t nlisteners;
	uv_signal_t sigint, sigterm;
	bool stopping;
} srv;

static struct hub *sni_hub(struct net_conn *c)
{
	const char *sni = net_conn_sni(c);
	return sni ? hub_set_find(&srv.hubs, sni, strlen(sni)) : NULL;
}

static void on_mqtt_accept(void *ctx, struct net_conn *c)
{
	hub_mqtt_accept(&srv.hubs, sni_hub(c), c);
}

static void on_http_request(void *ctx, struct http_exchange *ex)
{
	struct listener_ctx *l = ctx;
	struct hub *h = sni_hub(ex->conn);
	if (!h) {
		const char *host = http_request_header(ex->req, "Host");
		if (host)
			h = hub_set_find(&srv.hubs, host, strlen(host));
	}
	hub_http_request(h ? h : l->default_hub, &srv.hubs, ex);
}

static void on_https_accept(void *ctx, struct net_conn *c)
{
	http_server_attach(c, NULL, on_http_request, ctx);
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
		srv.listeners[srv.nlisteners++] = l;
		if (net_listen(srv.loop, srv.tls, addrs->v[i].host, addrs->v[i].port,
			       kind == LISTEN_MQTT ? on_mqtt_accept : on_https_accept, l, err,
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
	size_t cap = 4 + srv.cfg.nhubs + srv.cfg.mqtt_listen.n + srv.cfg.https_listen.n;
	for (size_t i = 0; i < srv.cfg.nhubs; i++)
		cap += srv.cfg.hubs[i].mqtt_listen.n + srv.cfg.hubs[i].https_listen.n;
	*names = xcalloc(cap, sizeof(char *));
	*ips = xcalloc(cap, sizeof(char *));
	*nn = *ni = 0;
	(*names)[(*nn)++] = "localhost";
	(*ips)[(*ni)++] = "127.0.0.1";
	for (size_t i = 0; i < srv.cfg.nhubs; i++)
		if (strcmp(srv.cfg.hubs[i].name, "localhost") != 0)
			(*names)[(*nn)++] = srv.cfg.hubs[i].name;
	const struct config_addrs *lists[64];
	size_t nl = 0;
	lists[nl++] = &srv.cfg.mqtt_listen;
	lists[nl++] = &srv.cfg.https_listen;
	for (size_t i = 0; i < srv.cfg.nhubs && nl + 2 <= 64; i++) {
		lists[nl++] = &srv.cfg.hubs[i].mqtt_listen;
		lists[nl++] = &srv.cfg.hubs[i].https_listen;
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

/* The address the CLI should dial for hub i. */
static void cli_address(size_t i, char *out, size_t outlen)
{
	const struct config_addrs *a = srv.cfg.hubs[i].https_listen.n
					       ? &srv.cfg.hubs[i].https_listen
					       : &srv.cfg.https_listen;
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
		cli_address(i, addr, sizeof addr);
		hub_connection_string(srv.hubs.v[i], &srv.hubs.v[i]->policies[0], &cs);
		buf_printf(&text, "hub %s %s %s\n", srv.hubs.v[i]->name, addr, cs.data);
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
	if (ca_path)
		printf("CA certificate (trust it in clients, e.g. NODE_EXTRA_CA_CERTS): %s\n",
		       ca_path);
	for (size_t i = 0; i < srv.cfg.mqtt_listen.n; i++)
		printf("MQTT over TLS on %s:%d\n", srv.cfg.mqtt_listen.v[i].host,
		       srv.cfg.mqtt_listen.v[i].port);
	for (size_t i = 0; i < srv.cfg.https_listen.n; i++)
		printf("HTTPS (REST, MQTT over WebSockets) on %s:%d\n",
		       srv.cfg.https_listen.v[i].host, srv.cfg.https_listen.v[i].port);
	printf("state in %s\nready\n", srv.cfg.data_dir);
	fflush(stdout);
}

/* Start-up failed after the store opened: stop its writer thread and close
 * every handle before returning, so the process never exits with the
 * writer still running. */
static int fail_serve(const char *msg)
{
	fprintf(stderr, "fleethub: %s\n", msg);
	net_stop_listening();
	store_close(srv.store);
	uv_run(srv.loop, UV_RUN_DEFAULT);
	return 1;
}

static int serve(const char *config_path)
{
	char err[512];
	if (config_load(&srv.cfg, config_path, err, sizeof err) != 0) {
		fprintf(stderr, "fleethub: %s\n", err);
		return 2;
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

	struct buf db = BUF_INIT;
	buf_printf(&db, "%s/fleethub.db", srv.cfg.data_dir);
	int rc = store_open(&srv.store, srv.loop, db.data, err, sizeof err);
	buf_free(&db);
	if (rc != 0) {
		fprintf(stderr, "fleethub: %s\n", err);
		return 1;
	}

	srv.hubs.v = xcalloc(srv.cfg.nhubs, sizeof(struct hub *));
	for (size_t i = 0; i < srv.cfg.nhubs; i++) {
		struct hub *h = xcalloc(1, sizeof *h);
		if (hub_init(h, srv.cfg.hubs[i].name, srv.cfg.hubs[i].owner_key, srv.store,
			     srv.loop, (size_t)srv.cfg.max_packet_kb * 1024, err,
			     sizeof err) != 0) {
			return fail_serve(err);
		}
		add_ip_aliases(h, &srv.cfg.hubs[i].mqtt_listen);
		add_ip_aliases(h, &srv.cfg.hubs[i].https_listen);
		srv.hubs.v[srv.hubs.n++] = h;
	}
	/* The shared listeners' addresses name the first (default) hub. */
	add_ip_aliases(srv.hubs.v[0], &srv.cfg.mqtt_listen);
	add_ip_aliases(srv.hubs.v[0], &srv.cfg.https_listen);

	char *cert = srv.cfg.tls_cert, *key = srv.cfg.tls_key, *ca_path = NULL;
	bool generated = false;
	if (!cert) {
		const char **names, **ips;
		size_t nn, ni;
		san_lists(&names, &nn, &ips, &ni);
		rc = devca_ensure(srv.cfg.data_dir, names, nn, ips, ni, &cert, &key, err,
				  sizeof err);
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
	    listen_all(&srv.cfg.https_listen, LISTEN_HTTPS, srv.hubs.v[0], err, sizeof err)) {
		free(ca_path);
		return fail_serve(err);
	}
	for (size_t i = 0; i < srv.cfg.nhubs; i++)
		if (listen_all(&srv.cfg.hubs[i].mqtt_listen, LISTEN_MQTT, srv.hubs.v[i], err,
			       sizeof err) ||
		    listen_all(&srv.cfg.hubs[i].https_listen, LISTEN_HTTPS, srv.hubs.v[i], err,
			       sizeof err)) {
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
	print_banner(ca_path);
	log_at(LOG_INFO, "fleethub %s ready", FLEETHUB_VERSION);

	uv_run(srv.loop, UV_RUN_DEFAULT);

	net_tls_free(srv.tls);
	for (size_t i = 0; i < srv.hubs.n; i++)
		free(srv.hubs.v[i]);
	free(srv.hubs.v);
	for (size_t i = 0; i < srv.nlisteners; i++)
		free(srv.listeners[i]);
	free(ca_path);
	config_free(&srv.cfg);
	log_at(LOG_INFO, "stopped");
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fleethub serve [--config FILE]\n"
		   "       fleethub <command> ...   (run `fleethub help` for the admin "
		   "commands)\n");
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
		const char *config = NULL;
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
				config = argv[++i];
			} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
				usage(stdout);
				printf("\nConfiguration file settings (with their defaults):\n\n");
				config_write_example(stdout);
				return 0;
			} else {
				usage(stderr);
				return 2;
			}
		}
		return serve(config);
	}
	if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
		printf("fleethub %s\n", FLEETHUB_VERSION);
		return 0;
	}
	return cli_main(argc, argv);
}
