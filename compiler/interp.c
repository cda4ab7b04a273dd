/* interp.c: a plain interpreter of IR functions in f32, one op at a time.
 *
 * It is slow and simple on purpose: every value gets its own buffer and nothing is fused, so it can
 * say which op first produced a value that is not finite. nmlc uses it to explain a diverging run;
 * the kernels themselves come from codegen.c. */
#include "interp.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int64_t dim(int64_t d, int64_t n) { return d == IR_BATCH ? n : d; }

static void unflatten(const IrShape *s, int64_t n, int64_t flat, int64_t *idx)
{
	for (int i = s->rank - 1; i >= 0; i--) {
		int64_t d = dim(s->dim[i], n);
		idx[i] = d ? flat % d : 0;
		flat = d ? flat / d : 0;
	}
}

/* The element of shape a that broadcasts to index idx of shape o (right-aligned, size 1 repeats). */
static int64_t bcast(const IrShape *a, const IrShape *o, const int64_t *idx, int64_t n)
{
	int64_t off = 0;
	for (int i = 0; i < a->rank; i++) {
		int64_t d = dim(a->dim[i], n);
		off = off * d + (d == 1 ? 0 : idx[o->rank - a->rank + i]);
	}
	return off;
}

static int all_finite(const float *v, int64_t k)
{
	for (int64_t i = 0; i < k; i++)
		if (!isfinite(v[i]))
			return 0;
	return 1;
}

/* The first element of tensor index of block b. */
static float *slot(const IrModule *m, const NmlArgs *a, NmlBlock b, int index)
{
	return (float *)a->block[b] + ir_slot(m, b, index)->offset;
}

