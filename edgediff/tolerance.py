"""Tolerances are an error model, not magic numbers.

For every element the bound is what a *correct* implementation in the
backend's arithmetic may be off by, derived from the classic forward error
bound of a sum of products (Higham, "Accuracy and Stability of Numerical
Algorithms", ch. 3): with unit roundoff ``u`` and ``k`` terms,

    |computed - exact| <= gamma_k * sum_i |a_i * b_i|,   gamma_k = k*u / (1 - k*u)

The magnitude ``sum |a_i b_i|`` comes from the golden op itself, applied to
``|x|`` and ``|w|``. Inputs rounded to a narrower format first (F16 kernels)
add ``2 * u_in`` per product. The result is rounded once more to the output
format. A floor of ``k * 2**-126`` per element absorbs flush-to-zero of
subnormal products. Elementwise and layout ops (clamp, view, permute) are
exact in any format that holds their inputs.

Findings report ``error / bound`` per element: below 1 is a rounding
difference a correct backend may make, far above 1 is a wrong value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}
FLUSH_FLOOR = 2.0 ** -126
# Tenstorrent (TT-NN device paths), see "Tensix" at the end of this module
BLOCK_BITS = {"bfloat8_b": 7, "bfloat4_b": 3}     # magnitude bits per value, hidden bit included
BLOCK = 16                                         # values sharing one exponent (reference.formats)
FIDELITY_PHASES = {"LoFi": 1, "HiFi2": 2, "HiFi3": 3, "HiFi4": 4}
ACCUMULATION_BOUNDS = ("worst_case", "probabilistic")


@dataclass(frozen=True)
class Arithmetic:
    """How a backend path computes: the format inputs are rounded to, accumulation, output."""
    inputs: str = "float32"
    accumulate: str = "float32"
    output: str = "float32"
    # Float-in/float-out ops whose arithmetic inside is int8 (``quantized_conv_bound``):
    # "int8_per_tensor" or "int8_per_channel" (the weights' scales); None for float paths.
    quantization: str | None = None
    # Tenstorrent paths (see "Tensix" below): the MathFidelity of the multiplier (None: exact
    # products), and how the accumulation error is bounded ("worst_case" gamma_m, or
    # "probabilistic": lambda * sqrt(m) * u, for bfloat16 accumulators where gamma_m is useless).
    fidelity: str | None = None
    accumulation_bound: str = "worst_case"

    def __post_init__(self):
        if self.fidelity is not None and self.fidelity not in FIDELITY_PHASES:
            raise ValueError(f"unknown math fidelity {self.fidelity!r}; known: {list(FIDELITY_PHASES)}")
        if self.accumulation_bound not in ACCUMULATION_BOUNDS:
            raise ValueError(f"unknown accumulation_bound {self.accumulation_bound!r}; "
                             f"known: {ACCUMULATION_BOUNDS}")

    def u(self, which: str) -> float:
        """Unit roundoff of a format; for block formats it is relative to the block's max |value|."""
        fmt = getattr(self, which)
        if fmt in BLOCK_BITS:
            return block_unit_roundoff(fmt)
        if fmt not in UNIT_ROUNDOFF:
            raise ValueError(f"unknown number format {fmt!r} for {which}; "
                             f"known: {sorted(UNIT_ROUNDOFF) + sorted(BLOCK_BITS)}")
        return UNIT_ROUNDOFF[fmt]

    def is_block(self, which: str) -> bool:
        return getattr(self, which) in BLOCK_BITS

    @property
    def tensix(self) -> bool:
        """True when the Tensix model applies: block-format inputs or a declared math fidelity."""
        return self.fidelity is not None or self.is_block("inputs") or self.is_block("output")

    def u_inputs(self, case_dtype: str = "float32") -> float:
        """Rounding of the case's inputs: none when the path's format holds them exactly."""
        if self.is_block("inputs"):
            raise ValueError(f"inputs {self.inputs!r} is a block format: its error is relative to "
                             "block maxima, not to each value; use the tensix_* bounds")
        if self.inputs == case_dtype or UNIT_ROUNDOFF[self.inputs] < UNIT_ROUNDOFF.get(case_dtype, 1):
            return 0.0
        return self.u("inputs")


