/* test_codegen.c: every op kind, JIT-compiled in f32 and f64, against a plain C reference.
 *
 * Each case builds a small IR function with the ir.h builder. The reference is a naive interpreter of
 * the IR in double (multi-index loops, no merged axes, triple-loop matmul), run on the same inputs
 * rounded to the kernel's type; a few cases are also checked against hand-written loops. Every
 * buffer handed to a kernel ends at (and, in a second run, starts at) an inaccessible page, so a
 * kernel that touches memory outside its buffers crashes the test. Each case is compiled fused (f32
 * and f64) and one op per loop nest (f64); a case may also say how many loop nests the fusion plan
 * must have and which values must stay in registers. The last line is "N passed, M failed"; the exit
 * status is non-zero on failure. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "autodiff.h"
#include "codegen.h"
#include "fuse.h"
#include "ir.h"
#include "jit.h"
#include "nmlrt.h"

static int passed, failed;
static Jit *jit;
static const SrcLoc L0;
#define N IR_BATCH

static IrShape mkshape(int rank, const int64_t *d) { return ir_shape(rank, d); }
#define S(...) mkshape((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})
#define SCALAR ir_scalar_shape()

/* ---- buffers next to an inaccessible page ---- */

static size_t page;

typedef struct Buf {
	void *p;
	char *map;
	size_t maplen;
} Buf;

/* at_end: the buffer ends at the guard page (catches overruns); else it starts after one. */
static Buf galloc(size_t bytes, int at_end)
{
	size_t span = (bytes + page - 1) / page * page;
	Buf b = {.maplen = span + page};
	b.map = mmap(NULL, b.maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b.map == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	if (at_end) {
		mprotect(b.map + span, page, PROT_NONE);
		b.p = b.map + span - bytes;
	} else {
		mprotect(b.map, page, PROT_NONE);
		b.p = b.map + page;
	}
	return b;
}

static void gfree(Buf *b) { munmap(b->map, b->maplen); }

/* ---- the reference ---- */

typedef struct Blocks {
	double *params, *grads, *state, *x, *y, *hparams, *pred;
	double loss;
	uint64_t seed;
	size_t nparams, nstate, nx, ny, npred;
} Blocks;

static int64_t dim(int64_t d, int64_t n) { return d == IR_BATCH ? n : d; }

static void unflatten(const IrShape *s, int64_t n, int64_t flat, int64_t *idx)
{
	for (int i = s->rank - 1; i >= 0; i--) {
		int64_t d = dim(s->dim[i], n);
		idx[i] = d ? flat % d : 0;
		flat = d ? flat / d : 0;
	}
}

/* The element of operand shape a that broadcasts to index idx of shape o (numpy rules). */
static int64_t bcast(const IrShape *a, const IrShape *o, const int64_t *idx, int64_t n)
{
	int lead = o->rank - a->rank;
	int64_t k = 0;
	for (int j = 0; j < a->rank; j++) {
		int64_t d = dim(a->dim[j], n);
		k = k * d + (d == 1 || j + lead < 0 ? 0 : idx[j + lead]);
	}
	return k;
}

static void ref_store(double *dst, const IrShape *ds, const double *src, const IrShape *ss, int64_t n)
{
	int64_t idx[IR_MAXRANK];
	for (int64_t o = 0; o < ir_shape_numel(*ds, n); o++) {
		unflatten(ds, n, o, idx);
		dst[o] = src[bcast(ss, ds, idx, n)];
	}
}

/* The first element of tensor index of block blk in the reference's buffers. */
static double *ref_block(const IrModule *m, Blocks *b, NmlBlock blk, int index)
{
	switch (blk) {
	case NML_B_PARAMS: return b->params + ir_slot(m, blk, index)->offset;
	case NML_B_GRADS: return b->grads + ir_slot(m, blk, index)->offset;
	case NML_B_STATE: return b->state + ir_slot(m, blk, index)->offset;
	case NML_B_X: return b->x;
	case NML_B_Y: return b->y;
	case NML_B_LOSS: return &b->loss;
	case NML_B_PRED: return b->pred;
	case NML_B_BUFFERS: case NML_B_WORK: case NML_NBLOCKS: break;
	}
	abort();
}

static void ref_eval(const IrModule *m, const IrFunc *f, Blocks *b, int64_t n, double t)
{
	double **v = calloc((size_t)f->n, sizeof *v);
	int64_t idx[IR_MAXRANK];
	for (int i = 0; i < f->n; i++) {
		const IrInst *in = &f->inst[i];
		const IrShape *s = &in->shape;
		int64_t size = ir_shape_numel(*s, n);
		double *r = v[i] = calloc((size_t)(size ? size : 1), sizeof(double));
		const IrShape *sa = in->in[0] >= 0 ? &f->inst[in->in[0]].shape : NULL;
		switch (ir_op_class(in->op)) {
		case OPC_LEAF:
			for (int64_t o = 0; o < size; o++) {
				switch (in->op) {
				case IR_CONST: r[o] = in->attr.num; break;
				case IR_LOAD: r[o] = ref_block(m, b, in->attr.slot.block, in->attr.slot.index)[o]; break;
				case IR_HPARAM: r[o] = b->hparams[in->attr.index]; break;
				case IR_STEP: r[o] = t; break;
				case IR_ROWS: r[o] = (double)n; break;
				default: abort();
				}
			}
			break;
		case OPC_ELEMWISE:
			for (int64_t o = 0; o < size; o++) {
				double x[3] = {0};
				unflatten(s, n, o, idx);
				for (int j = 0; j < ir_op_arity(in->op); j++)
					x[j] = v[in->in[j]][bcast(&f->inst[in->in[j]].shape, s, idx, n)];
				r[o] = ir_op_eval(in->op, x[0], x[1], x[2]);
			}
			break;
		case OPC_REDUCE: {
			int64_t kept = 1;
			for (int a = 0; a < sa->rank; a++)
				if (!(in->attr.axes >> a & 1))
					kept *= dim(sa->dim[a], n);
			for (int64_t o = 0; o < kept; o++)
				r[o] = in->op == IR_MAX ? -INFINITY : 0;
			for (int64_t e = 0; e < ir_shape_numel(*sa, n); e++) {
				unflatten(sa, n, e, idx);
				int64_t o = 0;
				for (int a = 0; a < sa->rank; a++)
					if (!(in->attr.axes >> a & 1))
						o = o * dim(sa->dim[a], n) + idx[a];
				r[o] = ir_op_eval(in->op, r[o], v[in->in[0]][e], 0);
			}
			break;
		}
		case OPC_LIBRARY: { /* triple loops, per matrix of a stack */
			const IrShape *sb = &f->inst[in->in[1]].shape;
			int ta = in->attr.mm.ta, tb = in->attr.mm.tb, rka = sa->rank, rkb = sb->rank;
			int64_t M = dim(s->dim[s->rank - 2], n), Nn = dim(s->dim[s->rank - 1], n);
			int64_t K = dim(sa->dim[rka - (ta ? 2 : 1)], n);
			int64_t ra = dim(sa->dim[rka - 1], n), rb = dim(sb->dim[rkb - 1], n);
			IrShape la = {rka - 2}, lb = {rkb - 2}, lc = {s->rank - 2};
			memcpy(la.dim, sa->dim, sizeof la.dim);
			memcpy(lb.dim, sb->dim, sizeof lb.dim);
			memcpy(lc.dim, s->dim, sizeof lc.dim);
			for (int64_t e = 0; e < ir_shape_numel(lc, n); e++) {
				unflatten(&lc, n, e, idx);
				const double *A = v[in->in[0]] + bcast(&la, &lc, idx, n) * dim(sa->dim[rka - 2], n) * ra;
				const double *B = v[in->in[1]] + bcast(&lb, &lc, idx, n) * dim(sb->dim[rkb - 2], n) * rb;
				for (int64_t p = 0; p < M; p++)
					for (int64_t q = 0; q < Nn; q++) {
						double acc = 0;
						for (int64_t k = 0; k < K; k++)
							acc += (ta ? A[k * ra + p] : A[p * ra + k]) * (tb ? B[q * rb + k] : B[k * rb + q]);
						r[e * M * Nn + p * Nn + q] = acc;
					}
			}
			break;
		}
		case OPC_VIEW:
			memcpy(r, v[in->in[0]], (size_t)size * sizeof(double));
			break;
		case OPC_LOOP:
			if (in->op == IR_ONEHOT) {
				for (int64_t p = 0; p < dim(sa->dim[0], n); p++)
					for (int64_t q = 0; q < in->attr.classes; q++)
						r[p * in->attr.classes + q] = v[in->in[0]][p] == q;
			} else if (in->op == IR_PERMUTE) {
				for (int64_t o = 0; o < size; o++) {
					int64_t from[IR_MAXRANK], off = 0;
					unflatten(s, n, o, idx);
					for (int k = 0; k < s->rank; k++)
						from[in->attr.perm.axis[k]] = idx[k];
					for (int k = 0; k < sa->rank; k++)
						off = off * dim(sa->dim[k], n) + from[k];
					r[o] = v[in->in[0]][off];
				}
			} else if (in->op == IR_RANDOM) {
				for (int64_t o = 0; o < size; o++)
					r[o] = nml_step_uniform(b->seed, t, in->attr.stream, o);
			} else if (in->op == IR_SLICE || in->op == IR_ARGMAX) { /* per output element, from its index */
				int ax = in->op == IR_SLICE ? in->attr.range.axis : __builtin_ctz(in->attr.axes);
				for (int64_t o = 0; o < size; o++) {
					int64_t src[IR_MAXRANK];
					unflatten(s, n, o, idx);
					memcpy(src, idx, sizeof src);
					if (in->op == IR_SLICE) {
						src[ax] += in->attr.range.offset;
						int ok = src[ax] >= 0 && src[ax] < dim(sa->dim[ax], n);
						int64_t off = 0;
						for (int k = 0; k < sa->rank; k++)
							off = off * dim(sa->dim[k], n) + (ok ? src[k] : 0);
						r[o] = ok ? v[in->in[0]][off] : 0;
					} else {
						double best = -INFINITY;
						int64_t at = 0;
						for (int64_t j = 0; j < dim(sa->dim[ax], n); j++) {
							src[ax] = j;
							int64_t off = 0;
							for (int k = 0; k < sa->rank; k++)
								off = off * dim(sa->dim[k], n) + src[k];
							if (j == 0 || v[in->in[0]][off] > best)
								best = v[in->in[0]][off], at = j;
						}
						r[o] = (double)at;
					}
				}
			} else { /* unfold, fold: every window element against the pixel it covers */
				const IrShape *win = in->op == IR_UNFOLD ? s : sa, *img = in->op == IR_UNFOLD ? sa : s;
				const IrAttr *w = &in->attr;
				int64_t B = dim(win->dim[0], n), C = win->dim[1], KH = w->win.k[0], KW = w->win.k[1];
				for (int64_t o = 0; o < size; o++)
					r[o] = 0;
				for (int64_t bb = 0; bb < B; bb++)
					for (int64_t c = 0; c < C; c++)
						for (int64_t kh = 0; kh < KH; kh++)
							for (int64_t kw = 0; kw < KW; kw++)
								for (int64_t oh = 0; oh < win->dim[3]; oh++)
									for (int64_t ow = 0; ow < win->dim[4]; ow++) {
										int64_t h = oh * w->win.s[0] - w->win.p[0] + kh * w->win.d[0];
										int64_t x2 = ow * w->win.s[1] - w->win.p[1] + kw * w->win.d[1];
										int ok = h >= 0 && h < img->dim[2] && x2 >= 0 && x2 < img->dim[3];
										int64_t e = ((((bb * C + c) * KH + kh) * KW + kw) * win->dim[3] + oh) * win->dim[4] + ow;
										int64_t px = ((bb * C + c) * img->dim[2] + h) * img->dim[3] + x2;
										if (in->op == IR_UNFOLD)
											r[e] = ok ? v[in->in[0]][px] : w->win.neg_inf ? -INFINITY : 0;
										else if (ok)
											r[px] += v[in->in[0]][e];
									}
			}
			break;
		case OPC_STORE: {
			const double *src = v[in->in[0]];
			NmlBlock blk = in->attr.slot.block;
			double *dst = ref_block(m, b, blk, in->attr.slot.index);
			if (nml_block_kind(blk) == NML_BK_BATCH)
				memcpy(dst, src, (size_t)ir_shape_numel(*sa, n) * sizeof(double));
			else
				ref_store(dst, &ir_slot(m, blk, in->attr.slot.index)->shape, src, sa, n);
			break;
		}
		}
	}
	for (int i = 0; i < f->n; i++)
		free(v[i]);
	free(v);
}

/* ---- cases ---- */

enum { GEN_UNIFORM, GEN_WIDE, GEN_TINY, GEN_HUGE, GEN_LIST };

typedef struct Case {
	const char *name;
	IrModule m;
	IrFunc *f;
	int gen;             /* how x is filled */
	const double *list;  /* GEN_LIST: x values, repeated */
	int nlist;
	double tol32, tol64; /* |got - want| <= tol (1 + |want|); 0: defaults */
	double rel32, rel64; /* if set, |got - want| <= rel |want| + the smallest normal (math accuracy) */
	double maxrel;       /* the largest relative error seen, reported for math accuracy */
	int64_t max_batch;   /* compiled for; 16 unless set */
	int pieces;          /* CgKernel.pieces: 0 as the machine's OpenBLAS gains; 1, 2: tiles forced */
	int deterministic;   /* CgKernel.deterministic */
	int64_t n;           /* run at this batch only; 0: at several below max_batch */
	/* an independent check of the output, from the inputs (in double) */
	double (*check)(const Blocks *in, const Blocks *out, int64_t n);
	int nests;           /* if set: loop nests in the fused plan */
	int reg[8], nreg;    /* values the fused plan keeps in registers */
	int work[8], nwork;  /* values it writes to work */
	int inl[8], ninl;    /* values it never stores (FV_INLINE) */
	int with[8][2], nwith; /* pairs of values it computes in one unit */
	const char *dump;    /* if set: cg_dump_kernels in f32 */
} Case;

static Case C;

static void begin(const char *name, IrShape xs, IrShape ys)
{
	ir_module_free(&C.m);
	ir_func_free(C.f);
	C = (Case){.name = name, .gen = GEN_UNIFORM, .max_batch = 16};
	ir_set_batch(&C.m, xs, ys, S(N, 1));
	C.f = ir_func_new(intern_cstr(name));
}

static int x_(void) { return ir_load(C.f, NML_B_X, 0, ir_slot(&C.m, NML_B_X, 0)->shape, L0); }
static int y_(void) { return ir_load(C.f, NML_B_Y, 0, ir_slot(&C.m, NML_B_Y, 0)->shape, L0); }

static int param(const char *name, IrShape s)
{
	int slot = ir_add_slot(&C.m, NML_B_PARAMS, intern_cstr(name), s, (IrInit){0}, L0);
	return ir_load(C.f, NML_B_PARAMS, slot, s, L0);
}

static int state(const char *name, IrShape s)
{
	int slot = ir_add_slot(&C.m, NML_B_STATE, intern_cstr(name), s, (IrInit){0}, L0);
	return ir_load(C.f, NML_B_STATE, slot, s, L0);
}

static int hparam(const char *name, double value)
{
	int h = ir_add_hparam(&C.m, intern_cstr(name), value, L0);
	return ir_hparam(C.f, h, L0);
}

static int cst(double v) { return ir_const(C.f, v, L0); }
static int un(IrOp op, int a) { return ir_unary(C.f, op, a, L0); }
static int bin(IrOp op, int a, int b) { return ir_binary(C.f, op, a, b, L0); }
static int red(IrOp op, int a, unsigned mask, int keep) { return ir_reduce(C.f, op, a, mask, keep, L0); }
/* flags: 1 transposes a, 2 transposes b */
static int mm(int a, int b, int flags) { return ir_matmul(C.f, a, b, flags & 1, flags >> 1 & 1, L0); }
static void pred(int v) { ir_store(C.f, NML_B_PRED, 0, v, L0); }
static void loss(int v) { ir_store(C.f, NML_B_LOSS, 0, v, L0); }
/* A gradient slot for v, which has no batch dimension: a parameter of v's shape that is not read. */
static void grad(const char *name, int v)
{
	IrShape s = *ir_shape_of(C.f, v);
	int slot = ir_add_slot(&C.m, NML_B_PARAMS, intern_cstr(name), s, (IrInit){0}, L0);
	ir_store(C.f, NML_B_GRADS, slot, v, L0);
}

/* ---- running a case ---- */

static uint64_t rng_state;

static double uniform(double lo, double hi)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return lo + (hi - lo) * (double)(rng_state >> 11) * 0x1p-53;
}

