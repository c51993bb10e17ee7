/* The store's shared runtime (backend.h): the queues of write jobs, the
 * writer threads (one per shard) that hand batches to the backend, the
 * completions posted back to the loop, the backlog, reads on libuv's
 * worker pool; and the dispatch of store.h's domain operations to the
 * backend of the txn.
 *
 * Invariants:
 * - A job's done runs exactly once, on the loop thread, after its batch
 *   committed (or failed as a whole), in submission order within its shard
 *   (so for one key, and for all jobs without a key): a shard's batches
 *   are taken in FIFO order, jobs keep their order within one, and the
 *   completed list is FIFO.
 * - The backlog counters are the loop thread's: store_submit adds the job
 *   and its cost, run_completions takes them off just before the job's
 *   done runs (so a done that submits a follow-up sees the room it left).
 * - struct store is freed (be->free) only when its handles are closed and
 *   no slow read is in flight. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/mem.h"
#include "store/backend.h"

/* ---- job lists ---- */

static void list_push(struct store_job_list *l, struct store_job *j)
{
	j->next = NULL;
	if (l->tail)
		l->tail->next = j;
	else
		l->head = j;
	l->tail = j;
}

static void list_append(struct store_job_list *l, struct store_job_list *more)
{
	if (!more->head)
		return;
	if (l->tail)
		l->tail->next = more->head;
	else
		l->head = more->head;
	l->tail = more->tail;
	more->head = more->tail = NULL;
}

/* Moves up to max jobs from the front of src to dst (which must be empty). */
static void list_take(struct store_job_list *src, struct store_job_list *dst, unsigned max)
{
	struct store_job *last = NULL, *j = src->head;
	unsigned n = 0;
	dst->head = dst->tail = NULL;
	if (!j)
		return;
	while (j && n < max) {
		last = j;
		j = j->next;
		n++;
	}
	dst->head = src->head;
	dst->tail = last;
	last->next = NULL;
	src->head = j;
	if (!j)
		src->tail = NULL;
}

/* ---- the writer thread and the completions ---- */

void store__batch_fail(struct store_job_list *batch, int rc)
{
	for (struct store_job *j = batch->head; j; j = j->next)
		j->rc = rc;
}

unsigned long store__batch_count(const struct store_job_list *batch)
{
	unsigned long n = 0;
	for (const struct store_job *j = batch->head; j; j = j->next)
		n++;
	return n;
}

void store__post(struct store *s, struct store_job_list *batch)
{
	uv_mutex_lock(&s->done_mu);
	list_append(&s->completed, batch);
	uv_mutex_unlock(&s->done_mu);
	uv_async_send(&s->async);
}

static void writer_main(void *arg)
{
	struct store_shard *sh = arg;
	struct store *s = sh->s;
	for (;;) {
		struct store_job_list batch;
		uv_mutex_lock(&sh->mu);
		while (!sh->pending.head && !sh->closing)
			uv_cond_wait(&sh->cond, &sh->mu);
		if (!sh->pending.head) { /* closing and drained */
			uv_mutex_unlock(&sh->mu);
			return;
		}
		list_take(&sh->pending, &batch, s->batch_max);
		uv_mutex_unlock(&sh->mu);
		s->be->run_batch(s, sh->index, &batch);
	}
}

/* Runs every completed job's done callback, in order. Loop thread only.
 * Returns whether anything ran. */
static int run_completions(struct store *s)
{
	struct store_job_list l;
	uv_mutex_lock(&s->done_mu);
	l = s->completed;
	s->completed.head = s->completed.tail = NULL;
	uv_mutex_unlock(&s->done_mu);
	int any = l.head != NULL;
	if (any && s->be->before_dones)
		s->be->before_dones(s);
	for (struct store_job *j = l.head, *next; j; j = next) {
		next = j->next;
		s->backlog_jobs--;
		s->backlog_bytes -= j->cost;
		if (j->done)
			j->done(j->arg, j->rc);
		free(j);
	}
	return any;
}

static void on_async(uv_async_t *h)
{
	run_completions(h->data);
}

static void maybe_free(struct store *s)
{
	if (s->open_handles > 0 || s->slow_inflight > 0)
		return; /* the last handle's close, or slow read's done, frees it */
	for (unsigned i = 0; i < s->nshards; i++) {
		uv_mutex_destroy(&s->shards[i].mu);
		uv_cond_destroy(&s->shards[i].cond);
	}
	uv_mutex_destroy(&s->done_mu);
	s->be->free(s);
}

