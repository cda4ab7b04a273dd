/* train.c: the training loop around the compiled step and eval kernels: shuffling, batching, loss
 * bookkeeping, evaluation, and the per-epoch report (terminal line, progress bar, JSONL record). */
#include "nmlrt.h"
#include "rtutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
	TRAIN_ALIGN = 64,    /* a cache line, and enough for any vector the JIT emits */
	TRAIN_BAR = 24,      /* progress bar cells */
};

#define TRAIN_REDRAW 0.1 /* seconds between progress bar redraws */

/* Buffers of one kernel's batch: inputs gathered from the data set, scratch and outputs. */
typedef struct TrainBufs {
	float *x, *y, *pred;
	void *work;
	int64_t *idx;
} TrainBufs;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Zeroed, 64-byte aligned; never NULL for size 0, so kernels always get a valid pointer. */
static void *train_alloc(size_t size)
{
	size = (size + TRAIN_ALIGN - 1) / TRAIN_ALIGN * TRAIN_ALIGN;
	if (size == 0)
		size = TRAIN_ALIGN;
	void *p = aligned_alloc(TRAIN_ALIGN, size);
	if (p)
		memset(p, 0, size);
	return p;
}

static void bufs_free(TrainBufs *b)
{
	free(b->x);
	free(b->y);
	free(b->pred);
	free(b->work);
	free(b->idx);
	memset(b, 0, sizeof *b);
}

static int bufs_alloc(TrainBufs *b, const NmlTrainer *tr, const NmlData *d, size_t work, int64_t nidx)
{
	size_t rows = (size_t)tr->batch, yw = (size_t)(d->ydim ? d->ydim : 1);
	memset(b, 0, sizeof *b);
	b->x = train_alloc(rows * (size_t)d->xdim * sizeof(float));
	b->y = train_alloc(rows * yw * sizeof(float));
	b->pred = train_alloc(rows * (size_t)(tr->out_dim > 0 ? tr->out_dim : 1) * sizeof(float));
	b->work = train_alloc(work);
	b->idx = nidx ? malloc((size_t)nidx * sizeof *b->idx) : NULL;
	if (!b->x || !b->y || !b->pred || !b->work || (nidx && !b->idx)) {
		bufs_free(b);
		return -1;
	}
	return 0;
}

static NmlArgs train_args(const NmlTrainer *tr, const TrainBufs *b, float *loss, int64_t n, int64_t step)
{
	return (NmlArgs){
		.params = tr->params,
		.grads = tr->grads,
		.state = tr->state,
		.x = b->x,
		.y = b->y,
		.hparams = tr->hparams,
		.work = b->work,
		.loss = loss,
		.pred = b->pred,
		.n = n,
		.t = (double)step,
	};
}

static int64_t argmax(const float *p, int64_t n)
{
	int64_t best = 0;
	for (int64_t i = 1; i < n; i++)
		if (p[i] > p[best])
			best = i;
	return best;
}

/* The body of nml_evaluate, on buffers that the caller owns. */
static void evaluate(NmlTrainer *tr, const NmlData *d, TrainBufs *b, double *loss, double *accuracy)
{
	int classify = d->ydim == 0 && d->classes > 0 && tr->out_dim >= 2;
	double sum = 0;
	int64_t right = 0, yw = d->ydim ? d->ydim : 1;
	for (int64_t start = 0; start < d->n; start += tr->batch) {
		int64_t n = d->n - start < tr->batch ? d->n - start : tr->batch;
		/* In order, so a batch is a contiguous block of rows; copied because kernels may assume the
		 * batch buffers' alignment. */
		memcpy(b->x, d->x + start * d->xdim, (size_t)(n * d->xdim) * sizeof(float));
		memcpy(b->y, d->y + start * yw, (size_t)(n * yw) * sizeof(float));
		float l = 0;
		NmlArgs a = train_args(tr, b, &l, n, tr->steps_done);
		tr->eval(&a);
		sum += (double)l * n;
		if (classify)
			for (int64_t i = 0; i < n; i++)
				right += (float)argmax(b->pred + i * tr->out_dim, tr->out_dim) == b->y[i];
	}
	*loss = sum / d->n;
	*accuracy = classify ? (double)right / d->n : NAN;
}

static int check_data(const NmlTrainer *tr, const NmlData *d)
{
	return d && d->n > 0 && d->xdim > 0 && d->ydim >= 0 && d->x && d->y && tr->batch > 0;
}

int nml_evaluate(NmlTrainer *tr, const NmlData *d, double *loss, double *accuracy)
{
	TrainBufs b;
	if (!tr->eval || !check_data(tr, d) || bufs_alloc(&b, tr, d, tr->eval_work, 0) < 0)
		return -1;
	unsigned fp = rt_fp_fast();
	evaluate(tr, d, &b, loss, accuracy);
	rt_fp_restore(fp);
	bufs_free(&b);
	return 0;
}

/* ---- reporting ---- */

