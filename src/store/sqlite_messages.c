/* The SQLite backend's operations on messages (store.h): each hub's event
 * log, the devices' cloud-to-device queues and the feedback records.
 *
 * Schema (store_sqlite.c, migration 9):
 *   event_partitions (hub, part) -> next_seq, next_offset, bytes, count,
 *                                   last_enqueued
 *   events (hub, part, seq) -> off, enqueued, size, device, props, body
 *   c2d (hub, device, seq) -> expiry, json, body     (+ index on expiry)
 *   feedback (hub, seq) -> added, json
 *
 * An append updates its partition's row first and inserts the event with
 * the numbers that row gave: with one writer (this backend has one) the
 * writer's transaction orders appends; the row is also what a second
 * writer would wait on. Enqueued times are kept non-decreasing per
 * partition (an append never goes below the partition's last), so the
 * events are in enqueued order too and a time is found by bisection over
 * the sequence numbers. Trimming deletes a prefix of a partition and
 * subtracts what it deleted from the partition's row. */
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/mem.h"
#include "store/sqlite_internal.h"

enum msg_stmt {
	M_PART_STATE,
	M_PART_ADVANCE,
	M_EVENT_INSERT,
	M_EVENT_READ,
	M_PART_GET,
	M_EVENT_AT,
	M_EVENT_OLDEST,
	M_EVENT_CUT,
	M_PART_SHRINK,
	M_C2D_COUNT,
	M_C2D_COUNT_HUB,
	M_C2D_NEXT,
	M_C2D_NEXT_GET,
	M_C2D_INSERT,
	M_C2D_LIST,
	M_C2D_UPDATE,
	M_C2D_DELETE,
	M_C2D_EXPIRED,
	M_C2D_DELETE_DEVICE,
	M_C2D_DELETE_COUNTER,
	M_DEVICE_EXISTS,
	M_FB_NEXT,
	M_FB_INSERT,
	M_FB_DELETE,
	M_FB_LIST,
	M_FB_TRIM_AGE,
	M_FB_TRIM_COUNT,
	M_COUNT
};
_Static_assert(M_COUNT <= SQ_MSG_SLOTS, "slots");

