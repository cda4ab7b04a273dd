/* optim.c: the update rule applied to every parameter. */
#include "optim.h"

#include <string.h>

#include "grammar.h"
#include "util.h"

/* Does e read the step t or the run length T? Then it is a schedule, evaluated every step. */
/* Is pred true of e or of any node below it (operands, arguments, statements)? */
static int any_node(const AstNode *e, int (*pred)(const AstNode *, void *), void *ctx)
{
	if (!e)
		return 0;
	if (pred(e, ctx) || any_node(e->lhs, pred, ctx) || any_node(e->rhs, pred, ctx))
		return 1;
	for (const AstNode *a = e->args.head; a; a = a->next)
		if (any_node(a, pred, ctx))
			return 1;
	for (const AstNode *a = e->body.head; a; a = a->next)
		if (any_node(a, pred, ctx))
			return 1;
	return 0;
}

static int is_name(const AstNode *e, void *name) { return e->kind == AST_NAME && e->name == name; }

static int is_step(const AstNode *e, void *unused)
{
	return is_name(e, (void *)intern_cstr("t")) || is_name(e, (void *)intern_cstr("T"));
}

static int mentions_step(const AstNode *e) { return any_node(e, is_step, NULL); }

/* Does a statement of a rule read T? */
static int mentions_T(const AstNode *e) { return any_node(e, is_name, (void *)intern_cstr("T")); }

/* The argument a call passes for the index-th formal, by position or by name. */
static AstNode *call_arg(AstNode *call, int index, const char *name)
{
	int pos = 0;
	for (AstNode *a = call->args.head; a; a = a->next)
		if (a->kind == AST_NAMED ? a->name == name : pos++ == index)
			return a->kind == AST_NAMED ? a->rhs : a;
	return NULL;
}

int optim_rules(const Value *opt, const Value **rule)
{
	if (!opt->items) {
		rule[0] = opt;
		return 1;
	}
	for (int r = 0; r < opt->nitems; r++)
		rule[r] = &opt->items[r];
	return opt->nitems;
}

AstNode *optim_def(const Lower *L, const Value *rule)
{
	return rule->def ? rule->def : sema_lookup(L->globals, rule->node->lhs->name);
}

int optim_hparams(Lower *L, const Value *opt)
{
	int before = diag_count();
	const Value *rules[64];
	int nrules = optim_rules(opt, rules), i = 0;
	IrFunc *fn = L->fn;
	L->fn = NULL; /* hyperparameters are numbers; the runtime may change them */
	for (int r = 0; r < nrules; r++) {
		AstNode *def = optim_def(L, rules[r]);
		Env *env = lower_env_new(L, L->global_env);
		char shared[256] = "";
		int k = 0;
		for (AstNode *f = def->formals.head; f; f = f->next, k++, i++) {
			if (i >= 64) {
				diag_error(f->loc, "more than 64 hyperparameters");
				break;
			}
			L->schedule[i] = NULL;
			int dup = ir_find_hparam(L->mod, f->name) >= 0;
			for (int q = 0; q < i; q++)
				dup |= L->schedule_name[q] == f->name;
			if (dup) {
				size_t len = strlen(shared);
				snprintf(shared + len, sizeof shared - len, "%s%s", len ? ", " : "", f->name);
				L->schedule_name[i] = f->name;
				continue;
			}
			AstNode *arg = call_arg(rules[r]->node, k, f->name);
			L->schedule_name[i] = f->name;
			if (arg && mentions_step(arg)) {
				L->schedule[i] = arg;
				ir_add_hparam(L->mod, intern_cstr("T"), 0, arg->loc);
				lower_bind(L, env, f->name, (Value){V_NONE});
				continue;
			}
			Value v = arg ? lower_expr(L, rules[r]->env, arg) : f->rhs ? lower_expr(L, env, f->rhs) : (Value){V_NONE};
			lower_bind(L, env, f->name, v);
			if (v.kind == V_NUM)
				ir_add_hparam(L->mod, f->name, v.num, f->loc);
			else if (v.kind != V_NONE)
				diag_error(arg ? arg->loc : f->loc, "hyperparameter '%s' must be a number or a schedule "
								    "(an expression of t and T)", f->name);
		}
		if (*shared)
			diag_error(rules[r]->node->loc, "'%s' has hyperparameters an earlier rule of the chain has: %s "
							"(each rule's must be distinct)", def->name, shared);
	}
	for (int r = 0; r < nrules; r++) /* a rule that reads T makes it a hyperparameter, as a schedule does */
		for (AstNode *st = optim_def(L, rules[r])->body.head; st; st = st->next)
			if (mentions_T(st))
				ir_add_hparam(L->mod, intern_cstr("T"), 0, st->loc);
	for (int r = 0; r < nrules; r++) {
		char shared[256] = "";
		for (AstNode *st = optim_def(L, rules[r])->body.head; st; st = st->next)
			for (int q = 0; q < r && st->kind == AST_STATE; q++)
				for (AstNode *o = optim_def(L, rules[q])->body.head; o; o = o->next)
					if (o->kind == AST_STATE && o->name == st->name) {
						size_t len = strlen(shared);
						snprintf(shared + len, sizeof shared - len, "%s%s", len ? ", " : "", st->name);
					}
		if (*shared)
			diag_error(rules[r]->node->loc, "'%s' has states an earlier rule of the chain has: %s",
				   optim_def(L, rules[r])->name, shared);
	}
	L->nschedule = i;
	L->fn = fn;
	return diag_count() - before;
}

