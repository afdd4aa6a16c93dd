#!/usr/bin/python3
"""test_man.py — the man pages format without a warning, and libschakel(3)
says what the library is.

For every page in docs/man: groff -man -Tutf8 -ww and man -l (at 80
columns, every warning on) print no warning. For libschakel.3:
- its SYNOPSIS declares exactly the functions of clients/libschakel/schakel.h,
  each as the header does (whitespace aside), and each has an entry (a .TP
  tag naming it); the header declares exactly the functions the built
  $BUILD/libschakel.so.1 exports;
- every enum and struct of the header is shown in TYPES as the header has
  it (comments and whitespace aside), and so are its #define'd constants;
- ERRORS names every reason code of proto/schakel.proto with its number;
- the program under EXAMPLE is docs/examples/publish_and_receive.c, line
  for line.
One check per page and per item; prints one line per problem and ends
with one line "test_man: N passed, M failed"; exits non-zero if any
check failed. `make test` runs it (BUILD names the build folder).
"""

import difflib
import glob
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("BUILD") or "build"
PAGE = os.path.join(ROOT, "docs/man/libschakel.3")
HEADER = os.path.join(ROOT, "clients/libschakel/schakel.h")
EXAMPLE = os.path.join(ROOT, "docs/examples/publish_and_receive.c")
EXAMPLE_MARK = ".\\\" The lines from here to the .EE are docs/examples/publish_and_receive.c;"

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("test_man: FAILED: " + what)


def run(argv, env=None):
    """stdout and stderr of a command, or None when it cannot be run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    except OSError as e:
        return None, str(e), 127
    return done.stdout, done.stderr, done.returncode


# ------------------------------------------------------------------ roff

# The escapes the pages use in code (.EX) and in SYNOPSIS, and what they
# stand for; any other escape there fails the check (it would print as
# something else than the code).
ESCAPES = {"\\e": "\\", "\\-": "-", "\\(aq": "'", "\\(ga": "`", "\\&": ""}


def unescape(line):
    out = []
    i = 0
    while i < len(line):
        if line[i] != "\\":
            out.append(line[i])
            i += 1
            continue
        for escape, text in ESCAPES.items():
            if line.startswith(escape, i):
                out.append(text)
                i += len(escape)
                break
        else:
            raise ValueError("unexpected escape %r in %r" % (line[i:i + 4], line))
    return "".join(out)


def macro_words(rest):
    """The arguments of a macro line: quoted or blank-separated words."""
    return [a if a[:1] != '"' else a[1:-1] for a in re.findall(r'"[^"]*"|\S+', rest)]


def strip_comments(c_text):
    return re.sub(r"/\*.*?\*/", "", c_text, flags=re.S)


def normal(c_text):
    """C text with comments dropped and whitespace made canonical."""
    text = " ".join(strip_comments(c_text).split())
    text = re.sub(r"\s*([*(),;\[\]{}])\s*", r"\1", text)
    return re.sub(r"([A-Za-z0-9_])\*", r"\1 *", text)


# ------------------------------------------------------------------ every page

for page in sorted(glob.glob(os.path.join(ROOT, "docs/man/*.[1-9]"))):
    name = os.path.basename(page)
    out, err, rc = run(["groff", "-man", "-Tutf8", "-ww", "-z", page])
    check(rc == 0 and err == "", "groff -ww %s: %s" % (name, (err or "").strip() or rc))
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    out, err, rc = run(["man", "--warnings=all", "-l", page], env)
    check(rc == 0 and err == "" and out, "man -l %s: %s" % (name, (err or "").strip() or rc))

# ------------------------------------------------------------------ libschakel.3

with open(PAGE, encoding="utf-8") as f:
    page_lines = f.read().split("\n")
with open(HEADER, encoding="utf-8") as f:
    header = f.read()


def section(title):
    """The lines of the page's .SH title, up to the next .SH."""
    start = page_lines.index(".SH " + title) + 1
    end = next((i for i in range(start, len(page_lines)) if page_lines[i].startswith(".SH ")),
               len(page_lines))
    return page_lines[start:end]


# The header's functions: name -> normalized prototype.
header_protos = {}
for m in re.finditer(r"^[A-Za-z_][\w \*]*?[\s\*](schakel_\w+)\([^)]*\)\s*;",
                     strip_comments(header), flags=re.M):
    header_protos[m.group(1)] = normal(m.group(0))
check(len(header_protos) > 30, "schakel.h: found %d functions" % len(header_protos))

# The SYNOPSIS's: its .B/.BI lines joined (fonts alternate without spaces).
synopsis_text = []
for line in section("SYNOPSIS"):
    if line.startswith((".BI ", ".B ")):
        macro, rest = line.split(" ", 1)
        synopsis_text.append(unescape("".join(macro_words(rest))) + "\n")
