/* fuzz_codegen.c: the code generator's fuzz target. A source that compiles cleanly (compile.c, the
 * front end's target, with its grammar-aware mutator and seeds) and is small goes on as `nmlc run`
 * takes it: fusion, LLVM code generation and the ORC JIT (session_kernels, without the object
 * cache), then the runtime's model (nml_model_create), two training steps on a few rows of the data
 * and an evaluation. A crash, a sanitizer report, a leak, an internal error (die) or a hang is a
 * finding; a loss that is not finite is not (a fuzzed program may well diverge).
 *
 * With NML_FUZZ_COMPARE=1 the evaluation loss of the first rows, before training, is computed by the
 * interpreter too (interp.c, op by op, unfused) and a difference is printed: not a finding by
 * itself (a fuzzed program can be ill-conditioned enough for summation order to matter), but where
 * to look for a wrong kernel.
 *
 * Small means, at a batch of at most FUZZ_BATCH rows: every value of the step and evaluation
 * functions below MAX_VALUES elements and all of them together below MAX_VALUES, as the model's
 * blocks; fusion's scratch below MAX_VALUES floats; at most MAX_INSTS instructions and MAX_FLOPS
 * per step. A JIT compile costs about 0.1 s an input even so; larger programs would cost seconds. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "fuse.h"
#include "fuzz.h"
#include "interp.h"
#include "session.h"

enum { FUZZ_BATCH = 8, FUZZ_ROWS = 16, MAX_VALUES = 1 << 20, MAX_INSTS = 1500 };
#define MAX_FLOPS 1e8

/* Elements of s at n rows, in double: a fuzzed shape may overflow int64. */
static double numel(IrShape s, int64_t n)
{
	double k = 1;
	for (int d = 0; d < s.rank; d++)
		k *= s.dim[d] == IR_BATCH ? (double)n : (double)s.dim[d];
	return k;
}

/* Whether the compiled program is small enough to compile and run for every input. */
static int small(const Compiler *c, int64_t n)
{
	double blocks = 0;
	for (int b = 0; b < NML_NBLOCKS; b++)
		if (nml_block_kind((NmlBlock)b) != NML_BK_BATCH)
			blocks += (double)ir_block(&c->mod, (NmlBlock)b)->size;
	if (blocks > MAX_VALUES || (double)c->train.xdim * (double)n > MAX_VALUES)
		return 0;
	const IrFunc *fns[] = {c->step, c->eval};
	for (int k = 0; k < 2; k++) {
		double all = 0, flops = 0;
		if (fns[k]->n > MAX_INSTS)
			return 0;
		for (int i = 0; i < fns[k]->n; i++) {
			const IrInst *in = &fns[k]->inst[i];
			double v = numel(in->shape, n);
			if (v > MAX_VALUES || (all += v) > MAX_VALUES)
				return 0;
			if (ir_op_class(in->op) == OPC_LIBRARY) { /* a matrix product: 2 M N K */
				const IrShape *a = &fns[k]->inst[in->in[0]].shape;
				flops += 2 * v * (double)a->dim[a->rank - (in->attr.mm.ta ? 2 : 1)];
			} else {
				flops += v;
			}
		}
		if (flops > MAX_FLOPS)
			return 0;
		FusePlan *p = fuse_plan(&c->mod, fns[k], sizeof(float), n, 1);
		size_t work = p->work_bytes;
		fuse_free(p);
		if (work > MAX_VALUES * sizeof(float))
			return 0;
	}
	return 1;
}

/* The evaluation loss of rows rows (x, y) by the kernels and by the interpreter, printed if they
 * differ by more than rounding explains. */
