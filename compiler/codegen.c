/* codegen.c: IR functions to LLVM IR kernels, one loop nest (or one BLAS call) per unit of the fusion
 * plan (fuse.h).
 *
 * A kernel is `void name(NmlArgs *a)`. Every IR value is one of:
 *   a scalar in a register (constants, hyperparameters, t, n, and elementwise ops of those only),
 *   a view of a slot (parameters, state, x, y),
 *   a register inside the loop nest that computes it, when nothing outside the nest reads it, or
 *   a region of `work`, planned for max_batch rows.
 * A nest runs over one iteration space; each of its memory operands is right-aligned to it (numpy
 * broadcasting), and axes are merged wherever no operand broadcasts along them, so a plain
 * elementwise nest is one flat loop and a bias add two. The body computes the nest's ops in program
 * order at each index. Every nest tells LLVM (scoped noalias metadata) which of its accesses can
 * overlap (only those of the same slot or region), which is what lets the loop vectorizer run
 * without runtime overlap checks. */
#include "codegen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "fuse.h"
#include "nmlrt.h"

/* The fields of NmlArgs, in ABI order: a pointer per block (indexed by NmlBlock), then these. */
enum { ARG_HPARAMS = NML_NBLOCKS, ARG_N, ARG_T, ARG_SEED, ARG_COUNT };
_Static_assert(offsetof(NmlArgs, hparams) == ARG_HPARAMS * sizeof(void *), "NmlArgs: the block pointers first");
_Static_assert(offsetof(NmlArgs, n) == ARG_N * sizeof(void *), "NmlArgs: then hparams, n");
_Static_assert(offsetof(NmlArgs, t) == offsetof(NmlArgs, n) + sizeof(int64_t), "NmlArgs: then t");
_Static_assert(offsetof(NmlArgs, seed) == offsetof(NmlArgs, t) + sizeof(double), "NmlArgs: then seed");

enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 }; /* cblas.h */

typedef struct Val {
	LLVMValueRef imm; /* FV_SCALAR */
	LLVMValueRef ptr; /* the first element, for a value in memory */
	LLVMValueRef reg; /* FV_REG and FV_WORK, inside the nest computing it: the element at this index */
} Val;

typedef struct Cg {
	LLVMContextRef ctx;
	LLVMModuleRef mod;
	LLVMBuilderRef b;
	LLVMTypeRef T, I, i64, i32, i8, ptr, f64; /* I: the integer type as wide as T */
	CgType type;
	const IrModule *m;
	const IrFunc *f;
	const FusePlan *plan;
	const char *kname;
	LLVMValueRef fn;
	LLVMValueRef arg[ARG_COUNT];
	Val *val;
	unsigned md_scope, md_noalias;
	LLVMMetadataRef domain;
	int nscopes;
	LLVMTypeRef alt_T, alt_I; /* f64 and i64 while emitting kernel code: see swap_scalar_types */
	CgType alt_type;
	int64_t max_batch;
	int deterministic;    /* the kernel's: the same bits on any number of threads */
	int tiles;            /* single products in tiles (product_tiles): 1 small ones for OpenBLAS's
	                       * direct kernels, 0 for kernels that pack (products below
	                       * BLAS_ONE_THREAD, and larger ones under --deterministic), -1 none */
	LLVMValueRef args;    /* the kernel's NmlArgs pointer */
	LLVMValueRef threads; /* i32: the thread setting, read at the kernel's entry */
	/* Emitting a piece of a unit split across threads (emit_split): the outermost loop of a nest,
	 * or a stack of matrix products, runs over [lo, hi) of the index split. */
	struct {
		int on;
		int rows;          /* the reduction's output is split too (its first axis is kept) */
		LLVMValueRef lo, hi;
	} split;
	LLVMValueRef extra;   /* in an outlined unit: the pointer its kernel passed (partial results) */
	int64_t chunk_rows;   /* emit_chunks: rows of the first axis per chunk */
	int64_t chunk_block;  /* emit_chunks: elements of the partials of one reduction */
} Cg;

/* ---- small builders ---- */

static LLVMValueRef cf(Cg *g, double v) { return LLVMConstReal(g->T, v); }
static LLVMValueRef ci(Cg *g, int64_t v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }
static LLVMValueRef cI(Cg *g, int64_t v) { return LLVMConstInt(g->I, (unsigned long long)v, 1); }

/* Scalars (constants, hyperparameters, t, n and ops of those only) are computed in f64 whatever
 * the kernel's type, as a framework computing them on the host would: 1 - b2 with b2 = 0.999 is
 * off by 1.3e-5 in f32. They are rounded to the kernel's type where a loop reads them. */
static void swap_scalar_types(Cg *g)
{
	LLVMTypeRef t = g->T, i = g->I;
	CgType k = g->type;
	g->T = g->alt_T;
	g->I = g->alt_I;
	g->type = g->alt_type;
	g->alt_T = t;
	g->alt_I = i;
	g->alt_type = k;
}

static int is_const_int(LLVMValueRef v, int64_t k)
{
	return LLVMIsAConstantInt(v) && LLVMConstIntGetSExtValue(v) == k;
}

static LLVMValueRef imul(Cg *g, LLVMValueRef a, LLVMValueRef b)
{
	if (is_const_int(b, 1))
		return a;
	if (is_const_int(a, 1))
		return b;
	return LLVMBuildNSWMul(g->b, a, b, "");
}

static LLVMValueRef iadd(Cg *g, LLVMValueRef a, LLVMValueRef b)
{
	if (is_const_int(b, 0))
		return a;
	if (is_const_int(a, 0))
		return b;
	return LLVMBuildNSWAdd(g->b, a, b, "");
}

static LLVMValueRef dimv(Cg *g, int64_t d) { return d == IR_BATCH ? g->arg[ARG_N] : ci(g, d); }

static LLVMValueRef numelv(Cg *g, const IrShape *s)
{
	LLVMValueRef k = ci(g, 1);
	for (int i = 0; i < s->rank; i++)
		k = imul(g, k, dimv(g, s->dim[i]));
	return k;
}

static int static_one(const IrShape *s)
{
	for (int i = 0; i < s->rank; i++)
		if (s->dim[i] != 1)
			return 0;
	return 1;
}

static LLVMValueRef elem(Cg *g, LLVMValueRef base, LLVMValueRef idx)
{
	return LLVMBuildInBoundsGEP2(g->b, g->T, base, &idx, 1, "");
}

static LLVMValueRef intrinsic(Cg *g, const char *name, LLVMValueRef *x, int nx)
{
	unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
	LLVMTypeRef ty = LLVMTypeOf(x[0]);
	LLVMValueRef fn = LLVMGetIntrinsicDeclaration(g->mod, id, &ty, 1);
	return LLVMBuildCall2(g->b, LLVMIntrinsicGetType(g->ctx, id, &ty, 1), fn, x, nx, "");
}

static LLVMValueRef call1(Cg *g, const char *name, LLVMValueRef a) { return intrinsic(g, name, &a, 1); }

static LLVMValueRef call2(Cg *g, const char *name, LLVMValueRef a, LLVMValueRef b)
{
	LLVMValueRef x[2] = {a, b};
	return intrinsic(g, name, x, 2);
}

static LLVMValueRef fcmp(Cg *g, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
	return LLVMBuildFCmp(g->b, p, a, b, "");
}

static LLVMValueRef sel(Cg *g, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b)
{
	return LLVMBuildSelect(g->b, c, a, b, "");
}

static LLVMValueRef imin(Cg *g, LLVMValueRef a, LLVMValueRef b)
{
	return sel(g, LLVMBuildICmp(g->b, LLVMIntSLT, a, b, ""), a, b);
}

/* a*b + c, fused where the target has FMA (halves the cost of a polynomial) */
static LLVMValueRef fmuladd(Cg *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c)
{
	LLVMValueRef x[3] = {a, b, c};
	return intrinsic(g, "llvm.fmuladd", x, 3);
}

/* c[0] + x*(c[1] + x*(c[2] + ...)) */
static LLVMValueRef horner(Cg *g, LLVMValueRef x, const double *c, int n)
{
	LLVMValueRef p = cf(g, c[n - 1]);
	for (int i = n - 2; i >= 0; i--)
		p = fmuladd(g, x, p, cf(g, c[i]));
	return p;
}

/* ---- memory: alias scopes ----
 *
 * Each nest has one scope per slot or region it writes. A store, and a load of what the nest writes,
 * is in its own scope and not in the others; every other load is in none of them. */

typedef struct Access {
	LLVMValueRef scope, noalias; /* metadata lists, or NULL */
} Access;

static LLVMMetadataRef new_scope(Cg *g)
{
	char name[256];
	int len = snprintf(name, sizeof name, "%s.%d", g->kname, g->nscopes++);
	LLVMMetadataRef ops[2] = {LLVMMDStringInContext2(g->ctx, name, (size_t)len), g->domain};
	return LLVMMDNodeInContext2(g->ctx, ops, 2);
}

static LLVMValueRef scope_list(Cg *g, LLVMMetadataRef *s, int n)
{
	return n ? LLVMMetadataAsValue(g->ctx, LLVMMDNodeInContext2(g->ctx, s, (size_t)n)) : NULL;
}

static void tag(Cg *g, LLVMValueRef inst, Access a)
{
	if (a.scope)
		LLVMSetMetadata(inst, g->md_scope, a.scope);
	if (a.noalias)
		LLVMSetMetadata(inst, g->md_noalias, a.noalias);
}

static LLVMValueRef load(Cg *g, LLVMValueRef p, Access a)
{
	LLVMValueRef v = LLVMBuildLoad2(g->b, g->T, p, "");
	tag(g, v, a);
	return v;
}

static void store(Cg *g, LLVMValueRef v, LLVMValueRef p, Access a) { tag(g, LLVMBuildStore(g->b, v, p), a); }

/* ---- loops ---- */

/* for (iv = 0; iv < count; iv++), rotated so that the vectorizer sees a canonical loop; optionally
 * carrying one accumulator. */
typedef struct Loop {
	LLVMBasicBlockRef pre, body, exit;
	LLVMValueRef iv, count;
	LLVMValueRef acc[FUSE_MAX_RED], init[FUSE_MAX_RED];
	int nacc;
} Loop;

static LLVMValueRef loop_begin(Cg *g, Loop *l, LLVMValueRef count)
{
	*l = (Loop){.count = count, .pre = LLVMGetInsertBlock(g->b)};
	l->body = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "loop");
	l->exit = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "done");
	LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSGT, count, ci(g, 0), ""), l->body, l->exit);
	LLVMPositionBuilderAtEnd(g->b, l->body);
	l->iv = LLVMBuildPhi(g->b, g->i64, "i");
	return l->iv;
}

/* An accumulator starting at init (one of up to FUSE_MAX_RED); call right after loop_begin. */
static LLVMValueRef loop_acc(Cg *g, Loop *l, LLVMValueRef init)
{
	l->init[l->nacc] = init;
	l->acc[l->nacc] = LLVMBuildPhi(g->b, g->T, "acc");
	return l->acc[l->nacc++];
}

/* Closes the loop; out[k] is accumulator k's final value (init if the loop did not run), next[k]
 * its value after an iteration. */
static void loop_end_accs(Cg *g, Loop *l, LLVMValueRef *next_acc, LLVMValueRef *out)
{
	LLVMValueRef next = LLVMBuildNSWAdd(g->b, l->iv, ci(g, 1), "");
	LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
	LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, next, l->count, ""), l->body, l->exit);
	LLVMValueRef zero = ci(g, 0);
	LLVMAddIncoming(l->iv, (LLVMValueRef[]){zero, next}, (LLVMBasicBlockRef[]){l->pre, latch}, 2);
	LLVMPositionBuilderAtEnd(g->b, l->exit);
	for (int k = 0; k < l->nacc; k++) {
		LLVMAddIncoming(l->acc[k], (LLVMValueRef[]){l->init[k], next_acc[k]}, (LLVMBasicBlockRef[]){l->pre, latch}, 2);
		out[k] = LLVMBuildPhi(g->b, g->T, "sum");
		LLVMAddIncoming(out[k], (LLVMValueRef[]){l->init[k], next_acc[k]}, (LLVMBasicBlockRef[]){l->pre, latch}, 2);
	}
}

/* Closes the loop; with one accumulator, returns its final value. */
static LLVMValueRef loop_end(Cg *g, Loop *l, LLVMValueRef acc_next)
{
	LLVMValueRef out = NULL;
	loop_end_accs(g, l, &acc_next, &out);
	return out;
}

/* ---- loop nests over a broadcast iteration space ----
 *
 * Each operand's dims are aligned to the iteration space: od[i] is it[i] (the operand advances along
 * axis i) or 1 (it is broadcast). Axes of size 1 are dropped and neighbouring axes along which the
 * same operands advance are merged, so the loops left are the ones broadcasting forces. */

/* Storage, for alias metadata: a region by the value that owns it, a slot by ir_slot_key. */

typedef struct NestOp {
	int val;                /* the IR value read through it, or -1 */
	int key;                /* its storage */
	int write;
	LLVMValueRef base;      /* first element, or NULL for a scalar */
	LLVMValueRef scalar;
	int64_t od[IR_MAXRANK];
	unsigned adv;           /* bit d: advances with loop d */
	LLVMValueRef stride[IR_MAXRANK];
	LLVMValueRef axis_stride[IR_MAXRANK]; /* per axis of the space: 0 where it is broadcast */
	LLVMValueRef off[IR_MAXRANK + 1]; /* element index inside d loops */
	Access md;
	LLVMValueRef cur;       /* loaded at the current index */
} NestOp;

typedef struct Nest {
	int rank;
	int64_t it[IR_MAXRANK];
	NestOp *op;
	int nop, cap;
	unsigned unrolled;            /* axes written out in the body instead of looped over (emit_nest) */
	/* set by nest_plan */
	int depth, open;
	LLVMValueRef dim[IR_MAXRANK]; /* trip counts, outermost first */
	LLVMValueRef rest0;           /* loop 0's trip count over the size of its first axis */
	Loop loop[IR_MAXRANK];
} Nest;

static void nest_init(Nest *ns, const IrShape *s)
{
	*ns = (Nest){.rank = s->rank};
	for (int i = 0; i < s->rank; i++)
		ns->it[i] = s->dim[i];
}

static void nest_free(Nest *ns) { free(ns->op); }

/* An operand at base (or the scalar imm) of shape s, right-aligned to the iteration space. A read
 * operand of one element is loaded once, before the loops. Returns its index. */
static int nest_add(Cg *g, Nest *ns, int val, int key, int write, LLVMValueRef base, LLVMValueRef imm,
		    const IrShape *s)
{
	if (ns->nop == ns->cap) {
		ns->cap = ns->cap ? 2 * ns->cap : 8;
		ns->op = realloc(ns->op, (size_t)ns->cap * sizeof *ns->op);
		if (!ns->op)
			die("out of memory");
	}
	NestOp *o = &ns->op[ns->nop];
	*o = (NestOp){.val = val, .key = key, .write = write};
	int lead = s->rank - ns->rank;
	for (int j = 0; j < lead; j++)
		if (s->dim[j] != 1)
			die("codegen: %s: operand of rank %d in a loop nest of rank %d", g->kname, s->rank, ns->rank);
	for (int i = 0; i < ns->rank; i++) {
		int64_t d = i + lead >= 0 ? s->dim[i + lead] : 1;
		if (d != 1 && d != ns->it[i])
			die("codegen: %s: operand does not broadcast to the loop nest", g->kname);
		o->od[i] = d;
	}
	if (imm)
		o->scalar = imm;
	else if (!write && static_one(s))
		o->scalar = LLVMBuildLoad2(g->b, g->T, base, "");
	else
		o->base = base;
	return ns->nop++;
}

