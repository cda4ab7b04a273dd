/* codegen.c: IR functions to LLVM IR kernels, one loop nest (or one BLAS call) per op.
 *
 * A kernel is `void name(NmlArgs *a)`. Every IR value is one of:
 *   a scalar in a register (constants, hyperparameters, t, n, and elementwise ops of those only),
 *   a view of a slot (parameters, state, x, y), or
 *   its own region of `work`, planned here for max_batch rows.
 * Broadcasting is resolved at compile time into loop nests whose axes are merged wherever no operand
 * broadcasts along them, so a plain elementwise op is one flat loop and a bias add two. Every nest
 * tells LLVM (scoped noalias metadata) that its output does not overlap its inputs, which is what lets
 * the loop vectorizer run without runtime overlap checks. */
#include "codegen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "nmlrt.h"

/* The fields of NmlArgs, in ABI order. */
enum { ARG_PARAMS, ARG_GRADS, ARG_STATE, ARG_X, ARG_Y, ARG_HPARAMS, ARG_WORK, ARG_LOSS, ARG_PRED, ARG_N, ARG_T,
       ARG_COUNT };
_Static_assert(offsetof(NmlArgs, pred) == ARG_PRED * sizeof(void *), "NmlArgs: nine pointers first");
_Static_assert(offsetof(NmlArgs, n) == ARG_N * sizeof(void *), "NmlArgs: then n");
_Static_assert(offsetof(NmlArgs, t) == offsetof(NmlArgs, n) + sizeof(int64_t), "NmlArgs: then t");

enum { WORK_ALIGN = 64 };   /* a cache line, and one AVX-512 vector */
enum { NEST_MAXOPS = 4 };   /* the output and up to three operands */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 }; /* cblas.h */

typedef enum {
	V_NONE,  /* a store: no value */
	V_IMM,   /* a scalar in a register, the same everywhere in its shape */
	V_SLOT,  /* points into params, state, x or y */
	V_WORK,  /* its own region of work */
	V_ALIAS, /* shares its operand's storage (a copy that needs none) */
} ValKind;

typedef struct Val {
	ValKind kind;
	size_t off;        /* V_WORK, and a V_IMM that must be in memory (a matmul operand): bytes into work */
	int region;        /* off is valid */
	LLVMValueRef imm;  /* V_IMM */
	LLVMValueRef ptr;  /* the first element, once emitted */
} Val;

typedef struct Cg {
	LLVMContextRef ctx;
	LLVMModuleRef mod;
	LLVMBuilderRef b;
	LLVMTypeRef T, I, i64, i32, i8, ptr; /* I: the integer type as wide as T */
	CgType type;
	const IrModule *m;
	const IrFunc *f;
	const char *kname;
	LLVMValueRef fn;
	LLVMValueRef arg[ARG_COUNT];
	Val *val;
	unsigned md_scope, md_noalias;
	LLVMMetadataRef domain;
	int nscopes;
} Cg;

/* ---- small builders ---- */

static LLVMValueRef cf(Cg *g, double v) { return LLVMConstReal(g->T, v); }
static LLVMValueRef ci(Cg *g, int64_t v) { return LLVMConstInt(g->i64, (unsigned long long)v, 1); }
static LLVMValueRef cI(Cg *g, int64_t v) { return LLVMConstInt(g->I, (unsigned long long)v, 1); }

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

/* ---- memory: each nest gets its own alias scope for what it writes ---- */

static LLVMValueRef new_scope(Cg *g)
{
	char name[256];
	int len = snprintf(name, sizeof name, "%s.%d", g->kname, g->nscopes++);
	LLVMMetadataRef ops[2] = {LLVMMDStringInContext2(g->ctx, name, (size_t)len), g->domain};
	LLVMMetadataRef scope = LLVMMDNodeInContext2(g->ctx, ops, 2);
	return LLVMMetadataAsValue(g->ctx, LLVMMDNodeInContext2(g->ctx, &scope, 1));
}

