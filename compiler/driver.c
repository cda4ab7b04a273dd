/* driver.c: the pass list. Parse, check, configure, load data, lower, differentiate, apply the
 * optimizer: each a straight-line call, each leaving a result `nmlc show` can dump. */
#include "driver.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "autodiff.h"
#include "grammar.h"
#include "util.h"
#include "config.h"
#include "optim.h"
#include "parse.h"

double drv_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void drv_init(Compiler *c)
{
	memset(c, 0, sizeof *c);
}

void drv_free(Compiler *c)
{
	ir_func_free(c->fwd);
	ir_func_free(c->eval);
	ir_func_free(c->step);
	ir_func_free(c->gradf);
	ir_func_free(c->predict);
	free(c->globals.items);
	free(c->lower.param_leaf);
	free(c->lower.buf_value);
	free(c->lower.eval_slot);
	free(c->lower.buf_update);
	free(c->lower.buf_final);
	free(c->lower.state_gated);
	ir_module_free(&c->mod);
	if (c->data_loaded) {
		nml_data_free(&c->train);
		nml_data_free(&c->test);
	}
	arena_free(&c->arena);
}

/* ---- finding and parsing sources ---- */

static char *read_file(Arena *a, const char *path)
{
	struct stat st;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) { /* a directory or a FIFO is not a source */
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		return NULL;
	}
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	if (fseek(f, 0, SEEK_END) == 0) {
		long n = ftell(f);
		if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) {
			buf = arena_alloc(a, (size_t)n + 1);
			if (fread(buf, 1, (size_t)n, f) != (size_t)n)
				buf = NULL;
			else if (memchr(buf, 0, (size_t)n))
				buf = NULL; /* the lexer's sentinel must be the only NUL */
		}
	}
	fclose(f);
	return buf;
}

static int is_dir(const char *path)
{
	return path && access(path, R_OK | X_OK) == 0;
}

/* stdlib/ beside the binary when installed (bin/../share/nml/stdlib) or in the source tree the
 * binary was built from; $NML_STDLIB overrides both. */
static const char *find_stdlib(Arena *a)
{
	const char *env = getenv("NML_STDLIB");
	if (env && *env)
		return env;
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = 0;
			char path[PATH_MAX + 32];
			snprintf(path, sizeof path, "%s/../share/nml/stdlib", exe);
			if (is_dir(path))
				return arena_strndup(a, path, strlen(path));
		}
	}
	if (is_dir(NML_SOURCE_DIR "/stdlib"))
		return NML_SOURCE_DIR "/stdlib";
	return NML_STDLIB_INSTALL_DIR;
}

static int parse_path(Compiler *c, const char *path, SrcLoc from);
static int add_items(Compiler *c, AstList items);

static int load_module(Compiler *c, const char *name, const char *including, SrcLoc loc)
{
	char path[PATH_MAX];
	if (strncmp(name, "std.", 4) == 0) {
		snprintf(path, sizeof path, "%s/%s.nml", c->stdlib_dir, name + 4);
	} else {
		/* Other modules are files relative to the including file: use a.b -> a/b.nml */
		const char *slash = strrchr(including, '/');
		int dir = slash ? (int)(slash - including + 1) : 0;
		snprintf(path, sizeof path, "%.*s%s.nml", dir, including, name);
		for (char *p = path + dir; *p; p++)
			if (*p == '.' && strcmp(p, ".nml") != 0)
				*p = '/';
	}
	const char *key = intern_cstr(path);
	for (int i = 0; i < c->nmodules; i++)
		if (c->modules[i] == key)
			return 0;
	if (c->nmodules == 64) {
		diag_error(loc, "too many modules");
		return 1;
	}
	c->modules[c->nmodules++] = key;
	return parse_path(c, key, loc);
}

static int parse_path(Compiler *c, const char *path, SrcLoc from)
{
	char *src = read_file(&c->arena, path);
	if (!src) {
		if (from.file)
			diag_error(from, "cannot read module '%s': %s", path, errno ? strerror(errno) : "not text");
		else
			diag_error(from, "cannot read '%s': %s", path, errno ? strerror(errno) : "not a text file");
		return 1;
	}
	AstProgram p = {0};
	int errs = parse_source(&c->arena, path, src, &p);
	return errs + add_items(c, p.items);
}

