/* test_train.c: the training loop, driven by hand-written kernels that follow the NmlArgs ABI:
 * softmax regression (classes) and linear regression (targets) on synthetic data. */
#include "check.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <unistd.h>

#include "nmlrt.h"

enum { XDIM = 4, CLASSES = 3, NTRAIN = 1000, NTEST = 300, BATCH = 64, YDIM = 2 };

static char dir[256];
static char err[512];

/* What the kernels saw. */
static struct {
	int64_t calls, rows, last_n, max_n, eval_rows;
	double last_t;
	int t_in_order, aligned, seed_ok;
	uint64_t seed;        /* the model's seed, which every kernel call should carry */
	int64_t nan_at;       /* step whose loss becomes NaN (0: never) */
	float poison;
} seen;

static volatile sig_atomic_t interrupt_flag;
static int64_t interrupt_at; /* step during which interrupt_flag is set (0: never) */

static void saw(const NmlArgs *a)
{
	seen.calls++;
	seen.rows += a->n;
	seen.last_n = a->n;
	seen.max_n = a->n > seen.max_n ? a->n : seen.max_n;
	seen.t_in_order &= a->t == seen.last_t + 1;
	seen.last_t = a->t;
	seen.aligned &= ((uintptr_t)a->block[NML_B_X] | (uintptr_t)a->block[NML_B_Y] | (uintptr_t)a->block[NML_B_WORK] |
			 (uintptr_t)a->block[NML_B_PRED]) % 64 == 0;
	seen.seed_ok &= a->seed == seen.seed;
	if (interrupt_at && (int64_t)a->t == interrupt_at)
		interrupt_flag = 1;
}

/* Softmax regression: params W [XDIM, CLASSES] then b [CLASSES]; work holds probabilities
 * [n, CLASSES]; hparams[0] is the learning rate. Loss: mean cross-entropy. */
static float softmax_forward(const NmlArgs *a, float *prob)
{
	const float *x = a->block[NML_B_X], *y = a->block[NML_B_Y], *w = a->block[NML_B_PARAMS], *b = w + XDIM * CLASSES;
	double loss = 0;
	for (int64_t i = 0; i < a->n; i++) {
		float *p = prob + i * CLASSES, top = -INFINITY, sum = 0;
		for (int c = 0; c < CLASSES; c++) {
			p[c] = b[c];
			for (int k = 0; k < XDIM; k++)
				p[c] += x[i * XDIM + k] * w[k * CLASSES + c];
			top = p[c] > top ? p[c] : top;
		}
		if (a->block[NML_B_PRED])
			memcpy((float *)a->block[NML_B_PRED] + i * CLASSES, p, CLASSES * sizeof *p);
		for (int c = 0; c < CLASSES; c++)
			sum += p[c] = expf(p[c] - top);
		for (int c = 0; c < CLASSES; c++)
			p[c] /= sum;
		loss -= log(p[(int)y[i]]);
	}
	return (float)(loss / a->n);
}

static void softmax_step(NmlArgs *a)
{
	saw(a);
	float *prob = a->block[NML_B_WORK], *w = a->block[NML_B_PARAMS], *g = a->block[NML_B_GRADS];
	const float *x = a->block[NML_B_X], *y = a->block[NML_B_Y], lr = (float)a->hparams[0];
	float loss = softmax_forward(a, prob);
	memset(g, 0, (XDIM + 1) * CLASSES * sizeof *g);
	for (int64_t i = 0; i < a->n; i++)
		for (int c = 0; c < CLASSES; c++) {
			/* d(-log softmax_y)/dlogit_c = p_c - [c == y] */
			float d = (prob[i * CLASSES + c] - (c == (int)y[i])) / a->n;
			for (int k = 0; k < XDIM; k++)
				g[k * CLASSES + c] += x[i * XDIM + k] * d;
			g[XDIM * CLASSES + c] += d;
		}
	for (int j = 0; j < (XDIM + 1) * CLASSES; j++)
		w[j] -= lr * g[j];
	if (seen.nan_at && (int64_t)a->t == seen.nan_at)
		loss = seen.poison;
	*(float *)a->block[NML_B_LOSS] = loss;
}

