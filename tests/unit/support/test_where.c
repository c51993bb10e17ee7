/* See test_where.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "test_where.h"

void parse_where(const char *cond, struct query *q)
{
	char text[1024];
	snprintf(text, sizeof text, "SELECT * FROM devices WHERE %s", cond);
	struct query_error err;
	if (query_parse(text, strlen(text), q, &err) != 0)
		fail_msg("%s: at %zu: %s", cond, err.pos, err.message);
}
