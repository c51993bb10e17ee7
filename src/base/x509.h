/* What fleethub reads of an X.509 certificate (OpenSSL parses it): its
 * thumbprints, its subject's common name, its validity at a time. Pure:
 * no I/O. */
#ifndef FH_BASE_X509_H
#define FH_BASE_X509_H

#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The upper-case hex SHA-1 (40 digits) and SHA-256 (64) of cert's DER,
 * as Azure shows thumbprints. 0, or FH_EIO. */
int x509_thumbprints(X509 *cert, char sha1[41], char sha256[65]);

/* Whether hex is cert's SHA-1 or SHA-256 thumbprint, compared without
 * regard to case (decisions.md 6). False for NULL or "". */
bool x509_thumbprint_matches(X509 *cert, const char *hex);

/* The subject's (last) common name into out, NUL-terminated. 0, or
 * FH_ENOTFOUND (none, or one with a NUL inside or longer than out). */
int x509_subject_cn(X509 *cert, char *out, size_t outlen);

/* 0 when now_s (Unix seconds) lies within cert's validity; else FH_EAUTH
 * with *why "the certificate has expired" or "the certificate is not
 * valid yet". */
int x509_check_time(X509 *cert, int64_t now_s, const char **why);

#endif
