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

#include <stdbool.h>

#include "base/buf.h"
#include "codec/query_plan.h"

/* Appends the condition over the columns id, tags, desired and reported
 * of the twins table, named t, to sql: "1" when no term can be rendered. */
void sqlite_query_where(const struct query_plan *plan, struct buf *sql);

/* Appends a condition that holds only for twins that match the query
 * (sufficient: "0" when the plan is not complete, or a term cannot be
 * stated exactly; then query_matches decides). A row for which both hold
 * needs no further check. */
void sqlite_query_sure(const struct query_plan *plan, struct buf *sql);

/* Appends the statement that computes an aggregable plan's groups over the
 * twins of hub ?1 for which sqlite_query_sure holds: columns key (JSON text,
 * or NULL for undefined and for no GROUP BY; one value may have several
 * spellings, 1 and 1.0), count(*), then per
 * aggs[i] count, total, min and max of its path's numbers (0, 0, NULL,
 * NULL for COUNT() and the GROUP BY path). False (nothing appended) when
 * the plan is not aggregable here. */
bool sqlite_query_aggregate(const struct query_plan *plan, struct buf *sql);

/* Appends the expression an index on path p is built on, the one the
 * conditions above use for it; false when p cannot be indexed (the device
 * id is the key already; a name SQLite's JSON path cannot spell). */
bool sqlite_query_index_expr(const struct qp_path *p, struct buf *sql);

/* The statement store_twin_query runs for plan over hub (?1) from id ?2:
 * the loose condition, the sure one as its second column, and an index
 * hint when a range on an indexed path holds few twins (a probe of t's
 * snapshot says). Exposed so that tests can ask SQLite for its plan. */
struct store_txn;
void sqlite_twin_query_sql(struct store_txn *t, const char *hub, const struct query_plan *plan,
			   bool unsure_only, struct buf *sql);

#endif
