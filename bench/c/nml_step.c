/* nml_step.c: times one training step of a library built by `nmlc build` with the prefix `nb`
 * (bench/models/optstep_*.nml), for the optimizer rows of bench/run.py.
 *
 *   nml_step STEPS
 *
 * Alternates train_step and the forward-only predict on one fixed input row, after three warm-up
 * steps, and prints `step_ms=… forward_ms=… params=…`: the medians of each and the number of
 * parameters. With a loss linear in the parameters, step - forward is the update (and a broadcast of
 * the scalar gradient, fused into it). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nb.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int steps = argc > 1 ? atoi(argv[1]) : 0;
	if (steps < 1) {
		fprintf(stderr, "usage: nml_step STEPS\n");
		return 2;
	}
	nb_model *m = nb_create(NB_SEED);
	if (!m) {
		fprintf(stderr, "nml_step: out of memory\n");
		return 1;
	}
	long params = 0;
	for (int i = 0; i < NB_NUM_PARAMS; i++) {
		const nb_tensor *t = nb_param_info(i);
		long n = 1;
		for (int d = 0; d < t->rank; d++)
			n *= t->shape[d];
		params += n;
	}
	float x[NB_X_DIM], y[1] = {0}, pred[NB_OUT_DIM];
	for (int i = 0; i < NB_X_DIM; i++)
		x[i] = (float)rand() / RAND_MAX;

	double *step = malloc(steps * sizeof *step), *fwd = malloc(steps * sizeof *fwd), loss;
	for (int s = -3; s < steps; s++) {
		double t0 = now();
		if (nb_train_step(m, x, y, 1, &loss)) {
			fprintf(stderr, "nml_step: train_step: %s\n", nb_error(m));
			return 1;
		}
		double t1 = now();
		if (nb_predict(m, x, 1, pred)) {
			fprintf(stderr, "nml_step: predict: %s\n", nb_error(m));
			return 1;
		}
		double t2 = now();
		if (s >= 0)
			step[s] = t1 - t0, fwd[s] = t2 - t1;
	}
	qsort(step, steps, sizeof *step, by_value);
	qsort(fwd, steps, sizeof *fwd, by_value);
	printf("step_ms=%.4f forward_ms=%.4f params=%ld loss=%g\n", step[steps / 2] * 1e3, fwd[steps / 2] * 1e3, params,
	       loss);
	nb_free(m);
	return 0;
}
