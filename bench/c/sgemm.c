/* sgemm.c: the sgemm rate of OpenBLAS on a training step's matrix products, for bench/run.py's
 * hardware bound (FLOPs per step / this rate).
 *
 *   sgemm --core                      the OpenBLAS kernel set in use (OPENBLAS_CORETYPE or detected)
 *   sgemm SECONDS M,N,K,TA,TB ...     C[M,N] = op(A) op(B), row-major, op = transpose when T? is 1;
 *                                     the whole list is one "step", run back to back repeatedly
 *
 * Prints `step_ms=… gflops=… tiles=…`: the time of one pass through the list in the fastest of 15
 * rounds (a bound: what the machine can do, which noise from other processes only slows down), and
 * the list's FLOPs (2 M N K each) over that time. Threads: OPENBLAS_NUM_THREADS.
 *
 * Each list is timed two ways, and the faster counts (tiles=0 or 1): every product whole on
 * OpenBLAS's threads; or every product of more than a million multiply-adds cut into tiles of C of
 * at most 64 columns and about 600k multiply-adds (16 rows with B transposed; none for an inner
 * dimension too long for 16 rows, or with B transposed shorter than 256), each tile one call on
 * one OpenBLAS thread, the tiles spread over the threads (nmlc cuts a small batch's x w along its
 * inner dimension instead, the same multiply-adds in as many calls).
 * That is how nmlc runs products where OpenBLAS's AVX-512 kernels multiply such tiles without
 * packing them (compiler/codegen.c, product_tiles), faster than whole; elsewhere whole is faster. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *openblas_get_corename(void);

typedef struct {
	int m, n, k, ta, tb;
	float *a, *b, *c;
	int rows, cols; /* a tile, or 0: not cut */
} Gemm;

void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

/* The tile of a product: at most 64 columns, rows in multiples of 16, tiles along a side equal. */
static int side(int len, int most)
{
	int count = (len + most - 1) / most, s = ((len + count - 1) / count + 15) / 16 * 16;
	return s < most ? s : most;
}

static void tile(Gemm *e)
{
	long macs = (long)e->m * e->n * e->k;
	int cols = e->n < 64 ? e->n : 64, rows = e->tb ? 16 : (int)(600000 / ((long)cols * e->k) / 16 * 16);
	if (macs <= 960000 || (e->tb && e->k < 256))
		return;
	if (rows < 16)
		rows = 16;
	if ((long)rows * cols * e->k > 960000)
		return;
	e->rows = side(e->m, rows);
	e->cols = e->n <= cols ? e->n : side(e->n, cols);
}

static void one(const Gemm *e, int r0, int c0, int m, int n)
{
	int lda = e->ta ? e->m : e->k, ldb = e->tb ? e->k : e->n;
	cblas_sgemm(CblasRowMajor, e->ta ? CblasTrans : CblasNoTrans, e->tb ? CblasTrans : CblasNoTrans, m, n, e->k,
		    1.0f, e->a + (e->ta ? r0 : (long)r0 * lda), lda, e->b + (e->tb ? (long)c0 * ldb : c0), ldb, 0.0f,
		    e->c + (long)r0 * e->n + c0, e->n);
}

static void run_tiles(const Gemm *g, int count, int threads)
{
	for (int i = 0; i < count; i++) {
		const Gemm *e = &g[i];
		if (!e->rows) {
			one(e, 0, 0, e->m, e->n);
			continue;
		}
		int down = (e->m + e->rows - 1) / e->rows, across = (e->n + e->cols - 1) / e->cols;
#pragma omp parallel for num_threads(threads) schedule(static)
		for (int t = 0; t < down * across; t++) {
			int r0 = t / across * e->rows, c0 = t % across * e->cols;
			int m = e->m - r0 < e->rows ? e->m - r0 : e->rows, n = e->n - c0 < e->cols ? e->n - c0 : e->cols;
			one(e, r0, c0, m, n);
		}
	}
}

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

	for (int i = 0; i < count; i++)
		tile(&g[i]);
	int threads = openblas_get_num_threads();
	double best[2];
	for (int way = 0; way < 2; way++) {
		openblas_set_num_threads(way ? 1 : threads);
		/* Warm up (thread start, page faults), then size a round to about seconds / 30. */
		double t0 = now();
		int passes = 0;
		while (now() - t0 < 0.05 || passes < 3)
			way ? run_tiles(g, count, threads) : run(g, count), passes++;
		double per = (now() - t0) / passes;
		int per_round = (int)(seconds / 30 / per) + 1;

		enum { ROUNDS = 15 };
		double t[ROUNDS];
		for (int r = 0; r < ROUNDS; r++) {
			double s = now();
			for (int i = 0; i < per_round; i++)
				way ? run_tiles(g, count, threads) : run(g, count);
			t[r] = (now() - s) / per_round;
		}
		qsort(t, ROUNDS, sizeof *t, by_value);
		best[way] = t[0];
	}
	int way = best[1] < best[0];
	printf("step_ms=%.4f gflops=%.2f tiles=%d\n", best[way] * 1e3, flops / best[way] * 1e-9, way);
	return 0;
}
