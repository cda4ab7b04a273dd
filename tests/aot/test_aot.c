/* test_aot.c: drives a library made by `nmlc build ... -o DIR/libmodel.so` through its header,
 * as a user's program would, and trains it exactly as nmlc run would (same seed, same epoch order,
 * same batches), so aot.py can compare the two bit for bit.
 *
 *   test_aot DIR X.npy Y.npy EPOCHS SEED [RUN.safetensors]
 *
 * Writes DIR/init.safetensors (the fresh model) and DIR/trained.safetensors; prints
 * "epoch E train_loss L" per epoch and "eval_loss L" (the training data, after training), with
 * %.17g as nmlc run's --log does. With RUN (nmlc run --save of the same run), also checks that
 * loading it gives this model's tensors exactly. Ends with "N passed, M failed". */
#include "check.h"

#include <math.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model.h"
#include "nmlrt.h"

static char path[4096];

static const char *in_dir(const char *dir, const char *name)
{
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return path;
}

static size_t numel(const model_tensor *t)
{
	size_t n = 1;
	for (int k = 0; k < t->rank; k++)
		n *= (size_t)t->shape[k];
	return n;
}

/* Every parameter and state tensor of a and b equal, bit for bit. */
static int same_tensors(model_model *a, model_model *b)
{
	for (int i = 0; i < MODEL_NUM_PARAMS; i++)
		if (memcmp(model_param_data(a, i), model_param_data(b, i), numel(model_param_info(i)) * sizeof(float)))
			return 0;
	for (int i = 0; i < MODEL_NUM_STATES; i++)
		if (memcmp(model_state_data(a, i), model_state_data(b, i), numel(model_state_info(i)) * sizeof(float)))
			return 0;
	return 1;
}

static void check_api(model_model *m, const NmlData *d)
{
	int64_t n = d->n, yw = MODEL_Y_DIM ? MODEL_Y_DIM : 1;
	double loss = 0;
	char msg[1024];

	/* The tables */
	CHECK(MODEL_X_DIM == d->xdim);
	CHECK(MODEL_Y_DIM == d->ydim);
	for (int i = 0; i < MODEL_NUM_PARAMS; i++)
		CHECK(model_param_info(i) && model_param_info(i)->name[0] && model_param_data(m, i));
	for (int i = 0; i < MODEL_NUM_STATES; i++)
		CHECK(model_state_info(i) && model_state_info(i)->name[0] && model_state_data(m, i));
	CHECK(!model_param_info(-1) && !model_param_info(MODEL_NUM_PARAMS) && !model_param_data(m, MODEL_NUM_PARAMS));
	CHECK(!model_state_info(MODEL_NUM_STATES) && !model_state_data(m, -1));
	for (int i = 0; i < MODEL_NUM_HPARAMS; i++)
		CHECK(model_hparam_name(i) != NULL);
	CHECK(model_hparam_name(MODEL_NUM_HPARAMS) == NULL);

	/* Bad calls fail with a message and change nothing */
	int64_t step = model_get_step(m);
	float *x = calloc((size_t)((MODEL_BATCH + 1) * MODEL_X_DIM), sizeof *x);
	float *y = calloc((size_t)((MODEL_BATCH + 1) * yw), sizeof *y);
	CHECK(model_train_step(m, x, y, MODEL_BATCH + 1, &loss) == -1);
	CHECK_ERR(model_error(m), "compiled for batches of 1 to");
	CHECK(model_train_step(m, x, y, 0, &loss) == -1);
	CHECK(model_train_step(m, NULL, y, 1, &loss) == -1);
	CHECK(model_train_step(m, x, NULL, 1, &loss) == -1);
	CHECK(model_predict(m, x, 1, NULL) == -1);
	CHECK(model_evaluate(m, x, y, 0, &loss, NULL) == -1);
	CHECK(model_get_step(m) == step);
	CHECK(model_set_hparam(m, "no_such", 1) == -1);
	CHECK_ERR(model_error(m), "no hyperparameter 'no_such'");
	CHECK(model_get_hparam(m, "no_such", &loss) == -1);
	CHECK(model_set_step(m, -1) == -1);
	CHECK(model_load(m, in_dir("/nonexistent", "x.safetensors")) == -1);
	CHECK_ERR(model_error(m), "/nonexistent/x.safetensors");
	CHECK(model_error(NULL) != NULL);
	CHECK(model_train_step(NULL, x, y, 1, &loss) == -1);
	free(x);
	free(y);

	/* Hyperparameters */
	if (MODEL_NUM_HPARAMS) {
		const char *name = model_hparam_name(0);
		double v = 0, w = 0;
		CHECK(model_get_hparam(m, name, &v) == 0);
		CHECK(model_set_hparam(m, name, v * 2 + 1) == 0 && model_get_hparam(m, name, &w) == 0 && w == v * 2 + 1);
		CHECK(model_set_hparam(m, name, NAN) == -1);
		CHECK(model_set_hparam(m, name, v) == 0);
	}

	/* predict gives evaluate's output; evaluate of any n is the row-weighted mean of its batches */
	float *p1 = malloc((size_t)(n * MODEL_OUT_DIM) * sizeof *p1), *p2 = malloc((size_t)(n * MODEL_OUT_DIM) * sizeof *p2);
	double whole = 0, head = 0, tail = 0;
	CHECK(model_evaluate(m, d->x, d->y, n, &whole, p1) == 0);
	CHECK(model_predict(m, d->x, n, p2) == 0);
	CHECK(memcmp(p1, p2, (size_t)(n * MODEL_OUT_DIM) * sizeof *p1) == 0);
	int64_t cut = n <= MODEL_BATCH ? n / 2 : MODEL_BATCH;
	CHECK(model_evaluate(m, d->x, d->y, cut, &head, NULL) == 0);
	CHECK(model_evaluate(m, d->x + cut * d->xdim, d->y + cut * yw, n - cut, &tail, NULL) == 0);
	snprintf(msg, sizeof msg, "%.9g vs %.9g", whole, (head * cut + tail * (n - cut)) / n);
	check_report(fabs(whole - (head * cut + tail * (n - cut)) / n) <= 1e-6 * fabs(whole), __FILE__, __LINE__,
		     "evaluate in pieces: %s", msg);
	free(p1);
	free(p2);
}