static double gen_x(int64_t i)
{
	switch (C.gen) {
	case GEN_WIDE: return uniform(-80, 80);
	case GEN_TINY: return (uniform(0, 1) < 0.5 ? -1 : 1) * pow(10, uniform(-9, -2));
	case GEN_HUGE: return uniform(-1e4, 1e4);
	case GEN_LIST: return C.list[i % C.nlist];
	default: return uniform(-3, 3);
	}
}

static double round_to(CgType t, double v) { return t == CG_F32 ? (double)(float)v : v; }

static double *dalloc(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static void fill(double *d, size_t n, CgType t, double lo, double hi)
{
	for (size_t i = 0; i < n; i++)
		d[i] = round_to(t, uniform(lo, hi));
}

static Blocks make_inputs(CgType t, int64_t n)
{
	const IrModule *m = &C.m;
	Blocks b = {
		.nparams = ir_block(m, NML_B_PARAMS)->size,
		.nstate = ir_block(m, NML_B_STATE)->size,
		.nx = (size_t)ir_shape_numel(ir_slot(m, NML_B_X, 0)->shape, n),
		.ny = (size_t)ir_shape_numel(ir_slot(m, NML_B_Y, 0)->shape, n),
	};
	for (int i = 0; i < C.f->n; i++)
		if (C.f->inst[i].op == IR_STORE && C.f->inst[i].attr.slot.block == NML_B_PRED)
			b.npred = (size_t)ir_shape_numel(*ir_shape_of(C.f, C.f->inst[i].in[0]), n);
	b.params = dalloc(b.nparams);
	b.grads = dalloc(b.nparams);
	b.state = dalloc(b.nstate);
	b.x = dalloc(b.nx);
	b.y = dalloc(b.ny);
	b.hparams = dalloc((size_t)m->nhparams);
	b.pred = dalloc(b.npred);
	fill(b.params, b.nparams, t, -1, 1);
	fill(b.grads, b.nparams, t, -1, 1);
	fill(b.state, b.nstate, t, -1, 1);
	fill(b.pred, b.npred, t, -1, 1);
	for (size_t i = 0; i < b.nx; i++)
		b.x[i] = round_to(t, gen_x((int64_t)i));
	for (size_t i = 0; i < b.ny; i++)
		b.y[i] = m->classes ? floor(uniform(0, (double)m->classes)) : round_to(t, uniform(-3, 3));
	for (int i = 0; i < m->nhparams; i++)
		b.hparams[i] = m->hparams[i].value; /* f64 in every kernel */
	b.loss = 42;
	b.seed = 0x1234567890abcdefull;
	return b;
}

static Blocks copy_blocks(const Blocks *s)
{
	Blocks b = *s;
	double **f[] = {&b.params, &b.grads, &b.state, &b.x, &b.y, &b.hparams, &b.pred};
	size_t n[] = {b.nparams, b.nparams, b.nstate, b.nx, b.ny, (size_t)C.m.nhparams, b.npred};
	for (int i = 0; i < 7; i++) {
		double *d = dalloc(n[i]);
		memcpy(d, *f[i], n[i] * sizeof(double));
		*f[i] = d;
	}
	return b;
}

static void free_blocks(Blocks *b)
{
	free(b->params), free(b->grads), free(b->state), free(b->x), free(b->y), free(b->hparams), free(b->pred);
}

static Buf to_buf(const double *d, size_t n, CgType t, int at_end)
{
	size_t es = t == CG_F32 ? 4 : 8;
	Buf b = galloc(n * es, at_end);
	for (size_t i = 0; i < n; i++) {
		if (t == CG_F32)
			((float *)b.p)[i] = (float)d[i];
		else
			((double *)b.p)[i] = d[i];
	}
	return b;
}

static double get(const Buf *b, size_t i, CgType t) { return t == CG_F32 ? ((float *)b->p)[i] : ((double *)b->p)[i]; }

static int close_enough(double got, double want, CgType t)
{
	want = round_to(t, want); /* a float result overflows where the double one does not */
	if (isnan(want) || isnan(got))
		return isnan(want) && isnan(got);
	if (isinf(want) || isinf(got))
		return got == want;
	double rel = t == CG_F32 ? C.rel32 : C.rel64;
	if (rel) {
		double tiny = t == CG_F32 ? 0x1p-126 : 0x1p-1022;
		if (fabs(want) >= tiny && fabs(got - want) / fabs(want) > C.maxrel)
			C.maxrel = fabs(got - want) / fabs(want);
		return fabs(got - want) <= rel * fabs(want) + tiny;
	}
	double tol = t == CG_F32 ? (C.tol32 ? C.tol32 : 2e-5) : (C.tol64 ? C.tol64 : 1e-12);
	return fabs(got - want) <= tol * (1 + fabs(want));
}

/* Compares one block; reports its first mismatch. */
static int compare(const char *what, const Buf *got, const double *want, size_t n, CgType t, const char *ctx)
{
	for (size_t i = 0; i < n; i++) {
		double g = get(got, i, t);
		if (!close_enough(g, want[i], t)) {
			fprintf(stderr, "FAIL %s: %s[%zu] = %.17g, want %.17g\n", ctx, what, i, g, want[i]);
			return 0;
		}
	}
	return 1;
}

/* The run in progress, named when a kernel faults on a guard page. */
static char running[160];

static void on_fault(int sig)
{
	static const char msg[] = "FAIL: memory fault in ";
	write(2, msg, sizeof msg - 1);
	write(2, running, strlen(running));
	write(2, "\n", 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void run_n(NmlKernel k, size_t work, CgType t, int64_t n, int at_end, const char *tname)
{
	char *ctx = running;
	snprintf(ctx, sizeof running, "%s %s n=%lld%s", C.name, tname, (long long)n, at_end ? "" : " (guard before)");
	rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
	Blocks in = make_inputs(t, n), want = copy_blocks(&in);
	double step = 3;
	ref_eval(&C.m, C.f, &want, n, step);

	Buf params = to_buf(in.params, in.nparams, t, at_end), grads = to_buf(in.grads, in.nparams, t, at_end);
	Buf st = to_buf(in.state, in.nstate, t, at_end), x = to_buf(in.x, in.nx, t, at_end);
	Buf y = to_buf(in.y, in.ny, t, at_end), hp = to_buf(in.hparams, (size_t)C.m.nhparams, CG_F64, at_end);
	Buf pr = to_buf(in.pred, in.npred, t, at_end), ls = to_buf(&in.loss, 1, t, at_end);
	Buf wk = galloc(work, at_end);
	memset(wk.p, 0xff, work); /* NaNs: a value read before it is written shows */
	NmlArgs a = {
		.block = {[NML_B_PARAMS] = params.p, [NML_B_GRADS] = grads.p, [NML_B_STATE] = st.p, [NML_B_X] = x.p,
			  [NML_B_Y] = y.p, [NML_B_WORK] = wk.p, [NML_B_LOSS] = ls.p, [NML_B_PRED] = pr.p},
		.hparams = hp.p, .n = n, .t = step, .seed = in.seed,
	};
	k(&a);

	int ok = compare("params", &params, want.params, want.nparams, t, ctx) &&
		 compare("grads", &grads, want.grads, want.nparams, t, ctx) &&
		 compare("state", &st, want.state, want.nstate, t, ctx) &&
		 compare("loss", &ls, &want.loss, 1, t, ctx) && compare("pred", &pr, want.pred, want.npred, t, ctx);
	if (ok && C.check) {
		/* The reference itself, against hand-written loops. */
		double err = C.check(&in, &want, n);
		if (err > 1e-12) {
			fprintf(stderr, "FAIL %s: the reference is off by %g from the hand-written check\n", ctx, err);
			ok = 0;
		}
	}
	ok ? passed++ : failed++;
	Buf *bufs[] = {&params, &grads, &st, &x, &y, &hp, &pr, &ls, &wk};
	for (int i = 0; i < 9; i++)
		gfree(bufs[i]);
	free_blocks(&in);
	free_blocks(&want);
}

void openblas_set_num_threads(int n);
int openblas_get_num_threads(void);

/* Kernel k at n rows on 1, 2 and 3 threads (the pool's and OpenBLAS's): the same bits in every
 * output. For cases whose products are cut into tiles, which the pool runs. */
static void same_bits_on_threads(NmlKernel k, size_t work, CgType t, int64_t n, const char *tname)
{
	int was = openblas_get_num_threads(), ok = 1;
	unsigned char *first[5] = {0};
	size_t len[5] = {0};
	for (int threads = 1; threads <= 3; threads++) {
		openblas_set_num_threads(threads);
		rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
		Blocks in = make_inputs(t, n);
		Buf params = to_buf(in.params, in.nparams, t, 1), grads = to_buf(in.grads, in.nparams, t, 1);
		Buf st = to_buf(in.state, in.nstate, t, 1), x = to_buf(in.x, in.nx, t, 1), y = to_buf(in.y, in.ny, t, 1);
		Buf hp = to_buf(in.hparams, (size_t)C.m.nhparams, CG_F64, 1), pr = to_buf(in.pred, in.npred, t, 1);
		Buf ls = to_buf(&in.loss, 1, t, 1), wk = galloc(work, 1);
		NmlArgs a = {
			.block = {[NML_B_PARAMS] = params.p, [NML_B_GRADS] = grads.p, [NML_B_STATE] = st.p, [NML_B_X] = x.p,
				  [NML_B_Y] = y.p, [NML_B_WORK] = wk.p, [NML_B_LOSS] = ls.p, [NML_B_PRED] = pr.p},
			.hparams = hp.p, .n = n, .t = 3, .seed = in.seed,
		};
		k(&a);
		size_t es = t == CG_F32 ? 4 : 8;
		const Buf *out[5] = {&params, &grads, &st, &pr, &ls};
		size_t count[5] = {in.nparams, in.nparams, in.nstate, in.npred, 1};
		for (int j = 0; j < 5; j++) {
			if (threads == 1) {
				len[j] = count[j] * es;
				first[j] = malloc(len[j] ? len[j] : 1);
				memcpy(first[j], out[j]->p, len[j]);
			} else if (memcmp(first[j], out[j]->p, len[j])) {
				fprintf(stderr, "FAIL %s %s n=%lld: output %d on %d threads differs from 1 thread's\n", C.name,
					tname, (long long)n, j, threads);
				ok = 0;
			}
		}
		Buf *bufs[] = {&params, &grads, &st, &x, &y, &hp, &pr, &ls, &wk};
		for (int i = 0; i < 9; i++)
			gfree(bufs[i]);
		free_blocks(&in);
	}
	for (int j = 0; j < 5; j++)
		free(first[j]);
	openblas_set_num_threads(was);
	ok ? passed++ : failed++;
}

typedef struct Build {
	CgKernel k;
	CgType t;
} Build;

static LLVMModuleRef build(LLVMContextRef ctx, void *user)
{
	Build *b = user;
	return cg_module(ctx, b->k.name, &C.m, &b->k, 1, b->t, C.max_batch);
}

/* The fused plan against what the case expects of it. */
static int check_plan(void)
{
	FusePlan *p = fuse_plan(&C.m, C.f, 8, C.max_batch, 1);
	int ok = 1, nests = 0;
	for (int q = 0; q < p->nunits; q++)
		nests += p->unit[q].kind == FU_NEST;
	if (C.nests && nests != C.nests) {
		fprintf(stderr, "FAIL %s: %d loop nests, want %d\n", C.name, nests, C.nests);
		ok = 0;
	}
	for (int i = 0; i < C.nreg; i++)
		if (p->val[C.reg[i]].kind != FV_REG) {
			fprintf(stderr, "FAIL %s: %%%d is not kept in registers\n", C.name, C.reg[i]);
			ok = 0;
		}
	for (int i = 0; i < C.nwork; i++)
		if (p->val[C.work[i]].kind != FV_WORK) {
			fprintf(stderr, "FAIL %s: %%%d is not written to work\n", C.name, C.work[i]);
			ok = 0;
		}
	for (int i = 0; i < C.ninl; i++)
		if (p->val[C.inl[i]].kind != FV_INLINE) {
			fprintf(stderr, "FAIL %s: %%%d is stored, not computed where it is used\n", C.name, C.inl[i]);
			ok = 0;
		}
	for (int i = 0; i < C.nwith; i++)
		if (p->val[C.with[i][0]].unit != p->val[C.with[i][1]].unit) {
			fprintf(stderr, "FAIL %s: %%%d and %%%d are computed apart\n", C.name, C.with[i][0], C.with[i][1]);
			ok = 0;
		}
	if (!ok) {
		fuse_dump(stderr, &C.m, C.f, p);
		ir_dump(stderr, &C.m, C.f);
	}
	fuse_free(p);
	return ok;
}

static void expect_nests(int n) { C.nests = n; }
static void expect_reg(int v) { C.reg[C.nreg++] = v; }
static void expect_work(int v) { C.work[C.nwork++] = v; }
static void expect_inline(int v) { C.inl[C.ninl++] = v; }
static void expect_with(int a, int b) { C.with[C.nwith][0] = a, C.with[C.nwith++][1] = b; }

/* Compiles the case fused in both types and unfused in f64, and runs each at several batch sizes up
 * to max_batch (16). */
static void run(void)
{
	static int serial;
	static const int64_t ns[] = {5, 16, 1, 0};
	static const struct {
		CgType t;
		int unfused;
		const char *name;
	} variants[] = {{CG_F32, 0, "f32"}, {CG_F64, 0, "f64"}, {CG_F64, 1, "f64 unfused"}};
	if (diag_count()) {
		fprintf(stderr, "FAIL %s: the IR did not build\n", C.name);
		failed++;
		diag_reset();
		return;
	}
	check_plan() ? passed++ : failed++;
	/* the dump of every case, to show it handles each kind of unit */
	char *text = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&text, &len);
	cg_dump_kernels(mem, &C.m, C.f, CG_F32, C.max_batch);
	fclose(mem);
	if (C.dump && strcmp(text, C.dump)) {
		fprintf(stderr, "FAIL %s: the dump is\n%s\nwant\n%s\n", C.name, text, C.dump);
		failed++;
	}
	free(text);
	for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++) {
		CgType t = variants[vi].t;
		const char *tname = variants[vi].name;
		char name[64];
		snprintf(name, sizeof name, "k%d_%s", serial++, t == CG_F32 ? "f32" : "f64");
		Build b = {.k = {.name = name, .fn = C.f, .unfused = variants[vi].unfused, .pieces = C.pieces,
		                 .deterministic = C.deterministic}, .t = t};
		char *err = NULL;
		NmlKernel k = NULL;
		if (jit_add(jit, build, &b, &err) == 0)
			k = (NmlKernel)jit_lookup(jit, name, &err);
		if (!k) {
			fprintf(stderr, "FAIL %s %s: %s\n", C.name, tname, err);
			free(err);
			failed++;
			continue;
		}
		C.maxrel = 0;
		for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
			for (int at_end = 1; at_end >= 0; at_end--)
				if (!C.n || i == 0)
					run_n(k, b.k.work_bytes, t, C.n ? C.n : ns[i], at_end, tname);
		if (C.pieces && !variants[vi].unfused)
			same_bits_on_threads(k, b.k.work_bytes, t, C.max_batch, tname);
		if (C.rel32 && !variants[vi].unfused)
			printf("%s %s: largest relative error %.2g\n", C.name, tname, C.maxrel);
	}
}

/* ---- hand-written checks of the reference ---- */

/* pred = x [N,3] + p [3] */
static double check_bias(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0;
	for (int64_t i = 0; i < n; i++)
		for (int j = 0; j < 3; j++)
			e = fmax(e, fabs(out->pred[i * 3 + j] - (in->x[i * 3 + j] + in->params[j])));
	return e;
}

/* grads = 3 v^2 with v = w + 0.01 * 3 w^2 (the gradient of sum(w^3) at w moved along its own
 * gradient), pred = w for every row (the gradient of sum(x * w) with respect to x) */
static double check_second_grad(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0;
	for (int j = 0; j < 4; j++) {
		double w = in->params[j], v = w + 0.01 * 3 * w * w;
		e = fmax(e, fabs(out->grads[j] - 3 * v * v));
		for (int64_t i = 0; i < n; i++)
			e = fmax(e, fabs(out->pred[i * 4 + j] - w));
	}
	return e;
}

/* pred = x [N,1] * q [1,4] */
static double check_outer(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0;
	for (int64_t i = 0; i < n; i++)
		for (int j = 0; j < 4; j++)
			e = fmax(e, fabs(out->pred[i * 4 + j] - in->x[i] * in->params[j]));
	return e;
}

/* grad of the first slot = x^T [4,N] @ y [N,3] */
static double check_xtg(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0;
	for (int r = 0; r < 4; r++)
		for (int c = 0; c < 3; c++) {
			double s = 0;
			for (int64_t i = 0; i < n; i++)
				s += in->x[i * 4 + r] * in->y[i * 3 + c];
			e = fmax(e, fabs(out->grads[r * 3 + c] - s));
		}
	return e;
}

/* grad = column sums of x [N,5], loss = sum of all */
static double check_colsum(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0, all = 0;
	for (int j = 0; j < 5; j++) {
		double s = 0;
		for (int64_t i = 0; i < n; i++)
			s += in->x[i * 5 + j];
		all += s;
		e = fmax(e, fabs(out->grads[j] - s));
	}
	return fmax(e, fabs(out->loss - all));
}

/* ---- the cases ---- */

static const IrOp unary_ops[] = {IR_NEG, IR_EXP, IR_LOG, IR_LOG1P, IR_EXPM1, IR_SQRT, IR_RSQRT, IR_ABS, IR_SIGN,
				 IR_TANH, IR_SIGMOID, IR_RELU, IR_STOPGRAD};
static const IrOp binary_ops[] = {IR_ADD, IR_SUB, IR_MUL, IR_DIV, IR_POW, IR_MAX2, IR_MIN2,
				  IR_LT, IR_LE, IR_GT, IR_GE, IR_EQ, IR_NE};

static int positive_domain(IrOp op)
{
	return op == IR_LOG || op == IR_LOG1P || op == IR_SQRT || op == IR_RSQRT;
}

static void test_unary(void)
{
	char name[64];
	for (size_t i = 0; i < sizeof unary_ops / sizeof unary_ops[0]; i++) {
		IrOp op = unary_ops[i];
		snprintf(name, sizeof name, "unary %s", ir_op_name(op));
		begin(intern_cstr(name), S(N, 5), S(N));
		int x = x_();
		if (positive_domain(op))
			x = bin(IR_ADD, un(IR_ABS, x), cst(0.25));
		pred(un(op, x));
		run();
	}
	/* large and tiny arguments: no overflow to NaN, no cancellation */
	static const struct {
		IrOp op;
		int gen;
	} wide[] = {
		{IR_EXP, GEN_WIDE}, {IR_EXP, GEN_TINY}, {IR_EXPM1, GEN_WIDE}, {IR_EXPM1, GEN_TINY},
		{IR_LOG1P, GEN_TINY}, {IR_TANH, GEN_WIDE}, {IR_TANH, GEN_TINY},
		{IR_TANH, GEN_HUGE}, {IR_SIGMOID, GEN_WIDE}, {IR_SIGMOID, GEN_HUGE}, {IR_SIGMOID, GEN_TINY},
	};
	for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
		static const char *gname[] = {"", "wide", "tiny", "huge"};
		snprintf(name, sizeof name, "unary %s %s", ir_op_name(wide[i].op), gname[wide[i].gen]);
		begin(intern_cstr(name), S(N, 7), S(N));
		C.gen = wide[i].gen;
		C.rel32 = 4e-6; /* relative: the values span many magnitudes */
		C.rel64 = 1e-13;
		pred(un(wide[i].op, x_()));
		run();
	}
	/* scalar ops are computed once, in registers, then stored */
	begin("unary of scalars", S(N, 2), S(N));
	loss(un(IR_TANH, bin(IR_MUL, hparam("h", 0.3), un(IR_EXP, cst(-1.5)))));
	run();
}

