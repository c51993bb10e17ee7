/* TPM attestation's cryptography: see tpm.h. The construction is tpm.md
 * §4: a credential (the 16-byte inner key) made for the EK, bound to the
 * SRK's Name; an HMAC keyedhash object duplicated to the SRK, wrapped
 * inside with the inner key (AES-128-CFB) and outside with a seed only the
 * SRK can decrypt. */
#include "core/tpm.h"

#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"

#define ALG_RSA 0x0001
#define ALG_KEYEDHASH 0x0008
#define ALG_SHA256 0x000B
#define ALG_AES 0x0006
#define ALG_HMAC 0x0005
#define ALG_NULL 0x0010
#define ALG_CFB 0x0043
#define HMAC_KEY_ATTRS 0x00040440u /* sign | userWithAuth | noDA */
#define EK_ATTRS 0x000300b2u
#define SRK_ATTRS 0x00030472u
#define INNER_KEY_LEN 16 /* AES-128: what every client imports with */
#define SEED_LEN 32

/* PolicySecret(TPM_RH_ENDORSEMENT), the EK template's authPolicy. */
static const uint8_t ek_policy[32] = {
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
	0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa};

/* ---- marshaling ------------------------------------------------------------ */

struct rd {
	const uint8_t *p;
	size_t n, off;
	bool bad;
};

static unsigned rd16(struct rd *r)
{
	if (r->bad || r->n - r->off < 2) {
		r->bad = true;
		return 0;
	}
	unsigned v = (unsigned)r->p[r->off] << 8 | r->p[r->off + 1];
	r->off += 2;
	return v;
}

static uint32_t rd32(struct rd *r)
{
	uint32_t hi = rd16(r);
	return hi << 16 | rd16(r);
}

