/* `fleethub cert`: development certificates (see cli.h), documented as
 * such in the README: ECDSA P-256 keys written next to their certificates
 * (mode 0600), no passphrase, no revocation. NAME is a file prefix
 * (NAME.pem, NAME.key); its last path component is the subject CN. A
 * certificate signed by an intermediate is written with the issuer's file
 * after it, so that a device sends the chain up to the root. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/x509.h"
#include "cli/cli.h"

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

/* Appends the file at path to out: 0, or -1. */
static int append_file(struct buf *out, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		buf_append(out, chunk, n);
	int rc = ferror(f) ? -1 : 0;
	fclose(f);
	return rc;
}

struct cert_kind {
	enum x509_role role;
	long days; /* default validity */
	bool needs_issuer;
};

int cli_cert(const struct cli_args *a)
{
	static const struct cert_kind kinds[] = {
	    [CLI_CMD_CERT_ROOT - CLI_CMD_CERT_ROOT] = {X509_ROLE_ROOT, 3650, false},
	    [CLI_CMD_CERT_INTERMEDIATE - CLI_CMD_CERT_ROOT] = {X509_ROLE_INTERMEDIATE, 1825, true},
	    [CLI_CMD_CERT_DEVICE - CLI_CMD_CERT_ROOT] = {X509_ROLE_CLIENT, 365, false},
	    [CLI_CMD_CERT_VERIFICATION - CLI_CMD_CERT_ROOT] = {X509_ROLE_CLIENT, 1, true},
	};
	const struct cert_kind *k = &kinds[a->cmd - CLI_CMD_CERT_ROOT];
	long days = k->days;
	if (a->days) {
		char *end;
		days = strtol(a->days, &end, 10);
		if (*end || days < 1 || days > 36500) {
			fprintf(stderr, "error: --days takes 1..36500\n");
			return CLI_USAGE;
		}
	}
	if (k->needs_issuer && !a->issuer) {
		fprintf(stderr, "error: --issuer CA (the prefix of CA.pem and CA.key) is required\n");
		return CLI_USAGE;
	}
	if (a->cmd == CLI_CMD_CERT_ROOT && a->issuer) {
		fprintf(stderr, "error: a root signs itself: no --issuer\n");
		return CLI_USAGE;
	}
	const char *cn = base_name(a->id);
	if (!*cn || strlen(cn) > 64) {
		fprintf(stderr, "error: the name's last part is the subject CN: 1..64 characters\n");
		return CLI_USAGE;
	}
	struct buf ipem = BUF_INIT, ikey = BUF_INIT, pem = BUF_INIT, keyp = BUF_INIT,
		   chain = BUF_INIT;
	X509 *issuer = NULL, *x = NULL;
	EVP_PKEY *issuer_key = NULL, *key = NULL;
	int rc = CLI_REFUSED;
	char err[300];
	if (a->issuer) {
		buf_printf(&ipem, "%s.pem", a->issuer);
		buf_printf(&ikey, "%s.key", a->issuer);
		issuer = x509_read_file(ipem.data);
		issuer_key = x509_read_key_file(ikey.data);
		if (!issuer || !issuer_key || X509_check_private_key(issuer, issuer_key) != 1) {
			fprintf(stderr, "error: %s and %s are not a certificate and its key\n",
				ipem.data, ikey.data);
			goto done;
		}
	}
	key = EVP_EC_gen("P-256");
	x = key ? x509_issue(key, cn, issuer, issuer_key, days, k->role, NULL) : NULL;
	if (!x) {
		x509_ssl_error(err, sizeof err, "cannot make the certificate");
		fprintf(stderr, "error: %s\n", err);
		goto done;
	}
	buf_printf(&pem, "%s.pem", a->id);
	buf_printf(&keyp, "%s.key", a->id);
	if (x509_write_pem(keyp.data, NULL, key, err, sizeof err) != 0 ||
	    x509_write_pem(pem.data, x, NULL, err, sizeof err) != 0) {
		fprintf(stderr, "error: %s\n", err);
		goto done;
	}
	/* Signed by an intermediate: its chain follows the new certificate. */
	if (issuer && X509_check_issued(issuer, issuer) != X509_V_OK) {
		if (append_file(&chain, pem.data) != 0 || append_file(&chain, ipem.data) != 0) {
			fprintf(stderr, "error: cannot read %s or %s\n", pem.data, ipem.data);
			goto done;
		}
		FILE *f = fopen(pem.data, "w");
		if (!f || fwrite(chain.data, 1, chain.len, f) != chain.len || fclose(f) != 0) {
			fprintf(stderr, "error: cannot write %s\n", pem.data);
			goto done;
		}
	}
	char sha1[41], sha256[65];
	x509_thumbprints(x, sha1, sha256);
	printf("%s %s sha1=%s sha256=%s\n", pem.data, keyp.data, sha1, sha256);
	rc = CLI_OK;
done:
	X509_free(issuer);
	X509_free(x);
	EVP_PKEY_free(issuer_key);
	EVP_PKEY_free(key);
	buf_free(&ipem);
	buf_free(&ikey);
	buf_free(&pem);
	buf_free(&keyp);
	buf_free(&chain);
	return rc;
}
