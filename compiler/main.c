/* main.c: the nmlc command line. Commands and options are two tables; parsing, `nmlc help`,
 * `nmlc COMMAND --help` and the "did you mean" suggestions all read them, so an option exists for a
 * command exactly when that command's help lists it. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aot.h"
#include "config.h"
#include "lab.h"
#include "plot.h"
#include "repl.h"
#include "session.h"

void openblas_set_num_threads(int n);
char *openblas_get_corename(void);

/* OpenBLAS 0.3.21 (Debian 12) does not recognize recent Intel server CPUs and falls back to its
 * generic SSE3 ("Prescott") kernels, which run sgemm at half the speed of its AVX-512 ones. The
 * kernel choice is made when the library loads, from $OPENBLAS_CORETYPE; so when the fallback is
 * in use on a CPU with AVX-512 or AVX2, nmlc runs itself again with that variable set. A value the
 * user set is left alone. */
static void pick_blas_kernels(char **argv)
{
	if (getenv("OPENBLAS_CORETYPE") || strcmp(openblas_get_corename(), "Prescott") != 0)
		return;
	__builtin_cpu_init();
	const char *core = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
			&& __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") ? "SkylakeX"
		: __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "Haswell" : NULL;
	if (!core || setenv("OPENBLAS_CORETYPE", core, 1) != 0)
		return;
	execv("/proc/self/exe", argv); /* on failure, go on with the generic kernels */
}

/* ---- the commands and their options ---- */

typedef enum { CMD_RUN, CMD_CHECK, CMD_SHOW, CMD_GRADCHECK, CMD_BUILD, CMD_REPL, CMD_SWEEP, CMD_PLOT, NCMDS } CmdId;
enum {
	RUN = 1 << CMD_RUN, CHECK = 1 << CMD_CHECK, SHOW = 1 << CMD_SHOW, GRADCHECK = 1 << CMD_GRADCHECK,
	BUILD = 1 << CMD_BUILD, REPL = 1 << CMD_REPL, SWEEP = 1 << CMD_SWEEP, PLOT = 1 << CMD_PLOT,
	ALL = (1 << NCMDS) - 1
};

static const struct Command {
	const char *name, *args; /* `nmlc NAME ARGS [options]` */
	const char *summary;     /* its line in `nmlc help` */
	const char *about;       /* its paragraph in `nmlc help NAME` */
	const char *rest;        /* what -v calls the time after compiling; NULL: nothing to report */
} commands[NCMDS] = {
	[CMD_RUN] = {"run", "FILE.nml", "train the model of FILE's train block",
		"Compiles FILE and trains the model of its train block: a header, then one line per epoch "
		"with the training loss and the test loss and accuracy after the epoch.", "training"},
	[CMD_CHECK] = {"check", "FILE.nml", "parse and check FILE; diagnostics only",
		"Runs everything up to code generation: parsing, name and arity checks, instantiating the "
		"model with the data's shapes, differentiation and optimizer lowering. Prints diagnostics "
		"only.", NULL},
	[CMD_SHOW] = {"show", "WHAT FILE.nml", "print a compiler stage of FILE",
		"Prints one stage of the compiler for FILE; WHAT is one of --ast, --ir, --grad, --step, "
		"--kernels, --llvm.", "printing"},
	[CMD_GRADCHECK] = {"gradcheck", "FILE.nml", "check the derived gradients numerically",
		"Compiles the loss and its gradient in f64 and compares, for up to 24 elements of every "
		"parameter, the derived gradient with central finite differences on a batch of training "
		"data. Exits 1 if any element fails.", "checking"},
	[CMD_BUILD] = {"build", "FILE.nml -o libNAME.so", "compile the model into a C library",
		"Compiles the train block's model, loss and optimizer ahead of time into the shared library "
		"DIR/libNAME.so, and writes its C API to DIR/NAME.h.", "code generation and linking"},
	[CMD_REPL] = {"repl", "[FILE.nml]", "an interactive session (docs/repl.md)",
		"An interactive session (docs/repl.md). FILE, if given, is loaded first; the options are the "
		"defaults of every :run.", NULL},
	[CMD_SWEEP] = {"sweep", "FILE.nml --set NAME=GRID", "train FILE once per value of a hyperparameter",
		"Compiles FILE's training step once and trains it from the same initial weights and data order "
		"once per value of one optimizer hyperparameter (a run-time value: nothing is compiled again); "
		"prints a table, the best value and the final loss against the value. GRID is LO..HI [log|lin] "
		"[N] (8 values unless N is given) or V1,V2,..., e.g. --set 'lr=1e-4..1e-1 log 8'.", "training"},
	[CMD_PLOT] = {"plot", "LOG.jsonl... -o FILE.svg", "draw JSONL logs as an SVG picture",
		"Draws the logs of nmlc run --log (one curve per file, by epoch) and the exports of the REPL's "
		":export (one curve per run, by step) as one SVG picture with labelled axes and a legend. "
		"Options: -o FILE.svg (required); --y KEY, the value drawn (default train_loss; test_loss, "
		"test_accuracy, ...); --x KEY (default epoch, or step for exports); --linear, a linear y axis "
		"(default logarithmic when every value is above 0); --log-x, a logarithmic x axis.", NULL},
};

