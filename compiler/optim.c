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
	return is_name(e, (void *)intern_cstr("t")) || is_name(e, (void *)intern_cstr("T"))
	       || is_name(e, (void *)intern_cstr("epoch"));
}

static int mentions_step(const AstNode *e) { return any_node(e, is_step, NULL); }

/* Does a statement of a rule read T? */
static int mentions_T(const AstNode *e) { return any_node(e, is_name, (void *)intern_cstr("T")); }

/* Does an expression or statement read the epoch? It is computed from the step and the
 * hyperparameter steps_per_epoch, which the run sets as it sets T. */
static int mentions_epoch(const AstNode *e) { return any_node(e, is_name, (void *)intern_cstr("epoch")); }

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

/* Does rule (of a chain) update parameter p? Every rule does, but one in a group (only/except). */
static int selects(const Lower *L, const Value *rule, int p)
{
	if (!rule->group)
		return 1;
	const IrSlot *ps = ir_slot(L->mod, NML_B_PARAMS, p);
	int in = 0;
	if (rule->group == intern_cstr("matrix"))
		in = ps->shape.rank >= 2;
	else if (rule->group == intern_cstr("vector"))
		in = ps->shape.rank < 2;
	else
		for (int k = 0; k < ps->ntags; k++)
			in |= ps->tags[k] == rule->group;
	return in != rule->group_except;
}

/* The hyperparameter a formal of rule is: "group.name" for a rule in only("group", ...), so that
 * two groups' rules can have the same formals; else the formal's name. */
static const char *hparam_name(const Value *rule, const char *formal)
{
	if (!rule->group || rule->group_except)
		return formal;
	char buf[256];
	snprintf(buf, sizeof buf, "%s.%s", rule->group, formal);
	return intern_cstr(buf);
}

