/* A string-keyed hash map (separate chaining, power-of-two buckets, grows
 * at load 1). Keys are copied; values are borrowed pointers. Used on the
 * loop thread only (live sessions by device id). */
#ifndef FH_BASE_MAP_H
#define FH_BASE_MAP_H

#include <stddef.h>

struct map_entry;

struct map {
	struct map_entry **buckets;
	size_t nbuckets;
	size_t count;
};

void map_init(struct map *m);
/* Frees the map's own memory (not the values). */
void map_free(struct map *m);
void *map_get(const struct map *m, const char *key);
/* Sets key to value, returning the previous value (or NULL). */
void *map_put(struct map *m, const char *key, void *value);
/* Removes key, returning its value (or NULL). */
void *map_remove(struct map *m, const char *key);
/* Calls fn(arg, key, value) for every entry; fn must not change the map. */
void map_each(const struct map *m, void (*fn)(void *arg, const char *key, void *value), void *arg);

#endif
