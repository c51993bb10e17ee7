/* Query semantics over one JSON document: see query_eval.h. */
#include "core/query_eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum vk { V_UNDEF, V_NULL, V_BOOL, V_NUM, V_STR, V_JSON };

struct val {
	enum vk k;
	bool b;
	double n;
	const char *s; /* V_STR: borrowed from the tree, the document or owned */
	size_t len;
	const json_t *j; /* V_JSON: an object or array of the document */
	char *owned;     /* LOWER/UPPER results */
};

static const struct val undef = {V_UNDEF, false, 0, NULL, 0, NULL, NULL};

static struct val boolean(bool b)
{
	struct val v = undef;
	v.k = V_BOOL;
	v.b = b;
	return v;
}

static void release(struct val *v)
{
	free(v->owned);
	v->owned = NULL;
}

static struct val from_json(const json_t *j)
{
	struct val v = undef;
	if (!j)
		return v;
	switch (json_typeof(j)) {
	case JSON_NULL: v.k = V_NULL; break;
	case JSON_TRUE: return boolean(true);
	case JSON_FALSE: return boolean(false);
	case JSON_INTEGER: v.k = V_NUM; v.n = (double)json_integer_value(j); break;
	case JSON_REAL: v.k = V_NUM; v.n = json_real_value(j); break;
	case JSON_STRING:
		v.k = V_STR;
		v.s = json_string_value(j);
		v.len = json_string_length(j);
		break;
	default: v.k = V_JSON; v.j = j; break;
	}
	return v;
}

static bool primitive(const struct val *v)
{
	return v->k == V_NULL || v->k == V_BOOL || v->k == V_NUM || v->k == V_STR;
}

/* <0, 0, >0, or 2 when a and b cannot be ordered (other types); eq_only:
 * booleans and nulls compare for (in)equality only. */
static int compare(const struct val *a, const struct val *b, bool *eq_only)
{
	*eq_only = false;
	if (a->k != b->k || !primitive(a))
		return 2;
	switch (a->k) {
	case V_NUM: return a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
	case V_STR: {
		size_t m = a->len < b->len ? a->len : b->len;
		int c = memcmp(a->s, b->s, m);
		return c ? (c < 0 ? -1 : 1) : a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
	}
	case V_BOOL: *eq_only = true; return a->b == b->b ? 0 : 1;
	default: *eq_only = true; return 0; /* null = null */
	}
}

static bool equal(const struct val *a, const struct val *b)
{
	bool eq_only;
	return compare(a, b, &eq_only) == 0;
}

static struct val eval(const struct query_node *n, const json_t *doc);

static struct val logic(const struct query_node *n, const json_t *doc)
{
	struct val a = eval(n->a, doc);
	bool at = a.k == V_BOOL && a.b, af = a.k == V_BOOL && !a.b;
	release(&a);
	if (n->op == QO_AND && af)
		return boolean(false);
	if (n->op == QO_OR && at)
		return boolean(true);
	struct val b = eval(n->b, doc);
	bool bt = b.k == V_BOOL && b.b, bf = b.k == V_BOOL && !b.b;
	release(&b);
	if (n->op == QO_AND)
		return bf ? boolean(false) : at && bt ? boolean(true) : undef;
	return bt ? boolean(true) : af && bf ? boolean(false) : undef;
}

static struct val binary(const struct query_node *n, const json_t *doc)
{
	if (n->op == QO_AND || n->op == QO_OR)
		return logic(n, doc);
	struct val a = eval(n->a, doc), b = eval(n->b, doc), r = undef;
	if (n->op <= QO_GE) {
		bool eq_only;
		int c = compare(&a, &b, &eq_only);
		if (c != 2 && (!eq_only || n->op == QO_EQ || n->op == QO_NE)) {
			switch (n->op) {
			case QO_EQ: r = boolean(c == 0); break;
			case QO_NE: r = boolean(c != 0); break;
			case QO_LT: r = boolean(c < 0); break;
			case QO_GT: r = boolean(c > 0); break;
			case QO_LE: r = boolean(c <= 0); break;
			default: r = boolean(c >= 0); break;
			}
		}
	} else if (a.k == V_NUM && b.k == V_NUM) {
		r.k = V_NUM;
		switch (n->op) {
		case QO_ADD: r.n = a.n + b.n; break;
		case QO_SUB: r.n = a.n - b.n; break;
		case QO_MUL: r.n = a.n * b.n; break;
		case QO_DIV: r.n = a.n / b.n; break;
		default: r.n = fmod(a.n, b.n); break;
		}
		if ((n->op == QO_DIV || n->op == QO_MOD) && b.n == 0)
			r = undef;
		else if (!isfinite(r.n))
			r = undef;
	}
	release(&a);
	release(&b);
	return r;
}

