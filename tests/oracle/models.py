"""The harness of the layer, normalization and loss oracles (layers.py, normalizations.py,
losses.py): one small network written twice, in NML and in torch, trained side by side.

A case is a Net: an input offset `a` (a parameter of one row's shape, so that its gradient is the
input gradient summed over the batch), the layers under test, and a head (a Linear to the three
classes unless the case has its own), trained with cross-entropy unless the case gives its loss.
nmlc starts from a checkpoint this harness writes (parameters, buffers, zero optimizer state,
epoch 0; `--resume`, since `--init` reads parameters only) and runs full-batch plain SGD
(lr 0.1, no momentum, so each `.buf` in the saved checkpoint is the last step's gradient) for
STEPS epochs of one step; torch runs the same steps from the same tensors. Compared:

- every epoch's train loss (training mode, before the step) and test loss (evaluation mode, after
  it: running statistics included) from the --log file, within LOSS_TOL;
- every parameter after the last step, within oracle.py's RTOL / ATOL;
- every parameter's gradient at the last step (nmlc's `.buf` against torch's .grad), within
  GRAD_RTOL / GRAD_ATOL;
- every buffer after the last step (running statistics, power-iteration vectors), within RTOL / ATOL.

A case with 0 epochs compares the test loss `--epochs 0` prints from the given checkpoint
(evaluation mode, buffers as written) within oracle.PRINTED_LOSS_TOL.

Tolerances (f32 on both sides; only summation order and libm differ): gradients of these networks
are below 1 and differ by at most ~2e-7 after 10 steps; GRAD_RTOL 1e-4 with GRAD_ATOL 2e-6 leave
10x margin. A wrong formula (a biased for an unbiased variance, a missing eps, a wrong window)
moves them by 1e-3 or more.
"""
import json
import os
import subprocess

import oracle  # exits 77 (skip) when numpy or torch is missing
from oracle import DATA, STEPS, RTOL, ATOL, LOSS_TOL

import numpy as np
import torch
import torch.nn.functional as F

GRAD_RTOL, GRAD_ATOL = 1e-4, 2e-6
LR = 0.1

NML = """use std.nn
use std.optim
use std.loss

layer Net() {{
  param a[{ashape}] = 0
{members}
  forward(x) {{
    h = x + a
{body}
  }}
}}

train {{
  data      = npy("{x}", "{y}")
  model     = Net()
  loss      = {loss}
  optimizer = sgd(lr = {lr})
  batch     = 256
  shuffle   = 0
}}
"""


class Case:
    """name; members: NML lines of the Net's body; body: NML statements of the forward after
    `h = x + a`, ending in `return`; init(rng) -> {parameter: array} in NML's names and layouts
    (a and the head are added); buffers: {buffer: array}; forward(p, b, h, training) -> output,
    torch's Net after the offset, updating the buffers b in place in training; loss: (NML loss,
    torch loss of (output, y)); data: (x file, y file) in tests/data or absolute, or a function of
    the temporary directory writing them there; epochs; head: add the Linear head; unused: the
    parameters whose gradient is 0 by design (all others must have a nonzero one); raw: forward
    gets x itself (and adds p["a"] where the NML forward does), for losses that also read members
    of the model on x."""

    def __init__(self, name, members, body, init, forward, buffers=None, loss=None, data=("img_x", "img_y"),
                 epochs=STEPS, head=True, unused=(), raw=False):
        self.name, self.members, self.body, self.init, self.forward = name, members, body, init, forward
        self.buffers = buffers or {}
        self.loss = loss or ("cross_entropy(model(x), y)", F.cross_entropy)
        self.data, self.epochs, self.head, self.unused, self.raw = data, epochs, head, unused, raw


