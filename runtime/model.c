/* model.c: a compiled model as a C object, for the libraries `nmlc build` makes. The generated C
 * holds the model's tables (NmlModelDesc) and wraps these functions under the library's prefix; the
 * buffers, initialization, batching and checkpoints live here, once, where they are tested. */
#include "nmlrt.h"
#include "rtutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
	MODEL_ALIGN = 64, /* a cache line, and enough for any vector the kernels use (as train.c) */
	MODEL_ERR = 512,
	MODEL_META = 64,  /* characters of one metadata value */
};

struct NmlModel {
	const NmlModelDesc *d;
	/* MODEL blocks and GRADS as the desc lays them out; x, y, loss and pred for one batch (kernels
	 * get aligned copies that alias nothing); work for the kernels' scratch. raw: what was
	 * allocated for each (block is raw rounded up to MODEL_ALIGN). */
	void *block[NML_NBLOCKS], *raw[NML_NBLOCKS];
	double *hparams;
	NmlTensorRef *refs;  /* every tensor of the MODEL blocks, block by block: what a checkpoint holds */
	int nrefs;
	int64_t step;
	uint64_t seed;
	char err[MODEL_ERR];
};

/* ---- the block table ---- */

static const struct {
	const char *name;
	NmlBlock layout;
	NmlBlockKind kind;
} blocks[NML_NBLOCKS] = {
#define NML_X(name, str, layout, kind) [NML_B_##name] = {str, NML_B_##layout, NML_BK_##kind},
	NML_BLOCKS(NML_X)
#undef NML_X
};

const char *nml_block_name(NmlBlock b) { return blocks[b].name; }
NmlBlock nml_block_layout(NmlBlock b) { return blocks[b].layout; }
NmlBlockKind nml_block_kind(NmlBlock b) { return blocks[b].kind; }

/* Zeroed and 64-byte aligned (*raw is what to free); never NULL for size 0, so kernels always get
 * a valid pointer. calloc, not a memset: the batch blocks and scratch are laid out for the largest
 * batch the library was built for, and a program that trains on fewer rows should not have to
 * touch (and commit) all of it. */
static void *model_alloc(size_t size, void **raw)
{
	if (size > SIZE_MAX - 2 * MODEL_ALIGN)
		return *raw = NULL;
	size = size ? (size + MODEL_ALIGN - 1) / MODEL_ALIGN * MODEL_ALIGN : MODEL_ALIGN;
	unsigned char *p = *raw = calloc(1, size + MODEL_ALIGN);
	if (!p)
		return NULL;
	return p + (MODEL_ALIGN - (uintptr_t)p % MODEL_ALIGN) % MODEL_ALIGN;
}

static int64_t slot_numel(const NmlSlotDesc *s)
{
	int64_t n = 1;
	for (int k = 0; k < s->rank; k++)
		n *= s->shape[k];
	return n;
}

/* ---- creation ---- */

/* Every slot's initial values from the seed, in double and rounded once. */
static int init_block(const NmlBlockDesc *bd, uint64_t seed, NmlBlock b, float *out)
{
	for (int i = 0; i < bd->nslots; i++) {
		const NmlSlotDesc *s = &bd->slots[i];
		int64_t count = slot_numel(s);
		double *tmp = malloc((size_t)(count > 0 ? count : 1) * sizeof *tmp);
		if (!tmp)
			return -1;
		nml_init_values(s->init, seed, b, (uint64_t)i, tmp, count);
		float *o = out + s->offset;
		for (int64_t j = 0; j < count; j++)
			o[j] = (float)tmp[j];
		free(tmp);
	}
	return 0;
}

