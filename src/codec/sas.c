/* Shared access signature tokens: parsing, verification, building and the
 * enrollment-group key derivation (protocol.md §1).
 *
 * Invariants: sas_parse never reads outside tok[0..n) and never allocates;
 * after a successful parse sr_raw/se_raw point into tok (still
 * percent-encoded, used verbatim for the HMAC), resource and key_name are
 * NUL-terminated decoded copies within their limits, sig holds exactly 32
 * bytes and expiry is a non-negative integer. Every failure is FH_EINVAL
 * with a static reason. No clock is read here. */
#include "codec/sas.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/mem.h"

#define SAS_PREFIX "SharedAccessSignature "
#define SAS_PREFIX_LEN (sizeof SAS_PREFIX - 1)
/* Longest base64 key text accepted by sas_build / sas_derive_key. */
#define SAS_MAX_KEY_B64 256
/* se digits: 18 decimal digits always fit in int64_t. */
#define SAS_MAX_SE_DIGITS 18

static int fail(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return FH_EINVAL;
}

static bool name_is(const char *p, size_t n, const char *name)
{
	return strlen(name) == n && memcmp(p, name, n) == 0;
}

static int parse_se(const char *p, size_t n, int64_t *out)
{
	if (n == 0 || n > SAS_MAX_SE_DIGITS)
		return FH_EINVAL;
	int64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return FH_EINVAL;
		v = v * 10 + (p[i] - '0');
	}
	*out = v;
	return 0;
}

static int parse_sig(const char *p, size_t n, uint8_t sig[32])
{
	/* Base64 of 32 bytes is 44 characters; each may be escaped as %XX. */
	char text[44 * 3 + 1];
	size_t len;
	if (n == 0 || n > 44 * 3)
		return FH_EINVAL;
	if (pct_decode(p, n, text, &len) != 0 || len != 44)
		return FH_EINVAL;
	uint8_t raw[B64_DECODED_MAX(44)];
	size_t got;
	if (b64_decode(text, len, raw, &got) != 0 || got != 32)
		return FH_EINVAL;
	memcpy(sig, raw, 32);
	return 0;
}

int sas_parse(const char *tok, size_t n, struct sas_token *out, const char **why)
{
	memset(out, 0, sizeof *out);
	if (why)
		*why = NULL;
	if (!tok)
		return fail(why, "missing token");
	if (n > SAS_MAX_TOKEN)
		return fail(why, "token too long");
	if (n < SAS_PREFIX_LEN || memcmp(tok, SAS_PREFIX, SAS_PREFIX_LEN) != 0)
		return fail(why, "missing SharedAccessSignature prefix");

	bool have_sr = false, have_sig = false, have_se = false, have_skn = false;
	const char *p = tok + SAS_PREFIX_LEN;
	const char *end = tok + n;
	/* Decoding buffer for sr and skn: decoded text is never longer. */
	char tmp[SAS_MAX_TOKEN + 1];

	for (;;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *fend = amp ? amp : end;
		size_t flen = (size_t)(fend - p);
		const char *eq = memchr(p, '=', flen);
		if (!eq || eq == p)
			return fail(why, "malformed field");
		size_t nlen = (size_t)(eq - p);
		const char *v = eq + 1;
		size_t vlen = (size_t)(fend - v);
		size_t dlen;

		if (name_is(p, nlen, "sr")) {
			if (have_sr)
				return fail(why, "duplicate sr");
			have_sr = true;
			if (vlen == 0)
				return fail(why, "empty sr");
			if (pct_decode(v, vlen, tmp, &dlen) != 0)
				return fail(why, "bad percent escape in sr");
			if (dlen > SAS_MAX_RESOURCE)
				return fail(why, "sr too long");
			memcpy(out->resource, tmp, dlen + 1);
			out->sr_raw = v;
			out->sr_raw_len = vlen;
		} else if (name_is(p, nlen, "sig")) {
			if (have_sig)
				return fail(why, "duplicate sig");
			have_sig = true;
			if (parse_sig(v, vlen, out->sig) != 0)
				return fail(why, "sig is not base64 of 32 bytes");
		} else if (name_is(p, nlen, "se")) {
			if (have_se)
				return fail(why, "duplicate se");
			have_se = true;
			if (parse_se(v, vlen, &out->expiry) != 0)
				return fail(why, "se is not a decimal integer");
			out->se_raw = v;
			out->se_raw_len = vlen;
		} else if (name_is(p, nlen, "skn")) {
			if (have_skn)
				return fail(why, "duplicate skn");
			have_skn = true;
			if (pct_decode(v, vlen, tmp, &dlen) != 0)
				return fail(why, "bad percent escape in skn");
			if (dlen > SAS_MAX_KEYNAME)
				return fail(why, "skn too long");
			memcpy(out->key_name, tmp, dlen + 1);
			out->has_key_name = true;
		} else {
			return fail(why, "unknown field");
		}

		if (!amp)
			break;
		p = amp + 1;
	}

	if (!have_sr)
		return fail(why, "missing sr");
	if (!have_sig)
		return fail(why, "missing sig");
	if (!have_se)
		return fail(why, "missing se");
	return 0;
}

