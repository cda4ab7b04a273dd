/* lower.c: from the syntax tree to tensor IR, by evaluating the train block. */
#include "lower.h"
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#include "autodiff.h"
#include "grammar.h"

enum { LOWER_MAX_DEPTH = 64 };

typedef struct Binding {
	const char *name;
	Value v;
} Binding;

struct Env {
	Env *parent;
	Binding *b;
	int n, cap;
};

struct Instance {
	AstNode *layer;
	const char *path; /* "l1." */
	Env *env;         /* formals and members */
	AstNode *forward;
	SrcLoc made;      /* the call that made it */
	const char *note; /* "in l1 (a Linear)": the context of errors inside it */
};

static const Value none = {V_NONE};

/* ---- environments ---- */

Env *lower_env_new(Lower *L, Env *parent)
{
	Env *e = arena_alloc(L->arena, sizeof *e);
	e->parent = parent;
	return e;
}

void lower_bind(Lower *L, Env *env, const char *name, Value v)
{
	Value *old = lower_lookup_local(env, name);
	if (old) {
		*old = v;
		return;
	}
	if (env->n == env->cap) {
		int cap = env->cap ? 2 * env->cap : 8;
		Binding *b = arena_alloc(L->arena, cap * sizeof *b);
		if (env->n)
			memcpy(b, env->b, env->n * sizeof *b);
		env->b = b;
		env->cap = cap;
	}
	env->b[env->n++] = (Binding){name, v};
}

Value *lower_lookup_local(Env *env, const char *name)
{
	for (int i = 0; i < env->n; i++)
		if (env->b[i].name == name)
			return &env->b[i].v;
	return NULL;
}

Value *lower_lookup(Env *env, const char *name)
{
	for (; env; env = env->parent) {
		Value *v = lower_lookup_local(env, name);
		if (v)
			return v;
	}
	return NULL;
}

const char *lower_model_name(const Lower *L) { return L->model ? L->model->layer->name : "?"; }

void lower_init(Lower *L, Arena *arena, const SemaGlobals *g, IrModule *mod)
{
	*L = (Lower){.arena = arena, .globals = g, .mod = mod, .pred = -1, .loss = -1};
	L->global_env = lower_env_new(L, NULL);
	L->prefix = "";
}

/* ---- values ---- */

static Value num(double x) { return (Value){.kind = V_NUM, .num = x}; }
static Value tensor(int id) { return id < 0 ? none : (Value){.kind = V_TENSOR, .id = id}; }

static const char *kind_name(ValueKind k)
{
	static const char *const names[] = {"nothing", "number", "tensor", "string", "list", "parameter",
					    "buffer", "layer instance", "definition", "builtin", "initializer",
					    "data source", "optimizer"};
	return names[k];
}

int lower_param_value(Lower *L, int slot)
{
	if (slot >= L->nparam_leaf) {
		int n = ir_block(L->mod, NML_B_PARAMS)->n + 16;
		L->param_leaf = xrealloc(L->param_leaf, (size_t)n * sizeof *L->param_leaf);
		for (int i = L->nparam_leaf; i < n; i++)
			L->param_leaf[i] = -1;
		L->nparam_leaf = n;
	}
	if (L->param_leaf[slot] < 0) {
		const IrSlot *s = ir_slot(L->mod, NML_B_PARAMS, slot);
		int v = ir_load(L->fn, NML_B_PARAMS, slot, s->shape, s->loc);
		if (!L->training && slot < L->neval_slot && L->eval_slot[slot] >= 0) {
			/* evaluation reads the rule's evaluation weights, once a step has made them */
			int first = L->accumulate > 1 /* before the first update */
				? ir_binary(L->fn, IR_LT, ir_scalar_leaf(L->fn, IR_STEP, s->loc), ir_const(L->fn, (double)L->accumulate, s->loc), s->loc)
				: ir_binary(L->fn, IR_EQ, ir_scalar_leaf(L->fn, IR_STEP, s->loc), ir_const(L->fn, 0, s->loc), s->loc);
			v = ir_where(L->fn, first, v, ir_load(L->fn, NML_B_STATE, L->eval_slot[slot], s->shape, s->loc), s->loc);
		}
		L->param_leaf[slot] = v;
	}
	return L->param_leaf[slot];
}

/* A buffer read in the function being built: its value as assigned so far, else its stored one. */
static int buffer_value(Lower *L, int slot)
{
	if (slot < L->nbuf_value && L->buf_value[slot] >= 0)
		return L->buf_value[slot];
	const IrSlot *s = ir_slot(L->mod, NML_B_BUFFERS, slot);
	return ir_load(L->fn, NML_B_BUFFERS, slot, s->shape, s->loc);
}

int lower_buffer_value(const Lower *L, int slot) { return slot < L->nbuf_value ? L->buf_value[slot] : -1; }

/* name = v in a forward or function, where name is a buffer of the layer: its new value, stored by
 * the training step (and read by what follows in the same pass). */
static void assign_buffer(Lower *L, int slot, Value v, const AstNode *st)
{
	const IrSlot *s = ir_slot(L->mod, NML_B_BUFFERS, slot);
	int x = lower_tensor(L, v, st->loc);
	if (x < 0)
		return;
	IrShape b;
	const IrShape *vs = ir_shape_of(L->fn, x);
	if (!ir_broadcast(*vs, s->shape, &b) || !ir_shape_eq(b, s->shape)) {
		char x1[64], x2[64];
		diag_error(st->loc, "the new value of buffer '%s' has shape %s, the buffer is %s", st->name,
			   ir_shape_str(*vs, x1, sizeof x1), ir_shape_str(s->shape, x2, sizeof x2));
		return;
	}
	int n = ir_block(L->mod, NML_B_BUFFERS)->n;
	if (L->nbuf_value < n) {
		L->buf_value = xrealloc(L->buf_value, (size_t)n * sizeof *L->buf_value);
		L->buf_update = xrealloc(L->buf_update, (size_t)n * sizeof *L->buf_update);
		for (int i = L->nbuf_value; i < n; i++)
			L->buf_value[i] = -1;
		L->nbuf_value = n;
	}
	if (L->buf_value[slot] < 0)
		L->buf_update[L->nbuf_update++] = slot;
	L->buf_value[slot] = ir_expand(L->fn, x, s->shape, st->loc);
}

int lower_tensor(Lower *L, Value v, SrcLoc loc)
{
	switch (v.kind) {
	case V_TENSOR: return v.id;
	case V_NUM: return ir_const(L->fn, v.num, loc);
	case V_PARAM: return lower_param_value(L, v.id);
	case V_BUF: return buffer_value(L, v.id);
	case V_NONE: return -1; /* an error was reported already */
	case V_LIST: { /* [0.5, 1, 2]: a constant vector, each number placed by a zero-padded slice */
		int acc = -1;
		for (int i = 0; i < v.nitems; i++) {
			if (v.items[i].kind != V_NUM) {
				diag_error(loc, "a list used as a tensor holds numbers only");
				return -1;
			}
			int one = ir_reshape(L->fn, ir_const(L->fn, v.items[i].num, loc), (IrShape){1, {1}}, loc);
			int placed = ir_slice(L->fn, one, 0, -i, v.nitems, loc);
			acc = acc < 0 ? placed : ir_binary(L->fn, IR_ADD, acc, placed, loc);
		}
		if (acc < 0)
			diag_error(loc, "an empty list is not a tensor");
		return acc;
	}
	default:
		diag_error(loc, "expected a tensor, got a %s", kind_name(v.kind));
		return -1;
	}
}

static int need_fn(Lower *L, SrcLoc loc, const char *what)
{
	if (L->fn)
		return 1;
	diag_error(loc, "%s needs tensors, which exist only inside a forward, a function or the loss", what);
	return 0;
}

static int as_int(Value v, SrcLoc loc, const char *what, int64_t *out)
{
	if (v.kind == V_NONE)
		return 0;
	if (v.kind != V_NUM || v.num != floor(v.num) || fabs(v.num) > 1e15) {
		diag_error(loc, "%s must be a whole number known at compile time", what);
		return 0;
	}
	*out = (int64_t)v.num;
	return 1;
}

/* ---- operators ---- */

static IrOp binop_of(int tk)
{
	switch (tk) {
	case TK_PLUS: return IR_ADD;
	case TK_MINUS: return IR_SUB;
	case TK_STAR: return IR_MUL;
	case TK_SLASH: return IR_DIV;
	case TK_PERCENT: return IR_MOD;
	case TK_CARET: return IR_POW;
	case TK_LT: return IR_LT;
	case TK_LE: return IR_LE;
	case TK_GT: return IR_GT;
	case TK_GE: return IR_GE;
	case TK_EQ: return IR_EQ;
	case TK_NE: return IR_NE;
	default: return IR_MATMUL;
	}
}

static int is_num(Value v, double x) { return v.kind == V_NUM && v.num == x; }

/* v is a matrix's transpose */
static int is_transpose(const IrFunc *f, int v)
{
	const IrInst *in = v >= 0 ? &f->inst[v] : NULL;
	return in && in->op == IR_PERMUTE && in->shape.rank == 2 && in->attr.perm.axis[0] == 1;
}