/* Operands of a binary op, in one broadcasting pattern; b made safe for division and pow. */
static void binary_case(IrOp op, const char *pattern, IrShape xs, IrShape ys, int (*mk)(int *, int *))
{
	char name[96];
	snprintf(name, sizeof name, "binary %s %s", ir_op_name(op), pattern);
	begin(intern_cstr(name), xs, ys);
	int a, b;
	mk(&a, &b);
	if (op == IR_DIV)
		b = bin(IR_ADD, un(IR_ABS, b), cst(0.5));
	if (op == IR_POW)
		a = bin(IR_ADD, un(IR_ABS, a), cst(0.25));
	if (op >= IR_LT && op <= IR_NE) { /* ties are frequent among signs */
		a = un(IR_SIGN, a);
		b = un(IR_SIGN, b);
	}
	pred(bin(op, a, b));
	run();
}

static int mk_row(int *a, int *b) { return *a = x_(), *b = param("p", S(3)); }        /* [N,3] . [3] */
static int mk_row_swapped(int *a, int *b) { return *b = x_(), *a = param("p", S(3)); } /* [3] . [N,3] */
static int mk_outer(int *a, int *b) { return *a = x_(), *b = param("q", S(1, 4)); }    /* [N,1] . [1,4] */
static int mk_same(int *a, int *b) { return *a = x_(), *b = y_(); }                    /* [N,3] . [N,3] */
static int mk_const(int *a, int *b) { return *a = x_(), *b = cst(0.75); }
static int mk_hparam(int *a, int *b) { return *b = x_(), *a = hparam("h", -0.5); }
static int mk_col(int *a, int *b) { return *a = x_(), *b = y_(); }                     /* [N,3] . [N,1] */