static void softmax_eval(NmlArgs *a)
{
	seen.eval_rows += a->n;
	*(float *)a->block[NML_B_LOSS] = softmax_forward(a, a->block[NML_B_WORK]);
}

/* Linear regression: params W [XDIM, YDIM] then b [YDIM]; loss: mean over rows of the squared error
 * summed over outputs. */
static float linear_forward(const NmlArgs *a, float *out)
{
	const float *x = a->block[NML_B_X], *y = a->block[NML_B_Y], *w = a->block[NML_B_PARAMS], *b = w + XDIM * YDIM;
	double loss = 0;
	for (int64_t i = 0; i < a->n; i++)
		for (int c = 0; c < YDIM; c++) {
			float o = b[c];
			for (int k = 0; k < XDIM; k++)
				o += x[i * XDIM + k] * w[k * YDIM + c];
			out[i * YDIM + c] = o;
			loss += (o - y[i * YDIM + c]) * (o - y[i * YDIM + c]);
		}
	return (float)(loss / a->n);
}

static void linear_step(NmlArgs *a)
{
	saw(a);
	float *out = a->block[NML_B_WORK], *w = a->block[NML_B_PARAMS], *g = a->block[NML_B_GRADS];
	const float *x = a->block[NML_B_X], *y = a->block[NML_B_Y], lr = (float)a->hparams[0];
	*(float *)a->block[NML_B_LOSS] = linear_forward(a, out);
	memset(g, 0, (XDIM + 1) * YDIM * sizeof *g);
	for (int64_t i = 0; i < a->n; i++)
		for (int c = 0; c < YDIM; c++) {
			float d = 2 * (out[i * YDIM + c] - y[i * YDIM + c]) / a->n; /* d(o - y)^2 = 2(o - y) */
			for (int k = 0; k < XDIM; k++)
				g[k * YDIM + c] += x[i * XDIM + k] * d;
			g[XDIM * YDIM + c] += d;
		}
	for (int j = 0; j < (XDIM + 1) * YDIM; j++)
		w[j] -= lr * g[j];
}

static void linear_eval(NmlArgs *a)
{
	*(float *)a->block[NML_B_LOSS] = linear_forward(a, a->block[NML_B_PRED]);
}

/* Three Gaussian blobs (classes) or a noisy linear map (targets). */
static NmlData synth(int64_t n, uint64_t stream, int regression)
{
	NmlData d = {.n = n, .xdim = XDIM, .ydim = regression ? YDIM : 0, .classes = regression ? 0 : CLASSES};
	d.x = malloc(n * XDIM * sizeof *d.x);
	d.y = malloc(n * (regression ? YDIM : 1) * sizeof *d.y);
	NmlRng r;
	nml_rng_init(&r, 99, stream);
	for (int64_t i = 0; i < n; i++) {
		int c = (int)(i % CLASSES);
		for (int k = 0; k < XDIM; k++)
			d.x[i * XDIM + k] = (float)(nml_rng_normal(&r) + (regression ? 0 : 2.0 * (k == c)));
		if (regression)
			for (int j = 0; j < YDIM; j++)
				d.y[i * YDIM + j] = d.x[i * XDIM + j] - 0.5f * d.x[i * XDIM + 3] + 1 + 0.1f * (float)nml_rng_normal(&r);
		else
			d.y[i] = (float)c;
	}
	return d;
}

/* The models' tables: zero initial weights, as the trainer's caller used to pass them. */
static const NmlSlotDesc softmax_slots[] = {
	{"w", 2, {XDIM, CLASSES}, 0, {NML_INIT_CONST, 0, 0}},
	{"b", 1, {CLASSES}, XDIM * CLASSES, {NML_INIT_CONST, 0, 0}},
};
static const NmlSlotDesc linear_slots[] = {
	{"w", 2, {XDIM, YDIM}, 0, {NML_INIT_CONST, 0, 0}},
	{"b", 1, {YDIM}, XDIM * YDIM, {NML_INIT_CONST, 0, 0}},
};
static const char *const lr_name[] = {"lr"};
static const double softmax_lr[] = {0.1f}, linear_lr[] = {0.05};

