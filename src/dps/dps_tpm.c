/* TPM attestation at the DPS (../shared/tpm.md §1): HTTPS only.
 *
 *   PUT register, no Authorization, body "tpm": {EK, SRK}
 *       --> the individual enrollment of the registration id is a TPM one
 *           and holds this EK (and this SRK, when it names one)
 *       --> a fresh 32-byte registration key K, stored as the id's
 *           challenge (one per id, replacing the last; it expires)
 *       --> 401 {"message", "authenticationKey": blob(K for EK, SRK),
 *                "keyName": "registration"}
 *   PUT register / GET operation with a SAS (skn=registration) signed by
 *   the TPM with K --> the registration goes on as for symmetric keys
 *   (dps__authenticate calls dps__tpm_authenticate for TPM enrollments).
 *   On "assigned", registrationState.tpm.authenticationKey is a second blob
 *   for the same TPM delivering the device's hub key, which its identity
 *   uses as its SAS key; the key is kept in the registration state
 *   (private), so a later registration wraps the same key again.
 *
 * A refused challenge never carries an authenticationKey (a C client would
 * take it for a new challenge). The RSA work of a challenge comes after the
 * cheap refusals: the id's failure rate, its request rate, and a share of
 * the DPS's attestation budget. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "core/tpm.h"
#include "internal.h"

#define CHALLENGE_COST 50 /* attestation budget units (one is an HMAC): two RSA public operations */
#define HUB_KEY_LEN 32

static void rnd(void *ctx, uint8_t *out, size_t n)
{
	crypto_random(out, n);
}

/* The public area in base64 text b64 (may be NULL), parsed. */
static int parse_b64(const char *b64, struct tpm_rsa_public *out, const char **why)
{
	uint8_t raw[TPM_PUBLIC_MAX + 3];
	size_t n = b64 ? strlen(b64) : 0, len;
	if (!b64 || n > B64_ENCODED_LEN(TPM_PUBLIC_MAX) || b64_decode(b64, n, raw, &len) != 0) {
		*why = "it is not base64 of at most 1024 bytes";
		return -1;
	}
	return tpm_parse_public(raw, len, out, why);
}

static const char *member(const json_t *o, const char *name)
{
	return json_string_value(json_object_get(o, name));
}

int dps__tpm_blob(const json_t *tpm, const uint8_t *key, size_t keylen, char **b64_out,
                  const char **why)
{
	struct tpm_rsa_public ek, srk;
	uint8_t blob[TPM_BLOB_MAX];
	if (parse_b64(member(tpm, "endorsementKey"), &ek, why) != 0 ||
	    parse_b64(member(tpm, "storageRootKey"), &srk, why) != 0)
		return FH_EINVAL;
	int n = tpm_build_blob(&ek, &srk, key, keylen, rnd, NULL, blob, sizeof blob);
	if (n < 0) {
		*why = "the authenticationKey cannot be built for these keys";
		return FH_EINVAL;
	}
	*b64_out = xmalloc(B64_ENCODED_LEN((size_t)n) + 1);
	b64_encode(blob, (size_t)n, *b64_out);
	return 0;
}

/* ---- the challenge ---------------------------------------------------------- */

struct challenge_job {
	struct dps *d;
	struct dps_reply *r;
	char regid[ENROLLMENT_ID_MAX + 1];
	char *doc;  /* the challenge record */
	char *blob; /* its authenticationKey, base64 */
};

static int challenge_work(void *arg, struct store_txn *t)
{
	struct challenge_job *j = arg;
	return store_doc_put(t, STORE_TPM_CHALLENGE, j->d->name, j->regid, j->doc);
}

static void challenge_done(void *arg, int rc)
{
	struct challenge_job *j = arg;
	char *json;
	int status = 401;
	if (rc != 0) {
		json = dps__error_json(503000, store_write_error(rc));
		status = 503;
	} else {
		/* No "status": the C SDK would not read it as a challenge. */
		json_t *o = json_pack("{s:s,s:s,s:s}", "message",
		                      "Activate the authenticationKey with your TPM and sign the "
		                      "registration with it (SharedAccessSignature, skn=registration)",
		                      "authenticationKey", j->blob, "keyName", "registration");
		json = json_dumps(o, JSON_COMPACT);
		json_decref(o);
	}
	j->r->fn(j->r, status, json, 0);
	free(json);
	OPENSSL_cleanse(j->doc, strlen(j->doc));
	free(j->doc);
	free(j->blob);
	free(j);
}

