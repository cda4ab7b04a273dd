#!/usr/bin/python3
"""Oracle: std.nn's normalizations beyond BatchNorm, LayerNorm, RMSNorm and ScaleNorm, against
PyTorch or, where torch 1.13 has none, an independent transcription of the reference code.

Through models.py's harness (which see for what is compared and the tolerances), each after a
convolution 2 -> 4 on tests/data's img_x, so that its input gradient reaches pre.w:

- GroupNorm (several group counts, eps, without affine) against F.group_norm;
- InstanceNorm2d (defaults; affine; running statistics in training and evaluation, and `--epochs 0`
  from given ones) against F.instance_norm;
- LocalResponseNorm (odd and even sizes) against F.local_response_norm;
- WeightNormLinear and WeightNormConv2d against torch._weight_norm (what
  torch.nn.utils.weight_norm computes), the weight given as v and g;
- SpectralNormLinear and SpectralNormConv2d against torch.nn.utils.spectral_norm's own
  SpectralNorm.compute_weight on the same weight, u and v: one power iteration per training step,
  u and v compared after 10 steps, evaluation with them unchanged;
- StdConv2d against the authors' WS convolution (Qiao et al., joe-siyuan-qiao/WeightStandardization:
  centred, divided by the unbiased std + 1e-5), ScaledStdConv2d against DeepMind's NF-Net
  WSConv2D.standardize_weight (gain (w - mean) / sqrt(max(fan_in var, 1e-4))), transcribed;
- EvoNorm2dB0 (running variance, train and eval) and EvoNorm2dS0 against timm's EvoNorm2dB0 and
  EvoNorm2dS0, transcribed (timm is not installed);
- FixNorm against g x / max(|x|, eps);
- BatchChannelNorm2d (batch statistics, and the estimated-statistics form in training; evaluation)
  against F.group_norm of F.batch_norm, and of the authors' EstBN, transcribed;
- WeightNormLinear / WeightNormConv2d with init_from_data against the paper's data-dependent
  initialization, transcribed.

Usage: normalizations.py NMLC [PREFIX...]
"""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402  (exits 77, skipped, when numpy or torch is missing)
import models  # noqa: E402
from models import Case, conv_init, both, affine_init, conv  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils.spectral_norm import SpectralNorm  # noqa: E402

PRE = "  pre = Conv2d(2, 4, 3, padding = 1)\n"


def pre(p, h):
    return conv(p, h, "pre", padding=1)


def norm_case(name, nml, fn, init=None, buffers=None, unused=(), epochs=oracle.STEPS):
    """The normalization after the pre-convolution: fn(p, b, h, training) on its output."""
    inits = [conv_init("pre", 2, 4, 3)] + ([init] if init else [])
    return Case(name, PRE + "  m = " + nml, "    h = m(pre(h))", both(*inits),
                lambda p, b, h, training: fn(p, b, pre(p, h), training), buffers=buffers, unused=unused,
                epochs=epochs)


def running(c, seed=3):
    r = np.random.default_rng(seed)
    return {"m.running_mean": r.uniform(-0.5, 0.5, c), "m.running_var": r.uniform(0.5, 2, c)}


def instance_norm(momentum=0.1, eps=1e-5, affine=False, track=False):
    def fn(p, b, h, training):
        return F.instance_norm(h, b["m.running_mean"] if track else None, b["m.running_var"] if track else None,
                               p["m.weight"] if affine else None, p["m.bias"] if affine else None,
                               training or not track, momentum, eps)
    return fn


