/* lab.c: runs of update rules on one compiled program, side by side (lab.h). A run is a loop over
 * nml_model_train_rows, as nml_train's, but by steps and with every step's loss kept: the curves
 * the REPL draws and exports. Every run of a rule starts from the weights its seed gives and visits
 * the data in the order its seed gives, so rules compared from one seed see the same start and the
 * same batches. */
#include "lab.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "optim.h"
#include "plot.h"
#include "util.h"

enum { LAB_WINDOWS = 50 }; /* test evaluations in a run, at most (one per window of steps) */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- Ctrl-C ---- */

static volatile sig_atomic_t stop;
static struct sigaction previous;

static void on_interrupt(int sig)
{
	(void)sig;
	stop = 1;
}

void lab_interrupt_begin(void)
{
	struct sigaction sa = {.sa_handler = on_interrupt};
	sigemptyset(&sa.sa_mask);
	stop = 0;
	sigaction(SIGINT, &sa, &previous);
}

int lab_interrupted(void) { return stop; }

void lab_interrupt_end(void) { sigaction(SIGINT, &previous, NULL); }

/* ---- runs ---- */

static int compilations;

int lab_compile(Compiler *c, const Options *o, SessionKernels *k)
{
	compilations++;
	return session_kernels(c, o, k);
}

int lab_compilations(void) { return compilations; }

int64_t lab_steps(const Compiler *c, const LabPlan *p)
{
	if (p->steps > 0)
		return p->steps;
	int64_t per_epoch = (c->train.n + c->cfg.batch - 1) / c->cfg.batch;
	return (int64_t)(p->epochs > 0 ? p->epochs : c->cfg.epochs) * per_epoch;
}

void lab_train(Compiler *c, const SessionKernels *k, uint64_t seed, const LabPlan *p, int h, double value,
	       LabRun *out)
{
	const NmlData *d = &c->train, *test = c->test.n ? &c->test : NULL;
	int64_t steps = lab_steps(c, p), batch = c->cfg.batch, per_epoch = (d->n + batch - 1) / batch;
	/* A window: an epoch, or all the steps if fewer, made longer so that at most LAB_WINDOWS
	 * evaluations happen. */
	int64_t window = per_epoch < steps ? per_epoch : steps;
	if (window < (steps + LAB_WINDOWS - 1) / LAB_WINDOWS)
		window = (steps + LAB_WINDOWS - 1) / LAB_WINDOWS;
	if (window < 1)
		window = 1;
	out->seed = seed;
	out->value = value;
	out->loss = xmalloc(((size_t)steps + 1) * sizeof *out->loss);
	size_t nw = (size_t)(steps / window) + 2;
	out->test_step = xmalloc(nw * sizeof(double));
	out->test_loss = xmalloc(nw * sizeof(double));
	out->final_train = out->best_train = out->final_test = out->best_test = out->accuracy = NAN;
	out->to_tol = -1;
	NmlModel *m = nml_model_create(&k->desc, seed);
	if (!m)
		die("out of memory for the model");
	double *hp = nml_model_hparams(m);
	if (h >= 0)
		hp[h] = value;
	int T = ir_find_hparam(&c->mod, intern_cstr("T")), spe = ir_find_hparam(&c->mod, intern_cstr("steps_per_epoch"));
	if (T >= 0) /* schedules see this run's length */
		hp[T] = (double)steps;
	if (spe >= 0)
		hp[spe] = (double)((d->n + c->cfg.batch - 1) / c->cfg.batch);
	int64_t *idx = xmalloc(((size_t)d->n + 1) * sizeof *idx), pos = d->n;
	int epoch = 0;
	double t0 = now(), train_time = 0, wsum = 0;
	int64_t wn = 0, s;
	for (s = 0; s < steps; s++) {
		if (stop) {
			out->end = LAB_INTERRUPTED;
			break;
		}
		if (pos >= d->n) {
			nml_epoch_order(seed, ++epoch, idx, d->n);
			pos = 0;
		}
		int64_t n = d->n - pos < batch ? d->n - pos : batch;
		double l = 0, t1 = now();
		if (pos + n < d->n) /* the next batch, toward the cache while this one trains */
			nml_data_prefetch(d, idx + pos + n, d->n - pos - n < batch ? d->n - pos - n : batch);
		if (nml_model_train_rows(m, d, idx + pos, n, &l) < 0)
			die("training step: %s", nml_model_error(m));
		train_time += now() - t1;
		pos += n;
		out->loss[s] = l;
		if (!isfinite(l)) {
			out->end = LAB_DIVERGED;
			s++;
			break;
		}
		if (out->to_tol < 0 && p->tol > 0 && l <= p->tol)
			out->to_tol = s + 1;
		wsum += l;
		wn++;
		if (wn < window && s + 1 < steps)
			continue;
		double mean = wsum / (double)wn;
		out->final_train = mean;
		if (!(mean >= out->best_train))
			out->best_train = mean;
		wsum = 0;
		wn = 0;
		if (test) {
			double tl, acc;
			if (nml_model_evaluate_data(m, test, &tl, &acc) < 0)
				die("evaluation: %s", nml_model_error(m));
			out->test_step[out->ntest] = (double)(s + 1);
			out->test_loss[out->ntest++] = tl;
			out->final_test = tl;
			out->accuracy = acc;
			if (!(tl >= out->best_test))
				out->best_test = tl;
		}
	}
	out->steps = s;
	out->seconds = now() - t0;
	out->steps_per_sec = train_time > 0 ? (double)s / train_time : NAN;
	if (out->end == LAB_DIVERGED)
		out->final_train = out->loss[s - 1];
	free(idx);
	nml_model_free(m);
}

