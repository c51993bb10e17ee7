/* Fuzz target for src/codec/props.c: arbitrary bytes as a property bag
 * (the end of a device's telemetry topic). Invariants: a bag that parses
 * encodes to one that parses to the same properties; nothing crashes or
 * reads outside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/props.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *app, *sys;
	char err[160];
	if (props_parse((const char *)data, size, &app, &sys, err, sizeof err) != 0)
		return 0;
	struct buf b = BUF_INIT;
	props_encode(&b, sys, app);
	json_t *app2, *sys2;
	if (props_parse(b.data ? b.data : "", b.len, &app2, &sys2, err, sizeof err) != 0)
		abort();
	/* A system key the hub does not know is kept under "$.x" and encoded
	 * back as one: the same objects either way. */
	if (!json_equal(app, app2) || !json_equal(sys, sys2))
		abort();
	json_decref(app2);
	json_decref(sys2);
	json_decref(app);
	json_decref(sys);
	buf_free(&b);
	return 0;
}
