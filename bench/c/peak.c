/* peak.c: the machine's arithmetic peak, for bench/run.py: the single-precision FLOPs per second
 * that fused multiply-adds on registers reach, with no memory traffic, on one thread and on all
 * the threads at once. No matrix product, however tuned, runs faster, so a training step's FLOPs
 * over this rate is the time no implementation can beat here.
 *
 *   peak SECONDS THREADS
 *
 * Alternates windows of WINDOW seconds on one thread and on THREADS threads for about SECONDS in
 * all, and prints `lanes=… one=… all=… windows=… shared=… rtt=… rtt_max=…`: the floats of each FMA
 * instruction (16: AVX-512, 8: AVX2 with FMA, 4: SSE multiply and add), the best window's GFLOP/s
 * on one thread and on all of them, the windows of all threads, and how many of those ran at no
 * more than 1.25 times the best one-thread rate (the threads then shared one core: another process
 * took the other, or on a virtual machine the host ran its virtual CPUs on one physical core).
 *
 * Then, with two threads or more, the time a cache line takes to go from one thread to another
 * and back (a flag each sets in turn), in ns, the median and the largest of PINGS rounds: what a
 * loop split across cores pays for each line one core writes and the other reads. About 55 ns
 * between two cores of one L3 on the Zen 4 machine of docs/performance.md, and about 315 when its
 * host had placed the two virtual CPUs apart, which slows a two-thread training step that exchanges
 * partial sums and activations between its threads 1.8-fold.
 *
 * The instruction set is detected at run time, never assumed: each kernel is compiled for its own
 * target, and only the widest the CPU has runs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { REPS = 20000 };       /* FMAs per chain between clock reads: about 0.1 ms */
static const double WINDOW = 0.05;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static volatile float sink; /* the chains' sum, so that no chain is optimized away */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define X86 1
#else
#define X86 0
#endif

/* Each kernel runs `chains` independent chains x = x * b + c of `lanes` floats (b just below 1: no
 * overflow, no subnormals), enough to cover the FMA latency on every FMA unit, until the clock
 * passes `until`, and returns the FLOPs it did (2 per lane per step). One definition, compiled for
 * each target: `vec` its vector type, set1 and madd its broadcast and its multiply-add. */
#define FMA_KERNEL(name, target, vec, set1, madd, lanes, chains)                                   \
	target static double name(double until)                                                    \
	{                                                                                           \
		vec x[chains], b = set1(0.9999999f), c = set1(1e-7f);                               \
		for (int i = 0; i < chains; i++)                                                    \
			x[i] = set1((float)i);                                                      \
		double flops = 0;                                                                   \
		do {                                                                                \
			for (int r = 0; r < REPS; r++)                                              \
				_Pragma("GCC unroll 16") for (int i = 0; i < chains; i++) x[i] =    \
					madd(x[i], b, c);                                           \
			flops += 2.0 * lanes * chains * REPS;                                       \
		} while (now() < until);                                                            \
		float v[lanes], s = 0;                                                              \
		for (int i = 0; i < chains; i++) {                                                  \
			memcpy(v, &x[i], sizeof v);                                                 \
			s += v[0] + v[lanes - 1];                                                   \
		}                                                                                   \
		sink = s;                                                                           \
		return flops;                                                                       \
	}

/* Without FMA: a multiply and an add, 4 lanes (SSE, which every x86-64 has; elsewhere what the
 * compiler makes of 16-byte vectors). */
typedef float v4 __attribute__((vector_size(16)));
static v4 set4(float f) { return (v4){f, f, f, f}; }
#define MUL_ADD(x, b, c) ((x) * (b) + (c))
FMA_KERNEL(fma4, , v4, set4, MUL_ADD, 4, 12)

#if X86
FMA_KERNEL(fma16, __attribute__((target("avx512f"))), __m512, _mm512_set1_ps, _mm512_fmadd_ps, 16, 16)
/* 12 chains: with b and c, 14 of AVX2's 16 registers. */
FMA_KERNEL(fma8, __attribute__((target("avx2,fma"))), __m256, _mm256_set1_ps, _mm256_fmadd_ps, 8, 12)
#endif

