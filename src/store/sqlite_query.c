/* A device query's plan in SQLite's dialect: see sqlite_query.h. */
#include "store/sqlite_query.h"

#include <math.h>
#include <string.h>

static bool spellable_segment(const struct query_segment *s)
{
	return s->len > 0 && strlen(s->name) == s->len && !memchr(s->name, '"', s->len) &&
	       !memchr(s->name, '\\', s->len);
}

static bool renderable_value(const struct qp_value *v)
{
	switch (v->type) {
	case QP_STRING: return strlen(v->str) == v->len;
	case QP_NUMBER: return isfinite(v->num);
	case QP_BOOL: return true;
	}
	return false;
}

static bool spellable_path(const struct query_segment *seg, size_t nseg)
{
	for (size_t i = 0; i < nseg; i++)
		if (!spellable_segment(&seg[i]))
			return false;
	return true;
}

static bool renderable(const struct qp_term *t)
{
	if (!spellable_path(t->seg, t->nseg))
		return false;
	for (size_t i = 0; i < t->nvalues; i++)
		if (!renderable_value(&t->values[i]))
			return false;
	return t->nvalues > 0;
}

/* s as an SQL string literal: in quotes, each ' doubled. */
static void append_literal(struct buf *sql, const char *s, size_t n)
{
	buf_appendc(sql, '\'');
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\'')
			buf_appendc(sql, '\'');
		buf_appendc(sql, s[i]);
	}
	buf_appendc(sql, '\'');
}

/* A string or a boolean (numbers are bounds: append_term). */
static void append_value(struct buf *sql, const struct qp_value *v)
{
	if (v->type == QP_STRING)
		append_literal(sql, v->str, v->len);
	else
		buf_appends(sql, v->boolean ? "1" : "0");
}

static const char *const column[] = {
    [QP_DEVICE_ID] = "t.id",
    [QP_TAGS] = "t.tags",
    [QP_DESIRED] = "t.desired",
    [QP_REPORTED] = "t.reported",
};

/* The JSON path of seg as an SQL literal: '$."a"."b"' (' doubled). */
static void append_path(struct buf *sql, const struct query_segment *seg, size_t nseg)
{
	struct buf path = BUF_INIT;
	buf_appendc(&path, '$');
	for (size_t i = 0; i < nseg; i++) {
		buf_appends(&path, ".\"");
		buf_append(&path, seg[i].name, seg[i].len);
		buf_appendc(&path, '"');
	}
	append_literal(sql, path.data, path.len);
	buf_free(&path);
}

/* fn(column, path): the one spelling of a path's expression, so that an
 * expression index on it serves the condition (sqlite_query_index_sql). */
static void append_call(struct buf *sql, const char *fn, enum qp_source source,
			const struct query_segment *seg, size_t nseg)
{
	buf_printf(sql, "%s(%s, ", fn, column[source]);
	append_path(sql, seg, nseg);
	buf_appendc(sql, ')');
}

static void append_operand(struct buf *sql, const struct qp_term *t)
{
	if (t->source == QP_DEVICE_ID)
		buf_appends(sql, column[t->source]);
	else
		append_call(sql, "json_extract", t->source, t->seg, t->nseg);
}

/* Number bounds are widened by this much (relative, far more than an
 * ulp): SQLite reads decimals with its own conversion, which may differ
 * from strtod's in the last bit, and compares an integer with a real
 * exactly where the language compares doubles (9007199254740993 equals
 * 9007199254740992.0 there). Rows near a bound are selected and decided by
 * query_matches. */
static double slack(double x)
{
	return fmax(fabs(x) * 1e-12, 1e-300);
}

static void append_number_eq(struct buf *sql, const struct qp_term *t, double x)
{
	append_operand(sql, t);
	buf_printf(sql, " BETWEEN %.17g AND %.17g", x - slack(x), x + slack(x));
}