static const char *const msg_sql[M_COUNT] = {
	/* A group of appends reads the partition's row once and writes it once. */
	[M_PART_STATE] = "SELECT next_seq, next_offset, last_enqueued FROM event_partitions"
			 " WHERE hub = ?1 AND part = ?2",
	[M_PART_ADVANCE] =
	    "INSERT INTO event_partitions (hub, part, next_seq, next_offset, bytes, count,"
	    " last_enqueued) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
	    " ON CONFLICT (hub, part) DO UPDATE SET next_seq = ?3, next_offset = ?4,"
	    " bytes = bytes + ?5, count = count + ?6, last_enqueued = ?7",
	[M_EVENT_INSERT] = "INSERT INTO events (hub, part, seq, off, enqueued, size, device,"
			   " props, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[M_EVENT_READ] = "SELECT seq, off, enqueued, device, props, body FROM events"
			 " WHERE hub = ?1 AND part = ?2 AND seq >= ?3 ORDER BY seq LIMIT ?4",
	[M_PART_GET] = "SELECT next_seq - count, next_seq, next_offset, last_enqueued, bytes"
		       " FROM event_partitions WHERE hub = ?1 AND part = ?2",
	[M_EVENT_AT] = "SELECT enqueued FROM events WHERE hub = ?1 AND part = ?2 AND seq = ?3",
	[M_EVENT_OLDEST] = "SELECT seq, enqueued, size FROM events WHERE hub = ?1 AND part = ?2"
			   " ORDER BY seq LIMIT ?3",
	[M_EVENT_CUT] = "DELETE FROM events WHERE hub = ?1 AND part = ?2 AND seq <= ?3",
	[M_PART_SHRINK] = "UPDATE event_partitions SET bytes = bytes - ?3, count = count - ?4"
			  " WHERE hub = ?1 AND part = ?2",
	[M_C2D_COUNT] = "SELECT count(*) FROM c2d WHERE hub = ?1 AND device = ?2",
	[M_C2D_COUNT_HUB] = "SELECT count(*) FROM c2d WHERE hub = ?1",
	/* Numbers only grow, also once the queue was empty (a delivery
	 * cursor is a number). */
	[M_C2D_NEXT] = "INSERT INTO c2d_counters (hub, device, next_seq) VALUES (?1, ?2, 1)"
		       " ON CONFLICT (hub, device) DO UPDATE SET next_seq = next_seq + 1",
	[M_C2D_NEXT_GET] = "SELECT next_seq FROM c2d_counters WHERE hub = ?1 AND device = ?2",
	[M_C2D_INSERT] = "INSERT INTO c2d (hub, device, seq, expiry, json, body)"
			 " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[M_C2D_LIST] = "SELECT seq, expiry, json, body FROM c2d WHERE hub = ?1 AND device = ?2"
		       " AND seq > ?3 ORDER BY seq LIMIT ?4",
	[M_C2D_UPDATE] = "UPDATE c2d SET json = ?4 WHERE hub = ?1 AND device = ?2 AND seq = ?3",
	[M_C2D_DELETE] = "DELETE FROM c2d WHERE hub = ?1 AND device = ?2 AND seq = ?3",
	[M_C2D_EXPIRED] = "SELECT hub, device, seq, expiry, json FROM c2d WHERE expiry < ?1"
			  " ORDER BY expiry LIMIT ?2",
	[M_C2D_DELETE_DEVICE] = "DELETE FROM c2d WHERE hub = ?1 AND device = ?2",
	[M_C2D_DELETE_COUNTER] = "DELETE FROM c2d_counters WHERE hub = ?1 AND device = ?2",
	[M_DEVICE_EXISTS] = "SELECT 1 FROM devices WHERE hub = ?1 AND id = ?2",
	/* Feedback numbers only grow too (the feedback link and GET
	 * /fleethub/feedback read after a number): the hub's counter is the
	 * c2d_counters row of device "" (no device has that id). */
	[M_FB_NEXT] = "INSERT INTO c2d_counters (hub, device, next_seq) SELECT ?1, '',"
		      " coalesce(max(seq), 0) + 1 FROM feedback WHERE hub = ?1"
		      " ON CONFLICT (hub, device) DO UPDATE SET next_seq = next_seq + 1",
	[M_FB_INSERT] = "INSERT INTO feedback (hub, seq, added, json) SELECT ?1, next_seq, ?2, ?3"
			" FROM c2d_counters WHERE hub = ?1 AND device = ''",
	[M_FB_DELETE] = "DELETE FROM feedback WHERE hub = ?1 AND seq >= ?2 AND seq <= ?3",
	[M_FB_LIST] = "SELECT seq, json FROM feedback WHERE hub = ?1 AND seq > ?2"
		      " ORDER BY seq LIMIT ?3",
	[M_FB_TRIM_AGE] = "DELETE FROM feedback WHERE hub = ?1 AND seq IN (SELECT seq FROM"
			  " feedback WHERE hub = ?1 AND added < ?2 ORDER BY seq LIMIT ?3)",
	[M_FB_TRIM_COUNT] = "DELETE FROM feedback WHERE hub = ?1 AND seq IN (SELECT seq FROM"
			    " feedback WHERE hub = ?1 ORDER BY seq LIMIT max(0, min(?3,"
			    " (SELECT count(*) FROM feedback WHERE hub = ?1) - ?2)))",
};

static sqlite3_stmt *get(struct store_txn *t, enum msg_stmt id)
{
	return sq__stmt(t, (unsigned)id, msg_sql[id]);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
	sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_STATIC);
}

static void bind_key(sqlite3_stmt *st, const char *hub, const char *id)
{
	bind_text(st, 1, hub);
	bind_text(st, 2, id);
}

static void bind_part(sqlite3_stmt *st, const char *hub, unsigned part)
{
	bind_text(st, 1, hub);
	sqlite3_bind_int64(st, 2, part);
}

/* Steps a statement that returns no rows: 0 or the error (noted). */
static int step_done(struct store_txn *t, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : sq__error(t, what);
	sq__stmt_end(st);
	return rc;
}

/* Steps a statement whose one row holds one integer (0 without a row). */
static int step_int(struct store_txn *t, sqlite3_stmt *st, const char *what, int64_t *out)
{
	int rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	int ret = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq__error(t, what);
	sq__stmt_end(st);
	return ret;
}

