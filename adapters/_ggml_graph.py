"""ggml graphs: an ``edgediff.graph`` Graph as ONE ggml compute graph (``adapters.ggml.run_graph``).

Every node becomes ggml ops in one context; ``ggml_graph_compute_with_ctx`` runs the whole
graph once (one thread), with no host round trip between nodes. Afterwards each node's tensor
is read back (the context has no allocator reuse: every tensor keeps its own memory).

How nodes are built (NCHW = ggml ne (W, H, C, N)), path ``graph/f32``:
- conv2d (groups 1): ``ggml_conv_2d`` (im2col in F32 + mul_mat); grouped convs that are not
  depthwise are Unsupported (ggml has no groups argument);
- depthwise_conv2d (and conv2d with groups == C, one channel per group):
  ``ggml_conv_2d_dw_direct``; a depth multiplier M > 1 repeats each input channel M times first;
- bias: broadcast ``ggml_add``; batch_norm: ``ggml_sub``/``ggml_div``/``ggml_mul``/``ggml_add``
  with per-channel vectors (``adapters.ggml.batch_norm_graph``);
- clamp: ``ggml_clamp``, which works *in place*: its result is a view of its input. So the
  input node's values (and those of every node that is a reshape view of the same memory)
  are overwritten and not returned; the comparison then covers them and the clamp together.
  When anything else still reads that memory, the input is ``ggml_dup``ed first;
- mean: reduced dims moved innermost (``ggml_permute`` + ``ggml_cont``), ``ggml_reshape_2d``,
  ``ggml_mean``, reshaped to the output shape;
- view: ``ggml_reshape_Nd`` (after ``ggml_cont`` if the tensor is a view);
  permute: ``ggml_permute`` + ``ggml_cont``; add: ``ggml_add`` (the broadcast operand second).

A channels_last graph input reaches ggml as a contiguous NCHW copy (ggml tensors have no
memory-format flag; the single-op adapter covers the CWHN kernels).
"""
from __future__ import annotations

import math

import numpy as np

import adapters

PATH = "graph/f32"


