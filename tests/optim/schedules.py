#!/usr/bin/python3
"""std.sched's schedules against torch.optim.lr_scheduler (or a transcription), at every step.

Each case runs nmlc for T = 30 steps (one per epoch) with a probe rule whose update sets the one
parameter w[1] to the scheduled hyperparameter, p = lr, and the loss sum(w): the test loss that
--log records after step t is then the lr that step t used. The reference is a torch scheduler on
an SGD optimizer: the lr (or momentum) of the param group when optimizer.step() runs, then
scheduler.step(). Values agree within 2e-6 relative and 1e-7 absolute (f32 computation of the
same formula; the schedules' cosines and powers are single-precision in nmlc). The set-scaled
cases give a schedule as number * curve and change the number with --set.

Usage: schedules.py NMLC [PREFIX...]
"""
import json
import math
import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
import oracle  # noqa: E402  (exits 77, skipped, when numpy or torch is missing)
from oracle import np, torch  # noqa: E402

T = 30
RTOL, ATOL = 2e-6, 1e-7
S = torch.optim.lr_scheduler

NML = """use std.nn
use std.optim
use std.sched

layer Probe() {{
  param w[1] = 0
  forward(x) = x
}}

optimizer probe(lr = 1) {{
  p = lr + 0 * p
}}

optimizer probe_momentum(momentum = 0) {{
  p = momentum + 0 * p
}}

train {{
  data      = npy("{data}", "{data}")
  model     = Probe()
  loss      = sum(model.w) + 0 * mean(model(x))
  optimizer = {opt}
  batch     = 128
  epochs    = {T}
}}
"""


