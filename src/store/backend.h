/* What a store backend provides, and the runtime every backend shares
 * (store.c). Only store/ includes this.
 *
 * A backend is two tables of functions:
 * - struct store_txn_ops: the domain operations of store.h on one of its
 *   transactions (a connection in a transaction, or the loop's reader).
 *   Every backend's txn struct starts with a struct store_txn whose ops
 *   point at its table; store.c's store_device_get() etc. dispatch.
 * - struct store_backend: running batches of write jobs, reads, closing.
 *
 * The shared runtime (store.c) owns the queues of write jobs, the writer
 * threads, the completions posted back to the loop (uv_async) and the
 * backlog counters. A backend may ask for several writers (shards, each
 * with its own connection): a job submitted with a key (store_submit_keyed:
 * a device id) always goes to the same shard, one without to shard 0, so
 * the jobs of one key run and complete in submission order:
 *
 *   loop: store_submit --pending[shard]--> writer thread of the shard:
 *         be->run_batch(shard, batch) (sets every job's rc)
 *         --completed--> loop: be->before_dones, done(arg, rc) each
 *
 * run_batch runs every job of the batch in one transaction (a savepoint
 * per job, rolled back when work returns < 0), commits durably, and on a
 * failed commit sets every job's rc to the failure (nothing of the batch
 * is stored or acknowledged). */
#ifndef FH_STORE_BACKEND_H
#define FH_STORE_BACKEND_H

#include "store/store.h"

