/* store.h on PostgreSQL (libpq from Debian): the backend for several
 * fleethub nodes sharing one database (issue 17, design.md §6).
 *
 * Connections, each used by one thread at a time:
 * - the writer (the store's writer thread): runs the batches of jobs, each
 *   batch one transaction, each job inside SAVEPOINT j, as SQLite does.
 *   synchronous_commit is on (the server's default, set again per
 *   connection): COMMIT returns once the WAL is flushed, and only then are
 *   the jobs' dones posted. Point reads inside a job lock the row they read
 *   (SELECT ... FOR UPDATE), so a read-check-write job of one node and one
 *   of another node touching the same device, twin or document run one
 *   after the other, never losing an update; creating a device is an
 *   insert that fails (FH_EEXIST) when another node created it first.
 *   A job that loses a deadlock with another node's batch is rolled back
 *   alone (its savepoint) and fails with FH_EAGAIN: its client is told to
 *   try again; the rest of the batch commits.
 * - a pool of readers (libuv's worker threads: store_read and
 *   store_read_slow both run there, never on the loop), in autocommit:
 *   each statement sees what was committed before it began, so a read
 *   made after a write's done sees the write.
 * - store_reader's connection, for tests and tools only.
 *
 * PostgreSQL down or restarting: a statement that finds its connection
 * broken fails with FH_EUNAVAIL (the hub answers 503, or CONNACK 3);
 * a batch whose COMMIT did not come back is refused as a whole (its
 * outcome is unknown; nothing of it is acknowledged). The writer connects
 * again before its next batch, waiting RECONNECT_MIN_MS after a failure,
 * doubling up to RECONNECT_MAX_MS, and refusing batches meanwhile. One log
 * line when writes start failing, one when they work again.
 *
 *   healthy --connection lost--> down (batches refused: FH_EUNAVAIL)
 *      ^                          | each back-off: try to connect
 *      +------connected-----------+
 *
 * JSON lives in jsonb columns; merges are RFC 7396 through fh_merge_patch
 * (PL/pgSQL, migration 1). jsonb prints with a space after ':' and ','; the
 * byte sizes the twin limits check are counted as compact JSON here
 * (compact_len), so they are the same on both backends.
 *
 * Schema: migrations[] is append-only; fleethub_schema holds the number
 * that ran. All of them run in one transaction under an advisory lock, so
 * nodes started at once on an empty database migrate it once. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/query_plan.h"
#include "store/backend.h"
#include "store/pg_internal.h"

/* Jobs per transaction: each runs in a subtransaction (its savepoint),
 * and PostgreSQL keeps up to 64 of a transaction's subtransactions in
 * shared memory; beyond, every snapshot in the cluster has to look them up
 * on disk (subxid overflow), which slows all nodes down. */
#define BATCH_MAX 60
#define POOL_MAX 16
#define SCAN_PAGE 1000
#define RECONNECT_MIN_MS 250
#define RECONNECT_MAX_MS 5000
#define MIGRATION_LOCK 0x666c6565 /* "flee": pg_advisory_xact_lock key */

/* Append-only. Never edit a shipped entry: add a new one. */
static const char *const migrations[] = {
	/* 1: everything the SQLite schema had at its migration 7 */
	"CREATE FUNCTION fh_merge_patch(target jsonb, patch jsonb) RETURNS jsonb"
	" LANGUAGE plpgsql IMMUTABLE AS $$"
	" DECLARE k text; v jsonb; r jsonb;"
	" BEGIN"
	"  IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN RETURN patch; END IF;"
	"  IF jsonb_typeof(target) IS DISTINCT FROM 'object' THEN r := '{}';"
	"  ELSE r := target; END IF;"
	"  FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP"
	"   IF jsonb_typeof(v) = 'null' THEN r := r - k;"
	"   ELSE r := jsonb_set(r, ARRAY[k], fh_merge_patch(r -> k, v)); END IF;"
	"  END LOOP;"
	"  RETURN r;"
	" END $$;"
	"CREATE TABLE devices (hub text COLLATE \"C\" NOT NULL, id text COLLATE \"C\" NOT NULL,"
	" json jsonb NOT NULL, etag bigint NOT NULL, PRIMARY KEY (hub, id));"
	"CREATE TABLE twins (hub text COLLATE \"C\" NOT NULL, id text COLLATE \"C\" NOT NULL,"
	" tags jsonb NOT NULL, desired jsonb NOT NULL, reported jsonb NOT NULL,"
	" meta jsonb NOT NULL, version bigint NOT NULL, desired_version bigint NOT NULL,"
	" reported_version bigint NOT NULL, PRIMARY KEY (hub, id));"
	"CREATE TABLE settings (key text COLLATE \"C\" PRIMARY KEY, value text NOT NULL);"
	"CREATE TABLE docs (kind smallint NOT NULL, scope text COLLATE \"C\" NOT NULL,"
	" id text COLLATE \"C\" NOT NULL, json jsonb NOT NULL, PRIMARY KEY (kind, scope, id));"
	"CREATE TABLE sessions (hub text COLLATE \"C\" NOT NULL, id text COLLATE \"C\" NOT NULL,"
	" generation text NOT NULL, subs text NOT NULL, PRIMARY KEY (hub, id));"
	"CREATE TABLE connections (hub text COLLATE \"C\" NOT NULL,"
	" id text COLLATE \"C\" NOT NULL, connected boolean NOT NULL, updated bigint NOT NULL,"
	" last_activity bigint NOT NULL, node text NOT NULL DEFAULT '',"
	" PRIMARY KEY (hub, id));",
	/* 2: messages between nodes too long for a NOTIFY payload */
	"CREATE TABLE messages (id bigserial PRIMARY KEY, text text NOT NULL,"
	" created timestamptz NOT NULL DEFAULT now());",
	/* 3: device messages (pg_messages.c): event logs, C2D queues, feedback */
	"CREATE TABLE event_partitions (hub text COLLATE \"C\" NOT NULL, part integer NOT NULL,"
	" next_seq bigint NOT NULL, next_offset bigint NOT NULL, bytes bigint NOT NULL,"
	" count bigint NOT NULL, last_enqueued bigint NOT NULL, PRIMARY KEY (hub, part));"
	"CREATE TABLE events (hub text COLLATE \"C\" NOT NULL, part integer NOT NULL,"
	" seq bigint NOT NULL, off bigint NOT NULL, enqueued bigint NOT NULL,"
	" size bigint NOT NULL, device text NOT NULL, props text NOT NULL, body bytea NOT NULL,"
	" PRIMARY KEY (hub, part, seq));"
	"CREATE TABLE c2d (hub text COLLATE \"C\" NOT NULL, device text COLLATE \"C\" NOT NULL,"
	" seq bigint NOT NULL, expiry bigint NOT NULL, json text NOT NULL, body bytea NOT NULL,"
	" PRIMARY KEY (hub, device, seq));"
	"CREATE INDEX c2d_expiry ON c2d (expiry);"
	"CREATE TABLE c2d_counters (hub text COLLATE \"C\" NOT NULL,"
	" device text COLLATE \"C\" NOT NULL, next_seq bigint NOT NULL, PRIMARY KEY (hub, device));"
	"CREATE TABLE feedback (id bigserial PRIMARY KEY, hub text COLLATE \"C\" NOT NULL,"
	" added bigint NOT NULL, json text NOT NULL);"
	"CREATE INDEX feedback_hub ON feedback (hub, id);",
};
#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

enum pst {
	P_DEV_GET,
	P_DEV_GET_LOCK,
	P_DEV_PUT,
	P_DEV_INSERT,
	P_DEV_DEL,
	P_DEV_DEL_TWIN,
	P_DEV_DEL_SES,
	P_DEV_DEL_CONN,
	P_DEV_LIST,
	P_DEV_COUNT,
	P_TWIN_GET,
	P_TWIN_GET_LOCK,
	P_TWIN_GET_PROPS,
	P_TWIN_PUT,
	P_TWIN_LIST,
	P_TWIN_PATCH_REPORTED,
	P_TWIN_PATCH_SERVICE,
	P_TWIN_EXISTS,
	P_TWIN_VIEW,
	P_TWIN_SCAN,
	P_SET_GET,
	P_SET_GET_LOCK,
	P_SET_PUT,
	P_SET_ADD,
	P_SES_GET,
	P_SES_PUT,
	P_CONN_PUT,
	P_CONN_GET,
	P_CONN_RESET,
	P_CONN_CLEAR_NODE,
	P_DOC_GET,
	P_DOC_GET_LOCK,
	P_DOC_PUT,
	P_DOC_DEL,
	P_DOC_LIST,
	P_NOTIFY,
	P_NOTIFY_LONG,
	P_MSG_GET,
	P_MSG_SWEEP,
	P_COUNT
};

#define DEV_COLS "json::text, etag"
#define TWIN_COLS                                                                           \
	"tags::text, desired::text, reported::text, meta::text, version, desired_version,"  \
	" reported_version"