int optim_is_schedule(const Lower *L, const char *name)
{
	for (int i = 0; i < L->nschedule; i++)
		if (L->schedule[i] && L->schedule_name[i] == name)
			return 1;
	return 0;
}

void optim_describe(FILE *out, const Lower *L, const Value *opt)
{
	const Value *rules[64];
	int nrules = optim_rules(opt, rules), i = 0;
	if (nrules > 1)
		fprintf(out, "chain(");
	for (int r = 0; r < nrules; r++) {
		AstNode *def = optim_def(L, rules[r]);
		fprintf(out, "%s%s(", r ? ", " : "", def->name);
		int k = 0;
		for (const AstNode *f = def->formals.head; f && i < 64; f = f->next, i++, k++) {
			int h = ir_find_hparam(L->mod, f->name);
			if (L->schedule[i])
				fprintf(out, "%s%s=schedule", k ? ", " : "", f->name);
			else if (h >= 0)
				fprintf(out, "%s%s=%g", k ? ", " : "", f->name, L->mod->hparams[h].value);
		}
		fprintf(out, ")");
	}
	if (nrules > 1)
		fprintf(out, ")");
}

static void store(Lower *L, NmlBlock block, int v, int slot, const IrSlot *s, SrcLoc loc)
{
	if (v < 0)
		return;
	IrShape b;
	const IrShape *vs = ir_shape_of(L->fn, v);
	if (!ir_broadcast(*vs, s->shape, &b) || !ir_shape_eq(b, s->shape)) {
		char x[64], y[64];
		diag_error(loc, "the update of '%s' has shape %s, the %s is %s", s->name, ir_shape_str(*vs, x, sizeof x),
			   block == NML_B_PARAMS ? "parameter" : "state", ir_shape_str(s->shape, y, sizeof y));
		return;
	}
	ir_store(L->fn, block, slot, ir_expand(L->fn, v, s->shape, loc), loc);
}

/* Does e read a tensor of env (p, g, a state)? Then a state it initializes is a copy made at the
 * first step, not a number or an initializer. */
static int is_tensor_name(const AstNode *e, void *env)
{
	Value *v = e->kind == AST_NAME ? lower_lookup(env, e->name) : NULL;
	return v && (v->kind == V_TENSOR || v->kind == V_PARAM || v->kind == V_BUF);
}

static int mentions_tensor(Env *env, const AstNode *e) { return any_node(e, is_tensor_name, env); }

static int mentions_global(const AstNode *e);

