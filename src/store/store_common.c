/* Store helpers written once for every backend: they use only the domain
 * operations of store.h. */
#include <stdio.h>
#include <stdlib.h>

#include "base/crypto.h"
#include "base/err.h"
#include "store/store.h"

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
	char fresh[64];
	make(fresh);
	snprintf(out, outlen, "%s", fresh);
	return store_setting_put(t, key, fresh);
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
