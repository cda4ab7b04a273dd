#!/usr/bin/python3
"""Oracle: std.optim's optimizers from papers (no torch.optim equivalent) against transcriptions.

The harness is oracle.py's (imported): each case trains the small tanh network on tests/data blobs
with nmlc, full batch, from weights written by oracle.py, and runs the same 10 steps with a
reference from the same weights; every saved parameter and every epoch's train and test loss must
match within oracle.py's tolerances (rtol 1e-4 / atol 1e-5 on parameters, 5e-6 on losses).

The references below are torch transcriptions (f32 tensors, scalar coefficients in Python floats,
as the original code computes them) of each paper's algorithm or its authors' code, written from
those sources and not from stdlib/optim.nml:

  diffgrad   shivram1987/diffGrad, diffGrad_v2.py (the fixed version of the paper's code)
  adabound   Luolc/AdaBound, adabound/adabound.py (AdaBound, amsbound=True for AMSBound)
  lamb       Algorithm 2 of You et al. 2020 as tensorflow/addons optimizers/lamb.py
  lars       Algorithm 1 of You et al. 2017 as tensorflow/addons optimizers/lars_optimizer.py
  novograd   Algorithm 1 of Ginsburg et al. 2019; grad_averaging as NVIDIA NeMo's Novograd
  madgrad    facebookresearch/madgrad, madgrad/madgrad.py
  ademamix   apple/ml-ademamix, pytorch/ademamix.py (its half-life form of the b3 warm-up)
  grams      Algorithm 1 of Cao et al. 2024 (as pytorch_optimizer's Grams)
  sgd_sai    AnonymousAlethiometer/SGD_SaI, sgd_sai/sgd_sai.py v1.0.3 (per-tensor g-SNR)

Cases whose name ends in -zero start with l2.b = 0, so that the per-tensor norm ||p|| of LAMB and
LARS is 0 at the first step and the trust ratio's guard (1) is what moves the bias.

Usage: paper_optimizers.py NMLC [PREFIX...]   (only the cases whose name starts with a PREFIX)
"""
import math
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle  # noqa: E402  (exits 77, skipped, when numpy or torch is missing)
from oracle import torch  # noqa: E402