/* The loops, the operands' strides, and the alias metadata. */
static void nest_plan(Cg *g, Nest *ns)
{
	ns->depth = ns->open = 0;
	ns->rest0 = ci(g, 1);
	int last[IR_MAXRANK]; /* loop d's innermost axis */
	int skipped = 0;      /* an unrolled axis since the last loop's: no merging across it */
	for (int k = 0; k < ns->nop; k++) { /* each operand's stride along each axis, in its own layout */
		NestOp *o = &ns->op[k];
		LLVMValueRef st = ci(g, 1);
		for (int i = ns->rank - 1; i >= 0; i--) {
			o->axis_stride[i] = o->od[i] != 1 ? st : ci(g, 0);
			if (o->od[i] != 1)
				st = imul(g, st, dimv(g, o->od[i]));
		}
	}
	for (int i = 0; i < ns->rank; i++) {
		if (ns->it[i] == 1)
			continue;
		if (ns->unrolled >> i & 1) {
			skipped = 1;
			continue;
		}
		int same = ns->depth > 0 && !skipped;
		skipped = 0;
		for (int k = 0; k < ns->nop && same; k++) {
			int adv = ns->op[k].base && ns->op[k].od[i] != 1;
			same = adv == (int)(ns->op[k].adv >> (ns->depth - 1) & 1);
		}
		LLVMValueRef d = dimv(g, ns->it[i]);
		if (same) {
			ns->dim[ns->depth - 1] = imul(g, ns->dim[ns->depth - 1], d);
			last[ns->depth - 1] = i;
			if (ns->depth == 1)
				ns->rest0 = imul(g, ns->rest0, d);
			continue;
		}
		for (int k = 0; k < ns->nop; k++)
			if (ns->op[k].base && ns->op[k].od[i] != 1)
				ns->op[k].adv |= 1u << ns->depth;
		last[ns->depth] = i;
		ns->dim[ns->depth++] = d;
	}
	for (int k = 0; k < ns->nop; k++) { /* merged axes are contiguous: a loop steps by its innermost axis */
		NestOp *o = &ns->op[k];
		for (int d = 0; d < ns->depth; d++)
			o->stride[d] = o->adv & (1u << d) ? o->axis_stride[last[d]] : ci(g, 0);
		o->off[0] = ci(g, 0);
	}

	int nw = 0, *keys = malloc((size_t)(ns->nop + 1) * sizeof *keys);
	LLVMMetadataRef *scopes = malloc((size_t)(ns->nop + 1) * sizeof *scopes);
	LLVMMetadataRef *others = malloc((size_t)(ns->nop + 1) * sizeof *others);
	if (!keys || !scopes || !others)
		die("out of memory");
	for (int k = 0; k < ns->nop; k++) {
		int w = 0;
		while (w < nw && keys[w] != ns->op[k].key)
			w++;
		if (ns->op[k].write && w == nw) {
			keys[nw] = ns->op[k].key;
			scopes[nw++] = new_scope(g);
		}
	}
	LLVMValueRef all = scope_list(g, scopes, nw);
	for (int w = 0; w < nw; w++) {
		Access a = {scope_list(g, &scopes[w], 1), NULL};
		int n = 0;
		for (int x = 0; x < nw; x++)
			if (x != w)
				others[n++] = scopes[x];
		a.noalias = scope_list(g, others, n);
		for (int k = 0; k < ns->nop; k++)
			if (ns->op[k].key == keys[w])
				ns->op[k].md = a;
	}
	for (int k = 0; k < ns->nop; k++) {
		int w = 0;
		while (w < nw && keys[w] != ns->op[k].key)
			w++;
		if (w == nw)
			ns->op[k].md = (Access){NULL, all};
	}
	free(keys);
	free(scopes);
	free(others);
}

/* Opens the loops up to depth upto; with nacc initial values, the last one carries that many
 * accumulators, left in acc. */
static void nest_enter(Cg *g, Nest *ns, int upto, const LLVMValueRef *acc_init, int nacc, LLVMValueRef *acc)
{
	for (int d = ns->open; d < upto; d++) {
		int part = d == 0 && g->split.on; /* this piece of the first axis: [lo, hi) of it */
		LLVMValueRef count = part ? imul(g, LLVMBuildNSWSub(g->b, g->split.hi, g->split.lo, ""), ns->rest0) : ns->dim[d];
		LLVMValueRef iv = loop_begin(g, &ns->loop[d], count);
		for (int k = 0; k < nacc && d == upto - 1; k++)
			acc[k] = loop_acc(g, &ns->loop[d], acc_init[k]);
		if (part)
			iv = iadd(g, iv, imul(g, g->split.lo, ns->rest0));
		for (int k = 0; k < ns->nop; k++) {
			NestOp *o = &ns->op[k];
			o->off[d + 1] = o->adv & (1u << d) ? iadd(g, o->off[d], imul(g, iv, o->stride[d])) : o->off[d];
		}
	}
	ns->open = upto;
}

static void nest_leave(Cg *g, Nest *ns)
{
	while (ns->open > 0)
		loop_end(g, &ns->loop[--ns->open], NULL);
}

static LLVMValueRef nest_addr(Cg *g, Nest *ns, int k) { return elem(g, ns->op[k].base, ns->op[k].off[ns->open]); }

/* Operand k at the current index, loaded once per body. */
static LLVMValueRef nest_get(Cg *g, Nest *ns, int k)
{
	NestOp *o = &ns->op[k];
	if (!o->base)
		return o->scalar;
	if (!o->cur)
		o->cur = load(g, nest_addr(g, ns, k), o->md);
	return o->cur;
}

static void nest_put(Cg *g, Nest *ns, int k, LLVMValueRef v) { store(g, v, nest_addr(g, ns, k), ns->op[k].md); }

/* ---- scalar math, written out so that loops over it vectorize (a libm call would not) ---- */

/* exp(x) = 2^n * e^r, n = round(x / ln 2), |r| <= ln(2)/2, e^r by its Taylor series (error below
 * half an ulp at |r| = 0.347: degree 7 for float, 13 for double). 2^n is applied as two factors so
 * that results near overflow and in the subnormal range need no special case. */
static LLVMValueRef cg_exp(Cg *g, LLVMValueRef x)
{
	int f32 = g->type == CG_F32;
	double hi = f32 ? 88.72283935546875 : 709.782712893384; /* just above ln(MAX) */
	double lo = f32 ? -104.0 : -746.0;                       /* below ln(smallest subnormal / 2) */
	/* ln 2 split so that n * ln2_hi is exact (Cody and Waite; the double split is fdlibm's) */
	double ln2_hi = f32 ? 0.693359375 : 6.93147180369123816490e-01;
	double ln2_lo = f32 ? -2.12194440e-4 : 1.90821492927058770002e-10;
	double c[14];
	int nc = f32 ? 8 : 14;
	c[0] = 1;
	for (int i = 1; i < nc; i++)
		c[i] = c[i - 1] / i;
	int mbits = f32 ? 23 : 52, bias = f32 ? 127 : 1023;

	LLVMValueRef xc = call2(g, "llvm.minnum", call2(g, "llvm.maxnum", x, cf(g, lo)), cf(g, hi));
	LLVMValueRef n = call1(g, "llvm.rint", LLVMBuildFMul(g->b, xc, cf(g, M_LOG2E), ""));
	LLVMValueRef r = fmuladd(g, n, cf(g, -ln2_hi), xc);
	r = fmuladd(g, n, cf(g, -ln2_lo), r);
	LLVMValueRef p = horner(g, r, c, nc);
	LLVMValueRef ni = LLVMBuildFPToSI(g->b, n, g->I, "");
	LLVMValueRef n1 = LLVMBuildAShr(g->b, ni, cI(g, 1), "");
	LLVMValueRef n2 = LLVMBuildSub(g->b, ni, n1, "");
	LLVMValueRef s1 = LLVMBuildBitCast(g->b, LLVMBuildShl(g->b, LLVMBuildAdd(g->b, n1, cI(g, bias), ""),
							     cI(g, mbits), ""), g->T, "");
	LLVMValueRef s2 = LLVMBuildBitCast(g->b, LLVMBuildShl(g->b, LLVMBuildAdd(g->b, n2, cI(g, bias), ""),
							     cI(g, mbits), ""), g->T, "");
	LLVMValueRef y = LLVMBuildFMul(g->b, LLVMBuildFMul(g->b, p, s1, ""), s2, "");
	y = sel(g, fcmp(g, LLVMRealOGT, x, cf(g, hi)), cf(g, INFINITY), y);
	y = sel(g, fcmp(g, LLVMRealOLT, x, cf(g, lo)), cf(g, 0), y);
	return sel(g, fcmp(g, LLVMRealUNO, x, x), x, y);
}

/* log(x) = e ln 2 + log(m), m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s), s = (m-1)/(m+1),
 * |s| <= 0.1716, by its series (5 terms for float, 11 for double). Subnormals are scaled first. */
static LLVMValueRef cg_log(Cg *g, LLVMValueRef x)
{
	int f32 = g->type == CG_F32;
	int mbits = f32 ? 23 : 52, bias = f32 ? 127 : 1023, up = f32 ? 24 : 54;
	double ln2_hi = f32 ? 0.693359375 : 6.93147180369123816490e-01;
	double ln2_lo = f32 ? -2.12194440e-4 : 1.90821492927058770002e-10;
	double c[11];
	int nc = f32 ? 5 : 11;
	for (int i = 0; i < nc; i++)
		c[i] = 2.0 / (2 * i + 1);

	LLVMValueRef tiny = fcmp(g, LLVMRealOLT, x, cf(g, f32 ? 0x1p-126 : 0x1p-1022));
	LLVMValueRef xs = sel(g, tiny, LLVMBuildFMul(g->b, x, cf(g, ldexp(1, up)), ""), x);
	LLVMValueRef bits = LLVMBuildBitCast(g->b, xs, g->I, "");
	LLVMValueRef e = LLVMBuildSub(g->b, LLVMBuildLShr(g->b, bits, cI(g, mbits), ""), cI(g, bias), "");
	LLVMValueRef mant = LLVMBuildAnd(g->b, bits, cI(g, ((int64_t)1 << mbits) - 1), "");
	LLVMValueRef m = LLVMBuildBitCast(g->b, LLVMBuildOr(g->b, mant, cI(g, (int64_t)bias << mbits), ""), g->T, "");
	LLVMValueRef big = fcmp(g, LLVMRealOGT, m, cf(g, M_SQRT2));
	m = sel(g, big, LLVMBuildFMul(g->b, m, cf(g, 0.5), ""), m);
	e = LLVMBuildAdd(g->b, e, LLVMBuildZExt(g->b, big, g->I, ""), "");
	LLVMValueRef ef = LLVMBuildFAdd(g->b, LLVMBuildSIToFP(g->b, e, g->T, ""), sel(g, tiny, cf(g, -up), cf(g, 0)), "");
	LLVMValueRef fm = LLVMBuildFSub(g->b, m, cf(g, 1), "");
	LLVMValueRef s = LLVMBuildFDiv(g->b, fm, LLVMBuildFAdd(g->b, fm, cf(g, 2), ""), "");
	LLVMValueRef logm = LLVMBuildFMul(g->b, s, horner(g, LLVMBuildFMul(g->b, s, s, ""), c, nc), "");
	LLVMValueRef y = fmuladd(g, ef, cf(g, ln2_hi), fmuladd(g, ef, cf(g, ln2_lo), logm));
	y = sel(g, fcmp(g, LLVMRealOEQ, x, cf(g, INFINITY)), x, y);
	y = sel(g, fcmp(g, LLVMRealOEQ, x, cf(g, 0)), cf(g, -INFINITY), y);
	y = sel(g, fcmp(g, LLVMRealOLT, x, cf(g, 0)), cf(g, NAN), y);
	return sel(g, fcmp(g, LLVMRealUNO, x, x), x, y);
}

/* tanh|x| = (1 - e)/(1 + e), e = exp(-2|x|) in (0, 1], so no overflow; below a threshold, where
 * 1 - e would cancel, its Taylor series (through x^9: error under an ulp up to 0.25 in float, 0.04 in
 * double). */
/* log(1 + x) = log(u) x / (u - 1) with u = 1 + x rounded (Goldberg 1991): the rounding error of u
 * cancels, so tiny x keep their relative precision. u == 1 means x is below half an ulp of 1. */
static LLVMValueRef cg_log1p(Cg *g, LLVMValueRef x)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef u = LLVMBuildFAdd(b, cf(g, 1), x, ""), d = LLVMBuildFSub(b, u, cf(g, 1), "");
	LLVMValueRef r = LLVMBuildFMul(b, cg_log(g, u), LLVMBuildFDiv(b, x, d, ""), "");
	r = sel(g, fcmp(g, LLVMRealOEQ, u, cf(g, INFINITY)), u, r);
	return sel(g, fcmp(g, LLVMRealOEQ, d, cf(g, 0)), x, r);
}

/* exp(x) - 1 = (u - 1) x / log(u) with u = exp(x) (Kahan): exact where u rounds to 1, and the
 * quotient corrects u's rounding elsewhere. */
static LLVMValueRef cg_expm1(Cg *g, LLVMValueRef x)
{
	LLVMBuilderRef b = g->b;
	LLVMValueRef u = cg_exp(g, x), um1 = LLVMBuildFSub(b, u, cf(g, 1), "");
	/* (u - 1) (x / log u): the quotient is near 1, so near overflow the product does not overflow */
	LLVMValueRef r = LLVMBuildFMul(b, um1, LLVMBuildFDiv(b, x, cg_log(g, u), ""), "");
	r = sel(g, fcmp(g, LLVMRealOEQ, um1, cf(g, -1)), um1, r);
	r = sel(g, fcmp(g, LLVMRealOEQ, u, cf(g, INFINITY)), u, r);
	return sel(g, fcmp(g, LLVMRealOEQ, u, cf(g, 1)), x, r);
}

static LLVMValueRef cg_tanh(Cg *g, LLVMValueRef x)
{
	static const double c[] = {1, -1.0 / 3, 2.0 / 15, -17.0 / 315, 62.0 / 2835};
	LLVMValueRef a = call1(g, "llvm.fabs", x);
	LLVMValueRef e = cg_exp(g, LLVMBuildFMul(g->b, a, cf(g, -2), ""));
	LLVMValueRef t = LLVMBuildFDiv(g->b, LLVMBuildFSub(g->b, cf(g, 1), e, ""), LLVMBuildFAdd(g->b, cf(g, 1), e, ""), "");
	t = call2(g, "llvm.copysign", t, x);
	LLVMValueRef series = LLVMBuildFMul(g->b, x, horner(g, LLVMBuildFMul(g->b, x, x, ""), c, 5), "");
	LLVMValueRef small = fcmp(g, LLVMRealOLT, a, cf(g, g->type == CG_F32 ? 0.25 : 0.04));
	return sel(g, small, series, t);
}

/* pow with a constant exponent that has an exact cheaper form (Adam's g^2); pow(x, 0.5) as sqrt
 * differs only at -0 and -inf. */
static LLVMValueRef cg_pow(Cg *g, LLVMValueRef a, LLVMValueRef b)
{
	if (LLVMIsAConstantFP(b)) {
		LLVMBool lossy;
		double k = LLVMConstRealGetDouble(b, &lossy);
		if (k == 0)
			return cf(g, 1);
		if (k == 1)
			return a;
		if (k == 2)
			return LLVMBuildFMul(g->b, a, a, "");
		if (k == 3)
			return LLVMBuildFMul(g->b, LLVMBuildFMul(g->b, a, a, ""), a, "");
		if (k == -1)
			return LLVMBuildFDiv(g->b, cf(g, 1), a, "");
		if (k == -2)
			return LLVMBuildFDiv(g->b, cf(g, 1), LLVMBuildFMul(g->b, a, a, ""), "");
		if (k == 0.5) /* pow(-0, 0.5) is +0 and pow(-inf, 0.5) is +inf, where sqrt gives -0 and NaN */
			return sel(g, fcmp(g, LLVMRealOEQ, a, cf(g, -INFINITY)), cf(g, INFINITY),
				   call1(g, "llvm.fabs", call1(g, "llvm.sqrt", a)));
	}
	return call2(g, "llvm.pow", a, b);
}

static LLVMValueRef flag(Cg *g, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
	return sel(g, fcmp(g, p, a, b), cf(g, 1), cf(g, 0));
}

/* The emitters of ops.h's rows that are not written out above. Each keeps a NaN operand visible
 * as ir_op_eval does: the interpreter that explains a divergence must see what the kernel saw. */
static LLVMValueRef cg_neg(Cg *g, LLVMValueRef a) { return LLVMBuildFNeg(g->b, a, ""); }
static LLVMValueRef cg_sqrt(Cg *g, LLVMValueRef a) { return call1(g, "llvm.sqrt", a); }
static LLVMValueRef cg_rsqrt(Cg *g, LLVMValueRef a) { return LLVMBuildFDiv(g->b, cf(g, 1), cg_sqrt(g, a), ""); }
static LLVMValueRef cg_abs(Cg *g, LLVMValueRef a) { return call1(g, "llvm.fabs", a); }
static LLVMValueRef cg_sign(Cg *g, LLVMValueRef a)
{
	LLVMValueRef s = sel(g, fcmp(g, LLVMRealOGT, a, cf(g, 0)), cf(g, 1),
			     sel(g, fcmp(g, LLVMRealOLT, a, cf(g, 0)), cf(g, -1), cf(g, 0)));
	return sel(g, fcmp(g, LLVMRealUNO, a, a), a, s);
}
/* 1/(1 + exp(-x)): exp overflows to inf for x < -88 and the quotient goes to 0, never NaN */
static LLVMValueRef cg_sigmoid(Cg *g, LLVMValueRef a)
{
	return LLVMBuildFDiv(g->b, cf(g, 1), LLVMBuildFAdd(g->b, cf(g, 1), cg_exp(g, cg_neg(g, a)), ""), "");
}
/* x < 0 ? 0 : x keeps a NaN visible */
static LLVMValueRef cg_relu(Cg *g, LLVMValueRef a) { return sel(g, fcmp(g, LLVMRealOLT, a, cf(g, 0)), cf(g, 0), a); }
static LLVMValueRef cg_call(Cg *g, const char *intrinsic, LLVMValueRef a) { return call1(g, intrinsic, a); }
/* A libm function of one or two operands, in the operands' type (erff or erf); the JIT resolves it
 * in the process, a library made by nmlc build links libm. Such loops do not vectorize. */
