/* Token buckets and their fixed-size table (see ratelimit.h). */
#include "core/ratelimit.h"

#include <stdlib.h>

#include "base/mem.h"

/* Brings b's tokens up to now_ms; the capacity in thousandths. */
static int64_t refill(struct rate_bucket *b, const struct rate_limit *lim, int64_t now_ms)
{
	int64_t rate = lim->rate;
	int64_t cap = (int64_t)(lim->burst ? lim->burst : 1) * 1000;
	if (now_ms > b->last_ms) {
		int64_t elapsed = now_ms - b->last_ms;
		int64_t room = cap - b->milli;
		/* Compare before multiplying: a bucket idle for days must not
		 * overflow on its way to full. */
		if (room <= 0 || elapsed >= room / rate + 1)
			b->milli = cap;
		else
			b->milli += elapsed * rate;
		b->last_ms = now_ms;
	}
	return cap;
}

/* Whole seconds (>= 1) until b holds need thousandths. */
static unsigned wait_s(const struct rate_bucket *b, const struct rate_limit *lim, int64_t need)
{
	int64_t rate = lim->rate;
	int64_t wait_ms = (need - b->milli + rate - 1) / rate;
	int64_t w = (wait_ms + 999) / 1000;
	return w < 1 ? 1 : (unsigned)w;
}

unsigned rate_bucket_take_n(struct rate_bucket *b, const struct rate_limit *lim, uint32_t n,
			    int64_t now_ms)
{
	if (lim->rate == 0)
		return 0;
	int64_t cap = refill(b, lim, now_ms);
	int64_t need = (int64_t)n * 1000;
	if (need > cap)
		need = cap; /* more than a burst: a full bucket will do */
	if (b->milli >= need) {
		b->milli -= need;
		return 0;
	}
	return wait_s(b, lim, need);
}

unsigned rate_bucket_take(struct rate_bucket *b, const struct rate_limit *lim, int64_t now_ms)
{
	return rate_bucket_take_n(b, lim, 1, now_ms);
}

void rate_table_init(struct rate_table *t, const struct rate_limit *lim, size_t keys)
{
	t->lim = *lim;
	t->slots = NULL;
	t->nsets = 0;
	if (lim->rate == 0)
		return;
	size_t sets = 1;
	while (sets * RATE_WAYS < keys)
		sets <<= 1;
	t->nsets = sets;
	t->slots = xcalloc(sets * RATE_WAYS, sizeof *t->slots);
}

void rate_table_free(struct rate_table *t)
{
	free(t->slots);
	t->slots = NULL;
	t->nsets = 0;
}

/* FNV-1a, 64 bits; never 0 (0 marks a free slot). */
static uint64_t key_hash(const char *key, size_t n)
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)key[i];
		h *= 1099511628211ull;
	}
	return h ? h : 1;
}

/* The bucket of key: found by its hash, or a slot given to it (a free one,
 * else the one idle for longest), starting full. */
static struct rate_bucket *bucket_of(struct rate_table *t, const char *key, size_t n,
				     int64_t now_ms)
{
	uint64_t h = key_hash(key, n);
	struct rate_bucket *set = t->slots + ((h ^ (h >> 32)) & (t->nsets - 1)) * RATE_WAYS;
	struct rate_bucket *victim = &set[0];
	for (int i = 0; i < RATE_WAYS; i++) {
		if (set[i].key == h)
			return &set[i];
		if (set[i].key == 0) {
			if (victim->key != 0)
				victim = &set[i];
		} else if (victim->key != 0 && set[i].last_ms < victim->last_ms) {
			victim = &set[i];
		}
	}
	/* A key seen for the first time (or again after it was evicted)
	 * starts with a full bucket. */
	victim->key = h;
	victim->milli = (int64_t)(t->lim.burst ? t->lim.burst : 1) * 1000;
	victim->last_ms = now_ms;
	return victim;
}

unsigned rate_table_take(struct rate_table *t, const char *key, size_t n, int64_t now_ms)
{
	if (t->lim.rate == 0 || !t->slots)
		return 0;
	return rate_bucket_take(bucket_of(t, key, n, now_ms), &t->lim, now_ms);
}

unsigned rate_table_wait(struct rate_table *t, const char *key, size_t n, int64_t now_ms)
{
	if (t->lim.rate == 0 || !t->slots)
		return 0;
	struct rate_bucket *b = bucket_of(t, key, n, now_ms);
	refill(b, &t->lim, now_ms);
	return b->milli >= 1000 ? 0 : wait_s(b, &t->lim, 1000);
}
