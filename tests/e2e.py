#!/usr/bin/python3
"""End to end: nmlc run trains the Fashion-MNIST example on a slice of the data.

Checks that the loss falls and test accuracy passes a bound no untrained model reaches, that the
same seed gives identical losses, that --save / --init round-trip the parameters, that --set
changes a hyperparameter, and that bad checkpoints and options fail cleanly."""
import json
import os
import signal
import subprocess
import sys
import tempfile

nmlc, example = sys.argv[1], sys.argv[2]
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def run(*args, expect=0):
    r = subprocess.run([nmlc, "run", example, "--threads", "2", *args], capture_output=True, text=True)
    if r.returncode != expect:
        print(r.stdout, r.stderr)
    return r


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


with tempfile.TemporaryDirectory() as tmp:
    log1, log2 = os.path.join(tmp, "a.jsonl"), os.path.join(tmp, "b.jsonl")
    ckpt = os.path.join(tmp, "p.safetensors")
    slice_args = ["--limit", "6000", "--epochs", "3", "--seed", "5"]
    r = run(*slice_args, "--log", log1, "--save", ckpt)
    check("run exits 0", r.returncode == 0, r.stderr)
    recs = records(log1) if r.returncode == 0 else []
    check("one record per epoch", len(recs) == 3, str(recs))
    if len(recs) == 3:
        keys = {"epoch", "train_loss", "test_loss", "test_accuracy", "samples_per_sec", "seconds"}
        check("record keys", keys <= set(recs[0]), str(recs[0]))
        check("train loss falls", recs[2]["train_loss"] < recs[0]["train_loss"] * 0.8,
              f"{recs[0]['train_loss']} -> {recs[2]['train_loss']}")
        check("test loss falls", recs[2]["test_loss"] < recs[0]["test_loss"], str(recs))
        # Ten balanced classes: an untrained model is near 0.1; 6000 samples and 3 epochs reach ~0.8.
        check("accuracy past chance", recs[2]["test_accuracy"] > 0.7, str(recs[2]["test_accuracy"]))
        print(f"slice: train loss {recs[0]['train_loss']:.4f} -> {recs[2]['train_loss']:.4f}, "
              f"test accuracy {recs[2]['test_accuracy']:.4f}, {recs[2]['samples_per_sec']:.0f} samples/s")

    r = run(*slice_args, "--log", log2)
    recs2 = records(log2) if r.returncode == 0 else []
    check("same seed, same losses",
          [x["train_loss"] for x in recs] == [x["train_loss"] for x in recs2] and len(recs) == 3,
          f"{recs} vs {recs2}")

    # An interrupted run (here: stopped after 2 of 3 epochs, T = 3 epochs of 47 steps) resumed with
    # --resume ends bit for bit where the uninterrupted one did.
    part = os.path.join(tmp, "part.safetensors")
    r = run("--limit", "6000", "--epochs", "2", "--seed", "5", "--set", "T=141", "--save", part)
    r = run("--limit", "6000", "--epochs", "3", "--resume", part, "--save", part)
    with open(ckpt, "rb") as a, open(part, "rb") as b:
        check("--resume is exact", r.returncode == 0 and a.read() == b.read(), r.stdout + r.stderr)
    r = run("--epochs", "3", "--resume", os.path.join(tmp, "nosuch.safetensors"), expect=1)
    check("--resume of a missing file", r.returncode == 1 and "nosuch" in r.stderr, r.stderr)
    os.remove(part)

    # Evaluating the saved parameters gives the last epoch's test figures.
    r = run("--epochs", "0", "--init", ckpt)
    check("init + evaluate", r.returncode == 0 and "test_acc" in r.stdout, r.stdout + r.stderr)
    if r.returncode == 0 and recs:
        words = r.stdout.split()
        acc = float(words[words.index("test_acc") + 1])
        check("checkpoint round trip", abs(acc - recs[-1]["test_accuracy"]) < 1e-4, f"{acc} vs {recs[-1]}")

    # A hyperparameter changed from the command line changes training: lr = 0 freezes the model.
    small = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "ir", "features.nml")
    r = subprocess.run([nmlc, "run", small, "--epochs", "3", "--set", "lr=0", "--log", log2, "--force"],
                       capture_output=True, text=True)
    recs3 = records(log2) if r.returncode == 0 else []
    check("--set lr=0 freezes the model", len(recs3) == 3 and len({x["test_loss"] for x in recs3}) == 1,
          str(recs3) + r.stderr)
    r = subprocess.run([nmlc, "run", small, "--epochs", "3", "--log", log2, "--force"], capture_output=True, text=True)
    recs4 = records(log2) if r.returncode == 0 else []
    check("--set changes training", len(recs4) == 3 and recs4[2]["test_loss"] < recs3[0]["test_loss"], str(recs4))
    nan_ckpt = os.path.join(tmp, "nan.safetensors")
    r = subprocess.run([nmlc, "run", small, "--epochs", "3", "--set", "lr=1e30", "--save", nan_ckpt],
                       capture_output=True, text=True)
    check("a diverging run stops", r.returncode == 1 and "loss is nan" in r.stderr, r.stderr)
    check("the last good epoch is kept", not os.path.exists(nan_ckpt), r.stderr)
    check("divergence is explained", "nn.nml:8:18: note: the first value that is not finite: matmul" in r.stderr,
          r.stderr)
    r = run("--limit", "1000", "--epochs", "1", "--set", "eps=0", "--set", "b2=0", expect=1)
    check("divergence in the update is explained",
          "optim.nml:21:30: note: the first value that is not finite: div [128, 10] at step 1" in r.stderr,
          r.stderr)
    r = run("--limit", "1000", "--epochs", "1", "--set", "lr=2e-3")
    check("--set scales a number times a schedule", "adam(lr=0.002*schedule" in r.stdout, r.stdout)
    other = os.path.join(tmp, "divided.nml")
    with open(example) as f:
        text = f.read()
    with open(other, "w") as f:
        f.write(text.replace("1e-3 * linear_decay(t, T)", "linear_decay(t, T) / 1000"))
    r = subprocess.run([nmlc, "run", other, "--set", "lr=1"], capture_output=True, text=True)
    os.unlink(other)
    check("another schedule cannot be --set", "1e-3 * linear_decay(t, T)" in text and r.returncode == 1
          and "is a schedule" in r.stderr and "a number times the schedule" in r.stderr, r.stderr)

    # CSV data: the blobs as CSV train exactly as the same rows from .npy files do.
    src = open(small).read()
    data = os.path.join(os.path.dirname(small), "..", "..", "data")
    via_npy, via_csv = os.path.join(tmp, "npy.nml"), os.path.join(tmp, "csv.nml")
    with open(via_npy, "w") as f:
        f.write(src.replace('"../../data/', '"' + data + "/"))
    with open(via_csv, "w") as f:
        f.write(src.replace('npy("../../data/blobs_x.npy", "../../data/blobs_y.npy")',
                            'csv("%s/blobs.csv")' % data))
    losses = []
    for path in (via_npy, via_csv):
        r = subprocess.run([nmlc, "run", path, "--epochs", "2", "--log", log2, "--force"], capture_output=True, text=True)
        losses.append([(x["train_loss"], x["test_loss"]) for x in records(log2)] if r.returncode == 0 else r.stderr)
    check("csv() reads what npy() reads", len(losses[0]) == 2 and losses[0] == losses[1], str(losses))
    reg = os.path.join(tmp, "reg.nml")
    with open(reg, "w") as f:
        f.write('use std.nn\nuse std.optim\ntrain {\n  data = csv("%s/reg.csv", label = 0, regression = 1)\n'
                '  model = Linear(6, 1)\n  loss = mse(model(x), y)\n  optimizer = adam(lr = 0.05)\n}\n' % data)
    r = subprocess.run([nmlc, "run", reg, "--epochs", "20", "--log", log2, "--force"], capture_output=True, text=True)
    recs6 = records(log2) if r.returncode == 0 else []
    check("csv() regression trains", len(recs6) == 20 and recs6[-1]["train_loss"] < 0.5 * recs6[0]["train_loss"],
          r.stderr + str(recs6[-1:] ))
    os.remove(via_npy), os.remove(via_csv), os.remove(reg)

    # --batch: ceil(1000 / 256) = 4 steps per epoch.
    r = run("--limit", "1000", "--epochs", "2", "--batch", "256", "--log", log2, "--force")
    recs5 = records(log2) if r.returncode == 0 else []
    check("--batch sets the steps per epoch", [x.get("step") for x in recs5] == [4, 8], str(recs5))

    # The command line itself.
    r = subprocess.run([nmlc, "--version"], capture_output=True, text=True)
    check("--version", r.returncode == 0 and r.stdout.startswith("nmlc "), r.stdout)
    r = subprocess.run([nmlc, "--help"], capture_output=True, text=True)
    check("--help", r.returncode == 0 and "usage: nmlc" in r.stdout and "gradcheck" in r.stdout, r.stdout)
    for bad in (["frobnicate", example], ["run", example, "--epochs", "many"], ["run"],
                ["run", example, "--bogus"], ["show", example]):
        r = subprocess.run([nmlc, *bad], capture_output=True, text=True)
        check(f"usage error {bad[1:]}", r.returncode == 2 and "error" in r.stderr, r.stderr)

    # Ctrl-C stops training after the current batch; the last finished epoch stays saved.
    saved = os.path.join(tmp, "int.safetensors")
    p = subprocess.Popen([nmlc, "run", example, "--threads", "2", "--limit", "5000", "--epochs", "1000",
                          "--save", saved], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("epoch"):
            p.send_signal(signal.SIGINT)
            break
    out, err = p.communicate(timeout=120)
    check("Ctrl-C stops cleanly", p.returncode == 130 and "interrupted in epoch" in err
          and "--resume" in err and os.path.exists(saved), f"{p.returncode} {err}")
    os.remove(saved)

    # Failures: a clear message, a non-zero exit, nothing written.
    r = run("--set", "nosuch=1", expect=1)
    check("unknown hyperparameter", r.returncode == 1 and "no hyperparameter 'nosuch'" in r.stderr, r.stderr)
    r = run("--init", os.path.join(tmp, "missing.safetensors"), expect=1)
    check("missing checkpoint", r.returncode == 1 and "missing.safetensors" in r.stderr, r.stderr)
    bad = os.path.join(tmp, "nodir", "x.safetensors")
    r = run("--limit", "500", "--epochs", "1", "--save", bad, expect=1)
    check("unwritable --save", r.returncode == 1 and not os.path.exists(bad), r.stderr)
    check("no temporary files left", sorted(os.listdir(tmp)) == ["a.jsonl", "b.jsonl", "p.safetensors"],
          str(os.listdir(tmp)))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
