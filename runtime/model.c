/* model.c: a compiled model as a C object, for the libraries `nmlc build` makes. The generated C
 * holds the model's tables (NmlModelDesc) and wraps these functions under the library's prefix; the
 * buffers, initialization, batching and checkpoints live here, once, where they are tested. */
#include "nmlrt.h"
#include "rtutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
	MODEL_ALIGN = 64, /* a cache line, and enough for any vector the kernels use (as train.c) */
	MODEL_ERR = 512,
	MODEL_META = 64,  /* characters of one metadata value */
};

struct NmlModel {
	const NmlModelDesc *d;
	float *params, *grads, *state;
	double *hparams;
	float *x, *y, *pred; /* one batch: kernels get aligned copies that alias nothing */
	void *work;
	NmlTensorRef *refs;  /* parameters, then state tensors: what a checkpoint holds */
	int64_t step;
	uint64_t seed;
	char err[MODEL_ERR];
};

/* Zeroed and 64-byte aligned; never NULL for size 0, so kernels always get a valid pointer. */
static void *model_alloc(size_t size)
{
	size = (size + MODEL_ALIGN - 1) / MODEL_ALIGN * MODEL_ALIGN;
	if (size == 0)
		size = MODEL_ALIGN;
	void *p = aligned_alloc(MODEL_ALIGN, size);
	if (p)
		memset(p, 0, size);
	return p;
}

static int64_t slot_numel(const NmlSlotDesc *s)
{
	int64_t n = 1;
	for (int k = 0; k < s->rank; k++)
		n *= s->shape[k];
	return n;
}

/* ---- creation ---- */

/* Every slot's initial values from the seed, in double and rounded once, as nmlc run does. */
static int init_block(const NmlSlotDesc *slots, int n, uint64_t seed, uint64_t block, float *out)
{
	for (int i = 0; i < n; i++) {
		int64_t count = slot_numel(&slots[i]);
		double *tmp = malloc((size_t)(count > 0 ? count : 1) * sizeof *tmp);
		if (!tmp)
			return -1;
		nml_init_values(slots[i].init, seed, block, (uint64_t)i, tmp, count);
		float *o = out + slots[i].offset;
		for (int64_t j = 0; j < count; j++)
			o[j] = (float)tmp[j];
		free(tmp);
	}
	return 0;
}

static void ref_slots(NmlTensorRef *t, const NmlSlotDesc *slots, int n, float *block)
{
	for (int i = 0; i < n; i++) {
		t[i] = (NmlTensorRef){.name = slots[i].name, .rank = slots[i].rank, .data = block + slots[i].offset};
		memcpy(t[i].shape, slots[i].shape, sizeof t[i].shape);
	}
}

NmlModel *nml_model_create(const NmlModelDesc *d, uint64_t seed)
{
	NmlModel *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->d = d;
	m->seed = seed;
	size_t rows = (size_t)d->batch, yw = (size_t)(d->ydim ? d->ydim : 1);
	m->params = model_alloc(d->param_size * sizeof(float));
	m->grads = model_alloc(d->param_size * sizeof(float));
	m->state = model_alloc(d->state_size * sizeof(float));
	m->hparams = model_alloc((size_t)d->nhparams * sizeof(double));
	m->x = model_alloc(rows * (size_t)d->xdim * sizeof(float));
	m->y = model_alloc(rows * yw * sizeof(float));
	m->pred = model_alloc(rows * (size_t)(d->out_dim > 0 ? d->out_dim : 1) * sizeof(float));
	m->work = model_alloc(d->work);
	m->refs = calloc((size_t)(d->nparams + d->nstates) + 1, sizeof *m->refs);
	if (!m->params || !m->grads || !m->state || !m->hparams || !m->x || !m->y || !m->pred || !m->work || !m->refs
	    || init_block(d->params, d->nparams, seed, 0, m->params) < 0
	    || init_block(d->states, d->nstates, seed, 1, m->state) < 0) {
		nml_model_free(m);
		return NULL;
	}
	if (d->nhparams)
		memcpy(m->hparams, d->hparam_defaults, (size_t)d->nhparams * sizeof *m->hparams);
	ref_slots(m->refs, d->params, d->nparams, m->params);
	ref_slots(m->refs + d->nparams, d->states, d->nstates, m->state);
	return m;
}

void nml_model_free(NmlModel *m)
{
	if (!m)
		return;
	free(m->params);
	free(m->grads);
	free(m->state);
	free(m->hparams);
	free(m->x);
	free(m->y);
	free(m->pred);
	free(m->work);
	free(m->refs);
	free(m);
}

const char *nml_model_error(const NmlModel *m)
{
	return m ? m->err : "no model (NULL)";
}

/* ---- running the kernels ---- */

