/* lex.re: NML tokens. One rule per line; every class excludes the NUL sentinel. */
#include "lex.h"

#include <math.h>
#include <stdlib.h>

#include "grammar.h"

void lex_init(Lexer *lx, const char *file, const char *src)
{
	*lx = (Lexer){.file = file, .src = src, .cur = src, .line_start = src, .line = 1};
}

static Token make(Lexer *lx, int kind, const char *start)
{
	return (Token){.kind = kind, .s = start, .len = (int)(lx->cur - start),
		       .loc = {lx->file, lx->line, (int)(start - lx->line_start) + 1}};
}

/* A literal beyond the doubles (1e999) would silently be infinity: an error at its place. */
static Token number(Lexer *lx, const char *start)
{
	Token t = make(lx, TK_NUMBER, start);
	t.num = strtod(start, NULL);
	if (isinf(t.num)) {
		diag_error(t.loc, "the number %.*s is too large for a double", t.len, t.s);
		t.num = 0;
	}
	return t;
}

Token lex_next(Lexer *lx)
{
	for (;;) {
		const char *start = lx->cur, *YYMARKER;
		/*!re2c
		re2c:define:YYCTYPE = "unsigned char";
		re2c:define:YYCURSOR = lx->cur;
		re2c:yyfill:enable = 0;
		re2c:indent:top = 2;

		digit = [0-9];
		ident = [A-Za-z_][A-Za-z0-9_]*;
		exp = [eE] [+-]? digit+;
		number = (digit+ ("." digit*)? exp?) | ("." digit+ exp?);

		"\x00" { lx->cur--; return make(lx, 0, start); }
		[ \t\r]+ { continue; }
		"#" [^\n\x00]* { continue; }
		"\n" { Token t = make(lx, TK_NL, start); lx->line++; lx->line_start = lx->cur; return t; }
		";" { return make(lx, TK_NL, start); }

		"use" { return make(lx, TK_USE, start); }
		"layer" { return make(lx, TK_LAYER, start); }
		"optimizer" { return make(lx, TK_OPTIMIZER, start); }
		"transform" { return make(lx, TK_TRANSFORM, start); }
		"param" { return make(lx, TK_PARAM, start); }
		"buffer" { return make(lx, TK_BUFFER, start); }
		"repeat" { return make(lx, TK_REPEAT, start); }
		"state" { return make(lx, TK_STATE, start); }
		"forward" { return make(lx, TK_FORWARD, start); }
		"return" { return make(lx, TK_RETURN, start); }
		"def" { return make(lx, TK_DEF, start); }
		"const" { return make(lx, TK_CONST, start); }
		"train" { return make(lx, TK_TRAIN, start); }

		ident { return make(lx, TK_IDENT, start); }
		number { return number(lx, start); }
		"\"" [^"\n\x00]* "\"" { return make(lx, TK_STRING, start); }
		"\"" [^"\n\x00]* {
			Token t = make(lx, TK_STRING, start);
			diag_error(t.loc, "unterminated string");
			return t;
		}

		"(" { return make(lx, TK_LPAREN, start); }
		")" { return make(lx, TK_RPAREN, start); }
		"[" { return make(lx, TK_LBRACKET, start); }
		"]" { return make(lx, TK_RBRACKET, start); }
		"{" { return make(lx, TK_LBRACE, start); }
		"}" { return make(lx, TK_RBRACE, start); }
		"," { return make(lx, TK_COMMA, start); }
		"." { return make(lx, TK_DOT, start); }
		"=" { return make(lx, TK_ASSIGN, start); }
		"+=" { return make(lx, TK_PLUSEQ, start); }
		"-=" { return make(lx, TK_MINUSEQ, start); }
		"*=" { return make(lx, TK_STAREQ, start); }
		"/=" { return make(lx, TK_SLASHEQ, start); }
		"+" { return make(lx, TK_PLUS, start); }
		"-" { return make(lx, TK_MINUS, start); }
		"*" { return make(lx, TK_STAR, start); }
		"/" { return make(lx, TK_SLASH, start); }
		"%" { return make(lx, TK_PERCENT, start); }
		"^" { return make(lx, TK_CARET, start); }
		"@" { return make(lx, TK_AT, start); }
		"<" { return make(lx, TK_LT, start); }
		"<=" { return make(lx, TK_LE, start); }
		">" { return make(lx, TK_GT, start); }
		">=" { return make(lx, TK_GE, start); }
		"==" { return make(lx, TK_EQ, start); }
		"!=" { return make(lx, TK_NE, start); }

		* {
			Token t = make(lx, 0, start);
			diag_error(t.loc, "unexpected character '%c'", *start);
			continue;
		}
		*/
	}
}

const char *lex_token_name(int kind)
{
	switch (kind) {
	case 0: return "end of file";
	case TK_NL: return "end of line";
	case TK_IDENT: return "identifier";
	case TK_NUMBER: return "number";
	case TK_STRING: return "string";
	default: return NULL; /* the caller quotes the token text */
	}
}
