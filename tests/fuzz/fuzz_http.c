/* libFuzzer target: HTTP/1.1 request parsing fed in slices (the first byte
 * picks the slice size), with small limits, handling pipelined requests one
 * at a time as the server does, and every parsed path through the REST
 * routers' pattern matcher. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t slice = (size_t)(data[0] % 32) + 1;
	data++;
	size--;
	struct http_limits lim = {256, 16, 1024, 4096};
	struct http_parser_state *ps = http_parser_new(&lim);
	size_t off = 0, end = 0;
	while (off < size) {
		if (end <= off)
			end = off + slice < size ? off + slice : size;
		struct http_request *req = NULL;
		int used = http_parser_feed(ps, (const char *)data + off, end - off, &req);
		if (used < 0) {
			const char *why;
			int status = http_parser_error(ps, &why);
			if (status < 400 || status > 499 || !why)
				abort();
			break;
		}
		off += (size_t)used;
		if (req) {
			char v[64];
			(void)http_request_header(req, "Host");
			(void)http_query_param(req->query, "api-version", v, sizeof v);
			/* the routers' matcher on every path that parses */
			char id[64];
			static const char *const routes[] = {"/devices/{id}", "/twins/{id}/methods",
							     "/devices/*/modules/**", "/jobs/**"};
			for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
				int m = http_route_match(routes[r], req->path, id, sizeof id, NULL);
				if (m < -1 || m > 1 || (m == 1 && r < 2 && strlen(id) >= sizeof id))
					abort();
			}
			bool upgrade = req->upgrade;
			http_request_free(req);
			if (upgrade)
				break;
		} else if (used == 0) {
			end = end + slice < size ? end + slice : size;
			if (off == size || end == off)
				break;
		}
	}
	http_parser_free(ps);
	return 0;
}
