/* Unit tests for the token buckets and their table: the burst, the
 * sustained rate, the retry-after a refused request is told, idle buckets
 * refilling without overflow, time going backwards, keys kept apart, the
 * table's fixed size under a flood of new keys, and "no limit". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/ratelimit.h"

static unsigned take_n(struct rate_table *t, const char *key, unsigned n, int64_t now,
		       unsigned *refused)
{
	unsigned ok = 0;
	*refused = 0;
	for (unsigned i = 0; i < n; i++) {
		if (rate_table_take(t, key, strlen(key), now) == 0)
			ok++;
		else
			(*refused)++;
	}
	return ok;
}

static void test_burst_then_rate(void **state)
{
	struct rate_limit lim = {.rate = 10, .burst = 20};
	struct rate_table t;
	rate_table_init(&t, &lim, 100);
	unsigned refused;
	/* A new key has its whole burst at once, and not one more. */
	assert_int_equal(take_n(&t, "dev-1", 25, 1000, &refused), 20);
	assert_int_equal(refused, 5);
	/* 10 per second: after 500 ms, 5 more; the sixth is refused. */
	assert_int_equal(take_n(&t, "dev-1", 6, 1500, &refused), 5);
	assert_int_equal(refused, 1);
	/* 100 ms is one token at 10/s. */
	assert_int_equal(rate_table_take(&t, "dev-1", 5, 1600), 0);
	assert_int_not_equal(rate_table_take(&t, "dev-1", 5, 1600), 0);
	/* Sustained: one request every 100 ms is always allowed. */
	for (int64_t now = 1700; now < 60000; now += 100)
		assert_int_equal(rate_table_take(&t, "dev-1", 5, now), 0);
	rate_table_free(&t);
}

static void test_retry_after(void **state)
{
	struct rate_limit lim = {.rate = 2, .burst = 1};
	struct rate_bucket b = {.key = 1, .milli = 1000, .last_ms = 0};
	assert_int_equal(rate_bucket_take(&b, &lim, 0), 0);
	/* Empty; 2/s means a token in 500 ms: told 1 s (whole seconds, at
	 * least one; with a rate of at least 1/s it is never more). */
	assert_int_equal(rate_bucket_take(&b, &lim, 0), 1);
	struct rate_limit slow = {.rate = 1, .burst = 1};
	struct rate_bucket s = {.key = 1, .milli = 0, .last_ms = 0};
	assert_int_equal(rate_bucket_take(&s, &slow, 1), 1);
	/* At 999 ms the token is not there yet; at 1000 ms it is. */
	assert_int_not_equal(rate_bucket_take(&s, &slow, 999), 0);
	assert_int_equal(rate_bucket_take(&s, &slow, 1000), 0);
}

static void test_idle_refill_no_overflow(void **state)
{
	struct rate_limit lim = {.rate = 1000000, .burst = 1000000};
	struct rate_bucket b = {.key = 1, .milli = 0, .last_ms = 0};
	/* Idle for a year: full, not overflowed past the burst. */
	int64_t later = 365LL * 24 * 3600 * 1000;
	assert_int_equal(rate_bucket_take(&b, &lim, later), 0);
	assert_true(b.milli == (int64_t)1000000 * 1000 - 1000);
}

static void test_clock_backwards(void **state)
{
	struct rate_limit lim = {.rate = 10, .burst = 1};
	struct rate_bucket b = {.key = 1, .milli = 1000, .last_ms = 5000};
	assert_int_equal(rate_bucket_take(&b, &lim, 5000), 0);
	/* Time goes back: nothing is gained, nothing breaks. */
	assert_int_not_equal(rate_bucket_take(&b, &lim, 1000), 0);
	assert_int_equal(b.last_ms, 5000);
	/* And forward again past the old time: refills from there. */
	assert_int_equal(rate_bucket_take(&b, &lim, 5100), 0);
}

static void test_keys_apart(void **state)
{
	struct rate_limit lim = {.rate = 1, .burst = 3};
	struct rate_table t;
	rate_table_init(&t, &lim, 1000);
	unsigned refused;
	assert_int_equal(take_n(&t, "flooder", 100, 0, &refused), 3);
	/* Another device is not affected by the flooder. */
	for (int i = 0; i < 200; i++) {
		char id[32];
		snprintf(id, sizeof id, "quiet-%d", i);
		assert_int_equal(rate_table_take(&t, id, strlen(id), 0), 0);
	}
	/* The flooder is still throttled (kept its slot: it is the most
	 * recently used in its set). */
	assert_int_not_equal(rate_table_take(&t, "flooder", 7, 0), 0);
	rate_table_free(&t);
}