/* The modules items use, then the items: modules come before the file that uses them. */
static int add_items(Compiler *c, AstList items)
{
	int errs = 0;
	for (AstNode *n = items.head; n; n = n->next)
		if (n->kind == AST_USE)
			errs += load_module(c, n->name, n->loc.file, n->loc);
	if (items.head) {
		if (c->prog.items.tail)
			c->prog.items.tail->next = items.head;
		else
			c->prog.items.head = items.head;
		c->prog.items.tail = items.tail;
		c->prog.items.n += items.n;
	}
	return errs;
}

/* --optimizer EXPR: the expression, parsed as `const _ = EXPR`, becomes the train block's optimizer
 * field (or is added as one). Its names are checked and resolved like the file's. */
static int override_optimizer(Compiler *c, const char *file)
{
	/* the library's rules and schedules are there to be named, as if the file used them */
	int errs = load_module(c, "std.optim", "", (SrcLoc){0}) + load_module(c, "std.sched", "", (SrcLoc){0});
	AstProgram p = {0};
	errs += parse_source_wrapped(&c->arena, "--optimizer", c->optimizer_src, "const _ =", NULL, &p);
	if (errs)
		return errs;
	AstNode *item = p.items.head;
	if (!item || item->kind != AST_CONST || item->next) {
		diag_error((SrcLoc){0}, "--optimizer wants one expression, such as 'adam(lr = 1e-3)'");
		return 1;
	}
	const char *name = intern_cstr("optimizer");
	for (AstNode *n = c->prog.items.head; n; n = n->next) {
		if (n->kind != AST_TRAIN || n->loc.file != file)
			continue;
		for (AstNode *st = n->body.head; st; st = st->next)
			if (st->kind == AST_ASSIGN && st->name == name) {
				st->rhs = item->rhs;
				return 0;
			}
		AstNode *field = ast_new(&c->arena, AST_ASSIGN, item->rhs->loc);
		field->name = name;
		field->op = TK_ASSIGN;
		field->rhs = item->rhs;
		n->body.head ? (n->body.tail->next = field) : (n->body.head = field);
		n->body.tail = field;
		n->body.n++;
		return 0;
	}
	diag_error((SrcLoc){0}, "--optimizer: the file has no train block");
	return 1;
}

int drv_parse(Compiler *c, const char *path)
{
	double t0 = drv_now_ms();
	c->stdlib_dir = find_stdlib(&c->arena);
	int errs = load_module(c, "std.prelude", "", (SrcLoc){0});
	AstNode *before = c->prog.items.tail;
	const char *key = intern_cstr(path);
	c->modules[c->nmodules++] = key;
	errno = 0;
	errs += parse_path(c, key, (SrcLoc){0});
	/* The file's own items start after what the prelude added; its modules precede them. */
	for (AstNode *n = before ? before->next : c->prog.items.head; n; n = n->next)
		if (n->loc.file == key) {
			c->user_items = n;
			break;
		}
	if (!errs && c->optimizer_src)
		errs += override_optimizer(c, key);
	c->ms_front += drv_now_ms() - t0;
	return errs;
}

int drv_parse_items(Compiler *c, AstList items)
{
	double t0 = drv_now_ms();
	int errs = 0;
	if (!c->stdlib_dir) {
		c->stdlib_dir = find_stdlib(&c->arena);
		errs += load_module(c, "std.prelude", "", (SrcLoc){0});
	}
	errno = 0;
	errs += add_items(c, items);
	if (!c->user_items)
		c->user_items = items.head;
	c->ms_front += drv_now_ms() - t0;
	return errs;
}

int drv_check(Compiler *c)
{
	double t0 = drv_now_ms();
	int errs = sema_check(&c->prog, &c->globals);
	c->ms_front += drv_now_ms() - t0;
	return errs;
}

int drv_config(Compiler *c)
{
	AstNode *train = sema_train(&c->prog);
	if (!train) {
		diag_error((SrcLoc){0}, "no train block: nothing to train");
		return 1;
	}
	double t0 = drv_now_ms();
	lower_init(&c->lower, &c->arena, &c->globals, &c->mod);
	int errs = lower_train_config(&c->lower, train, &c->cfg);
	if (!errs && c->cfg.optimizer.kind == V_OPT)
		errs += optim_hparams(&c->lower, &c->cfg.optimizer);
	c->ms_lower += drv_now_ms() - t0;
	return errs;
}

/* ---- data ---- */

