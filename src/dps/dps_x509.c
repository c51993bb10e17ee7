/* X.509 attestation at the DPS (decisions.md 7): a device that registers
 * with a TLS client certificate instead of a SAS token.
 *
 *   - The certificate's subject CN is the registration id, and it is valid
 *     now.
 *   - An individual enrollment of that registration id decides alone: its
 *     clientCertificates (the device's own certificate, by thumbprint), or
 *     its signingCertificates / caReferences (a chain to one of them).
 *   - Else the x509 enrollment groups: each group's signing certificates
 *     and referenced CA certificates (this DPS's, verified) are anchors; an
 *     anchor's place is how near the leaf it sits in the chain the device
 *     sent (the certificate itself among them, or the issuer of one of
 *     them). The nearest anchor whose chain verifies wins, ties going to
 *     the smaller group id; at most x509_depth intermediates between.
 *
 * Whether the enrollment found is enabled is dps__register's question, as
 * for symmetric keys: a disabled match ends there, the search does not go
 * on. The certificates are checked again on every request of a session,
 * as SAS tokens are. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/x509.h"
#include "core/ca.h"
#include "internal.h"

/* The leaf and at most this many certificates after it are looked at. */
#define PRESENTED_MAX 18
/* Anchors whose chain is verified, nearest first, per registration. */
#define VERIFY_MAX 8

/* What the device sent: each certificate's X509CertificateInfo. */
struct presented {
	size_t n;
	json_t *info[PRESENTED_MAX];
};

/* An anchor an enrollment trusts. */
struct anchor {
	char group[ENROLLMENT_ID_MAX + 1]; /* "" for an individual enrollment */
	int pos;                           /* nearness: 1 = issued the leaf */
	json_t *info;                      /* owned */
	char *pem;                         /* owned */
};

struct anchors {
	struct anchor v[VERIFY_MAX];
	size_t n;
	bool unverified_ca; /* a reference named a CA not verified (yet) */
};

static const char *str(const json_t *o, const char *name)
{
	const char *s = json_string_value(json_object_get(o, name));
	return s ? s : "";
}

/* The anchor's nearness to the leaf in p, or -1 when it is not in the
 * chain the device sent nor the issuer of one of its certificates. */
static int position(const json_t *info, const struct presented *p)
{
	const char *subject = str(info, "subjectName"), *sha256 = str(info, "sha256Thumbprint");
	for (size_t i = 0; i < p->n; i++) {
		if (i > 0 && *sha256 && strcasecmp(sha256, str(p->info[i], "sha256Thumbprint")) == 0)
			return (int)i;
		if (*subject && strcmp(subject, str(p->info[i], "issuerName")) == 0)
			return (int)i + 1;
	}
	return -1;
}

static void anchor_clear(struct anchor *a)
{
	json_decref(a->info);
	free(a->pem);
	memset(a, 0, sizeof *a);
}

/* Keeps the candidate (info and pem taken) when it is among the
 * VERIFY_MAX nearest so far: by position, then group id. */
static void consider(struct anchors *as, const char *group, int pos, json_t *info, char *pem)
{
	struct anchor c = {.pos = pos, .info = info, .pem = pem};
	snprintf(c.group, sizeof c.group, "%s", group);
	size_t i = as->n;
	while (i > 0 && (as->v[i - 1].pos > pos ||
	                 (as->v[i - 1].pos == pos && strcmp(as->v[i - 1].group, group) > 0)))
		i--;
	if (i == VERIFY_MAX) {
		anchor_clear(&c);
		return;
	}
	if (as->n == VERIFY_MAX)
		anchor_clear(&as->v[--as->n]);
	memmove(&as->v[i + 1], &as->v[i], (as->n - i) * sizeof as->v[0]);
	as->v[i] = c;
	as->n++;
}

/* The info of a clientCertificates / signingCertificates entry (a new
 * reference, or NULL): the stored one, or (a record written before
 * fleethub kept it) computed from its certificate. */
static json_t *entry_info(struct dps *d, const json_t *e)
{
	json_t *info = json_object_get(e, "info");
	if (info)
		return json_incref(info);
	const char *pem = json_string_value(json_object_get(e, "certificate"));
	X509 *x = pem ? ca_cache_get(&d->anchors, pem) : NULL;
	return x ? ca_cert_info(x) : NULL;
}

/* The anchors of one enrollment's x509 attestation that sit in (or just
 * past) the presented chain. */
