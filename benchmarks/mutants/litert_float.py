"""Planted float bugs on top of a real backend: LiteRT's reference kernels (``builtin_ref``).

The same kinds of bug as ``torch_float``, wrapped around the ``litert`` adapter (in-process:
LiteRT's float kernels have not crashed here), to show the power numbers hold when the
correct adapter is a real edge runtime rather than PyTorch.
"""
from __future__ import annotations

import types

import numpy as np

from adapters import litert as L

BASE = "litert"
PATH = "builtin_ref"


def _mutant(name, bug, trigger, **ops):
    mod = types.SimpleNamespace(
        name=f"mutant_{name}", version=f"mutant-on-litert-{getattr(L, 'version', '?')}",
        bug=bug, trigger=trigger, base=BASE, base_path=PATH, mutated_ops=tuple(ops),
        arithmetic=lambda op, path: L.arithmetic(op, PATH))
    for op in ops:
        setattr(mod, op, ops[op])
    return mod


def _conv_pad_swapped(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    if np.ndim(padding) == 2:
        (t, bo), (l, r) = padding
        padding = ((bo, t), (r, l))
    return L.conv2d(x, w, b, stride, padding, dilation, groups, path=PATH)


def _mean_wrong_axis(x, dim=None, keepdim=False):
    if isinstance(dim, int) and x.ndim > 1:
        dim = (dim + 1) % x.ndim
    return L.mean(x, dim, keepdim, path=PATH)


litert_pad_swapped = _mutant(
    "litert_pad_swapped", "LiteRT conv with asymmetric padding swapped (PAD op built wrongly)",
    "top != bottom or left != right", conv2d=_conv_pad_swapped)
litert_mean_wrong_axis = _mutant(
    "litert_mean_wrong_axis", "LiteRT MEAN over axis dim+1 for an int dim",
    "int dim, rank > 1", mean=_mean_wrong_axis)

MUTANTS = [m for m in globals().values() if isinstance(m, types.SimpleNamespace)]
