/* The session table of a hub: the one owner of device session state.
 *
 * It knows, per device id, the live session (at most one: the newest
 * connection wins) and, for clean-session-0 devices, the durable session
 * kept in the store: the subscription set and the identity generation it
 * belongs to (decisions.md 2). CONNECT, takeover, SUBSCRIBE/UNSUBSCRIBE,
 * disconnect, kicks (device deleted, disabled, credentials changed) and
 * hub shutdown all go through it; nothing else keeps session state. It is
 * protocol-neutral: a protocol's session embeds struct dev_session and
 * gives the table two operations (close, deliver a desired change).
 * This is the seam for several nodes (issue 17): the one place that knows
 * who is connected where, and the one place that writes session rows.
 *
 * What is written, and when (never a write per CONNECT or per PUBLISH
 * otherwise):
 *   - the first clean-session-0 CONNECT after none creates the row (not
 *     awaited: CONNACK goes out at once);
 *   - a clean-session-1 CONNECT deletes the row when there is one;
 *   - a SUBSCRIBE / UNSUBSCRIBE that changes a durable session's set
 *     writes the whole set; its acknowledgement waits for the commit, the
 *     change applies to the live session at once;
 *   - a device delete removes the row in the same transaction
 *     (store_device_delete); a row of another identity generation (a
 *     deleted and re-created id) is never resumed and never written.
 *
 * A write the store refuses (disk full, I/O error) is not answered with a
 * refusal: the subscription is in force on the live connection (reads and
 * twin answers go on while the disk is full), and the state is written
 * again at the session's next change or when its connection ends. Only a
 * crash before the storage recovers loses it.
 *
 * Writes queued but not yet committed are remembered per device (the
 * pending map) with the state they will leave, so a CONNECT that reads
 * the store while they are in flight resumes what they will store, not
 * what the store still holds. The map holds only devices with writes in
 * flight: it is bounded by the store's backlog.
 *
 *   CONNECT clean=0: live durable session? --yes--> inherit its set,
 *                     |no                           present = 1
 *                     v
 *                   stored (or pending) session? --yes--> resume it, present = 1
 *                     |no
 *                     v
 *                   create it (write), present = 0
 *   CONNECT clean=1: drop any stored session (write if there is one),
 *                    start empty, present = 0
 *   either way: an older live session is closed after the new one is in.
 *
 * Everything here runs on the loop thread, except sessions_read, which
 * runs inside a store read (store_read's work) and touches only the store. */
#ifndef FH_HUB_SESSIONS_H
#define FH_HUB_SESSIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "base/map.h"
#include "c2d.h"
#include "core/registry.h"
#include "hub_wire.h"
#include "store/store.h"

struct hub;
struct dev_session;

#define SESSION_GEN_MAX 63

struct dev_session_ops {
	/* Closes the session's connection (its protocol later calls
	 * sessions_detach from its close path); why is for the log. */
	void (*close)(struct dev_session *s, const char *why);
	/* Sends a desired-properties change (body includes "$version"). */
	void (*desired)(struct dev_session *s, const char *body, int64_t version);
	/* Sends a direct method request (payload: JSON text; methods.h). */
	void (*method)(struct dev_session *s, const char *name, const char *rid,
		       const char *payload);
	/* Sends a cloud-to-device message at QoS 1 with packet_id (c2d.h). */
	void (*c2d)(struct dev_session *s, const char *topic, size_t topic_len,
		    const uint8_t *body, size_t n, uint16_t packet_id);
	/* Holds (+1) or lets go of (-1) the session: a store job refers to it. */
	void (*ref)(struct dev_session *s, int delta);
};

struct dev_session {
	const struct dev_session_ops *ops;
	struct hub *hub;
	char device_id[REGISTRY_ID_MAX + 1];
	char generation[SESSION_GEN_MAX + 1]; /* the identity's generationId */
	bool durable;                          /* clean session 0 */
	bool live;                             /* the table's session for its device */
	bool dirty;                            /* a write of subs failed: write again */
	struct hub_subs subs;                  /* in force now */
	int64_t connected_ms;
	int64_t last_activity_ms;
	int64_t activity_stored_ms; /* last_activity_ms as last written */
	struct c2d_session c2d;     /* cloud-to-device deliveries in flight */
};

struct hub_sessions {
	struct map live;    /* device id -> struct dev_session * */
	struct map pending; /* device id -> state its queued writes leave */
};

void sessions_init(struct hub_sessions *t);
/* Frees the table (every session must be detached by then). */
void sessions_free(struct hub_sessions *t);

/* A device's stored session as a CONNECT finds it. */
struct session_stored {
	bool exists;
	struct hub_subs subs;
};
/* Inside a store read: the stored session of device id on hub for the
 * identity generation gen. A row of another generation, or one whose
 * subscription text cannot be read, counts as none. 0 or FH_EIO. */
int sessions_read(struct store_txn *t, const char *hub, const char *id, const char *gen,
		  struct session_stored *out);

/* Makes s (device_id, generation, connected_ms filled in) the live session
 * of its device, as the diagram at the top says, with stored what
 * sessions_read found. Fills s->subs and s->durable; returns the CONNACK's
 * session-present flag. The older live session, if any, is closed. */
bool sessions_attach(struct hub *h, struct dev_session *s, bool clean,
		     const struct session_stored *stored);
/* The session's connection closed: it stops being the live one (when it
 * still was). Writes nothing, unless an earlier write of it failed: a
 * durable session is already stored. */
void sessions_detach(struct hub *h, struct dev_session *s);

/* Changes the subscriptions of a live session to next, at once. Returns 0
 * when the change needs no write (the caller acknowledges now), 1 when
 * done(arg, rc) will run after the write commits (rc 0, or a store error:
 * the set is in force but not stored yet; see the top), or FH_EAGAIN when the change adds to the set
 * and the store's backlog is full (nothing changed; the caller refuses;
 * removals are always queued). Writes go in order per device, so
 * acknowledgements keep the order of the requests. */
int sessions_subscribe(struct hub *h, struct dev_session *s, const struct hub_subs *next,
		       void (*done)(void *arg, int rc), void *arg);

/* The device sent something: its lastActivityTime is now. Stored at most
 * once a minute (SESSIONS_ACTIVITY_STORE_MS) and when it disconnects. */
#define SESSIONS_ACTIVITY_STORE_MS 60000
void sessions_activity(struct hub *h, struct dev_session *s);

/* The live session of a device, or NULL. */
struct dev_session *sessions_live(const struct hub *h, const char *device_id);
/* Closes every live session (shutdown); stored sessions stay. */
void sessions_close_all(struct hub *h, const char *why);

#endif
