/* AMQP connections (see amqp.h): the Proton connection driver fed from a
 * net_conn, SASL, CBS put-token, and the routing of links to what serves
 * them.
 *
 *   net_conn bytes --read_buffer--> Proton --events--> handle()
 *        ^                                                |
 *        +---- write_buffer <-- answers, deliveries <-----+
 *
 * Every Proton call happens on the loop thread, from an event of this
 * connection's driver or from a store completion followed by amqp__run.
 * A link's jobs hold a reference on the link and, through it, on the
 * connection; after the socket closed (dead) nothing touches Proton
 * objects any more, and both are freed when the last job is done.
 *
 * Authorization: SASL is a formality (ANONYMOUS, or PLAIN whose password is
 * a SAS token and counts as a put-token); links that read or write hub data
 * need a grant from a put-token on $cbs, checked at the attach and again
 * every second (a token that expires closes the links that relied on it). */
#include "hub/amqp.h"

#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/event.h>
#include <proton/sasl.h>
#include <proton/sasl_plugin.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "hub/amqp_internal.h"

#define REQUEST_MAX 65536 /* a $cbs or $management request */

/* ---- references ---- */

static void conn_free(struct amqp_conn *ac)
{
	while (ac->all) {
		struct amqp_link *lk = ac->all;
		ac->all = lk->next;
		free(lk);
	}
	pn_message_free(ac->msg);
	pn_connection_driver_destroy(&ac->d);
	buf_free(&ac->scratch);
	free(ac);
}

void amqp__ref(struct amqp_conn *ac)
{
	ac->refs++;
}

static void timer_closed(uv_handle_t *h)
{
	struct amqp_conn *ac = h->data;
	ac->timer_open = false;
	amqp__unref(ac);
}

void amqp__unref(struct amqp_conn *ac)
{
	if (--ac->refs == 0)
		conn_free(ac);
}

static void link_free(struct amqp_link *lk)
{
	struct amqp_conn *ac = lk->ac;
	for (struct amqp_link **p = &ac->all; *p; p = &(*p)->next)
		if (*p == lk) {
			*p = lk->next;
			break;
		}
	if (!ac->dead && lk->l)
		pn_link_set_context(lk->l, NULL);
	free(lk);
}

void amqp__link_ref(struct amqp_link *lk)
{
	lk->refs++;
	amqp__ref(lk->ac);
}

void amqp__link_unref(struct amqp_link *lk)
{
	struct amqp_conn *ac = lk->ac;
	if (--lk->refs == 0 && lk->closed)
		link_free(lk);
	amqp__unref(ac);
}

/* The link is done with (closed by either side). */
static void link_closed(struct amqp_link *lk)
{
	if (lk->closed)
		return;
	lk->closed = true;
	lk->ac->links--;
	if (lk->ac->hub)
		lk->ac->hub->amqp.links--;
	if (lk->kind == AL_EVENTS && lk->ac->hub)
		amqp__events_detach(lk);
	if (lk->kind == AL_FEEDBACK && lk->ac->hub)
		amqp__feedback_detach(lk);
	if (lk->refs == 0)
		link_free(lk);
}

/* ---- small helpers ---- */

void amqp__entity(const struct hub *h, char *out, size_t outlen)
{
	size_t n = strcspn(h->name, ".");
	snprintf(out, outlen, "%.*s", (int)n, h->name);
}

void amqp__msgid_text(pn_msgid_t id, char *out, size_t outlen)
{
	switch (id.type) {
	case PN_STRING:
	case PN_SYMBOL:
		snprintf(out, outlen, "%.*s", (int)id.u.as_bytes.size, id.u.as_bytes.start);
		break;
	case PN_UUID: {
		const unsigned char *u = (const unsigned char *)id.u.as_uuid.bytes;
		snprintf(out, outlen,
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
			 u[12], u[13], u[14], u[15]);
		break;
	}
	case PN_ULONG:
		snprintf(out, outlen, "%llu", (unsigned long long)id.u.as_ulong);
		break;
	case PN_BINARY: {
		size_t n = 0;
		out[0] = 0;
		for (size_t i = 0; i < id.u.as_bytes.size && n + 3 < outlen; i++)
			n += (size_t)snprintf(out + n, outlen - n, "%02x",
					      (unsigned char)id.u.as_bytes.start[i]);
		break;
	}
	default:
		if (outlen)
			out[0] = 0;
	}
}

void amqp__link_fail(struct amqp_link *lk, const char *cond, const char *fmt, ...)
{
	if (lk->closed)
		return;
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	log_at(LOG_INFO, "amqp %s: link %s closed: %s (%s)", lk->ac->peer, pn_link_name(lk->l),
	       text, cond);
	pn_condition_t *c = pn_link_condition(lk->l);
	pn_condition_set_name(c, cond);
	pn_condition_set_description(c, text);
	if (pn_link_state(lk->l) & PN_LOCAL_UNINIT)
		pn_link_open(lk->l);
	pn_link_close(lk->l);
	link_closed(lk);
}

void amqp__link_close(struct amqp_link *lk)
{
	if (lk->closed)
		return;
	pn_link_close(lk->l);
	link_closed(lk);
}