void store__handle_closed(struct store *s)
{
	s->open_handles--;
	maybe_free(s);
}

static void on_async_closed(uv_handle_t *h)
{
	store__handle_closed(h->data);
}

int store__start(struct store *s, const struct store_backend *be, uv_loop_t *loop,
		 unsigned batch_max, unsigned nshards, char *err, size_t errlen)
{
	s->be = be;
	s->loop = loop;
	s->batch_max = batch_max;
	s->nshards = nshards < 1 ? 1 : nshards > STORE_SHARDS_MAX ? STORE_SHARDS_MAX : nshards;
	if (uv_mutex_init(&s->done_mu) != 0) {
		snprintf(err, errlen, "cannot create locks");
		return FH_EIO;
	}
	for (unsigned i = 0; i < s->nshards; i++) {
		struct store_shard *sh = &s->shards[i];
		sh->s = s;
		sh->index = i;
		if (uv_mutex_init(&sh->mu) != 0 || uv_cond_init(&sh->cond) != 0) {
			snprintf(err, errlen, "cannot create locks");
			return FH_EIO;
		}
	}
	if (uv_async_init(loop, &s->async, on_async) != 0) {
		snprintf(err, errlen, "cannot create async handle");
		return FH_EIO;
	}
	s->async.data = s;
	s->open_handles++;
	for (unsigned i = 0; i < s->nshards; i++) {
		if (uv_thread_create(&s->shards[i].thread, writer_main, &s->shards[i]) != 0) {
			snprintf(err, errlen, "cannot start the store's writer threads");
			return FH_EIO;
		}
		s->shards[i].started = 1;
	}
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < s->nshards; i++) {
		struct store_shard *sh = &s->shards[i];
		uv_mutex_lock(&sh->mu);
		sh->closing = 1;
		uv_cond_signal(&sh->cond);
		uv_mutex_unlock(&sh->mu);
	}
	for (unsigned i = 0; i < s->nshards; i++) {
		if (s->shards[i].started)
			uv_thread_join(&s->shards[i].thread);
		s->shards[i].started = 0;
	}
	if (s->be->writer_stopped)
		s->be->writer_stopped(s);
	/* The writers are gone: finish here, including jobs that done
	 * callbacks submit while we drain. */
	for (;;) {
		bool any = false;
		for (unsigned i = 0; i < s->nshards; i++) {
			struct store_shard *sh = &s->shards[i];
			struct store_job_list batch;
			uv_mutex_lock(&sh->mu);
			list_take(&sh->pending, &batch, s->batch_max);
			uv_mutex_unlock(&sh->mu);
			if (batch.head) {
				any = true;
				s->be->run_batch(s, i, &batch);
			}
		}
		if (!run_completions(s) && !any)
			break;
	}
	s->be->close(s);
	uv_close((uv_handle_t *)&s->async, on_async_closed);
}

/* ---- reads ---- */

struct store_txn *store_reader(struct store *s)
{
	return s->be->reader(s);
}

void store_read(struct store *s, store_work_fn work, store_done_fn done, void *arg)
{
	s->be->read(s, work, done, arg);
}

struct worker_req {
	uv_work_t req;
	struct store *s;
	store_work_fn work;
	store_done_fn done;
	void *arg;
	int rc;
};

static void worker_work(uv_work_t *w)
{
	struct worker_req *r = w->data;
	struct store *s = r->s;
	struct store_txn *t = s->be->slow_begin(s);
	r->rc = t ? r->work(r->arg, t) : FH_EUNAVAIL;
	if (t)
		s->be->slow_end(s, t);
}

static void worker_after(uv_work_t *w, int status)
{
	struct worker_req *r = w->data;
	struct store *s = r->s;
	s->slow_inflight--;
	r->done(r->arg, status == 0 ? r->rc : FH_EIO);
	free(r);
	maybe_free(s);
}

void store__read_on_worker(struct store *s, store_work_fn work, store_done_fn done, void *arg)
{
	struct worker_req *r = xcalloc(1, sizeof *r);
	r->req.data = r;
	r->s = s;
	r->work = work;
	r->done = done;
	r->arg = arg;
	s->slow_inflight++;
	if (uv_queue_work(s->loop, &r->req, worker_work, worker_after) != 0) {
		s->slow_inflight--;
		free(r);
		done(arg, FH_EIO);
	}
}

void store_read_slow(struct store *s, store_work_fn work, store_done_fn done, void *arg)
{
	store__read_on_worker(s, work, done, arg);
}

