/* autodiff.h: reverse-mode differentiation, an IR-to-IR pass. */
#ifndef AUTODIFF_H
#define AUTODIFF_H

#include "ir.h"

/* Append to f the gradient of the scalar value loss with respect to every parameter; grad[p] is
 * the value holding the gradient of parameter slot p (zeros if the loss does not read it). */
int ad_backward(IrFunc *f, int loss, const IrModule *m, int *grad);

#endif