/* Refuses an attach that has no link struct (yet). */
static void refuse_attach(pn_link_t *l, const char *cond, const char *text)
{
	pn_condition_t *c = pn_link_condition(l);
	pn_condition_set_name(c, cond);
	pn_condition_set_description(c, text);
	pn_link_open(l);
	pn_link_close(l);
}

bool amqp__send(struct amqp_link *lk, const char *bytes, size_t n)
{
	if (lk->closed)
		return false;
	uint64_t tag = lk->tag++;
	pn_delivery(lk->l, pn_dtag((const char *)&tag, sizeof tag));
	pn_link_send(lk->l, bytes, n);
	pn_link_advance(lk->l);
	return true;
}

bool amqp__send_message(struct amqp_link *lk, pn_message_t *m)
{
	struct buf *b = &lk->ac->scratch;
	size_t cap = 4096;
	buf_reset(b);
	for (;;) {
		buf_reserve(b, cap);
		size_t n = b->cap - 1;
		int rc = pn_message_encode(m, b->data, &n);
		if (rc == 0)
			return amqp__send(lk, b->data, n);
		if (rc != PN_OVERFLOW || cap > 16 * 1024 * 1024)
			return false;
		cap *= 2;
	}
}

/* ---- grants ---- */

const struct amqp_grant *amqp__authorized(struct amqp_conn *ac, bool events, unsigned rights)
{
	int64_t now = clock_now_ms() / 1000;
	const struct amqp_grant *best = NULL;
	for (size_t i = 0; i < ac->ngrants; i++) {
		const struct amqp_grant *g = &ac->grants[i];
		if (g->expiry_s <= now)
			continue;
		bool ok = g->kind == GRANT_SERVICE ? (g->rights & rights) == rights &&
							 (!events || (g->rights & HUB_RIGHT_SERVICE_CONNECT))
						   : events;
		if (ok && (!best || g->expiry_s > best->expiry_s))
			best = g;
	}
	return best;
}

int amqp__grant_token(struct amqp_conn *ac, const char *audience, const char *token,
		      const char **why)
{
	struct hub *h = ac->hub;
	struct sas_token t;
	if (!h) {
		*why = "no hub was named";
		return FH_EAUTH;
	}
	if (sas_parse(token, strlen(token), &t, why) != 0)
		return FH_EAUTH;
	if (sas_check_expiry(&t, clock_now_ms() / 1000) != 0) {
		*why = "the token has expired";
		return FH_EAUTH;
	}
	const char *res = t.resource;
	bool sb = strncasecmp(res, "sb://", 5) == 0;
	if (sb)
		res += 5;
	size_t host_len = strcspn(res, "/");
	const char *path = res + host_len;
	if (!hub_name_matches(h, res, host_len)) {
		*why = "the token is for another hub";
		return FH_EAUTH;
	}
	enum amqp_grant_kind kind;
	char entity[128];
	amqp__entity(h, entity, sizeof entity);
	size_t el = strlen(entity);
	if (sb) {
		if (path[0] != '/' || strncasecmp(path + 1, entity, el) != 0 ||
		    (path[1 + el] != '\0' && path[1 + el] != '/')) {
			*why = "the token is not for this hub's Event Hub-compatible entity";
			return FH_EAUTH;
		}
		kind = GRANT_EVENTS;
	} else if (*path == '\0' || strcmp(path, "/") == 0) {
		kind = GRANT_SERVICE;
	} else if (strcasecmp(path, "/messages/events") == 0 ||
		   strncasecmp(path, "/messages/events/", 17) == 0) {
		kind = GRANT_EVENTS;
	} else if (strncmp(path, "/devices/", 9) == 0) {
		*why = "fleethub does not serve devices over AMQP: devices connect with MQTT, "
		       "MQTT over WebSockets or HTTPS";
		return FH_EFORBIDDEN;
	} else {
		*why = "the token is for a resource this endpoint does not serve";
		return FH_EAUTH;
	}
	const struct sas_policy *p = sas_policy_verify(&t, h->policies, HUB_NPOLICIES, why);
	if (!p && t.has_key_name) {
		/* Event Hubs clients sign with the key's text itself, not the
		 * bytes it encodes (Service Bus tokens) */
		const struct sas_policy *q = hub_policy_find(h, t.key_name);
		if (q && (sas_signature_ok(&t, (const uint8_t *)q->primary, strlen(q->primary)) ||
			  sas_signature_ok(&t, (const uint8_t *)q->secondary, strlen(q->secondary))))
			p = q;
	}
	if (!p)
		return FH_EAUTH;
	if (!(p->rights & HUB_RIGHT_SERVICE_CONNECT) && kind == GRANT_EVENTS) {
		*why = "the policy has no ServiceConnect right";
		return FH_EAUTH;
	}
	struct amqp_grant *g = NULL;
	for (size_t i = 0; i < ac->ngrants && !g; i++)
		if (strcmp(ac->grants[i].audience, audience) == 0)
			g = &ac->grants[i];
	if (!g && ac->ngrants == AMQP_MAX_GRANTS) {
		/* replace the one that expires first */
		g = &ac->grants[0];
		for (size_t i = 1; i < ac->ngrants; i++)
			if (ac->grants[i].expiry_s < g->expiry_s)
				g = &ac->grants[i];
	}
	if (!g)
		g = &ac->grants[ac->ngrants++];
	g->kind = kind;
	g->rights = p->rights;
	g->expiry_s = t.expiry;
	snprintf(g->audience, sizeof g->audience, "%s", audience);
	return 0;
}

