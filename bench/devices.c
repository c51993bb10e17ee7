/* Device identities through the hub's REST API (see devices.h).
 *
 * Every request is an upsert: PUT /devices/{id} with If-Match "*" creates a
 * missing device and updates an existing one (fleethub and Azure both
 * accept that), with the derived primary key; the secondary key is left to
 * the server. The URL names the hub (https://<hub>/...) so TLS SNI, the
 * certificate check, the Host header and the SAS resource agree;
 * CURLOPT_CONNECT_TO dials the loopback address instead. At most PARALLEL
 * requests are in flight (the server commits them in groups), each with a
 * total deadline; one SAS token, valid for an hour, signs them all. */
#include "devices.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/enc.h"
#include "base/mem.h"
#include "codec/sas.h"

#define PARALLEL 32
#define REQUEST_TIMEOUT_S 30L
#define MAX_BODY_KEPT 512
#define MAX_REPORTED 5

struct request {
	CURL *easy;
	struct curl_slist *headers;
	struct buf body;
	struct buf answer; /* the start of the response body, for messages */
	char id[128];
	char errbuf[CURL_ERROR_SIZE];
};

void devices_id(char *out, size_t outlen, const char *prefix, unsigned i)
{
	snprintf(out, outlen, "%s%u", prefix, i);
}

int devices_mqtt_login(const char *hub, const char *group_key, const char *id, int64_t expiry,
                       struct buf *user, struct buf *password)
{
	char key[45];
	struct buf sr = BUF_INIT, enc = BUF_INIT;
	buf_printf(user, "%s/%s/?api-version=2021-04-12", hub, id);
	buf_printf(&sr, "%s/devices/%s", hub, id);
	pct_encode(&enc, sr.data, sr.len);
	int rc = sas_derive_key(group_key, id, key) == 0 &&
	                 sas_build(password, enc.data, key, NULL, expiry) == 0
	             ? 0
	             : -1;
	buf_free(&sr);
	buf_free(&enc);
	return rc;
}

int devices_owner_auth(const char *hub, const char *owner_key, int64_t expiry, struct buf *out)
{
	struct buf sr = BUF_INIT, tok = BUF_INIT;
	pct_encode(&sr, hub, strlen(hub));
	int rc = sas_build(&tok, sr.data, owner_key, "iothubowner", expiry);
	if (rc == 0)
		buf_printf(out, "Authorization: %s", tok.data);
	buf_free(&sr);
	buf_free(&tok);
	return rc == 0 ? 0 : -1;
}

char *devices_owner_header(const char *hub, const char *owner_key)
{
	struct buf a = BUF_INIT;
	if (devices_owner_auth(hub, owner_key, (int64_t)time(NULL) + DEVICES_TOKEN_LIFETIME_S,
	                       &a) != 0) {
		buf_free(&a);
		fprintf(stderr, "loadgen: --owner-key is not valid base64\n");
		return NULL;
	}
	return buf_steal(&a);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct request *r = arg;
	size_t len = size * n;
	if (r->answer.len < MAX_BODY_KEPT)
		buf_append(&r->answer, p,
		           len < MAX_BODY_KEPT - r->answer.len ? len
		                                               : MAX_BODY_KEPT - r->answer.len);
	return len;
}

static void request_free(struct request *r)
{
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	buf_free(&r->body);
	buf_free(&r->answer);
	free(r);
}

/* Builds the request for device i; NULL (after a message) when the group
 * key is unusable. auth is the "Authorization: ..." header, connect_to the
 * CURLOPT_CONNECT_TO list (both borrowed, they outlive the request). */
static struct request *request_new(const struct devices_plan *p, unsigned i, const char *auth,
                                   struct curl_slist *connect_to)
{
	struct request *r = xcalloc(1, sizeof *r);
	buf_init(&r->body);
	buf_init(&r->answer);
	devices_id(r->id, sizeof r->id, p->prefix, i);
	char key[45];
	if (sas_derive_key(p->group_key, r->id, key) != 0) {
		fprintf(stderr, "loadgen: --key is not valid base64\n");
		request_free(r);
		return NULL;
	}
	if (p->x509_ca)
		buf_printf(&r->body,
		           "{\"deviceId\":\"%s\",\"status\":\"enabled\",\"authentication\":{"
		           "\"type\":\"certificateAuthority\"}}",
		           r->id);
	else
		buf_printf(&r->body,
		           "{\"deviceId\":\"%s\",\"status\":\"enabled\",\"authentication\":{"
		           "\"type\":\"sas\",\"symmetricKey\":{\"primaryKey\":\"%s\"}}}",
		           r->id, key);
	struct buf url = BUF_INIT;
	buf_printf(&url, "https://%s/devices/", p->hub);
	pct_encode(&url, r->id, strlen(r->id));
	buf_appends(&url, "?api-version=2021-04-12");