enum { SOFTMAX_SIZE = (XDIM + 1) * CLASSES, LINEAR_SIZE = (XDIM + 1) * YDIM };

static const NmlModelDesc softmax_desc = {
	.abi = NML_ABI_VERSION, .step = softmax_step, .eval = softmax_eval, .work = BATCH * CLASSES * sizeof(float),
	.batch = BATCH, .xdim = XDIM, .ydim = 0, .classes = CLASSES, .out_dim = CLASSES,
	.block = {[NML_B_PARAMS] = {softmax_slots, 2, SOFTMAX_SIZE}},
	.hparam_names = lr_name, .hparam_defaults = softmax_lr, .nhparams = 1,
};
static const NmlModelDesc linear_desc = {
	.abi = NML_ABI_VERSION, .step = linear_step, .eval = linear_eval, .work = BATCH * YDIM * sizeof(float),
	.batch = BATCH, .xdim = XDIM, .ydim = YDIM, .out_dim = YDIM,
	.block = {[NML_B_PARAMS] = {linear_slots, 2, LINEAR_SIZE}},
	.hparam_names = lr_name, .hparam_defaults = linear_lr, .nhparams = 1,
};

typedef struct Run {
	NmlTrainer tr;
	NmlModel *model;
	NmlEpochStats last;
	int rc;
} Run;

static NmlData train_set, test_set, reg_train, reg_test;

static const float *params_of(NmlModel *m) { return nml_model_block(m, NML_B_PARAMS); }

static void run_free(Run *r)
{
	nml_model_free(r->model);
	r->model = NULL;
}

/* A softmax run; r is zeroed, or a run whose model this frees. */
static void run_init(Run *r, int epochs, uint64_t seed, FILE *log)
{
	run_free(r);
	memset(r, 0, sizeof *r);
	r->model = nml_model_create(&softmax_desc, seed);
	r->tr = (NmlTrainer){
		.model = r->model, .epochs = epochs,
		.train = &train_set, .test = &test_set, .log = log, .quiet = 1,
	};
}

static void run(Run *r)
{
	memset(&seen, 0, sizeof seen);
	seen.t_in_order = seen.aligned = seen.seed_ok = 1;
	seen.seed = nml_model_seed(r->tr.model);
	seen.last_t = (double)nml_model_get_step(r->tr.model);
	r->rc = nml_train(&r->tr, &r->last, err, sizeof err);
}

