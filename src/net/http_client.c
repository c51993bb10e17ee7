/* Outgoing HTTP(S) on the loop: libcurl's multi interface driven by libuv
 * (see http_client.h).
 *
 *   libcurl --socket_cb--> one uv_poll_t per socket --on_poll--> socket_action
 *   libcurl --timer_cb---> c->timer (one uv_timer_t) --on_timeout--> socket_action
 *   socket_action --> check_done (curl_multi_info_read) --> finish() queues the
 *   request --> c->deliver (a zero timer, next loop turn) --> done()
 *
 * Invariants:
 * - done runs exactly once per accepted request, always from on_deliver
 *   (a later loop turn) or from http_client_close, so never inside
 *   http_client_request.
 * - A request is on c->all from http_client_request until it is freed right
 *   after its done; r->finished says it is on the delivery queue and no
 *   longer attached to the multi handle.
 * - uv handles are freed only from their close callbacks; the client itself
 *   is freed when it is closing, no handle is open and no request is left.
 * - curl_multi_socket_action is never called from inside a libcurl callback
 *   (timer_cb only arms c->timer, even for 0 ms).
 *
 * Policy kept here: verification always on (libcurl's default bundle plus
 * the extra CA certificates, in one OpenSSL store built at start and shared
 * by every connection), no redirects followed, http and https only, plain
 * http only to loopback, a total deadline per request (0 ms is taken as
 * 1 ms: curl reads 0 as "none"), a bound on the response body, at most
 * MAX_HOST_CONNECTIONS connections per host, kept alive for reuse. */
#include "net/http_client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/mem.h"

#define MAX_HOST_CONNECTIONS 256

struct request {
	struct http_client *c;
	CURL *easy;
	struct curl_slist *headers;
	struct curl_slist *connect_to; /* CURLOPT_CONNECT_TO, or NULL */
	struct buf resp; /* response body, at most max_response bytes */
	size_t max_response;
	bool too_large;
	bool finished; /* on the delivery queue */
	uint64_t timeout_ms;
	uint64_t started_ns;
	int64_t elapsed_ms;
	http_client_done_fn done;
	void *arg;
	struct request *next_finished;
	struct request *prev, *next;      /* c->all */
	char curl_err[CURL_ERROR_SIZE];   /* libcurl's error buffer */
	char error[CURL_ERROR_SIZE + 96]; /* the result's error, "" when answered */
};

struct sock {
	uv_poll_t poll;
	curl_socket_t fd;
	struct http_client *c;
	struct sock *prev, *next; /* c->socks */
};

struct http_client {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;          /* libcurl's timeout */
	uv_timer_t deliver;        /* runs finished requests' callbacks on the next turn */
	X509_STORE *trust; /* system CAs + extra ones, shared by every TLS context; NULL
	                      when libcurl's TLS is not OpenSSL (its defaults are used) */
	struct request *all;
	struct request *finished, *finished_tail;
	struct sock *socks;
	int handles_open;
	bool closing;
};

