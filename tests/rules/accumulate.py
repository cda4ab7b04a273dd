#!/usr/bin/python3
"""Gradient accumulation (`accumulate = k` in the train block) against the usual PyTorch loop:
each batch's mean loss divided by k is back-propagated into .grad, and every k-th batch (counted
across epochs) the optimizer steps and the gradients are zeroed; schedules count updates (t from
1 at the first update, T = floor(steps / k)).

Batches of 8 rows in nmlc run's order (order.c prints nml_epoch_order) over 4 epochs of 5 steps,
k = 3, so accumulations straddle epoch boundaries; SGD with momentum, and Adam with a linearly
decaying lr. Parameters after the run and per-epoch training losses must match within f32
tolerances (rtol 1e-4, atol 2e-5); a run with k = 1 must differ from k = 3 (the setting is live),
and a checkpoint saved mid-accumulation must resume to the same parameters as the full run.
Then accumulation inside a chain: SAM's m-sharpness, chain(sam, accumulate(3), sgd) with batch 8,
against a reference that perturbs each batch by its own gradient and averages 3 batches' perturbed
gradients per update.

Usage: accumulate.py NMLC ORDER_EXE
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
BATCH, EPOCHS, SEED, K = 8, 4, 3, 3


NML = """use std.nn
use std.optim
use std.sched

layer Net(d, h, k) {{
  l1 = Linear(d, h)
  l2 = Linear(h, k)
  forward(x) = l2(tanh(l1(x)))
}}

train {{
  data       = npy("{x}", "{y}")
  model      = Net(6, 8, 3)
  loss       = cross_entropy(model(x), y)
  optimizer  = {opt}
  batch      = {batch}
  epochs     = {epochs}
  seed       = {seed}
  accumulate = {k}
}}
"""

x_np, y_np, n_train = blobs()
x, y = torch.tensor(x_np), torch.tensor(y_np)

rng = np.random.default_rng(12)
init = {"l1.w": rng.uniform(-0.5, 0.5, (6, 8)), "l1.b": rng.uniform(-0.5, 0.5, 8),
        "l2.w": rng.uniform(-0.5, 0.5, (8, 3)), "l2.b": rng.uniform(-0.5, 0.5, 3)}
orders = batch_orders(order_exe, SEED, EPOCHS, n_train)
steps_per_epoch = (n_train + BATCH - 1) // BATCH
T = EPOCHS * steps_per_epoch // K


def reference(make_opt, lr_at):
    p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in init.items()}
    opt = make_opt(list(p.values()))
    losses, step, updates = [], 0, 0
    for order in orders:
        total = 0.0
        for s in range(0, n_train, BATCH):
            idx = order[s:s + BATCH]
            h = torch.tanh(x[idx] @ p["l1.w"] + p["l1.b"])
            loss = F.cross_entropy(h @ p["l2.w"] + p["l2.b"], y[idx])
            (loss / K).backward()
            total += loss.item() * len(idx)
            step += 1
            if step % K == 0:
                updates += 1
                for group in opt.param_groups:
                    group["lr"] = lr_at(updates)
                opt.step()
                opt.zero_grad()
        losses.append(total / n_train)
    return {k: v.detach().numpy() for k, v in p.items()}, losses


CASES = [
    ("sgd-momentum", "sgd(lr = 0.1, momentum = 0.9)", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
     lambda u: 0.1),
    ("adam-decay", "adam(lr = 1e-2 * linear_decay(t, T))", lambda ps: torch.optim.Adam(ps, lr=1e-2),
     lambda u: 1e-2 * (1 - (u - 1) / T)),
]


def run(tmp, name, opt, k, epochs=EPOCHS, extra=()):
    src = os.path.join(tmp, f"{name}-{k}.nml")
    with open(src, "w") as f:
        f.write(NML.format(x=os.path.join(DATA, "blobs_x.npy"), y=os.path.join(DATA, "blobs_y.npy"), opt=opt,
                           batch=BATCH, epochs=epochs, seed=SEED, k=k))
    out, log = os.path.join(tmp, f"{name}-{k}-{epochs}.safetensors"), os.path.join(tmp, f"{name}-{k}-{epochs}.jsonl")
    r = subprocess.run([nmlc, "run", src, "--save", out, "--log", log, *extra], capture_output=True, text=True)
    return r, out, log


with tempfile.TemporaryDirectory() as tmp:
    init_path = os.path.join(tmp, "init.safetensors")
    write_safetensors(init_path, {k: np.asarray(v, np.float32) for k, v in init.items()})
    for name, opt, make_opt, lr_at in CASES:
        r, out, log = run(tmp, name, opt, K, extra=["--init", init_path])
        if not check(f"{name}: nmlc run", r.returncode == 0, r.stderr):
            continue
        got = load(out)
        want, losses = reference(make_opt, lr_at)
        worst = max(float(np.max(np.abs(got[k] - want[k]) / (2e-5 + 1e-4 * np.abs(want[k])))) for k in want)
        check(f"{name}: parameters equal the accumulating reference", worst <= 1, f"(worst {worst:.2f} of tolerance)")
        with open(log) as f:
            nml_losses = [json.loads(line)["train_loss"] for line in f]
        check(f"{name}: epoch losses equal", np.allclose(nml_losses, losses, rtol=1e-4, atol=2e-5),
              f"{nml_losses} vs {losses}")
        r1, out1, _ = run(tmp, name, opt, 1, extra=["--init", init_path])
        moved = max(float(np.max(np.abs(load(out1)[k] - got[k]))) for k in init) if r1.returncode == 0 else 0
        check(f"{name}: accumulate = 1 trains differently", moved > 1e-3, f"(differs by {moved:.1e})")
        print(f"{name}: largest difference {max(float(np.max(np.abs(got[k] - want[k]))) for k in want):.1e}")

    # Resume mid-accumulation: 5 steps per epoch and k = 3, so after epoch 1 two gradients are summed.
    name, opt = CASES[0][0], CASES[0][1]  # no schedule: T depends on --epochs
    r, first, _ = run(tmp, "resume", opt, K, epochs=1, extra=["--init", init_path])
    if check("resume: first epoch", r.returncode == 0, r.stderr):
        src = os.path.join(tmp, f"resume-{K}.nml")
        rest = os.path.join(tmp, "rest.safetensors")
        r = subprocess.run([nmlc, "run", src, "--resume", first, "--epochs", str(EPOCHS), "--save", rest],
                           capture_output=True, text=True)
        if check("resume: the other epochs", r.returncode == 0, r.stderr):
            a, b = load(rest), load(os.path.join(tmp, f"{name}-{K}-{EPOCHS}.safetensors"))
            same = all(np.array_equal(a[k], b[k]) for k in b if not k.endswith(".eval"))
            check("resume: bit-exact with the uninterrupted run", same)

# m-sharpness: chain(sam, accumulate(K), sgd) with batch 8: each batch of 8 rows gets its own
# perturbation from its own gradient, and the update averages K batches' perturbed gradients.
SAM_NML = NML.replace("use std.sched\n", """use std.sched

