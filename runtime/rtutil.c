/* rtutil.c: error messages and the floating-point mode of the runtime. */
#include "rtutil.h"

#include <stdarg.h>
#include <stdio.h>
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