void lab_run_free(LabRun *r)
{
	free(r->label);
	free(r->loss);
	free(r->test_step);
	free(r->test_loss);
	memset(r, 0, sizeof *r);
}

/* ---- the test problems ---- */

/* Their train blocks: one row of synthetic data for the test functions (each epoch one step), a
 * synthetic classification set for logistic regression. The baselines are what :bench runs beside
 * a rule, with learning rates that suit the problem. */
const LabProblem lab_problems[] = {
	{"rosenbrock", "Rosenbrock", "", "synthetic()", "mean(model(x))", 1, 1000, 1e-4,
	 {"sgd(lr = 1e-3, momentum = 0.9)", "adam(lr = 1e-2)", "lion(lr = 1e-3)"}},
	{"beale", "Beale", "", "synthetic()", "mean(model(x))", 1, 1000, 1e-4,
	 {"sgd(lr = 1e-3, momentum = 0.9)", "adam(lr = 1e-2)", "lion(lr = 1e-3)"}},
	{"rastrigin", "Rastrigin", "", "synthetic()", "mean(model(x))", 1, 1000, 1e-2,
	 {"sgd(lr = 1e-3, momentum = 0.9)", "adam(lr = 1e-1)", "lion(lr = 1e-2)"}},
	{"quadratic", "Quadratic", "", "synthetic()", "mean(model(x))", 1, 500, 1e-4,
	 {"sgd(lr = 1e-2, momentum = 0.9)", "adam(lr = 1e-1)", "lion(lr = 1e-2)"}},
	{"logistic", "Logistic", "20", "synthetic(n = 2000, d = 20, classes = 2, noise = 0.5, holdout = 0.2)",
	 "cross_entropy(model(x), y)", 32, 500, 0.35,
	 {"sgd(lr = 0.1, momentum = 0.9)", "adam(lr = 1e-2)", "lion(lr = 1e-3)"}},
};
const int lab_nproblems = sizeof lab_problems / sizeof lab_problems[0];

const LabProblem *lab_problem(const char *name)
{
	for (int i = 0; i < lab_nproblems; i++)
		if (!strcmp(lab_problems[i].name, name))
			return &lab_problems[i];
	return NULL;
}

char *lab_problem_fields(const LabProblem *p, const char *args)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		die("out of memory");
	fprintf(f, "data = %s\nmodel = %s(%s)\nloss = %s\nbatch = %d\n", p->data, p->model,
		args && *args ? args : p->model_args, p->loss, p->batch);
	fclose(f);
	return text;
}

/* ---- results ---- */

