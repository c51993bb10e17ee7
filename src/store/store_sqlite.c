/* The embedded store: store.h implemented on SQLite (WAL, synchronous=FULL).
 *
 * Four connections: the writer (its thread), the checkpointer (its thread),
 * the slow reader (store_read_slow: libuv's worker threads, one read at a
 * time under slow_mu, each in its own read transaction) and the reader.
 * The reader is used only on the loop thread (store_reader, store_read);
 * it is query_only, waits at most READER_BUSY_TIMEOUT_MS for a lock, and
 * every statement is reset right after use. The reads
 * of one loop iteration share one read transaction (one WAL snapshot):
 * the first read opens it (BEGIN), and it ends (COMMIT) at the latest in the
 * loop's prepare phase, before the loop waits for I/O, and always before
 * any job's done runs (completions can also run with no prepare phase
 * before them: when libuv polls again at once after a full batch of
 * events, and in store_close):
 *
 *   no read txn --first read: BEGIN--> open (snapshot S) --prepare phase,
 *        ^                                                 or completions
 *        +-----------------------COMMIT-------------------- about to run
 *
 * Read-your-writes holds: a write is acknowledged only from its done, which
 * runs after its COMMIT; the shared transaction is ended before the first
 * done of a batch of completions, so every read from then on (in that done
 * or after) starts a snapshot that holds the write. A read may still see a
 * commit whose done has not run yet, as it did with a transaction per
 * statement. No snapshot outlives an iteration, so an idle loop holds none
 * and checkpoints are not held back longer than one iteration.
 * The writer is used only by the writer thread (and, after that thread has
 * been joined, by store_close on the loop thread to finish leftovers).
 *
 * Writes are jobs. store_submit appends to the pending list (mutex + cond).
 * The writer thread takes up to BATCH_MAX jobs, runs them in one
 * BEGIN IMMEDIATE .. COMMIT, each job inside SAVEPOINT j (rolled back when
 * work returns < 0), then appends them to the completed list and wakes the
 * loop with uv_async_send. The async callback runs done(arg, rc) in
 * submission order: batches are taken in FIFO order, jobs within a batch
 * keep their order, and the completed list is FIFO.
 *
 * Storage faults. A full file system makes SQLite fail with SQLITE_FULL, a
 * failed write() or fsync() with SQLITE_IOERR_*; either way the batch's
 * transaction is rolled back and every job of it gets FH_ENOSPC or FH_EIO:
 * nothing is acknowledged that is not durable. Reads go on through the
 * reader connection, which sees the last committed state. Writes are not
 * stopped: every new batch tries again, so service resumes by itself once
 * space is freed or the device recovers. One line is logged when writes
 * start failing (and when the kind of failure changes), one when they work
 * again, never one per refused job.
 *
 *   healthy --batch fails (FULL/IOERR)--> failing --batch commits--> healthy
 *                                            |  log once            log once
 *                                            +-- IOERR: reopen pending
 *
 * After an I/O error the writer connection is not trusted ("fsyncgate": once
 * fsync has failed, the kernel may have dropped the dirty pages it could not
 * write and the next fsync succeeds anyway). Before its next write the
 * writer closes its connection, opens a new one (no cached page survives)
 * and runs a TRUNCATE checkpoint: the committed WAL frames are copied into
 * the database and synced, and the WAL is emptied, so the frames of the
 * transaction that failed (complete on disk but never acknowledged) cannot
 * come back on a later recovery. Until that succeeds every batch is refused
 * without being tried.
 *
 * Checkpoints run on a thread of their own. A checkpoint copies WAL frames
 * into the database file and syncs it: with 1,000 scattered pages several
 * milliseconds, which every acknowledgement behind it would wait if the
 * writer ran it (SQLite's autocheckpoint does, after a COMMIT). So the writer
 * has wal_autocheckpoint off and a WAL hook that, after a commit leaving
 * CHECKPOINT_PAGES frames or more in the WAL, wakes the checkpointer (its own
 * connection). It runs a PASSIVE checkpoint while the writer goes on. Such a
 * pass copies only the frames committed before it began, and SQLite starts
 * the WAL over (instead of growing it) only at a write that finds it copied
 * in full, which under steady writes a pass never leaves. So once the WAL
 * holds CHECKPOINT_REWIND_PAGES frames, the checkpointer follows its pass by
 * copying what was committed during it while holding batch_mu, which the
 * writer holds from BEGIN to COMMIT: the writer waits for that remainder
 * only, and its next write rewinds the WAL. (Doing that after every pass
 * kept the WAL smaller but made the writer wait four times as often: twin
 * desired-notification p99 7.5 ms instead of 5.) A checkpoint that fails
 * (full disk, I/O error) moves no frame out of the WAL, which still holds
 * everything; the checkpointer logs once per episode and tries again at the
 * next commit, at most once per CHECKPOINT_RETRY_MS.
 *
 *   idle --a commit leaves >= CHECKPOINT_PAGES frames--> passive pass
 *     ^                                                      |
 *     +--< CHECKPOINT_REWIND_PAGES frames--------------------+
 *     +-- remainder under batch_mu (WAL rewinds) <-- more ---+
 *
 * The backlog (store.h) is two counters of the loop thread: store_submit
 * adds the job and its cost, run_completions takes them off just before
 * the job's done runs (so a done that submits a follow-up sees the room it
 * left). The writer thread never touches them.
 *
 * Invariants:
 * - A job's done runs exactly once, on the loop thread, after the COMMIT of
 *   its batch returned (or failed: then rc is FH_ENOSPC or FH_EIO for every
 *   job of it).
 * - struct store is freed only in the async handle's close callback.
 * - Schema: migrations[] is append-only; PRAGMA user_version counts the
 *   migrations that ran; each migration is its own transaction. */
#include "store/backend.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "store/sqlite_internal.h"
#include "store/sqlite_query.h"

#define BATCH_MAX 512
#define CHECKPOINT_PAGES 1000 /* SQLite's autocheckpoint default */
#define CHECKPOINT_REWIND_PAGES (4 * CHECKPOINT_PAGES)
#define CHECKPOINT_RETRY_MS 1000
#define BUSY_TIMEOUT_MS 5000
/* The loop's reader never waits long: in WAL mode a reader is blocked
 * only by a recovery in progress, and a read that finds one fails (503,
 * "try again") rather than stalling every device of the loop. */
#define READER_BUSY_TIMEOUT_MS 20

/* The slow reader's memory map of the database (address space, not
 * memory: pages are the page cache's). */
#define SLOW_MMAP_BYTES "1073741824"
/* And its page cache (negative: KiB), for the pages of rows a query
 * returns, which are spread over the file. */
#define SLOW_CACHE_KIB "-65536"

/* Append-only. Never edit a shipped entry: add a new one. */
static const char *const migrations[] = {
	/* 1: devices, twins, settings */
	"CREATE TABLE devices ("
	" hub TEXT NOT NULL,"
	" id TEXT NOT NULL,"
	" json TEXT NOT NULL,"
	" etag INTEGER NOT NULL,"
	" PRIMARY KEY (hub, id)) WITHOUT ROWID;"
	"CREATE TABLE twins ("
	" hub TEXT NOT NULL,"
	" id TEXT NOT NULL,"
	" tags TEXT NOT NULL,"
	" desired TEXT NOT NULL,"
	" reported TEXT NOT NULL,"
	" meta TEXT NOT NULL,"
	" version INTEGER NOT NULL,"
	" desired_version INTEGER NOT NULL,"
	" reported_version INTEGER NOT NULL,"
	" PRIMARY KEY (hub, id)) WITHOUT ROWID;"
	"CREATE TABLE settings ("
	" key TEXT PRIMARY KEY,"
	" value TEXT NOT NULL);",
	/* 2: Device Provisioning Service documents, one table per kind */
	"CREATE TABLE enrollments (scope TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
	" PRIMARY KEY (scope, id)) WITHOUT ROWID;"
	"CREATE TABLE enrollment_groups (scope TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
	" PRIMARY KEY (scope, id)) WITHOUT ROWID;"
	"CREATE TABLE registrations (scope TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
	" PRIMARY KEY (scope, id)) WITHOUT ROWID;"
	"CREATE TABLE operations (scope TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
	" PRIMARY KEY (scope, id)) WITHOUT ROWID;"
	"CREATE TABLE webhook_calls (scope TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
	" PRIMARY KEY (scope, id)) WITHOUT ROWID;",
	/* 3: clean-session-0 device sessions (store.h, struct store_session) */
	"CREATE TABLE sessions (hub TEXT NOT NULL, id TEXT NOT NULL, generation TEXT NOT NULL,"
	" subs TEXT NOT NULL, PRIMARY KEY (hub, id)) WITHOUT ROWID;",
	/* 4: the webhook call log in time order, for its retention by age */
	"CREATE TABLE webhook_call_times (scope TEXT NOT NULL, id TEXT NOT NULL,"
	" json TEXT NOT NULL, PRIMARY KEY (scope, id)) WITHOUT ROWID;",
	/* 5: device connection state, for queries (store.h, store_connection_put) */
	"CREATE TABLE connections (hub TEXT NOT NULL, id TEXT NOT NULL,"
	" connected INTEGER NOT NULL, updated INTEGER NOT NULL, last_activity INTEGER NOT NULL,"
	" PRIMARY KEY (hub, id)) WITHOUT ROWID;",
	/* 6: CA certificates of hubs and DPSs (store.h, STORE_CA_CERT) */
	"CREATE TABLE ca_certs (scope TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
	" PRIMARY KEY (scope, id)) WITHOUT ROWID;",
	/* 7: the TPM challenge of each registration id (store.h, STORE_TPM_CHALLENGE) */
	"CREATE TABLE tpm_challenges (scope TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
	" PRIMARY KEY (scope, id)) WITHOUT ROWID;",
	/* 8: the nodes serving from this store (store.h, STORE_NODE) */
	"CREATE TABLE nodes (scope TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
	" PRIMARY KEY (scope, id)) WITHOUT ROWID;",
	/* 9: messages (sqlite_messages.c): the event logs, cloud-to-device
	 * queues and their feedback */
	"CREATE TABLE event_partitions (hub TEXT NOT NULL, part INTEGER NOT NULL,"
	" next_seq INTEGER NOT NULL, next_offset INTEGER NOT NULL, bytes INTEGER NOT NULL,"
	" count INTEGER NOT NULL, last_enqueued INTEGER NOT NULL,"
	" PRIMARY KEY (hub, part)) WITHOUT ROWID;"
	"CREATE TABLE events (hub TEXT NOT NULL, part INTEGER NOT NULL, seq INTEGER NOT NULL,"
	" off INTEGER NOT NULL, enqueued INTEGER NOT NULL, size INTEGER NOT NULL,"
	" device TEXT NOT NULL, props TEXT NOT NULL, body BLOB NOT NULL,"
	" PRIMARY KEY (hub, part, seq));"
	"CREATE TABLE c2d (hub TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,"
	" expiry INTEGER NOT NULL, json TEXT NOT NULL, body BLOB NOT NULL,"
	" PRIMARY KEY (hub, device, seq));"
	"CREATE INDEX c2d_expiry ON c2d (expiry);"
	"CREATE TABLE c2d_counters (hub TEXT NOT NULL, device TEXT NOT NULL,"
	" next_seq INTEGER NOT NULL, PRIMARY KEY (hub, device)) WITHOUT ROWID;"
	"CREATE TABLE feedback (hub TEXT NOT NULL, seq INTEGER NOT NULL, added INTEGER NOT NULL,"
	" json TEXT NOT NULL, PRIMARY KEY (hub, seq)) WITHOUT ROWID;",
};
#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