transform sam_here(rho = 0.05) {{
  e = rho * g / (global_norm(g) + 1e-12)
  g = grad_at(p + e)
}}
""")


def msharp_reference(rho=0.05):
    p = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in init.items()}
    opt = torch.optim.SGD(list(p.values()), lr=0.1, momentum=0.9)
    acc = {k: torch.zeros_like(v) for k, v in p.items()}

    def grads(idx):
        h = torch.tanh(x[idx] @ p["l1.w"] + p["l1.b"])
        loss = F.cross_entropy(h @ p["l2.w"] + p["l2.b"], y[idx])
        return loss, torch.autograd.grad(loss, list(p.values()))

    step, losses = 0, []
    for order in orders:
        total = 0.0
        for s in range(0, n_train, BATCH):
            idx = order[s:s + BATCH]
            loss, g = grads(idx)
            total += loss.item() * len(idx)
            with torch.no_grad():
                norm = torch.sqrt(sum((q ** 2).sum() for q in g))
                e = [rho * q / (norm + 1e-12) for q in g]
                for q, d in zip(p.values(), e):
                    q.add_(d)
            _, g2 = grads(idx)
            with torch.no_grad():
                for q, d in zip(p.values(), e):
                    q.sub_(d)
                for k, q in zip(p, g2):
                    acc[k] += q
            step += 1
            if step % K == 0:
                for k, q in p.items():
                    q.grad = acc[k] / K
                opt.step()
                acc = {k: torch.zeros_like(v) for k, v in p.items()}
        losses.append(total / n_train)
    return {k: v.detach().numpy() for k, v in p.items()}, losses


with tempfile.TemporaryDirectory() as tmp:
    init_path = os.path.join(tmp, "init.safetensors")
    write_safetensors(init_path, {k: np.asarray(v, np.float32) for k, v in init.items()})
    src = os.path.join(tmp, "msharp.nml")
    with open(src, "w") as f:
        f.write(SAM_NML.format(x=os.path.join(DATA, "blobs_x.npy"), y=os.path.join(DATA, "blobs_y.npy"),
                               opt=f"chain(sam_here(rho = 0.05), accumulate({K}), sgd(lr = 0.1, momentum = 0.9))",
                               batch=BATCH, epochs=EPOCHS, seed=SEED, k=1))
    out, log = os.path.join(tmp, "msharp.safetensors"), os.path.join(tmp, "msharp.jsonl")
    r = subprocess.run([nmlc, "run", src, "--init", init_path, "--save", out, "--log", log],
                       capture_output=True, text=True)
    if check("m-sharpness: nmlc run", r.returncode == 0, r.stderr):
        got = load(out)
        want, losses = msharp_reference()
        worst = max(float(np.max(np.abs(got[k] - want[k]) / (2e-5 + 1e-4 * np.abs(want[k])))) for k in want)
        check("m-sharpness: parameters equal the per-batch-perturbation reference", worst <= 1,
              f"(worst {worst:.2f} of tolerance)")
        with open(log) as f:
            nml_losses = [json.loads(line)["train_loss"] for line in f]
        check("m-sharpness: epoch losses equal", np.allclose(nml_losses, losses, rtol=1e-4, atol=2e-5),
              f"{nml_losses} vs {losses}")
        print(f"m-sharpness: largest difference {max(float(np.max(np.abs(got[k] - want[k]))) for k in want):.1e}")

finish()
