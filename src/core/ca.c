/* CA certificates and proof of possession: see ca.h. */
#include "core/ca.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/x509.h"

X509 *ca_parse(const char *text, size_t n)
{
	if (!text || n == 0 || n > CA_MAX_TEXT)
		return NULL;
	BIO *bio = BIO_new_mem_buf(text, (int)n);
	X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (x)
		return x;
	/* The base64 of the DER, as the ARM API also takes it. */
	uint8_t *der = malloc(n);
	size_t len = 0;
	if (der && b64_decode(text, n, der, &len) == 0) {
		const unsigned char *p = der;
		x = d2i_X509(NULL, &p, (long)len);
		if (x && p != der + len) { /* trailing bytes: not one certificate */
			X509_free(x);
			x = NULL;
		}
	}
	free(der);
	return x;
}

int ca_parse_chain(const char *pem, X509 **leaf, STACK_OF(X509) **rest)
{
	*leaf = NULL;
	*rest = NULL;
	BIO *bio = pem ? BIO_new_mem_buf(pem, -1) : NULL;
	STACK_OF(X509) *all = sk_X509_new_null();
	X509 *x;
	while (bio && all && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		sk_X509_push(all, x);
	ERR_clear_error(); /* the end of the text reads as an error */
	BIO_free(bio);
	if (!all || sk_X509_num(all) == 0) {
		sk_X509_free(all);
		return FH_EINVAL;
	}
	*leaf = sk_X509_shift(all);
	*rest = all;
	return 0;
}

char *ca_pem(X509 *x)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *out = NULL;
	if (bio && PEM_write_bio_X509(bio, x) == 1) {
		char *p;
		long n = BIO_get_mem_data(bio, &p);
		out = malloc((size_t)n + 1);
		if (out) {
			memcpy(out, p, (size_t)n);
			out[n] = '\0';
		}
	}
	BIO_free(bio);
	return out;
}

static void name_text(X509_NAME *name, char *out, size_t outlen)
{
	BIO *bio = BIO_new(BIO_s_mem());
	out[0] = '\0';
	if (bio && X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
		char *p;
		long n = BIO_get_mem_data(bio, &p);
		snprintf(out, outlen, "%.*s", (int)n, p);
	}
	BIO_free(bio);
}

static void time_text(const ASN1_TIME *t, char out[32])
{
	struct tm tm;
	if (ASN1_TIME_to_tm(t, &tm) == 1)
		strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
	else
		snprintf(out, 32, "0001-01-01T00:00:00Z");
}

json_t *ca_cert_info(X509 *x)
{
	char sha1[41], sha256[65], subject[512], issuer[512], from[32], to[32], serial[128] = "";
	if (x509_thumbprints(x, sha1, sha256) != 0)
		return NULL;
	name_text(X509_get_subject_name(x), subject, sizeof subject);
	name_text(X509_get_issuer_name(x), issuer, sizeof issuer);
	time_text(X509_get0_notBefore(x), from);
	time_text(X509_get0_notAfter(x), to);
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	if (hex)
		snprintf(serial, sizeof serial, "%s", hex);
	OPENSSL_free(hex);
	BN_free(bn);
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "subjectName", subject,
			 "sha1Thumbprint", sha1, "sha256Thumbprint", sha256, "issuerName", issuer,
			 "notBeforeUtc", from, "notAfterUtc", to, "serialNumber", serial, "version",
			 (json_int_t)X509_get_version(x) + 1);
}

static json_t *props(const json_t *rec)
{
	return json_object_get(rec, "properties");
}

/* member's string value, or def when it is not a string. */
static const char *str_or(const json_t *o, const char *member, const char *def)
{
	const char *v = json_string_value(json_object_get(o, member));
	return v ? v : def;
}

static void bump_etag(json_t *rec)
{
	long n = strtol(str_or(rec, "etag", "0"), NULL, 10);
	char e[24];
	snprintf(e, sizeof e, "%ld", n + 1);
	json_object_set_new(rec, "etag", json_string(e));
}

