/* rtutil.c: error messages, opening input files, and the floating-point mode of the runtime. */
#include "rtutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

int rt_error(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

const char *rt_file_kind(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "a regular file";
	case S_IFDIR: return "a directory";
	case S_IFIFO: return "a FIFO";
	case S_IFSOCK: return "a socket";
	case S_IFCHR: return "a character device";
	case S_IFBLK: return "a block device";
	case S_IFLNK: return "a symbolic link";
	default: return "not a regular file";
	}
}

int rt_open_regular(const char *path, const char *what, struct stat *st, char *err, size_t errlen)
{
	/* O_NONBLOCK: opening a FIFO for reading waits for a writer; fstat needs the descriptor first. */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return rt_error(err, errlen, "cannot open %s%s: %s", what, path, strerror(errno));
	if (fstat(fd, st) < 0) {
		rt_error(err, errlen, "cannot open %s%s: %s", what, path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st->st_mode)) {
		rt_error(err, errlen, "%s%s is %s, not a regular file", what, path, rt_file_kind(st->st_mode));
		goto fail;
	}
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		rt_error(err, errlen, "cannot open %s%s: %s", what, path, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

#if defined(__x86_64__) || defined(__i386__)
unsigned rt_fp_fast(void)
{
	unsigned old = _mm_getcsr();
	_mm_setcsr(old | 0x8040); /* FTZ (bit 15) | DAZ (bit 6) */
	return old;
}

void rt_fp_restore(unsigned old) { _mm_setcsr(old); }
#else
unsigned rt_fp_fast(void) { return 0; }
void rt_fp_restore(unsigned old) { (void)old; }
#endif
