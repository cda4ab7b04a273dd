/* repl.c: `nmlc repl`, an interactive session (docs/repl.md).
 *
 * The session's program is a list of entries: the source text of each definition, `use` and train
 * field, with the place it was written (a typed entry's line in the session's input, named
 * `<repl>`; a loaded one's line in its file). A definition entered again replaces the old one
 * where it stands. After every change the whole program is compiled again, from these texts, by a
 * fresh Compiler: that takes milliseconds, reports errors where they were written, and leaves
 * nothing to go stale. Only the data is kept from one compilation to the next (DrvData). */
#include "repl.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>

#include "grammar.h"
#include "lab.h"
#include "parse.h"
#include "plot.h"

enum { REPL_MAX_SETS = 64, REPL_HISTORY = 1000 };

typedef struct Entry {
	AstKind kind;     /* AST_USE, AST_LAYER, AST_OPTIMIZER, AST_DEF, AST_CONST; AST_ASSIGN: a train field */
	const char *name; /* interned: the definition's, the module's or the field's */
	const char *file; /* interned: "<repl>" or the file it was loaded from */
	int line, col;    /* where its text starts in file */
	char *text;
	int stale;        /* from the last load of a file being loaded again */
} Entry;

/* A text diagnostics quote: the session's input so far, or a loaded file as it was read. */
typedef struct Source {
	const char *name;
	char *text;
	size_t len;
} Source;

/* A :set: an optimizer hyperparameter, or one of the run options below. */
typedef struct Set {
	const char *name;
	double value;
	char text[32]; /* as typed, to print it so */
} Set;

static const char *const run_options[] = {"epochs", "batch", "seed", "limit"};
static const char *const command_names[] = {"run", "set", "unset", "show", "list", "load", "drop", "reset",
					    "help", "quit", "compare", "bench", "sweep", "plot", "export", "save"};
enum { NCOMMANDS = sizeof command_names / sizeof command_names[0] };
static const char *const show_names[] = {"ast", "ir", "grad", "step", "kernels", "llvm"};

typedef struct Repl {
	Entry *e;             /* definitions in the order first entered, and train fields */
	int n, cap;
	SrcLoc train_loc;     /* where the train block (its first field) was entered */
	Source *src;          /* src[0]: the session's input */
	int nsrc;
	Set set[REPL_MAX_SETS];
	int nset;
	const Options *opts;  /* the command line's, the defaults of :run */
	DrvData data;
	int loads_seen;       /* data.loads when the data was last described */
	int tty, echo;
	int line;             /* lines of input read */
	int failed;           /* an input or command failed (the exit status without a terminal) */
	char *pending;        /* a command line read, to handle next */
	const char **names;   /* global names of the last compilation, for completion */
	int nnames;
	FILE *devnull;        /* for compilations that only look */
	const char *repl;     /* "<repl>", interned */
	int cancelled;        /* Ctrl-C at the prompt dropped the input being read */
	DrvData problem_data; /* the data of the built-in problems, kept apart from the program's */
	DrvData *data_now;    /* which of the two a compilation uses */
	/* The last :compare, :bench or :sweep, for :plot and :export: runs[k * seeds + s]. */
	LabRun *last;
	int nlast, last_rules, last_seeds;
	int last_sweep, last_logx;
	char last_name[64];
	char *hist;           /* the history file (terminal only) */
} Repl;