static void append_term(struct buf *sql, const struct qp_term *t)
{
	static const char *const op[] = {
	    [QO_EQ] = "=", [QO_LT] = "<", [QO_GT] = ">", [QO_LE] = "<=", [QO_GE] = ">=",
	};
	const struct qp_value *v = &t->values[0];
	if (v->type == QP_NUMBER) {
		if (t->in || t->op == QO_EQ) {
			buf_appendc(sql, '(');
			for (size_t i = 0; i < t->nvalues; i++) {
				if (i)
					buf_appends(sql, " OR ");
				append_number_eq(sql, t, t->values[i].num);
			}
			buf_appendc(sql, ')');
			return;
		}
		bool below = t->op == QO_LT || t->op == QO_LE;
		append_operand(sql, t);
		buf_printf(sql, " %s %.17g", op[t->op], below ? v->num + slack(v->num) : v->num - slack(v->num));
		return;
	}
	append_operand(sql, t);
	if (!t->in) {
		buf_printf(sql, " %s ", op[t->op]);
		append_value(sql, v);
		return;
	}
	buf_appends(sql, " IN (");
	for (size_t i = 0; i < t->nvalues; i++) {
		if (i)
			buf_appends(sql, ", ");
		append_value(sql, &t->values[i]);
	}
	buf_appendc(sql, ')');
}

/* ---- The sufficient condition (sqlite_query_sure) ----
 * Where the loose condition widens, this one narrows: types are checked
 * (json_type), number bounds move inwards by the slack, and number
 * equality holds only between integers (exact on both sides). A term it
 * cannot state exactly renders "0": its rows are decided by query_matches. */

static void append_type_is(struct buf *sql, const struct qp_term *t, const char *types)
{
	append_call(sql, "json_type", t->source, t->seg, t->nseg);
	buf_printf(sql, " IN (%s) AND ", types);
}

static bool exact_integer(double x)
{
	return x == floor(x) && fabs(x) <= 9007199254740992.0;
}

static void append_sure_term(struct buf *sql, const struct qp_term *t)
{
	static const char *const op[] = {
	    [QO_EQ] = "=", [QO_LT] = "<", [QO_GT] = ">", [QO_LE] = "<=", [QO_GE] = ">=",
	};
	const struct qp_value *v = &t->values[0];
	if (t->source == QP_DEVICE_ID && v->type != QP_STRING) {
		buf_appendc(sql, '0'); /* an id is a string: never equal to a number */
		return;
	}
	buf_appendc(sql, '(');
	if (v->type == QP_BOOL) {
		append_call(sql, "json_type", t->source, t->seg, t->nseg);
		buf_appends(sql, v->boolean ? " = 'true'" : " = 'false'");
	} else if (v->type == QP_STRING) {
		if (t->source != QP_DEVICE_ID)
			append_type_is(sql, t, "'text'");
		append_term(sql, t); /* strings compare exactly in both */
	} else if (t->in || t->op == QO_EQ) {
		append_type_is(sql, t, "'integer'");
		buf_appendc(sql, '(');
		size_t n = 0;
		for (size_t i = 0; i < t->nvalues; i++) {
			if (!exact_integer(t->values[i].num))
				continue;
			if (n++)
				buf_appends(sql, " OR ");
			append_operand(sql, t);
			buf_printf(sql, " = %.0f", t->values[i].num);
		}
		if (!n)
			buf_appendc(sql, '0');
		buf_appendc(sql, ')');
	} else {
		bool below = t->op == QO_LT || t->op == QO_LE;
		append_type_is(sql, t, "'integer', 'real'");
		append_operand(sql, t);
		buf_printf(sql, " %s %.17g", op[t->op],
			   below ? v->num - slack(v->num) : v->num + slack(v->num));
	}
	buf_appendc(sql, ')');
}