/* ---- SASL: ANONYMOUS, PLAIN (a SAS token as password), MSSBCBS ---- */

static const char *sasl_mechs(pn_transport_t *t)
{
	return "PLAIN ANONYMOUS MSSBCBS";
}

static bool sasl_init_server(pn_transport_t *t)
{
	pnx_sasl_set_desired_state(t, SASL_POSTED_MECHANISMS);
	return true;
}

static bool sasl_false(pn_transport_t *t)
{
	return false;
}

static void sasl_nothing(pn_transport_t *t)
{
}

/* The hub "<policy>@sas.root.<hub>" names: by its first label or its name. */
static struct hub *sasl_hub(struct amqp_conn *ac, const char *name)
{
	if (ac->sni_hub)
		return ac->sni_hub;
	for (size_t i = 0; ac->set && i < ac->set->n; i++) {
		struct hub *h = ac->set->v[i];
		char entity[128];
		amqp__entity(h, entity, sizeof entity);
		if (strcasecmp(entity, name) == 0 || strcasecmp(h->name, name) == 0)
			return h;
	}
	return ac->default_hub;
}

static void sasl_init(pn_transport_t *t, const char *mech, const pn_bytes_t *recv)
{
	struct amqp_conn *ac = pnx_sasl_get_context(t);
	bool ok = false;
	const char *why = "unknown mechanism";
	/* Proton 0.37 keeps each sasl-init's mechanism in a copy it frees only
	 * at the end, dropping the previous one when another sasl-init comes:
	 * free that one here (nothing else points to it), and refuse a second
	 * sasl-init (no client sends one) */
	bool again = ac->sasl_mech != NULL || ac->sasl_inits++ > 0;
	if (ac->sasl_mech && ac->sasl_mech != mech)
		free(ac->sasl_mech);
	ac->sasl_mech = (char *)mech;
	if (!mech)
		mech = ""; /* a sasl-init without one */
	if (again) {
		log_at(LOG_INFO, "amqp %s: SASL refused: a second sasl-init", ac->peer);
		pnx_sasl_set_failed(t);
		pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
		return;
	}
	if (strcmp(mech, "ANONYMOUS") == 0 || strcmp(mech, "MSSBCBS") == 0) {
		ok = true;
	} else if (strcmp(mech, "PLAIN") == 0 && recv) {
		/* [authzid] NUL user NUL password */
		char buf[SAS_MAX_TOKEN + 512];
		size_t n = recv->size < sizeof buf - 1 ? recv->size : sizeof buf - 1;
		if (n)
			memcpy(buf, recv->start, n);
		buf[n] = 0;
		const char *user = memchr(buf, 0, n);
		const char *pass = user ? memchr(user + 1, 0, n - (size_t)(user + 1 - buf)) : NULL;
		why = "PLAIN needs a user and a password";
		if (pass) {
			user++;
			pass++;
			const char *at = strstr(user, "@sas.root.");
			char policy[SAS_MAX_KEYNAME + 1];
			if (at && (size_t)(at - user) <= SAS_MAX_KEYNAME) {
				snprintf(policy, sizeof policy, "%.*s", (int)(at - user), user);
				ac->hub = sasl_hub(ac, at + 10);
				int rc = amqp__grant_token(ac, "sasl", pass, &why);
				ok = rc == 0;
			} else {
				why = "the PLAIN user must be <policy>@sas.root.<hub>";
			}
		}
	}
	if (ok) {
		pnx_sasl_set_succeeded(t, "fleethub", NULL);
	} else {
		log_at(LOG_INFO, "amqp %s: SASL %s refused: %s", ac->peer, mech, why);
		pnx_sasl_set_failed(t);
	}
	pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}

static void sasl_response(pn_transport_t *t, const pn_bytes_t *recv)
{
	pnx_sasl_set_failed(t);
	pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}

static bool sasl_mechanisms(pn_transport_t *t, const char *mechs)
{
	return false;
}

static void sasl_challenge(pn_transport_t *t, const pn_bytes_t *recv)
{
}

static void sasl_outcome(pn_transport_t *t, const pn_bytes_t *recv)
{
}

static ssize_t sasl_max_encrypt(pn_transport_t *t)
{
	return 0;
}

static ssize_t sasl_code(pn_transport_t *t, pn_bytes_t in, pn_bytes_t *out)
{
	return -1;
}