static void mean_std(const LabRun *runs, int seeds, size_t field, double *mean, double *std)
{
	double s = 0, ss = 0;
	int n = 0;
	for (int i = 0; i < seeds; i++) {
		double v = *(const double *)((const char *)&runs[i] + field);
		if (isnan(v))
			continue;
		s += v;
		n++;
	}
	*mean = n ? s / n : NAN;
	for (int i = 0; i < seeds; i++) {
		double v = *(const double *)((const char *)&runs[i] + field);
		if (!isnan(v))
			ss += (v - *mean) * (v - *mean);
	}
	*std = n > 1 ? sqrt(ss / (n - 1)) : NAN;
}

static void cell(FILE *f, double mean, double std, int seeds, int width)
{
	char b[64];
	if (isnan(mean))
		snprintf(b, sizeof b, "-");
	else if (seeds > 1 && !isnan(std))
		snprintf(b, sizeof b, "%.4g ± %.2g", mean, std);
	else
		snprintf(b, sizeof b, "%.4g", mean);
	/* "±" is two bytes and one column */
	int cols = (int)strlen(b) - (strstr(b, "±") ? 1 : 0);
	fprintf(f, "%s%*s", b, width > cols ? width - cols : 1, "");
}

#define FIELD(f) offsetof(LabRun, f)

void lab_table(FILE *f, const LabRun *runs, int nrules, int seeds, int with_tol, const char *what)
{
	int w = seeds > 1 ? 22 : 13, rw = 6;
	for (int k = 0; k < nrules; k++) {
		int n = (int)strlen(runs[k * seeds].label);
		if (n > rw)
			rw = n;
	}
	if (rw > 40)
		rw = 40;
	fprintf(f, "%-*s  %-*s%-*s%-*s%-*s%-*s", rw, what, w, "final train", w, "best train", w, "final test", w,
		"best test", w, "test acc");
	if (with_tol)
		fprintf(f, "%-*s", w, "steps to tol");
	fprintf(f, "%8s %10s\n", "time", "steps/s");
	for (int k = 0; k < nrules; k++) {
		const LabRun *r = &runs[k * seeds];
		fprintf(f, "%-*.*s  ", rw, rw, r->label);
		static const size_t fields[] = {FIELD(final_train), FIELD(best_train), FIELD(final_test),
						FIELD(best_test), FIELD(accuracy)};
		for (int i = 0; i < 5; i++) {
			double m, s;
			mean_std(r, seeds, fields[i], &m, &s);
			cell(f, m, s, seeds, w);
		}
		if (with_tol) {
			/* over the seeds that reached it; "-" if none did */
			double sum = 0;
			int n = 0;
			for (int i = 0; i < seeds; i++)
				if (r[i].to_tol >= 0) {
					sum += (double)r[i].to_tol;
					n++;
				}
			char b[64];
			if (!n)
				snprintf(b, sizeof b, "-");
			else if (seeds > 1)
				snprintf(b, sizeof b, "%.0f (%d of %d)", sum / n, n, seeds);
			else
				snprintf(b, sizeof b, "%.0f", sum);
			fprintf(f, "%-*s", w, b);
		}
		double secs = 0, rate = 0;
		for (int i = 0; i < seeds; i++) {
			secs += r[i].seconds;
			rate += r[i].steps_per_sec;
		}
		fprintf(f, "%7.2fs %10.0f", secs / seeds, rate / seeds);
		for (int i = 0; i < seeds; i++)
			if (r[i].end != LAB_DONE) {
				fprintf(f, "  (%s at step %lld)", r[i].end == LAB_DIVERGED ? "diverged" : "interrupted",
					(long long)r[i].steps);
				break;
			}
		fprintf(f, "\n");
	}
}

int lab_curve(const LabRun *r, int max, double **x, double **y)
{
	int64_t per = (r->steps + max - 1) / (max > 0 ? max : 1);
	if (per < 1)
		per = 1;
	int n = 0;
	*x = xmalloc(((size_t)max + 2) * sizeof **x);
	*y = xmalloc(((size_t)max + 2) * sizeof **y);
	for (int64_t s = 0; s < r->steps; s += per) {
		int64_t e = s + per < r->steps ? s + per : r->steps;
		double sum = 0;
		for (int64_t i = s; i < e; i++)
			sum += r->loss[i];
		(*x)[n] = (double)e;
		(*y)[n++] = sum / (double)(e - s);
	}
	return n;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, "%.9g", v);
	else
		fputs("null", f);
}

