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
void parse_syntax_error(ParseCtx *ctx, Token tok, int kind);

#endif
