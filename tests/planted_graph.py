"""A graph adapter with a planted bug, for meta-tests of edgediff's graph localization.

``strided_depthwise_pads_bottom``: PyTorch eager (the real ``torch`` adapter's graph runner,
in this process), except that a depthwise conv with stride 2 and padding 1 pads (0, 2) rows
and (0, 2) columns instead of (1, 1): the output is shifted by one pixel, a bug a backend's
"SAME-like" padding rewrite could plant. Every other node is computed correctly from its
(possibly already wrong) inputs, so a correct localization names the first strided
depthwise layer and no layer before it.
"""
from __future__ import annotations

import types

import numpy as np

from adapters import torch_eager as _torch


def _run_graph(graph, arrays, path="eager/f32"):
    nodes = []
    for node in graph["nodes"]:
        p = dict(node["params"])
        if node["op"] == "depthwise_conv2d" and p.get("stride") in (2, (2, 2)) and p.get("padding") in (1, (1, 1)):
            p["padding"] = ((0, 2), (0, 2))             # the planted bug
        nodes.append(dict(node, params=p))
    return _torch.run_graph(dict(graph, nodes=nodes), arrays, path)


adapter = types.SimpleNamespace(name="planted_strided_dw", version=f"planted-on-torch-{_torch.version}",
                                run_graph=_run_graph, graph_paths=("eager/f32",))


def correct_run_graph(graph, arrays, path="eager/f32"):
    return _torch.run_graph(graph, arrays, path)


correct = types.SimpleNamespace(name="torch_in_process", version=_torch.version,
                                run_graph=correct_run_graph, graph_paths=("eager/f32",))


def _fails_on_stacked_batch_norms(graph, arrays, path="eager/f32"):
    """Raises when a batch norm reads another batch norm's output (the shape of the lowering error
    ExecuTorch 1.5.1's XNNPACK DecomposeBatchNorm pass raises), else runs correctly."""
    ops = {n["name"]: n["op"] for n in graph["nodes"]}
    for n in graph["nodes"]:
        if n["op"] == "batch_norm" and ops.get(n["inputs"]["x"]) == "batch_norm":
            raise RuntimeError(f"planted lowering error: batch_norm {n['name']} after batch_norm")
    return _torch.run_graph(graph, arrays, path)


stacked_bn_error = types.SimpleNamespace(name="planted_stacked_bn", version=f"planted-on-torch-{_torch.version}",
                                         run_graph=_fails_on_stacked_batch_norms, graph_paths=("eager/f32",))
