/* The DPS virtual host: names, id scope, service policies and their keys,
 * linked hubs (in-process or remote), and the service SAS check. The
 * device API, the service REST API and the operations live in the other
 * files of this layer (see dps.h). */
#include "dps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/host.h"
#include "base/log.h"
#include "base/mem.h"
#include "codec/sas.h"
#include "core/cluster.h"
#include "internal.h"

static const struct {
	const char *name;
	unsigned rights;
} policy_table[DPS_NPOLICIES] = {
	{"provisioningserviceowner", DPS_RIGHT_SERVICE_CONFIG | DPS_RIGHT_ENROLLMENT_READ |
					     DPS_RIGHT_ENROLLMENT_WRITE |
					     DPS_RIGHT_REGISTRATION_READ |
					     DPS_RIGHT_REGISTRATION_WRITE},
	{"enrollmentread", DPS_RIGHT_ENROLLMENT_READ | DPS_RIGHT_REGISTRATION_READ},
	{"enrollmentwrite", DPS_RIGHT_ENROLLMENT_READ | DPS_RIGHT_ENROLLMENT_WRITE |
				    DPS_RIGHT_REGISTRATION_READ | DPS_RIGHT_REGISTRATION_WRITE},
};

/* ---- start-up: keys and id scope, one store job run synchronously ------ */

struct init_job {
	struct dps *d;
	const char *owner_key;
	const char *id_scope;
	bool done;
	int rc;
};

/* Azure id scopes look like "0ne00F1EE7": "0ne" and 8 hex digits. */
static void new_scope(char out[64])
{
	uint8_t r[4];
	crypto_random(r, sizeof r);
	snprintf(out, 12, "0ne%02X%02X%02X%02X", r[0], r[1], r[2], r[3]);
}

static int init_work(void *arg, struct store_txn *t)
{
	struct init_job *j = arg;
	struct dps *d = j->d;
	char key[512];
	snprintf(key, sizeof key, "dps/%s/id_scope", d->name);
	int rc = store_setting_load_or_make(t, key, j->id_scope, new_scope, d->id_scope,
					    sizeof d->id_scope);
	char prefix[300];
	snprintf(prefix, sizeof prefix, "dps/%s", d->name);
	if (rc == 0)
		rc = store_policy_keys(t, prefix, d->policies, DPS_NPOLICIES, j->owner_key);
	return rc;
}

static void init_done(void *arg, int rc)
{
	struct init_job *j = arg;
	j->rc = rc;
	j->done = true;
}

