/* fuzz_ckpt.c: the checkpoint readers (runtime/ckpt.c, and model.c above them) on fuzzed files. The
 * input is the file, handed over as /proc/self/fd/N of a memfd, and read as every caller reads one:
 *   - nmlc run --resume: the metadata keys epoch, seed, model, optimizer and program
 *     (nml_ckpt_meta), then nml_model_load (step, hyperparameters, every tensor);
 *   - nmlc run --init and a library's NAME_load_params: nml_model_load_params;
 *   - a library's NAME_load: nml_model_load.
 * The model is a small fixed one (below): parameters of rank 2, 1 and 0, an empty tensor, optimizer
 * state and two hyperparameters. A reader's error is expected output. A crash, a sanitizer report,
 * a leak, or a load that fails and still changes the model (the runtime promises it does not) is
 * a finding.
 *
 * The custom mutator knows the layout (u64 header length, JSON, data): it mutates the JSON with
 * numbers, keys and values a checkpoint has, and keeps the length in step with it, which a byte
 * mutation of the header almost never does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "nmlrt.h"

static const NmlSlotDesc params[] = {
	{"l1.w", 2, {3, 4}, 0, {NML_INIT_NORMAL, 0, 1}},
	{"l1.b", 1, {4}, 12, {NML_INIT_CONST, 0.5, 0}},
	{"scale", 0, {0}, 16, {NML_INIT_CONST, 2, 0}},
	{"empty", 2, {0, 3}, 17, {NML_INIT_CONST, 0, 0}},
};
static const NmlSlotDesc state[] = {
	{"l1.w.m", 2, {3, 4}, 0, {NML_INIT_CONST, 0, 0}},
	{"l1.b.m", 1, {4}, 12, {NML_INIT_CONST, 0, 0}},
};
static const char *const hparam_names[] = {"lr", "beta1"};
static const double hparam_defaults[] = {1e-3, 0.9};
static const NmlModelDesc desc = {
	.abi = NML_ABI_VERSION, .batch = 2, .xdim = 3, .ydim = 0, .classes = 4, .out_dim = 4,
	.block = {[NML_B_PARAMS] = {params, 4, 17}, [NML_B_GRADS] = {params, 4, 17}, [NML_B_STATE] = {state, 2, 16}},
	.hparam_names = hparam_names, .hparam_defaults = hparam_defaults, .nhparams = 2,
};

enum { MAX_FLOATS = 64 };

/* What a failed load must leave as it was. */
typedef struct Snapshot {
	float block[NML_NBLOCKS][MAX_FLOATS];
	double hparams[2];
	int64_t step;
} Snapshot;

static void snapshot(NmlModel *m, Snapshot *s)
{
	memset(s, 0, sizeof *s);
	for (int b = 0; b < NML_NBLOCKS; b++)
		if (nml_block_kind((NmlBlock)b) == NML_BK_MODEL && desc.block[b].size)
			memcpy(s->block[b], nml_model_block(m, (NmlBlock)b), desc.block[b].size * sizeof(float));
	memcpy(s->hparams, nml_model_hparams(m), sizeof s->hparams);
	s->step = nml_model_get_step(m);
}

/* A load that failed changed nothing; compared bit for bit, as NaN != NaN. */
static void check_unchanged(NmlModel *m, const Snapshot *before, const char *what)
{
	Snapshot now;
	snapshot(m, &now);
	if (memcmp(before, &now, sizeof now) != 0) {
		fprintf(stderr, "fuzz-ckpt: %s failed (%s) but changed the model\n", what, nml_model_error(m));
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FUZZ_MAX_INPUT)
		return 0;
	int fd = memfd_create("fuzz-ckpt", 0);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	char path[64], value[512], err[512];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int verbose = getenv("NML_FUZZ_VERBOSE") != NULL;

	/* --resume's reads, with its buffers: 64 characters for numbers, 512 for names */
	static const char *const keys[] = {"epoch", "seed", "model", "optimizer", "program", "format"};
	for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
		int rc = nml_ckpt_meta(path, keys[k], value, k < 2 ? 64 : sizeof value, err, sizeof err);
		if (rc == 0 && strlen(value) >= (k < 2 ? 64 : sizeof value))
			abort();
		if (verbose)
			fprintf(stderr, "fuzz-ckpt: %s: %s\n", keys[k], rc < 0 ? err : rc ? "absent" : value);
	}

	NmlModel *m = nml_model_create(&desc, 1);
	if (!m)
		abort();
	Snapshot before;
	snapshot(m, &before);
	if (nml_model_load(m, path) < 0) {
		check_unchanged(m, &before, "nml_model_load");
		if (verbose)
			fprintf(stderr, "fuzz-ckpt: load: %s\n", nml_model_error(m));
	} else {
		int64_t step = nml_model_get_step(m);
		if (step < 0)
			abort();
		if (verbose)
			fprintf(stderr, "fuzz-ckpt: load: step %lld, lr %g\n", (long long)step, nml_model_hparams(m)[0]);
	}
	nml_model_free(m);

	m = nml_model_create(&desc, 1);
	if (!m)
		abort();
	snapshot(m, &before);
	if (nml_model_load_params(m, path) < 0) {
		check_unchanged(m, &before, "nml_model_load_params");
		if (verbose)
			fprintf(stderr, "fuzz-ckpt: load_params: %s\n", nml_model_error(m));
	}
	nml_model_free(m);
	close(fd);
	return 0;
}

