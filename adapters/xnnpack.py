"""XNNPACK through ExecuTorch, in float32: the built-in backend named ``xnnpack``.

How it computes each op: the op is a small ``torch.nn.Module`` (weights as parameters and
buffers), exported with ``torch.export`` in the case's memory format, lowered with
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])``, serialised with
``.to_executorch()`` and run by the ExecuTorch runtime in this process (``adapters/_executorch.py``).

- conv2d / depthwise_conv2d: ``nn.Conv2d`` (any groups, stride, dilation, symmetric padding;
  asymmetric padding is an ``F.pad`` before it) -> XNNPACK convolution kernels;
- conv2d_batch_norm: ``nn.Conv2d`` -> ``nn.BatchNorm2d`` in eval mode, which XNNPACK's passes
  fold into the convolution at lowering time;
- clamp: ``F.relu6`` for (0, 6), ``F.hardtanh`` for (-1, 1), ``torch.clamp`` otherwise;
- mean, view (``x.contiguous().view``), permute: the PyTorch calls;
- batch_norm: ``nn.BatchNorm1d``/``2d`` in eval mode.

Delegation is checked, not assumed: a graph that leaves a compute node outside the XNNPACK
delegate raises ``Unsupported("not delegated: ...")`` before it runs. Facts returned with each
result name the delegated nodes and the XNNPACK kernels that ran (from an ETDump of the first run
of each cached program).
"""
from __future__ import annotations

from adapters import _executorch as _et

name = "xnnpack"
version = f"executorch {_et.EXECUTORCH_VERSION}"
PATH = "xnnpack/f32"
OPS = ("conv2d", "depthwise_conv2d", "clamp", "mean", "view", "permute", "batch_norm",
       "conv2d_batch_norm")
paths = {op: (PATH,) for op in OPS}
_lowerer = None


def unavailable_reason():
    return _et.unavailable_reason(need_xnnpack=True)


def arithmetic(op, path):
    from edgediff.tolerance import FLOAT32
    return FLOAT32


def _run(op, arrays, params, path):
    global _lowerer
    if path != PATH:
        raise ValueError(f"unknown path {path!r} for {name}; known: {PATH}")
    if _lowerer is None:
        _et.setup()
        _lowerer = _et.Lowerer(xnnpack=True)
    return _lowerer.run(op, arrays, params)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, path=PATH):
    arrays = {"x": x, "w": w} | ({"b": b} if b is not None else {})
    return _run("conv2d", arrays, dict(stride=stride, padding=padding, dilation=dilation,
                                       groups=groups), path)


def depthwise_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, path=PATH):
    arrays = {"x": x, "w": w} | ({"b": b} if b is not None else {})
    return _run("depthwise_conv2d", arrays, dict(stride=stride, padding=padding,
                                                 dilation=dilation), path)


def conv2d_batch_norm(x, w, running_mean, running_var, b=None, weight=None, bias=None,
                      stride=1, padding=0, dilation=1, groups=1, eps=1e-5, path=PATH):
    arrays = {k: v for k, v in dict(x=x, w=w, b=b, running_mean=running_mean,
                                    running_var=running_var, weight=weight, bias=bias).items()
              if v is not None}
    return _run("conv2d_batch_norm", arrays, dict(stride=stride, padding=padding,
                                                  dilation=dilation, groups=groups, eps=eps), path)


def clamp(x, min=None, max=None, path=PATH):  # noqa: A002
    return _run("clamp", {"x": x}, {"min": min, "max": max}, path)


def mean(x, dim=None, keepdim=False, path=PATH):
    return _run("mean", {"x": x}, {"dim": dim, "keepdim": keepdim}, path)


def view(x, shape, path=PATH):
    return _run("view", {"x": x}, {"shape": shape}, path)


def permute(x, dims, path=PATH):
    return _run("permute", {"x": x}, {"dims": dims}, path)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5, path=PATH):
    arrays = {k: v for k, v in dict(x=x, running_mean=running_mean, running_var=running_var,
                                    weight=weight, bias=bias).items() if v is not None}
    return _run("batch_norm", arrays, {"eps": eps}, path)


def repro_source(op, path):
    return _et.repro_source(op, xnnpack=True)
