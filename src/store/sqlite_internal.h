/* What store_sqlite.c shares with the files that hold more of the SQLite
 * backend's operations (sqlite_messages.c). Internal to store/. */
#ifndef FH_STORE_SQLITE_INTERNAL_H
#define FH_STORE_SQLITE_INTERNAL_H

#include <sqlite3.h>

#include "store/backend.h"

/* Statements of sqlite_messages.c: slots of a txn's cache. */
#define SQ_MSG_SLOTS 32

/* The statement of slot on tx's connection, prepared from sql on first
 * use (the same slot always with the same sql), with the reader's shared
 * transaction begun; NULL after an error (noted). Reset it with
 * sq__stmt_end after use. */
sqlite3_stmt *sq__stmt(struct store_txn *tx, unsigned slot, const char *sql);
void sq__stmt_end(sqlite3_stmt *st);
/* Notes the failed statement of tx (as every operation does) and returns
 * the store error for it. */
int sq__error(struct store_txn *tx, const char *what);
sqlite3 *sq__db(struct store_txn *tx);

/* sqlite_messages.c: the operations on the event log, C2D queues and
 * feedback (store.h). */
int sq_events_append(struct store_txn *t, const char *hub, unsigned part, struct store_event *ev,
		     size_t n);
int sq_event_read(struct store_txn *t, const char *hub, unsigned part, int64_t from,
		  unsigned limit, int (*each)(void *arg, const struct store_event *e), void *arg);
int sq_event_partition(struct store_txn *t, const char *hub, unsigned part,
		       struct store_partition *out);
int sq_event_seek_time(struct store_txn *t, const char *hub, unsigned part, int64_t at_ms,
		       int64_t *seq);
int sq_event_trim(struct store_txn *t, const char *hub, unsigned part, int64_t before_ms,
		  int64_t max_bytes, unsigned limit, unsigned *deleted);
int sq_c2d_add(struct store_txn *t, const char *hub, const char *id, const char *json,
	       const uint8_t *body, size_t body_len, int64_t expiry_ms, unsigned max,
	       int64_t *seq);
int sq_c2d_list(struct store_txn *t, const char *hub, const char *id, int64_t after,
		unsigned limit, int (*each)(void *arg, const struct store_c2d *m), void *arg);
int sq_c2d_update(struct store_txn *t, const char *hub, const char *id, int64_t seq,
		  const char *json);
int sq_c2d_delete(struct store_txn *t, const char *hub, const char *id, int64_t seq);
int sq_c2d_count(struct store_txn *t, const char *hub, const char *id, int64_t *n);
int sq_c2d_expired(struct store_txn *t, int64_t now_ms, unsigned limit,
		   int (*each)(void *arg, const char *hub, const char *id,
			       const struct store_c2d *m),
		   void *arg);
int sq_feedback_add(struct store_txn *t, const char *hub, int64_t now_ms, const char *json);
int sq_feedback_list(struct store_txn *t, const char *hub, int64_t after, unsigned limit,
		     int (*each)(void *arg, int64_t seq, const char *json), void *arg);
int sq_feedback_delete(struct store_txn *t, const char *hub, int64_t first, int64_t last);
int sq_feedback_trim(struct store_txn *t, const char *hub, int64_t before_ms, int64_t max_rows,
		     unsigned limit);
/* The device's queued messages go with it (store_device_delete). */
int sq_c2d_delete_device(struct store_txn *t, const char *hub, const char *id);

#endif
