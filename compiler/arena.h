/* arena.h: bump allocation for a compilation, freed in one go; interned names compare by pointer. */
#ifndef ARENA_H
#define ARENA_H

#include <stddef.h>

typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
	ArenaBlock *head;
} Arena;

void *arena_alloc(Arena *a, size_t size);   /* zeroed, aligned for any type */
char *arena_strndup(Arena *a, const char *s, size_t n);
void arena_free(Arena *a);

/* One interned copy of each distinct string, for the life of the process. */
const char *intern(const char *s, size_t n);
const char *intern_cstr(const char *s);

#endif
