/* ir.c: IR construction with shape inference, and the text dump. */
#include "ir.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- shapes ---- */

IrShape ir_shape(int rank, const int64_t *dim)
{
	IrShape s = {.rank = rank};
	for (int i = 0; i < rank; i++)
		s.dim[i] = dim[i];
	return s;
}

IrShape ir_scalar_shape(void) { return (IrShape){0}; }

int64_t ir_shape_numel(IrShape s, int64_t n)
{
	int64_t k = 1;
	for (int i = 0; i < s.rank; i++)
		if (__builtin_mul_overflow(k, s.dim[i] == IR_BATCH ? n : s.dim[i], &k))
			return INT64_MAX; /* saturates: as large as it gets */
	return k;
}

int ir_shape_eq(IrShape a, IrShape b)
{
	if (a.rank != b.rank)
		return 0;
	for (int i = 0; i < a.rank; i++)
		if (a.dim[i] != b.dim[i])
			return 0;
	return 1;
}

int ir_broadcast(IrShape a, IrShape b, IrShape *out)
{
	IrShape r = {.rank = a.rank > b.rank ? a.rank : b.rank};
	for (int i = 0; i < r.rank; i++) {
		int ia = a.rank - r.rank + i, ib = b.rank - r.rank + i;
		int64_t da = ia >= 0 ? a.dim[ia] : 1, db = ib >= 0 ? b.dim[ib] : 1;
		if (da == db || db == 1)
			r.dim[i] = da;
		else if (da == 1)
			r.dim[i] = db;
		else
			return 0;
	}
	*out = r;
	return 1;
}

char *ir_shape_str(IrShape s, char *buf, size_t len)
{
	size_t k = 0;
	k += snprintf(buf + k, len - k, "[");
	for (int i = 0; i < s.rank && k < len; i++) {
		if (s.dim[i] == IR_BATCH)
			k += snprintf(buf + k, len - k, "%sN", i ? ", " : "");
		else
			k += snprintf(buf + k, len - k, "%s%" PRId64, i ? ", " : "", s.dim[i]);
	}
	if (k < len)
		snprintf(buf + k, len - k, "]");
	return buf;
}

/* ---- module tables ---- */

void ir_module_free(IrModule *m)
{
	for (int b = 0; b < NML_NBLOCKS; b++)
		free(m->blocks[b].slot);
	free(m->hparams);
	memset(m, 0, sizeof *m);
}

int ir_add_slot(IrModule *m, NmlBlock b, const char *name, IrShape s, IrInit init, SrcLoc loc)
{
	IrBlock *t = &m->blocks[b];
	if (nml_block_layout(b) != b)
		die("ir_add_slot: block %s is laid out by another", nml_block_name(b));
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 16;
		t->slot = xrealloc(t->slot, (size_t)t->cap * sizeof *t->slot);
	}
	/* 16-element alignment keeps every tensor on a 64-byte boundary for vector loads. */
	size_t off = (t->size + 15) & ~(size_t)15;
	t->slot[t->n] = (IrSlot){.name = name, .shape = s, .offset = off, .init = init, .loc = loc};
	t->size = off + (size_t)ir_shape_numel(s, 1);
	return t->n++;
}

void ir_set_batch(IrModule *m, IrShape x, IrShape y, IrShape pred)
{
	const NmlBlock b[4] = {NML_B_X, NML_B_Y, NML_B_LOSS, NML_B_PRED};
	const IrShape s[4] = {x, y, {0}, pred};
	for (int i = 0; i < 4; i++) {
		m->blocks[b[i]].n = 0;
		m->blocks[b[i]].size = 0;
		ir_add_slot(m, b[i], intern_cstr(nml_block_name(b[i])), s[i], (IrInit){0}, (SrcLoc){0});
	}
}

int ir_add_hparam(IrModule *m, const char *name, double value, SrcLoc loc)
{
	int i = ir_find_hparam(m, name);
	if (i >= 0)
		return i;
	if (m->nhparams == m->caphparams) {
		m->caphparams = m->caphparams ? 2 * m->caphparams : 16;
		m->hparams = xrealloc(m->hparams, m->caphparams * sizeof *m->hparams);
	}
	m->hparams[m->nhparams] = (IrHparam){name, value, loc};
	return m->nhparams++;
}

int ir_find_hparam(const IrModule *m, const char *name)
{
	for (int i = 0; i < m->nhparams; i++)
		if (m->hparams[i].name == name)
			return i;
	return -1;
}

/* ---- functions ---- */

IrFunc *ir_func_new(const char *name)
{
	IrFunc *f = xcalloc(1, sizeof *f);
	f->name = name;
	return f;
}

IrFunc *ir_func_clone(const IrFunc *f, const char *name)
{
	IrFunc *g = ir_func_new(name);
	g->cap = g->n = f->n;
	g->inst = xmalloc((size_t)(f->n ? f->n : 1) * sizeof *g->inst);
	memcpy(g->inst, f->inst, (size_t)f->n * sizeof *g->inst);
	return g;
}

void ir_func_free(IrFunc *f)
{
	if (!f)
		return;
	free(f->inst);
	free(f);
}

static int append(IrFunc *f, IrInst in)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 64;
		f->inst = xrealloc(f->inst, (size_t)f->cap * sizeof *f->inst);
	}
	f->inst[f->n] = in;
	return f->n++;
}

/* f's instructions become those a pass rebuilt it into (out, which keeps f's name). */
static void take_insts(IrFunc *f, IrFunc *out)
{
	free(f->inst);
	f->inst = out->inst;
	f->n = out->n;
	f->cap = out->cap;
}

static int broadcast_or_report(const char *what, IrShape a, IrShape b, IrShape *out, SrcLoc loc)
{
	if (ir_broadcast(a, b, out))
		return 1;
	char sa[64], sb[64];
	diag_error(loc, "shape mismatch in %s: %s and %s do not broadcast", what, ir_shape_str(a, sa, sizeof sa),
		   ir_shape_str(b, sb, sizeof sb));
	return 0;
}

/* The shape of `in` by its op's shape rule (SHAPE_GIVEN: as the builder set it); 0 after reporting
 * a mismatch at in->loc. */
