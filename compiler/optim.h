/* optim.h: optimizer lowering. The train block's update rule, written in NML over one parameter
 * p with its gradient g and step t, is instantiated for every parameter into the step function,
 * after the backward code; its state gets slots in the state block. */
#ifndef OPTIM_H
#define OPTIM_H

#include "lower.h"

/* The rules of the train block's optimizer: the one call, or the rules of a chain(...), in order;
 * returns how many (at most 64). optim_def gives a rule's definition (optimizer or transform). */
int optim_rules(const Value *opt, const Value **rule);
AstNode *optim_def(const Lower *L, const Value *rule);
/* Whether hyperparameter name is given as a schedule (so --set cannot change it). */
int optim_is_schedule(const Lower *L, const char *name);
/* "adam(lr=0.001, ...)" or "chain(clip(max_norm=1), adam(...))", with the current values. */
void optim_describe(FILE *out, const Lower *L, const Value *opt);
/* Register the optimizer's hyperparameters in L->mod (defaults, overridden by the call). */
int optim_hparams(Lower *L, const Value *opt);
/* Append the update of every parameter to fn; grad[p] holds the gradient of parameter p. */
int optim_lower(Lower *L, IrFunc *fn, const Value *opt, const int *grad);
/* Gradient accumulation for parameter p from here on in the step being lowered: g is added to a
 * sum kept as state, the rules after run every k-th step (L->opt_apply) on the mean, and t and T
 * in p's base environment count updates. Returns the mean. */
int optim_accumulate(Lower *L, int p, int g, int k, SrcLoc loc);

#endif