static const char *skip_space(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

static char *xstrndup(const char *s, size_t n)
{
	char *d = xrealloc(NULL, n + 1);
	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

/* ---- sources and diagnostics ---- */

static Source *source(Repl *r, const char *name)
{
	for (int i = 0; i < r->nsrc; i++)
		if (r->src[i].name == name)
			return &r->src[i];
	r->src = xrealloc(r->src, (r->nsrc + 1) * sizeof *r->src);
	r->src[r->nsrc] = (Source){.name = name, .text = xstrndup("", 0)};
	return &r->src[r->nsrc++];
}

/* Parsing registers the text it parses for quoting; afterwards the whole texts are put back, so an
 * error anywhere quotes the line that was written there. */
static void register_sources(Repl *r)
{
	for (int i = 0; i < r->nsrc; i++)
		diag_add_source(r->src[i].name, r->src[i].text);
}

static void quiet(Repl *r, int on)
{
	diag_set_stream(on ? r->devnull : NULL);
}

static void count_errors(Repl *r, int errs, const char *then)
{
	if (!errs)
		return;
	fflush(stdout);
	fprintf(stderr, "%d error%s%s\n", errs, errs == 1 ? "" : "s", then);
	r->failed = 1;
}

/* ---- tokens of a text ---- */

typedef struct Tok {
	int kind;
	int depth;       /* brackets around it; an opening or closing one is outside itself */
	size_t off, end; /* its text */
	SrcLoc loc;
} Tok;

/* All tokens of text (lexical errors go unreported: parsing reports them). *out is malloc'd. */
static int scan(Repl *r, const char *file, const char *text, Tok **out)
{
	quiet(r, 1);
	Lexer lx;
	lex_init(&lx, file, text);
	Tok *t = NULL;
	int n = 0, depth = 0;
	for (Token k = lex_next(&lx); k.kind; k = lex_next(&lx)) {
		int closing = k.kind == TK_RPAREN || k.kind == TK_RBRACKET || k.kind == TK_RBRACE;
		if (closing && depth > 0)
			depth--;
		t = xrealloc(t, (n + 1) * sizeof *t);
		t[n++] = (Tok){k.kind, depth, (size_t)(k.s - text), (size_t)(k.s - text) + (size_t)k.len, k.loc};
		if (k.kind == TK_LPAREN || k.kind == TK_LBRACKET || k.kind == TK_LBRACE)
			depth++;
	}
	quiet(r, 0);
	diag_reset();
	*out = t;
	return n;
}

/* An input goes on while a bracket is open or its last line ends in an operator. As in parse.c, a
 * '}' closes the parentheses left open before it. */
static int incomplete(Repl *r, const char *text)
{
	Tok *t;
	int n = scan(r, r->repl, text, &t), braces = 0, parens = 0, last = TK_NL;
	for (int i = 0; i < n; i++) {
		int k = t[i].kind;
		parens += k == TK_LPAREN || k == TK_LBRACKET;
		parens -= (k == TK_RPAREN || k == TK_RBRACKET) && parens > 0;
		braces += k == TK_LBRACE;
		if (k == TK_RBRACE) {
			braces -= braces > 0;
			parens = 0;
		}
		last = k;
	}
	free(t);
	return braces > 0 || parens > 0 || parse_continues(last);
}

static int item_keyword(int kind)
{
	return kind == TK_USE || kind == TK_LAYER || kind == TK_OPTIMIZER || kind == TK_TRANSFORM || kind == TK_DEF
		|| kind == TK_CONST || kind == TK_TRAIN;
}

/* The last token before index `to` that is not an end of line, from `from`. */
static int last_token(const Tok *t, int from, int to)
{
	int last = from;
	for (int i = from; i < to; i++)
		if (t[i].kind != TK_NL)
			last = i;
	return last;
}

/* ---- input ---- */

static void append_input(Repl *r, const char *line)
{
	Source *s = &r->src[0];
	size_t n = strlen(line);
	s->text = xrealloc(s->text, s->len + n + 2);
	memcpy(s->text + s->len, line, n);
	s->len += n;
	s->text[s->len++] = '\n';
	s->text[s->len] = 0;
	r->line++;
	register_sources(r); /* the text moved */
}

static int is_command(const char *line)
{
	return *skip_space(line) == ':';
}

/* Ctrl-C at the prompt: the line being edited goes, the session stays. */
static volatile sig_atomic_t prompt_interrupted;

static void on_prompt_interrupt(int sig)
{
	(void)sig;
	prompt_interrupted = 1;
}

/* A line from the terminal; "" with *cancelled set after Ctrl-C. */
static char *read_terminal(const char *prompt, int *cancelled)
{
	struct sigaction sa = {.sa_handler = on_prompt_interrupt}, old; /* no SA_RESTART: read() returns */
	sigemptyset(&sa.sa_mask);
	prompt_interrupted = 0;
	sigaction(SIGINT, &sa, &old);
	char *line = readline(prompt);
	sigaction(SIGINT, &old, NULL);
	if (prompt_interrupted) {
		free(line);
		printf("^C\n");
		*cancelled = 1;
		return xstrndup("", 0);
	}
	return line;
}

static char *read_line(Repl *r, const char *prompt)
{
	char *line = NULL;
	if (r->pending) { /* a command that ended the input before */
		line = r->pending;
		r->pending = NULL;
		return line;
	}
	if (r->tty) {
		int cancelled = 0;
		line = read_terminal(prompt, &cancelled);
		if (cancelled) {
			r->cancelled = 1;
			return line;
		}
	} else {
		size_t cap = 0;
		ssize_t n = getline(&line, &cap, stdin);
		if (n < 0) {
			free(line);
			return NULL;
		}
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = 0;
		if (r->echo)
			printf("%s%s\n", prompt, line);
	}
	if (line)
		append_input(r, line);
	return line;
}

/* One input: a command line, or lines up to a complete statement. A command line also ends an
 * input that is not complete (which then gets its errors). NULL at the end of input. */
static char *read_input(Repl *r, int *first_line)
{
	*first_line = r->line + 1;
	r->cancelled = 0;
	char *text = read_line(r, "nml> ");
	if (!text || is_command(text) || r->cancelled)
		return text;
	while (incomplete(r, text)) {
		char *more = read_line(r, "...> ");
		if (r->cancelled) { /* Ctrl-C on a continuation line drops the whole input */
			free(more);
			*text = 0;
			break;
		}
		if (more && is_command(more)) {
			r->pending = more;
			break;
		}
		if (!more) {
			if (!r->tty)
				break; /* the end of a script: what there is gets its errors */
			printf("\n(input discarded)\n");
			*text = 0;
			break;
		}
		size_t n = strlen(text);
		text = xrealloc(text, n + strlen(more) + 2);
		text[n] = '\n';
		strcpy(text + n + 1, more);
		free(more);
	}
	return text;
}

/* text placed at line and column of its file, so that the lexer's locations are the real ones. */
static char *place(Arena *a, int line, int col, const char *text)
{
	size_t n = strlen(text);
	char *s = arena_alloc(a, (size_t)(line - 1) + (size_t)(col - 1) + n + 1), *p = s;
	for (int i = 1; i < line; i++)
		*p++ = '\n';
	for (int i = 1; i < col; i++)
		*p++ = ' ';
	memcpy(p, text, n + 1);
	return s;
}

/* ---- the program ---- */

static const char *kind_word(AstKind k)
{
	switch (k) {
	case AST_USE: return "use";
	case AST_LAYER: return "layer";
	case AST_OPTIMIZER: return "optimizer";
	case AST_TRANSFORM: return "transform";
	case AST_DEF: return "function";
	case AST_CONST: return "constant";
	default: return "train field";
	}
}

/* Definitions share one namespace; uses and train fields have their own. */
static int category(AstKind k)
{
	return k == AST_ASSIGN ? 2 : k == AST_USE;
}

static int find(const Repl *r, AstKind kind, const char *name)
{
	for (int i = 0; i < r->n; i++)
		if (category(r->e[i].kind) == category(kind) && r->e[i].name == name)
			return i;
	return -1;
}

static int has_train(const Repl *r)
{
	for (int i = 0; i < r->n; i++)
		if (r->e[i].kind == AST_ASSIGN)
			return 1;
	return 0;
}

static void drop(Repl *r, int i)
{
	free(r->e[i].text);
	memmove(&r->e[i], &r->e[i + 1], (size_t)(r->n - i - 1) * sizeof *r->e);
	r->n--;
}

/* Put an entry into the program: in place of the one of the same name, else at the end. Returns
 * 0 if it is new, 1 if it replaced one, 2 if it replaced one with a different text. */
static int put(Repl *r, Entry e)
{
	int i = find(r, e.kind, e.name);
	if (i >= 0) {
		int changed = strcmp(r->e[i].text, e.text) != 0;
		free(r->e[i].text);
		r->e[i] = e;
		return 1 + changed;
	}
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 32;
		r->e = xrealloc(r->e, (size_t)r->cap * sizeof *r->e);
	}
	r->e[r->n++] = e;
	return 0;
}

static Entry entry(AstKind kind, const char *name, const char *file, const char *text, const Tok *first,
		   const Tok *last)
{
	return (Entry){kind, name, file, first->loc.line, first->loc.col,
		       xstrndup(text + first->off, last->end - first->off)};
}

/* The fields of a train block whose tokens are t[from..to), its '{' at t[from - 1]: each starts
 * after the '{' or an end of line, at depth 1. */
static int take_fields(Repl *r, const char *file, const char *text, const Tok *t, int from, int to,
		       const AstNode *train, SrcLoc loc)
{
	for (int i = r->n - 1; i >= 0; i--)
		if (r->e[i].kind == AST_ASSIGN)
			drop(r, i);
	r->train_loc = loc;
	int starts[256], n = 0, end = from;
	while (end < to && !(t[end].depth == 0 && t[end].kind == TK_RBRACE))
		end++;
	for (int i = from; i < end; i++)
		if (t[i].kind != TK_NL && t[i].depth == 1 && (i == from || t[i - 1].kind == TK_NL) && n < 256)
			starts[n++] = i;
	if (n != train->body.n)
		die("repl: %d train fields found in the text, %d parsed", n, train->body.n);
	const AstNode *st = train->body.head;
	for (int k = 0; k < n; k++, st = st->next) {
		int last = last_token(t, starts[k], k + 1 < n ? starts[k + 1] : end);
		Entry e = entry(AST_ASSIGN, st->name, file, text, &t[starts[k]], &t[last]);
		/* A field set twice in one block stays twice, for the compiler to report. */
		if (r->n == r->cap) {
			r->cap = r->cap ? 2 * r->cap : 32;
			r->e = xrealloc(r->e, (size_t)r->cap * sizeof *r->e);
		}
		r->e[r->n++] = e;
	}
	return n;
}

typedef struct Taken {
	int defined, changed, uses, train;
} Taken;

/* The definitions of a parsed text (an input or a whole file), one entry each: an item starts at
 * a keyword outside brackets and ends with its last token before the next item. */
static void take_items(Repl *r, const char *file, const char *text, const AstProgram *p, int verbose, Taken *tk)
{
	Tok *t;
	int n = scan(r, file, text, &t), nitems = 0;
	int *starts = xrealloc(NULL, (size_t)(n + 1) * sizeof *starts);
	for (int i = 0; i < n; i++)
		if (t[i].depth == 0 && item_keyword(t[i].kind))
			starts[nitems++] = i;
	if (nitems != p->items.n)
		die("repl: %d items found in the text, %d parsed", nitems, p->items.n);
	const AstNode *it = p->items.head;
	for (int k = 0; k < nitems; k++, it = it->next) {
		int to = k + 1 < nitems ? starts[k + 1] : n;
		if (it->kind == AST_TRAIN) {
			int had = has_train(r);
			int nf = take_fields(r, file, text, t, starts[k] + 2, to, it, t[starts[k]].loc);
			tk->train = 1;
			if (verbose && !nf)
				printf("%s\n", had ? "removed the train block" : "the train block is empty");
			else if (verbose)
				printf("%s the train block (%d field%s)\n", had ? "redefined" : "defined", nf, nf == 1 ? "" : "s");
			continue;
		}
		Entry e = entry(it->kind, it->name, file, text, &t[starts[k]], &t[last_token(t, starts[k], to)]);
		int put_as = put(r, e), replaced = put_as > 0;
		if (it->kind == AST_USE) {
			tk->uses++;
			if (verbose)
				printf("using %s\n", it->name);
			continue;
		}
		tk->defined++;
		tk->changed += put_as == 2;
		if (verbose)
			printf("%s %s %s\n", replaced ? "redefined" : "defined", kind_word(it->kind), it->name);
	}
	free(starts);
	free(t);
}

/* ---- compiling ---- */

static void join(AstList *a, AstList b)
{
	if (!b.head)
		return;
	if (a->tail)
		a->tail->next = b.head;
	else
		a->head = b.head;
	a->tail = b.tail;
	a->n += b.n;
}

/* Parses every entry into c, each at its place; the train fields become one train block, last. */
static int parse_program(Repl *r, Compiler *c, int with_train, AstList *items)
{
	int errs = 0;
	AstNode *train = NULL;
	*items = (AstList){0};
	for (int i = 0; i < r->n; i++) {
		const Entry *e = &r->e[i];
		AstProgram p = {0};
		char *text = place(&c->arena, e->line, e->col, e->text);
		if (e->kind != AST_ASSIGN) {
			errs += parse_source(&c->arena, e->file, text, &p);
			join(items, p.items);
		} else if (with_train) {
			errs += parse_source_wrapped(&c->arena, e->file, text, "train {", "}", &p);
			if (!train) {
				train = ast_new(&c->arena, AST_TRAIN, r->train_loc);
				train->name = intern_cstr("train");
			}
			if (p.items.head && p.items.head->body.head)
				train->body = ast_list_add(train->body, p.items.head->body.head);
		}
	}
	if (train)
		*items = ast_list_add(*items, train);
	return errs;
}

static Compiler *new_compiler(Repl *r)
{
	Compiler *c = xrealloc(NULL, sizeof *c);
	drv_init(c);
	c->shared_data = r->data_now ? r->data_now : &r->data;
	c->verbose = r->opts->verbose;
	return c;
}

static void free_compiler(Compiler *c)
{
	drv_free(c);
	free(c);
}

enum { UPTO_PARSE, UPTO_CHECK, UPTO_LOWER };

/* The program compiled again, up to a phase (lowering only with a train block). *errs gets the
 * number of errors, reported unless quietly. New data is described. */
static Compiler *build(Repl *r, int upto, int quietly, int *errs)
{
	diag_reset();
	quiet(r, quietly);
	Compiler *c = new_compiler(r);
	AstList items;
	int bad = parse_program(r, c, 1, &items);
	bad += drv_parse_items(c, items);
	register_sources(r);
	if (!bad && upto > UPTO_PARSE)
		bad += drv_check(c);
	if (!bad && upto > UPTO_CHECK && sema_train(&c->prog)) {
		bad += drv_config(c) || drv_load_data(c);
		if (!bad && !quietly && c->shared_data == &r->data && r->data.loads != r->loads_seen) {
			r->loads_seen = r->data.loads;
			const NmlData *d = &c->train, *h = &c->test;
			printf("data: %lld training and %lld test samples, %lld features", (long long)d->n,
			       (long long)h->n, (long long)d->xdim);
			if (c->mod.classes)
				printf(", %lld classes", (long long)c->mod.classes);
			else
				printf(", %lld targets", (long long)d->ydim);
			printf("\n");
		}
		if (!bad)
			bad += drv_lower(c);
	}
	quiet(r, 0);
	*errs = bad ? (diag_shown() ? diag_shown() : 1) : 0;
	return c;
}

/* After a change: compile, report. */
static void check(Repl *r)
{
	int errs;
	Compiler *c = build(r, UPTO_LOWER, 0, &errs);
	count_errors(r, errs, " in the program");
	if (c->globals.n) { /* names are interned: they outlive c */
		r->names = xrealloc(r->names, (size_t)c->globals.n * sizeof *r->names);
		for (int i = 0; i < c->globals.n; i++)
			r->names[i] = c->globals.items[i]->name;
		r->nnames = c->globals.n;
	}
	free_compiler(c);
}

/* ---- inputs ---- */

static void take_definitions(Repl *r, const char *text, int line)
{
	Arena a = {0};
	AstProgram p = {0};
	diag_reset();
	char *placed = place(&a, line, 1, text);
	int errs = parse_source(&a, r->repl, placed, &p);
	register_sources(r);
	if (errs) {
		count_errors(r, errs, "; nothing changed");
	} else {
		Taken tk = {0};
		take_items(r, r->repl, placed, &p, 1, &tk);
		check(r);
	}
	arena_free(&a);
}

/* `name = value` outside a block: one field of the train block. */
static void take_field(Repl *r, const char *text, int line)
{
	Arena a = {0};
	AstProgram p = {0};
	diag_reset();
	char *placed = place(&a, line, 1, text);
	int errs = parse_source_wrapped(&a, r->repl, placed, "train {", "}", &p);
	register_sources(r);
	const AstNode *st = errs ? NULL : p.items.head->body.head;
	if (!errs && (p.items.head->body.n != 1 || st->op != TK_ASSIGN)) {
		diag_error(st->loc, "a train field is set with 'name = value', one per input");
		errs++;
	}
	char word[128];
	snprintf(word, sizeof word, " %s ", errs ? "" : st->name);
	if (!errs && !strstr(" " SEMA_TRAIN_FIELDS " ", word)) {
		diag_error(st->loc, "unknown train field '%s' (fields: %s)", st->name, SEMA_TRAIN_FIELDS);
		errs++;
	}
	if (errs) {
		count_errors(r, errs, "; nothing changed");
		arena_free(&a);
		return;
	}
	Tok *t;
	int n = scan(r, r->repl, placed, &t), first = 0;
	while (t[first].kind == TK_NL)
		first++;
	if (!has_train(r))
		r->train_loc = st->loc;
	int replaced = put(r, entry(AST_ASSIGN, st->name, r->repl, placed, &t[first], &t[last_token(t, first, n)]));
	printf("%s train field %s\n", replaced ? "redefined" : "defined", st->name);
	free(t);
	arena_free(&a);
	check(r);
}

static void print_number(double v)
{
	char buf[64];
	if (v == floor(v) && fabs(v) < 1e15) { /* a whole number as one: 6000, not 6e+03 */
		printf("%.0f", v == 0 ? 0.0 : v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof buf, "%.*g", prec, v);
		if (strtod(buf, NULL) == v || isnan(v))
			break;
	}
	printf("%s", buf);
}

/* layer: the name of the layer the expression calls, if it does. */
static void print_value(const Compiler *c, Value v, const char *layer)
{
	const IrModule *m = &c->mod;
	char sh[64];
	switch (v.kind) {
	case V_NUM:
		print_number(v.num);
		break;
	case V_STR:
		printf("\"%s\"", v.str);
		break;
	case V_LIST:
		printf("[");
		for (int i = 0; i < v.nitems; i++) {
			printf("%s", i ? ", " : "");
			print_value(c, v.items[i], NULL);
		}
		printf("]");
		break;
	case V_INST: {
		/* The expression made the only instance, so every parameter slot is its. */
		const IrBlock *p = ir_block(m, NML_B_PARAMS);
		size_t count = 0;
		for (int i = 0; i < p->n; i++)
			count += (size_t)ir_shape_numel(p->slot[i].shape, 1);
		printf("%s: %zu parameters in %d tensors", layer ? layer : "a layer", count, p->n);
		for (int i = 0; i < p->n; i++)
			printf("%s %s %s", i ? "," : ":", p->slot[i].name, ir_shape_str(p->slot[i].shape, sh, sizeof sh));
		break;
	}
	case V_PARAM: {
		const IrSlot *s = ir_slot(m, NML_B_PARAMS, v.id);
		printf("parameter %s %s", s->name, ir_shape_str(s->shape, sh, sizeof sh));
		break;
	}
	case V_DEF: {
		const AstNode *d = v.node;
		printf("%s %s(", kind_word(d->kind), d->name);
		for (const AstNode *f = d->formals.head; f; f = f->next) {
			printf("%s%s", f == d->formals.head ? "" : ", ", f->name);
			if (f->rhs && f->rhs->kind == AST_NUM) {
				printf(" = ");
				print_number(f->rhs->num);
			} else if (f->rhs) {
				printf(" = ...");
			}
		}
		printf(")");
		break;
	}
	case V_BUILTIN:
		printf("builtin %s", sema_builtin_info(v.id)->name);
		break;
	case V_INIT:
		printf("an initializer");
		break;
	case V_DATA:
		printf("a data source");
		break;
	case V_OPT:
		printf("an optimizer with its arguments");
		break;
	default:
		printf("a %s", v.kind == V_TENSOR ? "tensor" : "value");
		break;
	}
}

/* An expression: evaluated at compile time against the program's definitions (not its train
 * block), and printed. */
static void evaluate(Repl *r, const char *text, int line)
{
	diag_reset();
	Compiler *c = new_compiler(r);
	AstList items;
	int errs = parse_program(r, c, 0, &items);
	AstProgram p = {0};
	errs += parse_source_wrapped(&c->arena, r->repl, place(&c->arena, line, 1, text), "const _ =", NULL, &p);
	AstNode *it = p.items.head;
	if (!errs && (p.items.n != 1 || it->kind != AST_CONST)) {
		diag_error(it->next ? it->next->loc : it->loc, "one expression at a time");
		errs++;
	}
	if (!errs) {
		it->name = intern_cstr("(expression)"); /* no name a program can use */
		it->loc = it->rhs->loc;
		items = ast_list_add(items, it);
		errs += drv_parse_items(c, items);
		register_sources(r);
		if (!errs)
			errs += drv_check(c);
	}
	register_sources(r);
	if (!errs) {
		lower_init(&c->lower, &c->arena, &c->globals, &c->mod);
		Value v = lower_expr(&c->lower, c->lower.global_env, it->rhs);
		errs = diag_count();
		if (!errs && v.kind != V_NONE) {
			const AstNode *e = it->rhs;
			print_value(c, v, e->kind == AST_CALL && e->lhs->kind == AST_NAME ? e->lhs->name : NULL);
			printf("\n");
		}
	}
	count_errors(r, errs ? (diag_shown() ? diag_shown() : 1) : 0, "");
	free_compiler(c);
}

/* ---- commands ---- */

static int set_index(const Repl *r, const char *name)
{
	for (int i = 0; i < r->nset; i++)
		if (r->set[i].name == name)
			return i;
	return -1;
}

static int run_option(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(name, run_options[i]))
			return i;
	return -1;
}

