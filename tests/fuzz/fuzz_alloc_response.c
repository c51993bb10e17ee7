/* libFuzzer target: the custom allocation webhook's answer
 * (alloc_parse_response). The first byte chooses the HTTP status (mostly
 * 200, so the body parser gets most of the work); the rest is the body,
 * copied into an exact-size heap block so ASan sees any overread. Checks
 * the result's invariants: ALLOC_OK names a candidate by its canonical name
 * and carries a well-formed initial twin; ALLOC_FAILED carries one of the
 * documented codes and a message; everything is freed by
 * alloc_result_clear. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/allocation.h"

static const int statuses[] = {200, 200, 200, 200, 200, 200, 200, 200,
                               401, 400, 404, 429, 500, 503, 0,   201};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct alloc_hub linked[] = {
	    {"hub1.example.test", 1, true},
	    {"hub2.example.test", 3, true},
	};
	static const struct alloc_hub *const candidates[] = {&linked[0], &linked[1]};
	if (size == 0)
		return 0;
	int status = statuses[data[0] % (sizeof statuses / sizeof statuses[0])];
	size_t len = size - 1;
	char *body = malloc(len ? len : 1);
	if (!body)
		return 0;
	if (len)
		memcpy(body, data + 1, len);

	struct alloc_result r;
	alloc_parse_response(status, body, len, "connection refused", candidates, 2, &r);
	if (memchr(r.message, '\0', sizeof r.message) == NULL)
		abort();
	switch (r.outcome) {
	case ALLOC_OK:
		if (status != 200 ||
		    (strcmp(r.hub, linked[0].name) != 0 && strcmp(r.hub, linked[1].name) != 0))
			abort();
		if (r.initial_twin) {
			json_t *props = json_object_get(r.initial_twin, "properties");
			if (!json_is_object(json_object_get(r.initial_twin, "tags")) ||
			    !json_is_object(json_object_get(props, "desired")))
				abort();
		}
		free(json_dumps(r.payload, JSON_COMPACT | JSON_ENCODE_ANY));
		break;
	case ALLOC_RETRY:
		if (status != 0 && status != 429 && status < 500)
			abort();
		break;
	case ALLOC_FAILED:
		if ((r.error_code != 400207 && r.error_code != 400208 && r.error_code != 400209) ||
		    r.message[0] == '\0' || r.initial_twin || r.payload)
			abort();
		break;
	default: abort();
	}
	alloc_result_clear(&r);
	free(body);
	return 0;
}
