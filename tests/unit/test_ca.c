/* Unit tests for src/core/ca.c over certificates made here with OpenSSL:
 * records from PEM and from base64 DER (and refusals), the same
 * certificate uploaded again keeping its state, proof of possession (the
 * right CN signed by the CA's key; a wrong CN, another key, an expired
 * proof, no pending code, a code used twice), and chain verification
 * (root-signed leaf, intermediate with and without the chain sent, an
 * intermediate trusted as an anchor, expired leaf, depth limit, no
 * anchors). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "base/enc.h"
#include "base/err.h"
#include "core/ca.h"

struct cert {
	X509 *x;
	EVP_PKEY *key;
};

/* A certificate for cn, signed by issuer (self-signed when NULL), a CA
 * when ca, valid from now + from_s to now + to_s. */
static struct cert make(const char *cn, const struct cert *issuer, bool ca, long from_s,
			long to_s)
{
	struct cert c = {X509_new(), EVP_EC_gen("P-256")};
	static long serial = 1;
	X509_set_version(c.x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c.x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(c.x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(c.x), to_s);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(c.x), "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(c.x, X509_get_subject_name(issuer ? issuer->x : c.x));
	X509_set_pubkey(c.x, c.key);
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer ? issuer->x : c.x, c.x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
						ca ? "critical,CA:TRUE" : "CA:FALSE");
	X509_add_ext(c.x, e, -1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(c.x, issuer ? issuer->key : c.key, EVP_sha256()) > 0);
	return c;
}

static void drop(struct cert *c)
{
	X509_free(c->x);
	EVP_PKEY_free(c->key);
}

static char *pem(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, x);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *out = strndup(p, (size_t)n);
	BIO_free(b);
	return out;
}

static const char *code_of(const json_t *rec)
{
	return json_string_value(
	    json_object_get(json_object_get(rec, "properties"), "verificationCode"));
}

static void test_records_and_possession(void **state)
{
	struct cert root = make("root", NULL, true, -60, 86400);
	struct cert other = make("other", NULL, true, -60, 86400);
	char *text = pem(root.x), err[200];
	json_t *rec = ca_record_build("r", text, strlen(text), NULL, "T0", err, sizeof err);
	assert_non_null(rec);
	assert_false(ca_verified(rec));
	assert_string_equal(json_string_value(json_object_get(rec, "etag")), "1");
	assert_null(ca_record_build("r", "junk", 4, NULL, "T0", err, sizeof err));
	assert_non_null(strstr(err, "not a certificate"));

	/* base64 of the DER is a certificate too. */
	unsigned char *der = NULL;
	int dn = i2d_X509(root.x, &der);
	char b64[4096];
	b64_encode(der, (size_t)dn, b64);
	OPENSSL_free(der);
	json_t *rec2 = ca_record_build("r", b64, strlen(b64), NULL, "T0", err, sizeof err);
	assert_non_null(rec2);
	json_decref(rec2);

	const char *why = NULL;
	assert_int_equal(ca_verify_possession(rec, text, strlen(text), time(NULL), "T1", &why),
			 FH_EAUTH); /* no code yet */
	ca_new_verification_code(rec, "T1");
	const char *code = code_of(rec);
	assert_non_null(code);
	assert_int_equal(strlen(code), 32);
	json_t *shown = ca_render(rec, false);
	assert_null(code_of(shown));
	json_decref(shown);

	struct cert wrong_cn = make("not-the-code", &root, false, -60, 3600);
	struct cert wrong_key = make(code, &other, false, -60, 3600);
	struct cert expired = make(code, &root, false, -7200, -3600);
	struct cert proof = make(code, &root, false, -60, 3600);
	struct cert *bad[] = {&wrong_cn, &wrong_key, &expired};
	for (size_t i = 0; i < 3; i++) {
		char *p = pem(bad[i]->x);
		assert_int_equal(ca_verify_possession(rec, p, strlen(p), time(NULL), "T2", &why),
				 FH_EAUTH);
		assert_false(ca_verified(rec));
		free(p);
	}
	char *p = pem(proof.x);
	assert_int_equal(ca_verify_possession(rec, p, strlen(p), time(NULL), "T2", &why), 0);
	assert_true(ca_verified(rec));
	assert_null(code_of(rec)); /* used up */
	assert_int_equal(ca_verify_possession(rec, p, strlen(p), time(NULL), "T3", &why), FH_EAUTH);

	/* The same certificate again keeps the state; another resets it. */
	json_t *same = ca_record_build("r", text, strlen(text), rec, "T4", err, sizeof err);
	assert_true(ca_verified(same));
	char *otext = pem(other.x);
	json_t *changed = ca_record_build("r", otext, strlen(otext), rec, "T4", err, sizeof err);
	assert_false(ca_verified(changed));
	json_decref(same);
	json_decref(changed);
	free(otext);
	free(p);
	free(text);
	json_decref(rec);
	struct cert *all[] = {&root, &other, &wrong_cn, &wrong_key, &expired, &proof};
	for (size_t i = 0; i < 6; i++)
		drop(all[i]);
}

