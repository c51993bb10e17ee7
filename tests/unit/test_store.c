/* Unit tests for src/store/store_sqlite.c: a real uv loop and a database in a
 * temporary directory. Covers the job model (savepoint rollback, completion
 * order, group commit, close with queued jobs), the domain operations,
 * device sessions, store_read, persistence across reopen, the file mode,
 * the schema-version guard, and
 * storage faults (a full disk, failed writes and fsyncs) injected through a
 * VFS that wraps SQLite's own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "base/err.h"
#include "base/log.h"
#include "base/buf.h"
#include "core/twin.h"
#include "codec/query_plan.h"
#include "store/sqlite_query.h"
#include "store/store.h"
#include "support/test_where.h"

struct fixture {
	char dir[64];
	char path[128];
	uv_loop_t loop;
	struct store *s;
	bool pg;        /* a PostgreSQL store (setup_pg) ... */
	char where[512]; /* ... its connection string */
};

/* One job: what it writes and what it returns. */
struct tjob {
	const char *hub;
	char id[32];
	char json[128];
	int64_t etag;
	int with_twin;
	const char *tags; /* the twin's tags when set, else {} */
	int ret;         /* what work returns after writing */
	uv_sem_t *block; /* work waits on it first when set */
	int work_rc;     /* rc seen by done */
	int done_seq;    /* order in which done ran */
	int *counter;
};

static int job_work(void *arg, struct store_txn *txn)
{
	struct tjob *j = arg;
	if (j->block)
		uv_sem_wait(j->block);
	struct store_device d = {.json = j->json, .etag = j->etag};
	int rc = store_device_put(txn, j->hub, j->id, &d);
	if (rc != 0)
		return rc;
	if (j->with_twin) {
		struct store_twin tw = {0};
		store_twin_init_empty(&tw);
		if (j->tags) {
			free(tw.tags);
			tw.tags = strdup(j->tags);
		}
		rc = store_twin_put(txn, j->hub, j->id, &tw);
		store_twin_clear(&tw);
		if (rc != 0)
			return rc;
	}
	return j->ret;
}

static void job_done(void *arg, int rc)
{
	struct tjob *j = arg;
	j->work_rc = rc;
	j->done_seq = (*j->counter)++;
}

static void job_init(struct tjob *j, int *counter, const char *hub, const char *id,
		     const char *status)
{
	memset(j, 0, sizeof *j);
	j->hub = hub;
	snprintf(j->id, sizeof j->id, "%s", id);
	snprintf(j->json, sizeof j->json, "{\"deviceId\":\"%s\",\"status\":\"%s\"}", id, status);
	j->etag = 1;
	j->done_seq = -1;
	j->counter = counter;
}

static void run_until(uv_loop_t *loop, int *counter, int want)
{
	while (*counter < want)
		uv_run(loop, UV_RUN_ONCE);
}

/* Stores device hub/id with a new twin; *counter counts it. */
static void put_device_with_twin(struct fixture *f, int *counter, const char *hub,
				 const char *id)
{
	struct tjob j;
	job_init(&j, counter, hub, id, "enabled");
	j.with_twin = 1;
	store_submit(f->s, job_work, job_done, &j);
	run_until(&f->loop, counter, *counter + 1);
	assert_int_equal(j.work_rc, 0);
}

/* Opens f's store (SQLite at f->path, or PostgreSQL at f->where): 0, or
 * the error, printed. */
static int fixture_open(struct fixture *f)
{
	char err[256] = "";
	int rc = store_open(&f->s, &f->loop, f->pg ? STORE_POSTGRESQL : STORE_SQLITE,
			    f->pg ? f->where : f->path, err, sizeof err);
	if (rc != 0)
		fprintf(stderr, "store_open: %s\n", err);
	return rc;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/fh_store_XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof f->path, "%s/fleethub.db", f->dir);
	uv_loop_init(&f->loop);
	if (fixture_open(f) != 0)
		return -1;
	*state = f;
	return 0;
}

