/* Unit tests for src/codec/sas.c: parsing in any field order, signature
 * verification against vectors computed with the openssl CLI, expiry,
 * every FH_EINVAL case, building and group-key derivation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/enc.h"
#include "base/err.h"
#include "codec/sas.h"

/* Vectors computed with:
 *   printf 'myhub.azure-devices.net%%2Fdevices%%2Fd1\n1700000000' |
 *     openssl dgst -sha256 -mac HMAC -macopt hexkey:<hex of KEY> -binary | base64
 *   printf 'reg-dev-1' | openssl dgst ... (GROUP_KEY) */
#define KEY "ZGV2aWNlLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDEyMw=="
#define OTHER_KEY "ZGV2aWNlLWtleS1zZWNvbmRhcnktMDEyMzQ1Njc4OWE="
#define SR "myhub.azure-devices.net%2Fdevices%2Fd1"
#define SIG_ENC "wY6nVeedzg9b6ea5M2HeyzCsOhSEp%2BDb9L%2FfIQ6kCMM%3D"
#define SIG_ENC_LOWER "wY6nVeedzg9b6ea5M2HeyzCsOhSEp%2bDb9L%2ffIQ6kCMM%3d"
#define GROUP_KEY "Z3JvdXAta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="
#define DERIVED "oQy8aLjv3LGDpL8lvRMUf/zC27VztnU7qUOE/A7rJeA="

static size_t key_bytes(const char *b64, uint8_t out[64])
{
	size_t n;
	assert_int_equal(b64_decode(b64, strlen(b64), out, &n), 0);
	return n;
}

static int parse(const char *tok, struct sas_token *t, const char **why)
{
	return sas_parse(tok, strlen(tok), t, why);
}

static void test_known_vector(void **state)
{
	(void)state;
	const char *tok = "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1700000000";
	struct sas_token t;
	const char *why = "x";
	assert_int_equal(parse(tok, &t, &why), 0);
	assert_null(why);
	assert_string_equal(t.resource, "myhub.azure-devices.net/devices/d1");
	assert_int_equal(t.sr_raw_len, strlen(SR));
	assert_memory_equal(t.sr_raw, SR, strlen(SR));
	assert_int_equal(t.se_raw_len, 10);
	assert_memory_equal(t.se_raw, "1700000000", 10);
	assert_int_equal(t.expiry, 1700000000);
	assert_false(t.has_key_name);
	assert_string_equal(t.key_name, "");

	uint8_t key[64];
	size_t kn = key_bytes(KEY, key);
	assert_int_equal(sas_signature_ok(&t, key, kn), 1);
	kn = key_bytes(OTHER_KEY, key);
	assert_int_equal(sas_signature_ok(&t, key, kn), 0);
}

static void test_lowercase_escapes_and_order(void **state)
{
	(void)state;
	static const char *const toks[] = {
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC_LOWER "&se=1700000000",
	    "SharedAccessSignature sig=" SIG_ENC "&se=1700000000&sr=" SR,
	    "SharedAccessSignature se=1700000000&skn=owner&sr=" SR "&sig=" SIG_ENC,
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&skn=my%20policy&se=1700000000",
	};
	uint8_t key[64];
	size_t kn = key_bytes(KEY, key);
	for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
		struct sas_token t;
		const char *why = NULL;
		assert_int_equal(parse(toks[i], &t, &why), 0);
		assert_int_equal(sas_signature_ok(&t, key, kn), 1);
		assert_int_equal(t.expiry, 1700000000);
	}
	struct sas_token t;
	assert_int_equal(parse(toks[3], &t, NULL), 0);
	assert_true(t.has_key_name);
	assert_string_equal(t.key_name, "my policy");
}

