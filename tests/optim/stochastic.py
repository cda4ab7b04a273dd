#!/usr/bin/python3
"""The rules that draw random numbers, checked by their statistics (nmlc's generator is its own, so
no reference can replay its draws; trajectory.py checks the rest of these rules with the
randomness turned off).

- grad_noise: with the loss sum(w) every gradient is 1, so after S steps of
  chain(grad_noise(...), sgd(lr = 1)) the residual w_0 - S - w_S is the sum of the S noise draws,
  N(0, sum_t sigma_t²) with sigma_t² = noise_eta / (1 + t)^noise_gamma. Over 4000 elements the
  mean and the variance must match (4 standard errors; a variance off by more than 9% fails), which
  also tells fresh noise every step (sum of sigma_t²) from one draw reused ((sum of sigma_t)²,
  9.8 times larger here).
- gravity: the velocity starts N(0, (alpha / lr)²). After one step of the quadratic 0.5 |w|²
  (g = w) v_1 = v_0 / 2 + zeta_1 / 2, so v_0 = 2 v_1 - zeta_1 from the saved state; its mean and
  standard deviation must match over 4000 elements.
- both: the same seed gives the same numbers, another seed other numbers.

Usage: stochastic.py NMLC
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "oracle"))
import oracle  # noqa: E402  (exits 77, skipped, when numpy or torch is missing)
from oracle import np  # noqa: E402

N = 4000
NML = """use std.nn
use std.optim

layer Point(n) {{
  param w[n] = 0
  forward(x) = x
}}

train {{
  data      = npy("{data}", "{data}")
  model     = Point({n})
  loss      = {loss} + 0 * mean(model(x))
  optimizer = {opt}
  batch     = 128
}}
"""


def run(nmlc, tmp, name, loss, opt, init, steps, seed=1):
    src = os.path.join(tmp, name + ".nml")
    with open(src, "w") as f:
        f.write(NML.format(data=os.path.join(oracle.DATA, "reg_t.npy"), n=N, loss=loss, opt=opt))
    init_path, out = os.path.join(tmp, name + ".init.safetensors"), os.path.join(tmp, name + ".out.safetensors")
    oracle.write_safetensors(init_path, {"w": init})
    r = subprocess.run([nmlc, "run", src, "-q", "--init", init_path, "--epochs", str(steps), "--seed", str(seed),
                        "--save", out], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nmlc exited {r.returncode}: {r.stderr.strip()}")
    return {k: v.astype(np.float64) for k, v in oracle.read_safetensors(out).items()}


def moments_ok(x, mean, var):
    """The sample mean within 4 standard errors of `mean` and the sample variance within 4
    standard errors of `var` (the variance of a normal sample's variance is 2 var² / (n - 1))."""
    n = len(x)
    m, v = float(np.mean(x)), float(np.var(x, ddof=1))
    ok = abs(m - mean) <= 4 * np.sqrt(var / n) and abs(v - var) <= 4 * var * np.sqrt(2 / (n - 1))
    return ok, f"mean {m:.3e} (want {mean:.3e}), variance {v:.4e} (want {var:.4e}, rel {v / var - 1:+.3f})"


def grad_noise(nmlc, tmp):
    eta, gamma, steps = 0.3, 0.55, 10
    w0 = np.zeros(N, np.float32)
    opt = f"chain(grad_noise(noise_eta = {eta}, noise_gamma = {gamma}), sgd(lr = 1))"
    w = run(nmlc, tmp, "noise", "sum(model.w)", opt, w0, steps)["w"]
    var = sum(eta / (1 + t) ** gamma for t in range(1, steps + 1))
    ok, detail = moments_ok(-steps - w, 0.0, var)
    again = run(nmlc, tmp, "noise2", "sum(model.w)", opt, w0, steps)["w"]
    other = run(nmlc, tmp, "noise3", "sum(model.w)", opt, w0, steps, seed=2)["w"]
    ok &= np.array_equal(w, again) and not np.allclose(w, other)
    return ok, detail + f"; same seed equal {np.array_equal(w, again)}, seed 2 differs {not np.allclose(w, other)}"


def gravity(nmlc, tmp):
    lr, alpha = 0.1, 0.01
    w0 = np.random.default_rng(3).uniform(-1, 1, N).astype(np.float32)
    opt = f"gravity(lr = {lr}, alpha = {alpha})"
    got = run(nmlc, tmp, "gravity", "0.5 * sum(model.w^2)", opt, w0, 1)
    g = w0.astype(np.float64)
    zeta = g / (1 + (g * np.max(np.abs(g))) ** 2)
    v0 = 2 * got["w.v"] - zeta  # beta_hat at the first step is (beta 0 + 1) / 2
    ok, detail = moments_ok(v0, 0.0, (alpha / lr) ** 2)
    ok &= np.allclose(got["w"], w0 - lr * got["w.v"], atol=1e-6)
    again = run(nmlc, tmp, "gravity2", "0.5 * sum(model.w^2)", opt, w0, 1)["w.v"]
    other = run(nmlc, tmp, "gravity3", "0.5 * sum(model.w^2)", opt, w0, 1, seed=2)["w.v"]
    ok &= np.array_equal(got["w.v"], again) and not np.allclose(got["w.v"], other)
    return ok, "initial velocity: " + detail


CASES = [("grad_noise", grad_noise), ("gravity-init", gravity)]

if __name__ == "__main__":
    def run_case(nmlc, tmp, case):
        try:
            return case[1](nmlc, tmp)
        except RuntimeError as e:
            return False, str(e)
    sys.exit(oracle.run_cases(CASES, run_case))
