/* rterr.h: the runtime's internal error helper (not part of the public nmlrt.h). */
#ifndef RTERR_H
#define RTERR_H

#include <stddef.h>

/* Format a message into err (when given) and return -1, so a failing path is `return rt_error(...)`. */
__attribute__((format(printf, 3, 4)))
int rt_error(char *err, size_t errlen, const char *fmt, ...);

#endif
