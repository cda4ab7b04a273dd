#!/usr/bin/python3
"""Evaluation weights: a rule that sets p_eval (here an exponential moving average of the weights,
Polyak averaging) is evaluated at them. Full-batch SGD for 12 steps (one per epoch) from weights
this script writes; torch runs the same SGD and keeps the same average. Every epoch's logged test
loss must be the loss on the held-out rows at the average, the checkpoint must hold the average as
"<param>.eval", and --epochs 0 (no step yet) evaluates the weights themselves. f32 on both sides:
rtol 1e-4, atol 2e-5.

Usage: eval_weights.py NMLC
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DATA, blobs, check, finish, load, np, orders as batch_orders, save, torch, write_safetensors  # noqa: E402,F401
import torch.nn.functional as F  # noqa: E402

nmlc = sys.argv[1]
STEPS, LR, DECAY = 12, 0.5, 0.8


NML = f"""use std.nn

optimizer sgd_polyak(lr = {LR}, decay = {DECAY}) {{
  state avg = p
  p -= lr * g
  avg = decay * avg + (1 - decay) * p
  p_eval = avg
}}

train {{
  data      = npy("{os.path.join(DATA, 'blobs_x.npy')}", "{os.path.join(DATA, 'blobs_y.npy')}")
  model     = Linear(6, 3)
  loss      = cross_entropy(model(x), y)
  optimizer = sgd_polyak()
  batch     = 128
  epochs    = {STEPS}
}}
"""

x_all = np.load(os.path.join(DATA, "blobs_x.npy")).astype(np.float32)
y_all = np.load(os.path.join(DATA, "blobs_y.npy")).astype(np.int64)
cut = len(x_all) - round(0.1 * len(x_all))
x, y = torch.tensor(x_all[:cut]), torch.tensor(y_all[:cut])
xt, yt = torch.tensor(x_all[cut:]), torch.tensor(y_all[cut:])
rng = np.random.default_rng(3)
init = {"w": rng.uniform(-1, 1, (6, 3)).astype(np.float32), "b": rng.uniform(-1, 1, 3).astype(np.float32)}

w = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
avg = {k: v.detach().clone() for k, v in w.items()}
opt = torch.optim.SGD(list(w.values()), lr=LR)
test_losses = []
for _ in range(STEPS):
    opt.zero_grad()
    F.cross_entropy(x @ w["w"] + w["b"], y).backward()
    opt.step()
    with torch.no_grad():
        for k in w:
            avg[k] = DECAY * avg[k] + (1 - DECAY) * w[k]
        test_losses.append(F.cross_entropy(xt @ avg["w"] + avg["b"], yt).item())
with torch.no_grad():
    at_init = F.cross_entropy(xt @ torch.tensor(init["w"]) + torch.tensor(init["b"]), yt).item()
    at_last = F.cross_entropy(xt @ w["w"] + w["b"], yt).item()

with tempfile.TemporaryDirectory() as tmp:
    src, ini = os.path.join(tmp, "ema.nml"), os.path.join(tmp, "init.safetensors")
    out, log = os.path.join(tmp, "out.safetensors"), os.path.join(tmp, "log.jsonl")
    with open(src, "w") as f:
        f.write(NML)
    save(ini, init)
    r = subprocess.run([nmlc, "run", src, "--init", ini, "--save", out, "--log", log], capture_output=True, text=True)
    if check("nmlc run", r.returncode == 0, r.stderr):
        with open(log) as f:
            got = [json.loads(l)["test_loss"] for l in f]
        check("every epoch is evaluated at the average", np.allclose(got, test_losses, rtol=1e-4, atol=2e-5),
              f"{got} vs {test_losses}")
        check("the average is not the last weights (the test can tell them apart)",
              abs(test_losses[-1] - at_last) > 1e-3, f"{test_losses[-1]} vs {at_last}")
        ck = load(out)
        check("the checkpoint holds the evaluation weights", "w.eval" in ck and "b.eval" in ck
              and np.allclose(ck["w.eval"], avg["w"].numpy(), rtol=1e-4, atol=2e-5), str(sorted(ck)))
    r = subprocess.run([nmlc, "run", src, "--init", ini, "--epochs", "0"], capture_output=True, text=True)
    printed = float(r.stdout.split("test_loss")[1].split()[0]) if "test_loss" in r.stdout else None
    check("before any step the weights themselves are evaluated", printed is not None and abs(printed - at_init) < 6e-5,
          f"{printed} vs {at_init}: {r.stdout} {r.stderr}")

finish()