/* Parses a JSONL log into epochs' cJSON objects; returns the count. */
static int read_log(FILE *f, cJSON **rec, int max)
{
	char line[1024];
	int n = 0;
	rewind(f);
	while (n < max && fgets(line, sizeof line, f))
		rec[n++] = cJSON_Parse(line);
	return n;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void learning_and_batches(void)
{
	FILE *log = tmpfile();
	Run r = {0};
	run_init(&r, 5, 1, log);
	CHECK(r.model != NULL);
	run(&r);
	if (!check_report(r.rc == 0, __FILE__, __LINE__, "%s", err)) {
		run_free(&r);
		return;
	}
	int64_t per_epoch = (NTRAIN + BATCH - 1) / BATCH;
	/* Every row once per epoch, the partial last batch included. */
	CHECK(seen.rows == 5 * NTRAIN);
	CHECK(seen.calls == 5 * per_epoch);
	CHECK(seen.last_n == NTRAIN % BATCH && seen.max_n == BATCH);
	CHECK(seen.t_in_order && seen.last_t == 5 * per_epoch && nml_model_get_step(r.model) == 5 * per_epoch);
	CHECK(seen.aligned && seen.seed_ok);
	CHECK(seen.eval_rows == 5 * NTEST);
	CHECK(r.tr.epochs_done == 5);

	cJSON *rec[8];
	int n = read_log(log, rec, 8);
	CHECK(n == 5);
	int ok = 1;
	for (int i = 0; i < n; i++) {
		ok &= cJSON_IsObject(rec[i]) && num(rec[i], "epoch") == i + 1 && num(rec[i], "step") == (i + 1) * per_epoch;
		ok &= isfinite(num(rec[i], "train_loss")) && isfinite(num(rec[i], "test_loss"));
		ok &= num(rec[i], "test_accuracy") >= 0 && num(rec[i], "test_accuracy") <= 1;
		ok &= num(rec[i], "samples_per_sec") > 0 && num(rec[i], "seconds") >= 0;
	}
	CHECK(ok);
	/* It learns: the blobs are well separated. */
	double first = num(rec[0], "train_loss"), final = num(rec[n - 1], "train_loss");
	check_report(final < 0.7 * first, __FILE__, __LINE__, "train loss %g -> %g", first, final);
	CHECK(r.last.epoch == 5 && r.last.train_loss == final && r.last.test_loss == num(rec[n - 1], "test_loss"));
	CHECK(r.last.test_accuracy > 0.85);
	CHECK(num(rec[n - 1], "test_loss") < num(rec[0], "test_loss"));

	/* Evaluating the model alone reproduces the last epoch's figures. */
	double loss, acc;
	CHECK(nml_model_evaluate_data(r.model, &test_set, &loss, &acc) == 0);
	CHECK(loss == r.last.test_loss && acc == r.last.test_accuracy);
	for (int i = 0; i < n; i++)
		cJSON_Delete(rec[i]);
	fclose(log);
	run_free(&r);
}

/* after_epoch that checkpoints the model, with the epoch, to the path in tr->user. */
static int save_epoch(NmlTrainer *tr, const NmlEpochStats *s, char *e, size_t len)
{
	char epoch[16];
	snprintf(epoch, sizeof epoch, "%d", s->epoch);
	NmlMeta meta = {"epoch", epoch};
	if (nml_model_save_meta(tr->model, tr->user, &meta, 1) < 0) {
		snprintf(e, len, "%s", nml_model_error(tr->model));
		return -1;
	}
	return 0;
}

static void determinism_and_resume(void)
{
	const int64_t per_epoch = (NTRAIN + BATCH - 1) / BATCH;
	Run a = {0}, b = {0}, c = {0}, d = {0};
	run_init(&a, 4, 7, NULL);
	run(&a);
	run_init(&b, 4, 7, NULL);
	run(&b);
	CHECK(a.rc == 0 && b.rc == 0);
	CHECK(memcmp(&a.last, &b.last, offsetof(NmlEpochStats, samples_per_sec)) == 0);
	CHECK(memcmp(params_of(a.model), params_of(b.model), SOFTMAX_SIZE * sizeof(float)) == 0);

	run_init(&c, 4, 8, NULL);
	run(&c);
	CHECK(c.rc == 0 && c.last.train_loss != a.last.train_loss);
	CHECK(seen.seed_ok);

	/* Two epochs, then two more as a resumed run: the same as four in one go. */
	run_init(&d, 2, 7, NULL);
	run(&d);
	d.tr.epochs = 4;
	run(&d);
	CHECK(d.rc == 0 && d.tr.epochs_done == 4 && nml_model_get_step(d.model) == nml_model_get_step(a.model));
	CHECK(seen.t_in_order && seen.calls == 2 * per_epoch);
	CHECK(d.last.epoch == 4 && d.last.train_loss == a.last.train_loss);
	CHECK(memcmp(params_of(a.model), params_of(d.model), SOFTMAX_SIZE * sizeof(float)) == 0);

	/* Nothing left to do: last keeps the epoch count, figures NaN. */
	run(&d);
	CHECK(d.rc == 0 && seen.calls == 0 && d.last.epoch == 4 && isnan(d.last.train_loss));

	/* The same through a checkpoint that after_epoch wrote: a new model of the same seed loads the
	 * weights and the step, the epochs done come from the checkpoint's metadata. */
	Run e = {0}, f = {0};
	char ckpt[512], value[32];
	snprintf(ckpt, sizeof ckpt, "%s/resume.safetensors", dir);
	run_init(&e, 2, 7, NULL);
	e.tr.after_epoch = save_epoch;
	e.tr.user = ckpt;
	run(&e);
	CHECK(e.rc == 0 && nml_model_get_step(e.model) == 2 * per_epoch);
	run_init(&f, 4, 7, NULL);
	CHECK(nml_model_load(f.model, ckpt) == 0 && nml_model_get_step(f.model) == 2 * per_epoch);
	CHECK(nml_ckpt_meta(ckpt, "epoch", value, sizeof value, err, sizeof err) == 0);
	CHECK_STR(value, "2");
	f.tr.epochs_done = atoi(value);
	run(&f);
	CHECK(f.rc == 0 && f.tr.epochs_done == 4 && nml_model_get_step(f.model) == nml_model_get_step(a.model));
	CHECK(seen.t_in_order && seen.calls == 2 * per_epoch && seen.seed_ok);
	CHECK(f.last.epoch == 4 && f.last.train_loss == a.last.train_loss && f.last.test_loss == a.last.test_loss);
	CHECK(memcmp(params_of(a.model), params_of(f.model), SOFTMAX_SIZE * sizeof(float)) == 0);
	/* after_epoch saw every epoch: the checkpoint is the last one's. */
	e.tr.epochs = 3;
	run(&e);
	CHECK(e.rc == 0 && nml_ckpt_meta(ckpt, "epoch", value, sizeof value, err, sizeof err) == 0);
	CHECK_STR(value, "3");
	CHECK(nml_ckpt_meta(ckpt, "step", value, sizeof value, err, sizeof err) == 0 && atoll(value) == 3 * per_epoch);
	/* A checkpoint that cannot be written stops training with the callback's error. */
	snprintf(ckpt, sizeof ckpt, "%s/no/such/dir/x.safetensors", dir);
	e.tr.epochs = 4;
	run(&e);
	CHECK(e.rc < 0 && e.tr.epochs_done == 4 && e.last.epoch == 4);
	CHECK_ERR(err, "no/such/dir");

	/* The kernels read the model's hyperparameters: a learning rate of 0 leaves the weights at 0. */
	Run g = {0};
	run_init(&g, 2, 7, NULL);
	CHECK(nml_model_set_hparam(g.model, "lr", 0) == 0);
	run(&g);
	int zero = 1;
	for (int i = 0; i < SOFTMAX_SIZE; i++)
		zero &= params_of(g.model)[i] == 0;
	CHECK(g.rc == 0 && zero && fabs(g.last.test_loss - log(CLASSES)) < 1e-6);
	run_free(&g);

	run_free(&a);
	run_free(&b);
	run_free(&c);
	run_free(&d);
	run_free(&e);
	run_free(&f);
}

static void nonfinite(void)
{
	Run r = {0};
	run_init(&r, 3, 1, NULL);
	r.tr.progress = 1;
	memset(&seen, 0, sizeof seen);
	seen.nan_at = 20;
	seen.poison = NAN;
	seen.t_in_order = 1;
	r.rc = nml_train(&r.tr, &r.last, err, sizeof err);
	CHECK(r.rc < 0);
	CHECK_STR(err, "loss is nan at epoch 2, step 20");
	CHECK(r.last.epoch == 1 && r.tr.epochs_done == 1);
	CHECK(r.tr.diverged && !r.tr.interrupted && nml_model_get_step(r.model) == 20);

	run_init(&r, 3, 1, NULL);
	memset(&seen, 0, sizeof seen);
	seen.nan_at = 3;
	seen.poison = -INFINITY;
	r.rc = nml_train(&r.tr, &r.last, err, sizeof err);
	CHECK(r.rc < 0);
	CHECK_STR(err, "loss is inf at epoch 1, step 3");
	CHECK(r.tr.diverged && r.last.epoch == 0 && nml_model_get_step(r.model) == 3);
	seen.nan_at = 0;
	run_free(&r);
}

/* Runs nml_train in a child process, so that a crash fails one check instead of ending the test:
 * 1 if it returned an error. */
static int train_fails_cleanly(NmlTrainer *tr)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		NmlEpochStats last;
		_exit(nml_train(tr, &last, err, sizeof err) < 0 ? 0 : 1);
	}
	int st = 0;
	return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void regression(void)
{
	const int64_t per_epoch = (NTRAIN + BATCH - 1) / BATCH;
	NmlModel *m = nml_model_create(&linear_desc, 3);
	FILE *log = tmpfile();
	NmlTrainer tr = {
		.model = m, .epochs = 3, .train = &reg_train, .test = &reg_test, .log = log, .quiet = 1,
	};
	NmlEpochStats last;
	memset(&seen, 0, sizeof seen);
	seen.t_in_order = 1;
	int rc = nml_train(&tr, &last, err, sizeof err);
	if (!check_report(rc == 0, __FILE__, __LINE__, "%s", err)) {
		nml_model_free(m);
		fclose(log);
		return;
	}
	CHECK(isnan(last.test_accuracy) && last.test_loss < 0.1);
	/* The learnt map: y_j = x_j - x_3 / 2 + 1. */
	const float *params = params_of(m);
	CHECK(fabsf(params[0 * YDIM + 0] - 1) < 0.05f && fabsf(params[3 * YDIM + 1] + 0.5f) < 0.05f &&
	      fabsf(params[XDIM * YDIM] - 1) < 0.05f);
	cJSON *rec[4];
	int n = read_log(log, rec, 4);
	CHECK(n == 3);
	for (int i = 0; i < n; i++) {
		CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rec[i], "test_accuracy")));
		cJSON_Delete(rec[i]);
	}
	fclose(log);

	/* Without a test set: no eval kernel needed, test figures NaN and null. The model goes on as one
	 * without an eval kernel, with the weights and step so far. */
	NmlModelDesc noeval = linear_desc;
	noeval.eval = NULL;
	NmlModel *ne = nml_model_create(&noeval, 3);
	memcpy(nml_model_block(ne, NML_B_PARAMS), params, LINEAR_SIZE * sizeof(float));
	CHECK(nml_model_set_step(ne, nml_model_get_step(m)) == 0);
	log = tmpfile();
	tr.model = ne;
	tr.test = NULL;
	tr.epochs = 4;
	tr.log = log;
	CHECK(nml_train(&tr, &last, err, sizeof err) == 0);
	CHECK(isnan(last.test_loss) && isnan(last.test_accuracy) && last.epoch == 4);
	CHECK(nml_model_get_step(ne) == 4 * per_epoch);
	n = read_log(log, rec, 4);
	CHECK(n == 1 && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rec[0], "test_loss")));
	CHECK(n == 1 && num(rec[0], "epoch") == 4 && num(rec[0], "step") == 4 * per_epoch);
	if (n == 1)
		cJSON_Delete(rec[0]);
	fclose(log);
	tr.log = NULL;

	/* Mismatched test set and bad settings are errors, not crashes. */
	tr.model = m;
	tr.test = &test_set;
	tr.epochs_done = 0;
	CHECK(nml_train(&tr, &last, err, sizeof err) < 0);
	CHECK_ERR(err, "the test set has");
	tr.test = NULL;
	tr.train = &train_set; /* class labels for a model of two targets */
	CHECK(nml_train(&tr, &last, err, sizeof err) < 0);
	CHECK_ERR(err, "nothing to train");
	tr.train = &reg_train;
	tr.model = NULL;
	CHECK(nml_train(&tr, &last, err, sizeof err) < 0);
	CHECK_ERR(err, "nothing to train");
	CHECK(nml_model_get_step(m) == 3 * per_epoch);
	/* A model of batch 0, or without a step kernel: refused when made, or when trained. */
	NmlModelDesc zero = linear_desc, nostep = linear_desc;
	zero.batch = 0;
	nostep.step = NULL;
	NmlModel *zm = nml_model_create(&zero, 3), *nm = nml_model_create(&nostep, 3);
	tr.model = zm;
	CHECK(!zm || train_fails_cleanly(&tr));
	tr.model = nm;
	CHECK(!nm || train_fails_cleanly(&tr));
	nml_model_free(zm);
	nml_model_free(nm);
	nml_model_free(ne);
	nml_model_free(m);
}