enum stmt_id {
	ST_BEGIN,
	ST_BEGIN_READ,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_DEV_GET,
	ST_DEV_PUT,
	ST_DEV_DEL,
	ST_DEV_DEL_TWIN,
	ST_DEV_LIST,
	ST_DEV_COUNT,
	ST_TWIN_GET,
	ST_TWIN_GET_PROPS,
	ST_TWIN_PUT,
	ST_TWIN_LIST,
	ST_TWIN_PATCH_REPORTED,
	ST_TWIN_REPORTED_STATE,
	ST_TWIN_PATCH_SERVICE,
	ST_TWIN_EXISTS,
	ST_TWIN_VIEW,
	ST_SET_GET,
	ST_SET_PUT,
	ST_SET_ADD,
	ST_SES_GET,
	ST_SES_PUT,
	ST_SES_DEL,
	ST_CONN_PUT,
	ST_CONN_GET,
	ST_CONN_RESET,
	ST_CONN_DEL,
	ST_COUNT
};

/* What a twin view reads (store_twin_view_get, store_twin_query): the
 * twin, named t, and the identity members it shows, d; then its joins. */
#define TWIN_VIEW_COLUMNS                                                                   \
	"t.tags, t.desired, t.reported, t.meta -> '$.desired', t.meta -> '$.reported',"      \
	" t.version, t.desired_version, t.reported_version, length(CAST(t.tags AS BLOB)),"  \
	" length(CAST(t.desired AS BLOB)), d.etag, d.json -> '$.status',"                   \
	" d.json -> '$.statusReason', d.json -> '$.statusUpdatedTime',"                     \
	" d.json -> '$.capabilities', d.json -> '$.authentication.type',"                   \
	" d.json -> '$.authentication.x509Thumbprint', coalesce(c.connected, 0),"            \
	" coalesce(c.last_activity, 0),"                                                    \
	" (SELECT count(*) FROM c2d WHERE c2d.hub = t.hub AND c2d.device = t.id)"
/* ... joined to the twins table t (after "FROM twins t", and an index hint). */
#define TWIN_VIEW_JOINS                                                                     \
	" JOIN devices d ON d.hub = t.hub AND d.id = t.id"                                   \
	" LEFT JOIN connections c ON c.hub = t.hub AND c.id = t.id"

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_BEGIN_READ] = "BEGIN",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SAVEPOINT] = "SAVEPOINT j",
	[ST_RELEASE] = "RELEASE j",
	[ST_ROLLBACK_TO] = "ROLLBACK TO j",
	[ST_DEV_GET] = "SELECT json, etag FROM devices WHERE hub = ?1 AND id = ?2",
	[ST_DEV_PUT] = "INSERT INTO devices (hub, id, json, etag) VALUES (?1, ?2, ?3, ?4)"
		       " ON CONFLICT (hub, id) DO UPDATE SET json = excluded.json,"
		       " etag = excluded.etag",
	[ST_DEV_DEL] = "DELETE FROM devices WHERE hub = ?1 AND id = ?2",
	[ST_DEV_DEL_TWIN] = "DELETE FROM twins WHERE hub = ?1 AND id = ?2",
	[ST_DEV_LIST] = "SELECT id, json, etag FROM devices WHERE hub = ?1 AND id > ?2"
			" ORDER BY id LIMIT ?3",
	[ST_DEV_COUNT] = "SELECT count(*), coalesce(sum(CASE WHEN json_valid(json) THEN"
			 " json_extract(json, '$.status') = 'enabled' ELSE 0 END), 0)"
			 " FROM devices WHERE hub = ?1",
	[ST_TWIN_GET] = "SELECT tags, desired, reported, meta, version, desired_version,"
			" reported_version FROM twins WHERE hub = ?1 AND id = ?2",
	/* What a device's twin GET answers: no tags, no metadata. */
	[ST_TWIN_GET_PROPS] = "SELECT desired, reported, desired_version, reported_version"
			      " FROM twins WHERE hub = ?1 AND id = ?2",
	[ST_TWIN_PUT] = "INSERT INTO twins (hub, id, tags, desired, reported, meta, version,"
			" desired_version, reported_version)"
			" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
			" ON CONFLICT (hub, id) DO UPDATE SET tags = excluded.tags,"
			" desired = excluded.desired, reported = excluded.reported,"
			" meta = excluded.meta, version = excluded.version,"
			" desired_version = excluded.desired_version,"
			" reported_version = excluded.reported_version",
	[ST_TWIN_LIST] = "SELECT id, tags, desired, reported, meta, version, desired_version,"
			 " reported_version FROM twins WHERE hub = ?1 AND id > ?2"
			 " ORDER BY id LIMIT ?3",
	/* json_patch is RFC 7396. (RETURNING would cost an ephemeral table per
	 * statement, more than the SELECT that follows.) */
	[ST_TWIN_PATCH_REPORTED] = "UPDATE twins SET reported = json_patch(reported, ?3),"
				   " meta = json_patch(json_patch(meta, ?4), ?5),"
				   " version = version + 1,"
				   " reported_version = reported_version + 1"
				   " WHERE hub = ?1 AND id = ?2",
	[ST_TWIN_REPORTED_STATE] = "SELECT reported_version, length(CAST(reported AS BLOB))"
				   " FROM twins WHERE hub = ?1 AND id = ?2",
	/* The same in-place merge for the service's tags and desired patches.
	 * Every '"$lastUpdatedVersion":0' in the set patch becomes the new
	 * desired $version (the old one + 1: SET reads the old row). */
	[ST_TWIN_PATCH_SERVICE] =
	    "UPDATE twins SET"
	    " tags = CASE WHEN ?3 IS NULL THEN tags ELSE json_patch(tags, ?3) END,"
	    " desired = CASE WHEN ?4 IS NULL THEN desired ELSE json_patch(desired, ?4) END,"
	    " meta = json_patch(json_patch(meta, ?5), replace(?6, '\"$lastUpdatedVersion\":0',"
	    " '\"$lastUpdatedVersion\":' || (desired_version + 1))),"
	    " version = version + 1,"
	    " desired_version = desired_version + (?4 IS NOT NULL)"
	    " WHERE hub = ?1 AND id = ?2 AND (?7 IS NULL OR version = ?7)",
	[ST_TWIN_EXISTS] = "SELECT 1 FROM twins WHERE hub = ?1 AND id = ?2",
	/* One row for the REST twin document: the twin's texts, the metadata
	 * of the two property sections, and the identity members it shows. */
	[ST_TWIN_VIEW] = "SELECT " TWIN_VIEW_COLUMNS " FROM twins t" TWIN_VIEW_JOINS
			 " WHERE t.hub = ?1 AND t.id = ?2",
	[ST_SET_GET] = "SELECT value FROM settings WHERE key = ?1",
	[ST_SET_PUT] = "INSERT INTO settings (key, value) VALUES (?1, ?2)"
		       " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
	[ST_SET_ADD] = "INSERT INTO settings (key, value) VALUES (?1, ?2)"
		       " ON CONFLICT (key) DO NOTHING",
	[ST_SES_GET] = "SELECT generation, subs FROM sessions WHERE hub = ?1 AND id = ?2",
	/* Only for the identity generation it belongs to: a session written
	 * after its device was deleted (or re-created) is not stored. */
	[ST_SES_PUT] = "INSERT INTO sessions (hub, id, generation, subs) SELECT ?1, ?2, ?3, ?4"
		       " WHERE EXISTS (SELECT 1 FROM devices WHERE hub = ?1 AND id = ?2"
		       " AND json_extract(json, '$.generationId') = ?3)"
		       " ON CONFLICT (hub, id) DO UPDATE SET generation = excluded.generation,"
		       " subs = excluded.subs",
	[ST_SES_DEL] = "DELETE FROM sessions WHERE hub = ?1 AND id = ?2",
	/* Only for the identity generation it belongs to, as ST_SES_PUT. */
	[ST_CONN_PUT] = "INSERT INTO connections (hub, id, connected, updated, last_activity)"
			" SELECT ?1, ?2, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM devices"
			" WHERE hub = ?1 AND id = ?2 AND json_extract(json, '$.generationId') = ?3)"
			" ON CONFLICT (hub, id) DO UPDATE SET connected = excluded.connected,"
			" updated = excluded.updated, last_activity = excluded.last_activity",
	[ST_CONN_GET] = "SELECT connected, updated, last_activity FROM connections"
			" WHERE hub = ?1 AND id = ?2",
	[ST_CONN_RESET] = "UPDATE connections SET connected = 0, updated = ?2"
			  " WHERE hub = ?1 AND connected = 1",
	[ST_CONN_DEL] = "DELETE FROM connections WHERE hub = ?1 AND id = ?2",
};

