#!/usr/bin/python3
"""Trajectories: std.optim's newer rules and transforms against independent references.

Each case trains a small network with nmlc from weights this script writes, full batch (one step
per epoch, so that shuffling cannot matter), for STEPS = 20 steps, and runs the same steps with the
reference from the same weights on the same rows (the first n - round(0.1 n), which npy() trains
on). The reference is torch.optim where it has the method, else a transcription of the paper or of
its authors' code in references.py, written from those sources and not from stdlib/optim.nml; it
works on PyTorch's layout (a linear weight [out, in]), the layout the official code assumes, so
that the tests also check how std.optim maps "output unit" and "matrix" onto NML's [in, out].

Three models: "mlp", Linear(6, 8), tanh, Linear(8, 3) on tests/data/blobs (matrices 6x8 and 8x3,
so that Muon's Newton-Schulz runs in both orientations); "mlp-ln", the same with a LayerNorm after
the first layer (for SAM-ON's normalization parameters); "conv", Conv2d(2, 3, 3), tanh, flatten,
Linear(75, 3) on tests/data/img (a 4-axis weight for the per-channel rules).

The rules that take gradients at other weights (the SAM family, MARS exact) get, in the reference,
the harness's closure, which recomputes the batch's gradients at the parameters as they are; the
rules with evaluation weights (schedule-free, averages) are compared on those too: nmlc saves them
as <param>.eval, the reference gives eval_params().

The tolerance. nmlc computes in f32, in its own order of summation; the reference runs twice, in
f32 and in f64 from the same f32 start. The f32-f64 difference of the reference ("floor", printed
for every case) is what rounding alone does to the trajectory; nmlc against the f32 reference
must agree within rtol 1e-4, atol 1e-5 elementwise (as tests/oracle), and every case reports both
numbers and how far the weights moved. Measured when written: nmlc against the f32 reference at
most 8.7e-6 (median 1.5e-7); floors 6e-8 to 7e-6, the largest for Muon (Newton-Schulz amplifies
rounding), except Prodigy's, whose d feeds back on itself (6e-4 at lr 0.5: that case states its
own tolerance).

Usage: trajectory.py NMLC [PREFIX...]   (only the cases whose name starts with a PREFIX)
"""
import math
import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
import oracle  # noqa: E402  (exits 77, skipped, when numpy or torch is missing)
from oracle import np, torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, HERE)
import references as R  # noqa: E402

STEPS = 20
RTOL, ATOL = 1e-4, 1e-5
DATA = oracle.DATA

MODELS = {
    "mlp": ("""layer Net() {
  l1 = Linear(6, 8)
  l2 = Linear(8, 3)
  forward(x) = l2(tanh(l1(x)))
}""", "blobs_x", "blobs_y", {"l1.w": (6, 8), "l1.b": (8,), "l2.w": (8, 3), "l2.b": (3,)}),
    "mlp-ln": ("""layer Net() {
  l1 = Linear(6, 8)
  ln = LayerNorm(8)
  l2 = Linear(8, 3)
  forward(x) = l2(tanh(ln(l1(x))))
}""", "blobs_x", "blobs_y", {"l1.w": (6, 8), "l1.b": (8,), "ln.gamma": (8,), "ln.beta": (8,), "l2.w": (8, 3),
                            "l2.b": (3,)}),
    "conv": ("""layer Net() {
  conv = Conv2d(2, 3, 3)
  fc = Linear(75, 3)
  forward(x) = fc(flatten(tanh(conv(x))))
}""", "img_x", "img_y", {"conv.w": (3, 2, 3, 3), "conv.b": (3,), "fc.w": (75, 3), "fc.b": (3,)}),
}

NML = """use std.nn
use std.optim
use std.sched

{layer}

train {{
  data      = npy("{x}", "{y}")
  model     = Net()
  loss      = cross_entropy(model(x), y)
  optimizer = {opt}
  batch     = 128
}}
"""


def to_torch(name, a):
    """NML layout to PyTorch's: a linear weight [in, out] becomes [out, in]."""
    return a.T.copy() if a.ndim == 2 else a