unsigned store_read_slow_waiting(const struct store *s)
{
	return s->slow_inflight;
}

/* ---- writes and the backlog ---- */

void store_submit(struct store *s, store_work_fn work, store_done_fn done, void *arg)
{
	store_submit_sized(s, work, done, arg, 0);
}

/* The shard of key (FNV-1a): 0 without one. */
static struct store_shard *shard_of(struct store *s, const char *key)
{
	if (!key || s->nshards == 1)
		return &s->shards[0];
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return &s->shards[h % s->nshards];
}

static void submit(struct store *s, const char *key, store_work_fn work, store_done_fn done,
		   void *arg, size_t cost, uint32_t order)
{
	struct store_job *j = xmalloc(sizeof *j);
	j->order = order;
	j->work = work;
	j->done = done;
	j->arg = arg;
	j->cost = cost;
	j->rc = 0;
	s->backlog_jobs++;
	s->backlog_bytes += cost;
	struct store_shard *sh = shard_of(s, key);
	uv_mutex_lock(&sh->mu);
	list_push(&sh->pending, j);
	uv_cond_signal(&sh->cond);
	uv_mutex_unlock(&sh->mu);
}

void store_submit_sized(struct store *s, store_work_fn work, store_done_fn done, void *arg,
			size_t cost)
{
	submit(s, NULL, work, done, arg, cost, 0);
}

void store_submit_keyed(struct store *s, const char *key, store_work_fn work, store_done_fn done,
			void *arg, size_t cost)
{
	submit(s, key, work, done, arg, cost, 0);
}

void store_submit_ordered(struct store *s, const char *key, uint32_t order, store_work_fn work,
			  store_done_fn done, void *arg, size_t cost)
{
	submit(s, key, work, done, arg, cost, order);
}

void store__batch_sort(struct store_job_list *batch)
{
	/* Insertion into a new list, after the last job of an order not
	 * greater: stable, and batches are short. */
	struct store_job_list out = {NULL, NULL};
	struct store_job *j = batch->head;
	while (j) {
		struct store_job *next = j->next;
		if (!out.tail || out.tail->order <= j->order) {
			j->next = NULL;
			if (out.tail)
				out.tail->next = j;
			else
				out.head = j;
			out.tail = j;
		} else if (out.head->order > j->order) {
			j->next = out.head;
			out.head = j;
		} else {
			struct store_job *p = out.head;
			while (p->next && p->next->order <= j->order)
				p = p->next;
			j->next = p->next;
			p->next = j;
		}
		j = next;
	}
	*batch = out;
}

void store_set_backlog_limit(struct store *s, unsigned max_jobs, size_t max_bytes)
{
	s->max_jobs = max_jobs;
	s->max_bytes = max_bytes;
}

int store_admit(const struct store *s, size_t cost)
{
	if (s->max_jobs && s->backlog_jobs >= s->max_jobs)
		return FH_EAGAIN;
	/* One write larger than the whole bound still goes through alone. */
	if (s->max_bytes && s->backlog_bytes > 0 && s->backlog_bytes + cost > s->max_bytes)
		return FH_EAGAIN;
	return 0;
}

void store_backlog(const struct store *s, unsigned *jobs, size_t *bytes)
{
	*jobs = s->backlog_jobs;
	*bytes = s->backlog_bytes;
}

void store_session_clear(struct store_session *ses)
{
	free(ses->generation);
	free(ses->subs);
	memset(ses, 0, sizeof *ses);
}

const char *store_write_error(int rc)
{
	if (rc == FH_ENOSPC)
		return "storage full: the change was not stored; try again when space is freed";
	if (rc == FH_EUNAVAIL)
		return "database unavailable: the change was not stored; try again";
	if (rc == FH_EAGAIN)
		return "the change met a concurrent change of another node and was not stored; "
		       "try again";
	return "storage I/O error: the change was not stored; try again";
}

void store_set_node(struct store *s, const char *node)
{
	snprintf(s->node, sizeof s->node, "%s", node);
}

const char *store_node(const struct store *s)
{
	return s->node;
}

bool store_shared(const struct store *s)
{
	return s->be->listen != NULL;
}

const char *store_backend_name(const struct store *s)
{
	return s->be->name;
}

int store_open(struct store **out, uv_loop_t *loop, enum store_kind kind, const char *where,
	       char *err, size_t errlen)
{
	if (kind == STORE_POSTGRESQL)
		return store_pg_open(out, loop, where, err, errlen);
	return store_sqlite_open(out, loop, where, err, errlen);
}

