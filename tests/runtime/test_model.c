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
	const void *x, *y;
} seen;

static void saw(const NmlArgs *a)
{
	seen.calls++;
	seen.rows += a->n;
	seen.last_n = a->n;
	seen.max_n = a->n > seen.max_n ? a->n : seen.max_n;
	seen.last_t = a->t;
	seen.x = a->block[NML_B_X];
	seen.y = a->block[NML_B_Y];
	/* the model's own blocks; x and y are the caller's rows where it passes them */
	seen.aligned &= ((uintptr_t)a->block[NML_B_WORK] | (uintptr_t)a->block[NML_B_PRED]) % 64 == 0;
#if defined(__x86_64__)
	seen.ftz &= (_mm_getcsr() & 0x8040) == 0x8040;
#endif
}

/* out = x W + b: W [XDIM, YDIM] at 0, b [YDIM] at 16; loss: mean over rows of the summed squared error. */
static float forward(const NmlArgs *a, float *out)
{
	const float *x = a->block[NML_B_X], *y = a->block[NML_B_Y], *w = a->block[NML_B_PARAMS], *b = w + 16;
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
	float *out = a->block[NML_B_WORK], *p = a->block[NML_B_PARAMS], *g = a->block[NML_B_GRADS],
	      *m = a->block[NML_B_STATE];
	const float *x = a->block[NML_B_X], *y = a->block[NML_B_Y];
	*(float *)a->block[NML_B_LOSS] = forward(a, out);
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
	*(float *)a->block[NML_B_LOSS] = forward(a, a->block[NML_B_PRED]);
}