static LLVMValueRef cg_libm(Cg *g, const char *name, LLVMValueRef a, LLVMValueRef b)
{
	LLVMTypeRef t = LLVMTypeOf(a), params[2] = {t, t};
	char fname[32];
	snprintf(fname, sizeof fname, "%s%s", name, t == LLVMFloatTypeInContext(g->ctx) ? "f" : "");
	LLVMTypeRef fty = LLVMFunctionType(t, params, b ? 2 : 1, 0);
	LLVMValueRef fn = LLVMGetNamedFunction(g->mod, fname);
	if (!fn) {
		fn = LLVMAddFunction(g->mod, fname, fty);
		LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
					LLVMCreateEnumAttribute(g->ctx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
	}
	LLVMValueRef args[2] = {a, b};
	return LLVMBuildCall2(g->b, fty, fn, args, b ? 2 : 1, "");
}
/* The remainder with the sign of b, as Python's % and torch.remainder: frem (fmod) is exact, and a
 * result of the other sign moves by b (a - b floor(a / b) overflows for large a / b). */
static LLVMValueRef cg_mod(Cg *g, LLVMValueRef a, LLVMValueRef b)
{
	LLVMValueRef r = LLVMBuildFRem(g->b, a, b, "");
	LLVMValueRef zero = cf(g, 0);
	LLVMValueRef flip = LLVMBuildAnd(g->b, fcmp(g, LLVMRealONE, r, zero),
					 LLVMBuildXor(g->b, fcmp(g, LLVMRealOLT, r, zero), fcmp(g, LLVMRealOLT, b, zero), ""), "");
	return sel(g, flip, LLVMBuildFAdd(g->b, r, b, ""), r);
}
static LLVMValueRef cg_add(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(g->b, a, b, ""); }
static LLVMValueRef cg_sub(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(g->b, a, b, ""); }
static LLVMValueRef cg_mul(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(g->b, a, b, ""); }
static LLVMValueRef cg_div(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(g->b, a, b, ""); }
static LLVMValueRef cg_max(Cg *g, LLVMValueRef a, LLVMValueRef b) { return call2(g, "llvm.maximum", a, b); }
static LLVMValueRef cg_min(Cg *g, LLVMValueRef a, LLVMValueRef b) { return call2(g, "llvm.minimum", a, b); }
static LLVMValueRef cg_cmp(Cg *g, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) { return flag(g, p, a, b); }
static LLVMValueRef cg_where(Cg *g, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b)
{
	return sel(g, fcmp(g, LLVMRealUNE, c, cf(g, 0)), a, b);
}

/* One element of an elementwise op: the emitter column of its row in ops.h. */
static LLVMValueRef op_scalar(Cg *g, IrOp op, LLVMValueRef *x)
{
	LLVMValueRef a = x[0], b = x[1], c = x[2];
	switch (op) {
#define X(name, str, arity, cls, attr, shape, builtin, sem, emit) \
	case IR_##name: return (emit);
		IR_OPS(X)
#undef X
	case IR_NOPS: break;
	}
	die("codegen: %s is not elementwise", ir_op_name(op));
}

/* ---- ops ---- */

static const IrShape *shape_of(Cg *g, int v) { return &g->f->inst[v].shape; }

static FuseValKind kind_of(Cg *g, int v) { return g->plan->val[v].kind; }

/* The storage a value is read from. */
static int read_key(Cg *g, int v)
{
	int r = fuse_root(g->plan, g->f, v);
	const IrInst *in = &g->f->inst[r];
	return in->op == IR_LOAD ? ir_slot_key(in->attr.slot.block, in->attr.slot.index) : r;
}

/* The first element of tensor index of block b. */
static LLVMValueRef slot_ptr(Cg *g, NmlBlock b, int index)
{
	return elem(g, g->arg[b], ci(g, (int64_t)ir_slot(g->m, b, index)->offset));
}

/* The slot a store writes, its first element and its shape (a batch block's: the value's). */
static int store_dst(Cg *g, int i, LLVMValueRef *dst, const IrShape **s)
{
	const IrInst *in = &g->f->inst[i];
	NmlBlock b = in->attr.slot.block;
	int index = in->attr.slot.index;
	*s = nml_block_kind(b) == NML_BK_BATCH ? shape_of(g, in->in[0]) : &ir_slot(g->m, b, index)->shape;
	*dst = slot_ptr(g, b, index);
	return ir_slot_key(b, index);
}

/* dst (of shape s) = the scalar v everywhere */
static void emit_fill(Cg *g, LLVMValueRef dst, const IrShape *s, LLVMValueRef v, int key)
{
	Nest ns;
	nest_init(&ns, s);
	int k = nest_add(g, &ns, -1, key, 1, dst, NULL, s);
	nest_plan(g, &ns);
	nest_enter(g, &ns, ns.depth, NULL, 0, NULL);
	nest_put(g, &ns, k, v);
	nest_leave(g, &ns);
	nest_free(&ns);
}

static void emit_leaf(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	Val *v = &g->val[i];
	LLVMBuilderRef b = g->b;
	switch (in->op) {
	case IR_CONST: v->imm = LLVMConstReal(g->f64, in->attr.num); break;
	case IR_LOAD: v->ptr = slot_ptr(g, in->attr.slot.block, in->attr.slot.index); break;
	case IR_HPARAM: /* hyperparameters are f64 in every kernel */
		v->imm = LLVMBuildLoad2(b, g->f64, LLVMBuildInBoundsGEP2(b, g->f64, g->arg[ARG_HPARAMS],
									 (LLVMValueRef[]){ci(g, in->attr.index)}, 1, ""), "hp");
		break;
	case IR_STEP: v->imm = g->arg[ARG_T]; break;
	case IR_ROWS: v->imm = LLVMBuildSIToFP(b, g->arg[ARG_N], g->f64, "n"); break;
	default: die("codegen: %s is not a leaf", ir_op_name(in->op));
	}
}

/* Scalar value a in the kernel's type. */
static LLVMValueRef imm(Cg *g, int a)
{
	LLVMValueRef v = g->val[a].imm;
	return g->type == CG_F32 ? LLVMBuildFPTrunc(g->b, v, g->T, "") : v;
}

/* A unit without a loop: a leaf, a scalar op, a value sharing its operand's storage, or a store
 * that changes nothing. */
static void emit_value(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	Val *v = &g->val[i];
	if (ir_op_class(in->op) == OPC_STORE) /* it writes what its slot holds (fuse.c) */
		return;
	if (ir_op_class(in->op) == OPC_LEAF) {
		emit_leaf(g, i);
	} else if (kind_of(g, i) == FV_ALIAS) {
		v->ptr = g->val[in->in[0]].ptr;
	} else if (kind_of(g, i) == FV_INLINE) { /* computed by the products that read it */
		return;
	} else if (kind_of(g, i) != FV_SCALAR) {
		die("codegen: %s: %%%d (%s) has no loop", g->kname, i, ir_op_name(in->op));
	} else if (ir_op_class(in->op) == OPC_VIEW) {
		v->imm = g->val[in->in[0]].imm;
	} else {
		LLVMValueRef x[3];
		for (int j = 0; j < ir_op_arity(in->op); j++)
			x[j] = g->val[in->in[j]].imm;
		swap_scalar_types(g);
		v->imm = op_scalar(g, in->op, x);
		swap_scalar_types(g);
	}
	if (g->plan->val[i].region) /* a matmul reads it */
		emit_fill(g, v->ptr, &in->shape, imm(g, i), i);
}

static LLVMValueRef reduce_step(Cg *g, IrOp op, LLVMValueRef acc, LLVMValueRef x, int reassoc)
{
	if (op == IR_MAX)
		return call2(g, "llvm.maximum", acc, x);
	LLVMValueRef s = LLVMBuildFAdd(g->b, acc, x, "");
	/* lets the vectorizer keep partial sums: results change only by float reassociation */
	if (reassoc)
		LLVMSetFastMathFlags(s, LLVMFastMathAllowReassoc);
	return s;
}

/* ---- fused loop nests ---- */

/* The nest operand through which value a is read, added on first use. */
static int read_op_find(const Nest *ns, int a)
{
	for (int k = 0; k < ns->nop; k++)
		if (ns->op[k].val == a && !ns->op[k].write)
			return k;
	return -1;
}

static int read_op(Cg *g, Nest *ns, int a)
{
	int k = read_op_find(ns, a);
	return k >= 0 ? k : nest_add(g, ns, a, read_key(g, a), 0, g->val[a].ptr, NULL, shape_of(g, a));
}

/* Does nest q compute value a, or what a views (at the same index: a nest's values all have its
 * space's elements)? The value, or -1. */
static int in_nest(Cg *g, int q, int a)
{
	int r = fuse_root(g->plan, g->f, a);
	return g->plan->val[r].unit == q && ir_op_class(g->f->inst[r].op) != OPC_REDUCE ? r : -1;
}

/* Value a at the current index of nest q. */
static LLVMValueRef operand(Cg *g, Nest *ns, int q, int a)
{
	const FuseVal *v = &g->plan->val[a];
	if (v->kind == FV_SCALAR)
		return imm(g, a);
	int r = in_nest(g, q, a);
	if (r >= 0)
		return g->val[r].reg;
	return nest_get(g, ns, read_op(g, ns, a));
}

/* The members of unit q at the current index, in program order. wk[x] is the operand member x writes
 * (or -1); out[k] is reduction k's output operand. Leaves reduction k's next accumulator in next[k]
 * when it is carried in a register (acc), else updates the output in place. */
static void emit_body(Cg *g, Nest *ns, int q, const int *wk, const int *out, const LLVMValueRef *acc, LLVMValueRef *next)
{
	const FuseUnit *u = &g->plan->unit[q];
	for (int k = 0; k < ns->nop; k++)
		ns->op[k].cur = NULL;
	for (int x = 0; x < u->n; x++) {
		int i = u->inst[x];
		const IrInst *in = &g->f->inst[i];
		switch (ir_op_class(in->op)) {
		case OPC_ELEMWISE: {
			LLVMValueRef a[3] = {0};
			for (int j = 0; j < ir_op_arity(in->op); j++)
				a[j] = operand(g, ns, q, in->in[j]);
			g->val[i].reg = op_scalar(g, in->op, a);
			if (wk[x] >= 0)
				nest_put(g, ns, wk[x], g->val[i].reg);
			break;
		}
		case OPC_STORE: nest_put(g, ns, wk[x], operand(g, ns, q, in->in[0])); break;
		case OPC_REDUCE: {
			LLVMValueRef v = operand(g, ns, q, in->in[0]);
			int k = 0;
			while (u->reds[k] != i)
				k++;
			if (acc)
				next[k] = reduce_step(g, in->op, acc[k], v, 1);
			else
				nest_put(g, ns, out[k], reduce_step(g, in->op, load(g, nest_addr(g, ns, out[k]), ns->op[out[k]].md), v, 0));
			break;
		}
		case OPC_LEAF: case OPC_VIEW: case OPC_LIBRARY: case OPC_LOOP:
			die("codegen: %s: %s in a loop nest", g->kname, ir_op_name(in->op));
		}
	}
}

/* The axis a nest is split on across threads: its first of more than one element; -1 when it has
 * none, or when its reduction reduces that axis (threads would add into the same outputs). */
static int split_axis(Cg *g, const FuseUnit *u)
{
	int a0 = 0;
	while (a0 < u->space.rank && u->space.dim[a0] == 1)
		a0++;
	if (a0 == u->space.rank)
		return -1;
	return u->red >= 0 && (u->red_axes >> a0 & 1) ? -1 : a0;
}

/* A reduction over a few elements along short axes of sizes known now (a pooling window seen as
 * axes of the image, [N, C, H/k, k, W/k, k]) is written out in the body, which reduces in registers
 * and stores once per output element: the loops left are over the kept axes, the innermost of them
 * contiguous or strided, which LLVM vectorizes, rather than a loop of two inside a loop of two.
 * Not over longer axes (a softmax's classes: the body written ten times takes LLVM seconds to
 * vectorize over the rows), nor when it reduces the first axis, which threads split
 * (emit_chunks). The axes, or 0. */
enum { UNROLL_AXIS = 4, UNROLL_MAX = 9 };
static unsigned unrolled_axes(Cg *g, const FuseUnit *u, const Nest *ns)
{
	if (u->n > 32)
		return 0;
	unsigned axes = 0, mask = 0;
	if (u->red >= 0)
		axes = u->red_axes;
	else /* elementwise: the short axes some operand is broadcast along (a pooled value over its window) */
		for (int a = 0; a < ns->rank; a++)
			for (int k = 0; k < ns->nop; k++)
				if (ns->op[k].base && ns->op[k].od[a] == 1 && !ns->op[k].write)
					axes |= 1u << a;
	int64_t count = 1;
	int a0 = 0, kept = 0;
	while (a0 < u->space.rank && u->space.dim[a0] == 1)
		a0++;
	for (int a = 0; a < u->space.rank; a++) {
		int64_t d = u->space.dim[a];
		if (!(axes >> a & 1)) {
			kept |= d != 1;
			continue;
		}
		if (d == IR_BATCH || a == a0 || d > UNROLL_AXIS || (count *= d) > UNROLL_MAX)
			return 0;
		if (d != 1)
			mask |= 1u << a;
	}
	return kept && count > 1 ? mask : 0;
}

/* The operands at element r of the unrolled axes (row-major over them), from the loops' index in base. */
static void nest_at(Cg *g, Nest *ns, const LLVMValueRef *base, int64_t r)
{
	for (int k = 0; k < ns->nop; k++)
		ns->op[k].off[ns->open] = base[k];
	for (int a = ns->rank - 1; a >= 0; a--) {
		if (!(ns->unrolled >> a & 1))
			continue;
		int64_t i = r % ns->it[a];
		r /= ns->it[a];
		for (int k = 0; k < ns->nop && i; k++)
			if (ns->op[k].od[a] != 1)
				ns->op[k].off[ns->open] = iadd(g, ns->op[k].off[ns->open], imul(g, ci(g, i), ns->op[k].axis_stride[a]));
	}
}

/* One loop nest: the unit's elementwise ops and stores at each index of its space, and the reduction
 * they feed. A reduction runs over the space with its output broadcast along the reduced axes. When
 * the innermost loop reduces, it sums in a register and, if it is the only reducing loop, stores
 * without initializing the output first; otherwise the output is initialized and accumulated in
 * place. */
static void emit_nest(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	const IrFunc *f = g->f;
	Nest ns;
	nest_init(&ns, &u->space);
	int *wk = malloc((size_t)u->n * sizeof *wk);
	if (!wk)
		die("out of memory");
	int out[FUSE_MAX_RED], nout = 0;
	for (int x = 0; x < u->n; x++) {
		int i = u->inst[x];
		const IrInst *in = &f->inst[i];
		/* the member's own space: a coarser view of the nest's, or the same (a store's: its slot's) */
		LLVMValueRef dst = NULL;
		const IrShape *own = ir_op_class(in->op) == OPC_ELEMWISE ? &in->shape : shape_of(g, in->in[0]);
		int key = ir_op_class(in->op) == OPC_STORE ? store_dst(g, i, &dst, &own) : -1, owner[IR_MAXRANK];
		int coarse = !ir_shape_eq(*own, u->space) && fuse_refine(&u->space, own, owner);
		IrShape t;
#define IN_SPACE(s) (coarse ? (t = fuse_refine_shape(&u->space, own, (s)), &t) : (s))
		wk[x] = -1;
		for (int j = 0; j < ir_op_arity(in->op); j++) {
			int a = in->in[j];
			if (kind_of(g, a) != FV_SCALAR && in_nest(g, q, a) < 0 && read_op_find(&ns, a) < 0)
				nest_add(g, &ns, a, read_key(g, a), 0, g->val[a].ptr, NULL, IN_SPACE(shape_of(g, a)));
		}
		switch (ir_op_class(in->op)) {
		case OPC_STORE: wk[x] = nest_add(g, &ns, -1, key, 1, dst, NULL, IN_SPACE(own)); break;
		case OPC_REDUCE: { /* members in program order, so out[k] is u->reds[k]'s */
			IrShape kept = {0};
			int o = out[nout++] = nest_add(g, &ns, -1, i, 1, g->val[i].ptr, NULL, &kept);
			for (int a = 0; a < ns.rank; a++)
				ns.op[o].od[a] = (u->red_axes >> a) & 1 ? 1 : ns.it[a];
			break;
		}
		default:
			if (kind_of(g, i) == FV_WORK)
				wk[x] = nest_add(g, &ns, -1, i, 1, g->val[i].ptr, NULL, IN_SPACE(&in->shape));
			break;
		}
#undef IN_SPACE
	}
	ns.unrolled = unrolled_axes(g, u, &ns);
	nest_plan(g, &ns);

	if (ns.unrolled) { /* the short axes written out, a body per element of them; a reduction (over
			    * exactly those axes) accumulates in registers and stores once */
		int64_t count = 1;
		for (int a = 0; a < ns.rank; a++)
			if (ns.unrolled >> a & 1)
				count *= ns.it[a];
		nest_enter(g, &ns, ns.depth, NULL, 0, NULL);
		LLVMValueRef *base = malloc((size_t)ns.nop * sizeof *base), acc[FUSE_MAX_RED], next[FUSE_MAX_RED];
		if (!base)
			die("out of memory");
		for (int k = 0; k < ns.nop; k++)
			base[k] = ns.op[k].off[ns.open];
		for (int k = 0; k < u->nred; k++)
			acc[k] = cf(g, f->inst[u->reds[k]].op == IR_MAX ? -INFINITY : 0);
		for (int64_t r = 0; r < count; r++) {
			nest_at(g, &ns, base, r);
			emit_body(g, &ns, q, wk, out, u->nred ? acc : NULL, next);
			memcpy(acc, next, (size_t)u->nred * sizeof *next);
		}
		nest_at(g, &ns, base, 0);
		for (int k = 0; k < u->nred; k++)
			nest_put(g, &ns, out[k], acc[k]);
		free(base);
		nest_leave(g, &ns);
	} else if (u->red < 0) {
		nest_enter(g, &ns, ns.depth, NULL, 0, NULL);
		emit_body(g, &ns, q, wk, NULL, NULL, NULL);
		nest_leave(g, &ns);
	} else { /* the reductions have the same axes, so the same loops reduce for each */
		LLVMValueRef init[FUSE_MAX_RED];
		for (int k = 0; k < u->nred; k++)
			init[k] = cf(g, f->inst[u->reds[k]].op == IR_MAX ? -INFINITY : 0);
		unsigned adv = ns.op[out[0]].adv;
		int inner = ns.depth > 0 && !(adv & (1u << (ns.depth - 1)));
		int outer = 0;
		for (int d = 0; d < ns.depth - inner; d++)
			outer |= !(adv & (1u << d));
		if (!inner || outer) {
			/* a piece split on a kept axis initializes its rows of the output */
			int rows = g->split.on && g->split.rows, a0 = rows ? split_axis(g, u) : -1;
			IrShape kept = {0};
			for (int a = a0 + 1; a < u->space.rank; a++)
				if (!((u->red_axes >> a) & 1))
					kept.dim[kept.rank++] = u->space.dim[a];
			LLVMValueRef count = numelv(g, &kept), start = ci(g, 0);
			if (rows) {
				start = imul(g, g->split.lo, count);
				count = imul(g, LLVMBuildNSWSub(g->b, g->split.hi, g->split.lo, ""), count);
			}
			Loop l;
			LLVMValueRef j = iadd(g, loop_begin(g, &l, count), start);
			for (int k = 0; k < u->nred; k++)
				store(g, init[k], elem(g, g->val[u->reds[k]].ptr, j), (Access){0});
			loop_end(g, &l, NULL);
		}
		if (inner) {
			LLVMValueRef acc[FUSE_MAX_RED], next[FUSE_MAX_RED], r[FUSE_MAX_RED];
			nest_enter(g, &ns, ns.depth, init, u->nred, acc);
			emit_body(g, &ns, q, wk, out, acc, next);
			loop_end_accs(g, &ns.loop[--ns.open], next, r);
			for (int k = 0; k < u->nred; k++) {
				int o = out[k];
				if (outer)
					r[k] = reduce_step(g, f->inst[u->reds[k]].op, load(g, nest_addr(g, &ns, o), ns.op[o].md), r[k], 0);
				nest_put(g, &ns, o, r[k]);
			}
		} else {
			nest_enter(g, &ns, ns.depth, NULL, 0, NULL);
			emit_body(g, &ns, q, wk, out, NULL, NULL);
		}
		nest_leave(g, &ns);
	}
	free(wk);
	nest_free(&ns);
}

static void emit_window_at(Cg *g, int i, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef start, LLVMValueRef count,
			   LLVMValueRef base);

/* Elements of each matrix of a stack of shape s (its last two dimensions). */
static int64_t mat_numel(const IrShape *s) { return s->dim[s->rank - 2] * s->dim[s->rank - 1]; }

/* The number of products of unit q's stack, and of the groups its loop runs over: the products, or
 * with a sum over the stack the partial sums (acc_rows products each). */
static LLVMValueRef stack_count(Cg *g, int q)
{
	const IrShape *sc = &g->f->inst[g->plan->unit[q].inst[0]].shape;
	LLVMValueRef count = ci(g, 1);
	for (int k = 0; k < sc->rank - 2; k++)
		count = imul(g, count, dimv(g, sc->dim[k]));
	return count;
}

enum { MAX_PARTIALS = 16384 }; /* elements of partial results a kernel keeps on its stack */

typedef struct Tiles {
	int64_t rows, cols;   /* a tile's size (the last ones may be shorter) */
	int64_t down, across; /* tiles along C's rows and along its columns */
	int64_t deep, depth;  /* the inner dimension's pieces and their number (1: C's tiles are whole
	                       * products; more: each piece's product is a partial sum of C) */
} Tiles;

static int64_t product_tiles(Cg *g, int q, Tiles *t);

static LLVMValueRef group_count(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	int64_t tiles = product_tiles(g, q, NULL);
	if (tiles > 1)
		return ci(g, tiles);
	LLVMValueRef S = stack_count(g, q);
	if (u->epi < 0 || g->f->inst[u->epi].op != IR_SUM)
		return S;
	return LLVMBuildSDiv(g->b, iadd(g, S, ci(g, u->acc_rows - 1)), ci(g, u->acc_rows), "parts");
}

char *openblas_get_corename(void);

/* OpenBLAS's AVX-512 kernel sets (SkylakeX, Cooperlake; Sapphire Rapids runs Cooperlake's) multiply
 * a product of at most about a million multiply-adds straight from its operands, without packing
 * them into blocks first: 110-116 GFLOP/s on one thread of the Zen 4 machine of
 * docs/performance.md, against 78-100 for the same work as one larger product. Haswell's kernels
 * (AVX2) have no such path and run a whole product as fast as its tiles (94 GFLOP/s on one
 * thread), so products are cut only for the kernel sets that gain from it. */
static int blas_direct(void)
{
	static int known = -1;
	if (known < 0) {
		const char *core = openblas_get_corename();
		known = core && (strncasecmp(core, "skylakex", 8) == 0 || strncasecmp(core, "cooperlake", 10) == 0);
	}
	return known;
}

/* Where blas_direct says small products run faster, a single product is cut into tiles of C, each
 * a product of its own on one thread: at most 64 columns, rows in multiples of 16, about TILE_MACS
 * multiply-adds (16 rows when B is transposed, whose direct kernel was slower on larger tiles),
 * never more than DIRECT_MACS, and the tiles along a side of equal size (direct_tiles); a product
 * of few rows is cut along its inner dimension instead (inner_tiles). The pool runs the tiles,
 * OpenBLAS one thread each: the 784-512-256-10 MLP's products at batch 128 (16-51M multiply-adds)
 * ran at 206-233 GFLOP/s on two threads so, against 178-193 as whole products on OpenBLAS's two
 * threads; the 784-64-10 MLP's at batch 32 (1.6M each) took 38 and 40 us whole, 29 and 29 in tiles
 * on one thread, and its step went from 68-75 to 53-64 us on two (inner_tiles). The tiles depend on
 * the shapes alone, so the bits do not depend on the thread count. Returns the number of tiles;
 * below 2, the product is not cut.
 *
 * Kernels that pack (Haswell's) gain nothing from small tiles, but a product below BLAS_ONE_THREAD
 * is cut all the same, to run on two threads (the 784-64-10 MLP at batch 32, nmlc run on two
 * threads with Haswell's kernels: 310-327k samples/s whole, 350-425k in tiles), and
 * --deterministic would run a product of BLAS_ONE_THREAD multiply-adds or more whole on one
 * thread: there it is cut into 8 tiles of columns (of rows, when it has fewer than 128 columns),
 * which the pool runs. With Haswell's kernels, the 784-512-256-10 MLP's products ran at 165-196
 * GFLOP/s so on two threads, against 97-110 whole on one. CgKernel.pieces forces either kind
 * (tests). */
enum { BLAS_ONE_THREAD = 4 << 20, TILE_MACS = 600000, DIRECT_MACS = 960000 };

static int64_t static_numel(Cg *g, const IrShape *s);

/* The multiply-adds of unit q's products (at the largest batch): C's elements times K. */
static int64_t product_macs(Cg *g, int q)
{
	const IrInst *in = &g->f->inst[g->plan->unit[q].inst[0]];
	const IrShape *sa = shape_of(g, in->in[0]);
	IrShape mnk = in->shape;
	mnk.dim[mnk.rank++] = sa->dim[sa->rank - (in->attr.mm.ta ? 2 : 1)];
	return static_numel(g, &mnk);
}

/* The sides of each product of unit inst in: C's rows m and columns n, the inner dimension k, the
 * batch counted at its largest. Returns whether none of them is the batch. */
static int product_mnk(Cg *g, const IrInst *in, int64_t *m, int64_t *n, int64_t *k)
{
	const IrShape *sa = shape_of(g, in->in[0]), *sc = &in->shape;
	int64_t d[3] = {sc->dim[sc->rank - 2], sc->dim[sc->rank - 1], sa->dim[sa->rank - (in->attr.mm.ta ? 2 : 1)]};
	int fixed = 1;
	for (int j = 0; j < 3; j++)
		if (d[j] == IR_BATCH)
			d[j] = g->max_batch, fixed = 0;
	*m = d[0], *n = d[1], *k = d[2];
	return fixed;
}

/* A side of len cut into pieces of at most `most` (a multiple of 16): equal pieces, in multiples of 16. */
static int64_t tile_side(int64_t len, int64_t most)
{
	int64_t count = (len + most - 1) / most, side = (len + count - 1) / count;
	side = (side + 15) / 16 * 16;
	return side < most ? side : most;
}

/* The small tiles of an m x n x k product for the direct kernels; 0 when it is not cut. With B
 * transposed, tiles of 16 rows, and only for k of 256 or more (the tiles of shorter products were
 * slower than the whole product: 153 against 159 GFLOP/s for 128 x 3136 x 128). A tile of 16 rows
 * and 64 columns (fewer if C has fewer) that would exceed DIRECT_MACS is not made narrower: 16 x
 * 16 tiles of the CNN's 128 x 128 x 3136 ran at 116 GFLOP/s against 158 whole. single: a product
 * whose tiles the pool runs (product_tiles), not one of a stack's (stack_tiles). */
static int64_t direct_tiles(int64_t m, int64_t n, int64_t k, int tb, int single, Tiles *t)
{
	int64_t cols = n < 64 ? n : 64, rows = tb ? 16 : TILE_MACS / (cols * k) / 16 * 16;
	if (tb && k < 256)
		return 0;
	if (rows < 16)
		rows = 16;
	if (rows * cols * k > DIRECT_MACS)
		return 0;
	Tiles r = {.rows = tile_side(m, rows), .cols = n <= cols ? n : tile_side(n, cols), .deep = k, .depth = 1};
	r.down = (m + r.rows - 1) / r.rows, r.across = (n + r.cols - 1) / r.cols;
	/* A single product below BLAS_ONE_THREAD in two halves of its rows where each half fits
	 * DIRECT_MACS, as inner_tiles cuts x w in two: each of two threads runs one half, the rows of
	 * the nest after it it runs (not with B transposed, whose tiles stay at 16 rows) */
	if (single && !tb && r.down > 2 && r.across == 1 && m * n * k < BLAS_ONE_THREAD) {
		int64_t half = tile_side(m, ((m + 1) / 2 + 15) / 16 * 16);
		if ((m + half - 1) / half == 2 && half * n * k <= DIRECT_MACS)
			r.rows = half, r.down = 2;
	}
	/* Else a product of few tiles in an even number of them, so that each of two threads runs the
	 * tiles of one half of the rows, about the half of the nest after it it runs (inner_tiles) */
	if (r.down * r.across % 2 && r.across == 1 && m * n * k < BLAS_ONE_THREAD) {
		int64_t side = ((m + r.down) / (r.down + 1) + 15) / 16 * 16;
		if ((m + side - 1) / side == r.down + 1)
			r.rows = side, r.down++;
	}
	if (t)
		*t = r;
	return r.down * r.across;
}

/* A product of few rows (a small batch's x w) cut along its inner dimension into an even number of
 * pieces of about TILE_MACS (two where each half has at most DIRECT_MACS), each piece's product a
 * partial sum of C, added in order after them: run
 * on the pool, each thread reads only its own rows of w, the same rows whose gradient (x^T dy, cut
 * into as many tiles of rows: direct_tiles) and update (the nest after it, split by rows:
 * affine_split) it computes, so w, its gradient and its optimizer state stay in that thread's
 * cache from step to step (runtime/pool.c gives each thread the same share of a loop's pieces
 * every time). Cut into tiles of C's rows instead, every thread reads all of w, and the update's
 * writes to w then invalidate the other core's copy: the 784-64-10 MLP's step at batch 32 (x w of
 * 32 x 64 x 784 in 4 pieces of 208) took 65 us so, 67 on one thread, and 53-64 cut along the inner
 * dimension (alternating with the one-thread build: 68-75). In two pieces of 400 rather than four,
 * with x^T dy in two tiles of 400 rows to match, each thread hands one partial sum to the caller
 * instead of two: 43.8-46.4 us against 47.7-50.0 in the same process (three runs of a minute,
 * alternating, the cores close), 57.2 against 61.1 with Haswell's kernels; the same with the
 * virtual CPUs placed apart (docs/performance.md, "Row 2's slow mode"), where every line passed
 * between the threads costs six times as long. The partial sums change the order of
 * C's additions, not with the thread count. 0 when the product is not cut so: an operand transposed,
 * more than INNER_ROWS rows, pieces of fewer than INNER_MIN. */
enum { INNER_ROWS = 64, INNER_MIN = 128 };
static int64_t inner_tiles(int64_t m, int64_t n, int64_t k, int ta, int tb, Tiles *t)
{
	int64_t depth = (m * n * k + TILE_MACS - 1) / TILE_MACS;
	depth += depth % 2;
	if (depth > 2 && m * n * k <= 2 * DIRECT_MACS)
		depth = 2;
	if (ta || tb || m > INNER_ROWS || m * n * k >= BLAS_ONE_THREAD || k / depth < INNER_MIN ||
	    depth * m * n > MAX_PARTIALS)
		return 0;
	Tiles r = {.rows = m, .cols = n, .down = 1, .across = 1, .deep = tile_side(k, ((k + depth - 1) / depth + 15) / 16 * 16)};
	r.depth = (k + r.deep - 1) / r.deep;
	if (r.depth < 2)
		return 0;
	if (t)
		*t = r;
	return r.depth;
}

static int64_t product_tiles(Cg *g, int q, Tiles *t)
{
	const FuseUnit *u = &g->plan->unit[q];
	const IrInst *in = &g->f->inst[u->inst[0]];
	if (g->tiles < 0 || in->op != IR_MATMUL || u->epi >= 0 || u->window[0] >= 0 || u->window[1] >= 0)
		return 0;
	int64_t m, n, k;
	product_mnk(g, in, &m, &n, &k);
	int64_t macs = m * n * k;
	if (macs != product_macs(g, q)) /* a stack of products: see stack_tiles */
		return 0;
	if (m < 1 || n < 1 || k < 1 || macs <= DIRECT_MACS)
		return 0;
	/* below BLAS_ONE_THREAD, cut for the threads' sake whatever the kernels (inner_tiles) */
	int64_t inner = g->tiles == 1 || macs < BLAS_ONE_THREAD ? inner_tiles(m, n, k, in->attr.mm.ta, in->attr.mm.tb, t) : 0;
	if (inner)
		return inner;
	if (g->tiles == 0 && macs >= BLAS_ONE_THREAD) { /* kernels that pack: 8 tiles of columns (or rows), under --deterministic */
		if (!g->deterministic || (n < 128 && m < 128))
			return 0;
		Tiles r = {.rows = m, .cols = n, .deep = k, .depth = 1};
		if (n >= 128)
			r.cols = tile_side(n, ((n + 7) / 8 + 15) / 16 * 16);
		else
			r.rows = tile_side(m, ((m + 7) / 8 + 15) / 16 * 16);
		r.down = (m + r.rows - 1) / r.rows, r.across = (n + r.cols - 1) / r.cols;
		if (t)
			*t = r;
		return r.down * r.across;
	}
	return direct_tiles(m, n, k, in->attr.mm.tb, 1, t);
}

/* Each product of a stack (a convolution's, one per image) in small tiles, one after another on
 * the thread that runs the product, where the direct kernels gain: the CNN benchmark's second
 * convolution's products (64 x 196 x 288 forward, 288 x 196 x 64 for the input gradient) ran at
 * 113-116 GFLOP/s in tiles against 98-99 whole, on one thread. Not with B transposed (the weight
 * gradient's 64 x 288 x 196: 94-96 either way). */
static int64_t stack_tiles(Cg *g, int q, Tiles *t)
{
	const FuseUnit *u = &g->plan->unit[q];
	const IrInst *in = &g->f->inst[u->inst[0]];
	if (g->tiles < 1 || in->op != IR_MATMUL || in->attr.mm.tb)
		return 0;
	int64_t m, n, k;
	if (!product_mnk(g, in, &m, &n, &k) || m * n * k == product_macs(g, q) /* a single product */ ||
	    m < 1 || n < 1 || k < 1 || m * n * k <= DIRECT_MACS)
		return 0;
	return direct_tiles(m, n, k, 0, 0, t);
}

/* The matrix products of unit q: C = op(A) op(B) by cblas_?gemm, row-major; lda and ldb are the
 * stored row lengths. A stack of matrices (axes before the last two, broadcast) is one call per
 * matrix of C, over its flat index: all of them, or [lo, hi) in a piece split across threads.
 * A product that works one at a time (FuseUnit) unfolds its window operands into this thread's
 * scratch first, and leaves its result there for the fold after it, or adds it into its partial
 * sum (the first product of a partial sum sets it). */
static void emit_gemms(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	int i = u->inst[0];
	const IrInst *in = &g->f->inst[i];
	const IrShape *sa = shape_of(g, in->in[0]), *sb = shape_of(g, in->in[1]), *sc = &in->shape;
	int ta = in->attr.mm.ta, tb = in->attr.mm.tb, ra = sa->rank, rb = sb->rank, rc = sc->rank;
	LLVMValueRef M = dimv(g, sc->dim[rc - 2]), N = dimv(g, sc->dim[rc - 1]);
	LLVMValueRef K = dimv(g, sa->dim[ra - (ta ? 2 : 1)]);
	LLVMValueRef lda = dimv(g, sa->dim[ra - 1]), ldb = dimv(g, sb->dim[rb - 1]);
	LLVMBuilderRef b = g->b;
	int acc = u->epi >= 0 && g->f->inst[u->epi].op == IR_SUM, fold = u->epi >= 0 && !acc;

	LLVMTypeRef i32 = g->i32, p = g->ptr, T = g->T;
	LLVMTypeRef pt[14] = {i32, i32, i32, i32, i32, i32, T, p, i32, p, i32, T, p, i32};
	LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), pt, 14, 0);
	const char *name = g->type == CG_F32 ? "cblas_sgemm" : "cblas_dgemm";
	LLVMValueRef fn = LLVMGetNamedFunction(g->mod, name);
	if (!fn)
		fn = LLVMAddFunction(g->mod, name, fty);

	/* The stack: A and B advance along the axes they have (not 1). */
	int lead = rc - 2;
	LLVMValueRef stride_a[IR_MAXRANK], stride_b[IR_MAXRANK], sta = imul(g, dimv(g, sa->dim[ra - 2]), lda);
	LLVMValueRef stb = imul(g, dimv(g, sb->dim[rb - 2]), ldb);
	for (int k = lead - 1; k >= 0; k--) {
		int ka = k - (rc - ra), kb = k - (rc - rb);
		int adv_a = ka >= 0 && sa->dim[ka] != 1, adv_b = kb >= 0 && sb->dim[kb] != 1;
		stride_a[k] = adv_a ? sta : ci(g, 0);
		stride_b[k] = adv_b ? stb : ci(g, 0);
		if (ka >= 0)
			sta = imul(g, sta, dimv(g, sa->dim[ka]));
		if (kb >= 0)
			stb = imul(g, stb, dimv(g, sb->dim[kb]));
	}

	/* This thread's scratch: a block of windows per window operand, the product for a fold. */
	int64_t at[3] = {0}, top = 0;
	for (int j = 0; j < 2; j++)
		if (u->window[j] >= 0) {
			at[j] = top;
			top += mat_numel(j ? sb : sa);
		}
	if (fold) {
		at[2] = top;
		top += mat_numel(sc);
	}
	LLVMValueRef scratch = NULL;
	if (top) {
		LLVMTypeRef sty = LLVMFunctionType(p, &g->i64, 1, 0);
		LLVMValueRef sfn = LLVMGetNamedFunction(g->mod, "nml_scratch");
		if (!sfn)
			sfn = LLVMAddFunction(g->mod, "nml_scratch", sty);
		LLVMValueRef bytes = ci(g, top * (g->type == CG_F32 ? 4 : 8));
		scratch = LLVMBuildCall2(b, sty, sfn, &bytes, 1, "scratch");
	}

	/* The groups this loop runs: products, or partial sums of acc_rows products. */
	LLVMValueRef start = ci(g, 0), count = group_count(g, q), S = stack_count(g, q);
	if (g->split.on) {
		start = g->split.lo;
		count = LLVMBuildNSWSub(b, g->split.hi, g->split.lo, "");
	}
	Loop lg, l;
	LLVMValueRef grp = iadd(g, loop_begin(g, &lg, count), start), first = grp, n = ci(g, 1), part = NULL;
	if (acc) {
		LLVMValueRef R = ci(g, u->acc_rows);
		first = imul(g, grp, R);
		LLVMValueRef left = LLVMBuildNSWSub(b, S, first, "");
		n = sel(g, LLVMBuildICmp(b, LLVMIntSLT, left, R, ""), left, R);
		part = elem(g, g->val[i].ptr, imul(g, grp, imul(g, M, N)));
	}
	LLVMValueRef tile = NULL;
	Tiles tl;
	if (product_tiles(g, q, &tl) > 1) { /* a tile of one product: the product's index is 0 */
		tile = grp;
		first = ci(g, 0);
	}
	LLVMValueRef s = iadd(g, loop_begin(g, &l, n), first), r = s;
	LLVMValueRef oa = ci(g, 0), ob = ci(g, 0);
	for (int k = lead - 1; k >= 0; k--) {
		LLVMValueRef d = dimv(g, sc->dim[k]), ix = lead > 1 ? LLVMBuildURem(b, r, d, "") : r;
		oa = iadd(g, oa, imul(g, ix, stride_a[k]));
		ob = iadd(g, ob, imul(g, ix, stride_b[k]));
		if (k > 0)
			r = LLVMBuildUDiv(b, r, d, "");
	}
	LLVMValueRef opnd[2];
	for (int j = 0; j < 2; j++) /* product s's windows: planes [s, s + 1) * planes per matrix */
		if (u->window[j] < 0) {
			opnd[j] = elem(g, g->val[in->in[j]].ptr, j ? ob : oa);
		} else {
			const IrInst *w = &g->f->inst[u->window[j]];
			int64_t per = mat_numel(j ? sb : sa) / (w->shape.dim[2] * w->shape.dim[3] * w->shape.dim[4]);
			LLVMValueRef from = imul(g, s, ci(g, per));
			opnd[j] = elem(g, scratch, ci(g, at[j]));
			emit_window_at(g, u->window[j], g->val[w->in[0]].ptr, opnd[j], from, ci(g, per), from);
		}
	LLVMValueRef c_at = acc ? part : fold ? elem(g, scratch, ci(g, at[2])) : elem(g, g->val[i].ptr, imul(g, s, imul(g, M, N)));
	LLVMValueRef Mp = M, Np = N, Kp = K, a_at = opnd[0], b_at = opnd[1], c_tile = c_at;
	Loop lt;
	if (!tile && stack_tiles(g, q, &tl) > 1) /* this product in tiles, one after another */
		tile = loop_begin(g, &lt, ci(g, tl.down * tl.across));
	else
		lt.body = NULL;
	if (tile && tl.depth > 1) { /* the inner dimension's [k0, k1): a partial sum of C, in g->extra */
		LLVMValueRef k0 = imin(g, imul(g, tile, ci(g, tl.deep)), K), k1 = imin(g, iadd(g, k0, ci(g, tl.deep)), K);
		Kp = LLVMBuildNSWSub(b, k1, k0, "");
		a_at = elem(g, opnd[0], k0);
		b_at = elem(g, opnd[1], imul(g, k0, ldb));
		c_tile = elem(g, g->extra, imul(g, tile, imul(g, M, N)));
	} else if (tile) { /* C's rows [r0, r1) and columns [c0, c1): those rows of op(A), those columns of op(B) */
		LLVMValueRef across = ci(g, tl.across), ti = LLVMBuildSDiv(b, tile, across, ""), tj = LLVMBuildSRem(b, tile, across, "");
		LLVMValueRef r0 = imin(g, imul(g, ti, ci(g, tl.rows)), M), r1 = imin(g, iadd(g, r0, ci(g, tl.rows)), M);
		LLVMValueRef c0 = imin(g, imul(g, tj, ci(g, tl.cols)), N), c1 = imin(g, iadd(g, c0, ci(g, tl.cols)), N);
		Mp = LLVMBuildNSWSub(b, r1, r0, ""), Np = LLVMBuildNSWSub(b, c1, c0, "");
		a_at = elem(g, opnd[0], ta ? r0 : imul(g, r0, lda));
		b_at = elem(g, opnd[1], tb ? imul(g, c0, ldb) : c0);
		c_tile = elem(g, c_at, iadd(g, imul(g, r0, N), c0));
	}
	LLVMValueRef beta = acc ? sel(g, LLVMBuildICmp(b, LLVMIntEQ, s, first, ""), cf(g, 0), cf(g, 1)) : cf(g, 0);
