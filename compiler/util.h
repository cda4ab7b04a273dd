/* util.h: allocation for the compiler. nmlc's own data is small; running out of memory there is
 * not something to recover from, so these end the process with a message instead of returning NULL. */
#ifndef UTIL_H
#define UTIL_H

#include <stdlib.h>

#include "diag.h"

static inline void *xrealloc(void *p, size_t size)
{
	p = realloc(p, size ? size : 1);
	if (!p)
		die("out of memory");
	return p;
}

static inline void *xmalloc(size_t size) { return xrealloc(NULL, size); }

static inline void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		die("out of memory");
	return p;
}

#endif