/* n bytes, or NULL (r marked bad) when fewer remain. */
static const uint8_t *rdn(struct rd *r, size_t n)
{
	if (r->bad || r->n - r->off < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *p = r->p + r->off;
	r->off += n;
	return p;
}

/* A TPM2B: its bytes, *len their count. */
static const uint8_t *rd2b(struct rd *r, size_t *len)
{
	*len = rd16(r);
	return rdn(r, *len);
}

struct wr {
	uint8_t *p;
	size_t n, cap;
	bool bad;
};

static void wrn(struct wr *w, const void *p, size_t n)
{
	if (w->bad || w->cap - w->n < n) {
		w->bad = true;
		return;
	}
	if (n) /* p may be NULL when empty */
		memcpy(w->p + w->n, p, n);
	w->n += n;
}

static void wr16(struct wr *w, unsigned v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	wrn(w, b, 2);
}

static void wr32(struct wr *w, uint32_t v)
{
	wr16(w, v >> 16);
	wr16(w, v & 0xffff);
}

static void wr2b(struct wr *w, const void *p, size_t n)
{
	wr16(w, (unsigned)n);
	wrn(w, p, n);
}

/* ---- public areas -------------------------------------------------------------- */

static void name_of(const uint8_t *area, size_t n, uint8_t name[TPM_NAME_LEN])
{
	name[0] = 0x00;
	name[1] = ALG_SHA256;
	crypto_sha256(area, n, name + 2);
}

int tpm_parse_public(const uint8_t *p, size_t n, struct tpm_rsa_public *out, const char **why)
{
	memset(out, 0, sizeof *out);
	if (n < 2 || n > TPM_PUBLIC_MAX) {
		*why = "the public key is not a TPM2B_PUBLIC of a sensible size";
		return -1;
	}
	size_t size = (size_t)p[0] << 8 | p[1];
	if (size != n - 2) {
		*why = "the public key's TPM2B size does not match its length";
		return -1;
	}
	struct rd r = {p + 2, size, 0, false};
	unsigned type = rd16(&r), name_alg = rd16(&r);
	rd32(&r); /* objectAttributes */
	size_t policy_len;
	rd2b(&r, &policy_len);
	unsigned sym = rd16(&r), sym_bits = 0, mode = 0;
	if (sym != ALG_NULL) {
		sym_bits = rd16(&r);
		mode = rd16(&r);
	}
	unsigned scheme = rd16(&r);
	if (scheme != ALG_NULL)
		rd16(&r); /* its hash */
	unsigned key_bits = rd16(&r);
	uint32_t e = rd32(&r);
	size_t n_len;
	const uint8_t *mod = rd2b(&r, &n_len);
	if (r.bad || r.off != size) {
		*why = r.bad ? "the public key is truncated" : "the public key has bytes after its area";
		return -1;
	}
	if (type != ALG_RSA) {
		*why = "the public key is not an RSA key";
		return -1;
	}
	if (name_alg != ALG_SHA256) {
		*why = "the public key's nameAlg is not SHA-256";
		return -1;
	}
	if (sym != ALG_AES || mode != ALG_CFB || (sym_bits != 128 && sym_bits != 256)) {
		*why = "the public key's symmetric algorithm is not AES-128-CFB or AES-256-CFB";
		return -1;
	}
	if (n_len < 128 || n_len > sizeof out->n || n_len * 8 != key_bits || mod[0] == 0) {
		*why = "the public key's RSA modulus is not 1024 to 4096 bits as keyBits says";
		return -1;
	}
	if (e != 0 && (e < 3 || e % 2 == 0)) {
		*why = "the public key's RSA exponent is not usable";
		return -1;
	}
	memcpy(out->n, mod, n_len);
	out->n_len = n_len;
	out->e = e ? e : 65537;
	out->sym_bits = sym_bits;
	name_of(p + 2, size, out->name);
	return 0;
}

bool tpm_same_key(const struct tpm_rsa_public *a, const struct tpm_rsa_public *b)
{
	return a->n_len == b->n_len && a->e == b->e && memcmp(a->n, b->n, a->n_len) == 0;
}

/* ---- primitives ---------------------------------------------------------------- */

void tpm_kdfa(const uint8_t *key, size_t keylen, const char *label, const uint8_t *u,
              size_t ulen, const uint8_t *v, size_t vlen, unsigned bits, uint8_t *out)
{
	size_t want = bits / 8, have = 0, ll = strlen(label);
	uint8_t msg[4 + 32 + 1 + 2 * TPM_NAME_LEN + 4];
	if (ll > 32 || ulen > TPM_NAME_LEN || vlen > TPM_NAME_LEN || bits > 512 || bits % 8)
		abort(); /* callers pass constants */
	for (uint32_t i = 1; have < want; i++) {
		size_t m = 0;
		msg[m++] = (uint8_t)(i >> 24);
		msg[m++] = (uint8_t)(i >> 16);
		msg[m++] = (uint8_t)(i >> 8);
		msg[m++] = (uint8_t)i;
		memcpy(msg + m, label, ll);
		m += ll;
		msg[m++] = 0;
		if (ulen) /* (u, v may be NULL when empty) */
			memcpy(msg + m, u, ulen);
		m += ulen;
		if (vlen)
			memcpy(msg + m, v, vlen);
		m += vlen;
		msg[m++] = (uint8_t)(bits >> 24);
		msg[m++] = (uint8_t)(bits >> 16);
		msg[m++] = (uint8_t)(bits >> 8);
		msg[m++] = (uint8_t)bits;
		uint8_t block[32];
		crypto_hmac_sha256(key, keylen, msg, m, block);
		size_t take = want - have < 32 ? want - have : 32;
		memcpy(out + have, block, take);
		have += take;
	}
}

/* AES-CFB128 with a zero IV, bits 128 or 256, in place allowed. */
static int cfb(unsigned bits, const uint8_t *key, const uint8_t *in, size_t n, uint8_t *out,
               bool encrypt)
{
	static const uint8_t iv[16];
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int len = 0, ok = c && EVP_CipherInit_ex(c, bits == 256 ? EVP_aes_256_cfb128()
	                                                        : EVP_aes_128_cfb128(),
	                                         NULL, key, iv, encrypt ? 1 : 0) == 1 &&
	                  EVP_CipherUpdate(c, out, &len, in, (int)n) == 1 && (size_t)len == n;
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

static EVP_PKEY *rsa_key(const struct tpm_rsa_public *k)
{
	BIGNUM *n = BN_bin2bn(k->n, (int)k->n_len, NULL), *e = BN_new();
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	EVP_PKEY *key = NULL;
	if (n && e && b && ctx && BN_set_word(e, k->e) == 1 &&
	    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, n) == 1 &&
	    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, e) == 1 &&
	    (params = OSSL_PARAM_BLD_to_param(b)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1)
		EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	EVP_PKEY_CTX_free(ctx);
	BN_free(n);
	BN_free(e);
	return key;
}

/* RSA-OAEP with SHA-256 (hash and MGF1) and label (its NUL included), as
 * the TPM protects seeds. encrypt: in -> out with key's public half;
 * else decrypt with its private half. 0 with *outlen, or -1. */
static int oaep(EVP_PKEY *key, bool encrypt, const char *label, const uint8_t *in, size_t n,
                uint8_t *out, size_t *outlen)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key, NULL);
	size_t ll = strlen(label) + 1;
	void *l = OPENSSL_memdup(label, ll);
	int ok = c && l &&
	         (encrypt ? EVP_PKEY_encrypt_init(c) : EVP_PKEY_decrypt_init(c)) == 1 &&
	         EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
	         EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256()) == 1 &&
	         EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256()) == 1 &&
	         EVP_PKEY_CTX_set0_rsa_oaep_label(c, l, (int)ll) == 1;
	if (ok)
		l = NULL; /* the context owns it */
	ok = ok && (encrypt ? EVP_PKEY_encrypt(c, out, outlen, in, n)
	                    : EVP_PKEY_decrypt(c, out, outlen, in, n)) == 1;
	OPENSSL_free(l);
	EVP_PKEY_CTX_free(c);
	return ok ? 0 : -1;
}

