/* test_model.c: runtime/model.c (what libraries made by nmlc build run on), driven by a hand-written
 * linear model that follows the NmlArgs ABI: initialization from the seed, batching and the
 * kernels' view of their arguments, errors, hyperparameters, checkpoints. */
#include "check.h"

#include <math.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "nmlrt.h"

enum { XDIM = 3, YDIM = 2, BATCH = 8 };

static char dir[256], path[512];

static const char *file(const char *name)
{
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return path;
}

/* What the kernels saw. */
static struct {
	int64_t calls, rows, last_n, max_n;
	double last_t;
	int aligned, ftz;
	const void *x;
} seen;

static void saw(const NmlArgs *a)
{
	seen.calls++;
	seen.rows += a->n;
	seen.last_n = a->n;
	seen.max_n = a->n > seen.max_n ? a->n : seen.max_n;
	seen.last_t = a->t;
	seen.x = a->x;
	seen.aligned &= ((uintptr_t)a->x | (uintptr_t)a->y | (uintptr_t)a->work | (uintptr_t)a->pred) % 64 == 0;
#if defined(__x86_64__)
	seen.ftz &= (_mm_getcsr() & 0x8040) == 0x8040;
#endif
}

/* out = x W + b: W [XDIM, YDIM] at 0, b [YDIM] at 16; loss: mean over rows of the summed squared error. */
static float forward(const NmlArgs *a, float *out)
{
	const float *x = a->x, *y = a->y, *w = a->params, *b = w + 16;
	double loss = 0;
	for (int64_t i = 0; i < a->n; i++)
		for (int c = 0; c < YDIM; c++) {
			float o = b[c];
			for (int k = 0; k < XDIM; k++)
				o += x[i * XDIM + k] * w[k * YDIM + c];
			out[i * YDIM + c] = o;
			if (y)
				loss += (o - y[i * YDIM + c]) * (o - y[i * YDIM + c]);
		}
	return (float)(loss / a->n);
}

/* SGD with momentum m (state, same layout): m = mu m + g; p -= lr m. hparams: lr, mu. */
static void step(NmlArgs *a)
{
	saw(a);
	float *out = a->work, *p = a->params, *g = a->grads, *m = a->state;
	const float *x = a->x, *y = a->y;
	*(float *)a->loss = forward(a, out);
	memset(g, 0, 24 * sizeof *g);
	for (int64_t i = 0; i < a->n; i++)
		for (int c = 0; c < YDIM; c++) {
			float d = 2 * (out[i * YDIM + c] - y[i * YDIM + c]) / a->n; /* d(o - y)^2 = 2(o - y) */
			for (int k = 0; k < XDIM; k++)
				g[k * YDIM + c] += x[i * XDIM + k] * d;
			g[16 + c] += d;
		}
	for (int j = 0; j < 24; j++) {
		m[j] = (float)a->hparams[1] * m[j] + g[j];
		p[j] -= (float)a->hparams[0] * m[j];
	}
}

static void eval(NmlArgs *a)
{
	saw(a);
	*(float *)a->loss = forward(a, a->pred);
}

static void predict(NmlArgs *a)
{
	saw(a);
	NmlArgs b = *a;
	b.y = NULL; /* predict must not need targets */
	forward(&b, a->pred);
}

static const NmlSlotDesc params[] = {
	{"w", 2, {XDIM, YDIM}, 0, {NML_INIT_NORMAL, 0, 0.5}},
	{"b", 1, {YDIM}, 16, {NML_INIT_CONST, 0.25, 0}},
};
static const NmlSlotDesc states[] = {
	{"w.m", 2, {XDIM, YDIM}, 0, {NML_INIT_CONST, 0, 0}},
	{"b.m", 1, {YDIM}, 16, {NML_INIT_UNIFORM, -1, 1}},
};
static const char *const hnames[] = {"lr", "mu"};
static const double hdefaults[] = {0.05, 0.5};
static const NmlModelDesc desc = {
	.step = step, .eval = eval, .predict = predict, .work = BATCH * YDIM * sizeof(float),
	.batch = BATCH, .xdim = XDIM, .ydim = YDIM, .out_dim = YDIM,
	.params = params, .nparams = 2, .param_size = 18, .states = states, .nstates = 2, .state_size = 18,
	.hparam_names = hnames, .hparam_defaults = hdefaults, .nhparams = 2,
};

static float xs[40 * XDIM], ys[40 * YDIM];

static void start(void)
{
	memset(&seen, 0, sizeof seen);
	seen.aligned = seen.ftz = 1;
}

