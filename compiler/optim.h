/* optim.h: optimizer lowering. The train block's update rule, written in NML over one parameter
 * p with its gradient g and step t, is instantiated for every parameter into the step function,
 * after the backward code; its state gets slots in the state block. */
#ifndef OPTIM_H
#define OPTIM_H

#include "lower.h"

/* Register the optimizer's hyperparameters in L->mod (defaults, overridden by the call). */
int optim_hparams(Lower *L, const Value *opt);
/* Append the update of every parameter to fn; grad[p] holds the gradient of parameter p. */
int optim_lower(Lower *L, IrFunc *fn, const Value *opt, const int *grad);

#endif
