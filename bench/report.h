/* Error reporting shared by the load generator's scenarios: every error is
 * counted; the first few of each kind are printed to stderr. */
#ifndef FH_BENCH_REPORT_H
#define FH_BENCH_REPORT_H

#include <stdint.h>

#define REPORT_SHOWN 5 /* error details printed per kind */

/* Counts one error of the kind *counter counts; prints "what: detail"
 * while fewer than REPORT_SHOWN of that kind were printed. */
void report(uint64_t *counter, const char *what, const char *detail);

/* CPU seconds (user + system) this process has used so far; printed as
 * cpu_s= so a run's cost per operation can be read beside the server's. */
double self_cpu_s(void);

#endif
