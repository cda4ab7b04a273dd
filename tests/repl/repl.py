#!/usr/bin/python3
"""Golden REPL sessions: each foo.in is piped into `nmlc repl --echo --threads 1`, run in this
directory, and what it prints (stdout and stderr, in order) must be foo.out.

A first line `# args: ...` adds arguments (e.g. a file to load); $NML_STDLIB is the source tree's
stdlib by a relative path, so diagnostics read the same everywhere. Timings are left out: the
`compiled in` line, samples/s and seconds on epoch lines, and time and steps/s in the tables of
:compare, :bench and :sweep. `$TMP` in a session is a temporary directory, for the files it writes
(and is printed as `$TMP`). A non-zero exit status is the last line, `[exit N]`. --update rewrites the .out files from what nmlc prints now; review the diff.
"""
import difflib
import os
import re
import subprocess
import sys
import tempfile

STDLIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "stdlib")


def blas_env():
    """The sessions print losses to four digits, and a sign-based rule (research.in) turns a
    difference in the last bit of a product into a visible one within an epoch. OpenBLAS's AVX-512
    kernels multiply small products by another path (and nmlc cuts products into tiles for it,
    codegen.c), so the kernel set is pinned to Haswell's (AVX2) wherever the CPU has them: the
    transcripts then read the same on AVX2 and AVX-512 machines."""
    if "OPENBLAS_CORETYPE" in os.environ or not os.path.exists("/proc/cpuinfo"):
        return {}
    with open("/proc/cpuinfo") as f:
        flags = set(next((l for l in f if l.startswith("flags")), "").split())
    return {"OPENBLAS_CORETYPE": "Haswell"} if {"avx2", "fma"} <= flags else {}
EPOCH_TIMING = re.compile(r"\s+\d+ samples/s\s+[\d.]+s$")
TABLE_TIMING = re.compile(r"\s+\d+\.\d\ds\s+(\d+|nan)(?=(  \(.*\))?$)")


def transcript(nmlc, d, name):
    with open(os.path.join(d, name)) as f:
        text = f.read()
    first = text.split("\n", 1)[0]
    args = first[len("# args:"):].split() if first.startswith("# args:") else []
    # The stdlib by a relative path, so that diagnostics in it read the same on every machine.
    env = dict(os.environ, NML_STDLIB=os.path.relpath(STDLIB, d), **blas_env())
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([nmlc, "repl", "--echo", "--threads", "1", *args], input=text.replace("$TMP", tmp),
                           cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=300)
        out = r.stdout.replace(tmp, "$TMP")
    lines = [TABLE_TIMING.sub("", EPOCH_TIMING.sub("", line)) for line in out.splitlines()
             if not line.startswith("compiled   in ")]
    if r.returncode:
        lines.append(f"[exit {r.returncode}]")
    return "".join(line + "\n" for line in lines)


def main():
    args = [a for a in sys.argv[1:] if a != "--update"]
    update = "--update" in sys.argv
    nmlc, d = os.path.abspath(args[0]), args[1]
    passed = failed = 0
    for name in sorted(os.listdir(d)):
        stem, ext = os.path.splitext(name)
        if ext != ".in":
            continue
        got = transcript(nmlc, d, name)
        path = os.path.join(d, stem + ".out")
        if update:
            with open(path, "w") as f:
                f.write(got)
            continue
        want = open(path).read() if os.path.exists(path) else ""
        if got == want:
            passed += 1
            continue
        failed += 1
        print(f"FAIL {path}")
        sys.stdout.writelines(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                                   "expected", "got"))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
