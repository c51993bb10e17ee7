/* The admin CLI (see cli.h and README "The CLI"). Flow: parse the command
 * line (cli_args.c), find the server (connection string from
 * --connection-string / FLEETHUB_CONNECTION_STRING, else DATA_DIR/cli.conf
 * written by `fleethub serve`), then make one or two REST calls with
 * libcurl. The URL always names the hub (https://<hub>/...) so TLS SNI, the
 * Host header and the SAS resource agree; CURLOPT_CONNECT_TO points the
 * connection at the real address. Exit codes: 0 ok, 1 refused by the
 * server, 2 usage, 3 unreachable or TLS failure, 4 no server configured.
 * Secrets (keys, tokens) are
 * never printed except by the commands whose purpose is to print them. */
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/enc.h"
#include "base/mem.h"
#include "cli/cli.h"
#include "codec/sas.h"

#define API_VERSION "2021-04-12"
#define TOKEN_LIFETIME_S 3600

/* ---- finding the server ---- */

struct target {
	char *hub;      /* lowercase host name */
	char *address;  /* "ip:port" / "[v6]:port" to dial, or NULL: the hub name */
	char *ca;       /* CA file, or NULL: the system's */
	char *cs;       /* the connection string */
	char *key_name; /* SharedAccessKeyName */
	char *key;      /* SharedAccessKey (base64) */
	const char *api_version;
	const char *what; /* "hub" or "DPS", for messages */
};

static void target_free(struct target *t)
{
	free(t->hub);
	free(t->address);
	free(t->ca);
	free(t->cs);
	free(t->key_name);
	free(t->key);
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* Fills hub, key_name, key from cs. Returns 0 or -1 with a message. */
static int parse_cs(const char *cs, struct target *t, char *err, size_t errlen)
{
	char *copy = xstrdup(cs), *save = NULL;
	char *host = NULL, *kn = NULL, *key = NULL;
	bool device = false;
	for (char *part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(part, '=');
		if (!eq)
			continue;
		*eq = '\0';
		const char *v = eq + 1;
		if (strcasecmp(part, "HostName") == 0)
			host = xstrdup(v);
		else if (strcasecmp(part, "SharedAccessKeyName") == 0)
			kn = xstrdup(v);
		else if (strcasecmp(part, "SharedAccessKey") == 0)
			key = xstrdup(v);
		else if (strcasecmp(part, "DeviceId") == 0)
			device = true;
	}
	free(copy);
	const char *why = NULL;
	if (device)
		why = "it is a device connection string; the CLI needs a hub policy's "
		      "(iothubowner)";
	else if (!host || !*host)
		why = "HostName is missing";
	else if (!kn || !*kn)
		why = "SharedAccessKeyName is missing";
	else if (!key || !*key)
		why = "SharedAccessKey is missing";
	if (why) {
		snprintf(err, errlen, "bad connection string: %s", why);
		free(host);
		free(kn);
		free(key);
		return -1;
	}
	lower(host);
	free(t->hub);
	free(t->key_name);
	free(t->key);
	t->hub = host;
	t->key_name = kn;
	t->key = key;
	free(t->cs);
	t->cs = xstrdup(cs);
	return 0;
}

/* Reads DATA_DIR/cli.conf. want_hub: the hub to pick (NULL = first). With
 * need_hub false a missing file or hub is not an error (only the CA and the
 * address are taken when present). Returns 0, 1 (not found, need_hub
 * false) or -1 with a message. */
static int read_cli_conf(const char *data_dir, const char *kind, const char *want_hub,
                         bool need_hub, struct target *t, char *err, size_t errlen)
{
	struct buf path = BUF_INIT;
	buf_printf(&path, "%s/cli.conf", data_dir);
	FILE *f = fopen(path.data, "r");
	if (!f) {
		if (need_hub)
			snprintf(err, errlen,
			         "cannot read %s (start `fleethub serve` first, or use --data-dir "
			         "or --connection-string)",
			         path.data);
		buf_free(&path);
		return need_hub ? -1 : 1;
	}
	char line[8192];
	bool found = false;
	char *ca = NULL;
	while (fgets(line, sizeof line, f)) {
		size_t n = strlen(line);
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
			line[--n] = '\0';
		if (strncmp(line, "ca ", 3) == 0) {
			free(ca);
			ca = xstrdup(line + 3);
		} else if (strncmp(line, kind, strlen(kind)) == 0 && line[strlen(kind)] == ' ' &&
		           !found) {
			char *save = NULL;
			char *name = strtok_r(line + strlen(kind) + 1, " ", &save);
			char *addr = strtok_r(NULL, " ", &save);
			char *cs = strtok_r(NULL, " ", &save);
			if (!name || !addr || !cs)
				continue;
			lower(name);
			if (want_hub && strcasecmp(want_hub, name) != 0)
				continue;
			found = true;
			if (need_hub && parse_cs(cs, t, err, errlen) != 0) {
				fclose(f);
				free(ca);
				buf_free(&path);
				return -1;
			}
			if (strcmp(addr, "-") != 0) {
				free(t->address);
				t->address = xstrdup(addr);
			}
		}
	}
	fclose(f);
	if (ca && !t->ca)
		t->ca = ca;
	else
		free(ca);
	if (!found && need_hub) {
		if (want_hub)
			snprintf(err, errlen, "%s %s is not in %s", kind, want_hub, path.data);
		else
			snprintf(err, errlen, "%s names no %s", path.data, kind);
		buf_free(&path);
		return -1;
	}
	buf_free(&path);
	return found ? 0 : 1;
}

/* Returns 0 or an exit code after printing the problem. */
static int find_target(const struct cli_args *a, bool dps, struct target *t)
{
	char err[1024];
	const char *kind = dps ? "dps" : "hub";
	const char *want = dps ? NULL : a->hub;
	memset(t, 0, sizeof *t);
	t->api_version = dps ? "2021-10-01" : API_VERSION;
	t->what = dps ? "DPS" : "hub";
	if (a->ca)
		t->ca = xstrdup(a->ca);
	const char *cs = a->connection_string;
	if (!cs)
		cs = getenv("FLEETHUB_CONNECTION_STRING");
	if (cs && *cs) {
		if (parse_cs(cs, t, err, sizeof err) != 0) {
			fprintf(stderr, "error: %s\n", err);
			return CLI_USAGE;
		}
		if (want && strcasecmp(want, t->hub) != 0) {
			fprintf(stderr,
			        "error: --hub %s does not match the connection string's "
			        "HostName %s\n",
			        a->hub, t->hub);
			return CLI_USAGE;
		}
		/* cli.conf may still know where this hub listens and its CA. */
		read_cli_conf(a->data_dir, kind, t->hub, false, t, err, sizeof err);
	} else if (read_cli_conf(a->data_dir, kind, want, true, t, err, sizeof err) != 0) {
		fprintf(stderr, "error: %s\n", err);
		return CLI_CONFIG;
	}
	if (a->server) {
		free(t->address);
		t->address = xstrdup(a->server);
	}
	return 0;
}

/* Prints the connection string of policy (another than the one in use)
 * from the "<kind>-policy <host> <cs>" lines serve writes to cli.conf.
 * Returns 0 or an exit code after printing the problem. */
static int print_policy_cs(const struct cli_args *a, const char *kind, const struct target *t,
                           const char *policy)
{
	if (strcasecmp(policy, t->key_name) == 0) {
		printf("%s\n", t->cs);
		return 0;
	}
	struct buf path = BUF_INIT, names = BUF_INIT;
	buf_printf(&path, "%s/cli.conf", a->data_dir);
	FILE *f = fopen(path.data, "r");
	char line[8192];
	int rc = CLI_REFUSED;
	size_t kl = strlen(kind);
	while (f && rc != 0 && fgets(line, sizeof line, f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, kind, kl) != 0 || strncmp(line + kl, "-policy ", 8) != 0)
			continue;
		char *save = NULL;
		char *host = strtok_r(line + kl + 8, " ", &save);
		char *cs = strtok_r(NULL, " ", &save);
		if (!host || !cs || strcasecmp(host, t->hub) != 0)
			continue;
		struct target p = {0};
		char err[256];
		if (parse_cs(cs, &p, err, sizeof err) == 0) {
			if (strcasecmp(p.key_name, policy) == 0) {
				printf("%s\n", cs);
				rc = 0;
			} else {
				buf_printf(&names, ", %s", p.key_name);
			}
		}
		target_free(&p);
	}
	if (rc != 0)
		fprintf(stderr, "error: %s %s has no policy %s in %s (known: %s%s)\n", t->what,
		        t->hub, policy, path.data, t->key_name, names.len ? names.data : "");
	if (f)
		fclose(f);
	buf_free(&path);
	buf_free(&names);
	return rc;
}