static NmlArgs model_args(NmlModel *m, float *loss, int64_t n)
{
	return (NmlArgs){.params = m->params, .grads = m->grads, .state = m->state, .x = m->x, .y = m->y,
			 .hparams = m->hparams, .work = m->work, .loss = loss, .pred = m->pred, .n = n,
			 .t = (double)m->step};
}

static int check_rows(NmlModel *m, const float *x, int64_t n, int64_t most)
{
	if (!x)
		return rt_error(m->err, sizeof m->err, "no inputs (x is NULL)");
	if (n < 1 || n > most)
		return most == INT64_MAX ? rt_error(m->err, sizeof m->err, "%lld rows: need at least 1", (long long)n)
			: rt_error(m->err, sizeof m->err, "%lld rows: the model was compiled for batches of 1 to %lld",
				   (long long)n, (long long)most);
	return 0;
}

static void load_batch(NmlModel *m, const float *x, const float *y, int64_t start, int64_t n)
{
	const NmlModelDesc *d = m->d;
	int64_t yw = d->ydim ? d->ydim : 1;
	memcpy(m->x, x + start * d->xdim, (size_t)(n * d->xdim) * sizeof(float));
	if (y)
		memcpy(m->y, y + start * yw, (size_t)(n * yw) * sizeof(float));
}

int nml_model_train_step(NmlModel *m, const float *x, const float *y, int64_t n, double *loss)
{
	if (!m)
		return -1;
	if (check_rows(m, x, n, m->d->batch) < 0)
		return -1;
	if (!y)
		return rt_error(m->err, sizeof m->err, "no targets (y is NULL)");
	load_batch(m, x, y, 0, n);
	m->step++;
	float l = 0;
	NmlArgs a = model_args(m, &l, n);
	unsigned fp = rt_fp_fast();
	m->d->step(&a);
	rt_fp_restore(fp);
	if (loss)
		*loss = l;
	return 0;
}

/* Run kernel k over n rows in batches; the loss is the mean over rows, as nml_evaluate's. */
static void run_batches(NmlModel *m, NmlKernel k, const float *x, const float *y, int64_t n, double *loss,
			float *pred)
{
	const NmlModelDesc *d = m->d;
	double sum = 0;
	unsigned fp = rt_fp_fast();
	for (int64_t start = 0; start < n; start += d->batch) {
		int64_t rows = n - start < d->batch ? n - start : d->batch;
		load_batch(m, x, y, start, rows);
		float l = 0;
		NmlArgs a = model_args(m, &l, rows);
		k(&a);
		sum += (double)l * rows;
		if (pred)
			memcpy(pred + start * d->out_dim, m->pred, (size_t)(rows * d->out_dim) * sizeof(float));
	}
	rt_fp_restore(fp);
	if (loss)
		*loss = sum / n;
}

int nml_model_evaluate(NmlModel *m, const float *x, const float *y, int64_t n, double *loss, float *pred)
{
	if (!m)
		return -1;
	if (check_rows(m, x, n, INT64_MAX) < 0)
		return -1;
	if (!y)
		return rt_error(m->err, sizeof m->err, "no targets (y is NULL)");
	run_batches(m, m->d->eval, x, y, n, loss, pred);
	return 0;
}

int nml_model_predict(NmlModel *m, const float *x, int64_t n, float *pred)
{
	if (!m)
		return -1;
	if (check_rows(m, x, n, INT64_MAX) < 0)
		return -1;
	if (!pred)
		return rt_error(m->err, sizeof m->err, "nowhere to write the predictions (pred is NULL)");
	run_batches(m, m->d->predict, x, NULL, n, NULL, pred);
	return 0;
}

/* ---- checkpoints: the same tensor names and metadata as nmlc run --save ---- */

int nml_model_save(NmlModel *m, const char *path)
{
	if (!m)
		return -1;
	if (!path)
		return rt_error(m->err, sizeof m->err, "no checkpoint path (NULL)");
	const NmlModelDesc *d = m->d;
	NmlMeta *meta = calloc((size_t)d->nhparams + 2, sizeof *meta);
	char (*text)[2][MODEL_META] = calloc((size_t)d->nhparams + 2, sizeof *text);
	if (!meta || !text) {
		free(meta);
		free(text);
		return rt_error(m->err, sizeof m->err, "out of memory saving checkpoint %s", path);
	}
	int n = 0;
	snprintf(text[n][1], MODEL_META, "%lld", (long long)m->step);
	meta[n] = (NmlMeta){"step", text[n][1]}, n++;
	snprintf(text[n][1], MODEL_META, "%llu", (unsigned long long)m->seed);
	meta[n] = (NmlMeta){"seed", text[n][1]}, n++;
	for (int i = 0; i < d->nhparams; i++, n++) {
		snprintf(text[n][0], MODEL_META, "hparam.%s", d->hparam_names[i]);
		snprintf(text[n][1], MODEL_META, "%.17g", m->hparams[i]);
		meta[n] = (NmlMeta){text[n][0], text[n][1]};
	}
	int rc = nml_ckpt_save_meta(path, m->refs, d->nparams + d->nstates, meta, n, m->err, sizeof m->err);
	free(meta);
	free(text);
	return rc;
}