static void predict(NmlArgs *a)
{
	saw(a);
	NmlArgs b = *a;
	b.block[NML_B_Y] = b.block[NML_B_LOSS] = NULL; /* predict must need neither targets nor a loss */
	forward(&b, a->block[NML_B_PRED]);
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
	.abi = NML_ABI_VERSION, .step = step, .eval = eval, .predict = predict, .work = BATCH * YDIM * sizeof(float),
	.batch = BATCH, .xdim = XDIM, .ydim = YDIM, .out_dim = YDIM,
	.block = {[NML_B_PARAMS] = {params, 2, 18}, [NML_B_STATE] = {states, 2, 18}},
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
	nml_init_values(params[0].init, 7, NML_B_PARAMS, 0, want, XDIM * YDIM);
	int same = 1;
	for (int i = 0; i < XDIM * YDIM; i++)
		same &= nml_model_param(m, 0)[i] == (float)want[i];
	CHECK(same);
	CHECK(nml_model_param(m, 1)[0] == 0.25f && nml_model_param(m, 1)[1] == 0.25f);
	nml_init_values(states[1].init, 7, NML_B_STATE, 1, want, YDIM);
	CHECK(nml_model_state(m, 1)[0] == (float)want[0] && nml_model_state(m, 1)[1] == (float)want[1]);
	CHECK(nml_model_state(m, 1)[0] >= -1 && nml_model_state(m, 1)[0] < 1 && nml_model_state(m, 1)[0] != 0);
	CHECK(!nml_model_param(m, 2) && !nml_model_param(m, -1) && !nml_model_state(m, 2));
	double v = 0;
	CHECK(nml_model_get_hparam(m, "mu", &v) == 0 && v == 0.5);
	CHECK(nml_model_get_step(m) == 0);
	CHECK_STR(nml_model_error(m), "");
	/* The blocks as the desc lays them out, and what the model was made from. */
	CHECK(nml_model_desc(m) == &desc && nml_model_seed(m) == 7);
	CHECK(nml_model_block(m, NML_B_PARAMS) == nml_model_param(m, 0) &&
	      nml_model_block(m, NML_B_PARAMS) + 16 == nml_model_param(m, 1));
	CHECK(nml_model_block(m, NML_B_STATE) + 16 == nml_model_state(m, 1));
	CHECK(nml_model_block(m, NML_B_GRADS) != NULL && nml_model_block(m, NML_B_BUFFERS) != NULL);
	CHECK(!nml_model_block(m, NML_B_X) && !nml_model_block(m, NML_B_WORK) && !nml_model_block(m, NML_NBLOCKS) &&
	      !nml_model_block(NULL, NML_B_PARAMS));
	double *hp = nml_model_hparams(m);
	CHECK(hp && hp[0] == 0.05 && hp[1] == 0.5);
	hp[1] = 0.25; /* the model's own array */
	CHECK(nml_model_get_hparam(m, "mu", &v) == 0 && v == 0.25);
	CHECK(!nml_model_desc(NULL) && !nml_model_hparams(NULL) && nml_model_seed(NULL) == 0);
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
	/* the caller's rows, read where they are (runtime/model.c, rows_args) */
	CHECK(seen.x == xs + 4 * BATCH * XDIM && seen.y == ys + 4 * BATCH * YDIM);
	CHECK(nml_model_get_step(m) == 30);

	/* Rows that overlap memory the kernel writes (a parameter passed as x) are copied first: the
	 * step is the one the same values give from the caller's own array. */
	{
		NmlModel *twin = nml_model_create(&desc, 1);
		CHECK(twin != NULL);
		for (int s = 0; s < 30 && twin; s++)
			CHECK(nml_model_train_step(twin, xs + (s % 5) * BATCH * XDIM, ys + (s % 5) * BATCH * YDIM, BATCH, NULL) == 0);
		float *w = nml_model_param(m, 0), rows[2 * XDIM];
		memcpy(rows, w, sizeof rows);
		double la = 0, lb = 1;
		CHECK(nml_model_train_step(m, w, ys, 2, &la) == 0);
		CHECK(seen.x != w && (uintptr_t)seen.x % 64 == 0);
		CHECK(twin && nml_model_train_step(twin, rows, ys, 2, &lb) == 0);
		CHECK(la == lb && twin && memcmp(nml_model_param(m, 0), nml_model_param(twin, 0), XDIM * YDIM * sizeof(float)) == 0);
		nml_model_free(twin);
	}
	CHECK(nml_model_get_step(m) == 31);

	/* Committing the scratch between steps changes nothing the model holds. */
	float before[XDIM * YDIM];
	memcpy(before, nml_model_param(m, 0), sizeof before);
	nml_model_touch(m);
	CHECK(memcmp(before, nml_model_param(m, 0), sizeof before) == 0 && nml_model_get_step(m) == 31);

	/* A partial batch; then too many rows, none, NULL: errors that change nothing. */
	CHECK(nml_model_train_step(m, xs, ys, 3, NULL) == 0 && seen.last_n == 3 && seen.last_t == 32);
	float w0 = nml_model_param(m, 0)[0];
	CHECK(nml_model_train_step(m, xs, ys, BATCH + 1, &loss) == -1);
	CHECK_ERR(nml_model_error(m), "compiled for batches of 1 to 8");
	CHECK(nml_model_train_step(m, xs, ys, 0, &loss) == -1);
	CHECK(nml_model_train_step(m, NULL, ys, 1, &loss) == -1);
	CHECK_ERR(nml_model_error(m), "x is NULL");
	CHECK(nml_model_train_step(m, xs, NULL, 1, &loss) == -1);
	CHECK(nml_model_get_step(m) == 32 && nml_model_param(m, 0)[0] == w0);
	CHECK(nml_model_train_step(NULL, xs, ys, 1, &loss) == -1);
	CHECK_ERR(nml_model_error(NULL), "NULL");

	/* evaluate and predict take any number of rows, a batch at a time. */
	float pred[40 * YDIM], pred2[40 * YDIM], one[YDIM];
	double whole = 0, part[5];
	start();
	CHECK(nml_model_evaluate(m, xs, ys, 37, &whole, pred) == 0);
	CHECK(seen.calls == 5 && seen.rows == 37 && seen.max_n == BATCH && seen.last_n == 5 && seen.aligned);
	CHECK(seen.x == xs + 4 * BATCH * XDIM && seen.y == ys + 4 * BATCH * YDIM);
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
	CHECK(nml_model_get_step(m) == 32);
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
	CHECK(nml_ckpt_meta(file("m.safetensors"), "epoch", value, sizeof value, NULL, 0) == 1);

	/* The caller's pairs go alongside the model's own (nmlc run adds the epoch). */
	const NmlMeta extra[] = {{"epoch", "12"}, {"note", "a \"quoted\" value"}};
	CHECK(nml_model_save_meta(m, file("e.safetensors"), extra, 2) == 0);
	CHECK(nml_ckpt_meta(file("e.safetensors"), "epoch", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "12");
	CHECK(nml_ckpt_meta(file("e.safetensors"), "note", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "a \"quoted\" value");
	CHECK(nml_ckpt_meta(file("e.safetensors"), "step", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "7");
	CHECK(nml_ckpt_meta(file("e.safetensors"), "seed", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "3");
	CHECK(nml_ckpt_meta(file("e.safetensors"), "hparam.mu", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "0.875");
	CHECK(nml_ckpt_meta(file("e.safetensors"), "hparam.lr", value, sizeof value, NULL, 0) == 0);
	CHECK(strtod(value, NULL) == 0.05);
	CHECK(nml_ckpt_meta(file("e.safetensors"), "format", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "nml");
	CHECK(nml_model_save_meta(m, file("z.safetensors"), NULL, 0) == 0);
	CHECK(nml_ckpt_meta(file("z.safetensors"), "step", value, sizeof value, NULL, 0) == 0);
	CHECK_STR(value, "7");
	CHECK(nml_model_save_meta(m, NULL, extra, 2) == -1);

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
	NmlModel *e = nml_model_create(&desc, 6);
	CHECK(nml_model_load(e, file("e.safetensors")) == 0);
	CHECK(memcmp(nml_model_param(e, 0), nml_model_param(m, 0), 18 * sizeof(float)) == 0);
	CHECK(nml_model_get_step(e) == 7);
	nml_model_free(e);

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

static void abi(void)
{
	char err[256] = "", want[32];
	CHECK(nml_model_check_abi(&desc, err, sizeof err) == 0);
	/* Another version, and 0: a desc from before the field, which left it unset. */
	const int versions[] = {NML_ABI_VERSION + 1, NML_ABI_VERSION - 1, 0};
	for (int i = 0; i < 3; i++) {
		NmlModelDesc other = desc;
		other.abi = versions[i];
		CHECK(nml_model_create(&other, 1) == NULL);
		err[0] = 0;
		CHECK(nml_model_check_abi(&other, err, sizeof err) == -1);
		snprintf(want, sizeof want, "ABI %d", versions[i]);
		CHECK_ERR(err, want);
		snprintf(want, sizeof want, "ABI %d", NML_ABI_VERSION);
		CHECK_ERR(err, want);
		CHECK(nml_model_check_abi(&other, NULL, 0) == -1);
	}
	CHECK(nml_model_check_abi(NULL, err, sizeof err) == -1);
	CHECK_ERR(err, "NULL");
	CHECK(nml_model_create(NULL, 1) == NULL);
	/* Batch blocks whose size would wrap (2^62 rows of XDIM floats) or exceed 2^40 elements are
	 * refused before anything is allocated; so is a negative width. */
	const int64_t batches[] = {(int64_t)1 << 62, INT64_MAX, ((int64_t)1 << 40) / XDIM + 1};
	for (int i = 0; i < 3; i++) {
		NmlModelDesc big = desc;
		big.batch = batches[i];
		err[0] = 0;
		CHECK(nml_model_check_abi(&big, err, sizeof err) == -1);
		CHECK_ERR(err, "2^40");
		CHECK(nml_model_create(&big, 1) == NULL);
	}
	NmlModelDesc neg = desc;
	neg.out_dim = -1;
	CHECK(nml_model_check_abi(&neg, err, sizeof err) == -1 && nml_model_create(&neg, 1) == NULL);
}

/* nml_model_train_rows is nml_model_train_step on rows gathered by index. */
static void train_rows(void)
{
	NmlData d = {.n = 40, .xdim = XDIM, .ydim = YDIM, .x = xs, .y = ys};
	NmlModel *a = nml_model_create(&desc, 11), *b = nml_model_create(&desc, 11), *fresh = nml_model_create(&desc, 11);
	static const int64_t rows[][BATCH + 1] = {
		{5, 17, 3, 39, 0, 22, 8},          /* a partial batch */
		{38, 1, 2, 30, 31, 12, 19, 26},    /* a full one */
		{7, 7, 33},                        /* a row twice */
	};
	static const int64_t counts[] = {7, BATCH, 3};
	float xb[BATCH * XDIM], yb[BATCH * YDIM];
	for (int s = 0; s < 3; s++) {
		int64_t n = counts[s];
		for (int64_t i = 0; i < n; i++) {
			memcpy(xb + i * XDIM, xs + rows[s][i] * XDIM, XDIM * sizeof(float));
			memcpy(yb + i * YDIM, ys + rows[s][i] * YDIM, YDIM * sizeof(float));
		}
		double la = -1, lb = -2;
		start();
		CHECK(nml_model_train_rows(a, &d, rows[s], n, &la) == 0);
		CHECK(seen.calls == 1 && seen.last_n == n && seen.last_t == s + 1 && seen.aligned && seen.ftz);
		CHECK(nml_model_train_step(b, xb, yb, n, &lb) == 0);
		check_report(la == lb && la > 0, __FILE__, __LINE__, "step %d: loss %.9g (rows) vs %.9g (by hand)", s + 1,
			     la, lb);
		CHECK(memcmp(nml_model_block(a, NML_B_PARAMS), nml_model_block(b, NML_B_PARAMS), 18 * sizeof(float)) == 0);
		CHECK(memcmp(nml_model_block(a, NML_B_STATE), nml_model_block(b, NML_B_STATE), 18 * sizeof(float)) == 0);
	}
	CHECK(nml_model_get_step(a) == 3 && nml_model_get_step(b) == 3);
	CHECK(memcmp(nml_model_param(a, 0), nml_model_param(fresh, 0), XDIM * YDIM * sizeof(float)) != 0);
	CHECK(nml_model_train_rows(a, &d, rows[0], 1, NULL) == 0 && nml_model_get_step(a) == 4);

	/* Rows that do not fit: errors that change nothing. */
	float w0 = nml_model_param(a, 0)[0];
	double loss = 0;
	NmlData narrow = d, classes = d;
	narrow.xdim = XDIM - 1;
	classes.ydim = 0;
	classes.classes = 3;
	start();
	CHECK(nml_model_train_rows(a, &d, rows[0], BATCH + 1, &loss) == -1);
	CHECK_ERR(nml_model_error(a), "do not fit");
	CHECK(nml_model_train_rows(a, &d, rows[0], 0, &loss) == -1);
	CHECK(nml_model_train_rows(a, &d, NULL, 1, &loss) == -1);
	CHECK(nml_model_train_rows(a, NULL, rows[0], 1, &loss) == -1);
	CHECK(nml_model_train_rows(a, &narrow, rows[0], 1, &loss) == -1);
	CHECK(nml_model_train_rows(a, &classes, rows[0], 1, &loss) == -1);
	CHECK(nml_model_train_rows(NULL, &d, rows[0], 1, &loss) == -1);
	CHECK(seen.calls == 0 && nml_model_get_step(a) == 4 && nml_model_param(a, 0)[0] == w0);
	nml_model_free(a);
	nml_model_free(b);
	nml_model_free(fresh);
}

/* A classifier for evaluate_data: pred[i][c] = x[i][c] + bias[c] over CLASSES columns (pred1: only
 * the first); the loss is the mean label, so the mean over batches can be checked. */
enum { CLASSES = XDIM };
static float class_forward(const NmlArgs *a, int width)
{
	const float *x = a->block[NML_B_X], *y = a->block[NML_B_Y], *bias = a->block[NML_B_PARAMS];
	float *pred = a->block[NML_B_PRED];
	double sum = 0;
	for (int64_t i = 0; i < a->n; i++) {
		for (int c = 0; c < width; c++)
			pred[i * width + c] = x[i * XDIM + c] + bias[c];
		sum += y[i];
	}
	return (float)(sum / a->n);
}
static void class_eval(NmlArgs *a)
{
	saw(a);
	*(float *)a->block[NML_B_LOSS] = class_forward(a, CLASSES);
}
static void class_eval1(NmlArgs *a)
{
	*(float *)a->block[NML_B_LOSS] = class_forward(a, 1);
}
static const NmlSlotDesc class_params[] = {{"bias", 1, {CLASSES}, 0, {NML_INIT_CONST, 0, 0}}};
static const NmlModelDesc class_desc = {
	.abi = NML_ABI_VERSION, .eval = class_eval, .batch = BATCH, .xdim = XDIM, .ydim = 0, .classes = CLASSES,
	.out_dim = CLASSES, .block = {[NML_B_PARAMS] = {class_params, 1, CLASSES}},
};

static void evaluate_data(void)
{
	/* Regression targets: a loss, no accuracy. */
	NmlModel *m = nml_model_create(&desc, 2);
	NmlData d = {.n = 37, .xdim = XDIM, .ydim = YDIM, .x = xs, .y = ys};
	double loss = -1, acc = 0, want = -2;
	CHECK(nml_model_evaluate(m, xs, ys, 37, &want, NULL) == 0);
	start();
	CHECK(nml_model_evaluate_data(m, &d, &loss, &acc) == 0);
	CHECK(seen.calls == 5 && seen.rows == 37 && seen.last_n == 5 && seen.aligned);
	CHECK(loss == want && loss > 0 && isnan(acc));
	CHECK(nml_model_evaluate_data(m, &d, &loss, NULL) == 0 && loss == want);
	NmlData narrow = d, empty = d;
	narrow.xdim = XDIM - 1;
	empty.n = 0;
	CHECK(nml_model_evaluate_data(m, &narrow, &loss, &acc) == -1);
	CHECK(nml_model_evaluate_data(m, &empty, &loss, &acc) == -1);
	CHECK(nml_model_evaluate_data(m, NULL, &loss, &acc) == -1);
	CHECK(nml_model_evaluate_data(NULL, &d, &loss, &acc) == -1);
	CHECK(nml_model_get_step(m) == 0);
	nml_model_free(m);

	/* Class labels: the fraction of rows whose output's argmax is the label, over several batches.
	 * Row i peaks at column i % 3; every fifth row's label is another class. */
	enum { N = 21 };
	float cx[N * XDIM], cy[N];
	int right = 0;
	for (int i = 0; i < N; i++) {
		for (int c = 0; c < XDIM; c++)
			cx[i * XDIM + c] = c == i % CLASSES ? 1.0f + 0.01f * i : -0.5f * c;
		cy[i] = (float)(i % 5 ? i % CLASSES : (i + 1) % CLASSES);
		right += i % 5 != 0;
	}
	NmlData cd = {.n = N, .xdim = XDIM, .ydim = 0, .classes = CLASSES, .x = cx, .y = cy};
	m = nml_model_create(&class_desc, 1);
	start();
	CHECK(nml_model_evaluate_data(m, &cd, &loss, &acc) == 0);
	CHECK(seen.calls == 3 && seen.rows == N && seen.last_n == N % BATCH);
	check_report(acc == (double)right / N, __FILE__, __LINE__, "accuracy %g, want %d/%d", acc, right, N);
	double mean = 0;
	for (int i = 0; i < N; i++)
		mean += cy[i];
	mean /= N;
	check_report(fabs(loss - mean) < 1e-6, __FILE__, __LINE__, "loss %.9g, want %.9g", loss, mean);
	/* The bias moves the argmax: every row now says class 2. */
	nml_model_param(m, 0)[2] = 10;
	int twos = 0;
	for (int i = 0; i < N; i++)
		twos += cy[i] == 2;
	CHECK(nml_model_evaluate_data(m, &cd, &loss, &acc) == 0 && acc == (double)twos / N);
	/* Class data on a regression model, or regression data on a classifier: errors. */
	CHECK(nml_model_evaluate_data(m, &d, &loss, &acc) == -1);
	nml_model_free(m);
	m = nml_model_create(&desc, 1);
	CHECK(nml_model_evaluate_data(m, &cd, &loss, &acc) == -1);
	nml_model_free(m);

	/* One output column: no argmax to take, so no accuracy even with labels. */
	NmlModelDesc one = class_desc;
	one.eval = class_eval1;
	one.out_dim = 1;
	m = nml_model_create(&one, 1);
	acc = 0;
	CHECK(nml_model_evaluate_data(m, &cd, &loss, &acc) == 0 && isnan(acc) && fabs(loss - mean) < 1e-6);
	nml_model_free(m);
}

/* A MODEL block besides parameters and state: the kernel's buffers are initialized from the seed,
 * kept between steps, saved and loaded with the rest. */
static void step_counting(NmlArgs *a)
{
	step(a);
	float *buf = a->block[NML_B_BUFFERS];
	buf[0] += (float)a->n;
}
static const NmlSlotDesc buffer_slots[] = {
	{"rows", 1, {1}, 0, {NML_INIT_CONST, 0, 0}},
	{"noise", 1, {3}, 1, {NML_INIT_UNIFORM, 2, 3}},
};

static void buffers(void)
{
	NmlModelDesc bd = desc;
	bd.step = step_counting;
	bd.block[NML_B_BUFFERS] = (NmlBlockDesc){buffer_slots, 2, 4};
	NmlModel *m = nml_model_create(&bd, 5), *o = nml_model_create(&bd, 6);
	float *buf = nml_model_block(m, NML_B_BUFFERS);
	double want[3];
	nml_init_values(buffer_slots[1].init, 5, NML_B_BUFFERS, 1, want, 3);
	CHECK(buf[0] == 0 && buf[1] == (float)want[0] && buf[2] == (float)want[1] && buf[3] == (float)want[2]);
	CHECK(buf[1] >= 2 && buf[1] < 3);
	/* Their own stream: not the parameters' or the state's of the same index. */
	double p1[3], s1[3];
	NmlInit u = buffer_slots[1].init;
	nml_init_values(u, 5, NML_B_PARAMS, 1, p1, 3);
	nml_init_values(u, 5, NML_B_STATE, 1, s1, 3);
	CHECK(want[0] != p1[0] && want[0] != s1[0] && p1[0] != s1[0]);
	/* The rest of the model is as without buffers. */
	NmlModel *plain = nml_model_create(&desc, 5);
	CHECK(memcmp(nml_model_block(m, NML_B_PARAMS), nml_model_block(plain, NML_B_PARAMS), 18 * sizeof(float)) == 0);
	CHECK(memcmp(nml_model_block(m, NML_B_STATE), nml_model_block(plain, NML_B_STATE), 18 * sizeof(float)) == 0);
	nml_model_free(plain);

	for (int s = 0; s < 3; s++)
		CHECK(nml_model_train_step(m, xs, ys, s ? BATCH : 5, NULL) == 0);
	CHECK(buf[0] == 21 && buf[1] == (float)want[0]);
	CHECK(nml_model_save(m, file("buf.safetensors")) == 0);
	float rows = 0;
	NmlTensorRef r = {"rows", 1, {1}, &rows};
	char err[512];
	CHECK(nml_ckpt_load(file("buf.safetensors"), &r, 1, err, sizeof err) == 0 && rows == 21);
	CHECK(nml_model_load(o, file("buf.safetensors")) == 0);
	CHECK(memcmp(nml_model_block(o, NML_B_BUFFERS), buf, 4 * sizeof(float)) == 0);
	CHECK(memcmp(nml_model_block(o, NML_B_PARAMS), nml_model_block(m, NML_B_PARAMS), 18 * sizeof(float)) == 0);
	/* A checkpoint without them (the model without buffers) does not load whole; its parameters do. */
	NmlModel *p = nml_model_create(&desc, 5), *q = nml_model_create(&bd, 7);
	CHECK(nml_model_save(p, file("nobuf.safetensors")) == 0);
	CHECK(nml_model_load(q, file("nobuf.safetensors")) == -1);
	CHECK_ERR(nml_model_error(q), "'rows'");
	float q1 = nml_model_block(q, NML_B_BUFFERS)[1];
	CHECK(nml_model_load_params(q, file("nobuf.safetensors")) == 0);
	CHECK(nml_model_block(q, NML_B_BUFFERS)[1] == q1);
	CHECK(memcmp(nml_model_block(q, NML_B_PARAMS), nml_model_block(p, NML_B_PARAMS), 18 * sizeof(float)) == 0);
	nml_model_free(p);
	nml_model_free(q);
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
	abi();
	train_rows();
	evaluate_data();
	buffers();
	check_rmtree(dir);
	return check_done();
}
