/* What store_pg.c shares with the files that hold more of the PostgreSQL
 * backend's operations (pg_messages.c). Internal to store/. */
#ifndef FH_STORE_PG_INTERNAL_H
#define FH_STORE_PG_INTERNAL_H

#include <libpq-fe.h>

#include "store/backend.h"

/* Statements of pg_messages.c: slots of a connection's prepared ones. */
#define PG_MSG_SLOTS 32

/* Runs sql (nparams text parameters vals, NULL for SQL NULL) as the
 * prepared statement of slot on tx's connection (prepared on first use;
 * the same slot always with the same sql). Returns the result (PQclear
 * it), or NULL with *rc set to the store error (noted, as for every
 * operation: a broken connection is FH_EUNAVAIL). */
PGresult *pg__run(struct store_txn *tx, unsigned slot, const char *sql, int nparams,
		  const char *const *vals, int *rc);

/* pg_messages.c: the operations on the event log, C2D queues and feedback
 * (store.h). */
int pg_events_append(struct store_txn *t, const char *hub, unsigned part, struct store_event *ev,
		     size_t n);
int pg_event_read(struct store_txn *t, const char *hub, unsigned part, int64_t from,
		  unsigned limit, int (*each)(void *arg, const struct store_event *e), void *arg);
int pg_event_partition(struct store_txn *t, const char *hub, unsigned part,
		       struct store_partition *out);
int pg_event_seek_time(struct store_txn *t, const char *hub, unsigned part, int64_t at_ms,
		       int64_t *seq);
int pg_event_trim(struct store_txn *t, const char *hub, unsigned part, int64_t before_ms,
		  int64_t max_bytes, unsigned limit, unsigned *deleted);
int pg_c2d_add(struct store_txn *t, const char *hub, const char *id, const char *json,
	       const uint8_t *body, size_t body_len, int64_t expiry_ms, unsigned max,
	       int64_t *seq);
int pg_c2d_list(struct store_txn *t, const char *hub, const char *id, int64_t after,
		unsigned limit, int (*each)(void *arg, const struct store_c2d *m), void *arg);
int pg_c2d_update(struct store_txn *t, const char *hub, const char *id, int64_t seq,
		  const char *json);
int pg_c2d_delete(struct store_txn *t, const char *hub, const char *id, int64_t seq);
int pg_c2d_count(struct store_txn *t, const char *hub, const char *id, int64_t *n);
int pg_c2d_expired(struct store_txn *t, int64_t now_ms, unsigned limit,
		   int (*each)(void *arg, const char *hub, const char *id,
			       const struct store_c2d *m),
		   void *arg);
int pg_feedback_add(struct store_txn *t, const char *hub, int64_t now_ms, const char *json);
int pg_feedback_list(struct store_txn *t, const char *hub, int64_t after, unsigned limit,
		     int (*each)(void *arg, int64_t seq, const char *json), void *arg);
int pg_feedback_delete(struct store_txn *t, const char *hub, int64_t first, int64_t last);
int pg_feedback_trim(struct store_txn *t, const char *hub, int64_t before_ms, int64_t max_rows,
		     unsigned limit);
/* The device's queued messages go with it (store_device_delete). */
int pg_c2d_delete_device(struct store_txn *t, const char *hub, const char *id);

#endif