synopsis = "".join(synopsis_text)
page_protos = {}
for m in re.finditer(r"[A-Za-z_][\w \*]*?[\s\*](schakel_\w+)\([^)]*\)\s*;", synopsis):
    page_protos[m.group(1)] = normal(m.group(0))
for name in sorted(set(header_protos) | set(page_protos)):
    check(header_protos.get(name) == page_protos.get(name),
          "SYNOPSIS of libschakel.3 declares %s as %s; schakel.h as %s" %
          (name, page_protos.get(name), header_protos.get(name)))

# Each function has an entry: a .TP tag line that names it.
tags = set()
for i, line in enumerate(page_lines[:-1]):
    if line == ".TP":
        tags.update(re.findall(r"schakel_\w+", page_lines[i + 1]))
for name in sorted(header_protos):
    check(name in tags, "libschakel.3 has no entry (.TP) for %s" % name)

# The library exports what the header declares.
library = os.path.join(ROOT, BUILD, "libschakel.so.1")
out, err, rc = run(["nm", "-D", "--defined-only", library])
exported = set(re.findall(r" T (schakel_\w+)@", out or ""))
check(rc == 0 and exported == set(header_protos),
      "%s exports %s; schakel.h declares %s" %
      (library, sorted(exported - set(header_protos)) or err,
       sorted(set(header_protos) - exported)))

# TYPES shows every enum and struct of the header, as the header has it.
types_code = []
in_code = False
for line in section("TYPES"):
    if line == ".EX":
        in_code = True
    elif line == ".EE":
        in_code = False
    elif in_code:
        types_code.append(unescape(line))
types_text = "\n".join(types_code)
for m in re.finditer(r"(?:typedef )?(?:enum|struct) (\w+) \{.*?\}[^;]*;", header, flags=re.S):
    shown = re.search(r"(?:typedef )?(?:enum|struct) " + m.group(1) + r" \{.*?\}[^;]*;",
                      types_text, flags=re.S)
    check(shown is not None and normal(shown.group(0)) == normal(m.group(0)),
          "TYPES of libschakel.3 shows %s %s" %
          (m.group(1), "otherwise than schakel.h" if shown else "nowhere"))
for m in re.finditer(r"^#define (SCHAKEL_\w+) (\S+)", header, flags=re.M):
    check(re.search(r"^#define %s %s$" % (m.group(1), re.escape(m.group(2))), types_text,
                    flags=re.M) is not None,
          "TYPES of libschakel.3 does not define %s as %s" % (m.group(1), m.group(2)))

# ERRORS names every reason of the protocol with its number.
with open(os.path.join(ROOT, "proto/schakel.proto"), encoding="utf-8") as f:
    proto = f.read()
reasons = re.search(r"enum Reason \{(.*?)\}", proto, flags=re.S).group(1)
reason_tags = " ".join(unescape(page_lines[i + 1]) for i in range(len(page_lines) - 1)
                       if page_lines[i] == ".TP")
for name, number in re.findall(r"^\s*([A-Z_]+) = (\d+);", strip_comments(reasons), flags=re.M):
    if name == "REASON_NONE":
        continue
    check(re.search(r"\b%s\b\W*\(%s\)" % (name, number), reason_tags) is not None,
          "ERRORS of libschakel.3 has no entry for reason %s (%s)" % (name, number))

# schakel.h names every reason of the protocol as SCHAKEL_REASON_<name>, with
# its number (client.c asserts the numbers against the generated code; this
# finds one missing).
for name, number in re.findall(r"^\s*([A-Z_]+) = (\d+);", strip_comments(reasons), flags=re.M):
    constant = "SCHAKEL_REASON_NONE" if name == "REASON_NONE" else "SCHAKEL_REASON_" + name
    check(re.search(r"^\s*%s = %s,$" % (constant, number), header, flags=re.M) is not None,
          "schakel.h does not name reason %s (%s) as %s" % (name, number, constant))

# EXAMPLE carries docs/examples/publish_and_receive.c as it is.
with open(EXAMPLE, encoding="utf-8") as f:
    example = f.read().rstrip("\n").split("\n")
try:
    start = page_lines.index(EXAMPLE_MARK)
    begin = page_lines.index(".EX", start) + 1
    shown = [unescape(line) for line in page_lines[begin:page_lines.index(".EE", begin)]]
except ValueError as e:
    shown = ["(%s)" % e]
diff = list(difflib.unified_diff(example, shown, "docs/examples/publish_and_receive.c",
                                 "libschakel.3 EXAMPLE", lineterm="", n=1))
check(not diff, "the program in libschakel.3 is not docs/examples/publish_and_receive.c:\n" +
      "\n".join(diff[:40]))

print("test_man: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
