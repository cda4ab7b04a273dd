/* sema.c: every name used is defined, every call has an acceptable argument list. */
#include "sema.h"

#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "ops.h"

static SemaBuiltinInfo builtins[BI_COUNT + IR_NOPS] = {
#define X(name, lo, hi, named) [BI_##name] = {#name, lo, hi, named},
	SEMA_BUILTINS(X)
#undef X
};
static int builtin_op[BI_COUNT + IR_NOPS];
static int nbuiltins;

/* The table: SEMA_BUILTINS, then every op with a builtin name (ops.h); names interned. */
static void init_builtins(void)
{
	if (nbuiltins)
		return;
	for (int i = 0; i < BI_COUNT; i++) {
		builtins[i].name = intern_cstr(builtins[i].name);
		builtin_op[i] = -1;
	}
	nbuiltins = BI_COUNT;
	for (int op = 0; op < IR_NOPS; op++) {
		const IrOpInfo *info = ir_op_info((IrOp)op);
		if (!info->builtin)
			continue;
		builtin_op[nbuiltins] = op;
		builtins[nbuiltins++] = (SemaBuiltinInfo){intern_cstr(info->builtin), info->arity, info->arity, NULL};
	}
}

int sema_builtin(const char *name)
{
	init_builtins();
	for (int i = 0; i < nbuiltins; i++)
		if (builtins[i].name == name)
			return i;
	return -1;
}

const SemaBuiltinInfo *sema_builtin_info(int b) { return &builtins[b]; }

int sema_nbuiltins(void)
{
	init_builtins();
	return nbuiltins;
}

int sema_builtin_op(int b) { return b >= 0 && b < nbuiltins ? builtin_op[b] : -1; }

AstNode *sema_lookup(const SemaGlobals *g, const char *name)
{
	for (int i = 0; i < g->n; i++)
		if (g->items[i]->name == name)
			return g->items[i];
	return NULL;
}

AstNode *sema_train(const AstProgram *prog)
{
	for (AstNode *n = prog->items.head; n; n = n->next)
		if (n->kind == AST_TRAIN)
			return n;
	return NULL;
}

/* ---- scopes: a stack of names, popped to a mark ---- */

typedef struct Sema {
	int nesting, too_deep;  /* expression depth (check_expr), and whether that was reported */
	const SemaGlobals *globals;
	const char **names;
	int n, cap;
} Sema;

static void define(Sema *s, const char *name)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->names = realloc(s->names, s->cap * sizeof *s->names);
		if (!s->names)
			die("out of memory");
	}
	s->names[s->n++] = name;
}

static int defined(const Sema *s, const char *name)
{
	for (int i = s->n - 1; i >= 0; i--)
		if (s->names[i] == name)
			return 1;
	/* training: 1 in the training step's forward pass, 0 in evaluation's (lower.c) */
	return sema_lookup(s->globals, name) || sema_builtin(name) >= 0 || name == intern_cstr("training");
}

/* ---- arity ---- */

static int in_word_list(const char *list, const char *name)
{
	size_t len = strlen(name);
	for (const char *p = list; p && *p;) {
		const char *end = strchr(p, ' ');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == len && strncmp(p, name, n) == 0)
			return 1;
		p = end ? end + 1 : NULL;
	}
	return 0;
}

static const char *def_kind(AstKind k)
{
	return k == AST_LAYER ? "layer" : k == AST_OPTIMIZER ? "optimizer" : k == AST_TRANSFORM ? "transform" : "function";
}

static void check_call_formals(const AstNode *call, const AstNode *def)
{
	int nformals = def->formals.n, pos = 0, seen_named = 0;
	const char *given[64] = {0};
	for (const AstNode *a = call->args.head; a; a = a->next) {
		if (a->kind != AST_NAMED) {
			if (seen_named)
				diag_error(a->loc, "positional argument after a named one");
			else if (pos >= nformals)
				diag_error(a->loc, "too many arguments to %s '%s' (it takes %d)", def_kind(def->kind),
					   def->name, nformals);
			else if (pos < 64)
				given[pos] = "";
			pos++;
			continue;
		}
		seen_named = 1;
		int i = 0;
		const AstNode *f = def->formals.head;
		for (; f && f->name != a->name; f = f->next)
			i++;
		if (!f)
			diag_error(a->loc, "%s '%s' has no parameter '%s'", def_kind(def->kind), def->name, a->name);
		else if (i < pos || (i < 64 && given[i] == a->name))
			diag_error(a->loc, "argument '%s' given twice", a->name);
		else if (i < 64)
			given[i] = a->name;
	}
	int i = 0;
	for (const AstNode *f = def->formals.head; f; f = f->next, i++)
		if (!f->rhs && i >= pos && (i >= 64 || !given[i]))
			diag_error(call->loc, "missing argument '%s' in call to %s '%s'", f->name,
				   def_kind(def->kind), def->name);
}