/* What a twin view reads: the twin t, the identity d, the connection c. */
#define VIEW_COLS                                                                           \
	"t.tags::text, t.desired::text, t.reported::text, (t.meta -> 'desired')::text,"     \
	" (t.meta -> 'reported')::text, t.version, t.desired_version, t.reported_version,"  \
	" d.etag, (d.json -> 'status')::text, (d.json -> 'statusReason')::text,"            \
	" (d.json -> 'statusUpdatedTime')::text, (d.json -> 'capabilities')::text,"         \
	" (d.json #> '{authentication,type}')::text,"                                       \
	" (d.json #> '{authentication,x509Thumbprint}')::text,"                             \
	" coalesce(c.connected, false), coalesce(c.last_activity, 0),"                       \
	" (SELECT count(*) FROM c2d WHERE c2d.hub = t.hub AND c2d.device = t.id)"
#define VIEW_FROM                                                                           \
	" FROM twins t JOIN devices d ON d.hub = t.hub AND d.id = t.id"                      \
	" LEFT JOIN connections c ON c.hub = t.hub AND c.id = t.id"
/* Only while the device exists with that generationId. */
#define SAME_GENERATION                                                                     \
	" WHERE EXISTS (SELECT 1 FROM devices WHERE hub = $1 AND id = $2"                    \
	" AND json ->> 'generationId' = $3)"

static const struct {
	const char *sql;
	int nparams;
} pst_sql[P_COUNT] = {
	[P_DEV_GET] = {"SELECT " DEV_COLS " FROM devices WHERE hub = $1 AND id = $2", 2},
	[P_DEV_GET_LOCK] = {"SELECT " DEV_COLS " FROM devices WHERE hub = $1 AND id = $2"
			    " FOR UPDATE", 2},
	[P_DEV_PUT] = {"INSERT INTO devices (hub, id, json, etag) VALUES ($1, $2, $3, $4)"
		       " ON CONFLICT (hub, id) DO UPDATE SET json = excluded.json,"
		       " etag = excluded.etag", 4},
	[P_DEV_INSERT] = {"INSERT INTO devices (hub, id, json, etag) VALUES ($1, $2, $3, $4)"
			  " ON CONFLICT (hub, id) DO NOTHING", 4},
	[P_DEV_DEL] = {"DELETE FROM devices WHERE hub = $1 AND id = $2", 2},
	[P_DEV_DEL_TWIN] = {"DELETE FROM twins WHERE hub = $1 AND id = $2", 2},
	[P_DEV_DEL_SES] = {"DELETE FROM sessions WHERE hub = $1 AND id = $2", 2},
	[P_DEV_DEL_CONN] = {"DELETE FROM connections WHERE hub = $1 AND id = $2", 2},
	[P_DEV_LIST] = {"SELECT id, " DEV_COLS " FROM devices WHERE hub = $1 AND id > $2"
			" ORDER BY id LIMIT $3", 3},
	[P_DEV_COUNT] = {"SELECT count(*), count(*) FILTER (WHERE json ->> 'status' = 'enabled')"
			 " FROM devices WHERE hub = $1", 1},
	[P_TWIN_GET] = {"SELECT " TWIN_COLS " FROM twins WHERE hub = $1 AND id = $2", 2},
	[P_TWIN_GET_LOCK] = {"SELECT " TWIN_COLS " FROM twins WHERE hub = $1 AND id = $2"
			     " FOR UPDATE", 2},
	[P_TWIN_GET_PROPS] = {"SELECT desired::text, reported::text, desired_version,"
			      " reported_version FROM twins WHERE hub = $1 AND id = $2", 2},
	[P_TWIN_PUT] = {"INSERT INTO twins (hub, id, tags, desired, reported, meta, version,"
			" desired_version, reported_version)"
			" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
			" ON CONFLICT (hub, id) DO UPDATE SET tags = excluded.tags,"
			" desired = excluded.desired, reported = excluded.reported,"
			" meta = excluded.meta, version = excluded.version,"
			" desired_version = excluded.desired_version,"
			" reported_version = excluded.reported_version", 9},
	[P_TWIN_LIST] = {"SELECT id, " TWIN_COLS " FROM twins WHERE hub = $1 AND id > $2"
			 " ORDER BY id LIMIT $3", 3},
	[P_TWIN_PATCH_REPORTED] = {"UPDATE twins SET reported = fh_merge_patch(reported, $3),"
				   " meta = fh_merge_patch(fh_merge_patch(meta, $4), $5),"
				   " version = version + 1,"
				   " reported_version = reported_version + 1"
				   " WHERE hub = $1 AND id = $2"
				   " RETURNING reported_version, reported::text", 5},
	/* Every '"$lastUpdatedVersion":0' in the set patch becomes the new
	 * desired $version (the old one + 1: SET reads the old row). */
	[P_TWIN_PATCH_SERVICE] =
	    {"UPDATE twins SET"
	     " tags = CASE WHEN $3::jsonb IS NULL THEN tags ELSE fh_merge_patch(tags, $3) END,"
	     " desired = CASE WHEN $4::jsonb IS NULL THEN desired"
	     " ELSE fh_merge_patch(desired, $4) END,"
	     " meta = fh_merge_patch(fh_merge_patch(meta, $5), replace($6::text,"
	     " '\"$lastUpdatedVersion\":0', '\"$lastUpdatedVersion\":'"
	     " || (desired_version + 1))::jsonb),"
	     " version = version + 1,"
	     " desired_version = desired_version + CASE WHEN $4::jsonb IS NULL THEN 0 ELSE 1 END"
	     " WHERE hub = $1 AND id = $2 AND ($7::bigint IS NULL OR version = $7::bigint)", 7},
	[P_TWIN_EXISTS] = {"SELECT 1 FROM twins WHERE hub = $1 AND id = $2", 2},
	[P_TWIN_VIEW] = {"SELECT " VIEW_COLS VIEW_FROM " WHERE t.hub = $1 AND t.id = $2", 2},
	[P_TWIN_SCAN] = {"SELECT t.id, " VIEW_COLS VIEW_FROM " WHERE t.hub = $1 AND t.id > $2"
			 " ORDER BY t.id LIMIT $3", 3},
	[P_SET_GET] = {"SELECT value FROM settings WHERE key = $1", 1},
	[P_SET_GET_LOCK] = {"SELECT value FROM settings WHERE key = $1 FOR UPDATE", 1},
	[P_SET_PUT] = {"INSERT INTO settings (key, value) VALUES ($1, $2)"
		       " ON CONFLICT (key) DO UPDATE SET value = excluded.value", 2},
	[P_SET_ADD] = {"INSERT INTO settings (key, value) VALUES ($1, $2)"
		       " ON CONFLICT (key) DO NOTHING", 2},
	[P_SES_GET] = {"SELECT generation, subs FROM sessions WHERE hub = $1 AND id = $2", 2},
	[P_SES_PUT] = {"INSERT INTO sessions (hub, id, generation, subs)"
		       " SELECT $1, $2, $3, $4" SAME_GENERATION
		       " ON CONFLICT (hub, id) DO UPDATE SET generation = excluded.generation,"
		       " subs = excluded.subs", 4},
	[P_CONN_PUT] = {"INSERT INTO connections (hub, id, connected, updated, last_activity,"
			" node) SELECT $1, $2, $4::boolean, $5::bigint, $6::bigint, $7::text"
			SAME_GENERATION
			" ON CONFLICT (hub, id) DO UPDATE SET connected = excluded.connected,"
			" updated = excluded.updated, last_activity = excluded.last_activity,"
			" node = excluded.node"
			/* a node's disconnect does not undo another node's connect */
			" WHERE excluded.connected OR connections.node = excluded.node", 7},
	[P_CONN_GET] = {"SELECT connected, updated, last_activity, node FROM connections"
			" WHERE hub = $1 AND id = $2", 2},
	/* This node's rows only: the others' devices are still connected. */
	[P_CONN_RESET] = {"UPDATE connections SET connected = false, updated = $2"
			  " WHERE hub = $1 AND connected AND node = $3", 3},
	[P_CONN_CLEAR_NODE] = {"UPDATE connections SET connected = false, updated = $2"
			       " WHERE connected AND node = $1", 2},
	[P_DOC_GET] = {"SELECT json::text FROM docs WHERE kind = $1 AND scope = $2 AND id = $3",
		       3},
	[P_DOC_GET_LOCK] = {"SELECT json::text FROM docs WHERE kind = $1 AND scope = $2"
			    " AND id = $3 FOR UPDATE", 3},
	[P_DOC_PUT] = {"INSERT INTO docs (kind, scope, id, json) VALUES ($1, $2, $3, $4)"
		       " ON CONFLICT (kind, scope, id) DO UPDATE SET json = excluded.json", 4},
	[P_DOC_DEL] = {"DELETE FROM docs WHERE kind = $1 AND scope = $2 AND id = $3", 3},
	[P_DOC_LIST] = {"SELECT id, json::text FROM docs WHERE kind = $1 AND scope = $2"
			" AND id > $4 AND id >= $3 AND starts_with(id, $3)"
			" ORDER BY id LIMIT $5", 5},
	[P_NOTIFY] = {"SELECT pg_notify('fleethub', $1)", 1},
	[P_NOTIFY_LONG] = {"WITH m AS (INSERT INTO messages (text) VALUES ($1) RETURNING id)"
			   " SELECT pg_notify('fleethub', '@' || id) FROM m", 1},
	[P_MSG_GET] = {"SELECT text FROM messages WHERE id = $1", 1},
	[P_MSG_SWEEP] = {"DELETE FROM messages WHERE created < now() - interval '10 minutes'", 0},
};