static void json_array(FILE *f, const char *key, const double *v, int n)
{
	fprintf(f, ",\"%s\":[", key);
	for (int i = 0; i < n; i++) {
		if (i)
			fputc(',', f);
		json_num(f, v[i]);
	}
	fputc(']', f);
}

int lab_export(const char *path, const LabRun *runs, int n, char *err, size_t errlen)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		const LabRun *r = &runs[i];
		fputs("{\"rule\":", f);
		json_str(f, r->label);
		fprintf(f, ",\"seed\":%llu,\"steps\":%lld", (unsigned long long)r->seed, (long long)r->steps);
		if (!isnan(r->value)) {
			fputs(",\"value\":", f);
			json_num(f, r->value);
		}
		static const char *const keys[] = {"final_train_loss", "best_train_loss", "final_test_loss",
						   "best_test_loss", "test_accuracy", "seconds", "steps_per_sec"};
		const double vals[] = {r->final_train, r->best_train, r->final_test, r->best_test, r->accuracy,
				       r->seconds, r->steps_per_sec};
		for (int k = 0; k < 7; k++) {
			fprintf(f, ",\"%s\":", keys[k]);
			json_num(f, vals[k]);
		}
		if (r->to_tol >= 0)
			fprintf(f, ",\"steps_to_tol\":%lld", (long long)r->to_tol);
		fprintf(f, ",\"end\":\"%s\"", r->end == LAB_DONE ? "done" : r->end == LAB_DIVERGED ? "diverged" : "interrupted");
		double *x, *y;
		int m = lab_curve(r, 1000, &x, &y);
		json_array(f, "step", x, m);
		json_array(f, "train_loss", y, m);
		free(x);
		free(y);
		json_array(f, "test_step", r->test_step, r->ntest);
		json_array(f, "test_loss", r->test_loss, r->ntest);
		fputs("}\n", f);
	}
	if (ferror(f) | fclose(f) || rename(tmp, path)) {
		snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
		remove(tmp);
		return -1;
	}
	return 0;
}

/* ---- grids ---- */

static int number(const char *s, const char **end, double *v)
{
	char *e;
	errno = 0;
	*v = strtod(s, &e);
	if (e == s || !isfinite(*v))
		return 0;
	*end = e;
	return 1;
}

