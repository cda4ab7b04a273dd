#!/usr/bin/python3
"""--resume with buffers and random numbers: a CNN with batch normalization (running statistics
in the buffer block) and dropout (masks from the seed and the step), trained 3 epochs in one run,
and 2 epochs then resumed to 3, ends in byte-identical checkpoints (tests/aot compares the built
library's training of the same model with nmlc run's).

  resume.py NMLC MODEL.nml
"""
import os
import subprocess
import sys
import tempfile

nmlc, model = sys.argv[1], sys.argv[2]
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")
    return ok


def run(*args):
    return subprocess.run([nmlc, "run", model, "--threads", "1", *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as tmp:
    full, part = os.path.join(tmp, "full.safetensors"), os.path.join(tmp, "part.safetensors")
    r = run("--epochs", "3", "--save", full)
    check("3 epochs", r.returncode == 0, r.stderr)
    r = run("--epochs", "2", "--save", part)
    check("2 epochs", r.returncode == 0, r.stderr)
    r = run("--epochs", "3", "--resume", part, "--save", part)
    check("resumed to 3", r.returncode == 0 and "resumed" in r.stdout, r.stdout + r.stderr)
    with open(full, "rb") as a, open(part, "rb") as b:
        da, db = a.read(), b.read()
    check("the resumed run's checkpoint is byte-identical", da == db)
    check("the checkpoint holds the running statistics", b"bn.running_mean" in da and b"bn.running_var" in da)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
