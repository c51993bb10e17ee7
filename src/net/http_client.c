/* Outgoing HTTP(S) on the loop: libcurl's multi interface driven by libuv
 * (see http_client.h). libcurl tells us which sockets to watch
 * (socket_cb -> one uv_poll_t per socket) and when to wake it (timer_cb ->
 * one uv_timer_t); we tell it what happened with curl_multi_socket_action
 * and collect finished transfers with curl_multi_info_read. Completion
 * callbacks are always deferred to a later loop turn (a zero timer), so
 * done never runs inside http_client_request. */
#include "net/http_client.h"

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"

struct request {
	struct http_client *c;
	CURL *easy;
	struct curl_slist *headers;
	struct buf body;    /* request body (copied) */
	struct buf resp;    /* response body */
	size_t max_response;
	bool too_large;
	uint64_t timeout_ms;
	uint64_t started;
	http_client_done_fn done;
	void *arg;
	struct request *next; /* finished list, or all-requests list */
	struct request *prev_all, *next_all;
	char error[CURL_ERROR_SIZE];
};

struct sock {
	uv_poll_t poll;
	curl_socket_t fd;
	struct http_client *c;
};

struct http_client {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;   /* libcurl's timeout */
	uv_timer_t deliver; /* runs finished requests' callbacks */
	char *extra_ca;
	struct request *finished, *finished_tail;
	struct request *all;
	int handles_open;
	bool closing;
};

static void maybe_free(struct http_client *c)
{
	if (c->closing && c->handles_open == 0 && !c->all) {
		curl_multi_cleanup(c->multi);
		free(c->extra_ca);
		free(c);
	}
}

static void on_handle_closed(uv_handle_t *h)
{
	struct http_client *c = h->data;
	c->handles_open--;
	maybe_free(c);
}

static void on_sock_closed(uv_handle_t *h)
{
	struct sock *s = (struct sock *)h;
	struct http_client *c = s->c;
	free(s);
	c->handles_open--;
	maybe_free(c);
}

/* ---- finishing ---------------------------------------------------------- */

static void request_free(struct request *r)
{
	struct http_client *c = r->c;
	if (r->prev_all)
		r->prev_all->next_all = r->next_all;
	else
		c->all = r->next_all;
	if (r->next_all)
		r->next_all->prev_all = r->prev_all;
	curl_slist_free_all(r->headers);
	buf_free(&r->body);
	buf_free(&r->resp);
	free(r);
}

static void on_deliver(uv_timer_t *t)
{
	struct http_client *c = t->data;
	while (c->finished) {
		struct request *r = c->finished;
		c->finished = r->next;
		if (!c->finished)
			c->finished_tail = NULL;
		long status = 0;
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
		struct http_client_result res = {
			.status = r->error[0] ? 0 : (int)status,
			.body = r->resp.data ? r->resp.data : "",
			.body_len = r->resp.len,
			.error = r->error[0] ? r->error : NULL,
			.elapsed_ms = (int64_t)(uv_now(c->loop) - r->started),
		};
		curl_easy_cleanup(r->easy);
		r->easy = NULL;
		r->done(r->arg, &res);
		request_free(r);
	}
	maybe_free(c);
}

/* Queues r for delivery on the next loop turn. error: "" when answered. */
static void finish(struct request *r, const char *error)
{
	struct http_client *c = r->c;
	if (error != r->error)
		snprintf(r->error, sizeof r->error, "%s", error);
	r->next = NULL;
	if (c->finished_tail)
		c->finished_tail->next = r;
	else
		c->finished = r;
	c->finished_tail = r;
	if (!uv_is_closing((uv_handle_t *)&c->deliver))
		uv_timer_start(&c->deliver, on_deliver, 0, 0);
}

static void describe(struct request *r, CURLcode cc, char *out, size_t outlen)
{
	if (r->too_large) {
		snprintf(out, outlen, "response too large (over %zu bytes)", r->max_response);
		return;
	}
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		snprintf(out, outlen, "timed out after %llu ms", (unsigned long long)r->timeout_ms);
		return;
	case CURLE_COULDNT_CONNECT:
		snprintf(out, outlen, "connection refused or unreachable");
		return;
	case CURLE_COULDNT_RESOLVE_HOST:
		snprintf(out, outlen, "could not resolve host");
		return;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE: {
		long vr = 0;
		curl_easy_getinfo(r->easy, CURLINFO_SSL_VERIFYRESULT, &vr);
		if (vr != 0)
			snprintf(out, outlen, "TLS: certificate verify failed: %s",
				 X509_verify_cert_error_string(vr));
		else
			snprintf(out, outlen, "TLS: %s", r->error[0] ? r->error : curl_easy_strerror(cc));
		return;
	}
	default:
		snprintf(out, outlen, "%s", r->error[0] ? r->error : curl_easy_strerror(cc));
	}
}

static void check_done(struct http_client *c)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(c->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		struct request *r = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		CURLcode cc = m->data.result;
		curl_multi_remove_handle(c->multi, r->easy);
		if (cc == CURLE_OK && !r->too_large) {
			r->error[0] = '\0';
			finish(r, r->error);
		} else {
			char msg[CURL_ERROR_SIZE + 64];
			describe(r, cc, msg, sizeof msg);
			finish(r, msg[0] ? msg : "request failed");
		}
	}
}