/* A load of what the current nest writes (written: 1) or of something it does not (0). */
static LLVMValueRef load(Cg *g, LLVMValueRef p, LLVMValueRef scope, int written)
{
	LLVMValueRef v = LLVMBuildLoad2(g->b, g->T, p, "");
	if (scope)
		LLVMSetMetadata(v, written ? g->md_scope : g->md_noalias, scope);
	return v;
}

static void store(Cg *g, LLVMValueRef v, LLVMValueRef p, LLVMValueRef scope)
{
	LLVMValueRef s = LLVMBuildStore(g->b, v, p);
	if (scope)
		LLVMSetMetadata(s, g->md_scope, scope);
}

/* ---- loops ---- */

/* for (iv = 0; iv < count; iv++), rotated so that the vectorizer sees a canonical loop; optionally
 * carrying one accumulator. */
typedef struct Loop {
	LLVMBasicBlockRef pre, body, exit;
	LLVMValueRef iv, count, acc, init;
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

/* An accumulator starting at init; call right after loop_begin. */
static LLVMValueRef loop_acc(Cg *g, Loop *l, LLVMValueRef init)
{
	l->init = init;
	l->acc = LLVMBuildPhi(g->b, g->T, "acc");
	return l->acc;
}

/* Closes the loop; with an accumulator, returns its final value (init if the loop did not run). */
static LLVMValueRef loop_end(Cg *g, Loop *l, LLVMValueRef acc_next)
{
	LLVMValueRef next = LLVMBuildNSWAdd(g->b, l->iv, ci(g, 1), "");
	LLVMBasicBlockRef latch = LLVMGetInsertBlock(g->b);
	LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, next, l->count, ""), l->body, l->exit);
	LLVMValueRef zero = ci(g, 0);
	LLVMAddIncoming(l->iv, (LLVMValueRef[]){zero, next}, (LLVMBasicBlockRef[]){l->pre, latch}, 2);
	LLVMPositionBuilderAtEnd(g->b, l->exit);
	if (!l->acc)
		return NULL;
	LLVMAddIncoming(l->acc, (LLVMValueRef[]){l->init, acc_next}, (LLVMBasicBlockRef[]){l->pre, latch}, 2);
	LLVMValueRef out = LLVMBuildPhi(g->b, g->T, "sum");
	LLVMAddIncoming(out, (LLVMValueRef[]){l->init, acc_next}, (LLVMBasicBlockRef[]){l->pre, latch}, 2);
	return out;
}

/* ---- loop nests over a broadcast iteration space ----
 *
 * Operand 0 is written, the others are read. Each operand's dims are aligned to the iteration space:
 * od[k][i] is it[i] (the operand advances along axis i) or 1 (it is broadcast). Axes of size 1 are
 * dropped and neighbouring axes along which the same operands advance are merged, so the loops left
 * are the ones broadcasting forces. */
typedef struct Nest {
	int rank;
	int64_t it[IR_MAXRANK];
	int nop;
	LLVMValueRef base[NEST_MAXOPS];   /* first element, or NULL for a scalar */
	LLVMValueRef scalar[NEST_MAXOPS];
	int64_t od[NEST_MAXOPS][IR_MAXRANK];
	/* set by nest_plan */
	int depth, open;
	LLVMValueRef dim[IR_MAXRANK];     /* trip counts, outermost first */
	unsigned adv[IR_MAXRANK];         /* bit k: operand k advances with this loop */
	LLVMValueRef stride[IR_MAXRANK][NEST_MAXOPS];
	LLVMValueRef off[IR_MAXRANK + 1][NEST_MAXOPS]; /* element index of each operand inside d loops */
	Loop loop[IR_MAXRANK];
	LLVMValueRef scope;
} Nest;

static void nest_space(Nest *ns, const IrShape *s)
{
	ns->rank = s->rank;
	for (int i = 0; i < s->rank; i++)
		ns->it[i] = s->dim[i];
}

/* Operand k is v of shape s, right-aligned to the iteration space (numpy broadcasting). A read
 * operand of one element is loaded once, before the loops. */
