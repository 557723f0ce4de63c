"""Planted int8 bugs in the requantization of an int8 conv (TFLite / CMSIS-NN / XNNPACK).

No int8 backend here lets a wrapper reach inside its output stage, so each mutant is built
from the golden pieces that are not under test: the exact int32 accumulators
(``reference.quant.conv2d_s8_acc``) and then an output stage with one bug. The correct
adapter they stand for is ``reference.quant.conv2d_s8`` with the named ``rounding``, which
LiteRT's reference kernels (``double``), CMSIS-NN (``single`` or ``double``) and XNNPACK
(``float32_rne``) match bit for bit.

A mutant: ``name``, ``bug``, ``trigger``, ``rounding`` (the golden mode it is judged
against) and ``conv2d_s8(case) -> int8 NHWC`` for a case from
``properties.strategies_int8.conv2d_cases``.
"""
from __future__ import annotations

import types

import numpy as np

from reference import quant


def _acc(case, input_offset=None):
    geometry = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    offset = case["input_offset"] if input_offset is None else input_offset
    return quant.wrap32(quant.conv2d_s8_acc(case["x"], case["w"], case["bias"], offset, **geometry))


def _finish(y, case, clamp=True):
    y = quant.wrap32(y + int(case["output_offset"]))
    lo, hi = (case["act_min"], case["act_max"]) if clamp else (quant.INT8_MIN, quant.INT8_MAX)
    return np.clip(y, lo, hi).astype(np.int8)


def scales(case) -> np.ndarray:
    """The float32 per-channel scales equal to the case's (multiplier, shift) pairs, as
    XNNPACK's float32 rescale takes them."""
    m = np.asarray(case["multipliers"], np.float64)
    s = np.asarray(case["shifts"], np.float64)
    return (m * 2.0 ** (s - 31)).astype(np.float32)


def _single_rounding(case):
    y = quant.requantize(_acc(case), case["multipliers"], case["shifts"], "single")
    return _finish(y, case)


def _shift_off_by_one(case):
    # The right shift is one too large (an off-by-one between "shift" and "exponent" conventions).
    shifts = np.maximum(np.asarray(case["shifts"]) - 1, -31)
    return _finish(quant.requantize(_acc(case), case["multipliers"], shifts, "double"), case)


def _rdbpot_half_even(case):
    # SaturatingRoundingDoublingHighMul as TFLite, then the final divide by 2^k rounding
    # half to even instead of half away from zero.
    acc = _acc(case)
    m = np.asarray(case["multipliers"], np.int64)
    s = np.asarray(case["shifts"], np.int64)
    x = quant.wrap32(acc << np.maximum(s, 0))
    high = (x * m + (1 << 30)) >> 31
    right = np.maximum(-s, 0)
    q, rem = high >> right, high & ((np.int64(1) << right) - 1)
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 1)
    up = (rem > half) | ((rem == half) & (right > 0) & (q & 1 == 1))
    return _finish(q + up, case)


def _float_half_away(case):
    # XNNPACK-style float32 rescale, rounded half away from zero instead of to even.
    v = _acc(case).astype(np.float32) * scales(case)
    y = np.trunc(v + np.copysign(np.float32(0.5), v)).astype(np.float64)
    y = np.clip(y, quant.INT32_MIN, quant.INT32_MAX).astype(np.int64)
    return np.clip(y + int(case["output_offset"]), case["act_min"], case["act_max"]).astype(np.int8)


def _activation_ignored(case):
    y = quant.requantize(_acc(case), case["multipliers"], case["shifts"], "double")
    return _finish(y, case, clamp=False)


def _input_offset_negated(case):
    y = quant.requantize(_acc(case, -int(case["input_offset"])), case["multipliers"],
                         case["shifts"], "double")
    return _finish(y, case)


def _mutant(name, bug, trigger, rounding, fn):
    return types.SimpleNamespace(name=f"mutant_{name}", bug=bug, trigger=trigger,
                                 rounding=rounding, conv2d_s8=fn, base="reference.quant",
                                 mutated_ops=("conv2d_s8",))


int8_single_rounding = _mutant(
    "int8_single_rounding", "single rounding where TFLite's double rounding is specified",
    "a product whose two roundings differ (ties)", "double", _single_rounding)
int8_shift_off_by_one = _mutant(
    "int8_shift_off_by_one", "requantize right shift one too large", "any non-zero output",
    "double", _shift_off_by_one)
int8_rdbpot_half_even = _mutant(
    "int8_rdbpot_half_even", "final rounding shift rounds half to even, not away from zero",
    "an exact half at the final shift, rounding down to even", "double", _rdbpot_half_even)
int8_float_half_away = _mutant(
    "int8_float_half_away", "float32 rescale rounds half away from zero, not to even",
    "acc * scale exactly k + 0.5 with k even", "float32_rne", _float_half_away)
int8_activation_ignored = _mutant(
    "int8_activation_ignored", "fused activation bounds not applied (only int8 saturation)",
    "act_min > -128 or act_max < 127, reached", "double", _activation_ignored)
int8_input_offset_negated = _mutant(
    "int8_input_offset_negated", "input zero point added with the wrong sign",
    "input_offset != 0", "double", _input_offset_negated)

MUTANTS = [m for m in globals().values() if isinstance(m, types.SimpleNamespace)]


def golden(case, rounding: str) -> np.ndarray:
    extra = {"scales": scales(case)} if rounding == "float32_rne" else {}
    return quant.conv2d_s8(**case, rounding=rounding, **extra)
