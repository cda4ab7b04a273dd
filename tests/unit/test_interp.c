/* test_interp.c: the op-by-op interpreter and the JIT-compiled kernels agree.
 *
 * Compiles .nml files through the whole front end, runs a few training steps with the fused kernel
 * and with the interpreter from the same parameters and batches, and compares losses, parameters
 * and optimizer state. The interpreter is what explains a diverging run; this keeps it honest. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "driver.h"
#include "interp.h"
#include "jit.h"

static int passed, failed;

static void check(int ok, const char *what, const char *file)
{
	if (ok)
		passed++;
	else
		failed++, printf("FAIL %s: %s\n", file, what);
}

static CgKernel kernel;

static LLVMModuleRef build(LLVMContextRef ctx, void *user)
{
	Compiler *c = user;
	return cg_module(ctx, "t", &c->mod, &kernel, 1, CG_F32, c->cfg.batch);
}

/* Largest difference relative to max(1, |b|). */
static double diff(const float *a, const float *b, size_t n)
{
	double worst = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]) / fmax(1, fabs((double)b[i]));
		if (!(d <= worst))
			worst = d;
	}
	return worst;
}

static void compare(const char *file)
{
	Compiler c;
	drv_init(&c);
	if (drv_front(&c, file)) {
		check(0, "compiles", file);
		drv_free(&c);
		return;
	}
	const IrModule *m = &c.mod;
	kernel = (CgKernel){"step", c.step, 0};
	char *err = NULL;
	Jit *j = jit_create(&err);
	if (!j || jit_add(j, build, &c, &err)) {
		check(0, err ? err : "jit", file);
		drv_free(&c);
		return;
	}
	NmlKernel step = (NmlKernel)jit_lookup(j, "step", &err);
	size_t psize = ir_block(m, NML_B_PARAMS)->size, ssize = ir_block(m, NML_B_STATE)->size;
	size_t np = psize + 1, ns = ssize + 1;
	float *p[2], *s[2], *g = calloc(np, sizeof *g);
	double *hp = calloc((size_t)m->nhparams + 1, sizeof *hp);
	double *init = calloc(np > ns ? np : ns, sizeof *init);
	drv_init_slots(m, NML_B_PARAMS, 3, init);
	size_t bsize = ir_block(m, NML_B_BUFFERS)->size;
	double *binit = calloc(bsize + 1, sizeof *binit);
	float *bufs[2];
	drv_init_slots(m, NML_B_BUFFERS, 3, binit);
	for (int k = 0; k < 2; k++) {
		p[k] = calloc(np, sizeof(float));
		s[k] = calloc(ns, sizeof(float));
		bufs[k] = calloc(bsize + 1, sizeof(float));
		for (size_t i = 0; i < psize; i++)
			p[k][i] = (float)init[i];
		for (size_t i = 0; i < bsize; i++)
			bufs[k][i] = (float)binit[i];
	}
	for (int i = 0; i < m->nhparams; i++)
		hp[i] = m->hparams[i].name == intern_cstr("T") ? 100 : m->hparams[i].value;
	int64_t n = c.cfg.batch < c.train.n ? c.cfg.batch : c.train.n, ycols = c.train.ydim ? c.train.ydim : 1;
	int64_t *idx = malloc((size_t)c.train.n * sizeof *idx);
	float *x = malloc((size_t)(n * c.train.xdim) * sizeof *x), *y = malloc((size_t)(n * ycols) * sizeof *y);
	void *work = aligned_alloc(64, (kernel.work_bytes + 64) & ~(size_t)63);
	double worst_loss = 0;
	nml_epoch_order(1, 1, idx, c.train.n);
	for (int t = 1; t <= 3; t++) {
		nml_data_gather(&c.train, idx + (t - 1) * n % (c.train.n - n + 1), n, x, y);
		float loss[2];
		for (int k = 0; k < 2; k++) {
			NmlArgs a = {.block = {[NML_B_PARAMS] = p[k], [NML_B_GRADS] = g, [NML_B_STATE] = s[k], [NML_B_BUFFERS] = bufs[k],
					       [NML_B_X] = x, [NML_B_Y] = y, [NML_B_WORK] = work, [NML_B_LOSS] = &loss[k]},
				     .hparams = hp, .n = n, .t = t};
			if (k == 0)
				step(&a);
			else
				check(interp_run(m, c.step, &a, 1) < 0, "all values finite", file);
		}
		worst_loss = fmax(worst_loss, fabs(loss[0] - loss[1]) / fmax(1, fabs(loss[1])));
	}
	/* f32 on both sides; only summation order, exp/log and matmul blocking differ. */
	double dp = diff(p[0], p[1], psize), ds = diff(s[0], s[1], ssize), db = diff(bufs[0], bufs[1], bsize);
	printf("%-40s loss %.1e  params %.1e  state %.1e  buffers %.1e\n", file, worst_loss, dp, ds, db);
	check(db < 1e-4, "buffers agree", file);
	check(worst_loss < 1e-5, "losses agree", file);
	check(dp < 1e-4, "parameters agree", file);
	check(ds < 1e-4, "state agrees", file);
	for (int k = 0; k < 2; k++) {
		free(p[k]);
		free(s[k]);
		free(bufs[k]);
	}
	free(binit);
	free(hp);
	free(g);
	free(init);
	free(idx);
	free(x);
	free(y);
	free(work);
	jit_destroy(j);
	drv_free(&c);
}