static void test_binary(void)
{
	for (size_t i = 0; i < sizeof binary_ops / sizeof binary_ops[0]; i++) {
		IrOp op = binary_ops[i];
		binary_case(op, "[N,3].[3]", S(N, 3), S(N), mk_row);
		binary_case(op, "[3].[N,3]", S(N, 3), S(N), mk_row_swapped);
		binary_case(op, "[N,1].[1,4]", S(N, 1), S(N), mk_outer);
		binary_case(op, "[N,3].[N,3]", S(N, 3), S(N, 3), mk_same);
		binary_case(op, "[N,3].[N,1]", S(N, 3), S(N, 1), mk_col);
		binary_case(op, "[N,3].const", S(N, 3), S(N), mk_const);
		binary_case(op, "hparam.[N,3]", S(N, 3), S(N), mk_hparam);
	}
	begin("add [N,3]+[3] by hand", S(N, 3), S(N));
	pred(bin(IR_ADD, x_(), param("p", S(3))));
	C.check = check_bias;
	run();
	begin("mul [N,1]*[1,4] by hand", S(N, 1), S(N));
	pred(bin(IR_MUL, x_(), param("q", S(1, 4))));
	C.check = check_outer;
	run();

	/* pow with exponents that have cheaper exact forms, and with runtime exponents */
	static const double ks[] = {0, 1, 2, 3, 0.5, -1, -2, 1.7};
	for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
		char name[64];
		snprintf(name, sizeof name, "pow x^%g", ks[i]);
		begin(intern_cstr(name), S(N, 5), S(N));
		pred(bin(IR_POW, bin(IR_ADD, un(IR_ABS, x_()), cst(0.25)), cst(ks[i])));
		run();
	}
	begin("pow x^hparam, 0.9^t", S(N, 5), S(N));
	pred(bin(IR_POW, bin(IR_ADD, un(IR_ABS, x_()), cst(0.25)), hparam("k", 2.5)));
	loss(bin(IR_POW, cst(0.9), ir_scalar_leaf(C.f, IR_STEP, L0)));
	run();
}

static void test_where_expand(void)
{
	begin("where [N,3] [N,3] [3]", S(N, 3), S(N));
	int x = x_();
	pred(ir_where(C.f, bin(IR_GT, x, cst(0)), x, param("p", S(3)), L0));
	run();

	begin("where [N,1] [3] const", S(N, 1), S(N));
	pred(ir_where(C.f, bin(IR_GT, x_(), cst(0)), param("p", S(3)), cst(-1), L0));
	run();

	begin("where hparam [N,3] [3]", S(N, 3), S(N));
	pred(ir_where(C.f, hparam("on", 0), x_(), param("p", S(3)), L0));
	run();

	begin("where [3] hparam [N,1]", S(N, 1), S(N));
	pred(ir_where(C.f, bin(IR_GT, param("p", S(3)), cst(0)), hparam("h", 2), x_(), L0));
	run();

	begin("expand [3] to [N,3]", S(N, 2), S(N));
	pred(ir_expand(C.f, param("p", S(3)), S(N, 3), L0));
	run();

	begin("expand [N,1] to [N,4]", S(N, 1), S(N));
	pred(ir_expand(C.f, x_(), S(N, 4), L0));
	run();

	begin("expand const to [N,2]", S(N, 1), S(N));
	pred(ir_expand(C.f, cst(2.5), S(N, 2), L0));
	run();

	/* the batch in the middle of a rank-3 shape */
	begin("expand [3] to [2,N,3]", S(N, 3), S(N));
	int e = bin(IR_ADD, ir_expand(C.f, param("p", S(3)), S(2, N, 3), L0), x_());
	grad("g", red(IR_SUM, e, 2, 0));
	pred(red(IR_MAX, e, 1, 0));
	run();

	begin("stop_gradient of a work value", S(N, 3), S(N));
	int s = un(IR_STOPGRAD, bin(IR_MUL, x_(), cst(2)));
	pred(bin(IR_ADD, s, un(IR_STOPGRAD, s)));
	run();
}

/* pred = 2 x x + y + 50, loss = sum of exp(2 x): the ir_remat case below */
static double check_remat(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0, s = 0;
	for (int64_t i = 0; i < n * 64; i++) {
		double x = in->x[i];
		e = fmax(e, fabs(out->pred[i] - (2 * x * x + in->y[i] + 50)));
		s += exp(2 * x);
	}
	return fmax(e, fabs(out->loss - s) / fmax(1, fabs(s)));
}

/* ir_remat: v = 2 x is read next to its definition (exp) and again 50 instructions later, beside
 * another read of x; that reader gets v computed again from x, just before it. */
static void test_remat(void)
{
	begin("ir_remat: a value read much later is computed again there", S(N, 64), S(N, 64));
	int x = x_(), v = bin(IR_MUL, x, cst(2));
	loss(red(IR_SUM, un(IR_EXP, v), 3, 0));
	int t = y_();
	for (int i = 0; i < 50; i++)
		t = bin(IR_ADD, t, cst(1));
	int far = bin(IR_MUL, v, x);
	pred(bin(IR_ADD, far, t));
	int before = C.f->n;
	ir_remat(C.f);
	/* one instruction more: the copy of v, right before the reader, which now reads it */
	const IrInst *r = &C.f->inst[far + 1];
	const IrInst *c = &C.f->inst[far];
	int ok = C.f->n == before + 1 && r->op == IR_MUL && r->in[0] == far && r->in[1] == x && c->op == IR_MUL
		 && c->in[0] == C.f->inst[v].in[0] && c->in[1] == C.f->inst[v].in[1];
	if (!ok)
		fprintf(stderr, "FAIL ir_remat: %d instructions (was %d); the reader reads %%%d\n", C.f->n, before,
			r->in[0]);
	ok ? passed++ : failed++;
	C.check = check_remat;
	run();
}

/* The batch normalization of test_distribute (channels: axis 1 of [N, 3, 4]), by its formulas:
 * dx = g rstd / m (m dy - sum dy - xhat sum(dy xhat)), dg = sum(dy xhat), db = sum dy; the
 * reference's values. */
static double check_batchnorm(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0;
	for (int c = 0; c < 3; c++) {
		double m = (double)n * 4, mean = 0, var = 0, sdy = 0, sdyx = 0;
		for (int64_t i = 0; i < n; i++)
			for (int k = 0; k < 4; k++)
				mean += in->x[(i * 3 + c) * 4 + k] / m;
		for (int64_t i = 0; i < n; i++)
			for (int k = 0; k < 4; k++)
				var += pow(in->x[(i * 3 + c) * 4 + k] - mean, 2) / m;
		double rstd = 1 / sqrt(var + 1e-5), g = in->params[c];
		for (int64_t i = 0; i < n; i++)
			for (int k = 0; k < 4; k++) {
				size_t at = (size_t)((i * 3 + c) * 4 + k);
				sdy += in->y[at];
				sdyx += in->y[at] * (in->x[at] - mean) * rstd;
			}
		for (int64_t i = 0; i < n; i++)
			for (int k = 0; k < 4; k++) {
				size_t at = (size_t)((i * 3 + c) * 4 + k);
				double xh = (in->x[at] - mean) * rstd, dx = g * rstd / m * (m * in->y[at] - sdy - xh * sdyx);
				e = fmax(e, fabs(out->pred[at] - dx) / (1 + fabs(dx)));
			}
		e = fmax(e, fabs(out->grads[16 + c] - sdyx) / (1 + fabs(sdyx))); /* slots 16 elements apart */
		e = fmax(e, fabs(out->grads[32 + c] - sdy) / (1 + fabs(sdy)));
	}
	return e;
}

static double check_spread(const Blocks *in, const Blocks *out, int64_t n);

