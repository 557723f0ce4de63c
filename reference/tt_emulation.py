"""EMULATION of Tenstorrent Tensix conv2d numerics in NumPy: not a golden op, not a measurement.

Nothing here has been compared with a Tenstorrent device. It composes what is documented or
measured about each step, so that the error a TT-NN conv may show at each (dtype, MathFidelity,
accumulation) setting can be estimated without hardware, and device results (once there are
any) can be checked against a model instead of a magic tolerance. Every name says "emulated".

Model (``emulated_conv2d``), following how TT-NN lowers a conv to a matmul
``[N*OH*OW, K] @ [K, O]`` with ``K = (kh, kw, c)`` (input channels innermost):

1. Stored formats (measured, ``reference.formats.round_to``): activations as a ``[N*H*W, C]``
   NHWC tensor in ``act_dtype`` (bfloat8_b blocks: 16 consecutive channels of one pixel);
   weights as the ``[K, O]`` matrix in ``weight_dtype`` (blocks: 16 consecutive output channels of
   one (kh, kw, c)); grouped convs use a block-diagonal ``[K, O]`` with zeros outside each group,
   so a depthwise weight shares its block only with zeros; bias as a ``[1, O]`` row in
   ``weight_dtype``. float32 operands enter the source registers as TF32 (low 13 mantissa bits
   dropped).
2. Operands: the weights are matmul in1, which the unpacker puts in SrcA; the activations are
   in0, in SrcB (the matrix unit computes ``Dst += SrcB @ SrcA``).
3. Fidelity (``ttnn.MathFidelity`` docstring; tt-isa-documentation, SrcASrcB.md): the multiplier
   takes 5 bits of SrcA (hidden bit + 4 mantissa bits) and 7 of SrcB (hidden + 6) per phase, the
   high bits being *truncated* (masked), not rounded:
       phase 0: A_hi x B_hi    phase 1: A_lo x B_hi    phase 2: A_hi x B_lo    phase 3: A_lo x B_lo
   LoFi runs phase 0, HiFi2 phases 0-1, HiFi3 0-2, HiFi4 0-3 (bfloat16 x bfloat16 exact).
4. One matrix-unit step multiplies 16 values of K. Per 16-wide chunk of K and per phase, the 16
   products are summed (emulated: exactly, then rounded once to float32) and added to Dst, which
   is rounded to bfloat16 (RNE) after every addition unless ``fp32_acc`` (fp32_dest_acc_en), when
   it is rounded to float32. Chunks run in K order, phases inside a chunk. Input channels are
   padded to a multiple of 16 per kernel tap, so a chunk never spans two taps.
5. Bias is added to Dst once (rounded likewise); the result is packed to ``output_dtype``
   (default ``act_dtype``) with the host packing rule (``round_to``).

Known gaps: the order of accumulation inside TT-NN's blocked matmul (act_block_w splits, L1
accumulation of partials through the packer), the hardware's bfloat16 rounding mode, packer
rounding, denormal flushing and NaN/Inf handling are all assumptions; so is any difference
between Wormhole and Blackhole.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._args import as_float64, pair, padding4
from .formats import round_to

FIDELITY_PHASES = {"LoFi": (0,), "HiFi2": (0, 1), "HiFi3": (0, 1, 2), "HiFi4": (0, 1, 2, 3)}
CHUNK = 16                                   # K values per matrix-unit step (one face width)
SRC_A_HIGH = np.uint32(0xFFF80000)           # sign, exponent, hidden bit, 4 mantissa bits
SRC_B_HIGH = np.uint32(0xFFFE0000)           # sign, exponent, hidden bit, 6 mantissa bits
TF32 = np.uint32(0xFFFFE000)                 # float32 in a source register: 10 mantissa bits
SRC_A_TF32 = np.uint32(0xFFFFC000)           # SrcA ignores the lowest TF32 mantissa bit


def emulated_source_operand(a, fmt: str, src: str) -> np.ndarray:
    """Values as they sit in SrcA/SrcB after unpacking a tensor stored in ``fmt`` (float32)."""
    a = np.asarray(a, np.float32)
    if fmt == "float32":
        mask = SRC_A_TF32 if src == "A" else TF32
        return (a.view(np.uint32) & mask).view(np.float32)
    return round_to(a, fmt)


def emulated_fidelity_part(a: np.ndarray, src: str, phase: int) -> np.ndarray:
    """The part of a source operand the multiplier sees in fidelity ``phase`` (float32, exact)."""
    a = np.asarray(a, np.float32)
    high_mask, phase_bit = (SRC_A_HIGH, 1) if src == "A" else (SRC_B_HIGH, 2)
    high = (a.view(np.uint32) & high_mask).view(np.float32)
    return high if (phase & phase_bit) == 0 else a - high


def emulated_dst_round(v: np.ndarray, fp32_acc: bool) -> np.ndarray:
    """Dst after a write: float32, or bfloat16 (16-bit Dst), as float64 values."""
    v32 = np.asarray(v, np.float64).astype(np.float32)
    return (v32 if fp32_acc else round_to(v32, "bfloat16")).astype(np.float64)


def emulated_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *,
                    act_dtype="bfloat16", weight_dtype="bfloat16", output_dtype=None,
                    fidelity="HiFi4", fp32_acc=False) -> np.ndarray:
    """EMULATED TT-NN conv2d (see the module docstring): NCHW x, OIHW w; float64 NCHW values
    that the emulated device would return. Arguments as ``reference.conv2d``."""
    if fidelity not in FIDELITY_PHASES:
        raise ValueError(f"fidelity must be one of {sorted(FIDELITY_PHASES)}, got {fidelity!r}")
    x = as_float64(x, "input", 4)
    w = as_float64(w, "weight", 4)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    groups = int(groups)
    if cg * groups != c or o % groups:
        raise ValueError(f"groups={groups} does not fit input channels {c} and weight {w.shape}")
    (sh, sw), (dh, dw) = pair(stride, "stride", 1), pair(dilation, "dilation", 1)
    top, bottom, left, right = padding4(padding)
    phases = FIDELITY_PHASES[fidelity]

    # 1. stored formats, 2. source registers
    x_rows = x.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float32)
    xq = emulated_source_operand(x_rows, act_dtype, "B").reshape(n, h, wd, c)
    taps = kh * kw
    w_full = np.zeros((taps, c, o), np.float32)            # [K, O] as (tap, c, o), block-diagonal
    og = o // groups
    for g in range(groups):
        block = w[g * og:(g + 1) * og].reshape(og, cg, taps).transpose(2, 1, 0)   # tap, c, o
        w_full[:, g * cg:(g + 1) * cg, g * og:(g + 1) * og] = block
    wq = emulated_source_operand(w_full.reshape(taps * c, o), weight_dtype, "A").reshape(taps, c, o)

    # im2col: (M, tap, c), zero padding applied to the stored activations
    xp = np.pad(xq, ((0, 0), (top, bottom), (left, right), (0, 0)))
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(1, 2))
    win = win[:, ::sh, ::sw, :, ::dh, ::dw]                 # N, OH, OW, C, KH, KW
    oh, ow = win.shape[1:3]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, taps, c)

    # 3.-4. fidelity phases and Dst accumulation, chunk by chunk in K order
    dst = np.zeros((n * oh * ow, o))
    if cg == 1 and groups == c:
        dst = _emulated_depthwise_accumulate(dst, cols, wq, og, phases, fp32_acc)
    else:
        for t in range(taps):
            for c0 in range(0, c, CHUNK):
                a = wq[t, c0:c0 + CHUNK]                     # (<=16, O)  SrcA
                bm = cols[:, t, c0:c0 + CHUNK]               # (M, <=16)  SrcB
                if not a.any():
                    continue                                 # all-zero weights: adds exact zeros
                for p in phases:
                    part = (emulated_fidelity_part(bm, "B", p).astype(np.float64)
                            @ emulated_fidelity_part(a, "A", p).astype(np.float64))
                    dst = emulated_dst_round(dst + part.astype(np.float32), fp32_acc)

    # 5. bias, output packing
    if b is not None:
        bq = round_to(np.asarray(b, np.float32).reshape(1, o), weight_dtype).astype(np.float64)
        dst = emulated_dst_round(dst + bq, fp32_acc)
    y = round_to(dst.astype(np.float32), output_dtype or act_dtype)
    return y.astype(np.float64).reshape(n, oh, ow, o).transpose(0, 3, 1, 2)


def _emulated_depthwise_accumulate(dst, cols, wq, mult, phases, fp32_acc):
    """Depthwise: output channel j reads input channel j // mult, so each 16-wide K chunk holds
    exactly one of its products: per tap, one product per output channel goes into Dst."""
    taps, c, o = wq.shape
    src = np.arange(o) // mult                                # input channel of each output
    w_taps = wq[:, src, np.arange(o)]                          # (tap, O): the nonzero weights
    for t in range(taps):
        xb = cols[:, t, src]                                   # (M, O)
        for p in phases:
            part = (emulated_fidelity_part(xb, "B", p).astype(np.float64)
                    * emulated_fidelity_part(w_taps[t], "A", p).astype(np.float64))
            dst = emulated_dst_round(dst + part, fp32_acc)
    return dst


def emulated_mean(x, dim=None, keepdim=False, *, act_dtype="bfloat16", output_dtype=None,
                  fidelity="HiFi4", fp32_acc=False) -> np.ndarray:
    """EMULATED TT-NN mean (arguments as ``reference.mean``), a further assumption on top of the
    module docstring: the input is stored in ``act_dtype`` as given (blocks along its last dim);
    the reduction multiplies every value by a scaler 1/k packed as bfloat16 (x in SrcA, scaler
    in SrcB) in 16-value matrix-unit steps with the fidelity phases of step 3 and Dst
    accumulation of step 4, in row-major order of the reduced dims; the result is packed to
    ``output_dtype`` (default ``act_dtype``) in its own shape. float64 values."""
    if fidelity not in FIDELITY_PHASES:
        raise ValueError(f"fidelity must be one of {sorted(FIDELITY_PHASES)}, got {fidelity!r}")
    x = np.asarray(x, np.float64)
    xq = round_to(x.astype(np.float32), act_dtype).astype(np.float64)
    if x.ndim == 0:
        axes = ()
    elif dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        axes = tuple(range(x.ndim))
    else:
        axes = tuple(int(d) % x.ndim for d in ((dim,) if np.ndim(dim) == 0 else dim))
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(xq, kept + list(axes))
    k = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) if axes else 1
    rows = moved.reshape(-1, k).astype(np.float32)
    scaler = round_to(np.float32(1.0 / k), "bfloat16")
    dst = np.zeros(rows.shape[0])
    for c0 in range(0, k, CHUNK):
        chunk = rows[:, c0:c0 + CHUNK]
        for p in FIDELITY_PHASES[fidelity]:
            part = (emulated_fidelity_part(chunk, "A", p).astype(np.float64)
                    * float(emulated_fidelity_part(scaler, "B", p))).sum(axis=1)
            dst = emulated_dst_round(dst + part.astype(np.float32), fp32_acc)
    out_shape = np.mean(np.zeros(x.shape), axis=axes, keepdims=bool(keepdim)).shape if axes else x.shape
    y = round_to(dst.astype(np.float32).reshape(out_shape), output_dtype or act_dtype)
    return y.astype(np.float64)


def emulated_conv2d_batch_norm(x, w, running_mean, running_var, b=None, weight=None, bias=None,
                               stride=1, padding=0, dilation=1, groups=1, eps=1e-5, *,
                               act_dtype="bfloat16", weight_dtype=None, fidelity="HiFi4",
                               fp32_acc=False) -> np.ndarray:
    """EMULATED conv + batch norm as adapters/ttnn.py runs it: ``emulated_conv2d`` packed to
    ``act_dtype``, then per-channel device elementwise ops ((y - mean) * scale) + bias, each
    result written to Dst (rounded as in step 4) and packed to ``act_dtype`` ([N*OH*OW, O] rows:
    blocks along channels); mean, scale (weight / sqrt(var + eps), float64 on the host) and bias
    are [1, O] rows in ``act_dtype``; the multiply runs at ``fidelity`` (an assumption: the
    adapter passes ttnn.multiply no compute config). Arguments as ``reference.conv2d_batch_norm``."""
    weight_dtype = weight_dtype or act_dtype
    y = emulated_conv2d(x, w, b, stride, padding, dilation, groups, act_dtype=act_dtype,
                        weight_dtype=weight_dtype, fidelity=fidelity, fp32_acc=fp32_acc)
    n, o, oh, ow = y.shape
    rows = y.transpose(0, 2, 3, 1).reshape(-1, o)
    gamma = np.ones(o) if weight is None else np.asarray(weight, np.float64)
    beta = np.zeros(o) if bias is None else np.asarray(bias, np.float64)
    scale = gamma / np.sqrt(np.asarray(running_var, np.float64) + float(eps))

    def row(v):
        return round_to(np.asarray(v, np.float32).reshape(1, o), act_dtype).astype(np.float64)

    def pack(v):
        return round_to(emulated_dst_round(v, fp32_acc).astype(np.float32), act_dtype).astype(np.float64)

    t = pack(rows - row(running_mean))
    phases = FIDELITY_PHASES[fidelity]
    s = row(scale)
    prod = sum(emulated_fidelity_part(t.astype(np.float32), "B", p).astype(np.float64)
               * emulated_fidelity_part(s.astype(np.float32), "A", p).astype(np.float64) for p in phases)
    t = pack(prod)
    t = pack(t + row(beta))
    return t.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
