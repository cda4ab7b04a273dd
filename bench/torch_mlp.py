#!/usr/bin/python3
"""PyTorch reference for examples/fashion_mlp.nml: trains the same MLP and reports samples/s."""
import argparse
import gzip
import os
import time

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=os.cpu_count())
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--limit", type=int, default=0, help="use only the first K training samples")
p.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
p.add_argument("--batch", type=int, default=128)
p.add_argument("--warmup", type=int, default=5, help="untimed warm-up batches")
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()

# Debian's torch runs sgemm on pthread OpenBLAS; busy-waiting OpenMP threads would starve it
# (about 3x slower on 2 cores). Must be set before torch loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(prefix):
    x = read_idx(f"{prefix}-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    y = read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


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

    init = {k: v.clone() for k, v in model.state_dict().items()}
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

    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    print(f"torch samples_per_sec={a.epochs * n / seconds:.1f} test_accuracy={acc:.4f}")


if __name__ == "__main__":
    main(args)
