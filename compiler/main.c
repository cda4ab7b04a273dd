/* main.c: the nmlc command line. */
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aot.h"
#include "codegen.h"
#include "config.h"
#include "driver.h"
#include "interp.h"
#include "jit.h"
#include "optim.h"
#include "main.h"
#include "repl.h"

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

/* ---- compiling kernels ---- */

typedef struct Build {
	Compiler *c;
	CgKernel k[2];
	int nk;
	CgType type;
	int64_t max_batch;
	char *text; /* with --llvm: the optimized module */
} Build;

static LLVMModuleRef build_module(LLVMContextRef ctx, void *user)
{
	Build *b = user;
	return cg_module(ctx, "nml", &b->c->mod, b->k, b->nk, b->type, b->max_batch);
}

static Jit *compile(Compiler *c, Build *b)
{
	double t0 = drv_now_ms();
	char *err = NULL;
	Jit *j = jit_create(&err);
	if (!j || jit_add(j, build_module, b, &err)) {
		fprintf(stderr, "nmlc: error: code generation failed: %s\n", err ? err : "?");
		free(err);
		if (j)
			jit_destroy(j);
		return NULL;
	}
	c->ms_jit += drv_now_ms() - t0;
	return j;
}

static void *lookup(Jit *j, const char *name)
{
	char *err = NULL;
	void *p = jit_lookup(j, name, &err);
	if (!p)
		die("kernel %s not found: %s", name, err ? err : "?");
	return p;
}

/* ---- hyperparameters ---- */

static int apply_sets(Compiler *c, const Options *o)
{
	int bad = 0;
	for (int i = 0; i < o->nsets; i++) {
		const char *eq = strchr(o->sets[i], '=');
		char *end = NULL;
		double v = eq ? strtod(eq + 1, &end) : 0;
		if (!eq || eq == o->sets[i] || end == eq + 1 || *end || !isfinite(v)) {
			fprintf(stderr, "nmlc: error: --set wants NAME=NUMBER, got '%s'\n", o->sets[i]);
			bad = 1;
			continue;
		}
		const char *name = intern(o->sets[i], (size_t)(eq - o->sets[i]));
		int h = ir_find_hparam(&c->mod, name);
		if (optim_is_schedule(&c->lower, name)) {
			fprintf(stderr, "nmlc: error: --set %s: '%s' is a schedule in the train block; edit it there\n",
				o->sets[i], name);
			bad = 1;
			continue;
		}
		if (h < 0) {
			fprintf(stderr, "nmlc: error: --set %s: the optimizer has no hyperparameter '%.*s' (it has:",
				o->sets[i], (int)(eq - o->sets[i]), o->sets[i]);
			for (int k = 0; k < c->mod.nhparams; k++)
				fprintf(stderr, " %s", c->mod.hparams[k].name);
			fprintf(stderr, ")\n");
			bad = 1;
			continue;
		}

		c->mod.hparams[h].value = v;
	}
	return bad;
}

static float *alloc_floats(size_t n)
{
	float *p = aligned_alloc(64, ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63);
	if (!p)
		die("out of memory");
	memset(p, 0, (n ? n : 1) * sizeof(float));
	return p;
}

static void to_floats(const double *d, float *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		f[i] = (float)d[i];
}

static void describe(const Compiler *c)
{
	const IrModule *m = &c->mod;
	size_t count = 0;
	for (int i = 0; i < m->nparams; i++)
		count += (size_t)ir_shape_numel(m->params[i].shape, 1);
	printf("model      %s: %zu parameters in %d tensors\n", lower_model_name(&c->lower), count, m->nparams);
	printf("optimizer  ");
	optim_describe(stdout, &c->lower, &c->cfg.optimizer);
	int T = ir_find_hparam(m, intern_cstr("T"));
	if (T >= 0)
		printf(", T=%g steps", m->hparams[T].value);
	printf("\ndata       %lld training and %lld test samples, %lld features", (long long)c->train.n,
	       (long long)c->test.n, (long long)c->train.xdim);
	if (m->classes)
		printf(", %lld classes", (long long)m->classes);
	printf("; batch %lld, epochs %d, seed %llu\n", (long long)c->cfg.batch, c->cfg.epochs,
	       (unsigned long long)c->cfg.seed);
}

