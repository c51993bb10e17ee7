/* CA certificates a hub (or a DPS) trusts for device certificates, with
 * Azure's proof of possession: a certificate is uploaded unverified, the
 * server hands out a verification code, and the owner proves they hold the
 * CA's key by uploading a certificate whose subject CN is that code,
 * signed by the CA (decisions.md 10). Records are JSON, as the store keeps
 * them:
 *
 *   {"name":N,"etag":"<n>","properties":{"subject":..,"expiry":..,
 *    "thumbprint":<SHA-1>,"isVerified":bool,"created":..,"updated":..,
 *    "certificate":<PEM>,"verificationCode":<hex, while one is pending>}}
 *
 * Pure: OpenSSL and jansson, no I/O. Certificate text is untrusted input
 * parsed by OpenSSL (PEM, or the base64 of the DER). */
#ifndef FH_CORE_CA_H
#define FH_CORE_CA_H

#include <jansson.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/map.h"

#define CA_MAX_TEXT 16384 /* bytes of certificate text accepted */

/* The certificate in text (PEM, or base64 DER), or NULL. */
X509 *ca_parse(const char *text, size_t n);

/* PEM text of several certificates: the first into *leaf, the others
 * into *rest (a new stack, maybe empty). 0, or FH_EINVAL when there is
 * no certificate (nothing is returned then). */
int ca_parse_chain(const char *pem, X509 **leaf, STACK_OF(X509) **rest);

/* x as PEM text (malloc'd), or NULL. */
char *ca_pem(X509 *x);

/* What Azure shows of a certificate (X509CertificateInfo): subjectName,
 * sha1Thumbprint, sha256Thumbprint, issuerName, notBeforeUtc,
 * notAfterUtc, serialNumber (hex), version. Names in RFC 2253 form
 * ("CN=..,O=.."). New reference, or NULL. */
json_t *ca_cert_info(X509 *x);

/* A record for name holding the certificate text (a PUT's
 * properties.certificate), after old (NULL: new): the same certificate
 * keeps old's state; another starts unverified. NULL with err filled
 * when the text is not a certificate. */
json_t *ca_record_build(const char *name, const char *text, size_t n, const json_t *old,
			const char *now_iso, char *err, size_t errlen);

/* Gives rec a fresh verification code (and a new etag). */
void ca_new_verification_code(json_t *rec, const char *now_iso);

/* Verifies proof of possession: cert_text is a certificate whose subject
 * CN is rec's pending verification code, signed by rec's certificate's key,
 * valid at now_s. On success marks rec verified (the code is used up) and
 * returns 0; else FH_EAUTH (or FH_EINVAL for text that is no certificate)
 * with *why. */
int ca_verify_possession(json_t *rec, const char *cert_text, size_t n, int64_t now_s,
			 const char *now_iso, const char **why);

/* A change to the CA certificate name, as its REST API asks for it. */
enum ca_change { CA_PUT, CA_DELETE, CA_CODE, CA_VERIFY };

/* Decides change on the stored record old (NULL: none): if_match ("" for
 * none; "*" matches anything) must be its etag; PUT builds from text[0..n)
 * (the certificate), VERIFY checks text as the verification certificate.
 * Returns 0 with *out the record to store (NULL for a DELETE: remove it),
 * or the HTTP status of the refusal (404 no such record, 412 etag, 400)
 * with msg. */
int ca_apply(enum ca_change change, const char *name, const json_t *old, const char *if_match,
	     const char *text, size_t n, int64_t now_s, const char *now_iso, json_t **out,
	     char *msg, size_t msglen);

/* The record as the REST API shows it (the verification code only when
 * with_code: the answer of generateVerificationCode). New reference. */
json_t *ca_render(const json_t *rec, bool with_code);

bool ca_verified(const json_t *rec);
const char *ca_certificate(const json_t *rec);

/* Verifies a device's certificate chain: leaf, with the certificates the
 * device sent after it (untrusted, may be NULL), must chain to one of
 * anchors[0..n) (verified CAs of the hub; an intermediate among them is
 * trusted as it is), within max_depth certificates, everything valid at
 * now_s. 0, or FH_EAUTH with *why. */
int ca_chain_verify(X509 *leaf, STACK_OF(X509) *untrusted, X509 *const *anchors, size_t n,
		    int max_depth, int64_t now_s, const char **why);

/* A store_doc_list callback over CA records: appends the certificate
 * (PEM) of each verified one to the JSON array arg. Returns 0. */
int ca_collect_verified(void *arg, const char *id, const char *json);

/* Parsed CA certificates by their PEM text: OpenSSL 3 takes ~150 us to
 * parse a certificate (its public key goes through the decoder
 * framework), as long as the signature check itself, so those verifying
 * many devices against the same few CAs keep them parsed. Bounded (it
 * starts over past CA_CACHE_MAX entries); one thread only. */
#define CA_CACHE_MAX 256
struct ca_cache {
	struct map m; /* PEM text -> X509 * */
};
void ca_cache_init(struct ca_cache *c);
/* The certificate of pem, parsed now or earlier; NULL when it is not
 * one. Borrowed: valid until the next call or ca_cache_free. */
X509 *ca_cache_get(struct ca_cache *c, const char *pem);
void ca_cache_free(struct ca_cache *c);

/* A store_doc_list callback over CA records: appends each record as the
 * REST API shows it (ca_render, no code) to the JSON array arg. */
int ca_collect_rendered(void *arg, const char *id, const char *json);

/* ca_chain_verify with the anchors given as a JSON array of PEM texts
 * (ca_collect_verified's), parsed through cache (NULL: parsed for this
 * call). */
int ca_chain_verify_pems(X509 *leaf, STACK_OF(X509) *untrusted, const json_t *pems, int max_depth,
			 int64_t now_s, struct ca_cache *cache, const char **why);

#endif
