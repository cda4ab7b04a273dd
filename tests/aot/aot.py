#!/usr/bin/python3
"""nmlc build: libraries made from small models, driven by a C program compiled here with this
build's compiler and sanitizers, agree bit for bit with nmlc run on the same seed and batches:
initial tensors, per-epoch losses, evaluation loss, trained tensors; checkpoints go both ways.
A module compiled in 1 part and in 3 gives the same library's results. Then the command line's
errors, which must leave no output behind.

  aot.py NMLC LIBNMLRT.A TESTS_DIR RUNTIME_INCLUDE SANITIZE CC...
"""
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

nmlc, nmlrt, tests, runtime_inc, sanitize, cc = (sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4],
                                                 sys.argv[5], sys.argv[6:])
here = os.path.join(tests, "aot")
data = os.path.join(tests, "data")
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")
    return cond


# nmlc under a sanitizer: LLVM's globals look like leaks. The C test program is checked for leaks.
nmlc_env = dict(os.environ, CC=" ".join(cc), ASAN_OPTIONS="detect_leaks=0", OPENBLAS_NUM_THREADS="1")
prog_env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
# nmlc run picks OpenBLAS's kernels when the library falls back to generic ones (compiler/main.c);
# the C program cannot, so both get the same choice here, made the same way.
if "OPENBLAS_CORETYPE" not in os.environ and os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
        flags = set(next((l for l in f if l.startswith("flags")), "").split())
    core = ("SkylakeX" if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
            else "Haswell" if {"avx2", "fma"} <= flags else None)
    if core:
        nmlc_env["OPENBLAS_CORETYPE"] = prog_env["OPENBLAS_CORETYPE"] = core


def nmlc_cmd(*args, env=None, cwd=None):
    return subprocess.run([nmlc, *args], capture_output=True, text=True, env=env or nmlc_env, cwd=cwd)


def tensors(path):
    """name -> (shape, raw bytes) of a safetensors file, and its metadata."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    meta = header.pop("__metadata__", {})
    return {k: (v["shape"], blob[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}, meta


def same_tensors(name, a, b):
    ta, ma = tensors(a)
    tb, mb = tensors(b)
    check(f"{name}: same tensor names", sorted(ta) == sorted(tb), f"{sorted(ta)} vs {sorted(tb)}")
    differ = [k for k in ta if k in tb and ta[k] != tb[k]]
    check(f"{name}: tensors equal bit for bit", not differ, str(differ))
    return ma, mb


def log_records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def compile_program(d):
    """The test program against d/model.h and d/libmodel.so, with this build's compiler flags."""
    exe = os.path.join(d, "test_aot")
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"]
    if sanitize not in ("", "none"):
        flags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
    r = subprocess.run([*cc, *flags, "-I", d, "-I", runtime_inc, "-I", os.path.join(tests, "runtime"),
                        os.path.join(here, "test_aot.c"), os.path.join(d, "libmodel.so"), nmlrt,
                        "-lcjson", "-lz", "-lm", "-lopenblas", f"-Wl,-rpath,{d}", "-o", exe], capture_output=True, text=True)
    check(f"compile test program in {d}", r.returncode == 0, r.stderr)
    return exe if r.returncode == 0 else None


def run_program(exe, d, x, y, epochs, seed, run_ckpt=None):
    args = [exe, d, x, y, str(epochs), str(seed)] + ([run_ckpt] if run_ckpt else [])
    r = subprocess.run(args, capture_output=True, text=True, env=prog_env)
    check(f"{exe} exits 0", r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:])
    losses = [float(l.split()[3]) for l in r.stdout.splitlines() if l.startswith("epoch ")]
    evals = [float(l.split()[1]) for l in r.stdout.splitlines() if l.startswith("eval_loss ")]
    return losses, evals[0] if evals else None


