/* Persistent state, in domain terms (devices, twins, settings), behind one
 * interface so that SQLite (embedded) and PostgreSQL can both implement it.
 *
 * Runtime model (design.md §2):
 * - Reads complete through store_read() (and store_read_slow() for scans):
 *   the embedded backend runs a point read at once on the loop thread, on
 *   a read-only connection of its own. In WAL mode a read never waits for the writer.
 *   The reads of one loop iteration share one snapshot, taken at the first
 *   of them; the snapshot is dropped before the loop waits for I/O and
 *   before any done runs, so a read sees at least every write whose done
 *   has run (read-your-writes for anything acknowledged).
 * - Writes are jobs. store_submit() queues (work, done, arg). A writer
 *   thread takes everything queued (up to a batch limit), opens one
 *   transaction, runs each job's work(arg, txn) inside its own savepoint,
 *   commits (SQLite synchronous=FULL, PostgreSQL synchronous_commit: durable
 *   on return), and only then posts the completions to the loop thread,
 *   where done(arg, rc) runs in submission order. (PostgreSQL has two
 *   writers: the order holds per key, store_submit_keyed, and among the
 *   jobs without one.) rc is what work returned; a job whose work returned < 0 had its
 *   savepoint rolled back and did not change anything. If the transaction
 *   fails (disk full, write or fsync error), every job of that batch gets
 *   FH_ENOSPC (full) or FH_EIO and nothing of the batch is stored; later
 *   jobs are tried again, so writes resume when the storage does.
 * - work runs on the writer thread: it may only touch its own arg and the
 *   txn; it must not call into the loop. done runs on the loop thread.
 *
 *   loop thread                 writer thread
 *   store_submit(job) --queue-->  BEGIN
 *                                 SAVEPOINT; work(job); RELEASE|ROLLBACK TO
 *                                 ... (every queued job)
 *                                 COMMIT (fsync)
 *   done(job, rc) <--uv_async--   post completions
 *
 * Records are JSON text owned by the record struct; free them with the
 * matching *_clear function. */
#ifndef FH_STORE_STORE_H
#define FH_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "codec/sas.h"
#include "store/records.h"

struct store;
struct store_txn;
struct query_plan;

typedef int (*store_work_fn)(void *arg, struct store_txn *txn);
typedef void (*store_done_fn)(void *arg, int rc);

enum store_kind {
	STORE_SQLITE,     /* where: the database file, created 0600 when absent */
	STORE_POSTGRESQL, /* where: a libpq connection string (store_pg.c) */
};
/* Opens the store, applies the backend's numbered schema migrations,
 * starts its writer thread and registers its completion handle on loop.
 * Returns 0 or an error with a message in err. */
int store_open(struct store **out, uv_loop_t *loop, enum store_kind kind, const char *where,
	       char *err, size_t errlen);
/* "sqlite" or "postgresql". */
const char *store_backend_name(const struct store *s);
/* Whether several nodes may share the store (PostgreSQL). */
bool store_shared(const struct store *s);
/* The name of this node (several nodes on one database): the connection
 * rows it writes carry it, and at start-up it resets only its own. Before
 * any job runs. */
void store_set_node(struct store *s, const char *node);
const char *store_node(const struct store *s);
/* Runs every queued job to completion (their done callbacks run on the
 * loop), stops the writer thread, closes the connections and the uv handle.
 * The loop must run afterwards for the handle's close callback. */
void store_close(struct store *s);

/* A synchronous read handle, for tests and tools only: the server reads
 * through store_read and store_read_slow (decisions.md 1), never through
 * this (make test checks that src/ outside the store does not call it). */
struct store_txn *store_reader(struct store *s);
/* A read with a completion: runs work(arg, txn) against a read snapshot
 * (txn accepts reads only), then done(arg, rc) on the loop thread with what
 * work returned. This is the shape every new read takes (decisions.md 1):
 * the embedded backend runs both at once, before store_read returns; a
 * networked backend runs work elsewhere and done later. So work touches
 * only its arg and the txn, and the caller does not touch arg after the
 * call (done may have freed it). */
