#!/usr/bin/python3
"""check_deploy.py — the Grafana dashboard, the alert rules and the metrics
table of docs/OPERATIONS.md against what a running schakeld exports.

    check_deploy.py METRICS_TEXT

METRICS_TEXT is a /metrics answer (test_metrics writes one from a broker it
started). Checked, each problem a line on stdout, exit 1 if any:
  - deploy/grafana/schakeld.json is JSON; its panel ids are unique, its
    panels do not overlap, every target has an expression; every
    schakel_... name anywhere in it (expressions, variables, descriptions)
    is one exported, and every metric exported has a panel;
  - deploy/prometheus/schakel-alerts.yml passes `promtool check rules`, its
    own tests (tests/integration/schakel-alerts.test.yml, `promtool test
    rules`) pass, and every schakel_... name in it is one exported;
  - the metrics table of docs/OPERATIONS.md (section Metrics) has one row
    for every metric exported, of its type, and none for another.
A metric renamed in broker/metrics.c, or a panel, rule or row naming one
that is gone, fails. Standard library and promtool only (`make deps`).
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "schakeld.json")
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "schakel-alerts.yml")
ALERT_TESTS = os.path.join(ROOT, "tests", "integration", "schakel-alerts.test.yml")
OPERATIONS = os.path.join(ROOT, "docs", "OPERATIONS.md")
NAME = re.compile(r"\bschakel_[a-z0-9_]*[a-z0-9]")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
PROMTOOL_TIMEOUT_S = 60


def exported_families(text):
    """{family: type} from the # TYPE lines, and the problems of samples
    that belong to no family declared."""
    families, problems = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            families[name] = kind
    for line in text.splitlines():
        if line and not line.startswith("#"):
            sample = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            if family_of(sample, families) is None:
                problems.append("/metrics: sample %s has no # TYPE line" % sample)
    if not families:
        problems.append("/metrics: no metric at all (not a /metrics answer?)")
    return families, problems


def family_of(name, families):
    """The family a series name belongs to (a histogram's _bucket, _sum and
    _count are its own), or None."""
    if name in families:
        return name
    for suffix in HISTOGRAM_SERIES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and families.get(base) == "histogram":
            return base
    return None


def strings_of(node):
    """Every string in a JSON document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings_of(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_of(value)


def names_in(texts):
    return {name for text in texts for name in NAME.findall(text)}


def check_panels(panels, problems):
    ids, boxes = set(), []
    for panel in panels:
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            problems.append("dashboard: panel id %s used twice (%s)" % (panel.get("id"), title))
        ids.add(panel.get("id"))
        box = panel.get("gridPos", {})
        x, y, w, h = (box.get(k, 0) for k in ("x", "y", "w", "h"))
        if w <= 0 or h <= 0 or x < 0 or x + w > 24:
            problems.append("dashboard: panel %r has no place on the grid: %s" % (title, box))
        for other_title, ox, oy, ow, oh in boxes:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                problems.append("dashboard: panels %r and %r overlap" % (other_title, title))
        boxes.append((title, x, y, w, h))
        if panel.get("type") != "row":
            targets = panel.get("targets") or []
            if not targets or any(not t.get("expr") for t in targets):
                problems.append("dashboard: panel %r has a target without an expression" % title)


def check_dashboard(families, problems):
    try:
        with open(DASHBOARD, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        problems.append("%s: %s" % (DASHBOARD, e))
        return
    check_panels(dashboard.get("panels", []), problems)
    named = names_in(strings_of(dashboard))
    for name in sorted(named):
        if family_of(name, families) is None:
            problems.append("dashboard: names %s, which schakeld does not export" % name)
    shown = {family_of(name, families) for name in named}
    for family in sorted(families):
        if family not in shown:
            problems.append("dashboard: no panel shows %s" % family)


def promtool(args, what, problems):
    try:
        run = subprocess.run(["promtool"] + args, capture_output=True, text=True,
                             timeout=PROMTOOL_TIMEOUT_S)
    except FileNotFoundError:
        problems.append("promtool is not installed: run `make deps` (Debian package prometheus)")
        return
    except subprocess.TimeoutExpired:
        problems.append("promtool %s did not finish within %d s" % (what, PROMTOOL_TIMEOUT_S))
        return
    if run.returncode != 0:
        problems.append("promtool %s failed:\n%s%s" % (what, run.stdout, run.stderr))


def check_alerts(families, problems):
    promtool(["check", "rules", ALERTS], "check rules " + ALERTS, problems)
    promtool(["test", "rules", ALERT_TESTS], "test rules " + ALERT_TESTS, problems)
    with open(ALERTS, encoding="utf-8") as f:
        text = f.read()
    for name in sorted(names_in([text])):
        if family_of(name, families) is None:
            problems.append("alerts: name %s, which schakeld does not export" % name)


def check_operations_table(families, problems):
    with open(OPERATIONS, encoding="utf-8") as f:
        lines = f.read().splitlines()
    try:
        start = lines.index("| metric | type | meaning |")
    except ValueError:
        problems.append("docs/OPERATIONS.md: no metrics table (| metric | type | meaning |)")
        return
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        match = re.match(r"\| `(schakel_[a-z0-9_]+)(\{[a-z_, ]*\})?` \| ([a-z]+) \|", line)
        if match is None:
            problems.append("docs/OPERATIONS.md: metrics table row not understood: %s" % line[:80])
            continue
        name, kind = match.group(1), match.group(3)
        if name in rows:
            problems.append("docs/OPERATIONS.md: %s has two rows" % name)
        rows[name] = kind
    for name, kind in sorted(rows.items()):
        if name not in families:
            problems.append("docs/OPERATIONS.md: a row for %s, which schakeld does not export"
                            % name)
        elif families[name] != kind:
            problems.append("docs/OPERATIONS.md: %s is a %s, its row says %s"
                            % (name, families[name], kind))
    for name in sorted(families):
        if name not in rows:
            problems.append("docs/OPERATIONS.md: the metrics table has no row for %s" % name)


def main(argv):
    if len(argv) != 2:
        print("usage: check_deploy.py METRICS_TEXT", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        families, problems = exported_families(f.read())
    check_dashboard(families, problems)
    check_alerts(families, problems)
    check_operations_table(families, problems)
    for problem in problems:
        print(problem)
    print("check_deploy: %d metrics exported, %d problems" % (len(families), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
