#!/usr/bin/python3
"""PyTorch side of the optimizer rows of bench/run.py: one step of Adam, Lion or LAMB over 10 tensors
of 1M parameters with fixed gradients, timed alone (after two untimed steps). Adam is torch.optim.Adam(foreach=True); PyTorch
1.13 has neither Lion nor LAMB, so they are written here with the same torch._foreach_* ops its
foreach optimizers use (the arithmetic of stdlib/optim.nml's lion and lamb). Prints
`torch rule=RULE ns_per_param=…` for each rule asked for: the median step time per parameter."""
import argparse
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--rule", default="adam,lion,lamb", help="comma-separated: adam, lion, lamb")
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--tensors", type=int, default=10)
p.add_argument("--size", type=int, default=1_000_000)
p.add_argument("--steps", type=int, default=20)
args = p.parse_args()

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al., 2023) with foreach ops: p -= lr (sign(b1 m + (1 - b1) g) + wd p), then
    m = b2 m + (1 - b2) g."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            ms = [self.state[p].setdefault("m", torch.zeros_like(p)) for p in ps]
            c = torch._foreach_mul(ms, b1)
            torch._foreach_add_(c, gs, alpha=1 - b1)
            c = [x.sign_() for x in c]  # no _foreach_sign in 1.13
            torch._foreach_mul_(ps, 1 - lr * wd)
            torch._foreach_add_(ps, c, alpha=-lr)
            torch._foreach_mul_(ms, b2)
            torch._foreach_add_(ms, gs, alpha=1 - b2)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2020) with foreach ops, as stdlib/optim.nml's lamb: Adam direction plus
    decoupled decay, scaled per tensor by the trust ratio ||p|| / ||r||."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            ms = [self.state[p].setdefault("m", torch.zeros_like(p)) for p in ps]
            vs = [self.state[p].setdefault("v", torch.zeros_like(p)) for p in ps]
            torch._foreach_mul_(ms, b1)
            torch._foreach_add_(ms, gs, alpha=1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
            denom = torch._foreach_div(vs, 1 - b2**self.t)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            r = torch._foreach_div(ms, 1 - b1**self.t)
            torch._foreach_div_(r, denom)
            torch._foreach_add_(r, ps, alpha=wd)
            pn = torch.stack(torch._foreach_norm(ps))
            rn = torch.stack(torch._foreach_norm(r))
            ratio = torch.where((pn > 0) & (rn > 0), pn / rn, torch.ones_like(pn))
            torch._foreach_mul_(r, [-lr * x for x in ratio.tolist()])
            torch._foreach_add_(ps, r)


def time_rule(a, rule):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.full((a.size,), 0.01)) for _ in range(a.tensors)]
    for p in params:
        p.grad = (torch.rand(a.size) - 0.5) * 2e-3
    if rule == "adam":
        opt = torch.optim.Adam(params, lr=1e-3, foreach=True)
    elif rule == "lion":
        opt = Lion(params)
    else:
        opt = Lamb(params)
    for _ in range(2):
        opt.step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] / (a.tensors * a.size)


def main(a):
    torch.set_num_threads(a.threads)
    for rule in a.rule.split(","):
        if rule not in ("adam", "lion", "lamb"):
            raise SystemExit(f"torch_optstep.py: unknown rule '{rule}' (adam, lion, lamb)")
        print(f"torch rule={rule} ns_per_param={time_rule(a, rule) * 1e9:.4f}", flush=True)


if __name__ == "__main__":
    main(args)