void store_read(struct store *s, store_work_fn work, store_done_fn done, void *arg);
/* store_read for a read that can take long (a scan, a list filtered as it
 * goes): work runs on a worker thread, never on the loop, against its own
 * snapshot; done(arg, rc) then runs on the loop. Slow reads run one at a
 * time. The same rules as store_read: work touches only arg and the txn. */
void store_read_slow(struct store *s, store_work_fn work, store_done_fn done, void *arg);
/* Slow reads queued or running (their done has not run yet): a caller
 * bounds its queue with it. Loop thread. */
unsigned store_read_slow_waiting(const struct store *s);
void store_submit(struct store *s, store_work_fn work, store_done_fn done, void *arg);

/* What a client is told when the store refused a write with rc (FH_ENOSPC:
 * the file system is full; FH_EUNAVAIL: the database cannot be reached;
 * anything else: an I/O error): a sentence that
 * starts with the cause, e.g. "storage full: the change was not stored;
 * try again when space is freed". Static storage. */
const char *store_write_error(int rc);

/* ---- The write backlog (overload) ----------------------------------------
 * Every job counts as backlog from store_submit until its done has run.
 * Writes that clients ask for (a twin patch, a REST change, a DPS
 * registration) are admitted only while the backlog is under its bounds: a
 * number of jobs, and the bytes of the requests behind them. Beyond, the
 * caller answers 429 (ThrottleBacklogLimitExceeded) at once instead of
 * queueing, so a flood makes its clients wait, not the queue (and the
 * latency of everyone else) grow. Writes the server owes (an operation's
 * outcome, keys at start-up) use store_submit and are never refused; they
 * still count. Loop thread only.
 *
 *   client write --store_admit--> over a bound? --yes--> 429 + retry-after
 *                                     |no
 *                                     v
 *                  store_submit_sized(cost) ... done(): backlog -= 1, -= cost */

/* store_submit_sized for a job about key (a device id; NUL-terminated):
 * the jobs of one key run and complete in the order they were submitted,
 * while those of other keys may go to other writers (PostgreSQL: two
 * connections). Jobs without a key keep the order among themselves. */
void store_submit_keyed(struct store *s, const char *key, store_work_fn work, store_done_fn done,
			void *arg, size_t cost);

/* store_submit_keyed for a job that locks a row other jobs of any key
 * and node lock too (an event log partition): order names that row (the
 * same order for the same row everywhere). A backend with several writers
 * runs the jobs of a batch in ascending order (submission order among
 * equals), so no two transactions wait on each other's rows. */
void store_submit_ordered(struct store *s, const char *key, uint32_t order, store_work_fn work,
			  store_done_fn done, void *arg, size_t cost);

/* Bounds (0 = none, the default after store_open). */
void store_set_backlog_limit(struct store *s, unsigned max_jobs, size_t max_bytes);
/* 0 when a client's write holding cost bytes may be queued now, else
 * FH_EAGAIN (nothing is queued; the caller answers 429). */
int store_admit(const struct store *s, size_t cost);
/* store_submit for a write store_admit accepted: cost counts against the
 * byte bound until its done has run. */
void store_submit_sized(struct store *s, store_work_fn work, store_done_fn done, void *arg,
			size_t cost);
/* The backlog now: jobs queued or running whose done has not run, and the
 * bytes they were submitted with. */
void store_backlog(const struct store *s, unsigned *jobs, size_t *bytes);

/* Domain operations. Each works on the reader (reads only) and on a writer
 * txn. They return 0, FH_ENOTFOUND, FH_EEXIST, FH_ENOSPC (writes: the file
 * system is full) or FH_EIO. Strings passed in are borrowed; records filled
 * in are owned by the caller. */
int store_device_get(struct store_txn *t, const char *hub, const char *id,
		     struct store_device *out);
/* Inserts or replaces the identity; d->etag is stored as given. */
int store_device_put(struct store_txn *t, const char *hub, const char *id,
		     const struct store_device *d);
/* Deletes the identity, its twin and its session; FH_ENOTFOUND when absent. */
int store_device_delete(struct store_txn *t, const char *hub, const char *id);
/* Calls each(arg, id, device) for up to limit devices with id > after (""
 * for the start), in id order. Stops early when each returns non-zero. */
int store_device_list(struct store_txn *t, const char *hub, const char *after, unsigned limit,
		      int (*each)(void *arg, const char *id, const struct store_device *d),
		      void *arg);