def bcn(groups, estimate=False, momentum=0.1, eps=1e-5):
    """Batch-Channel Normalization (Qiao et al.): a group norm of a batch norm; with estimate, the
    authors' EstBN: the running estimates, moved first without derivative (the mean towards the
    batch mean, the variance towards the mean squared deviation from the old running mean), also
    normalize in training."""
    def fn(p, b, h, training):
        rm, rv = b["m.running_mean"], b["m.running_var"]
        if estimate:
            if training:
                with torch.no_grad():
                    dev = ((h - rm.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))
                    rm.mul_(1 - momentum).add_(momentum * h.mean(dim=(0, 2, 3)))
                    rv.mul_(1 - momentum).add_(momentum * dev)
            h = (h - rm.view(1, -1, 1, 1)) / torch.sqrt(rv.view(1, -1, 1, 1) + eps)
            h = h * p["m.bn_weight"].view(1, -1, 1, 1) + p["m.bn_bias"].view(1, -1, 1, 1)
        else:
            h = F.batch_norm(h, rm, rv, p["m.bn_weight"], p["m.bn_bias"], training, momentum, eps)
        return F.group_norm(h, groups, p["m.weight"], p["m.bias"], eps)
    return fn


def bcn_init(rng):
    return affine_init("m", 4)(rng) | {k.replace("m.", "m.bn_"): v for k, v in affine_init("m", 4)(rng).items()}