#define I32(v) LLVMBuildTrunc(b, (v), i32, "")
	LLVMValueRef args[14] = {
		LLVMConstInt(i32, CBLAS_ROW_MAJOR, 0), LLVMConstInt(i32, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, 0),
		LLVMConstInt(i32, tb ? CBLAS_TRANS : CBLAS_NO_TRANS, 0), I32(Mp), I32(Np), I32(Kp), cf(g, 1),
		a_at, I32(lda), b_at, I32(ldb), beta, c_tile, I32(N),
	};
#undef I32
	LLVMBuildCall2(b, fty, fn, args, 14, "");
	if (lt.body)
		loop_end(g, &lt, NULL);
	if (fold) { /* the product's planes summed into their images */
		const IrShape *w = shape_of(g, g->f->inst[u->epi].in[0]);
		int64_t per = mat_numel(sc) / (w->dim[2] * w->dim[3] * w->dim[4]);
		LLVMValueRef from = imul(g, s, ci(g, per));
		emit_window_at(g, u->epi, c_at, g->val[u->epi].ptr, from, ci(g, per), from);
	}
	loop_end(g, &l, NULL);
	loop_end(g, &lg, NULL);
}

/* dst[j] = the sum over c < parts of src[c MN + j], added in order, for j < MN. */
static void sum_partials(Cg *g, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef MN, LLVMValueRef parts)
{
	Loop lj, lc;
	LLVMValueRef j = loop_begin(g, &lj, MN);
	LLVMValueRef c = loop_begin(g, &lc, parts);
	LLVMValueRef acc = loop_acc(g, &lc, cf(g, 0));
	LLVMValueRef x = LLVMBuildLoad2(g->b, g->T, elem(g, src, iadd(g, imul(g, c, MN), j)), "");
	LLVMValueRef sum = loop_end(g, &lc, LLVMBuildFAdd(g->b, acc, x, ""));
	LLVMBuildStore(g->b, sum, elem(g, dst, j));
	loop_end(g, &lj, NULL);
}