json_t *ca_record_build(const char *name, const char *text, size_t n, const json_t *old,
			const char *now_iso, char *err, size_t errlen)
{
	X509 *x = ca_parse(text, n);
	if (!x) {
		snprintf(err, errlen, "properties.certificate is not a certificate (PEM, or the "
				      "base64 of its DER, at most %d bytes)",
			 CA_MAX_TEXT);
		return NULL;
	}
	char *pem = ca_pem(x);
	char sha1[41], sha256[65], subject[512], expiry[32];
	if (!pem || x509_thumbprints(x, sha1, sha256) != 0) {
		free(pem);
		X509_free(x);
		snprintf(err, errlen, "the certificate cannot be read");
		return NULL;
	}
	name_text(X509_get_subject_name(x), subject, sizeof subject);
	time_text(X509_get0_notAfter(x), expiry);
	X509_free(x);

	const char *old_thumb = old ? json_string_value(json_object_get(props(old), "thumbprint")) : NULL;
	bool same = old_thumb && strcmp(old_thumb, sha1) == 0;
	json_t *rec;
	if (same) {
		rec = json_deep_copy(old);
	} else {
		rec = json_pack("{s:s,s:s,s:{s:b,s:s}}", "name", name, "etag", str_or(old, "etag", "0"),
				"properties", "isVerified", 0, "created",
				str_or(props(old), "created", now_iso));
	}
	json_t *p = props(rec);
	json_object_set_new(p, "subject", json_string(subject));
	json_object_set_new(p, "expiry", json_string(expiry));
	json_object_set_new(p, "thumbprint", json_string(sha1));
	json_object_set_new(p, "certificate", json_string(pem));
	json_object_set_new(p, "updated", json_string(now_iso));
	free(pem);
	bump_etag(rec);
	return rec;
}

void ca_new_verification_code(json_t *rec, const char *now_iso)
{
	uint8_t r[16];
	char hex[33];
	crypto_random(r, sizeof r);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02X", r[i]);
	json_object_set_new(props(rec), "verificationCode", json_string(hex));
	json_object_set_new(props(rec), "updated", json_string(now_iso));
	bump_etag(rec);
}

int ca_verify_possession(json_t *rec, const char *cert_text, size_t n, int64_t now_s,
			 const char *now_iso, const char **why)
{
	const char *code = json_string_value(json_object_get(props(rec), "verificationCode"));
	if (!code) {
		*why = "no verification code is pending: generate one first";
		return FH_EAUTH;
	}
	X509 *v = ca_parse(cert_text, n);
	if (!v) {
		*why = "the verification certificate is not a certificate";
		return FH_EINVAL;
	}
	const char *pem = ca_certificate(rec);
	X509 *ca = ca_parse(pem, pem ? strlen(pem) : 0);
	char cn[64];
	int rc = FH_EAUTH;
	if (!ca) {
		*why = "the stored CA certificate cannot be read";
	} else if (x509_subject_cn(v, cn, sizeof cn) != 0 || strcmp(cn, code) != 0) {
		*why = "the verification certificate's subject CN is not the verification code";
	} else if (X509_verify(v, X509_get0_pubkey(ca)) != 1) {
		*why = "the verification certificate is not signed by this CA's key";
	} else if (x509_check_time(v, now_s, why) == 0) {
		rc = 0;
	}
	X509_free(ca);
	X509_free(v);
	if (rc == 0) {
		json_object_set_new(props(rec), "isVerified", json_true());
		json_object_del(props(rec), "verificationCode");
		json_object_set_new(props(rec), "updated", json_string(now_iso));
		bump_etag(rec);
	}
	return rc;
}

int ca_apply(enum ca_change change, const char *name, const json_t *old, const char *if_match,
	     const char *text, size_t n, int64_t now_s, const char *now_iso, json_t **out,
	     char *msg, size_t msglen)
{
	*out = NULL;
	if (!old && change != CA_PUT) {
		snprintf(msg, msglen, "no CA certificate named '%s'", name);
		return 404;
	}
	const char *etag = old ? str_or(old, "etag", NULL) : NULL;
	if (if_match[0] && strcmp(if_match, "*") != 0 && (!etag || strcmp(etag, if_match) != 0)) {
		snprintf(msg, msglen, "the etag in If-Match does not match the certificate");
		return 412;
	}
	const char *why;
	switch (change) {
	case CA_PUT:
		*out = ca_record_build(name, text, n, old, now_iso, msg, msglen);
		return *out ? 0 : 400;
	case CA_DELETE: return 0;
	case CA_CODE:
		*out = json_deep_copy(old);
		ca_new_verification_code(*out, now_iso);
		return 0;
	case CA_VERIFY:
		*out = json_deep_copy(old);
		if (ca_verify_possession(*out, text, n, now_s, now_iso, &why) == 0)
			return 0;
		json_decref(*out);
		*out = NULL;
		snprintf(msg, msglen, "%s", why);
		return 400;
	}
	return 400;
}