static void compare(Compiler *c, NmlModel *m, const float *x, const float *y, int64_t rows)
{
	double kernel;
	if (nml_model_evaluate(m, x, y, rows, &kernel, NULL))
		die("fuzz-codegen: evaluation failed: %s", nml_model_error(m));
	float loss = 0, *pred = calloc((size_t)(rows * (c->mod.out_dim > 0 ? c->mod.out_dim : 1)), sizeof *pred);
	NmlArgs a = {.hparams = nml_model_hparams(m), .n = rows, .t = (double)nml_model_get_step(m),
		     .seed = nml_model_seed(m)};
	for (int b = 0; b < NML_NBLOCKS; b++)
		a.block[b] = nml_model_block(m, (NmlBlock)b);
	a.block[NML_B_X] = (float *)x;
	a.block[NML_B_Y] = (float *)y;
	a.block[NML_B_LOSS] = &loss;
	a.block[NML_B_PRED] = pred;
	if (interp_run(&c->mod, c->eval, &a, 0) == -2)
		die("fuzz-codegen: out of memory in the interpreter");
	free(pred);
	double d = fabs(kernel - loss) / fmax(1, fabs(loss));
	if ((isnan(kernel) != isnan(loss)) || d > 1e-3)
		fprintf(stderr, "fuzz-codegen: MISMATCH: evaluation loss %.9g by the kernel, %.9g by the interpreter\n",
			kernel, (double)loss);
}

static void run(Compiler *c)
{
	static int once;
	if (!once) {
		once = 1;
		setenv("NML_CACHE_DIR", "off", 1); /* no object cache: every input is compiled */
		openblas_set_num_threads(1);
	}
	int verbose = getenv("NML_FUZZ_VERBOSE") != NULL;
	int64_t n = c->cfg.batch < FUZZ_BATCH ? c->cfg.batch : FUZZ_BATCH;
	if (c->train.n < 1 || !small(c, n)) {
		if (verbose)
			fprintf(stderr, "fuzz-codegen: too large to run (or no data)\n");
		return;
	}
	Options o = {.batch = n, .epochs = 1, .seed = -1};
	SessionKernels k;
	if (session_kernels(c, &o, &k)) /* small() leaves nothing for it to refuse but what LLVM rejects */
		die("fuzz-codegen: code generation failed");
	NmlModel *m = nml_model_create(&k.desc, c->cfg.seed);
	if (!m)
		abort();
	int64_t idx[FUZZ_ROWS];
	double loss[2] = {0}, test_loss = 0, acc = 0;
	if (getenv("NML_FUZZ_COMPARE")) {
		int64_t rows = c->train.n < n ? c->train.n : n, ycols = c->train.ydim ? c->train.ydim : 1;
		float *x = malloc((size_t)(rows * c->train.xdim) * sizeof *x), *y = malloc((size_t)(rows * ycols) * sizeof *y);
		for (int64_t r = 0; r < rows; r++)
			idx[r] = r;
		nml_data_gather(&c->train, idx, rows, x, y);
		compare(c, m, x, y, rows);
		free(x);
		free(y);
	}
	for (int s = 0; s < 2; s++) {
		int64_t rows = c->train.n < n ? c->train.n : n;
		for (int64_t r = 0; r < rows; r++)
			idx[r] = (s * n + r) % c->train.n;
		if (nml_model_train_rows(m, &c->train, idx, rows, &loss[s]))
			die("fuzz-codegen: a training step failed: %s", nml_model_error(m));
	}
	NmlData few = c->test.n ? c->test : c->train; /* the first rows, the arrays stay the data's */
	if (few.n > FUZZ_ROWS)
		few.n = FUZZ_ROWS;
	if (nml_model_evaluate_data(m, &few, &test_loss, &acc))
		die("fuzz-codegen: evaluation failed: %s", nml_model_error(m));
	if (verbose)
		fprintf(stderr, "fuzz-codegen: ran: loss %g then %g, test loss %g, accuracy %g\n", loss[0], loss[1],
			test_loss, acc);
	nml_model_free(m);
	session_kernels_free(&k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Compiler c;
	if (fuzz_compile(&c, data, size) == 0)
		run(&c);
	drv_free(&c);
	return 0;
}
