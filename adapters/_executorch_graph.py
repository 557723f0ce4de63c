"""ExecuTorch graphs: an ``edgediff.graph`` Graph as ONE ExecuTorch program
(``run_graph`` of the ``xnnpack`` and ``executorch_portable`` adapters).

The graph becomes one ``torch.nn.Module`` (weights as parameters and buffers, built with the
single-op helpers of ``adapters/_executorch.py``: ``conv_layer``, ``batch_norm_layer``,
``clamp_function``), exported once with ``torch.export`` (runtime inputs in the graph's memory
format), lowered once (with the ``XnnpackPartitioner`` or without one for portable kernels),
serialised and executed by the ExecuTorch runtime in this process. The program's outputs are
the intermediates the backend can show without changing what it computes:

- portable: every node;
- XNNPACK: every node except those a fusion hides: a conv whose only consumer is a batch norm
  or a clamp, and a batch norm whose only consumer is a clamp (XNNPACK folds BN into the conv
  and fuses ReLU6/hardtanh/clamp as the conv's output range). Making those outputs would
  stop the fusion, and the fusion is what should be tested. ``edgediff.graph_check`` compares
  such a fused group as one segment.

Nodes the XNNPACK partitioner leaves outside its delegate run as portable kernels in the same
program; they are listed in the facts (``not_delegated``), not refused: graphs mix them.
Programs are cached by the graph's structure and values (a network is lowered once).
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np

import adapters
from adapters import _executorch as _et

torch, F = _et.torch, _et.F
FUSABLE_INTO = {"conv2d": ("batch_norm", "clamp"), "depthwise_conv2d": ("batch_norm", "clamp"),
                "batch_norm": ("clamp",)}


def returned_nodes(graph: dict, xnnpack: bool) -> list:
    """Names of the nodes the program returns (see the module docstring)."""
    nodes = graph["nodes"]
    if not xnnpack:
        return [n["name"] for n in nodes]
    ops = {n["name"]: n["op"] for n in nodes}
    users = {n["name"]: [] for n in nodes}
    for n in nodes:
        for src in n["inputs"].values():
            if src in users:
                users[src].append(n["name"])
    last = nodes[-1]["name"]
    return [n["name"] for n in nodes
            if n["name"] == last or not (len(users[n["name"]]) == 1
                                         and ops[users[n["name"]][0]] in FUSABLE_INTO.get(n["op"], ()))]


class GraphModule(torch.nn.Module if torch is not None else object):
    """The graph's nodes in order; ``forward(*inputs)`` returns the chosen nodes' tensors."""

    def __init__(self, graph: dict, arrays: dict, outputs: list):
        super().__init__()
        self.inputs, self.outputs = list(graph["inputs"]), list(outputs)
        self.steps = []                     # (name, op, input names, layer key or None, extra)
        self.layers = torch.nn.ModuleDict()
        from edgediff.graph import Graph, infer_shapes
        shapes = infer_shapes(Graph.from_json(graph, arrays))
        for i, n in enumerate(graph["nodes"]):
            op, ins, p = n["op"], n["inputs"], n["params"]
            key, extra = f"n{i}", None
            if op in ("conv2d", "depthwise_conv2d"):
                x_shape = shapes[ins["x"]]
                groups = x_shape[1] if op == "depthwise_conv2d" else p.get("groups", 1)
                pad, conv = _et.conv_layer(x_shape, arrays[ins["w"]], arrays.get(ins.get("b")),
                                           p.get("stride", 1), p.get("padding", 0), p.get("dilation", 1), groups)
                self.layers[key], extra = conv, pad
            elif op == "batch_norm":
                x_shape = shapes[ins["x"]]
                self.layers[key] = _et.batch_norm_layer(
                    x_shape[1], len(x_shape), arrays[ins["running_mean"]], arrays[ins["running_var"]],
                    arrays.get(ins.get("weight")), arrays.get(ins.get("bias")), p.get("eps", 1e-5))
            elif op == "clamp":
                key, extra = None, _et.clamp_function(p.get("min"), p.get("max"))[0]
            elif op in ("mean", "view", "permute", "add"):
                key = None
            else:
                raise adapters.Unsupported(f"ExecuTorch graph runner has no op {op!r}")
            self.steps.append((n["name"], op, dict(ins), key, extra, dict(p)))

    def forward(self, *inputs):
        values = dict(zip(self.inputs, inputs))
        for name, op, ins, key, extra, p in self.steps:
            x = values[ins["x"]]
            if op in ("conv2d", "depthwise_conv2d"):
                y = self.layers[key](F.pad(x, extra) if extra is not None else x)
            elif op == "batch_norm":
                y = self.layers[key](x)
            elif op == "clamp":
                y = extra(x)
            elif op == "mean":
                dim, keepdim = p.get("dim"), bool(p.get("keepdim", False))
                if dim is None and not keepdim:
                    y = torch.mean(x)
                else:
                    y = torch.mean(x, dim=dim if dim is None or np.ndim(dim) == 0 else list(dim), keepdim=keepdim)
            elif op == "view":
                y = x.contiguous().view(tuple(int(s) for s in p["shape"]))
            elif op == "permute":
                y = x.permute(*[int(d) for d in p["dims"]])
            else:                                             # add
                y = x + values[ins["y"]]
            values[name] = y
        return tuple(values[n] for n in self.outputs)


class GraphLowerer:
    """Lowers a graph once per (structure, values) and runs the program."""

    def __init__(self, xnnpack: bool, max_programs: int = 8):
        self.xnnpack = xnnpack
        self.programs: OrderedDict = OrderedDict()
        self.max_programs = max_programs
        self.stats = {"lowerings": 0, "cache_hits": 0}

    def key(self, graph, arrays):
        h = hashlib.sha256(json.dumps(graph, sort_keys=True, default=str).encode())
        for k in sorted(arrays):
            if k not in graph["inputs"]:
                h.update(k.encode())
                h.update(np.ascontiguousarray(arrays[k], dtype=np.float32).tobytes())
        for k in graph["inputs"]:
            h.update(f"{k}:{_et.is_channels_last(arrays[k])}".encode())
        return h.hexdigest()

    def lower(self, graph, arrays):
        key = self.key(graph, arrays)
        if key in self.programs:
            self.stats["cache_hits"] += 1
            self.programs.move_to_end(key)
            return self.programs[key]
        from executorch.exir import to_edge_transform_and_lower
        _et.setup()
        outputs = returned_nodes(graph, self.xnnpack)
        module = GraphModule(graph, arrays, outputs).eval()
        example = tuple(_et.to_torch_input(arrays[k]) for k in graph["inputs"])
        partitioner = None
        if self.xnnpack:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            partitioner = [XnnpackPartitioner()]
        self.stats["lowerings"] += 1
        with torch.no_grad():
            exported = torch.export.export(module, example)
        edge = to_edge_transform_and_lower(exported, partitioner=partitioner)
        gm = edge.exported_program().graph_module
        outside = [_et._op_name(n.target) for n in gm.graph.nodes if n.op == "call_function"
                   and getattr(n.target, "__name__", "") not in ("executorch_call_delegate", "getitem")]
        delegates = sum(1 for n in gm.graph.nodes if n.op == "call_function"
                        and getattr(n.target, "__name__", "") == "executorch_call_delegate")
        facts = ({"delegates": delegates, "not_delegated": outside} if self.xnnpack
                 else {"portable_ops": sorted(set(outside))})
        facts["returned"] = f"{len(outputs)} of {len(graph['nodes'])} nodes"
        buffer = bytes(edge.to_executorch().buffer)
        self.programs[key] = (buffer, outputs, facts)
        while len(self.programs) > self.max_programs:
            self.programs.popitem(last=False)
        return self.programs[key]

    def run(self, graph, arrays):
        buffer, outputs, facts = self.lower(graph, arrays)
        from executorch.runtime import Runtime
        program = Runtime.get().load_program(buffer)
        results = program.load_method("forward").execute([_et.to_torch_input(arrays[k]) for k in graph["inputs"]])
        out = {name: r.detach().contiguous().numpy().copy() for name, r in zip(outputs, results)}
        return out, dict(facts)


def graph_runner(xnnpack: bool):
    """(run_graph, graph_paths) for an adapter module: ``run_graph(graph, arrays, path)``."""
    path = "xnnpack/graph/f32" if xnnpack else "portable/graph/f32"
    lowerer = GraphLowerer(xnnpack)

    def run_graph(graph, arrays, path=path):
        return lowerer.run(graph, arrays)
    run_graph.lowerer = lowerer
    return run_graph, (path,)
