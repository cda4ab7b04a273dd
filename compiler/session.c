/* session.c: training, showing and gradient-checking a compiled program. The model's blocks,
 * checkpoints and batches belong to the runtime's model object (nmlrt.h, model.c), the same one a
 * library made by nmlc build runs on; this file compiles the kernels, describes the model to the
 * runtime, and adds what a command line run has around it: epochs, resuming, Ctrl-C, the
 * explanation of a diverging run. */
#include "session.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codegen.h"
#include "fuse.h"
#include "interp.h"
#include "jit.h"
#include "optim.h"
#include "util.h"

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
	for (int i = 0; i < b->nk; i++)
		b->k[i].deterministic = b->c->cfg.deterministic;
	return cg_module(ctx, "nml", &b->c->mod, b->k, b->nk, b->type, b->max_batch);
}

static Jit *compile(Compiler *c, Build *b)
{
	double t0 = drv_now_ms();
	char *err = NULL;
	Jit *j = jit_create(&err);
	if (!j || jit_add_cached(j, build_module, b, &c->jit_cached, &err)) {
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

/* A buffer of n elements of size bytes, zeroed, or NULL after an error saying what it was for:
 * what a run allocates by the model's size is too large for the memory there is, not a bug. */
static void *alloc_for(size_t n, size_t size, const char *what)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		fprintf(stderr, "nmlc: error: out of memory for %s (%.1f MB)\n", what, (double)n * (double)size / 1e6);
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
			fprintf(stderr, "nmlc: error: --set %s: '%s' is a schedule in the train block; edit it there, or "
					"write it as a number times the schedule (%s = 1e-3 * cosine_decay(t, T)) and --set "
					"changes the number\n", o->sets[i], name, name);
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

static void describe(const Compiler *c)
{
	const IrModule *m = &c->mod;
	size_t count = 0;
	const IrBlock *params = ir_block(m, NML_B_PARAMS);
	for (int i = 0; i < params->n; i++)
		count += (size_t)ir_shape_numel(params->slot[i].shape, 1);
	printf("model      %s: %zu parameters in %d tensors\n", lower_model_name(&c->lower), count, params->n);
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

static void apply_run_options(Compiler *c, const Options *o);

/* ---- what a step costs ---- */

typedef struct Estimate {
	double bytes[NML_NBLOCKS]; /* per block at the batch size (work: the larger kernel's) */
	double total, flops;       /* bytes in all; floating-point operations of one training step */
} Estimate;

/* Floating-point operations of f at n rows: 2 M N K per matrix product, one per element of every
 * other op that computes (a static count, before fusion). */
static double flops_of(const IrFunc *f, int64_t n)
{
	double k = 0;
	for (int i = 0; i < f->n; i++) {
		const IrInst *in = &f->inst[i];
		switch (ir_op_class(in->op)) {
		case OPC_LIBRARY: {
			const IrShape *a = &f->inst[in->in[0]].shape;
			k += 2.0 * (double)ir_shape_numel(in->shape, n) * (double)(a->dim[a->rank - (in->attr.mm.ta ? 2 : 1)]);
			break;
		}
		case OPC_ELEMWISE: case OPC_LOOP: k += (double)ir_shape_numel(in->shape, n); break;
		case OPC_REDUCE: k += (double)ir_shape_numel(f->inst[in->in[0]].shape, n); break;
		case OPC_LEAF: case OPC_VIEW: case OPC_STORE: break;
		}
	}
	return k;
}

static void estimate(const Compiler *c, Estimate *e)
{
	const IrModule *m = &c->mod;
	int64_t n = c->cfg.batch;
	*e = (Estimate){0};
	for (int b = 0; b < NML_NBLOCKS; b++) {
		NmlBlock blk = (NmlBlock)b;
		if (nml_block_kind(blk) == NML_BK_BATCH)
			e->bytes[b] = 4.0 * (double)ir_shape_numel(ir_slot(m, blk, 0)->shape, n);
		else if (b != NML_B_WORK)
			e->bytes[b] = 4.0 * (double)ir_block(m, blk)->size;
	}
	for (int k = 0; k < 2; k++) { /* the step's and evaluation's scratch; one is allocated, the larger */
		FusePlan *p = fuse_plan(m, k ? c->eval : c->step, 4, n, 1);
		if ((double)p->work_bytes > e->bytes[NML_B_WORK])
			e->bytes[NML_B_WORK] = (double)p->work_bytes;
		fuse_free(p);
	}
	for (int b = 0; b < NML_NBLOCKS; b++)
		e->total += e->bytes[b];
	e->flops = flops_of(c->step, n);
}

/* Every value at the batch size stays below 2^40 elements, so no size product (elements, bytes,
 * scratch offsets) can wrap: an error at the value's source otherwise. */
static int check_sizes(const Compiler *c)
{
	const IrFunc *fns[] = {c->step, c->eval};
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < fns[k]->n; i++) {
			const IrInst *in = &fns[k]->inst[i];
			double n = 1;
			for (int d = 0; d < in->shape.rank; d++)
				n *= in->shape.dim[d] == IR_BATCH ? (double)c->cfg.batch : (double)in->shape.dim[d];
			if (n > 0x1p40) {
				char b[64];
				diag_error(in->loc, "a value of shape %s has %.3g elements at batch %lld: more than 2^40",
					   ir_shape_str(in->shape, b, sizeof b), n, (long long)c->cfg.batch);
				return 1;
			}
		}
	return 0;
}

static void print_estimate(FILE *f, const Estimate *e)
{
	/* in the unit of the total: kB, MB or GB */
	double u = e->total < 1e6 ? 1e3 : e->total < 1e9 ? 1e6 : 1e9;
	const char *unit = u == 1e3 ? "kB" : u == 1e6 ? "MB" : "GB";
	fprintf(f, "memory     %.1f %s at this batch size: parameters %.1f, gradients %.1f, state %.1f, buffers %.1f, "
		   "batch %.1f, activations and scratch %.1f; %.3g MFLOP per step\n", e->total / u, unit,
		e->bytes[NML_B_PARAMS] / u, e->bytes[NML_B_GRADS] / u, e->bytes[NML_B_STATE] / u, e->bytes[NML_B_BUFFERS] / u,
		(e->bytes[NML_B_X] + e->bytes[NML_B_Y] + e->bytes[NML_B_LOSS] + e->bytes[NML_B_PRED]) / u,
		e->bytes[NML_B_WORK] / u, e->flops / 1e6);
}

/* Bytes the system can still hand out (MemAvailable), or -1 if unknown. */
static double available_memory(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	double kb = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

int session_check(Compiler *c, const Options *o)
{
	apply_run_options(c, o);
	if (check_sizes(c))
		return 1;
	Estimate e;
	estimate(c, &e);
	print_estimate(stdout, &e);
	return 0;
}

/* ---- training ---- */

/* The model's tables for the runtime, from the compiler's module: what nml_model_create needs. The
 * slot arrays are allocated in c's arena. */
static void model_desc(Compiler *c, NmlModelDesc *d)
{
	const IrModule *m = &c->mod;
	*d = (NmlModelDesc){.abi = NML_ABI_VERSION, .batch = c->cfg.batch, .xdim = c->train.xdim,
			    .ydim = c->train.ydim, .classes = m->classes, .out_dim = m->out_dim};
	for (int b = 0; b < NML_NBLOCKS; b++) {
		if ((int)nml_block_layout((NmlBlock)b) != b || nml_block_kind((NmlBlock)b) == NML_BK_BATCH)
			continue;
		const IrBlock *t = ir_block(m, (NmlBlock)b);
		NmlSlotDesc *s = arena_alloc(&c->arena, ((size_t)t->n + 1) * sizeof *s);
		for (int i = 0; i < t->n; i++) {
			const IrSlot *x = &t->slot[i];
			s[i] = (NmlSlotDesc){.name = x->name, .rank = x->shape.rank, .offset = x->offset,
					     .init = {(NmlInitKind)x->init.kind, x->init.a, x->init.b}};
			for (int k = 0; k < x->shape.rank; k++)
				s[i].shape[k] = x->shape.dim[k];
		}
		d->block[b] = (NmlBlockDesc){s, t->n, t->size};
	}
	const char **names = arena_alloc(&c->arena, ((size_t)m->nhparams + 1) * sizeof *names);
	double *values = arena_alloc(&c->arena, ((size_t)m->nhparams + 1) * sizeof *values);
	for (int i = 0; i < m->nhparams; i++) {
		names[i] = m->hparams[i].name;
		values[i] = m->hparams[i].value;
	}
	d->hparam_names = names;
	d->hparam_defaults = values;
	d->nhparams = m->nhparams;
}

/* A run: the model, and a copy of its MODEL blocks at the start of the epoch being trained, from
 * which a diverging epoch is replayed. */
typedef struct Run {
	Compiler *c;
	const Options *o;
	NmlModel *model;
	float *snap[NML_NBLOCKS];
	int snap_epoch;                  /* epochs done at the snapshot */
	int64_t snap_step;
} Run;

static size_t block_size(const Run *r, NmlBlock b) { return ir_block(&r->c->mod, b)->size; }

static void run_snapshot(Run *r, int epoch)
{
	for (int b = 0; b < NML_NBLOCKS; b++)
		if (r->snap[b])
			memcpy(r->snap[b], nml_model_block(r->model, (NmlBlock)b), block_size(r, (NmlBlock)b) * sizeof(float));
	r->snap_epoch = epoch;
	r->snap_step = nml_model_get_step(r->model);
}

static void run_free(Run *r)
{
	for (int b = 0; b < NML_NBLOCKS; b++)
		free(r->snap[b]);
	nml_model_free(r->model);
}

/* What wrote a checkpoint: the model's layer, the update rule's names, and a hash of the training
 * step as compiled, so that --resume into another model or rule is refused (not silently run with
 * the checkpoint's hyperparameters and state). */
static void run_identity(Compiler *c, char *model, size_t mlen, char *rule, size_t rlen, char *program, size_t plen)
{
	snprintf(model, mlen, "%s", lower_model_name(&c->lower));
	const Value *rules[64];
	int n = optim_rules(&c->cfg.optimizer, rules);
	size_t k = (size_t)snprintf(rule, rlen, "%s", n > 1 ? "chain(" : "");
	for (int i = 0; i < n && k < rlen; i++)
		k += (size_t)snprintf(rule + k, rlen - k, "%s%s", i ? ", " : "", optim_def(&c->lower, rules[i])->name);
	if (n > 1 && k < rlen)
		snprintf(rule + k, rlen - k, ")");
	char *dump = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&dump, &len);
	if (!f)
		die("out of memory");
	ir_dump(f, &c->mod, c->step);
	fclose(f);
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)dump[i]) * 1099511628211ull;
	free(dump);
	snprintf(program, plen, "%016llx", (unsigned long long)h);
}

