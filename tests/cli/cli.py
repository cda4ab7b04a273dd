#!/usr/bin/python3
"""The command line (docs/cli.md): usage errors exit 2 and name what is wrong, before anything is
compiled; help for every command, on stdout; "did you mean"; -q and -v; every option documented.

usage: cli.py NMLC DIR DOCS   (DIR holds tiny.nml; DOCS is docs/cli.md)"""
import os
import re
import subprocess
import sys
import tempfile

nmlc, here, docs = sys.argv[1], sys.argv[2], sys.argv[3]
tiny = os.path.join(here, "tiny.nml")
# Usage errors must be found before the file is read: with a file that does not exist, a usage
# error exits 2, and anything that got past the command line exits 1.
missing = os.path.join(here, "no-such-file.nml")
commands = ["run", "check", "show", "gradcheck", "build", "repl"]
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}\n  {detail}".rstrip())
    return cond


def nmlc_run(*args, stdin=""):
    return subprocess.run([nmlc, *args], capture_output=True, text=True, input=stdin, timeout=120)


def usage_error(name, args, expect):
    """args exit 2 with nothing on stdout and `expect` (a substring) in the message."""
    r = nmlc_run(*args)
    check(f"usage error: {name}", r.returncode == 2 and expect in r.stderr and not r.stdout
          and r.stderr.startswith("nmlc: error: "), f"{args}: exit {r.returncode}\n{r.stdout}{r.stderr}")


# ---- 1. every usage error exits 2, and a bad number names its option ----

for name, args, expect in [
    ("--set without =", ["run", missing, "--set", "lr"], "--set wants NAME=NUMBER, got 'lr'"),
    ("--set lr=abc", ["run", missing, "--set", "lr=abc"], "'abc' in 'lr=abc' is not a finite number"),
    ("--set lr=", ["run", missing, "--set", "lr="], "is not a finite number"),
    ("--set lr=1e999", ["run", missing, "--set", "lr=1e999"], "'1e999' in 'lr=1e999' is not a finite number"),
    ("--set lr=nan", ["run", missing, "--set", "lr=nan"], "is not a finite number"),
    ("--set lr=inf", ["run", missing, "--set", "lr=inf"], "is not a finite number"),
    ("--set lr=0.1x", ["run", missing, "--set", "lr=0.1x"], "is not a finite number"),
    ("--set =3", ["run", missing, "--set", "=3"], "is not a name"),
    ("--set 1r=3", ["run", missing, "--set", "1r=3"], "'1r' in '1r=3' is not a name"),
    ("--set on build", ["build", missing, "-o", "libx.so", "--set", "lr=abc"], "not a finite number"),
    ("--set on repl", ["repl", "--set", "lr=abc"], "not a finite number"),
    ("--batch 0", ["run", missing, "--batch", "0"], "--batch wants a whole number of at least 1, got '0'"),
    ("--batch -1", ["run", missing, "--batch", "-1"], "--batch wants a whole number of at least 1, got '-1'"),
    ("--batch 2^62", ["run", missing, "--batch", "4611686018427387904"],
     "--batch wants a whole number of at most 2147483647, got '4611686018427387904'"),
    ("--epochs 1e999", ["run", missing, "--epochs", "1e999"], "--epochs wants a whole number of at least 0, got '1e999'"),
    ("--epochs 1e3", ["run", missing, "--epochs", "1e3"], "--epochs wants a whole number"),
    ("--epochs 2.5", ["run", missing, "--epochs", "2.5"], "--epochs wants a whole number"),
    ("--epochs many", ["run", missing, "--epochs", "many"], "--epochs wants a whole number"),
    ("--epochs +3", ["run", missing, "--epochs", "+3"], "--epochs wants a whole number"),
    ("--epochs ''", ["run", missing, "--epochs", ""], "--epochs wants a whole number"),
    ("--epochs 2^32+1", ["run", missing, "--epochs", "4294967297"], "--epochs wants a whole number of at most 2147483647"),
    ("--epochs 10^30", ["run", missing, "--epochs", "1" + "0" * 30], "of at most 2147483647"),
    ("--seed -1", ["run", missing, "--seed", "-1"], "--seed wants a whole number of at least 0, got '-1'"),
    ("--seed 2^53+1", ["run", missing, "--seed", "9007199254740993"], "--seed wants a whole number of at most 9007199254740992"),
    ("--threads 0", ["run", missing, "--threads", "0"], "--threads wants a whole number of at least 1"),
    ("--limit 0", ["run", missing, "--limit", "0"], "--limit wants a whole number of at least 1"),
    ("gradcheck --batch 0", ["gradcheck", missing, "--batch", "0"], "--batch wants a whole number of at least 1"),
    ("build --epochs -2", ["build", missing, "-o", "libx.so", "--epochs", "-2"], "--epochs wants a whole number"),
    ("--epochs=x", ["run", missing, "--epochs=x"], "--epochs wants a whole number of at least 0, got 'x'"),
    ("--save at the end", ["run", missing, "--save"], "--save needs a value"),
    ("--save --epochs 3", ["run", missing, "--save", "--epochs", "3"], "--save needs a value"),
    ("-o ''", ["build", missing, "-o", ""], "-o wants"),
    ("--quiet=1", ["run", missing, "--quiet=1"], "--quiet takes no value"),
    ("unknown command", ["frobnicate", missing], "unknown command 'frobnicate'"),
    ("unknown option", ["run", missing, "--bogus"], "unknown option '--bogus'"),
    ("an option of another command", ["run", missing, "--cpu", "x86-64"], "--cpu is an option of nmlc build, not of nmlc run"),
    ("--echo is repl's", ["run", missing, "--echo"], "--echo is an option of nmlc repl"),
    ("-v is not repl's", ["repl", "-v"], "-v is an option of nmlc"),
    ("an option before the command", ["-v", "run", missing], "'-v' goes after the command"),
    ("no file", ["run"], "nmlc run needs a FILE.nml"),
    ("no file for check", ["check", "-v"], "nmlc check needs a FILE.nml"),
    ("two files", ["run", missing, tiny], "more than one file"),
    ("build without -o", ["build", missing], "nmlc build needs -o"),
    ("show without WHAT", ["show", missing], "nmlc show needs one of --ast"),
    ("show with two", ["show", "--ir", "--grad", missing], "not both"),
    ("--init and --resume", ["run", missing, "--init", "a.safetensors", "--resume", "b.safetensors"], "not both"),
    ("help of two", ["help", "run", "check"], "help takes one command"),
    ("help of nothing known", ["help", "frobnicate"], "unknown command 'frobnicate'"),
    ("--version with more", ["--version", "run"], "--version takes nothing"),
]:
    usage_error(name, args, expect)

