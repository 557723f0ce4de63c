"""CMSIS-NN's int8 kernels equal ``reference.quant`` bit for bit, per (op, CMSIS-NN function).

The adapter runs in a worker process (``edgediff.isolation``), so a crashing kernel fails
its example instead of killing pytest. The reference uses the rounding the linked library
was built with (``cmsis_nn.rounding()``, measured). A non-zero ``arm_cmsis_nn_status``, a
write outside the output or scratch buffer, a crash and any differing output element all
fail. Cases that hit a known CMSIS-NN defect are kept out of the properties
(``strategies_int8.known_issue``); the strict xfails at the end pin those defects.

Skipped, with the reason, unless CMSIS_NN_ROOT (or CMSIS_NN_INCLUDE) and CMSIS_NN_LIB point
to a CMSIS-NN build (see adapters/_cmsis_nn/build.py).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st

import adapters
from edgediff.isolation import isolate
from edgediff.runner import WorkerDied
from properties import strategies_int8 as S8
from reference import quant

try:
    CMSIS = adapters.load("cmsis_nn")
except adapters.AdapterUnavailable as exc:
    pytest.skip(str(exc), allow_module_level=True)

ROUNDING = CMSIS.rounding()
TAKES_ROUNDING = {"conv2d_s8", "depthwise_conv2d_s8", "fully_connected_s8", "add_s8"}
TARGETS = [(op, path) for op in S8.CASES for path in CMSIS.paths[op]]


@pytest.fixture(scope="module")
def cmsis():
    worker = isolate(CMSIS, "cmsis_nn", list(CMSIS.paths))
    yield worker
    worker.close()


def run(worker, op, path, case):
    arrays = {k: v for k, v in case.items() if isinstance(v, np.ndarray)}
    params = {k: v for k, v in case.items() if k not in arrays}
    return worker.call(op, path, arrays, params)


def golden(op, case):
    extra = {"rounding": ROUNDING} if op in TAKES_ROUNDING else {}
    return getattr(quant, op)(**case, **extra)


def describe(case):
    return {k: (f"{v.dtype}{list(v.shape)}" if isinstance(v, np.ndarray) and v.size > 8
                else v.tolist() if isinstance(v, np.ndarray) else v) for k, v in case.items()}


def assert_bit_exact(got, want, op, path, case):
    assert got.shape == want.shape, f"{op}/{path}: shape {got.shape} != {want.shape}"
    bad = got != want
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise AssertionError(
            f"{op}/{path} ({ROUNDING} rounding): {int(bad.sum())} of {bad.size} outputs differ; "
            f"first at {i}: CMSIS-NN {got[i]} vs reference {want[i]}; case {describe(case)}")


@pytest.mark.parametrize("op,path", TARGETS, ids=[f"{op}-{path}" for op, path in TARGETS])
@given(data=st.data())
def test_cmsis_nn_matches_reference(cmsis, op, path, data):
    case = data.draw(S8.CASES[op](path), label="case")
    assume(S8.known_issue(op, path, case) is None)
    event(f"kernel: {S8.kernel_used(op, path, case)}")
    event(f"rounding-sensitive: {_rounding_sensitive(op, case)}")
    want = golden(op, case)
    got = run(cmsis, op, path, case)
    assert_bit_exact(np.asarray(got), want, op, path, case)


def _rounding_sensitive(op, case):
    """Whether double and single rounding give different outputs for this case."""
    if op not in TAKES_ROUNDING:
        return False
    return bool((getattr(quant, op)(**case, rounding="double")
                 != getattr(quant, op)(**case, rounding="single")).any())


def test_rounding_probe_agrees_with_reference():
    """The measured rounding reproduces, through a whole conv, the ties the two roundings split."""
    x = np.array([-2, -1, 1, 2, 3, -3, 5, -5], np.int8).reshape(1, 1, 8, 1)
    w = np.ones((1, 1, 1, 1), np.int8)
    case = dict(x=x, w=w, bias=None, input_offset=0, output_offset=0,
                multipliers=np.array([1 << 30], np.int32), shifts=np.array([-1], np.int32))
    got = CMSIS.conv2d_s8(**case, path="arm_convolve_1x1_s8_fast")
    np.testing.assert_array_equal(got, quant.conv2d_s8(**case, rounding=ROUNDING))
    other = "single" if ROUNDING == "double" else "double"
    assert not np.array_equal(got, quant.conv2d_s8(**case, rounding=other))


def test_direct_paths_refuse_configs_outside_their_conditions():
    x = np.zeros((1, 4, 4, 4), np.int8)
    mult, shift = np.full(4, 1 << 30, np.int32), np.zeros(4, np.int32)
    with pytest.raises(adapters.Unsupported, match="1x1 kernel"):
        CMSIS.conv2d_s8(x, np.zeros((4, 3, 3, 4), np.int8), None, 0, 0, mult, shift,
                        path="arm_convolve_1x1_s8_fast")
    with pytest.raises(adapters.Unsupported, match="left padding <= 1"):
        CMSIS.depthwise_conv2d_s8(x, np.zeros((1, 3, 3, 4), np.int8), None, 0, 0, mult, shift,
                                  padding=2, path="arm_depthwise_conv_3x3_s8")
    with pytest.raises(adapters.Unsupported, match="documented"):
        CMSIS.conv2d_s8(x, np.zeros((4, 1, 1, 4), np.int8), None, -128, 0, mult, shift)


def test_status_codes_reach_python():
    """The binding hands back the kernel's own status: ARG_ERROR for a padded fast 1x1 conv."""
    b = CMSIS.binding()
    out, status, _ = b.arm_convolve_1x1_s8_fast(
        np.zeros((1, 2, 2, 4), np.int8), np.zeros((4, 1, 1, 4), np.int8), None, 0, 0, (1, 1),
        (1, 1), (1, 1), np.full(4, 1 << 30, np.int32), np.zeros(4, np.int32), -128, 127, (4, 4))
    assert status == -1


