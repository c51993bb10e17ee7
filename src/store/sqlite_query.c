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

static bool renderable(const struct qp_term *t)
{
	for (size_t i = 0; i < t->nseg; i++)
		if (!spellable_segment(&t->seg[i]))
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

static void append_operand(struct buf *sql, const struct qp_term *t)
{
	static const char *const column[] = {
	    [QP_DEVICE_ID] = "t.id",
	    [QP_TAGS] = "t.tags",
	    [QP_DESIRED] = "t.desired",
	    [QP_REPORTED] = "t.reported",
	};
	if (t->source == QP_DEVICE_ID) {
		buf_appends(sql, column[t->source]);
		return;
	}
	/* '$."a"."b"': the path in an SQL literal; ' is doubled there. */
	struct buf path = BUF_INIT;
	buf_appendc(&path, '$');
	for (size_t i = 0; i < t->nseg; i++) {
		buf_appends(&path, ".\"");
		buf_append(&path, t->seg[i].name, t->seg[i].len);
		buf_appendc(&path, '"');
	}
	buf_printf(sql, "json_extract(%s, ", column[t->source]);
	append_literal(sql, path.data, path.len);
	buf_appendc(sql, ')');
	buf_free(&path);
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