r = nmlc_run()
check("nmlc alone: exit 2, the commands on stderr", r.returncode == 2 and not r.stdout
      and all(c in r.stderr for c in commands), r.stderr)

# Each usage error says where to look, and it is the command's own help when there is a command.
r = nmlc_run("run", missing, "--batch", "0")
check("a usage error points at the command's help", "nmlc help run" in r.stderr, r.stderr)

# What only compiling can tell stays an error of the run, exit 1: an unknown hyperparameter.
r = nmlc_run("run", tiny, "--set", "nosuch=1", "--epochs", "1")
check("unknown hyperparameter: exit 1", r.returncode == 1 and "no hyperparameter 'nosuch'" in r.stderr,
      f"exit {r.returncode}: {r.stderr}")
r = nmlc_run("run", missing)
check("a missing file: exit 1", r.returncode == 1 and "no-such-file.nml" in r.stderr, f"exit {r.returncode}: {r.stderr}")

# Well-formed values still work, in both spellings.
r = nmlc_run("run", tiny, "--epochs=2", "--set=lr=0.05", "--set", "wd=0", "--batch", "16", "--seed", "3")
epochs = [ln for ln in r.stdout.splitlines() if ln.startswith("epoch")]
check("--name=value and --name value", r.returncode == 0 and len(epochs) == 2 and "lr=0.05" in r.stdout
      and "batch 16" in r.stdout, r.stdout + r.stderr)
r = nmlc_run("run", "--epochs", "1", "--", tiny)
check("-- ends the options", r.returncode == 0 and re.search(r"^epoch +1/1 ", r.stdout, re.M), r.stdout + r.stderr)

# ---- 2. -q and -v ----

plain = nmlc_run("run", tiny, "--epochs", "2", "--seed", "1")
check("run prints a header and epoch lines", plain.returncode == 0 and plain.stdout.startswith("model")
      and plain.stdout.count("\nepoch") == 2, plain.stdout + plain.stderr)
