#!/usr/bin/python3
"""PyTorch side of the CNN row of bench/run.py (bench/models/cnn.nml, examples/fashion_cnn.nml's
model, is the NML side): two 3x3 convolutions with BatchNorm, ReLU and 2x2 max pooling, dropout 0.25
before and after the first of two linear layers; Adam, batch 128, on Fashion-MNIST as
[N, 1, 28, 28]. Reports training samples/s like torch_mlp.py."""
import argparse
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--limit", type=int, default=0, help="use only the first K training samples")
p.add_argument("--batch", type=int, default=128)
p.add_argument("--warmup", type=int, default=3, help="untimed warm-up batches")
p.add_argument("--eval-limit", type=int, default=10000, help="test samples evaluated (accuracy only)")
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()

# As torch_mlp.py: OpenBLAS threads for the matrix products, OpenMP threads that sleep when idle.
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fmnist import load  # noqa: E402


def cnn():
    # [N, 1, 28, 28] -> [N, 32, 14, 14] -> [N, 64, 7, 7] -> 3136 -> 128 -> 10
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


def main(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr, ytr = load("train", (-1, 1, 28, 28))
    xte, yte = load("t10k", (-1, 1, 28, 28))
    if a.limit:
        xtr, ytr = xtr[: a.limit], ytr[: a.limit]
    xte, yte = xte[: a.eval_limit], yte[: a.eval_limit]

    model = cnn()
    loss_fn = nn.CrossEntropyLoss()

    def step(opt, xb, yb):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()

    first_step = time.time() - float(os.environ["BENCH_T0"]) if "BENCH_T0" in os.environ else None
    init = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(a.warmup):
        b = slice(i * a.batch, (i + 1) * a.batch)
        step(opt, xtr[b], ytr[b])
    model.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    n = len(xtr)
    seconds = 0.0
    for _ in range(a.epochs):
        perm = torch.randperm(n)
        t0 = time.perf_counter()
        for s in range(0, n, a.batch):
            idx = perm[s : s + a.batch]
            step(opt, xtr[idx], ytr[idx])
        seconds += time.perf_counter() - t0

    model.eval()
    with torch.no_grad():
        acc = sum((model(xte[s : s + 1000]).argmax(1) == yte[s : s + 1000]).sum().item()
                  for s in range(0, len(xte), 1000)) / len(xte)
    extra = f" start_to_first_step={first_step:.4f}" if first_step is not None else ""
    print(f"torch samples_per_sec={a.epochs * n / seconds:.1f} test_accuracy={acc:.4f}{extra}")


if __name__ == "__main__":
    main(args)