def _bytes(shapes, nodes):
    total = 0
    for n in nodes:
        out = math.prod(shapes[n["name"]])
        total += 4 * out * 3                        # result, and intermediates of its ops
        if n["op"] in ("conv2d", "depthwise_conv2d"):
            w = shapes[n["inputs"]["w"]]
            total += 4 * out // max(1, w[0]) * w[1] * w[2] * w[3] * 2   # im2col columns
            total += 4 * math.prod(shapes[n["inputs"]["x"]]) * max(1, w[0] // shapes[n["inputs"]["x"]][1])
    return total


def _cont(ggml, ctx, t):
    return t if ggml.ggml_is_contiguous(t) else ggml.ggml_cont(ctx, t)


def _reshape(ggml, ctx, t, shape):
    ne = list(reversed(shape)) or [1]
    fns = (ggml.ggml_reshape_1d, ggml.ggml_reshape_2d, ggml.ggml_reshape_3d, ggml.ggml_reshape_4d)
    if len(ne) > 4:
        raise adapters.Unsupported(f"ggml tensors have at most 4 dimensions (GGML_MAX_DIMS); got {shape}")
    return fns[len(ne) - 1](ctx, _cont(ggml, ctx, t), *ne)


def _conv(G, g, node, t, x_shape, w, b):
    ggml, ctx, p = G.ggml, g.ctx, node["params"]
    n, c, h, wd = x_shape
    o, cg = w.shape[:2]
    groups = c if node["op"] == "depthwise_conv2d" else int(p.get("groups", 1))
    params = G.conv_params("conv_2d", p.get("stride", 1), p.get("padding", 0), p.get("dilation", 1))
    if groups == 1:
        y = ggml.ggml_conv_2d(ctx, g.tensor(w), t, *params)
    elif groups == c and cg == 1:
        mult = o // c
        if mult > 1:
            t = ggml.ggml_reshape_4d(ctx, _cont(ggml, ctx, t), wd * h, 1, c, n)
            t = ggml.ggml_repeat_4d(ctx, t, wd * h, mult, c, n)
            t = ggml.ggml_reshape_4d(ctx, t, wd, h, o, n)
        y = ggml.ggml_conv_2d_dw_direct(ctx, g.tensor(w), t, *params)
    else:
        raise adapters.Unsupported(f"ggml has no grouped convolution: groups={groups} with {c} input channels")
    if b is not None:
        y = ggml.ggml_add(ctx, y, g.tensor(np.asarray(b).reshape(1, -1, 1, 1)))
    return y


def run_graph(graph, arrays, path, G):
    """Build the graph's nodes as one ggml graph, compute it once, read every node back.
    ``G`` is the ggml adapter module (ggml-python's, or a checkout's: ``G.ggml`` is its binding).
    Returns ({node name: array}, facts)."""
    from edgediff.graph import Graph, infer_shapes
    ggml = G.ggml
    if path != PATH:
        raise ValueError(f"unknown ggml graph path {path!r}; known: {PATH}")
    spec = Graph.from_json(graph, arrays)
    shapes = infer_shapes(spec)
    if any(len(s) > 4 for s in shapes.values()):
        raise adapters.Unsupported("ggml tensors have at most 4 dimensions (GGML_MAX_DIMS)")
    nodes = graph["nodes"]
    consumers = {k: 0 for k in [*graph["inputs"], *(n["name"] for n in nodes)]}
    for n in nodes:
        for src in n["inputs"].values():
            if src in consumers:
                consumers[src] += 1
    overwritten, owner = set(), {k: k for k in graph["inputs"]}
    with G.Graph(_bytes(shapes, nodes) + sum(a.nbytes for a in arrays.values())) as g:
        ctx = g.ctx
        tensors = {k: g.tensor(arrays[k]) for k in graph["inputs"]}
        for node in nodes:
            op, ins, p = node["op"], node["inputs"], node["params"]
            x_name = ins["x"]
            x = tensors[x_name]
            if op in ("conv2d", "depthwise_conv2d"):
                y = _conv(G, g, node, x, shapes[x_name], arrays[ins["w"]],
                          arrays[ins["b"]] if "b" in ins else None)
            elif op == "batch_norm":
                bshape = (1, -1) + (1,) * (len(shapes[x_name]) - 2)

                def vector(v, bshape=bshape):
                    return g.tensor(np.asarray(v, dtype=np.float32).reshape(bshape))
                stats = {k: (arrays[ins[k]] if k in ins else None) for k in ("weight", "bias")}
                y = G.batch_norm_graph(g, x, vector, arrays[ins["running_mean"]], arrays[ins["running_var"]],
                                       stats["weight"], stats["bias"], p.get("eps", 1e-5))
            elif op == "clamp":
                lo = -math.inf if p.get("min") is None else float(p["min"])
                hi = math.inf if p.get("max") is None else float(p["max"])
                group = [m for m, o in owner.items() if o == owner.get(x_name)]
                if any(m in graph["inputs"] or consumers[m] != 1 for m in group):
                    x = ggml.ggml_dup(ctx, x)          # others still read the unclamped values
                else:                                  # in place: the memory of x and of every
                    overwritten.update(group)          # view it is (reshape) now holds the result
                    owner[node["name"]] = owner[x_name]
                y = ggml.ggml_clamp(ctx, x, lo, hi)
            elif op == "mean":
                xs = shapes[x_name]
                axes = G.reduced_axes(p.get("dim"), len(xs))
                kept = [i for i in range(len(xs)) if i not in axes]
                order = kept + list(axes)
                t = x
                if order != list(range(len(xs))):
                    t = ggml.ggml_cont(ctx, ggml.ggml_permute(ctx, t, *G.ggml_axes(order, len(xs))))
                n_red = math.prod(xs[i] for i in axes)
                n_kept = math.prod(xs[i] for i in kept)
                y = ggml.ggml_mean(ctx, ggml.ggml_reshape_2d(ctx, _cont(ggml, ctx, t), n_red, n_kept))
                y = _reshape(ggml, ctx, y, shapes[node["name"]])
            elif op == "view":
                y = _reshape(ggml, ctx, x, shapes[node["name"]])
                if ggml.ggml_is_contiguous(x) and x_name in owner:   # a view of x's memory
                    owner[node["name"]] = owner[x_name]
            elif op == "permute":
                rank = len(shapes[x_name])
                dims = [int(d) % rank for d in p["dims"]]
                y = ggml.ggml_cont(ctx, ggml.ggml_permute(ctx, x, *G.ggml_axes(dims, rank)))
            elif op == "add":
                a, b = x, tensors[ins["y"]]
                if tuple(shapes[x_name]) != tuple(shapes[node["name"]]):
                    a, b = b, a                          # ggml broadcasts its second operand
                y = ggml.ggml_add(ctx, a, b)
            else:
                raise adapters.Unsupported(f"ggml graph runner has no op {op!r}")
            tensors[node["name"]] = y
            owner.setdefault(node["name"], node["name"])       # whose memory this node's tensor is
        graph_obj = ggml.ggml_new_graph_custom(ctx, 8192, False)
        for node in nodes:
            ggml.ggml_build_forward_expand(graph_obj, tensors[node["name"]])
        status = ggml.ggml_graph_compute_with_ctx(ctx, graph_obj, 1)
        if status != ggml.GGML_STATUS_SUCCESS:
            raise RuntimeError(f"ggml_graph_compute_with_ctx returned status {status}")
        ops = [ggml.ggml_op_desc(ggml.ggml_graph_node(graph_obj, i)).decode()
               for i in range(ggml.ggml_graph_n_nodes(graph_obj))]
        out = {n["name"]: G.read(tensors[n["name"]], shapes[n["name"]]) for n in nodes
               if n["name"] not in overwritten}
    counts = {}
    for o in ops:
        counts[o] = counts.get(o, 0) + 1
    facts = {"ggml_graph_nodes": len(ops), "ggml_ops": counts}
    if overwritten:
        facts["not_returned"] = {k: "overwritten by an in-place ggml_clamp" for k in sorted(overwritten)}
    return out, facts


graph_paths = (PATH,)
