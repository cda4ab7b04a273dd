/* ops.h: every IR op, declared once.
 *
 * X(NAME, "dump", arity, CLASS, ATTR, SHAPE, builtin, semantics, emitter)
 *   CLASS     how fusion treats it:
 *               LEAF      no operands: a constant, a tensor of a storage block, a runtime scalar
 *               ELEMWISE  f(a[, b[, c]]) at each index, operands broadcast (numpy rules)
 *               REDUCE    over the axes of its attribute; reduced axes are dropped (or kept as 1)
 *               VIEW      the operand's elements in another shape: no code
 *               LIBRARY   a call into a library (cblas_?gemm)
 *               LOOP      a loop of its own (onehot, permute, random, unfold, fold, slice, argmax,
 *                         gather, scatter, segsum, eigh: a call into LAPACK)
 *               STORE     writes its operand into a block's tensor; no value
 *   ATTR      the member of IrAttr it carries (ir.h): NONE, NUM, SLOT, INDEX, AXES, MATMUL, CLASSES,
 *             PERM, RNG, WINDOW, RANGE, SEGMENT
 *   SHAPE     the rule that gives its shape, with the diagnostic it reports (ir.c, infer_shape):
 *               GIVEN (by the builder), SCALAR, BROADCAST, REDUCE, MATMUL, ONEHOT, PERMUTE, UNFOLD,
 *               FOLD, SLICE, ARGMAX, GATHER, SCATTER, EIGH, STORE
 *   builtin   the NML function that applies it (positional arguments, as many as the arity), or
 *             NULL; sema and lower take these from here, so a new elementwise op needs no code there
 *   semantics its value as a C expression of doubles a, b, c: constant folding, the interpreter and
 *             the tests' reference all evaluate this (ir_op_eval); REDUCE: how two values combine
 *   emitter   its value in a kernel, an LLVMValueRef expression of the Cg *g and the operands a, b, c
 *             (codegen.c); 0 where the op is not computed elementwise
 * Adding an elementwise op is this row and its derivative case in autodiff.c (the compiler warns
 * about a missing case there: that switch has no default). */
#ifndef OPS_H
#define OPS_H