typedef enum { OPT_FLAG, OPT_COUNT, OPT_PATH, OPT_SET, OPT_GRID, OPT_SHOW, OPT_HELP } OptKind;

/* A checkpoint records the seed as a JSON number, which --resume reads back as a double: larger
 * seeds would not resume exactly. */
#define SEED_MAX (1L << 53)

/* One row per option and meaning; an option that means something else to another command (--batch
 * is run's batch size, gradcheck's sample count) has a row for each. */
typedef struct OptSpec {
	const char *name, *alias; /* "--quiet", "-q" */
	const char *arg;          /* its value in help and messages; NULL: takes none */
	unsigned cmds;            /* the commands taking it */
	OptKind kind;
	size_t field;             /* where the value goes in Options */
	long lo, hi;              /* OPT_COUNT: the range; INT_MAX where an int keeps it (epochs, threads) */
	const char *help;
} OptSpec;

#define FIELD(f) offsetof(Options, f)
static const OptSpec options[] = {
	{"--epochs", NULL, "N", RUN | SWEEP | REPL, OPT_COUNT, FIELD(epochs), 0, INT_MAX,
	 "epochs (default: the train block's); 0 evaluates the initial parameters"},
	{"--epochs", NULL, "N", BUILD, OPT_COUNT, FIELD(epochs), 0, INT_MAX,
	 "the run length the library's T assumes (default: the train block's)"},
	/* At most INT_MAX rows: the runtime's batch buffers, rows × features × 4 bytes, stay far from
	 * wrapping int64 (--batch 2^62 overflowed them). */
	{"--batch", NULL, "N", RUN | SWEEP | REPL | CHECK, OPT_COUNT, FIELD(batch), 1, INT_MAX, "batch size (default: the train block's)"},
	{"--batch", NULL, "N", GRADCHECK, OPT_COUNT, FIELD(batch), 1, INT_MAX, "samples in the batch (default 4)"},
	{"--batch", NULL, "N", BUILD, OPT_COUNT, FIELD(batch), 1, INT_MAX,
	 "most rows per training step (default: the train block's batch)"},
	{"--seed", NULL, "N", RUN | SWEEP | REPL | GRADCHECK, OPT_COUNT, FIELD(seed), 0, SEED_MAX,
	 "seed of initialization and shuffling (default: the train block's)"},
	{"--seed", NULL, "N", BUILD, OPT_COUNT, FIELD(seed), 0, SEED_MAX, "the library's NAME_SEED (default: the train block's)"},
	{"--threads", NULL, "N", RUN | SWEEP | REPL | GRADCHECK, OPT_COUNT, FIELD(threads), 1, INT_MAX,
	 "threads of the matrix products (default: all cores)"},
	{"--deterministic", NULL, NULL, RUN | SWEEP | REPL | GRADCHECK | BUILD, OPT_FLAG, FIELD(deterministic), 0, 0,
	 "the same bits on any number of threads: each matrix product on one thread (slower for large ones)"},
	{"--limit", NULL, "N", RUN | SWEEP | REPL, OPT_COUNT, FIELD(limit), 1, LONG_MAX, "train on the first N training samples only"},
	{"--set", NULL, "NAME=VALUE", RUN | REPL, OPT_SET, FIELD(sets), 0, 0,
	 "override a hyperparameter of the optimizer, e.g. --set lr=3e-4 (repeatable)"},
	{"--set", NULL, "NAME=GRID", SWEEP, OPT_GRID, FIELD(sets), 0, 0,
	 "the hyperparameter to sweep and its values (one); other --set NAME=VALUE fix a value (repeatable)"},
	{"--set", NULL, "NAME=VALUE", BUILD, OPT_SET, FIELD(sets), 0, 0, "the library's default of a hyperparameter (repeatable)"},
	{"--optimizer", NULL, "EXPR", RUN | SWEEP | CHECK | SHOW | GRADCHECK | BUILD, OPT_PATH, FIELD(optimizer), 0, 0,
	 "use this optimizer instead of the train block's, e.g. --optimizer 'lion(lr = 3e-4)'"},
	{"--ignore-memory", NULL, NULL, RUN | REPL, OPT_FLAG, FIELD(ignore_memory), 0, 0,
	 "train even when the memory estimate exceeds what the system has available"},
	{"--init", NULL, "F", RUN | REPL, OPT_PATH, FIELD(init), 0, 0, "start from the parameters in safetensors file F"},
	{"--save", NULL, "F", RUN | REPL, OPT_PATH, FIELD(save), 0, 0,
	 "after every epoch, write parameters and optimizer state to safetensors file F"},
	{"--resume", NULL, "F", RUN | REPL, OPT_PATH, FIELD(resume), 0, 0, "continue the run saved in F (up to --epochs in all)"},
	{"--log", NULL, "F", RUN | REPL, OPT_PATH, FIELD(log), 0, 0, "write one JSON object per epoch to F"},
	{"--force", NULL, NULL, RUN | REPL, OPT_FLAG, FIELD(force), 0, 0, "replace an existing --log file"},
	{"-o", NULL, "DIR/libNAME.so", BUILD, OPT_PATH, FIELD(output), 0, 0, "the library to write (required); NAME.h goes beside it"},
	{"--cpu", NULL, "NAME", BUILD, OPT_PATH, FIELD(cpu), 0, 0,
	 "compile for LLVM CPU NAME (default: host; x86-64, x86-64-v3, ...)"},
	{"--ast", NULL, NULL, SHOW, OPT_SHOW, FIELD(show), 0, 0, "the syntax tree of the file"},
	{"--ir", NULL, NULL, SHOW, OPT_SHOW, FIELD(show), 0, 0, "the evaluation function: forward pass and loss"},
	{"--grad", NULL, NULL, SHOW, OPT_SHOW, FIELD(show), 0, 0, "forward and backward: the loss and every parameter's gradient"},
	{"--step", NULL, NULL, SHOW, OPT_SHOW, FIELD(show), 0, 0, "the training step: forward, backward and update"},
	{"--kernels", NULL, NULL, SHOW, OPT_SHOW, FIELD(show), 0, 0, "the step's loop nests and library calls after fusion"},
	{"--llvm", NULL, NULL, SHOW, OPT_SHOW, FIELD(show), 0, 0, "the optimized LLVM IR of the kernels"},
	{"--echo", NULL, NULL, REPL, OPT_FLAG, FIELD(echo), 0, 0, "print each input line read from a pipe after its prompt"},
	{"--verbose", "-v", NULL, RUN | CHECK | SHOW | GRADCHECK, OPT_FLAG, FIELD(verbose), 0, 0,
	 "at the end, the time of each phase on stderr"},
	{"--verbose", "-v", NULL, BUILD, OPT_FLAG, FIELD(verbose), 0, 0,
	 "print the C compiler's command line, and the time of each phase"},
	{"--quiet", "-q", NULL, RUN | REPL, OPT_FLAG, FIELD(quiet), 0, 0, "no header, no per-epoch lines, no progress bar"},
	{"--quiet", "-q", NULL, BUILD, OPT_FLAG, FIELD(quiet), 0, 0, "no summary line"},
	{"--help", "-h", NULL, ALL, OPT_HELP, 0, 0, 0, "print this help and exit"},
};
enum { NOPTS = sizeof options / sizeof options[0] };

