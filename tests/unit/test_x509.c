/* Unit tests for src/base/x509.c over certificates made here with OpenSSL
 * (P-256 keys, self-signed): thumbprints in both digests and any case,
 * the subject's common name (the last of several, none, one too long),
 * and validity before, within and after the certificate's period. The
 * expected SHA-1 is computed independently with EVP_Digest over the DER. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "base/err.h"
#include "base/x509.h"

/* A self-signed certificate valid from now + from_s to now + to_s, with
 * the given common names (NULL-terminated list; none when empty). */
static X509 *make_cert(const char *const *cns, long from_s, long to_s)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	assert_non_null(key);
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(x), to_s);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"fleethub", -1,
				   -1, 0);
	for (size_t i = 0; cns[i]; i++)
		X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cns[i],
					   -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, key);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	EVP_PKEY_free(key);
	return x;
}

static void test_thumbprints(void **state)
{
	X509 *a = make_cert((const char *[]){"dev-1", NULL}, -60, 3600);
	X509 *b = make_cert((const char *[]){"dev-1", NULL}, -60, 3600);
	char sha1[41], sha256[65];
	assert_int_equal(x509_thumbprints(a, sha1, sha256), 0);
	assert_int_equal(strlen(sha1), 40);
	assert_int_equal(strlen(sha256), 64);
	for (size_t i = 0; i < 64; i++)
		assert_true(isdigit((unsigned char)sha256[i]) || (sha256[i] >= 'A' && sha256[i] <= 'F'));

	/* The SHA-1 of the DER, independently. */
	unsigned char *der = NULL;
	int n = i2d_X509(a, &der);
	assert_true(n > 0);
	unsigned char md[20];
	unsigned mdlen = 0;
	assert_int_equal(EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha1(), NULL), 1);
	OPENSSL_free(der);
	char want[41];
	for (int i = 0; i < 20; i++)
		snprintf(want + 2 * i, 3, "%02X", md[i]);
	assert_string_equal(sha1, want);

	char lower[65];
	for (size_t i = 0; i <= 64; i++)
		lower[i] = (char)tolower((unsigned char)sha256[i]);
	char b1[41], b256[65];
	assert_int_equal(x509_thumbprints(b, b1, b256), 0);
	assert_true(x509_thumbprint_is(sha1, sha1, sha256));
	assert_true(x509_thumbprint_is(lower, sha1, sha256));
	assert_false(x509_thumbprint_is(sha1, b1, b256)); /* same subject, another key */
	assert_false(x509_thumbprint_is("", sha1, sha256));
	assert_false(x509_thumbprint_is(NULL, sha1, sha256));
	char prefix[41];
	memcpy(prefix, sha1, 39);
	prefix[39] = '\0'; /* a prefix is not a match */
	assert_false(x509_thumbprint_is(prefix, sha1, sha256));
	X509_free(a);
	X509_free(b);
}

static void test_subject_cn(void **state)
{
	char cn[16];
	X509 *x = make_cert((const char *[]){"first", "dev-2", NULL}, -60, 3600);
	assert_int_equal(x509_subject_cn(x, cn, sizeof cn), 0);
	assert_string_equal(cn, "dev-2");
	X509_free(x);
	x = make_cert((const char *[]){NULL}, -60, 3600);
	assert_int_equal(x509_subject_cn(x, cn, sizeof cn), FH_ENOTFOUND);
	X509_free(x);
	x = make_cert((const char *[]){"a-name-longer-than-16", NULL}, -60, 3600);
	assert_int_equal(x509_subject_cn(x, cn, sizeof cn), FH_ENOTFOUND);
	X509_free(x);
}

static void test_check_time(void **state)
{
	X509 *x = make_cert((const char *[]){"dev-3", NULL}, -60, 3600);
	const char *why = NULL;
	int64_t now = (int64_t)time(NULL);
	assert_int_equal(x509_check_time(x, now, &why), 0);
	assert_int_equal(x509_check_time(x, now + 7200, &why), FH_EAUTH);
	assert_string_equal(why, "the certificate has expired");
	assert_int_equal(x509_check_time(x, now - 3600, &why), FH_EAUTH);
	assert_string_equal(why, "the certificate is not valid yet");
	X509_free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_thumbprints),
	    cmocka_unit_test(test_subject_cn),
	    cmocka_unit_test(test_check_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
