/* The webhook call log: one record per custom-allocation webhook call (what
 * `fleethub webhook calls` and GET /registrations/{id}/webhookcalls show),
 * bounded three ways:
 *   - per registration: at most webhook_log_keep records, the oldest
 *     removed by the write that adds one;
 *   - by age: records older than webhook_log_max_age_h are removed by a
 *     sweep every SWEEP_MS, at most SWEEP_BATCH per store job (a job that
 *     removed a full batch is followed at once by another);
 *   - with the registration: deleting a registration deletes its records.
 *
 * Each record is written twice in one job: under "<regid>/<time><seq>"
 * (STORE_WEBHOOK_CALL: a registration's records are one key range) and
 * under "<time><seq>/<regid>" (STORE_WEBHOOK_CALL_TIME: every record in
 * time order, so the sweep reads only what is due, from the start of the
 * key, and never scans). <time> is 13 decimal digits of milliseconds and
 * <seq> 6 digits, so one key derives from the other. All of it runs in
 * store jobs on the writer thread; nothing here scans on the loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "internal.h"

#define SWEEP_MS 60000
#define SWEEP_BATCH 500
#define STAMP_LEN 19 /* 13 digits of ms, 6 of sequence */

/* ---- keys ---- */

/* "<regid>/<stamp>" -> "<stamp>/<regid>"; false when id is not a record key. */
static bool time_key(const char *id, char *out, size_t n)
{
	const char *slash = strrchr(id, '/');
	if (!slash || strlen(slash + 1) != STAMP_LEN)
		return false;
	snprintf(out, n, "%s/%.*s", slash + 1, (int)(slash - id), id);
	return true;
}

/* "<stamp>/<regid>" -> "<regid>/<stamp>". */
static bool call_key(const char *tid, char *out, size_t n)
{
	if (strlen(tid) <= STAMP_LEN + 1 || tid[STAMP_LEN] != '/')
		return false;
	snprintf(out, n, "%s/%.*s", tid + STAMP_LEN + 1, STAMP_LEN, tid);
	return true;
}

/* ---- collecting ids inside a job ---- */

struct ids {
	char **v;
	size_t n, max;
	const char *stop_at; /* time keys: stop at the first id >= this */
};

static int collect(void *arg, const char *id, const char *json)
{
	struct ids *l = arg;
	if (l->n == l->max || (l->stop_at && strcmp(id, l->stop_at) >= 0))
		return 1;
	l->v[l->n++] = xstrdup(id);
	return 0;
}