int lab_grid(const char *spec, char *name, size_t namelen, double *values, int max, int *logscale, char *err,
	     size_t errlen)
{
	const char *eq = strchr(spec, '='), *p;
	const char *ne = eq;
	while (ne && ne > spec && isspace((unsigned char)ne[-1]))
		ne--;
	*logscale = 0;
	if (!eq || ne == spec || (size_t)(ne - spec) >= namelen) {
		snprintf(err, errlen, "a grid is NAME=LO..HI [log] [N] or NAME=V1,V2,..., got '%s'", spec);
		return -1;
	}
	for (const char *c = spec; c < ne; c++)
		if (!(isalnum((unsigned char)*c) || *c == '_') || isdigit((unsigned char)spec[0])) {
			snprintf(err, errlen, "'%.*s' is not a hyperparameter's name", (int)(ne - spec), spec);
			return -1;
		}
	snprintf(name, namelen, "%.*s", (int)(ne - spec), spec);
	p = eq + 1;
	while (isspace((unsigned char)*p))
		p++;
	double lo, hi;
	const char *dots = strstr(p, "..");
	if (dots) { /* "1..10": strtod would read "1." */
		char head[64];
		snprintf(head, sizeof head, "%.*s", (int)(dots - p < 63 ? dots - p : 63), p);
		const char *e;
		if (!number(head, &e, &lo) || *e) {
			snprintf(err, errlen, "the grid of %s: '%s' before '..' is not a number", name, head);
			return -1;
		}
		p = dots;
	} else if (!number(p, &p, &lo)) {
		snprintf(err, errlen, "the grid of %s: '%s' does not start with a number", name, eq + 1);
		return -1;
	}
	if (strncmp(p, "..", 2) != 0) { /* a list */
		int n = 0;
		values[n++] = lo;
		while (*p == ',') {
			double v;
			if (!number(p + 1, &p, &v)) {
				snprintf(err, errlen, "the grid of %s: a number is missing after ','", name);
				return -1;
			}
			if (n == max) {
				snprintf(err, errlen, "the grid of %s has more than %d values", name, max);
				return -1;
			}
			values[n++] = v;
		}
		while (isspace((unsigned char)*p))
			p++;
		if (*p) {
			snprintf(err, errlen, "the grid of %s: unexpected '%s'", name, p);
			return -1;
		}
		return n;
	}
	if (!number(p + 2, &p, &hi)) {
		snprintf(err, errlen, "the grid of %s: LO..HI needs a number after '..'", name);
		return -1;
	}
	long count = 8;
	int lin = 0;
	for (;;) {
		while (isspace((unsigned char)*p) || *p == ':')
			p++;
		if (!*p)
			break;
		if (!strncmp(p, "log", 3) && !isalnum((unsigned char)p[3])) {
			*logscale = 1;
			p += 3;
		} else if (!strncmp(p, "lin", 3) && !isalnum((unsigned char)p[3])) {
			lin = 1;
			p += 3;
		} else if (isdigit((unsigned char)*p)) {
			char *e;
			count = strtol(p, &e, 10);
			p = e;
			if (count < 2 || count > max) {
				snprintf(err, errlen, "the grid of %s: from 2 to %d values, got %ld", name, max, count);
				return -1;
			}
		} else {
			snprintf(err, errlen, "the grid of %s: unexpected '%s' (after LO..HI: log or lin, and a count)", name, p);
			return -1;
		}
	}
	if (*logscale && lin) {
		snprintf(err, errlen, "the grid of %s: log or lin, not both", name);
		return -1;
	}
	if (!(lo < hi) || (*logscale && !(lo > 0))) {
		snprintf(err, errlen, "the grid of %s: LO..HI needs LO < HI%s", name, *logscale ? ", both above 0 for log" : "");
		return -1;
	}
	for (long i = 0; i < count; i++) {
		double f = (double)i / (double)(count - 1);
		values[i] = *logscale ? exp(log(lo) + f * (log(hi) - log(lo))) : lo + f * (hi - lo);
	}
	values[0] = lo;
	values[count - 1] = hi;
	return (int)count;
}

/* ---- sweeps ---- */

