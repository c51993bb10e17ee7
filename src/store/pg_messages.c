/* The PostgreSQL backend's operations on messages (store.h): each hub's
 * event log, the devices' cloud-to-device queues and the feedback records.
 * The schema is store_pg.c's migration 3; it has the tables of SQLite's
 * (sqlite_messages.c), and bodies in bytea, passed as hex text.
 *
 * Several writers and nodes:
 * - an append updates its partition's row (INSERT .. ON CONFLICT DO
 *   UPDATE) and inserts the event in one statement; the row stays locked
 *   until the commit, so the appends of one partition commit in sequence
 *   order and a reader never sees a later number before an earlier one.
 *   Jobs that append give their partition as their lock order
 *   (store_submit_ordered), so no two batches wait on each other's
 *   partitions in opposite orders;
 * - a trim locks the partition's row first (FOR UPDATE), so two nodes'
 *   trims of one partition take turns;
 * - a C2D enqueue locks the device's row first (FOR UPDATE): the count it
 *   checks against the limit holds until it commits;
 * - the expiry sweep skips rows another node's sweep holds (SKIP LOCKED).
 * Feedback records are numbered by a sequence shared by all hubs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/enc.h"
#include "base/err.h"
#include "base/mem.h"
#include "store/pg_internal.h"

enum msg_stmt {
	M_APPEND,
	M_READ,
	M_PART_GET,
	M_PART_LOCK,
	M_EVENT_AT,
	M_OLDEST,
	M_CUT,
	M_SHRINK,
	M_DEV_LOCK,
	M_C2D_ADD,
	M_C2D_LIST,
	M_C2D_UPDATE,
	M_C2D_DELETE,
	M_C2D_COUNT,
	M_C2D_COUNT_HUB,
	M_C2D_EXPIRED,
	M_C2D_DELETE_DEVICE,
	M_FB_ADD,
	M_FB_DELETE,
	M_FB_LIST,
	M_FB_TRIM_AGE,
	M_FB_TRIM_COUNT,
	M_COUNT
};
_Static_assert(M_COUNT <= PG_MSG_SLOTS, "slots");

static const struct {
	const char *sql;
	int nparams;
} msg_sql[M_COUNT] = {
	[M_APPEND] = {"WITH p AS (INSERT INTO event_partitions AS ep (hub, part, next_seq,"
		      " next_offset, bytes, count, last_enqueued)"
		      " VALUES ($1, $2::int, 1, $3::bigint, $3::bigint, 1, $4::bigint)"
		      " ON CONFLICT (hub, part) DO UPDATE SET next_seq = ep.next_seq + 1,"
		      " next_offset = ep.next_offset + $3::bigint, bytes = ep.bytes + $3::bigint,"
		      " count = ep.count + 1, last_enqueued = greatest(ep.last_enqueued, $4::bigint)"
		      " RETURNING ep.next_seq - 1 AS seq, ep.next_offset - $3::bigint AS off,"
		      " ep.last_enqueued AS enq)"
		      " INSERT INTO events (hub, part, seq, off, enqueued, size, device, props, body)"
		      " SELECT $1, $2::int, seq, off, enq, $3::bigint, $5, $6, decode($7, 'hex')"
		      " FROM p RETURNING seq, off, enqueued", 7},
	[M_READ] = {"SELECT seq, off, enqueued, device, props, encode(body, 'hex') FROM events"
		    " WHERE hub = $1 AND part = $2::int AND seq >= $3::bigint"
		    " ORDER BY seq LIMIT $4::bigint", 4},
	[M_PART_GET] = {"SELECT next_seq - count, next_seq, next_offset, last_enqueued, bytes"
			" FROM event_partitions WHERE hub = $1 AND part = $2::int", 2},
	[M_PART_LOCK] = {"SELECT next_seq - count, next_seq, next_offset, last_enqueued, bytes"
			 " FROM event_partitions WHERE hub = $1 AND part = $2::int FOR UPDATE", 2},
	[M_EVENT_AT] = {"SELECT enqueued FROM events WHERE hub = $1 AND part = $2::int"
			" AND seq = $3::bigint", 3},
	[M_OLDEST] = {"SELECT seq, enqueued, size FROM events WHERE hub = $1 AND part = $2::int"
		      " ORDER BY seq LIMIT $3::bigint", 3},
	[M_CUT] = {"DELETE FROM events WHERE hub = $1 AND part = $2::int AND seq <= $3::bigint",
		   3},
	[M_SHRINK] = {"UPDATE event_partitions SET bytes = bytes - $3::bigint,"
		      " count = count - $4::bigint WHERE hub = $1 AND part = $2::int", 4},
	[M_DEV_LOCK] = {"SELECT 1 FROM devices WHERE hub = $1 AND id = $2 FOR UPDATE", 2},
	/* Numbers come from a counter per device: they only grow, also once
	 * the queue was empty (a delivery cursor is a number). */
	[M_C2D_ADD] = {"WITH n AS (INSERT INTO c2d_counters AS k (hub, device, next_seq)"
		       " SELECT $1, $2, 1 WHERE (SELECT count(*) FROM c2d WHERE hub = $1"
		       " AND device = $2) < $6::bigint"
		       " ON CONFLICT (hub, device) DO UPDATE SET next_seq = k.next_seq + 1"
		       " RETURNING next_seq)"
		       " INSERT INTO c2d (hub, device, seq, expiry, json, body)"
		       " SELECT $1, $2, next_seq, $3::bigint, $4, decode($5, 'hex') FROM n"
		       " RETURNING seq", 6},
	[M_C2D_LIST] = {"SELECT seq, expiry, json, encode(body, 'hex') FROM c2d"
			" WHERE hub = $1 AND device = $2 AND seq > $3::bigint"
			" ORDER BY seq LIMIT $4::bigint", 4},
	[M_C2D_UPDATE] = {"UPDATE c2d SET json = $4 WHERE hub = $1 AND device = $2"
			  " AND seq = $3::bigint", 4},
	[M_C2D_DELETE] = {"DELETE FROM c2d WHERE hub = $1 AND device = $2 AND seq = $3::bigint",
			  3},
	[M_C2D_COUNT] = {"SELECT count(*) FROM c2d WHERE hub = $1 AND device = $2", 2},
	[M_C2D_COUNT_HUB] = {"SELECT count(*) FROM c2d WHERE hub = $1", 1},
	[M_C2D_EXPIRED] = {"SELECT hub, device, seq, expiry, json FROM c2d"
			   " WHERE expiry < $1::bigint ORDER BY expiry LIMIT $2::bigint"
			   " FOR UPDATE SKIP LOCKED", 2},
	[M_C2D_DELETE_DEVICE] = {"WITH k AS (DELETE FROM c2d_counters WHERE hub = $1"
				 " AND device = $2) DELETE FROM c2d WHERE hub = $1 AND device = $2", 2},
	[M_FB_ADD] = {"INSERT INTO feedback (hub, added, json) VALUES ($1, $2::bigint, $3)", 3},
	[M_FB_DELETE] = {"DELETE FROM feedback WHERE hub = $1 AND id >= $2::bigint"
			 " AND id <= $3::bigint", 3},
	[M_FB_LIST] = {"SELECT id, json FROM feedback WHERE hub = $1 AND id > $2::bigint"
		       " ORDER BY id LIMIT $3::bigint", 3},
	[M_FB_TRIM_AGE] = {"DELETE FROM feedback WHERE id IN (SELECT id FROM feedback"
			   " WHERE hub = $1 AND added < $2::bigint ORDER BY id LIMIT $3::bigint)",
			   3},
	[M_FB_TRIM_COUNT] = {"DELETE FROM feedback WHERE id IN (SELECT id FROM feedback"
			     " WHERE hub = $1 ORDER BY id LIMIT greatest(0, least($3::bigint,"
			     " (SELECT count(*) FROM feedback WHERE hub = $1) - $2::bigint)))", 3},
};

