/* The IoT Hub query language (protocol.md §8), parsed: pure, bounded, no
 * I/O. Text in, a syntax tree out, or an error naming the position and the
 * problem (what a 400 answer says).
 *
 *   SELECT [TOP n] * | item [AS alias], ...
 *   FROM devices | devices.modules | devices.jobs | name (for other APIs)
 *   [WHERE condition] [GROUP BY path]
 *
 * An item is an expression (usually a path) or an aggregate: COUNT(),
 * SUM(e), AVG(e), MIN(e), MAX(e). Expressions: paths (dotted, with
 * ['key'] brackets for keys with odd characters), constants (numbers,
 * 0x hex, strings in '' or "" with \' \" \\ \/ \b \f \n \r \t \uXXXX,
 * true, false, null, undefined), arrays [..] (after IN/NIN), unary - and
 * NOT, * / % + -, comparisons = != <> < > <= >=, IN / NIN, AND, OR,
 * parentheses, and the functions IS_DEFINED, IS_NULL, IS_STRING,
 * IS_NUMBER, IS_BOOL, IS_OBJECT, IS_PRIMITIVE, STARTSWITH, ENDSWITH,
 * CONTAINS, LOWER, UPPER. Keywords and function names are
 * case-insensitive; path segments are not.
 *
 * Bounds (checked before they are exceeded, whatever the input): text
 * QUERY_MAX_TEXT bytes, QUERY_MAX_NODES nodes, nesting QUERY_MAX_DEPTH
 * (parentheses, NOT, unary minus; a chain such as a + b + c is parsed in a
 * loop, so a tree may be as deep as it has nodes),
 * QUERY_MAX_SEGMENTS segments per path, QUERY_MAX_ITEMS select items, TOP
 * at most QUERY_MAX_TOP. Every node and string lives in the query's arena,
 * freed by query_free. */
#ifndef FH_CODEC_QUERY_H
#define FH_CODEC_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QUERY_MAX_TEXT 8192
#define QUERY_MAX_NODES 512
#define QUERY_MAX_DEPTH 32
#define QUERY_MAX_SEGMENTS 16
#define QUERY_MAX_ITEMS 32
#define QUERY_MAX_TOP 1000000

enum query_node_kind {
	QN_NUMBER,    /* num */
	QN_STRING,    /* str, len */
	QN_BOOL,      /* boolean */
	QN_NULL,
	QN_UNDEFINED,
	QN_ARRAY,     /* args[nargs]: constants */
	QN_PATH,      /* seg[nseg] */
	QN_NOT,       /* a */
	QN_NEG,       /* a */
	QN_BINARY,    /* op, a, b */
	QN_IN,        /* a IN args (an array node in b) */
	QN_NIN,       /* a NIN b */
	QN_CALL,      /* fn, args[nargs] */
};

enum query_op {
	QO_EQ, QO_NE, QO_LT, QO_GT, QO_LE, QO_GE, /* comparisons */
	QO_AND, QO_OR,
	QO_ADD, QO_SUB, QO_MUL, QO_DIV, QO_MOD,
};

enum query_fn {
	QF_IS_DEFINED, QF_IS_NULL, QF_IS_STRING, QF_IS_NUMBER, QF_IS_BOOL, QF_IS_OBJECT,
	QF_IS_PRIMITIVE, QF_STARTSWITH, QF_ENDSWITH, QF_CONTAINS, QF_LOWER, QF_UPPER,
};

struct query_segment {
	const char *name; /* NUL-terminated, in the arena */
	size_t len;
};

struct query_node {
	enum query_node_kind kind;
	size_t pos; /* where it starts in the text (0-based byte offset) */
	double num;
	bool boolean;
	const char *str; /* QN_STRING: decoded UTF-8, NUL-terminated */
	size_t len;
	enum query_op op;
	enum query_fn fn;
	struct query_node *a, *b;
	struct query_node **args;
	size_t nargs;
	struct query_segment *seg;
	size_t nseg;
};

enum query_agg { QA_NONE, QA_COUNT, QA_SUM, QA_AVG, QA_MIN, QA_MAX };

struct query_item {
	enum query_agg agg;
	struct query_node *expr; /* NULL for COUNT() */
	const char *alias;       /* NULL when none was given */
};

/* QFROM_OTHER: any other name, in from_name (the DPS's enrollments,
 * enrollmentGroups, registrations): the caller checks it. */
enum query_from { QFROM_DEVICES, QFROM_MODULES, QFROM_JOBS, QFROM_OTHER };

struct query {
	bool star;
	uint32_t top; /* 0 = no TOP */
	struct query_item items[QUERY_MAX_ITEMS];
	size_t nitems;
	bool aggregates; /* some item is an aggregate */
	enum query_from from;
	const char *from_name; /* the source as written, e.g. "devices.modules" */
	struct query_node *where;    /* or NULL */
	struct query_node *group_by; /* a QN_PATH, or NULL */
	void *arena;                 /* owned; query_free */
};

struct query_error {
	size_t pos;         /* byte offset of the problem */
	char message[200];  /* e.g. "expected FROM" */
};

/* Parses text[0..n). Returns 0 with *q filled (query_free it), or -1 with
 * *err filled and nothing to free. */
int query_parse(const char *text, size_t n, struct query *q, struct query_error *err);
void query_free(struct query *q);

#endif
