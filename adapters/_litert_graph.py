"""LiteRT graphs: an ``edgediff.graph`` Graph as ONE float32 ``.tflite`` model with one
subgraph (``run_graph`` of the ``litert`` adapter), built with the flatbuffers helpers of
``adapters/litert.py`` (``_Graph``, ``_padding_mode``, ``fold_batch_norm``) and run by the
LiteRT interpreter (``num_threads=1``, a fresh interpreter per run) through one of three
resolvers (each also as ``*/graph_fused/f32``, below):

- ``xnnpack/graph/f32``: ``OpResolverType.AUTO`` (the default XNNPACK delegate). The ops
  XNNPACK leaves to the builtin kernels are listed in the facts (``not_delegated``, found by
  following the data flow back from the model outputs and the DELEGATE nodes' inputs); a model
  with no DELEGATE node at all is ``Unsupported("not delegated: ...")``, never silently a
  builtin run;
- ``builtin/graph/f32``: ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (TFLite's optimized kernels);
- ``builtin_ref/graph/f32``: ``BUILTIN_REF`` (the reference kernels).

Layouts. Every value lives in the model as a TFLite tensor ``T = L.transpose(perm)`` of its
logical NCHW value ``L``; 4-D values produced by convolutions are NHWC (``perm = (0, 2, 3,
1)``), what a converter emits. A TRANSPOSE is inserted (once per value and layout) only
where an op needs another layout: a conv reading a logical 4-D value, a view whose C-order
flattening differs from the NHWC order (a reshape of NHWC data whose moved dims are all 1 is
a plain RESHAPE, as in MobileNet's ``mean(keepdim) -> conv 1x1 -> view`` head), an add whose
operands disagree. A 4-D graph input is fed NHWC (an edge model's image input) unless only
views and permutes read it, then logical (NumPy transposes at the model boundary, as in
litert.py); outputs are transposed back in NumPy. How nodes map:

- conv2d / depthwise_conv2d: CONV_2D (OHWI weights; grouped CONV_2D for other groups when
  ``litert.MAP_GROUPED_CONV``) or DEPTHWISE_CONV_2D (1HW(C*M) weights, ``depth_multiplier``),
  a bias (zeros when absent), no fused activation; pads other than VALID/SAME are a PAD op;
- batch_norm: MUL by ``weight / sqrt(var + eps)`` then ADD ``bias - mean * scale`` (float32
  constants, as litert.py's single op), on the channel axis of whatever layout the value has;
- clamp: RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 / RELU, otherwise MAXIMUM / MINIMUM with scalars;
- mean: MEAN over the layout's axes of the logical dims (``keep_dims``);
- view: RESHAPE with the shape as given (``-1`` included);
- permute: TRANSPOSE; when the permutation only relabels the layout (``permute(0, 2, 3, 1)``
  of NHWC data) no op is emitted and the node is read from the same tensor, as a converter
  would drop it;
- add: ADD (broadcasting as in NumPy; operands of different rank are both made logical).

On the ``*/graph/f32`` paths every node's tensor is a model output, so every node is
returned and judged on its own: no op is fused in the model (BN is not folded into the conv,
activations are separate ops), and a delegate cannot hide a tensor that is a model output.

The ``*/graph_fused/f32`` paths (same three resolvers) build the model a TFLite converter
emits instead (``fusion_plan``): a batch norm that is a conv's only consumer is folded into the
conv's weights and bias (``reference.fold_batch_norm``: float64, rounded once to float32, as
litert.py's conv2d_batch_norm), and a clamp that is ReLU / ReLU6 / ReLU_N1_TO_1 and the only
consumer of the conv (or of that batch norm) becomes the conv's ``fused_activation_function``.
The conv and batch-norm nodes inside such a group are not in the model, so they are not
returned; ``edgediff.graph_check`` judges the group as one segment (as for ExecuTorch's
XNNPACK fusions). Facts: ``fused`` (groups), ``tflite_ops``, ``transposes``, and on xnnpack
``delegates`` and ``not_delegated``.
"""
from __future__ import annotations

import numpy as np

import adapters
from adapters import litert as L
from reference._args import pair

PATHS = {"xnnpack/graph/f32": "xnnpack", "builtin/graph/f32": "builtin",
         "builtin_ref/graph/f32": "builtin_ref", "xnnpack/graph_fused/f32": "xnnpack",
         "builtin/graph_fused/f32": "builtin", "builtin_ref/graph_fused/f32": "builtin_ref"}
