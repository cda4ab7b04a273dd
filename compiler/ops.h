/* ops.h: every IR op, declared once.
 *
 * X(NAME, arity, kind, "dump name")
 *   LEAF     no operands; reads a slot (param, state, hparam, input) or is a constant
 *   UNARY    elementwise f(a); the output may be larger than a (a broadcasts)
 *   BINARY   elementwise f(a, b) with broadcasting
 *   TERNARY  elementwise f(c, a, b) with broadcasting
 *   REDUCE   over the axes in ival (a bit mask); the output shape lists the kept axes
 *   MATMUL   2-D product; ival bit 0 transposes a, bit 1 transposes b
 *   SPECIAL  its own shape and lowering
 *   STORE    writes its operand into a slot; no value
 * The derivative of each op is one case in autodiff.c; its lowering one case in codegen.c. */
#ifndef OPS_H
#define OPS_H

#define IR_OPS(X)                                                     \
	X(CONST,    0, LEAF,    "const")   /* fval, broadcast to shape */ \
	X(INPUT,    0, LEAF,    "input")   /* ival 0: x, 1: y */          \
	X(PARAM,    0, LEAF,    "param")   /* ival: parameter slot */     \
	X(STATE,    0, LEAF,    "state")   /* ival: state slot */         \
	X(HPARAM,   0, LEAF,    "hparam")  /* ival: hyperparameter */     \
	X(STEP,     0, LEAF,    "step")    /* t, 1-based */               \
	X(ROWS,     0, LEAF,    "rows")    /* n, rows of this batch */    \
	X(NEG,      1, UNARY,   "neg")                                    \
	X(EXP,      1, UNARY,   "exp")                                    \
	X(LOG,      1, UNARY,   "log")                                    \
	X(LOG1P,    1, UNARY,   "log1p")   /* log(1 + a), exact near 0 */ \
	X(EXPM1,    1, UNARY,   "expm1")   /* exp(a) - 1, exact near 0 */ \
	X(SQRT,     1, UNARY,   "sqrt")                                   \
	X(RSQRT,    1, UNARY,   "rsqrt")                                  \
	X(ABS,      1, UNARY,   "abs")                                    \
	X(SIGN,     1, UNARY,   "sign")                                   \
	X(TANH,     1, UNARY,   "tanh")                                   \
	X(SIGMOID,  1, UNARY,   "sigmoid")                                \
	X(RELU,     1, UNARY,   "relu")                                   \
	X(STOPGRAD, 1, UNARY,   "stop_gradient")                          \
	X(EXPAND,   1, UNARY,   "expand")  /* broadcast copy */           \
	X(ADD,      2, BINARY,  "add")                                    \
	X(SUB,      2, BINARY,  "sub")                                    \
	X(MUL,      2, BINARY,  "mul")                                    \
	X(DIV,      2, BINARY,  "div")                                    \
	X(POW,      2, BINARY,  "pow")                                    \
	X(MAX2,     2, BINARY,  "maximum")                                \
	X(MIN2,     2, BINARY,  "minimum")                                \
	X(LT,       2, BINARY,  "lt")      /* comparisons give 1 or 0 */  \
	X(LE,       2, BINARY,  "le")                                     \
	X(GT,       2, BINARY,  "gt")                                     \
	X(GE,       2, BINARY,  "ge")                                     \
	X(EQ,       2, BINARY,  "eq")                                     \
	X(NE,       2, BINARY,  "ne")                                     \
	X(WHERE,    3, TERNARY, "where")   /* c != 0 ? a : b */           \
	X(SUM,      1, REDUCE,  "sum")                                    \
	X(MAX,      1, REDUCE,  "max")                                    \
	X(MATMUL,   2, MATMUL,  "matmul")                                 \
	X(ONEHOT,   1, SPECIAL, "onehot")  /* [n] indices -> [n, ival] */ \
	X(RESHAPE,  1, SPECIAL, "reshape") /* same elements, new shape */ \
	X(STORE_PARAM, 1, STORE, "store_param")                           \
	X(STORE_STATE, 1, STORE, "store_state")                           \
	X(STORE_GRAD,  1, STORE, "store_grad")                            \
	X(STORE_LOSS,  1, STORE, "store_loss")                            \
	X(STORE_PRED,  1, STORE, "store_pred")

typedef enum {
#define X(name, arity, kind, str) IR_##name,
	IR_OPS(X)
#undef X
	IR_NOPS
} IrOp;

typedef enum { OPK_LEAF, OPK_UNARY, OPK_BINARY, OPK_TERNARY, OPK_REDUCE, OPK_MATMUL, OPK_SPECIAL, OPK_STORE } IrOpKind;

#endif
