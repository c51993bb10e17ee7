/* Thin wrappers over OpenSSL's libcrypto: HMAC-SHA256, hashes, randomness,
 * constant-time comparison, key generation. */
#ifndef FH_BASE_CRYPTO_H
#define FH_BASE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

void crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                        uint8_t out[32]);
void crypto_sha1(const void *p, size_t n, uint8_t out[20]);
void crypto_sha256(const void *p, size_t n, uint8_t out[32]);
/* Fills out with cryptographically strong random bytes; aborts on failure. */
void crypto_random(void *out, size_t n);
/* 1 when equal; time depends only on n. */
int crypto_ct_equal(const void *a, const void *b, size_t n);
/* A new 256-bit key as base64 (44 chars + NUL) in out. */
void crypto_new_key_b64(char out[45]);
/* A random UUID v4 string (36 chars + NUL). */
void crypto_uuid(char out[37]);

#endif