static const struct store_txn_ops sq_ops;

#define DOC_KINDS 9
enum doc_op { DOC_GET, DOC_PUT, DOC_DEL, DOC_LIST, DOC_LIST_FROM, DOC_OPS };

#define SCAN_CACHE 16

struct sq_txn {
	struct store_txn base; /* ops: sq_ops */
	sqlite3 *db;
	int quiet_faults; /* the writer: storage faults are logged per episode */
	int fault;        /* the last storage fault of this batch (writer), or 0 */
	char detail[240]; /* what that fault said, for the episode's log line */
	int shared_read;  /* the reader: its reads share a transaction (top) */
	int in_read;      /* that transaction is open */
	sqlite3_stmt *st[ST_COUNT];
	sqlite3_stmt *doc[DOC_KINDS][DOC_OPS]; /* prepared on first use */
	sqlite3_stmt *msg[SQ_MSG_SLOTS];       /* sqlite_messages.c's, likewise */
	/* Scans' statements (scan_prepare), kept by their text: a dashboard
	 * repeats its queries, and preparing one costs more than a small
	 * query's rows. The least recently used goes first. */
	struct {
		char *sql;
		sqlite3_stmt *st;
		uint64_t used;
	} scans[SCAN_CACHE];
	uint64_t scan_clock;
};

struct sq_store {
	struct store base;
	uv_prepare_t prepare; /* ends the reader's transaction each iteration */

	struct sq_txn reader; /* loop thread only */
	struct sq_txn slow;   /* store_read_slow's work, one at a time (slow_mu) */
	uv_mutex_t slow_mu;
	struct sq_txn writer; /* writer thread only (loop after join) */

	/* writer thread only (the loop after the join) */
	char *path;
	int failing;            /* FH_ENOSPC or FH_EIO while writes fail, else 0 */
	int reopen;             /* an I/O error: recover before the next write */
	unsigned long refused;  /* jobs refused since writes started failing */
	uv_mutex_t batch_mu;    /* held by the writer from BEGIN to COMMIT */

	/* the checkpointer (see the top of the file) */
	uv_thread_t ckpt_thread;
	int ckpt_started;
	struct sq_txn ckpt;  /* checkpointer thread only */
	uv_mutex_t ckpt_mu;     /* guards ckpt_wanted, ckpt_closing */
	uv_cond_t ckpt_cond;
	int ckpt_wanted;
	int ckpt_closing;
	int ckpt_failing;       /* checkpointer thread only */
};

/* ---- connections and statements ---- */

/* FH_ENOSPC for a full file system, else FH_EIO. */
static int fault_code(sqlite3 *db)
{
	return (sqlite3_extended_errcode(db) & 0xff) == SQLITE_FULL ? FH_ENOSPC : FH_EIO;
}

/* The system call behind an SQLITE_IOERR_* code, as words. */
static const char *io_step(int ext)
{
	switch (ext) {
	case SQLITE_IOERR_FSYNC:
	case SQLITE_IOERR_DIR_FSYNC: return ", fsync failed";
	case SQLITE_IOERR_WRITE: return ", write failed";
	case SQLITE_IOERR_TRUNCATE: return ", truncate failed";
	case SQLITE_IOERR_READ:
	case SQLITE_IOERR_SHORT_READ: return ", read failed";
	case SQLITE_IOERR_SHMSIZE:
	case SQLITE_IOERR_SHMMAP: return ", shared memory file";
	}
	return "";
}

static int is_storage_fault(int primary)
{
	return primary == SQLITE_FULL || primary == SQLITE_IOERR;
}

/* Notes a failed statement: a storage fault is remembered for the batch
 * (and logged once per episode by the writer); anything else is logged.
 * Returns the store error for it. */
static int note_error(struct sq_txn *t, const char *what)
{
	int ext = sqlite3_extended_errcode(t->db), primary = ext & 0xff;
	if (is_storage_fault(primary)) {
		int sys = sqlite3_system_errno(t->db);
		t->fault = fault_code(t->db);
		snprintf(t->detail, sizeof t->detail, "%s: %s%s%s%s%s", what, sqlite3_errmsg(t->db),
			 io_step(ext), sys ? " (" : "", sys ? strerror(sys) : "", sys ? ")" : "");
		if (t->quiet_faults)
			return t->fault;
	}
	log_at(LOG_ERROR, "store: %s: %s", what, sqlite3_errmsg(t->db));
	return primary == SQLITE_FULL ? FH_ENOSPC : FH_EIO;
}

static void txn_close(struct sq_txn *t)
{
	for (int i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(t->st[i]);
		t->st[i] = NULL;
	}
	for (int k = 0; k < DOC_KINDS; k++)
		for (int o = 0; o < DOC_OPS; o++) {
			sqlite3_finalize(t->doc[k][o]);
			t->doc[k][o] = NULL;
		}
	for (int i = 0; i < SQ_MSG_SLOTS; i++) {
		sqlite3_finalize(t->msg[i]);
		t->msg[i] = NULL;
	}
	for (int i = 0; i < SCAN_CACHE; i++) {
		sqlite3_finalize(t->scans[i].st);
		free(t->scans[i].sql);
		t->scans[i].st = NULL;
		t->scans[i].sql = NULL;
	}
	if (t->db)
		sqlite3_close(t->db);
	t->db = NULL;
}

static int txn_prepare(struct sq_txn *t, char *err, size_t errlen)
{
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(t->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
				       &t->st[i], NULL) != SQLITE_OK) {
			snprintf(err, errlen, "cannot prepare statement: %s",
				 sqlite3_errmsg(t->db));
			return FH_EIO;
		}
	}
	return 0;
}

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return FH_EIO;
	}
	return 0;
}

/* Opens one connection with our pragmas. */
static int conn_open(struct sq_txn *t, const char *path, int query_only, char *err,
		     size_t errlen)
{
	t->base.ops = &sq_ops;
	t->base.node = "";
	int busy_ms = query_only == 2 ? READER_BUSY_TIMEOUT_MS : BUSY_TIMEOUT_MS;
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	if (sqlite3_open_v2(path, &t->db, flags, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "cannot open %s: %s", path,
			 t->db ? sqlite3_errmsg(t->db) : "out of memory");
		return FH_EIO;
	}
	sqlite3_extended_result_codes(t->db, 1);
	if (sqlite3_busy_timeout(t->db, busy_ms) != SQLITE_OK) {
		snprintf(err, errlen, "busy_timeout: %s", sqlite3_errmsg(t->db));
		return FH_EIO;
	}
	/* journal_mode answers with the mode in force: check it is WAL. */
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(t->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		snprintf(err, errlen, "journal_mode=WAL: %s", sqlite3_errmsg(t->db));
		sqlite3_finalize(st);
		return FH_EIO;
	}
	const char *mode = (const char *)sqlite3_column_text(st, 0);
	int wal = mode && strcmp(mode, "wal") == 0;
	sqlite3_finalize(st);
	if (!wal) {
		snprintf(err, errlen, "%s: cannot switch to WAL mode", path);
		return FH_EIO;
	}
	int rc = exec_sql(t->db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", err, errlen);
	if (rc == 0 && query_only)
		rc = exec_sql(t->db, "PRAGMA query_only=ON", err, errlen);
	return rc;
}

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *st = NULL;
	int rc = FH_EIO;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		*out = sqlite3_column_int(st, 0);
		rc = 0;
	}
	sqlite3_finalize(st);
	return rc;
}

static int migrate(sqlite3 *db, char *err, size_t errlen)
{
	int version;
	if (pragma_int(db, "PRAGMA user_version", &version) != 0) {
		snprintf(err, errlen, "cannot read schema version: %s", sqlite3_errmsg(db));
		return FH_EIO;
	}
	if (version > MIGRATION_COUNT) {
		snprintf(err, errlen, "database schema %d is newer than this fleethub (%d)",
			 version, MIGRATION_COUNT);
		return FH_EINVAL;
	}
	for (int i = version; i < MIGRATION_COUNT; i++) {
		char sql[64];
		if (exec_sql(db, "BEGIN IMMEDIATE", err, errlen) != 0)
			return FH_EIO;
		snprintf(sql, sizeof sql, "PRAGMA user_version=%d", i + 1);
		if (exec_sql(db, migrations[i], err, errlen) != 0 ||
		    exec_sql(db, sql, err, errlen) != 0 || exec_sql(db, "COMMIT", err, errlen) != 0) {
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			char tmp[256];
			snprintf(tmp, sizeof tmp, "%s", err);
			snprintf(err, errlen, "schema migration %d failed: %s", i + 1, tmp);
			return FH_EIO;
		}
		log_at(LOG_INFO, "store: applied schema migration %d", i + 1);
	}
	return 0;
}