static const pnx_sasl_implementation sasl_impl = {
    .free = sasl_nothing,
    .list_mechanisms = sasl_mechs,
    .init_server = sasl_init_server,
    .init_client = sasl_false,
    .prepare_write = sasl_nothing,
    .process_init = sasl_init,
    .process_response = sasl_response,
    .process_mechanisms = sasl_mechanisms,
    .process_challenge = sasl_challenge,
    .process_outcome = sasl_outcome,
    .can_encrypt = sasl_false,
    .max_encrypt_size = sasl_max_encrypt,
    .encode = sasl_code,
    .decode = sasl_code,
};

/* ---- $cbs ---- */

const char *amqp__app_prop(pn_message_t *m, const char *key, char *out, size_t outlen)
{
	pn_data_t *p = pn_message_properties(m);
	pn_data_rewind(p);
	if (!pn_data_next(p) || pn_data_type(p) != PN_MAP)
		return NULL;
	pn_data_enter(p);
	const char *found = NULL;
	while (!found && pn_data_next(p)) {
		pn_type_t kt = pn_data_type(p);
		pn_bytes_t k = kt == PN_STRING ? pn_data_get_string(p)
			       : kt == PN_SYMBOL ? pn_data_get_symbol(p)
						 : (pn_bytes_t){0, NULL};
		if (!pn_data_next(p))
			break;
		if (k.start && k.size == strlen(key) && memcmp(k.start, key, k.size) == 0) {
			pn_type_t vt = pn_data_type(p);
			pn_bytes_t v = vt == PN_STRING ? pn_data_get_string(p)
				       : vt == PN_SYMBOL ? pn_data_get_symbol(p)
							 : (pn_bytes_t){0, NULL};
			if (v.start && v.size < outlen) {
				memcpy(out, v.start, v.size);
				out[v.size] = 0;
				found = out;
			}
		}
	}
	pn_data_exit(p);
	return found;
}

static struct amqp_link *find_link(struct amqp_conn *ac, enum amqp_link_kind kind,
				   const char *target)
{
	struct amqp_link *any = NULL;
	for (struct amqp_link *lk = ac->all; lk; lk = lk->next) {
		if (lk->closed || lk->kind != kind)
			continue;
		const char *a = pn_terminus_get_address(pn_link_remote_target(lk->l));
		if (target && a && strcmp(a, target) == 0)
			return lk;
		if (!any)
			any = lk;
	}
	return any;
}

/* Answers a $cbs or $management request on the matching sender link. */
static void answer(struct amqp_conn *ac, enum amqp_link_kind kind, pn_msgid_t id,
		   const char *reply_to, int status, const char *text, pn_data_t *body)
{
	struct amqp_link *out = find_link(ac, kind, reply_to);
	if (!out) {
		log_at(LOG_INFO, "amqp %s: an answer (%d %s) has no link to go to", ac->peer,
		       status, text);
		return;
	}
	pn_message_t *m = pn_message();
	pn_message_set_correlation_id(m, id);
	if (reply_to)
		pn_message_set_address(m, reply_to);
	pn_data_t *p = pn_message_properties(m);
	pn_data_put_map(p);
	pn_data_enter(p);
	pn_data_put_string(p, pn_bytes(11, "status-code"));
	pn_data_put_int(p, status);
	pn_data_put_string(p, pn_bytes(18, "status-description"));
	pn_data_put_string(p, pn_bytes(strlen(text), text));
	pn_data_exit(p);
	if (body) {
		pn_message_set_inferred(m, false);
		pn_data_copy(pn_message_body(m), body);
	}
	amqp__send_message(out, m);
	pn_message_free(m);
}

void amqp__answer(struct amqp_conn *ac, bool mgmt, pn_msgid_t id, const char *reply_to,
		  int status, const char *text, pn_data_t *body)
{
	answer(ac, mgmt ? AL_MGMT_OUT : AL_CBS_OUT, id, reply_to, status, text, body);
}

static void settle(pn_delivery_t *d, uint64_t state)
{
	pn_delivery_update(d, state);
	pn_delivery_settle(d);
}

static void cbs_request(struct amqp_conn *ac, pn_delivery_t *d, pn_message_t *m)
{
	char op[32], type[64], name[256], reply_to[256];
	const char *reply = pn_message_get_reply_to(m);
	snprintf(reply_to, sizeof reply_to, "%s", reply ? reply : "");
	pn_msgid_t id = pn_message_get_id(m);
	int status = 200;
	const char *text = "OK";
	pn_data_t *b = pn_message_body(m);
	pn_data_rewind(b);
	char token[SAS_MAX_TOKEN + 1] = "";
	if (pn_data_next(b) && pn_data_type(b) == PN_STRING) {
		pn_bytes_t s = pn_data_get_string(b);
		if (s.size <= SAS_MAX_TOKEN) {
			memcpy(token, s.start, s.size);
			token[s.size] = 0;
		}
	}
	if (!amqp__app_prop(m, "operation", op, sizeof op) || strcmp(op, "put-token") != 0) {
		status = 400;
		text = "only the put-token operation is served";
	} else if (!amqp__app_prop(m, "type", type, sizeof type) ||
		   (strcmp(type, "servicebus.windows.net:sastoken") != 0 &&
		    strcmp(type, "azure-devices.net:sastoken") != 0)) {
		status = 400;
		text = "the token type must be servicebus.windows.net:sastoken";
	} else if (!amqp__app_prop(m, "name", name, sizeof name)) {
		status = 400;
		text = "the put-token has no name (audience)";
	} else if (!token[0]) {
		status = 400;
		text = "the put-token's body must be the token, a string";
	} else {
		const char *why = "refused";
		int rc = amqp__grant_token(ac, name, token, &why);
		if (rc != 0) {
			status = rc == FH_EFORBIDDEN ? 501 : 401;
			text = why ? why : "refused";
			log_at(LOG_INFO, "amqp %s: put-token for %s refused: %s", ac->peer, name,
			       text);
		}
	}
	answer(ac, AL_CBS_OUT, id, reply_to[0] ? reply_to : NULL, status, text, NULL);
	settle(d, PN_ACCEPTED);
}

