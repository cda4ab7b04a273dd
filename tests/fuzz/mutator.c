/* mutator.c: grammar-aware mutations of NML source for the front end's fuzz target.
 *
 * A byte-level fuzzer rarely gets past the parser with anything new; these mutations keep the text
 * mostly well formed and reach sema, lowering and autodiff. Every mutation replaces one byte range
 * of the input with other text, taken from a pool of fragments of the project's own sources
 * (examples/, stdlib/, tests/ ** / *.nml, read once):
 *   - an identifier by another known name (layers, builtins, keywords, rules, hyperparameters);
 *   - a number by an edge value (0, -1, 1e308, 1e999, nan, 2^40, 2^63, ...);
 *   - a (...), [...] or {...} group by another group of the same bracket, from the pool or the input;
 *   - a line duplicated, deleted, or a pool line or whole top-level item inserted;
 *   - a group or token nested deeply (((x))), -(-(x)), f(f(x)), or made a long chain x + x + ...;
 *   - and now and then libFuzzer's byte-level mutation, for the lexer. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

typedef struct Frag {
	const char *s;
	size_t n;
} Frag;

typedef struct Pool {
	Frag *v;
	size_t n, cap;
} Pool;

enum { T_ID, T_NUM, T_STR, T_OPEN, T_CLOSE, T_NL, T_PUNCT };

typedef struct Tok {
	size_t at, n;
	int kind;
} Tok;

static Pool idents, strings, lines, items, groups[3];
static char **files;
static size_t nfiles;

static const char *const edge_numbers[] = {
	"0", "-1", "1", "2", "0.0", "-0", "0.5", "1e-9", "1e-320", "1e308", "1e309", "1e999", "-1e308", "nan", "inf",
	"65536", "2147483647", "2147483648", "-2147483648", "4294967296", "1099511627776", "9007199254740993",
	"9223372036854775807", "9223372036854775808", "18446744073709551616", "100000000000000000000000",
};

/* Names the pool may lack: keywords and a few builtins worth passing where they do not belong. */
static const char *const extra_names[] = {
	"use", "layer", "optimizer", "transform", "param", "buffer", "repeat", "state", "forward", "return", "def",
	"const", "train", "x", "y", "t", "T", "g", "p", "lr", "model", "loss", "data", "batch", "epochs", "seed",
	"shape", "holdout", "accumulate", "shuffle", "only", "except", "chain", "grad_at", "synthetic", "npy", "csv",
	"idx", "fashion_mnist", "mnist",
};

static const char brackets[3][2] = {{'(', ')'}, {'[', ']'}, {'{', '}'}};

static void pool_add(Pool *p, const char *s, size_t n)
{
	if (n == 0 || n > 4096)
		return;
	if (p->n == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 256;
		p->v = realloc(p->v, p->cap * sizeof *p->v);
		if (!p->v)
			abort();
	}
	p->v[p->n++] = (Frag){s, n};
}

static int is_id0(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* A rough NML tokenizer: enough to find names, numbers, brackets and lines; never fails. */
static size_t tokenize(const char *s, size_t n, Tok **out)
{
	size_t cap = 64, nt = 0;
	Tok *t = malloc(cap * sizeof *t);
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		int kind;
		char ch = s[i];
		if (ch == ' ' || ch == '\t' || ch == '\r') {
			i++;
			continue;
		} else if (ch == '#') {
			while (i < n && s[i] != '\n')
				i++;
			continue;
		} else if (ch == '\n' || ch == ';') {
			kind = T_NL;
		} else if (is_id0(ch)) {
			while (j < n && (is_id0(s[j]) || is_digit(s[j])))
				j++;
			kind = T_ID;
		} else if (is_digit(ch) || (ch == '.' && i + 1 < n && is_digit(s[i + 1]))) {
			while (j < n && (is_digit(s[j]) || s[j] == '.' || s[j] == 'e' || s[j] == 'E'
					 || ((s[j] == '+' || s[j] == '-') && (s[j - 1] == 'e' || s[j - 1] == 'E'))))
				j++;
			kind = T_NUM;
		} else if (ch == '"') {
			while (j < n && s[j] != '"' && s[j] != '\n')
				j++;
			j += j < n && s[j] == '"';
			kind = T_STR;
		} else if (strchr("([{", ch)) {
			kind = T_OPEN;
		} else if (strchr(")]}", ch)) {
			kind = T_CLOSE;
		} else {
			kind = T_PUNCT;
		}
		if (nt == cap)
			t = realloc(t, (cap *= 2) * sizeof *t);
		t[nt++] = (Tok){i, j - i, kind};
		i = j;
	}
	*out = t;
	return nt;
}