/* text: the value as typed, or NULL to print it as a number */
static int put_set(Repl *r, const char *name, double v, const char *text)
{
	int i = set_index(r, name);
	if (i < 0) {
		if (r->nset == REPL_MAX_SETS) {
			fprintf(stderr, "error: at most %d settings\n", REPL_MAX_SETS);
			return -1;
		}
		i = r->nset++;
	}
	r->set[i] = (Set){name, v, ""};
	if (text)
		snprintf(r->set[i].text, sizeof r->set[i].text, "%s", text);
	return 0;
}

/* NAME=VALUE, with or without spaces around '='. */
static int parse_set(Repl *r, const char *arg, const char **name, double *v, char *text, size_t textlen)
{
	const char *eq = strchr(arg, '=');
	const char *end = eq;
	while (end && end > arg && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	char *stop = NULL;
	const char *val = eq ? skip_space(eq + 1) : NULL;
	*v = val ? strtod(val, &stop) : 0;
	if (stop)
		while (*stop == ' ' || *stop == '\t')
			stop++;
	if (!eq || end == arg || !stop || stop == val || *stop || !isfinite(*v)) {
		fprintf(stderr, "error: :set wants NAME=NUMBER, got '%s'\n", arg);
		return -1;
	}
	*name = intern(arg, (size_t)(end - arg));
	size_t tn = (size_t)(stop - val);
	while (tn > 0 && (val[tn - 1] == ' ' || val[tn - 1] == '\t'))
		tn--;
	snprintf(text, textlen, "%.*s", (int)tn, val);
	int k = run_option(*name);
	if (k >= 0 && (*v != floor(*v) || *v < (k == 0 || k == 2 ? 0 : 1) || *v > 1e15)) {
		fprintf(stderr, "error: %s is a whole number of at least %d\n", *name, k == 0 || k == 2 ? 0 : 1);
		return -1;
	}
	return 0;
}

static void list_hparams(const IrModule *m)
{
	for (int i = 0; i < m->nhparams; i++)
		fprintf(stderr, " %s", m->hparams[i].name);
}

static void cmd_set(Repl *r, const char *arg)
{
	if (!*arg) {
		if (!r->nset)
			printf("nothing set\n");
		for (int i = 0; i < r->nset; i++) {
			printf("%s=", r->set[i].name);
			if (r->set[i].text[0])
				printf("%s", r->set[i].text);
			else
				print_number(r->set[i].value);
			printf("\n");
		}
		return;
	}
	const char *name;
	double v;
	char text[32];
	if (parse_set(r, arg, &name, &v, text, sizeof text)) {
		r->failed = 1;
		return;
	}
	if (run_option(name) < 0) {
		/* A hyperparameter the current optimizer does not have is refused; with no program that
		 * compiles, anything is taken, and :run skips what does not apply. */
		int errs;
		Compiler *c = build(r, UPTO_LOWER, 1, &errs);
		if (!errs && c->step && ir_find_hparam(&c->mod, name) < 0) {
			fprintf(stderr, "error: the optimizer has no hyperparameter '%s' (it has:", name);
			list_hparams(&c->mod);
			fprintf(stderr, "; and :run takes epochs, batch, seed, limit)\n");
			r->failed = 1;
			free_compiler(c);
			return;
		}
		free_compiler(c);
	}
	if (put_set(r, name, v, text))
		r->failed = 1;
}

static void cmd_unset(Repl *r, const char *arg)
{
	if (!*arg) {
		r->nset = 0;
		return;
	}
	int i = set_index(r, intern_cstr(arg));
	if (i < 0) {
		fprintf(stderr, "error: '%s' is not set\n", arg);
		r->failed = 1;
		return;
	}
	memmove(&r->set[i], &r->set[i + 1], (size_t)(r->nset - i - 1) * sizeof *r->set);
	r->nset--;
}

static void cmd_run(Repl *r, const char *arg)
{
	long epochs = -1;
	if (*arg) {
		char *end;
		errno = 0;
		epochs = strtol(arg, &end, 10);
		if (errno || end == arg || *skip_space(end) || epochs < 0) {
			fprintf(stderr, "error: :run takes a number of epochs, got '%s'\n", arg);
			r->failed = 1;
			return;
		}
	}
	int errs;
	Compiler *c = build(r, UPTO_LOWER, 0, &errs);
	if (errs || !c->step) {
		if (!errs)
			fprintf(stderr, "error: nothing to run: the program has no train block\n");
		count_errors(r, errs, "; nothing was run");
		r->failed = 1;
		free_compiler(c);
		return;
	}
	Options o = *r->opts;
	o.cmd = "run";
	o.nsets = 0;
	long *opt[4] = {&o.epochs, &o.batch, &o.seed, &o.limit};
	for (int k = 0; k < 4; k++)
		*opt[k] = -1; /* the command line's are among the settings */
	char text[REPL_MAX_SETS][128];
	for (int i = 0; i < r->nset; i++) {
		const Set *s = &r->set[i];
		int k = run_option(s->name);
		if (k >= 0) {
			*opt[k] = (long)s->value;
		} else if (ir_find_hparam(&c->mod, s->name) >= 0) {
			snprintf(text[o.nsets], sizeof text[0], "%s=%.17g", s->name, s->value);
			o.sets[o.nsets] = text[o.nsets];
			o.nsets++;
		} else {
			printf("(%s=", s->name);
			if (s->text[0])
				printf("%s", s->text);
			else
				print_number(s->value);
			printf(" does not apply: the optimizer has no such hyperparameter)\n");
		}
	}
	if (epochs >= 0)
		o.epochs = epochs;
	fflush(stdout);
	if (session_run(c, &o))
		r->failed = 1;
	fflush(stdout);
	free_compiler(c);
}

typedef struct Variant Variant;
static Compiler *build_variant(Repl *r, const Variant *v, int baseline, int *errs);
static Compiler *build_rule(Repl *r, const char *rule, int col, int *errs);

/* :show WHAT [RULE]: with a rule, the program with it as the optimizer. */
static void cmd_show(Repl *r, const char *arg, const char *line)
{
	const char *const *what = show_names;
	size_t wl = strcspn(arg, " \t");
	char word[16];
	snprintf(word, sizeof word, "%.*s", (int)(wl < 15 ? wl : 15), arg);
	if (!strcmp(word, "update"))
		strcpy(word, "step");
	const char *rule = skip_space(arg + wl);
	int k = 0;
	while (k < 6 && strcmp(word, what[k]))
		k++;
	if (k == 6 || (k == 0 && *rule)) {
		fprintf(stderr, "error: :show takes ast, ir, grad, step (or update), kernels or llvm, and then a rule to "
				"show in place of the train block's optimizer\n");
		r->failed = 1;
		return;
	}
	if (*rule && !has_train(r)) {
		fprintf(stderr, "error: :show %s needs a train block\n", word);
		r->failed = 1;
		return;
	}
	int errs;
	size_t n = strlen(line);
	while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	Compiler *c = *rule ? build_rule(r, rule, (int)(n - strlen(rule)) + 1, &errs)
		: build(r, k == 0 ? UPTO_PARSE : UPTO_LOWER, 0, &errs);
	if (errs || (k > 0 && !c->step)) {
		if (!errs)
			fprintf(stderr, "error: :show %s needs a train block\n", arg);
		count_errors(r, errs, "; nothing to show");
		r->failed = 1;
	} else {
		Options o = *r->opts;
		o.show = what[k];
		fflush(stdout);
		if (session_show(c, &o))
			r->failed = 1;
		fflush(stdout);
	}
	free_compiler(c);
}

/* A text file's contents; NULL with errno set. */
static char *read_text(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *text = NULL, buf[65536];
	size_t n;
	*len = 0;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
		text = xrealloc(text, *len + n + 1);
		memcpy(text + *len, buf, n);
		*len += n;
	}
	int bad = ferror(f) || (text && memchr(text, 0, *len)); /* the lexer's sentinel is the only NUL */
	fclose(f);
	if (bad) {
		free(text);
		errno = EINVAL;
		return NULL;
	}
	if (!text)
		text = xstrndup("", 0);
	text[*len] = 0;
	return text;
}

