/* pool.c: the threads of generated loops.
 *
 * A kernel hands a loop to nml_pool_for as a function over a range of its outermost index. The
 * range is cut into a fixed number of contiguous pieces (a few per thread), and each thread has a
 * contiguous share of them: the caller the first, worker 1 the second, and so on. A thread takes the
 * pieces of its own share from the front, one at a time, then steals from the back of the others'
 * until none is left; the call returns when all are done. So when every thread keeps up, each one
 * runs the same rows of every loop of a given size, step after step, and the rows a kernel's loops
 * write stay in one core's cache (codegen.c, inner_tiles and affine_split). Pieces write disjoint
 * elements and each element is computed by the same code whatever the cut and whoever runs it, so
 * results depend neither on the number of threads nor on timing.
 *
 * The caller never waits for a worker to start: on a busy machine a worker that is not running
 * simply takes no piece, and the caller runs them all. Workers start on first use and sleep on a
 * condition variable between loops, after a spin of SPIN_US (loops come in bursts within a step),
 * or at once when the kernel is about to run a matrix product on OpenBLAS's threads
 * (nml_pool_rest), whose cores a spinning worker would take. One loop runs at a time; a caller that
 * finds the pool busy (two models trained from two threads) runs its loop alone. Workers copy the
 * caller's floating-point control word (flush-to-zero) for every loop, and stop when the library or
 * program that holds this file is unloaded or exits. */
#include "nmlrt.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static unsigned fp_get(void) { return _mm_getcsr(); }
static void fp_set(unsigned csr) { _mm_setcsr(csr); }
static void relax(void) { _mm_pause(); }
#else
static unsigned fp_get(void) { return 0; }
static void fp_set(unsigned csr) { (void)csr; }
static void relax(void) {}
#endif

/* How long a worker spins for the next loop before it sleeps, in microseconds: a loop that finds
 * its worker asleep waits for the wake-up (tens of microseconds on a virtual machine), and the
 * gaps between a step's loops are mostly shorter than this. With 50 us, the 784-512-256-10 MLP's
 * step at batch 128 woke a sleeping worker 5 times (989 futex calls in 200 steps); with 500, less
 * than once (159 calls), and the step was 1-3% faster. The pause instruction's length varies from CPU to CPU (25
 * ns on Zen 4, 10 to 140 cycles on Intel's), so the spin is measured by the clock. */
enum { SPIN_US = 500 };
enum { SPINS = 2000 };      /* pauses a caller waits for workers before it yields its core */
enum { PIECES = 4 };        /* pieces per thread: a late or slow thread holds up less */
enum { MIN_PIECE = 8192 };  /* least work per piece */

static int64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static struct {
	pthread_mutex_t busy;   /* held by the thread running a loop */
	pthread_mutex_t m;      /* with go: sleeping and waking */
	pthread_cond_t go;
	pthread_t tid[NML_POOL_MAX_THREADS];
	int nworkers, quit;
	/* The loop's number (bits 32-63): workers wait for it to change. */
	_Atomic uint64_t next;
	/* Each thread's share of the loop's pieces (take_piece), one cache line each: a thread takes a
	 * piece only of the loop it was woken for, so the loop's fields below are the ones it reads. */
	struct {
		_Alignas(64) _Atomic uint64_t word;
	} lane[NML_POOL_MAX_THREADS];
	atomic_int lanes;       /* the shares: the caller's and the first lanes - 1 workers' */
	atomic_int done;        /* pieces finished */
	uint32_t loop;
	_Atomic uint32_t rest;  /* the loop after which workers sleep at once (nml_pool_rest) */
	NmlPoolFn fn;
	void *args, *ctx;
	int64_t n;
	int parts;
	unsigned csr;
} P = {.busy = PTHREAD_MUTEX_INITIALIZER, .m = PTHREAD_MUTEX_INITIALIZER, .go = PTHREAD_COND_INITIALIZER};

/* Piece k of lane v's pieces [first, end): the lane word holds the loop's number (bits 32-63), end
 * (16-31) and the next piece to take (0-15). A thread takes from the front of its own lane and steals
 * from the back of the others', so the pieces a thread runs are, unless it is late, the same ones
 * every time a loop of the same size comes round. */
static int take_piece(uint32_t loop, int v, int steal)
{
	_Atomic uint64_t *w = &P.lane[v].word;
	uint64_t cur = atomic_load_explicit(w, memory_order_acquire);
	for (;;) {
		uint64_t next = cur & 0xffff, end = cur >> 16 & 0xffff;
		if ((uint32_t)(cur >> 32) != loop || next >= end)
			return -1;
		uint64_t want = steal ? (cur & ~((uint64_t)0xffff << 16)) | (end - 1) << 16 : cur + 1;
		if (atomic_compare_exchange_weak_explicit(w, &cur, want, memory_order_acq_rel, memory_order_acquire))
			return (int)(steal ? end - 1 : next);
	}
}

/* Runs pieces of loop `loop` until none is left: those of lane `self` first, then the others'. */
static void take_pieces(uint32_t loop, int self)
{
	int csr_set = 0, lanes = atomic_load_explicit(&P.lanes, memory_order_relaxed);
	for (int j = 0; j < lanes; j++) {
		int v = (self + j) % lanes, k;
		while ((k = take_piece(loop, v, v != self)) >= 0) {
			/* the piece is ours, so the loop cannot finish, and its fields stay, until it is done */
			if (self && !csr_set)
				fp_set(P.csr), csr_set = 1;
			int64_t lo = P.n * k / P.parts, hi = P.n * (k + 1) / P.parts;
			if (lo < hi)
				P.fn(P.args, P.ctx, lo, hi);
			atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
		}
	}
}

