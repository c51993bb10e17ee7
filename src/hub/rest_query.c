/* POST /devices/query: the IoT Hub query language over the hub's twins.
 * The scan runs on a worker (store_read_slow) against one snapshot: the
 * store selects candidates by the query's plan (codec/query_plan.h) in id
 * order, query_matches decides each, and the page's views come back to the
 * loop, which renders them with each device's live connection state.
 *
 * Rows are twins for SELECT *, else projected objects (project).
 *
 * Paging: x-ms-max-item-count rows a page (QUERY_PAGE_DEFAULT when absent,
 * at most QUERY_PAGE_MAX, fewer when they reach QUERY_PAGE_BYTES);
 * x-ms-continuation, present only when another
 * matching row exists, is "<rows returned so far> <last id>" in base64.
 * The next page starts after that id, so a page never repeats a row and
 * never skips one that existed when the first page was read, whatever is
 * written meanwhile. TOP n ends the result after n rows over all pages. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/map.h"
#include "base/mem.h"
#include "codec/query.h"
#include "codec/query_plan.h"
#include "core/query_eval.h"
#include "core/registry.h"
#include "rest_internal.h"
#include "store/store.h"

#define QUERY_PAGE_DEFAULT 100
#define QUERY_PAGE_MAX 1000
/* A page also ends once its rows hold this many bytes (1,000 twins near
 * their size limits would be a response of tens of megabytes). */
#define QUERY_PAGE_BYTES (4u << 20)

#define QUERY_MAX_GROUPS 10000

/* One group of an aggregate query, as the worker collects it. */
struct group {
	char *key;   /* canonical_key: what groups compare by, and sort by */
	json_t *value; /* the GROUP BY value, or NULL: undefined */
	uint64_t count;
	struct {
		uint64_t n;
		double sum, min, max;
	} agg[QUERY_MAX_ITEMS];
};

struct twin_query_job {
	struct http_exchange *ex;
	char hub_name[256];
	struct query q;
	struct query_plan plan;
	unsigned max;    /* rows for this page */
	uint64_t before; /* rows returned by earlier pages */
	char after[REGISTRY_ID_MAX + 1];
	/* What the worker leaves for the loop: the page's rows, comma-joined. */
	struct buf page;
	unsigned n;
	bool more;
	char last[REGISTRY_ID_MAX + 1]; /* the last row's id */
	char refused[200]; /* not "": the query asks too much (400) */
	/* Worker scratch: a candidate rendered, and parsed when needed. */
	struct buf doc;
	struct map groups; /* canonical key -> struct group * */
};

/* The query's name for item i: its alias, a path's last segment, or
 * "$<i+1>". */
static const char *item_name(const struct query_item *it, size_t i, char name[32])
{
	if (it->alias)
		return it->alias;
	if (it->expr && it->expr->kind == QN_PATH)
		return it->expr->seg[it->expr->nseg - 1].name;
	snprintf(name, 32, "$%zu", i + 1);
	return name;
}

/* A row of SELECT item [AS alias], ... for doc, appended as JSON text: an
 * undefined value leaves its member out. */
static void project(const struct query *q, const json_t *doc, struct buf *out)
{
	json_t *row = json_object();
	for (size_t i = 0; i < q->nitems; i++) {
		json_t *v = query_value(q->items[i].expr, doc);
		char name[32];
		if (v)
			json_object_set_new(row, item_name(&q->items[i], i, name), v);
	}
	char *text = json_dumps(row, JSON_COMPACT);
	buf_appends(out, text);
	free(text);
	json_decref(row);
}

/* The twin as the query language sees it (the REST document, with the
 * stored connection state), rendered into j->doc and parsed; NULL when it
 * cannot be read. */
static json_t *twin_doc(struct twin_query_job *j, const char *id, const struct store_twin_view *v)
{
	buf_reset(&j->doc);
	rest__render_twin_view(&j->doc, id, v);
	return json_loadb(j->doc.data, j->doc.len, 0, NULL);
}

