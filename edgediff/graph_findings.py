"""Graph findings: reduce a diverging graph to a minimal failing subgraph and write it.

``reduce_divergence(outcome, adapter)``:
1. take the first diverging node and the segment its comparison covered (one node, or a fused
   group such as conv -> BN -> ReLU6 on XNNPACK); for a failure without a diverging node (a
   lowering error, a crash, a hang), binary-search the shortest failing run of consecutive
   nodes instead (``shortest_window``);
2. cut that segment out as a graph of its own, whose runtime inputs are the *backend's own*
   values at the segment's boundary (``edgediff.graph.subgraph``), and run it again: if it
   still fails, the bug lives inside the segment;
3. shrink it: crop the spatial size of its 4-D inputs (top-left windows, halving H and W while
   the subgraph stays valid and still fails), then, for a one-node subgraph, halve its
   channels (input channels, and a conv's output channels) while it still fails.

``write_graph_finding(outcome, root)`` writes ``<root>/<id>/``: ``graph.json`` + ``tensors.npz``
(the subgraph, plus ``expected`` and ``bound`` of its failing node), ``finding.json``,
``ISSUE.md`` and a ``repro.py`` that reruns the subgraph through edgediff's adapter and prints
PASS or FAIL. When the minimal subgraph is a single op, ``single_op_findings`` also runs it as
an ordinary Case through the adapter's single-op paths; any path that reproduces it gets the
usual single-op finding (standalone repro) from ``FindingStore``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

import adapters
from edgediff.case import Case, to_jsonable
from edgediff.findings import atomic_write, environment, locked
from edgediff.graph import Graph, infer_shapes, subgraph
from edgediff.graph_run import GraphOutcome, run_graph

REPO = Path(__file__).resolve().parent.parent


def _crop(graph: Graph, h: int, w: int) -> Graph:
    tensors = dict(graph.tensors)
    for k in graph.inputs:
        a = tensors[k]
        if a.ndim == 4:
            tensors[k] = np.ascontiguousarray(a[:, :, :h, :w])
    return Graph(list(graph.inputs), tensors, list(graph.nodes), graph.layout, graph.dtype)


def reduce_divergence(outcome: GraphOutcome, adapter, max_steps: int = 12) -> GraphOutcome:
    """The smallest failing subgraph found from ``outcome``'s first divergence (or ``outcome``
    itself when the cut-out segment does not fail on its own)."""
    bad = outcome.first_divergence
    if bad is not None:
        sub = subgraph(outcome.graph, bad.segment, outcome.observed)
        best = run_graph(sub, adapter)
        if not best.failed:
            return outcome
    elif outcome.failed:
        best = shortest_window(outcome, adapter)
        sub = best.graph
    else:
        return outcome
    for _ in range(max_steps):
        dims = [tuple(sub.tensors[k].shape[2:]) for k in sub.inputs if sub.tensors[k].ndim == 4]
        if not dims:
            break
        h, w = max(d[0] for d in dims), max(d[1] for d in dims)
        improved = False
        for nh, nw in (((h + 1) // 2, (w + 1) // 2), ((h + 1) // 2, w), (h, (w + 1) // 2)):
            if (nh, nw) == (h, w):
                continue
            candidate = _crop(sub, nh, nw)
            try:
                infer_shapes(candidate)
            except ValueError:
                continue
            trial = run_graph(candidate, adapter)
            if trial.failed and trial.kind == best.kind:
                sub, best, improved = candidate, trial, True
                break
        if not improved:
            break
    for _ in range(max_steps):                      # then fewer channels, for one-node subgraphs
        candidates = _fewer_channels(sub)
        improved = False
        for candidate in candidates:
            try:
                infer_shapes(candidate)
            except ValueError:
                continue
            trial = run_graph(candidate, adapter)
            if trial.failed and trial.kind == best.kind:
                sub, best, improved = candidate, trial, True
                break
        if not improved:
            break
    return best


def _fewer_channels(graph: Graph) -> list:
    """One-node graphs with about half the channels (input channels, then output channels for a
    conv): the same op on the first channels of every per-channel tensor."""
    if len(graph.nodes) != 1:
        return []
    node = graph.nodes[0]
    t = graph.tensors
    x = t[node.inputs["x"]]
    if x.ndim < 2:
        return []
    c = x.shape[1]
    out = []

    def variant(slices):
        tensors = dict(t)
        for name, sl in slices.items():
            tensors[name] = np.ascontiguousarray(t[name][sl])
        return Graph(list(graph.inputs), tensors, list(graph.nodes), graph.layout, graph.dtype)

    ins = node.inputs
    if node.op == "depthwise_conv2d" and c > 1:
        k = c // 2
        mult = t[ins["w"]].shape[0] // c
        sl = {ins["x"]: np.s_[:, :k], ins["w"]: np.s_[:k * mult]}
        if "b" in ins:
            sl[ins["b"]] = np.s_[:k * mult]
        out.append(variant(sl))
    elif node.op == "conv2d" and node.params.get("groups", 1) == 1:
        o = t[ins["w"]].shape[0]
        if c > 1:
            out.append(variant({ins["x"]: np.s_[:, :c // 2], ins["w"]: np.s_[:, :c // 2]}))
        if o > 1:
            sl = {ins["w"]: np.s_[:o // 2]}
            if "b" in ins:
                sl[ins["b"]] = np.s_[:o // 2]
            out.append(variant(sl))
    elif node.op in ("batch_norm", "clamp", "add") and c > 1:
        sl = {ins["x"]: np.s_[:, :c // 2]}
        if node.op == "add" and t[ins["y"]].ndim >= 2 and t[ins["y"]].shape[1] == c:
            sl[ins["y"]] = np.s_[:, :c // 2]
        for role in ("running_mean", "running_var", "weight", "bias"):
            if role in ins:
                sl[ins[role]] = np.s_[:c // 2]
        out.append(variant(sl))
    return [g for g in out if all(a.size for a in g.tensors.values())]


def shortest_window(outcome: GraphOutcome, adapter) -> GraphOutcome:
    """For a failure with no diverging node to point at (a lowering error, a crash, a hang): the
    shortest run of consecutive nodes that still fails the same way. Nodes cut off in front are
    replaced by their golden values (float32) as inputs. Binary searches, first for the shortest
    failing prefix, then for the latest start; each trial is one backend run."""
    graph, kind = outcome.graph, outcome.kind
    golden = outcome.golden or {}
    names = [n.name for n in graph.nodes]
    tried = {}

    def trial(lo, hi):
        if (lo, hi) not in tried:
            if (lo, hi) == (0, len(names)):
                tried[lo, hi] = outcome
            else:
                sub = subgraph(graph, names[lo:hi], {k: v.astype(np.float32) for k, v in golden.items()})
                tried[lo, hi] = run_graph(sub, adapter)
        r = tried[lo, hi]
        return r if r.kind == kind else None

    a, b = 1, len(names)
    while a < b:
        mid = (a + b) // 2
        if trial(0, mid):
            b = mid
        else:
            a = mid + 1
    hi = b
    a, b = 0, hi - 1
    while a < b:
        mid = (a + b + 1) // 2
        if trial(mid, hi):
            a = mid
        else:
            b = mid - 1
    return trial(a, hi) or outcome


def _finding_id(outcome: GraphOutcome) -> str:
    ops = "+".join(n.op for n in outcome.graph.nodes)
    sig = {"adapter": outcome.adapter, "path": outcome.path, "kind": outcome.kind, "ops": ops,
           "layout": outcome.graph.layout}
    digest = hashlib.sha1(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:10]
    short = ops if len(ops) <= 60 else ops[:57] + "..."
    return f"{outcome.adapter}-graph-{short}-{outcome.kind}-{digest}"


REPRO = '''#!/usr/bin/env python3
"""Repro for edgediff graph finding {fid}: {adapter} ({version}), graph path {path}.

