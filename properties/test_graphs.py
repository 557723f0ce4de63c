"""The differential property for graphs: every adapter with a graph runner (``run_graph``) runs
random chains and small DAGs as one program, and every node it returns agrees with the golden
op applied to the backend's own inputs of that node (``edgediff.graph_check``).

Example counts are small and per backend (an ExecuTorch graph is one lowering, ~1-2 s); the
``--max-examples`` option raises them. A failure is shrunk to the shortest failing graph
and written as a finding (``edgediff.graph_findings``).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

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
    return adapters.default_backends()


def pytest_generate_tests(metafunc):
    if "graph_backend" in metafunc.fixturenames:
        metafunc.parametrize("graph_backend", _wanted(metafunc.config))


def known_graph_failure(reduced, edgediff_run):
    """The known-failures entry for a reduced graph failure, or None. A minimal subgraph of one
    node is matched as that single op (the same entries as the single-op tests); a longer one
    as op ``graph``, whose ``when`` sees ``ops``, the subgraph's node ops in order."""
    from edgediff.case import Case
    from edgediff.graph_findings import single_op_case
    from edgediff.pytest_plugin import pattern_of
    from edgediff.runner import Outcome
    if edgediff_run is None:
        return None
    case = single_op_case(reduced)
    if case is None:
        g = reduced.graph
        case = Case("graph", {k: g.tensors[k] for k in g.inputs},
                    {"ops": tuple(n.op for n in g.nodes)}, g.layout)
    single = Outcome(reduced.kind, case, reduced.adapter, reduced.version, reduced.path,
                     detail=reduced.detail, extra=dict(reduced.facts))
    return edgediff_run.known_entry(single, pattern_of(single) if case.op != "graph" else ())


def test_graph_matches_golden(graph_backend, request, edgediff_run):
    adapter = _adapter(graph_backend)
    if isinstance(adapter, Exception):
        pytest.skip(f"{graph_backend}: {adapter}")
    n = request.config.getoption("max_examples", None) or EXAMPLES.get(graph_backend.partition("@")[0], DEFAULT_EXAMPLES)
    findings_dir = request.config.getoption("findings_dir", None)

    # The gate (ci profile) does not shrink slow backends' failures (each step is a lowering):
    # reduce_divergence below still cuts the failing graph down to its diverging segment.
    slow = getattr(adapter, "max_examples", None) is not None and settings().derandomize
    phases = [Phase.explicit, Phase.reuse, Phase.generate] if slow else list(Phase)

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, phases=phases)
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
            entry = known_graph_failure(reduced, edgediff_run)
            if entry is not None:
                pytest.xfail(f"known failure: {entry.reason} (graph reduced to "
                             f"{'; '.join(n.describe() for n in reduced.graph.nodes)})")
            directory = write_graph_finding(reduced, findings_dir,
                                            origin="shrunk by Hypothesis from a random graph:\n"
                                                   + exc.outcome.graph.describe())
            raise AssertionError(f"{exc}\nfinding written to {directory}") from None
        raise