/* ---- libcurl <-> libuv ---------------------------------------------------- */

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = (struct sock *)p;
	int flags = 0;
	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	int running;
	curl_multi_socket_action(s->c->multi, s->fd, flags, &running);
	check_done(s->c);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct http_client *c = userp;
	struct sock *s = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			uv_poll_stop(&s->poll);
			curl_multi_assign(c->multi, fd, NULL);
			uv_close((uv_handle_t *)&s->poll, on_sock_closed);
		}
		return 0;
	}
	if (!s) {
		s = xcalloc(1, sizeof *s);
		s->fd = fd;
		s->c = c;
		if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		c->handles_open++;
		curl_multi_assign(c->multi, fd, s);
	}
	int events = 0;
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&s->poll, events, on_poll);
	return 0;
}

static void on_timeout(uv_timer_t *t)
{
	struct http_client *c = t->data;
	int running;
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(c);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct http_client *c = userp;
	if (timeout_ms < 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- per-request callbacks ------------------------------------------------ */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct request *r = ud;
	size_t len = size * n;
	if (r->resp.len + len > r->max_response) {
		r->too_large = true;
		return 0; /* aborts the transfer */
	}
	buf_append(&r->resp, p, len);
	return len;
}

/* Adds the extra CA file to OpenSSL's store, next to the default paths. */
static CURLcode ssl_ctx_cb(CURL *easy, void *ssl_ctx, void *userp)
{
	struct http_client *c = userp;
	X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *)ssl_ctx);
	if (c->extra_ca && X509_STORE_load_locations(store, c->extra_ca, NULL) != 1)
		return CURLE_SSL_CACERT_BADFILE;
	return CURLE_OK;
}

/* ---- public --------------------------------------------------------------- */

int http_client_new(struct http_client **out, uv_loop_t *loop, const char *extra_ca_file,
		    char *err, size_t errlen)
{
	static bool global_done;
	if (!global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(err, errlen, "cannot initialise libcurl");
			return -1;
		}
		global_done = true;
	}
	if (extra_ca_file) {
		FILE *f = fopen(extra_ca_file, "r");
		if (!f) {
			snprintf(err, errlen, "cannot read the CA file %s", extra_ca_file);
			return -1;
		}
		fclose(f);
	}
	struct http_client *c = xcalloc(1, sizeof *c);
	c->loop = loop;
	c->multi = curl_multi_init();
	c->extra_ca = extra_ca_file ? xstrdup(extra_ca_file) : NULL;
	uv_timer_init(loop, &c->timer);
	uv_timer_init(loop, &c->deliver);
	c->timer.data = c->deliver.data = c;
	c->handles_open = 2;
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	*out = c;
	return 0;
}

/* True when host is localhost, 127.0.0.0/8 or ::1. */
static bool loopback(const char *host)
{
	unsigned a, b, cc, d;
	char tail;
	if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0 ||
	    strcmp(host, "::1") == 0)
		return true;
	return sscanf(host, "%u.%u.%u.%u%c", &a, &b, &cc, &d, &tail) == 4 && a == 127 && b < 256 &&
	       cc < 256 && d < 256;
}

static int url_allowed(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	int rc = FH_EINVAL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		if (strcasecmp(scheme, "https") == 0 ||
		    (strcasecmp(scheme, "http") == 0 && loopback(host)))
			rc = 0;
	}
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return rc;
}

int http_client_request(struct http_client *c, const char *method, const char *url,
			const char *const *headers, const char *body, size_t body_len,
			uint64_t timeout_ms, size_t max_response, http_client_done_fn done,
			void *arg)
{
	if (c->closing || url_allowed(url) != 0)
		return FH_EINVAL;
	struct request *r = xcalloc(1, sizeof *r);
	r->c = c;
	r->done = done;
	r->arg = arg;
	r->max_response = max_response;
	r->timeout_ms = timeout_ms;
	r->started = uv_now(c->loop);
	buf_init(&r->body);
	buf_init(&r->resp);
	bool has_ct = false;
	for (size_t i = 0; headers && headers[i]; i++) {
		r->headers = curl_slist_append(r->headers, headers[i]);
		has_ct |= strncasecmp(headers[i], "Content-Type:", 13) == 0;
	}
	if (body && !has_ct)
		r->headers = curl_slist_append(r->headers, "Content-Type: application/json");
	r->headers = curl_slist_append(r->headers, "Expect:");
	r->easy = curl_easy_init();
	CURL *e = r->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "fleethub");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->extra_ca) {
		curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
		curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, c);
	}
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->error);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	if (body) {
		buf_append(&r->body, body, body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body.data ? r->body.data : "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)body_len);
	} else if (strcmp(method, "GET") == 0) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	}
	r->next_all = c->all;
	if (c->all)
		c->all->prev_all = r;
	c->all = r;
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
		finish(r, "cannot start the request");
	return 0;
}

void http_client_close(struct http_client *c)
{
	if (!c || c->closing)
		return;
	c->closing = true;
	for (struct request *r = c->all; r; r = r->next_all) {
		if (!r->easy)
			continue;
		bool queued = false;
		for (struct request *f = c->finished; f; f = f->next)
			queued |= f == r;
		if (!queued) {
			curl_multi_remove_handle(c->multi, r->easy);
			finish(r, "shutting down");
		}
	}
	on_deliver(&c->deliver);
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->deliver, on_handle_closed);
}

void http_client_url_for_log(const char *url, char *out, size_t outlen)
{
	const char *start = url;
	const char *scheme = strstr(url, "://");
	size_t n = strcspn(url, "?#");
	struct buf b = BUF_INIT;
	if (scheme && (size_t)(scheme - url) < n) {
		const char *auth = scheme + 3;
		size_t alen = strcspn(auth, "/?#");
		const char *at = memchr(auth, '@', alen);
		buf_append(&b, url, (size_t)(auth - url));
		start = at ? at + 1 : auth;
		n -= (size_t)(start - url);
	}
	buf_append(&b, start, n);
	snprintf(out, outlen, "%s", b.data ? b.data : "");
	buf_free(&b);
}
