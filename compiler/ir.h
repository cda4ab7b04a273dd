/* ir.h: the tensor IR. A function is a flat SSA list of ops with static shapes; values are the
 * indices of the instructions that define them. A module holds the tables of the storage blocks the
 * functions read and write (nmlrt.h's NML_BLOCKS: parameters, gradients, optimizer state, buffers,
 * inputs, outputs) and the hyperparameters. */
#ifndef IR_H
#define IR_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "diag.h"
#include "nmlrt.h"
#include "ops.h"

enum { IR_MAXRANK = NML_MAXRANK };
#define IR_BATCH ((int64_t)-1) /* a dimension equal to the batch size n, known at run time */

typedef struct IrShape {
	int rank;
	int64_t dim[IR_MAXRANK];
} IrShape;

/* An op's attributes: the member its row in ops.h names (ATTR_*). */
typedef union IrAttr {
	double num;                           /* NUM: a constant, broadcast to the shape */
	struct { NmlBlock block; int index; } slot; /* SLOT: tensor `index` of a block */
	int index;                            /* INDEX: a hyperparameter */
	unsigned axes;                        /* AXES: bit i reduces axis i */
	struct { int ta, tb; } mm;            /* MATMUL: transpose a, b */
	int64_t classes;                      /* CLASSES: the width of a one-hot, the rows of a scatter */
	int64_t segment;                      /* SEGMENT: rows per segment of axis 0 (the last may be short) */
	struct { int8_t axis[IR_MAXRANK]; } perm; /* PERM: output axis i is operand axis axis[i] */
	uint32_t stream;                      /* RNG: which of the step's random streams */
	struct {                              /* WINDOW: a 2-D sliding window (convolution, pooling) */
		int32_t k[2], s[2], p[2], d[2]; /* kernel, stride, padding, dilation: height, width */
		int32_t in[2];                /* the unfolded image's height and width */
		int32_t neg_inf;              /* padding reads -inf (max pooling), else 0 */
	} win;
	struct { int32_t axis; int64_t offset, len; } range; /* RANGE: out[i] = a[i + offset] along axis */
} IrAttr;

typedef struct IrInst {
	IrOp op;
	int in[3];    /* operand values */
	IrShape shape;
	IrAttr attr;
	SrcLoc loc;   /* the .nml expression this op came from */
} IrInst;

typedef enum { INIT_CONST, INIT_NORMAL, INIT_UNIFORM } IrInitKind;

typedef struct IrInit {
	IrInitKind kind;
	double a, b; /* CONST: a; NORMAL: mean a, std b; UNIFORM: [a, b) */
} IrInit;

