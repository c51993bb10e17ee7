#include "map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

struct map_entry {
	struct map_entry *next;
	uint64_t hash;
	void *value;
	char key[];
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

void map_init(struct map *m)
{
	m->buckets = NULL;
	m->nbuckets = 0;
	m->count = 0;
}

void map_free(struct map *m)
{
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct map_entry *e = m->buckets[i];
		while (e) {
			struct map_entry *next = e->next;
			free(e);
			e = next;
		}
	}
	free(m->buckets);
	map_init(m);
}

static struct map_entry **find(const struct map *m, const char *key, uint64_t h)
{
	if (!m->nbuckets)
		return NULL;
	struct map_entry **pp = &m->buckets[h & (m->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0)
			return pp;
	return pp;
}

void *map_get(const struct map *m, const char *key)
{
	struct map_entry **pp = find(m, key, hash_str(key));
	return pp && *pp ? (*pp)->value : NULL;
}

static void grow(struct map *m)
{
	size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
	struct map_entry **b = xcalloc(n, sizeof *b);
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct map_entry *e = m->buckets[i];
		while (e) {
			struct map_entry *next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

void *map_put(struct map *m, const char *key, void *value)
{
	uint64_t h = hash_str(key);
	if (m->count + 1 > m->nbuckets)
		grow(m);
	struct map_entry **pp = find(m, key, h);
	if (*pp) {
		void *old = (*pp)->value;
		(*pp)->value = value;
		return old;
	}
	size_t kl = strlen(key);
	struct map_entry *e = xmalloc(sizeof *e + kl + 1);
	memcpy(e->key, key, kl + 1);
	e->hash = h;
	e->value = value;
	e->next = NULL;
	*pp = e;
	m->count++;
	return NULL;
}

void *map_remove(struct map *m, const char *key)
{
	struct map_entry **pp = find(m, key, hash_str(key));
	if (!pp || !*pp)
		return NULL;
	struct map_entry *e = *pp;
	void *v = e->value;
	*pp = e->next;
	free(e);
	m->count--;
	return v;
}

void map_each(const struct map *m, void (*fn)(void *arg, const char *key, void *value), void *arg)
{
	for (size_t i = 0; i < m->nbuckets; i++)
		for (struct map_entry *e = m->buckets[i]; e; e = e->next)
			fn(arg, e->key, e->value);
}
