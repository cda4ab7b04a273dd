/* interp.h: run an IR function op by op in f32, without code generation. */
#ifndef INTERP_H
#define INTERP_H

#include "ir.h"
#include "nmlrt.h"

/* Runs f on a (float buffers; work is not used), storing into the slots as the kernel would. With
 * stop_at_nonfinite, stops at the first op whose result is not finite although its operands are,
 * and returns that instruction; else (or if every value is finite) returns -1; -2 if out of memory. */
int interp_run(const IrModule *m, const IrFunc *f, NmlArgs *a, int stop_at_nonfinite);

#endif
