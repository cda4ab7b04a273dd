#!/usr/bin/python3
"""Oracle: std.nn's image layers and other layers against PyTorch.

Through models.py's harness (which see for what is compared and the tolerances): on the small
two-channel images of tests/data (img_x [48, 2, 7, 7]), Conv2d with stride, padding, dilation,
groups (depthwise included) and without bias against F.conv2d; MaxPool2d, AvgPool2d (padding
counted, as torch's default) and AdaptiveAvgPool2d against F.max_pool2d, F.avg_pool2d and
F.adaptive_avg_pool2d; BatchNorm2d and BatchNorm1d in training mode against F.batch_norm
(outputs through the losses, input and parameter gradients, running_mean and running_var after 10
steps, and the evaluation-mode test loss after every step, which reads the running statistics), and
with `--epochs 0` from given running statistics; GhostBatchNorm1d/2d against a transcription of
Hoffer et al.'s ghost batches (chunks of the batch, one running update per step); Embedding of
[N] and of [N, L] indices against F.embedding; PReLU, relu6,
hardswish, hardsigmoid and both GELUs against torch.nn.functional; BasicBlock against a torch
transcription of torchvision's BasicBlock.

Dropout and AlphaDropout draw their masks from nmlc's generator, not torch's, so they are checked
by their statistics, which a probe layer keeps in buffers (read from the checkpoint): over 20 steps
of 43 x 98 elements, the fraction kept must be 1 - p within 0.01 (about 6 standard deviations),
every kept value x / (1 - p) within 1e-6 (AlphaDropout: a x + b, the others a (-alpha') + b), two
calls in a step must draw independent masks (both kept: (1 - p)^2 within 0.01), and on standard
normal input the output's mean must be 0 and its second moment 1 / (1 - p) (AlphaDropout: 1), within
0.02 and 0.05 times 1 / (1 - p) (AlphaDropout: 0.02 and 0.03), 5 standard deviations or more. In
evaluation both are the identity: the test loss of a network with them, trained at lr 0, equals
torch's without them at full precision, and the training loss differs from it.

Usage: layers.py NMLC [PREFIX...]
"""
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402  (exits 77, skipped, when numpy or torch is missing)
import models  # noqa: E402
from models import Case, conv_init, both, affine_init, conv  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def conv_case(name, args, c_in, c_out, k, pre=False, **kw):
    """Conv2d(args) on the input, or after a pre-convolution 2 -> c_in (to have more channels)."""
    g = kw.get("groups", 1)
    bias = "bias = 0" not in args
    inits = [conv_init("m", c_in, c_out, k, g, bias)]
    members = f"  m = Conv2d({args})"
    body = "    h = m(h)"
    if pre:
        inits.insert(0, conv_init("pre", 2, c_in, 3))
        members = "  pre = Conv2d(2, {}, 3, padding = 1)\n".format(c_in) + members
        body = "    h = m(tanh(pre(h)))"

    def fwd(p, b, h, training):
        if pre:
            h = torch.tanh(conv(p, h, "pre", padding=1))
        return F.conv2d(h, p["m.w"], p["m.b"] if bias else None, **kw)
    return Case(name, members, body, both(*inits), fwd, unused=() if bias else ("m.b",))


def pool_case(name, nml, fn):
    """A pooling layer after a convolution 2 -> 3 (so that its input gradient reaches pre.w)."""
    def fwd(p, b, h, training):
        return fn(conv(p, h, "pre", padding=1))
    return Case(name, "  pre = Conv2d(2, 3, 3, padding = 1)\n  m = " + nml, "    h = m(pre(h))",
                conv_init("pre", 2, 3, 3), fwd)


def tiled_pool_case(name, nml, fn):
    """A pooling layer whose windows tile its input: a 2x2 convolution makes the 7x7 images 6x6,
    which windows of 2 and of 3 cover exactly (nn.nml pools those as a view of the image)."""
    def fwd(p, b, h, training):
        return fn(conv(p, h, "pre"))
    return Case(name, "  pre = Conv2d(2, 3, 2)\n  m = " + nml, "    h = m(pre(h))", conv_init("pre", 2, 3, 2), fwd)