static PGresult *run(struct store_txn *t, enum msg_stmt id, const char *const *vals, int *rc)
{
	return pg__run(t, (unsigned)id, msg_sql[id].sql, msg_sql[id].nparams, vals, rc);
}

/* A statement run for its effect: 0 (*changed: rows it changed) or the
 * error. */
static int run_write(struct store_txn *t, enum msg_stmt id, const char *const *vals,
		     int64_t *changed)
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

static int64_t col_i64(PGresult *r, int row, int c)
{
	return strtoll(PQgetvalue(r, row, c), NULL, 10);
}

static void i64(char buf[24], int64_t v)
{
	snprintf(buf, 24, "%lld", (long long)v);
}

static char *hex_of(const uint8_t *p, size_t n)
{
	char *h = xmalloc(2 * n + 1);
	hex_encode(p, n, h);
	return h;
}

/* Decodes the hex text of column c of row into a new buffer. */
static uint8_t *bytes_of(PGresult *r, int row, int c, size_t *n)
{
	const char *h = PQgetvalue(r, row, c);
	size_t len = strlen(h) / 2;
	uint8_t *b = xmalloc(len + 1);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(hex_value(h[2 * i]) << 4 | hex_value(h[2 * i + 1]));
	*n = len;
	return b;
}

/* ---- the event log ---- */

