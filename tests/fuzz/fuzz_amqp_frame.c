/* Fuzz target for src/codec/amqp_frame.c: arbitrary bytes as the stream a
 * client sends, fed whole and in chunks of a size the first byte picks.
 * Invariants: the chunks change nothing (the same bytes pass, the same
 * frames are dropped); what passes is never more than what came in; with
 * nothing dropped, what passed is the input's start and the rest is held
 * (a frame's first bytes, at most AMQP_SCAN_HEAD). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/amqp_frame.h"

struct sink {
	uint8_t *p;
	size_t n;
};

static void collect(void *arg, const uint8_t *p, size_t n)
{
	struct sink *k = arg;
	memcpy(k->p + k->n, p, n);
	k->n += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] % 17 + 1;
	data++;
	size--;
	struct sink whole = {malloc(size + 1), 0}, split = {malloc(size + 1), 0};
	struct amqp_scan a, b;
	amqp_scan_init(&a, 65536);
	amqp_scan_init(&b, 65536);
	amqp_scan_feed(&a, data, size, collect, &whole);
	for (size_t at = 0; at < size; at += step)
		amqp_scan_feed(&b, data + at, size - at < step ? size - at : step, collect, &split);
	if (whole.n != split.n || memcmp(whole.p, split.p, whole.n) != 0 || a.dropped != b.dropped)
		abort();
	if (whole.n + a.have > size || a.have > AMQP_SCAN_HEAD)
		abort();
	if (a.dropped == 0 && (whole.n + a.have != size || memcmp(whole.p, data, whole.n) != 0))
		abort();
	free(whole.p);
	free(split.p);
	return 0;
}
