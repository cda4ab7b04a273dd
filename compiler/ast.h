/* ast.h: the syntax tree. Nodes live in the compilation's arena; names are interned. */
#ifndef AST_H
#define AST_H

#include <stdio.h>

#include "arena.h"
#include "diag.h"
#include "lex.h"

typedef enum {
	/* expressions */
	AST_NUM,      /* num */
	AST_STR,      /* name: the text without quotes */
	AST_NAME,     /* name */
	AST_UNARY,    /* op lhs */
	AST_BINARY,   /* lhs op rhs */
	AST_CALL,     /* lhs(args); an argument may be AST_NAMED */
	AST_MEMBER,   /* lhs.name */
	AST_LIST,     /* [args] */
	AST_NAMED,    /* name = rhs, in a call */
	/* statements */
	AST_ASSIGN,   /* name op rhs, op one of = += -= *= /= */
	AST_PARAM,    /* param name[shape] @tags = rhs */
	AST_BUFFER,   /* buffer name[shape] = rhs: layer state without a gradient */
	AST_STATE,    /* state name[shape] = rhs; no shape: the shape of p */
	AST_FORWARD,  /* forward(formals) = rhs | { body } */
	AST_RETURN,   /* return rhs */
	AST_REPEAT,   /* repeat lhs { body }: the body lhs times, unrolled at compile time */
	/* items */
	AST_USE,      /* use name (dotted) */
	AST_LAYER,    /* layer name(formals) { body } */
	AST_OPTIMIZER,/* optimizer name(formals) { body } */
	AST_TRANSFORM,/* transform name(formals) { body }: an update rule that rewrites g, not p */
	AST_DEF,      /* def name(formals) = rhs | { body } */
	AST_CONST,    /* const name = rhs */
	AST_TRAIN,    /* train { body } */
	AST_FORMAL,   /* name, default rhs or NULL */
	AST_NKINDS
} AstKind;

typedef struct AstNode AstNode;

typedef struct AstList {
	AstNode *head, *tail;
	int n;
} AstList;

struct AstNode {
	AstKind kind;
	SrcLoc loc;
	const char *name; /* interned */
	double num;
	int op;           /* TK_* of an operator */
	AstNode *lhs, *rhs;
	AstList args;     /* call arguments, list items, shape dims */
	AstList formals;
	AstList body;
	AstList tags;     /* AST_NAME */
	AstNode *next;    /* in its list */
};

typedef struct AstProgram {
	AstList items;
} AstProgram;

/* Builders, called by the grammar's one-line actions. */
AstNode *ast_new(Arena *a, AstKind kind, SrcLoc loc);
AstNode *ast_num(Arena *a, Token t);
AstNode *ast_str(Arena *a, Token t);
AstNode *ast_name(Arena *a, Token t);
AstNode *ast_unary(Arena *a, Token op, AstNode *e);
AstNode *ast_binary(Arena *a, AstNode *l, Token op, AstNode *r);
AstNode *ast_call(Arena *a, AstNode *callee, Token lparen, AstList args);
AstNode *ast_member(Arena *a, AstNode *l, Token name);
AstNode *ast_list(Arena *a, Token lbracket, AstList items);
AstNode *ast_named(Arena *a, Token name, AstNode *value);
AstNode *ast_assign(Arena *a, Token name, Token op, AstNode *value);
AstNode *ast_param(Arena *a, Token name, AstList shape, AstList tags, AstNode *init);
AstNode *ast_buffer(Arena *a, Token name, AstList shape, AstNode *init);
AstNode *ast_state(Arena *a, Token name, AstList shape, AstNode *init);
AstNode *ast_forward(Arena *a, Token kw, AstList formals, AstNode *expr, AstList body);
AstNode *ast_repeat(Arena *a, Token kw, AstNode *count, AstList body);
AstNode *ast_return(Arena *a, Token kw, AstNode *e);
AstNode *ast_use(Arena *a, Token kw, AstNode *dotted);
AstNode *ast_dotted(Arena *a, AstNode *prefix, Token name);
AstNode *ast_item(Arena *a, AstKind kind, Token name, AstList formals, AstNode *expr, AstList body);
AstNode *ast_formal(Arena *a, Token name, AstNode *dflt);
AstList ast_list_one(AstNode *n);
AstList ast_list_add(AstList l, AstNode *n);

const char *ast_kind_name(AstKind k);
const char *ast_op_str(int op);
/* S-expression dump, the format of `nmlc show --ast`. */
void ast_dump(FILE *out, const AstProgram *p);
void ast_dump_node(FILE *out, const AstNode *n, int indent);

#endif
