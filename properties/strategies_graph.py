"""Hypothesis strategies for random valid graphs: chains and small DAGs of conv2d / depthwise /
batch norm / clamp / mean / view / permute / add (residual), as edge networks use them.

A graph is drawn as a *list of node specs* (small tuples of ints), then built by
``build_graph``, which reads each spec relative to the current tensor (its shape, the earlier
nodes) and skips a spec that does not apply (a conv after the tensor became 2-D, a residual
add with no earlier node of the same shape). So every list builds a valid graph, and when
Hypothesis shrinks it by deleting list elements the result is still valid: the minimal
failing example is the shortest failing graph, with the smallest shapes and values
(sizes shrink towards 1, kernels towards 1x1, values towards small integers).

Values come from a drawn seed and a named distribution, as in ``strategies.py``; weights are
drawn from the modest kinds (small integers, normal, uniform) so a chain of convs stays finite
in float32, inputs also from ``large`` and ``signed_zeros``.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from edgediff.case import LAYOUTS
from edgediff.graph import GraphBuilder

from .strategies import make_values

KINDS = ("conv", "depthwise", "batch_norm", "clamp", "residual", "mean", "view", "permute")
INPUT_KINDS = ("small_int", "normal", "uniform", "signed_zeros", "large")
WEIGHT_KINDS = ("small_int", "normal", "uniform")
CLAMPS = [(0.0, 6.0), (-1.0, 1.0), (0.0, None), (None, 0.5), (-2.5, 3.0)]
PERMUTES = [(0, 2, 3, 1), (0, 3, 1, 2), (0, 1, 3, 2)]
MAX_NODES = 6
MAX_CHANNELS = 16

# one node spec: (kind, a, b, c, d); the small ints choose sizes and options and shrink to 0
node_specs = st.tuples(st.sampled_from(KINDS), st.integers(0, 15), st.integers(0, 3),
                       st.integers(0, 3), st.integers(0, 3))


def build_graph(x_shape, layout, specs, seed: int, input_kind: str, weight_kind: str):
    """The graph the specs describe (see the module docstring); deterministic in its arguments."""
    b = GraphBuilder(layout)
    counter = iter(range(10 ** 6))

    def values(kind, shape):
        return make_values(kind, seed + next(counter), shape)

    cur = b.input("x", values(input_kind, x_shape))
    shapes = {cur: tuple(x_shape)}
    for i, (kind, a, p, q, r) in enumerate(specs):
        shape = shapes[cur]
        name = f"{kind}{i}"
        node = None
        if kind in ("conv", "depthwise") and len(shape) == 4:
            n, c, h, w = shape
            k = 3 if p % 2 else 1
            stride = 2 if q == 1 else 1
            pad = k // 2 if (r % 2 or min(h, w) < k) else 0
            extra = {"stride": stride, "padding": pad}
            if kind == "conv":
                o = 1 + a % MAX_CHANNELS
                wt = b.const(f"{name}.w", values(weight_kind, (o, c, k, k)))
                ins = {"x": cur, "w": wt}
                oc = o
            else:
                mult = 2 if a % 5 == 4 else 1
                oc = c * mult
                wt = b.const(f"{name}.w", values(weight_kind, (oc, 1, k, k)))
                ins = {"x": cur, "w": wt}
            if q >= 2:
                ins["b"] = b.const(f"{name}.b", values(weight_kind, (oc,)))
            op = "conv2d" if kind == "conv" else "depthwise_conv2d"
            node = b.add_node(name, op, ins, **extra)
            shapes[node] = (n, oc, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)
        elif kind == "batch_norm" and len(shape) >= 2:
            c = shape[1]
            rng = np.random.default_rng(seed + next(counter))
            ins = {"x": cur, "running_mean": b.const(f"{name}.mean", values(weight_kind, (c,))),
                   "running_var": b.const(f"{name}.var", rng.uniform(0.25, 4.0, c))}
            if p % 2:
                ins["weight"] = b.const(f"{name}.weight", values(weight_kind, (c,)))
            if q % 2:
                ins["bias"] = b.const(f"{name}.bias", values(weight_kind, (c,)))
            node = b.add_node(name, "batch_norm", ins, eps=1e-5)
            shapes[node] = shape
        elif kind == "clamp":
            lo, hi = CLAMPS[a % len(CLAMPS)]
            node = b.add_node(name, "clamp", {"x": cur}, min=lo, max=hi)
            shapes[node] = shape
        elif kind == "residual":
            same = [k for k, s in shapes.items() if s == shape and k != cur]
            if same:
                node = b.add_node(name, "add", {"x": cur, "y": same[a % len(same)]})
                shapes[node] = shape
        elif kind == "mean":
            if len(shape) == 4:
                keepdim = a % 2 == 0
                node = b.add_node(name, "mean", {"x": cur}, dim=(2, 3), keepdim=keepdim)
                shapes[node] = shape[:2] + ((1, 1) if keepdim else ())
            else:
                node = b.add_node(name, "mean", {"x": cur}, dim=-1, keepdim=True)
                shapes[node] = shape[:-1] + (1,)
        elif kind == "view" and len(shape) == 4:
            n, c, h, w = shape
            target = [(n, c, h * w, 1), (n, c * h * w, 1, 1), (n, c * h * w)][a % 3]
            node = b.add_node(name, "view", {"x": cur}, shape=target)
            shapes[node] = target
        elif kind == "permute" and len(shape) == 4:
            dims = PERMUTES[a % len(PERMUTES)]
            node = b.add_node(name, "permute", {"x": cur}, dims=dims)
            shapes[node] = tuple(shape[d] for d in dims)
        if node is not None:
            cur = node
    if not b.nodes:
        b.add_node("clamp", "clamp", {"x": cur}, min=0.0, max=6.0)
    return b.build()


@st.composite
def graphs(draw, max_nodes: int = MAX_NODES):
    """A valid Graph: an NCHW input, 1..max_nodes nodes, a layout, values."""
    n = draw(st.integers(1, 2), label="batch")
    c = draw(st.integers(1, 8), label="channels")
    h = draw(st.integers(1, 10), label="height")
    w = draw(st.integers(1, 10), label="width")
    layout = draw(st.sampled_from(LAYOUTS), label="layout")
    specs = draw(st.lists(node_specs, min_size=1, max_size=max_nodes), label="nodes")
    input_kind = draw(st.sampled_from(INPUT_KINDS), label="input values")
    weight_kind = draw(st.sampled_from(WEIGHT_KINDS), label="weight values")
    seed = draw(st.integers(0, 2 ** 31), label="seed")
    return build_graph((n, c, h, w), layout, specs, seed, input_kind, weight_kind)