/* One statement of the rule for parameter p, in its environment. */
static void rule_stmt(Lower *L, Env *env, AstNode *st, int p)
{
	L->opt_param = p;
	IrFunc *fn = L->fn;
	const IrSlot *ps = ir_slot(L->mod, NML_B_PARAMS, p);
	if (st->kind == AST_REPEAT) {
		if (mentions_global(st)) {
			diag_error(st->loc, "a global reduction inside repeat (it is a barrier between statements)");
			return;
		}
		int n = lower_repeat_count(L, env, st);
		for (int i = 0; i < n && !diag_full(); i++)
			for (AstNode *s = st->body.head; s; s = s->next)
				rule_stmt(L, env, s, p);
		return;
	}
	if (st->kind == AST_STATE && mentions_tensor(env, st->rhs)) {
		/* state x = an expression of p, g, ...: its value at the first step; the slot holds it after */
		IrShape s = ps->shape;
		if (st->args.n) {
			s = (IrShape){0};
			for (AstNode *d = st->args.head; d; d = d->next) {
				Value v = lower_expr(L, env, d);
				if (v.kind == V_NUM && v.num >= 1 && v.num <= 0x1p40 && v.num == (int64_t)v.num && s.rank < IR_MAXRANK)
					s.dim[s.rank++] = (int64_t)v.num;
				else
					diag_error(d->loc, "a state dimension must be a whole number from 1 to 2^40");
			}
		}
		int init = lower_tensor(L, lower_expr(L, env, st->rhs), st->rhs->loc);
		if (init < 0)
			return;
		IrShape b;
		if (!ir_broadcast(*ir_shape_of(fn, init), s, &b) || !ir_shape_eq(b, s)) {
			char x[64], y[64];
			diag_error(st->rhs->loc, "the initial value of state '%s' has shape %s, the state is %s", st->name,
				   ir_shape_str(*ir_shape_of(fn, init), x, sizeof x), ir_shape_str(s, y, sizeof y));
			return;
		}
		char name[256];
		snprintf(name, sizeof name, "%s.%s", ps->name, st->name);
		int slot = ir_add_slot(L->mod, NML_B_STATE, intern_cstr(name), s, (IrInit){INIT_CONST, 0, 0}, st->loc);
		int first = ir_binary(fn, IR_EQ, L->opt_step, ir_const(fn, 1, st->loc), st->loc);
		int v = ir_where(fn, first, ir_expand(fn, init, s, st->loc), ir_load(fn, NML_B_STATE, slot, s, st->loc), st->loc);
		lower_bind(L, env, st->name, (Value){.kind = V_TENSOR, .id = v});
		return;
	}
	if (st->kind == AST_STATE) {
		IrShape s = ps->shape;
		if (st->args.n) {
			s = (IrShape){0};
			for (AstNode *d = st->args.head; d; d = d->next) {
				Value v = lower_expr(L, env, d);
				if (v.kind == V_NUM && v.num >= 1 && v.num <= 0x1p40 && v.num == (int64_t)v.num && s.rank < IR_MAXRANK)
					s.dim[s.rank++] = (int64_t)v.num;
				else
					diag_error(d->loc, "a state dimension must be a whole number from 1 to 2^40");
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
		int slot = ir_add_slot(L->mod, NML_B_STATE, intern_cstr(name), s, lower_resolve_init(init, s), st->loc);
		lower_bind(L, env, st->name, (Value){.kind = V_TENSOR, .id = ir_load(fn, NML_B_STATE, slot, s, st->loc)});
		return;
	}
	Value v = lower_expr(L, env, st->rhs);
	if (st->op != TK_ASSIGN) {
		Value *old = lower_lookup(env, st->name);
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
	const IrSlot *ps = ir_slot(L->mod, NML_B_PARAMS, p);
	size_t len = strlen(ps->name);
	for (int s = first_state; s < ir_block(L->mod, NML_B_STATE)->n; s++) {
		const IrSlot *ss = ir_slot(L->mod, NML_B_STATE, s);
		const char *local = ss->name + len + 1; /* "l1.w.m": the state m of l1.w */
		if (strncmp(ss->name, ps->name, len) != 0 || ss->name[len] != '.' || strchr(local, '.'))
			continue;
		Value *v = lower_lookup_local(env, intern_cstr(local));
		int id = v ? lower_tensor(L, *v, ss->loc) : -1;
		const IrInst *in = id >= 0 ? &L->fn->inst[id] : NULL;
		if (in && !(in->op == IR_LOAD && in->attr.slot.block == NML_B_STATE && in->attr.slot.index == s))
			store(L, NML_B_STATE, id, s, ss, ss->loc);
	}
	Value *pv = lower_lookup_local(env, intern_cstr("p"));
	store(L, NML_B_PARAMS, lower_tensor(L, *pv, loc), p, ps, loc);
	/* p_eval = ...: the weights evaluation and prediction use (an average, schedule-free's x), kept
	 * in the state block as "<parameter>.eval" */
	Value *ev = lower_lookup_local(env, intern_cstr("p_eval"));
	if (ev) {
		char name[256];
		snprintf(name, sizeof name, "%s.eval", ps->name);
		int slot = ir_add_slot(L->mod, NML_B_STATE, intern_cstr(name), ps->shape, (IrInit){INIT_CONST, 0, 0}, loc);
		store(L, NML_B_STATE, lower_tensor(L, *ev, loc), slot, ir_slot(L->mod, NML_B_STATE, slot), loc);
		if (p >= L->neval_slot) {
			int n = ir_block(L->mod, NML_B_PARAMS)->n;
			L->eval_slot = xrealloc(L->eval_slot, (size_t)n * sizeof *L->eval_slot);
			for (int i = L->neval_slot; i < n; i++)
				L->eval_slot[i] = -1;
			L->neval_slot = n;
		}
		L->eval_slot[p] = slot;
	}
}

static int is_barrier(const AstNode *e, void *unused)
{
	int b = e->kind == AST_CALL && e->lhs->kind == AST_NAME ? sema_builtin(e->lhs->name) : -1;
	return b == BI_global_sum || b == BI_global_norm || b == BI_grad_at;
}

static int mentions_global(const AstNode *e) { return any_node(e, is_barrier, NULL); }

/* The rule environment of a parameter hands what the rule changed to the next rule: p, g and
 * the rule's states. */
static void finish_rule(Lower *L, Env *base, Env *env, const AstNode *def)
{
	const char *names[] = {intern_cstr("p"), intern_cstr("g"), intern_cstr("p_eval")};
	for (int k = 0; k < 3; k++) {
		Value *v = lower_lookup_local(env, names[k]);
		if (v)
			lower_bind(L, base, names[k], *v);
	}
	for (const AstNode *st = def->body.head; st; st = st->next) {
		Value *v = st->kind == AST_STATE ? lower_lookup_local(env, st->name) : NULL;
		if (v)
			lower_bind(L, base, st->name, *v);
	}
}

int optim_lower(Lower *L, IrFunc *fn, const Value *opt, const int *grad)
{
	int before = diag_count();
	const Value *rules[64];
	int nrules = optim_rules(opt, rules);
	const char *p_name = intern_cstr("p"), *g_name = intern_cstr("g"), *t_name = intern_cstr("t");
	SrcLoc loc = optim_def(L, rules[nrules - 1])->loc; /* the rule that updates p */
	L->fn = fn;
	int step = ir_scalar_leaf(fn, IR_STEP, loc);
	L->opt_step = step;
	Env *sched = lower_env_new(L, opt->env);
	lower_bind(L, sched, t_name, (Value){.kind = V_TENSOR, .id = step});
	int T = ir_find_hparam(L->mod, intern_cstr("T"));
	if (T >= 0)
		lower_bind(L, sched, intern_cstr("T"),
			   (Value){.kind = V_TENSOR, .id = ir_hparam(fn, T, loc)});

	/* Every parameter's base environment: the hyperparameters of all rules, p, g and t. */
	int n = ir_block(L->mod, NML_B_PARAMS)->n, first_state = ir_block(L->mod, NML_B_STATE)->n, global = 0;
	Env **base = arena_alloc(L->arena, (size_t)(n + 1) * sizeof *base);
	Env **envs = arena_alloc(L->arena, (size_t)(n + 1) * sizeof *envs);
	for (int p = 0; p < n; p++) {
		base[p] = lower_env_new(L, L->global_env);
		lower_bind(L, base[p], p_name, (Value){.kind = V_TENSOR, .id = lower_param_value(L, p)});
		lower_bind(L, base[p], g_name, (Value){.kind = V_TENSOR, .id = grad[p]});
		lower_bind(L, base[p], t_name, (Value){.kind = V_TENSOR, .id = step});
		if (T >= 0) /* the run's length, which rules read like schedules do */
			lower_bind(L, base[p], intern_cstr("T"), (Value){.kind = V_TENSOR, .id = ir_hparam(fn, T, loc)});
	}
	int i = 0;
	for (int r = 0; r < nrules; r++) {
		AstNode *def = optim_def(L, rules[r]);
		global |= mentions_global(def);
		for (AstNode *f = def->formals.head; f && i < 64; f = f->next, i++) {
			int v = L->schedule[i] ? lower_tensor(L, lower_expr(L, sched, L->schedule[i]), L->schedule[i]->loc)
				: ir_hparam(fn, ir_find_hparam(L->mod, f->name), f->loc);
			for (int p = 0; p < n; p++)
				lower_bind(L, base[p], f->name, (Value){.kind = V_TENSOR, .id = v});
		}
	}

	L->opt_envs = envs;
	L->opt_nenvs = n;
	if (global) {
		/* A global reduction is a barrier: every parameter's rules run statement by statement, so
		 * that statement k sees every parameter as it stands after statement k - 1. */
		for (int r = 0; r < nrules && !diag_full(); r++) {
			AstNode *def = optim_def(L, rules[r]);
			for (int p = 0; p < n; p++)
				envs[p] = lower_env_new(L, base[p]);
			for (AstNode *st = def->body.head; st && !diag_full(); st = st->next) {
				L->nbarrier = 0;
				for (int p = 0; p < n; p++)
					rule_stmt(L, envs[p], st, p);
			}
			for (int p = 0; p < n; p++)
				finish_rule(L, base[p], envs[p], def);
		}
		for (int p = 0; p < n; p++)
			write_back(L, base[p], p, first_state, loc);
	} else {
		/* Each parameter's update in one piece, which fuses best. */
		for (int p = 0; p < n && !diag_full(); p++) {
			int mine = ir_block(L->mod, NML_B_STATE)->n; /* p's state slots are made from here on */
			for (int r = 0; r < nrules; r++) {
				AstNode *def = optim_def(L, rules[r]);
				envs[p] = lower_env_new(L, base[p]);
				for (AstNode *st = def->body.head; st; st = st->next)
					rule_stmt(L, envs[p], st, p);
				finish_rule(L, base[p], envs[p], def);
			}
			write_back(L, base[p], p, mine, loc);
		}
	}
	L->opt_envs = NULL;
	L->fn = NULL;
	return diag_count() - before;
}