/* The row of `name` (an option or its alias) for the commands in mask; NULL if none. */
static const OptSpec *find_option(const char *name, unsigned mask)
{
	for (int i = 0; i < NOPTS; i++)
		if ((options[i].cmds & mask)
		    && (!strcmp(name, options[i].name) || (options[i].alias && !strcmp(name, options[i].alias))))
			return &options[i];
	return NULL;
}

static int find_command(const char *name)
{
	for (int i = 0; i < NCMDS; i++)
		if (!strcmp(name, commands[i].name))
			return i;
	return -1;
}

/* ---- help ---- */

enum { HELP_WIDTH = 79, OPTION_COLUMN = 24, COMMAND_COLUMN = 32 };

/* Writes text from column col on, breaking lines at spaces before HELP_WIDTH; continuation lines
 * start at column indent. */
static void put_wrapped(FILE *f, int col, int indent, const char *text)
{
	while (*text) {
		const char *end = text, *brk = NULL;
		while (*end && (col + (end - text) < HELP_WIDTH || !brk)) {
			if (*end == ' ')
				brk = end;
			end++;
		}
		if (!*end)
			brk = end;
		fprintf(f, "%.*s\n", (int)(brk - text), text);
		text = *brk ? brk + 1 : brk;
		if (*text)
			fprintf(f, "%*s", indent, "");
		col = indent;
	}
}

