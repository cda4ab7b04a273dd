#!/usr/bin/python3
"""Golden tests: each foo.nml beside foo.err, foo.ast, foo.ir, foo.grad or foo.step.

  foo.err   `nmlc check foo.nml` fails and prints exactly this on stderr
  foo.ast   `nmlc show --ast` prints this     foo.ir    `nmlc show --ir`
  foo.grad  `nmlc show --grad`                foo.step  `nmlc show --step`
  foo.kernels  `nmlc show --kernels`

Run from the directory of the .nml files so paths in diagnostics are short.
--update rewrites the expected files from what nmlc prints now; review the diff before committing.
"""
import difflib
import os
import subprocess
import sys

KINDS = {".err": ["check"], ".ast": ["show", "--ast"], ".ir": ["show", "--ir"],
         ".grad": ["show", "--grad"], ".step": ["show", "--step"], ".kernels": ["show", "--kernels"]}


STDLIB = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "stdlib"))


def main():
    args = [a for a in sys.argv[1:] if a != "--update"]
    update = "--update" in sys.argv
    nmlc, dirs = os.path.abspath(args[0]), args[1:]
    passed = failed = 0
    for d in dirs:
        for name in sorted(os.listdir(d)):
            stem, ext = os.path.splitext(name)
            if ext not in KINDS:
                continue
            src = stem + ".nml"
            r = subprocess.run([nmlc] + KINDS[ext] + [src], cwd=d, capture_output=True, text=True)
            got = r.stderr if ext == ".err" else r.stdout
            # The standard library's files are quoted by their path, which depends on the checkout.
            got = got.replace(STDLIB + "/", "<stdlib>/")
            ok_exit = (r.returncode != 0) if ext == ".err" else (r.returncode == 0)
            path = os.path.join(d, name)
            if update:
                with open(path, "w") as f:
                    f.write(got)
                continue
            with open(path) as f:
                want = f.read()
            if got == want and ok_exit:
                passed += 1
                continue
            failed += 1
            print(f"FAIL {path} (exit {r.returncode})")
            sys.stdout.writelines(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                                       "expected", "got"))
            if ext != ".err" and r.stderr:
                print(r.stderr)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
