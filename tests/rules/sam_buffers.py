#!/usr/bin/python3
"""grad_at's update_buffers: mini-batch SAM on a network with BatchNorm1d, against a two-pass
PyTorch reference, where the running statistics come from the first (plain) pass by default and
from the second (perturbed) pass with update_buffers = 1.

The reference runs BatchNorm in training mode in both passes and restores the running statistics
the pass must not leave (after the second pass by default; after the first with
update_buffers = 1). Batches of 16 rows in nmlc run's order (order.c), 3 epochs; parameters,
running statistics and per-epoch losses must match within f32 tolerances (rtol 1e-4, atol 2e-5),
and the two settings must give different running statistics.

Usage: sam_buffers.py NMLC ORDER_EXE
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
  g = grad_at(p + e, update_buffers = {ub})
}}

layer Net(d, h, k) {{
  l1 = Linear(d, h)
  bn = BatchNorm1d(h, momentum = 0.2)
  l2 = Linear(h, k)
  forward(x) = l2(tanh(bn(l1(x))))
}}

train {{
  data      = npy("{x}", "{y}")
  model     = Net(6, 8, 3)
  loss      = cross_entropy(model(x), y)
  optimizer = chain(sam_here(rho = {rho}), sgd(lr = 0.1, momentum = 0.9))
  batch     = {batch}
  epochs    = {epochs}
  seed      = {seed}
}}
"""

x_np, y_np, n_train = blobs()
x, y = torch.tensor(x_np), torch.tensor(y_np)

rng = np.random.default_rng(13)
init = {"l1.w": rng.uniform(-0.5, 0.5, (6, 8)), "l1.b": rng.uniform(-0.5, 0.5, 8),
        "bn.weight": rng.uniform(0.5, 1.5, 8), "bn.bias": rng.uniform(-0.5, 0.5, 8),
        "l2.w": rng.uniform(-0.5, 0.5, (8, 3)), "l2.b": rng.uniform(-0.5, 0.5, 3)}
orders = batch_orders(order_exe, SEED, EPOCHS, n_train)


def reference(update_buffers):
    p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in init.items()}
    rm, rv = torch.zeros(8), torch.ones(8)
    opt = torch.optim.SGD(list(p.values()), lr=0.1, momentum=0.9)

    def loss_of(idx):
        h = F.batch_norm(x[idx] @ p["l1.w"] + p["l1.b"], rm, rv, p["bn.weight"], p["bn.bias"], True, 0.2, 1e-5)
        return F.cross_entropy(torch.tanh(h) @ p["l2.w"] + p["l2.b"], y[idx])

    losses = []
    for order in orders:
        total = 0.0
        for s in range(0, n_train, BATCH):
            idx = order[s:s + BATCH]
            before = (rm.clone(), rv.clone())
            opt.zero_grad()
            loss = loss_of(idx)
            loss.backward()
            total += loss.item() * len(idx)
            after_first = (rm.clone(), rv.clone())
            if update_buffers:  # only the second pass may move them
                rm.copy_(before[0])
                rv.copy_(before[1])
            with torch.no_grad():
                norm = torch.sqrt(sum((q.grad ** 2).sum() for q in p.values()))
                e = {k: RHO * q.grad / (norm + 1e-12) for k, q in p.items()}
                for k, q in p.items():
                    q.add_(e[k])
            opt.zero_grad()
            loss_of(idx).backward()
            if not update_buffers:  # the first pass's statistics stand
                rm.copy_(after_first[0])
                rv.copy_(after_first[1])
            with torch.no_grad():
                for k, q in p.items():
                    q.sub_(e[k])
            opt.step()
        losses.append(total / n_train)
    out = {k: v.detach().numpy() for k, v in p.items()}
    out["bn.running_mean"], out["bn.running_var"] = rm.numpy(), rv.numpy()
    return out, losses


stats = {}
with tempfile.TemporaryDirectory() as tmp:
    write_safetensors(os.path.join(tmp, "init.safetensors"), {k: np.asarray(v, np.float32) for k, v in init.items()})
    for ub in (0, 1):
        name = f"update_buffers={ub}"
        src = os.path.join(tmp, f"sam{ub}.nml")
        with open(src, "w") as f:
            f.write(NML.format(x=os.path.join(DATA, "blobs_x.npy"), y=os.path.join(DATA, "blobs_y.npy"), rho=RHO,
                               ub=ub, batch=BATCH, epochs=EPOCHS, seed=SEED))
        out, log = os.path.join(tmp, f"sam{ub}.safetensors"), os.path.join(tmp, f"sam{ub}.jsonl")
        r = subprocess.run([nmlc, "run", src, "--init", os.path.join(tmp, "init.safetensors"), "--save", out,
                            "--log", log], capture_output=True, text=True)
        if not check(f"{name}: nmlc run", r.returncode == 0, r.stderr):
            continue
        got = load(out)
        want, losses = reference(ub)
        worst = max(float(np.max(np.abs(got[k] - want[k]) / (2e-5 + 1e-4 * np.abs(want[k])))) for k in want)
        check(f"{name}: parameters and running statistics equal the reference", worst <= 1,
              f"(worst {worst:.2f} of tolerance)")
        with open(log) as f:
            nml_losses = [json.loads(line)["train_loss"] for line in f]
        check(f"{name}: epoch losses equal", np.allclose(nml_losses, losses, rtol=1e-4, atol=2e-5),
              f"{nml_losses} vs {losses}")
        stats[ub] = got["bn.running_mean"]
        print(f"{name}: largest difference {max(float(np.max(np.abs(got[k] - want[k]))) for k in want):.1e}")
    if len(stats) == 2:
        d = float(np.max(np.abs(stats[0] - stats[1])))
        check("the two settings keep different running statistics", d > 1e-4, f"(differ by {d:.1e})")

finish()
