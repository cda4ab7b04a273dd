#!/usr/bin/python3
"""Oracle: std.loss and std.nn's activations against PyTorch.

As oracle.py (whose helpers and tolerances this uses): a small network, Linear(6, 8), an
activation, Linear(8, k), is trained by nmlc from weights this script writes, full batch, for 10
steps, and by torch.optim from the same weights on the same rows; every saved parameter and every
epoch's train and test loss in the --log file must match. A case with 0 epochs checks the test loss
that `--epochs 0 --init` prints. Loss cases use tanh as the activation; activation cases use
cross-entropy. Cases whose loss reads `model.t(x)` have a second Linear(6, k), the teacher.

The torch side is torch.nn.functional where it has the function, else an independent
transcription of the formula (focal losses; z-loss; norm loss on torch's [out, in] layout).

Usage: functions.py NMLC [PREFIX...]   (only the cases whose name starts with a PREFIX)
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # exits 77 (skip) when numpy or torch is missing
from oracle import DATA, STEPS, ATOL

import numpy as np
import torch
import torch.nn.functional as F


def onehot(y, k):
    return F.one_hot(y, k).to(torch.float32)


def kd(s, t, T):
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T


def focal(o, y, gamma=2.0, alpha=1.0):
    logp = F.log_softmax(o, -1).gather(1, y[:, None]).squeeze(1)
    return (-alpha * (1 - logp.exp()) ** gamma * logp).mean()


def sigmoid_focal(o, t, gamma=2.0, alpha=0.25):
    """torchvision.ops.sigmoid_focal_loss(reduction='mean'), transcribed."""
    p = torch.sigmoid(o)
    ce = F.binary_cross_entropy_with_logits(o, t, reduction="none")
    pt = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - pt) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean()


def z(o, weight):
    """PaLM's z-loss: weight * mean(log(Z)^2)."""
    return weight * (torch.logsumexp(o, -1) ** 2).mean()


def norm_loss(w_out_in):
    """Georgiou et al.: sum over the rows w_i of torch's [out, in] weight of (1 - |w_i|)^2."""
    return ((1 - w_out_in.norm(dim=1)) ** 2).sum()


def teacher(p, x):
    return x @ p["t.w"] + p["t.b"]