/* A sum over the stack: out = its partial sums, added in order. */
static void emit_partials_sum(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	const IrShape *sc = &g->f->inst[u->inst[0]].shape;
	sum_partials(g, g->val[u->inst[0]].ptr, g->val[u->epi].ptr, ci(g, mat_numel(sc)), group_count(g, q));
}

static LLVMValueRef outline(Cg *g, int q, void (*piece)(Cg *g, int q), LLVMValueRef extra, LLVMValueRef *ctx);
static void run_split(Cg *g, LLVMValueRef fn, LLVMValueRef ctx, LLVMValueRef n, LLVMValueRef work);

/* A matrix product (unit q), or a stack of them. OpenBLAS threads one product, unless it is cut
 * into tiles (product_tiles); a stack of two or more is split across the pool's threads instead,
 * each product on one thread (small products gain little from OpenBLAS's threads and pay for
 * waking them every call). */
/* openblas_set_num_threads(n); returns the setting it replaced */
static LLVMValueRef set_blas_threads(Cg *g, LLVMValueRef n)
{
	LLVMTypeRef i32 = g->i32, vt = LLVMVoidTypeInContext(g->ctx);
	LLVMTypeRef getty = LLVMFunctionType(i32, NULL, 0, 0), setty = LLVMFunctionType(vt, &i32, 1, 0);
	LLVMValueRef get = LLVMGetNamedFunction(g->mod, "openblas_get_num_threads");
	LLVMValueRef set = LLVMGetNamedFunction(g->mod, "openblas_set_num_threads");
	if (!get)
		get = LLVMAddFunction(g->mod, "openblas_get_num_threads", getty);
	if (!set)
		set = LLVMAddFunction(g->mod, "openblas_set_num_threads", setty);
	LLVMValueRef old = LLVMBuildCall2(g->b, getty, get, NULL, 0, "blas.threads");
	LLVMBuildCall2(g->b, setty, set, &n, 1, "");
	return old;
}

static void emit_matmul(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	int i = u->inst[0];
	const IrInst *in = &g->f->inst[i];
	const IrShape *sa = shape_of(g, in->in[0]), *sc = &in->shape;
	int ta = in->attr.mm.ta, ra = sa->rank, rc = sc->rank;
	LLVMValueRef M = dimv(g, sc->dim[rc - 2]), N = dimv(g, sc->dim[rc - 1]);
	LLVMValueRef K = dimv(g, sa->dim[ra - (ta ? 2 : 1)]);

	/* OpenBLAS rejects lda < 1 even when there is nothing to read: an empty inner dimension gives
	 * zeros and an empty result nothing at all. */
	LLVMBuilderRef b = g->b;
	LLVMValueRef zero = ci(g, 0);
	LLVMValueRef mn = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGT, M, zero, ""), LLVMBuildICmp(b, LLVMIntSGT, N, zero, ""), "");
	LLVMValueRef ok = LLVMBuildAnd(b, mn, LLVMBuildICmp(b, LLVMIntSGT, K, zero, ""), "");
	LLVMBasicBlockRef call = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "gemm");
	LLVMBasicBlockRef empty = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "gemm.empty");
	LLVMBasicBlockRef zeros = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "gemm.zeros");
	LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "gemm.done");
	LLVMBuildCondBr(b, ok, call, empty);

	LLVMPositionBuilderAtEnd(b, call);
	IrShape stack = {0};
	for (int k = 0; k < rc - 2; k++)
		stack.dim[stack.rank++] = sc->dim[k];
	int64_t most = static_numel(g, &stack);
	int64_t macs = product_macs(g, q);
	Tiles tl;
	int64_t tiles = product_tiles(g, q, &tl);
	if (tiles > 1) { /* tiles on the pool's threads, OpenBLAS on one */
		LLVMValueRef part = NULL;
		if (tl.depth > 1) { /* the partial sums, on this thread's stack */
			LLVMBasicBlockRef here = LLVMGetInsertBlock(b);
			LLVMPositionBuilderBefore(b, LLVMGetFirstInstruction(LLVMGetEntryBasicBlock(g->fn)));
			part = LLVMBuildAlloca(b, LLVMArrayType2(g->T, (uint64_t)(tl.depth * static_numel(g, sc))), "partials");
			LLVMPositionBuilderAtEnd(b, here);
		}
		LLVMValueRef ctx, fn = outline(g, q, emit_gemms, part, &ctx);
		LLVMValueRef nt = set_blas_threads(g, LLVMConstInt(g->i32, 1, 0));
		run_split(g, fn, ctx, ci(g, tiles), ci(g, macs / 8));
		set_blas_threads(g, nt);
		if (part) /* C = the partial sums, added in order */
			sum_partials(g, part, g->val[i].ptr, imul(g, M, N), ci(g, tl.depth));
	} else if (((most < 2 || macs / 8 < NML_POOL_MIN_WORK) && (macs < BLAS_ONE_THREAD || g->deterministic))) {
		/* too small for OpenBLAS's threads to pay for waking, or to be summed the same way on
		 * any number of threads: on this thread alone */
		LLVMValueRef nt = set_blas_threads(g, LLVMConstInt(g->i32, 1, 0));
		emit_gemms(g, q);
		set_blas_threads(g, nt);
	} else if (most < 2 || macs / 8 < NML_POOL_MIN_WORK) {
		/* on OpenBLAS's threads: the pool's workers sleep rather than spin on their cores */
		LLVMTypeRef rty = LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), NULL, 0, 0);
		LLVMValueRef rest = LLVMGetNamedFunction(g->mod, "nml_pool_rest");
		if (!rest)
			rest = LLVMAddFunction(g->mod, "nml_pool_rest", rty);
		LLVMBuildCall2(b, rty, rest, NULL, 0, "");
		emit_gemms(g, q);
	} else { /* each product of the stack on one of the pool's threads, OpenBLAS on one meanwhile */
		LLVMValueRef ctx, fn = outline(g, q, emit_gemms, NULL, &ctx);
		LLVMValueRef S = numelv(g, &stack);
		LLVMValueRef work = LLVMBuildSDiv(b, imul(g, imul(g, S, M), imul(g, N, K)), ci(g, 8), "");
		LLVMValueRef nt = set_blas_threads(g, LLVMConstInt(g->i32, 1, 0));
		run_split(g, fn, ctx, group_count(g, q), work);
		set_blas_threads(g, nt);
	}
	if (u->epi >= 0 && g->f->inst[u->epi].op == IR_SUM)
		emit_partials_sum(g, q);
	LLVMBuildBr(b, done);

	/* no products: C is zeros, and so is what its fold or sum gives */
	LLVMPositionBuilderAtEnd(b, empty);
	LLVMBuildCondBr(b, mn, zeros, done);
	LLVMPositionBuilderAtEnd(b, zeros);
	int z = u->epi >= 0 ? u->epi : i;
	LLVMValueRef bytes = LLVMBuildMul(b, numelv(g, shape_of(g, z)), ci(g, g->type == CG_F32 ? 4 : 8), "");
	LLVMBuildMemSet(b, g->val[z].ptr, LLVMConstInt(g->i8, 0, 0), bytes, 1);
	LLVMBuildBr(b, done);
	LLVMPositionBuilderAtEnd(b, done);
}

