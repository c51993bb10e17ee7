/* Tests for src/server/config.c (settings table, parser, example file) and
 * src/server/devca.c (development CA and server certificate). Runs from the
 * repository root (it reads examples/fleethub.ini). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "server/config.h"
#include "server/devca.h"

static int load(struct config *cfg, const char *text, char *err, size_t errlen)
{
	return config_load_text(cfg, text, strlen(text), "fleethub.ini", err, errlen);
}

/* Expects text to fail with a message containing want. */
static void expect_error(const char *text, const char *want)
{
	struct config cfg;
	char err[512] = "";
	int rc = load(&cfg, text, err, sizeof err);
	if (rc == 0 || !strstr(err, want)) {
		print_error("text:\n%s\nerror: \"%s\"\nwanted: \"%s\"\n", text, err, want);
		if (rc == 0)
			config_free(&cfg);
		fail();
	}
}

static void test_defaults(void **state)
{
	struct config cfg;
	char err[256];
	assert_int_equal(config_load(&cfg, NULL, err, sizeof err), 0);
	assert_string_equal(cfg.data_dir, "./fleethub-data");
	assert_int_equal(cfg.mqtt_listen.n, 1);
	assert_string_equal(cfg.mqtt_listen.v[0].host, "127.0.0.1");
	assert_int_equal(cfg.mqtt_listen.v[0].port, 8883);
	assert_int_equal(cfg.https_listen.n, 1);
	assert_int_equal(cfg.https_listen.v[0].port, 443);
	assert_null(cfg.tls_cert);
	assert_null(cfg.tls_key);
	assert_string_equal(cfg.log_level, "info");
	assert_int_equal(cfg.max_connections, 20000);
	assert_int_equal(cfg.max_packet_kb, 256);
	/* Overload limits: high enough that the benchmark (hundreds of twin
	 * operations per device per second) is never throttled. */
	assert_int_equal(cfg.max_inflight, 64);
	assert_int_equal(cfg.device_request_rate, 1000);
	assert_int_equal(cfg.device_request_burst, 2000);
	assert_int_equal(cfg.max_write_backlog, 20000);
	assert_int_equal(cfg.max_write_backlog_mb, 64);
	assert_non_null(cfg.dps);
	assert_int_equal(cfg.dps->max_assigning, 10000);
	assert_int_equal(cfg.dps->retry_after_s, 1);
	assert_int_equal(cfg.nhubs, 1);
	assert_string_equal(cfg.hubs[0].name, "localhost");
	assert_null(cfg.hubs[0].owner_key);
	assert_null(cfg.path);
	config_free(&cfg);
}

static void test_full_file(void **state)
{
	const char *text = "; comment\n"
	                   "[server]\n"
	                   "data_dir = /var/lib/fleethub        ; default ./fleethub-data\n"
	                   "mqtt_listen = 0.0.0.0:8883, [::1]:8884 ; two\n"
	                   "  https_listen = 127.0.0.1:8443\n"
	                   "tls_cert = /etc/c.pem\n"
	                   "tls_key = /etc/k.pem\n"
	                   "log_level = debug\n"
	                   "max_connections = 5\n"
	                   "max_packet_kb = 1024\n"
	                   "\n"
	                   "[hub Hub1.Example.TEST]   ; first\n"
	                   "owner_key = AAAAAAAAAAAAAAAAAAAAAA==\n"
	                   "https_listen = 127.0.0.2:443\n"
	                   "[hub hub2.example.test]\n";
	struct config cfg;
	char err[256] = "";
	assert_int_equal(load(&cfg, text, err, sizeof err), 0);
	assert_string_equal(cfg.data_dir, "/var/lib/fleethub");
	assert_int_equal(cfg.mqtt_listen.n, 2);
	assert_string_equal(cfg.mqtt_listen.v[0].host, "0.0.0.0");
	assert_string_equal(cfg.mqtt_listen.v[1].host, "::1");
	assert_int_equal(cfg.mqtt_listen.v[1].port, 8884);
	assert_int_equal(cfg.https_listen.n, 1);
	assert_int_equal(cfg.https_listen.v[0].port, 8443);
	assert_string_equal(cfg.tls_cert, "/etc/c.pem");
	assert_string_equal(cfg.tls_key, "/etc/k.pem");
	assert_string_equal(cfg.log_level, "debug");
	assert_int_equal(cfg.max_connections, 5);
	assert_int_equal(cfg.max_packet_kb, 1024);
	assert_int_equal(cfg.nhubs, 2);
	assert_string_equal(cfg.hubs[0].name, "hub1.example.test");
	assert_string_equal(cfg.hubs[0].owner_key, "AAAAAAAAAAAAAAAAAAAAAA==");
	assert_int_equal(cfg.hubs[0].https_listen.n, 1);
	assert_string_equal(cfg.hubs[0].https_listen.v[0].host, "127.0.0.2");
	assert_int_equal(cfg.hubs[0].mqtt_listen.n, 0);
	assert_string_equal(cfg.hubs[1].name, "hub2.example.test");
	assert_null(cfg.hubs[1].owner_key);
	config_free(&cfg);
}