static Value binary(Lower *L, int tk, Value a, Value b, SrcLoc loc)
{
	if (a.kind == V_NONE || b.kind == V_NONE)
		return none;
	IrOp op = binop_of(tk);
	if (a.kind == V_NUM && b.kind == V_NUM && op != IR_MATMUL)
		return num(ir_op_eval(op, a.num, b.num, 0));
	if (!need_fn(L, loc, "this operator"))
		return none;
	/* Identities with a scalar constant leave the tensor operand's shape as it is. */
	if (((op == IR_ADD || op == IR_SUB) && is_num(b, 0)) || ((op == IR_MUL || op == IR_DIV) && is_num(b, 1)))
		return a;
	if ((op == IR_ADD && is_num(a, 0)) || (op == IR_MUL && is_num(a, 1)))
		return b;
	/* Small integer powers are products: exact, and cheaper than pow. */
	if (op == IR_POW && b.kind == V_NUM && (b.num == 1 || b.num == 2)) {
		int x = lower_tensor(L, a, loc);
		return tensor(b.num == 1 ? x : ir_binary(L->fn, IR_MUL, x, x, loc));
	}
	int x = lower_tensor(L, a, loc), y = lower_tensor(L, b, loc);
	if (op == IR_MATMUL) { /* a transposed operand is the product's flag, not a copy */
		int ta = is_transpose(L->fn, x), tb = is_transpose(L->fn, y);
		return tensor(ir_matmul(L->fn, ta ? L->fn->inst[x].in[0] : x, tb ? L->fn->inst[y].in[0] : y, ta, tb, loc));
	}
	return tensor(ir_binary(L->fn, op, x, y, loc));
}

/* ---- calls ---- */

static Value eval_body(Lower *L, Env *env, const AstList *body);
static Value instantiate(Lower *L, Env *callenv, AstNode *call, AstNode *layer);

int lower_bind_args(Lower *L, Env *callenv, AstNode *call, const AstList *formals, Env *env)
{
	int ok = 1, pos = 0, nformals = 0;
	Value given[64];
	int have[64] = {0};
	for (const AstNode *f = formals->head; f; f = f->next)
		nformals++;
	for (AstNode *a = call->args.head; a; a = a->next) {
		int i = pos;
		if (a->kind == AST_NAMED) {
			i = 0;
			const AstNode *f = formals->head;
			for (; f && f->name != a->name; f = f->next)
				i++;
			if (!f) { /* sema checks a def's calls; a layer's forward, called as a value, is checked here */
				char names[256];
				size_t len = 0;
				names[0] = 0;
				for (const AstNode *g = formals->head; g && len < sizeof names; g = g->next)
					len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", g == formals->head ? "" : ", ",
								g->name);
				diag_error(a->loc, "no parameter named '%s' (the parameters: %s)", a->name,
					   formals->head ? names : "none");
				ok = 0;
				continue;
			}
		} else {
			pos++;
			if (i >= nformals) {
				diag_error(a->loc, "too many arguments: this takes %d, and this is argument %d", nformals, i + 1);
				ok = 0;
				continue;
			}
		}
		if (i >= 64)
			continue; /* sema reported it */
		given[i] = lower_expr(L, callenv, a->kind == AST_NAMED ? a->rhs : a);
		have[i] = 1;
		ok &= given[i].kind != V_NONE;
	}
	int i = 0;
	for (const AstNode *f = formals->head; f; f = f->next, i++) {
		if (!(i < 64 && have[i]) && !f->rhs && ok) {
			diag_error(call->loc, "missing argument '%s' (this takes %d)", f->name, nformals);
			ok = 0;
		}
		Value v = i < 64 && have[i] ? given[i] : f->rhs ? lower_expr(L, env, f->rhs) : none;
		ok &= v.kind != V_NONE;
		lower_bind(L, env, f->name, v);
	}
	return ok;
}

/* Inlines a function or forward body for call. An error inside it is followed by a note: context
 * at ctx_loc (the instance's making, or the call itself for a function). */
static Value call_fn(Lower *L, Env *callenv, AstNode *call, Env *parent, const AstList *formals,
		     AstNode *expr, const AstList *body, SrcLoc ctx_loc, const char *context)
{
	if (L->depth >= LOWER_MAX_DEPTH) {
		diag_error(call->loc, "calls nested more than %d deep (recursion?)", LOWER_MAX_DEPTH);
		return none;
	}
	Env *env = lower_env_new(L, parent);
	if (!lower_bind_args(L, callenv, call, formals, env))
		return none;
	L->depth++;
	diag_push_context(ctx_loc, context);
	Value v = expr ? lower_expr(L, env, expr) : eval_body(L, env, body);
	diag_pop_context();
	L->depth--;
	return v;
}

/* One axis of a tensor of shape s (negative: from the end), as a number 0 .. rank-1. */
static int one_axis(Value v, SrcLoc loc, const IrShape *s, int *out)
{
	int64_t axis;
	if (!as_int(v, loc, "an axis", &axis))
		return 0;
	if (axis < -s->rank || axis >= s->rank) {
		diag_error(loc, "axis %lld is out of range for a tensor of rank %d", (long long)axis, s->rank);
		return 0;
	}
	*out = (int)(axis < 0 ? axis + s->rank : axis);
	return 1;
}

/* An axis, or a list of axes ([0, 2]), as a bit mask. */
static int axis_mask(Lower *L, Env *env, AstNode *arg, const IrShape *s, unsigned *mask)
{
	Value v = lower_expr(L, env, arg);
	*mask = 0;
	int n = v.kind == V_LIST ? v.nitems : 1, axis;
	for (int i = 0; i < n; i++) {
		if (!one_axis(v.kind == V_LIST ? v.items[i] : v, arg->loc, s, &axis))
			return 0;
		if (*mask & (1u << axis)) {
			diag_error(arg->loc, "axis %d is listed twice", axis);
			return 0;
		}
		*mask |= 1u << axis;
	}
	if (!*mask)
		diag_error(arg->loc, "an empty list of axes");
	return *mask != 0;
}

/* A list of whole numbers known at compile time, at most max of them; returns how many, or -1. */
static int int_list(Lower *L, Env *env, AstNode *arg, int64_t *out, int max, const char *what)
{
	Value v = lower_expr(L, env, arg);
	if (v.kind == V_NONE)
		return -1;
	if (v.kind != V_LIST) {
		diag_error(arg->loc, "%s is a list such as [1, 28, 28]", what);
		return -1;
	}
	if (v.nitems > max) {
		diag_error(arg->loc, "%s has %d entries, at most %d", what, v.nitems, max);
		return -1;
	}
	for (int i = 0; i < v.nitems; i++)
		if (!as_int(v.items[i], arg->loc, what, &out[i]))
			return -1;
	return v.nitems;
}

/* reshape(x, dims): for a tensor with the batch dimension, dims is the shape of one row (the
 * batch stays first); one entry may be -1, for what the others leave. */
static Value reshape(Lower *L, Env *env, AstNode *call, int x, AstNode *dims_arg, int flatten)
{
	if (x < 0)
		return none;
	IrShape s = *ir_shape_of(L->fn, x), to = {0};
	int batch = s.rank > 0 && s.dim[0] == IR_BATCH;
	int64_t rest = 1, dims[IR_MAXRANK];
	for (int i = batch; i < s.rank; i++) {
		if (s.dim[i] == IR_BATCH) {
			diag_error(call->loc, "reshape of a tensor with the batch dimension after the first axis");
			return none;
		}
		if (__builtin_mul_overflow(rest, s.dim[i], &rest)) {
			diag_error(call->loc, "reshape of a tensor of more elements than a 64-bit count holds");
			return none;
		}
	}
	int n = flatten ? 1 : int_list(L, env, dims_arg, dims, IR_MAXRANK - batch, "the new shape");
	if (n < 0)
		return none;
	if (flatten)
		dims[0] = rest;
	if (batch)
		to.dim[to.rank++] = IR_BATCH;
	int infer = -1;
	int64_t known = 1;
	for (int i = 0; i < n; i++) {
		if (dims[i] == -1 && infer < 0) {
			infer = to.rank;
		} else if (dims[i] < 1) {
			diag_error(dims_arg->loc, "a dimension of the new shape must be positive (or one -1), got %lld",
				   (long long)dims[i]);
			return none;
		} else if (__builtin_mul_overflow(known, dims[i], &known)) {
			diag_error(dims_arg->loc, "the new shape has more elements than a 64-bit count holds");
			return none;
		}
		to.dim[to.rank++] = dims[i];
	}
	if (infer >= 0 && known > 0 && rest % known == 0)
		to.dim[infer] = rest / known;
	return tensor(ir_reshape(L->fn, x, to, call->loc));
}

/* The elements the axes in mask hold, not counting the batch axis (*batch says whether it is one). */
static double reduced_count(const IrShape *s, unsigned mask, int *batch)
{
	double k = 1;
	*batch = 0;
	for (int i = 0; i < s->rank; i++)
		if (mask & (1u << i)) {
			if (s->dim[i] == IR_BATCH)
				*batch = 1;
			else
				k *= (double)s->dim[i];
		}
	return k;
}

/* sum, mean, max and min over one axis (kept, size 1) or over everything (a scalar). */
static Value reduce(Lower *L, Env *env, int b, AstNode *call, Value x, AstNode *axis_arg)
{
	int v = lower_tensor(L, x, call->loc);
	if (v < 0)
		return none;
	IrShape s = *ir_shape_of(L->fn, v);
	unsigned mask = (1u << s.rank) - 1;
	if (axis_arg && !axis_mask(L, env, axis_arg, &s, &mask))
		return none;
	int keep = axis_arg != NULL;
	SrcLoc loc = call->loc;
	if (b == BI_min) /* min(x) = -max(-x) */
		return tensor(ir_unary(L->fn, IR_NEG,
				       ir_reduce(L->fn, IR_MAX, ir_unary(L->fn, IR_NEG, v, loc), mask, keep, loc), loc));
	if (b == BI_max)
		return tensor(ir_reduce(L->fn, IR_MAX, v, mask, keep, loc));
	int r = ir_reduce(L->fn, IR_SUM, v, mask, keep, loc);
	if (b == BI_sum)
		return tensor(r);
	int batch;
	double count = reduced_count(&s, mask, &batch);
	if (count != 1)
		r = ir_binary(L->fn, IR_MUL, r, ir_const(L->fn, 1.0 / count, loc), loc);
	if (batch)
		r = ir_binary(L->fn, IR_DIV, r, ir_scalar_leaf(L->fn, IR_ROWS, loc), loc);
	return tensor(r);
}