typedef struct IrSlot {
	const char *name;  /* "l1.w"; a state slot: "l1.w.m" */
	IrShape shape;     /* batch blocks' tensors: dim 0 is IR_BATCH */
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

/* The tensors of one storage block, laid out one after another. */
typedef struct IrBlock {
	IrSlot *slot;
	int n, cap;
	size_t size; /* elements */
} IrBlock;

typedef struct IrModule {
	/* By NmlBlock. A block laid out as another (gradients as parameters) has no table of its own:
	 * ir_block gives the table that lays it out. Batch blocks (x, y, loss, pred) have one tensor,
	 * with the batch dimension IR_BATCH. */
	IrBlock blocks[NML_NBLOCKS];
	IrHparam *hparams;
	int nhparams, caphparams;
	int64_t classes;        /* of the targets, 0 for regression */
	int64_t out_dim;        /* width of the model output (pred) */
	uint32_t nstreams;      /* random streams handed out (ir_random) */
} IrModule;

/* Shapes */
IrShape ir_shape(int rank, const int64_t *dim);
IrShape ir_scalar_shape(void);
int64_t ir_shape_numel(IrShape s, int64_t n); /* with IR_BATCH taken as n; INT64_MAX if it overflows */
int ir_shape_eq(IrShape a, IrShape b);
/* Numpy-style broadcast of a and b; 0 if they do not broadcast. */
int ir_broadcast(IrShape a, IrShape b, IrShape *out);
char *ir_shape_str(IrShape s, char *buf, size_t len);

/* Module tables */
void ir_module_free(IrModule *m);
/* The table that lays out block b. */
static inline const IrBlock *ir_block(const IrModule *m, NmlBlock b) { return &m->blocks[nml_block_layout(b)]; }
static inline const IrSlot *ir_slot(const IrModule *m, NmlBlock b, int i) { return &ir_block(m, b)->slot[i]; }
/* A tensor of block b (b is its own layout); returns its index. */
int ir_add_slot(IrModule *m, NmlBlock b, const char *name, IrShape s, IrInit init, SrcLoc loc);
/* The batch blocks' tensors: x, y and pred of these shapes (dim 0 IR_BATCH), loss a scalar. */
void ir_set_batch(IrModule *m, IrShape x, IrShape y, IrShape pred);
int ir_add_hparam(IrModule *m, const char *name, double value, SrcLoc loc);
int ir_find_hparam(const IrModule *m, const char *name);

/* Functions and the builder. Each builder checks and infers shapes by the op's shape rule; on a
 * mismatch it reports a diagnostic at loc and returns -1. An operand of -1 propagates silently, so
 * one error is reported once. */
IrFunc *ir_func_new(const char *name);
IrFunc *ir_func_clone(const IrFunc *f, const char *name);
void ir_func_free(IrFunc *f);
int ir_const(IrFunc *f, double v, SrcLoc loc);
/* Tensor index of block b, of shape s (the slot's). */
int ir_load(IrFunc *f, NmlBlock b, int index, IrShape s, SrcLoc loc);
int ir_hparam(IrFunc *f, int index, SrcLoc loc);
int ir_scalar_leaf(IrFunc *f, IrOp op, SrcLoc loc); /* STEP, ROWS */
/* Any ELEMWISE op on its arity's operands. */
int ir_elementwise(IrFunc *f, IrOp op, const int *in, SrcLoc loc);
int ir_unary(IrFunc *f, IrOp op, int a, SrcLoc loc);
int ir_binary(IrFunc *f, IrOp op, int a, int b, SrcLoc loc);
int ir_where(IrFunc *f, int c, int a, int b, SrcLoc loc);
int ir_expand(IrFunc *f, int a, IrShape to, SrcLoc loc);
/* Reduce over the axes in mask (bit i: axis i); keepdims keeps them as size 1. */
int ir_reduce(IrFunc *f, IrOp op, int a, unsigned mask, int keepdims, SrcLoc loc);
/* Sum a gradient g down to shape s (undoes broadcasting). */
int ir_sum_to(IrFunc *f, int g, IrShape s, SrcLoc loc);
int ir_matmul(IrFunc *f, int a, int b, int ta, int tb, SrcLoc loc);
int ir_reshape(IrFunc *f, int a, IrShape to, SrcLoc loc);
int ir_onehot(IrFunc *f, int a, int64_t classes, SrcLoc loc);
/* Axes reordered: output axis i is a's axis perm[i] (perm lists each of a's axes once). */
int ir_permute(IrFunc *f, int a, const int *perm, SrcLoc loc);
/* The windows of a [B, C, H, W] image as [B, C, KH*KW, OH, OW] (im2col); fold sums such windows
 * back into the image (the adjoint). win.in is set by ir_unfold. */
int ir_unfold(IrFunc *f, int a, IrAttr win, SrcLoc loc);
int ir_fold(IrFunc *f, int a, IrAttr win, SrcLoc loc);
/* Along axis: out[i] = a[i + offset] for i in [0, len), 0 where i + offset is outside a. A slice
 * (offset >= 0), zero padding (offset < 0, len beyond a) and their mix; its adjoint is another. */
int ir_slice(IrFunc *f, int a, int axis, int64_t offset, int64_t len, SrcLoc loc);
/* The index (as a number) of the first maximum along axis, which is kept with size 1. */
int ir_argmax(IrFunc *f, int a, int axis, SrcLoc loc);
/* Rows of a table [V, ...] picked by indices [I...] (whole numbers held as floats): [I..., ...];
 * an index outside [0, V) picks zeros. */
int ir_gather(IrFunc *f, int table, int index, SrcLoc loc);
/* gather's adjoint: values [I..., ...] summed into rows [rows, ...] by their indices [I...]. */
int ir_scatter(IrFunc *f, int a, int index, int64_t rows, SrcLoc loc);
/* Axis 0 cut into segments of `segment` rows (the last may be shorter): each row becomes the sum
 * of the rows of its segment. Its own adjoint. */
int ir_segsum(IrFunc *f, int a, int64_t segment, SrcLoc loc);
/* when != 0 (a scalar): the eigenvectors of the symmetric matrix a [n, n] as columns, ascending
 * eigenvalues (LAPACK's syevd, nml_eigh_*); else otherwise, unchanged. No derivative. */
int ir_eigh(IrFunc *f, int a, int otherwise, int when, SrcLoc loc);
/* For a window attribute: the image row (or column, axis 1) that output row o at kernel offset k
 * reads; outside [0, in) it reads padding. */
static inline int64_t ir_window_src(const IrAttr *w, int axis, int64_t o, int64_t k)
{
	return o * w->win.s[axis] - w->win.p[axis] + k * w->win.d[axis];
}
/* Uniform random numbers in [0, 1) of shape s, a new stream of the module m (nml_step_uniform). */
int ir_random(IrFunc *f, IrModule *m, IrShape s, SrcLoc loc);
/* Writes a into tensor index of block b; a must broadcast to shape s, the tensor's. */
void ir_store(IrFunc *f, NmlBlock b, int index, int a, SrcLoc loc);
/* Appends src's instructions to dst (not its stores): map[v] gives the value of src's value v in
 * dst, filled as it goes; where map[v] >= 0 on entry (a substitution: the forward pass at other
 * weights), v is not copied and its uses read map[v]. Returns 0, or -1 if a substitution's shape
 * differs from the value it replaces. */
int ir_inline(IrFunc *dst, const IrFunc *src, int *map);

static inline const IrShape *ir_shape_of(const IrFunc *f, int v) { return &f->inst[v].shape; }

/* Merge instructions identical to an earlier one (same op, operands, attributes). */
void ir_cse(IrFunc *f);
/* Takes out of each sum the factors that are the same along its axes, and splits a sum of terms
 * to take out such a factor computed from another reduction: in the derivative of a batch
 * normalization, the sums that needed the variance's derivative become sums of values known
 * before it, so one pass computes them all and one more the input's gradient. Run before CSE,
 * which merges the sums that become equal. */
void ir_distribute_sums(IrFunc *f);
/* Remove every instruction no store depends on. */
void ir_dce(IrFunc *f);
/* Recompute rather than keep: a short chain of elementwise ops over a large tensor that a much
 * later instruction reads (the backward pass reading a forward activation) is computed again
 * right before that reader, when the large tensors the chain starts from are read near it anyway.
 * The value then need not be written to memory and read back. Run after CSE (which would merge
 * the copies). */
void ir_remat(IrFunc *f);
/* Moves each group of instructions that only feed stores (a parameter's update, its optimizer
 * state) up to where its inputs are ready and no instruction still reads the old values of the
 * slots it writes: the update runs as soon as the parameter's gradient is final, while that
 * gradient is in cache, and gradients need not all be kept until the end of the step. */
void ir_hoist_updates(IrFunc *f);

/* Text dump, the format of `nmlc show --ir` and of the golden tests. */
void ir_dump(FILE *out, const IrModule *m, const IrFunc *f);
/* " axes=0,1", " params.l1.w", ...: an instruction's attributes as the dump shows them. */
void ir_dump_attr(FILE *out, const IrModule *m, const IrInst *in);
/* "params.l1.w", or "x" for a batch block's tensor. */
void ir_dump_slot(FILE *out, const IrModule *m, NmlBlock b, int index);
static inline const char *ir_op_name(IrOp op) { return ir_op_info(op)->name; }
static inline int ir_op_arity(IrOp op) { return ir_op_info(op)->arity; }
static inline IrOpClass ir_op_class(IrOp op) { return ir_op_info(op)->cls; }
/* A key for the storage of tensor index of block b (fusion and alias analysis). */
static inline int ir_slot_key(NmlBlock b, int index) { return (int)(b + 1) << 24 | index; }
/* Attributes of two instructions of op equal, as CSE compares them. */
int ir_attr_eq(IrOp op, const IrAttr *a, const IrAttr *b);

#endif