static int after_calls;
static int after_epoch(NmlTrainer *tr, const NmlEpochStats *s, char *e, size_t len)
{
	after_calls++;
	if (s->epoch == *(int *)tr->user) {
		snprintf(e, len, "stop at %d", s->epoch);
		return -1;
	}
	return 0;
}

static void callback(void)
{
	Run r = {0};
	int stop = 2;
	run_init(&r, 5, 1, NULL);
	r.tr.after_epoch = after_epoch;
	r.tr.user = &stop;
	run(&r);
	CHECK(r.rc < 0 && after_calls == 2 && r.tr.epochs_done == 2);
	CHECK_STR(err, "stop at 2");
	CHECK(r.last.epoch == 2 && nml_model_get_step(r.model) == 2 * ((NTRAIN + BATCH - 1) / BATCH));
	run_free(&r);
}

/* Runs a training with stdout and stderr sent to files; returns them. */
static void captured(Run *r, char **out, char **errout)
{
	char po[512], pe[512];
	snprintf(po, sizeof po, "%s/stdout", dir);
	snprintf(pe, sizeof pe, "%s/stderr", dir);
	fflush(stdout);
	fflush(stderr);
	int so = dup(1), se = dup(2);
	int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	dup2(fo, 1);
	dup2(fe, 2);
	run(r);
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
	close(so), close(se), close(fo), close(fe);
	char *bufs[2] = {NULL, NULL};
	const char *paths[2] = {po, pe};
	for (int i = 0; i < 2; i++) {
		FILE *f = fopen(paths[i], "rb");
		bufs[i] = calloc(1, 1 << 16);
		size_t n = fread(bufs[i], 1, (1 << 16) - 1, f);
		bufs[i][n] = 0;
		fclose(f);
	}
	*out = bufs[0];
	*errout = bufs[1];
}