/* clang-format off */
#define IR_OPS(X)                                                                                              \
	X(CONST,    "const",   0, LEAF,     NUM,     GIVEN,     NULL,      0,                 0)               \
	X(LOAD,     "load",    0, LEAF,     SLOT,    GIVEN,     NULL,      0,                 0)               \
	X(HPARAM,   "hparam",  0, LEAF,     INDEX,   SCALAR,    NULL,      0,                 0)               \
	X(STEP,     "step",    0, LEAF,     NONE,    SCALAR,    NULL,      0,                 0) /* t, from 1 */ \
	X(ROWS,     "rows",    0, LEAF,     NONE,    SCALAR,    NULL,      0,                 0) /* n */       \
	X(NEG,      "neg",     1, ELEMWISE, NONE,    BROADCAST, NULL,      -a,                cg_neg(g, a))    \
	X(EXP,      "exp",     1, ELEMWISE, NONE,    BROADCAST, "exp",     exp(a),            cg_exp(g, a))    \
	X(LOG,      "log",     1, ELEMWISE, NONE,    BROADCAST, "log",     log(a),            cg_log(g, a))    \
	X(LOG1P,    "log1p",   1, ELEMWISE, NONE,    BROADCAST, "log1p",   log1p(a),          cg_log1p(g, a))  \
	X(EXPM1,    "expm1",   1, ELEMWISE, NONE,    BROADCAST, "expm1",   expm1(a),          cg_expm1(g, a))  \
	X(SQRT,     "sqrt",    1, ELEMWISE, NONE,    BROADCAST, "sqrt",    sqrt(a),           cg_sqrt(g, a))   \
	X(RSQRT,    "rsqrt",   1, ELEMWISE, NONE,    BROADCAST, "rsqrt",   1 / sqrt(a),       cg_rsqrt(g, a))  \
	X(ABS,      "abs",     1, ELEMWISE, NONE,    BROADCAST, "abs",     fabs(a),           cg_abs(g, a))    \
	X(SIGN,     "sign",    1, ELEMWISE, NONE,    BROADCAST, "sign",    sem_sign(a),       cg_sign(g, a))   \
	X(TANH,     "tanh",    1, ELEMWISE, NONE,    BROADCAST, "tanh",    tanh(a),           cg_tanh(g, a))   \
	X(SIGMOID,  "sigmoid", 1, ELEMWISE, NONE,    BROADCAST, "sigmoid", 1 / (1 + exp(-a)), cg_sigmoid(g, a)) \
	X(RELU,     "relu",    1, ELEMWISE, NONE,    BROADCAST, "relu",    a < 0 ? 0 : a,     cg_relu(g, a))   \
	X(SIN,      "sin",     1, ELEMWISE, NONE,    BROADCAST, "sin",     sin(a),            cg_call(g, "llvm.sin", a)) \
	X(COS,      "cos",     1, ELEMWISE, NONE,    BROADCAST, "cos",     cos(a),            cg_call(g, "llvm.cos", a)) \
	X(FLOOR,    "floor",   1, ELEMWISE, NONE,    BROADCAST, "floor",   floor(a),          cg_call(g, "llvm.floor", a)) \
	X(ERF,      "erf",     1, ELEMWISE, NONE,    BROADCAST, "erf",     erf(a),            cg_libm(g, "erf", a, NULL)) \
	X(STOPGRAD, "stop_gradient", 1, ELEMWISE, NONE, BROADCAST, "stop_gradient", a,       a)               \
	X(EXPAND,   "expand",  1, ELEMWISE, NONE,    GIVEN,     NULL,      a,                 a) /* broadcast copy */ \
	X(ADD,      "add",     2, ELEMWISE, NONE,    BROADCAST, NULL,      a + b,             cg_add(g, a, b)) \
	X(SUB,      "sub",     2, ELEMWISE, NONE,    BROADCAST, NULL,      a - b,             cg_sub(g, a, b)) \
	X(MUL,      "mul",     2, ELEMWISE, NONE,    BROADCAST, NULL,      a * b,             cg_mul(g, a, b)) \
	X(DIV,      "div",     2, ELEMWISE, NONE,    BROADCAST, NULL,      a / b,             cg_div(g, a, b)) \
	X(POW,      "pow",     2, ELEMWISE, NONE,    BROADCAST, NULL,      pow(a, b),         cg_pow(g, a, b)) \
	X(MOD,      "mod",     2, ELEMWISE, NONE,    BROADCAST, "mod",     sem_mod(a, b),     cg_mod(g, a, b)) /* the sign of b */ \
	X(ATAN2,    "atan2",   2, ELEMWISE, NONE,    BROADCAST, "atan2",   atan2(a, b),       cg_libm(g, "atan2", a, b)) \
	X(MAX2,     "maximum", 2, ELEMWISE, NONE,    BROADCAST, NULL,      sem_max(a, b),     cg_max(g, a, b)) \
	X(MIN2,     "minimum", 2, ELEMWISE, NONE,    BROADCAST, NULL,      sem_min(a, b),     cg_min(g, a, b)) \
	X(LT,       "lt",      2, ELEMWISE, NONE,    BROADCAST, NULL,      a < b,             cg_cmp(g, LLVMRealOLT, a, b)) \
	X(LE,       "le",      2, ELEMWISE, NONE,    BROADCAST, NULL,      a <= b,            cg_cmp(g, LLVMRealOLE, a, b)) \
	X(GT,       "gt",      2, ELEMWISE, NONE,    BROADCAST, NULL,      a > b,             cg_cmp(g, LLVMRealOGT, a, b)) \
	X(GE,       "ge",      2, ELEMWISE, NONE,    BROADCAST, NULL,      a >= b,            cg_cmp(g, LLVMRealOGE, a, b)) \
	X(EQ,       "eq",      2, ELEMWISE, NONE,    BROADCAST, NULL,      a == b,            cg_cmp(g, LLVMRealOEQ, a, b)) \
	X(NE,       "ne",      2, ELEMWISE, NONE,    BROADCAST, NULL,      a != b,            cg_cmp(g, LLVMRealUNE, a, b)) \
	X(WHERE,    "where",   3, ELEMWISE, NONE,    BROADCAST, NULL,      a != 0 ? b : c,    cg_where(g, a, b, c)) \
	X(SUM,      "sum",     1, REDUCE,   AXES,    REDUCE,    NULL,      a + b,             0)               \
	X(MAX,      "max",     1, REDUCE,   AXES,    REDUCE,    NULL,      sem_max(a, b),     0)               \
	X(MATMUL,   "matmul",  2, LIBRARY,  MATMUL,  MATMUL,    NULL,      0,                 0)               \
	X(ONEHOT,   "onehot",  1, LOOP,     CLASSES, ONEHOT,    NULL,      0,                 0) /* [n] -> [n, k] */ \
	X(PERMUTE,  "permute", 1, LOOP,     PERM,    PERMUTE,   NULL,      0,                 0) /* out axis i is in axis perm[i] */ \
	X(RANDOM,   "random",  0, LOOP,     RNG,     GIVEN,     NULL,      0,                 0) /* uniform [0, 1) from (seed, t, stream, index) */ \
	X(UNFOLD,   "unfold",  1, LOOP,     WINDOW,  UNFOLD,    NULL,      0,                 0) /* [B,C,H,W] -> [B,C,KH*KW,OH,OW] */ \
	X(SLICE,    "slice",   1, LOOP,     RANGE,   SLICE,     NULL,      0,                 0) /* out[i] = a[i + offset] on axis, 0 outside a */ \
	X(ARGMAX,   "argmax",  1, LOOP,     AXES,    ARGMAX,    NULL,      0,                 0) /* index of the first maximum on one axis */ \
	X(FOLD,     "fold",    1, LOOP,     WINDOW,  FOLD,      NULL,      0,                 0) /* unfold's adjoint: sums back */ \
	X(GATHER,   "gather",  2, LOOP,     NONE,    GATHER,    NULL,      0,                 0) /* out[i, ...] = a[b[i], ...], 0 outside a */ \
	X(SCATTER,  "scatter", 2, LOOP,     CLASSES, SCATTER,   NULL,      0,                 0) /* gather's adjoint: out[v, ...] = sum of a[i, ...] where b[i] = v */ \
	X(SEGSUM,   "segsum",  1, LOOP,     SEGMENT, BROADCAST, NULL,      0,                 0) /* each row: the sum of its segment of rows on axis 0 */ \
	X(EIGH,     "eigh",    3, LOOP,     NONE,    EIGH,      NULL,      0,                 0) /* c != 0: a's eigenvectors as columns (LAPACK), else b */ \
	X(RESHAPE,  "reshape", 1, VIEW,     NONE,    GIVEN,     NULL,      0,                 0)               \
	X(STORE,    "store",   1, STORE,    SLOT,    STORE,     NULL,      0,                 0)
