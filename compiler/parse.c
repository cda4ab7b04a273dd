/* parse.c: pushes tokens from the lexer into the parser, one at a time.
 *
 * Newlines end statements, except inside parentheses and brackets, where an expression may span
 * lines, and after a binary operator, '=' or ',', which continue the line. An end of line is also implied before '}' and at the end of input, so `{ forward(x) = x }`
 * needs no line break. */
#include "parse.h"

#include <stdlib.h>

#include "grammar.h"

void *NmlParseAlloc(void *(*malloc_fn)(size_t));
void NmlParse(void *parser, int kind, Token tok, ParseCtx *ctx);
void NmlParseFree(void *parser, void (*free_fn)(void *));

void parse_syntax_error(ParseCtx *ctx, Token tok, int kind)
{
	const char *what = lex_token_name(kind);
	if (what)
		diag_error(tok.loc, "syntax error: unexpected %s", what);
	else
		diag_error(tok.loc, "syntax error: unexpected '%.*s'", tok.len, tok.s);
}

int parse_continues(int kind)
{
	switch (kind) {
	case TK_PLUS: case TK_MINUS: case TK_STAR: case TK_SLASH: case TK_PERCENT: case TK_CARET: case TK_AT:
	case TK_LT: case TK_LE: case TK_GT: case TK_GE: case TK_EQ: case TK_NE:
	case TK_ASSIGN: case TK_PLUSEQ: case TK_MINUSEQ: case TK_STAREQ: case TK_SLASHEQ: case TK_COMMA:
		return 1;
	default:
		return 0;
	}
}

/* The tokens of a short text, at most max. */
static int lex_all(const char *file, const char *text, Token *out, int max)
{
	int n = 0;
	Lexer lx;
	lex_init(&lx, file, text ? text : "");
	for (Token t = lex_next(&lx); t.kind != 0 && n < max; t = lex_next(&lx))
		out[n++] = t;
	return n;
}

int parse_source(Arena *arena, const char *file, const char *src, AstProgram *prog)
{
	return parse_source_wrapped(arena, file, src, NULL, NULL, prog);
}

int parse_source_wrapped(Arena *arena, const char *file, const char *src, const char *before, const char *after,
			 AstProgram *prog)
{
	int before_errs = diag_count();
	ParseCtx ctx = {.arena = arena, .program = prog};
	Token pre[8], post[8];
	int npre = lex_all(file, before, pre, 8), npost = lex_all(file, after, post, 8), ipre = 0, ipost = 0;
	Lexer lx;
	lex_init(&lx, file, src);
	diag_add_source(file, src);
	void *parser = NmlParseAlloc(malloc);
	if (!parser)
		die("out of memory");
	int depth = 0, prev = TK_NL;
	Token held = {0}; /* a token of src read early, to place a wrapping token where it is */
	int have = 0;
	if (npre) {
		held = lex_next(&lx);
		have = 1;
	}
	for (;;) {
		Token t;
		if (ipre < npre) {
			t = pre[ipre++];
			t.loc = held.loc;
		} else if (have) {
			t = held;
			have = 0;
		} else {
			t = lex_next(&lx);
		}
		if (t.kind == 0 && ipost < npost) {
			held = t;
			have = 1;
			t = post[ipost++];
			t.loc = held.loc;
		}
		if (t.kind == TK_LPAREN || t.kind == TK_LBRACKET)
			depth++;
		else if ((t.kind == TK_RPAREN || t.kind == TK_RBRACKET) && depth > 0)
			depth--;
		else if (t.kind == TK_NL && (depth > 0 || prev == TK_NL || parse_continues(prev)))
			continue;
		if ((t.kind == TK_RBRACE || t.kind == 0) && prev != TK_NL) {
			Token nl = t;
			nl.kind = TK_NL;
			nl.len = 0;
			NmlParse(parser, TK_NL, nl, &ctx);
		}
		if (t.kind == TK_RBRACE)
			depth = 0; /* an unclosed '(' does not swallow the rest of the file */
		ctx.last = t;
		NmlParse(parser, t.kind, t, &ctx);
		if (t.kind == 0 || diag_full())
			break;
		prev = t.kind;
	}
	NmlParseFree(parser, free);
	return diag_count() - before_errs;
}