/* ---- the event log ---- */

int sq_events_append(struct store_txn *t, const char *hub, unsigned part, struct store_event *ev,
		     size_t n)
{
	/* The partition as it stands (none yet: sequence numbers and offsets
	 * from 0, enqueued times from the first event's). */
	sqlite3_stmt *st = get(t, M_PART_STATE);
	if (!st)
		return FH_EIO;
	bind_part(st, hub, part);
	int64_t seq = 0, off = 0, last = ev[0].enqueued_ms, bytes = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		seq = sqlite3_column_int64(st, 0);
		off = sqlite3_column_int64(st, 1);
		last = sqlite3_column_int64(st, 2);
	} else if (rc != SQLITE_DONE) {
		rc = sq__error(t, "event partition");
		sq__stmt_end(st);
		return rc;
	}
	sq__stmt_end(st);
	for (size_t i = 0; i < n; i++) {
		struct store_event *e = &ev[i];
		size_t props_len = strlen(e->props);
		int64_t size = (int64_t)(e->body_len + props_len);
		if (e->enqueued_ms < last)
			e->enqueued_ms = last;
		last = e->enqueued_ms;
		e->seq = seq++;
		e->offset = off;
		off += size;
		bytes += size;
		if (!(st = get(t, M_EVENT_INSERT)))
			return FH_EIO;
		bind_part(st, hub, part);
		sqlite3_bind_int64(st, 3, e->seq);
		sqlite3_bind_int64(st, 4, e->offset);
		sqlite3_bind_int64(st, 5, e->enqueued_ms);
		sqlite3_bind_int64(st, 6, size);
		bind_text(st, 7, e->device);
		sqlite3_bind_text(st, 8, e->props, (int)props_len, SQLITE_STATIC);
		sqlite3_bind_blob(st, 9, e->body_len ? (const void *)e->body : "", (int)e->body_len,
				  SQLITE_STATIC);
		if ((rc = step_done(t, st, "event append")) != 0)
			return rc;
	}
	if (!(st = get(t, M_PART_ADVANCE)))
		return FH_EIO;
	bind_part(st, hub, part);
	sqlite3_bind_int64(st, 3, seq);
	sqlite3_bind_int64(st, 4, off);
	sqlite3_bind_int64(st, 5, bytes);
	sqlite3_bind_int64(st, 6, (int64_t)n);
	sqlite3_bind_int64(st, 7, last);
	return step_done(t, st, "event partition");
}

int sq_event_read(struct store_txn *t, const char *hub, unsigned part, int64_t from,
		  unsigned limit, int (*each)(void *arg, const struct store_event *e), void *arg)
{
	sqlite3_stmt *st = get(t, M_EVENT_READ);
	if (!st)
		return FH_EIO;
	bind_part(st, hub, part);
	sqlite3_bind_int64(st, 3, from);
	sqlite3_bind_int64(st, 4, limit);
	int rc, stop = 0;
	while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_event e = {
		    .seq = sqlite3_column_int64(st, 0),
		    .offset = sqlite3_column_int64(st, 1),
		    .enqueued_ms = sqlite3_column_int64(st, 2),
		    .device = (const char *)sqlite3_column_text(st, 3),
		    .props = (const char *)sqlite3_column_text(st, 4),
		    .body = sqlite3_column_blob(st, 5),
		};
		e.body_len = (size_t)sqlite3_column_bytes(st, 5);
		if (!e.device || !e.props)
			continue;
		stop = each(arg, &e);
	}
	int ret = stop ? stop : rc == SQLITE_DONE ? 0 : sq__error(t, "event read");
	sq__stmt_end(st);
	return ret;
}

int sq_event_partition(struct store_txn *t, const char *hub, unsigned part,
		       struct store_partition *out)
{
	memset(out, 0, sizeof *out);
	sqlite3_stmt *st = get(t, M_PART_GET);
	if (!st)
		return FH_EIO;
	bind_part(st, hub, part);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		out->begin_seq = sqlite3_column_int64(st, 0);
		out->next_seq = sqlite3_column_int64(st, 1);
		out->next_offset = sqlite3_column_int64(st, 2);
		out->last_enqueued_ms = sqlite3_column_int64(st, 3);
		out->bytes = sqlite3_column_int64(st, 4);
	}
	int ret = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq__error(t, "event partition");
	sq__stmt_end(st);
	return ret;
}

