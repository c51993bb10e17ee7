/* Wall-clock time. Only server/, net/ and the store's writer read the clock;
 * core functions take "now" as an argument. */
#ifndef FH_BASE_CLOCK_H
#define FH_BASE_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch. */
int64_t clock_now_ms(void);
/* ISO-8601 UTC with milliseconds: 2026-11-23T16:59:59.801Z (25 chars + NUL). */
void clock_iso8601(int64_t ms, char out[32]);
/* "YYYY-MM-DDTHH:MM:SS[.fff][Z]" (UTC) as ms since the epoch: 0, or -1
 * when s is not such a time. */
int clock_parse_iso8601(const char *s, int64_t *ms);

#endif