/* ---- training ---- */

/* The buffers of a run, and what a checkpoint of it holds: every parameter, then every state
 * tensor, with the run's position (epoch, step, seed) and hyperparameters as metadata. */
typedef struct Run {
	Compiler *c;
	const Options *o;
	float *params, *grads, *state;
	double *hparams;
	NmlTensorRef *refs;
	int nrefs;
	float *snap_params, *snap_state; /* at the start of the epoch being trained */
	int snap_epoch;                  /* epochs done at the snapshot */
	int64_t snap_step;
} Run;

static void ref_slots(NmlTensorRef *t, const IrSlot *slots, int n, float *block)
{
	for (int i = 0; i < n; i++) {
		t[i] = (NmlTensorRef){.name = slots[i].name, .rank = slots[i].shape.rank, .data = block + slots[i].offset};
		for (int k = 0; k < slots[i].shape.rank; k++)
			t[i].shape[k] = slots[i].shape.dim[k];
	}
}

static void run_init(Run *r, Compiler *c, const Options *o)
{
	const IrModule *m = &c->mod;
	*r = (Run){.c = c, .o = o, .nrefs = m->nparams + m->nstates};
	r->params = alloc_floats(m->param_size);
	r->grads = alloc_floats(m->param_size);
	r->state = alloc_floats(m->state_size);
	r->hparams = calloc((size_t)m->nhparams + 1, sizeof *r->hparams);
	double *tmp = malloc(((m->param_size > m->state_size ? m->param_size : m->state_size) + 1) * sizeof *tmp);
	drv_init_slots(m->params, m->nparams, m->param_size, c->cfg.seed, 0, tmp);
	to_floats(tmp, r->params, m->param_size);
	drv_init_slots(m->states, m->nstates, m->state_size, c->cfg.seed, 1, tmp);
	to_floats(tmp, r->state, m->state_size);
	free(tmp);
	r->snap_params = alloc_floats(m->param_size);
	r->snap_state = alloc_floats(m->state_size);
	r->refs = calloc((size_t)r->nrefs + 1, sizeof *r->refs);
	ref_slots(r->refs, m->params, m->nparams, r->params);
	ref_slots(r->refs + m->nparams, m->states, m->nstates, r->state);
}

static void run_snapshot(Run *r, int epoch, int64_t step)
{
	const IrModule *m = &r->c->mod;
	memcpy(r->snap_params, r->params, m->param_size * sizeof *r->params);
	memcpy(r->snap_state, r->state, m->state_size * sizeof *r->state);
	r->snap_epoch = epoch;
	r->snap_step = step;
}

static void run_free(Run *r)
{
	free(r->snap_params);
	free(r->snap_state);
	free(r->params);
	free(r->grads);
	free(r->state);
	free(r->hparams);
	free(r->refs);
}

static int run_save(Run *r, int epoch, int64_t step, char *err, size_t errlen)
{
	const IrModule *m = &r->c->mod;
	enum { MAXMETA = 67 };
	NmlMeta meta[MAXMETA];
	char text[MAXMETA][2][64];
	int n = 0;
	snprintf(text[n][1], 64, "%d", epoch);
	meta[n] = (NmlMeta){"epoch", text[n][1]}, n++;
	snprintf(text[n][1], 64, "%lld", (long long)step);
	meta[n] = (NmlMeta){"step", text[n][1]}, n++;
	snprintf(text[n][1], 64, "%llu", (unsigned long long)r->c->cfg.seed);
	meta[n] = (NmlMeta){"seed", text[n][1]}, n++;
	for (int i = 0; i < m->nhparams && n < MAXMETA; i++, n++) {
		snprintf(text[n][0], 64, "hparam.%s", m->hparams[i].name);
		snprintf(text[n][1], 64, "%.17g", m->hparams[i].value);
		meta[n] = (NmlMeta){text[n][0], text[n][1]};
	}
	return nml_ckpt_save_meta(r->o->save, r->refs, r->nrefs, meta, n, err, errlen);
}

/* After every epoch: an interrupted run keeps its last finished epoch, and can --resume from it. */
static int after_epoch(NmlTrainer *tr, const NmlEpochStats *s, char *err, size_t errlen)
{
	Run *r = tr->user;
	run_snapshot(r, s->epoch, tr->steps_done);
	return r->o->save ? run_save(r, s->epoch, tr->steps_done, err, errlen) : 0;
}