/* The enqueued time of event seq (-1 when it is not kept). */
static int enqueued_at(struct store_txn *t, const char *hub, unsigned part, int64_t seq,
		       int64_t *ms)
{
	sqlite3_stmt *st = get(t, M_EVENT_AT);
	if (!st)
		return FH_EIO;
	bind_part(st, hub, part);
	sqlite3_bind_int64(st, 3, seq);
	int rc = sqlite3_step(st);
	*ms = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	int ret = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq__error(t, "event time");
	sq__stmt_end(st);
	return ret;
}

int sq_event_seek_time(struct store_txn *t, const char *hub, unsigned part, int64_t at_ms,
		       int64_t *seq)
{
	struct store_partition p;
	int rc = sq_event_partition(t, hub, part, &p);
	if (rc != 0)
		return rc;
	/* Enqueued times do not decrease with seq: bisect [lo, hi) for the
	 * first at or after at_ms. */
	int64_t lo = p.begin_seq, hi = p.next_seq;
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2, ms;
		if ((rc = enqueued_at(t, hub, part, mid, &ms)) != 0)
			return rc;
		if (ms >= 0 && ms < at_ms)
			lo = mid + 1;
		else if (ms < 0) /* trimmed meanwhile: the kept ones start later */
			lo = mid + 1;
		else
			hi = mid;
	}
	*seq = lo;
	return 0;
}

int sq_event_trim(struct store_txn *t, const char *hub, unsigned part, int64_t before_ms,
		  int64_t max_bytes, unsigned limit, unsigned *deleted)
{
	*deleted = 0;
	struct store_partition p;
	int rc = sq_event_partition(t, hub, part, &p);
	if (rc != 0 || p.next_seq == p.begin_seq)
		return rc;
	sqlite3_stmt *st = get(t, M_EVENT_OLDEST);
	if (!st)
		return FH_EIO;
	bind_part(st, hub, part);
	sqlite3_bind_int64(st, 3, limit);
	int64_t cut = -1, freed = 0, bytes = p.bytes;
	unsigned n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t enq = sqlite3_column_int64(st, 1), size = sqlite3_column_int64(st, 2);
		if (enq >= before_ms && (max_bytes <= 0 || bytes <= max_bytes))
			break;
		cut = sqlite3_column_int64(st, 0);
		bytes -= size;
		freed += size;
		n++;
	}
	int ret = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq__error(t, "event trim");
	sq__stmt_end(st);
	if (ret != 0 || n == 0)
		return ret;
	st = get(t, M_EVENT_CUT);
	if (!st)
		return FH_EIO;
	bind_part(st, hub, part);
	sqlite3_bind_int64(st, 3, cut);
	if ((ret = step_done(t, st, "event trim")) != 0)
		return ret;
	st = get(t, M_PART_SHRINK);
	if (!st)
		return FH_EIO;
	bind_part(st, hub, part);
	sqlite3_bind_int64(st, 3, freed);
	sqlite3_bind_int64(st, 4, n);
	if ((ret = step_done(t, st, "event trim")) == 0)
		*deleted = n;
	return ret;
}

/* ---- cloud-to-device queues ---- */

int sq_c2d_add(struct store_txn *t, const char *hub, const char *id, const char *json,
	       const uint8_t *body, size_t body_len, int64_t expiry_ms, unsigned max,
	       int64_t *seq)
{
	int64_t exists, n;
	sqlite3_stmt *st = get(t, M_DEVICE_EXISTS);
	if (!st)
		return FH_EIO;
	bind_key(st, hub, id);
	int rc = step_int(t, st, "c2d device", &exists);
	if (rc != 0)
		return rc;
	if (!exists)
		return FH_ENOTFOUND;
	if ((rc = sq_c2d_count(t, hub, id, &n)) != 0)
		return rc;
	if (n >= (int64_t)max)
		return FH_ETOOBIG;
	if (!(st = get(t, M_C2D_NEXT)))
		return FH_EIO;
	bind_key(st, hub, id);
	if ((rc = step_done(t, st, "c2d add")) != 0)
		return rc;
	if (!(st = get(t, M_C2D_NEXT_GET)))
		return FH_EIO;
	bind_key(st, hub, id);
	if ((rc = step_int(t, st, "c2d add", seq)) != 0)
		return rc;
	if (!(st = get(t, M_C2D_INSERT)))
		return FH_EIO;
	bind_key(st, hub, id);
	sqlite3_bind_int64(st, 3, *seq);
	sqlite3_bind_int64(st, 4, expiry_ms);
	bind_text(st, 5, json);
	sqlite3_bind_blob(st, 6, body_len ? (const void *)body : "", (int)body_len, SQLITE_STATIC);
	return step_done(t, st, "c2d add");
}

