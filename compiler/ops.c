/* ops.c: the op table (ops.h) as data, and the ops' semantics on doubles. */
#include "ops.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

static const IrOpInfo info[IR_NOPS] = {
#define X(name, str, arity, cls, attr, shape, builtin, sem, emit) \
	[IR_##name] = {str, arity, OPC_##cls, ATTR_##attr, SHAPE_##shape, builtin},
	IR_OPS(X)
#undef X
};

const IrOpInfo *ir_op_info(IrOp op) { return &info[op]; }

int ir_op_of_builtin(const char *name)
{
	for (int op = 0; op < IR_NOPS; op++)
		if (info[op].builtin && strcmp(info[op].builtin, name) == 0)
			return op;
	return -1;
}

/* NaN in, NaN out, as the kernels' code does: a NaN must stay visible, not become 0 or 1. */
static double sem_sign(double a) { return a != a ? a : (a > 0) - (a < 0); }

/* IEEE 754-2019 maximum and minimum (LLVM's llvm.maximum/minimum): NaN if either operand is, and
 * -0 below +0. */
static double sem_max(double a, double b)
{
	if (a != a || b != b)
		return a + b;
	if (a == b)
		return signbit(a) ? b : a;
	return a > b ? a : b;
}

static double sem_min(double a, double b)
{
	if (a != a || b != b)
		return a + b;
	if (a == b)
		return signbit(a) ? a : b;
	return a < b ? a : b;
}

/* The remainder with the sign of b, as Python's % and torch.remainder: fmod is exact, and a result
 * of the other sign moves by b. */
static double sem_mod(double a, double b)
{
	double r = fmod(a, b);
	return r != 0 && (r < 0) != (b < 0) ? r + b : r;
}

double ir_op_eval(IrOp op, double a, double b, double c)
{
	switch (op) {
#define X(name, str, arity, cls, attr, shape, builtin, sem, emit) \
	case IR_##name: return (sem);
		IR_OPS(X)
#undef X
	case IR_NOPS: break;
	}
	return NAN;
}
