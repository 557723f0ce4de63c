"""Run a Graph on an adapter and judge it: the graph counterpart of ``edgediff.runner``.

An adapter runs graphs when it has ``run_graph(graph_spec, arrays, path=...)`` (see the
contract in ``adapters/__init__.py``). Adapters that declare ``isolated = True`` (ggml, torch)
run their graphs in their worker process (``edgediff.worker``), so a backend abort while
running a graph is a crash outcome, not a dead run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

import adapters
from edgediff.graph import Graph, run_golden
from edgediff.graph_check import check_graph, first_divergence
from edgediff.runner import call_backend

GRAPH_FAILURES = ("mismatch", "shape", "error", "crash", "hang")


class NoGraphRunner(Exception):
    """The adapter cannot run graphs (no ``run_graph``); the message says why."""


def load_graph_adapter(name: str, isolate: bool | None = None):
    """The adapter ``name`` ready to run graphs; raises AdapterUnavailable, UsageError or
    NoGraphRunner (with the reason)."""
    module = adapters.load(name)
    if not callable(getattr(module, "run_graph", None)):
        raise NoGraphRunner(f"{name} has no graph runner (run_graph) yet")
    if isolate is None:
        isolate = bool(getattr(module, "isolated", False))
    if not isolate:
        return module
    from edgediff.isolation import isolate as in_worker
    # graphs are whole networks: a longer timeout than one op's
    return in_worker(module, name, [], timeout=max(getattr(module, "timeout", 60.0), 300.0))


def graph_path(adapter) -> str:
    return tuple(getattr(adapter, "graph_paths", ("default",)))[0]


@dataclass
class GraphOutcome:
    kind: str                       # pass | unsupported | mismatch | shape | error | crash | hang
    graph: Graph
    adapter: str
    version: str
    path: str
    checks: list = field(default_factory=list)
    observed: dict = field(default_factory=dict)
    golden: dict = field(default_factory=dict)
    detail: str = ""
    facts: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.kind in GRAPH_FAILURES

    @property
    def first_divergence(self):
        return first_divergence(self.checks)

    def message(self) -> str:
        head = f"{self.kind}: {self.adapter} {self.version} graph path={self.path}"
        if self.kind in ("mismatch", "shape"):
            bad = self.first_divergence
            body = f"first diverging node: {bad.name} ({bad.op}, covering {', '.join(bad.segment)})\n"
            body += bad.stats.summary() if bad.stats is not None else bad.detail
        else:
            body = self.detail
        return f"{head}\n{self.graph.describe()}\n{body}"


def run_graph(graph: Graph, adapter, path: str | None = None, golden: dict | None = None) -> GraphOutcome:
    """Golden vs ``adapter.run_graph`` on one graph, every returned node compared."""
    path = path or graph_path(adapter)
    golden = run_golden(graph) if golden is None else golden
    out = GraphOutcome("pass", graph, adapter.name, adapter.version, path, golden=golden)
    t0 = time.perf_counter()
    result, kind, detail, facts = call_backend(
        lambda: adapter.run_graph(graph.spec(), graph.arrays_for_backend(), path=path))
    out.seconds = time.perf_counter() - t0
    out.facts.update(facts)
    if kind is not None:
        out.kind, out.detail = kind, detail
        return recycle(adapter, out)
    observed, facts = result if isinstance(result, tuple) else (result, {})
    out.facts.update(facts)
    out.observed = {k: np.asarray(v) for k, v in observed.items()}
    unknown = set(out.observed) - set(golden)
    if unknown:
        out.kind, out.detail = "error", f"run_graph returned unknown nodes {sorted(unknown)}"
        return out

    from edgediff.tolerance import FLOAT32
    fn = getattr(adapter, "graph_arithmetic", None)         # optional; float32 by default

    def arith(op):
        return fn(op, path) if callable(fn) else FLOAT32

    out.checks = check_graph(graph, out.observed, arith, golden)
    bad = out.first_divergence
    if bad is not None:
        out.kind = "shape" if bad.status == "shape" else "mismatch"
    if graph.output not in out.observed:
        out.kind, out.detail = "error", f"run_graph did not return the graph's output {graph.output!r}"
    return recycle(adapter, out)


def recycle(adapter, out: GraphOutcome) -> GraphOutcome:
    """A fresh worker process after a failing graph (see ``runner.recycle_after_failure``)."""
    if out.kind in GRAPH_FAILURES and callable(getattr(adapter, "recycle", None)):
        adapter.recycle()
    return out
