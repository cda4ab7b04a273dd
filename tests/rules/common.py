"""What the update-rule tests share: numpy and torch (or exit 77, skipped), the safetensors
helpers, tests/data, the blobs training rows as npy() holds them out, nmlc run's batch order, and
a pass/fail tally."""
import os
import subprocess
import sys

try:
    import numpy as np
    import torch  # noqa: F401  (the tests import it from here or themselves)
except ImportError:
    print("numpy or torch is not importable; skipping")
    sys.exit(77)
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
from oracle import read_safetensors as load, write_safetensors  # noqa: E402,F401

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
passed = failed = 0


def save(path, tensors):
    write_safetensors(path, {k: np.asarray(v, np.float32) for k, v in tensors.items()})


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")
    return ok


def finish():
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def blobs():
    """The blobs training rows (npy() holds out the last 10%) as float32 x, int64 y, and their count."""
    x = np.load(os.path.join(DATA, "blobs_x.npy")).astype(np.float32)
    y = np.load(os.path.join(DATA, "blobs_y.npy")).astype(np.int64)
    n = len(x) - round(0.1 * len(x))
    return x[:n], y[:n], n


def orders(order_exe, seed, epochs, n):
    """The order in which nmlc run visits n rows in each epoch (order.c prints nml_epoch_order)."""
    return [[int(v) for v in subprocess.run([order_exe, str(seed), str(e), str(n)], capture_output=True,
                                            text=True, check=True).stdout.split()] for e in range(1, epochs + 1)]
