/* optim.c: the update rule applied to every parameter. */
#include "optim.h"

#include <string.h>

#include "grammar.h"

/* Does e read the step t or the run length T? Then it is a schedule, evaluated every step. */
static int mentions_step(const AstNode *e)
{
	if (!e)
		return 0;
	if (e->kind == AST_NAME)
		return e->name == intern_cstr("t") || e->name == intern_cstr("T");
	if (mentions_step(e->lhs) || mentions_step(e->rhs))
		return 1;
	for (const AstNode *a = e->args.head; a; a = a->next)
		if (mentions_step(a))
			return 1;
	return 0;
}

/* The argument a call passes for the index-th formal, by position or by name. */
static AstNode *call_arg(AstNode *call, int index, const char *name)
{
	int pos = 0;
	for (AstNode *a = call->args.head; a; a = a->next)
		if (a->kind == AST_NAMED ? a->name == name : pos++ == index)
			return a->kind == AST_NAMED ? a->rhs : a;
	return NULL;
}

int optim_hparams(Lower *L, const Value *opt)
{
	int before = diag_count();
	AstNode *def = sema_lookup(L->globals, opt->node->lhs->name);
	Env *env = lower_env_new(L, L->global_env);
	IrFunc *fn = L->fn;
	L->fn = NULL; /* hyperparameters are numbers; the runtime may change them */
	int i = 0;
	for (AstNode *f = def->formals.head; f && i < 64; f = f->next, i++) {
		AstNode *arg = call_arg(opt->node, i, f->name);
		L->schedule[i] = NULL;
		if (arg && mentions_step(arg)) {
			L->schedule[i] = arg;
			ir_add_hparam(L->mod, intern_cstr("T"), 0, arg->loc);
			lower_bind(L, env, f->name, (Value){V_NONE});
			continue;
		}
		Value v = arg ? lower_expr(L, opt->env, arg) : f->rhs ? lower_expr(L, env, f->rhs) : (Value){V_NONE};
		lower_bind(L, env, f->name, v);
		if (v.kind == V_NUM)
			ir_add_hparam(L->mod, f->name, v.num, f->loc);
		else if (v.kind != V_NONE)
			diag_error(arg ? arg->loc : f->loc, "hyperparameter '%s' must be a number or a schedule "
							    "(an expression of t and T)", f->name);
	}
	L->fn = fn;
	return diag_count() - before;
}

static void store(Lower *L, IrOp op, int v, int slot, const IrSlot *s, SrcLoc loc)
{
	if (v < 0)
		return;
	IrShape b;
	const IrShape *vs = ir_shape_of(L->fn, v);
	if (!ir_broadcast(*vs, s->shape, &b) || !ir_shape_eq(b, s->shape)) {
		char x[64], y[64];
		diag_error(loc, "the update of '%s' has shape %s, the %s is %s", s->name, ir_shape_str(*vs, x, sizeof x),
			   op == IR_STORE_PARAM ? "parameter" : "state", ir_shape_str(s->shape, y, sizeof y));
		return;
	}
	ir_store(L->fn, op, ir_expand(L->fn, v, s->shape, loc), slot, loc);
}

/* One statement of the rule for parameter p, in its environment. */
static void rule_stmt(Lower *L, Env *env, AstNode *st, int p)
{
	L->opt_param = p;
	IrFunc *fn = L->fn;
	const IrSlot *ps = &L->mod->params[p];
	if (st->kind == AST_STATE) {
		IrShape s = ps->shape;
		if (st->args.n) {
			s = (IrShape){0};
			for (AstNode *d = st->args.head; d; d = d->next) {
				Value v = lower_expr(L, env, d);
				if (v.kind == V_NUM && v.num >= 1 && s.rank < IR_MAXRANK)
					s.dim[s.rank++] = (int64_t)v.num;
				else
					diag_error(d->loc, "a state dimension must be a positive number");
			}
		}
		L->fn = NULL; /* an initial value is a number or an initializer */
		Value init = lower_expr(L, env, st->rhs);
		L->fn = fn;
		if (init.kind != V_NUM && init.kind != V_INIT) {
			if (init.kind != V_NONE)
				diag_error(st->rhs->loc, "state is initialized with a number or an initializer");
			return;
		}
		char name[256];
		snprintf(name, sizeof name, "%s.%s", ps->name, st->name);
		int slot = ir_add_state(L->mod, intern_cstr(name), s, lower_resolve_init(init, s), st->loc);
		lower_bind(L, env, st->name, (Value){.kind = V_TENSOR, .id = ir_leaf(fn, IR_STATE, slot, s, st->loc)});
		return;
	}
	Value v = lower_expr(L, env, st->rhs);
	if (st->op != TK_ASSIGN) {
		Value *old = lower_lookup_local(env, st->name);
		int tk = st->op == TK_PLUSEQ ? IR_ADD : st->op == TK_MINUSEQ ? IR_SUB : st->op == TK_STAREQ ? IR_MUL : IR_DIV;
		int a = old ? lower_tensor(L, *old, st->loc) : -1;
		v = (Value){.kind = V_TENSOR, .id = ir_binary(fn, (IrOp)tk, a, lower_tensor(L, v, st->loc), st->loc)};
		if (v.id < 0)
			v.kind = V_NONE;
	}
	lower_bind(L, env, st->name, v);
}