def bn_buffers(name, c, rng_seed=3):
    r = np.random.default_rng(rng_seed)
    return {name + ".running_mean": r.uniform(-0.5, 0.5, c), name + ".running_var": r.uniform(0.5, 2, c)}


def bn2d_case(name, args, momentum=0.1, eps=1e-5, epochs=oracle.STEPS):
    def fwd(p, b, h, training):
        h = conv(p, h, "pre", padding=1)
        return F.batch_norm(h, b["m.running_mean"], b["m.running_var"], p["m.weight"], p["m.bias"],
                            training, momentum, eps)
    return Case(name, f"  pre = Conv2d(2, 4, 3, padding = 1)\n  m = BatchNorm2d({args})", "    h = m(pre(h))",
                both(conv_init("pre", 2, 4, 3), affine_init("m", 4)), fwd, buffers=bn_buffers("m", 4),
                epochs=epochs)


def bn1d_case(name, args, momentum=0.1, eps=1e-5, epochs=oracle.STEPS):
    def fwd(p, b, h, training):
        h = h.flatten(1) @ p["l.w"] + p["l.b"]
        return F.batch_norm(h, b["m.running_mean"], b["m.running_var"], p["m.weight"], p["m.bias"],
                            training, momentum, eps)

    def init(rng):
        return {"l.w": rng.uniform(-0.1, 0.1, (98, 6)), "l.b": rng.uniform(-0.1, 0.1, 6)} | affine_init("m", 6)(rng)
    return Case(name, f"  l = Linear(98, 6)\n  m = BatchNorm1d({args})", "    h = m(l(flatten(h)))",
                init, fwd, buffers=bn_buffers("m", 6), epochs=epochs)


def ghost_bn(h, b, p, training, virtual, dims, momentum=0.1, eps=1e-5):
    """Ghost batch normalization as Hoffer et al. describe it: each chunk of `virtual` rows (the
    last shorter) normalized by its own statistics over the dims; the running statistics moved
    once per step towards the mean over chunks of the chunk means and unbiased variances."""
    shape = (1, -1) + (1,) * (h.dim() - 2)
    w, bias = p["m.weight"].view(shape), p["m.bias"].view(shape)
    if not training:
        return (h - b["m.running_mean"].view(shape)) / torch.sqrt(b["m.running_var"].view(shape) + eps) * w + bias
    outs, means, variances = [], [], []
    for c in h.split(virtual):
        mu = c.mean(dim=dims, keepdim=True)
        var = c.var(dim=dims, unbiased=False, keepdim=True)
        outs.append((c - mu) / torch.sqrt(var + eps) * w + bias)
        means.append(mu.flatten())
        variances.append(c.var(dim=dims, unbiased=True).flatten())
    with torch.no_grad():
        b["m.running_mean"].mul_(1 - momentum).add_(momentum * torch.stack(means).mean(0))
        b["m.running_var"].mul_(1 - momentum).add_(momentum * torch.stack(variances).mean(0))
    return torch.cat(outs)


def ghost_case(name, args, virtual, two_d, momentum=0.1, eps=1e-5, epochs=oracle.STEPS):
    if two_d:
        members, body = "  pre = Conv2d(2, 4, 3, padding = 1)\n  m = GhostBatchNorm2d(" + args + ")", "    h = m(pre(h))"
        init = both(conv_init("pre", 2, 4, 3), affine_init("m", 4))

        def fwd(p, b, h, training):
            return ghost_bn(conv(p, h, "pre", padding=1), b, p, training, virtual, (0, 2, 3), momentum, eps)
    else:
        members, body = "  l = Linear(98, 6)\n  m = GhostBatchNorm1d(" + args + ")", "    h = m(l(flatten(h)))"

        def init(rng):
            return {"l.w": rng.uniform(-0.1, 0.1, (98, 6)), "l.b": rng.uniform(-0.1, 0.1, 6)} | affine_init("m", 6)(rng)

        def fwd(p, b, h, training):
            return ghost_bn(h.flatten(1) @ p["l.w"] + p["l.b"], b, p, training, virtual, (0,), momentum, eps)
    return Case(name, members, body, init, fwd, buffers=bn_buffers("m", 4 if two_d else 6), epochs=epochs)