/* The loss stopped being finite: replay the epoch from its snapshot through the interpreter, op by
 * op, and point at the first op whose result is not finite although its operands are. */
static void explain_divergence(Run *r, const NmlTrainer *tr)
{
	Compiler *c = r->c;
	const IrModule *m = &c->mod;
	const NmlData *d = tr->train;
	float *params = alloc_floats(m->param_size), *state = alloc_floats(m->state_size);
	memcpy(params, r->snap_params, m->param_size * sizeof *params);
	memcpy(state, r->snap_state, m->state_size * sizeof *state);
	int64_t *idx = malloc((size_t)d->n * sizeof *idx), ycols = d->ydim ? d->ydim : 1;
	float *x = alloc_floats((size_t)(tr->batch * d->xdim)), *y = alloc_floats((size_t)(tr->batch * ycols));
	float loss = 0;
	nml_epoch_order(tr->seed, r->snap_epoch + 1, idx, d->n);
	int64_t step = r->snap_step, start = 0;
	int origin = -1;
	for (; step < tr->steps_done && origin < 0; start += tr->batch) {
		int64_t n = d->n - start < tr->batch ? d->n - start : tr->batch;
		nml_data_gather(d, idx + start, n, x, y);
		NmlArgs a = {.params = params, .grads = r->grads, .state = state, .x = x, .y = y,
			     .hparams = r->hparams, .loss = &loss, .n = n, .t = (double)++step};
		origin = interp_run(m, c->step, &a, 1);
	}
	if (origin >= 0) {
		const IrInst *in = &c->step->inst[origin];
		char sh[64];
		diag_note(in->loc, "the first value that is not finite: %s %s at step %lld, from finite operands",
			  ir_op_name(in->op), ir_shape_str(in->shape, sh, sizeof sh), (long long)step);
	}
	free(params);
	free(state);
	free(idx);
	free(x);
	free(y);
}

static int meta_number(const char *path, const char *key, double *v, char *err, size_t errlen)
{
	char text[64], *end;
	int rc = nml_ckpt_meta(path, key, text, sizeof text, err, errlen);
	if (rc == 1)
		snprintf(err, errlen, "checkpoint %s has no '%s' (was it written by nmlc run --save?)", path, key);
	if (rc)
		return -1;
	*v = strtod(text, &end);
	if (end == text || *end) {
		snprintf(err, errlen, "checkpoint %s: '%s' is not a number", path, key);
		return -1;
	}
	return 0;
}

/* --resume: parameters, state, position and hyperparameters from a checkpoint of this model. */
static int run_resume(Run *r, NmlTrainer *tr, char *err, size_t errlen)
{
	Compiler *c = r->c;
	const char *path = r->o->resume;
	double epoch, step, seed;
	if (nml_ckpt_load(path, r->refs, r->nrefs, err, errlen) || meta_number(path, "epoch", &epoch, err, errlen)
	    || meta_number(path, "step", &step, err, errlen) || meta_number(path, "seed", &seed, err, errlen))
		return -1;
	tr->epochs_done = (int)epoch;
	tr->steps_done = (int64_t)step;
	if (r->o->seed < 0)
		tr->seed = c->cfg.seed = (uint64_t)seed;
	for (int i = 0; i < c->mod.nhparams; i++) {
		char key[96];
		double v;
		if (c->mod.hparams[i].name == intern_cstr("T"))
			continue; /* the length of this run, from --epochs */
		snprintf(key, sizeof key, "hparam.%s", c->mod.hparams[i].name);
		if (meta_number(path, key, &v, err, errlen) == 0)
			c->mod.hparams[i].value = v;
	}
	return 0;
}

