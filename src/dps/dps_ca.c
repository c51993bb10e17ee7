/* The DPS's CA certificates, which enrollment groups (and individual
 * enrollments) name in attestation.x509.caReferences: fleethub's own REST
 * paths on the DPS host (decisions.md 10), a hub's under /dps (a hub and
 * the DPS may share a host name, and requests go to the DPS by path):
 *
 *   GET    /dps/certificates                        {"value":[record, ...]}
 *   GET    /dps/certificates/{name}                 record
 *   PUT    /dps/certificates/{name}    {"properties":{"certificate":PEM}}
 *   DELETE /dps/certificates/{name}
 *   POST   /dps/certificates/{name}/generateVerificationCode   record + code
 *   POST   /dps/certificates/{name}/verify   {"certificate":PEM of the
 *          verification certificate}
 *
 * Records and proof of possession are core/ca.c's; each change is one store
 * job (read, decide, write). A reference to a CA that is not verified
 * matches no device. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/mem.h"
#include "core/ca.h"
#include "internal.h"

#define CA_LIST_MAX 100

struct ca_job {
	struct dps *d;
	struct http_exchange *ex;
	char name[ENROLLMENT_ID_MAX + 1];
	char if_match[128];
	char now[32];
	enum ca_change op;
	char *text;
	size_t text_len;
	json_t *rec;
	int status;
	char error[300];
};

static void respond_error(struct http_exchange *ex, int status, int code, const char *msg)
{
	char *body = dps__error_json(code, msg);
	http_respond_json(ex, status, NULL, body);
	free(body);
}

static void respond_record(struct http_exchange *ex, const json_t *rec, bool with_code)
{
	json_t *o = ca_render(rec, with_code);
	char *body = json_dumps(o, JSON_COMPACT);
	http_respond_json(ex, 200, NULL, body);
	free(body);
	json_decref(o);
}

static int ca_work(void *arg, struct store_txn *t)
{
	struct ca_job *j = arg;
	char *json = NULL;
	int rc = store_doc_get(t, STORE_CA_CERT, j->d->ca_scope, j->name, &json);
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
		return store_doc_delete(t, STORE_CA_CERT, j->d->ca_scope, j->name);
	char *text = json_dumps(j->rec, JSON_COMPACT);
	rc = store_doc_put(t, STORE_CA_CERT, j->d->ca_scope, j->name, text);
	free(text);
	return rc;
}

static void ca_done(void *arg, int rc)
{
	struct ca_job *j = arg;
	if (rc != 0)
		respond_error(j->ex, 503, 503000, store_write_error(rc));
	else if (j->status)
		respond_error(j->ex, j->status, j->status * 1000 + (j->status == 404 ? 205 : 4),
		              j->error);
	else if (j->op == CA_DELETE)
		http_respond(j->ex, 200, NULL, NULL, 0);
	else
		respond_record(j->ex, j->rec, j->op == CA_CODE);
	json_decref(j->rec);
	free(j->text);
	free(j);
}

/* The certificate text of a PUT or verify body: "certificate", or
 * "properties"."certificate". NULL after answering 400. */
static const char *certificate_of(struct http_exchange *ex, json_t **body, size_t *n)
{
	json_error_t je;
	*body = json_loadb(ex->req->body.data, ex->req->body.len, JSON_REJECT_DUPLICATES, &je);
	json_t *c = json_object_get(*body, "certificate");
	if (!c)
		c = json_object_get(json_object_get(*body, "properties"), "certificate");
	if (!json_is_string(c) || json_string_length(c) > CA_MAX_TEXT) {
		char msg[200];
		snprintf(msg, sizeof msg,
		         "the body must be a JSON object with a \"certificate\" (or "
		         "\"properties\".\"certificate\") string of at most %d bytes",
		         CA_MAX_TEXT);
		respond_error(ex, 400, 400004, msg);
		json_decref(*body);
		return NULL;
	}
	*n = json_string_length(c);
	return json_string_value(c);
}

void dps__ca_change(struct dps *d, struct http_exchange *ex, const char *name,
                    enum ca_change op)
{
	json_t *body = NULL;
	const char *text = NULL;
	size_t n = 0;
	if ((op == CA_PUT || op == CA_VERIFY) && !(text = certificate_of(ex, &body, &n)))
		return;
	struct ca_job *j = xcalloc(1, sizeof *j);
	j->d = d;
	j->ex = ex;
	j->op = op;
	snprintf(j->name, sizeof j->name, "%s", name);
	const char *im = http_request_header(ex->req, "If-Match");
	size_t k = im ? strlen(im) : 0;
	while (k && (*im == ' ' || *im == '"')) {
		im++;
		k--;
	}
	while (k && (im[k - 1] == ' ' || im[k - 1] == '"'))
		k--;
	snprintf(j->if_match, sizeof j->if_match, "%.*s", (int)k, im ? im : "");
	clock_iso8601(clock_now_ms(), j->now);
	if (text) {
		j->text = xstrndup(text, n);
		j->text_len = n;
	}
	json_decref(body);
	store_submit_sized(d->store, ca_work, ca_done, j, n);
}

/* Reads, through the store's completion API (decisions.md 1). */
struct ca_read {
	char scope[264]; /* the DPS's CA scope: work touches only the job */
	struct http_exchange *ex;
	char name[ENROLLMENT_ID_MAX + 1];
	bool list;
	json_t *out; /* the record (get), or the rendered records (list) */
};

static int ca_read_work(void *arg, struct store_txn *t)
{
	struct ca_read *r = arg;
	if (r->list) {
		r->out = json_array();
		return store_doc_list(t, STORE_CA_CERT, r->scope, "", "", CA_LIST_MAX,
		                      ca_collect_rendered, r->out);
	}
	char *json = NULL;
	int rc = store_doc_get(t, STORE_CA_CERT, r->scope, r->name, &json);
	if (rc == 0 && !(r->out = json_loads(json, 0, NULL)))
		rc = FH_EIO;
	free(json);
	return rc;
}

static void ca_read_done(void *arg, int rc)
{
	struct ca_read *r = arg;
	if (rc == FH_ENOTFOUND) {
		char msg[200];
		snprintf(msg, sizeof msg, "no CA certificate named '%s'", r->name);
		respond_error(r->ex, 404, 404205, msg);
	} else if (rc != 0) {
		respond_error(r->ex, 503, 503000, "the service cannot read its store; try again");
	} else if (r->list) {
		json_t *o = json_pack("{s:O}", "value", r->out);
		char *body = json_dumps(o, JSON_COMPACT);
		http_respond_json(r->ex, 200, NULL, body);
		free(body);
		json_decref(o);
	} else {
		respond_record(r->ex, r->out, false);
	}
	json_decref(r->out);
	free(r);
}

static void ca_read(struct dps *d, struct http_exchange *ex, const char *name, bool list)
{
	struct ca_read *r = xcalloc(1, sizeof *r);
	snprintf(r->scope, sizeof r->scope, "%s", d->ca_scope);
	r->ex = ex;
	r->list = list;
	snprintf(r->name, sizeof r->name, "%s", name ? name : "");
	store_read(d->store, ca_read_work, ca_read_done, r);
}

void dps__ca_get(struct dps *d, struct http_exchange *ex, const char *name)
{
	ca_read(d, ex, name, false);
}

void dps__ca_list(struct dps *d, struct http_exchange *ex)
{
	ca_read(d, ex, NULL, true);
}
