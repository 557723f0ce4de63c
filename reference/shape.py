"""view and permute, as ``Tensor.view`` and ``Tensor.permute``.

``view`` reinterprets the C-order (row-major) data with a new shape; one entry
may be -1 and is inferred. ``permute`` reorders dimensions; ``dims`` must be a
permutation of ``range(ndim)`` (negative entries count from the end).
"""
from __future__ import annotations

import math

import numpy as np

from ._args import as_float64, normalize_dim


def view(x, shape):
    x = as_float64(x, "input")
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ValueError(f"shape {shape}: only one dimension can be -1")
    if any(s < -1 for s in shape):
        raise ValueError(f"shape {shape}: invalid size {min(shape)}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if known == 0 or x.size % known:
            raise ValueError(f"shape {shape} is invalid for input of size {x.size}")
        shape = tuple(x.size // known if s == -1 else s for s in shape)
    elif known != x.size:
        raise ValueError(f"shape {shape} is invalid for input of size {x.size}")
    return np.ascontiguousarray(x).reshape(shape)


def permute(x, dims):
    x = as_float64(x, "input")
    dims = tuple(dims)
    if len(dims) != x.ndim:
        raise ValueError(f"dims {dims} has {len(dims)} entries, input has {x.ndim} dimensions")
    axes = tuple(normalize_dim(d, x.ndim, "dims entry") for d in dims)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"dims {dims} is not a permutation of the input's dimensions")
    return np.transpose(x, axes).copy()