/* A copy of count floats at src that ends where an unmapped page begins, on read-only pages: a read
 * past the end or a write ends the program. munmap(*map, *len) frees it. */
static const float *fenced(const float *src, size_t count, void **map, size_t *len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = count * sizeof(float);
	size_t data = (bytes + page - 1) / page * page;
	*len = data + page;
	char *base = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED) {
		*map = NULL;
		return NULL;
	}
	float *at = (float *)(base + data - bytes);
	memcpy(at, src, bytes);
	if (mprotect(base, data, PROT_READ) || mprotect(base + data, page, PROT_NONE)) {
		munmap(base, *len);
		*map = NULL;
		return NULL;
	}
	*map = base;
	return at;
}

/* The library reads the caller's x and y where they are (runtime/model.c, rows_args): only their
 * first n rows, and never writes them. Rows on read-only pages that end at an unmapped one, a whole
 * batch and a partial one, give the same model, losses and outputs as the same rows in a buffer of
 * the batch's size. */
static void check_in_place(const NmlData *d, uint64_t seed)
{
	int64_t yw = MODEL_Y_DIM ? MODEL_Y_DIM : 1, batch = d->n < MODEL_BATCH ? d->n : MODEL_BATCH;
	int64_t counts[2] = {batch, batch > 1 ? batch / 2 + 1 : 1};
	float *x = malloc((size_t)(MODEL_BATCH * d->xdim) * sizeof *x), *y = malloc((size_t)(MODEL_BATCH * yw) * sizeof *y);
	float *p1 = malloc((size_t)(batch * MODEL_OUT_DIM) * sizeof *p1), *p2 = malloc((size_t)(batch * MODEL_OUT_DIM) * sizeof *p2);
	model_model *a = model_create(seed), *b = model_create(seed);
	CHECK(x && y && p1 && p2 && a && b);
	for (int s = 0; s < 2 && x && y && p1 && p2 && a && b; s++) {
		int64_t n = counts[s];
		memcpy(x, d->x + s * d->xdim, (size_t)(n * d->xdim) * sizeof *x); /* rows s .. s + n */
		memcpy(y, d->y + s * yw, (size_t)(n * yw) * sizeof *y);
		void *mx, *my;
		size_t lx, ly;
		const float *fx = fenced(x, (size_t)(n * d->xdim), &mx, &lx), *fy = fenced(y, (size_t)(n * yw), &my, &ly);
		CHECK(fx && fy);
		if (!fx || !fy)
			break;
		double la = NAN, lb = NAN, ea = NAN, eb = NAN;
		CHECK(model_train_step(a, x, y, n, &la) == 0);
		CHECK(model_train_step(b, fx, fy, n, &lb) == 0);
		CHECK(memcmp(&la, &lb, sizeof la) == 0 && same_tensors(a, b));
		CHECK(model_evaluate(a, x, y, n, &ea, p1) == 0);
		CHECK(model_evaluate(b, fx, fy, n, &eb, p2) == 0);
		CHECK(memcmp(&ea, &eb, sizeof ea) == 0 && memcmp(p1, p2, (size_t)(n * MODEL_OUT_DIM) * sizeof *p1) == 0);
		CHECK(model_predict(b, fx, n, p2) == 0 && memcmp(p1, p2, (size_t)(n * MODEL_OUT_DIM) * sizeof *p1) == 0);
		munmap(mx, lx);
		munmap(my, ly);
	}
	model_free(a);
	model_free(b);
	free(x);
	free(y);
	free(p1);
	free(p2);
}

