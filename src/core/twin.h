/* Device twin logic: patch validation against the twin limits, RFC 7396
 * merge with $metadata stamping, versions, and the JSON views the protocols
 * send. Pure: no I/O, no clock (callers pass now), no globals.
 *
 * Versions only grow. A twin change bumps twin.version by one; a change to
 * properties.desired also bumps desired_version, one to properties.reported
 * bumps reported_version. Tags have no $version of their own.
 *
 * Metadata mirrors the property tree: every object level and every leaf
 * gets {"$lastUpdated": "<ISO-8601>"}; in desired also
 * "$lastUpdatedVersion": <desired $version at the write>. The section root
 * carries its own $lastUpdated (+ $lastUpdatedVersion for desired). Deleted
 * keys lose their metadata. */
#ifndef FH_CORE_TWIN_H
#define FH_CORE_TWIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/records.h"

enum twin_section { TWIN_TAGS, TWIN_DESIRED, TWIN_REPORTED };

struct twin_limits {
	size_t tags_max;     /* 8 KiB: compact JSON size of tags after the change */
	size_t desired_max;  /* 32 KiB */
	size_t reported_max; /* 32 KiB */
	int depth_max;       /* 10: nested object levels below the section root */
	size_t key_max;      /* 1 KiB: UTF-8 bytes of a key */
	size_t string_max;   /* 4 KiB: UTF-8 bytes of a string value */
};

extern const struct twin_limits twin_limits_default;

/* What went wrong, for the 400 answer: errorCode 400004 (ArgumentInvalid);
 * the message names the rule and where it was broken. */
struct twin_error {
	int code;          /* six-digit errorCode, e.g. 400004 */
	char name[48];     /* e.g. "ArgumentInvalid" */
	char message[256]; /* e.g. "key 'a.b' in properties.desired contains '.'" */
};

/* Checks a patch (or, with replace, a whole new section) before anything is
 * written: it must be a JSON object; keys at most key_max bytes, not
 * containing '.', '$', ' ' or C0/C1 control characters (U+0000-U+001F,
 * U+007F-U+009F); no object nested deeper than depth_max levels; strings at
 * most string_max bytes; integers within -2^52..2^52-1 (4503599627370495).
 * null values are allowed (they delete) except with replace, where they are
 * ignored. Returns 0 or FH_EINVAL with *err filled. */
int twin_check_patch(const json_t *patch, enum twin_section sec, bool replace,
		     const struct twin_limits *lim, struct twin_error *err);

/* Applies a reported-properties patch from the device to tw (in place: the
 * JSON texts are replaced). Checks the patch, merges (null deletes), checks
 * the section size after the merge, stamps metadata with now_iso, bumps
 * reported_version and version. On failure tw is unchanged. */
int twin_apply_reported(struct store_twin *tw, const json_t *patch, const char *now_iso,
			const struct twin_limits *lim, struct twin_error *err);

/* The same change as twin_apply_reported, for a store that merges in place
 * (store_twin_patch_reported): the patch is merged into the reported text as
 * it is (RFC 7396), and the metadata gets two merge patches, appended here
 * as JSON text: clear (null for every key the patch deletes or sets to a
 * non-object, so a replaced subtree loses its old metadata) and then set
 * (the $lastUpdated stamps of every touched level and leaf). The patch must
 * have passed twin_check_patch. */
struct buf;
void twin_reported_meta_patches(const json_t *patch, const char *now_iso, struct buf *clear,
				struct buf *set);
/* The same clear and set patches straight from the patch text, for the
 * common simple patch, without building a JSON tree: true when p[0..n) is
 * a JSON object whose keys and strings are printable ASCII without escapes
 * (keys also without '.', '$' and ' '), whose numbers are integers of at
 * most 15 digits, with no arrays and no key twice in one object (at most 64
 * keys each), within lim; such a patch also passes twin_check_patch.
 * Otherwise false with clear and set empty: the caller parses the patch
 * and decides (refuses it, or calls twin_reported_meta_patches). */
bool twin_reported_meta_fast(const char *p, size_t n, const char *now_iso,
			     const struct twin_limits *lim, struct buf *clear, struct buf *set);
/* FH_EINVAL with *err filled when a reported section of len bytes is over
 * the limit (the check twin_apply_reported makes after its merge). */
int twin_check_reported_size(size_t len, const struct twin_limits *lim, struct twin_error *err);

/* The metadata merge patches for a service PATCH merged in place
 * (store_twin_patch_service), as twin_reported_meta_patches does for
 * reported: clear and set cover "tags" and/or "desired" (NULL: not
 * patched); desired stamps carry "$lastUpdatedVersion":0, which the store
 * replaces with the new desired $version. The patches must have passed
 * twin_check_patch. */
void twin_service_meta_patches(const json_t *tags, const json_t *desired, const char *now_iso,
			       struct buf *clear, struct buf *set);
/* FH_EINVAL with *err filled when section sec of len bytes (compact JSON)
 * is over its limit. */
int twin_check_size(enum twin_section sec, size_t len, const struct twin_limits *lim,
		    struct twin_error *err);

/* Applies a service-side update. tags and/or desired may be NULL (not
 * touched). With replace (REST PUT) they replace the whole sections;
 * otherwise they are merge patches. On success, when desired was given,
 * *desired_notice (if not NULL) receives the notification body to send to
 * the device: for a patch, the patch as given; for a replace, the difference
 * from the old section (removed keys as null) -- each plus "$version": the new
 * desired_version. Caller owns it (json_decref). Bumps versions as above.
 * On failure tw is unchanged. */
int twin_apply_service(struct store_twin *tw, const json_t *tags, const json_t *desired,
		       bool replace, const char *now_iso, const struct twin_limits *lim,
		       struct twin_error *err, json_t **desired_notice);

/* Fills the twin of a new device: empty sections, every version 1, and
 * section-root metadata stamped now_iso (as Azure shows for a new twin). */
void twin_init_new(struct store_twin *tw, const char *now_iso);

/* The MQTT twin GET body: {"desired":{..,"$version":N},"reported":{..,"$version":M}}
 * (no $metadata). Caller frees the string. */
char *twin_render_properties(const struct store_twin *tw);

/* Adds the twin parts of the REST twin JSON to obj: "etag", "version",
 * "tags", "properties":{"desired":{..,"$metadata":{..},"$version":N},
 * "reported":{..}}. The caller adds deviceId, status, connectionState... */
void twin_render_into(json_t *obj, const struct store_twin *tw);

/* The desired-properties notification for a patch (compact JSON object
 * text): the patch with "$version": desired_version added. Caller frees. */
char *twin_render_notice(const char *patch, int64_t desired_version);

/* Appends the twin part of the REST twin JSON as members (no braces):
 * "etag":..,"version":N,"tags":{..},"properties":{"desired":{..,
 * "$metadata":{..},"$version":N},"reported":{..}}, spliced from the stored
 * texts (the same document as twin_render_into gives). */
void twin_render_view(struct buf *b, const struct store_twin_view *v);

/* The twin etag for a version: base64 of the 8-byte big-endian version,
 * e.g. "AAAAAAAAAAE=" for 1. out needs 13 bytes. */
void twin_etag(int64_t version, char out[13]);

#endif