/* ---- the domain operations, dispatched to the txn's backend ---- */

int store_device_get(struct store_txn *t, const char *hub, const char *id,
		     struct store_device *out)
{
	return t->ops->device_get(t, hub, id, out);
}

int store_device_put(struct store_txn *t, const char *hub, const char *id,
		     const struct store_device *d)
{
	return t->ops->device_put(t, hub, id, d);
}

int store_device_delete(struct store_txn *t, const char *hub, const char *id)
{
	return t->ops->device_delete(t, hub, id);
}

int store_device_list(struct store_txn *t, const char *hub, const char *after, unsigned limit,
		      int (*each)(void *arg, const char *id, const struct store_device *d),
		      void *arg)
{
	return t->ops->device_list(t, hub, after, limit, each, arg);
}

int store_device_count(struct store_txn *t, const char *hub, int64_t *total, int64_t *enabled)
{
	return t->ops->device_count(t, hub, total, enabled);
}

int store_twin_get(struct store_txn *t, const char *hub, const char *id, struct store_twin *out)
{
	return t->ops->twin_get(t, hub, id, out);
}

int store_twin_get_properties(struct store_txn *t, const char *hub, const char *id,
			      struct store_twin *out)
{
	return t->ops->twin_get_properties(t, hub, id, out);
}

int store_twin_put(struct store_txn *t, const char *hub, const char *id,
		   const struct store_twin *tw)
{
	return t->ops->twin_put(t, hub, id, tw);
}

int store_twin_patch_reported(struct store_txn *t, const char *hub, const char *id,
			      const char *patch, const char *meta_clear, const char *meta_set,
			      int64_t *reported_version, size_t *reported_len)
{
	return t->ops->twin_patch_reported(t, hub, id, patch, meta_clear, meta_set,
					   reported_version, reported_len);
}

int store_twin_patch_service(struct store_txn *t, const char *hub, const char *id,
			     const struct store_twin_service_patch *p)
{
	return t->ops->twin_patch_service(t, hub, id, p);
}

int store_twin_view_get(struct store_txn *t, const char *hub, const char *id,
			struct store_twin_view *out)
{
	return t->ops->twin_view_get(t, hub, id, out);
}

int store_twin_query(struct store_txn *t, const char *hub, const struct query_plan *plan,
		     const char *after, bool unsure_only,
		     int (*each)(void *arg, const char *id, struct store_twin_view *v, bool sure),
		     void *arg)
{
	return t->ops->twin_query(t, hub, plan, after, unsure_only, each, arg);
}

int store_twin_indexes(struct store_txn *t, const struct qp_path *paths, size_t n)
{
	return t->ops->twin_indexes(t, paths, n);
}

int store_twin_aggregate(struct store_txn *t, const char *hub, const struct query_plan *plan,
			 int (*each)(void *arg, const struct store_group *g), void *arg)
{
	return t->ops->twin_aggregate(t, hub, plan, each, arg);
}

int store_twin_list(struct store_txn *t, const char *hub, const char *after, unsigned limit,
		    int (*each)(void *arg, const char *id, const struct store_twin *tw),
		    void *arg)
{
	return t->ops->twin_list(t, hub, after, limit, each, arg);
}

int store_session_get(struct store_txn *t, const char *hub, const char *id,
		      struct store_session *out)
{
	return t->ops->session_get(t, hub, id, out);
}

int store_session_put(struct store_txn *t, const char *hub, const char *id,
		      const struct store_session *ses)
{
	return t->ops->session_put(t, hub, id, ses);
}

int store_session_delete(struct store_txn *t, const char *hub, const char *id)
{
	return t->ops->session_delete(t, hub, id);
}

int store_connection_put(struct store_txn *t, const char *hub, const char *id,
			 const char *generation, const struct store_connection *c)
{
	return t->ops->connection_put(t, hub, id, generation, c);
}

int store_connection_get(struct store_txn *t, const char *hub, const char *id,
			 struct store_connection *out)
{
	return t->ops->connection_get(t, hub, id, out);
}

int store_connections_reset(struct store_txn *t, const char *hub, int64_t now_ms)
{
	return t->ops->connections_reset(t, hub, now_ms);
}

int store_connections_clear_node(struct store_txn *t, const char *node, int64_t now_ms)
{
	return t->ops->connections_clear_node ? t->ops->connections_clear_node(t, node, now_ms) : 0;
}

int store_setting_get(struct store_txn *t, const char *key, char **value_out)
{
	return t->ops->setting_get(t, key, value_out);
}

