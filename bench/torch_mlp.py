#!/usr/bin/python3
"""PyTorch reference for examples/fashion_mlp.nml and bench/models/mlp*.nml: trains the same MLP
and reports samples/s."""
import argparse
import math
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--limit", type=int, default=0, help="use only the first K training samples")
p.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
p.add_argument("--batch", type=int, default=128)
p.add_argument("--warmup", type=int, default=5, help="untimed warm-up batches")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--optimizer", choices=["adam", "sgd", "ademamix"], default="adam",
               help="ademamix: the plain Optimizer subclass below (no torch.optim version exists)")
p.add_argument("--lr", type=float, default=None, help="default: 1e-3 (adam, ademamix), 0.01 (sgd)")
p.add_argument("--compile", action="store_true", help="torch.compile the optimizer's step (PyTorch 2)")
args = p.parse_args()

# Debian's torch runs sgemm on pthread OpenBLAS; busy-waiting OpenMP threads would starve it
# (about 3x slower on 2 cores). Must be set before torch loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fmnist import load  # noqa: E402


class AdEMAMix(torch.optim.Optimizer):
    """AdEMAMix (Pagliardini, Ablin & Grangier, 2024) as a researcher would write it: per-parameter
    in-place tensor ops, as apple/ml-ademamix, without the alpha and beta3 warm-ups (stdlib/optim.nml's
    ademamix with T_alpha = T_beta3 = 0, its defaults)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, alpha=alpha, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (b1, b2, b3) = group["lr"], group["betas"]
            alpha, eps, wd = group["alpha"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m1"] = torch.zeros_like(p)
                    state["m2"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t, m1, m2, v = state["step"], state["m1"], state["m2"], state["v"]
                bc1, bc2 = 1 - b1**t, 1 - b2**t
                m1.mul_(b1).add_(g, alpha=1 - b1)
                m2.mul_(b3).add_(g, alpha=1 - b3)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
                update = (m1 / bc1 + alpha * m2) / denom
                if wd:
                    update.add_(p, alpha=wd)
                p.add_(update, alpha=-lr)


def make_optimizer(a, params):
    if a.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=a.lr or 0.01)
    elif a.optimizer == "ademamix":
        opt = AdEMAMix(params, lr=a.lr or 1e-3)
    else:
        opt = torch.optim.Adam(params, lr=a.lr or 1e-3)
    if a.compile:
        opt.step = torch.compile(opt.step)
    return opt


def main(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    if a.limit:
        xtr, ytr = xtr[: a.limit], ytr[: a.limit]

    sizes = [784, *a.hidden, 10]
    layers = []
    for i, o in zip(sizes, sizes[1:]):
        layers += [nn.Linear(i, o), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    loss_fn = nn.CrossEntropyLoss()

    def step(opt, xb, yb):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()

    # BENCH_T0 (time.time() when the caller started this process): report how long it took to get
    # to the first training step (interpreter start, import torch, data, model).
    first_step = time.time() - float(os.environ["BENCH_T0"]) if "BENCH_T0" in os.environ else None
    init = {k: v.clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(a, model.parameters())
    for i in range(a.warmup):
        b = slice(i * a.batch, (i + 1) * a.batch)
        step(opt, xtr[b], ytr[b])
    if not a.compile:  # a new optimizer would be compiled again inside the timed loop
        model.load_state_dict(init)
        opt = make_optimizer(a, model.parameters())

    n = len(xtr)
    seconds = 0.0
    for _ in range(a.epochs):
        perm = torch.randperm(n)
        t0 = time.perf_counter()
        for s in range(0, n, a.batch):
            idx = perm[s : s + a.batch]
            step(opt, xtr[idx], ytr[idx])
        seconds += time.perf_counter() - t0

    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    extra = f" start_to_first_step={first_step:.4f}" if first_step is not None else ""
    print(f"torch samples_per_sec={a.epochs * n / seconds:.1f} test_accuracy={acc:.4f}{extra}")


if __name__ == "__main__":
    main(args)