int lab_sweep(Compiler *c, const Options *o, const char *name, const double *values, int nv, int logscale,
	      const LabPlan *p, int seeds, LabRun **out, int *nout)
{
	*out = NULL;
	*nout = 0;
	const char *hname = intern_cstr(name);
	int h = ir_find_hparam(&c->mod, hname);
	if (optim_is_schedule(&c->lower, hname)) {
		fprintf(stderr, "error: %s is a schedule in the train block: sweep a hyperparameter of the rule\n", name);
		return 1;
	}
	if (h < 0 || !strcmp(name, "T")) {
		fprintf(stderr, "error: the optimizer has no hyperparameter '%s' to sweep (it has:", name);
		for (int k = 0; k < c->mod.nhparams; k++)
			if (strcmp(c->mod.hparams[k].name, "T"))
				fprintf(stderr, " %s", c->mod.hparams[k].name);
		fprintf(stderr, ")\n");
		return 1;
	}
	int before = lab_compilations();
	SessionKernels k;
	if (lab_compile(c, o, &k))
		return 1;
	int64_t steps = lab_steps(c, p);
	uint64_t seed = c->cfg.seed;
	printf("sweep %s over %d values%s, %lld steps each from seed %llu", name, nv, logscale ? " (log)" : "",
	       (long long)steps, (unsigned long long)seed);
	if (seeds > 1)
		printf(" to %llu", (unsigned long long)(seed + (uint64_t)seeds - 1));
	printf("\n");
	fflush(stdout);
	LabRun *runs = xcalloc((size_t)nv * (size_t)seeds, sizeof *runs);
	lab_interrupt_begin();
	int done = 0;
	for (int i = 0; i < nv && !lab_interrupted(); i++)
		for (int s = 0; s < seeds && !lab_interrupted(); s++) {
			LabRun *r = &runs[i * seeds + s];
			char label[64];
			snprintf(label, sizeof label, "%s=%.4g", name, values[i]);
			r->label = xmalloc(strlen(label) + 1);
			strcpy(r->label, label);
			lab_train(c, &k, seed + (uint64_t)s, p, h, values[i], r);
			done = i + 1;
		}
	lab_interrupt_end();
	session_kernels_free(&k);
	int n = done;
	if (lab_interrupted() && n > 0) /* the value whose seeds were cut short counts as not run */
		for (int s = 0; s < seeds; s++)
			if (runs[(n - 1) * seeds + s].end == LAB_INTERRUPTED || !runs[(n - 1) * seeds + s].label) {
				for (int t = 0; t < seeds; t++)
					lab_run_free(&runs[(n - 1) * seeds + t]);
				n--;
				break;
			}
	if (lab_interrupted())
		printf("interrupted: %d of %d values run\n", n, nv);
	printf("compiled %d time%s for %d run%s: %s is a run-time value\n", lab_compilations() - before,
	       lab_compilations() - before == 1 ? "" : "s", n * seeds, n * seeds == 1 ? "" : "s", name);
	lab_table(stdout, runs, n, seeds, 0, "run");
	/* the best: the lowest mean final training loss */
	double *x = xmalloc(((size_t)n + 1) * sizeof *x), *y = xmalloc(((size_t)n + 1) * sizeof *y);
	int best = -1;
	for (int i = 0; i < n; i++) {
		double m = 0;
		for (int s = 0; s < seeds; s++)
			m += runs[i * seeds + s].final_train;
		x[i] = values[i];
		y[i] = m / seeds;
		if (isfinite(y[i]) && (best < 0 || y[i] < y[best]))
			best = i;
	}
	if (best >= 0)
		printf("best %s=%.4g: final train loss %.4g\n", name, values[best], y[best]);
	else
		printf("no value of %s trained to a finite loss\n", name);
	char title[128];
	snprintf(title, sizeof title, "final train loss vs %s", name);
	int allpos = 1;
	for (int i = 0; i < n; i++)
		allpos &= !isfinite(y[i]) || y[i] > 0;
	PlotSeries ps = {"final train loss", x, y, n};
	PlotAxes ax = {.title = title, .xlabel = name, .ylabel = "final train loss", .logx = logscale, .logy = allpos};
	if (n > 1)
		plot_term(stdout, &ps, 1, &ax, 60, 10, lab_colour());
	free(x);
	free(y);
	*out = runs;
	*nout = n * seeds;
	return 0;
}

int lab_colour(void)
{
	const char *term = getenv("TERM");
	return isatty(STDOUT_FILENO) && !getenv("NO_COLOR") && term && strcmp(term, "dumb") != 0;
}

static int is_grid(const char *set) { return strstr(set, "..") || strchr(set, ','); }

int lab_grid_count(const Options *o)
{
	int n = 0;
	for (int i = 0; i < o->nsets; i++)
		n += is_grid(o->sets[i]) != 0;
	return n;
}

int lab_sweep_main(Compiler *c, const Options *o)
{
	Options fixed = *o;
	const char *grid = NULL;
	fixed.nsets = 0;
	for (int i = 0; i < o->nsets; i++)
		if (is_grid(o->sets[i]))
			grid = o->sets[i];
		else
			fixed.sets[fixed.nsets++] = o->sets[i];
	char name[64], err[256];
	double v[LAB_MAX_GRID];
	int logscale, n = grid ? lab_grid(grid, name, sizeof name, v, LAB_MAX_GRID, &logscale, err, sizeof err) : -1;
	if (n < 0) {
		fprintf(stderr, "nmlc: error: %s\n", grid ? err : "no grid to sweep");
		return 2;
	}
	LabPlan p = {.epochs = o->epochs >= 0 ? (int)o->epochs : 0};
	LabRun *runs;
	int nruns;
	int rc = lab_sweep(c, &fixed, name, v, n, logscale, &p, 1, &runs, &nruns);
	for (int i = 0; i < nruns; i++)
		lab_run_free(&runs[i]);
	free(runs);
	if (!rc && nruns < n)
		rc = 130;
	return rc;
}
