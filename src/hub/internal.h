/* Names shared inside the hub layer only. */
#ifndef FH_HUB_INTERNAL_H
#define FH_HUB_INTERNAL_H

#include <jansson.h>
#include <openssl/x509.h>
#include <stdint.h>

#include "hub.h"

/* Verifies a device's SAS token for device_id on h. identity is the stored
 * identity (for the device keys). Accepted: sr = "<hub>/devices/<id>"
 * signed with the device's primary or secondary key, or signed by a policy
 * with DeviceConnect (skn) with sr = "<hub>/devices/<id>" or "<hub>".
 * Returns 0 or FH_EAUTH with a reason for the log in *why. */
int hub__auth_device(const struct hub *h, const char *device_id, const json_t *identity,
		     const char *token, size_t n, int64_t now_s, const char **why);

/* Verifies a device's TLS client certificate (leaf, and the chain it sent
 * after it) against its stored identity: a "selfSigned" device's primary
 * or secondary thumbprint (SHA-1 or SHA-256, any case) and validity; a
 * "certificateAuthority" device's subject CN equal to device_id and a
 * chain to one of cas (PEM texts of the hub's verified CA certificates)
 * with at most h->x509_depth intermediates, all valid at now_s. Returns 0
 * or FH_EAUTH with *why. */
#define HUB_MAX_CAS 100
int hub__auth_device_x509(struct hub *h, const char *device_id, const json_t *identity,
			  X509 *leaf, STACK_OF(X509) *chain, const json_t *cas, int64_t now_s,
			  const char **why);

/* Verifies a service SAS (an Authorization header value) and returns the
 * rights of its policy. Returns 0 or FH_EAUTH with *why. */
int hub__auth_service(const struct hub *h, const char *header, int64_t now_s, unsigned *rights,
		      const char **why);

#endif