/* ir_distribute_sums: a batch normalization's derivative, written as differentiation writes it. The
 * sums that need the variance's derivative (that of the mean of dxc, and dvar's own, which only a
 * channel factor separates from dg's) become sums of values known before any of them: five sums
 * over the space instead of six, none reading another's result but the forward's mean, so the
 * derivative takes two passes. */
static void test_distribute(void)
{
	begin("ir_distribute_sums: a batch normalization's derivative in two passes", S(N, 3, 4), S(N, 3, 4));
	IrShape sp = S(N, 3, 4);
	int x = x_(), dy = y_(), g = param("g", S(1, 3, 1));
	int cnt = bin(IR_MUL, ir_scalar_leaf(C.f, IR_ROWS, L0), cst(4));
	int mean = bin(IR_DIV, red(IR_SUM, x, 5, 1), cnt);
	int xc = bin(IR_SUB, x, mean);
	int var = bin(IR_DIV, red(IR_SUM, bin(IR_MUL, xc, xc), 5, 1), cnt);
	int rstd = un(IR_RSQRT, bin(IR_ADD, var, cst(1e-5)));
	int xhat = bin(IR_MUL, xc, rstd);
	int dg = red(IR_SUM, bin(IR_MUL, dy, xhat), 5, 1), db = red(IR_SUM, dy, 5, 1);
	int dxhat = bin(IR_MUL, dy, g);
	int dvar = bin(IR_MUL, bin(IR_MUL, red(IR_SUM, bin(IR_MUL, dxhat, xc), 5, 1), cst(-0.5)),
		       bin(IR_MUL, rstd, bin(IR_MUL, rstd, rstd)));
	int dxc = bin(IR_ADD, bin(IR_MUL, dxhat, rstd),
		      bin(IR_MUL, ir_expand(C.f, bin(IR_DIV, bin(IR_MUL, dvar, cst(2)), cnt), sp, L0), xc));
	int dmean = un(IR_NEG, red(IR_SUM, dxc, 5, 1));
	pred(bin(IR_ADD, dxc, ir_expand(C.f, bin(IR_DIV, dmean, cnt), sp, L0)));
	grad("dg", dg);
	grad("db", db);
	int before = 0, after = 0, deps = 0;
	for (int i = 0; i < C.f->n; i++)
		before += C.f->inst[i].op == IR_SUM && ir_shape_eq(C.f->inst[C.f->inst[i].in[0]].shape, sp);
	ir_distribute_sums(C.f);
	ir_cse(C.f);
	ir_dce(C.f);
	/* sums over the space of values computed from another sum of the derivative (one that reads
	 * dy): those would need a pass of their own */
	char *fromdy = calloc((size_t)C.f->n, 1), *late = calloc((size_t)C.f->n, 1);
	for (int i = 0; i < C.f->n; i++) {
		const IrInst *in = &C.f->inst[i];
		fromdy[i] = in->op == IR_LOAD && in->attr.slot.block == NML_B_Y;
		for (int k = 0; k < ir_op_arity(in->op); k++)
			fromdy[i] |= fromdy[in->in[k]], late[i] |= late[in->in[k]];
		if (in->op == IR_SUM && ir_shape_eq(C.f->inst[in->in[0]].shape, sp)) {
			after++;
			deps += late[in->in[0]];
			late[i] |= fromdy[in->in[0]];
		}
	}
	free(fromdy);
	free(late);
	int ok = before == 6 && after == 5 && deps == 0;
	if (!ok)
		fprintf(stderr, "FAIL ir_distribute_sums: %d sums over the space before, %d after (want 6, 5), %d of them "
			"after another of the derivative (want 0)\n", before, after, deps);
	ok ? passed++ : failed++;
	C.check = check_batchnorm;
	run();

	/* a term broadcast along a summed axis: split out of the sum, it is counted once per element */
	begin("ir_distribute_sums: a term broadcast along a summed axis", S(N, 3, 4), S(N, 3, 4));
	int x2 = x_(), sx = red(IR_SUM, x2, 5, 1);
	int c2 = un(IR_RSQRT, bin(IR_ADD, bin(IR_MUL, sx, sx), cst(1)));
	int g2 = red(IR_SUM, y_(), 4, 1); /* [N, 3, 1] */
	int tot = red(IR_SUM, bin(IR_ADD, bin(IR_MUL, x2, c2), g2), 5, 1);
	pred(bin(IR_ADD, x2, tot));
	ir_distribute_sums(C.f);
	int split = 0;
	for (int i = 0; i < C.f->n; i++) /* the sum of g over n, then counted */
		split += C.f->inst[i].op == IR_SUM && C.f->inst[i].in[0] == g2;
	if (split != 1)
		fprintf(stderr, "FAIL ir_distribute_sums: the broadcast term was not split out (%d sums of it)\n", split);
	split == 1 ? passed++ : failed++;
	C.check = check_spread;
	run();
}

/* test_distribute's second case: pred = x + sum over n and w of (x c + g), c = 1 / sqrt(1 + s²)
 * with s the sum of x over n and w, g the sum of y over w (broadcast along w: counted 4 times). */
static double check_spread(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0;
	for (int ch = 0; ch < 3; ch++) {
		double sx = 0, total = 0;
		for (int64_t i = 0; i < n; i++)
			for (int w = 0; w < 4; w++)
				sx += in->x[(i * 3 + ch) * 4 + w];
		double c = 1 / sqrt(1 + sx * sx);
		for (int64_t i = 0; i < n; i++) {
			double g = 0;
			for (int w = 0; w < 4; w++)
				g += in->y[(i * 3 + ch) * 4 + w];
			for (int w = 0; w < 4; w++)
				total += in->x[(i * 3 + ch) * 4 + w] * c + g;
		}
		for (int64_t i = 0; i < n; i++)
			for (int w = 0; w < 4; w++) {
				size_t at = (size_t)((i * 3 + ch) * 4 + w);
				e = fmax(e, fabs(out->pred[at] - (in->x[at] + total)) / (1 + fabs(total)));
			}
	}
	return e;
}

/* ir_hoist_updates' case below: params = w - 0.1 g with g the column sums of x; pred = x w with the
 * old w; loss = the sum of x + w with the new w */
static double check_hoist(const Blocks *in, const Blocks *out, int64_t n)
{
	double e = 0, l = 0;
	for (int j = 0; j < 4; j++) {
		double g = 0;
		for (int64_t i = 0; i < n; i++)
			g += in->x[i * 4 + j];
		double w = in->params[j], nw = w - 0.1 * g;
		e = fmax(e, fabs(out->params[j] - nw));
		for (int64_t i = 0; i < n; i++) {
			e = fmax(e, fabs(out->pred[i * 4 + j] - in->x[i * 4 + j] * w));
			l += in->x[i * 4 + j] + nw;
		}
	}
	return fmax(e, fabs(out->loss - l) / fmax(1, fabs(l)));
}

/* ir_hoist_updates: an update moves up to just after its gradient and the last reader of the old
 * value, past work it does not depend on; a reader of the new value stays after it. */
static void test_hoist(void)
{
	begin("ir_hoist_updates: an update as soon as its gradient is final", S(N, 4), S(N, 4));
	int x = x_(), w = param("w", S(4));
	int g = red(IR_SUM, x, 1, 0);
	pred(bin(IR_MUL, x, w)); /* reads the old w */
	int t = y_();
	for (int i = 0; i < 20; i++) /* work the update does not depend on */
		t = bin(IR_ADD, t, cst(1));
	int nw = bin(IR_SUB, w, bin(IR_MUL, cst(0.1), g));
	ir_store(C.f, NML_B_PARAMS, 0, nw, L0);
	int after = C.f->n;
	loss(red(IR_SUM, bin(IR_ADD, x, ir_load(C.f, NML_B_PARAMS, 0, S(4), L0)), 3, 0)); /* the new w */
	grad("t", red(IR_SUM, t, 1, 0));
	ir_hoist_updates(C.f);
	int store = -1, first_add = -1, loss_at = -1;
	for (int i = 0; i < C.f->n; i++) {
		const IrInst *in = &C.f->inst[i];
		if (in->op == IR_STORE && in->attr.slot.block == NML_B_PARAMS)
			store = i;
		if (in->op == IR_ADD && first_add < 0)
			first_add = i;
		if (in->op == IR_STORE && in->attr.slot.block == NML_B_LOSS)
			loss_at = i;
	}
	int ok = store >= 0 && store < first_add && loss_at > store && store < after - 1;
	if (!ok)
		fprintf(stderr, "FAIL ir_hoist_updates: the store of w at %d, the filler from %d, the loss at %d\n", store,
			first_add, loss_at);
	ok ? passed++ : failed++;
	C.check = check_hoist;
	run();
}

static void test_reduce(void)
{
	for (int op = 0; op < 2; op++) {
		IrOp r = op ? IR_MAX : IR_SUM;
		char name[64];

		snprintf(name, sizeof name, "%s [N,5] axis 0", ir_op_name(r));
		begin(intern_cstr(name), S(N, 5), S(N));
		int x = x_();
		grad("g", red(r, x, 1, 0));
		grad("k", red(r, x, 1, 1));          /* [1,5] into a [5] slot */
		pred(red(r, x, 2, 1));               /* [N,1] */
		loss(red(r, x, 3, 0));
		if (r == IR_SUM)
			C.check = check_colsum;
		run();

		snprintf(name, sizeof name, "%s [N,5] last axis", ir_op_name(r));
		begin(intern_cstr(name), S(N, 5), S(N));
		pred(red(r, bin(IR_SUB, x_(), cst(10)), 2, 0)); /* [N], all negative */
		run();

		/* rank 3 from broadcasting: [N,1,5] * [4,1] */
		static const unsigned masks3[] = {1, 2, 4, 3, 5, 6, 7};
		for (size_t i = 0; i < sizeof masks3 / sizeof masks3[0]; i++) {
			unsigned mk = masks3[i];
			snprintf(name, sizeof name, "%s [N,4,5] mask %u", ir_op_name(r), mk);
			begin(intern_cstr(name), S(N, 1, 5), S(N));
			int v = red(r, bin(IR_MUL, x_(), param("p", S(4, 1))), mk, 0);
			if (mk == 7)
				loss(v);
			else if (mk & 1)
				grad("g", v);
			else
				pred(v);
			run();
		}
		/* rank 4: [N,1,3,1] * [2,1,4] */
		static const unsigned masks4[] = {5, 10, 9, 6, 14, 15};
		for (size_t i = 0; i < sizeof masks4 / sizeof masks4[0]; i++) {
			unsigned mk = masks4[i];
			snprintf(name, sizeof name, "%s [N,2,3,4] mask %u", ir_op_name(r), mk);
			begin(intern_cstr(name), S(N, 1, 3, 1), S(N));
			int v = red(r, bin(IR_ADD, x_(), param("p", S(2, 1, 4))), mk, 0);
			if (mk == 15)
				loss(v);
			else if (mk & 1)
				grad("g", v);
			else
				pred(v);
			run();
		}
	}
	/* A pooling window seen as axes of the image, reduced in registers (written out, unrolled_axes),
	 * with the scaled image also stored for a sum over the batch. */
	for (int op = 0; op < 2; op++) {
		IrOp r = op ? IR_MAX : IR_SUM;
		char name[96];
		snprintf(name, sizeof name, "%s over 2x2 windows as axes 3, 5 of [N,2,3,2,4,2]", ir_op_name(r));
		begin(intern_cstr(name), S(N, 2, 3, 2, 4, 2), S(N));
		int t = bin(IR_MUL, x_(), param("p", S(2, 1, 1, 4, 1)));
		pred(red(r, t, 1u << 3 | 1u << 5, 0));
		grad("g", red(IR_SUM, t, 1, 0));
		run();
		snprintf(name, sizeof name, "%s over a 3-element axis between kept ones, [N,3,3,5]", ir_op_name(r));
		begin(intern_cstr(name), S(N, 3, 3, 5), S(N));
		pred(red(r, un(IR_EXP, x_()), 1u << 2, 1));
		run();
	}
	begin("a value per 2x2 window spread over it (short broadcast axes written out)", S(N, 2, 3, 2, 4, 2), S(N));
	int sp = bin(IR_MUL, x_(), bin(IR_ADD, param("p", S(2, 3, 1, 4, 1)), cst(1)));
	pred(bin(IR_SUB, sp, un(IR_EXP, sp)));
	run();
	begin("sum_to", S(N, 1, 5), S(N, 3));
	int g3 = bin(IR_MUL, x_(), param("p", S(4, 1)));
	grad("a", ir_sum_to(C.f, g3, S(4, 1), L0));
	grad("b", ir_sum_to(C.f, g3, S(5), L0));
	grad("c", ir_sum_to(C.f, y_(), S(3), L0));
	grad("d", ir_sum_to(C.f, y_(), S(1, 3), L0));
	loss(ir_sum_to(C.f, y_(), SCALAR, L0));
	run();

	begin("sum of a broadcast constant", S(N, 1), S(N));
	grad("g", red(IR_SUM, ir_expand(C.f, cst(2), S(N, 3), L0), 1, 0));
	loss(red(IR_MAX, ir_expand(C.f, hparam("h", -4), S(N, 3), L0), 3, 0));
	run();

	begin("reduce of a one-element value", S(N, 4), S(N));
	int tot = red(IR_SUM, x_(), 3, 1); /* [1,1] */
	pred(bin(IR_SUB, x_(), red(IR_SUM, tot, 3, 0)));
	run();
}

