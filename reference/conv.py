"""conv2d and depthwise_conv2d, as ``torch.nn.functional.conv2d`` defines them.

    out[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q]
                      * xpad[n, g(o) * Cg + c, i * sh + p * dh, j * sw + q * dw]

where ``Cg = C // groups`` input channels feed each group, ``g(o) = o // (O // groups)``
is the group of output channel ``o``, and ``xpad`` is ``x`` zero-padded by
(top, bottom, left, right). Output size per axis: ``(in + pads - d*(k-1) - 1) // s + 1``.

Computed in float64, per group, as the sum above written as one matrix product:
the kernel taps of every input channel are gathered into columns (im2col, one
strided copy per tap (p, q)), so that

    out[n, g] (O/G x OH*OW) = w[g] (O/G x Cg*KH*KW) @ cols[n, g] (Cg*KH*KW x OH*OW)

lands directly in NCHW. Groups (and, for large images, output rows) are processed
in blocks small enough for the padded input and the columns to stay in cache
(depthwise: one channel per group).
A 1x1 stride-1 unpadded conv needs no gathering: the input already is the columns.
"""
from __future__ import annotations

import math

import numpy as np

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

    out = _conv(x, w, groups, (top, bottom, left, right), (sh, sw), (dh, dw))
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


# Elements of im2col columns per block: keeps the padded input block and the columns in L2
# (depthwise ~1.5-2x faster than one whole-tensor gather), and the temporaries small, so
# the allocator reuses their memory instead of mapping fresh pages on every call.
_BLOCK_ELEMENTS = 131072


def _conv(x, w, groups, pads, stride, dilation):
    """Per group g: out[n, g] = w[g] (O/G x Cg*KH*KW) @ cols[n, g] (Cg*KH*KW x OH*OW), where
    cols[n, g, c, p, q, i, j] = xpad[n, g, c, i*sh + p*dh, j*sw + q*dw] is gathered one kernel
    tap (p, q) at a time, for a block of groups and output rows at a time."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (top, bottom, left, right), (sh, sw), (dh, dw) = pads, stride, dilation
    hp, wp = h + top + bottom, wd + left + right
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    og, k = o // groups, cg * kh * kw
    wm = w.reshape(groups, og, k)
    xg = x.reshape(n, groups, cg, h, wd)
    out = np.empty((n, groups, og, oh * ow))
    if (kh, kw, sh, sw, hp, wp) == (1, 1, 1, 1, h, wd):     # 1x1, stride 1: x already is cols
        np.matmul(wm, xg.reshape(n, groups, cg, h * wd), out=out)
        return out.reshape(n, o, oh, ow)

    gb = max(1, min(groups, _BLOCK_ELEMENTS // (n * k * oh * ow)))    # groups per block
    rows = max(1, _BLOCK_ELEMENTS // (n * gb * k * ow))                # output rows per block,
    rows = math.ceil(oh / math.ceil(oh / rows))                        # in near-equal blocks
    xpad = np.zeros((n, gb, cg, hp, wp))                                # the borders stay zero
    cols = np.empty((n, gb, cg, kh, kw, rows, ow))
    for g0 in range(0, groups, gb):
        m = min(gb, groups - g0)
        xpad[:, :m, :, top:top + h, left:left + wd] = xg[:, g0:g0 + m]
        for i0 in range(0, oh, rows):
            r = min(rows, oh - i0)
            for p in range(kh):
                for q in range(kw):
                    cols[:, :m, :, p, q, :r] = xpad[:, :m, :, _every(i0 * sh + p * dh, r, sh),
                                                    _every(q * dw, ow, sw)]
            np.matmul(wm[g0:g0 + m], cols[:, :m, ..., :r, :].reshape(n, m, k, r * ow),
                      out=out[:, g0:g0 + m, :, i0 * ow:(i0 + r) * ow])
    return out.reshape(n, o, oh, ow)


def _every(start, count, step):
    """The slice of ``count`` indices start, start + step, ..."""
    return slice(start, start + step * (count - 1) + 1, step)