static void maybe_free(struct http_client *c)
{
	if (!c->closing || c->handles_open > 0 || c->all)
		return;
	X509_STORE_free(c->trust);
	free(c);
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

static void sock_close(struct sock *s)
{
	struct http_client *c = s->c;
	if (s->prev)
		s->prev->next = s->next;
	else
		c->socks = s->next;
	if (s->next)
		s->next->prev = s->prev;
	uv_poll_stop(&s->poll);
	uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* ---- finishing ------------------------------------------------------------- */

static void request_free(struct request *r)
{
	struct http_client *c = r->c;
	if (r->prev)
		r->prev->next = r->next;
	else
		c->all = r->next;
	if (r->next)
		r->next->prev = r->prev;
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	curl_slist_free_all(r->connect_to);
	buf_free(&r->resp);
	free(r);
}

/* Runs the callbacks of every queued request, oldest first. A callback may
 * start new requests (they queue behind) or close the client (which then
 * drains the queue itself). */
static void deliver_all(struct http_client *c)
{
	while (c->finished) {
		struct request *r = c->finished;
		c->finished = r->next_finished;
		if (!c->finished)
			c->finished_tail = NULL;
		long status = 0;
		if (!r->error[0] && r->easy)
			curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
		if (!r->error[0] && status == 0)
			snprintf(r->error, sizeof r->error, "no HTTP status in the answer");
		bool ok = !r->error[0];
		struct http_client_result res = {
		    .status = ok ? (int)status : 0,
		    .body = ok && r->resp.data ? r->resp.data : "",
		    .body_len = ok ? r->resp.len : 0,
		    .error = ok ? NULL : r->error,
		    .elapsed_ms = r->elapsed_ms,
		};
		r->done(r->arg, &res);
		request_free(r);
	}
}

static void on_deliver(uv_timer_t *t)
{
	struct http_client *c = t->data;
	deliver_all(c);
	maybe_free(c);
}

/* Queues r (already detached from the multi handle) for its callback on a
 * later loop turn. error: NULL or "" when the server answered. */
static void finish(struct request *r, const char *error)
{
	struct http_client *c = r->c;
	snprintf(r->error, sizeof r->error, "%s", error ? error : "");
	r->elapsed_ms = (int64_t)((uv_hrtime() - r->started_ns) / 1000000);
	r->finished = true;
	r->next_finished = NULL;
	if (c->finished_tail)
		c->finished_tail->next_finished = r;
	else
		c->finished = r;
	c->finished_tail = r;
	if (!c->closing)
		uv_timer_start(&c->deliver, on_deliver, 0, 0);
}

static bool tls_failure(CURLcode cc)
{
	switch (cc) {
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_USE_SSL_FAILED: return true;
	default: return false;
	}
}

/* Short human text for a failed transfer. */
static void describe(struct request *r, CURLcode cc, char *out, size_t outlen)
{
	const char *detail = r->curl_err[0] ? r->curl_err : curl_easy_strerror(cc);
	if (r->too_large || cc == CURLE_FILESIZE_EXCEEDED) {
		snprintf(out, outlen, "response too large (over %zu bytes)", r->max_response);
	} else if (cc == CURLE_OPERATION_TIMEDOUT) {
		snprintf(out, outlen, "timed out after %llu ms", (unsigned long long)r->timeout_ms);
	} else if (cc == CURLE_COULDNT_RESOLVE_HOST) {
		snprintf(out, outlen, "could not resolve host");
	} else if (cc == CURLE_COULDNT_CONNECT) {
		long os_errno = 0;
		curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
		if (os_errno == ECONNREFUSED)
			snprintf(out, outlen, "connection refused");
		else if (os_errno != 0)
			snprintf(out, outlen, "could not connect: %s", strerror((int)os_errno));
		else
			snprintf(out, outlen, "could not connect: %s", detail);
	} else if (tls_failure(cc)) {
		/* libcurl presets the result to 1 (X509_V_ERR_UNSPECIFIED) and
		 * checks the host name itself, so only other values come from
		 * OpenSSL's chain verification. */
		long vr = X509_V_OK;
		curl_easy_getinfo(r->easy, CURLINFO_SSL_VERIFYRESULT, &vr);
		if (vr != X509_V_OK && vr != X509_V_ERR_UNSPECIFIED)
			snprintf(out, outlen, "TLS: certificate verify failed: %s",
			         X509_verify_cert_error_string(vr));
		else
			snprintf(out, outlen, "TLS: %s", detail);
	} else {
		snprintf(out, outlen, "%s", detail);
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
		CURLcode cc = m->data.result;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		curl_multi_remove_handle(c->multi, r->easy); /* m is invalid from here */
		if (cc == CURLE_OK && !r->too_large) {
			finish(r, NULL);
		} else {
			char msg[sizeof r->error];
			describe(r, cc, msg, sizeof msg);
			finish(r, msg);
		}
	}
}

/* ---- libcurl <-> libuv ------------------------------------------------------ */

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = (struct sock *)p;
	struct http_client *c = s->c;
	int flags = 0;
	if (status < 0)
		flags |= CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	int running;
	curl_multi_socket_action(c->multi, s->fd, flags, &running);
	check_done(c);
}

/* CURLMOPT_SOCKETFUNCTION: which events libcurl wants on fd. libcurl calls
 * CURL_POLL_REMOVE before it closes a socket, so the poll is stopped while
 * the descriptor is still valid. */
static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct http_client *c = userp;
	struct sock *s = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			if (!c->closing) /* not while curl_multi_cleanup runs */
				curl_multi_assign(c->multi, fd, NULL);
			sock_close(s);
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
		s->next = c->socks;
		if (c->socks)
			c->socks->prev = s;
		c->socks = s;
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

/* CURLMOPT_TIMERFUNCTION: only arms the timer (see deps.md). */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct http_client *c = userp;
	if (c->closing)
		return 0;
	if (timeout_ms < 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
	return 0;
}

/* ---- per-request callbacks ---------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct request *r = ud;
	size_t len = size * n;
	if (len > r->max_response - r->resp.len) {
		r->too_large = true;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	buf_append(&r->resp, p, len);
	return len;
}

/* CURLOPT_SSL_CTX_FUNCTION (OpenSSL backend): every new connection's TLS
 * context gets the one trust store built at start (libcurl was told to
 * load no CA file itself). Parsing the system bundle per connection cost
 * about 15 ms of the loop thread each: 300 webhook calls at once stalled
 * every client for seconds. */
static CURLcode ssl_ctx_cb(CURL *easy, void *ssl_ctx, void *userp)
{
	struct http_client *c = userp;
	SSL_CTX_set1_cert_store((SSL_CTX *)ssl_ctx, c->trust);
	return CURLE_OK;
}

/* ---- public --------------------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Adds every PEM certificate of path to store; -1 (with err) when the file
 * cannot be read or holds none. Adding a certificate the store already
 * holds is not an error in OpenSSL 3. */
static int add_certs(X509_STORE *store, const char *path, char *err, size_t errlen)
{
	BIO *bio = BIO_new_file(path, "r");
	if (!bio) {
		snprintf(err, errlen, "cannot read the CA file %s", path);
		ERR_clear_error();
		return -1;
	}
	int n = 0;
	X509 *x;
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (X509_STORE_add_cert(store, x) == 1)
			n++;
		X509_free(x);
	}
	ERR_clear_error(); /* the read past the last certificate */
	BIO_free(bio);
	if (n == 0) {
		snprintf(err, errlen, "no PEM certificate in the CA file %s", path);
		return -1;
	}
	return 0;
}