# name: NML loss, y file, outputs, torch loss of (output, y, parameters, x)
LOSSES = {
    "l1": ("l1(model(x), y)", "reg_t", 2, lambda o, y, p, x: F.l1_loss(o, y)),
    "huber": ("huber(model(x), y)", "reg_t", 2, lambda o, y, p, x: F.huber_loss(o, y)),
    "huber-delta": ("huber(model(x), y, delta = 0.3)", "reg_t", 2,
                    lambda o, y, p, x: F.huber_loss(o, y, delta=0.3)),
    "smooth-l1": ("smooth_l1(model(x), y)", "reg_t", 2,
                  lambda o, y, p, x: F.smooth_l1_loss(o, y)),
    "smooth-l1-beta": ("smooth_l1(model(x), y, beta = 0.3)", "reg_t", 2,
                       lambda o, y, p, x: F.smooth_l1_loss(o, y, beta=0.3)),
    "smooth-l1-beta0": ("smooth_l1(model(x), y, beta = 0)", "reg_t", 2,
                        lambda o, y, p, x: F.smooth_l1_loss(o, y, beta=0.0)),
    "bce": ("bce_with_logits(model(x), onehot(y, 3))", "blobs_y", 3,
            lambda o, y, p, x: F.binary_cross_entropy_with_logits(o, onehot(y, 3))),
    "bce-soft": ("bce_with_logits(model(x), sigmoid(3 * y))", "reg_t", 2,
                 lambda o, y, p, x: F.binary_cross_entropy_with_logits(o, torch.sigmoid(3 * y))),
    "kd": ("kd_loss(model(x), model.t(x))", "blobs_y", 3,
           lambda o, y, p, x: kd(o, teacher(p, x), 1.0)),
    "kd-frozen": ("kd_loss(model(x), stop_gradient(model.t(x)), T = 4)", "blobs_y", 3,
                  lambda o, y, p, x: kd(o, teacher(p, x).detach(), 4.0)),
    "kd-ce": ("0.5 * cross_entropy(model(x), y) + 0.5 * kd_loss(model(x), "
              "stop_gradient(model.t(x)), T = 2)", "blobs_y", 3,
              lambda o, y, p, x: 0.5 * F.cross_entropy(o, y)
              + 0.5 * kd(o, teacher(p, x).detach(), 2.0)),
    "margin": ("multi_margin(model(x), y)", "blobs_y", 3,
               lambda o, y, p, x: F.multi_margin_loss(o, y)),
    "margin-p2": ("multi_margin(model(x), y, margin = 0.5, p = 2)", "blobs_y", 3,
                  lambda o, y, p, x: F.multi_margin_loss(o, y, p=2, margin=0.5)),
    "focal": ("focal_loss(model(x), y)", "blobs_y", 3, lambda o, y, p, x: focal(o, y)),
    "focal-alpha": ("focal_loss(model(x), y, gamma = 0.5, alpha = 0.25)", "blobs_y", 3,
                    lambda o, y, p, x: focal(o, y, 0.5, 0.25)),
    "focal-gamma0": ("focal_loss(model(x), y, gamma = 0)", "blobs_y", 3,
                     lambda o, y, p, x: F.cross_entropy(o, y)),
    "sigmoid-focal": ("sigmoid_focal_loss(model(x), onehot(y, 3))", "blobs_y", 3,
                      lambda o, y, p, x: sigmoid_focal(o, onehot(y, 3))),
    "sigmoid-focal-soft": ("sigmoid_focal_loss(model(x), sigmoid(3 * y), gamma = 1.5, alpha = -1)",
                           "reg_t", 2,
                           lambda o, y, p, x: sigmoid_focal(o, torch.sigmoid(3 * y), 1.5, -1)),
    "z": ("cross_entropy(model(x), y) + z_loss(model(x), weight = 0.1)", "blobs_y", 3,
          lambda o, y, p, x: F.cross_entropy(o, y) + z(o, 0.1)),
    "z-default": ("cross_entropy(model(x), y) + z_loss(model(x))", "blobs_y", 3,
                  lambda o, y, p, x: F.cross_entropy(o, y) + z(o, 1e-4)),
    "norm": ("cross_entropy(model(x), y) + 0.05 * (norm_loss(model.l1.w) + norm_loss(model.l2.w))",
             "blobs_y", 3,
             lambda o, y, p, x: F.cross_entropy(o, y)
             + 0.05 * (norm_loss(p["l1.w"].T) + norm_loss(p["l2.w"].T))),
    # the activation cases' loss
    "ce": ("cross_entropy(model(x), y)", "blobs_y", 3, lambda o, y, p, x: F.cross_entropy(o, y)),
}

# name: NML activation of h, torch's
ACTIVATIONS = {
    "tanh": ("tanh(h)", torch.tanh),
    "silu": ("silu(h)", F.silu),
    "gelu": ("gelu(h)", lambda h: F.gelu(h)),
    "softplus": ("softplus(h)", F.softplus),
    "softplus-beta": ("softplus(h, beta = 4, threshold = 3)", lambda h: F.softplus(h, 4, 3)),
    "leaky-relu": ("leaky_relu(h)", F.leaky_relu),
    "leaky-relu-slope": ("leaky_relu(h, slope = 0.2)", lambda h: F.leaky_relu(h, 0.2)),
    "elu": ("elu(h)", F.elu),
    "elu-alpha": ("elu(h, alpha = 0.5)", lambda h: F.elu(h, 0.5)),
    "selu": ("selu(h)", F.selu),
    "hardtanh": ("hardtanh(h)", F.hardtanh),
    "hardtanh-bounds": ("hardtanh(h, lo = -0.5, hi = 2)", lambda h: F.hardtanh(h, -0.5, 2)),
    "mish": ("mish(h)", F.mish),
}

SGD, ADAM = torch.optim.SGD, torch.optim.Adam
# name, loss, activation, NML optimizer, torch optimizer of a parameter list (None: evaluate only)
CASES = [("loss-" + n, n, "tanh", "sgd(lr = 0.1, momentum = 0.9)",
          lambda p: SGD(p, lr=0.1, momentum=0.9)) for n in LOSSES if n != "ce"]
CASES += [("act-" + a, "ce", a, "adam(lr = 1e-2)", lambda p: ADAM(p, lr=1e-2))
          for a in ACTIVATIONS if a != "tanh"]