static int bracket_kind(char c)
{
	for (int b = 0; b < 3; b++)
		if (c == brackets[b][0] || c == brackets[b][1])
			return b;
	return -1;
}

/* The token closing the group t[i] opens, or nt when it is unbalanced. */
static size_t group_end(const char *s, const Tok *t, size_t nt, size_t i)
{
	int depth = 0;
	for (size_t k = i; k < nt; k++) {
		if (t[k].kind == T_OPEN)
			depth++;
		else if (t[k].kind == T_CLOSE && --depth == 0)
			return bracket_kind(s[t[k].at]) == bracket_kind(s[t[i].at]) ? k : nt;
	}
	return nt;
}

static void add_source(const char *s, size_t n)
{
	Tok *t;
	size_t nt = tokenize(s, n, &t);
	for (size_t i = 0; i < nt; i++) {
		if (t[i].kind == T_ID)
			pool_add(&idents, s + t[i].at, t[i].n);
		else if (t[i].kind == T_STR)
			pool_add(&strings, s + t[i].at, t[i].n);
		else if (t[i].kind == T_OPEN) {
			size_t e = group_end(s, t, nt, i);
			if (e < nt)
				pool_add(&groups[bracket_kind(s[t[i].at])], s + t[i].at, t[e].at + 1 - t[i].at);
		}
	}
	free(t);
	/* lines, and items: a line starting at column 0 through the line where its brackets close */
	int depth = 0;
	const char *item = NULL;
	for (const char *p = s, *end = s + n; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl + 1 : end;
		if (depth == 0 && p < e && *p != '#' && *p != '\n' && *p != ' ')
			item = p;
		pool_add(&lines, p, (size_t)(e - p));
		for (const char *q = p; q < e && *q != '#'; q++)
			depth += (*q == '(' || *q == '[' || *q == '{') - (*q == ')' || *q == ']' || *q == '}');
		if (depth <= 0) {
			depth = 0;
			if (item)
				pool_add(&items, item, (size_t)(e - item));
			item = NULL;
		}
		p = e;
	}
}

static int add_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	size_t len = strlen(path);
	if (flag != FTW_F || len < 4 || strcmp(path + len - 4, ".nml") != 0 || st->st_size > (1 << 20))
		return 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return 0;
	char *buf = malloc((size_t)st->st_size + 1);
	size_t n = fread(buf, 1, (size_t)st->st_size, f);
	fclose(f);
	buf[n] = 0;
	add_source(buf, n);
	/* kept for the life of the process: the pool points into it */
	if (nfiles % 64 == 0)
		files = realloc(files, (nfiles + 64) * sizeof *files);
	files[nfiles++] = buf;
	return 0;
}

static void load_pool(void)
{
	static int done;
	if (done)
		return;
	done = 1;
	const char *dirs[] = {NML_SOURCE_DIR "/examples", NML_SOURCE_DIR "/stdlib", NML_SOURCE_DIR "/tests"};
	for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++)
		nftw(dirs[i], add_file, 16, FTW_PHYS);
	for (size_t i = 0; i < sizeof extra_names / sizeof *extra_names; i++)
		pool_add(&idents, extra_names[i], strlen(extra_names[i]));
	if (!strings.n)
		pool_add(&strings, "\"\"", 2);
	for (int b = 0; b < 3; b++)
		if (!groups[b].n)
			pool_add(&groups[b], brackets[b], 2);
	if (!lines.n)
		pool_add(&lines, "\n", 1);
	if (!items.n)
		pool_add(&items, "train {}\n", 9);
}

/* ---- random numbers (splitmix64): a mutation depends on its seed alone ---- */

static uint64_t rng;