/* A file's definitions and train block, as if typed; its earlier ones (a reload) go first. */
static void cmd_load(Repl *r, const char *path)
{
	if (!*path) {
		fprintf(stderr, "error: :load needs a file\n");
		r->failed = 1;
		return;
	}
	size_t len;
	char *text = read_text(path, &len);
	if (!text) {
		fprintf(stderr, "error: cannot read '%s': %s\n", path, strerror(errno));
		r->failed = 1;
		return;
	}
	const char *name = intern_cstr(path);
	Arena a = {0};
	AstProgram p = {0};
	diag_reset();
	int errs = parse_source(&a, name, text, &p);
	if (errs) {
		count_errors(r, errs, "; nothing changed");
		diag_add_source(name, ""); /* not text, which goes */
		register_sources(r);
		free(text);
		arena_free(&a);
		return;
	}
	/* Loading a file again: what it still defines is replaced where it stands, the rest goes. */
	for (int i = 0; i < r->n; i++)
		r->e[i].stale = r->e[i].file == name;
	Source *s = source(r, name);
	free(s->text);
	s->text = text;
	s->len = len;
	register_sources(r);
	Taken tk = {0};
	take_items(r, name, text, &p, 0, &tk);
	for (int i = r->n - 1; i >= 0; i--)
		if (r->e[i].stale)
			drop(r, i);
	printf("loaded %s: %d definition%s", path, tk.defined, tk.defined == 1 ? "" : "s");
	if (tk.uses)
		printf(", %d use%s", tk.uses, tk.uses == 1 ? "" : "s");
	if (tk.train)
		printf(", a train block");
	if (tk.changed)
		printf("; %d definition%s changed", tk.changed, tk.changed == 1 ? "" : "s");
	printf("\n");
	arena_free(&a);
	check(r);
}

