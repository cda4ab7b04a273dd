/* sema.h: name resolution and arity checks over the whole program, before any shape is known.
 * Shapes are checked when lower.c instantiates the layers the train block uses. */
#ifndef SEMA_H
#define SEMA_H

#include "ast.h"

/* Builtin functions, declared once: sema checks their arity, lower.c implements them. The ops
 * that are builtins as they are (exp, log, relu, ...) are not listed: their rows in ops.h name them,
 * and they follow these, numbered from BI_COUNT. */
#define SEMA_BUILTINS(X)                                                       \
	/* name            min max  named arguments (NULL-terminated list) */  \
	X(sum,            1, 2, "axis")                                        \
	X(mean,           1, 2, "axis")                                        \
	X(max,            1, 2, "axis")                                        \
	X(min,            1, 2, "axis")                                        \
	X(where,          3, 3, NULL)                                          \
	X(chain,          1, 16, NULL)                                         \
	X(only,           2, 2, NULL)                                          \
	X(except,         2, 2, NULL)                                          \
	X(global_sum,     1, 1, NULL)                                          \
	X(global_norm,    1, 1, NULL)                                          \
	X(grad_at,        1, 2, "update_buffers")                              \
	X(has_tag,        1, 1, NULL)                                          \
	X(ndim,           1, 1, NULL)                                          \
	X(require,        2, 6, NULL)                                          \
	X(onehot,         2, 2, NULL)                                          \
	X(take,           2, 2, NULL)                                          \
	X(segment_sum,    2, 2, NULL)                                          \
	X(data_init,      2, 2, NULL)                                          \
	X(accumulated,    2, 2, NULL)                                          \
	X(eigh,           1, 3, "when otherwise")                              \
	X(transpose,      1, 3, "dim0 dim1")                                   \
	X(permute,        2, 2, NULL)                                          \
	X(reshape,        2, 2, NULL)                                          \
	X(flatten,        1, 1, NULL)                                          \
	X(rand_like,      1, 1, NULL)                                          \
	X(count,          1, 2, "axis")                                        \
	X(unfold,         2, 6, "stride padding dilation pad_with")            \
	X(slice,          4, 4, NULL)                                          \
	X(pad,            3, 4, "axis")                                        \
	X(concat,         1, 2, "axis")                                        \
	X(argmax,         1, 2, "axis")                                        \
	X(dim,            2, 2, NULL)                                          \
	X(zeros,          0, 0, NULL)                                          \
	X(ones,           0, 0, NULL)                                          \
	X(normal,         1, 2, "std mean")                                    \
	X(uniform,        2, 2, "low high")                                    \
	X(he,             0, 0, NULL)                                          \
	X(xavier,         0, 0, NULL)                                          \
	X(fashion_mnist,  0, 2, "path shape")                                  \
	X(mnist,          0, 2, "path shape")                                  \
	X(idx,            2, 5, "images labels test_images test_labels shape") \
	X(npy,            2, 6, "x y test_x test_y holdout shape")             \
	X(csv,            1, 6, "path test label regression holdout shape")      \
	X(synthetic,      0, 7, "n d classes noise seed holdout shape")

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
int sema_nbuiltins(void);
/* The IR op builtin b applies, or -1 for the builtins of SEMA_BUILTINS. */
int sema_builtin_op(int b);

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
#define SEMA_TRAIN_FIELDS "data model loss optimizer batch epochs seed shuffle accumulate"

#endif