static void test_errors(void **state)
{
	expect_error("[server]\n\n\n\n\n\nmqtt_listen = 1.2.3.4:70000\n",
	             "fleethub.ini:7: [server] mqtt_listen: port 70000 out of range");
	expect_error("[server]\nfoo = 1\n", "fleethub.ini:2: [server] foo: unknown setting");
	expect_error("[servers]\nx = 1\n", "fleethub.ini:1: [servers]: unknown section");
	expect_error("[hub a.test]\n[hub A.TEST]\n", "fleethub.ini:2: [hub a.test]: duplicate hub");
	expect_error("[hub bad_name]\n", "not a valid DNS host name");
	expect_error("[hub -a.test]\n", "not a valid DNS host name");
	expect_error("[hub a..test]\n", "not a valid DNS host name");
	expect_error("[hub]\n", "needs a host name");
	expect_error("[hub x]\nowner_key = abc\n", "[hub x] owner_key: not valid base64");
	expect_error("[hub x]\nowner_key = AAAA\n", "must be 16..64 bytes");
	expect_error("[hub x]\ndata_dir = /x\n", "[hub x] data_dir: unknown setting");
	expect_error("[server]\ntls_cert = /a\n", "fleethub.ini:2: [server] tls_cert: set without "
	                                          "tls_key");
	expect_error("[server]\ntls_key = /a\n", "tls_key: set without tls_cert");
	expect_error("[server]\nlog_level = loud\n", "log_level");
	expect_error("[server]\nmax_connections = 0\n", "0 out of range 1..1000000");
	expect_error("[server]\nmax_connections = -3\n", "not a whole number");
	expect_error("[server]\ndevice_request_burst = 0\n", "0 out of range 1..1000000");
	expect_error("[server]\nmax_write_backlog = 0\n", "0 out of range 1..10000000");
	expect_error("[server]\nmax_inflight = 70000\n", "70000 out of range 1..65535");
	expect_error("[server]\nmax_packet_kb = 99999999999999\n", "not a whole number");
	expect_error("data_dir = /x\n", "fleethub.ini:1: data_dir: setting outside a section");
	expect_error("[server]\njunk line\n", "fleethub.ini:2: syntax error");
	expect_error("[server]\ndata_dir = /a\ndata_dir = /b\n", "set more than once");
	expect_error("[server]\ndata_dir = /a\n  continued\n", "fleethub.ini:3: syntax error");
	expect_error("[server]\ndata_dir =\n", "[server] data_dir: empty value");
	expect_error("[server]\nhttps_listen = ::1:443\n", "[address]:port");
	expect_error("[server]\nhttps_listen = localhost\n", "expected host:port");
	expect_error("[server]\nhttps_listen = a:1,,b:2\n", "empty entry");
	char longline[3000];
	memset(longline, 'a', sizeof longline);
	memcpy(longline, "[server]\ndata_dir = ", 20);
	longline[sizeof longline - 1] = '\0';
	expect_error(longline, "fleethub.ini:2: line too long");
	struct config cfg;
	char err[256];
	assert_int_equal(config_load_text(&cfg, "[server]\0x", 10, "f", err, sizeof err), -1);
	assert_int_equal(config_load(&cfg, "/nonexistent/fleethub.ini", err, sizeof err), -1);
	assert_non_null(strstr(err, "/nonexistent/fleethub.ini"));
}