static void print_entry(FILE *f, const Entry *e, const char *indent, int *prev_lines)
{
	int lines = strchr(e->text, '\n') != NULL;
	if (*prev_lines >= 0 && (lines || *prev_lines))
		fprintf(f, "\n");
	fprintf(f, "%s%s\n", indent, e->text);
	*prev_lines = lines;
}

/* A train field at column 3, its later lines moved as far as its first, so they keep their
 * indentation relative to it. */
static void print_field(FILE *f, const Entry *e)
{
	int shift = 3 - e->col;
	fprintf(f, "  ");
	for (const char *p = e->text; *p; p++) {
		fputc(*p, f);
		if (*p != '\n')
			continue;
		for (int k = 0; k < shift; k++)
			fputc(' ', f);
		for (int k = 0; k < -shift && (p[1] == ' ' || p[1] == '\t'); k++)
			p++;
	}
	fprintf(f, "\n");
}

static void list_program(Repl *r, FILE *f)
{
	int prev = -1;
	for (int i = 0; i < r->n; i++)
		if (r->e[i].kind != AST_ASSIGN)
			print_entry(f, &r->e[i], "", &prev);
	if (has_train(r)) {
		fprintf(f, "%strain {\n", prev >= 0 ? "\n" : "");
		for (int i = 0; i < r->n; i++)
			if (r->e[i].kind == AST_ASSIGN)
				print_field(f, &r->e[i]);
		fprintf(f, "}\n");
	} else if (prev < 0 && f == stdout) {
		fprintf(f, "(the program is empty)\n");
	}
}

static void cmd_list(Repl *r) { list_program(r, stdout); }

static void cmd_drop(Repl *r, const char *arg)
{
	int dropped = 0;
	if (!strcmp(arg, "train") || !strncmp(arg, "train.", 6)) {
		const char *field = arg[5] ? intern_cstr(arg + 6) : NULL;
		for (int i = r->n - 1; i >= 0; i--)
			if (r->e[i].kind == AST_ASSIGN && (!field || r->e[i].name == field)) {
				drop(r, i);
				dropped++;
			}
	} else {
		const char *name = intern_cstr(arg);
		for (int i = r->n - 1; i >= 0; i--)
			if (r->e[i].kind != AST_ASSIGN && r->e[i].name == name) {
				drop(r, i);
				dropped++;
			}
	}
	if (!dropped) {
		fprintf(stderr, "error: the program has no '%s'\n", arg);
		r->failed = 1;
		return;
	}
	printf("dropped %s\n", arg);
	check(r);
}

static void reset(Repl *r)
{
	while (r->n)
		drop(r, r->n - 1);
	r->nset = 0;
	drv_data_free(&r->data);
}

/* ---- the research loop: :compare, :bench, :sweep, :plot, :export, :save ---- */

/* The program with other train fields: a built-in problem's (in place of the train block's data,
 * model, loss and batch) and an optimizer written in a command (in place of the train block's).
 * Both are entries of a temporary program, compiled as usual; the session's program is not
 * changed. */
typedef struct Variant {
	const LabProblem *problem;
	const char *problem_args; /* without parentheses, or NULL */
	const char *rule;         /* an optimizer expression, or NULL */
	int line, col;            /* where the rule was written: a line of <repl>; 0: in the problem's text */
	const char *baseline;     /* or a baseline of the problem (its text), by index into its lines */
} Variant;

/* The problem's text as a source of its own, "<rosenbrock>", so errors in it quote it. Its lines:
 * the uses, the fields, then the baselines as `optimizer = ...`. */
static const char *problem_source(Repl *r, const LabProblem *p, const char *args, int *first_field,
				  int *first_baseline)
{
	char name[64];
	snprintf(name, sizeof name, "<%s>", p->name);
	Source *s = source(r, intern_cstr(name));
	char *fields = lab_problem_fields(p, args), *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		die("out of memory");
	fprintf(f, "use std.problems\nuse std.optim\n%s", fields);
	for (int i = 0; i < 4 && p->baselines[i]; i++)
		fprintf(f, "optimizer = %s\n", p->baselines[i]);
	fclose(f);
	int nf = 0;
	for (const char *q = fields; *q; q++)
		nf += *q == '\n';
	free(fields);
	free(s->text);
	s->text = text;
	s->len = len;
	*first_field = 3;
	*first_baseline = 3 + nf;
	return s->name;
}

/* The line-th line of text (from 1), malloc'd. */
static char *line_of(const char *text, int line)
{
	for (int i = 1; i < line && text; i++) {
		text = strchr(text, '\n');
		text = text ? text + 1 : NULL;
	}
	if (!text)
		return xstrndup("", 0);
	const char *e = strchr(text, '\n');
	return xstrndup(text, e ? (size_t)(e - text) : strlen(text));
}

static Compiler *build_variant(Repl *r, const Variant *v, int baseline, int *errs)
{
	Entry *saved = r->e;
	int saved_n = r->n, saved_cap = r->cap, m = 0;
	Entry *e = xcalloc((size_t)r->n + 16, sizeof *e);
	char *owned[16];
	int nowned = 0;
	const char *optimizer = intern_cstr("optimizer");
	for (int i = 0; i < r->n; i++) {
		const Entry *x = &r->e[i];
		if (x->kind == AST_ASSIGN && (v->problem || ((v->rule || baseline >= 0) && x->name == optimizer)))
			continue;
		if (v->problem && x->kind == AST_USE && (!strcmp(x->name, "std.problems") || !strcmp(x->name, "std.optim")))
			continue;
		e[m++] = *x;
	}
	SrcLoc train_loc = r->train_loc;
	if (v->problem) {
		int ff, fb;
		const char *file = problem_source(r, v->problem, v->problem_args, &ff, &fb);
		const Source *src = source(r, file);
		int nlines = 0;
		for (const char *q = src->text; *q; q++)
			nlines += *q == '\n';
		for (int line = 1; line <= nlines; line++) {
			char *t = line_of(src->text, line);
			int is_use = line < ff, is_baseline = line >= fb;
			if (is_baseline && line - fb != baseline) {
				free(t);
				continue;
			}
			AstKind kind = is_use ? AST_USE : AST_ASSIGN;
			const char *name = is_use ? intern_cstr(t + 4) : intern(t, strcspn(t, " ="));
			owned[nowned++] = t;
			e[m++] = (Entry){kind, name, file, line, 1, t, 0};
		}
		r->train_loc = (SrcLoc){.file = file, .line = ff, .col = 1};
	}
	if (v->rule) {
		/* `optimizer =` on the line before the rule's, so that the rule keeps its column */
		int bare = 1;
		for (const char *q = v->rule; *q; q++)
			bare &= isalnum((unsigned char)*q) || *q == '_';
		size_t n = strlen(v->rule) + (size_t)v->col + 32;
		char *t = xmalloc(n);
		if (v->line > 1)
			snprintf(t, n, "optimizer =\n%*s%s%s", v->col - 1, "", v->rule, bare ? "()" : "");
		else
			snprintf(t, n, "optimizer = %s%s", v->rule, bare ? "()" : "");
		owned[nowned++] = t;
		e[m++] = (Entry){AST_ASSIGN, optimizer, r->repl, v->line > 1 ? v->line - 1 : 1, 1, t, 0};
	}
	r->e = e;
	r->n = m;
	r->cap = m;
	r->data_now = v->problem ? &r->problem_data : &r->data;
	Compiler *c = build(r, UPTO_LOWER, 0, errs);
	r->data_now = &r->data;
	r->e = saved;
	r->n = saved_n;
	r->cap = saved_cap;
	r->train_loc = train_loc;
	for (int i = 0; i < nowned; i++)
		free(owned[i]);
	free(e);
	return c;
}

static Compiler *build_rule(Repl *r, const char *rule, int col, int *errs)
{
	Variant v = {NULL, NULL, rule, r->line, col, NULL};
	return build_variant(r, &v, -1, errs);
}

/* The options of :run from the settings: epochs, batch, seed, limit; no hyperparameters (a rule
 * of :compare brings its own). */
static void settings_options(const Repl *r, Options *o)
{
	*o = *r->opts;
	o->cmd = "run";
	o->nsets = 0;
	long *opt[4] = {&o->epochs, &o->batch, &o->seed, &o->limit};
	for (int k = 0; k < 4; k++)
		*opt[k] = -1;
	for (int i = 0; i < r->nset; i++) {
		int k = run_option(r->set[i].name);
		if (k >= 0)
			*opt[k] = (long)r->set[i].value;
	}
}

static void forget_last(Repl *r)
{
	for (int i = 0; i < r->nlast; i++)
		lab_run_free(&r->last[i]);
	free(r->last);
	r->last = NULL;
	r->nlast = 0;
}

/* The words of a command's arguments, split at spaces outside brackets, with their columns. */
typedef struct Word {
	char *text;
	int col;
} Word;

static int split_words(const char *line, int from, Word *w, int max)
{
	int n = 0;
	const char *p = line + from;
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		const char *start = p;
		int depth = 0;
		while (*p && (depth > 0 || (*p != ' ' && *p != '\t'))) {
			depth += *p == '(' || *p == '[';
			depth -= (*p == ')' || *p == ']') && depth > 0;
			p++;
		}
		/* `lr = 3e-4` inside a rule's parentheses is one word; `steps = 500` outside is joined too */
		if (n == max)
			return -1;
		w[n++] = (Word){xstrndup(start, (size_t)(p - start)), (int)(start - line) + 1};
	}
	return n;
}