# The memory estimate: printed by check and run; a run that cannot fit is refused before it starts.
r = nmlc_run("check", tiny)
check("check prints the memory estimate", r.returncode == 0 and r.stdout.startswith("memory ")
      and "MFLOP per step" in r.stdout, r.stdout + r.stderr)
big = os.path.join(here, "big.nml")
with open(big, "w") as f:
    # 10^10 parameters: 40 GB, and as much again for the gradients
    f.write(open(tiny).read().replace("use std.nn", "use std.nn\nlayer Big() {\n  param w[100000, 100000] = 0\n"
                                      "  forward(x) = x @ slice(w, 0, 0, 6)\n}")
            .replace("model = Linear(6, 3)", "model = Big()")
            .replace("loss = cross_entropy(model(x), y)", "loss = mean(model(x))"))
try:
    r = nmlc_run("run", big, "--epochs", "1")
    check("a run too large for memory is refused with the estimate", r.returncode == 1
          and "available" in r.stderr and "memory " in r.stderr and "--ignore-memory" in r.stderr, r.stdout + r.stderr)
finally:
    os.remove(big)

# A checkpoint records what wrote it: resuming it with another rule is refused (--init is the way).
with tempfile.TemporaryDirectory() as ck:
    saved = os.path.join(ck, "a.safetensors")
    r = nmlc_run("run", tiny, "--epochs", "1", "--save", saved)
    r = nmlc_run("run", tiny, "--epochs", "2", "--resume", saved, "--optimizer", "adam()")
    check("--resume into another optimizer is refused", r.returncode == 1
          and "written by optimizer decayed, this run has optimizer adam" in r.stderr, r.stderr)
    r = nmlc_run("run", tiny, "--epochs", "2", "--resume", saved)
    check("--resume of the same run goes on", r.returncode == 0 and "epoch 2/2" in r.stdout, r.stdout + r.stderr)
    r = nmlc_run("run", tiny, "--epochs", "1", "--init", saved, "--optimizer", "adam()")
    check("--init of it into another optimizer works", r.returncode == 0, r.stdout + r.stderr)

# A directory given as the source is an error, not an abort.
r = nmlc_run("check", here)
check("a directory as the source file", r.returncode == 1 and "Is a directory" in r.stderr, r.stderr)

# A batch larger than the data is the whole data (not a huge allocation).
r = nmlc_run("run", tiny, "--epochs", "1", "--batch", "1000000000")
check("--batch beyond the data trains on all of it", r.returncode == 0 and "batch 86," in r.stdout, r.stdout + r.stderr)

# --optimizer swaps the train block's optimizer; a bad expression is an error located in it.
r = nmlc_run("run", tiny, "--epochs", "1", "--optimizer", "lion(lr = 3e-4)")
check("--optimizer replaces the train block's", r.returncode == 0 and "optimizer  lion(lr=0.0003" in r.stdout,
      r.stdout + r.stderr)
r = nmlc_run("check", tiny, "--optimizer", "lino(lr = 1)")
check("--optimizer with an unknown rule: exit 1, located in the expression", r.returncode == 1
      and "--optimizer:1:1: error: unknown name 'lino'" in r.stderr, r.stderr)
r = nmlc_run("check", tiny, "--optimizer", "adam(lr = ")
check("--optimizer with a syntax error: exit 1", r.returncode == 1 and "--optimizer:1:" in r.stderr, r.stderr)
untimed = lambda s: re.sub(r"[\d.]+ ?(ms|s|samples/s)\b", "#", s)  # timings differ run to run
quiet = [nmlc_run("run", tiny, "--epochs", "2", "--seed", "1", q) for q in ("-q", "--quiet")]
check("-q and --quiet are one option", untimed(quiet[0].stdout) == untimed(quiet[1].stdout)
      and quiet[0].returncode == 0 and quiet[1].returncode == 0, f"{quiet[0].stdout!r} vs {quiet[1].stdout!r}")
head = ("model ", "optimizer ", "data ", "compiled ")
lines = quiet[0].stdout.splitlines()
check("-q: no header, only the last epoch's line",
      not any(ln.startswith(head) for ln in lines) and len(lines) == 1 and lines[0].startswith("epoch 2/2")
      and not quiet[0].stderr, quiet[0].stdout + quiet[0].stderr)
r = nmlc_run("run", tiny, "--epochs", "0", "-q")
check("-q keeps --epochs 0's result line", r.returncode == 0 and r.stdout.startswith("test_loss"), r.stdout + r.stderr)