static void progress_draw(const NmlTrainer *tr, int epoch, int64_t done, int64_t total, double loss, double rate)
{
	int fill = (int)(TRAIN_BAR * done / total), pct = (int)(100 * done / total);
	char bar[TRAIN_BAR + 1];
	for (int i = 0; i < TRAIN_BAR; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[TRAIN_BAR] = 0;
	fprintf(stderr, "\repoch %d/%d [%s] %3d%%  loss %.4f  %.0f samples/s\033[K", epoch, tr->epochs, bar, pct, loss,
	        rate);
	fflush(stderr);
}

static void progress_clear(void)
{
	fputs("\r\033[K", stderr);
	fflush(stderr);
}

static int digits(int v)
{
	int n = 1;
	while (v >= 10)
		v /= 10, n++;
	return n;
}

/* epoch  3/10  train_loss 0.5123  test_loss 0.4301  test_acc 0.8456   52345 samples/s  1.2s */
static void print_epoch(const NmlTrainer *tr, const NmlEpochStats *s)
{
	printf("epoch %*d/%d  train_loss %.4f", digits(tr->epochs), s->epoch, tr->epochs, s->train_loss);
	if (tr->test) {
		printf("  test_loss %.4f", s->test_loss);
		if (isnan(s->test_accuracy))
			printf("  test_acc %-6s", "-");
		else
			printf("  test_acc %.4f", s->test_accuracy);
	}
	printf("  %7.0f samples/s  %.1fs\n", s->samples_per_sec, s->seconds);
	fflush(stdout);
}

/* JSON has no NaN or infinity; those become null. %.17g round-trips a double. */
static void json_num(FILE *f, const char *key, double v)
{
	if (isfinite(v))
		fprintf(f, ",\"%s\":%.17g", key, v);
	else
		fprintf(f, ",\"%s\":null", key);
}

static void log_epoch(FILE *f, const NmlEpochStats *s, int64_t step)
{
	fprintf(f, "{\"epoch\":%d", s->epoch);
	json_num(f, "train_loss", s->train_loss);
	json_num(f, "test_loss", s->test_loss);
	json_num(f, "test_accuracy", s->test_accuracy);
	json_num(f, "samples_per_sec", s->samples_per_sec);
	json_num(f, "seconds", s->seconds);
	fprintf(f, ",\"step\":%lld}\n", (long long)step);
	fflush(f);
}

/* ---- the loop ---- */

int nml_train(NmlTrainer *tr, NmlEpochStats *last, char *err, size_t errlen)
{
	const NmlData *d = tr->train, *test = tr->test;
	if (!tr->step || !check_data(tr, d))
		return rt_error(err, errlen, "nothing to train: no step kernel, no training data or a batch size below 1");
	if (test && (!tr->eval || !check_data(tr, test)))
		return rt_error(err, errlen, "cannot evaluate: no eval kernel or an empty test set");
	if (test && (test->xdim != d->xdim || test->ydim != d->ydim))
		return rt_error(err, errlen, "the test set has %lld features and %lld targets per sample, the training "
		                   "set %lld and %lld", (long long)test->xdim, (long long)test->ydim, (long long)d->xdim,
		                   (long long)d->ydim);

	TrainBufs sb, eb = {0};
	if (bufs_alloc(&sb, tr, d, tr->step_work, d->n) < 0 || (test && bufs_alloc(&eb, tr, test, tr->eval_work, 0) < 0)) {
		bufs_free(&sb);
		return rt_error(err, errlen, "out of memory for training buffers");
	}
	NmlEpochStats s = {.epoch = tr->epochs_done, .train_loss = NAN, .test_loss = NAN, .test_accuracy = NAN,
	                   .samples_per_sec = NAN, .seconds = 0};
	int show = !tr->quiet, bar = tr->progress && show, rc = 0;
	unsigned fp = rt_fp_fast();

	for (int epoch = tr->epochs_done + 1; epoch <= tr->epochs; epoch++) {
		double t0 = now(), drawn = -1;
		nml_epoch_order(tr->seed, epoch, sb.idx, d->n);

		double sum = 0;
		for (int64_t start = 0; start < d->n; start += tr->batch) {
			int64_t n = d->n - start < tr->batch ? d->n - start : tr->batch;
			if (tr->interrupt && *tr->interrupt) {
				if (bar && drawn >= 0)
					progress_clear();
				tr->interrupted = 1;
				rc = rt_error(err, errlen, "interrupted in epoch %d, after step %lld", epoch,
				              (long long)tr->steps_done);
				goto out;
			}
			nml_data_gather(d, sb.idx + start, n, sb.x, sb.y);
			float l = 0;
			NmlArgs a = train_args(tr, &sb, &l, n, ++tr->steps_done);
			tr->step(&a);
			if (!isfinite(l)) {
				if (bar && drawn >= 0)
					progress_clear();
				tr->diverged = 1;
				rc = rt_error(err, errlen, "loss is %s at epoch %d, step %lld", isnan(l) ? "nan" : "inf",
				                 epoch, (long long)tr->steps_done);
				goto out;
			}
			sum += (double)l * n;
			if (bar) {
				double t = now();
				if (drawn < 0 || t - drawn >= TRAIN_REDRAW) {
					int64_t done = start + n;
					progress_draw(tr, epoch, done, d->n, sum / done, done / (t - t0 > 0 ? t - t0 : 1e-9));
					drawn = t;
				}
			}
		}
		double t1 = now();
		s.epoch = epoch;
		s.train_loss = sum / d->n;
		s.samples_per_sec = d->n / (t1 - t0 > 0 ? t1 - t0 : 1e-9);
		s.test_loss = s.test_accuracy = NAN;
		if (test)
			evaluate(tr, test, &eb, &s.test_loss, &s.test_accuracy);
		s.seconds = now() - t0;
		tr->epochs_done = epoch;

		if (bar && drawn >= 0)
			progress_clear();
		if (show)
			print_epoch(tr, &s);
		if (tr->log)
			log_epoch(tr->log, &s, tr->steps_done);
		if (tr->after_epoch && tr->after_epoch(tr, &s, err, errlen) < 0) {
			rc = -1;
			break;
		}
	}
out:
	rt_fp_restore(fp);
	if (last)
		*last = s;
	bufs_free(&sb);
	bufs_free(&eb);
	return rc;
}