def nml_values(nmlc, tmp, name, opt, extra=()):
    src, log = os.path.join(tmp, name + ".nml"), os.path.join(tmp, name + ".jsonl")
    with open(src, "w") as f:
        f.write(NML.format(data=os.path.join(oracle.DATA, "reg_t.npy"), opt=opt, T=T))
    r = subprocess.run([nmlc, "run", src, "-q", "--log", log, *extra], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nmlc exited {r.returncode}: {r.stderr.strip()}")
    with open(log) as f:
        return np.array([json.loads(line)["test_loss"] for line in f])


def torch_values(make, base=1.0, key="lr", momentum=0.0):
    """The lr (or momentum) each of T optimizer steps uses under the scheduler make(optimizer)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base, momentum=momentum)
    sched = make(opt)
    values = []
    for _ in range(T):
        values.append(opt.param_groups[0][key])
        opt.step()
        sched.step()
    return np.array(values)


def lam(fn):
    """LambdaLR of fn(e), e the number of scheduler steps so far."""
    return lambda opt: S.LambdaLR(opt, fn)


def hf_cosine_with_warmup(w, n, min_rate=0.0):
    """Hugging Face transformers' get_cosine_with_min_lr_schedule_with_warmup (num_cycles 0.5)."""
    def f(e):
        if e < w:
            return e / max(1, w)
        progress = (e - w) / max(1, n - w)
        factor = max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
        return factor * (1 - min_rate) + min_rate
    return f


def hf_wsd(w, decay, n, min_rate=0.0, decay_type="linear"):
    """Hugging Face transformers' get_wsd_schedule (warm-up linear, stable, then decay over the
    last `decay` steps of n), its lambda transcribed."""
    stable = n - w - decay

    def f(e):
        if e < w:
            return max(0.0, (e / max(1, w)) * (1 - min_rate) + min_rate)
        if e < w + stable:
            return 1.0
        if e < w + stable + decay:
            progress = (e - w - stable) / max(1, decay)
            factor = 1.0 - progress if decay_type == "linear" else 1.0 - math.sqrt(progress)
            return max(0.0, factor * (1 - min_rate) + min_rate)
        return min_rate
    return f


def noam(warmup):
    """Vaswani et al. 2017, equation (3): d^-0.5 min(step^-0.5, step warmup^-1.5) with step = e + 1,
    divided by its value at step = warmup."""
    peak = warmup ** -0.5
    return lambda e: min((e + 1) ** -0.5, (e + 1) * warmup ** -1.5) / peak


# name, NML optimizer, reference values
CASES = [
    ("constant", "probe(lr = constant_factor(t, factor = 0.5, steps = 7))", lambda: torch_values(
        lambda o: S.ConstantLR(o, factor=0.5, total_iters=7))),
    ("step", "probe(lr = step_decay(t, 6, gamma = 0.5))", lambda: torch_values(
        lambda o: S.StepLR(o, step_size=6, gamma=0.5))),
    ("multistep", "probe(lr = multistep_decay(t, 5, 12, 20, gamma = 0.3))", lambda: torch_values(
        lambda o: S.MultiStepLR(o, [5, 12, 20], gamma=0.3))),
    ("exponential", "probe(lr = exponential_decay(t, 0.9))", lambda: torch_values(
        lambda o: S.ExponentialLR(o, 0.9))),
    ("polynomial", "probe(lr = polynomial_decay(t, 20, power = 2))", lambda: torch_values(
        lambda o: S.PolynomialLR(o, total_iters=20, power=2.0))),
    ("linear", "probe(lr = 0.5 * linear_ramp(t, 10, start = 0.2, end = 0.9))", lambda: torch_values(
        lambda o: S.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=10), base=0.5)),
    ("linear_decay", "probe(lr = linear_decay(t, T))", lambda: torch_values(lam(lambda e: 1 - e / T))),
    ("warmup", "probe(lr = warmup(t, 8))", lambda: torch_values(lam(lambda e: min((e + 1) / 8, 1)))),
    ("cosine", "probe(lr = 0.1 * cosine_decay(t, T, min_factor = 0.1))", lambda: torch_values(
        lambda o: S.CosineAnnealingLR(o, T_max=T, eta_min=0.01), base=0.1)),
    # past its period CosineAnnealingLR climbs back up; so does the formula
    ("cosine-period", "probe(lr = cosine_decay(t, 12))", lambda: torch_values(
        lambda o: S.CosineAnnealingLR(o, T_max=12))),
    ("cosine_restarts", "probe(lr = cosine_restarts(t, 7, min_factor = 0.2))", lambda: torch_values(
        lambda o: S.CosineAnnealingWarmRestarts(o, T_0=7, eta_min=0.2))),
    ("cosine_restarts-mult", "probe(lr = cosine_restarts(t, 3, mult = 2))", lambda: torch_values(
        lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2))),
    ("warmup_cosine", "probe(lr = warmup_cosine(t, T, 6))", lambda: torch_values(lam(hf_cosine_with_warmup(6, T)))),
    ("warmup_cosine-min", "probe(lr = warmup_cosine(t, T, 6, min_factor = 0.1))", lambda: torch_values(
        lam(hf_cosine_with_warmup(6, T, 0.1)))),
    ("wsd", "probe(lr = wsd(t, T, 5, 10))", lambda: torch_values(lam(hf_wsd(5, 10, T)))),
    ("wsd-sqrt", "probe(lr = wsd(t, T, 5, 10, min_factor = 0.1, sqrt_decay = 1))", lambda: torch_values(
        lam(hf_wsd(5, 10, T, 0.1, "1-sqrt")))),
    ("onecycle", "probe(lr = 0.4 * onecycle(t, T))", lambda: torch_values(
        lambda o: S.OneCycleLR(o, max_lr=0.4, total_steps=T), momentum=0.9)),
    ("onecycle-hparams", "probe(lr = onecycle(t, T, pct_start = 0.5, div_factor = 10, final_div_factor = 100))",
     lambda: torch_values(lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=T, pct_start=0.5, div_factor=10,
                                                  final_div_factor=100), momentum=0.9)),
    ("onecycle-momentum", "probe_momentum(momentum = onecycle_momentum(t, T))", lambda: torch_values(
        lambda o: S.OneCycleLR(o, max_lr=0.4, total_steps=T), key="momentum", momentum=0.9)),
    ("onecycle-momentum-hparams",
     "probe_momentum(momentum = onecycle_momentum(t, T, pct_start = 0.4, base_momentum = 0.8, max_momentum = 0.99))",
     lambda: torch_values(lambda o: S.OneCycleLR(o, max_lr=0.4, total_steps=T, pct_start=0.4, base_momentum=0.8,
                                                  max_momentum=0.99), key="momentum", momentum=0.9)),
    ("inverse_sqrt", "probe(lr = inverse_sqrt(t, 8))", lambda: torch_values(lam(noam(8)))),
    # number * schedule: --set changes the number, the peak of the curve, without editing the file
    ("set-scaled-cosine", "probe(lr = 0.1 * cosine_decay(t, T, min_factor = 0.1))", lambda: torch_values(
        lambda o: S.CosineAnnealingLR(o, T_max=T, eta_min=0.03), base=0.3), ["--set", "lr=0.3"]),
    # epoch (from 1) in a schedule, three steps an epoch: the log's value after epoch e is epoch e's
    ("epoch", "probe(lr = 0.9^(epoch - 1) * (epoch <= 20) + 0.01 * epoch * (epoch > 20))",
     lambda: np.array([0.9 ** e if e < 20 else 0.01 * (e + 1) for e in range(T)]), ["--batch", "32"]),
    ("set-scaled-onecycle", "probe(lr = onecycle(t, T) * 0.4)", lambda: torch_values(
        lambda o: S.OneCycleLR(o, max_lr=0.05, total_steps=T), momentum=0.9), ["--set", "lr=0.05"]),
]


def run_case(nmlc, tmp, case):
    name, opt, want = case[:3]
    try:
        got = nml_values(nmlc, tmp, name, opt, case[3] if len(case) > 3 else ())
    except RuntimeError as e:
        return False, str(e)
    want = want()
    if len(got) != T:
        return False, f"expected {T} values, got {len(got)}"
    diff = float(np.max(np.abs(got - want)))
    ok = bool(np.allclose(got, want, rtol=RTOL, atol=ATOL))
    worst = int(np.argmax(np.abs(got - want)))
    return ok, f"max diff {diff:.1e} at t = {worst + 1} ({got[worst]:.7g} vs {want[worst]:.7g})"


if __name__ == "__main__":
    sys.exit(oracle.run_cases(CASES, run_case))
