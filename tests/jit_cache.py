#!/usr/bin/python3
"""The JIT's object cache: a second run of the same program loads its kernels from the cache
(compiled in well under the cold time) and trains to the same losses; a damaged entry is compiled
again and replaced; another batch size is another entry; NML_CACHE_DIR=off uses none. Compiled in
two parts (NML_JIT_THREADS=2), each part is an entry, and one damaged part is compiled again alone.

  jit_cache.py NMLC MODEL.nml
"""
import glob
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


def run(cache, *args, parts="1"):
    env = dict(os.environ, NML_CACHE_DIR=cache, NML_JIT_THREADS=parts)
    r = subprocess.run([nmlc, "run", model, "--epochs", "2", *args], capture_output=True, text=True, env=env)
    losses = [l.split()[3] for l in r.stdout.splitlines() if l.startswith("epoch")]
    return r, "from the cache" in r.stdout, losses


with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, "cache")
    r1, hit1, l1 = run(cache)
    check("first run compiles", r1.returncode == 0 and not hit1, r1.stdout + r1.stderr)
    entries = glob.glob(os.path.join(cache, "*.o"))
    check("one cache entry", len(entries) == 1, str(os.listdir(cache) if os.path.isdir(cache) else None))
    r2, hit2, l2 = run(cache)
    check("second run loads the cache", r2.returncode == 0 and hit2, r2.stdout)
    check("same losses from the cache", l1 == l2 and l1, f"{l1} vs {l2}")
    if entries:
        with open(entries[0], "r+b") as f:  # damage the object code, past the header
            f.seek(200)
            f.write(b"\xff" * 64)
        r3, hit3, l3 = run(cache)
        check("a damaged entry is compiled again", r3.returncode == 0 and not hit3 and l3 == l1, r3.stdout + r3.stderr)
        r4, hit4, _ = run(cache)
        check("and replaced", r4.returncode == 0 and hit4, r4.stdout)
    r5, hit5, _ = run(cache, "--batch", "32")
    check("another batch size is another entry", r5.returncode == 0 and not hit5
          and len(glob.glob(os.path.join(cache, "*.o"))) == 2, r5.stdout)
    r6, hit6, l6 = run("off")
    check("NML_CACHE_DIR=off compiles", r6.returncode == 0 and not hit6 and l6 == l1, r6.stdout)
    split = os.path.join(tmp, "split")
    r7, hit7, l7 = run(split, parts="2")
    halves = sorted(glob.glob(os.path.join(split, "*.o")), key=os.path.getmtime)
    check("two parts: two entries, the same losses", r7.returncode == 0 and not hit7 and len(halves) == 2
          and l7 == l1, f"{os.listdir(split)} {l7}")
    if len(halves) == 2:
        with open(halves[0], "r+b") as f:
            f.seek(200)
            f.write(b"\xff" * 64)
        kept = os.path.getmtime(halves[1])
        r8, hit8, l8 = run(split, parts="2")
        check("one damaged part is compiled again, the other loaded", r8.returncode == 0 and not hit8
              and l8 == l1 and os.path.getmtime(halves[1]) == kept and len(glob.glob(os.path.join(split, "*.o"))) == 2,
              r8.stdout + r8.stderr)
        r9, hit9, _ = run(split, parts="2")
        check("then both load", r9.returncode == 0 and hit9, r9.stdout)
    check("no temporary files left", not glob.glob(os.path.join(cache, ".tmp.*")), str(os.listdir(cache)))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
