/* check.h: the runtime tests' tiny harness. Each program ends with "N passed, M failed" and exits
 * non-zero on any failure; 77 is Meson's "skipped". */
#ifndef CHECK_H
#define CHECK_H

/* nftw and friends; include this header first. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>

static int check_passed, check_failed;

#define CHECK(cond) check_report(!!(cond), __FILE__, __LINE__, "%s", #cond)
#define CHECK_STR(got, want) \
	check_report(strcmp((got), (want)) == 0, __FILE__, __LINE__, "\"%s\" == \"%s\"", (got), (want))
/* err must contain want (error messages are checked by their key phrase). */
#define CHECK_ERR(got, want) \
	check_report(strstr((got), (want)) != NULL, __FILE__, __LINE__, "error \"%s\" contains \"%s\"", (got), (want))

__attribute__((format(printf, 4, 5)))
static inline int check_report(int ok, const char *file, int line, const char *fmt, ...)
{
	if (ok) {
		check_passed++;
		return 1;
	}
	check_failed++;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s:%d: check failed: ", file, line);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return 0;
}

static inline int check_done(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}

/* A fresh directory for a test's files, removed by check_rmtree. */
static inline char *check_tmpdir(char *buf, size_t len)
{
	const char *base = getenv("TMPDIR");
	snprintf(buf, len, "%s/nmlrt-test.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(buf)) {
		perror("mkdtemp");
		exit(1);
	}
	return buf;
}

static inline int check_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static inline void check_rmtree(const char *dir)
{
	nftw(dir, check_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs a shell command; its exit status, or -1. */
static inline int check_system(const char *cmd)
{
	int st = system(cmd);
	return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* 1 if /usr/bin/python3 can import numpy (the reference reader for .npy and safetensors). */
static inline int check_have_numpy(void)
{
	return check_system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

#endif
