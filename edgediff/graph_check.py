"""Compare a backend's run of a Graph with the golden ops, node by node.

Tolerance model: *local* error per observed node. Each node a backend returns is compared
with the golden op applied to the **backend's own values** of that node's inputs, not with
the golden value of the whole network up to there. So a node is judged by what it did with
what it was given, under the same per-op error model as the single-op properties
(``properties.ops``); errors accumulated upstream do not count against it, and the first node
outside its bound is where the backend went wrong. (The alternative, propagating
the golden network's error bound through 50 layers, gives bounds either so loose that a
wrong layer hides in them or so tight that rounding noise fails deep layers.)

Backends that fuse ops (XNNPACK folds conv -> batch norm -> ReLU6 into one convolution) cannot
return the intermediates inside a fusion. A node they do not return is evaluated inside the
*segment* of the next returned node that needs it: the golden ops of the segment run on the
backend's values at its boundary, each op adds its own rounding bound, and the bounds of its
inputs are carried through it to first order, as the op's linear part acting on absolute
values (conv: the conv of the input bound with |w|; batch norm: times |weight|/sqrt(var+eps);
clamp: unchanged; mean, view, permute: the op itself; add: the sum).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import reference
from edgediff.case import Case
from edgediff.compare import ErrorStatistics, compare
from edgediff.graph import Graph, golden_node, run_golden
from edgediff.tolerance import FLOAT32, Arithmetic

PROPAGATION_SLACK = 1.0 + 2.0 ** -20     # the propagated bound is itself computed in float64


@dataclass
class NodeCheck:
    name: str
    op: str
    shape: tuple
    status: str                # ok | diverges | shape | not returned
    segment: tuple = ()        # nodes this comparison covers (more than one when fused)
    stats: ErrorStatistics | None = None
    end_to_end_max_abs: float | None = None     # vs the golden network from its inputs
    detail: str = ""

    @property
    def worst_ratio(self) -> float:
        return self.stats.worst_ratio if self.stats is not None else float("nan")

    @property
    def max_abs_error(self) -> float:
        return self.stats.max_abs_error if self.stats is not None else float("nan")


def add_bound(case: Case, expected, arith: Arithmetic):
    """One rounding of the sum, and the inputs' rounding into the path's format."""
    x, y = np.abs(case.inputs["x"]), np.abs(case.inputs["y"])
    return (arith.u("accumulate") + 2 * arith.u_inputs(case.dtype)) * (x + y) + arith.u("output") * np.abs(expected)


def local_bound(node, values: dict, expected, arith: Arithmetic):
    if node.op == "add":
        bound = add_bound
    else:
        from properties.ops import OPS
        bound = OPS[node.op].bound
    inputs = {role: values[src] for role, src in node.inputs.items()}
    return bound(Case(node.op, inputs, dict(node.params)), expected, arith)


def propagate(node, values: dict, errors: dict):
    """First-order bound on how the inputs' errors move the node's output (>= 0)."""
    e = {role: errors.get(src) for role, src in node.inputs.items()}
    if all(v is None for v in e.values()):
        return None
    x_err = e.get("x")
    if x_err is None:
        x_err = np.zeros(np.shape(values[node.inputs["x"]]))
    p = node.params
    if node.op in ("conv2d", "depthwise_conv2d"):
        w = np.abs(values[node.inputs["w"]])
        if node.op == "depthwise_conv2d":
            return reference.depthwise_conv2d(x_err, w, None, p.get("stride", 1), p.get("padding", 0),
                                              p.get("dilation", 1))
        return reference.conv2d(x_err, w, None, p.get("stride", 1), p.get("padding", 0),
                                p.get("dilation", 1), p.get("groups", 1))
    if node.op == "batch_norm":
        c = np.shape(x_err)[1]
        scale = 1.0 / np.sqrt(np.asarray(values[node.inputs["running_var"]], np.float64) + p.get("eps", 1e-5))
        if "weight" in node.inputs:
            scale = scale * np.abs(values[node.inputs["weight"]])
        return x_err * scale.reshape((1, c) + (1,) * (np.ndim(x_err) - 2))
    if node.op == "clamp":
        return x_err
    if node.op in ("mean", "view", "permute"):
        return reference.__dict__[node.op](x_err, **p)
    if node.op == "add":
        y_err = e.get("y")
        return x_err + (0.0 if y_err is None else y_err)
    raise ValueError(f"no error propagation rule for op {node.op!r}")


def segment_of(graph: Graph, name: str, observed: dict) -> list:
    """The nodes the comparison of ``name`` covers: it and every unreturned node upstream of it
    up to returned nodes or the graph's tensors, in graph order."""
    by_name = {n.name: n for n in graph.nodes}
    seen, stack = set(), [name]
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        for src in by_name[cur].inputs.values():
            if src in by_name and src not in observed:
                stack.append(src)
    return [n for n in graph.nodes if n.name in seen]