static void *worker(void *arg)
{
	int self = (int)(intptr_t)arg;
	uint32_t seen = (uint32_t)(atomic_load_explicit(&P.next, memory_order_acquire) >> 32);
	for (;;) {
		uint32_t loop;
		int64_t until = now_us() + SPIN_US;
		for (unsigned spins = 1; (loop = (uint32_t)(atomic_load_explicit(&P.next, memory_order_acquire) >> 32)) == seen &&
		       atomic_load_explicit(&P.rest, memory_order_relaxed) != seen; spins++) {
			relax();
			if (spins % 64 == 0 && now_us() > until)
				break;
		}
		if (loop == seen) {
			pthread_mutex_lock(&P.m);
			while ((loop = (uint32_t)(atomic_load_explicit(&P.next, memory_order_acquire) >> 32)) == seen &&
			       !P.quit)
				pthread_cond_wait(&P.go, &P.m);
			int quit = P.quit;
			pthread_mutex_unlock(&P.m);
			if (quit)
				return NULL;
		}
		seen = loop;
		take_pieces(loop, self);
	}
}

static int grow(int want)
{
	while (P.nworkers < want) {
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 1 << 20);
		int rc = pthread_create(&P.tid[P.nworkers], &a, worker, (void *)(intptr_t)(P.nworkers + 1));
		pthread_attr_destroy(&a);
		if (rc)
			break;
		P.nworkers++;
	}
	return P.nworkers;
}

void nml_pool_for(NmlPoolFn fn, void *args, void *ctx, int64_t n, int64_t work, int threads)
{
	if (threads > NML_POOL_MAX_THREADS)
		threads = NML_POOL_MAX_THREADS;
	if (threads < 2 || n < 2 || work < NML_POOL_MIN_WORK || pthread_mutex_trylock(&P.busy)) {
		if (n > 0)
			fn(args, ctx, 0, n);
		return;
	}
	if (grow(threads - 1) < 1) {
		pthread_mutex_unlock(&P.busy);
		fn(args, ctx, 0, n);
		return;
	}
	int64_t parts = (int64_t)threads * PIECES;
	if (parts > work / MIN_PIECE)
		parts = work / MIN_PIECE;
	if (parts > n)
		parts = n;
	if (parts < 2)
		parts = 2;
	int lanes = P.nworkers + 1 < threads ? P.nworkers + 1 : threads;
	P.fn = fn, P.args = args, P.ctx = ctx, P.n = n, P.parts = (int)parts, P.csr = fp_get();
	atomic_store_explicit(&P.done, 0, memory_order_relaxed);
	uint32_t loop = ++P.loop;
	/* thread v's pieces: [v parts / lanes, (v + 1) parts / lanes); workers beyond the lanes steal */
	atomic_store_explicit(&P.lanes, lanes, memory_order_relaxed);
	for (int v = 0; v < lanes; v++)
		atomic_store_explicit(&P.lane[v].word, (uint64_t)loop << 32 | (uint64_t)(parts * (v + 1) / lanes) << 16 |
				      (uint64_t)(parts * v / lanes), memory_order_relaxed);
	pthread_mutex_lock(&P.m);
	atomic_store_explicit(&P.next, (uint64_t)loop << 32, memory_order_release);
	pthread_cond_broadcast(&P.go);
	pthread_mutex_unlock(&P.m);

	take_pieces(loop, 0);
	/* what is left is being run by workers: wait for it */
	for (int spins = 0; atomic_load_explicit(&P.done, memory_order_acquire) < P.parts; spins++)
		if (spins < SPINS)
			relax();
		else
			sched_yield(); /* a worker in the middle of a piece lost its core */
	pthread_mutex_unlock(&P.busy);
}

void nml_pool_rest(void)
{
	/* the last loop's number: workers spinning after it for the next one sleep instead */
	atomic_store_explicit(&P.rest, (uint32_t)(atomic_load_explicit(&P.next, memory_order_relaxed) >> 32),
			      memory_order_relaxed);
}

/* ---- scratch: one growing buffer per thread, freed when the thread exits ---- */

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static _Thread_local struct Scratch {
	void *p;
	size_t n;
} scratch;

static void scratch_free(void *s)
{
	struct Scratch *sc = s;
	free(sc->p);
	sc->p = NULL;
	sc->n = 0;
}

static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

void *nml_scratch(int64_t bytes)
{
	size_t want = bytes > 0 ? ((size_t)bytes + 63) / 64 * 64 : 64;
	if (scratch.n >= want)
		return scratch.p;
	pthread_once(&scratch_once, scratch_init);
	void *p = aligned_alloc(64, want);
	if (!p) {
		fprintf(stderr, "nml: out of memory for a loop's scratch buffer of %zu bytes\n", want);
		abort();
	}
	free(scratch.p);
	scratch.p = p;
	scratch.n = want;
	pthread_setspecific(scratch_key, &scratch); /* non-NULL: the destructor runs at thread exit */
	return p;
}

/* Workers run code of the library this file is linked into: stop them before it is unmapped. */
__attribute__((destructor)) static void pool_stop(void)
{
	pthread_mutex_lock(&P.busy);
	pthread_mutex_lock(&P.m);
	P.quit = 1;
	pthread_cond_broadcast(&P.go);
	pthread_mutex_unlock(&P.m);
	for (int i = 0; i < P.nworkers; i++)
		pthread_join(P.tid[i], NULL);
	P.nworkers = 0;
	pthread_mutex_unlock(&P.busy);
}
