/* optstep.c: the bandwidth reference of bench/run.py's optimizer rows: one update step of Adam, Lion
 * or LAMB over TENSORS tensors of SIZE floats, written as plain loops with the arithmetic of
 * stdlib/optim.nml's rule, compiled with -O3 -march=native -fopenmp (threads: OMP_NUM_THREADS).
 *
 *   optstep RULE TENSORS SIZE STEPS      RULE: adam, lion or lamb
 *
 * The gradient is a fixed array read every step (as in PyTorch). Prints `ns_per_param=… bytes=…
 * gbs=…`: the fastest step's time per parameter (a bound: what the machine can do, which noise from
 * other processes only slows down), the bytes per parameter the loops move at least, and the
 * bandwidth that makes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Hyperparameters as runtime values (volatile), as in NML, so no constant is folded into the loops. */
static volatile float hp_lr = 1e-3f, hp_b1 = 0.9f, hp_b2 = 0.999f, hp_eps = 1e-8f, hp_wd = 0;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Adam (optim.nml `adam`): g += wd p; m, v moments; p -= lr m_hat / (sqrt(v_hat) + eps).
 * Reads p, g, m, v and writes p, m, v: 28 bytes per parameter. */
static void adam(long n, float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int t)
{
	float lr = hp_lr, b1 = hp_b1, b2 = hp_b2, eps = hp_eps, wd = hp_wd;
	float bc1 = 1 - powf(b1, t), bc2 = 1 - powf(b2, t);
#pragma omp parallel for simd schedule(static)
	for (long i = 0; i < n; i++) {
		float gi = g[i] + wd * p[i];
		m[i] = b1 * m[i] + (1 - b1) * gi;
		v[i] = b2 * v[i] + (1 - b2) * gi * gi;
		p[i] -= lr * (m[i] / bc1) / (sqrtf(v[i] / bc2) + eps);
	}
}

/* Lion (optim.nml `lion`): p -= lr (sign(b1 m + (1 - b1) g) + wd p); m = b2 m + (1 - b2) g.
 * Reads p, g, m and writes p, m: 20 bytes per parameter. */
static void lion(long n, float *restrict p, const float *restrict g, float *restrict m, int t)
{
	(void)t;
	float lr = 1e-4f * hp_lr / 1e-3f, b1 = hp_b1, b2 = 0.99f * hp_b2 / 0.999f, wd = hp_wd;
#pragma omp parallel for simd schedule(static)
	for (long i = 0; i < n; i++) {
		float c = b1 * m[i] + (1 - b1) * g[i];
		float s = (float)((c > 0) - (c < 0));
		p[i] -= lr * (s + wd * p[i]);
		m[i] = b2 * m[i] + (1 - b2) * g[i];
	}
}

/* LAMB (optim.nml `lamb`), two passes per tensor: moments, and the norms of p and of the direction
 * r = m_hat / (sqrt(v_hat) + eps) + wd p; then p -= lr ratio r with r recomputed. Reads p, g, m, v
 * and writes m, v, then reads p, m, v and writes p: 40 bytes per parameter. */
static void lamb(long n, float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int t)
{
	float lr = hp_lr, b1 = hp_b1, b2 = hp_b2, eps = 1e-6f * hp_eps / 1e-8f, wd = 0.01f + hp_wd;
	float bc1 = 1 - powf(b1, t), bc2 = 1 - powf(b2, t), pn = 0, rn = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : pn, rn)
	for (long i = 0; i < n; i++) {
		m[i] = b1 * m[i] + (1 - b1) * g[i];
		v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
		float r = (m[i] / bc1) / (sqrtf(v[i] / bc2) + eps) + wd * p[i];
		pn += p[i] * p[i];
		rn += r * r;
	}
	pn = sqrtf(pn), rn = sqrtf(rn);
	float ratio = pn > 0 ? rn > 0 ? pn / rn : 1 : 1;
#pragma omp parallel for simd schedule(static)
	for (long i = 0; i < n; i++) {
		float r = (m[i] / bc1) / (sqrtf(v[i] / bc2) + eps) + wd * p[i];
		p[i] -= lr * ratio * r;
	}
}

static float *filled(long n, float lo, float hi)
{
	float *x = malloc(n * sizeof *x);
	if (!x) {
		fprintf(stderr, "optstep: out of memory\n");
		exit(1);
	}
	for (long i = 0; i < n; i++)
		x[i] = lo == hi ? lo : lo + (hi - lo) * ((float)rand() / RAND_MAX);
	return x;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: optstep adam|lion|lamb TENSORS SIZE STEPS\n");
		return 2;
	}
	const char *rule = argv[1];
	int tensors = atoi(argv[2]), steps = atoi(argv[3 + 1]);
	long size = atol(argv[3]);
	int bytes = strcmp(rule, "adam") == 0 ? 28 : strcmp(rule, "lion") == 0 ? 20 : strcmp(rule, "lamb") == 0 ? 40 : 0;
	if (!bytes || tensors < 1 || size < 1 || steps < 1) {
		fprintf(stderr, "usage: optstep adam|lion|lamb TENSORS SIZE STEPS\n");
		return 2;
	}
	float **p = malloc(tensors * sizeof *p), **g = malloc(tensors * sizeof *g);
	float **m = malloc(tensors * sizeof *m), **v = malloc(tensors * sizeof *v);
	for (int k = 0; k < tensors; k++) {
		p[k] = filled(size, 0.01f, 0.01f), g[k] = filled(size, -1e-3f, 1e-3f);
		m[k] = filled(size, 0, 0), v[k] = filled(size, 0, 0);
	}
	double *times = malloc((steps + 2) * sizeof *times);
	for (int s = -2; s < steps; s++) { /* two warm-up steps */
		double t0 = now();
		for (int k = 0; k < tensors; k++) {
			if (bytes == 28)
				adam(size, p[k], g[k], m[k], v[k], s + 3);
			else if (bytes == 20)
				lion(size, p[k], g[k], m[k], s + 3);
			else
				lamb(size, p[k], g[k], m[k], v[k], s + 3);
		}
		if (s >= 0)
			times[s] = now() - t0;
	}
	qsort(times, steps, sizeof *times, by_value);
	double per = times[0] / ((double)tensors * size);
	float check = 0;
	for (int k = 0; k < tensors; k++)
		check += p[k][size / 2];
	printf("ns_per_param=%.4f bytes=%d gbs=%.2f check=%g\n", per * 1e9, bytes, bytes / per * 1e-9, check);
	return 0;
}
