/* ir.c: IR construction with shape inference, and the text dump. */
#include "ir.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *name;
	int arity;
	IrOpKind kind;
} op_info[IR_NOPS] = {
#define X(name, arity, kind, str) [IR_##name] = {str, arity, OPK_##kind},
	IR_OPS(X)
#undef X
};

const char *ir_op_name(IrOp op) { return op_info[op].name; }
int ir_op_arity(IrOp op) { return op_info[op].arity; }
IrOpKind ir_op_kind(IrOp op) { return op_info[op].kind; }

static void *xrealloc(void *p, size_t size)
{
	p = realloc(p, size);
	if (!p)
		die("out of memory");
	return p;
}

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
		k *= s.dim[i] == IR_BATCH ? n : s.dim[i];
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
	free(m->params);
	free(m->states);
	free(m->hparams);
	memset(m, 0, sizeof *m);
}

static int add_slot(IrSlot **v, int *n, int *cap, size_t *size, const char *name, IrShape s,
		    IrInit init, SrcLoc loc)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 16;
		*v = xrealloc(*v, *cap * sizeof **v);
	}
	/* 16-element alignment keeps every tensor on a 64-byte boundary for vector loads. */
	size_t off = (*size + 15) & ~(size_t)15;
	(*v)[*n] = (IrSlot){.name = name, .shape = s, .offset = off, .init = init, .loc = loc};
	*size = off + (size_t)ir_shape_numel(s, 1);
	return (*n)++;
}

int ir_add_param(IrModule *m, const char *name, IrShape s, IrInit init, SrcLoc loc)
{
	return add_slot(&m->params, &m->nparams, &m->capparams, &m->param_size, name, s, init, loc);
}

int ir_add_state(IrModule *m, const char *name, IrShape s, IrInit init, SrcLoc loc)
{
	return add_slot(&m->states, &m->nstates, &m->capstates, &m->state_size, name, s, init, loc);
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
	IrFunc *f = calloc(1, sizeof *f);
	if (!f)
		die("out of memory");
	f->name = name;
	return f;
}

IrFunc *ir_func_clone(const IrFunc *f, const char *name)
{
	IrFunc *g = ir_func_new(name);
	g->cap = g->n = f->n;
	g->inst = xrealloc(NULL, (f->n ? f->n : 1) * sizeof *g->inst);
	memcpy(g->inst, f->inst, f->n * sizeof *g->inst);
	return g;
}

void ir_func_free(IrFunc *f)
{
	if (!f)
		return;
	free(f->inst);
	free(f);
}

static int emit(IrFunc *f, IrInst in)
{
	if (f->n == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 64;
		f->inst = xrealloc(f->inst, f->cap * sizeof *f->inst);
	}
	f->inst[f->n] = in;
	return f->n++;
}

int ir_const(IrFunc *f, double v, SrcLoc loc)
{
	return emit(f, (IrInst){.op = IR_CONST, .in = {-1, -1, -1}, .fval = v, .loc = loc});
}

int ir_leaf(IrFunc *f, IrOp op, int ival, IrShape s, SrcLoc loc)
{
	return emit(f, (IrInst){.op = op, .in = {-1, -1, -1}, .shape = s, .ival = ival, .loc = loc});
}

int ir_unary(IrFunc *f, IrOp op, int a, SrcLoc loc)
{
	if (a < 0)
		return -1;
	return emit(f, (IrInst){.op = op, .in = {a, -1, -1}, .shape = f->inst[a].shape, .loc = loc});
}

static int broadcast_or_report(IrFunc *f, const char *what, int a, int b, IrShape *out, SrcLoc loc)
{
	if (ir_broadcast(f->inst[a].shape, f->inst[b].shape, out))
		return 1;
	char sa[64], sb[64];
	diag_error(loc, "shape mismatch in %s: %s and %s do not broadcast", what,
		   ir_shape_str(f->inst[a].shape, sa, sizeof sa), ir_shape_str(f->inst[b].shape, sb, sizeof sb));
	return 0;
}

int ir_binary(IrFunc *f, IrOp op, int a, int b, SrcLoc loc)
{
	IrShape s;
	if (a < 0 || b < 0 || !broadcast_or_report(f, ir_op_name(op), a, b, &s, loc))
		return -1;
	return emit(f, (IrInst){.op = op, .in = {a, b, -1}, .shape = s, .loc = loc});
}