/* The ops with loops of their own, into out (k elements of in's shape). */
static void interp_loop(const IrFunc *f, const IrInst *in, int64_t n, const float *x, const float *y, float *out,
			const NmlArgs *a)
{
	int64_t k = ir_shape_numel(in->shape, n), idx[IR_MAXRANK];
	switch (in->op) {
	case IR_GATHER: case IR_SCATTER: { /* rows of `row` values, by the indices y */
		int gather = in->op == IR_GATHER;
		const IrShape *s = &f->inst[in->in[0]].shape;
		int64_t rows = gather ? s->dim[0] : in->attr.classes, row = (gather ? ir_shape_numel(*s, n) : k) / rows;
		int64_t m = ir_shape_numel(f->inst[in->in[1]].shape, n);
		if (!gather)
			memset(out, 0, (size_t)k * sizeof *out);
		for (int64_t i = 0; i < m; i++) {
			int inside = y[i] >= 0 && y[i] < (float)rows && y[i] == floorf(y[i]);
			int64_t r = inside ? (int64_t)y[i] : 0;
			for (int64_t j = 0; j < row; j++)
				if (gather)
					out[i * row + j] = inside ? x[r * row + j] : 0;
				else if (inside)
					out[r * row + j] += x[i * row + j];
		}
		return;
	}
	case IR_SEGSUM: {
		int64_t rows = dim(in->shape.dim[0], n), row = rows ? k / rows : 0, seg = in->attr.segment;
		for (int64_t lo = 0; lo < rows; lo += seg) {
			int64_t hi = lo + seg < rows ? lo + seg : rows;
			for (int64_t j = 0; j < row; j++) {
				float acc = 0;
				for (int64_t r = lo; r < hi; r++)
					acc += x[r * row + j];
				for (int64_t r = lo; r < hi; r++)
					out[r * row + j] = acc;
			}
		}
		return;
	}
	case IR_ONEHOT:
		for (int64_t e = 0; e < k; e++)
			out[e] = (float)(e % in->attr.classes) == x[e / in->attr.classes];
		return;
	case IR_PERMUTE: {
		const IrShape *s = &f->inst[in->in[0]].shape;
		for (int64_t e = 0; e < k; e++) {
			int64_t src[IR_MAXRANK], off = 0;
			unflatten(&in->shape, n, e, idx);
			for (int i = 0; i < s->rank; i++)
				src[in->attr.perm.axis[i]] = idx[i];
			for (int i = 0; i < s->rank; i++)
				off = off * dim(s->dim[i], n) + src[i];
			out[e] = x[off];
		}
		return;
	}
	case IR_RANDOM:
		for (int64_t e = 0; e < k; e++)
			out[e] = (float)nml_step_uniform(a->seed, a->t, in->attr.stream, e);
		return;
	case IR_UNFOLD: case IR_FOLD: { /* window element (b, c, kh, kw, oh, ow) and the image pixel it reads */
		const IrShape *win = in->op == IR_UNFOLD ? &in->shape : &f->inst[in->in[0]].shape;
		const IrAttr *w = &in->attr;
		int64_t B = dim(win->dim[0], n), C = win->dim[1], KH = w->win.k[0], KW = w->win.k[1];
		int64_t OH = win->dim[3], OW = win->dim[4], H = w->win.in[0], W = w->win.in[1];
		float pad = w->win.neg_inf ? -INFINITY : 0;
		if (in->op == IR_FOLD)
			memset(out, 0, (size_t)k * sizeof *out);
		for (int64_t bc = 0; bc < B * C; bc++)
			for (int64_t kh = 0; kh < KH; kh++)
				for (int64_t kw = 0; kw < KW; kw++)
					for (int64_t oh = 0; oh < OH; oh++)
						for (int64_t ow = 0; ow < OW; ow++) {
							int64_t h = ir_window_src(w, 0, oh, kh), x2 = ir_window_src(w, 1, ow, kw);
							int inside = h >= 0 && h < H && x2 >= 0 && x2 < W;
							int64_t e = (((bc * KH + kh) * KW + kw) * OH + oh) * OW + ow, img = (bc * H + h) * W + x2;
							if (in->op == IR_UNFOLD)
								out[e] = inside ? x[img] : pad;
							else if (inside)
								out[img] += x[e];
						}
		return;
	}
	case IR_SLICE: case IR_ARGMAX: {
		const IrShape *s = &f->inst[in->in[0]].shape;
		int ax = in->op == IR_SLICE ? in->attr.range.axis : __builtin_ctz(in->attr.axes);
		int64_t len = dim(s->dim[ax], n), stride = 1;
		for (int i = s->rank - 1; i > ax; i--)
			stride *= dim(s->dim[i], n);
		for (int64_t e = 0; e < k; e++) {
			unflatten(&in->shape, n, e, idx);
			int64_t pos = in->op == IR_SLICE ? idx[ax] + in->attr.range.offset : 0;
			idx[ax] = 0;
			int64_t base = 0;
			for (int i = 0; i < s->rank; i++)
				base = base * dim(s->dim[i], n) + idx[i];
			if (in->op == IR_SLICE) {
				out[e] = pos >= 0 && pos < len ? x[base + pos * stride] : 0;
			} else { /* the first strictly largest; NaNs are passed over */
				int64_t best = 0;
				for (int64_t j = 1; j < len; j++)
					if (x[base + j * stride] > x[base + best * stride])
						best = j;
				out[e] = (float)best;
			}
		}
		return;
	}
	default: die("interp: %s has no loop", ir_op_name(in->op));
	}
}

