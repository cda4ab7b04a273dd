#!/usr/bin/python3
"""Threads in generated loops (runtime/pool.c): threads.nml trains to the same bits on 1, 2 and 3
threads, twice on 2, in nmlc run (the JIT) and in a library built by nmlc build (which links the
pool from libnmlrt.a); and its step really has units split across threads, or none of this would
test anything. wide.nml, whose products OpenBLAS threads, does the same with --deterministic;
narrow.nml, whose small batch's products the pool runs in pieces, in nmlc run.

  threads.py NMLC RUNTIME_INC SANITIZE CC...
"""
import os
import subprocess
import sys
import tempfile

nmlc, runtime_inc, sanitize, cc = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
here = os.path.dirname(os.path.abspath(__file__))
model = os.path.join(here, "threads.nml")
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")
    return ok


# nmlc under a sanitizer: LLVM's globals look like leaks.
env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", CC=" ".join(cc))


def nmlc_run(*args, threads_env=None, extra_env=None):
    e = dict(env, OPENBLAS_NUM_THREADS=threads_env) if threads_env else env
    e = dict(e, **(extra_env or {}))
    return subprocess.run([nmlc, *args], capture_output=True, text=True, env=e)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def library_runs(model, libdir, build_args, threads, name, losses=None):
    """nmlc build model into libdir, drive.c linked to it, run on each OPENBLAS_NUM_THREADS in
    threads: {run index: (stdout, checkpoint bytes)} for the runs that passed (losses: the number of
    loss lines each must print)."""
    lib = os.path.join(libdir, "libmodel.so")
    r = nmlc_run("build", model, "-o", lib, *build_args)
    if not check(f"nmlc build ({name})", r.returncode == 0, r.stderr[-3000:]):
        return {}
    exe = os.path.join(libdir, "drive")
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"]
    if sanitize not in ("", "none"):
        flags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
    r = subprocess.run([*cc, *flags, "-I", libdir, "-I", runtime_inc, os.path.join(here, "drive.c"), lib,
                        f"-Wl,-rpath,{libdir}", "-o", exe], capture_output=True, text=True)
    if not check(f"compile drive.c ({name})", r.returncode == 0, r.stderr):
        return {}
    out = {}
    for i, t in enumerate(threads):
        path = os.path.join(libdir, f"lib{i}.safetensors")
        r = subprocess.run([exe, path], capture_output=True, text=True, env=dict(os.environ, OPENBLAS_NUM_THREADS=t))
        ok = r.returncode == 0 and (losses is None or r.stdout.count("loss") == losses)
        if check(f"{name} on {t} thread(s) ({i})", ok, r.stdout + r.stderr[-3000:]):
            out[i] = (r.stdout, read(path))
    return out


def run_checkpoints(tmp, model, stem, threads, limit, label, *args):
    """nmlc run model once per thread count in threads, saving a checkpoint: {run index: its bytes}
    for the runs that passed; label(t, i) names each run's check."""
    out = {}
    for i, t in enumerate(threads):
        path = os.path.join(tmp, f"{stem}{i}.safetensors")
        r = nmlc_run("run", model, "--limit", limit, "--threads", t, *args, "--save", path, "-q")
        if check(label(t, i), r.returncode == 0, r.stderr[-3000:]):
            out[i] = read(path)
    return out


r = nmlc_run("show", "--llvm", model)
splits = r.stdout.count("call void @nml_pool_for")
check("the step has units split across threads", r.returncode == 0 and splits >= 4, f"{splits} calls\n{r.stderr}")

with tempfile.TemporaryDirectory() as tmp:
    # nmlc run: --threads sets OpenBLAS's threads and the pool's.
    ckpt = run_checkpoints(tmp, model, "run", ["1", "2", "2", "3"], "640", lambda t, i: f"nmlc run --threads {t} ({i})")
    if len(ckpt) == 4:
        check("nmlc run: 2 threads give the bits of 1", ckpt[1] == ckpt[0])
        check("nmlc run: 2 threads again, the same bits", ckpt[2] == ckpt[0])
        check("nmlc run: 3 threads (uneven pieces), the same bits", ckpt[3] == ckpt[0])

    # The JIT compiles a large module in parts on threads of its own (NML_JIT_THREADS parts, one
    # cache entry each): the code, so the bits, do not depend on how many.
    parts = {}
    for n in ["1", "2", "3"]:
        cache = os.path.join(tmp, f"cache{n}")
        path = os.path.join(tmp, f"parts{n}.safetensors")
        r = nmlc_run("run", model, "--limit", "640", "--threads", "2", "--save", path, "-q",
                     extra_env={"NML_JIT_THREADS": n, "NML_CACHE_DIR": cache})
        if check(f"nmlc run compiled in {n} part(s)", r.returncode == 0, r.stderr[-3000:]):
            objects = [f for f in os.listdir(cache) if f.endswith(".o")]
            check(f"{n} part(s): one cache entry each", len(objects) == int(n), str(objects))
            parts[n] = read(path)
    if len(parts) == 3 and 1 in ckpt:
        check("compiled in 1 part: the bits of the default", parts["1"] == ckpt[1])
        check("compiled in 2 parts: the same bits", parts["2"] == parts["1"])
        check("compiled in 3 parts: the same bits", parts["3"] == parts["1"])

    # --deterministic: a model whose products OpenBLAS would thread gives the same bits on 1, 2 and
    # 3 threads, from nmlc run and from a library built with it.
    wide = os.path.join(here, "wide.nml")
    det = run_checkpoints(tmp, wide, "wide", ["1", "2", "3"], "1280",
                          lambda t, i: f"nmlc run --deterministic --threads {t}", "--deterministic")
    if len(det) == 3:
        check("--deterministic: 2 threads give the bits of 1", det[1] == det[0])
        check("--deterministic: 3 threads give the bits of 1", det[2] == det[0])
    wdir = os.path.join(tmp, "wide")
    os.mkdir(wdir)
    out = library_runs(wide, wdir, ["--deterministic", "--batch", "64"], ["1", "2", "3"], "wide library")
    if len(out) == 3:
        check("wide library, --deterministic: 2 threads, the bits of 1", out[1] == out[0])
        check("wide library, --deterministic: 3 threads, the bits of 1", out[2] == out[0])

    # A small batch's products in pieces on the pool (partial sums along the inner dimension), the
    # update split by the rows each thread's piece of the weight gradient has.
    narrow = os.path.join(here, "narrow.nml")
    r = nmlc_run("show", "--kernels", narrow)
    check("narrow.nml: a product in partial sums on the pool", "(partial sums), on the pool's threads" in r.stdout,
          r.stdout + r.stderr[-3000:])
    bits = run_checkpoints(tmp, narrow, "narrow", ["1", "2", "3"], "1280",
                           lambda t, i: f"narrow.nml: nmlc run --threads {t}")
    if len(bits) == 3:
        check("narrow.nml: 2 threads give the bits of 1", bits[1] == bits[0])
        check("narrow.nml: 3 threads give the bits of 1", bits[2] == bits[0])

    # nmlc build: the library sizes the pool by OpenBLAS's setting (OPENBLAS_NUM_THREADS).
    out = library_runs(model, tmp, [], ["1", "2", "2", "3"], "library", losses=6)
    if len(out) == 4:
        check("library: losses and checkpoint on 2 threads are those of 1", out[1] == out[0])
        check("library: 2 threads again, the same", out[2] == out[0])
        check("library: 3 threads, the same", out[3] == out[0])

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