/* out = a with its axes reordered: loops over out in order, each element read from a at the
 * strides of the axes it comes from. */
static void emit_permute(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	int a = in->in[0], rank = in->shape.rank;
	const IrShape *sa = shape_of(g, a);
	LLVMValueRef stride[IR_MAXRANK], st = ci(g, 1);
	for (int k = rank - 1; k >= 0; k--) { /* a's strides */
		stride[k] = st;
		st = imul(g, st, dimv(g, sa->dim[k]));
	}
	LLVMMetadataRef s = new_scope(g);
	Access wr = {scope_list(g, &s, 1), NULL}, rd = {NULL, wr.scope};
	Loop l[IR_MAXRANK];
	LLVMValueRef src = ci(g, 0), dst = ci(g, 0);
	for (int k = 0; k < rank; k++) {
		LLVMValueRef iv = loop_begin(g, &l[k], dimv(g, in->shape.dim[k]));
		src = iadd(g, src, imul(g, iv, stride[in->attr.perm.axis[k]]));
		dst = iadd(g, imul(g, dst, dimv(g, in->shape.dim[k])), iv);
	}
	LLVMValueRef v = kind_of(g, a) == FV_SCALAR ? imm(g, a) : load(g, elem(g, g->val[a].ptr, src), rd);
	store(g, v, elem(g, g->val[i].ptr, dst), wr);
	for (int k = rank - 1; k >= 0; k--)
		loop_end(g, &l[k], NULL);
}

/* Philox-4x32-10 (runtime/rng.c, nml_step_uniform) on (index, t, stream | 2^31) under the seed:
 * the first word's top 24 bits as a number in [0, 1), exact in float and double. */
static void emit_random(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	LLVMBuilderRef b = g->b;
	LLVMTypeRef i32 = g->i32;
	LLVMValueRef seed = g->arg[ARG_SEED];
	LLVMValueRef t = LLVMBuildTrunc(b, LLVMBuildFPToSI(b, g->arg[ARG_T], g->i64, ""), i32, "");
	LLVMValueRef k0 = LLVMBuildTrunc(b, seed, i32, ""), k1 = LLVMBuildTrunc(b, LLVMBuildLShr(b, seed, ci(g, 32), ""), i32, "");
	LLVMMetadataRef s = new_scope(g);
	Access wr = {scope_list(g, &s, 1), NULL};
	Loop l;
	LLVMValueRef e = loop_begin(g, &l, numelv(g, &in->shape));
	LLVMValueRef c[4] = {LLVMBuildTrunc(b, e, i32, ""), LLVMBuildTrunc(b, LLVMBuildLShr(b, e, ci(g, 32), ""), i32, ""), t,
			     LLVMConstInt(i32, in->attr.stream | 0x80000000u, 0)};
	LLVMValueRef key[2] = {k0, k1};
	const uint64_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
	for (int r = 0; r < 10; r++) {
		LLVMValueRef p0 = LLVMBuildMul(b, LLVMConstInt(g->i64, M0, 0), LLVMBuildZExt(b, c[0], g->i64, ""), "");
		LLVMValueRef p1 = LLVMBuildMul(b, LLVMConstInt(g->i64, M1, 0), LLVMBuildZExt(b, c[2], g->i64, ""), "");
		LLVMValueRef h0 = LLVMBuildTrunc(b, LLVMBuildLShr(b, p0, ci(g, 32), ""), i32, "");
		LLVMValueRef h1 = LLVMBuildTrunc(b, LLVMBuildLShr(b, p1, ci(g, 32), ""), i32, "");
		LLVMValueRef n0 = LLVMBuildXor(b, LLVMBuildXor(b, h1, c[1], ""), key[0], "");
		LLVMValueRef n2 = LLVMBuildXor(b, LLVMBuildXor(b, h0, c[3], ""), key[1], "");
		c[1] = LLVMBuildTrunc(b, p1, i32, "");
		c[3] = LLVMBuildTrunc(b, p0, i32, "");
		c[0] = n0;
		c[2] = n2;
		key[0] = LLVMBuildAdd(b, key[0], LLVMConstInt(i32, W0, 0), "");
		key[1] = LLVMBuildAdd(b, key[1], LLVMConstInt(i32, W1, 0), "");
	}
	LLVMValueRef bits = LLVMBuildLShr(b, c[0], LLVMConstInt(i32, 8, 0), "");
	LLVMValueRef u = LLVMBuildFMul(b, LLVMBuildUIToFP(b, bits, g->T, ""), cf(g, 0x1p-24), "");
	store(g, u, elem(g, g->val[i].ptr, e), wr);
	loop_end(g, &l, NULL);
}

/* unfold: each window element (b, c, kh, kw, oh, ow) reads image pixel (b, c, h, w), or padding;
 * fold: the output image starts at zero and each window element adds into the pixel it covers.
 * Of the planes (b, c) [start, start + count) only; src and dst are where unfold i's image and
 * windows are (fold: its windows and image), the windows' plane `base` the first element of theirs
 * (0, or start for a block of them in scratch). */
static void emit_window_at(Cg *g, int i, LLVMValueRef src, LLVMValueRef dst, LLVMValueRef start, LLVMValueRef count,
			   LLVMValueRef base)
{
	const IrInst *in = &g->f->inst[i];
	int fold = in->op == IR_FOLD, a = in->in[0];
	const IrShape *win = fold ? shape_of(g, a) : &in->shape;
	const IrAttr *w = &in->attr;
	LLVMBuilderRef b = g->b;
	LLVMValueRef H = ci(g, w->win.in[0]), W = ci(g, w->win.in[1]), OH = ci(g, win->dim[3]), OW = ci(g, win->dim[4]);
	LLVMValueRef KH = ci(g, w->win.k[0]), KW = ci(g, w->win.k[1]);
	LLVMMetadataRef s = new_scope(g);
	Access wr = {scope_list(g, &s, 1), NULL}, rd = {NULL, wr.scope};
	/* Windows that tile the image (pooling whose stride is its window, no padding): each pixel is
	 * in exactly one window, so none is outside and a fold writes each once, with nothing to clear
	 * or add to. */
	int tiles = 1;
	for (int ax = 0; ax < 2; ax++)
		tiles &= w->win.s[ax] == w->win.k[ax] && w->win.d[ax] == 1 && w->win.p[ax] == 0
			 && (int64_t)w->win.k[ax] * win->dim[3 + ax] == w->win.in[ax];
	if (fold && !tiles)
		LLVMBuildMemSet(b, elem(g, dst, imul(g, start, imul(g, H, W))), LLVMConstInt(g->i8, 0, 0),
				LLVMBuildMul(b, imul(g, count, imul(g, H, W)), ci(g, g->type == CG_F32 ? 4 : 8), ""), 1);
	Loop l[5];
	LLVMValueRef bc = iadd(g, loop_begin(g, &l[0], count), start);
	LLVMValueRef kh = loop_begin(g, &l[1], KH);
	LLVMValueRef kw = loop_begin(g, &l[2], KW);
	LLVMValueRef oh = loop_begin(g, &l[3], OH);
	LLVMValueRef h = iadd(g, LLVMBuildNSWSub(b, imul(g, oh, ci(g, w->win.s[0])), ci(g, w->win.p[0]), ""),
			      imul(g, kh, ci(g, w->win.d[0])));
	LLVMValueRef ow = loop_begin(g, &l[4], OW);
	LLVMValueRef x = iadd(g, LLVMBuildNSWSub(b, imul(g, ow, ci(g, w->win.s[1])), ci(g, w->win.p[1]), ""),
			      imul(g, kw, ci(g, w->win.d[1])));
	/* unsigned compares: a negative row or column is outside too */
	LLVMValueRef inside = tiles ? LLVMConstInt(LLVMInt1TypeInContext(g->ctx), 1, 0)
				    : LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntULT, h, H, ""), LLVMBuildICmp(b, LLVMIntULT, x, W, ""), "");
	LLVMValueRef px = iadd(g, imul(g, iadd(g, imul(g, bc, H), h), W), x);
	px = sel(g, inside, px, ci(g, 0)); /* a padding element reads nothing */
	LLVMValueRef bw = LLVMBuildNSWSub(b, bc, base, "");
	LLVMValueRef e = iadd(g, imul(g, iadd(g, imul(g, iadd(g, imul(g, iadd(g, imul(g, bw, KH), kh), KW), kw), OH), oh), OW), ow);
	if (!fold) {
		LLVMValueRef v = load(g, elem(g, src, px), rd);
		store(g, sel(g, inside, v, cf(g, w->win.neg_inf ? -INFINITY : 0)), elem(g, dst, e), wr);
	} else if (tiles) { /* 0 + add, as the sum into a cleared image would be (-0 becomes +0) */
		store(g, LLVMBuildFAdd(b, cf(g, 0), load(g, elem(g, src, e), rd), ""), elem(g, dst, px), wr);
	} else {
		LLVMValueRef add = load(g, elem(g, src, e), rd);
		LLVMValueRef at = elem(g, dst, px);
		LLVMValueRef old = load(g, at, wr);
		store(g, sel(g, inside, LLVMBuildFAdd(b, old, add, ""), old), at, wr);
	}
	for (int k = 4; k >= 0; k--)
		loop_end(g, &l[k], NULL);
}

/* Unfold or fold i: all its planes, or [lo, hi) of them in a piece split across threads. */
static void emit_window(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	const IrShape *win = in->op == IR_FOLD ? shape_of(g, in->in[0]) : &in->shape;
	LLVMValueRef start = ci(g, 0), count = imul(g, dimv(g, win->dim[0]), ci(g, win->dim[1]));
	if (g->split.on) {
		start = g->split.lo;
		count = LLVMBuildNSWSub(g->b, g->split.hi, g->split.lo, "");
	}
	emit_window_at(g, i, g->val[in->in[0]].ptr, g->val[i].ptr, start, count, ci(g, 0));
}

/* slice: loops over out; along the axis each element reads a at i + offset, or 0 outside a.
 * argmax: loops over out (the axis of size 1), each a scan along a's axis for the first maximum. */
static void emit_slice_argmax(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	int a = in->in[0], rank = in->shape.rank, slice = in->op == IR_SLICE;
	int ax = slice ? in->attr.range.axis : __builtin_ctz(in->attr.axes);
	const IrShape *sa = shape_of(g, a);
	LLVMBuilderRef b = g->b;
	LLVMValueRef stride[IR_MAXRANK], st = ci(g, 1);
	for (int k = rank - 1; k >= 0; k--) {
		stride[k] = st;
		st = imul(g, st, dimv(g, sa->dim[k]));
	}
	LLVMValueRef len = dimv(g, sa->dim[ax]);
	LLVMMetadataRef s = new_scope(g);
	Access wr = {scope_list(g, &s, 1), NULL}, rd = {NULL, wr.scope};
	Loop l[IR_MAXRANK];
	LLVMValueRef src = ci(g, 0), dst = ci(g, 0), pos = NULL;
	for (int k = 0; k < rank; k++) {
		LLVMValueRef iv = loop_begin(g, &l[k], dimv(g, in->shape.dim[k]));
		dst = iadd(g, imul(g, dst, dimv(g, in->shape.dim[k])), iv);
		if (k == ax)
			pos = slice ? iadd(g, iv, ci(g, in->attr.range.offset)) : iv;
		else
			src = iadd(g, src, imul(g, iv, stride[k]));
	}
	LLVMValueRef out = elem(g, g->val[i].ptr, dst);
	if (slice) {
		LLVMValueRef inside = LLVMBuildICmp(b, LLVMIntULT, pos, len, "");
		LLVMValueRef at = sel(g, inside, iadd(g, src, imul(g, pos, stride[ax])), src);
		store(g, sel(g, inside, load(g, elem(g, g->val[a].ptr, at), rd), cf(g, 0)), out, wr);
	} else { /* best starts at element 0; j from 1 replaces it when strictly larger */
		LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
		LLVMValueRef first = load(g, elem(g, g->val[a].ptr, src), rd);
		LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "argmax");
		LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "argmax.body");
		LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "argmax.done");
		LLVMBuildBr(b, head);
		LLVMPositionBuilderAtEnd(b, head);
		LLVMValueRef j = LLVMBuildPhi(b, g->i64, "j"), bv = LLVMBuildPhi(b, g->T, "best"), bi = LLVMBuildPhi(b, g->i64, "at");
		LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, j, len, ""), body, done);
		LLVMPositionBuilderAtEnd(b, body);
		LLVMValueRef v = load(g, elem(g, g->val[a].ptr, iadd(g, src, imul(g, j, stride[ax]))), rd);
		LLVMValueRef gt = fcmp(g, LLVMRealOGT, v, bv);
		LLVMValueRef nv = sel(g, gt, v, bv), ni = sel(g, gt, j, bi), nj = LLVMBuildNSWAdd(b, j, ci(g, 1), "");
		LLVMBuildBr(b, head);
		LLVMAddIncoming(j, (LLVMValueRef[]){ci(g, 1), nj}, (LLVMBasicBlockRef[]){pre, body}, 2);
		LLVMAddIncoming(bv, (LLVMValueRef[]){first, nv}, (LLVMBasicBlockRef[]){pre, body}, 2);
		LLVMAddIncoming(bi, (LLVMValueRef[]){ci(g, 0), ni}, (LLVMBasicBlockRef[]){pre, body}, 2);
		LLVMPositionBuilderAtEnd(b, done);
		store(g, LLVMBuildSIToFP(b, bi, g->T, ""), out, wr);
	}
	for (int k = rank - 1; k >= 0; k--)
		loop_end(g, &l[k], NULL);
}

/* Element e of value a as read by a loop op: a uniform value is its scalar. */
static LLVMValueRef read_at(Cg *g, int a, LLVMValueRef e, Access rd)
{
	return kind_of(g, a) == FV_SCALAR ? imm(g, a) : load(g, elem(g, g->val[a].ptr, e), rd);
}

/* out[i, j] = j == a[i], over every index i of a */
static void emit_onehot(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	int a = in->in[0];
	LLVMValueRef out = g->val[i].ptr, k = ci(g, in->attr.classes);
	LLVMMetadataRef s = new_scope(g);
	Access wr = {scope_list(g, &s, 1), NULL}, rd = {NULL, wr.scope};
	Loop rows, cols;
	LLVMValueRef r = loop_begin(g, &rows, numelv(g, shape_of(g, a)));
	LLVMValueRef c = read_at(g, a, r, rd);
	LLVMValueRef j = loop_begin(g, &cols, k);
	LLVMValueRef hit = flag(g, LLVMRealOEQ, LLVMBuildSIToFP(g->b, j, g->T, ""), c);
	store(g, hit, elem(g, out, iadd(g, imul(g, r, k), j)), wr);
	loop_end(g, &cols, NULL);
	loop_end(g, &rows, NULL);
}

/* gather: out[m, j] = table[idx[m], j], 0 for an index outside the table; scatter: out starts at
 * zero and out[idx[m], j] += a[m, j]. A row is everything after the indexed axis. */
static void emit_gather_scatter(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	int gather = in->op == IR_GATHER, a = in->in[0], ix = in->in[1];
	LLVMBuilderRef b = g->b;
	int64_t rows = gather ? shape_of(g, a)->dim[0] : in->attr.classes;
	LLVMValueRef row = LLVMBuildSDiv(b, numelv(g, gather ? shape_of(g, a) : &in->shape), ci(g, rows), "row");
	LLVMValueRef out = g->val[i].ptr;
	LLVMMetadataRef s = new_scope(g);
	Access wr = {scope_list(g, &s, 1), NULL}, rd = {NULL, wr.scope};
	if (!gather)
		LLVMBuildMemSet(b, out, LLVMConstInt(g->i8, 0, 0),
				LLVMBuildMul(b, numelv(g, &in->shape), ci(g, g->type == CG_F32 ? 4 : 8), ""), 1);
	Loop lm, lj;
	LLVMValueRef m = loop_begin(g, &lm, numelv(g, shape_of(g, ix)));
	LLVMValueRef v = read_at(g, ix, m, rd);
	/* a whole number in [0, rows): compares on the float, so NaN and fractions are outside */
	LLVMValueRef r = LLVMBuildFPToSI(b, v, g->i64, "");
	LLVMValueRef inside = LLVMBuildAnd(b, fcmp(g, LLVMRealOGE, v, cf(g, 0)), fcmp(g, LLVMRealOLT, v, cf(g, (double)rows)), "");
	inside = LLVMBuildAnd(b, inside, fcmp(g, LLVMRealOEQ, v, LLVMBuildSIToFP(b, sel(g, inside, r, ci(g, 0)), g->T, "")), "");
	r = sel(g, inside, r, ci(g, 0));
	LLVMValueRef j = loop_begin(g, &lj, row);
	LLVMValueRef at_m = iadd(g, imul(g, m, row), j), at_r = iadd(g, imul(g, r, row), j);
	if (gather) {
		store(g, sel(g, inside, read_at(g, a, at_r, rd), cf(g, 0)), elem(g, out, at_m), wr);
	} else {
		LLVMValueRef at = elem(g, out, at_r), old = load(g, at, wr);
		store(g, sel(g, inside, LLVMBuildFAdd(b, old, read_at(g, a, at_m, rd), ""), old), at, wr);
	}
	loop_end(g, &lj, NULL);
	loop_end(g, &lm, NULL);
}