graph_paths = tuple(PATHS)
NHWC = (0, 2, 3, 1)
_CLAMP_OPS = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, 1.0): "RELU_0_TO_1",
              (0.0, None): "RELU"}
_FUSED_ACTIVATIONS = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, None): "RELU"}


def _clamp_key(params):
    lo, hi = params.get("min"), params.get("max")
    return (None if lo is None else float(lo), None if hi is None else float(hi))


def fusion_plan(graph: dict) -> dict:
    """{conv name: [the conv, then the batch_norm and/or clamp nodes folded into it]} for the
    converter-style paths: a batch norm that is a conv's only consumer is folded into the
    conv's constants, and a clamp that is ReLU / ReLU6 / ReLU_N1_TO_1 and the only consumer
    of the conv (or of that batch norm) becomes the conv's fused activation."""
    nodes = {n["name"]: n for n in graph["nodes"]}
    users = {n["name"]: [] for n in graph["nodes"]}
    for n in graph["nodes"]:
        for role, src in n["inputs"].items():
            if src in users:
                users[src].append((n["name"], role))
    plan = {}
    for n in graph["nodes"]:
        if n["op"] not in ("conv2d", "depthwise_conv2d"):
            continue
        group, cur = [n["name"]], n["name"]
        nxt = users[cur]
        if len(nxt) == 1 and nxt[0][1] == "x" and nodes[nxt[0][0]]["op"] == "batch_norm":
            cur = nxt[0][0]
            group.append(cur)
            nxt = users[cur]
        if (len(nxt) == 1 and nxt[0][1] == "x" and nodes[nxt[0][0]]["op"] == "clamp"
                and _clamp_key(nodes[nxt[0][0]]["params"]) in _FUSED_ACTIVATIONS):
            group.append(nxt[0][0])
        if len(group) > 1:
            plan[n["name"]] = group
    return plan


def _ident(rank):
    return tuple(range(rank))