static void fixture_close_store(struct fixture *f)
{
	if (f->s) {
		store_close(f->s);
		f->s = NULL;
		uv_run(&f->loop, UV_RUN_DEFAULT);
	}
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char p[200];
	fixture_close_store(f);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	const char *suffix[] = {"", "-wal", "-shm"};
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

/* The PostgreSQL cases (main): FLEETHUB_TEST_PG is the libpq connection
 * string of a cluster (scripts/pg-dev.sh, as `make test` starts one); each
 * case gets a fresh database. */
static const char *pg_conninfo;

static int setup_pg(void **state)
{
	static unsigned n;
	struct fixture *f = calloc(1, sizeof *f);
	f->pg = true;
	char name[64], sql[128], admin[512];
	snprintf(name, sizeof name, "fh_unit_%d_%u", (int)getpid(), n++);
	snprintf(admin, sizeof admin, "%s dbname=postgres", pg_conninfo);
	PGconn *c = PQconnectdb(admin);
	snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
	PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
	bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "createdb %s: %s\n", name, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	if (!ok)
		return -1;
	snprintf(f->where, sizeof f->where, "%s dbname=%s", pg_conninfo, name);
	uv_loop_init(&f->loop);
	if (fixture_open(f) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown_pg(void **state)
{
	struct fixture *f = *state;
	fixture_close_store(f);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	free(f);
	return 0;
}

static void reopen(struct fixture *f)
{
	fixture_close_store(f);
	assert_int_equal(fixture_open(f), 0);
}

/* JSON text compared as JSON (PostgreSQL's jsonb spaces and orders it
 * its own way). */
static void assert_json(const char *got, const char *want)
{
	json_t *a = json_loads(got, JSON_DECODE_ANY, NULL), *b = json_loads(want, JSON_DECODE_ANY, NULL);
	if (!a || !b || !json_equal(a, b))
		fail_msg("JSON %s, expected %s", got, want);
	json_decref(a);
	json_decref(b);
}

static void test_put_get(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	struct tjob j[2];
	job_init(&j[0], &counter, "hub1", "dev1", "enabled");
	j[0].with_twin = 1;
	job_init(&j[1], &counter, "hub1", "dev2", "disabled");
	j[1].etag = 7;
	store_submit(f->s, job_work, job_done, &j[0]);
	store_submit(f->s, job_work, job_done, &j[1]);
	run_until(&f->loop, &counter, 2);
	assert_int_equal(j[0].work_rc, 0);
	assert_int_equal(j[1].work_rc, 0);
	assert_int_equal(j[0].done_seq, 0);
	assert_int_equal(j[1].done_seq, 1);

	struct store_txn *r = store_reader(f->s);
	struct store_device d;
	assert_int_equal(store_device_get(r, "hub1", "dev2", &d), 0);
	assert_json(d.json, j[1].json);
	assert_int_equal(d.etag, 7);
	store_device_clear(&d);
	assert_null(d.json);
	assert_int_equal(store_device_get(r, "hub1", "nope", &d), FH_ENOTFOUND);
	assert_int_equal(store_device_get(r, "hub2", "dev1", &d), FH_ENOTFOUND);

	struct store_twin tw;
	assert_int_equal(store_twin_get(r, "hub1", "dev1", &tw), 0);
	assert_json(tw.tags, "{}");
	assert_json(tw.desired, "{}");
	assert_json(tw.reported, "{}");
	assert_json(tw.meta, "{}");
	assert_int_equal(tw.version, 1);
	assert_int_equal(tw.desired_version, 1);
	assert_int_equal(tw.reported_version, 1);
	store_twin_clear(&tw);
	assert_null(tw.tags);
	assert_int_equal(store_twin_get(r, "hub1", "dev2", &tw), FH_ENOTFOUND);
	assert_int_equal(store_twin_get_properties(r, "hub1", "dev2", &tw), FH_ENOTFOUND);
	assert_null(tw.desired);
}

/* A job returning FH_EEXIST loses its own changes; its batch-mates keep theirs. */
static void test_savepoint_rollback(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	uv_sem_t sem;
	uv_sem_init(&sem, 0);
	struct tjob j[4];
	job_init(&j[0], &counter, "h", "blocker", "enabled");
	j[0].block = &sem;
	job_init(&j[1], &counter, "h", "a", "enabled");
	job_init(&j[2], &counter, "h", "b", "enabled");
	j[2].with_twin = 1;
	j[2].ret = FH_EEXIST;
	job_init(&j[3], &counter, "h", "c", "enabled");
	store_submit(f->s, job_work, job_done, &j[0]);
	/* The writer is stuck in j[0]: j[1..3] are queued and form one batch. */
	for (int i = 1; i < 4; i++)
		store_submit(f->s, job_work, job_done, &j[i]);
	uv_sem_post(&sem);
	run_until(&f->loop, &counter, 4);
	uv_sem_destroy(&sem);

	for (int i = 0; i < 4; i++)
		assert_int_equal(j[i].done_seq, i);
	assert_int_equal(j[1].work_rc, 0);
	assert_int_equal(j[2].work_rc, FH_EEXIST);
	assert_int_equal(j[3].work_rc, 0);

	struct store_txn *r = store_reader(f->s);
	struct store_device d;
	struct store_twin tw;
	assert_int_equal(store_device_get(r, "h", "a", &d), 0);
	store_device_clear(&d);
	assert_int_equal(store_device_get(r, "h", "b", &d), FH_ENOTFOUND);
	assert_int_equal(store_twin_get(r, "h", "b", &tw), FH_ENOTFOUND);
	assert_int_equal(store_device_get(r, "h", "c", &d), 0);
	store_device_clear(&d);
	assert_int_equal(store_device_get(r, "h", "blocker", &d), 0);
	store_device_clear(&d);
}

struct collect {
	char ids[16][32];
	int n;
	int stop_after;
	int sure;
};

static int collect_dev(void *arg, const char *id, const struct store_device *d)
{
	struct collect *c = arg;
	assert_non_null(d->json);
	assert_true(d->etag > 0);
	snprintf(c->ids[c->n++], sizeof c->ids[0], "%s", id);
	return c->stop_after && c->n >= c->stop_after;
}

static int collect_twin(void *arg, const char *id, const struct store_twin *tw)
{
	struct collect *c = arg;
	assert_string_equal(tw->desired, "{}");
	snprintf(c->ids[c->n++], sizeof c->ids[0], "%s", id);
	return 0;
}

static void test_list_count(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	const char *ids[] = {"d3", "d1", "d5", "d2", "d4"};
	struct tjob j[6];
	for (int i = 0; i < 5; i++) {
		job_init(&j[i], &counter, "hubA", ids[i], i % 2 ? "disabled" : "enabled");
		j[i].with_twin = 1;
		store_submit(f->s, job_work, job_done, &j[i]);
	}
	job_init(&j[5], &counter, "hubB", "d0", "enabled");
	store_submit(f->s, job_work, job_done, &j[5]);
	run_until(&f->loop, &counter, 6);

	struct store_txn *r = store_reader(f->s);
	struct collect c = {0};
	assert_int_equal(store_device_list(r, "hubA", "", 2, collect_dev, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "d1");
	assert_string_equal(c.ids[1], "d2");
	memset(&c, 0, sizeof c);
	assert_int_equal(store_device_list(r, "hubA", "d2", 2, collect_dev, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "d3");
	assert_string_equal(c.ids[1], "d4");
	memset(&c, 0, sizeof c);
	assert_int_equal(store_device_list(r, "hubA", "d4", 2, collect_dev, &c), 0);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.ids[0], "d5");
	memset(&c, 0, sizeof c);
	assert_int_equal(store_device_list(r, "hubA", "d5", 2, collect_dev, &c), 0);
	assert_int_equal(c.n, 0);
	/* Early stop. */
	memset(&c, 0, sizeof c);
	c.stop_after = 3;
	assert_int_equal(store_device_list(r, "hubA", "", 100, collect_dev, &c), 0);
	assert_int_equal(c.n, 3);

	memset(&c, 0, sizeof c);
	assert_int_equal(store_twin_list(r, "hubA", "d1", 10, collect_twin, &c), 0);
	assert_int_equal(c.n, 4);
	assert_string_equal(c.ids[0], "d2");
	assert_string_equal(c.ids[3], "d5");

	int64_t total = -1, enabled = -1;
	assert_int_equal(store_device_count(r, "hubA", &total, &enabled), 0);
	assert_int_equal(total, 5);
	assert_int_equal(enabled, 3);
	assert_int_equal(store_device_count(r, "hubB", &total, &enabled), 0);
	assert_int_equal(total, 1);
	assert_int_equal(enabled, 1);
	assert_int_equal(store_device_count(r, "none", &total, &enabled), 0);
	assert_int_equal(total, 0);
	assert_int_equal(enabled, 0);
}

static int collect_view(void *arg, const char *id, struct store_twin_view *v, bool sure)
{
	struct collect *c = arg;
	assert_non_null(v->twin.tags);
	assert_non_null(v->status);
	c->sure += sure;
	snprintf(c->ids[c->n++], sizeof c->ids[0], "%s", id);
	return c->stop_after && c->n >= c->stop_after ? 7 : 0;
}

struct groups {
	char key[4][32];
	uint64_t count[4];
	double sum[4], max[4];
	int n;
};

static int collect_group(void *arg, const struct store_group *sg)
{
	struct groups *g = arg;
	assert_true(g->n < 4);
	snprintf(g->key[g->n], sizeof g->key[0], "%s",
		 sg->key_type == STORE_KEY_JSON ? sg->key_json : "");
	g->count[g->n] = sg->count;
	g->sum[g->n] = sg->agg[2].sum;
	g->max[g->n] = sg->agg[3].max;
	g->n++;
	return 0;
}

/* Every twin of the hub that may match, in id order from after: the plan
 * narrows (tags.kind = 'odd'), a plan without terms selects all, another
 * hub's twins never show, and each's nonzero return stops the scan and is
 * returned. */
static void test_twin_query(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	char tags[8][64];
	struct tjob j[9];
	for (int i = 0; i < 8; i++) {
		char id[8];
		snprintf(id, sizeof id, "q%d", i);
		snprintf(tags[i], sizeof tags[i], "{\"n\":%d,\"kind\":\"%s\"}", i,
			 i % 2 ? "odd" : "even");
		job_init(&j[i], &counter, "hubQ", id, "enabled");
		j[i].with_twin = 1;
		j[i].tags = tags[i];
		store_submit(f->s, job_work, job_done, &j[i]);
	}
	job_init(&j[8], &counter, "hubR", "q1", "enabled");
	j[8].with_twin = 1;
	j[8].tags = tags[1];
	store_submit(f->s, job_work, job_done, &j[8]);
	run_until(&f->loop, &counter, 9);

	struct query q;
	parse_where("tags.kind = 'odd' AND tags.n > 2", &q);
	struct query_plan plan;
	query_plan_build(&q, &plan);
	struct store_txn *r = store_reader(f->s);
	struct collect c = {0};
	assert_int_equal(store_twin_query(r, "hubQ", &plan, "", false, collect_view, &c), 0);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.sure, 3); /* the plan holds the whole WHERE */
	assert_string_equal(c.ids[0], "q3");
	assert_string_equal(c.ids[2], "q7");
	memset(&c, 0, sizeof c);
	assert_int_equal(store_twin_query(r, "hubQ", &plan, "q3", false, collect_view, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "q5");
	memset(&c, 0, sizeof c);
	assert_int_equal(store_twin_query(r, "hubQ", &plan, "", true, collect_view, &c), 0);
	assert_int_equal(c.n, 0);
	query_free(&q);

	parse_where("IS_DEFINED(tags.n)", &q);
	query_plan_build(&q, &plan);
	memset(&c, 0, sizeof c);
	assert_int_equal(store_twin_query(r, "hubQ", &plan, "", false, collect_view, &c), 0);
	assert_int_equal(c.n, 8);
	assert_int_equal(c.sure, 0); /* query_matches decides */
	memset(&c, 0, sizeof c);
	assert_int_equal(store_twin_query(r, "hubQ", &plan, "", true, collect_view, &c), 0);
	assert_int_equal(c.n, 8);
	memset(&c, 0, sizeof c);
	c.stop_after = 2;
	assert_int_equal(store_twin_query(r, "hubQ", &plan, "", false, collect_view, &c), 7);
	assert_int_equal(c.n, 2);
	memset(&c, 0, sizeof c);
	assert_int_equal(store_twin_query(r, "hubR", &plan, "", false, collect_view, &c), 0);
	assert_int_equal(c.n, 1);
	query_free(&q);

	/* Aggregates: the groups of the rows the store is sure of. */
	struct query aq;
	struct query_error err;
	const char *text = "SELECT tags.kind, COUNT(), SUM(tags.n), MAX(tags.n) FROM devices"
			   " WHERE tags.n > 1.5 GROUP BY tags.kind";
	assert_int_equal(query_parse(text, strlen(text), &aq, &err), 0);
	query_plan_build(&aq, &plan);
	struct groups g = {0};
	assert_int_equal(store_twin_aggregate(r, "hubQ", &plan, collect_group, &g), 0);
	assert_int_equal(g.n, 2);
	assert_string_equal(g.key[0], "\"even\"");
	assert_int_equal(g.count[0], 3); /* 2, 4, 6 */
	assert_true(g.sum[0] == 12 && g.max[0] == 6);
	assert_string_equal(g.key[1], "\"odd\"");
	assert_int_equal(g.count[1], 3); /* 3, 5, 7 */
	assert_true(g.sum[1] == 15 && g.max[1] == 7);
	query_free(&aq);
	text = "SELECT COUNT() FROM devices WHERE tags.n > 100";
	assert_int_equal(query_parse(text, strlen(text), &aq, &err), 0);
	query_plan_build(&aq, &plan);
	memset(&g, 0, sizeof g);
	assert_int_equal(store_twin_aggregate(r, "hubQ", &plan, collect_group, &g), 0);
	assert_int_equal(g.n, 1); /* no GROUP BY: one group, even of none */
	assert_int_equal(g.count[0], 0);
	query_free(&aq);
	text = "SELECT COUNT() FROM devices GROUP BY status";
	assert_int_equal(query_parse(text, strlen(text), &aq, &err), 0);
	query_plan_build(&aq, &plan);
	assert_int_equal(store_twin_aggregate(r, "hubQ", &plan, collect_group, &g), FH_EINVAL);
	query_free(&aq);
}

struct del_job {
	const char *id;
	int rc;
	int *counter;
};

static int del_work(void *arg, struct store_txn *txn)
{
	struct del_job *d = arg;
	return store_device_delete(txn, "h", d->id);
}

static void del_done(void *arg, int rc)
{
	struct del_job *d = arg;
	d->rc = rc;
	(*d->counter)++;
}

static void test_delete(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	struct tjob j;
	job_init(&j, &counter, "h", "x", "enabled");
	j.with_twin = 1;
	store_submit(f->s, job_work, job_done, &j);
	run_until(&f->loop, &counter, 1);
	struct del_job d1 = {"x", 1, &counter}, d2 = {"x", 1, &counter};
	store_submit(f->s, del_work, del_done, &d1);
	store_submit(f->s, del_work, del_done, &d2);
	run_until(&f->loop, &counter, 3);
	assert_int_equal(d1.rc, 0);
	assert_int_equal(d2.rc, FH_ENOTFOUND);
	struct store_device d;
	struct store_twin tw;
	assert_int_equal(store_device_get(store_reader(f->s), "h", "x", &d), FH_ENOTFOUND);
	assert_int_equal(store_twin_get(store_reader(f->s), "h", "x", &tw), FH_ENOTFOUND);
}

struct set_job {
	const char *key, *value;
	int rc;
	int *counter;
};

static int set_work(void *arg, struct store_txn *txn)
{
	struct set_job *s = arg;
	return store_setting_put(txn, s->key, s->value);
}

static void set_done(void *arg, int rc)
{
	struct set_job *s = arg;
	s->rc = rc;
	(*s->counter)++;
}

static void test_settings_persist(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	struct set_job a = {"k1", "v1", 1, &counter}, b = {"k1", "v2", 1, &counter},
		       c = {"k2", "x", 1, &counter};
	store_submit(f->s, set_work, set_done, &a);
	store_submit(f->s, set_work, set_done, &b);
	store_submit(f->s, set_work, set_done, &c);
	struct tjob j;
	job_init(&j, &counter, "h", "persist", "enabled");
	j.with_twin = 1;
	store_submit(f->s, job_work, job_done, &j);
	run_until(&f->loop, &counter, 4);
	assert_int_equal(a.rc, 0);
	assert_int_equal(b.rc, 0);

	char *v = NULL;
	assert_int_equal(store_setting_get(store_reader(f->s), "k1", &v), 0);
	assert_string_equal(v, "v2");
	free(v);
	assert_int_equal(store_setting_get(store_reader(f->s), "zz", &v), FH_ENOTFOUND);
	assert_null(v);

	reopen(f);
	struct store_txn *r = store_reader(f->s);
	assert_int_equal(store_setting_get(r, "k1", &v), 0);
	assert_string_equal(v, "v2");
	free(v);
	assert_int_equal(store_setting_get(r, "k2", &v), 0);
	assert_string_equal(v, "x");
	free(v);
	struct store_device d;
	assert_int_equal(store_device_get(r, "h", "persist", &d), 0);
	assert_string_equal(d.json, j.json);
	store_device_clear(&d);
	struct store_twin tw;
	assert_int_equal(store_twin_get(r, "h", "persist", &tw), 0);
	store_twin_clear(&tw);

	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}


/* DPS documents: put/get/overwrite/delete/list with prefix, after and
 * limit, per kind and per scope, through writer jobs and the reader. */
struct doc_job {
	int (*fn)(struct store_txn *t);
	int rc;
	int *counter;
};

static int doc_work(void *arg, struct store_txn *t)
{
	struct doc_job *j = arg;
	return j->fn(t);
}

static void doc_done(void *arg, int rc)
{
	struct doc_job *j = arg;
	j->rc = rc;
	(*j->counter)++;
}

static int put_docs(struct store_txn *t)
{
	/* "reg-a" sorts just before the prefix "reg-a/", "reg-a0001" just after it */
	static const char *ids[] = {"reg-a/0001", "reg-a/0002", "reg-b/0001", "x%_y",
				    "reg-a",      "reg-a0001"};
	for (int k = STORE_ENROLLMENT; k <= STORE_WEBHOOK_CALL; k++)
		for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
			char json[64];
			snprintf(json, sizeof json, "{\"k\":%d,\"i\":%zu}", k, i);
			if (store_doc_put(t, (enum store_doc_kind)k, "dps1", ids[i], json) != 0)
				return FH_EIO;
		}
	return store_doc_put(t, STORE_ENROLLMENT, "dps2", "reg-a/0001", "{\"other\":1}");
}

static int change_docs(struct store_txn *t)
{
	int rc = store_doc_put(t, STORE_ENROLLMENT, "dps1", "reg-a/0001", "{\"new\":1}");
	if (rc == 0)
		rc = store_doc_delete(t, STORE_REGISTRATION, "dps1", "reg-b/0001");
	if (rc == 0 && store_doc_delete(t, STORE_REGISTRATION, "dps1", "reg-b/0001") != FH_ENOTFOUND)
		rc = FH_EIO;
	return rc;
}

struct collected {
	char ids[8][32];
	int n;
	int stop_after;
};

static int collect(void *arg, const char *id, const char *json)
{
	struct collected *c = arg;
	snprintf(c->ids[c->n++], sizeof c->ids[0], "%s", id);
	return c->stop_after && c->n >= c->stop_after;
}

static void test_documents(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	struct doc_job a = {put_docs, -99, &counter}, b = {change_docs, -99, &counter};
	store_submit(f->s, doc_work, doc_done, &a);
	store_submit(f->s, doc_work, doc_done, &b);
	run_until(&f->loop, &counter, 2);
	assert_int_equal(a.rc, 0);
	assert_int_equal(b.rc, 0);

	struct store_txn *r = store_reader(f->s);
	char *json = NULL;
	assert_int_equal(store_doc_get(r, STORE_ENROLLMENT, "dps1", "reg-a/0001", &json), 0);
	assert_json(json, "{\"new\":1}");
	free(json);
	assert_int_equal(store_doc_get(r, STORE_ENROLLMENT, "dps2", "reg-a/0001", &json), 0);
	assert_json(json, "{\"other\":1}");
	free(json);
	assert_int_equal(store_doc_get(r, STORE_OPERATION, "dps1", "x%_y", &json), 0);
	assert_json(json, "{\"k\":3,\"i\":3}");
	free(json);
	assert_int_equal(store_doc_get(r, STORE_REGISTRATION, "dps1", "reg-b/0001", &json),
			 FH_ENOTFOUND);
	assert_null(json);

	/* prefix, after, limit -> the ids listed */
	static const struct {
		const char *prefix, *after;
		unsigned limit;
		const char *want;
	} lists[] = {
		{"reg-a/", "", 10, "reg-a/0001 reg-a/0002"},
		{"reg-a/", "reg-a/0001", 10, "reg-a/0002"},
		{"reg-a/", "reg-a/0002", 10, ""},
		{"reg-a/", "reg-b", 10, ""},
		{"reg-a/", "", 1, "reg-a/0001"},
		{"", "reg-a/0001", 2, "reg-a/0002 reg-a0001"},
	};
	struct collected c;
	for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
		memset(&c, 0, sizeof c);
		assert_int_equal(store_doc_list(r, STORE_WEBHOOK_CALL, "dps1", lists[i].prefix,
						lists[i].after, lists[i].limit, collect, &c),
				 0);
		char got[256] = "";
		for (int k = 0; k < c.n; k++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", k ? " " : "",
				 c.ids[k]);
		assert_string_equal(got, lists[i].want);
	}
	memset(&c, 0, sizeof c);
	assert_int_equal(store_doc_list(r, STORE_ENROLLMENT_GROUP, "dps1", "x%", "", 10, collect, &c), 0);
	assert_int_equal(c.n, 1); /* '%' is literal, not a pattern */
	memset(&c, 0, sizeof c);
	c.stop_after = 1;
	assert_int_equal(store_doc_list(r, STORE_ENROLLMENT, "dps1", "", "", 10, collect, &c), 0);
	assert_int_equal(c.n, 1);

	reopen(f);
	assert_int_equal(store_doc_get(store_reader(f->s), STORE_ENROLLMENT, "dps1", "reg-a/0001", &json), 0);
	assert_json(json, "{\"new\":1}");
	free(json);
}

/* ---- device sessions ---- */

/* A job that runs fn(txn) and keeps its rc. */
struct fn_job {
	int (*fn)(struct store_txn *t);
	int rc;
	int *counter;
};

static int fn_work(void *arg, struct store_txn *t)
{
	struct fn_job *j = arg;
	return j->fn(t);
}

static void fn_done(void *arg, int rc)
{
	struct fn_job *j = arg;
	j->rc = rc;
	(*j->counter)++;
}

static int run_fn(struct fixture *f, int (*fn)(struct store_txn *t))
{
	int counter = 0;
	struct fn_job j = {fn, -99, &counter};
	store_submit(f->s, fn_work, fn_done, &j);
	run_until(&f->loop, &counter, 1);
	return j.rc;
}

static int put_gen_device(struct store_txn *t)
{
	struct store_device d = {"{\"deviceId\":\"s1\",\"generationId\":\"111\"}", 1};
	return store_device_put(t, "h", "s1", &d);
}

static int put_session_111(struct store_txn *t)
{
	struct store_session ses = {"111", "{\"desired\":0}"};
	return store_session_put(t, "h", "s1", &ses);
}

static int put_session_222(struct store_txn *t)
{
	struct store_session ses = {"222", "{}"};
	return store_session_put(t, "h", "s1", &ses);
}

static int put_session_nodevice(struct store_txn *t)
{
	struct store_session ses = {"111", "{}"};
	return store_session_put(t, "h", "nobody", &ses);
}

static int delete_session(struct store_txn *t)
{
	return store_session_delete(t, "h", "s1");
}

static int delete_s1(struct store_txn *t)
{
	return store_device_delete(t, "h", "s1");
}

/* store_read's work: the session's subs text into arg. */
struct read_job {
	char subs[64];
	int rc;
	int done;
};

static int read_work(void *arg, struct store_txn *t)
{
	struct read_job *j = arg;
	struct store_session ses;
	int rc = store_session_get(t, "h", "s1", &ses);
	if (rc == 0)
		snprintf(j->subs, sizeof j->subs, "%s", ses.subs);
	store_session_clear(&ses);
	return rc;
}

static void read_done(void *arg, int rc)
{
	struct read_job *j = arg;
	j->rc = rc;
	j->done++;
}

/* Sessions belong to one identity generation: written only while it
 * exists, gone with the device, kept across a reopen; store_read runs its
 * work and done once. */
static void test_sessions(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(run_fn(f, put_session_111), FH_ENOTFOUND); /* no device yet */
	assert_int_equal(run_fn(f, put_gen_device), 0);
	assert_int_equal(run_fn(f, put_session_111), 0);
	assert_int_equal(run_fn(f, put_session_222), FH_ENOTFOUND); /* another generation */
	assert_int_equal(run_fn(f, put_session_nodevice), FH_ENOTFOUND);

	struct store_session ses;
	assert_int_equal(store_session_get(store_reader(f->s), "h", "s1", &ses), 0);
	assert_string_equal(ses.generation, "111");
	assert_string_equal(ses.subs, "{\"desired\":0}");
	store_session_clear(&ses);
	assert_null(ses.subs);
	assert_int_equal(store_session_get(store_reader(f->s), "h", "nobody", &ses), FH_ENOTFOUND);

	reopen(f);
	struct read_job rj = {.rc = -99};
	store_read(f->s, read_work, read_done, &rj);
	while (!rj.done)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(rj.done, 1);
	assert_int_equal(rj.rc, 0);
	assert_string_equal(rj.subs, "{\"desired\":0}");

	assert_int_equal(run_fn(f, delete_session), 0);
	assert_int_equal(run_fn(f, delete_session), FH_ENOTFOUND);
	assert_int_equal(run_fn(f, put_session_111), 0);
	assert_int_equal(run_fn(f, delete_s1), 0); /* the device takes its session along */
	assert_int_equal(store_session_get(store_reader(f->s), "h", "s1", &ses), FH_ENOTFOUND);
	rj.done = 0;
	store_read(f->s, read_work, read_done, &rj);
	while (!rj.done)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(rj.rc, FH_ENOTFOUND);
}

static int put_conn_on(struct store_txn *t)
{
	struct store_connection c = {.connected = true, .updated_ms = 1000, .last_activity_ms = 2000};
	return store_connection_put(t, "h", "s1", "111", &c);
}

static int put_conn_other_gen(struct store_txn *t)
{
	struct store_connection c = {.connected = true, .updated_ms = 1000, .last_activity_ms = 2000};
	return store_connection_put(t, "h", "s1", "222", &c);
}

static int reset_conns(struct store_txn *t)
{
	return store_connections_reset(t, "h", 5000);
}

static int put_s1_twin(struct store_txn *t)
{
	struct store_twin tw = {0};
	store_twin_init_empty(&tw);
	int rc = store_twin_put(t, "h", "s1", &tw);
	store_twin_clear(&tw);
	return rc;
}

/* Connection rows: written only for the device's generation, shown in the
 * twin view, cleared by a start-up reset, removed with the device. */
static void test_connections(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(run_fn(f, put_conn_on), FH_ENOTFOUND); /* no device yet */
	assert_int_equal(run_fn(f, put_gen_device), 0);
	assert_int_equal(run_fn(f, put_s1_twin), 0);
	struct store_twin_view v;
	assert_int_equal(store_twin_view_get(store_reader(f->s), "h", "s1", &v), 0);
	assert_false(v.connected);
	assert_int_equal(v.last_activity_ms, 0);
	store_twin_view_clear(&v);
	assert_int_equal(run_fn(f, put_conn_other_gen), FH_ENOTFOUND);
	assert_int_equal(run_fn(f, put_conn_on), 0);
	assert_int_equal(store_twin_view_get(store_reader(f->s), "h", "s1", &v), 0);
	assert_true(v.connected);
	assert_int_equal(v.last_activity_ms, 2000);
	store_twin_view_clear(&v);
	struct store_connection c;
	assert_int_equal(store_connection_get(store_reader(f->s), "h", "s1", &c), 0);
	assert_true(c.connected && c.updated_ms == 1000 && c.last_activity_ms == 2000);
	/* the node that wrote it (the embedded store has one node: none) */
	assert_string_equal(c.node, f->pg ? store_node(f->s) : "");
	assert_int_equal(store_connection_get(store_reader(f->s), "h", "nobody", &c), FH_ENOTFOUND);
	assert_int_equal(run_fn(f, reset_conns), 0);
	assert_int_equal(store_connection_get(store_reader(f->s), "h", "s1", &c), 0);
	assert_true(!c.connected && c.updated_ms == 5000);
	assert_int_equal(store_twin_view_get(store_reader(f->s), "h", "s1", &v), 0);
	assert_false(v.connected);
	assert_int_equal(v.last_activity_ms, 2000); /* kept: when it was last seen */
	store_twin_view_clear(&v);
	assert_int_equal(run_fn(f, put_conn_on), 0);
	assert_int_equal(run_fn(f, delete_s1), 0);
	assert_int_equal(run_fn(f, put_gen_device), 0); /* the same id again */
	assert_int_equal(run_fn(f, put_s1_twin), 0);
	assert_int_equal(store_twin_view_get(store_reader(f->s), "h", "s1", &v), 0);
	assert_false(v.connected); /* the old row went with the old device */
	store_twin_view_clear(&v);
}

/* ---- messages: the event log, C2D queues, feedback ---- */

static int64_t ev_seq[8], ev_off[8];
static int64_t ev_at_ms;
static bool ev_group; /* append_three: the three in one call */

static int append_three(struct store_txn *t)
{
	static const char *const bodies[] = {"one", "two", "three"};
	struct store_event e[3];
	for (int i = 0; i < 3; i++)
		e[i] = (struct store_event){.enqueued_ms = ev_at_ms + i * 1000,
					    .device = "s1",
					    .props = "{\"properties\":{\"k\":\"v\"},\"system\":{}}",
					    .body = (const uint8_t *)bodies[i],
					    .body_len = strlen(bodies[i])};
	for (int i = 0; i < 3; i += ev_group ? 3 : 1) {
		int rc = store_events_append(t, "h", 2, &e[i], ev_group ? 3 : 1);
		if (rc != 0)
			return rc;
	}
	for (int i = 0; i < 3; i++) {
		ev_seq[i] = e[i].seq;
		ev_off[i] = e[i].offset;
	}
	return 0;
}

struct ev_seen {
	int n;
	int64_t seqs[8], enqueued[8];
	char bodies[8][16];
};

static int ev_each(void *arg, const struct store_event *e)
{
	struct ev_seen *s = arg;
	s->seqs[s->n] = e->seq;
	s->enqueued[s->n] = e->enqueued_ms;
	snprintf(s->bodies[s->n], sizeof s->bodies[0], "%.*s", (int)e->body_len,
		 (const char *)e->body);
	assert_string_equal(e->device, "s1");
	assert_non_null(strstr(e->props, "\"k\":\"v\""));
	s->n++;
	return 0;
}

static int trim_first(struct store_txn *t)
{
	unsigned n = 0;
	int rc = store_event_trim(t, "h", 2, ev_at_ms + 500, 0, 100, &n);
	return rc ? rc : (int)n;
}

static int trim_by_size(struct store_txn *t)
{
	unsigned n = 0;
	int rc = store_event_trim(t, "h", 2, 0, 41, 100, &n); /* bytes of one event kept */
	return rc ? rc : (int)n;
}

/* Appends number from 0 per partition, offsets grow, reads start at a
 * sequence number, times are found, retention deletes from the oldest and
 * never gives a number again; another partition is apart. */
static void test_event_log(void **state)
{
	struct fixture *f = *state;
	ev_at_ms = 1765000000000;
	assert_int_equal(run_fn(f, append_three), 0);
	assert_true(ev_seq[0] == 0 && ev_seq[1] == 1 && ev_seq[2] == 2);
	assert_true(ev_off[0] == 0 && ev_off[1] > ev_off[0] && ev_off[2] > ev_off[1]);
	struct store_txn *r = store_reader(f->s);
	struct ev_seen seen = {0};
	assert_int_equal(store_event_read(r, "h", 2, 1, 10, ev_each, &seen), 0);
	assert_int_equal(seen.n, 2);
	assert_string_equal(seen.bodies[0], "two");
	assert_string_equal(seen.bodies[1], "three");
	struct store_partition p;
	assert_int_equal(store_event_partition(r, "h", 2, &p), 0);
	assert_true(p.begin_seq == 0 && p.next_seq == 3 && p.last_enqueued_ms == ev_at_ms + 2000);
	assert_int_equal(store_event_partition(r, "h", 1, &p), 0);
	assert_true(p.next_seq == 0 && p.last_enqueued_ms == 0); /* never written */
	int64_t at;
	assert_int_equal(store_event_seek_time(r, "h", 2, ev_at_ms + 1, &at), 0);
	assert_int_equal(at, 1);
	assert_int_equal(store_event_seek_time(r, "h", 2, ev_at_ms + 9999, &at), 0);
	assert_int_equal(at, 3);
	assert_int_equal(run_fn(f, trim_first), 1);
	assert_int_equal(store_event_partition(store_reader(f->s), "h", 2, &p), 0);
	assert_true(p.begin_seq == 1 && p.next_seq == 3);
	assert_int_equal(run_fn(f, trim_by_size), 1);
	assert_int_equal(store_event_partition(store_reader(f->s), "h", 2, &p), 0);
	assert_true(p.begin_seq == 2 && p.next_seq == 3);
	int64_t last_off = ev_off[2];
	ev_group = true; /* three in one call, the first two timed before the last stored */
	assert_int_equal(run_fn(f, append_three), 0);
	ev_group = false;
	assert_int_equal(ev_seq[0], 3); /* numbers are never given twice */
	assert_true(ev_seq[1] == 4 && ev_seq[2] == 5);
	assert_true(ev_off[0] > last_off && ev_off[1] > ev_off[0] && ev_off[2] > ev_off[1]);
	memset(&seen, 0, sizeof seen);
	assert_int_equal(store_event_read(store_reader(f->s), "h", 2, 0, 10, ev_each, &seen), 0);
	assert_int_equal(seen.n, 4);
	assert_int_equal(seen.seqs[0], 2);
	for (int i = 1; i < 4; i++) /* raised to the last stored time: never back */
		assert_int_equal(seen.enqueued[i], ev_at_ms + 2000);
	assert_string_equal(seen.bodies[3], "three");
	assert_int_equal(store_event_partition(store_reader(f->s), "h", 2, &p), 0);
	assert_true(p.begin_seq == 2 && p.next_seq == 6 && p.last_enqueued_ms == ev_at_ms + 2000);
}

static int64_t c2d_seq;

static int c2d_add_one(struct store_txn *t)
{
	return store_c2d_add(t, "h", "s1", "{\"messageId\":\"m\"}", (const uint8_t *)"\0\1", 2,
			     1000, 3, &c2d_seq);
}

static int c2d_delete_last(struct store_txn *t)
{
	return store_c2d_delete(t, "h", "s1", c2d_seq);
}

static int c2d_update_last(struct store_txn *t)
{
	return store_c2d_update(t, "h", "s1", c2d_seq, "{\"messageId\":\"changed\"}");
}

static int c2d_each(void *arg, const struct store_c2d *m)
{
	int *n = arg;
	assert_int_equal(m->body_len, 2);
	assert_true(m->body[0] == 0 && m->body[1] == 1);
	(*n)++;
	return 0;
}

static int expired_each(void *arg, const char *hub, const char *id, const struct store_c2d *m)
{
	int *n = arg;
	assert_string_equal(hub, "h");
	assert_string_equal(id, "s1");
	(*n)++;
	return 0;
}

static int fb_add(struct store_txn *t)
{
	int rc = store_feedback_add(t, "h", 1000, "{\"statusCode\":\"Success\"}");
	if (rc == 0)
		rc = store_feedback_add(t, "h", 5000, "{\"statusCode\":\"Expired\"}");
	return rc;
}

static int fb_trim(struct store_txn *t)
{
	return store_feedback_trim(t, "h", 2000, 0, 100);
}

static int fb_each(void *arg, int64_t seq, const char *json)
{
	int *n = arg;
	(*n)++;
	assert_non_null(strstr(json, "Expired"));
	return 0;
}

/* The queue: no device, no queue; the limit; numbers only grow, also
 * once it was empty; binary bodies; expiry listing; feedback retention;
 * the device's delete takes its queue. */
static void test_c2d_queue(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(run_fn(f, c2d_add_one), FH_ENOTFOUND);
	assert_int_equal(run_fn(f, put_gen_device), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(run_fn(f, c2d_add_one), 0);
	assert_int_equal(run_fn(f, c2d_add_one), FH_ETOOBIG);
	int64_t n = 0;
	assert_int_equal(store_c2d_count(store_reader(f->s), "h", "s1", &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(store_c2d_count(store_reader(f->s), "h", NULL, &n), 0);
	assert_int_equal(n, 3);
	int seen = 0;
	assert_int_equal(store_c2d_list(store_reader(f->s), "h", "s1", 0, 10, c2d_each, &seen), 0);
	assert_int_equal(seen, 3);
	assert_int_equal(run_fn(f, c2d_update_last), 0);
	assert_int_equal(run_fn(f, c2d_delete_last), 0);
	assert_int_equal(run_fn(f, c2d_delete_last), FH_ENOTFOUND);
	assert_int_equal(run_fn(f, c2d_update_last), FH_ENOTFOUND);
	int64_t last = c2d_seq;
	assert_int_equal(run_fn(f, c2d_add_one), 0);
	assert_true(c2d_seq > last); /* not the deleted one's number again */
	seen = 0;
	assert_int_equal(store_c2d_expired(store_reader(f->s), 999, 10, expired_each, &seen), 0);
	assert_int_equal(seen, 0);
	assert_int_equal(store_c2d_expired(store_reader(f->s), 1001, 10, expired_each, &seen), 0);
	assert_int_equal(seen, 3);
	assert_int_equal(run_fn(f, fb_add), 0);
	assert_int_equal(run_fn(f, fb_trim), 0);
	seen = 0;
	assert_int_equal(store_feedback_list(store_reader(f->s), "h", 0, 10, fb_each, &seen), 0);
	assert_int_equal(seen, 1);
	assert_int_equal(run_fn(f, delete_s1), 0);
	assert_int_equal(store_c2d_count(store_reader(f->s), "h", "s1", &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(run_fn(f, put_gen_device), 0);
	assert_int_equal(run_fn(f, c2d_add_one), 0);
	assert_int_equal(c2d_seq, 1); /* a new identity starts over */
}

/* Twin indexes: the paths of the current list, exactly. */
static struct qp_path index_paths[2];
static size_t index_n;

static int make_indexes(struct store_txn *t)
{
	return store_twin_indexes(t, index_paths, index_n);
}

/* The names of the query indexes in the database file, and whether
 * SQLite serves sql (a query's SELECT) with one of them. */
static int query_indexes(const char *path, const char *sql, bool *used)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master WHERE type ="
						" 'index' AND name LIKE 'twins_q_%'",
					    -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (sql) {
		struct buf e = BUF_INIT;
		buf_printf(&e, "EXPLAIN QUERY PLAN %s", sql);
		assert_int_equal(sqlite3_prepare_v2(db, e.data, -1, &st, NULL), SQLITE_OK);
		*used = false;
		while (sqlite3_step(st) == SQLITE_ROW)
			*used |= strstr((const char *)sqlite3_column_text(st, 3), "twins_q_") != NULL;
		sqlite3_finalize(st);
		buf_free(&e);
	}
	sqlite3_close(db);
	return n;
}

/* query_indexes: made for the listed paths, dropped when no longer
 * listed, idempotent; an equality on an indexed path is served by its
 * index (the plan's expression is the indexed one). */
static void test_twin_indexes(void **state)
{
	struct fixture *f = *state;
	struct query q1, q2;
	parse_where("tags.kind = 'odd' AND properties.reported.temp > 3", &q1);
	struct query_plan plan;
	query_plan_build(&q1, &plan);
	for (int i = 0; i < 2; i++) {
		index_paths[i].source = plan.terms[i].source;
		index_paths[i].seg = plan.terms[i].seg;
		index_paths[i].nseg = plan.terms[i].nseg;
	}
	index_n = 2;
	assert_int_equal(run_fn(f, make_indexes), 0);
	assert_int_equal(run_fn(f, make_indexes), 0);
	parse_where("tags.kind = 'odd'", &q2);
	struct query_plan eq;
	query_plan_build(&q2, &eq);
	struct buf sql = BUF_INIT;
	buf_appends(&sql, "SELECT t.id FROM twins t WHERE t.hub = 'h' AND t.id > '' AND (");
	sqlite_query_where(&eq, &sql);
	buf_appends(&sql, ") ORDER BY t.id");
	bool used;
	assert_int_equal(query_indexes(f->path, sql.data, &used), 2);
	assert_true(used);
	index_n = 1;
	index_paths[0] = index_paths[1]; /* the reported path only */
	assert_int_equal(run_fn(f, make_indexes), 0);
	assert_int_equal(query_indexes(f->path, sql.data, &used), 1);
	assert_false(used);
	index_n = 0;
	assert_int_equal(run_fn(f, make_indexes), 0);
	assert_int_equal(query_indexes(f->path, NULL, NULL), 0);
	/* The device id is the key already: not an index path. */
	index_paths[0].source = QP_DEVICE_ID;
	index_n = 1;
	assert_int_equal(run_fn(f, make_indexes), FH_EINVAL);
	buf_free(&sql);
	query_free(&q1);
	query_free(&q2);
}

/* 2,600 twins of hub "hr" with tags.n = their number. */
#define RANGE_TWINS 2600
static int put_range_twins(struct store_txn *t)
{
	for (int i = 0; i < RANGE_TWINS; i++) {
		char id[16], json[64], tags[32];
		snprintf(id, sizeof id, "r%04d", i);
		snprintf(json, sizeof json, "{\"deviceId\":\"%s\"}", id);
		snprintf(tags, sizeof tags, "{\"n\":%d}", i);
		struct store_device d = {json, 1};
		struct store_twin tw = {0};
		store_twin_init_empty(&tw);
		free(tw.tags);
		tw.tags = strdup(tags);
		int rc = store_device_put(t, "hr", id, &d);
		if (rc == 0)
			rc = store_twin_put(t, "hr", id, &tw);
		store_twin_clear(&tw);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int count_view(void *arg, const char *id, struct store_twin_view *v, bool sure)
{
	struct collect *c = arg;
	if (c->n < 16)
		snprintf(c->ids[c->n], sizeof c->ids[0], "%s", id);
	c->n++;
	c->sure += sure;
	return 0;
}

/* A range on an indexed path: read through the index when it holds few
 * twins (SQLite alone would read every twin in id order), in id order
 * through the table when it holds many; the rows are the same either way. */
static void test_range_index(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(run_fn(f, put_range_twins), 0);
	struct query q;
	parse_where("tags.n > 2590.5", &q);
	struct query_plan plan;
	query_plan_build(&q, &plan);
	index_paths[0] = (struct qp_path){plan.terms[0].source, plan.terms[0].seg, plan.terms[0].nseg};
	index_n = 1;
	assert_int_equal(run_fn(f, make_indexes), 0);

	struct store_txn *r = store_reader(f->s);
	struct buf sql = BUF_INIT;
	sqlite_twin_query_sql(r, "hr", &plan, false, &sql);
	bool used;
	assert_int_equal(query_indexes(f->path, sql.data, &used), 1);
	assert_true(used); /* 9 of 2,600 */
	struct collect c = {0};
	assert_int_equal(store_twin_query(r, "hr", &plan, "", false, count_view, &c), 0);
	assert_int_equal(c.n, 9);
	assert_int_equal(c.sure, 9);
	assert_string_equal(c.ids[0], "r2591");
	assert_string_equal(c.ids[8], "r2599");
	memset(&c, 0, sizeof c);
	assert_int_equal(store_twin_query(r, "hr", &plan, "r2595", false, count_view, &c), 0);
	assert_int_equal(c.n, 4); /* paging after an id works through the index too */
	query_free(&q);

	parse_where("tags.n >= 100", &q);
	query_plan_build(&q, &plan);
	buf_reset(&sql);
	sqlite_twin_query_sql(r, "hr", &plan, false, &sql);
	assert_null(strstr(sql.data, "INDEXED BY")); /* 2,500 of 2,600: one pass */
	memset(&c, 0, sizeof c);
	assert_int_equal(store_twin_query(r, "hr", &plan, "", false, count_view, &c), 0);
	assert_int_equal(c.n, RANGE_TWINS - 100);
	query_free(&q);
	buf_free(&sql);
}

/* store_read_slow: work on a worker thread (not the loop's), against its own
 * snapshot; done on the loop, once. */
struct slow_job {
	pthread_t loop_thread, work_thread;
	char subs[64];
	int rc, done;
};

static int slow_work_fn(void *arg, struct store_txn *t)
{
	struct slow_job *j = arg;
	j->work_thread = pthread_self();
	struct store_session ses;
	int rc = store_session_get(t, "h", "s1", &ses);
	if (rc == 0)
		snprintf(j->subs, sizeof j->subs, "%s", ses.subs);
	store_session_clear(&ses);
	return rc;
}

static void slow_done_fn(void *arg, int rc)
{
	struct slow_job *j = arg;
	assert_true(pthread_equal(pthread_self(), j->loop_thread));
	j->rc = rc;
	j->done++;
}

static void test_read_slow(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(run_fn(f, put_gen_device), 0);
	assert_int_equal(run_fn(f, put_session_111), 0);
	struct slow_job j = {.loop_thread = pthread_self(), .rc = -99};
	store_read_slow(f->s, slow_work_fn, slow_done_fn, &j);
	assert_int_equal(j.done, 0); /* never before the call returns */
	while (!j.done)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(j.done, 1);
	assert_int_equal(j.rc, 0);
	assert_false(pthread_equal(j.work_thread, j.loop_thread));
	assert_string_equal(j.subs, "{\"desired\":0}");
	/* A slow read still in flight when the store closes completes. */
	struct slow_job k = {.loop_thread = pthread_self(), .rc = -99};
	store_read_slow(f->s, slow_work_fn, slow_done_fn, &k);
	fixture_close_store(f);
	assert_int_equal(k.done, 1);
}

static void test_newer_schema(void **state)
{
	struct fixture *f = *state;
	fixture_close_store(f);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	char err[256] = "";
	struct store *s = (struct store *)1;
	assert_int_not_equal(store_open(&s, &f->loop, STORE_SQLITE, f->path, err, sizeof err), 0);
	assert_null(s);
	assert_string_equal(err, "database schema 99 is newer than this fleethub (9)");
}

#define GROUP_N 1000

static void test_group_commit(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	struct tjob *j = calloc(GROUP_N, sizeof *j);
	for (int i = 0; i < GROUP_N; i++) {
		char id[32];
		snprintf(id, sizeof id, "g%04d", i);
		job_init(&j[i], &counter, "hubG", id, i % 4 ? "enabled" : "disabled");
		store_submit(f->s, job_work, job_done, &j[i]);
	}
	run_until(&f->loop, &counter, GROUP_N);
	for (int i = 0; i < GROUP_N; i++) {
		assert_int_equal(j[i].work_rc, 0);
		assert_int_equal(j[i].done_seq, i);
	}
	int64_t total, enabled;
	assert_int_equal(store_device_count(store_reader(f->s), "hubG", &total, &enabled), 0);
	assert_int_equal(total, GROUP_N);
	assert_int_equal(enabled, GROUP_N * 3 / 4);
	free(j);
}

/* store_close finishes queued jobs and runs their done callbacks. */
static void test_close_drains(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	struct tjob j[50];
	for (int i = 0; i < 50; i++) {
		char id[16];
		snprintf(id, sizeof id, "q%02d", i);
		job_init(&j[i], &counter, "hubQ", id, "enabled");
		store_submit(f->s, job_work, job_done, &j[i]);
	}
	fixture_close_store(f);
	assert_int_equal(counter, 50);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(j[i].work_rc, 0);
		assert_int_equal(j[i].done_seq, i);
	}
	reopen(f);
	int64_t total, enabled;
	assert_int_equal(store_device_count(store_reader(f->s), "hubQ", &total, &enabled), 0);
	assert_int_equal(total, 50);
}

struct chain {
	struct tjob first; /* first: job_work reads the chain as its first job */
	struct tjob second;
	struct store *s;
	int counter;
};

static void chain_done(void *arg, int rc)
{
	struct chain *c = arg;
	c->first.work_rc = rc;
	c->counter++;
	/* Submitted from a done callback while store_close drains. */
	store_submit(c->s, job_work, job_done, &c->second);
}

static void test_close_runs_chained_jobs(void **state)
{
	struct fixture *f = *state;
	struct chain c;
	memset(&c, 0, sizeof c);
	c.s = f->s;
	job_init(&c.first, &c.counter, "hubC", "one", "enabled");
	job_init(&c.second, &c.counter, "hubC", "two", "enabled");
	store_submit(f->s, job_work, chain_done, &c);
	fixture_close_store(f);
	assert_int_equal(c.counter, 2);
	assert_int_equal(c.first.work_rc, 0);
	assert_int_equal(c.second.work_rc, 0);
	reopen(f);
	struct store_device d;
	assert_int_equal(store_device_get(store_reader(f->s), "hubC", "two", &d), 0);
	store_device_clear(&d);
	char p[200];
	struct stat st;
	snprintf(p, sizeof p, "%s-wal", f->path);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}

/* A large document: 25 overflow pages, so each job adds ~26 WAL frames. */
static int big_doc_work(void *arg, struct store_txn *t)
{
	int *n = arg;
	char id[32];
	snprintf(id, sizeof id, "big-%d", *n);
	size_t len = 100 * 1024;
	char *json = malloc(len + 16);
	memset(json, 'x', len + 16);
	memcpy(json, "{\"v\":\"", 6);
	memcpy(json + len - 2, "\"}", 3);
	int rc = store_doc_put(t, STORE_REGISTRATION, "dps1", id, json);
	free(json);
	return rc;
}

static void big_doc_done(void *arg, int rc)
{
	int *n = arg;
	assert_int_equal(rc, 0);
	(*n)++;
}

/* Checkpoints run beside the writer (its autocheckpoint is off) and keep
 * the WAL bounded: 480 commits of ~26 frames each (12,500 frames, 50 MB)
 * leave a WAL file far smaller than what was written, and every document
 * is there afterwards. Without a checkpointer the WAL would hold them all. */
static void test_wal_bounded(void **state)
{
	struct fixture *f = *state;
	int n = 0;
	for (int i = 0; i < 480; i++) {
		store_submit(f->s, big_doc_work, big_doc_done, &n);
		run_until(&f->loop, &n, i + 1);
	}
	char p[200];
	struct stat st;
	snprintf(p, sizeof p, "%s-wal", f->path);
	assert_int_equal(stat(p, &st), 0);
	assert_true(st.st_size < 8000 * 4096);
	char *json = NULL;
	assert_int_equal(store_doc_get(store_reader(f->s), STORE_REGISTRATION, "dps1", "big-479",
				       &json),
			 0);
	assert_int_equal(strlen(json), 100 * 1024);
	free(json);
}

/* The backlog counts every job from submit to done; store_admit refuses
 * client writes beyond the job and byte bounds while the writer is busy,
 * and admits them again as soon as the backlog drained. */
static void test_backlog_bounds(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	unsigned jobs;
	size_t bytes;
	uv_sem_t block;
	uv_sem_init(&block, 0);
	struct tjob j[4];
	assert_int_equal(store_admit(f->s, 1u << 30), 0); /* no bound by default */
	store_set_backlog_limit(f->s, 3, 1000);
	for (int i = 0; i < 4; i++) {
		char id[16];
		snprintf(id, sizeof id, "b%d", i);
		job_init(&j[i], &counter, "hubB", id, "enabled");
	}
	j[0].block = &block; /* the writer waits inside the first job */
	assert_int_equal(store_admit(f->s, 5000), 0); /* empty: even a big one */
	store_submit_sized(f->s, job_work, job_done, &j[0], 600);
	assert_int_equal(store_admit(f->s, 500), FH_EAGAIN); /* 600 + 500 > 1000 */
	assert_int_equal(store_admit(f->s, 400), 0);
	store_submit_sized(f->s, job_work, job_done, &j[1], 400);
	/* Server-owed writes are never refused, and count. */
	store_submit(f->s, job_work, job_done, &j[2]);
	store_backlog(f->s, &jobs, &bytes);
	assert_int_equal(jobs, 3);
	assert_int_equal(bytes, 1000);
	assert_int_equal(store_admit(f->s, 0), FH_EAGAIN); /* 3 jobs */
	uv_sem_post(&block);
	run_until(&f->loop, &counter, 3);
	store_backlog(f->s, &jobs, &bytes);
	assert_int_equal(jobs, 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(store_admit(f->s, 1000), 0);
	store_submit_sized(f->s, job_work, job_done, &j[3], 1000);
	run_until(&f->loop, &counter, 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(j[i].work_rc, 0);
	uv_sem_destroy(&block);
}

static void test_twin_init_clear(void **state)
{
	struct store_twin tw;
	store_twin_init_empty(&tw);
	assert_string_equal(tw.tags, "{}");
	assert_string_equal(tw.meta, "{}");
	assert_int_equal(tw.version, 1);
	store_twin_clear(&tw);
	assert_null(tw.desired);
	assert_int_equal(tw.version, 0);
}

/* store_twin_patch_reported (json_patch in SQL, metadata by two merge
 * patches) leaves the same reported section and metadata as
 * twin_apply_reported, over patches that add, replace leaves by objects and
 * objects by leaves, delete, and go past the size limit. */
struct rjob {
	const char *patch;
	json_t *parsed;
	struct buf clear, set;
	int64_t version;
	size_t len;
	int rc;
	int *counter;
};

static int rjob_work(void *arg, struct store_txn *txn)
{
	struct rjob *j = arg;
	return store_twin_patch_reported(txn, "h", j->patch[0] == '!' ? "nobody" : "d",
					 j->patch[0] == '!' ? j->patch + 1 : j->patch,
					 j->clear.data, j->set.data, &j->version, &j->len);
}

static void rjob_done(void *arg, int rc)
{
	struct rjob *j = arg;
	j->rc = rc;
	(*j->counter)++;
}

static void test_twin_patch_reported(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	put_device_with_twin(f, &counter, "h", "d");
	struct store_twin mem = {0};
	assert_int_equal(store_twin_get(store_reader(f->s), "h", "d", &mem), 0);
	const char *patches[] = {
		"{\"a\":1,\"b\":{\"c\":\"x\",\"d\":[1,2]}}",
		"{\"b\":{\"c\":null,\"e\":{\"f\":true}}}",
		"{\"b\":5,\"a\":{\"g\":1}}",          /* object -> leaf, leaf -> object */
		"{\"a\":null,\"q\\\"k\":2.5,\"b\":{}}", /* delete; quote in a key */
		"{\"z\":{\"y\":{\"x\":null}}}",
	};
	const char *now = "2026-01-01T00:00:00.000Z";
	for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
		struct rjob j = {.patch = patches[i], .counter = &counter};
		j.parsed = json_loads(patches[i], 0, NULL);
		assert_non_null(j.parsed);
		twin_reported_meta_patches(j.parsed, now, &j.clear, &j.set);
		struct twin_error err;
		assert_int_equal(twin_apply_reported(&mem, j.parsed, now, &twin_limits_default, &err),
				 0);
		store_submit(f->s, rjob_work, rjob_done, &j);
		run_until(&f->loop, &counter, (int)i + 2);
		assert_int_equal(j.rc, 0);
		assert_int_equal(j.version, mem.reported_version);
		struct store_twin db = {0};
		assert_int_equal(store_twin_get(store_reader(f->s), "h", "d", &db), 0);
		assert_int_equal(db.reported_version, mem.reported_version);
		assert_int_equal(db.version, mem.version);
		assert_int_equal(j.len, strlen(db.reported));
		json_t *a = json_loads(db.reported, 0, NULL), *b = json_loads(mem.reported, 0, NULL);
		json_t *ma = json_loads(db.meta, 0, NULL), *mb = json_loads(mem.meta, 0, NULL);
		assert_true(json_equal(a, b));
		assert_true(json_equal(json_object_get(ma, "reported"), json_object_get(mb, "reported")));
		/* What a device's GET reads: the same sections and versions. */
		struct store_twin props;
		assert_int_equal(store_twin_get_properties(store_reader(f->s), "h", "d", &props), 0);
		assert_string_equal(props.desired, db.desired);
		assert_string_equal(props.reported, db.reported);
		assert_int_equal(props.desired_version, db.desired_version);
		assert_int_equal(props.reported_version, db.reported_version);
		assert_null(props.tags);
		assert_null(props.meta);
		store_twin_clear(&props);
		json_decref(a);
		json_decref(b);
		json_decref(ma);
		json_decref(mb);
		store_twin_clear(&db);
		json_decref(j.parsed);
		buf_free(&j.clear);
		buf_free(&j.set);
	}
	/* An unknown device's twin. */
	struct rjob j = {.patch = "!{\"a\":1}", .counter = &counter};
	buf_appends(&j.clear, "{}");
	buf_appends(&j.set, "{}");
	store_submit(f->s, rjob_work, rjob_done, &j);
	run_until(&f->loop, &counter, 7);
	assert_int_equal(j.rc, FH_ENOTFOUND);
	buf_free(&j.clear);
	buf_free(&j.set);
	struct twin_error err;
	assert_int_equal(twin_check_reported_size(32 * 1024, &twin_limits_default, &err), 0);
	assert_int_equal(twin_check_reported_size(32 * 1024 + 1, &twin_limits_default, &err),
			 FH_EINVAL);
	assert_non_null(strstr(err.message, "properties.reported"));
	store_twin_clear(&mem);
}

/* A service PATCH merged by the store against twin_apply_service. */
struct sjob {
	const char *tags, *desired; /* patch texts or NULL */
	struct buf clear, set;
	int64_t if_version;
	struct store_twin_view view;
	int rc;
	int *counter;
};

static int sjob_work(void *arg, struct store_txn *txn)
{
	struct sjob *j = arg;
	struct store_twin_service_patch p = {j->tags, j->desired, j->clear.data, j->set.data,
					     j->if_version};
	int rc = store_twin_patch_service(txn, "h", "d", &p);
	return rc ? rc : store_twin_view_get(txn, "h", "d", &j->view);
}

static void sjob_done(void *arg, int rc)
{
	struct sjob *j = arg;
	j->rc = rc;
	(*j->counter)++;
}

static void assert_json_text_equal(const char *x, const char *y)
{
	json_t *a = json_loads(x, 0, NULL), *b = json_loads(y, 0, NULL);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(json_equal(a, b));
	json_decref(a);
	json_decref(b);
}

static void test_twin_patch_service(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	struct tjob dj;
	job_init(&dj, &counter, "h", "d", "enabled");
	dj.with_twin = 1;
	store_submit(f->s, job_work, job_done, &dj);
	run_until(&f->loop, &counter, 1);
	struct store_twin mem = {0};
	assert_int_equal(store_twin_get(store_reader(f->s), "h", "d", &mem), 0);
	static const char *const patches[][2] = {
		{NULL, "{\"a\":1,\"b\":{\"c\":\"x\",\"d\":[1,2]}}"},
		{"{\"t\":{\"u\":1}}", "{\"b\":{\"c\":null,\"e\":{\"f\":true}}}"},
		{NULL, "{\"b\":5,\"a\":{\"g\":1}}"}, /* object -> leaf, leaf -> object */
		{"{\"t\":null,\"v\":\"w\"}", NULL},  /* tags only */
		{NULL, "{\"a\":null,\"q\\\"k\":2.5,\"b\":{}}"},
		{NULL, "{}"},
		{NULL, "{\"z\":{\"y\":{\"x\":null}}}"},
	};
	const char *now = "2026-01-01T00:00:00.000Z";
	for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
		struct sjob j = {.tags = patches[i][0], .desired = patches[i][1], .counter = &counter};
		json_t *tags = j.tags ? json_loads(j.tags, 0, NULL) : NULL;
		json_t *desired = j.desired ? json_loads(j.desired, 0, NULL) : NULL;
		twin_service_meta_patches(tags, desired, now, &j.clear, &j.set);
		/* Every other patch names the current version. */
		j.if_version = i % 2 ? mem.version : -1;
		struct twin_error err;
		json_t *notice = NULL;
		assert_int_equal(twin_apply_service(&mem, tags, desired, false, now,
						    &twin_limits_default, &err, &notice),
				 0);
		store_submit(f->s, sjob_work, sjob_done, &j);
		run_until(&f->loop, &counter, (int)i + 2);
		assert_int_equal(j.rc, 0);
		struct store_twin *db = &j.view.twin;
		assert_int_equal(db->version, mem.version);
		assert_int_equal(db->desired_version, mem.desired_version);
		assert_int_equal(db->reported_version, mem.reported_version);
		assert_int_equal(j.view.tags_len, strlen(db->tags));
		assert_int_equal(j.view.desired_len, strlen(db->desired));
		assert_json_text_equal(db->tags, mem.tags);
		assert_json_text_equal(db->desired, mem.desired);
		json_t *mb = json_loads(mem.meta, 0, NULL);
		char *md = json_dumps(json_object_get(mb, "desired"), JSON_COMPACT);
		assert_json_text_equal(j.view.meta_desired, md);
		free(md);
		/* The tags metadata is not in the view: compare the stored one. */
		struct store_twin full = {0};
		assert_int_equal(store_twin_get(store_reader(f->s), "h", "d", &full), 0);
		json_t *ma = json_loads(full.meta, 0, NULL);
		static const char *const secs[] = {"tags", "desired", "reported"};
		for (int k = 0; k < 3; k++) { /* a section never touched may be absent */
			json_t *x = json_object_get(ma, secs[k]), *y = json_object_get(mb, secs[k]);
			json_t *empty = json_object();
			assert_true(json_equal(x ? x : empty, y ? y : empty));
			json_decref(empty);
		}
		json_decref(ma);
		json_decref(mb);
		store_twin_clear(&full);
		/* The notification is the patch with the new $version. */
		if (desired) {
			char *n = twin_render_notice(j.desired, db->desired_version);
			char *want = json_dumps(notice, JSON_COMPACT);
			assert_json_text_equal(n, want);
			free(n);
			free(want);
		}
		assert_string_equal(j.view.status, "\"enabled\"");
		assert_null(j.view.capabilities);
		json_decref(notice);
		json_decref(tags);
		json_decref(desired);
		buf_free(&j.clear);
		buf_free(&j.set);
		store_twin_view_clear(&j.view);
	}
	/* A stale version changes nothing. */
	int base = (int)(sizeof patches / sizeof patches[0]) + 1;
	struct sjob j = {.desired = "{\"a\":2}", .counter = &counter, .if_version = mem.version - 1};
	buf_appends(&j.clear, "{}");
	buf_appends(&j.set, "{}");
	store_submit(f->s, sjob_work, sjob_done, &j);
	run_until(&f->loop, &counter, base + 1);
	assert_int_equal(j.rc, FH_EPRECOND);
	struct store_twin db = {0};
	assert_int_equal(store_twin_get(store_reader(f->s), "h", "d", &db), 0);
	assert_int_equal(db.version, mem.version);
	store_twin_clear(&db);
	buf_free(&j.clear);
	buf_free(&j.set);
	store_twin_view_clear(&j.view);
	store_twin_clear(&mem);
	struct twin_error err;
	assert_int_equal(twin_check_size(TWIN_TAGS, 8 * 1024 + 1, &twin_limits_default, &err),
			 FH_EINVAL);
	assert_non_null(strstr(err.message, "tags"));
}

/* The reader's shared transaction. A done reads its own commit, and so
 * does every read after it (read-your-writes: a device that got its 204
 * and then GETs sees its report). The reads of one loop iteration share a
 * snapshot, which the prepare phase ends: an idle loop holds none, so a
 * TRUNCATE checkpoint is not kept waiting by it. */
struct ryw_job {
	struct rjob r;
	struct store *s;
	int64_t seen; /* reported_version read by done */
};

static void ryw_done(void *arg, int rc)
{
	struct ryw_job *j = arg;
	struct store_twin tw;
	j->r.rc = rc;
	assert_int_equal(store_twin_get_properties(store_reader(j->s), "h", "d", &tw), 0);
	j->seen = tw.reported_version;
	store_twin_clear(&tw);
	(*j->r.counter)++;
}

static int64_t reported_version(struct fixture *f)
{
	struct store_twin tw;
	assert_int_equal(store_twin_get_properties(store_reader(f->s), "h", "d", &tw), 0);
	int64_t v = tw.reported_version;
	store_twin_clear(&tw);
	return v;
}

static void test_read_your_writes(void **state)
{
	struct fixture *f = *state;
	int counter = 0;
	put_device_with_twin(f, &counter, "h", "d");

	/* A read opens the shared transaction; the write commits meanwhile. */
	assert_int_equal(reported_version(f), 1);
	struct ryw_job j = {.r = {.patch = "{\"a\":1}", .counter = &counter}, .s = f->s};
	buf_appends(&j.r.clear, "{}");
	buf_appends(&j.r.set, "{}");
	store_submit(f->s, rjob_work, ryw_done, &j);
	run_until(&f->loop, &counter, 2);
	assert_int_equal(j.r.rc, 0);
	assert_int_equal(j.r.version, 2);
	assert_int_equal(j.seen, 2);
	assert_int_equal(reported_version(f), 2);
	buf_free(&j.r.clear);
	buf_free(&j.r.set);

	/* A commit from elsewhere while the transaction is open: this
	 * iteration's reads keep their snapshot, and it holds a checkpoint
	 * back; after the prepare phase both are free. */
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "UPDATE twins SET reported_version = 9", NULL, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(reported_version(f), 2);
	assert_int_equal(sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
			 SQLITE_BUSY);
	uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
			 SQLITE_OK);
	assert_int_equal(reported_version(f), 9);
	sqlite3_close(db);

	/* Completions that run with no prepare phase before them (here
	 * store_close's; on a busy loop, a poll that goes round again) end the
	 * transaction themselves. */
	assert_int_equal(reported_version(f), 9);
	struct ryw_job k = {.r = {.patch = "{\"b\":2}", .counter = &counter}, .s = f->s};
	buf_appends(&k.r.clear, "{}");
	buf_appends(&k.r.set, "{}");
	store_submit(f->s, rjob_work, ryw_done, &k);
	fixture_close_store(f);
	assert_int_equal(k.r.rc, 0);
	assert_int_equal(k.seen, 10);
	buf_free(&k.r.clear);
	buf_free(&k.r.set);
}

/* ---- storage faults: a VFS in front of SQLite's default one ----------
 * Every file the store opens goes through it; fault_write / fault_sync,
 * when non-zero, are what xWrite / xSync return instead of doing anything
 * (SQLITE_FULL is what the unix VFS answers for ENOSPC). */
static sqlite3_vfs *real_vfs;
static int fault_write, fault_sync;
static int main_db_opens;

struct ffile {
	sqlite3_file base;
	sqlite3_file *real; /* follows this struct in the same allocation */
};

#define REAL(f) (((struct ffile *)(f))->real)

static int f_close(sqlite3_file *f)
{
	return REAL(f)->pMethods->xClose(REAL(f));
}
static int f_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
	return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int f_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
	return fault_write ? fault_write : REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 n)
{
	return REAL(f)->pMethods->xTruncate(REAL(f), n);
}
static int f_sync(sqlite3_file *f, int flags)
{
	return fault_sync ? fault_sync : REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *n)
{
	return REAL(f)->pMethods->xFileSize(REAL(f), n);
}
static int f_lock(sqlite3_file *f, int l)
{
	return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int f_unlock(sqlite3_file *f, int l)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_reserved(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_control(sqlite3_file *f, int op, void *arg)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_device(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int i, int sz, int ext, void volatile **p)
{
	return REAL(f)->pMethods->xShmMap(REAL(f), i, sz, ext, p);
}
static int f_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
	return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void f_shm_barrier(sqlite3_file *f)
{
	REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int del)
{
	return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **p)
{
	return REAL(f)->pMethods->xFetch(REAL(f), o, n, p);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
	return REAL(f)->pMethods->xUnfetch(REAL(f), o, p);
}

static const sqlite3_io_methods fault_io = {
	3, f_close, f_read, f_write, f_truncate, f_sync, f_size, f_lock, f_unlock, f_reserved,
	f_control, f_sector, f_device, f_shm_map, f_shm_lock, f_shm_barrier, f_shm_unmap, f_fetch,
	f_unfetch,
};

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
	struct ffile *ff = (struct ffile *)f;
	ff->real = (sqlite3_file *)(ff + 1);
	int rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out);
	ff->base.pMethods = rc == SQLITE_OK ? &fault_io : NULL;
	if (rc == SQLITE_OK && (flags & SQLITE_OPEN_MAIN_DB))
		main_db_opens++;
	return rc;
}

static sqlite3_vfs fault_vfs;

/* Puts the fault VFS in front of the default one (once per process). */
static void fault_vfs_install(void)
{
	if (real_vfs)
		return;
	real_vfs = sqlite3_vfs_find(NULL);
	fault_vfs = *real_vfs;
	fault_vfs.zName = "fault";
	fault_vfs.szOsFile = (int)sizeof(struct ffile) + real_vfs->szOsFile;
	fault_vfs.xOpen = f_open;
	fault_vfs.pNext = NULL;
	assert_int_equal(sqlite3_vfs_register(&fault_vfs, 1), SQLITE_OK);
}

static int setup_faults(void **state)
{
	fault_vfs_install();
	fault_write = fault_sync = 0;
	return setup(state);
}

static int teardown_faults(void **state)
{
	fault_write = fault_sync = 0;
	return teardown(state);
}

/* Submits one device put of id and returns its rc once done. */
static int put_one(struct fixture *f, const char *id)
{
	int counter = 0;
	struct tjob j;
	job_init(&j, &counter, "hubF", id, "enabled");
	j.with_twin = 1;
	store_submit(f->s, job_work, job_done, &j);
	run_until(&f->loop, &counter, 1);
	return j.work_rc;
}

static int has_device(struct fixture *f, const char *id)
{
	struct store_device d;
	int rc = store_device_get(store_reader(f->s), "hubF", id, &d);
	store_device_clear(&d);
	return rc == 0;
}

/* A full disk: the batch is refused with FH_ENOSPC and stores nothing;
 * reads go on; the next write after space returns works, without
 * reopening anything. */
static void test_disk_full(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(put_one(f, "before"), 0);
	fault_write = SQLITE_FULL;
	assert_int_equal(put_one(f, "full1"), FH_ENOSPC);
	assert_int_equal(put_one(f, "full2"), FH_ENOSPC);
	assert_true(has_device(f, "before"));
	assert_false(has_device(f, "full1"));
	int opens = main_db_opens;
	fault_write = 0;
	assert_int_equal(put_one(f, "after"), 0);
	assert_int_equal(main_db_opens, opens);
	assert_true(has_device(f, "after"));
	assert_false(has_device(f, "full2"));
}

/* A failed fsync: the batch is refused with FH_EIO (nothing acknowledged);
 * while it keeps failing every batch is refused; once it works, the writer
 * reopens its connection and checkpoints before writing, and everything
 * acknowledged survives a reopen of the store with an intact database. */
static void test_fsync_error(void **state)
{
	struct fixture *f = *state;
	assert_int_equal(put_one(f, "before"), 0);
	fault_sync = SQLITE_IOERR_FSYNC;
	assert_int_equal(put_one(f, "lost1"), FH_EIO);
	assert_false(has_device(f, "lost1"));
	int opens = main_db_opens;
	assert_int_equal(put_one(f, "lost2"), FH_EIO); /* the recovery fails too */
	assert_true(has_device(f, "before"));
	fault_sync = 0;
	assert_int_equal(put_one(f, "after"), 0);
	assert_true(main_db_opens > opens); /* the writer was reopened */
	fault_write = SQLITE_IOERR_WRITE;
	assert_int_equal(put_one(f, "lost3"), FH_EIO);
	fault_write = 0;
	assert_int_equal(put_one(f, "after2"), 0);

	reopen(f);
	assert_true(has_device(f, "before"));
	assert_true(has_device(f, "after"));
	assert_true(has_device(f, "after2"));
	assert_false(has_device(f, "lost1"));
	assert_false(has_device(f, "lost2"));
	assert_false(has_device(f, "lost3"));
	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* The messages clients get name the cause first. */
static void test_write_error_text(void **state)
{
	assert_string_equal(store_write_error(FH_ENOSPC),
			    "storage full: the change was not stored; try again when space is freed");
	assert_string_equal(store_write_error(FH_EIO),
			    "storage I/O error: the change was not stored; try again");
}

int main(void)
{
	log_min_level = LOG_WARN;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
		cmocka_unit_test_setup_teardown(test_savepoint_rollback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_twin_query, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_settings_persist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_documents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_c2d_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_twin_indexes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_range_index, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_slow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_drains, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_runs_chained_jobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_twin_patch_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_twin_patch_service, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_your_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backlog_bounds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wal_bounded, setup, teardown),
		cmocka_unit_test(test_twin_init_clear),
		cmocka_unit_test_setup_teardown(test_disk_full, setup_faults, teardown_faults),
		cmocka_unit_test_setup_teardown(test_fsync_error, setup_faults, teardown_faults),
		cmocka_unit_test(test_write_error_text),
	};
	/* The backend-neutral cases again on PostgreSQL (make unit-pg sets
	 * FLEETHUB_TEST_PG; then only these run). Left out: what reads the
	 * SQLite files, and what compares stored JSON text (jsonb spaces it). */
	const struct CMUnitTest pg_tests[] = {
		cmocka_unit_test_setup_teardown(test_put_get, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_documents, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_list_count, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_delete, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_group_commit, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_close_drains, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_savepoint_rollback, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_backlog_bounds, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_read_slow, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_sessions, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_connections, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_event_log, setup_pg, teardown_pg),
		cmocka_unit_test_setup_teardown(test_c2d_queue, setup_pg, teardown_pg),
	};
	pg_conninfo = getenv("FLEETHUB_TEST_PG");
	if (pg_conninfo && *pg_conninfo)
		return cmocka_run_group_tests_name("store on PostgreSQL", pg_tests, NULL, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
