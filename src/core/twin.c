/* Device twin logic (see twin.h): validation against the limits, RFC 7396
 * merges with $metadata stamping, versions, and the JSON views.
 *
 * Every change is computed on copies; the store_twin texts are swapped only
 * when everything succeeded, so a failure leaves the twin as it was. */
#include "core/twin.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/enc.h"
#include "base/err.h"
#include "base/mem.h"

const struct twin_limits twin_limits_default = {
	.tags_max = 8 * 1024,
	.desired_max = 32 * 1024,
	.reported_max = 32 * 1024,
	.depth_max = 10,
	.key_max = 1024,
	.string_max = 4 * 1024,
};

#define INT_LIMIT 4503599627370495LL /* 2^52 - 1 */

static const char *section_path(enum twin_section sec)
{
	return sec == TWIN_TAGS ? "tags" : sec == TWIN_DESIRED ? "properties.desired"
							     : "properties.reported";
}

static const char *section_key(enum twin_section sec)
{
	return sec == TWIN_TAGS ? "tags" : sec == TWIN_DESIRED ? "desired" : "reported";
}

static int fail(struct twin_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct twin_error *err, const char *fmt, ...)
{
	err->code = 400004;
	snprintf(err->name, sizeof err->name, "ArgumentInvalid");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return FH_EINVAL;
}

/* ---- validation ----------------------------------------------------------- */

static bool key_char_bad(const unsigned char *k, size_t n, size_t i, size_t *skip)
{
	unsigned char c = k[i];
	*skip = 1;
	if (c == '.' || c == '$' || c == ' ' || c < 0x20 || c == 0x7f)
		return true;
	/* C1 controls U+0080..U+009F are encoded C2 80..C2 9F. */
	if (c == 0xc2 && i + 1 < n && k[i + 1] >= 0x80 && k[i + 1] <= 0x9f)
		return true;
	return false;
}

struct check {
	const struct twin_limits *lim;
	bool replace;
	struct twin_error *err;
	char path[256];
};

static int check_value(struct check *c, const json_t *v, int depth, size_t plen);

static int check_object(struct check *c, const json_t *o, int depth, size_t plen)
{
	if (depth > c->lim->depth_max)
		return fail(c->err, "%s: objects nested deeper than %d levels", c->path,
			    c->lim->depth_max);
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v)
	{
		size_t kl = strlen(k);
		if (kl == 0)
			return fail(c->err, "%s: empty key", c->path);
		if (kl > c->lim->key_max)
			return fail(c->err, "%s: key longer than %zu bytes", c->path, c->lim->key_max);
		for (size_t i = 0, s; i < kl; i += s)
			if (key_char_bad((const unsigned char *)k, kl, i, &s))
				return fail(c->err,
					    "%s: key '%.64s' contains '.', '$', a space or a control "
					    "character",
					    c->path, k);
		/* path + "." + key, cut to fit (only error messages show it) */
		size_t np = plen;
		if (np + 1 < sizeof c->path)
			c->path[np++] = '.';
		size_t room = sizeof c->path - 1 - np, cl = kl < room ? kl : room;
		memcpy(c->path + np, k, cl);
		np += cl;
		c->path[np] = '\0';
		if (check_value(c, v, depth, np) != 0)
			return FH_EINVAL;
		c->path[plen] = '\0';
	}
	return 0;
}

static int check_value(struct check *c, const json_t *v, int depth, size_t plen)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return check_object(c, v, depth + 1, plen);
	case JSON_ARRAY: {
		size_t i;
		json_t *e;
		json_array_foreach((json_t *)v, i, e)
		{
			if (json_is_object(e) || json_is_array(e)) {
				if (check_value(c, e, depth, plen) != 0)
					return FH_EINVAL;
			} else if (check_value(c, e, depth, plen) != 0) {
				return FH_EINVAL;
			}
		}
		return 0;
	}
	case JSON_STRING:
		if (json_string_length(v) > c->lim->string_max)
			return fail(c->err, "%s: string value longer than %zu bytes", c->path,
				    c->lim->string_max);
		return 0;
	case JSON_INTEGER: {
		json_int_t n = json_integer_value(v);
		if (n > INT_LIMIT || n < -INT_LIMIT - 1)
			return fail(c->err,
				    "%s: integer outside -4503599627370496..4503599627370495",
				    c->path);
		return 0;
	}
	default:
		return 0;
	}
}