/* The trust of every webhook and remote hub call: the CA bundle and
 * directory libcurl would use by default (loaded once, here) and the extra
 * CA file. A missing system bundle leaves the extra CAs alone, as libcurl
 * would fail every verification without them too. */
static X509_STORE *build_trust(const char *extra_ca_file, char *err, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	CURL *probe = curl_easy_init();
	char *cainfo = NULL, *capath = NULL;
	if (!store || !probe) {
		snprintf(err, errlen, "out of memory building the CA store");
		X509_STORE_free(store);
		curl_easy_cleanup(probe);
		return NULL;
	}
	curl_easy_getinfo(probe, CURLINFO_CAINFO, &cainfo);
	curl_easy_getinfo(probe, CURLINFO_CAPATH, &capath);
	if (cainfo)
		X509_STORE_load_file(store, cainfo);
	if (capath)
		X509_STORE_load_path(store, capath);
	ERR_clear_error();
	curl_easy_cleanup(probe);
	if (extra_ca_file && add_certs(store, extra_ca_file, err, errlen) != 0) {
		X509_STORE_free(store);
		return NULL;
	}
	return store;
}

int http_client_new(struct http_client **out, uv_loop_t *loop, const char *extra_ca_file, char *err,
                    size_t errlen)
{
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK) {
		snprintf(err, errlen, "cannot initialise libcurl: %s",
		         curl_easy_strerror(global_rc));
		return FH_EIO;
	}
	X509_STORE *trust = NULL;
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	/* A blocking resolver would stop the loop for every webhook or remote
	 * hub whose name has to be looked up: refuse to start without one
	 * that runs off the loop (Debian's libcurl has the threaded one). */
	if (!(v->features & CURL_VERSION_ASYNCHDNS)) {
		snprintf(err, errlen,
		         "libcurl %s resolves host names synchronously, which would block the "
		         "server's event loop: install a libcurl with an asynchronous resolver "
		         "(threaded or c-ares)",
		         v->version);
		return FH_EINVAL;
	}
	bool openssl = v->ssl_version && strncmp(v->ssl_version, "OpenSSL", 7) == 0;
	if (extra_ca_file && !openssl) {
		snprintf(err, errlen, "an extra CA file needs libcurl built with OpenSSL (%s)",
		         v->ssl_version ? v->ssl_version : "no TLS");
		return FH_EINVAL;
	}
	if (openssl && !(trust = build_trust(extra_ca_file, err, errlen)))
		return FH_EINVAL;
	CURLM *multi = curl_multi_init();
	if (!multi) {
		snprintf(err, errlen, "cannot create a libcurl multi handle");
		X509_STORE_free(trust);
		return FH_ENOMEM;
	}
	struct http_client *c = xcalloc(1, sizeof *c);
	c->loop = loop;
	c->multi = multi;
	c->trust = trust;
	uv_timer_init(loop, &c->timer);
	uv_timer_init(loop, &c->deliver);
	c->timer.data = c->deliver.data = c;
	c->handles_open = 2;
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERDATA, c);
	/* Finished connections are kept and reused (keep-alive); at most this
	 * many are open to one host, further calls wait for one. */
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)MAX_HOST_CONNECTIONS);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)MAX_HOST_CONNECTIONS);
	*out = c;
	return 0;
}

