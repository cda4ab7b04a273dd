/* ast.c: syntax tree builders and the dump. */
#include "ast.h"

#include <string.h>

#include "grammar.h"

AstNode *ast_new(Arena *a, AstKind kind, SrcLoc loc)
{
	AstNode *n = arena_alloc(a, sizeof *n);
	n->kind = kind;
	n->loc = loc;
	return n;
}

static const char *tok_name(Token t) { return intern(t.s, (size_t)t.len); }

AstList ast_list_one(AstNode *n)
{
	return (AstList){n, n, 1};
}

AstList ast_list_add(AstList l, AstNode *n)
{
	if (!n)
		return l;
	if (l.tail)
		l.tail->next = n;
	else
		l.head = n;
	l.tail = n;
	l.n++;
	return l;
}

AstNode *ast_num(Arena *a, Token t)
{
	AstNode *n = ast_new(a, AST_NUM, t.loc);
	n->num = t.num;
	return n;
}

AstNode *ast_str(Arena *a, Token t)
{
	AstNode *n = ast_new(a, AST_STR, t.loc);
	int len = t.len - 1;
	if (len > 0 && t.s[t.len - 1] == '"')
		len--;
	n->name = intern(t.s + 1, (size_t)(len > 0 ? len : 0));
	return n;
}

AstNode *ast_name(Arena *a, Token t)
{
	AstNode *n = ast_new(a, AST_NAME, t.loc);
	n->name = tok_name(t);
	return n;
}

AstNode *ast_unary(Arena *a, Token op, AstNode *e)
{
	AstNode *n = ast_new(a, AST_UNARY, op.loc);
	n->op = op.kind;
	n->lhs = e;
	return n;
}

AstNode *ast_binary(Arena *a, AstNode *l, Token op, AstNode *r)
{
	AstNode *n = ast_new(a, AST_BINARY, op.loc);
	n->op = op.kind;
	n->lhs = l;
	n->rhs = r;
	return n;
}

AstNode *ast_call(Arena *a, AstNode *callee, Token lparen, AstList args)
{
	AstNode *n = ast_new(a, AST_CALL, callee->loc);
	n->lhs = callee;
	n->args = args;
	return n;
}

AstNode *ast_member(Arena *a, AstNode *l, Token name)
{
	AstNode *n = ast_new(a, AST_MEMBER, name.loc);
	n->lhs = l;
	n->name = tok_name(name);
	return n;
}

AstNode *ast_list(Arena *a, Token lbracket, AstList items)
{
	AstNode *n = ast_new(a, AST_LIST, lbracket.loc);
	n->args = items;
	return n;
}

AstNode *ast_named(Arena *a, Token name, AstNode *value)
{
	AstNode *n = ast_new(a, AST_NAMED, name.loc);
	n->name = tok_name(name);
	n->rhs = value;
	return n;
}

AstNode *ast_assign(Arena *a, Token name, Token op, AstNode *value)
{
	AstNode *n = ast_new(a, AST_ASSIGN, name.loc);
	n->name = tok_name(name);
	n->op = op.kind;
	n->rhs = value;
	return n;
}

AstNode *ast_param(Arena *a, Token name, AstList shape, AstList tags, AstNode *init)
{
	AstNode *n = ast_new(a, AST_PARAM, name.loc);
	n->name = tok_name(name);
	n->args = shape;
	n->tags = tags;
	n->rhs = init;
	return n;
}

AstNode *ast_buffer(Arena *a, Token name, AstList shape, AstNode *init)
{
	AstNode *n = ast_param(a, name, shape, (AstList){0}, init);
	n->kind = AST_BUFFER;
	return n;
}

AstNode *ast_state(Arena *a, Token name, AstList shape, AstNode *init)
{
	AstNode *n = ast_new(a, AST_STATE, name.loc);
	n->name = tok_name(name);
	n->args = shape;
	n->rhs = init;
	return n;
}

AstNode *ast_forward(Arena *a, Token kw, AstList formals, AstNode *expr, AstList body)
{
	AstNode *n = ast_new(a, AST_FORWARD, kw.loc);
	n->name = intern_cstr("forward");
	n->formals = formals;
	n->rhs = expr;
	n->body = body;
	return n;
}

AstNode *ast_return(Arena *a, Token kw, AstNode *e)
{
	AstNode *n = ast_new(a, AST_RETURN, kw.loc);
	n->rhs = e;
	return n;
}

AstNode *ast_repeat(Arena *a, Token kw, AstNode *count, AstList body)
{
	AstNode *n = ast_new(a, AST_REPEAT, kw.loc);
	n->lhs = count;
	n->body = body;
	return n;
}