static void test_matmul(void)
{
	begin("matmul x @ W", S(N, 4), S(N));
	pred(mm(x_(), param("w", S(4, 3)), 0));
	run();

	begin("matmul x^T @ y (batch inner)", S(N, 4), S(N, 3));
	grad("g", mm(x_(), y_(), 1));
	C.check = check_xtg;
	run();

	begin("matmul x @ V^T", S(N, 4), S(N));
	pred(mm(x_(), param("v", S(3, 4)), 2));
	run();

	begin("matmul P^T @ x^T, then its transpose", S(N, 4), S(N));
	int pt = mm(param("p", S(4, 2)), x_(), 3); /* [2,N] */
	grad("g", red(IR_SUM, pt, 2, 0));
	pred(mm(pt, param("i", S(2, 2)), 1));      /* [N,2], lda = n */
	run();

	begin("matmul x @ y^T [N,N]", S(N, 4), S(N, 4));
	pred(red(IR_SUM, mm(x_(), y_(), 2), 1, 0));
	run();

	begin("matmul of a scalar matrix", S(N, 2), S(N));
	pred(mm(x_(), ir_expand(C.f, hparam("h", 0.5), S(2, 3), L0), 0));
	run();
}

static void test_onehot_stores(void)
{
	begin("onehot", S(N, 4), S(N));
	C.m.classes = 4;
	pred(ir_onehot(C.f, y_(), 4, L0));
	run();

	/* softmax cross-entropy, mean over the batch: loss = mean(logsumexp(z) - z[y]) */
	begin("cross-entropy", S(N, 4), S(N));
	C.m.classes = 4;
	int z = mm(x_(), param("w", S(4, 4)), 0);
	int mx = un(IR_STOPGRAD, red(IR_MAX, z, 2, 1));
	int sh = bin(IR_SUB, z, mx);
	int lse = un(IR_LOG, red(IR_SUM, un(IR_EXP, sh), 2, 1));
	int picked = red(IR_SUM, bin(IR_MUL, ir_onehot(C.f, y_(), 4, L0), sh), 2, 1);
	int rows = ir_scalar_leaf(C.f, IR_ROWS, L0);
	loss(bin(IR_DIV, red(IR_SUM, bin(IR_SUB, lse, picked), 3, 0), rows));
	pred(z);
	run();

	/* an optimizer update: reads of a slot come before its store */
	begin("sgd with momentum", S(N, 3), S(N));
	int p = param("p", S(3)), w = param("w", S(2, 3));
	int mom = state("p.m", S(3));
	int g = ir_sum_to(C.f, bin(IR_MUL, x_(), p), S(3), L0);
	int m2 = bin(IR_ADD, bin(IR_MUL, hparam("b", 0.9), mom), g);
	int p2 = bin(IR_SUB, p, bin(IR_MUL, hparam("lr", 0.1), m2));
	ir_store(C.f, NML_B_GRADS, 0, g, L0);
	ir_store(C.f, NML_B_STATE, 0, m2, L0);
	ir_store(C.f, NML_B_PARAMS, 0, p2, L0);
	ir_store(C.f, NML_B_PARAMS, 1, bin(IR_MUL, w, ir_scalar_leaf(C.f, IR_STEP, L0)), L0);
	ir_store(C.f, NML_B_STATE, 0, cst(0), L0); /* a broadcast scalar into a slot */
	run();
}

/* A two-layer MLP's training step written out by hand, as autodiff would. */
static void test_mlp(void)
{
	begin("mlp step", S(N, 6), S(N));
	C.m.classes = 3;
	int x = x_(), w1 = param("w1", S(6, 8)), b1 = param("b1", S(8)), w2 = param("w2", S(8, 3)),
	    b2 = param("b2", S(3));
	int h = bin(IR_ADD, mm(x, w1, 0), b1);
	int a = un(IR_RELU, h);
	int z = bin(IR_ADD, mm(a, w2, 0), b2);
	int e = un(IR_EXP, bin(IR_SUB, z, un(IR_STOPGRAD, red(IR_MAX, z, 2, 1))));
	int sm = bin(IR_DIV, e, red(IR_SUM, e, 2, 1));
	int oh = ir_onehot(C.f, y_(), 3, L0);
	int rows = ir_scalar_leaf(C.f, IR_ROWS, L0);
	loss(bin(IR_DIV, un(IR_NEG, red(IR_SUM, bin(IR_MUL, oh, un(IR_LOG, sm)), 3, 0)), rows));
	int dz = bin(IR_DIV, bin(IR_SUB, sm, oh), rows);
	int dw2 = mm(a, dz, 1), db2 = ir_sum_to(C.f, dz, S(3), L0);
	int da = mm(dz, w2, 2);
	int dh = ir_where(C.f, bin(IR_GT, h, cst(0)), da, cst(0), L0);
	int dw1 = mm(x, dh, 1), db1 = ir_sum_to(C.f, dh, S(8), L0);
	int lr = hparam("lr", 0.05);
	int ps[] = {w1, b1, w2, b2}, gs[] = {dw1, db1, dw2, db2};
	for (int i = 0; i < 4; i++) {
		ir_store(C.f, NML_B_GRADS, i, gs[i], L0);
		ir_store(C.f, NML_B_PARAMS, i, bin(IR_SUB, ps[i], bin(IR_MUL, lr, gs[i])), L0);
	}
	pred(sm);
	run();
}

