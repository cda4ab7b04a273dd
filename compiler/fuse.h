/* fuse.h: the loop nests of a kernel, planned before any code is generated.
 *
 * An IR function becomes a list of units run in order: a loop nest, a library call, an op's own loop, or nothing at
 * all (leaves, scalars, views). A nest computes a group of elementwise ops and stores at each index
 * of one iteration space, and may feed reductions of that space (up to FUSE_MAX_RED, over the same
 * axes); its values stay in registers
 * unless something outside the nest reads them. The plan also places every value that needs memory
 * in `work`, reusing a region once nothing reads it any more. fuse_dump prints it (for
 * `nmlc show --kernels`, through cg_dump_kernels). */
#ifndef FUSE_H
#define FUSE_H

#include <stddef.h>
#include <stdio.h>

#include "ir.h"

typedef enum {
	FV_NONE,   /* a store: no value */
	FV_SCALAR, /* the same at every index (constants, hparams, t, n and ops of those only): a register */
	FV_SLOT,   /* a view of params, state, x or y */
	FV_WORK,   /* a region of work */
	FV_ALIAS,  /* the storage of in[0]: a reshape, or a stop_gradient of a value already in memory */
	FV_REG,    /* only in registers, inside the nest that computes it */
	FV_INLINE, /* no storage: computed block by block where it is used, by a stack of matrix products
	            * (an unfold whose windows the products read image by image; products whose blocks a
	            * fold sums back into their images as each is done) */
} FuseValKind;

typedef enum {
	FU_NONE,   /* a leaf, a scalar op, an alias, or a store of what its slot holds: no loop (a scalar a
	            * matmul reads is stored, though) */
	FU_NEST,   /* elementwise ops and stores over one iteration space, and perhaps one reduction of it */
	FU_LIBRARY, /* a library call (a matmul) */
	FU_LOOP,    /* an op with a loop of its own (onehot) */
} FuseUnitKind;

enum { FUSE_MAX_RED = 4 }; /* reductions one nest may feed */
enum { FUSE_ACC_PARTS = 16 }; /* a stack of products summed over the stack: partial sums, at most */

typedef struct FuseUnit {
	FuseUnitKind kind;
	IrShape space; /* FU_NEST: the iteration space */
	int red;       /* FU_NEST: the first reduction the nest feeds (it runs over space), or -1 */
	int reds[FUSE_MAX_RED]; /* all of them, over the same axes, in program order */
	int nred;
	unsigned red_axes; /* the axes of space they reduce */
	int *inst;     /* members, in program order */
	int n;
	/* FU_LIBRARY, a stack of matrix products (inst[0]) that works one product at a time:
	 * window[j]: the unfold (FV_INLINE) whose windows product s reads as operand j (A, B), unfolded
	 *   from its image into a scratch block just before, or -1;
	 * epi: -1, or a member that takes each product as it is done: a fold (the product, in scratch,
	 *   summed into its images) or a sum over the stack (products added into FUSE_ACC_PARTS partial
	 *   sums, acc_rows products each, in the product's own region, then combined in order). */
	int window[2];
	int epi;
	int64_t acc_rows;
} FuseUnit;

typedef struct FuseVal {
	FuseValKind kind;
	int unit;     /* the unit that computes it */
	int region;   /* has a region of work at off (FV_WORK, and a scalar a matmul reads) */
	size_t off;   /* bytes into work */
	size_t bytes;
} FuseVal;

typedef struct FusePlan {
	FuseUnit *unit; /* in the order they run */
	int nunits;
	FuseVal *val;   /* one per instruction */
	size_t work_bytes;
	int nregions;
} FusePlan;

/* Plans f for elements of esize bytes and at most max_batch rows. fuse = 0 puts every op in a unit
 * of its own (the unfused reference, for comparison). The caller frees the plan with fuse_free. */
FusePlan *fuse_plan(const IrModule *m, const IrFunc *f, size_t esize, int64_t max_batch, int fuse);
void fuse_free(FusePlan *p);

/* A nest's members may be over a coarser space than the nest's own: the same elements in the same
 * order, some axes split in two or more (a 2x2 pooling's [N, C, H/2, 2, W/2, 2] and the image's
 * [N, C, H, W]). fuse_refine maps a member's view to the nest's: owner[i] is the axis of coarse that
 * fine axis i is part of (-1 for an axis of size 1 of none); 0 if fine does not refine coarse. */
int fuse_refine(const IrShape *fine, const IrShape *coarse, int *owner);
/* Shape s (broadcast to coarse, right-aligned) over fine; axes mask of coarse as axes of fine. */
IrShape fuse_refine_shape(const IrShape *fine, const IrShape *coarse, const IrShape *s);
unsigned fuse_refine_axes(const IrShape *fine, const IrShape *coarse, unsigned mask);

/* The storage value v reads through: v itself unless it is an alias. */
int fuse_root(const FusePlan *p, const IrFunc *f, int v);

/* One line per loop nest or library call, with what each reads and writes. */
void fuse_dump(FILE *out, const IrModule *m, const IrFunc *f, const FusePlan *p);

#endif