static void hmac2(const uint8_t *key, size_t keylen, const uint8_t *a, size_t an,
                  const uint8_t *b, size_t bn, uint8_t out[32])
{
	uint8_t msg[TPM_BLOB_MAX];
	memcpy(msg, a, an);
	memcpy(msg + an, b, bn);
	crypto_hmac_sha256(key, keylen, msg, an + bn, out);
}

/* ---- the blob ---------------------------------------------------------------- */

/* The keyedhash public area of an HMAC key whose unique is digest. */
static void hmac_key_public(struct wr *w, const uint8_t digest[32])
{
	wr16(w, ALG_KEYEDHASH);
	wr16(w, ALG_SHA256);
	wr32(w, HMAC_KEY_ATTRS);
	wr16(w, 0); /* authPolicy */
	wr16(w, ALG_HMAC);
	wr16(w, ALG_SHA256);
	wr2b(w, digest, 32);
}

int tpm_build_blob(const struct tpm_rsa_public *ek, const struct tpm_rsa_public *srk,
                   const uint8_t *key, size_t keylen, tpm_random_fn rnd, void *rnd_ctx,
                   uint8_t *out, size_t outlen)
{
	if (keylen == 0 || keylen > TPM_KEY_MAX)
		return -1;
	uint8_t inner[INNER_KEY_LEN], seed_c[SEED_LEN], seed_d[SEED_LEN], obf[32];
	rnd(rnd_ctx, inner, sizeof inner);
	rnd(rnd_ctx, seed_c, sizeof seed_c);
	rnd(rnd_ctx, obf, sizeof obf);
	rnd(rnd_ctx, seed_d, sizeof seed_d);
	EVP_PKEY *ek_key = rsa_key(ek), *srk_key = rsa_key(srk);
	uint8_t enc_c[512], enc_d[512];
	size_t enc_c_len = sizeof enc_c, enc_d_len = sizeof enc_d;
	int rc = ek_key && srk_key &&
	                 oaep(ek_key, true, "IDENTITY", seed_c, sizeof seed_c, enc_c, &enc_c_len) ==
	                     0 &&
	                 oaep(srk_key, true, "DUPLICATE", seed_d, sizeof seed_d, enc_d,
	                      &enc_d_len) == 0
	             ? 0
	             : -1;
	EVP_PKEY_free(ek_key);
	EVP_PKEY_free(srk_key);

	/* The credential: the inner key, for the EK, bound to Name(SRK). */
	uint8_t k_sym[32], k_hmac[32], cred[2 + INNER_KEY_LEN], enc_id[sizeof cred], integ[32];
	tpm_kdfa(seed_c, sizeof seed_c, "STORAGE", srk->name, TPM_NAME_LEN, NULL, 0, ek->sym_bits,
	         k_sym);
	cred[0] = 0;
	cred[1] = INNER_KEY_LEN;
	memcpy(cred + 2, inner, INNER_KEY_LEN);
	if (rc == 0)
		rc = cfb(ek->sym_bits, k_sym, cred, sizeof cred, enc_id, true);
	tpm_kdfa(seed_c, sizeof seed_c, "INTEGRITY", NULL, 0, NULL, 0, 256, k_hmac);
	hmac2(k_hmac, sizeof k_hmac, enc_id, sizeof enc_id, srk->name, TPM_NAME_LEN, integ);

	/* The HMAC key object: its public area and sensitive part. */
	uint8_t unique[32], pub[128], sens[256], digest[32];
	uint8_t both[32 + TPM_KEY_MAX];
	memcpy(both, obf, sizeof obf);
	memcpy(both + sizeof obf, key, keylen);
	crypto_sha256(both, sizeof obf + keylen, unique);
	struct wr pw = {pub, 0, sizeof pub, false};
	hmac_key_public(&pw, unique);
	uint8_t nm[TPM_NAME_LEN];
	name_of(pub, pw.n, nm);
	struct wr sw = {sens, 2, sizeof sens, false}; /* TPM2B_SENSITIVE: size first */
	wr16(&sw, ALG_KEYEDHASH);
	wr2b(&sw, NULL, 0); /* authValue */
	wr2b(&sw, obf, sizeof obf);
	wr2b(&sw, key, keylen);
	sens[0] = (uint8_t)((sw.n - 2) >> 8);
	sens[1] = (uint8_t)(sw.n - 2);

	/* Inner wrapper: TPM2B(H(sens || Name)) || sens, under the inner key. */
	uint8_t plain[2 + 32 + sizeof sens], enc_in[sizeof plain], dup[sizeof plain];
	uint8_t hs[sizeof sens + TPM_NAME_LEN];
	memcpy(hs, sens, sw.n);
	memcpy(hs + sw.n, nm, TPM_NAME_LEN);
	crypto_sha256(hs, sw.n + TPM_NAME_LEN, digest);
	plain[0] = 0;
	plain[1] = 32;
	memcpy(plain + 2, digest, 32);
	memcpy(plain + 34, sens, sw.n);
	size_t plain_len = 34 + sw.n;
	if (rc == 0)
		rc = cfb(128, inner, plain, plain_len, enc_in, true);

	/* Outer wrapper, for the SRK. */
	uint8_t k_o[32], k_oh[32], outer[32];
	tpm_kdfa(seed_d, sizeof seed_d, "STORAGE", nm, TPM_NAME_LEN, NULL, 0, srk->sym_bits, k_o);
	if (rc == 0)
		rc = cfb(srk->sym_bits, k_o, enc_in, plain_len, dup, true);
	tpm_kdfa(seed_d, sizeof seed_d, "INTEGRITY", NULL, 0, NULL, 0, 256, k_oh);
	hmac2(k_oh, sizeof k_oh, dup, plain_len, nm, TPM_NAME_LEN, outer);

	struct wr w = {out, 0, outlen, false};
	wr16(&w, (unsigned)(2 + sizeof integ + sizeof enc_id)); /* #1 TPM2B_ID_OBJECT */
	wr2b(&w, integ, sizeof integ);
	wrn(&w, enc_id, sizeof enc_id);
	wr2b(&w, enc_c, enc_c_len);                              /* #2 */
	wr16(&w, (unsigned)(2 + sizeof outer + plain_len));       /* #3 TPM2B_PRIVATE */
	wr2b(&w, outer, sizeof outer);
	wrn(&w, dup, plain_len);
	wr2b(&w, enc_d, enc_d_len);                              /* #4 */
	wr2b(&w, pub, pw.n);                                     /* #5 */
	wr2b(&w, NULL, 0);                                       /* #6 no data */
	OPENSSL_cleanse(inner, sizeof inner);
	OPENSSL_cleanse(seed_c, sizeof seed_c);
	OPENSSL_cleanse(seed_d, sizeof seed_d);
	OPENSSL_cleanse(sens, sizeof sens);
	OPENSSL_cleanse(plain, sizeof plain);
	OPENSSL_cleanse(hs, sizeof hs);
	OPENSSL_cleanse(both, sizeof both);
	return rc == 0 && !w.bad && !pw.bad && !sw.bad ? (int)w.n : -1;
}