static void check_call_builtin(const AstNode *call, int b)
{
	const SemaBuiltinInfo *info = &builtins[b];
	int total = call->args.n;
	for (const AstNode *a = call->args.head; a; a = a->next)
		if (a->kind == AST_NAMED && !in_word_list(info->named, a->name))
			diag_error(a->loc, "'%s' has no parameter '%s'", info->name, a->name);
	if (total < info->min_args || total > info->max_args) {
		if (info->min_args == info->max_args)
			diag_error(call->loc, "'%s' takes %d argument%s, got %d", info->name, info->min_args,
				   info->min_args == 1 ? "" : "s", total);
		else
			diag_error(call->loc, "'%s' takes %d to %d arguments, got %d", info->name, info->min_args,
				   info->max_args, total);
	}
}

/* ---- expressions and statements ---- */

/* How deeply expressions may nest: every later pass recurses over them, on the C stack. */
enum { SEMA_MAX_NESTING = 1000 };

static void check_expr_at(Sema *s, const AstNode *e);

static void check_expr(Sema *s, const AstNode *e)
{
	if (!e)
		return;
	if (s->nesting >= SEMA_MAX_NESTING) {
		if (!s->too_deep)
			diag_error(e->loc, "an expression nested more than %d deep (split it into named parts)", SEMA_MAX_NESTING);
		s->too_deep = 1;
		return;
	}
	s->nesting++;
	check_expr_at(s, e);
	s->nesting--;
}

static void check_expr_at(Sema *s, const AstNode *e)
{
	switch (e->kind) {
	case AST_NUM:
	case AST_STR:
		return;
	case AST_NAME:
		if (!defined(s, e->name))
			diag_error(e->loc, "unknown name '%s'", e->name);
		return;
	case AST_UNARY:
		check_expr(s, e->lhs);
		return;
	case AST_BINARY:
		check_expr(s, e->lhs);
		check_expr(s, e->rhs);
		return;
	case AST_MEMBER:
		check_expr(s, e->lhs);
		return;
	case AST_NAMED:
		check_expr(s, e->rhs);
		return;
	case AST_LIST:
		for (const AstNode *a = e->args.head; a; a = a->next)
			check_expr(s, a);
		return;
	case AST_CALL: {
		const AstNode *callee = e->lhs;
		int local = 0;
		for (int i = s->n - 1; callee->kind == AST_NAME && i >= 0; i--)
			if (s->names[i] == callee->name)
				local = 1;
		if (callee->kind == AST_NAME && !local) {
			const AstNode *def = sema_lookup(s->globals, callee->name);
			int b = sema_builtin(callee->name);
			if (def && def->kind != AST_CONST)
				check_call_formals(e, def);
			else if (def)
				diag_error(callee->loc, "'%s' is a constant, not a function", callee->name);
			else if (b >= 0)
				check_call_builtin(e, b);
			else
				check_expr(s, callee);
		} else {
			check_expr(s, callee);
		}
		for (const AstNode *a = e->args.head; a; a = a->next)
			check_expr(s, a);
		return;
	}
	default:
		die("sema: unexpected node %s in an expression", ast_kind_name(e->kind));
	}
}

static void check_formals(Sema *s, const AstList *formals)
{
	int required_after_default = 0;
	for (const AstNode *f = formals->head; f; f = f->next) {
		check_expr(s, f->rhs);
		for (const AstNode *g = formals->head; g != f; g = g->next)
			if (g->name == f->name)
				diag_error(f->loc, "parameter '%s' listed twice", f->name);
		if (f->rhs)
			required_after_default = 1;
		else if (required_after_default)
			diag_error(f->loc, "parameter '%s' without a default follows one with a default", f->name);
		define(s, f->name);
	}
}

/* A function body: sequential assignments ending in a return. */
/* repeat N { ... }: N is checked like any expression; the body like the statements around it. */
static int check_repeat(Sema *s, const AstNode *st)
{
	if (st->kind != AST_REPEAT)
		return 0;
	check_expr(s, st->lhs);
	return 1;
}

static void check_fn_stmts(Sema *s, const AstList *body, const char *what, int in_repeat)
{
	for (const AstNode *st = body->head; st; st = st->next) {
		if (st->kind == AST_ASSIGN) {
			check_expr(s, st->rhs);
			define(s, st->name);
		} else if (check_repeat(s, st)) {
			check_fn_stmts(s, &st->body, what, 1);
		} else if (st->kind == AST_RETURN && in_repeat) {
			diag_error(st->loc, "return inside repeat");
		} else if (st->kind != AST_RETURN) {
			diag_error(st->loc, "a %s body holds assignments, repeats and a return, not a %s", what,
				   ast_kind_name(st->kind));
		}
	}
}

