/* compile.c: one NML source through what `nmlc check` runs (lex, parse, the prelude and std
 * modules, sema, the train block's settings, data, lowering with autodiff and the optimizer, CSE
 * and DCE), in-process: the front end's fuzz target (fuzz_front.c) and the start of the code
 * generator's (fuzz_codegen.c). Diagnostics are expected output and go to /dev/null.
 *
 * The text cannot make the fuzzer read files at will:
 *   - it is named /nonexistent/fuzz.nml, so a `use a.b` of a file beside it finds nothing, while
 *     `use std.x` reads the library as always;
 *   - data files are read only from tests/data/ (small, committed): a path is replaced by the file
 *     there of the same base name ("../data/blobs.csv" reads tests/data/blobs.csv, as the tests'
 *     programs mean). Any other source (fashion_mnist(), npy("/etc/...")) becomes synthetic rows of
 *     the width the spec implies (784 features for IDX, the `shape =` product when given, else 4),
 *     so lowering still sees a data set;
 *   - synthetic(...) is clamped to 2^20 values, and refused past that, so no input allocates the
 *     machine's memory for data. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "parse.h"
#include "config.h"
#include "fuzz.h"

enum { MAX_DATA_VALUES = 1 << 20 };

static char data_dir[PATH_MAX]; /* realpath of tests/data, with a trailing '/' */

static void fuzz_init(void)
{
	static int done;
	if (done)
		return;
	done = 1;
	FILE *sink = getenv("NML_FUZZ_VERBOSE") ? stderr : fopen("/dev/null", "w");
	diag_set_stream(sink ? sink : stderr);
	if (realpath(NML_SOURCE_DIR "/tests/data", data_dir))
		strcat(data_dir, "/");
	else
		data_dir[0] = 0;
}

/* The file of tests/data with path's base name, or NULL: a program's "../data/blobs.csv" reads the
 * committed file from wherever the fuzzer runs, and no other file is read. */
static const char *data_file(Arena *a, const char *path)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	char file[PATH_MAX];
	if (!data_dir[0] || !*base || strcmp(base, "..") == 0
	    || snprintf(file, sizeof file, "%s%s", data_dir, base) >= (int)sizeof file)
		return NULL;
	FILE *f = fopen(file, "rb");
	if (!f)
		return NULL;
	fclose(f);
	return arena_strndup(a, file, strlen(file));
}

/* The data spec made safe to load; 1 when it is not loaded at all. */
static int tame_data(Arena *a, DataSpec *d)
{
	if (d->kind == DATA_SYNTHETIC) {
		if (d->synth.d < 1 || d->synth.d > MAX_DATA_VALUES)
			return d->synth.d > MAX_DATA_VALUES;
		if (d->synth.n > MAX_DATA_VALUES / d->synth.d)
			d->synth.n = MAX_DATA_VALUES / d->synth.d;
		return 0;
	}
	int files = 0, found = 0;
	const char *path[4] = {0};
	for (int i = 0; i < 4; i++)
		if (d->path[i])
			files++, found += (path[i] = data_file(a, d->path[i])) != NULL;
	if (files && files == found) {
		memcpy(d->path, path, sizeof path);
		return 0;
	}
	int64_t width = d->kind == DATA_IDX ? 784 : 4;
	if (d->xrank > 0) {
		width = 1;
		for (int i = 0; i < d->xrank; i++)
			if (d->xshape[i] < 1 || d->xshape[i] > MAX_DATA_VALUES / width)
				return 1;
			else
				width *= d->xshape[i];
	}
	d->synth.n = 16;
	d->synth.d = width;
	d->synth.classes = d->kind == DATA_CSV && d->regression ? 0 : 10;
	d->synth.noise = 0;
	d->synth.seed = 1;
	d->kind = DATA_SYNTHETIC;
	memset(d->path, 0, sizeof d->path);
	return 0;
}

/* A phase's result agrees with what it reported: nmlc's exit status comes from the one and its
 * messages from the other, so an error shown by a phase that returns success is ignored (the run goes
 * on), and a failure without a message leaves the user only an exit status. Either is a finding. */
static int checked(const char *phase, int errs, int before)
{
	if ((errs != 0) != (diag_count() != before)) {
		fprintf(stderr, "fuzz: %s returned %d after reporting %d errors\n", phase, errs, diag_count() - before);
		abort();
	}
	return errs;
}

int fuzz_compile(Compiler *c, const uint8_t *data, size_t size)
{
	drv_init(c);
	/* the lexer's sentinel is the only NUL a source has (drv's read_file refuses the others) */
	if (size > FUZZ_MAX_INPUT || memchr(data, 0, size))
		return -1;
	fuzz_init();
	diag_reset();
	char *src = arena_alloc(&c->arena, size + 1);
	memcpy(src, data, size);
	AstProgram p = {0};
	int errs = parse_source(&c->arena, intern_cstr("/nonexistent/fuzz.nml"), src, &p);
	errs = checked("parsing", errs + drv_parse_items(c, p.items), 0);
	int before = diag_count(); /* a variable each time: arguments are evaluated in no set order */
	if (!errs)
		errs = checked("drv_check", drv_check(c), before);
	before = diag_count();
	if (!errs)
		errs = checked("drv_config", drv_config(c), before);
	int lowered = 0;
	before = diag_count();
	if (!errs && !tame_data(&c->arena, &c->cfg.data) && !checked("drv_load_data", drv_load_data(c), before)) {
		before = diag_count();
		lowered = 1, errs = checked("drv_lower", drv_lower(c), before);
	}
	if (getenv("NML_FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz: %s, %d error%s\n", lowered ? "lowered" : "stopped before lowering", errs,
			errs == 1 ? "" : "s");
	return lowered && !errs ? 0 : -1;
}