/* Loop fusion: what shares a nest, what stays in registers, and that the IR's order survives. */
static void test_fusion(void)
{
	/* one nest for the chain, its stores and the reduction it feeds; a, c and d never leave it */
	begin("fuse multi-use intermediates", S(N, 5), S(N));
	int x = x_(), p = param("p", S(5));
	int a = un(IR_EXP, bin(IR_MUL, x, cst(0.5)));
	int b = bin(IR_ADD, a, p);
	int c = bin(IR_MUL, a, b);
	int d = bin(IR_SUB, un(IR_TANH, c), a);
	pred(d);
	loss(red(IR_SUM, c, 3, 0));
	expect_nests(2); /* the chain, and the store of the loss */
	expect_reg(a), expect_reg(b), expect_reg(c), expect_reg(d);
	C.dump = "kernel fuse multi-use intermediates: 2 loop nests, 0 other calls; work 1 regions, 64 bytes"
		 " (* : written to work)\n"
		 "  nest  [N, 5]: mul %3, exp %4, add %5, mul %6, tanh %7, sub %8, store pred, sum %10 axes=0,1*"
		 "  <- x params.p\n"
		 "  nest  []: store loss  <- %10\n"
		 "  work: %10@0\n";
	run();

	/* operands broadcast into the nest: [N,1], [1,4], [4], a scalar, and an [N,1] value from work */
	begin("fuse broadcast operands", S(N, 1), S(N));
	x = x_();
	int u = bin(IR_MUL, x, param("q", S(1, 4)));
	int v = bin(IR_ADD, u, param("p", S(4)));
	int hx = bin(IR_MUL, hparam("h", -0.5), un(IR_ABS, x)); /* [N,1]: a nest of its own */
	int w = ir_where(C.f, bin(IR_GT, v, cst(0)), v, hx, L0);
	int e = bin(IR_ADD, w, ir_expand(C.f, x, S(N, 4), L0));
	pred(bin(IR_MUL, e, un(IR_EXP, hparam("k", 0.25))));
	expect_nests(2);
	expect_reg(u), expect_reg(v), expect_reg(w), expect_work(hx);
	run();

	/* an optimizer update: grads, state and parameters stored from inside the nest. The matmul reads
	 * w between the nest's reads of w and its store, so it sees the old w; the matmul after the
	 * store reads the new one, so nothing that runs after it can join the nest. */
	begin("fuse stores in a nest", S(N, 4), S(N, 3));
	int wp = param("w", S(4, 3)), bp = param("b", S(3)), m = state("w.m", S(4, 3));
	int b1 = hparam("b1", 0.9), lr = hparam("lr", 0.1);
	int g = mm(x_(), y_(), 1);
	int g2 = bin(IR_ADD, g, bin(IR_MUL, hparam("wd", 0.01), wp));
	int m2 = bin(IR_ADD, bin(IR_MUL, b1, m), bin(IR_MUL, bin(IR_SUB, cst(1), b1), g2));
	int upd = bin(IR_DIV, m2, bin(IR_ADD, un(IR_SQRT, un(IR_ABS, m2)), cst(1e-3)));
	int w2 = bin(IR_SUB, wp, bin(IR_MUL, lr, upd));
	int early = mm(x_(), wp, 0); /* the old w */
	ir_store(C.f, NML_B_GRADS, 0, g2, L0);
	ir_store(C.f, NML_B_STATE, 0, m2, L0);
	ir_store(C.f, NML_B_PARAMS, 0, w2, L0);
	int late = mm(x_(), ir_load(C.f, NML_B_PARAMS, 0, S(4, 3), L0), 0); /* the new w */
	ir_store(C.f, NML_B_STATE, 0, bin(IR_MUL, m2, cst(2)), L0);  /* joins the update; late moves after it */
	/* a [1,3] value into [3] slots, and a reduction stored from outside its nest */
	int gb = red(IR_SUM, bin(IR_MUL, y_(), cst(2)), 1, 1);
	ir_store(C.f, NML_B_GRADS, 1, gb, L0);
	ir_store(C.f, NML_B_PARAMS, 1, bin(IR_SUB, bp, bin(IR_MUL, lr, gb)), L0);
	pred(bin(IR_ADD, early, late));
	/* the update with the second store of w.m; y*2 summed with pred; the grad of b; the update of b */
	expect_nests(4);
	expect_reg(g2), expect_reg(upd), expect_reg(w2), expect_reg(m2);
	run();

	/* two stores to one slot in one nest: the later wins */
	begin("fuse two stores to a slot", S(N, 2), S(N));
	int s0 = param("s", S(3, 2));
	int t0 = bin(IR_MUL, s0, cst(3));
	ir_store(C.f, NML_B_PARAMS, 0, t0, L0);
	ir_store(C.f, NML_B_PARAMS, 0, bin(IR_ADD, t0, cst(1)), L0);
	pred(bin(IR_ADD, x_(), red(IR_SUM, ir_load(C.f, NML_B_PARAMS, 0, S(3, 2), L0), 1, 0)));
	/* a read of s after its stores, over the same space: not in their nest, so it sees them (it
	 * joins the nest of pred's sum, which also reads them, and pred's nest moves after it) */
	ir_store(C.f, NML_B_GRADS, 0, bin(IR_MUL, ir_load(C.f, NML_B_PARAMS, 0, S(3, 2), L0), cst(-2)), L0);
	expect_nests(3);
	expect_reg(t0);
	run();

	/* softmax: exp feeds a sum in the same nest, and is read again after it (so it is in work);
	 * the log-sum-exp's exp only feeds its sum (so it is not) */
	begin("fuse softmax", S(N, 6), S(N));
	x = x_();
	int mx = un(IR_STOPGRAD, red(IR_MAX, x, 2, 1));
	int sh = bin(IR_SUB, x, mx);
	int ex = un(IR_EXP, sh);
	int se = red(IR_SUM, ex, 2, 1);
	pred(bin(IR_DIV, ex, se));
	int ex2 = un(IR_EXP, bin(IR_SUB, x, mx));
	int lse = un(IR_LOG, red(IR_SUM, ex2, 2, 1));
	loss(red(IR_SUM, bin(IR_SUB, bin(IR_SUB, x, mx), lse), 3, 0));
	expect_nests(6);
	expect_reg(sh), expect_work(ex), expect_reg(ex2);
	run();

	/* bias, relu and the masked column sums of the backward pass; a and h go on to a matmul and a
	 * later nest, the mask does not */
	begin("fuse column sums", S(N, 4), S(N, 3));
	int h = bin(IR_ADD, mm(x_(), param("w", S(4, 3)), 0), param("b", S(3)));
	int act = un(IR_RELU, h);
	int z = mm(act, param("v", S(3, 2)), 0);
	int mask = bin(IR_GT, h, cst(0));
	int dh = ir_where(C.f, mask, y_(), cst(0), L0);
	grad("db", red(IR_SUM, dh, 1, 0));
	grad("dw", mm(act, dh, 1));
	pred(z);
	/* bias, relu, mask and sums (the product of act moves after them); the stores of two results
	 * and of pred */
	expect_nests(4);
	expect_reg(h), expect_work(act), expect_reg(mask), expect_work(dh);
	run();

	/* a view of a value, read over the value's space: the view is memory, so its reader cannot be
	 * in the nest that writes it (which would read it before it is written) */
	begin("fuse a view of a value read over its space", S(N, 2), S(N));
	int sp = param("s", S(1));
	int tv = bin(IR_MUL, sp, cst(3));
	int sv = ir_reshape(C.f, tv, S(), L0);
	ir_store(C.f, NML_B_PARAMS, 0, bin(IR_ADD, bin(IR_MUL, tv, cst(2)), sv), L0);
	pred(bin(IR_ADD, x_(), sv));
	run();

	/* a nest over a finer view of the space of some of its members: pooling's derivative over
	 * [N, C, H/2, 2, W/3, 3] and what follows it over [N, C, H, W], with a sum over the channels'
	 * pixels, in one pass; the view of the window value is read in the register */
	begin("fuse ops over [N, 2, 4, 6] into a nest over [N, 2, 2, 2, 2, 3]", S(N, 2, 4, 6), S(N));
	int x4 = x_(), x6 = ir_reshape(C.f, x4, S(N, 2, 2, 2, 2, 3), L0);
	int mx6 = red(IR_MAX, x6, (1u << 3) | (1u << 5), 1);
	int e6 = bin(IR_MUL, ir_expand(C.f, mx6, S(N, 2, 2, 2, 2, 3), L0), bin(IR_EQ, x6, mx6));
	int h4 = bin(IR_MUL, ir_reshape(C.f, e6, S(N, 2, 4, 6), L0), bin(IR_ADD, x4, param("b", S(1, 2, 1, 1))));
	int sum4 = red(IR_SUM, h4, 1 | 4 | 8, 1);
	pred(bin(IR_ADD, h4, sum4));
	expect_nests(3); /* the max; the window value, h and its sum; pred */
	expect_reg(e6), expect_work(h4);
	run();

	/* the other way round: a nest over [N, 2, 4, 6] (a normalization and its ReLU) takes a max
	 * over windows of its value's finer view, and runs over that view from then on */
	begin("fuse a max over [N, 2, 2, 2, 2, 3] into the nest computing its input over [N, 2, 4, 6]", S(N, 2, 4, 6), S(N));
	int hh = un(IR_RELU, bin(IR_MUL, x_(), param("g", S(1, 2, 1, 1))));
	int hm = red(IR_MAX, ir_reshape(C.f, hh, S(N, 2, 2, 2, 2, 3), L0), (1u << 3) | (1u << 5), 1);
	pred(hm);
	expect_nests(2); /* the normalization, ReLU and max; the store of the max */
	expect_reg(hh);
	run();

	/* a value read by a reduction in its nest and by a nest over the same space after it */
	begin("fuse value used after its reduction", S(N, 4), S(N));
	int t = bin(IR_MUL, x_(), cst(2));
	int r = red(IR_SUM, t, 2, 1);
	pred(bin(IR_SUB, t, r));
	expect_nests(2);
	expect_work(t);
	run();

	/* reductions over the same axes share a nest: the sums of squares and of cubes; the max of a
	 * value of that nest comes after a nest that reads the first sum (so the first nest cannot
	 * move down to it) and joins the first nest where it stands, with the multiply before it; the
	 * sum over axis 0 has other axes and a nest of its own */
	begin("fuse reductions together", S(N, 4), S(N));
	x = x_();
	int sq = bin(IR_MUL, x, x);
	int s1 = red(IR_SUM, sq, 2, 1);
	int s2 = red(IR_SUM, bin(IR_MUL, sq, x), 2, 1);
	int e1 = un(IR_EXP, bin(IR_MUL, s1, cst(0.1)));
	int m3 = bin(IR_MUL, sq, cst(3));
	int s3 = red(IR_MAX, m3, 2, 1);
	int s4 = red(IR_SUM, bin(IR_MUL, x, cst(2)), 1, 1);
	pred(bin(IR_ADD, bin(IR_ADD, bin(IR_ADD, e1, s2), s3), red(IR_SUM, s4, 2, 1)));
	expect_nests(4); /* sq, s1, s2, m3, s3; s4's; its sum; e1 and pred */
	expect_reg(sq), expect_reg(m3), expect_work(s1), expect_work(s2), expect_work(s3);
	run();

	/* outer reducing loops: [N,3,4] summed over axes 0 and 2 with the producer in the nest, and a
	 * full reduction of a chain */
	begin("fuse rank-3 reduction", S(N, 1, 4), S(N));
	int r3 = bin(IR_MUL, un(IR_TANH, x_()), param("p", S(3, 1)));
	grad("g", red(IR_SUM, un(IR_EXP, r3), 5, 0));
	loss(red(IR_MAX, bin(IR_ADD, r3, cst(1)), 7, 0));
	run();
}

/* exp, log, tanh and sigmoid against libm across their ranges and at special values. */
static void test_math(void)
{
	static double v[4096];
	int nv = 0;
	for (int i = -1000; i <= 1000; i++)
		v[nv++] = i * 0.09;                       /* [-90, 90] */
	for (int i = 0; i < 600; i++)
		v[nv++] = (i & 1 ? -1 : 1) * pow(10, -30 + i * 0.06); /* 1e-30 .. 1e6 */
	static const double special[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 1.0, -1.0, 0x1p-149, 0x1p-1074,
					 0x1p-126, 1e-40, 88.7, -87.3, -103.9, 709.7, -745.0, 700, -700, 1e300};
	for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
		v[nv++] = special[i];
	static const IrOp ops[] = {IR_EXP, IR_LOG, IR_TANH, IR_SIGMOID};
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		char name[64];
		snprintf(name, sizeof name, "accuracy %s", ir_op_name(ops[i]));
		begin(intern_cstr(name), S(N, 16), S(N));
		C.gen = GEN_LIST;
		C.list = v;
		C.nlist = nv;
		/* a few ulps: 4e-7 is 3.4 ulp of float; the double bound is set by tanh's cancellation just
		 * above its series threshold */
		C.rel32 = 4e-7;
		C.rel64 = 1e-14;
		C.max_batch = C.n = (nv + 15) / 16;
		int x = x_();
		pred(un(ops[i], ops[i] == IR_LOG ? un(IR_ABS, x) : x));
		run();
	}
}

static void check_ok(int ok, const char *what)
{
	if (ok)
		passed++;
	else
		failed++, fprintf(stderr, "FAIL %s: %s\n", C.name, what);
}

/* ad_grad with respect to parameters and inputs, and a second gradient at other weights through
 * ir_inline: what SAM-style rules and input gradients are built from. */
static void test_differentiation(void)
{
	begin("second gradient through inline, and an input gradient", S(N, 4), S(N));
	IrFunc *fwd = ir_func_new(intern_cstr("fwd")); /* y = sum(w^3) */
	int slot = ir_add_slot(&C.m, NML_B_PARAMS, intern_cstr("w"), S(4), (IrInit){0}, L0);
	int w0 = ir_load(fwd, NML_B_PARAMS, slot, S(4), L0);
	int y0 = ir_reduce(fwd, IR_SUM, ir_binary(fwd, IR_MUL, ir_binary(fwd, IR_MUL, w0, w0, L0), w0, L0), 1, 0, L0);
	int *map = malloc((size_t)fwd->n * sizeof *map);
	for (int i = 0; i < fwd->n; i++)
		map[i] = -1;
	check_ok(ir_inline(C.f, fwd, map) == 0, "inline");
	int w = map[w0], g1, g2;
	ad_grad(C.f, map[y0], &w, 1, &g1);
	int moved = bin(IR_ADD, w, bin(IR_MUL, cst(0.01), g1));
	for (int i = 0; i < fwd->n; i++)
		map[i] = -1;
	map[w0] = moved; /* the same forward pass at the moved weights */
	check_ok(ir_inline(C.f, fwd, map) == 0, "inline at other weights");
	ad_grad(C.f, map[y0], &moved, 1, &g2);
	ir_store(C.f, NML_B_GRADS, slot, g2, L0);
	int x = x_(), gx; /* d sum(x * w) / dx = w in every row */
	ad_grad(C.f, red(IR_SUM, bin(IR_MUL, x, w), 3, 0), &x, 1, &gx);
	pred(gx);
	C.check = check_second_grad;
	run();
	/* a value the output does not depend on gets zeros; -1 stays -1 */
	int idx[2] = {x, -1}, out[2];
	ad_grad(C.f, cst(1), idx, 2, out);
	check_ok(out[0] >= 0 && C.f->inst[out[0]].op == IR_EXPAND && out[1] == -1, "zero gradient of an independent value");
	free(map);
	ir_func_free(fwd);
}

/* pred = a stream of uniform numbers: their mean is near 1/2 (0.5 +- 0.2 even at 64 numbers) */
static double check_uniform(const Blocks *in, const Blocks *out, int64_t n)
{
	double sum = 0;
	for (int64_t i = 0; i < n * 64; i++)
		sum += out->pred[i];
	return fabs(sum / (double)(n * 64) - 0.5) > 0.2;
}