void drv_data_free(DrvData *d)
{
	if (d->loaded) {
		nml_data_free(&d->train);
		nml_data_free(&d->test);
	}
	d->loaded = 0;
}

/* What tells whether kept data is still what the files hold: modification time and size. */
static void data_stamp(const DataSpec *d, int64_t stamp[4][2])
{
	for (int i = 0; i < 4; i++) {
		struct stat st;
		stamp[i][0] = stamp[i][1] = -1;
		if (d->path[i] && stat(d->path[i], &st) == 0) {
			stamp[i][0] = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
			stamp[i][1] = (int64_t)st.st_size;
		}
	}
}

static int same_data(const DrvData *s, const DataSpec *d, int64_t stamp[4][2])
{
	if (!s->loaded || s->spec.kind != d->kind || s->spec.holdout != d->holdout || s->spec.label != d->label
	    || s->spec.regression != d->regression || memcmp(&s->spec.synth, &d->synth, sizeof d->synth) != 0
	    || memcmp(s->stamp, stamp, sizeof s->stamp) != 0)
		return 0;
	for (int i = 0; i < 4; i++)
		if ((s->spec.path[i] == NULL) != (d->path[i] == NULL)
		    || (d->path[i] && strcmp(s->spec.path[i], d->path[i]) != 0))
			return 0;
	return 1;
}

static int read_data(Compiler *c)
{
	const DataSpec *d = &c->cfg.data;
	char err[512] = "";
	int rc;
	if (d->kind == DATA_SYNTHETIC) { /* without holdout, the test set is the training set */
		rc = nml_data_synthetic(&c->train, d->synth.n, d->synth.d, (int)d->synth.classes, d->synth.noise,
					(uint64_t)d->synth.seed, err, sizeof err);
		if (!rc && !(d->holdout > 0))
			rc = nml_data_synthetic(&c->test, d->synth.n, d->synth.d, (int)d->synth.classes, d->synth.noise,
						(uint64_t)d->synth.seed, err, sizeof err);
	} else if (d->kind == DATA_CSV) {
		rc = nml_data_load_csv(&c->train, d->path[0], d->label, d->regression, err, sizeof err);
		if (!rc && d->path[2])
			rc = nml_data_load_csv(&c->test, d->path[2], d->label, d->regression, err, sizeof err);
	} else if (d->kind == DATA_IDX) {
		rc = nml_data_load_idx(&c->train, d->path[0], d->path[1], err, sizeof err);
		if (!rc && d->path[2])
			rc = nml_data_load_idx(&c->test, d->path[2], d->path[3], err, sizeof err);
	} else {
		rc = nml_data_load_npy(&c->train, d->path[0], d->path[1], err, sizeof err);
		if (!rc && d->path[2])
			rc = nml_data_load_npy(&c->test, d->path[2], d->path[3], err, sizeof err);
	}
	if (!rc && !d->path[2] && d->holdout > 0) {
		int64_t held = (int64_t)llround(d->holdout * (double)c->train.n);
		rc = nml_data_split(&c->train, &c->test, held, err, sizeof err);
	}
	if (rc) {
		diag_error(d->loc, "%s", err);
		nml_data_free(&c->train);
		nml_data_free(&c->test);
		return 1;
	}
	c->data_loaded = 1;
	if (c->test.n && (c->test.xdim != c->train.xdim || c->test.ydim != c->train.ydim)) {
		diag_error(d->loc, "test data has %lld features and %lld targets per sample, training data %lld and %lld",
			   (long long)c->test.xdim, (long long)c->test.ydim, (long long)c->train.xdim,
			   (long long)c->train.ydim);
		return 1;
	}
	return 0;
}