/* The first Ctrl-C stops training after the current batch (the last finished epoch stays saved);
 * a second one ends nmlc at once. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	interrupted = 1;
	signal(sig, SIG_DFL);
}

static int check_writable(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + 1 : 1, slash ? path : ".");
	if (access(dir, W_OK) == 0)
		return 0;
	fprintf(stderr, "nmlc: error: cannot write '%s': directory '%s': %s\n", path, dir, strerror(errno));
	return -1;
}

static int evaluate_only(NmlTrainer *tr)
{
	double loss, acc;
	if (!tr->test || nml_evaluate(tr, tr->test, &loss, &acc)) {
		fprintf(stderr, "nmlc: error: --epochs 0 evaluates the test data, and there is none\n");
		return 1;
	}
	if (isnan(acc))
		printf("test_loss %.4f  test_acc -\n", loss);
	else
		printf("test_loss %.4f  test_acc %.4f\n", loss, acc);
	return 0;
}

/* --batch, --epochs, --seed and --limit over the train block's settings, and T, the run's length
 * in steps, which schedules read. */
static void apply_run_options(Compiler *c, const Options *o)
{
	if (o->batch > 0)
		c->cfg.batch = o->batch;
	if (o->epochs >= 0)
		c->cfg.epochs = (int)o->epochs;
	if (o->seed >= 0)
		c->cfg.seed = (uint64_t)o->seed;
	if (o->limit > 0 && o->limit < c->train.n)
		c->train.n = o->limit; /* the first rows; the buffer keeps its size */
	int T = ir_find_hparam(&c->mod, intern_cstr("T"));
	if (T >= 0)
		c->mod.hparams[T].value = (double)c->cfg.epochs * (double)((c->train.n + c->cfg.batch - 1) / c->cfg.batch);
}

static int cmd_run(Compiler *c, const Options *o)
{
	apply_run_options(c, o);
	if (o->save && check_writable(o->save)) /* fail before training, not after */
		return 1;
	Build b = {.c = c, .k = {{"nml_step", c->step, 0}, {"nml_eval", c->eval, 0}}, .nk = 2,
		   .type = CG_F32, .max_batch = c->cfg.batch};
	interrupted = 0;
	void (*previous)(int) = signal(SIGINT, on_interrupt);
	Jit *j = compile(c, &b);
	if (!j) {
		signal(SIGINT, previous);
		return 1;
	}
	Run r;
	run_init(&r, c, o);
	NmlTrainer tr = {
		.step = (NmlKernel)lookup(j, "nml_step"), .eval = (NmlKernel)lookup(j, "nml_eval"),
		.params = r.params, .grads = r.grads, .state = r.state, .hparams = r.hparams,
		.step_work = b.k[0].work_bytes, .eval_work = b.k[1].work_bytes, .out_dim = c->mod.out_dim,
		.batch = c->cfg.batch, .epochs = c->cfg.epochs, .seed = c->cfg.seed,
		.train = &c->train, .test = c->test.n ? &c->test : NULL,
		.progress = isatty(STDERR_FILENO) && !o->quiet, .quiet = o->quiet,
		.after_epoch = after_epoch, .user = &r, .interrupt = &interrupted,
	};
	char err[512];
	int rc = 0;
	if ((o->init && nml_ckpt_load(o->init, r.refs, c->mod.nparams, err, sizeof err))
	    || (o->resume && run_resume(&r, &tr, err, sizeof err))) {
		fprintf(stderr, "nmlc: error: %s\n", err);
		rc = 1;
	}
	if (!rc && apply_sets(c, o)) /* after --resume, so the command line wins */
		rc = 1;
	if (!rc && o->log && !(tr.log = fopen(o->log, "w"))) {
		fprintf(stderr, "nmlc: error: cannot write log '%s': %s\n", o->log, strerror(errno));
		rc = 1;
	}
	if (!rc) {
		for (int i = 0; i < c->mod.nhparams; i++)
			r.hparams[i] = c->mod.hparams[i].value;
		if (!o->quiet) {
			describe(c);
			printf("compiled   in %.0f ms (front end %.1f ms, lowering %.1f ms, JIT %.1f ms); data loaded in %.0f ms\n",
			       c->ms_front + c->ms_lower + c->ms_jit, c->ms_front, c->ms_lower, c->ms_jit, c->ms_data);
			if (o->resume)
				printf("resumed    from %s after epoch %d, step %lld\n", o->resume, tr.epochs_done,
				       (long long)tr.steps_done);
		}
		fflush(stdout);
		NmlEpochStats last;
		run_snapshot(&r, tr.epochs_done, tr.steps_done);
		if (o->resume && tr.epochs_done >= tr.epochs && tr.epochs > 0)
			printf("nothing to do: %s has finished %d epochs (ask for more with --epochs)\n", o->resume,
			       tr.epochs_done);
		else if (tr.epochs == 0)
			rc = evaluate_only(&tr);
		else if (nml_train(&tr, &last, err, sizeof err)) {
			fprintf(stderr, "nmlc: %s%s\n", tr.interrupted ? "" : "error: ", err);
			if (tr.diverged)
				explain_divergence(&r, &tr);
			if (tr.interrupted && o->save && tr.epochs_done > 0)
				fprintf(stderr, "nmlc: %s holds epoch %d; continue with --resume %s\n", o->save,
					tr.epochs_done, o->save);
			rc = tr.interrupted ? 130 : 1;
		}
		if (!rc && o->save && tr.epochs == 0 && run_save(&r, 0, 0, err, sizeof err)) {
			fprintf(stderr, "nmlc: error: %s\n", err);
			rc = 1;
		}
	}
	if (tr.log && fclose(tr.log)) {
		fprintf(stderr, "nmlc: error: writing log '%s': %s\n", o->log, strerror(errno));
		rc = 1;
	}
	run_free(&r);
	jit_destroy(j);
	signal(SIGINT, previous);
	return rc;
}