/* ---- every elementwise and reduction op on NaN, infinities, signed zeros and denormals ----
 *
 * The interpreter explains a diverging run by finding the first op whose value stops being finite,
 * so on exactly these inputs it must compute what the kernels compute. Driven by the op table: a
 * new op is covered without a line here. Kernels run without flush-to-zero, as the interpreter
 * does; results agree when both are NaN, or equal, or within a few float ulps (denormal results
 * within the denormal spacing the two may round differently). */

static const float specials[] = {
	0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -2.5f, 3.0f, 1e-40f, -1e-40f, 1e-30f, 20.0f, 88.0f, -88.0f, 100.0f,
	-100.0f, INFINITY, -INFINITY, NAN, 3.4e38f, -3.4e38f,
};
enum { NSPECIAL = sizeof specials / sizeof specials[0] };

static int agree(float k, float i)
{
	if (isnan(k) || isnan(i))
		return isnan(k) && isnan(i);
	if (isinf(k) || isinf(i))
		return k == i;
	return fabsf(k - i) <= 4e-6f * fmaxf(fabsf(k), fabsf(i)) + 1e-38f;
}

static CgKernel special_kernel;
static IrModule special_mod;

static LLVMModuleRef build_special(LLVMContextRef ctx, void *user)
{
	(void)user;
	return cg_module(ctx, "s", &special_mod, &special_kernel, 1, CG_F32, (int64_t)NSPECIAL * NSPECIAL);
}

/* Runs f (reading x, y and z of shape [rows], storing pred) as a kernel and in the interpreter. */
static void special_case(IrOp op, IrFunc *f, int64_t rows, float *x, float *y, float *z, int64_t out)
{
	char what[96];
	special_kernel = (CgKernel){"special", f, 0};
	char *err = NULL;
	Jit *j = jit_create(&err);
	if (!j || jit_add(j, build_special, NULL, &err)) {
		snprintf(what, sizeof what, "%s compiles", ir_op_name(op));
		check(0, what, "special values");
		return;
	}
	NmlKernel k = (NmlKernel)jit_lookup(j, "special", &err);
	float *pk = calloc((size_t)out + 1, sizeof *pk), *pi = calloc((size_t)out + 1, sizeof *pi), loss = 0;
	void *work = aligned_alloc(64, (special_kernel.work_bytes + 64) & ~(size_t)63);
	float *yz[2] = {y, z};
	for (int run = 0; run < 2; run++) {
		NmlArgs a = {.block = {[NML_B_X] = x, [NML_B_Y] = yz[0], [NML_B_BUFFERS] = yz[1], [NML_B_WORK] = work,
				       [NML_B_LOSS] = &loss, [NML_B_PRED] = run ? pi : pk},
			     .n = rows, .t = 1};
		if (run)
			interp_run(&special_mod, f, &a, 0);
		else
			k(&a);
	}
	int bad = 0;
	for (int64_t e = 0; e < out; e++)
		if (!agree(pk[e], pi[e]) && bad++ < 3)
			printf("  %s: element %lld (x %g, y %g, z %g): kernel %.9g, interpreter %.9g\n", ir_op_name(op),
			       (long long)e, x[e % rows], y ? y[e % rows] : 0.0, z ? z[e % rows] : 0.0, pk[e], pi[e]);
	snprintf(what, sizeof what, "%s agrees on special values", ir_op_name(op));
	check(!bad, what, "special values");
	free(pk);
	free(pi);
	free(work);
	jit_destroy(j);
}