struct c2d_row {
	char *hub, *id;
	struct store_c2d m;
};

/* Reads every row of st (hub and id at hub_col, hub_col + 1 when >= 0;
 * seq, expiry, json, [body] from col) and then calls each on them, so
 * that each may use the txn. */
static int c2d_rows(struct store_txn *t, sqlite3_stmt *st, int hub_col, int col, bool body,
		    struct c2d_row **out, size_t *nout)
{
	struct c2d_row *rows = NULL;
	size_t n = 0, cap = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			rows = xrealloc(rows, cap * sizeof *rows);
		}
		struct c2d_row *r = &rows[n++];
		memset(r, 0, sizeof *r);
		if (hub_col >= 0) {
			r->hub = xstrdup((const char *)sqlite3_column_text(st, hub_col));
			r->id = xstrdup((const char *)sqlite3_column_text(st, hub_col + 1));
		}
		r->m.seq = sqlite3_column_int64(st, col);
		r->m.expiry_ms = sqlite3_column_int64(st, col + 1);
		const unsigned char *js = sqlite3_column_text(st, col + 2);
		r->m.json = xstrdup(js ? (const char *)js : "{}");
		if (body) {
			size_t bl = (size_t)sqlite3_column_bytes(st, col + 3);
			uint8_t *b = xmalloc(bl + 1);
			if (bl)
				memcpy(b, sqlite3_column_blob(st, col + 3), bl);
			r->m.body = b;
			r->m.body_len = bl;
		}
	}
	int ret = rc == SQLITE_DONE ? 0 : sq__error(t, "c2d list");
	sq__stmt_end(st);
	*out = rows;
	*nout = n;
	return ret;
}

static void c2d_rows_free(struct c2d_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rows[i].hub);
		free(rows[i].id);
		free((char *)rows[i].m.json);
		free((uint8_t *)rows[i].m.body);
	}
	free(rows);
}

int sq_c2d_list(struct store_txn *t, const char *hub, const char *id, int64_t after,
		unsigned limit, int (*each)(void *arg, const struct store_c2d *m), void *arg)
{
	sqlite3_stmt *st = get(t, M_C2D_LIST);
	if (!st)
		return FH_EIO;
	bind_key(st, hub, id);
	sqlite3_bind_int64(st, 3, after);
	sqlite3_bind_int64(st, 4, limit);
	struct c2d_row *rows;
	size_t n;
	int rc = c2d_rows(t, st, -1, 0, true, &rows, &n);
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = each(arg, &rows[i].m);
	c2d_rows_free(rows, n);
	return rc;
}

static int changed_one(struct store_txn *t, int rc)
{
	return rc == 0 && sqlite3_changes(sq__db(t)) == 0 ? FH_ENOTFOUND : rc;
}

int sq_c2d_update(struct store_txn *t, const char *hub, const char *id, int64_t seq,
		  const char *json)
{
	sqlite3_stmt *st = get(t, M_C2D_UPDATE);
	if (!st)
		return FH_EIO;
	bind_key(st, hub, id);
	sqlite3_bind_int64(st, 3, seq);
	bind_text(st, 4, json);
	return changed_one(t, step_done(t, st, "c2d update"));
}

int sq_c2d_delete(struct store_txn *t, const char *hub, const char *id, int64_t seq)
{
	sqlite3_stmt *st = get(t, M_C2D_DELETE);
	if (!st)
		return FH_EIO;
	bind_key(st, hub, id);
	sqlite3_bind_int64(st, 3, seq);
	return changed_one(t, step_done(t, st, "c2d delete"));
}

