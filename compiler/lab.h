/* lab.h: the research loop. Update rules run side by side on one compiled program from the same
 * initial weights and data order (the REPL's :compare, :bench and :sweep, and nmlc sweep), the
 * built-in test problems they run on, and the table and export of their results. */
#ifndef LAB_H
#define LAB_H

#include "session.h"

/* How long a run is: steps, or else epochs; tol > 0 counts the steps until the loss reaches it. */
typedef struct LabPlan {
	int64_t steps;
	int epochs;
	double tol;
} LabPlan;

typedef enum { LAB_DONE, LAB_DIVERGED, LAB_INTERRUPTED } LabEnd;

/* One run: a rule (or one value of a sweep) from one seed. */
typedef struct LabRun {
	char *label;           /* the rule as written, or "lr=0.001" */
	double value;          /* a sweep's value of the hyperparameter */
	uint64_t seed;
	double *loss;          /* the batch's loss at every step (before the update) */
	int64_t steps;         /* steps run */
	double *test_step, *test_loss; /* test loss after windows of steps */
	int ntest;
	double final_train, best_train; /* mean batch loss of the last window, the lowest window's */
	double final_test, best_test, accuracy;
	double seconds, steps_per_sec;  /* all of the run; training steps alone */
	int64_t to_tol;        /* the first step whose loss was <= tol, or -1 */
	LabEnd end;
} LabRun;

/* The steps a plan means for c's data and batch. */
int64_t lab_steps(const Compiler *c, const LabPlan *p);
/* Compiles c's step once for many runs (session_kernels), counting compilations. */
int lab_compile(Compiler *c, const Options *o, SessionKernels *k);
int lab_compilations(void);
/* A run from fresh weights of seed, with hyperparameter h (an index of c's module, or -1) set to
 * value. Stops early on a loss that is not finite, or on Ctrl-C (lab_interrupt_begin). */
void lab_train(Compiler *c, const SessionKernels *k, uint64_t seed, const LabPlan *p, int h, double value,
	       LabRun *out);
void lab_run_free(LabRun *r);

/* While runs go on: Ctrl-C stops the current run after its batch, and every later one. */
void lab_interrupt_begin(void);
int lab_interrupted(void);
void lab_interrupt_end(void);

/* ---- the built-in test problems ---- */
typedef struct LabProblem {
	const char *name;      /* as the REPL takes it: `on rosenbrock` */
	const char *model;     /* the layer of stdlib/problems.nml, arguments added */
	const char *model_args;/* its arguments when none are given */
	const char *data, *loss;
	int batch;
	int64_t steps;         /* a run's default length */
	double tol;            /* :bench's default tolerance */
	const char *baselines[4];
} LabProblem;

extern const LabProblem lab_problems[];
extern const int lab_nproblems;
const LabProblem *lab_problem(const char *name);
/* The train fields of problem p, args (without parentheses, or NULL) given to its layer, one a
 * line: "data = synthetic()\nmodel = Rosenbrock()\n...". malloc'd. */
char *lab_problem_fields(const LabProblem *p, const char *args);

/* ---- results ---- */
/* runs[k * seeds + s] is rule k from the s-th seed: one row per rule, mean ± std over seeds. */
void lab_table(FILE *f, const LabRun *runs, int nrules, int seeds, int with_tol, const char *what);
/* One JSON object a line per run: its figures and its curves. */
int lab_export(const char *path, const LabRun *runs, int n, char *err, size_t errlen);
/* A run's loss curve, at most max points (means of consecutive steps): *x, *y malloc'd. */
int lab_curve(const LabRun *r, int max, double **x, double **y);

/* Runs c's rule once per value of its hyperparameter `name` (and seed), compiled once, and prints
 * the table, the best value and the curve of the final loss against the value. *out gets the
 * runs (values x seeds; fewer after Ctrl-C), to free. 0, or 1 after an error. */
int lab_sweep(Compiler *c, const Options *o, const char *name, const double *values, int nv, int logscale,
	      const LabPlan *p, int seeds, LabRun **out, int *nout);
/* Curves in colour: stdout is a terminal that has colours (and NO_COLOR is not set). */
int lab_colour(void);

/* `nmlc sweep`: the --set that is a grid is swept, the others apply; the exit status. */
int lab_sweep_main(Compiler *c, const Options *o);
/* How many of o's --set are grids (a value with ".." or ","). */
int lab_grid_count(const Options *o);

enum { LAB_MAX_GRID = 256 };

/* A grid: NAME=LO..HI [log|lin] [N], or NAME=V1,V2,... Returns the count of values (into
 * values[max]), or -1 with a message in err. *logscale says whether the grid is logarithmic. */
int lab_grid(const char *spec, char *name, size_t namelen, double *values, int max, int *logscale, char *err,
	     size_t errlen);

#endif
