/* Fuzz target for src/core/tpm.c: arbitrary bytes as a TPM2B_PUBLIC, the
 * endorsement or storage root key a device sends in its registration.
 * Invariants: a parsed area's Name is SHA-256's, its exponent odd and its
 * modulus as long as it said; a parsed key builds a blob (or fails
 * cleanly) with itself as EK and SRK; nothing crashes or reads outside
 * the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "core/tpm.h"

static void rnd(void *ctx, uint8_t *out, size_t n)
{
	memset(out, 0x5a, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees overreads */
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	struct tpm_rsa_public k;
	const char *why = NULL;
	if (tpm_parse_public(copy, size, &k, &why) == 0) {
		if (k.name[0] != 0 || k.name[1] != 0x0b || k.e % 2 == 0 || k.n_len < 128 ||
		    (k.sym_bits != 128 && k.sym_bits != 256))
			abort();
		uint8_t key[32] = {1}, blob[TPM_BLOB_MAX];
		int n = tpm_build_blob(&k, &k, key, sizeof key, rnd, NULL, blob, sizeof blob);
		if (n > (int)sizeof blob)
			abort();
	} else if (!why) {
		abort();
	}
	free(copy);
	return 0;
}