int nml_model_check_abi(const NmlModelDesc *d, char *err, size_t errlen)
{
	if (!d)
		return rt_error(err, errlen, "no model description (NULL)");
	if (d->abi != NML_ABI_VERSION)
		return rt_error(err, errlen, "the model was generated for runtime ABI %d, this runtime has ABI %d: "
					     "build it again with this nmlc", d->abi, NML_ABI_VERSION);
	if (d->batch < 1 || d->xdim < 1 || d->ydim < 0 || d->out_dim < 0)
		return rt_error(err, errlen, "a model description with batch %lld, %lld inputs, %lld targets and %lld "
				"outputs per row", (long long)d->batch, (long long)d->xdim, (long long)d->ydim,
				(long long)d->out_dim);
	/* The batch blocks hold batch rows of the widest row: below 2^40 elements, as every value the
	 * compiler lays out, so no size of them (in bytes, or an offset into them) can wrap. */
	int64_t width = d->xdim > d->ydim ? d->xdim : d->ydim, rows;
	width = width > d->out_dim ? width : d->out_dim;
	if (__builtin_mul_overflow(d->batch, width, &rows) || rows > ((int64_t)1 << 40))
		return rt_error(err, errlen, "a model description with batches of %lld rows of %lld numbers: more than "
				"2^40 elements", (long long)d->batch, (long long)width);
	return 0;
}

/* Bytes of block b: MODEL and GRADS blocks as laid out, batch blocks for the batch size. */
static size_t block_bytes(const NmlModelDesc *d, NmlBlock b)
{
	size_t rows = (size_t)d->batch;
	switch (b) {
	case NML_B_X: return rows * (size_t)d->xdim * sizeof(float);
	case NML_B_Y: return rows * (size_t)(d->ydim ? d->ydim : 1) * sizeof(float);
	case NML_B_LOSS: return sizeof(float);
	case NML_B_PRED: return rows * (size_t)(d->out_dim > 0 ? d->out_dim : 1) * sizeof(float);
	case NML_B_WORK: return d->work;
	default: return d->block[nml_block_layout(b)].size * sizeof(float);
	}
}

void nml_model_touch(NmlModel *m)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t step = page > 0 ? (size_t)page : 4096, bytes = block_bytes(m->d, NML_B_WORK);
	volatile char *w = m->block[NML_B_WORK];
	for (size_t o = 0; o < bytes; o += step)
		w[o] = 0;
}

NmlModel *nml_model_create(const NmlModelDesc *d, uint64_t seed)
{
	if (nml_model_check_abi(d, NULL, 0) < 0)
		return NULL;
	NmlModel *m = calloc(1, sizeof *m);
	if (!m)
		return NULL;
	m->d = d;
	m->seed = seed;
	int ok = 1, nrefs = 0;
	for (int b = 0; b < NML_NBLOCKS && ok; b++) { /* up to the first that fails */
		ok = (m->block[b] = model_alloc(block_bytes(d, (NmlBlock)b), &m->raw[b])) != NULL;
		if (nml_block_kind((NmlBlock)b) == NML_BK_MODEL)
			nrefs += d->block[b].nslots;
	}
	m->hparams = calloc((size_t)d->nhparams + 1, sizeof(double));
	m->refs = calloc((size_t)nrefs + 1, sizeof *m->refs);
	if (!ok || !m->hparams || !m->refs) {
		nml_model_free(m);
		return NULL;
	}
	for (int b = 0; b < NML_NBLOCKS; b++) {
		if (nml_block_kind((NmlBlock)b) != NML_BK_MODEL)
			continue;
		const NmlBlockDesc *bd = &d->block[b];
		if (init_block(bd, seed, (NmlBlock)b, m->block[b]) < 0) {
			nml_model_free(m);
			return NULL;
		}
		for (int i = 0; i < bd->nslots; i++, m->nrefs++) {
			const NmlSlotDesc *s = &bd->slots[i];
			m->refs[m->nrefs] = (NmlTensorRef){.name = s->name, .rank = s->rank,
							   .data = (float *)m->block[b] + s->offset};
			memcpy(m->refs[m->nrefs].shape, s->shape, sizeof s->shape);
		}
	}
	if (d->nhparams)
		memcpy(m->hparams, d->hparam_defaults, (size_t)d->nhparams * sizeof *m->hparams);
	return m;
}