/* Counts devices of hub: all, and those whose identity has status "enabled". */
int store_device_count(struct store_txn *t, const char *hub, int64_t *total, int64_t *enabled);

int store_twin_get(struct store_txn *t, const char *hub, const char *id, struct store_twin *out);
/* store_twin_get for what a device's twin GET answers: fills only desired,
 * reported, desired_version and reported_version (tags and meta stay NULL,
 * version 0), without reading the rest of the row's text. */
int store_twin_get_properties(struct store_txn *t, const char *hub, const char *id,
			      struct store_twin *out);
/* Inserts or replaces the twin of a device. */
int store_twin_put(struct store_txn *t, const char *hub, const char *id,
		   const struct store_twin *tw);
/* Merges patch (RFC 7396 JSON text) into properties.reported, merges
 * meta_clear and then meta_set (JSON texts, merge patches of the whole
 * metadata object) into the metadata, and bumps version and
 * reported_version, in one statement. Returns the new reported_version and
 * the byte size of the new reported text (the caller checks the limit and
 * fails its job, which rolls the change back). FH_ENOTFOUND when the twin
 * does not exist. */
int store_twin_patch_reported(struct store_txn *t, const char *hub, const char *id,
			      const char *patch, const char *meta_clear, const char *meta_set,
			      int64_t *reported_version, size_t *reported_len);
/* A service-side twin patch (REST PATCH /twins/{id}), merged in place:
 * tags and desired (RFC 7396 JSON texts; NULL: section not touched) into
 * their sections, meta_clear and then meta_set (merge patches of the whole
 * metadata object, as for reported) into the metadata; every
 * "$lastUpdatedVersion":0 member in meta_set is stored as the new desired
 * $version. Bumps version, and desired_version when desired is given. */
struct store_twin_service_patch {
	const char *tags;
	const char *desired;
	const char *meta_clear;
	const char *meta_set;
	int64_t if_version; /* >= 0: change only a twin at this version */
};
/* 0, FH_ENOTFOUND (no twin), FH_EPRECOND (the twin is at another version;
 * nothing changed) or a write error. The caller reads the result with
 * store_twin_view_get and checks the section sizes (failing its job rolls
 * the change back). */
int store_twin_patch_service(struct store_txn *t, const char *hub, const char *id,
			     const struct store_twin_service_patch *p);

/* FH_ENOTFOUND when the device or its twin does not exist. */
int store_twin_view_get(struct store_txn *t, const char *hub, const char *id,
			struct store_twin_view *out);

/* Calls each(arg, id, view, sure) for the twins of hub with id > after, in
 * id order, that may satisfy plan's terms (codec/query_plan.h: a necessary
 * condition; the caller decides each row with query_matches unless sure:
 * the store found that the row matches the whole WHERE, which it can for a
 * complete plan), until each returns nonzero, which is then returned; 0
 * when the rows end. unsure_only: only the rows that are not sure. The
 * view is the store's, valid during the call only (no copies are made per
 * row; each copies what it keeps). A scan: for store_read_slow. */
int store_twin_query(struct store_txn *t, const char *hub, const struct query_plan *plan,
		     const char *after, bool unsure_only,
		     int (*each)(void *arg, const char *id, struct store_twin_view *v, bool sure),
		     void *arg);

/* Makes the store's indexes for twin queries exactly those on paths[0..n)
 * (codec/query_plan.h; tags or properties, not the device id): creates the
 * missing ones (a scan of every twin each) and drops those no longer
 * listed. FH_EINVAL when a path cannot be indexed. A write job, run at
 * start-up. */
struct qp_path;
int store_twin_indexes(struct store_txn *t, const struct qp_path *paths, size_t n);

/* A group an aggregate query's plan computed in the store. */
struct store_group {
	enum { STORE_KEY_NONE, STORE_KEY_NUMBER, STORE_KEY_JSON } key_type;
	double key_number;
	const char *key_json; /* JSON text of the key, as the store spells it */
	uint64_t count;       /* rows */
	struct {
		uint64_t n; /* rows where the path is a number */
		double sum, min, max;
	} agg[32];            /* [plan->naggs] */
};