static void output(void)
{
	Run r = {0};
	char *out, *eo;
	run_init(&r, 10, 1, NULL);
	r.tr.quiet = 0;
	captured(&r, &out, &eo);
	CHECK(r.rc == 0);
	/* Ten lines, the epoch number padded to the width of "10". */
	int lines = 0;
	for (char *p = out; *p; p++)
		lines += *p == '\n';
	CHECK(lines == 10);
	CHECK(strncmp(out, "epoch  1/10  train_loss 0.", 26) == 0);
	CHECK(strstr(out, "\nepoch 10/10  train_loss ") != NULL);
	CHECK(strstr(out, "  test_loss ") && strstr(out, "  test_acc 0.") && strstr(out, " samples/s  "));
	CHECK(*eo == 0);
	double tl, ta, sec;
	char *l10 = strstr(out, "epoch 10/10");
	CHECK(l10 && sscanf(l10, "epoch 10/10  train_loss %lf  test_loss %lf  test_acc %lf", &tl, &tl, &ta) == 3 &&
	      fabs(ta - r.last.test_accuracy) < 1e-4);
	CHECK(l10 && (sec = atof(strrchr(l10, ' '))) >= 0 && strstr(l10, "s\n"));
	free(out);
	free(eo);

	/* Progress bar: on stderr, cleared before each epoch line. */
	run_init(&r, 3, 1, NULL);
	r.tr.quiet = 0;
	r.tr.progress = 1;
	captured(&r, &out, &eo);
	CHECK(strstr(eo, "\repoch 1/3 [") && strstr(eo, "%  loss ") && strstr(eo, " samples/s"));
	CHECK(strstr(eo, "\r\033[K") != NULL);
	size_t el = strlen(eo);
	CHECK(el >= 4 && strcmp(eo + el - 4, "\r\033[K") == 0);
	CHECK(strstr(out, "epoch 3/3  train_loss ") != NULL && strchr(out, '\r') == NULL);
	free(out);
	free(eo);

	/* Quiet: no progress, and of the epoch lines only the last, the run's result. */
	run_init(&r, 2, 1, NULL);
	r.tr.progress = 1;
	captured(&r, &out, &eo);
	CHECK(*eo == 0 && strncmp(out, "epoch 2/2  train_loss ", 22) == 0 && strchr(out, '\n') == out + strlen(out) - 1);
	free(out);
	free(eo);

	/* A regression run prints "-" for accuracy, keeping the columns. */
	NmlModel *lin = nml_model_create(&linear_desc, 3);
	r.tr = (NmlTrainer){.model = lin, .epochs = 1, .train = &reg_train, .test = &reg_test};
	captured(&r, &out, &eo);
	CHECK(strstr(out, "  test_acc -       ") != NULL);
	free(out);
	free(eo);
	nml_model_free(lin);
	run_free(&r);
}