static const char *str_arg(Lower *L, Env *env, AstNode *a)
{
	Value v = lower_expr(L, env, a);
	if (v.kind == V_STR)
		return v.str;
	if (v.kind != V_NONE)
		diag_error(a->loc, "expected a string");
	return NULL;
}

/* Arguments of a builtin call in declaration order: positional first, then by name. */
static void builtin_args(int b, AstNode *call, AstNode **out, int max)
{
	const SemaBuiltinInfo *info = sema_builtin_info(b);
	int pos = 0;
	for (int i = 0; i < max; i++)
		out[i] = NULL;
	for (AstNode *a = call->args.head; a; a = a->next) {
		if (a->kind != AST_NAMED) {
			if (pos < max)
				out[pos] = a;
			pos++;
			continue;
		}
		/* The named parameters are the last ones of the builtin, in the order listed. */
		int nnamed = 0, slot = -1;
		for (const char *p = info->named; p && *p; nnamed++) {
			const char *end = strchr(p, ' ');
			size_t n = end ? (size_t)(end - p) : strlen(p);
			if (strlen(a->name) == n && strncmp(p, a->name, n) == 0)
				slot = nnamed;
			p = end ? end + 1 : p + n;
		}
		if (slot < 0)
			continue; /* sema reported it */
		slot += info->max_args - nnamed;
		if (slot < max && !out[slot])
			out[slot] = a->rhs;
	}
}

/* A builtin that is an elementwise op (ops.h): folded when every operand is a number. */
static Value apply_op(Lower *L, Env *env, IrOp op, AstNode *call)
{
	Value x[3];
	int n = 0, folds = 1;
	for (AstNode *a = call->args.head; a && n < 3; a = a->next, n++) {
		x[n] = lower_expr(L, env, a);
		if (x[n].kind == V_NONE)
			return none;
		folds &= x[n].kind == V_NUM;
	}
	if (folds)
		return num(ir_op_eval(op, x[0].num, n > 1 ? x[1].num : 0, n > 2 ? x[2].num : 0));
	if (!need_fn(L, call->loc, ir_op_info(op)->builtin))
		return none;
	int in[3];
	for (int k = 0; k < n; k++)
		in[k] = lower_tensor(L, x[k], call->loc);
	return tensor(ir_elementwise(L->fn, op, in, call->loc));
}

/* A barrier of this statement computed already (from the parameters as they stood before it). */
static int barrier_find(const Lower *L, const AstNode *call)
{
	for (int i = 0; i < L->nbarrier; i++)
		if (L->barrier[i].node == call)
			return i;
	return -1;
}

static void barrier_add(Lower *L, AstNode *call, int value, int *grads)
{
	enum { MAX = sizeof L->barrier / sizeof L->barrier[0] };
	if (L->nbarrier == MAX) {
		diag_error(call->loc, "more than %d global reductions and grad_at in one statement", MAX);
		return;
	}
	L->barrier[L->nbarrier].node = call;
	L->barrier[L->nbarrier].value = value;
	L->barrier[L->nbarrier++].grads = grads;
}