static void test_empty_and_crlf(void **state)
{
	struct config cfg;
	char err[256] = "";
	assert_int_equal(load(&cfg, "", err, sizeof err), 0);
	assert_int_equal(cfg.nhubs, 1);
	config_free(&cfg);
	assert_int_equal(load(&cfg, "\xEF\xBB\xBF[server]\r\nlog_level = warn\r\n[hub x.y]\r\n",
	                      err, sizeof err),
	                 0);
	assert_string_equal(cfg.log_level, "warn");
	assert_int_equal(cfg.nhubs, 1);
	assert_string_equal(cfg.hubs[0].name, "x.y");
	config_free(&cfg);
	/* An empty listener list disables that listener. */
	assert_int_equal(load(&cfg, "[server]\nmqtt_listen =\n", err, sizeof err), 0);
	assert_int_equal(cfg.mqtt_listen.n, 0);
	config_free(&cfg);
}

static void test_parse_addrs(void **state)
{
	struct config_addrs a;
	char err[256];
	assert_int_equal(
	    config_parse_addrs("host:1, [::1]:443 ,10.0.0.1:65535", &a, err, sizeof err), 0);
	assert_int_equal(a.n, 3);
	assert_string_equal(a.v[0].host, "host");
	assert_int_equal(a.v[0].port, 1);
	assert_string_equal(a.v[1].host, "::1");
	assert_int_equal(a.v[1].port, 443);
	assert_string_equal(a.v[2].host, "10.0.0.1");
	assert_int_equal(a.v[2].port, 65535);
	for (size_t i = 0; i < a.n; i++)
		free(a.v[i].host);
	free(a.v);
	assert_int_equal(config_parse_addrs("h:0", &a, err, sizeof err), -1);
	assert_int_equal(config_parse_addrs("h:65536", &a, err, sizeof err), -1);
	assert_string_equal(err, "port 65536 out of range");
	assert_int_equal(config_parse_addrs("[1.2.3.4]:5", &a, err, sizeof err), -1);
	assert_int_equal(config_parse_addrs("[::1:5", &a, err, sizeof err), -1);
	assert_int_equal(config_parse_addrs(":5", &a, err, sizeof err), -1);
	assert_int_equal(config_parse_addrs("h:5x", &a, err, sizeof err), -1);
	assert_int_equal(config_parse_addrs("h:1,", &a, err, sizeof err), -1);
	assert_int_equal(config_parse_addrs("a b:1", &a, err, sizeof err), -1);
}


