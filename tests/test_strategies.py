"""Meta-tests of the strategies: they generate only valid cases, cover the documented
space, and shrink to small readable ones."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from edgediff.case import Case
from properties import strategies as S
from properties.ops import OPS
from tests.helpers import torch_in_worker

torch = pytest.importorskip("torch", reason="torch checks that PyTorch accepts every case")


@pytest.mark.parametrize("op", list(OPS))
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_case_is_valid_for_golden_and_pytorch(op, data):
    case = data.draw(OPS[op].strategy())
    assert case.op == op
    expected = OPS[op].expected(case)                 # golden accepts it
    observed = torch_in_worker(op, case)              # so does PyTorch
    assert np.shape(observed) == np.shape(expected)
    assert all(a.dtype == np.float32 for a in case.inputs.values())
    values = np.concatenate([a.ravel() for a in case.inputs.values()])
    if op == "clamp":      # NaN is in clamp's default tier; Inf only with --specials
        assert not np.any(np.isinf(values))
    else:
        assert np.all(np.isfinite(values))


REACH = settings(max_examples=300, suppress_health_check=list(HealthCheck), database=None)


def _out_hw(case):
    return OPS[case.op].expected(case).shape[2:]


@pytest.mark.parametrize("what, strategy, condition", [
    ("NaN in a clamp input (default tier)", S.clamp_cases(),
     lambda c: bool(np.isnan(c.inputs["x"]).any())),
    ("a 1x1 conv output with bias", S.conv2d_cases(),
     lambda c: _out_hw(c) == (1, 1) and "b" in c.inputs),
    ("a dilated kernel wider than its input", S.conv2d_cases(),
     lambda c: (c.inputs["w"].shape[3] - 1) * np.broadcast_to(c.params["dilation"], 2)[1] + 1
     > c.inputs["x"].shape[3]),
    ("a channels_last view with C > 1 and H*W > 1", S.view_cases(),
     lambda c: c.layout == "channels_last" and c.inputs["x"].shape[1] > 1
     and c.inputs["x"].shape[2] * c.inputs["x"].shape[3] > 1),
])
def test_strategies_reach_the_rare_conditions_mutants_need(what, strategy, condition):
    """benchmarks/mutants plant bugs that only fire on these; the strategies must reach them."""
    find(strategy, condition, settings=REACH)


@settings(max_examples=150)
@given(S.conv2d_cases())
def test_conv_cases_stay_in_the_documented_ranges(case):
    x, w = case.inputs["x"], case.inputs["w"]
    p = case.params
    assert 1 <= x.shape[0] <= 3 and 1 <= x.shape[1] <= 32
    assert x.shape[1] % p["groups"] == 0 and w.shape[0] % p["groups"] == 0
    assert 1 <= w.shape[2] <= 7 and 1 <= w.shape[3] <= 7
    stride = np.broadcast_to(p["stride"], 2)
    dilation = np.broadcast_to(p["dilation"], 2)
    assert np.all((1 <= stride) & (stride <= 4)) and np.all((1 <= dilation) & (dilation <= 3))
    out = OPS["conv2d"].expected(case)
    assert out.shape[2] >= 1 and out.shape[3] >= 1


@settings(max_examples=100)
@given(S.depthwise_conv2d_cases())
def test_depthwise_multiplier_in_range(case):
    c, o = case.inputs["x"].shape[1], case.inputs["w"].shape[0]
    assert o % c == 0 and 1 <= o // c <= 4


@settings(max_examples=100)
@given(S.clamp_cases())
def test_clamp_never_gets_two_nones(case):
    assert not (case.params["min"] is None and case.params["max"] is None)


def test_specials_tier_is_opt_in():
    with_specials = find(S.clamp_cases(specials=True), lambda c: np.isnan(c.inputs["x"]).any())
    assert np.isnan(with_specials.inputs["x"]).any()


def _minimal(strategy, condition):
    return find(strategy, condition, settings=settings(max_examples=2000, database=None))


def test_conv_shrinks_to_a_small_case():
    """Asking for a strided, asymmetric-padded conv gives the smallest such case."""
    def wanted(case: Case):
        pad = case.params["padding"]
        return np.ndim(pad) == 2 and pad[0][0] != pad[0][1] and np.max(case.params["stride"]) > 1
    case = _minimal(S.conv2d_cases(), wanted)
    assert case.inputs["x"].shape[:2] == (1, 1) and case.inputs["w"].shape[:2] == (1, 1)
    assert case.n_elements <= 8, case.describe()
    assert "b" not in case.inputs and case.layout == "contiguous"


def test_values_shrink_to_small_integers():
    case = _minimal(S.conv2d_cases(), lambda c: True)
    assert np.all(case.inputs["x"] == np.round(case.inputs["x"]))


def test_mean_covers_every_dim_subset_and_keepdim():
    seen = set()
    @settings(max_examples=1500, database=None, derandomize=True)  # rank 4 takes half the draws
    @given(S.mean_cases())
    def collect(case):
        d, r = case.params["dim"], case.inputs["x"].ndim
        if r <= 2 and d is not None:
            seen.add((r, tuple(sorted({x % r for x in np.atleast_1d(d)})), case.params["keepdim"]))
    collect()
    every = {(r, s, k) for r, subsets in [(1, [(0,)]), (2, [(0,), (1,), (0, 1)])]
             for s in subsets for k in (False, True)}
    assert every <= seen, f"never drawn: {sorted(every - seen)}"


@settings(max_examples=100)
@given(S.view_cases())
def test_view_shapes_multiply_to_size(case):
    shape = case.params["shape"]
    assert shape.count(-1) <= 1
    known = int(np.prod([s for s in shape if s != -1]))
    assert case.inputs["x"].size % known == 0


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), op=st.sampled_from(list(OPS)))
def test_same_structure_keeps_everything_but_the_values(data, op):
    case = data.draw(OPS[op].strategy())
    other = data.draw(S.same_structure(case))
    assert (other.op, other.params, other.layout, other.dtype) == (case.op, case.params, case.layout, case.dtype)
    assert {k: v.shape for k, v in other.inputs.items()} == {k: v.shape for k, v in case.inputs.items()}
    assert all(v.dtype == np.float32 for v in other.inputs.values())
    if "running_var" in other.inputs:
        assert np.all(other.inputs["running_var"] >= 0)
    OPS[op].expected(other)                       # still a valid case for the golden op