static Value call_builtin(Lower *L, Env *env, int b, AstNode *call)
{
	AstNode *arg[6];
	builtin_args(b, call, arg, 6);
	SrcLoc loc = call->loc;
	int op = sema_builtin_op(b);
	if (op >= 0)
		return apply_op(L, env, (IrOp)op, call);
	switch (b) {
	case BI_sum: case BI_mean: case BI_max: case BI_min: {
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NONE || !need_fn(L, loc, sema_builtin_info(b)->name))
			return none;
		/* max(a, b) and min(a, b) with two positional operands are elementwise. */
		int positional2 = call->args.n == 2 && call->args.head->next->kind != AST_NAMED;
		if ((b == BI_max || b == BI_min) && positional2) {
			Value y = lower_expr(L, env, arg[1]);
			if (y.kind == V_NONE)
				return none;
			return tensor(ir_binary(L->fn, b == BI_max ? IR_MAX2 : IR_MIN2, lower_tensor(L, x, loc),
						lower_tensor(L, y, loc), loc));
		}
		return reduce(L, env, b, call, x, arg[1]);
	}
	case BI_where: {
		/* A condition known at compile time chooses a branch; the other is not evaluated, so it
		 * may use shapes only the chosen one has (a rule's where(ndim(p) >= 2, dim(p, 1), 1)). */
		Value c = lower_expr(L, env, arg[0]);
		if (c.kind == V_NUM)
			return lower_expr(L, env, arg[c.num != 0 ? 1 : 2]);
		Value x = lower_expr(L, env, arg[1]), y = lower_expr(L, env, arg[2]);
		if (c.kind == V_NONE || x.kind == V_NONE || y.kind == V_NONE)
			return none;
		if (!need_fn(L, loc, "where"))
			return none;
		return tensor(ir_where(L->fn, lower_tensor(L, c, loc), lower_tensor(L, x, loc),
				       lower_tensor(L, y, loc), loc));
	}
	case BI_chain: { /* chain(rule, ...): the rules applied in order, each seeing g as the last left it */
		Value v = {.kind = V_OPT, .node = call, .env = env};
		v.items = arena_alloc(L->arena, 64 * sizeof *v.items);
		for (AstNode *a = call->args.head; a; a = a->next) {
			Value r = lower_expr(L, env, a);
			if (r.kind == V_NONE)
				return none;
			if (r.kind != V_OPT) {
				diag_error(a->loc, "chain takes optimizers and transforms, not a %s", kind_name(r.kind));
				return none;
			}
			int n = r.items ? r.nitems : 1;
			for (int k = 0; k < n; k++) { /* a chain in a chain is flattened */
				if (v.nitems == 64) {
					diag_error(a->loc, "a chain of more than 64 rules");
					return none;
				}
				v.items[v.nitems++] = r.items ? r.items[k] : r;
			}
		}
		return v;
	}
	case BI_only: case BI_except: {
		/* only("tag", rule): the rule updates the parameters declared with @tag ("matrix": of 2 or
		 * more dimensions, "vector": of fewer); except("tag", rule) the others. A chain in it:
		 * each of its rules. */
		const char *tag = str_arg(L, env, arg[0]);
		Value r = lower_expr(L, env, arg[1]);
		if (!tag || r.kind == V_NONE)
			return none;
		if (r.kind != V_OPT) {
			diag_error(arg[1]->loc, "%s takes a tag and an optimizer or transform, not a %s",
				   b == BI_only ? "only" : "except", kind_name(r.kind));
			return none;
		}
		int n = r.items ? r.nitems : 1;
		Value v = r;
		if (r.items) {
			v.items = arena_alloc(L->arena, (size_t)n * sizeof *v.items);
			memcpy(v.items, r.items, (size_t)n * sizeof *v.items);
		}
		for (int k = 0; k < n; k++) {
			Value *it = r.items ? &v.items[k] : &v;
			if (it->group) {
				diag_error(loc, "a rule in two groups (%s inside %s)", it->group, tag);
				return none;
			}
			it->group = tag;
			it->group_except = b == BI_except;
		}
		return v;
	}
	case BI_global_sum: case BI_global_norm: {
		/* Over every parameter: the argument is evaluated in each parameter's environment (its p, g
		 * and state as the rule stands before this statement) and summed. */
		const char *what = sema_builtin_info(b)->name;
		if (!L->opt_envs) {
			diag_error(loc, "%s is only available in an optimizer's update rule", what);
			return none;
		}
		if (L->depth > 0) {
			diag_error(loc, "%s must be written in the optimizer's body, not in a function it calls", what);
			return none;
		}
		int known = barrier_find(L, call);
		if (known >= 0)
			return tensor(L->barrier[known].value);
		int acc = -1, self = L->opt_param;
		for (int q = 0; q < L->opt_nenvs; q++) {
			L->opt_param = q;
			int v = lower_tensor(L, lower_expr(L, L->opt_envs[q], arg[0]), loc);
			L->opt_param = self;
			if (v < 0)
				return none;
			if (b == BI_global_norm)
				v = ir_binary(L->fn, IR_MUL, v, v, loc);
			unsigned all = (1u << ir_shape_of(L->fn, v)->rank) - 1;
			int s = ir_reduce(L->fn, IR_SUM, v, all, 0, loc);
			acc = acc < 0 ? s : ir_binary(L->fn, IR_ADD, acc, s, loc);
		}
		if (b == BI_global_norm)
			acc = ir_unary(L->fn, IR_SQRT, acc, loc);
		barrier_add(L, call, acc, NULL);
		return tensor(acc);
	}
	case BI_grad_at: {
		/* The loss gradient of the same batch at other weights, for every parameter at once: the
		 * argument evaluated in each parameter's environment gives its weights, the training
		 * forward pass is inlined with them in place of the parameters, and differentiated with
		 * respect to them. A barrier, as global reductions are. Buffers keep the first pass's
		 * updates unless update_buffers = 1; random numbers (dropout) are the first pass's. */
		if (!L->opt_envs || !L->fwd_func) {
			diag_error(loc, "grad_at is only available in an optimizer's update rule");
			return none;
		}
		if (L->depth > 0) {
			diag_error(loc, "grad_at must be written in the optimizer's body, not in a function it calls");
			return none;
		}
		int known = barrier_find(L, call);
		if (known >= 0)
			return tensor(L->barrier[known].grads[L->opt_param]);
		if (L->opt_apply >= 0) {
			if (L->opt_param == 0 && L->accumulate > 1) {
				diag_error(L->accumulate_loc, "accumulate = %lld with a rule that takes a second gradient: grad_at "
							      "would see one batch of the several the update averages",
					   (long long)L->accumulate);
				diag_note(loc, "the second gradient");
			} else if (L->opt_param == 0) {
				diag_error(loc, "grad_at after the gradients are accumulated: it would see one batch of the several "
						"the update averages; take it before (m-sharpness: chain(sam(), accumulate(k), sgd()))");
			}
			return none;
		}
		int n = L->opt_nenvs, self = L->opt_param;
		int *w = arena_alloc(L->arena, ((size_t)n + 1) * sizeof *w);
		int *g = arena_alloc(L->arena, ((size_t)n + 1) * sizeof *g);
		for (int q = 0; q < n; q++) {
			L->opt_param = q;
			int v = lower_tensor(L, lower_expr(L, L->opt_envs[q], arg[0]), loc);
			L->opt_param = self;
			if (v < 0)
				return none;
			const IrSlot *ps = ir_slot(L->mod, NML_B_PARAMS, q);
			IrShape b;
			if (!ir_broadcast(*ir_shape_of(L->fn, v), ps->shape, &b) || !ir_shape_eq(b, ps->shape)) {
				char x1[64], x2[64];
				diag_error(loc, "grad_at's weights for '%s' have shape %s, the parameter is %s", ps->name,
					   ir_shape_str(*ir_shape_of(L->fn, v), x1, sizeof x1), ir_shape_str(ps->shape, x2, sizeof x2));
				return none;
			}
			w[q] = ir_expand(L->fn, v, ps->shape, loc);
		}
		int *map = xmalloc(((size_t)L->fwd_func->n + 1) * sizeof *map);
		for (int i = 0; i < L->fwd_func->n; i++)
			map[i] = -1;
		for (int q = 0; q < n && q < L->nparam_leaf; q++)
			if (L->param_leaf[q] >= 0)
				map[L->param_leaf[q]] = w[q];
		if (ir_inline(L->fn, L->fwd_func, map) < 0)
			die("grad_at: a substitution of another shape");
		if (arg[1]) { /* update_buffers = 1: this pass's buffer updates are the ones the step keeps */
			Value u = lower_expr(L, env, arg[1]);
			if (u.kind != V_NUM || (u.num != 0 && u.num != 1)) {
				diag_error(arg[1]->loc, "update_buffers must be 0 (keep the first pass's buffer updates) or 1 (this pass's)");
				free(map);
				return none;
			}
			int nb = ir_block(L->mod, NML_B_BUFFERS)->n;
			if (u.num == 1 && nb) {
				if (!L->buf_final) {
					L->buf_final = xmalloc((size_t)nb * sizeof *L->buf_final);
					for (int k = 0; k < nb; k++)
						L->buf_final[k] = -1;
				}
				for (int k = 0; k < L->nbuf_update; k++) {
					int slot = L->buf_update[k], v = lower_buffer_value(L, slot);
					if (v >= 0 && map[v] >= 0)
						L->buf_final[slot] = map[v];
				}
			}
		}
		int loss = map[L->fwd_loss];
		free(map);
		ad_grad(L->fn, loss, w, n, g);
		barrier_add(L, call, -1, g);
		return tensor(g[self]);
	}
	case BI_eigh: {
		/* eigh(a): the eigenvectors of the symmetric matrix a as columns, ascending eigenvalues;
		 * eigh(a, when = c, otherwise = q): only where c != 0 (a number of the step), else q. */
		Value a = lower_expr(L, env, arg[0]);
		if (a.kind == V_NONE || !need_fn(L, loc, "eigh"))
			return none;
		if (!arg[1] != !arg[2]) {
			diag_error(loc, "eigh takes when and otherwise together: eigh(a, when = t %% 10 == 1, otherwise = q)");
			return none;
		}
		int m = lower_tensor(L, a, loc);
		int when = arg[1] ? lower_tensor(L, lower_expr(L, env, arg[1]), arg[1]->loc) : ir_const(L->fn, 1, loc);
		int other = arg[2] ? lower_tensor(L, lower_expr(L, env, arg[2]), arg[2]->loc) : m;
		if (m < 0 || when < 0 || other < 0)
			return none;
		if (ir_shape_of(L->fn, when)->rank != 0) {
			diag_error(arg[1]->loc, "eigh's when must be a number (of the step), not a tensor");
			return none;
		}
		return tensor(ir_eigh(L->fn, m, ir_expand(L->fn, other, *ir_shape_of(L->fn, m), loc), when, loc));
	}
	case BI_accumulated: {
		/* accumulated(g, k): in a rule of a chain, the mean of g over k steps; the rules after it
		 * run every k-th step, counting updates (optim_accumulate). */
		if (!L->opt_envs || !L->opt_base) {
			diag_error(loc, "accumulated is only available in an optimizer's update rule");
			return none;
		}
		if (L->depth > 0) {
			diag_error(loc, "accumulated must be written in the rule's body, not in a function it calls");
			return none;
		}
		if (L->opt_accumulated[L->opt_param]) {
			diag_error(loc, "%s", L->accumulate > 1 ? "accumulated in a chain with accumulate in the train block: "
								  "gradients are accumulated once"
								: "a second accumulation in the chain: gradients are accumulated once");
			return none;
		}
		int g = lower_tensor(L, lower_expr(L, env, arg[0]), arg[0]->loc);
		int k = lower_tensor(L, lower_expr(L, env, arg[1]), arg[1]->loc);
		if (g < 0 || k < 0)
			return none;
		if (ir_shape_of(L->fn, k)->rank != 0) {
			diag_error(arg[1]->loc, "the number of steps to accumulate must be a number");
			return none;
		}
		return tensor(optim_accumulate(L, L->opt_param, g, k, loc));
	}
	case BI_has_tag: { /* 1 if the parameter being updated carries @tag: a compile-time number */
		const char *tag = str_arg(L, env, arg[0]);
		if (!tag)
			return none;
		if (!L->opt_envs) {
			diag_error(loc, "has_tag is only available in an optimizer's update rule");
			return none;
		}
		const IrSlot *ps = ir_slot(L->mod, NML_B_PARAMS, L->opt_param);
		for (int k = 0; k < ps->ntags; k++)
			if (ps->tags[k] == tag)
				return num(1);
		return num(0);
	}
	case BI_ndim: {
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NUM)
			return num(0);
		if (x.kind == V_NONE || !need_fn(L, loc, "ndim"))
			return none;
		int v = lower_tensor(L, x, loc);
		return v < 0 ? none : num(ir_shape_of(L->fn, v)->rank);
	}
	case BI_require: {
		/* require(c, "message", values...): a check made at compile time, its value c. Where c is
		 * 0, the message is an error at the call (with the calls that led to it as notes), each {}
		 * in it replaced by the next value, a number known at compile time. */
		Value c = lower_expr(L, env, arg[0]);
		const char *msg = str_arg(L, env, arg[1]);
		if (c.kind == V_NONE || !msg)
			return none;
		int slots = 0, values = 0;
		for (const char *p = msg; (p = strstr(p, "{}")); p += 2)
			slots++;
		while (values < 4 && arg[2 + values])
			values++;
		if (slots != values) {
			diag_error(arg[1]->loc, "require's message has %d {} for %d value%s", slots, values, values == 1 ? "" : "s");
			return none;
		}
		if (c.kind != V_NUM) {
			diag_error(arg[0]->loc, "require's condition must be a number known at compile time");
			return none;
		}
		if (c.num != 0)
			return c;
		char text[512];
		size_t n = 0;
		for (int k = 0; *msg && n < sizeof text - 1; msg++) {
			if (msg[0] != '{' || msg[1] != '}') {
				text[n++] = *msg;
				continue;
			}
			Value v = lower_expr(L, env, arg[2 + k]);
			if (v.kind != V_NUM) {
				if (v.kind != V_NONE)
					diag_error(arg[2 + k]->loc, "a value of require's message must be a number known at compile time");
				return none;
			}
			n += (size_t)snprintf(text + n, sizeof text - n, "%.15g", v.num);
			n = n < sizeof text - 1 ? n : sizeof text - 1;
			k++, msg++;
		}
		text[n] = 0;
		diag_error(loc, "%s", text);
		L->required = 1;
		return none;
	}
	case BI_onehot: {
		Value y = lower_expr(L, env, arg[0]);
		int64_t n;
		if (y.kind == V_NONE || !as_int(lower_expr(L, env, arg[1]), arg[1]->loc, "the class count", &n))
			return none;
		if (n < 1) {
			diag_error(arg[1]->loc, "the class count must be positive");
			return none;
		}
		return need_fn(L, loc, "onehot") ? tensor(ir_onehot(L->fn, lower_tensor(L, y, loc), n, loc)) : none;
	}
	case BI_take: { /* take(table, indices): table[indices[...], ...] */
		Value t = lower_expr(L, env, arg[0]), i = lower_expr(L, env, arg[1]);
		if (t.kind == V_NONE || i.kind == V_NONE || !need_fn(L, loc, "take"))
			return none;
		return tensor(ir_gather(L->fn, lower_tensor(L, t, loc), lower_tensor(L, i, loc), loc));
	}
	case BI_segment_sum: { /* segment_sum(x, size): axis 0 in segments of size rows, each row its segment's sum */
		Value x = lower_expr(L, env, arg[0]);
		int64_t size;
		if (x.kind == V_NONE || !as_int(lower_expr(L, env, arg[1]), arg[1]->loc, "the segment size", &size))
			return none;
		if (size < 1) {
			diag_error(arg[1]->loc, "the segment size must be positive, got %lld", (long long)size);
			return none;
		}
		if (!need_fn(L, loc, "segment_sum"))
			return none;
		int v = lower_tensor(L, x, loc);
		if (v >= 0 && ir_shape_of(L->fn, v)->rank == 0) {
			diag_error(loc, "segment_sum needs a tensor with a first axis, got a number");
			return none;
		}
		return tensor(ir_segsum(L->fn, v, size, loc));
	}
	case BI_data_init: {
		/* data_init(p, value): parameter p of this layer, set to value (computed from the first
		 * training step's batch) before that step uses it; the step's gradient and update then
		 * start from it. Later reads of p in the forward see the same value. Evaluation reads p. */
		Value *pv = arg[0]->kind == AST_NAME ? lower_lookup(env, arg[0]->name) : NULL;
		if (!pv || pv->kind != V_PARAM) {
			diag_error(arg[0]->loc, "data_init sets a parameter of this layer, named as declared");
			return none;
		}
		int slot = pv->id;
		if (!L->training || !need_fn(L, loc, "data_init"))
			return L->fn ? tensor(lower_param_value(L, slot)) : none;
		if (slot < L->nparam_leaf && L->param_leaf[slot] >= 0) {
			diag_error(arg[0]->loc, "parameter '%s' is read before its data_init: set it first",
				   ir_slot(L->mod, NML_B_PARAMS, slot)->name);
			return none;
		}
		int v = lower_tensor(L, lower_expr(L, env, arg[1]), arg[1]->loc), p = lower_param_value(L, slot);
		if (v < 0 || p < 0)
			return none;
		const IrSlot *ps = ir_slot(L->mod, NML_B_PARAMS, slot);
		IrShape sh;
		if (!ir_broadcast(*ir_shape_of(L->fn, v), ps->shape, &sh) || !ir_shape_eq(sh, ps->shape)) {
			char x1[64], x2[64];
			diag_error(arg[1]->loc, "data_init's value for '%s' has shape %s, the parameter is %s", ps->name,
				   ir_shape_str(*ir_shape_of(L->fn, v), x1, sizeof x1), ir_shape_str(ps->shape, x2, sizeof x2));
			return none;
		}
		int first = ir_binary(L->fn, IR_EQ, ir_scalar_leaf(L->fn, IR_STEP, loc), ir_const(L->fn, 1, loc), loc);
		v = ir_expand(L->fn, ir_unary(L->fn, IR_STOPGRAD, v, loc), ps->shape, loc);
		L->param_leaf[slot] = ir_where(L->fn, first, v, p, loc);
		return tensor(L->param_leaf[slot]);
	}
	case BI_transpose: case BI_permute: { /* transpose(x, dim0 = -2, dim1 = -1); permute(x, [axes]) */
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NONE || !need_fn(L, loc, sema_builtin_info(b)->name))
			return none;
		int v = lower_tensor(L, x, loc);
		if (v < 0)
			return none;
		IrShape s = *ir_shape_of(L->fn, v);
		int perm[IR_MAXRANK];
		for (int k = 0; k < s.rank; k++)
			perm[k] = k;
		if (b == BI_permute) {
			int64_t axes[IR_MAXRANK];
			int n = int_list(L, env, arg[1], axes, IR_MAXRANK, "the order of the axes");
			if (n < 0)
				return none;
			unsigned seen = 0;
			for (int k = 0; k < n; k++) {
				int a;
				if (!one_axis(num((double)axes[k]), arg[1]->loc, &s, &a))
					return none;
				seen |= 1u << a;
				perm[k] = a;
			}
			if (n != s.rank || seen != (1u << s.rank) - 1) {
				diag_error(arg[1]->loc, "permute of a tensor of rank %d needs each of its axes once", s.rank);
				return none;
			}
		} else {
			if (s.rank < 2 && !arg[1]) {
				char sb[64];
				diag_error(loc, "transpose needs two axes, got a tensor of shape %s", ir_shape_str(s, sb, sizeof sb));
				return none;
			}
			int d0, d1;
			if (!one_axis(arg[1] ? lower_expr(L, env, arg[1]) : num(-2), loc, &s, &d0)
			    || !one_axis(arg[2] ? lower_expr(L, env, arg[2]) : num(-1), loc, &s, &d1))
				return none;
			perm[d0] = d1;
			perm[d1] = d0;
		}
		return tensor(ir_permute(L->fn, v, perm, loc));
	}
	case BI_reshape: case BI_flatten: {
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NONE || !need_fn(L, loc, sema_builtin_info(b)->name))
			return none;
		return reshape(L, env, call, lower_tensor(L, x, loc), arg[1], b == BI_flatten);
	}
	case BI_unfold: { /* unfold(x, kernel, stride = 1, padding = 0, dilation = 1, pad_with = "zero") */
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NONE || !need_fn(L, loc, "unfold"))
			return none;
		IrAttr w = {.win = {.s = {1, 1}, .d = {1, 1}}};
		int32_t *field[4] = {w.win.k, w.win.s, w.win.p, w.win.d};
		static const char *const what[4] = {"the kernel", "the stride", "the padding", "the dilation"};
		for (int k = 0; k < 4; k++) { /* a number, or [height, width] */
			if (!arg[1 + k])
				continue;
			Value v = lower_expr(L, env, arg[1 + k]);
			int64_t hw[2];
			if (v.kind == V_LIST && v.nitems == 2 && as_int(v.items[0], arg[1 + k]->loc, what[k], &hw[0])
			    && as_int(v.items[1], arg[1 + k]->loc, what[k], &hw[1])) {
			} else if (v.kind != V_LIST && as_int(v, arg[1 + k]->loc, what[k], &hw[0])) {
				hw[1] = hw[0];
			} else {
				if (v.kind == V_LIST)
					diag_error(arg[1 + k]->loc, "%s is a number or [height, width]", what[k]);
				return none;
			}
			if (hw[0] < (k == 2 ? 0 : 1) || hw[1] < (k == 2 ? 0 : 1) || hw[0] > 65535 || hw[1] > 65535) {
				diag_error(arg[1 + k]->loc, "%s must be %s", what[k], k == 2 ? "0 or more" : "positive");
				return none;
			}
			field[k][0] = (int32_t)hw[0];
			field[k][1] = (int32_t)hw[1];
		}
		if (arg[5]) {
			const char *pad = str_arg(L, env, arg[5]);
			if (!pad)
				return none;
			if (pad != intern_cstr("zero") && pad != intern_cstr("-inf")) {
				diag_error(arg[5]->loc, "pad_with is \"zero\" or \"-inf\"");
				return none;
			}
			w.win.neg_inf = pad == intern_cstr("-inf");
		}
		return tensor(ir_unfold(L->fn, lower_tensor(L, x, loc), w, loc));
	}
	case BI_slice: case BI_pad: case BI_argmax: {
		/* slice(x, axis, start, stop); pad(x, before, after, axis = -1) with zeros; argmax(x, axis = -1) */
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NONE || !need_fn(L, loc, sema_builtin_info(b)->name))
			return none;
		int v = lower_tensor(L, x, loc);
		if (v < 0)
			return none;
		IrShape s = *ir_shape_of(L->fn, v);
		AstNode *axis_arg = b == BI_slice ? arg[1] : b == BI_pad ? arg[3] : arg[1];
		int ax;
		if (!one_axis(axis_arg ? lower_expr(L, env, axis_arg) : num(-1), axis_arg ? axis_arg->loc : loc, &s, &ax))
			return none;
		if (s.dim[ax] == IR_BATCH) {
			diag_error(axis_arg ? axis_arg->loc : loc, "%s along the batch axis", sema_builtin_info(b)->name);
			return none;
		}
		if (b == BI_argmax)
			return tensor(ir_argmax(L->fn, v, ax, loc));
		int64_t p0, p1, len = s.dim[ax];
		AstNode *a0 = b == BI_slice ? arg[2] : arg[1], *a1 = b == BI_slice ? arg[3] : arg[2];
		if (!as_int(lower_expr(L, env, a0), a0->loc, b == BI_slice ? "start" : "before", &p0)
		    || !as_int(lower_expr(L, env, a1), a1->loc, b == BI_slice ? "stop" : "after", &p1))
			return none;
		if (b == BI_pad) {
			if (p0 < 0 || p1 < 0) {
				diag_error(loc, "pad takes counts of 0 or more");
				return none;
			}
			return tensor(ir_slice(L->fn, v, ax, -p0, len + p0 + p1, loc));
		}
		if (p0 < 0) /* negative: from the end, as in Python */
			p0 += len;
		if (p1 < 0)
			p1 += len;
		if (p0 < 0 || p1 > len || p0 >= p1) {
			diag_error(loc, "slice [%lld, %lld) of an axis of %lld", (long long)p0, (long long)p1, (long long)len);
			return none;
		}
		return tensor(ir_slice(L->fn, v, ax, p0, p1 - p0, loc));
	}
	case BI_concat: { /* concat([a, b, ...], axis = -1): each padded to the whole, summed */
		Value list = lower_expr(L, env, arg[0]);
		if (list.kind == V_NONE || !need_fn(L, loc, "concat"))
			return none;
		if (list.kind != V_LIST || list.nitems < 1) {
			diag_error(arg[0]->loc, "concat takes a list of tensors, such as [a, b]");
			return none;
		}
		int *parts = arena_alloc(L->arena, (size_t)list.nitems * sizeof *parts), ax = 0;
		int64_t total = 0;
		IrShape s0 = {0};
		for (int i = 0; i < list.nitems; i++) {
			parts[i] = lower_tensor(L, list.items[i], arg[0]->loc);
			if (parts[i] < 0)
				return none;
			IrShape s = *ir_shape_of(L->fn, parts[i]);
			if (i == 0) {
				s0 = s;
				if (!one_axis(arg[1] ? lower_expr(L, env, arg[1]) : num(-1), arg[1] ? arg[1]->loc : loc, &s, &ax))
					return none;
				if (s.dim[ax] == IR_BATCH) {
					diag_error(loc, "concat along the batch axis");
					return none;
				}
			}
			IrShape t = s0;
			t.dim[ax] = s.dim[ax];
			if (!ir_shape_eq(s, t)) {
				char x1[64], x2[64];
				diag_error(arg[0]->loc, "concat of %s and %s along axis %d: the other axes differ",
					   ir_shape_str(s0, x1, sizeof x1), ir_shape_str(s, x2, sizeof x2), ax);
				return none;
			}
			total += s.dim[ax];
		}
		int acc = -1;
		int64_t at = 0;
		for (int i = 0; i < list.nitems; i++) {
			int64_t len = ir_shape_of(L->fn, parts[i])->dim[ax];
			int placed = ir_slice(L->fn, parts[i], ax, -at, total, loc);
			acc = acc < 0 ? placed : ir_binary(L->fn, IR_ADD, acc, placed, loc);
			at += len;
		}
		return tensor(acc);
	}
	case BI_count: { /* elements over the axes (all by default): a number, or with the batch axis n times one */
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NUM)
			return num(1);
		if (x.kind == V_NONE || !need_fn(L, loc, "count"))
			return none;
		int v = lower_tensor(L, x, loc);
		if (v < 0)
			return none;
		IrShape s = *ir_shape_of(L->fn, v);
		unsigned mask = (1u << s.rank) - 1;
		if (arg[1] && !axis_mask(L, env, arg[1], &s, &mask))
			return none;
		int batch;
		double k = reduced_count(&s, mask, &batch);
		if (!batch)
			return num(k);
		return tensor(ir_binary(L->fn, IR_MUL, ir_scalar_leaf(L->fn, IR_ROWS, loc), ir_const(L->fn, k, loc), loc));
	}
	case BI_rand_like: {
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NONE || !need_fn(L, loc, "rand_like"))
			return none;
		int v = lower_tensor(L, x, loc);
		return v < 0 ? none : tensor(ir_random(L->fn, L->mod, *ir_shape_of(L->fn, v), loc));
	}
	case BI_dim: {
		Value x = lower_expr(L, env, arg[0]);
		if (x.kind == V_NONE || !need_fn(L, loc, "dim"))
			return none;
		int v = lower_tensor(L, x, loc);
		if (v < 0)
			return none;
		IrShape s = *ir_shape_of(L->fn, v);
		unsigned mask;
		if (!axis_mask(L, env, arg[1], &s, &mask))
			return none;
		if (mask & (mask - 1)) {
			diag_error(arg[1]->loc, "dim takes one axis");
			return none;
		}
		int axis = __builtin_ctz(mask);
		if (s.dim[axis] == IR_BATCH) {
			diag_error(arg[1]->loc, "the batch dimension is not known at compile time");
			return none;
		}
		return num((double)s.dim[axis]);
	}
	case BI_zeros: return (Value){.kind = V_INIT, .init = {INIT_CONST, 0, 0}};
	case BI_ones: return (Value){.kind = V_INIT, .init = {INIT_CONST, 1, 0}};
	case BI_he: return (Value){.kind = V_INIT, .init = {(IrInitKind)-1, 0, 0}};
	case BI_xavier: return (Value){.kind = V_INIT, .init = {(IrInitKind)-2, 0, 0}};
	case BI_normal: case BI_uniform: {
		Value a = lower_expr(L, env, arg[0]);
		Value c = arg[1] ? lower_expr(L, env, arg[1]) : num(0);
		if (a.kind != V_NUM || c.kind != V_NUM) {
			diag_error(loc, "initializer arguments must be numbers");
			return none;
		}
		if (b == BI_normal) /* normal(std, mean = 0) */
			return (Value){.kind = V_INIT, .init = {INIT_NORMAL, c.num, a.num}};
		if (!(a.num < c.num)) {
			diag_error(loc, "uniform(low, high) needs low < high");
			return none;
		}
		return (Value){.kind = V_INIT, .init = {INIT_UNIFORM, a.num, c.num}};
	}
	case BI_fashion_mnist: case BI_mnist: case BI_idx: case BI_npy: case BI_csv: case BI_synthetic:
		return (Value){.kind = V_DATA, .id = b, .node = call, .env = env};
	}
	die("builtin %d has no lowering", b);
}