def exports_only_api(name, d):
    """libmodel.so in d exports model_* and nothing else (the kernels and their pieces are hidden)."""
    if not shutil.which("nm"):
        print(f"{name}: exported symbols not checked (no nm)")
        return
    r = subprocess.run(["nm", "-D", "--defined-only", os.path.join(d, "libmodel.so")], capture_output=True, text=True)
    syms = [line.split()[-1] for line in r.stdout.splitlines() if line.strip()]
    check(f"{name}: only the API is exported", r.returncode == 0 and syms and all(s.startswith("model_") for s in syms),
          str(syms) + r.stderr)


def model_case(tmp, name, nml, x, y, epochs, seed):
    """Build NAME.nml, train it through the library and with nmlc run; compare."""
    d = os.path.join(tmp, name)
    os.mkdir(d)
    src = os.path.join(here, nml)
    r = nmlc_cmd("build", src, "-o", os.path.join(d, "libmodel.so"))
    if not check(f"{name}: nmlc build exits 0", r.returncode == 0, r.stderr):
        return
    check(f"{name}: the header is beside the library", os.path.exists(os.path.join(d, "model.h")))
    check(f"{name}: no temporary files left", not glob.glob(os.path.join(d, "*.tmp.*")), str(os.listdir(d)))
    exports_only_api(name, d)

    # nmlc run: the initial tensors (--epochs 0 --save), then the run itself.
    init_run, run_ckpt, log = (os.path.join(d, f) for f in ("init_run.safetensors", "run.safetensors", "run.jsonl"))
    r = nmlc_cmd("run", src, "--epochs", "0", "--save", init_run, "--threads", "1")
    check(f"{name}: nmlc run --epochs 0", r.returncode == 0, r.stderr)
    r = nmlc_cmd("run", src, "--save", run_ckpt, "--log", log, "--threads", "1")
    check(f"{name}: nmlc run", r.returncode == 0, r.stderr)
    recs = log_records(log) if r.returncode == 0 else []

    exe = compile_program(d)
    if not exe:
        return
    losses, eval_loss = run_program(exe, d, x, y, epochs, seed, run_ckpt)
    check(f"{name}: per-epoch losses equal nmlc run's", losses == [rec["train_loss"] for rec in recs],
          f"{losses} vs {[rec['train_loss'] for rec in recs]}")
    check(f"{name}: evaluation loss equals nmlc run's test loss", recs and eval_loss == recs[-1]["test_loss"],
          f"{eval_loss} vs {recs[-1]['test_loss'] if recs else None}")
    same_tensors(f"{name}: initial", os.path.join(d, "init.safetensors"), init_run)
    ma, mb = same_tensors(f"{name}: trained", os.path.join(d, "trained.safetensors"), run_ckpt)
    check(f"{name}: same step in the metadata", ma.get("step") == mb.get("step"), f"{ma} vs {mb}")
    hp = sorted(k for k in mb if k.startswith("hparam."))
    check(f"{name}: same hyperparameters in the metadata", [ma.get(k) for k in hp] == [mb[k] for k in hp],
          f"{ma} vs {mb}")
    # The library's checkpoint starts nmlc run (parameters only: it has no epoch to resume).
    r = nmlc_cmd("run", src, "--init", os.path.join(d, "trained.safetensors"), "--epochs", "0")
    check(f"{name}: nmlc run --init the library's checkpoint", r.returncode == 0, r.stderr)
    print(f"{name}: losses {' '.join(f'{v:.6f}' for v in losses)}, equal to nmlc run's")
    return losses