def group_std(x, groups, eps):
    """timm's group_std: the biased std of each group of channels over the group and the pixels."""
    B, C, H, W = x.shape
    g = x.reshape(B, groups, C // groups, H, W)
    std = g.var(dim=(2, 3, 4), unbiased=False, keepdim=True).add(eps).sqrt()
    return std.expand(g.shape).reshape(B, C, H, W)


def evonorm_b0(momentum=0.1, eps=1e-3):
    """timm's EvoNorm2dB0.forward."""
    def fn(p, b, x, training):
        v_shape = (1, -1, 1, 1)
        if training:
            var = x.var(dim=(0, 2, 3), unbiased=False)
            n = x.numel() / x.shape[1]
            b["m.running_var"].copy_(b["m.running_var"] * (1 - momentum) + var.detach() * momentum * (n / (n - 1)))
        else:
            var = b["m.running_var"]
        left = var.add(eps).sqrt().view(v_shape).expand_as(x)
        instance_std = x.var(dim=(2, 3), unbiased=False, keepdim=True).add(eps).sqrt().expand(x.shape)
        right = x * p["m.v"].view(v_shape) + instance_std
        x = x / left.max(right)
        return x * p["m.weight"].view(v_shape) + p["m.bias"].view(v_shape)
    return fn


def evonorm_s0(groups, eps=1e-5):
    """timm's EvoNorm2dS0.forward."""
    def fn(p, b, x, training):
        v_shape = (1, -1, 1, 1)
        x = x * (x * p["m.v"].view(v_shape)).sigmoid() / group_std(x, groups, eps)
        return x * p["m.weight"].view(v_shape) + p["m.bias"].view(v_shape)
    return fn


def ws_weight(w, eps=1e-5):
    """The authors' Weight Standardization (Conv2d.forward of joe-siyuan-qiao/WeightStandardization)."""
    weight_mean = w.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
    w = w - weight_mean
    std = w.view(w.size(0), -1).std(dim=1).view(-1, 1, 1, 1) + eps
    return w / std.expand_as(w)


def scaled_ws_weight(w, gain, gamma=1.0, eps=1e-4):
    """DeepMind's NF-Net WSConv2D.standardize_weight, on torch's [O, I, H, W] layout (theirs is
    [H, W, I, O]: the statistics run over everything but the output channel), times gamma."""
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    fan_in = np.prod(w.shape[1:])
    scale = torch.rsqrt(torch.clamp(var * fan_in, min=eps)) * gain.view(-1, 1, 1, 1)
    shift = mean * scale
    return gamma * (w * scale - shift)


class SN:
    """What spectral_norm hooks onto a module: weight_orig, weight_u and weight_v."""

    def __init__(self, weight, u, v):
        self.weight_orig, self.weight_u, self.weight_v = weight, u, v


def spectral_norm(weight, b, training):
    """torch's spectral_norm of weight ([out, ...] as torch lays it out) with the buffers m.u, m.v:
    its SpectralNorm.compute_weight, which updates u and v in place in training."""
    return SpectralNorm(n_power_iterations=1, dim=0, eps=1e-12).compute_weight(
        SN(weight, b["m.u"], b["m.v"]), do_power_iteration=training)


def unit(rng, n):
    v = rng.normal(0, 1, n)
    return v / np.linalg.norm(v)


def conv_weights(name, c_in, c_out, k, groups, extra):
    """A convolution's w (or v) and b, and the extra per-output parameters uniform in [0.5, 1.5]."""
    def init(rng):
        d = conv_init(name, c_in, c_out, k, groups)(rng)
        if "v" in extra:
            d[name + ".v"] = d.pop(name + ".w")
        for e in extra:
            if e != "v":
                d[name + "." + e] = rng.uniform(0.5, 1.5, c_out)
        return d
    return init


def weight_conv_case(name, nml, c_out, k, weight_fn, extra=(), buffers=None, epochs=oracle.STEPS, **kw):
    """A convolution 4 -> c_out with a computed weight, after the pre-convolution."""
    def fn(p, b, h, training):
        return F.conv2d(h, weight_fn(p, b, training), p["m.b"], **kw)
    return norm_case(name, nml, fn, conv_weights("m", 4, c_out, k, kw.get("groups", 1), extra), buffers=buffers,
                     epochs=epochs)


def linear_case(name, nml, d_out, weight_fn, init, buffers=None, epochs=oracle.STEPS, post=None):
    """A linear layer 196 -> d_out with a computed weight (torch's [out, in]) after the
    pre-convolution and flatten, or post(p, h) of its output."""
    def fn(p, b, h, training):
        out = h.flatten(1) @ weight_fn(p, b, training).t() + p["m.b"]
        return post(p, out) if post else out
    return Case(name, PRE + "  m = " + nml, "    h = m(flatten(tanh(pre(h))))", both(conv_init("pre", 2, 4, 3), init),
                lambda p, b, h, training: fn(p, b, torch.tanh(pre(p, h)), training), buffers=buffers,
                epochs=epochs)


def sn_buffers(n_out, n_in):
    r = np.random.default_rng(4)
    return {"m.u": unit(r, n_out), "m.v": unit(r, n_in)}


def wn_linear_init(rng):
    return {"m.v": rng.uniform(-0.1, 0.1, (196, 5)), "m.g": rng.uniform(0.5, 1.5, 5), "m.b": rng.uniform(-0.1, 0.1, 5)}


def data_init_wn(conv_kw=None, eps=1e-8):
    """Weight normalization with Salimans & Kingma's data-dependent initialization, transcribed:
    before the first training step, t = x v / |v| on that batch sets g = 1 / sqrt(var t + eps)
    and b = -mean(t) g per output (biased variance; over the batch, and the pixels of a
    convolution); the step then trains from there."""
    done = []

    def fn(p, b, h, training):
        if conv_kw is None:
            x = torch.tanh(h).flatten(1)
            t = x @ (p["m.v"] / p["m.v"].norm(dim=0, keepdim=True))
            dims, shape = (0,), (1, -1)
        else:
            v = p["m.v"]
            t = F.conv2d(h, v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1), None, **conv_kw)
            dims, shape = (0, 2, 3), (1, -1, 1, 1)
        if training and not done:
            done.append(1)
            with torch.no_grad():
                s = 1 / torch.sqrt(t.var(dim=dims, unbiased=False) + eps)
                p["m.g"].copy_(s)
                p["m.b"].copy_(-t.mean(dim=dims) * s)
        return t * p["m.g"].view(shape) + p["m.b"].view(shape)
    return fn


def linear_init(rng):
    return {"m.w": rng.uniform(-0.1, 0.1, (196, 5)), "m.b": rng.uniform(-0.1, 0.1, 5)}