int dps_init(struct dps *d, const struct dps_config *cfg, struct store *store, uv_loop_t *loop,
	     size_t max_packet, char *err, size_t errlen)
{
	memset(d, 0, sizeof *d);
	snprintf(d->name, sizeof d->name, "%s", cfg->name);
	d->store = store;
	d->loop = loop;
	d->max_packet = max_packet;
	d->webhook_timeout_ms = cfg->webhook_timeout_ms ? cfg->webhook_timeout_ms : 5000;
	d->retry_after_s = cfg->retry_after_s ? cfg->retry_after_s : 1;
	d->webhook_attempts = cfg->webhook_attempts ? cfg->webhook_attempts : 10;
	d->webhook_retry_ms = cfg->webhook_retry_ms ? cfg->webhook_retry_ms : 1000;
	d->webhook_log_keep = cfg->webhook_log_keep ? cfg->webhook_log_keep : 20;
	d->webhook_log_age_ms =
	    (uint64_t)(cfg->webhook_log_max_age_h ? cfg->webhook_log_max_age_h : 168) * 3600000;
	d->max_assigning = cfg->max_assigning ? cfg->max_assigning : 10000;
	d->x509_depth = cfg->x509_max_intermediates;
	d->tpm_ttl_s = cfg->tpm_challenge_ttl_s ? cfg->tpm_challenge_ttl_s : 3600;
	snprintf(d->ca_scope, sizeof d->ca_scope, "dps:%s", d->name);
	snprintf(d->node, sizeof d->node, "%s", cfg->node ? cfg->node : "");
	d->shared = store_shared(store);
	d->lease_ms = clock_now_ms();
	ca_cache_init(&d->anchors);
	rate_table_init(&d->rate, &cfg->rate, cfg->rate_keys);
	rate_table_init(&d->attest_fail, &cfg->rate, cfg->rate_keys);
	uint32_t ar = cfg->attestation_rate ? cfg->attestation_rate : 50000;
	d->attest_lim = (struct rate_limit){ar, ar};
	d->attest_budget = (struct rate_bucket){1, (int64_t)ar * 1000, (int64_t)clock_now_ms()};
	map_init(&d->ops);
	map_init(&d->ops_by_reg);
	for (int i = 0; i < DPS_NPOLICIES; i++) {
		d->policies[i].name = policy_table[i].name;
		d->policies[i].rights = policy_table[i].rights;
	}
	struct init_job j = {.d = d, .owner_key = cfg->owner_key, .id_scope = cfg->id_scope};
	store_submit(store, init_work, init_done, &j);
	while (!j.done)
		uv_run(loop, UV_RUN_ONCE);
	if (j.rc != 0) {
		snprintf(err, errlen, "dps %s: cannot store its keys and id scope: %s", d->name,
			 fh_strerror(j.rc));
		return -1;
	}
	if (http_client_new(&d->http, loop, cfg->webhook_ca, err, errlen) != 0)
		return -1;
	dps__calls_start(d);
	dps__groups_load(d);
	while (d->groups_loading) /* before serving: attestation needs them */
		uv_run(loop, UV_RUN_ONCE);
	return 0;
}

/* ---- linked hubs ------------------------------------------------------------ */

static struct dps_linked_hub *link_new(struct dps *d, const char *name, unsigned weight)
{
	d->linked = xrealloc(d->linked, (d->nlinked + 1) * sizeof *d->linked);
	struct dps_linked_hub *l = &d->linked[d->nlinked++];
	memset(l, 0, sizeof *l);
	l->alloc.name = xstrdup(name);
	l->alloc.weight = weight ? weight : 1;
	l->alloc.apply_policy = true;
	return l;
}

void dps_link_local(struct dps *d, const char *hub_name, unsigned weight)
{
	link_new(d, hub_name, weight)->local = true;
}

/* Copies the value of field (e.g. "HostName=") out of a connection string. */
static char *cs_field(const char *cs, const char *field)
{
	size_t fl = strlen(field);
	for (const char *p = cs; p && *p;) {
		if (strncasecmp(p, field, fl) == 0)
			return xstrndup(p + fl, strcspn(p + fl, ";"));
		p = strchr(p, ';');
		if (p)
			p++;
	}
	return NULL;
}