/* ---- links ---- */

static const char *target_address(pn_link_t *l)
{
	const char *a = pn_terminus_get_address(pn_link_remote_target(l));
	return a ? a : "";
}

static const char *source_address(pn_link_t *l)
{
	const char *a = pn_terminus_get_address(pn_link_remote_source(l));
	return a ? a : "";
}

static bool contains_ci(const char *s, const char *part)
{
	return strcasestr(s, part) != NULL;
}

static void on_attach(struct amqp_conn *ac, pn_link_t *l)
{
	if (!(pn_link_state(l) & PN_LOCAL_UNINIT))
		return;
	if (!ac->hub) {
		refuse_attach(l, "amqp:not-allowed", "the connection is not open");
		return;
	}
	if (ac->links >= AMQP_MAX_LINKS) {
		if (++ac->refused_links > AMQP_MAX_LINKS) {
			pn_condition_t *c = pn_connection_condition(ac->d.connection);
			pn_condition_set_name(c, "amqp:resource-limit-exceeded");
			pn_condition_set_description(c, "too many links refused on one connection");
			pn_connection_close(ac->d.connection);
			log_at(LOG_INFO,
			       "amqp %s: connection closed: too many links refused on one connection",
			       ac->peer);
			return;
		}
		refuse_attach(l, "amqp:resource-limit-exceeded",
			      "a connection may have 256 links open at once");
		return;
	}
	bool in = pn_link_is_receiver(l); /* the client sends on it */
	const char *addr = in ? target_address(l) : source_address(l);
	int kind = -1;
	bool need_service = false;
	if (strcmp(addr, "$cbs") == 0) {
		kind = in ? AL_CBS_IN : AL_CBS_OUT;
	} else if (strcmp(addr, "$management") == 0) {
		kind = in ? AL_MGMT_IN : AL_MGMT_OUT;
	} else if (in && strcasecmp(addr, "/messages/devicebound") == 0) {
		kind = AL_C2D_IN;
		need_service = true;
	} else if (!in && strcasecmp(addr, "/messages/serviceBound/feedback") == 0) {
		kind = AL_FEEDBACK;
		need_service = true;
	} else if (!in && strcasecmp(addr, "/messages/serviceBound/filenotifications") == 0) {
		kind = AL_FILES;
		need_service = true;
	} else if (!in && contains_ci(addr, "/ConsumerGroups/")) {
		kind = AL_EVENTS;
	} else if (!in && contains_ci(addr, "messages/events")) {
		kind = AL_REDIRECT;
	} else if (contains_ci(addr, "/devices/")) {
		refuse_attach(l, "amqp:not-implemented",
			      "fleethub does not serve devices over AMQP: devices connect with "
			      "MQTT, MQTT over WebSockets or HTTPS");
		log_at(LOG_INFO, "amqp %s: device link %s refused (device AMQP is not served)",
		       ac->peer, addr);
		return;
	}
	if (kind < 0) {
		char text[400];
		snprintf(text, sizeof text, "no such entity: %.300s", addr);
		refuse_attach(l, "amqp:not-found", text);
		log_at(LOG_INFO, "amqp %s: link to %s refused: no such entity", ac->peer, addr);
		return;
	}
	if (need_service && !amqp__authorized(ac, false, HUB_RIGHT_SERVICE_CONNECT)) {
		refuse_attach(l, "amqp:unauthorized-access",
			      "put a token of a policy with ServiceConnect on $cbs first");
		log_at(LOG_INFO, "amqp %s: link to %s refused: not authorized", ac->peer, addr);
		return;
	}
	struct amqp_link *lk = xcalloc(1, sizeof *lk);
	lk->ac = ac;
	lk->l = l;
	lk->kind = (enum amqp_link_kind)kind;
	lk->epoch = -1;
	lk->next = ac->all;
	ac->all = lk;
	ac->links++;
	ac->hub->amqp.links++;
	pn_link_set_context(l, lk);
	pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
	pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
	switch (lk->kind) {
	case AL_EVENTS:
		amqp__events_attach(lk, addr);
		return;
	case AL_C2D_IN:
		pn_link_open(l);
		pn_link_flow(l, AMQP_C2D_CREDIT);
		return;
	case AL_FEEDBACK:
		amqp__feedback_attach(lk);
		pn_link_open(l);
		return;
	case AL_CBS_IN:
	case AL_MGMT_IN:
		pn_link_open(l);
		pn_link_flow(l, 100);
		return;
	default:
		pn_link_open(l);
		return;
	}
}

