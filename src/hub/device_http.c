/* The device side of the hub over HTTPS (azure-iot-device-http; protocol.md
 * §2.8, decisions.md 16): telemetry and cloud-to-device messages.
 *
 *   POST   /devices/{id}/messages/events                    telemetry
 *   GET    /devices/{id}/messages/devicebound               receive (204: none)
 *   DELETE /devices/{id}/messages/devicebound/{lock}        complete
 *   DELETE /devices/{id}/messages/devicebound/{lock}?reject reject
 *   POST   /devices/{id}/messages/devicebound/{lock}/abandon abandon
 *
 * Every request authenticates as the device of the path: a SAS token in
 * Authorization (the device's keys, or a policy with DeviceConnect), or
 * the TLS client certificate of an X.509 device. The identity is read
 * from the store first (a completion), then the request is handled. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "core/ca.h"
#include "core/registry.h"
#include "hub/internal.h"
#include "hub/rest_internal.h"

enum op { OP_EVENTS, OP_RECEIVE, OP_COMPLETE, OP_REJECT, OP_ABANDON };

struct dev_req {
	struct hub *hub;
	struct http_exchange *ex;
	char id[REGISTRY_ID_MAX + 1];
	char lock[40];
	enum op op;
	json_t *identity;
	json_t *cas; /* a certificateAuthority device: the hub's verified CAs */
};

static int auth_load(void *arg, struct store_txn *t)
{
	struct dev_req *r = arg;
	struct store_device d = {0};
	int rc = store_device_get(t, r->hub->name, r->id, &d);
	if (rc != 0)
		return rc;
	r->identity = json_loads(d.json, 0, NULL);
	store_device_clear(&d);
	if (!r->identity)
		return FH_EIO;
	if (strcmp(registry_auth_type(r->identity), "certificateAuthority") == 0) {
		r->cas = json_array();
		rc = store_doc_list(t, STORE_CA_CERT, r->hub->name, "", "", HUB_MAX_CAS,
				    ca_collect_verified, r->cas);
	}
	return rc;
}

static void telemetry_done(void *arg, int rc)
{
	struct http_exchange *ex = arg;
	if (rc != 0)
		rest__respond_store_error(ex, rc, "", true);
	else
		http_respond(ex, 204, NULL, NULL, 0);
}

/* The message's properties from its headers (sdk-wire.md (a'')). */
static void header_props(const struct http_request *req, json_t *app, json_t *sys)
{
	static const struct {
		const char *header, *name;
	} known[] = {
	    {"iothub-messageid", "messageId"},      {"iothub-correlationid", "correlationId"},
	    {"iothub-userid", "userId"},            {"iothub-to", "to"},
	    {"iothub-expiry", "expiryTimeUtc"},     {"iothub-contenttype", "contentType"},
	    {"iothub-contentencoding", "contentEncoding"},
	    {"iothub-interface-id", "iothub-interface-id"},
	    {"dt-subject", "dt-subject"},
	};
	for (unsigned i = 0; i < req->nheaders; i++) {
		const char *n = req->headers[i].name, *v = req->headers[i].value;
		if (strncasecmp(n, "iothub-app-", 11) == 0 && n[11]) {
			json_object_set_new(app, n + 11, json_string(v));
			continue;
		}
		for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
			if (strcasecmp(n, known[k].header) == 0)
				json_object_set_new(sys, known[k].name, json_string(v));
	}
}

static void events(struct dev_req *r)
{
	const struct http_request *req = r->ex->req;
	if (req->body.len > TELEMETRY_MAX_BODY) {
		rest__respond_error(r->ex, 413, "MessageTooLarge", 413002,
				    "the message is %zu bytes, over the 256 KB of a device message",
				    req->body.len);
		return;
	}
	json_t *app = json_object(), *sys = json_object();
	header_props(req, app, sys);
	const char *gen = json_string_value(json_object_get(r->identity, "generationId"));
	struct telemetry_msg m = {r->id,
				  gen ? gen : "",
				  registry_auth_type(r->identity),
				  app,
				  sys,
				  (const uint8_t *)req->body.data,
				  req->body.len};
	/* Invalid UTF-8 in a header value makes json_string fail: such a
	 * property is left out by jansson (NULL value, not set). */
	int rc = hub_telemetry_append(r->hub, &m, telemetry_done, r->ex);
	json_decref(app);
	json_decref(sys);
	if (rc == FH_EAGAIN)
		rest__respond_error(r->ex, 429, "ThrottleBacklogLimitExceeded", 429002,
				    "too many writes are waiting for the store; retry later");
	else if (rc != 0)
		rest__respond_error(r->ex, 413, "MessageTooLarge", 413002,
				    "the message is over the 256 KB of a device message");
}