/* segsum: for each segment [lo, hi) of axis 0 and each column j, the sum over the segment's rows,
 * written to each of them. */
static void emit_segsum(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	int a = in->in[0];
	LLVMBuilderRef b = g->b;
	LLVMValueRef rows = dimv(g, in->shape.dim[0]), seg = ci(g, in->attr.segment);
	LLVMValueRef row = LLVMBuildSDiv(b, numelv(g, &in->shape), sel(g, LLVMBuildICmp(b, LLVMIntSGT, rows, ci(g, 0), ""), rows, ci(g, 1)), "row");
	LLVMValueRef nseg = LLVMBuildSDiv(b, iadd(g, rows, ci(g, in->attr.segment - 1)), seg, "");
	LLVMMetadataRef s = new_scope(g);
	Access wr = {scope_list(g, &s, 1), NULL}, rd = {NULL, wr.scope};
	Loop lq, lj, lr, lw;
	LLVMValueRef q = loop_begin(g, &lq, nseg);
	LLVMValueRef lo = imul(g, q, seg), left = LLVMBuildNSWSub(b, rows, lo, "");
	LLVMValueRef len = sel(g, LLVMBuildICmp(b, LLVMIntSLT, left, seg, ""), left, seg);
	LLVMValueRef j = loop_begin(g, &lj, row);
	LLVMValueRef r = loop_begin(g, &lr, len);
	LLVMValueRef acc = loop_acc(g, &lr, cf(g, 0));
	LLVMValueRef sum = loop_end(g, &lr, LLVMBuildFAdd(b, acc, read_at(g, a, iadd(g, imul(g, iadd(g, lo, r), row), j), rd), ""));
	LLVMValueRef w = loop_begin(g, &lw, len);
	store(g, sum, elem(g, g->val[i].ptr, iadd(g, imul(g, iadd(g, lo, w), row), j)), wr);
	loop_end(g, &lw, NULL);
	loop_end(g, &lj, NULL);
	loop_end(g, &lq, NULL);
}

/* eigh: a call into the runtime (nml_eigh_f32 / _f64, LAPACK): out = eigenvectors of a, or b */
static void emit_eigh(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	LLVMTypeRef pt[5] = {g->i64, g->ptr, g->ptr, LLVMDoubleTypeInContext(g->ctx), g->ptr};
	LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), pt, 5, 0);
	const char *name = g->type == CG_F32 ? "nml_eigh_f32" : "nml_eigh_f64";
	LLVMValueRef fn = LLVMGetNamedFunction(g->mod, name);
	if (!fn)
		fn = LLVMAddFunction(g->mod, name, fty);
	int c = in->in[2];
	LLVMValueRef when = kind_of(g, c) == FV_SCALAR ? g->val[c].imm : load(g, g->val[c].ptr, (Access){NULL, NULL});
	if (LLVMTypeOf(when) != LLVMDoubleTypeInContext(g->ctx))
		when = LLVMBuildFPExt(g->b, when, LLVMDoubleTypeInContext(g->ctx), "");
	LLVMValueRef args[5] = {ci(g, in->shape.dim[0]), g->val[in->in[0]].ptr, g->val[in->in[1]].ptr, when, g->val[i].ptr};
	LLVMBuildCall2(g->b, fty, fn, args, 5, "");
}

/* ---- threads: units split across the runtime's pool (runtime/pool.c) ----
 *
 * A unit to split becomes a function of its own, `void kernel.uQ(NmlArgs *args, double *ctx,
 * int64_t lo, int64_t hi)`, that runs indices [lo, hi) of its first axis (a nest) or of its stack
 * (matrix products); the kernel stores the scalars the unit reads in ctx and hands the function to
 * nml_pool_for, which runs it in pieces on the pool's threads, or whole on the calling thread when
 * the unit is small. Pieces write disjoint elements, and each element is computed by the same
 * instructions whatever the pieces are, so results do not depend on the number of threads. */

/* Elements of s at the largest batch; a bound for deciding whether a unit is worth splitting. */
static int64_t static_numel(Cg *g, const IrShape *s)
{
	int64_t k = 1;
	for (int i = 0; i < s->rank; i++)
		k *= s->dim[i] == IR_BATCH ? g->max_batch : s->dim[i];
	return k;
}

static LLVMTypeRef args_type(Cg *g);

static void load_args(Cg *g)
{
	static const char *names[ARG_COUNT] = {
#define NML_X(name, str, layout, kind) [NML_B_##name] = str,
		NML_BLOCKS(NML_X)
#undef NML_X
		[ARG_HPARAMS] = "hparams", [ARG_N] = "n", [ARG_T] = "t", [ARG_SEED] = "seed",
	};
	LLVMTypeRef at = args_type(g);
	for (int i = 0; i < ARG_COUNT; i++) {
		LLVMTypeRef ft = LLVMStructGetTypeAtIndex(at, (unsigned)i);
		g->arg[i] = LLVMBuildLoad2(g->b, ft, LLVMBuildStructGEP2(g->b, at, g->args, (unsigned)i, ""), names[i]);
	}
}

/* Points value v at its storage, from this function's arguments. */
static void repoint(Cg *g, int v)
{
	int r = fuse_root(g->plan, g->f, v);
	const IrInst *in = &g->f->inst[r];
	if (g->plan->val[r].region) {
		LLVMValueRef off = ci(g, (int64_t)g->plan->val[r].off);
		g->val[v].ptr = LLVMBuildInBoundsGEP2(g->b, g->i8, g->arg[NML_B_WORK], &off, 1, "");
	} else if (in->op == IR_LOAD) {
		g->val[v].ptr = slot_ptr(g, in->attr.slot.block, in->attr.slot.index);
	}
}

/* Unit q as a function of its own, emitted by piece with g->split on; *ctx is where the kernel
 * stored the scalars it reads, and the pointer extra (unless NULL) after them, which the function
 * finds in g->extra (emitted here, before the call). */
static LLVMValueRef outline(Cg *g, int q, void (*piece)(Cg *g, int q), LLVMValueRef extra, LLVMValueRef *ctx)
{
	const FuseUnit *u = &g->plan->unit[q];
	const IrFunc *f = g->f;
	LLVMBuilderRef b = g->b;
	int *sc = malloc((size_t)(3 * u->n + 1) * sizeof *sc), nsc = 0;
	if (!sc)
		die("out of memory");
	for (int x = 0; x < u->n; x++) {
		const IrInst *in = &f->inst[u->inst[x]];
		for (int j = 0; j < ir_op_arity(in->op); j++) {
			int a = in->in[j], seen = 0;
			for (int k = 0; k < nsc && !seen; k++)
				seen = sc[k] == a;
			if (!seen && kind_of(g, a) == FV_SCALAR)
				sc[nsc++] = a;
		}
	}
	LLVMTypeRef arr = LLVMArrayType2(g->f64, (uint64_t)nsc + 1);
	LLVMBasicBlockRef here = LLVMGetInsertBlock(b);
	LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(g->fn);
	LLVMPositionBuilderBefore(b, LLVMGetFirstInstruction(entry));
	*ctx = LLVMBuildAlloca(b, arr, "ctx");
	LLVMPositionBuilderAtEnd(b, here);
	for (int k = 0; k < nsc; k++)
		LLVMBuildStore(b, g->val[sc[k]].imm, LLVMBuildInBoundsGEP2(b, g->f64, *ctx, (LLVMValueRef[]){ci(g, k)}, 1, ""));
	if (extra)
		LLVMBuildStore(b, extra, LLVMBuildInBoundsGEP2(b, g->f64, *ctx, (LLVMValueRef[]){ci(g, nsc)}, 1, ""));

	char name[300];
	snprintf(name, sizeof name, "%s.u%d", g->kname, q);
	LLVMTypeRef pt[4] = {g->ptr, g->ptr, g->i64, g->i64};
	LLVMValueRef fn = LLVMAddFunction(g->mod, name, LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), pt, 4, 0));
	LLVMSetLinkage(fn, LLVMInternalLinkage);
	unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
	LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, nounwind, 0));

	Cg saved = *g;
	Val *vals = malloc((size_t)(f->n ? f->n : 1) * sizeof *vals);
	if (!vals)
		die("out of memory");
	memcpy(vals, g->val, (size_t)f->n * sizeof *vals);
	g->fn = fn;
	LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(g->ctx, fn, "entry"));
	g->args = LLVMGetParam(fn, 0);
	load_args(g);
	LLVMValueRef cx = LLVMGetParam(fn, 1);
	for (int k = 0; k < nsc; k++)
		g->val[sc[k]].imm = LLVMBuildLoad2(b, g->f64, LLVMBuildInBoundsGEP2(b, g->f64, cx, (LLVMValueRef[]){ci(g, k)}, 1, ""), "");
	if (extra)
		g->extra = LLVMBuildLoad2(b, g->ptr, LLVMBuildInBoundsGEP2(b, g->f64, cx, (LLVMValueRef[]){ci(g, nsc)}, 1, ""), "");
	for (int x = 0; x < u->n; x++) {
		const IrInst *in = &f->inst[u->inst[x]];
		repoint(g, u->inst[x]);
		for (int j = 0; j < ir_op_arity(in->op); j++) /* a scalar a matmul or loop reads is in memory */
			if (kind_of(g, in->in[j]) != FV_SCALAR || g->plan->val[in->in[j]].region)
				repoint(g, in->in[j]);
	}
	for (int j = 0; u->kind == FU_LIBRARY && j < 2; j++) /* the images of windows it unfolds */
		if (u->window[j] >= 0)
			repoint(g, f->inst[u->window[j]].in[0]);
	g->split.on = g->split.rows = 1;
	g->split.lo = LLVMGetParam(fn, 2);
	g->split.hi = LLVMGetParam(fn, 3);
	piece(g, q);
	LLVMBuildRetVoid(b);

	memcpy(g->val, vals, (size_t)f->n * sizeof *vals);
	free(vals);
	free(sc);
	saved.nscopes = g->nscopes; /* scope names stay unique in the kernel */
	*g = saved;
	LLVMPositionBuilderAtEnd(b, here);
	return fn;
}

/* nml_pool_for(fn, args, ctx, n, work, threads) */
static void run_split(Cg *g, LLVMValueRef fn, LLVMValueRef ctx, LLVMValueRef n, LLVMValueRef work)
{
	LLVMTypeRef pt[6] = {g->ptr, g->ptr, g->ptr, g->i64, g->i64, g->i32};
	LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), pt, 6, 0);
	LLVMValueRef pool = LLVMGetNamedFunction(g->mod, "nml_pool_for");
	if (!pool)
		pool = LLVMAddFunction(g->mod, "nml_pool_for", fty);
	LLVMValueRef a[6] = {fn, g->args, ctx, n, work, g->threads};
	LLVMBuildCall2(g->b, fty, pool, a, 6, "");
}

/* A reduction over the axis a nest would be split on runs in chunks of that axis fixed by the shapes
 * alone (about CHUNK elements each, whole rows): each chunk reduces into a partial result of its own,
 * in any thread, and the kernel combines the partials in chunk order. So the sums are the same on
 * any number of threads (they differ from one unchunked loop's by reassociation only). */
enum { CHUNK = 16384 };
enum { OUTLINE_OPS = 8192 }; /* more ops than this in a kernel: its small nests become functions */

/* Chunks [lo, hi) of unit q, each reducing into its partial result in g->extra. */
static void emit_chunks(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	int a0 = 0;
	while (u->space.dim[a0] == 1)
		a0++;
	LLVMBuilderRef b = g->b;
	LLVMValueRef lo = g->split.lo, D = dimv(g, u->space.dim[a0]), R = ci(g, g->chunk_rows);
	LLVMValueRef K = numelv(g, &g->f->inst[u->red].shape);
	Loop l;
	LLVMValueRef c = iadd(g, loop_begin(g, &l, LLVMBuildNSWSub(b, g->split.hi, lo, "")), lo);
	LLVMValueRef first = imul(g, c, R), end = iadd(g, first, R);
	end = sel(g, LLVMBuildICmp(b, LLVMIntSLT, end, D, ""), end, D);
	LLVMValueRef out[FUSE_MAX_RED];
	for (int k = 0; k < u->nred; k++) { /* reduction k's partials: a block of g->chunk_block */
		out[k] = g->val[u->reds[k]].ptr;
		g->val[u->reds[k]].ptr = elem(g, g->extra, iadd(g, ci(g, k * g->chunk_block), imul(g, c, K)));
	}
	g->split.rows = 0;
	g->split.lo = first;
	g->split.hi = end;
	emit_nest(g, q);
	for (int k = 0; k < u->nred; k++)
		g->val[u->reds[k]].ptr = out[k];
	loop_end(g, &l, NULL);
}

/* A nest too small to split for its own sake that reads a product run in tiles on the pool (the
 * update after a weight gradient): split by rows all the same, so that each thread updates the rows
 * of the gradient it computed, in its own cache (inner_tiles; the pool gives each thread the same
 * share of a loop's pieces every time). Not below AFFINE_MIN elements, where a loop on the pool
 * costs more than it saves. */
enum { AFFINE_MIN = 16384 };
static int affine_split(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	if (static_numel(g, &u->space) < AFFINE_MIN || split_axis(g, u) < 0)
		return 0;
	for (int x = 0; x < u->n; x++) {
		const IrInst *in = &g->f->inst[u->inst[x]];
		for (int j = 0; j < ir_op_arity(in->op); j++) {
			int p = g->plan->val[in->in[j]].unit;
			if (p >= 0 && p != q && product_tiles(g, p, NULL) > 1)
				return 1;
		}
	}
	return 0;
}

/* A nest worth splitting: one with enough elements and an axis to split on, kept (split_axis) or
 * reduced in chunks (emit_chunks). */
static void emit_nest_unit(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	int a0 = 0;
	while (a0 < u->space.rank && u->space.dim[a0] == 1)
		a0++;
	if (a0 < u->space.rank && !u->nred && g->f->n > OUTLINE_OPS && static_numel(g, &u->space) < NML_POOL_MIN_WORK) {
		/* A huge kernel (a model of thousands of small tensors): each small nest its own
		 * function, called whole, so that LLVM optimizes and schedules many small functions
		 * rather than one straight-line block of all of them, which takes it minutes. */
		LLVMValueRef ctx, fn = outline(g, q, emit_nest, NULL, &ctx);
		unsigned noinline = LLVMGetEnumAttributeKindForName("noinline", 8);
		LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, noinline, 0));
		LLVMTypeRef pt[4] = {g->ptr, g->ptr, g->i64, g->i64};
		LLVMValueRef a[4] = {g->args, ctx, ci(g, 0), dimv(g, u->space.dim[a0])};
		LLVMBuildCall2(g->b, LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), pt, 4, 0), fn, a, 4, "");
		return;
	}
	int affine = a0 < u->space.rank && affine_split(g, q);
	if (a0 == u->space.rank || (static_numel(g, &u->space) < NML_POOL_MIN_WORK && !affine)) {
		emit_nest(g, q);
		return;
	}
	if (split_axis(g, u) >= 0) {
		LLVMValueRef ctx, fn = outline(g, q, emit_nest, NULL, &ctx);
		LLVMValueRef work = numelv(g, &u->space);
		if (affine) /* at least what the pool splits */
			work = sel(g, LLVMBuildICmp(g->b, LLVMIntSLT, work, ci(g, NML_POOL_MIN_WORK), ""), ci(g, NML_POOL_MIN_WORK), work);
		run_split(g, fn, ctx, dimv(g, u->space.dim[a0]), work);
		return;
	}
	/* the reduction reduces the first axis: chunks, when the rest of a row has a size known now */
	IrShape kept = {0};
	int64_t row_n = 1;
	for (int a = a0 + 1; a < u->space.rank && row_n > 0; a++)
		row_n = u->space.dim[a] == IR_BATCH ? -1 : row_n * u->space.dim[a];
	for (int a = 0; a < u->space.rank; a++)
		if (!(u->red_axes >> a & 1))
			kept.dim[kept.rank++] = u->space.dim[a];
	int64_t rows = row_n > 0 ? (CHUNK + row_n - 1) / row_n : 0;
	int64_t most = rows ? (static_numel(g, &(IrShape){.rank = 1, .dim = {u->space.dim[a0]}}) + rows - 1) / rows : 0;
	int64_t block = most * static_numel(g, &kept);
	if (row_n < 0 || most < 2 || u->nred * block > MAX_PARTIALS) {
		emit_nest(g, q);
		return;
	}
	LLVMBuilderRef b = g->b;
	LLVMBasicBlockRef here = LLVMGetInsertBlock(b);
	LLVMPositionBuilderBefore(b, LLVMGetFirstInstruction(LLVMGetEntryBasicBlock(g->fn)));
	LLVMValueRef part = LLVMBuildAlloca(b, LLVMArrayType2(g->T, (uint64_t)(u->nred * block)), "partials");
	LLVMPositionBuilderAtEnd(b, here);

	LLVMValueRef K = numelv(g, &kept), ctx;
	g->chunk_rows = rows;
	g->chunk_block = block;
	LLVMValueRef fn = outline(g, q, emit_chunks, part, &ctx);
	LLVMValueRef D = dimv(g, u->space.dim[a0]);
	LLVMValueRef n = LLVMBuildSDiv(b, iadd(g, D, ci(g, rows - 1)), ci(g, rows), "chunks");
	run_split(g, fn, ctx, n, numelv(g, &u->space));

	/* out[j] = the partials of j, in chunk order */
	for (int k = 0; k < u->nred; k++) {
		IrOp op = g->f->inst[u->reds[k]].op;
		Loop lj, lc;
		LLVMValueRef j = loop_begin(g, &lj, K);
		LLVMValueRef c = loop_begin(g, &lc, n);
		LLVMValueRef acc = loop_acc(g, &lc, cf(g, op == IR_MAX ? -INFINITY : 0));
		LLVMValueRef x = LLVMBuildLoad2(b, g->T, elem(g, part, iadd(g, ci(g, k * block), iadd(g, imul(g, c, K), j))), "");
		LLVMValueRef sum = loop_end(g, &lc, reduce_step(g, op, acc, x, 0));
		LLVMBuildStore(b, sum, elem(g, g->val[u->reds[k]].ptr, j));
		loop_end(g, &lj, NULL);
	}
}

