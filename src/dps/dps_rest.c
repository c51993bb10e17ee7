/* The DPS service REST API (protocol.md §7, as npm
 * azure-iot-provisioning-service uses it): individual enrollments,
 * enrollment groups, registration states, queries with paging, bulk
 * operations, attestation mechanisms, fleethub's webhook call log
 * (GET /registrations/{id}/webhookcalls) and its CA certificates
 * (/dps/certificates, dps_ca.c).
 *
 * One table row per operation (method, path pattern, handler, right); the
 * dispatcher authenticates once. Changes run as store jobs and are answered
 * from their completion, after the commit. Paths are matched
 * case-insensitively and literal segments win over {id}, so ".../query"
 * is never taken for an id. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/query.h"
#include "core/query_eval.h"
#include "core/cluster.h"
#include "internal.h"

#define PAGE_MAX 1000
#define BULK_MAX 10

enum id_kind { ID_REG, ID_GROUP };

struct req {
	struct dps *d;
	struct http_exchange *ex;
	char id[ENROLLMENT_ID_MAX + 1];
};

struct route {
	enum http_verb verb;
	const char *pattern; /* literal segments, "{r}" a registration id, "{g}" a group id */
	void (*fn)(struct req *r);
	unsigned right;
};

/* ---- answers ------------------------------------------------------------ */

