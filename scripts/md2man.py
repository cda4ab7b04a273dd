#!/usr/bin/python3
"""Turns docs/cli.md into the man page nmlc(1), at build time (meson.build), without pandoc.

usage: md2man.py IN.md OUT.1 --name nmlc --section 1 --version V --summary TEXT

Handles the Markdown the docs use: `#` the title (replaced by NAME, from --name and --summary),
the text before the first `##` (SYNOPSIS), `##` and `###` headings, paragraphs, fenced code
blocks, pipe tables (as tagged paragraphs: the first cell is the tag; a header row is dropped),
numbered and `-` lists, and inline `code`, **bold**, *emphasis* and [links](url). Anything else
passes through as text, escaped, so the output is always valid roff."""
import argparse
import re
import sys


def escape(text):
    """Plain text to roff: backslashes, minus signs (so options copy as ASCII), non-ASCII."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\e")
        elif ch == "-":
            out.append("\\-")
        elif ord(ch) > 127:
            out.append("\\[u%04X]" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def inline(text):
    """Inline Markdown to roff fonts. Code spans first: nothing inside them is markup."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if len(p) >= 2 and p[0] == "`" and p[-1] == "`":
            out.append("\\fB" + escape(p[1:-1]) + "\\fR")
            continue
        p = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", p)
        p = escape(p)
        p = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\\fB\1\\fR", p)
        p = re.sub(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])", r"\\fI\1\\fR", p)
        out.append(p)
    return "".join(out)


def line(text):
    """One output text line: a leading . or ' would be read as a request."""
    text = text.strip()
    return "\\&" + text if text[:1] in (".", "'") else text


def cells(row):
    """The cells of a pipe table row; \\| is a literal bar."""
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def convert(md, name, section, version, summary):
    out = ['.\\" Generated from docs/cli.md by scripts/md2man.py; edit those, not this.',
           '.TH %s %s "" "%s %s" "NML manual"' % (name.upper(), section, name, escape(version)),
           # Left-aligned, no hyphenation: the text is full of option and file names.
           ".ad l", ".nh",
           ".SH NAME", "%s \\- %s" % (escape(name), escape(summary))]
    lines = md.split("\n")
    i, n = 0, len(lines)

    def plain(k):
        """Line k continues a paragraph or list item: text, not the start of another block."""
        t = lines[k].strip()
        return bool(t) and not (t.startswith(("#", "```", "|", "- ")) or re.match(r"\d+\. ", t))

    while i < n:
        s = lines[i].strip()
        if s.startswith("```"):
            out.extend([".PP", ".RS 4", ".nf"])
            i += 1
            while i < n and not lines[i].strip().startswith("```"):
                out.append(line(escape(lines[i].rstrip())) if lines[i].strip() else "")
                i += 1
            out.extend([".fi", ".RE"])
            i += 1
        elif s.startswith("|"):
            rows = []
            while i < n and lines[i].strip().startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            rule = [all(re.fullmatch(r":?-+:?", c or "-") for c in row) for row in rows]
            for k, row in enumerate(rows):
                header = k + 1 < len(rows) and rule[k + 1]
                if rule[k] or header or not any(row):
                    continue
                out.extend([".TP", line(inline(row[0])), line(inline("; ".join(c for c in row[1:] if c)))])
        elif not s:
            i += 1
        elif s.startswith("#"):
            level = len(s) - len(s.lstrip("#"))
            title = s[level:].strip()
            out.append(".SH SYNOPSIS" if level == 1 else ".SH " + escape(title.upper()) if level == 2
                       else ".SS " + escape(title))
            i += 1
        else:
            # A paragraph or a list item, with its continuation lines: inline markup (a code span
            # broken across lines) is read over the whole of it.
            item = re.match(r"(\d+\.|-) ", s)
            text = [s[item.end():] if item else s]
            i += 1
            while i < n and plain(i):
                text.append(lines[i].strip())
                i += 1
            if item:
                out.append(".IP %s 4" % ("\\(bu" if item.group(1) == "-" else item.group(1)))
            else:
                out.append(".PP")
            out.append(line(inline(" ".join(text))))
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--name", required=True)
    ap.add_argument("--section", default="1")
    ap.add_argument("--version", default="")
    ap.add_argument("--summary", required=True)
    a = ap.parse_args()
    with open(a.input, encoding="utf-8") as f:
        roff = convert(f.read(), a.name, a.section, a.version, a.summary)
    with open(a.output, "w", encoding="ascii") as f:
        f.write(roff)
    return 0


if __name__ == "__main__":
    sys.exit(main())
