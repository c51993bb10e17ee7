/* The seeded fleet of the query benchmarks: what seed-twins writes into
 * the twin of device i (tags over REST, reported properties over MQTT),
 * and what a query over devices 0..n-1 must therefore return. Both sides
 * use these functions, so the generator and the checks cannot drift
 * apart. Pure: no I/O, no globals.
 *
 *   tags      {"plant":"plant-<i % 1000>","region":<one of 8 by i % 8>,
 *              "floor":<i % 7>}
 *   reported  {"temperature":<t(i) / 100, two decimals>,
 *              "firmware":"1.<i % 10>.0",
 *              "connectivity":{"type":<wifi|cellular|ethernet by i % 3>}}
 *
 * t(i) = i * 7919 mod 10000: 7919 is prime, so every 10,000 consecutive
 * devices take each value 0.00 .. 99.99 exactly once (uniform on [0, 100)),
 * and a range [a, b) in hundredths holds exactly b - a of every 10,000.
 * Temperatures are written as decimals with two digits ("5.07") and the
 * range bounds likewise, so the server compares the same decimal texts the
 * generator counted with integers: the expected counts are exact. */
#ifndef FH_BENCH_TWINSET_H
#define FH_BENCH_TWINSET_H

#include <stdint.h>

#include "base/buf.h"

#define TWINSET_PLANTS 1000
#define TWINSET_REGIONS 8
#define TWINSET_FLOORS 7
#define TWINSET_FIRMWARES 10
#define TWINSET_TEMPS 10000 /* hundredths of a degree: 0 .. 9999 */

/* Device i's temperature in hundredths of a degree. */
unsigned twinset_temp(unsigned i);
/* Appends {"tags":{...}} (a twin PATCH body) for device i. */
void twinset_tags(struct buf *out, unsigned i);
/* Appends device i's reported patch. */
void twinset_reported(struct buf *out, unsigned i);
/* Appends a temperature given in hundredths as a decimal ("12.05"). */
void twinset_decimal(struct buf *out, unsigned hundredths);

/* The answers over devices 0..n-1. */
struct twinset {
	unsigned n;
	uint32_t *below; /* [TWINSET_TEMPS + 1]: devices with t(i) < index */
};

void twinset_init(struct twinset *s, unsigned n);
void twinset_free(struct twinset *s);
/* Devices with tags.plant = 'plant-<plant>'. */
unsigned twinset_count_plant(const struct twinset *s, unsigned plant);
/* Devices with lo <= t(i) < hi (hundredths; hi <= TWINSET_TEMPS). */
unsigned twinset_count_temp(const struct twinset *s, unsigned lo, unsigned hi);
/* Devices with firmware "1.<minor>.0". */
unsigned twinset_count_firmware(const struct twinset *s, unsigned minor);

#endif