static int twin_query_each(void *arg, const char *id, struct store_twin_view *v, bool sure)
{
	struct twin_query_job *j = arg;
	json_t *doc = NULL;
	if (!sure) {
		doc = twin_doc(j, id, v);
		if (!doc || !query_matches(j->q.where, doc)) {
			json_decref(doc);
			return 0;
		}
	}
	if (j->n == j->max || j->page.len >= QUERY_PAGE_BYTES) {
		json_decref(doc);
		j->more = true;
		return 1;
	}
	if (j->n)
		buf_appendc(&j->page, ',');
	if (j->q.star && doc) {
		buf_append(&j->page, j->doc.data, j->doc.len);
	} else if (j->q.star) {
		rest__render_twin_view(&j->page, id, v);
	} else {
		if (!doc)
			doc = twin_doc(j, id, v);
		if (doc)
			project(&j->q, doc, &j->page);
		else
			buf_appends(&j->page, "{}");
	}
	snprintf(j->last, sizeof j->last, "%s", id);
	j->n++;
	json_decref(doc);
	return 0;
}

/* ---- Aggregates ---- */

static json_t *number_json(double d)
{
	if (d == floor(d) && fabs(d) <= 9007199254740992.0)
		return json_integer((json_int_t)d);
	return json_real(d);
}

/* What groups compare by: "u" for undefined, else "v" and the value's JSON
 * text with numbers as number_json spells them and object keys sorted, so
 * that 1 and 1.0 (or the store's spelling and jansson's) are one group. */
static char *canonical_key(const json_t *v)
{
	struct buf b = BUF_INIT;
	if (!v) {
		buf_appendc(&b, 'u');
	} else if (json_is_number(v)) {
		json_t *n = number_json(json_number_value(v));
		char *t = json_dumps(n, JSON_ENCODE_ANY);
		buf_printf(&b, "v%s", t);
		free(t);
		json_decref(n);
	} else {
		char *t = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
		buf_printf(&b, "v%s", t ? t : "");
		free(t);
	}
	return buf_steal(&b);
}

/* The group of value (taken), made when new; NULL when there would be
 * more than QUERY_MAX_GROUPS (j->refused says so). */
static struct group *group_of(struct twin_query_job *j, json_t *value)
{
	char *key = canonical_key(value);
	struct group *g = map_get(&j->groups, key);
	if (g) {
		free(key);
		json_decref(value);
		return g;
	}
	if (j->groups.count == QUERY_MAX_GROUPS) {
		snprintf(j->refused, sizeof j->refused,
			 "GROUP BY makes more than %d groups; narrow the query with WHERE",
			 QUERY_MAX_GROUPS);
		free(key);
		json_decref(value);
		return NULL;
	}
	g = xcalloc(1, sizeof *g);
	g->key = key;
	g->value = value;
	map_put(&j->groups, key, g);
	return g;
}

static void add_number(struct group *g, size_t i, double x, uint64_t n, double min, double max)
{
	if (n == 0)
		return;
	g->agg[i].min = g->agg[i].n == 0 || min < g->agg[i].min ? min : g->agg[i].min;
	g->agg[i].max = g->agg[i].n == 0 || max > g->agg[i].max ? max : g->agg[i].max;
	g->agg[i].n += n;
	g->agg[i].sum += x;
}

/* A group the store computed, merged into j's. */
static int add_store_group(void *arg, const struct store_group *sg)
{
	struct twin_query_job *j = arg;
	json_t *value = NULL;
	if (sg->key_type == STORE_KEY_NUMBER)
		value = number_json(sg->key_number);
	else if (sg->key_type == STORE_KEY_JSON)
		value = json_loads(sg->key_json, JSON_DECODE_ANY, NULL);
	if (sg->key_type == STORE_KEY_JSON && !value)
		return FH_EIO;
	if (sg->count == 0 && j->q.group_by)
		return 0;
	struct group *g = group_of(j, value);
	if (!g)
		return 1;
	g->count += sg->count;
	for (size_t i = 0; i < j->plan.naggs; i++)
		add_number(g, i, sg->agg[i].sum, sg->agg[i].n, sg->agg[i].min, sg->agg[i].max);
	return 0;
}

/* A row the store could not decide or aggregate, counted here. */
static int add_row(void *arg, const char *id, struct store_twin_view *v, bool sure)
{
	struct twin_query_job *j = arg;
	json_t *doc = twin_doc(j, id, v);
	if (!doc || (!sure && !query_matches(j->q.where, doc))) {
		json_decref(doc);
		return 0;
	}
	struct group *g = group_of(j, j->q.group_by ? query_value(j->q.group_by, doc) : NULL);
	if (!g) {
		json_decref(doc);
		return 1;
	}
	g->count++;
	for (size_t i = 0; i < j->q.nitems; i++) {
		const struct query_item *it = &j->q.items[i];
		if (it->agg == QA_NONE || it->agg == QA_COUNT)
			continue;
		json_t *x = query_value(it->expr, doc);
		if (json_is_number(x)) {
			double d = json_number_value(x);
			add_number(g, i, d, 1, d, d);
		}
		json_decref(x);
	}
	json_decref(doc);
	return 0;
}