/* Is name one of the builtin's named arguments (a space-separated list)? */
static int named_arg(const SemaBuiltinInfo *bi, const char *name)
{
	size_t len = strlen(name);
	for (const char *p = bi->named; p && *p;) {
		const char *end = strchr(p, ' ');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == len && !strncmp(p, name, n))
			return 1;
		p = end ? end + 1 : p + n;
	}
	return 0;
}

static Value call(Lower *L, Env *env, AstNode *call)
{
	Value f = lower_expr(L, env, call->lhs);
	switch (f.kind) {
	case V_NONE:
		return none;
	case V_BUILTIN: {
		/* sema checked calls that name the builtin; one reached through a parameter is checked here */
		const SemaBuiltinInfo *bi = sema_builtin_info(f.id);
		if (call->lhs->kind != AST_NAME || call->lhs->name != bi->name) {
			int n = 0;
			for (AstNode *a = call->args.head; a; a = a->next, n++)
				if (a->kind == AST_NAMED && !named_arg(bi, a->name)) {
					diag_error(a->loc, "%s has no argument '%s'", bi->name, a->name);
					return none;
				}
			if (n < bi->min_args || n > bi->max_args) {
				diag_error(call->loc, "%s takes %d to %d arguments, got %d", bi->name, bi->min_args, bi->max_args, n);
				return none;
			}
		}
		return call_builtin(L, env, f.id, call);
	}
	case V_INST: {
		Instance *in = f.inst;
		if (!need_fn(L, call->loc, "calling a layer"))
			return none;
		Value v = call_fn(L, env, call, in->env, &in->forward->formals, in->forward->rhs, &in->forward->body,
				  in->made, in->note);
		if (in == L->model && v.kind != V_NONE)
			L->pred = lower_tensor(L, v, call->loc);
		return v;
	}
	case V_DEF:
		switch (f.node->kind) {
		case AST_LAYER:
			return instantiate(L, env, call, f.node);
		case AST_OPTIMIZER: case AST_TRANSFORM:
			return (Value){.kind = V_OPT, .node = call, .env = env, .def = f.node};
		default: {
			/* an error inside a function points into it; the note says which call led there */
			char msg[256];
			snprintf(msg, sizeof msg, "in this call of %s", f.node->name);
			return call_fn(L, env, call, L->global_env, &f.node->formals, f.node->rhs, &f.node->body, call->loc,
				       arena_strndup(L->arena, msg, strlen(msg)));
		}
		}
	default:
		diag_error(call->loc, "a %s cannot be called", kind_name(f.kind));
		return none;
	}
}