int drv_load_data(Compiler *c)
{
	double t0 = drv_now_ms();
	DrvData *shared = c->shared_data;
	int64_t stamp[4][2];
	if (shared)
		data_stamp(&c->cfg.data, stamp);
	if (shared && same_data(shared, &c->cfg.data, stamp)) {
		c->train = shared->train; /* descriptions only: the arrays stay shared's */
		c->test = shared->test;
	} else {
		if (read_data(c))
			return 1;
		if (shared) {
			drv_data_free(shared);
			shared->spec = c->cfg.data;
			memcpy(shared->stamp, stamp, sizeof stamp);
			shared->train = c->train;
			shared->test = c->test;
			shared->loaded = 1;
			shared->loads++;
			c->data_loaded = 0;
		}
	}
	IrModule *m = &c->mod;
	/* x is [N, one sample]: the shape the train block gives, else the file's (NPY keeps its
	 * dimensions), else flat. */
	IrShape xs = {2, {IR_BATCH, c->train.xdim}};
	const DataSpec *d = &c->cfg.data;
	int rank = d->xrank ? d->xrank : c->train.xrank;
	const int64_t *dims = d->xrank ? d->xshape : c->train.xshape;
	if (rank > 0) {
		int64_t k = 1;
		xs.rank = rank + 1;
		for (int i = 0; i < rank; i++)
			k *= (xs.dim[i + 1] = dims[i]);
		if (k != c->train.xdim) {
			char b[64];
			diag_error(d->loc, "a sample of shape %s has %lld values, the data %lld", ir_shape_str(xs, b, sizeof b),
				   (long long)k, (long long)c->train.xdim);
			return 1;
		}
	}
	ir_set_batch(m, xs, c->train.ydim ? (IrShape){2, {IR_BATCH, c->train.ydim}} : (IrShape){1, {IR_BATCH}},
		     (IrShape){2, {IR_BATCH, 1}} /* until lowering knows the model's output */);
	m->classes = c->train.ydim ? 0 : c->train.classes > c->test.classes ? c->train.classes : c->test.classes;
	c->ms_data += drv_now_ms() - t0;
	return 0;
}

/* ---- lowering ---- */

/* The gradient of fn's loss with respect to every parameter, appended to fn: grad[p] for slot p. */
static void param_grads(Compiler *c, IrFunc *fn, int loss, int *grad)
{
	int n = ir_block(&c->mod, NML_B_PARAMS)->n;
	int *leaf = xmalloc(((size_t)n + 1) * sizeof *leaf);
	for (int p = 0; p < n; p++) /* -1 for a parameter the function never reads: zeros */
		leaf[p] = p < c->lower.nparam_leaf ? c->lower.param_leaf[p] : -1;
	ad_grad(fn, loss, leaf, n, grad);
	for (int p = 0; p < n; p++)
		if (grad[p] < 0) {
			const IrSlot *s = ir_slot(&c->mod, NML_B_PARAMS, p);
			grad[p] = ir_expand(fn, ir_const(fn, 0, s->loc), s->shape, s->loc);
		}
	free(leaf);
}

/* Class labels a classifier (an output of 2 or more values) cannot have: negative, fractional, or
 * past its outputs. Left alone they train silently (onehot of label 7 in a 3-class model is all
 * zeros), as torch's "Target 7 is out of bounds" exists to prevent. */
static void check_labels(Compiler *c)
{
	int64_t k = c->mod.out_dim;
	const DataSpec *d = &c->cfg.data;
	if (c->train.ydim != 0 || k < 2)
		return;
	const NmlData *sets[2] = {&c->train, &c->test};
	for (int s = 0; s < 2; s++) {
		const NmlData *ds = sets[s];
		for (int64_t r = 0; r < ds->n; r++) {
			float y = ds->y[r];
			if (y >= 0 && y < (float)k && y == floorf(y))
				continue;
			const char *file = d->kind == DATA_CSV ? d->path[s ? 2 : 0] : d->path[s ? 3 : 1];
			if (s && !d->path[2]) /* held out from the training file */
				file = d->kind == DATA_CSV ? d->path[0] : d->path[1], r += c->train.n;
			diag_error(d->loc, "label %g in row %lld of %s is not one of the model's %lld classes (0 to %lld)", y,
				   (long long)r + 1, file ? file : "the data", (long long)k, (long long)k - 1);
			return;
		}
	}
}

/* A forward pass with its loss, or NULL after an error. A loss that lowered to no value without an
 * error saying why (a layer called without its input, `model()`, gives none) is reported here rather
 * than differentiated as instruction -1. */
static IrFunc *forward_pass(Compiler *c, int training, const char *name)
{
	IrFunc *fn = lower_forward(&c->lower, training, name);
	if (!fn || c->lower.loss >= 0)
		return fn;
	SrcLoc loc = c->lower.train->loc;
	for (AstNode *st = c->lower.train->body.head; st; st = st->next)
		if (st->kind == AST_ASSIGN && st->name == intern_cstr("loss"))
			loc = st->rhs->loc;
	diag_error(loc, "the loss has no value (is a layer called without its input?)");
	ir_func_free(fn);
	return NULL;
}