/* "  LEFT   help", help starting in column col (on the next line when LEFT is wider). */
static void put_row(FILE *f, int col, const char *left, const char *help)
{
	int n = fprintf(f, "  %s", left);
	if (n + 2 > col) {
		fputc('\n', f);
		n = 0;
	}
	fprintf(f, "%*s", col - n, "");
	put_wrapped(f, col, col, help);
}

static void put_overview(FILE *f)
{
	fputs("usage: nmlc COMMAND [options] FILE.nml\n\ncommands:\n", f);
	for (int i = 0; i < NCMDS; i++) {
		char left[64];
		snprintf(left, sizeof left, "%s %s", commands[i].name, commands[i].args);
		put_row(f, COMMAND_COLUMN, left, commands[i].summary);
	}
	put_row(f, COMMAND_COLUMN, "help [COMMAND]", "list the commands, or one command's options");
	fputs("\n", f);
	put_wrapped(f, 0, 0, "'nmlc help COMMAND' and 'nmlc COMMAND --help' list a command's options; 'nmlc --version' "
			     "prints the version.");
	put_wrapped(f, 0, 0, "Exit status: 0 success; 1 an error in the program, its data or the run; 2 a bad "
			     "command line; 130 interrupted (Ctrl-C).");
}

static void put_command_help(FILE *f, CmdId cmd)
{
	fprintf(f, "usage: nmlc %s %s [options]\n\n", commands[cmd].name, commands[cmd].args);
	put_wrapped(f, 0, 0, commands[cmd].about);
	fputs("\noptions:\n", f);
	for (int i = 0; i < NOPTS; i++) {
		const OptSpec *s = &options[i];
		if (!(s->cmds & (1u << cmd)))
			continue;
		char left[64];
		snprintf(left, sizeof left, "%s%s%s%s%s", s->alias ? s->alias : "", s->alias ? ", " : "", s->name,
			 s->arg ? " " : "", s->arg ? s->arg : "");
		put_row(f, OPTION_COLUMN, left, s->help);
	}
}

