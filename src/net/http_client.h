/* Outgoing HTTP(S) requests on the libuv loop through libcurl's multi
 * interface (socket callbacks driven by uv_poll, timers by uv_timer): the
 * loop never waits on a peer. Used for custom allocation webhooks and for
 * the service REST API of remote linked hubs.
 *
 * Each request has a total deadline; certificate verification is always on
 * (system CAs plus the optional extra CA file); the URL is used exactly as
 * given (its query string included). Plain http:// is allowed only to a
 * loopback host (localhost, 127.0.0.0/8, [::1]); anything else is refused
 * before a connection is made. Response bodies are bounded (larger:
 * failed with "response too large"). */
#ifndef FH_NET_HTTP_CLIENT_H
#define FH_NET_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_client;

struct http_client_result {
	int status;          /* HTTP status, or 0 when no answer came */
	const char *body;    /* response body (NUL-terminated), "" when none; borrowed */
	size_t body_len;
	const char *error;   /* when status == 0: "timed out after 5000 ms",
	                        "TLS: certificate verify failed", "connection refused"... */
	int64_t elapsed_ms;
};

/* Runs on the loop thread when the request finished (answered, failed or
 * cancelled by http_client_close). The result is valid during the call. */
typedef void (*http_client_done_fn)(void *arg, const struct http_client_result *r);

/* extra_ca_file may be NULL; its certificates are loaded now (a missing
 * or certificate-less file is an error). A libcurl without an asynchronous
 * resolver is refused (FH_EINVAL): its name look-ups would block the loop.
 * Returns 0, or FH_EIO / FH_EINVAL / FH_ENOMEM with a message in err. */
int http_client_new(struct http_client **out, uv_loop_t *loop, const char *extra_ca_file,
		    char *err, size_t errlen);
/* Fails every request still running (status 0, "shutting down"), then
 * releases everything once the loop has run the handles' close callbacks. */
void http_client_close(struct http_client *c);

/* Starts a request. method "POST", "PUT", "GET", "DELETE", "PATCH";
 * headers: "Name: value" strings, NULL-terminated list, or NULL; body may
 * be NULL. Content-Type: application/json is added when a body is given
 * and no Content-Type header is. done always runs exactly once, never
 * before this function returns. Returns 0, or FH_EINVAL (bad URL, a
 * plain http:// URL to a non-loopback host, an empty method, or a client
 * that is closing; done does not run). libcurl's proxy variables
 * (https_proxy, no_proxy) apply. */
int http_client_request(struct http_client *c, const char *method, const char *url,
			const char *const *headers, const char *body, size_t body_len,
			uint64_t timeout_ms, size_t max_response, http_client_done_fn done,
			void *arg);

/* As http_client_request, but the connection goes to dial ("host:port" or
 * "[v6]:port"; NULL = the URL's host and port) while TLS (SNI and the
 * certificate's name) and the Host header still use the URL's host, as
 * curl's --connect-to does. Only https URLs may be redirected this way
 * (FH_EINVAL otherwise, or for a dial that is not host:port). */
int http_client_request_via(struct http_client *c, const char *dial, const char *method,
			    const char *url, const char *const *headers, const char *body,
			    size_t body_len, uint64_t timeout_ms, size_t max_response,
			    http_client_done_fn done, void *arg);

/* The URL without its query string, for logs (keys often ride there:
 * "?code=..."). out is NUL-terminated, truncated to outlen. */
void http_client_url_for_log(const char *url, char *out, size_t outlen);

#endif