/* ---- the device side ------------------------------------------------------------- */

int tpm_marshal_public(EVP_PKEY *rsa, bool ek, uint8_t *out, size_t outlen)
{
	BIGNUM *n = NULL;
	uint8_t mod[256];
	if (EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &n) != 1 || BN_num_bytes(n) != 256 ||
	    BN_bn2binpad(n, mod, sizeof mod) != 256) {
		BN_free(n);
		return -1;
	}
	BN_free(n);
	struct wr w = {out, 2, outlen, false};
	wr16(&w, ALG_RSA);
	wr16(&w, ALG_SHA256);
	wr32(&w, ek ? EK_ATTRS : SRK_ATTRS);
	if (ek)
		wr2b(&w, ek_policy, sizeof ek_policy);
	else
		wr2b(&w, NULL, 0);
	wr16(&w, ALG_AES);
	wr16(&w, 128);
	wr16(&w, ALG_CFB);
	wr16(&w, ALG_NULL); /* scheme */
	wr16(&w, 2048);
	wr32(&w, 0); /* exponent 65537 */
	wr2b(&w, mod, sizeof mod);
	if (w.bad)
		return -1;
	out[0] = (uint8_t)((w.n - 2) >> 8);
	out[1] = (uint8_t)(w.n - 2);
	return (int)w.n;
}