/* ---- HTTP ---- */

struct response {
	long status;
	/* A stream (events tail): each complete line of a 2xx answer goes to
	 * line(line_arg, text) as it arrives instead of into body. */
	void (*line)(void *arg, const char *text, size_t n);
	void *line_arg;
	struct buf body;
	void *curl;              /* its handle, while it runs */
	char error_name[128];    /* iothub-errorcode header */
	char continuation[1024]; /* x-ms-continuation header, "" when absent */
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct response *r = ud;
	if (r->body.len + size * n > 64u * 1024 * 1024)
		return 0;
	buf_append(&r->body, p, size * n);
	long status = 0;
	if (r->line && r->curl)
		curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 200 && status < 300) {
		char *nl;
		while ((nl = memchr(r->body.data, '\n', r->body.len))) {
			size_t len = (size_t)(nl - r->body.data);
			if (len)
				r->line(r->line_arg, r->body.data, len);
			buf_consume(&r->body, len + 1);
		}
	}
	return size * n;
}

/* Copies the value of header line p[0..len) into out when it is name
 * ("name:" with its colon, any case). */
static void header_value(const char *p, size_t len, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	if (len <= nl || strncasecmp(p, name, nl) != 0)
		return;
	const char *v = p + nl;
	size_t vl = len - nl;
	while (vl > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vl--;
	}
	while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
		vl--;
	if (vl >= outlen)
		vl = outlen - 1;
	memcpy(out, v, vl);
	out[vl] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct response *r = ud;
	size_t len = size * n;
	header_value(p, len, "iothub-errorcode:", r->error_name, sizeof r->error_name);
	header_value(p, len, "x-ms-continuation:", r->continuation, sizeof r->continuation);
	return len;
}

/* Splits "host:port" / "[v6]:port" for CURLOPT_CONNECT_TO. */
static int split_address(const char *addr, struct buf *host, long *port)
{
	const char *colon = strrchr(addr, ':');
	if (!colon || colon == addr)
		return -1;
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || p < 1 || p > 65535)
		return -1;
	if (addr[0] != '[' && memchr(addr, ':', (size_t)(colon - addr)))
		return -1; /* bare IPv6 needs brackets */
	buf_append(host, addr, (size_t)(colon - addr));
	*port = p;
	return 0;
}

/* Says why a call failed: the server was not reached, or it was and TLS
 * failed (its certificate is not trusted, say), with what to do. */
static void report_curl_error(const struct target *t, CURLcode cc, const char *errbuf)
{
	const char *where = t->address ? t->address : "its host name, port 443";
	const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(cc);
	switch (cc) {
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_ISSUER_ERROR:
		fprintf(stderr,
		        "error: reached %s %s at %s, but its TLS certificate is not trusted: %s\n"
		        "  give the CA that signed it with --ca FILE, or --data-dir DIR of the "
		        "server that made it (its cli.conf names its CA)\n",
		        t->what, t->hub, where, detail);
		break;
	case CURLE_SSL_CACERT_BADFILE:
		fprintf(stderr, "error: cannot use the CA file %s: %s\n", t->ca ? t->ca : "(system)",
		        detail);
		break;
	case CURLE_SSL_CONNECT_ERROR:
		fprintf(stderr, "error: reached %s %s at %s, but the TLS handshake failed: %s\n",
		        t->what, t->hub, where, detail);
		break;
	default:
		fprintf(stderr, "error: cannot reach %s %s at %s: %s\n", t->what, t->hub, where,
		        detail);
	}
}

/* One REST call: method path (path may carry a query; api-version is
 * added). Returns 0 with r filled (any HTTP status), or CLI_USAGE /
 * CLI_UNREACHABLE after printing why. */
/* One request; extra: more header lines ("Name: value"), NULL-terminated,
 * or NULL. */
static int http_call(const struct target *t, const char *method, const char *path, const char *body,
                     const char *const *extra, struct response *r)
{
	struct buf url = BUF_INIT, sr = BUF_INIT, tok = BUF_INIT, auth = BUF_INIT,
	           connect_to = BUF_INIT, host = BUF_INIT;
	struct curl_slist *headers = NULL, *ct_list = NULL;
	int rc = CLI_UNREACHABLE;
	CURL *curl = NULL;

	void (*line)(void *, const char *, size_t) = r->line;
	void *line_arg = r->line_arg;
	memset(r, 0, sizeof *r);
	r->line = line;
	r->line_arg = line_arg;
	buf_printf(&url, "https://%s%s%sapi-version=%s", t->hub, path,
	           strchr(path, '?') ? "&" : "?", t->api_version);
	pct_encode(&sr, t->hub, strlen(t->hub));
	if (sas_build(&tok, sr.data, t->key, t->key_name, (int64_t)time(NULL) + TOKEN_LIFETIME_S) !=
	    0) {
		fprintf(stderr, "error: the connection string's SharedAccessKey is not valid "
		                "base64\n");
		rc = CLI_USAGE;
		goto done;
	}
	buf_printf(&auth, "Authorization: %s", tok.data);
	headers = curl_slist_append(headers, auth.data);
	headers = curl_slist_append(headers, "Accept: application/json");
	if (body)
		headers =
		    curl_slist_append(headers, "Content-Type: application/json; charset=utf-8");
	for (size_t i = 0; extra && extra[i]; i++)
		headers = curl_slist_append(headers, extra[i]);
	curl = curl_easy_init();
	if (!curl || !headers) {
		fprintf(stderr, "error: cannot initialise libcurl\n");
		goto done;
	}
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(curl, CURLOPT_URL, url.data);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "fleethub-cli");
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
	/* A stream runs until it ends; a method call may wait up to 600 s. */
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, r->line ? 0L : 660L);
	r->curl = curl;
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
	if (body) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	} else if (strcmp(method, "GET") == 0) {
		curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
	}
	if (t->ca)
		curl_easy_setopt(curl, CURLOPT_CAINFO, t->ca);
	if (t->address) {
		long port;
		if (split_address(t->address, &host, &port) != 0) {
			fprintf(stderr, "error: bad server address \"%s\" (expected HOST:PORT)\n",
			        t->address);
			rc = CLI_USAGE;
			goto done;
		}
		buf_printf(&connect_to, "%s:443:%s:%ld", t->hub, host.data, port);
		ct_list = curl_slist_append(NULL, connect_to.data);
		curl_easy_setopt(curl, CURLOPT_CONNECT_TO, ct_list);
	}
	curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L); /* ids are checked: never rewrite a path */
	CURLcode cc = curl_easy_perform(curl);
	r->curl = NULL;
	if (cc != CURLE_OK) {
		report_curl_error(t, cc, errbuf);
		goto done;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
	rc = 0;
done:
	if (curl)
		curl_easy_cleanup(curl);
	curl_slist_free_all(headers);
	curl_slist_free_all(ct_list);
	buf_free(&url);
	buf_free(&sr);
	buf_free(&tok);
	buf_free(&auth);
	buf_free(&connect_to);
	buf_free(&host);
	if (rc != 0)
		buf_free(&r->body);
	return rc;
}

