/* sgemm.c: the sgemm rate of OpenBLAS on a training step's matrix products, for bench/run.py's
 * hardware bound (FLOPs per step / this rate).
 *
 *   sgemm --core                      the OpenBLAS kernel set in use (OPENBLAS_CORETYPE or detected)
 *   sgemm SECONDS M,N,K,TA,TB ...     C[M,N] = op(A) op(B), row-major, op = transpose when T? is 1;
 *                                     the whole list is one "step", run back to back repeatedly
 *
 * Prints `step_ms=… gflops=…`: the time of one pass through the list in the fastest of 15 rounds (a
 * bound: what the machine can do, which noise from other processes only slows down), and the list's
 * FLOPs (2 M N K each) over that time. Threads: OPENBLAS_NUM_THREADS. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *openblas_get_corename(void);

typedef struct {
	int m, n, k, ta, tb;
	float *a, *b, *c;
} Gemm;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *randoms(size_t n)
{
	float *p = malloc(n * sizeof *p);
	if (!p) {
		fprintf(stderr, "sgemm: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		p[i] = (float)rand() / RAND_MAX - 0.5f;
	return p;
}

static void run(const Gemm *g, int count)
{
	for (int i = 0; i < count; i++) {
		const Gemm *e = &g[i];
		cblas_sgemm(CblasRowMajor, e->ta ? CblasTrans : CblasNoTrans, e->tb ? CblasTrans : CblasNoTrans, e->m,
			    e->n, e->k, 1.0f, e->a, e->ta ? e->m : e->k, e->b, e->tb ? e->k : e->n, 0.0f, e->c, e->n);
	}
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--core") == 0) {
		printf("%s\n", openblas_get_corename());
		return 0;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: sgemm --core | sgemm SECONDS M,N,K,TA,TB ...\n");
		return 2;
	}
	double seconds = atof(argv[1]), flops = 0;
	int count = argc - 2;
	Gemm *g = calloc(count, sizeof *g);
	for (int i = 0; i < count; i++) {
		Gemm *e = &g[i];
		if (sscanf(argv[i + 2], "%d,%d,%d,%d,%d", &e->m, &e->n, &e->k, &e->ta, &e->tb) != 5) {
			fprintf(stderr, "sgemm: bad shape '%s' (want M,N,K,TA,TB)\n", argv[i + 2]);
			return 2;
		}
		e->a = randoms((size_t)e->m * e->k), e->b = randoms((size_t)e->k * e->n), e->c = randoms((size_t)e->m * e->n);
		flops += 2.0 * e->m * e->n * e->k;
	}

	/* Warm up (thread start, page faults), then size a round to about seconds / 15. */
	double t0 = now();
	int passes = 0;
	while (now() - t0 < 0.05 || passes < 3)
		run(g, count), passes++;
	double per = (now() - t0) / passes;
	int per_round = (int)(seconds / 15 / per) + 1;

	enum { ROUNDS = 15 };
	double t[ROUNDS];
	for (int r = 0; r < ROUNDS; r++) {
		double s = now();
		for (int i = 0; i < per_round; i++)
			run(g, count);
		t[r] = (now() - s) / per_round;
	}
	qsort(t, ROUNDS, sizeof *t, by_value);
	printf("step_ms=%.4f gflops=%.2f\n", t[0] * 1e3, flops / t[0] * 1e-9);
	return 0;
}