/* ---- usage errors and what might have been meant ---- */

__attribute__((format(printf, 2, 3))) static int usage_error(int cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("nmlc: error: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd >= 0)
		fprintf(stderr, "\n(run 'nmlc help %s' for its options)\n", commands[cmd].name);
	else
		fputs("\n(run 'nmlc help' for the commands)\n", stderr);
	return 2;
}

/* Optimal string alignment distance: insertions, deletions, substitutions and swaps of adjacent
 * characters, the usual typos. Words of 32 characters or more are near nothing. */
static int edit_distance(const char *a, const char *b)
{
	int n = (int)strlen(a), m = (int)strlen(b);
	if (n > 31 || m > 31)
		return INT_MAX;
	int d[32][32];
	for (int i = 0; i <= n; i++)
		d[i][0] = i;
	for (int j = 0; j <= m; j++)
		d[0][j] = j;
	for (int i = 1; i <= n; i++)
		for (int j = 1; j <= m; j++) {
			int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			if (d[i - 1][j] + 1 < v)
				v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	return d[n][m];
}

static const char *undashed(const char *s)
{
	while (*s == '-')
		s++;
	return s;
}

/* The candidate most likely meant by word: the only one that begins with it, else the nearest
 * within a third of its length. Dashes do not count (`-epochs` and `--epoch` both mean --epochs).
 * NULL if nothing is near. */
static const char *closest(const char *word, const char *const *cand, int n)
{
	const char *w = undashed(word), *best = NULL;
	int len = (int)strlen(w), starts = 0;
	for (int i = 0; i < n && len >= 2; i++)
		if (!strncmp(undashed(cand[i]), w, (size_t)len)) {
			best = cand[i];
			starts++;
		}
	if (starts == 1)
		return best;
	best = NULL;
	int bestd = (len + 1) / 3 + 1;
	for (int i = 0; i < n; i++) {
		int d = edit_distance(w, undashed(cand[i]));
		if (d < bestd) {
			bestd = d;
			best = cand[i];
		}
	}
	return best;
}

static int is_name(const char *s, size_t n)
{
	if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return 0;
	for (size_t i = 0; i < n; i++) /* a group's hyperparameter: matrix.lr */
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && !(s[i] == '.' && i + 1 < n && s[i - 1] != '.'))
			return 0;
	return 1;
}

static int is_finite_number(const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end || isspace((unsigned char)*s) || !isfinite(v))
		return 0;
	*out = v;
	return 1;
}

static int unknown_command(const char *name)
{
	size_t n = strlen(name);
	if (n > 4 && !strcmp(name + n - 4, ".nml"))
		return usage_error(-1, "unknown command '%s'; did you mean 'nmlc run %s'?", name, name);
	const char *cand[NCMDS + 1];
	for (int i = 0; i < NCMDS; i++)
		cand[i] = commands[i].name;
	cand[NCMDS] = "help";
	if (name[0] == '-' && find_option(name, ALL))
		return usage_error(-1, "'%s' goes after the command: nmlc COMMAND [options] FILE.nml", name);
	if (name[0] == '-') {
		static const char *const top[] = {"--help", "--version"};
		const char *best = closest(name, top, 2);
		return best ? usage_error(-1, "unknown option '%s'; did you mean '%s'?", name, best)
			    : usage_error(-1, "unknown option '%s'", name);
	}
	const char *best = closest(name, cand, NCMDS + 1);
	return best ? usage_error(-1, "unknown command '%s'; did you mean '%s'?", name, best)
		    : usage_error(-1, "unknown command '%s'", name);
}