static void nest_operand(Cg *g, Nest *ns, int k, const Val *v, const IrShape *s)
{
	int lead = s->rank - ns->rank;
	for (int j = 0; j < lead; j++)
		if (s->dim[j] != 1)
			die("codegen: %s: operand of rank %d in a loop nest of rank %d", g->kname, s->rank, ns->rank);
	for (int i = 0; i < ns->rank; i++) {
		int64_t d = i + lead >= 0 ? s->dim[i + lead] : 1;
		if (d != 1 && d != ns->it[i])
			die("codegen: %s: operand does not broadcast to the loop nest", g->kname);
		ns->od[k][i] = d;
	}
	ns->base[k] = ns->scalar[k] = NULL;
	if (v->kind == V_IMM)
		ns->scalar[k] = v->imm;
	else if (k > 0 && static_one(s))
		ns->scalar[k] = LLVMBuildLoad2(g->b, g->T, v->ptr, "");
	else
		ns->base[k] = v->ptr;
	if (k >= ns->nop)
		ns->nop = k + 1;
}

static void nest_plan(Cg *g, Nest *ns)
{
	ns->depth = ns->open = 0;
	for (int i = 0; i < ns->rank; i++) {
		if (ns->it[i] == 1)
			continue;
		unsigned adv = 0;
		for (int k = 0; k < ns->nop; k++)
			if (ns->base[k] && ns->od[k][i] != 1)
				adv |= 1u << k;
		LLVMValueRef d = dimv(g, ns->it[i]);
		if (ns->depth > 0 && ns->adv[ns->depth - 1] == adv) {
			ns->dim[ns->depth - 1] = imul(g, ns->dim[ns->depth - 1], d);
		} else {
			ns->adv[ns->depth] = adv;
			ns->dim[ns->depth++] = d;
		}
	}
	for (int k = 0; k < ns->nop; k++) {
		LLVMValueRef s = ci(g, 1);
		for (int d = ns->depth - 1; d >= 0; d--) {
			ns->stride[d][k] = ns->adv[d] & (1u << k) ? s : ci(g, 0);
			if (ns->adv[d] & (1u << k))
				s = imul(g, s, ns->dim[d]);
		}
		ns->off[0][k] = ci(g, 0);
	}
	ns->scope = new_scope(g);
}

/* Opens the loops up to depth upto. */
static void nest_enter(Cg *g, Nest *ns, int upto)
{
	for (int d = ns->open; d < upto; d++) {
		LLVMValueRef iv = loop_begin(g, &ns->loop[d], ns->dim[d]);
		for (int k = 0; k < ns->nop; k++)
			ns->off[d + 1][k] = ns->adv[d] & (1u << k)
						    ? iadd(g, ns->off[d][k], imul(g, iv, ns->stride[d][k]))
						    : ns->off[d][k];
	}
	ns->open = upto;
}

static void nest_leave(Cg *g, Nest *ns)
{
	while (ns->open > 0)
		loop_end(g, &ns->loop[--ns->open], NULL);
}

static LLVMValueRef nest_addr(Cg *g, Nest *ns, int k) { return elem(g, ns->base[k], ns->off[ns->open][k]); }

static LLVMValueRef nest_load(Cg *g, Nest *ns, int k)
{
	return ns->base[k] ? load(g, nest_addr(g, ns, k), ns->scope, k == 0) : ns->scalar[k];
}

static void nest_store(Cg *g, Nest *ns, LLVMValueRef v) { store(g, v, nest_addr(g, ns, 0), ns->scope); }

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
		if (k == 0.5)
			return call1(g, "llvm.sqrt", a);
	}
	return call2(g, "llvm.pow", a, b);
}

static LLVMValueRef flag(Cg *g, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
	return sel(g, fcmp(g, p, a, b), cf(g, 1), cf(g, 0));
}