static void collect(struct dps *d, const char *group, const json_t *x509,
                    const struct presented *p, const json_t *cas, struct anchors *as)
{
	static const char *const slots[] = {"primary", "secondary"};
	json_t *signing = json_object_get(x509, "signingCertificates");
	json_t *refs = json_object_get(x509, "caReferences");
	for (int i = 0; i < 2; i++) {
		json_t *e = json_object_get(signing, slots[i]);
		json_t *info = e ? entry_info(d, e) : NULL;
		int pos = info ? position(info, p) : -1;
		const char *pem = json_string_value(json_object_get(e, "certificate"));
		if (pos > 0 && pem)
			consider(as, group, pos, json_incref(info), strdup(pem));
		json_decref(info);
	}
	for (int i = 0; i < 2; i++) {
		const char *name = json_string_value(json_object_get(refs, slots[i]));
		const json_t *rec = name ? json_object_get(cas, name) : NULL;
		if (!rec)
			continue;
		const char *pem = ca_certificate(rec);
		X509 *x = pem ? ca_cache_get(&d->anchors, pem) : NULL;
		json_t *info = x ? ca_cert_info(x) : NULL;
		int pos = info ? position(info, p) : -1;
		if (pos > 0 && !ca_verified(rec))
			as->unverified_ca = true;
		if (pos > 0 && ca_verified(rec))
			consider(as, group, pos, json_incref(info), strdup(pem));
		json_decref(info);
	}
}

/* The first of as (nearest first) that leaf's chain verifies to: its
 * index, or -1 with *why. */
static int verify(struct dps *d, X509 *leaf, STACK_OF(X509) *chain, const struct anchors *as,
                  int64_t now_s, const char **why)
{
	*why = as->unverified_ca ? "the CA certificate the enrollment references is not verified"
	                         : "no enrollment trusts a certificate of this chain";
	for (size_t i = 0; i < as->n; i++) {
		X509 *anchor = ca_cache_get(&d->anchors, as->v[i].pem);
		int rc = anchor ? ca_chain_verify(leaf, chain, &anchor, 1, (int)d->x509_depth, now_s,
		                                  why)
		                : FH_EAUTH;
		if (rc == 0)
			return (int)i;
	}
	return -1;
}

static void presented_clear(struct presented *p)
{
	for (size_t i = 0; i < p->n; i++)
		json_decref(p->info[i]);
	p->n = 0;
}

/* The leaf and chain as PEM text, for the op record. */
static char *pem_text(X509 *leaf, STACK_OF(X509) *chain)
{
	struct buf b = BUF_INIT;
	int n = chain ? sk_X509_num(chain) : 0;
	for (int i = -1; i < n && i < PRESENTED_MAX - 1; i++) {
		char *pem = ca_pem(i < 0 ? leaf : sk_X509_value(chain, i));
		if (pem)
			buf_appends(&b, pem);
		free(pem);
	}
	return buf_steal(&b);
}

/* Fills out for record (taken) and the anchor a (NULL: the device's own
 * certificate matched). */
static void found(struct dps_auth *out, json_t *record, enum enrollment_kind kind,
                  const char *id, const struct presented *p, const struct anchor *a,
                  X509 *leaf, STACK_OF(X509) *chain)
{
	out->record = record;
	out->kind = kind;
	snprintf(out->enrollment_id, sizeof out->enrollment_id, "%s", id);
	out->x509 = json_pack("{s:O}", "certificateInfo", p->info[0]);
	if (kind == ENROLLMENT_GROUP)
		json_object_set_new(out->x509, "enrollmentGroupId", json_string(id));
	if (a)
		json_object_set(out->x509, "signingCertificateInfo", a->info);
	out->certificates = pem_text(leaf, chain);
}

static int individual(struct dps *d, const char *regid, json_t *rec, X509 *leaf,
                      STACK_OF(X509) *chain, const struct presented *p, const json_t *cas,
                      int64_t now_s, struct dps_auth *out, const char **why)
{
	if (strcmp(enrollment_attestation_type(rec), "x509") != 0) {
		*why = "the individual enrollment of this registration id does not use X.509 "
		       "attestation";
		json_decref(rec);
		return FH_EAUTH;
	}
	json_t *x509 = json_object_get(json_object_get(rec, "attestation"), "x509");
	json_t *client = json_object_get(x509, "clientCertificates");
	if (client) {
		const char *sha1 = str(p->info[0], "sha1Thumbprint");
		const char *sha256 = str(p->info[0], "sha256Thumbprint");
		for (int i = 0; i < 2; i++) {
			json_t *e = json_object_get(client, i ? "secondary" : "primary");
			json_t *info = e ? entry_info(d, e) : NULL;
			bool match = x509_thumbprint_is(str(info, "sha256Thumbprint"), sha1, sha256);
			json_decref(info);
			if (match) {
				found(out, rec, ENROLLMENT_INDIVIDUAL, regid, p, NULL, leaf, chain);
				return 0;
			}
		}
		*why = "the client certificate is not the individual enrollment's (primary or "
		       "secondary)";
		json_decref(rec);
		return FH_EAUTH;
	}
	struct anchors as = {.n = 0};
	collect(d, "", x509, p, cas, &as);
	int k = verify(d, leaf, chain, &as, now_s, why);
	if (k >= 0)
		found(out, rec, ENROLLMENT_INDIVIDUAL, regid, p, &as.v[k], leaf, chain);
	else
		json_decref(rec);
	for (size_t i = 0; i < as.n; i++)
		anchor_clear(&as.v[i]);
	return k >= 0 ? 0 : FH_EAUTH;
}