static void test_raw_sr_is_signed(void **state)
{
	(void)state;
	/* Same resource, differently encoded: the HMAC is over the raw text,
	 * so the signature for the encoded form does not match. */
	const char *tok = "SharedAccessSignature sr=myhub.azure-devices.net/devices/d1&sig=" SIG_ENC
	                  "&se=1700000000";
	struct sas_token t;
	assert_int_equal(parse(tok, &t, NULL), 0);
	assert_string_equal(t.resource, "myhub.azure-devices.net/devices/d1");
	uint8_t key[64];
	size_t kn = key_bytes(KEY, key);
	assert_int_equal(sas_signature_ok(&t, key, kn), 0);
}

static void test_build_roundtrip(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	assert_int_equal(sas_build(&b, SR, KEY, NULL, 1700000000), 0);
	assert_string_equal(b.data,
	                    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1700000000");
	buf_free(&b);

	assert_int_equal(sas_build(&b, "127.0.0.5", KEY, "iothubowner", 2000000000), 0);
	struct sas_token t;
	const char *why = NULL;
	assert_int_equal(sas_parse(b.data, b.len, &t, &why), 0);
	assert_string_equal(t.resource, "127.0.0.5");
	assert_true(t.has_key_name);
	assert_string_equal(t.key_name, "iothubowner");
	uint8_t key[64];
	size_t kn = key_bytes(KEY, key);
	assert_int_equal(sas_signature_ok(&t, key, kn), 1);
	kn = key_bytes(OTHER_KEY, key);
	assert_int_equal(sas_signature_ok(&t, key, kn), 0);
	assert_int_equal(sas_signature_ok(&t, key, 0), 0);
	buf_free(&b);

	/* A key name needing escapes comes back decoded. */
	assert_int_equal(sas_build(&b, "h", KEY, "a&b=c", 5), 0);
	assert_int_equal(sas_parse(b.data, b.len, &t, &why), 0);
	assert_string_equal(t.key_name, "a&b=c");
	buf_free(&b);
}

static void test_signature_ok_b64(void **state)
{
	struct buf b = BUF_INIT;
	struct sas_token t;
	const char *why;
	assert_int_equal(sas_build(&b, SR, KEY, NULL, 1700000000), 0);
	assert_int_equal(sas_parse(b.data, b.len, &t, &why), 0);
	assert_int_equal(sas_signature_ok_b64(&t, KEY), 1);
	assert_int_equal(sas_signature_ok_b64(&t, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), 0);
	assert_int_equal(sas_signature_ok_b64(&t, NULL), 0);
	assert_int_equal(sas_signature_ok_b64(&t, ""), 0);
	assert_int_equal(sas_signature_ok_b64(&t, "not base64!"), 0);
	buf_free(&b);
}

static void test_build_bad_key(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	assert_int_equal(sas_build(&b, SR, "not base64!", NULL, 1), FH_EINVAL);
	assert_int_equal(sas_build(&b, SR, "", NULL, 1), FH_EINVAL);
	assert_int_equal(sas_build(&b, SR, NULL, NULL, 1), FH_EINVAL);
	assert_int_equal(sas_build(&b, NULL, KEY, NULL, 1), FH_EINVAL);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static void test_expiry(void **state)
{
	(void)state;
	struct sas_token t;
	assert_int_equal(
	    parse("SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1700000000", &t, NULL), 0);
	assert_int_equal(sas_check_expiry(&t, 1699999999), 0);
	assert_int_equal(sas_check_expiry(&t, 1700000000), FH_EAUTH);
	assert_int_equal(sas_check_expiry(&t, 1800000000), FH_EAUTH);
	assert_int_equal(parse("SharedAccessSignature sr=x&sig=" SIG_ENC "&se=0", &t, NULL), 0);
	assert_int_equal(sas_check_expiry(&t, 0), FH_EAUTH);
}

static void test_invalid(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",
	    "SharedAccessSignature",
	    "SharedAccessSignature ",
	    "sharedaccesssignature sr=" SR "&sig=" SIG_ENC "&se=1",
	    "SharedAccessSignature  sr=" SR "&sig=" SIG_ENC "&se=1",
	    "Bearer sr=" SR "&sig=" SIG_ENC "&se=1",
	    /* missing fields */
	    "SharedAccessSignature sig=" SIG_ENC "&se=1",
	    "SharedAccessSignature sr=" SR "&se=1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC,
	    /* duplicates */
	    "SharedAccessSignature sr=" SR "&sr=" SR "&sig=" SIG_ENC "&se=1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&sig=" SIG_ENC "&se=1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1&se=1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1&skn=a&skn=a",
	    /* unknown or malformed fields */
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1&foo=bar",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1&SR=x",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1&",
	    "SharedAccessSignature sr=" SR "&&sig=" SIG_ENC "&se=1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se",
	    "SharedAccessSignature =x&sr=" SR "&sig=" SIG_ENC "&se=1",
	    /* se not decimal */
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=-1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=12x",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1.5",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se= 1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=99999999999999999999999",
	    /* sig not base64 of 32 bytes */
	    "SharedAccessSignature sr=" SR "&sig=&se=1",
	    "SharedAccessSignature sr=" SR "&sig=abcd&se=1",
	    "SharedAccessSignature sr=" SR "&sig=wY6nVeedzg9b6ea5M2HeyzCsOhSEp+Db9L/fIQ6kCMM&se=1",
	    "SharedAccessSignature sr=" SR
	    "&sig=wY6nVeedzg9b6ea5M2HeyzCsOhSEp!Db9L!fIQ6kCMM%3D&se=1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "AAAA&se=1",
	    /* bad percent escapes */
	    "SharedAccessSignature sr=a%2&sig=" SIG_ENC "&se=1",
	    "SharedAccessSignature sr=a%zz&sig=" SIG_ENC "&se=1",
	    "SharedAccessSignature sr=a%00b&sig=" SIG_ENC "&se=1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "%3&se=1",
	    "SharedAccessSignature sr=" SR "&sig=" SIG_ENC "&se=1&skn=%g0",
	    /* empty sr */
	    "SharedAccessSignature sr=&sig=" SIG_ENC "&se=1",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct sas_token t;
		const char *why = NULL;
		int rc = parse(bad[i], &t, &why);
		if (rc != FH_EINVAL)
			fail_msg("accepted bad token %zu: %s", i, bad[i]);
		assert_non_null(why);
		assert_true(strlen(why) > 0);
	}
}

static void test_length_limits(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	struct sas_token t;
	const char *why = NULL;

	/* sr of exactly SAS_MAX_RESOURCE decoded chars is fine, one more is not. */
	buf_appends(&b, "SharedAccessSignature sig=" SIG_ENC "&se=1&sr=");
	for (int i = 0; i < SAS_MAX_RESOURCE; i++)
		buf_appendc(&b, 'a');
	assert_int_equal(sas_parse(b.data, b.len, &t, &why), 0);
	assert_int_equal(strlen(t.resource), SAS_MAX_RESOURCE);
	buf_appendc(&b, 'a');
	assert_int_equal(sas_parse(b.data, b.len, &t, &why), FH_EINVAL);
	buf_reset(&b);

	/* skn limit */
	buf_appends(&b, "SharedAccessSignature sig=" SIG_ENC "&se=1&sr=x&skn=");
	for (int i = 0; i < SAS_MAX_KEYNAME; i++)
		buf_appendc(&b, 'k');
	assert_int_equal(sas_parse(b.data, b.len, &t, &why), 0);
	buf_appendc(&b, 'k');
	assert_int_equal(sas_parse(b.data, b.len, &t, &why), FH_EINVAL);
	buf_reset(&b);

	/* whole token limit */
	buf_appends(&b, "SharedAccessSignature sig=" SIG_ENC "&se=1&sr=");
	while (b.len <= SAS_MAX_TOKEN)
		buf_appends(&b, "%41");
	assert_int_equal(sas_parse(b.data, b.len, &t, &why), FH_EINVAL);
	buf_free(&b);

	/* Only n bytes are read: a valid prefix of a longer string parses. */
	const char *tok = "SharedAccessSignature sr=x&sig=" SIG_ENC "&se=12&junk";
	assert_int_equal(sas_parse(tok, strlen(tok) - 5, &t, &why), 0);
	assert_int_equal(t.expiry, 12);
}

static void test_derive_key(void **state)
{
	(void)state;
	char out[45];
	assert_int_equal(sas_derive_key(GROUP_KEY, "reg-dev-1", out), 0);
	assert_string_equal(out, DERIVED);
	assert_int_equal(sas_derive_key("***", "reg-dev-1", out), FH_EINVAL);
	assert_int_equal(sas_derive_key("", "reg-dev-1", out), FH_EINVAL);
	assert_int_equal(sas_derive_key(NULL, "reg-dev-1", out), FH_EINVAL);
	assert_int_equal(sas_derive_key(GROUP_KEY, NULL, out), FH_EINVAL);

	/* A token signed with the derived key verifies with its bytes. */
	struct buf b = BUF_INIT;
	assert_int_equal(sas_build(&b, "0ne00000001/registrations/reg-dev-1", DERIVED,
	                           "registration", 1700000000),
	                 0);
	struct sas_token t;
	assert_int_equal(sas_parse(b.data, b.len, &t, NULL), 0);
	uint8_t key[64];
	size_t kn = key_bytes(DERIVED, key);
	assert_int_equal(sas_signature_ok(&t, key, kn), 1);
	buf_free(&b);
}

static void test_service_policy(void **state)
{
	struct sas_policy pol[2] = {{"readonly", 1, "", ""}, {"owner", 3, "", ""}};
	snprintf(pol[0].primary, sizeof pol[0].primary, "%s", KEY);
	snprintf(pol[1].primary, sizeof pol[1].primary, "%s", "b3RoZXIta2V5LTAxMjM0NTY3ODlhYmNkZWY=");
	snprintf(pol[1].secondary, sizeof pol[1].secondary, "%s", KEY);
	struct buf b = BUF_INIT;
	struct sas_token t;
	const char *why = NULL;
	assert_int_equal(sas_service_token(NULL, 0, &t, &why), FH_EAUTH);
	assert_string_equal(why, "no Authorization header");
	assert_int_equal(sas_build(&b, "hub.test", KEY, "owner", 2000), 0);
	assert_int_equal(sas_service_token(b.data, 3000, &t, &why), FH_EAUTH);
	assert_string_equal(why, "token expired");
	assert_int_equal(sas_service_token(b.data, 1000, &t, &why), 0);
	/* signed with owner's secondary key */
	assert_ptr_equal(sas_policy_verify(&t, pol, 2, &why), &pol[1]);
	buf_reset(&b);
	assert_int_equal(sas_build(&b, "hub.test", KEY, "nobody", 2000), 0);
	assert_int_equal(sas_service_token(b.data, 1000, &t, &why), 0);
	assert_null(sas_policy_verify(&t, pol, 2, &why));
	assert_string_equal(why, "unknown shared access policy");
	buf_reset(&b);
	assert_int_equal(sas_build(&b, "hub.test", "b3RoZXIta2V5LTAxMjM0NTY3ODlhYmNkZWY=", "readonly",
				   2000),
			 0);
	assert_int_equal(sas_service_token(b.data, 1000, &t, &why), 0);
	assert_null(sas_policy_verify(&t, pol, 2, &why));
	assert_string_equal(why, "signature does not match the policy key");
	buf_reset(&b);
	assert_int_equal(sas_build(&b, "hub.test", KEY, NULL, 2000), 0); /* no skn */
	assert_int_equal(sas_service_token(b.data, 1000, &t, &why), 0);
	assert_null(sas_policy_verify(&t, pol, 2, &why));
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_vector),
	    cmocka_unit_test(test_lowercase_escapes_and_order),
	    cmocka_unit_test(test_raw_sr_is_signed),
	    cmocka_unit_test(test_build_roundtrip),
	    cmocka_unit_test(test_signature_ok_b64),
	    cmocka_unit_test(test_build_bad_key),
	    cmocka_unit_test(test_expiry),
	    cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_length_limits),
	    cmocka_unit_test(test_derive_key),
	    cmocka_unit_test(test_service_policy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