class _Builder:
    """The model under construction: graph values as (tensor index, layout perm)."""

    def __init__(self, graph: dict, arrays: dict, shapes: dict, fuse: bool = False):
        self.g = L._Graph()
        self.plan = fusion_plan(graph) if fuse else {}
        self.hidden = {m for group in self.plan.values() for m in group[:-1]}
        self.folded = {m for group in self.plan.values() for m in group[1:]}
        self.s = L._litert()["schema"]
        self.graph, self.arrays, self.shapes = graph, arrays, shapes
        self.values = {}            # name -> (tensor, perm): the value's native layout
        self.views = {}             # (name, perm) -> tensor: the value in another layout
        self.inputs = {}            # graph input name -> (tensor, perm)
        self.transposes = 0

    # ---- values and layouts --------------------------------------------------------------------
    def shape_in(self, name, perm):
        shape = self.shapes[name]
        return tuple(shape[p] for p in perm)

    def get(self, name, perm=None):
        """(tensor, perm) of ``name``; in layout ``perm`` when given (a TRANSPOSE if needed)."""
        if name not in self.values:
            if name in self.graph["inputs"]:
                raise KeyError(name)
            arr = np.asarray(self.arrays[name], np.float32)       # a constant used as an activation
            self.values[name] = (self.g.tensor(arr.shape, arr, name=name), _ident(arr.ndim))
        t, p = self.values[name]
        if perm is None or tuple(perm) == p:
            return t, p
        perm = tuple(perm)
        key = (name, perm)
        if key not in self.views:
            rel = [p.index(q) for q in perm]
            pi = self.g.tensor((len(rel),), rel, np.int32, f"{name}.perm")
            out = self.g.tensor(self.shape_in(name, perm), name=f"{name}.transposed")
            self.g.op("TRANSPOSE", [t, pi], [out], self.s.TransposeOptionsT(), "TransposeOptions")
            self.transposes += 1
            self.views[key] = out
        return self.views[key], perm

    def out(self, name, perm):
        return self.g.tensor(self.shape_in(name, perm), name=name)

    def const(self, name, role):
        src = self.graph_node_inputs[role]
        if src in self.graph["inputs"] or src not in self.arrays:
            raise adapters.Unsupported(f"node {name!r}: {role} must be a constant (got {src!r})")
        return np.asarray(self.arrays[src], np.float32)

    # ---- nodes -----------------------------------------------------------------------------------
    def node(self, n):
        op, ins, p, name = n["op"], n["inputs"], n["params"], n["name"]
        self.graph_node_inputs = ins
        s = self.s
        if name in self.folded:                    # computed by its conv (fusion_plan)
            return
        if op in ("conv2d", "depthwise_conv2d"):
            group = self.plan.get(name, [name])
            self.values[group[-1]] = (self.conv(name, op, ins, p, group), NHWC)
        elif op == "batch_norm":
            x, perm = self.get(ins["x"])
            c = self.shapes[ins["x"]][1]
            f32 = np.float32
            var = self.const(name, "running_var")
            weight = self.const(name, "weight") if "weight" in ins else np.ones(c, f32)
            bias = self.const(name, "bias") if "bias" in ins else np.zeros(c, f32)
            scale = weight / np.sqrt(var + f32(p.get("eps", 1e-5)))
            shift = bias - self.const(name, "running_mean") * scale
            axis = perm.index(1)
            bshape = (c,) if axis == len(perm) - 1 else tuple(c if i == axis else 1 for i in range(len(perm)))
            si = self.g.tensor(bshape, scale, name=f"{name}.scale")
            bi = self.g.tensor(bshape, shift, name=f"{name}.shift")
            mid = self.g.tensor(self.shape_in(ins["x"], perm), name=f"{name}.scaled")
            y = self.out(name, perm)
            self.g.op("MUL", [x, si], [mid], s.MulOptionsT(), "MulOptions")
            self.g.op("ADD", [mid, bi], [y], s.AddOptionsT(), "AddOptions")
            self.values[name] = (y, perm)
        elif op == "clamp":
            x, perm = self.get(ins["x"])
            lo, hi = p.get("min"), p.get("max")
            key = _clamp_key(p)
            y = self.out(name, perm)
            if key in _CLAMP_OPS:
                self.g.op(_CLAMP_OPS[key], [x], [y])
            else:
                src = x
                if lo is not None:
                    lo_i = self.g.tensor((), np.float32(lo), name=f"{name}.min")
                    mid = self.g.tensor(self.shape_in(ins["x"], perm), name=f"{name}.max_out") if hi is not None else y
                    self.g.op("MAXIMUM", [src, lo_i], [mid])
                    src = mid
                if hi is not None:
                    hi_i = self.g.tensor((), np.float32(hi), name=f"{name}.max")
                    self.g.op("MINIMUM", [src, hi_i], [y])
            self.values[name] = (y, perm)
        elif op == "mean":
            x, perm = self.get(ins["x"])
            rank = len(perm)
            dim, keepdim = p.get("dim"), bool(p.get("keepdim", False))
            if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
                axes = list(range(rank))
            else:
                axes = sorted({int(d) % rank for d in ((dim,) if np.ndim(dim) == 0 else dim)})
            t_axes = sorted(perm.index(a) for a in axes)
            if keepdim:
                out_perm = perm
            else:
                rest = [q for q in perm if q not in axes]
                out_perm = tuple(sorted(rest).index(q) for q in rest)
            ai = self.g.tensor((len(t_axes),), t_axes, np.int32, f"{name}.axis")
            y = self.out(name, out_perm)
            opts = s.ReducerOptionsT()
            opts.keepDims = keepdim
            self.g.op("MEAN", [x, ai], [y], opts, "ReducerOptions")
            self.values[name] = (y, out_perm)
        elif op == "view":
            x, perm = self.get(ins["x"])
            xs = self.shapes[ins["x"]]
            moved = [q for q in perm if xs[q] != 1]
            if moved != sorted(moved):              # NHWC order is not the C order: transpose first
                x, perm = self.get(ins["x"], _ident(len(perm)))
            shape = [int(d) for d in p["shape"]]
            si = self.g.tensor((len(shape),), shape, np.int32, f"{name}.shape")
            y = self.out(name, _ident(len(shape)))
            self.g.op("RESHAPE", [x, si], [y], s.ReshapeOptionsT(), "ReshapeOptions")
            self.values[name] = (y, _ident(len(shape)))
        elif op == "permute":
            x, perm = self.get(ins["x"])
            dims = [int(d) % len(perm) for d in p["dims"]]
            rel = [perm.index(d) for d in dims]
            if rel == sorted(rel) and ins["x"] not in self.graph["inputs"]:
                self.values[name] = (x, _ident(len(perm)))        # only relabels the layout
                return
            pi = self.g.tensor((len(rel),), rel, np.int32, f"{name}.perm")
            y = self.out(name, _ident(len(perm)))
            self.g.op("TRANSPOSE", [x, pi], [y], s.TransposeOptionsT(), "TransposeOptions")
            self.values[name] = (y, _ident(len(perm)))
        elif op == "add":
            x, perm = self.get(ins["x"])
            if len(self.shapes[ins["y"]]) != len(perm):
                x, perm = self.get(ins["x"], _ident(len(perm)))
                yv, _ = self.get(ins["y"], _ident(len(self.shapes[ins["y"]])))
            else:
                yv, _ = self.get(ins["y"], perm)
            y = self.out(name, perm)
            self.g.op("ADD", [x, yv], [y], s.AddOptionsT(), "AddOptions")
            self.values[name] = (y, perm)
        else:
            raise adapters.Unsupported(f"litert graph runner has no op {op!r}")

    def conv(self, name, op, ins, p, group):
        s = self.s
        n, c, h, wd = self.shapes[ins["x"]]
        w = self.const(name, "w")
        o, cg, kh, kw = w.shape
        nodes = {m["name"]: m for m in self.graph["nodes"]}
        activation = "NONE"
        b = self.const(name, "b") if "b" in ins else None
        for m in group[1:]:
            fm = nodes[m]
            self.graph_node_inputs = fm["inputs"]
            if fm["op"] == "batch_norm":       # folded in float64, rounded once to float32
                opt = {k: (self.const(m, k) if k in fm["inputs"] else None) for k in ("weight", "bias")}
                w, b = L.fold_batch_norm(w, b, self.const(m, "running_mean"), self.const(m, "running_var"),
                                         opt["weight"], opt["bias"], fm["params"].get("eps", 1e-5))
                w, b = np.asarray(w, np.float32), np.asarray(b, np.float32)
            else:
                activation = _FUSED_ACTIVATIONS[_clamp_key(fm["params"])]
        self.graph_node_inputs = ins
        groups = c if op == "depthwise_conv2d" else int(p.get("groups", 1))
        depthwise = groups != 1 and groups == c and cg == 1
        if groups != 1 and not depthwise and not L.MAP_GROUPED_CONV:
            raise adapters.Unsupported("grouped conv: only groups=1 and depthwise are mapped")
        b = np.zeros(o, np.float32) if b is None else b
        sh, sw = pair(p.get("stride", 1), "stride", 1)
        dh, dw = pair(p.get("dilation", 1), "dilation", 1)
        mode, pad = L._padding_mode((h, wd), (kh, kw), (sh, sw), (dh, dw), p.get("padding", 0))
        src, _ = self.get(ins["x"], NHWC)
        if pad is not None:
            top, bottom, left, right = pad
            pads = self.g.tensor((4, 2), [[0, 0], [top, bottom], [left, right], [0, 0]], np.int32,
                                 f"{name}.paddings")
            padded = self.g.tensor((n, h + top + bottom, wd + left + right, c), name=f"{name}.padded")
            self.g.op("PAD", [src, pads], [padded], s.PadOptionsT(), "PadOptions")
            src = padded
        bi = self.g.tensor((o,), b, name=f"{name}.bias")
        y = self.out(group[-1], NHWC)
        if depthwise:
            wi = self.g.tensor((1, kh, kw, o), w.reshape(o, kh, kw).transpose(1, 2, 0), name=f"{name}.w_1hwo")
            opts = s.DepthwiseConv2DOptionsT()
            opts.depthMultiplier = o // c
            kind, opname = "DepthwiseConv2DOptions", "DEPTHWISE_CONV_2D"
        else:
            wi = self.g.tensor((o, kh, kw, cg), w.transpose(0, 2, 3, 1), name=f"{name}.w_ohwi")
            opts = s.Conv2DOptionsT()
            kind, opname = "Conv2DOptions", "CONV_2D"
        opts.padding = getattr(s.Padding, mode)
        opts.strideH, opts.strideW = sh, sw
        opts.dilationHFactor, opts.dilationWFactor = dh, dw
        opts.fusedActivationFunction = getattr(s.ActivationFunctionType, activation)
        self.g.op(opname, [src, wi, bi], [y], opts, kind)
        return y


