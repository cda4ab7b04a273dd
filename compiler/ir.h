/* ir.h: the tensor IR. A function is a flat SSA list of ops with static shapes; values are the
 * indices of the instructions that define them. A module holds the slots the functions read and
 * write: parameters, optimizer state, hyperparameters. */
#ifndef IR_H
#define IR_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "diag.h"
#include "ops.h"

enum { IR_MAXRANK = 4 };
#define IR_BATCH ((int64_t)-1) /* a dimension equal to the batch size n, known at run time */

typedef struct IrShape {
	int rank;
	int64_t dim[IR_MAXRANK];
} IrShape;

typedef struct IrInst {
	IrOp op;
	int in[3];    /* operand values */
	IrShape shape;
	double fval;  /* CONST */
	int ival;     /* slot, axis mask, transpose flags or class count: see ops.h */
	SrcLoc loc;   /* the .nml expression this op came from */
} IrInst;

typedef enum { INIT_CONST, INIT_NORMAL, INIT_UNIFORM } IrInitKind;

typedef struct IrInit {
	IrInitKind kind;
	double a, b; /* CONST: a; NORMAL: mean a, std b; UNIFORM: [a, b) */
} IrInit;

typedef struct IrSlot {
	const char *name;  /* "l1.w"; a state slot: "l1.w.m" */
	IrShape shape;     /* no batch dimension */
	size_t offset;     /* in elements, within the block */
	IrInit init;
	const char **tags; /* interned, without '@' */
	int ntags;
	SrcLoc loc;
} IrSlot;

typedef struct IrHparam {
	const char *name;
	double value; /* default; the runtime may change it without recompiling */
	SrcLoc loc;
} IrHparam;

typedef struct IrFunc {
	const char *name;
	IrInst *inst;
	int n, cap;
} IrFunc;

typedef struct IrModule {
	IrSlot *params;
	int nparams, capparams;
	size_t param_size; /* elements */
	IrSlot *states;
	int nstates, capstates;
	size_t state_size;
	IrHparam *hparams;
	int nhparams, caphparams;
	IrShape xshape, yshape; /* of one batch: dim 0 is IR_BATCH */
	int64_t classes;        /* of the targets, 0 for regression */
	int64_t out_dim;        /* width of the model output (pred) */
} IrModule;

/* Shapes */
IrShape ir_shape(int rank, const int64_t *dim);
IrShape ir_scalar_shape(void);
int64_t ir_shape_numel(IrShape s, int64_t n); /* with IR_BATCH taken as n */
int ir_shape_eq(IrShape a, IrShape b);
/* Numpy-style broadcast of a and b; 0 if they do not broadcast. */
int ir_broadcast(IrShape a, IrShape b, IrShape *out);
char *ir_shape_str(IrShape s, char *buf, size_t len);

/* Module tables */
void ir_module_free(IrModule *m);
int ir_add_param(IrModule *m, const char *name, IrShape s, IrInit init, SrcLoc loc);
int ir_add_state(IrModule *m, const char *name, IrShape s, IrInit init, SrcLoc loc);
int ir_add_hparam(IrModule *m, const char *name, double value, SrcLoc loc);
int ir_find_hparam(const IrModule *m, const char *name);

/* Functions and the builder. Each builder checks and infers shapes; on a mismatch it reports a
 * diagnostic at loc and returns -1. An operand of -1 propagates silently, so one error is reported
 * once. */
IrFunc *ir_func_new(const char *name);
IrFunc *ir_func_clone(const IrFunc *f, const char *name);
void ir_func_free(IrFunc *f);
int ir_const(IrFunc *f, double v, SrcLoc loc);
int ir_leaf(IrFunc *f, IrOp op, int ival, IrShape s, SrcLoc loc);
int ir_unary(IrFunc *f, IrOp op, int a, SrcLoc loc);
int ir_binary(IrFunc *f, IrOp op, int a, int b, SrcLoc loc);
int ir_where(IrFunc *f, int c, int a, int b, SrcLoc loc);
int ir_expand(IrFunc *f, int a, IrShape to, SrcLoc loc);
/* Reduce over the axes in mask (bit i: axis i); keepdims keeps them as size 1. */
int ir_reduce(IrFunc *f, IrOp op, int a, unsigned mask, int keepdims, SrcLoc loc);
/* Sum a gradient g down to shape s (undoes broadcasting). */
int ir_sum_to(IrFunc *f, int g, IrShape s, SrcLoc loc);
int ir_matmul(IrFunc *f, int a, int b, int flags, SrcLoc loc);
int ir_reshape(IrFunc *f, int a, IrShape to, SrcLoc loc);
int ir_onehot(IrFunc *f, int a, int64_t classes, SrcLoc loc);
void ir_store(IrFunc *f, IrOp op, int a, int slot, SrcLoc loc);

static inline const IrShape *ir_shape_of(const IrFunc *f, int v) { return &f->inst[v].shape; }

/* Merge instructions identical to an earlier one (same op, operands, attributes). */
void ir_cse(IrFunc *f);
/* Remove every instruction no store depends on. */
void ir_dce(IrFunc *f);

/* Text dump, the format of `nmlc show --ir` and of the golden tests. */
void ir_dump(FILE *out, const IrModule *m, const IrFunc *f);
const char *ir_op_name(IrOp op);
int ir_op_arity(IrOp op);
IrOpKind ir_op_kind(IrOp op);

#endif