Runs the subgraph in graph.json / tensors.npz through edgediff's {adapter} adapter as ONE
program (how the backend runs graphs) and compares every node it returns with the golden ops
on the backend's own inputs. Prints PASS or FAIL (exit status 1). Needs the edgediff checkout
at {repo!r} (or set EDGEDIFF_REPO).
"""
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("EDGEDIFF_REPO", {repo!r}))

from edgediff.graph import Graph
from edgediff.graph_run import load_graph_adapter, run_graph


def main():
    graph = Graph.load(HERE)
    spec = {spec!r}                  # a user adapter MODULE:ATTR, or None for a built-in
    if spec:
        import adapters
        adapter = adapters.load_spec(spec)
    else:
        adapter = load_graph_adapter({adapter!r})
    outcome = run_graph(graph, adapter, path={path!r})
    if outcome.failed:
        print("FAIL: " + outcome.message())
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def write_graph_finding(outcome: GraphOutcome, root, origin: str = "", spec: str | None = None) -> Path:
    """Write ``outcome`` (normally already reduced) as a graph finding; returns its directory.
    ``spec`` (MODULE:ATTR) names a user adapter for the repro; built-ins are loaded by name."""
    root = Path(root)
    fid = _finding_id(outcome)
    directory = root / fid
    bad = outcome.first_divergence
    with locked(root):
        previous = directory / "finding.json"
        occurrences = 1
        if previous.exists():
            old = json.loads(previous.read_text())
            occurrences = old.get("occurrences", 1) + 1
            if outcome.graph.n_elements >= old.get("input_elements", 1 << 62):
                old["occurrences"] = occurrences
                atomic_write(previous, json.dumps(old, indent=2))
                return directory
        directory.mkdir(parents=True, exist_ok=True)
        extra = {}
        if bad is not None and bad.name in outcome.observed:
            extra["observed"] = outcome.observed[bad.name]
            extra["golden_end_to_end"] = outcome.golden[bad.name]
        outcome.graph.save(directory, {f"__{k}": v for k, v in extra.items()})
        record = {"id": fid, "kind": outcome.kind, "adapter": outcome.adapter, "version": outcome.version,
                  "path": outcome.path, "graph": True, "origin": origin,
                  "nodes": [n.describe() for n in outcome.graph.nodes], "layout": outcome.graph.layout,
                  "shapes": {k: list(outcome.graph.tensors[k].shape) for k in outcome.graph.inputs},
                  "input_elements": outcome.graph.n_elements,
                  "first_diverging_node": bad.name if bad else None,
                  "segment": list(bad.segment) if bad else [],
                  "stats": bad.stats.to_json() if bad is not None and bad.stats is not None else None,
                  "detail": outcome.detail or (bad.detail if bad else ""),
                  "backend_facts": to_jsonable(outcome.facts), "occurrences": occurrences,
                  "environment": environment()}
        atomic_write(directory / "repro.py", REPRO.format(fid=fid, adapter=outcome.adapter,
                                                          version=outcome.version, path=outcome.path,
                                                          repo=str(REPO), spec=spec))
        atomic_write(directory / "ISSUE.md", render_issue(record, outcome))
        atomic_write(directory / "finding.json", json.dumps(record, indent=2, default=str))
    return directory


def render_issue(record: dict, outcome: GraphOutcome) -> str:
    bad = outcome.first_divergence
    env = record["environment"]
    lines = [f"# [{outcome.adapter} {outcome.path}] graph: {outcome.kind} at "
             f"{bad.name + ' (' + bad.op + ')' if bad else 'run'}", "",
             "## Environment", f"- backend: {outcome.adapter} {outcome.version}, graph path `{outcome.path}`",
             f"- Python {env['python']}, NumPy {env['numpy']}, {env['platform']}", "",
             "## Minimal graph (run as one program)", "```", outcome.graph.describe(), "```", ""]
    origin = record.get("origin") or ""
    if "\n" in origin:
        head, _, rest = origin.partition("\n")
        lines += [f"Reduced from ({head.rstrip(':')}):", "```", rest, "```", ""]
    elif origin:
        lines += [f"Reduced from: {origin}", ""]
    lines += ["## What differed"]
    if bad is not None and bad.stats is not None:
        lines += [f"Node `{bad.name}` (covering {', '.join(bad.segment)}), compared with the golden ops "
                  "applied to the backend's own inputs of that node:", "```", bad.stats.summary(), "```"]
    else:
        lines += ["```", outcome.detail or (bad.detail if bad else outcome.kind), "```"]
    facts = {k: v for k, v in outcome.facts.items() if k != "stderr_tail"}
    if facts:
        lines += ["", "## Backend facts", f"`{json.dumps(to_jsonable(facts), default=str)}`"]
    if outcome.facts.get("stderr_tail"):
        lines += ["", "Last lines of the backend's stderr:", "```", outcome.facts["stderr_tail"], "```"]
    lines += ["", "## Reproduce", "`graph.json` + `tensors.npz` hold the subgraph and its inputs.",
              "```", "python repro.py   # prints PASS or FAIL", "```", ""]
    return "\n".join(lines)


def single_op_case(outcome: GraphOutcome):
    """The minimal subgraph as a Case, when it is one node of a single-op table op."""
    from properties.ops import OPS
    g = outcome.graph
    if len(g.nodes) != 1 or g.nodes[0].op not in OPS:
        return None
    node = g.nodes[0]
    inputs = {role: np.asarray(g.tensors[src], np.float32) for role, src in node.inputs.items()}
    return Case(node.op, inputs, dict(node.params), g.layout if inputs["x"].ndim == 4 else "contiguous")


def single_op_findings(outcome: GraphOutcome, backend: str, root) -> list:
    """Run the one-node minimal subgraph through every single-op path of ``backend`` (isolated
    when the adapter says so); write the usual finding for each path that reproduces it."""
    from edgediff.findings import FindingStore
    from edgediff.runner import run_case
    from properties.ops import OPS
    case = single_op_case(outcome)
    if case is None:
        return []
    module = adapters.load(backend)
    adapter = module
    if getattr(module, "isolated", False):
        from edgediff.isolation import isolate
        adapter = isolate(module, backend, [case.op])
    written = []
    try:
        for path in adapters.paths(adapter, case.op):
            single = run_case(case, adapter, path, OPS[case.op])
            if single.failed:
                src = getattr(adapter, "repro_source", None)
                source = src(case.op, path) if callable(src) else None
                directory, _ = FindingStore(root).write(single, OPS[case.op].pattern(case), source)
                written.append((path, directory))
    finally:
        if adapter is not module:
            adapter.close()
    return written