static int infer_shape(IrFunc *f, IrInst *in)
{
	const IrOpInfo *op = ir_op_info(in->op);
	const IrShape *a = op->arity ? &f->inst[in->in[0]].shape : NULL;
	char ba[64], bb[64];
	switch (op->shape) {
	case SHAPE_GIVEN: return 1;
	case SHAPE_SCALAR: in->shape = ir_scalar_shape(); return 1;
	case SHAPE_STORE: in->shape = *a; return 1;
	case SHAPE_BROADCAST: {
		/* where(c, a, b): the branches broadcast first, then the condition with them */
		int first = op->arity == 3;
		IrShape s = f->inst[in->in[first]].shape, t;
		for (int k = first + 1; k < op->arity; k++)
			if (!broadcast_or_report(op->name, s, f->inst[in->in[k]].shape, &s, in->loc))
				return 0;
		if (first && !ir_broadcast(*a, s, &t)) {
			diag_error(in->loc, "shape mismatch in %s: condition %s does not broadcast with %s", op->name,
				   ir_shape_str(*a, ba, sizeof ba), ir_shape_str(s, bb, sizeof bb));
			return 0;
		}
		in->shape = first ? t : s;
		return 1;
	}
	case SHAPE_REDUCE: {
		IrShape out = {0};
		for (int i = 0; i < a->rank; i++) {
			if (!(in->attr.axes & (1u << i)))
				out.dim[out.rank++] = a->dim[i];
			else if (in->shape.rank) /* the builder asked to keep the axes: rank is a flag here */
				out.dim[out.rank++] = 1;
		}
		in->shape = out;
		return 1;
	}
	case SHAPE_MATMUL: { /* matrices in the last two axes; the axes before them broadcast */
		const IrShape *b = &f->inst[in->in[1]].shape;
		if (a->rank < 2 || b->rank < 2) {
			diag_error(in->loc, "matmul needs two matrices (or stacks of them), got %s @ %s",
				   ir_shape_str(*a, ba, sizeof ba), ir_shape_str(*b, bb, sizeof bb));
			return 0;
		}
		int ta = in->attr.mm.ta, tb = in->attr.mm.tb, ra = a->rank, rb = b->rank;
		IrShape lead_a = {ra - 2}, lead_b = {rb - 2}, out;
		for (int i = 0; i < ra - 2; i++)
			lead_a.dim[i] = a->dim[i];
		for (int i = 0; i < rb - 2; i++)
			lead_b.dim[i] = b->dim[i];
		if (a->dim[ra - (ta ? 2 : 1)] != b->dim[rb - (tb ? 1 : 2)] || !ir_broadcast(lead_a, lead_b, &out)
		    || out.rank + 2 > IR_MAXRANK) {
			diag_error(in->loc, "shape mismatch in matmul: %s @ %s (%s)", ir_shape_str(*a, ba, sizeof ba),
				   ir_shape_str(*b, bb, sizeof bb),
				   a->dim[ra - (ta ? 2 : 1)] != b->dim[rb - (tb ? 1 : 2)] ? "inner dimensions differ"
											: "the stacks do not broadcast");
			return 0;
		}
		out.dim[out.rank++] = a->dim[ra - (ta ? 1 : 2)];
		out.dim[out.rank++] = b->dim[rb - (tb ? 2 : 1)];
		in->shape = out;
		return 1;
	}
	case SHAPE_PERMUTE: {
		IrShape out = {.rank = a->rank};
		unsigned seen = 0;
		for (int i = 0; i < a->rank; i++) {
			int k = in->attr.perm.axis[i];
			if (k < 0 || k >= a->rank || (seen & (1u << k)))
				die("ir: permute needs each axis once");
			seen |= 1u << k;
			out.dim[i] = a->dim[k];
		}
		in->shape = out;
		return 1;
	}
	case SHAPE_UNFOLD: case SHAPE_FOLD: {
		const IrAttr *w = &in->attr;
		int unfold = op->shape == SHAPE_UNFOLD;
		if (a->rank != (unfold ? 4 : 5)) {
			diag_error(in->loc, "%s needs %s, got %s", op->name, unfold ? "an image [N, C, H, W]" : "windows [N, C, K, OH, OW]",
				   ir_shape_str(*a, ba, sizeof ba));
			return 0;
		}
		int64_t o[2];
		for (int x = 0; x < 2; x++) {
			int64_t span = (int64_t)w->win.d[x] * (w->win.k[x] - 1) + 1;
			o[x] = (w->win.in[x] + 2 * (int64_t)w->win.p[x] - span) / w->win.s[x] + 1;
			if (w->win.k[x] < 1 || w->win.s[x] < 1 || w->win.d[x] < 1 || w->win.p[x] < 0
			    || w->win.in[x] + 2 * (int64_t)w->win.p[x] < span) {
				diag_error(in->loc, "a window of %d x %d (stride %d, padding %d, dilation %d) does not fit an "
						    "image of %d x %d", w->win.k[0], w->win.k[1], w->win.s[x], w->win.p[x],
					   w->win.d[x], w->win.in[0], w->win.in[1]);
				return 0;
			}
		}
		if (unfold)
			in->shape = (IrShape){5, {a->dim[0], a->dim[1], (int64_t)w->win.k[0] * w->win.k[1], o[0], o[1]}};
		else if (a->dim[2] != (int64_t)w->win.k[0] * w->win.k[1] || a->dim[3] != o[0] || a->dim[4] != o[1])
			die("ir: fold of windows that do not fit its attribute");
		else
			in->shape = (IrShape){4, {a->dim[0], a->dim[1], w->win.in[0], w->win.in[1]}};
		return 1;
	}
	case SHAPE_SLICE: {
		int ax = in->attr.range.axis;
		if (ax < 0 || ax >= a->rank || a->dim[ax] == IR_BATCH || in->attr.range.len < 1)
			die("ir: slice of axis %d", ax);
		in->shape = *a;
		in->shape.dim[ax] = in->attr.range.len;
		return 1;
	}
	case SHAPE_ARGMAX:
		in->shape = *a;
		for (int i = 0; i < a->rank; i++)
			if (in->attr.axes & (1u << i))
				in->shape.dim[i] = 1;
		return 1;
	case SHAPE_ONEHOT: /* indices [...] -> [..., classes] */
		if (a->rank + 1 > IR_MAXRANK) {
			diag_error(in->loc, "onehot of %s has more than %d dimensions", ir_shape_str(*a, ba, sizeof ba), IR_MAXRANK);
			return 0;
		}
		in->shape = *a;
		in->shape.dim[in->shape.rank++] = in->attr.classes;
		return 1;
	case SHAPE_EIGH: { /* eigh(a [n, n], otherwise [n, n], when []) */
		const IrShape *b = &f->inst[in->in[1]].shape, *c = &f->inst[in->in[2]].shape;
		if (a->rank != 2 || a->dim[0] != a->dim[1] || a->dim[0] == IR_BATCH || !ir_shape_eq(*a, *b) || c->rank != 0) {
			diag_error(in->loc, "eigh needs a square matrix of fixed size (and a matrix of its shape to keep, and a number "
					    "saying when), got %s", ir_shape_str(*a, ba, sizeof ba));
			return 0;
		}
		in->shape = *a;
		return 1;
	}
	case SHAPE_GATHER: case SHAPE_SCATTER: {
		/* gather (NML's take): table a [V, ...] by indices b [I...] -> [I..., ...]; scatter, only
		 * gather's adjoint: a [I..., ...] by indices b [I...] -> [classes, ...] */
		const IrShape *b = &f->inst[in->in[1]].shape;
		int gather = op->shape == SHAPE_GATHER;
		if (gather && (a->rank < 1 || a->dim[0] == IR_BATCH || b->rank + a->rank - 1 > IR_MAXRANK)) {
			diag_error(in->loc, "take of the rows of %s by indices %s: %s", ir_shape_str(*a, ba, sizeof ba),
				   ir_shape_str(*b, bb, sizeof bb),
				   a->rank < 1 ? "a number has no rows"
				   : a->dim[0] == IR_BATCH ? "the rows of a table cannot be the batch"
							   : "the result would have more than 6 dimensions");
			return 0;
		}
		for (int i = 0; !gather && i < b->rank; i++)
			if (a->rank < b->rank || a->dim[i] != b->dim[i])
				die("ir: scatter of values that do not match their indices");
		IrShape out = {0};
		if (gather) {
			out = *b;
			for (int i = 1; i < a->rank; i++)
				out.dim[out.rank++] = a->dim[i];
		} else {
			out.dim[out.rank++] = in->attr.classes;
			for (int i = b->rank; i < a->rank; i++)
				out.dim[out.rank++] = a->dim[i];
		}
		in->shape = out;
		return 1;
	}
	}
	return 0;
}