def seq_embedding_data(tmp):
    """Rows of five indices in 0 .. 9 (floats); the label is the first index mod 3, with noise."""
    r = np.random.default_rng(6)
    i = r.integers(0, 10, (96, 5))
    y = np.where(r.random(96) < 0.2, r.integers(0, 3, 96), i[:, 0] % 3)
    xp, yp = os.path.join(tmp, "seq_x.npy"), os.path.join(tmp, "seq_y.npy")
    np.save(xp, i.astype(np.float32))
    np.save(yp, y.astype(np.int64))
    return xp, yp


def act_case(name, nml, fn, scale=4, init=None, members=""):
    """An activation after a convolution 2 -> 3, its input scaled so that it sees its kinks."""
    def fwd(p, b, h, training):
        return fn(scale * conv(p, h, "pre", padding=1), p)
    inits = [conv_init("pre", 2, 3, 3)] + ([init] if init else [])
    return Case(name, "  pre = Conv2d(2, 3, 3, padding = 1)" + members,
                f"    h = {nml.format(f'{scale} * pre(h)')}", both(*inits), fwd)


def embedding_data(tmp):
    """Rows of one index in 0 .. 9 (a float) and the class index mod 3, plus noise in the labels."""
    r = np.random.default_rng(5)
    i = r.integers(0, 10, 96)
    y = np.where(r.random(96) < 0.2, r.integers(0, 3, 96), i % 3)
    xp, yp = os.path.join(tmp, "emb_x.npy"), os.path.join(tmp, "emb_y.npy")
    np.save(xp, i.astype(np.float32)[:, None])
    np.save(yp, y.astype(np.int64))
    return xp, yp


def block_forward(p, b, h, training, name, c_in, c_out, stride):
    """torchvision's BasicBlock, with our parameter names."""
    def bn(h, n):
        return F.batch_norm(h, b[n + ".running_mean"], b[n + ".running_var"], p[n + ".weight"], p[n + ".bias"],
                            training, 0.1, 1e-5)
    out = F.relu(bn(F.conv2d(h, p[name + ".conv1.w"], None, stride=stride, padding=1), name + ".bn1"))
    out = bn(F.conv2d(out, p[name + ".conv2.w"], None, padding=1), name + ".bn2")
    if stride != 1 or c_in != c_out:
        h = bn(F.conv2d(h, p[name + ".shortcut.conv.w"], None, stride=stride), name + ".shortcut.bn")
    return F.relu(out + h)


def block_case(name, c_in, c_out, stride):
    norms = [".bn1", ".bn2"] + ([".shortcut.bn"] if stride != 1 or c_in != c_out else [])
    convs = [("m.conv1", c_in, c_out, 3), ("m.conv2", c_out, c_out, 3)]
    if stride != 1 or c_in != c_out:
        convs.append(("m.shortcut.conv", c_in, c_out, 1))

    def init(rng):
        d = conv_init("pre", 2, c_in, 3)(rng)
        for n, ci, co, k in convs:
            d |= conv_init(n, ci, co, k, bias=False)(rng)
        for n in norms:
            d |= affine_init("m" + n, c_out)(rng)
        return d
    bufs = {}
    for i, n in enumerate(norms):
        bufs |= bn_buffers("m" + n, c_out, 3 + i)

    def fwd(p, b, h, training):
        return block_forward(p, b, torch.tanh(conv(p, h, "pre", padding=1)), training, "m", c_in, c_out, stride)
    members = f"  pre = Conv2d(2, {c_in}, 3, padding = 1)\n  m = BasicBlock({c_in}, {c_out}, stride = {stride})"
    return Case(name, members,
                "    h = m(tanh(pre(h)))", init, fwd, buffers=bufs, unused=tuple(n + ".b" for n, *_ in convs))