struct store_txn_ops {
	int (*device_get)(struct store_txn *t, const char *hub, const char *id,
			  struct store_device *out);
	int (*device_put)(struct store_txn *t, const char *hub, const char *id,
			  const struct store_device *d);
	int (*device_delete)(struct store_txn *t, const char *hub, const char *id);
	int (*device_list)(struct store_txn *t, const char *hub, const char *after, unsigned limit,
			   int (*each)(void *arg, const char *id, const struct store_device *d),
			   void *arg);
	int (*device_count)(struct store_txn *t, const char *hub, int64_t *total,
			    int64_t *enabled);
	int (*twin_get)(struct store_txn *t, const char *hub, const char *id,
			struct store_twin *out);
	int (*twin_get_properties)(struct store_txn *t, const char *hub, const char *id,
				   struct store_twin *out);
	int (*twin_put)(struct store_txn *t, const char *hub, const char *id,
			const struct store_twin *tw);
	int (*twin_patch_reported)(struct store_txn *t, const char *hub, const char *id,
				   const char *patch, const char *meta_clear, const char *meta_set,
				   int64_t *reported_version, size_t *reported_len);
	int (*twin_patch_service)(struct store_txn *t, const char *hub, const char *id,
				  const struct store_twin_service_patch *p);
	int (*twin_view_get)(struct store_txn *t, const char *hub, const char *id,
			     struct store_twin_view *out);
	int (*twin_query)(struct store_txn *t, const char *hub, const struct query_plan *plan,
			  const char *after, bool unsure_only,
			  int (*each)(void *arg, const char *id, struct store_twin_view *v,
				      bool sure),
			  void *arg);
	int (*twin_indexes)(struct store_txn *t, const struct qp_path *paths, size_t n);
	int (*twin_aggregate)(struct store_txn *t, const char *hub, const struct query_plan *plan,
			      int (*each)(void *arg, const struct store_group *g), void *arg);
	int (*twin_list)(struct store_txn *t, const char *hub, const char *after, unsigned limit,
			 int (*each)(void *arg, const char *id, const struct store_twin *tw),
			 void *arg);
	int (*session_get)(struct store_txn *t, const char *hub, const char *id,
			   struct store_session *out);
	int (*session_put)(struct store_txn *t, const char *hub, const char *id,
			   const struct store_session *ses);
	int (*session_delete)(struct store_txn *t, const char *hub, const char *id);
	int (*connection_put)(struct store_txn *t, const char *hub, const char *id,
			      const char *generation, const struct store_connection *c);
	int (*connection_get)(struct store_txn *t, const char *hub, const char *id,
			      struct store_connection *out);
	int (*connections_reset)(struct store_txn *t, const char *hub, int64_t now_ms);
	/* NULL: one node (nothing to clear). */
	int (*connections_clear_node)(struct store_txn *t, const char *node, int64_t now_ms);
	int (*setting_get)(struct store_txn *t, const char *key, char **value_out);
	int (*setting_put)(struct store_txn *t, const char *key, const char *value);
	int (*setting_add)(struct store_txn *t, const char *key, const char *value);
	int (*doc_get)(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		       const char *id, char **json_out);
	int (*doc_put)(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		       const char *id, const char *json);
	int (*doc_delete)(struct store_txn *t, enum store_doc_kind kind, const char *scope,
			  const char *id);
	int (*doc_list)(struct store_txn *t, enum store_doc_kind kind, const char *scope,
			const char *prefix, const char *after, unsigned limit,
			int (*each)(void *arg, const char *id, const char *json), void *arg);
	int (*events_append)(struct store_txn *t, const char *hub, unsigned part,
			     struct store_event *ev, size_t n);
	int (*event_read)(struct store_txn *t, const char *hub, unsigned part, int64_t from,
			  unsigned limit, int (*each)(void *arg, const struct store_event *e),
			  void *arg);
	int (*event_partition)(struct store_txn *t, const char *hub, unsigned part,
			       struct store_partition *out);
	int (*event_seek_time)(struct store_txn *t, const char *hub, unsigned part, int64_t at_ms,
			       int64_t *seq);
	int (*event_trim)(struct store_txn *t, const char *hub, unsigned part, int64_t before_ms,
			  int64_t max_bytes, unsigned limit, unsigned *deleted);
	int (*c2d_add)(struct store_txn *t, const char *hub, const char *id, const char *json,
		       const uint8_t *body, size_t body_len, int64_t expiry_ms, unsigned max,
		       int64_t *seq);
	int (*c2d_list)(struct store_txn *t, const char *hub, const char *id, int64_t after,
			unsigned limit, int (*each)(void *arg, const struct store_c2d *m),
			void *arg);
	int (*c2d_update)(struct store_txn *t, const char *hub, const char *id, int64_t seq,
			  const char *json);
	int (*c2d_delete)(struct store_txn *t, const char *hub, const char *id, int64_t seq);
	int (*c2d_count)(struct store_txn *t, const char *hub, const char *id, int64_t *n);
	int (*c2d_expired)(struct store_txn *t, int64_t now_ms, unsigned limit,
			   int (*each)(void *arg, const char *hub, const char *id,
				       const struct store_c2d *m),
			   void *arg);
	int (*feedback_add)(struct store_txn *t, const char *hub, int64_t now_ms,
			    const char *json);
	int (*feedback_list)(struct store_txn *t, const char *hub, int64_t after, unsigned limit,
			     int (*each)(void *arg, int64_t seq, const char *json), void *arg);
	int (*feedback_delete)(struct store_txn *t, const char *hub, int64_t first, int64_t last);
	int (*feedback_trim)(struct store_txn *t, const char *hub, int64_t before_ms,
			     int64_t max_rows, unsigned limit);
	/* NULL: the store has one node (store_notify posts nothing). */
	int (*notify)(struct store_txn *t, const char *text);
};

struct store_txn {
	const struct store_txn_ops *ops;
	const char *node; /* the store's node name (store_post) */
};

struct store_job {
	uint32_t order; /* store_submit_ordered's (0: none) */
	store_work_fn work;
	store_done_fn done;
	void *arg;
	size_t cost; /* bytes counted in the backlog */
	int rc;
	struct store_job *next;
};

struct store_job_list {
	struct store_job *head;
	struct store_job *tail;
};

