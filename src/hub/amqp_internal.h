/* Shared by the AMQP endpoint's files: amqp.c (connections, SASL, CBS,
 * links), amqp_eh.c (the Event Hub-compatible endpoint), amqp_service.c
 * (cloud-to-device sends, feedback, the redirect). */
#ifndef FH_HUB_AMQP_INTERNAL_H
#define FH_HUB_AMQP_INTERNAL_H

#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/message.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "codec/amqp_frame.h"
#include "hub/hub.h"

#define AMQP_MAX_LINKS 256    /* open links per connection */
#define AMQP_MAX_SESSIONS 64  /* sessions (channels) per connection */
#define AMQP_MAX_FRAME 65536  /* the largest frame accepted */
#define AMQP_IDLE_MS 240000   /* closed when the peer sends nothing this long */
#define AMQP_MAX_GRANTS 64    /* CBS authorizations kept per connection */
#define AMQP_C2D_CREDIT 50    /* C2D messages a sender may have unsettled */
#define AMQP_MAX_UNSETTLED 2000 /* events sent and not settled per receiver */
#define AMQP_POLL_MS 1000     /* readers waiting look again (other nodes' writes) */

enum amqp_link_kind {
	AL_CBS_IN,       /* $cbs: put-token requests */
	AL_CBS_OUT,      /* $cbs: the answers */
	AL_MGMT_IN,      /* $management: requests */
	AL_MGMT_OUT,     /* $management: the answers */
	AL_EVENTS,       /* <entity>/ConsumerGroups/<group>/Partitions/<n> */
	AL_C2D_IN,       /* /messages/devicebound */
	AL_FEEDBACK,     /* /messages/serviceBound/feedback */
	AL_FILES,        /* /messages/serviceBound/filenotifications: stays empty */
	AL_REDIRECT,     /* .../messages/events...: answered with amqp:link:redirect */
};

/* What a put-token (or SASL PLAIN) authorized, until when. */
enum amqp_grant_kind { GRANT_SERVICE, GRANT_EVENTS };
struct amqp_grant {
	enum amqp_grant_kind kind;
	unsigned rights;   /* hub_right bits of the policy */
	int64_t expiry_s;
	char audience[256];
};

struct amqp_conn;

struct amqp_link {
	struct amqp_conn *ac;
	pn_link_t *l;
	enum amqp_link_kind kind;
	bool closed;      /* closed by either side: touch l no more */
	unsigned refs;    /* jobs in flight; freed at 0 once closed */
	uint64_t tag;     /* the next delivery tag (senders) */
	struct amqp_link *next;
	/* AL_EVENTS */
	struct amqp_link *reader_next; /* hub->amqp_readers (AL_FEEDBACK: amqp_feedback) */
	unsigned part;
	char group[128];
	int64_t epoch;    /* -1: none */
	int64_t cursor;   /* the next sequence number to send */
	bool ready;       /* the start position is known */
	bool reading;     /* a read is under way */
	bool waiting;     /* nothing new: a wake-up or a poll reads again */
	/* AL_FEEDBACK */
	int64_t fb_first, fb_last; /* the batch sent: no other receiver here gets these */
	unsigned fb_count;         /* its records */
	bool fb_pending;  /* a batch waits for its disposition */
	int64_t fb_retry_ms;
	/* AL_REDIRECT */
	bool redirected;
};