/* One element of an elementwise op. */
static LLVMValueRef op_scalar(Cg *g, IrOp op, LLVMValueRef *x)
{
	LLVMBuilderRef b = g->b;
	switch (op) {
	case IR_NEG: return LLVMBuildFNeg(b, x[0], "");
	case IR_EXP: return cg_exp(g, x[0]);
	case IR_LOG: return cg_log(g, x[0]);
	case IR_SQRT: return call1(g, "llvm.sqrt", x[0]);
	case IR_RSQRT: return LLVMBuildFDiv(b, cf(g, 1), call1(g, "llvm.sqrt", x[0]), "");
	case IR_ABS: return call1(g, "llvm.fabs", x[0]);
	case IR_SIGN:
		return sel(g, fcmp(g, LLVMRealOGT, x[0], cf(g, 0)), cf(g, 1),
			   sel(g, fcmp(g, LLVMRealOLT, x[0], cf(g, 0)), cf(g, -1), cf(g, 0)));
	case IR_TANH: return cg_tanh(g, x[0]);
	/* 1/(1 + exp(-x)): exp overflows to inf for x < -88 and the quotient goes to 0, never NaN */
	case IR_SIGMOID:
		return LLVMBuildFDiv(b, cf(g, 1), LLVMBuildFAdd(b, cf(g, 1), cg_exp(g, LLVMBuildFNeg(b, x[0], "")), ""), "");
	/* x < 0 ? 0 : x keeps a NaN visible */
	case IR_RELU: return sel(g, fcmp(g, LLVMRealOLT, x[0], cf(g, 0)), cf(g, 0), x[0]);
	case IR_STOPGRAD:
	case IR_EXPAND: return x[0];
	case IR_ADD: return LLVMBuildFAdd(b, x[0], x[1], "");
	case IR_SUB: return LLVMBuildFSub(b, x[0], x[1], "");
	case IR_MUL: return LLVMBuildFMul(b, x[0], x[1], "");
	case IR_DIV: return LLVMBuildFDiv(b, x[0], x[1], "");
	case IR_POW: return cg_pow(g, x[0], x[1]);
	case IR_MAX2: return call2(g, "llvm.maximum", x[0], x[1]);
	case IR_MIN2: return call2(g, "llvm.minimum", x[0], x[1]);
	case IR_LT: return flag(g, LLVMRealOLT, x[0], x[1]);
	case IR_LE: return flag(g, LLVMRealOLE, x[0], x[1]);
	case IR_GT: return flag(g, LLVMRealOGT, x[0], x[1]);
	case IR_GE: return flag(g, LLVMRealOGE, x[0], x[1]);
	case IR_EQ: return flag(g, LLVMRealOEQ, x[0], x[1]);
	case IR_NE: return flag(g, LLVMRealUNE, x[0], x[1]);
	case IR_WHERE: return sel(g, fcmp(g, LLVMRealUNE, x[0], cf(g, 0)), x[1], x[2]);
	default: die("codegen: %s is not elementwise", ir_op_name(op));
	}
}

/* ---- ops ---- */

static const IrShape *shape_of(Cg *g, int v) { return &g->f->inst[v].shape; }

/* dst (of shape s) = op(operands), the operands broadcast to s. */
static void emit_map(Cg *g, IrOp op, LLVMValueRef dst, const IrShape *s, int nin, const Val *const *v,
		     const IrShape *const *vs)
{
	Nest ns = {0};
	nest_space(&ns, s);
	nest_operand(g, &ns, 0, &(Val){.kind = V_WORK, .ptr = dst}, s);
	for (int j = 0; j < nin; j++)
		nest_operand(g, &ns, j + 1, v[j], vs[j]);
	nest_plan(g, &ns);
	nest_enter(g, &ns, ns.depth);
	LLVMValueRef x[3];
	for (int j = 0; j < nin; j++)
		x[j] = nest_load(g, &ns, j + 1);
	nest_store(g, &ns, op_scalar(g, op, x));
	nest_leave(g, &ns);
}

