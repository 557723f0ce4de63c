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


@dataclass(frozen=True)
class Arithmetic:
    """How a backend path computes: the format inputs are rounded to, accumulation, output."""
    inputs: str = "float32"
    accumulate: str = "float32"
    output: str = "float32"
    # Float-in/float-out ops whose arithmetic inside is int8 (``quantized_conv_bound``):
    # "int8_per_tensor" or "int8_per_channel" (the weights' scales); None for float paths.
    quantization: str | None = None

    def u(self, which: str) -> float:
        fmt = getattr(self, which)
        if fmt not in UNIT_ROUNDOFF:
            raise ValueError(f"unknown number format {fmt!r} for {which}; known: {sorted(UNIT_ROUNDOFF)}")
        return UNIT_ROUNDOFF[fmt]

    def u_inputs(self, case_dtype: str = "float32") -> float:
        """Rounding of the case's inputs: none when the path's format holds them exactly."""
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
