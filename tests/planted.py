"""Adapters with planted bugs, for meta-tests of edgediff itself.

Each wraps the real ``torch`` adapter and changes one thing a backend might get wrong. Every op
of a planted adapter gets C-contiguous copies of its inputs: PyTorch 2.13 segfaults on some
channels_last convs (baselined for ``torch``), and a meta-test must see only its planted bug.
"""
from __future__ import annotations

import types

import numpy as np

from adapters import torch_eager as _torch


def _contiguous(fn):
    def call(*args, **kwargs):
        c = lambda a: np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a
        return fn(*map(c, args), **{k: c(v) for k, v in kwargs.items()})
    return call


OPS = ("conv2d", "depthwise_conv2d", "clamp", "mean", "view", "permute", "batch_norm", "conv2d_batch_norm")


def _wrap(name, **overrides):
    mod = types.SimpleNamespace(
        name=name, version=f"planted-on-torch-{_torch.version}",
        isolated=True,        # like the torch adapter: a crash must not end a run
        **{op: _contiguous(getattr(_torch, op)) for op in OPS})
    for k, v in overrides.items():
        setattr(mod, k, _contiguous(v))
    return mod


def _swapped_asym_padding(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    if np.ndim(padding) == 2:
        (t, bo), (l, r) = padding
        padding = ((bo, t), (r, l))      # bug: top/bottom and left/right swapped
    return _torch.conv2d(x, w, b, stride, padding, dilation, groups)


def _clamp_drops_nan(x, min=None, max=None):  # noqa: A002
    return np.nan_to_num(_torch.clamp(x, min, max), nan=0.0)


def _clamp_min_after_max(x, min=None, max=None):  # noqa: A002
    y = np.asarray(x, np.float32)
    if max is not None:
        y = np.minimum(y, np.float32(max))
    if min is not None:
        y = np.maximum(y, np.float32(min))   # bug when min > max: returns min instead of max
    return y


def _mean_wrong_axis(x, dim=None, keepdim=False):
    if isinstance(dim, int) and x.ndim > 1:
        dim = (dim + 1) % x.ndim          # bug: off-by-one axis
    return _torch.mean(x, dim, keepdim)


def _conv_bias_twice(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    y = _torch.conv2d(x, w, b, stride, padding, dilation, groups)
    return y if b is None else y + b[None, :, None, None]


def _conv_f16_accumulate(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    import torch
    import torch.nn.functional as F
    t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a, np.float32)).half()
    xt = t(x)
    if np.ndim(padding) == 2:
        (top, bottom), (left, right) = padding
        xt, padding = F.pad(xt, (left, right, top, bottom)), 0
    return F.conv2d(xt, t(w), t(b), stride, padding, dilation, groups).float().numpy()


correct = _wrap("planted_correct")
swapped_padding = _wrap("planted_swapped_padding", conv2d=_swapped_asym_padding)
clamp_drops_nan = _wrap("planted_clamp_drops_nan", clamp=_clamp_drops_nan)
clamp_order = _wrap("planted_clamp_order", clamp=_clamp_min_after_max)
mean_wrong_axis = _wrap("planted_mean_wrong_axis", mean=_mean_wrong_axis)
bias_twice = _wrap("planted_bias_twice", conv2d=_conv_bias_twice)
f16_accumulate = _wrap("planted_f16_accumulate", conv2d=_conv_f16_accumulate)