struct pg_txn {
	struct store_txn base; /* ops: pg_ops */
	PGconn *conn;
	bool writer;            /* in a write transaction: point reads lock their row */
	bool prepared[P_COUNT + PG_MSG_SLOTS]; /* on this connection (pg__run's after) */
	int fault;  /* FH_EUNAVAIL: the connection broke during this job or batch */
	int failed; /* the first statement error of the running job, or 0
	               (FH_EAGAIN: it lost a deadlock or serialization) */
	/* The writer during a batch: libpq's pipeline mode. Transaction control
	 * (BEGIN, SAVEPOINT, RELEASE) and PREPAREs are sent without waiting
	 * (queued), and their results read with those of the next statement
	 * that returns something: one round trip per job, not two. After an
	 * error the server skips what follows until a Sync (pipe_sync). */
	bool pipe;
	int queued;        /* sent, results not read yet */
	int qprep[16];     /* for each: the statement a PREPARE is for, or -1 */
	bool aborted;      /* an error: results are "aborted" until a Sync */
};

/* Writers (shards, store/backend.h): a connection each. One connection
 * waits for each statement's answer before the next job runs, which leaves
 * the server idle half the time; two keep it busy (bench/README.md). */
#define WRITERS 2

struct pg_writer {
	struct pg_txn t; /* its writer thread only (loop after join) */
	int failing;     /* FH_EUNAVAIL / FH_EIO while writes fail, else 0 */
	unsigned long refused;
	int64_t next_connect_ms;
	unsigned backoff_ms;
};

struct pg_store {
	struct store base;
	char *conninfo;
	struct pg_writer writers[WRITERS];

	struct pg_txn reader; /* store_reader: tests and tools */
	struct listener *listener; /* store_listen's, or NULL */

	uv_mutex_t pool_mu; /* guards pool, npool */
	struct pg_txn *pool[POOL_MAX]; /* idle reader connections */
	unsigned npool;
};

static const struct store_txn_ops pg_ops;

/* ---- connections and statements ---- */

static PGconn *connect_db(const char *conninfo, char *err, size_t errlen)
{
	static const char *const keys[] = {"dbname", "connect_timeout", "application_name",
					   NULL};
	const char *const vals[] = {conninfo, "5", "fleethub", NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		char msg[256];
		snprintf(msg, sizeof msg, "%s", c ? PQerrorMessage(c) : "out of memory");
		msg[strcspn(msg, "\n")] = '\0';
		snprintf(err, errlen, "cannot connect to PostgreSQL: %s", msg);
		PQfinish(c);
		return NULL;
	}
	PGresult *r = PQexec(c, "SET synchronous_commit = on; SET client_min_messages = warning");
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if (!ok) {
		snprintf(err, errlen, "cannot set up the PostgreSQL session: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

static void txn_init(struct pg_txn *t, PGconn *c, const char *node)
{
	memset(t, 0, sizeof *t);
	t->base.ops = &pg_ops;
	t->base.node = node;
	t->conn = c;
}

/* Whether c is usable: a connection whose server went away (PostgreSQL
 * restarted) still says CONNECTION_OK until it reads. Reading what is
 * pending (nothing blocks) notices the end of the stream; twice, because a
 * server shutting down first sends its "terminating connection" error, and
 * one read may stop after it. */
static bool conn_alive(PGconn *c)
{
	return c && PQconsumeInput(c) && PQconsumeInput(c) && PQstatus(c) == CONNECTION_OK;
}

static void txn_close(struct pg_txn *t)
{
	PQfinish(t->conn);
	t->conn = NULL;
	memset(t->prepared, 0, sizeof t->prepared);
}

/* Notes a failed statement (r may be NULL) for the job and returns the
 * store error: FH_EUNAVAIL when the connection is gone, FH_ENOSPC when the
 * server's disk is full, else FH_EIO (logged). */
static int note_error(struct pg_txn *t, PGresult *r, const char *what)
{
	int rc;
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	if (!t->conn || PQstatus(t->conn) != CONNECTION_OK ||
	    (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0))) {
		rc = FH_EUNAVAIL;
		t->fault = FH_EUNAVAIL;
	} else if (state && strncmp(state, "53", 2) == 0) {
		rc = FH_ENOSPC;
		log_at(LOG_ERROR, "store: %s: %s", what, PQresultErrorMessage(r));
	} else if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)) {
		rc = FH_EAGAIN;
	} else {
		rc = FH_EIO;
		log_at(LOG_ERROR, "store: %s: %s", what,
		       r ? PQresultErrorMessage(r) : PQerrorMessage(t->conn));
	}
	if (!t->failed)
		t->failed = rc;
	return rc;
}

/* ---- pipeline mode (the writer during a batch) ---- */

/* The next query's result in the pipeline, and the NULL that ends it;
 * NULL when the connection broke. */
static PGresult *pipe_result(struct pg_txn *t)
{
	PGresult *r = PQgetResult(t->conn);
	if (!r) {
		note_error(t, NULL, "pipeline");
		t->fault = FH_EUNAVAIL;
		return NULL;
	}
	PGresult *more;
	while ((more = PQgetResult(t->conn)))
		PQclear(more);
	return r;
}

/* Reads the results of everything queued (a flush request must have been
 * sent after it): 0, or the first error (noted). */
static int pipe_drain(struct pg_txn *t)
{
	int rc = 0;
	for (int i = 0; i < t->queued; i++) {
		PGresult *r = pipe_result(t);
		if (!r)
			return t->fault;
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_COMMAND_OK && t->qprep[i] >= 0)
			t->prepared[t->qprep[i]] = true;
		else if (st == PGRES_PIPELINE_ABORTED)
			rc = rc ? rc : (t->failed ? t->failed : FH_EIO);
		else if (st != PGRES_COMMAND_OK)
			rc = rc ? rc : note_error(t, r, "transaction control");
		if (st != PGRES_COMMAND_OK)
			t->aborted = true;
		PQclear(r);
	}
	t->queued = 0;
	return rc;
}

/* Queues control SQL (no parameters, no rows). */
static int pipe_ctl(struct pg_txn *t, int prep)
{
	if (t->queued == (int)(sizeof t->qprep / sizeof t->qprep[0])) {
		if (!PQsendFlushRequest(t->conn) || PQflush(t->conn) != 0)
			return note_error(t, NULL, "flush");
		int rc = pipe_drain(t);
		if (rc != 0)
			return rc;
	}
	t->qprep[t->queued++] = prep;
	return 0;
}

static int pipe_send_ctl(struct pg_txn *t, const char *sql)
{
	if (!PQsendQueryParams(t->conn, sql, 0, NULL, NULL, NULL, NULL, 0))
		return note_error(t, NULL, sql);
	return pipe_ctl(t, -1);
}

/* After an error: a Sync, and everything up to it read; the server then
 * takes statements again (the transaction needs ROLLBACK TO SAVEPOINT). */
static int pipe_sync(struct pg_txn *t)
{
	if (!PQpipelineSync(t->conn))
		return note_error(t, NULL, "sync");
	for (;;) {
		PGresult *r = PQgetResult(t->conn);
		if (!r) {
			if (PQstatus(t->conn) != CONNECTION_OK) {
				t->fault = FH_EUNAVAIL;
				return FH_EUNAVAIL;
			}
			continue;
		}
		ExecStatusType st = PQresultStatus(r);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_PIPELINE_SYNC &&
		    st != PGRES_PIPELINE_ABORTED)
			note_error(t, r, "pipeline");
		PQclear(r);
		if (st == PGRES_PIPELINE_SYNC)
			break;
	}
	t->queued = 0;
	t->aborted = false;
	return 0;
}

/* A statement in pipeline mode: sent with a flush request behind what is
 * queued; their results, then its own. */