/* The common arguments: steps=N, epochs=N, seeds=K, tol=X, `on PROBLEM[(args)]`. A word that is
 * none of these is left for the command (*rest). Returns -1 after reporting an error. */
typedef struct LabArgs {
	LabPlan plan;
	int seeds;
	const LabProblem *problem;
	char *problem_args;
	int rest[32];
	int nrest;
} LabArgs;

static int lab_args(Repl *r, const char *cmd, Word *w, int n, LabArgs *a)
{
	*a = (LabArgs){.seeds = 1};
	for (int i = 0; i < n; i++) {
		const char *t = w[i].text, *eq = strchr(t, '=');
		if (!strcmp(t, "on")) {
			if (i + 1 == n) {
				fprintf(stderr, "error: %s: 'on' needs a problem (", cmd);
				for (int k = 0; k < lab_nproblems; k++)
					fprintf(stderr, "%s%s", k ? ", " : "", lab_problems[k].name);
				fprintf(stderr, ")\n");
				return -1;
			}
			const char *pt = w[++i].text, *paren = strchr(pt, '(');
			char name[64];
			snprintf(name, sizeof name, "%.*s", paren ? (int)(paren - pt) : (int)strlen(pt), pt);
			a->problem = lab_problem(name);
			if (!a->problem) {
				fprintf(stderr, "error: %s: no problem '%s' (there are:", cmd, name);
				for (int k = 0; k < lab_nproblems; k++)
					fprintf(stderr, " %s", lab_problems[k].name);
				fprintf(stderr, ")\n");
				return -1;
			}
			if (paren) {
				size_t len = strlen(paren + 1);
				if (!len || paren[len] != ')') {
					fprintf(stderr, "error: %s: '%s' has no closing ')'\n", cmd, pt);
					return -1;
				}
				free(a->problem_args);
				a->problem_args = xstrndup(paren + 1, len - 1);
			}
			continue;
		}
		static const char *const keys[] = {"steps", "epochs", "seeds", "tol"};
		int k = -1;
		for (int j = 0; eq && j < 4; j++)
			if ((size_t)(eq - t) == strlen(keys[j]) && !strncmp(t, keys[j], strlen(keys[j])))
				k = j;
		if (k < 0) {
			if (a->nrest == 32) {
				fprintf(stderr, "error: %s: at most 32 rules\n", cmd);
				return -1;
			}
			a->rest[a->nrest++] = i;
			continue;
		}
		char *end;
		double v = strtod(eq + 1, &end);
		if (end == eq + 1 || *end || !isfinite(v) || v <= 0 || (k < 3 && (v != floor(v) || v > 1e9))
		    || (k == 2 && v > 100)) {
			fprintf(stderr, "error: %s: %s wants %s, got '%s'\n", cmd, keys[k],
				k == 3 ? "a number above 0" : k == 2 ? "a whole number from 1 to 100" : "a whole number from 1 to 10^9",
				eq + 1);
			return -1;
		}
		if (k == 0)
			a->plan.steps = (int64_t)v;
		else if (k == 1)
			a->plan.epochs = (int)v;
		else if (k == 2)
			a->seeds = (int)v;
		else
			a->plan.tol = v;
	}
	if (a->plan.steps && a->plan.epochs) {
		fprintf(stderr, "error: %s: steps or epochs, not both\n", cmd);
		return -1;
	}
	if (a->problem && !a->plan.steps && !a->plan.epochs)
		a->plan.steps = a->problem->steps;
	return 0;
}

static void free_words(Word *w, int n)
{
	for (int i = 0; i < n; i++)
		free(w[i].text);
}

static void draw_last(Repl *r)
{
	PlotSeries s[32];
	double *x[32], *y[32];
	int allpos = 1;
	for (int k = 0; k < r->last_rules; k++) {
		const LabRun *run = &r->last[k * r->last_seeds];
		int n = lab_curve(run, 240, &x[k], &y[k]);
		s[k] = (PlotSeries){run->label, x[k], y[k], n};
		for (int i = 0; i < n; i++)
			allpos &= !isfinite(y[k][i]) || y[k][i] > 0;
	}
	char title[128];
	snprintf(title, sizeof title, "train loss by step%s%s", allpos ? " (log scale)" : "",
		 r->last_seeds > 1 ? ", first seed" : "");
	PlotAxes ax = {.title = title, .xlabel = "step", .ylabel = "train loss", .logy = allpos};
	plot_term(stdout, s, r->last_rules, &ax, 64, 14, lab_colour());
	for (int k = 0; k < r->last_rules; k++) {
		free(x[k]);
		free(y[k]);
	}
}

/* :compare RULE... and :bench RULE on PROBLEM: each rule from the same weights and batches. */
static void compare(Repl *r, const char *line, int bench)
{
	const char *cmd = bench ? ":bench" : ":compare";
	const char *p = skip_space(line) + 1;
	while (*p && *p != ' ' && *p != '\t')
		p++;
	Word w[64];
	int n = split_words(line, (int)(p - line), w, 64);
	LabArgs a = {0};
	if (n < 0) {
		fprintf(stderr, "error: %s: too many words\n", cmd);
		r->failed = 1;
		return;
	}
	if (lab_args(r, cmd, w, n, &a)) {
		r->failed = 1;
		free_words(w, n);
		free(a.problem_args);
		return;
	}
	int usage = bench ? !a.problem || a.nrest != 1 : a.nrest < 1;
	if (usage) {
		if (bench)
			fprintf(stderr, "error: :bench takes one rule and a problem: :bench RULE on PROBLEM [steps=N] "
					"[tol=X] [seeds=K]\n");
		else
			fprintf(stderr, "error: :compare takes the rules to compare: :compare RULE... [steps=N | epochs=N] "
					"[seeds=K] [on PROBLEM]\n");
		r->failed = 1;
		free_words(w, n);
		free(a.problem_args);
		return;
	}
	if (!a.problem && !has_train(r)) {
		fprintf(stderr, "error: %s needs a train block, or a problem: %s RULE... on rosenbrock\n", cmd, cmd);
		r->failed = 1;
		free_words(w, n);
		free(a.problem_args);
		return;
	}
	if (bench && !(a.plan.tol > 0))
		a.plan.tol = a.problem->tol;
	int nb = 0;
	while (bench && nb < 4 && a.problem->baselines[nb])
		nb++;
	int nrules = a.nrest + nb;
	Options o;
	settings_options(r, &o);
	LabRun *runs = xcalloc((size_t)nrules * (size_t)a.seeds, sizeof *runs);
	int done = 0, bad = 0, before = lab_compilations();
	lab_interrupt_begin();
	for (int k = 0; k < nrules && !bad && !lab_interrupted(); k++) {
		Variant v = {a.problem, a.problem_args, NULL, r->line, 1, NULL};
		int baseline = -1;
		const char *label;
		if (k < a.nrest) {
			v.rule = w[a.rest[k]].text;
			v.col = w[a.rest[k]].col;
			label = v.rule;
		} else {
			baseline = k - a.nrest;
			label = a.problem->baselines[baseline];
		}
		int errs;
		Compiler *c = build_variant(r, &v, baseline, &errs);
		if (errs || !c->step) {
			if (!errs)
				fprintf(stderr, "error: %s needs a train block, or a problem: %s RULE... on rosenbrock\n", cmd, cmd);
			count_errors(r, errs, "; nothing was run");
			r->failed = bad = 1;
			free_compiler(c);
			break;
		}
		SessionKernels kern;
		if (lab_compile(c, &o, &kern)) {
			r->failed = bad = 1;
			free_compiler(c);
			break;
		}
		if (k == 0) {
			int64_t steps = lab_steps(c, &a.plan);
			printf("%s%s%s: %lld steps (batch %lld) from seed %llu", bench ? "bench" : "compare",
			       a.problem ? " on " : "", a.problem ? a.problem->name : "", (long long)steps,
			       (long long)c->cfg.batch, (unsigned long long)c->cfg.seed);
			if (a.seeds > 1)
				printf(" to %llu", (unsigned long long)(c->cfg.seed + (uint64_t)a.seeds - 1));
			if (bench)
				printf(", tolerance %g", a.plan.tol);
			printf("; every rule from the same weights and batches\n");
			fflush(stdout);
		}
		for (int s = 0; s < a.seeds && !lab_interrupted(); s++) {
			LabRun *run = &runs[k * a.seeds + s];
			run->label = xstrndup(label, strlen(label));
			lab_train(c, &kern, c->cfg.seed + (uint64_t)s, &a.plan, -1, NAN, run);
		}
		if (!lab_interrupted())
			done = k + 1;
		session_kernels_free(&kern);
		free_compiler(c);
	}
	lab_interrupt_end();
	if (lab_interrupted())
		printf("interrupted: %d of %d rules run\n", done, nrules);
	if (done > 0) {
		lab_table(stdout, runs, done, a.seeds, bench, "rule");
		printf("(%d compilation%s, one per rule)\n", lab_compilations() - before,
		       lab_compilations() - before == 1 ? "" : "s");
		forget_last(r);
		r->last = runs;
		r->nlast = nrules * a.seeds;
		r->last_rules = done;
		r->last_seeds = a.seeds;
		r->last_sweep = 0;
		draw_last(r);
	} else {
		for (int i = 0; i < nrules * a.seeds; i++)
			lab_run_free(&runs[i]);
		free(runs);
	}
	free_words(w, n);
	free(a.problem_args);
}

