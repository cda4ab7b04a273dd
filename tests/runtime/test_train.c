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
	int t_in_order, aligned;
	int64_t nan_at; /* step whose loss becomes NaN (0: never) */
	float poison;
} seen;

static void saw(const NmlArgs *a)
{
	seen.calls++;
	seen.rows += a->n;
	seen.last_n = a->n;
	seen.max_n = a->n > seen.max_n ? a->n : seen.max_n;
	seen.t_in_order &= a->t == seen.last_t + 1;
	seen.last_t = a->t;
	seen.aligned &= ((uintptr_t)a->x | (uintptr_t)a->y | (uintptr_t)a->work | (uintptr_t)a->pred) % 64 == 0;
}

/* Softmax regression: params W [XDIM, CLASSES] then b [CLASSES]; work holds probabilities
 * [n, CLASSES]; hparams[0] is the learning rate. Loss: mean cross-entropy. */
static float softmax_forward(const NmlArgs *a, float *prob)
{
	const float *x = a->x, *y = a->y, *w = a->params, *b = w + XDIM * CLASSES;
	double loss = 0;
	for (int64_t i = 0; i < a->n; i++) {
		float *p = prob + i * CLASSES, top = -INFINITY, sum = 0;
		for (int c = 0; c < CLASSES; c++) {
			p[c] = b[c];
			for (int k = 0; k < XDIM; k++)
				p[c] += x[i * XDIM + k] * w[k * CLASSES + c];
			top = p[c] > top ? p[c] : top;
		}
		if (a->pred)
			memcpy((float *)a->pred + i * CLASSES, p, CLASSES * sizeof *p);
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
	float *prob = a->work, *w = a->params, *g = a->grads;
	const float *x = a->x, *y = a->y, lr = (float)a->hparams[0];
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
	*(float *)a->loss = loss;
}

static void softmax_eval(NmlArgs *a)
{
	seen.eval_rows += a->n;
	*(float *)a->loss = softmax_forward(a, a->work);
}

/* Linear regression: params W [XDIM, YDIM] then b [YDIM]; loss: mean over rows of the squared error
 * summed over outputs. */
static float linear_forward(const NmlArgs *a, float *out)
{
	const float *x = a->x, *y = a->y, *w = a->params, *b = w + XDIM * YDIM;
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
	float *out = a->work, *w = a->params, *g = a->grads;
	const float *x = a->x, *y = a->y, lr = (float)a->hparams[0];
	*(float *)a->loss = linear_forward(a, out);
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
	*(float *)a->loss = linear_forward(a, a->pred);
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

typedef struct Run {
	NmlTrainer tr;
	float params[(XDIM + 1) * CLASSES], grads[(XDIM + 1) * CLASSES], state[1];
	double hparams[1];
	NmlEpochStats last;
	int rc;
} Run;

static NmlData train_set, test_set, reg_train, reg_test;

static void run_init(Run *r, int epochs, uint64_t seed, FILE *log)
{
	memset(r, 0, sizeof *r);
	r->hparams[0] = 0.1f;
	r->tr = (NmlTrainer){
		.step = softmax_step, .eval = softmax_eval,
		.params = r->params, .grads = r->grads, .state = r->state, .hparams = r->hparams,
		.step_work = BATCH * CLASSES * sizeof(float), .eval_work = BATCH * CLASSES * sizeof(float),
		.out_dim = CLASSES, .batch = BATCH, .epochs = epochs, .seed = seed,
		.train = &train_set, .test = &test_set, .log = log, .quiet = 1,
	};
}

static void run(Run *r)
{
	memset(&seen, 0, sizeof seen);
	seen.t_in_order = seen.aligned = 1;
	seen.last_t = (double)r->tr.steps_done;
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
	Run r;
	run_init(&r, 5, 1, log);
	run(&r);
	if (!check_report(r.rc == 0, __FILE__, __LINE__, "%s", err))
		return;
	int64_t per_epoch = (NTRAIN + BATCH - 1) / BATCH;
	/* Every row once per epoch, the partial last batch included. */
	CHECK(seen.rows == 5 * NTRAIN);
	CHECK(seen.calls == 5 * per_epoch);
	CHECK(seen.last_n == NTRAIN % BATCH && seen.max_n == BATCH);
	CHECK(seen.t_in_order && seen.last_t == 5 * per_epoch && r.tr.steps_done == 5 * per_epoch);
	CHECK(seen.aligned);
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

	/* nml_evaluate alone reproduces the last epoch's figures. */
	double loss, acc;
	CHECK(nml_evaluate(&r.tr, &test_set, &loss, &acc) == 0);
	CHECK(loss == r.last.test_loss && acc == r.last.test_accuracy);
	for (int i = 0; i < n; i++)
		cJSON_Delete(rec[i]);
	fclose(log);
}

static void determinism_and_resume(void)
{
	Run a, b, c, d;
	run_init(&a, 4, 7, NULL);
	run(&a);
	run_init(&b, 4, 7, NULL);
	run(&b);
	CHECK(a.rc == 0 && b.rc == 0);
	CHECK(memcmp(&a.last, &b.last, offsetof(NmlEpochStats, samples_per_sec)) == 0);
	CHECK(memcmp(a.params, b.params, sizeof a.params) == 0);

	run_init(&c, 4, 8, NULL);
	run(&c);
	CHECK(c.rc == 0 && c.last.train_loss != a.last.train_loss);

	/* Two epochs, then two more as a resumed run: the same as four in one go. */
	run_init(&d, 2, 7, NULL);
	run(&d);
	d.tr.epochs = 4;
	run(&d);
	CHECK(d.rc == 0 && d.tr.epochs_done == 4 && d.tr.steps_done == a.tr.steps_done);
	CHECK(seen.t_in_order && seen.calls == 2 * ((NTRAIN + BATCH - 1) / BATCH));
	CHECK(d.last.epoch == 4 && d.last.train_loss == a.last.train_loss);
	CHECK(memcmp(a.params, d.params, sizeof a.params) == 0);

	/* Nothing left to do: last keeps the epoch count, figures NaN. */
	run(&d);
	CHECK(d.rc == 0 && seen.calls == 0 && d.last.epoch == 4 && isnan(d.last.train_loss));
}

static void nonfinite(void)
{
	Run r;
	run_init(&r, 3, 1, NULL);
	r.tr.progress = 1;
	memset(&seen, 0, sizeof seen);
	seen.nan_at = 20;
	seen.poison = NAN;
	seen.t_in_order = 1;
	r.rc = nml_train(&r.tr, &r.last, err, sizeof err);
	CHECK(r.rc < 0);
	CHECK_STR(err, "loss is nan at epoch 2, step 20");
	CHECK(r.last.epoch == 1);

	run_init(&r, 3, 1, NULL);
	memset(&seen, 0, sizeof seen);
	seen.nan_at = 3;
	seen.poison = -INFINITY;
	r.rc = nml_train(&r.tr, &r.last, err, sizeof err);
	CHECK(r.rc < 0);
	CHECK_STR(err, "loss is inf at epoch 1, step 3");
	seen.nan_at = 0;
}

static void regression(void)
{
	float params[(XDIM + 1) * YDIM] = {0}, grads[(XDIM + 1) * YDIM];
	double hp[1] = {0.05};
	FILE *log = tmpfile();
	NmlTrainer tr = {
		.step = linear_step, .eval = linear_eval, .params = params, .grads = grads, .state = NULL,
		.hparams = hp, .step_work = BATCH * YDIM * sizeof(float), .out_dim = YDIM, .batch = BATCH,
		.epochs = 3, .seed = 3, .train = &reg_train, .test = &reg_test, .log = log, .quiet = 1,
	};
	NmlEpochStats last;
	memset(&seen, 0, sizeof seen);
	seen.t_in_order = 1;
	int rc = nml_train(&tr, &last, err, sizeof err);
	if (!check_report(rc == 0, __FILE__, __LINE__, "%s", err))
		return;
	CHECK(isnan(last.test_accuracy) && last.test_loss < 0.1);
	/* The learnt map: y_j = x_j - x_3 / 2 + 1. */
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

	/* Without a test set: no eval kernel needed, test figures NaN and null. */
	log = tmpfile();
	tr.test = NULL;
	tr.eval = NULL;
	tr.epochs = 4;
	tr.log = log;
	CHECK(nml_train(&tr, &last, err, sizeof err) == 0);
	CHECK(isnan(last.test_loss) && isnan(last.test_accuracy) && last.epoch == 4);
	n = read_log(log, rec, 4);
	CHECK(n == 1 && cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rec[0], "test_loss")));
	CHECK(n == 1 && num(rec[0], "epoch") == 4);
	if (n == 1)
		cJSON_Delete(rec[0]);
	fclose(log);

	/* Mismatched test set and bad settings are errors, not crashes. */
	tr.test = &test_set;
	tr.eval = linear_eval;
	CHECK(nml_train(&tr, &last, err, sizeof err) < 0);
	CHECK_ERR(err, "the test set has");
	tr.test = NULL;
	tr.batch = 0;
	CHECK(nml_train(&tr, &last, err, sizeof err) < 0);
	tr.batch = BATCH;
	tr.step = NULL;
	CHECK(nml_train(&tr, &last, err, sizeof err) < 0);
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
	Run r;
	int stop = 2;
	run_init(&r, 5, 1, NULL);
	r.tr.after_epoch = after_epoch;
	r.tr.user = &stop;
	run(&r);
	CHECK(r.rc < 0 && after_calls == 2 && r.tr.epochs_done == 2);
	CHECK_STR(err, "stop at 2");
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
	Run r;
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

	/* Quiet: nothing at all, progress or not. */
	run_init(&r, 2, 1, NULL);
	r.tr.progress = 1;
	captured(&r, &out, &eo);
	CHECK(*out == 0 && *eo == 0);
	free(out);
	free(eo);

	/* A regression run prints "-" for accuracy, keeping the columns. */
	float params[(XDIM + 1) * YDIM] = {0}, grads[(XDIM + 1) * YDIM];
	double hp[1] = {0.05};
	r.tr = (NmlTrainer){
		.step = linear_step, .eval = linear_eval, .params = params, .grads = grads, .hparams = hp,
		.step_work = BATCH * YDIM * sizeof(float), .out_dim = YDIM, .batch = BATCH, .epochs = 1, .seed = 3,
		.train = &reg_train, .test = &reg_test,
	};
	captured(&r, &out, &eo);
	CHECK(strstr(out, "  test_acc -       ") != NULL);
	free(out);
	free(eo);
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
	nml_data_free(&train_set);
	nml_data_free(&test_set);
	nml_data_free(&reg_train);
	nml_data_free(&reg_test);
	check_rmtree(dir);
	return check_done();
}
