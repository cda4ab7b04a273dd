#!/usr/bin/python3
"""Oracle: the standard library's other optimizers (std.optim beyond sgd and adam) against PyTorch.

The harness is oracle.py's (imported): each case trains the small tanh network on tests/data blobs
with nmlc, full batch, from weights written here, and runs the same 10 steps with torch.optim from
the same weights; every saved parameter and every epoch's train and test loss must match within
oracle.py's tolerances (rtol 1e-4 / atol 1e-5 on parameters, 5e-6 on losses).

Lion has no torch implementation: it is checked against NumpyLion below, a NumPy transcription of
Algorithm 2 of Chen et al. 2023 ("Symbolic Discovery of Optimization Algorithms").

NAdam is checked against torch 1.13's foreach=True code. Its default single-tensor code multiplies
mu_t into the product for mu_{t+1} twice (`mu_product * mu * mu_next`, fixed in pytorch/pytorch#92699,
torch 2.0); the foreach code, torch >= 2.0 and the documented algorithm use mu_1 ... mu_{t+1}.

Usage: optimizers.py NMLC [PREFIX...]   (only the cases whose name starts with a PREFIX)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402  (exits 77, skipped, when numpy or torch is missing)
from oracle import np, torch  # noqa: E402

O = torch.optim


class NumpyLion:
    """Lion, Algorithm 2 of the paper, in NumPy (f32 like the parameters):
    c = b1 m + (1 - b1) g;  theta = theta - lr (sign(c) + wd theta);  m = b2 m + (1 - b2) g."""

    def __init__(self, params, lr=1e-4, b1=0.9, b2=0.99, wd=0.0):
        self.params, self.lr, self.b1, self.b2, self.wd = params, lr, b1, b2, wd
        self.m = [np.zeros(p.shape, np.float32) for p in params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        f = np.float32
        lr, b1, b2, wd = f(self.lr), f(self.b1), f(self.b2), f(self.wd)
        with torch.no_grad():
            for p, m in zip(self.params, self.m):
                theta, g = p.numpy().copy(), p.grad.numpy()
                c = b1 * m + (f(1) - b1) * g
                theta = theta - lr * (np.sign(c) + wd * theta)
                m[...] = b2 * m + (f(1) - b2) * g
                p.copy_(torch.from_numpy(theta))


# name, loss, NML optimizer, --set, torch optimizer of a parameter list
CASES = [
    ("adamw", "ce", "adamw()", [], lambda p: O.AdamW(p)),
    ("adamw-hparams", "ce", "adamw(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-6, weight_decay = 0.1)", [],
     lambda p: O.AdamW(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adamw-set", "ce", "adamw()", ["lr=0.05", "weight_decay=0.5"],
     lambda p: O.AdamW(p, lr=0.05, weight_decay=0.5)),
    ("adamw-sched", "ce", "adamw(lr = 0.01 * warmup(t, 4))", [],
     lambda p: oracle.lambda_lr(O.AdamW(p, lr=0.01), lambda e: min((e + 1) / 4, 1))),
    ("amsgrad", "ce", "amsgrad()", [], lambda p: O.Adam(p, amsgrad=True)),
    # b2 = 0.5 with a large step: v shrinks from step 3 on, so the maximum matters
    ("amsgrad-max", "ce", "amsgrad(lr = 0.05, b2 = 0.5)", [],
     lambda p: O.Adam(p, lr=0.05, betas=(0.9, 0.5), amsgrad=True)),
    ("amsgrad-weight-decay", "ce", "amsgrad(lr = 0.05, b2 = 0.5, weight_decay = 0.1)", [],
     lambda p: O.Adam(p, lr=0.05, betas=(0.9, 0.5), weight_decay=0.1, amsgrad=True)),
    ("amsgrad-decoupled", "ce",
     "amsgrad(lr = 0.05, b2 = 0.5, weight_decay = 0.1, decoupled_weight_decay = 1)", [],
     lambda p: O.AdamW(p, lr=0.05, betas=(0.9, 0.5), weight_decay=0.1, amsgrad=True)),
    ("adamax", "ce", "adamax()", [], lambda p: O.Adamax(p)),
    ("adamax-hparams", "ce", "adamax(lr = 1e-2, b1 = 0.8, b2 = 0.9, eps = 1e-3, weight_decay = 0.1)", [],
     lambda p: O.Adamax(p, lr=1e-2, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1)),
    ("nadam", "ce", "nadam()", [], lambda p: O.NAdam(p, foreach=True)),
    ("nadam-hparams", "mse",
     "nadam(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-6, weight_decay = 0.1, momentum_decay = 0.05)", [],
     lambda p: O.NAdam(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, momentum_decay=0.05,
                       foreach=True)),
    # rho_t <= 5 (unrectified steps) for t <= 5, > 5 (rectified) from t = 6, with either b2. NML
    # computes rho_t = rho_inf - 2 t b2^t / (1 - b2^t) in f32: with b2 = 0.999 it cancels to within
    # about 0.01 of torch's f64 value, which moves the rectified steps by up to 0.4% (parameters by
    # 6e-8 here at lr 1e-3, by 4e-7 at lr 1e-2).
    ("radam", "ce", "radam()", [], lambda p: O.RAdam(p)),
    ("radam-hparams", "mse", "radam(lr = 1e-2, b1 = 0.8, b2 = 0.9, eps = 1e-6, weight_decay = 0.1)", [],
     lambda p: O.RAdam(p, lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),
    ("adagrad", "ce", "adagrad()", [], lambda p: O.Adagrad(p)),
    ("adagrad-lr-decay", "ce", "adagrad(lr = 0.1, lr_decay = 0.1)", [],
     lambda p: O.Adagrad(p, lr=0.1, lr_decay=0.1)),
    ("adagrad-initial-accumulator", "ce", "adagrad(lr = 0.1, initial_accumulator_value = 0.1)", [],
     lambda p: O.Adagrad(p, lr=0.1, initial_accumulator_value=0.1)),
    ("adagrad-weight-decay", "mse", "adagrad(lr = 0.1, weight_decay = 0.1, eps = 1e-6)", [],
     lambda p: O.Adagrad(p, lr=0.1, weight_decay=0.1, eps=1e-6)),
    ("rmsprop", "ce", "rmsprop()", [], lambda p: O.RMSprop(p)),
    ("rmsprop-centered", "ce", "rmsprop(centered = 1)", [], lambda p: O.RMSprop(p, centered=True)),
    ("rmsprop-momentum", "ce", "rmsprop(lr = 1e-3, momentum = 0.9)", [],
     lambda p: O.RMSprop(p, lr=1e-3, momentum=0.9)),
    ("rmsprop-all", "mse",
     "rmsprop(lr = 1e-3, alpha = 0.9, eps = 1e-6, weight_decay = 0.1, momentum = 0.5, centered = 1)", [],
     lambda p: O.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=0.1, momentum=0.5, centered=True)),
    ("rmsprop-set", "ce", "rmsprop()", ["centered=1", "momentum=0.5", "lr=1e-3"],
     lambda p: O.RMSprop(p, lr=1e-3, momentum=0.5, centered=True)),
    ("adadelta", "ce", "adadelta()", [], lambda p: O.Adadelta(p)),
    ("adadelta-hparams", "mse", "adadelta(lr = 0.5, rho = 0.95, eps = 1e-4, weight_decay = 0.1)", [],
     lambda p: O.Adadelta(p, lr=0.5, rho=0.95, eps=1e-4, weight_decay=0.1)),
    ("lion", "ce", "lion()", [], lambda p: NumpyLion(p)),
    ("lion-hparams", "ce", "lion(lr = 3e-3, b1 = 0.8, b2 = 0.9, weight_decay = 1)", [],
     lambda p: NumpyLion(p, lr=3e-3, b1=0.8, b2=0.9, wd=1.0)),
]


if __name__ == "__main__":
    sys.exit(oracle.run_cases(CASES, oracle.run_case))