int drv_lower(Compiler *c)
{
	double t0 = drv_now_ms();
	int before = diag_count();
	/* The training-mode forward pass, and then the evaluation-mode one, each lowered from the
	 * source: a layer may compute differently in the two. */
	c->fwd = forward_pass(c, 1, "forward");
	if (!c->fwd)
		return diag_count() - before + (diag_count() == before);
	int loss = c->lower.loss;
	SrcLoc loc = c->fwd->inst[loss].loc;
	int nparams = ir_block(&c->mod, NML_B_PARAMS)->n;
	int *grad = xmalloc(((size_t)nparams + 1) * sizeof *grad);

	/* The gradient alone, for gradient checks and `nmlc show --grad`. */
	c->gradf = ir_func_clone(c->fwd, "grad");
	ir_store(c->gradf, NML_B_LOSS, 0, loss, loc);
	param_grads(c, c->gradf, loss, grad);
	for (int p = 0; p < nparams; p++)
		ir_store(c->gradf, NML_B_GRADS, p, grad[p], ir_slot(&c->mod, NML_B_PARAMS, p)->loc);

	c->step = ir_func_clone(c->fwd, "step");
	ir_store(c->step, NML_B_LOSS, 0, loss, loc);
	param_grads(c, c->step, loss, grad);
	c->lower.fwd_func = c->fwd; /* grad_at evaluates the training forward pass again */
	c->lower.fwd_loss = loss;
	optim_lower(&c->lower, c->step, &c->cfg.optimizer, grad);
	c->lower.fwd_func = NULL;
	free(grad);
	/* The training forward's new buffer values (running statistics), or a grad_at pass's that the
	 * rule asked for; evaluation only reads them. */
	for (int k = 0; k < c->lower.nbuf_update; k++) {
		int slot = c->lower.buf_update[k], v = lower_buffer_value(&c->lower, slot);
		if (c->lower.buf_final && c->lower.buf_final[slot] >= 0)
			v = c->lower.buf_final[slot];
		ir_store(c->step, NML_B_BUFFERS, slot, v, ir_slot(&c->mod, NML_B_BUFFERS, slot)->loc);
	}

	IrFunc *efwd = forward_pass(c, 0, "eval");
	if (!efwd)
		return diag_count() - before + (diag_count() == before);
	loss = c->lower.loss;
	int pred = c->lower.pred;
	loc = efwd->inst[loss].loc;
	/* The model's output alone (nmlc build's predict): y and the loss are left to DCE. */
	c->predict = ir_func_clone(efwd, "predict");
	ir_store(c->predict, NML_B_PRED, 0, pred, loc);
	c->eval = efwd;
	ir_store(c->eval, NML_B_LOSS, 0, loss, loc);
	ir_store(c->eval, NML_B_PRED, 0, pred, loc);

	IrFunc *fns[] = {c->eval, c->step, c->gradf, c->predict};
	for (int i = 0; i < 4; i++) {
		ir_distribute_sums(fns[i]);
		ir_cse(fns[i]);
		ir_dce(fns[i]);
		ir_remat(fns[i]);
	}
	ir_hoist_updates(c->step); /* the one with updates */
	check_labels(c);
	c->ms_lower += drv_now_ms() - t0;
	return diag_count() - before;
}

int drv_front(Compiler *c, const char *path)
{
	if (drv_parse(c, path) || drv_check(c) || drv_config(c) || drv_load_data(c) || drv_lower(c))
		return 1;
	return 0;
}

/* ---- initial values ---- */

void drv_init_slots(const IrModule *m, NmlBlock b, uint64_t seed, double *out)
{
	_Static_assert((int)INIT_CONST == (int)NML_INIT_CONST && (int)INIT_NORMAL == (int)NML_INIT_NORMAL
			       && (int)INIT_UNIFORM == (int)NML_INIT_UNIFORM, "IrInitKind and NmlInitKind agree");
	const IrBlock *t = ir_block(m, b);
	memset(out, 0, t->size * sizeof *out);
	for (int i = 0; i < t->n; i++) {
		const IrSlot *s = &t->slot[i];
		NmlInit init = {(NmlInitKind)s->init.kind, s->init.a, s->init.b};
		nml_init_values(init, seed, b, (uint64_t)i, out + s->offset, ir_shape_numel(s->shape, 1));
	}
}