def parts_case(tmp, x, y):
    """parts.nml, whose step has pieces of its own, compiled in 1 part and in 3 (NML_JIT_THREADS, as
    the JIT): the C compiler links that many kernel objects, and the two libraries give the same
    losses and the same checkpoints, byte for byte; the 3-part one exports only the API."""
    out = {}
    for n in (1, 3):
        name = f"{n} part(s)"
        d = os.path.join(tmp, f"parts{n}")
        os.mkdir(d)
        r = nmlc_cmd("build", os.path.join(here, "parts.nml"), "-o", os.path.join(d, "libmodel.so"), "-v",
                     env=dict(nmlc_env, NML_JIT_THREADS=str(n)))
        if not check(f"{name}: nmlc build exits 0", r.returncode == 0, r.stderr[-3000:]):
            return
        objects = re.findall(r"/kernels(\d+)\.o ", r.stderr)
        check(f"{name}: the library links {n} kernel object(s)", objects == [str(i) for i in range(n)],
              r.stderr[-3000:])
        exports_only_api(name, d)
        exe = compile_program(d)
        if not exe:
            return
        losses, eval_loss = run_program(exe, d, x, y, 3, 7)
        files = []
        for f in ("init.safetensors", "trained.safetensors"):
            with open(os.path.join(d, f), "rb") as fh:
                files.append(fh.read())
        out[n] = (losses, eval_loss, files)
    check("3 parts: the losses of 1", out[3][:2] == out[1][:2] and len(out[1][0]) == 3, f"{out[3][:2]} vs {out[1][:2]}")
    check("3 parts: the checkpoints of 1, byte for byte", out[3][2] == out[1][2])
    print(f"parts: losses {' '.join(f'{v:.6f}' for v in out[1][0])} in 1 part and in 3")


def generic_cpu(tmp, x, y, host_losses):
    """--cpu x86-64: baseline code trains the same model to the same losses up to rounding."""
    if os.uname().machine != "x86_64":
        return
    d = os.path.join(tmp, "generic")
    os.mkdir(d)
    r = nmlc_cmd("build", os.path.join(here, "cls.nml"), "-o", os.path.join(d, "libmodel.so"), "--cpu", "x86-64")
    if not check("--cpu x86-64 builds", r.returncode == 0, r.stderr):
        return
    check("--cpu x86-64 says so", "cpu x86-64" in r.stdout, r.stdout)
    exe = compile_program(d)
    if exe and host_losses:
        losses, _ = run_program(exe, d, x, y, 4, 3)
        check("--cpu x86-64 trains like the host's code", len(losses) == len(host_losses) and all(
            abs(a - b) <= 1e-5 * abs(b) for a, b in zip(losses, host_losses)), f"{losses} vs {host_losses}")


def embed_example(tmp):
    """examples/embed builds as its README says and learns on a slice of Fashion-MNIST."""
    data_dir = "/usr/share/datasets/fashion-mnist"
    if not os.path.exists(os.path.join(data_dir, "train-images-idx3-ubyte.gz")):
        print("embed example: skipped (no Fashion-MNIST)")
        return
    d = os.path.join(tmp, "embed")
    os.mkdir(d)
    root = os.path.dirname(tests)
    r = nmlc_cmd("build", os.path.join(root, "examples/fashion_mlp.nml"), "-o", os.path.join(d, "libfashion.so"))
    if not check("embed: nmlc build", r.returncode == 0, r.stderr):
        return
    flags = ["-O2", "-Wall", "-Wextra", "-Werror"]
    if sanitize not in ("", "none"):
        flags += [f"-fsanitize={sanitize}"]
    exe = os.path.join(d, "train")
    r = subprocess.run([*cc, *flags, f"-I{d}", os.path.join(root, "examples/embed/train.c"), f"-L{d}", "-lfashion",
                        "-lz", f"-Wl,-rpath,{d}", "-o", exe], capture_output=True, text=True)
    if not check("embed: the example compiles", r.returncode == 0, r.stderr):
        return
    r = subprocess.run([exe, data_dir, "15000"], capture_output=True, text=True, env=prog_env, cwd=d)
    last = [l for l in r.stdout.splitlines() if l.startswith("epoch 1")]
    acc = float(last[0].split("test_acc")[1].split()[0]) if last else 0
    # 15000 samples, one epoch: about 0.78; an untrained model is near 0.1.
    check("embed: the example learns", r.returncode == 0 and acc > 0.65, r.stdout + r.stderr)
    check("embed: the example saves", os.path.exists(os.path.join(d, "fashion.safetensors")))
    print(f"embed example: {last[0] if last else '?'}")