/* :sweep NAME=GRID [RULE] [steps=N | epochs=N] [seeds=K] [on PROBLEM] */
static void cmd_sweep(Repl *r, const char *line)
{
	const char *p = skip_space(line) + 1;
	while (*p && *p != ' ' && *p != '\t')
		p++;
	Word w[64];
	int n = split_words(line, (int)(p - line), w, 64);
	LabArgs a = {0};
	if (n < 1 || !strchr(w[0].text, '=')) {
		fprintf(stderr, "error: :sweep NAME=LO..HI [log] [N] [RULE] [steps=N | epochs=N] [seeds=K] [on PROBLEM], "
				"e.g. :sweep lr=1e-4..1e-1 log 8\n");
		r->failed = 1;
		free_words(w, n > 0 ? n : 0);
		return;
	}
	/* the grid: its first word and the words log, lin and a count after it */
	char grid[256];
	snprintf(grid, sizeof grid, "%s", w[0].text);
	int g = 1;
	while (g < n && (!strcmp(w[g].text, "log") || !strcmp(w[g].text, "lin") || strspn(w[g].text, "0123456789") == strlen(w[g].text))) {
		size_t k = strlen(grid);
		snprintf(grid + k, sizeof grid - k, " %s", w[g].text);
		g++;
	}
	char name[64], err[256];
	double values[LAB_MAX_GRID];
	int logscale, nv = lab_grid(grid, name, sizeof name, values, LAB_MAX_GRID, &logscale, err, sizeof err);
	if (nv < 0 || lab_args(r, ":sweep", w + g, n - g, &a) || a.nrest > 1) {
		if (nv < 0)
			fprintf(stderr, "error: :sweep: %s\n", err);
		else if (a.nrest > 1)
			fprintf(stderr, "error: :sweep runs one rule, got '%s' and '%s'\n", w[g + a.rest[0]].text,
				w[g + a.rest[1]].text);
		r->failed = 1;
		free_words(w, n);
		free(a.problem_args);
		return;
	}
	if (!a.problem && !has_train(r)) {
		fprintf(stderr, "error: :sweep needs a train block, or a problem: :sweep lr=1e-4..1e-1 log 8 adam on "
				"rosenbrock\n");
		r->failed = 1;
		free_words(w, n);
		free(a.problem_args);
		return;
	}
	Variant v = {a.problem, a.problem_args, NULL, r->line, 1, NULL};
	if (a.nrest) {
		v.rule = w[g + a.rest[0]].text;
		v.col = w[g + a.rest[0]].col;
	}
	int errs;
	Compiler *c = build_variant(r, &v, -1, &errs);
	if (errs || !c->step) {
		if (!errs)
			fprintf(stderr, "error: :sweep needs a train block, or a problem: :sweep lr=1e-4..1e-1 log 8 adam on rosenbrock\n");
		count_errors(r, errs, "; nothing was run");
		r->failed = 1;
	} else {
		Options o;
		settings_options(r, &o);
		LabRun *runs;
		int nruns;
		if (lab_sweep(c, &o, name, values, nv, logscale, &a.plan, a.seeds, &runs, &nruns)) {
			r->failed = 1;
		} else if (nruns > 0) {
			forget_last(r);
			r->last = runs;
			r->nlast = nv * a.seeds;
			r->last_rules = nruns / a.seeds;
			r->last_seeds = a.seeds;
			r->last_sweep = 1;
			r->last_logx = logscale;
			snprintf(r->last_name, sizeof r->last_name, "%s", name);
		} else {
			free(runs);
		}
	}
	free_compiler(c);
	free_words(w, n);
	free(a.problem_args);
}

static int no_last(Repl *r, const char *cmd)
{
	if (r->last)
		return 0;
	fprintf(stderr, "error: %s: nothing yet; run :compare, :bench or :sweep first\n", cmd);
	r->failed = 1;
	return 1;
}

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n > k && !strcmp(s + n - k, suffix);
}

/* :plot FILE.svg: the last comparison's training curves, or the last sweep's loss by value. */
static void cmd_plot(Repl *r, const char *path)
{
	if (!has_suffix(path, ".svg")) {
		fprintf(stderr, "error: :plot writes an SVG file: :plot FILE.svg\n");
		r->failed = 1;
		return;
	}
	if (no_last(r, ":plot"))
		return;
	PlotSeries s[64];
	double *x[64] = {0}, *y[64] = {0};
	int n = 0, allpos = 1;
	char title[128];
	PlotAxes ax;
	if (r->last_sweep) {
		int nv = r->last_rules;
		for (int k = 0; k < r->last_seeds && k < 64; k++) {
			x[k] = xmalloc(((size_t)nv + 1) * sizeof(double));
			y[k] = xmalloc(((size_t)nv + 1) * sizeof(double));
			for (int i = 0; i < nv; i++) {
				const LabRun *run = &r->last[i * r->last_seeds + k];
				x[k][i] = run->value;
				y[k][i] = run->final_train;
				allpos &= !isfinite(y[k][i]) || y[k][i] > 0;
			}
			char *label = xmalloc(32);
			snprintf(label, 32, "seed %llu", (unsigned long long)r->last[k].seed);
			s[n++] = (PlotSeries){label, x[k], y[k], nv};
		}
		snprintf(title, sizeof title, "final train loss by %s", r->last_name);
		ax = (PlotAxes){.title = title, .xlabel = r->last_name, .ylabel = "final train loss", .logx = r->last_logx};
	} else {
		for (int k = 0; k < r->last_rules * r->last_seeds && k < 64; k++) {
			const LabRun *run = &r->last[k];
			int m = lab_curve(run, 2000, &x[k], &y[k]);
			char *label = xmalloc(strlen(run->label) + 32);
			if (r->last_seeds > 1)
				sprintf(label, "%s (seed %llu)", run->label, (unsigned long long)run->seed);
			else
				strcpy(label, run->label);
			s[n++] = (PlotSeries){label, x[k], y[k], m};
			for (int i = 0; i < m; i++)
				allpos &= !isfinite(y[k][i]) || y[k][i] > 0;
		}
		snprintf(title, sizeof title, "train loss by step");
		ax = (PlotAxes){.title = title, .xlabel = "step", .ylabel = "train loss"};
	}
	ax.logy = allpos;
	char err[512];
	if (plot_svg(path, s, n, &ax, err, sizeof err)) {
		fprintf(stderr, "error: %s\n", err);
		r->failed = 1;
	} else {
		printf("wrote %s: %d curve%s\n", path, n, n == 1 ? "" : "s");
	}
	for (int k = 0; k < n; k++) {
		free((char *)s[k].label);
		free(x[k]);
		free(y[k]);
	}
}

static void cmd_export(Repl *r, const char *path)
{
	if (!*path) {
		fprintf(stderr, "error: :export needs a file: :export FILE.jsonl\n");
		r->failed = 1;
		return;
	}
	if (no_last(r, ":export"))
		return;
	char err[512];
	int n = r->last_rules * r->last_seeds;
	if (lab_export(path, r->last, n, err, sizeof err)) {
		fprintf(stderr, "error: %s\n", err);
		r->failed = 1;
	} else {
		printf("wrote %s: %d run%s\n", path, n, n == 1 ? "" : "s");
	}
}

/* :save FILE.nml: the program as :list prints it, written whole (a temporary file renamed over
 * FILE) or not at all. */
static void cmd_save(Repl *r, const char *path)
{
	struct stat st;
	if (!*path) {
		fprintf(stderr, "error: :save needs a file: :save FILE.nml\n");
		r->failed = 1;
		return;
	}
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "error: cannot save to '%s': not a regular file\n", path);
		r->failed = 1;
		return;
	}
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f) {
		fprintf(stderr, "error: cannot write '%s': %s\n", path, strerror(errno));
		r->failed = 1;
		return;
	}
	list_program(r, f);
	if (ferror(f) | fclose(f) || rename(tmp, path)) {
		fprintf(stderr, "error: cannot write '%s': %s\n", path, strerror(errno));
		remove(tmp);
		r->failed = 1;
		return;
	}
	int defs = 0;
	for (int i = 0; i < r->n; i++)
		defs += r->e[i].kind != AST_ASSIGN && r->e[i].kind != AST_USE;
	printf("saved %s: %d definition%s%s\n", path, defs, defs == 1 ? "" : "s", has_train(r) ? " and the train block" : "");
}