/* Is some parameter updated by both rules? (Then they cannot share state names.) */
static int both_update_one(const Lower *L, const Value *a, const Value *b)
{
	for (int p = 0; p < ir_block(L->mod, NML_B_PARAMS)->n; p++)
		if (selects(L, a, p) && selects(L, b, p))
			return 1;
	return 0;
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
			const char *hp = hparam_name(rules[r], f->name);
			int dup = ir_find_hparam(L->mod, hp) >= 0;
			for (int q = 0; q < i; q++)
				dup |= L->schedule_name[q] == hp;
			if (dup) {
				size_t len = strlen(shared);
				snprintf(shared + len, sizeof shared - len, "%s%s", len ? ", " : "", hp);
				L->schedule_name[i] = hp;
				continue;
			}
			AstNode *arg = call_arg(rules[r]->node, k, f->name);
			L->schedule_name[i] = hp;
			L->schedule_scaled[i] = 0;
			if (arg && mentions_step(arg)) {
				L->schedule[i] = arg;
				ir_add_hparam(L->mod, intern_cstr("T"), 0, arg->loc);
				lower_bind(L, env, f->name, (Value){V_NONE});
				/* number * curve (or curve * number): the number stays a hyperparameter, so that
				 * --set lr=... scales the curve without recompiling */
				if (arg->kind == AST_BINARY && arg->op == TK_STAR) {
					for (int side = 0; side < 2; side++) {
						AstNode *c = side ? arg->rhs : arg->lhs, *curve = side ? arg->lhs : arg->rhs;
						if (mentions_step(c) || !mentions_step(curve))
							continue;
						Value k = lower_expr(L, rules[r]->env, c);
						if (k.kind != V_NUM)
							continue;
						ir_add_hparam(L->mod, hp, k.num, c->loc);
						L->schedule[i] = curve;
						L->schedule_scaled[i] = 1;
						break;
					}
				}
				continue;
			}
			Value v = arg ? lower_expr(L, rules[r]->env, arg) : f->rhs ? lower_expr(L, env, f->rhs) : (Value){V_NONE};
			lower_bind(L, env, f->name, v);
			if (v.kind == V_NUM)
				ir_add_hparam(L->mod, hp, v.num, f->loc);
			else if (v.kind != V_NONE)
				diag_error(arg ? arg->loc : f->loc, "hyperparameter '%s' must be a number or a schedule "
								    "(an expression of t and T)", f->name);
		}
		if (*shared)
			diag_error(rules[r]->node->loc, "'%s' has hyperparameters an earlier rule of the chain has: %s "
							"(each rule's must be distinct; a rule in only(\"tag\", ...) has them as "
							"tag.name)", def->name, shared);
	}
	for (int r = 0; r < nrules; r++) { /* a group that selects nothing is a misspelt tag */
		int any = 0;
		for (int p = 0; p < ir_block(L->mod, NML_B_PARAMS)->n && !any; p++)
			any = selects(L, rules[r], p);
		if (rules[r]->group && !any)
			diag_error(rules[r]->node->loc, "%s(\"%s\", ...) updates no parameter: %s", rules[r]->group_except ? "except" : "only",
				   rules[r]->group, rules[r]->group_except ? "every parameter has the tag" :
				   "no parameter is declared with that tag (\"matrix\" and \"vector\" select by rank)");
	}
	for (int r = 0; r < nrules; r++) /* a rule that reads T makes it a hyperparameter, as a schedule does */
		for (AstNode *st = optim_def(L, rules[r])->body.head; st; st = st->next) {
			if (mentions_T(st))
				ir_add_hparam(L->mod, intern_cstr("T"), 0, st->loc);
			if (mentions_epoch(st))
				ir_add_hparam(L->mod, intern_cstr("steps_per_epoch"), 1, st->loc);
		}
	for (int q = 0; q < i && q < 64; q++)
		if (L->schedule[q] && mentions_epoch(L->schedule[q]))
			ir_add_hparam(L->mod, intern_cstr("steps_per_epoch"), 1, L->schedule[q]->loc);
	for (int r = 0; r < nrules; r++) {
		char shared[256] = "";
		for (AstNode *st = optim_def(L, rules[r])->body.head; st; st = st->next)
			for (int q = 0; q < r && st->kind == AST_STATE; q++)
				for (AstNode *o = both_update_one(L, rules[q], rules[r]) ? optim_def(L, rules[q])->body.head : NULL; o;
				     o = o->next)
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
		if (L->schedule[i] && !L->schedule_scaled[i] && L->schedule_name[i] == name)
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
		if (rules[r]->group)
			fprintf(out, "%s%s(\"%s\", ", r ? ", " : "", rules[r]->group_except ? "except" : "only", rules[r]->group);
		fprintf(out, "%s%s(", r && !rules[r]->group ? ", " : "", def->name);
		int k = 0;
		for (const AstNode *f = def->formals.head; f && i < 64; f = f->next, i++, k++) {
			int h = ir_find_hparam(L->mod, hparam_name(rules[r], f->name));
			if (L->schedule[i] && L->schedule_scaled[i])
				fprintf(out, "%s%s=%g*schedule", k ? ", " : "", hparam_name(rules[r], f->name), L->mod->hparams[h].value);
			else if (L->schedule[i])
				fprintf(out, "%s%s=schedule", k ? ", " : "", hparam_name(rules[r], f->name));
			else if (h >= 0)
				fprintf(out, "%s%s=%g", k ? ", " : "", hparam_name(rules[r], f->name), L->mod->hparams[h].value);
		}
		fprintf(out, rules[r]->group ? "))" : ")");
	}
	if (nrules > 1)
		fprintf(out, ")");
}

/* A state slot of a rule. Made after the rule's accumulation point (L->opt_apply set), it is
 * written only on the steps that update. */