def errors(tmp):
    d = os.path.join(tmp, "errors")
    os.mkdir(d)
    cls = os.path.join(here, "cls.nml")
    r = nmlc_cmd("build", cls)
    check("no -o: usage error", r.returncode == 2 and "needs -o" in r.stderr, r.stderr)
    r = nmlc_cmd("build", cls, "-o", os.path.join(d, "no/such/dir/libx.so"))
    check("missing directory: error", r.returncode == 1 and "cannot write" in r.stderr, r.stderr)
    r = nmlc_cmd("build", cls, "-o", d)
    check("-o a directory: error", r.returncode == 1 and "is a directory" in r.stderr, r.stderr)
    r = nmlc_cmd("build", cls, "-o", os.path.join(d, "lib9x.so"))
    check("a name that is no C prefix: error", r.returncode == 1 and "libNAME.so" in r.stderr, r.stderr)
    r = nmlc_cmd("build", cls, "-o", os.path.join(d, "libx.so"), "--cpu", "no-such-cpu")
    check("an unknown --cpu: error", r.returncode == 1 and "not a recognized processor" in r.stderr, r.stderr)
    bad = os.path.join(d, "bad.nml")
    with open(bad, "w") as f:
        f.write("train {\n  model = Nope(\n}\n")
    r = nmlc_cmd("build", bad, "-o", os.path.join(d, "libbad.so"))
    check("a file with errors: exit 1", r.returncode == 1 and "error" in r.stderr, r.stderr)
    # A failing C compiler: an existing library is left as it was, nothing else appears.
    keep = os.path.join(d, "libkeep.so")
    with open(keep, "w") as f:
        f.write("old")
    r = nmlc_cmd("build", cls, "-o", keep, env=dict(nmlc_env, CC="false"))
    check("failing cc: exit 1", r.returncode == 1 and "linking the library failed" in r.stderr, r.stderr)
    with open(keep) as f:
        check("failing cc: the old library stays", f.read() == "old")
    r = nmlc_cmd("build", cls, "-o", keep, env=dict(nmlc_env, CC="/nonexistent/cc"))
    check("missing cc: exit 1", r.returncode == 1 and "cannot run the C compiler" in r.stderr, r.stderr)
    # Names that clash with the runtime linked into the library (F: -o libnml.so once failed in the C
    # compiler with pages of errors).
    for lib in ("libnmlrt.so", "libnml.so", "libNML.so", "libnml_model.so", "librt.so", "librt_x.so", "rtutil"):
        r = nmlc_cmd("build", cls, "-o", os.path.join(d, lib))
        check(f"-o {lib}: clashes with the runtime", r.returncode == 1 and "clashes with the NML runtime" in r.stderr
              and "error:" not in r.stderr.split("nmlc: error:", 1)[-1], r.stderr[-2000:])
    # A header of the user's where NAME.h would go is not replaced; a FIFO as the library is refused.
    user_h = os.path.join(d, "util.h")
    with open(user_h, "w") as f:
        f.write("int util(void);\n")
    r = nmlc_cmd("build", cls, "-o", os.path.join(d, "libutil.so"))
    check("a user's NAME.h: refused", r.returncode == 1 and "was not written by nmlc build" in r.stderr, r.stderr)
    with open(user_h) as f:
        check("a user's NAME.h: kept", f.read() == "int util(void);\n")
    fifo = os.path.join(d, "libfifo.so")
    os.mkfifo(fifo)
    r = nmlc_cmd("build", cls, "-o", fifo)
    check("-o a FIFO: refused", r.returncode == 1 and "not a regular file" in r.stderr, r.stderr)
    check("-o a FIFO: still a FIFO", not os.path.isfile(fifo))
    os.remove(fifo)
    left = sorted(os.listdir(d))
    check("errors leave nothing behind", left == ["bad.nml", "libkeep.so", "util.h"], str(left))
    # Building again over its own header and library works.
    again = os.path.join(tmp, "again")
    os.mkdir(again)
    for i in range(2):
        r = nmlc_cmd("build", cls, "-o", os.path.join(again, "libm.so"), "-q")
        check(f"build #{i + 1} into the same place", r.returncode == 0, r.stderr)


