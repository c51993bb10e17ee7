/* Authentication for the hub: device SAS tokens (MQTT password), device
 * X.509 certificates (the TLS client certificate), and service tokens
 * (REST Authorization header). protocol.md §1: verify the HMAC over the raw
 * sr, then check what the decoded sr names. */
#include <stdlib.h>
#include <string.h>

#include "base/enc.h"
#include "base/err.h"
#include "base/x509.h"
#include "codec/sas.h"
#include "core/ca.h"
#include "core/registry.h"
#include "internal.h"

/* Splits the decoded resource into host and the rest ("" or "/devices/x"). */
static const char *resource_path(const char *resource, size_t *host_len)
{
	const char *slash = strchr(resource, '/');
	*host_len = slash ? (size_t)(slash - resource) : strlen(resource);
	return slash ? slash : "";
}

int hub__auth_device(const struct hub *h, const char *device_id, const json_t *identity,
		     const char *token, size_t n, int64_t now_s, const char **why)
{
	struct sas_token t;
	if (sas_parse(token, n, &t, why) != 0)
		return FH_EAUTH;
	if (sas_check_expiry(&t, now_s) != 0) {
		*why = "token expired";
		return FH_EAUTH;
	}
	size_t host_len;
	const char *path = resource_path(t.resource, &host_len);
	if (!hub_name_matches(h, t.resource, host_len)) {
		*why = "token is for another hub";
		return FH_EAUTH;
	}
	bool device_scope = strncmp(path, "/devices/", 9) == 0 && strcmp(path + 9, device_id) == 0;
	if (!device_scope && *path != '\0') {
		*why = "token is for another resource";
		return FH_EAUTH;
	}
	if (t.has_key_name && t.key_name[0]) {
		const struct sas_policy *p = hub_policy_find(h, t.key_name);
		if (!p || !(p->rights & HUB_RIGHT_DEVICE_CONNECT)) {
			*why = "policy has no DeviceConnect right";
			return FH_EAUTH;
		}
		if (sas_signature_ok_b64(&t, p->primary) || sas_signature_ok_b64(&t, p->secondary))
			return 0;
		*why = "signature does not match the policy key";
		return FH_EAUTH;
	}
	if (!device_scope) {
		*why = "token is not scoped to this device";
		return FH_EAUTH;
	}
	if (sas_signature_ok_b64(&t, registry_primary_key(identity)) ||
	    sas_signature_ok_b64(&t, registry_secondary_key(identity)))
		return 0;
	*why = "signature does not match the device keys";
	return FH_EAUTH;
}

int hub__auth_device_x509(struct hub *h, const char *device_id, const json_t *identity,
			  X509 *leaf, STACK_OF(X509) *chain, const json_t *cas, int64_t now_s,
			  const char **why)
{
	const char *type = registry_auth_type(identity);
	if (strcmp(type, "selfSigned") == 0) {
		char sha1[41], sha256[65];
		bool match = x509_thumbprints(leaf, sha1, sha256) == 0;
		const char *primary = registry_thumbprint(identity, true);
		const char *secondary = registry_thumbprint(identity, false);
		if (!match || (!x509_thumbprint_is(primary, sha1, sha256) &&
			       !x509_thumbprint_is(secondary, sha1, sha256))) {
			*why = "the client certificate's thumbprint is not one of the device's";
			return FH_EAUTH;
		}
		return x509_check_time(leaf, now_s, why);
	}
	if (strcmp(type, "certificateAuthority") != 0) {
		*why = "the device authenticates with a SAS token, not a certificate";
		return FH_EAUTH;
	}
	char cn[REGISTRY_ID_MAX + 1];
	if (x509_subject_cn(leaf, cn, sizeof cn) != 0 || strcmp(cn, device_id) != 0) {
		*why = "the client certificate's subject CN is not the device id";
		return FH_EAUTH;
	}
	return ca_chain_verify_pems(leaf, chain, cas, (int)h->x509_depth, now_s,
				    &h->cas, why);
}

int hub__auth_service(const struct hub *h, const char *header, int64_t now_s, unsigned *rights,
		      const char **why)
{
	struct sas_token t;
	if (sas_service_token(header, now_s, &t, why) != 0)
		return FH_EAUTH;
	size_t host_len;
	const char *path = resource_path(t.resource, &host_len);
	if (!hub_name_matches(h, t.resource, host_len) || *path != '\0') {
		*why = "token is for another hub";
		return FH_EAUTH;
	}
	const struct sas_policy *p = sas_policy_verify(&t, h->policies, HUB_NPOLICIES, why);
	if (!p)
		return FH_EAUTH;
	*rights = p->rights;
	return 0;
}
