#!/usr/bin/python3
"""NML beside PyTorch, one table: bench/run.sh [--quick] [--threads N] [--repeat R] (bench/README.md).

Every row runs the same work on both sides (model, batch, data, thread count, OpenBLAS kernels), the
sides alternating, repeated; the table has both medians, how many times better NML is, and the row's
hardware bound. Progress and every single measurement go to stderr, the table to stdout."""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PY = "/usr/bin/python3"
DATA = "/usr/share/datasets/fashion-mnist"


def parse_args():
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples and repeats (under 2 minutes)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads on both sides (default: all)")
    p.add_argument("--repeat", type=int, default=None, help="runs of each side (default 5, --quick 2)")
    p.add_argument("--build", default=os.path.join(ROOT, "build"), help="meson build directory (default: build)")
    p.add_argument("--rows", default="1,2,3,4,5,6,7", help="rows to run, e.g. 1,5 (6 and 7 need 1)")
    a = p.parse_args()
    if a.repeat is None:
        a.repeat = 2 if a.quick else 5
    if a.threads < 1 or a.repeat < 1:
        p.error("--threads and --repeat want at least 1")
    a.rows = {int(r) for r in a.rows.split(",") if r.strip()}
    if a.rows & {6, 7}:
        a.rows.add(1)
    if 7 in a.rows:
        a.rows.add(2)
    return a


def log(*what):
    print(*what, file=sys.stderr, flush=True)


def fail(msg):
    log(f"error: {msg}")
    sys.exit(1)


# ---- running children: wall time and peak resident memory of each ----

class Result:
    def __init__(self, status, out, err, wall, maxrss_mb):
        self.status, self.out, self.err, self.wall, self.maxrss_mb = status, out, err, wall, maxrss_mb

    def ok(self):
        return self.status == 0

    def tail(self):
        lines = (self.err.strip() or self.out.strip()).splitlines()
        return lines[-1] if lines else f"exit status {self.status}"


