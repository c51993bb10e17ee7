/* The hub's CA certificates: fleethub's own REST paths (decisions.md 10),
 * in the shape of Azure's management API for them:
 *
 *   GET    /certificates                            {"value":[record, ...]}
 *   GET    /certificates/{name}                     record
 *   PUT    /certificates/{name}    {"properties":{"certificate":PEM}}
 *   DELETE /certificates/{name}
 *   POST   /certificates/{name}/generateVerificationCode   record + code
 *   POST   /certificates/{name}/verify   {"certificate":PEM of the
 *          verification certificate}
 *
 * If-Match, when given, must be the record's etag. Records and proof of
 * possession are core/ca.c's; changes are store jobs (read, check, write
 * in one transaction). A verified CA is trusted for certificateAuthority
 * devices at their next CONNECT; deleting it stops that at once for new
 * connections. */
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/mem.h"
#include "core/ca.h"
#include "rest_internal.h"

#define CA_LIST_MAX 100

struct ca_job {
	struct http_exchange *ex;
	char hub[256];
	char name[REGISTRY_ID_MAX + 1];
	char if_match[128];
	char now[32];
	enum ca_change op;
	char *text; /* PUT: the certificate; VERIFY: the verification certificate */
	size_t text_len;
	/* results */
	json_t *rec;
	int status; /* a refusal decided in work */
	char error[300];
};

static int ca_work(void *arg, struct store_txn *t)
{
	struct ca_job *j = arg;
	char *json = NULL;
	int rc = store_doc_get(t, STORE_CA_CERT, j->hub, j->name, &json);
	if (rc != 0 && rc != FH_ENOTFOUND)
		return rc;
	json_t *old = json ? json_loads(json, 0, NULL) : NULL;
	free(json);
	if (rc == 0 && !old)
		return FH_EIO;
	j->status = ca_apply(j->op, j->name, old, j->if_match, j->text, j->text_len,
			     clock_now_ms() / 1000, j->now, &j->rec, j->error, sizeof j->error);
	json_decref(old);
	if (j->status)
		return 0;
	if (j->op == CA_DELETE)
		return store_doc_delete(t, STORE_CA_CERT, j->hub, j->name);
	char *text = json_dumps(j->rec, JSON_COMPACT);
	rc = store_doc_put(t, STORE_CA_CERT, j->hub, j->name, text);
	free(text);
	return rc;
}

static void ca_done(void *arg, int rc)
{
	struct ca_job *j = arg;
	if (rc != 0) {
		rest__respond_store_error(j->ex, rc, j->name, true);
	} else if (j->status == 404) {
		rest__respond_error(j->ex, 404, "CertificateNotFound", 404001, "%s", j->error);
	} else if (j->status) {
		rest__respond_error(j->ex, j->status,
			      j->status == 412 ? "PreconditionFailed" : "ArgumentInvalid",
			      j->status * 1000 + (j->status == 412 ? 2 : 4), "%s", j->error);
	} else if (j->op == CA_DELETE) {
		http_respond(j->ex, 200, NULL, NULL, 0);
	} else {
		json_t *o = ca_render(j->rec, j->op == CA_CODE);
		char *body = json_dumps(o, JSON_COMPACT);
		http_respond_json(j->ex, 200, NULL, body);
		free(body);
		json_decref(o);
	}
	json_decref(j->rec);
	free(j->text);
	free(j);
}

/* Queues op on the {name} of a; text: the certificate of a PUT or VERIFY. */
static void ca_submit(struct route_args *a, enum ca_change op, const char *text, size_t n)
{
	struct ca_job *j = xcalloc(1, sizeof *j);
	j->ex = a->ex;
	j->op = op;
	snprintf(j->hub, sizeof j->hub, "%s", a->hub->name);
	snprintf(j->name, sizeof j->name, "%s", a->id);
	rest__if_match(a->ex->req, j->if_match);
	clock_iso8601(clock_now_ms(), j->now);
	if (text) {
		j->text = xmalloc(n + 1);
		memcpy(j->text, text, n);
		j->text[n] = '\0';
		j->text_len = n;
	}
	store_submit_sized(a->hub->store, ca_work, ca_done, j, n);
}

