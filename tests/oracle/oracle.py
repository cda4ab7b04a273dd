#!/usr/bin/python3
"""Oracle: the standard library's optimizers and losses against PyTorch.

Each case trains a small tanh network (tests/data blobs) with nmlc from weights this script writes,
full batch (batch 128 >= the 86 training rows, so shuffling cannot matter), one step per epoch, and
runs the same steps with torch.optim and torch.nn.functional from the same weights on the same
rows (the first n - round(0.1 n); npy() holds out the rest). Every saved parameter must match
torch's, and so must every epoch's train and test loss in the --log file (the loss on the training
rows before the step, on the held-out rows after it). A case with 0 epochs checks the test loss
that `--epochs 0 --init` prints for the initial weights.

Usage: oracle.py NMLC [PREFIX...]   (only the cases whose name starts with a PREFIX)
"""
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError:
    print("numpy or torch is not importable; skipping")
    sys.exit(77)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
STEPS = 10
# f32 on both sides: only summation order and libm differ, by a few ulps per step. After 10 steps
# parameters (|p| < 1) differ by at most 5e-7, losses (~1) by 6e-7: rtol 1e-4 / atol 1e-5 and an
# absolute 5e-6 leave 10x or more of margin. A wrong formula moves them much further: Adam's eps
# 1e-6 instead of 1e-8 already moves parameters by 4e-5, a missing dampening or weight decay by 4e-3
# or more.
RTOL, ATOL = 1e-4, 1e-5
LOSS_TOL = 5e-6
# `--epochs 0` prints 4 decimals: rounding by up to 5e-5, plus the f32 differences.
PRINTED_LOSS_TOL = 6e-5

LOSSES = {
    "ce": ("cross_entropy(model(x), y)", "blobs_y", 3, F.cross_entropy),
    "ce_smooth": ("cross_entropy(model(x), y, smoothing = 0.1)", "blobs_y", 3,
                  lambda o, y: F.cross_entropy(o, y, label_smoothing=0.1)),
    "mse": ("mse(model(x), y)", "reg_t", 2, F.mse_loss),
    "softmax": ("mse(softmax(model(x)), onehot(y, 3))", "blobs_y", 3,
                lambda o, y: F.mse_loss(F.softmax(o, -1), F.one_hot(y, 3).to(o.dtype))),
    "logsumexp": ("mean(logsumexp(model(x)) - sum(log_softmax(model(x)), axis = -1) / 3)", "blobs_y", 3,
                  lambda o, y: (torch.logsumexp(o, -1) - F.log_softmax(o, -1).sum(-1) / 3).mean()),
}