CASES = [
    conv_case("conv", "2, 4, 3", 2, 4, 3),
    conv_case("conv-stride-padding", "2, 4, 3, stride = 2, padding = 1", 2, 4, 3, stride=2, padding=1),
    conv_case("conv-kernel5-stride3", "2, 3, 5, stride = 3, padding = 2", 2, 3, 5, stride=3, padding=2),
    conv_case("conv-dilation", "2, 4, 3, padding = 2, dilation = 2", 2, 4, 3, padding=2, dilation=2),
    conv_case("conv-1x1", "2, 5, 1", 2, 5, 1),
    conv_case("conv-groups", "4, 6, 3, padding = 1, groups = 2", 4, 6, 3, pre=True, padding=1, groups=2),
    conv_case("conv-depthwise", "4, 4, 3, padding = 1, groups = 4", 4, 4, 3, pre=True, padding=1, groups=4),
    conv_case("conv-depthwise-multiplier", "3, 6, 3, stride = 2, dilation = 2, groups = 3", 3, 6, 3, pre=True,
              stride=2, dilation=2, groups=3),
    conv_case("conv-no-bias", "2, 4, 3, padding = 1, bias = 0", 2, 4, 3, padding=1),
    pool_case("pool-max2", "MaxPool2d(2)", lambda h: F.max_pool2d(h, 2)),
    pool_case("pool-max3-stride2-pad1", "MaxPool2d(3, stride = 2, padding = 1)",
              lambda h: F.max_pool2d(h, 3, 2, 1)),
    pool_case("pool-max2-stride1", "MaxPool2d(2, stride = 1)", lambda h: F.max_pool2d(h, 2, 1)),
    pool_case("pool-avg2", "AvgPool2d(2)", lambda h: F.avg_pool2d(h, 2)),
    pool_case("pool-avg3-stride2-pad1", "AvgPool2d(3, stride = 2, padding = 1)",
              lambda h: F.avg_pool2d(h, 3, 2, 1)),
    tiled_pool_case("pool-max2-tiles", "MaxPool2d(2)", lambda h: F.max_pool2d(h, 2)),
    tiled_pool_case("pool-max3-tiles", "MaxPool2d(3)", lambda h: F.max_pool2d(h, 3)),
    tiled_pool_case("pool-avg2-tiles", "AvgPool2d(2)", lambda h: F.avg_pool2d(h, 2)),
    tiled_pool_case("pool-avg3-tiles", "AvgPool2d(3)", lambda h: F.avg_pool2d(h, 3)),
    pool_case("pool-adaptive-avg", "AdaptiveAvgPool2d()", lambda h: F.adaptive_avg_pool2d(h, 1)),
    bn2d_case("bn2d", "4"),
    bn2d_case("bn2d-momentum-eps", "4, eps = 1e-3, momentum = 0.3", 0.3, 1e-3),
    bn2d_case("bn2d-eval", "4", epochs=0),
    bn1d_case("bn1d", "6"),
    bn1d_case("bn1d-momentum-eps", "6, eps = 0.01, momentum = 0.5", 0.5, 0.01),
    bn1d_case("bn1d-eval", "6", epochs=0),
    Case("embedding", "  emb = Embedding(10, 4)", "    h = emb(reshape(x, []))",
         lambda r: {"emb.weight": r.normal(0, 1, (10, 4))},
         lambda p, b, h, training: F.embedding(torch.round(h - p["a"])[:, 0].long(), p["emb.weight"]),
         data=embedding_data, unused=("a",)),
    Case("embedding-sequence", "  emb = Embedding(10, 4)", "    h = reshape(mean(emb(x), axis = 1), [4])",
         lambda r: {"emb.weight": r.normal(0, 1, (10, 4))},
         lambda p, b, h, training: F.embedding(torch.round(h - p["a"]).long(), p["emb.weight"]).mean(1),
         data=seq_embedding_data, unused=("a",)),
    ghost_case("ghostbn1d", "6, virtual = 16", 16, False),
    ghost_case("ghostbn1d-momentum-eps", "6, virtual = 5, eps = 0.01, momentum = 0.3", 5, False, 0.3, 0.01),
    ghost_case("ghostbn1d-eval", "6, virtual = 16", 16, False, epochs=0),
    ghost_case("ghostbn2d", "4, virtual = 16", 16, True),
    ghost_case("ghostbn2d-small", "4, virtual = 3, momentum = 0.2", 3, True, 0.2),
    ghost_case("ghostbn2d-eval", "4, virtual = 16", 16, True, epochs=0),
    act_case("act-relu6", "relu6({})", lambda h, p: F.relu6(h)),
    act_case("act-hardswish", "hardswish({})", lambda h, p: F.hardswish(h)),
    act_case("act-hardsigmoid", "hardsigmoid({})", lambda h, p: F.hardsigmoid(h)),
    act_case("act-gelu-erf", "gelu_erf({})", lambda h, p: F.gelu(h), scale=2),
    act_case("act-gelu-exact", "gelu({})", lambda h, p: F.gelu(h), scale=2),
    act_case("act-gelu-approx", "gelu({}, approximate = 1)", lambda h, p: F.gelu(h, approximate="tanh"), scale=2),
    act_case("act-gelu-tanh", "gelu_tanh({})", lambda h, p: F.gelu(h, approximate="tanh"), scale=2),
    act_case("act-prelu", "act({})", lambda h, p: F.prelu(h, p["act.weight"]), scale=2,
             init=lambda r: {"act.weight": np.array([0.3])}, members="\n  act = PReLU()"),
    act_case("act-prelu-channels", "act({})", lambda h, p: F.prelu(h, p["act.weight"]), scale=2,
             init=lambda r: {"act.weight": r.uniform(-0.5, 0.5, 3)}, members="\n  act = PReLU(3)"),
    block_case("basicblock", 3, 3, 1),
    block_case("basicblock-projection", 3, 4, 2),
]

