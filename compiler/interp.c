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

static float apply(IrOp op, float a, float b, float c)
{
	switch (op) {
	case IR_NEG: return -a;
	case IR_EXP: return expf(a);
	case IR_LOG: return logf(a);
	case IR_LOG1P: return log1pf(a);
	case IR_EXPM1: return expm1f(a);
	case IR_SQRT: return sqrtf(a);
	case IR_RSQRT: return 1 / sqrtf(a);
	case IR_ABS: return fabsf(a);
	case IR_SIGN: return (float)((a > 0) - (a < 0));
	case IR_TANH: return tanhf(a);
	case IR_SIGMOID: return 1 / (1 + expf(-a));
	case IR_RELU: return a > 0 ? a : 0;
	case IR_STOPGRAD: case IR_EXPAND: return a;
	case IR_ADD: return a + b;
	case IR_SUB: return a - b;
	case IR_MUL: return a * b;
	case IR_DIV: return a / b;
	case IR_POW: return powf(a, b);
	case IR_MAX2: return fmaxf(a, b);
	case IR_MIN2: return fminf(a, b);
	case IR_LT: return a < b;
	case IR_LE: return a <= b;
	case IR_GT: return a > b;
	case IR_GE: return a >= b;
	case IR_EQ: return a == b;
	case IR_NE: return a != b;
	case IR_WHERE: return a != 0 ? b : c;
	default: die("interp: %s is not elementwise", ir_op_name(op));
	}
}

static int all_finite(const float *v, int64_t k)
{
	for (int64_t i = 0; i < k; i++)
		if (!isfinite(v[i]))
			return 0;
	return 1;
}

static float *slot(const IrModule *m, const IrInst *in, const NmlArgs *a)
{
	switch (in->op) {
	case IR_STORE_PARAM: return (float *)a->params + m->params[in->ival].offset;
	case IR_STORE_GRAD: return (float *)a->grads + m->params[in->ival].offset;
	case IR_STORE_STATE: return (float *)a->state + m->states[in->ival].offset;
	case IR_STORE_LOSS: return a->loss;
	default: return a->pred;
	}
}

int interp_run(const IrModule *m, const IrFunc *f, NmlArgs *a, int stop_at_nonfinite)
{
	int64_t n = a->n;
	float **val = calloc((size_t)f->n + 1, sizeof *val);
	int origin = -1;
	for (int i = 0; i < f->n && origin < 0; i++) {
		const IrInst *in = &f->inst[i];
		int64_t k = ir_shape_numel(in->shape, n), idx[IR_MAXRANK];
		float *out = ir_op_kind(in->op) == OPK_STORE ? NULL : (val[i] = calloc((size_t)k + 1, sizeof(float)));
		const float *x = in->in[0] >= 0 ? val[in->in[0]] : NULL;
		int operands_finite = 1;
		for (int j = 0; j < ir_op_arity(in->op); j++)
			operands_finite &= all_finite(val[in->in[j]], ir_shape_numel(f->inst[in->in[j]].shape, n));
		switch (ir_op_kind(in->op)) {
		case OPK_LEAF: {
			const float *src = NULL;
			switch (in->op) {
			case IR_CONST: out[0] = (float)in->fval; break;
			case IR_INPUT: src = in->ival ? a->y : a->x; break;
			case IR_PARAM: src = (const float *)a->params + m->params[in->ival].offset; break;
			case IR_STATE: src = (const float *)a->state + m->states[in->ival].offset; break;
			case IR_HPARAM: out[0] = (float)a->hparams[in->ival]; break;
			case IR_STEP: out[0] = (float)a->t; break;
			default: out[0] = (float)n; break;
			}
			if (src) /* a copy: a later store to the slot must not change what was read */
				memcpy(out, src, (size_t)k * sizeof *out);
			break;
		}
		case OPK_UNARY: case OPK_BINARY: case OPK_TERNARY:
			for (int64_t e = 0; e < k; e++) {
				float v[3] = {0, 0, 0};
				unflatten(&in->shape, n, e, idx);
				for (int j = 0; j < ir_op_arity(in->op); j++)
					v[j] = val[in->in[j]][bcast(&f->inst[in->in[j]].shape, &in->shape, idx, n)];
				out[e] = apply(in->op, v[0], v[1], v[2]);
			}
			break;
		case OPK_REDUCE: {
			const IrShape *s = &f->inst[in->in[0]].shape;
			for (int64_t e = 0; e < k; e++)
				out[e] = in->op == IR_MAX ? -INFINITY : 0;
			for (int64_t e = 0; e < ir_shape_numel(*s, n); e++) {
				unflatten(s, n, e, idx);
				int64_t o = 0;
				for (int d = 0; d < s->rank; d++)
					if (!(in->ival & (1 << d)))
						o = o * dim(s->dim[d], n) + idx[d];
				out[o] = in->op == IR_MAX ? fmaxf(out[o], x[e]) : out[o] + x[e];
			}
			break;
		}
		case OPK_MATMUL: {
			const IrShape *sa = &f->inst[in->in[0]].shape, *sb = &f->inst[in->in[1]].shape;
			int ta = in->ival & 1, tb = in->ival >> 1 & 1;
			int64_t rows = dim(in->shape.dim[0], n), cols = dim(in->shape.dim[1], n);
			int64_t inner = dim(sa->dim[ta ? 0 : 1], n), lda = dim(sa->dim[1], n), ldb = dim(sb->dim[1], n);
			if (rows && cols && inner)
				cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
					    (int)rows, (int)cols, (int)inner, 1, x, (int)lda, val[in->in[1]], (int)ldb, 0,
					    out, (int)cols);
			break;
		}
		case OPK_SPECIAL:
			if (in->op == IR_RESHAPE) {
				memcpy(out, x, (size_t)k * sizeof *out);
			} else { /* onehot */
				for (int64_t e = 0; e < k; e++)
					out[e] = (float)(e % in->ival) == x[e / in->ival];
			}
			break;
		case OPK_STORE:
			memcpy(slot(m, in, a), x, (size_t)k * sizeof(float));
			break;
		}
		if (stop_at_nonfinite && out && operands_finite && !all_finite(out, k))
			origin = i;
	}
	for (int i = 0; i < f->n; i++)
		free(val[i]);
	free(val);
	return origin;
}