CASES = [
    norm_case("groupnorm", "GroupNorm(2, 4)",
              lambda p, b, h, t: F.group_norm(h, 2, p["m.weight"], p["m.bias"]), affine_init("m", 4)),
    norm_case("groupnorm-one-group", "GroupNorm(1, 4, eps = 1e-3)",
              lambda p, b, h, t: F.group_norm(h, 1, p["m.weight"], p["m.bias"], eps=1e-3), affine_init("m", 4)),
    norm_case("groupnorm-per-channel", "GroupNorm(4, 4)",
              lambda p, b, h, t: F.group_norm(h, 4, p["m.weight"], p["m.bias"]), affine_init("m", 4)),
    norm_case("groupnorm-no-affine", "GroupNorm(2, 4, affine = 0)",
              lambda p, b, h, t: F.group_norm(h, 2), affine_init("m", 4), unused=("m.weight", "m.bias")),
    norm_case("instancenorm", "InstanceNorm2d(4)", instance_norm(), affine_init("m", 4),
              buffers=running(4), unused=("m.weight", "m.bias")),
    norm_case("instancenorm-affine", "InstanceNorm2d(4, eps = 1e-3, affine = 1)", instance_norm(eps=1e-3, affine=True),
              affine_init("m", 4), buffers=running(4)),
    norm_case("instancenorm-running", "InstanceNorm2d(4, momentum = 0.3, affine = 1, track_running_stats = 1)",
              instance_norm(0.3, affine=True, track=True), affine_init("m", 4), buffers=running(4)),
    norm_case("instancenorm-running-eval", "InstanceNorm2d(4, affine = 1, track_running_stats = 1)",
              instance_norm(affine=True, track=True), affine_init("m", 4), buffers=running(4), epochs=0),
    norm_case("bcn", "BatchChannelNorm2d(4, groups = 2)", bcn(2), bcn_init, buffers=running(4)),
    norm_case("bcn-estimate", "BatchChannelNorm2d(4, groups = 2, momentum = 0.3, estimate = 1)",
              bcn(2, True, 0.3), bcn_init, buffers=running(4)),
    norm_case("bcn-estimate-eps", "BatchChannelNorm2d(4, groups = 4, eps = 1e-3, estimate = 1)",
              bcn(4, True, eps=1e-3), bcn_init, buffers=running(4)),
    norm_case("bcn-eval", "BatchChannelNorm2d(4, groups = 2)", bcn(2), bcn_init, buffers=running(4), epochs=0),
    norm_case("lrn3", "LocalResponseNorm(3)", lambda p, b, h, t: F.local_response_norm(h, 3)),
    norm_case("lrn5-params", "LocalResponseNorm(5, alpha = 0.5, beta = 0.6, k = 1.5)",
              lambda p, b, h, t: F.local_response_norm(h, 5, 0.5, 0.6, 1.5)),
    norm_case("lrn1", "LocalResponseNorm(1, alpha = 0.3)", lambda p, b, h, t: F.local_response_norm(h, 1, 0.3)),
    norm_case("lrn2", "LocalResponseNorm(2, alpha = 0.4)", lambda p, b, h, t: F.local_response_norm(h, 2, 0.4)),
    norm_case("lrn4-params", "LocalResponseNorm(4, alpha = 0.5, beta = 1.2, k = 0.5)",
              lambda p, b, h, t: F.local_response_norm(h, 4, 0.5, 1.2, 0.5)),
    norm_case("evonorm-b0", "EvoNorm2dB0(4)", evonorm_b0(), affine_init("m", 4, ["v"]),
              buffers={"m.running_var": running(4)["m.running_var"]}),
    norm_case("evonorm-b0-momentum-eps", "EvoNorm2dB0(4, eps = 1e-5, momentum = 0.4)", evonorm_b0(0.4, 1e-5),
              affine_init("m", 4, ["v"]), buffers={"m.running_var": running(4)["m.running_var"]}),
    norm_case("evonorm-b0-eval", "EvoNorm2dB0(4)", evonorm_b0(), affine_init("m", 4, ["v"]),
              buffers={"m.running_var": running(4)["m.running_var"]}, epochs=0),
    norm_case("evonorm-s0", "EvoNorm2dS0(4, groups = 2)", evonorm_s0(2), affine_init("m", 4, ["v"])),
    norm_case("evonorm-s0-one-group", "EvoNorm2dS0(4, groups = 1, eps = 1e-3)", evonorm_s0(1, 1e-3),
              affine_init("m", 4, ["v"])),
    weight_conv_case("weightnorm-conv", "WeightNormConv2d(4, 3, 3, padding = 1)", 3, 3,
                     lambda p, b, t: torch._weight_norm(p["m.v"], p["m.g"].view(-1, 1, 1, 1), 0), ["v", "g"],
                     padding=1),
    weight_conv_case("weightnorm-conv-groups", "WeightNormConv2d(4, 6, 3, stride = 2, groups = 2)", 6, 3,
                     lambda p, b, t: torch._weight_norm(p["m.v"], p["m.g"].view(-1, 1, 1, 1), 0), ["v", "g"],
                     stride=2, groups=2),
    linear_case("weightnorm-linear", "WeightNormLinear(196, 5)", 5,
                lambda p, b, t: torch._weight_norm(p["m.v"].t(), p["m.g"].view(-1, 1), 0), wn_linear_init),
    Case("weightnorm-linear-data-init", PRE + "  m = WeightNormLinear(196, 5, init_from_data = 1)",
         "    h = m(flatten(tanh(pre(h))))", both(conv_init("pre", 2, 4, 3), wn_linear_init),
         (lambda fn: lambda p, b, h, training: fn(p, b, pre(p, h), training))(data_init_wn())),
    norm_case("weightnorm-conv-data-init", "WeightNormConv2d(4, 6, 3, stride = 2, groups = 2, init_from_data = 1)",
              data_init_wn({"stride": 2, "groups": 2}), conv_weights("m", 4, 6, 3, 2, ["v", "g"])),
    weight_conv_case("stdconv", "StdConv2d(4, 3, 3, padding = 1)", 3, 3, lambda p, b, t: ws_weight(p["m.w"]),
                     padding=1),
    weight_conv_case("stdconv-groups-eps", "StdConv2d(4, 6, 3, groups = 2, eps = 0.1)", 6, 3,
                     lambda p, b, t: ws_weight(p["m.w"], 0.1), groups=2),
    weight_conv_case("scaledstdconv", "ScaledStdConv2d(4, 3, 3, padding = 1)", 3, 3,
                     lambda p, b, t: scaled_ws_weight(p["m.w"], p["m.gain"]), ["gain"], padding=1),
    weight_conv_case("scaledstdconv-gamma",
                     "ScaledStdConv2d(4, 6, 3, stride = 2, groups = 2, gamma = 1.7139588594436646)",
                     6, 3, lambda p, b, t: scaled_ws_weight(p["m.w"], p["m.gain"], 1.7139588594436646), ["gain"],
                     stride=2, groups=2),
    weight_conv_case("spectralnorm-conv", "SpectralNormConv2d(4, 3, 3, padding = 1)", 3, 3,
                     lambda p, b, t: spectral_norm(p["m.w"], b, t), buffers=sn_buffers(3, 36), padding=1),
    weight_conv_case("spectralnorm-conv-eval", "SpectralNormConv2d(4, 3, 3, padding = 1)", 3, 3,
                     lambda p, b, t: spectral_norm(p["m.w"], b, t), buffers=sn_buffers(3, 36), padding=1, epochs=0),
    linear_case("spectralnorm-linear", "SpectralNormLinear(196, 5)", 5,
                lambda p, b, t: spectral_norm(p["m.w"].t(), b, t), linear_init, buffers=sn_buffers(5, 196)),
    Case("fixnorm", PRE + "  l = Linear(196, 5)\n  m = FixNorm(g = 2)", "    h = m(l(flatten(tanh(pre(h)))))",
         both(conv_init("pre", 2, 4, 3),
              lambda r: {"l.w": r.uniform(-0.1, 0.1, (196, 5)), "l.b": r.uniform(-0.1, 0.1, 5)}),
         lambda p, b, h, t: 2 * F.normalize(torch.tanh(pre(p, h)).flatten(1) @ p["l.w"] + p["l.b"], dim=-1, eps=1e-5)),
]


if __name__ == "__main__":
    sys.exit(models.main(CASES))