# ---- dropout: evaluation and statistics ----

PROBE = """use std.nn
use std.optim

# Statistics of one step's masks, summed over the steps in buffers.
layer Probe(p) {{
  buffer kept[1] = 0
  buffer both[1] = 0
  buffer mean1[1] = 0
  buffer mean2[1] = 0
  buffer bad[1] = 0
  forward(x) {{
{probe}
    return x
  }}
}}

layer Net() {{
  probe = Probe({p})
  fc = Linear(98, 3)
  forward(x) = fc({drop}(flatten(probe(x)), {p}))
}}

train {{
  data      = npy("{x}", "{y}")
  model     = Net()
  loss      = cross_entropy(model(x), y)
  optimizer = sgd(lr = 0)
  batch     = 256
  epochs    = {steps}
}}
"""

# kept: fraction of the elements kept; both: fraction kept by two masks drawn in one step; bad:
# the largest deviation of a kept (and, for alpha dropout, of a dropped) value from the formula;
# mean1, mean2: mean and second moment of the output on standard normal input.
DROPOUT_PROBE = """    d = dropout(x, p)
    d2 = dropout(x, p)
    kept = where(training, kept + mean(d != 0), kept)
    both = where(training, both + mean((d != 0) * (d2 != 0)), both)
    bad = where(training, max(bad, max(abs(where(d != 0, d - x / (1 - p), 0)))), bad)
    z = dropout(randn_like(x), p)
    mean1 = where(training, mean1 + mean(z), mean1)
    mean2 = where(training, mean2 + mean(z^2), mean2)"""

ALPHA_PROBE = """    a = 1 / sqrt((1 + p * 1.7580993408473766^2) * (1 - p))
    b = a * 1.7580993408473766 * p
    low = -1.7580993408473766 * a + b
    d = alpha_dropout(x, p)
    d2 = alpha_dropout(x, p)
    k1 = abs(d - low) > 1e-5
    kept = where(training, kept + mean(k1), kept)
    both = where(training, both + mean(k1 * (abs(d2 - low) > 1e-5)), both)
    bad = where(training, max(bad, max(abs(where(k1, d - (a * x + b), 0)))), bad)
    z = alpha_dropout(randn_like(x), p)
    mean1 = where(training, mean1 + mean(z), mean1)
    mean2 = where(training, mean2 + mean(z^2), mean2)"""

