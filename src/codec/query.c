/* The IoT Hub query language: a lexer and a recursive-descent parser (see
 * query.h for the grammar and the bounds).
 *
 *   query := SELECT [TOP n] ('*' | item (',' item)*) FROM source
 *            [WHERE expr] [GROUP BY path] end
 *   item  := AGG '(' [expr] ')' [AS name] | expr [AS name]
 *   expr  := and (OR and)*            and := not (AND not)*
 *   not   := NOT not | cmp            cmp := sum [cmpop sum | (IN|NIN) array]
 *   sum   := prod ((+|-) prod)*       prod := unary ((*|/|%) unary)*
 *   unary := '-' unary | primary
 *   primary := number | string | true | false | null | undefined
 *            | '(' expr ')' | FN '(' [expr (',' expr)*] ')' | path
 *   path  := name ('.' name | '[' string ']')*
 *
 * Errors stop at the first problem and say where it is. Nothing is
 * allocated outside the arena, and the arena is bounded by the node and
 * text limits. */
#include "codec/query.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/enc.h"

/* ---- arena ---- */

struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	max_align_t data[];
};

static void *arena_alloc(void **arena, size_t n)
{
	n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
	struct arena_block *b = *arena;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > 16384 ? n : 16384;
		struct arena_block *nb = malloc(sizeof *nb + cap);
		if (!nb)
			abort();
		nb->next = b;
		nb->used = 0;
		nb->cap = cap;
		*arena = b = nb;
	}
	void *p = (char *)b->data + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

static void arena_free(void *arena)
{
	for (struct arena_block *b = arena, *next; b; b = next) {
		next = b->next;
		free(b);
	}
}

/* ---- lexer ---- */

enum tok {
	T_END, T_NAME, T_NUMBER, T_STRING, T_LPAREN, T_RPAREN, T_LBRACK, T_RBRACK, T_COMMA,
	T_DOT, T_STAR, T_PLUS, T_MINUS, T_SLASH, T_PERCENT, T_EQ, T_NE, T_LT, T_GT, T_LE, T_GE,
	T_BAD,
};

struct parser {
	const char *s;
	size_t n, i;
	/* the current token */
	enum tok t;
	size_t pos, len; /* its text: s[pos..pos+len) */
	double num;
	char *str; /* T_STRING: decoded, in the arena */
	size_t slen;
	/* state */
	struct query *q;
	size_t nodes;
	unsigned depth;
	bool failed;
	struct query_error *err;
};

static void fail(struct parser *p, size_t pos, const char *fmt, const char *arg)
{
	if (p->failed)
		return;
	p->failed = true;
	p->err->pos = pos;
	char msg[160];
	snprintf(msg, sizeof msg, fmt, arg ? arg : "");
	snprintf(p->err->message, sizeof p->err->message, "at %zu: %s", pos, msg);
}

static bool name_char(char c, bool first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$' ||
	       (!first && c >= '0' && c <= '9');
}

/* Appends code point cp as UTF-8. */
static size_t put_utf8(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	out[0] = (char)(0xe0 | (cp >> 12));
	out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[2] = (char)(0x80 | (cp & 0x3f));
	return 3;
}

static void lex_string(struct parser *p)
{
	char quote = p->s[p->i];
	size_t start = p->i++;
	/* decoded text is never longer than the source */
	char *out = arena_alloc(&p->q->arena, p->n - p->i + 1);
	size_t o = 0;
	while (p->i < p->n && p->s[p->i] != quote) {
		char c = p->s[p->i++];
		if (c != '\\') {
			out[o++] = c;
			continue;
		}
		if (p->i >= p->n)
			break;
		char e = p->s[p->i++];
		switch (e) {
		case '\'': case '"': case '\\': case '/': out[o++] = e; break;
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'u': {
			unsigned cp = 0;
			for (int k = 0; k < 4; k++) {
				int h = p->i < p->n ? hex_value(p->s[p->i]) : -1;
				if (h < 0) {
					fail(p, p->i, "bad \\u escape in a string%s", NULL);
					p->t = T_BAD;
					return;
				}
				cp = cp * 16 + (unsigned)h;
				p->i++;
			}
			if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff)) {
				fail(p, p->i - 6, "\\u escape of a NUL or a surrogate%s", NULL);
				p->t = T_BAD;
				return;
			}
			o += put_utf8(out + o, cp); /* at most 3 bytes for 6 of source */
			break;
		}
		default:
			fail(p, p->i - 2, "unknown escape in a string%s", NULL);
			p->t = T_BAD;
			return;
		}
	}
	if (p->i >= p->n) {
		fail(p, start, "string not closed%s", NULL);
		p->t = T_BAD;
		return;
	}
	p->i++; /* the closing quote */
	out[o] = '\0';
	if (memchr(out, '\0', o)) {
		fail(p, start, "NUL in a string%s", NULL);
		p->t = T_BAD;
		return;
	}
	p->t = T_STRING;
	p->str = out;
	p->slen = o;
}

