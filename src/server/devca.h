/* Development certificates: on first start without tls_cert/tls_key, a CA
 * (DATA_DIR/tls/ca.pem + ca.key) and a server certificate signed by it
 * (DATA_DIR/tls/server.pem + server.key) are created with OpenSSL (ECDSA
 * P-256, SHA-256). The server certificate is re-issued whenever the wanted
 * SAN set changes (a new hub name or listener IP) or it expires within 30
 * days; the CA is kept, so clients that trust ca.pem keep working. Key
 * files are mode 0600, the tls directory 0700. */
#ifndef FH_SERVER_DEVCA_H
#define FH_SERVER_DEVCA_H

#include <stddef.h>

/* names: DNS names for the SAN (no wildcards); ips: IP literals (v4 or v6).
 * On success fills cert_path/key_path (caller frees) and returns 0; on
 * failure returns -1 with a message. */
int devca_ensure(const char *data_dir, const char *const *names, size_t nnames,
		 const char *const *ips, size_t nips, char **cert_path, char **key_path, char *err,
		 size_t errlen);

#endif
