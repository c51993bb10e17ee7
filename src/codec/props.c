/* Property bags (props.h). */
#include "codec/props.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/enc.h"
#include "base/err.h"
#include "base/mem.h"

/* Bag keys of system properties and the names the hub gives them (the
 * names azure-iot-device's Message uses where it has one). */
static const struct {
	const char *key, *name;
} system_keys[] = {
    {"$.mid", "messageId"},       {"$.cid", "correlationId"},
    {"$.uid", "userId"},          {"$.to", "to"},
    {"$.exp", "expiryTimeUtc"},   {"$.ct", "contentType"},
    {"$.ce", "contentEncoding"},  {"$.ctime", "creationTimeUtc"},
    {"$.on", "outputName"},       {"$.ifid", "iothub-interface-id"},
    {"$.sub", "dt-subject"},      {"$.schema", "dt-dataschema"},
    {"$.diagid", "diagnosticId"}, {"$.diagctx", "correlationContext"},
};
#define NSYSTEM (sizeof system_keys / sizeof system_keys[0])

const char *props_system_name(const char *key)
{
	for (size_t i = 0; i < NSYSTEM; i++)
		if (strcmp(system_keys[i].key, key) == 0)
			return system_keys[i].name;
	return NULL;
}

static const char *system_key(const char *name)
{
	for (size_t i = 0; i < NSYSTEM; i++)
		if (strcmp(system_keys[i].name, name) == 0)
			return system_keys[i].key;
	return NULL;
}

/* Decodes in[0..n) into a new string (NULL with err on failure). */
static char *decode(const char *in, size_t n, const char *what, char *err, size_t errlen)
{
	char *out = xmalloc(n + 1);
	size_t len;
	if (pct_decode(in, n, out, &len) != 0) {
		snprintf(err, errlen, "a property %s holds a malformed %%-escape or a NUL", what);
	} else if (!utf8_valid(out, len)) {
		snprintf(err, errlen, "a property %s is not UTF-8", what);
	} else {
		return out;
	}
	free(out);
	return NULL;
}

int props_parse(const char *bag, size_t n, json_t **app_out, json_t **sys_out, char *err,
		size_t errlen)
{
	*app_out = *sys_out = NULL;
	if (n > PROPS_MAX_BAG) {
		snprintf(err, errlen, "the property bag is %zu bytes, more than %d", n,
			 PROPS_MAX_BAG);
		return FH_ETOOBIG;
	}
	if (n == 1 && bag[0] == '/') /* some clients end the topic with a '/' */
		n = 0;
	json_t *app = json_object(), *sys = json_object();
	unsigned count = 0;
	int rc = 0;
	size_t i = 0;
	while (rc == 0 && i < n) {
		const char *amp = memchr(bag + i, '&', n - i);
		size_t end = amp ? (size_t)(amp - bag) : n;
		const char *eq = memchr(bag + i, '=', end - i);
		size_t kend = eq ? (size_t)(eq - bag) : end;
		char *key = NULL, *value = NULL;
		if (end == i) { /* "&&" or a trailing '&': nothing */
			i = end + 1;
			continue;
		}
		if (++count > PROPS_MAX_COUNT) {
			snprintf(err, errlen, "more than %d properties", PROPS_MAX_COUNT);
			rc = FH_ETOOBIG;
		} else if (kend == i) {
			snprintf(err, errlen, "a property has an empty name");
			rc = FH_EINVAL;
		} else if (!(key = decode(bag + i, kend - i, "name", err, errlen)) ||
			   (eq && !(value = decode(eq + 1, end - kend - 1, "value", err, errlen)))) {
			rc = FH_EINVAL;
		} else {
			const char *name = key;
			json_t *into = app;
			if (strncmp(key, "$.", 2) == 0) {
				const char *known = props_system_name(key);
				name = known ? known : key;
				into = sys;
			}
			if (json_object_get(into, name)) {
				snprintf(err, errlen, "property '%.64s' is given twice", key);
				rc = FH_EINVAL;
			} else {
				json_object_set_new(into, name,
						    value ? json_string(value) : json_null());
			}
		}
		free(key);
		free(value);
		i = end + 1;
	}
	if (rc != 0) {
		json_decref(app);
		json_decref(sys);
		return rc;
	}
	*app_out = app;
	*sys_out = sys;
	return 0;
}

static void add(struct buf *out, const char *key, const json_t *v, bool system)
{
	if (!json_is_string(v) && !json_is_null(v))
		return;
	if (out->len)
		buf_appendc(out, '&');
	if (system) { /* "$." as "%24." and the rest encoded */
		buf_appends(out, "%24.");
		pct_encode(out, key + 2, strlen(key + 2));
	} else {
		pct_encode(out, key, strlen(key));
	}
	if (json_is_string(v)) {
		buf_appendc(out, '=');
		pct_encode(out, json_string_value(v), json_string_length(v));
	}
}

void props_encode(struct buf *out, const json_t *sys, const json_t *app)
{
	/* add() separates by the length so far: the bag is built apart. */
	struct buf bag = BUF_INIT;
	const char *name;
	json_t *v;
	json_object_foreach((json_t *)sys, name, v)
	{
		const char *key = system_key(name);
		if (key)
			add(&bag, key, v, true);
		else if (strncmp(name, "$.", 2) == 0)
			add(&bag, name, v, true);
	}
	json_object_foreach((json_t *)app, name, v) add(&bag, name, v, false);
	if (bag.len)
		buf_append(out, bag.data, bag.len);
	buf_free(&bag);
}