void sqlite_query_sure(const struct query_plan *plan, struct buf *sql)
{
	if (!plan->complete) {
		buf_appendc(sql, '0');
		return;
	}
	for (size_t i = 0; i < plan->nterms; i++) {
		if (!renderable(&plan->terms[i])) {
			buf_appendc(sql, '0');
			return;
		}
	}
	for (size_t i = 0; i < plan->nterms; i++) {
		if (i)
			buf_appends(sql, " AND ");
		append_sure_term(sql, &plan->terms[i]);
	}
	if (!plan->nterms)
		buf_appendc(sql, '1');
}

/* ---- Aggregates ---- */

/* A path's value when it is a number, else NULL. */
static void append_number(struct buf *sql, const struct qp_path *p)
{
	if (p->source == QP_DEVICE_ID) {
		buf_appends(sql, "NULL");
		return;
	}
	buf_appends(sql, "CASE WHEN ");
	append_call(sql, "json_type", p->source, p->seg, p->nseg);
	buf_appends(sql, " IN ('integer', 'real') THEN ");
	append_call(sql, "json_extract", p->source, p->seg, p->nseg);
	buf_appends(sql, " END");
}

bool sqlite_query_aggregate(const struct query_plan *plan, struct buf *sql)
{
	if (!plan->aggregable || (plan->grouped && !spellable_path(plan->group.seg, plan->group.nseg)))
		return false;
	for (size_t i = 0; i < plan->naggs; i++) {
		const struct qp_aggregate *a = &plan->aggs[i];
		if (a->agg != QA_NONE && !a->whole && !spellable_path(a->path.seg, a->path.nseg))
			return false;
	}
	buf_appends(sql, "SELECT ");
	const struct qp_path *g = &plan->group;
	if (!plan->grouped)
		buf_appends(sql, "NULL");
	else if (g->source == QP_DEVICE_ID)
		buf_appends(sql, "json_quote(t.id)");
	else {
		/* The value's JSON text, NULL when undefined: one JSON read a
		 * row. Spellings of one value (1 and 1.0, keys in another order)
		 * are merged by the caller. */
		buf_printf(sql, "%s -> ", column[g->source]);
		append_path(sql, g->seg, g->nseg);
	}
	buf_appends(sql, ", count(*)");
	for (size_t i = 0; i < plan->naggs; i++) {
		const struct qp_aggregate *a = &plan->aggs[i];
		if (a->agg == QA_NONE || a->whole) {
			buf_appends(sql, ", 0, 0, NULL, NULL");
			continue;
		}
		static const char *const fn[] = {"count", "total", "min", "max"};
		for (size_t k = 0; k < 4; k++) {
			buf_printf(sql, ", %s(", fn[k]);
			append_number(sql, &a->path);
			buf_appendc(sql, ')');
		}
	}
	buf_appends(sql, " FROM twins t WHERE t.hub = ?1 AND (");
	sqlite_query_sure(plan, sql);
	buf_appendc(sql, ')');
	if (plan->grouped)
		buf_appends(sql, " GROUP BY 1");
	return true;
}

void sqlite_query_where(const struct query_plan *plan, struct buf *sql)
{
	size_t rendered = 0;
	for (size_t i = 0; i < plan->nterms; i++) {
		if (!renderable(&plan->terms[i]))
			continue;
		if (rendered++)
			buf_appends(sql, " AND ");
		append_term(sql, &plan->terms[i]);
	}
	if (!rendered)
		buf_appendc(sql, '1');
}

bool sqlite_query_index_expr(const struct qp_path *p, struct buf *sql)
{
	if (p->source == QP_DEVICE_ID || !spellable_path(p->seg, p->nseg))
		return false;
	/* As append_call spells it, without the table's name (SQLite matches
	 * an indexed expression by its columns). */
	buf_printf(sql, "json_extract(%s, ", column[p->source] + 2);
	append_path(sql, p->seg, p->nseg);
	buf_appendc(sql, ')');
	return true;
}
