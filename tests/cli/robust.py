#!/usr/bin/python3
"""Nothing silent, nothing lost: a resumed run's metadata, memory that runs out, the log and the
checkpoint paths, output names that clash, pathological sizes. Every case ends in a clear error
(exit 1, a message saying what to do) or a correct result, never a crash, and leaves what was on
disk as it was.

  robust.py NMLC TESTS_CLI_DIR SANITIZE
"""
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

nmlc, here, sanitize = sys.argv[1], sys.argv[2], sys.argv[3]
sanitized = sanitize not in ("", "none")
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")
    return cond


env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", OPENBLAS_NUM_THREADS="1")


def nmlc_run(*args, limit_as=None, cwd=None, timeout=120):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    return subprocess.run([nmlc, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                          preexec_fn=limit if limit_as else None)


def clean_error(name, r, expect):
    """Exit 1 (not a signal, not an abort), the expected message, no internal error."""
    check(name, r.returncode == 1 and expect in r.stderr and "internal error" not in r.stderr,
          f"exit {r.returncode}\n{r.stdout[-1000:]}{r.stderr[-2000:]}")


tiny = os.path.join(here, "tiny.nml")

# ---- --resume trusts nothing in the checkpoint's metadata ----

# resume_epoch_nan.st was written by resume_blobs.nml, then its "epoch" set to "nan": it once was
# cast to int and trained 2^31 epochs.
r = nmlc_run("run", os.path.join(here, "resume_blobs.nml"), "--resume", os.path.join(here, "resume_epoch_nan.st"),
             timeout=60)
clean_error("--resume with epoch nan is refused", r, "epoch nan is not a count of epochs")
check("--resume with epoch nan trains nothing", "epoch " not in r.stdout, r.stdout)

# ---- memory that runs out: a clear error, no crash (an address space limit; the sanitizers
# reserve terabytes of shadow memory, so only the plain build runs these) ----

if not sanitized:
    oom = os.path.join(here, "oom_init.nml")
    r = nmlc_run("run", oom, "--epochs", "1", limit_as=1 << 30)
    clean_error("run: the model does not fit under 1 GB", r, "out of memory for the model")
    check("run out of memory: the estimate and what to do", "memory " in r.stderr and "smaller" in r.stderr, r.stderr)
    r = nmlc_run("gradcheck", oom, limit_as=1 << 30)
    clean_error("gradcheck: f64 parameters do not fit under 1 GB", r, "out of memory for the")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