static void lex_number(struct parser *p)
{
	size_t start = p->i;
	char buf[64];
	if (p->s[p->i] == '0' && p->i + 1 < p->n && (p->s[p->i + 1] == 'x' || p->s[p->i + 1] == 'X')) {
		p->i += 2;
		double v = 0;
		size_t digits = 0;
		while (p->i < p->n && hex_value(p->s[p->i]) >= 0 && digits < 16) {
			v = v * 16 + hex_value(p->s[p->i++]);
			digits++;
		}
		if (digits == 0 || (p->i < p->n && name_char(p->s[p->i], false))) {
			fail(p, start, "bad hexadecimal number%s", NULL);
			p->t = T_BAD;
			return;
		}
		p->t = T_NUMBER;
		p->num = v;
		return;
	}
	while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
		p->i++;
	if (p->i < p->n && p->s[p->i] == '.') {
		p->i++;
		while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
			p->i++;
	}
	if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
		p->i++;
		if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
			p->i++;
		size_t d = p->i;
		while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
			p->i++;
		if (d == p->i) {
			fail(p, start, "bad number%s", NULL);
			p->t = T_BAD;
			return;
		}
	}
	size_t len = p->i - start;
	if (len >= sizeof buf || (p->i < p->n && name_char(p->s[p->i], false))) {
		fail(p, start, "bad number%s", NULL);
		p->t = T_BAD;
		return;
	}
	memcpy(buf, p->s + start, len);
	buf[len] = '\0';
	p->num = strtod(buf, NULL);
	if (!isfinite(p->num)) {
		fail(p, start, "number out of range%s", NULL);
		p->t = T_BAD;
		return;
	}
	p->t = T_NUMBER;
}

/* Reads the next token into p. */
static void next(struct parser *p)
{
	while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
			       p->s[p->i] == '\r'))
		p->i++;
	p->pos = p->i;
	if (p->failed) {
		p->t = T_BAD;
		return;
	}
	if (p->i >= p->n) {
		p->t = T_END;
		p->len = 0;
		return;
	}
	char c = p->s[p->i];
	char d = p->i + 1 < p->n ? p->s[p->i + 1] : '\0';
	if (name_char(c, true)) {
		while (p->i < p->n && name_char(p->s[p->i], false))
			p->i++;
		p->t = T_NAME;
	} else if ((c >= '0' && c <= '9') || (c == '.' && d >= '0' && d <= '9')) {
		lex_number(p);
	} else if (c == '\'' || c == '"') {
		lex_string(p);
	} else {
		static const struct {
			const char *text;
			enum tok t;
		} ops[] = {{"<=", T_LE}, {">=", T_GE}, {"<>", T_NE}, {"!=", T_NE}, {"(", T_LPAREN},
			   {")", T_RPAREN}, {"[", T_LBRACK}, {"]", T_RBRACK}, {",", T_COMMA},
			   {".", T_DOT}, {"*", T_STAR}, {"+", T_PLUS}, {"-", T_MINUS},
			   {"/", T_SLASH}, {"%", T_PERCENT}, {"=", T_EQ}, {"<", T_LT}, {">", T_GT}};
		p->t = T_BAD;
		for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
			size_t l = strlen(ops[k].text);
			if (p->n - p->i >= l && memcmp(p->s + p->i, ops[k].text, l) == 0) {
				p->t = ops[k].t;
				p->i += l;
				break;
			}
		}
		if (p->t == T_BAD) {
			char ch[8];
			snprintf(ch, sizeof ch, (unsigned char)c >= 0x20 && (unsigned char)c < 0x7f ? "'%c'" : "0x%02x", (unsigned char)c);
			fail(p, p->i, "unexpected character %s", ch);
		}
	}
	p->len = p->i - p->pos;
}