/* ---- layers ---- */

IrInit lower_resolve_init(Value v, IrShape s)
{
	if (v.kind == V_NUM)
		return (IrInit){INIT_CONST, v.num, 0};
	IrInit in = v.init;
	double fan_in = s.rank >= 2 ? (double)ir_shape_numel(s, 1) / (double)s.dim[s.rank - 1] : (double)s.dim[0];
	double fan_out = s.rank ? (double)s.dim[s.rank - 1] : 1;
	if ((int)in.kind == -1) /* he: N(0, 2 / fan_in) */
		return (IrInit){INIT_NORMAL, 0, sqrt(2.0 / fan_in)};
	if ((int)in.kind == -2) { /* xavier: U(+-sqrt(6 / (fan_in + fan_out))) */
		double r = sqrt(6.0 / (fan_in + fan_out));
		return (IrInit){INIT_UNIFORM, -r, r};
	}
	return in;
}

static int eval_shape(Lower *L, Env *env, const AstList *dims, IrShape *s)
{
	*s = (IrShape){0};
	if (dims->n > IR_MAXRANK) {
		diag_error(dims->head->loc, "at most %d dimensions", IR_MAXRANK);
		return 0;
	}
	for (AstNode *d = dims->head; d; d = d->next) {
		int64_t k;
		if (!as_int(lower_expr(L, env, d), d->loc, "a dimension", &k))
			return 0;
		if (k < 1) {
			diag_error(d->loc, "a dimension must be positive, got %lld", (long long)k);
			return 0;
		}
		s->dim[s->rank++] = k;
	}
	/* Every size product the compiler and runtime form (elements, bytes, rows times elements) stays
	 * far from int64's range below 2^40 elements (4 TB of floats). */
	double n = 1;
	for (int i = 0; i < s->rank; i++)
		n *= (double)s->dim[i];
	if (n > 0x1p40) {
		diag_error(dims->head->loc, "a tensor of %.3g elements: more than 2^40", n);
		return 0;
	}
	return 1;
}

static void add_param(Lower *L, Instance *in, AstNode *st)
{
	IrShape s;
	if (!eval_shape(L, in->env, &st->args, &s))
		return;
	Value init = lower_expr(L, in->env, st->rhs);
	if (init.kind != V_NUM && init.kind != V_INIT) {
		if (init.kind != V_NONE)
			diag_error(st->rhs->loc, "a parameter is initialized with a number or an initializer "
						 "(zeros, ones, normal, uniform, he, xavier)");
		return;
	}
	char name[256];
	snprintf(name, sizeof name, "%s%s", in->path, st->name);
	int slot = ir_add_slot(L->mod, NML_B_PARAMS, intern_cstr(name), s, lower_resolve_init(init, s), st->loc);
	IrSlot *p = &L->mod->blocks[NML_B_PARAMS].slot[slot];
	p->ntags = st->tags.n;
	p->tags = arena_alloc(L->arena, (st->tags.n + 1) * sizeof *p->tags);
	int i = 0;
	for (AstNode *t = st->tags.head; t; t = t->next)
		p->tags[i++] = t->name;
	lower_bind(L, in->env, st->name, (Value){.kind = V_PARAM, .id = slot});
}