struct amqp_conn {
	pn_connection_driver_t d;
	struct amqp_scan scan;     /* what the client sends, before the engine */
	struct net_conn *net;      /* NULL before the first byte, after the close */
	const struct hub_set *set;
	struct hub *sni_hub, *default_hub;
	struct hub *hub;           /* picked at the AMQP open (or by SASL PLAIN) */
	int port;
	bool running, rerun;       /* inside run(): a nested call asks for a rerun */
	bool dead;                 /* the socket is gone: no more Proton calls */
	bool finished;
	bool opened;               /* the AMQP open was answered (counted in hub->amqp) */
	unsigned refs;             /* the socket's + every job's */
	unsigned links, refused_links, sessions;
	struct amqp_link *all;
	struct amqp_grant grants[AMQP_MAX_GRANTS];
	size_t ngrants;
	pn_message_t *msg;         /* scratch for decoding and answers */
	struct buf scratch;
	uv_timer_t timer;          /* ticks: idle time-out, token expiry, polls */
	bool timer_open;
	struct hub_events_watch watch;
	bool watching;
	char peer[64];
	char *sasl_mech;           /* Proton's copy of the last sasl-init's mechanism */
	unsigned sasl_inits;
};

/* Runs the engine: its events, then what it has to write. Call after
 * every change made from outside an event (a store completion). */
void amqp__run(struct amqp_conn *ac);
void amqp__ref(struct amqp_conn *ac);
void amqp__unref(struct amqp_conn *ac);
void amqp__link_ref(struct amqp_link *lk);
void amqp__link_unref(struct amqp_link *lk);
/* The string value of application property key of m, or NULL. */
const char *amqp__app_prop(pn_message_t *m, const char *key, char *out, size_t outlen);
/* Answers a $cbs (mgmt false) or $management request: correlation id,
 * status-code and status-description, and body (an AMQP value) if any, on
 * the sender link the reply goes to. */
void amqp__answer(struct amqp_conn *ac, bool mgmt, pn_msgid_t id, const char *reply_to,
		  int status, const char *text, pn_data_t *body);
/* Closes a link without an error. */
void amqp__link_close(struct amqp_link *lk);

/* The newest unexpired grant allowing what is asked (GRANT_EVENTS also
 * satisfies a ServiceConnect need), or NULL. */
const struct amqp_grant *amqp__authorized(struct amqp_conn *ac, bool events, unsigned rights);
/* Checks a SAS token as a put-token or $management security_token would,
 * for a policy of ac's hub: on success adds or renews a grant. 0, or
 * FH_EAUTH with *why. */
int amqp__grant_token(struct amqp_conn *ac, const char *audience, const char *token,
		      const char **why);

/* Closes a link with an error condition (name, description). */
void amqp__link_fail(struct amqp_link *lk, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends an encoded message on a sender link (one delivery, unsettled);
 * without credit, Proton keeps it until the client gives some. false when
 * the link is closed. */
bool amqp__send(struct amqp_link *lk, const char *bytes, size_t n);
/* Encodes m into ac->scratch and sends it. */
bool amqp__send_message(struct amqp_link *lk, pn_message_t *m);
/* The text of an AMQP message id (string, uuid, ulong, binary). */
void amqp__msgid_text(pn_msgid_t id, char *out, size_t outlen);
/* The entity name of the Event Hub-compatible endpoint: the hub name's
 * first label (decisions.md 19). */
void amqp__entity(const struct hub *h, char *out, size_t outlen);

/* amqp_eh.c */
void amqp__events_attach(struct amqp_link *lk, const char *address);
void amqp__events_detach(struct amqp_link *lk);
void amqp__events_pump(struct amqp_link *lk);
void amqp__mgmt_request(struct amqp_conn *ac, pn_delivery_t *d, pn_message_t *m);
void amqp__events_wake(struct hub_events_watch *w, unsigned part);
void amqp__events_poll(struct amqp_conn *ac);

/* amqp_service.c */
void amqp__c2d_delivery(struct amqp_link *lk, pn_delivery_t *d, pn_message_t *m, size_t size);
void amqp__feedback_attach(struct amqp_link *lk);
void amqp__feedback_detach(struct amqp_link *lk);
void amqp__feedback_pump(struct amqp_link *lk);
void amqp__feedback_settled(struct amqp_link *lk, pn_delivery_t *d);
void amqp__redirect(struct amqp_link *lk);

#endif
