"""A graph of reference ops: plain data, like a Case, for testing op chains and networks.

A ``Graph`` holds

- ``tensors``: named arrays, the graph's runtime inputs (names in ``inputs``) and its
  constants (weights, biases, batch-norm statistics);
- ``nodes``: in execution order, each a ``Node(name, op, inputs, params)`` whose ``inputs``
  maps the golden op's argument names to tensor or earlier node names
  (``{"x": "b0.0.expand", "w": "b0.0.dw.w"}``) and whose ``params`` are the golden op's
  keyword parameters;
- ``layout`` of the runtime inputs (channels_last hands 4-D inputs over NHWC-strided) and
  ``dtype``.

Every node is an output: backends return whichever intermediates they can observe, and
``edgediff.graph_check`` compares them. A Graph serialises to JSON (``to_json``) plus an
``.npz`` of its tensors, which is what adapters receive (``run_graph(graph_json, arrays)``)
and what a finding stores. Shapes are inferred without computing (``infer_shapes``);
an invalid graph raises ``ValueError`` naming the node and the parameter.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import reference
from reference._args import normalize_dim, pair, padding4
from edgediff.case import LAYOUTS, from_jsonable, to_jsonable

# op -> (required inputs, optional inputs), in the golden op's argument names
GRAPH_OPS = {
    "conv2d": (("x", "w"), ("b",)),
    "depthwise_conv2d": (("x", "w"), ("b",)),
    "batch_norm": (("x", "running_mean", "running_var"), ("weight", "bias")),
    "clamp": (("x",), ()),
    "mean": (("x",), ()),
    "view": (("x",), ()),
    "permute": (("x",), ()),
    "add": (("x", "y"), ()),
}
GOLDEN = {op: getattr(reference, op) for op in GRAPH_OPS}


@dataclass
class Node:
    name: str
    op: str
    inputs: dict            # argument name -> tensor or node name
    params: dict = field(default_factory=dict)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.inputs.items())
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name} = {self.op}({args}{', ' if params else ''}{params})"


@dataclass
class Graph:
    inputs: list            # names of runtime inputs (activations); the rest of tensors are constants
    tensors: dict           # name -> np.ndarray
    nodes: list             # [Node], in execution order
    layout: str = "contiguous"
    dtype: str = "float32"

    # ---- structure ---------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def output(self) -> str:
        return self.nodes[-1].name

    def consumers(self) -> dict:
        out = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for src in n.inputs.values():
                if src in out:
                    out[src].append(n.name)
        return out

    @property
    def constants(self) -> list:
        return [k for k in self.tensors if k not in self.inputs]

    @property
    def n_elements(self) -> int:
        return int(sum(np.size(a) for a in self.tensors.values()))

    def describe(self) -> str:
        ins = ", ".join(f"{k}{tuple(self.tensors[k].shape)}" for k in self.inputs)
        lines = [f"graph({ins}; layout={self.layout}, {len(self.nodes)} nodes)"]
        lines += ["  " + n.describe() for n in self.nodes]
        return "\n".join(lines)

    __repr__ = describe

    def _repr_pretty_(self, p, cycle):      # how Hypothesis prints a falsifying graph
        p.text(self.describe())

    def arrays_for_backend(self) -> dict:
        """All tensors; 4-D runtime inputs NHWC-strided when the layout is channels_last."""
        out = dict(self.tensors)
        if self.layout == "channels_last":
            for k in self.inputs:
                a = out[k]
                if a.ndim == 4:
                    out[k] = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        return out

    # ---- serialisation -----------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"inputs": list(self.inputs), "layout": self.layout, "dtype": self.dtype,
                "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.tensors.items()},
                "nodes": [{"name": n.name, "op": n.op, "inputs": dict(n.inputs),
                           "params": to_jsonable(n.params)} for n in self.nodes]}

    def spec(self) -> dict:
        """What an adapter's ``run_graph`` receives: ``to_json()`` with params as Python values
        (tuples restored), as it arrives through a worker."""
        return from_jsonable(self.to_json())

    @classmethod
    def from_json(cls, meta: dict, arrays) -> "Graph":
        tensors = {k: np.asarray(arrays[k]) for k in meta["tensors"]}
        nodes = [Node(n["name"], n["op"], dict(n["inputs"]), from_jsonable(n["params"]))
                 for n in meta["nodes"]]
        return cls(list(meta["inputs"]), tensors, nodes, meta.get("layout", "contiguous"),
                   meta.get("dtype", "float32"))

    def save(self, directory, extra_arrays: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "graph.json").write_text(json.dumps(self.to_json(), indent=1))
        np.savez(directory / "tensors.npz", **self.tensors, **(extra_arrays or {}))

    @classmethod
    def load(cls, directory) -> "Graph":
        directory = Path(directory)
        meta = json.loads((directory / "graph.json").read_text())
        with np.load(directory / "tensors.npz") as arrays:
            return cls.from_json(meta, arrays)


class GraphBuilder:
    """Build a Graph node by node: ``b.input("x", a)``, ``b.const("w", w)``,
    ``y = b.add_node("conv", "conv2d", x="x", w="w", stride=2)``."""

    def __init__(self, layout: str = "contiguous"):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.inputs, self.tensors, self.nodes, self.layout = [], {}, [], layout

    def _check_new(self, name):
        if name in self.tensors or any(n.name == name for n in self.nodes):
            raise ValueError(f"name {name!r} is already used in this graph")

    def input(self, name: str, array) -> str:
        self._check_new(name)
        self.inputs.append(name)
        self.tensors[name] = np.asarray(array, dtype=np.float32)
        return name

    def const(self, name: str, array) -> str:
        self._check_new(name)
        self.tensors[name] = np.asarray(array, dtype=np.float32)
        return name

    def add_node(self, name: str, op: str, inputs: dict, **params) -> str:
        self._check_new(name)
        self.nodes.append(Node(name, op, {k: v for k, v in inputs.items() if v is not None}, params))
        return name

    def build(self) -> Graph:
        g = Graph(list(self.inputs), dict(self.tensors), list(self.nodes), self.layout)
        infer_shapes(g)
        return g


# ---- shape inference ------------------------------------------------------------------------

def _conv_shape(x, w, params, groups, b):
    if len(x) != 4:
        raise ValueError(f"input x must be 4-D (N, C, H, W), got shape {x}")
    if len(w) != 4:
        raise ValueError(f"weight w must be 4-D (O, C/groups, KH, KW), got shape {w}")
    n, c, h, wd = x
    o, cg, kh, kw = w
    sh, sw = pair(params.get("stride", 1), "stride", 1)
    dh, dw = pair(params.get("dilation", 1), "dilation", 1)
    top, bottom, left, right = padding4(params.get("padding", 0))
    groups = c if groups is None else int(groups)
    if groups < 1 or cg * groups != c:
        raise ValueError(f"groups={groups}: weight {w} expects {cg * groups} input channels, input has {c}")
    if o % groups:
        raise ValueError(f"groups={groups} must divide the {o} output channels")
    if b is not None and tuple(b) != (o,):
        raise ValueError(f"bias b must have shape ({o},), got {b}")
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1 or kh < 1 or kw < 1:
        raise ValueError(f"padding/kernel/dilation: kernel {(kh, kw)} with dilation {(dh, dw)} does "
                         f"not fit the padded input of {(h + top + bottom, wd + left + right)}")
    return (n, o, oh, ow)


def node_shape(node: Node, shapes: dict) -> tuple:
    """Output shape of ``node`` given its input shapes (``shapes[name]``)."""
    s = {role: tuple(shapes[src]) for role, src in node.inputs.items()}
    p = node.params
    x = s["x"]
    if node.op == "conv2d":
        return _conv_shape(x, s["w"], p, p.get("groups", 1), s.get("b"))
    if node.op == "depthwise_conv2d":
        if len(s["w"]) != 4 or s["w"][1] != 1 or len(x) != 4 or s["w"][0] % x[1]:
            raise ValueError(f"weight w must be (C * multiplier, 1, KH, KW) for an input with "
                             f"{x[1] if len(x) > 1 else '?'} channels, got {s['w']}")
        return _conv_shape(x, s["w"], p, None, s.get("b"))
    if node.op == "batch_norm":
        if len(x) < 2:
            raise ValueError(f"input x must have at least 2 dimensions (N, C, ...), got {x}")
        for role in ("running_mean", "running_var", "weight", "bias"):
            if role in s and s[role] != (x[1],):
                raise ValueError(f"{role} must have shape ({x[1]},), got {s[role]}")
        return x
    if node.op == "clamp":
        if p.get("min") is None and p.get("max") is None:
            raise ValueError("min and max: at least one must not be None")
        return x
    if node.op == "mean":
        dim, keepdim = p.get("dim"), bool(p.get("keepdim", False))
        if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
            axes = set(range(len(x)))
        else:
            dims = (dim,) if np.ndim(dim) == 0 else tuple(dim)
            axes = [normalize_dim(d, len(x)) for d in dims]
            if len(set(axes)) != len(axes):
                raise ValueError(f"dim {dim!r} names a dimension more than once")
            axes = set(axes)
        return tuple(1 if i in axes else v for i, v in enumerate(x) if keepdim or i not in axes)
    if node.op == "view":
        shape = tuple(int(v) for v in p["shape"])
        size = math.prod(x)
        known = math.prod(v for v in shape if v != -1)
        if shape.count(-1) > 1 or any(v < -1 for v in shape):
            raise ValueError(f"shape {shape}: at most one -1 and no other negative sizes")
        if -1 in shape:
            if known == 0 or size % known:
                raise ValueError(f"shape {shape} is invalid for input of size {size}")
            return tuple(size // known if v == -1 else v for v in shape)
        if known != size:
            raise ValueError(f"shape {shape} is invalid for input of size {size}")
        return shape
    if node.op == "permute":
        dims = tuple(p["dims"])
        if len(dims) != len(x):
            raise ValueError(f"dims {dims} has {len(dims)} entries, input has {len(x)} dimensions")
        axes = [normalize_dim(d, len(x), "dims entry") for d in dims]
        if sorted(axes) != list(range(len(x))):
            raise ValueError(f"dims {dims} is not a permutation of the input's dimensions")
        return tuple(x[a] for a in axes)
    if node.op == "add":
        try:
            return tuple(np.broadcast_shapes(x, s["y"]))
        except ValueError:
            raise ValueError(f"inputs x {x} and y {s['y']} do not broadcast") from None
    raise ValueError(f"unknown op {node.op!r}; graph ops: {', '.join(GRAPH_OPS)}")


def infer_shapes(graph: Graph) -> dict:
    """{tensor or node name: shape}. Raises ValueError naming the node and what is wrong."""
    if graph.layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {graph.layout!r}")
    if not graph.nodes:
        raise ValueError("nodes: a graph needs at least one node")
    missing = [k for k in graph.inputs if k not in graph.tensors]
    if missing:
        raise ValueError(f"inputs {missing} have no array in tensors")
    shapes = {k: tuple(np.shape(v)) for k, v in graph.tensors.items()}
    for node in graph.nodes:
        where = f"node {node.name!r} ({node.op})"
        if node.name in shapes:
            raise ValueError(f"{where}: name is used twice")
        if node.op not in GRAPH_OPS:
            raise ValueError(f"{where}: unknown op; graph ops: {', '.join(GRAPH_OPS)}")
        required, optional = GRAPH_OPS[node.op]
        for role in required:
            if role not in node.inputs:
                raise ValueError(f"{where}: input {role!r} is missing")
        for role, src in node.inputs.items():
            if role not in required + optional:
                raise ValueError(f"{where}: {node.op} takes no input {role!r} "
                                 f"(inputs: {', '.join(required + optional)})")
            if src not in shapes:
                raise ValueError(f"{where}: input {role}={src!r} is not a tensor or an earlier node")
        try:
            shapes[node.name] = node_shape(node, shapes)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    return shapes


# ---- golden execution -------------------------------------------------------------------------

def golden_node(node: Node, values: dict) -> np.ndarray:
    """The golden op of ``node`` on ``values[name]`` for its inputs (float64)."""
    return GOLDEN[node.op](**{role: values[src] for role, src in node.inputs.items()}, **node.params)


def run_golden(graph: Graph) -> dict:
    """{node name: float64 result} for every node, in execution order."""
    infer_shapes(graph)
    values = {k: np.asarray(v, dtype=np.float64) for k, v in graph.tensors.items()}
    out = {}
    for node in graph.nodes:
        values[node.name] = out[node.name] = golden_node(node, values)
    return out


def subgraph(graph: Graph, names, boundary: dict) -> Graph:
    """The nodes ``names`` (kept in graph order) as a graph of their own: every tensor they read
    that is produced outside them becomes a runtime input with the value ``boundary[name]``
    (or the graph's own tensor)."""
    keep = [n for n in graph.nodes if n.name in set(names)]
    inside = {n.name for n in keep}
    inputs, tensors = [], {}
    for n in keep:
        for src in n.inputs.values():
            if src in inside or src in tensors:
                continue
            if src in graph.tensors and src not in graph.inputs:
                tensors[src] = graph.tensors[src]                      # a constant stays one
            else:
                tensors[src] = np.asarray(boundary[src] if src in boundary else graph.tensors[src],
                                          dtype=np.float32)
                inputs.append(src)
    return Graph(inputs, tensors, [Node(n.name, n.op, dict(n.inputs), dict(n.params)) for n in keep],
                 graph.layout, graph.dtype)