/* For an aggregable plan (codec/query_plan.h): calls each(arg, group) for
 * every group of the twins of hub that are sure to match (as
 * store_twin_query's sure; the others are the caller's, through
 * store_twin_query with unsure_only), one group without GROUP BY (with
 * count 0 when none matched). FH_EINVAL when the store cannot compute this
 * plan (nothing called). A scan: for store_read_slow. */
int store_twin_aggregate(struct store_txn *t, const char *hub, const struct query_plan *plan,
			 int (*each)(void *arg, const struct store_group *g), void *arg);

/* Calls each(arg, id, twin) for the twins of hub with id > after, in id
 * order, up to limit. */
int store_twin_list(struct store_txn *t, const char *hub, const char *after, unsigned limit,
		    int (*each)(void *arg, const char *id, const struct store_twin *tw),
		    void *arg);

/* ---- Device sessions ----------------------------------------------------
 * The durable part of a clean-session-0 device session (hub/sessions.c):
 * the identity generation it belongs to and its subscription set, as text
 * the hub layer writes and reads (hub_wire.h). One row per device; removed
 * with the device (store_device_delete). */
struct store_session {
	char *generation; /* the identity's generationId, owned */
	char *subs;       /* the subscription set, owned */
};
int store_session_get(struct store_txn *t, const char *hub, const char *id,
		      struct store_session *out);
/* Inserts or replaces the session, only while the device exists with
 * that generationId: else FH_ENOTFOUND and nothing is written. */
int store_session_put(struct store_txn *t, const char *hub, const char *id,
		      const struct store_session *ses);
/* FH_ENOTFOUND when there was none. */
int store_session_delete(struct store_txn *t, const char *hub, const char *id);
void store_session_clear(struct store_session *ses);

/* ---- Connection state -------------------------------------------------
 * What queries see of a device's connection (connectionState,
 * lastActivityTime): written by the hub after the fact, in the group
 * commit, never awaited by a device (decisions.md 2). One row per device
 * that ever connected; removed with the device. */
struct store_connection {
	bool connected;
	int64_t updated_ms;       /* when the state last changed */
	int64_t last_activity_ms; /* the device's last packet, as last flushed */
	char node[128];           /* read only: the node that wrote the row ("" for
	                             the embedded store, which has one node) */
};
/* Inserts or replaces the row, only while the device exists with that
 * generationId: else FH_ENOTFOUND and nothing is written. */
int store_connection_put(struct store_txn *t, const char *hub, const char *id,
			 const char *generation, const struct store_connection *c);
/* The stored row: 0, or FH_ENOTFOUND (never connected), or FH_EIO. */
int store_connection_get(struct store_txn *t, const char *hub, const char *id,
			 struct store_connection *out);
/* At start-up: every device of hub stored as connected is disconnected
 * (as of now_ms): this process holds no connection yet. (With several
 * nodes, only the rows this node wrote.) */
int store_connections_reset(struct store_txn *t, const char *hub, int64_t now_ms);
/* Several nodes: every device stored as connected to node (gone: its
 * lease ran out) is disconnected as of now_ms, on every hub. The embedded
 * store has one node: nothing to do. */
int store_connections_clear_node(struct store_txn *t, const char *node, int64_t now_ms);

/* ---- Messages between nodes -------------------------------------------
 * Nodes that share a store (PostgreSQL) tell each other what changed that
 * the others' live sessions must react to (core/cluster.h). A job posts a
 * message with store_notify; it is delivered if and when the job's
 * transaction commits (a job rolled back posts nothing), to every node
 * listening (store_listen), the sender included, in commit order. Best
 * effort: a node whose listening connection is down meanwhile misses it.
 * The embedded store has one node: nothing is posted, nothing heard. */
int store_notify(struct store_txn *t, const char *text);
/* store_notify of m's encoding (core/cluster.h), m->node set to this
 * store's node name (store_set_node). */
struct cluster_msg;
int store_post(struct store_txn *t, struct cluster_msg *m);
/* fn(arg, text) on the loop for every message posted (after the commit).
 * One listener per store; before store_close. */
void store_listen(struct store *s, void (*fn)(void *arg, const char *text), void *arg);

