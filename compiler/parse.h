/* parse.h: drives the lexer and the Lemon parser over one source text. */
#ifndef PARSE_H
#define PARSE_H

#include "ast.h"

typedef struct ParseCtx {
	Arena *arena;
	AstProgram *program;
	Token last;       /* the last token pushed, for errors at end of input */
} ParseCtx;

/* Parse src (NUL-terminated; registered with diag for quoting) into prog. Returns the number of
 * errors reported. */
int parse_source(Arena *arena, const char *file, const char *src, AstProgram *prog);
/* The same, parsing src as if the text `before` came first and `after` last (either may be NULL);
 * their tokens are located where src begins and ends. The REPL reads an expression as
 * `const _ = expression` and one train field as `train { field }`. */
int parse_source_wrapped(Arena *arena, const char *file, const char *src, const char *before, const char *after,
			 AstProgram *prog);
void parse_syntax_error(ParseCtx *ctx, Token tok, int kind);
/* A line ending in a token of this kind (a binary operator, '=' or ',') continues on the next. */
int parse_continues(int kind);

#endif
