/* See report.h. */
#include "report.h"

#include <stdio.h>
#include <sys/resource.h>

void report(uint64_t *counter, const char *what, const char *detail)
{
	if (*counter < REPORT_SHOWN)
		fprintf(stderr, "loadgen: %s: %s\n", what, detail);
	else if (*counter == REPORT_SHOWN)
		fprintf(stderr, "loadgen: %s: (further ones not shown)\n", what);
	(*counter)++;
}

double self_cpu_s(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