static void respond_error(struct http_exchange *ex, int status, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void respond_error(struct http_exchange *ex, int status, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	char *body = dps__error_json(code, msg);
	http_respond_json(ex, status, NULL, body);
	free(body);
}

static void respond_json(struct http_exchange *ex, int status, const char *const *headers,
			 json_t *o)
{
	char *body = json_dumps(o, JSON_COMPACT);
	http_respond_json(ex, status, headers, body);
	free(body);
}

static json_t *body_object(struct http_exchange *ex)
{
	json_error_t je;
	json_t *o = json_loadb(ex->req->body.data, ex->req->body.len, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(o)) {
		respond_error(ex, 400, 400004, "the body must be a JSON object: %s",
			      o ? "got another JSON value" : je.text);
		json_decref(o);
		return NULL;
	}
	return o;
}

static enum store_doc_kind doc_kind(enum enrollment_kind k)
{
	return k == ENROLLMENT_GROUP ? STORE_ENROLLMENT_GROUP : STORE_ENROLLMENT;
}

static const char *kind_name(enum enrollment_kind k)
{
	return k == ENROLLMENT_GROUP ? "enrollment group" : "enrollment";
}

static int not_found_code(enum enrollment_kind k)
{
	return k == ENROLLMENT_GROUP ? 404202 : 404201;
}

/* ---- write jobs ---------------------------------------------------------- */

struct write_job {
	struct dps *d;
	struct http_exchange *ex;
	enum enrollment_kind kind;
	char id[ENROLLMENT_ID_MAX + 1];
	char if_match[256];
	bool has_if_match;
	char now[32];
	json_t *body;
	const char **hubs;
	struct enrollment_hubs linked;
	/* results */
	json_t *record;
	struct enrollment_error err;
	json_t *bulk_errors;
};

static struct write_job *write_job_new(struct req *r, enum enrollment_kind kind)
{
	struct write_job *j = xcalloc(1, sizeof *j);
	j->d = r->d;
	j->ex = r->ex;
	j->kind = kind;
	snprintf(j->id, sizeof j->id, "%s", r->id);
	const char *im = http_request_header(r->ex->req, "If-Match");
	if (im) {
		j->has_if_match = true;
		snprintf(j->if_match, sizeof j->if_match, "%s", im);
	}
	clock_iso8601(clock_now_ms(), j->now);
	j->hubs = xcalloc(r->d->nlinked + 1, sizeof *j->hubs);
	for (size_t i = 0; i < r->d->nlinked; i++)
		j->hubs[i] = r->d->linked[i].alloc.name;
	j->linked.names = j->hubs;
	j->linked.n = r->d->nlinked;
	return j;
}

static void write_job_free(struct write_job *j)
{
	json_decref(j->body);
	json_decref(j->record);
	json_decref(j->bulk_errors);
	free(j->hubs);
	free(j);
}

static void set_err(struct enrollment_error *e, int status, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void set_err(struct enrollment_error *e, int status, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof e->message, fmt, ap);
	va_end(ap);
	e->status = status;
	e->code = code;
}

/* Inside a job: tells the other nodes that record id of j's kind changed
 * (rec NULL: deleted): they read the groups again, and close the
 * sessions an enrollment no longer admits (dps__enrollment_changed). */
static int post_change(const struct write_job *j, struct store_txn *t, const char *id,
		       const json_t *rec)
{
	struct cluster_msg m;
	int rc = 0;
	if (j->kind == ENROLLMENT_GROUP) {
		cluster_msg_set(&m, CLUSTER_GROUP, j->d->name, id, 0, 0, NULL);
		rc = store_post(t, &m);
	}
	if (rc == 0 && (!rec || !enrollment_enabled(rec))) {
		cluster_msg_set(&m, CLUSTER_ENROLLMENT, j->d->name, id, (int)j->kind, 0, NULL);
		rc = store_post(t, &m);
	}
	return rc;
}

/* Creates or replaces one record; if_match NULL = unconditional. */
static int put_record(struct write_job *j, struct store_txn *t, const char *id,
		      const json_t *body, const char *if_match, bool must_be_new,
		      json_t **out)
{
	int rc;
	json_t *old = dps__doc_get(t, doc_kind(j->kind), j->d->name, id, &rc);
	if (rc != 0 && rc != FH_ENOTFOUND)
		return rc;
	if (old && must_be_new) {
		json_decref(old);
		set_err(&j->err, 409, 409201,
			"%s '%s' already exists (to replace it, send If-Match with its etag or *)",
			kind_name(j->kind), id);
		return FH_EEXIST;
	}
	if (old && if_match && !enrollment_etag_matches(old, if_match)) {
		json_decref(old);
		set_err(&j->err, 412, 412001,
			"the etag in If-Match does not match %s '%s' (it changed since it was "
			"read)",
			kind_name(j->kind), id);
		return FH_EPRECOND;
	}
	if (!old && if_match && *if_match && strcmp(if_match, "*") != 0) {
		set_err(&j->err, 404, not_found_code(j->kind),
			"%s '%s' does not exist (If-Match was given)", kind_name(j->kind), id);
		return FH_ENOTFOUND;
	}
	json_t *rec = enrollment_build(j->kind, id, body, old, &j->linked, j->now, &j->err);
	json_decref(old);
	if (!rec)
		return FH_EINVAL;
	char *text = json_dumps(rec, JSON_COMPACT);
	rc = store_doc_put(t, doc_kind(j->kind), j->d->name, id, text);
	free(text);
	if (rc == 0)
		rc = post_change(j, t, id, rec);
	if (rc == 0 && out)
		*out = rec;
	else
		json_decref(rec);
	return rc;
}

static int put_work(void *arg, struct store_txn *t)
{
	struct write_job *j = arg;
	/* Without If-Match a PUT creates: an existing record is 409, as Azure
	 * DPS answers; If-Match "*" or the etag replaces it. */
	return put_record(j, t, j->id, j->body, j->has_if_match ? j->if_match : NULL,
			  !j->has_if_match, &j->record);
}

static void respond_job_error(struct write_job *j, int rc)
{
	if (j->err.status)
		respond_error(j->ex, j->err.status, j->err.code, "%s", j->err.message);
	else
		respond_error(j->ex, 503, 503000, "%s", store_write_error(rc));
}

static void put_done(void *arg, int rc)
{
	struct write_job *j = arg;
	if (rc == 0) {
		if (j->kind == ENROLLMENT_GROUP)
			dps__group_changed(j->d, j->id, j->record);
		dps__enrollment_changed(j->d, j->kind, j->id, j->record);
		log_at(LOG_INFO, "dps %s: %s %s stored", j->d->name, kind_name(j->kind), j->id);
		respond_json(j->ex, 200, NULL, j->record);
	} else {
		respond_job_error(j, rc);
	}
	write_job_free(j);
}

static void record_put(struct req *r, enum enrollment_kind kind)
{
	json_t *body = body_object(r->ex);
	if (!body)
		return;
	struct write_job *j = write_job_new(r, kind);
	j->body = body;
	store_submit(r->d->store, put_work, put_done, j);
}

static int delete_work(void *arg, struct store_txn *t)
{
	struct write_job *j = arg;
	int rc;
	json_t *old = dps__doc_get(t, doc_kind(j->kind), j->d->name, j->id, &rc);
	if (rc == FH_ENOTFOUND)
		set_err(&j->err, 404, not_found_code(j->kind), "%s '%s' not found",
			kind_name(j->kind), j->id);
	if (rc != 0)
		return rc;
	bool ok = !j->has_if_match || enrollment_etag_matches(old, j->if_match);
	json_decref(old);
	if (!ok) {
		set_err(&j->err, 412, 412001, "the etag in If-Match does not match %s '%s'",
			kind_name(j->kind), j->id);
		return FH_EPRECOND;
	}
	rc = store_doc_delete(t, doc_kind(j->kind), j->d->name, j->id);
	if (rc == 0)
		rc = post_change(j, t, j->id, NULL);
	if (rc == 0 && j->kind == ENROLLMENT_INDIVIDUAL) {
		/* Its TPM challenge, if any, goes with it (decisions.md 4). */
		rc = store_doc_delete(t, STORE_TPM_CHALLENGE, j->d->name, j->id);
		if (rc == FH_ENOTFOUND)
			rc = 0;
	}
	return rc;
}

static void delete_done(void *arg, int rc)
{
	struct write_job *j = arg;
	if (rc == 0) {
		if (j->kind == ENROLLMENT_GROUP)
			dps__group_changed(j->d, j->id, NULL);
		dps__enrollment_changed(j->d, j->kind, j->id, NULL);
		log_at(LOG_INFO, "dps %s: %s %s deleted", j->d->name, kind_name(j->kind), j->id);
		http_respond(j->ex, 204, NULL, NULL, 0);
	} else {
		respond_job_error(j, rc);
	}
	write_job_free(j);
}

/* ---- reads ------------------------------------------------------------------ */

/* A record read (store_read): the document, and for an individual
 * enrollment its registration state. */
enum read_what { READ_RECORD, READ_ATTESTATION, READ_REGISTRATION };

struct read_job {
	struct http_exchange *ex;
	char scope[256];
	char id[ENROLLMENT_ID_MAX + 1];
	enum enrollment_kind kind;
	enum read_what what;
	json_t *doc;
	json_t *state; /* READ_RECORD of an individual enrollment: its registration state */
};

static int read_work(void *arg, struct store_txn *t)
{
	struct read_job *j = arg;
	enum store_doc_kind k = j->what == READ_REGISTRATION ? STORE_REGISTRATION
							     : doc_kind(j->kind);
	int rc;
	j->doc = dps__doc_get(t, k, j->scope, j->id, &rc);
	if (j->doc && j->what == READ_RECORD && j->kind == ENROLLMENT_INDIVIDUAL) {
		int src;
		j->state = dps__doc_get(t, STORE_REGISTRATION, j->scope, j->id, &src);
	}
	return rc;
}

static void read_done(void *arg, int rc)
{
	struct read_job *j = arg;
	if (rc == FH_ENOTFOUND && j->what == READ_REGISTRATION) {
		respond_error(j->ex, 404, 404203, "registration '%s' not found", j->id);
	} else if (rc == FH_ENOTFOUND) {
		respond_error(j->ex, 404, not_found_code(j->kind), "%s '%s' not found",
			      kind_name(j->kind), j->id);
	} else if (rc != 0) {
		respond_error(j->ex, 503, 503000, "the store cannot be read (%s)", fh_strerror(rc));
	} else if (j->what == READ_ATTESTATION) {
		json_t *a = enrollment_attestation(j->doc);
		respond_json(j->ex, 200, NULL, a);
		json_decref(a);
	} else if (j->what == READ_REGISTRATION) {
		json_t *pub = dps__public_state(j->doc);
		respond_json(j->ex, 200, NULL, pub);
		json_decref(pub);
	} else {
		if (j->state)
			json_object_set_new(j->doc, "registrationState", dps__public_state(j->state));
		respond_json(j->ex, 200, NULL, j->doc);
	}
	json_decref(j->doc);
	json_decref(j->state);
	free(j);
}

static void read_record(struct req *r, enum enrollment_kind kind, enum read_what what)
{
	struct read_job *j = xcalloc(1, sizeof *j);
	j->ex = r->ex;
	snprintf(j->scope, sizeof j->scope, "%s", r->d->name);
	snprintf(j->id, sizeof j->id, "%s", r->id);
	j->kind = kind;
	j->what = what;
	store_read(r->d->store, read_work, read_done, j);
}

static void record_get(struct req *r, enum enrollment_kind kind, bool attestation_only)
{
	read_record(r, kind, attestation_only ? READ_ATTESTATION : READ_RECORD);
}

/* ---- queries with paging ------------------------------------------------------ */

struct page {
	json_t *items;
	unsigned max;
	bool states;       /* registration states: shown without internal fields */
	const char *group; /* registrations: only this group's, or NULL for all */
	const struct query_node *where; /* only the records it holds for, or NULL */
	char scanned[3 * ENROLLMENT_ID_MAX + 1]; /* the last id looked at */
	unsigned nscanned;
	bool more;
};

static int page_each(void *arg, const char *id, const char *json)
{
	struct page *p = arg;
	json_t *o = json_loads(json, 0, NULL);
	const char *g = p->group ? json_string_value(json_object_get(o, "_group")) : NULL;
	if (o && (!p->group || (g && strcmp(g, p->group) == 0))) {
		/* WHERE sees the record as the API shows it */
		json_t *shown = p->states ? dps__public_state(o) : json_incref(o);
		if (!query_matches(p->where, shown)) {
			json_decref(shown);
		} else if (json_array_size(p->items) == p->max) {
			json_decref(shown);
			json_decref(o);
			p->more = true;
			return 1;
		} else {
			json_array_append_new(p->items, shown);
		}
	}
	json_decref(o);
	p->nscanned++;
	snprintf(p->scanned, sizeof p->scanned, "%s", id);
	return 0;
}

/* The query of a query request: "*" (every record), or SELECT * FROM one
 * of the names in froms (comma-separated; any case) [WHERE condition],
 * TOP allowed, in the IoT Hub query language (codec/query.h; evaluated
 * per record, core/query_eval.h). Returns 0 with *q filled (query_free it;
 * for "*" it is empty), or -1 after answering 400 with the position and
 * the problem. */
static int parse_query(struct http_exchange *ex, const json_t *body, const char *froms,
		       struct query *q)
{
	memset(q, 0, sizeof *q);
	const char *text = json_string_value(json_object_get(body, "query"));
	if (!text) {
		respond_error(ex, 400, 400004, "the body must be {\"query\": \"...\"}");
		return -1;
	}
	while (*text == ' ')
		text++;
	if (strcmp(text, "*") == 0) {
		q->star = true;
		return 0;
	}
	struct query_error err;
	if (query_parse(text, strlen(text), q, &err) != 0) {
		respond_error(ex, 400, 400004, "the query is not valid: %s", err.message);
		return -1;
	}
	const char *why = NULL;
	if (!q->star || q->aggregates)
		why = "only SELECT * is supported here (no projections or aggregates)";
	else if (q->from != QFROM_OTHER)
		why = "the query names the hub's devices, not this resource";
	if (!why) {
		bool known = false;
		size_t fl = strlen(q->from_name);
		for (const char *p = froms; *p;) {
			size_t n = strcspn(p, ",");
			known |= n == fl && strncasecmp(p, q->from_name, n) == 0;
			p += n + (p[n] == ',');
		}
		if (!known)
			why = "the query's FROM does not name this resource";
	}
	if (why) {
		respond_error(ex, 400, 400004, "%s (FROM %s)", why, froms);
		query_free(q);
		return -1;
	}
	return 0;
}

/* A query's pages are read by store_read_slow: listing (and for a group's
 * registrations, filtering every registration) runs on a worker thread,
 * never on the loop. */
struct query_job {
	struct http_exchange *ex;
	enum store_doc_kind kind;
	char scope[256];
	char group[ENROLLMENT_ID_MAX + 1]; /* "" = every record */
	struct query q; /* its WHERE filters the page */
	struct page p;
};

static int query_work(void *arg, struct store_txn *t)
{
	struct query_job *j = arg;
	int rc;
	do { /* a group's registrations are filtered while listing */
		j->p.nscanned = 0;
		rc = store_doc_list(t, j->kind, j->scope, "", j->p.scanned, PAGE_MAX, page_each,
				    &j->p);
	} while (rc == 0 && !j->p.more && j->p.nscanned == PAGE_MAX);
	return rc;
}

static void query_done(void *arg, int rc)
{
	struct query_job *j = arg;
	if (rc != 0) {
		respond_error(j->ex, 503, 503000, "the store cannot be read (%s)", fh_strerror(rc));
	} else {
		const char *headers[] = {"x-ms-continuation", j->p.scanned, NULL};
		bool more = j->p.more && !j->q.top; /* TOP n ends with its page */
		respond_json(j->ex, 200, more ? headers : NULL, j->p.items);
	}
	json_decref(j->p.items);
	query_free(&j->q);
	free(j);
}

static void query(struct req *r, enum store_doc_kind k, const char *from, const char *group)
{
	json_t *body = body_object(r->ex);
	if (!body)
		return;
	struct query q;
	int rc = parse_query(r->ex, body, from, &q);
	json_decref(body);
	if (rc != 0)
		return;
	const char *mx = http_request_header(r->ex->req, "x-ms-max-item-count");
	const char *cont = http_request_header(r->ex->req, "x-ms-continuation");
	long max = mx ? strtol(mx, NULL, 10) : PAGE_MAX;
	if (q.top && q.top < (unsigned long)(max > 0 ? max : PAGE_MAX))
		max = (long)q.top; /* TOP n: one page of at most n */
	struct query_job *j = xcalloc(1, sizeof *j);
	j->q = q;
	j->ex = r->ex;
	j->kind = k;
	snprintf(j->scope, sizeof j->scope, "%s", r->d->name);
	snprintf(j->group, sizeof j->group, "%s", group ? group : "");
	j->p = (struct page){.items = json_array(),
			     .max = (unsigned)(max > 0 && max < PAGE_MAX ? max : PAGE_MAX),
			     .states = k == STORE_REGISTRATION,
			     .group = group ? j->group : NULL};
	snprintf(j->p.scanned, sizeof j->p.scanned, "%s", cont ? cont : "");
	j->p.where = j->q.where;
	store_read_slow(r->d->store, query_work, query_done, j);
}

/* ---- handlers ----------------------------------------------------------------- */

static void enrollment_put(struct req *r) { record_put(r, ENROLLMENT_INDIVIDUAL); }
static void group_put(struct req *r) { record_put(r, ENROLLMENT_GROUP); }
static void enrollment_get(struct req *r) { record_get(r, ENROLLMENT_INDIVIDUAL, false); }
static void group_get(struct req *r) { record_get(r, ENROLLMENT_GROUP, false); }
static void enrollment_att(struct req *r) { record_get(r, ENROLLMENT_INDIVIDUAL, true); }
static void group_att(struct req *r) { record_get(r, ENROLLMENT_GROUP, true); }

static void record_delete(struct req *r, enum enrollment_kind kind)
{
	struct write_job *j = write_job_new(r, kind);
	store_submit(r->d->store, delete_work, delete_done, j);
}

static void enrollment_delete(struct req *r) { record_delete(r, ENROLLMENT_INDIVIDUAL); }
static void group_delete(struct req *r) { record_delete(r, ENROLLMENT_GROUP); }

static void enrollment_query(struct req *r)
{
	query(r, STORE_ENROLLMENT, "enrollments", NULL);
}

static void group_query(struct req *r)
{
	query(r, STORE_ENROLLMENT_GROUP, "enrollmentGroups", NULL);
}

static void registration_query(struct req *r)
{
	query(r, STORE_REGISTRATION, "enrollments,registrations", r->id);
}

/* fleethub's own: every registration state (the CLI's registration list). */
static void registration_query_all(struct req *r)
{
	query(r, STORE_REGISTRATION, "registrations,enrollments", NULL);
}

static void registration_get(struct req *r)
{
	/* A registration in progress shows as such (the stored state, if any,
	 * is the previous one). */
	json_t *busy = dps__assigning_state(r->d, r->id);
	if (busy) {
		respond_json(r->ex, 200, NULL, busy);
		json_decref(busy);
		return;
	}
	read_record(r, ENROLLMENT_INDIVIDUAL, READ_REGISTRATION);
}

static int registration_delete_work(void *arg, struct store_txn *t)
{
	struct write_job *j = arg;
	int rc;
	json_t *old = dps__doc_get(t, STORE_REGISTRATION, j->d->name, j->id, &rc);
	if (rc == FH_ENOTFOUND)
		set_err(&j->err, 404, 404203, "registration '%s' not found", j->id);
	if (rc != 0)
		return rc;
	bool ok = !j->has_if_match || enrollment_etag_matches(old, j->if_match);
	json_decref(old);
	if (!ok) {
		set_err(&j->err, 412, 412001, "the etag in If-Match does not match registration '%s'",
			j->id);
		return FH_EPRECOND;
	}
	rc = store_doc_delete(t, STORE_REGISTRATION, j->d->name, j->id);
	if (rc == 0)
		rc = dps__calls_delete(t, j->d->name, j->id); /* its webhook calls go too */
	return rc;
}

static void registration_delete(struct req *r)
{
	struct write_job *j = write_job_new(r, ENROLLMENT_INDIVIDUAL);
	store_submit(r->d->store, registration_delete_work, delete_done, j);
}

struct calls_job {
	struct http_exchange *ex;
	char scope[256];
	char prefix[ENROLLMENT_ID_MAX + 2];
	json_t *calls;
};

static int calls_each(void *arg, const char *id, const char *json)
{
	json_t *o = json_loads(json, 0, NULL);
	if (o)
		json_array_append_new(arg, o);
	return 0;
}

static int calls_work(void *arg, struct store_txn *t)
{
	struct calls_job *j = arg;
	return store_doc_list(t, STORE_WEBHOOK_CALL, j->scope, j->prefix, "", 1000, calls_each,
			      j->calls);
}

static void calls_done(void *arg, int rc)
{
	struct calls_job *j = arg;
	if (rc != 0)
		respond_error(j->ex, 503, 503000, "the store cannot be read (%s)", fh_strerror(rc));
	else
		respond_json(j->ex, 200, NULL, j->calls);
	json_decref(j->calls);
	free(j);
}

static void webhook_calls(struct req *r)
{
	struct calls_job *j = xcalloc(1, sizeof *j);
	j->ex = r->ex;
	snprintf(j->scope, sizeof j->scope, "%s", r->d->name);
	snprintf(j->prefix, sizeof j->prefix, "%s/", r->id);
	j->calls = json_array();
	store_read(r->d->store, calls_work, calls_done, j);
}

/* POST /enrollments {"mode":..,"enrollments":[..]} */
static int bulk_work(void *arg, struct store_txn *t)
{
	struct write_job *j = arg;
	const char *mode = json_string_value(json_object_get(j->body, "mode"));
	json_t *list = json_object_get(j->body, "enrollments");
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e)
	{
		const char *id = json_string_value(json_object_get(e, "registrationId"));
		int rc;
		memset(&j->err, 0, sizeof j->err);
		if (!id || !enrollment_regid_valid(id)) {
			set_err(&j->err, 400, 400004, "registrationId missing or invalid");
			rc = FH_EINVAL;
		} else if (strcasecmp(mode, "delete") == 0) {
			rc = store_doc_delete(t, STORE_ENROLLMENT, j->d->name, id);
			if (rc == FH_ENOTFOUND)
				set_err(&j->err, 404, 404201, "not found");
			if (rc == 0)
				rc = post_change(j, t, id, NULL);
			int crc = rc == 0 ? store_doc_delete(t, STORE_TPM_CHALLENGE, j->d->name, id)
					  : FH_ENOTFOUND;
			if (crc != 0 && crc != FH_ENOTFOUND)
				rc = crc;
		} else {
			const char *etag = json_string_value(json_object_get(e, "etag"));
			bool ifm = strcasecmp(mode, "updateIfMatchETag") == 0;
			rc = put_record(j, t, id, e, ifm ? (etag ? etag : "") : NULL,
					strcasecmp(mode, "create") == 0, NULL);
		}
		if (rc == FH_EIO || rc == FH_ENOSPC || rc == FH_EUNAVAIL)
			return rc;
		if (rc != 0)
			json_array_append_new(j->bulk_errors,
					      json_pack("{s:s,s:i,s:s}", "registrationId",
							id ? id : "", "errorCode",
							j->err.code ? j->err.code : 500000,
							"errorStatus", j->err.message));
	}
	memset(&j->err, 0, sizeof j->err);
	return 0;
}