static void add_buffer(Lower *L, Instance *in, AstNode *st)
{
	IrShape s;
	if (!eval_shape(L, in->env, &st->args, &s))
		return;
	Value init = lower_expr(L, in->env, st->rhs);
	if (init.kind != V_NUM && init.kind != V_INIT) {
		if (init.kind != V_NONE)
			diag_error(st->rhs->loc, "a buffer is initialized with a number or an initializer");
		return;
	}
	char name[256];
	snprintf(name, sizeof name, "%s%s", in->path, st->name);
	int slot = ir_add_slot(L->mod, NML_B_BUFFERS, intern_cstr(name), s, lower_resolve_init(init, s), st->loc);
	lower_bind(L, in->env, st->name, (Value){.kind = V_BUF, .id = slot});
}

static Value instantiate(Lower *L, Env *callenv, AstNode *call, AstNode *layer)
{
	if (L->fn) {
		diag_error(call->loc, "layer '%s' is created inside a forward or function; create it as a member "
				      "of a layer or in the train block", layer->name);
		return none;
	}
	if (L->depth >= LOWER_MAX_DEPTH) {
		diag_error(call->loc, "layers nested more than %d deep (recursion?)", LOWER_MAX_DEPTH);
		return none;
	}
	Instance *in = arena_alloc(L->arena, sizeof *in);
	in->layer = layer;
	in->path = L->prefix;
	in->made = call->loc;
	char note[300];
	size_t plen = strlen(L->prefix);
	if (plen)
		snprintf(note, sizeof note, "in %.*s (a %s)", (int)(plen - 1), L->prefix, layer->name);
	else
		snprintf(note, sizeof note, "in the model (a %s)", layer->name);
	in->note = arena_strndup(L->arena, note, strlen(note));
	in->env = lower_env_new(L, L->global_env);
	if (!lower_bind_args(L, callenv, call, &layer->formals, in->env))
		return none;
	for (int i = 0; i < in->env->n; i++) {
		ValueKind k = in->env->b[i].v.kind;
		if (k == V_TENSOR || k == V_PARAM || k == V_BUF) {
			diag_error(call->loc, "argument '%s' of layer '%s' must be known at compile time",
				   in->env->b[i].name, layer->name);
			return none;
		}
	}
	L->depth++;
	diag_push_context(in->made, in->note);
	for (AstNode *st = layer->body.head; st && !diag_full(); st = st->next) {
		if (st->kind == AST_PARAM) {
			add_param(L, in, st);
		} else if (st->kind == AST_BUFFER) {
			add_buffer(L, in, st);
		} else if (st->kind == AST_ASSIGN) {
			const char *saved = L->prefix;
			char path[256];
			snprintf(path, sizeof path, "%s%s.", in->path, st->name);
			L->prefix = intern_cstr(path);
			lower_bind(L, in->env, st->name, lower_expr(L, in->env, st->rhs));
			L->prefix = saved;
			if (L->required) { /* a require failed: the rest of the layer relies on it */
				L->required = 0;
				break;
			}
		} else if (st->kind == AST_FORWARD) {
			in->forward = st;
		}
	}
	diag_pop_context();
	L->depth--;
	return (Value){.kind = V_INST, .inst = in};
}

/* ---- expressions ---- */

static Value global(Lower *L, const char *name)
{
	if (name == intern_cstr("training")) { /* a number: each mode's forward is lowered on its own */
		if (L->fn)
			return num(L->training);
		return none;
	}
	AstNode *def = sema_lookup(L->globals, name);
	if (def && def->kind == AST_CONST) {
		Value *cached = lower_lookup_local(L->global_env, name);
		if (cached)
			return *cached;
		IrFunc *fn = L->fn;
		L->fn = NULL; /* a constant is a compile-time value */
		Value v = lower_expr(L, L->global_env, def->rhs);
		L->fn = fn;
		lower_bind(L, L->global_env, name, v);
		return v;
	}
	if (def)
		return (Value){.kind = V_DEF, .node = def};
	int b = sema_builtin(name);
	if (b >= 0)
		return (Value){.kind = V_BUILTIN, .id = b};
	return none;
}

Value lower_expr(Lower *L, Env *env, AstNode *e)
{
	if (!e || diag_full())
		return none;
	switch (e->kind) {
	case AST_NUM:
		return num(e->num);
	case AST_STR:
		return (Value){.kind = V_STR, .str = e->name};
	case AST_NAME: {
		Value *v = lower_lookup(env, e->name);
		Value r = v ? *v : global(L, e->name);
		if (r.kind == V_NONE && !v && e->name == intern_cstr("training"))
			diag_error(e->loc, "'training' is known only inside a forward, a function or the loss");
		else if (r.kind == V_NONE && !v)
			diag_error(e->loc, "unknown name '%s'", e->name);
		if (r.kind == V_PARAM && L->fn)
			return tensor(lower_param_value(L, r.id));
		if (r.kind == V_BUF && L->fn)
			return tensor(buffer_value(L, r.id));
		return r;
	}
	case AST_UNARY: {
		Value a = lower_expr(L, env, e->lhs);
		if (a.kind == V_NUM)
			return num(-a.num);
		if (a.kind == V_NONE || !need_fn(L, e->loc, "'-'"))
			return none;
		return tensor(ir_unary(L->fn, IR_NEG, lower_tensor(L, a, e->loc), e->loc));
	}
	case AST_BINARY: {
		Value a = lower_expr(L, env, e->lhs); /* left to right, so the IR reads like the source */
		Value b = lower_expr(L, env, e->rhs);
		return binary(L, e->op, a, b, e->loc);
	}
	case AST_CALL:
		return call(L, env, e);
	case AST_MEMBER: {
		Value a = lower_expr(L, env, e->lhs);
		if (a.kind == V_NONE)
			return none;
		Value *m = a.kind == V_INST ? lower_lookup_local(a.inst->env, e->name) : NULL;
		if (!m) {
			if (a.kind == V_INST)
				diag_error(e->loc, "layer '%s' has no member '%s'", a.inst->layer->name, e->name);
			else
				diag_error(e->loc, "a %s has no members", kind_name(a.kind));
			return none;
		}
		if (m->kind == V_PARAM && L->fn)
			return tensor(lower_param_value(L, m->id));
		if (m->kind == V_BUF && L->fn)
			return tensor(buffer_value(L, m->id));
		return *m;
	}
	case AST_LIST: {
		Value v = {.kind = V_LIST, .nitems = e->args.n};
		v.items = arena_alloc(L->arena, (e->args.n + 1) * sizeof *v.items);
		int i = 0;
		for (AstNode *a = e->args.head; a; a = a->next)
			v.items[i++] = lower_expr(L, env, a);
		return v;
	}
	default:
		die("lower: unexpected %s", ast_kind_name(e->kind));
	}
}

int lower_repeat_count(Lower *L, Env *env, const AstNode *st)
{
	int64_t n;
	IrFunc *fn = L->fn;
	L->fn = NULL; /* a number known at compile time */
	Value v = lower_expr(L, env, st->lhs);
	L->fn = fn;
	if (!as_int(v, st->lhs->loc, "a repeat count", &n))
		return -1;
	if (n < 0 || n > 1000) {
		diag_error(st->lhs->loc, "repeat runs 0 to 1000 times (it is unrolled), not %lld", (long long)n);
		return -1;
	}
	return (int)n;
}

static Value eval_body(Lower *L, Env *env, const AstList *body)
{
	for (AstNode *st = body->head; st; st = st->next) {
		if (st->kind == AST_RETURN)
			return lower_expr(L, env, st->rhs);
		if (st->kind == AST_REPEAT) {
			int n = lower_repeat_count(L, env, st);
			for (int i = 0; i < n && !diag_full(); i++)
				eval_body(L, env, &st->body);
			continue;
		}
		Value v = lower_expr(L, env, st->rhs);
		if (L->required) { /* a require failed: what follows it in the body relies on it */
			L->required = 0;
			return none;
		}
		Value *old = lower_lookup(env, st->name);
		if (st->op != TK_ASSIGN) {
			int tk = st->op == TK_PLUSEQ ? TK_PLUS : st->op == TK_MINUSEQ ? TK_MINUS
				: st->op == TK_STAREQ ? TK_STAR : TK_SLASH;
			v = binary(L, tk, old ? *old : none, v, st->loc);
		}
		if (old && old->kind == V_BUF && L->fn) {
			assign_buffer(L, old->id, v, st);
			continue;
		}
		if (old && old->kind == V_PARAM && !lower_lookup_local(env, st->name)) {
			diag_error(st->loc, "'%s' is a parameter: the optimizer changes it, a forward pass cannot "
					    "(a buffer can be assigned)", st->name);
			continue;
		}
		lower_bind(L, env, st->name, v);
	}
	return none;
}

/* ---- the train block ---- */

static AstNode *field(AstNode *train, const char *name)
{
	const char *n = intern_cstr(name);
	for (AstNode *st = train->body.head; st; st = st->next)
		if (st->kind == AST_ASSIGN && st->name == n)
			return st;
	return NULL;
}

static int64_t int_field(Lower *L, AstNode *train, const char *name, int64_t dflt, int64_t lo)
{
	AstNode *st = field(train, name);
	int64_t v = dflt;
	if (!st)
		return v;
	if (as_int(lower_expr(L, L->train_env, st->rhs), st->rhs->loc, name, &v) && v < lo) {
		diag_error(st->rhs->loc, "%s must be at least %lld", name, (long long)lo);
		v = dflt;
	}
	return v;
}