static bool is_kw(const struct parser *p, const char *kw)
{
	return p->t == T_NAME && p->len == strlen(kw) && strncasecmp(p->s + p->pos, kw, p->len) == 0;
}

static bool accept_kw(struct parser *p, const char *kw)
{
	if (!is_kw(p, kw))
		return false;
	next(p);
	return true;
}

static bool expect_kw(struct parser *p, const char *kw)
{
	if (accept_kw(p, kw))
		return true;
	fail(p, p->pos, "expected %s", kw);
	return false;
}

static bool expect(struct parser *p, enum tok t, const char *what)
{
	if (p->t == t) {
		next(p);
		return true;
	}
	fail(p, p->pos, "expected %s", what);
	return false;
}

static const char *const keywords[] = {"SELECT", "TOP", "FROM", "WHERE", "GROUP", "BY",
				       "AS", "AND", "OR", "NOT", "IN", "NIN"};

static bool reserved(const struct parser *p)
{
	for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++)
		if (is_kw(p, keywords[k]))
			return true;
	return false;
}

/* ---- nodes ---- */

static struct query_node *node(struct parser *p, enum query_node_kind kind, size_t pos)
{
	if (++p->nodes > QUERY_MAX_NODES) {
		fail(p, pos, "the query is too long (more than %s terms)", "512");
		return NULL;
	}
	struct query_node *nd = arena_alloc(&p->q->arena, sizeof *nd);
	nd->kind = kind;
	nd->pos = pos;
	return nd;
}

static char *copy_text(struct parser *p, const char *s, size_t n)
{
	char *c = arena_alloc(&p->q->arena, n + 1);
	memcpy(c, s, n);
	c[n] = '\0';
	return c;
}

static struct query_node *parse_expr(struct parser *p);

/* path := name ('.' name | '[' string ']')*; the current token is its
 * first name. */
static struct query_node *parse_path(struct parser *p)
{
	struct query_node *nd = node(p, QN_PATH, p->pos);
	if (!nd)
		return NULL;
	nd->seg = arena_alloc(&p->q->arena, QUERY_MAX_SEGMENTS * sizeof *nd->seg);
	for (bool first = true;; first = false) {
		if (nd->nseg == QUERY_MAX_SEGMENTS) {
			fail(p, p->pos, "a path has more than %s segments", "16");
			return NULL;
		}
		struct query_segment *sg = &nd->seg[nd->nseg];
		if (first || p->t == T_NAME) {
			sg->name = copy_text(p, p->s + p->pos, p->len);
			sg->len = p->len;
			next(p);
		} else if (p->t == T_STRING) {
			if (p->slen == 0) {
				fail(p, p->pos, "an empty key in a path%s", NULL);
				return NULL;
			}
			sg->name = p->str;
			sg->len = p->slen;
			next(p);
			if (!expect(p, T_RBRACK, "']'"))
				return NULL;
		} else {
			fail(p, p->pos, "expected a name in the path%s", NULL);
			return NULL;
		}
		nd->nseg++;
		if (p->t == T_DOT) {
			next(p);
			if (p->t != T_NAME) {
				fail(p, p->pos, "expected a name after '.'%s", NULL);
				return NULL;
			}
		} else if (p->t == T_LBRACK) {
			next(p);
			if (p->t != T_STRING) {
				fail(p, p->pos, "expected a quoted key after '['%s", NULL);
				return NULL;
			}
		} else {
			return nd;
		}
	}
}

static const struct {
	const char *name;
	enum query_fn fn;
	size_t nargs;
} functions[] = {
	{"IS_DEFINED", QF_IS_DEFINED, 1}, {"IS_NULL", QF_IS_NULL, 1},
	{"IS_STRING", QF_IS_STRING, 1},   {"IS_NUMBER", QF_IS_NUMBER, 1},
	{"IS_BOOL", QF_IS_BOOL, 1},       {"IS_OBJECT", QF_IS_OBJECT, 1},
	{"IS_PRIMITIVE", QF_IS_PRIMITIVE, 1}, {"STARTSWITH", QF_STARTSWITH, 2},
	{"ENDSWITH", QF_ENDSWITH, 2},     {"CONTAINS", QF_CONTAINS, 2},
	{"LOWER", QF_LOWER, 1},           {"UPPER", QF_UPPER, 1},
};

