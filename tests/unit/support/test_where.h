/* Parses "SELECT * FROM devices WHERE <cond>" into *q, failing the
 * running test with the parser's message when it does not parse. */
#ifndef FH_TESTS_WHERE_H
#define FH_TESTS_WHERE_H

#include "codec/query.h"

void parse_where(const char *cond, struct query *q);

#endif
