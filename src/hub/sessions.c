/* The session table of a hub: see sessions.h for what it owns, what it
 * writes and when, and the CONNECT diagram. */
#include "sessions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "core/cluster.h"
#include "hub.h"

/* The state a device's queued session writes leave, until they commit. */
struct pending {
	unsigned writes;
	char generation[SESSION_GEN_MAX + 1];
	bool exists;
	struct hub_subs subs;
};

/* One session write: the whole durable state of a device, or its removal. */
struct ses_job {
	struct hub *h;
	char id[REGISTRY_ID_MAX + 1];
	struct store_session row; /* generation and subs; subs NULL: delete */
	void (*done)(void *arg, int rc);
	void *arg;
};

void sessions_init(struct hub_sessions *t)
{
	map_init(&t->live);
	map_init(&t->pending);
}

void sessions_free(struct hub_sessions *t)
{
	map_free(&t->live);
	map_free(&t->pending); /* empty: store_close ran every write's done */
}

int sessions_read(struct store_txn *t, const char *hub, const char *id, const char *gen,
		  struct session_stored *out)
{
	memset(out, 0, sizeof *out);
	struct store_session row;
	int rc = store_session_get(t, hub, id, &row);
	if (rc == FH_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	if (strcmp(row.generation, gen) == 0 &&
	    hub__wire_subs_decode(row.subs, strlen(row.subs), &out->subs) == 0)
		out->exists = true;
	else if (strcmp(row.generation, gen) == 0)
		log_at(LOG_WARN, "hub %s: device %s: its stored session cannot be read; starting a "
				 "new one", hub, id);
	store_session_clear(&row);
	return 0;
}

static int ses_work(void *arg, struct store_txn *t)
{
	struct ses_job *j = arg;
	const char *hub = j->h->name;
	if (j->row.subs)
		return store_session_put(t, hub, j->id, &j->row);
	int rc = store_session_delete(t, hub, j->id);
	return rc == FH_ENOTFOUND ? 0 : rc;
}

static void ses_done(void *arg, int rc)
{
	struct ses_job *j = arg;
	struct pending *p = map_get(&j->h->sessions.pending, j->id);
	if (p && --p->writes == 0)
		free(map_remove(&j->h->sessions.pending, j->id));
	if (rc != 0 && rc != FH_ENOTFOUND) {
		/* The live session keeps its state; it is written again at its
		 * next change or when its connection ends. */
		struct dev_session *s = map_get(&j->h->sessions.live, j->id);
		if (s && s->durable && strcmp(s->generation, j->row.generation) == 0)
			s->dirty = true;
		log_at(LOG_WARN,
		       "hub %s: device %s: its session could not be stored (%s); it is kept "
		       "while connected and stored again at its next change or disconnect",
		       j->h->name, j->id, fh_strerror(rc));
	}
	if (j->done)
		j->done(j->arg, rc);
	store_session_clear(&j->row);
	free(j);
}

/* Queues the write that leaves s's device with the durable state
 * (exists, subs), notes it as pending, and calls done(arg, rc) after the
 * commit (when done is not NULL). cost > 0: a client's request, counted in
 * the store's backlog (store_admit was asked before). */
static void queue_write(struct hub *h, const struct dev_session *s, bool exists,
			const struct hub_subs *subs, size_t cost, void (*done)(void *arg, int rc),
			void *arg)
{
	struct ses_job *j = xcalloc(1, sizeof *j);
	j->h = h;
	memcpy(j->id, s->device_id, sizeof j->id);
	j->row.generation = xstrdup(s->generation);
	if (exists) {
		struct buf b = BUF_INIT;
		hub__wire_subs_encode(subs, &b);
		j->row.subs = buf_steal(&b);
	}
	j->done = done;
	j->arg = arg;

	struct pending *p = map_get(&h->sessions.pending, s->device_id);
	if (!p) {
		p = xcalloc(1, sizeof *p);
		map_put(&h->sessions.pending, s->device_id, p);
	}
	p->writes++;
	snprintf(p->generation, sizeof p->generation, "%s", s->generation);
	p->exists = exists;
	memset(&p->subs, 0, sizeof p->subs);
	if (exists)
		p->subs = *subs;
	store_submit_keyed(h->store, s->device_id, ses_work, ses_done, j, cost);
}

/* ---- Connection state: written after the fact, never awaited ---- */

struct conn_job {
	struct hub *h;
	char id[REGISTRY_ID_MAX + 1];
	char generation[SESSION_GEN_MAX + 1];
	struct store_connection c;
	bool fresh; /* a new connection: the other nodes are told */
};

static int conn_work(void *arg, struct store_txn *t)
{
	struct conn_job *j = arg;
	int rc = store_connection_put(t, j->h->name, j->id, j->generation, &j->c);
	if (rc == 0 && j->fresh) {
		/* A new connection: one of the device's on another node goes. */
		struct cluster_msg m;
		cluster_msg_set(&m, CLUSTER_CONNECTED, j->h->name, j->id, 0, j->c.updated_ms, NULL);
		rc = store_post(t, &m);
	}
	return rc == FH_ENOTFOUND ? 0 : rc; /* the device is gone: nothing to show */
}

static void conn_done(void *arg, int rc)
{
	struct conn_job *j = arg;
	if (rc != 0)
		log_at(LOG_WARN, "hub %s: device %s: its connection state could not be stored (%s)",
		       j->h->name, j->id, fh_strerror(rc));
	free(j);
}

static void write_connection(struct hub *h, struct dev_session *s, bool connected, bool fresh)
{
	struct conn_job *j = xcalloc(1, sizeof *j);
	j->h = h;
	memcpy(j->id, s->device_id, sizeof j->id);
	memcpy(j->generation, s->generation, sizeof j->generation);
	j->c.connected = connected;
	j->fresh = fresh;
	j->c.updated_ms = connected ? s->connected_ms : clock_now_ms();
	j->c.last_activity_ms = s->last_activity_ms;
	s->activity_stored_ms = s->last_activity_ms;
	store_submit_keyed(h->store, s->device_id, conn_work, conn_done, j, 0);
}

void sessions_activity(struct hub *h, struct dev_session *s)
{
	s->last_activity_ms = clock_now_ms();
	if (s->live && s->last_activity_ms - s->activity_stored_ms >= SESSIONS_ACTIVITY_STORE_MS)
		write_connection(h, s, true, false);
}

bool sessions_attach(struct hub *h, struct dev_session *s, bool clean,
		     const struct session_stored *stored)
{
	struct hub_sessions *t = &h->sessions;
	struct dev_session *old = map_get(&t->live, s->device_id);
	/* Queued writes of this identity supersede what the store held when
	 * it was read; those of an older identity will not land. */
	const struct pending *p = map_get(&t->pending, s->device_id);
	if (p && strcmp(p->generation, s->generation) != 0)
		p = NULL;
	bool exists = p ? p->exists : stored->exists;
	bool present = false;

	s->durable = !clean;
	memset(&s->subs, 0, sizeof s->subs);
	if (clean) {
		if (exists)
			queue_write(h, s, false, NULL, 0, NULL, NULL);
	} else if (old && old->durable && strcmp(old->generation, s->generation) == 0) {
		s->subs = old->subs; /* takeover: the newest state is the live one */
		s->dirty = old->dirty;
		old->dirty = false;
		present = true;
	} else if (exists) {
		s->subs = p ? p->subs : stored->subs;
		present = true;
	} else {
		queue_write(h, s, true, &s->subs, 0, NULL, NULL);
	}

	map_put(&t->live, s->device_id, s);
	s->live = true;
	write_connection(h, s, true, true);
	if (old && old != s) {
		old->live = false;
		log_at(LOG_INFO, "hub %s: device %s connected again (clean session %d%s); closing "
				 "the older connection",
		       h->name, s->device_id, clean,
		       !clean && old->durable ? ", its subscriptions taken over" : "");
		old->ops->close(old, "the device connected again");
	}
	return present;
}

/* s stops being live: a durable session whose last write failed is
 * written again now. */
static void leave(struct hub *h, struct dev_session *s)
{
	if (s->live && s->durable && s->dirty)
		queue_write(h, s, true, &s->subs, 0, NULL, NULL);
	if (s->live)
		write_connection(h, s, false, false);
	s->dirty = false;
	s->live = false;
}

void sessions_detach(struct hub *h, struct dev_session *s)
{
	if (s->live && map_get(&h->sessions.live, s->device_id) == s)
		map_remove(&h->sessions.live, s->device_id);
	hub__methods_detached(h, s);
	hub__c2d_detached(h, s);
	leave(h, s);
}

int sessions_subscribe(struct hub *h, struct dev_session *s, const struct hub_subs *next,
		       void (*done)(void *arg, int rc), void *arg)
{
	bool changed = memcmp(&s->subs, next, sizeof *next) != 0 || s->dirty;
	bool queued = map_get(&h->sessions.pending, s->device_id) != NULL;
	if (!s->durable || (!changed && !queued)) {
		s->subs = *next;
		return 0;
	}
	/* Additions are a client's writes, admitted against the backlog;
	 * removals are always queued (they cannot be refused in MQTT 3.1.1,
	 * and there are never more of them than admitted additions). */
	size_t cost = 64; /* the row: a few names and digits */
	bool adds = (next->mask & ~s->subs.mask) != 0;
	for (int k = 0; k < HUB_SUB_COUNT && !adds; k++)
		adds = (next->mask & (1u << k)) && next->qos[k] > s->subs.qos[k];
	if (adds && store_admit(h->store, cost) != 0)
		return FH_EAGAIN;
	s->subs = *next;
	s->dirty = false;
	queue_write(h, s, true, next, cost, done, arg);
	return 1;
}

struct dev_session *sessions_live(const struct hub *h, const char *device_id)
{
	return map_get(&h->sessions.live, device_id);
}

struct id_list {
	char **v;
	size_t n;
};

static void collect_id(void *arg, const char *key, void *value)
{
	struct id_list *l = arg;
	l->v[l->n++] = xstrdup(key);
}

void sessions_close_all(struct hub *h, const char *why)
{
	/* Kicking a session removes it from the map, so collect ids first. */
	struct id_list l = {xcalloc(h->sessions.live.count + 1, sizeof(char *)), 0};
	map_each(&h->sessions.live, collect_id, &l);
	for (size_t i = 0; i < l.n; i++) {
		hub_kick(h, l.v[i], why);
		free(l.v[i]);
	}
	free(l.v);
}

/* ---- hub.h: the live-session operations the REST side uses ---- */

bool hub_device_connected(const struct hub *h, const char *device_id, int64_t *since_ms,
			  int64_t *last_activity_ms)
{
	const struct dev_session *s = sessions_live(h, device_id);
	if (!s)
		return false;
	if (since_ms)
		*since_ms = s->connected_ms;
	if (last_activity_ms)
		*last_activity_ms = s->last_activity_ms;
	return true;
}

void hub_kick(struct hub *h, const char *device_id, const char *why)
{
	struct dev_session *s = map_remove(&h->sessions.live, device_id);
	if (!s)
		return;
	leave(h, s);
	log_at(LOG_INFO, "hub %s: closing device %s: %s", h->name, device_id, why);
	s->ops->close(s, why);
}

static void on_device_change(void *arg, const char *hub, const char *device_id,
			     enum device_change what, const char *why)
{
	struct hub *h = arg;
	if (strcmp(h->name, hub) == 0)
		hub_kick(h, device_id, why);
}

void hub_listen_events(struct hub *h, struct device_events *events)
{
	h->devices = events;
	device_events_subscribe(events, on_device_change, h);
}

int hub_post_device(struct store_txn *t, const struct hub *h, const char *device_id,
		    enum device_change what, const char *why)
{
	struct cluster_msg m;
	cluster_msg_set(&m, CLUSTER_DEVICE, h->name, device_id, (int)what, 0, why);
	return store_post(t, &m);
}

int hub_post_desired(struct store_txn *t, const struct hub *h, const char *device_id,
		     const char *notice, int64_t version)
{
	struct cluster_msg m;
	cluster_msg_set(&m, CLUSTER_DESIRED, h->name, device_id, 0, version, notice);
	return store_post(t, &m);
}

void hub_connected_elsewhere(struct hub *h, const char *device_id, int64_t at_ms,
			     const char *node)
{
	struct dev_session *s = sessions_live(h, device_id);
	if (!s || s->connected_ms > at_ms)
		return;
	char why[160];
	snprintf(why, sizeof why, "a newer connection of the device on node %s took over", node);
	hub_kick(h, device_id, why);
}

void hub_notify_desired(struct hub *h, const char *device_id, const char *body, int64_t version)
{
	struct dev_session *s = sessions_live(h, device_id);
	if (s && (s->subs.mask & (1u << HUB_SUB_DESIRED)))
		s->ops->desired(s, body, version);
}