verbose = nmlc_run("run", tiny, "--epochs", "2", "--seed", "1", "-v")
check("-v: the time of each phase, on stderr", verbose.returncode == 0
      and re.search(r"^nmlc: time: front end [\d.]+ ms, data [\d.]+ ms, lowering [\d.]+ ms, JIT [\d.]+ ms, "
                    r"training [\d.]+ ms; [\d.]+ ms in all$", verbose.stderr, re.M), verbose.stderr)
strip = lambda s: re.sub(r" *[\d.]+ ?(ms|s|samples/s)\b", " #", s)  # timings differ run to run, and so does their width
check("-v leaves stdout as it was", strip(verbose.stdout) == strip(plain.stdout),
      f"{verbose.stdout}\nvs\n{plain.stdout}")
r = nmlc_run("check", tiny, "--verbose")
check("check -v", r.returncode == 0 and r.stdout.startswith("memory ") and "nmlc: time: front end" in r.stderr,
      r.stderr)
r = nmlc_run("check", tiny)
check("check without -v prints the estimate only", r.returncode == 0 and r.stdout.count("\n") == 1
      and r.stdout.startswith("memory ") and not r.stderr, r.stdout + r.stderr)
with tempfile.TemporaryDirectory() as tmp:
    lib = os.path.join(tmp, "libtiny.so")
    r = nmlc_run("build", tiny, "-o", lib, "-q", "-v")
    check("build -q -v: the C compiler's line and the times, no summary", r.returncode == 0 and os.path.exists(lib)
          and not r.stdout and "nmlc: time:" in r.stderr and "code generation and linking" in r.stderr,
          f"exit {r.returncode}\n{r.stdout}{r.stderr}")
    r = nmlc_run("build", tiny, "-o", lib)
    check("build without -q: a summary line", r.returncode == 0 and r.stdout.strip(), r.stdout + r.stderr)

# ---- 3. help ----

overview = nmlc_run("help")
check("nmlc help lists every command", overview.returncode == 0 and not overview.stderr
      and overview.stdout.startswith("usage: nmlc") and all(f"\n  {c} " in overview.stdout for c in commands),
      overview.stdout)
for spelling in (["--help"], ["-h"], ["help", "help"]):
    r = nmlc_run(*spelling)
    check(f"nmlc {' '.join(spelling)} is nmlc help", r.returncode == 0 and r.stdout == overview.stdout, r.stdout)


def listed(text):
    """The options a command's help lists: the words starting with - at the start of its rows."""
    opts = set()
    for ln in text.split("\noptions:\n", 1)[-1].splitlines():
        m = re.match(r"  (-\S+?)(?:,? (--\S+))?(?: (\S+))?(?:  |$)", ln)
        if m:
            opts.add((m.group(2) or m.group(1), m.group(3), m.group(1) if m.group(2) else None))
    return opts


helps = {}
for c in commands:
    r = nmlc_run("help", c)
    helps[c] = r.stdout
    check(f"nmlc help {c}", r.returncode == 0 and not r.stderr and r.stdout.startswith(f"usage: nmlc {c} ")
          and "\noptions:\n" in r.stdout, r.stdout + r.stderr)
    for spelling in ([c, "--help"], [c, "-h"], [c, tiny, "--epochs", "3", "--help"], [c, "--bogus", "-h"]):
        r = nmlc_run(*spelling)
        check(f"nmlc {' '.join(spelling)} is nmlc help {c}", r.returncode == 0 and r.stdout == helps[c]
              and not r.stderr, r.stdout + r.stderr)
    check(f"{c}'s help fits in 80 columns", all(len(ln) < 80 for ln in helps[c].splitlines()), helps[c])

# Each help lists that command's options only: what one lists, the parser takes for that command;
# what only other commands list, it refuses for this one (exit 2, naming the command it belongs to).
values = {"N": "2", "NAME=VALUE": "lr=0.5", "F": "x.safetensors", "NAME": "x86-64", "DIR/libNAME.so": "libx.so",
          "EXPR": "adam()"}
everything = set()
for c in commands:
    for opt, arg, alias in listed(helps[c]):
        everything.add(opt)
