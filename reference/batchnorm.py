"""Inference batch norm (``F.batch_norm(..., training=False)``) and its folding into a conv.

    y = (x - running_mean[c]) / sqrt(running_var[c] + eps) * weight[c] + bias[c]

over channel dim 1. Folding rewrites conv -> BN as one conv:

    scale = weight / sqrt(running_var + eps)
    w' = w * scale[o],   b' = (b - running_mean) * scale + bias
"""
from __future__ import annotations

import numpy as np

from ._args import as_float64


def _stats(c, running_mean, running_var, weight, bias):
    named = {"running_mean": running_mean, "running_var": running_var,
             "weight": weight, "bias": bias}
    out = {}
    for name, v in named.items():
        if v is None:
            out[name] = None
            continue
        a = as_float64(v, name, 1)
        if a.shape != (c,):
            raise ValueError(f"{name} must have shape ({c},), got {a.shape}")
        out[name] = a
    if out["running_mean"] is None or out["running_var"] is None:
        raise ValueError("running_mean and running_var are required in inference mode")
    return out


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps=1e-5):
    x = as_float64(x, "input")
    if x.ndim < 2:
        raise ValueError(f"input must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    s = _stats(x.shape[1], running_mean, running_var, weight, bias)
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - s["running_mean"].reshape(bshape)) / np.sqrt(s["running_var"] + eps).reshape(bshape)
    if s["weight"] is not None:
        y = y * s["weight"].reshape(bshape)
    if s["bias"] is not None:
        y = y + s["bias"].reshape(bshape)
    return y


def fold_batch_norm(w, b, running_mean, running_var, weight, bias, eps=1e-5):
    w = as_float64(w, "w", 4)
    o = w.shape[0]
    s = _stats(o, running_mean, running_var, weight, bias)
    scale = 1.0 / np.sqrt(s["running_var"] + eps)
    if s["weight"] is not None:
        scale = scale * s["weight"]
    b0 = np.zeros(o) if b is None else as_float64(b, "b", 1)
    if b0.shape != (o,):
        raise ValueError(f"b must have shape ({o},), got {b0.shape}")
    b_folded = (b0 - s["running_mean"]) * scale
    if s["bias"] is not None:
        b_folded = b_folded + s["bias"]
    return w * scale[:, None, None, None], b_folded


def conv2d_batch_norm(x, w, running_mean, running_var, b=None, weight=None, bias=None,
                      stride=1, padding=0, dilation=1, groups=1, eps=1e-5):
    """conv2d followed by inference batch norm over its output channels (what a
    backend's BN-folding pass rewrites into one conv)."""
    from .conv import conv2d
    return batch_norm(conv2d(x, w, b, stride, padding, dilation, groups),
                      running_mean, running_var, weight, bias, eps)