/* pred = the difference of two streams: they are not the same numbers */
static double check_streams(const Blocks *in, const Blocks *out, int64_t n)
{
	int same = 0;
	for (int64_t i = 0; i < n * 64; i++)
		same += out->pred[i] == 0;
	return same > 2;
}

static void test_permute_random(void)
{
	begin("permute [N,3,4] to [4,N,3]", S(N, 3, 4), S(N));
	pred(ir_permute(C.f, x_(), (int[]){2, 0, 1}, L0));
	run();
	begin("permute of a parameter, then a product with x", S(N, 4), S(N));
	pred(bin(IR_MUL, x_(), red(IR_SUM, ir_permute(C.f, param("w", S(3, 4)), (int[]){1, 0}, L0), 2, 0)));
	run();
	begin("permute a 5-d value", S(N, 2, 3, 1, 2), S(N));
	pred(ir_permute(C.f, bin(IR_MUL, x_(), cst(2)), (int[]){4, 2, 0, 3, 1}, L0));
	run();
	begin("a stack of products, a broadcast over the batch", S(N, 2, 3, 4), S(N));
	pred(mm(param("w", S(2, 5, 3)), x_(), 0)); /* [2,5,3] @ [N,2,3,4] -> [N,2,5,4] */
	run();
	begin("a stack of products, both transposed", S(N, 2, 4, 3), S(N));
	pred(mm(x_(), param("w", S(1, 5, 4)), 3)); /* [N,2,4,3]^T @ [1,5,4]^T -> [N,2,3,5] */
	run();
	begin("unfold 3x3, stride 2, padding 1, dilation 1", S(N, 2, 5, 6), S(N));
	IrAttr w3 = {.win = {{3, 3}, {2, 2}, {1, 1}, {1, 1}}};
	pred(ir_unfold(C.f, x_(), w3, L0));
	run();
	begin("unfold 2x3, stride 1x2, dilation 2x1, padded with -inf", S(N, 1, 6, 7), S(N));
	IrAttr w4 = {.win = {{2, 3}, {1, 2}, {1, 0}, {2, 1}, {0, 0}, 1}};
	pred(ir_unfold(C.f, x_(), w4, L0));
	run();
	begin("fold of unfolded windows: each pixel times the windows covering it", S(N, 2, 5, 6), S(N));
	int u = ir_unfold(C.f, x_(), w3, L0);
	pred(ir_fold(C.f, u, C.f->inst[u].attr, L0));
	run();
	begin("unfold and fold of 2x3 windows that tile the image (no clearing, no sums)", S(N, 2, 4, 6), S(N));
	IrAttr w5 = {.win = {{2, 3}, {2, 3}, {0, 0}, {1, 1}}};
	u = ir_unfold(C.f, x_(), w5, L0);
	pred(ir_fold(C.f, bin(IR_MUL, u, cst(3)), C.f->inst[u].attr, L0));
	run();
	begin("fold of 2x2 windows, stride 2, over 5 rows: the last row is in none", S(N, 1, 5, 4), S(N));
	IrAttr w6 = {.win = {{2, 2}, {2, 2}, {0, 0}, {1, 1}}};
	u = ir_unfold(C.f, x_(), w6, L0);
	pred(ir_fold(C.f, u, C.f->inst[u].attr, L0));
	run();
	begin("slice and zero padding along an axis", S(N, 5, 3), S(N));
	pred(ir_slice(C.f, ir_slice(C.f, x_(), 1, 1, 3, L0), 2, -2, 6, L0)); /* [N,3,3] then [N,3,6] */
	run();
	begin("argmax along an axis", S(N, 4, 3), S(N));
	pred(ir_argmax(C.f, x_(), 1, L0));
	run();
	begin("random numbers", S(N, 2), S(N));
	pred(ir_random(C.f, &C.m, S(N, 64), L0));
	C.check = check_uniform;
	run();
	begin("two random streams", S(N, 2), S(N));
	pred(bin(IR_SUB, ir_random(C.f, &C.m, S(N, 64), L0), ir_random(C.f, &C.m, S(N, 64), L0)));
	C.check = check_streams;
	run();
}

/* A convolution's three products, as conv2d and its derivative write them: y = w @ windows(x), the
 * weight gradient sum over images of dy @ windows(x)^T, the input gradient fold(w^T @ dy). Each
 * product reads its image's windows, unfolded just before it, and its result goes straight to the
 * fold or into partial sums (fuse.c, "products that work one at a time"). */
static void conv_case(const char *name, IrShape xs, IrAttr win, int groups, int out, int64_t max_batch, int pieces,
		      double tol32)
{
	begin(name, xs, S(N));
	C.max_batch = max_batch, C.pieces = pieces;
	/* f32: the weight gradient sums batch * OH * OW terms of up to about 10 that cancel to under 1 */
	C.tol32 = tol32;
	int u = ir_unfold(C.f, x_(), win, L0);
	IrShape us = C.f->inst[u].shape; /* [N, C, KH*KW, OH, OW] */
	int64_t k = us.dim[1] / groups * us.dim[2], p = us.dim[3] * us.dim[4];
	int col = ir_reshape(C.f, u, S(N, groups, k, p), L0);
	int w = ir_reshape(C.f, param("w", S(groups * out, k)), S(groups, out, k), L0);
	int y = mm(w, col, 0);                                         /* [N, G, O, P] */
	int dy = bin(IR_MUL, y, cst(0.5));                             /* stands for the gradient */
	int dwp = mm(dy, col, 2), dw = red(IR_SUM, dwp, 1, 1);         /* [N, G, O, K] -> [1, G, O, K] */
	int dcol = mm(w, dy, 1);                                       /* [N, G, K, P] */
	int dx = ir_fold(C.f, ir_reshape(C.f, dcol, us, L0), C.f->inst[u].attr, L0);
	grad("w", ir_reshape(C.f, dw, S(groups * out, k), L0));
	pred(bin(IR_ADD, dx, x_()));
	loss(red(IR_SUM, bin(IR_MUL, y, y), 15, 0));
	expect_inline(u), expect_inline(dcol), expect_with(dcol, dx);
	if (groups == 1) /* (grouped, the images' sum leaves the groups' axis: no partial sums) */
		expect_with(dwp, dw);
	run();
}

/* Single products cut into tiles (codegen.c, product_tiles), in every arrangement of operands.
 * At batch 32 and din = 784: products of 1.6M multiply-adds, x w in two partial sums along its inner
 * dimension, x^T d in two tiles of rows, the batch as the outer dimension (x w) and as the inner one
 * (x^T d, (w d^T) d), a smaller batch leaving tiles empty; with B transposed and an inner dimension
 * of 64 (d w^T, w d^T) they stay whole. With din = 1568 (3.2M), x w in six partial sums, added in
 * order. Products of 16.8M of a parameter with itself, in tiles along both sides of C, run on the
 * pool's threads, plain and with either operand transposed. */
static void product_tiles_case(const char *name, int64_t din, int pieces, int deterministic)
{
	begin(name, S(N, din), S(N));
	C.max_batch = 32, C.pieces = pieces, C.deterministic = deterministic, C.tol32 = 1e-4;
	int w = param("w", S(din, 64)), x = x_();
	int y = mm(x, w, 0);                             /* [N, 64]: tiles of rows, B plain */
	int d = bin(IR_MUL, y, cst(0.01));
	pred(mm(d, w, 2));                               /* [N, 784] = d w^T: whole */
	int g1 = mm(x, d, 1);                            /* [din, 64] = x^T d: A transposed */
	int g2 = mm(mm(w, d, 2), d, 0);                  /* [din, N] = w d^T (whole), then [din, 64] */
	grad("gw", bin(IR_ADD, g1, g2));
	int v = param("v", S(256, 256));
	grad("gv", bin(IR_ADD, mm(v, v, 0), bin(IR_SUB, mm(v, v, 1), mm(v, v, 2))));
	loss(red(IR_SUM, bin(IR_MUL, y, y), 3, 0));
	run();
}

static void test_product_tiles(void)
{
	product_tiles_case("products in small tiles, each operand plain and transposed", 784, 1, 0);
	product_tiles_case("x w of 3.2M multiply-adds in six partial sums", 1568, 1, 0);
	/* --deterministic with kernels that pack: the products of 16.8M in 8 tiles of columns on the
	 * pool, the smaller ones whole */
	product_tiles_case("products in large tiles under --deterministic", 784, 2, 1);
}

static void test_conv_products(void)
{
	conv_case("convolution 3x3, stride 2, padding 1: products one image at a time", S(N, 3, 5, 6),
		  (IrAttr){.win = {{3, 3}, {2, 2}, {1, 1}, {1, 1}}}, 1, 4, 16, 0, 1e-4);
	conv_case("grouped convolution 2x3, dilation 2x1: two groups of 2 channels per image", S(N, 4, 6, 5),
		  (IrAttr){.win = {{2, 3}, {1, 1}, {1, 0}, {2, 1}}}, 2, 3, 16, 0, 1e-4);
	/* large enough to run on the pool's threads at batch 16 (and not at 5 or 1); 23 images in
	 * partial sums of 2, the last one short */
	conv_case("convolution 3x3, padding 1, 8 -> 16 channels, products split across threads", S(N, 8, 6, 6),
		  (IrAttr){.win = {{3, 3}, {1, 1}, {1, 1}, {1, 1}}}, 1, 16, 23, 0, 1e-4);
	/* each image's products of 3.6M multiply-adds (64 x 196 x 288 forward, 288 x 196 x 64 for the
	 * input gradient) in tiles (codegen.c, stack_tiles), the fold after the last tile; in f32 the
	 * weight gradient's sums over 16 images of 196 positions cancel to 4e-4 of the exact ones,
	 * tiles or not (f64 checks the tiles to 1e-12) */
	conv_case("convolution 3x3, padding 1, 32 -> 64 channels on 14 x 14, products in tiles", S(N, 32, 14, 14),
		  (IrAttr){.win = {{3, 3}, {1, 1}, {1, 1}, {1, 1}}}, 1, 64, 16, 1, 5e-4);

	begin("windows read by a product and by something else: stored once, read by both", S(N, 2, 4, 4), S(N));
	IrAttr win = {.win = {{3, 3}, {1, 1}, {1, 1}, {1, 1}}};
	int u = ir_unfold(C.f, x_(), win, L0);
	int col = ir_reshape(C.f, u, S(N, 1, 18, 16), L0);
	int y = mm(ir_reshape(C.f, param("w", S(3, 18)), S(1, 3, 18), L0), col, 0);
	pred(bin(IR_ADD, red(IR_SUM, y, 15, 0), red(IR_SUM, u, 31, 0)));
	expect_work(u);
	run();
}

int main(void)
{
	page = (size_t)sysconf(_SC_PAGESIZE);
	signal(SIGSEGV, on_fault);
	signal(SIGBUS, on_fault);
	char *err = NULL;
	jit = jit_create(&err);
	if (!jit) {
		fprintf(stderr, "jit_create: %s\n", err);
		return 1;
	}
	test_unary();
	test_binary();
	test_where_expand();
	test_reduce();
	test_remat();
	test_distribute();
	test_hoist();
	test_matmul();
	test_onehot_stores();
	test_mlp();
	test_fusion();
	test_math();
	test_differentiation();
	test_permute_random();
	test_conv_products();
	test_product_tiles();
	ir_module_free(&C.m);
	ir_func_free(C.f);
	jit_destroy(jit);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