class Reference:
    """A minimal torch.optim-like optimizer: update(p, g, state, t) gives each parameter's new value
    from copies of it and its gradient, its state dict (empty at the first step) and the step t."""

    def __init__(self, params, **hp):
        self.params, self.hp, self.t = params, hp, 0
        self.state = [{} for _ in params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, s in zip(self.params, self.state):
            p.copy_(self.update(p.detach().clone(), p.grad.detach().clone(), s, self.t, **self.hp))


class DiffGrad(Reference):
    """diffGrad_v2.py: Adam moments; dfc = 1 / (1 + exp(-|previous_grad - grad|)), previous_grad
    zeros at first, then a copy of grad (after L2 decay); p -= lr sqrt(bc2) / bc1 * (m dfc) / denom."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        b1, b2 = betas
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p),
                     previous_grad=torch.zeros_like(p))
        if weight_decay != 0:
            g = g + weight_decay * p
        s["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = s["exp_avg_sq"].sqrt().add_(eps)
        bias_correction1, bias_correction2 = 1 - b1 ** t, 1 - b2 ** t
        dfc = 1.0 / (1.0 + torch.exp(-torch.abs(s["previous_grad"] - g)))
        s["previous_grad"] = g.clone()
        step_size = lr * math.sqrt(bias_correction2) / bias_correction1
        return p.addcdiv(s["exp_avg"] * dfc, denom, value=-step_size)


class AdaBound(Reference):
    """adabound.py (no lr schedule, so final_lr is used as given): the Adam step size
    lr sqrt(bc2) / bc1 / denom, clamped to [final_lr (1 - 1/(gamma t + 1)), final_lr (1 + 1/(gamma t))],
    times exp_avg; denom from max(exp_avg_sq) over the steps with amsbound."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8,
               weight_decay=0.0, amsbound=False):
        b1, b2 = betas
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p),
                     max_exp_avg_sq=torch.zeros_like(p))
        if weight_decay != 0:
            g = g + weight_decay * p
        s["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        if amsbound:
            torch.max(s["max_exp_avg_sq"], s["exp_avg_sq"], out=s["max_exp_avg_sq"])
            denom = s["max_exp_avg_sq"].sqrt().add_(eps)
        else:
            denom = s["exp_avg_sq"].sqrt().add_(eps)
        step_size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        lower_bound = final_lr * (1 - 1 / (gamma * t + 1))
        upper_bound = final_lr * (1 + 1 / (gamma * t))
        step = torch.full_like(denom, step_size).div_(denom).clamp_(lower_bound, upper_bound)
        return p - step * s["exp_avg"]


class Lamb(Reference):
    """LAMB, Algorithm 2 of the paper with TF Addons' guard: update = m_hat / (sqrt(v_hat) + eps)
    + wd p; ratio = ||p|| / ||update||, 1 if either norm is 0; p -= ratio lr update."""

    def update(self, p, g, s, t, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-6, weight_decay_rate=0.01):
        if not s:
            s.update(m=torch.zeros_like(p), v=torch.zeros_like(p))
        s["m"] = s["m"] * beta_1 + g * (1 - beta_1)
        s["v"] = s["v"] * beta_2 + (g * g) * (1 - beta_2)
        m_hat = s["m"] / (1.0 - beta_1 ** t)
        v_hat = s["v"] / (1.0 - beta_2 ** t)
        update = m_hat / (torch.sqrt(v_hat) + epsilon) + weight_decay_rate * p
        w_norm, g_norm = torch.linalg.norm(p), torch.linalg.norm(update)
        ratio = torch.where(w_norm > 0, torch.where(g_norm > 0, w_norm / g_norm, 1.0), 1.0)
        return p - ratio * lr * update


class Lars(Reference):
    """LARS, Algorithm 1 of the paper as TF Addons' LARSOptimizer (epsilon 0): trust_ratio =
    eeta ||w|| / (||g|| + wd ||w||), 1 if either norm is 0; mom = momentum mom + lr trust_ratio
    (g + wd w); w -= mom."""

    def update(self, p, g, s, t, learning_rate=1.0, momentum=0.9, weight_decay=5e-4, eeta=1e-3):
        if not s:
            s["momentum"] = torch.zeros_like(p)
        w_norm, g_norm = torch.linalg.norm(p), torch.linalg.norm(g)
        trust_ratio = torch.where(w_norm > 0, torch.where(
            g_norm > 0, eeta * w_norm / (g_norm + weight_decay * w_norm), 1.0), 1.0)
        scaled_lr = learning_rate * trust_ratio
        g = g + weight_decay * p
        s["momentum"] = s["momentum"] * momentum + g * scaled_lr
        return p - s["momentum"]


class NovoGrad(Reference):
    """NovoGrad, Algorithm 1: v_1 = ||g_1||^2, then v_t = b2 v + (1 - b2) ||g_t||^2 (one number per
    layer); m_t = b1 m + (g / (sqrt(v_t) + eps) + d w), m_1 = g_1 / (sqrt(v_1) + eps) + d w_1;
    w -= lr m. grad_averaging multiplies the new term by 1 - b1 (NeMo)."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.95, 0.98), eps=1e-8, d=0.0, grad_averaging=False):
        b1, b2 = betas
        norm_sq = torch.sum(g * g)
        s["v"] = norm_sq if t == 1 else b2 * s["v"] + (1 - b2) * norm_sq
        term = g / (torch.sqrt(s["v"]) + eps) + d * p
        if grad_averaging:
            term = term * (1 - b1)
        s["m"] = term if t == 1 else b1 * s["m"] + term
        return p - lr * s["m"]


class Madgrad(Reference):
    """madgrad.py (dense, momentum != 0 keeps x0): lr += eps; lamb = lr sqrt(k + 1), k = t - 1;
    grad_sum_sq += lamb g^2; s += lamb g; z = x0 - s / (grad_sum_sq^(1/3) + eps);
    p = (1 - ck) p + ck z, ck = 1 - momentum; decoupled decay p -= lr decay p_old."""

    def update(self, p, g, s, t, lr=1e-2, momentum=0.9, weight_decay=0.0, eps=1e-6, decouple_decay=False):
        lr = lr + eps
        ck = 1 - momentum
        lamb = lr * math.pow(t, 0.5)
        if not s:
            s.update(grad_sum_sq=torch.zeros_like(p), s=torch.zeros_like(p), x0=p.clone())
        if weight_decay != 0 and not decouple_decay:
            g = g + weight_decay * p
        s["grad_sum_sq"].addcmul_(g, g, value=lamb)
        rms = s["grad_sum_sq"].pow(1 / 3).add_(eps)
        s["s"].add_(g, alpha=lamb)
        p_old = p.clone()
        z = s["x0"].addcdiv(s["s"], rms, value=-1)
        p = p.mul(1 - ck).add_(z, alpha=ck)
        if weight_decay != 0 and decouple_decay:
            p = p.add(p_old, alpha=-lr * weight_decay)
        return p


def linear_warmup(step, end, warmup):
    return step / warmup * end if step < warmup else end


def half_life_warmup(step, beta_end, beta_start, warmup):
    """ml-ademamix's linear_hl_warmup_scheduler: linear in f(beta) = ln 0.5 / ln(beta + 1e-8) - 1."""
    def f(beta):
        return math.log(0.5) / math.log(beta + 1e-8) - 1

    if step < warmup:
        a = step / warmup
        return math.pow(0.5, 1 / ((1 - a) * f(beta_start) + a * f(beta_end) + 1))
    return beta_end


class AdEMAMix(Reference):
    """ademamix.py: exp_avg_fast (b1), exp_avg_slow (b3, warmed up from b1), exp_avg_sq (b2);
    update = (fast / bc1 + alpha slow) / (sqrt(sq) / sqrt(bc2) + eps) + wd p; p -= lr update."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0, beta3_warmup=None,
               alpha_warmup=None, eps=1e-8, weight_decay=0.0):
        b1, b2, b3_final = betas
        if not s:
            s.update(fast=torch.zeros_like(p), slow=torch.zeros_like(p), sq=torch.zeros_like(p))
        a = linear_warmup(t, alpha, alpha_warmup) if alpha_warmup else alpha
        b3 = half_life_warmup(t, b3_final, b1, beta3_warmup) if beta3_warmup else b3_final
        s["fast"].mul_(b1).add_(g, alpha=1 - b1)
        s["slow"].mul_(b3).add_(g, alpha=1 - b3)
        s["sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (s["sq"].sqrt() / math.sqrt(1 - b2 ** t)).add_(eps)
        update = (s["fast"].div(1 - b1 ** t) + a * s["slow"]) / denom
        update.add_(p, alpha=weight_decay)
        return p - lr * update


class Grams(Reference):
    """Grams, Algorithm 1: Adam's m_hat / (sqrt(v_hat) + eps) with the sign of g:
    p -= lr (sign(g) |u| + wd p)."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        b1, b2 = betas
        if not s:
            s.update(m=torch.zeros_like(p), v=torch.zeros_like(p))
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        u = (s["m"] / (1 - b1 ** t)) / (torch.sqrt(s["v"] / (1 - b2 ** t)) + eps)
        return p - lr * (torch.sign(g) * torch.abs(u) + weight_decay * p)


class SgdSai(Reference):
    """sgd_sai.py v1.0.3: at the first step gsnr = ||g|| / (std(g).nan_to_num() + eps) (unbiased std);
    buf = g at first, then momentum buf + (1 - momentum) g; p = p (1 - wd lr) - lr gsnr buf."""

    def update(self, p, g, s, t, lr=1e-2, momentum=0.9, eps=1e-8, weight_decay=1e-2):
        if t == 1:
            s["gsnr"] = g.norm() / (g.std().nan_to_num() + eps)
            s["buf"] = g.clone()
        else:
            s["buf"].mul_(momentum).add_(g, alpha=1 - momentum)
        return p.mul(1 - weight_decay * lr).add(s["buf"] * (lr * s["gsnr"]) * -1)


def zero_l2_bias(tensors):
    tensors["l2.b"][...] = 0


# name, loss, NML optimizer, --set, reference of a parameter list[, change to the initial weights]
CASES = [
    ("diffgrad", "ce", "diffgrad()", [], lambda p: DiffGrad(p)),
    ("diffgrad-hparams", "mse", "diffgrad(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-6, weight_decay = 0.1)",
     [], lambda p: DiffGrad(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    # gamma = 0.1: the bounds [0.009, 1.1] at t = 1 close to [0.05, 0.2] at t = 10. Adam's rate
    # (about 1e-3 / |g|) is below the lower bound for about a third of the elements and steps, above
    # the upper one for a fifth, so both clamps act.
    ("adabound", "ce", "adabound()", [], lambda p: AdaBound(p)),
    ("adabound-bounds", "ce", "adabound(gamma = 0.1, weight_decay = 0.01)", [],
     lambda p: AdaBound(p, gamma=0.1, weight_decay=0.01)),
    # b2 = 0.5 makes v shrink from step 3, so the running maximum matters (as amsgrad-max)
    ("amsbound", "ce", "amsbound()", [], lambda p: AdaBound(p, amsbound=True)),
    ("amsbound-bounds", "ce", "amsbound(b2 = 0.5, gamma = 0.1)", [],
     lambda p: AdaBound(p, betas=(0.9, 0.5), gamma=0.1, amsbound=True)),
    ("lamb", "ce", "lamb()", [], lambda p: Lamb(p)),
    ("lamb-hparams", "mse", "lamb(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-3, weight_decay = 0.1)", [],
     lambda p: Lamb(p, lr=1e-2, beta_1=0.8, beta_2=0.99, epsilon=1e-3, weight_decay_rate=0.1)),
    ("lamb-zero", "ce", "lamb(lr = 1e-2)", [], lambda p: Lamb(p, lr=1e-2), zero_l2_bias),
    ("lars", "ce", "lars()", [], lambda p: Lars(p)),
    ("lars-hparams", "mse", "lars(lr = 2, momentum = 0.5, weight_decay = 0.1, eta = 0.02)", [],
     lambda p: Lars(p, learning_rate=2.0, momentum=0.5, weight_decay=0.1, eeta=0.02)),
    ("lars-zero", "ce", "lars()", [], lambda p: Lars(p), zero_l2_bias),
    ("novograd", "ce", "novograd()", [], lambda p: NovoGrad(p)),
    # eps = 0.1 is large enough for its place (outside the square root) to matter
    ("novograd-hparams", "mse",
     "novograd(lr = 1e-2, b1 = 0.8, b2 = 0.5, eps = 0.1, weight_decay = 0.1, grad_averaging = 1)", [],
     lambda p: NovoGrad(p, lr=1e-2, betas=(0.8, 0.5), eps=0.1, d=0.1, grad_averaging=True)),
    ("madgrad", "ce", "madgrad()", [], lambda p: Madgrad(p)),
    # eps = 1e-3 makes the code's lr + eps visible
    ("madgrad-hparams", "mse", "madgrad(lr = 3e-2, momentum = 0.5, weight_decay = 0.1, eps = 1e-3)", [],
     lambda p: Madgrad(p, lr=3e-2, momentum=0.5, weight_decay=0.1, eps=1e-3)),
    ("madgrad-decoupled", "ce", "madgrad(momentum = 0, weight_decay = 0.5, decouple_decay = 1)", [],
     lambda p: Madgrad(p, momentum=0.0, weight_decay=0.5, decouple_decay=True)),
    ("ademamix", "ce", "ademamix()", [], lambda p: AdEMAMix(p)),
    # both warm-ups end within the 10 steps
    ("ademamix-warmup", "mse",
     "ademamix(lr = 1e-2, b3 = 0.999, alpha = 5, weight_decay = 0.1, T_alpha = 8, T_beta3 = 6)", [],
     lambda p: AdEMAMix(p, lr=1e-2, betas=(0.9, 0.999, 0.999), alpha=5.0, alpha_warmup=8,
                        beta3_warmup=6, weight_decay=0.1)),
    # the paper's setting, warm-ups over the whole run: T = 10 steps here
    ("ademamix-run", "ce", "ademamix(lr = 1e-2, T_alpha = T, T_beta3 = T)", [],
     lambda p: AdEMAMix(p, lr=1e-2, alpha_warmup=oracle.STEPS, beta3_warmup=oracle.STEPS)),
    ("grams", "ce", "grams()", [], lambda p: Grams(p)),
    ("grams-hparams", "mse", "grams(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-6, weight_decay = 0.1)", [],
     lambda p: Grams(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("sgd_sai", "ce", "sgd_sai()", [], lambda p: SgdSai(p)),
    ("sgd_sai-hparams", "mse", "sgd_sai(lr = 3e-2, momentum = 0.5, eps = 1e-3, weight_decay = 0.1)", [],
     lambda p: SgdSai(p, lr=3e-2, momentum=0.5, eps=1e-3, weight_decay=0.1)),
]


def run_case(nmlc, tmp, case):
    """oracle.run_case, after the case's change to the initial weights (applied to the dict that
    oracle.py writes for nmlc and then trains with the reference)."""
    if len(case) == 5:
        return oracle.run_case(nmlc, tmp, case)
    write = oracle.write_safetensors

    def changed(path, tensors):
        case[5](tensors)
        write(path, tensors)

    oracle.write_safetensors = changed
    try:
        return oracle.run_case(nmlc, tmp, case[:5])
    finally:
        oracle.write_safetensors = write


if __name__ == "__main__":
    sys.exit(oracle.run_cases(CASES, run_case))