static const char *const aggregates[] = {"COUNT", "SUM", "AVG", "MIN", "MAX"};

/* A constant: number (with a sign), string, true, false, null. */
static struct query_node *parse_constant(struct parser *p)
{
	size_t pos = p->pos;
	bool neg = false;
	if (p->t == T_MINUS) {
		neg = true;
		next(p);
	}
	struct query_node *nd = NULL;
	if (p->t == T_NUMBER) {
		if ((nd = node(p, QN_NUMBER, pos)))
			nd->num = neg ? -p->num : p->num;
	} else if (!neg && p->t == T_STRING) {
		if ((nd = node(p, QN_STRING, pos))) {
			nd->str = p->str;
			nd->len = p->slen;
		}
	} else if (!neg && (is_kw(p, "true") || is_kw(p, "false"))) {
		if ((nd = node(p, QN_BOOL, pos)))
			nd->boolean = is_kw(p, "true");
	} else if (!neg && is_kw(p, "null")) {
		nd = node(p, QN_NULL, pos);
	} else {
		fail(p, p->pos, "expected a constant (number, string, true, false or null)%s", NULL);
		return NULL;
	}
	if (nd)
		next(p);
	return nd;
}

/* array := '[' [constant (',' constant)*] ']' */
static struct query_node *parse_array(struct parser *p)
{
	struct query_node *nd = node(p, QN_ARRAY, p->pos);
	if (!nd || !expect(p, T_LBRACK, "'[' after IN or NIN"))
		return NULL;
	struct query_node *items[QUERY_MAX_NODES];
	size_t n = 0;
	if (p->t != T_RBRACK) {
		for (;;) {
			struct query_node *c = parse_constant(p);
			if (!c)
				return NULL;
			items[n++] = c; /* n < QUERY_MAX_NODES: each took a node */
			if (p->t != T_COMMA)
				break;
			next(p);
		}
	}
	if (!expect(p, T_RBRACK, "',' or ']'"))
		return NULL;
	nd->args = arena_alloc(&p->q->arena, (n ? n : 1) * sizeof *nd->args);
	memcpy(nd->args, items, n * sizeof *items);
	nd->nargs = n;
	return nd;
}

static struct query_node *parse_primary(struct parser *p)
{
	size_t pos = p->pos;
	switch (p->t) {
	case T_NUMBER:
	case T_STRING:
		return parse_constant(p);
	case T_LPAREN: {
		next(p);
		struct query_node *e = parse_expr(p);
		if (e && !expect(p, T_RPAREN, "')'"))
			return NULL;
		return e;
	}
	case T_NAME:
		break;
	default:
		fail(p, pos, p->t == T_END ? "the query ends where a value is expected%s"
					   : "expected a value (a path, a constant or a function)%s",
		     NULL);
		return NULL;
	}
	if (is_kw(p, "true") || is_kw(p, "false") || is_kw(p, "null"))
		return parse_constant(p);
	if (is_kw(p, "undefined")) {
		next(p);
		return node(p, QN_UNDEFINED, pos);
	}
	/* a function? (a name followed by '(') */
	size_t save_i = p->i;
	while (save_i < p->n && (p->s[save_i] == ' ' || p->s[save_i] == '\t'))
		save_i++;
	if (save_i < p->n && p->s[save_i] == '(') {
		for (size_t k = 0; k < sizeof aggregates / sizeof aggregates[0]; k++)
			if (is_kw(p, aggregates[k])) {
				fail(p, pos, "%s is an aggregate: only in SELECT", aggregates[k]);
				return NULL;
			}
		for (size_t k = 0; k < sizeof functions / sizeof functions[0]; k++) {
			if (!is_kw(p, functions[k].name))
				continue;
			struct query_node *nd = node(p, QN_CALL, pos);
			if (!nd)
				return NULL;
			nd->fn = functions[k].fn;
			nd->args = arena_alloc(&p->q->arena, 2 * sizeof *nd->args);
			next(p);
			next(p); /* '(' */
			char what[64];
			snprintf(what, sizeof what, "%s: %s takes %s argument%s",
				 functions[k].nargs == 1 ? "')'" : "','", functions[k].name,
				 functions[k].nargs == 1 ? "one" : "two",
				 functions[k].nargs == 1 ? "" : "s");
			for (size_t a = 0; a < functions[k].nargs; a++) {
				if (a > 0 && !expect(p, T_COMMA, what))
					return NULL;
				if (!(nd->args[a] = parse_expr(p)))
					return NULL;
			}
			nd->nargs = functions[k].nargs;
			if (functions[k].nargs == 2)
				snprintf(what, sizeof what, "')': %s takes two arguments",
					 functions[k].name);
			if (!expect(p, T_RPAREN, what))
				return NULL;
			return nd;
		}
		char name[40];
		snprintf(name, sizeof name, "%.*s", (int)(p->len < 32 ? p->len : 32), p->s + p->pos);
		fail(p, pos, "unknown function %s", name);
		return NULL;
	}
	if (reserved(p)) {
		char name[16];
		snprintf(name, sizeof name, "%.*s", (int)p->len, p->s + p->pos);
		fail(p, pos, "expected a value, found the keyword %s", name);
		return NULL;
	}
	return parse_path(p);
}

