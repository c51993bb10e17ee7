/* Development certificate authority (see devca.h). Files under
 * DATA_DIR/tls (mode 0700):
 *   ca.pem, ca.key         self-signed CA, ECDSA P-256, 10 years; kept once made
 *   server.pem, server.key server certificate signed by the CA, 825 days
 * Invariants: every file is written to a temporary name with mode 0600 and
 * renamed into place, so a crash never leaves a half-written key; the server
 * certificate on disk is re-issued when it is unreadable, not signed by the
 * current CA, not matching its key, expiring within 30 days, or when its SAN
 * set (DNS names + IP addresses, compared as sets) differs from the wanted
 * one. A new CA is made only when the CA files are missing or unusable. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "base/buf.h"
#include "base/mem.h"
#include "base/x509.h"
#include "server/devca.h"

#define CA_DAYS 3650
#define SERVER_DAYS 825
#define RENEW_BEFORE_S (30L * 24 * 3600)

static int ensure_dir(const char *path, char *err, size_t errlen)
{
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s is not a directory", path);
		return -1;
	}
	return 0;
}

/* The SAN extension value for names and ips, or NULL on a bad entry. */
static GENERAL_NAMES *make_san(const char *const *names, size_t nn, const char *const *ips,
                               size_t ni)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	if (!gens)
		return NULL;
	for (size_t i = 0; i < nn; i++) {
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		if (!g || !s || !ASN1_STRING_set(s, names[i], (int)strlen(names[i]))) {
			GENERAL_NAME_free(g);
			ASN1_IA5STRING_free(s);
			goto fail;
		}
		GENERAL_NAME_set0_value(g, GEN_DNS, s);
		if (!sk_GENERAL_NAME_push(gens, g)) {
			GENERAL_NAME_free(g);
			goto fail;
		}
	}
	for (size_t i = 0; i < ni; i++) {
		ASN1_OCTET_STRING *o = a2i_IPADDRESS(ips[i]);
		GENERAL_NAME *g = o ? GENERAL_NAME_new() : NULL;
		if (!g) {
			ASN1_OCTET_STRING_free(o);
			goto fail;
		}
		GENERAL_NAME_set0_value(g, GEN_IPADD, o);
		if (!sk_GENERAL_NAME_push(gens, g)) {
			GENERAL_NAME_free(g);
			goto fail;
		}
	}
	return gens;
fail:
	GENERAL_NAMES_free(gens);
	return NULL;
}

/* ---- SAN sets ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Canonical sorted, deduplicated entries "dns:<lowercase>" / "ip:<hex>". */
struct san_set {
	char **v;
	size_t n;
};

static void san_add(struct san_set *s, const char *kind, const unsigned char *p, size_t n, bool hex)
{
	struct buf b = BUF_INIT;
	buf_appends(&b, kind);
	for (size_t i = 0; i < n; i++) {
		if (hex)
			buf_printf(&b, "%02x", p[i]);
		else
			buf_appendc(&b, (char)tolower(p[i]));
	}
	s->v = xrealloc(s->v, (s->n + 1) * sizeof *s->v);
	s->v[s->n++] = buf_steal(&b);
	buf_free(&b);
}

static void san_finish(struct san_set *s)
{
	if (s->n == 0)
		return;
	qsort(s->v, s->n, sizeof *s->v, cmp_str);
	size_t k = 1;
	for (size_t i = 1; i < s->n; i++) {
		if (strcmp(s->v[i], s->v[k - 1]) == 0)
			free(s->v[i]);
		else
			s->v[k++] = s->v[i];
	}
	s->n = k;
}

static void san_free(struct san_set *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
}

static bool san_equal(const struct san_set *a, const struct san_set *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i], b->v[i]) != 0)
			return false;
	return true;
}

static void san_of_cert(X509 *x, struct san_set *s)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		int type;
		ASN1_STRING *v = GENERAL_NAME_get0_value(g, &type);
		if (type == GEN_DNS)
			san_add(s, "dns:", ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v),
			        false);
		else if (type == GEN_IPADD)
			san_add(s, "ip:", ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v),
			        true);
	}
	GENERAL_NAMES_free(gens);
	san_finish(s);
}

static int san_wanted(const char *const *names, size_t nn, const char *const *ips, size_t ni,
                      struct san_set *s, char *err, size_t errlen)
{
	for (size_t i = 0; i < nn; i++) {
		const char *n = names[i];
		bool ok = n[0] != '\0' && strlen(n) <= 253;
		for (const char *p = n; *p && ok; p++)
			ok = isalnum((unsigned char)*p) || *p == '-' || *p == '.' || *p == '_';
		if (!ok) {
			snprintf(err, errlen, "\"%s\" cannot be a certificate DNS name", n);
			return -1;
		}
		san_add(s, "dns:", (const unsigned char *)n, strlen(n), false);
	}
	for (size_t i = 0; i < ni; i++) {
		unsigned char raw[16];
		if (inet_pton(AF_INET, ips[i], raw) == 1)
			san_add(s, "ip:", raw, 4, true);
		else if (inet_pton(AF_INET6, ips[i], raw) == 1)
			san_add(s, "ip:", raw, 16, true);
		else {
			snprintf(err, errlen, "\"%s\" is not an IP address", ips[i]);
			return -1;
		}
	}
	san_finish(s);
	return 0;
}