int store_setting_put(struct store_txn *t, const char *key, const char *value)
{
	return t->ops->setting_put(t, key, value);
}

int store_setting_add(struct store_txn *t, const char *key, const char *value)
{
	return t->ops->setting_add(t, key, value);
}

int store_notify(struct store_txn *t, const char *text)
{
	return t->ops->notify ? t->ops->notify(t, text) : 0;
}

void store_listen(struct store *s, void (*fn)(void *arg, const char *text), void *arg)
{
	if (s->be->listen)
		s->be->listen(s, fn, arg);
}

int store_doc_get(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		  const char *id, char **json_out)
{
	return t->ops->doc_get(t, kind, scope, id, json_out);
}

int store_doc_put(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		  const char *id, const char *json)
{
	return t->ops->doc_put(t, kind, scope, id, json);
}

int store_doc_delete(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		     const char *id)
{
	return t->ops->doc_delete(t, kind, scope, id);
}

int store_doc_list(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		   const char *prefix, const char *after, unsigned limit,
		   int (*each)(void *arg, const char *id, const char *json), void *arg)
{
	return t->ops->doc_list(t, kind, scope, prefix, after, limit, each, arg);
}

int store_events_append(struct store_txn *t, const char *hub, unsigned part,
			struct store_event *ev, size_t n)
{
	return n ? t->ops->events_append(t, hub, part, ev, n) : 0;
}

int store_event_read(struct store_txn *t, const char *hub, unsigned part, int64_t from,
		     unsigned limit, int (*each)(void *arg, const struct store_event *e),
		     void *arg)
{
	return t->ops->event_read(t, hub, part, from, limit, each, arg);
}

int store_event_partition(struct store_txn *t, const char *hub, unsigned part,
			  struct store_partition *out)
{
	return t->ops->event_partition(t, hub, part, out);
}

int store_event_seek_time(struct store_txn *t, const char *hub, unsigned part, int64_t at_ms,
			  int64_t *seq)
{
	return t->ops->event_seek_time(t, hub, part, at_ms, seq);
}

int store_event_trim(struct store_txn *t, const char *hub, unsigned part, int64_t before_ms,
		     int64_t max_bytes, unsigned limit, unsigned *deleted)
{
	return t->ops->event_trim(t, hub, part, before_ms, max_bytes, limit, deleted);
}

int store_c2d_add(struct store_txn *t, const char *hub, const char *id, const char *json,
		  const uint8_t *body, size_t body_len, int64_t expiry_ms, unsigned max,
		  int64_t *seq)
{
	return t->ops->c2d_add(t, hub, id, json, body, body_len, expiry_ms, max, seq);
}

int store_c2d_list(struct store_txn *t, const char *hub, const char *id, int64_t after,
		   unsigned limit, int (*each)(void *arg, const struct store_c2d *m), void *arg)
{
	return t->ops->c2d_list(t, hub, id, after, limit, each, arg);
}

int store_c2d_update(struct store_txn *t, const char *hub, const char *id, int64_t seq,
		     const char *json)
{
	return t->ops->c2d_update(t, hub, id, seq, json);
}

int store_c2d_delete(struct store_txn *t, const char *hub, const char *id, int64_t seq)
{
	return t->ops->c2d_delete(t, hub, id, seq);
}

int store_c2d_count(struct store_txn *t, const char *hub, const char *id, int64_t *n)
{
	return t->ops->c2d_count(t, hub, id, n);
}

int store_c2d_expired(struct store_txn *t, int64_t now_ms, unsigned limit,
		      int (*each)(void *arg, const char *hub, const char *id,
				  const struct store_c2d *m),
		      void *arg)
{
	return t->ops->c2d_expired(t, now_ms, limit, each, arg);
}

int store_feedback_add(struct store_txn *t, const char *hub, int64_t now_ms, const char *json)
{
	return t->ops->feedback_add(t, hub, now_ms, json);
}

int store_feedback_list(struct store_txn *t, const char *hub, int64_t after, unsigned limit,
			int (*each)(void *arg, int64_t seq, const char *json), void *arg)
{
	return t->ops->feedback_list(t, hub, after, limit, each, arg);
}

int store_feedback_delete(struct store_txn *t, const char *hub, int64_t first, int64_t last)
{
	return t->ops->feedback_delete(t, hub, first, last);
}

int store_feedback_trim(struct store_txn *t, const char *hub, int64_t before_ms,
			int64_t max_rows, unsigned limit)
{
	return t->ops->feedback_trim(t, hub, before_ms, max_rows, limit);
}