/* The number a checkpoint's metadata holds under key: 0 (found), 1 (absent), -1 (unreadable). */
static int meta_number(NmlModel *m, const char *path, const char *key, double *v)
{
	char text[MODEL_META], *end;
	int rc = nml_ckpt_meta(path, key, text, sizeof text, m->err, sizeof m->err);
	if (rc)
		return rc;
	*v = strtod(text, &end);
	if (end == text || *end)
		return rt_error(m->err, sizeof m->err, "checkpoint %s: '%s' is not a number", path, key);
	return 0;
}

int nml_model_load(NmlModel *m, const char *path)
{
	if (!m)
		return -1;
	if (!path)
		return rt_error(m->err, sizeof m->err, "no checkpoint path (NULL)");
	const NmlModelDesc *d = m->d;
	/* Metadata first, so a bad file changes nothing. */
	double step = (double)m->step, v;
	int rc = meta_number(m, path, "step", &step);
	if (rc < 0)
		return -1;
	if (rc == 0 && !(step >= 0 && step <= 9007199254740992.0 && step == floor(step)))
		return rt_error(m->err, sizeof m->err, "checkpoint %s: step %g is not a step count", path, step);
	double *hp = malloc(((size_t)d->nhparams + 1) * sizeof *hp);
	if (!hp)
		return rt_error(m->err, sizeof m->err, "out of memory loading checkpoint %s", path);
	for (int i = 0; i < d->nhparams; i++) {
		char key[MODEL_META + 8];
		snprintf(key, sizeof key, "hparam.%s", d->hparam_names[i]);
		hp[i] = m->hparams[i];
		rc = meta_number(m, path, key, &v);
		if (rc < 0) {
			free(hp);
			return -1;
		}
		if (rc == 0)
			hp[i] = v;
	}
	if (nml_ckpt_load(path, m->refs, d->nparams + d->nstates, m->err, sizeof m->err) < 0) {
		free(hp);
		return -1;
	}
	m->step = (int64_t)step;
	if (d->nhparams)
		memcpy(m->hparams, hp, (size_t)d->nhparams * sizeof *hp);
	free(hp);
	return 0;
}

int nml_model_load_params(NmlModel *m, const char *path)
{
	if (!m)
		return -1;
	if (!path)
		return rt_error(m->err, sizeof m->err, "no checkpoint path (NULL)");
	return nml_ckpt_load(path, m->refs, m->d->nparams, m->err, sizeof m->err);
}

/* ---- hyperparameters, step, tensors ---- */

static int find_hparam(NmlModel *m, const char *name)
{
	for (int i = 0; name && i < m->d->nhparams; i++)
		if (!strcmp(m->d->hparam_names[i], name))
			return i;
	size_t len = (size_t)snprintf(m->err, sizeof m->err, "no hyperparameter '%s' (the model has:",
				      name ? name : "(null)");
	for (int i = 0; i < m->d->nhparams && len < sizeof m->err; i++)
		len += (size_t)snprintf(m->err + len, sizeof m->err - len, " %s", m->d->hparam_names[i]);
	if (len < sizeof m->err)
		snprintf(m->err + len, sizeof m->err - len, "%s)", m->d->nhparams ? "" : " none");
	return -1;
}

int nml_model_get_hparam(NmlModel *m, const char *name, double *value)
{
	if (!m)
		return -1;
	int i = find_hparam(m, name);
	if (i < 0)
		return -1;
	if (value)
		*value = m->hparams[i];
	return 0;
}

int nml_model_set_hparam(NmlModel *m, const char *name, double value)
{
	if (!m)
		return -1;
	int i = find_hparam(m, name);
	if (i < 0)
		return -1;
	if (!isfinite(value))
		return rt_error(m->err, sizeof m->err, "hyperparameter '%s' must be finite, not %g", name, value);
	m->hparams[i] = value;
	return 0;
}

int64_t nml_model_get_step(const NmlModel *m)
{
	return m ? m->step : -1;
}

int nml_model_set_step(NmlModel *m, int64_t step)
{
	if (!m)
		return -1;
	if (step < 0)
		return rt_error(m->err, sizeof m->err, "step %lld: must be 0 or more", (long long)step);
	m->step = step;
	return 0;
}

float *nml_model_param(NmlModel *m, int i)
{
	return m && i >= 0 && i < m->d->nparams ? m->params + m->d->params[i].offset : NULL;
}

float *nml_model_state(NmlModel *m, int i)
{
	return m && i >= 0 && i < m->d->nstates ? m->state + m->d->states[i].offset : NULL;
}
