/* Shared access signature tokens:
 *   SharedAccessSignature sr=<resource>&sig=<pct(base64 hmac)>&se=<expiry>[&skn=<name>]
 * Fields come in any order (SDKs differ). The signature is HMAC-SHA256 with
 * the base64-decoded key over the raw sr text exactly as it appears in the
 * token, "\n", and the raw se text. Pure; no clock: callers pass "now". */
#ifndef FH_CODEC_SAS_H
#define FH_CODEC_SAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define SAS_MAX_TOKEN 4096
#define SAS_MAX_RESOURCE 1024
#define SAS_MAX_KEYNAME 128

struct sas_token {
	const char *sr_raw; /* borrowed from the token text */
	size_t sr_raw_len;
	const char *se_raw;
	size_t se_raw_len;
	char resource[SAS_MAX_RESOURCE + 1]; /* sr percent-decoded */
	uint8_t sig[32];                     /* decoded signature */
	int64_t expiry;                      /* se, seconds since the epoch */
	bool has_key_name;
	char key_name[SAS_MAX_KEYNAME + 1]; /* skn percent-decoded, "" when absent */
};

/* Parses tok[0..n). Returns 0, or FH_EINVAL with a reason in *why (static
 * text) for: a missing "SharedAccessSignature " prefix, a missing or
 * duplicated sr/sig/se, an unknown field, se not a decimal integer,
 * sig not base64 of 32 bytes, a bad percent escape, over-long fields. */
int sas_parse(const char *tok, size_t n, struct sas_token *out, const char **why);

/* 1 when the signature matches the key (raw bytes), compared in constant
 * time; 0 otherwise. */
int sas_signature_ok(const struct sas_token *t, const uint8_t *key, size_t key_len);

/* As sas_signature_ok with the key as base64 text (a policy or device key
 * as stored); 0 for a NULL, empty, over-long or invalid key. */
int sas_signature_ok_b64(const struct sas_token *t, const char *key_b64);

/* Checks expiry: 0 when now_s < expiry, FH_EAUTH when expired. */
int sas_check_expiry(const struct sas_token *t, int64_t now_s);

/* Builds a token for resource sr_raw (used verbatim), signed with the base64
 * key_b64, with an optional key name. Returns 0 or FH_EINVAL (bad key). */
int sas_build(struct buf *out, const char *sr_raw, const char *key_b64, const char *key_name,
	      int64_t expiry);

/* A shared access policy of a hub or the DPS: its key name, the rights
 * it grants (bits the owner defines) and its two base64 keys. */
struct sas_policy {
	const char *name;
	unsigned rights;
	char primary[64];
	char secondary[64];
};

/* The checks every service token gets: an Authorization header is present,
 * parses and has not expired. Fills *t. Returns 0 or FH_EAUTH with *why. */
int sas_service_token(const char *header, int64_t now_s, struct sas_token *t, const char **why);

/* The policy among policies[0..n) named by t's skn whose primary or
 * secondary key signed t, or NULL with *why. */
const struct sas_policy *sas_policy_verify(const struct sas_token *t,
					   const struct sas_policy *policies, size_t n,
					   const char **why);

/* Derives a group member's key: base64(HMAC-SHA256(b64dec(group_key),
 * registration_id)). out gets 44 chars + NUL. Returns 0 or FH_EINVAL. */
int sas_derive_key(const char *group_key_b64, const char *registration_id, char out[45]);

#endif