static void bulk_done(void *arg, int rc)
{
	struct write_job *j = arg;
	if (rc == 0) {
		/* Sessions attested by enrollments now deleted or disabled close. */
		bool del = strcasecmp(json_string_value(json_object_get(j->body, "mode")), "delete") == 0;
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(j->body, "enrollments"), i, e) {
			const char *id = json_string_value(json_object_get(e, "registrationId"));
			if (id)
				dps__enrollment_changed(j->d, ENROLLMENT_INDIVIDUAL, id, del ? NULL : e);
		}
		json_t *o = json_pack("{s:b,s:O}", "isSuccessful",
				      json_array_size(j->bulk_errors) == 0, "errors", j->bulk_errors);
		respond_json(j->ex, 200, NULL, o);
		json_decref(o);
	} else {
		respond_job_error(j, rc);
	}
	write_job_free(j);
}

static void bulk(struct req *r)
{
	json_t *body = body_object(r->ex);
	if (!body)
		return;
	const char *mode = json_string_value(json_object_get(body, "mode"));
	json_t *list = json_object_get(body, "enrollments");
	static const char *modes[] = {"create", "update", "updateIfMatchETag", "delete"};
	bool known = false;
	for (size_t i = 0; mode && i < 4; i++)
		known |= strcasecmp(mode, modes[i]) == 0;
	if (!known || !json_is_array(list) || json_array_size(list) == 0 ||
	    json_array_size(list) > BULK_MAX) {
		json_decref(body);
		respond_error(r->ex, 400, 400004,
			      "a bulk operation needs mode create|update|updateIfMatchETag|delete "
			      "and 1..%d enrollments",
			      BULK_MAX);
		return;
	}
	struct write_job *j = write_job_new(r, ENROLLMENT_INDIVIDUAL);
	j->body = body;
	j->bulk_errors = json_array();
	store_submit(r->d->store, bulk_work, bulk_done, j);
}

