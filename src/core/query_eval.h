/* Query semantics over one JSON document (a twin as a query sees it, or a
 * DPS record): the meaning of a parsed expression (codec/query.h), as
 * Azure IoT Hub defines it. Pure: no store, no I/O.
 *
 *   - A path that names nothing is undefined, which is not null:
 *     `x = null` is true only for a present null, IS_DEFINED(x) is true
 *     for a null, false for a missing x.
 *   - Comparisons are between primitives of one type (number with number,
 *     string with string, bool with bool, null with null); anything else
 *     (other types, undefined, objects, arrays) is undefined, and so is
 *     every comparison involving it. Strings compare case-sensitively, by
 *     byte.
 *   - A condition holds only when it is true: false and undefined both
 *     leave a row out. NOT undefined is undefined; false AND undefined is
 *     false; true OR undefined is true.
 *   - Arithmetic is on numbers only (else undefined); / and % by zero are
 *     undefined.
 *   - IN holds when the value equals one element; NIN when it is a defined
 *     primitive equal to none.
 *   - STARTSWITH, ENDSWITH, CONTAINS, LOWER and UPPER take strings (else
 *     undefined); LOWER and UPPER change ASCII letters only. */
#ifndef FH_CORE_QUERY_EVAL_H
#define FH_CORE_QUERY_EVAL_H

#include <jansson.h>
#include <stdbool.h>

#include "codec/query.h"

/* True when cond holds for doc (a NULL cond holds for every document). */
bool query_matches(const struct query_node *cond, const json_t *doc);

/* The value of expr for doc as a new JSON value (the caller owns it), or
 * NULL when it is undefined. */
json_t *query_value(const struct query_node *expr, const json_t *doc);

#endif
