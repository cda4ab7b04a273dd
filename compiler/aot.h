/* aot.h: ahead-of-time compilation (`nmlc build`). A compiled model becomes a shared object with a
 * C header: libNAME.so exports NAME_create, NAME_train_step, NAME_predict, ... (declared in NAME.h
 * beside it) and needs neither nmlc nor LLVM at run time. */
#ifndef AOT_H
#define AOT_H

#include "driver.h"

typedef struct AotOptions {
	const char *output; /* libNAME.so; NAME.h is written beside it */
	const char *cpu;    /* LLVM CPU name the kernels are compiled for; NULL or "host": this machine's */
	int verbose;        /* print the C compiler's command line */
	int quiet;          /* no summary line */
} AotOptions;

/* Build o->output (and its header) from the compiled front end of c, whose hyperparameter values
 * become the library's defaults and whose batch size its most rows per step. Writes both files
 * under temporary names and renames them at the end, so a failure leaves no partial output.
 * 0, or 1 after reporting the errors on stderr. */
int aot_build(Compiler *c, const AotOptions *o);

#endif