static void check_fn_body(Sema *s, const AstList *body, const char *what)
{
	check_fn_stmts(s, body, what, 0);
	const AstNode *last = body->tail;
	for (const AstNode *st = body->head; st; st = st->next)
		if (st->kind == AST_RETURN) {
			check_expr(s, st->rhs);
			if (st->next)
				diag_error(st->next->loc, "statement after return");
		}
	if (!last || last->kind != AST_RETURN)
		diag_error(last ? last->loc : (SrcLoc){0}, "%s body does not end with a return", what);
}

static void check_fn(Sema *s, const AstNode *fn, const char *what)
{
	int mark = s->n;
	check_formals(s, &fn->formals);
	if (fn->rhs)
		check_expr(s, fn->rhs);
	else
		check_fn_body(s, &fn->body, what);
	s->n = mark;
}

static void check_layer(Sema *s, const AstNode *l)
{
	int mark = s->n, nforward = 0;
	check_formals(s, &l->formals);
	/* Members are visible in forward whatever their order. */
	for (const AstNode *st = l->body.head; st; st = st->next)
		if (st->kind == AST_PARAM || st->kind == AST_BUFFER || st->kind == AST_ASSIGN)
			define(s, st->name);
	for (const AstNode *st = l->body.head; st; st = st->next) {
		switch (st->kind) {
		case AST_PARAM: case AST_BUFFER:
			for (const AstNode *d = st->args.head; d; d = d->next)
				check_expr(s, d);
			check_expr(s, st->rhs);
			break;
		case AST_ASSIGN:
			if (st->op != TK_ASSIGN)
				diag_error(st->loc, "a layer member is defined with '=', not '%s'", ast_op_str(st->op));
			check_expr(s, st->rhs);
			break;
		case AST_FORWARD:
			if (nforward++)
				diag_error(st->loc, "layer '%s' has more than one forward", l->name);
			check_fn(s, st, "forward");
			break;
		default:
			diag_error(st->loc, "a layer holds params, buffers, members and a forward, not a %s",
				   ast_kind_name(st->kind));
		}
	}
	if (!nforward)
		diag_error(l->loc, "layer '%s' has no forward", l->name);
	s->n = mark;
}

static void check_rule_stmts(Sema *s, const AstNode *o, const AstList *body, int mark, int nformals, int in_repeat);

/* Does e (an expression or statement, recursively) read name? An assignment `name = ...` writes
 * it; `name += ...` reads it too. */
static int reads(const AstNode *e, const char *name)
{
	if (!e)
		return 0;
	if (e->kind == AST_NAME && e->name == name)
		return 1;
	if (e->kind == AST_ASSIGN && e->name == name && e->op != TK_ASSIGN)
		return 1;
	if (reads(e->lhs, name) || reads(e->rhs, name))
		return 1;
	const AstList *lists[] = {&e->args, &e->body};
	for (int k = 0; k < 2; k++)
		for (const AstNode *a = lists[k]->head; a; a = a->next)
			if (reads(a, name))
				return 1;
	return 0;
}

/* A rule's hyperparameter it never reads, and a state it never reads, are most likely slips. */
static void warn_unused(const AstNode *o)
{
	const char *what = o->kind == AST_TRANSFORM ? "transform" : "rule";
	for (const AstNode *f = o->formals.head; f; f = f->next) {
		int used = 0;
		for (const AstNode *st = o->body.head; st && !used; st = st->next)
			used = reads(st, f->name);
		if (!used)
			diag_warning(f->loc, "hyperparameter '%s' of %s '%s' is never used", f->name, what, o->name);
	}
	for (const AstNode *st = o->body.head; st; st = st->next) {
		if (st->kind != AST_STATE)
			continue;
		int used = 0;
		for (const AstNode *u = o->body.head; u && !used; u = u->next)
			used = u != st && reads(u, st->name);
		if (!used)
			diag_warning(st->loc, "state '%s' of %s '%s' is never read", st->name, what, o->name);
	}
}

static void check_optimizer(Sema *s, const AstNode *o)
{
	warn_unused(o);
	int mark = s->n;
	check_formals(s, &o->formals);
	int nformals = s->n;
	define(s, intern_cstr("p"));
	define(s, intern_cstr("p_start")); /* the weights before the step's rules */
	define(s, intern_cstr("g"));
	define(s, intern_cstr("t"));
	define(s, intern_cstr("T")); /* the run's length in steps */
	define(s, intern_cstr("epoch")); /* from 1 */
	for (const AstNode *st = o->body.head; st; st = st->next)
		if (st->kind == AST_STATE)
			define(s, st->name);
	check_rule_stmts(s, o, &o->body, mark, nformals, 0);
	s->n = mark;
}