static int state_slot(Lower *L, const char *name, IrShape s, IrInit init, SrcLoc loc)
{
	int slot = ir_add_slot(L->mod, NML_B_STATE, intern_cstr(name), s, init, loc);
	if (slot >= L->nstate_gated) {
		int n = slot + 64;
		L->state_gated = xrealloc(L->state_gated, (size_t)n);
		memset(L->state_gated + L->nstate_gated, 0, (size_t)(n - L->nstate_gated));
		L->nstate_gated = n;
	}
	L->state_gated[slot] = L->opt_apply >= 0;
	return slot;
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
	v = ir_expand(L->fn, v, s->shape, loc);
	int gated = block == NML_B_PARAMS || (slot < L->nstate_gated && L->state_gated[slot]);
	if (L->opt_apply >= 0 && gated) /* accumulating: only the steps that update write */
		v = ir_where(L->fn, L->opt_apply, v, ir_load(L->fn, block, slot, s->shape, loc), loc);
	ir_store(L->fn, block, slot, v, loc);
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
		int slot = state_slot(L, name, s, (IrInit){INIT_CONST, 0, 0}, st->loc);
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
		int slot = state_slot(L, name, s, lower_resolve_init(init, s), st->loc);
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
		int slot = state_slot(L, name, ps->shape, (IrInit){INIT_CONST, 0, 0}, loc);
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

int optim_accumulate(Lower *L, int p, int g, int k, SrcLoc loc)
{
	IrFunc *fn = L->fn;
	const IrSlot *ps = ir_slot(L->mod, NML_B_PARAMS, p);
	int raw = ir_scalar_leaf(fn, IR_STEP, loc);
	L->opt_accumulated[p] = 1;
	char name[256];
	snprintf(name, sizeof name, "%s.accumulated-grad", ps->name); /* not a name a rule can declare */
	int slot = state_slot(L, name, ps->shape, (IrInit){INIT_CONST, 0, 0}, loc);
	L->opt_apply = ir_binary(fn, IR_EQ, ir_binary(fn, IR_MOD, raw, k, loc), ir_const(fn, 0, loc), loc);
	int sum = ir_binary(fn, IR_ADD, ir_load(fn, NML_B_STATE, slot, ps->shape, loc), ir_expand(fn, g, ps->shape, loc), loc);
	ir_store(fn, NML_B_STATE, slot, ir_where(fn, L->opt_apply, ir_expand(fn, ir_const(fn, 0, loc), ps->shape, loc), sum, loc), loc);
	/* From here on the rules count updates: t = ceil(step / k), T = floor(T / k). */
	int t = ir_unary(fn, IR_FLOOR, ir_binary(fn, IR_DIV, ir_binary(fn, IR_SUB, ir_binary(fn, IR_ADD, raw, k, loc),
									      ir_const(fn, 1, loc), loc), k, loc), loc);
	lower_bind(L, L->opt_base[p], intern_cstr("t"), (Value){.kind = V_TENSOR, .id = t});
	L->opt_step = t;
	int T = ir_find_hparam(L->mod, intern_cstr("T"));
	if (T >= 0)
		lower_bind(L, L->opt_base[p], intern_cstr("T"),
			   (Value){.kind = V_TENSOR, .id = ir_unary(fn, IR_FLOOR, ir_binary(fn, IR_DIV, ir_hparam(fn, T, loc), k, loc), loc)});
	return ir_binary(fn, IR_DIV, sum, k, loc);
}

/* Rule r's hyperparameters for parameter p, bound in its base environment: run-time values, or
 * schedules of t and T as the rule sees them (counting updates after an accumulation). */
static void bind_hparams(Lower *L, const Value *rule, int first, Env *base)
{
	AstNode *def = optim_def(L, rule);
	Env *sched = lower_env_new(L, rule->env);
	const char *names[] = {intern_cstr("t"), intern_cstr("T"), intern_cstr("epoch")};
	for (int k = 0; k < 3; k++) {
		Value *v = lower_lookup(base, names[k]);
		if (v)
			lower_bind(L, sched, names[k], *v);
	}
	int i = first;
	for (AstNode *f = def->formals.head; f && i < 64; f = f->next, i++) {
		int h = ir_find_hparam(L->mod, hparam_name(rule, f->name));
		int v = L->schedule[i] ? lower_tensor(L, lower_expr(L, sched, L->schedule[i]), L->schedule[i]->loc)
				       : ir_hparam(L->fn, h, f->loc);
		if (L->schedule[i] && L->schedule_scaled[i])
			v = ir_binary(L->fn, IR_MUL, ir_hparam(L->fn, h, f->loc), v, f->loc);
		lower_bind(L, base, f->name, (Value){.kind = V_TENSOR, .id = v});
	}
}

/* The note an error inside a rule gets: where the train block (or --optimizer) names it. */
static const char *rule_context(Lower *L, const AstNode *def)
{
	char msg[160];
	snprintf(msg, sizeof msg, "in %s '%s' of the optimizer", def->kind == AST_TRANSFORM ? "transform" : "rule",
		 def->name);
	return arena_strndup(L->arena, msg, strlen(msg));
}

static int count_formals(const AstNode *def)
{
	int k = 0;
	for (const AstNode *f = def->formals.head; f; f = f->next)
		k++;
	return k;
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
	int T = ir_find_hparam(L->mod, intern_cstr("T")), spe = ir_find_hparam(L->mod, intern_cstr("steps_per_epoch"));
	/* the epoch, from 1: of the step, whatever accumulation counts as an update */
	int epoch = spe < 0 ? -1
		: ir_binary(fn, IR_ADD, ir_unary(fn, IR_FLOOR, ir_binary(fn, IR_DIV, ir_binary(fn, IR_SUB, step, ir_const(fn, 1, loc), loc),
									    ir_hparam(fn, spe, loc), loc), loc), ir_const(fn, 1, loc), loc);
	int n = ir_block(L->mod, NML_B_PARAMS)->n, first_state = ir_block(L->mod, NML_B_STATE)->n, global = 0;
	int first_formal[64];
	for (int r = 0, i = 0; r < nrules; r++) {
		first_formal[r] = i;
		i += count_formals(optim_def(L, rules[r]));
		global |= mentions_global(optim_def(L, rules[r]));
	}

	/* Every parameter's base environment: p, g, t and T, then each rule's hyperparameters as the
	 * rule comes. */
	Env **base = arena_alloc(L->arena, (size_t)(n + 1) * sizeof *base);
	Env **envs = arena_alloc(L->arena, (size_t)(n + 1) * sizeof *envs);
	L->opt_base = base;
	L->opt_accumulated = arena_alloc(L->arena, (size_t)n + 1);
	memset(L->opt_accumulated, 0, (size_t)n + 1);
	L->opt_apply = -1;
	int k = L->accumulate > 1 ? ir_const(fn, (double)L->accumulate, loc) : -1;
	for (int p = 0; p < n; p++) {
		base[p] = lower_env_new(L, L->global_env);
		lower_bind(L, base[p], p_name, (Value){.kind = V_TENSOR, .id = lower_param_value(L, p)});
		/* the weights as the step found them, whatever the rules before in a chain made of p */
		lower_bind(L, base[p], intern_cstr("p_start"), (Value){.kind = V_TENSOR, .id = lower_param_value(L, p)});
		lower_bind(L, base[p], t_name, (Value){.kind = V_TENSOR, .id = step});
		if (epoch >= 0)
			lower_bind(L, base[p], intern_cstr("epoch"), (Value){.kind = V_TENSOR, .id = epoch});
		if (T >= 0) /* the run's length, which rules read like schedules do */
			lower_bind(L, base[p], intern_cstr("T"), (Value){.kind = V_TENSOR, .id = ir_hparam(fn, T, loc)});
		/* accumulate = k in the train block: every rule runs on the mean of k steps' gradients */
		int g = k >= 0 ? optim_accumulate(L, p, grad[p], k, loc) : grad[p];
		lower_bind(L, base[p], g_name, (Value){.kind = V_TENSOR, .id = g});
	}
	int train_apply = L->opt_apply;
	L->opt_step = lower_lookup(base[0], t_name) ? lower_lookup(base[0], t_name)->id : step;

	L->opt_envs = envs;
	L->opt_nenvs = n;
	if (global) {
		/* A global reduction is a barrier: every parameter's rules run statement by statement, so
		 * that statement k sees every parameter as it stands after statement k - 1. */
		for (int r = 0; r < nrules && !diag_full(); r++) {
			AstNode *def = optim_def(L, rules[r]);
			diag_push_context(rules[r]->node->loc, rule_context(L, def));
			for (int p = 0; p < n; p++) {
				bind_hparams(L, rules[r], first_formal[r], base[p]);
				envs[p] = lower_env_new(L, base[p]);
			}
			for (AstNode *st = def->body.head; st && !diag_full(); st = st->next) {
				L->nbarrier = 0;
				for (int p = 0; p < n; p++)
					if (selects(L, rules[r], p))
						rule_stmt(L, envs[p], st, p);
			}
			for (int p = 0; p < n; p++)
				if (selects(L, rules[r], p))
					finish_rule(L, base[p], envs[p], def);
			diag_pop_context();
		}
		for (int p = 0; p < n; p++)
			write_back(L, base[p], p, first_state, loc);
	} else {
		/* Each parameter's update in one piece, which fuses best. */
		for (int p = 0; p < n && !diag_full(); p++) {
			L->opt_apply = train_apply;
			L->opt_step = lower_lookup(base[p], t_name)->id;
			int mine = ir_block(L->mod, NML_B_STATE)->n; /* p's state slots are made from here on */
			for (int r = 0; r < nrules; r++) {
				AstNode *def = optim_def(L, rules[r]);
				if (!selects(L, rules[r], p))
					continue;
				diag_push_context(rules[r]->node->loc, rule_context(L, def));
				bind_hparams(L, rules[r], first_formal[r], base[p]);
				envs[p] = lower_env_new(L, base[p]);
				for (AstNode *st = def->body.head; st; st = st->next)
					rule_stmt(L, envs[p], st, p);
				finish_rule(L, base[p], envs[p], def);
				diag_pop_context();
			}
			write_back(L, base[p], p, mine, loc);
		}
	}
	L->opt_envs = NULL;
	L->opt_base = NULL;
	L->opt_accumulated = NULL;
	L->opt_apply = -1;
	L->fn = NULL;
	return diag_count() - before;
}