/* name is no option of cmd; next is its would-be value, or NULL. */
static int unknown_option(CmdId cmd, const char *name, const char *next)
{
	unsigned mask = 1u << cmd;
	if (find_option(name, ALL & ~mask)) {
		char owners[128] = "";
		for (int i = 0; i < NCMDS; i++)
			if (find_option(name, 1u << i)) {
				size_t k = strlen(owners);
				snprintf(owners + k, sizeof owners - k, "%s%s", k ? ", " : "", commands[i].name);
			}
		return usage_error(cmd, "%s is an option of nmlc %s, not of nmlc %s", name, owners, commands[cmd].name);
	}
	/* With a number after it, the options taking a number come first (`--epoch 3`); then any; then
	 * the hyperparameter it may be (`--lr 0.1`). */
	double v;
	int numeric = next && is_finite_number(next, &v);
	const char *cand[2 * NOPTS], *best = NULL;
	for (int pass = !numeric; pass < 2 && !best; pass++) {
		int n = 0;
		for (int i = 0; i < NOPTS; i++)
			if ((options[i].cmds & mask) && (pass || options[i].kind == OPT_COUNT)) {
				cand[n++] = options[i].name;
				if (options[i].alias)
					cand[n++] = options[i].alias;
			}
		best = closest(name, cand, n);
	}
	if (best)
		return usage_error(cmd, "unknown option '%s'; did you mean '%s'?", name, best);
	if (numeric && find_option("--set", mask) && name[1] == '-' && is_name(name + 2, strlen(name + 2)))
		return usage_error(cmd, "unknown option '%s'; did you mean '--set %s=%s'?", name, name + 2, next);
	return usage_error(cmd, "unknown option '%s'", name);
}

/* ---- the command line ---- */

enum { WANTS_HELP = -1 };

/* NAME=NUMBER as session.c applies it: a name, and a finite number strtod reads whole. Whether the
 * optimizer has that hyperparameter is known only after compiling (an error, exit 1, then). */
static int check_set(CmdId cmd, const char *v)
{
	const char *eq = strchr(v, '=');
	double x;
	if (!eq)
		return usage_error(cmd, "--set wants NAME=NUMBER, got '%s'", v);
	if (!is_name(v, (size_t)(eq - v)))
		return usage_error(cmd, "--set wants NAME=NUMBER, and '%.*s' in '%s' is not a name", (int)(eq - v), v, v);
	if (!is_finite_number(eq + 1, &x))
		return usage_error(cmd, "--set wants NAME=NUMBER, and '%s' in '%s' is not a finite number", eq + 1, v);
	return 0;
}

static int take_value(CmdId cmd, const OptSpec *s, const char *val, Options *o)
{
	char *at = (char *)o + s->field;
	if (s->kind == OPT_COUNT) {
		char *end;
		errno = 0;
		int digits = isdigit((unsigned char)val[0]);
		long v = digits ? strtol(val, &end, 10) : -1;
		if (digits && !*end && (errno == ERANGE || v > s->hi))
			return usage_error(cmd, "%s wants a whole number of at most %ld, got '%s'", s->name, s->hi, val);
		if (!digits || *end || v < s->lo)
			return usage_error(cmd, "%s wants a whole number of at least %ld, got '%s'", s->name, s->lo, val);
		*(long *)at = v;
	} else if (s->kind == OPT_PATH) {
		if (!*val)
			return usage_error(cmd, "%s wants %s, got ''", s->name, s->arg);
		*(const char **)at = val;
	} else {
		if (s->kind == OPT_GRID && (strstr(val, "..") || strchr(val, ','))) {
			char name[64], err[256];
			double v[LAB_MAX_GRID];
			int lg;
			if (lab_grid(val, name, sizeof name, v, LAB_MAX_GRID, &lg, err, sizeof err) < 0)
				return usage_error(cmd, "--set %s: %s", val, err);
		} else if (check_set(cmd, val))
			return 2;
		if (o->nsets == (int)(sizeof o->sets / sizeof o->sets[0]))
			return usage_error(cmd, "more than %d --set options", o->nsets);
		o->sets[o->nsets++] = val;
	}
	return 0;
}

