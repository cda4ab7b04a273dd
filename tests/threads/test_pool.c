/* test_pool.c: runtime/pool.c on its own. Every index of a loop runs exactly once, whatever the
 * length, thread count and work; the call returns only when all pieces are done; workers run with
 * the caller's floating-point control word; two threads calling at once both get their loops run
 * (one of them alone); workers told to rest still wake for the next loop; each thread starts on its
 * own share of a loop's pieces. Prints "N passed, M failed". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nmlrt.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CSR_GET() _mm_getcsr()
#define CSR_SET(x) _mm_setcsr(x)
#else
#define CSR_GET() 0u
#define CSR_SET(x) ((void)(x))
#endif

static int passed, failed;

static void check(int ok, const char *what, long a, long b)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL %s (%ld, %ld)\n", what, a, b);
	}
}

typedef struct Loop {
	unsigned char *hits; /* per index: how many times it ran */
	unsigned csr;        /* the caller's control word */
	int bad_csr;         /* a piece ran under another */
} Loop;

static pthread_t main_thread;
static int worked; /* pieces run by a thread other than the main one */

static void body(void *args, void *ctx, int64_t lo, int64_t hi)
{
	Loop *l = args;
	(void)ctx;
	if (!pthread_equal(pthread_self(), main_thread))
		__atomic_add_fetch(&worked, 1, __ATOMIC_RELAXED);
	if ((CSR_GET() & 0x8040) != (l->csr & 0x8040))
		__atomic_store_n(&l->bad_csr, 1, __ATOMIC_RELAXED);
	for (int64_t i = lo; i < hi; i++)
		l->hits[i]++;
}

/* Runs a loop of n and checks that each index ran once; returns 1 if so. */
static int once(Loop *l, int64_t n, int64_t work, int threads)
{
	memset(l->hits, 0, (size_t)n + 1);
	nml_pool_for(body, l, NULL, n, work, threads);
	for (int64_t i = 0; i < n; i++)
		if (l->hits[i] != 1)
			return 0;
	return l->hits[n] == 0;
}

/* Which thread ran each piece, and in what order pieces started. */
typedef struct Shares {
	int64_t n;
	int64_t order[8]; /* piece k (of 8, [k n / 8, (k + 1) n / 8)): when it started */
	int worker[8];    /* and whether a worker ran it */
	long clock;
} Shares;

static void share_body(void *args, void *ctx, int64_t lo, int64_t hi)
{
	Shares *s = args;
	(void)ctx, (void)hi;
	int k = (int)(lo * 8 / s->n);
	s->order[k] = __atomic_fetch_add(&s->clock, 1, __ATOMIC_RELAXED);
	s->worker[k] = !pthread_equal(pthread_self(), main_thread);
	for (volatile int spin = 0; spin < 20000; spin++) /* long enough for the worker to join in */
		;
}

/* With two threads, a loop of 8 pieces is 4 for each: the caller takes its own from the front,
 * the worker its own (pieces 4-7) from the front, and a thread that runs out steals from the back
 * of the other's. So whenever the worker runs anything, the first piece it runs is piece 4: the
 * front of its share is taken by no one else until it is the last piece of that share. Run first,
 * while the pool has one worker. */
static void shares(void)
{
	int joined = 0, own_first = 1;
	for (int r = 0; r < 300; r++) {
		Shares s = {.n = 800};
		nml_pool_for(share_body, &s, NULL, s.n, 1 << 20, 2);
		int first = -1;
		for (int k = 0; k < 8; k++)
			if (s.worker[k] && (first < 0 || s.order[k] < s.order[first]))
				first = k;
		joined += first >= 0;
		own_first &= first < 0 || first == 4;
	}
	check(joined > 0, "the worker ran pieces", joined, 0);
	check(own_first, "the worker's first piece is the first of its own share", 0, 0);
}

static void *caller(void *arg)
{
	Loop l = {.hits = malloc(300001), .csr = CSR_GET()};
	int ok = 1;
	for (int r = 0; r < 300 && ok; r++)
		ok = once(&l, 100000 + r * 611, 1 << 20, 2);
	free(l.hits);
	return (void *)(intptr_t)ok;
}

int main(void)
{
	static const int64_t ns[] = {0, 1, 2, 3, 7, 100, 1000, 4097, 196613};
	static const int threads[] = {1, 2, 3, 4, 8};
	main_thread = pthread_self();
	shares();
	unsigned old = CSR_GET();
	CSR_SET(old | 0x8040); /* flush-to-zero and denormals-are-zero, as kernels run */
	Loop l = {.hits = malloc(200000), .csr = CSR_GET()};
	for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
		for (size_t b = 0; b < sizeof threads / sizeof threads[0]; b++) {
			check(once(&l, ns[a], 1 << 20, threads[b]), "every index once (large work)", (long)ns[a], threads[b]);
			check(once(&l, ns[a], 100, threads[b]), "every index once (small work: inline)", (long)ns[a], threads[b]);
		}
	int ok = 1;
	for (int r = 0; r < 3000 && ok; r++) /* back to back, as a step's loops come */
		ok = once(&l, 70000 + r % 97, 1 << 20, 2);
	check(ok, "3000 loops back to back, each complete on return", 0, 0);
	check(!l.bad_csr, "workers run with the caller's flush-to-zero", 0, 0);
	/* nml_pool_rest before every loop (as before each matrix product on OpenBLAS's threads): the
	 * workers sleep at once, and the next loop still wakes them. */
	worked = 0;
	for (int r = 0; r < 300 && ok; r++) {
		nml_pool_rest();
		ok = once(&l, 70000 + r % 97, 1 << 20, 2);
	}
	check(ok, "300 loops, each after nml_pool_rest, each complete on return", 0, 0);
	check(worked > 0, "and workers woke for them (pieces a worker ran)", worked, 0);
	CSR_SET(old);
	l.csr = CSR_GET();
	check(once(&l, 196613, 1 << 20, 2) && !l.bad_csr, "and without it after the caller clears it", 0, 0);

	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, caller, NULL);
	for (int i = 0; i < 2; i++) {
		void *r;
		pthread_join(t[i], &r);
		check(r != NULL, "two callers at once: every loop complete", i, 0);
	}
	free(l.hits);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