/* Checks operands (-1 propagates), infers the shape and appends. */
static int emit(IrFunc *f, IrInst in)
{
	for (int k = 0; k < ir_op_arity(in.op); k++)
		if (in.in[k] < 0)
			return -1;
	for (int k = ir_op_arity(in.op); k < 3; k++)
		in.in[k] = -1;
	return infer_shape(f, &in) ? append(f, in) : -1;
}

int ir_const(IrFunc *f, double v, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_CONST, .attr.num = v, .loc = loc});
}

int ir_load(IrFunc *f, NmlBlock b, int index, IrShape s, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_LOAD, .shape = s, .attr.slot = {b, index}, .loc = loc});
}

int ir_hparam(IrFunc *f, int index, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_HPARAM, .attr.index = index, .loc = loc});
}

int ir_scalar_leaf(IrFunc *f, IrOp op, SrcLoc loc) { return emit(f, (IrInst){.op = op, .loc = loc}); }

int ir_elementwise(IrFunc *f, IrOp op, const int *in, SrcLoc loc)
{
	if (ir_op_class(op) != OPC_ELEMWISE)
		die("ir_elementwise: %s", ir_op_name(op));
	IrInst x = {.op = op, .loc = loc};
	for (int k = 0; k < ir_op_arity(op); k++)
		x.in[k] = in[k];
	return emit(f, x);
}

int ir_unary(IrFunc *f, IrOp op, int a, SrcLoc loc) { return ir_elementwise(f, op, (int[]){a}, loc); }
int ir_binary(IrFunc *f, IrOp op, int a, int b, SrcLoc loc) { return ir_elementwise(f, op, (int[]){a, b}, loc); }
int ir_where(IrFunc *f, int c, int a, int b, SrcLoc loc) { return ir_elementwise(f, IR_WHERE, (int[]){c, a, b}, loc); }

int ir_expand(IrFunc *f, int a, IrShape to, SrcLoc loc)
{
	if (a < 0)
		return -1;
	IrShape s;
	if (!ir_broadcast(f->inst[a].shape, to, &s) || !ir_shape_eq(s, to))
		die("expand to a shape the operand does not broadcast to");
	if (ir_shape_eq(f->inst[a].shape, to))
		return a;
	return emit(f, (IrInst){.op = IR_EXPAND, .in = {a}, .shape = to, .loc = loc});
}

int ir_reduce(IrFunc *f, IrOp op, int a, unsigned mask, int keepdims, SrcLoc loc)
{
	return emit(f, (IrInst){.op = op, .in = {a}, .shape.rank = keepdims, .attr.axes = mask, .loc = loc});
}

int ir_sum_to(IrFunc *f, int g, IrShape s, SrcLoc loc)
{
	if (g < 0)
		return -1;
	IrShape gs = f->inst[g].shape;
	if (ir_shape_eq(gs, s))
		return g;
	/* Axes that broadcasting added (leading) or stretched from 1 are summed away. */
	unsigned mask = 0;
	int lead = gs.rank - s.rank;
	for (int i = 0; i < gs.rank; i++)
		if (i < lead || (s.dim[i - lead] == 1 && gs.dim[i] != 1))
			mask |= 1u << i;
	int r = ir_reduce(f, IR_SUM, g, mask, 1, loc);
	/* Drop the leading axes; the layout is the same, only the shape changes. */
	f->inst[r].shape = s;
	return r;
}

int ir_matmul(IrFunc *f, int a, int b, int ta, int tb, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_MATMUL, .in = {a, b}, .attr.mm = {ta, tb}, .loc = loc});
}

/* Elements of s, and whether s has the batch dimension (counted as 1); -1 if the count does not fit
 * in int64 (a shape written to wrap around to the right count must not pass for it). */
static int64_t static_numel(IrShape s, int *batch)
{
	int64_t k = 1;
	int over = 0;
	*batch = 0;
	for (int i = 0; i < s.rank; i++) {
		if (s.dim[i] == IR_BATCH)
			(*batch)++;
		else
			over |= __builtin_mul_overflow(k, s.dim[i], &k);
	}
	return over ? -1 : k;
}

int ir_reshape(IrFunc *f, int a, IrShape to, SrcLoc loc)
{
	if (a < 0)
		return -1;
	const IrShape *s = &f->inst[a].shape;
	if (ir_shape_eq(*s, to))
		return a;
	int bs, bt;
	int64_t ns = static_numel(*s, &bs), nt = static_numel(to, &bt);
	if (ns < 0 || nt < 0) {
		char x[64];
		diag_error(loc, "reshape %s %s: more elements than a 64-bit count holds", nt < 0 ? "to" : "of",
			   ir_shape_str(nt < 0 ? to : *s, x, sizeof x));
		return -1;
	}
	if (ns != nt || bs != bt) {
		char x[64], y[64];
		diag_error(loc, "reshape of %s to %s changes the number of elements", ir_shape_str(*s, x, sizeof x),
			   ir_shape_str(to, y, sizeof y));
		return -1;
	}
	return emit(f, (IrInst){.op = IR_RESHAPE, .in = {a}, .shape = to, .loc = loc});
}

int ir_onehot(IrFunc *f, int a, int64_t classes, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_ONEHOT, .in = {a}, .attr.classes = classes, .loc = loc});
}

int ir_permute(IrFunc *f, int a, const int *perm, SrcLoc loc)
{
	if (a < 0)
		return -1;
	IrInst in = {.op = IR_PERMUTE, .in = {a}, .loc = loc};
	int identity = 1;
	for (int i = 0; i < f->inst[a].shape.rank; i++) {
		in.attr.perm.axis[i] = (int8_t)perm[i];
		identity &= perm[i] == i;
	}
	return identity ? a : emit(f, in);
}

int ir_unfold(IrFunc *f, int a, IrAttr win, SrcLoc loc)
{
	if (a < 0)
		return -1;
	const IrShape *s = &f->inst[a].shape;
	if (s->rank == 4) {
		win.win.in[0] = (int32_t)s->dim[2];
		win.win.in[1] = (int32_t)s->dim[3];
	}
	return emit(f, (IrInst){.op = IR_UNFOLD, .in = {a}, .attr = win, .loc = loc});
}

