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
	size_t np = m->param_size + 1, ns = m->state_size + 1;
	float *p[2], *s[2], *g = calloc(np, sizeof *g);
	double *hp = calloc((size_t)m->nhparams + 1, sizeof *hp);
	double *init = calloc(np > ns ? np : ns, sizeof *init);
	drv_init_slots(m->params, m->nparams, m->param_size, 3, 0, init);
	for (int k = 0; k < 2; k++) {
		p[k] = calloc(np, sizeof(float));
		s[k] = calloc(ns, sizeof(float));
		for (size_t i = 0; i < m->param_size; i++)
			p[k][i] = (float)init[i];
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
			NmlArgs a = {.params = p[k], .grads = g, .state = s[k], .x = x, .y = y, .hparams = hp,
				     .work = work, .loss = &loss[k], .n = n, .t = t};
			if (k == 0)
				step(&a);
			else
				check(interp_run(m, c.step, &a, 1) < 0, "all values finite", file);
		}
		worst_loss = fmax(worst_loss, fabs(loss[0] - loss[1]) / fmax(1, fabs(loss[1])));
	}
	/* f32 on both sides; only summation order, exp/log and matmul blocking differ. */
	double dp = diff(p[0], p[1], m->param_size), ds = diff(s[0], s[1], m->state_size);
	printf("%-40s loss %.1e  params %.1e  state %.1e\n", file, worst_loss, dp, ds);
	check(worst_loss < 1e-5, "losses agree", file);
	check(dp < 1e-4, "parameters agree", file);
	check(ds < 1e-4, "state agrees", file);
	for (int k = 0; k < 2; k++) {
		free(p[k]);
		free(s[k]);
	}
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

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		compare(argv[i]);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
