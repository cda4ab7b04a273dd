#!/usr/bin/python3
"""grad_at: mini-batch SAM (Foret et al. 2021) written as an NML transform, chained with SGD and with
Adam, against a two-pass reference in PyTorch on the same batches.

The transform perturbs every parameter by e = rho g / ||g|| (the norm over all parameters), takes
the loss gradient of the same batch at w + e, and hands it to the base rule, which updates w. The
reference does exactly that with two backward passes per step. Batches of 16 rows in nmlc run's
order (order.c prints nml_epoch_order), 3 epochs of 6 steps each; parameters and per-epoch losses
must match within f32 tolerances (rtol 1e-4, atol 2e-5: both sides are f32; measured differences
are below 1e-6).

Usage: sam.py NMLC ORDER_EXE
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DATA, blobs, check, finish, load, np, orders as batch_orders, save, torch, write_safetensors  # noqa: E402,F401
import torch.nn.functional as F  # noqa: E402

nmlc, order_exe = sys.argv[1], sys.argv[2]
BATCH, EPOCHS, SEED, RHO = 16, 3, 5, 0.05


NML = """use std.nn
use std.optim

transform sam_here(rho = 0.05) {{
  e = rho * g / (global_norm(g) + 1e-12)
  g = grad_at(p + e)
}}

layer Net(d, h, k) {{
  l1 = Linear(d, h)
  l2 = Linear(h, k)
  forward(x) = l2(tanh(l1(x)))
}}

train {{
  data      = npy("{x}", "{y}")
  model     = Net(6, 8, 3)
  loss      = cross_entropy(model(x), y)
  optimizer = chain(sam_here(rho = {rho}), {base})
  batch     = {batch}
  epochs    = {epochs}
  seed      = {seed}
}}
"""

x_np, y_np, n_train = blobs()
x, y = torch.tensor(x_np), torch.tensor(y_np)

rng = np.random.default_rng(11)
init = {"l1.w": rng.uniform(-0.5, 0.5, (6, 8)), "l1.b": rng.uniform(-0.5, 0.5, 8),
        "l2.w": rng.uniform(-0.5, 0.5, (8, 3)), "l2.b": rng.uniform(-0.5, 0.5, 3)}
orders = batch_orders(order_exe, SEED, EPOCHS, n_train)


def reference(make_opt):
    p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in init.items()}
    opt = make_opt(list(p.values()))

    def loss_of(idx):
        h = torch.tanh(x[idx] @ p["l1.w"] + p["l1.b"])
        return F.cross_entropy(h @ p["l2.w"] + p["l2.b"], y[idx])

    losses = []
    for order in orders:
        total = 0.0
        for s in range(0, n_train, BATCH):
            idx = order[s:s + BATCH]
            opt.zero_grad()
            loss = loss_of(idx)
            loss.backward()
            total += loss.item() * len(idx)
            with torch.no_grad():  # first pass: the ascent direction
                norm = torch.sqrt(sum((q.grad ** 2).sum() for q in p.values()))
                e = {k: RHO * q.grad / (norm + 1e-12) for k, q in p.items()}
                for k, q in p.items():
                    q.add_(e[k])
            opt.zero_grad()
            loss_of(idx).backward()  # second pass, same batch, at w + e
            with torch.no_grad():
                for k, q in p.items():
                    q.sub_(e[k])
            opt.step()
        losses.append(total / n_train)
    return {k: v.detach().numpy() for k, v in p.items()}, losses


CASES = [
    ("sgd", "sgd(lr = 0.1)", lambda ps: torch.optim.SGD(ps, lr=0.1)),
    ("sgd-momentum", "sgd(lr = 0.1, momentum = 0.9)", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    ("adam", "adam(lr = 1e-2)", lambda ps: torch.optim.Adam(ps, lr=1e-2)),
]

with tempfile.TemporaryDirectory() as tmp:
    save(os.path.join(tmp, "init.safetensors"), init)
    for name, base, make_opt in CASES:
        src = os.path.join(tmp, f"{name}.nml")
        with open(src, "w") as f:
            f.write(NML.format(x=os.path.join(DATA, "blobs_x.npy"), y=os.path.join(DATA, "blobs_y.npy"), rho=RHO,
                               base=base, batch=BATCH, epochs=EPOCHS, seed=SEED))
        out, log = os.path.join(tmp, f"{name}.safetensors"), os.path.join(tmp, f"{name}.jsonl")
        r = subprocess.run([nmlc, "run", src, "--init", os.path.join(tmp, "init.safetensors"), "--save", out,
                            "--log", log], capture_output=True, text=True)
        if not check(f"{name}: nmlc run", r.returncode == 0, r.stderr):
            continue
        got = load(out)
        want, losses = reference(make_opt)
        worst = max(float(np.max(np.abs(got[k] - want[k]) / (2e-5 + 1e-4 * np.abs(want[k])))) for k in want)
        check(f"{name}: parameters equal the two-pass reference", worst <= 1, f"(worst {worst:.2f} of tolerance)")
        with open(log) as f:
            nml_losses = [json.loads(l)["train_loss"] for l in f]
        check(f"{name}: epoch losses equal", np.allclose(nml_losses, losses, rtol=1e-4, atol=2e-5),
              f"{nml_losses} vs {losses}")
        print(f"{name}: largest difference {max(float(np.max(np.abs(got[k] - want[k]))) for k in want):.1e}")

finish()