static struct query_node *parse_unary(struct parser *p)
{
	if (p->t != T_MINUS)
		return parse_primary(p);
	size_t pos = p->pos;
	next(p);
	if (++p->depth > QUERY_MAX_DEPTH) {
		fail(p, pos, "nested too deep (more than %s levels)", "32");
		return NULL;
	}
	struct query_node *a = parse_unary(p);
	p->depth--;
	if (!a)
		return NULL;
	if (a->kind == QN_NUMBER && a->pos == pos + 1) {
		a->num = -a->num;
		a->pos = pos;
		return a;
	}
	struct query_node *nd = node(p, QN_NEG, pos);
	if (nd)
		nd->a = a;
	return nd;
}

static struct query_node *binary(struct parser *p, enum query_op op, size_t pos,
				 struct query_node *a, struct query_node *b)
{
	struct query_node *nd = node(p, QN_BINARY, pos);
	if (nd) {
		nd->op = op;
		nd->a = a;
		nd->b = b;
	}
	return nd;
}

static struct query_node *parse_prod(struct parser *p)
{
	struct query_node *a = parse_unary(p);
	while (a && (p->t == T_STAR || p->t == T_SLASH || p->t == T_PERCENT)) {
		enum query_op op = p->t == T_STAR ? QO_MUL : p->t == T_SLASH ? QO_DIV : QO_MOD;
		size_t pos = p->pos;
		next(p);
		struct query_node *b = parse_unary(p);
		a = b ? binary(p, op, pos, a, b) : NULL;
	}
	return a;
}

static struct query_node *parse_sum(struct parser *p)
{
	struct query_node *a = parse_prod(p);
	while (a && (p->t == T_PLUS || p->t == T_MINUS)) {
		enum query_op op = p->t == T_PLUS ? QO_ADD : QO_SUB;
		size_t pos = p->pos;
		next(p);
		struct query_node *b = parse_prod(p);
		a = b ? binary(p, op, pos, a, b) : NULL;
	}
	return a;
}

static struct query_node *parse_cmp(struct parser *p)
{
	struct query_node *a = parse_sum(p);
	if (!a)
		return NULL;
	static const struct {
		enum tok t;
		enum query_op op;
	} cmps[] = {{T_EQ, QO_EQ}, {T_NE, QO_NE}, {T_LT, QO_LT},
		    {T_GT, QO_GT}, {T_LE, QO_LE}, {T_GE, QO_GE}};
	for (size_t k = 0; k < sizeof cmps / sizeof cmps[0]; k++) {
		if (p->t != cmps[k].t)
			continue;
		size_t pos = p->pos;
		next(p);
		struct query_node *b = parse_sum(p);
		return b ? binary(p, cmps[k].op, pos, a, b) : NULL;
	}
	if (is_kw(p, "IN") || is_kw(p, "NIN")) {
		struct query_node *nd = node(p, is_kw(p, "IN") ? QN_IN : QN_NIN, p->pos);
		if (!nd)
			return NULL;
		next(p);
		nd->a = a;
		nd->b = parse_array(p);
		return nd->b ? nd : NULL;
	}
	return a;
}