int ir_fold(IrFunc *f, int a, IrAttr win, SrcLoc loc)
{
	win.win.neg_inf = 0;
	return emit(f, (IrInst){.op = IR_FOLD, .in = {a}, .attr = win, .loc = loc});
}

int ir_slice(IrFunc *f, int a, int axis, int64_t offset, int64_t len, SrcLoc loc)
{
	if (a < 0)
		return -1;
	if (offset == 0 && f->inst[a].shape.dim[axis] == len)
		return a;
	return emit(f, (IrInst){.op = IR_SLICE, .in = {a}, .attr.range = {axis, offset, len}, .loc = loc});
}

int ir_gather(IrFunc *f, int table, int index, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_GATHER, .in = {table, index}, .loc = loc});
}

int ir_scatter(IrFunc *f, int a, int index, int64_t rows, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_SCATTER, .in = {a, index}, .attr.classes = rows, .loc = loc});
}

int ir_eigh(IrFunc *f, int a, int otherwise, int when, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_EIGH, .in = {a, otherwise, when}, .loc = loc});
}

int ir_segsum(IrFunc *f, int a, int64_t segment, SrcLoc loc)
{
	if (a >= 0 && f->inst[a].shape.rank == 0)
		return a;
	return emit(f, (IrInst){.op = IR_SEGSUM, .in = {a}, .attr.segment = segment, .loc = loc});
}

int ir_argmax(IrFunc *f, int a, int axis, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_ARGMAX, .in = {a}, .attr.axes = 1u << axis, .loc = loc});
}

int ir_random(IrFunc *f, IrModule *m, IrShape s, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_RANDOM, .shape = s, .attr.stream = m->nstreams++, .loc = loc});
}

void ir_store(IrFunc *f, NmlBlock b, int index, int a, SrcLoc loc)
{
	emit(f, (IrInst){.op = IR_STORE, .in = {a}, .attr.slot = {b, index}, .loc = loc});
}

int ir_inline(IrFunc *dst, const IrFunc *src, int *map)
{
	for (int i = 0; i < src->n; i++) {
		const IrInst *in = &src->inst[i];
		if (map[i] >= 0) {
			if (!ir_shape_eq(dst->inst[map[i]].shape, in->shape))
				return -1;
			continue;
		}
		if (in->op == IR_STORE)
			continue;
		IrInst x = *in;
		for (int k = 0; k < ir_op_arity(x.op); k++)
			x.in[k] = map[x.in[k]];
		map[i] = append(dst, x);
	}
	return 0;
}

/* ---- dump ---- */

void ir_dump_slot(FILE *out, const IrModule *m, NmlBlock b, int index)
{
	if (nml_block_kind(b) == NML_BK_BATCH)
		fprintf(out, "%s", nml_block_name(b));
	else
		fprintf(out, "%s.%s", nml_block_name(b), ir_slot(m, b, index)->name);
}

void ir_dump_attr(FILE *out, const IrModule *m, const IrInst *in)
{
	const IrAttr *x = &in->attr;
	switch (ir_op_info(in->op)->attr) {
	case ATTR_NONE: break;
	case ATTR_NUM: fprintf(out, " %.9g", x->num); break;
	case ATTR_SLOT:
		fputc(' ', out);
		ir_dump_slot(out, m, x->slot.block, x->slot.index);
		break;
	case ATTR_INDEX: fprintf(out, " %s", m->hparams[x->index].name); break;
	case ATTR_AXES:
		fprintf(out, " axes=");
		for (int a = 0, first = 1; a < IR_MAXRANK; a++)
			if (x->axes & (1u << a)) {
				fprintf(out, "%s%d", first ? "" : ",", a);
				first = 0;
			}
		break;
	case ATTR_MATMUL:
		if (x->mm.ta || x->mm.tb)
			fprintf(out, " %s%s", x->mm.ta ? "aT" : "", x->mm.tb ? "bT" : "");
		break;
	case ATTR_CLASSES: fprintf(out, " classes=%lld", (long long)x->classes); break;
	case ATTR_SEGMENT: fprintf(out, " segment=%lld", (long long)x->segment); break;
	case ATTR_PERM:
		fprintf(out, " perm=");
		for (int a = 0; a < in->shape.rank; a++)
			fprintf(out, "%s%d", a ? "," : "", x->perm.axis[a]);
		break;
	case ATTR_RNG: fprintf(out, " stream=%u", x->stream); break;
	case ATTR_RANGE:
		fprintf(out, " axis=%d offset=%lld len=%lld", x->range.axis, (long long)x->range.offset, (long long)x->range.len);
		break;
	case ATTR_WINDOW:
		fprintf(out, " kernel=%dx%d stride=%d,%d padding=%d,%d dilation=%d,%d%s", x->win.k[0], x->win.k[1],
			x->win.s[0], x->win.s[1], x->win.p[0], x->win.p[1], x->win.d[0], x->win.d[1],
			x->win.neg_inf ? " pad=-inf" : "");
		break;
	}
}

void ir_dump(FILE *out, const IrModule *m, const IrFunc *f)
{
	char buf[64];
	fprintf(out, "func %s\n", f->name);
	for (int i = 0; i < f->n; i++) {
		const IrInst *in = &f->inst[i];
		int store = ir_op_class(in->op) == OPC_STORE;
		if (store)
			fprintf(out, "  %-13s", ir_op_name(in->op));
		else
			fprintf(out, "  %%%-3d = %-13s", i, ir_op_name(in->op));
		for (int j = 0; j < ir_op_arity(in->op); j++)
			fprintf(out, "%s%%%d", j ? ", " : " ", in->in[j]);
		ir_dump_attr(out, m, in);
		if (!store)
			fprintf(out, " : %s", ir_shape_str(in->shape, buf, sizeof buf));
		if (in->loc.file) {
			const char *base = strrchr(in->loc.file, '/');
			fprintf(out, "  @%s:%d:%d", base ? base + 1 : in->loc.file, in->loc.line, in->loc.col);
		}
		fputc('\n', out);
	}
}

/* ---- simplification ---- */

void ir_dce(IrFunc *f)
{
	char *live = xcalloc((size_t)f->n + 1, 1);
	int *remap = xmalloc(((size_t)f->n + 1) * sizeof *remap);
	for (int i = f->n - 1; i >= 0; i--) {
		const IrInst *in = &f->inst[i];
		if (ir_op_class(in->op) == OPC_STORE)
			live[i] = 1;
		if (!live[i])
			continue;
		for (int k = 0; k < ir_op_arity(in->op); k++)
			live[in->in[k]] = 1;
	}
	int n = 0;
	for (int i = 0; i < f->n; i++) {
		if (!live[i])
			continue;
		IrInst in = f->inst[i];
		for (int k = 0; k < ir_op_arity(in.op); k++)
			in.in[k] = remap[in.in[k]];
		remap[i] = n;
		f->inst[n++] = in;
	}
	f->n = n;
	free(live);
	free(remap);
}

