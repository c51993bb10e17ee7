#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>

#include "enc.h"

void crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                        uint8_t out[32])
{
	unsigned int len = 32;
	if (!HMAC(EVP_sha256(), key, (int)keylen, msg, n, out, &len))
		abort();
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