static void on_flow(struct amqp_conn *ac, pn_link_t *l)
{
	struct amqp_link *lk = pn_link_get_context(l);
	if (!lk || lk->closed || !pn_link_is_sender(l))
		return;
	if (lk->kind == AL_EVENTS)
		amqp__events_pump(lk);
	else if (lk->kind == AL_FEEDBACK)
		amqp__feedback_pump(lk);
	else if (lk->kind == AL_REDIRECT && pn_link_credit(l) > 0)
		amqp__redirect(lk);
}

/* Reads a whole delivery into ac->scratch; false when it is over max
 * (drained, nothing kept). */
static bool read_delivery(struct amqp_conn *ac, pn_link_t *l, pn_delivery_t *d, size_t max,
			  size_t *n)
{
	size_t pending = pn_delivery_pending(d);
	buf_reset(&ac->scratch);
	bool fits = pending <= max && pn_delivery_get_context(d) == NULL;
	if (fits)
		buf_reserve(&ac->scratch, pending + 1);
	char tmp[4096];
	for (;;) {
		char *dst = fits ? ac->scratch.data + ac->scratch.len : tmp;
		size_t room = fits ? ac->scratch.cap - 1 - ac->scratch.len : sizeof tmp;
		if (fits && room == 0) {
			buf_reserve(&ac->scratch, 4096);
			continue;
		}
		ssize_t r = pn_link_recv(l, dst, room);
		if (r <= 0)
			break;
		if (fits)
			ac->scratch.len += (size_t)r;
		if (ac->scratch.len > max)
			fits = false;
	}
	*n = ac->scratch.len;
	return fits;
}

static size_t delivery_max(enum amqp_link_kind kind)
{
	return kind == AL_C2D_IN ? C2D_MAX_BODY + 16384 : REQUEST_MAX;
}

#define TOO_BIG ((void *)1)

static void on_delivery(struct amqp_conn *ac, pn_delivery_t *d)
{
	pn_link_t *l = pn_delivery_link(d);
	struct amqp_link *lk = pn_link_get_context(l);
	if (pn_link_is_sender(l)) {
		if (!pn_delivery_updated(d))
			return;
		if (lk && !lk->closed && lk->kind == AL_FEEDBACK) {
			amqp__feedback_settled(lk, d);
			return;
		}
		if (pn_delivery_remote_state(d) || pn_delivery_settled(d))
			pn_delivery_settle(d);
		if (lk && !lk->closed && lk->kind == AL_EVENTS)
			amqp__events_pump(lk);
		return;
	}
	if (!pn_delivery_readable(d))
		return;
	size_t max = lk ? delivery_max(lk->kind) : REQUEST_MAX;
	if (pn_delivery_partial(d)) {
		/* keep what Proton buffers bounded: drain one that grows too big */
		if (pn_delivery_pending(d) > max || pn_delivery_get_context(d) == TOO_BIG) {
			char tmp[4096];
			while (pn_link_recv(l, tmp, sizeof tmp) > 0)
				;
			pn_delivery_set_context(d, TOO_BIG);
		}
		return;
	}
	size_t n;
	bool fits = read_delivery(ac, l, d, max, &n);
	pn_link_advance(l);
	if (!lk || lk->closed) {
		settle(d, PN_RELEASED);
		return;
	}
	if (!fits) {
		pn_condition_t *c = pn_disposition_condition(pn_delivery_local(d));
		pn_condition_set_name(c, "amqp:link:message-size-exceeded");
		pn_condition_set_description(c, lk->kind == AL_C2D_IN
						    ? "a cloud-to-device message is at most 64 KB"
						    : "the request is too large");
		settle(d, PN_REJECTED);
	} else {
		pn_message_clear(ac->msg);
		/* (an empty one too: Proton asserts on decoding nothing) */
		if (n == 0 || pn_message_decode(ac->msg, ac->scratch.data, n) != 0) {
			pn_condition_t *c = pn_disposition_condition(pn_delivery_local(d));
			pn_condition_set_name(c, "amqp:decode-error");
			pn_condition_set_description(c, "the message does not decode");
			settle(d, PN_REJECTED);
		} else if (lk->kind == AL_CBS_IN) {
			cbs_request(ac, d, ac->msg);
		} else if (lk->kind == AL_MGMT_IN) {
			amqp__mgmt_request(ac, d, ac->msg);
		} else if (lk->kind == AL_C2D_IN) {
			amqp__c2d_delivery(lk, d, ac->msg, n);
		} else {
			settle(d, PN_REJECTED);
		}
	}
	if (lk->kind != AL_C2D_IN && !lk->closed && pn_link_credit(l) < 50)
		pn_link_flow(l, 100 - pn_link_credit(l));
}