static const char help[] =
	"Enter definitions (use, layer, optimizer, def, const), a train block or one of its fields\n"
	"(name = value), or an expression to evaluate. A definition whose name exists replaces it.\n"
	"  :run [EPOCHS]     train the current program (from fresh parameters)\n"
	"  :set NAME=VALUE   an optimizer hyperparameter, or epochs, batch, seed, limit, for later runs\n"
	"  :set              list what is set;  :unset [NAME]  forget it (or all)\n"
	"  :show WHAT [RULE] ast, ir, grad, step, kernels or llvm of the current program (with RULE)\n"
	"  :list             the program's text\n"
	"  :load FILE        take FILE's definitions and train block\n"
	"  :drop NAME        remove a definition or use; train, or train.FIELD, for the train block\n"
	"  :compare RULE... [steps=N | epochs=N] [seeds=K] [on PROBLEM]\n"
	"                    each rule from the same weights and batches: a table and the curves\n"
	"  :bench RULE on PROBLEM [steps=N] [tol=X] [seeds=K]   a rule beside the problem's baselines\n"
	"  :sweep NAME=LO..HI [log] [N] [RULE] [steps=N | epochs=N] [on PROBLEM]\n"
	"                    one run per value of a hyperparameter, compiled once\n"
	"  :plot FILE.svg    the last comparison's curves (or sweep's losses) as an SVG picture\n"
	"  :export FILE.jsonl  the last comparison's runs, one JSON object each\n"
	"  :save FILE.nml    the program, as :list prints it\n"
	"  :reset            start over with an empty program\n"
	"  :help             this list\n"
	"  :quit             leave (also end of input)\n";

/* Returns 1 to leave. Commands may be shortened to any unique prefix. */
static int command(Repl *r, const char *line)
{
	const char *const *names = command_names;
	enum { N = NCOMMANDS };
	const char *p = skip_space(line) + 1, *q = p;
	while (*q && *q != ' ' && *q != '\t')
		q++;
	size_t len = (size_t)(q - p);
	int k = -1, matches = 0;
	for (int i = 0; i < N; i++) {
		if (strlen(names[i]) == len && !strncmp(names[i], p, len)) {
			k = i;
			matches = 1;
			break;
		}
		if (len && !strncmp(names[i], p, len)) {
			k = i;
			matches++;
		}
	}
	if (matches != 1) {
		fprintf(stderr, "error: %s command ':%.*s' (:help lists them)\n", matches ? "ambiguous" : "unknown",
			(int)len, p);
		r->failed = 1;
		return 0;
	}
	char *arg = xstrndup(skip_space(q), strlen(skip_space(q)));
	for (size_t n = strlen(arg); n > 0 && (arg[n - 1] == ' ' || arg[n - 1] == '\t'); n--)
		arg[n - 1] = 0;
	int quit = 0;
	switch (k) {
	case 0: cmd_run(r, arg); break;
	case 1: cmd_set(r, arg); break;
	case 2: cmd_unset(r, arg); break;
	case 3: cmd_show(r, arg, line); break;
	case 4: cmd_list(r); break;
	case 5: cmd_load(r, arg); break;
	case 6: cmd_drop(r, arg); break;
	case 7:
		reset(r);
		printf("the program is empty\n");
		break;
	case 8: fputs(help, stdout); break;
	case 9: quit = 1; break;
	case 10: compare(r, line, 0); break;
	case 11: compare(r, line, 1); break;
	case 12: cmd_sweep(r, line); break;
	case 13: cmd_plot(r, arg); break;
	case 14: cmd_export(r, arg); break;
	default: cmd_save(r, arg); break;
	}
	free(arg);
	return quit;
}

/* What an input is, from its first tokens. */
static int handle(Repl *r, const char *text, int line)
{
	if (is_command(text))
		return command(r, text);
	Tok *t;
	int n = scan(r, r->repl, text, &t), i = 0;
	while (i < n && t[i].kind == TK_NL)
		i++;
	int first = i < n ? t[i].kind : 0, second = i + 1 < n ? t[i + 1].kind : 0;
	free(t);
	if (!first)
		return 0;
	int assign = second == TK_ASSIGN || second == TK_PLUSEQ || second == TK_MINUSEQ || second == TK_STAREQ
		|| second == TK_SLASHEQ;
	if ((first == TK_IDENT || first == TK_OPTIMIZER) && assign)
		take_field(r, text, line);
	else if (item_keyword(first))
		take_definitions(r, text, line);
	else
		evaluate(r, text, line);
	return 0;
}

/* ---- completion (on a terminal) ---- */

static Repl *completing; /* readline's callbacks take no context */

/* The state-th name starting with text: commands after ':', what :show shows after ":show ", else
 * the program's names, builtins and keywords. */
static char *complete_name(const char *text, int state)
{
	static int i;
	static const char *const keywords[] = {"use", "layer", "optimizer", "transform", "param", "buffer", "state", "forward",
					       "return", "def", "const", "train"};
	enum { NKEYWORDS = sizeof keywords / sizeof keywords[0] };
	const Repl *r = completing;
	size_t len = strlen(text);
	const char *line = skip_space(rl_line_buffer);
	int show = !strncmp(line, ":show ", 6) || !strncmp(line, ":sh ", 4);
	if (!state)
		i = 0;
	for (;; i++) {
		const char *cand, *prefix = "";
		int k = i;
		if (text[0] == ':') {
			if (k >= NCOMMANDS)
				return NULL;
			cand = command_names[k];
			prefix = ":";
			if (strncmp(cand, text + 1, len - 1))
				continue;
		} else {
			if (show) {
				if (k >= 6)
					return NULL;
				cand = show_names[k];
			} else if (k < r->nnames) {
				cand = r->names[k];
			} else if ((k -= r->nnames) < NKEYWORDS) {
				cand = keywords[k];
			} else if ((k -= NKEYWORDS) < sema_nbuiltins()) {
				cand = sema_builtin_info(k)->name;
			} else {
				return NULL;
			}
			if (strncmp(cand, text, len))
				continue;
		}
		i++;
		char *m = xrealloc(NULL, strlen(prefix) + strlen(cand) + 1);
		strcpy(m, prefix);
		strcat(m, cand);
		return m;
	}
}

static char **complete(const char *text, int start, int end)
{
	rl_attempted_completion_over = 1; /* no file names */
	return rl_completion_matches(text, complete_name);
}

/* History is written as it grows (a session that ends badly keeps it), an input of several lines
 * as one entry, and the file holds the last REPL_HISTORY entries. */
static void remember(Repl *r, const char *text)
{
	add_history(text);
	if (!r->hist)
		return;
	write_history(r->hist); /* the last REPL_HISTORY entries (stifle_history) */
}

static char *history_path(void)
{
	const char *home = getenv("HOME");
	if (!home || !*home)
		return NULL;
	size_t n = strlen(home) + 32;
	char *p = xrealloc(NULL, n);
	snprintf(p, n, "%s/.nml_history", home);
	return p;
}

int repl_main(const Options *o)
{
	Repl r = {.opts = o, .tty = isatty(STDIN_FILENO), .repl = intern_cstr("<repl>")};
	r.data_now = &r.data;
	r.echo = !r.tty && o->echo;
	r.devnull = fopen("/dev/null", "w");
	if (!r.devnull)
		die("cannot open /dev/null: %s", strerror(errno));
	source(&r, r.repl);
	/* Output and diagnostics interleave in the order they happen, also into one pipe. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	long cli[4] = {o->epochs, o->batch, o->seed, o->limit};
	for (int i = 0; i < 4; i++)
		if (cli[i] >= 0)
			put_set(&r, intern_cstr(run_options[i]), (double)cli[i], NULL);
	int status = 0;
	for (int i = 0; i < o->nsets && !status; i++) {
		const char *name;
		double v;
		char text[32];
		status = parse_set(&r, o->sets[i], &name, &v, text, sizeof text) || put_set(&r, name, v, text) ? 2 : 0;
	}
	char *hist = NULL;
	if (r.tty) {
		rl_readline_name = "nmlc";
		completing = &r;
		rl_attempted_completion_function = complete;
		stifle_history(REPL_HISTORY);
		hist = history_path();
		if (hist)
			read_history(hist);
		r.hist = hist;
		printf("nmlc repl: definitions, a train block, expressions; :help lists the commands\n");
	}
	if (o->file && !status)
		cmd_load(&r, o->file);
	while (!status) {
		int line = 0;
		char *text = read_input(&r, &line);
		if (!text)
			break;
		if (r.tty && *skip_space(text))
			remember(&r, text);
		int quit = handle(&r, text, line);
		free(text);
		fflush(stdout);
		if (quit)
			break;
	}
	if (r.tty)
		printf("\n");
	free(hist);
	free(r.names);
	reset(&r);
	forget_last(&r);
	drv_data_free(&r.problem_data);
	free(r.e);
	for (int i = 0; i < r.nsrc; i++) {
		diag_add_source(r.src[i].name, ""); /* nothing may quote freed text */
		free(r.src[i].text);
	}
	free(r.src);
	fclose(r.devnull);
	return status ? status : r.failed && !r.tty ? 1 : 0;
}