/* The name of an HTTP status, for errors whose body names none. */
static const char *status_name(long status)
{
	switch (status) {
	case 400: return "BadRequest";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "NotFound";
	case 405: return "MethodNotAllowed";
	case 409: return "Conflict";
	case 412: return "PreconditionFailed";
	case 413: return "PayloadTooLarge";
	case 429: return "TooManyRequests";
	case 500: return "InternalServerError";
	case 501: return "NotImplemented";
	case 503: return "ServiceUnavailable";
	}
	return "Error";
}

/* Prints "error: <status> <name> (<errorCode>): <message>" from a hub or
 * DPS error body: one format for both (the hub names its errors, in the
 * iothub-errorcode header or "ErrorCode:<name>;" in Message; the DPS gives
 * a number only, and the status names it). */
static void print_refusal(const struct response *r)
{
	char name[128];
	snprintf(name, sizeof name, "%s", r->error_name);
	const char *msg = NULL;
	char *msg_owned = NULL;
	long long code = 0;
	json_t *o = r->body.len ? json_loadb(r->body.data, r->body.len, 0, NULL) : NULL;
	if (json_is_object(o)) {
		const char *m = json_string_value(json_object_get(o, "Message"));
		if (m && strncmp(m, "ErrorCode:", 10) == 0) {
			const char *semi = strchr(m + 10, ';');
			size_t n = semi ? (size_t)(semi - (m + 10)) : strlen(m + 10);
			if (!name[0])
				snprintf(name, sizeof name, "%.*s", (int)n, m + 10);
			if (semi)
				msg = semi + 1;
		} else if (m) {
			msg = m;
		}
		const char *lm = json_string_value(json_object_get(o, "message"));
		if (lm && *lm)
			msg = lm;
		json_t *ec = json_object_get(o, "errorCode");
		if (json_is_integer(ec))
			code = json_integer_value(ec);
	}
	if (!msg && r->body.len) {
		msg_owned = xstrndup(r->body.data, r->body.len > 300 ? 300 : r->body.len);
		msg = msg_owned;
	}
	char num[32] = "";
	if (code)
		snprintf(num, sizeof num, " (%lld)", code);
	fprintf(stderr, "error: %ld %s%s: %s\n", r->status, name[0] ? name : status_name(r->status),
	        num, msg ? msg : "(no message)");
	free(msg_owned);
	json_decref(o);
}

/* Parses a successful response's JSON. Returns NULL after printing why. */
static json_t *response_json(const struct response *r)
{
	json_error_t je;
	json_t *o = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &je);
	if (!o)
		fprintf(stderr, "error: the server sent invalid JSON: %s\n", je.text);
	return o;
}

static void print_json(json_t *o)
{
	char *s = json_dumps(o, JSON_INDENT(2) | JSON_ENCODE_ANY);
	if (s) {
		puts(s);
		free(s);
	}
}

/* Calls and checks the status. *out gets the parsed JSON when wanted; a
 * refusal's status goes to *refused when given. Returns 0 or an exit code. */
static int call_status(const struct target *t, const char *method, const char *path,
                       const char *body, const char *if_match, json_t **out, long *refused)
{
	struct buf im = BUF_INIT;
	if (if_match)
		buf_printf(&im, "If-Match: %s", if_match);
	const char *const extra[] = {im.data, NULL};
	struct response r;
	int rc = http_call(t, method, path, body, if_match ? extra : NULL, &r);
	buf_free(&im);
	if (rc != 0)
		return rc;
	if (r.status < 200 || r.status >= 300) {
		print_refusal(&r);
		if (refused)
			*refused = r.status;
		buf_free(&r.body);
		return CLI_REFUSED;
	}
	if (out) {
		*out = response_json(&r);
		if (!*out) {
			buf_free(&r.body);
			return CLI_REFUSED;
		}
	}
	buf_free(&r.body);
	return 0;
}

static int call(const struct target *t, const char *method, const char *path, const char *body,
                const char *if_match, json_t **out)
{
	return call_status(t, method, path, body, if_match, out, NULL);
}

/* Sends a JSON body and prints the JSON answer. */
static int call_print(const struct target *t, const char *method, const char *path,
                      const char *body, const char *if_match)
{
	json_t *res = NULL;
	int rc = call(t, method, path, body, if_match, &res);
	if (rc == 0)
		print_json(res);
	json_decref(res);
	return rc;
}

static void id_path(struct buf *b, const char *prefix, const char *id)
{
	buf_appends(b, prefix);
	pct_encode(b, id, strlen(id));
}

/* "abc" -> "\"abc\""; an already quoted tag or "*" is kept. */
static void quote_etag(struct buf *b, const char *etag)
{
	if (strcmp(etag, "*") == 0 ||
	    (etag[0] == '"' && strlen(etag) >= 2 && etag[strlen(etag) - 1] == '"'))
		buf_appends(b, etag);
	else
		buf_printf(b, "\"%s\"", etag);
}

/* ---- commands ---- */

/* PUT without If-Match: creates, or is refused (409) when the record
 * exists, with a hint naming the command that changes it. */
static int create_print(const struct target *t, const char *path, const char *body,
                        const char *update_cmd, const char *id)
{
	json_t *res = NULL;
	long refused = 0;
	int rc = call_status(t, "PUT", path, body, NULL, &res, &refused);
	if (rc == 0)
		print_json(res);
	else if (refused == 409)
		fprintf(stderr, "  %s exists already: change it with `fleethub %s %s ...`, or delete "
		        "it first\n", id, update_cmd, id);
	json_decref(res);
	return rc;
}

