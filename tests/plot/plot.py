#!/usr/bin/python3
"""nmlc plot and nmlc sweep: two run logs drawn as one SVG (parsed as XML: one path per run, a
legend naming each), the REPL's export drawn likewise, the sweep compiled once, and bad input
refused with its place. With --screenshot: the SVG rendered by headless Chromium is not blank
(exit 77, skipped, without chromium)."""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib

nmlc = sys.argv[1]
SVG = "{http://www.w3.org/2000/svg}"
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def nmlc_run(*args, stdin=None):
    return subprocess.run([nmlc, *args], input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


PROGRAM = """use std.problems
use std.optim
train {
  data = synthetic()
  model = Rosenbrock()
  loss = mean(model(x))
  optimizer = OPT
  batch = 1
  epochs = 40
}
"""


def png_pixels(path):
    """The RGB(A) rows of a PNG, unfiltered (8-bit colour types 2 and 6, as Chromium writes)."""
    data = open(path, "rb").read()
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            bpp = {2: 3, 6: 4}[ctype]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, rows, prev = zlib.decompress(idat), [], bytearray(w * bpp)
    stride = w * bpp
    for r in range(h):
        f, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def screenshot(svg, d):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("chromium is not installed: skipped")
        sys.exit(77)
    png = os.path.join(d, "shot.png")
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={png}", "--window-size=760,460", "file://" + svg],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    check("chromium screenshot", r.returncode == 0 and os.path.exists(png), r.stdout[-2000:])
    if not os.path.exists(png):
        return
    w, h, bpp, rows = png_pixels(png)
    colours = {}
    for row in rows:
        for i in range(0, len(row), bpp):
            colours[row[i:i + 3]] = colours.get(row[i:i + 3], 0) + 1
    white = colours.get(b"\xff\xff\xff", 0)
    # the curves' colours (#1b9e77, #d95f02) are drawn, and the picture is mostly white background
    near = lambda c, t: all(abs(c[k] - t[k]) < 40 for k in range(3))
    drawn = [sum(n for c, n in colours.items() if near(c, t)) for t in (b"\x1b\x9e\x77", b"\xd9\x5f\x02")]
    check("screenshot not blank", len(colours) > 20 and white < w * h and min(drawn) > 50,
          f"{len(colours)} colours, {white} white of {w * h}, curve pixels {drawn}")


with tempfile.TemporaryDirectory() as d:
    logs = []
    for name, opt in (("adam", "adam(lr = 1e-2)"), ("sgd", "sgd(lr = 1e-3, momentum = 0.9)")):
        p = os.path.join(d, name + ".nml")
        open(p, "w").write(PROGRAM.replace("OPT", opt))
        log = os.path.join(d, name + ".jsonl")
        r = nmlc_run("run", "-q", p, "--log", log)
        check("run --log " + name, r.returncode == 0, r.stdout)
        logs.append(log)
    svg = os.path.join(d, "runs.svg")
    r = nmlc_run("plot", *logs, "-o", svg)
    check("plot", r.returncode == 0 and r.stdout == f"wrote {svg}: 2 curves of train_loss\n", r.stdout)
    root = ET.parse(svg).getroot()
    paths = root.findall(f"{SVG}path")
    texts = [t.text for t in root.iter(f"{SVG}text")]
    check("one path per run", len(paths) == 2, len(paths))
    check("a legend", logs[0] in texts and logs[1] in texts, texts)
    check("labelled axes", "epoch" in texts and "train_loss (log scale)" in texts, texts)
    check("paths have points", all(p.get("d").count("L") >= 30 for p in paths))
    if "--screenshot" in sys.argv:
        screenshot(svg, d)
        print(f"{passed} passed, {failed} failed")
        sys.exit(1 if failed else 0)

    # the REPL's export: one curve per run
    exp = os.path.join(d, "cmp.jsonl")
    r = nmlc_run("repl", "--threads", "1",
                 stdin=f":compare adam(lr = 1e-2) lion(lr = 1e-3) sgd on beale steps=100\n:export {exp}\n")
    check("repl export", r.returncode == 0 and f"wrote {exp}: 3 runs" in r.stdout, r.stdout)
    r = nmlc_run("plot", exp, "-o", svg, "--linear")
    root = ET.parse(svg).getroot()
    titles = [p.find(f"{SVG}title").text for p in root.findall(f"{SVG}path")]
    check("export plotted", r.returncode == 0 and titles == ["adam(lr = 1e-2)", "lion(lr = 1e-3)", "sgd"], titles)
    r = nmlc_run("plot", exp, "-o", svg, "--y", "test_loss")
    check("export test loss", r.returncode == 0 and len(ET.parse(svg).getroot().findall(f"{SVG}path")) == 3, r.stdout)

    # bad input: located, nothing written
    bad = os.path.join(d, "bad.jsonl")
    open(bad, "w").write('{"epoch":1,"train_loss":0.5}\n{"epoch":2,"train_loss":\n')
    out = os.path.join(d, "bad.svg")
    r = nmlc_run("plot", bad, "-o", out)
    check("bad log", r.returncode == 1 and r.stdout.startswith(f"{bad}:2:") and not os.path.exists(out), r.stdout)
    r = nmlc_run("plot", logs[0], "-o", out, "--y", "nothing")
    check("missing key", r.returncode == 1 and "no record has 'nothing'" in r.stdout, r.stdout)
    r = nmlc_run("plot", logs[0])
    check("no -o", r.returncode == 2 and "needs -o" in r.stdout, r.stdout)

    # nmlc sweep: one compilation for the grid, the best value, bad grids are usage errors
    p = os.path.join(d, "adam.nml")
    r = nmlc_run("sweep", p, "--set", "lr=1e-3..1e-1 log 5", "--epochs", "100")
    check("sweep", r.returncode == 0 and "compiled 1 time for 5 runs: lr is a run-time value" in r.stdout
          and "best lr=0.1: final train loss" in r.stdout, r.stdout)
    for grid, msg in (("lr=1..0.1", "needs LO < HI"), ("lr=1e-3..1e-1 log 1", "from 2 to"),
                      ("lr=0.1,", "missing after ','")):
        r = nmlc_run("sweep", p, "--set", grid)
        check("bad grid " + grid, r.returncode == 2 and msg in r.stdout, r.stdout)
    r = nmlc_run("sweep", p, "--set", "zz=1,2")
    check("no such hyperparameter", r.returncode == 1 and "no hyperparameter 'zz'" in r.stdout, r.stdout)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
