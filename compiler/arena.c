/* arena.c: bump allocator and string interning. */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"

struct ArenaBlock {
	ArenaBlock *next;
	size_t used, cap;
	max_align_t data[];
};

enum { ARENA_BLOCK = 64 * 1024 };

void *arena_alloc(Arena *a, size_t size)
{
	size_t align = sizeof(max_align_t);
	size = (size + align - 1) / align * align;
	ArenaBlock *b = a->head;
	if (!b || b->cap - b->used < size) {
		size_t cap = size > ARENA_BLOCK ? size : ARENA_BLOCK;
		b = malloc(sizeof *b + cap);
		if (!b)
			die("out of memory");
		b->next = a->head;
		b->used = 0;
		b->cap = cap;
		a->head = b;
	}
	void *p = (char *)b->data + b->used;
	b->used += size;
	memset(p, 0, size);
	return p;
}

char *arena_strndup(Arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);
	memcpy(p, s, n);
	return p;
}

void arena_free(Arena *a)
{
	ArenaBlock *b = a->head;
	while (b) {
		ArenaBlock *next = b->next;
		free(b);
		b = next;
	}
	a->head = NULL;
}

/* Open-addressing table of interned strings; grows at half load. */
static struct {
	const char **slot;
	size_t cap, count;
	Arena store;
} names;

static uint64_t hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

static void grow(void)
{
	size_t cap = names.cap ? names.cap * 2 : 1024;
	const char **slot = calloc(cap, sizeof *slot);
	if (!slot)
		die("out of memory");
	for (size_t i = 0; i < names.cap; i++) {
		const char *s = names.slot[i];
		if (!s)
			continue;
		size_t j = hash(s, strlen(s)) & (cap - 1);
		while (slot[j])
			j = (j + 1) & (cap - 1);
		slot[j] = s;
	}
	free(names.slot);
	names.slot = slot;
	names.cap = cap;
}

const char *intern(const char *s, size_t n)
{
	if (2 * (names.count + 1) > names.cap)
		grow();
	size_t j = hash(s, n) & (names.cap - 1);
	for (; names.slot[j]; j = (j + 1) & (names.cap - 1))
		if (strncmp(names.slot[j], s, n) == 0 && names.slot[j][n] == 0)
			return names.slot[j];
	names.count++;
	return names.slot[j] = arena_strndup(&names.store, s, n);
}

const char *intern_cstr(const char *s)
{
	return intern(s, strlen(s));
}
