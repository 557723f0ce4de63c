"""add, as ``torch.add(x, y)`` (``x + y``) with NumPy broadcasting: the residual
connection of an inverted residual block.

Shapes must broadcast (PyTorch's rule, which is NumPy's); otherwise ``ValueError``.
"""
from __future__ import annotations

import numpy as np

from ._args import as_float64


def add(x, y):
    x, y = as_float64(x, "input"), as_float64(y, "other")
    try:
        np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise ValueError(f"add: input shape {x.shape} and other shape {y.shape} do not broadcast") from None
    return x + y
