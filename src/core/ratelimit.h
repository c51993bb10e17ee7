/* Request rate limits: token buckets, one per device id or registration id,
 * in a fixed-size table.
 *
 * A bucket holds up to `burst` tokens and gains `rate` tokens per second;
 * every request takes one, and a request that finds none is refused with
 * the whole seconds until one is there (the retry-after a client is told).
 * Tokens are counted in thousandths, so that a refill of `rate` per second
 * is exactly `rate` thousandths per millisecond: integer arithmetic only.
 *
 * The table is set-associative: a key's 64-bit hash picks a set of
 * RATE_WAYS slots; the key takes a slot of its own there, found again by
 * its hash. When every slot of the set is taken, the key takes over the
 * slot idle for longest (its bucket refilled in the meantime unless its
 * device stopped just now: an eviction can only be generous to the new
 * key, never starve it). A request costs one hash of the key and at most
 * RATE_WAYS comparisons, and never allocates: the table's memory is fixed
 * when it is created, whatever the number of keys a flood invents.
 *
 * Pure: time comes in as an argument (milliseconds, any origin, expected not
 * to go backwards; when it does, the bucket simply gains nothing). */
#ifndef FH_CORE_RATELIMIT_H
#define FH_CORE_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define RATE_WAYS 4

struct rate_limit {
	uint32_t rate;  /* tokens per second; 0 = no limit */
	uint32_t burst; /* bucket size in tokens (>= 1 when rate > 0) */
};

struct rate_bucket {
	uint64_t key;    /* hash of the key; 0 = free slot */
	int64_t milli;   /* tokens x 1000 */
	int64_t last_ms; /* when milli was last brought up to date */
};

/* Takes a token from b at now_ms. Returns 0 when one was there, else the
 * seconds (>= 1) until one will be. */
unsigned rate_bucket_take(struct rate_bucket *b, const struct rate_limit *lim, int64_t now_ms);
/* Takes n tokens at once (a request that costs n), or none: returns 0 when
 * they were there, else the seconds until they will be. A cost above the
 * burst is taken from a full bucket (all of it). */
unsigned rate_bucket_take_n(struct rate_bucket *b, const struct rate_limit *lim, uint32_t n,
			    int64_t now_ms);

struct rate_table {
	struct rate_limit lim;
	struct rate_bucket *slots; /* nsets * RATE_WAYS, owned */
	size_t nsets;              /* a power of two */
};

/* Sets up a table with room for at least keys keys at once (rounded up to a
 * power of two sets of RATE_WAYS). With lim.rate == 0 no memory is taken and
 * every request is allowed. */
void rate_table_init(struct rate_table *t, const struct rate_limit *lim, size_t keys);
void rate_table_free(struct rate_table *t);
/* Takes a token for key[0..n) (borrowed). Returns 0 when allowed, else the
 * seconds (>= 1) to wait. */
unsigned rate_table_take(struct rate_table *t, const char *key, size_t n, int64_t now_ms);
/* 0 when key[0..n) has a token now, else the seconds until it will; takes
 * nothing (for limits on what failed: look first, take after a failure). */
unsigned rate_table_wait(struct rate_table *t, const char *key, size_t n, int64_t now_ms);

#endif