static struct query_node *parse_not(struct parser *p)
{
	if (!is_kw(p, "NOT"))
		return parse_cmp(p);
	size_t pos = p->pos;
	next(p);
	if (++p->depth > QUERY_MAX_DEPTH) {
		fail(p, pos, "nested too deep (more than %s levels)", "32");
		return NULL;
	}
	struct query_node *a = parse_not(p);
	p->depth--;
	struct query_node *nd = a ? node(p, QN_NOT, pos) : NULL;
	if (nd)
		nd->a = a;
	return nd;
}

static struct query_node *parse_and(struct parser *p)
{
	struct query_node *a = parse_not(p);
	while (a && is_kw(p, "AND")) {
		size_t pos = p->pos;
		next(p);
		struct query_node *b = parse_not(p);
		a = b ? binary(p, QO_AND, pos, a, b) : NULL;
	}
	return a;
}

static struct query_node *parse_expr(struct parser *p)
{
	if (++p->depth > QUERY_MAX_DEPTH) {
		fail(p, p->pos, "nested too deep (more than %s levels)", "32");
		return NULL;
	}
	struct query_node *a = parse_and(p);
	while (a && is_kw(p, "OR")) {
		size_t pos = p->pos;
		next(p);
		struct query_node *b = parse_and(p);
		a = b ? binary(p, QO_OR, pos, a, b) : NULL;
	}
	p->depth--;
	return a;
}

/* ---- the statement ---- */

static bool parse_alias(struct parser *p, struct query_item *it)
{
	if (!accept_kw(p, "AS"))
		return true;
	if (p->t != T_NAME || reserved(p)) {
		fail(p, p->pos, "expected a name after AS%s", NULL);
		return false;
	}
	it->alias = copy_text(p, p->s + p->pos, p->len);
	next(p);
	return true;
}

static bool parse_item(struct parser *p, struct query_item *it)
{
	size_t pos = p->pos;
	for (size_t k = 0; k < sizeof aggregates / sizeof aggregates[0]; k++) {
		if (!is_kw(p, aggregates[k]))
			continue;
		size_t j = p->i;
		while (j < p->n && (p->s[j] == ' ' || p->s[j] == '\t'))
			j++;
		if (j >= p->n || p->s[j] != '(')
			break; /* a path named count, say */
		it->agg = (enum query_agg)(QA_COUNT + k);
		next(p);
		next(p); /* '(' */
		if (it->agg == QA_COUNT) {
			if (!expect(p, T_RPAREN, "')': COUNT() takes no argument"))
				return false;
		} else {
			if (!(it->expr = parse_expr(p)) || !expect(p, T_RPAREN, "')'"))
				return false;
		}
		p->q->aggregates = true;
		return parse_alias(p, it);
	}
	(void)pos;
	it->expr = parse_expr(p);
	return it->expr && parse_alias(p, it);
}

static bool same_path(const struct query_node *a, const struct query_node *b)
{
	if (!a || !b || a->kind != QN_PATH || b->kind != QN_PATH || a->nseg != b->nseg)
		return false;
	for (size_t i = 0; i < a->nseg; i++)
		if (a->seg[i].len != b->seg[i].len ||
		    memcmp(a->seg[i].name, b->seg[i].name, a->seg[i].len) != 0)
			return false;
	return true;
}

