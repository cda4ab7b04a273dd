"""Reference implementations of the optimizers of std.optim that torch.optim does not have.

Each is a transcription, in PyTorch, of the paper's algorithm or of the code its authors released
(named in each class), written from those sources and not from stdlib/optim.nml. They work on the
parameters in PyTorch's layout (a linear layer's weight is [out, in], as the official code sees
it; NML stores [in, out]) and in whatever dtype the parameters have, so that the same code gives
the f32 reference and the f64 one whose difference is the floor of a comparison.

The interface is torch.optim's: zero_grad() and step() after backward().
"""
import math

import torch
import torch.nn.functional as F


class Reference:
    """A minimal torch.optim-like optimizer. update(p, g, state, t) returns a parameter's new value
    from copies of it and its gradient, its state dict (empty at the first step) and the step t
    (from 1); rules over all parameters at once override step_all(t)."""

    def __init__(self, params, **hp):
        self.params, self.hp, self.t = list(params), hp, 0
        self.state = [{} for _ in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        self.step_all(self.t)

    def step_all(self, t):
        for p, s in zip(self.params, self.state):
            p.copy_(self.update(p.detach().clone(), p.grad.detach().clone(), s, t, **self.hp))


class NAdamW(Reference):
    """mlcommons/algorithmic-efficiency, the NAdamW baseline (pytorch submission): p *= 1 - lr wd;
    exp_avg, exp_avg_sq as Adam; the numerator is exp_avg updated a second time with grad (the
    Nesterov look-ahead); p -= lr / bc1 * that / (sqrt(exp_avg_sq) / sqrt(bc2) + eps)."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        b1, b2 = betas
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        p.mul_(1 - lr * weight_decay)
        s["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        look = s["exp_avg"] * b1 + g * (1 - b1)
        denom = (s["exp_avg_sq"].sqrt() / math.sqrt(1 - b2 ** t)).add_(eps)
        return p.addcdiv(look, denom, value=-lr / (1 - b1 ** t))


def _channel_view(x):
    return x.view(x.size(0), -1)


def _layer_view(x):
    return x.view(1, -1)


def _projection(p, grad, perturb, delta, wd_ratio, eps):
    """clovaai/AdamP's _projection: the channel view first, then the layer view; the first whose
    largest |cos(grad, p)| is below delta / sqrt(view width) removes the radial part of perturb."""
    expand = [-1] + [1] * (p.dim() - 1)
    for view in (_channel_view, _layer_view):
        cos = F.cosine_similarity(view(grad), view(p), dim=1, eps=eps).abs()
        if cos.max() < delta / math.sqrt(view(p).size(1)):
            p_n = p / view(p).norm(dim=1).view(expand).add(eps)
            perturb = perturb - p_n * view(p_n * perturb).sum(dim=1).view(expand)
            return perturb, wd_ratio
    return perturb, 1.0


class AdamP(Reference):
    """clovaai/AdamP adamp.py."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, delta=0.1,
               wd_ratio=0.1, nesterov=False):
        b1, b2 = betas
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        s["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (s["exp_avg_sq"].sqrt() / math.sqrt(1 - b2 ** t)).add_(eps)
        if nesterov:
            perturb = (b1 * s["exp_avg"] + (1 - b1) * g) / denom
        else:
            perturb = s["exp_avg"] / denom
        ratio = 1.0
        if p.dim() > 1:
            perturb, ratio = _projection(p, g, perturb, delta, wd_ratio, eps)
        if weight_decay > 0:
            p.mul_(1 - lr * weight_decay * ratio)
        return p.add(perturb, alpha=-lr / (1 - b1 ** t))


class SGDP(Reference):
    """clovaai/AdamP sgdp.py."""

    def update(self, p, g, s, t, lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
               eps=1e-8, delta=0.1, wd_ratio=0.1):
        if not s:
            s["momentum"] = torch.zeros_like(p)
        buf = s["momentum"]
        buf.mul_(momentum).add_(g, alpha=1 - dampening)
        d_p = g + momentum * buf if nesterov else buf.clone()
        ratio = 1.0
        if p.dim() > 1:
            d_p, ratio = _projection(p, g, d_p, delta, wd_ratio, eps)
        if weight_decay > 0:
            p.mul_(1 - lr * weight_decay * ratio / (1 - momentum))
        return p.add(d_p, alpha=-lr)


class Adafactor(Reference):
    """Adafactor, Algorithms 4 (matrices) and 5 (vectors) of Shazeer & Stern 2018 with the row
    and column *sums* of the paper: R_t = b2_t R + (1 - b2_t) (G² + eps1) 1_m, C_t = b2_t C + (1 -
    b2_t) 1_n^T (G² + eps1), V = R C / (1_n^T R), U = G / sqrt(V), U /= max(1, RMS(U) / d),
    alpha_t = max(eps2, RMS(X_{t-1})) rho_t, rho_t = min(1e-2, 1/sqrt(t)), b2_t = 1 - t^-0.8. A
    convolution's [out, in, kh, kw] is factored as the [out, in kh kw] matrix. The options outside
    the paper follow Hugging Face's Adafactor: a fixed lr (relative_step False), momentum b1 on the
    scaled update, weight decay p -= wd alpha p, warmup_init's min(1e-6 t, 1e-2)."""

    def update(self, p, g, s, t, lr=None, beta1=None, decay_rate=0.8, eps=(1e-30, 1e-3), clip_threshold=1.0,
               weight_decay=0.0, relative_step=True, scale_parameter=True, warmup_init=False):
        eps1, eps2 = eps
        G = g.reshape(g.size(0), -1) if p.dim() >= 2 else g
        if not s:
            if p.dim() >= 2:
                s.update(R=torch.zeros(G.size(0), dtype=p.dtype), C=torch.zeros(G.size(1), dtype=p.dtype))
            else:
                s["V"] = torch.zeros_like(p)
            s["m"] = torch.zeros_like(p)
        rho = min(1e-6 * t if warmup_init else 1e-2, 1 / math.sqrt(t)) if relative_step else lr
        rms_p = float(p.pow(2).mean().sqrt())
        alpha = (max(eps2, rms_p) if scale_parameter else 1.0) * rho
        b2t = 1 - t ** -decay_rate
        G2 = G * G + eps1
        if p.dim() >= 2:
            s["R"] = b2t * s["R"] + (1 - b2t) * G2.sum(dim=1)
            s["C"] = b2t * s["C"] + (1 - b2t) * G2.sum(dim=0)
            V = torch.outer(s["R"], s["C"]) / s["R"].sum()
            U = (G / V.sqrt()).reshape(p.shape)
        else:
            s["V"] = b2t * s["V"] + (1 - b2t) * G2
            U = g / s["V"].sqrt()
        U = U / max(1.0, float(U.pow(2).mean().sqrt()) / clip_threshold)
        U = U * alpha
        if beta1:
            s["m"] = beta1 * s["m"] + (1 - beta1) * U
            U = s["m"]
        if weight_decay:
            p = p - weight_decay * alpha * p
        return p - U


def newton_schulz5(G, steps=5, eps=1e-7):
    """KellerJordan/Muon's zeropower_via_newtonschulz5, in G's own dtype (the code runs bfloat16)."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


class MuonWithAuxAdam(Reference):
    """KellerJordan/Muon's SingleDeviceMuonWithAuxAdam, parameters with two or more axes in the
    Muon group and the others in the Adam group: muon_update (momentum.lerp_(grad, 1 - beta),
    Nesterov grad.lerp_(momentum, beta), conv filters viewed as [out, -1], scaled by max(1,
    size(-2) / size(-1))^0.5 of the gradient); adam_update (buf1c / (buf2c.sqrt() + eps))."""

    def update(self, p, g, s, t, lr=0.02, momentum=0.95, weight_decay=0.0, nesterov=True, adam_lr=3e-4,
               adam_betas=(0.9, 0.95), adam_eps=1e-10, adam_weight_decay=0.0):
        if p.dim() >= 2:
            if not s:
                s["momentum_buffer"] = torch.zeros_like(p)
            buf = s["momentum_buffer"]
            buf.lerp_(g, 1 - momentum)
            upd = g.lerp(buf, momentum) if nesterov else buf.clone()
            if upd.dim() == 4:
                upd = upd.view(len(upd), -1)
            upd = newton_schulz5(upd) * max(1, g.size(-2) / g.size(-1)) ** 0.5
            p.mul_(1 - lr * weight_decay)
            return p.add(upd.reshape(p.shape), alpha=-lr)
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        b1, b2 = adam_betas
        s["exp_avg"].lerp_(g, 1 - b1)
        s["exp_avg_sq"].lerp_(g.square(), 1 - b2)
        upd = (s["exp_avg"] / (1 - b1 ** t)) / ((s["exp_avg_sq"] / (1 - b2 ** t)).sqrt() + adam_eps)
        p.mul_(1 - adam_lr * adam_weight_decay)
        return p.add(upd, alpha=-adam_lr)


class AdaGO(Reference):
    """optax's adago (DeepMind, 2025): 2-D parameters get scale_by_adago (mu = beta mu + (1 - beta)
    g, bias-corrected, orthogonalized by Newton-Schulz with eps 1e-8 after transposing to fewer rows,
    scaled by sqrt(max(1, fan_out / fan_in)); v_sq = v0² + sum min(|g|, gamma)²; step size
    max(min_step / lr, min(|g|, gamma) / sqrt(v_sq))), then add_decayed_weights and
    scale_by_learning_rate; the others optax.adamw. optax's layout is [in, out]; in PyTorch's
    [out, in] fan_in is size(1) and fan_out size(0)."""

    def update(self, p, g, s, t, lr=0.01, beta=0.95, gamma=1.0, min_step_size=1e-6, initial_accumulator_value=1.0,
               eps=1e-8, weight_decay=0.0, adam_b1=0.9, adam_b2=0.999, adam_weight_decay=0.0):
        if p.dim() == 2:
            if not s:
                s.update(mu=torch.zeros_like(p), v_sq=initial_accumulator_value ** 2)
            s["mu"] = (1 - beta) * g + beta * s["mu"]
            mu_hat = s["mu"] / (1 - beta ** t)
            o = newton_schulz5(mu_hat, eps=eps) * math.sqrt(max(1, p.size(0) / p.size(1)))
            n = min(float(g.norm()), gamma)
            s["v_sq"] = s["v_sq"] + n * n
            step = max(min_step_size / lr, n / math.sqrt(s["v_sq"]))
            return p - lr * (step * o + weight_decay * p)
        if not s:
            s.update(mu=torch.zeros_like(p), nu=torch.zeros_like(p))
        s["mu"] = (1 - adam_b1) * g + adam_b1 * s["mu"]
        s["nu"] = (1 - adam_b2) * g * g + adam_b2 * s["nu"]
        u = (s["mu"] / (1 - adam_b1 ** t)) / ((s["nu"] / (1 - adam_b2 ** t)).sqrt() + eps)
        return p - lr * (u + adam_weight_decay * p)


class MARS(Reference):
    """AGI-Arena/MARS mars.py, mars_type 'mars-adamw', is_approx True (last_grad is the previous
    step's gradient, zeros at first), optimize_1d False: 2-D parameters take MARS-AdamW, the
    others AdamW with lr_1d, betas_1d and weight_decay_1d."""

    def update(self, p, g, s, t, lr=3e-3, betas=(0.95, 0.99), eps=1e-8, weight_decay=0.0, gamma=0.025,
               lr_1d=3e-3, betas_1d=(0.9, 0.95), weight_decay_1d=0.1):
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p), last_grad=torch.zeros_like(p))
        exp_avg, exp_avg_sq = s["exp_avg"], s["exp_avg_sq"]
        if p.dim() == 2:
            b1, b2 = betas
            c_t = (g - s["last_grad"]).mul(gamma * (b1 / (1.0 - b1))).add(g)
            c_norm = torch.norm(c_t)
            if c_norm > 1.0:
                c_t = c_t / c_norm
            exp_avg.mul_(b1).add_(c_t, alpha=1.0 - b1)
            exp_avg_sq.mul_(b2).addcmul_(c_t, c_t, value=1.0 - b2)
            denom = exp_avg_sq.sqrt().mul(1 / math.sqrt(1.0 - b2 ** t)).add(eps).mul(1.0 - b1 ** t)
            new = p + (-lr * torch.mul(p, weight_decay).add(exp_avg.div(denom)))
        else:
            b1, b2 = betas_1d
            exp_avg.mul_(b1).add_(g, alpha=1.0 - b1)
            exp_avg_sq.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = exp_avg_sq.sqrt().mul(1 / math.sqrt(1.0 - b2 ** t)).add(eps).mul(1.0 - b1 ** t)
            new = p + (-lr * (lr_1d / lr) * torch.mul(p, weight_decay_1d).add(exp_avg.div(denom)))
        s["last_grad"] = g
        return new


class StableSPAM(Reference):
    """The authors' stablespam.py (StableSPAM.step), with the reset that the paper describes: every
    update_proj_gap steps the moments restart from zero and the step counter from 1 before the
    step's update (the code replaces the state tensors but updates the old ones in that step)."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, gamma1=0.7, gamma2=0.9,
               gamma3=0.999, total_T=None, eta_min=0.5, update_proj_gap=1000):
        theta = gamma3
        scale = 1.0
        if total_T is not None:  # CosineAnnealingLR(base 1, T_max = total_T + 1, eta_min) at step t
            scale = eta_min + (1 - eta_min) * (1 + math.cos(math.pi * t / (total_T + 1))) / 2
        p = p * (1 - lr * weight_decay)
        if not s:
            s.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p), m_norm_t=0, v_norm_t=0,
                     m_max_t=0)
        max_gradient = torch.max(g.abs())
        s["step"] += 1
        m_max_t = theta * s["m_max_t"] + (1 - theta) * max_gradient
        m_max_hat = m_max_t / (1 - theta ** s["step"])
        mask = g.abs() > m_max_hat
        if mask.sum() > 0:
            g[mask] = g[mask] / max_gradient * m_max_hat
        s["m_max_t"] = m_max_t
        grad_norm = torch.norm(g)
        m_norm_t = gamma1 * scale * s["m_norm_t"] + (1 - gamma1 * scale) * grad_norm
        v_norm_t = gamma2 * s["v_norm_t"] + (1 - gamma2) * grad_norm ** 2
        m_norm_hat = m_norm_t / (1 - (gamma1 * scale) ** s["step"])
        v_norm_hat = v_norm_t / (1 - gamma2 ** s["step"])
        c_norm_t = m_norm_hat / (torch.sqrt(v_norm_hat) + eps)
        if grad_norm > 0:
            g = g / grad_norm * c_norm_t
        s["m_norm_t"], s["v_norm_t"] = m_norm_t, v_norm_t
        if update_proj_gap != 0 and t % update_proj_gap == 0:
            s.update(exp_avg=torch.zeros_like(g), exp_avg_sq=torch.zeros_like(g), step=1)
        b1, b2 = betas
        b1 = b1 * scale
        bc1, bc2 = 1 - b1 ** s["step"], 1 - b2 ** s["step"]
        s["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (s["exp_avg_sq"].sqrt() / math.sqrt(bc2)).add_(eps)
        return p.add(s["exp_avg"] / denom, alpha=-lr / bc1)


class DoG(Reference):
    """formll/dog's DoG (layer_wise False) and LDoG (True): rbar = reps_rel (1 + |x0|) at the first
    step, then max(rbar, |x - x0|); G = eps + sum of |g|² over the steps; eta = lr rbar / sqrt(G);
    p -= eta g. Norms over the whole group (DoG) or per tensor (LDoG)."""

    def __init__(self, params, layer_wise=False, **hp):
        super().__init__(params, **hp)
        self.layer_wise = layer_wise

    def step_all(self, t, reps_rel=1e-6, lr=1.0, weight_decay=0.0, eps=1e-8):
        hp = dict(reps_rel=reps_rel, lr=lr, weight_decay=weight_decay, eps=eps)
        hp.update(self.hp)
        ps = self.params
        grads = [p.grad + hp["weight_decay"] * p for p in ps]
        if t == 1:
            self.init = [p.detach().clone() for p in ps]
            norms = torch.stack([p.norm() for p in ps])
            self.rbar = hp["reps_rel"] * (1 + (norms if self.layer_wise else norms.norm()))
            g2 = torch.stack([(g ** 2).sum() for g in grads])
            self.G = (g2 if self.layer_wise else g2.sum()) + hp["eps"]
        else:
            d = torch.stack([torch.norm(p - p0) for p, p0 in zip(ps, self.init)])
            self.rbar = torch.maximum(self.rbar, d if self.layer_wise else d.norm())
            g2 = torch.stack([(g ** 2).sum() for g in grads])
            self.G = self.G + (g2 if self.layer_wise else g2.sum())
        eta = hp["lr"] * self.rbar / torch.sqrt(self.G)
        for i, (p, g) in enumerate(zip(ps, grads)):
            p.add_(g * -(eta[i] if self.layer_wise else eta))


class Prodigy(Reference):
    """konstmish/prodigy prodigy.py (slice_p 1, one parameter group)."""

    def step_all(self, t):
        hp = dict(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.0, decouple=True,
                  use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0, growth_rate=float("inf"))
        hp.update(self.hp)
        b1, b2 = hp["betas"]
        beta3 = hp["beta3"] if hp["beta3"] is not None else math.sqrt(b2)
        lr, d0 = hp["lr"], hp["d0"]
        if t == 1:
            self.d, self.d_max, self.d_numerator = d0, d0, 0.0
        d, d_max = self.d, self.d_max
        k = t - 1
        bias_correction = ((1 - b2 ** (k + 1)) ** 0.5) / (1 - b1 ** (k + 1)) if hp["use_bias_correction"] else 1
        dlr = d * lr * bias_correction
        d_numerator = self.d_numerator * beta3
        d_denom = 0.0
        for p, s in zip(self.params, self.state):
            grad = p.grad
            if hp["weight_decay"] != 0 and not hp["decouple"]:
                grad = grad + hp["weight_decay"] * p
            if not s:
                s.update(s=torch.zeros_like(p).flatten(), p0=p.detach().clone().flatten(),
                         exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            s["grad"] = grad
            d_numerator += (d / d0) * dlr * torch.dot(grad.flatten(), s["p0"] - p.flatten()).item()
            s["exp_avg"].mul_(b1).add_(grad, alpha=d * (1 - b1))
            s["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=d * d * (1 - b2))
            if hp["safeguard_warmup"]:
                s["s"].mul_(beta3).add_(grad.flatten(), alpha=(d / d0) * d)
            else:
                s["s"].mul_(beta3).add_(grad.flatten(), alpha=(d / d0) * dlr)
            d_denom += s["s"].abs().sum().item()
        if d_denom == 0:
            return
        d_hat = hp["d_coef"] * d_numerator / d_denom
        if d == d0:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * hp["growth_rate"])
        self.d, self.d_max, self.d_numerator = d, d_max, d_numerator
        for p, s in zip(self.params, self.state):
            denom = s["exp_avg_sq"].sqrt().add_(d * hp["eps"])
            if hp["weight_decay"] != 0 and hp["decouple"]:
                p.add_(p, alpha=-hp["weight_decay"] * dlr)
            p.addcdiv_(s["exp_avg"], denom, value=-dlr)


class DAdaptAdam(Reference):
    """facebookresearch/dadaptation dadapt_adam.py (version 3: numerator over <g, s / (sqrt(v) +
    eps)> before the update, sqrt(beta2) for s and the numerator; layer_scale 1)."""

    def step_all(self, t):
        hp = dict(lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decouple=False, use_bias_correction=False,
                  d0=1e-6, growth_rate=float("inf"))
        hp.update(self.hp)
        b1, b2 = hp["betas"]
        if t == 1:
            self.d, self.numerator_weighted = hp["d0"], 0.0
        d, k = self.d, t - 1
        bias_correction = ((1 - b2 ** (k + 1)) ** 0.5) / (1 - b1 ** (k + 1)) if hp["use_bias_correction"] else 1
        dlr = d * hp["lr"] * bias_correction
        sqrt_beta2 = b2 ** 0.5
        numerator_acum, sk_l1 = 0.0, 0.0
        for p, s in zip(self.params, self.state):
            grad = p.grad
            if hp["weight_decay"] != 0 and not hp["decouple"]:
                grad = grad + hp["weight_decay"] * p
            if not s:
                s.update(s=torch.zeros_like(p), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            denom = s["exp_avg_sq"].sqrt().add(hp["eps"])
            numerator_acum += dlr * torch.dot(grad.flatten(), s["s"].div(denom).flatten()).item()
            s["exp_avg"].mul_(b1).add_(grad, alpha=dlr * (1 - b1))
            s["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            s["s"].mul_(sqrt_beta2).add_(grad, alpha=dlr * (1 - sqrt_beta2))
            sk_l1 += s["s"].abs().sum().item()
        if sk_l1 == 0:
            return
        self.numerator_weighted = sqrt_beta2 * self.numerator_weighted + (1 - sqrt_beta2) * numerator_acum
        d_hat = self.numerator_weighted / ((1 - sqrt_beta2) * sk_l1)
        self.d = max(d, min(d_hat, d * hp["growth_rate"]))
        for p, s in zip(self.params, self.state):
            denom = s["exp_avg_sq"].sqrt().add(hp["eps"])
            if hp["weight_decay"] != 0 and hp["decouple"]:
                p.add_(p, alpha=-hp["weight_decay"] * dlr)
            p.addcdiv_(s["exp_avg"], denom, value=-1)


class ADOPT(Reference):
    """iShohei220/adopt adopt.py (_single_tensor_adopt; the step counted from 0, clip_lambda(step) =
    step**0.25)."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, clip_lambda=lambda step: step ** 0.25,
               weight_decay=0.0, decouple=False):
        b1, b2 = betas
        step = t - 1
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        if weight_decay != 0 and not decouple:
            g = g.add(p, alpha=weight_decay)
        if step == 0:
            s["exp_avg_sq"].addcmul_(g, g)
            return p
        if weight_decay != 0 and decouple:
            p.add_(p, alpha=-lr * weight_decay)
        denom = torch.clamp(s["exp_avg_sq"].sqrt(), eps)
        normed = g.div(denom)
        if clip_lambda is not None:
            clip = clip_lambda(step)
            normed.clamp_(-clip, clip)
        s["exp_avg"].lerp_(normed, 1 - b1)
        p.add_(s["exp_avg"], alpha=-lr)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        return p


class Signum(Reference):
    """MXNet's Signum (the authors' implementation of Algorithm 3): rescaled_grad = grad + wd w;
    state = momentum state + (1 - momentum) rescaled_grad; w = (1 - lr wd_lh) w - lr sign(state)."""

    def update(self, p, g, s, t, lr=0.01, momentum=0.9, wd=0.0, wd_lh=0.0):
        if not s:
            s["mom"] = torch.zeros_like(p)
        s["mom"] = momentum * s["mom"] + (1 - momentum) * (g + wd * p)
        return (1 - lr * wd_lh) * p - lr * torch.sign(s["mom"])


class LaProp(Reference):
    """Z-T-WANG/LaProp-Optimizer laprop.py (not centered, no amsgrad)."""

    def update(self, p, g, s, t, lr=4e-4, betas=(0.9, 0.999), eps=1e-15, weight_decay=0.0):
        b1, b2 = betas
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p), lr_1=0.0, lr_2=0.0)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        s["lr_1"] = s["lr_1"] * b1 + (1 - b1) * lr
        s["lr_2"] = s["lr_2"] * b2 + (1 - b2)
        step_size = 1 / (s["lr_1"] / lr if lr != 0 else 1.0)
        denom = s["exp_avg_sq"].div(s["lr_2"]).sqrt().add(eps)
        s["exp_avg"].mul_(b1).add_(g / denom, alpha=(1 - b1) * lr)
        p.add_(s["exp_avg"], alpha=-step_size)
        if weight_decay != 0:
            p.add_(p, alpha=-weight_decay)
        return p


class Adan(Reference):
    """sail-sg/Adan adan.py, _single_tensor_adan (no global clipping)."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False):
        b1, b2, b3 = betas
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p), exp_avg_diff=torch.zeros_like(p))
        if t == 1:
            s["neg_pre_grad"] = -g.clone()
        neg = s["neg_pre_grad"]
        neg.add_(g)
        s["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        s["exp_avg_diff"].mul_(b2).add_(neg, alpha=1 - b2)
        neg.mul_(b2).add_(g)
        s["exp_avg_sq"].mul_(b3).addcmul_(neg, neg, value=1 - b3)
        denom = (s["exp_avg_sq"].sqrt() / math.sqrt(1 - b3 ** t)).add_(eps)
        step_size_diff = lr * b2 / (1 - b2 ** t)
        step_size = lr / (1 - b1 ** t)
        if no_prox:
            p.mul_(1 - lr * weight_decay)
            p.addcdiv_(s["exp_avg"], denom, value=-step_size)
            p.addcdiv_(s["exp_avg_diff"], denom, value=-step_size_diff)
        else:
            p.addcdiv_(s["exp_avg"], denom, value=-step_size)
            p.addcdiv_(s["exp_avg_diff"], denom, value=-step_size_diff)
            p.div_(1 + lr * weight_decay)
        neg.zero_().add_(g, alpha=-1.0)
        return p


class AdamAtan2(Reference):
    """lucidrains/adam-atan2-pytorch AdamAtan2 (the update a atan2(exp_avg / bc1, b sqrt(exp_avg_sq /
    bc2)), decoupled weight decay p *= 1 - lr wd), which is Everett et al.'s formula."""

    def update(self, p, g, s, t, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, a=1.27, b=1.0):
        b1, b2 = betas
        if weight_decay > 0:
            p.mul_(1.0 - lr * weight_decay)
        if not s:
            s.update(exp_avg=torch.zeros_like(g), exp_avg_sq=torch.zeros_like(g))
        s["exp_avg"].lerp_(g, 1.0 - b1)
        s["exp_avg_sq"].lerp_(g * g, 1.0 - b2)
        den = s["exp_avg_sq"].mul(b * b / (1.0 - b2 ** t)).sqrt()
        update = s["exp_avg"].mul(1.0 / (1.0 - b1 ** t)).atan2(den)
        return p.add(update, alpha=-lr * a)


class AdaMomentum(Reference):
    """AdaMomentum as the AdaFamily code (myu = 1, epsilon_mode 0) that adapts the authors'
    implementation: exp_avg_var = b2 exp_avg_var + (1 - b2) exp_avg²; exp_avg_var += eps (kept);
    denom = sqrt(exp_avg_var) / sqrt(bc2); p -= lr / bc1 exp_avg / denom; decoupled decay."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        b1, b2 = betas
        p.mul_(1.0 - lr * weight_decay)
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_var=torch.zeros_like(p))
        s["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
        s["exp_avg_var"].mul_(b2).addcmul_(s["exp_avg"], s["exp_avg"], value=1 - b2)
        denom = s["exp_avg_var"].add_(eps).sqrt() / math.sqrt(1 - b2 ** t)
        return p.addcdiv(s["exp_avg"], denom, value=-lr / (1 - b1 ** t))


class Gravity(Reference):
    """The authors' Keras Gravity (iterations counted from 0: beta_hat = (beta it + 1) / (it + 2)),
    with the velocity starting at v0 (the code draws it from N(0, (alpha / lr)²))."""

    def __init__(self, params, v0=None, **hp):
        super().__init__(params, **hp)
        self.v0 = v0

    def update(self, p, g, s, t, lr=0.1, beta=0.9):
        if not s:
            i = len([x for x in self.state if x])
            s["v"] = self.v0[i].clone() if self.v0 is not None else torch.zeros_like(p)
        it = t - 1
        beta_hat = (beta * it + 1) / (it + 2)
        max_step_grad = 1 / torch.max(torch.abs(g))
        s["v"] = beta_hat * s["v"] + (1 - beta_hat) * g / (1 + (g / max_step_grad) ** 2)
        return p - lr * s["v"]


def _cautious_mask(update, grad):
    mask = (update * grad > 0).to(grad.dtype)
    return mask * (mask.numel() / (mask.sum() + 1))


class CautiousAdamW(Reference):
    """kyleliang919/C-Optim's AdamW (Hugging Face AdamW with the cautious mask)."""

    def update(self, p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        b1, b2 = betas
        if not s:
            s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        if weight_decay > 0.0:
            p.add_(p, alpha=-lr * weight_decay)
        s["exp_avg"].mul_(b1).add_(g, alpha=1.0 - b1)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1.0 - b2)
        denom = s["exp_avg_sq"].sqrt().add_(eps)
        step_size = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        norm_grad = (s["exp_avg"] * _cautious_mask(s["exp_avg"], g)) / denom
        return p.add(norm_grad, alpha=-step_size)


class CautiousLion(Reference):
    """C-Optim's CautiousLion update_fn."""

    def update(self, p, g, s, t, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        b1, b2 = betas
        if not s:
            s["exp_avg"] = torch.zeros_like(p)
        p.mul_(1 - lr * weight_decay)
        update = s["exp_avg"].clone().mul_(b1).add(g, alpha=1 - b1).sign_()
        p.add_(update * _cautious_mask(update, g), alpha=-lr)
        s["exp_avg"].mul_(b2).add_(g, alpha=1 - b2)
        return p


class Lookahead:
    """michaelrzhang/lookahead's Lookahead around a torch optimizer: the slow weights cached at
    construction; every la_steps steps p = alpha p + (1 - alpha) cache; cache = p."""

    def __init__(self, optimizer, la_steps=5, la_alpha=0.5):
        self.optimizer, self.k, self.alpha, self.count = optimizer, la_steps, la_alpha, 0
        self.cache = [p.detach().clone() for gr in optimizer.param_groups for p in gr["params"]]

    def zero_grad(self):
        self.optimizer.zero_grad()

    @torch.no_grad()
    def step(self):
        self.optimizer.step()
        params = [p for gr in self.optimizer.param_groups for p in gr["params"]]
        self.count += 1
        if self.count >= self.k:
            self.count = 0
            for p, c in zip(params, self.cache):
                p.mul_(self.alpha).add_(c, alpha=1.0 - self.alpha)
                c.copy_(p)


class Transformed:
    """A gradient transform applied to every parameter's gradient (f(p, grad) in PyTorch's layout)
    before a torch optimizer's step."""

    def __init__(self, optimizer, params, fn):
        self.optimizer, self.params, self.fn = optimizer, list(params), fn

    def zero_grad(self):
        self.optimizer.zero_grad()

    @torch.no_grad()
    def step(self):
        for p in self.params:
            p.grad = self.fn(p, p.grad)
        self.optimizer.step()


def unitwise_norm(x):
    """deepmind nfnets' unitwise_norm for PyTorch layouts: vectors whole; a linear weight [out, in]
    per output row (the JAX code's axis 0 of [in, out]); a convolution [out, in, kh, kw] per output
    filter (the JAX code's axes 0, 1, 2 of HWIO)."""
    if x.dim() <= 1:
        return x.norm()
    return x.flatten(1).norm(dim=1).view([-1] + [1] * (x.dim() - 1))


def agc(clipping, eps=1e-3):
    """deepmind nfnets' my_clip (adaptive gradient clipping)."""
    def clip(p, g):
        max_norm = torch.clamp(unitwise_norm(p), min=eps) * clipping
        grad_norm = unitwise_norm(g)
        clipped = g * (max_norm / torch.clamp(grad_norm, min=1e-6))
        return torch.where(grad_norm < max_norm, g, clipped)
    return clip


def centralize(p, g):
    """Yonghongwei/Gradient-Centralization centralized_gradient (gc_conv_only False): for tensors
    with more than one axis, subtract the mean over every axis but the first (output) one."""
    if g.dim() > 1:
        g = g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
    return g


def clip_coordinates(fraction):
    """Coordinate-wise clipping of the largest fraction of |g| per tensor: the floor(fraction n)
    largest magnitudes are clipped to the next largest one, from a sort."""
    def clip(p, g):
        a = g.abs().flatten().sort(descending=True).values
        k = int(math.floor(fraction * a.numel()))
        tau = a[min(k, a.numel() - 1)]
        return g.clamp(-tau, tau)
    return clip


class DecoupledDecaySGD(Reference):
    """SGD (torch.optim.SGD's momentum form) after a decoupled decay p *= 1 - wd_lr wd."""

    def update(self, p, g, s, t, lr=0.1, momentum=0.9, wd=1e-2, wd_lr=0.1):
        p = p * (1 - wd_lr * wd)
        s["buf"] = g.clone() if t == 1 else momentum * s["buf"] + g
        return p - lr * s["buf"]


class Ranger21(Reference):
    """lessw2020/Ranger21 ranger21.py (AdamW core, pnm momentum, defaults on) with two fixes: the
    stable weight decay reaches every parameter and the norm loss every weight with two or more
    axes (the code applies both to the last parameter of its loop only), and the PNM noise norm
    uses the pnm factor (the code has beta2 there). As the code, the gradient goes through AGC,
    centralization and normalization twice (phase 1 in place, again in phase 2)."""

    def __init__(self, params, total_steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4,
                 agc_clipping_value=1e-2, agc_eps=1e-3, beta_softplus=50, pnm_momentum_factor=1.0,
                 normloss_factor=1e-4, lookahead_mergetime=5, lookahead_blending_alpha=0.5,
                 num_warmup_iterations=None, warmdown_start_pct=0.72, warmdown_min_lr=3e-5):
        super().__init__(params)
        self.__dict__.update(locals())
        del self.__dict__["self"]
        self.params = list(params)
        if num_warmup_iterations is None:
            beta_warmup_iters = math.ceil(2 / (1 - betas[1]))
            if beta_warmup_iters / total_steps > 0.45:
                self.num_warmup_iters = int(0.22 * total_steps)
            else:
                self.num_warmup_iters = beta_warmup_iters
        else:
            self.num_warmup_iters = num_warmup_iterations
        self.start_warm_down = int(warmdown_start_pct * total_steps)
        self.warmdown_total_iterations = total_steps - self.start_warm_down
        self.lookahead_step = 0

    @staticmethod
    def unit_norm(x):
        if x.dim() <= 1:
            return x.norm()
        dim = 1 if x.dim() in (2, 3) else tuple(range(1, x.dim()))
        return x.pow(2).sum(dim=dim, keepdim=True).sqrt()

    def agc(self, p, g):
        p_norm = self.unit_norm(p).clamp(self.agc_eps)
        g_norm = self.unit_norm(g)
        max_norm = p_norm * self.agc_clipping_value
        clipped = g * (max_norm / g_norm.clamp(min=1e-6))
        return torch.where(g_norm > max_norm, clipped, g)

    @staticmethod
    def centralize_normalize(g):
        if g.dim() > 1:
            g = g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
        if g.numel() > 2:
            g = g / (g.std() + 1e-8)
        return g

    def step_all(self, t):
        b1, b2 = self.betas
        param_size, variance_ma_sum = 0, 0.0
        grads = []
        for p, s in zip(self.params, self.state):
            param_size += p.numel()
            g = self.centralize_normalize(self.agc(p, p.grad))
            if not s:
                s.update(grad_ma=torch.zeros_like(p), variance_ma=torch.zeros_like(p),
                         neg_grad_ma=torch.zeros_like(p), lookahead_params=p.detach().clone())
            s["variance_ma"].mul_(b2).addcmul_(g, g, value=1 - b2)
            variance_ma_sum += (s["variance_ma"] / (1 - b2 ** t)).sum()
            grads.append(g)
        variance_normalized = math.sqrt(variance_ma_sum / param_size)
        lr = self.lr
        if t <= self.num_warmup_iters:
            lr = lr * min(1.0, t / self.num_warmup_iters)
        if t >= self.start_warm_down:
            pct = min(1.0, (t + 1 - self.start_warm_down) / (self.warmdown_total_iterations + 1))
            lr = max(self.lr - (self.lr - self.warmdown_min_lr) * pct, self.warmdown_min_lr)
        for p, s, g in zip(self.params, self.state, grads):
            p.mul_(1 - self.weight_decay * lr / variance_normalized)
            if p.dim() >= 2:
                unorm = self.unit_norm(p)
                p.mul_(1 - lr * 2 * self.normloss_factor * (1 - 1 / (unorm + self.eps)))
            g = self.centralize_normalize(g)
            if t % 2 == 1:
                grad_ma, neg_grad_ma = s["grad_ma"], s["neg_grad_ma"]
            else:
                grad_ma, neg_grad_ma = s["neg_grad_ma"], s["grad_ma"]
            denom = (s["variance_ma"].sqrt() / math.sqrt(1 - b2 ** t)).add(self.eps)
            grad_ma.mul_(b1 ** 2).add_(g, alpha=1 - b1 ** 2)
            pnm = self.pnm_momentum_factor
            noise_norm = math.sqrt((1 + pnm) ** 2 + pnm ** 2)
            denom = F.softplus(denom, beta=self.beta_softplus)
            pnmomentum = grad_ma.mul(1 + pnm).add(neg_grad_ma, alpha=-pnm).mul(1 / noise_norm)
            p.addcdiv_(pnmomentum, denom, value=-lr / (1 - b1 ** t))
        self.lookahead_step += 1
        if self.lookahead_step >= self.lookahead_mergetime:
            self.lookahead_step = 0
            for p, s in zip(self.params, self.state):
                p.mul_(self.lookahead_blending_alpha).add_(s["lookahead_params"],
                                                           alpha=1.0 - self.lookahead_blending_alpha)
                s["lookahead_params"].copy_(p)


class Scheduled:
    """A torch optimizer and a torch learning-rate scheduler stepped after it."""

    def __init__(self, optimizer, make_scheduler):
        self.optimizer, self.scheduler = optimizer, make_scheduler(optimizer)

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        self.optimizer.step()
        self.scheduler.step()


class TwoPass:
    """Rules that take the gradient at other weights within the step: the harness gives
    `closure`, which recomputes the loss and every p.grad at the parameters as they are. gradient()
    computes the final gradient from the weights and the first gradient; the base torch optimizer
    then steps the original weights with it (restored exactly, as davda54/sam keeps old_p)."""

    def __init__(self, base, params):
        self.base, self.params, self.closure = base, list(params), None

    def zero_grad(self):
        self.base.zero_grad()

    @torch.no_grad()
    def grad_at(self, shift):
        """The gradient of the batch at p + shift[i] for every parameter, the weights restored."""
        old = [p.detach().clone() for p in self.params]
        for p, e in zip(self.params, shift):
            p.add_(e)
        with torch.enable_grad():
            self.closure()
        grads = [p.grad.detach().clone() for p in self.params]
        for p, o in zip(self.params, old):
            p.copy_(o)
        return grads

    @torch.no_grad()
    def step(self):
        g = [p.grad.detach().clone() for p in self.params]
        final = self.gradient(g)
        for p, f in zip(self.params, final):
            p.grad = f
        self.base.step()


def _norm(xs):
    return torch.sqrt(sum((x * x).sum() for x in xs))


class SAM(TwoPass):
    """davda54/sam SAM.first_step / second_step: e_w = rho g / (|g| + 1e-12) (adaptive: the code's
    ASAM, not used here), the base step with the gradient at w + e_w."""

    def __init__(self, base, params, rho=0.05):
        super().__init__(base, params)
        self.rho = rho

    def gradient(self, g):
        scale = self.rho / (_norm(g) + 1e-12)
        return self.grad_at([x * scale for x in g])


class ASAM(TwoPass):
    """SamsungLabs/ASAM ascent_step: for the parameters named "weight" (here every one but the
    biases, `is_bias`), T = |w| + eta and the gradient is multiplied by T; the norm of those over
    all parameters plus 1e-16; the perturbation is T (T g) rho / norm."""

    def __init__(self, base, params, is_bias, rho=0.5, eta=0.01):
        super().__init__(base, params)
        self.rho, self.eta, self.is_bias = rho, eta, is_bias

    def gradient(self, g):
        t_w = [torch.ones_like(p) if b else p.abs() + self.eta for p, b in zip(self.params, self.is_bias)]
        tg = [x * t for x, t in zip(g, t_w)]
        wgrad_norm = _norm(tg) + 1e-16
        return self.grad_at([t * x * (self.rho / wgrad_norm) for x, t in zip(tg, t_w)])


class SAMON(TwoPass):
    """SAM-ON (mueller-mp/SAM-ON, only_bn): SAM over the normalization parameters only."""

    def __init__(self, base, params, is_norm, rho=0.05):
        super().__init__(base, params)
        self.rho, self.is_norm = rho, is_norm

    def gradient(self, g):
        gn = [x if n else torch.zeros_like(x) for x, n in zip(g, self.is_norm)]
        scale = self.rho / (_norm(gn) + 1e-12)
        return self.grad_at([x * scale for x in gn])


class GSAM(TwoPass):
    """juntang-zhuang/GSAM: perturb_weights (rho / (|g| + 1e-12)), then gradient_decompose: vertical
    = old_g - cosine |old_g| g_s / (|g_s| + 1e-12), cosine = <old_g, g_s> / (|g_s| |old_g| + 1e-12);
    grad = g_s - alpha vertical."""

    def __init__(self, base, params, rho=0.05, alpha=0.4):
        super().__init__(base, params)
        self.rho, self.alpha = rho, alpha

    def gradient(self, g):
        scale = self.rho / (_norm(g) + 1e-12)
        gs = self.grad_at([x * scale for x in g])
        inner = sum((a * b).sum() for a, b in zip(g, gs))
        new_norm, old_norm = _norm(gs), _norm(g)
        cosine = inner / (new_norm * old_norm + 1e-12)
        return [b - self.alpha * (a - cosine * old_norm * b / (new_norm + 1e-12)) for a, b in zip(g, gs)]


class GAM(TwoPass):
    """xxgege/GAM gam.py GAM.step (adaptive False): g_0; g_1 at w + e_w_0 (grad_rho); g_2 at w +
    e_w_1_2 (grad_norm_rho along g_1 - g_0); g_3 at w + e_w_1_2 + grad_rho g_2 / |g_2|;
    gradient_decompose with pro_m = g_0 + |beta_2| g_2, grad = beta_1 g_1 + beta_3 g_3, beta_2 =
    1 - beta_0, beta_3 = 1 - beta_1 (main_cifar.py)."""

    def __init__(self, base, params, grad_rho=0.03, grad_norm_rho=0.2, beta0=0.1, beta1=0.1, gamma=0.05):
        super().__init__(base, params)
        self.grad_rho, self.grad_norm_rho, self.gamma = grad_rho, grad_norm_rho, gamma
        self.beta_1, self.beta_2, self.beta_3 = beta1, 1 - beta0, 1 - beta1

    def gradient(self, g0):
        eps = 1e-12
        e0 = [x * (self.grad_rho / (_norm(g0) + eps)) for x in g0]
        g1 = self.grad_at(e0)
        d = [a - b for a, b in zip(g1, g0)]
        e12 = [x * (self.grad_norm_rho / (_norm(d) + eps)) for x in d]
        g2 = self.grad_at(e12)
        e12 = [e + x * (self.grad_rho / (_norm(g2) + eps)) for e, x in zip(e12, g2)]
        g3 = self.grad_at(e12)
        pro_m = [a + abs(self.beta_2) * b for a, b in zip(g0, g2)]
        grad = [self.beta_1 * a + self.beta_3 * b for a, b in zip(g1, g3)]
        inner = sum((a * b).sum() for a, b in zip(pro_m, grad))
        new_norm, old_norm = _norm(grad), _norm(pro_m)
        cosine = inner / (new_norm * old_norm + eps)
        return [b - self.gamma * (a - cosine * old_norm * b / (new_norm + eps)) for a, b in zip(pro_m, grad)]


class GradReg(TwoPass):
    """Karakida et al. 2023, forward finite difference: (1 - gamma / eps) g + gamma / eps grad(w +
    eps g)."""

    def __init__(self, base, params, gamma=0.01, eps=0.01):
        super().__init__(base, params)
        self.gamma, self.eps = gamma, eps

    def gradient(self, g):
        ge = self.grad_at([x * self.eps for x in g])
        k = self.gamma / self.eps
        return [(1 - k) * a + k * b for a, b in zip(g, ge)]


class MARSExact(MARS):
    """MARS with the exact difference (Algorithm 1 of the paper): c = g + gamma b1 / (1 - b1) (g -
    grad f(x_{t-1}, xi_t)), the second gradient of the same batch at the previous weights, and c = g
    at the first step (x_0 = x_1); otherwise mars.py's update_fn, as MARS."""

    closure = None

    @torch.no_grad()
    def step_all(self, t):
        params = self.params
        if t == 1:
            self.prev = [p.detach().clone() for p in params]
        g = [p.grad.detach().clone() for p in params]
        now = [p.detach().clone() for p in params]
        for p, q in zip(params, self.prev):
            p.copy_(q)
        with torch.enable_grad():
            self.closure()
        g_old = [p.grad.detach().clone() for p in params]
        for p, q in zip(params, now):
            p.copy_(q)
        self.prev = now
        for p, s, gi, go in zip(params, self.state, g, g_old):
            if not s:
                s.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            s["last_grad"] = go  # so that MARS's c = g + gamma b1 / (1 - b1) (g - g_old)
            p.copy_(self.update(p.detach().clone(), gi, s, t, **self.hp))


class ScheduleFree(Reference):
    """facebookresearch/schedule_free sgd_schedulefree_reference.py (adam False) and
    adamw_schedulefree_reference.py (adam True): state z, x, y; p = y; evaluation at x."""

    def __init__(self, params, adam=False, **hp):
        super().__init__(params, **hp)
        self.adam, self.k, self.lr_max, self.weight_sum = adam, 0, -1.0, 0.0

    def eval_params(self):
        return [s["x"] for s in self.state]

    def step_all(self, t):
        hp = dict(lr=0.0025 if self.adam else 1.0, betas=(0.9, 0.999), momentum=0.9, eps=1e-8, weight_decay=0.0,
                  warmup_steps=0, r=0.0, weight_lr_power=2.0)
        hp.update(self.hp)
        k = self.k
        sched = (k + 1) / hp["warmup_steps"] if k < hp["warmup_steps"] else 1.0
        beta1, beta2 = hp["betas"]
        lr = hp["lr"] * sched * (math.sqrt(1 - beta2 ** (k + 1)) if self.adam else 1.0)
        self.lr_max = lr_max = max(lr, self.lr_max)
        weight = ((k + 1) ** hp["r"]) * (lr_max ** hp["weight_lr_power"])
        self.weight_sum += weight
        ckp1 = weight / self.weight_sum if self.weight_sum else 0.0
        for p, s in zip(self.params, self.state):
            grad = p.grad.clone()
            if not s:
                s.update(z=p.detach().clone(), x=p.detach().clone(), y=p.detach().clone(),
                         exp_avg_sq=torch.zeros_like(p))
            z, x, y = s["z"], s["x"], s["y"]
            if self.adam:
                if hp["weight_decay"] != 0:
                    z.sub_(y, alpha=lr * hp["weight_decay"])
                s["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                z.addcdiv_(grad, s["exp_avg_sq"].sqrt().add_(hp["eps"]), value=-lr)
                momentum = beta1
            else:
                if hp["weight_decay"] != 0:
                    grad.add_(y, alpha=hp["weight_decay"])
                z.sub_(grad, alpha=lr)
                momentum = hp["momentum"]
            x.mul_(1 - ckp1).add_(z, alpha=ckp1)
            y.copy_(x.mul(momentum).add_(z, alpha=1 - momentum))
            p.copy_(y)
        self.k = k + 1


class Averaged:
    """A torch optimizer followed by torch.optim.swa_utils.AveragedModel.update_parameters after
    every step (avg_fn None: the equal average; or an EMA), from step `start` on; evaluation at the
    average (before `start`: the weights)."""

    def __init__(self, optimizer, params, avg_fn=None, start=1):
        self.optimizer, self.params, self.start, self.t = optimizer, list(params), start, 0
        holder = torch.nn.Module()
        holder.ps = torch.nn.ParameterList([torch.nn.Parameter(p.detach(), requires_grad=False) for p in self.params])
        self.holder = holder
        self.avg = torch.optim.swa_utils.AveragedModel(holder, avg_fn=avg_fn)

    def zero_grad(self):
        self.optimizer.zero_grad()

    @torch.no_grad()
    def step(self):
        self.optimizer.step()
        self.t += 1
        for hp, p in zip(self.holder.ps, self.params):
            hp.copy_(p)
        if self.t >= self.start:
            self.avg.update_parameters(self.holder)

    def eval_params(self):
        if self.t < self.start:
            return self.params
        return list(self.avg.module.ps)


class PolyAveraged(Averaged):
    """formll/dog's PolynomialDecayAverager (gamma 8) after every step of a base optimizer."""

    def __init__(self, optimizer, params, gamma=8.0):
        self.optimizer, self.params, self.gamma, self.t = optimizer, list(params), gamma, 1
        self.av = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def step(self):
        self.optimizer.step()
        w = (self.gamma + 1) / (self.gamma + self.t)
        for a, p in zip(self.av, self.params):
            a.mul_(1 - w).add_(p, alpha=w)
        self.t += 1

    def eval_params(self):
        return self.av