static void ca_list(struct req *r)
{
	dps__ca_list(r->d, r->ex);
}

static void ca_get(struct req *r)
{
	dps__ca_get(r->d, r->ex, r->id);
}

static void ca_put(struct req *r)
{
	dps__ca_change(r->d, r->ex, r->id, CA_PUT);
}

static void ca_delete(struct req *r)
{
	dps__ca_change(r->d, r->ex, r->id, CA_DELETE);
}

static void ca_code(struct req *r)
{
	dps__ca_change(r->d, r->ex, r->id, CA_CODE);
}

static void ca_verify(struct req *r)
{
	dps__ca_change(r->d, r->ex, r->id, CA_VERIFY);
}

static const struct route routes[] = {
	{HTTP_VERB_POST, "/enrollments/query", enrollment_query, DPS_RIGHT_ENROLLMENT_READ},
	{HTTP_VERB_POST, "/enrollments", bulk, DPS_RIGHT_ENROLLMENT_WRITE},
	{HTTP_VERB_PUT, "/enrollments/{r}", enrollment_put, DPS_RIGHT_ENROLLMENT_WRITE},
	{HTTP_VERB_GET, "/enrollments/{r}", enrollment_get, DPS_RIGHT_ENROLLMENT_READ},
	{HTTP_VERB_DELETE, "/enrollments/{r}", enrollment_delete, DPS_RIGHT_ENROLLMENT_WRITE},
	{HTTP_VERB_POST, "/enrollments/{r}/attestationmechanism", enrollment_att,
	 DPS_RIGHT_ENROLLMENT_READ},
	{HTTP_VERB_POST, "/enrollmentGroups/query", group_query, DPS_RIGHT_ENROLLMENT_READ},
	{HTTP_VERB_PUT, "/enrollmentGroups/{g}", group_put, DPS_RIGHT_ENROLLMENT_WRITE},
	{HTTP_VERB_GET, "/enrollmentGroups/{g}", group_get, DPS_RIGHT_ENROLLMENT_READ},
	{HTTP_VERB_DELETE, "/enrollmentGroups/{g}", group_delete, DPS_RIGHT_ENROLLMENT_WRITE},
	{HTTP_VERB_POST, "/enrollmentGroups/{g}/attestationmechanism", group_att,
	 DPS_RIGHT_ENROLLMENT_READ},
	{HTTP_VERB_POST, "/registrations/query", registration_query_all,
	 DPS_RIGHT_REGISTRATION_READ},
	{HTTP_VERB_POST, "/registrations/{g}/query", registration_query,
	 DPS_RIGHT_REGISTRATION_READ},
	{HTTP_VERB_GET, "/registrations/{r}", registration_get, DPS_RIGHT_REGISTRATION_READ},
	{HTTP_VERB_DELETE, "/registrations/{r}", registration_delete,
	 DPS_RIGHT_REGISTRATION_WRITE},
	{HTTP_VERB_GET, "/registrations/{r}/webhookcalls", webhook_calls,
	 DPS_RIGHT_REGISTRATION_READ},
	{HTTP_VERB_GET, "/dps/certificates", ca_list, DPS_RIGHT_ENROLLMENT_READ},
	{HTTP_VERB_GET, "/dps/certificates/{c}", ca_get, DPS_RIGHT_ENROLLMENT_READ},
	{HTTP_VERB_PUT, "/dps/certificates/{c}", ca_put, DPS_RIGHT_SERVICE_CONFIG},
	{HTTP_VERB_DELETE, "/dps/certificates/{c}", ca_delete, DPS_RIGHT_SERVICE_CONFIG},
	{HTTP_VERB_POST, "/dps/certificates/{c}/generateVerificationCode", ca_code,
	 DPS_RIGHT_SERVICE_CONFIG},
	{HTTP_VERB_POST, "/dps/certificates/{c}/verify", ca_verify, DPS_RIGHT_SERVICE_CONFIG},
};