static int device_create(const struct cli_args *a, const struct target *t)
{
	int kinds = (a->x509_thumbprint || a->x509_secondary) + (a->primary_key || a->secondary_key) +
		    a->x509_ca;
	if (kinds > 1) {
		fprintf(stderr, "error: a device authenticates with keys, a certificate thumbprint or a "
				"CA-signed certificate: give one of them\n");
		return CLI_USAGE;
	}
	if (a->x509_secondary && !a->x509_thumbprint) {
		fprintf(stderr, "error: --x509-secondary-thumbprint needs --x509-thumbprint\n");
		return CLI_USAGE;
	}
	json_t *body;
	if (a->x509_ca)
		body = json_pack("{s:s,s:s,s:{s:s},s:{s:b}}", "deviceId", a->id, "status",
				 a->disabled ? "disabled" : "enabled", "authentication", "type",
				 "certificateAuthority", "capabilities", "iotEdge", a->edge);
	else if (a->x509_thumbprint)
		body = json_pack("{s:s,s:s,s:{s:s,s:{s:s,s:s?}},s:{s:b}}", "deviceId", a->id,
				 "status", a->disabled ? "disabled" : "enabled", "authentication",
				 "type", "selfSigned", "x509Thumbprint", "primaryThumbprint",
				 a->x509_thumbprint, "secondaryThumbprint", a->x509_secondary,
				 "capabilities", "iotEdge", a->edge);
	else
		body = json_pack(
		    "{s:s,s:s,s:{s:s,s:{s:s,s:s}},s:{s:b}}", "deviceId", a->id, "status",
		    a->disabled ? "disabled" : "enabled", "authentication", "type", "sas",
		    "symmetricKey", "primaryKey", a->primary_key ? a->primary_key : "",
		    "secondaryKey", a->secondary_key ? a->secondary_key : "", "capabilities",
		    "iotEdge", a->edge);
	if (!body) {
		fprintf(stderr, "error: cannot build the request (bad UTF-8 in an argument?)\n");
		return CLI_USAGE;
	}
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	struct buf path = BUF_INIT;
	id_path(&path, "/devices/", a->id);
	int rc = create_print(t, path.data, text, "device update", a->id);
	free(text);
	buf_free(&path);
	return rc;
}

static int simple_get(const struct target *t, const char *prefix, const char *id, json_t **out)
{
	struct buf path = BUF_INIT;
	id_path(&path, prefix, id);
	int rc = call(t, "GET", path.data, NULL, NULL, out);
	buf_free(&path);
	return rc;
}

static int device_show(const struct cli_args *a, const struct target *t, const char *prefix)
{
	json_t *res = NULL;
	int rc = simple_get(t, prefix, a->id, &res);
	if (rc == 0)
		print_json(res);
	json_decref(res);
	return rc;
}

/* Prints one line per item of a JSON array answer: the given fields,
 * space-separated ("-" when absent). Takes res. */
static int print_rows(json_t *res, const char *const *fields)
{
	if (!json_is_array(res)) {
		fprintf(stderr, "error: the server did not answer with a list\n");
		json_decref(res);
		return CLI_REFUSED;
	}
	size_t i;
	json_t *item;
	json_array_foreach(res, i, item)
	{
		for (size_t f = 0; fields[f]; f++) {
			json_t *v = json_object_get(item, fields[f]);
			if (json_is_string(v))
				printf("%s%s", f ? " " : "", json_string_value(v));
			else if (json_is_integer(v))
				printf("%s%lld", f ? " " : "", (long long)json_integer_value(v));
			else
				printf("%s-", f ? " " : "");
		}
		printf("\n");
	}
	json_decref(res);
	return 0;
}

static int device_list(const struct target *t)
{
	static const char *const fields[] = {"deviceId", "status", "connectionState", NULL};
	json_t *res = NULL;
	int rc = call(t, "GET", "/devices?top=1000", NULL, NULL, &res);
	return rc != 0 ? rc : print_rows(res, fields);
}

static int device_update(const struct cli_args *a, const struct target *t)
{
	json_t *dev = NULL;
	int rc = simple_get(t, "/devices/", a->id, &dev);
	if (rc != 0)
		return rc;
	if (!json_is_object(dev)) {
		fprintf(stderr, "error: the server did not answer with a device\n");
		json_decref(dev);
		return CLI_REFUSED;
	}
	const char *etag = json_string_value(json_object_get(dev, "etag"));
	struct buf im = BUF_INIT, path = BUF_INIT;
	quote_etag(&im, etag ? etag : "*");
	json_object_set_new(dev, "status", json_string(a->status));
	char *text = json_dumps(dev, JSON_COMPACT);
	id_path(&path, "/devices/", a->id);
	rc = call_print(t, "PUT", path.data, text, im.data);
	json_decref(dev);
	free(text);
	buf_free(&im);
	buf_free(&path);
	return rc;
}

static int device_delete(const struct cli_args *a, const struct target *t)
{
	struct buf path = BUF_INIT;
	id_path(&path, "/devices/", a->id);
	int rc = call(t, "DELETE", path.data, NULL, "*", NULL);
	buf_free(&path);
	return rc;
}

static int device_connection_string(const struct cli_args *a, const struct target *t)
{
	json_t *dev = NULL;
	int rc = simple_get(t, "/devices/", a->id, &dev);
	if (rc != 0)
		return rc;
	json_t *auth = json_object_get(dev, "authentication");
	const char *key = json_string_value(
	    json_object_get(json_object_get(auth, "symmetricKey"), "primaryKey"));
	const char *type = json_string_value(json_object_get(auth, "type"));
	if (type && (strcmp(type, "selfSigned") == 0 || strcmp(type, "certificateAuthority") == 0)) {
		/* What the device SDKs take for a certificate device (setOptions
		 * then gives the certificate and key). */
		printf("HostName=%s;DeviceId=%s;x509=true\n", t->hub, a->id);
		json_decref(dev);
		return 0;
	}
	if (!key || !*key) {
		fprintf(stderr, "error: device %s has no symmetric key\n", a->id);
		json_decref(dev);
		return CLI_REFUSED;
	}
	printf("HostName=%s;DeviceId=%s;SharedAccessKey=%s\n", t->hub, a->id, key);
	json_decref(dev);
	return 0;
}

/* Where the CA certificates are: a hub's, or with --dps the DPS's. */
static const char *ca_prefix(const struct cli_args *a)
{
	return a->dps ? "/dps/certificates/" : "/certificates/";
}

/* The text of a PEM certificate file (at most 20,000 bytes) as a JSON
 * string, or NULL after saying why. */
static json_t *certificate_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char text[20000];
	size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
	if (!f || ferror(f) || n == sizeof text - 1) {
		fprintf(stderr, "error: cannot read %s (a PEM certificate)\n", path);
		if (f)
			fclose(f);
		return NULL;
	}
	fclose(f);
	text[n] = '\0';
	json_t *s = json_string(text);
	if (!s)
		fprintf(stderr, "error: %s is not text\n", path);
	return s;
}

/* ca upload: PUT the certificate, then ask for a verification code and
 * say how to prove possession; ca verify: send the proof. With --dps, the
 * DPS's CA certificates (/dps/certificates). */
static int ca_send(const struct cli_args *a, const struct target *t, bool verify)
{
	if (!a->certificate) {
		fprintf(stderr, "error: --certificate FILE is required\n");
		return CLI_USAGE;
	}
	json_t *text = certificate_file(a->certificate);
	if (!text)
		return CLI_USAGE;
	json_t *body = verify ? json_pack("{s:o}", "certificate", text)
			      : json_pack("{s:{s:o}}", "properties", "certificate", text);
	char *json = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	struct buf path = BUF_INIT;
	id_path(&path, ca_prefix(a), a->id);
	if (verify)
		buf_appends(&path, "/verify");
	json_t *res = NULL;
	int rc = call(t, verify ? "POST" : "PUT", path.data, json, NULL, &res);
	free(json);
	if (rc == 0 && !verify) {
		json_decref(res);
		res = NULL;
		buf_appends(&path, "/generateVerificationCode");
		rc = call(t, "POST", path.data, "{}", NULL, &res);
	}
	if (rc == 0) {
		print_json(res);
		const char *code = json_string_value(
		    json_object_get(json_object_get(res, "properties"), "verificationCode"));
		if (code)
			fprintf(stderr,
				"Prove you hold the CA's key (CA.pem, CA.key): sign a certificate whose\n"
				"subject CN is %s with it, and send it:\n"
				"  fleethub cert verification %s --issuer CA\n"
				"  fleethub ca verify %s --certificate %s.pem%s\n"
				"(or sign one with openssl, CN=%s, and send that)\n",
				code, code, a->id, code, a->dps ? " --dps" : "", code);
	}
	json_decref(res);
	buf_free(&path);
	return rc;
}