static double (*kernel)(double);

/* ---- the round trip of a cache line between two threads ---- */

enum { TRIPS = 20000, PINGS = 15 };
static struct {
	_Alignas(64) _Atomic long flag;
} line;

static void *pong(void *arg)
{
	(void)arg;
	for (long i = 1; i <= TRIPS; i++) {
		while (atomic_load_explicit(&line.flag, memory_order_acquire) != 2 * i - 1)
			;
		atomic_store_explicit(&line.flag, 2 * i, memory_order_release);
	}
	return NULL;
}

/* One round of TRIPS round trips: ns per round trip. */
static double round_trip(void)
{
	pthread_t th;
	atomic_store(&line.flag, 0);
	if (pthread_create(&th, NULL, pong, NULL)) {
		fprintf(stderr, "peak: cannot start a thread\n");
		exit(1);
	}
	double t0 = now();
	for (long i = 1; i <= TRIPS; i++) {
		atomic_store_explicit(&line.flag, 2 * i - 1, memory_order_release);
		while (atomic_load_explicit(&line.flag, memory_order_acquire) != 2 * i)
			;
	}
	double t = now() - t0;
	pthread_join(th, NULL);
	return t / TRIPS * 1e9;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

typedef struct {
	pthread_barrier_t *start;
	double until, flops;
} Job;

static void *worker(void *arg)
{
	Job *j = arg;
	pthread_barrier_wait(j->start);
	j->flops = kernel(j->until);
	return NULL;
}

/* One window on n threads: their FLOPs together over its wall time, in GFLOP/s. */
static double window(int n)
{
	pthread_t th[256];
	Job job[256];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, (unsigned)n);
	/* Thread creation counts in the window's time: tens of microseconds in 50 ms. */
	double t0 = now();
	for (int i = 0; i < n; i++)
		job[i].until = t0 + WINDOW, job[i].start = &start;
	for (int i = 1; i < n; i++)
		if (pthread_create(&th[i], NULL, worker, &job[i])) {
			fprintf(stderr, "peak: cannot start a thread\n");
			exit(1);
		}
	worker(&job[0]);
	double flops = job[0].flops;
	for (int i = 1; i < n; i++) {
		pthread_join(th[i], NULL);
		flops += job[i].flops;
	}
	double t1 = now();
	pthread_barrier_destroy(&start);
	return flops / (t1 - t0) * 1e-9;
}

int main(int argc, char **argv)
{
	double seconds = argc == 3 ? atof(argv[1]) : 0;
	int threads = argc == 3 ? atoi(argv[2]) : 0;
	if (seconds <= 0 || threads < 1 || threads > 256) {
		fprintf(stderr, "usage: peak SECONDS THREADS\n");
		return 2;
	}
	int lanes = 4;
	kernel = fma4;
#if X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		kernel = fma16, lanes = 16;
	else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		kernel = fma8, lanes = 8;
#endif

	int rounds = (int)(seconds / (2 * WINDOW)) + 1;
	double *all = malloc(rounds * sizeof *all), one = 0, best = 0;
	for (int r = 0; r < rounds; r++) {
		double o = window(1);
		all[r] = window(threads);
		one = o > one ? o : one;
		best = all[r] > best ? all[r] : best;
	}
	int shared = 0;
	for (int r = 0; r < rounds && threads > 1; r++)
		shared += all[r] <= 1.25 * one;
	printf("lanes=%d one=%.1f all=%.1f windows=%d shared=%d", lanes, one, best, rounds, shared);
	if (threads > 1) {
		double rtt[PINGS];
		for (int i = 0; i < PINGS; i++)
			rtt[i] = round_trip();
		qsort(rtt, PINGS, sizeof *rtt, by_value);
		printf(" rtt=%.0f rtt_max=%.0f", rtt[PINGS / 2], rtt[PINGS - 1]);
	}
	printf("\n");
	free(all);
	return 0;
}
