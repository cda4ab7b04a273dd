/* autodiff.h: reverse-mode differentiation, an IR-to-IR pass. */
#ifndef AUTODIFF_H
#define AUTODIFF_H

#include "ir.h"

/* Appends to f the gradient of the scalar value y with respect to each value wrt[i] (parameters,
 * inputs, intermediates: any value of f): out[i] is d y / d wrt[i], zeros of wrt[i]'s shape where y
 * does not depend on it (or only through stop_gradient); -1 where wrt[i] is -1. Returns 0, or -1
 * if y is -1. Calling it again (on a function that inlines the first at other weights, say) gives a
 * second gradient within the same function. */
int ad_grad(IrFunc *f, int y, const int *wrt, int nwrt, int *out);

#endif