def forward(model, p, x):
    if model == "mlp":
        h = torch.tanh(x @ p["l1.w"].T + p["l1.b"])
        return h @ p["l2.w"].T + p["l2.b"]
    if model == "mlp-ln":
        h = F.layer_norm(x @ p["l1.w"].T + p["l1.b"], (8,), p["ln.gamma"], p["ln.beta"], eps=1e-5)
        return torch.tanh(h) @ p["l2.w"].T + p["l2.b"]
    h = torch.tanh(F.conv2d(x, p["conv.w"], p["conv.b"]))
    return h.flatten(1) @ p["fc.w"].T + p["fc.b"]


def initial(model, seed=1):
    rng = np.random.default_rng(seed)
    shapes = MODELS[model][3]
    scale = {"mlp": 0.4, "mlp-ln": 0.4, "conv": 0.3}[model]
    init = {n: rng.uniform(-scale, scale, s).astype(np.float32) for n, s in shapes.items()}
    if "ln.gamma" in init:
        init["ln.gamma"] += 1
    return init


def reference_run(model, init, make_opt, dtype, steps=STEPS):
    """The reference's parameters (NML layout) after `steps` full-batch steps in `dtype`."""
    _, xname, yname, _ = MODELS[model]
    x = np.load(os.path.join(DATA, xname + ".npy"))
    y = np.load(os.path.join(DATA, yname + ".npy"))
    n_test = int(np.floor(0.1 * len(x) + 0.5))
    x = torch.from_numpy(x[:-n_test]).to(dtype)
    y = torch.from_numpy(y[:-n_test])
    names = list(init)
    p = {n: torch.tensor(to_torch(n, init[n]), dtype=dtype, requires_grad=True) for n in names}
    opt = make_opt([p[n] for n in names])

    def closure():
        """The loss of the batch at the parameters as they are now, and their gradients."""
        for q in p.values():
            q.grad = None
        loss = F.cross_entropy(forward(model, p, x), y)
        loss.backward()
        return loss

    opt.closure = closure  # the rules that take gradients at other weights (SAM, ...) call it
    for _ in range(steps):
        opt.zero_grad()
        closure()
        opt.step()
    out = {n: to_torch(n, p[n].detach().numpy()).astype(np.float64) for n in names}
    if hasattr(opt, "eval_params"):  # the weights the model is evaluated at: nmlc saves them as .eval
        for n, e in zip(names, opt.eval_params()):
            out[n + ".eval"] = to_torch(n, e.detach().numpy()).astype(np.float64)
    return out