/* ---- the writer ---- */

/* Runs a statement that returns no rows (transaction control). */
static int run_ctl(struct sq_txn *t, enum stmt_id id)
{
	sqlite3_stmt *st = t->st[id];
	int rc = sqlite3_step(st);
	int ret = rc == SQLITE_DONE ? 0 : note_error(t, stmt_sql[id]);
	sqlite3_reset(st);
	return ret;
}

/* ---- the reader's shared transaction (see the top of the file) ---- */

static void read_begin(struct sq_txn *t)
{
	if (t->shared_read && !t->in_read && run_ctl(t, ST_BEGIN_READ) == 0)
		t->in_read = 1;
}

static void read_end(struct sq_txn *t)
{
	if (!t->in_read)
		return;
	t->in_read = 0;
	/* A read error may have made SQLite roll the transaction back. */
	if (!sqlite3_get_autocommit(t->db) && run_ctl(t, ST_COMMIT) != 0)
		run_ctl(t, ST_ROLLBACK);
}

static void on_prepare(uv_prepare_t *h)
{
	struct sq_store *s = h->data;
	read_end(&s->reader);
}

/* The writer's WAL hook, on the writer thread after each COMMIT. */
static int on_wal(void *arg, sqlite3 *db, const char *name, int frames)
{
	struct sq_store *s = arg;
	if (frames >= CHECKPOINT_PAGES) {
		uv_mutex_lock(&s->ckpt_mu);
		s->ckpt_wanted = 1;
		uv_cond_signal(&s->ckpt_cond);
		uv_mutex_unlock(&s->ckpt_mu);
	}
	return SQLITE_OK;
}

/* The writer connection checkpoints only through the checkpointer. */
static int writer_hooks(struct sq_store *s, char *err, size_t errlen)
{
	int rc = exec_sql(s->writer.db, "PRAGMA wal_autocheckpoint=0", err, errlen);
	if (rc == 0)
		sqlite3_wal_hook(s->writer.db, on_wal, s);
	return rc;
}

/* One checkpoint (see the top of the file): a passive pass; when the WAL
 * has grown to CHECKPOINT_REWIND_PAGES, then what was committed during it,
 * with no commit in between. Returns the SQLite result. */
static int checkpoint(struct sq_store *s)
{
	int frames = 0;
	int rc = sqlite3_wal_checkpoint_v2(s->ckpt.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &frames,
					   NULL);
	if (rc == SQLITE_OK && frames >= CHECKPOINT_REWIND_PAGES) {
		uv_mutex_lock(&s->batch_mu);
		rc = sqlite3_wal_checkpoint_v2(s->ckpt.db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL,
					       NULL);
		uv_mutex_unlock(&s->batch_mu);
	}
	return rc;
}

static void checkpointer_main(void *arg)
{
	struct sq_store *s = arg;
	uv_mutex_lock(&s->ckpt_mu);
	for (;;) {
		while (!s->ckpt_wanted && !s->ckpt_closing)
			uv_cond_wait(&s->ckpt_cond, &s->ckpt_mu);
		if (s->ckpt_closing)
			break;
		s->ckpt_wanted = 0;
		uv_mutex_unlock(&s->ckpt_mu);
		int rc = checkpoint(s);
		if (is_storage_fault(rc & 0xff)) {
			if (!s->ckpt_failing)
				log_at(LOG_ERROR,
				       "store: checkpoint failed: %s; the WAL keeps every commit "
				       "and grows until a checkpoint works",
				       sqlite3_errmsg(s->ckpt.db));
			s->ckpt_failing = 1;
		} else if (s->ckpt_failing && rc == SQLITE_OK) {
			log_at(LOG_WARN, "store: checkpoints work again");
			s->ckpt_failing = 0;
		}
		uv_mutex_lock(&s->ckpt_mu);
		if (s->ckpt_failing && !s->ckpt_closing)
			uv_cond_timedwait(&s->ckpt_cond, &s->ckpt_mu,
					  (uint64_t)CHECKPOINT_RETRY_MS * 1000000u);
	}
	uv_mutex_unlock(&s->ckpt_mu);
}

static void checkpointer_stop(struct sq_store *s)
{
	if (!s->ckpt_started)
		return;
	uv_mutex_lock(&s->ckpt_mu);
	s->ckpt_closing = 1;
	uv_cond_signal(&s->ckpt_cond);
	uv_mutex_unlock(&s->ckpt_mu);
	uv_thread_join(&s->ckpt_thread);
	s->ckpt_started = 0;
}

/* Reopens the writer connection and empties the WAL into the database (see
 * the top of the file). Returns 0, or FH_ENOSPC / FH_EIO while the storage
 * still fails. A checkpoint that only finds a reader in its way (BUSY) is
 * not a fault: the new connection is used and the WAL emptied later. */
static int writer_recover(struct sq_store *s)
{
	struct sq_txn *t = &s->writer;
	char err[200];
	txn_close(t);
	t->quiet_faults = 1;
	if (conn_open(t, s->path, 0, err, sizeof err) != 0 ||
	    writer_hooks(s, err, sizeof err) != 0 || txn_prepare(t, err, sizeof err) != 0) {
		snprintf(t->detail, sizeof t->detail, "reopening the database: %s", err);
		return t->db ? fault_code(t->db) : FH_EIO;
	}
	int rc = sqlite3_wal_checkpoint_v2(t->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	if (is_storage_fault(rc & 0xff))
		return note_error(t, "checkpoint after an I/O error");
	s->reopen = 0;
	log_at(LOG_INFO, "store: writer reopened and WAL checkpointed after an I/O error%s",
	       rc == SQLITE_OK ? "" : " (checkpoint deferred: readers active)");
	return 0;
}

/* Keeps the fault episode (see the top of the file) after a batch: fault
 * is how the storage failed (0 = it worked), refused how many jobs that
 * cost. */
static void writer_health(struct sq_store *s, int fault, unsigned long refused)
{
	if (fault) {
		s->refused += refused;
		if (fault == FH_EIO)
			s->reopen = 1;
		if (s->failing != fault)
			log_at(LOG_ERROR, "store: %s: writes are refused until %s; reads go on (%s)",
			       fault == FH_ENOSPC ? "storage full" : "storage I/O error",
			       fault == FH_ENOSPC ? "space is freed" : "the storage works again",
			       s->writer.detail);
		s->failing = fault;
	} else if (s->failing) {
		log_at(LOG_WARN, "store: writes work again (%lu refused while the storage failed)",
		       s->refused);
		s->failing = 0;
		s->refused = 0;
	}
}

/* Runs one batch in one transaction and posts it to the completed list. */
static void run_batch(struct store *base, unsigned shard, struct store_job_list *batch)
{
	struct sq_store *s = (struct sq_store *)base;
	struct sq_txn *t = &s->writer;
	uv_mutex_lock(&s->batch_mu);
	int rc = s->reopen ? writer_recover(s) : 0;
	if (rc != 0)
		goto refuse;
	t->fault = 0;
	rc = run_ctl(t, ST_BEGIN);
	for (struct store_job *j = batch->head; rc == 0 && j; j = j->next) {
		rc = run_ctl(t, ST_SAVEPOINT);
		if (rc != 0)
			break;
		j->rc = j->work(j->arg, &t->base);
		if (sqlite3_get_autocommit(t->db)) {
			/* SQLite rolled the whole transaction back (I/O error,
			 * disk full): nothing of this batch is stored. */
			rc = t->fault ? t->fault : FH_EIO;
			break;
		}
		if (j->rc < 0)
			rc = run_ctl(t, ST_ROLLBACK_TO);
		if (rc == 0)
			rc = run_ctl(t, ST_RELEASE);
	}
	if (rc == 0)
		rc = run_ctl(t, ST_COMMIT);
	if (rc == 0) {
		/* A fault inside one job that the others outlived still counts. */
		writer_health(s, t->fault, 0);
		goto post;
	}
	if (!sqlite3_get_autocommit(t->db))
		run_ctl(t, ST_ROLLBACK);
refuse:
	store__batch_fail(batch, rc);
	writer_health(s, rc, store__batch_count(batch));
post:
	uv_mutex_unlock(&s->batch_mu);
	store__post(&s->base, batch);
}

/* Before a round of done callbacks: their reads see their commits. */
static void before_dones(struct store *base)
{
	read_end(&((struct sq_store *)base)->reader);
}

static void sq_free(struct store *base)
{
	struct sq_store *s = (struct sq_store *)base;
	uv_mutex_destroy(&s->batch_mu);
	uv_mutex_destroy(&s->ckpt_mu);
	uv_mutex_destroy(&s->slow_mu);
	uv_cond_destroy(&s->ckpt_cond);
	txn_close(&s->slow);
	free(s->path);
	free(s);
}

static void on_prepare_closed(uv_handle_t *h)
{
	store__handle_closed(h->data);
}

/* ---- lifecycle ---- */

/* Creates the file 0600 if absent, so the database never exists with looser
 * permissions (SQLite gives -wal/-shm the same mode as the main file). */
static int create_file(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		return FH_EIO;
	}
	close(fd);
	return 0;
}