/* ---- gradient check ---- */

static double eval_loss(NmlKernel k, NmlArgs *a)
{
	double loss = 0;
	a->loss = &loss;
	k(a);
	return loss;
}

static int cmd_gradcheck(Compiler *c, const Options *o)
{
	const IrModule *m = &c->mod;
	int64_t n = o->batch > 0 ? o->batch : 4;
	if (n > c->train.n)
		n = c->train.n;
	uint64_t seed = o->seed >= 0 ? (uint64_t)o->seed : c->cfg.seed;
	Build b = {.c = c, .k = {{"nml_grad", c->gradf, 0}, {"nml_eval", c->eval, 0}}, .nk = 2,
		   .type = CG_F64, .max_batch = n};
	Jit *j = compile(c, &b);
	if (!j)
		return 1;
	NmlKernel gradk = (NmlKernel)lookup(j, "nml_grad"), evalk = (NmlKernel)lookup(j, "nml_eval");
	double *params = calloc(m->param_size + 1, sizeof *params), *grads = calloc(m->param_size + 1, sizeof *grads);
	double *hparams = calloc(m->nhparams + 1, sizeof *hparams);
	drv_init_slots(m->params, m->nparams, m->param_size, seed, 0, params);
	/* A random batch, in f64. */
	int64_t *idx = malloc(c->train.n * sizeof *idx);
	for (int64_t i = 0; i < c->train.n; i++)
		idx[i] = i;
	NmlRng r;
	nml_rng_init(&r, seed, 2);
	nml_rng_shuffle(&r, idx, c->train.n);
	int64_t ycols = c->train.ydim ? c->train.ydim : 1;
	float *xb = malloc(n * c->train.xdim * sizeof *xb), *yb = malloc(n * ycols * sizeof *yb);
	nml_data_gather(&c->train, idx, n, xb, yb);
	double *x = malloc(n * c->train.xdim * sizeof *x), *y = malloc(n * ycols * sizeof *y);
	for (int64_t i = 0; i < n * c->train.xdim; i++)
		x[i] = xb[i];
	for (int64_t i = 0; i < n * ycols; i++)
		y[i] = yb[i];
	size_t wbytes = b.k[0].work_bytes > b.k[1].work_bytes ? b.k[0].work_bytes : b.k[1].work_bytes;
	void *work = aligned_alloc(64, (wbytes + 64) & ~(size_t)63);
	double *pred = calloc(n * (m->out_dim ? m->out_dim : 1), sizeof *pred);
	NmlArgs a = {.params = params, .grads = grads, .x = x, .y = y, .hparams = hparams, .work = work,
		     .pred = pred, .n = n, .t = 1};
	double loss0 = eval_loss(gradk, &a);
	printf("gradcheck: loss %.10g on %lld samples, f64, central differences\n", loss0, (long long)n);
	int failed = 0;
	const double h = 1e-5, rtol = 1e-4, atol = 1e-7;
	for (int p = 0; p < m->nparams; p++) {
		const IrSlot *s = &m->params[p];
		int64_t numel = ir_shape_numel(s->shape, 1), count = numel < 24 ? numel : 24;
		double max_abs = 0, max_rel = 0;
		int bad = 0;
		for (int64_t k = 0; k < count; k++) {
			int64_t e = count == numel ? k : (int64_t)(nml_rng_u32(&r) % (uint32_t)numel);
			double *pe = params + s->offset + e, keep = *pe;
			*pe = keep + h;
			double up = eval_loss(evalk, &a);
			*pe = keep - h;
			double down = eval_loss(evalk, &a);
			*pe = keep;
			double fd = (up - down) / (2 * h), an = grads[s->offset + e];
			double err = fabs(fd - an), scale = fmax(fabs(fd), fabs(an));
			if (err > max_abs)
				max_abs = err;
			if (scale > 0 && err / scale > max_rel)
				max_rel = err / scale;
			if (err > atol + rtol * scale) {
				if (!bad++)
					printf("  %s[%lld]: derived %.10g, finite difference %.10g\n", s->name, (long long)e, an, fd);
			}
		}
		char sh[64];
		printf("  %-24s %-14s %3lld of %-8lld max abs err %.2e  max rel err %.2e  %s\n", s->name,
		       ir_shape_str(s->shape, sh, sizeof sh), (long long)count, (long long)numel, max_abs, max_rel,
		       bad ? "FAIL" : "ok");
		failed += bad > 0;
	}
	printf("gradcheck: %d of %d parameters %s\n", failed ? failed : m->nparams, m->nparams,
	       failed ? "FAILED" : "ok");
	free(idx);
	free(xb);
	free(yb);
	free(x);
	free(y);
	free(work);
	free(pred);
	free(params);
	free(grads);
	free(hparams);
	jit_destroy(j);
	return failed ? 1 : 0;
}