void nml_model_free(NmlModel *m)
{
	if (!m)
		return;
	for (int b = 0; b < NML_NBLOCKS; b++)
		free(m->raw[b]);
	free(m->hparams);
	free(m->refs);
	free(m);
}

const char *nml_model_error(const NmlModel *m)
{
	return m ? m->err : "no model (NULL)";
}

/* ---- running the kernels ---- */

static NmlArgs model_args(NmlModel *m, int64_t n)
{
	NmlArgs a = {.hparams = m->hparams, .n = n, .t = (double)m->step, .seed = m->seed};
	for (int b = 0; b < NML_NBLOCKS; b++)
		a.block[b] = m->block[b];
	return a;
}

static float loss_of(NmlModel *m) { return *(float *)m->block[NML_B_LOSS]; }

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

/* Whether [p, p + bytes) overlaps a block of m's that kernels write (all but x and y). */
static int overlaps_model(const NmlModel *m, const void *p, size_t bytes)
{
	uintptr_t lo = (uintptr_t)p, hi = lo + bytes;
	for (int b = 0; b < NML_NBLOCKS; b++) {
		uintptr_t at = (uintptr_t)m->block[b];
		if (b != NML_B_X && b != NML_B_Y && lo < at + block_bytes(m->d, (NmlBlock)b) && at < hi)
			return 1;
	}
	return 0;
}

/* Block b of a kernel's arguments for `bytes` of the caller's rows at src: the rows where they are,
 * as kernels only read the x and y blocks, and only their first n rows (every loop and every matrix
 * product, tiles included, is bounded by n); or a copy in the model's own block where they overlap
 * memory the kernel writes (a parameter passed as x, say), which its code assumes they do not. The
 * copy cost more than its bytes: the last step's loops had left x's lines in the other cores'
 * caches, and writing them anew took those lines back first (the 784-64-10 MLP's step at batch 32
 * on 2 threads: 7% of all samples were the copy, and the step 52 us with it, 43.5 without).
 * tests/aot runs a library's calls on rows on read-only pages that end at an unmapped one. */
static void *rows_block(NmlModel *m, NmlBlock b, const float *src, size_t bytes)
{
	if (!overlaps_model(m, src, bytes))
		return (void *)(uintptr_t)src;
	memcpy(m->block[b], src, bytes);
	return m->block[b];
}

/* A kernel's arguments for rows [start, start + n) of the caller's x and y. y NULL (predict): the
 * model's own y block, which no predict kernel reads. */
static NmlArgs rows_args(NmlModel *m, const float *x, const float *y, int64_t start, int64_t n)
{
	const NmlModelDesc *d = m->d;
	int64_t yw = d->ydim ? d->ydim : 1;
	NmlArgs a = model_args(m, n);
	a.block[NML_B_X] = rows_block(m, NML_B_X, x + start * d->xdim, (size_t)(n * d->xdim) * sizeof *x);
	if (y)
		a.block[NML_B_Y] = rows_block(m, NML_B_Y, y + start * yw, (size_t)(n * yw) * sizeof *y);
	return a;
}

/* The kernel a call needs, or an error naming what it is for. */
static int have(NmlModel *m, NmlKernel k, const char *what)
{
	return k ? 0 : rt_error(m->err, sizeof m->err, "the model has no %s kernel", what);
}

/* One step on the rows a's x and y blocks hold. */
static void step(NmlModel *m, NmlArgs a, double *loss)
{
	m->step++;
	*(float *)m->block[NML_B_LOSS] = 0;
	a.t = (double)m->step;
	unsigned fp = rt_fp_fast();
	m->d->step(&a);
	rt_fp_restore(fp);
	if (loss)
		*loss = loss_of(m);
}

int nml_model_train_step(NmlModel *m, const float *x, const float *y, int64_t n, double *loss)
{
	if (!m)
		return -1;
	if (have(m, m->d->step, "step") < 0 || check_rows(m, x, n, m->d->batch) < 0)
		return -1;
	if (!y)
		return rt_error(m->err, sizeof m->err, "no targets (y is NULL)");
	step(m, rows_args(m, x, y, 0, n), loss);
	return 0;
}