/* Save, load into a fresh model, and load_params: the tensors and step come back exactly. */
static void check_checkpoints(model_model *m, const char *dir, uint64_t seed, const char *run)
{
	model_model *f = model_create(seed + 1);
	CHECK(f != NULL);
	CHECK(model_save(m, in_dir(dir, "again.safetensors")) == 0);
	float *before = malloc(sizeof(float) * numel(model_param_info(0)));
	memcpy(before, model_param_data(f, 0), sizeof(float) * numel(model_param_info(0)));
	CHECK(model_load(f, in_dir(dir, "missing.safetensors")) == -1);
	CHECK(memcmp(before, model_param_data(f, 0), sizeof(float) * numel(model_param_info(0))) == 0);
	CHECK(model_load(f, in_dir(dir, "again.safetensors")) == 0);
	CHECK(same_tensors(m, f));
	CHECK(model_get_step(f) == model_get_step(m));
	for (int i = 0; i < MODEL_NUM_HPARAMS; i++) {
		double a = 0, b = 1;
		model_get_hparam(m, model_hparam_name(i), &a);
		model_get_hparam(f, model_hparam_name(i), &b);
		CHECK(a == b);
	}
	/* load_params: the parameters only */
	model_model *g = model_create(seed);
	CHECK(model_set_step(g, 5) == 0);
	CHECK(model_load_params(g, in_dir(dir, "trained.safetensors")) == 0);
	CHECK(model_get_step(g) == 5);
	for (int i = 0; i < MODEL_NUM_PARAMS; i++)
		CHECK(memcmp(model_param_data(g, i), model_param_data(m, i), numel(model_param_info(i)) * sizeof(float)) == 0);
	if (run) {
		/* nmlc run's checkpoint of the same run is this model, exactly */
		model_model *r = model_create(seed);
		CHECK(model_load(r, run) == 0);
		check_report(same_tensors(m, r), __FILE__, __LINE__, "the tensors of %s equal the library's", run);
		CHECK(model_get_step(r) == model_get_step(m));
		model_free(r);
	}
	free(before);
	model_free(f);
	model_free(g);
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: test_aot DIR X.npy Y.npy EPOCHS SEED [RUN.safetensors]\n");
		return 2;
	}
	const char *dir = argv[1], *run = argc > 6 ? argv[6] : NULL;
	int epochs = atoi(argv[4]);
	uint64_t seed = strtoull(argv[5], NULL, 10);
	char err[512];
	NmlData d;
	if (nml_data_load_npy(&d, argv[2], argv[3], err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	model_model *m = model_create(seed);
	CHECK(m != NULL);
	CHECK(model_get_step(m) == 0);
	CHECK(model_save(m, in_dir(dir, "init.safetensors")) == 0);

	/* nmlc run's loop (runtime/train.c): epoch e visits the rows in nml_epoch_order(seed, e), in
	 * batches of MODEL_BATCH and a last partial one; the epoch's loss is the row-weighted mean. */
	int64_t yw = d.ydim ? d.ydim : 1, *idx = malloc((size_t)d.n * sizeof *idx);
	float *x = malloc((size_t)(MODEL_BATCH * d.xdim) * sizeof *x), *y = malloc((size_t)(MODEL_BATCH * yw) * sizeof *y);
	for (int e = 1; e <= epochs; e++) {
		nml_epoch_order(seed, e, idx, d.n);
		double sum = 0;
		for (int64_t start = 0; start < d.n; start += MODEL_BATCH) {
			int64_t n = d.n - start < MODEL_BATCH ? d.n - start : MODEL_BATCH;
			nml_data_gather(&d, idx + start, n, x, y);
			double loss = NAN;
			if (!check_report(model_train_step(m, x, y, n, &loss) == 0, __FILE__, __LINE__, "train_step: %s",
					  model_error(m)))
				break;
			sum += loss * (double)n;
		}
		printf("epoch %d train_loss %.17g\n", e, sum / (double)d.n);
	}
	CHECK(model_get_step(m) == epochs * ((d.n + MODEL_BATCH - 1) / MODEL_BATCH));
	double eval = NAN;
	CHECK(model_evaluate(m, d.x, d.y, d.n, &eval, NULL) == 0);
	printf("eval_loss %.17g\n", eval);
	CHECK(model_save(m, in_dir(dir, "trained.safetensors")) == 0);

	check_api(m, &d);
	check_in_place(&d, seed);
	check_checkpoints(m, dir, seed, run);

	model_free(m);
	free(idx);
	free(x);
	free(y);
	nml_data_free(&d);
	return check_done();
}
