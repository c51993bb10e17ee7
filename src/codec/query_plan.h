/* A device query's plan: what a store needs to narrow its scan, in
 * backend-neutral words. Pure: no store, no SQL, no I/O.
 *
 * A twin query is answered in two steps. The store selects candidate
 * twins by the plan's terms, which its own SQL dialect renders (json_extract
 * in SQLite, jsonb operators in PostgreSQL) and its indexes serve; then
 * every candidate is checked with query_matches (core/query_eval.h), which
 * alone decides. The terms are therefore a necessary condition, never a
 * sufficient one: a store may render a term loosely (SQLite compares 1 with
 * true, or a string with a number by type order) or not at all, and the
 * answer stays exact. A term is taken only from a conjunct that must hold
 * for a row to match: a top-level AND chain of the WHERE, never below OR
 * or NOT.
 *
 * A term is a path, an operator and constants:
 *   source . sub-path  op  value        (=, <, >, <=, >=)
 *   source . sub-path  IN  [values]     (all strings or all numbers)
 * where the source is the twin's device id or one of its three property
 * documents (tags, properties.desired, properties.reported) and the
 * sub-path names a value inside it ($metadata and $version are not
 * taken: they are evaluated per row). */
#ifndef FH_CODEC_QUERY_PLAN_H
#define FH_CODEC_QUERY_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "codec/query.h"

#define QUERY_PLAN_MAX_TERMS 8

enum qp_source {
	QP_DEVICE_ID, /* deviceId; no sub-path */
	QP_TAGS,      /* tags.<sub-path> */
	QP_DESIRED,   /* properties.desired.<sub-path> */
	QP_REPORTED,  /* properties.reported.<sub-path> */
};

enum qp_type { QP_STRING, QP_NUMBER, QP_BOOL };

struct qp_value {
	enum qp_type type;
	const char *str; /* QP_STRING: the query's decoded string */
	size_t len;
	double num;   /* QP_NUMBER */
	bool boolean; /* QP_BOOL */
};

#define QUERY_PLAN_MAX_IN 32

struct qp_term {
	enum qp_source source;
	const struct query_segment *seg; /* the sub-path, into the query */
	size_t nseg;
	bool in;          /* IN: values[0..nvalues) ; else op with values[0] */
	enum query_op op; /* QO_EQ, QO_LT, QO_GT, QO_LE or QO_GE */
	struct qp_value values[QUERY_PLAN_MAX_IN];
	size_t nvalues;
};

/* A path a store can read in one expression: the device id, or a value
 * inside one of the three documents. */
struct qp_path {
	enum qp_source source;
	const struct query_segment *seg;
	size_t nseg;
};

/* An aggregate of SELECT: COUNT() (whole: no path) or SUM, AVG, MIN, MAX
 * of a path. */
struct qp_aggregate {
	enum query_agg agg;
	bool whole;
	struct qp_path path;
};

struct query_plan {
	bool empty; /* the source has no rows (FROM devices.modules for now) */
	struct qp_term terms[QUERY_PLAN_MAX_TERMS];
	size_t nterms;
	/* The WHERE is exactly the AND of the terms (or there is none): a row
	 * for which every term holds as the query language says matches, and
	 * a store that can tell so for a row may skip query_matches. */
	bool complete;
	/* For aggregate queries: a store can compute them itself when
	 * aggregable (GROUP BY absent or a path, every aggregate COUNT() or
	 * over a path); aggs[i] is items[i]'s (agg QA_NONE for the GROUP BY
	 * path itself). */
	bool aggregable;
	bool grouped;
	struct qp_path group;
	struct qp_aggregate aggs[QUERY_MAX_ITEMS];
	size_t naggs;
};

/* Plans q, a parsed FROM devices or FROM devices.modules query. The plan
 * points into q: it lives no longer than q. */
void query_plan_build(const struct query *q, struct query_plan *plan);

/* The source and sub-path of a twin path, or false when the path is not
 * one a term (or a qp_path) can name. */
bool query_plan_source(const struct query_node *path, enum qp_source *source,
                       const struct query_segment **seg, size_t *nseg);

#endif
