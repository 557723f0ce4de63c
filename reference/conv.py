"""conv2d and depthwise_conv2d, as ``torch.nn.functional.conv2d`` defines them.

    out[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q]
                      * xpad[n, g(o) * Cg + c, i * sh + p * dh, j * sw + q * dw]

where ``Cg = C // groups`` input channels feed each group, ``g(o) = o // (O // groups)``
is the group of output channel ``o``, and ``xpad`` is ``x`` zero-padded by
(top, bottom, left, right). Output size per axis: ``(in + pads - d*(k-1) - 1) // s + 1``.

Computed in float64. The general path gathers sliding windows (im2col through
``numpy.lib.stride_tricks.sliding_window_view``) and does one batched matrix
product per group; one input channel per group (depthwise) is a sum of
KH*KW shifted multiply-adds instead, which is much faster in NumPy.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._args import as_float64, pair, padding4


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    x = as_float64(x, "input", 4)
    w = as_float64(w, "weight", 4)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = pair(stride, "stride", 1)
    dh, dw = pair(dilation, "dilation", 1)
    top, bottom, left, right = padding4(padding)
    groups = int(groups)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if cg * groups != c:
        raise ValueError(
            f"groups={groups}: weight of shape {w.shape} expects {cg * groups} input channels, "
            f"input has {c}")
    if o % groups:
        raise ValueError(f"groups={groups} must divide out_channels={o}")
    if b is not None:
        b = as_float64(b, "bias", 1)
        if b.shape != (o,):
            raise ValueError(f"bias must have shape ({o},), got {b.shape}")
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    hp, wp = h + top + bottom, wd + left + right
    if eff_h > hp or eff_w > wp:
        raise ValueError(
            f"kernel size with dilation ({eff_h}, {eff_w}) is larger than the padded input "
            f"({hp}, {wp})")
    if kh < 1 or kw < 1 or o < 1:
        raise ValueError(f"weight shape {w.shape} has an empty dimension")

    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) if any((top, bottom, left, right)) else x
    if cg == 1:
        out = _one_channel_per_group(xp, w, groups, (sh, sw), (dh, dw))
    else:
        out = _windows_matmul(xp, w, groups, (sh, sw), (dh, dw))
    if b is not None:
        out += b[None, :, None, None]
    return out


def depthwise_conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """conv2d with groups == C; ``w`` is (C * multiplier, 1, KH, KW)."""
    x = as_float64(x, "input", 4)
    w = as_float64(w, "weight", 4)
    if w.shape[1] != 1:
        raise ValueError(f"depthwise weight must have shape (C * multiplier, 1, KH, KW), got {w.shape}")
    if w.shape[0] % x.shape[1]:
        raise ValueError(
            f"depthwise weight has {w.shape[0]} output channels, not a multiple of the "
            f"{x.shape[1]} input channels (multiplier must be an integer)")
    return conv2d(x, w, b, stride, padding, dilation, groups=x.shape[1])


def _windows_matmul(xp, w, groups, stride, dilation):
    """General grouped conv: per group, weight matrix (O/G x Cg*KH*KW) times im2col columns
    (Cg*KH*KW x OH*OW); the product is already NCHW. A 1x1 stride-1 conv needs no copy."""
    n = xp.shape[0]
    o, cg, kh, kw = w.shape
    windows = _windows(xp, (kh, kw), stride, dilation)          # N, C, OH, OW, KH, KW
    oh, ow = windows.shape[2:4]
    cols = windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, groups, cg * kh * kw, oh * ow)
    out = np.matmul(w.reshape(groups, o // groups, cg * kh * kw), cols)   # N, G, O/G, OH*OW
    return out.reshape(n, o, oh, ow)


# Elements per block of output channels in the depthwise sum: keeps the accumulator and
# the tap product in cache (measured ~3x faster than whole-tensor passes at 56x56).
_BLOCK_ELEMENTS = 32768


def _one_channel_per_group(xp, w, groups, stride, dilation):
    """Each output channel reads one input channel: the sum over kernel taps of a shifted,
    strided view of the input times that tap's weight per channel. Output channels are
    processed in cache-sized blocks; inside a block every channel is one vector operation."""
    n = xp.shape[0]
    o, _, kh, kw = w.shape
    mult = o // groups
    (sh, sw), (dh, dw) = stride, dilation
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    src = np.repeat(xp, mult, axis=1) if mult > 1 else xp     # output channel o reads input o // mult
    out = np.zeros((n, o, oh, ow))
    block = max(1, _BLOCK_ELEMENTS // (n * oh * ow))
    for c0 in range(0, o, block):
        acc, c1 = out[:, c0:c0 + block], min(o, c0 + block)
        product = np.empty_like(acc)
        for p in range(kh):
            for q in range(kw):
                tap = src[:, c0:c1, p * dh: p * dh + sh * (oh - 1) + 1: sh,
                          q * dw: q * dw + sw * (ow - 1) + 1: sw]
                np.multiply(tap, w[None, c0:c1, 0, p, q, None, None], out=product)
                acc += product
    return out


def _windows(xp, kernel, stride, dilation):
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    eff = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    view = sliding_window_view(xp, eff, axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]