static PGresult *pipe_run(struct pg_txn *t, int id, const char *sql, int nparams,
			  const char *name, const char *const *vals, int *rc)
{
	if (t->aborted) {
		*rc = t->failed ? t->failed : FH_EIO;
		return NULL;
	}
	if (!t->prepared[id]) {
		if (!PQsendPrepare(t->conn, name, sql, nparams, NULL)) {
			*rc = note_error(t, NULL, "prepare");
			return NULL;
		}
		*rc = pipe_ctl(t, (int)id);
		if (*rc != 0)
			return NULL;
	}
	if (!PQsendQueryPrepared(t->conn, name, nparams, vals, NULL, NULL, 0) ||
	    !PQsendFlushRequest(t->conn) || PQflush(t->conn) != 0) {
		*rc = note_error(t, NULL, sql);
		return NULL;
	}
	int before = pipe_drain(t);
	PGresult *r = pipe_result(t);
	if (!r) {
		*rc = t->fault;
		return NULL;
	}
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		*rc = st == PGRES_PIPELINE_ABORTED ? (before ? before : FH_EIO)
						   : note_error(t, r, sql);
		t->aborted = true;
		PQclear(r);
		return NULL;
	}
	*rc = before;
	if (before) {
		PQclear(r);
		return NULL;
	}
	return r;
}

/* Runs statement id with its parameters (NULL: SQL NULL); returns the
 * result (PQclear it) or NULL with *rc set (the error noted). */
static PGresult *run_sql(struct pg_txn *t, int id, const char *sql, int nparams,
			 const char *const *vals, int *rc)
{
	char name[8];
	snprintf(name, sizeof name, "p%d", id);
	*rc = 0;
	if (!t->conn) {
		*rc = note_error(t, NULL, sql);
		return NULL;
	}
	if (t->pipe)
		return pipe_run(t, id, sql, nparams, name, vals, rc);
	if (!t->prepared[id]) {
		PGresult *p = PQprepare(t->conn, name, sql, nparams, NULL);
		if (PQresultStatus(p) != PGRES_COMMAND_OK) {
			*rc = note_error(t, p, "prepare");
			PQclear(p);
			return NULL;
		}
		PQclear(p);
		t->prepared[id] = true;
	}
	PGresult *r = PQexecPrepared(t->conn, name, nparams, vals, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		*rc = note_error(t, r, sql);
		PQclear(r);
		return NULL;
	}
	return r;
}

static PGresult *run(struct pg_txn *t, enum pst id, const char *const *vals, int *rc)
{
	return run_sql(t, (int)id, pst_sql[id].sql, pst_sql[id].nparams, vals, rc);
}

PGresult *pg__run(struct store_txn *tx, unsigned slot, const char *sql, int nparams,
		  const char *const *vals, int *rc)
{
	return run_sql((struct pg_txn *)tx, P_COUNT + (int)slot, sql, nparams, vals, rc);
}

/* A statement that returns no rows: 0 (with *changed, when not NULL, the
 * rows it changed) or the error. */
static int run_write(struct pg_txn *t, enum pst id, const char *const *vals, int64_t *changed)
{
	int rc;
	PGresult *r = run(t, id, vals, &rc);
	if (!r)
		return rc;
	if (changed)
		*changed = strtoll(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return 0;
}

/* Plain SQL without parameters (transaction control), now. */
static int exec_sql(struct pg_txn *t, const char *sql)
{
	if (t->pipe) {
		int rc = pipe_send_ctl(t, sql);
		if (rc == 0 && (!PQsendFlushRequest(t->conn) || PQflush(t->conn) != 0))
			rc = note_error(t, NULL, sql);
		return rc ? rc : pipe_drain(t);
	}
	PGresult *r = PQexec(t->conn, sql);
	int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : note_error(t, r, sql);
	PQclear(r);
	return rc;
}

static char *col(PGresult *r, int row, int c)
{
	return PQgetisnull(r, row, c) ? NULL : xstrdup(PQgetvalue(r, row, c));
}

static char *col_or(PGresult *r, int row, int c, const char *dflt)
{
	return xstrdup(PQgetisnull(r, row, c) ? dflt : PQgetvalue(r, row, c));
}

static int64_t col_i64(PGresult *r, int row, int c)
{
	return strtoll(PQgetvalue(r, row, c), NULL, 10);
}

static bool col_bool(PGresult *r, int row, int c)
{
	return PQgetvalue(r, row, c)[0] == 't';
}

/* The byte size of JSON text s written compactly (no whitespace outside
 * strings): what the SQLite backend stores, and what the limits count. */
static size_t compact_len(const char *s)
{
	size_t n = 0;
	bool in_str = false;
	for (; *s; s++) {
		char c = *s;
		if (in_str) {
			n++;
			if (c == '\\' && s[1]) {
				s++;
				n++;
			} else if (c == '"') {
				in_str = false;
			}
		} else if (c != ' ' && c != '\n' && c != '\t' && c != '\r') {
			n++;
			in_str = c == '"';
		}
	}
	return n;
}

/* ---- domain operations ---- */

#define TX struct pg_txn *t = (struct pg_txn *)tx

static void i64(char buf[24], int64_t v)
{
	snprintf(buf, 24, "%lld", (long long)v);
}

static void read_device(PGresult *r, int row, int c, struct store_device *d)
{
	d->json = col_or(r, row, c, "{}");
	d->etag = col_i64(r, row, c + 1);
}

static void read_twin(PGresult *r, int row, int c, struct store_twin *tw)
{
	tw->tags = col_or(r, row, c, "{}");
	tw->desired = col_or(r, row, c + 1, "{}");
	tw->reported = col_or(r, row, c + 2, "{}");
	tw->meta = col_or(r, row, c + 3, "{}");
	tw->version = col_i64(r, row, c + 4);
	tw->desired_version = col_i64(r, row, c + 5);
	tw->reported_version = col_i64(r, row, c + 6);
}

/* A point read of one row: 0 with *out (PQclear it), FH_ENOTFOUND or the
 * error. */
static int get_row(struct pg_txn *t, enum pst id, const char *const *vals, PGresult **out)
{
	int rc;
	PGresult *r = run(t, id, vals, &rc);
	*out = NULL;
	if (!r)
		return rc;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return FH_ENOTFOUND;
	}
	*out = r;
	return 0;
}

static int pg_device_get(struct store_txn *tx, const char *hub, const char *id,
			 struct store_device *out)
{
	TX;
	PGresult *r;
	memset(out, 0, sizeof *out);
	int rc = get_row(t, t->writer ? P_DEV_GET_LOCK : P_DEV_GET,
			 (const char *[]){hub, id}, &r);
	if (rc == 0)
		read_device(r, 0, 0, out);
	PQclear(r);
	return rc;
}

static int pg_device_put(struct store_txn *tx, const char *hub, const char *id,
			 const struct store_device *d)
{
	TX;
	char etag[24];
	i64(etag, d->etag);
	const char *vals[] = {hub, id, d->json, etag};
	if (d->etag != 1)
		return run_write(t, P_DEV_PUT, vals, NULL);
	/* A new identity: another node may have created it meanwhile. */
	int64_t n = 0;
	int rc = run_write(t, P_DEV_INSERT, vals, &n);
	return rc == 0 && n == 0 ? FH_EEXIST : rc;
}

static int pg_device_delete(struct store_txn *tx, const char *hub, const char *id)
{
	TX;
	const char *vals[] = {hub, id};
	int64_t n = 0;
	int rc = run_write(t, P_DEV_DEL, vals, &n);
	if (rc == 0 && n == 0)
		return FH_ENOTFOUND;
	/* What belongs to the device goes with it. */
	static const enum pst rows[] = {P_DEV_DEL_TWIN, P_DEV_DEL_SES, P_DEV_DEL_CONN};
	for (size_t i = 0; rc == 0 && i < sizeof rows / sizeof rows[0]; i++)
		rc = run_write(t, rows[i], vals, NULL);
	return rc ? rc : pg_c2d_delete_device(tx, hub, id);
}

static int pg_device_list(struct store_txn *tx, const char *hub, const char *after, unsigned limit,
			  int (*each)(void *arg, const char *id, const struct store_device *d),
			  void *arg)
{
	TX;
	char lim[24];
	i64(lim, limit);
	int rc;
	PGresult *r = run(t, P_DEV_LIST, (const char *[]){hub, after, lim}, &rc);
	if (!r)
		return rc;
	for (int i = 0, n = PQntuples(r); i < n; i++) {
		struct store_device d;
		read_device(r, i, 1, &d);
		int stop = each(arg, PQgetvalue(r, i, 0), &d);
		store_device_clear(&d);
		if (stop)
			break;
	}
	PQclear(r);
	return 0;
}

static int pg_device_count(struct store_txn *tx, const char *hub, int64_t *total, int64_t *enabled)
{
	TX;
	PGresult *r;
	int rc = get_row(t, P_DEV_COUNT, (const char *[]){hub}, &r);
	if (rc == 0) {
		*total = col_i64(r, 0, 0);
		*enabled = col_i64(r, 0, 1);
	}
	PQclear(r);
	return rc == FH_ENOTFOUND ? FH_EIO : rc;
}

static int pg_twin_get(struct store_txn *tx, const char *hub, const char *id,
		       struct store_twin *out)
{
	TX;
	PGresult *r;
	memset(out, 0, sizeof *out);
	int rc = get_row(t, t->writer ? P_TWIN_GET_LOCK : P_TWIN_GET,
			 (const char *[]){hub, id}, &r);
	if (rc == 0)
		read_twin(r, 0, 0, out);
	PQclear(r);
	return rc;
}

