/* Unit tests for src/core/tpm.c: public areas marshaled and parsed back
 * (and every refusal of the parser), KDFa against known answers computed
 * with Node's crypto from tpm.md Appendix B's definition, the blob's exact
 * layout (766 bytes for RSA-2048, the offsets of tpm.md §3) with a
 * deterministic RNG, and the blob opened by the software device: the key
 * delivered, and nothing for another EK or SRK or a changed byte. The
 * real-TPM check of the blob (swtpm) is in the interop tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "core/tpm.h"

static void hex(const char *h, uint8_t *out)
{
	for (size_t i = 0; h[2 * i]; i++) {
		unsigned v;
		sscanf(h + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
}

static void test_kdfa(void **state)
{
	uint8_t key[32], u[34], out[48], want[48];
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	u[0] = 0x00;
	u[1] = 0x0b;
	memset(u + 2, 0xaa, 32);
	tpm_kdfa(key, 32, "STORAGE", u, 34, NULL, 0, 128, out);
	hex("0415b32b6f43896a87e7b29be8f2ac14", want);
	assert_memory_equal(out, want, 16);
	tpm_kdfa(key, 32, "INTEGRITY", NULL, 0, NULL, 0, 256, out);
	hex("bacf689f634ece301e1f1b15b072d9c87db6a69585db42b1a0cb8f73ebe2692e", want);
	assert_memory_equal(out, want, 32);
	tpm_kdfa(key, 32, "XYZ", u, 34, u, 34, 384, out); /* two blocks */
	hex("b5d4e64ea120125d33a0c454cbba12750ee6c015931bd3b76de131e865d3ac5f1c629960d52b69b0b2"
	    "92b2e0d163fdbc",
	    want);
	assert_memory_equal(out, want, 48);
}

struct device {
	EVP_PKEY *ek, *srk;
	uint8_t ek_pub[400], srk_pub[400];
	int ek_len, srk_len;
	struct tpm_rsa_public ek_area, srk_area;
};

static void make_device(struct device *d)
{
	const char *why = NULL;
	d->ek = EVP_RSA_gen(2048);
	d->srk = EVP_RSA_gen(2048);
	d->ek_len = tpm_marshal_public(d->ek, true, d->ek_pub, sizeof d->ek_pub);
	d->srk_len = tpm_marshal_public(d->srk, false, d->srk_pub, sizeof d->srk_pub);
	assert_int_equal(d->ek_len, 316); /* the sizes tpm.md measured on swtpm */
	assert_int_equal(d->srk_len, 284);
	assert_int_equal(tpm_parse_public(d->ek_pub, (size_t)d->ek_len, &d->ek_area, &why), 0);
	assert_int_equal(tpm_parse_public(d->srk_pub, (size_t)d->srk_len, &d->srk_area, &why), 0);
}

static void drop_device(struct device *d)
{
	EVP_PKEY_free(d->ek);
	EVP_PKEY_free(d->srk);
}

/* Deterministic "randomness": a counter. */
static void counting(void *ctx, uint8_t *out, size_t n)
{
	uint8_t *c = ctx;
	for (size_t i = 0; i < n; i++)
		out[i] = (*c)++;
}

static void test_public(void **state)
{
	struct device d;
	make_device(&d);
	assert_int_equal(d.ek_area.n_len, 256);
	assert_int_equal(d.ek_area.e, 65537);
	assert_int_equal(d.ek_area.sym_bits, 128);
	assert_int_equal(d.ek_area.name[0], 0x00);
	assert_int_equal(d.ek_area.name[1], 0x0b);
	assert_true(tpm_same_key(&d.ek_area, &d.ek_area));
	assert_false(tpm_same_key(&d.ek_area, &d.srk_area));

	struct tpm_rsa_public p;
	const char *why = NULL;
	uint8_t b[400];
	assert_int_equal(tpm_parse_public(d.ek_pub, 1, &p, &why), -1);
	assert_int_equal(tpm_parse_public(d.ek_pub, (size_t)d.ek_len - 1, &p, &why), -1);
	assert_non_null(strstr(why, "size does not match"));
	memcpy(b, d.ek_pub, (size_t)d.ek_len);
	b[1] -= 1; /* the declared size one short: a byte left over */
	assert_int_equal(tpm_parse_public(b, (size_t)d.ek_len - 1, &p, &why), -1);
	memcpy(b, d.ek_pub, (size_t)d.ek_len);
	b[3] = 0x23; /* ECC */
	assert_int_equal(tpm_parse_public(b, (size_t)d.ek_len, &p, &why), -1);
	assert_non_null(strstr(why, "not an RSA key"));
	memcpy(b, d.ek_pub, (size_t)d.ek_len);
	b[5] = 0x04; /* SHA-1 */
	assert_int_equal(tpm_parse_public(b, (size_t)d.ek_len, &p, &why), -1);
	assert_non_null(strstr(why, "SHA-256"));
	memcpy(b, d.srk_pub, (size_t)d.srk_len);
	b[2 + 10 + 4] = 0x00; /* SRK: symmetric keyBits 128 -> 0x0000 */
	b[2 + 10 + 5] = 0x00;
	assert_int_equal(tpm_parse_public(b, (size_t)d.srk_len, &p, &why), -1);
	assert_non_null(strstr(why, "AES"));
	/* A modulus size that is not what keyBits says: the last TPM2B one
	 * byte shorter, the whole one byte shorter. */
	memcpy(b, d.srk_pub, (size_t)d.srk_len);
	b[0] = 0x01;
	b[1] = 0x19;
	b[2 + 24] = 0x00;
	b[2 + 25] = 0xff;
	assert_int_equal(tpm_parse_public(b, (size_t)d.srk_len - 1, &p, &why), -1);
	assert_non_null(strstr(why, "modulus"));
	drop_device(&d);
}