def abi_mismatch(tmp):
    """A library whose tables were made for another runtime ABI: creating a model fails."""
    d = os.path.join(tmp, "abi")
    os.mkdir(d)
    # The C compiler nmlc build runs rewrites the generated tables' ABI version first: the library
    # a different nmlc would have made, linked with this runtime.
    wrapper = os.path.join(d, "cc")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in */model.c) "
                "sed -i 's/[.]abi = [A-Z_]*ABI_VERSION/.abi = 999/' \"$a\";; esac; done\n"
                f"exec {' '.join(cc)} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    r = nmlc_cmd("build", os.path.join(here, "cls.nml"), "-o", os.path.join(d, "libmodel.so"),
                 env=dict(nmlc_env, CC=wrapper))
    if not check("abi: nmlc build with the rewriting compiler", r.returncode == 0, r.stderr):
        return
    with open(os.path.join(d, "model.h")) as f:
        check("abi: the header records the ABI version", "#define MODEL_ABI_VERSION" in f.read())
    prog = os.path.join(d, "abi.c")
    with open(prog, "w") as f:
        f.write('#include <stdio.h>\n#include "model.h"\n'
                'int main(void) { model_model *m = model_create(1); puts(m ? "created" : "refused");'
                ' model_free(m); return 0; }\n')
    exe = os.path.join(d, "abi")
    flags = [f"-fsanitize={sanitize}"] if sanitize not in ("", "none") else []
    r = subprocess.run([*cc, *flags, "-I", d, prog, os.path.join(d, "libmodel.so"), f"-Wl,-rpath,{d}", "-o", exe],
                       capture_output=True, text=True)
    if not check("abi: compile the program", r.returncode == 0, r.stderr):
        return
    r = subprocess.run([exe], capture_output=True, text=True, env=prog_env)
    check("abi: the runtime refuses a library made for another ABI", r.stdout.strip() == "refused",
          r.stdout + r.stderr)