int sq_c2d_delete_device(struct store_txn *t, const char *hub, const char *id)
{
	int rc = 0;
	for (int k = M_C2D_DELETE_DEVICE; rc == 0 && k <= M_C2D_DELETE_COUNTER; k++) {
		sqlite3_stmt *st = get(t, (enum msg_stmt)k);
		if (!st)
			return FH_EIO;
		bind_key(st, hub, id);
		rc = step_done(t, st, "c2d delete");
	}
	return rc;
}

int sq_c2d_count(struct store_txn *t, const char *hub, const char *id, int64_t *n)
{
	sqlite3_stmt *st = get(t, id ? M_C2D_COUNT : M_C2D_COUNT_HUB);
	if (!st)
		return FH_EIO;
	bind_text(st, 1, hub);
	if (id)
		bind_text(st, 2, id);
	return step_int(t, st, "c2d count", n);
}

int sq_c2d_expired(struct store_txn *t, int64_t now_ms, unsigned limit,
		   int (*each)(void *arg, const char *hub, const char *id,
			       const struct store_c2d *m),
		   void *arg)
{
	sqlite3_stmt *st = get(t, M_C2D_EXPIRED);
	if (!st)
		return FH_EIO;
	sqlite3_bind_int64(st, 1, now_ms);
	sqlite3_bind_int64(st, 2, limit);
	struct c2d_row *rows;
	size_t n;
	int rc = c2d_rows(t, st, 0, 2, false, &rows, &n);
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = each(arg, rows[i].hub, rows[i].id, &rows[i].m);
	c2d_rows_free(rows, n);
	return rc;
}

/* ---- feedback ---- */

int sq_feedback_add(struct store_txn *t, const char *hub, int64_t now_ms, const char *json)
{
	sqlite3_stmt *st = get(t, M_FB_NEXT);
	if (!st)
		return FH_EIO;
	bind_text(st, 1, hub);
	int rc = step_done(t, st, "feedback add");
	if (rc != 0)
		return rc;
	if (!(st = get(t, M_FB_INSERT)))
		return FH_EIO;
	bind_text(st, 1, hub);
	sqlite3_bind_int64(st, 2, now_ms);
	bind_text(st, 3, json);
	return step_done(t, st, "feedback add");
}

int sq_feedback_list(struct store_txn *t, const char *hub, int64_t after, unsigned limit,
		     int (*each)(void *arg, int64_t seq, const char *json), void *arg)
{
	sqlite3_stmt *st = get(t, M_FB_LIST);
	if (!st)
		return FH_EIO;
	bind_text(st, 1, hub);
	sqlite3_bind_int64(st, 2, after);
	sqlite3_bind_int64(st, 3, limit);
	int rc, stop = 0;
	while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *js = sqlite3_column_text(st, 1);
		if (js)
			stop = each(arg, sqlite3_column_int64(st, 0), (const char *)js);
	}
	int ret = stop ? stop : rc == SQLITE_DONE ? 0 : sq__error(t, "feedback list");
	sq__stmt_end(st);
	return ret;
}

int sq_feedback_delete(struct store_txn *t, const char *hub, int64_t first, int64_t last)
{
	sqlite3_stmt *st = get(t, M_FB_DELETE);
	if (!st)
		return FH_EIO;
	bind_text(st, 1, hub);
	sqlite3_bind_int64(st, 2, first);
	sqlite3_bind_int64(st, 3, last);
	return step_done(t, st, "feedback delete");
}

int sq_feedback_trim(struct store_txn *t, const char *hub, int64_t before_ms, int64_t max_rows,
		     unsigned limit)
{
	sqlite3_stmt *st = get(t, M_FB_TRIM_AGE);
	if (!st)
		return FH_EIO;
	bind_text(st, 1, hub);
	sqlite3_bind_int64(st, 2, before_ms);
	sqlite3_bind_int64(st, 3, limit);
	int rc = step_done(t, st, "feedback trim");
	if (rc != 0 || max_rows <= 0)
		return rc;
	if (!(st = get(t, M_FB_TRIM_COUNT)))
		return FH_EIO;
	bind_text(st, 1, hub);
	sqlite3_bind_int64(st, 2, max_rows);
	sqlite3_bind_int64(st, 3, limit);
	return step_done(t, st, "feedback trim");
}