/* After the rule, write back what it changed for parameter p: its states, then the parameter. */
static void write_back(Lower *L, Env *env, int p, int first_state, SrcLoc loc)
{
	const IrSlot *ps = &L->mod->params[p];
	size_t len = strlen(ps->name);
	for (int s = first_state; s < L->mod->nstates; s++) {
		const IrSlot *ss = &L->mod->states[s];
		const char *local = ss->name + len + 1; /* "l1.w.m": the state m of l1.w */
		if (strncmp(ss->name, ps->name, len) != 0 || ss->name[len] != '.' || strchr(local, '.'))
			continue;
		Value *v = lower_lookup_local(env, intern_cstr(local));
		int id = v ? lower_tensor(L, *v, ss->loc) : -1;
		if (id >= 0 && !(L->fn->inst[id].op == IR_STATE && L->fn->inst[id].ival == s))
			store(L, IR_STORE_STATE, id, s, ss, ss->loc);
	}
	Value *pv = lower_lookup_local(env, intern_cstr("p"));
	store(L, IR_STORE_PARAM, lower_tensor(L, *pv, loc), p, ps, loc);
}

static int mentions_global(const AstNode *e)
{
	if (!e)
		return 0;
	if (e->kind == AST_CALL && e->lhs->kind == AST_NAME
	    && (sema_builtin(e->lhs->name) == BI_global_sum || sema_builtin(e->lhs->name) == BI_global_norm))
		return 1;
	if (mentions_global(e->lhs) || mentions_global(e->rhs))
		return 1;
	for (const AstNode *a = e->args.head; a; a = a->next)
		if (mentions_global(a))
			return 1;
	for (const AstNode *a = e->body.head; a; a = a->next)
		if (mentions_global(a))
			return 1;
	return 0;
}

int optim_lower(Lower *L, IrFunc *fn, const Value *opt, const int *grad)
{
	int before = diag_count();
	AstNode *def = sema_lookup(L->globals, opt->node->lhs->name);
	const char *p_name = intern_cstr("p"), *g_name = intern_cstr("g"), *t_name = intern_cstr("t");
	L->fn = fn;
	int step = ir_leaf(fn, IR_STEP, 0, ir_scalar_shape(), def->loc);
	int hp[64];
	int i = 0;
	Env *sched = lower_env_new(L, opt->env);
	lower_bind(L, sched, t_name, (Value){.kind = V_TENSOR, .id = step});
	int T = ir_find_hparam(L->mod, intern_cstr("T"));
	if (T >= 0)
		lower_bind(L, sched, intern_cstr("T"),
			   (Value){.kind = V_TENSOR, .id = ir_leaf(fn, IR_HPARAM, T, ir_scalar_shape(), def->loc)});
	for (AstNode *f = def->formals.head; f && i < 64; f = f->next, i++) {
		if (L->schedule[i])
			hp[i] = lower_tensor(L, lower_expr(L, sched, L->schedule[i]), L->schedule[i]->loc);
		else
			hp[i] = ir_leaf(fn, IR_HPARAM, ir_find_hparam(L->mod, f->name), ir_scalar_shape(), f->loc);
	}
	int n = L->mod->nparams, first_state = L->mod->nstates;
	Env **envs = arena_alloc(L->arena, (size_t)(n + 1) * sizeof *envs);
	for (int p = 0; p < n; p++) {
		Env *env = envs[p] = lower_env_new(L, L->global_env);
		i = 0;
		for (AstNode *f = def->formals.head; f && i < 64; f = f->next, i++)
			lower_bind(L, env, f->name, (Value){.kind = V_TENSOR, .id = hp[i]});
		lower_bind(L, env, p_name, (Value){.kind = V_TENSOR, .id = lower_param_value(L, p)});
		lower_bind(L, env, g_name, (Value){.kind = V_TENSOR, .id = grad[p]});
		lower_bind(L, env, t_name, (Value){.kind = V_TENSOR, .id = step});
	}
	L->opt_envs = envs;
	L->opt_nenvs = n;
	if (mentions_global(def)) {
		/* A global reduction is a barrier: every parameter's rule runs statement by statement, so
		 * that statement k sees every parameter as it stands after statement k - 1. */
		for (AstNode *st = def->body.head; st && !diag_full(); st = st->next) {
			L->global_node = NULL;
			for (int p = 0; p < n; p++)
				rule_stmt(L, envs[p], st, p);
		}
		for (int p = 0; p < n; p++)
			write_back(L, envs[p], p, first_state, def->loc);
	} else {
		/* Each parameter's update in one piece, which fuses best. */
		for (int p = 0; p < n && !diag_full(); p++) {
			for (AstNode *st = def->body.head; st; st = st->next)
				rule_stmt(L, envs[p], st, p);
			write_back(L, envs[p], p, first_state, def->loc);
		}
	}
	L->opt_envs = NULL;
	L->fn = NULL;
	return diag_count() - before;
}
