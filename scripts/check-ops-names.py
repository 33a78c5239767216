#!/usr/bin/env python3
"""The static half of scripts/check-ops.sh: which metrics the alert rules and
the Grafana dashboards name, and whether a live scrape of the services has
each of them; and whether every alert has a unit test and a runbook section.

    check-ops-names.py RULES TESTS RUNBOOK DASHBOARD_DIR SCRAPE...

RULES is deploy/prometheus/alerts.yml, TESTS its promtool tests, RUNBOOK
docs/RUNBOOK.md, DASHBOARD_DIR deploy/grafana, and each SCRAPE a file holding
one service's /metrics text. Exits 1, listing every problem, when
  - an expression (a rule's, a panel's, a dashboard variable's) names a
    metric no scrape has a sample of: recording rules defined in RULES are
    not metrics, and Prometheus's own `up` is allowed;
  - an alert has no test in TESTS that expects it to fire;
  - an alert has no `### <name>` section in RUNBOOK, or its runbook_url
    does not point there.
`--self-test` checks the expression reader on known expressions.

The reader is a tokenizer, not a PromQL parser: it drops strings, label
matchers ({...}), ranges and subqueries ([...]), grouping label lists
(by/without/on/ignoring/group_left/group_right (...)), Grafana variables
($x, ${x}) and numbers and durations, then takes every identifier that is
not a function call, a keyword or an aggregation modifier. A histogram
panel names X_bucket, X_sum or X_count, which the scrape has as samples.
"""

import json
import os
import re
import sys

import yaml

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
}
# Prometheus's own series, not any service's.
PROMETHEUS_SERIES = {"up"}

IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _strip_balanced(expr, open_ch, close_ch):
    out, depth = [], 0
    for ch in expr:
        if ch == open_ch:
            depth += 1
            continue
        if ch == close_ch and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out)


def names_in_expr(expr):
    """The metric names an expression reads."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"`[^`]*`", "``", e)
    e = re.sub(r"#[^\n]*", " ", e)  # comments
    e = re.sub(r"\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*", " ", e)  # Grafana variables
    # Spaces around brackets keep `a{x}b` from gluing `a` and `b`.
    e = _strip_balanced(e.replace("{", " { ").replace("}", " } "), "{", "}")
    e = _strip_balanced(e.replace("[", " [ ").replace("]", " ] "), "[", "]")
    e = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e
    )
    e = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", e)
    names = set()
    for m in IDENT.finditer(e):
        name = m.group(0)
        before = e[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":
            continue  # part of a number (1e3) or a duration
        rest = e[m.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        if name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def rules_exprs(path):
    """(recorded names, alerts {name: rule}, [(where, expr)]) of a rules file."""
    doc = yaml.safe_load(open(path))
    records, alerts, exprs = set(), {}, []
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                records.add(rule["record"])
                exprs.append((f"{path}: record {rule['record']}", rule["expr"]))
            else:
                alerts[rule["alert"]] = rule
                exprs.append((f"{path}: alert {rule['alert']}", rule["expr"]))
    return records, alerts, exprs


def dashboard_exprs(directory):
    """[(where, expr)] of every panel target and query variable."""
    exprs = []
    files = sorted(f for f in os.listdir(directory) if f.endswith(".json"))
    if not files:
        raise SystemExit(f"no dashboards in {directory}")

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for f in files:
        path = os.path.join(directory, f)
        d = json.load(open(path))
        count = 0
        for p in panels(d.get("panels", [])):
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs.append((f"{path}: panel {p.get('title')!r}", t["expr"]))
                    count += 1
        for v in d.get("templating", {}).get("list", []):
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if v.get("type") == "query" and q:
                m = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]+\s*\)\s*", q)
                exprs.append((f"{path}: variable {v['name']}", m.group(1) if m else q))
        if count == 0:
            raise SystemExit(f"{path}: no panel has a query")
    return exprs


def scraped_names(paths):
    names = set()
    for path in paths:
        text = open(path).read()
        samples = 0
        for line in text.splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
                samples += 1
        if samples == 0:
            raise SystemExit(f"{path}: no samples in the scrape")
    return names


def tested_alerts(path):
    """Alert names some test expects to fire."""
    doc = yaml.safe_load(open(path))
    fired = set()
    for t in doc.get("tests", []):
        for a in t.get("alert_rule_test", []):
            if a.get("exp_alerts"):
                fired.add(a["alertname"])
    return fired


def runbook_sections(path):
    return {m.group(1) for m in re.finditer(r"^### +([A-Za-z0-9]+)\s*$", open(path).read(), re.M)}


def self_test():
    cases = {
        'sum by (le) (rate(a_bucket{x="y",z=~"$v"}[5m]))': {"a_bucket"},
        "histogram_quantile(0.99, sum by (le, route) (rate(b_seconds_bucket[$__rate_interval]))) > 0.05": {"b_seconds_bucket"},
        "up{job=~\"sk-.*\"} == 0": {"up"},
        "1 - sum(rate(c_total[1h])) / sum(rate(d_total{e=\"f\"}[1h])) > (14.4 * 0.001)": {"c_total", "d_total"},
        "x and on (instance) y offset 5m or ignoring(a) group_left(b) z": {"x", "y", "z"},
        "deriv(rec:one:sum[15m]) > 1e3 and rec:one:sum > 0": {"rec:one:sum"},
        "absent(g) or sum without (shard) (h)": {"g", "h"},
        "max_over_time(i[10m:1m]) bool > 2": {"i"},
    }
    bad = 0
    for expr, want in cases.items():
        got = names_in_expr(expr)
        if got != want:
            print(f"self-test: {expr!r}: got {sorted(got)}, want {sorted(want)}")
            bad += 1
    if bad:
        sys.exit(1)
    print(f"self-test: {len(cases)} expressions read as expected")


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) < 6:
        raise SystemExit(__doc__)
    rules, tests, runbook, dashboards, scrapes = argv[1], argv[2], argv[3], argv[4], argv[5:]
    records, alerts, exprs = rules_exprs(rules)
    exprs += dashboard_exprs(dashboards)
    have = scraped_names(scrapes) | PROMETHEUS_SERIES
    problems = []
    used = set()
    for where, expr in exprs:
        for name in sorted(names_in_expr(expr) - records):
            used.add(name)
            if name not in have:
                problems.append(f"{where}: names {name}, which no service exports (not in the live scrape)")
    fired = tested_alerts(tests)
    sections = runbook_sections(runbook)
    for name, rule in sorted(alerts.items()):
        if name not in fired:
            problems.append(f"{rules}: alert {name} has no test in {tests} that expects it to fire")
        if name not in sections:
            problems.append(f"{rules}: alert {name} has no '### {name}' section in {runbook}")
        want = f"{os.path.normpath(runbook)}#{name.lower()}"
        got = rule.get("annotations", {}).get("runbook_url")
        if got != want:
            problems.append(f"{rules}: alert {name}: runbook_url is {got!r}, not {want!r}")
    if problems:
        print("\n".join(problems))
        print(f"check-ops: {len(problems)} problem(s)")
        sys.exit(1)
    print(
        f"check-ops: {len(used)} metric names in {len(exprs)} expressions (the rules and "
        f"every dashboard) all exported by the live services; {len(alerts)} alerts, each "
        f"tested and in the runbook"
    )


if __name__ == "__main__":
    main(sys.argv)