def run_nmlc(nmlc, tmp, name, model, opt, sets, init, extra="", steps=STEPS):
    layer, xname, yname, _ = MODELS[model]
    src = os.path.join(tmp, name + ".nml")
    with open(src, "w") as f:
        f.write(NML.format(layer=layer, x=os.path.join(DATA, xname + ".npy"),
                           y=os.path.join(DATA, yname + ".npy"), opt=opt) + extra)
    init_path, out_path = (os.path.join(tmp, name + ext) for ext in (".init.safetensors", ".out.safetensors"))
    oracle.write_safetensors(init_path, init)
    cmd = [nmlc, "run", src, "-q", "--threads", "1", "--init", init_path, "--epochs", str(steps), "--save", out_path]
    cmd += [a for s in sets for a in ("--set", s)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"nmlc exited {r.returncode}: {r.stderr.strip()}"
    return oracle.read_safetensors(out_path), ""


def compare(got, want32, want64, rtol, atol):
    """(ok, detail): nmlc against the f32 reference within the tolerance, and the floor."""
    missing = [n for n in want32 if n not in got]
    if missing:
        return False, f"nmlc saved no {', '.join(missing)}"
    diff = max(float(np.max(np.abs(got[n] - want32[n]))) for n in want32)
    floor = max(float(np.max(np.abs(want32[n] - want64[n]))) for n in want32)
    diff64 = max(float(np.max(np.abs(got[n] - want64[n]))) for n in want32)
    ok = all(np.allclose(got[n], want32[n], rtol=rtol, atol=atol) for n in want32)
    moved = max(float(np.max(np.abs(want32[n] - initial_cache[n.replace(".eval", "")]))) for n in want32)
    return ok, (f"max |nml - ref32| {diff:.1e}, |nml - ref64| {diff64:.1e}, floor |ref32 - ref64| {floor:.1e}, "
                f"moved {moved:.1e} (rtol {rtol:.0e} atol {atol:.0e})")


initial_cache = {}


class Case:
    """name; model; NML optimizer; reference factory of the parameter list; --set arguments; extra
    NML source; tolerance (rtol, atol); a change to the initial weights."""

    def __init__(self, name, model, opt, make, sets=(), extra="", tol=(RTOL, ATOL), init=None):
        self.name, self.model, self.opt, self.make, self.sets = name, model, opt, make, list(sets)
        self.extra, self.tol, self.init = extra, tol, init


def run_case(nmlc, tmp, case):
    init = initial(case.model)
    if case.init:
        case.init(init)
    initial_cache.clear()
    initial_cache.update({n: a.astype(np.float64) for n, a in init.items()})
    got, err = run_nmlc(nmlc, tmp, case.name, case.model, case.opt, case.sets, init, case.extra)
    if got is None:
        return False, err
    want32 = reference_run(case.model, init, case.make, torch.float32)
    want64 = reference_run(case.model, init, case.make, torch.float64)
    return compare(got, want32, want64, *case.tol)


O = torch.optim
ADAM = O.Adam


class Split:
    """Parameter groups with their own optimizers: make_a on the parameters pick selects, make_b
    (or nothing: frozen) on the others."""

    def __init__(self, params, pick, make_a, make_b=None):
        a, b = [q for q in params if pick(q)], [q for q in params if not pick(q)]
        self.opts = [make_a(a)] + ([make_b(b)] if make_b else [])

    def zero_grad(self):
        for o in self.opts:
            o.zero_grad()

    def step(self):
        for o in self.opts:
            o.step()


CASES = [
    Case("nadamw", "mlp", "nadamw()", lambda p: R.NAdamW(p)),
    Case("nadamw-hparams", "mlp", "nadamw(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-6, weight_decay = 0.1)",
         lambda p: R.NAdamW(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    # weight_decay and a large lr make both views of the projection and the wd_ratio matter
    Case("adamp", "mlp", "adamp()", lambda p: R.AdamP(p)),
    Case("adamp-hparams", "mlp", "adamp(lr = 2e-2, weight_decay = 0.1, delta = 2, nesterov = 1)",
         lambda p: R.AdamP(p, lr=2e-2, weight_decay=0.1, delta=2.0, nesterov=True)),
    Case("adamp-conv", "conv", "adamp(lr = 2e-2, weight_decay = 0.1, delta = 1)",
         lambda p: R.AdamP(p, lr=2e-2, weight_decay=0.1, delta=1.0)),
    Case("sgdp", "mlp", "sgdp()", lambda p: R.SGDP(p, lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True)),
    Case("sgdp-projected", "mlp", "sgdp(delta = 2, weight_decay = 0.1)",
         lambda p: R.SGDP(p, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True, delta=2.0)),
    Case("sgdp-conv", "conv", "sgdp(lr = 0.05, momentum = 0.5, nesterov = 0, weight_decay = 0.1, delta = 1)",
         lambda p: R.SGDP(p, lr=0.05, momentum=0.5, weight_decay=0.1, delta=1.0)),
    Case("adafactor", "mlp", "adafactor()", lambda p: R.Adafactor(p)),
    Case("adafactor-conv", "conv", "adafactor()", lambda p: R.Adafactor(p)),
    Case("adafactor-options", "mlp",
         "adafactor(lr = 3e-2, relative_step = 0, b1 = 0.9, weight_decay = 0.1, clip_threshold = 0.5)",
         lambda p: R.Adafactor(p, lr=3e-2, relative_step=False, beta1=0.9, weight_decay=0.1, clip_threshold=0.5)),
    # parameter groups: matrices and vectors with their own rules (the only-group's hyperparameters
    # are matrix.lr, ...), --set on each, and a frozen group
    Case("groups-matrix", "mlp", 'chain(only("matrix", sgd(lr = 0.1, momentum = 0.9)), except("matrix", adam(lr = 1e-2)))',
         lambda p: Split(p, lambda q: q.ndim >= 2, lambda a: O.SGD(a, lr=0.1, momentum=0.9),
                         lambda b: ADAM(b, lr=1e-2))),
    Case("groups-set", "mlp", 'chain(only("matrix", sgd(lr = 0.1, momentum = 0.9)), except("matrix", adam(lr = 1e-2)))',
         lambda p: Split(p, lambda q: q.ndim >= 2, lambda a: O.SGD(a, lr=0.05, momentum=0.9),
                         lambda b: ADAM(b, lr=3e-3)), sets=["matrix.lr=0.05", "lr=3e-3"]),
    Case("groups-freeze-bias", "mlp", 'except("bias", adam(lr = 1e-2))',
         lambda p: Split(p, lambda q: q.ndim >= 2, lambda a: ADAM(a, lr=1e-2))),
    Case("groups-tag", "mlp", 'chain(only("weight", sgd(lr = 0.1, momentum = 0.5)), only("bias", adam(lr = 1e-2)))',
         lambda p: Split(p, lambda q: q.ndim >= 2, lambda a: O.SGD(a, lr=0.1, momentum=0.5),
                         lambda b: ADAM(b, lr=1e-2))),
    Case("muon", "mlp", "muon()", lambda p: R.MuonWithAuxAdam(p)),
    Case("muon-hparams", "mlp",
         "muon(lr = 0.05, momentum = 0.9, weight_decay = 0.1, nesterov = 0, adam_lr = 1e-2, adam_b1 = 0.8, "
         "adam_b2 = 0.99, adam_eps = 1e-8, adam_weight_decay = 0.1)",
         lambda p: R.MuonWithAuxAdam(p, lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=False, adam_lr=1e-2,
                                     adam_betas=(0.8, 0.99), adam_eps=1e-8, adam_weight_decay=0.1)),
    Case("muon-conv", "conv", "muon()", lambda p: R.MuonWithAuxAdam(p)),
    Case("adago", "mlp", "adago()", lambda p: R.AdaGO(p)),
    Case("adago-hparams", "mlp", "adago(lr = 0.05, gamma = 0.05, v0 = 0.1, weight_decay = 0.1, adam_weight_decay = 0.1)",
         lambda p: R.AdaGO(p, lr=0.05, gamma=0.05, initial_accumulator_value=0.1, weight_decay=0.1,
                           adam_weight_decay=0.1)),
    Case("adago-conv", "conv", "adago()", lambda p: R.AdaGO(p)),
    Case("mars", "mlp", "mars()", lambda p: R.MARS(p)),
    Case("mars-hparams", "mlp", "mars(lr = 1e-2, b1 = 0.9, b2 = 0.999, weight_decay = 0.1, gamma = 0.5, lr_1d = 1e-2)",
         lambda p: R.MARS(p, lr=1e-2, betas=(0.9, 0.999), weight_decay=0.1, gamma=0.5, lr_1d=1e-2)),
    Case("mars-conv", "conv", "mars()", lambda p: R.MARS(p)),
    Case("stable_spam", "mlp", "stable_spam()", lambda p: R.StableSPAM(p)),
    # theta = 0.5 makes the spike cap bite; reset every 7 steps; the cosine scale over 30 steps
    Case("stable_spam-hparams", "mlp",
         "stable_spam(lr = 1e-2, theta = 0.5, gamma1 = 0.5, gamma2 = 0.8, reset_interval = 7, total_T = 30, "
         "weight_decay = 0.1)",
         lambda p: R.StableSPAM(p, lr=1e-2, gamma3=0.5, gamma1=0.5, gamma2=0.8, update_proj_gap=7, total_T=30,
                                weight_decay=0.1)),
    Case("dog", "mlp", "dog()", lambda p: R.DoG(p)),
    Case("dog-hparams", "mlp", "dog(reps_rel = 1e-3, weight_decay = 0.1)",
         lambda p: R.DoG(p, reps_rel=1e-3, weight_decay=0.1)),
    Case("ldog", "mlp", "ldog()", lambda p: R.DoG(p, layer_wise=True)),
    Case("ldog-hparams", "conv", "ldog(reps_rel = 1e-3, weight_decay = 0.1)",
         lambda p: R.DoG(p, layer_wise=True, reps_rel=1e-3, weight_decay=0.1)),
    # d feeds back on itself (d -> dlr -> the numerator -> d), which amplifies rounding: at lr = 1 (the
    # default) d reaches 0.07 in 20 steps here, the weights move by 2.4 and the f32-f64 floor is 6e-3;
    # at lr = 0.5 they move by 0.66 and the floor is 6e-4, which sets this case's tolerance
    Case("prodigy", "mlp", "prodigy(lr = 0.5)", lambda p: R.Prodigy(p, lr=0.5), tol=(1e-3, 2e-3)),
    Case("prodigy-hparams", "mlp",
         "prodigy(lr = 0.5, weight_decay = 0.1, use_bias_correction = 1, safeguard_warmup = 1, growth_rate = 1.5, "
         "d_coef = 2, d0 = 1e-3)",
         lambda p: R.Prodigy(p, lr=0.5, weight_decay=0.1, use_bias_correction=True, safeguard_warmup=True,
                             growth_rate=1.5, d_coef=2.0, d0=1e-3)),
    Case("prodigy-coupled", "mlp", "prodigy(decouple = 0, weight_decay = 0.1, beta3 = 0.9, d0 = 1e-3)",
         lambda p: R.Prodigy(p, decouple=False, weight_decay=0.1, beta3=0.9, d0=1e-3)),
    # lr = 1 (the default) makes d 0.7 here and the weights diverge (floor 1e-2): lr = 0.3
    Case("dadapt_adam", "mlp", "dadapt_adam(lr = 0.3)", lambda p: R.DAdaptAdam(p, lr=0.3)),
    Case("dadapt_adam-hparams", "mlp",
         "dadapt_adam(lr = 0.5, weight_decay = 0.1, decouple = 1, use_bias_correction = 1, growth_rate = 1.5, "
         "d0 = 1e-3)",
         lambda p: R.DAdaptAdam(p, lr=0.5, weight_decay=0.1, decouple=True, use_bias_correction=True,
                                growth_rate=1.5, d0=1e-3)),
    Case("dadapt_adam-coupled", "mlp", "dadapt_adam(lr = 0.3, weight_decay = 0.1)",
         lambda p: R.DAdaptAdam(p, lr=0.3, weight_decay=0.1)),
    Case("adopt", "mlp", "adopt()", lambda p: R.ADOPT(p)),
    Case("adopt-hparams", "mlp", "adopt(lr = 1e-2, b2 = 0.5, weight_decay = 0.1, decouple = 1)",
         lambda p: R.ADOPT(p, lr=1e-2, betas=(0.9, 0.5), weight_decay=0.1, decouple=True)),
    Case("adopt-no-clip", "mlp", "adopt(lr = 1e-2, b2 = 0.5, weight_decay = 0.1, clip_exp = 0)",
         lambda p: R.ADOPT(p, lr=1e-2, betas=(0.9, 0.5), weight_decay=0.1, clip_lambda=None)),
    Case("signum", "mlp", "signum()", lambda p: R.Signum(p)),
    Case("signum-hparams", "mlp", "signum(lr = 3e-3, momentum = 0.5, weight_decay = 0.1, wd_lh = 1)",
         lambda p: R.Signum(p, lr=3e-3, momentum=0.5, wd=0.1, wd_lh=1.0)),
    Case("laprop", "mlp", "laprop()", lambda p: R.LaProp(p)),
    Case("laprop-hparams", "mlp", "laprop(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-8, weight_decay = 1e-3)",
         lambda p: R.LaProp(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=1e-3)),
    Case("adan", "mlp", "adan()", lambda p: R.Adan(p)),
    Case("adan-hparams", "mlp", "adan(lr = 1e-2, b1 = 0.9, b2 = 0.8, b3 = 0.95, weight_decay = 0.1)",
         lambda p: R.Adan(p, lr=1e-2, betas=(0.9, 0.8, 0.95), weight_decay=0.1)),
    Case("adan-no-prox", "mlp", "adan(lr = 1e-2, weight_decay = 0.1, no_prox = 1)",
         lambda p: R.Adan(p, lr=1e-2, weight_decay=0.1, no_prox=True)),
    Case("adam_atan2", "mlp", "adam_atan2()", lambda p: R.AdamAtan2(p)),
    Case("adam_atan2-hparams", "mlp", "adam_atan2(lr = 1e-2, b1 = 0.8, b2 = 0.999, weight_decay = 0.1, a = 2, b = 0.5)",
         lambda p: R.AdamAtan2(p, lr=1e-2, betas=(0.8, 0.999), weight_decay=0.1, a=2.0, b=0.5)),
    Case("adamomentum", "mlp", "adamomentum()", lambda p: R.AdaMomentum(p)),
    Case("adamomentum-hparams", "mlp", "adamomentum(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-4, weight_decay = 0.1)",
         lambda p: R.AdaMomentum(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.1)),
    # the random initial velocity off (alpha = 0); gravity-init checks its distribution
    Case("gravity", "mlp", "gravity(alpha = 0)", lambda p: R.Gravity(p)),
    Case("gravity-hparams", "mlp", "gravity(lr = 0.03, alpha = 0, beta = 0.5)", lambda p: R.Gravity(p, lr=0.03, beta=0.5)),
    Case("cautious_adamw", "mlp", "cautious_adamw()", lambda p: R.CautiousAdamW(p)),
    Case("cautious_adamw-hparams", "mlp", "cautious_adamw(lr = 1e-2, b1 = 0.8, b2 = 0.99, eps = 1e-8, weight_decay = 0.1)",
         lambda p: R.CautiousAdamW(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1)),
    Case("cautious_lion", "mlp", "cautious_lion(lr = 1e-3)", lambda p: R.CautiousLion(p, lr=1e-3)),
    Case("cautious_lion-hparams", "mlp", "cautious_lion(lr = 3e-3, b1 = 0.8, b2 = 0.9, weight_decay = 1)",
         lambda p: R.CautiousLion(p, lr=3e-3, betas=(0.8, 0.9), weight_decay=1.0)),
    Case("cautious-lion-wrapper", "mlp", "chain(lion(lr = 1e-3), cautious())", lambda p: R.CautiousLion(p, lr=1e-3)),
    Case("cautious-lion-wrapper-hparams", "mlp", "chain(lion(lr = 3e-3, b1 = 0.8, b2 = 0.9), cautious())",
         lambda p: R.CautiousLion(p, lr=3e-3, betas=(0.8, 0.9))),
    Case("lookahead-adam", "mlp", "chain(adam(lr = 1e-2), lookahead())",
         lambda p: R.Lookahead(ADAM(p, lr=1e-2))),
    Case("lookahead-sgd", "mlp", "chain(sgd(lr = 0.1, momentum = 0.9), lookahead(la_k = 3, la_alpha = 0.8))",
         lambda p: R.Lookahead(O.SGD(p, lr=0.1, momentum=0.9), la_steps=3, la_alpha=0.8)),
    # Ranger21 over 20 steps: warm-up 4 steps (0.22 T), warm-down from step 14
    Case("ranger21", "mlp", "ranger21()", lambda p: R.Ranger21(p, STEPS)),
    Case("ranger21-hparams", "conv",
         "ranger21(lr = 1e-2, weight_decay = 0.1, normloss_factor = 0.1, agc_clipping = 0.05, warmup_steps = 3, "
         "la_k = 4, la_alpha = 0.8, warmdown_min_lr = 1e-3)",
         lambda p: R.Ranger21(p, STEPS, lr=1e-2, weight_decay=0.1, normloss_factor=0.1, agc_clipping_value=0.05,
                              num_warmup_iterations=3, lookahead_mergetime=4, lookahead_blending_alpha=0.8,
                              warmdown_min_lr=1e-3)),
    # weights evaluated elsewhere: the checkpoint's <param>.eval must match the reference's too
    Case("schedule_free_sgd", "mlp", "schedule_free_sgd(lr = 0.5)", lambda p: R.ScheduleFree(p, lr=0.5)),
    Case("schedule_free_sgd-hparams", "mlp",
         "schedule_free_sgd(lr = 0.5, momentum = 0.8, weight_decay = 0.1, warmup_steps = 5, r = 1)",
         lambda p: R.ScheduleFree(p, lr=0.5, momentum=0.8, weight_decay=0.1, warmup_steps=5, r=1.0)),
    Case("schedule_free_adamw", "mlp", "schedule_free_adamw(lr = 0.01)", lambda p: R.ScheduleFree(p, adam=True, lr=0.01)),
    Case("schedule_free_adamw-hparams", "mlp",
         "schedule_free_adamw(lr = 0.02, b1 = 0.8, b2 = 0.99, weight_decay = 0.1, warmup_steps = 4, weight_lr_power = 1)",
         lambda p: R.ScheduleFree(p, adam=True, lr=0.02, betas=(0.8, 0.99), weight_decay=0.1, warmup_steps=4,
                                  weight_lr_power=1.0)),
    Case("ema", "mlp", "chain(sgd(lr = 0.3, momentum = 0.9), ema(ema_decay = 0.8))",
         lambda p: R.Averaged(O.SGD(p, lr=0.3, momentum=0.9), p, avg_fn=lambda a, q, n: 0.8 * a + 0.2 * q)),
    Case("swa", "mlp", "chain(sgd(lr = 0.3, momentum = 0.9), swa(swa_start = 6))",
         lambda p: R.Averaged(O.SGD(p, lr=0.3, momentum=0.9), p, start=6)),
    Case("poly_average-dog", "mlp", "chain(dog(reps_rel = 1e-3), poly_average())",
         lambda p: R.PolyAveraged(R.DoG(p, reps_rel=1e-3), p)),
    # second gradients within a step (grad_at), full batch
    Case("sam", "mlp", "chain(sam(rho = 0.1), sgd(lr = 0.3, momentum = 0.9))",
         lambda p: R.SAM(O.SGD(p, lr=0.3, momentum=0.9), p, rho=0.1)),
    Case("sam-adam", "conv", "chain(sam(), adam(lr = 1e-2))", lambda p: R.SAM(ADAM(p, lr=1e-2), p)),
    Case("asam", "mlp", "chain(asam(), sgd(lr = 0.3, momentum = 0.9))",
         lambda p: R.ASAM(O.SGD(p, lr=0.3, momentum=0.9), p, is_bias=[q.dim() == 1 for q in p])),
    Case("asam-hparams", "conv", "chain(asam(rho = 0.2, asam_eta = 0.1), sgd(lr = 0.1, momentum = 0.9))",
         lambda p: R.ASAM(O.SGD(p, lr=0.1, momentum=0.9), p, is_bias=[q.dim() == 1 for q in p], rho=0.2, eta=0.1)),
    Case("sam_on", "mlp-ln", "chain(sam_on(rho = 0.5), sgd(lr = 0.3, momentum = 0.9))",
         lambda p: R.SAMON(O.SGD(p, lr=0.3, momentum=0.9), p, is_norm=[False, False, True, True, False, False],
                           rho=0.5)),
    Case("gsam", "mlp", "chain(gsam(rho = 0.1), sgd(lr = 0.3, momentum = 0.9))",
         lambda p: R.GSAM(O.SGD(p, lr=0.3, momentum=0.9), p, rho=0.1)),
    Case("gam", "mlp", "chain(gam(gam_rho = 0.1, gam_norm_rho = 0.5, gam_gamma = 0.3), sgd(lr = 0.1, momentum = 0.9))",
         lambda p: R.GAM(O.SGD(p, lr=0.1, momentum=0.9), p, grad_rho=0.1, grad_norm_rho=0.5, gamma=0.3)),
    Case("grad_reg", "mlp", "chain(grad_reg(gr_gamma = 0.05, gr_eps = 0.02), sgd(lr = 0.3, momentum = 0.9))",
         lambda p: R.GradReg(O.SGD(p, lr=0.3, momentum=0.9), p, gamma=0.05, eps=0.02)),
    Case("mars_exact", "mlp", "mars_exact(lr = 1e-2, gamma = 0.5)", lambda p: R.MARSExact(p, lr=1e-2, gamma=0.5)),
    # hyperparameters set from the command line, and scheduled (lr and momentum: one-cycle)
    Case("muon-set", "mlp", "muon()", lambda p: R.MuonWithAuxAdam(p, lr=0.05, adam_lr=1e-2),
         sets=["lr=0.05", "adam_lr=0.01"]),
    Case("onecycle-sgd", "mlp", "sgd(lr = 0.5 * onecycle(t, T), momentum = onecycle_momentum(t, T))",
         lambda p: R.Scheduled(O.SGD(p, lr=0.5, momentum=0.9),
                               lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=STEPS))),
    Case("cosine-adamw", "mlp", "adamw(lr = 1e-2 * warmup_cosine(t, T, 5, min_factor = 0.1))",
         lambda p: R.Scheduled(O.AdamW(p, lr=1e-2), lambda o: torch.optim.lr_scheduler.LambdaLR(
             o, lambda e: e / 5 if e < 5 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (e - 5) / (STEPS - 5)))))),
    # transforms, each before SGD momentum (torch.optim.SGD)
    Case("agc", "mlp", "chain(agc(), sgd(lr = 0.5, momentum = 0.9))",
         lambda p: R.Transformed(O.SGD(p, lr=0.5, momentum=0.9), p, R.agc(0.01))),
    Case("agc-conv", "conv", "chain(agc(clipping = 0.05, agc_eps = 0.1), sgd(lr = 0.5, momentum = 0.9))",
         lambda p: R.Transformed(O.SGD(p, lr=0.5, momentum=0.9), p, R.agc(0.05, 0.1))),
    Case("centralize-conv", "conv", "chain(centralize(), sgd(lr = 0.1, momentum = 0.9))",
         lambda p: R.Transformed(O.SGD(p, lr=0.1, momentum=0.9), p, R.centralize)),
    Case("clip_coordinates", "mlp", "chain(clip_coordinates(), sgd(lr = 0.1, momentum = 0.9))",
         lambda p: R.Transformed(O.SGD(p, lr=0.1, momentum=0.9), p, R.clip_coordinates(0.1))),
    Case("clip_coordinates-conv", "conv", "chain(clip_coordinates(clip_fraction = 0.3), sgd(lr = 0.1, momentum = 0.9))",
         lambda p: R.Transformed(O.SGD(p, lr=0.1, momentum=0.9), p, R.clip_coordinates(0.3))),
    Case("coupled_weight_decay", "mlp", "chain(coupled_weight_decay(wd = 0.1), sgd(lr = 0.1, momentum = 0.9))",
         lambda p: O.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1)),
    Case("decoupled_weight_decay", "mlp",
         "chain(decoupled_weight_decay(wd = 0.5, wd_lr = 0.1), sgd(lr = 0.1, momentum = 0.9))",
         lambda p: R.DecoupledDecaySGD(p, lr=0.1, momentum=0.9, wd=0.5, wd_lr=0.1)),
    Case("decoupled_weight_decay-adam", "mlp",
         "chain(decoupled_weight_decay(wd = 0.1, wd_lr = 1e-2), adam(lr = 1e-2))",
         lambda p: O.AdamW(p, lr=1e-2, weight_decay=0.1)),
]


if __name__ == "__main__":
    sys.exit(oracle.run_cases([(c.name, c) for c in CASES], lambda nmlc, tmp, c: run_case(nmlc, tmp, c[1])))
