/* grammar.y: the syntax of NML, for Lemon. Each action is one call into an ast_* builder. */
%include {
#include <assert.h>
#include "ast.h"
#include "parse.h"
}

%name NmlParse
%token_prefix TK_
%token_type { Token }
%default_type { AstNode * }
%extra_argument { ParseCtx *ctx }
%syntax_error { parse_syntax_error(ctx, TOKEN, yymajor); }
%stack_overflow { diag_error((SrcLoc){0}, "expression nested too deeply"); }

%token NL USE LAYER OPTIMIZER TRANSFORM PARAM BUFFER STATE FORWARD RETURN REPEAT DEF CONST TRAIN IDENT NUMBER STRING.
%token LPAREN RPAREN LBRACKET RBRACKET LBRACE RBRACE COMMA DOT.
%token ASSIGN PLUSEQ MINUSEQ STAREQ SLASHEQ.

%nonassoc LT LE GT GE EQ NE.
%left PLUS MINUS.
%left STAR SLASH PERCENT AT.
%right UMINUS.
%right CARET.
%left LPAREN DOT.

%type items { AstList }
%type formals_opt { AstList }
%type formal_list { AstList }
%type formals { AstList }
%type body { AstList }
%type exprs { AstList }
%type args { AstList }
%type arglist { AstList }
%type tags { AstList }

program ::= items(L).                                   { ctx->program->items = L; }

items(L) ::= .                                          { L = (AstList){0}; }
items(L) ::= items(A) item(I).                          { L = ast_list_add(A, I); }

/* item: a top-level definition */
item(I) ::= NL.                                          { I = NULL; }
item(I) ::= error NL.                                    { I = NULL; }
item(I) ::= USE(K) dotted(D) NL.                         { I = ast_use(ctx->arena, K, D); }
item(I) ::= LAYER IDENT(N) formals_opt(F) LBRACE body(B) RBRACE.     { I = ast_item(ctx->arena, AST_LAYER, N, F, NULL, B); }
item(I) ::= OPTIMIZER IDENT(N) formals_opt(F) LBRACE body(B) RBRACE. { I = ast_item(ctx->arena, AST_OPTIMIZER, N, F, NULL, B); }
item(I) ::= TRANSFORM IDENT(N) formals_opt(F) LBRACE body(B) RBRACE. { I = ast_item(ctx->arena, AST_TRANSFORM, N, F, NULL, B); }
item(I) ::= DEF IDENT(N) LPAREN formal_list(F) RPAREN ASSIGN expr(E) NL.      { I = ast_item(ctx->arena, AST_DEF, N, F, E, (AstList){0}); }
item(I) ::= DEF IDENT(N) LPAREN formal_list(F) RPAREN LBRACE body(B) RBRACE.  { I = ast_item(ctx->arena, AST_DEF, N, F, NULL, B); }
item(I) ::= CONST IDENT(N) ASSIGN expr(E) NL.            { I = ast_item(ctx->arena, AST_CONST, N, (AstList){0}, E, (AstList){0}); }
item(I) ::= TRAIN(K) LBRACE body(B) RBRACE.              { I = ast_item(ctx->arena, AST_TRAIN, K, (AstList){0}, NULL, B); }

dotted(D) ::= IDENT(N).                                  { D = ast_dotted(ctx->arena, NULL, N); }
dotted(D) ::= dotted(P) DOT IDENT(N).                    { D = ast_dotted(ctx->arena, P, N); }

formals_opt(L) ::= .                                     { L = (AstList){0}; }
formals_opt(L) ::= LPAREN formal_list(F) RPAREN.         { L = F; }
formal_list(L) ::= .                                     { L = (AstList){0}; }
formal_list(L) ::= formals(F).                           { L = F; }
formals(L) ::= formal(F).                                { L = ast_list_one(F); }
formals(L) ::= formals(A) COMMA formal(F).               { L = ast_list_add(A, F); }
formal(F) ::= IDENT(N).                                  { F = ast_formal(ctx->arena, N, NULL); }
formal(F) ::= IDENT(N) ASSIGN expr(E).                   { F = ast_formal(ctx->arena, N, E); }

/* body: statements, one per line */
body(L) ::= .                                            { L = (AstList){0}; }
body(L) ::= body(A) stmt(S).                             { L = ast_list_add(A, S); }