/* argv[2..] into o for command cmd: 0, 2 after a usage error, or WANTS_HELP. */
static int parse_args(CmdId cmd, int argc, char **argv, Options *o)
{
	unsigned mask = 1u << cmd;
	*o = (Options){.cmd = commands[cmd].name, .epochs = -1, .batch = -1, .seed = -1, .threads = -1, .limit = -1};
	/* --help among the options asks for help, whatever else is wrong. */
	for (int i = 2; i < argc && strcmp(argv[i], "--"); i++) {
		const OptSpec *s = find_option(argv[i], mask);
		if (s && s->kind == OPT_HELP)
			return WANTS_HELP;
		i += s && s->arg;
	}
	int only_files = 0;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (only_files || a[0] != '-' || !a[1]) {
			char dashed[64];
			snprintf(dashed, sizeof dashed, "--%s", a);
			if (!only_files && !o->file && find_option(dashed, mask) && access(a, F_OK))
				return usage_error(cmd, "'%s' is not a file; did you mean '%s'?", a, dashed);
			if (o->file)
				return usage_error(cmd, "more than one file: '%s' and '%s'", o->file, a);
			o->file = a;
			continue;
		}
		if (!strcmp(a, "--")) {
			only_files = 1;
			continue;
		}
		/* --name=value, as well as --name value */
		char name[64];
		const char *eq = a[1] == '-' ? strchr(a, '=') : NULL, *val = eq ? eq + 1 : NULL;
		snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
		const OptSpec *s = find_option(name, mask);
		if (!s)
			return unknown_option(cmd, name, val ? val : i + 1 < argc ? argv[i + 1] : NULL);
		if (!s->arg) {
			if (val)
				return usage_error(cmd, "%s takes no value, got '%s'", s->name, a);
			if (s->kind == OPT_SHOW && o->show && strcmp(o->show, s->name + 2))
				return usage_error(cmd, "show prints one stage: --%s or %s, not both", o->show, s->name);
			if (s->kind == OPT_SHOW)
				o->show = s->name + 2;
			else
				*(int *)((char *)o + s->field) = 1;
			continue;
		}
		if (!val) {
			val = i + 1 < argc ? argv[++i] : NULL;
			/* `--save --epochs 3`: the value was forgotten, not named --epochs */
			if (!val || (val[0] == '-' && find_option(val, ALL)))
				return usage_error(cmd, "%s needs a value: %s %s", s->name, s->name, s->arg);
		}
		if (take_value(cmd, s, val, o))
			return 2;
	}
	if (!o->file && cmd != CMD_REPL)
		return usage_error(cmd, "nmlc %s needs a FILE.nml", o->cmd);
	if (cmd == CMD_BUILD && !o->output)
		return usage_error(cmd, "nmlc build needs -o libNAME.so");
	if (o->init && o->resume)
		return usage_error(cmd, "give --init or --resume, not both");
	if (cmd == CMD_SWEEP && !lab_grid_count(o))
		return usage_error(cmd, "nmlc sweep needs one --set NAME=GRID, such as --set 'lr=1e-4..1e-1 log 8'");
	if (cmd == CMD_SWEEP && lab_grid_count(o) > 1)
		return usage_error(cmd, "nmlc sweep sweeps one hyperparameter: give one --set NAME=GRID");
	if (cmd == CMD_SHOW && !o->show)
		return usage_error(cmd, "nmlc show needs one of --ast, --ir, --grad, --step, --kernels, --llvm");
	return 0;
}