def conv_init(name, c_in, c_out, k, groups=1, bias=True):
    """A Conv2d's weights (and bias), uniform in +-1.5/sqrt(fan_in)."""
    def init(rng):
        s = 1.5 / np.sqrt(c_in // groups * k * k)
        d = {name + ".w": rng.uniform(-s, s, (c_out, c_in // groups, k, k))}
        d[name + ".b"] = rng.uniform(-s, s, c_out) if bias else np.zeros(c_out)
        return d
    return init


def both(*inits):
    def init(rng):
        d = {}
        for f in inits:
            d |= f(rng)
        return d
    return init


def affine_init(name, c, extra=()):
    """A normalization's weight and bias, moved off 1 and 0 so that their gradients matter."""
    def init(rng):
        d = {name + ".weight": rng.uniform(0.5, 1.5, c), name + ".bias": rng.uniform(-0.5, 0.5, c)}
        for e in extra:
            d[name + "." + e] = rng.uniform(0.5, 1.5, c)
        return d
    return init


def conv(p, h, name, **kw):
    return F.conv2d(h, p[name + ".w"], p[name + ".b"], **kw)


def data_path(name):
    return name if os.path.isabs(name) else os.path.abspath(os.path.join(DATA, name + ".npy"))


def write_checkpoint(path, tensors, seed=0):
    """A checkpoint nmlc can --resume: the tensors, and metadata of epoch 0, step 0."""
    header, offset = {"__metadata__": {"format": "nml", "epoch": "0", "step": "0", "seed": str(seed)}}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, np.float32).tobytes())


def split(x, y):
    """npy()'s split: the last round(0.1 n) rows are held out."""
    n_test = int(np.floor(0.1 * len(x) + 0.5))
    return x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]


def run_case(nmlc, tmp, case):
    data = case.data(tmp) if callable(case.data) else case.data
    xpath, ypath = data_path(data[0]), data_path(data[1])
    x, y = torch.from_numpy(np.load(xpath)), torch.from_numpy(np.load(ypath))
    xtr, ytr, xte, yte = split(x, y)
    rng = np.random.default_rng(1)
    ashape = list(x.shape[1:])
    init = {"a": rng.uniform(-0.1, 0.1, ashape)}
    init |= case.init(rng)
    bufs = {k: torch.tensor(np.asarray(v, np.float32)) for k, v in case.buffers.items()}
    p = {k: torch.tensor(np.asarray(v, np.float32)) for k, v in init.items()}

    members, body = case.members, case.body
    if case.head:  # a Linear from the flattened output to the classes, sized by torch's output
        with torch.no_grad():
            width = case.forward(p, {k: v.clone() for k, v in bufs.items()}, xtr if case.raw else xtr + p["a"], False)
        width = int(np.prod(width.shape[1:]))
        init["fc.w"] = rng.uniform(-0.3, 0.3, (width, 3))
        init["fc.b"] = rng.uniform(-0.3, 0.3, 3)
        members += "\n  fc = Linear({}, 3)".format(width)
        body += "\n    return fc(flatten(tanh(h)))"
    init = {k: np.asarray(v, np.float32) for k, v in init.items()}
    p = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}

    def net(xb, training):
        out = case.forward(p, bufs, xb if case.raw else xb + p["a"], training)
        if case.head:
            out = torch.tanh(out).flatten(1) @ p["fc.w"] + p["fc.b"]
        return out

    src = os.path.join(tmp, case.name + ".nml")
    with open(src, "w") as f:
        f.write(NML.format(ashape=", ".join(map(str, ashape)), members=members, body=body, x=xpath, y=ypath,
                           loss=case.loss[0], lr=LR))
    ckpt, out_path, log_path = (os.path.join(tmp, case.name + e) for e in (".0.safetensors", ".out.safetensors",
                                                                           ".jsonl"))
    tensors = dict(init)
    tensors |= {k + ".buf": np.zeros_like(v) for k, v in init.items()}
    tensors |= {k: v.numpy() for k, v in bufs.items()}
    write_checkpoint(ckpt, tensors)
    cmd = [nmlc, "run", src, "--threads", "1", "--resume", ckpt, "--epochs", str(case.epochs)]
    if case.epochs:
        cmd += ["--save", out_path, "--log", log_path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"nmlc exited {r.returncode}: {r.stderr.strip()}"

    loss_fn = case.loss[1]
    if not case.epochs:
        with torch.no_grad():
            want = loss_fn(net(xte, False), yte).item()
        return oracle.compare(r, 0, None, None, None, None, want)

    losses = []
    for _ in range(case.epochs):
        for v in p.values():
            v.grad = None
        loss = loss_fn(net(xtr, True), ytr)
        loss.backward()
        with torch.no_grad():
            for v in p.values():
                if v.grad is None:  # not used by torch's forward: a zero gradient, as nmlc's
                    v.grad = torch.zeros_like(v)
                v -= LR * v.grad
            losses.append((loss.item(), loss_fn(net(xte, False), yte).item()))
    with open(log_path) as f:
        got_losses = [(e["train_loss"], e["test_loss"]) for e in map(json.loads, f)]
    if len(got_losses) != len(losses):
        return False, f"expected {len(losses)} epochs of losses, got {len(got_losses)}"
    got = oracle.read_safetensors(out_path)
    want = {k: v.detach().numpy() for k, v in p.items()}
    grads = {k: v.grad.numpy() for k, v in p.items()}
    bufs = {k: v.numpy() for k, v in bufs.items()}
    missing = [k for k in list(want) + [k + ".buf" for k in want] + list(bufs) if k not in got]
    if missing:
        return False, f"the checkpoint lacks {missing}"

    loss_diff = float(np.max(np.abs(np.array(got_losses) - np.array(losses))))
    p_diff = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    g_diff = max(float(np.max(np.abs(got[k + ".buf"] - grads[k]))) for k in grads)
    ok = loss_diff <= LOSS_TOL
    ok &= all(np.allclose(got[k], want[k], rtol=RTOL, atol=ATOL) for k in want)
    ok &= all(np.allclose(got[k + ".buf"], grads[k], rtol=GRAD_RTOL, atol=GRAD_ATOL) for k in grads)
    detail = f"loss {loss_diff:.1e}, params {p_diff:.1e}, grads {g_diff:.1e}"
    if bufs:
        b_diff = max(float(np.max(np.abs(got[k] - bufs[k]))) for k in bufs)
        ok &= all(np.allclose(got[k], bufs[k], rtol=RTOL, atol=ATOL) for k in bufs)
        detail += f", buffers {b_diff:.1e}"
    if ok:  # the case must exercise what it claims: every gradient nonzero somewhere
        dead = [k for k in grads if not np.any(grads[k]) and k not in case.unused]
        if dead:
            ok, detail = False, detail + f"; zero gradient: {dead}"
    return ok, detail


def run(nmlc, tmp, case):
    return run_case(nmlc, tmp, case[1])


def main(cases):
    return oracle.run_cases([(c.name, c) for c in cases], run)