static int pg_twin_get_properties(struct store_txn *tx, const char *hub, const char *id,
				  struct store_twin *out)
{
	TX;
	PGresult *r;
	memset(out, 0, sizeof *out);
	int rc = get_row(t, P_TWIN_GET_PROPS, (const char *[]){hub, id}, &r);
	if (rc == 0) {
		out->desired = col_or(r, 0, 0, "{}");
		out->reported = col_or(r, 0, 1, "{}");
		out->desired_version = col_i64(r, 0, 2);
		out->reported_version = col_i64(r, 0, 3);
	}
	PQclear(r);
	return rc;
}

static int pg_twin_put(struct store_txn *tx, const char *hub, const char *id,
		       const struct store_twin *tw)
{
	TX;
	char v[24], dv[24], rv[24];
	i64(v, tw->version);
	i64(dv, tw->desired_version);
	i64(rv, tw->reported_version);
	const char *vals[] = {hub,
			      id,
			      tw->tags ? tw->tags : "{}",
			      tw->desired ? tw->desired : "{}",
			      tw->reported ? tw->reported : "{}",
			      tw->meta ? tw->meta : "{}",
			      v,
			      dv,
			      rv};
	return run_write(t, P_TWIN_PUT, vals, NULL);
}

static int pg_twin_patch_reported(struct store_txn *tx, const char *hub, const char *id,
				  const char *patch, const char *meta_clear, const char *meta_set,
				  int64_t *reported_version, size_t *reported_len)
{
	TX;
	PGresult *r;
	int rc = get_row(t, P_TWIN_PATCH_REPORTED,
			 (const char *[]){hub, id, patch, meta_clear, meta_set}, &r);
	if (rc == 0) {
		*reported_version = col_i64(r, 0, 0);
		*reported_len = compact_len(PQgetvalue(r, 0, 1));
	}
	PQclear(r);
	return rc;
}

static int pg_twin_patch_service(struct store_txn *tx, const char *hub, const char *id,
				 const struct store_twin_service_patch *p)
{
	TX;
	char ifv[24];
	i64(ifv, p->if_version);
	const char *vals[] = {hub,	   id,		 p->tags,
			      p->desired,  p->meta_clear, p->meta_set,
			      p->if_version >= 0 ? ifv : NULL};
	int64_t n = 0;
	int rc = run_write(t, P_TWIN_PATCH_SERVICE, vals, &n);
	if (rc != 0 || n > 0)
		return rc;
	/* Nothing changed: no such twin, or another version. */
	PGresult *r;
	rc = get_row(t, P_TWIN_EXISTS, vals, &r);
	PQclear(r);
	return rc == 0 ? FH_EPRECOND : rc;
}

/* The view's columns from c on (copies; store_twin_view_clear frees). */
static void read_view(PGresult *r, int row, int c, struct store_twin_view *out)
{
	struct store_twin *tw = &out->twin;
	memset(out, 0, sizeof *out);
	tw->tags = col_or(r, row, c, "{}");
	tw->desired = col_or(r, row, c + 1, "{}");
	tw->reported = col_or(r, row, c + 2, "{}");
	out->meta_desired = col(r, row, c + 3);
	out->meta_reported = col(r, row, c + 4);
	tw->version = col_i64(r, row, c + 5);
	tw->desired_version = col_i64(r, row, c + 6);
	tw->reported_version = col_i64(r, row, c + 7);
	out->tags_len = compact_len(tw->tags);
	out->desired_len = compact_len(tw->desired);
	out->device_etag = col_i64(r, row, c + 8);
	out->status = col(r, row, c + 9);
	out->status_reason = col(r, row, c + 10);
	out->status_updated_time = col(r, row, c + 11);
	out->capabilities = col(r, row, c + 12);
	out->auth_type = col(r, row, c + 13);
	out->x509_thumbprint = col(r, row, c + 14);
	out->connected = col_bool(r, row, c + 15);
	out->last_activity_ms = col_i64(r, row, c + 16);
	out->c2d_count = col_i64(r, row, c + 17);
}

static int pg_twin_view_get(struct store_txn *tx, const char *hub, const char *id,
			    struct store_twin_view *out)
{
	TX;
	PGresult *r;
	memset(out, 0, sizeof *out);
	int rc = get_row(t, P_TWIN_VIEW, (const char *[]){hub, id}, &r);
	if (rc == 0)
		read_view(r, 0, 0, out);
	PQclear(r);
	return rc;
}

/* Every twin of hub after `after`, in pages, none of them sure: the
 * caller decides each row with query_matches. (The plan's terms are not
 * turned into SQL on this backend yet: a query reads the hub's twins.) */
static int pg_twin_query(struct store_txn *tx, const char *hub, const struct query_plan *plan,
			 const char *after, bool unsure_only,
			 int (*each)(void *arg, const char *id, struct store_twin_view *v,
				     bool sure),
			 void *arg)
{
	TX;
	if (plan->empty)
		return 0;
	char lim[24], *last = xstrdup(after);
	i64(lim, SCAN_PAGE);
	int ret = 0;
	for (;;) {
		int rc;
		PGresult *r = run(t, P_TWIN_SCAN, (const char *[]){hub, last, lim}, &rc);
		if (!r) {
			ret = rc;
			break;
		}
		int n = PQntuples(r);
		for (int i = 0; ret == 0 && i < n; i++) {
			struct store_twin_view v;
			read_view(r, i, 1, &v);
			ret = each(arg, PQgetvalue(r, i, 0), &v, false);
			store_twin_view_clear(&v);
		}
		if (n > 0) {
			free(last);
			last = xstrdup(PQgetvalue(r, n - 1, 0));
		}
		PQclear(r);
		if (ret != 0 || n < SCAN_PAGE)
			break;
	}
	free(last);
	return ret;
}

/* No store indexes for queries on this backend (pg_twin_query reads the
 * hub's twins): nothing to make. */
static int pg_twin_indexes(struct store_txn *tx, const struct qp_path *paths, size_t n)
{
	return 0;
}

/* The store is sure of no row (pg_twin_query): no groups, except the one
 * row an aggregate without GROUP BY always has. */
static int pg_twin_aggregate(struct store_txn *tx, const char *hub, const struct query_plan *plan,
			     int (*each)(void *arg, const struct store_group *g), void *arg)
{
	if (plan->grouped)
		return 0;
	struct store_group g;
	memset(&g, 0, sizeof g);
	g.key_type = STORE_KEY_NONE;
	return each(arg, &g);
}

static int pg_twin_list(struct store_txn *tx, const char *hub, const char *after, unsigned limit,
			int (*each)(void *arg, const char *id, const struct store_twin *tw),
			void *arg)
{
	TX;
	char lim[24];
	i64(lim, limit);
	int rc;
	PGresult *r = run(t, P_TWIN_LIST, (const char *[]){hub, after, lim}, &rc);
	if (!r)
		return rc;
	for (int i = 0, n = PQntuples(r); i < n; i++) {
		struct store_twin tw;
		read_twin(r, i, 1, &tw);
		int stop = each(arg, PQgetvalue(r, i, 0), &tw);
		store_twin_clear(&tw);
		if (stop)
			break;
	}
	PQclear(r);
	return 0;
}

static int pg_setting_get(struct store_txn *tx, const char *key, char **value_out)
{
	TX;
	PGresult *r;
	*value_out = NULL;
	int rc = get_row(t, t->writer ? P_SET_GET_LOCK : P_SET_GET, (const char *[]){key}, &r);
	if (rc == 0)
		*value_out = col_or(r, 0, 0, "");
	PQclear(r);
	return rc;
}

static int pg_setting_put(struct store_txn *tx, const char *key, const char *value)
{
	TX;
	return run_write(t, P_SET_PUT, (const char *[]){key, value}, NULL);
}

static int pg_setting_add(struct store_txn *tx, const char *key, const char *value)
{
	TX;
	int64_t n = 0;
	int rc = run_write(t, P_SET_ADD, (const char *[]){key, value}, &n);
	return rc == 0 && n == 0 ? FH_EEXIST : rc;
}

static int pg_session_get(struct store_txn *tx, const char *hub, const char *id,
			  struct store_session *out)
{
	TX;
	PGresult *r;
	memset(out, 0, sizeof *out);
	int rc = get_row(t, P_SES_GET, (const char *[]){hub, id}, &r);
	if (rc == 0) {
		out->generation = col_or(r, 0, 0, "");
		out->subs = col_or(r, 0, 1, "");
	}
	PQclear(r);
	return rc;
}

static int pg_session_put(struct store_txn *tx, const char *hub, const char *id,
			  const struct store_session *ses)
{
	TX;
	int64_t n = 0;
	int rc = run_write(t, P_SES_PUT, (const char *[]){hub, id, ses->generation, ses->subs}, &n);
	return rc == 0 && n == 0 ? FH_ENOTFOUND : rc;
}