static struct val in(const struct query_node *n, const json_t *doc)
{
	struct val v = eval(n->a, doc);
	struct val r = undef;
	if (primitive(&v)) {
		bool found = false;
		for (size_t i = 0; i < n->b->nargs && !found; i++) {
			struct val e = eval(n->b->args[i], doc);
			found = equal(&v, &e);
			release(&e);
		}
		r = boolean(n->kind == QN_IN ? found : !found);
	}
	release(&v);
	return r;
}

static struct val call(const struct query_node *n, const json_t *doc)
{
	struct val a = eval(n->args[0], doc), r = undef;
	switch (n->fn) {
	case QF_IS_DEFINED: r = boolean(a.k != V_UNDEF); break;
	case QF_IS_NULL: r = boolean(a.k == V_NULL); break;
	case QF_IS_STRING: r = boolean(a.k == V_STR); break;
	case QF_IS_NUMBER: r = boolean(a.k == V_NUM); break;
	case QF_IS_BOOL: r = boolean(a.k == V_BOOL); break;
	case QF_IS_OBJECT: r = boolean(a.k == V_JSON && json_is_object(a.j)); break;
	case QF_IS_PRIMITIVE: r = boolean(primitive(&a)); break;
	case QF_LOWER:
	case QF_UPPER:
		if (a.k == V_STR) {
			r.k = V_STR;
			r.owned = malloc(a.len + 1);
			if (!r.owned)
				abort();
			for (size_t i = 0; i < a.len; i++) {
				char c = a.s[i];
				if (n->fn == QF_LOWER && c >= 'A' && c <= 'Z')
					c = (char)(c - 'A' + 'a');
				else if (n->fn == QF_UPPER && c >= 'a' && c <= 'z')
					c = (char)(c - 'a' + 'A');
				r.owned[i] = c;
			}
			r.owned[a.len] = '\0';
			r.s = r.owned;
			r.len = a.len;
		}
		break;
	default: { /* STARTSWITH, ENDSWITH, CONTAINS */
		struct val b = eval(n->args[1], doc);
		if (a.k == V_STR && b.k == V_STR) {
			bool hit;
			if (b.len > a.len)
				hit = false;
			else if (n->fn == QF_STARTSWITH)
				hit = memcmp(a.s, b.s, b.len) == 0;
			else if (n->fn == QF_ENDSWITH)
				hit = memcmp(a.s + a.len - b.len, b.s, b.len) == 0;
			else
				hit = b.len == 0 || memmem(a.s, a.len, b.s, b.len) != NULL;
			r = boolean(hit);
		}
		release(&b);
	}
	}
	release(&a);
	return r;
}

static struct val eval(const struct query_node *n, const json_t *doc)
{
	struct val v = undef;
	switch (n->kind) {
	case QN_NUMBER: v.k = V_NUM; v.n = n->num; return v;
	case QN_STRING: v.k = V_STR; v.s = n->str; v.len = n->len; return v;
	case QN_BOOL: return boolean(n->boolean);
	case QN_NULL: v.k = V_NULL; return v;
	case QN_UNDEFINED:
	case QN_ARRAY: return undef;
	case QN_PATH: {
		const json_t *j = doc;
		for (size_t i = 0; i < n->nseg && j; i++)
			j = json_is_object(j) ? json_object_getn(j, n->seg[i].name, n->seg[i].len)
					      : NULL;
		return from_json(j);
	}
	case QN_NOT: {
		struct val a = eval(n->a, doc);
		v = a.k == V_BOOL ? boolean(!a.b) : undef;
		release(&a);
		return v;
	}
	case QN_NEG: {
		struct val a = eval(n->a, doc);
		if (a.k == V_NUM) {
			v.k = V_NUM;
			v.n = -a.n;
		}
		release(&a);
		return v;
	}
	case QN_BINARY: return binary(n, doc);
	case QN_IN:
	case QN_NIN: return in(n, doc);
	case QN_CALL: return call(n, doc);
	}
	return undef;
}

bool query_matches(const struct query_node *cond, const json_t *doc)
{
	if (!cond)
		return true;
	struct val v = eval(cond, doc);
	bool yes = v.k == V_BOOL && v.b;
	release(&v);
	return yes;
}

json_t *query_value(const struct query_node *expr, const json_t *doc)
{
	struct val v = eval(expr, doc);
	json_t *j = NULL;
	switch (v.k) {
	case V_UNDEF: break;
	case V_NULL: j = json_null(); break;
	case V_BOOL: j = json_boolean(v.b); break;
	case V_NUM:
		j = v.n == floor(v.n) && fabs(v.n) <= 9007199254740992.0 ? json_integer((json_int_t)v.n)
									     : json_real(v.n);
		break;
	case V_STR: j = json_stringn(v.s, v.len); break;
	case V_JSON: j = json_incref((json_t *)v.j); break;
	}
	release(&v);
	return j;
}