int dps_link_remote(struct dps *d, const char *connection_string, unsigned weight, char *err,
		    size_t errlen)
{
	char *host = cs_field(connection_string, "HostName=");
	char *key_name = cs_field(connection_string, "SharedAccessKeyName=");
	char *key = cs_field(connection_string, "SharedAccessKey=");
	uint8_t raw[128];
	size_t n;
	if (!host || !*host || !key_name || !*key_name || !key || strlen(key) > 160 ||
	    b64_decode(key, strlen(key), raw, &n) != 0) {
		snprintf(err, errlen,
			 "dps %s: a linked hub connection string needs HostName, "
			 "SharedAccessKeyName and a base64 SharedAccessKey",
			 d->name);
		free(host);
		free(key_name);
		free(key);
		return -1;
	}
	for (char *p = host; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
	struct dps_linked_hub *l = link_new(d, host, weight);
	l->remote_key_name = key_name;
	l->remote_key = key;
	free(host);
	return 0;
}

int dps_set_remote_address(struct dps *d, const char *name, const char *address, char *err,
			   size_t errlen)
{
	struct dps_linked_hub *l = dps__linked_find(d, name);
	if (!l || l->local) {
		snprintf(err, errlen,
			 "dps %s: linked_hub_addresses: %s is not the HostName of a "
			 "linked_hub_connection_string",
			 d->name, name);
		return -1;
	}
	free(l->remote_address);
	l->remote_address = xstrdup(address);
	return 0;
}

void dps_add_alias(struct dps *d, const char *alias)
{
	for (size_t i = 0; i < d->naliases; i++)
		if (strcasecmp(d->aliases[i], alias) == 0)
			return;
	if (d->naliases < sizeof d->aliases / sizeof d->aliases[0])
		d->aliases[d->naliases++] = xstrdup(alias);
}

void dps_shutdown(struct dps *d)
{
	dps__ops_shutdown(d);
	dps__calls_stop(d);
	if (d->http)
		http_client_close(d->http);
	d->http = NULL;
}

void dps_free(struct dps *d)
{
	for (size_t i = 0; i < d->nlinked; i++) {
		free((char *)d->linked[i].alloc.name);
		free(d->linked[i].remote_key_name);
		free(d->linked[i].remote_key);
		free(d->linked[i].remote_address);
	}
	free(d->linked);
	d->linked = NULL;
	d->nlinked = 0;
	for (size_t i = 0; i < d->naliases; i++)
		free(d->aliases[i]);
	d->naliases = 0;
	map_free(&d->ops);
	map_free(&d->ops_by_reg);
	json_decref(d->groups);
	d->groups = NULL;
	rate_table_free(&d->rate);
	rate_table_free(&d->attest_fail);
	ca_cache_free(&d->anchors);
}

struct dps_linked_hub *dps__linked_find(struct dps *d, const char *name)
{
	for (size_t i = 0; name && i < d->nlinked; i++)
		if (strcasecmp(d->linked[i].alloc.name, name) == 0)
			return &d->linked[i];
	return NULL;
}

void dps__alloc_hubs(const struct dps *d, struct alloc_hub *out)
{
	for (size_t i = 0; i < d->nlinked; i++)
		out[i] = d->linked[i].alloc;
}

json_t *dps__public_state(const json_t *state)
{
	json_t *o = json_object();
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)state, k, v)
		if (k[0] != '_')
			json_object_set(o, k, v);
	return o;
}

