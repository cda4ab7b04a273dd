/* lex.h: the re2c tokenizer. The input ends with a NUL sentinel. */
#ifndef LEX_H
#define LEX_H

#include "diag.h"

typedef struct Token {
	int kind;        /* TK_* from grammar.h; 0 at the end of input */
	const char *s;   /* the token's text in the source */
	int len;
	double num;      /* TK_NUMBER */
	SrcLoc loc;
} Token;

typedef struct Lexer {
	const char *file; /* interned */
	const char *src;  /* NUL-terminated */
	const char *cur;
	const char *line_start;
	int line;
} Lexer;

void lex_init(Lexer *lx, const char *file, const char *src);
/* Next token; unknown characters are reported and skipped. */
Token lex_next(Lexer *lx);
const char *lex_token_name(int kind);

#endif