static void refuse(struct dps *d, struct dps_reply *r, int status, int code, const char *regid,
                   const char *peer, const char *why)
{
	log_at(LOG_INFO, "dps %s: https %s: TPM challenge for %s refused: %s", d->name, peer, regid,
	       why);
	char msg[300];
	snprintf(msg, sizeof msg, "%s: %s", status == 400 ? "Bad request" : "Unauthorized", why);
	char *json = dps__error_json(code, msg);
	r->fn(r, status, json, 0);
	free(json);
}

struct challenge_read {
	struct dps *d;
	struct dps_reply *r;
	char scope[256];
	char regid[ENROLLMENT_ID_MAX + 1];
	char peer[96];
	json_t *tpm;
	json_t *rec;
};

static int challenge_read_work(void *arg, struct store_txn *t)
{
	struct challenge_read *q = arg;
	int rc;
	q->rec = dps__doc_get(t, STORE_ENROLLMENT, q->scope, q->regid, &rc);
	return rc;
}

/* The enrollment is read: the keys the device sent are checked against it,
 * and a new challenge is stored. */
static void challenge_read_done(void *arg, int rc)
{
	struct challenge_read *q = arg;
	struct dps *d = q->d;
	struct dps_reply *r = q->r;
	const char *regid = q->regid, *peer = q->peer;
	const json_t *tpm = q->tpm, *rec = q->rec;
	int64_t now_ms = clock_now_ms();
	const char *why = NULL;
	struct tpm_rsa_public ek, srk, want;
	json_t *att = json_object_get(json_object_get(rec, "attestation"), "tpm");
	if (rc != 0 && rc != FH_ENOTFOUND) {
		char *json = dps__error_json(503000, "the service cannot read its store; try again");
		r->fn(r, 503, json, 0);
		free(json);
	} else if (!rec || strcmp(enrollment_attestation_type(rec), "tpm") != 0) {
		dps__attest_failed(d, regid, now_ms);
		refuse(d, r, 401, 401002, regid, peer,
		       "no individual enrollment with TPM attestation for this registration id");
	} else if (parse_b64(member(tpm, "endorsementKey"), &ek, &why) != 0) {
		refuse(d, r, 400, 400004, regid, peer, "tpm.endorsementKey is not usable");
	} else if (!member(tpm, "storageRootKey")) {
		refuse(d, r, 400, 400004, regid, peer, "tpm.storageRootKey is required");
	} else if (parse_b64(member(tpm, "storageRootKey"), &srk, &why) != 0) {
		refuse(d, r, 400, 400004, regid, peer, "tpm.storageRootKey is not usable");
	} else if (parse_b64(member(att, "endorsementKey"), &want, &why) != 0 ||
	           !tpm_same_key(&ek, &want)) {
		dps__attest_failed(d, regid, now_ms);
		refuse(d, r, 401, 401002, regid, peer,
		       "the endorsement key is not the enrollment's");
	} else if (member(att, "storageRootKey") &&
	           (parse_b64(member(att, "storageRootKey"), &want, &why) != 0 ||
	            !tpm_same_key(&srk, &want))) {
		dps__attest_failed(d, regid, now_ms);
		refuse(d, r, 401, 401002, regid, peer,
		       "the storage root key is not the enrollment's");
	} else {
		uint8_t key[32];
		char key_b64[B64_ENCODED_LEN(sizeof key) + 1];
		crypto_random(key, sizeof key);
		b64_encode(key, sizeof key, key_b64);
		struct challenge_job *j = xcalloc(1, sizeof *j);
		if (dps__tpm_blob(tpm, key, sizeof key, &j->blob, &why) != 0) {
			free(j);
			refuse(d, r, 400, 400004, regid, peer, why);
		} else {
			j->d = d;
			j->r = r;
			snprintf(j->regid, sizeof j->regid, "%s", regid);
			json_t *doc = json_pack("{s:s,s:O,s:O,s:I}", "key", key_b64, "endorsementKey",
			                        json_object_get(tpm, "endorsementKey"),
			                        "storageRootKey", json_object_get(tpm, "storageRootKey"),
			                        "expires", (json_int_t)(now_ms / 1000 + d->tpm_ttl_s));
			j->doc = json_dumps(doc, JSON_COMPACT);
			json_decref(doc);
			store_submit(d->store, challenge_work, challenge_done, j);
		}
		OPENSSL_cleanse(key, sizeof key);
		OPENSSL_cleanse(key_b64, sizeof key_b64);
	}
	json_decref(q->rec);
	json_decref(q->tpm);
	free(q);
}