def run(cmd, env=None, cwd=ROOT, timeout=900):
    """Runs cmd; waits with wait4 so that ru_maxrss is this child's own peak (not the largest of all
    children so far, as getrusage(RUSAGE_CHILDREN) would give)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        e = dict(os.environ, **(env or {}))
        e["BENCH_T0"] = repr(time.time())
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=e, cwd=cwd)
        except OSError as x:
            return Result(127, "", f"cannot run {cmd[0]}: {x}", 0.0, 0.0)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return Result(proc.returncode, out.read(), err.read(), wall, ru.ru_maxrss / 1024)


def keyvals(text):
    """`a=1.5 b=2` on the last line holding '=' -> {'a': 1.5, 'b': 2.0}."""
    lines = [l for l in text.splitlines() if "=" in l]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-0-9.eE+]+)", lines[-1])} if lines else {}


# ---- the two sides of a training row ----

def nml_train(a, nml_file, limit, extra=(), cache=None):
    """nmlc run for one epoch: samples/s from the JSONL log, compile time from the header, and the
    time from process start to the first step (wall time minus -v's training phase). The kernel
    cache (where nmlc has one) is a fresh empty directory, so the compile is cold, unless `cache`
    names the directory of an earlier run; `cached` says whether nmlc reported a cache hit."""
    logf = os.path.join(a.tmp, "nml.jsonl")
    if os.path.exists(logf):
        os.remove(logf)
    if cache is None:
        cache = tempfile.mkdtemp(prefix="cache.", dir=a.tmp)
    cmd = [a.nmlc, "run", nml_file, "--epochs", "1", "--threads", str(a.threads), "--log", logf, "-v"]
    if limit:
        cmd += ["--limit", str(limit)]
    r = run(cmd + list(extra), env={"OPENBLAS_NUM_THREADS": str(a.threads), "NML_CACHE_DIR": cache})
    if not r.ok():
        return {"error": f"nmlc run failed: {r.tail()}"}
    try:
        rec = json.loads([l for l in open(logf) if l.strip()][-1])
        res = {"sps": float(rec["samples_per_sec"]), "acc": float(rec["test_accuracy"]), "rss": r.maxrss_mb}
        compiled = re.search(r"^compiled\s+in\s+([0-9.]+)\s*ms.*$", r.out, re.M)
        res["compile_ms"] = float(compiled.group(1))
        res["cached"] = "from the cache" in compiled.group(0)
        training = float(re.search(r"training\s+([0-9.]+)\s*ms", r.err).group(1))
        res["first_step_ms"] = r.wall * 1e3 - training
        res["cache_dir"] = cache
    except (IndexError, KeyError, AttributeError, ValueError) as e:
        return {"error": f"cannot read nmlc's output ({e})"}
    return res


def nml_cached(a, nml_file, cold):
    """The same program again on the cache directory the cold run `cold` filled: its compile time
    when nmlc reports a cache hit, else an error saying there is none."""
    if "cache_dir" not in cold:
        return {"error": "the cold run failed"}
    res = nml_train(a, nml_file, 128, cache=cold["cache_dir"])
    if "error" in res:
        return res
    if not res["cached"]:
        return {"error": "no cache", "nocache": True}
    return {"compile_ms": res["compile_ms"], "first_step_ms": res["first_step_ms"]}


def torch_train(a, script, limit, extra=()):
    cmd = [PY, os.path.join(BENCH, script), "--threads", str(a.threads), "--epochs", "1"]
    if limit:
        cmd += ["--limit", str(limit)]
    r = run(cmd + list(extra), env={"OMP_NUM_THREADS": str(a.threads)})
    kv = keyvals(r.out)
    if not r.ok() or "samples_per_sec" not in kv:
        return {"error": f"{script} failed: {r.tail()}"}
    return {"sps": kv["samples_per_sec"], "acc": kv.get("test_accuracy"), "rss": r.maxrss_mb,
            "first_step_ms": kv.get("start_to_first_step", float("nan")) * 1e3}


# ---- hardware bounds: the sgemm rate on a step's own matrix products ----

def mlp_gemms(sizes, batch):
    """Row-major (M, N, K, transA, transB) of one training step of an MLP: per layer the forward
    product x w, the weight gradient x^T dy, and (but for the first layer) the input gradient dy w^T."""
    g = []
    for i, (din, dout) in enumerate(zip(sizes, sizes[1:])):
        g.append((batch, dout, din, 0, 0))
        g.append((din, dout, batch, 1, 0))
        if i:
            g.append((batch, din, dout, 0, 1))
    return g


def cnn_gemms(batch):
    """torch_cnn.py's step as im2col GEMMs: conv 1->32 on 28x28 (no input gradient), conv 32->64 on
    14x14 (k = 32 * 9), then 3136 -> 128 -> 10."""
    return [(batch * 784, 32, 9, 0, 0), (9, 32, batch * 784, 1, 0),
            (batch * 196, 64, 288, 0, 0), (288, 64, batch * 196, 1, 0), (batch * 196, 288, 64, 0, 1),
            *mlp_gemms([3136, 128, 10], batch)[0:2], *mlp_gemms([3136, 128, 10], batch)[2:]]


def flops(gemms):
    return sum(2 * m * n * k for m, n, k, _, _ in gemms)


def sgemm_rate(a, gemms):
    r = run([a.sgemm, "0.4" if a.quick else "0.6"] + [",".join(map(str, g)) for g in gemms],
            env={"OPENBLAS_NUM_THREADS": str(a.threads)})
    kv = keyvals(r.out)
    if not r.ok() or "gflops" not in kv:
        return {"error": f"sgemm probe failed: {r.tail()}"}
    return {"gflops": kv["gflops"], "step_ms": kv["step_ms"], "tiles": kv.get("tiles")}


def fma_peak(a):
    """The machine's arithmetic peak (bench/c/peak.c): FMAs on registers, one thread and all."""
    r = run([a.peak, "0.3" if a.quick else "0.6", str(a.threads)])
    kv = keyvals(r.out)
    if not r.ok() or "all" not in kv:
        return {"error": f"peak probe failed: {r.tail()}"}
    return kv


# ---- the optimizer rows ----

RULES = ["adam", "lion", "lamb"]
OPT_TENSORS, OPT_SIZE = 10, 1_000_000


def nml_optstep(a, rule, steps):
    # the library's loops take their thread count from OpenBLAS's setting, as nmlc run --threads sets it
    r = run([os.path.join(a.tmp, rule, "nml_step"), str(steps)], env={"OPENBLAS_NUM_THREADS": str(a.threads)})
    kv = keyvals(r.out)
    if not r.ok() or "step_ms" not in kv:
        return {"error": f"nml_step ({rule}) failed: {r.tail()}"}
    n = kv["params"]
    return {"ns": (kv["step_ms"] - kv["forward_ms"]) * 1e6 / n, "step_ns": kv["step_ms"] * 1e6 / n}


def torch_optstep(a, steps):
    """All rules in one process (import torch once): {rule: result}."""
    r = run([PY, os.path.join(BENCH, "torch_optstep.py"), "--rule", ",".join(RULES), "--threads", str(a.threads),
             "--tensors", str(OPT_TENSORS), "--size", str(OPT_SIZE), "--steps", str(steps)],
            env={"OMP_NUM_THREADS": str(a.threads)})
    got = {m.group(1): float(m.group(2)) for m in re.finditer(r"rule=(\w+) ns_per_param=([0-9.]+)", r.out)}
    return {rule: {"ns": got[rule]} if r.ok() and rule in got else
            {"error": f"torch_optstep.py ({rule}) failed: {r.tail()}"} for rule in RULES}


def c_optstep(a, rule, steps):
    """The C loops on 1 and on --threads threads; the faster is the bound (on a busy 2-core machine
    the threaded loop can lose to the single one)."""
    best = None
    for threads in sorted({1, a.threads}):
        r = run([a.optstep, rule, str(OPT_TENSORS), str(OPT_SIZE), str(steps)], env={"OMP_NUM_THREADS": str(threads)})
        kv = keyvals(r.out)
        if not r.ok() or "ns_per_param" not in kv:
            return {"error": f"optstep ({rule}) failed: {r.tail()}"}
        if best is None or kv["ns_per_param"] < best["ns"]:
            best = {"ns": kv["ns_per_param"], "gbs": kv["gbs"], "bytes": kv["bytes"], "threads": threads}
    return best


# ---- setup ----

def cc(out, srcs, flags, libs=()):
    r = run(["cc", *flags, "-o", out, *srcs, *libs])
    if not r.ok():
        fail(f"cannot compile {' '.join(srcs)}:\n{r.err}")


def pick_kernels(a):
    """The OpenBLAS kernel set both sides use: $OPENBLAS_CORETYPE if set; else what OpenBLAS detects,
    unless that is its generic fallback (Debian's 0.3.21 on CPUs it does not know), where nmlc picks
    SkylakeX or Haswell by the CPU's features (compiler/main.c), so this does the same. It is then
    exported, so every child (nmlc, PyTorch, the sgemm probe) loads the same kernels."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        return os.environ["OPENBLAS_CORETYPE"]
    core = run([a.sgemm, "--core"]).out.strip()
    if core == "Prescott":
        flags = set(re.search(r"^flags\s*:(.*)$", open("/proc/cpuinfo").read(), re.M).group(1).split())
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            core = "SkylakeX"
        elif {"avx2", "fma"} <= flags:
            core = "Haswell"
    os.environ["OPENBLAS_CORETYPE"] = core
    return core


def snapshot(a):
    """Copies nmlc, the stdlib and the runtime nmlc build links into the temporary directory and
    points nmlc at them, so that a rebuild or an edit of the tree during the bench (other people
    work in it) neither breaks a run nor mixes two compilers in one table."""
    built = os.path.join(a.build, "compiler", "nmlc")
    if not os.access(built, os.X_OK):
        fail(f"{built} not found (build first: ninja -C {a.build})")
    snap = os.path.join(a.tmp, "nml")
    os.makedirs(os.path.join(snap, "include"))
    a.nmlc = os.path.join(snap, "nmlc")
    shutil.copy2(built, a.nmlc)
    shutil.copytree(os.path.join(ROOT, "stdlib"), os.path.join(snap, "stdlib"))
    os.environ["NML_STDLIB"] = os.path.join(snap, "stdlib")
    lib, inc = os.path.join(a.build, "runtime", "libnmlrt.a"), os.path.join(ROOT, "runtime", "nmlrt.h")
    if os.path.exists(lib) and os.path.exists(inc):
        shutil.copy2(lib, os.path.join(snap, "libnmlrt.a"))
        shutil.copy2(inc, os.path.join(snap, "include", "nmlrt.h"))
        os.environ["NML_RUNTIME_LIB"] = os.path.join(snap, "libnmlrt.a")
        os.environ["NML_INCLUDE_DIR"] = os.path.join(snap, "include")
    a.nmlc_version = run([a.nmlc, "--version"]).out.strip()
    # Read-only git: which tree was measured (diff-index, unlike status or describe --dirty, does
    # not write the index, which others may be using).
    head = run(["git", "rev-parse", "--short", "HEAD"]).out.strip()
    dirty = run(["git", "diff-index", "--quiet", "HEAD", "--"]).status == 1
    a.tree = f"{head}{' + uncommitted changes' if dirty else ''}" if head else "not a git tree"


def setup(a):
    snapshot(a)
    if run([PY, "-c", "import torch"]).status:
        fail(f"{PY} cannot import torch (apt install python3-torch)")
    if not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
        fail(f"no Fashion-MNIST in {DATA} (apt install dataset-fashion-mnist)")
    a.sgemm, a.optstep, a.peak = (os.path.join(a.tmp, x) for x in ("sgemm", "optstep", "peak"))
    cc(a.sgemm, [os.path.join(BENCH, "c", "sgemm.c")], ["-O2", "-fopenmp"], ["-lopenblas"])
    cc(a.peak, [os.path.join(BENCH, "c", "peak.c")], ["-O2", "-pthread"])
    cc(a.optstep, [os.path.join(BENCH, "c", "optstep.c")], ["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
       ["-lm"])
    a.core = pick_kernels(a)
    a.torch_version = run([PY, "-c", "import torch; print(torch.__version__)"]).out.strip()
    a.has_compile = run([PY, "-c", "import torch, sys; sys.exit(not hasattr(torch, 'compile'))"]).status == 0

    # Row 3: the NML side runs once `nmlc check` accepts the CNN (that is, once conv2d exists).
    a.cnn_nml = os.path.join(BENCH, "models", "cnn.nml")
    a.cnn_why = None
    if 3 in a.rows:
        r = run([a.nmlc, "check", a.cnn_nml])
        if not r.ok():
            first = next((l for l in r.err.splitlines() if "error:" in l), r.tail())
            a.cnn_why = "no conv2d" if re.search(r"unknown name '(Conv2d|conv2d|BatchNorm2d|max_pool2d)'", first) \
                else "check fails"
            a.cnn_error = first.strip()

    # Row 5: one library per rule, and the timing driver linked against it.
    a.opt_errors = {}
    if 5 in a.rows:
        for rule in RULES:
            d = os.path.join(a.tmp, rule)
            os.makedirs(d)
            r = run([a.nmlc, "build", os.path.join(BENCH, "models", f"optstep_{rule}.nml"), "-o",
                     os.path.join(d, "libnb.so"), "-q"])
            if not r.ok():
                a.opt_errors[rule] = f"nmlc build failed: {r.tail()}"
                continue
            cc(os.path.join(d, "nml_step"), [os.path.join(BENCH, "c", "nml_step.c")], ["-O2", f"-I{d}"],
               [f"-L{d}", "-lnb", f"-Wl,-rpath,{d}"])


# ---- the table ----

def med(results, key):
    vals = [r[key] for r in results if key in r and r[key] == r[key]]
    return statistics.median(vals) if vals else None


def first_error(results):
    return next((r["error"] for r in results if "error" in r), None)


def fmt(x, unit):
    if x is None:
        return "—"
    if unit in ("samples/s", "ms", "MB"):
        return f"{x:,.0f}"
    return f"{x:.2f}"


def main():
    a = parse_args()
    a.tmp = tempfile.mkdtemp(prefix="nml-bench.")
    try:
        bench(a)
    finally:
        shutil.rmtree(a.tmp, ignore_errors=True)


def loadavg():
    return open("/proc/loadavg").read().split()[0]


def bench(a):
    t_start = time.perf_counter()
    load_before = loadavg()
    setup(a)
    q = a.quick
    lim_mlp = 10000 if q else 0          # 0: the whole epoch, 60,000 samples
    lim_cnn = 1280 if q else 3840
    opt_steps = 10 if q else 20
    mlp1, mlp2 = [784, 512, 256, 10], [784, 64, 10]
    g1, g2, g3 = mlp_gemms(mlp1, 128), mlp_gemms(mlp2, 32), cnn_gemms(128)

    R = {k: [] for k in ("n1", "t1", "n2", "t2", "n3", "t3", "n4", "t4", "t4c", "s1", "s2", "s3", "w1", "w3", "pk")}
    for rule in RULES:
        R["n5" + rule], R["t5" + rule], R["c5" + rule] = [], [], []

    def pair(tag, nml, torch, i):
        """One NML run and one PyTorch run, NML first on even repeats, PyTorch first on odd ones."""
        sides = [("NML", "n" + tag, nml), ("PyTorch", "t" + tag, torch)]
        for side, key, fn in (sides if i % 2 == 0 else sides[::-1]):
            if fn is None:
                continue
            res = fn()
            R[key].append(res)
            show = res.get("error") or ", ".join(f"{k} {v:,.4g}" for k, v in res.items()
                                                 if isinstance(v, (int, float)) and not isinstance(v, bool))
            log(f"  row {tag[0]} {tag[1:]:5} {side:8} {show}")

    for i in range(a.repeat):
        log(f"repeat {i + 1}/{a.repeat}")
        R["pk"].append(fma_peak(a))
        log(f"  FMA peak: {R['pk'][-1]}")
        if 1 in a.rows:
            pair("1", lambda: nml_train(a, os.path.join(BENCH, "models", "mlp512_adam.nml"), lim_mlp),
                 lambda: torch_train(a, "torch_mlp.py", lim_mlp, ["--hidden", "512", "256"]), i)
            R["s1"].append(sgemm_rate(a, g1))
            log(f"  sgemm on row 1's shapes: {R['s1'][-1]}")
            if 6 in a.rows:
                R["w1"].append(nml_cached(a, os.path.join(BENCH, "models", "mlp512_adam.nml"), R["n1"][-1]))
                log(f"  row 6 MLP from the cache: {R['w1'][-1]}")
        if 2 in a.rows:
            pair("2", lambda: nml_train(a, os.path.join(BENCH, "models", "mlp64_sgd.nml"), lim_mlp),
                 lambda: torch_train(a, "torch_mlp.py", lim_mlp,
                                     ["--hidden", "64", "--batch", "32", "--optimizer", "sgd"]), i)
            R["s2"].append(sgemm_rate(a, g2))
            log(f"  sgemm on row 2's shapes: {R['s2'][-1]}")
        if 3 in a.rows:
            pair("3", None if a.cnn_why else lambda: nml_train(a, a.cnn_nml, lim_cnn),
                 lambda: torch_train(a, "torch_cnn.py", lim_cnn, ["--eval-limit", "1000"]), i)
            R["s3"].append(sgemm_rate(a, g3))
            log(f"  sgemm on row 3's shapes: {R['s3'][-1]}")
        if 4 in a.rows:
            pair("4", lambda: nml_train(a, os.path.join(BENCH, "models", "mlp512_ademamix.nml"), lim_mlp),
                 lambda: torch_train(a, "torch_mlp.py", lim_mlp, ["--hidden", "512", "256", "--optimizer", "ademamix"]),
                 i)
            if a.has_compile:
                R["t4c"].append(torch_train(a, "torch_mlp.py", lim_mlp,
                                            ["--hidden", "512", "256", "--optimizer", "ademamix", "--compile"]))
                log(f"  row 4 compile PyTorch  {R['t4c'][-1]}")
        if 5 in a.rows:
            def nml5():
                for rule in RULES:
                    if rule in a.opt_errors:
                        continue
                    R["n5" + rule].append(nml_optstep(a, rule, opt_steps))
                    log(f"  row 5 {rule:5} NML      {R['n5' + rule][-1]}")

            def torch5():
                for rule, res in torch_optstep(a, opt_steps).items():
                    R["t5" + rule].append(res)
                    log(f"  row 5 {rule:5} PyTorch  {res}")

            for fn in ((nml5, torch5) if i % 2 == 0 else (torch5, nml5)):
                fn()
            for rule in RULES:
                R["c5" + rule].append(c_optstep(a, rule, opt_steps))
                log(f"  row 5 {rule:5} C loop   {R['c5' + rule][-1]}")

    if 6 in a.rows and 3 in a.rows and not a.cnn_why and R["n3"]:
        # Once, not per repeat: even 128 samples cost the CNN's whole test-set evaluation.
        R["w3"].append(nml_cached(a, a.cnn_nml, R["n3"][-1]))
        log(f"  row 6 CNN from the cache: {R['w3'][-1]}")

    # rows: (label, unit, nml, torch, better, bound, share), better/share computed below
    rows, notes = [], []

    def best(results, key, pick=min):
        vals = [r[key] for r in results if key in r]
        return pick(vals) if vals else None

    # A bound is what the hardware can do: the best of the repeats, not their median.
    def bound_of(key, batch):
        ms = best(R[key], "step_ms")
        return batch / (ms * 1e-3) if ms else None

    def add(label, unit, nml, torch, key="sps", bound=None, lower=False):
        """A row. nml, torch: the lists of results of each side (the cell is their median under
        `key`), or a string for the cell. lower: smaller is better (time, memory)."""
        pick = min if lower else max

        def stat(x):
            if isinstance(x, str):
                return x, None, None
            m = med(x, key)
            if m is None:
                return ("failed" if first_error(x) else "—"), None, None
            return fmt(m, unit), m, best(x, key, pick)

        def ratio(n, t):
            return (t / n if lower else n / t) if n and t else None

        (nc, nm, nb), (tc, tm, tb) = stat(nml), stat(torch)
        better, better_best = ratio(nm, tm), ratio(nb, tb)
        share = (bound / nm if lower else nm / bound) if bound and nm else None
        rows.append([label, unit, nc, tc, f"{better:.2f}" if better else "—",
                     f"{better_best:.2f}" if better_best else "—", fmt(bound, unit) if bound else "—",
                     f"{share:.0%}" if share else "—"])

    if 1 in a.rows:
        add("1  MLP 784-512-256-10, Adam, batch 128", "samples/s", R["n1"], R["t1"], bound=bound_of("s1", 128))
    if 2 in a.rows:
        add("2  MLP 784-64-10, SGD, batch 32", "samples/s", R["n2"], R["t2"], bound=bound_of("s2", 32))
    if 3 in a.rows:
        b3 = bound_of("s3", 128)
        add("3  CNN 2 conv+BN+pool+dropout, Adam, b 128", "samples/s",
            f"not yet ({a.cnn_why})" if a.cnn_why else R["n3"], R["t3"], bound=b3)
        t3 = med(R["t3"], "sps")
        if a.cnn_why and t3 and b3:
            rows[-1][-1] = f"(PyTorch {t3 / b3:.0%})"
    if 4 in a.rows:
        b4 = bound_of("s1", 128)
        add("4  AdEMAMix, row 1's model: plain PyTorch", "samples/s", R["n4"], R["t4"], bound=b4)
        add("4b   … vs torch.compile of it", "samples/s", R["n4"],
            R["t4c"] if a.has_compile else f"n/a (PyTorch {a.torch_version[:4]})")
    if 5 in a.rows:
        for rule in RULES:
            add(f"5  {rule.capitalize()} update alone, 10M params", "ns/param",
                "failed" if rule in a.opt_errors else R["n5" + rule], R["t5" + rule], key="ns",
                bound=best(R["c5" + rule], "ns"), lower=True)
    if 6 in a.rows:
        add("6  MLP step compile, cold (row 1)", "ms", R["n1"], "n/a (eager)", key="compile_ms", lower=True)
        if 3 in a.rows and not a.cnn_why:
            add("6    CNN step compile, cold (row 3)", "ms", R["n3"], "n/a (eager)", key="compile_ms", lower=True)
        add("6b   process start -> first step (row 1)", "ms", R["n1"], R["t1"], key="first_step_ms", lower=True)
        nocache = any(r.get("nocache") for r in R["w1"])
        add("6c   MLP compile from the cache", "ms", "n/a (no cache)" if nocache else R["w1"], "n/a (eager)",
            key="compile_ms", lower=True)
        if R["w3"] and not nocache:
            add("6c   CNN compile from the cache (1 run)", "ms", R["w3"], "n/a (eager)", key="compile_ms", lower=True)
    if 7 in a.rows:
        for r in (1, 2, 3):
            if r in a.rows:
                add(f"7  peak resident memory, row {r}", "MB",
                    f"not yet ({a.cnn_why})" if r == 3 and a.cnn_why else R[f"n{r}"], R[f"t{r}"], key="rss",
                    lower=True)

    # ---- print ----
    head = ["row", "unit", "NML", "PyTorch", "NML ×", "× best", "bound", "NML/bound"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join
    def cells(r):
        return line([str(c).ljust(widths[0]) if j == 0 else str(c).ljust(widths[1]) if j == 1 else str(c).rjust(widths[j])
                     for j, c in enumerate(r)])

    model = re.search(r"^model name\s*:\s*(.*)$", open("/proc/cpuinfo").read(), re.M)
    print(f"NML vs PyTorch {a.torch_version}: {a.threads} thread(s), OpenBLAS {a.core} kernels on both sides, "
          f"median of {a.repeat} alternating run(s){', --quick' if q else ''}")
    print(f"{a.nmlc_version}, tree {a.tree}; CPU: {model.group(1) if model else '?'}, {os.cpu_count()} cores; "
          f"bench/run.sh took {time.perf_counter() - t_start:.0f} s; 1-minute load average before it {load_before}")
    rates = []
    for key, name in (("s1", "row 1/4"), ("s2", "row 2"), ("s3", "row 3")):
        g = best(R[key], "gflops", max)
        if g:
            rates.append(f"{name} {g:.1f}")
    if rates:
        print("sgemm on each step's own GEMM shapes, best of the repeats, GFLOP/s: " + ", ".join(rates))
    peak, peak_one = best(R["pk"], "all", max), best(R["pk"], "one", max)
    if peak:
        isa = {16: "AVX-512", 8: "AVX2", 4: "SSE"}.get(int(best(R["pk"], "lanes", max)), "?")
        windows = int(sum(r.get("windows", 0) for r in R["pk"]))
        shared = int(sum(r.get("shared", 0) for r in R["pk"]))
        print(f"FMA peak ({isa} on registers, bench/c/peak.c), best of the repeats, GFLOP/s: 1 thread {peak_one:.1f}"
              + (f", {a.threads} threads {peak:.1f}; the {a.threads} threads ran at one core's rate in {shared} of "
                 f"{windows} windows" if a.threads > 1 else ""))
        rtt = [r["rtt"] for r in R["pk"] if "rtt" in r]
        if rtt:
            far = sum(x > 150 for x in rtt)
            print(f"A cache line from one thread to another and back (bench/c/peak.c), at the start of each repeat: "
                  f"{min(rtt):.0f}-{max(rtt):.0f} ns; {far} of {len(rtt)} above 150 ns (virtual CPUs the host placed "
                  f"apart, where a two-thread step that passes data between its threads slows down)")
    print()
    print(cells(head))
    print(cells(["-" * w for w in widths]))
    for r in rows:
        print(cells(r))
    print()
    n_samples = "10,000" if q else "60,000"
    expl = [  # (the rows a note is about, the note)
        ({1, 2, 3, 4, 5, 6, 7}, "NML and PyTorch: medians. NML ×: how many times better NML's median is "
         "(its samples/s over PyTorch's; PyTorch's ns, ms or MB over NML's); × best: the same for the "
         "best run of each side, which noise from other processes disturbs less. bound: the hardware "
         "limit, the best of the repeats; NML/bound: NML's median as a share of it."),
        ({1, 2, 3, 4}, f"1-4: one epoch of {n_samples} samples (row 3: {lim_cnn}) from Fashion-MNIST, training "
         "time only (nmlc's JSONL log; PyTorch after 3-5 untimed warm-up steps). bound: batch / the time of "
         "the step's forward and backward GEMMs run back to back by cblas_sgemm (bench/c/sgemm.c), all else "
         "taken as free: each product whole on OpenBLAS's threads, or in tiles of C of under a million "
         "multiply-adds on one thread each (as nmlc runs them on OpenBLAS's AVX-512 kernels), whichever "
         "is faster."),
        ({3}, "3: NML's side runs once `nmlc check bench/models/cnn.nml` succeeds; it fails with: "
         f"{a.cnn_error}. The bound is the step as im2col GEMMs, one per convolution over the whole batch; "
         "the last cell is PyTorch's share of it."
         if a.cnn_why else "3: the bound is the step as im2col GEMMs, one per convolution over the whole batch."),
        ({4}, "4: PyTorch's AdEMAMix is a torch.optim.Optimizer subclass with per-parameter in-place ops "
         "(bench/torch_mlp.py)" + ("; 4b compiles its step with torch.compile." if a.has_compile else ".")),
        ({5}, "5: 10 tensors of 1M. NML: `nmlc build` library, train_step minus the forward-only predict "
         "(bench/c/nml_step.c); the loss is linear in the parameters, so the gradient is one scalar "
         "broadcast inside the update loop, not read from memory. PyTorch: torch.optim.Adam(foreach=True); "
         "Lion and LAMB written with torch._foreach_* ops (bench/torch_optstep.py). bound: plain C loops "
         f"with the same arithmetic, -O3 -march=native -fno-math-errno, OpenMP on 1 or {a.threads} "
         "thread(s), whichever is faster, reading a stored gradient (bench/c/optstep.c); NML's update "
         f"loops run on {a.threads} thread(s) (runtime/pool.c)."),
    ]
    if 5 in a.rows:
        bw = []
        for rule in RULES:
            runs = [r for r in R["c5" + rule] if "ns" in r]
            if runs:
                b = min(runs, key=lambda r: r["ns"])
                bw.append(f"{rule} {b['bytes']:.0f} B/param at {b['gbs']:.1f} GB/s ({b['threads']} thr.)")
        if bw:
            expl.append(({5}, "5: the C loops move " + ", ".join(bw) + "."))
    expl += [
        ({6}, "6: compile = nmlc's `compiled in` (front end, lowering, JIT): cold = with an empty kernel "
         "cache (NML_CACHE_DIR, a new directory for every run), from the cache = the same program run "
         "again on the directory its cold run filled. start -> first step = wall time of the cold `nmlc "
         "run` minus its -v training phase (loading LLVM, the data, compiling), and for PyTorch the time "
         "to its first step (interpreter, import torch, data, model)."),
        ({7}, "7: peak RSS of the whole process (ru_maxrss via wait4), the data set included on both sides."),
    ]
    if peak:
        # The ceiling of a training row: its products at the FMA peak, everything else free.
        ceil = []
        for r, g, batch in ((1, g1, 128), (2, g2, 32), (3, g3, 128), (4, g1, 128)):
            t = med(R[f"t{r}"], "sps")
            if r in a.rows and t:
                sps = batch / (flops(g) / (peak * 1e9))
                ceil.append(f"row {r} {sps:,.0f} samples/s, {sps / t:.2f}× PyTorch's median")
        if ceil:
            expl.append(({1, 2, 3, 4}, "Ceiling: the step's products at the FMA peak above, all else free: "
                         + "; ".join(ceil) + ". No implementation runs a row faster on this machine."))
    spread = []
    for r in (1, 2, 3, 4):
        for side_name, key in (("NML", f"n{r}"), ("PyTorch", f"t{r}")):
            v = [x["sps"] for x in R[key] if "sps" in x]
            if len(v) > 1:
                spread.append(f"{r} {side_name} {max(v) / min(v):.2f}")
    if spread:
        expl.append(({1, 2, 3, 4}, "Noise, fastest run over slowest: " + ", ".join(spread) + "."))
    expl = [text for rows_of, text in expl if rows_of & a.rows]
    for rule, e in a.opt_errors.items():
        notes.append(f"failed (5 {rule}): {e}")
    for r in R:
        e = first_error(R[r])
        if e:
            notes.append(f"failed ({r}): {e}")
    for s in expl + notes:
        print(textwrap.fill(s, 104, subsequent_indent="   "))


if __name__ == "__main__":
    main()