static int event_append(struct store_txn *t, const char *hub, unsigned part, struct store_event *e)
{
	char p[24], size[24], enq[24];
	i64(p, part);
	i64(size, (int64_t)(e->body_len + strlen(e->props)));
	i64(enq, e->enqueued_ms);
	char *hex = hex_of(e->body, e->body_len);
	int rc;
	PGresult *r = run(t, M_APPEND, (const char *[]){hub, p, size, enq, e->device, e->props, hex},
			  &rc);
	free(hex);
	if (!r)
		return rc;
	if (PQntuples(r) == 1) {
		e->seq = col_i64(r, 0, 0);
		e->offset = col_i64(r, 0, 1);
		e->enqueued_ms = col_i64(r, 0, 2);
	} else {
		rc = FH_EIO;
	}
	PQclear(r);
	return rc;
}

/* One statement an event (each locks and bumps the partition's row, which
 * its transaction holds from the first). */
int pg_events_append(struct store_txn *t, const char *hub, unsigned part, struct store_event *ev,
		     size_t n)
{
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = event_append(t, hub, part, &ev[i]);
	return rc;
}

int pg_event_read(struct store_txn *t, const char *hub, unsigned part, int64_t from,
		  unsigned limit, int (*each)(void *arg, const struct store_event *e), void *arg)
{
	char p[24], f[24], l[24];
	i64(p, part);
	i64(f, from);
	i64(l, limit);
	int rc;
	PGresult *r = run(t, M_READ, (const char *[]){hub, p, f, l}, &rc);
	if (!r)
		return rc;
	for (int i = 0, n = PQntuples(r); i < n && rc == 0; i++) {
		size_t bl;
		uint8_t *body = bytes_of(r, i, 5, &bl);
		struct store_event e = {
		    .seq = col_i64(r, i, 0),
		    .offset = col_i64(r, i, 1),
		    .enqueued_ms = col_i64(r, i, 2),
		    .device = PQgetvalue(r, i, 3),
		    .props = PQgetvalue(r, i, 4),
		    .body = body,
		    .body_len = bl,
		};
		rc = each(arg, &e);
		free(body);
	}
	PQclear(r);
	return rc;
}

static int partition(struct store_txn *t, enum msg_stmt id, const char *hub, unsigned part,
		     struct store_partition *out)
{
	memset(out, 0, sizeof *out);
	char p[24];
	i64(p, part);
	int rc;
	PGresult *r = run(t, id, (const char *[]){hub, p}, &rc);
	if (!r)
		return rc;
	if (PQntuples(r) == 1) {
		out->begin_seq = col_i64(r, 0, 0);
		out->next_seq = col_i64(r, 0, 1);
		out->next_offset = col_i64(r, 0, 2);
		out->last_enqueued_ms = col_i64(r, 0, 3);
		out->bytes = col_i64(r, 0, 4);
	}
	PQclear(r);
	return 0;
}

int pg_event_partition(struct store_txn *t, const char *hub, unsigned part,
		       struct store_partition *out)
{
	return partition(t, M_PART_GET, hub, part, out);
}

