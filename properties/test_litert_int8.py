"""LiteRT's int8 CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and AVERAGE_POOL_2D equal the
golden ops bit for bit, per path.

Each example is a one-op int8 .tflite model (per-channel weight scales, int32 bias, input and
output zero points, a fused activation, any padding: SAME, VALID or a PAD op) built by
``adapters.litert`` from the model's float scales; the golden op
(``reference.quant.tflite_*``) derives TFLite's multipliers from the same scales. What each
path computes, measured with LiteRT 2.3.0 on x86-64 and pinned here bit for bit:

- ``builtin_ref`` (BUILTIN_REF, TFLite's reference kernels): ``rounding="double"``, TFLite's
  MultiplyByQuantizedMultiplier (gemmlowp: SRDHM, then a rounding shift with ties away from
  zero);
- ``xnnpack`` (XNNPACK delegate, checked to have taken the op): ``rounding="float32_rne"``,
  ``rint(float32(acc) * scale)`` with XNNPACK's float32 scale ``input_scale * weight_scale /
  output_scale``, and fused-activation bounds ``rint(limit / scale + zero_point)`` (ties to
  even, where TFLite rounds ties away from zero);
- ``builtin`` (optimized kernels): neither of those. CONV_2D (ruy GEMM) is
  ``rounding="double_half_up"``: SRDHM, then a rounding shift with ties toward +inf; a
  grouped CONV_2D (groups > 1) falls back to the reference code, ``double``.
  DEPTHWISE_CONV_2D uses ``double_half_up`` for the output channels in whole blocks of 8
  (its vectorised output stage) and ``double`` for the last ``C*M % 8`` channels
  (``builtin_depthwise_golden``). Both differ from builtin_ref by one step on some negative
  ties; tests/test_adapter_litert.py pins that finding with a strict xfail.

FULLY_CONNECTED (per-tensor weights): xnnpack is ``float32_rne``; builtin_ref does not
requantize in fixed point at all (``builtin_ref_fully_connected_golden``: the accumulator
times the double-precision real scale, rounded half away from zero) and builtin uses
``double_half_up`` with a multiplier derived from a float32 real scale
(``builtin_fully_connected_golden``); tests/test_adapter_litert.py pins both findings.

AVERAGE_POOL_2D (SAME/VALID, fused activation) equals ``tflite_avgpool_s8`` on builtin and
builtin_ref; XNNPACK does not take it.

A failing example names the path, the rounding it was held to, every differing element (up
to 12) with expected and got, and which other rounding modes the output would have matched.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import adapters
from properties import strategies_int8 as S8
from reference import quant

try:
    L = adapters.load("litert")
except adapters.AdapterUnavailable as exc:
    pytest.skip(f"litert adapter unavailable: {exc}", allow_module_level=True)

PATH_ROUNDING = {"builtin_ref": "double", "xnnpack": "float32_rne", "builtin": "double_half_up"}
DEPTHWISE_BLOCK = 8          # channels per vectorised block in the builtin depthwise output stage
# XNNPACK does not take an int8 AVERAGE_POOL_2D (tests/test_adapter_litert.py checks that the
# xnnpack path says "not delegated"), so that op is held to the golden op on the other two
OP_PATHS = {op: L.PATHS for op in S8.TFLITE_CASES}
OP_PATHS["tflite_avgpool_s8"] = ("builtin", "builtin_ref")
REQUANTIZING = {"tflite_conv2d_s8", "tflite_depthwise_conv2d_s8", "tflite_fully_connected_s8"}
TARGETS = [(op, path) for op, paths in OP_PATHS.items() for path in paths]


def builtin_depthwise_golden(case):
    """LiteRT's optimized (builtin) int8 DEPTHWISE_CONV_2D: channels below
    8 * floor(C*M / 8) round as ``double_half_up``, the rest as ``double`` (measured)."""
    half_up = quant.tflite_depthwise_conv2d_s8(**case, rounding="double_half_up")
    double = quant.tflite_depthwise_conv2d_s8(**case, rounding="double")
    channels = half_up.shape[-1]
    vector = np.arange(channels) < DEPTHWISE_BLOCK * (channels // DEPTHWISE_BLOCK)
    return np.where(vector, half_up, double)


def _fc_parts(case):
    p = quant.conv_params(case["input_scale"], case["input_zero_point"], [case["weight_scale"]],
                          case["output_scale"], case["output_zero_point"],
                          case.get("activation", "none"))
    acc = quant.fully_connected_s8_acc(case["x"], case["w"], case["bias"], p["input_offset"])
    return p, acc


def builtin_ref_fully_connected_golden(case):
    """LiteRT's BUILTIN_REF int8 FULLY_CONNECTED (measured): no fixed-point multiplier at
    all, ``round_half_away(acc * (double(input_scale) * double(weight_scale) /
    double(output_scale))) + zero_point``, clamped."""
    p, acc = _fc_parts(case)
    f64 = lambda v: float(np.float32(v))                     # noqa: E731
    v = acc.astype(np.float64) * (f64(case["input_scale"]) * f64(case["weight_scale"])
                                  / f64(case["output_scale"]))
    y = np.sign(v) * np.floor(np.abs(v) + 0.5) + p["output_offset"]
    return np.clip(y, p["act_min"], p["act_max"]).astype(np.int8)


def builtin_fully_connected_golden(case):
    """LiteRT's optimized int8 FULLY_CONNECTED (measured): ``double_half_up`` with the
    multiplier of a float32 real scale ``float32(input_scale * weight_scale) /
    output_scale`` (TFLite's convs derive it in double)."""
    p, _ = _fc_parts(case)
    f32 = np.float32
    real = f32(f32(case["input_scale"]) * f32(case["weight_scale"])) / f32(case["output_scale"])
    mult, shift = quant.quantize_multiplier(float(real))
    return quant.fully_connected_s8(case["x"], case["w"], case["bias"], p["input_offset"],
                                    p["output_offset"], mult, shift, p["act_min"], p["act_max"],
                                    rounding="double_half_up")


def golden(op, path, case):
    """(expected output, name of the rounding it was computed with) for ``op`` on ``path``."""
    if op not in REQUANTIZING:          # average pool: integer division, TFLite's bounds
        return getattr(quant, op)(**case), "none (no requantization)"
    if op == "tflite_depthwise_conv2d_s8" and path == "builtin":
        return builtin_depthwise_golden(case), "double_half_up (blocks of 8) + double (rest)"
    if op == "tflite_fully_connected_s8" and path == "builtin_ref":
        return builtin_ref_fully_connected_golden(case), "double-precision product, half away"
    if op == "tflite_fully_connected_s8" and path == "builtin":
        return builtin_fully_connected_golden(case), "double_half_up, float32 multiplier"
    rounding = PATH_ROUNDING[path]
    if op == "tflite_conv2d_s8" and path == "builtin" and case.get("groups", 1) != 1:
        rounding = "double"          # grouped CONV_2D: the optimized kernel runs the reference
    return getattr(quant, op)(**case, rounding=rounding), rounding


def run(op, path, case):
    """LiteRT's output; an xnnpack example XNNPACK did not take fails (it must take all)."""
    try:
        got, facts = getattr(L, op)(**case, path=path)
    except adapters.Unsupported as exc:
        raise AssertionError(f"{op}/{path}: {exc}; case {describe(case)}") from None
    return np.asarray(got), facts


def describe(case):
    return {k: (f"{v.dtype}{list(v.shape)}" if isinstance(v, np.ndarray) and v.size > 8
                else v.tolist() if isinstance(v, np.ndarray) else v) for k, v in case.items()}


def assert_bit_exact(got, want, op, path, rounding, case, facts=None, shown=12):
    """Every element equal; otherwise list the differing ones (NHWC index, expected, got) and
    the rounding modes the output does match."""
    assert got.shape == want.shape, f"{op}/{path}: shape {got.shape} != expected {want.shape}"
    bad = got != want
    if not bad.any():
        return
    where = np.argwhere(bad)
    rows = [f"  {tuple(int(v) for v in i)}: expected {int(want[tuple(i)])}, got {int(got[tuple(i)])}"
            for i in where[:shown]]
    more = f"\n  ... and {len(where) - shown} more" if len(where) > shown else ""
    matches = [r for r in quant.ROUNDINGS if op in REQUANTIZING
               and np.array_equal(getattr(quant, op)(**case, rounding=r), got)]
    raise AssertionError(
        f"{op} on litert path {path!r} (golden rounding {rounding}): {int(bad.sum())} of "
        f"{bad.size} int8 outputs differ (NHWC index: expected, got)\n" + "\n".join(rows) + more
        + f"\nLiteRT output equals the golden op with rounding: {matches or 'none'}"
        + f"\nmodel: {facts}\ncase: {describe(case)}")


@pytest.mark.parametrize("op,path", TARGETS, ids=[f"{op}-{path}" for op, path in TARGETS])
@given(data=st.data())
def test_litert_int8_matches_golden(op, path, data):
    case = data.draw(S8.TFLITE_CASES[op](), label="case")
    want, rounding = golden(op, path, case)
    got, facts = run(op, path, case)
    event(f"tflite ops: {facts['tflite_ops']} ({facts['tflite_padding']})")
    if op in REQUANTIZING:
        single = getattr(quant, op)(**case, rounding="single")
        event(f"rounding-sensitive: {not np.array_equal(want, single)}")
    assert_bit_exact(got, want, op, path, rounding, case, facts)


def test_failure_message_names_elements_and_path():
    """The assertion lists the differing elements with expected and got, and the path."""
    case = dict(x=np.array([-15, -13, 3], np.int8).reshape(1, 1, 3, 1),
                w=np.ones((1, 1, 1, 1), np.int8), bias=None, input_scale=1.0,
                input_zero_point=0, weight_scales=np.array([0.25], np.float32),
                output_scale=1.0, output_zero_point=0)
    want = quant.tflite_conv2d_s8(**case)                       # [-4, -3, 1]
    got = want.copy()
    got[0, 0, 0, 0] = -3
    with pytest.raises(AssertionError) as info:
        assert_bit_exact(got, want, "tflite_conv2d_s8", "builtin", "double", case)
    text = str(info.value)
    assert "'builtin'" in text and "1 of 3" in text and "(0, 0, 0, 0): expected -4, got -3" in text
    assert "['double_half_up']" in text
