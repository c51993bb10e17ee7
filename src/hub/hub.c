/* Hub virtual host: names, aliases, policies and their keys. The session
 * and REST halves live in mqtt_session.c and rest.c. */
#include "hub.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/clock.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/host.h"
#include "base/mem.h"

static const struct {
	const char *name;
	unsigned rights;
} policy_table[HUB_NPOLICIES] = {
	{"iothubowner", HUB_RIGHT_REGISTRY_READ | HUB_RIGHT_REGISTRY_WRITE |
				HUB_RIGHT_SERVICE_CONNECT | HUB_RIGHT_DEVICE_CONNECT},
	{"service", HUB_RIGHT_SERVICE_CONNECT},
	{"device", HUB_RIGHT_DEVICE_CONNECT},
	{"registryRead", HUB_RIGHT_REGISTRY_READ},
	{"registryReadWrite", HUB_RIGHT_REGISTRY_READ | HUB_RIGHT_REGISTRY_WRITE},
};

/* Start-up: the hub's keys loaded (or made), and the connection rows a
 * crash left "connected" cleared; one store job per hub, run
 * synchronously, before any device can connect. */
struct keys_job {
	struct hub *h;
	const char *owner_key;
	int done;
	int rc;
};

static int keys_work(void *arg, struct store_txn *t)
{
	struct keys_job *j = arg;
	char prefix[300];
	snprintf(prefix, sizeof prefix, "hub/%s", j->h->name);
	int rc = store_policy_keys(t, prefix, j->h->policies, HUB_NPOLICIES, j->owner_key);
	return rc ? rc : store_connections_reset(t, j->h->name, clock_now_ms());
}

static void keys_done(void *arg, int rc)
{
	struct keys_job *j = arg;
	j->rc = rc;
	j->done = 1;
}

int hub_init(struct hub *h, const char *name, const char *owner_key, struct store *store,
	     uv_loop_t *loop, size_t max_packet, char *err, size_t errlen)
{
	memset(h, 0, sizeof *h);
	snprintf(h->name, sizeof h->name, "%s", name);
	h->store = store;
	h->loop = loop;
	hub_methods_init(h);
	h->events.partitions = 1; /* hub_events_start sets the configured count */
	h->limits = twin_limits_default;
	h->max_packet = max_packet;
	h->max_inflight = 64;
	h->x509_depth = 8;
	ca_cache_init(&h->cas);
	sessions_init(&h->sessions);
	for (int i = 0; i < HUB_NPOLICIES; i++) {
		h->policies[i].name = policy_table[i].name;
		h->policies[i].rights = policy_table[i].rights;
	}
	struct keys_job j = {.h = h, .owner_key = owner_key};
	store_submit(store, keys_work, keys_done, &j);
	while (!j.done)
		uv_run(loop, UV_RUN_ONCE);
	if (j.rc) {
		snprintf(err, errlen, "hub %s: cannot store its keys: %s", name, fh_strerror(j.rc));
		return -1;
	}
	return 0;
}

void hub_add_alias(struct hub *h, const char *alias)
{
	for (size_t i = 0; i < h->naliases; i++)
		if (strcasecmp(h->aliases[i], alias) == 0)
			return;
	if (h->naliases < HUB_MAX_ALIASES)
		h->aliases[h->naliases++] = xstrdup(alias);
}

void hub_set_limits(struct hub *h, unsigned max_inflight, const struct rate_limit *rate,
		    size_t devices, unsigned x509_max_intermediates)
{
	h->max_inflight = max_inflight;
	h->x509_depth = x509_max_intermediates;
	rate_table_free(&h->rate);
	rate_table_init(&h->rate, rate, devices);
}

void hub_shutdown(struct hub *h)
{
	hub_events_stop(h);
	hub_methods_stop(h);
	sessions_close_all(h, "server shutting down");
}

void hub_free(struct hub *h)
{
	sessions_free(&h->sessions);
	map_free(&h->methods.by_rid);
	for (size_t i = 0; i < h->naliases; i++)
		free(h->aliases[i]);
	h->naliases = 0;
	rate_table_free(&h->rate);
	ca_cache_free(&h->cas);
}

bool hub_name_matches(const struct hub *h, const char *host, size_t len)
{
	if (host_name_eq(h->name, host, len))
		return true;
	for (size_t i = 0; i < h->naliases; i++)
		if (host_name_eq(h->aliases[i], host, len))
			return true;
	return false;
}

struct hub *hub_set_find(const struct hub_set *set, const char *host, size_t len)
{
	for (size_t i = 0; i < set->n; i++)
		if (host_name_eq(set->v[i]->name, host, len))
			return set->v[i];
	for (size_t i = 0; i < set->n; i++)
		if (hub_name_matches(set->v[i], host, len))
			return set->v[i];
	return NULL;
}

const struct sas_policy *hub_policy_find(const struct hub *h, const char *name)
{
	for (int i = 0; i < HUB_NPOLICIES; i++)
		if (strcmp(h->policies[i].name, name) == 0)
			return &h->policies[i];
	return NULL;
}

void hub_connection_string(const struct hub *h, const struct sas_policy *p, struct buf *out)
{
	buf_printf(out, "HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", h->name, p->name,
		   p->primary);
}