int sas_signature_ok(const struct sas_token *t, const uint8_t *key, size_t key_len)
{
	if (!t || !key || key_len == 0 || !t->sr_raw || !t->se_raw)
		return 0;
	if (t->sr_raw_len > SAS_MAX_TOKEN || t->se_raw_len > SAS_MAX_TOKEN)
		return 0;
	char msg[2 * SAS_MAX_TOKEN + 1];
	size_t m = 0;
	memcpy(msg, t->sr_raw, t->sr_raw_len);
	m += t->sr_raw_len;
	msg[m++] = '\n';
	memcpy(msg + m, t->se_raw, t->se_raw_len);
	m += t->se_raw_len;
	uint8_t mac[32];
	crypto_hmac_sha256(key, key_len, msg, m, mac);
	return crypto_ct_equal(mac, t->sig, sizeof mac);
}

int sas_check_expiry(const struct sas_token *t, int64_t now_s)
{
	return now_s < t->expiry ? 0 : FH_EAUTH;
}

/* Decodes a base64 key of 1..SAS_MAX_KEY_B64 characters into key. */
static int decode_key(const char *key_b64, uint8_t key[B64_DECODED_MAX(SAS_MAX_KEY_B64)],
                      size_t *key_len)
{
	if (!key_b64)
		return FH_EINVAL;
	size_t len = strlen(key_b64);
	if (len == 0 || len > SAS_MAX_KEY_B64)
		return FH_EINVAL;
	if (b64_decode(key_b64, len, key, key_len) != 0 || *key_len == 0)
		return FH_EINVAL;
	return 0;
}

int sas_build(struct buf *out, const char *sr_raw, const char *key_b64, const char *key_name,
              int64_t expiry)
{
	uint8_t key[B64_DECODED_MAX(SAS_MAX_KEY_B64)];
	size_t key_len;
	if (!sr_raw || expiry < 0 || decode_key(key_b64, key, &key_len) != 0)
		return FH_EINVAL;

	struct buf msg = BUF_INIT;
	buf_printf(&msg, "%s\n%" PRId64, sr_raw, expiry);
	uint8_t mac[32];
	crypto_hmac_sha256(key, key_len, msg.data, msg.len, mac);
	buf_free(&msg);

	char sig[B64_ENCODED_LEN(32) + 1];
	size_t sig_len = b64_encode(mac, sizeof mac, sig);

	buf_appends(out, SAS_PREFIX "sr=");
	buf_appends(out, sr_raw);
	buf_appends(out, "&sig=");
	pct_encode(out, sig, sig_len);
	buf_printf(out, "&se=%" PRId64, expiry);
	if (key_name && *key_name) {
		buf_appends(out, "&skn=");
		pct_encode(out, key_name, strlen(key_name));
	}
	return 0;
}

int sas_service_token(const char *header, int64_t now_s, struct sas_token *t, const char **why)
{
	if (!header) {
		*why = "no Authorization header";
		return FH_EAUTH;
	}
	if (sas_parse(header, strlen(header), t, why) != 0)
		return FH_EAUTH;
	if (sas_check_expiry(t, now_s) != 0) {
		*why = "token expired";
		return FH_EAUTH;
	}
	return 0;
}

const struct sas_policy *sas_policy_verify(const struct sas_token *t,
					   const struct sas_policy *policies, size_t n,
					   const char **why)
{
	const struct sas_policy *p = NULL;
	for (size_t i = 0; t->has_key_name && i < n && !p; i++)
		if (strcmp(policies[i].name, t->key_name) == 0)
			p = &policies[i];
	if (!p) {
		*why = "unknown shared access policy";
		return NULL;
	}
	if (!sas_signature_ok_b64(t, p->primary) && !sas_signature_ok_b64(t, p->secondary)) {
		*why = "signature does not match the policy key";
		return NULL;
	}
	return p;
}

int sas_derive_key(const char *group_key_b64, const char *registration_id, char out[45])
{
	uint8_t key[B64_DECODED_MAX(SAS_MAX_KEY_B64)];
	size_t key_len;
	if (!registration_id || decode_key(group_key_b64, key, &key_len) != 0)
		return FH_EINVAL;
	uint8_t mac[32];
	crypto_hmac_sha256(key, key_len, registration_id, strlen(registration_id), mac);
	b64_encode(mac, sizeof mac, out);
	return 0;
}

int sas_signature_ok_b64(const struct sas_token *t, const char *key_b64)
{
	uint8_t key[B64_DECODED_MAX(SAS_MAX_KEY_B64)];
	size_t n;
	return key_b64 && decode_key(key_b64, key, &n) == 0 && sas_signature_ok(t, key, n);
}