void dps__tpm_challenge(struct dps *d, const char *regid, const json_t *tpm, const char *peer,
                        struct dps_reply *r)
{
	int64_t now_ms = clock_now_ms();
	unsigned wait = rate_table_wait(&d->attest_fail, regid, strlen(regid), now_ms);
	if (!wait)
		wait = rate_table_take(&d->rate, regid, strlen(regid), now_ms);
	if (!wait)
		wait = rate_bucket_take_n(&d->attest_budget, &d->attest_lim, CHALLENGE_COST, now_ms);
	if (wait) {
		char *json = dps__error_json(429001, "too many TPM challenges; retry later");
		r->fn(r, 429, json, wait);
		free(json);
		return;
	}
	struct challenge_read *q = xcalloc(1, sizeof *q);
	q->d = d;
	q->r = r;
	snprintf(q->scope, sizeof q->scope, "%s", d->name);
	snprintf(q->regid, sizeof q->regid, "%s", regid);
	snprintf(q->peer, sizeof q->peer, "%s", peer);
	q->tpm = json_deep_copy(tpm);
	store_read(d->store, challenge_read_work, challenge_read_done, q);
}

/* ---- the signed requests ------------------------------------------------------ */

int dps__tpm_authenticate(struct dps *d, const json_t *rec, const struct dps_prefetch *pf,
                          const struct sas_token *t, int64_t now_s, json_t **tpm_out,
                          const char **why)
{
	if (pf->challenge_rc == FH_ENOTFOUND) {
		*why = "no TPM challenge was given to this registration id (send the first PUT "
		       "without Authorization)";
		return FH_EAUTH;
	}
	const json_t *c = pf->challenge;
	if (pf->challenge_rc != 0 || !c)
		return FH_EIO;
	int rc;
	json_t *att = json_object_get(json_object_get(rec, "attestation"), "tpm");
	uint8_t key[64];
	size_t keylen = 0;
	const char *k = member(c, "key");
	struct tpm_rsa_public ek, want;
	const char *pwhy;
	rc = FH_EAUTH;
	if (json_integer_value(json_object_get(c, "expires")) <= now_s) {
		*why = "the TPM challenge has expired: register again";
	} else if (parse_b64(member(c, "endorsementKey"), &ek, &pwhy) != 0 ||
	           parse_b64(member(att, "endorsementKey"), &want, &pwhy) != 0 ||
	           !tpm_same_key(&ek, &want)) {
		*why = "the enrollment's endorsement key changed since the TPM challenge";
	} else if (!k || strlen(k) > B64_ENCODED_LEN(sizeof key) ||
	           b64_decode(k, strlen(k), key, &keylen) != 0) {
		*why = "the stored TPM challenge is unusable";
	} else if (!sas_signature_ok(t, key, keylen)) {
		*why = "the SAS token is not signed with the key of this registration's TPM "
		       "challenge";
	} else {
		*tpm_out = json_pack("{s:O,s:O}", "endorsementKey",
		                     json_object_get(c, "endorsementKey"), "storageRootKey",
		                     json_object_get(c, "storageRootKey"));
		rc = 0;
	}
	OPENSSL_cleanse(key, sizeof key);
	return rc;
}

/* ---- the hub key ---------------------------------------------------------------- */

int dps__tpm_hub_key(const json_t *prev_state, uint8_t key[32])
{
	const char *k = member(prev_state, "_tpmHubKey");
	size_t len = 0;
	uint8_t raw[48];
	if (k && strlen(k) == B64_ENCODED_LEN(HUB_KEY_LEN) &&
	    b64_decode(k, strlen(k), raw, &len) == 0 && len == HUB_KEY_LEN) {
		memcpy(key, raw, HUB_KEY_LEN);
		OPENSSL_cleanse(raw, sizeof raw);
		return 0;
	}
	crypto_random(key, HUB_KEY_LEN);
	return 1;
}
