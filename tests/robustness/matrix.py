#!/usr/bin/env python3
"""The fault matrix of docs/reliability.md from soak reports.

    matrix.py muster=robustness-muster.jsonl etcd=robustness-etcd.jsonl

Each report is what `robustness.py soak --report FILE` appends, one JSON
line per run.  A run with several faults counts once for each fault type
it injected.  Cells: runs, operations recorded (acknowledged + unknown
outcome) and violations per checker, systems side by side.
"""

import json
import sys

CHECKERS = ["linearizability", "revisions", "watch", "leases", "lease-timing"]


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    return runs


def tally(runs):
    rows = {}
    total = {"runs": 0, "ops": 0, "failed": 0, "errors": 0, **{c: 0 for c in CHECKERS}}
    for r in runs:
        ops = r["ops"].get("ok", 0) + r["ops"].get("unknown", 0)
        total["runs"] += 1
        total["ops"] += ops
        bad = any(r["violations"].values()) or r.get("errors") or r.get("run_failed")
        total["failed"] += 1 if bad else 0
        total["errors"] += len(r.get("errors") or []) + (1 if r.get("run_failed") else 0)
        for c in CHECKERS:
            total[c] += r["violations"].get(c, 0)
        for fault in set(r["faults"]):
            row = rows.setdefault(fault, {"runs": 0, "ops": 0, "errors": 0,
                                          **{c: 0 for c in CHECKERS}})
            row["runs"] += 1
            row["ops"] += ops
            row["errors"] += len(r.get("errors") or []) + (1 if r.get("run_failed") else 0)
            for c in CHECKERS:
                row[c] += r["violations"].get(c, 0)
    return rows, total


def main(argv):
    systems = []
    for arg in argv:
        name, _, path = arg.partition("=")
        systems.append((name, tally(load(path))))
    faults = sorted({f for _, (rows, _) in systems for f in rows})
    head = "| fault | " + " | ".join(
        "%s runs | %s ops | %s violations (lin / rev / watch / lease / lease timing) | %s run errors"
        % (n, n, n, n) for n, _ in systems) + " |"
    print(head)
    print("|" + "---|" * (1 + 4 * len(systems)))
    for f in faults:
        cells = []
        for _, (rows, _) in systems:
            r = rows.get(f)
            if r is None:
                cells += ["-", "-", "-", "-"]
            else:
                cells += [str(r["runs"]), str(r["ops"]),
                          " / ".join(str(r[c]) for c in CHECKERS), str(r["errors"])]
        print("| %s | %s |" % (f, " | ".join(cells)))
    cells = []
    for _, (_, t) in systems:
        cells += [str(t["runs"]), str(t["ops"]), " / ".join(str(t[c]) for c in CHECKERS),
                  str(t["errors"])]
    print("| **all runs** | %s |" % " | ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1:])