int pg_event_seek_time(struct store_txn *t, const char *hub, unsigned part, int64_t at_ms,
		       int64_t *seq)
{
	struct store_partition p;
	int rc = partition(t, M_PART_GET, hub, part, &p);
	if (rc != 0)
		return rc;
	/* Enqueued times do not decrease with seq: bisect [lo, hi). */
	int64_t lo = p.begin_seq, hi = p.next_seq;
	char ps[24];
	i64(ps, part);
	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2, ms = -1;
		char m[24];
		i64(m, mid);
		PGresult *r = run(t, M_EVENT_AT, (const char *[]){hub, ps, m}, &rc);
		if (!r)
			return rc;
		if (PQntuples(r) == 1)
			ms = col_i64(r, 0, 0);
		PQclear(r);
		if (ms < at_ms) /* also when trimmed meanwhile: the kept ones start later */
			lo = mid + 1;
		else
			hi = mid;
	}
	*seq = lo;
	return 0;
}

int pg_event_trim(struct store_txn *t, const char *hub, unsigned part, int64_t before_ms,
		  int64_t max_bytes, unsigned limit, unsigned *deleted)
{
	*deleted = 0;
	struct store_partition p;
	int rc = partition(t, M_PART_LOCK, hub, part, &p);
	if (rc != 0 || p.next_seq == p.begin_seq)
		return rc;
	char ps[24], l[24];
	i64(ps, part);
	i64(l, limit);
	PGresult *r = run(t, M_OLDEST, (const char *[]){hub, ps, l}, &rc);
	if (!r)
		return rc;
	int64_t cut = -1, freed = 0, bytes = p.bytes;
	unsigned n = 0;
	for (int i = 0, rows = PQntuples(r); i < rows; i++) {
		int64_t enq = col_i64(r, i, 1), size = col_i64(r, i, 2);
		if (enq >= before_ms && (max_bytes <= 0 || bytes <= max_bytes))
			break;
		cut = col_i64(r, i, 0);
		bytes -= size;
		freed += size;
		n++;
	}
	PQclear(r);
	if (n == 0)
		return 0;
	char c[24], f[24], k[24];
	i64(c, cut);
	i64(f, freed);
	i64(k, n);
	rc = run_write(t, M_CUT, (const char *[]){hub, ps, c}, NULL);
	if (rc == 0)
		rc = run_write(t, M_SHRINK, (const char *[]){hub, ps, f, k}, NULL);
	if (rc == 0)
		*deleted = n;
	return rc;
}

/* ---- cloud-to-device queues ---- */

int pg_c2d_add(struct store_txn *t, const char *hub, const char *id, const char *json,
	       const uint8_t *body, size_t body_len, int64_t expiry_ms, unsigned max,
	       int64_t *seq)
{
	int rc;
	PGresult *r = run(t, M_DEV_LOCK, (const char *[]){hub, id}, &rc);
	if (!r)
		return rc;
	int found = PQntuples(r);
	PQclear(r);
	if (!found)
		return FH_ENOTFOUND;
	char exp[24], m[24];
	i64(exp, expiry_ms);
	i64(m, max);
	char *hex = hex_of(body, body_len);
	r = run(t, M_C2D_ADD, (const char *[]){hub, id, exp, json, hex, m}, &rc);
	free(hex);
	if (!r)
		return rc;
	if (PQntuples(r) == 1)
		*seq = col_i64(r, 0, 0);
	else
		rc = FH_ETOOBIG;
	PQclear(r);
	return rc;
}

int pg_c2d_list(struct store_txn *t, const char *hub, const char *id, int64_t after,
		unsigned limit, int (*each)(void *arg, const struct store_c2d *m), void *arg)
{
	char a[24], l[24];
	i64(a, after);
	i64(l, limit);
	int rc;
	PGresult *r = run(t, M_C2D_LIST, (const char *[]){hub, id, a, l}, &rc);
	if (!r)
		return rc;
	/* The rows are copied out of the result, so each may use the txn. */
	for (int i = 0, n = PQntuples(r); i < n && rc == 0; i++) {
		size_t bl;
		uint8_t *body = bytes_of(r, i, 3, &bl);
		char *js = xstrdup(PQgetvalue(r, i, 2));
		struct store_c2d m = {.seq = col_i64(r, i, 0),
				      .expiry_ms = col_i64(r, i, 1),
				      .json = js,
				      .body = body,
				      .body_len = bl};
		rc = each(arg, &m);
		free(js);
		free(body);
	}
	PQclear(r);
	return rc;
}

