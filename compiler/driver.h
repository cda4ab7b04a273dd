/* driver.h: the compiler as an object. Each phase is one call, so main, a test or a REPL can run
 * the pipeline step by step and look at the result of each. */
#ifndef DRIVER_H
#define DRIVER_H

#include "ast.h"
#include "ir.h"
#include "lower.h"
#include "nmlrt.h"
#include "sema.h"

/* Data kept across compilations: the REPL compiles its program again after every input, and reads
 * the data again only when the train block names other files or the files changed on disk. */
typedef struct DrvData {
	DataSpec spec;
	int64_t stamp[4][2]; /* per file: modification time (ns) and size */
	NmlData train, test;
	int loaded;
	int loads;           /* how many times data was read into it */
} DrvData;

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
	int data_loaded;         /* train and test are c's own, freed with it */
	DrvData *shared_data;    /* NULL, or where drv_load_data keeps the data for later compilations */
	IrFunc *fwd;             /* forward and loss, in training mode */
	IrFunc *eval;            /* forward in evaluation mode, storing loss and prediction */
	IrFunc *step;            /* fwd + backward + update */
	IrFunc *gradf;           /* fwd + backward, storing loss and gradients */
	IrFunc *predict;         /* forward in evaluation mode storing the prediction only */
	int verbose;
	const char *optimizer_src; /* an optimizer expression that replaces the train block's (--optimizer) */
	double ms_front, ms_data, ms_lower, ms_jit; /* phase timings */
	int jit_cached;          /* the kernels came from the object cache (jit_add_cached) */
} Compiler;

void drv_init(Compiler *c);
void drv_free(Compiler *c);
/* Parse the prelude, the file and every module it uses. */
int drv_parse(Compiler *c, const char *path);
int drv_check(Compiler *c);              /* names and arity */
int drv_config(Compiler *c);             /* the train block's settings; instantiates the model */
int drv_load_data(Compiler *c);          /* reads the data the train block names */
int drv_lower(Compiler *c);              /* forward, eval, step, grad and predict functions */
/* Instead of drv_parse: items parsed elsewhere into c->arena (the REPL parses each definition on its
 * own), after the prelude and the modules they use. A `use` is relative to its item's file. */
int drv_parse_items(Compiler *c, AstList items);
/* Frees the data d holds (not d). */
void drv_data_free(DrvData *d);
/* All of the above, for a file: 0 when it compiled cleanly. */
int drv_front(Compiler *c, const char *path);

/* Initial values of a MODEL block's tensors as their initializers say, from the seed. */
void drv_init_slots(const IrModule *m, NmlBlock b, uint64_t seed, double *out);

double drv_now_ms(void);

#endif