static int pg_session_delete(struct store_txn *tx, const char *hub, const char *id)
{
	TX;
	int64_t n = 0;
	int rc = run_write(t, P_DEV_DEL_SES, (const char *[]){hub, id}, &n);
	return rc == 0 && n == 0 ? FH_ENOTFOUND : rc;
}

static int pg_connection_put(struct store_txn *tx, const char *hub, const char *id,
			     const char *generation, const struct store_connection *c)
{
	TX;
	char up[24], last[24];
	i64(up, c->updated_ms);
	i64(last, c->last_activity_ms);
	const char *vals[] = {hub, id, generation, c->connected ? "t" : "f", up, last,
			      t->base.node};
	int64_t n = 0;
	int rc = run_write(t, P_CONN_PUT, vals, &n);
	return rc == 0 && n == 0 ? FH_ENOTFOUND : rc;
}

static int pg_connection_get(struct store_txn *tx, const char *hub, const char *id,
			     struct store_connection *out)
{
	TX;
	PGresult *r;
	int rc = get_row(t, P_CONN_GET, (const char *[]){hub, id}, &r);
	if (rc == 0) {
		out->connected = col_bool(r, 0, 0);
		out->updated_ms = col_i64(r, 0, 1);
		out->last_activity_ms = col_i64(r, 0, 2);
		snprintf(out->node, sizeof out->node, "%s", PQgetvalue(r, 0, 3));
	}
	PQclear(r);
	return rc;
}

static int pg_connections_reset(struct store_txn *tx, const char *hub, int64_t now_ms)
{
	TX;
	char now[24];
	i64(now, now_ms);
	return run_write(t, P_CONN_RESET, (const char *[]){hub, now, t->base.node},
			 NULL);
}

static int pg_connections_clear_node(struct store_txn *tx, const char *node, int64_t now_ms)
{
	TX;
	char now[24];
	i64(now, now_ms);
	return run_write(t, P_CONN_CLEAR_NODE, (const char *[]){node, now}, NULL);
}

static void kind_text(enum store_doc_kind kind, char out[8])
{
	snprintf(out, 8, "%d", (int)kind);
}

static int pg_doc_get(struct store_txn *tx, enum store_doc_kind kind, const char *scope,
		      const char *id, char **json_out)
{
	TX;
	char k[8];
	kind_text(kind, k);
	PGresult *r;
	*json_out = NULL;
	int rc = get_row(t, t->writer ? P_DOC_GET_LOCK : P_DOC_GET, (const char *[]){k, scope, id},
			 &r);
	if (rc == 0)
		*json_out = col_or(r, 0, 0, "null");
	PQclear(r);
	return rc;
}

static int pg_doc_put(struct store_txn *tx, enum store_doc_kind kind, const char *scope,
		      const char *id, const char *json)
{
	TX;
	char k[8];
	kind_text(kind, k);
	return run_write(t, P_DOC_PUT, (const char *[]){k, scope, id, json}, NULL);
}

static int pg_doc_delete(struct store_txn *tx, enum store_doc_kind kind, const char *scope,
			 const char *id)
{
	TX;
	char k[8];
	kind_text(kind, k);
	int64_t n = 0;
	int rc = run_write(t, P_DOC_DEL, (const char *[]){k, scope, id}, &n);
	return rc == 0 && n == 0 ? FH_ENOTFOUND : rc;
}

static int pg_doc_list(struct store_txn *tx, enum store_doc_kind kind, const char *scope,
		       const char *prefix, const char *after, unsigned limit,
		       int (*each)(void *arg, const char *id, const char *json), void *arg)
{
	TX;
	char k[8], lim[24];
	kind_text(kind, k);
	i64(lim, limit);
	int rc;
	PGresult *r = run(t, P_DOC_LIST,
			  (const char *[]){k, scope, prefix ? prefix : "", after ? after : "", lim},
			  &rc);
	if (!r)
		return rc;
	for (int i = 0, n = PQntuples(r); i < n; i++)
		if (each(arg, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1)) != 0)
			break;
	PQclear(r);
	return 0;
}

/* A payload of NOTIFY holds less than 8000 bytes: longer messages are
 * stored (messages, swept after MESSAGE_KEEP) and their id is sent. */
#define NOTIFY_MAX 7900

static int pg_notify(struct store_txn *tx, const char *text)
{
	TX;
	return run_write(t, strlen(text) <= NOTIFY_MAX && text[0] != '@' ? P_NOTIFY : P_NOTIFY_LONG,
			 (const char *[]){text}, NULL);
}

static const struct store_txn_ops pg_ops = {
	.device_get = pg_device_get,
	.device_put = pg_device_put,
	.device_delete = pg_device_delete,
	.device_list = pg_device_list,
	.device_count = pg_device_count,
	.twin_get = pg_twin_get,
	.twin_get_properties = pg_twin_get_properties,
	.twin_put = pg_twin_put,
	.twin_patch_reported = pg_twin_patch_reported,
	.twin_patch_service = pg_twin_patch_service,
	.twin_view_get = pg_twin_view_get,
	.twin_query = pg_twin_query,
	.twin_indexes = pg_twin_indexes,
	.twin_aggregate = pg_twin_aggregate,
	.twin_list = pg_twin_list,
	.session_get = pg_session_get,
	.session_put = pg_session_put,
	.session_delete = pg_session_delete,
	.connection_put = pg_connection_put,
	.connection_get = pg_connection_get,
	.connections_reset = pg_connections_reset,
	.connections_clear_node = pg_connections_clear_node,
	.setting_get = pg_setting_get,
	.setting_put = pg_setting_put,
	.setting_add = pg_setting_add,
	.doc_get = pg_doc_get,
	.doc_put = pg_doc_put,
	.doc_delete = pg_doc_delete,
	.doc_list = pg_doc_list,
	.events_append = pg_events_append,
	.event_read = pg_event_read,
	.event_partition = pg_event_partition,
	.event_seek_time = pg_event_seek_time,
	.event_trim = pg_event_trim,
	.c2d_add = pg_c2d_add,
	.c2d_list = pg_c2d_list,
	.c2d_update = pg_c2d_update,
	.c2d_delete = pg_c2d_delete,
	.c2d_count = pg_c2d_count,
	.c2d_expired = pg_c2d_expired,
	.feedback_add = pg_feedback_add,
	.feedback_list = pg_feedback_list,
	.feedback_trim = pg_feedback_trim,
	.feedback_delete = pg_feedback_delete,
	.notify = pg_notify,
};

/* ---- the writer ---- */

/* Keeps the failure episode after a batch (see the top of the file). */
static void writer_health(struct pg_writer *s, int fault, unsigned long refused, const char *why)
{
	if (fault) {
		s->refused += refused;
		if (s->failing != fault)
			log_at(LOG_ERROR, "store: %s: writes are refused until it works again (%s)",
			       fault == FH_EUNAVAIL ? "PostgreSQL unavailable"
						    : "PostgreSQL write error",
			       why);
		s->failing = fault;
	} else if (s->failing) {
		log_at(LOG_WARN, "store: PostgreSQL writes work again (%lu refused meanwhile)",
		       s->refused);
		s->failing = 0;
		s->refused = 0;
	}
}

/* The writer's connection, connected: 0, or FH_EUNAVAIL (during the
 * back-off, or when connecting failed) with why. */
static int writer_ready(struct pg_store *ps, struct pg_writer *s, char *why, size_t whylen)
{
	struct pg_txn *t = &s->t;
	if (conn_alive(t->conn))
		return 0;
	int64_t now = clock_now_ms();
	if (now < s->next_connect_ms) {
		snprintf(why, whylen, "reconnecting");
		return FH_EUNAVAIL;
	}
	txn_close(t);
	PGconn *c = connect_db(ps->conninfo, why, whylen);
	if (!c) {
		s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : RECONNECT_MIN_MS;
		if (s->backoff_ms > RECONNECT_MAX_MS)
			s->backoff_ms = RECONNECT_MAX_MS;
		s->next_connect_ms = now + s->backoff_ms;
		return FH_EUNAVAIL;
	}
	txn_init(t, c, ps->base.node);
	t->writer = true;
	s->backoff_ms = 0;
	if (s->failing)
		log_at(LOG_INFO, "store: connected to PostgreSQL again");
	return 0;
}

/* Runs one job inside the open savepoint j; a job whose statement failed
 * changes nothing (its savepoint is rolled back, which also drops the row
 * locks it took) and fails with that statement's error, even when its
 * work went on. Returns 0 or the fault that ends the batch. */
