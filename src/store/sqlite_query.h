/* A device query's plan (codec/query_plan.h) in SQLite's dialect: the
 * condition that narrows a scan of the twins table. Internal to the SQLite
 * store; pure (text in, text out), so it is unit-tested without a server.
 *
 * The condition is necessary, not sufficient: every twin the plan's terms
 * hold for satisfies it, and the caller checks every row it selects with
 * query_matches. So a term is rendered loosely where SQLite's comparison
 * differs from the query language's (json_extract gives 1 for true, and a
 * string compares greater than any number: such rows are selected and then
 * left out by query_matches), and not at all where it could leave a match
 * out: a path segment SQLite's JSON path cannot spell (one with " or \ or a
 * NUL) or a string with a NUL; number bounds are widened a little (see
 * slack in the .c). Literals are written into the text, not bound, so that an
 * expression index on the same json_extract can serve the condition. */
#ifndef FH_STORE_SQLITE_QUERY_H
#define FH_STORE_SQLITE_QUERY_H

#include "base/buf.h"
#include "codec/query_plan.h"

/* Appends the condition over the columns id, tags, desired and reported
 * of the twins table, named t, to sql: "1" when no term can be rendered. */
void sqlite_query_where(const struct query_plan *plan, struct buf *sql);

#endif
