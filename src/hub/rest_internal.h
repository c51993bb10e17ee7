/* Names shared by the hub's REST files (rest.c, rest_query.c) only. */
#ifndef FH_HUB_REST_INTERNAL_H
#define FH_HUB_REST_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "core/registry.h"
#include "internal.h"
#include "net/http_server.h"
#include "store/store.h"

struct route_args {
	struct hub *hub;
	struct http_exchange *ex;
	char id[REGISTRY_ID_MAX + 1]; /* the {id} path segment, decoded */
};

/* Answers with the error body the SDKs parse (both shapes, and the
 * iothub-errorcode header). */
void rest__respond_error(struct http_exchange *ex, int status, const char *name, int code,
			 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* 429 (with Retry-After) for a scan while REST_MAX_SCANS wait for the
 * store's worker: queries and listings queue no further. */
#define REST_MAX_SCANS 16
void rest__respond_scans_throttled(struct http_exchange *ex);
/* 404 for a missing device; otherwise 503 saying why. */
void rest__respond_store_error(struct http_exchange *ex, int rc, const char *id, bool write);
/* The request body as a JSON object, or NULL after answering 400. */
json_t *rest__body_object(struct http_exchange *ex);
/* Appends the REST twin document of a store view to b, with the view's
 * (stored) connection state; pure, so a worker may call it. */
void rest__render_twin_view(struct buf *b, const char *id, const struct store_twin_view *v);

/* The If-Match value without quotes ("" when absent). */
void rest__if_match(const struct http_request *req, char out[128]);

/* A device's own request under /devices/{id}/messages/ (device_http.c):
 * true when it is one (then answered), false when the path or method is
 * none of the device routes. */
bool hub__device_http(struct hub *h, struct http_exchange *ex, const char *id);

/* GET /fleethub/stats (stats.c). */
void hub__stats(struct route_args *a);

/* POST /devices/query (rest_query.c). */
void rest__twin_query(struct route_args *a);

/* The hub's CA certificates (rest_ca.c). */
void rest__ca_list(struct route_args *a);
void rest__ca_get(struct route_args *a);
void rest__ca_put(struct route_args *a);
void rest__ca_delete(struct route_args *a);
void rest__ca_code(struct route_args *a);
void rest__ca_verify(struct route_args *a);

#endif