/* ---- build: ahead of time, into a shared library (aot.c) ---- */

static int cmd_build(Compiler *c, const Options *o)
{
	apply_run_options(c, o);
	if (apply_sets(c, o))
		return 1;
	AotOptions a = {.output = o->output, .cpu = o->cpu, .verbose = o->verbose, .quiet = o->quiet};
	return aot_build(c, &a);
}

/* ---- show ---- */

static int cmd_show(Compiler *c, const Options *o)
{
	if (!strcmp(o->show, "ast")) {
		AstProgram user = {.items = {c->user_items, NULL, 0}};
		ast_dump(stdout, &user);
		return 0;
	}
	if (!strcmp(o->show, "ir")) {
		ir_dump(stdout, &c->mod, c->eval);
		return 0;
	}
	if (!strcmp(o->show, "grad")) {
		ir_dump(stdout, &c->mod, c->gradf);
		return 0;
	}
	if (!strcmp(o->show, "step")) {
		ir_dump(stdout, &c->mod, c->step);
		return 0;
	}
	if (!strcmp(o->show, "kernels")) {
		cg_dump_kernels(stdout, &c->mod, c->step, CG_F32, c->cfg.batch);
		return 0;
	}
	LLVMContextRef ctx = LLVMContextCreate();
	Build b = {.c = c, .k = {{"nml_step", c->step, 0}, {"nml_eval", c->eval, 0}}, .nk = 2,
		   .type = CG_F32, .max_batch = c->cfg.batch};
	LLVMModuleRef mod = build_module(ctx, &b);
	char *err = NULL;
	if (cg_optimize(mod, &err)) {
		fprintf(stderr, "nmlc: error: %s\n", err);
		free(err);
		return 1;
	}
	char *text = cg_print(mod);
	fputs(text, stdout);
	LLVMDisposeMessage(text);
	LLVMDisposeModule(mod);
	LLVMContextDispose(ctx);
	return 0;
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
		rc = cmd_show(&c, &o);
	else if (!strcmp(o.cmd, "gradcheck"))
		rc = cmd_gradcheck(&c, &o);
	else if (!strcmp(o.cmd, "build"))
		rc = cmd_build(&c, &o);
	else
		rc = cmd_run(&c, &o);
	drv_free(&c);
	return rc;
}

/* ---- for the REPL (repl.c, main.h): :run and :show are these commands ---- */

int main_run(Compiler *c, const Options *o) { return cmd_run(c, o); }
int main_show(Compiler *c, const Options *o) { return cmd_show(c, o); }