char *dps__error_json(int code, const char *message)
{
	char uuid[37], now[32];
	crypto_uuid(uuid);
	clock_iso8601(clock_now_ms(), now);
	json_t *o = json_pack("{s:i,s:s,s:s,s:{},s:s}", "errorCode", code, "trackingId", uuid,
			      "message", message, "info", "timestampUtc", now);
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* ---- names ------------------------------------------------------------------ */

bool dps_name_matches(const struct dps *d, const char *host, size_t len)
{
	if (host_name_eq(d->name, host, len))
		return true;
	for (size_t i = 0; i < d->naliases; i++)
		if (host_name_eq(d->aliases[i], host, len))
			return true;
	return false;
}

void dps_connection_string(const struct dps *d, const struct sas_policy *p, struct buf *out)
{
	buf_printf(out, "HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", d->name, p->name,
		   p->primary);
}

bool dps_mqtt_username_matches(const struct dps *d, const char *username, size_t len)
{
	size_t sl = strlen(d->id_scope);
	static const char reg[] = "/registrations/";
	return len > sl + sizeof reg - 1 && strncasecmp(username, d->id_scope, sl) == 0 &&
	       memcmp(username + sl, reg, sizeof reg - 1) == 0;
}

/* ---- service SAS ---------------------------------------------------------------- */

int dps__auth_service(const struct dps *d, const char *header, int64_t now_s, unsigned *rights,
		      const char **why)
{
	struct sas_token t;
	if (sas_service_token(header, now_s, &t, why) != 0)
		return FH_EAUTH;
	if (!dps_name_matches(d, t.resource, strlen(t.resource))) {
		*why = "token is for another host";
		return FH_EAUTH;
	}
	const struct sas_policy *p = sas_policy_verify(&t, d->policies, DPS_NPOLICIES, why);
	if (!p)
		return FH_EAUTH;
	*rights = p->rights;
	return 0;
}

/* ---- device attestation (symmetric keys) ------------------------------------ */

void dps__auth_clear(struct dps_auth *a)
{
	json_decref(a->record);
	json_decref(a->x509);
	free(a->certificates);
	json_decref(a->tpm);
	memset(a, 0, sizeof *a);
}

/* True when the token is signed by record's key for regid; sets *which. */
static bool key_signed(const json_t *record, enum enrollment_kind kind, const char *regid,
		       const struct sas_token *t, int *which)
{
	for (int i = 0; i < 2; i++) {
		char key[96];
		if (enrollment_device_key(record, kind, regid, i, key) == 0 &&
		    sas_signature_ok_b64(t, key)) {
			*which = i;
			return true;
		}
	}
	return false;
}

void dps__group_changed(struct dps *d, const char *id, const json_t *record)
{
	d->groups_gen++;
	if (!d->groups)
		return;
	if (record)
		json_object_set_new(d->groups, id, json_deep_copy(record));
	else
		json_object_del(d->groups, id);
}

/* Every group, read on a worker (store_read_slow) in pages of 1,000 ids. */
struct group_load {
	struct dps *d;
	char scope[256];
	uint64_t gen; /* d->groups_gen when the read began */
	json_t *all;
	char last[ENROLLMENT_ID_MAX + 1];
	unsigned n;
};

static int add_group(void *arg, const char *id, const char *json)
{
	struct group_load *l = arg;
	json_t *rec = json_loads(json, 0, NULL);
	if (rec)
		json_object_set_new(l->all, id, rec);
	snprintf(l->last, sizeof l->last, "%s", id);
	l->n++;
	return 0;
}

static int groups_work(void *arg, struct store_txn *t)
{
	struct group_load *l = arg;
	int rc;
	do {
		l->n = 0;
		rc = store_doc_list(t, STORE_ENROLLMENT_GROUP, l->scope, "", l->last, 1000,
				    add_group, l);
	} while (rc == 0 && l->n == 1000);
	return rc;
}

static void groups_done(void *arg, int rc)
{
	struct group_load *l = arg;
	struct dps *d = l->d;
	d->groups_loading = false;
	if (rc == 0 && l->gen == d->groups_gen) {
		json_decref(d->groups);
		d->groups = l->all;
		l->all = NULL;
	} else if (rc == 0 && !d->stopping) {
		dps__groups_load(d); /* a group changed meanwhile: read them again */
	} else if (rc != 0) {
		log_at(LOG_WARN, "dps %s: enrollment groups cannot be read (%s); tried again at "
		       "the next registration", d->name, fh_strerror(rc));
	}
	json_decref(l->all);
	free(l);
}

void dps__groups_load(struct dps *d)
{
	if (d->groups_loading)
		return;
	struct group_load *l = xcalloc(1, sizeof *l);
	l->d = d;
	snprintf(l->scope, sizeof l->scope, "%s", d->name);
	l->gen = d->groups_gen;
	l->all = json_object();
	d->groups_loading = true;
	store_read_slow(d->store, groups_work, groups_done, l);
}

void dps_cluster_message(struct dps *d, const struct cluster_msg *m)
{
	if (strcmp(m->scope, d->name) != 0)
		return;
	if (m->kind == CLUSTER_GROUP) {
		d->groups_gen++; /* a read under way may predate it: it reads again */
		dps__groups_load(d);
	} else if (m->kind == CLUSTER_ENROLLMENT) {
		dps__enrollment_changed(d, m->change == ENROLLMENT_GROUP ? ENROLLMENT_GROUP
									: ENROLLMENT_INDIVIDUAL,
					m->id, NULL);
	}
}

json_t *dps__groups(struct dps *d)
{
	if (!d->groups)
		dps__groups_load(d); /* only after a failed read */
	return d->groups;
}

int dps__attest_failed(struct dps *d, const char *regid, int64_t now_ms)
{
	rate_table_take(&d->attest_fail, regid, strlen(regid), now_ms);
	return FH_EAUTH;
}

/* ---- what attestation reads ------------------------------------------------ */

json_t *dps__doc_get(struct store_txn *t, enum store_doc_kind k, const char *scope,
		     const char *id, int *rc)
{
	char *text = NULL;
	*rc = store_doc_get(t, k, scope, id, &text);
	json_t *o = *rc == 0 ? json_loads(text, 0, NULL) : NULL;
	if (text)
		OPENSSL_cleanse(text, strlen(text));
	free(text);
	if (*rc == 0 && !o)
		*rc = FH_EIO;
	return o;
}

static void add_ca(struct store_txn *t, const char *ca_scope, const char *name, json_t *cas)
{
	int rc;
	if (!name || json_object_get(cas, name))
		return;
	json_t *rec = dps__doc_get(t, STORE_CA_CERT, ca_scope, name, &rc);
	if (rec)
		json_object_set_new(cas, name, rec);
}

static void add_refs(struct store_txn *t, const char *ca_scope, const json_t *rec, json_t *cas)
{
	json_t *refs = json_object_get(
		json_object_get(json_object_get(rec, "attestation"), "x509"), "caReferences");
	add_ca(t, ca_scope, json_string_value(json_object_get(refs, "primary")), cas);
	add_ca(t, ca_scope, json_string_value(json_object_get(refs, "secondary")), cas);
}

void dps__prefetch_init(struct dps *d, const char *regid, bool x509, struct dps_prefetch *pf)
{
	memset(pf, 0, sizeof *pf);
	snprintf(pf->scope, sizeof pf->scope, "%s", d->name);
	snprintf(pf->ca_scope, sizeof pf->ca_scope, "%s", d->ca_scope);
	snprintf(pf->regid, sizeof pf->regid, "%s", regid);
	if (!x509)
		return;
	pf->cas = json_object();
	/* The CAs the x509 groups reference: named here, where the groups
	 * are, and read with the rest. */
	pf->group_refs = json_array();
	json_t *all = d->groups, *rec;
	const char *id;
	json_object_foreach(all, id, rec) {
		json_t *refs = json_object_get(
			json_object_get(json_object_get(rec, "attestation"), "x509"), "caReferences");
		for (int i = 0; i < 2; i++) {
			json_t *n = json_object_get(refs, i ? "secondary" : "primary");
			if (json_is_string(n))
				json_array_append(pf->group_refs, n);
		}
	}
}

int dps__prefetch(void *arg, struct store_txn *t)
{
	struct dps_prefetch *pf = arg;
	pf->rec = dps__doc_get(t, STORE_ENROLLMENT, pf->scope, pf->regid, &pf->rc);
	if (pf->rc != 0 && pf->rc != FH_ENOTFOUND)
		return pf->rc;
	if (pf->rec && strcmp(enrollment_attestation_type(pf->rec), "tpm") == 0)
		pf->challenge = dps__doc_get(t, STORE_TPM_CHALLENGE, pf->scope, pf->regid,
					&pf->challenge_rc);
	if (pf->cas) {
		if (pf->rec)
			add_refs(t, pf->ca_scope, pf->rec, pf->cas);
		size_t i;
		json_t *n;
		json_array_foreach(pf->group_refs, i, n)
			add_ca(t, pf->ca_scope, json_string_value(n), pf->cas);
	}
	return 0;
}

void dps__prefetch_clear(struct dps_prefetch *pf)
{
	json_decref(pf->rec);
	json_decref(pf->challenge);
	json_decref(pf->cas);
	json_decref(pf->group_refs);
	pf->rec = pf->challenge = pf->cas = pf->group_refs = NULL;
}

/* ---- device attestation (SAS tokens) -------------------------------------- */

int dps__sas_precheck(struct dps *d, const char *regid, const char *token, size_t n,
		      int64_t now_s, struct sas_token *t, const char **why, unsigned *retry_after)
{
	*retry_after = 0;
	if (sas_parse(token, n, t, why) != 0)
		return FH_EAUTH;
	if (sas_check_expiry(t, now_s) != 0) {
		*why = "token expired";
		return FH_EAUTH;
	}
	size_t sl = strlen(d->id_scope);
	if (strncasecmp(t->resource, d->id_scope, sl) != 0 ||
	    strncasecmp(t->resource + sl, "/registrations/", 15) != 0 ||
	    strcasecmp(t->resource + sl + 15, regid) != 0) {
		*why = "token resource is not <idScope>/registrations/<registrationId>";
		return FH_EAUTH;
	}
	/* A registration id whose recent attempts failed too often is not
	 * looked at (its failures, not its successes, spend this rate). */
	unsigned wait = rate_table_wait(&d->attest_fail, regid, strlen(regid), clock_now_ms());
	if (wait) {
		*why = "too many failed attempts for this registration id";
		*retry_after = wait;
		return FH_EAGAIN;
	}
	return 0;
}

int dps__authenticate(struct dps *d, const char *regid, const char *token, size_t n,
		      int64_t now_s, const struct dps_prefetch *pf, struct dps_auth *out,
		      const char **why, unsigned *retry_after)
{
	struct sas_token t;
	memset(out, 0, sizeof *out);
	int rc = dps__sas_precheck(d, regid, token, n, now_s, &t, why, retry_after);
	if (rc != 0)
		return rc;
	int64_t now_ms = clock_now_ms();
	if (pf->rc == 0) {
		/* An individual enrollment takes precedence over any group. */
		json_t *rec = pf->rec;
		int which = 0;
		if (strcmp(enrollment_attestation_type(rec), "tpm") == 0) {
			rc = dps__tpm_authenticate(d, rec, pf, &t, now_s, &out->tpm, why);
			if (rc != 0)
				return rc == FH_EAUTH ? dps__attest_failed(d, regid, now_ms) : rc;
		} else if (!key_signed(rec, ENROLLMENT_INDIVIDUAL, regid, &t, &which)) {
			*why = "signature does not match the individual enrollment's keys";
			return dps__attest_failed(d, regid, now_ms);
		}
		out->record = json_incref(rec);
		out->kind = ENROLLMENT_INDIVIDUAL;
		snprintf(out->enrollment_id, sizeof out->enrollment_id, "%s", regid);
		out->key_index = which;
		return 0;
	}
	if (pf->rc != FH_ENOTFOUND)
		return FH_EIO;
	json_t *all = dps__groups(d);
	if (!all)
		return FH_EIO;
	/* Trying every group costs up to 4 HMACs each (two keys, each derived
	 * and then checked): all registrations together get attestation_rate
	 * of them per second, so a flood of invented ids cannot take the loop. */
	size_t cost = 4 * json_object_size(all);
	unsigned wait = rate_bucket_take_n(&d->attest_budget, &d->attest_lim,
					   cost > UINT32_MAX ? UINT32_MAX : (uint32_t)cost, now_ms);
	if (wait) {
		*why = "the service is checking as many enrollment group keys as it may";
		*retry_after = wait;
		return FH_EAGAIN;
	}
	const char *id;
	json_t *rec;
	json_object_foreach(all, id, rec) {
		int which;
		if (key_signed(rec, ENROLLMENT_GROUP, regid, &t, &which)) {
			/* A copy: the operation keeps it while the cache moves on. */
			out->record = json_deep_copy(rec);
			out->kind = ENROLLMENT_GROUP;
			snprintf(out->enrollment_id, sizeof out->enrollment_id, "%s", id);
			out->key_index = which;
			return 0;
		}
	}
	*why = "no enrollment matches: no individual enrollment for this registration id "
	       "and no group key derives the signing key";
	return dps__attest_failed(d, regid, now_ms);
}