/* ---- main entry ---- */

static bool server_cert_usable(X509 *cert, EVP_PKEY *key, EVP_PKEY *ca_key,
                               const struct san_set *want)
{
	if (!cert || !key)
		return false;
	bool ok = X509_verify(cert, ca_key) == 1 && X509_check_private_key(cert, key) == 1;
	time_t soon = time(NULL) + RENEW_BEFORE_S;
	if (ok && X509_cmp_time(X509_get0_notAfter(cert), &soon) <= 0)
		ok = false;
	if (ok) {
		struct san_set have = {0};
		san_of_cert(cert, &have);
		ok = san_equal(&have, want);
		san_free(&have);
	}
	ERR_clear_error();
	return ok;
}

int devca_ensure(const char *data_dir, const char *const *names, size_t nnames,
                 const char *const *ips, size_t nips, char **cert_path, char **key_path, char *err,
                 size_t errlen)
{
	struct buf dir = BUF_INIT, ca_pem = BUF_INIT, ca_keyp = BUF_INIT, srv_pem = BUF_INIT,
	           srv_keyp = BUF_INIT;
	struct san_set want = {0};
	X509 *ca = NULL, *cert = NULL;
	EVP_PKEY *ca_key = NULL, *key = NULL;
	int rc = -1;

	*cert_path = *key_path = NULL;
	if (san_wanted(names, nnames, ips, nips, &want, err, errlen) != 0)
		goto done;
	if (want.n == 0) {
		snprintf(err, errlen, "no names for the server certificate");
		goto done;
	}
	buf_printf(&dir, "%s/tls", data_dir);
	buf_printf(&ca_pem, "%s/ca.pem", dir.data);
	buf_printf(&ca_keyp, "%s/ca.key", dir.data);
	buf_printf(&srv_pem, "%s/server.pem", dir.data);
	buf_printf(&srv_keyp, "%s/server.key", dir.data);
	if (ensure_dir(data_dir, err, errlen) != 0 || ensure_dir(dir.data, err, errlen) != 0)
		goto done;

	ca = x509_read_file(ca_pem.data);
	ca_key = x509_read_key_file(ca_keyp.data);
	if (!ca || !ca_key || X509_check_private_key(ca, ca_key) != 1) {
		ERR_clear_error();
		X509_free(ca);
		EVP_PKEY_free(ca_key);
		ca_key = EVP_EC_gen("P-256");
		if (!ca_key) {
			x509_ssl_error(err, errlen, "cannot generate the CA key");
			goto done;
		}
		ca = x509_issue(ca_key, "fleethub development CA", NULL, NULL, CA_DAYS, X509_ROLE_ROOT,
				NULL);
		if (!ca) {
			x509_ssl_error(err, errlen, "cannot make the CA certificate");
			goto done;
		}
		if (x509_write_pem(ca_keyp.data, NULL, ca_key, err, errlen) != 0 ||
		    x509_write_pem(ca_pem.data, ca, NULL, err, errlen) != 0)
			goto done;
	}

	cert = x509_read_file(srv_pem.data);
	key = x509_read_key_file(srv_keyp.data);
	if (!server_cert_usable(cert, key, ca_key, &want)) {
		X509_free(cert);
		cert = NULL;
		/* A fresh key with every issue: an old key may have leaked. */
		EVP_PKEY_free(key);
		key = EVP_EC_gen("P-256");
		if (!key) {
			x509_ssl_error(err, errlen, "cannot generate the server key");
			goto done;
		}
		/* X.509 caps a CN at 64 characters; the SAN is what clients check. */
		const char *cn = nnames ? names[0] : ips[0];
		if (strlen(cn) > 64)
			cn = "fleethub server";
		GENERAL_NAMES *san = make_san(names, nnames, ips, nips);
		cert = san ? x509_issue(key, cn, ca, ca_key, SERVER_DAYS, X509_ROLE_SERVER, san) : NULL;
		GENERAL_NAMES_free(san);
		if (!cert) {
			x509_ssl_error(err, errlen, "cannot make the server certificate");
			goto done;
		}
		if (x509_write_pem(srv_keyp.data, NULL, key, err, errlen) != 0 ||
		    x509_write_pem(srv_pem.data, cert, NULL, err, errlen) != 0)
			goto done;
	}
	*cert_path = buf_steal(&srv_pem);
	*key_path = buf_steal(&srv_keyp);
	rc = 0;
done:
	X509_free(ca);
	X509_free(cert);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(key);
	san_free(&want);
	buf_free(&dir);
	buf_free(&ca_pem);
	buf_free(&ca_keyp);
	buf_free(&srv_pem);
	buf_free(&srv_keyp);
	return rc;
}
