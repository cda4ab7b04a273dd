#!/usr/bin/python3
"""Oracle: std.nn's normalization layers against PyTorch.

As oracle.py: Linear(6, 8), a normalization layer, tanh, Linear(8, 3), cross-entropy, trained by
nmlc from weights this script writes (the norm's affine parameters moved off 1 and 0 so that
their gradients matter), full batch, 10 Adam steps, and by torch from the same weights;
parameters and logged losses must match within oracle.py's tolerances. LayerNorm is
F.layer_norm; RMSNorm and ScaleNorm (not in torch 1.13) are transcribed from their papers.

Usage: norms.py NMLC [PREFIX...]
"""
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # exits 77 (skip) when numpy or torch is missing
from oracle import DATA, STEPS, RTOL, ATOL, LOSS_TOL

import numpy as np
import torch
import torch.nn.functional as F


def rms_norm(h, p, eps=1e-6):
    return p["n.gamma"] * h * torch.rsqrt((h * h).mean(-1, keepdim=True) + eps)


def scale_norm(h, p, eps=1e-5):
    return p["n.g"] * h / h.norm(dim=-1, keepdim=True).clamp(min=eps)


# name: NML layer, its parameters' initial values of (rng), torch's norm of (h, parameters)
NORMS = {
    "layernorm": ("LayerNorm(h)",
                  lambda r: {"n.gamma": r.uniform(0.5, 1.5, 8), "n.beta": r.uniform(-0.5, 0.5, 8)},
                  lambda h, p: F.layer_norm(h, (8,), p["n.gamma"], p["n.beta"])),
    "layernorm-eps": ("LayerNorm(h, eps = 0.1)",
                      lambda r: {"n.gamma": r.uniform(0.5, 1.5, 8), "n.beta": r.uniform(-0.5, 0.5, 8)},
                      lambda h, p: F.layer_norm(h, (8,), p["n.gamma"], p["n.beta"], eps=0.1)),
    "rmsnorm": ("RMSNorm(h)", lambda r: {"n.gamma": r.uniform(0.5, 1.5, 8)}, rms_norm),
    "scalenorm": ("ScaleNorm(h)", lambda r: {"n.g": r.uniform(2, 3, 1)}, scale_norm),
}

NML = """use std.nn
use std.optim

layer Net(d, h, k) {{
  l1 = Linear(d, h)
  n = {norm}
  l2 = Linear(h, k)
  forward(x) = l2(tanh(n(l1(x))))
}}

train {{
  data      = npy("{x}", "{y}")
  model     = Net(6, 8, 3)
  loss      = cross_entropy(model(x), y)
  optimizer = adam(lr = 1e-2)
  batch     = 128
}}
"""


def run_case(nmlc, tmp, name):
    norm_src, norm_init, norm_fn = NORMS[name]
    xpath, ypath = (os.path.abspath(os.path.join(DATA, f + ".npy")) for f in ("blobs_x", "blobs_y"))
    src = os.path.join(tmp, name + ".nml")
    with open(src, "w") as f:
        f.write(NML.format(x=xpath, y=ypath, norm=norm_src))
    rng = np.random.default_rng(1)
    init = {"l1.w": rng.uniform(-0.4, 0.4, (6, 8)), "l1.b": rng.uniform(-0.4, 0.4, 8),
            "l2.w": rng.uniform(-0.35, 0.35, (8, 3)), "l2.b": rng.uniform(-0.35, 0.35, 3)}
    init |= norm_init(rng)
    init = {n: a.astype(np.float32) for n, a in init.items()}
    init_path, out_path, log_path = (os.path.join(tmp, name + e)
                                     for e in (".init.safetensors", ".out.safetensors", ".jsonl"))
    oracle.write_safetensors(init_path, init)
    r = subprocess.run([nmlc, "run", src, "--threads", "1", "--init", init_path, "--epochs", str(STEPS),
                        "--save", out_path, "--log", log_path], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"nmlc exited {r.returncode}: {r.stderr.strip()}"

    x, y = torch.from_numpy(np.load(xpath)), torch.from_numpy(np.load(ypath))
    n_test = int(np.floor(0.1 * len(x) + 0.5))
    xtr, ytr, xte, yte = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}

    def loss_of(x, y):
        h = norm_fn(x @ p["l1.w"] + p["l1.b"], p)
        return F.cross_entropy(torch.tanh(h) @ p["l2.w"] + p["l2.b"], y)

    opt = torch.optim.Adam(list(p.values()), lr=1e-2)
    want_losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_of(xtr, ytr)
        loss.backward()
        opt.step()
        with torch.no_grad():
            want_losses.append((loss.item(), loss_of(xte, yte).item()))
    with open(log_path) as f:
        got_losses = [(e["train_loss"], e["test_loss"]) for e in map(json.loads, f)]
    got = oracle.read_safetensors(out_path)
    loss_diff = float(np.max(np.abs(np.array(got_losses) - np.array(want_losses))))
    abs_diff = max(float(np.max(np.abs(got[n] - p[n].detach().numpy()))) for n in p)
    ok = loss_diff <= LOSS_TOL and all(
        np.allclose(got[n], p[n].detach().numpy(), rtol=RTOL, atol=ATOL) for n in p)
    return ok, f"params max abs {abs_diff:.1e}, loss max diff {loss_diff:.1e}"


def run(nmlc, tmp, case):
    return run_case(nmlc, tmp, case[0])


if __name__ == "__main__":
    sys.exit(oracle.run_cases([(name,) for name in NORMS], run))
