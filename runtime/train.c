/* train.c: the training loop around the compiled step and eval kernels: shuffling, batching, loss
 * bookkeeping, evaluation, and the per-epoch report (terminal line, progress bar, JSONL record). */
#include "nmlrt.h"
#include "rtutil.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { TRAIN_BAR = 24 }; /* progress bar cells */
#define TRAIN_REDRAW 0.1 /* seconds between progress bar redraws */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
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

/* 0, or -1 (errno set) if the record could not be written (a full disk, /dev/full). */
static int log_epoch(FILE *f, const NmlEpochStats *s, int64_t step)
{
	fprintf(f, "{\"epoch\":%d", s->epoch);
	json_num(f, "train_loss", s->train_loss);
	json_num(f, "test_loss", s->test_loss);
	json_num(f, "test_accuracy", s->test_accuracy);
	json_num(f, "samples_per_sec", s->samples_per_sec);
	json_num(f, "seconds", s->seconds);
	fprintf(f, ",\"step\":%lld}\n", (long long)step);
	return fflush(f) != 0 || ferror(f) ? -1 : 0;
}

/* ---- the loop ---- */

int nml_train(NmlTrainer *tr, NmlEpochStats *last, char *err, size_t errlen)
{
	const NmlData *d = tr->train, *test = tr->test;
	NmlModel *m = tr->model;
	const NmlModelDesc *md = m ? nml_model_desc(m) : NULL;
	if (!md || !d || d->n < 1 || d->xdim != md->xdim || d->ydim != md->ydim)
		return rt_error(err, errlen, "nothing to train: no model, or no training data of the model's shape");
	if (test && (test->n < 1 || test->xdim != d->xdim || test->ydim != d->ydim))
		return rt_error(err, errlen, "the test set has %lld features and %lld targets per sample, the training "
		                   "set %lld and %lld", (long long)test->xdim, (long long)test->ydim, (long long)d->xdim,
		                   (long long)d->ydim);
	int64_t batch = md->batch, *idx = malloc((size_t)d->n * sizeof *idx);
	if (!idx)
		return rt_error(err, errlen, "out of memory for the epoch's order");
	NmlEpochStats s = {.epoch = tr->epochs_done, .train_loss = NAN, .test_loss = NAN, .test_accuracy = NAN,
	                   .samples_per_sec = NAN, .seconds = 0};
	int show = !tr->quiet, bar = tr->progress && show, rc = 0;
	nml_model_touch(m); /* not in the first step's time */
	for (int epoch = tr->epochs_done + 1; epoch <= tr->epochs; epoch++) {
		double t0 = now(), drawn = -1;
		nml_epoch_order(nml_model_seed(m), tr->in_order ? -1 : epoch, idx, d->n);
		double sum = 0;
		for (int64_t start = 0; start < d->n; start += batch) {
			int64_t n = d->n - start < batch ? d->n - start : batch;
			if (tr->interrupt && *tr->interrupt) {
				if (bar && drawn >= 0)
					progress_clear();
				tr->interrupted = 1;
				rc = rt_error(err, errlen, "interrupted in epoch %d, after step %lld", epoch,
				              (long long)nml_model_get_step(m));
				goto out;
			}
			double l = 0;
			if (start + n < d->n)
				nml_data_prefetch(d, idx + start + n, d->n - start - n < batch ? d->n - start - n : batch);
			if (nml_model_train_rows(m, d, idx + start, n, &l) < 0) {
				rc = rt_error(err, errlen, "%s", nml_model_error(m));
				goto out;
			}
			if (!isfinite(l)) {
				if (bar && drawn >= 0)
					progress_clear();
				tr->diverged = 1;
				rc = rt_error(err, errlen, "loss is %s at epoch %d, step %lld", isnan(l) ? "nan" : "inf",
				                 epoch, (long long)nml_model_get_step(m));
				goto out;
			}
			sum += l * (double)n;
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
		if (test && nml_model_evaluate_data(m, test, &s.test_loss, &s.test_accuracy) < 0) {
			rc = rt_error(err, errlen, "%s", nml_model_error(m));
			goto out;
		}
		s.seconds = now() - t0;
		tr->epochs_done = epoch;

		if (bar && drawn >= 0)
			progress_clear();
		if (show || epoch == tr->epochs) /* quiet still says how the run ended */
			print_epoch(tr, &s);
		/* A log that cannot be written stops the run (after the epoch's checkpoint): figures that
		 * are not recorded would be lost as surely as a crash loses them. */
		int log_errno = 0;
		errno = 0;
		if (tr->log && log_epoch(tr->log, &s, nml_model_get_step(m)) < 0)
			log_errno = errno ? errno : EIO;
		if (tr->after_epoch && tr->after_epoch(tr, &s, err, errlen) < 0) {
			rc = -1;
			break;
		}
		if (log_errno) {
			rc = rt_error(err, errlen, "cannot write the log%s%s after epoch %d: %s", tr->log_name ? " " : "",
			              tr->log_name ? tr->log_name : "", epoch, strerror(log_errno));
			break;
		}
	}
out:
	if (last)
		*last = s;
	free(idx);
	return rc;
}