int ir_attr_eq(IrOp op, const IrAttr *a, const IrAttr *b)
{
	switch (ir_op_info(op)->attr) {
	case ATTR_NONE: return 1;
	case ATTR_NUM: return memcmp(&a->num, &b->num, sizeof a->num) == 0; /* -0 is not 0, NaN is NaN */
	case ATTR_SLOT: return a->slot.block == b->slot.block && a->slot.index == b->slot.index;
	case ATTR_INDEX: return a->index == b->index;
	case ATTR_AXES: return a->axes == b->axes;
	case ATTR_MATMUL: return a->mm.ta == b->mm.ta && a->mm.tb == b->mm.tb;
	case ATTR_CLASSES: return a->classes == b->classes;
	case ATTR_SEGMENT: return a->segment == b->segment;
	case ATTR_PERM: return memcmp(a->perm.axis, b->perm.axis, sizeof a->perm.axis) == 0;
	case ATTR_RNG: return a->stream == b->stream;
	case ATTR_WINDOW: return memcmp(&a->win, &b->win, sizeof a->win) == 0;
	case ATTR_RANGE: return a->range.axis == b->range.axis && a->range.offset == b->range.offset && a->range.len == b->range.len;
	}
	return 0;
}

static uint64_t attr_hash(const IrInst *in)
{
	const IrAttr *a = &in->attr;
	uint64_t w = 0;
	switch (ir_op_info(in->op)->attr) {
	case ATTR_NONE: break;
	case ATTR_NUM: memcpy(&w, &a->num, sizeof w); break;
	case ATTR_SLOT: w = (uint64_t)a->slot.block << 32 | (uint32_t)a->slot.index; break;
	case ATTR_INDEX: w = (uint64_t)a->index; break;
	case ATTR_AXES: w = a->axes; break;
	case ATTR_MATMUL: w = (uint64_t)a->mm.ta << 1 | (uint64_t)a->mm.tb; break;
	case ATTR_CLASSES: w = (uint64_t)a->classes; break;
	case ATTR_SEGMENT: w = (uint64_t)a->segment; break;
	case ATTR_PERM: memcpy(&w, a->perm.axis, sizeof w < sizeof a->perm.axis ? sizeof w : sizeof a->perm.axis); break;
	case ATTR_RNG: w = a->stream; break;
	case ATTR_WINDOW: w = (uint64_t)a->win.k[0] << 48 ^ (uint64_t)a->win.s[0] << 32 ^ (uint64_t)a->win.in[0]; break;
	case ATTR_RANGE: w = (uint64_t)a->range.axis << 56 ^ (uint64_t)a->range.offset << 28 ^ (uint64_t)a->range.len; break;
	}
	return w;
}

/* Common subexpressions: an op with the same operands and attributes as an earlier one is replaced
 * by it. Every op is pure; stores are never merged. Run ir_dce afterwards. */
static uint64_t inst_hash(const IrInst *in)
{
	uint64_t h = 1469598103934665603ull;
	uint64_t words[6];
	words[0] = attr_hash(in);
	words[1] = (uint64_t)in->op;
	words[2] = (uint64_t)(uint32_t)in->in[0] | (uint64_t)(uint32_t)in->in[1] << 32;
	words[3] = (uint64_t)(uint32_t)in->in[2] | (uint64_t)(uint32_t)in->shape.rank << 32;
	words[4] = (uint64_t)in->shape.dim[0] ^ (uint64_t)in->shape.dim[1] << 21;
	words[5] = (uint64_t)in->shape.dim[2] ^ (uint64_t)in->shape.dim[3] << 21;
	for (int i = 0; i < 6; i++)
		h = (h ^ words[i]) * 1099511628211ull;
	/* A multiply carries bits upward only: without this, operands and dimensions in a word's upper half
	 * (in[1], in[2]) never reach the low bits the table index is taken from, and 80,000 parameters'
	 * updates, alike but for one operand, probed one chain (minutes). splitmix64's finalizer. */
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
	return h ^ (h >> 31);
}

static int inst_same(const IrInst *a, const IrInst *b)
{
	return a->op == b->op && a->in[0] == b->in[0] && a->in[1] == b->in[1] && a->in[2] == b->in[2]
	       && ir_shape_eq(a->shape, b->shape) && ir_attr_eq(a->op, &a->attr, &b->attr);
}

void ir_cse(IrFunc *f)
{
	size_t cap = 16;
	while (cap < 2 * (size_t)f->n)
		cap *= 2;
	int *table = xmalloc(cap * sizeof *table), *remap = xmalloc(((size_t)f->n + 1) * sizeof *remap);
	for (size_t i = 0; i < cap; i++)
		table[i] = -1;
	for (int i = 0; i < f->n; i++) {
		IrInst *in = &f->inst[i];
		for (int k = 0; k < ir_op_arity(in->op); k++)
			in->in[k] = remap[in->in[k]];
		remap[i] = i;
		if (ir_op_class(in->op) == OPC_STORE)
			continue;
		size_t j = inst_hash(in) & (cap - 1);
		for (; table[j] >= 0; j = (j + 1) & (cap - 1))
			if (inst_same(&f->inst[table[j]], in))
				break;
		if (table[j] >= 0)
			remap[i] = table[j];
		else
			table[j] = i;
	}
	free(table);
	free(remap);
}

/* ---- sums of terms (ir_distribute_sums) ---- */

enum { DIST_DEPTH = 8 }; /* elementwise ops a sum is distributed through */

typedef struct Dist {
	const IrFunc *f; /* the input */
	IrFunc *out;
	const int *map;  /* input value -> its copy in out */
	const char *late; /* per input value: computed from a reduction */
	IrShape space;   /* the summed value's shape */
	unsigned axes;   /* the sum's */
	SrcLoc loc;
} Dist;

/* Is v the same along every summed axis (its shape, aligned to the space from the right, has 1
 * there), or an expand of such a value? */
static int dist_const(const Dist *d, int v)
{
	const IrInst *in = &d->f->inst[v];
	if (in->op == IR_EXPAND)
		return dist_const(d, in->in[0]);
	const IrShape *s = &in->shape;
	if (s->rank > d->space.rank)
		return 0;
	for (int k = 0; k < d->space.rank; k++) {
		int j = k - (d->space.rank - s->rank);
		if ((d->axes >> k & 1) && j >= 0 && s->dim[j] != 1)
			return 0;
	}
	return 1;
}

/* The copy of such a value without its expand. */
static int dist_factor(const Dist *d, int v)
{
	while (d->f->inst[v].op == IR_EXPAND)
		v = d->f->inst[v].in[0];
	return d->map[v];
}

static int dist_space(const Dist *d, int v)
{
	return ir_shape_eq(d->f->inst[v].shape, d->space) && ir_op_class(d->f->inst[v].op) == OPC_ELEMWISE;
}

static int dist_factors(const Dist *d, int v, int *cf, int *nc, int *vf, int *nv, int depth);

