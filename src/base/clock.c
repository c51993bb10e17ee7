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

int clock_parse_iso8601(const char *s, int64_t *ms)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return -1;
	int frac = 0, digits = 0;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 3)
				frac = frac * 10 + (*p - '0');
	for (; digits > 0 && digits < 3; digits++)
		frac *= 10;
	if (strcmp(p, "Z") != 0 && strcmp(p, "") != 0)
		return -1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	*ms = (int64_t)t * 1000 + frac;
	return 0;
}