static void emit_window_piece(Cg *g, int q) { emit_window(g, g->plan->unit[q].inst[0]); }

/* unfold and fold split by image and channel: each writes its own windows or image planes */
static void emit_window_unit(Cg *g, int q)
{
	const IrInst *in = &g->f->inst[g->plan->unit[q].inst[0]];
	const IrShape *win = in->op == IR_FOLD ? shape_of(g, in->in[0]) : &in->shape;
	if (static_numel(g, win) < NML_POOL_MIN_WORK) {
		emit_window(g, g->plan->unit[q].inst[0]);
		return;
	}
	LLVMValueRef ctx, fn = outline(g, q, emit_window_piece, NULL, &ctx);
	run_split(g, fn, ctx, imul(g, dimv(g, win->dim[0]), ci(g, win->dim[1])), numelv(g, win));
}

/* ---- kernels ---- */

static void emit_unit(Cg *g, int q)
{
	const FuseUnit *u = &g->plan->unit[q];
	switch (u->kind) {
	case FU_NONE: emit_value(g, u->inst[0]); break;
	case FU_NEST: emit_nest_unit(g, q); break;
	case FU_LIBRARY: emit_matmul(g, q); break;
	case FU_LOOP:
		switch (g->f->inst[u->inst[0]].op) {
		case IR_PERMUTE: emit_permute(g, u->inst[0]); break;
		case IR_RANDOM: emit_random(g, u->inst[0]); break;
		case IR_UNFOLD: case IR_FOLD: emit_window_unit(g, q); break;
		case IR_SLICE: case IR_ARGMAX: emit_slice_argmax(g, u->inst[0]); break;
		case IR_GATHER: case IR_SCATTER: emit_gather_scatter(g, u->inst[0]); break;
		case IR_SEGSUM: emit_segsum(g, u->inst[0]); break;
		case IR_EIGH: emit_eigh(g, u->inst[0]); break;
		default: emit_onehot(g, u->inst[0]); break;
		}
		break;
	}
}

static LLVMTypeRef args_type(Cg *g)
{
	LLVMTypeRef f[ARG_COUNT];
	for (int i = 0; i < ARG_N; i++)
		f[i] = g->ptr;
	f[ARG_N] = g->i64;
	f[ARG_T] = LLVMDoubleTypeInContext(g->ctx);
	f[ARG_SEED] = g->i64;
	return LLVMStructTypeInContext(g->ctx, f, ARG_COUNT, 0);
}


static void emit_kernel(Cg *g, CgKernel *k, int64_t max_batch)
{
	g->f = k->fn;
	g->max_batch = max_batch;
	g->deterministic = k->deterministic;
	g->tiles = k->pieces == 2 ? 0 : k->pieces ? k->pieces : g->type == CG_F32 && blas_direct() ? 1 : 0;
	g->kname = k->name;
	g->nscopes = 0;
	char dom[256];
	int len = snprintf(dom, sizeof dom, "nml.%s", k->name);
	LLVMMetadataRef name = LLVMMDStringInContext2(g->ctx, dom, (size_t)len);
	g->domain = LLVMMDNodeInContext2(g->ctx, &name, 1);

	LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), &g->ptr, 1, 0);
	g->fn = LLVMAddFunction(g->mod, k->name, fty);
	unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
	LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, nounwind, 0));
	LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->ctx, g->fn, "entry"));

	g->args = LLVMGetParam(g->fn, 0);
	LLVMSetValueName2(g->args, "args", 4);
	load_args(g);
	/* the thread setting is OpenBLAS's (nmlc run --threads, OPENBLAS_NUM_THREADS): one for both */
	LLVMTypeRef getty = LLVMFunctionType(g->i32, NULL, 0, 0);
	LLVMValueRef get = LLVMGetNamedFunction(g->mod, "openblas_get_num_threads");
	if (!get)
		get = LLVMAddFunction(g->mod, "openblas_get_num_threads", getty);
	g->threads = LLVMBuildCall2(g->b, getty, get, NULL, 0, "threads");

	FusePlan *plan = fuse_plan(g->m, g->f, g->type == CG_F32 ? 4 : 8, max_batch, !k->unfused);
	g->plan = plan;
	k->work_bytes = plan->work_bytes;
	g->val = calloc((size_t)(g->f->n ? g->f->n : 1), sizeof *g->val);
	if (!g->val)
		die("out of memory");
	for (int i = 0; i < g->f->n; i++) {
		if (!plan->val[i].region)
			continue;
		LLVMValueRef off = ci(g, (int64_t)plan->val[i].off);
		g->val[i].ptr = LLVMBuildInBoundsGEP2(g->b, g->i8, g->arg[NML_B_WORK], &off, 1, "");
	}
	for (int i = 0; i < g->f->n; i++) /* before any unit: a nest may join ops after a constant's unit */
		if (g->f->inst[i].op == IR_CONST)
			g->val[i].imm = LLVMConstReal(g->f64, g->f->inst[i].attr.num);
	for (int q = 0; q < plan->nunits; q++)
		emit_unit(g, q);
	LLVMBuildRetVoid(g->b);
	free(g->val);
	g->val = NULL;
	fuse_free(plan);
	g->plan = NULL;
}

void cg_dump_kernels(FILE *out, const IrModule *m, const IrFunc *f, CgType type, int64_t max_batch)
{
	FusePlan *p = fuse_plan(m, f, type == CG_F32 ? 4 : 8, max_batch, 1);
	fuse_dump(out, m, f, p);
	/* the products cut into tiles, with the machine's OpenBLAS (product_tiles) */
	Cg g = {.f = f, .plan = p, .max_batch = max_batch, .tiles = type == CG_F32 && blas_direct()};
	for (int q = 0; q < p->nunits; q++) {
		Tiles t;
		int64_t n = product_tiles(&g, q, &t), each = n > 1 ? 0 : stack_tiles(&g, q, &t);
		if (n > 1 && t.depth > 1)
			fprintf(out, "  tiles %%%d: %lld of %lld x %lld x %lld (partial sums), on the pool's threads\n",
				p->unit[q].inst[0], (long long)n, (long long)t.rows, (long long)t.cols, (long long)t.deep);
		else if (n > 1)
			fprintf(out, "  tiles %%%d: %lld of %lld x %lld, on the pool's threads\n", p->unit[q].inst[0],
				(long long)n, (long long)t.rows, (long long)t.cols);
		else if (each > 1)
			fprintf(out, "  tiles %%%d: each product in %lld of %lld x %lld, one after another\n",
				p->unit[q].inst[0], (long long)each, (long long)t.rows, (long long)t.cols);
	}
	fuse_free(p);
}

void cg_init(void)
{
	static int done;
	if (done)
		return;
	LLVMInitializeNativeTarget();
	LLVMInitializeNativeAsmPrinter();
	done = 1;
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s ? s : "");
	if (!d)
		die("out of memory");
	return d;
}

LLVMTargetMachineRef cg_machine(const char *cpu, char **err)
{
	cg_init();
	char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
	LLVMTargetRef target;
	if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
		*err = xstrdup(msg);
		LLVMDisposeMessage(msg);
		LLVMDisposeMessage(triple);
		return NULL;
	}
	int host = !cpu || !strcmp(cpu, "host");
	/* A named CPU brings its own features; the host's are detected, as the JIT's are. */
	char *name = host ? LLVMGetHostCPUName() : NULL, *features = host ? LLVMGetHostCPUFeatures() : NULL;
	/* x86: strided loads and stores (pooling windows, interleaved axes) as wide loads and shuffles,
	 * not gathers, which the vectorizer's costs favour on AVX-512 and which measure slower here */
	char feat[8192];
	snprintf(feat, sizeof feat, "%s%s%s", host ? features : "",
		 !strncmp(triple, "x86_64", 6) ? (host && *features ? "," : "") : "",
		 !strncmp(triple, "x86_64", 6) ? "+prefer-no-gather,+prefer-no-scatter" : "");
	LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, host ? name : cpu, feat,
							  LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
	if (host) {
		LLVMDisposeMessage(name);
		LLVMDisposeMessage(features);
	}
	LLVMDisposeMessage(triple);
	if (!tm)
		*err = xstrdup(host ? "cannot create a target machine for the host"
				    : "cannot create a target machine for that CPU");
	return tm;
}

LLVMTargetMachineRef cg_host_machine(char **err) { return cg_machine(NULL, err); }

static void set_target(LLVMModuleRef mod, LLVMTargetMachineRef tm)
{
	char *triple = LLVMGetTargetMachineTriple(tm);
	LLVMSetTarget(mod, triple);
	LLVMDisposeMessage(triple);
	LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
	LLVMSetModuleDataLayout(mod, dl);
	LLVMDisposeTargetData(dl);
}

LLVMModuleRef cg_module(LLVMContextRef ctx, const char *module_name, const IrModule *m, CgKernel *k, int nk,
			CgType type, int64_t max_batch)
{
	Cg g = {.ctx = ctx, .m = m, .type = type};
	g.mod = LLVMModuleCreateWithNameInContext(module_name, ctx);
	/* The data layout first: struct and vector layouts are read from it while building. */
	char *err = NULL;
	LLVMTargetMachineRef tm = cg_host_machine(&err);
	if (!tm)
		die("codegen: %s", err);
	set_target(g.mod, tm);
	LLVMDisposeTargetMachine(tm);

	g.b = LLVMCreateBuilderInContext(ctx);
	g.T = type == CG_F32 ? LLVMFloatTypeInContext(ctx) : LLVMDoubleTypeInContext(ctx);
	g.I = type == CG_F32 ? LLVMInt32TypeInContext(ctx) : LLVMInt64TypeInContext(ctx);
	g.f64 = g.alt_T = LLVMDoubleTypeInContext(ctx);
	g.alt_I = LLVMInt64TypeInContext(ctx);
	g.alt_type = CG_F64;
	g.i64 = LLVMInt64TypeInContext(ctx);
	g.i32 = LLVMInt32TypeInContext(ctx);
	g.i8 = LLVMInt8TypeInContext(ctx);
	g.ptr = LLVMPointerTypeInContext(ctx, 0);
	g.md_scope = LLVMGetMDKindIDInContext(ctx, "alias.scope", 11);
	g.md_noalias = LLVMGetMDKindIDInContext(ctx, "noalias", 7);
	for (int i = 0; i < nk; i++)
		emit_kernel(&g, &k[i], max_batch);
	LLVMDisposeBuilder(g.b);
	return g.mod;
}

int cg_optimize_for(LLVMModuleRef mod, LLVMTargetMachineRef tm, char **err)
{
	char *msg = NULL;
	if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
		*err = xstrdup(msg);
		LLVMDisposeMessage(msg);
		return -1;
	}
	LLVMDisposeMessage(msg);
	set_target(mod, tm);

	/* The subtarget of each function, so that the vectorizer's cost model is the target's. */
	LLVMContextRef ctx = LLVMGetModuleContext(mod);
	char *cpu = LLVMGetTargetMachineCPU(tm), *features = LLVMGetTargetMachineFeatureString(tm);
	LLVMAttributeRef acpu = LLVMCreateStringAttribute(ctx, "target-cpu", 10, cpu, (unsigned)strlen(cpu));
	LLVMAttributeRef afeat = LLVMCreateStringAttribute(ctx, "target-features", 15, features, (unsigned)strlen(features));
	for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn)) {
		if (LLVMIsDeclaration(fn))
			continue;
		LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, acpu);
		LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, afeat);
	}
	LLVMDisposeMessage(cpu);
	LLVMDisposeMessage(features);

	LLVMPassBuilderOptionsRef opt = LLVMCreatePassBuilderOptions();
	LLVMPassBuilderOptionsSetLoopVectorization(opt, 1);
	LLVMPassBuilderOptionsSetSLPVectorization(opt, 1);
	LLVMPassBuilderOptionsSetLoopInterleaving(opt, 1);
	LLVMPassBuilderOptionsSetLoopUnrolling(opt, 1);
	LLVMErrorRef e = LLVMRunPasses(mod, "default<O3>", tm, opt);
	LLVMDisposePassBuilderOptions(opt);
	if (e) {
		char *m = LLVMGetErrorMessage(e);
		*err = xstrdup(m);
		LLVMDisposeErrorMessage(m);
		return -1;
	}
	return 0;
}

int cg_emit_object(LLVMModuleRef mod, LLVMTargetMachineRef tm, const char *path, LLVMMemoryBufferRef *obj, char **err)
{
	if (obj)
		*obj = NULL;
	if (cg_optimize_for(mod, tm, err))
		return -1;
	char *msg = NULL;
	int bad = path ? LLVMTargetMachineEmitToFile(tm, mod, (char *)path, LLVMObjectFile, &msg)
		       : LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &msg, obj);
	if (bad) {
		char text[4400];
		snprintf(text, sizeof text, "%s%s: %s", path ? "cannot write " : "cannot emit object code",
			 path ? path : "", msg ? msg : "?");
		*err = xstrdup(text);
		if (obj)
			*obj = NULL;
	}
	LLVMDisposeMessage(msg);
	return bad ? -1 : 0;
}

int cg_optimize(LLVMModuleRef mod, char **err)
{
	LLVMTargetMachineRef tm = cg_host_machine(err);
	if (!tm)
		return -1;
	int rc = cg_optimize_for(mod, tm, err);
	LLVMDisposeTargetMachine(tm);
	return rc;
}

/* ---- splitting a module ---- */

static size_t fn_insts(LLVMValueRef fn)
{
	size_t n = 0;
	for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
		for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in))
			n++;
	return n;
}

size_t cg_module_insts(LLVMModuleRef mod)
{
	size_t n = 0;
	for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn))
		n += fn_insts(fn);
	return n;
}

/* fn becomes a declaration: its values' uses go first, then its instructions, then its blocks. */
static void drop_body(LLVMValueRef fn)
{
	for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
		for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in))
			if (LLVMGetTypeKind(LLVMTypeOf(in)) != LLVMVoidTypeKind)
				LLVMReplaceAllUsesWith(in, LLVMGetPoison(LLVMTypeOf(in)));
	for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
		for (LLVMValueRef in = LLVMGetFirstInstruction(bb), next; in; in = next) {
			next = LLVMGetNextInstruction(in);
			LLVMInstructionEraseFromParent(in);
		}
	for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn), next; bb; bb = next) {
		next = LLVMGetNextBasicBlock(bb);
		LLVMDeleteBasicBlock(bb);
	}
}

typedef struct PartFn {
	LLVMValueRef fn;
	size_t size;
	int index;
} PartFn;

static int larger_first(const void *a, const void *b)
{
	const PartFn *x = a, *y = b;
	if (x->size != y->size)
		return x->size < y->size ? 1 : -1;
	return (x->index > y->index) - (x->index < y->index);
}

void cg_keep_part(LLVMModuleRef mod, int part, int nparts)
{
	int n = 0;
	for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn))
		n += !LLVMIsDeclaration(fn);
	PartFn *f = malloc((size_t)(n ? n : 1) * sizeof *f);
	size_t *load = calloc((size_t)nparts, sizeof *load);
	if (!f || !load)
		die("out of memory");
	n = 0;
	for (LLVMValueRef fn = LLVMGetFirstFunction(mod); fn; fn = LLVMGetNextFunction(fn))
		if (!LLVMIsDeclaration(fn)) {
			f[n] = (PartFn){fn, fn_insts(fn), n};
			n++;
		}
	qsort(f, (size_t)n, sizeof *f, larger_first);
	for (int i = 0; i < n; i++) { /* each to the part with the least so far */
		int best = 0;
		for (int p = 1; p < nparts; p++)
			if (load[p] < load[best])
				best = p;
		load[best] += f[i].size;
		LLVMSetLinkage(f[i].fn, LLVMExternalLinkage);
		if (best != part)
			drop_body(f[i].fn);
	}
	free(load);
	free(f);
}

char *cg_print(LLVMModuleRef mod) { return LLVMPrintModuleToString(mod); }
