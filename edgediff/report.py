"""Reports of a run (or of several shards' findings directories merged):

- ``summary.md``: the op x backend matrix (examples, unsupported, new, known, fixed?), fit for a
  CI step summary (``$GITHUB_STEP_SUMMARY``);
- ``report.html``: one self-contained file (images inline, no network): the matrix as a heat
  map, per backend and op a histogram of log10(error / bound) of every example against the
  tolerance line (0), and every finding with its parameters, error statistics, an image of
  where in the output the mismatches sit, and links to its repro files.

Findings from several directories are deduplicated by signature id.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgediff.session import Tally, merge


# ---- gathering ---------------------------------------------------------------------------------

def gather(dirs) -> tuple[Tally, list[dict]]:
    """Merged tally and deduplicated findings (each with its ``_dir``) of findings directories."""
    tally = Tally()
    findings = {}
    for d in map(Path, dirs):
        part = merge(d / ".stats")
        tally.known_matched |= part.known_matched
        for key, row in part.rows.items():
            m = tally.rows[key]
            for f in ("examples", "passed", "unsupported", "failed_examples", "seconds"):
                m[f] += row[f]
            m["unsupported_reasons"].update(row["unsupported_reasons"])
            m["new"] += row["new"]
            m["known"] += row["known"]
            m["log10_ratio"] += row["log10_ratio"]
        for fj in sorted(d.glob("*/finding.json")):
            rec = json.loads(fj.read_text())
            if rec["id"] in findings:
                findings[rec["id"]]["occurrences"] += rec.get("occurrences", 1)
                continue
            rec["_dir"] = str(fj.parent)
            findings[rec["id"]] = rec
    return tally, sorted(findings.values(), key=lambda r: r["id"])


def cells(tally: Tally, fixed=()) -> dict:
    """(op, backend) -> counts, summed over paths."""
    out = defaultdict(lambda: {"examples": 0, "unsupported": 0, "new": set(), "known": set(), "fixed": 0})
    for key, row in tally.rows.items():
        op, adapter, _path = key.split("|")
        c = out[(op, adapter)]
        c["examples"] += row["examples"]
        c["unsupported"] += row["unsupported"]
        c["new"] |= set(row["new"])
        c["known"] |= set(row["known"])
    for entry in fixed:
        adapter, op = entry.split("/")[:2]
        if (op, adapter) in out:
            out[(op, adapter)]["fixed"] += 1
    return out


def _axes(table):
    ops = sorted({op for op, _ in table}, key=_op_order)
    backends = sorted({b for _, b in table})
    return ops, backends


def _op_order(op):
    from properties.ops import OPS
    names = list(OPS)
    return (names.index(op) if op in names else len(names), op)


# ---- Markdown ----------------------------------------------------------------------------------

def summary_markdown(tally: Tally, fixed=(), unavailable: dict | None = None) -> str:
    table = cells(tally, fixed)
    ops, backends = _axes(table)
    lines = ["## edgediff summary", "",
             "Each cell: examples / unsupported / **new** / known / fixed?", "",
             "| op | " + " | ".join(backends) + " |", "|---|" + "---:|" * len(backends)]
    for op in ops:
        row = []
        for b in backends:
            c = table.get((op, b))
            if c is None:
                row.append("-")
                continue
            new = f"**{len(c['new'])}**" if c["new"] else "0"
            row.append(f"{c['examples']} / {c['unsupported']} / {new} / {len(c['known'])} / {c['fixed']}")
        lines.append(f"| {op} | " + " | ".join(row) + " |")
    new = sorted({f for r in tally.rows.values() for f in r["new"]})
    lines += ["", f"New findings: {len(new)}"] + [f"- `{f}`" for f in new]
    if fixed:
        lines += ["", "Known failures that no longer failed (fixed?):"] + [f"- `{f}`" for f in fixed]
    if unavailable:
        lines += ["", "Unavailable backends:"] + [f"- {r}" for r in unavailable.values()]
    return "\n".join(lines) + "\n"


# ---- HTML --------------------------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def heatmap(table) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ops, backends = _axes(table)
    status = np.full((len(ops), len(backends)), np.nan)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(backends), 0.9 + 0.42 * len(ops)))
    for i, op in enumerate(ops):
        for j, b in enumerate(backends):
            c = table.get((op, b))
            if c is None:
                continue
            ran = c["examples"] - c["unsupported"]
            status[i, j] = 3 if c["new"] else 2 if c["known"] else 0 if ran else 1
            ax.text(j, i, f"{c['examples']}/{c['unsupported']}/{len(c['new'])}", ha="center",
                    va="center", fontsize=8)
    cmap = matplotlib.colors.ListedColormap(["#8fd18f", "#d0d0d0", "#f5c16c", "#e8685f"])
    ax.imshow(np.ma.masked_invalid(status), cmap=cmap, vmin=0, vmax=3, aspect="auto")
    ax.set_xticks(range(len(backends)), backends, rotation=30, ha="right")
    ax.set_yticks(range(len(ops)), ops)
    ax.set_title("examples / unsupported / new findings  (green ok, grey unsupported, orange known, red new)",
                 fontsize=8)
    return _png(fig)


def histogram(values, title) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3.6, 2.2))
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]          # stats files written before ratios were clipped
    ax.hist(v, bins=40, range=(min(-12, v.min(initial=-12)), max(2, v.max(initial=2))), color="#4a7ab5")
    ax.axvline(0.0, color="#c0392b", lw=1.5, label="tolerance")
    ax.set_xlabel("log10(error / bound), worst element", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    return _png(fig)


def mismatch_image(finding_dir: Path) -> str | None:
    """Where the output is wrong: max over batch and channels of error/bound, as an H x W map."""
    try:
        with np.load(finding_dir / "inputs.npz") as d:
            if "observed" not in d.files or "bound" not in d.files:
                return None
            exp, obs, bound = d["expected"], d["observed"].astype(np.float64), d["bound"]
    except (OSError, ValueError):
        return None
    if exp.shape != obs.shape or exp.size == 0:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with np.errstate(all="ignore"):
        ratio = np.where(np.isfinite(exp) & np.isfinite(obs), np.abs(obs - exp) / np.maximum(bound, 1e-300),
                         np.where(np.isnan(exp) == np.isnan(obs), 0.0, 1e6))
    grid = ratio.reshape(-1, ratio.shape[-1]) if ratio.ndim < 3 else ratio.reshape((-1,) + ratio.shape[-2:]).max(0)
    if grid.ndim == 1:
        grid = grid[None, :]
    fig, ax = plt.subplots(figsize=(2.6, 2.2))
    im = ax.imshow(np.log10(np.maximum(grid, 1e-3)), cmap="magma", vmin=-3, vmax=max(1, np.log10(grid.max() + 1e-3)))
    ax.set_title("log10(error/bound), max over leading dims", fontsize=7)
    ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    return _png(fig)


def html_report(dirs, out: Path, fixed=()) -> Path:
    tally, findings = gather(dirs)
    table = cells(tally, fixed)
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>edgediff report</title>",
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             ".finding{border:1px solid #bbb;border-radius:6px;padding:.6em 1em;margin:1em 0}"
             ".new{border-left:6px solid #e8685f}.known{border-left:6px solid #f5c16c}"
             "pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:12px}"
             ".hists img{margin:2px}</style></head><body>",
             "<h1>edgediff report</h1>"]
    if table:
        parts.append(f"<h2>Op x backend</h2><img alt='matrix' src='{heatmap(table)}'>")
        parts.append("<pre>" + esc(summary_markdown(tally, fixed)) + "</pre>")
    by_key = defaultdict(list)
    for key, row in tally.rows.items():
        op, adapter, _ = key.split("|")
        by_key[(adapter, op)] += row["log10_ratio"]
    hists = [(k, v) for k, v in sorted(by_key.items()) if v]
    if hists:
        parts.append("<h2>Error against the tolerance, per backend and op</h2><div class='hists'>")
        parts += [f"<img alt='{esc(a)} {esc(o)}' src='{histogram(v, f'{a} / {o} ({len(v)} examples)')}'>"
                  for (a, o), v in hists]
        parts.append("</div>")
    parts.append(f"<h2>Findings ({len(findings)})</h2>")
    for rec in findings:
        d = Path(rec["_dir"])
        status = "known" if rec.get("known") else "new"
        rel = lambda name: esc(str((d / name).resolve().as_uri()))  # noqa: E731
        stats = rec.get("stats") or {}
        parts.append(f"<div class='finding {status}' id='{esc(rec['id'])}'>")
        parts.append(f"<h3>{esc(rec['id'])} <small>({status}, seen {rec.get('occurrences', 1)}x)</small></h3>")
        parts.append(f"<p><b>{esc(rec['adapter'])}</b> {esc(rec['version'])}, path <code>{esc(rec['path'])}</code>, "
                     f"op <code>{esc(rec['op'])}</code>, kind <b>{esc(rec['kind'])}</b>, layout {esc(rec['layout'])}</p>")
        parts.append("<pre>" + esc(json.dumps({"params": rec["params"], "shapes": rec["shapes"]}, indent=1)) + "</pre>")
        if stats:
            keys = ("mismatches", "total", "worst_ratio", "max_abs_error", "max_rel_error", "max_ulp", "pcc")
            parts.append("<table><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr><tr>"
                         + "".join(f"<td>{esc(f'{stats.get(k):.4g}' if isinstance(stats.get(k), float) else str(stats.get(k)))}</td>" for k in keys)
                         + "</tr></table>")
        else:
            parts.append("<pre>" + esc(rec.get("detail", "")) + "</pre>")
        if rec.get("known"):
            parts.append(f"<p>Known: {esc(rec['known'].get('reason', ''))} {esc(rec['known'].get('link', ''))}</p>")
        img = mismatch_image(d)
        if img:
            parts.append(f"<img alt='mismatch map' src='{img}'>")
        parts.append("<p>" + " · ".join(f"<a href='{rel(n)}'>{n}</a>" for n in
                                       ("repro.py", "ISSUE.md", "finding.json", "inputs.npz")) + "</p></div>")
    parts.append("</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return out