static void creation(void)
{
	NmlModel *m = nml_model_create(&desc, 7);
	CHECK(m != NULL);
	double want[XDIM * YDIM];
	nml_init_values(params[0].init, 7, 0, 0, want, XDIM * YDIM);
	int same = 1;
	for (int i = 0; i < XDIM * YDIM; i++)
		same &= nml_model_param(m, 0)[i] == (float)want[i];
	CHECK(same);
	CHECK(nml_model_param(m, 1)[0] == 0.25f && nml_model_param(m, 1)[1] == 0.25f);
	nml_init_values(states[1].init, 7, 1, 1, want, YDIM);
	CHECK(nml_model_state(m, 1)[0] == (float)want[0] && nml_model_state(m, 1)[1] == (float)want[1]);
	CHECK(nml_model_state(m, 1)[0] >= -1 && nml_model_state(m, 1)[0] < 1 && nml_model_state(m, 1)[0] != 0);
	CHECK(!nml_model_param(m, 2) && !nml_model_param(m, -1) && !nml_model_state(m, 2));
	double v = 0;
	CHECK(nml_model_get_hparam(m, "mu", &v) == 0 && v == 0.5);
	CHECK(nml_model_get_step(m) == 0);
	CHECK_STR(nml_model_error(m), "");
	/* Another seed, other weights; the same seed, the same. */
	NmlModel *o = nml_model_create(&desc, 8), *s = nml_model_create(&desc, 7);
	CHECK(memcmp(nml_model_param(m, 0), nml_model_param(o, 0), XDIM * YDIM * sizeof(float)) != 0);
	CHECK(memcmp(nml_model_param(m, 0), nml_model_param(s, 0), XDIM * YDIM * sizeof(float)) == 0);
	nml_model_free(o);
	nml_model_free(s);
	nml_model_free(m);
	nml_model_free(NULL);
}

static void training(void)
{
	NmlModel *m = nml_model_create(&desc, 1);
	double first = 0, loss = 0;
	start();
#if defined(__x86_64__)
	unsigned csr = _mm_getcsr();
#endif
	for (int s = 0; s < 30; s++)
		CHECK(nml_model_train_step(m, xs + (s % 5) * BATCH * XDIM, ys + (s % 5) * BATCH * YDIM, BATCH,
					   s ? &loss : &first) == 0);
#if defined(__x86_64__)
	CHECK(_mm_getcsr() == csr);
#endif
	CHECK(loss < first * 0.5);
	CHECK(seen.calls == 30 && seen.last_t == 30 && seen.max_n == BATCH);
	CHECK(seen.aligned && seen.ftz);
	CHECK(seen.x != xs); /* an aligned copy, not the caller's rows */
	CHECK(nml_model_get_step(m) == 30);

	/* A partial batch; then too many rows, none, NULL: errors that change nothing. */
	CHECK(nml_model_train_step(m, xs, ys, 3, NULL) == 0 && seen.last_n == 3 && seen.last_t == 31);
	float w0 = nml_model_param(m, 0)[0];
	CHECK(nml_model_train_step(m, xs, ys, BATCH + 1, &loss) == -1);
	CHECK_ERR(nml_model_error(m), "compiled for batches of 1 to 8");
	CHECK(nml_model_train_step(m, xs, ys, 0, &loss) == -1);
	CHECK(nml_model_train_step(m, NULL, ys, 1, &loss) == -1);
	CHECK_ERR(nml_model_error(m), "x is NULL");
	CHECK(nml_model_train_step(m, xs, NULL, 1, &loss) == -1);
	CHECK(nml_model_get_step(m) == 31 && nml_model_param(m, 0)[0] == w0);
	CHECK(nml_model_train_step(NULL, xs, ys, 1, &loss) == -1);
	CHECK_ERR(nml_model_error(NULL), "NULL");

	/* evaluate and predict take any number of rows, a batch at a time. */
	float pred[40 * YDIM], pred2[40 * YDIM], one[YDIM];
	double whole = 0, part[5];
	start();
	CHECK(nml_model_evaluate(m, xs, ys, 37, &whole, pred) == 0);
	CHECK(seen.calls == 5 && seen.rows == 37 && seen.max_n == BATCH && seen.last_n == 5 && seen.aligned);
	double sum = 0;
	for (int b = 0; b < 5; b++) {
		int64_t n = b < 4 ? BATCH : 5;
		CHECK(nml_model_evaluate(m, xs + b * BATCH * XDIM, ys + b * BATCH * YDIM, n, &part[b], NULL) == 0);
		sum += part[b] * n;
	}
	CHECK(fabs(whole - sum / 37) <= 1e-12);
	CHECK(nml_model_predict(m, xs, 37, pred2) == 0);
	CHECK(memcmp(pred, pred2, 37 * YDIM * sizeof(float)) == 0);
	CHECK(nml_model_predict(m, xs + 36 * XDIM, 1, one) == 0);
	CHECK(memcmp(one, pred + 36 * YDIM, sizeof one) == 0);
	CHECK(nml_model_predict(m, xs, 1, NULL) == -1);
	CHECK(nml_model_evaluate(m, xs, NULL, 1, &whole, NULL) == -1);
	CHECK(nml_model_get_step(m) == 31);
	nml_model_free(m);
}