static json_t *parse_object_arg(const char *opt, const char *text)
{
	json_error_t je;
	json_t *o = json_loads(text, 0, &je);
	if (!o) {
		fprintf(stderr, "error: --%s: invalid JSON: %s\n", opt, je.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		fprintf(stderr, "error: --%s must be a JSON object\n", opt);
		json_decref(o);
		return NULL;
	}
	return o;
}

static int twin_update(const struct cli_args *a, const struct target *t)
{
	json_t *patch = json_object();
	if (a->tags) {
		json_t *tags = parse_object_arg("tags", a->tags);
		if (!tags) {
			json_decref(patch);
			return CLI_USAGE;
		}
		json_object_set_new(patch, "tags", tags);
	}
	if (a->desired) {
		json_t *desired = parse_object_arg("desired", a->desired);
		if (!desired) {
			json_decref(patch);
			return CLI_USAGE;
		}
		json_object_set_new(patch, "properties", json_pack("{s:o}", "desired", desired));
	}
	char *text = json_dumps(patch, JSON_COMPACT);
	json_decref(patch);
	struct buf im = BUF_INIT, path = BUF_INIT;
	quote_etag(&im, a->etag ? a->etag : "*");
	id_path(&path, "/twins/", a->id);
	int rc = call_print(t, "PATCH", path.data, text, im.data);
	free(text);
	buf_free(&im);
	buf_free(&path);
	return rc;
}

/* ---- DPS commands ---- */

/* The attestation.x509 of --certificate / --secondary-certificate (the
 * device's own for an individual enrollment, the signing certificate of a
 * group) or --ca-ref / --secondary-ca-ref (the DPS's CA certificates);
 * NULL after saying why. */
static json_t *x509_attestation(const struct cli_args *a, bool group)
{
	bool files = a->certificate || a->secondary_certificate;
	bool refs = a->ca_ref || a->secondary_ca_ref;
	if (files == refs || (files && !a->certificate) || (refs && !a->ca_ref)) {
		fprintf(stderr, "error: X.509 attestation takes --certificate FILE [--secondary-certificate "
		                "FILE] or --ca-ref NAME [--secondary-ca-ref NAME]\n");
		return NULL;
	}
	json_t *section = json_object();
	const char *slot[2] = {"primary", "secondary"};
	const char *given[2] = {files ? a->certificate : a->ca_ref,
	                        files ? a->secondary_certificate : a->secondary_ca_ref};
	for (int i = 0; i < 2; i++) {
		if (!given[i])
			continue;
		json_t *v = refs ? json_string(given[i]) : certificate_file(given[i]);
		if (!v) {
			json_decref(section);
			return NULL;
		}
		json_object_set_new(section, slot[i],
		                    refs ? v : json_pack("{s:o}", "certificate", v));
	}
	const char *name = refs ? "caReferences"
	                   : group ? "signingCertificates" : "clientCertificates";
	return json_pack("{s:o}", name, section);
}

/* Sets on enrollment record b (a group's when group) what the options
 * give. Returns false after printing why when an option's value is
 * unusable. */
static bool apply_enrollment_options(json_t *b, const struct cli_args *a, bool group)
{
	if (a->device_id)
		json_object_set_new(b, "deviceId", json_string(a->device_id));
	if (a->tpm_srk && !a->tpm_ek) {
		fprintf(stderr, "error: --tpm-srk needs --tpm-ek\n");
		return false;
	}
	if (a->tpm_ek && (a->certificate || a->secondary_certificate || a->ca_ref ||
	                  a->secondary_ca_ref)) {
		fprintf(stderr, "error: an enrollment has one attestation: --tpm-ek or "
		                "certificates, not both\n");
		return false;
	}
	if (a->tpm_ek)
		json_object_set_new(b, "attestation",
		                    json_pack("{s:s,s:{s:s,s:s*}}", "type", "tpm", "tpm",
		                              "endorsementKey", a->tpm_ek, "storageRootKey",
		                              a->tpm_srk));
	if (a->certificate || a->secondary_certificate || a->ca_ref || a->secondary_ca_ref) {
		json_t *x509 = x509_attestation(a, group);
		if (!x509)
			return false;
		json_object_set_new(b, "attestation",
		                    json_pack("{s:s,s:o}", "type", "x509", "x509", x509));
	}
	if (a->primary_key || a->secondary_key) {
		json_t *att = json_object_get(b, "attestation");
		json_t *sk = json_object_get(att, "symmetricKey");
		if (!json_is_object(sk)) {
			fprintf(stderr, "error: --primary-key and --secondary-key apply to "
			                "symmetric-key attestation only\n");
			return false;
		}
		if (a->primary_key)
			json_object_set_new(sk, "primaryKey", json_string(a->primary_key));
		if (a->secondary_key)
			json_object_set_new(sk, "secondaryKey", json_string(a->secondary_key));
	}
	if (a->status)
		json_object_set_new(b, "provisioningStatus", json_string(a->status));
	if (a->policy || a->webhook)
		json_object_set_new(b, "allocationPolicy",
		                    json_string(a->policy ? a->policy : "custom"));
	if (a->hubs) {
		json_t *hubs = json_array();
		char *copy = xstrdup(a->hubs), *save = NULL;
		for (char *h = strtok_r(copy, ", ", &save); h; h = strtok_r(NULL, ", ", &save))
			json_array_append_new(hubs, json_string(h));
		free(copy);
		json_object_set_new(b, "iotHubs", hubs);
	}
	if (a->webhook)
		json_object_set_new(
		    b, "customAllocationDefinition",
		    json_pack("{s:s,s:s}", "webhookUrl", a->webhook, "apiVersion", "2021-10-01"));
	if (a->initial_twin) {
		json_t *tw = parse_object_arg("initial-twin", a->initial_twin);
		if (!tw)
			return false;
		json_object_set_new(b, "initialTwin", tw);
	}
	if (a->reprovision)
		json_object_set_new(b, "reprovisionPolicy",
		                    json_pack("{s:b,s:b}", "updateHubAssignment",
		                              strcmp(a->reprovision, "never") != 0,
		                              "migrateDeviceData",
		                              strcmp(a->reprovision, "migrate") == 0));
	return true;
}

/* A new enrollment record: the defaults, then the options. */
static json_t *enrollment_body(const struct cli_args *a, bool group)
{
	json_t *b = json_object();
	json_object_set_new(b, group ? "enrollmentGroupId" : "registrationId", json_string(a->id));
	json_object_set_new(b, "attestation",
	                    json_pack("{s:s,s:{s:s,s:s}}", "type", "symmetricKey", "symmetricKey",
	                              "primaryKey", "", "secondaryKey", ""));
	json_object_set_new(b, "provisioningStatus",
	                    json_string(a->disabled ? "disabled" : "enabled"));
	json_object_set_new(b, "capabilities", json_pack("{s:b}", "iotEdge", a->edge));
	json_object_set_new(b, "allocationPolicy", json_string("hashed"));
	if (!apply_enrollment_options(b, a, group)) {
		json_decref(b);
		return NULL;
	}
	return b;
}

/* Dumps a request body; NULL after printing why. */
static char *request_text(json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	if (body && !text)
		fprintf(stderr, "error: cannot build the request (bad UTF-8 in an argument?)\n");
	return text;
}

static int enrollment_create(const struct cli_args *a, const struct target *t, bool group)
{
	json_t *body = enrollment_body(a, group);
	char *text = request_text(body);
	json_decref(body);
	if (!text)
		return CLI_USAGE;
	struct buf path = BUF_INIT;
	id_path(&path, group ? "/enrollmentGroups/" : "/enrollments/", a->id);
	int rc = create_print(t, path.data, text, group ? "enrollment-group update" : "enrollment update",
	                      a->id);
	free(text);
	buf_free(&path);
	return rc;
}

/* Reads the record, changes what the options give, and writes it back
 * under If-Match with the etag read: a change made meanwhile is a 412, not
 * lost. */
static int enrollment_update(const struct cli_args *a, const struct target *t, bool group)
{
	const char *prefix = group ? "/enrollmentGroups/" : "/enrollments/";
	json_t *rec = NULL;
	int rc = simple_get(t, prefix, a->id, &rec);
	if (rc != 0)
		return rc;
	const char *etag = json_string_value(json_object_get(rec, "etag"));
	char *im = xstrdup(etag ? etag : "*");
	char *text = NULL;
	if (!json_is_object(rec)) {
		fprintf(stderr, "error: the server did not answer with an enrollment\n");
		rc = CLI_REFUSED;
	} else if (!apply_enrollment_options(rec, a, group) || !(text = request_text(rec))) {
		rc = CLI_USAGE;
	} else {
		struct buf path = BUF_INIT;
		id_path(&path, prefix, a->id);
		rc = call_print(t, "PUT", path.data, text, im);
		buf_free(&path);
	}
	free(text);
	free(im);
	json_decref(rec);
	return rc;
}

static int id_delete(const struct cli_args *a, const struct target *t, const char *prefix)
{
	struct buf path = BUF_INIT;
	id_path(&path, prefix, a->id);
	int rc = call(t, "DELETE", path.data, NULL, NULL, NULL);
	buf_free(&path);
	return rc;
}

/* Runs a query and prints one line per item: the given fields. */
static int query_list(const struct target *t, const char *path, const char *query,
                      const char *const *fields)
{
	json_t *q = json_pack("{s:s}", "query", query);
	char *text = json_dumps(q, JSON_COMPACT);
	json_decref(q);
	json_t *res = NULL;
	int rc = call(t, "POST", path, text, NULL, &res);
	free(text);
	return rc != 0 ? rc : print_rows(res, fields);
}

static int registration_list(const struct cli_args *a, const struct target *t)
{
	static const char *fields[] = {"registrationId", "status",    "assignedHub",
	                               "deviceId",       "substatus", NULL};
	struct buf path = BUF_INIT;
	if (a->group) {
		id_path(&path, "/registrations/", a->group);
		buf_appends(&path, "/query");
	} else {
		buf_appends(&path, "/registrations/query");
	}
	int rc = query_list(t, path.data, "*", fields);
	buf_free(&path);
	return rc;
}

/* Prints the webhook calls logged for a registration, one line each.
 * Returns 0 or an exit code. */
static int print_webhook_calls(const struct target *t, const char *regid)
{
	struct buf path = BUF_INIT;
	id_path(&path, "/registrations/", regid);
	buf_appends(&path, "/webhookcalls");
	json_t *res = NULL;
	int rc = call(t, "GET", path.data, NULL, NULL, &res);
	buf_free(&path);
	if (rc != 0)
		return rc;
	size_t i;
	json_t *c;
	if (json_array_size(res) == 0)
		printf("no webhook calls recorded for %s\n", regid);
	json_array_foreach(res, i, c)
	{
		const char *time = json_string_value(json_object_get(c, "time"));
		const char *url = json_string_value(json_object_get(c, "url"));
		const char *outcome = json_string_value(json_object_get(c, "outcome"));
		const char *error = json_string_value(json_object_get(c, "error"));
		/* The outcome often says the error already ("connection refused"). */
		bool say_error = error && *error && (!outcome || !strstr(outcome, error));
		printf("%s POST %s -> %lld in %lld ms: %s%s%s\n", time ? time : "?",
		       url ? url : "?", (long long)json_integer_value(json_object_get(c, "status")),
		       (long long)json_integer_value(json_object_get(c, "latencyMs")),
		       outcome ? outcome : "?", say_error ? " -- " : "", say_error ? error : "");
	}
	json_decref(res);
	return 0;
}

/* A registration's state; one still in progress ("assigning") is shown with
 * the webhook calls made for it so far. */
static int registration_show(const struct cli_args *a, const struct target *t)
{
	json_t *st = NULL;
	int rc = simple_get(t, "/registrations/", a->id, &st);
	if (rc != 0)
		return rc;
	print_json(st);
	const char *status = json_string_value(json_object_get(st, "status"));
	if (status && strcmp(status, "assigning") == 0) {
		const char *op = json_string_value(json_object_get(st, "operationId"));
		printf("in progress: the device is polling operation %s; webhook calls so far:\n",
		       op ? op : "?");
		rc = print_webhook_calls(t, a->id);
	}
	json_decref(st);
	return rc;
}

/* ---- query ---- */

#define QUERY_PAGE "1000"
#define TABLE_CELL_MAX 40

/* A cell of the table: a string as it is, anything else as compact JSON,
 * cut to TABLE_CELL_MAX characters. The caller frees it. */
static char *table_cell(const json_t *v)
{
	char *text = !v ? strdup("-")
	             : json_is_string(v) ? strdup(json_string_value(v))
	                                 : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (text && strlen(text) > TABLE_CELL_MAX)
		strcpy(text + TABLE_CELL_MAX - 3, "...");
	return text;
}

/* Prints rows as a table: for twins their id, status, connection state and
 * tags; for other rows (projections, groups) every member, in the order
 * first seen. */
static void print_table(json_t *rows)
{
	json_t *cols = json_array();
	json_t *first = json_array_get(rows, 0);
	if (json_object_get(first, "deviceId") && json_object_get(first, "properties")) {
		const char *twin_cols[] = {"deviceId", "status", "connectionState", "tags"};
		for (size_t i = 0; i < 4; i++)
			json_array_append_new(cols, json_string(twin_cols[i]));
	} else {
		size_t i;
		json_t *row;
		json_array_foreach(rows, i, row)
		{
			const char *k;
			json_t *v;
			json_object_foreach(row, k, v)
			{
				bool seen = false;
				for (size_t c = 0; c < json_array_size(cols); c++)
					seen |= strcmp(json_string_value(json_array_get(cols, c)), k) == 0;
				if (!seen)
					json_array_append_new(cols, json_string(k));
			}
		}
	}
	size_t ncols = json_array_size(cols), nrows = json_array_size(rows);
	size_t *width = calloc(ncols ? ncols : 1, sizeof *width);
	char **cells = calloc((nrows + 1) * (ncols ? ncols : 1), sizeof *cells);
	for (size_t c = 0; c < ncols; c++) {
		cells[c] = strdup(json_string_value(json_array_get(cols, c)));
		for (size_t r = 0; r < nrows; r++)
			cells[(r + 1) * ncols + c] = table_cell(json_object_get(
			    json_array_get(rows, r), json_string_value(json_array_get(cols, c))));
	}
	for (size_t i = 0; i < (nrows + 1) * ncols; i++)
		if (cells[i] && strlen(cells[i]) > width[i % ncols])
			width[i % ncols] = strlen(cells[i]);
	for (size_t r = 0; r <= nrows; r++) {
		for (size_t c = 0; c < ncols; c++) {
			const char *cell = cells[r * ncols + c] ? cells[r * ncols + c] : "?";
			printf("%s%-*s", c ? "  " : "", c + 1 < ncols ? (int)width[c] : 0, cell);
		}
		printf("\n");
	}
	for (size_t i = 0; i < (nrows + 1) * ncols; i++)
		free(cells[i]);
	free(cells);
	free(width);
	json_decref(cols);
}

/* fleethub query "SELECT ...": every page, printed as one JSON array or as
 * a table. */
static int query_run(const struct cli_args *a, const struct target *t)
{
	json_t *q = json_pack("{s:s}", "query", a->id);
	if (!q) {
		fprintf(stderr, "error: the query is not valid UTF-8\n");
		return CLI_USAGE;
	}
	char *body = json_dumps(q, JSON_COMPACT);
	json_decref(q);
	json_t *all = json_array();
	struct buf cont = BUF_INIT;
	int rc = 0;
	for (;;) {
		const char *const extra[] = {"x-ms-max-item-count: " QUERY_PAGE,
		                             cont.len ? cont.data : NULL, NULL};
		struct response r;
		rc = http_call(t, "POST", "/devices/query", body, extra, &r);
		if (rc != 0)
			break;
		if (r.status < 200 || r.status >= 300) {
			print_refusal(&r);
			buf_free(&r.body);
			rc = CLI_REFUSED;
			break;
		}
		json_t *page = response_json(&r);
		buf_free(&r.body);
		if (!json_is_array(page)) {
			if (page)
				fprintf(stderr, "error: the server did not answer with a list\n");
			json_decref(page);
			rc = CLI_REFUSED;
			break;
		}
		json_array_extend(all, page);
		json_decref(page);
		if (!r.continuation[0])
			break;
		if (cont.len && strcmp(cont.data + strlen("x-ms-continuation: "), r.continuation) == 0) {
			fprintf(stderr, "error: the server gave the same continuation twice\n");
			rc = CLI_REFUSED;
			break;
		}
		buf_reset(&cont);
		buf_printf(&cont, "x-ms-continuation: %s", r.continuation);
	}
	if (rc == 0) {
		if (a->table)
			print_table(all);
		else
			print_json(all);
	}
	json_decref(all);
	buf_free(&cont);
	free(body);
	return rc;
}

/* fleethub method invoke ID NAME: the call's answer, {"status", "payload"}. */
static int method_invoke(const struct cli_args *a, const struct target *t)
{
	json_t *payload = json_null();
	if (a->payload) {
		json_error_t jerr;
		payload = json_loads(a->payload, JSON_DECODE_ANY, &jerr);
		if (!payload) {
			fprintf(stderr, "error: --payload is not JSON: %s\n", jerr.text);
			return CLI_USAGE;
		}
	}
	long timeout = a->timeout ? strtol(a->timeout, NULL, 10) : 30;
	long connect = a->connect_timeout ? strtol(a->connect_timeout, NULL, 10) : 0;
	json_t *body = json_pack("{s:s, s:o, s:i, s:i}", "methodName", a->name, "payload", payload,
				 "responseTimeoutInSeconds", (int)timeout, "connectTimeoutInSeconds",
				 (int)connect);
	char *text = json_dumps(body, JSON_COMPACT);
	struct buf path = BUF_INIT;
	id_path(&path, "/twins/", a->id);
	buf_appends(&path, "/methods");
	int rc = call_print(t, "POST", path.data, text, NULL);
	buf_free(&path);
	free(text);
	json_decref(body);
	return rc;
}

struct tail {
	const char *device;
	unsigned long printed;
};

static void tail_line(void *arg, const char *text, size_t n)
{
	struct tail *tl = arg;
	if (tl->device) {
		json_t *e = json_loadb(text, n, 0, NULL);
		const char *d = json_string_value(json_object_get(e, "deviceId"));
		bool mine = d && strcmp(d, tl->device) == 0;
		json_decref(e);
		if (!mine)
			return;
	}
	fwrite(text, 1, n, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	tl->printed++;
}

/* fleethub events tail: the hub's telemetry as it arrives, one JSON
 * object per line (GET /fleethub/events). */
static int events_tail(const struct cli_args *a, const struct target *t)
{
	struct buf path = BUF_INIT;
	buf_appends(&path, "/fleethub/events?from=");
	const char *from = a->from ? a->from : "end";
	pct_encode(&path, from, strlen(from));
	if (a->partition)
		buf_printf(&path, "&partition=%s", a->partition);
	if (a->group) {
		buf_appends(&path, "&group=");
		pct_encode(&path, a->group, strlen(a->group));
	}
	if (a->limit && !a->device_id)
		buf_printf(&path, "&limit=%s", a->limit);
	if (a->wait)
		buf_printf(&path, "&wait=%s", a->wait);
	struct tail tl = {a->device_id, 0};
	struct response r = {.line = tail_line, .line_arg = &tl};
	int rc = http_call(t, "GET", path.data, NULL, NULL, &r);
	buf_free(&path);
	if (rc != 0)
		return rc;
	if (r.status < 200 || r.status >= 300) {
		print_refusal(&r);
		rc = CLI_REFUSED;
	}
	buf_free(&r.body);
	return rc;
}

/* fleethub c2d send ID: queues a message (POST /fleethub/devices/{id}/messages). */
static int c2d_send(const struct cli_args *a, const struct target *t)
{
	json_t *props = json_object();
	for (unsigned i = 0; i < a->nprops; i++) {
		const char *eq = strchr(a->props[i], '=');
		char key[256];
		snprintf(key, sizeof key, "%.*s", (int)(eq - a->props[i]), a->props[i]);
		json_object_set_new(props, key, json_string(eq + 1));
	}
	json_t *body = json_pack("{s:s, s:o}", "body", a->body, "properties", props);
	if (a->message_id)
		json_object_set_new(body, "messageId", json_string(a->message_id));
	if (a->ack)
		json_object_set_new(body, "ack", json_string(a->ack));
	if (a->ttl)
		json_object_set_new(body, "ttlSeconds", json_integer(strtol(a->ttl, NULL, 10)));
	char *text = json_dumps(body, JSON_COMPACT);
	struct buf path = BUF_INIT;
	id_path(&path, "/fleethub/devices/", a->id);
	buf_appends(&path, "/messages");
	int rc = call_print(t, "POST", path.data, text, NULL);
	buf_free(&path);
	free(text);
	json_decref(body);
	return rc;
}

/* fleethub hub stats: the hub's counters and queue depths. */
static int hub_stats(const struct target *t)
{
	return call_print(t, "GET", "/fleethub/stats", NULL, NULL);
}

/* fleethub nodes: one line per node serving from the hub's store. */
static int nodes_print(const struct target *t)
{
	json_t *res = NULL;
	int rc = call(t, "GET", "/fleethub/nodes", NULL, NULL, &res);
	if (rc != 0)
		return rc;
	int64_t now = (int64_t)time(NULL) * 1000;
	printf("%-32s %-5s %8s %10s  %s\n", "NODE", "LIVE", "DEVICES", "HEARTBEAT", "STARTED");
	size_t i;
	json_t *n;
	json_array_foreach(res, i, n) {
		int64_t hb = json_integer_value(json_object_get(n, "heartbeatMs"));
		int64_t started = json_integer_value(json_object_get(n, "startedMs"));
		char ago[32], when[32];
		snprintf(ago, sizeof ago, "%llds ago", (long long)((now - hb) / 1000));
		time_t st = (time_t)(started / 1000);
		struct tm tm;
		strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&st, &tm));
		printf("%-32s %-5s %8lld %10s  %s\n", json_string_value(json_object_get(n, "name")),
		       json_is_true(json_object_get(n, "live")) ? "yes" : "no",
		       (long long)json_integer_value(json_object_get(n, "devices")), ago, when);
	}
	json_decref(res);
	return 0;
}

