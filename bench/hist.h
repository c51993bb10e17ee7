/* A latency histogram with log-scaled buckets, in the manner of
 * HdrHistogram: values below 16 have a bucket each; above that every power
 * of two is split into 16 equal sub-buckets, so a reported percentile is at
 * most 1/16 (6.25 %) above the true value. Fixed size (no allocation),
 * values up to 2^40 (larger ones are clamped). The exact maximum is kept
 * beside the buckets. Units are the caller's (the load generator records
 * microseconds). */
#ifndef FH_BENCH_HIST_H
#define FH_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_BITS 40
#define HIST_BUCKETS (HIST_SUB + (HIST_MAX_BITS - HIST_SUB_BITS) * HIST_SUB)

struct hist {
	uint64_t counts[HIST_BUCKETS];
	uint64_t n;
	uint64_t max;
};

void hist_init(struct hist *h);
void hist_add(struct hist *h, uint64_t v);
/* Adds every value of src to dst. */
void hist_merge(struct hist *dst, const struct hist *src);
/* The value below which a fraction p (0..1) of the values lie: the upper
 * edge of the bucket holding that rank, never above the exact maximum.
 * 0 for an empty histogram. */
uint64_t hist_percentile(const struct hist *h, double p);

#endif
