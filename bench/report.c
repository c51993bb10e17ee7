/* See report.h. */
#include "report.h"

#include <stdio.h>

void report(uint64_t *counter, const char *what, const char *detail)
{
	if (*counter < REPORT_SHOWN)
		fprintf(stderr, "loadgen: %s: %s\n", what, detail);
	else if (*counter == REPORT_SHOWN)
		fprintf(stderr, "loadgen: %s: (further ones not shown)\n", what);
	(*counter)++;
}