static bool is_dps_command(enum cli_command c)
{
	return c >= CLI_CMD_ENROLLMENT_CREATE && c <= CLI_CMD_WEBHOOK_CALLS;
}

static int run(const struct cli_args *a)
{
	struct target t;
	int rc = find_target(a, is_dps_command(a->cmd) || a->dps, &t);
	if (rc != 0) {
		target_free(&t);
		return rc;
	}
	switch (a->cmd) {
	case CLI_CMD_HUB_CONNECTION_STRING:
		rc = a->policy_name ? print_policy_cs(a, "hub", &t, a->policy_name)
		                    : (printf("%s\n", t.cs), 0);
		break;
	case CLI_CMD_DEVICE_CREATE: rc = device_create(a, &t); break;
	case CLI_CMD_DEVICE_SHOW: rc = device_show(a, &t, "/devices/"); break;
	case CLI_CMD_DEVICE_LIST: rc = device_list(&t); break;
	case CLI_CMD_DEVICE_UPDATE: rc = device_update(a, &t); break;
	case CLI_CMD_DEVICE_DELETE: rc = device_delete(a, &t); break;
	case CLI_CMD_DEVICE_CONNECTION_STRING: rc = device_connection_string(a, &t); break;
	case CLI_CMD_TWIN_SHOW: rc = device_show(a, &t, "/twins/"); break;
	case CLI_CMD_TWIN_UPDATE: rc = twin_update(a, &t); break;
	case CLI_CMD_ENROLLMENT_CREATE: rc = enrollment_create(a, &t, false); break;
	case CLI_CMD_GROUP_CREATE: rc = enrollment_create(a, &t, true); break;
	case CLI_CMD_ENROLLMENT_UPDATE: rc = enrollment_update(a, &t, false); break;
	case CLI_CMD_GROUP_UPDATE: rc = enrollment_update(a, &t, true); break;
	case CLI_CMD_ENROLLMENT_SHOW: rc = device_show(a, &t, "/enrollments/"); break;
	case CLI_CMD_GROUP_SHOW: rc = device_show(a, &t, "/enrollmentGroups/"); break;
	case CLI_CMD_REGISTRATION_SHOW: rc = registration_show(a, &t); break;
	case CLI_CMD_ENROLLMENT_DELETE: rc = id_delete(a, &t, "/enrollments/"); break;
	case CLI_CMD_GROUP_DELETE: rc = id_delete(a, &t, "/enrollmentGroups/"); break;
	case CLI_CMD_REGISTRATION_DELETE: rc = id_delete(a, &t, "/registrations/"); break;
	case CLI_CMD_ENROLLMENT_LIST: {
		static const char *f[] = {"registrationId", "provisioningStatus",
		                          "allocationPolicy", NULL};
		rc = query_list(&t, "/enrollments/query", "SELECT * FROM enrollments", f);
		break;
	}
	case CLI_CMD_GROUP_LIST: {
		static const char *f[] = {"enrollmentGroupId", "provisioningStatus",
		                          "allocationPolicy", NULL};
		rc = query_list(&t, "/enrollmentGroups/query", "SELECT * FROM enrollmentGroups", f);
		break;
	}
	case CLI_CMD_REGISTRATION_LIST: rc = registration_list(a, &t); break;
	case CLI_CMD_DPS_CONNECTION_STRING:
		rc = a->policy_name ? print_policy_cs(a, "dps", &t, a->policy_name)
		                    : (printf("%s\n", t.cs), 0);
		break;
	case CLI_CMD_WEBHOOK_CALLS: rc = print_webhook_calls(&t, a->id); break;
	case CLI_CMD_QUERY: rc = query_run(a, &t); break;
	case CLI_CMD_NODES: rc = nodes_print(&t); break;
	case CLI_CMD_METHOD_INVOKE: rc = method_invoke(a, &t); break;
	case CLI_CMD_EVENTS_TAIL: rc = events_tail(a, &t); break;
	case CLI_CMD_C2D_SEND: rc = c2d_send(a, &t); break;
	case CLI_CMD_C2D_PURGE: {
		struct buf path = BUF_INIT;
		id_path(&path, "/devices/", a->id);
		buf_appends(&path, "/commands");
		rc = call_print(&t, "DELETE", path.data, NULL, NULL);
		buf_free(&path);
		break;
	}
	case CLI_CMD_C2D_FEEDBACK: rc = call_print(&t, "GET", "/fleethub/feedback", NULL, NULL); break;
	case CLI_CMD_HUB_STATS: rc = hub_stats(&t); break;
	case CLI_CMD_CA_UPLOAD: rc = ca_send(a, &t, false); break;
	case CLI_CMD_CA_VERIFY: rc = ca_send(a, &t, true); break;
	case CLI_CMD_CA_SHOW: rc = device_show(a, &t, ca_prefix(a)); break;
	case CLI_CMD_CA_DELETE: rc = id_delete(a, &t, ca_prefix(a)); break;
	case CLI_CMD_CA_LIST: {
		json_t *res = NULL;
		rc = call(&t, "GET", a->dps ? "/dps/certificates" : "/certificates", NULL, NULL,
		          &res);
		if (rc == 0)
			print_json(json_object_get(res, "value"));
		json_decref(res);
		break;
	}
	case CLI_CMD_HELP:
	case CLI_CMD_CERT_ROOT:
	case CLI_CMD_CERT_INTERMEDIATE:
	case CLI_CMD_CERT_DEVICE:
	case CLI_CMD_CERT_VERIFICATION: break; /* not here: cli_main */
	}
	target_free(&t);
	return rc;
}

int cli_main(int argc, char **argv)
{
	struct cli_args a;
	char err[512];
	if (cli_parse_args(argc, argv, &a, err, sizeof err) != 0) {
		fprintf(stderr, "fleethub: %s\n", err);
		if (argc < 2)
			cli_usage(stderr);
		else
			fprintf(stderr, "run `fleethub help` for the commands\n");
		return CLI_USAGE;
	}
	if (a.cmd == CLI_CMD_HELP) {
		cli_usage(stdout);
		return CLI_OK;
	}
	if (a.cmd >= CLI_CMD_CERT_ROOT && a.cmd <= CLI_CMD_CERT_VERIFICATION)
		return cli_cert(&a);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "error: cannot initialise libcurl\n");
		return CLI_UNREACHABLE;
	}
	int rc = run(&a);
	curl_global_cleanup();
	fflush(stdout);
	return rc;
}