static int by_key(const void *a, const void *b)
{
	return strcmp((*(struct group *const *)a)->key, (*(struct group *const *)b)->key);
}

static void collect_group(void *arg, const char *key, void *value)
{
	(void)key;
	struct group ***next = arg;
	*(*next)++ = value;
}

static void render_group(const struct query *q, const struct group *g, struct buf *out)
{
	json_t *row = json_object();
	for (size_t i = 0; i < q->nitems; i++) {
		const struct query_item *it = &q->items[i];
		char name[32];
		const char *key = item_name(it, i, name);
		double n = (double)g->agg[i].n;
		json_t *v = NULL;
		switch (it->agg) {
		case QA_NONE: v = g->value ? json_deep_copy(g->value) : NULL; break;
		case QA_COUNT: v = json_integer((json_int_t)g->count); break;
		case QA_SUM: v = n ? number_json(g->agg[i].sum) : NULL; break;
		case QA_AVG: v = n ? number_json(g->agg[i].sum / n) : NULL; break;
		case QA_MIN: v = n ? number_json(g->agg[i].min) : NULL; break;
		case QA_MAX: v = n ? number_json(g->agg[i].max) : NULL; break;
		}
		if (v)
			json_object_set_new(row, key, v);
	}
	char *text = json_dumps(row, JSON_COMPACT);
	buf_appends(out, text);
	free(text);
	json_decref(row);
}

/* Every group, in key order, from before on into the page. */
static void aggregate_page(struct twin_query_job *j)
{
	size_t n = j->groups.count;
	struct group **all = xcalloc(n + 1, sizeof *all), **next = all;
	map_each(&j->groups, collect_group, &next);
	qsort(all, n, sizeof *all, by_key);
	for (size_t i = 0; i < n; i++) {
		if (i >= j->before && !j->more && !j->refused[0]) {
			if (j->n == j->max || j->page.len >= QUERY_PAGE_BYTES) {
				j->more = true;
			} else {
				if (j->n++)
					buf_appendc(&j->page, ',');
				render_group(&j->q, all[i], &j->page);
			}
		}
		json_decref(all[i]->value);
		free(all[i]->key);
		free(all[i]);
	}
	free(all);
	map_free(&j->groups);
	map_init(&j->groups);
}

static int aggregate_work(struct twin_query_job *j, struct store_txn *t)
{
	int rc;
	if (j->plan.aggregable) {
		/* The store counts the rows it is sure of; the others are
		 * decided and counted here. */
		rc = store_twin_aggregate(t, j->hub_name, &j->plan, add_store_group, j);
		if (rc == 0)
			rc = store_twin_query(t, j->hub_name, &j->plan, "", true, add_row, j);
	} else {
		rc = store_twin_query(t, j->hub_name, &j->plan, "", false, add_row, j);
	}
	if (rc == 0 && !j->q.group_by && j->groups.count == 0)
		group_of(j, NULL); /* one row even when nothing matched */
	aggregate_page(j);
	return rc == 1 ? 0 : rc;
}

static int twin_query_work(void *arg, struct store_txn *t)
{
	struct twin_query_job *j = arg;
	if (j->q.aggregates || j->q.group_by)
		return aggregate_work(j, t);
	int rc = store_twin_query(t, j->hub_name, &j->plan, j->after, false, twin_query_each, j);
	return rc == 1 ? 0 : rc;
}

static void twin_query_done(void *arg, int rc)
{
	struct twin_query_job *j = arg;
	if (rc != 0) {
		rest__respond_store_error(j->ex, rc, "", false);
	} else if (j->refused[0]) {
		rest__respond_error(j->ex, 400, "ArgumentInvalid", 400004, "%s", j->refused);
	} else {
		struct buf body = BUF_INIT;
		buf_reserve(&body, j->page.len + 2);
		buf_appendc(&body, '[');
		buf_append(&body, j->page.data, j->page.len);
		buf_appendc(&body, ']');
		uint64_t total = j->before + j->n;
		bool more = j->more && j->n > 0 && (!j->q.top || total < j->q.top);
		char token[REGISTRY_ID_MAX + 32], encoded[2 * sizeof token];
		snprintf(token, sizeof token, "%llu %s", (unsigned long long)total, j->last);
		b64_encode((const uint8_t *)token, strlen(token), encoded);
		const char *headers[] = {"x-ms-item-type", j->q.star ? "Twin" : "raw",
					 "x-ms-continuation", encoded, NULL};
		if (!more)
			headers[2] = NULL;
		http_respond_json(j->ex, 200, headers, body.data);
		buf_free(&body);
	}
	buf_free(&j->page);
	buf_free(&j->doc);
	map_free(&j->groups);
	query_free(&j->q);
	free(j);
}