static void auth_done(void *arg, int rc)
{
	struct dev_req *r = arg;
	const char *why = NULL;
	if (rc == FH_ENOTFOUND) {
		rc = FH_EAUTH;
		why = "no such device";
	} else if (rc != 0) {
		rest__respond_store_error(r->ex, rc, r->id, false);
		goto done;
	} else {
		const char *token = http_request_header(r->ex->req, "Authorization");
		X509 *leaf = net_conn_peer_cert(r->ex->conn);
		int64_t now_s = clock_now_ms() / 1000;
		if (token)
			rc = hub__auth_device(r->hub, r->id, r->identity, token, strlen(token), now_s,
					      &why);
		else if (leaf)
			rc = hub__auth_device_x509(r->hub, r->id, r->identity, leaf,
						   net_conn_peer_chain(r->ex->conn), r->cas, now_s,
						   &why);
		else {
			rc = FH_EAUTH;
			why = "no Authorization (SAS token) and no client certificate";
		}
	}
	if (rc != 0) {
		log_at(LOG_INFO, "https %s: device %s refused: %s", net_conn_peer(r->ex->conn), r->id,
		       why);
		rest__respond_error(r->ex, 401, "IotHubUnauthorizedAccess", 401002,
				    "unauthorized: %s", why);
		goto done;
	}
	if (!registry_enabled(r->identity)) {
		rest__respond_error(r->ex, 401, "IotHubUnauthorizedAccess", 401003,
				    "the device %s is disabled", r->id);
		goto done;
	}
	switch (r->op) {
	case OP_EVENTS: events(r); break;
	case OP_RECEIVE: hub__c2d_receive(r->hub, r->ex, r->id); break;
	case OP_COMPLETE: hub__c2d_settle(r->hub, r->ex, r->id, r->lock, 0); break;
	case OP_REJECT: hub__c2d_settle(r->hub, r->ex, r->id, r->lock, 1); break;
	case OP_ABANDON: hub__c2d_settle(r->hub, r->ex, r->id, r->lock, 2); break;
	}
done:
	json_decref(r->identity);
	json_decref(r->cas);
	free(r);
}

/* Whether the query holds the bare word w ("...&reject"). */
static bool query_word(const char *q, const char *w)
{
	size_t n = strlen(w);
	for (const char *p = q; p && *p;) {
		if (strncmp(p, w, n) == 0 && (p[n] == '\0' || p[n] == '&' || p[n] == '='))
			return true;
		p = strchr(p, '&');
		if (p)
			p++;
	}
	return false;
}

bool hub__device_http(struct hub *h, struct http_exchange *ex, const char *id)
{
	const struct http_request *req = ex->req;
	/* The path after /devices/{id}/messages/ (still encoded). */
	const char *rest = strstr(req->path + 9, "/messages/");
	if (!rest)
		return false;
	rest += 10;
	struct dev_req *r = xcalloc(1, sizeof *r);
	bool ok = true;
	if (strcmp(rest, "events") == 0 && req->verb == HTTP_VERB_POST) {
		r->op = OP_EVENTS;
	} else if ((strcmp(rest, "devicebound") == 0 || strcmp(rest, "deviceBound") == 0) &&
		   req->verb == HTTP_VERB_GET) {
		r->op = OP_RECEIVE;
	} else if (strncasecmp(rest, "devicebound/", 12) == 0) {
		const char *lock = rest + 12, *slash = strchr(lock, '/');
		size_t n = slash ? (size_t)(slash - lock) : strlen(lock);
		if (n == 0 || n >= sizeof r->lock)
			ok = false;
		else
			memcpy(r->lock, lock, n);
		if (ok && !slash && req->verb == HTTP_VERB_DELETE)
			r->op = query_word(req->query, "reject") ? OP_REJECT : OP_COMPLETE;
		else if (ok && slash && strcmp(slash, "/abandon") == 0 && req->verb == HTTP_VERB_POST)
			r->op = OP_ABANDON;
		else
			ok = false;
	} else {
		ok = false;
	}
	if (!ok) {
		free(r);
		return false;
	}
	r->hub = h;
	r->ex = ex;
	snprintf(r->id, sizeof r->id, "%s", id);
	store_read(h->store, auth_load, auth_done, r);
	return true;
}
