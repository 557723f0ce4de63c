"""The golden ops equal PyTorch's float64 results across the whole parameter space."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from properties import strategies as S
from tests.helpers import assert_close_relative, assert_raises_naming

torch = pytest.importorskip("torch", reason="torch is needed to check the golden ops")
F = torch.nn.functional
RTOL = 1e-12


def t64(a):
    return None if a is None else torch.from_numpy(np.asarray(a, np.float64))


def torch_conv(inputs, p, groups):
    x, pad = t64(inputs["x"]), p["padding"]
    if np.ndim(pad) == 2:
        (top, bottom), (left, right) = pad
        x, pad = F.pad(x, (left, right, top, bottom)), 0
    return F.conv2d(x, t64(inputs["w"]), t64(inputs.get("b")), p["stride"], pad, p["dilation"],
                    groups).numpy()


def magnitude(fn, inputs, params):
    return fn(**{k: np.abs(v) for k, v in inputs.items()}, **params)


@settings(max_examples=150)
@given(S.conv2d_cases())
def test_conv2d(case):
    got = reference.conv2d(**case.inputs, **case.params)
    want = torch_conv(case.inputs, case.params, case.params["groups"])
    assert_close_relative(got, want, magnitude(reference.conv2d, case.inputs, case.params), RTOL,
                          case.describe())


@settings(max_examples=150)
@given(S.depthwise_conv2d_cases())
def test_depthwise_conv2d(case):
    got = reference.depthwise_conv2d(**case.inputs, **case.params)
    want = torch_conv(case.inputs, case.params, case.inputs["x"].shape[1])
    assert_close_relative(got, want, magnitude(reference.depthwise_conv2d, case.inputs, case.params),
                          RTOL, case.describe())


@settings(max_examples=150)
@given(S.clamp_cases(specials=True))
def test_clamp(case):
    p = case.params
    got = reference.clamp(case.inputs["x"], p["min"], p["max"])
    want = torch.clamp(t64(case.inputs["x"]), p["min"], p["max"]).numpy()
    np.testing.assert_array_equal(got, want, err_msg=case.describe())


@settings(max_examples=150)
@given(S.mean_cases())
def test_mean(case):
    x, p = case.inputs["x"], case.params
    got = reference.mean(x, **p)
    want = torch.mean(t64(x), dim=p["dim"], keepdim=p["keepdim"]).numpy()
    assert_close_relative(got, want, reference.mean(np.abs(x), **p), RTOL, case.describe())


@settings(max_examples=150)
@given(S.view_cases())
def test_view(case):
    got = reference.view(case.inputs["x"], case.params["shape"])
    want = t64(case.inputs["x"]).view(case.params["shape"]).numpy()
    np.testing.assert_array_equal(got, want, err_msg=case.describe())


@settings(max_examples=150)
@given(S.permute_cases())
def test_permute(case):
    got = reference.permute(case.inputs["x"], case.params["dims"])
    want = t64(case.inputs["x"]).permute(*case.params["dims"]).numpy()
    np.testing.assert_array_equal(got, want, err_msg=case.describe())


@settings(max_examples=150)
@given(S.batch_norm_cases())
def test_batch_norm(case):
    i = case.inputs
    got = reference.batch_norm(**i, **case.params)
    want = F.batch_norm(t64(i["x"]), t64(i["running_mean"]), t64(i["running_var"]), t64(i.get("weight")),
                        t64(i.get("bias")), training=False, eps=case.params["eps"]).numpy()
    scale = np.abs(i.get("weight", 1.0)) / np.sqrt(i["running_var"].astype(np.float64) + case.params["eps"])
    shape = (1, -1) + (1,) * (i["x"].ndim - 2)
    mag = (np.abs(i["x"]) + np.abs(i["running_mean"]).reshape(shape)) * scale.reshape(shape) \
        + np.abs(i.get("bias", np.zeros(1))).reshape((1, -1) + (1,) * (i["x"].ndim - 2))
    assert_close_relative(got, want, mag, RTOL, case.describe())


@settings(max_examples=100)
@given(S.conv2d_cases(), st.data())
def test_fold_batch_norm_equals_conv_then_bn(case, data):
    o = case.inputs["w"].shape[0]
    mean_ = data.draw(S.values((o,)))
    var = data.draw(S.variances(o))
    gamma, beta = data.draw(S.values((o,))), data.draw(S.values((o,)))
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    x, w, b = case.inputs["x"], case.inputs["w"], case.inputs.get("b")
    wf, bf = reference.fold_batch_norm(w, b, mean_, var, gamma, beta, eps)
    folded = reference.conv2d(x, wf, bf, **case.params)
    unfolded = reference.batch_norm(reference.conv2d(x, w, b, **case.params), mean_, var, gamma, beta, eps)
    scale = np.abs(gamma) / np.sqrt(var.astype(np.float64) + eps)
    mag = (reference.conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b), **case.params)
           + np.abs(mean_)[None, :, None, None]) * scale[None, :, None, None] + np.abs(beta)[None, :, None, None]
    assert_close_relative(folded, unfolded, mag, 1e-11, case.describe())


# ---- error cases: ValueError naming the parameter, where PyTorch raises ------------------------

X = np.zeros((1, 4, 5, 5))
W = np.zeros((6, 2, 3, 3))


@pytest.mark.parametrize("call, parameter", [
    (lambda: reference.conv2d(X, W, groups=3), "groups"),               # 4 channels, 3 groups
    (lambda: reference.conv2d(X, np.zeros((6, 4, 3, 3)), groups=4), "groups"),
    (lambda: reference.conv2d(X, np.zeros((5, 2, 3, 3)), groups=2), "groups"),  # O % groups
    (lambda: reference.conv2d(X, W, groups=0), "groups"),
    (lambda: reference.conv2d(X, np.zeros((6, 4, 7, 3))), "kernel"),    # larger than input
    (lambda: reference.conv2d(X, np.zeros((6, 4, 3, 3)), dilation=3), "kernel"),
    (lambda: reference.conv2d(X, np.zeros((6, 4, 3, 3)), stride=0), "stride"),
    (lambda: reference.conv2d(X, np.zeros((6, 4, 3, 3)), dilation=(1, 0)), "dilation"),
    (lambda: reference.conv2d(X, np.zeros((6, 4, 3, 3)), padding=-1), "padding"),
    (lambda: reference.conv2d(X, np.zeros((6, 4, 3, 3)), padding=((1, -1), (0, 0))), "padding"),
    (lambda: reference.conv2d(X, np.zeros((6, 4, 3, 3)), np.zeros(5)), "bias"),
    (lambda: reference.conv2d(X[0], np.zeros((6, 4, 3, 3))), "input"),
    (lambda: reference.depthwise_conv2d(X, np.zeros((6, 1, 3, 3))), "multiplier"),
    (lambda: reference.depthwise_conv2d(X, np.zeros((4, 2, 3, 3))), "depthwise weight"),
    (lambda: reference.clamp(X), "min or max"),
    (lambda: reference.mean(X, dim=4), "dim"),
    (lambda: reference.mean(X, dim=(1, -3)), "dim"),
    (lambda: reference.view(X, (7, -1)), "shape"),
    (lambda: reference.view(X, (-1, -1)), "shape"),
    (lambda: reference.view(X, (4, 24)), "shape"),
    (lambda: reference.permute(X, (0, 1, 2)), "dims"),
    (lambda: reference.permute(X, (0, 1, 2, 2)), "dims"),
    (lambda: reference.permute(X, (0, 1, 2, 4)), "dims"),
    (lambda: reference.batch_norm(X, np.zeros(3), np.ones(4)), "running_mean"),
    (lambda: reference.batch_norm(X, np.zeros(4), np.ones(4), weight=np.ones(2)), "weight"),
    (lambda: reference.fold_batch_norm(W, np.zeros(5), np.zeros(6), np.ones(6), None, None), "b"),
])
def test_invalid_configs_raise_value_error(call, parameter):
    assert_raises_naming(call, parameter)


@pytest.mark.parametrize("torch_call", [
    lambda: F.conv2d(t64(X), t64(W), groups=3),
    lambda: F.conv2d(t64(X), torch.zeros(6, 4, 7, 3, dtype=torch.float64)),
    lambda: torch.clamp(t64(X)),
    lambda: torch.mean(t64(X), dim=4),
    lambda: torch.mean(t64(X), dim=(1, -3)),
    lambda: t64(X).view(7, -1),
    lambda: t64(X).permute(0, 1, 2, 2),
])
def test_pytorch_also_rejects_them(torch_call):
    """The error cases above mirror real PyTorch errors (a sample of them)."""
    with pytest.raises((RuntimeError, IndexError, ValueError)):
        torch_call()