int nml_model_train_rows(NmlModel *m, const NmlData *d, const int64_t *idx, int64_t n, double *loss)
{
	if (!m)
		return -1;
	if (have(m, m->d->step, "step") < 0)
		return -1;
	if (!d || !idx || n < 1 || n > m->d->batch || d->xdim != m->d->xdim || d->ydim != m->d->ydim)
		return rt_error(m->err, sizeof m->err, "rows that do not fit the model (%lld rows of %lld features)",
				(long long)n, d ? (long long)d->xdim : 0LL);
	for (int64_t i = 0; i < n; i++)
		if (idx[i] < 0 || idx[i] >= d->n)
			return rt_error(m->err, sizeof m->err, "row %lld of a data set of %lld rows", (long long)idx[i],
					(long long)d->n);
	nml_data_gather(d, idx, n, m->block[NML_B_X], m->block[NML_B_Y]);
	step(m, model_args(m, n), loss);
	return 0;
}

static int64_t argmax(const float *p, int64_t n)
{
	int64_t best = 0;
	for (int64_t i = 1; i < n; i++)
		if (p[i] > p[best])
			best = i;
	return best;
}

/* Run kernel k over n rows in batches; the loss is the mean over rows. With labels (classify), count
 * the rows whose output's argmax is the label. */
static int64_t run_batches(NmlModel *m, NmlKernel k, const float *x, const float *y, int64_t n, double *loss,
			   float *pred, int classify)
{
	const NmlModelDesc *d = m->d;
	const float *out = m->block[NML_B_PRED];
	double sum = 0;
	int64_t right = 0;
	unsigned fp = rt_fp_fast();
	for (int64_t start = 0; start < n; start += d->batch) {
		int64_t rows = n - start < d->batch ? n - start : d->batch;
		*(float *)m->block[NML_B_LOSS] = 0;
		NmlArgs a = rows_args(m, x, y, start, rows);
		const float *labels = a.block[NML_B_Y];
		k(&a);
		sum += (double)loss_of(m) * rows;
		if (pred)
			memcpy(pred + start * d->out_dim, out, (size_t)(rows * d->out_dim) * sizeof(float));
		if (classify)
			for (int64_t i = 0; i < rows; i++)
				right += (float)argmax(out + i * d->out_dim, d->out_dim) == labels[i];
	}
	rt_fp_restore(fp);
	if (loss)
		*loss = sum / n;
	return right;
}

int nml_model_evaluate(NmlModel *m, const float *x, const float *y, int64_t n, double *loss, float *pred)
{
	if (!m)
		return -1;
	if (have(m, m->d->eval, "eval") < 0 || check_rows(m, x, n, INT64_MAX) < 0)
		return -1;
	if (!y)
		return rt_error(m->err, sizeof m->err, "no targets (y is NULL)");
	run_batches(m, m->d->eval, x, y, n, loss, pred, 0);
	return 0;
}

int nml_model_evaluate_data(NmlModel *m, const NmlData *d, double *loss, double *accuracy)
{
	if (!m || have(m, m->d->eval, "eval") < 0)
		return -1;
	if (!d || d->n < 1 || d->xdim != m->d->xdim || d->ydim != m->d->ydim)
		return rt_error(m->err, sizeof m->err, "no data to evaluate, or data that does not fit the model");
	int classify = d->ydim == 0 && d->classes > 0 && m->d->out_dim >= 2;
	int64_t right = run_batches(m, m->d->eval, d->x, d->y, d->n, loss, NULL, classify);
	if (accuracy)
		*accuracy = classify ? (double)right / (double)d->n : NAN;
	return 0;
}