/* The certificate text of a body: body.certificate, or
 * body.properties.certificate; NULL after answering 400. */
static json_t *certificate_of(struct route_args *a, json_t **body)
{
	*body = rest__body_object(a->ex);
	if (!*body)
		return NULL;
	json_t *c = json_object_get(*body, "certificate");
	if (!c)
		c = json_object_get(json_object_get(*body, "properties"), "certificate");
	if (!json_is_string(c) || json_string_length(c) > CA_MAX_TEXT) {
		rest__respond_error(a->ex, 400, "ArgumentInvalid", 400004,
			      "the body has no \"certificate\" (or \"properties\".\"certificate\") "
			      "string of at most %d bytes",
			      CA_MAX_TEXT);
		json_decref(*body);
		return NULL;
	}
	return c;
}

void rest__ca_put(struct route_args *a)
{
	json_t *body;
	json_t *c = certificate_of(a, &body);
	if (!c)
		return;
	ca_submit(a, CA_PUT, json_string_value(c), json_string_length(c));
	json_decref(body);
}

void rest__ca_verify(struct route_args *a)
{
	json_t *body;
	json_t *c = certificate_of(a, &body);
	if (!c)
		return;
	ca_submit(a, CA_VERIFY, json_string_value(c), json_string_length(c));
	json_decref(body);
}

void rest__ca_delete(struct route_args *a)
{
	ca_submit(a, CA_DELETE, NULL, 0);
}

void rest__ca_code(struct route_args *a)
{
	ca_submit(a, CA_CODE, NULL, 0);
}

/* Reads, through the store's completion API (decisions.md 1): work only
 * touches the job and the txn; done answers. */
struct ca_read {
	struct http_exchange *ex;
	char hub[256];
	char name[REGISTRY_ID_MAX + 1];
	bool list;
	json_t *out; /* the record (get), or the rendered records (list) */
};

static int ca_read_work(void *arg, struct store_txn *t)
{
	struct ca_read *r = arg;
	if (r->list) {
		r->out = json_array();
		return store_doc_list(t, STORE_CA_CERT, r->hub, "", "", CA_LIST_MAX,
				      ca_collect_rendered, r->out);
	}
	char *json = NULL;
	int rc = store_doc_get(t, STORE_CA_CERT, r->hub, r->name, &json);
	if (rc == 0 && !(r->out = json_loads(json, 0, NULL)))
		rc = FH_EIO;
	free(json);
	return rc;
}

static void ca_read_done(void *arg, int rc)
{
	struct ca_read *r = arg;
	if (rc == FH_ENOTFOUND) {
		rest__respond_error(r->ex, 404, "CertificateNotFound", 404001,
			      "no CA certificate named '%s'", r->name);
	} else if (rc != 0) {
		rest__respond_store_error(r->ex, rc, r->name, false);
	} else {
		json_t *o = r->list ? json_pack("{s:O}", "value", r->out) : ca_render(r->out, false);
		char *body = json_dumps(o, JSON_COMPACT);
		http_respond_json(r->ex, 200, NULL, body);
		free(body);
		json_decref(o);
	}
	json_decref(r->out);
	free(r);
}

static void ca_read(struct route_args *a, bool list)
{
	struct ca_read *r = xcalloc(1, sizeof *r);
	r->ex = a->ex;
	r->list = list;
	snprintf(r->hub, sizeof r->hub, "%s", a->hub->name);
	snprintf(r->name, sizeof r->name, "%s", list ? "" : a->id);
	store_read(a->hub->store, ca_read_work, ca_read_done, r);
}

void rest__ca_get(struct route_args *a)
{
	ca_read(a, false);
}

void rest__ca_list(struct route_args *a)
{
	ca_read(a, true);
}
