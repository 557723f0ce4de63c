"""Per-run bookkeeping: examples, unsupported and findings per (op, adapter, path).

Each process (the plain pytest process, or every pytest-xdist worker) keeps its own
``Tally`` and writes it to ``<findings-dir>/.stats/<worker>.json`` when it ends; the
controller merges the files into the op x backend matrix. Nothing is shared in memory
across processes, so nothing is lost or counted twice.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

MAX_RATIOS_KEPT = 5000


def target_key(op: str, adapter: str, path: str) -> str:
    return f"{op}|{adapter}|{path}"


LOG10_RATIO_RANGE = (-12.0, 40.0)    # exact ... an error where the bound is 0 (ratio inf)


def log10_ratio(worst_ratio: float) -> float:
    """log10(error/bound) of the worst element for the report's histograms, clipped to a finite
    range (a known failure with an error where the bound is 0 is counted with ratio inf)."""
    if np.isnan(worst_ratio):
        return LOG10_RATIO_RANGE[1]
    lo, hi = LOG10_RATIO_RANGE
    return round(float(np.clip(np.log10(max(worst_ratio, 10.0 ** lo)), lo, hi)), 3)


class Tally:
    def __init__(self):
        self.known_matched: set[str] = set()
        self.rows = defaultdict(lambda: {"examples": 0, "passed": 0, "unsupported": 0,
                                         "failed_examples": 0, "unsupported_reasons": Counter(),
                                         "new": [], "known": [], "seconds": 0.0,
                                         "log10_ratio": []})

    def example(self, key: str, kind: str, detail: str = "", seconds: float = 0.0,
                worst_ratio: float | None = None) -> None:
        row = self.rows[key]
        row["examples"] += 1
        row["seconds"] += seconds
        if worst_ratio is not None and len(row["log10_ratio"]) < MAX_RATIOS_KEPT:
            row["log10_ratio"].append(log10_ratio(worst_ratio))
        if kind == "pass":
            row["passed"] += 1
        elif kind == "unsupported":
            row["unsupported"] += 1
            row["unsupported_reasons"][detail] += 1
        else:
            row["failed_examples"] += 1

    def finding(self, key: str, finding_id: str, known: bool) -> None:
        self.rows[key]["known" if known else "new"].append(finding_id)

    def all_unsupported(self, key: str) -> str | None:
        row = self.rows.get(key)
        if row and row["examples"] and row["unsupported"] == row["examples"]:
            reason, _ = row["unsupported_reasons"].most_common(1)[0]
            return reason
        return None

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = {k: dict(v, unsupported_reasons=dict(v["unsupported_reasons"]))
                for k, v in self.rows.items()}
        path.write_text(json.dumps({"rows": rows, "known_matched": sorted(self.known_matched)}))


def merge(stats_dir: Path) -> "Tally":
    """One Tally from every process's stats file."""
    merged = Tally()
    for f in sorted(Path(stats_dir).glob("*.json")):
        data = json.loads(f.read_text())
        merged.known_matched.update(data["known_matched"])
        for key, row in data["rows"].items():
            m = merged.rows[key]
            for field in ("examples", "passed", "unsupported", "failed_examples", "seconds"):
                m[field] += row[field]
            m["log10_ratio"] += row.get("log10_ratio", [])
            m["unsupported_reasons"].update(row["unsupported_reasons"])
            m["new"] += row["new"]
            m["known"] += row["known"]
    return merged


# Row order of the matrix: the single ops as README lists them, then relations and the rest by
# name. With -n 2 the workers' records arrive in any order; the table must not follow them.
ROW_ORDER = ("conv2d", "depthwise_conv2d", "clamp", "mean", "view", "permute", "batch_norm",
             "conv2d_batch_norm")


def matrix(rows: dict, fixed: list | None = None) -> str:
    """Op x backend table: each cell 'examples run / unsupported / findings'; rows in
    ``ROW_ORDER`` then by name, backends by name (the same table for the same run)."""
    if not rows:
        return "edgediff: no differential examples ran"
    ops, backends = [], []
    cells = defaultdict(lambda: [0, 0, set(), set()])
    for key, row in rows.items():
        op, adapter, path = key.split("|")
        col = adapter
        if op not in ops:
            ops.append(op)
        if col not in backends:
            backends.append(col)
        c = cells[(op, col)]
        c[0] += row["examples"]
        c[1] += row["unsupported"]
        c[2].update(row["new"])
        c[3].update(row["known"])
    ops.sort(key=lambda o: (ROW_ORDER.index(o) if o in ROW_ORDER else len(ROW_ORDER), o))
    backends.sort()
    width = max(14, *(len(b) + 2 for b in backends))
    opw = max(len(op) for op in ops) + 2
    lines = ["edgediff op x backend: examples run / unsupported / new findings (+known)",
             "op".ljust(opw) + "".join(b.rjust(width) for b in backends)]
    for op in ops:
        line = op.ljust(opw)
        for b in backends:
            if (op, b) not in cells:
                line += "-".rjust(width)
                continue
            n, u, new, known = cells[(op, b)]
            text = f"{n}/{u}/{len(new)}" + (f"+{len(known)}" if known else "")
            line += text.rjust(width)
        lines.append(line)
    total_new = sorted({f for r in rows.values() for f in r["new"]})
    lines.append(f"new findings: {len(total_new)}" + "".join(f"\n  {f}" for f in total_new))
    if fixed:
        lines.append("known failures that did not fail (fixed?): " + ", ".join(fixed))
    return "\n".join(lines)