def build_model(graph: dict, arrays: dict, fuse: bool = False):
    """(litert._Graph, model bytes, {input name: perm}, {node name: (tensor, perm)}, facts)."""
    from edgediff.graph import Graph, infer_shapes
    if graph.get("dtype", "float32") != "float32":
        raise adapters.Unsupported(f"litert graphs are float32 only, got {graph.get('dtype')}")
    shapes = infer_shapes(Graph.from_json(graph, arrays))
    b = _Builder(graph, arrays, shapes, fuse)
    feeds = {}
    for k in graph["inputs"]:
        shape = shapes[k]
        users = [n["op"] for n in graph["nodes"] if k in n["inputs"].values()]
        nhwc = len(shape) == 4 and not all(op in ("view", "permute") for op in users)
        perm = NHWC if nhwc else _ident(len(shape))
        b.values[k] = (b.g.tensor(tuple(shape[q] for q in perm), name=k), perm)
        feeds[k] = perm
    for n in graph["nodes"]:
        b.node(n)
    outputs = {n["name"]: b.values[n["name"]] for n in graph["nodes"] if n["name"] not in b.hidden}
    out_tensors = list(dict.fromkeys(t for t, _ in outputs.values()))
    model = b.g.finish([b.values[k][0] for k in graph["inputs"]], out_tensors)
    facts = {"tflite_ops": len(b.g.operators), "transposes": b.transposes}
    if fuse:
        facts["fused"] = len(b.plan)
    return b.g, model, feeds, outputs, facts