for c in commands:
    mine = {opt for opt, arg, alias in listed(helps[c])}
    check(f"{c}'s help lists options", len(mine) >= 2 and "--help" in mine, helps[c])
    for opt, arg, alias in sorted(listed(helps[c]), key=str):
        if opt == "--help":
            continue
        for spelling in filter(None, (opt, alias)):
            args = [c, missing, spelling] + ([values[arg]] if arg else [])
            if c == "show" and spelling not in ("--ast", "--ir", "--grad", "--step", "--kernels", "--llvm"):
                args.append("--ir")
            if c == "build" and spelling != "-o":
                args += ["-o", "libx.so"]
            r = nmlc_run(*args)
            check(f"{c} takes {spelling} as its help says", r.returncode == 1 and "no-such-file" in r.stderr,
                  f"{args}: exit {r.returncode}\n{r.stderr}")
    for opt in sorted(everything - mine):
        r = nmlc_run(c, missing, opt, "2")
        check(f"{c} refuses {opt}, which its help does not list", r.returncode == 2
              and f"{opt} is an option of nmlc" in r.stderr, f"exit {r.returncode}: {r.stderr}")
check("run's help: --epochs, not --cpu", "--epochs" in helps["run"] and "--cpu" not in helps["run"], helps["run"])
check("build's help: --cpu, not --log", "--cpu" in helps["build"] and "--log" not in helps["build"], helps["build"])
check("show's help: --ir, not --epochs", "--ir" in helps["show"] and "--epochs" not in helps["show"], helps["show"])

# ---- 4. did you mean ----

for name, args, expect in [
    ("rn", ["rn", missing], "did you mean 'run'?"),
    ("chek", ["chek", missing], "did you mean 'check'?"),
    ("bulid (a swap)", ["bulid", missing], "did you mean 'build'?"),
    ("gradchek", ["gradchek", missing], "did you mean 'gradcheck'?"),
    ("help rn", ["help", "rn"], "did you mean 'run'?"),
    ("a file for a command", ["model.nml"], "did you mean 'nmlc run model.nml'?"),
    ("--verison", ["--verison"], "did you mean '--version'?"),
    ("--epoch 3", ["run", missing, "--epoch", "3"], "unknown option '--epoch'; did you mean '--epochs'?"),
    ("--epoch=3", ["run", missing, "--epoch=3"], "did you mean '--epochs'?"),
    ("-epochs 3", ["run", missing, "-epochs", "3"], "did you mean '--epochs'?"),
    ("--thread 2", ["run", missing, "--thread", "2"], "did you mean '--threads'?"),
    ("--sede 1", ["gradcheck", missing, "--sede", "1"], "did you mean '--seed'?"),
    ("--verb", ["check", missing, "--verb"], "did you mean '--verbose'?"),
    ("--qiuet", ["run", missing, "--qiuet"], "did you mean '--quiet'?"),
    ("--lr 0.1", ["run", missing, "--lr", "0.1"], "did you mean '--set lr=0.1'?"),
    ("--momentum 0.9 for build", ["build", missing, "-o", "libx.so", "--momentum", "0.9"], "'--set momentum=0.9'"),
    ("--grads", ["show", "--grads", missing], "did you mean '--grad'?"),
    ("show ir", ["show", "ir", missing], "'ir' is not a file; did you mean '--ir'?"),
    ("--cpus", ["build", missing, "-o", "libx.so", "--cpus", "x86-64"], "did you mean '--cpu'?"),
]:
    usage_error(f"did you mean: {name}", args, expect)
for name, args in [("nothing near", ["run", missing, "--frobnicate"]), ("no command near", ["xyzzy", missing]),
                   ("--lr for gradcheck, which has no --set", ["gradcheck", missing, "--lr", "0.1"])]:
    r = nmlc_run(*args)
    check(f"no suggestion: {name}", r.returncode == 2 and "did you mean" not in r.stderr, r.stderr)

# ---- 6. the docs: every option of every command, every exit status, the help commands ----

with open(docs) as f:
    doc = f.read()
for opt in sorted(everything):
    check(f"docs/cli.md documents {opt}", re.search(r"`" + re.escape(opt) + r"[ `=]", doc), opt)
for c in commands:
    check(f"docs/cli.md has nmlc {c}", f"## nmlc {c}" in doc)
status = doc.split("## Exit status", 1)[-1].split("\n## ", 1)[0]
for code in ("0", "1", "2", "130"):
    check(f"docs/cli.md: exit status {code}", re.search(rf"^\| {code} \|", status, re.M), status)
for phrase in ("nmlc help COMMAND", "COMMAND --help", "did you mean"):
    check(f"docs/cli.md mentions {phrase}", phrase in doc)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