int tpm_open_blob(EVP_PKEY *ek, const struct tpm_rsa_public *ek_public, EVP_PKEY *srk,
                  const struct tpm_rsa_public *srk_public, const uint8_t *blob, size_t n,
                  uint8_t *key, size_t *keylen, const char **why)
{
	struct rd r = {blob, n, 0, false};
	size_t id_len, sec_c_len, priv_len, sec_d_len, pub_len, data_len;
	const uint8_t *id = rd2b(&r, &id_len), *sec_c = rd2b(&r, &sec_c_len);
	const uint8_t *priv = rd2b(&r, &priv_len), *sec_d = rd2b(&r, &sec_d_len);
	const uint8_t *pub = rd2b(&r, &pub_len);
	rd2b(&r, &data_len);
	if (r.bad || r.off != n) {
		*why = "the blob is not six TPM2B structures";
		return -1;
	}
	/* ActivateCredential: the seed with the EK, the credential's
	 * integrity over Name(SRK), then the inner key. */
	uint8_t seed_c[512], seed_d[512], k[32], mac[32]; /* OpenSSL wants room for a modulus */
	size_t seed_c_len = sizeof seed_c, seed_d_len = sizeof seed_d;
	if (oaep(ek, false, "IDENTITY", sec_c, sec_c_len, seed_c, &seed_c_len) != 0 ||
	    seed_c_len != SEED_LEN) {
		*why = "the credential's seed does not decrypt with this EK";
		return -1;
	}
	struct rd ir = {id, id_len, 0, false};
	size_t integ_len;
	const uint8_t *integ = rd2b(&ir, &integ_len);
	const uint8_t *enc_id = ir.bad ? NULL : id + ir.off;
	size_t enc_id_len = id_len - ir.off;
	tpm_kdfa(seed_c, seed_c_len, "INTEGRITY", NULL, 0, NULL, 0, 256, k);
	if (ir.bad || integ_len != 32 || enc_id_len != 2 + INNER_KEY_LEN ||
	    (hmac2(k, sizeof k, enc_id, enc_id_len, srk_public->name, TPM_NAME_LEN, mac),
	     !crypto_ct_equal(mac, integ, 32))) {
		*why = "the credential's integrity check fails";
		return -1;
	}
	uint8_t cred[2 + INNER_KEY_LEN];
	tpm_kdfa(seed_c, seed_c_len, "STORAGE", srk_public->name, TPM_NAME_LEN, NULL, 0,
	         ek_public->sym_bits, k);
	if (cfb(ek_public->sym_bits, k, enc_id, enc_id_len, cred, false) != 0 || cred[0] != 0 ||
	    cred[1] != INNER_KEY_LEN) {
		*why = "the credential does not decrypt to a 16-byte key";
		return -1;
	}
	/* Import: the seed with the SRK, the outer integrity over the
	 * object's Name, the outer then the inner wrapper, the inner digest. */
	if (oaep(srk, false, "DUPLICATE", sec_d, sec_d_len, seed_d, &seed_d_len) != 0 ||
	    seed_d_len != SEED_LEN) {
		*why = "the duplication seed does not decrypt with this SRK";
		return -1;
	}
	uint8_t nm[TPM_NAME_LEN];
	name_of(pub, pub_len, nm);
	struct rd pr = {priv, priv_len, 0, false};
	size_t outer_len;
	const uint8_t *outer = rd2b(&pr, &outer_len);
	const uint8_t *dup = pr.bad ? NULL : priv + pr.off;
	size_t dup_len = priv_len - pr.off;
	tpm_kdfa(seed_d, seed_d_len, "INTEGRITY", NULL, 0, NULL, 0, 256, k);
	if (pr.bad || outer_len != 32 || dup_len < 36 || dup_len > 512 ||
	    (hmac2(k, sizeof k, dup, dup_len, nm, TPM_NAME_LEN, mac),
	     !crypto_ct_equal(mac, outer, 32))) {
		*why = "the duplication blob's outer integrity check fails";
		return -1;
	}
	uint8_t enc_in[512], plain[512];
	tpm_kdfa(seed_d, seed_d_len, "STORAGE", nm, TPM_NAME_LEN, NULL, 0, srk_public->sym_bits, k);
	if (cfb(srk_public->sym_bits, k, dup, dup_len, enc_in, false) != 0 ||
	    cfb(128, cred + 2, enc_in, dup_len, plain, false) != 0) {
		*why = "the duplication blob does not decrypt";
		return -1;
	}
	struct rd dr = {plain, dup_len, 0, false};
	size_t digest_len, sens_len;
	const uint8_t *digest = rd2b(&dr, &digest_len);
	const uint8_t *sens = dr.bad ? NULL : plain + dr.off;
	rd2b(&dr, &sens_len);
	uint8_t hs[512 + TPM_NAME_LEN], h[32];
	if (dr.bad || dr.off != dup_len || digest_len != 32) {
		*why = "the duplicated object is malformed";
		return -1;
	}
	size_t sens_total = 2 + sens_len;
	memcpy(hs, sens, sens_total);
	memcpy(hs + sens_total, nm, TPM_NAME_LEN);
	crypto_sha256(hs, sens_total + TPM_NAME_LEN, h);
	if (!crypto_ct_equal(h, digest, 32)) {
		*why = "the duplicated object's inner integrity check fails";
		return -1;
	}
	struct rd sr = {sens + 2, sens_len, 0, false};
	unsigned type = rd16(&sr);
	size_t auth_len, obf_len, k_len;
	rd2b(&sr, &auth_len);
	const uint8_t *obf = rd2b(&sr, &obf_len);
	const uint8_t *kbytes = rd2b(&sr, &k_len);
	struct rd pubr = {pub, pub_len, 0, false};
	rdn(&pubr, pub_len - 34 > pub_len ? 0 : pub_len - 34);
	size_t unique_len;
	const uint8_t *unique = rd2b(&pubr, &unique_len);
	if (sr.bad || sr.off != sens_len || type != ALG_KEYEDHASH || k_len == 0 ||
	    k_len > TPM_KEY_MAX || obf_len != 32 || pubr.bad || unique_len != 32) {
		*why = "the key object is malformed";
		return -1;
	}
	uint8_t both[32 + TPM_KEY_MAX];
	memcpy(both, obf, 32);
	memcpy(both + 32, kbytes, k_len);
	crypto_sha256(both, 32 + k_len, h);
	if (!crypto_ct_equal(h, unique, 32)) {
		*why = "the key does not match its public area";
		return -1;
	}
	memcpy(key, kbytes, k_len);
	*keylen = k_len;
	return 0;
}