static void hyperparameters(void)
{
	NmlModel *m = nml_model_create(&desc, 1);
	double v = 0;
	CHECK(nml_model_set_hparam(m, "lr", 0) == 0 && nml_model_get_hparam(m, "lr", &v) == 0 && v == 0);
	float w0 = nml_model_param(m, 0)[0];
	CHECK(nml_model_train_step(m, xs, ys, BATCH, NULL) == 0);
	CHECK(nml_model_param(m, 0)[0] == w0); /* the kernel reads the value of now */
	CHECK(nml_model_set_hparam(m, "nope", 1) == -1);
	CHECK_ERR(nml_model_error(m), "no hyperparameter 'nope' (the model has: lr mu)");
	CHECK(nml_model_get_hparam(m, NULL, &v) == -1);
	CHECK(nml_model_set_hparam(m, "lr", INFINITY) == -1);
	CHECK(nml_model_set_step(m, -2) == -1);
	CHECK(nml_model_set_step(m, 9) == 0 && nml_model_get_step(m) == 9);
	nml_model_free(m);
}

static void checkpoints(void)
{
	NmlModel *m = nml_model_create(&desc, 3), *o = nml_model_create(&desc, 4);
	for (int s = 0; s < 7; s++)
		nml_model_train_step(m, xs, ys, BATCH, NULL);
	nml_model_set_hparam(m, "mu", 0.875);
	CHECK(nml_model_save(m, file("m.safetensors")) == 0);
	char value[64];
	CHECK(nml_ckpt_meta(file("m.safetensors"), "step", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "7");
	CHECK(nml_ckpt_meta(file("m.safetensors"), "hparam.mu", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "0.875");
	CHECK(nml_ckpt_meta(file("m.safetensors"), "seed", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "3");

	/* Failures first: nothing of o changes. */
	float w0 = nml_model_param(o, 0)[0];
	CHECK(nml_model_load(o, file("none.safetensors")) == -1);
	CHECK_ERR(nml_model_error(o), "none.safetensors");
	NmlTensorRef only_w = {"w", 2, {XDIM, YDIM}, nml_model_param(m, 0)};
	char err[512];
	CHECK(nml_ckpt_save_meta(file("w.safetensors"), &only_w, 1, (NmlMeta[]){{"step", "100"}}, 1, err, sizeof err) == 0);
	CHECK(nml_model_load(o, file("w.safetensors")) == -1);
	CHECK_ERR(nml_model_error(o), "'b'");
	CHECK(nml_ckpt_save_meta(file("bad.safetensors"), &only_w, 1, (NmlMeta[]){{"step", "many"}}, 1, err,
				 sizeof err) == 0);
	CHECK(nml_model_load(o, file("bad.safetensors")) == -1);
	CHECK_ERR(nml_model_error(o), "'step' is not a number");
	CHECK(nml_model_param(o, 0)[0] == w0 && nml_model_get_step(o) == 0);

	CHECK(nml_model_load(o, file("m.safetensors")) == 0);
	CHECK(memcmp(nml_model_param(o, 0), nml_model_param(m, 0), 18 * sizeof(float)) == 0);
	CHECK(memcmp(nml_model_state(o, 0), nml_model_state(m, 0), 18 * sizeof(float)) == 0);
	double mu = 0;
	CHECK(nml_model_get_step(o) == 7 && nml_model_get_hparam(o, "mu", &mu) == 0 && mu == 0.875);

	/* Parameters only: a file without state or metadata does. */
	NmlModel *p = nml_model_create(&desc, 5);
	NmlTensorRef both[2] = {{"w", 2, {XDIM, YDIM}, nml_model_param(m, 0)}, {"b", 1, {YDIM}, nml_model_param(m, 1)}};
	CHECK(nml_ckpt_save(file("p.safetensors"), both, 2, err, sizeof err) == 0);
	float s0 = nml_model_state(p, 1)[0];
	CHECK(nml_model_load_params(p, file("p.safetensors")) == 0);
	CHECK(memcmp(nml_model_param(p, 0), nml_model_param(m, 0), 18 * sizeof(float)) == 0);
	CHECK(nml_model_state(p, 1)[0] == s0 && nml_model_get_step(p) == 0);
	CHECK(nml_model_load_params(p, file("none.safetensors")) == -1);
	CHECK(nml_model_save(p, NULL) == -1 && nml_model_load(p, NULL) == -1);
	nml_model_free(p);
	nml_model_free(m);
	nml_model_free(o);
}

int main(void)
{
	check_tmpdir(dir, sizeof dir);
	NmlRng r;
	nml_rng_init(&r, 42, 0);
	for (int i = 0; i < 40; i++) {
		for (int k = 0; k < XDIM; k++)
			xs[i * XDIM + k] = (float)nml_rng_normal(&r);
		ys[i * YDIM] = xs[i * XDIM] - 2 * xs[i * XDIM + 2] + 1;
		ys[i * YDIM + 1] = 0.5f * xs[i * XDIM + 1];
	}
	creation();
	training();
	hyperparameters();
	checkpoints();
	check_rmtree(dir);
	return check_done();
}
