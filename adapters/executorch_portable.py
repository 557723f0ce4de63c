"""ExecuTorch's portable kernels, in float32 and int8: the built-in backend named
``executorch_portable``.

The same modules as ``adapters/xnnpack.py`` (nn.Conv2d with an ``F.pad`` for asymmetric padding,
nn.BatchNorm in eval mode, F.relu6 / F.hardtanh / torch.clamp, torch.mean, view, permute),
exported with ``torch.export`` in the case's memory format and lowered with
``to_edge_transform_and_lower`` *without* a partitioner: every node runs as an ExecuTorch
portable kernel (``aten::convolution.out``, ``aten::_native_batch_norm_legit_no_training.out``,
...) in the in-process runtime. Facts name the edge ops of the program and the kernels the
ETDump of its first run recorded.

int8 paths ``portable/int8_per_tensor`` and ``portable/int8_per_channel``: the same pt2e-quantized
graph as ``xnnpack``'s, run by the portable ``quantize_per_tensor.out``/``dequantize_*.out``
kernels (``executorch.kernels.quantized``) around a float ``convolution.out``.
"""
from __future__ import annotations

from adapters import _executorch as _et

name = "executorch_portable"
version = f"executorch {_et.EXECUTORCH_VERSION}"
PATH = "portable/f32"
INT8_PATHS = {"portable/int8_per_tensor": "int8_per_tensor",
              "portable/int8_per_channel": "int8_per_channel"}
_backend = _et.Backend(xnnpack=False, path=PATH, int8_paths=INT8_PATHS)
paths = {op: (PATH,) for op in ("conv2d", "depthwise_conv2d", "clamp", "mean", "view", "permute",
                                 "batch_norm", "conv2d_batch_norm")}
for _op in _et.INT8_OPS:
    paths[_op] = (PATH, *INT8_PATHS)

# Examples per test in dev/ci and value sets per lowered structure (see _executorch.sampling)
max_examples, values_per_structure = _et.sampling(INT8_PATHS)


def unavailable_reason():
    return _et.unavailable_reason(need_xnnpack=False)


def arithmetic(op, path):
    from edgediff.tolerance import FLOAT32, Arithmetic
    if path in INT8_PATHS:               # float in and out, int8 inside: quantization error model
        return Arithmetic(quantization=INT8_PATHS[path])
    return FLOAT32                       # float32 inputs, accumulation and output


conv2d = _backend.conv2d
depthwise_conv2d = _backend.depthwise_conv2d
conv2d_batch_norm = _backend.conv2d_batch_norm
clamp = _backend.clamp
mean = _backend.mean
view = _backend.view
permute = _backend.permute
batch_norm = _backend.batch_norm
repro_source = _backend.repro_source

# Graphs (edgediff.graph): one ExecuTorch program per Graph; see adapters/_executorch_graph.py.
from adapters._executorch_graph import graph_runner as _graph_runner  # noqa: E402
run_graph, graph_paths = _graph_runner(xnnpack=False)