AstNode *ast_dotted(Arena *a, AstNode *prefix, Token name)
{
	if (!prefix)
		return ast_name(a, name);
	char buf[256];
	snprintf(buf, sizeof buf, "%s.%.*s", prefix->name, name.len, name.s);
	prefix->name = intern_cstr(buf);
	return prefix;
}

AstNode *ast_use(Arena *a, Token kw, AstNode *dotted)
{
	AstNode *n = ast_new(a, AST_USE, dotted->loc);
	n->name = dotted->name;
	return n;
}

AstNode *ast_item(Arena *a, AstKind kind, Token name, AstList formals, AstNode *expr, AstList body)
{
	AstNode *n = ast_new(a, kind, name.loc);
	n->name = kind == AST_TRAIN ? intern_cstr("train") : tok_name(name);
	n->formals = formals;
	n->rhs = expr;
	n->body = body;
	return n;
}

AstNode *ast_formal(Arena *a, Token name, AstNode *dflt)
{
	AstNode *n = ast_new(a, AST_FORMAL, name.loc);
	n->name = tok_name(name);
	n->rhs = dflt;
	return n;
}

/* ---- dump ---- */

static const char *const kind_names[AST_NKINDS] = {
	[AST_NUM] = "num", [AST_STR] = "str", [AST_NAME] = "name", [AST_UNARY] = "unary",
	[AST_BINARY] = "binary", [AST_CALL] = "call", [AST_MEMBER] = "member", [AST_LIST] = "list",
	[AST_NAMED] = "named", [AST_ASSIGN] = "assign", [AST_PARAM] = "param", [AST_BUFFER] = "buffer", [AST_REPEAT] = "repeat", [AST_STATE] = "state",
	[AST_FORWARD] = "forward", [AST_RETURN] = "return", [AST_USE] = "use", [AST_LAYER] = "layer",
	[AST_OPTIMIZER] = "optimizer", [AST_TRANSFORM] = "transform", [AST_DEF] = "def", [AST_CONST] = "const", [AST_TRAIN] = "train",
	[AST_FORMAL] = "formal",
};

const char *ast_kind_name(AstKind k) { return kind_names[k]; }

const char *ast_op_str(int op)
{
	switch (op) {
	case TK_PLUS: return "+";
	case TK_MINUS: return "-";
	case TK_STAR: return "*";
	case TK_SLASH: return "/";
	case TK_PERCENT: return "%";
	case TK_CARET: return "^";
	case TK_AT: return "@";
	case TK_LT: return "<";
	case TK_LE: return "<=";
	case TK_GT: return ">";
	case TK_GE: return ">=";
	case TK_EQ: return "==";
	case TK_NE: return "!=";
	case TK_ASSIGN: return "=";
	case TK_PLUSEQ: return "+=";
	case TK_MINUSEQ: return "-=";
	case TK_STAREQ: return "*=";
	case TK_SLASHEQ: return "/=";
	default: return "?";
	}
}

static void dump_list(FILE *out, const char *label, const AstList *l, int indent)
{
	if (!l->n)
		return;
	fprintf(out, "\n%*s(%s", indent, "", label);
	for (const AstNode *n = l->head; n; n = n->next) {
		fputc('\n', out);
		ast_dump_node(out, n, indent + 2);
	}
	fputc(')', out);
}

void ast_dump_node(FILE *out, const AstNode *n, int indent)
{
	fprintf(out, "%*s(%s", indent, "", kind_names[n->kind]);
	if (n->kind == AST_NUM)
		fprintf(out, " %.17g", n->num);
	else if (n->kind == AST_STR)
		fprintf(out, " \"%s\"", n->name);
	else if (n->name)
		fprintf(out, " %s", n->name);
	if (n->op)
		fprintf(out, " %s", ast_op_str(n->op));
	fprintf(out, " @%d:%d", n->loc.line, n->loc.col);
	if (n->lhs) {
		fputc('\n', out);
		ast_dump_node(out, n->lhs, indent + 2);
	}
	if (n->rhs) {
		fputc('\n', out);
		ast_dump_node(out, n->rhs, indent + 2);
	}
	dump_list(out, n->kind == AST_PARAM || n->kind == AST_BUFFER || n->kind == AST_STATE ? "shape" : "args", &n->args, indent + 2);
	dump_list(out, "formals", &n->formals, indent + 2);
	dump_list(out, "tags", &n->tags, indent + 2);
	dump_list(out, "body", &n->body, indent + 2);
	fputc(')', out);
}

void ast_dump(FILE *out, const AstProgram *p)
{
	for (const AstNode *n = p->items.head; n; n = n->next) {
		ast_dump_node(out, n, 0);
		fputc('\n', out);
	}
}