static uint64_t next(void)
{
	uint64_t z = (rng += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }

static Frag pick(const Pool *p) { return p->v[below(p->n)]; }

/* ---- building the output ---- */

typedef struct Buf {
	char *s;
	size_t n, max;
	int over; /* the output would pass max */
} Buf;

static void put(Buf *b, const char *s, size_t n)
{
	if (b->over || n > b->max - b->n) {
		b->over = 1;
		return;
	}
	memcpy(b->s + b->n, s, n);
	b->n += n;
}

static void put_repeat(Buf *b, const char *s, size_t n, size_t times)
{
	for (size_t i = 0; i < times && !b->over; i++)
		put(b, s, n);
}

/* Deep nesting and long chains around text x. */
static void grow(Buf *b, Frag x)
{
	size_t k = 1 + below(next() & 1 ? 8 : 400);
	Frag f;
	switch (below(6)) {
	case 0: /* ((((x)))) */
		put_repeat(b, "(", 1, k), put(b, x.s, x.n), put_repeat(b, ")", 1, k);
		break;
	case 1: /* -(-(-x)) */
		put_repeat(b, "-(", 2, k), put(b, x.s, x.n), put_repeat(b, ")", 1, k);
		break;
	case 2: /* f(f(f(x))) with a known name */
		f = pick(&idents);
		for (size_t i = 0; i < k; i++)
			put(b, f.s, f.n), put(b, "(", 1);
		put(b, x.s, x.n), put_repeat(b, ")", 1, k);
		break;
	case 3: /* x op x op x ... */
		put(b, x.s, x.n);
		for (size_t i = 0; i < k; i++) {
			put(b, &" + - * / ^ @ ."[2 * below(7)], 1);
			put(b, x.s, x.n);
		}
		break;
	case 4: /* [x, x, x, ...] */
		put(b, "[", 1);
		for (size_t i = 0; i < k; i++)
			put(b, x.s, x.n), put(b, ", ", i + 1 < k ? 2 : 0);
		put(b, "]", 1);
		break;
	default: /* [[[[x]]]] */
		put_repeat(b, "[", 1, k), put(b, x.s, x.n), put_repeat(b, "]", 1, k);
		break;
	}
}

/* Replaces one range of in[0, n) with other text into b; 0 when the input offers nothing to do. */
static int mutate_once(const char *in, size_t n, Buf *b)
{
	Tok *t;
	size_t nt = tokenize(in, n, &t);
	size_t from = 0, to = 0; /* the range replaced */
	Frag with = {"", 0};
	int grown = 0, ok = 1;
	size_t i = below(nt);
	switch (nt ? below(11) : 7 + below(2)) { /* without tokens: insert */
	case 0: /* a name by another */
	case 1:
		for (size_t k = 0; k < nt && t[i].kind != T_ID; k++)
			i = (i + 1) % nt;
		if (!nt || t[i].kind != T_ID) {
			ok = 0;
			break;
		}
		from = t[i].at, to = from + t[i].n;
		with = pick(&idents);
		if (next() & 1) { /* a name the input has: mostly still a program that checks */
			size_t j = below(nt);
			for (size_t k = 0; k < nt && t[j].kind != T_ID; k++)
				j = (j + 1) % nt;
			with = (Frag){in + t[j].at, t[j].n};
		}
		break;
	case 2: { /* a number by an edge value, or a name or literal by a number */
		for (size_t k = 0; k < nt && t[i].kind != T_NUM && !(next() % 16 == 0 && t[i].kind == T_ID); k++)
			i = (i + 1) % nt;
		if (!nt) {
			ok = 0;
			break;
		}
		const char *e = edge_numbers[below(sizeof edge_numbers / sizeof *edge_numbers)];
		from = t[i].at, to = from + t[i].n;
		with = (Frag){e, strlen(e)};
		break;
	}
	case 3: /* a group by another of its bracket, from the pool or from the input */
	case 4: {
		for (size_t k = 0; k < nt && t[i].kind != T_OPEN; k++)
			i = (i + 1) % nt;
		size_t e = nt ? group_end(in, t, nt, i) : nt;
		if (!nt || t[i].kind != T_OPEN || e == nt) {
			ok = 0;
			break;
		}
		from = t[i].at, to = t[e].at + 1;
		int kind = bracket_kind(in[from]);
		with = pick(&groups[kind]);
		if (next() & 1) { /* another group of the input */
			size_t j = below(nt);
			for (size_t k = 0; k < nt && !(t[j].kind == T_OPEN && bracket_kind(in[t[j].at]) == kind); k++)
				j = (j + 1) % nt;
			size_t f = group_end(in, t, nt, j);
			if (f < nt)
				with = (Frag){in + t[j].at, t[f].at + 1 - t[j].at};
		}
		break;
	}
	case 5: /* duplicate a line, or delete it */
	case 6: {
		if (!n) {
			ok = 0;
			break;
		}
		size_t at = below(n);
		while (at > 0 && in[at - 1] != '\n')
			at--;
		const char *nl = memchr(in + at, '\n', n - at);
		size_t end = nl ? (size_t)(nl - in) + 1 : n;
		from = at;
		to = next() % 3 ? at : end; /* mostly: insert a copy before it */
		with = (Frag){in + at, from == to ? end - at : 0};
		break;
	}
	case 7: /* a line or a whole item from the pool, at a line start */
	case 8: {
		size_t at = below(n + 1);
		while (at > 0 && in[at - 1] != '\n')
			at--;
		from = to = at;
		with = next() & 1 ? pick(&lines) : pick(&items);
		break;
	}
	case 9: /* nest or chain a token or group */
		if (!nt) {
			ok = 0;
			break;
		}
		from = t[i].at, to = from + t[i].n;
		if (t[i].kind == T_OPEN) {
			size_t e = group_end(in, t, nt, i);
			if (e < nt)
				to = t[e].at + 1;
		}
		with = (Frag){in + from, to - from};
		grown = 1;
		break;
	default: /* delete a token or a group */
		if (!nt) {
			ok = 0;
			break;
		}
		from = t[i].at, to = from + t[i].n;
		if (t[i].kind == T_OPEN && next() & 1) {
			size_t e = group_end(in, t, nt, i);
			if (e < nt)
				to = t[e].at + 1;
		}
		break;
	}
	free(t);
	if (!ok)
		return 0;
	put(b, in, from);
	if (grown)
		grow(b, with);
	else
		put(b, with.s, with.n);
	/* a line or item needs its newline */
	if (with.n && from == to && with.s[with.n - 1] != '\n')
		put(b, "\n", 1);
	put(b, in + to, n - to);
	return !b->over;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
	load_pool();
	rng = seed;
	if (max_size > FUZZ_MAX_INPUT)
		max_size = FUZZ_MAX_INPUT;
	if (below(10) == 0) /* bytes, for the lexer */
		return LLVMFuzzerMutate(data, size, max_size);
	char *out = malloc(max_size + 1), *cur = malloc(size + 1);
	memcpy(cur, data, size);
	size_t n = size, rounds = 1 + below(4);
	for (size_t r = 0; r < rounds; r++) {
		Buf b = {out, 0, max_size, 0};
		for (int tries = 0; tries < 4; tries++) {
			b = (Buf){out, 0, max_size, 0};
			if (mutate_once(cur, n, &b))
				break;
		}
		if (b.over || !b.n)
			continue;
		char *grown = realloc(cur, b.n + 1);
		memcpy(grown, out, b.n);
		cur = grown, n = b.n;
	}
	free(out);
	if (n == size && memcmp(cur, data, n) == 0) { /* nothing changed: let bytes change */
		free(cur);
		return LLVMFuzzerMutate(data, size, max_size);
	}
	memcpy(data, cur, n);
	free(cur);
	return n;
}

/* The first lines of one input followed by the last lines of the other: definitions from two
 * programs meet. */
size_t LLVMFuzzerCustomCrossOver(const uint8_t *data1, size_t size1, const uint8_t *data2, size_t size2,
				 uint8_t *out, size_t max_out_size, unsigned int seed)
{
	rng = seed;
	size_t a = below(size1 + 1), b = below(size2 + 1);
	while (a < size1 && data1[a] != '\n')
		a++;
	while (b > 0 && data2[b - 1] != '\n')
		b--;
	a += a < size1;
	if (a > max_out_size)
		a = max_out_size;
	if (size2 - b > max_out_size - a)
		b = size2 - (max_out_size - a);
	memcpy(out, data1, a);
	memcpy(out + a, data2 + b, size2 - b);
	return a + size2 - b;
}
