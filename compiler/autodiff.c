/* autodiff.c: reverse-mode differentiation as an IR-to-IR pass.
 *
 * Walking the function backwards from the loss, each op's rule adds the adjoints of its operands
 * as ordinary IR ops appended to the same function, so the backward code is fused, simplified and
 * compiled like the forward code. Only values that depend on one of the values differentiated
 * against get adjoints. */
#include "autodiff.h"

#include <stdlib.h>

#include "util.h"

typedef struct Ad {
	IrFunc *f;
	int *adj;     /* per value: its adjoint, or -1 */
	char *needs;  /* per value: depends on a value differentiated against */
} Ad;

static int c(Ad *ad, double v, SrcLoc loc) { return ir_const(ad->f, v, loc); }
static int bin(Ad *ad, IrOp op, int a, int b, SrcLoc loc) { return ir_binary(ad->f, op, a, b, loc); }

/* adj[v] += g, with g summed down to v's shape where it was broadcast. */
static void accumulate(Ad *ad, int v, int g, SrcLoc loc)
{
	if (v < 0 || !ad->needs[v] || g < 0)
		return;
	g = ir_sum_to(ad->f, g, ad->f->inst[v].shape, loc);
	ad->adj[v] = ad->adj[v] < 0 ? g : bin(ad, IR_ADD, ad->adj[v], g, loc);
}