static void emit_leaf(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	Val *v = &g->val[i];
	LLVMBuilderRef b = g->b;
	switch (in->op) {
	case IR_CONST: v->imm = cf(g, in->fval); break;
	case IR_INPUT: v->ptr = g->arg[in->ival ? ARG_Y : ARG_X]; break;
	case IR_PARAM: v->ptr = elem(g, g->arg[ARG_PARAMS], ci(g, (int64_t)g->m->params[in->ival].offset)); break;
	case IR_STATE: v->ptr = elem(g, g->arg[ARG_STATE], ci(g, (int64_t)g->m->states[in->ival].offset)); break;
	case IR_HPARAM: v->imm = LLVMBuildLoad2(b, g->T, elem(g, g->arg[ARG_HPARAMS], ci(g, in->ival)), "hp"); break;
	case IR_STEP:
		v->imm = g->type == CG_F32 ? LLVMBuildFPTrunc(b, g->arg[ARG_T], g->T, "t") : g->arg[ARG_T];
		break;
	case IR_ROWS: v->imm = LLVMBuildSIToFP(b, g->arg[ARG_N], g->T, "n"); break;
	default: die("codegen: %s is not a leaf", ir_op_name(in->op));
	}
}

static void emit_elementwise(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	Val *v = &g->val[i];
	int nin = ir_op_arity(in->op);
	if (v->kind == V_ALIAS) {
		*v = g->val[in->in[0]];
		v->kind = V_ALIAS;
		return;
	}
	if (v->kind == V_IMM) {
		LLVMValueRef x[3];
		for (int j = 0; j < nin; j++)
			x[j] = g->val[in->in[j]].imm;
		v->imm = op_scalar(g, in->op, x);
		return;
	}
	const Val *ops[3];
	const IrShape *shapes[3];
	for (int j = 0; j < nin; j++) {
		ops[j] = &g->val[in->in[j]];
		shapes[j] = shape_of(g, in->in[j]);
	}
	emit_map(g, in->op, v->ptr, &in->shape, nin, ops, shapes);
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

/* Reduce over the axes in the mask: the output holds the kept axes in order, contiguous. The nest runs
 * over the operand's shape with the output broadcast along the reduced axes. When the innermost loop
 * reduces, it sums in a register and, if it is the only reducing loop, stores without initializing
 * the output first; otherwise the output is initialized and accumulated in place. */
static void emit_reduce(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	const IrShape *s = shape_of(g, in->in[0]);
	LLVMValueRef init = cf(g, in->op == IR_MAX ? -INFINITY : 0);
	LLVMValueRef out = g->val[i].ptr;
	Nest ns = {0};
	nest_space(&ns, s);
	nest_operand(g, &ns, 1, &g->val[in->in[0]], s);
	ns.base[0] = out;
	ns.nop = 2;
	IrShape kept = {0};
	for (int a = 0; a < s->rank; a++) {
		int red = (in->ival >> a) & 1;
		ns.od[0][a] = red ? 1 : s->dim[a];
		if (!red)
			kept.dim[kept.rank++] = s->dim[a];
	}
	nest_plan(g, &ns);

	int inner = ns.depth > 0 && !(ns.adv[ns.depth - 1] & 1);
	int outer = 0;
	for (int d = 0; d < ns.depth - inner; d++)
		outer |= !(ns.adv[d] & 1);
	if (!inner || outer) {
		Loop l;
		LLVMValueRef j = loop_begin(g, &l, numelv(g, &kept));
		store(g, init, elem(g, out, j), NULL);
		loop_end(g, &l, NULL);
	}
	if (inner) {
		nest_enter(g, &ns, ns.depth - 1);
		Loop l;
		LLVMValueRef j = loop_begin(g, &l, ns.dim[ns.depth - 1]);
		LLVMValueRef acc = loop_acc(g, &l, init);
		LLVMValueRef x = ns.base[1] ? load(g, elem(g, ns.base[1], iadd(g, ns.off[ns.open][1], j)), ns.scope, 0)
					    : ns.scalar[1];
		LLVMValueRef r = loop_end(g, &l, reduce_step(g, in->op, acc, x, 1));
		if (outer)
			r = reduce_step(g, in->op, nest_load(g, &ns, 0), r, 0);
		nest_store(g, &ns, r);
	} else {
		nest_enter(g, &ns, ns.depth);
		nest_store(g, &ns, reduce_step(g, in->op, nest_load(g, &ns, 0), nest_load(g, &ns, 1), 0));
	}
	nest_leave(g, &ns);
}

/* C = op(A) op(B) by cblas_?gemm, row-major; lda and ldb are the stored row lengths. */
static void emit_matmul(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	const IrShape *sa = shape_of(g, in->in[0]), *sb = shape_of(g, in->in[1]);
	int ta = in->ival & 1, tb = (in->ival >> 1) & 1;
	LLVMValueRef M = dimv(g, in->shape.dim[0]), N = dimv(g, in->shape.dim[1]);
	LLVMValueRef K = dimv(g, sa->dim[ta ? 0 : 1]);
	LLVMValueRef lda = dimv(g, sa->dim[1]), ldb = dimv(g, sb->dim[1]);
	LLVMValueRef C = g->val[i].ptr;

	LLVMTypeRef i32 = g->i32, p = g->ptr, T = g->T;
	LLVMTypeRef pt[14] = {i32, i32, i32, i32, i32, i32, T, p, i32, p, i32, T, p, i32};
	LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(g->ctx), pt, 14, 0);
	const char *name = g->type == CG_F32 ? "cblas_sgemm" : "cblas_dgemm";
	LLVMValueRef fn = LLVMGetNamedFunction(g->mod, name);
	if (!fn)
		fn = LLVMAddFunction(g->mod, name, fty);

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
#define I32(v) LLVMBuildTrunc(b, (v), i32, "")
	LLVMValueRef args[14] = {
		LLVMConstInt(i32, CBLAS_ROW_MAJOR, 0), LLVMConstInt(i32, ta ? CBLAS_TRANS : CBLAS_NO_TRANS, 0),
		LLVMConstInt(i32, tb ? CBLAS_TRANS : CBLAS_NO_TRANS, 0), I32(M), I32(N), I32(K), cf(g, 1),
		g->val[in->in[0]].ptr, I32(lda), g->val[in->in[1]].ptr, I32(ldb), cf(g, 0), C, I32(N),
	};
#undef I32
	LLVMBuildCall2(b, fty, fn, args, 14, "");
	LLVMBuildBr(b, done);

	LLVMPositionBuilderAtEnd(b, empty);
	LLVMBuildCondBr(b, mn, zeros, done);
	LLVMPositionBuilderAtEnd(b, zeros);
	LLVMValueRef bytes = LLVMBuildMul(b, LLVMBuildMul(b, M, N, ""), ci(g, g->type == CG_F32 ? 4 : 8), "");
	LLVMBuildMemSet(b, C, LLVMConstInt(g->i8, 0, 0), bytes, 1);
	LLVMBuildBr(b, done);
	LLVMPositionBuilderAtEnd(b, done);
}