static void writer_stopped(struct store *base)
{
	struct sq_store *s = (struct sq_store *)base;
	checkpointer_stop(s);
	txn_close(&s->ckpt);
}

static void sq_close(struct store *base)
{
	struct sq_store *s = (struct sq_store *)base;
	read_end(&s->reader);
	txn_close(&s->reader);
	txn_close(&s->writer);
	uv_close((uv_handle_t *)&s->prepare, on_prepare_closed);
}

static struct store_txn *sq_reader(struct store *base)
{
	return &((struct sq_store *)base)->reader.base;
}

/* The embedded backend answers reads on the loop thread at once: a point
 * read on the reader costs microseconds and never waits for the writer. */
static void sq_read(struct store *base, store_work_fn work, store_done_fn done, void *arg)
{
	int rc = work(arg, sq_reader(base));
	done(arg, rc);
}

/* Slow reads run on libuv's worker threads, one at a time, each in its own
 * snapshot of the slow connection. */
static struct store_txn *slow_begin(struct store *base)
{
	struct sq_store *s = (struct sq_store *)base;
	uv_mutex_lock(&s->slow_mu);
	return &s->slow.base;
}

static void slow_end(struct store *base, struct store_txn *t)
{
	struct sq_store *s = (struct sq_store *)base;
	read_end(&s->slow);
	uv_mutex_unlock(&s->slow_mu);
}

static const struct store_backend sqlite_backend = {
	.name = "sqlite",
	.run_batch = run_batch,
	.before_dones = before_dones,
	.read = sq_read,
	.slow_begin = slow_begin,
	.slow_end = slow_end,
	.reader = sq_reader,
	.writer_stopped = writer_stopped,
	.close = sq_close,
	.free = sq_free,
};

/* Undoes a store_open that failed before the runtime started. */
static int open_failed(struct sq_store *s)
{
	txn_close(&s->slow);
	txn_close(&s->ckpt);
	txn_close(&s->reader);
	txn_close(&s->writer);
	free(s->path);
	free(s);
	return FH_EIO;
}

int store_sqlite_open(struct store **out, uv_loop_t *loop, const char *path, char *err,
		      size_t errlen)
{
	*out = NULL;
	if (create_file(path, err, errlen) != 0)
		return FH_EIO;
	/* No memory statistics: they take a global mutex on every allocation
	 * of every connection (a few per cent of a query's scan). Only
	 * possible before SQLite's first use; later calls are refused, and
	 * harmless. */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);

	struct sq_store *s = xcalloc(1, sizeof *s);
	s->path = xstrdup(path);
	s->writer.quiet_faults = 1;
	int rc = conn_open(&s->writer, path, 0, err, errlen);
	if (rc == 0)
		rc = migrate(s->writer.db, err, errlen);
	if (rc == 0)
		rc = writer_hooks(s, err, errlen);
	if (rc == 0)
		rc = conn_open(&s->reader, path, 2, err, errlen); /* 2: the loop's */
	if (rc == 0)
		rc = conn_open(&s->ckpt, path, 1, err, errlen);
	if (rc == 0)
		rc = conn_open(&s->slow, path, 1, err, errlen);
	/* Scans (queries) read the file mapped rather than copied page by
	 * page: about a third less time for a full scan. */
	if (rc == 0)
		rc = exec_sql(s->slow.db,
			      "PRAGMA mmap_size=" SLOW_MMAP_BYTES "; PRAGMA cache_size=" SLOW_CACHE_KIB,
			      err, errlen);
	if (rc == 0)
		rc = txn_prepare(&s->writer, err, errlen);
	if (rc == 0)
		rc = txn_prepare(&s->reader, err, errlen);
	if (rc == 0)
		rc = txn_prepare(&s->slow, err, errlen);
	if (rc != 0)
		return open_failed(s) == FH_EIO ? rc : rc;
	if (uv_mutex_init(&s->batch_mu) != 0 || uv_mutex_init(&s->ckpt_mu) != 0 ||
	    uv_mutex_init(&s->slow_mu) != 0 || uv_cond_init(&s->ckpt_cond) != 0) {
		/* Practically never fails on Linux; leak the primitives. */
		snprintf(err, errlen, "cannot create locks");
		return open_failed(s);
	}
	s->reader.shared_read = 1;
	s->slow.shared_read = 1; /* one snapshot per slow read (ended after its work) */
	if (uv_thread_create(&s->ckpt_thread, checkpointer_main, s) != 0) {
		snprintf(err, errlen, "cannot start the store's checkpointer thread");
		return open_failed(s);
	}
	s->ckpt_started = 1;
	uv_prepare_init(loop, &s->prepare);
	s->prepare.data = s;
	uv_prepare_start(&s->prepare, on_prepare);
	uv_unref((uv_handle_t *)&s->prepare);
	s->base.open_handles = 1; /* the prepare handle; store__start adds its own */
	if (store__start(&s->base, &sqlite_backend, loop, BATCH_MAX, 1, err, errlen) != 0) {
		/* Like store_close with nothing queued. */
		store_close(&s->base);
		return FH_EIO;
	}
	*out = &s->base;
	return 0;
}

/* ---- domain operations ---- */

static sqlite3_stmt *stmt(struct sq_txn *t, enum stmt_id id)
{
	read_begin(t);
	return t->st[id];
}

/* Ends a statement's use: reset (ends its read) and drop borrowed bindings. */
static void stmt_end(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static int bind_text(sqlite3_stmt *st, int i, const char *v)
{
	return sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_STATIC);
}

/* Steps a statement that returns no rows; 0 or FH_EIO (logged). */
static int step_write(struct sq_txn *t, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	int ret = rc == SQLITE_DONE ? 0 : note_error(t, what);
	stmt_end(st);
	return ret;
}

/* Runs a point read keyed by ?1 = k1 and, when k2 is not NULL, ?2 = k2
 * (borrowed): 0 when it found its row (read the columns, then stmt_end),
 * FH_ENOTFOUND, or FH_EIO (logged). */
static int step_row(struct sq_txn *t, sqlite3_stmt *st, const char *k1, const char *k2,
		    const char *what)
{
	bind_text(st, 1, k1);
	if (k2)
		bind_text(st, 2, k2);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc == SQLITE_DONE)
		return FH_ENOTFOUND;
	note_error(t, what);
	return FH_EIO;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
	const unsigned char *v = sqlite3_column_text(st, i);
	return xstrdup(v ? (const char *)v : "");
}

static void read_device(sqlite3_stmt *st, int col, struct store_device *d)
{
	d->json = col_dup(st, col);
	d->etag = sqlite3_column_int64(st, col + 1);
}

static void read_twin(sqlite3_stmt *st, int col, struct store_twin *tw)
{
	tw->tags = col_dup(st, col);
	tw->desired = col_dup(st, col + 1);
	tw->reported = col_dup(st, col + 2);
	tw->meta = col_dup(st, col + 3);
	tw->version = sqlite3_column_int64(st, col + 4);
	tw->desired_version = sqlite3_column_int64(st, col + 5);
	tw->reported_version = sqlite3_column_int64(st, col + 6);
}

static int sq_device_get(struct store_txn *tx, const char *hub, const char *id,
		     struct store_device *out)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_DEV_GET);
	memset(out, 0, sizeof *out);
	int rc = step_row(t, st, hub, id, "device get");
	if (rc == 0)
		read_device(st, 0, out);
	stmt_end(st);
	return rc;
}

static int sq_device_put(struct store_txn *tx, const char *hub, const char *id,
		     const struct store_device *d)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_DEV_PUT);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	bind_text(st, 3, d->json);
	sqlite3_bind_int64(st, 4, d->etag);
	return step_write(t, st, "device put");
}

static int sq_device_delete(struct store_txn *tx, const char *hub, const char *id)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_DEV_DEL);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	int rc = step_write(t, st, "device delete");
	if (rc != 0)
		return rc;
	if (sqlite3_changes(t->db) == 0)
		return FH_ENOTFOUND;
	/* What belongs to the device goes with it. */
	static const struct {
		enum stmt_id st;
		const char *what;
	} rows[] = {{ST_DEV_DEL_TWIN, "twin delete"},
		    {ST_SES_DEL, "session delete"},
		    {ST_CONN_DEL, "connection delete"}};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0] && rc == 0; i++) {
		st = stmt(t, rows[i].st);
		bind_text(st, 1, hub);
		bind_text(st, 2, id);
		rc = step_write(t, st, rows[i].what);
	}
	return rc ? rc : sq_c2d_delete_device(tx, hub, id);
}

/* The listing functions share one reader: a bound list statement whose rows
 * are an id and then a device, a twin or a document. Rows are collected first
 * so that the statement is reset (and its read ended) before any callback
 * runs: callbacks may use the store. The first non-zero callback result
 * stops the calls; the rows left are freed. */
struct list_call {
	int (*device)(void *arg, const char *id, const struct store_device *d);
	int (*twin)(void *arg, const char *id, const struct store_twin *tw);
	int (*doc)(void *arg, const char *id, const char *json);
	void *arg;
	const char *prefix; /* rows come in id order: the first id without it ends the list */
};

struct list_row {
	char *id;
	struct store_device d;
	struct store_twin tw;
	char *json;
};

