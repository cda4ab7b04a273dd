/* main.h: what the REPL (repl.c) shares with the command line: the options of `nmlc run` and the
 * code behind `nmlc run` and `nmlc show`, so that :run trains exactly as `nmlc run` does. */
#ifndef MAIN_H
#define MAIN_H

#include "driver.h"

typedef struct Options {
	const char *cmd, *file, *show;
	long epochs, batch, seed, threads, limit;
	const char *sets[64];
	int nsets;
	const char *init, *save, *log, *resume;
	const char *output, *cpu; /* build */
	int verbose, quiet;
	int echo;                 /* repl */
} Options;

/* `nmlc run` on a compiled program (through drv_lower): trains, prints, returns the exit status.
 * Changes c (its settings, data size and hyperparameters), so compile again for the next run. */
int main_run(Compiler *c, const Options *o);
/* `nmlc show`, o->show naming what (ast, ir, grad, step, kernels, llvm). */
int main_show(Compiler *c, const Options *o);

#endif