static void check_rule_stmts(Sema *s, const AstNode *o, const AstList *body, int mark, int nformals, int in_repeat)
{
	for (const AstNode *st = body->head; st; st = st->next) {
		if (check_repeat(s, st)) {
			check_rule_stmts(s, o, &st->body, mark, nformals, 1);
			continue;
		}
		if (st->kind == AST_STATE && in_repeat) {
			diag_error(st->loc, "a state is declared once, not inside repeat");
			continue;
		}
		if (st->kind == AST_STATE) {
			for (const AstNode *d = st->args.head; d; d = d->next)
				check_expr(s, d);
			check_expr(s, st->rhs);
		} else if (st->kind == AST_ASSIGN) {
			check_expr(s, st->rhs);
			for (int i = mark; i < nformals; i++)
				if (s->names[i] == st->name)
					diag_error(st->loc, "cannot assign to hyperparameter '%s'", st->name);
			if (st->name == intern_cstr("t"))
				diag_error(st->loc, "cannot assign to the step 't'");
			if (o->kind == AST_TRANSFORM && st->name == intern_cstr("p"))
				diag_error(st->loc, "a transform rewrites g; the optimizer after it in a chain updates p");
			if (st->op != TK_ASSIGN && !defined(s, st->name))
				diag_error(st->loc, "unknown name '%s'", st->name);
			define(s, st->name);
		} else {
			diag_error(st->loc, "an optimizer holds state, assignments and repeats, not a %s",
				   ast_kind_name(st->kind));
		}
	}
}

static void check_train(Sema *s, const AstNode *t)
{
	int mark = s->n;
	define(s, intern_cstr("x"));
	define(s, intern_cstr("y"));
	const char *seen[16];
	int nseen = 0;
	for (const AstNode *st = t->body.head; st; st = st->next) {
		if (st->kind != AST_ASSIGN || st->op != TK_ASSIGN) {
			diag_error(st->loc, "a train block holds 'field = value' lines");
			continue;
		}
		if (!in_word_list(SEMA_TRAIN_FIELDS, st->name))
			diag_error(st->loc, "unknown train field '%s' (fields: %s)", st->name, SEMA_TRAIN_FIELDS);
		for (int i = 0; i < nseen; i++)
			if (seen[i] == st->name)
				diag_error(st->loc, "train field '%s' set twice", st->name);
		if (nseen < 16)
			seen[nseen++] = st->name;
		int mark_field = s->n;
		if (st->name == intern_cstr("optimizer")) { /* hyperparameters may be schedules */
			define(s, intern_cstr("t"));
			define(s, intern_cstr("T"));
			define(s, intern_cstr("epoch"));
		}
		check_expr(s, st->rhs);
		s->n = mark_field;
		define(s, st->name);
	}
	static const char *const required[] = {"data", "model", "loss", "optimizer"};
	for (int r = 0; r < 4; r++) {
		int found = 0;
		for (int i = 0; i < nseen; i++)
			found |= seen[i] == intern_cstr(required[r]);
		if (!found)
			diag_error(t->loc, "train block has no '%s'", required[r]);
	}
	s->n = mark;
}

int sema_check(const AstProgram *prog, SemaGlobals *g)
{
	int before = diag_count();
	Sema s = {.globals = g};
	int ntrain = 0;
	for (AstNode *n = prog->items.head; n; n = n->next) {
		if (n->kind == AST_USE)
			continue;
		if (n->kind == AST_TRAIN) {
			if (ntrain++)
				diag_error(n->loc, "more than one train block");
			continue;
		}
		AstNode *prev = sema_lookup(g, n->name);
		if (prev) {
			diag_error(n->loc, "redefinition of '%s'", n->name);
			diag_note(prev->loc, "'%s' was defined here", n->name);
			continue;
		}
		if (sema_builtin(n->name) >= 0) {
			diag_error(n->loc, "'%s' is a builtin and cannot be redefined", n->name);
			continue;
		}
		if (g->n == g->cap) {
			g->cap = g->cap ? 2 * g->cap : 64;
			g->items = realloc(g->items, g->cap * sizeof *g->items);
			if (!g->items)
				die("out of memory");
		}
		g->items[g->n++] = n;
	}
	for (AstNode *n = prog->items.head; n && !diag_full(); n = n->next) {
		switch (n->kind) {
		case AST_LAYER: check_layer(&s, n); break;
		case AST_OPTIMIZER: case AST_TRANSFORM: check_optimizer(&s, n); break;
		case AST_DEF: check_fn(&s, n, "function"); break;
		case AST_CONST: check_expr(&s, n->rhs); break;
		case AST_TRAIN: check_train(&s, n); break;
		default: break;
		}
	}
	free(s.names);
	return diag_count() - before;
}