static int list_rows(struct sq_txn *t, sqlite3_stmt *st, const char *what,
		     const struct list_call *c)
{
	struct list_row *rows = NULL;
	size_t n = 0, cap = 0;
	int rc, ret = 0;
	size_t plen = c->prefix ? strlen(c->prefix) : 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (plen) {
			const unsigned char *id = sqlite3_column_text(st, 0);
			if ((size_t)sqlite3_column_bytes(st, 0) < plen ||
			    memcmp(id, c->prefix, plen) != 0) {
				rc = SQLITE_DONE;
				break;
			}
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			rows = xrealloc(rows, cap * sizeof *rows);
		}
		struct list_row *r = &rows[n++];
		memset(r, 0, sizeof *r);
		r->id = col_dup(st, 0);
		if (c->device)
			read_device(st, 1, &r->d);
		else if (c->twin)
			read_twin(st, 1, &r->tw);
		else
			r->json = col_dup(st, 1);
	}
	if (rc != SQLITE_DONE) {
		note_error(t, what);
		ret = FH_EIO;
	}
	stmt_end(st);
	int stop = ret != 0;
	for (size_t i = 0; i < n; i++) {
		struct list_row *r = &rows[i];
		if (!stop)
			stop = (c->device   ? c->device(c->arg, r->id, &r->d)
				: c->twin ? c->twin(c->arg, r->id, &r->tw)
					  : c->doc(c->arg, r->id, r->json)) != 0;
		free(r->id);
		free(r->json);
		if (c->device)
			store_device_clear(&r->d);
		if (c->twin)
			store_twin_clear(&r->tw);
	}
	free(rows);
	return ret;
}

static int sq_device_list(struct store_txn *tx, const char *hub, const char *after, unsigned limit,
		      int (*each)(void *arg, const char *id, const struct store_device *d),
		      void *arg)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_DEV_LIST);
	bind_text(st, 1, hub);
	bind_text(st, 2, after);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
	return list_rows(t, st, "device list", &(struct list_call){.device = each, .arg = arg});
}

static int sq_device_count(struct store_txn *tx, const char *hub, int64_t *total, int64_t *enabled)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_DEV_COUNT);
	bind_text(st, 1, hub);
	int rc = sqlite3_step(st);
	int ret = 0;
	if (rc == SQLITE_ROW) {
		*total = sqlite3_column_int64(st, 0);
		*enabled = sqlite3_column_int64(st, 1);
	} else {
		note_error(t, "device count");
		ret = FH_EIO;
	}
	stmt_end(st);
	return ret;
}

static int sq_twin_get(struct store_txn *tx, const char *hub, const char *id, struct store_twin *out)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_TWIN_GET);
	memset(out, 0, sizeof *out);
	int rc = step_row(t, st, hub, id, "twin get");
	if (rc == 0)
		read_twin(st, 0, out);
	stmt_end(st);
	return rc;
}

static int sq_twin_get_properties(struct store_txn *tx, const char *hub, const char *id,
			      struct store_twin *out)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_TWIN_GET_PROPS);
	memset(out, 0, sizeof *out);
	int rc = step_row(t, st, hub, id, "twin get");
	if (rc == 0) {
		out->desired = col_dup(st, 0);
		out->reported = col_dup(st, 1);
		out->desired_version = sqlite3_column_int64(st, 2);
		out->reported_version = sqlite3_column_int64(st, 3);
	}
	stmt_end(st);
	return rc;
}

static int sq_twin_put(struct store_txn *tx, const char *hub, const char *id,
		   const struct store_twin *tw)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_TWIN_PUT);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	bind_text(st, 3, tw->tags ? tw->tags : "{}");
	bind_text(st, 4, tw->desired ? tw->desired : "{}");
	bind_text(st, 5, tw->reported ? tw->reported : "{}");
	bind_text(st, 6, tw->meta ? tw->meta : "{}");
	sqlite3_bind_int64(st, 7, tw->version);
	sqlite3_bind_int64(st, 8, tw->desired_version);
	sqlite3_bind_int64(st, 9, tw->reported_version);
	return step_write(t, st, "twin put");
}

static int sq_twin_patch_reported(struct store_txn *tx, const char *hub, const char *id,
			      const char *patch, const char *meta_clear, const char *meta_set,
			      int64_t *reported_version, size_t *reported_len)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_TWIN_PATCH_REPORTED);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	bind_text(st, 3, patch);
	bind_text(st, 4, meta_clear);
	bind_text(st, 5, meta_set);
	int rc = step_write(t, st, "twin reported patch");
	if (rc != 0)
		return rc;
	if (sqlite3_changes(t->db) == 0)
		return FH_ENOTFOUND;
	st = stmt(t, ST_TWIN_REPORTED_STATE);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*reported_version = sqlite3_column_int64(st, 0);
		*reported_len = (size_t)sqlite3_column_int64(st, 1);
	} else {
		rc = note_error(t, "twin reported state");
	}
	stmt_end(st);
	return rc;
}

static int sq_twin_patch_service(struct store_txn *tx, const char *hub, const char *id,
			     const struct store_twin_service_patch *p)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_TWIN_PATCH_SERVICE);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	if (p->tags)
		bind_text(st, 3, p->tags);
	if (p->desired)
		bind_text(st, 4, p->desired);
	bind_text(st, 5, p->meta_clear);
	bind_text(st, 6, p->meta_set);
	if (p->if_version >= 0)
		sqlite3_bind_int64(st, 7, p->if_version);
	int rc = step_write(t, st, "twin service patch"); /* clears the bindings */
	if (rc != 0 || sqlite3_changes(t->db) > 0)
		return rc;
	/* Nothing changed: no such twin, or another version. */
	st = stmt(t, ST_TWIN_EXISTS);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	rc = sqlite3_step(st);
	int ret = rc == SQLITE_ROW    ? FH_EPRECOND
		  : rc == SQLITE_DONE ? FH_ENOTFOUND
				      : note_error(t, "twin exists");
	stmt_end(st);
	return ret;
}

/* Column i as text: a copy (copy), or the statement's own bytes, valid
 * until it steps again; NULL for SQL NULL when null_ok, else "". */
static char *col_text(sqlite3_stmt *st, int i, bool copy, bool null_ok)
{
	if (null_ok && sqlite3_column_type(st, i) == SQLITE_NULL)
		return NULL;
	const unsigned char *v = sqlite3_column_text(st, i);
	const char *t = v ? (const char *)v : "";
	return copy ? xstrdup(t) : (char *)t;
}

/* The view's columns from col on: copies (store_twin_view_clear frees
 * them), or borrowed from the statement (!copy: valid until its next
 * step; never cleared). */
static void read_view(sqlite3_stmt *st, int col, struct store_twin_view *out, bool copy)
{
	struct store_twin *tw = &out->twin;
	memset(out, 0, sizeof *out);
	tw->tags = col_text(st, col + 0, copy, false);
	tw->desired = col_text(st, col + 1, copy, false);
	tw->reported = col_text(st, col + 2, copy, false);
	out->meta_desired = col_text(st, col + 3, copy, true);
	out->meta_reported = col_text(st, col + 4, copy, true);
	tw->version = sqlite3_column_int64(st, col + 5);
	tw->desired_version = sqlite3_column_int64(st, col + 6);
	tw->reported_version = sqlite3_column_int64(st, col + 7);
	out->tags_len = (size_t)sqlite3_column_int64(st, col + 8);
	out->desired_len = (size_t)sqlite3_column_int64(st, col + 9);
	out->device_etag = sqlite3_column_int64(st, col + 10);
	out->status = col_text(st, col + 11, copy, true);
	out->status_reason = col_text(st, col + 12, copy, true);
	out->status_updated_time = col_text(st, col + 13, copy, true);
	out->capabilities = col_text(st, col + 14, copy, true);
	out->auth_type = col_text(st, col + 15, copy, true);
	out->x509_thumbprint = col_text(st, col + 16, copy, true);
	out->connected = sqlite3_column_int64(st, col + 17) != 0;
	out->last_activity_ms = sqlite3_column_int64(st, col + 18);
	out->c2d_count = sqlite3_column_int64(st, col + 19);
}

static int sq_twin_view_get(struct store_txn *tx, const char *hub, const char *id,
			struct store_twin_view *out)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_TWIN_VIEW);
	memset(out, 0, sizeof *out);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	int rc = sqlite3_step(st);
	int ret = 0;
	if (rc == SQLITE_ROW)
		read_view(st, 0, out, true);
	else if (rc == SQLITE_DONE)
		ret = FH_ENOTFOUND;
	else
		ret = note_error(t, "twin view");
	stmt_end(st);
	return ret;
}

/* A scan's statement, built in sql (freed here), from t's cache or
 * prepared (and cached), in the reader's snapshot with ?1 bound to hub;
 * NULL when it does not prepare. The caller ends it with stmt_end. */
static sqlite3_stmt *scan_prepare(struct sq_txn *t, struct buf *sql, const char *hub)
{
	read_begin(t);
	int slot = 0;
	for (int i = 0; i < SCAN_CACHE; i++) {
		if (t->scans[i].sql && strcmp(t->scans[i].sql, sql->data) == 0) {
			slot = i;
			break;
		}
		if (t->scans[i].used < t->scans[slot].used)
			slot = i;
	}
	if (!t->scans[slot].sql || strcmp(t->scans[slot].sql, sql->data) != 0) {
		sqlite3_finalize(t->scans[slot].st);
		free(t->scans[slot].sql);
		t->scans[slot].sql = NULL;
		t->scans[slot].st = NULL;
		if (sqlite3_prepare_v3(t->db, sql->data, -1, SQLITE_PREPARE_PERSISTENT,
				       &t->scans[slot].st, NULL) != SQLITE_OK) {
			buf_free(sql);
			return NULL;
		}
		t->scans[slot].sql = buf_steal(sql);
	}
	buf_free(sql);
	t->scans[slot].used = ++t->scan_clock;
	bind_text(t->scans[slot].st, 1, hub);
	return t->scans[slot].st;
}