static int run_save(Run *r, int epoch, char *err, size_t errlen)
{
	char text[32], model[128], rule[512], program[32];
	snprintf(text, sizeof text, "%d", epoch);
	run_identity(r->c, model, sizeof model, rule, sizeof rule, program, sizeof program);
	NmlMeta meta[] = {{"epoch", text}, {"model", model}, {"optimizer", rule}, {"program", program}};
	if (nml_model_save_meta(r->model, r->o->save, meta, 4) == 0)
		return 0;
	snprintf(err, errlen, "%s", nml_model_error(r->model));
	return -1;
}

/* After every epoch: an interrupted run keeps its last finished epoch, and can --resume from it. */
static int after_epoch(NmlTrainer *tr, const NmlEpochStats *s, char *err, size_t errlen)
{
	Run *r = tr->user;
	run_snapshot(r, s->epoch);
	return r->o->save ? run_save(r, s->epoch, err, errlen) : 0;
}

/* The loss stopped being finite: replay the epoch from its snapshot through the interpreter, op by
 * op, and point at the first op whose result is not finite although its operands are. */
static void explain_divergence(Run *r, const NmlTrainer *tr)
{
	Compiler *c = r->c;
	const IrModule *m = &c->mod;
	const NmlData *d = tr->train;
	int64_t batch = c->cfg.batch, ycols = d->ydim ? d->ydim : 1;
	NmlArgs a = {.hparams = nml_model_hparams(r->model)};
	int ok = 1;
	for (int b = 0; b < NML_NBLOCKS && ok; b++) {
		size_t n = nml_block_kind((NmlBlock)b) == NML_BK_MODEL || b == NML_B_GRADS ? block_size(r, (NmlBlock)b)
			: b == NML_B_X ? (size_t)(batch * d->xdim) : b == NML_B_Y ? (size_t)(batch * ycols)
			: b == NML_B_PRED ? (size_t)(batch * (m->out_dim ? m->out_dim : 1)) : 1;
		ok = (a.block[b] = calloc(n + 1, sizeof(float))) != NULL;
		if (ok && r->snap[b])
			memcpy(a.block[b], r->snap[b], block_size(r, (NmlBlock)b) * sizeof(float));
	}
	int64_t *idx = ok ? malloc(((size_t)d->n + 1) * sizeof *idx) : NULL;
	int64_t step = r->snap_step, start = 0, end = nml_model_get_step(r->model);
	int origin = idx ? -1 : -2;
	if (idx)
		nml_epoch_order(nml_model_seed(r->model), r->snap_epoch + 1, idx, d->n);
	for (; step < end && origin == -1; start += batch) {
		int64_t n = d->n - start < batch ? d->n - start : batch;
		nml_data_gather(d, idx + start, n, a.block[NML_B_X], a.block[NML_B_Y]);
		a.n = n;
		a.t = (double)++step;
		origin = interp_run(m, c->step, &a, 1);
	}
	if (origin >= 0) {
		const IrInst *in = &c->step->inst[origin];
		char sh[64];
		diag_note(in->loc, "the first value that is not finite: %s %s at step %lld, from finite operands",
			  ir_op_name(in->op), ir_shape_str(in->shape, sh, sizeof sh), (long long)step);
	} else if (origin == -2) {
		fprintf(stderr, "nmlc: note: not enough memory to replay the epoch and find the op where it diverged\n");
	}
	for (int b = 0; b < NML_NBLOCKS; b++)
		free(a.block[b]);
	free(idx);
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

/* --resume: every block, the step and the hyperparameters from a checkpoint of this model, and the
 * epochs it finished. T stays this run's length. */
static int run_resume(Run *r, NmlTrainer *tr, char *err, size_t errlen)
{
	const char *path = r->o->resume;
	double epoch;
	if (meta_number(path, "epoch", &epoch, err, errlen))
		return -1;
	if (!(epoch >= 0 && epoch <= 1e9 && epoch == floor(epoch))) {
		snprintf(err, errlen, "checkpoint %s: epoch %g is not a count of epochs", path, epoch);
		return -1;
	}
	/* A checkpoint of another model or rule is refused (older checkpoints, without these keys, are
	 * taken as they are). */
	char want[3][512], got[512], msg[2048];
	run_identity(r->c, want[0], sizeof want[0], want[1], sizeof want[1], want[2], sizeof want[2]);
	static const char *const keys[3] = {"model", "optimizer", "program"};
	for (int k = 0; k < 3; k++) {
		int rc = nml_ckpt_meta(path, keys[k], got, sizeof got, err, errlen);
		if (rc < 0)
			return -1;
		if (rc == 0 && strcmp(got, want[k]) != 0) {
			if (k < 2)
				snprintf(msg, sizeof msg, "checkpoint %.1000s was written by %s %.200s, this run has %s %.200s: "
					 "--resume continues the same run (--init loads its parameters only)", path, keys[k], got,
					 keys[k], want[k]);
			else
				snprintf(msg, sizeof msg, "checkpoint %.1000s was written by another program (the model, loss or "
					 "rule changed): --resume continues the same run (--init loads its parameters only)", path);
			snprintf(err, errlen, "%s", msg);
			return -1;
		}
	}
	int T = ir_find_hparam(&r->c->mod, intern_cstr("T"));
	double *hp = nml_model_hparams(r->model), keep_T = T >= 0 ? hp[T] : 0;
	if (nml_model_load(r->model, path)) {
		snprintf(err, errlen, "%s", nml_model_error(r->model));
		return -1;
	}
	if (T >= 0)
		hp[T] = keep_T;
	tr->epochs_done = (int)epoch;
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

/* --save: everything a save checks (the path's kind, its directory, permissions), before training
 * rather than after its first epoch. */
static int check_save(const char *path)
{
	char err[1024];
	if (nml_ckpt_check_save(path, err, sizeof err) == 0)
		return 0;
	fprintf(stderr, "nmlc: error: %s (nothing was trained)\n", err);
	return -1;
}

/* --log: a run appends to the log of the run it resumes, and to a log this process has written
 * already (the REPL's :run after :run); otherwise a log that has records is not replaced unless
 * --force says so. Devices and pipes (/dev/stdout) are written as they are. */
static char *log_written; /* the last log this process opened */

/* Whether path is where nmlc's own stdout or stderr goes (--log /dev/stdout into a file). */
static int is_own_output(const struct stat *st)
{
	struct stat out;
	for (int fd = 1; fd <= 2; fd++)
		if (fstat(fd, &out) == 0 && out.st_dev == st->st_dev && out.st_ino == st->st_ino)
			return 1;
	return 0;
}

static int log_appends(const Options *o)
{
	struct stat st;
	return o->resume || (log_written && !strcmp(log_written, o->log)) || (stat(o->log, &st) == 0 && is_own_output(&st));
}

static int check_log(const Options *o)
{
	struct stat st;
	if (!o->log || log_appends(o) || o->force || stat(o->log, &st) < 0)
		return 0;
	if (S_ISDIR(st.st_mode)) {
		fprintf(stderr, "nmlc: error: cannot write log '%s': it is a directory\n", o->log);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size == 0 || is_own_output(&st))
		return 0;
	fprintf(stderr, "nmlc: error: log '%s' exists (%lld bytes) and would be replaced: --resume appends to the "
		"log of the run it continues, --force replaces it; or give another name (nothing was trained)\n", o->log,
		(long long)st.st_size);
	return -1;
}

static FILE *open_log(const Options *o)
{
	FILE *f = fopen(o->log, log_appends(o) ? "a" : "w");
	if (!f) {
		fprintf(stderr, "nmlc: error: cannot write log '%s': %s\n", o->log, strerror(errno));
		return NULL;
	}
	if (!log_written || strcmp(log_written, o->log)) {
		free(log_written);
		log_written = strdup(o->log); /* if out of memory, the next run just does not append */
	}
	return f;
}

static int evaluate_only(NmlTrainer *tr)
{
	double loss, acc;
	if (!tr->test || nml_model_evaluate_data(tr->model, tr->test, &loss, &acc)) {
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
	if (o->deterministic)
		c->cfg.deterministic = 1;
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
	int spe = ir_find_hparam(&c->mod, intern_cstr("steps_per_epoch"));
	if (spe >= 0) /* epoch in rules and schedules: the steps of an epoch of this data */
		c->mod.hparams[spe].value = (double)((c->train.n + c->cfg.batch - 1) / c->cfg.batch);
}

int session_apply_options(Compiler *c, const Options *o)
{
	apply_run_options(c, o);
	return apply_sets(c, o);
}

int session_run(Compiler *c, const Options *o)
{
	apply_run_options(c, o);
	if (c->cfg.batch > c->train.n && c->train.n > 0) /* a batch larger than the data is all of it */
		c->cfg.batch = c->train.n;
	if ((o->save && check_save(o->save)) || check_log(o)) /* fail before training, not after */
		return 1;
	if (check_sizes(c))
		return 1;
	Estimate est;
	estimate(c, &est);
	double avail = available_memory();
	if (avail > 0 && est.total > avail && !o->ignore_memory) { /* before minutes of swapping, not after */
		fprintf(stderr, "nmlc: error: the run needs about %.0f MB and %.0f MB are available\n", est.total / 1e6,
			avail / 1e6);
		print_estimate(stderr, &est);
		fprintf(stderr, "nmlc: a smaller --batch needs less; --ignore-memory runs anyway\n");
		return 1;
	}
	char err[2048];
	if (o->resume && o->seed < 0) { /* the run's seed orders its epochs: the checkpoint's, unless given */
		double seed;
		if (meta_number(o->resume, "seed", &seed, err, sizeof err)) {
			fprintf(stderr, "nmlc: error: %s\n", err);
			return 1;
		}
		c->cfg.seed = (uint64_t)seed;
	}
	Build b = {.c = c, .k = {{"nml_step", c->step, 0}, {"nml_eval", c->eval, 0}}, .nk = 2,
		   .type = CG_F32, .max_batch = c->cfg.batch};
	interrupted = 0;
	void (*previous)(int) = signal(SIGINT, on_interrupt);
	Jit *j = compile(c, &b);
	if (!j) {
		signal(SIGINT, previous);
		return 1;
	}
	NmlModelDesc desc;
	model_desc(c, &desc);
	desc.step = (NmlKernel)lookup(j, "nml_step");
	desc.eval = (NmlKernel)lookup(j, "nml_eval");
	desc.work = b.k[0].work_bytes > b.k[1].work_bytes ? b.k[0].work_bytes : b.k[1].work_bytes;
	Run r = {.c = c, .o = o, .model = nml_model_create(&desc, c->cfg.seed)};
	int ok = r.model != NULL;
	if (!ok)
		fprintf(stderr, "nmlc: error: out of memory for the model: %.0f MB at batch %lld\n", est.total / 1e6,
			(long long)c->cfg.batch);
	for (int k = 0; k < NML_NBLOCKS && ok; k++) /* the copy an epoch that diverges is replayed from */
		if (nml_block_kind((NmlBlock)k) == NML_BK_MODEL)
			ok = (r.snap[k] = alloc_for(block_size(&r, (NmlBlock)k) + 1, sizeof(float), "the copy of the model")) != NULL;
	if (!ok) {
		print_estimate(stderr, &est);
		fprintf(stderr, "nmlc: a smaller --batch or model needs less\n");
		run_free(&r);
		jit_destroy(j);
		signal(SIGINT, previous);
		return 1;
	}
	NmlTrainer tr = {
		.model = r.model, .epochs = c->cfg.epochs, .train = &c->train, .test = c->test.n ? &c->test : NULL,
		.progress = isatty(STDERR_FILENO) && !o->quiet, .quiet = o->quiet,
		.after_epoch = after_epoch, .user = &r, .interrupt = &interrupted, .in_order = c->cfg.in_order,
	};
	int rc = 0;
	if (o->init && nml_model_load_params(r.model, o->init)) {
		fprintf(stderr, "nmlc: error: %s\n", nml_model_error(r.model));
		rc = 1;
	} else if (o->resume && run_resume(&r, &tr, err, sizeof err)) {
		fprintf(stderr, "nmlc: error: %s\n", err);
		rc = 1;
	}
	if (!rc) { /* what the model holds now (a checkpoint's values), then --set over it */
		const double *hp = nml_model_hparams(r.model);
		for (int i = 0; i < c->mod.nhparams; i++)
			c->mod.hparams[i].value = hp[i];
		if (apply_sets(c, o))
			rc = 1;
		for (int i = 0; i < c->mod.nhparams; i++)
			nml_model_hparams(r.model)[i] = c->mod.hparams[i].value;
	}
	if (!rc && o->log && !(tr.log = open_log(o)))
		rc = 1;
	tr.log_name = o->log;
	if (!rc) {
		if (!o->quiet) {
			describe(c);
			print_estimate(stdout, &est);
			printf("compiled   in %.0f ms (front end %.1f ms, lowering %.1f ms, JIT %.1f ms%s); data loaded in %.0f ms\n",
			       c->ms_front + c->ms_lower + c->ms_jit, c->ms_front, c->ms_lower, c->ms_jit,
			       c->jit_cached ? " from the cache" : "", c->ms_data);
			if (o->resume)
				printf("resumed    from %s after epoch %d, step %lld\n", o->resume, tr.epochs_done,
				       (long long)nml_model_get_step(r.model));
		}
		fflush(stdout);
		NmlEpochStats last;
		run_snapshot(&r, tr.epochs_done);
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
		if (!rc && o->save && tr.epochs == 0 && run_save(&r, 0, err, sizeof err)) {
			fprintf(stderr, "nmlc: error: %s\n", err);
			rc = 1;
		}
	}
	if (tr.log && fclose(tr.log) && !rc) {
		fprintf(stderr, "nmlc: error: cannot write the log %s: %s\n", o->log, strerror(errno));
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
	a->block[NML_B_LOSS] = &loss;
	k(a);
	return loss;
}

int session_gradcheck(Compiler *c, const Options *o)
{
	const IrModule *m = &c->mod;
	int64_t n = o->batch > 0 ? o->batch : 4;
	if (n > c->train.n)
		n = c->train.n;
	uint64_t seed = o->seed >= 0 ? (uint64_t)o->seed : c->cfg.seed;
	/* The loss of the finite differences is the gradient kernel's own, in training mode at the same
	 * step: the same dropout masks and random numbers as the derived gradient saw. */
	Build b = {.c = c, .k = {{"nml_grad", c->gradf, 0}}, .nk = 1,
		   .type = CG_F64, .max_batch = n};
	Jit *j = compile(c, &b);
	if (!j)
		return 1;
	NmlKernel gradk = (NmlKernel)lookup(j, "nml_grad");
	const IrBlock *pb = ir_block(m, NML_B_PARAMS);
	int64_t ycols = c->train.ydim ? c->train.ydim : 1;
	size_t wbytes = b.k[0].work_bytes > b.k[1].work_bytes ? b.k[0].work_bytes : b.k[1].work_bytes;
	/* Every buffer sized by the model or the data: too large for memory is an error, not a crash. */
	double *params = alloc_for(pb->size + 1, sizeof *params, "the parameters");
	double *grads = params ? alloc_for(pb->size + 1, sizeof *grads, "the gradients") : NULL;
	double *derived = grads ? alloc_for(pb->size + 1, sizeof *derived, "the gradients") : NULL;
	double *hparams = derived ? alloc_for((size_t)m->nhparams + 1, sizeof *hparams, "the hyperparameters") : NULL;
	double *buffers = hparams ? alloc_for(ir_block(m, NML_B_BUFFERS)->size + 1, sizeof *buffers, "the buffers") : NULL;
	int64_t *idx = buffers ? alloc_for((size_t)c->train.n, sizeof *idx, "the batch") : NULL;
	float *xb = idx ? alloc_for((size_t)(n * c->train.xdim), sizeof *xb, "the batch") : NULL;
	float *yb = xb ? alloc_for((size_t)(n * ycols), sizeof *yb, "the batch") : NULL;
	double *x = yb ? alloc_for((size_t)(n * c->train.xdim), sizeof *x, "the batch") : NULL;
	double *y = x ? alloc_for((size_t)(n * ycols), sizeof *y, "the batch") : NULL;
	double *pred = y ? alloc_for((size_t)(n * (m->out_dim ? m->out_dim : 1)), sizeof *pred, "the outputs") : NULL;
	void *work = pred ? aligned_alloc(64, (wbytes + 64) & ~(size_t)63) : NULL;
	if (pred && !work)
		fprintf(stderr, "nmlc: error: out of memory for the kernel's scratch (%.1f MB)\n", (double)wbytes / 1e6);
	int failed = 0;
	if (!work) {
		failed = -1;
		goto out;
	}
	drv_init_slots(m, NML_B_PARAMS, seed, params);
	drv_init_slots(m, NML_B_BUFFERS, seed, buffers);
	/* A random batch, in f64. */
	for (int64_t i = 0; i < c->train.n; i++)
		idx[i] = i;
	NmlRng r;
	nml_rng_init(&r, seed, 2);
	nml_rng_shuffle(&r, idx, c->train.n);
	nml_data_gather(&c->train, idx, n, xb, yb);
	for (int64_t i = 0; i < n * c->train.xdim; i++)
		x[i] = xb[i];
	for (int64_t i = 0; i < n * ycols; i++)
		y[i] = yb[i];
	NmlArgs a = {.block = {[NML_B_PARAMS] = params, [NML_B_GRADS] = grads, [NML_B_BUFFERS] = buffers,
			       [NML_B_X] = x, [NML_B_Y] = y,
			       [NML_B_PRED] = pred, [NML_B_WORK] = work},
		     .hparams = hparams, .n = n, .t = 2, .seed = seed}; /* step 2: after any data_init */
	double loss0 = eval_loss(gradk, &a);
	memcpy(derived, grads, pb->size * sizeof *derived); /* the kernel's grads are rewritten below */
	printf("gradcheck: loss %.10g on %lld samples, f64, central differences\n", loss0, (long long)n);
	const double h = 1e-5, rtol = 1e-4, atol = 1e-7;
	for (int p = 0; p < pb->n; p++) {
		const IrSlot *s = &pb->slot[p];
		int64_t numel = ir_shape_numel(s->shape, 1), count = numel < 24 ? numel : 24;
		double max_abs = 0, max_rel = 0;
		int bad = 0;
		for (int64_t k = 0; k < count; k++) {
			int64_t e = count == numel ? k : (int64_t)(nml_rng_u32(&r) % (uint32_t)numel);
			double *pe = params + s->offset + e, keep = *pe;
			*pe = keep + h;
			double up = eval_loss(gradk, &a);
			*pe = keep - h;
			double down = eval_loss(gradk, &a);
			*pe = keep;
			double fd = (up - down) / (2 * h), an = derived[s->offset + e];
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
	printf("gradcheck: %d of %d parameters %s\n", failed ? failed : pb->n, pb->n,
	       failed ? "FAILED" : "ok");
out:
	free(idx);
	free(xb);
	free(yb);
	free(x);
	free(y);
	free(work);
	free(pred);
	free(params);
	free(grads);
	free(derived);
	free(buffers);
	free(hparams);
	jit_destroy(j);
	return failed ? 1 : 0;
}

/* ---- show ---- */

int session_show(Compiler *c, const Options *o)
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


/* ---- kernels for many runs ---- */

int session_kernels(Compiler *c, const Options *o, SessionKernels *k)
{
	*k = (SessionKernels){0};
	apply_run_options(c, o);
	if (c->cfg.batch > c->train.n && c->train.n > 0)
		c->cfg.batch = c->train.n;
	if (check_sizes(c) || apply_sets(c, o))
		return 1;
	Build b = {.c = c, .k = {{"nml_step", c->step, 0}, {"nml_eval", c->eval, 0}}, .nk = 2,
		   .type = CG_F32, .max_batch = c->cfg.batch};
	Jit *j = compile(c, &b);
	if (!j)
		return 1;
	model_desc(c, &k->desc);
	k->desc.step = (NmlKernel)lookup(j, "nml_step");
	k->desc.eval = (NmlKernel)lookup(j, "nml_eval");
	k->desc.work = b.k[0].work_bytes > b.k[1].work_bytes ? b.k[0].work_bytes : b.k[1].work_bytes;
	k->jit = j;
	return 0;
}

void session_kernels_free(SessionKernels *k)
{
	if (k->jit)
		jit_destroy(k->jit);
	k->jit = NULL;
}