/* ---- Telemetry: each hub's event log (issue 18) ------------------------
 * An append-only log per hub, in partitions; a device's events always go to
 * one partition (the caller picks it). Each partition numbers its events
 * from 0 (sequence numbers) and gives each a byte offset; both only grow,
 * and a deleted event's numbers are never given again. An append locks its
 * partition's row until the commit, so appends to one partition commit in
 * sequence order, whichever writer or node made them: a reader that has
 * seen sequence number n will never later find a smaller one appear.
 * Retention deletes from the oldest end only (store_event_trim). */
struct store_event {
	int64_t seq;         /* set by store_events_append */
	int64_t offset;      /* set by store_events_append */
	int64_t enqueued_ms; /* when the hub accepted it */
	const char *device;  /* the sending device's id */
	const char *props;   /* JSON object text: {"properties":{..},"system":{..}} */
	const uint8_t *body;
	size_t body_len;
};
/* Appends ev[0..n) to partition part of hub's log, in that order; fills
 * each one's seq and offset, and raises an enqueued_ms below the
 * partition's last to it (enqueued times never go back within a
 * partition). */
int store_events_append(struct store_txn *t, const char *hub, unsigned part,
			struct store_event *ev, size_t n);
/* Calls each(arg, e) for the events of the partition with seq >= from, in
 * order, up to limit, until each returns nonzero (then returned). e and
 * what it points to are valid during the call only. */
int store_event_read(struct store_txn *t, const char *hub, unsigned part, int64_t from,
		     unsigned limit, int (*each)(void *arg, const struct store_event *e),
		     void *arg);
/* A partition's state (all zero for one never written). The events kept
 * are begin_seq .. next_seq - 1. */
struct store_partition {
	int64_t begin_seq;
	int64_t next_seq;
	int64_t next_offset;
	int64_t last_enqueued_ms; /* 0: never written */
	int64_t bytes;            /* the bodies and properties kept */
};
int store_event_partition(struct store_txn *t, const char *hub, unsigned part,
			  struct store_partition *out);
/* The sequence number of the first event kept that was enqueued at or
 * after at_ms (next_seq when none). */
int store_event_seek_time(struct store_txn *t, const char *hub, unsigned part, int64_t at_ms,
			  int64_t *seq);
/* Retention: deletes the oldest events enqueued before before_ms, then the
 * oldest while the partition keeps more than max_bytes (0: no bound), at
 * most limit of them; *deleted says how many. A write job. */
int store_event_trim(struct store_txn *t, const char *hub, unsigned part, int64_t before_ms,
		     int64_t max_bytes, unsigned limit, unsigned *deleted);

/* ---- Cloud-to-device: each device's queue (issue 18) -------------------
 * Messages in enqueue order, numbered per device (seq only grows). Each
 * row is the message's state as JSON text the hub layer writes and reads
 * (core/c2d.h), and its body. Removed with the device. */
struct store_c2d {
	int64_t seq;
	int64_t expiry_ms; /* when it expires unless delivered */
	const char *json;
	const uint8_t *body;
	size_t body_len;
};
/* Appends a message to the queue of device id unless it holds max
 * already: 0 with *seq, FH_ETOOBIG (full, nothing written) or
 * FH_ENOTFOUND (no such device). Locks the device's row, so the count
 * holds with several writers and nodes. */
int store_c2d_add(struct store_txn *t, const char *hub, const char *id, const char *json,
		  const uint8_t *body, size_t body_len, int64_t expiry_ms, unsigned max,
		  int64_t *seq);
/* Calls each(arg, m) for the messages of the device with seq > after, in
 * order, up to limit; m is valid during the call only. */
int store_c2d_list(struct store_txn *t, const char *hub, const char *id, int64_t after,
		   unsigned limit, int (*each)(void *arg, const struct store_c2d *m), void *arg);
/* Replaces a message's state; FH_ENOTFOUND when it is gone. */
int store_c2d_update(struct store_txn *t, const char *hub, const char *id, int64_t seq,
		     const char *json);
/* Removes a message; FH_ENOTFOUND when it was gone. */
int store_c2d_delete(struct store_txn *t, const char *hub, const char *id, int64_t seq);
/* The messages queued for a device (id NULL: for every device of hub). */
int store_c2d_count(struct store_txn *t, const char *hub, const char *id, int64_t *n);
/* Calls each(arg, hub, id, m) for up to limit messages (of every hub) whose
 * expiry_ms is before now_ms, oldest expiry first. */