struct store_backend {
	const char *name;
	/* A writer thread (after they stopped, the loop thread in
	 * store_close): runs the batch of shard as described at the top. */
	void (*run_batch)(struct store *s, unsigned shard, struct store_job_list *batch);
	/* Loop thread, before a round of done callbacks (may be NULL). */
	void (*before_dones)(struct store *s);
	/* A point read: work(arg, txn) then done(arg, rc) on the loop. */
	void (*read)(struct store *s, store_work_fn work, store_done_fn done, void *arg);
	/* A worker thread's transaction for one slow read, and its end. */
	struct store_txn *(*slow_begin)(struct store *s);
	void (*slow_end)(struct store *s, struct store_txn *t);
	struct store_txn *(*reader)(struct store *s);
	/* store_close, after the writer thread stopped and before the queue is
	 * drained on the loop thread (may be NULL). */
	void (*writer_stopped)(struct store *s);
	/* store_close, once drained: close the connections the loop and the
	 * writer used (the slow reads' are closed by free). */
	void (*close)(struct store *s);
	/* Frees what the backend allocated, once nothing runs any more. */
	void (*free)(struct store *s);
	/* store_listen (may be NULL: one node, nothing to hear). */
	void (*listen)(struct store *s, void (*fn)(void *arg, const char *text), void *arg);
};

/* The shared part of every backend's store (store.c): backends embed it
 * first in their own struct. */
#define STORE_SHARDS_MAX 4

struct store_shard {
	struct store *s;
	unsigned index;
	uv_thread_t thread;
	int started;
	uv_mutex_t mu; /* guards pending, closing */
	uv_cond_t cond;
	struct store_job_list pending;
	int closing;
};

struct store {
	const struct store_backend *be;
	uv_loop_t *loop;
	uv_async_t async;
	int open_handles; /* the backend's handles + async; freed at 0 */
	unsigned batch_max;
	char node[128]; /* store_set_node */
	struct store_shard shards[STORE_SHARDS_MAX];
	unsigned nshards;

	uv_mutex_t done_mu; /* guards completed */
	struct store_job_list completed;

	/* loop thread only */
	unsigned slow_inflight; /* slow reads whose done has not run */
	unsigned backlog_jobs;
	size_t backlog_bytes;
	unsigned max_jobs;
	size_t max_bytes;
};

/* Called by a backend's open: initialises the shared part (locks, the
 * async handle on loop) and starts nshards writer threads (1 ..
 * STORE_SHARDS_MAX). Returns 0 or FH_EIO with err; the caller then calls
 * store_close. */
int store__start(struct store *s, const struct store_backend *be, uv_loop_t *loop,
		 unsigned batch_max, unsigned nshards, char *err, size_t errlen);
/* Orders batch by its jobs' order, keeping the submission order among
 * equals (so per key): a backend whose writers lock shared rows runs them
 * so, and no two batches wait on each other in opposite orders. */
void store__batch_sort(struct store_job_list *batch);
/* Every job of batch gets rc; the jobs in batch. */
void store__batch_fail(struct store_job_list *batch, int rc);
unsigned long store__batch_count(const struct store_job_list *batch);
/* Posts a finished batch to the loop (writer thread). */
void store__post(struct store *s, struct store_job_list *batch);
/* A handle of the backend was closed (its close callback calls this). */
void store__handle_closed(struct store *s);
/* Runs a read on libuv's worker pool against be->slow_begin's
 * transaction: store_read_slow, and store_read for backends whose reads
 * cross a network. */
void store__read_on_worker(struct store *s, store_work_fn work, store_done_fn done, void *arg);

int store_sqlite_open(struct store **out, uv_loop_t *loop, const char *path, char *err,
		      size_t errlen);
int store_pg_open(struct store **out, uv_loop_t *loop, const char *conninfo, char *err,
		  size_t errlen);

#endif
