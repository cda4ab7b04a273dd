#!/usr/bin/python3
"""meson install, into a temporary DESTDIR: nmlc, the runtime and the stdlib land where the build
was configured to put them; nml.pc lets a C program build against the installed libnmlrt.a and
nmlrt.h with `pkg-config --cflags --libs nml`; nmlc(1) is a man page that renders cleanly.

usage: install.py MESON BUILD_DIR SOURCE_DIR SANITIZE CC...

The .pc file names the configured prefix; under a DESTDIR, pkg-config is pointed at the staged
tree with PKG_CONFIG_SYSROOT_DIR, which it prepends to every -I and -L path it prints."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

meson, build, source, sanitize, cc = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name}\n  {detail}".rstrip())
    return cond


def finish():
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


opts = {o["name"]: o["value"] for o in json.loads(
    subprocess.run([meson, "introspect", build, "--buildoptions"], capture_output=True, text=True, check=True).stdout)}
prefix = opts["prefix"]

# A C program against the installed runtime, using what needs each library nml.pc must bring:
# checkpoints (cJSON), gzip'd IDX data (zlib), the RNG's normal draws (libm).
program = r"""
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <nmlrt.h>

int main(int argc, char **argv)
{
	char err[256];
	float w[6] = {0}, back[6] = {0};
	NmlRng r;
	nml_rng_init(&r, 7, 0);
	for (int i = 0; i < 6; i++)
		w[i] = (float)nml_rng_normal(&r);
	NmlTensorRef t = {"w", 2, {2, 3}, w}, u = {"w", 2, {2, 3}, back};
	if (nml_ckpt_save(argv[1], &t, 1, err, sizeof err) || nml_ckpt_load(argv[1], &u, 1, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	NmlData d;
	if (nml_data_load_idx(&d, argv[2], argv[2], err, sizeof err) == 0)
		return 1; /* not an IDX file: the point is only that the gzip reader links */
	printf("%s %g\n", memcmp(w, back, sizeof w) ? "differ" : "same", sqrt(4.0));
	return 0;
}
"""

with tempfile.TemporaryDirectory() as dest:
    r = subprocess.run([meson, "install", "-C", build, "--no-rebuild", "--quiet", "--destdir", dest],
                       capture_output=True, text=True)
    if not check("meson install --destdir exits 0", r.returncode == 0, r.stdout + r.stderr):
        finish()
    root = dest + prefix
    at = lambda *p: os.path.join(root, *p)
    for what in [("bin", "nmlc"), (opts["libdir"], "libnmlrt.a"), (opts["includedir"], "nmlrt.h"),
                 (opts["datadir"], "nml", "stdlib", "prelude.nml")]:
        check(f"installed {'/'.join(what)}", os.path.exists(at(*what)))
    r = subprocess.run([at("bin", "nmlc"), "--version"], capture_output=True, text=True)
    check("the installed nmlc runs", r.returncode == 0 and r.stdout.startswith("nmlc "), r.stdout + r.stderr)

    # ---- nml.pc ----
    pcdir = at(opts["libdir"], "pkgconfig")
    pc = os.path.join(pcdir, "nml.pc")
    if not check("installed nml.pc", os.path.exists(pc), str(os.listdir(root))):
        finish()
    with open(pc) as f:
        text = f.read()
    check("nml.pc: prefix is the configured one", re.search(rf"^prefix={re.escape(prefix)}$", text, re.M), text)
    check("nml.pc: paths relative to ${prefix}", re.search(r"^libdir=\$\{prefix\}/", text, re.M)
          and re.search(r"^includedir=\$\{prefix\}/", text, re.M), text)
    if shutil.which("pkg-config"):
        env = dict(os.environ, PKG_CONFIG_PATH=pcdir, PKG_CONFIG_SYSROOT_DIR=dest)
        r = subprocess.run(["pkg-config", "--cflags", "--libs", "nml"], capture_output=True, text=True, env=env)
        flags = r.stdout.split()
        check("pkg-config --cflags --libs nml", r.returncode == 0 and "-I" + at(opts["includedir"]) in flags
              and "-L" + at(opts["libdir"]) in flags and "-lnmlrt" in flags, r.stdout + r.stderr)
        for lib in ("-lopenblas", "-lcjson", "-lz", "-lm"):
            check(f"nml.pc brings {lib}", lib in flags and flags.index(lib) > flags.index("-lnmlrt"), r.stdout)
        # The program, built with nothing but what pkg-config says (and this build's sanitizer,
        # which the installed archive is instrumented with).
        src, exe = os.path.join(dest, "app.c"), os.path.join(dest, "app")
        with open(src, "w") as f:
            f.write(program)
        san = [f"-fsanitize={sanitize}"] if sanitize not in ("", "none") else []
        r = subprocess.run([*cc, *san, src, "-o", exe, *flags], capture_output=True, text=True)
        if check("cc app.c $(pkg-config --cflags --libs nml) builds", r.returncode == 0, " ".join(flags) + "\n" + r.stderr):
            bad = os.path.join(dest, "not-idx.gz")
            with open(bad, "wb") as f:
                f.write(b"not gzip")
            r = subprocess.run([exe, os.path.join(dest, "w.safetensors"), bad], capture_output=True, text=True)
            check("the program runs against the installed runtime", r.returncode == 0 and r.stdout == "same 2\n",
                  r.stdout + r.stderr)
    else:
        print("pkg-config not found: nml.pc not exercised")

    # ---- nmlc(1) ----
    man = at(opts["mandir"], "man1", "nmlc.1")
    if not check("installed man1/nmlc.1", os.path.exists(man)):
        finish()
    with open(man, encoding="ascii", errors="replace") as f:
        roff = f.read()
    check("nmlc.1 starts with .TH and NAME", re.search(r'^\.TH NMLC 1 ', roff, re.M)
          and re.search(r"^\.SH NAME\nnmlc \\- ", roff, re.M), roff[:400])
    requests = set(re.findall(r"^\.([A-Za-z]+)", roff, re.M))
    check("nmlc.1 uses only man(7) requests", requests <= {"TH", "SH", "SS", "PP", "TP", "IP", "RS", "RE", "nf", "fi",
                                                           "ad", "nh"}, str(requests))
    with open(os.path.join(source, "docs", "cli.md")) as f:
        headings = re.findall(r"^## (.+)$", f.read(), re.M)
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", man], capture_output=True, text=True)
        check("groff -ww: no warnings", r.returncode == 0 and not r.stderr, r.stderr)
    if shutil.which("man"):
        r = subprocess.run(["man", "-l", man], capture_output=True, text=True,
                           env=dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="80", MAN_KEEP_FORMATTING=""))
        page = re.sub(r".\x08", "", r.stdout)  # overstrike bold, if any
        check("man -l renders it", r.returncode == 0 and "NAME" in page and "nmlc - " in page, r.stderr)
        for h in headings:
            check(f"the man page has section {h!r}", h.upper() in page, h)
        for opt in ("--epochs", "--set", "--quiet", "--verbose", "--help", "--cpu", "--ir"):
            check(f"the man page has {opt}", opt in page)
        markdown = r"```|\|---|\*\*|^\s*\|.*\|\s*$"  # fences, table rules, bold, table rows
        check("no Markdown left in the page", not re.search(markdown, page, re.M),
              "\n".join(ln for ln in page.splitlines() if re.search(markdown, ln)))
    elif not shutil.which("groff"):
        print("neither man nor groff found: the man page is checked for its structure only")

finish()
