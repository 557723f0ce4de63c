"""XNNPACK through ExecuTorch, in float32 and int8: the built-in backend named ``xnnpack``.

Each op is a small ``torch.nn.Module`` (weights as parameters and buffers), exported with
``torch.export`` in the case's memory format (channels_last inputs stay channels_last), lowered
with ``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])``, serialised with
``.to_executorch()`` and run by the ExecuTorch runtime in this process
(machinery and caching: ``adapters/_executorch.py``). How each op is written:

- conv2d / depthwise_conv2d: ``nn.Conv2d`` (any groups and multiplier, stride, dilation,
  symmetric padding); asymmetric padding is an ``F.pad`` in front of it;
- conv2d_batch_norm: ``nn.Conv2d`` -> ``nn.BatchNorm2d`` in eval mode, which XNNPACK's passes
  fold into the convolution while lowering;
- clamp: ``F.relu6`` for (0, 6), ``F.hardtanh`` for (-1, 1), ``torch.clamp`` otherwise;
- mean: ``torch.mean(x, dim, keepdim)``; view: ``x.contiguous().view(shape)``;
  permute: ``x.permute(dims)``; batch_norm: ``nn.BatchNorm1d``/``2d`` in eval mode.

Delegation is checked, not assumed: a graph that leaves a compute node outside the XNNPACK
delegate raises ``Unsupported("not delegated: ...")`` before it runs. Each result comes with
facts: the delegated nodes and the XNNPACK kernels that ran (ETDump of each program's first run).

int8 paths ``xnnpack/int8_per_tensor`` and ``xnnpack/int8_per_channel`` (conv2d, depthwise_conv2d,
conv2d_batch_norm: what XNNPACKQuantizer annotates): the module is quantized with pt2e
(XNNPACKQuantizer, calibrated with min/max observers on the example itself) and lowered; XNNPACK
runs QS8 (per-tensor weights) or QC8 (per-channel weights) kernels. The tolerance is a
quantization error model computed from the case (``edgediff.tolerance.quantized_conv_bound``:
operand rounding at the calibrated scales + 1 output LSB for the kernel's rescale).
"""
from __future__ import annotations

from adapters import _executorch as _et

name = "xnnpack"
version = f"executorch {_et.EXECUTORCH_VERSION}"
PATH = "xnnpack/f32"
INT8_PATHS = {"xnnpack/int8_per_tensor": "int8_per_tensor",
              "xnnpack/int8_per_channel": "int8_per_channel"}
_backend = _et.Backend(xnnpack=True, path=PATH, int8_paths=INT8_PATHS)
paths = {op: (PATH,) for op in ("conv2d", "depthwise_conv2d", "clamp", "mean", "view", "permute",
                                 "batch_norm", "conv2d_batch_norm")}
for _op in _et.INT8_OPS:
    paths[_op] = (PATH, *INT8_PATHS)

# Examples per test in dev/ci and value sets per lowered structure (see _executorch.sampling)
max_examples, values_per_structure = _et.sampling(INT8_PATHS)


def unavailable_reason():
    return _et.unavailable_reason(need_xnnpack=True)


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
run_graph, graph_paths = _graph_runner(xnnpack=True)