static struct hub *open_hub(struct amqp_conn *ac)
{
	const char *host = pn_connection_remote_hostname(ac->d.connection);
	struct hub *h = host && ac->set ? hub_set_find(ac->set, host, strlen(host)) : NULL;
	if (h)
		return h;
	if (ac->hub)
		return ac->hub; /* SASL PLAIN named it */
	return ac->sni_hub ? ac->sni_hub : ac->default_hub;
}

static void on_open(struct amqp_conn *ac)
{
	pn_connection_t *c = ac->d.connection;
	struct hub *h = open_hub(ac);
	if (!h || (ac->hub && ac->hub != h)) {
		pn_condition_t *cond = pn_connection_condition(c);
		pn_condition_set_name(cond, "amqp:not-found");
		pn_condition_set_description(cond, "no hub of that name is served here");
		pn_connection_open(c);
		pn_connection_close(c);
		return;
	}
	ac->hub = h;
	ac->opened = true;
	h->amqp.connections++;
	pn_connection_set_container(c, "fleethub");
	pn_connection_open(c);
	if (ac->net)
		net_conn_set_idle_timeout(ac->net, 0); /* Proton's idle time-out from now */
	log_at(LOG_DEBUG, "amqp %s: connection open to hub %s (container %s)", ac->peer, h->name,
	       pn_connection_remote_container(c) ? pn_connection_remote_container(c) : "-");
}

static void handle(struct amqp_conn *ac, pn_event_t *e)
{
	switch (pn_event_type(e)) {
	case PN_CONNECTION_REMOTE_OPEN:
		on_open(ac);
		break;
	case PN_CONNECTION_REMOTE_CLOSE:
		pn_connection_close(ac->d.connection);
		break;
	case PN_SESSION_REMOTE_OPEN: {
		pn_session_t *s = pn_event_session(e);
		if (pn_session_state(s) & PN_LOCAL_UNINIT) {
			ac->sessions++;
			pn_session_open(s);
		}
		break;
	}
	case PN_SESSION_REMOTE_CLOSE: {
		pn_session_t *s = pn_event_session(e);
		for (struct amqp_link *lk = ac->all, *next; lk; lk = next) {
			next = lk->next; /* lk may be freed */
			if (!lk->closed && pn_link_session(lk->l) == s)
				link_closed(lk);
		}
		pn_session_close(s);
		ac->sessions--;
		break;
	}
	case PN_LINK_REMOTE_OPEN:
		on_attach(ac, pn_event_link(e));
		break;
	case PN_LINK_REMOTE_CLOSE:
	case PN_LINK_REMOTE_DETACH: {
		pn_link_t *l = pn_event_link(e);
		struct amqp_link *lk = pn_link_get_context(l);
		if (lk)
			link_closed(lk);
		if (!(pn_link_state(l) & PN_LOCAL_CLOSED))
			pn_link_close(l);
		break;
	}
	case PN_LINK_FLOW:
		on_flow(ac, pn_event_link(e));
		break;
	case PN_DELIVERY:
		on_delivery(ac, pn_event_delivery(e));
		break;
	case PN_TRANSPORT_ERROR: {
		pn_condition_t *c = pn_transport_condition(ac->d.transport);
		log_at(LOG_INFO, "amqp %s: %s: %s", ac->peer,
		       pn_condition_get_name(c) ? pn_condition_get_name(c) : "error",
		       pn_condition_get_description(c) ? pn_condition_get_description(c) : "");
		break;
	}
	default:
		break;
	}
}

void amqp__run(struct amqp_conn *ac)
{
	if (ac->dead)
		return;
	if (ac->running) {
		ac->rerun = true;
		return;
	}
	ac->running = true;
	do {
		ac->rerun = false;
		pn_event_t *e;
		while ((e = pn_connection_driver_next_event(&ac->d)))
			handle(ac, e);
		for (;;) {
			pn_bytes_t wb = pn_connection_driver_write_buffer(&ac->d);
			if (!wb.size)
				break;
			if (ac->net)
				net_conn_write(ac->net, wb.start, wb.size);
			pn_connection_driver_write_done(&ac->d, wb.size);
		}
	} while (ac->rerun || pn_connection_driver_has_event(&ac->d));
	ac->running = false;
	if (pn_connection_driver_finished(&ac->d) && !ac->finished) {
		ac->finished = true;
		if (ac->net)
			net_conn_close(ac->net);
	}
}

static void engine_in(void *arg, const uint8_t *p, size_t n)
{
	struct amqp_conn *ac = arg;
	while (n && !ac->dead) {
		pn_rwbytes_t rb = pn_connection_driver_read_buffer(&ac->d);
		if (!rb.size)
			break; /* the engine reads no more: it is closing */
		size_t k = n < rb.size ? n : rb.size;
		memcpy(rb.start, p, k);
		pn_connection_driver_read_done(&ac->d, k);
		p += k;
		n -= k;
		amqp__run(ac);
	}
}

/* The client's bytes pass the frame scanner (codec/amqp_frame.h) on their
 * way to the engine: frames on a channel the client has ended are dropped
 * there, not taken for a protocol error that closes the connection. */
