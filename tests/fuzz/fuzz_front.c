/* fuzz_front.c: one NML source through what `nmlc check` runs (lex, parse, the prelude and std
 * modules, sema, the train block's settings, data, lowering with autodiff and the optimizer, CSE
 * and DCE), in-process. Diagnostics are expected output and go to /dev/null; a crash, a sanitizer
 * report, a leak, an internal error (die) or a hang is a finding.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the lexer's sentinel is the only NUL a source has (drv's read_file refuses the others) */
	if (size > FUZZ_MAX_INPUT || memchr(data, 0, size))
		return 0;
	fuzz_init();
	diag_reset();
	Compiler c;
	drv_init(&c);
	char *src = arena_alloc(&c.arena, size + 1);
	memcpy(src, data, size);
	AstProgram p = {0};
	int errs = parse_source(&c.arena, intern_cstr("/nonexistent/fuzz.nml"), src, &p);
	errs += drv_parse_items(&c, p.items);
	if (!errs)
		errs = drv_check(&c);
	if (!errs)
		errs = drv_config(&c);
	int lowered = 0;
	if (!errs && !tame_data(&c.arena, &c.cfg.data) && !drv_load_data(&c))
		lowered = 1, errs = drv_lower(&c);
	if (getenv("NML_FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz: %s, %d error%s\n", lowered ? "lowered" : "stopped before lowering", errs,
			errs == 1 ? "" : "s");
	drv_free(&c);
	return 0;
}