static void rule(Ad *ad, int i, int g)
{
	/* Copy: the builders below may move f->inst. */
	IrInst in = ad->f->inst[i];
	int a = in.in[0], b = in.in[1], out = i;
	SrcLoc loc = in.loc;
	switch (in.op) {
	case IR_CONST: case IR_LOAD: case IR_HPARAM: case IR_STEP:
	case IR_ROWS: case IR_ONEHOT: case IR_STOPGRAD: case IR_SIGN: case IR_FLOOR: case IR_RANDOM: case IR_ARGMAX:
	case IR_EIGH: /* for update rules, which are not differentiated */
	case IR_LT: case IR_LE: case IR_GT: case IR_GE: case IR_EQ: case IR_NE:
		return; /* constant, or zero derivative almost everywhere */
	case IR_NEG: /* d(-a) = -g */
		accumulate(ad, a, ir_unary(ad->f, IR_NEG, g, loc), loc);
		return;
	case IR_EXP: /* d exp(a) = g * exp(a) */
		accumulate(ad, a, bin(ad, IR_MUL, g, out, loc), loc);
		return;
	case IR_LOG: /* d log(a) = g / a */
		accumulate(ad, a, bin(ad, IR_DIV, g, a, loc), loc);
		return;
	case IR_LOG1P: /* d log(1 + a) = g / (1 + a) */
		accumulate(ad, a, bin(ad, IR_DIV, g, bin(ad, IR_ADD, c(ad, 1, loc), a, loc), loc), loc);
		return;
	case IR_EXPM1: /* d (exp(a) - 1) = g (out + 1) */
		accumulate(ad, a, bin(ad, IR_MUL, g, bin(ad, IR_ADD, out, c(ad, 1, loc), loc), loc), loc);
		return;
	case IR_SQRT: /* d sqrt(a) = g / (2 sqrt(a)) */
		accumulate(ad, a, bin(ad, IR_DIV, g, bin(ad, IR_MUL, c(ad, 2, loc), out, loc), loc), loc);
		return;
	case IR_RSQRT: /* d a^-1/2 = -g a^-3/2 / 2 = -0.5 g out^3 */
		accumulate(ad, a, bin(ad, IR_MUL, bin(ad, IR_MUL, g, c(ad, -0.5, loc), loc),
				      bin(ad, IR_MUL, out, bin(ad, IR_MUL, out, out, loc), loc), loc), loc);
		return;
	case IR_ABS: /* d|a| = g sign(a) */
		accumulate(ad, a, bin(ad, IR_MUL, g, ir_unary(ad->f, IR_SIGN, a, loc), loc), loc);
		return;
	case IR_TANH: /* d tanh(a) = g (1 - out^2) */
		accumulate(ad, a, bin(ad, IR_MUL, g, bin(ad, IR_SUB, c(ad, 1, loc), bin(ad, IR_MUL, out, out, loc), loc), loc), loc);
		return;
	case IR_SIGMOID: /* d sigmoid(a) = g out (1 - out) */
		accumulate(ad, a, bin(ad, IR_MUL, g, bin(ad, IR_MUL, out, bin(ad, IR_SUB, c(ad, 1, loc), out, loc), loc), loc), loc);
		return;
	case IR_RELU: /* d relu(a) = g [a > 0] */
		accumulate(ad, a, ir_where(ad->f, bin(ad, IR_GT, a, c(ad, 0, loc), loc), g, c(ad, 0, loc), loc), loc);
		return;
	case IR_SIN: /* d sin(a) = g cos(a) */
		accumulate(ad, a, bin(ad, IR_MUL, g, ir_unary(ad->f, IR_COS, a, loc), loc), loc);
		return;
	case IR_COS: /* d cos(a) = -g sin(a) */
		accumulate(ad, a, ir_unary(ad->f, IR_NEG, bin(ad, IR_MUL, g, ir_unary(ad->f, IR_SIN, a, loc), loc), loc), loc);
		return;
	case IR_ERF: /* d erf(a) = g 2/sqrt(pi) exp(-a^2) */
		accumulate(ad, a, bin(ad, IR_MUL, bin(ad, IR_MUL, g, c(ad, 1.1283791670955126, loc), loc),
				      ir_unary(ad->f, IR_EXP, ir_unary(ad->f, IR_NEG, bin(ad, IR_MUL, a, a, loc), loc), loc), loc), loc);
		return;
	case IR_PERMUTE: { /* the adjoint goes back through the inverse permutation */
		int inv[IR_MAXRANK];
		for (int k = 0; k < in.shape.rank; k++)
			inv[in.attr.perm.axis[k]] = k;
		accumulate(ad, a, ir_permute(ad->f, g, inv, loc), loc);
		return;
	}
	case IR_SLICE: { /* out[i] = a[i + k]: a[j] gets g[j - k], the slice of g by -k to a's length */
		int ax = in.attr.range.axis;
		accumulate(ad, a, ir_slice(ad->f, g, ax, -in.attr.range.offset, ad->f->inst[a].shape.dim[ax], loc), loc);
		return;
	}
	case IR_GATHER: /* rows picked from the table: their adjoints sum back into the rows (not the indices) */
		accumulate(ad, a, ir_scatter(ad->f, g, b, ad->f->inst[a].shape.dim[0], loc), loc);
		return;
	case IR_SCATTER: /* values summed into rows: each value's adjoint is its row's */
		accumulate(ad, a, ir_gather(ad->f, g, b, loc), loc);
		return;
	case IR_SEGSUM: /* a symmetric linear map: its own adjoint */
		accumulate(ad, a, ir_segsum(ad->f, g, in.attr.segment, loc), loc);
		return;
	case IR_UNFOLD: /* each window reads the image: the adjoint sums the windows back */
		accumulate(ad, a, ir_fold(ad->f, g, in.attr, loc), loc);
		return;
	case IR_FOLD: /* fold sums windows into an image: each window's adjoint reads the image */
		accumulate(ad, a, ir_unfold(ad->f, g, in.attr, loc), loc);
		return;
	case IR_RESHAPE:
		accumulate(ad, a, ir_reshape(ad->f, g, ad->f->inst[a].shape, loc), loc);
		return;
	case IR_EXPAND: /* broadcasting sums back */
		accumulate(ad, a, g, loc);
		return;
	case IR_ADD: /* d(a + b) = g, g */
		accumulate(ad, a, g, loc);
		accumulate(ad, b, g, loc);
		return;
	case IR_SUB: /* d(a - b) = g, -g */
		accumulate(ad, a, g, loc);
		if (b >= 0 && ad->needs[b])
			accumulate(ad, b, ir_unary(ad->f, IR_NEG, g, loc), loc);
		return;
	case IR_MUL: /* d(a b) = g b, g a */
		if (ad->needs[a])
			accumulate(ad, a, bin(ad, IR_MUL, g, b, loc), loc);
		if (ad->needs[b])
			accumulate(ad, b, bin(ad, IR_MUL, g, a, loc), loc);
		return;
	case IR_DIV: /* d(a / b) = g / b, -g out / b */
		if (ad->needs[a])
			accumulate(ad, a, bin(ad, IR_DIV, g, b, loc), loc);
		if (ad->needs[b])
			accumulate(ad, b, ir_unary(ad->f, IR_NEG, bin(ad, IR_DIV, bin(ad, IR_MUL, g, out, loc), b, loc), loc), loc);
		return;
	case IR_POW: /* d a^b = g b a^(b-1), g out log(a) */
		if (ad->needs[a])
			accumulate(ad, a, bin(ad, IR_MUL, bin(ad, IR_MUL, g, b, loc),
					      bin(ad, IR_POW, a, bin(ad, IR_SUB, b, c(ad, 1, loc), loc), loc), loc), loc);
		if (ad->needs[b])
			accumulate(ad, b, bin(ad, IR_MUL, bin(ad, IR_MUL, g, out, loc), ir_unary(ad->f, IR_LOG, a, loc), loc), loc);
		return;
	case IR_MOD: /* d(a - b floor(a/b)) = g, -g floor(a/b) */
		if (ad->needs[a])
			accumulate(ad, a, g, loc);
		if (ad->needs[b])
			accumulate(ad, b, ir_unary(ad->f, IR_NEG, bin(ad, IR_MUL, g, ir_unary(ad->f, IR_FLOOR, bin(ad, IR_DIV, a, b, loc), loc), loc), loc), loc);
		return;
	case IR_ATAN2: { /* d atan2(a, b) = g b / (a^2 + b^2), -g a / (a^2 + b^2) */
		int r2 = bin(ad, IR_ADD, bin(ad, IR_MUL, a, a, loc), bin(ad, IR_MUL, b, b, loc), loc);
		if (ad->needs[a])
			accumulate(ad, a, bin(ad, IR_DIV, bin(ad, IR_MUL, g, b, loc), r2, loc), loc);
		if (ad->needs[b])
			accumulate(ad, b, ir_unary(ad->f, IR_NEG, bin(ad, IR_DIV, bin(ad, IR_MUL, g, a, loc), r2, loc), loc), loc);
		return;
	}
	case IR_MAX2: /* the larger operand takes g; a on ties */
	case IR_MIN2: {
		int pick_a = bin(ad, in.op == IR_MAX2 ? IR_GE : IR_LE, a, b, loc);
		if (ad->needs[a])
			accumulate(ad, a, ir_where(ad->f, pick_a, g, c(ad, 0, loc), loc), loc);
		if (ad->needs[b])
			accumulate(ad, b, ir_where(ad->f, pick_a, c(ad, 0, loc), g, loc), loc);
		return;
	}
	case IR_WHERE: /* d where(c, a, b) = where(c, g, 0), where(c, 0, g) */
		if (ad->needs[b])
			accumulate(ad, b, ir_where(ad->f, in.in[0], g, c(ad, 0, loc), loc), loc);
		if (in.in[2] >= 0 && ad->needs[in.in[2]])
			accumulate(ad, in.in[2], ir_where(ad->f, in.in[0], c(ad, 0, loc), g, loc), loc);
		return;
	case IR_SUM: /* d sum(a) = g broadcast back over the summed axes */
	case IR_MAX: { /* d max(a) = g where a equals the max */
		IrShape as = ad->f->inst[a].shape, kept = as;
		for (int k = 0; k < as.rank; k++)
			if (in.attr.axes & (1u << k))
				kept.dim[k] = 1;
		int ge = ir_expand(ad->f, ir_reshape(ad->f, g, kept, loc), as, loc);
		if (in.op == IR_MAX)
			ge = bin(ad, IR_MUL, ge, bin(ad, IR_EQ, a, ir_reshape(ad->f, out, kept, loc), loc), loc);
		accumulate(ad, a, ge, loc);
		return;
	}
	case IR_MATMUL: { /* C = op(A) op(B): dA = G op(B)^T, dB = op(A)^T G, each in A's and B's layout */
		int ta = in.attr.mm.ta, tb = in.attr.mm.tb;
		if (ad->needs[a])
			accumulate(ad, a, ta ? ir_matmul(ad->f, b, g, tb, 1, loc) : ir_matmul(ad->f, g, b, 0, !tb, loc), loc);
		if (ad->needs[b])
			accumulate(ad, b, tb ? ir_matmul(ad->f, g, a, 1, ta, loc) : ir_matmul(ad->f, a, g, !ta, 0, loc), loc);
		return;
	}
	case IR_STORE: case IR_NOPS:
		return;
	}
}