def huge_batch(tmp):
    """--batch beyond the runtime's sizes is a usage error; a library built for 2^31 - 1 rows
    either cannot be created (NULL: its batch buffers are larger than memory) or trains on 40 rows
    as the library built for 40 does, committing no more memory than those rows need; neither
    crashes. (tests/repro: F05c, the batch gather of 2^62 rows that wrapped.)"""
    d = os.path.join(tmp, "huge")
    os.mkdir(d)
    reg = os.path.join(here, "reg.nml")
    r = nmlc_cmd("build", reg, "-o", os.path.join(d, "libregb.so"), "--batch", "4611686018427387904")
    check("--batch 2^62: usage error", r.returncode == 2 and "--batch wants a whole number of at most" in r.stderr,
          r.stderr)
    check("--batch 2^62: nothing written", not os.listdir(d), str(os.listdir(d)))
    prog = os.path.join(d, "huge.c")
    with open(prog, "w") as f:
        f.write('#include <stdio.h>\n#include "regb.h"\n'
                "int main(void) {\n"
                "  regb_model *m = regb_create(1);\n"
                '  if (!m) { puts("create failed"); return 0; }\n'
                "  static float x[40 * 6], y[40 * 2];\n"
                "  for (int i = 0; i < 40 * 6; i++) x[i] = (float)(i % 7) / 7;\n"
                "  for (int i = 0; i < 40 * 2; i++) y[i] = (float)(i % 3) / 3;\n"
                "  double loss = 0;\n"
                "  int rc = regb_train_step(m, x, y, 40, &loss);\n"
                '  printf("rc %d loss %.9g %s\\n", rc, loss, rc ? regb_error(m) : "");\n'
                "  regb_free(m);\n  return 0;\n}\n")
    flags = [f"-fsanitize={sanitize}"] if sanitize not in ("", "none") else []
    # An allocation larger than memory returns NULL under ASan too, as it does in a plain build.
    env = dict(prog_env, ASAN_OPTIONS="allocator_may_return_null=1")
    env.pop("MALLOC_PERTURB_", None)  # meson test sets it: glibc would then fill (and touch) every allocation
    out, rss = {}, {}
    for batch in ("40", "100000000", "2147483647"):
        sub = os.path.join(d, batch)
        os.mkdir(sub)
        r = nmlc_cmd("build", reg, "-o", os.path.join(sub, "libregb.so"), "--batch", batch)
        if not check(f"--batch {batch}: builds", r.returncode == 0, r.stderr):
            return
        exe = os.path.join(sub, "huge")
        r = subprocess.run([*cc, *flags, "-I", sub, prog, os.path.join(sub, "libregb.so"), f"-Wl,-rpath,{sub}",
                            "-o", exe], capture_output=True, text=True)
        if not check(f"--batch {batch}: compile the program", r.returncode == 0, r.stderr):
            return
        with tempfile.TemporaryFile("w+") as o:
            p = subprocess.Popen([exe], stdout=o, stderr=subprocess.STDOUT, text=True, env=env)
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            o.seek(0)
            stdout = o.read()
        rss[batch] = usage.ru_maxrss  # kB
        check(f"--batch {batch}: the program exits 0", p.returncode == 0, f"exit {p.returncode}: {stdout}")
        out[batch] = stdout.strip()
    check("--batch 40: one step", out["40"].startswith("rc 0 loss "), out["40"])
    # 10^8 rows: 3.2 GB of batch buffers allocated, a few kB of them touched.
    check("--batch 10^8: the same step as at batch 40", out["100000000"] == out["40"], f"{out['100000000']} vs {out['40']}")
    if sanitize in ("", "none"):  # the sanitizers' shadow memory has its own cost
        check("--batch 10^8: memory as at batch 40", rss["100000000"] < rss["40"] + 64 * 1024, str(rss))
    check("--batch 2^31 - 1: not created, or the same step as at batch 40",
          out["2147483647"] in ("create failed", out["40"]), f"{out['2147483647']} vs {out['40']}")
    print(f"huge batch: {out['2147483647']}")


with tempfile.TemporaryDirectory() as tmp:
    # nmlc's scratch directories go here, to check that every build, failed or not, removes its own.
    scratch = os.path.join(tmp, "scratch")
    os.mkdir(scratch)
    nmlc_env["TMPDIR"] = scratch
    x = os.path.join(data, "blobs_x.npy")
    cls_losses = model_case(tmp, "cls", "cls.nml", x, os.path.join(data, "blobs_y.npy"), 4, 3)
    model_case(tmp, "reg", "reg.nml", x, os.path.join(data, "reg_t.npy"), 3, 11)
    img_x, img_y = os.path.join(data, "img_x.npy"), os.path.join(data, "img_y.npy")
    model_case(tmp, "cnn", "cnn.nml", img_x, img_y, 3, 5)
    model_case(tmp, "parts", "parts.nml", img_x, img_y, 3, 7)
    parts_case(tmp, img_x, img_y)
    generic_cpu(tmp, x, os.path.join(data, "blobs_y.npy"), cls_losses)
    embed_example(tmp)
    abi_mismatch(tmp)
    huge_batch(tmp)
    errors(tmp)
    check("no scratch directories left", not os.listdir(scratch), str(os.listdir(scratch)))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