SGD, ADAM = torch.optim.SGD, torch.optim.Adam
# name, loss, NML optimizer, --set, torch optimizer of a parameter list (None: evaluate only)
CASES = [
    ("sgd", "ce", "sgd(lr = 0.1)", [], lambda p: SGD(p, lr=0.1)),
    ("sgd-momentum", "ce", "sgd(lr = 0.1, momentum = 0.9)", [],
     lambda p: SGD(p, lr=0.1, momentum=0.9)),
    ("sgd-dampening", "ce", "sgd(lr = 0.1, momentum = 0.9, dampening = 0.5)", [],
     lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.5)),
    ("sgd-nesterov", "ce", "sgd(lr = 0.1, momentum = 0.9, nesterov = 1)", [],
     lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    ("sgd-weight-decay", "ce", "sgd(lr = 0.1, weight_decay = 0.01)", [],
     lambda p: SGD(p, lr=0.1, weight_decay=0.01)),
    ("sgd-set", "ce", "sgd(lr = 0.1, momentum = 0.9)", ["lr=0.03", "momentum=0.5"],
     lambda p: SGD(p, lr=0.03, momentum=0.5)),
    ("adam", "ce", "adam()", [], lambda p: ADAM(p)),
    ("adam-betas", "ce", "adam(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-6)", [],
     lambda p: ADAM(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    ("adam-weight-decay", "ce", "adam(weight_decay = 0.01)", [],
     lambda p: ADAM(p, weight_decay=0.01)),
    ("adam-set", "ce", "adam()", ["lr=0.05"], lambda p: ADAM(p, lr=0.05)),
    ("sched-linear-decay", "ce", "sgd(lr = 0.1 * linear_decay(t, T), momentum = 0.9)", [],
     lambda p: lambda_lr(SGD(p, lr=0.1, momentum=0.9), lambda e: 1 - e / STEPS)),
    ("sched-warmup", "ce", "adam(lr = 0.01 * warmup(t, 4))", [],
     lambda p: lambda_lr(ADAM(p, lr=0.01), lambda e: min((e + 1) / 4, 1))),
    ("clip-adam", "ce", "adam_clip(lr = 1e-2, max_norm = 0.2)", [],
     lambda p: Clipped(ADAM(p, lr=1e-2), p, 0.2)),
    ("clip-sgd-sum", "ce", "sgd_clip(lr = 0.1, max_norm = 0.3)", [],
     lambda p: Clipped(SGD(p, lr=0.1, momentum=0.9), p, 0.3)),
    ("chain-clip-adam", "ce", "chain(clip_global_norm(max_norm = 0.2), adam(lr = 1e-2))", [],
     lambda p: Clipped(ADAM(p, lr=1e-2), p, 0.2)),
    ("chain-clip-value-sgd", "ce", "chain(clip_value(clip = 0.02), sgd(lr = 0.1, momentum = 0.9))", [],
     lambda p: Clipped(SGD(p, lr=0.1, momentum=0.9), p, 0.02, value=True)),
    ("chain-set", "ce", "chain(clip_global_norm(), adam(lr = 1e-2))", ["max_norm=0.2"],
     lambda p: Clipped(ADAM(p, lr=1e-2), p, 0.2)),
    ("chain-centralize", "ce", "chain(centralize(), sgd(lr = 0.1, momentum = 0.9))", [],
     lambda p: Centralized(SGD(p, lr=0.1, momentum=0.9), p)),
    ("groups-adamw-no-decay", "ce", "adamw_groups(lr = 1e-2, weight_decay = 0.1)", [],
     lambda p: torch.optim.AdamW([{"params": [p[0], p[2]]}, {"params": [p[1], p[3]], "weight_decay": 0}],
                                 lr=1e-2, weight_decay=0.1)),
    ("loss-ce-smooth", "ce_smooth", "sgd(lr = 0.1, momentum = 0.9)", [],
     lambda p: SGD(p, lr=0.1, momentum=0.9)),
    ("loss-mse", "mse", "adam(lr = 1e-2)", [], lambda p: ADAM(p, lr=1e-2)),
    ("loss-softmax", "softmax", "adam(lr = 1e-2)", [], lambda p: ADAM(p, lr=1e-2)),
    ("loss-logsumexp", "logsumexp", "sgd(lr = 0.1)", [], lambda p: SGD(p, lr=0.1)),
    ("loss-eval-ce", "ce", "sgd()", [], None),
    ("loss-eval-ce-smooth", "ce_smooth", "sgd()", [], None),
    ("loss-eval-mse", "mse", "sgd()", [], None),
]

def lambda_lr(opt, factor):
    """The optimizer with torch's LambdaLR scaling its learning rate by factor(steps so far)."""
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Clipped:
    """torch's gradient clipping (by global norm, or by value) before the optimizer's step."""

    def __init__(self, opt, params, max_norm, value=False):
        self.opt, self.params, self.max_norm, self.value = opt, params, max_norm, value

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        if self.value:
            torch.nn.utils.clip_grad_value_(self.params, self.max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        self.opt.step()


class Centralized(Clipped):
    """Gradient centralization (Yong et al. 2020) before the step: the mean over the input axis
    (axis 0 of our [in, out] weights) is taken out of every weight's gradient."""

    def __init__(self, opt, params):
        super().__init__(opt, params, 0)

    def step(self):
        with torch.no_grad():
            for p in self.params:
                if p.dim() >= 2:
                    p.grad -= p.grad.mean(dim=0, keepdim=True)
        self.opt.step()


# Update rules with a global reduction (a barrier over all parameters), defined in the test file:
# clipping by the global gradient norm, once through global_norm and once through global_sum.
RULES = """
optimizer adam_clip(lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, max_norm = 1) {
  state m = 0
  state v = 0
  g = g * min(1, max_norm / (global_norm(g) + 1e-6))
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g^2
  p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
}

# Parameter groups by tag: AdamW without decay on the parameters tagged @no_decay (Linear's biases),
# as torch's AdamW with a second parameter group whose weight_decay is 0.
optimizer adamw_groups(lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, weight_decay = 0.01) {
  state m = 0
  state v = 0
  p *= 1 - lr * where(has_tag("no_decay"), 0, weight_decay)
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g^2
  p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
}

optimizer sgd_clip(lr = 0.1, momentum = 0.9, max_norm = 1) {
  state buf = 0
  g = g * min(1, max_norm / (sqrt(global_sum(g^2)) + 1e-6))
  buf = where(t == 1, g, momentum * buf + g)
  p -= lr * buf
}
"""

NML = """use std.nn
use std.optim
use std.sched

layer Net(d, h, k) {{
  l1 = Linear(d, h)
  l2 = Linear(h, k)
  forward(x) = l2(tanh(l1(x)))
}}

train {{
  data      = npy("{x}", "{y}")
  model     = Net(6, 8, {k})
  loss      = {loss}
  optimizer = {opt}
  batch     = 128
}}
"""


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, np.float32).tobytes())


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    return {name: np.frombuffer(data[slice(*m["data_offsets"])], "<f4").reshape(m["shape"])
            for name, m in header.items() if name != "__metadata__"}


def forward(p, x):
    return torch.tanh(x @ p["l1.w"] + p["l1.b"]) @ p["l2.w"] + p["l2.b"]


def torch_run(init, x, y, loss_fn, make_opt, epochs):
    """Parameters after `epochs` full-batch steps, the (train, test) losses of every epoch and the
    final test loss."""
    n_test = int(np.floor(0.1 * len(x) + 0.5))
    xtr, ytr, xte, yte = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}

    def test_loss():
        with torch.no_grad():
            return loss_fn(forward(p, xte), yte).item()

    made = make_opt(list(p.values())) if epochs else None
    opt, sched = made if isinstance(made, tuple) else (made, None)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(forward(p, xtr), ytr)
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        losses.append((loss.item(), test_loss()))
    return {k: v.detach().numpy() for k, v in p.items()}, losses, test_loss()