int twin_check_patch(const json_t *patch, enum twin_section sec, bool replace,
		     const struct twin_limits *lim, struct twin_error *err)
{
	if (!json_is_object(patch))
		return fail(err, "%s must be a JSON object", section_path(sec));
	struct check c = {lim, replace, err, ""};
	const char *sp = section_path(sec); /* a short constant */
	size_t sl = strlen(sp);
	memcpy(c.path, sp, sl + 1);
	return check_object(&c, patch, 1, sl);
}

/* ---- merge with metadata ------------------------------------------------------ */

static json_t *leaf_meta(const char *now, bool desired, int64_t version)
{
	json_t *m = json_object();
	json_object_set_new(m, "$lastUpdated", json_string(now));
	if (desired)
		json_object_set_new(m, "$lastUpdatedVersion", json_integer(version));
	return m;
}

/* Merges patch into target (RFC 7396) and stamps meta for every touched
 * path. With drop_nulls (replace), nulls are skipped instead of deleting. */
static void merge(json_t *target, json_t *meta, const json_t *patch, const char *now,
		  bool desired, int64_t version)
{
	const char *k;
	json_t *v;
	json_object_set_new(meta, "$lastUpdated", json_string(now));
	if (desired)
		json_object_set_new(meta, "$lastUpdatedVersion", json_integer(version));
	json_object_foreach((json_t *)patch, k, v)
	{
		if (json_is_null(v)) {
			json_object_del(target, k);
			json_object_del(meta, k);
			continue;
		}
		if (json_is_object(v)) {
			json_t *t = json_object_get(target, k);
			if (!json_is_object(t)) {
				t = json_object();
				json_object_set_new(target, k, t);
			}
			json_t *m = json_object_get(meta, k);
			if (!json_is_object(m) || !json_is_object(t)) {
				m = json_object();
				json_object_set_new(meta, k, m);
			}
			merge(t, m, v, now, desired, version);
			continue;
		}
		json_object_set(target, k, v);
		json_object_set_new(meta, k, leaf_meta(now, desired, version));
	}
}

/* Removes nulls recursively (a replaced section keeps only values). */
static json_t *without_nulls(const json_t *o)
{
	json_t *r = json_object();
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v)
	{
		if (json_is_null(v))
			continue;
		json_object_set_new(r, k, json_is_object(v) ? without_nulls(v) : json_deep_copy(v));
	}
	return r;
}

/* Fresh metadata for a whole replaced section. */
static json_t *stamp_all(const json_t *o, const char *now, bool desired, int64_t version)
{
	json_t *m = leaf_meta(now, desired, version);
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)o, k, v)
	{
		json_object_set_new(m, k, json_is_object(v) ? stamp_all(v, now, desired, version)
							   : leaf_meta(now, desired, version));
	}
	return m;
}

/* The difference from old to new as a merge patch (removed keys null). */
static json_t *diff(const json_t *old, const json_t *new_)
{
	json_t *d = json_object();
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)old, k, v)
	{
		if (!json_object_get(new_, k))
			json_object_set_new(d, k, json_null());
	}
	json_object_foreach((json_t *)new_, k, v)
	{
		json_t *o = json_object_get(old, k);
		if (o && json_equal(o, v))
			continue;
		if (o && json_is_object(o) && json_is_object(v))
			json_object_set_new(d, k, diff(o, v));
		else
			json_object_set(d, k, v);
	}
	return d;
}

static json_t *load_obj(const char *text)
{
	json_t *o = text ? json_loads(text, 0, NULL) : NULL;
	if (!json_is_object(o)) {
		json_decref(o);
		o = json_object();
	}
	return o;
}