FLOAT32 = Arithmetic()


def gamma(k, u: float):
    ku = np.asarray(k, dtype=np.float64) * u
    return np.where(ku < 0.5, ku / (1.0 - np.minimum(ku, 0.5)), np.inf)


def sum_of_products_bound(magnitude, expected, k, arith: Arithmetic, case_dtype="float32"):
    """Bound for results that are sums of ``k`` products (conv, matmul), plus an output rounding."""
    u_in = arith.u_inputs(case_dtype)
    rel = 2.0 * u_in + gamma(k + 1, arith.u("accumulate"))
    return rel * magnitude + arith.u("output") * np.abs(expected) + k * FLUSH_FLOOR


def exact_bound(expected, arith: Arithmetic, case_dtype="float32"):
    """Ops that only move or select values: exact up to rounding the inputs into the format."""
    u = max(arith.u_inputs(case_dtype), 0.0)
    return u * np.abs(expected)


# ---- int8 inside a float op (ExecuTorch's pt2e flow) ---------------------------------------------

QUANTIZATIONS = ("int8_per_tensor", "int8_per_channel")
OBSERVER_EPS = 2.0 ** -12            # the eps of XNNPACKQuantizer's observers: smallest scale


def affine_int8_scale(a, eps: float = OBSERVER_EPS) -> float:
    """Scale of an int8 [-128, 127] per-tensor affine quantization calibrated on the min and
    max of ``a`` (range widened to include 0), as a min/max observer computes it."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
    return max((hi - lo) / 255.0, eps)


def symmetric_int8_scales(w, per_channel: bool, eps: float = OBSERVER_EPS) -> np.ndarray:
    """Scales of a symmetric int8 [-127, 127] weight quantization: max |w| / 127, over the
    whole tensor or per output channel (axis 0). Returns one scale per output channel."""
    w = np.abs(np.asarray(w, dtype=np.float64))
    if per_channel:
        absmax = w.reshape(w.shape[0], -1).max(axis=1)
    else:
        absmax = np.full(w.shape[0], w.max())
    return np.maximum(absmax / 127.0, eps)


def quantized_conv_bound(conv, x, w, b, params: dict, expected, quantization: str,
                         lsb_slack: float = 1.0):
    """Error bound of a float conv computed in int8, against the exact float result.

    Model (every scale derived from the case, as a min/max calibration on the case's own
    input and output gives it): ``x`` is quantized per tensor with step ``s_x``, the weights
    ``w`` symmetrically with step ``s_w[o]`` (per tensor or per output channel), the bias to
    int32 at ``s_x * s_w[o]``; the int32 sum is exact; the result is requantized to the output
    step ``s_y``. A correct implementation is then off by at most

        s_x/2 * conv(1, |w|) + s_w/2 * conv(|x| + s_x/2, 1) + s_x*s_w/2      (operands)
      + s_y / 2                                                             (requantize)
      + lsb_slack * s_y        (the kernel's rounding of the rescale may differ by 1 LSB)

    plus float32 roundings (a backend that runs the conv in float on dequantized values, the
    final dequantize, and scales the backend computed from float32 min/max where this model
    uses the float64 golden's: ``256 * s_y`` below covers any output code). ``conv(x, w, b, **params)`` is the golden op; padding contributes
    nothing (zero is exact in every affine quantization whose range contains 0).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    s_x = affine_int8_scale(x)
    s_w = symmetric_int8_scales(w, quantization == "int8_per_channel")
    s_y = affine_int8_scale(expected)
    per_o = s_w.reshape(-1, *([1] * (w.ndim - 1)))
    from_x = conv(np.ones_like(x), np.abs(w), None, **params) * (s_x / 2)
    from_w = conv(np.abs(x) + s_x / 2, per_o / 2 * np.ones_like(w), None, **params)
    bshape = (1, -1) + (1,) * (np.ndim(expected) - 2)
    from_b = (s_x * s_w / 2).reshape(bshape) if b is not None else 0.0
    k = w.shape[1] * w.shape[2] * w.shape[3]
    magnitude = conv(np.abs(x) + s_x, np.abs(w) + per_o, None if b is None else np.abs(b), **params)
    float32 = gamma(k + 2, UNIT_ROUNDOFF["float32"]) * magnitude \
        + UNIT_ROUNDOFF["float32"] * (np.abs(expected) + 256 * s_y)
    return from_x + from_w + from_b + (0.5 + lsb_slack) * s_y + float32


# ---- Tensix: TT-NN device paths (block formats, math fidelity, bfloat16 Dst) -------------------
#
# The model a correct Tenstorrent implementation is held to. reference/tt_emulation.py is one
# such implementation (an EMULATION, never measured on a card); tests/test_tt_tolerance.py checks
# that it stays inside these bounds. Per sum of products y = sum_i x_i w_i (+ b):
#
# 1. Inputs. bfloat16: |x^ - x| <= u|x| per value. Block formats (bfloat8_b, bfloat4_b; 16
#    consecutive values of a row share an exponent, reference.formats): |x^ - x| <= u_b * xb with
#    u_b = 2**-P + 2**-23 and xb the max |x| of x's block. Per product
#    |x^ w^ - x w| <= u_b (xb|w| + |x|wb) + u_b^2 xb wb, summed by the golden op itself applied to
#    the block-max arrays (xb, wb) in place of |x|, |w|. Where the blocks lie is TT-NN's layout:
#    conv activations are [N*H*W, C] rows (16 channels of one pixel), weights the [K, O] matrix
#    (16 output channels of one (tap, c); block-diagonal over groups), bias and per-channel rows
#    [1, O], conv outputs [N*H*W, O]; other ops block along their last dim.
# 2. Fidelity. The multiplier sees truncated operands (ttnn 0.81.1's MathFidelity docstring, as
#    in reference/tt_emulation.py): SrcA (weights) top 5 bits and SrcB (activations) top 7 bits, hidden bit
#    included, per phase; HiFi2 adds SrcA's next 4 bits, HiFi3 adds SrcB's next 6 bits times
#    SrcA's top 5, HiFi4 all four phases. Truncating a p-bit significand to q bits loses less
#    than 2**(1-q) (1 - 2**(q-p)) of it, so each product has a relative error <= delta(fidelity).
# 3. Accumulation. The matrix unit sums 16 products per step (input channels padded to 16 per
#    kernel tap: an assumption shared with the emulation); each step and phase is added to Dst,
#    rounded to bfloat16 (fp32_dest_acc_en=False) or float32: m = chunks * phases (+1 for bias)
#    roundings, each <= u_acc |running sum| <= u_acc * T with T the sum of |terms|.
#    "worst_case": gamma(m, u_acc) T (Higham, Thm 3.1 style). It is useless for bfloat16 Dst
#    (gamma(240, 2**-8) = 15: a 960-channel 1x1 conv at HiFi4), hence "probabilistic": the
#    roundings are assumed independent and mean-zero (round to nearest even), and by
#    Hoeffding/Azuma |sum_i delta_i S_i| <= lambda u sqrt(sum S_i^2) <= lambda u sqrt(m) T except
#    with probability 2 exp(-lambda^2 / 2) (Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019);
#    lambda = PROBABILISTIC_LAMBDA, capped by gamma(m, u) (which always holds). Not a guarantee:
#    under the model a correct device exceeds it with that probability per element, and
#    systematic (stagnating) roundings would break the model.
# 4. Output. Packing to bfloat16 adds u |y|, to a block format u_b * (max |y| of y's block).
# mean is a sum of k products x_i * s with s = 1/k packed as bfloat16; conv + BN is the conv bound
# carried through the adapter's three device elementwise ops (tensix_conv_batch_norm_bound).

PROBABILISTIC_LAMBDA = 6.0         # 2 exp(-18) = 3e-8 per element under the model
OPERAND_BITS = {"bfloat16": 8, "bfloat8_b": 7, "bfloat4_b": 3}   # significant bits in Src registers
SRC_A_BITS, SRC_B_BITS = (5, 4), (7, 6)   # (phase-0 bits, extra bits of the low phase) per operand
U_FLOAT32 = 2.0 ** -24


def block_unit_roundoff(fmt: str) -> float:
    """Rounding of a block format relative to its block's max |value| (reference.formats: round
    to a P-bit grid after the truncating alignment, which adds at most 2**-23; saturation stays
    within this too)."""
    return 2.0 ** -BLOCK_BITS[fmt] + 2.0 ** -23


def block_max(a, axis: int = -1) -> np.ndarray:
    """max |a| over each value's block: runs of 16 values along ``axis`` from index 0 (the tile
    zero padding of reference.formats never raises a maximum). float64, a's shape."""
    a = np.abs(np.asarray(a, np.float64))
    if a.ndim == 0 or a.shape[axis] == 0:
        return a.copy()
    starts = np.arange(0, a.shape[axis], BLOCK)
    m = np.maximum.reduceat(a, starts, axis=axis)
    return np.repeat(m, np.diff(np.r_[starts, a.shape[axis]]), axis=axis)


def conv_weight_block_max(w, groups: int) -> np.ndarray:
    """max |w| per block as TT-NN stores conv weights: the [K, O] matrix (K = tap, input channel),
    blocks of 16 consecutive output channels of one K row; grouped convs fill it block-diagonally,
    so a block mixes only output channels of one group (the rest of the row is zeros)."""
    w = np.abs(np.asarray(w, np.float64))
    o = w.shape[0]
    og = max(1, o // max(1, int(groups)))
    idx = np.arange(o)
    key = (idx // BLOCK) * (o + 1) + idx // og
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    m = np.maximum.reduceat(w, starts, axis=0)
    return np.repeat(m, np.diff(np.r_[starts, o]), axis=0)


def _truncation(bits: int, kept: int) -> float:
    """Relative error bound of truncating a ``bits``-bit significand to ``kept`` bits."""
    return 0.0 if bits <= kept else 2.0 ** (1 - kept) * (1.0 - 2.0 ** (kept - bits))


def fidelity_product_error(fidelity: str | None, a_format: str, b_format: str) -> float:
    """Relative error of one product a*b computed at ``fidelity`` (a in SrcA, b in SrcB).

    With A = A_hi + A_lo (A_hi: top 5 bits), B = B_hi + B_lo (B_hi: top 7 bits):
    LoFi A_hi B_hi, HiFi2 + A_lo B_hi (= A B_hi), HiFi3 + A_hi B_lo (= AB - A_lo B_lo), HiFi4 AB.
    A_lo holds 4 more bits and B_lo 6 more; operands with fewer bits are exact in fewer phases."""
    if fidelity is None:
        return 0.0
    if fidelity not in FIDELITY_PHASES:
        raise ValueError(f"unknown math fidelity {fidelity!r}; known: {list(FIDELITY_PHASES)}")
    try:
        pa, pb = OPERAND_BITS[a_format], OPERAND_BITS[b_format]
    except KeyError as exc:
        raise ValueError(f"the fidelity model covers operands in {sorted(OPERAND_BITS)}, "
                         f"not {exc.args[0]!r}") from None
    a_hi, a_lo = _truncation(pa, SRC_A_BITS[0]), _truncation(pa, sum(SRC_A_BITS))
    b_hi, b_lo = _truncation(pb, SRC_B_BITS[0]), _truncation(pb, sum(SRC_B_BITS))
    return {"LoFi": a_hi + b_hi,
            "HiFi2": a_lo + b_hi,
            "HiFi3": a_lo + b_lo + a_hi * b_hi,
            "HiFi4": a_lo + b_lo}[fidelity]


def accumulation_error(m, u: float, mode: str = "worst_case"):
    """Relative error (times the sum of |terms|) of ``m`` roundings of a running sum."""
    if mode == "worst_case":
        return gamma(m, u)
    if mode == "probabilistic":      # never above the worst case, which always holds
        m = np.asarray(m, np.float64)
        likely = np.expm1(PROBABILISTIC_LAMBDA * np.sqrt(m) * u + m * u * u / (1.0 - u))
        return np.minimum(likely, gamma(m, u))
    raise ValueError(f"unknown accumulation_bound {mode!r}; known: {ACCUMULATION_BOUNDS}")


def _phases(arith: Arithmetic) -> int:
    return FIDELITY_PHASES.get(arith.fidelity, 1) if arith.fidelity else 1


def _input_error(a, arith: Arithmetic, case_dtype: str, block_max_of):
    """Per-value bound of rounding ``a`` into the path's input format."""
    if arith.is_block("inputs"):
        return arith.u("inputs") * block_max_of(a)
    return arith.u_inputs(case_dtype) * np.abs(np.asarray(a, np.float64))


def _output_error(magnitude, arith: Arithmetic, axis: int):
    """Bound of packing values of |.| <= magnitude to the output format (blocks along ``axis``)."""
    if arith.is_block("output"):
        return arith.u("output") * block_max(magnitude, axis)
    return arith.u("output") * magnitude


def conv_dst_additions(x_channels: int, w_shape, groups: int) -> int:
    """Dst additions (16-product matrix-unit steps with a nonzero weight) per output, one phase.
    Input channels are padded to a multiple of 16 per kernel tap; a grouped conv's chunk may
    straddle a group boundary, a depthwise output has one product per tap."""
    o, cg, kh, kw = w_shape
    taps = kh * kw
    if groups == 1:
        return taps * -(-cg // BLOCK)
    if cg == 1:
        return taps
    return taps * min(-(-x_channels // BLOCK), -(-cg // BLOCK) + 1)


def tensix_conv_bound(golden, inputs: dict, params: dict, expected, arith: Arithmetic,
                      case_dtype: str = "float32", groups: int = 1, chunk_axis: int = 1):
    """Per-element bound for a TT-NN conv (NCHW golden ``golden(x=, w=, b=, **params)``)."""
    x = np.asarray(inputs["x"], np.float64)
    w = np.asarray(inputs["w"], np.float64)
    b = inputs.get("b")
    ax, aw = np.abs(x), np.abs(w)
    magnitude = golden(x=ax, w=aw, **params)
    if arith.is_block("inputs"):
        u_b = arith.u("inputs")
        xb, wb = block_max(ax, axis=1), conv_weight_block_max(aw, groups)
        e_products = (u_b * (golden(x=xb, w=aw, **params) + golden(x=ax, w=wb, **params))
                      + u_b * u_b * golden(x=xb, w=wb, **params))
    else:
        u_in = arith.u_inputs(case_dtype)
        e_products = (2.0 * u_in + u_in * u_in) * magnitude
    rounded = magnitude + e_products                       # >= sum |x^ w^|
    fmt = arith.inputs                   # fidelity_product_error rejects unmodelled formats
    delta = fidelity_product_error(arith.fidelity, fmt, fmt)
    phases = _phases(arith)
    e_products = e_products + delta * rounded + 2 * phases * U_FLOAT32 * rounded   # + chunk sums
    terms = rounded * (1.0 + delta)
    m = conv_dst_additions(x.shape[1], w.shape, groups) * phases
    if b is not None:
        b = np.asarray(b, np.float64)
        eb = _input_error(b, arith, case_dtype, lambda a: block_max(a, axis=0)).reshape(1, -1, 1, 1)
        terms = terms + np.abs(b).reshape(1, -1, 1, 1) + eb
        e_products = e_products + eb
        m += 1
    before_output = e_products + accumulation_error(m, arith.u("accumulate"), arith.accumulation_bound) * terms
    out = _output_error(np.abs(expected) + before_output, arith, axis=chunk_axis)
    k = w.shape[1] * w.shape[2] * w.shape[3]
    return before_output + out + k * FLUSH_FLOOR


def tensix_mean_bound(golden_mean, x, params: dict, expected, arith: Arithmetic,
                      case_dtype: str = "float32"):
    """Per-element bound for a TT-NN mean: a sum of k products x_i * s, s = 1/k packed as bfloat16
    (one more rounding of u_bf16), x blocked along its last dim, the output along its last dim."""
    x = np.asarray(x, np.float64)
    ax = np.abs(x)
    expected = np.asarray(expected, np.float64)
    k = max(1, x.size // max(1, expected.size))
    ex = _input_error(x, arith, case_dtype, lambda a: block_max(a, axis=-1))
    magnitude = golden_mean(ax, **params)
    u_s = UNIT_ROUNDOFF["bfloat16"]
    e_products = golden_mean(ex, **params) + u_s * (magnitude + golden_mean(ex, **params))
    rounded = magnitude + e_products
    fmt = arith.inputs                   # fidelity_product_error rejects unmodelled formats
    # which of x and the scaler sits in SrcA is not documented: take the worse assignment
    delta = max(fidelity_product_error(arith.fidelity, fmt, "bfloat16"),
                fidelity_product_error(arith.fidelity, "bfloat16", fmt))
    phases = _phases(arith)
    e_products = e_products + delta * rounded + 2 * phases * U_FLOAT32 * rounded
    m = -(-k // BLOCK) * phases
    before_output = e_products + accumulation_error(m, arith.u("accumulate"),
                                                    arith.accumulation_bound) * rounded * (1 + delta)
    return before_output + _output_error(np.abs(expected) + before_output, arith, axis=-1)


def tensix_conv_batch_norm_bound(golden_conv, inputs: dict, params: dict, expected,
                                 arith: Arithmetic, case_dtype: str = "float32", groups: int = 1):
    """TT-NN conv + BN as the adapter runs it: the conv (packed to the output format), then
    per-channel device elementwise ops ((y - mean) * scale) + bias, each packed again, rows in the
    input format, the multiply at the path's fidelity (the adapter passes no compute config to
    ``ttnn.multiply``: its fidelity is an assumption)."""
    conv_params = {k: v for k, v in params.items() if k != "eps"}
    conv_inputs = {k: inputs[k] for k in ("x", "w", "b") if k in inputs}
    conv = golden_conv(**conv_inputs, **conv_params)
    e = tensix_conv_bound(golden_conv, conv_inputs, conv_params, conv, arith, case_dtype, groups)
    o = inputs["w"].shape[0]
    row = (1, -1, 1, 1)

    def rounded_row(v):
        v = np.asarray(v, np.float64).reshape(-1)
        return (np.abs(v).reshape(row),
                _input_error(v, arith, case_dtype, lambda a: block_max(a, axis=0)).reshape(row))

    weight = np.asarray(inputs.get("weight", np.ones(o)), np.float64)
    scale = weight / np.sqrt(np.asarray(inputs["running_var"], np.float64) + params["eps"])
    mean_abs, e_mean = rounded_row(inputs["running_mean"])
    scale_abs, e_scale = rounded_row(scale)
    bias_abs, e_bias = rounded_row(inputs.get("bias", np.zeros(o)))
    u_acc = arith.u("accumulate")
    fmt = arith.inputs                   # fidelity_product_error rejects unmodelled formats
    delta = fidelity_product_error(arith.fidelity, fmt, fmt)
    # y - mean
    t1 = np.abs(conv) + e + mean_abs + e_mean
    e = e + e_mean + u_acc * t1
    e = e + _output_error(t1, arith, axis=1)
    t1 = np.abs(conv) + mean_abs + e
    # * scale
    t2 = t1 * (scale_abs + e_scale) * (1.0 + delta)
    e = e * (scale_abs + e_scale) + (np.abs(conv) + mean_abs) * e_scale + delta * t2 + u_acc * t2
    e = e + _output_error(t2, arith, axis=1)
    # + bias
    t3 = (np.abs(conv) + mean_abs) * scale_abs + e + bias_abs + e_bias
    e = e + e_bias + u_acc * t3
    return e + _output_error(t3, arith, axis=1)


def tensix_exact_bound(op: str, golden, inputs: dict, params: dict, expected, arith: Arithmetic,
                       case_dtype: str = "float32"):
    """clamp / view / permute on block-format tensors: each value is rounded into its input block,
    moved (or clamped: 1-Lipschitz) unchanged, then packed again into the output's blocks."""
    x = np.asarray(inputs["x"], np.float64)
    e_in = _input_error(x, arith, case_dtype, lambda a: block_max(a, axis=-1))
    moved = e_in if op == "clamp" else np.asarray(golden(x=e_in, **params), np.float64)
    return moved + _output_error(np.abs(np.asarray(expected, np.float64)) + moved, arith, axis=-1)