int interp_run(const IrModule *m, const IrFunc *f, NmlArgs *a, int stop_at_nonfinite)
{
	int64_t n = a->n;
	float **val = calloc((size_t)f->n + 1, sizeof *val);
	if (!val)
		return -2;
	int origin = -1;
	for (int i = 0; i < f->n && origin == -1; i++) {
		const IrInst *in = &f->inst[i];
		int64_t k = ir_shape_numel(in->shape, n), idx[IR_MAXRANK];
		float *out = ir_op_class(in->op) == OPC_STORE ? NULL : (val[i] = calloc((size_t)k + 1, sizeof(float)));
		if (!out && ir_op_class(in->op) != OPC_STORE) {
			origin = -2;
			break;
		}
		const float *x = in->in[0] >= 0 ? val[in->in[0]] : NULL;
		int operands_finite = 1;
		for (int j = 0; j < ir_op_arity(in->op); j++)
			operands_finite &= all_finite(val[in->in[j]], ir_shape_numel(f->inst[in->in[j]].shape, n));
		switch (ir_op_class(in->op)) {
		case OPC_LEAF: {
			const float *src = NULL;
			switch (in->op) {
			case IR_CONST: out[0] = (float)in->attr.num; break;
			case IR_LOAD: src = slot(m, a, in->attr.slot.block, in->attr.slot.index); break;
			case IR_HPARAM: out[0] = (float)a->hparams[in->attr.index]; break;
			case IR_STEP: out[0] = (float)a->t; break;
			default: out[0] = (float)n; break;
			}
			if (src) /* a copy: a later store to the slot must not change what was read */
				memcpy(out, src, (size_t)k * sizeof *out);
			break;
		}
		case OPC_ELEMWISE:
			for (int64_t e = 0; e < k; e++) {
				float v[3] = {0, 0, 0};
				unflatten(&in->shape, n, e, idx);
				for (int j = 0; j < ir_op_arity(in->op); j++)
					v[j] = val[in->in[j]][bcast(&f->inst[in->in[j]].shape, &in->shape, idx, n)];
				out[e] = (float)ir_op_eval(in->op, v[0], v[1], v[2]);
			}
			break;
		case OPC_REDUCE: {
			const IrShape *s = &f->inst[in->in[0]].shape;
			for (int64_t e = 0; e < k; e++)
				out[e] = in->op == IR_MAX ? -INFINITY : 0;
			for (int64_t e = 0; e < ir_shape_numel(*s, n); e++) {
				unflatten(s, n, e, idx);
				int64_t o = 0;
				for (int d = 0; d < s->rank; d++)
					if (!(in->attr.axes & (1u << d)))
						o = o * dim(s->dim[d], n) + idx[d];
				out[o] = (float)ir_op_eval(in->op, out[o], x[e], 0);
			}
			break;
		}
		case OPC_LIBRARY: { /* a matrix product, or a stack of them */
			const IrShape *sa = &f->inst[in->in[0]].shape, *sb = &f->inst[in->in[1]].shape, *sc = &in->shape;
			int ta = in->attr.mm.ta, tb = in->attr.mm.tb, ra = sa->rank, rb = sb->rank;
			int64_t rows = dim(sc->dim[sc->rank - 2], n), cols = dim(sc->dim[sc->rank - 1], n);
			int64_t inner = dim(sa->dim[ra - (ta ? 2 : 1)], n), lda = dim(sa->dim[ra - 1], n), ldb = dim(sb->dim[rb - 1], n);
			int64_t size_a = dim(sa->dim[ra - 2], n) * lda, size_b = dim(sb->dim[rb - 2], n) * ldb;
			IrShape la = {ra - 2}, lb = {rb - 2}, lc = {sc->rank - 2};
			memcpy(la.dim, sa->dim, sizeof la.dim);
			memcpy(lb.dim, sb->dim, sizeof lb.dim);
			memcpy(lc.dim, sc->dim, sizeof lc.dim);
			for (int64_t e = 0; rows && cols && e < ir_shape_numel(lc, n); e++) {
				unflatten(&lc, n, e, idx);
				float *c = out + e * rows * cols;
				if (!inner) {
					memset(c, 0, (size_t)(rows * cols) * sizeof *c);
					continue;
				}
				cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
					    (int)rows, (int)cols, (int)inner, 1, x + bcast(&la, &lc, idx, n) * size_a, (int)lda,
					    val[in->in[1]] + bcast(&lb, &lc, idx, n) * size_b, (int)ldb, 0, c, (int)cols);
			}
			break;
		}
		case OPC_VIEW:
			memcpy(out, x, (size_t)k * sizeof *out);
			break;
		case OPC_LOOP:
			if (in->op == IR_EIGH)
				nml_eigh_f32(in->shape.dim[0], x, val[in->in[1]], val[in->in[2]][0], out);
			else
				interp_loop(f, in, n, x, in->in[1] >= 0 ? val[in->in[1]] : NULL, out, a);
			break;
		case OPC_STORE: {
			/* stored values broadcast into the slot, as in a kernel */
			NmlBlock b = in->attr.slot.block;
			float *dst = slot(m, a, b, in->attr.slot.index);
			if (nml_block_kind(b) == NML_BK_BATCH) {
				memcpy(dst, x, (size_t)k * sizeof(float));
				break;
			}
			const IrShape *ds = &ir_slot(m, b, in->attr.slot.index)->shape;
			for (int64_t e = 0; e < ir_shape_numel(*ds, n); e++) {
				unflatten(ds, n, e, idx);
				dst[e] = x[bcast(&f->inst[in->in[0]].shape, ds, idx, n)];
			}
			break;
		}
		}
		if (stop_at_nonfinite && out && operands_finite && !all_finite(out, k))
			origin = i;
	}
	for (int i = 0; i < f->n; i++)
		free(val[i]);
	free(val);
	return origin;
}