static char *dump(const json_t *o)
{
	return json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

struct work {
	json_t *sec[3];  /* tags, desired, reported */
	json_t *meta;    /* {"tags":..,"desired":..,"reported":..} */
};

static void work_load(struct work *w, const struct store_twin *tw)
{
	w->sec[TWIN_TAGS] = load_obj(tw->tags);
	w->sec[TWIN_DESIRED] = load_obj(tw->desired);
	w->sec[TWIN_REPORTED] = load_obj(tw->reported);
	w->meta = load_obj(tw->meta);
	for (int s = 0; s < 3; s++)
		if (!json_is_object(json_object_get(w->meta, section_key(s))))
			json_object_set_new(w->meta, section_key(s), json_object());
}

static void work_free(struct work *w)
{
	for (int s = 0; s < 3; s++)
		json_decref(w->sec[s]);
	json_decref(w->meta);
}

static size_t section_max(const struct twin_limits *lim, enum twin_section s)
{
	return s == TWIN_TAGS ? lim->tags_max : s == TWIN_DESIRED ? lim->desired_max
								  : lim->reported_max;
}

static int check_size(struct work *w, enum twin_section s, const struct twin_limits *lim,
		      struct twin_error *err)
{
	char *t = dump(w->sec[s]);
	size_t n = strlen(t);
	free(t);
	return twin_check_size(s, n, lim, err);
}

/* Applies one section change inside w. */
static void apply_section(struct work *w, enum twin_section s, const json_t *change, bool replace,
			  const char *now, int64_t version)
{
	bool desired = s == TWIN_DESIRED;
	if (replace) {
		json_t *clean = without_nulls(change);
		json_decref(w->sec[s]);
		w->sec[s] = clean;
		json_object_set_new(w->meta, section_key(s), stamp_all(clean, now, desired, version));
	} else {
		merge(w->sec[s], json_object_get(w->meta, section_key(s)), change, now, desired,
		      version);
	}
}

static void work_store(struct work *w, struct store_twin *tw)
{
	char *texts[4] = {dump(w->sec[TWIN_TAGS]), dump(w->sec[TWIN_DESIRED]),
			  dump(w->sec[TWIN_REPORTED]), dump(w->meta)};
	free(tw->tags);
	free(tw->desired);
	free(tw->reported);
	free(tw->meta);
	tw->tags = texts[0];
	tw->desired = texts[1];
	tw->reported = texts[2];
	tw->meta = texts[3];
}

int twin_apply_reported(struct store_twin *tw, const json_t *patch, const char *now_iso,
			const struct twin_limits *lim, struct twin_error *err)
{
	if (twin_check_patch(patch, TWIN_REPORTED, false, lim, err) != 0)
		return FH_EINVAL;
	struct work w;
	work_load(&w, tw);
	apply_section(&w, TWIN_REPORTED, patch, false, now_iso, tw->reported_version + 1);
	if (check_size(&w, TWIN_REPORTED, lim, err) != 0) {
		work_free(&w);
		return FH_EINVAL;
	}
	work_store(&w, tw);
	work_free(&w);
	tw->reported_version++;
	tw->version++;
	return 0;
}

/* ---- reported patches merged by the store ---------------------------------- */

static void put_key(struct buf *b, const char *k)
{
	buf_appendc(b, '"');
	for (const unsigned char *p = (const unsigned char *)k; *p; p++) {
		if (*p == '"' || *p == '\\') {
			buf_appendc(b, '\\');
			buf_appendc(b, (char)*p);
		} else if (*p < 0x20) {
			buf_printf(b, "\\u%04x", *p);
		} else {
			buf_appendc(b, (char)*p);
		}
	}
	buf_appends(b, "\":");
}

/* The stamp of one level; versioned (desired) adds the placeholder
 * "$lastUpdatedVersion":0 that the store replaces with the new desired
 * $version (store_twin_patch_service). No key can contain '$'
 * (twin_check_patch), so the placeholder appears nowhere else. */
static void put_stamp(struct buf *b, const char *now, bool versioned)
{
	buf_appends(b, "\"$lastUpdated\":\"");
	buf_appends(b, now);
	buf_appendc(b, '"');
	if (versioned)
		buf_appends(b, ",\"$lastUpdatedVersion\":0");
}

/* {"$lastUpdated":now, <key>: <stamp of its value>...}; deleted keys are
 * left out (meta_clear removed them). */
static void meta_set(struct buf *b, const json_t *patch, const char *now, bool versioned)
{
	const char *k;
	json_t *v;
	buf_appendc(b, '{');
	put_stamp(b, now, versioned);
	json_object_foreach((json_t *)patch, k, v)
	{
		if (json_is_null(v))
			continue;
		buf_appendc(b, ',');
		put_key(b, k);
		if (json_is_object(v)) {
			meta_set(b, v, now, versioned);
		} else {
			buf_appendc(b, '{');
			put_stamp(b, now, versioned);
			buf_appendc(b, '}');
		}
	}
	buf_appendc(b, '}');
}

/* null for every key the patch sets to a non-object or deletes (its old
 * metadata, perhaps a whole subtree, goes); objects recurse. Returns whether
 * anything was written after the opening brace. */
static bool meta_clear(struct buf *b, const json_t *patch)
{
	const char *k;
	json_t *v;
	bool any = false;
	buf_appendc(b, '{');
	json_object_foreach((json_t *)patch, k, v)
	{
		size_t mark = b->len;
		if (any)
			buf_appendc(b, ',');
		put_key(b, k);
		if (!json_is_object(v)) {
			buf_appends(b, "null");
		} else if (!meta_clear(b, v)) {
			b->len = mark; /* nothing to clear below this key */
			b->data[mark] = '\0';
			continue;
		}
		any = true;
	}
	buf_appendc(b, '}');
	return any;
}

void twin_reported_meta_patches(const json_t *patch, const char *now_iso, struct buf *clear,
				struct buf *set)
{
	buf_appends(clear, "{\"reported\":");
	meta_clear(clear, patch);
	buf_appendc(clear, '}');
	buf_appends(set, "{\"reported\":");
	meta_set(set, patch, now_iso, false);
	buf_appendc(set, '}');
}

/* ---- the fast path of reported patches --------------------------------------- */

struct scan {
	const char *p, *end;
	const struct twin_limits *lim;
	const char *now;
	struct buf *clear, *set;
};

#define SCAN_KEYS_MAX 64 /* keys of one object compared for duplicates */

static void scan_ws(struct scan *sc)
{
	while (sc->p < sc->end &&
	       (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
		sc->p++;
}

/* A string of printable ASCII without escapes; *s and *len: its bytes. */
static bool scan_string(struct scan *sc, const char **s, size_t *len)
{
	if (sc->p >= sc->end || *sc->p != '"')
		return false;
	const char *q = ++sc->p;
	while (q < sc->end && *q != '"') {
		if (*q < 0x20 || *q > 0x7e || *q == '\\')
			return false;
		q++;
	}
	if (q >= sc->end)
		return false;
	*s = sc->p;
	*len = (size_t)(q - sc->p);
	sc->p = q + 1;
	return true;
}

/* An integer of at most 15 digits (well inside the twin's +-2^52). */
static bool scan_integer(struct scan *sc)
{
	const char *q = sc->p;
	if (q < sc->end && *q == '-')
		q++;
	const char *digits = q;
	while (q < sc->end && *q >= '0' && *q <= '9')
		q++;
	size_t nd = (size_t)(q - digits);
	if (nd == 0 || nd > 15 || (nd > 1 && *digits == '0'))
		return false;
	if (q < sc->end && (*q == '.' || *q == 'e' || *q == 'E'))
		return false;
	sc->p = q;
	return true;
}

static bool scan_word(struct scan *sc, const char *w, size_t n)
{
	if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, w, n) != 0)
		return false;
	sc->p += n;
	return true;
}

/* One object (sc->p at its '{'), at nesting depth; appends its clear and
 * set patches as meta_clear and meta_set would. *cleared: whether the clear
 * patch has anything below its opening brace. */
static bool scan_object(struct scan *sc, int depth, bool *cleared)
{
	if (depth > sc->lim->depth_max || sc->p >= sc->end || *sc->p != '{')
		return false;
	sc->p++;
	const char *keys[SCAN_KEYS_MAX];
	size_t klens[SCAN_KEYS_MAX], nkeys = 0;
	bool any = false;
	buf_appendc(sc->clear, '{');
	buf_appendc(sc->set, '{');
	put_stamp(sc->set, sc->now, false);
	scan_ws(sc);
	if (sc->p < sc->end && *sc->p == '}') {
		sc->p++;
	} else {
		for (;;) {
			const char *k;
			size_t kl;
			scan_ws(sc);
			if (!scan_string(sc, &k, &kl) || kl == 0 || kl > sc->lim->key_max ||
			    nkeys == SCAN_KEYS_MAX)
				return false;
			for (size_t i = 0, skip; i < kl; i += skip)
				if (key_char_bad((const unsigned char *)k, kl, i, &skip))
					return false;
			for (size_t i = 0; i < nkeys; i++)
				if (klens[i] == kl && memcmp(keys[i], k, kl) == 0)
					return false;
			keys[nkeys] = k;
			klens[nkeys++] = kl;
			scan_ws(sc);
			if (sc->p >= sc->end || *sc->p != ':')
				return false;
			sc->p++;
			scan_ws(sc);
			if (sc->p >= sc->end)
				return false;
			size_t mark = sc->clear->len;
			if (any)
				buf_appendc(sc->clear, ',');
			buf_appendc(sc->clear, '"');
			buf_append(sc->clear, k, kl);
			buf_appends(sc->clear, "\":");
			bool is_null = false;
			if (*sc->p == '{') {
				buf_appends(sc->set, ",\"");
				buf_append(sc->set, k, kl);
				buf_appends(sc->set, "\":");
				bool below;
				if (!scan_object(sc, depth + 1, &below))
					return false;
				if (!below) {
					sc->clear->len = mark; /* nothing to clear below this key */
					sc->clear->data[mark] = '\0';
				} else {
					any = true;
				}
			} else {
				const char *sv;
				size_t sl;
				if (*sc->p == '"') {
					if (!scan_string(sc, &sv, &sl) || sl > sc->lim->string_max)
						return false;
				} else if (*sc->p == 'n') {
					if (!scan_word(sc, "null", 4))
						return false;
					is_null = true;
				} else if (*sc->p == 't' || *sc->p == 'f') {
					if (!scan_word(sc, "true", 4) && !scan_word(sc, "false", 5))
						return false;
				} else if (!scan_integer(sc)) {
					return false;
				}
				buf_appends(sc->clear, "null");
				any = true;
				if (!is_null) {
					buf_appends(sc->set, ",\"");
					buf_append(sc->set, k, kl);
					buf_appends(sc->set, "\":{");
					put_stamp(sc->set, sc->now, false);
					buf_appendc(sc->set, '}');
				}
			}
			scan_ws(sc);
			if (sc->p < sc->end && *sc->p == ',') {
				sc->p++;
				continue;
			}
			if (sc->p < sc->end && *sc->p == '}') {
				sc->p++;
				break;
			}
			return false;
		}
	}
	buf_appendc(sc->clear, '}');
	buf_appendc(sc->set, '}');
	*cleared = any;
	return true;
}

bool twin_reported_meta_fast(const char *p, size_t n, const char *now_iso,
			     const struct twin_limits *lim, struct buf *clear, struct buf *set)
{
	struct scan sc = {p, p + n, lim, now_iso, clear, set};
	bool below;
	buf_appends(clear, "{\"reported\":");
	buf_appends(set, "{\"reported\":");
	scan_ws(&sc);
	bool ok = scan_object(&sc, 1, &below);
	if (ok) {
		scan_ws(&sc);
		ok = sc.p == sc.end;
	}
	if (!ok) {
		buf_reset(clear);
		buf_reset(set);
		return false;
	}
	buf_appendc(clear, '}');
	buf_appendc(set, '}');
	return true;
}

void twin_service_meta_patches(const json_t *tags, const json_t *desired, const char *now_iso,
			       struct buf *clear, struct buf *set)
{
	buf_appendc(clear, '{');
	buf_appendc(set, '{');
	if (tags) {
		buf_appends(clear, "\"tags\":");
		meta_clear(clear, tags);
		buf_appends(set, "\"tags\":");
		meta_set(set, tags, now_iso, false);
	}
	if (desired) {
		buf_appends(clear, tags ? ",\"desired\":" : "\"desired\":");
		meta_clear(clear, desired);
		buf_appends(set, tags ? ",\"desired\":" : "\"desired\":");
		meta_set(set, desired, now_iso, true);
	}
	buf_appendc(clear, '}');
	buf_appendc(set, '}');
}

int twin_check_size(enum twin_section sec, size_t len, const struct twin_limits *lim,
		    struct twin_error *err)
{
	if (len > section_max(lim, sec))
		return fail(err, "%s would be %zu bytes, more than the limit of %zu",
			    section_path(sec), len, section_max(lim, sec));
	return 0;
}

int twin_check_reported_size(size_t len, const struct twin_limits *lim, struct twin_error *err)
{
	return twin_check_size(TWIN_REPORTED, len, lim, err);
}

int twin_apply_service(struct store_twin *tw, const json_t *tags, const json_t *desired,
		       bool replace, const char *now_iso, const struct twin_limits *lim,
		       struct twin_error *err, json_t **desired_notice)
{
	if (desired_notice)
		*desired_notice = NULL;
	if ((tags && twin_check_patch(tags, TWIN_TAGS, replace, lim, err) != 0) ||
	    (desired && twin_check_patch(desired, TWIN_DESIRED, replace, lim, err) != 0))
		return FH_EINVAL;
	struct work w;
	work_load(&w, tw);
	int64_t dv = tw->desired_version + (desired ? 1 : 0);
	json_t *old_desired = json_deep_copy(w.sec[TWIN_DESIRED]);
	if (tags)
		apply_section(&w, TWIN_TAGS, tags, replace, now_iso, 0);
	if (desired)
		apply_section(&w, TWIN_DESIRED, desired, replace, now_iso, dv);
	if ((tags && check_size(&w, TWIN_TAGS, lim, err) != 0) ||
	    (desired && check_size(&w, TWIN_DESIRED, lim, err) != 0)) {
		json_decref(old_desired);
		work_free(&w);
		return FH_EINVAL;
	}
	if (desired && desired_notice) {
		json_t *n = replace ? diff(old_desired, w.sec[TWIN_DESIRED]) : json_deep_copy(desired);
		json_object_set_new(n, "$version", json_integer(dv));
		*desired_notice = n;
	}
	json_decref(old_desired);
	work_store(&w, tw);
	work_free(&w);
	if (desired)
		tw->desired_version = dv;
	tw->version++;
	return 0;
}

void twin_init_new(struct store_twin *tw, const char *now_iso)
{
	store_twin_init_empty(tw);
	json_t *meta = json_pack("{s:{},s:{s:s,s:i},s:{s:s}}", "tags", "desired", "$lastUpdated",
				 now_iso, "$lastUpdatedVersion", 1, "reported", "$lastUpdated",
				 now_iso);
	free(tw->meta);
	tw->meta = dump(meta);
	json_decref(meta);
}

/* ---- views ------------------------------------------------------------------ */

/* Appends section text (a stored JSON object) with "$version": v added as
 * its last member. The stored text is spliced, not re-parsed: every section
 * is written by this module (or the store) as one compact JSON object, and
 * no key of it can be "$version" (keys with '$' are refused). Text that is
 * not an object reads as {} (as load_obj does). */
static void append_members(struct buf *b, const char *text, const char *meta, int64_t v);

static void append_with_version(struct buf *b, const char *text, int64_t v)
{
	append_members(b, text, NULL, v);
}

/* As append_with_version, with "$metadata": meta (JSON text; NULL: none)
 * before "$version". */
static void append_members(struct buf *b, const char *text, const char *meta, int64_t v)
{
	size_t n = text ? strlen(text) : 0;
	while (n && (text[n - 1] == ' ' || text[n - 1] == '\n' || text[n - 1] == '\t' ||
		     text[n - 1] == '\r'))
		n--;
	size_t i = 0;
	while (i < n && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t' || text[i] == '\r'))
		i++;
	if (n - i >= 2 && text[i] == '{' && text[n - 1] == '}') {
		size_t j = i + 1; /* is the object empty? */
		while (j < n - 1 && (text[j] == ' ' || text[j] == '\n' || text[j] == '\t' ||
				     text[j] == '\r'))
			j++;
		buf_append(b, text + i, n - 1 - i);
		if (j < n - 1)
			buf_appendc(b, ',');
	} else {
		buf_appendc(b, '{');
	}
	if (meta) {
		buf_appends(b, "\"$metadata\":");
		buf_appends(b, meta);
		buf_appendc(b, ',');
	}
	char num[24], *q = num + sizeof num;
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	do
		*--q = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		*--q = '-';
	buf_appends(b, "\"$version\":");
	buf_append(b, q, (size_t)(num + sizeof num - q));
	buf_appendc(b, '}');
}

char *twin_render_properties(const struct store_twin *tw)
{
	struct buf b = BUF_INIT;
	size_t dn = tw->desired ? strlen(tw->desired) : 0;
	size_t rn = tw->reported ? strlen(tw->reported) : 0;
	buf_reserve(&b, dn + rn + 80);
	buf_appends(&b, "{\"desired\":");
	append_with_version(&b, tw->desired, tw->desired_version);
	buf_appends(&b, ",\"reported\":");
	append_with_version(&b, tw->reported, tw->reported_version);
	buf_appendc(&b, '}');
	return buf_steal(&b);
}

char *twin_render_notice(const char *patch, int64_t desired_version)
{
	struct buf b = BUF_INIT;
	append_with_version(&b, patch, desired_version);
	return buf_steal(&b);
}

void twin_render_view(struct buf *b, const struct store_twin_view *v)
{
	const struct store_twin *tw = &v->twin;
	char etag[13];
	twin_etag(tw->version, etag);
	buf_printf(b, "\"etag\":\"%s\",\"version\":%lld,\"tags\":", etag,
		   (long long)tw->version);
	buf_appends(b, tw->tags && tw->tags[0] ? tw->tags : "{}");
	buf_appends(b, ",\"properties\":{\"desired\":");
	append_members(b, tw->desired, v->meta_desired ? v->meta_desired : "{}",
		       tw->desired_version);
	buf_appends(b, ",\"reported\":");
	append_members(b, tw->reported, v->meta_reported ? v->meta_reported : "{}",
		       tw->reported_version);
	buf_appendc(b, '}');
}

void twin_render_into(json_t *obj, const struct store_twin *tw)
{
	char etag[13];
	twin_etag(tw->version, etag);
	json_object_set_new(obj, "etag", json_string(etag));
	json_object_set_new(obj, "version", json_integer(tw->version));
	json_object_set_new(obj, "tags", load_obj(tw->tags));
	json_t *meta = load_obj(tw->meta);
	json_t *props = json_object();
	static const enum twin_section secs[2] = {TWIN_DESIRED, TWIN_REPORTED};
	for (int i = 0; i < 2; i++) {
		enum twin_section s = secs[i];
		json_t *o = load_obj(s == TWIN_DESIRED ? tw->desired : tw->reported);
		json_t *m = json_object_get(meta, section_key(s));
		json_object_set_new(o, "$metadata", json_is_object(m) ? json_incref(m) : json_object());
		json_object_set_new(o, "$version", json_integer(s == TWIN_DESIRED
									? tw->desired_version
									: tw->reported_version));
		json_object_set_new(props, section_key(s), o);
	}
	json_object_set_new(obj, "properties", props);
	json_decref(meta);
}

void twin_etag(int64_t version, char out[13])
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)version >> (56 - 8 * i));
	b64_encode(b, 8, out);
}