/* True when host (as libcurl's URL parser gives it: lowercased, IPv4
 * normalised, IPv6 in brackets) is localhost, in 127.0.0.0/8 or ::1. */
static bool loopback(const char *host)
{
	if (strcasecmp(host, "localhost") == 0)
		return true;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	char v6[INET6_ADDRSTRLEN + 2];
	size_t n = strlen(host);
	if (n >= 2 && n < sizeof v6 && host[0] == '[' && host[n - 1] == ']') {
		memcpy(v6, host + 1, n - 2);
		v6[n - 2] = '\0';
		host = v6;
	}
	struct in6_addr a6;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* 0 for an https URL, or an http URL to a loopback host; FH_EINVAL else. */
static int url_allowed(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	int rc = FH_EINVAL;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
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
	return http_client_request_via(c, NULL, method, url, headers, body, body_len, timeout_ms,
	                               max_response, done, arg);
}

int http_client_request_via(struct http_client *c, const char *dial, const char *method,
                            const char *url, const char *const *headers, const char *body,
                            size_t body_len, uint64_t timeout_ms, size_t max_response,
                            http_client_done_fn done, void *arg)
{
	if (c->closing || !method || !method[0] || !url || url_allowed(url) != 0)
		return FH_EINVAL;
	/* Only https may be sent elsewhere than its URL says (the name is still
	 * verified); dial is "host:port" or "[v6]:port". */
	const char *colon = dial ? strrchr(dial, ':') : NULL;
	if (dial && (strncasecmp(url, "https://", 8) != 0 || !colon || colon == dial ||
	             colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
	             (dial[0] != '[' && memchr(dial, ':', (size_t)(colon - dial)))))
		return FH_EINVAL;
	CURL *e = curl_easy_init();
	if (!e) { /* only fails when memory is exhausted: abort as xmalloc does */
		fprintf(stderr, "fleethub: out of memory creating a libcurl handle\n");
		abort();
	}
	struct request *r = xcalloc(1, sizeof *r);
	r->c = c;
	r->easy = e;
	r->done = done;
	r->arg = arg;
	r->max_response = max_response;
	r->timeout_ms = timeout_ms ? timeout_ms : 1;
	r->started_ns = uv_hrtime();
	buf_init(&r->resp);

	bool has_ct = false;
	for (size_t i = 0; headers && headers[i]; i++) {
		r->headers = curl_slist_append(r->headers, headers[i]);
		has_ct |= strncasecmp(headers[i], "Content-Type:", 13) == 0;
	}
	bool is_get = strcmp(method, "GET") == 0, is_head = strcmp(method, "HEAD") == 0;
	bool sends_body = body || !(is_get || is_head || strcmp(method, "DELETE") == 0);
	if (!has_ct && body)
		r->headers = curl_slist_append(r->headers, "Content-Type: application/json");
	else if (!has_ct && sends_body)
		r->headers =
		    curl_slist_append(r->headers, "Content-Type:"); /* not curl's form type */
	r->headers = curl_slist_append(r->headers, "Expect:");      /* no 100-continue round trip */

	long deadline = r->timeout_ms > (uint64_t)LONG_MAX ? LONG_MAX : (long)r->timeout_ms;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* the URL exactly as given */
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L); /* a webhook answers itself */
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
	if (dial) { /* "::host:port": any URL host and port goes to dial */
		struct buf ct = BUF_INIT;
		buf_printf(&ct, "::%s", dial);
		r->connect_to = curl_slist_append(NULL, ct.data);
		buf_free(&ct);
		curl_easy_setopt(e, CURLOPT_CONNECT_TO, r->connect_to);
	}
	curl_easy_setopt(e, CURLOPT_USERAGENT, "fleethub");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, deadline);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, deadline);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->trust) {
		curl_easy_setopt(e, CURLOPT_CAINFO, NULL); /* ssl_ctx_cb gives the store */
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
		curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, c);
	}
	if (max_response > 0 && max_response <= (size_t)INT64_MAX) /* 0 would mean no limit */
		curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_response);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->curl_err);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	if (sends_body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body ? body : "");
	} else if (is_get) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	}
	if (is_head) /* a custom "HEAD" would wait for a body */
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else /* the method word as given, also for a GET with a body */
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);

	r->next = c->all;
	if (c->all)
		c->all->prev = r;
	c->all = r;
	/* libcurl only arms the timer here (timer_cb), so nothing finishes
	 * inside this call; a failure is delivered on the next turn too. */
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
		finish(r, "cannot start the request");
	return 0;
}

