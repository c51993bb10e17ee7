/* X.509 facts: see x509.h. */
#include "base/x509.h"

#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

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

bool x509_thumbprint_matches(X509 *cert, const char *hex)
{
	char sha1[41], sha256[65];
	if (!hex || !*hex || x509_thumbprints(cert, sha1, sha256) != 0)
		return false;
	return strcasecmp(hex, sha1) == 0 || strcasecmp(hex, sha256) == 0;
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