def not_delegated(interp, graph) -> tuple[int, list]:
    """(number of DELEGATE nodes, op names the builtin kernels run): the original nodes whose
    outputs are needed (by a model output or a delegate) and no delegate produces."""
    nodes = interp._get_ops_details()
    delegates = [d for d in nodes if d["op_name"] == "DELEGATE"]
    available = set(graph.inputs) | graph.constants
    for d in delegates:
        available.update(int(t) for t in d["outputs"])
    producer = {int(t): d for d in nodes if d["op_name"] != "DELEGATE" for t in d["outputs"]}
    needed = set(graph.outputs) | {int(t) for d in delegates for t in d["inputs"] if t != -1}
    left, seen = [], set()
    while needed:
        t = needed.pop()
        if t in available or t in seen or t not in producer:
            continue
        seen.add(t)
        d = producer[t]
        if d["index"] not in {x["index"] for x in left}:
            left.append(d)
        needed.update(int(i) for i in d["inputs"] if i != -1)
    return len(delegates), [d["op_name"] for d in sorted(left, key=lambda d: d["index"])]


def run_graph(graph, arrays, path=graph_paths[0]):
    """Build the graph as one .tflite model, run it once on ``path``, read every node back.
    Returns ({node name: NCHW array}, facts)."""
    if path not in PATHS:
        raise ValueError(f"unknown litert graph path {path!r}; known: {graph_paths}")
    resolver = PATHS[path]
    g, model, feeds, outputs, facts = build_model(graph, arrays, fuse="graph_fused" in path)
    lt = L._litert()
    interp = lt["Interpreter"](model_content=model, num_threads=1,
                               experimental_op_resolver_type=getattr(lt["OpResolverType"], L._RESOLVERS[resolver]))
    interp.allocate_tensors()                      # the default delegate is applied here
    if resolver == "xnnpack":
        delegates, left = not_delegated(interp, g)
        if delegates == 0:
            ops = sorted(set(g.op_names))
            raise adapters.Unsupported(f"not delegated: XNNPACK took none of {'+'.join(ops)}")
        facts.update(delegates=delegates, not_delegated=left)
    for t, (k, perm) in zip(g.inputs, feeds.items()):
        interp.set_tensor(t, np.ascontiguousarray(np.asarray(arrays[k]).transpose(perm), dtype=np.float32))
    interp.invoke()
    out = {}
    for name, (t, perm) in outputs.items():
        out[name] = np.ascontiguousarray(interp.get_tensor(t).transpose(np.argsort(perm)))
    facts["returned"] = f"{len(out)} of {len(graph['nodes'])} nodes"
    return out, facts