/* out[i, j] = j == a[i] */
static void emit_onehot(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	if (in->op != IR_ONEHOT)
		die("codegen: no lowering for %s", ir_op_name(in->op));
	const Val *a = &g->val[in->in[0]];
	LLVMValueRef out = g->val[i].ptr, k = ci(g, in->ival), scope = new_scope(g);
	Loop rows, cols;
	LLVMValueRef r = loop_begin(g, &rows, dimv(g, shape_of(g, in->in[0])->dim[0]));
	LLVMValueRef c = a->kind == V_IMM ? a->imm : load(g, elem(g, a->ptr, r), scope, 0);
	LLVMValueRef j = loop_begin(g, &cols, k);
	LLVMValueRef hit = flag(g, LLVMRealOEQ, LLVMBuildSIToFP(g->b, j, g->T, ""), c);
	store(g, hit, elem(g, out, iadd(g, imul(g, r, k), j)), scope);
	loop_end(g, &cols, NULL);
	loop_end(g, &rows, NULL);
}

static void emit_store(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	const IrShape *s = shape_of(g, in->in[0]);
	LLVMValueRef dst;
	switch (in->op) {
	case IR_STORE_PARAM:
		s = &g->m->params[in->ival].shape;
		dst = elem(g, g->arg[ARG_PARAMS], ci(g, (int64_t)g->m->params[in->ival].offset));
		break;
	case IR_STORE_GRAD:
		s = &g->m->params[in->ival].shape;
		dst = elem(g, g->arg[ARG_GRADS], ci(g, (int64_t)g->m->params[in->ival].offset));
		break;
	case IR_STORE_STATE:
		s = &g->m->states[in->ival].shape;
		dst = elem(g, g->arg[ARG_STATE], ci(g, (int64_t)g->m->states[in->ival].offset));
		break;
	case IR_STORE_LOSS: dst = g->arg[ARG_LOSS]; break;
	case IR_STORE_PRED: dst = g->arg[ARG_PRED]; break;
	default: die("codegen: %s is not a store", ir_op_name(in->op));
	}
	const Val *v = &g->val[in->in[0]];
	const IrShape *vs = shape_of(g, in->in[0]);
	emit_map(g, IR_STOPGRAD, dst, s, 1, &v, &vs);
}

