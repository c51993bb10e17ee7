/* The seeded fleet's values and the answers they imply (see twinset.h). */
#include "twinset.h"

#include <stdlib.h>

#include "base/mem.h"

static const char *const regions[TWINSET_REGIONS] = {
    "north", "south", "east", "west", "north-east", "north-west", "south-east", "south-west"};
static const char *const links[3] = {"wifi", "cellular", "ethernet"};

unsigned twinset_temp(unsigned i)
{
	return (unsigned)((uint64_t)i * 7919 % TWINSET_TEMPS);
}

void twinset_decimal(struct buf *out, unsigned hundredths)
{
	buf_printf(out, "%u.%02u", hundredths / 100, hundredths % 100);
}

void twinset_tags(struct buf *out, unsigned i)
{
	buf_printf(out, "{\"tags\":{\"plant\":\"plant-%u\",\"region\":\"%s\",\"floor\":%u}}",
	           i % TWINSET_PLANTS, regions[i % TWINSET_REGIONS], i % TWINSET_FLOORS);
}

void twinset_reported(struct buf *out, unsigned i)
{
	buf_appends(out, "{\"temperature\":");
	twinset_decimal(out, twinset_temp(i));
	buf_printf(out, ",\"firmware\":\"1.%u.0\",\"connectivity\":{\"type\":\"%s\"}}",
	           i % TWINSET_FIRMWARES, links[i % 3]);
}

void twinset_init(struct twinset *s, unsigned n)
{
	s->n = n;
	s->below = xcalloc(TWINSET_TEMPS + 1, sizeof *s->below);
	/* Count each temperature, then turn the counts into prefix sums. */
	for (unsigned i = 0; i < n; i++)
		s->below[twinset_temp(i) + 1]++;
	for (unsigned t = 1; t <= TWINSET_TEMPS; t++)
		s->below[t] += s->below[t - 1];
}

void twinset_free(struct twinset *s)
{
	free(s->below);
	s->below = NULL;
}

/* Of 0..n-1, how many are congruent to r modulo m (r < m). */
static unsigned residues(unsigned n, unsigned m, unsigned r)
{
	return n / m + (r < n % m ? 1 : 0);
}

unsigned twinset_count_plant(const struct twinset *s, unsigned plant)
{
	return plant < TWINSET_PLANTS ? residues(s->n, TWINSET_PLANTS, plant) : 0;
}

unsigned twinset_count_temp(const struct twinset *s, unsigned lo, unsigned hi)
{
	if (hi > TWINSET_TEMPS)
		hi = TWINSET_TEMPS;
	return lo < hi ? s->below[hi] - s->below[lo] : 0;
}

unsigned twinset_count_firmware(const struct twinset *s, unsigned minor)
{
	return minor < TWINSET_FIRMWARES ? residues(s->n, TWINSET_FIRMWARES, minor) : 0;
}