static void test_dps(void **state)
{
	char err[512];
	struct config cfg;
	/* No file: one hub and the DPS, both "localhost". */
	assert_int_equal(config_load(&cfg, NULL, err, sizeof err), 0);
	assert_non_null(cfg.dps);
	assert_string_equal(cfg.dps->name, "localhost");
	assert_int_equal(cfg.dps->webhook_timeout_ms, 5000);
	config_free(&cfg);
	/* Hubs without [dps]: no DPS. */
	assert_int_equal(load(&cfg, "[hub h.test]\n", err, sizeof err), 0);
	assert_null(cfg.dps);
	config_free(&cfg);
	/* The form, as written. */
	const char *text =
	    "[hub hub1.example.test]\n[hub hub2.example.test]\n"
	    "[dps DPS.example.test]\n"
	    "id_scope = 0ne00F1EE7\n"
	    "owner_key = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	    "linked_hubs = hub1.example.test, hub2.example.test\n"
	    "linked_hub_connection_string = HostName=far.test;SharedAccessKeyName=iothubowner;"
	    "SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	    "allocation_weights = hub1.example.test=3\n"
	    "webhook_ca = /path/to/ca.pem         ; extra CAs\n"
	    "webhook_timeout_ms = 5000\n";
	assert_int_equal(load(&cfg, text, err, sizeof err), 0);
	assert_string_equal(cfg.dps->name, "dps.example.test");
	assert_string_equal(cfg.dps->id_scope, "0ne00F1EE7");
	assert_string_equal(cfg.dps->linked_hubs, "hub1.example.test, hub2.example.test");
	assert_string_equal(cfg.dps->webhook_ca, "/path/to/ca.pem");
	assert_int_equal(cfg.nhubs, 2);
	config_free(&cfg);
	/* A [dps] alone serves the default hub too. */
	assert_int_equal(load(&cfg, "[dps d.test]\n", err, sizeof err), 0);
	assert_int_equal(cfg.nhubs, 1);
	config_free(&cfg);
	expect_error("[hub a.test]\n[dps d.test]\nlinked_hubs = a.test, b.test\n",
	             "fleethub.ini:2: [dps d.test] linked_hubs: \"b.test\" is not a configured [hub]");
	expect_error("[dps d.test]\nid_scope = 0ne-1\n", "id_scope");
	expect_error("[dps d.test]\nallocation_weights = localhost=0\n", "allocation_weights");
	expect_error("[dps d.test]\nlinked_hub_connection_string = HostName=x\n", "HostName=...");
	/* List settings may be repeated (a line holds at most 198 characters,
	 * two connection strings do not fit on one); addresses for remote hubs. */
	assert_int_equal(load(&cfg,
	                      "[dps d.test]\n"
	                      "linked_hub_connection_string = HostName=a.test;SharedAccessKeyName=o;"
	                      "SharedAccessKey=AAAA\n"
	                      "linked_hub_connection_string = HostName=b.test;SharedAccessKeyName=o;"
	                      "SharedAccessKey=BBBB\n"
	                      "linked_hub_addresses = a.test=127.0.0.5:443, b.test=[::1]:8443\n"
	                      "linked_hub_addresses = c.test=hub-c.internal:443\n",
	                      err, sizeof err),
	                 0);
	assert_string_equal(cfg.dps->linked_hub_connection_string,
	                    "HostName=a.test;SharedAccessKeyName=o;SharedAccessKey=AAAA, "
	                    "HostName=b.test;SharedAccessKeyName=o;SharedAccessKey=BBBB");
	assert_string_equal(cfg.dps->linked_hub_addresses,
	                    "a.test=127.0.0.5:443, b.test=[::1]:8443, c.test=hub-c.internal:443");
	config_free(&cfg);
	expect_error("[dps d.test]\nid_scope = a\nid_scope = b\n", "set more than once");
	expect_error("[dps d.test]\nlinked_hub_addresses = a.test\n", "is not hub=host:port");
	expect_error("[dps d.test]\nlinked_hub_addresses = a.test=h\n", "is not hub=host:port");
	expect_error("[dps d.test]\nlinked_hub_addresses = a.test=h:0\n", "is not hub=host:port");
	expect_error("[dps d.test]\nlinked_hub_addresses = a.test=::1:443\n", "is not hub=host:port");
	expect_error("[dps d.test]\nlinked_hub_addresses = =h:443\n", "is not hub=host:port");
	expect_error("[dps d.test]\nlinked_hub_addresses = a.test=h:443,\n", "empty entry");
	expect_error("[dps d.test]\nwebhook_timeout_ms = 5\n", "out of range 100..600000");
	expect_error("[dps d.test]\n[dps e.test]\n", "only one [dps]");
	expect_error("[dps d.test]\nowner_key = abc\n", "[dps d.test] owner_key: not valid base64");
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *data = NULL;
	size_t cap = 0, n = 0, got;
	do {
		if (n + 4096 > cap) {
			cap = cap * 2 + 4096;
			data = realloc(data, cap + 1);
		}
		got = fread(data + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	fclose(f);
	data[n] = '\0';
	*len = n;
	return data;
}

/* The shipped example is exactly what config_write_example prints, lists
 * every setting of both scopes, and loads cleanly. */
static void test_example_file(void **state)
{
	size_t len;
	char *file = read_all("examples/fleethub.ini", &len);
	assert_non_null(file);
	char *gen = NULL;
	size_t genlen = 0;
	FILE *m = open_memstream(&gen, &genlen);
	config_write_example(m);
	fclose(m);
	assert_string_equal(file, gen);

	static const char *server_keys[] = {"data_dir",        "mqtt_listen",  "https_listen",
	                                    "tls_cert",        "tls_key",      "log_level",
	                                    "max_connections", "max_packet_kb"};
	static const char *hub_keys[] = {"owner_key", "mqtt_listen", "https_listen"};
	char *hub = strstr(file, "\n;[hub ");
	assert_non_null(hub);
	for (size_t i = 0; i < sizeof server_keys / sizeof server_keys[0]; i++) {
		char want[64];
		snprintf(want, sizeof want, "\n;%s =", server_keys[i]);
		char *at = strstr(file, want);
		assert_non_null(at);
		assert_true(at < hub);
	}
	for (size_t i = 0; i < sizeof hub_keys / sizeof hub_keys[0]; i++) {
		char want[64];
		snprintf(want, sizeof want, "\n;%s =", hub_keys[i]);
		assert_non_null(strstr(hub, want));
	}
	/* The file loads as it is... */
	struct config cfg;
	char err[256] = "";
	assert_int_equal(config_load(&cfg, "examples/fleethub.ini", err, sizeof err), 0);
	assert_string_equal(cfg.path, "examples/fleethub.ini");
	config_free(&cfg);

	/* ...and with every row that has a default uncommented, [dps
	 * localhost] included (the [hub] rows have none): each ";name =
	 * value" line is a real setting, and its value is the default. */
	char *text = strdup(file);
	size_t uncommented = 0;
	for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		char *eq = strstr(line, " = ");
		char *nl = strchr(line, '\n');
		bool row = line[0] == ';' && line[1] >= 'a' && line[1] <= 'z' && eq && (!nl || eq < nl) &&
			   eq[3] != '\n' && eq[3] != '\0';
		if (row || strncmp(line, ";[dps ", 6) == 0) {
			line[0] = ' ';
			uncommented += row;
		}
	}
	if (uncommented < 15)
		fail_msg("only %zu rows uncommented", uncommented);
	assert_int_equal(config_load_text(&cfg, text, strlen(text), "uncommented", err, sizeof err), 0);
	assert_string_equal(cfg.data_dir, "./fleethub-data");
	assert_int_equal(cfg.max_connections, 20000);
	assert_int_equal(cfg.max_packet_kb, 256);
	assert_int_equal(cfg.max_write_backlog, 20000);
	assert_non_null(cfg.dps);
	assert_string_equal(cfg.dps->name, "localhost");
	assert_int_equal(cfg.dps->webhook_attempts, 10);
	assert_int_equal(cfg.dps->webhook_log_keep, 20);
	assert_int_equal(cfg.dps->webhook_log_max_age_h, 168);
	assert_int_equal(cfg.dps->max_assigning, 10000);
	config_free(&cfg);
	free(text);
	free(file);
	free(gen);
}

/* ---- devca ---- */

static char tmpdir[256];

static X509 *load_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static void verify_chain(const char *ca_path, const char *cert_path, const char *host,
                         const char *ip)
{
	X509 *ca = load_cert(ca_path), *cert = load_cert(cert_path);
	X509_STORE *store = X509_STORE_new();
	X509_STORE_add_cert(store, ca);
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_STORE_CTX_init(ctx, store, cert, NULL);
	X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(ctx);
	if (host)
		X509_VERIFY_PARAM_set1_host(p, host, 0);
	if (ip)
		X509_VERIFY_PARAM_set1_ip_asc(p, ip);
	X509_VERIFY_PARAM_set_purpose(p, X509_PURPOSE_SSL_SERVER);
	int ok = X509_verify_cert(ctx);
	if (ok != 1)
		print_error("verify: %s\n",
		            X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
	assert_int_equal(ok, 1);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(ca);
	X509_free(cert);
}

static char *serial_of(const char *path)
{
	X509 *x = load_cert(path);
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = BN_bn2hex(bn);
	char *copy = strdup(hex);
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	return copy;
}

static void test_devca(void **state)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/fh_devca_XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	char data[300], ca[400], cakey[400];
	snprintf(data, sizeof data, "%s/data", tmpdir);
	snprintf(ca, sizeof ca, "%s/tls/ca.pem", data);
	snprintf(cakey, sizeof cakey, "%s/tls/ca.key", data);
	const char *names[] = {"localhost", "hub1.example.test"};
	const char *ips[] = {"127.0.0.1", "::1"};
	char *cert, *key, err[256] = "";
	assert_int_equal(devca_ensure(data, names, 2, ips, 2, &cert, &key, err, sizeof err), 0);
	verify_chain(ca, cert, "hub1.example.test", NULL);
	verify_chain(ca, cert, "localhost", "127.0.0.1");
	verify_chain(ca, cert, NULL, "::1");

	struct stat st;
	assert_int_equal(stat(key, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(stat(cakey, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	char tls[400];
	snprintf(tls, sizeof tls, "%s/tls", data);
	assert_int_equal(stat(tls, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(data, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);

	/* The CA is a CA; the server certificate is not. */
	X509 *cax = load_cert(ca), *srv = load_cert(cert);
	assert_int_equal(X509_check_ca(cax), 1);
	assert_int_equal(X509_check_ca(srv), 0);
	assert_true(X509_get_extended_key_usage(srv) & XKU_SSL_SERVER);
	X509_free(cax);
	X509_free(srv);

	/* Same names (other order, duplicates): nothing is re-issued. */
	char *serial1 = serial_of(cert), *ca_serial1 = serial_of(ca);
	const char *names2[] = {"HUB1.example.test", "localhost", "localhost"};
	const char *ips2[] = {"::1", "127.0.0.1"};
	char *cert2, *key2;
	assert_int_equal(devca_ensure(data, names2, 3, ips2, 2, &cert2, &key2, err, sizeof err), 0);
	char *serial2 = serial_of(cert2);
	assert_string_equal(serial1, serial2);
	free(cert2);
	free(key2);
	free(serial2);

	/* A new name re-issues the server certificate with the same CA. */
	const char *names3[] = {"localhost", "hub1.example.test", "hub2.example.test"};
	assert_int_equal(devca_ensure(data, names3, 3, ips, 2, &cert2, &key2, err, sizeof err), 0);
	serial2 = serial_of(cert2);
	assert_string_not_equal(serial1, serial2);
	char *ca_serial2 = serial_of(ca);
	assert_string_equal(ca_serial1, ca_serial2);
	verify_chain(ca, cert2, "hub2.example.test", NULL);
	free(serial2);
	free(ca_serial2);
	free(cert2);
	free(key2);

	/* Bad input is refused. */
	const char *badip[] = {"not-an-ip"};
	assert_int_equal(devca_ensure(data, names, 1, badip, 1, &cert2, &key2, err, sizeof err),
	                 -1);
	const char *badname[] = {"*.example.test"};
	assert_int_equal(devca_ensure(data, badname, 1, NULL, 0, &cert2, &key2, err, sizeof err),
	                 -1);

	free(serial1);
	free(ca_serial1);
	free(cert);
	free(key);
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),    cmocka_unit_test(test_full_file),
	    cmocka_unit_test(test_errors),      cmocka_unit_test(test_empty_and_crlf),
	    cmocka_unit_test(test_parse_addrs), cmocka_unit_test(test_example_file),
	    cmocka_unit_test(test_devca),       cmocka_unit_test(test_dps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
