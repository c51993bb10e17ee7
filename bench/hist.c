/* Log-bucketed histogram (see hist.h). Bucket index of v >= 16 with highest
 * set bit k: 16 + (k - 4) * 16 + the four bits below bit k. */
#include "hist.h"

#include <string.h>

static unsigned bucket_of(uint64_t v)
{
	if (v >= (1ull << HIST_MAX_BITS))
		v = (1ull << HIST_MAX_BITS) - 1;
	if (v < HIST_SUB)
		return (unsigned)v;
	unsigned k = 63u - (unsigned)__builtin_clzll(v);
	unsigned sub = (unsigned)(v >> (k - HIST_SUB_BITS)) - HIST_SUB;
	return HIST_SUB + (k - HIST_SUB_BITS) * HIST_SUB + sub;
}

/* The largest value that falls into bucket i. */
static uint64_t bucket_top(unsigned i)
{
	if (i < HIST_SUB)
		return i;
	unsigned k = (i - HIST_SUB) / HIST_SUB + HIST_SUB_BITS;
	uint64_t sub = (i - HIST_SUB) % HIST_SUB;
	uint64_t width = 1ull << (k - HIST_SUB_BITS);
	return (HIST_SUB + sub) * width + width - 1;
}

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof *h);
}

void hist_add(struct hist *h, uint64_t v)
{
	h->counts[bucket_of(v)]++;
	h->n++;
	if (v > h->max)
		h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->counts[i] += src->counts[i];
	dst->n += src->n;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (h->n == 0)
		return 0;
	if (p < 0)
		p = 0;
	if (p > 1)
		p = 1;
	/* The rank (1-based) of the value sought: ceil(p * n), at least 1. */
	uint64_t rank = (uint64_t)(p * (double)h->n);
	if ((double)rank < p * (double)h->n)
		rank++;
	if (rank == 0)
		rank = 1;
	if (rank == h->n)
		return h->max; /* exact, even beyond the clamped top bucket */
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			uint64_t top = bucket_top(i);
			return top < h->max ? top : h->max;
		}
	}
	return h->max;
}