stmt(S) ::= NL.                                          { S = NULL; }
stmt(S) ::= error NL.                                    { S = NULL; }
stmt(S) ::= PARAM IDENT(N) LBRACKET exprs(D) RBRACKET tags(T) ASSIGN expr(E) NL. { S = ast_param(ctx->arena, N, D, T, E); }
stmt(S) ::= BUFFER IDENT(N) LBRACKET exprs(D) RBRACKET ASSIGN expr(E) NL. { S = ast_buffer(ctx->arena, N, D, E); }
stmt(S) ::= STATE IDENT(N) ASSIGN expr(E) NL.            { S = ast_state(ctx->arena, N, (AstList){0}, E); }
stmt(S) ::= STATE IDENT(N) LBRACKET exprs(D) RBRACKET ASSIGN expr(E) NL. { S = ast_state(ctx->arena, N, D, E); }
stmt(S) ::= IDENT(N) assignop(O) expr(E) NL.             { S = ast_assign(ctx->arena, N, O, E); }
stmt(S) ::= OPTIMIZER(N) ASSIGN(O) expr(E) NL.           { S = ast_assign(ctx->arena, N, O, E); }
stmt(S) ::= FORWARD(K) LPAREN formal_list(F) RPAREN ASSIGN expr(E) NL.     { S = ast_forward(ctx->arena, K, F, E, (AstList){0}); }
stmt(S) ::= FORWARD(K) LPAREN formal_list(F) RPAREN LBRACE body(B) RBRACE. { S = ast_forward(ctx->arena, K, F, NULL, B); }
stmt(S) ::= RETURN(K) expr(E) NL.                        { S = ast_return(ctx->arena, K, E); }
stmt(S) ::= REPEAT(K) expr(E) LBRACE body(B) RBRACE.     { S = ast_repeat(ctx->arena, K, E, B); }

%type assignop { Token }
assignop(O) ::= ASSIGN(T).                               { O = T; }
assignop(O) ::= PLUSEQ(T).                               { O = T; }
assignop(O) ::= MINUSEQ(T).                              { O = T; }
assignop(O) ::= STAREQ(T).                               { O = T; }
assignop(O) ::= SLASHEQ(T).                              { O = T; }

tags(L) ::= .                                            { L = (AstList){0}; }
tags(L) ::= tags(A) AT IDENT(N).                         { L = ast_list_add(A, ast_name(ctx->arena, N)); }

/* expressions */
exprs(L) ::= expr(E).                                    { L = ast_list_one(E); }
exprs(L) ::= exprs(A) COMMA expr(E).                     { L = ast_list_add(A, E); }

expr(E) ::= NUMBER(T).                                   { E = ast_num(ctx->arena, T); }
expr(E) ::= STRING(T).                                   { E = ast_str(ctx->arena, T); }
expr(E) ::= IDENT(T).                                    { E = ast_name(ctx->arena, T); }
expr(E) ::= LPAREN expr(A) RPAREN.                       { E = A; }
expr(E) ::= LBRACKET(T) args(L) RBRACKET.                { E = ast_list(ctx->arena, T, L); }
expr(E) ::= expr(F) LPAREN(T) args(L) RPAREN.            { E = ast_call(ctx->arena, F, T, L); }
expr(E) ::= expr(A) DOT IDENT(N).                        { E = ast_member(ctx->arena, A, N); }
expr(E) ::= MINUS(T) expr(A). [UMINUS]                   { E = ast_unary(ctx->arena, T, A); }
expr(E) ::= expr(A) PLUS(T) expr(B).                     { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) MINUS(T) expr(B).                    { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) STAR(T) expr(B).                     { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) SLASH(T) expr(B).                    { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) PERCENT(T) expr(B).                  { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) AT(T) expr(B).                       { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) CARET(T) expr(B).                    { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) LT(T) expr(B).                       { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) LE(T) expr(B).                       { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) GT(T) expr(B).                       { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) GE(T) expr(B).                       { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) EQ(T) expr(B).                       { E = ast_binary(ctx->arena, A, T, B); }
expr(E) ::= expr(A) NE(T) expr(B).                       { E = ast_binary(ctx->arena, A, T, B); }

args(L) ::= .                                            { L = (AstList){0}; }
args(L) ::= arglist(A).                                  { L = A; }
args(L) ::= arglist(A) COMMA.                            { L = A; }
arglist(L) ::= arg(E).                                   { L = ast_list_one(E); }
arglist(L) ::= arglist(A) COMMA arg(E).                  { L = ast_list_add(A, E); }
arg(E) ::= expr(A).                                      { E = A; }
arg(E) ::= IDENT(N) ASSIGN expr(A).                      { E = ast_named(ctx->arena, N, A); }
