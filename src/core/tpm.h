/* TPM attestation's cryptography (../shared/tpm.md §3-§5): the public
 * areas a device sends (marshaled TPM2B_PUBLIC of its endorsement key and
 * storage root key), their Names, KDFa, and the authenticationKey blob that
 * delivers an HMAC key only that TPM can load (TPM2_MakeCredential to the
 * EK around a TPM2 duplication blob for the SRK), built with OpenSSL alone.
 *
 * The other direction, what a TPM does with a blob, is here too in
 * software (tpm_open_blob), for the unit tests and the load generator; the
 * tests' oracle for the blob is a real TPM (swtpm), which checks every
 * binding.
 *
 * Pure: no I/O; randomness comes from the caller's function. */
#ifndef FH_CORE_TPM_H
#define FH_CORE_TPM_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TPM_PUBLIC_MAX 1024   /* bytes of a marshaled TPM2B_PUBLIC accepted */
#define TPM_BLOB_MAX 2048     /* an authenticationKey blob (766 bytes for RSA-2048) */
#define TPM_KEY_MAX 64        /* an HMAC key a TPM imports (the SHA-256 block) */
#define TPM_NAME_LEN 34       /* 0x000B and a SHA-256 digest */

/* An RSA storage key's public area (EK or SRK): RSA, nameAlg SHA-256,
 * symmetric AES-CFB (128 or 256 bits), 1024..4096-bit modulus. */
struct tpm_rsa_public {
	uint8_t n[512];
	size_t n_len;
	uint32_t e;        /* 0 in the area means 65537, stored as 65537 */
	unsigned sym_bits; /* AES key bits of its symmetric (inner) algorithm */
	uint8_t name[TPM_NAME_LEN];
};

/* Parses p[0..n), a marshaled TPM2B_PUBLIC (untrusted: every size is
 * checked, the declared size must be what the area takes). 0, or -1 with
 * *why. */
int tpm_parse_public(const uint8_t *p, size_t n, struct tpm_rsa_public *out, const char **why);

/* Whether a and b are the same key (modulus and exponent). */
bool tpm_same_key(const struct tpm_rsa_public *a, const struct tpm_rsa_public *b);

/* KDFa (TPM 2.0 Part 1 §11.4.10) with HMAC-SHA256: bits/8 bytes into out
 * (bits a multiple of 8, at most 512). label without its NUL. */
void tpm_kdfa(const uint8_t *key, size_t keylen, const char *label, const uint8_t *u,
              size_t ulen, const uint8_t *v, size_t vlen, unsigned bits, uint8_t *out);

/* Random bytes for the blob (crypto_random, or a test's). */
typedef void (*tpm_random_fn)(void *ctx, uint8_t *out, size_t n);

/* The authenticationKey blob delivering key[0..keylen) (1..TPM_KEY_MAX
 * bytes) to the TPM holding ek and srk: six TPM2B structures, tpm.md §3.
 * Returns its length (written to out), or -1 (outlen too small, keylen out
 * of range, an OpenSSL failure). */
int tpm_build_blob(const struct tpm_rsa_public *ek, const struct tpm_rsa_public *srk,
                   const uint8_t *key, size_t keylen, tpm_random_fn rnd, void *rnd_ctx,
                   uint8_t *out, size_t outlen);

/* ---- the device side, in software (tests, load generator) ---- */

/* A marshaled TPM2B_PUBLIC for rsa's public half with the SDKs' template:
 * an EK (attributes 0x000300b2, the PolicySecret(endorsement) policy) or an
 * SRK (0x00030472), RSA-2048, AES-128-CFB. Returns its length, or -1. */
int tpm_marshal_public(EVP_PKEY *rsa, bool ek, uint8_t *out, size_t outlen);

/* What a TPM does with a blob (ActivateCredential with ek, Import and
 * Load under srk; each private key with its public area), every integrity
 * check included: the key it delivers into key (TPM_KEY_MAX bytes), its
 * length in *keylen. 0, or -1 with *why. */
int tpm_open_blob(EVP_PKEY *ek, const struct tpm_rsa_public *ek_public, EVP_PKEY *srk,
                  const struct tpm_rsa_public *srk_public, const uint8_t *blob, size_t n,
                  uint8_t *key, size_t *keylen, const char **why);

#endif