DROP_STEPS = 20

DROP_CASES = [("dropout-p0.3", "dropout", DROPOUT_PROBE, 0.3), ("dropout-p0.7", "dropout", DROPOUT_PROBE, 0.7),
              ("alpha-dropout-p0.2", "alpha_dropout", ALPHA_PROBE, 0.2),
              ("alpha-dropout-p0.5", "alpha_dropout", ALPHA_PROBE, 0.5)]


def run_drop(nmlc, tmp, case):
    name, drop, probe, p = case
    xpath, ypath = (models.data_path(f) for f in ("img_x", "img_y"))
    src = os.path.join(tmp, name + ".nml")
    with open(src, "w") as f:
        f.write(PROBE.format(probe=probe, p=p, drop=drop, x=xpath, y=ypath, steps=DROP_STEPS))
    rng = np.random.default_rng(1)
    init = {"fc.w": rng.uniform(-0.3, 0.3, (98, 3)).astype(np.float32),
            "fc.b": rng.uniform(-0.3, 0.3, 3).astype(np.float32)}
    init_path, out_path, log_path = (os.path.join(tmp, name + e) for e in (".init.safetensors", ".out.safetensors",
                                                                           ".jsonl"))
    oracle.write_safetensors(init_path, init)
    r = subprocess.run([nmlc, "run", src, "--threads", "1", "--init", init_path, "--save", out_path,
                        "--log", log_path], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"nmlc exited {r.returncode}: {r.stderr.strip()}"
    got = oracle.read_safetensors(out_path)
    s = {k: float(got["probe." + k][0]) for k in ("kept", "both", "mean1", "mean2", "bad")}
    for k in ("kept", "both", "mean1", "mean2"):
        s[k] /= DROP_STEPS
    checks = [abs(s["kept"] - (1 - p)) <= 0.01, abs(s["both"] - (1 - p) ** 2) <= 0.01, s["bad"] <= 1e-6]
    if drop == "alpha_dropout":
        checks += [abs(s["mean1"]) <= 0.02, abs(s["mean2"] - 1) <= 0.03]
    else:  # inverted dropout keeps the mean; the second moment grows to 1 / (1 - p)
        checks += [abs(s["mean1"]) <= 0.02 / (1 - p), abs(s["mean2"] - 1 / (1 - p)) <= 0.05 / (1 - p)]

    # Evaluation: the identity, so the test loss is torch's of the network without dropout.
    x, y = torch.from_numpy(np.load(xpath)), torch.from_numpy(np.load(ypath))
    xtr, ytr, xte, yte = models.split(x, y)
    w, b = torch.from_numpy(init["fc.w"]), torch.from_numpy(init["fc.b"])
    want_test = F.cross_entropy(xte.flatten(1) @ w + b, yte).item()
    want_train = F.cross_entropy(xtr.flatten(1) @ w + b, ytr).item()
    with open(log_path) as f:
        log = [json.loads(line) for line in f]
    test_diff = max(abs(e["test_loss"] - want_test) for e in log)
    train_moved = min(abs(e["train_loss"] - want_train) for e in log)
    checks += [test_diff <= oracle.LOSS_TOL, train_moved > 1e-3]
    detail = ("kept {kept:.4f}, both {both:.4f}, mean {mean1:.4f}, second moment {mean2:.4f}, "
              "formula {bad:.1e}".format(**s) + f", eval loss {test_diff:.1e}, train loss moved {train_moved:.2f}")
    return all(checks), detail


def run(nmlc, tmp, case):
    return run_drop(nmlc, tmp, case) if case[0] in {c[0] for c in DROP_CASES} else models.run(nmlc, tmp, case)


if __name__ == "__main__":
    sys.exit(oracle.run_cases([(c.name, c) for c in CASES] + DROP_CASES, run))
