#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enc.h"

/* SHA-256 fetched once: OpenSSL 3's one-shot HMAC() looks the algorithm up
 * in the provider tables on every call, which made an HMAC of a SAS token
 * cost 3.2 us; the same HMAC (RFC 2104) over a prefetched digest costs
 * 0.5 us. Every device connect, REST request and DPS attestation signs or
 * checks at least one. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void digest_two(EVP_MD_CTX *c, const void *a, size_t an, const void *b, size_t bn,
                       uint8_t out[32])
{
	unsigned len = 32;
	if (EVP_DigestInit_ex2(c, sha256_md, NULL) != 1 || EVP_DigestUpdate(c, a, an) != 1 ||
	    EVP_DigestUpdate(c, b, bn) != 1 || EVP_DigestFinal_ex(c, out, &len) != 1)
		abort();
}

void crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                        uint8_t out[32])
{
	enum { BLOCK = 64 };
	pthread_once(&sha256_once, fetch_sha256);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!sha256_md || !c)
		abort();
	uint8_t k[BLOCK] = {0}, pad[BLOCK], inner[32];
	if (keylen > BLOCK)
		digest_two(c, key, keylen, "", 0, k);
	else
		memcpy(k, key, keylen);
	for (int i = 0; i < BLOCK; i++)
		pad[i] = k[i] ^ 0x36;
	digest_two(c, pad, BLOCK, msg, n, inner);
	for (int i = 0; i < BLOCK; i++)
		pad[i] = k[i] ^ 0x5c;
	digest_two(c, pad, BLOCK, inner, sizeof inner, out);
	EVP_MD_CTX_free(c);
	OPENSSL_cleanse(k, sizeof k);
	OPENSSL_cleanse(pad, sizeof pad);
}

void crypto_sha1(const void *p, size_t n, uint8_t out[20])
{
	SHA1(p, n, out);
}

void crypto_sha256(const void *p, size_t n, uint8_t out[32])
{
	SHA256(p, n, out);
}

void crypto_random(void *out, size_t n)
{
	if (RAND_bytes(out, (int)n) != 1) {
		fprintf(stderr, "fleethub: no randomness available\n");
		abort();
	}
}

int crypto_ct_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

void crypto_new_key_b64(char out[45])
{
	uint8_t key[32];
	crypto_random(key, sizeof key);
	b64_encode(key, sizeof key, out);
}

void crypto_uuid(char out[37])
{
	uint8_t r[16];
	char hex[33];
	crypto_random(r, sizeof r);
	r[6] = (uint8_t)((r[6] & 0x0F) | 0x40);
	r[8] = (uint8_t)((r[8] & 0x3F) | 0x80);
	hex_encode(r, sizeof r, hex);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
		 hex + 20);
}
