#include "clock.h"

#include <string.h>
#include <time.h>

int64_t clock_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void clock_iso8601(int64_t ms, char out[32])
{
	/* The date changes once a second and strftime + snprintf were most of
	 * the cost (every twin update stamps its metadata): format it once per
	 * second per thread. */
	static _Thread_local int64_t cached_secs = -1;
	static _Thread_local char date[24];
	if (ms < 0)
		ms = 0;
	int64_t secs = ms / 1000;
	if (secs != cached_secs) {
		time_t t = (time_t)secs;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
		cached_secs = secs;
	}
	int frac = (int)(ms % 1000);
	memcpy(out, date, 19);
	out[19] = '.';
	out[20] = (char)('0' + frac / 100);
	out[21] = (char)('0' + frac / 10 % 10);
	out[22] = (char)('0' + frac % 10);
	out[23] = 'Z';
	out[24] = '\0';
}
