/* A device query's plan: see query_plan.h. */
#include "codec/query_plan.h"

#include <string.h>

static bool seg_is(const struct query_segment *s, const char *name)
{
	return s->len == strlen(name) && memcmp(s->name, name, s->len) == 0;
}

bool query_plan_source(const struct query_node *path, enum qp_source *source,
                       const struct query_segment **seg, size_t *nseg)
{
	if (!path || path->kind != QN_PATH || path->nseg == 0)
		return false;
	const struct query_segment *s = path->seg;
	size_t n = path->nseg, skip;
	if (n == 1 && seg_is(&s[0], "deviceId")) {
		*source = QP_DEVICE_ID;
		skip = 1;
	} else if (n >= 2 && seg_is(&s[0], "tags")) {
		*source = QP_TAGS;
		skip = 1;
	} else if (n >= 3 && seg_is(&s[0], "properties") && seg_is(&s[1], "desired")) {
		*source = QP_DESIRED;
		skip = 2;
	} else if (n >= 3 && seg_is(&s[0], "properties") && seg_is(&s[1], "reported")) {
		*source = QP_REPORTED;
		skip = 2;
	} else {
		return false;
	}
	/* $metadata and $version live beside the document, not in it. */
	if (*source != QP_TAGS && n > skip && s[skip].len > 0 && s[skip].name[0] == '$')
		return false;
	*seg = s + skip;
	*nseg = n - skip;
	return true;
}

static bool constant(const struct query_node *n, struct qp_value *v)
{
	memset(v, 0, sizeof *v);
	switch (n->kind) {
	case QN_STRING:
		v->type = QP_STRING;
		v->str = n->str;
		v->len = n->len;
		return true;
	case QN_NUMBER:
		v->type = QP_NUMBER;
		v->num = n->num;
		return true;
	case QN_BOOL:
		v->type = QP_BOOL;
		v->boolean = n->boolean;
		return true;
	default: return false; /* null, undefined, arrays: evaluated per row */
	}
}

/* The operator with its operands swapped: 3 < x is x > 3. */
static enum query_op mirrored(enum query_op op)
{
	switch (op) {
	case QO_LT: return QO_GT;
	case QO_GT: return QO_LT;
	case QO_LE: return QO_GE;
	case QO_GE: return QO_LE;
	default: return op;
	}
}

static bool comparison_term(const struct query_node *c, struct qp_term *t)
{
	if (c->op != QO_EQ && c->op != QO_LT && c->op != QO_GT && c->op != QO_LE && c->op != QO_GE)
		return false;
	const struct query_node *path = c->a, *value = c->b;
	t->op = c->op;
	if (path->kind != QN_PATH) {
		path = c->b;
		value = c->a;
		t->op = mirrored(c->op);
	}
	if (!query_plan_source(path, &t->source, &t->seg, &t->nseg) ||
	    !constant(value, &t->values[0]))
		return false;
	/* A range over booleans narrows nothing worth an index. */
	if (t->op != QO_EQ && t->values[0].type == QP_BOOL)
		return false;
	t->nvalues = 1;
	return true;
}

static bool in_term(const struct query_node *c, struct qp_term *t)
{
	const struct query_node *arr = c->b;
	if (!arr || arr->kind != QN_ARRAY || arr->nargs == 0 || arr->nargs > QUERY_PLAN_MAX_IN ||
	    !query_plan_source(c->a, &t->source, &t->seg, &t->nseg))
		return false;
	for (size_t i = 0; i < arr->nargs; i++) {
		if (!constant(arr->args[i], &t->values[i]) || t->values[i].type == QP_BOOL ||
		    t->values[i].type != t->values[0].type)
			return false;
	}
	t->in = true;
	t->op = QO_EQ;
	t->nvalues = arr->nargs;
	return true;
}

/* Adds the terms of cond, a condition every matching row satisfies;
 * clears plan->complete for a part of it that is not a term. */
static void collect(const struct query_node *cond, struct query_plan *plan)
{
	if (!cond)
		return;
	if (plan->nterms == QUERY_PLAN_MAX_TERMS) {
		plan->complete = false;
		return;
	}
	if (cond->kind == QN_BINARY && cond->op == QO_AND) {
		collect(cond->a, plan);
		collect(cond->b, plan);
		return;
	}
	struct qp_term *t = &plan->terms[plan->nterms];
	memset(t, 0, sizeof *t);
	bool ok = (cond->kind == QN_BINARY && comparison_term(cond, t)) ||
	          (cond->kind == QN_IN && in_term(cond, t));
	if (ok)
		plan->nterms++;
	else
		plan->complete = false;
}

static bool path_of(const struct query_node *n, struct qp_path *p)
{
	return query_plan_source(n, &p->source, &p->seg, &p->nseg);
}

/* The aggregate part of the plan (see query_plan.h). */
static void plan_aggregates(const struct query *q, struct query_plan *plan)
{
	plan->grouped = q->group_by != NULL;
	plan->aggregable = !plan->grouped || path_of(q->group_by, &plan->group);
	plan->naggs = q->nitems;
	for (size_t i = 0; i < q->nitems; i++) {
		struct qp_aggregate *a = &plan->aggs[i];
		a->agg = q->items[i].agg;
		a->whole = q->items[i].expr == NULL;
		if (a->agg != QA_NONE && !a->whole && !path_of(q->items[i].expr, &a->path))
			plan->aggregable = false;
	}
}

void query_plan_build(const struct query *q, struct query_plan *plan)
{
	memset(plan, 0, sizeof *plan);
	plan->empty = q->from != QFROM_DEVICES;
	plan->complete = true;
	if (!plan->empty)
		collect(q->where, plan);
	if (q->aggregates || q->group_by)
		plan_aggregates(q, plan);
}
