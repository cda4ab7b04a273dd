#!/usr/bin/python3
"""docs/optimizers.md against the library it documents: every ```nml block of the page that
defines a rule, a transform or a function must be the text of stdlib/optim.nml or
stdlib/sched.nml, verbatim; every rule and transform of std.optim and every schedule of
std.sched must have its block on the page.

Usage: docs.py SOURCE_ROOT
"""
import os
import re
import sys

root = sys.argv[1]
page = open(os.path.join(root, "docs", "optimizers.md")).read()
optim = open(os.path.join(root, "stdlib", "optim.nml")).read()
sched = open(os.path.join(root, "stdlib", "sched.nml")).read()

DEF = re.compile(r"^(optimizer|transform|def) (\w+)\(", re.M)
failed = 0
documented = set()
for block in re.findall(r"```nml\n(.*?)```", page, re.S):
    names = [m.group(2) for m in DEF.finditer(block)]
    if not names:
        continue
    if block.strip() not in optim and block.strip() not in sched:
        failed += 1
        print(f"FAIL the block defining {', '.join(names)} is not the library's text")
    documented.update(names)

for text, what in ((optim, "std.optim"), (sched, "std.sched")):
    for m in DEF.finditer(text):
        if m.group(2) not in documented:
            failed += 1
            print(f"FAIL {what}'s {m.group(1)} {m.group(2)} has no source block in docs/optimizers.md")

print(f"{len(documented)} definitions documented, {failed} failed")
sys.exit(1 if failed else 0)