def run_case(nmlc, tmp, case):
    name, loss, opt, sets, make_opt = case
    epochs = STEPS if make_opt else 0
    loss_src, yfile, k, loss_fn = LOSSES[loss]
    xpath, ypath = (os.path.abspath(os.path.join(DATA, f + ".npy")) for f in ("blobs_x", yfile))
    src = os.path.join(tmp, name + ".nml")
    with open(src, "w") as f:
        f.write(NML.format(x=xpath, y=ypath, k=k, loss=loss_src, opt=opt) + RULES)

    rng = np.random.default_rng(1)
    init = {"l1.w": rng.uniform(-0.4, 0.4, (6, 8)), "l1.b": rng.uniform(-0.4, 0.4, 8),
            "l2.w": rng.uniform(-0.35, 0.35, (8, k)), "l2.b": rng.uniform(-0.35, 0.35, k)}
    init = {n: a.astype(np.float32) for n, a in init.items()}
    init_path, out_path, log_path = (os.path.join(tmp, name + ext)
                                     for ext in (".init.safetensors", ".out.safetensors", ".jsonl"))
    write_safetensors(init_path, init)

    cmd = [nmlc, "run", src, "--threads", "1", "--init", init_path, "--epochs", str(epochs)]
    cmd += [a for s in sets for a in ("--set", s)]
    if epochs:
        cmd += ["--save", out_path, "--log", log_path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"nmlc exited {r.returncode}: {r.stderr.strip()}"

    x, y = np.load(xpath), np.load(ypath)
    want, want_losses, want_test = torch_run(init, torch.from_numpy(x), torch.from_numpy(y),
                                             loss_fn, make_opt, epochs)
    return compare(r, epochs, log_path, out_path, want, want_losses, want_test)


def compare(r, epochs, log_path, out_path, want, want_losses, want_test):
    """nmlc's logged (or, with 0 epochs, printed) losses and saved parameters against the
    reference's: (ok, detail)."""
    if epochs:
        with open(log_path) as f:
            got_losses = [(e["train_loss"], e["test_loss"]) for e in map(json.loads, f)]
        tol = LOSS_TOL
    else:
        got_losses = [(float(m),) for m in re.findall(r"^test_loss (\S+)", r.stdout, re.M)]
        want_losses, tol = [(want_test,)], PRINTED_LOSS_TOL
    if len(got_losses) != len(want_losses):
        return False, f"expected {len(want_losses)} epochs of losses, got:\n{r.stdout}"
    loss_diff = float(np.max(np.abs(np.array(got_losses, float) - np.array(want_losses))))
    ok = loss_diff <= tol
    detail = f"loss max diff {loss_diff:.1e} (tol {tol:.0e})"
    if epochs:
        got = read_safetensors(out_path)
        if not set(want) <= set(got):  # the checkpoint also holds the optimizer state (l1.w.m ...)
            return False, f"saved tensors {sorted(got)}, expected {sorted(want)} among them"
        abs_diff = max(float(np.max(np.abs(got[n] - want[n]))) for n in want)
        rel_diff = max(float(np.max(np.abs(got[n] - want[n]) / np.abs(want[n]))) for n in want)
        ok &= all(np.allclose(got[n], want[n], rtol=RTOL, atol=ATOL) for n in want)
        detail = (f"params max abs {abs_diff:.1e} rel {rel_diff:.1e} "
                  f"(rtol {RTOL:.0e} atol {ATOL:.0e}), " + detail)
    return ok, detail


def run_cases(cases, run):
    """The driver of every oracle script: argv is NMLC [PREFIX...]; runs the cases whose name
    (first element) starts with a PREFIX through run(nmlc, tmp, case) -> (ok, detail)."""
    nmlc, prefixes = os.path.abspath(sys.argv[1]), sys.argv[2:]
    torch.set_num_threads(1)
    cases = [c for c in cases if not prefixes or c[0].startswith(tuple(prefixes))]
    width = max((len(c[0]) for c in cases), default=0) + 1
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            ok, detail = run(nmlc, tmp, case)
            print(f"{'PASS' if ok else 'FAIL'} {case[0]:<{width}} {detail}")
            passed += ok
            failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not cases else 0


if __name__ == "__main__":
    sys.exit(run_cases(CASES, run_case))