/* {r}: a registration id, {g}: an enrollment group id, {c}: a CA
 * certificate's name (as a group id). */
static bool dps_id_valid(const char *name, const char *id)
{
	return name[1] == 'r' ? enrollment_regid_valid(id) : enrollment_groupid_valid(id);
}

/* 1 match, 0 no match, -1 the id segment is not a valid id; id gets it. */
static int match(const char *pattern, const char *path, char *id)
{
	char tmp[3 * ENROLLMENT_ID_MAX + 1]; /* percent-encoded, every byte may take 3 */
	int m = http_route_match(pattern, path, tmp, sizeof tmp, dps_id_valid);
	if (m == 1 && strchr(pattern, '{'))
		memcpy(id, tmp, strlen(tmp) + 1); /* valid: at most ENROLLMENT_ID_MAX */
	return m;
}

static bool starts_with_segment(const char *path, const char *seg)
{
	size_t n = strlen(seg);
	return strncasecmp(path, seg, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

bool dps_http_path_matches(const struct dps *d, const char *path)
{
	return dps__wire_is_device_path(d->id_scope, path) || starts_with_segment(path, "/enrollments") ||
	       starts_with_segment(path, "/enrollmentGroups") ||
	       starts_with_segment(path, "/registrations") ||
	       starts_with_segment(path, "/dps/certificates");
}

void dps_http_request(struct dps *d, struct http_exchange *ex)
{
	struct http_request *req = ex->req;
	if (dps__wire_is_device_path(d->id_scope, req->path)) {
		dps__device_http(d, ex);
		return;
	}
	struct req r = {.d = d, .ex = ex};
	const struct route *hit = NULL;
	bool path_known = false;
	for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !hit; i++) {
		int m = match(routes[i].pattern, req->path, r.id);
		if (m < 0 && routes[i].verb == req->verb) {
			respond_error(ex, 400, 400004,
				      "the id in %s is not valid (registration ids: 1-128 of "
				      "lowercase a-z, 0-9, '-', '.', '_', ':')",
				      req->path);
			return;
		}
		if (m <= 0)
			continue;
		path_known = true;
		if (routes[i].verb == req->verb)
			hit = &routes[i];
	}
	if (!hit) {
		if (path_known)
			respond_error(ex, 405, 405000, "%s is not allowed on %s", req->method,
				      req->path);
		else
			respond_error(ex, 404, 404000, "no such resource: %s", req->path);
		return;
	}
	unsigned rights = 0;
	const char *why = NULL;
	if (dps__auth_service(d, http_request_header(req, "Authorization"), clock_now_ms() / 1000,
			      &rights, &why) != 0) {
		log_at(LOG_INFO, "dps %s: https %s: %s %s refused: %s", d->name,
		       net_conn_peer(ex->conn), req->method, req->path, why);
		respond_error(ex, 401, 401002, "Unauthorized: %s", why);
		return;
	}
	if (!(rights & hit->right)) {
		respond_error(ex, 401, 401002,
			      "Unauthorized: the shared access policy lacks the right for %s %s",
			      req->method, req->path);
		return;
	}
	hit->fn(&r);
}
