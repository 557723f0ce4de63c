"""int8 ops as TFLite's reference kernels and CMSIS-NN compute them, bit for bit.

Layout is TFLite's and CMSIS-NN's: activations NHWC ``(N, H, W, C)``, conv weights OHWI
``(O, KH, KW, C / groups)``, depthwise weights ``(1, KH, KW, C * M)`` (output channel
``c * M + m`` reads input channel ``c``), fully connected weights ``(O, K)``.
Offsets follow CMSIS-NN: ``input_offset = -input_zero_point``, ``output_offset =
output_zero_point``. Every conv-like op is

    acc[o] = wrap32(bias[o] + sum (x + input_offset) * (w + filter_offset))
    y[o]   = clamp(wrap32(requantize(acc[o], multiplier[o], shift[o]) + output_offset),
                   act_min, act_max)

``wrap32`` is two's-complement wrap to int32: C accumulates in int32 and leaves overflow
undefined; the hardware wraps, and wrapping the exact sum once equals wrapping every partial
sum. A padded tap contributes nothing (a padded input equals the zero point). The sums are
exact: products of int8 values plus offsets are below 2^15, so float64 matrix products of
fewer than 2^37 terms are exact integers, whatever the summation order.

Requantization (``rounding=``), returned as int32 values in int64 arrays:

- ``"double"``: TFLite's ``MultiplyByQuantizedMultiplier`` (gemmlowp), which is also
  CMSIS-NN's default ``arm_nn_requantize``::

      RDBPOT(SRDHM(wrap32(acc << max(shift, 0)), multiplier), max(-shift, 0))
      SRDHM(a, b) = (a * b + 2^30) >> 31      # floor: ties toward +inf; saturates to
                                              # INT32_MAX only for a == b == INT32_MIN
      RDBPOT(x, e) = x / 2^e, nearest, ties away from zero

  (gemmlowp writes SRDHM with a sign-dependent nudge and C's truncating division; that
  is the same function as the floor form above, which CMSIS-NN uses.)
- ``"single"``: ``CMSIS_NN_USE_SINGLE_ROUNDING`` (identical to ``TFLITE_SINGLE_ROUNDING``)::

      ((acc * multiplier) >> (30 - shift) + 1) >> 1    # in 64 bits, then wrap32
      == (acc * multiplier + 2^(30 - shift)) >> (31 - shift)

  one rounding to nearest, ties toward +inf. Differs from "double" by at most 1.
- ``"double_half_up"``: ``"double"`` with the second rounding ties toward +inf, i.e.
  ``(SRDHM(...) + 2^(e-1)) >> e`` (a NEON ``VRSHL``-style rounding shift). LiteRT 2.3's
  optimized (builtin) int8 CONV_2D (ruy) computes this on x86-64, and its optimized
  DEPTHWISE_CONV_2D does for whole blocks of 8 output channels; differs from "double" by 1
  on negative ties.
- ``"float32_rne"``: XNNPACK's fp32 requantization: ``rint(float32(acc) * float32(scale))``
  (float32 product, ties to even), with the real multiplier ``scale`` instead of
  multiplier/shift (``scales=`` on the ops).

Shifts must lie in CMSIS-NN's documented range [-31, 30].

Quantization (``quantize``/``dequantize``) follows TFLite's reference ``AffineQuantize``:
``q = clamp(std::round(x / float32(scale)) + zero_point)``, a float32 division and
``std::round``, i.e. ties AWAY from zero (``TfLiteRound``), not to even. PyTorch's and
ExecuTorch's ``quantize_per_tensor`` use ``torch.round(x * float32(1 / scale))``, ties to
even: ``rounding="half_even"`` gives that convention. ``quantize_multiplier`` is TFLite's
``QuantizeMultiplier`` (``std::frexp``, ``std::round``, the q == 2^31 fix-up, shifts below
-31 flushed to (0, 0)).

Sources read: TFLite ``kernels/internal/common.h``, ``quantization_util.cc``,
``reference/quantize.h``, ``reference/integer_ops/mean.h``, ``kernels/add.cc``; CMSIS-NN
``arm_nnsupportfunctions.h`` (``arm_nn_requantize``), ``arm_avgpool_s8.c``,
``arm_elementwise_add_s8.c``.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._args import normalize_dim, pair, padding4

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ROUNDINGS = ("double", "single", "float32_rne", "double_half_up")
ADD_LEFT_SHIFT = 20          # TFLite's left_shift for int8 ADD (15 for int16)


# ---- scalars: quantize, multipliers, requantize ---------------------------------------------

def wrap32(a) -> np.ndarray:
    """Integers wrapped to int32 two's complement, as an int64 array."""
    a = np.asarray(a, dtype=np.int64)
    return ((a + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def quantize(x, scale, zero_point, axis=None, rounding="half_away", qmin=INT8_MIN, qmax=INT8_MAX):
    """Float to int8: ``clamp(round(x / scale) + zero_point, qmin, qmax)`` in float32.

    ``rounding="half_away"`` is TFLite (std::round of the float32 quotient);
    ``"half_even"`` is PyTorch/ExecuTorch (torch.round of x * float32(1 / scale)).
    Per channel with ``axis``: ``scale`` and ``zero_point`` are 1-D along that axis."""
    x = np.asarray(x, dtype=np.float32)
    if np.isnan(x).any():
        raise ValueError("quantize: NaN has no quantized value")
    s = _along(scale, x.ndim, axis, np.float32, "scale")
    zp = _along(zero_point, x.ndim, axis, np.int64, "zero_point")
    if rounding == "half_away":
        v = (x / s).astype(np.float64)                     # float32 quotient, exact in float64
        r = np.sign(v) * np.floor(np.abs(v) + 0.5)         # std::round; +0.5 is exact in float64
    elif rounding == "half_even":
        inv = (1.0 / s.astype(np.float64)).astype(np.float32)
        r = np.rint((x * inv).astype(np.float64))
    else:
        raise ValueError(f"rounding must be 'half_away' or 'half_even', got {rounding!r}")
    return np.clip(r + zp, qmin, qmax).astype(np.int8 if qmin >= INT8_MIN and qmax <= INT8_MAX
                                              else np.int32)


def dequantize(q, scale, zero_point, axis=None):
    """int8 to float32: ``float32(scale * (q - zero_point))``. The product of a float32
    scale and a 9-bit integer is exact in float64, so this is one rounding, as in TFLite's
    per-tensor (double product) and per-channel (float product) Dequantize."""
    q = np.asarray(q)
    s = _along(scale, q.ndim, axis, np.float32, "scale").astype(np.float64)
    zp = _along(zero_point, q.ndim, axis, np.int64, "zero_point")
    return ((q.astype(np.int64) - zp) * s).astype(np.float32)


def quantize_multiplier(real, single_rounding=False):
    """TFLite's QuantizeMultiplier: ``real ~= multiplier * 2^(shift - 31)`` with
    multiplier in [2^30, 2^31) (or 0). Returns Python ints (multiplier, shift); for an
    array ``real`` returns two int32 arrays. ``single_rounding`` adds TFLite's
    TFLITE_SINGLE_ROUNDING saturation of shifts above 30."""
    if np.ndim(real):
        pairs = [quantize_multiplier(float(r), single_rounding) for r in np.ravel(real)]
        shape = np.shape(real)
        return (np.array([p[0] for p in pairs], np.int32).reshape(shape),
                np.array([p[1] for p in pairs], np.int32).reshape(shape))
    real = float(real)
    if real == 0.0:
        return 0, 0
    if not math.isfinite(real):
        raise ValueError(f"quantize_multiplier: {real} is not finite")
    q, shift = math.frexp(real)                            # real = q * 2^shift, 0.5 <= |q| < 1
    v = q * (1 << 31)                                      # exact (power-of-two scaling)
    q_fixed = int(math.copysign(math.floor(abs(v) + 0.5), v))   # std::round: ties away from 0
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:                                        # flush tiny multipliers to zero
        return 0, 0
    if single_rounding and shift > 30:
        return INT32_MAX, 30
    return q_fixed, shift


def requantize(acc, multiplier=None, shift=None, rounding="double", scale=None):
    """``acc * multiplier * 2^(shift - 31)`` rounded as ``rounding`` says (module docstring);
    for ``"float32_rne"`` pass ``scale`` instead. Arguments broadcast (per channel: arrays
    along the last axis of NHWC data). Returns int32 values in an int64 array, before the
    output offset and the activation clamp."""
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise ValueError(f"requantize: acc must be integers, got {acc.dtype}")
    acc = acc.astype(np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ValueError("requantize: acc must hold int32 values")
    if rounding == "float32_rne":
        if scale is None:
            raise ValueError("requantize(rounding='float32_rne') needs scale=")
        y = np.rint(acc.astype(np.float32) * np.asarray(scale, dtype=np.float32))
        return np.clip(y.astype(np.float64), INT32_MIN, INT32_MAX).astype(np.int64)
    if multiplier is None or shift is None:
        raise ValueError(f"requantize(rounding={rounding!r}) needs multiplier and shift")
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    if s.size and (s.min() < -31 or s.max() > 30):
        raise ValueError(f"shift must be in [-31, 30], got {s.min()}..{s.max()}")
    if m.size and (m.min() < INT32_MIN or m.max() > INT32_MAX):
        raise ValueError("multiplier must be an int32")
    if rounding in ("double", "double_half_up"):
        x = wrap32(acc << np.maximum(s, 0))
        high = (x * m + (1 << 30)) >> 31                              # SRDHM
        high = np.where((x == INT32_MIN) & (m == INT32_MIN), INT32_MAX, high)
        right = np.maximum(-s, 0)
        if rounding == "double_half_up":                              # (x + 2^(e-1)) >> e
            return (high + ((np.int64(1) << right) >> 1)) >> right
        mask = (np.int64(1) << right) - 1
        threshold = (mask >> 1) + (high < 0)
        return (high >> right) + ((high & mask) > threshold)          # RDBPOT
    if rounding == "single":
        total = 31 - s
        return wrap32((((acc * m) >> (total - 1)) + 1) >> 1)
    raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def conv_multipliers(input_scale, weight_scales, output_scale, single_rounding=False):
    """Per-channel (multipliers, shifts) as TFLite's PopulateConvolutionQuantizationParams:
    QuantizeMultiplier(double(input_scale) * double(weight_scale) / double(output_scale))."""
    f32 = lambda v: np.asarray(v, dtype=np.float32).astype(np.float64)   # noqa: E731
    real = f32(input_scale) * np.atleast_1d(f32(weight_scales)) / f32(output_scale)
    return quantize_multiplier(real, single_rounding)


def add_s8_params(input1_scale, input1_zero_point, input2_scale, input2_zero_point,
                  output_scale, output_zero_point, left_shift=ADD_LEFT_SHIFT):
    """The keyword arguments of ``add_s8`` as TFLite's ADD Prepare computes them."""
    s1, s2, so = (float(np.float32(v)) for v in (input1_scale, input2_scale, output_scale))
    twice_max = 2 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << left_shift) * so))
    return dict(input1_offset=-int(input1_zero_point), input1_multiplier=m1, input1_shift=sh1,
                input2_offset=-int(input2_zero_point), input2_multiplier=m2, input2_shift=sh2,
                left_shift=left_shift, output_offset=int(output_zero_point),
                output_multiplier=mo, output_shift=sho)