/* clang-format on */

typedef enum {
#define X(name, ...) IR_##name,
	IR_OPS(X)
#undef X
	IR_NOPS
} IrOp;

typedef enum { OPC_LEAF, OPC_ELEMWISE, OPC_REDUCE, OPC_VIEW, OPC_LIBRARY, OPC_LOOP, OPC_STORE } IrOpClass;
typedef enum { ATTR_NONE, ATTR_NUM, ATTR_SLOT, ATTR_INDEX, ATTR_AXES, ATTR_MATMUL, ATTR_CLASSES, ATTR_PERM,
	       ATTR_RNG, ATTR_WINDOW, ATTR_RANGE, ATTR_SEGMENT } IrAttrKind;
typedef enum { SHAPE_GIVEN, SHAPE_SCALAR, SHAPE_BROADCAST, SHAPE_REDUCE, SHAPE_MATMUL, SHAPE_ONEHOT, SHAPE_PERMUTE,
	       SHAPE_UNFOLD, SHAPE_FOLD, SHAPE_SLICE, SHAPE_ARGMAX, SHAPE_GATHER, SHAPE_SCATTER, SHAPE_EIGH, SHAPE_STORE } IrShapeRule;

typedef struct IrOpInfo {
	const char *name;    /* in dumps */
	int arity;
	IrOpClass cls;
	IrAttrKind attr;
	IrShapeRule shape;
	const char *builtin; /* the NML function, or NULL */
} IrOpInfo;

const IrOpInfo *ir_op_info(IrOp op);
/* The op whose builtin is name (interned or not), or -1. */
int ir_op_of_builtin(const char *name);

/* The op's semantics on doubles (the "semantics" column). Defined for ELEMWISE ops and, as the
 * combination of two values, for REDUCE ops. */
double ir_op_eval(IrOp op, double a, double b, double c);

#endif