static void interrupt(void)
{
	const int64_t per_epoch = (NTRAIN + BATCH - 1) / BATCH;
	Run r = {0};
	char *out, *eo;
	/* Set during step 20, the second epoch's fourth: training stops before the next batch, the bar
	 * cleared and no line printed for the unfinished epoch. */
	run_init(&r, 3, 1, NULL);
	r.tr.interrupt = &interrupt_flag;
	r.tr.quiet = 0;
	r.tr.progress = 1;
	interrupt_flag = 0;
	interrupt_at = 20;
	captured(&r, &out, &eo);
	interrupt_at = 0;
	CHECK(r.rc < 0 && r.tr.interrupted && !r.tr.diverged);
	CHECK_STR(err, "interrupted in epoch 2, after step 20");
	CHECK(seen.calls == 20 && nml_model_get_step(r.model) == 20);
	CHECK(r.tr.epochs_done == 1 && r.last.epoch == 1 && isfinite(r.last.train_loss));
	CHECK(strstr(out, "epoch 1/3  train_loss ") && !strstr(out, "epoch 2/3"));
	size_t el = strlen(eo);
	CHECK(strstr(eo, "\repoch 2/3 [") && el >= 4 && strcmp(eo + el - 4, "\r\033[K") == 0);
	free(out);
	free(eo);

	/* Resumed: the unfinished epoch again from its start, the model's step going on from 20. */
	interrupt_flag = 0;
	r.tr.interrupted = 0;
	r.tr.quiet = 1;
	run(&r);
	CHECK(r.rc == 0 && !r.tr.interrupted && r.tr.epochs_done == 3 && r.last.epoch == 3);
	CHECK(seen.calls == 2 * per_epoch && seen.t_in_order && nml_model_get_step(r.model) == 20 + 2 * per_epoch);

	/* Already set: not a single step. */
	run_init(&r, 3, 1, NULL);
	r.tr.interrupt = &interrupt_flag;
	interrupt_flag = 1;
	run(&r);
	CHECK(r.rc < 0 && r.tr.interrupted && seen.calls == 0 && nml_model_get_step(r.model) == 0);
	CHECK_STR(err, "interrupted in epoch 1, after step 0");
	CHECK(r.last.epoch == 0 && isnan(r.last.train_loss));
	interrupt_flag = 0;
	run_free(&r);
}

int main(void)
{
	check_tmpdir(dir, sizeof dir);
	train_set = synth(NTRAIN, 1, 0);
	test_set = synth(NTEST, 2, 0);
	reg_train = synth(NTRAIN, 3, 1);
	reg_test = synth(NTEST, 4, 1);
	learning_and_batches();
	determinism_and_resume();
	nonfinite();
	regression();
	callback();
	output();
	interrupt();
	nml_data_free(&train_set);
	nml_data_free(&test_set);
	nml_data_free(&reg_train);
	nml_data_free(&reg_test);
	check_rmtree(dir);
	return check_done();
}