static void ids_free(struct ids *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

/* Deletes the record with call key id and its time-ordered twin. */
static int delete_record(struct store_txn *t, const char *scope, const char *id)
{
	char tid[ENROLLMENT_ID_MAX + 64];
	int rc = store_doc_delete(t, STORE_WEBHOOK_CALL, scope, id);
	if ((rc == 0 || rc == FH_ENOTFOUND) && time_key(id, tid, sizeof tid)) {
		rc = store_doc_delete(t, STORE_WEBHOOK_CALL_TIME, scope, tid);
		if (rc == FH_ENOTFOUND)
			rc = 0;
	}
	return rc == FH_ENOTFOUND ? 0 : rc;
}

/* Deletes the oldest records of prefix ("<regid>/") beyond keep. */
static int trim(struct store_txn *t, const char *scope, const char *prefix, unsigned keep)
{
	struct ids l = {xcalloc(keep + 64, sizeof(char *)), 0, keep + 64, NULL};
	int rc = store_doc_list(t, STORE_WEBHOOK_CALL, scope, prefix, "", keep + 64, collect, &l);
	for (size_t i = 0; rc == 0 && l.n > keep && i < l.n - keep; i++)
		rc = delete_record(t, scope, l.v[i]);
	ids_free(&l);
	return rc;
}

int dps__calls_delete(struct store_txn *t, const char *scope, const char *regid)
{
	char prefix[ENROLLMENT_ID_MAX + 2];
	snprintf(prefix, sizeof prefix, "%s/", regid);
	return trim(t, scope, prefix, 0);
}

/* ---- logging a call ---- */

struct log_job {
	char scope[256];
	char id[ENROLLMENT_ID_MAX + 32];
	char prefix[ENROLLMENT_ID_MAX + 2];
	unsigned keep;
	char *json;
};

static int log_work(void *arg, struct store_txn *t)
{
	struct log_job *j = arg;
	char tid[ENROLLMENT_ID_MAX + 64];
	time_key(j->id, tid, sizeof tid);
	int rc = store_doc_put(t, STORE_WEBHOOK_CALL, j->scope, j->id, j->json);
	if (rc == 0)
		rc = store_doc_put(t, STORE_WEBHOOK_CALL_TIME, j->scope, tid, "{}");
	if (rc == 0)
		rc = trim(t, j->scope, j->prefix, j->keep);
	return rc;
}

static void log_done(void *arg, int rc)
{
	struct log_job *j = arg;
	if (rc != 0)
		log_at(LOG_WARN, "dps: webhook call log not stored: %s", fh_strerror(rc));
	free(j->json);
	free(j);
}

void dps__calls_log(struct dps *d, const char *regid, int64_t now_ms, char *json)
{
	struct log_job *j = xcalloc(1, sizeof *j);
	snprintf(j->scope, sizeof j->scope, "%s", d->name);
	snprintf(j->prefix, sizeof j->prefix, "%s/", regid);
	snprintf(j->id, sizeof j->id, "%s/%013lld%06llu", regid, (long long)now_ms,
		 (unsigned long long)(++d->op_seq % 1000000));
	j->keep = d->webhook_log_keep;
	j->json = json;
	store_submit(d->store, log_work, log_done, j);
}

/* ---- the sweep by age ---- */

struct sweep_job {
	struct dps *d;
	char scope[256];
	char cutoff[STAMP_LEN + 1];
	size_t removed;
};

static int sweep_work(void *arg, struct store_txn *t)
{
	struct sweep_job *j = arg;
	struct ids l = {xcalloc(SWEEP_BATCH, sizeof(char *)), 0, SWEEP_BATCH, j->cutoff};
	int rc = store_doc_list(t, STORE_WEBHOOK_CALL_TIME, j->scope, "", "", SWEEP_BATCH,
				collect, &l);
	for (size_t i = 0; rc == 0 && i < l.n; i++) {
		char id[ENROLLMENT_ID_MAX + 64];
		rc = store_doc_delete(t, STORE_WEBHOOK_CALL_TIME, j->scope, l.v[i]);
		if (rc == 0 && call_key(l.v[i], id, sizeof id)) {
			rc = store_doc_delete(t, STORE_WEBHOOK_CALL, j->scope, id);
			if (rc == FH_ENOTFOUND)
				rc = 0; /* trimmed by count already */
		}
	}
	if (rc == 0)
		j->removed = l.n;
	ids_free(&l);
	return rc;
}

static void sweep_done(void *arg, int rc)
{
	struct sweep_job *j = arg;
	struct dps *d = j->d;
	d->calls_sweeping = false;
	if (rc != 0)
		log_at(LOG_WARN, "dps %s: old webhook call records not removed: %s", d->name,
		       fh_strerror(rc));
	else if (j->removed == SWEEP_BATCH && !d->stopping)
		dps__calls_sweep(d); /* more are due: go on now */
	free(j);
}

void dps__calls_sweep(struct dps *d)
{
	if (d->calls_sweeping)
		return;
	struct sweep_job *j = xcalloc(1, sizeof *j);
	j->d = d;
	snprintf(j->scope, sizeof j->scope, "%s", d->name);
	int64_t cutoff = clock_now_ms() - (int64_t)d->webhook_log_age_ms;
	snprintf(j->cutoff, sizeof j->cutoff, "%013lld", (long long)(cutoff > 0 ? cutoff : 0));
	d->calls_sweeping = true;
	store_submit(d->store, sweep_work, sweep_done, j);
}

static void on_sweep_timer(uv_timer_t *t)
{
	dps__calls_sweep(t->data);
}

void dps__calls_start(struct dps *d)
{
	uv_timer_init(d->loop, &d->calls_timer);
	d->calls_timer.data = d;
	d->calls_timer_open = true;
	uv_timer_start(&d->calls_timer, on_sweep_timer, SWEEP_MS, SWEEP_MS);
}

void dps__calls_stop(struct dps *d)
{
	if (d->calls_timer_open)
		uv_close((uv_handle_t *)&d->calls_timer, NULL);
	d->calls_timer_open = false;
}
