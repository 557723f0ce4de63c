"""Meta-tests of the comparison and the tolerance model: the bound accepts correct float32
implementations and rejects planted bugs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import reference
from edgediff.case import Case
from edgediff.compare import compare, ulp_distance
from edgediff.tolerance import FLOAT32, Arithmetic
from properties import strategies as S
from properties.ops import OPS


def test_compare_reports_where_and_how_much():
    exp = np.array([[1.0, 2.0], [3.0, 4.0]])
    obs = np.array([[1.0, 2.5], [3.0, 4.0]])
    stats = compare(exp, obs, 0.1)
    assert stats.mismatches == 1
    assert stats.first_mismatches[0]["index"] == [0, 1]
    assert stats.max_abs_error == pytest.approx(0.5)
    assert stats.worst_ratio == pytest.approx(5.0)
    assert "at (0, 1): expected 2.0, observed 2.5" in stats.summary()


def test_compare_nan_and_inf_must_match():
    exp = np.array([np.nan, np.inf, -np.inf, 1.0])
    assert compare(exp, exp.copy(), 0.0).ok
    assert compare(exp, np.array([0.0, np.inf, -np.inf, 1.0]), 0.0).nan_mismatches == 1
    assert compare(exp, np.array([np.nan, -np.inf, -np.inf, 1.0]), 0.0).mismatches == 1
    assert compare(exp, np.array([np.nan, np.inf, -np.inf, np.nan]), 1e9).mismatches == 1


def test_compare_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        compare(np.zeros(3), np.zeros(4), 0.0)


def test_ulp_distance():
    one = np.float32(1.0)
    assert ulp_distance(one, np.nextafter(one, np.float32(2))) == 1
    assert ulp_distance(np.float32(-0.0), np.float32(0.0)) == 0
    assert ulp_distance(np.float32(-1e-45), np.float32(1e-45)) == 2


@settings(max_examples=60, deadline=None)
@given(S.conv2d_cases())
def test_bound_accepts_float32_sequential_accumulation(case):
    """Naive left-to-right float32 accumulation (the worst order) stays within the bound."""
    exp = reference.conv2d(**case.inputs, **case.params)
    # recompute with every term summed sequentially in float32
    x, w = case.inputs["x"], case.inputs["w"]
    terms_max = 64
    if w.shape[1] * w.shape[2] * w.shape[3] > terms_max or exp.size > 2000:
        return
    from numpy.lib.stride_tricks import sliding_window_view

    from reference._args import pair, padding4
    t, b_, l, r = padding4(case.params["padding"])
    xp = np.pad(x, ((0, 0), (0, 0), (t, b_), (l, r))).astype(np.float32)
    (sh, sw), (dh, dw) = pair(case.params["stride"], "s", 1), pair(case.params["dilation"], "d", 1)
    kh, kw = w.shape[2:]
    win = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    g = case.params["groups"]
    cg, og = w.shape[1], w.shape[0] // g
    acc = np.zeros(exp.shape, np.float32)
    if "b" in case.inputs:
        acc += case.inputs["b"].astype(np.float32)[None, :, None, None]
    for o in range(w.shape[0]):
        grp = o // og
        for c in range(cg):
            for p in range(kh):
                for q in range(kw):
                    acc[:, o] = np.float32(acc[:, o] + np.float32(win[:, grp * cg + c, :, :, p, q] * w[o, c, p, q]))
    bound = OPS["conv2d"].bound(case, exp, FLOAT32)
    stats = compare(exp, acc, bound)
    assert stats.ok, stats.summary()


@settings(max_examples=60, deadline=None)
@given(S.conv2d_cases())
def test_bound_accepts_torch_float32(case):
    pytest.importorskip("torch", reason="compares the bound with PyTorch float32")
    from tests.helpers import torch_in_worker
    exp = reference.conv2d(**case.inputs, **case.params)
    obs = torch_in_worker("conv2d", case)
    stats = compare(exp, obs, OPS["conv2d"].bound(case, exp, FLOAT32))
    assert stats.ok, stats.summary()


def _conv_case(**overrides):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    params = dict(stride=1, padding=((1, 0), (0, 1)), dilation=1, groups=1)
    params.update(overrides)
    return Case("conv2d", {"x": x, "w": w, "b": b}, params)


@pytest.mark.parametrize("bug", [
    "swapped_padding", "bias_twice", "f16_accumulate",
])
def test_bound_rejects_planted_bugs(bug):
    from tests import planted
    case = _conv_case()
    adapter = getattr(planted, bug)
    exp = reference.conv2d(**case.inputs, **case.params)
    obs = adapter.conv2d(**case.inputs, **case.params)
    stats = compare(exp, obs, OPS["conv2d"].bound(case, exp, FLOAT32))
    assert not stats.ok, f"planted bug {bug} was accepted: {stats.summary()}"


def test_f16_arithmetic_accepts_f16_inputs_but_float32_does_not():
    """The F16 model allows input rounding to float16; the float32 model does not."""
    case = _conv_case(padding=1)
    exp = reference.conv2d(**case.inputs, **case.params)
    rounded = {k: v.astype(np.float16).astype(np.float32) for k, v in case.inputs.items()}
    obs = reference.conv2d(**rounded, **case.params).astype(np.float32)
    f16_inputs = Arithmetic(inputs="float16", accumulate="float32")
    assert compare(exp, obs, OPS["conv2d"].bound(case, exp, f16_inputs)).ok
    assert not compare(exp, obs, OPS["conv2d"].bound(case, exp, FLOAT32)).ok


def test_mean_bound_rejects_wrong_axis():
    from tests import planted
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    case = Case("mean", {"x": x}, {"dim": 1, "keepdim": False})
    exp = reference.mean(x, 1)
    obs = planted.mean_wrong_axis.mean(x, 1)
    assert obs.shape != exp.shape or not compare(exp, obs, OPS["mean"].bound(case, exp, FLOAT32)).ok


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="float8"):
        Arithmetic(inputs="float8").u("inputs")