void http_client_close(struct http_client *c)
{
	if (!c || c->closing)
		return;
	c->closing = true;
	for (struct request *r = c->all; r; r = r->next) {
		if (r->finished)
			continue;
		curl_multi_remove_handle(c->multi, r->easy);
		finish(r, "shutting down");
	}
	/* Closes pooled connections; libcurl reports their sockets removed. */
	curl_multi_cleanup(c->multi);
	c->multi = NULL;
	while (c->socks)
		sock_close(c->socks);
	uv_timer_stop(&c->timer);
	uv_timer_stop(&c->deliver);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->deliver, on_handle_closed);
	/* The handles close on a later turn, so c outlives every callback. */
	deliver_all(c);
}

/* Appends n bytes of p to out (outlen) at *pos, keeping room for the NUL. */
static void put(char *out, size_t outlen, size_t *pos, const char *p, size_t n)
{
	size_t room = outlen - 1 - *pos;
	if (n > room)
		n = room;
	memcpy(out + *pos, p, n);
	*pos += n;
}

void http_client_url_for_log(const char *url, char *out, size_t outlen)
{
	if (outlen == 0)
		return;
	size_t pos = 0;
	size_t end = strcspn(url, "?#");
	const char *from = url;
	const char *sep = strstr(url, "://");
	if (sep && (size_t)(sep - url) < end) {
		const char *auth = sep + 3;
		size_t alen = strcspn(auth, "/?#");
		const char *at = NULL;
		for (size_t i = 0; i < alen; i++)
			if (auth[i] == '@')
				at = auth + i; /* the last one: passwords may hold '@' */
		put(out, outlen, &pos, url, (size_t)(auth - url));
		from = at ? at + 1 : auth;
	}
	put(out, outlen, &pos, from, (size_t)(url + end - from));
	out[pos] = '\0';
}