/* Reads x-ms-continuation into j (before, after); false when it is not a
 * token this server gave. */
static bool read_continuation(const char *token, struct twin_query_job *j)
{
	uint8_t raw[REGISTRY_ID_MAX + 32];
	size_t n = 0, tl = strlen(token);
	if (tl == 0 || tl > 2 * sizeof raw || b64_decode(token, tl, raw, &n) != 0 || n >= sizeof raw)
		return false;
	raw[n] = 0;
	char *sp = memchr(raw, ' ', n), *end;
	if (!sp)
		return false;
	*sp = 0;
	unsigned long long before = strtoull((char *)raw, &end, 10);
	if (*end || end == (char *)raw || strlen(sp + 1) > REGISTRY_ID_MAX)
		return false;
	j->before = before;
	snprintf(j->after, sizeof j->after, "%s", sp + 1);
	return true;
}

/* Refuses (answering) what the query asks that fleethub does not serve. */
static bool twin_query_served(struct http_exchange *ex, const struct query *q)
{
	if (q->from == QFROM_OTHER) {
		rest__respond_error(ex, 400, "ArgumentInvalid", 400004,
			      "FROM %s: a hub query reads devices, devices.modules or devices.jobs",
			      q->from_name);
		return false;
	}
	if (q->from == QFROM_JOBS) {
		rest__respond_error(ex, 501, "NotImplemented", 501001,
			      "fleethub does not serve job queries (FROM devices.jobs) yet");
		return false;
	}
	return true; /* the parser checked how items and GROUP BY combine */
}

void rest__twin_query(struct route_args *a)
{
	if (store_read_slow_waiting(a->hub->store) >= REST_MAX_SCANS) {
		rest__respond_scans_throttled(a->ex);
		return;
	}
	json_t *body = rest__body_object(a->ex);
	if (!body)
		return;
	json_t *text = json_object_get(body, "query");
	if (!json_is_string(text)) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
			      "the request body has no \"query\" string");
		json_decref(body);
		return;
	}
	struct twin_query_job *j = xcalloc(1, sizeof *j);
	struct query_error err;
	int rc = query_parse(json_string_value(text), json_string_length(text), &j->q, &err);
	json_decref(body);
	if (rc != 0) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
			      "the query is not valid: %s", err.message);
		free(j);
		return;
	}
	const char *mx = http_request_header(a->ex->req, "x-ms-max-item-count");
	const char *cont = http_request_header(a->ex->req, "x-ms-continuation");
	long max = mx ? strtol(mx, NULL, 10) : QUERY_PAGE_DEFAULT;
	if (!twin_query_served(a->ex, &j->q)) {
		query_free(&j->q);
		free(j);
		return;
	}
	if (cont && !read_continuation(cont, j)) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
			      "x-ms-continuation is not a token this hub gave");
		query_free(&j->q);
		free(j);
		return;
	}
	j->max = (unsigned)(max < 1 ? QUERY_PAGE_DEFAULT : max > QUERY_PAGE_MAX ? QUERY_PAGE_MAX : max);
	uint64_t left = j->q.top > j->before ? j->q.top - j->before : 0;
	if (j->q.top && left < j->max)
		j->max = (unsigned)left;
	query_plan_build(&j->q, &j->plan);
	if (j->plan.empty || j->max == 0) { /* devices.modules: no modules yet */
		http_respond_json(a->ex, 200, (const char *const[]){"x-ms-item-type", "Twin", NULL},
				  "[]");
		query_free(&j->q);
		free(j);
		return;
	}
	j->ex = a->ex;
	snprintf(j->hub_name, sizeof j->hub_name, "%s", a->hub->name);
	map_init(&j->groups);
	store_read_slow(a->hub->store, twin_query_work, twin_query_done, j);
}
