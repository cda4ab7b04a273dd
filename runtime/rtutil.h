/* rtutil.h: the runtime's internal helpers (not part of the public nmlrt.h). */
#ifndef RTUTIL_H
#define RTUTIL_H

#include <stddef.h>
#include <sys/stat.h>

/* Format a message into err (when given) and return -1, so a failing path is `return rt_error(...)`. */
__attribute__((format(printf, 3, 4)))
int rt_error(char *err, size_t errlen, const char *fmt, ...);

/* What a file of this type is, for messages: "a directory", "a FIFO", "a character device", ... */
const char *rt_file_kind(mode_t mode);

/* Opens path for reading if it is a regular file; anything else is refused before a byte is read (a
 * FIFO would block forever, a device such as /dev/zero never ends). Returns the descriptor (blocking,
 * close-on-exec) and its stat in *st, or -1 with err set: "cannot open <what><path>: <reason>" or
 * "<what><path> is a FIFO, not a regular file", where what is "" or, say, "checkpoint ". */
int rt_open_regular(const char *path, const char *what, struct stat *st, char *err, size_t errlen);

/* Kernels run with denormals flushed to zero (FTZ and DAZ): optimizer state such as Adam's second
 * moment decays into the denormal range within a few epochs, where every operation on it takes a
 * microcode assist, and training slowed down by half by the third epoch. rt_fp_fast sets the mode
 * and returns the caller's, which rt_fp_restore puts back. */
unsigned rt_fp_fast(void);
void rt_fp_restore(unsigned old);

#endif
