"""mean, as ``torch.mean(x, dim, keepdim)``.

``dim`` is None (every dimension), an int, or a tuple of distinct ints;
negative values count from the end. An empty tuple reduces every dimension,
as in PyTorch.
"""
from __future__ import annotations

import numpy as np

from ._args import as_float64, normalize_dim


def mean(x, dim=None, keepdim=False):
    x = as_float64(x, "input")
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        axes = tuple(range(x.ndim))
    else:
        dims = (dim,) if np.ndim(dim) == 0 else tuple(dim)
        axes = tuple(normalize_dim(d, x.ndim) for d in dims)
        if len(set(axes)) != len(axes):
            raise ValueError(f"dim {dim!r} names a dimension more than once")
    if x.ndim == 0:
        return x.copy()
    return np.mean(x, axis=axes, keepdims=bool(keepdim))
