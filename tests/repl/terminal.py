#!/usr/bin/python3
"""nmlc repl on a terminal, through tmux (skipped, exit 77, without it): Ctrl-C at the prompt drops
the line and the session goes on; Ctrl-C on a continuation line drops the whole input; Tab
completes the new commands; :compare draws its curves in braille, one colour per rule; the history
file gets every input as it is entered, a multi-line definition as one entry; Ctrl-D leaves with
status 0."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

nmlc = os.path.abspath(sys.argv[1])
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}\n{detail}")


if not shutil.which("tmux"):
    print("tmux is not installed: skipped")
    sys.exit(77)

session = f"nmlrepl{os.getpid()}"


def tmux(*args):
    return subprocess.run(["tmux", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout


def screen(colours=False):
    return tmux("capture-pane", "-t", session, "-p", *(["-e"] if colours else []))


def wait_for(text, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        s = screen()
        if text in s:
            return s
        time.sleep(0.1)
    return screen()


def keys(*k):
    tmux("send-keys", "-t", session, *k)
    time.sleep(0.3)


with tempfile.TemporaryDirectory() as home:
    status = os.path.join(home, "status")
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "60",
         f"env HOME={home} TERM=xterm-256color {nmlc} repl --threads 1; echo $? > {status}; sleep 60")
    try:
        s = wait_for("nml>")
        check("prompt", "nml>" in s, s)
        keys("1 + 41 and more", "C-c")
        keys("1 + 2", "Enter")
        s = wait_for("\n3\n")
        check("Ctrl-C drops the line", "nml> ^C" in s and "nml> 1 + 2\n3" in s and "41" not in s.split("^C")[1], s)
        keys("layer L(d) {", "Enter", "param w[d] = 0", "Enter", "C-c")
        keys("use std.optim", "Enter")
        s = wait_for("using std.optim")
        check("Ctrl-C drops a multi-line input", "using std.optim" in s and "defined layer" not in s, s)
        keys("def twice(x) = 2 *", "Enter", "x", "Enter")
        wait_for("defined function twice")
        keys(":comp", "Tab")
        s = screen()
        check("Tab completes :compare", s.rstrip().endswith("nml> :compare"), s)
        keys("adam(lr = 1e-2) sgd(lr = 1e-3) on rosenbrock steps=200", "Enter")
        s = wait_for("one per rule")
        s = wait_for("sgd(lr = 1e-3)\n", 10)
        braille = sum(1 for ch in s if 0x2801 <= ord(ch) <= 0x28ff)
        coloured = screen(True)
        check("curves in braille", braille > 50, s)
        check("one colour per rule", "\x1b[32m" in coloured and "\x1b[31m" in coloured, coloured)
        hist = open(os.path.join(home, ".nml_history")).read()
        check("history as it grows", "1\\040+\\0402" in hist and "41" not in hist, hist)
        check("a multi-line input is one entry", "def\\040twice(x)\\040=\\0402\\040*\\012x" in hist, hist)
        keys("C-d")
        for _ in range(100):
            if os.path.exists(status) and open(status).read().strip():
                break
            time.sleep(0.1)
        check("Ctrl-D leaves with 0", os.path.exists(status) and open(status).read().strip() == "0", screen())
    finally:
        tmux("kill-session", "-t", session)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
