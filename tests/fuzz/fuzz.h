/* fuzz.h: the fuzz targets' entry points and mutators, shared by the libFuzzer build and the replay
 * driver (replay.c) that runs them without libFuzzer. */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);
size_t LLVMFuzzerCustomCrossOver(const uint8_t *data1, size_t size1, const uint8_t *data2, size_t size2,
				 uint8_t *out, size_t max_out_size, unsigned int seed);
/* libFuzzer's own byte-level mutator; replay.c supplies a small one of its own. */
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

/* Inputs longer than this are skipped: the front end's time on big files is tested elsewhere
 * (tests/golden/diag's 10,000-term chain), and a fuzzer's time is better spent on many small ones. */
enum { FUZZ_MAX_INPUT = 1 << 16 };

struct Compiler;
/* compile.c: the source in data compiled into c (drv_init'ed here, drv_free'd by the caller) up to
 * lowering, as `nmlc check` does; 0 if it lowered without errors, else -1. */
int fuzz_compile(struct Compiler *c, const uint8_t *data, size_t size);

#endif