json_t *ca_render(const json_t *rec, bool with_code)
{
	json_t *o = json_deep_copy(rec);
	if (!with_code)
		json_object_del(props(o), "verificationCode");
	return o;
}

bool ca_verified(const json_t *rec)
{
	return json_is_true(json_object_get(props(rec), "isVerified"));
}

const char *ca_certificate(const json_t *rec)
{
	return json_string_value(json_object_get(props(rec), "certificate"));
}

int ca_collect_verified(void *arg, const char *id, const char *json)
{
	json_t *rec = json_loads(json, 0, NULL);
	if (rec && ca_verified(rec) && ca_certificate(rec))
		json_array_append_new(arg, json_string(ca_certificate(rec)));
	json_decref(rec);
	return 0;
}

void ca_cache_init(struct ca_cache *c)
{
	map_init(&c->m);
}

static void free_entry(void *arg, const char *key, void *value)
{
	X509_free(value);
}

void ca_cache_free(struct ca_cache *c)
{
	map_each(&c->m, free_entry, NULL);
	map_free(&c->m);
}

X509 *ca_cache_get(struct ca_cache *c, const char *pem)
{
	X509 *x = map_get(&c->m, pem);
	if (x)
		return x;
	x = ca_parse(pem, strlen(pem));
	if (!x)
		return NULL;
	if (c->m.count >= CA_CACHE_MAX) {
		ca_cache_free(c);
		ca_cache_init(c);
	}
	map_put(&c->m, pem, x);
	return x;
}

int ca_collect_rendered(void *arg, const char *id, const char *json)
{
	json_t *rec = json_loads(json, 0, NULL);
	if (rec)
		json_array_append_new(arg, ca_render(rec, false));
	json_decref(rec);
	return 0;
}

int ca_chain_verify_pems(X509 *leaf, STACK_OF(X509) *untrusted, const json_t *pems, int max_depth,
			 int64_t now_s, struct ca_cache *cache, const char **why)
{
	size_t n = json_array_size(pems), k = 0;
	X509 **anchors = calloc(n + 1, sizeof *anchors);
	for (size_t i = 0; anchors && i < n; i++) {
		const char *pem = json_string_value(json_array_get(pems, i));
		X509 *x = !pem ? NULL : cache ? ca_cache_get(cache, pem) : ca_parse(pem, strlen(pem));
		if (x)
			anchors[k++] = x;
	}
	int rc = ca_chain_verify(leaf, untrusted, anchors, k, max_depth, now_s, why);
	for (size_t i = 0; !cache && i < k; i++)
		X509_free(anchors[i]);
	free(anchors);
	return rc;
}

int ca_chain_verify(X509 *leaf, STACK_OF(X509) *untrusted, X509 *const *anchors, size_t n,
		    int max_depth, int64_t now_s, const char **why)
{
	if (n == 0) {
		*why = "no verified CA certificate can vouch for it";
		return FH_EAUTH;
	}
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int rc = FH_EAUTH;
	*why = "the certificate chain cannot be checked";
	if (store && ctx) {
		for (size_t i = 0; i < n; i++)
			X509_STORE_add_cert(store, anchors[i]);
		if (X509_STORE_CTX_init(ctx, store, leaf, untrusted) == 1) {
			X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
			X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN);
			X509_VERIFY_PARAM_set_time(vp, (time_t)now_s);
			X509_VERIFY_PARAM_set_depth(vp, max_depth);
			if (X509_verify_cert(ctx) == 1) {
				rc = 0;
			} else {
				int e = X509_STORE_CTX_get_error(ctx);
				*why = e == X509_V_ERR_CERT_HAS_EXPIRED ? "the certificate has expired"
				       : e == X509_V_ERR_CERT_NOT_YET_VALID
					   ? "the certificate is not valid yet"
				       : e == X509_V_ERR_CERT_CHAIN_TOO_LONG
					   ? "the certificate chain is longer than allowed"
					   : "the certificate does not chain to a trusted CA certificate";
			}
		}
	}
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}
