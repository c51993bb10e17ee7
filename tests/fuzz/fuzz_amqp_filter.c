/* Fuzz target for src/codec/amqp_filter.c: arbitrary bytes as an Event
 * Hubs selector filter. Invariants: a filter that parses has a known kind,
 * a value of -1 or more (never negative otherwise), and "@latest" only for
 * an offset; nothing reads outside the input. */
#include <stdint.h>
#include <stdlib.h>

#include "codec/amqp_filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct amqp_filter f;
	char err[160];
	if (amqp_filter_parse((const char *)data, size, &f, err, sizeof err) != 0)
		return 0;
	if (f.kind != AMQP_FILTER_OFFSET && f.kind != AMQP_FILTER_SEQUENCE &&
	    f.kind != AMQP_FILTER_TIME)
		abort();
	if (f.value < -1 || (f.latest && f.kind != AMQP_FILTER_OFFSET))
		abort();
	if (f.kind == AMQP_FILTER_TIME && f.value < 0)
		abort();
	return 0;
}