/* Is the same along the axes, and computed from a reduction? */
static int dist_late_const(const Dist *d, int v)
{
	if (!dist_const(d, v))
		return 0;
	while (d->f->inst[v].op == IR_EXPAND)
		v = d->f->inst[v].in[0];
	return d->late[v];
}

/* Does a term of v (through sums and differences of terms over the space) have a factor that is
 * the same along the summed axes and computed from another reduction, such as a variance's
 * derivative? Only then is a sum of terms worth splitting into sums of each: a term that is such a
 * value itself (x - mean) is not, as its sum would be a difference of large sums. */
static int dist_late(const Dist *d, int v, int depth)
{
	if (!depth || !dist_space(d, v))
		return 0;
	const IrInst *in = &d->f->inst[v];
	switch (in->op) {
	case IR_ADD:
	case IR_SUB:
		return (!dist_const(d, in->in[0]) && dist_late(d, in->in[0], depth - 1)) ||
		       (!dist_const(d, in->in[1]) && dist_late(d, in->in[1], depth - 1));
	case IR_NEG: return dist_late(d, in->in[0], depth - 1);
	case IR_DIV:
		return dist_const(d, in->in[1]) && (dist_late_const(d, in->in[1]) || dist_late(d, in->in[0], depth - 1));
	case IR_MUL: {
		int cf[8], vf[8], nc = 0, nv = 0;
		if (!dist_factors(d, v, cf, &nc, vf, &nv, depth - 1))
			return 0;
		for (int k = 0; k < nc; k++)
			if (dist_late_const(d, cf[k]))
				return 1;
		return nv == 1 && dist_late(d, vf[0], depth - 1);
	}
	default: return 0;
	}
}

/* The number of elements of the space along the summed axes in mask. */
static int dist_count(const Dist *d, unsigned mask)
{
	int64_t k = 1;
	int batch = 0;
	for (int a = 0; a < d->space.rank; a++)
		if (mask >> a & 1) {
			if (d->space.dim[a] == IR_BATCH)
				batch = 1;
			else
				k *= d->space.dim[a];
		}
	int c = ir_const(d->out, (double)k, d->loc);
	return batch ? ir_binary(d->out, IR_MUL, ir_scalar_leaf(d->out, IR_ROWS, d->loc), c, d->loc) : c;
}

/* The sum of v over the summed axes of the space: v's own axes among them summed, and the ones v
 * is broadcast along counted. */
static int dist_sum(const Dist *d, int v)
{
	const IrShape *s = &d->f->inst[v].shape;
	int lead = d->space.rank - s->rank;
	unsigned own = 0, spread = 0;
	for (int a = 0; a < d->space.rank; a++)
		if ((d->axes >> a & 1) && d->space.dim[a] != 1) {
			if (a >= lead && s->dim[a - lead] != 1)
				own |= 1u << (a - lead);
			else
				spread |= 1u << a;
		}
	int r = own ? ir_reduce(d->out, IR_SUM, d->map[v], own, 1, d->loc) : d->map[v];
	return spread ? ir_binary(d->out, IR_MUL, r, dist_count(d, spread), d->loc) : r;
}

/* Factors of product v, through products over the space: those the same along the summed axes in
 * cf, the others in vf (each at most 8; 0 if more). */
static int dist_factors(const Dist *d, int v, int *cf, int *nc, int *vf, int *nv, int depth)
{
	const IrInst *in = &d->f->inst[v];
	for (int k = 0; k < 2; k++) {
		int a = in->in[k];
		if (dist_const(d, a)) {
			if (*nc == 8)
				return 0;
			cf[(*nc)++] = a;
		} else if (depth && d->f->inst[a].op == IR_MUL && dist_space(d, a)) {
			if (!dist_factors(d, a, cf, nc, vf, nv, depth - 1))
				return 0;
		} else {
			if (*nv == 8)
				return 0;
			vf[(*nv)++] = a;
		}
	}
	return 1;
}

static int by_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* The sum over the summed axes of v, as out's value (its shape keeps the summed axes as 1). */
static int dist(const Dist *d, int v, int depth)
{
	const IrInst *in = &d->f->inst[v];
	if (dist_const(d, v))
		return ir_binary(d->out, IR_MUL, dist_factor(d, v), dist_count(d, d->axes), d->loc);
	if (!depth || !dist_space(d, v))
		return dist_sum(d, v);
	switch (in->op) {
	case IR_MUL: { /* the factors the same along the axes come out of the sum */
		int cf[8], vf[8], nc = 0, nv = 0;
		if (!dist_factors(d, v, cf, &nc, vf, &nv, depth - 1) || !nc)
			return dist_sum(d, v);
		int r;
		if (nv == 1) {
			r = dist(d, vf[0], depth - 1);
		} else { /* the rest in one order, so that equal products are one (CSE) */
			int m[8];
			for (int k = 0; k < nv; k++)
				m[k] = d->map[vf[k]];
			qsort(m, (size_t)nv, sizeof *m, by_int);
			r = m[0];
			for (int k = 1; k < nv; k++)
				r = ir_binary(d->out, IR_MUL, r, m[k], d->loc);
			r = ir_reduce(d->out, IR_SUM, r, d->axes, 1, d->loc);
		}
		for (int k = 0; k < nc; k++)
			r = ir_binary(d->out, IR_MUL, r, dist_factor(d, cf[k]), d->loc);
		return r;
	}
	case IR_ADD:
	case IR_SUB: /* a sum of terms is split only to take such a factor out of one */
		if (!dist_late(d, v, depth))
			return dist_sum(d, v);
		return ir_binary(d->out, in->op, dist(d, in->in[0], depth - 1), dist(d, in->in[1], depth - 1), d->loc);
	case IR_NEG:
		if (!dist_late(d, v, depth))
			return dist_sum(d, v);
		return ir_unary(d->out, IR_NEG, dist(d, in->in[0], depth - 1), d->loc);
	case IR_DIV:
		if (!dist_const(d, in->in[1]))
			return dist_sum(d, v);
		return ir_binary(d->out, IR_DIV, dist(d, in->in[0], depth - 1), dist_factor(d, in->in[1]), d->loc);
	default:
		return dist_sum(d, v);
	}
}

/* Does a sum over axes of a value of shape s add anything up (not only axes of size 1)? */
static int sums_something(const IrShape *s, unsigned axes)
{
	for (int k = 0; k < s->rank; k++)
		if ((axes >> k & 1) && s->dim[k] != 1)
			return 1;
	return 0;
}