int ir_where(IrFunc *f, int c, int a, int b, SrcLoc loc)
{
	IrShape s, t;
	if (c < 0 || a < 0 || b < 0 || !broadcast_or_report(f, "where", a, b, &s, loc))
		return -1;
	if (!ir_broadcast(f->inst[c].shape, s, &t)) {
		char sc[64], ss[64];
		diag_error(loc, "shape mismatch in where: condition %s does not broadcast with %s",
			   ir_shape_str(f->inst[c].shape, sc, sizeof sc), ir_shape_str(s, ss, sizeof ss));
		return -1;
	}
	return emit(f, (IrInst){.op = IR_WHERE, .in = {c, a, b}, .shape = t, .loc = loc});
}

int ir_expand(IrFunc *f, int a, IrShape to, SrcLoc loc)
{
	if (a < 0)
		return -1;
	IrShape s;
	if (!ir_broadcast(f->inst[a].shape, to, &s) || !ir_shape_eq(s, to))
		die("expand to a shape the operand does not broadcast to");
	if (ir_shape_eq(f->inst[a].shape, to))
		return a;
	return emit(f, (IrInst){.op = IR_EXPAND, .in = {a, -1, -1}, .shape = to, .loc = loc});
}

int ir_reduce(IrFunc *f, IrOp op, int a, unsigned mask, int keepdims, SrcLoc loc)
{
	if (a < 0)
		return -1;
	IrShape in = f->inst[a].shape, out = {0};
	for (int i = 0; i < in.rank; i++) {
		if (!(mask & (1u << i)))
			out.dim[out.rank++] = in.dim[i];
		else if (keepdims)
			out.dim[out.rank++] = 1;
	}
	return emit(f, (IrInst){.op = op, .in = {a, -1, -1}, .shape = out, .ival = (int)mask, .loc = loc});
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

int ir_matmul(IrFunc *f, int a, int b, int flags, SrcLoc loc)
{
	if (a < 0 || b < 0)
		return -1;
	IrShape sa = f->inst[a].shape, sb = f->inst[b].shape;
	char ba[64], bb[64];
	if (sa.rank != 2 || sb.rank != 2) {
		diag_error(loc, "matmul needs two matrices, got %s @ %s", ir_shape_str(sa, ba, sizeof ba),
			   ir_shape_str(sb, bb, sizeof bb));
		return -1;
	}
	int64_t m = sa.dim[flags & 1 ? 1 : 0], ka = sa.dim[flags & 1 ? 0 : 1];
	int64_t kb = sb.dim[flags & 2 ? 1 : 0], n = sb.dim[flags & 2 ? 0 : 1];
	if (ka != kb) {
		diag_error(loc, "shape mismatch in matmul: %s @ %s (inner dimensions differ)",
			   ir_shape_str(sa, ba, sizeof ba), ir_shape_str(sb, bb, sizeof bb));
		return -1;
	}
	IrShape s = {.rank = 2, .dim = {m, n}};
	return emit(f, (IrInst){.op = IR_MATMUL, .in = {a, b, -1}, .shape = s, .ival = flags, .loc = loc});
}

int ir_reshape(IrFunc *f, int a, IrShape to, SrcLoc loc)
{
	if (a < 0)
		return -1;
	const IrShape *s = &f->inst[a].shape;
	if (ir_shape_eq(*s, to))
		return a;
	if (ir_shape_numel(*s, 7) != ir_shape_numel(to, 7))
		die("reshape changes the element count");
	return emit(f, (IrInst){.op = IR_RESHAPE, .in = {a, -1, -1}, .shape = to, .loc = loc});
}

int ir_onehot(IrFunc *f, int a, int64_t classes, SrcLoc loc)
{
	if (a < 0)
		return -1;
	IrShape sa = f->inst[a].shape;
	if (sa.rank != 1) {
		char b[64];
		diag_error(loc, "class indices must be a vector, got %s", ir_shape_str(sa, b, sizeof b));
		return -1;
	}
	IrShape s = {.rank = 2, .dim = {sa.dim[0], classes}};
	return emit(f, (IrInst){.op = IR_ONEHOT, .in = {a, -1, -1}, .shape = s, .ival = (int)classes, .loc = loc});
}

void ir_store(IrFunc *f, IrOp op, int a, int slot, SrcLoc loc)
{
	if (a < 0)
		return;
	emit(f, (IrInst){.op = op, .in = {a, -1, -1}, .shape = f->inst[a].shape, .ival = slot, .loc = loc});
}

/* ---- dump ---- */

void ir_dump(FILE *out, const IrModule *m, const IrFunc *f)
{
	char buf[64];
	fprintf(out, "func %s\n", f->name);
	for (int i = 0; i < f->n; i++) {
		const IrInst *in = &f->inst[i];
		IrOpKind k = ir_op_kind(in->op);
		if (k == OPK_STORE)
			fprintf(out, "  %-13s", ir_op_name(in->op));
		else
			fprintf(out, "  %%%-3d = %-13s", i, ir_op_name(in->op));
		for (int j = 0; j < ir_op_arity(in->op); j++)
			fprintf(out, "%s%%%d", j ? ", " : " ", in->in[j]);
		switch (in->op) {
		case IR_CONST: fprintf(out, " %.9g", in->fval); break;
		case IR_INPUT: fprintf(out, " %s", in->ival ? "y" : "x"); break;
		case IR_PARAM: case IR_STORE_PARAM: case IR_STORE_GRAD:
			fprintf(out, " %s", m->params[in->ival].name); break;
		case IR_STATE: case IR_STORE_STATE: fprintf(out, " %s", m->states[in->ival].name); break;
		case IR_HPARAM: fprintf(out, " %s", m->hparams[in->ival].name); break;
		case IR_SUM: case IR_MAX:
			fprintf(out, " axes=");
			for (int a = 0, first = 1; a < IR_MAXRANK; a++)
				if (in->ival & (1 << a)) {
					fprintf(out, "%s%d", first ? "" : ",", a);
					first = 0;
				}
			break;
		case IR_MATMUL:
			if (in->ival)
				fprintf(out, " %s%s", in->ival & 1 ? "aT" : "", in->ival & 2 ? "bT" : "");
			break;
		case IR_ONEHOT: fprintf(out, " classes=%d", in->ival); break;
		default: break;
		}
		if (k != OPK_STORE)
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
	char *live = calloc(f->n + 1, 1);
	int *remap = malloc((f->n + 1) * sizeof *remap);
	if (!live || !remap)
		die("out of memory");
	for (int i = f->n - 1; i >= 0; i--) {
		const IrInst *in = &f->inst[i];
		if (ir_op_kind(in->op) == OPK_STORE)
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

/* Common subexpressions: an op with the same operands and attributes as an earlier one is replaced
 * by it. Every op is pure; stores are never merged. Run ir_dce afterwards. */
static uint64_t inst_hash(const IrInst *in)
{
	uint64_t h = 1469598103934665603ull;
	uint64_t words[6];
	memcpy(&words[0], &in->fval, 8);
	words[1] = (uint64_t)in->op | (uint64_t)(uint32_t)in->ival << 32;
	words[2] = (uint64_t)(uint32_t)in->in[0] | (uint64_t)(uint32_t)in->in[1] << 32;
	words[3] = (uint64_t)(uint32_t)in->in[2] | (uint64_t)(uint32_t)in->shape.rank << 32;
	words[4] = (uint64_t)in->shape.dim[0] ^ (uint64_t)in->shape.dim[1] << 21;
	words[5] = (uint64_t)in->shape.dim[2] ^ (uint64_t)in->shape.dim[3] << 21;
	for (int i = 0; i < 6; i++)
		h = (h ^ words[i]) * 1099511628211ull;
	return h;
}

static int inst_same(const IrInst *a, const IrInst *b)
{
	return a->op == b->op && a->ival == b->ival && a->in[0] == b->in[0] && a->in[1] == b->in[1]
	       && a->in[2] == b->in[2] && ir_shape_eq(a->shape, b->shape)
	       && memcmp(&a->fval, &b->fval, sizeof a->fval) == 0;
}

void ir_cse(IrFunc *f)
{
	size_t cap = 16;
	while (cap < 2 * (size_t)f->n)
		cap *= 2;
	int *table = malloc(cap * sizeof *table), *remap = malloc((f->n + 1) * sizeof *remap);
	if (!table || !remap)
		die("out of memory");
	for (size_t i = 0; i < cap; i++)
		table[i] = -1;
	for (int i = 0; i < f->n; i++) {
		IrInst *in = &f->inst[i];
		for (int k = 0; k < ir_op_arity(in->op); k++)
			in->in[k] = remap[in->in[k]];
		remap[i] = i;
		if (ir_op_kind(in->op) == OPK_STORE)
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
