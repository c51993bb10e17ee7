/* Fuzz target for src/core/ca.c: arbitrary bytes as an uploaded CA
 * certificate (PEM, or the base64 of a DER) and as a verification
 * certificate. Invariants: a parsed certificate builds a record whose
 * certificate re-parses and whose thumbprint is 40 hex digits (its info
 * agrees); the bytes read as a PEM chain never crash; a record is
 * never verified by input that is not a certificate signed by it; nothing
 * crashes or leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/ca.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	X509 *x = ca_parse(text, size);
	char err[200];
	json_t *rec = ca_record_build("fuzz", text, size, NULL, "2026-01-01T00:00:00Z", err,
				      sizeof err);
	if ((x != NULL) != (rec != NULL))
		abort();
	if (rec) {
		const char *pem = ca_certificate(rec);
		X509 *again = pem ? ca_parse(pem, strlen(pem)) : NULL;
		const char *thumb = json_string_value(
		    json_object_get(json_object_get(rec, "properties"), "thumbprint"));
		if (!again || !thumb || strlen(thumb) != 40 || X509_cmp(x, again) != 0)
			abort();
		X509_free(again);
		ca_new_verification_code(rec, "2026-01-01T00:00:00Z");
		const char *why = NULL;
		/* The input as its own proof: its CN is not the fresh random code. */
		if (ca_verify_possession(rec, text, size, 1767225600, "2026-01-01T00:00:00Z", &why) == 0)
			abort();
		json_decref(ca_render(rec, true));
		/* What the DPS shows of it: both thumbprints (the version is the
		 * certificate's, whatever it says). */
		json_t *info = ca_cert_info(x);
		const char *sha1 = json_string_value(json_object_get(info, "sha1Thumbprint"));
		const char *sha256 = json_string_value(json_object_get(info, "sha256Thumbprint"));
		if (!sha1 || strcmp(sha1, thumb) != 0 || !sha256 || strlen(sha256) != 64)
			abort();
		json_decref(info);
		json_decref(rec);
	}
	X509_free(x);
	/* The same bytes as a chain of PEM certificates (the DPS keeps a
	 * device's so): its first certificate is what ca_parse reads of PEM. */
	X509 *leaf;
	STACK_OF(X509) *rest;
	if (ca_parse_chain(text, &leaf, &rest) == 0) {
		if (!leaf || !rest)
			abort();
		X509_free(leaf);
		sk_X509_pop_free(rest, X509_free);
	}
	free(text);
	return 0;
}