/* ---- kernels ---- */

static int is_scalar_leaf(IrOp op) { return op == IR_CONST || op == IR_HPARAM || op == IR_STEP || op == IR_ROWS; }

/* Decides where each value lives; returns the bytes of work. A matmul operand must be in memory, so
 * a scalar that is one gets a region too. */
static size_t plan(Cg *g, int64_t max_batch)
{
	const IrFunc *f = g->f;
	size_t esize = g->type == CG_F32 ? 4 : 8, top = 0;
	for (int i = 0; i < f->n; i++) {
		const IrInst *in = &f->inst[i];
		Val *v = &g->val[i];
		*v = (Val){.kind = V_WORK};
		switch (ir_op_kind(in->op)) {
		case OPK_LEAF: v->kind = is_scalar_leaf(in->op) ? V_IMM : V_SLOT; break;
		case OPK_UNARY:
		case OPK_BINARY:
		case OPK_TERNARY: {
			int imm = 1;
			for (int j = 0; j < ir_op_arity(in->op); j++)
				imm &= g->val[in->in[j]].kind == V_IMM;
			ValKind a = g->val[in->in[0]].kind;
			if (imm)
				v->kind = V_IMM;
			/* a work region is never overwritten, so a same-shape copy of one can share it */
			else if (in->op == IR_STOPGRAD && (a == V_WORK || a == V_ALIAS) &&
				 ir_shape_eq(in->shape, f->inst[in->in[0]].shape))
				v->kind = V_ALIAS;
			break;
		}
		case OPK_STORE: v->kind = V_NONE; break;
		case OPK_SPECIAL: /* a reshape keeps the layout, so it shares its operand's storage */
			if (in->op == IR_RESHAPE)
				v->kind = g->val[in->in[0]].kind == V_IMM ? V_IMM : V_ALIAS;
			break;
		case OPK_MATMUL:
			for (int j = 0; j < 2; j++)
				if (g->val[in->in[j]].kind == V_IMM)
					g->val[in->in[j]].region = 1;
			break;
		default: break;
		}
		if (v->kind == V_WORK)
			v->region = 1;
	}
	for (int i = 0; i < f->n; i++) {
		Val *v = &g->val[i];
		if (!v->region)
			continue;
		v->off = top;
		size_t bytes = (size_t)ir_shape_numel(f->inst[i].shape, max_batch) * esize;
		top += (bytes + WORK_ALIGN - 1) / WORK_ALIGN * WORK_ALIGN;
	}
	return top;
}