void ir_distribute_sums(IrFunc *f)
{
	int n = f->n;
	char *late = xcalloc((size_t)n + 1, 1);
	for (int i = 0; i < n; i++) {
		const IrInst *in = &f->inst[i];
		late[i] = ir_op_class(in->op) == OPC_REDUCE;
		for (int k = 0; k < ir_op_arity(in->op); k++)
			late[i] |= late[in->in[k]];
	}
	IrFunc out = {.name = f->name};
	int *map = xmalloc(((size_t)n + 1) * sizeof *map);
	for (int i = 0; i < n; i++) {
		IrInst in = f->inst[i];
		for (int k = 0; k < ir_op_arity(in.op); k++)
			in.in[k] = map[in.in[k]];
		map[i] = -1;
		int a = f->inst[i].in[0];
		if (in.op == IR_SUM && ir_op_class(f->inst[a].op) == OPC_ELEMWISE && sums_something(&f->inst[a].shape, in.attr.axes)) {
			Dist d = {.f = f, .out = &out, .map = map, .late = late, .space = f->inst[a].shape,
				  .axes = in.attr.axes, .loc = in.loc};
			int r = dist(&d, a, DIST_DEPTH);
			/* unless nothing came out of the sum (left to DCE), its elements, the summed axes
			 * kept as 1 or dropped as the sum's shape says */
			if (r >= 0 && out.inst[r].op != IR_SUM &&
			    ir_shape_numel(out.inst[r].shape, 1) == ir_shape_numel(in.shape, 1) &&
			    ir_shape_numel(out.inst[r].shape, 2) == ir_shape_numel(in.shape, 2))
				map[i] = ir_shape_eq(out.inst[r].shape, in.shape) ? r : ir_reshape(&out, r, in.shape, in.loc);
		}
		if (map[i] < 0)
			map[i] = append(&out, in);
	}
	take_insts(f, &out);
	free(map);
	free(late);
}

/* ---- recomputation (ir_remat) ---- */

enum {
	REMAT_BIG = 4096,  /* elements (a batch taken as 64 rows) from which a value is worth not storing */
	REMAT_FAR = 48,    /* instructions between a value and a reader for the reader to be "later" */
	REMAT_NEAR = 24,   /* instructions around the reader within which its chain's inputs must be read */
	REMAT_DEPTH = 3,   /* elementwise ops in a chain */
};

static int64_t remat_numel(const IrFunc *f, int v) { return ir_shape_numel(f->inst[v].shape, 64); }

typedef struct Remat {
	const IrFunc *f;
	int *first;   /* uses of each value, as a list: first[v], then next[use] */
	int *user, *next;
	int nuses;
} Remat;

/* Is a read within REMAT_NEAR of u? */
static int remat_near(const Remat *r, int a, int u)
{
	for (int e = r->first[a]; e >= 0; e = r->next[e])
		if (r->user[e] >= u - REMAT_NEAR && r->user[e] <= u + REMAT_NEAR)
			return 1;
	return 0;
}

/* Can v be computed again right before u: every operand as large as v itself computed again (at
 * most depth more ops) or else read near u anyway, the others broadcasts (per channel, scalars)? */
static int remat_ok(const Remat *r, int v, int u, int depth)
{
	const IrInst *in = &r->f->inst[v];
	if (depth == 0 || ir_op_class(in->op) != OPC_ELEMWISE)
		return 0;
	for (int k = 0; k < ir_op_arity(in->op); k++) {
		int a = in->in[k];
		if (remat_numel(r->f, a) < remat_numel(r->f, v) || remat_ok(r, a, u, depth - 1))
			continue;
		if (!remat_near(r, a, u))
			return 0;
	}
	return 1;
}

/* Appends v computed again before u (remat_ok) to out, reading old values through map; a value
 * already computed again near u is shared (copy, copied_at). */
static int remat_copy(const Remat *r, IrFunc *out, const int *map, int *copy, int *copied_at, int v, int u, int depth)
{
	if (copy[v] >= 0 && u - copied_at[v] <= REMAT_NEAR)
		return copy[v];
	IrInst in = r->f->inst[v];
	for (int k = 0; k < ir_op_arity(in.op); k++) {
		int a = r->f->inst[v].in[k];
		in.in[k] = remat_numel(r->f, a) >= remat_numel(r->f, v) && remat_ok(r, a, u, depth - 1)
				   ? remat_copy(r, out, map, copy, copied_at, a, u, depth - 1)
				   : map[a];
	}
	copy[v] = append(out, in);
	copied_at[v] = u;
	return copy[v];
}

void ir_remat(IrFunc *f)
{
	int n = f->n, nuse = 0;
	for (int i = 0; i < n; i++)
		nuse += ir_op_arity(f->inst[i].op);
	Remat r = {.f = f, .first = xmalloc(((size_t)n + 1) * sizeof(int)), .user = xmalloc(((size_t)nuse + 1) * sizeof(int)),
		   .next = xmalloc(((size_t)nuse + 1) * sizeof(int))};
	for (int i = 0; i < n; i++)
		r.first[i] = -1;
	for (int i = n - 1; i >= 0; i--)
		for (int k = ir_op_arity(f->inst[i].op) - 1; k >= 0; k--) {
			int a = f->inst[i].in[k];
			r.user[r.nuses] = i;
			r.next[r.nuses] = r.first[a];
			r.first[a] = r.nuses++;
		}
	IrFunc out = {.name = f->name};
	int *map = xmalloc(((size_t)n + 1) * sizeof *map);
	int *copy = xmalloc(((size_t)n + 1) * sizeof *copy), *copied_at = xmalloc(((size_t)n + 1) * sizeof *copied_at);
	for (int i = 0; i < n; i++)
		copy[i] = copied_at[i] = -1;
	for (int i = 0; i < n; i++) {
		IrInst in = f->inst[i];
		for (int k = 0; k < ir_op_arity(in.op); k++) {
			int a = in.in[k];
			in.in[k] = map[a];
			if (i - a <= REMAT_FAR || remat_numel(f, a) < REMAT_BIG)
				continue;
			if ((copy[a] >= 0 && i - copied_at[a] <= REMAT_NEAR) || remat_ok(&r, a, i, REMAT_DEPTH))
				in.in[k] = remat_copy(&r, &out, map, copy, copied_at, a, i, REMAT_DEPTH);
		}
		map[i] = append(&out, in);
	}
	take_insts(f, &out);
	free(map);
	free(copy);
	free(copied_at);
	free(r.first);
	free(r.user);
	free(r.next);
}

/* ---- updates as early as they can run (ir_hoist_updates) ---- */

/* Per slot: the last reader of its value outside the groups, and the groups reading it. */
typedef struct SlotReads {
	int *key, *last, *group, *group_last; /* group: the one group reading it, -2 for several */
	int *stores, *first_store;
	size_t cap;
} SlotReads;

static size_t slot_at(SlotReads *t, int key)
{
	size_t j = ((uint32_t)key * 0x9e3779b1u) & (t->cap - 1);
	while (t->key[j] != -1 && t->key[j] != key)
		j = (j + 1) & (t->cap - 1);
	if (t->key[j] == -1) {
		t->key[j] = key;
		t->last[j] = t->group[j] = t->group_last[j] = -1;
		t->stores[j] = 0;
		t->first_store[j] = INT_MAX;
	}
	return j;
}

static int group_of(int *g, int i)
{
	while (g[i] != i)
		i = g[i] = g[g[i]];
	return i;
}