static int groups(struct dps *d, X509 *leaf, STACK_OF(X509) *chain, const struct presented *p,
                  const json_t *cas, int64_t now_s, struct dps_auth *out, const char **why)
{
	json_t *all = dps__groups(d);
	if (!all)
		return FH_EIO;
	struct anchors as = {.n = 0};
	const char *id;
	json_t *rec;
	json_object_foreach(all, id, rec) {
		if (strcmp(enrollment_attestation_type(rec), "x509") == 0)
			collect(d, id, json_object_get(json_object_get(rec, "attestation"), "x509"),
			        p, cas, &as);
	}
	int k = verify(d, leaf, chain, &as, now_s, why);
	if (k >= 0) {
		/* A copy: the operation keeps it while the cache moves on. */
		json_t *g = json_deep_copy(json_object_get(all, as.v[k].group));
		found(out, g, ENROLLMENT_GROUP, as.v[k].group, p, &as.v[k], leaf, chain);
	}
	for (size_t i = 0; i < as.n; i++)
		anchor_clear(&as.v[i]);
	return k >= 0 ? 0 : FH_EAUTH;
}

int dps__x509_precheck(struct dps *d, const char *regid, X509 *leaf, STACK_OF(X509) *chain,
                       int64_t now_s, const char **why, unsigned *retry_after)
{
	*retry_after = 0;
	char cn[ENROLLMENT_ID_MAX + 1];
	if (x509_subject_cn(leaf, cn, sizeof cn) != 0 || strcmp(cn, regid) != 0) {
		*why = "the client certificate's subject CN is not the registration id";
		return FH_EAUTH;
	}
	if (x509_check_time(leaf, now_s, why) != 0)
		return FH_EAUTH;
	int n = chain ? sk_X509_num(chain) : 0;
	if (n > PRESENTED_MAX - 1) {
		*why = "the device sent more certificates than a chain may hold";
		return FH_EAUTH;
	}
	/* As for SAS tokens: an id whose attempts failed too often waits. */
	unsigned wait = rate_table_wait(&d->attest_fail, regid, strlen(regid), clock_now_ms());
	if (wait) {
		*why = "too many failed attempts for this registration id";
		*retry_after = wait;
		return FH_EAGAIN;
	}
	return 0;
}

int dps__authenticate_x509(struct dps *d, const char *regid, X509 *leaf, STACK_OF(X509) *chain,
                           int64_t now_s, const struct dps_prefetch *pf, struct dps_auth *out,
                           const char **why, unsigned *retry_after)
{
	memset(out, 0, sizeof *out);
	int rc = dps__x509_precheck(d, regid, leaf, chain, now_s, why, retry_after);
	if (rc != 0)
		return rc;
	int64_t now_ms = clock_now_ms();
	int n = chain ? sk_X509_num(chain) : 0;
	struct presented p = {.n = 0};
	for (int i = -1; i < n; i++) {
		json_t *info = ca_cert_info(i < 0 ? leaf : sk_X509_value(chain, i));
		if (!info) {
			presented_clear(&p);
			*why = "a certificate the device sent cannot be read";
			return FH_EAUTH;
		}
		p.info[p.n++] = info;
	}
	if (pf->rc == 0)
		rc = individual(d, regid, json_incref(pf->rec), leaf, chain, &p, pf->cas, now_s,
		                out, why);
	else if (pf->rc == FH_ENOTFOUND)
		rc = groups(d, leaf, chain, &p, pf->cas, now_s, out, why);
	else
		rc = FH_EIO;
	presented_clear(&p);
	if (rc == FH_EAUTH)
		dps__attest_failed(d, regid, now_ms);
	return rc;
}
