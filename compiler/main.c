/* main.c: the nmlc command line. */
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aot.h"
#include "config.h"
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

static const char usage[] =
	"usage: nmlc <command> [options] FILE.nml\n"
	"\n"
	"commands:\n"
	"  run FILE        train the model of FILE's train block\n"
	"  check FILE      parse and check FILE (names, arity, shapes); diagnostics only\n"
	"  show WHAT FILE  print a compiler stage: --ast, --ir (forward), --grad (forward and\n"
	"                  backward), --step (forward, backward and update), --kernels (the\n"
	"                  step's loop nests), --llvm (the kernels' LLVM IR)\n"
	"  gradcheck FILE  compare the derived gradients with central finite differences (f64)\n"
	"  build FILE -o libNAME.so\n"
	"                  compile the model to a shared library and its C API (NAME.h)\n"
	"  repl [FILE]     an interactive session: definitions, :run, :show (docs/repl.md)\n"
	"\n"
	"options of run:\n"
	"  --epochs N          epochs (default: the train block's); 0 evaluates only\n"
	"  --batch N           batch size (default: the train block's)\n"
	"  --seed N            seed of initialization and shuffling\n"
	"  --threads N         threads for matrix products (default: all cores)\n"
	"  --limit N           train on the first N training samples only\n"
	"  --set NAME=VALUE    override a hyperparameter of the optimizer, e.g. --set lr=3e-4\n"
	"  --init F            start from the parameters in safetensors file F\n"
	"  --save F            write parameters and optimizer state to safetensors file F\n"
	"                      after every epoch\n"
	"  --resume F          continue the run saved in F (up to --epochs in all)\n"
	"  --log F             write one JSON object per epoch to F\n"
	"  --verbose           report compile times\n"
	"  --quiet             no per-epoch lines\n"
	"options of gradcheck: --seed N, --batch N (samples, default 4)\n"
	"options of repl: those of run, the defaults of every :run; --echo prints each input\n"
	"  line read from a pipe after its prompt\n"
	"options of build:\n"
	"  -o FILE.so          the library to write (required); the header goes beside it\n"
	"  --batch N           most rows per training step (default: the train block's batch)\n"
	"  --cpu NAME          compile for LLVM CPU NAME (default: host; x86-64, x86-64-v3, ...)\n"
	"  --epochs N, --seed N, --set NAME=VALUE\n"
	"                      the library's defaults: T (epochs times batches per epoch), NAME_SEED,\n"
	"                      hyperparameters\n"
	"\n"
	"  nmlc --help, nmlc --version\n";

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "nmlc: error: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(run 'nmlc --help' for usage)\n");
	return 2;
}

static int parse_long(const char *s, long lo, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo)
		return 0;
	*out = v;
	return 1;
}

static int parse_args(int argc, char **argv, Options *o)
{
	*o = (Options){.epochs = -1, .batch = -1, .seed = -1, .threads = -1, .limit = -1};
	o->cmd = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		long *num = !strcmp(a, "--epochs") ? &o->epochs : !strcmp(a, "--batch") ? &o->batch
			: !strcmp(a, "--seed") ? &o->seed : !strcmp(a, "--threads") ? &o->threads
			: !strcmp(a, "--limit") ? &o->limit : NULL;
		const char **str = !strcmp(a, "--init") ? &o->init : !strcmp(a, "--save") ? &o->save
			: !strcmp(a, "--log") ? &o->log : !strcmp(a, "--resume") ? &o->resume
			: !strcmp(a, "-o") ? &o->output : !strcmp(a, "--cpu") ? &o->cpu : NULL;
		if (num || str || !strcmp(a, "--set")) {
			if (!val)
				return usage_error("%s needs a value", a);
			i++;
			if (num && !parse_long(val, num == &o->epochs || num == &o->seed ? 0 : 1, num))
				return usage_error("bad number '%s'", val);
			if (str)
				*str = val;
			if (!num && !str) {
				if (o->nsets == 64)
					return usage_error("too many %s options", a);
				o->sets[o->nsets++] = val;
			}
		} else if (!strcmp(a, "--verbose")) {
			o->verbose = 1;
		} else if (!strcmp(a, "--quiet")) {
			o->quiet = 1;
		} else if (!strcmp(o->cmd, "repl") && !strcmp(a, "--echo")) {
			o->echo = 1;
		} else if (!strcmp(o->cmd, "show") && (!strcmp(a, "--ast") || !strcmp(a, "--ir") || !strcmp(a, "--grad")
						     || !strcmp(a, "--step") || !strcmp(a, "--kernels")
						     || !strcmp(a, "--llvm"))) {
			o->show = a + 2;
		} else if (a[0] == '-' && a[1]) {
			return usage_error("unknown option '%s'", a);
		} else if (o->file) {
			return usage_error("more than one file: '%s'", a);
		} else {
			o->file = a;
		}
	}
	if (!o->file && strcmp(o->cmd, "repl"))
		return usage_error("%s needs a FILE.nml", o->cmd);
	if (!strcmp(o->cmd, "build") && !o->output)
		return usage_error("%s needs -o libNAME.so", o->cmd);
	if (o->init && o->resume)
		return usage_error("%s: give --init or --resume, not both", o->cmd);
	if (!strcmp(o->cmd, "show") && !o->show)
		return usage_error("%s needs one of --ast, --ir, --grad, --step, --kernels, --llvm", "show");
	return 0;
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
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("nmlc %s\n", NML_VERSION);
		return 0;
	}
	const char *cmds[] = {"run", "check", "show", "gradcheck", "build", "repl"};
	int known = 0;
	for (int i = 0; i < 6; i++)
		known |= !strcmp(argv[1], cmds[i]);
	if (!known)
		return usage_error("unknown command '%s'", argv[1]);
	Options o;
	int rc = parse_args(argc, argv, &o);
	if (rc)
		return rc;
	if (!strcmp(o.cmd, "run") || !strcmp(o.cmd, "repl"))
		pick_blas_kernels(argv);
	if (o.threads > 0)
		openblas_set_num_threads((int)o.threads);
	if (!strcmp(o.cmd, "repl"))
		return repl_main(&o);

	Compiler c;
	drv_init(&c);
	c.verbose = o.verbose;
	int errs;
	if (!strcmp(o.cmd, "show") && !strcmp(o.show, "ast"))
		errs = drv_parse(&c, o.file);
	else
		errs = drv_front(&c, o.file);
	if (errs) {
		int n = diag_shown();
		if (n)
			fprintf(stderr, "%d error%s\n", n, n == 1 ? "" : "s");
		drv_free(&c);
		return 1;
	}
	if (!strcmp(o.cmd, "check"))
		rc = 0;
	else if (!strcmp(o.cmd, "show"))
		rc = session_show(&c, &o);
	else if (!strcmp(o.cmd, "gradcheck"))
		rc = session_gradcheck(&c, &o);
	else if (!strcmp(o.cmd, "build"))
		rc = cmd_build(&c, &o);
	else
		rc = session_run(&c, &o);
	drv_free(&c);
	return rc;
}

