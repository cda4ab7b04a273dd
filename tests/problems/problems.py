#!/usr/bin/python3
"""The built-in test problems (stdlib/problems.nml) against their closed forms.

For each problem, nmlc trains one step of sgd(lr = 1) from the problem's start, saving the start
(--epochs 0 --save) and the point after the step: the step is the negative gradient, compared with
the closed-form gradient at the start. The objective at the start (the test loss of --epochs 0) is
compared with the closed form, and at the known minimum (--init) the objective and the step are 0.
"""
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np

nmlc = sys.argv[1]
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], np.float32).reshape(v["shape"]).astype(np.float64)
    return out


def write_st(path, tensors):
    header, blob = {}, b""
    for k, v in tensors.items():
        v = np.asarray(v, np.float32)
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [len(blob), len(blob) + v.nbytes]}
        blob += v.tobytes()
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob)


def program(d, model, data="synthetic()", loss="mean(model(x))"):
    path = os.path.join(d, "p.nml")
    with open(path, "w") as f:
        f.write(f"use std.problems\nuse std.optim\ntrain {{\n  data = {data}\n  model = {model}\n"
                f"  loss = {loss}\n  optimizer = sgd(lr = 1)\n  batch = 1\n  epochs = 1\n}}\n")
    return path


def run(*args):
    r = subprocess.run([nmlc, "run", "-q", "--threads", "1", *args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode:
        raise SystemExit(f"nmlc run {' '.join(args)} failed:\n{r.stdout}")
    return r.stdout


def test_loss(out):
    return float(re.search(r"test_loss (\S+)", out).group(1))


def start_and_step(d, model, init=None):
    """(parameters at the start, the gradient there (start - after one sgd step), f at the start)"""
    p = program(d, model)
    s0, s1 = os.path.join(d, "s0.safetensors"), os.path.join(d, "s1.safetensors")
    extra = ["--init", init] if init else []
    f0 = test_loss(run(p, "--epochs", "0", "--save", s0, *extra))
    run(p, "--save", s1, *extra)
    a, b = read_st(s0), read_st(s1)
    return a, {k: a[k] - b[k] for k in a if k in b and k in ("u", "v", "p")}, f0


def close(a, b, rtol=2e-5, atol=1e-6):
    return np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


with tempfile.TemporaryDirectory() as d:
    # Rosenbrock: (a - u)^2 + b (v - u^2)^2 from (-1.2, 1).
    s, g, f0 = start_and_step(d, "Rosenbrock()")
    u, v = s["u"][0], s["v"][0]
    check("rosenbrock start", (u, v) == (np.float32(-1.2), 1.0), f"{u} {v}")
    check("rosenbrock value", close(f0, (1 - u) ** 2 + 100 * (v - u * u) ** 2, 1e-4), f"{f0}")
    check("rosenbrock du", close(g["u"][0], -2 * (1 - u) - 400 * u * (v - u * u), 1e-4), f"{g['u']}")
    check("rosenbrock dv", close(g["v"][0], 200 * (v - u * u), 1e-4), f"{g['v']}")
    s, g, f0 = start_and_step(d, "Rosenbrock(x0 = 0.5, y0 = -0.3, a = 2, b = 10)")
    u, v = s["u"][0], s["v"][0]
    check("rosenbrock(a, b) du", close(g["u"][0], -2 * (2 - u) - 40 * u * (v - u * u), 1e-4), f"{g['u']}")
    check("rosenbrock(a, b) dv", close(g["v"][0], 20 * (v - u * u), 1e-4), f"{g['v']}")
    write_st(os.path.join(d, "min.safetensors"), {"u": [1.0], "v": [1.0]})
    s, g, f0 = start_and_step(d, "Rosenbrock()", os.path.join(d, "min.safetensors"))
    check("rosenbrock minimum", f0 == 0 and not g["u"].any() and not g["v"].any(), f"{f0} {g}")

    # Beale from (1, 1.5); the minimum 0 at (3, 0.5).
    s, g, f0 = start_and_step(d, "Beale()")
    u, v = s["u"][0], s["v"][0]
    t = [(1.5, 1), (2.25, 2), (2.625, 3)]
    fb = sum((c - u + u * v ** k) ** 2 for c, k in t)
    du = sum(2 * (c - u + u * v ** k) * (v ** k - 1) for c, k in t)
    dv = sum(2 * (c - u + u * v ** k) * (u * k * v ** (k - 1)) for c, k in t)
    check("beale value", close(f0, fb, 1e-4), f"{f0} {fb}")
    check("beale gradient", close([g["u"][0], g["v"][0]], [du, dv], 1e-4), f"{g} {du} {dv}")
    write_st(os.path.join(d, "min.safetensors"), {"u": [3.0], "v": [0.5]})
    s, g, f0 = start_and_step(d, "Beale()", os.path.join(d, "min.safetensors"))
    check("beale minimum", f0 == 0 and not g["u"].any() and not g["v"].any(), f"{f0} {g}")

    # Rastrigin: 10 d + sum(p^2 - 10 cos(2 pi p)), from a uniform point in [-5.12, 5.12]^d.
    s, g, f0 = start_and_step(d, "Rastrigin(d = 6)")
    p = s["p"]
    check("rastrigin start", p.shape == (6,) and (abs(p) <= 5.12).all() and len(set(p)) == 6, f"{p}")
    check("rastrigin value", close(f0, 60 + np.sum(p * p - 10 * np.cos(2 * math.pi * p)), 1e-4), f"{f0}")
    check("rastrigin gradient", close(g["p"], 2 * p + 20 * math.pi * np.sin(2 * math.pi * p), 1e-4, 1e-4),
          f"{g['p']}")
    write_st(os.path.join(d, "min.safetensors"), {"p": np.zeros(6)})
    s, g, f0 = start_and_step(d, "Rastrigin(d = 6)", os.path.join(d, "min.safetensors"))
    check("rastrigin minimum", f0 == 0 and not g["p"].any(), f"{f0} {g}")

    # Quadratic: 0.5 sum(h p^2), h from 1 to cond (the buffer u gives the spectrum).
    s, g, f0 = start_and_step(d, "Quadratic(d = 50, cond = 1000)")
    p, u = s["p"], s["u"]
    h = np.exp(np.log(1000) * (u - u.min()) / (u.max() - u.min()))
    check("quadratic spectrum", close([h.min(), h.max()], [1, 1000]) and len(set(h)) == 50, f"{h}")
    check("quadratic value", close(f0, 0.5 * np.sum(h * p * p), 1e-4), f"{f0}")
    check("quadratic gradient", close(g["p"], h * p, 1e-4, 1e-4), f"{g['p']} {h * p}")
    write_st(os.path.join(d, "min.safetensors"), {"p": np.zeros(50)})
    s, g, f0 = start_and_step(d, "Quadratic(d = 50, cond = 1000)", os.path.join(d, "min.safetensors"))
    check("quadratic minimum", f0 == 0 and not g["p"].any(), f"{f0} {g}")
    # With gradient noise: the loss stays the noiseless one, the gradient is h p + noise z, z ~ N(0, 1).
    s, g, f0 = start_and_step(d, "Quadratic(d = 2000, cond = 10, noise = 0.5)")
    p, u = s["p"], s["u"]
    h = np.exp(np.log(10) * (u - u.min()) / (u.max() - u.min()))
    z = (g["p"] - h * p) / 0.5
    check("noisy quadratic value", close(f0, 0.5 * np.sum(h * p * p), 1e-4), f"{f0}")
    check("noisy quadratic noise", abs(z.mean()) < 0.1 and 0.9 < z.std() < 1.1, f"{z.mean()} {z.std()}")

    # Logistic regression from w = 0: every row's loss is log 2; the step is X^T (1/2 - onehot(y)) / n
    # for the batch's one row, which the synthetic set's teacher labels.
    p = program(d, "Logistic(5)", "synthetic(n = 200, d = 5, classes = 2, holdout = 0.25)",
                "cross_entropy(model(x), y)")
    out = run(p, "--epochs", "0")
    check("logistic start", abs(test_loss(out) - math.log(2)) < 1e-4, out)
    out = run(p, "--epochs", "3", "--batch", "10")
    check("logistic trains", test_loss(out) < 0.6, out)

    # Bad arguments are errors at their place.
    p = program(d, "Rosenbrock()", "synthetic(classes = 1)")
    r = subprocess.run([nmlc, "run", p], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check("synthetic(classes = 1) refused", r.returncode == 1 and "p.nml:4:10: error: synthetic data with 1 classes"
          in r.stdout, r.stdout)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
