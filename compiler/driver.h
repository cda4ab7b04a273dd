/* driver.h: the compiler as an object. Each phase is one call, so main, a test or a REPL can run
 * the pipeline step by step and look at the result of each. */
#ifndef DRIVER_H
#define DRIVER_H

#include "ast.h"
#include "ir.h"
#include "lower.h"
#include "nmlrt.h"
#include "sema.h"

typedef struct Compiler {
	Arena arena;
	const char *stdlib_dir;
	AstProgram prog;         /* the prelude, used modules and the file, in that order */
	AstNode *user_items;     /* first item of the file itself */
	const char *modules[64]; /* loaded module paths, to load each once */
	int nmodules;
	SemaGlobals globals;
	Lower lower;
	IrModule mod;
	TrainConfig cfg;
	NmlData train, test;
	int data_loaded;
	IrFunc *fwd;             /* forward and loss */
	IrFunc *eval;            /* fwd + stores of loss and prediction */
	IrFunc *step;            /* fwd + backward + update */
	IrFunc *gradf;           /* fwd + backward, storing loss and gradients */
	int verbose;
	double ms_front, ms_data, ms_lower, ms_jit; /* phase timings */
} Compiler;

void drv_init(Compiler *c);
void drv_free(Compiler *c);
/* Parse the prelude, the file and every module it uses. */
int drv_parse(Compiler *c, const char *path);
int drv_check(Compiler *c);              /* names and arity */
int drv_config(Compiler *c);             /* the train block's settings; instantiates the model */
int drv_load_data(Compiler *c);          /* reads the data the train block names */
int drv_lower(Compiler *c);              /* forward, eval and step functions */
/* All of the above, for a file: 0 when it compiled cleanly. */
int drv_front(Compiler *c, const char *path);

/* Initial parameter or state values as the slots' initializers say, from the seed. */
void drv_init_slots(const IrSlot *slots, int n, size_t size, uint64_t seed, uint64_t stream, double *out);

double drv_now_ms(void);

#endif