static int cmd_help(int argc, char **argv)
{
	if (argc > 1)
		return usage_error(-1, "help takes one command, got '%s %s'", argv[0], argv[1]);
	if (argc == 0 || !strcmp(argv[0], "help")) {
		put_overview(stdout);
		return 0;
	}
	int cmd = find_command(argv[0]);
	if (cmd < 0)
		return unknown_command(argv[0]);
	put_command_help(stdout, (CmdId)cmd);
	return 0;
}

/* -v: where the time went, on stderr, so that stdout stays what scripts read. */
static void report_times(const Compiler *c, CmdId cmd, double total_ms)
{
	double rest = total_ms - c->ms_front - c->ms_data - c->ms_lower - c->ms_jit;
	fprintf(stderr, "nmlc: time: front end %.1f ms, data %.1f ms, lowering %.1f ms", c->ms_front, c->ms_data,
		c->ms_lower);
	if (c->ms_jit > 0)
		fprintf(stderr, ", JIT %.1f ms", c->ms_jit);
	if (commands[cmd].rest)
		fprintf(stderr, ", %s %.1f ms", commands[cmd].rest, rest > 0 ? rest : 0);
	fprintf(stderr, "; %.1f ms in all\n", total_ms);
}

/* ---- build: ahead of time, into a shared library (aot.c) ---- */

static int cmd_build(Compiler *c, const Options *o)
{
	if (session_apply_options(c, o))
		return 1;
	AotOptions a = {.output = o->output, .cpu = o->cpu, .verbose = o->verbose, .quiet = o->quiet};
	return aot_build(c, &a);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		put_overview(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(argc - 2, argv + 2);
	if (!strcmp(argv[1], "--version")) {
		if (argc > 2)
			return usage_error(-1, "--version takes nothing after it, got '%s'", argv[2]);
		printf("nmlc %s\n", NML_VERSION);
		return 0;
	}
	int cmd = find_command(argv[1]);
	if (cmd < 0)
		return unknown_command(argv[1]);
	if (cmd == CMD_PLOT) {
		for (int i = 2; i < argc; i++)
			if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
				put_command_help(stdout, CMD_PLOT);
				return 0;
			}
		return plot_main(argc - 2, argv + 2);
	}
	Options o;
	int rc = parse_args((CmdId)cmd, argc, argv, &o);
	if (rc == WANTS_HELP) {
		put_command_help(stdout, (CmdId)cmd);
		return 0;
	}
	if (rc)
		return rc;
	if (cmd == CMD_RUN || cmd == CMD_REPL || cmd == CMD_SWEEP)
		pick_blas_kernels(argv);
	if (o.threads > 0)
		openblas_set_num_threads((int)o.threads);
	if (cmd == CMD_REPL)
		return repl_main(&o);

	double t0 = drv_now_ms();
	Compiler c;
	drv_init(&c);
	c.verbose = o.verbose;
	int errs;
	if (cmd == CMD_SHOW && !strcmp(o.show, "ast"))
		errs = drv_parse(&c, o.file);
	else
		c.optimizer_src = o.optimizer, errs = drv_front(&c, o.file);
	if (errs) {
		int n = diag_shown();
		if (n)
			fprintf(stderr, "%d error%s\n", n, n == 1 ? "" : "s");
		rc = 1;
	} else if (cmd == CMD_CHECK)
		rc = session_check(&c, &o);
	else if (cmd == CMD_SHOW)
		rc = session_show(&c, &o);
	else if (cmd == CMD_GRADCHECK)
		rc = session_gradcheck(&c, &o);
	else if (cmd == CMD_BUILD)
		rc = cmd_build(&c, &o);
	else if (cmd == CMD_SWEEP)
		rc = lab_sweep_main(&c, &o);
	else
		rc = session_run(&c, &o);
	if (o.verbose)
		report_times(&c, (CmdId)cmd, drv_now_ms() - t0);
	drv_free(&c);
	return rc;
}