static void special_values(void)
{
	static const SrcLoc L0;
	int64_t rows = (int64_t)NSPECIAL * NSPECIAL * NSPECIAL;
	float *x = malloc((size_t)rows * sizeof *x), *y = malloc((size_t)rows * sizeof *y);
	float *z = malloc((size_t)rows * sizeof *z);
	for (int64_t i = 0; i < rows; i++) { /* every triple of specials */
		x[i] = specials[i % NSPECIAL];
		y[i] = specials[i / NSPECIAL % NSPECIAL];
		z[i] = specials[i / NSPECIAL / NSPECIAL];
	}
	float *pairs = malloc(2 * (size_t)rows * sizeof *pairs); /* x, y side by side: [rows, 2] */
	for (int64_t i = 0; i < rows; i++)
		pairs[2 * i] = x[i], pairs[2 * i + 1] = y[i];
	const IrShape vec = {1, {IR_BATCH}}, two = {2, {IR_BATCH, 2}};
	for (int op = 0; op < IR_NOPS; op++) {
		IrOpClass cls = ir_op_class((IrOp)op);
		if (cls != OPC_ELEMWISE && cls != OPC_REDUCE)
			continue;
		memset(&special_mod, 0, sizeof special_mod);
		ir_set_batch(&special_mod, cls == OPC_REDUCE ? two : vec, vec, vec);
		/* z is the tensor of a third block of the batch's shape */
		ir_add_slot(&special_mod, NML_B_BUFFERS, intern_cstr("z"), vec, (IrInit){0}, L0);
		IrFunc *f = ir_func_new(intern_cstr("special"));
		int arity = ir_op_arity((IrOp)op), r;
		int64_t n = arity == 1 ? NSPECIAL : arity == 2 ? (int64_t)NSPECIAL * NSPECIAL : rows;
		if (cls == OPC_REDUCE) { /* every pair of specials combined */
			n = (int64_t)NSPECIAL * NSPECIAL;
			r = ir_reduce(f, (IrOp)op, ir_load(f, NML_B_X, 0, two, L0), 2, 0, L0);
		} else {
			int in[3] = {ir_load(f, NML_B_X, 0, vec, L0), ir_load(f, NML_B_Y, 0, vec, L0),
				     ir_load(f, NML_B_BUFFERS, 0, vec, L0)};
			/* expand is a broadcasting copy; on equal shapes the builder makes it a copy of its own */
			r = op == IR_EXPAND ? ir_elementwise(f, IR_STOPGRAD, in, L0) : ir_elementwise(f, (IrOp)op, in, L0);
		}
		ir_store(f, NML_B_PRED, 0, r, L0);
		special_case((IrOp)op, f, n, cls == OPC_REDUCE ? pairs : x, y, z, n);
		ir_func_free(f);
		ir_module_free(&special_mod);
	}
	free(pairs);
	free(x);
	free(y);
	free(z);
}

int main(int argc, char **argv)
{
	special_values();
	for (int i = 1; i < argc; i++)
		compare(argv[i]);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