static int write_one(struct store_txn *t, enum msg_stmt id, const char *const *vals)
{
	int64_t n = 0;
	int rc = run_write(t, id, vals, &n);
	return rc == 0 && n == 0 ? FH_ENOTFOUND : rc;
}

int pg_c2d_update(struct store_txn *t, const char *hub, const char *id, int64_t seq,
		  const char *json)
{
	char s[24];
	i64(s, seq);
	return write_one(t, M_C2D_UPDATE, (const char *[]){hub, id, s, json});
}

int pg_c2d_delete(struct store_txn *t, const char *hub, const char *id, int64_t seq)
{
	char s[24];
	i64(s, seq);
	return write_one(t, M_C2D_DELETE, (const char *[]){hub, id, s});
}

int pg_c2d_delete_device(struct store_txn *t, const char *hub, const char *id)
{
	return run_write(t, M_C2D_DELETE_DEVICE, (const char *[]){hub, id}, NULL);
}

int pg_c2d_count(struct store_txn *t, const char *hub, const char *id, int64_t *n)
{
	int rc;
	PGresult *r = id ? run(t, M_C2D_COUNT, (const char *[]){hub, id}, &rc)
		     : run(t, M_C2D_COUNT_HUB, (const char *[]){hub}, &rc);
	if (!r)
		return rc;
	*n = col_i64(r, 0, 0);
	PQclear(r);
	return 0;
}

int pg_c2d_expired(struct store_txn *t, int64_t now_ms, unsigned limit,
		   int (*each)(void *arg, const char *hub, const char *id,
			       const struct store_c2d *m),
		   void *arg)
{
	char now[24], l[24];
	i64(now, now_ms);
	i64(l, limit);
	int rc;
	PGresult *r = run(t, M_C2D_EXPIRED, (const char *[]){now, l}, &rc);
	if (!r)
		return rc;
	for (int i = 0, n = PQntuples(r); i < n && rc == 0; i++) {
		char *hub = xstrdup(PQgetvalue(r, i, 0)), *id = xstrdup(PQgetvalue(r, i, 1));
		char *js = xstrdup(PQgetvalue(r, i, 4));
		struct store_c2d m = {
		    .seq = col_i64(r, i, 2), .expiry_ms = col_i64(r, i, 3), .json = js};
		rc = each(arg, hub, id, &m);
		free(hub);
		free(id);
		free(js);
	}
	PQclear(r);
	return rc;
}

/* ---- feedback ---- */

int pg_feedback_add(struct store_txn *t, const char *hub, int64_t now_ms, const char *json)
{
	char now[24];
	i64(now, now_ms);
	return run_write(t, M_FB_ADD, (const char *[]){hub, now, json}, NULL);
}

int pg_feedback_list(struct store_txn *t, const char *hub, int64_t after, unsigned limit,
		     int (*each)(void *arg, int64_t seq, const char *json), void *arg)
{
	char a[24], l[24];
	i64(a, after);
	i64(l, limit);
	int rc;
	PGresult *r = run(t, M_FB_LIST, (const char *[]){hub, a, l}, &rc);
	if (!r)
		return rc;
	for (int i = 0, n = PQntuples(r); i < n && rc == 0; i++)
		rc = each(arg, col_i64(r, i, 0), PQgetvalue(r, i, 1));
	PQclear(r);
	return rc;
}

int pg_feedback_delete(struct store_txn *t, const char *hub, int64_t first, int64_t last)
{
	char f[24], l[24];
	i64(f, first);
	i64(l, last);
	return run_write(t, M_FB_DELETE, (const char *[]){hub, f, l}, NULL);
}

int pg_feedback_trim(struct store_txn *t, const char *hub, int64_t before_ms, int64_t max_rows,
		     unsigned limit)
{
	char b[24], m[24], l[24];
	i64(b, before_ms);
	i64(m, max_rows);
	i64(l, limit);
	int rc = run_write(t, M_FB_TRIM_AGE, (const char *[]){hub, b, l}, NULL);
	if (rc == 0 && max_rows > 0)
		rc = run_write(t, M_FB_TRIM_COUNT, (const char *[]){hub, m, l}, NULL);
	return rc;
}
