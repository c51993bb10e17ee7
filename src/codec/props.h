/* A message's properties as IoT Hub's MQTT topics carry them (protocol.md
 * §2.8, §2.9): the "property bag" after devices/{id}/messages/events/ (and
 * .../devicebound/), "k=v&k=v" with keys and values percent-encoded;
 * system properties have keys starting "$." (sent as "%24."), the others
 * are the application's. A bare key is a property without a value (null).
 *
 * Parsed into two JSON objects of strings (or null): the application
 * properties by their keys, and the system properties by the names the hub
 * gives them (messageId, correlationId, ... see props.c's table; a "$."
 * key it does not know keeps its key). Pure and bounded: bytes in, JSON
 * out; tests/fuzz/fuzz_props.c drives it. */
#ifndef FH_CODEC_PROPS_H
#define FH_CODEC_PROPS_H

#include <jansson.h>
#include <stddef.h>

#include "base/buf.h"

#define PROPS_MAX_BAG 16384 /* bytes of a bag */
#define PROPS_MAX_COUNT 128 /* properties of a message */

/* Parses bag[0..n) ("" or a trailing "/" alone: none) into *app and *sys
 * (new objects, owned by the caller). 0, or FH_EINVAL / FH_ETOOBIG with a
 * sentence in err (nothing allocated): a malformed escape, an empty key, a
 * key given twice, text that is not UTF-8 or holds a NUL, over the bounds. */
int props_parse(const char *bag, size_t n, json_t **app, json_t **sys, char *err, size_t errlen);

/* Appends the bag of sys and app (objects of strings or null; other
 * members are skipped) to out: the system properties first under their
 * "%24." keys, then the application's. */
void props_encode(struct buf *out, const json_t *sys, const json_t *app);

/* The system property name of bag key key ("$.mid" -> "messageId"), or
 * NULL when key is not a system key the hub knows. */
const char *props_system_name(const char *key);

#endif