static void index_name(const char *cols, char out[32]);

/* Without statistics of the values, SQLite reads a range on an indexed
 * path in id order through every twin (the order a query pages in), a
 * good plan only when the range holds a large share. A range whose
 * matches are few (at most RANGE_INDEX_MAX in the hub: a probe of as many
 * index steps says) is read through its index instead, its rows sorted. */
#define RANGE_INDEX_MAX 2000

/* The name of the index serving such a range term of plan, into out. */
static bool selective_range_index(struct sq_txn *t, const char *hub,
				  const struct query_plan *plan, char out[32])
{
	for (size_t i = 0; i < plan->nterms; i++) {
		const struct qp_term *term = &plan->terms[i];
		struct qp_path p = {term->source, term->seg, term->nseg};
		struct buf cols = BUF_INIT, sql = BUF_INIT;
		buf_appends(&cols, "hub, ");
		bool range = !term->in && term->op != QO_EQ;
		if (!range || !sqlite_query_index_expr(&p, &cols)) {
			buf_free(&cols);
			continue;
		}
		buf_appends(&cols, ", id");
		char name[32];
		index_name(cols.data, name);
		buf_free(&cols);
		buf_printf(&sql, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '%s'",
			   name);
		sqlite3_stmt *st = scan_prepare(t, &sql, hub);
		bool exists = st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0;
		if (st)
			stmt_end(st);
		if (!exists)
			continue;
		struct query_plan one = {.nterms = 1};
		one.terms[0] = *term;
		buf_printf(&sql, "SELECT 1 FROM twins t INDEXED BY %s WHERE t.hub = ?1 AND (", name);
		sqlite_query_where(&one, &sql);
		buf_printf(&sql, ") LIMIT 1 OFFSET %d", RANGE_INDEX_MAX);
		st = scan_prepare(t, &sql, hub);
		bool few = st && sqlite3_step(st) == SQLITE_DONE;
		if (st)
			stmt_end(st);
		if (few) {
			memcpy(out, name, 32);
			return true;
		}
	}
	return false;
}

void sqlite_twin_query_sql(struct store_txn *tx, const char *hub, const struct query_plan *plan,
			   bool unsure_only, struct buf *sql)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	char index[32];
	buf_appends(sql, "SELECT t.id, ");
	if (unsure_only)
		buf_appendc(sql, '0');
	else
		sqlite_query_sure(plan, sql);
	buf_appends(sql, ", " TWIN_VIEW_COLUMNS " FROM twins t");
	if (selective_range_index(t, hub, plan, index))
		buf_printf(sql, " INDEXED BY %s", index);
	buf_appends(sql, TWIN_VIEW_JOINS " WHERE t.hub = ?1 AND t.id > ?2 AND (");
	sqlite_query_where(plan, sql);
	if (unsure_only) {
		buf_appends(sql, ") AND NOT (");
		sqlite_query_sure(plan, sql);
	}
	buf_appends(sql, ") ORDER BY t.id");
}

static int sq_twin_query(struct store_txn *tx, const char *hub, const struct query_plan *plan,
		     const char *after, bool unsure_only,
		     int (*each)(void *arg, const char *id, struct store_twin_view *v, bool sure),
		     void *arg)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	struct buf sql = BUF_INIT;
	sqlite_twin_query_sql(&t->base, hub, plan, unsure_only, &sql);
	sqlite3_stmt *st = scan_prepare(t, &sql, hub);
	if (!st)
		return note_error(t, "twin query");
	bind_text(st, 2, after);
	int ret = 0;
	int rc;
	while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_twin_view v;
		read_view(st, 2, &v, false);
		ret = each(arg, (const char *)sqlite3_column_text(st, 0), &v,
			   sqlite3_column_int(st, 1) != 0);
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = note_error(t, "twin query");
	stmt_end(st);
	return ret;
}

/* The name of the index on cols: "twins_q_" and their FNV-1a hash. */
static void index_name(const char *cols, char out[32])
{
	uint64_t h = 14695981039346656037u;
	for (const unsigned char *c = (const unsigned char *)cols; *c; c++)
		h = (h ^ *c) * 1099511628211u;
	snprintf(out, 32, "twins_q_%016llx", (unsigned long long)h);
}

static int sq_twin_indexes(struct store_txn *tx, const struct qp_path *paths, size_t n)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	char (*names)[32] = xcalloc(n + 1, sizeof *names);
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct buf cols = BUF_INIT, sql = BUF_INIT;
		/* id last: the rows of one value come in id order, the order a
		 * query pages in, so no sort. */
		buf_appends(&cols, "hub, ");
		if (!sqlite_query_index_expr(&paths[i], &cols)) {
			rc = FH_EINVAL;
		} else {
			buf_appends(&cols, ", id");
			index_name(cols.data, names[i]);
			buf_printf(&sql, "CREATE INDEX IF NOT EXISTS %s ON twins (%s)", names[i],
				   cols.data);
			if (sqlite3_exec(t->db, sql.data, NULL, NULL, NULL) != SQLITE_OK)
				rc = note_error(t, "twin index");
		}
		buf_free(&cols);
		buf_free(&sql);
	}
	sqlite3_stmt *st = NULL;
	if (rc == 0 && sqlite3_prepare_v2(t->db,
					  "SELECT name FROM sqlite_master WHERE type = 'index' AND"
					  " tbl_name = 'twins' AND substr(name, 1, 8) = 'twins_q_'",
					  -1, &st, NULL) != SQLITE_OK)
		rc = note_error(t, "twin index list");
	struct buf drop = BUF_INIT;
	while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		bool wanted = false;
		for (size_t i = 0; i < n && !wanted; i++)
			wanted = strcmp(name, names[i]) == 0;
		if (!wanted)
			buf_printf(&drop, "DROP INDEX \"%s\";", name);
	}
	sqlite3_finalize(st);
	if (rc == 0 && drop.len && sqlite3_exec(t->db, drop.data, NULL, NULL, NULL) != SQLITE_OK)
		rc = note_error(t, "twin index drop");
	buf_free(&drop);
	free(names);
	return rc;
}

static int sq_twin_aggregate(struct store_txn *tx, const char *hub, const struct query_plan *plan,
			 int (*each)(void *arg, const struct store_group *g), void *arg)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	struct buf sql = BUF_INIT;
	if (plan->naggs > sizeof ((struct store_group *)0)->agg / sizeof ((struct store_group *)0)->agg[0] ||
	    !sqlite_query_aggregate(plan, &sql)) {
		buf_free(&sql);
		return FH_EINVAL;
	}
	sqlite3_stmt *st = scan_prepare(t, &sql, hub);
	if (!st)
		return note_error(t, "twin aggregate");
	int ret = 0;
	int rc;
	while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_group g;
		memset(&g, 0, sizeof g);
		switch (sqlite3_column_type(st, 0)) {
		case SQLITE_NULL: g.key_type = STORE_KEY_NONE; break;
		case SQLITE_INTEGER:
		case SQLITE_FLOAT:
			g.key_type = STORE_KEY_NUMBER;
			g.key_number = sqlite3_column_double(st, 0);
			break;
		default:
			g.key_type = STORE_KEY_JSON;
			g.key_json = (const char *)sqlite3_column_text(st, 0);
		}
		g.count = (uint64_t)sqlite3_column_int64(st, 1);
		for (size_t i = 0; i < plan->naggs; i++) {
			int c = 2 + 4 * (int)i;
			g.agg[i].n = (uint64_t)sqlite3_column_int64(st, c);
			g.agg[i].sum = sqlite3_column_double(st, c + 1);
			g.agg[i].min = sqlite3_column_double(st, c + 2);
			g.agg[i].max = sqlite3_column_double(st, c + 3);
		}
		ret = each(arg, &g);
	}
	if (ret == 0 && rc != SQLITE_DONE)
		ret = note_error(t, "twin aggregate");
	stmt_end(st);
	return ret;
}

static int sq_twin_list(struct store_txn *tx, const char *hub, const char *after, unsigned limit,
		    int (*each)(void *arg, const char *id, const struct store_twin *tw),
		    void *arg)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_TWIN_LIST);
	bind_text(st, 1, hub);
	bind_text(st, 2, after);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
	return list_rows(t, st, "twin list", &(struct list_call){.twin = each, .arg = arg});
}

static int sq_setting_get(struct store_txn *tx, const char *key, char **value_out)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_SET_GET);
	*value_out = NULL;
	int rc = step_row(t, st, key, NULL, "setting get");
	if (rc == 0)
		*value_out = col_dup(st, 0);
	stmt_end(st);
	return rc;
}

static int sq_setting_put(struct store_txn *tx, const char *key, const char *value)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_SET_PUT);
	bind_text(st, 1, key);
	bind_text(st, 2, value);
	return step_write(t, st, "setting put");
}

/* ---- device sessions ---- */

static int sq_session_get(struct store_txn *tx, const char *hub, const char *id,
		      struct store_session *out)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_SES_GET);
	memset(out, 0, sizeof *out);
	int rc = step_row(t, st, hub, id, "session get");
	if (rc == 0) {
		out->generation = col_dup(st, 0);
		out->subs = col_dup(st, 1);
	}
	stmt_end(st);
	return rc;
}