CASES += [("eval-" + n, n, "tanh", "sgd()", None) for n in ("huber", "kd", "margin", "focal")]
CASES += [("eval-" + a, "ce", a, "sgd()", None) for a in ("gelu", "softplus")]

NML = """use std.nn
use std.optim
use std.loss

layer Net(d, h, k) {{
  l1 = Linear(d, h)
  l2 = Linear(h, k)
{teacher}  forward(x) {{
    h = l1(x)
    return l2({act})
  }}
}}

train {{
  data      = npy("{x}", "{y}")
  model     = Net(6, 8, {k})
  loss      = {loss}
  optimizer = {opt}
  batch     = 128
}}
"""


def forward(p, x, act):
    return act(x @ p["l1.w"] + p["l1.b"]) @ p["l2.w"] + p["l2.b"]


def torch_run(init, x, y, loss_fn, act, make_opt, epochs):
    """As oracle.torch_run, with the activation and a loss that may read the parameters and x."""
    n_test = int(np.floor(0.1 * len(x) + 0.5))
    xtr, ytr, xte, yte = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    p = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}

    def loss_of(x, y):
        return loss_fn(forward(p, x, act), y, p, x)

    def test_loss():
        with torch.no_grad():
            return loss_of(xte, yte).item()

    opt = make_opt(list(p.values())) if epochs else None
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_of(xtr, ytr)
        loss.backward()
        opt.step()
        losses.append((loss.item(), test_loss()))
    return {k: v.detach().numpy() for k, v in p.items()}, losses, test_loss()


def run_case(nmlc, tmp, case):
    name, loss, act, opt, make_opt = case
    epochs = STEPS if make_opt else 0
    loss_src, yfile, k, loss_fn = LOSSES[loss]
    act_src, act_fn = ACTIVATIONS[act]
    has_teacher = "model.t(" in loss_src
    xpath, ypath = (os.path.abspath(os.path.join(DATA, f + ".npy")) for f in ("blobs_x", yfile))
    src = os.path.join(tmp, name + ".nml")
    with open(src, "w") as f:
        f.write(NML.format(x=xpath, y=ypath, k=k, loss=loss_src, opt=opt, act=act_src,
                           teacher="  t = Linear(d, k)\n" if has_teacher else ""))

    # As oracle.py, with l1's weights twice as wide: h spans -4.5 .. 4.3 on these rows, so the
    # activations see both sides of every kink, hardtanh-bounds' and softplus-beta's thresholds.
    rng = np.random.default_rng(1)
    init = {"l1.w": rng.uniform(-0.8, 0.8, (6, 8)), "l1.b": rng.uniform(-0.4, 0.4, 8),
            "l2.w": rng.uniform(-0.35, 0.35, (8, k)), "l2.b": rng.uniform(-0.35, 0.35, k)}
    if has_teacher:
        init |= {"t.w": rng.uniform(-0.8, 0.8, (6, k)), "t.b": rng.uniform(-0.4, 0.4, k)}
    init = {n: a.astype(np.float32) for n, a in init.items()}
    init_path, out_path, log_path = (os.path.join(tmp, name + ext)
                                     for ext in (".init.safetensors", ".out.safetensors", ".jsonl"))
    oracle.write_safetensors(init_path, init)

    cmd = [nmlc, "run", src, "--threads", "1", "--init", init_path, "--epochs", str(epochs)]
    if epochs:
        cmd += ["--save", out_path, "--log", log_path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"nmlc exited {r.returncode}: {r.stderr.strip()}"

    x, y = np.load(xpath), np.load(ypath)
    want, want_losses, want_test = torch_run(init, torch.from_numpy(x), torch.from_numpy(y),
                                             loss_fn, act_fn, make_opt, epochs)
    ok, detail = oracle.compare(r, epochs, log_path, out_path, want, want_losses, want_test)
    if ok and epochs:
        moved = min(float(np.max(np.abs(want[n] - init[n]))) for n in want
                    if not (name.startswith("loss-kd-") and n.startswith("t.")))
        ok = moved > 100 * ATOL  # every trained tensor moved well beyond the tolerance
        detail += f", least move {moved:.0e}"
    return ok, detail


if __name__ == "__main__":
    sys.exit(oracle.run_cases(CASES, run_case))