static int run_job(struct pg_txn *t, struct store_job *j)
{
	t->failed = 0;
	j->rc = j->work(j->arg, &t->base);
	if (t->fault)
		return t->fault;
	if (j->rc >= 0 && !t->failed)
		return 0;
	int rc = t->aborted || t->queued ? pipe_sync(t) : 0;
	if (rc == 0)
		rc = exec_sql(t, "ROLLBACK TO SAVEPOINT j");
	if (rc != 0)
		return t->fault ? t->fault : rc;
	if (j->rc >= 0 || t->failed == FH_EAGAIN)
		j->rc = t->failed;
	return 0;
}

static void run_batch(struct store *base, unsigned shard, struct store_job_list *batch)
{
	struct pg_store *ps = (struct pg_store *)base;
	struct pg_writer *s = &ps->writers[shard];
	struct pg_txn *t = &s->t;
	char why[300] = "";
	store__batch_sort(batch);
	int rc = writer_ready(ps, s, why, sizeof why);
	if (rc == 0) {
		t->fault = 0;
		rc = exec_sql(t, "BEGIN");
		if (rc == FH_EUNAVAIL) {
			/* The connection broke while idle (PostgreSQL restarted):
			 * nothing ran yet, so once more on a new one. */
			txn_close(t);
			rc = writer_ready(ps, s, why, sizeof why);
			t->fault = 0;
			if (rc == 0)
				rc = exec_sql(t, "BEGIN");
		}
	}
	if (rc == 0 && !PQenterPipelineMode(t->conn))
		rc = note_error(t, NULL, "pipeline mode");
	if (rc == 0) {
		t->pipe = true;
		t->queued = 0;
		t->aborted = false;
		rc = pipe_send_ctl(t, "SAVEPOINT j");
	}
	for (struct store_job *j = batch->head; rc == 0 && j; j = j->next) {
		if (j != batch->head) {
			rc = pipe_send_ctl(t, "RELEASE SAVEPOINT j");
			if (rc == 0)
				rc = pipe_send_ctl(t, "SAVEPOINT j");
		}
		if (rc == 0)
			rc = run_job(t, j);
	}
	if (rc == 0 && (rc = pipe_send_ctl(t, "COMMIT")) == 0) {
		/* Everything queued, the COMMIT last, then a Sync: any error on
		 * the way leaves the transaction uncommitted. */
		if (!PQsendFlushRequest(t->conn) || PQflush(t->conn) != 0)
			rc = note_error(t, NULL, "COMMIT");
		else
			rc = pipe_drain(t);
		int src = pipe_sync(t);
		rc = rc ? rc : src;
	} else if (t->pipe && t->conn && PQstatus(t->conn) == CONNECTION_OK) {
		pipe_sync(t);
	}
	if (t->pipe && t->conn && PQstatus(t->conn) == CONNECTION_OK)
		PQexitPipelineMode(t->conn);
	t->pipe = false;
	if (rc == 0) {
		writer_health(s, 0, 0, NULL);
	} else {
		if (t->conn && PQstatus(t->conn) == CONNECTION_OK) {
			PGresult *r = PQexec(t->conn, "ROLLBACK");
			PQclear(r);
		} else {
			rc = FH_EUNAVAIL;
		}
		if (!why[0] && t->conn)
			snprintf(why, sizeof why, "%s", PQerrorMessage(t->conn));
		why[strcspn(why, "\n")] = '\0';
		store__batch_fail(batch, rc);
		writer_health(s, rc, store__batch_count(batch), why);
	}
	store__post(&ps->base, batch);
}

/* ---- readers ---- */

static struct store_txn *slow_begin(struct store *base)
{
	struct pg_store *s = (struct pg_store *)base;
	struct pg_txn *t = NULL;
	uv_mutex_lock(&s->pool_mu);
	if (s->npool)
		t = s->pool[--s->npool];
	uv_mutex_unlock(&s->pool_mu);
	if (t && !conn_alive(t->conn)) {
		txn_close(t);
		free(t);
		t = NULL;
	}
	if (!t) {
		char err[300];
		PGconn *c = connect_db(s->conninfo, err, sizeof err);
		if (!c) {
			log_at(LOG_WARN, "store: %s", err);
			return NULL;
		}
		t = xcalloc(1, sizeof *t);
		txn_init(t, c, s->base.node);
	}
	t->fault = t->failed = 0;
	return &t->base;
}

static void slow_end(struct store *base, struct store_txn *tx)
{
	struct pg_store *s = (struct pg_store *)base;
	TX;
	uv_mutex_lock(&s->pool_mu);
	if (s->npool < POOL_MAX && PQstatus(t->conn) == CONNECTION_OK) {
		s->pool[s->npool++] = t;
		t = NULL;
	}
	uv_mutex_unlock(&s->pool_mu);
	if (t) {
		txn_close(t);
		free(t);
	}
}

/* Every read crosses the network: on the worker pool, never the loop. */
static void pg_read(struct store *base, store_work_fn work, store_done_fn done, void *arg)
{
	store__read_on_worker(base, work, done, arg);
}

static struct store_txn *pg_reader(struct store *base)
{
	struct pg_store *s = (struct pg_store *)base;
	if (!conn_alive(s->reader.conn)) {
		char err[300];
		txn_close(&s->reader);
		txn_init(&s->reader, connect_db(s->conninfo, err, sizeof err), s->base.node);
	}
	return &s->reader.base;
}

/* ---- the listener: messages from the nodes (store_listen) ----
 *
 * A connection of its own that LISTENs, on the loop: uv_poll on its socket,
 * PQconsumeInput and PQnotifies when readable (never a blocking call on
 * the loop). Connecting (blocking) runs on a worker. Messages are handed
 * on in the order they arrived; one sent by id (too long for NOTIFY) is
 * read from the messages table first (store_read), and the ones behind it
 * wait for it. When the connection breaks, it reconnects after a back-off;
 * what was posted meanwhile is missed (store.h).
 *
 *   idle --store_listen--> connecting (worker) --ok--> listening
 *     ^                       | failed                 | connection lost
 *     +------ back-off timer -+------------------------+ */

struct inbox {
	char *text; /* NULL while its text is being read */
	int64_t id; /* sent by id */
	struct inbox *next;
};

struct listener {
	struct pg_store *s;
	void (*fn)(void *arg, const char *text);
	void *arg;
	PGconn *conn;      /* listening; NULL otherwise */
	PGconn *fresh;     /* the worker's result */
	char err[300];
	uv_work_t work;
	uv_poll_t *poll;  /* on conn's socket; one per connection (closed with it) */
	uv_timer_t timer; /* the back-off */
	uv_timer_t sweep; /* the messages table's sweep */
	unsigned backoff_ms;
	bool connecting, closing, reading;
	struct inbox *head, *tail;
};

static void listen_connect(struct listener *l);

static void connect_work(uv_work_t *w)
{
	struct listener *l = w->data;
	l->fresh = connect_db(l->s->conninfo, l->err, sizeof l->err);
	if (!l->fresh)
		return;
	PGresult *r = PQexec(l->fresh, "LISTEN fleethub");
	if (PQresultStatus(r) != PGRES_COMMAND_OK || PQsetnonblocking(l->fresh, 1) != 0) {
		snprintf(l->err, sizeof l->err, "LISTEN: %s", PQerrorMessage(l->fresh));
		PQfinish(l->fresh);
		l->fresh = NULL;
	}
	PQclear(r);
}

static void on_timer(uv_timer_t *t)
{
	struct listener *l = t->data;
	if (!l->conn && !l->connecting)
		listen_connect(l);
}

static void retry_later(struct listener *l)
{
	l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : RECONNECT_MIN_MS;
	if (l->backoff_ms > RECONNECT_MAX_MS)
		l->backoff_ms = RECONNECT_MAX_MS;
	uv_timer_start(&l->timer, on_timer, l->backoff_ms, 0);
}

static void pump(struct listener *l);

struct msg_read {
	struct listener *l;
	struct inbox *m;
	char id[24];
};

static int msg_read_work(void *arg, struct store_txn *tx)
{
	struct msg_read *q = arg;
	TX;
	PGresult *r;
	int rc = get_row(t, P_MSG_GET, (const char *[]){q->id}, &r);
	if (rc == 0)
		q->m->text = xstrdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

static void msg_read_done(void *arg, int rc)
{
	struct msg_read *q = arg;
	struct listener *l = q->l;
	l->reading = false;
	if (rc != 0) {
		log_at(LOG_WARN, "store: message %s from another node cannot be read (%s); dropped",
		       q->id, fh_strerror(rc));
		q->m->text = xstrdup("");
	}
	free(q);
	pump(l);
}

/* Hands on the messages at the head of the inbox whose text is there. */
static void pump(struct listener *l)
{
	while (l->head && !l->closing) {
		struct inbox *m = l->head;
		if (!m->text) {
			if (!l->reading) {
				struct msg_read *q = xcalloc(1, sizeof *q);
				q->l = l;
				q->m = m;
				i64(q->id, m->id);
				l->reading = true;
				store_read(&l->s->base, msg_read_work, msg_read_done, q);
			}
			return;
		}
		l->head = m->next;
		if (!l->head)
			l->tail = NULL;
		if (m->text[0])
			l->fn(l->arg, m->text);
		free(m->text);
		free(m);
	}
}

static void on_poll_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	free(h);
	store__handle_closed(&l->s->base);
}

