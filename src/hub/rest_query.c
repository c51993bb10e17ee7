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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/enc.h"
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

struct twin_query_job {
	struct http_exchange *ex;
	struct hub *hub;
	char hub_name[256];
	struct query q;
	struct query_plan plan;
	unsigned max;    /* rows for this page */
	uint64_t before; /* rows returned by earlier pages */
	char after[REGISTRY_ID_MAX + 1];
	struct store_twin_view *views; /* [max]: SELECT * */
	char **ids;                    /* [max] */
	char **projected;              /* [max]: SELECT items, each row's JSON */
	unsigned n;
	size_t bytes; /* the page's rendered size so far */
	bool more;
	struct buf doc; /* scratch: a candidate rendered for query_matches */
};

/* A row of SELECT item [AS alias], ... for doc, as JSON text: each item
 * under its alias, or a path's last segment, or "$<n>" (1-based) for
 * another expression; an undefined value leaves its member out. */
static char *project(const struct query *q, const json_t *doc)
{
	json_t *row = json_object();
	for (size_t i = 0; i < q->nitems; i++) {
		const struct query_node *e = q->items[i].expr;
		json_t *v = query_value(e, doc);
		if (!v)
			continue;
		char name[32];
		const char *key = q->items[i].alias;
		if (!key && e->kind == QN_PATH)
			key = e->seg[e->nseg - 1].name;
		if (!key) {
			snprintf(name, sizeof name, "$%zu", i + 1);
			key = name;
		}
		json_object_set_new(row, key, v);
	}
	char *text = json_dumps(row, JSON_COMPACT);
	json_decref(row);
	return text;
}

static int twin_query_each(void *arg, const char *id, struct store_twin_view *v)
{
	struct twin_query_job *j = arg;
	/* The query names no connection state (twin_query refuses that), so
	 * the worker may render without it. */
	buf_reset(&j->doc);
	rest__render_twin_view(&j->doc, id, v, false, 0);
	json_t *doc = json_loadb(j->doc.data, j->doc.len, 0, NULL);
	if (!doc || !query_matches(j->q.where, doc)) {
		json_decref(doc);
		return 0;
	}
	if (j->n == j->max || j->bytes >= QUERY_PAGE_BYTES) {
		json_decref(doc);
		j->more = true;
		return 1;
	}
	j->ids[j->n] = xstrdup(id);
	if (j->projected) {
		j->projected[j->n] = project(&j->q, doc);
		j->bytes += strlen(j->projected[j->n]);
	} else {
		j->bytes += j->doc.len;
		j->views[j->n] = *v;
		memset(v, 0, sizeof *v);
	}
	j->n++;
	json_decref(doc);
	return 0;
}

static int twin_query_work(void *arg, struct store_txn *t)
{
	struct twin_query_job *j = arg;
	int rc = store_twin_query(t, j->hub_name, &j->plan, j->after, twin_query_each, j);
	return rc == 1 ? 0 : rc;
}

static void twin_query_done(void *arg, int rc)
{
	struct twin_query_job *j = arg;
	if (rc != 0) {
		rest__respond_store_error(j->ex, rc, "", false);
	} else {
		struct buf body = BUF_INIT;
		buf_appendc(&body, '[');
		for (unsigned i = 0; i < j->n; i++) {
			if (i)
				buf_appendc(&body, ',');
			if (j->projected)
				buf_appends(&body, j->projected[i]);
			else
				rest__render_twin_view_live(j->hub, &body, j->ids[i], &j->views[i]);
		}
		buf_appendc(&body, ']');
		uint64_t total = j->before + j->n;
		bool more = j->more && j->n > 0 && (!j->q.top || total < j->q.top);
		char token[REGISTRY_ID_MAX + 32], encoded[2 * sizeof token];
		snprintf(token, sizeof token, "%llu %s", (unsigned long long)total,
			 j->n ? j->ids[j->n - 1] : "");
		b64_encode((const uint8_t *)token, strlen(token), encoded);
		const char *headers[] = {"x-ms-item-type", j->projected ? "raw" : "Twin",
					 "x-ms-continuation", encoded, NULL};
		if (!more)
			headers[2] = NULL;
		http_respond_json(j->ex, 200, headers, body.data);
		buf_free(&body);
	}
	for (unsigned i = 0; i < j->n; i++) {
		store_twin_view_clear(&j->views[i]);
		free(j->ids[i]);
		if (j->projected)
			free(j->projected[i]);
	}
	free(j->projected);
	free(j->views);
	free(j->ids);
	buf_free(&j->doc);
	query_free(&j->q);
	free(j);
}

/* Whether cond names a twin member fleethub cannot yet read on a worker. */
static bool names_connection_state(const struct query_node *n)
{
	if (!n)
		return false;
	if (n->kind == QN_PATH)
		return n->nseg > 0 && (strcmp(n->seg[0].name, "connectionState") == 0 ||
				       strcmp(n->seg[0].name, "lastActivityTime") == 0);
	if (names_connection_state(n->a) || names_connection_state(n->b))
		return true;
	for (size_t i = 0; i < n->nargs; i++)
		if (names_connection_state(n->args[i]))
			return true;
	return false;
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
	const char *unserved = NULL;
	if (q->from == QFROM_OTHER) {
		rest__respond_error(ex, 400, "ArgumentInvalid", 400004,
			      "FROM %s: a hub query reads devices, devices.modules or devices.jobs",
			      q->from_name);
		return false;
	}
	if (q->from == QFROM_JOBS)
		unserved = "job queries (FROM devices.jobs)";
	else if (q->aggregates || q->group_by)
		unserved = "query aggregates and GROUP BY";
	bool connection = names_connection_state(q->where);
	for (size_t i = 0; i < q->nitems; i++)
		connection |= names_connection_state(q->items[i].expr);
	if (!unserved && connection)
		unserved = "queries on connectionState and lastActivityTime";
	if (unserved) {
		rest__respond_error(ex, 501, "NotImplemented", 501001, "fleethub does not serve %s yet",
			      unserved);
		return false;
	}
	return true;
}

void rest__twin_query(struct route_args *a)
{
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
	j->hub = a->hub;
	snprintf(j->hub_name, sizeof j->hub_name, "%s", a->hub->name);
	j->views = xcalloc(j->max, sizeof *j->views);
	j->ids = xcalloc(j->max, sizeof *j->ids);
	if (!j->q.star)
		j->projected = xcalloc(j->max, sizeof *j->projected);
	store_read_slow(a->hub->store, twin_query_work, twin_query_done, j);
}