	r->headers = curl_slist_append(r->headers, auth);
	r->headers = curl_slist_append(r->headers, "Content-Type: application/json; charset=utf-8");
	r->headers = curl_slist_append(r->headers, "Accept: application/json");
	r->headers = curl_slist_append(r->headers, "If-Match: \"*\"");
	r->easy = curl_easy_init();
	if (!r->easy || !r->headers) {
		fprintf(stderr, "loadgen: cannot initialise libcurl\n");
		buf_free(&url);
		request_free(r);
		return NULL;
	}
	CURL *e = r->easy;
	curl_easy_setopt(e, CURLOPT_URL, url.data);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body.data);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)r->body.len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(e, CURLOPT_CONNECT_TO, connect_to);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_USERAGENT, "fleethub-loadgen");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	if (p->insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	} else {
		curl_easy_setopt(e, CURLOPT_CAINFO, p->ca_file);
	}
	buf_free(&url);
	return r;
}

int devices_create(const struct devices_plan *p)
{
	int rc = -1;
	unsigned next = 0, done = 0, failed = 0;
	struct request *active[PARALLEL] = {0}; /* slot k: a request in flight or NULL */
	struct buf auth = BUF_INIT, ct = BUF_INIT;
	struct curl_slist *connect_to = NULL;
	CURLM *m = NULL;

	if (devices_owner_auth(p->hub, p->owner_key, (int64_t)time(NULL) + 3600, &auth) != 0) {
		fprintf(stderr, "loadgen: --owner-key is not valid base64\n");
		goto out;
	}
	buf_printf(&ct, "%s:443:%s", p->hub, p->address);
	connect_to = curl_slist_append(NULL, ct.data);
	m = curl_multi_init();
	if (!m || !connect_to) {
		fprintf(stderr, "loadgen: cannot initialise libcurl\n");
		goto out;
	}
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)PARALLEL);

	while (done < p->count) {
		for (unsigned k = 0; k < PARALLEL && next < p->count; k++) {
			if (active[k])
				continue;
			active[k] = request_new(p, next, auth.data, connect_to);
			if (!active[k])
				goto out;
			curl_easy_setopt(active[k]->easy, CURLOPT_PRIVATE, (void *)(uintptr_t)k);
			curl_multi_add_handle(m, active[k]->easy);
			next++;
		}
		int still;
		if (curl_multi_perform(m, &still) != CURLM_OK) {
			fprintf(stderr, "loadgen: curl_multi_perform failed\n");
			goto out;
		}
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(m, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			char *priv = NULL;
			long status = 0;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
			unsigned k = (unsigned)(uintptr_t)priv;
			struct request *r = active[k];
			CURLcode res = msg->data.result;
			if ((res != CURLE_OK || status != 200) && failed++ < MAX_REPORTED) {
				if (res != CURLE_OK)
					fprintf(stderr, "loadgen: creating device %s: %s\n", r->id,
					        r->errbuf[0] ? r->errbuf : curl_easy_strerror(res));
				else
					fprintf(
					    stderr, "loadgen: creating device %s: HTTP %ld: %s\n",
					    r->id, status, r->answer.data ? r->answer.data : "");
			}
			curl_multi_remove_handle(m, r->easy);
			request_free(r);
			active[k] = NULL;
			done++;
		}
		if (done < p->count)
			curl_multi_poll(m, NULL, 0, 1000, NULL);
	}
	rc = failed ? -1 : 0;
	if (failed)
		fprintf(stderr, "loadgen: %u of %u devices could not be created\n", failed,
		        p->count);
out:
	for (unsigned k = 0; k < PARALLEL; k++) {
		if (!active[k])
			continue;
		curl_multi_remove_handle(m, active[k]->easy);
		request_free(active[k]);
	}
	if (m)
		curl_multi_cleanup(m);
	curl_slist_free_all(connect_to);
	buf_free(&auth);
	buf_free(&ct);
	return rc;
}
