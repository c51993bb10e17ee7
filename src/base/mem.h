/* Allocation wrappers that abort on exhaustion (as Redis zmalloc does): a
 * server that cannot allocate a few bytes cannot recover meaningfully, and
 * untrusted input is bounded before any allocation, so OOM here means the
 * machine is out of memory, not that a peer asked for too much. */
#ifndef FH_BASE_MEM_H
#define FH_BASE_MEM_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