# ---- ops ----------------------------------------------------------------------------------

def conv2d_s8(x, w, bias, input_offset, output_offset, multipliers, shifts, act_min=INT8_MIN,
              act_max=INT8_MAX, stride=1, padding=0, dilation=1, groups=1, rounding="double",
              scales=None):
    """TFLite int8 CONV_2D (per-channel), as CMSIS-NN's arm_convolve_*_s8. x NHWC, w OHWI
    with ``C / groups`` input channels; ``padding``: int, (ph, pw) or ((top, bottom),
    (left, right)). Returns int8 (N, OH, OW, O)."""
    acc = conv2d_s8_acc(x, w, bias, input_offset, stride, padding, dilation, groups)
    return _output_stage(acc, multipliers, shifts, output_offset, act_min, act_max, rounding,
                         scales, acc.shape[-1])


def conv2d_s8_acc(x, w, bias, input_offset, stride=1, padding=0, dilation=1, groups=1):
    """The int32 accumulators of ``conv2d_s8`` (before requantization), as int64 (N, OH, OW, O)."""
    x = _int8(x, "x", 4)
    w = _int8(w, "w", 4)
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    groups = int(groups)
    if groups < 1 or cg * groups != c or o % groups:
        raise ValueError(f"groups={groups} does not fit input channels {c}, weight {w.shape}")
    xs = x.astype(np.float64) + int(input_offset)
    win = _windows(xs, (kh, kw), stride, padding, dilation)      # N, OH, OW, C, KH, KW
    oh, ow = win.shape[1:3]
    cols = (win.reshape(n * oh * ow, groups, cg, kh, kw)
               .transpose(1, 0, 3, 4, 2).reshape(groups, n * oh * ow, kh * kw * cg))
    wmat = (w.astype(np.float64).reshape(groups, o // groups, kh * kw * cg).transpose(0, 2, 1))
    acc = np.matmul(cols, wmat)                                   # G, N*OH*OW, O/G (exact)
    acc = acc.transpose(1, 0, 2).reshape(n, oh, ow, o).astype(np.int64)
    return wrap32(_add_bias(acc, bias, o))


def depthwise_conv2d_s8(x, w, bias, input_offset, output_offset, multipliers, shifts,
                        act_min=INT8_MIN, act_max=INT8_MAX, stride=1, padding=0, dilation=1,
                        depth_multiplier=None, rounding="double", scales=None):
    """TFLite int8 DEPTHWISE_CONV_2D: w is (1, KH, KW, C * M); output channel c * M + m
    reads input channel c. Returns int8 (N, OH, OW, C * M)."""
    acc = depthwise_conv2d_s8_acc(x, w, bias, input_offset, stride, padding, dilation,
                                  depth_multiplier)
    return _output_stage(acc, multipliers, shifts, output_offset, act_min, act_max, rounding,
                         scales, acc.shape[-1])


def depthwise_conv2d_s8_acc(x, w, bias, input_offset, stride=1, padding=0, dilation=1,
                            depth_multiplier=None):
    """The int32 accumulators of ``depthwise_conv2d_s8``, as int64 (N, OH, OW, C * M)."""
    x = _int8(x, "x", 4)
    w = _int8(w, "w", 4)
    n, h, wd, c = x.shape
    one, kh, kw, cm = w.shape
    if one != 1 or cm % c:
        raise ValueError(f"depthwise weight must be (1, KH, KW, C*M) with C={c}, got {w.shape}")
    m = cm // c
    if depth_multiplier is not None and int(depth_multiplier) != m:
        raise ValueError(f"depth_multiplier={depth_multiplier} but weight has {cm} = {c} x {m}")
    xs = x.astype(np.float64) + int(input_offset)
    win = _windows(xs, (kh, kw), stride, padding, dilation)      # N, OH, OW, C, KH, KW
    oh, ow = win.shape[1:3]
    wk = w[0].astype(np.float64).reshape(kh, kw, c, m)
    acc = np.einsum("nijckl,klcm->nijcm", win, wk, optimize=True)
    acc = acc.reshape(n, oh, ow, cm).astype(np.int64)
    return wrap32(_add_bias(acc, bias, cm))


def fully_connected_s8(x, w, bias, input_offset, output_offset, multiplier, shift,
                       act_min=INT8_MIN, act_max=INT8_MAX, filter_offset=0, rounding="double",
                       scale=None):
    """TFLite int8 FULLY_CONNECTED (per-tensor): x (N, K), w (O, K). Returns int8 (N, O)."""
    acc = fully_connected_s8_acc(x, w, bias, input_offset, filter_offset)
    return _output_stage(acc, multiplier, shift, output_offset, act_min, act_max, rounding,
                         scale, None)


def fully_connected_s8_acc(x, w, bias, input_offset, filter_offset=0):
    """The int32 accumulators of ``fully_connected_s8``, as int64 (N, O)."""
    x = _int8(x, "x", 2)
    w = _int8(w, "w", 2)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x {x.shape} and w {w.shape} disagree on K")
    acc = (x.astype(np.float64) + int(input_offset)) @ (w.astype(np.float64) + int(filter_offset)).T
    return wrap32(_add_bias(acc.astype(np.int64), bias, w.shape[0]))


def avgpool_s8(x, kernel, stride, padding=0, act_min=INT8_MIN, act_max=INT8_MAX):
    """TFLite int8 AVERAGE_POOL_2D / arm_avgpool_s8: the sum of the raw int8 values over the
    window's in-bounds elements divided by their count, rounded to nearest with ties away
    from zero (``(sum +/- count/2) / count`` in C), then clamped. Padding is not counted;
    a window with no in-bounds element is an error (CMSIS-NN returns ARG_ERROR)."""
    x = _int8(x, "x", 4)
    kh, kw = pair(kernel, "kernel", 1)
    sh, sw = pair(stride, "stride", 1)
    top, bottom, left, right = padding4(padding)
    pads = ((0, 0), (top, bottom), (left, right), (0, 0))
    xp = np.pad(x.astype(np.int64), pads)
    valid = np.pad(np.ones((1,) + x.shape[1:3] + (1,), np.int64), pads)
    if kh > xp.shape[1] or kw > xp.shape[2]:
        raise ValueError(f"kernel {(kh, kw)} is larger than the padded input {xp.shape[1:3]}")
    sums = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw].sum(axis=(-2, -1))
    counts = sliding_window_view(valid, (kh, kw), axis=(1, 2))[:, ::sh, ::sw].sum(axis=(-2, -1))
    if (counts == 0).any():
        raise ValueError("a pooling window lies entirely in the padding")
    return _clamp_act(_div_round_half_away(sums, counts), act_min, act_max)


def mean_hw_s8(x, input_zero_point, output_zero_point, multiplier, shift, rounding="double",
               keepdims=True):
    """TFLite int8 MEAN over H and W (reference_integer_ops::Mean, the 4-D path TFLite and
    TFLite Micro use), with (multiplier, shift) = QuantizeMultiplier(input_scale /
    output_scale)::

        acc = wrap32(sum_{h,w} (x - input_zero_point))
        acc = requantize(acc, multiplier, shift)
        acc = acc / (H*W) rounded half away from zero  ((acc +/- n/2) / n in C)
        y   = clamp(acc + output_zero_point, -128, 127)

    Returns (N, 1, 1, C), or (N, C) without ``keepdims``."""
    x = _int8(x, "x", 4)
    n, h, wd, c = x.shape
    acc = wrap32((x.astype(np.int64) - int(input_zero_point)).sum(axis=(1, 2)))
    acc = requantize(acc, multiplier, shift, rounding)
    acc = _div_round_half_away(acc, h * wd)
    y = _clamp_act(wrap32(acc + int(output_zero_point)), INT8_MIN, INT8_MAX)
    return y.reshape(n, 1, 1, c) if keepdims else y


def clamp_s8(x, act_min=INT8_MIN, act_max=INT8_MAX):
    """int8 ReLU/ReLU6/clamp: the activation bounds are already in the quantized domain."""
    return _clamp_act(_int8(x, "x"), act_min, act_max)


def add_s8(x1, x2, input1_offset, input1_multiplier, input1_shift, input2_offset,
           input2_multiplier, input2_shift, left_shift, output_offset, output_multiplier,
           output_shift, act_min=INT8_MIN, act_max=INT8_MAX, rounding="double"):
    """TFLite int8 ADD / arm_elementwise_add_s8 (``add_s8_params`` computes the arguments)::

        a = requantize((x1 + input1_offset) << left_shift, input1_multiplier, input1_shift)
        b = requantize((x2 + input2_offset) << left_shift, input2_multiplier, input2_shift)
        y = clamp(requantize(wrap32(a + b), output_multiplier, output_shift) + output_offset)

    Inputs broadcast as NumPy does (TFLite's BroadcastAdd; CMSIS-NN needs equal shapes)."""
    x1, x2 = np.broadcast_arrays(_int8(x1, "x1"), _int8(x2, "x2"))
    a = requantize(wrap32((x1.astype(np.int64) + int(input1_offset)) << int(left_shift)),
                   input1_multiplier, input1_shift, rounding)
    b = requantize(wrap32((x2.astype(np.int64) + int(input2_offset)) << int(left_shift)),
                   input2_multiplier, input2_shift, rounding)
    y = requantize(wrap32(a + b), output_multiplier, output_shift, rounding)
    return _clamp_act(wrap32(y + int(output_offset)), act_min, act_max)


# ---- helpers ------------------------------------------------------------------------------

def _int8(a, name, ndim=None):
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.size and (a.min() < INT8_MIN or a.max() > INT8_MAX):
        raise ValueError(f"{name} must hold int8 values")
    return a.astype(np.int8, copy=False)


def _along(param, ndim, axis, dtype, name):
    p = np.asarray(param, dtype=dtype)
    if axis is None:
        if p.ndim:
            raise ValueError(f"{name} must be a scalar for per-tensor quantization (give axis=)")
        return p
    shape = [1] * ndim
    shape[normalize_dim(axis, ndim, "axis")] = -1
    return p.reshape(shape)


def _windows(xs, kernel, stride, padding, dilation):
    """(N, OH, OW, C, KH, KW) windows of the zero-padded NHWC array ``xs``."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, pair(stride, "stride", 1), pair(dilation, "dilation", 1)
    top, bottom, left, right = padding4(padding)
    xp = np.pad(xs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eff_h > xp.shape[1] or eff_w > xp.shape[2]:
        raise ValueError(f"dilated kernel ({eff_h}, {eff_w}) is larger than the padded input "
                         f"{xp.shape[1:3]}")
    return sliding_window_view(xp, (eff_h, eff_w), axis=(1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]


def _add_bias(acc, bias, channels):
    if bias is None:
        return acc
    b = np.asarray(bias)
    if b.shape != (channels,) or b.dtype.kind not in "iu":
        raise ValueError(f"bias must be int32 of shape ({channels},), got {b.dtype} {b.shape}")
    return acc + b.astype(np.int64)


def _output_stage(acc, multipliers, shifts, output_offset, act_min, act_max, rounding, scales,
                  channels):
    acc = wrap32(acc)
    if rounding == "float32_rne":
        y = requantize(acc, rounding=rounding, scale=_per_channel(scales, channels, "scales"))
        y = y + int(output_offset)             # XNNPACK clamps in float: no int32 wrap here
    else:
        y = requantize(acc, _per_channel(multipliers, channels, "multipliers"),
                       _per_channel(shifts, channels, "shifts"), rounding)
        y = wrap32(y + int(output_offset))
    return _clamp_act(y, act_min, act_max)


def _per_channel(v, channels, name):
    if v is None:
        raise ValueError(f"{name} is required")
    a = np.asarray(v)
    if channels is not None and a.ndim and a.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), got {a.shape}")
    return a


def _clamp_act(y, act_min, act_max):
    lo, hi = int(act_min), int(act_max)
    if not INT8_MIN <= lo <= hi <= INT8_MAX:
        raise ValueError(f"need -128 <= act_min <= act_max <= 127, got {lo}, {hi}")
    return np.clip(y, lo, hi).astype(np.int8)


def _div_round_half_away(num, den):
    """C's ``num > 0 ? (num + den/2) / den : (num - den/2) / den`` (truncating division)."""
    num, den = np.asarray(num, np.int64), np.asarray(den, np.int64)
    half = den // 2
    return np.where(num > 0, (num + half) // den, -((half - num) // den))


# ---- TFLite model parameters (float scales, zero points, fused activation) ------------------
# A .tflite model stores float32 scales and zero points, not multipliers: the kernels derive
# their integer parameters in Prepare. These functions derive them the same way, so a case
# that holds the model's scales gives the golden op and the model the same numbers.

ACTIVATIONS = {"none": (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0),
               "relu_n1_to_1": (-1.0, 1.0)}


def activation_range_s8(activation, output_scale, output_zero_point, rounding="half_away"):
    """(act_min, act_max) of a fused activation on an int8 output. ``"half_away"`` is
    TFLite's CalculateActivationRangeQuantized: ``zero_point + std::round(limit /
    float32(scale))``, clamped to [-128, 127]. ``"half_even"`` is XNNPACK's: ``rint(limit /
    scale + zero_point)`` in float32 (xnn_qs8_quantize); the two differ only when
    ``limit / scale`` is an exact half (e.g. RELU6 with output scale 12)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    scale = _positive_scale(output_scale, "output_scale")
    zp = _zero_point(output_zero_point, "output_zero_point")

    def q(limit):
        if limit is None:
            return None
        v = np.float32(limit) / scale
        if rounding == "half_away":
            r = math.copysign(math.floor(abs(float(v)) + 0.5), float(v))
            return zp + int(r)
        if rounding == "half_even":
            return int(np.rint(np.float32(v + np.float32(zp))))
        raise ValueError(f"rounding must be 'half_away' or 'half_even', got {rounding!r}")
    lo, hi = (q(v) for v in ACTIVATIONS[activation])
    lo = INT8_MIN if lo is None else min(max(lo, INT8_MIN), INT8_MAX)
    hi = INT8_MAX if hi is None else min(max(hi, INT8_MIN), INT8_MAX)
    return lo, hi


def xnnpack_requantization_scales(input_scale, weight_scales, output_scale):
    """XNNPACK's per-channel fp32 requantization scale, ``input_scale * kernel_scale /
    output_scale`` evaluated in float32 (xnn_create_convolution2d_nhwc_qs8_qc8w)."""
    f32 = np.float32
    return (f32(input_scale) * np.atleast_1d(np.asarray(weight_scales, f32))) / f32(output_scale)


def conv_params(input_scale, input_zero_point, weight_scales, output_scale, output_zero_point,
                activation="none", rounding="double"):
    """The keyword arguments of ``conv2d_s8`` / ``depthwise_conv2d_s8`` for a TFLite int8
    model's quantization parameters (per-channel weight scales, weight zero points 0):
    offsets, TFLite's multipliers and shifts (``conv_multipliers``), the fused activation's
    bounds, and for ``rounding="float32_rne"`` XNNPACK's float32 scales and its bounds."""
    _positive_scale(input_scale, "input_scale")
    _positive_scale(output_scale, "output_scale")
    ws = np.atleast_1d(np.asarray(weight_scales, np.float64))
    if ws.ndim != 1 or not (np.isfinite(ws).all() and (ws > 0).all()):
        raise ValueError(f"weight_scales must be a 1-D array of positive finite floats, got {ws}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    mult, shifts = conv_multipliers(input_scale, ws, output_scale, rounding == "single")
    act_min, act_max = activation_range_s8(activation, output_scale, output_zero_point,
                                           "half_even" if rounding == "float32_rne" else "half_away")
    scales = (xnnpack_requantization_scales(input_scale, ws, output_scale)
              if rounding == "float32_rne" else None)
    return dict(input_offset=-_zero_point(input_zero_point, "input_zero_point"),
                output_offset=_zero_point(output_zero_point, "output_zero_point"),
                multipliers=mult, shifts=shifts, act_min=act_min, act_max=act_max,
                rounding=rounding, scales=scales)


def tflite_conv2d_s8(x, w, bias, input_scale, input_zero_point, weight_scales, output_scale,
                     output_zero_point, activation="none", stride=1, padding=0, dilation=1,
                     groups=1, rounding="double"):
    """A TFLite int8 CONV_2D as the model describes it (x NHWC, w OHWI, int32 bias at
    input_scale * weight_scales[o]): ``conv2d_s8`` with ``conv_params``."""
    _check_scales(weight_scales, np.shape(w)[0] if np.ndim(w) == 4 else None)
    return conv2d_s8(x, w, bias, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, **conv_params(input_scale, input_zero_point, weight_scales,
                                                  output_scale, output_zero_point, activation,
                                                  rounding))


def tflite_depthwise_conv2d_s8(x, w, bias, input_scale, input_zero_point, weight_scales,
                               output_scale, output_zero_point, activation="none", stride=1,
                               padding=0, dilation=1, depth_multiplier=None, rounding="double"):
    """A TFLite int8 DEPTHWISE_CONV_2D as the model describes it (w 1HW(C*M), per-channel
    scales along the last axis): ``depthwise_conv2d_s8`` with ``conv_params``."""
    _check_scales(weight_scales, np.shape(w)[3] if np.ndim(w) == 4 else None)
    return depthwise_conv2d_s8(x, w, bias, stride=stride, padding=padding, dilation=dilation,
                               depth_multiplier=depth_multiplier,
                               **conv_params(input_scale, input_zero_point, weight_scales,
                                             output_scale, output_zero_point, activation,
                                             rounding))


def tflite_fully_connected_s8(x, w, bias, input_scale, input_zero_point, weight_scale,
                              output_scale, output_zero_point, activation="none",
                              rounding="double"):
    """A TFLite int8 FULLY_CONNECTED (x (N, K), w (O, K) with one per-tensor scale and zero
    point 0, int32 bias at input_scale * weight_scale): ``fully_connected_s8`` with
    ``conv_params``."""
    p = conv_params(input_scale, input_zero_point, [weight_scale], output_scale,
                    output_zero_point, activation, rounding)
    scales = p.pop("scales")
    return fully_connected_s8(x, w, bias, p["input_offset"], p["output_offset"],
                              int(p["multipliers"][0]), int(p["shifts"][0]), p["act_min"],
                              p["act_max"], rounding=rounding,
                              scale=None if scales is None else scales[0])


def tflite_avgpool_s8(x, kernel, stride, padding=0, scale=1.0, zero_point=0, activation="none"):
    """A TFLite int8 AVERAGE_POOL_2D (input and output share ``scale`` and ``zero_point``, as
    TFLite requires): ``avgpool_s8`` clamped to the fused activation's bounds
    (``activation_range_s8``, TFLite's rounding)."""
    _positive_scale(scale, "scale")
    act_min, act_max = activation_range_s8(activation, scale, zero_point)
    return avgpool_s8(x, kernel, stride, padding, act_min, act_max)


def _check_scales(weight_scales, channels):
    if channels is not None and np.shape(np.atleast_1d(weight_scales)) != (channels,):
        raise ValueError(f"weight_scales must have one entry per output channel ({channels}), "
                         f"got shape {np.shape(weight_scales)}")


def _positive_scale(v, name):
    s = np.float32(v)
    if np.ndim(v) or not (np.isfinite(s) and s > 0):
        raise ValueError(f"{name} must be a positive finite float, got {v!r}")
    return s


def _zero_point(v, name):
    if np.ndim(v) or int(v) != v or not INT8_MIN <= int(v) <= INT8_MAX:
        raise ValueError(f"{name} must be an integer in [-128, 127], got {v!r}")
    return int(v)