int ad_grad(IrFunc *f, int y, const int *wrt, int nwrt, int *out)
{
	int n = f->n;
	if (y < 0)
		return -1;
	Ad ad = {.f = f, .adj = xmalloc((size_t)n * sizeof(int)), .needs = xcalloc((size_t)n, 1)};
	for (int i = 0; i < nwrt; i++)
		if (wrt[i] >= 0)
			ad.needs[wrt[i]] = 1;
	for (int i = 0; i < n; i++) {
		const IrInst *in = &f->inst[i];
		ad.adj[i] = -1;
		if (in->op == IR_STOPGRAD)
			continue;
		for (int k = 0; k < ir_op_arity(in->op); k++)
			if (ad.needs[in->in[k]])
				ad.needs[i] = 1;
	}
	if (ad.needs[y])
		ad.adj[y] = ir_const(f, 1, f->inst[y].loc);
	for (int i = y; i >= 0; i--)
		if (ad.adj[i] >= 0 && ad.needs[i])
			rule(&ad, i, ad.adj[i]);
	for (int i = 0; i < nwrt; i++) {
		int v = wrt[i];
		out[i] = v >= 0 ? ad.adj[v] : -1;
		if (v >= 0 && out[i] < 0) /* y does not depend on it */
			out[i] = ir_expand(f, ir_const(f, 0, f->inst[v].loc), f->inst[v].shape, f->inst[v].loc);
	}
	free(ad.adj);
	free(ad.needs);
	return 0;
}