static void emit_inst(Cg *g, int i)
{
	const IrInst *in = &g->f->inst[i];
	Val *v = &g->val[i];
	if (v->region) {
		LLVMValueRef off = ci(g, (int64_t)v->off);
		v->ptr = LLVMBuildInBoundsGEP2(g->b, g->i8, g->arg[ARG_WORK], &off, 1, "");
	}
	switch (ir_op_kind(in->op)) {
	case OPK_LEAF: emit_leaf(g, i); break;
	case OPK_UNARY:
	case OPK_BINARY:
	case OPK_TERNARY: emit_elementwise(g, i); break;
	case OPK_REDUCE: emit_reduce(g, i); break;
	case OPK_MATMUL: emit_matmul(g, i); break;
	case OPK_SPECIAL:
		if (in->op == IR_RESHAPE) {
			if (v->kind == V_IMM) {
				v->imm = g->val[in->in[0]].imm;
			} else {
				*v = g->val[in->in[0]];
				v->kind = V_ALIAS;
			}
		} else {
			emit_onehot(g, i);
		}
		break;
	case OPK_STORE: emit_store(g, i); break;
	}
	if (v->kind == V_IMM && v->region) {
		const Val *src = v;
		const IrShape *s = &in->shape;
		emit_map(g, IR_STOPGRAD, v->ptr, s, 1, &src, &s);
	}
}

static LLVMTypeRef args_type(Cg *g)
{
	LLVMTypeRef f[ARG_COUNT];
	for (int i = 0; i < ARG_N; i++)
		f[i] = g->ptr;
	f[ARG_N] = g->i64;
	f[ARG_T] = LLVMDoubleTypeInContext(g->ctx);
	return LLVMStructTypeInContext(g->ctx, f, ARG_COUNT, 0);
}

static void emit_kernel(Cg *g, CgKernel *k, int64_t max_batch)
{
	static const char *names[ARG_COUNT] = {"params", "grads", "state", "x", "y", "hparams", "work", "loss",
					       "pred", "n", "t"};
	g->f = k->fn;
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

	LLVMTypeRef at = args_type(g);
	LLVMValueRef a = LLVMGetParam(g->fn, 0);
	LLVMSetValueName2(a, "args", 4);
	for (int i = 0; i < ARG_COUNT; i++) {
		LLVMTypeRef ft = LLVMStructGetTypeAtIndex(at, (unsigned)i);
		g->arg[i] = LLVMBuildLoad2(g->b, ft, LLVMBuildStructGEP2(g->b, at, a, (unsigned)i, ""), names[i]);
	}

	g->val = calloc((size_t)(g->f->n ? g->f->n : 1), sizeof *g->val);
	if (!g->val)
		die("out of memory");
	k->work_bytes = plan(g, max_batch);
	for (int i = 0; i < g->f->n; i++)
		emit_inst(g, i);
	LLVMBuildRetVoid(g->b);
	free(g->val);
	g->val = NULL;
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

LLVMTargetMachineRef cg_host_machine(char **err)
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
	char *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
	LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
							  LLVMRelocPIC, LLVMCodeModelDefault);
	LLVMDisposeMessage(cpu);
	LLVMDisposeMessage(features);
	LLVMDisposeMessage(triple);
	if (!tm)
		*err = xstrdup("cannot create a target machine for the host");
	return tm;
}

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

int cg_optimize(LLVMModuleRef mod, char **err)
{
	char *msg = NULL;
	if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
		*err = xstrdup(msg);
		LLVMDisposeMessage(msg);
		return -1;
	}
	LLVMDisposeMessage(msg);
	LLVMTargetMachineRef tm = cg_host_machine(err);
	if (!tm)
		return -1;
	set_target(mod, tm);

	/* The subtarget of each function, so that the vectorizer's cost model is the host's. */
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
	LLVMDisposeTargetMachine(tm);
	if (e) {
		char *m = LLVMGetErrorMessage(e);
		*err = xstrdup(m);
		LLVMDisposeErrorMessage(m);
		return -1;
	}
	return 0;
}

char *cg_print(LLVMModuleRef mod) { return LLVMPrintModuleToString(mod); }
