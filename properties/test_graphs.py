"""The differential property for graphs: every adapter with a graph runner (``run_graph``) runs
random chains and small DAGs as one program, and every node it returns agrees with the golden
op applied to the backend's own inputs of that node (``edgediff.graph_check``).

Example counts are small and per backend (an ExecuTorch graph is one lowering, ~1-2 s); the
``--max-examples`` option raises them. A failure is shrunk to the shortest failing graph
and written as a finding (``edgediff.graph_findings``).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

import adapters
from edgediff.graph_run import NoGraphRunner, load_graph_adapter, run_graph
from properties.strategies_graph import graphs

EXAMPLES = {"torch": 12, "ggml": 12, "xnnpack": 3, "executorch_portable": 2, "executorch_ggml": 4}
DEFAULT_EXAMPLES = 5
_LOADED = {}


class GraphFindingFailure(AssertionError):
    def __init__(self, outcome):
        super().__init__(outcome.message())
        self.outcome = outcome


def _adapter(name):
    if name not in _LOADED:
        try:
            _LOADED[name] = load_graph_adapter(name)
        except (adapters.AdapterUnavailable, NoGraphRunner) as exc:
            _LOADED[name] = exc
    return _LOADED[name]


def _wanted(config):
    names = config.getoption("backend", None)
    if names:
        return [n.strip() for n in names.split(",") if n.strip() and "==" not in n]
    return list(adapters.BUILTINS)


def pytest_generate_tests(metafunc):
    if "graph_backend" in metafunc.fixturenames:
        metafunc.parametrize("graph_backend", _wanted(metafunc.config))


def test_graph_matches_golden(graph_backend, request):
    adapter = _adapter(graph_backend)
    if isinstance(adapter, Exception):
        pytest.skip(f"{graph_backend}: {adapter}")
    n = request.config.getoption("max_examples", None) or EXAMPLES.get(graph_backend, DEFAULT_EXAMPLES)
    findings_dir = request.config.getoption("findings_dir", None)

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True)
    @given(graph=graphs())
    def prop(graph):
        outcome = run_graph(graph, adapter)
        if outcome.failed:
            raise GraphFindingFailure(outcome)

    try:
        prop()
    except GraphFindingFailure as exc:
        if findings_dir:
            from edgediff.graph_findings import reduce_divergence, write_graph_finding
            reduced = reduce_divergence(exc.outcome, adapter)      # the shrunk graph, cut further
            directory = write_graph_finding(reduced, findings_dir,
                                            origin="shrunk by Hypothesis from a random graph:\n"
                                                   + exc.outcome.graph.describe())
            raise AssertionError(f"{exc}\nfinding written to {directory}") from None
        raise