static void test_chains(void **state)
{
	struct cert root = make("root", NULL, true, -60, 86400);
	struct cert inter = make("inter", &root, true, -60, 86400);
	struct cert inter2 = make("inter2", &inter, true, -60, 86400);
	struct cert leaf = make("dev", &root, false, -60, 3600);
	struct cert deep = make("dev", &inter2, false, -60, 3600);
	struct cert old = make("dev", &root, false, -7200, -3600);
	struct cert stranger = make("stranger", NULL, true, -60, 86400);
	int64_t now = time(NULL);
	const char *why = NULL;
	X509 *anchors[] = {root.x};
	assert_int_equal(ca_chain_verify(leaf.x, NULL, anchors, 1, 8, now, &why), 0);
	STACK_OF(X509) *chain = sk_X509_new_null();
	sk_X509_push(chain, inter2.x);
	sk_X509_push(chain, inter.x);
	assert_int_equal(ca_chain_verify(deep.x, chain, anchors, 1, 8, now, &why), 0);
	assert_int_equal(ca_chain_verify(deep.x, NULL, anchors, 1, 8, now, &why), FH_EAUTH);
	assert_non_null(strstr(why, "does not chain"));
	assert_int_equal(ca_chain_verify(deep.x, chain, anchors, 1, 1, now, &why), FH_EAUTH);
	X509 *mid[] = {inter2.x}; /* an intermediate trusted as it is */
	assert_int_equal(ca_chain_verify(deep.x, NULL, mid, 1, 8, now, &why), 0);
	assert_int_equal(ca_chain_verify(old.x, NULL, anchors, 1, 8, now, &why), FH_EAUTH);
	assert_string_equal(why, "the certificate has expired");
	X509 *strange[] = {stranger.x};
	assert_int_equal(ca_chain_verify(leaf.x, NULL, strange, 1, 8, now, &why), FH_EAUTH);
	assert_int_equal(ca_chain_verify(leaf.x, NULL, NULL, 0, 8, now, &why), FH_EAUTH);
	assert_non_null(strstr(why, "no verified CA"));
	sk_X509_free(chain);

	/* The anchors as PEM texts, through the cache and without it; the
	 * cache parses each text once and keeps it. */
	struct ca_cache cache;
	ca_cache_init(&cache);
	char *root_pem = pem(root.x), *stranger_pem = pem(stranger.x);
	json_t *pems = json_pack("[s,s]", stranger_pem, root_pem);
	assert_int_equal(ca_chain_verify_pems(leaf.x, NULL, pems, 8, now, &cache, &why), 0);
	assert_int_equal(ca_chain_verify_pems(leaf.x, NULL, pems, 8, now, NULL, &why), 0);
	assert_int_equal(cache.m.count, 2);
	X509 *cached = ca_cache_get(&cache, root_pem);
	assert_ptr_equal(ca_cache_get(&cache, root_pem), cached);
	assert_int_equal(X509_cmp(cached, root.x), 0);
	assert_null(ca_cache_get(&cache, "not a certificate"));
	json_t *none = json_pack("[s]", stranger_pem);
	assert_int_equal(ca_chain_verify_pems(leaf.x, NULL, none, 8, now, &cache, &why), FH_EAUTH);
	/* Past CA_CACHE_MAX entries it starts over, and still answers. */
	for (int i = 0; i < CA_CACHE_MAX + 1; i++) {
		struct cert t = make("churn", NULL, true, -60, 86400);
		char *t_pem = pem(t.x);
		assert_non_null(ca_cache_get(&cache, t_pem));
		free(t_pem);
		drop(&t);
	}
	assert_true(cache.m.count <= CA_CACHE_MAX);
	assert_int_equal(ca_chain_verify_pems(leaf.x, NULL, pems, 8, now, &cache, &why), 0);
	ca_cache_free(&cache);
	json_decref(pems);
	json_decref(none);
	free(root_pem);
	free(stranger_pem);
	struct cert *all[] = {&root, &inter, &inter2, &leaf, &deep, &old, &stranger};
	for (size_t i = 0; i < 7; i++)
		drop(all[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_records_and_possession),
	    cmocka_unit_test(test_chains),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
