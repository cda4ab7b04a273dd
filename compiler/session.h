/* session.h: what a command does with a compiled program: train it (`nmlc run`, the REPL's :run),
 * show a stage of it, check its gradients, and the options all of them take. main.c (the command
 * line) and repl.c (nmlc repl) both drive these; neither knows the other. */
#ifndef SESSION_H
#define SESSION_H

#include "driver.h"

typedef struct Options {
	const char *cmd, *file, *show;
	long epochs, batch, seed, threads, limit;
	const char *sets[64];
	int nsets;
	const char *init, *save, *log, *resume;
	const char *optimizer;    /* --optimizer: replaces the train block's optimizer */
	const char *output, *cpu; /* build */
	int verbose, quiet;
	int ignore_memory;        /* run even if the estimate exceeds the memory available */
	int force;                /* --force: replace an existing --log */
	int echo;                 /* repl */
	int deterministic;        /* the same bits on any number of threads */
} Options;

/* `nmlc run` on a compiled program (through drv_lower): trains, prints, returns the exit status.
 * Changes c (its settings, data size and hyperparameters), so compile again for the next run. */
int session_run(Compiler *c, const Options *o);
/* `nmlc check` after a clean compile: the static estimate of memory and work per step. */
int session_check(Compiler *c, const Options *o);
/* `nmlc show`, o->show naming what (ast, ir, grad, step, kernels, llvm). */
int session_show(Compiler *c, const Options *o);
/* `nmlc gradcheck`: the derived gradients against central differences, in f64. */
int session_gradcheck(Compiler *c, const Options *o);
/* --batch, --epochs, --seed, --limit and --set over the train block's settings (nmlc build's
 * defaults); 0, or 1 after reporting a bad --set. */
int session_apply_options(Compiler *c, const Options *o);

/* Many runs of one compiled program (the REPL's :compare and :sweep, nmlc sweep): the run options
 * and --set applied to c, the step and evaluation kernels compiled once, and the runtime's tables
 * of the model, from which any number of models are created (nml_model_create). The tables live
 * in c's arena: free k before c. */
typedef struct SessionKernels {
	struct Jit *jit;
	NmlModelDesc desc;
} SessionKernels;
int session_kernels(Compiler *c, const Options *o, SessionKernels *k);
void session_kernels_free(SessionKernels *k);

#endif
