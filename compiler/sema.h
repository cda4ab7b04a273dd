/* sema.h: name resolution and arity checks over the whole program, before any shape is known.
 * Shapes are checked when lower.c instantiates the layers the train block uses. */
#ifndef SEMA_H
#define SEMA_H

#include "ast.h"

/* Builtin functions, declared once: sema checks their arity, lower.c implements them. */
#define SEMA_BUILTINS(X)                                                       \
	/* name            min max  named arguments (NULL-terminated list) */  \
	X(exp,            1, 1, NULL)                                          \
	X(log,            1, 1, NULL)                                          \
	X(log1p,          1, 1, NULL)                                          \
	X(expm1,          1, 1, NULL)                                          \
	X(sqrt,           1, 1, NULL)                                          \
	X(rsqrt,          1, 1, NULL)                                          \
	X(abs,            1, 1, NULL)                                          \
	X(sign,           1, 1, NULL)                                          \
	X(tanh,           1, 1, NULL)                                          \
	X(sigmoid,        1, 1, NULL)                                          \
	X(relu,           1, 1, NULL)                                          \
	X(stop_gradient,  1, 1, NULL)                                          \
	X(sum,            1, 2, "axis")                                        \
	X(mean,           1, 2, "axis")                                        \
	X(max,            1, 2, "axis")                                        \
	X(min,            1, 2, "axis")                                        \
	X(where,          3, 3, NULL)                                          \
	X(chain,          1, 16, NULL)                                         \
	X(global_sum,     1, 1, NULL)                                          \
	X(global_norm,    1, 1, NULL)                                          \
	X(has_tag,        1, 1, NULL)                                          \
	X(ndim,           1, 1, NULL)                                          \
	X(onehot,         2, 2, NULL)                                          \
	X(dim,            2, 2, NULL)                                          \
	X(zeros,          0, 0, NULL)                                          \
	X(ones,           0, 0, NULL)                                          \
	X(normal,         1, 2, "std mean")                                    \
	X(uniform,        2, 2, "low high")                                    \
	X(he,             0, 0, NULL)                                          \
	X(xavier,         0, 0, NULL)                                          \
	X(fashion_mnist,  0, 1, "path")                                        \
	X(mnist,          0, 1, "path")                                        \
	X(idx,            2, 4, "images labels test_images test_labels")       \
	X(npy,            2, 5, "x y test_x test_y holdout")                   \
	X(csv,            1, 5, "path test label regression holdout")

typedef enum {
#define X(name, lo, hi, named) BI_##name,
	SEMA_BUILTINS(X)
#undef X
	BI_COUNT
} SemaBuiltin;

typedef struct SemaBuiltinInfo {
	const char *name; /* interned */
	int min_args, max_args;
	const char *named; /* space-separated names accepted as name = value */
} SemaBuiltinInfo;

/* -1 if name is not a builtin. */
int sema_builtin(const char *name);
const SemaBuiltinInfo *sema_builtin_info(int b);

/* A program's global names: every layer, optimizer, def and const of the file and its modules. */
typedef struct SemaGlobals {
	AstNode **items;
	int n, cap;
} SemaGlobals;

AstNode *sema_lookup(const SemaGlobals *g, const char *name);
/* Checks names and arity everywhere; returns the number of errors reported. */
int sema_check(const AstProgram *prog, SemaGlobals *globals);
/* The train block, or NULL. */
AstNode *sema_train(const AstProgram *prog);

/* The fields a train block may set. */
#define SEMA_TRAIN_FIELDS "data model loss optimizer batch epochs seed"

#endif