void hub_amqp_feed(void *conn, const uint8_t *p, size_t n)
{
	struct amqp_conn *ac = conn;
	uint64_t dropped = ac->scan.dropped;
	amqp_scan_feed(&ac->scan, p, n, engine_in, ac);
	if (ac->scan.dropped != dropped)
		log_at(LOG_DEBUG,
		       "amqp %s: %llu frame(s) on a channel the client had ended dropped (the "
		       "last on channel %u, performative %d)",
		       ac->peer, (unsigned long long)(ac->scan.dropped - dropped),
		       ac->scan.drop_channel, ac->scan.drop_code);
	amqp__run(ac);
}

/* ---- the timer: Proton's ticks, tokens that expire, readers that wait ---- */

static void on_timer(uv_timer_t *t)
{
	struct amqp_conn *ac = t->data;
	if (ac->dead)
		return;
	pn_transport_tick(ac->d.transport, (int64_t)uv_now(t->loop));
	for (struct amqp_link *lk = ac->all, *next; lk; lk = next) {
		next = lk->next;
		if (lk->closed)
			continue;
		bool events = lk->kind == AL_EVENTS;
		bool service = lk->kind == AL_C2D_IN || lk->kind == AL_FEEDBACK ||
			       lk->kind == AL_FILES;
		if ((events && !amqp__authorized(ac, true, 0)) ||
		    (service && !amqp__authorized(ac, false, HUB_RIGHT_SERVICE_CONNECT)))
			amqp__link_fail(lk, "amqp:unauthorized-access",
					"the token this link was authorized with has expired");
		else if (lk->kind == AL_FEEDBACK)
			amqp__feedback_pump(lk);
	}
	amqp__events_poll(ac);
	amqp__run(ac);
}

/* ---- the connection ---- */

void *hub_amqp_new(const struct hub_set *set, struct hub *sni_hub, struct hub *default_hub,
		   int port)
{
	struct amqp_conn *ac = xcalloc(1, sizeof *ac);
	ac->set = set;
	ac->sni_hub = sni_hub;
	ac->default_hub = default_hub;
	ac->port = port;
	ac->refs = 1; /* the socket's */
	snprintf(ac->peer, sizeof ac->peer, "-");
	buf_init(&ac->scratch);
	amqp_scan_init(&ac->scan, AMQP_MAX_FRAME);
	pn_connection_driver_init(&ac->d, NULL, NULL);
	pn_transport_t *t = ac->d.transport;
	pn_transport_set_server(t);
	pn_sasl_t *sasl = pn_sasl(t);
	pn_sasl_set_allow_insecure_mechs(sasl, true);
	pnx_sasl_set_implementation(t, &sasl_impl, ac);
	pn_transport_set_max_frame(t, AMQP_MAX_FRAME);
	pn_transport_set_channel_max(t, AMQP_MAX_SESSIONS - 1);
	pn_transport_set_idle_timeout(t, AMQP_IDLE_MS);
	ac->msg = pn_message();
	ac->watch.wake = amqp__events_wake;
	/* The driver binds the transport to the connection once its INIT event
	 * is handled: before any byte is read (frames read unbound reach a
	 * null connection inside Proton) */
	while (pn_connection_driver_next_event(&ac->d))
		;
	return ac;
}

static void gone(struct amqp_conn *ac)
{
	if (ac->dead)
		return;
	pn_connection_driver_read_close(&ac->d);
	pn_connection_driver_write_close(&ac->d);
	ac->net = NULL;
	amqp__run(ac);
	ac->dead = true;
	for (struct amqp_link *lk = ac->all, *next; lk; lk = next) {
		next = lk->next;
		link_closed(lk);
	}
	if (ac->watching && ac->hub)
		hub_events_unwatch(ac->hub, &ac->watch);
	if (ac->opened)
		ac->hub->amqp.connections--;
	ac->watching = false;
}

void hub_amqp_free(void *conn)
{
	struct amqp_conn *ac = conn;
	gone(ac);
	amqp__unref(ac);
}

static void on_data(struct net_conn *c, const uint8_t *p, size_t n)
{
	struct amqp_conn *ac = net_conn_app(c);
	if (!ac->net && !ac->dead) {
		ac->net = c;
		snprintf(ac->peer, sizeof ac->peer, "%s", net_conn_peer(c));
		struct hub *any = ac->default_hub   ? ac->default_hub
				  : ac->sni_hub     ? ac->sni_hub
				  : ac->set->n      ? ac->set->v[0]
						    : NULL;
		if (any && !ac->timer_open) {
			uv_timer_init(any->loop, &ac->timer);
			ac->timer.data = ac;
			ac->timer_open = true;
			amqp__ref(ac);
			uv_timer_start(&ac->timer, on_timer, 1000, 1000);
		}
	}
	hub_amqp_feed(ac, p, n);
}

static void on_close(struct net_conn *c)
{
	struct amqp_conn *ac = net_conn_app(c);
	gone(ac);
	if (ac->timer_open)
		uv_close((uv_handle_t *)&ac->timer, timer_closed);
	amqp__unref(ac);
}

const struct net_conn_handler hub_amqp_handler = {on_data, on_close};
