#!/usr/bin/python3
"""An example reaches a test accuracy: with its default settings, the one its README promises
(fashion_mlp >= 0.88; the dataset's own benchmark lists an MLP at 0.883), or with the nmlc options
given after the bound (a short run of fashion_cnn).

  accuracy.py NMLC EXAMPLE BOUND [NMLC RUN OPTIONS...]
"""
import json
import subprocess
import sys
import tempfile

nmlc, example, bound, extra = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
with tempfile.NamedTemporaryFile(suffix=".jsonl") as log:
    r = subprocess.run([nmlc, "run", example, "--log", log.name, *extra], capture_output=True, text=True)
    print(r.stdout, r.stderr)
    recs = [json.loads(line) for line in open(log.name)] if r.returncode == 0 else []
ok = r.returncode == 0 and recs and recs[-1]["test_accuracy"] >= bound
print(f"final test accuracy {recs[-1]['test_accuracy'] if recs else None} (bound {bound})")
print(f"{1 if ok else 0} passed, {0 if ok else 1} failed")
sys.exit(0 if ok else 1)