static int sq_session_put(struct store_txn *tx, const char *hub, const char *id,
		      const struct store_session *ses)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_SES_PUT);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	bind_text(st, 3, ses->generation);
	bind_text(st, 4, ses->subs);
	int rc = step_write(t, st, "session put");
	if (rc == 0 && sqlite3_changes(t->db) == 0)
		return FH_ENOTFOUND;
	return rc;
}

static int sq_session_delete(struct store_txn *tx, const char *hub, const char *id)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_SES_DEL);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	int rc = step_write(t, st, "session delete");
	if (rc == 0 && sqlite3_changes(t->db) == 0)
		return FH_ENOTFOUND;
	return rc;
}

/* ---- connection state ---- */

static int sq_connection_put(struct store_txn *tx, const char *hub, const char *id,
			 const char *generation, const struct store_connection *c)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_CONN_PUT);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	bind_text(st, 3, generation);
	sqlite3_bind_int(st, 4, c->connected);
	sqlite3_bind_int64(st, 5, c->updated_ms);
	sqlite3_bind_int64(st, 6, c->last_activity_ms);
	int rc = step_write(t, st, "connection put");
	if (rc == 0 && sqlite3_changes(t->db) == 0)
		return FH_ENOTFOUND;
	return rc;
}

static int sq_connection_get(struct store_txn *tx, const char *hub, const char *id,
			 struct store_connection *out)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_CONN_GET);
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
	int rc = sqlite3_step(st), ret = 0;
	if (rc == SQLITE_ROW) {
		out->connected = sqlite3_column_int(st, 0) != 0;
		out->updated_ms = sqlite3_column_int64(st, 1);
		out->last_activity_ms = sqlite3_column_int64(st, 2);
		out->node[0] = '\0';
	} else {
		ret = rc == SQLITE_DONE ? FH_ENOTFOUND : note_error(t, "connection get");
	}
	stmt_end(st);
	return ret;
}

static int sq_connections_reset(struct store_txn *tx, const char *hub, int64_t now_ms)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_CONN_RESET);
	bind_text(st, 1, hub);
	sqlite3_bind_int64(st, 2, now_ms);
	return step_write(t, st, "connection reset");
}


/* ---- records ---- */


/* ---- DPS documents ---- */

static const char *const doc_table[DOC_KINDS] = {
	[STORE_ENROLLMENT] = "enrollments",
	[STORE_ENROLLMENT_GROUP] = "enrollment_groups",
	[STORE_REGISTRATION] = "registrations",
	[STORE_OPERATION] = "operations",
	[STORE_WEBHOOK_CALL] = "webhook_calls",
	[STORE_WEBHOOK_CALL_TIME] = "webhook_call_times",
	[STORE_CA_CERT] = "ca_certs",
	[STORE_TPM_CHALLENGE] = "tpm_challenges",
	[STORE_NODE] = "nodes",
};

static sqlite3_stmt *doc_stmt(struct sq_txn *t, enum store_doc_kind kind, enum doc_op op)
{
	if ((unsigned)kind >= DOC_KINDS)
		return NULL;
	read_begin(t);
	if (t->doc[kind][op])
		return t->doc[kind][op];
	static const char *const sql[DOC_OPS] = {
		[DOC_GET] = "SELECT json FROM %s WHERE scope = ?1 AND id = ?2",
		[DOC_PUT] = "INSERT INTO %s (scope, id, json) VALUES (?1, ?2, ?3)"
			    " ON CONFLICT (scope, id) DO UPDATE SET json = excluded.json",
		[DOC_DEL] = "DELETE FROM %s WHERE scope = ?1 AND id = ?2",
		/* Both walk the primary key from a bound; store_doc_list stops at
		 * the first id past the prefix. */
		[DOC_LIST] = "SELECT id, json FROM %s WHERE scope = ?1 AND id > ?2"
			     " ORDER BY id LIMIT ?3",
		[DOC_LIST_FROM] = "SELECT id, json FROM %s WHERE scope = ?1 AND id >= ?2"
				  " ORDER BY id LIMIT ?3",
	};
	char text[256];
	snprintf(text, sizeof text, sql[op], doc_table[kind]);
	if (sqlite3_prepare_v3(t->db, text, -1, SQLITE_PREPARE_PERSISTENT, &t->doc[kind][op],
			       NULL) != SQLITE_OK) {
		note_error(t, "prepare");
		return NULL;
	}
	return t->doc[kind][op];
}

static int sq_doc_get(struct store_txn *tx, enum store_doc_kind kind, const char *scope,
		  const char *id, char **json_out)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = doc_stmt(t, kind, DOC_GET);
	*json_out = NULL;
	if (!st)
		return FH_EIO;
	int rc = step_row(t, st, scope, id, "document get");
	if (rc == 0)
		*json_out = col_dup(st, 0);
	stmt_end(st);
	return rc;
}

static int sq_doc_put(struct store_txn *tx, enum store_doc_kind kind, const char *scope,
		  const char *id, const char *json)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = doc_stmt(t, kind, DOC_PUT);
	if (!st)
		return FH_EIO;
	bind_text(st, 1, scope);
	bind_text(st, 2, id);
	bind_text(st, 3, json);
	return step_write(t, st, "document put");
}

static int sq_doc_delete(struct store_txn *tx, enum store_doc_kind kind, const char *scope,
		     const char *id)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = doc_stmt(t, kind, DOC_DEL);
	if (!st)
		return FH_EIO;
	bind_text(st, 1, scope);
	bind_text(st, 2, id);
	int rc = step_write(t, st, "document delete");
	if (rc == 0 && sqlite3_changes(t->db) == 0)
		return FH_ENOTFOUND;
	return rc;
}

static int sq_doc_list(struct store_txn *tx, enum store_doc_kind kind, const char *scope,
		   const char *prefix, const char *after, unsigned limit,
		   int (*each)(void *arg, const char *id, const char *json), void *arg)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	/* Ids with the prefix form one range of the key: start at the prefix
	 * itself when it is past `after`, so neither the ids before it nor
	 * (list_rows stops there) those after it are read. */
	int from_prefix = strcmp(after, prefix) < 0;
	sqlite3_stmt *st = doc_stmt(t, kind, from_prefix ? DOC_LIST_FROM : DOC_LIST);
	if (!st)
		return FH_EIO;
	bind_text(st, 1, scope);
	bind_text(st, 2, from_prefix ? prefix : after);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
	return list_rows(t, st, "document list",
			 &(struct list_call){.doc = each, .arg = arg, .prefix = prefix});
}

/* store_setting_put that never replaces: FH_EEXIST when the key has a
 * value. */
static int sq_setting_add(struct store_txn *tx, const char *key, const char *value)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	sqlite3_stmt *st = stmt(t, ST_SET_ADD);
	if (bind_text(st, 1, key) || bind_text(st, 2, value))
		return FH_EIO;
	int rc = step_write(t, st, "setting add");
	return rc == 0 && sqlite3_changes(t->db) == 0 ? FH_EEXIST : rc;
}

static const struct store_txn_ops sq_ops = {
	.device_get = sq_device_get,
	.device_put = sq_device_put,
	.device_delete = sq_device_delete,
	.device_list = sq_device_list,
	.device_count = sq_device_count,
	.twin_get = sq_twin_get,
	.twin_get_properties = sq_twin_get_properties,
	.twin_put = sq_twin_put,
	.twin_patch_reported = sq_twin_patch_reported,
	.twin_patch_service = sq_twin_patch_service,
	.twin_view_get = sq_twin_view_get,
	.twin_query = sq_twin_query,
	.twin_indexes = sq_twin_indexes,
	.twin_aggregate = sq_twin_aggregate,
	.twin_list = sq_twin_list,
	.session_get = sq_session_get,
	.session_put = sq_session_put,
	.session_delete = sq_session_delete,
	.connection_put = sq_connection_put,
	.connection_get = sq_connection_get,
	.connections_reset = sq_connections_reset,
	.setting_get = sq_setting_get,
	.setting_put = sq_setting_put,
	.setting_add = sq_setting_add,
	.doc_get = sq_doc_get,
	.doc_put = sq_doc_put,
	.doc_delete = sq_doc_delete,
	.doc_list = sq_doc_list,
	.events_append = sq_events_append,
	.event_read = sq_event_read,
	.event_partition = sq_event_partition,
	.event_seek_time = sq_event_seek_time,
	.event_trim = sq_event_trim,
	.c2d_add = sq_c2d_add,
	.c2d_list = sq_c2d_list,
	.c2d_update = sq_c2d_update,
	.c2d_delete = sq_c2d_delete,
	.c2d_count = sq_c2d_count,
	.c2d_expired = sq_c2d_expired,
	.feedback_add = sq_feedback_add,
	.feedback_list = sq_feedback_list,
	.feedback_trim = sq_feedback_trim,
	.feedback_delete = sq_feedback_delete,
	.notify = NULL, /* one node: nobody to tell */
};

/* ---- for sqlite_messages.c (sqlite_internal.h) ---- */

sqlite3_stmt *sq__stmt(struct store_txn *tx, unsigned slot, const char *sql)
{
	struct sq_txn *t = (struct sq_txn *)tx;
	read_begin(t);
	if (!t->msg[slot] && sqlite3_prepare_v3(t->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
						&t->msg[slot], NULL) != SQLITE_OK) {
		note_error(t, "prepare");
		return NULL;
	}
	return t->msg[slot];
}

void sq__stmt_end(sqlite3_stmt *st)
{
	stmt_end(st);
}

int sq__error(struct store_txn *tx, const char *what)
{
	return note_error((struct sq_txn *)tx, what);
}

sqlite3 *sq__db(struct store_txn *tx)
{
	return ((struct sq_txn *)tx)->db;
}