typedef struct Place {
	int after, moved, i; /* right after instruction `after` (moved), or at its own index i */
} Place;

static int by_place(const void *a, const void *b)
{
	const Place *x = a, *y = b;
	if (x->after != y->after)
		return x->after < y->after ? -1 : 1;
	if (x->moved != y->moved)
		return x->moved - y->moved;
	return (x->i > y->i) - (x->i < y->i);
}

void ir_hoist_updates(IrFunc *f)
{
	int n = f->n;
	if (n <= 0)
		return;
	/* the slot each value's storage is (through views and stop_gradient), or -1 */
	int *slot = xmalloc((size_t)n * sizeof *slot);
	for (int i = 0; i < n; i++) {
		const IrInst *in = &f->inst[i];
		slot[i] = in->op == IR_LOAD ? ir_slot_key(in->attr.slot.block, in->attr.slot.index)
			  : (ir_op_class(in->op) == OPC_VIEW || in->op == IR_STOPGRAD) ? slot[in->in[0]] : -1;
	}
	/* feeds[i]: a store, or an elementwise op, leaf or view read by stores and such instructions
	 * only (a rule's arithmetic: not the products and sums of the backward pass, which every
	 * store depends on) */
	char *feeds = xcalloc((size_t)n, 1);
	int *readers = xcalloc((size_t)n, sizeof *readers), *fed = xcalloc((size_t)n, sizeof *fed);
	for (int i = 0; i < n; i++)
		for (int k = 0; k < ir_op_arity(f->inst[i].op); k++)
			readers[f->inst[i].in[k]]++;
	for (int i = n - 1; i >= 0; i--) {
		const IrInst *in = &f->inst[i];
		IrOpClass c = ir_op_class(in->op);
		feeds[i] = c == OPC_STORE || ((c == OPC_ELEMWISE || c == OPC_LEAF || c == OPC_VIEW) && readers[i] > 0
					      && fed[i] == readers[i]);
		for (int k = 0; k < ir_op_arity(in->op) && feeds[i]; k++)
			fed[in->in[k]]++;
	}
	/* groups: such instructions joined through their operands, but not through one number (a
	 * bias correction every parameter's update reads), which is a group of its own */
	int *g = xmalloc((size_t)n * sizeof *g);
	for (int i = 0; i < n; i++)
		g[i] = i;
	for (int i = 0; i < n; i++)
		for (int k = 0; k < ir_op_arity(f->inst[i].op) && feeds[i]; k++) {
			int a = f->inst[i].in[k];
			if (feeds[a] && ir_shape_numel(f->inst[a].shape, 2) > 1 && ir_shape_numel(f->inst[i].shape, 2) > 1)
				g[group_of(g, a)] = group_of(g, i);
		}
	SlotReads t = {.cap = 16};
	while (t.cap < 2 * (size_t)n)
		t.cap *= 2;
	t.key = xmalloc(t.cap * sizeof(int));
	t.last = xmalloc(t.cap * sizeof(int));
	t.group = xmalloc(t.cap * sizeof(int));
	t.group_last = xmalloc(t.cap * sizeof(int));
	t.stores = xmalloc(t.cap * sizeof(int));
	t.first_store = xmalloc(t.cap * sizeof(int));
	for (size_t j = 0; j < t.cap; j++)
		t.key[j] = -1;
	for (int i = 0; i < n; i++) {
		const IrInst *in = &f->inst[i];
		if (ir_op_class(in->op) == OPC_STORE) {
			size_t j = slot_at(&t, ir_slot_key(in->attr.slot.block, in->attr.slot.index));
			if (t.stores[j]++ == 0)
				t.first_store[j] = i;
		}
	}
	char *reads_new = xcalloc((size_t)n, 1);
	for (int i = 0; i < n; i++) { /* the readers of each slot's old value: those before its store */
		if (ir_op_class(f->inst[i].op) == OPC_STORE)
			continue;
		for (int k = 0; k < ir_op_arity(f->inst[i].op); k++) {
			int s = slot[f->inst[i].in[k]];
			if (s < 0)
				continue;
			size_t j = slot_at(&t, s);
			if (i > t.first_store[j]) { /* it reads the new value: it stays after the store */
				reads_new[i] = 1;
				continue;
			}
			if (!feeds[i]) {
				t.last[j] = i;
				continue;
			}
			int r = group_of(g, i);
			t.group[j] = t.group[j] == -1 || t.group[j] == r ? r : -2;
			t.group_last[j] = i;
		}
	}
	/* each group's place: after its last operand from outside it, and after the last reader of
	 * the old value of each slot it stores (another group's reader where that one was) */
	int *after = xmalloc((size_t)n * sizeof *after);
	for (int i = 0; i < n; i++)
		after[i] = -1;
	for (int i = 0; i < n; i++) {
		if (!feeds[i])
			continue;
		const IrInst *in = &f->inst[i];
		int r = group_of(g, i), at = after[r];
		if (reads_new[i] && i > at) /* not above the store it reads after (which only moves up) */
			at = i;
		for (int k = 0; k < ir_op_arity(in->op); k++) {
			int a = in->in[k], ga = feeds[a] ? group_of(g, a) : -1;
			if (ga == r)
				continue;
			int where = ga >= 0 && after[ga] < a ? after[ga] : a; /* where a ends up */
			if (where > at)
				at = where;
		}
		if (ir_op_class(in->op) == OPC_STORE) {
			size_t j = slot_at(&t, ir_slot_key(in->attr.slot.block, in->attr.slot.index));
			if (t.last[j] > at)
				at = t.last[j];
			if (t.group[j] != -1 && t.group[j] != r && t.group_last[j] > at)
				at = t.group_last[j];
			if (t.stores[j] > 1 && i > at) /* a slot stored twice keeps its stores where they are */
				at = i;
		}
		after[r] = at;
	}
	/* members past their group's place move right after it, in their order; the others stay */
	Place *pl = xmalloc((size_t)n * sizeof *pl);
	for (int i = 0; i < n; i++) {
		int at = feeds[i] ? after[group_of(g, i)] : i;
		pl[i] = at < i ? (Place){at, 1, i} : (Place){i, 0, i};
	}
	qsort(pl, (size_t)n, sizeof *pl, by_place);
	int *remap = xmalloc((size_t)n * sizeof *remap);
	IrInst *inst = xmalloc((size_t)n * sizeof *inst);
	for (int k = 0; k < n; k++) {
		IrInst in = f->inst[pl[k].i];
		for (int j = 0; j < ir_op_arity(in.op); j++)
			in.in[j] = remap[in.in[j]];
		remap[pl[k].i] = k;
		inst[k] = in;
	}
	memcpy(f->inst, inst, (size_t)n * sizeof *inst);
	free(inst);
	free(remap);
	free(pl);
	free(after);
	free(t.key);
	free(t.last);
	free(t.group);
	free(t.group_last);
	free(t.stores);
	free(t.first_store);
	free(reads_new);
	free(g);
	free(feeds);
	free(readers);
	free(fed);
	free(slot);
}
