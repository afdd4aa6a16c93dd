#!/usr/bin/python3
"""test_log_events.py — every event the broker logs is in the Logs table of
docs/OPERATIONS.md, and every event that table names is one the broker logs.

Reads broker/*.c for the names: the literal event of each log_event() call,
and those that reach log_event() through the few helpers that pass the
name on (listed in INDIRECT below). A log_event() whose event is not a
literal anywhere else fails the check: teach INDIRECT where its names come
from. One check per event name; prints one line per problem and ends with
one line "test_log_events: N passed, M failed"; exits non-zero if any check
failed. `make test` runs it.
"""

import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

NAME = r'"([a-z][a-z_]*\.[a-z][a-z_]*)"'

# log_event() calls whose event is a variable, by file and argument text:
# where the names they log come from is read below.
INDIRECT = {
    ("log.c", "const char *event"),     # the definition itself
    ("admin_export.c", "event"),        # admin_export_log()
    ("record.c", "event"),              # record_write_failed()
    ("record.c", "t->event"),           # line_say(): publishes and case commands
    ("record_case.c", "event"),         # the withheld views
    ("record_broker.c", "book.event"),  # the refusal summaries
    ("connevents.c", "log_name"),       # connevents_open()
}
# Helpers that take the event as an argument: (name, index of that argument).
HELPERS = [("admin_export_log", 2), ("record_write_failed", 1), ("connevents_open", 5)]
# Functions whose string results are event names: (file, function).
NAMING_FUNCTIONS = [("case_event.c", "case_event_name"), ("record_broker.c", "record_refusals_book")]


def function_body(text, name):
    """The text of function name's definition, up to its closing brace."""
    m = re.search(r"^[a-z].*\b" + name + r"\([^;]*?\)\s*\n\{", text, re.M)
    if m is None:
        return None
    end = text.find("\n}\n", m.end())
    return text[m.end():end]


def call_args(text, pos):
    """The arguments of the call whose '(' is at pos, split at the commas
    outside parentheses, braces and string or character literals."""
    args, depth, start, i = [], 0, pos + 1, pos
    while i < len(text):
        c = text[i]
        if c in "\"'":
            i += 1
            while i < len(text) and text[i] != c:
                i += 2 if text[i] == "\\" else 1
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
            if depth == 0:
                args.append(text[start:i].strip())
                return args
        elif c == "," and depth == 1:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    return args


def logged_events(problems):
    names = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "broker", "*.c"))):
        base = os.path.basename(path)
        text = open(path, encoding="utf-8").read()

        def add(name, pos):
            names.setdefault(name, "broker/%s:%d" % (base, text.count("\n", 0, pos) + 1))

        for m in re.finditer(r"\blog_event\(", text):
            args = call_args(text, m.end() - 1)
            if len(args) < 2:
                continue
            arg = args[1]
            literal = re.fullmatch(NAME, arg)
            if literal:
                add(literal.group(1), m.start())
            elif (base, arg) not in INDIRECT:
                problems.append("broker/%s:%d: log_event() with the event %s: say in "
                                "tests/docs/test_log_events.py (INDIRECT) where its names "
                                "come from" % (base, text.count("\n", 0, m.start()) + 1, arg))
        for helper, index in HELPERS:
            for m in re.finditer(r"\b" + helper + r"\(", text):
                args = call_args(text, m.end() - 1)
                if len(args) > index:
                    literal = re.fullmatch(NAME, args[index])
                    if literal:
                        add(literal.group(1), m.start())
        # const char *event = x ? "a" : "b";  line_said_t line = {.event = ...
        for m in re.finditer(r"(?:\.event\s*=|\bchar \*event\s*=)([^;,]*)", text):
            for literal in re.finditer(NAME, m.group(1)):
                add(literal.group(1), m.start())
        for file, function in NAMING_FUNCTIONS:
            if file != base:
                continue
            body = function_body(text, function)
            if body is None:
                problems.append("broker/%s: no function %s (tests/docs/test_log_events.py, "
                                "NAMING_FUNCTIONS)" % (base, function))
                continue
            body = body.split("default:")[0]  # a kind never expected
            for literal in re.finditer(NAME, body):
                add(literal.group(1), text.find(literal.group(0)))
    return names


def documented_events(problems):
    path = os.path.join(ROOT, "docs", "OPERATIONS.md")
    text = open(path, encoding="utf-8").read()
    start = text.find("\n## Logs\n")
    end = text.find("\n## ", start + 1)
    if start < 0:
        problems.append("docs/OPERATIONS.md: no section \"## Logs\"")
        return {}
    names = {}
    line_no = text.count("\n", 0, start) + 1
    for line in text[start:end].splitlines():
        line_no += 1
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for name in re.findall(r"`([^`]+)`", first):
            names.setdefault(name, line_no)
    return names


def main():
    problems = []
    logged = logged_events(problems)
    documented = documented_events(problems)
    passed = 0
    for name in sorted(set(logged) | set(documented)):
        if name in logged and name in documented:
            passed += 1
        elif name in logged:
            problems.append("%s: event %s is logged but not in the Logs table of "
                            "docs/OPERATIONS.md" % (logged[name], name))
        else:
            problems.append("docs/OPERATIONS.md:%d: the Logs table names %s, which the broker "
                            "does not log" % (documented[name], name))
    for problem in problems:
        print(problem)
    print("test_log_events: %d passed, %d failed" % (passed, len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