int nml_model_predict(NmlModel *m, const float *x, int64_t n, float *pred)
{
	if (!m)
		return -1;
	if (have(m, m->d->predict, "predict") < 0 || check_rows(m, x, n, INT64_MAX) < 0)
		return -1;
	if (!pred)
		return rt_error(m->err, sizeof m->err, "nowhere to write the predictions (pred is NULL)");
	run_batches(m, m->d->predict, x, NULL, n, NULL, pred, 0);
	return 0;
}

/* ---- checkpoints: the same tensor names and metadata as nmlc run --save ---- */

int nml_model_save(NmlModel *m, const char *path) { return nml_model_save_meta(m, path, NULL, 0); }

int nml_model_save_meta(NmlModel *m, const char *path, const NmlMeta *extra, int nextra)
{
	if (!m)
		return -1;
	if (!path)
		return rt_error(m->err, sizeof m->err, "no checkpoint path (NULL)");
	const NmlModelDesc *d = m->d;
	NmlMeta *meta = calloc((size_t)(d->nhparams + nextra) + 2, sizeof *meta);
	char (*text)[2][MODEL_META] = calloc((size_t)d->nhparams + 2, sizeof *text);
	if (!meta || !text) {
		free(meta);
		free(text);
		return rt_error(m->err, sizeof m->err, "out of memory saving checkpoint %s", path);
	}
	int n = 0;
	for (int i = 0; i < nextra; i++) { /* the model's own keys are the model's */
		const char *k = extra[i].key;
		if (!k || !strcmp(k, "step") || !strcmp(k, "seed") || !strncmp(k, "hparam.", 7) || !strcmp(k, "format")) {
			free(meta);
			free(text);
			return rt_error(m->err, sizeof m->err, "metadata key '%s' is the model's own", k ? k : "(null)");
		}
		meta[n++] = extra[i];
	}
	int k = 0;
	snprintf(text[k][1], MODEL_META, "%lld", (long long)m->step);
	meta[n++] = (NmlMeta){"step", text[k++][1]};
	snprintf(text[k][1], MODEL_META, "%llu", (unsigned long long)m->seed);
	meta[n++] = (NmlMeta){"seed", text[k++][1]};
	for (int i = 0; i < d->nhparams; i++, k++) {
		snprintf(text[k][0], MODEL_META, "hparam.%s", d->hparam_names[i]);
		snprintf(text[k][1], MODEL_META, "%.17g", m->hparams[i]);
		meta[n++] = (NmlMeta){text[k][0], text[k][1]};
	}
	int rc = nml_ckpt_save_meta(path, m->refs, m->nrefs, meta, n, m->err, sizeof m->err);
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
	if (nml_ckpt_load(path, m->refs, m->nrefs, m->err, sizeof m->err) < 0) {
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
	return nml_ckpt_load(path, m->refs, m->d->block[NML_B_PARAMS].nslots, m->err, sizeof m->err);
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

const NmlModelDesc *nml_model_desc(const NmlModel *m) { return m ? m->d : NULL; }

double *nml_model_hparams(NmlModel *m) { return m ? m->hparams : NULL; }

uint64_t nml_model_seed(const NmlModel *m) { return m ? m->seed : 0; }

float *nml_model_block(NmlModel *m, NmlBlock b)
{
	if (!m || (int)b < 0 || b >= NML_NBLOCKS
	    || (nml_block_kind(b) != NML_BK_MODEL && b != NML_B_GRADS))
		return NULL;
	return m->block[b];
}

float *nml_model_param(NmlModel *m, int i)
{
	const NmlBlockDesc *b = m ? &m->d->block[NML_B_PARAMS] : NULL;
	return b && i >= 0 && i < b->nslots ? (float *)m->block[NML_B_PARAMS] + b->slots[i].offset : NULL;
}

float *nml_model_state(NmlModel *m, int i)
{
	const NmlBlockDesc *b = m ? &m->d->block[NML_B_STATE] : NULL;
	return b && i >= 0 && i < b->nslots ? (float *)m->block[NML_B_STATE] + b->slots[i].offset : NULL;
}
