"""Argument normalisation shared by the golden ops.

Every op accepts PyTorch's spellings (an int or an (h, w) pair) and the
asymmetric ``((top, bottom), (left, right))`` padding form. Invalid values
raise ``ValueError`` naming the parameter, where PyTorch would raise.
"""
from __future__ import annotations

import numpy as np


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """``value`` as an (h, w) pair of ints, each >= ``minimum``."""
    if type(value) is int:                  # the common case, without NumPy's per-call overhead
        h = w = value
    else:
        if np.ndim(value) == 0:
            value = (value, value)
        try:
            h, w = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if h < minimum or w < minimum:
        raise ValueError(f"{name} must be >= {minimum} on both axes, got {(h, w)}")
    return h, w


def padding4(padding) -> tuple[int, int, int, int]:
    """Padding as (top, bottom, left, right).

    Accepts an int (all sides), ``(pad_h, pad_w)`` (symmetric per axis), or
    ``((top, bottom), (left, right))`` (asymmetric).
    """
    if type(padding) is not int and np.ndim(padding) == 2:
        try:
            (top, bottom), (left, right) = ((int(a), int(b)) for a, b in padding)
        except (TypeError, ValueError):
            raise ValueError(f"padding must be ((top, bottom), (left, right)), got {padding!r}") from None
        sides = (top, bottom, left, right)
    else:
        ph, pw = pair(padding, "padding", 0)
        sides = (ph, ph, pw, pw)
    if min(sides) < 0:
        raise ValueError(f"padding must be >= 0 on every side, got {padding!r}")
    return sides


def as_float64(x, name: str, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a.astype(np.float64, copy=False)


def normalize_dim(dim: int, ndim: int, name: str = "dim") -> int:
    """A possibly negative axis index as a non-negative one (PyTorch wraps 0-d as 1-d)."""
    rank = max(ndim, 1)
    d = int(dim)
    if not -rank <= d < rank:
        raise ValueError(f"{name} {dim} is out of range for a tensor of {ndim} dimensions")
    return d % rank