# ---- known CMSIS-NN defects (commit 99f736a6), pinned as strict xfails ------------------------

@pytest.mark.xfail(raises=WorkerDied, strict=True, reason=(
    "CMSIS-NN bug: arm_convolve_s8 sets bias_data_ptr = &bias_data[0] and advances it by "
    "output_ch_per_group per group; with bias_data == NULL the second group's pointer is "
    "non-NULL (0x4 * out_ch_per_group) and is dereferenced: SIGSEGV for groups > 1 without bias"))
def test_grouped_conv_without_bias(cmsis):
    case = dict(x=np.ones((1, 1, 1, 2), np.int8), w=np.ones((2, 1, 1, 1), np.int8), bias=None,
                input_offset=0, output_offset=0, multipliers=np.full(2, 1 << 30, np.int32),
                shifts=np.zeros(2, np.int32), groups=2)
    got = run(cmsis, "conv2d_s8", "arm_convolve_wrapper_s8", case)
    np.testing.assert_array_equal(got, golden("conv2d_s8", case))


@pytest.mark.xfail(raises=AssertionError, strict=True, reason=(
    "CMSIS-NN: arm_depthwise_conv_3x3_s8 always reads the centre column (in_w + 1) and only "
    "bounds-checks the right one, so an output size implying right padding >= 2 makes it read "
    "one pixel past the row (here past the buffer: the binding's guard bytes, 0xA5 = -91). "
    "The wrapper selects this kernel from padding.w <= 1 alone; TFLite's SAME/VALID never "
    "produce right padding 2 for a 3x3 kernel, explicit asymmetric padding does"))
def test_depthwise_3x3_with_right_padding_two(cmsis):
    case = dict(x=np.ones((1, 1, 1, 1), np.int8), w=np.ones((1, 3, 3, 1), np.int8), bias=None,
                input_offset=0, output_offset=0, multipliers=np.full(1, 1 << 30, np.int32),
                shifts=np.full(1, 1, np.int32), padding=((1, 1), (1, 2)))
    assert S8.known_issue("depthwise_conv2d_s8", "arm_depthwise_conv_wrapper_s8", case)
    got = run(cmsis, "depthwise_conv2d_s8", "arm_depthwise_conv_wrapper_s8", case)
    assert_bit_exact(np.asarray(got), golden("depthwise_conv2d_s8", case),
                     "depthwise_conv2d_s8", "arm_depthwise_conv_wrapper_s8", case)


@pytest.mark.xfail(raises=AssertionError, strict=True, reason=(
    "CMSIS-NN: arm_convolve_wrapper_s8 routes a 1x1 kernel to arm_convolve_1x1_s8_fast / "
    "arm_convolve_1x1_s8 when padding.h == padding.w == 0 (top/left), without checking that "
    "the output size matches the input's; with bottom/right padding those kernels fill only "
    "the first H*W outputs (rest left as it was: the binding's 0xA5 = -91 guard fill) or read "
    "the wrong pixels, and return ARM_CMSIS_NN_SUCCESS. TFLite's SAME never pads a 1x1 kernel"))
def test_conv_1x1_with_bottom_padding(cmsis):
    case = dict(x=np.ones((1, 1, 1, 1), np.int8), w=np.ones((1, 1, 1, 1), np.int8), bias=None,
                input_offset=0, output_offset=0, multipliers=np.full(1, 1 << 30, np.int32),
                shifts=np.full(1, 1, np.int32), padding=((0, 1), (0, 0)))
    assert S8.known_issue("conv2d_s8", "arm_convolve_wrapper_s8", case)
    got = run(cmsis, "conv2d_s8", "arm_convolve_wrapper_s8", case)
    assert_bit_exact(np.asarray(got), golden("conv2d_s8", case), "conv2d_s8",
                     "arm_convolve_wrapper_s8", case)


def test_known_issues_are_only_those_three():
    """known_issue does not swallow ordinary cases."""
    ordinary = dict(x=np.ones((1, 3, 3, 2), np.int8), w=np.ones((1, 3, 3, 2), np.int8),
                    padding=((1, 1), (1, 1)), stride=(1, 1), dilation=(1, 1))
    assert S8.known_issue("depthwise_conv2d_s8", "arm_depthwise_conv_wrapper_s8", ordinary) is None
    assert S8.known_issue("conv2d_s8", "arm_convolve_s8", dict(groups=2, bias=np.zeros(2))) is None
    one_by_one = dict(x=np.ones((1, 3, 3, 2), np.int8), w=np.ones((4, 1, 1, 2), np.int8),
                      padding=((0, 0), (0, 0)), stride=(2, 2), dilation=(1, 1), groups=1, bias=None)
    assert S8.known_issue("conv2d_s8", "arm_convolve_wrapper_s8", one_by_one) is None
    # H=3, stride 2, bottom padding 1: output height (3 + 1 - 1) // 2 + 1 = 2 as without it
    assert S8.known_issue("conv2d_s8", "arm_convolve_wrapper_s8",
                          dict(one_by_one, padding=((0, 1), (0, 1)))) is None