/* ---- the mutator ---- */

static uint64_t rng;

static uint32_t below(uint32_t n)
{
	rng = rng * 6364136223846793005u + 1442695040888963407u;
	return n ? (uint32_t)(rng >> 33) % n : 0;
}

static const char *const numbers[] = {
	"0", "1", "-1", "3", "4", "12", "16", "48", "64", "1e308", "1e999", "-0", "0.5", "nan", "4294967296",
	"9007199254740992", "9007199254740993", "18446744073709551616", "1e-320", "2147483648",
};
static const char *const words[] = {
	"\"dtype\"", "\"F32\"", "\"F16\"", "\"I64\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"",
	"\"l1.w\"", "\"l1.b\"", "\"scale\"", "\"empty\"", "\"l1.w.m\"", "\"l1.b.m\"", "\"step\"", "\"seed\"",
	"\"epoch\"", "\"hparam.lr\"", "\"hparam.beta1\"", "\"format\"", "\"nml\"", "\"nan\"", "\"inf\"",
	"\"-1\"", "\"1e999\"", "\"0x10\"", "\" 7\"", "\"\"", "\"\\u0000\"", "[]", "{}", "null", "true", "[3, 4]",
	"[0, 48]", "[48, 0]",
};

/* Replaces n bytes at `at` of buf (size bytes, room for max) by s: the new size, or size if no room. */
static size_t splice(uint8_t *buf, size_t size, size_t max, size_t at, size_t n, const char *s)
{
	size_t k = strlen(s);
	if (size - n + k > max)
		return size;
	memmove(buf + at + k, buf + at + n, size - at - n);
	memcpy(buf + at, s, k);
	return size - n + k;
}

/* One mutation of the JSON text j (n bytes, room for max): a number or a string replaced, or bytes. */
static size_t mutate_json(uint8_t *j, size_t n, size_t max)
{
	size_t at = below((uint32_t)n + 1), end = at;
	switch (below(5)) {
	case 0:
	case 1: /* the number at or after `at` */
		while (at < n && !(j[at] >= '0' && j[at] <= '9'))
			at++;
		for (end = at; end < n && ((j[end] >= '0' && j[end] <= '9') || strchr(".eE+-", j[end])); end++)
			;
		if (at < n)
			return splice(j, n, max, at, end - at, numbers[below(sizeof numbers / sizeof *numbers)]);
		break;
	case 2:
	case 3: { /* a string, the first to end after `at` */
		size_t open = 0;
		for (size_t i = 0, in = 0; i < n; i++)
			if (in && j[i] == '\\')
				i++;
			else if (j[i] == '"' && (in = !in))
				open = i;
			else if (j[i] == '"' && i >= at)
				return splice(j, n, max, open, i + 1 - open, words[below(sizeof words / sizeof *words)]);
		break;
	}
	}
	return LLVMFuzzerMutate(j, n, max);
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
	rng = seed;
	uint64_t hlen = 0;
	for (int i = 7; size >= 8 && i >= 0; i--)
		hlen = hlen << 8 | data[i];
	if (size < 8 || hlen > size - 8 || below(10) == 0)
		return LLVMFuzzerMutate(data, size, max_size);
	/* the header in a buffer of its own, then the file put together again around it */
	size_t room = max_size - (size - (size_t)hlen);
	uint8_t *j = malloc(room + 1);
	if (!j)
		return size;
	memcpy(j, data + 8, (size_t)hlen);
	size_t n = (size_t)hlen;
	for (int k = 1 + (int)below(2); k > 0; k--)
		n = mutate_json(j, n, room);
	size_t tail = size - 8 - (size_t)hlen;
	memmove(data + 8 + n, data + 8 + hlen, tail);
	memcpy(data + 8, j, n);
	free(j);
	if (below(20)) /* now and then the length is left as it was */
		for (int i = 0; i < 8; i++)
			data[i] = (uint8_t)((uint64_t)n >> 8 * i);
	return 8 + n + tail;
}