static void test_flood_of_new_keys(void **state)
{
	struct rate_limit lim = {.rate = 1, .burst = 1};
	struct rate_table t;
	rate_table_init(&t, &lim, 64);
	assert_int_equal(t.nsets * RATE_WAYS, 64);
	struct rate_bucket *slots = t.slots;
	/* 100,000 distinct keys: every one gets its first request (a new key
	 * starts full), and the table neither grows nor moves. */
	for (int i = 0; i < 100000; i++) {
		char id[32];
		snprintf(id, sizeof id, "reg-%d", i);
		assert_int_equal(rate_table_take(&t, id, strlen(id), i), 0);
	}
	assert_ptr_equal(t.slots, slots);
	assert_int_equal(t.nsets * RATE_WAYS, 64);
	/* A key that keeps sending keeps its slot, so stays throttled, while
	 * other keys come and go (each of them idle longer than it). */
	assert_int_equal(rate_table_take(&t, "busy", 4, 200000), 0);
	for (int i = 0; i < 1000; i++) {
		char id[32];
		snprintf(id, sizeof id, "other-%d", i);
		rate_table_take(&t, id, strlen(id), 199000);
		assert_int_not_equal(rate_table_take(&t, "busy", 4, 200000), 0);
	}
	rate_table_free(&t);
}

/* A cost of n tokens: taken whole or not at all; above the burst, a full
 * bucket pays; the wait says when n will be there. */
static void test_take_n(void **state)
{
	struct rate_limit lim = {100, 1000}; /* 100 tokens/s, burst 1000 */
	struct rate_bucket b = {1, 1000 * 1000, 0};
	assert_int_equal(rate_bucket_take_n(&b, &lim, 600, 0), 0);
	assert_int_equal(rate_bucket_take_n(&b, &lim, 600, 0), 2); /* 400 left: 2 s for 600 */
	assert_int_equal(b.milli, 400 * 1000);                       /* nothing taken */
	assert_int_equal(rate_bucket_take_n(&b, &lim, 600, 2000), 0);
	assert_int_equal(rate_bucket_take_n(&b, &lim, 5000, 2000), 10); /* empty: a full one */
	assert_int_equal(rate_bucket_take_n(&b, &lim, 5000, 12000), 0);
	assert_int_equal(b.milli, 0);
}

/* Looking does not take: a key's failures (taken after them) decide
 * whether the next attempt is looked at. */
static void test_wait_takes_nothing(void **state)
{
	struct rate_limit lim = {1, 2};
	struct rate_table t;
	rate_table_init(&t, &lim, 16);
	for (int i = 0; i < 5; i++)
		assert_int_equal(rate_table_wait(&t, "reg-1", 5, 0), 0);
	assert_int_equal(rate_table_take(&t, "reg-1", 5, 0), 0);
	assert_int_equal(rate_table_take(&t, "reg-1", 5, 0), 0);
	assert_int_equal(rate_table_wait(&t, "reg-1", 5, 0), 1);
	assert_int_equal(rate_table_wait(&t, "reg-2", 5, 0), 0);
	assert_int_equal(rate_table_wait(&t, "reg-1", 5, 1000), 0);
	rate_table_free(&t);
}

static void test_no_limit(void **state)
{
	struct rate_limit lim = {.rate = 0, .burst = 0};
	struct rate_table t;
	rate_table_init(&t, &lim, 1000000);
	assert_null(t.slots);
	for (int i = 0; i < 100000; i++)
		assert_int_equal(rate_table_take(&t, "x", 1, 0), 0);
	rate_table_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_then_rate),
	    cmocka_unit_test(test_take_n),
	    cmocka_unit_test(test_wait_takes_nothing),
	    cmocka_unit_test(test_retry_after),
	    cmocka_unit_test(test_idle_refill_no_overflow),
	    cmocka_unit_test(test_clock_backwards),
	    cmocka_unit_test(test_keys_apart),
	    cmocka_unit_test(test_flood_of_new_keys),
	    cmocka_unit_test(test_no_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
