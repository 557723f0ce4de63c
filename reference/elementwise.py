"""clamp, as ``torch.clamp``: ``min(max(x, lo), hi)``.

NaN in ``x`` stays NaN. When ``lo > hi`` every element becomes ``hi``.
ReLU6 is ``clamp(x, 0, 6)``; hardtanh is ``clamp(x, -1, 1)``.
"""
from __future__ import annotations

import numpy as np

from ._args import as_float64


def clamp(x, min=None, max=None):  # noqa: A002 - PyTorch's parameter names
    x = as_float64(x, "input")
    if min is None and max is None:
        raise ValueError("clamp: at least one of min or max must not be None")
    out = x.copy()
    if min is not None:
        out = np.where(out < min, float(min), out)   # comparisons with NaN are False: NaN kept
    if max is not None:
        out = np.where(out > max, float(max), out)
    return out
