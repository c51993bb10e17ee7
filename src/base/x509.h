/* What fleethub reads of an X.509 certificate (OpenSSL parses it): its
 * thumbprints, its subject's common name, its validity at a time; and the
 * certificates it makes (the development CA's, `fleethub cert`'s), with
 * their PEM files. Only the file functions do I/O. */
#ifndef FH_BASE_X509_H
#define FH_BASE_X509_H

#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The upper-case hex SHA-1 (40 digits) and SHA-256 (64) of cert's DER,
 * as Azure shows thumbprints. 0, or FH_EIO. */
int x509_thumbprints(X509 *cert, char sha1[41], char sha256[65]);

/* Whether hex is one of a certificate's thumbprints (x509_thumbprints'
 * sha1 or sha256), compared without regard to case (decisions.md 6).
 * False for NULL or "". */
bool x509_thumbprint_is(const char *hex, const char *sha1, const char *sha256);

/* The subject's (last) common name into out, NUL-terminated. 0, or
 * FH_ENOTFOUND (none, or one with a NUL inside or longer than out). */
int x509_subject_cn(X509 *cert, char *out, size_t outlen);

/* 0 when now_s (Unix seconds) lies within cert's validity; else FH_EAUTH
 * with *why "the certificate has expired" or "the certificate is not
 * valid yet". */
int x509_check_time(X509 *cert, int64_t now_s, const char **why);

/* The kinds of certificate x509_issue makes (ECDSA keys, SHA-256):
 *   ROOT          self-signed CA (issuer NULL)
 *   INTERMEDIATE  CA signed by issuer
 *   SERVER        TLS server leaf signed by issuer, with san
 *   CLIENT        TLS client leaf (a device), signed by issuer or
 *                 self-signed (issuer NULL) */
enum x509_role { X509_ROLE_ROOT, X509_ROLE_INTERMEDIATE, X509_ROLE_SERVER, X509_ROLE_CLIENT };

/* A certificate for key's public half with subject O=fleethub, CN=cn,
 * valid from an hour ago for days days, a random serial; NULL on failure
 * (the OpenSSL error queue says why). */
X509 *x509_issue(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long days,
		 enum x509_role role, const GENERAL_NAMES *san);

/* PEM files: read (NULL when absent or unreadable), and written (a
 * certificate when x, else the key k) through path.tmp with mode 0600 and
 * fsync, renamed into place: 0, or -1 with err. */
X509 *x509_read_file(const char *path);
EVP_PKEY *x509_read_key_file(const char *path);
int x509_write_pem(const char *path, X509 *x, EVP_PKEY *k, char *err, size_t errlen);

/* err = "what: <OpenSSL's first queued error>"; the queue is cleared. */
void x509_ssl_error(char *err, size_t errlen, const char *what);

#endif