def check_graph(graph: Graph, observed: dict, arithmetic=None, golden: dict | None = None) -> list:
    """One NodeCheck per node, in graph order. ``arithmetic(op) -> Arithmetic`` (float32 by default)."""
    arith_of = arithmetic or (lambda op: FLOAT32)
    golden = run_golden(graph) if golden is None else golden
    base = {k: np.asarray(v, np.float64) for k, v in graph.tensors.items()}
    obs = {k: np.asarray(v, np.float64) for k, v in observed.items()}
    results = []
    for node in graph.nodes:
        shape = tuple(np.shape(golden[node.name]))
        if node.name not in obs:
            results.append(NodeCheck(node.name, node.op, shape, "not returned",
                                     detail="not observable on this backend (fused or overwritten in place)"))
            continue
        segment = segment_of(graph, node.name, obs)
        values, errors = dict(base), {}
        ok_inputs = True
        for n in segment:
            for src in n.inputs.values():
                if src not in values and src in obs:
                    values[src] = obs[src]
                    if np.shape(obs[src]) != np.shape(golden[src]):
                        ok_inputs = False
        if not ok_inputs:
            results.append(NodeCheck(node.name, node.op, shape, "not compared", tuple(n.name for n in segment),
                                     detail="an input already had the wrong shape"))
            continue
        for n in segment:
            arith = arith_of(n.op)
            expected = golden_node(n, values)
            bound = np.asarray(local_bound(n, values, expected, arith), np.float64)
            carried = propagate(n, values, errors)
            if carried is not None:
                bound = bound + PROPAGATION_SLACK * carried
            values[n.name], errors[n.name] = expected, np.broadcast_to(bound, np.shape(expected))
        got = obs[node.name]
        seg = tuple(n.name for n in segment)
        if got.shape != shape:
            results.append(NodeCheck(node.name, node.op, shape, "shape", seg,
                                     detail=f"backend shape {got.shape}, expected {shape}"))
            continue
        stats = compare(values[node.name], got, errors[node.name])
        with np.errstate(invalid="ignore"):
            e2e = float(np.nanmax(np.abs(got - golden[node.name]), initial=0.0))
        results.append(NodeCheck(node.name, node.op, shape, "ok" if stats.ok else "diverges", seg, stats, e2e))
    return results


def first_divergence(checks: list):
    """The first NodeCheck (in graph order) that failed, or None."""
    for c in checks:
        if c.status in ("diverges", "shape"):
            return c
    return None


def table(checks: list) -> str:
    """The per-layer error table the CLI prints."""
    head = f"{'layer':<24} {'op':<17} {'shape':<20} {'max abs err':>12} {'err/bound':>10} {'e2e abs':>10}  status"
    lines = [head, "-" * len(head)]
    for c in checks:
        shape = "x".join(str(s) for s in c.shape)
        mae = f"{c.max_abs_error:.3g}" if c.stats else "-"
        ratio = f"{c.worst_ratio:.3g}" if c.stats else "-"
        e2e = f"{c.end_to_end_max_abs:.3g}" if c.end_to_end_max_abs is not None else "-"
        status = c.status + (f" (with {', '.join(c.segment[:-1])})" if len(c.segment) > 1 else "")
        lines.append(f"{c.name:<24} {c.op:<17} {shape:<20} {mae:>12} {ratio:>10} {e2e:>10}  {status}")
    return "\n".join(lines)
