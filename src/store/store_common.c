/* Store helpers written once for every backend: they use only the domain
 * operations of store.h. */
#include <stdio.h>
#include <stdlib.h>

#include "base/crypto.h"
#include "base/err.h"
#include "core/cluster.h"
#include "store/backend.h"

int store_setting_load_or_make(struct store_txn *t, const char *key, const char *given,
			       void (*make)(char out[64]), char *out, size_t outlen)
{
	if (given) {
		snprintf(out, outlen, "%s", given);
		return store_setting_put(t, key, given);
	}
	char *v = NULL;
	int rc = store_setting_get(t, key, &v);
	if (rc == 0) {
		snprintf(out, outlen, "%s", v);
		free(v);
		return 0;
	}
	if (rc != FH_ENOTFOUND)
		return rc;
	/* Several nodes may start at once on an empty database: the first
	 * value committed wins, and the others read it. */
	char fresh[64];
	make(fresh);
	rc = store_setting_add(t, key, fresh);
	if (rc == FH_EEXIST) {
		rc = store_setting_get(t, key, &v);
		if (rc == 0) {
			snprintf(out, outlen, "%s", v);
			free(v);
		}
		return rc;
	}
	snprintf(out, outlen, "%s", fresh);
	return rc;
}

static void new_key(char out[64])
{
	crypto_new_key_b64(out);
}

int store_policy_keys(struct store_txn *t, const char *prefix, struct sas_policy *p, size_t n,
		      const char *owner_key)
{
	char key[512];
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		snprintf(key, sizeof key, "%s/policy/%s/primary", prefix, p[i].name);
		rc = store_setting_load_or_make(t, key, i == 0 ? owner_key : NULL, new_key,
						p[i].primary, sizeof p[i].primary);
		if (rc == 0) {
			snprintf(key, sizeof key, "%s/policy/%s/secondary", prefix, p[i].name);
			rc = store_setting_load_or_make(t, key, NULL, new_key, p[i].secondary,
							sizeof p[i].secondary);
		}
	}
	return rc;
}

int store_post(struct store_txn *t, struct cluster_msg *m)
{
	if (!t->ops->notify)
		return 0; /* one node: nothing to encode */
	snprintf(m->node, sizeof m->node, "%s", t->node ? t->node : "");
	char *text = cluster_encode(m);
	int rc = store_notify(t, text);
	free(text);
	return rc;
}
