#!/usr/bin/python3
"""Global reductions are barriers: every one in a statement sees every parameter as it stood before
the statement, however many there are and whatever the statement rebinds. Two reductions in one
statement that reassigns g train exactly as the same reductions on lines of their own.

Usage: barriers.py NMLC
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

nmlc = sys.argv[1]
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
TEMPLATE = """use std.nn
layer Net() {{
  l1 = Linear(6, 8)
  l2 = Linear(8, 3)
  forward(x) = l2(tanh(l1(x)))
}}
transform scale_twice() {{
{body}
}}
optimizer plain(lr = 0.1) {{
  p -= lr * g
}}
train {{
  data      = npy("{x}", "{y}")
  model     = Net()
  loss      = cross_entropy(model(x), y)
  optimizer = chain(scale_twice(), plain())
  epochs    = 3
}}
"""
ONE = "  g = g / global_norm(g) + 0.5 * g / global_norm(p)"
SPLIT = "  a = global_norm(g)\n  b = global_norm(p)\n  g = g / a + 0.5 * g / b"
passed = failed = 0
with tempfile.TemporaryDirectory() as tmp:
    out = []
    for name, body in (("one", ONE), ("split", SPLIT)):
        src, ck = os.path.join(tmp, name + ".nml"), os.path.join(tmp, name + ".safetensors")
        with open(src, "w") as f:
            f.write(TEMPLATE.format(body=body, x=os.path.join(DATA, "blobs_x.npy"), y=os.path.join(DATA, "blobs_y.npy")))
        r = subprocess.run([nmlc, "run", src, "--save", ck], capture_output=True, text=True)
        if r.returncode:
            print(r.stderr)
        with open(ck, "rb") as f:  # the tensors, without the metadata (which names the program)
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            out.append((header, f.read()))
    ok = out[0] == out[1]
    passed, failed = (1, 0) if ok else (0, 1)
    if not ok:
        print("FAIL two reductions in one statement train as on lines of their own")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