static void listen_close_conn(struct listener *l)
{
	if (l->poll) {
		uv_close((uv_handle_t *)l->poll, on_poll_closed);
		l->poll = NULL;
	}
	PQfinish(l->conn);
	l->conn = NULL;
}

static void listen_lost(struct listener *l, const char *why)
{
	log_at(LOG_WARN, "store: the connection for messages from other nodes was lost (%s); "
	       "reconnecting", why);
	listen_close_conn(l);
	retry_later(l);
}

static void on_readable(uv_poll_t *p, int status, int events)
{
	struct listener *l = p->data;
	if (!l->conn)
		return;
	if (status < 0 || !PQconsumeInput(l->conn)) {
		char why[200];
		snprintf(why, sizeof why, "%s", PQerrorMessage(l->conn));
		why[strcspn(why, "\n")] = '\0';
		listen_lost(l, why);
		return;
	}
	PGnotify *n;
	while ((n = PQnotifies(l->conn))) {
		struct inbox *m = xcalloc(1, sizeof *m);
		if (n->extra[0] == '@')
			m->id = strtoll(n->extra + 1, NULL, 10);
		else
			m->text = xstrdup(n->extra);
		if (l->tail)
			l->tail->next = m;
		else
			l->head = m;
		l->tail = m;
		PQfreemem(n);
	}
	pump(l);
}

static void connect_after(uv_work_t *w, int status)
{
	struct listener *l = w->data;
	l->connecting = false;
	store__handle_closed(&l->s->base); /* the work counted as a handle */
	if (l->closing) {
		PQfinish(l->fresh);
		l->fresh = NULL;
		return;
	}
	if (!l->fresh) {
		if (!l->backoff_ms)
			log_at(LOG_WARN, "store: cannot listen for messages from other nodes: %s; "
			       "retrying", l->err);
		retry_later(l);
		return;
	}
	if (l->backoff_ms)
		log_at(LOG_INFO, "store: listening for messages from other nodes again");
	l->backoff_ms = 0;
	l->conn = l->fresh;
	l->fresh = NULL;
	l->poll = xcalloc(1, sizeof *l->poll);
	uv_poll_init(l->s->base.loop, l->poll, PQsocket(l->conn));
	l->poll->data = l;
	l->s->base.open_handles++;
	uv_poll_start(l->poll, UV_READABLE, on_readable);
	on_readable(l->poll, 0, UV_READABLE); /* anything that came with LISTEN */
}

static void listen_connect(struct listener *l)
{
	l->connecting = true;
	l->work.data = l;
	l->s->base.open_handles++;
	if (uv_queue_work(l->s->base.loop, &l->work, connect_work, connect_after) != 0) {
		l->connecting = false;
		l->s->base.open_handles--;
		retry_later(l);
	}
}

/* The messages table keeps what was sent by id for a while: swept (a
 * job) every minute by each node's listener. */
static int sweep_work(void *arg, struct store_txn *tx)
{
	TX;
	return run_write(t, P_MSG_SWEEP, NULL, NULL);
}

static void on_sweep(uv_timer_t *t)
{
	struct listener *l = t->data;
	store_submit(&l->s->base, sweep_work, NULL, NULL);
}

static void pg_listen(struct store *base, void (*fn)(void *arg, const char *text), void *arg)
{
	struct pg_store *s = (struct pg_store *)base;
	struct listener *l = xcalloc(1, sizeof *l);
	l->s = s;
	l->fn = fn;
	l->arg = arg;
	s->listener = l;
	uv_timer_init(base->loop, &l->timer);
	l->timer.data = l;
	uv_timer_init(base->loop, &l->sweep);
	l->sweep.data = l;
	uv_timer_start(&l->sweep, on_sweep, 60000, 60000);
	uv_unref((uv_handle_t *)&l->sweep);
	base->open_handles += 2;
	listen_connect(l);
}

static void on_listener_handle_closed(uv_handle_t *h)
{
	struct listener *l = h->data;
	struct store *base = &l->s->base;
	store__handle_closed(base);
}

static void listen_stop(struct pg_store *s)
{
	struct listener *l = s->listener;
	if (!l)
		return;
	l->closing = true;
	listen_close_conn(l);
	uv_close((uv_handle_t *)&l->timer, on_listener_handle_closed);
	uv_close((uv_handle_t *)&l->sweep, on_listener_handle_closed);
}

/* ---- lifecycle ---- */

static void listen_stop(struct pg_store *s);

static void pg_close(struct store *base)
{
	struct pg_store *s = (struct pg_store *)base;
	listen_stop(s);
	for (int i = 0; i < WRITERS; i++)
		txn_close(&s->writers[i].t);
	txn_close(&s->reader);
}

static void pg_free(struct store *base)
{
	struct pg_store *s = (struct pg_store *)base;
	for (unsigned i = 0; i < s->npool; i++) {
		txn_close(s->pool[i]);
		free(s->pool[i]);
	}
	uv_mutex_destroy(&s->pool_mu);
	if (s->listener) {
		for (struct inbox *m = s->listener->head, *next; m; m = next) {
			next = m->next;
			free(m->text);
			free(m);
		}
		free(s->listener);
	}
	free(s->conninfo);
	free(s);
}

static const struct store_backend pg_backend = {
	.name = "postgresql",
	.run_batch = run_batch,
	.read = pg_read,
	.slow_begin = slow_begin,
	.slow_end = slow_end,
	.reader = pg_reader,
	.close = pg_close,
	.free = pg_free,
	.listen = pg_listen,
};

/* Applies the migrations not applied yet, in one transaction that holds
 * the advisory lock (other nodes wait for it, then find nothing to do). */
static int migrate(PGconn *c, char *err, size_t errlen)
{
	struct buf sql = BUF_INIT;
	buf_printf(&sql,
		   "BEGIN; SELECT pg_advisory_xact_lock(%d);"
		   " CREATE TABLE IF NOT EXISTS fleethub_schema (version int NOT NULL);"
		   " INSERT INTO fleethub_schema SELECT 0 WHERE NOT EXISTS"
		   " (SELECT 1 FROM fleethub_schema)",
		   MIGRATION_LOCK);
	PGresult *r = PQexec(c, sql.data);
	buf_free(&sql);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	r = ok ? PQexec(c, "SELECT version FROM fleethub_schema") : NULL;
	int version = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
			      ? atoi(PQgetvalue(r, 0, 0))
			      : -1;
	PQclear(r);
	if (version < 0) {
		snprintf(err, errlen, "cannot read the schema version: %s", PQerrorMessage(c));
		PQclear(PQexec(c, "ROLLBACK"));
		return FH_EIO;
	}
	if (version > MIGRATION_COUNT) {
		snprintf(err, errlen, "database schema %d is newer than this fleethub (%d)",
			 version, MIGRATION_COUNT);
		PQclear(PQexec(c, "ROLLBACK"));
		return FH_EINVAL;
	}
	for (int i = version; i < MIGRATION_COUNT; i++) {
		r = PQexec(c, migrations[i]);
		ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		if (!ok)
			snprintf(err, errlen, "schema migration %d failed: %s", i + 1,
				 PQresultErrorMessage(r));
		PQclear(r);
		if (!ok) {
			PQclear(PQexec(c, "ROLLBACK"));
			return FH_EIO;
		}
		log_at(LOG_INFO, "store: applied PostgreSQL schema migration %d", i + 1);
	}
	char set[96];
	snprintf(set, sizeof set, "UPDATE fleethub_schema SET version = %d; COMMIT",
		 MIGRATION_COUNT);
	r = PQexec(c, set);
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		snprintf(err, errlen, "cannot commit the schema: %s", PQresultErrorMessage(r));
	PQclear(r);
	return ok ? 0 : FH_EIO;
}

int store_pg_open(struct store **out, uv_loop_t *loop, const char *conninfo, char *err,
		  size_t errlen)
{
	*out = NULL;
	PGconn *c = connect_db(conninfo, err, errlen);
	if (!c)
		return FH_EUNAVAIL;
	int rc = migrate(c, err, errlen);
	if (rc != 0) {
		PQfinish(c);
		return rc;
	}
	struct pg_store *s = xcalloc(1, sizeof *s);
	s->conninfo = xstrdup(conninfo);
	txn_init(&s->writers[0].t, c, s->base.node); /* the others connect at their first batch */
	s->writers[0].t.writer = true;
	if (uv_mutex_init(&s->pool_mu) != 0) {
		snprintf(err, errlen, "cannot create locks");
		PQfinish(c);
		free(s->conninfo);
		free(s);
		return FH_EIO;
	}
	if (store__start(&s->base, &pg_backend, loop, BATCH_MAX, WRITERS, err, errlen) != 0) {
		store_close(&s->base);
		return FH_EIO;
	}
	*out = &s->base;
	return 0;
}
