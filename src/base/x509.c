/* X.509 facts: see x509.h. */
#include "base/x509.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/err.h"

static void hex_upper(const unsigned char *p, unsigned n, char *out)
{
	static const char digits[] = "0123456789ABCDEF";
	for (unsigned i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

int x509_thumbprints(X509 *cert, char sha1[41], char sha256[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (X509_digest(cert, EVP_sha1(), md, &n) != 1 || n != 20)
		return FH_EIO;
	hex_upper(md, n, sha1);
	if (X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32)
		return FH_EIO;
	hex_upper(md, n, sha256);
	return 0;
}

bool x509_thumbprint_is(const char *hex, const char *sha1, const char *sha256)
{
	return hex && *hex && (strcasecmp(hex, sha1) == 0 || strcasecmp(hex, sha256) == 0);
}

int x509_subject_cn(X509 *cert, char *out, size_t outlen)
{
	X509_NAME *name = X509_get_subject_name(cert);
	int i = -1, last = -1;
	while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >= 0)
		last = i;
	if (last < 0)
		return FH_ENOTFOUND;
	ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last));
	unsigned char *utf8 = NULL;
	int n = ASN1_STRING_to_UTF8(&utf8, v);
	int rc = FH_ENOTFOUND;
	if (n >= 0 && (size_t)n < outlen && memchr(utf8, 0, (size_t)n) == NULL) {
		memcpy(out, utf8, (size_t)n);
		out[n] = '\0';
		rc = 0;
	}
	OPENSSL_free(utf8);
	return rc;
}

int x509_check_time(X509 *cert, int64_t now_s, const char **why)
{
	time_t now = (time_t)now_s;
	if (X509_cmp_time(X509_get0_notAfter(cert), &now) <= 0) {
		*why = "the certificate has expired";
		return FH_EAUTH;
	}
	if (X509_cmp_time(X509_get0_notBefore(cert), &now) > 0) {
		*why = "the certificate is not valid yet";
		return FH_EAUTH;
	}
	return 0;
}

/* ---- making certificates and their files ---- */

void x509_ssl_error(char *err, size_t errlen, const char *what)
{
	char detail[256];
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, detail, sizeof detail);
	else
		snprintf(detail, sizeof detail, "unknown error");
	ERR_clear_error();
	snprintf(err, errlen, "%s: %s", what, detail);
}

X509 *x509_read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ERR_clear_error();
	return x;
}

EVP_PKEY *x509_read_key_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	ERR_clear_error();
	return k;
}

int x509_write_pem(const char *path, X509 *x, EVP_PKEY *k, char *err, size_t errlen)
{
	struct buf tmp = BUF_INIT;
	buf_printf(&tmp, "%s.tmp", path);
	int rc = -1;
	FILE *f = NULL;
	unlink(tmp.data);
	int fd = open(tmp.data, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || fchmod(fd, 0600) != 0) {
		snprintf(err, errlen, "cannot create %s: %s", tmp.data, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto done;
	}
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		snprintf(err, errlen, "cannot write %s: %s", tmp.data, strerror(errno));
		goto done;
	}
	int ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ok = 0;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok) {
		x509_ssl_error(err, errlen, "cannot write PEM file");
		unlink(tmp.data);
		goto done;
	}
	if (rename(tmp.data, path) != 0) {
		snprintf(err, errlen, "cannot rename %s: %s", tmp.data, strerror(errno));
		unlink(tmp.data);
		goto done;
	}
	rc = 0;
done:
	buf_free(&tmp);
	return rc;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e)
		return -1;
	int ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

static int set_random_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	int rc = -1;
	if (bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		rc = 0;
	BN_free(bn);
	return rc;
}

X509 *x509_issue(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long days,
		 enum x509_role role, const GENERAL_NAMES *san)
{
	X509 *x = X509_new();
	if (!x || !X509_set_version(x, 2) || set_random_serial(x) != 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) ||
	    !X509_set_pubkey(x, key))
		goto fail;
	X509_NAME *subj = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(subj, "O", MBSTRING_UTF8, (const unsigned char *)"fleethub",
					-1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
					-1, 0))
		goto fail;
	if (!X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subj))
		goto fail;
	X509 *iss = issuer ? issuer : x;
	bool ca = role == X509_ROLE_ROOT || role == X509_ROLE_INTERMEDIATE;
	if (add_ext(x, iss, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE") ||
	    add_ext(x, iss, NID_key_usage,
		    ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") ||
	    add_ext(x, iss, NID_subject_key_identifier, "hash") ||
	    add_ext(x, iss, NID_authority_key_identifier, issuer ? "keyid:always" : "keyid"))
		goto fail;
	if (role == X509_ROLE_SERVER || role == X509_ROLE_CLIENT) {
		if (add_ext(x, iss, NID_ext_key_usage,
			    role == X509_ROLE_SERVER ? "serverAuth" : "clientAuth"))
			goto fail;
	}
	if (san && X509_add1_ext_i2d(x, NID_subject_alt_name, (void *)san, 0, 0) != 1)
		goto fail;
	if (!X509_sign(x, issuer ? issuer_key : key, EVP_sha256()))
		goto fail;
	return x;
fail:
	X509_free(x);
	return NULL;
}