static bool parse_statement(struct parser *p)
{
	struct query *q = p->q;
	if (!expect_kw(p, "SELECT"))
		return false;
	if (accept_kw(p, "TOP")) {
		size_t pos = p->pos;
		if (p->t != T_NUMBER || p->num < 1 || p->num > QUERY_MAX_TOP ||
		    p->num != floor(p->num)) {
			fail(p, pos, "TOP takes a whole number from 1 to %s", "1000000");
			return false;
		}
		q->top = (uint32_t)p->num;
		next(p);
	}
	if (p->t == T_STAR) {
		q->star = true;
		next(p);
	} else {
		for (;;) {
			if (q->nitems == QUERY_MAX_ITEMS) {
				fail(p, p->pos, "more than %s items in SELECT", "32");
				return false;
			}
			if (!parse_item(p, &q->items[q->nitems++]))
				return false;
			if (p->t != T_COMMA)
				break;
			next(p);
		}
	}
	if (!expect_kw(p, "FROM"))
		return false;
	size_t from_pos = p->pos;
	if (p->t != T_NAME || reserved(p)) {
		fail(p, from_pos, "expected devices, devices.modules or devices.jobs after FROM%s",
		     NULL);
		return false;
	}
	q->from = is_kw(p, "devices") ? QFROM_DEVICES : QFROM_OTHER;
	size_t from_end = p->pos + p->len;
	next(p);
	if (q->from == QFROM_DEVICES && p->t == T_DOT) {
		next(p);
		if (is_kw(p, "modules"))
			q->from = QFROM_MODULES;
		else if (is_kw(p, "jobs"))
			q->from = QFROM_JOBS;
		else {
			fail(p, from_pos, "expected devices, devices.modules or devices.jobs after FROM%s",
			     NULL);
			return false;
		}
		from_end = p->pos + p->len;
		next(p);
	}
	q->from_name = copy_text(p, p->s + from_pos, from_end - from_pos);
	if (accept_kw(p, "WHERE") && !(q->where = parse_expr(p)))
		return false;
	if (accept_kw(p, "GROUP")) {
		if (!expect_kw(p, "BY"))
			return false;
		if (p->t != T_NAME || reserved(p)) {
			fail(p, p->pos, "expected a path after GROUP BY%s", NULL);
			return false;
		}
		if (!(q->group_by = parse_path(p)))
			return false;
	}
	if (p->t != T_END) {
		fail(p, p->pos, p->t == T_BAD ? "unexpected text%s" : "unexpected text after the query%s",
		     NULL);
		return false;
	}
	/* What the grammar allows but the language does not. */
	if (q->from == QFROM_JOBS && (!q->star || q->group_by)) {
		fail(p, from_pos, "devices.jobs takes SELECT * only%s", NULL);
		return false;
	}
	if (q->group_by && q->from != QFROM_DEVICES) {
		fail(p, q->group_by->pos, "GROUP BY is for device twins only%s", NULL);
		return false;
	}
	if (q->group_by && !q->aggregates) {
		fail(p, q->group_by->pos, "GROUP BY needs an aggregate (COUNT(), SUM, ...) in SELECT%s",
		     NULL);
		return false;
	}
	for (size_t i = 0; i < q->nitems; i++) {
		const struct query_item *it = &q->items[i];
		if (it->agg != QA_NONE || !q->aggregates)
			continue;
		if (!same_path(it->expr, q->group_by)) {
			fail(p, it->expr->pos,
			     q->group_by ? "with GROUP BY, a SELECT item is an aggregate or the "
					   "grouped path%s"
					 : "an aggregate cannot be mixed with other items without "
					   "GROUP BY%s",
			     NULL);
			return false;
		}
	}
	return true;
}

int query_parse(const char *text, size_t n, struct query *q, struct query_error *err)
{
	memset(q, 0, sizeof *q);
	memset(err, 0, sizeof *err);
	if (n > QUERY_MAX_TEXT) {
		err->pos = QUERY_MAX_TEXT;
		snprintf(err->message, sizeof err->message,
			 "the query is longer than %d bytes", QUERY_MAX_TEXT);
		return -1;
	}
	if (memchr(text, '\0', n)) {
		err->pos = (size_t)((const char *)memchr(text, '\0', n) - text);
		snprintf(err->message, sizeof err->message, "at %zu: NUL in the query", err->pos);
		return -1;
	}
	struct parser p = {.s = text, .n = n, .q = q, .err = err};
	next(&p);
	bool ok = !p.failed && parse_statement(&p) && !p.failed;
	if (!ok) {
		if (!p.failed)
			fail(&p, p.pos, "syntax error%s", NULL);
		query_free(q);
		return -1;
	}
	return 0;
}

void query_free(struct query *q)
{
	arena_free(q->arena);
	memset(q, 0, sizeof *q);
}