int store_c2d_expired(struct store_txn *t, int64_t now_ms, unsigned limit,
		      int (*each)(void *arg, const char *hub, const char *id,
				  const struct store_c2d *m),
		      void *arg);
/* Feedback records for the service (the coming AMQP feedback link): JSON
 * texts, numbered per hub in the order they were added. */
int store_feedback_add(struct store_txn *t, const char *hub, int64_t now_ms, const char *json);
int store_feedback_list(struct store_txn *t, const char *hub, int64_t after, unsigned limit,
			int (*each)(void *arg, int64_t seq, const char *json), void *arg);
/* Deletes a hub's feedback records first..last (the feedback link's
 * receiver accepted them). */
int store_feedback_delete(struct store_txn *t, const char *hub, int64_t first, int64_t last);
/* Deletes a hub's feedback records added before before_ms, and the oldest
 * beyond max_rows, at most limit of them. */
int store_feedback_trim(struct store_txn *t, const char *hub, int64_t before_ms,
			int64_t max_rows, unsigned limit);

/* Small settings (generated keys, ids): text values by key. */
int store_setting_get(struct store_txn *t, const char *key, char **value_out);
int store_setting_put(struct store_txn *t, const char *key, const char *value);
/* Stores value only when key has none: 0, or FH_EEXIST (nothing changed).
 * With several writers (nodes), the first to commit wins; the others then
 * read its value. */
int store_setting_add(struct store_txn *t, const char *key, const char *value);
/* (store_common.c, every backend) The setting key into out: given when not
 * NULL (and stored), else the stored value, else a new one from make()
 * (and stored). */
int store_setting_load_or_make(struct store_txn *t, const char *key, const char *given,
			       void (*make)(char out[64]), char *out, size_t outlen);
/* The keys of n shared access policies, under "<prefix>/policy/<name>/
 * primary|secondary": loaded, or new random ones stored; the first
 * policy's primary is owner_key when that is not NULL. */
int store_policy_keys(struct store_txn *t, const char *prefix, struct sas_policy *p, size_t n,
		      const char *owner_key);

/* ---- Device Provisioning Service records ------------------------------
 * DPS records are JSON documents keyed by (kind, dps host name, id). Each
 * kind is one table; the JSON is the record as the DPS layer keeps it
 * (its etag inside). */
enum store_doc_kind {
	STORE_ENROLLMENT,       /* individual enrollment, id = registrationId */
	STORE_ENROLLMENT_GROUP, /* enrollment group, id = enrollmentGroupId */
	STORE_REGISTRATION,     /* device registration state, id = registrationId */
	STORE_OPERATION,        /* registration operation, id = operationId */
	STORE_WEBHOOK_CALL,     /* webhook call log entry, id = "<registrationId>/<seq>" */
	STORE_WEBHOOK_CALL_TIME, /* the same entries in time order, id = "<seq>/<registrationId>" */
	STORE_CA_CERT,          /* a CA certificate, scope = hub name or "dps:" + DPS name
	                           (a hub and the DPS may share a name), id = its name */
	STORE_TPM_CHALLENGE,    /* the key a TPM registration's SAS is signed with, while
	                           it lasts; scope = DPS name, id = registrationId */
	STORE_NODE,             /* a node serving from this store, scope = "", id = its
	                           name: {"heartbeatMs", "startedMs", "devices", ...} */
};

/* Gets the document; *json_out is owned by the caller. */
int store_doc_get(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		  const char *id, char **json_out);
/* Inserts or replaces. */
int store_doc_put(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		  const char *id, const char *json);
/* FH_ENOTFOUND when absent. */
int store_doc_delete(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		     const char *id);
/* Calls each(arg, id, json) for up to limit documents of kind in scope
 * whose id starts with prefix ("" for all) and is > after ("" for the
 * start), in id order. Stops early when each returns non-zero. */
int store_doc_list(struct store_txn *t, enum store_doc_kind kind, const char *scope,
		   const char *prefix, const char *after, unsigned limit,
		   int (*each)(void *arg, const char *id, const char *json), void *arg);


#endif
