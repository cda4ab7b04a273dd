#!/usr/bin/python3
"""std.optim's soap against a PyTorch transcription of the rule as docs/optimizers.md states it
(the authors' order of operations, with an exact eigendecomposition at each refresh; torch.linalg.eigh,
in torch's [out, in] layout, where NML's l and r trade places).

A network whose weights are square, 6 -> 6 -> 6 (squared error to one-hot targets, so that every
gradient has full rank), with the refresh every 5 updates: the gradients' outer
products are then nondegenerate, so both sides find the same eigenbasis up to signs, which the
rule does not depend on (a rotated gradient component that is zero in exact arithmetic would be
rounding noise that Adam's normalization blows up to +-1). Batches of 16 rows in the data's order
(shuffle = 0), 4 epochs: a step's gradient is never the one its basis was computed from. The biases take the rule's Adam branch.
Parameters after the run must equal the float64 and the float32 reference within atol 1e-4, rtol
1e-3: the floor, the float32 reference against the float64 one, measures 2.6e-5 (float32
eigendecompositions differ in the last places, and Adam's normalization amplifies small rotated
components), nmlc 2.3e-5 from float64. The run must move the weights by far more (0.47).

Usage: soap.py NMLC
"""
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
import oracle  # noqa: E402  (exits 77, skipped, when numpy or torch is missing)
from oracle import np, torch, read_safetensors, write_safetensors  # noqa: E402
import torch.nn.functional as F  # noqa: E402

nmlc = sys.argv[1]
BATCH, EPOCHS, LR, FREQ = 16, 4, 0.02, 5
NML = """use std.nn
use std.optim

layer Net() {{
  l1 = Linear(6, 6)
  l2 = Linear(6, 6)
  forward(x) = l2(tanh(l1(x)))
}}

train {{
  data      = npy("{x}", "{y}")
  model     = Net()
  loss      = mean((model(x) - onehot(y, 6))^2)
  optimizer = soap(lr = {lr}, precondition_frequency = {freq})
  batch     = {batch}
  epochs    = {epochs}
  shuffle   = 0
}}
"""

x_all = np.load(os.path.join(oracle.DATA, "blobs_x.npy")).astype(np.float32)
y_all = np.load(os.path.join(oracle.DATA, "blobs_y.npy")).astype(np.int64)
n_train = len(x_all) - round(0.1 * len(x_all))
rng = np.random.default_rng(21)
init = {"l1.w": rng.uniform(-0.6, 0.6, (6, 6)), "l1.b": rng.uniform(-0.3, 0.3, 6),
        "l2.w": rng.uniform(-0.6, 0.6, (6, 6)), "l2.b": rng.uniform(-0.3, 0.3, 6)}


def reference(dtype, lr=LR, b1=0.95, b2=0.95, eps=1e-8, wd=0.01, sb=0.95, freq=FREQ):
    x, y = torch.tensor(x_all[:n_train], dtype=dtype), torch.tensor(y_all[:n_train])
    # torch's layout: a weight is [out, in]
    p = {k: torch.tensor(v.T if v.ndim == 2 else v, dtype=dtype, requires_grad=True) for k, v in init.items()}
    st = {k: {"m": torch.zeros_like(v), "v": torch.zeros_like(v)} for k, v in p.items()}
    batches = [(s, min(s + BATCH, n_train)) for _ in range(EPOCHS) for s in range(0, n_train, BATCH)]
    for t, (lo, hi) in enumerate(batches, 1):
        h = torch.tanh(x[lo:hi] @ p["l1.w"].T + p["l1.b"])
        loss = ((h @ p["l2.w"].T + p["l2.b"] - F.one_hot(y[lo:hi], 6).to(dtype)) ** 2).mean()
        grads = torch.autograd.grad(loss, list(p.values()))
        k = t - 1  # updates so far: step 1 only starts the preconditioners
        with torch.no_grad():
            for (name, w), g in zip(p.items(), grads):
                s = st[name]
                if k > 0:
                    s["m"].mul_(b1).add_(g, alpha=1 - b1)
                    if w.ndim == 2:
                        QL, QR = s["QL"], s["QR"]
                        s["v"].mul_(b2).add_((QL.T @ g @ QR) ** 2, alpha=1 - b2)
                        step = QL @ ((QL.T @ s["m"] @ QR) / (s["v"].sqrt() + eps)) @ QR.T
                    else:
                        s["v"].mul_(b2).add_(g ** 2, alpha=1 - b2)
                        step = s["m"] / (s["v"].sqrt() + eps)
                    w.sub_(lr * (1 - b2 ** k) ** 0.5 / (1 - b1 ** k) * step)
                    w.mul_(1 - lr * wd)
                if w.ndim == 2:
                    if "L" not in s:
                        s["L"] = torch.zeros(g.shape[0], g.shape[0], dtype=dtype)
                        s["R"] = torch.zeros(g.shape[1], g.shape[1], dtype=dtype)
                    s["L"].mul_(sb).add_(g @ g.T, alpha=1 - sb)
                    s["R"].mul_(sb).add_(g.T @ g, alpha=1 - sb)
                    if k % freq == 0:
                        s["QL"], s["QR"] = torch.linalg.eigh(s["L"])[1], torch.linalg.eigh(s["R"])[1]
    return {k: (v.detach().double().numpy().T if v.ndim == 2 else v.detach().double().numpy()) for k, v in p.items()}


with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "soap.nml")
    with open(src, "w") as f:
        f.write(NML.format(x=os.path.join(oracle.DATA, "blobs_x.npy"), y=os.path.join(oracle.DATA, "blobs_y.npy"),
                           lr=LR, freq=FREQ, batch=BATCH, epochs=EPOCHS))
    ip, out = os.path.join(tmp, "init.safetensors"), os.path.join(tmp, "out.safetensors")
    write_safetensors(ip, {k: np.asarray(v, np.float32) for k, v in init.items()})
    r = subprocess.run([nmlc, "run", src, "-q", "--init", ip, "--save", out], capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL nmlc run:", r.stderr)
        sys.exit(1)
    got = read_safetensors(out)
    ref64, ref32 = reference(torch.float64), reference(torch.float32)
    floor = max(float(np.max(np.abs(ref32[k] - ref64[k]))) for k in init)
    print(f"floor: max |float32 reference - float64 reference| {floor:.1e}")
    failed = 0
    for name, ref in (("float64", ref64), ("float32", ref32)):
        worst = max(float(np.max(np.abs(got[k] - ref[k]) / (1e-4 + 1e-3 * np.abs(ref[k])))) for k in init)
        moved = max(float(np.max(np.abs(ref[k] - init[k]))) for k in init)
        diff = max(float(np.max(np.abs(got[k] - ref[k]))) for k in init)
        ok = worst <= 1 and moved > 0.05
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} soap vs the {name} reference: max |nml - ref| {diff:.1e} "
              f"({worst:.2f} of tolerance), weights moved {moved:.2f}")
    sys.exit(1 if failed else 0)