/* A relative data path is relative to the directory of the file that names it. */
static const char *relative_to(const char *path, const char *file)
{
	const char *slash = file ? strrchr(file, '/') : NULL;
	if (!path || path[0] == '/' || !slash)
		return path;
	char buf[2048];
	snprintf(buf, sizeof buf, "%.*s/%s", (int)(slash - file), file, path);
	return intern_cstr(buf);
}

/* The fraction of the training rows held out for testing: the holdout argument, else dflt. */
static double holdout(Lower *L, Env *env, AstNode *arg, double dflt)
{
	if (!arg)
		return dflt;
	Value h = lower_expr(L, env, arg);
	if (h.kind == V_NUM && h.num > 0 && h.num < 1)
		return h.num;
	diag_error(arg->loc, "holdout is a fraction between 0 and 1");
	return dflt;
}

static void data_spec(Lower *L, Value d, DataSpec *spec)
{
	AstNode *arg[8];
	builtin_args(d.id, d.node, arg, 8);
	spec->loc = d.node->loc;
	/* shape = [...], the last argument of every data source: one sample's shape */
	AstNode *shape = arg[sema_builtin_info(d.id)->max_args - 1];
	if (shape) {
		int n = int_list(L, d.env, shape, spec->xshape, IR_MAXRANK - 1, "a sample's shape");
		for (int i = 0; i < n; i++)
			if (spec->xshape[i] < 1) {
				diag_error(shape->loc, "a sample's dimensions must be positive");
				n = -1;
				break;
			}
		spec->xrank = n > 0 ? n : 0;
	}
	if (d.id == BI_fashion_mnist || d.id == BI_mnist) {
		const char *dir = arg[0] ? relative_to(str_arg(L, d.env, arg[0]), d.node->loc.file)
			: d.id == BI_fashion_mnist ? "/usr/share/datasets/fashion-mnist" : "/usr/share/datasets/mnist";
		if (!dir)
			return;
		static const char *const files[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
						     "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
		spec->kind = DATA_IDX;
		for (int i = 0; i < 4; i++) {
			char path[1024];
			snprintf(path, sizeof path, "%s/%s", dir, files[i]);
			spec->path[i] = intern_cstr(path);
		}
		return;
	}
	if (d.id == BI_synthetic) { /* synthetic(n = 1, d = 1, classes = 0, noise = 0, seed = 0, holdout = 0) */
		static const char *const what[5] = {"n", "d", "classes", "noise", "seed"};
		int64_t v[5] = {1, 1, 0, 0, 0};
		double noise = 0;
		for (int i = 0; i < 5; i++) {
			if (!arg[i])
				continue;
			Value x = lower_expr(L, d.env, arg[i]);
			if (i == 3 && x.kind == V_NUM)
				noise = x.num;
			else if (i != 3 || x.kind != V_NONE)
				as_int(x, arg[i]->loc, what[i], &v[i]);
		}
		spec->kind = DATA_SYNTHETIC;
		spec->synth.n = v[0], spec->synth.d = v[1], spec->synth.classes = v[2], spec->synth.seed = v[4];
		spec->synth.noise = noise;
		spec->holdout = holdout(L, d.env, arg[5], 0);
		return;
	}
	if (d.id == BI_csv) { /* csv(path, test, label = -1, regression = 0, holdout = 0.1) */
		spec->kind = DATA_CSV;
		if (!arg[0])
			diag_error(spec->loc, "csv() needs the training file (path)");
		spec->path[0] = arg[0] ? relative_to(str_arg(L, d.env, arg[0]), d.node->loc.file) : NULL;
		spec->path[2] = arg[1] ? relative_to(str_arg(L, d.env, arg[1]), d.node->loc.file) : NULL;
		int64_t v;
		spec->label = arg[2] && as_int(lower_expr(L, d.env, arg[2]), arg[2]->loc, "label", &v) ? (int)v : -1;
		spec->regression = arg[3] && as_int(lower_expr(L, d.env, arg[3]), arg[3]->loc, "regression", &v) && v;
		spec->holdout = holdout(L, d.env, arg[4], spec->path[2] ? 0 : 0.1);
		return;
	}
	spec->kind = d.id == BI_idx ? DATA_IDX : DATA_NPY;
	if (!arg[0] || !arg[1])
		diag_error(spec->loc, "%s() needs the training files (%s)", sema_builtin_info(d.id)->name,
			   d.id == BI_idx ? "images and labels" : "x and y");
	for (int i = 0; i < 4; i++)
		spec->path[i] = arg[i] ? relative_to(str_arg(L, d.env, arg[i]), d.node->loc.file) : NULL;
	if ((spec->path[2] != NULL) != (spec->path[3] != NULL))
		diag_error(spec->loc, "give both test files or neither");
	spec->holdout = holdout(L, d.env, d.id == BI_npy ? arg[4] : NULL, !spec->path[2] && d.id == BI_npy ? 0.1 : 0);
	if (d.id == BI_idx && !spec->path[2])
		diag_error(spec->loc, "idx() needs test_images and test_labels");
}

int lower_train_config(Lower *L, AstNode *train, TrainConfig *cfg)
{
	int before = diag_count();
	L->train = train;
	L->train_env = lower_env_new(L, L->global_env);
	*cfg = (TrainConfig){.batch = 128, .epochs = 10, .seed = 0, .loc = train->loc};
	AstNode *st = field(train, "data");
	Value d = st ? lower_expr(L, L->train_env, st->rhs) : none;
	if (d.kind == V_DATA)
		data_spec(L, d, &cfg->data);
	else if (d.kind != V_NONE)
		diag_error(st->rhs->loc, "data must be a data source such as fashion_mnist() or npy(...)");
	st = field(train, "model");
	Value m = st ? lower_expr(L, L->train_env, st->rhs) : none;
	if (m.kind == V_INST) {
		L->model = m.inst;
		lower_bind(L, L->train_env, intern_cstr("model"), m);
	} else if (m.kind != V_NONE) {
		diag_error(st->rhs->loc, "model must be a layer, such as Mlp(784, 256, 10)");
	}
	st = field(train, "optimizer");
	Value o = st ? lower_expr(L, L->train_env, st->rhs) : none;
	if (o.kind == V_OPT)
		cfg->optimizer = o;
	else if (o.kind != V_NONE)
		diag_error(st->rhs->loc, "optimizer must be an optimizer such as adam(lr = 1e-3)");
	cfg->batch = int_field(L, train, "batch", 128, 1);
	int64_t epochs = int_field(L, train, "epochs", 10, 0);
	if (epochs > 1000000000) {
		diag_error(field(train, "epochs")->rhs->loc, "epochs must be at most 1000000000, got %lld", (long long)epochs);
		epochs = 10;
	}
	cfg->epochs = (int)epochs;
	cfg->seed = (uint64_t)int_field(L, train, "seed", 0, 0);
	cfg->accumulate = int_field(L, train, "accumulate", 1, 1);
	if (cfg->accumulate > 1000000) {
		diag_error(field(train, "accumulate")->rhs->loc, "accumulate must be at most 1000000, got %lld",
			   (long long)cfg->accumulate);
		cfg->accumulate = 1;
	}
	L->accumulate = cfg->accumulate;
	if (field(train, "accumulate"))
		L->accumulate_loc = field(train, "accumulate")->loc;
	int64_t shuffle = int_field(L, train, "shuffle", 1, 0);
	if (shuffle > 1)
		diag_error(field(train, "shuffle")->rhs->loc, "shuffle must be 1 (a new order every epoch) or 0 (the data's order)");
	cfg->in_order = shuffle == 0;
	return diag_count() - before;
}

IrFunc *lower_forward(Lower *L, int training, const char *name)
{
	AstNode *st = field(L->train, "loss");
	if (!st || !L->model)
		return NULL;
	int before = diag_count();
	IrFunc *fn = ir_func_new(name);
	L->fn = fn;
	L->training = training;
	for (int i = 0; i < L->nbuf_value; i++)
		L->buf_value[i] = -1;
	L->nbuf_update = 0;
	free(L->param_leaf);
	L->param_leaf = NULL;
	L->nparam_leaf = 0;
	L->pred = -1;
	Env *env = lower_env_new(L, L->train_env);
	const IrShape *xs = &ir_slot(L->mod, NML_B_X, 0)->shape, *ys = &ir_slot(L->mod, NML_B_Y, 0)->shape;
	lower_bind(L, env, intern_cstr("x"), tensor(ir_load(fn, NML_B_X, 0, *xs, st->loc)));
	lower_bind(L, env, intern_cstr("y"), tensor(ir_load(fn, NML_B_Y, 0, *ys, st->loc)));
	Value loss = lower_expr(L, env, st->rhs);
	L->loss = lower_tensor(L, loss, st->rhs->loc);
	if (L->loss >= 0 && ir_shape_of(fn, L->loss)->rank != 0) {
		char b[64];
		diag_error(st->rhs->loc, "the loss must be a scalar, got %s (take a mean?)",
			   ir_shape_str(*ir_shape_of(fn, L->loss), b, sizeof b));
	}
	if (L->pred < 0 && diag_count() == before)
		diag_error(st->rhs->loc, "the loss does not call the model");
	if (L->pred >= 0) {
		const IrShape *ps = ir_shape_of(fn, L->pred);
		if (ps->rank != 2 || ps->dim[0] != IR_BATCH || ps->dim[1] == IR_BATCH) {
			char b[64];
			diag_error(st->rhs->loc, "the model's output must be [N, k], got %s",
				   ir_shape_str(*ps, b, sizeof b));
		} else {
			L->mod->out_dim = ps->dim[1];
			L->mod->blocks[NML_B_PRED].slot[0].shape = *ps;
		}
	}
	L->fn = NULL;
	if (diag_count() != before) {
		ir_func_free(fn);
		return NULL;
	}
	return fn;
}