static void test_blob(void **state)
{
	struct device d, other;
	make_device(&d);
	make_device(&other);
	uint8_t key[32], blob[TPM_BLOB_MAX], got[TPM_KEY_MAX], seed = 1;
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(0x40 + i);
	int n = tpm_build_blob(&d.ek_area, &d.srk_area, key, sizeof key, counting, &seed, blob,
	                       sizeof blob);
	assert_int_equal(n, 766);
	/* tpm.md §3's offsets: #1 0x0034, #2 at 54, #3 at 312 (0x008e), #4 at
	 * 456, #5 at 714 (0x0030, keyedhash, SHA-256, 0x00040440), #6 at 764. */
	assert_int_equal(blob[0] << 8 | blob[1], 0x34);
	assert_int_equal(blob[2] << 8 | blob[3], 0x20);
	assert_int_equal(blob[54] << 8 | blob[55], 0x100);
	assert_int_equal(blob[312] << 8 | blob[313], 0x8e);
	assert_int_equal(blob[456] << 8 | blob[457], 0x100);
	static const uint8_t pub_head[] = {0x00, 0x30, 0x00, 0x08, 0x00, 0x0b, 0x00, 0x04, 0x04,
	                                   0x40, 0x00, 0x00, 0x00, 0x05, 0x00, 0x0b, 0x00, 0x20};
	assert_memory_equal(blob + 714, pub_head, sizeof pub_head);
	assert_int_equal(blob[764] << 8 | blob[765], 0);

	size_t got_len = 0;
	const char *why = NULL;
	if (tpm_open_blob(d.ek, &d.ek_area, d.srk, &d.srk_area, blob, (size_t)n, got, &got_len,
	                  &why) != 0)
		print_error("open: %s\n", why);
	assert_int_equal(tpm_open_blob(d.ek, &d.ek_area, d.srk, &d.srk_area, blob, (size_t)n, got,
	                               &got_len, &why),
	                 0);
	assert_int_equal(got_len, 32);
	assert_memory_equal(got, key, 32);

	/* Another TPM cannot open it; a changed byte anywhere is caught. */
	assert_int_equal(tpm_open_blob(other.ek, &other.ek_area, d.srk, &d.srk_area, blob,
	                               (size_t)n, got, &got_len, &why),
	                 -1);
	assert_int_equal(tpm_open_blob(d.ek, &d.ek_area, other.srk, &other.srk_area, blob,
	                               (size_t)n, got, &got_len, &why),
	                 -1);
	static const size_t flips[] = {10, 40, 100, 330, 400, 500, 730, 760};
	for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
		blob[flips[i]] ^= 0x01;
		assert_int_equal(tpm_open_blob(d.ek, &d.ek_area, d.srk, &d.srk_area, blob,
		                               (size_t)n, got, &got_len, &why),
		                 -1);
		blob[flips[i]] ^= 0x01;
	}
	assert_int_equal(tpm_open_blob(d.ek, &d.ek_area, d.srk, &d.srk_area, blob, (size_t)n - 1,
	                               got, &got_len, &why),
	                 -1);

	/* Key sizes: 1..64 bytes, nothing beyond; a small output buffer. */
	assert_true(tpm_build_blob(&d.ek_area, &d.srk_area, key, 1, counting, &seed, blob,
	                           sizeof blob) > 0);
	uint8_t big[65] = {0};
	assert_int_equal(tpm_build_blob(&d.ek_area, &d.srk_area, big, 65, counting, &seed, blob,
	                                sizeof blob),
	                 -1);
	assert_int_equal(tpm_build_blob(&d.ek_area, &d.srk_area, key, 32, counting, &seed, blob,
	                                700),
	                 -1);
	drop_device(&d);
	drop_device(&other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kdfa),
	    cmocka_unit_test(test_public),
	    cmocka_unit_test(test_blob),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
