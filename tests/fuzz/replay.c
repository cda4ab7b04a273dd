/* replay.c: the fuzz target without libFuzzer, as a test. Runs every file of the seed corpus
 * (tests/fuzz/corpus: the findings so far, each once a crash, a leak or a hang, and a few valid
 * programs), then ITERATIONS inputs the grammar-aware mutator makes from them from a fixed seed,
 * each mutated from the last or afresh from a corpus file. A crash, sanitizer report, leak or
 * internal error fails it; so does an empty corpus.
 *
 *   fuzz-replay CORPUS_DIR [ITERATIONS [SEED]]   (NML_FUZZ_VERBOSE=1 shows the diagnostics) */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static uint64_t byte_rng = 1;

/* libFuzzer's byte-level mutator stands in here as a small one: flip, insert or drop a byte. */
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size)
{
	byte_rng = byte_rng * 6364136223846793005u + 1442695040888963407u;
	uint64_t r = byte_rng >> 33;
	size_t at = size ? (size_t)(r % size) : 0;
	switch (r % 3) {
	case 0:
		if (size)
			data[at] ^= (uint8_t)(1u << (r >> 8) % 8);
		return size;
	case 1:
		if (size >= max_size)
			return size;
		memmove(data + at + 1, data + at, size - at);
		data[at] = "(){}[]=,.+-*\n 0x\"#"[(r >> 8) % 18];
		return size + 1;
	default:
		if (!size)
			return 0;
		memmove(data + at, data + at + 1, size - at - 1);
		return size - 1;
	}
}

typedef struct Input {
	uint8_t *data;
	size_t size;
	char *name;
} Input;

static int by_name(const void *a, const void *b)
{
	return strcmp(((const Input *)a)->name, ((const Input *)b)->name);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 4) {
		fprintf(stderr, "usage: %s CORPUS_DIR [ITERATIONS [SEED]]\n", argv[0]);
		return 2;
	}
	long iterations = argc > 2 ? strtol(argv[2], NULL, 10) : 1000;
	unsigned seed = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 1;
	DIR *dir = opendir(argv[1]);
	if (!dir) {
		perror(argv[1]);
		return 1;
	}
	Input *in = NULL;
	size_t nin = 0;
	for (struct dirent *e; (e = readdir(dir));) {
		if (e->d_name[0] == '.')
			continue;
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", argv[1], e->d_name);
		FILE *f = fopen(path, "rb");
		if (!f)
			continue;
		Input x = {malloc(FUZZ_MAX_INPUT), 0, strdup(e->d_name)};
		x.size = fread(x.data, 1, FUZZ_MAX_INPUT, f);
		fclose(f);
		in = realloc(in, (nin + 1) * sizeof *in);
		in[nin++] = x;
	}
	closedir(dir);
	if (!nin) {
		fprintf(stderr, "%s: no seed inputs\n", argv[1]);
		return 1;
	}
	qsort(in, nin, sizeof *in, by_name); /* the same order, hence the same mutations, everywhere */
	for (size_t i = 0; i < nin; i++)
		LLVMFuzzerTestOneInput(in[i].data, in[i].size);

	uint8_t *cur = malloc(FUZZ_MAX_INPUT);
	size_t n = 0;
	for (long k = 0; k < iterations; k++) {
		if (k % 4 == 0) { /* afresh from a seed input, else from the last mutant */
			const Input *x = &in[(size_t)k / 4 % nin];
			memcpy(cur, x->data, x->size);
			n = x->size;
		}
		n = LLVMFuzzerCustomMutator(cur, n, 4096 > n ? 4096 : n, seed + (unsigned)k);
		LLVMFuzzerTestOneInput(cur, n);
	}
	printf("%zu seed inputs and %ld mutants checked\n", nin, iterations);
	free(cur);
	for (size_t i = 0; i < nin; i++)
		free(in[i].data), free(in[i].name);
	free(in);
	return 0;
}
